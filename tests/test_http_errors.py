"""Tests for L{sandstone._http_errors}: JSON errors for JSON clients (404, 405, 413, 500) and the 426 on the
WebSocket path, through Klein's in-memory client and through the app's Site on a StringTransport."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from sandstone import Limits, Sandstone
from sandstone._http_errors import wants_json
from sandstone._transport import WampServerProtocol
from sandstone.testing import TestClient

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HINT = (
    "this is sandstone's WAMP WebSocket endpoint: connect with a WebSocket client "
    "(subprotocol wamp.2.json, wamp.2.msgpack or wamp.2.cbor)"
)


def make_app(**limits: Any) -> Sandstone:
    # No timer may reach the global reactor from a synchronous test (autobahn's handshake timeout, HELLO).
    limits = {"open_handshake_timeout": 0, "hello_timeout": 0, "auto_ping_interval": 0, **limits}
    app = Sandstone(anonymous=True, limits=Limits(**limits))

    @app.route("/things", methods=["POST"])
    def make_thing(request: IRequest) -> bytes:
        return b"made"

    @app.route("/boom")
    def boom(request: IRequest) -> bytes:
        raise ValueError("secret detail of a failure")

    @app.route("/echo", methods=["POST"])
    def echo(request: Any) -> bytes:
        body: bytes = request.content.read()
        return body

    return app


def capture_logs(test: SynchronousTestCase) -> list[dict[str, Any]]:
    """Every log event emitted until the end of ``test``."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def above_debug(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event.get("log_level") is not LogLevel.debug]


