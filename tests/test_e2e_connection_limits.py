"""End-to-end over real TCP: the connection attacks of issue 10 (handshake header floods, slowloris, half-open
WebSockets, DNS rebinding) against an app served on 127.0.0.1, while a legitimate client keeps working.

Attackers connect from 127.0.0.1; legitimate late-comers from 127.0.0.2 (another address of the loopback
network), as a client elsewhere on the Internet would. Sizes and durations are scaled down from the issue's
(a few hundred sockets, a few seconds); the bounds asserted are documented in the README's Limits section.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.types import ComponentConfig
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher

from sandstone import Limits, Sandstone
from tests.support import SERIALIZERS, Client, ServerTestCase, sleep, wait_until
from tests.test_e2e_limits import RawPeer, upgrade

ATTACKER = "127.0.0.1"
LEGIT = "127.0.0.2"


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class AttackTestCase(ServerTestCase):
    def setUp(self) -> None:
        self.critical: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None or event.get("log_level") == LogLevel.critical:
                self.critical.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def serve_app(self, allowed_hosts: list[str] | None = None, **limits: Any) -> Sandstone:
        limits.setdefault("auto_ping_interval", 0)
        app = Sandstone(anonymous=True, open_uris=True, allowed_hosts=allowed_hosts, limits=Limits(**limits))

        @app.route("/hello")
        def hello(request: Any) -> str:
            return "hello"

        self.serve(app)
        return app

    async def peer(self, data: bytes = b"", source: str = ATTACKER) -> RawPeer:
        peer = RawPeer()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, bindAddress=(source, 0))
        await connectProtocol(endpoint, peer)
        self.addCleanup(self._close, peer)
        if data:
            peer.transport.write(data)
        return peer

    @staticmethod
    def _close(peer: RawPeer) -> Any:
        if peer.closed.called:
            return None
        peer.transport.abortConnection()
        return peer.closed

    async def join(self, source: str = LEGIT) -> Client:
        """A real autobahn-python session, connecting from ``source``."""
        session = Client(ComponentConfig(self.app.realm))
        factory = WampWebSocketClientFactory(
            lambda: session, url=self.ws_url, serializers=[SERIALIZERS["json"]()]
        )
        connector = reactor.connectTCP("127.0.0.1", self.port, factory, bindAddress=(source, 0))
        self.addCleanup(
            lambda: (connector.disconnect(), None if session.disconnected.called else session.disconnected)[1]
        )
        return await session.joined

    async def rest(self, host: str | None = None, source: str = LEGIT) -> RawPeer:
        peer = await self.peer(
            f"GET /hello HTTP/1.1\r\nHost: {host or f'127.0.0.1:{self.port}'}\r\n"
            "Connection: close\r\n\r\n".encode(),
            source,
        )
        await peer.closed
        return peer

    def feed(self, topic: str, interval: float = 0.02) -> list[int]:
        """Broadcast a counter on ``topic`` every ``interval`` seconds until the test ends; returns the
        values sent."""
        sent: list[int] = []

        def tick() -> None:
            sent.append(len(sent))
            self.app.broadcast(topic, sent[-1])

        loop = LoopingCall(tick)
        loop.start(interval)
        self.addCleanup(lambda: loop.stop() if loop.running else None)
        return sent


class HeaderFloodTests(AttackTestCase):
    async def test_an_endless_handshake_head_is_cut_at_max_header_bytes(self) -> None:
        """Finding 1: sockets sending ``GET /ws`` and then header lines without end. Before the fix each
        buffered everything it was sent until the handshake timeout (1,500 x 1 MiB took RSS to 1 GiB)."""
        self.serve_app(max_pending_per_ip=1000)
        subscriber = await self.join(ATTACKER)
        await subscriber.record("news")
        sent = self.feed("news")
        pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        chunk = pad * 64  # 64 KiB
        before = rss_bytes()
        peers = [await self.peer(b"GET /ws HTTP/1.1\r\nHost: x\r\n") for _ in range(200)]
        for _ in range(4):  # 256 KiB per socket, 50 MiB in all, unless the server closes first
            for peer in peers:
                if not peer.closed.called:
                    peer.transport.write(chunk)
            await sleep(0.05)
        await defer.DeferredList([peer.closed for peer in peers])
        grown = rss_bytes() - before
        statuses = {peer.status for peer in peers}
        self.assertEqual(statuses - {431, None}, set(), statuses)  # None: reset before the 431 was read
        self.assertGreater(self.app.router.stats["head_refused"], 150)
        self.assertLess(grown, 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB")
        # the legitimate subscriber got every event broadcast meanwhile
        last = sent[-1]
        await wait_until(lambda: len(subscriber.received["news"]) >= last + 1)
        self.assertEqual([r.payload for r in subscriber.received["news"]][: last + 1], list(range(last + 1)))
        self.assertEqual(self.critical, [])


class SlowlorisTests(AttackTestCase):
    async def test_slow_heads_are_bounded_per_ip_and_cut_at_the_header_deadline(self) -> None:
        """Finding 2: sockets sending one header line now and then. Before the fix twisted.web restarted its
        idle timer at every line and nothing bounded them: the server ran out of file descriptors."""
        app = self.serve_app(header_timeout=1.5)
        peers = [await self.peer(b"GET /hello HTTP/1.1\r\n") for _ in range(250)]
        await wait_until(lambda: sum(peer.status == 503 for peer in peers) == 150)

        def drip() -> None:
            for peer in peers:
                if not peer.closed.called:
                    peer.transport.write(b"X-Drip: 1\r\n")

        loop = LoopingCall(drip)
        loop.start(0.2)
        self.addCleanup(lambda: loop.stop() if loop.running else None)
        self.assertLessEqual(len(self.site.open_transports()), 100)
        self.assertEqual(app.router.stats["pending_per_ip_refused"], 150)
        # meanwhile a client from elsewhere is served, REST and WebSocket alike
        self.assertEqual((await self.rest()).status, 200)
        client = await self.join()
        self.assertTrue(client.is_attached())
        # the held ones get 408 at the deadline, however often they send a line
        await wait_until(lambda: all(peer.closed.called for peer in peers if peer.status != 503), timeout=5)
        self.assertEqual({peer.status for peer in peers}, {408, 503})
        self.assertEqual(app.router.stats["head_timeouts"], 100)
        self.assertEqual(self.critical, [])


class HalfOpenTests(AttackTestCase):
    async def test_websockets_that_never_say_hello_cannot_fill_the_server(self) -> None:
        """Finding 7: sockets completing the handshake but never opening a WAMP session held a place in
        max_connections for the whole HELLO timeout; now they count as pending, bounded per IP."""
        app = self.serve_app(hello_timeout=1.5, max_connections=1000)
        peers = [await self.peer(upgrade(f"127.0.0.1:{self.port}")) for _ in range(150)]
        await wait_until(lambda: all(peer.status is not None for peer in peers))
        statuses = [peer.status for peer in peers]
        self.assertEqual((statuses.count(101), statuses.count(503)), (100, 50))
        client = await self.join()  # from another address, at once
        self.assertTrue(client.is_attached())
        await wait_until(lambda: all(peer.closed.called for peer in peers), timeout=5)
        self.assertEqual(app.router.stats["hello_timeouts"], 100)
        self.assertTrue(all(b"sandstone.error.hello_timeout" in p.data for p in peers if p.status == 101))
        self.assertEqual(self.critical, [])

    async def test_connections_per_ip(self) -> None:
        self.serve_app(max_connections_per_ip=3)
        held = [await self.join(ATTACKER) for _ in range(3)]
        self.assertEqual(len(held), 3)
        refused = await self.peer(upgrade(f"127.0.0.1:{self.port}"))
        await refused.closed
        self.assertEqual(refused.status, 503)
        self.assertEqual((await self.rest()).status, 200)  # another address


class RebindingTests(AttackTestCase):
    async def test_a_rebound_host_name_is_refused_on_a_loopback_server(self) -> None:
        """Finding 7: the Origin check trusted Host, so a DNS-rebinding page (Origin and Host both
        ``evil.example``) was accepted by a development server on 127.0.0.1."""
        app = self.serve_app()
        evil = f"evil.example:{self.port}"
        self.assertEqual((await self.rest(host=evil)).status, 400)
        peer = await self.peer(upgrade(evil, origin=f"http://{evil}"))
        await peer.closed
        self.assertEqual(peer.status, 400)
        self.assertEqual(app.router.stats["hosts_refused"], 2)
        self.assertEqual((await self.rest(host=f"localhost:{self.port}")).status, 200)
        peer = await self.peer(upgrade(f"localhost:{self.port}", origin=f"http://localhost:{self.port}"))
        await wait_until(lambda: peer.status is not None)
        self.assertEqual(peer.status, 101)

    async def test_allowed_hosts(self) -> None:
        self.serve_app(allowed_hosts=["api.example.com", "*.example.org"])
        self.assertEqual((await self.rest(host="api.example.com")).status, 200)
        self.assertEqual((await self.rest(host=f"app.example.org:{self.port}")).status, 200)
        self.assertEqual((await self.rest(host=f"localhost:{self.port}")).status, 400)
        peer = await self.peer(upgrade("api.example.com"))
        await wait_until(lambda: peer.status is not None)
        self.assertEqual(peer.status, 101)
        peer = await self.peer(upgrade(f"127.0.0.1:{self.port}"))
        await peer.closed
        self.assertEqual(peer.status, 400)
