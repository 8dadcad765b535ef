"""SandstoneSite hands each new connection, from its first request line, to the WAMP WebSocket protocol
(``GET <ws_path>``) or to twisted.web's HTTP channel (anything else).

Unit tests drive the site with a StringTransport and fake clocks; end-to-end tests serve over real TCP and
TLS on 127.0.0.1 with autobahn-python clients, and check that a plain twisted.web Site (the slow path,
through the resource tree) still serves WAMP.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
from typing import Any

from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.types import ComponentConfig
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http as twisted_http
from twisted.web.server import Request, Site

from sandstone import Limits, Sandstone
from sandstone._transport import WampServerProtocol
from sandstone._web import LimitedRequest, SandstoneSite
from tests.support import (
    SERIALIZERS,
    Client,
    ConnectionTracking,
    ServerTestCase,
    TrackingSite,
    wait_until,
    websocket_payloads,
)

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = base64.b64encode(hashlib.sha1(WS_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
WELCOME = 2


def make_app(limits: Limits | None = None) -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=True, limits=limits)

    @app.route("/api/greeting")
    def greeting(request: Any) -> str:
        return "hello from a klein route"

    @app.route("/api/announce", methods=["POST"])
    def announce(request: Any) -> str:
        text = request.content.read().decode()
        app.broadcast("news", text)
        return f"announced {text}"

    return app


def upgrade_request(target: bytes = b"/ws") -> bytes:
    """A browser-like WebSocket opening handshake asking for wamp.2.json."""
    return (
        b"GET " + target + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8080\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: wamp.2.json\r\n"
        b"\r\n"
    )


def client_frame(payload: bytes) -> bytes:
    """A masked, unfragmented text frame, as a client sends it (payloads under 64 KiB)."""
    mask = b"\x0f\x1e\x2d\x3c"
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + len(payload).to_bytes(2, "big")
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return b"\x81" + length + mask + masked


def wamp_frame(raw: list[Any]) -> bytes:
    return client_frame(json.dumps(raw).encode())


class RecordingRequest(LimitedRequest):
    """The app's request type, noting on its site each request twisted.web serves."""

    def process(self) -> None:
        self.channel.site.served.append((self.method, self.path))
        super().process()


class RecordingSite(TrackingSite):
    """The app's kind of Site, remembering its connections and the requests twisted.web served."""

    requestFactory = RecordingRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[tuple[bytes, bytes]] = []


class PlainRequest(Request):
    def process(self) -> None:
        self.channel.site.served.append((self.method, self.path))
        super().process()


class PlainSite(ConnectionTracking, Site):
    """A plain twisted.web Site, remembering its connections and the requests it served."""

    requestFactory = PlainRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[tuple[bytes, bytes]] = []


