"""End-to-end over real TCP: JSON clients get 404, 405, 413 and 500 as JSON, others HTML or text as before;
a plain HTTP GET on the WebSocket path gets 426 with a hint, logged at debug level only."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from sandstone import Sandstone
from tests.support import ServerTestCase, wait_until
from tests.test_e2e_limits import RawPeer
from tests.test_http_errors import make_app as make_unit_app

JSON = {"Accept": ["application/json"]}
BROWSER = {"Accept": ["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"]}
# The raw test client's factory logs its start from twisted.internet: the server's own logs are these.
SERVER_NAMESPACES = ("sandstone", "autobahn", "twisted.web", "twisted.python.log")
HINT = (
    "this is sandstone's WAMP WebSocket endpoint: connect with a WebSocket client "
    "(subprotocol wamp.2.json, wamp.2.msgpack or wamp.2.cbor)"
)


def make_app() -> Sandstone:
    """test_http_errors' app (its routes, a 1 KiB body limit), and a route whose error the app handles."""
    app = make_unit_app(max_request_body=1024)

    @app.route("/articles/<int:number>")
    def article(request: IRequest, number: int) -> bytes:
        raise KeyError(number)

    @app.handle_errors(KeyError)
    def no_article(request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"message": f"no article {failure.value.args[0]}"}).encode()

    return app


class RawResponse:
    """The status, headers and body of the one response a server wrote before closing."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.code = int(lines[0].split()[1])
        self.headers = {
            name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }


class HttpErrorsTests(ServerTestCase):
    def setUp(self) -> None:
        self.serve(make_app())
        self.client = self.http()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def get(self, path: str, headers: dict[str, list[str]]) -> tuple[int, Any, bytes]:
        response = await self.client.get(self.base_url + path, headers=headers)
        return response.code, response.headers, await treq.content(response)

    async def raw(self, request: bytes) -> RawResponse:
        """Send ``request`` on a fresh connection; the response once the server closed it."""
        peer = RawPeer()
        await connectProtocol(TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port), peer)
        peer.transport.write(request)
        await peer.closed
        return RawResponse(peer.data)

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    def logged_above_debug(self) -> list[str]:
        """What the server (sandstone, autobahn, twisted.web and its access log) logged above debug level."""
        return [
            f"{event.get('log_namespace')}: {event.get('log_format')}"
            for event in self.events
            if event.get("log_level") is not LogLevel.debug
            and str(event.get("log_namespace")).startswith(SERVER_NAMESPACES)
        ]

    # 404 and 405: Klein's

    async def test_unknown_path_is_a_json_404_for_a_json_client(self) -> None:
        code, headers, body = await self.get("/nothing", JSON)
        self.assertEqual(
            (code, headers.getRawHeaders(b"content-type"), json.loads(body)),
            (404, [b"application/json"], {"error": "not found", "status": 404}),
        )

    async def test_unknown_path_is_html_for_a_browser(self) -> None:
        code, headers, body = await self.get("/nothing", BROWSER)
        self.assertEqual((code, headers.getRawHeaders(b"content-type")), (404, [b"text/html; charset=utf-8"]))
        self.assertIn(b"<title>404 Not Found</title>", body)

    async def test_wrong_method_is_a_json_405_keeping_allow(self) -> None:
        code, headers, body = await self.get("/things", JSON)
        self.assertEqual(
            (code, headers.getRawHeaders(b"allow"), json.loads(body)),
            (405, [b"POST"], {"error": "method not allowed", "status": 405}),
        )

    async def test_the_apps_own_json_error_response_is_untouched(self) -> None:
        code, headers, body = await self.get("/articles/7", JSON)
        self.assertEqual((code, json.loads(body)), (404, {"message": "no article 7"}))

    # 500

    async def test_an_unhandled_error_is_a_json_500_without_the_traceback_and_logged_once(self) -> None:
        code, headers, body = await self.get("/boom", JSON)
        self.assertEqual(
            (code, headers.getRawHeaders(b"content-type"), json.loads(body)),
            (500, [b"application/json"], {"error": "internal server error", "status": 500}),
        )
        self.assertNotIn(b"secret detail", body)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_an_unhandled_error_is_html_for_a_browser_and_logged_once(self) -> None:
        code, headers, body = await self.get("/boom", BROWSER)
        self.assertEqual((code, headers.getRawHeaders(b"content-type")), (500, [b"text/html"]))
        self.assertIn(b"Processing Failed", body)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    # 413

    async def test_a_body_over_the_limit_is_a_json_413_for_a_client_sending_json(self) -> None:
        response = await self.raw(
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        self.assertEqual(
            (response.code, response.headers["content-type"], json.loads(response.body)),
            (
                413,
                "application/json",
                {"error": "request body too large: the limit is 1024 bytes", "status": 413},
            ),
        )

    async def test_a_body_over_the_limit_is_a_text_413_for_others(self) -> None:
        response = await self.raw(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n")
        self.assertEqual(
            (response.code, response.headers["content-type"], response.body),
            (413, "text/plain; charset=utf-8", b"request body too large: the limit is 1024 bytes\n"),
        )

    # 426 on the WebSocket path

    async def test_a_plain_get_on_the_websocket_path_is_426_with_a_text_hint(self) -> None:
        response = await self.raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n")
        self.assertEqual(
            (response.code, response.headers["upgrade"], response.headers["content-type"], response.body),
            (426, "websocket", "text/plain; charset=utf-8", HINT.encode() + b"\n"),
        )

    async def test_a_plain_get_on_the_websocket_path_is_426_with_a_json_hint_for_a_json_client(self) -> None:
        response = await self.raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        self.assertEqual(
            (response.code, response.headers["upgrade"], response.headers["content-type"]),
            (426, "websocket", "application/json"),
        )
        self.assertEqual(json.loads(response.body), {"error": HINT, "status": 426})

    async def test_a_plain_get_on_the_websocket_path_is_logged_at_debug_level_only(self) -> None:
        await self.raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: not self.site.open_transports(), timeout=2.0)
        self.assertEqual(self.logged_above_debug(), [])
        debug = [
            str(event.get("log_format")) for event in self.events if event.get("log_level") is LogLevel.debug
        ]
        self.assertTrue(any(text.startswith("426 for a plain HTTP GET") for text in debug), debug)

    async def test_the_websocket_path_still_serves_wamp_after_a_plain_get(self) -> None:
        await self.raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client = await self.connect()
        self.assertTrue(client.is_attached())