class Response:
    """One HTTP/1.1 response parsed from the bytes a server wrote."""

    def __init__(self, data: bytes) -> None:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.code = int(lines[0].split()[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if "content-length" in self.headers:
            length = int(self.headers["content-length"][0])
            self.body, self.rest = rest[:length], rest[length:]
        elif self.headers.get("transfer-encoding") == ["chunked"]:
            self.body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                chunk, rest = rest[:size], rest[size + 2 :]
                if size == 0:
                    break
                self.body += chunk
            self.rest = rest
        else:
            self.body, self.rest = rest, b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def responses(data: bytes) -> list[Response]:
    """Every response in ``data`` (a kept-alive connection may carry several)."""
    found = []
    while data:
        response = Response(data)
        found.append(response)
        data = response.rest
    return found


class JsonClientTests(SynchronousTestCase):
    """Who gets JSON: ``Accept`` naming JSON, or a JSON body."""

    def test_accept_application_json_is_a_json_client(self) -> None:
        self.assertTrue(wants_json([b"application/json"], None))

    def test_accept_listing_json_among_others_is_a_json_client(self) -> None:
        self.assertTrue(wants_json([b"text/plain;q=0.5, Application/JSON;q=0.9"], None))

    def test_a_plus_json_type_is_a_json_client(self) -> None:
        self.assertTrue(wants_json([b"application/problem+json"], None))

    def test_a_browsers_accept_is_not_a_json_client(self) -> None:
        self.assertFalse(wants_json([BROWSER["Accept"].encode()], None))

    def test_accept_anything_is_not_a_json_client(self) -> None:
        self.assertFalse(wants_json([b"*/*"], None))

    def test_json_refused_with_q_0_is_not_a_json_client(self) -> None:
        self.assertFalse(wants_json([b"text/html, application/json;q=0"], None))

    def test_a_json_body_makes_a_json_client(self) -> None:
        self.assertTrue(wants_json([b"*/*"], [b"application/json; charset=utf-8"]))

    def test_a_form_body_and_no_accept_is_not_a_json_client(self) -> None:
        self.assertFalse(wants_json(None, [b"application/x-www-form-urlencoded"]))


class KleinErrorTests(SynchronousTestCase):
    """Klein's own 404 and 405 (werkzeug's errors), through Klein's in-memory client."""

    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)

    def assert_json_error(self, response: Any, status: int, message: str) -> None:
        self.assertEqual(
            (response.code, response.headers.get("Content-Type"), json.loads(response.body)),
            (status, ["application/json"], {"error": message, "status": status}),
        )

    def test_unknown_path_is_a_json_404_for_a_json_client(self) -> None:
        self.assert_json_error(self.client.get("/nothing", headers=JSON), 404, "not found")

    def test_unknown_path_is_a_json_404_for_a_client_sending_json(self) -> None:
        self.assert_json_error(self.client.post("/nothing", json={"a": 1}), 404, "not found")

    def test_unknown_path_is_html_for_a_browser(self) -> None:
        response = self.client.get("/nothing", headers=BROWSER)
        self.assertEqual(
            (response.code, response.headers["Content-Type"]), (404, ["text/html; charset=utf-8"])
        )
        self.assertIn(b"<title>404 Not Found</title>", response.body)

    def test_unknown_path_is_html_for_a_client_accepting_anything(self) -> None:
        response = self.client.get("/nothing", headers={"Accept": "*/*"})
        self.assertEqual(
            (response.code, response.headers["Content-Type"]), (404, ["text/html; charset=utf-8"])
        )

    def test_wrong_method_is_a_json_405_keeping_allow(self) -> None:
        response = self.client.get("/things", headers=JSON)
        self.assert_json_error(response, 405, "method not allowed")
        self.assertEqual(response.headers["Allow"], ["POST"])

    def test_wrong_method_is_html_for_others_keeping_allow(self) -> None:
        response = self.client.get("/things")
        self.assertEqual(
            (response.code, response.headers["Content-Type"]), (405, ["text/html; charset=utf-8"])
        )
        self.assertEqual(response.headers["Allow"], ["POST"])

    def test_an_http_error_a_handler_raises_keeps_its_description(self) -> None:
        @self.app.route("/articles/<int:number>")
        def article(request: IRequest, number: int) -> bytes:
            raise NotFound(f"no article {number}")

        self.assert_json_error(self.client.get("/articles/42", headers=JSON), 404, "no article 42")

    def test_the_apps_own_not_found_handler_still_answers_a_json_client(self) -> None:
        @self.app.handle_errors(NotFound)
        def not_found(request: IRequest, failure: Failure) -> bytes:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"message": "nothing here", "code": "E404"}).encode()

        response = self.client.get("/nothing", headers=JSON)
        self.assertEqual(
            (response.code, json.loads(response.body)), (404, {"message": "nothing here", "code": "E404"})
        )

    def test_the_apps_catch_all_handler_still_answers_a_json_client(self) -> None:
        @self.app.handle_errors
        def anything(request: IRequest, failure: Failure) -> bytes:
            request.setResponseCode(410)
            return b"gone: " + type(failure.value).__name__.encode()

        response = self.client.get("/nothing", headers=JSON)
        self.assertEqual((response.code, response.body), (410, b"gone: NotFound"))

    def test_an_error_instance_raised_again_answers_each_client_in_its_format(self) -> None:
        missing = NotFound()
        self.app.route("/missing")(lambda request: (_ for _ in ()).throw(missing))
        self.assert_json_error(self.client.get("/missing", headers=JSON), 404, "not found")
        response = self.client.get("/missing", headers=BROWSER)
        self.assertEqual(
            (response.code, response.headers["Content-Type"]), (404, ["text/html; charset=utf-8"])
        )

    def test_an_app_bound_to_an_instance_gives_json_errors_too(self) -> None:
        class Shop:
            app = Sandstone(anonymous=True)

            @app.route("/items", methods=["POST"])
            def add(self, request: IRequest) -> bytes:
                return b"added"

        client = TestClient(Shop().app)  # type: ignore[arg-type]  # the bound copy is a Sandstone too
        self.assert_json_error(client.get("/nothing", headers=JSON), 404, "not found")
        self.assert_json_error(client.get("/items", headers=JSON), 405, "method not allowed")

    def test_a_plain_get_on_the_websocket_path_is_426_with_a_text_hint(self) -> None:
        response = self.client.get("/ws")
        self.assertEqual(
            (response.code, response.headers["Content-Type"], response.body),
            (426, ["text/plain; charset=utf-8"], HINT.encode() + b"\n"),
        )

    def test_a_plain_get_on_the_websocket_path_is_426_with_a_json_hint_for_a_json_client(self) -> None:
        self.assert_json_error(self.client.get("/ws", headers=JSON), 426, HINT)

    def test_a_post_on_the_websocket_path_is_a_json_405_for_a_json_client(self) -> None:
        response = self.client.post("/ws", json={})
        self.assert_json_error(response, 405, "method not allowed")
        self.assertEqual(sorted(response.headers["Allow"][0].split(", ")), ["GET", "HEAD"])


