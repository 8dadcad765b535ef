"""The HTTP bridge: Crossbar's HTTP Publisher and HTTP Caller, for producers that speak HTTP rather than WAMP.

A POST of ``{"topic", "args", "kwargs", "options"}`` to a publisher path publishes as a client's PUBLISH does
(the app's authorizer, the topic's hooks, the exclude/eligible rules, the other nodes of a cluster), and is
answered ``{"id": <publication id>}``; a POST of ``{"procedure", "args", "kwargs"}`` to a caller path calls as
a client's CALL does (the app's procedures, client callees on this node or another one) and is answered with
the result's ``{"args": [...], "kwargs": {...}}``. Requests act as the bridge's authid and authrole. The body,
the query parameters of a signed request (``key``, ``timestamp``, ``seq``, ``nonce``, ``signature``) and the
signature are Crossbar's, so that its HTTP bridge clients work unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from autobahn.wamp.exception import InvalidUriError
from autobahn.wamp.message import check_or_raise_uri
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ._call import Call
from ._errors import (
    CANCELED,
    INVALID_ARGUMENT,
    INVALID_URI,
    LIMIT_EXCEEDED,
    NO_SUCH_PROCEDURE,
    NO_SUCH_TOPIC,
    NOT_AUTHORIZED,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    ErrorPayload,
    WampError,
    error_payload,
)
from ._payload import payload_problem
from ._publication import Publication, optional_set

if TYPE_CHECKING:
    from ._router import Router
    from ._session import Session

__all__ = [
    "CALLER",
    "KEYS_ENV",
    "PUBLISHER",
    "BridgeKeysError",
    "BridgeOptions",
    "HttpBridge",
    "NonceMemory",
    "bridge_options",
    "keys_from_environment",
    "load_keys",
    "parse_keys",
    "signature",
]

log = Logger()

Kind = Literal["publisher", "caller"]
PUBLISHER: Literal["publisher"] = "publisher"
CALLER: Literal["caller"] = "caller"

#: The environment variable holding the bridge's keys (a JSON file's name, or the JSON itself).
KEYS_ENV = "SANDSTONE_HTTP_BRIDGE_KEYS"
DEFAULT_AUTHID = "http-bridge"
DEFAULT_AUTHROLE = "http-bridge"
#: What the authorizer sees as the ``authmethod`` of a bridge request.
AUTHMETHOD = "http-bridge"
DEFAULT_MAX_SKEW = 300.0  # seconds, Crossbar's timestamp_delta_limit
DEFAULT_TIMEOUT = 60.0  # seconds an HTTP call waits for its result
DEFAULT_MAX_NONCES = 200_000  # signed requests remembered (within the clock-skew window) per app
LOOPBACK = ("127.0.0.0/8", "::1/128")
ANYWHERE = ("0.0.0.0/0", "::/0")
#: A signed request's ``timestamp``: UTC, ISO 8601 with a fraction of a second (``2011-10-14T16:59:51.123Z``).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SIGNED_PARAMETERS = ("key", "timestamp", "seq", "nonce", "signature")

# The URIs of the bridge's own refusals (a WAMP error body names its URI, the text says what is wrong).
BAD_REQUEST = "sandstone.error.bad_request"
BAD_SIGNATURE = "sandstone.error.bad_signature"
REQUEST_EXPIRED = "sandstone.error.request_expired"
REQUEST_REPLAYED = "sandstone.error.request_replayed"
FORBIDDEN = "sandstone.error.forbidden"
METHOD_NOT_ALLOWED = "sandstone.error.method_not_allowed"
UNSUPPORTED_MEDIA_TYPE = "sandstone.error.unsupported_media_type"
TOO_MANY_REQUESTS = "sandstone.error.too_many_requests"
TIMEOUT = "wamp.error.timeout"

# The HTTP status of a publication or call that ended with a WAMP error (500 for any other URI: the
# procedure's own errors, wamp.error.runtime_error, authorization_failed).
_ERROR_STATUS = {
    INVALID_URI: 400,
    INVALID_ARGUMENT: 400,
    NOT_AUTHORIZED: 403,
    NO_SUCH_PROCEDURE: 404,
    NO_SUCH_TOPIC: 404,
    RATE_LIMITED: 429,
    LIMIT_EXCEEDED: 429,
    CANCELED: 502,  # the callee left (or canceled) before answering
    "sandstone.error.cluster_unavailable": 503,  # RedisBus's: the node could not reach the others
    TIMEOUT: 504,
}

Network = IPv4Network | IPv6Network


# --- keys ----------------------------------------------------------------------------------------------


class BridgeKeysError(ValueError):
    """The HTTP bridge's keys cannot be read or make no sense (the message is one line)."""


