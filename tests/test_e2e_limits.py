"""End-to-end over real TCP: origin 403, 503 beyond max_connections, 1009 for oversize messages (plain
and compressed), HELLO timeout, rate-limit ERRORs, 413 for REST bodies."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from sandstone import Sandstone
from sandstone._limits import Limits
from tests.support import ServerTestCase, wait_until


def upgrade(host: str, path: str = "/ws", origin: str | None = None) -> bytes:
    """A WebSocket opening handshake asking for wamp.2.json."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: wamp.2.json",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawPeer(Protocol):
    """Raw bytes over TCP: what the server answered, and when it closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    @property
    def status(self) -> int | None:
        if b"\r\n" not in self.data:
            return None
        return int(self.data.split(b"\r\n", 1)[0].split()[1])


class RawWebSocket(WebSocketClientProtocol):
    """A WebSocket client that sends nothing by itself; records the close code."""

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(RuntimeError(f"closed before opening: {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback(code)


class LimitsTestCase(ServerTestCase):
    def serve_app(self, **limits: Any) -> Sandstone:
        app = Sandstone(anonymous=True, open_uris=True, limits=Limits(**limits))
        self.serve(app)
        return app

    async def raw(self, request: bytes) -> RawPeer:
        peer = RawPeer()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        await connectProtocol(endpoint, peer)
        self.addCleanup(lambda: peer.closed if peer.transport.loseConnection() is None else None)
        peer.transport.write(request)
        return peer

    async def handshake(self, origin: str | None = None, host: str | None = None) -> RawPeer:
        peer = await self.raw(upgrade(host or f"127.0.0.1:{self.port}", self.app.ws_path, origin))
        await wait_until(lambda: peer.status is not None or peer.closed.called)
        return peer

    async def websocket(self, compress: bool = False) -> RawWebSocket:
        factory = WebSocketClientFactory(self.ws_url, protocols=["wamp.2.json"])
        factory.protocol = RawWebSocket
        factory.opened = defer.Deferred()
        factory.closed = defer.Deferred()
        if compress:

            def accept(response: Any) -> Any:
                if isinstance(response, PerMessageDeflateResponse):
                    return PerMessageDeflateResponseAccept(response)
                return None

            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer(accept_max_window_bits=True)],
                perMessageCompressionAccept=accept,
            )
        connector = reactor.connectTCP("127.0.0.1", self.port, factory)
        self.addCleanup(connector.disconnect)
        protocol = await factory.opened
        protocol.closed = factory.closed
        return protocol


class OriginTests(LimitsTestCase):
    async def test_foreign_origin_gets_403(self) -> None:
        self.serve_app()
        for origin in ("http://evil.example", "null"):
            peer = await self.handshake(origin=origin)
            self.assertEqual(peer.status, 403, peer.data)

    async def test_own_origin_and_no_origin_are_allowed(self) -> None:
        self.serve_app()
        self.assertEqual((await self.handshake(origin=f"http://127.0.0.1:{self.port}")).status, 101)
        self.assertEqual((await self.handshake()).status, 101)

    async def test_a_websocket_origin_of_the_servers_own_host_is_allowed(self) -> None:
        # python wampy sends its own URL as the Origin: the server's own host, never a browser's page
        self.serve_app()
        self.assertEqual((await self.handshake(origin=f"ws://127.0.0.1:{self.port}")).status, 101)
        for origin in ("ws://evil.example", f"ws://127.0.0.1:{self.port + 1}", "http://evil.example"):
            self.assertEqual((await self.handshake(origin=origin)).status, 403, origin)

    async def test_allowed_origin_patterns(self) -> None:
        app = Sandstone(anonymous=True, allowed_origins=["https://*.example.com"])
        self.serve(app)
        self.assertEqual((await self.handshake(origin="https://app.example.com")).status, 101)
        self.assertEqual((await self.handshake(origin="https://example.org")).status, 403)


class MaxConnectionsTests(LimitsTestCase):
    async def test_beyond_max_connections_gets_503(self) -> None:
        app = self.serve_app(max_connections=2)
        await self.connect()
        await self.connect()
        peer = await self.handshake()
        self.assertEqual(peer.status, 503)
        self.assertEqual(app.router.stats["connections_refused"], 1)


class MessageSizeTests(LimitsTestCase):
    async def test_oversize_message_closes_with_1009(self) -> None:
        self.serve_app(max_message_size=65536, max_frame_size=65536)
        ws = await self.websocket()
        ws.sendMessage(b"x" * 100_000)
        self.assertEqual(await ws.closed, 1009)

    async def test_oversize_after_decompression_closes_with_1009(self) -> None:
        self.serve_app(max_message_size=65536, max_frame_size=65536)
        ws = await self.websocket(compress=True)
        [deflate] = ws.websocket_extensions_in_use
        self.assertEqual(deflate.client_max_window_bits, 11)
        ws.sendMessage(b"[" + b"0," * 1_000_000 + b"0]")  # 2 MB, a few KB once compressed
        self.assertEqual(await ws.closed, 1009)

    async def test_oversize_event_is_skipped_for_that_subscriber_only(self) -> None:
        app = self.serve_app(max_message_size=65536)
        subscriber = await self.connect()
        await subscriber.record("news")
        publisher = await self.connect()
        app.broadcast("news", "x" * 100_000)
        app.broadcast("news", "small")
        await wait_until(lambda: len(subscriber.received.get("news", [])) == 1)
        self.assertEqual(subscriber.received["news"][0].payload, "small")
        self.assertEqual(app.router.stats["oversize_skipped"], 1)
        del publisher


class HelloTimeoutTests(LimitsTestCase):
    async def test_no_hello_closes_the_connection(self) -> None:
        app = self.serve_app(hello_timeout=0.3)
        peer = await self.handshake()
        self.assertEqual(peer.status, 101)
        await defer.gatherResults([peer.closed]).addTimeout(5, reactor)
        self.assertIn(b"sandstone.error.hello_timeout", peer.data)
        self.assertEqual(app.router.stats["hello_timeouts"], 1)


class RateLimitTests(LimitsTestCase):
    async def test_publish_and_call_over_the_rate_get_rate_limited_and_the_session_lives(self) -> None:
        app = self.serve_app(publish_rate=0.001, publish_burst=2, call_rate=0.001, call_burst=1)

        @app.procedure("com.example.ping")
        def ping() -> str:
            return "pong"

        client = await self.connect()
        acknowledged = PublishOptions(acknowledge=True)
        await client.publish("news", 1, options=acknowledged)
        await client.publish("news", 2, options=acknowledged)
        with self.assertRaises(ApplicationError) as raised:
            await client.publish("news", 3, options=acknowledged)
        self.assertEqual(raised.exception.error, "sandstone.error.rate_limited")
        self.assertEqual(await client.call("com.example.ping"), "pong")
        with self.assertRaises(ApplicationError) as raised:
            await client.call("com.example.ping")
        self.assertEqual(raised.exception.error, "sandstone.error.rate_limited")
        self.assertTrue(client.is_attached())


class RequestBodyTests(LimitsTestCase):
    def app_with_echo(self) -> Sandstone:
        app = Sandstone(anonymous=True, limits=Limits(max_request_body=1000))

        @app.route("/echo", methods=["POST"])
        def echo(request: Any) -> bytes:
            return request.content.read()

        self.serve(app)
        return app

    async def test_content_length_over_the_limit_gets_413_before_the_body_is_sent(self) -> None:
        self.app_with_echo()
        peer = await self.raw(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        await peer.closed
        self.assertEqual(peer.status, 413)
        self.assertNotIn(b"100 Continue", peer.data)

    async def test_chunked_body_over_the_limit_gets_413(self) -> None:
        self.app_with_echo()
        chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
        peer = await self.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        await wait_until(lambda: peer.data != b"", timeout=0.3).addErrback(lambda f: None)
        self.assertEqual(peer.data, b"")  # 600 bytes: still within the limit
        peer.transport.write(chunk)
        await peer.closed
        self.assertEqual(peer.status, 413)

    async def test_bodies_within_the_limit_are_served(self) -> None:
        self.app_with_echo()
        response = await self.http().post(f"{self.base_url}/echo", data=b"b" * 1000)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"b" * 1000)