class SiteErrorTests(SynchronousTestCase):
    """The app's Site (``app.site()``) on a StringTransport: 500, 413 and the 426 before twisted.web."""

    def setUp(self) -> None:
        self.app = make_app(max_request_body=1024)
        self.site = self.app.site(clock=Clock(), reactor=Clock())

    def exchange(self, *requests: bytes) -> StringTransport:
        transport = StringTransport(peerAddress=PEER)
        protocol = self.site.buildProtocol(PEER)
        assert protocol is not None
        transport.protocol = protocol
        protocol.makeConnection(transport)
        for request in requests:
            transport.protocol.dataReceived(request)
        return transport

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def test_an_unhandled_error_is_a_json_500_for_a_json_client_and_logged_once(self) -> None:
        transport = self.exchange(self.request("GET", "/boom", JSON))
        response = Response(transport.value())
        self.assertEqual(
            (response.code, response.header("Content-Type"), json.loads(response.body)),
            (500, "application/json", {"error": "internal server error", "status": 500}),
        )
        self.assertNotIn(b"secret detail", transport.value())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_an_unhandled_error_is_html_for_others_and_logged_once(self) -> None:
        transport = self.exchange(self.request("GET", "/boom", BROWSER))
        response = Response(transport.value())
        self.assertEqual((response.code, response.header("Content-Type")), (500, "text/html"))
        self.assertIn(b"Processing Failed", response.body)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_a_body_over_the_limit_is_a_json_413_for_a_client_sending_json(self) -> None:
        transport = self.exchange(
            self.request("POST", "/echo", {"Content-Type": "application/json", "Content-Length": "5000"})
        )
        response = Response(transport.value())
        self.assertEqual(
            (response.code, response.header("Content-Type"), json.loads(response.body)),
            (
                413,
                "application/json",
                {"error": "request body too large: the limit is 1024 bytes", "status": 413},
            ),
        )
        self.assertTrue(transport.disconnecting)

    def test_a_body_over_the_limit_is_a_text_413_for_others(self) -> None:
        transport = self.exchange(self.request("POST", "/echo", {"Content-Length": "5000"}))
        response = Response(transport.value())
        self.assertEqual(
            (response.code, response.header("Content-Type"), response.body),
            (413, "text/plain; charset=utf-8", b"request body too large: the limit is 1024 bytes\n"),
        )
        self.assertTrue(transport.disconnecting)

    def test_a_plain_get_on_the_websocket_path_is_426_with_a_text_hint_logged_at_debug_only(self) -> None:
        events = capture_logs(self)
        transport = self.exchange(self.request("GET", "/ws", BROWSER))
        response = Response(transport.value())
        self.assertEqual(
            (response.code, response.header("Upgrade"), response.header("Content-Type"), response.body),
            (426, "websocket", "text/plain; charset=utf-8", HINT.encode() + b"\n"),
        )
        self.assertTrue(transport.disconnecting)
        self.assertNotIsInstance(transport.protocol, WampServerProtocol)
        self.assertEqual(above_debug(events), [])
        self.assertIn("426 for a plain HTTP GET", " ".join(str(e.get("log_format")) for e in events))

    def test_a_plain_get_on_the_websocket_path_is_426_with_a_json_hint_for_a_json_client(self) -> None:
        events = capture_logs(self)
        transport = self.exchange(self.request("GET", "/ws?token=x", JSON))
        response = Response(transport.value())
        self.assertEqual(
            (response.code, response.header("Upgrade"), response.header("Content-Type")),
            (426, "websocket", "application/json"),
        )
        self.assertEqual(json.loads(response.body), {"error": HINT, "status": 426})
        self.assertEqual(above_debug(events), [])

    def test_an_upgrade_to_another_protocol_on_the_websocket_path_is_426(self) -> None:
        transport = self.exchange(self.request("GET", "/ws", {"Upgrade": "h2c", "Connection": "Upgrade"}))
        self.assertEqual(Response(transport.value()).code, 426)

    def test_a_websocket_upgrade_in_any_case_is_still_handed_to_the_wamp_protocol(self) -> None:
        handshake = {
            "upgrade": "WebSocket",
            "connection": "Upgrade",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
            "sec-websocket-protocol": "wamp.2.json",
        }
        transport = self.exchange(self.request("GET", "/ws", handshake))
        self.assertIsInstance(transport.protocol, WampServerProtocol)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "), transport.value())

    def test_a_plain_get_on_the_websocket_path_of_a_kept_alive_connection_is_426_too(self) -> None:
        events = capture_logs(self)
        transport = self.exchange(self.request("POST", "/things"), self.request("GET", "/ws", JSON))
        first, second = responses(transport.value())
        self.assertEqual((first.code, first.body), (200, b"made"))
        self.assertEqual((second.code, second.header("Upgrade")), (426, "websocket"))
        self.assertEqual(json.loads(second.body), {"error": HINT, "status": 426})
        self.assertFalse(transport.disconnecting)
        self.assertEqual(above_debug(events), [])

    def test_a_missing_trailing_slash_still_redirects_a_json_client(self) -> None:
        self.app.route("/docs/")(lambda request: b"docs")
        response = Response(self.exchange(self.request("GET", "/docs", JSON)).value())
        location = response.header("Location") or ""
        self.assertEqual((response.code, location.rpartition("/docs")[1:]), (308, ("/docs", "/")))