def parse_keys(text: str, source: str) -> dict[str, bytes]:
    """The keys and secrets in JSON ``text``: ``{"KEY": "SECRET", ...}``, or Crossbar's ``{"key": "KEY",
    "secret": "SECRET"}`` (a Crossbar bridge path's ``options``, as is). ``source`` names it in errors."""
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise BridgeKeysError(f"{source} is not JSON: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise BridgeKeysError(f'{source} must be a JSON object of keys and secrets, e.g. {{"app1": "..."}}')
    if set(table) == {"key", "secret"} and isinstance(table["key"], str):  # Crossbar's options
        table = {table["key"]: table["secret"]}
    keys = {}
    for key, secret in table.items():
        if not key:
            raise BridgeKeysError(f"{source}: a key may not be empty")
        if not isinstance(secret, str) or not secret:
            raise BridgeKeysError(f"{source}: the secret of key {key!r} must be a non-empty string")
        keys[key] = secret.encode("utf-8")
    return keys


def load_keys(path: str) -> dict[str, bytes]:
    """The keys and secrets of the JSON file ``path`` (see ``parse_keys``)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise BridgeKeysError(f"cannot read {path}: {reason}") from None
    return parse_keys(text, path)


def keys_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, bytes] | None:
    """The keys ``SANDSTONE_HTTP_BRIDGE_KEYS`` gives (JSON, or a JSON file's name); ``None`` without it."""
    value = (os.environ if environ is None else environ).get(KEYS_ENV, "").strip()
    if not value:
        return None
    if value.startswith("{"):
        return parse_keys(value, f"${KEYS_ENV}")
    return load_keys(value)


def signature(secret: bytes, key: bytes, timestamp: bytes, seq: bytes, nonce: bytes, body: bytes) -> bytes:
    """Crossbar's signature of a request: the HMAC-SHA256, keyed with the secret, of the key, timestamp,
    seq and nonce query parameters and the body, one after the other, in URL-safe base64 (padded)."""
    mac = hmac.new(secret, key + timestamp + seq + nonce + body, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest())


# --- options ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeOptions:
    """How one HTTP bridge path takes requests (made by ``bridge_options``, which checks the values)."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    """key -> secret; when there are any, every request must be signed with one of them."""
    networks: tuple[Network, ...] = ()
    """The client networks allowed (an address outside them gets 403)."""
    authid: str | None = None
    """Who requests act as; ``None``: the key of a signed request, else ``http-bridge``."""
    authrole: str = DEFAULT_AUTHROLE
    require_tls: bool = False
    max_body: int = 0
    """Bytes of a body; 0: the app's ``max_request_body``."""
    max_skew: float = DEFAULT_MAX_SKEW
    """Seconds a signed request's timestamp may be away from this server's clock."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds a call waits for its result (0: no limit)."""
    crossbar_errors: bool = False
    """Answer a publication or call that ended with a WAMP error with 200, as Crossbar does."""


def bridge_options(
    *,
    keys: Mapping[str, str | bytes] | None = None,
    networks: Iterable[str] | None = None,
    authid: str | None = None,
    authrole: str = DEFAULT_AUTHROLE,
    require_tls: bool = False,
    max_body: int = 0,
    max_skew: float = DEFAULT_MAX_SKEW,
    timeout: float = DEFAULT_TIMEOUT,
    crossbar_errors: bool = False,
) -> BridgeOptions:
    """Checked ``BridgeOptions``; ``ValueError`` says what is wrong. Without ``networks``, a bridge with keys
    takes requests from anywhere, one without only from loopback addresses (this machine)."""
    secrets = {}
    for key, secret in (keys or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"HTTP bridge keys must be non-empty strings, got {key!r}")
        secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
        if not isinstance(secret_bytes, bytes) or not secret_bytes:
            raise ValueError(f"the secret of HTTP bridge key {key!r} must be a non-empty string")
        secrets[key] = secret_bytes
    if networks is None:
        networks = ANYWHERE if secrets else LOOPBACK
    allowed = []
    for network in networks:
        try:
            allowed.append(ip_network(network.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{network!r} is not a network: give addresses or CIDR ranges such as 10.0.0.0/8 or ::1"
            ) from None
    if not allowed:
        raise ValueError("the HTTP bridge allows no client network: give at least one, e.g. 127.0.0.1/32")
    if authid is not None and not authid:
        raise ValueError("the HTTP bridge's authid may not be empty")
    if not authrole:
        raise ValueError("the HTTP bridge's authrole may not be empty")
    for name, value in (("max_body", max_body), ("max_skew", max_skew), ("timeout", timeout)):
        if value < 0:
            raise ValueError(f"the HTTP bridge's {name} may not be negative")
    if secrets and max_skew == 0:  # nonces are remembered for the window: it must end
        raise ValueError("signed HTTP bridge requests need a clock skew window (max_skew > 0)")
    return BridgeOptions(
        secrets, tuple(allowed), authid, authrole, require_tls, max_body, max_skew, timeout, crossbar_errors
    )


# --- replay protection -------------------------------------------------------------------------------------


class NonceMemory:
    """The nonces of the signed requests accepted, per key, while their timestamp is within the clock-skew
    window: a request reusing one is a replay. Past the window the request would be refused as too old
    anyway, so its nonce is forgotten: memory holds the window's requests only, and at most ``limit``."""

    def __init__(self, limit: int = DEFAULT_MAX_NONCES) -> None:
        self.limit = limit
        self._seen: set[tuple[str, int]] = set()
        self._expiries: list[tuple[float, str, int]] = []  # a heap: the next nonce to forget first

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, key: str, nonce: int, expires: float, now: float) -> Literal["new", "replayed", "full"]:
        """Note the ``nonce`` of a request signed with ``key`` until ``expires`` (wall-clock seconds):
        ``"new"``, or ``"replayed"`` when it was seen, or ``"full"`` when ``limit`` nonces are remembered."""
        self._forget(now)
        entry = (key, nonce)
        if entry in self._seen:
            return "replayed"
        if len(self._seen) >= self.limit:
            return "full"
        self._seen.add(entry)
        heapq.heappush(self._expiries, (expires, key, nonce))
        return "new"

    def _forget(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] < now:
            _, key, nonce = heapq.heappop(expiries)
            self._seen.discard((key, nonce))


# --- requests ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """An HTTP response: a status and a JSON body."""

    status: int
    body: dict[str, Any]


class _Refused(Exception):
    """A request the bridge refuses before it reaches the router (bad input, signature, network...)."""

    def __init__(self, status: int, uri: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.uri = uri
        self.message = message


@dataclass(frozen=True)
class _Result:
    args: list[Any] | None
    kwargs: dict[str, Any] | None


class _Requester:
    """Who one HTTP request acts as: the principal the authorizer and the topic hooks see (``authid``,
    ``authrole``, no session: ``id`` 0) and, for a call, the ``Caller`` its answer comes back to.

    ``has_left`` turns true when the HTTP client went away or the call timed out: the router then drops the
    request if it is still waiting for authorization, as it does for a session that left.
    """

    authmethod = AUTHMETHOD
    id = 0

    def __init__(self, authid: str, authrole: str, realm: str, router: Router) -> None:
        self.authid = authid
        self.authrole = authrole
        self.realm = realm
        self.has_left = False
        self._router = router
        self._concluded = False
        self.answer: Deferred[_Result | ErrorPayload] = Deferred(self._http_client_left)
        self.timer: IDelayedCall | None = None

    def send_result(
        self,
        request: int,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        if not progress:  # the call asks for no progressive results: none should come
            self.conclude(_Result(args, kwargs))

    def send_error(
        self, request: int, error: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> None:
        self.conclude(ErrorPayload(error, args, kwargs))

    def conclude(self, outcome: _Result | ErrorPayload) -> None:
        """The call's answer, once (a late one, after a timeout, goes nowhere)."""
        if self._concluded:
            return
        self._concluded = True
        self._stop_timer()
        self._router.activity.call_ended(outcome.uri if isinstance(outcome, ErrorPayload) else None)
        self.answer.callback(outcome)

    def time_out(self, procedure: str, timeout: float) -> None:
        """No answer within ``timeout`` seconds: answer the HTTP client, cancel the call."""
        self.timer = None
        self.conclude(ErrorPayload(TIMEOUT, [f"{procedure} did not answer within {timeout:g} s"], None))
        self._leave()

    def _http_client_left(self, _: Deferred[Any]) -> None:
        # Deferred.cancel(): the HTTP connection was lost (Klein cancels the handler's Deferred).
        self._concluded = True
        self._stop_timer()
        self._leave()

    def _leave(self) -> None:
        self.has_left = True
        self._router.cancel(self, 1, "killnowait")  # also from another node, or an app function's Deferred

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class HttpBridge:
    """One path of the HTTP bridge: a publisher or a caller into ``router``, as ``options`` say.

    ``render`` is its Klein handler (any method: others than POST, PUT and OPTIONS get 405). ``nonces`` is
    the app's replay memory, shared by its bridge paths; ``reactor`` times calls out, ``clock`` (wall-clock
    seconds) checks timestamps.
    """

    def __init__(
        self,
        router: Router,
        kind: Kind,
        path: str,
        options: BridgeOptions,
        nonces: NonceMemory,
        *,
        reactor: IReactorTime | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if kind not in (PUBLISHER, CALLER):
            raise ValueError(f"an HTTP bridge is a {PUBLISHER!r} or a {CALLER!r}, not {kind!r}")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(IReactorTime, default_reactor)
        self.kind = kind
        self.path = path
        self.options = options
        self._router = router
        self._nonces = nonces
        self._reactor = reactor
        self._clock = clock
        self._serve = self._publish if kind == PUBLISHER else self._call
        self._warned_full = False

    def render(self, request: IRequest) -> Deferred[bytes]:
        """Answer one HTTP request (a Klein handler): a JSON body, and the status set on ``request``."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        try:
            self._admit(request)
            if request.method == b"OPTIONS":
                request.setHeader(b"allow", b"POST, PUT, OPTIONS")
                request.setResponseCode(204)
                return succeed(b"")
            body = self._body(request)
            signer = self._check_signature(request, body)
            answer = self._serve(_document(body), self._requester(signer))
        except _Refused as refused:
            self._log_refusal(request, refused)
            answer = succeed(_Answer(refused.status, _error_body(refused.uri, [refused.message], None)))
        return answer.addCallback(self._respond, request)

    def _respond(self, answer: _Answer, request: IRequest) -> bytes:
        request.setResponseCode(answer.status)
        return json.dumps(answer.body, default=_wamp_binary).encode("ascii")

    def _log_refusal(self, request: IRequest, refused: _Refused) -> None:
        log.info(
            "HTTP {kind} {path}: {status} for {client}: {reason}",
            kind=self.kind,
            path=self.path,
            status=refused.status,
            client=_client_name(request),
            reason=refused.message,
        )

    # checks, in order: who may ask, then what the request is

    def _admit(self, request: IRequest) -> None:
        address = _client_ip(request)
        if address is not None and not any(address in network for network in self.options.networks):
            raise _Refused(403, FORBIDDEN, f"client address {address} is not allowed to use this HTTP bridge")
        if self.options.require_tls and not request.isSecure():
            raise _Refused(403, FORBIDDEN, "this HTTP bridge takes requests over TLS (https) only")
        if request.method not in (b"POST", b"PUT", b"OPTIONS"):
            request.setHeader(b"allow", b"POST, PUT, OPTIONS")
            method = request.method.decode("latin-1")
            raise _Refused(405, METHOD_NOT_ALLOWED, f"method {method} not allowed: POST or PUT a JSON body")

    def _body(self, request: IRequest) -> bytes:
        content_type = request.getHeader(b"content-type")
        if content_type is not None:
            _check_content_type(content_type)
        limit = self.options.max_body or self._router.limits.max_request_body
        content = request.content
        body: bytes = content.read(limit + 1) if limit > 0 else content.read()
        if 0 < limit < len(body):
            raise _Refused(413, PAYLOAD_TOO_LARGE, f"request body too large: the limit is {limit} bytes")
        return body

    def _check_signature(self, request: IRequest, body: bytes) -> str | None:
        """The key a signed request was signed with; ``None`` when the bridge takes unsigned requests."""
        keys = self.options.keys
        if not keys:
            return None
        parameters: dict[str, bytes] = {}
        for name in _SIGNED_PARAMETERS:
            values = request.args.get(name.encode("ascii"))
            if not values:
                raise _Refused(
                    400, BAD_REQUEST, f"signed request required: the query parameter {name!r} is missing"
                )
            parameters[name] = values[0]
        key = parameters["key"].decode("utf-8", "replace")
        secret = keys.get(key)
        if secret is None:
            raise _Refused(401, BAD_SIGNATURE, f"unknown key {key!r}")
        timestamp = _timestamp(parameters["timestamp"])
        _integer(parameters["seq"], "seq")
        nonce = _integer(parameters["nonce"], "nonce")
        now, window = self._clock(), self.options.max_skew
        if abs(now - timestamp) > window:
            raise _Refused(
                400,
                REQUEST_EXPIRED,
                f"timestamp {parameters['timestamp'].decode()} is more than {window:g} s away from the "
                "server's clock (UTC): send the current time, and check the client's clock",
            )
        expected = signature(
            secret, parameters["key"], parameters["timestamp"], parameters["seq"], parameters["nonce"], body
        )
        if not hmac.compare_digest(expected.rstrip(b"="), parameters["signature"].rstrip(b"=")):
            raise _Refused(401, BAD_SIGNATURE, f"the signature does not match the request (key {key!r})")
        claimed = self._nonces.claim(key, nonce, timestamp + window, now)
        if claimed == "replayed":
            raise _Refused(401, REQUEST_REPLAYED, f"nonce {nonce} of key {key!r} was used already")
        if claimed == "full":
            if not self._warned_full:  # once, until the memory has room again
                self._warned_full = True
                log.warn(
                    "HTTP {kind} {path}: {count} signed requests of the last {window} s are remembered "
                    "against replays, the most allowed; more get 429 until older ones leave the window",
                    kind=self.kind,
                    path=self.path,
                    count=len(self._nonces),
                    window=window,
                )
            raise _Refused(429, TOO_MANY_REQUESTS, "too many signed requests right now: retry in a moment")
        self._warned_full = False
        return key

    def _requester(self, signer: str | None) -> _Requester:
        options = self.options
        authid = options.authid or signer or DEFAULT_AUTHID
        return _Requester(authid, options.authrole, self._router.realm, self._router)

    def _uri(self, document: dict[str, Any], name: str) -> str:
        if name not in document:
            raise _Refused(400, BAD_REQUEST, f"the body has no {name!r}: {_EXAMPLES[self.kind]}")
        uri = document[name]
        if not isinstance(uri, str):
            raise _Refused(400, BAD_REQUEST, f"{name!r} must be a URI string, got {_json_type(uri)}")
        try:
            check_or_raise_uri(uri, name, strict=self._router.strict_uris)
        except InvalidUriError:
            raise _Refused(400, INVALID_URI, f"invalid {name} URI {uri!r}") from None
        if not uri or ".." in uri or uri.startswith(".") or uri.endswith("."):  # what autobahn lets through
            raise _Refused(400, INVALID_URI, f"invalid {name} URI {uri!r}: its parts may not be empty")
        return uri

    # publishing

    def _publish(self, document: dict[str, Any], requester: _Requester) -> Deferred[_Answer]:
        topic = self._uri(document, "topic")
        args, kwargs = _arguments(document)
        rules = _delivery_rules(_options(document))
        publication = Publication(
            topic,
            args,
            kwargs,
            publisher_authid=requester.authid,
            publisher_authrole=requester.authrole,
            **rules,
        )
        published = _Answer(200, {"id": publication.id})
        try:
            # A client's PUBLISH goes through this door (the requester stands for its session): topic
            # declared or open URIs, authorization, the topic's on_publish, the cluster.
            pending = self._router.publish_from(cast("Session", requester), publication)
        except WampError as refused:
            payload = ErrorPayload(refused.uri, refused.args_list or None, refused.kwargs or None)
            return succeed(self._failed(payload))
        if pending is None:
            log.debug("HTTP publisher {path}: published {id}", path=self.path, id=publication.id)
            return succeed(published)
        outcome: Deferred[_Answer] = Deferred(lambda _: setattr(requester, "has_left", True))
        answered = pending.addCallbacks(lambda _: published, lambda f: self._failed(error_payload(f)))
        answered.addCallback(_fire, outcome)
        return outcome

    # calling

    def _call(self, document: dict[str, Any], requester: _Requester) -> Deferred[_Answer]:
        procedure = self._uri(document, "procedure")
        args, kwargs = _arguments(document)
        timeout = _call_timeout(_options(document), self.options.timeout)
        call = Call(requester, 1, procedure, args, kwargs)
        try:
            # A client's CALL goes through this door: reserved URIs, authorization, this node's dealer or the
            # node whose client serves the procedure.
            pending = self._router.call(cast("Session", requester), call)
        except WampError as refused:
            requester.conclude(ErrorPayload(refused.uri, refused.args_list or None, refused.kwargs or None))
        else:
            if pending is not None:  # authorization answers later; its refusal is the call's answer
                pending.addErrback(lambda failure: requester.conclude(error_payload(failure)))
        if timeout > 0 and not requester.answer.called:
            requester.timer = self._reactor.callLater(timeout, requester.time_out, procedure, timeout)
        return requester.answer.addCallback(self._called, procedure)

    def _called(self, outcome: _Result | ErrorPayload, procedure: str) -> _Answer:
        if isinstance(outcome, ErrorPayload):
            return self._failed(outcome)
        log.debug("HTTP caller {path}: {procedure} answered", path=self.path, procedure=procedure)
        return _Answer(200, _result_body(outcome.args, outcome.kwargs))

    def _failed(self, payload: ErrorPayload) -> _Answer:
        status = 200 if self.options.crossbar_errors else _ERROR_STATUS.get(payload.uri, 500)
        log.debug(
            "HTTP {kind} {path}: {status} {error} {args}",
            kind=self.kind,
            path=self.path,
            status=status,
            error=payload.uri,
            args=payload.args,
        )
        return _Answer(status, _error_body(payload.uri, payload.args, payload.kwargs))


# --- the body ----------------------------------------------------------------------------------------------

_EXAMPLES = {
    PUBLISHER: 'POST {"topic": "com.example.topic", "args": [...], "kwargs": {...}}',
    CALLER: 'POST {"procedure": "com.example.procedure", "args": [...], "kwargs": {...}}',
}


def _check_content_type(value: bytes) -> None:
    media_type, *parameters = (part.strip().lower() for part in value.split(b";"))
    if media_type != b"application/json":
        given = media_type.decode("latin-1")
        raise _Refused(415, UNSUPPORTED_MEDIA_TYPE, f"the body must be application/json, not {given}")
    for parameter in parameters:
        name, _, charset = parameter.partition(b"=")
        if name.strip() == b"charset" and charset.strip().strip(b'"') not in (b"utf-8", b"utf8"):
            raise _Refused(415, UNSUPPORTED_MEDIA_TYPE, "the body must be encoded in UTF-8")


def _document(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(400, BAD_REQUEST, "the body is not UTF-8") from None
    try:
        document = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise _Refused(400, BAD_REQUEST, "the body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise _Refused(400, BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _Refused(400, BAD_REQUEST, f"the body must be a JSON object, not {_json_type(document)}")
    return document


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _arguments(document: dict[str, Any]) -> tuple[list[Any] | None, dict[str, Any] | None]:
    args, kwargs = document.get("args"), document.get("kwargs")
    if args is not None and not isinstance(args, list):
        raise _Refused(400, BAD_REQUEST, f"'args' must be a JSON array, got {_json_type(args)}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise _Refused(400, BAD_REQUEST, f"'kwargs' must be a JSON object, got {_json_type(kwargs)}")
    problem = payload_problem(args, kwargs)
    if problem is not None:
        raise _Refused(400, INVALID_ARGUMENT, problem)
    return args or None, kwargs or None


def _options(document: dict[str, Any]) -> dict[str, Any]:
    options = document.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _Refused(400, BAD_REQUEST, f"'options' must be a JSON object, got {_json_type(options)}")
    return options


# exclude/eligible options of a publication -> what each must hold
_ID_RULES = ("exclude", "eligible")
_NAME_RULES = ("exclude_authid", "exclude_authrole", "eligible_authid", "eligible_authrole")


def _delivery_rules(options: dict[str, Any]) -> dict[str, Any]:
    """The ``Publication`` fields of a publication's ``exclude``/``eligible`` and ``retain`` options (the
    others Crossbar passes on, ``exclude_me``, ``forward_for``, mean nothing here and are ignored)."""
    rules: dict[str, Any] = {}
    retain = options.get("retain")
    if retain is not None:
        if not isinstance(retain, bool):
            raise _Refused(400, BAD_REQUEST, "option 'retain' must be true or false")
        rules["retain"] = retain
    for name in _ID_RULES + _NAME_RULES:
        values = options.get(name)
        if values is None:
            continue
        wanted: tuple[type, ...] = (str,) if name in _NAME_RULES else (int,)
        if not isinstance(values, list) or not all(
            isinstance(value, wanted) and not isinstance(value, bool) for value in values
        ):
            what = "strings" if name in _NAME_RULES else "session ids (integers)"
            raise _Refused(400, BAD_REQUEST, f"option {name!r} must be a list of {what}")
        rules[name] = optional_set(values)
    return rules


def _call_timeout(options: dict[str, Any], limit: float) -> float:
    """The seconds a call may take: the bridge's ``limit``, or less when the request's ``timeout`` option
    (milliseconds, as WAMP's CALL option) asks for less."""
    requested = options.get("timeout")
    if requested is None or requested == 0:
        return limit
    if not isinstance(requested, int | float) or isinstance(requested, bool) or requested < 0:
        raise _Refused(400, BAD_REQUEST, "option 'timeout' must be a number of milliseconds")
    return requested / 1000 if limit == 0 else min(limit, requested / 1000)


def _timestamp(value: bytes) -> float:
    try:
        parsed = datetime.strptime(value.decode("ascii"), TIMESTAMP_FORMAT)
    except (UnicodeDecodeError, ValueError):
        shown = value.decode("latin-1")
        raise _Refused(
            400, BAD_REQUEST, f"invalid timestamp {shown!r}: UTC in ISO 8601, e.g. 2011-10-14T16:59:51.123Z"
        ) from None
    return parsed.replace(tzinfo=UTC).timestamp()


def _integer(value: bytes, name: str) -> int:
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        shown = value.decode("latin-1")
        raise _Refused(400, BAD_REQUEST, f"invalid {name} {shown!r}: it must be an integer") from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --- answers -----------------------------------------------------------------------------------------------


def _result_body(args: list[Any] | None, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Crossbar's body for a result: ``args`` when there are any, ``kwargs`` when there are any, and
    ``{"args": [null]}`` for a result with neither (what its WAMP client made of a procedure returning
    nothing)."""
    body: dict[str, Any] = {}
    if args:
        body["args"] = args
    if kwargs:
        body["kwargs"] = kwargs
    return body or {"args": [None]}


def _error_body(uri: str, args: list[Any] | None, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    return {"error": uri, "args": list(args or ()), "kwargs": dict(kwargs or {})}


def _wamp_binary(value: Any) -> str:
    """Binary values in JSON as WAMP writes them: a string of NUL and the base64 of the bytes."""
    if isinstance(value, bytes):
        return "\x00" + base64.b64encode(value).decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fire(answer: _Answer, outcome: Deferred[_Answer]) -> None:
    if not outcome.called:  # not canceled meanwhile (the HTTP client went away)
        outcome.callback(answer)


def _client_ip(request: IRequest) -> IPv4Address | IPv6Address | None:
    """The client's IP address (an IPv4-mapped IPv6 one as IPv4), ``None`` for a UNIX socket's client."""
    host = getattr(request.getClientAddress(), "host", None)
    if not isinstance(host, str):
        return None
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _client_name(request: IRequest) -> str:
    address = _client_ip(request)
    return str(address) if address is not None else "a local client"