class AbortableTransport(StringTransport):
    """A StringTransport telling an abort from a close."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


# unit tests


class HandOffTests(SynchronousTestCase):
    """A SandstoneSite from ``app.site()``, its handshake timer on ``clock`` and twisted.web's on another."""

    def setUp(self) -> None:
        # No timer may reach the global reactor from a synchronous test: autobahn's handshake timeout
        # (on txaio's reactor) and the HELLO timeout are off; the site's own timeout is on a fake clock.
        self.app = make_app(Limits(open_handshake_timeout=0, hello_timeout=0, auto_ping_interval=0))
        self.clock = Clock()
        self.http_clock = Clock()
        self.site = self.make_site()

    def make_site(self, **kwargs: Any) -> RecordingSite:
        built = self.app.site()
        kwargs.setdefault("websocket", built.websocket)
        kwargs.setdefault("limits", self.app.limits)
        return RecordingSite(
            built.resource, header_timeout=5.0, clock=self.clock, reactor=self.http_clock, **kwargs
        )

    def connect(self, site: SandstoneSite | None = None) -> AbortableTransport:
        transport = AbortableTransport(peerAddress=PEER)
        protocol = (site or self.site).buildProtocol(PEER)
        assert protocol is not None
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def send(self, transport: StringTransport, data: bytes, chunk: int | None = None) -> None:
        """Deliver ``data`` as the reactor would, to whichever protocol the transport has by then."""
        step = chunk or len(data) or 1
        for start in range(0, len(data), step):
            transport.protocol.dataReceived(data[start : start + step])

    def assert_websocket_opened(self, transport: StringTransport) -> None:
        self.assertIsInstance(transport.protocol, WampServerProtocol)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101 "), response)
        self.assertIn(b"Sec-WebSocket-Protocol: wamp.2.json\r\n", response)
        self.assertIn(b"Sec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n", response)
        self.assertEqual(self.site.served, [])  # twisted.web never saw the request

    def welcomes(self, transport: StringTransport) -> list[Any]:
        body = transport.value().partition(b"\r\n\r\n")[2]
        return [json.loads(p) for p in websocket_payloads(body) if json.loads(p)[0] == WELCOME]

    # WebSocket connections

    def test_websocket_handshake_goes_to_the_wamp_protocol(self) -> None:
        transport = self.connect()
        self.send(transport, upgrade_request())
        self.assert_websocket_opened(transport)

    def test_websocket_handshake_with_a_query_goes_to_the_wamp_protocol(self) -> None:
        transport = self.connect()
        self.send(transport, upgrade_request(b"/ws?token=x"))
        self.assert_websocket_opened(transport)

    def test_handshake_and_hello_one_byte_at_a_time_reach_the_wamp_protocol(self) -> None:
        transport = self.connect()
        request = upgrade_request()
        self.send(transport, request[:-1], chunk=1)  # up to the last LF of the head
        self.assertEqual(transport.value(), b"")
        self.assertNotIsInstance(transport.protocol, WampServerProtocol)
        self.send(transport, request[-1:] + wamp_frame(HELLO), chunk=1)
        self.assert_websocket_opened(transport)
        self.assertEqual(len(self.welcomes(transport)), 1)

    def test_bytes_buffered_with_the_first_line_reach_the_wamp_protocol(self) -> None:
        transport = self.connect()
        self.send(transport, upgrade_request() + wamp_frame(HELLO))
        self.assert_websocket_opened(transport)
        self.assertEqual(len(self.welcomes(transport)), 1)

    def test_wrapping_transport_gets_the_wamp_protocol_as_its_wrapped_protocol(self) -> None:
        """TLS (TLSMemoryBIOProtocol) and policies wrappers are ProtocolWrappers: the TCP transport keeps
        the wrapper, and the wrapper hands the bytes to the WebSocket protocol."""
        wrapper = WrappingFactory(self.site).buildProtocol(PEER)
        transport = AbortableTransport(peerAddress=PEER)
        transport.protocol = wrapper
        wrapper.makeConnection(transport)
        self.send(transport, upgrade_request(), chunk=7)
        self.assertIs(transport.protocol, wrapper)
        self.assertIsInstance(wrapper.wrappedProtocol, WampServerProtocol)
        self.assertIs(wrapper.wrappedProtocol.transport, wrapper)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.send(transport, wamp_frame(HELLO))
        self.assertEqual(len(self.welcomes(transport)), 1)

    # HTTP connections

    def test_rest_route_is_served_by_twisted_web(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", chunk=5)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertIn(b"hello from a klein route", response)
        self.assertEqual(self.site.served, [(b"GET", b"/api/greeting")])
        self.assertNotIsInstance(transport.protocol, WampServerProtocol)

    def test_keep_alive_connection_serves_a_second_request(self) -> None:
        transport = self.connect()
        request = b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.send(transport, request + request)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertFalse(transport.disconnecting)

    def test_path_starting_with_the_websocket_path_is_served_by_twisted_web(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /wsx HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "), transport.value())
        self.assertEqual(self.site.served, [(b"GET", b"/wsx")])

    def test_post_to_the_websocket_path_is_served_by_twisted_web(self) -> None:
        transport = self.connect()
        self.send(transport, b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        self.assertEqual(self.site.served, [(b"POST", b"/ws")])
        # The app's resource mounts its WebSocket endpoint at ws_path too, and it refuses a POST.
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "), transport.value())

    def test_upgrade_on_a_kept_alive_http_connection_goes_through_twisted_web(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + upgrade_request())
        self.assertEqual(self.site.served, [(b"GET", b"/api/greeting"), (b"GET", b"/ws")])
        self.assertIn(b"HTTP/1.1 101 ", transport.value())
        self.assertIsInstance(transport.protocol, WampServerProtocol)

    def test_a_head_of_max_header_bytes_is_still_waited_for(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /ws HTTP/1.1\r\nX-Pad: " + b"a" * (16_384 - 27))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_a_head_over_max_header_bytes_is_answered_431_and_closed(self) -> None:
        for request in (b"G" * 16_385, b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: aaaaaaaa\r\n" * 1100):
            transport = self.connect()
            self.send(transport, request, chunk=4096)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value())
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.site.served, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.site.stats["head_refused"], 2)

    def test_more_than_max_header_count_header_lines_are_answered_431(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\n" + b"X-A: b\r\n" * 101)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value())
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\n" + b"X-A: b\r\n" * 99 + b"Host: x\r\n\r\n")
        self.assertIn(b"hello from a klein route", transport.value())

    def test_a_later_request_on_a_kept_alive_connection_is_bounded_too(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 17_000 + b"\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value().count(b"hello from a klein route"), 1)

    def test_a_non_ascii_ws_path_still_builds_a_site(self) -> None:
        """Such a path arrives percent-encoded, so it never matches the raw line: twisted.web serves it."""
        app = Sandstone(anonymous=True, ws_path="/flüsse")
        site = app.site()
        self.assertEqual(site.websocket[0], "/flüsse")  # type: ignore[index]

    def test_site_without_websocket_builds_plain_http_channels(self) -> None:
        site = self.make_site(websocket=None)
        self.site = site
        transport = self.connect(site)
        self.send(transport, upgrade_request())
        # the request went through twisted.web, to the WebSocket endpoint the app's resource mounts
        self.assertEqual(site.served, [(b"GET", b"/ws")])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "), transport.value())

    # the header deadline

    def test_no_head_within_the_timeout_is_answered_408_and_closed(self) -> None:
        transport = self.connect()
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.site.stats["head_timeouts"], 1)

    def test_header_lines_do_not_extend_the_deadline(self) -> None:
        """A slowloris sending a header line now and then is cut at the deadline all the same."""
        for first in (b"GET /ws HTTP/1.1\r\n", b"GET /api/greeting HTTP/1.1\r\n"):
            transport = self.connect()
            self.send(transport, first)
            for _ in range(4):
                self.clock.advance(1.0)
                self.send(transport, b"X-A: b\r\n")
            self.clock.advance(1.1)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.site.served, [])

    def test_a_slow_later_request_head_gets_408(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\n")
        for _ in range(9):
            self.clock.advance(1.0)
            self.send(transport, b"X-A: b\r\n")
        self.clock.advance(1.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_a_slow_body_gets_408_at_the_request_timeout(self) -> None:
        transport = self.connect()
        self.send(transport, b"POST /api/announce HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n")
        for _ in range(59):
            self.clock.advance(1.0)
            self.send(transport, b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())
        self.assertEqual(self.site.served, [])

    def test_timer_is_cancelled_once_a_websocket_line_arrives(self) -> None:
        transport = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.send(transport, upgrade_request())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertFalse(transport.aborted)
        self.assertFalse(transport.disconnecting)

    def test_timers_are_cancelled_once_an_http_request_is_served(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /api/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertIn(b"hello from a klein route", transport.value())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_before_the_first_line_cancels_the_timer(self) -> None:
        transport = self.connect()
        transport.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zero_timeout_sets_no_timer(self) -> None:
        site = self.make_site()
        site.header_timeout = 0
        transport = self.connect(site)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.send(transport, upgrade_request())
        self.assertIsInstance(transport.protocol, WampServerProtocol)


# end-to-end tests


class _Certificate:
    """A self-signed certificate for ``localhost``, made once per test run."""

    _pem: tuple[bytes, bytes] | None = None

    @classmethod
    def pem(cls) -> tuple[bytes, bytes]:
        if cls._pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
            now = datetime.datetime.now(datetime.UTC)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256())
            )
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            cls._pem = (certificate.public_bytes(serialization.Encoding.PEM), key_pem)
        return cls._pem


class EndToEndTests(ServerTestCase):
    timeout = 10  # a broken hand-off leaves a client waiting to join: fail in seconds, not minutes

    def listen(self, app: Sandstone, site: Any, tls: bool = False) -> None:
        """Serve ``site`` on an ephemeral 127.0.0.1 port (TLS with the test certificate if asked)."""
        options = None
        if tls:
            cert_pem, key_pem = _Certificate.pem()
            options = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem).options()
        self.serve(app, site, options)

    def connect_tls(self) -> Any:
        """A Deferred firing with a session joined over wss://, trusting only the test certificate."""
        session = Client(ComponentConfig(self.app.realm))
        factory = WampWebSocketClientFactory(
            lambda: session,
            url=f"wss://localhost:{self.port}{self.app.ws_path}",
            serializers=[SERIALIZERS["json"]()],
        )
        trust = ssl.Certificate.loadPEM(_Certificate.pem()[0])
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        connector = reactor.connectSSL("127.0.0.1", self.port, factory, options)

        def cleanup() -> Any:
            connector.disconnect()
            return None if session.disconnected.called else session.disconnected

        self.addCleanup(cleanup)
        return session.joined

    async def assert_receives_broadcast(self, client: Client) -> None:
        await client.record("news")
        self.app.broadcast("news", {"headline": "handed off"})
        await wait_until(lambda: client.received["news"], timeout=2.0)
        self.assertEqual([event.payload for event in client.received["news"]], [{"headline": "handed off"}])

    async def test_plain_twisted_web_site_still_serves_wamp(self) -> None:
        app = make_app()
        self.listen(app, PlainSite(app.resource()))
        client = await self.connect()
        await self.assert_receives_broadcast(client)
        self.assertEqual(self.site.served, [(b"GET", b"/ws")])  # upgraded through the resource tree

    async def test_rest_and_websocket_share_a_port(self) -> None:
        app = make_app()
        self.listen(app, app.site(RecordingSite))
        client = await self.connect()
        await self.assert_receives_broadcast(client)
        http = self.http()
        response = await http.get(f"{self.base_url}/api/greeting")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.text(), "hello from a klein route")
        response = await http.post(f"{self.base_url}/api/announce", data=b"from rest")
        self.assertEqual(await response.text(), "announced from rest")
        await wait_until(lambda: len(client.received["news"]) == 2, timeout=2.0)
        self.assertEqual(client.received["news"][1].payload, "from rest")
        # the WebSocket connection never went through twisted.web
        self.assertEqual(self.site.served, [(b"GET", b"/api/greeting"), (b"POST", b"/api/announce")])

    def form_app(self) -> Sandstone:
        app = make_app()

        @app.route("/api/form", methods=["POST"])
        def form(request: Any) -> bytes:
            args = {k.decode(): [v.decode() for v in vs] for k, vs in sorted(request.args.items())}
            return json.dumps({"args": args, "body": request.content.read().decode()}).encode()

        return app

    async def post_form(self, **kwargs: Any) -> Any:
        response = await self.http().post(f"{self.base_url}/api/form", **kwargs)
        self.assertEqual(response.code, 200)
        return json.loads(await response.text())

    async def test_a_posted_form_still_fills_request_args(self) -> None:
        app = self.form_app()
        self.listen(app, app.site(RecordingSite))
        parsed = await self.post_form(data={"title": "hello", "tag": "x"})
        self.assertEqual(parsed["args"], {"tag": ["x"], "title": ["hello"]})
        parsed = await self.post_form(data={"title": "multi"}, files={"file": ("a.txt", io.BytesIO(b"data"))})
        self.assertEqual(parsed["args"], {"file": ["data"], "title": ["multi"]})

    async def test_a_json_body_is_not_parsed_as_a_form(self) -> None:
        parsed_types: list[bytes] = []
        original = twisted_http._parseContentType
        self.patch(
            twisted_http, "_parseContentType", lambda line: parsed_types.append(line) or original(line)
        )
        app = self.form_app()
        self.listen(app, app.site(RecordingSite))
        headers = {"Content-Type": ["application/json; charset=utf-8"]}
        parsed = await self.post_form(data=b'{"title": "a=b"}', headers=headers)
        self.assertEqual(parsed, {"args": {}, "body": '{"title": "a=b"}'})
        self.assertEqual(parsed_types, [])  # not even looked at
        await self.post_form(data={"title": "form"})
        self.assertEqual(parsed_types, [b"application/x-www-form-urlencoded"])

    async def test_handed_off_connection_sends_without_nagle_delay(self) -> None:
        # a broadcast's frames go out at once (autobahn's tcpNoDelay), not held back until an ACK
        app = make_app()
        self.listen(app, app.site(RecordingSite))
        await self.connect()
        [transport] = self.site.transports
        self.assertIsInstance(transport.protocol, WampServerProtocol)
        self.assertTrue(transport.getTcpNoDelay())

    async def test_handed_off_tls_connection_sends_without_nagle_delay(self) -> None:
        app = make_app()
        self.listen(app, app.site(RecordingSite), tls=True)
        await self.connect_tls()
        [wrapper] = self.site.transports
        self.assertIsInstance(wrapper.wrappedProtocol, WampServerProtocol)
        self.assertTrue(wrapper.transport.getTcpNoDelay())  # the TCP connection under TLS

    async def test_websocket_over_tls(self) -> None:
        app = make_app()
        self.listen(app, app.site(RecordingSite), tls=True)
        client = await self.connect_tls()
        await self.assert_receives_broadcast(client)
        self.assertEqual(self.site.served, [])
        [transport] = self.site.transports
        self.assertIsInstance(transport, ProtocolWrapper)  # TLSMemoryBIOProtocol
        self.assertIsInstance(transport.wrappedProtocol, WampServerProtocol)
