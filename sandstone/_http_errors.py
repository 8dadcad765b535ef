"""HTTP error responses in the client's language: ``{"error": ..., "status": ...}`` for a JSON client, the
usual HTML or text for anyone else; and the 426 answering a plain HTTP request on the WebSocket path.

A JSON client is a request whose ``Accept`` names ``application/json`` or a ``+json`` type, or whose body
is JSON (``Content-Type``); a browser's ``text/html,...,*/*`` is not one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

log = Logger()

UPGRADE_HINT = (
    "this is sandstone's WAMP WebSocket endpoint: connect with a WebSocket client "
    "(subprotocol wamp.2.json, wamp.2.msgpack or wamp.2.cbor)"
)


def _is_json_type(media_type: bytes) -> bool:
    media_type = media_type.strip().lower()
    return media_type == b"application/json" or media_type.endswith(b"+json")


def _refused(parameters: bytes) -> bool:
    """Does a media range's parameters say ``q=0`` (not acceptable)?"""
    for parameter in parameters.split(b";"):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return float(value.strip()) == 0
            except ValueError:
                return False
    return False


def wants_json(accept: Sequence[bytes] | None, content_type: Sequence[bytes] | None) -> bool:
    """Is this a JSON client, given the raw values of its ``Accept`` and ``Content-Type`` headers?"""
    if content_type and _is_json_type(content_type[0].partition(b";")[0]):
        return True
    for value in accept or ():
        for media_range in value.split(b","):
            media_type, _, parameters = media_range.partition(b";")
            if _is_json_type(media_type) and not _refused(parameters):
                return True
    return False


def request_wants_json(request: IRequest) -> bool:
    """Is ``request`` from a JSON client (see ``wants_json``)?"""
    headers = request.requestHeaders
    return wants_json(headers.getRawHeaders(b"accept"), headers.getRawHeaders(b"content-type"))


def error_body(status: int, message: str) -> bytes:
    """The JSON body of an error response: ``{"error": message, "status": status}``."""
    return json.dumps({"error": message, "status": status}).encode("utf-8")


def json_http_errors(*args: Any) -> NoReturn:
    """A Klein error handler giving a JSON client's werkzeug HTTP error (Klein's 404, 405...) a JSON body.

    Registered first, it only prepares the response and raises the error again: the app's own handlers
    still get it, and when none answers it Klein sends the prepared response instead of werkzeug's HTML.
    """
    # (request, failure), after the instance an app is bound to, if any
    request: Request = args[-2]
    failure: Failure = args[-1]
    error = failure.value
    if (
        isinstance(error, HTTPException)
        and error.code is not None
        and error.code >= 400  # never a redirect (a route's missing trailing slash)
        and error.response is None
        and request_wants_json(request)
    ):
        error.response = response = _json_response(error)
        # An exception instance the app raises again and again must not keep it for the next client.
        request.notifyFinish().addBoth(lambda _: _forget(error, response))
    failure.raiseException()


def _forget(error: HTTPException, response: Response) -> None:
    if error.response is response:
        error.response = None


def _json_response(error: HTTPException) -> Response:
    code = error.code
    assert code is not None
    # Keep werkzeug's other headers: Allow for a 405, WWW-Authenticate for a 401...
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    headers.append(("Content-Type", "application/json"))
    return Response(error_body(code, _message(error)), code, headers)


def _message(error: HTTPException) -> str:
    """The description the app gave the error, else its short name ("not found")."""
    if error.description and error.description != type(error).description:
        return error.description
    return error.name.lower()


def is_websocket_upgrade(upgrade: bytes | None) -> bool:
    """Does this ``Upgrade`` header value ask for a WebSocket?"""
    return upgrade is not None and any(token.strip().lower() == b"websocket" for token in upgrade.split(b","))


def upgrade_required(request: IRequest) -> bytes:
    """Answer a plain HTTP request on the WebSocket path with 426 and a hint (a Klein handler's body)."""
    log.debug(
        "426 for a plain HTTP {method} on the WebSocket path {path}",
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
    )
    content_type, body = upgrade_hint(request_wants_json(request))
    request.setResponseCode(426)
    request.setHeader(b"upgrade", b"websocket")
    request.setHeader(b"content-type", content_type)
    return body


def upgrade_hint(json_client: bool) -> tuple[bytes, bytes]:
    """The content type and body of a 426 on the WebSocket path."""
    if json_client:
        return b"application/json", error_body(426, UPGRADE_HINT)
    return b"text/plain; charset=utf-8", UPGRADE_HINT.encode("utf-8") + b"\n"
