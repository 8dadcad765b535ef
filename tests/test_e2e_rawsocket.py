"""End-to-end: WAMP over RawSocket on real TCP and UNIX sockets, with autobahn-python's RawSocket client,
next to WebSocket clients of the same router: pub/sub and RPC between them, authentication and
authorization, the handshake's replies, the maximum message length both ways, misbehaving clients; and
``twistd sandstone --rawsocket``."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from autobahn.twisted.rawsocket import WampRawSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig, PublishOptions
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from sandstone import Credentials, Identity, Sandstone
from sandstone._limits import Limits
from sandstone._rawsocket import PING, frame_header
from tests.cluster_support import ClusterTestCase
from tests.support import SERIALIZERS, Client, ServerTestCase, sleep, wait_until
from tests.test_e2e_auth import AuthClient, client_class
from tests.test_e2e_twistd import TwistdTestCase, free_port

ACK = PublishOptions(acknowledge=True)


def make_app(limits: Limits | None = None) -> Sandstone:
    app = Sandstone(open_uris=True, anonymous=True, limits=limits)

    @app.authenticator
    def check(credentials: Credentials) -> Identity | None:
        if credentials.authid == "alice" and credentials.secret_is("alice-ticket"):
            return Identity("alice", "user")
        return None

    @app.authorizer
    def authorize(session: Any, action: str, uri: str, match: str) -> bool:
        return not uri.startswith("admin.") or session.authrole == "admin"

    return app


def connect_rawsocket(test: Any, address: int | str, factory: Any, session: Client) -> None:
    """Connect ``factory`` (autobahn's RawSocket client factory, a plain ``Factory``: endpoints take it) to
    a TCP port on 127.0.0.1 or a UNIX socket path; the connection is closed at ``test``'s cleanup."""
    if isinstance(address, str):
        endpoint: Any = UNIXClientEndpoint(reactor, address)
    else:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address)
    connecting = endpoint.connect(factory)

    async def cleanup() -> None:
        protocol = await connecting
        protocol.transport.loseConnection()
        await wait_until(lambda: not protocol.transport.connected, 5.0)

    test.addCleanup(cleanup)


class RawClient(Protocol):
    """A client speaking bytes: what it received, and a Deferred firing once the connection is gone."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class RawSocketTestCase(ServerTestCase):
    timeout = 60
    limits: Limits | None = None  # the app's

    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.serve_both(make_app(self.limits))

    def tearDown(self) -> None:
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical or "log_failure" in e]
        self.assertEqual(critical, [])

    def log_text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.logged)

    def serve_both(self, app: Sandstone) -> None:
        """Serve ``app``'s WebSocket (``self.port``) and RawSocket on TCP (``self.raw_port``) and on a UNIX
        socket (``self.raw_path``), sharing the Site's connection counts."""
        self.serve(app)
        self.raw = app.rawsocket_factory(self.site.admission)
        self.raw_port = self.listen(reactor.listenTCP(0, self.raw, interface="127.0.0.1")).getHost().port
        directory = tempfile.mkdtemp()
        self.raw_path = os.path.join(directory, "wamp.sock")
        self.addCleanup(os.rmdir, directory)
        self.listen(reactor.listenUNIX(self.raw_path, self.raw))

    def listen(self, port: IListeningPort) -> IListeningPort:
        self.addCleanup(port.stopListening)
        # runs before the port stops: the server side of every RawSocket connection is gone
        self.addCleanup(wait_until, lambda: not self.raw.connections, 2.0)
        return port

    def rawsocket(
        self,
        serializer: str = "json",
        *,
        unix: bool = False,
        client: type[Client] = Client,
        max_message_size: int | None = None,
    ) -> Client:
        """An autobahn-python RawSocket client (disconnected at cleanup); ``await client.joined``."""
        session = client(ComponentConfig(self.app.realm))
        factory = WampRawSocketClientFactory(lambda: session, serializer=SERIALIZERS[serializer]())
        if max_message_size is not None:
            factory.setProtocolOptions(maxMessagePayloadSize=max_message_size)
        connect_rawsocket(self, self.raw_path if unix else self.raw_port, factory, session)
        return session

    async def peers(self) -> tuple[Client, Client]:
        raw, ws = await self.rawsocket("cbor").joined, await self.connect("json")
        await raw.record("t")
        await ws.record("t")
        return raw, ws

    async def round_trip(self, raw: Client, ws: Client, n: int) -> None:
        await raw.publish("t", n, options=PublishOptions(acknowledge=True, exclude_me=False))
        await wait_until(
            lambda: n in [e.payload for e in ws.received["t"]] and n in [e.payload for e in raw.received["t"]]
        )

    async def raw_client(self, unix: bool = False) -> RawClient:
        """A connection sending and receiving bytes (closed at cleanup)."""
        if unix:
            endpoint: Any = UNIXClientEndpoint(reactor, self.raw_path)
        else:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.raw_port)
        client = await endpoint.connect(Factory.forProtocol(RawClient))

        def cleanup() -> Any:
            client.transport.abortConnection()
            return client.lost

        self.addCleanup(cleanup)
        return client  # type: ignore[no-any-return]


class PeerTests(RawSocketTestCase):
    async def check_pubsub(self, raw: Client) -> None:
        ws = await self.connect("msgpack")
        await raw.record("chat.room")
        await ws.record("chat.room")
        await raw.publish(
            "chat.room", "from rawsocket", options=PublishOptions(acknowledge=True, exclude_me=False)
        )
        await ws.publish("chat.room", "from websocket", options=ACK)
        await wait_until(lambda: len(ws.received["chat.room"]) == 1 and len(raw.received["chat.room"]) == 2)
        self.assertEqual([e.payload for e in ws.received["chat.room"]], ["from rawsocket"])
        self.assertEqual([e.payload for e in raw.received["chat.room"]], ["from rawsocket", "from websocket"])

    async def test_rawsocket_and_websocket_sessions_publish_to_each_other_over_tcp(self) -> None:
        for serializer in ("json", "msgpack", "cbor"):
            await self.check_pubsub(await self.rawsocket(serializer).joined)
        subprotocols = sorted(session.subprotocol for session in self.app.router.sessions.values())
        self.assertEqual(
            subprotocols, ["rawsocket.cbor", "rawsocket.json", "rawsocket.msgpack", *["wamp.2.msgpack"] * 3]
        )

    async def test_over_a_unix_socket(self) -> None:
        await self.check_pubsub(await self.rawsocket("cbor", unix=True).joined)

    async def test_they_call_each_others_procedures(self) -> None:
        raw = await self.rawsocket("json").joined
        ws = await self.connect("cbor")
        await raw.register(lambda a, b: a + b, "raw.add")
        await ws.register(lambda a, b: a * b, "ws.multiply")
        self.assertEqual(await ws.call("raw.add", 2, 3), 5)
        self.assertEqual(await raw.call("ws.multiply", 6, 7), 42)
        other = await self.rawsocket("msgpack", unix=True).joined
        self.assertEqual(await other.call("raw.add", 20, 22), 42)

    async def test_large_messages_cross_both_ways(self) -> None:
        raw = await self.rawsocket("msgpack").joined
        ws = await self.connect("json")
        await raw.record("big")
        await ws.record("big")
        await raw.publish("big", "r" * 700_000, options=ACK)
        await ws.publish("big", "w" * 700_000, options=ACK)
        await wait_until(lambda: ws.received["big"] and raw.received["big"])
        self.assertEqual(ws.received["big"][0].payload, "r" * 700_000)
        self.assertEqual(raw.received["big"][0].payload, "w" * 700_000)

    async def test_a_rest_broadcast_reaches_rawsocket_subscribers(self) -> None:
        raw = await self.rawsocket("msgpack").joined
        await raw.record("news")
        self.app.broadcast("news", {"headline": "hello"})
        await wait_until(lambda: raw.received["news"])
        self.assertEqual(raw.received["news"][0].payload, {"headline": "hello"})


class AuthTests(RawSocketTestCase):
    async def test_ticket_authentication(self) -> None:
        cls = client_class(authmethods=["ticket"], authid="alice", ticket="alice-ticket")
        client = await self.rawsocket(client=cls).joined
        self.assertEqual((client._authid, client._authrole, client._authmethod), ("alice", "user", "ticket"))

    async def test_a_wrong_ticket_is_denied(self) -> None:
        cls = client_class(authmethods=["ticket"], authid="alice", ticket="wrong")
        session = self.rawsocket(client=cls)
        with self.assertRaises(RuntimeError):
            await session.joined
        assert isinstance(session, AuthClient)
        self.assertEqual(session.abort_reason, "wamp.error.authentication_denied")
        self.assertEqual(self.app.router.sessions, {})

    async def test_authorization_applies(self) -> None:
        client = await self.rawsocket("cbor").joined
        with self.assertRaises(ApplicationError) as caught:
            await client.publish("admin.reset", 1, options=ACK)
        self.assertEqual(caught.exception.error, "wamp.error.not_authorized")
        with self.assertRaises(ApplicationError) as caught:
            await client.subscribe(lambda *a: None, "admin.log")
        self.assertEqual(caught.exception.error, "wamp.error.not_authorized")
        await client.publish("public.news", 1, options=ACK)  # the session lives on


class HandshakeTests(RawSocketTestCase):
    async def test_an_unsupported_serializer_gets_the_error_reply_then_the_connection_closes(self) -> None:
        client = await self.raw_client()
        client.transport.write(bytes((0x7F, 0xF4, 0, 0)))  # UBJSON
        await client.lost
        self.assertEqual(client.received, bytes((0x7F, 0x10, 0, 0)))

    async def test_a_bad_magic_octet_closes_the_connection_without_a_reply(self) -> None:
        client = await self.raw_client(unix=True)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.lost
        self.assertEqual(client.received, b"")
        self.assertIn("not a RawSocket handshake: first octet 0x47", self.log_text())

    async def test_the_reply_announces_max_message_size(self) -> None:
        client = await self.raw_client()
        client.transport.write(bytes((0x7F, 0x02, 0, 0)))  # MessagePack, receives at most 512 bytes
        await wait_until(lambda: len(client.received) == 4)
        self.assertEqual(client.received, bytes((0x7F, 0xB2, 0, 0)))  # 1 MiB (the default max_message_size)


class MaxLengthTests(RawSocketTestCase):
    limits = Limits(max_message_size=4096)

    async def test_an_over_long_incoming_frame_closes_the_connection_with_a_logged_reason(self) -> None:
        raw = await self.rawsocket("json").joined
        client = await self.raw_client()
        client.transport.write(bytes((0x7F, 0xF1, 0, 0)))
        await wait_until(lambda: len(client.received) == 4)
        self.assertEqual(client.received, bytes((0x7F, 0x31, 0, 0)))  # 4096 bytes
        client.transport.write(frame_header(4097) + b"[" * 100)
        await client.lost
        self.assertIn("a frame of 4097 bytes, over the maximum message length of 4096 bytes", self.log_text())
        await raw.record("still.here")  # other clients are not disturbed
        await raw.publish("still.here", 1, options=PublishOptions(acknowledge=True, exclude_me=False))
        await wait_until(lambda: raw.received["still.here"])

    async def test_a_message_over_the_clients_announced_maximum_is_not_sent(self) -> None:
        small = await self.rawsocket("json", max_message_size=1024).joined  # a WELCOME takes over 512
        ws = await self.connect("json")
        await small.record("big.news")
        await ws.publish("big.news", "x" * 2000, options=ACK)
        await ws.publish("big.news", "small", options=ACK)
        await wait_until(lambda: small.received["big.news"])
        await sleep(0.1)
        self.assertEqual([e.payload for e in small.received["big.news"]], ["small"])
        self.assertIn("over the client's maximum message length 1024", self.log_text())
        self.assertEqual(self.app.router.stats["oversize_skipped"], 1)


class MisbehavingClientTests(RawSocketTestCase):
    async def test_garbage_closes_the_sender_only(self) -> None:
        raw, ws = await self.peers()
        for garbage in (b"\x00" * 64, bytes(range(256)), bytes((0x7F, 0x01, 0, 0)) + b"\xff" * 64):
            client = await self.raw_client()
            client.transport.write(garbage)
            await client.lost
            await self.round_trip(raw, ws, len(garbage))

    async def test_a_payload_that_does_not_deserialize_aborts_the_sender_only(self) -> None:
        raw, ws = await self.peers()
        client = await self.raw_client()
        client.transport.write(bytes((0x7F, 0xF1, 0, 0)) + frame_header(9) + b"not json!")
        await client.lost
        self.assertIn(b"wamp.error.protocol_violation", client.received)
        await self.round_trip(raw, ws, 1)


class PingFloodTests(RawSocketTestCase):
    limits = Limits(max_outgoing_buffer=65_536)

    async def test_a_ping_flood_from_a_client_that_does_not_read_is_dropped(self) -> None:
        raw, ws = await self.peers()
        flooder = await self.raw_client()
        flooder.transport.write(bytes((0x7F, 0xF1, 0, 0)))
        await wait_until(lambda: len(flooder.received) == 4)
        flooder.transport.pauseProducing()  # reads no more: every PONG waits on the server
        ping = frame_header(16_384, PING) + b"p" * 16_384
        sent = 0
        while not flooder.lost.called and sent < 4000:  # up to 64 MiB
            flooder.transport.write(ping * 16)
            sent += 16
            await sleep(0)
            if sent % 64 == 0:
                await self.round_trip(raw, ws, sent)  # the others are served meanwhile
        await wait_until(lambda: self.app.router.stats["slow_consumers_dropped"] >= 1, timeout=10.0)
        self.assertIn("dropping slow consumer tcp:127.0.0.1", self.log_text())
        await self.round_trip(raw, ws, -1)


class ClusterTests(ClusterTestCase):
    async def test_rawsocket_sessions_are_peers_across_nodes(self) -> None:
        node_a, node_b = await self.start_cluster(lambda: Sandstone(open_uris=True, anonymous=True), 2)
        factory = node_a.app.rawsocket_factory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(wait_until, lambda: not factory.connections, 2.0)
        raw = Client(ComponentConfig("realm1"))
        client_factory = WampRawSocketClientFactory(lambda: raw, serializer=SERIALIZERS["cbor"]())
        connect_rawsocket(self, port.getHost().port, client_factory, raw)
        await raw.joined
        ws = await self.connect_to(node_b, "json")
        await raw.record("cluster.news")
        await ws.record("cluster.news")
        to_all = PublishOptions(acknowledge=True, exclude_me=False)
        await ws.publish("cluster.news", "from B", options=to_all)
        await raw.publish("cluster.news", "from A", options=to_all)
        await wait_until(lambda: len(raw.received["cluster.news"]) == len(ws.received["cluster.news"]) == 2)
        self.assertEqual(sorted(e.payload for e in raw.received["cluster.news"]), ["from A", "from B"])
        await raw.register(lambda: "served on A over RawSocket", "cluster.where")
        self.assertEqual(await ws.call("cluster.where"), "served on A over RawSocket")


class TwistdRawSocketTests(TwistdTestCase):
    async def test_rawsocket_option_serves_tcp_and_unix_sockets_next_to_the_websocket(self) -> None:
        raw_port = free_port()
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "wamp.sock")
        process = await self.start(
            "--rawsocket", f"tcp:{raw_port}:interface=127.0.0.1", "--rawsocket", f"unix:{path}"
        )
        await wait_until(lambda: "sandstone serving" in process.output)
        [startup] = [line for line in process.output.splitlines() if "sandstone serving" in line]
        self.assertIn(f"RawSocket tcp:127.0.0.1:{raw_port}, RawSocket unix:{path}", startup)

        clients = []
        for address in (raw_port, path):
            session = Client(ComponentConfig("realm1"))
            factory = WampRawSocketClientFactory(lambda s=session: s, serializer=SERIALIZERS["msgpack"]())
            connect_rawsocket(self, address, factory, session)
            clients.append(await session.joined)
        ws = await self.connect("json")
        for client in (*clients, ws):
            await client.record("com.example.t")
        await clients[0].publish("com.example.t", "hello", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: all(c.received["com.example.t"] for c in (clients[1], ws)))
        await clients[1].register(lambda: "unix", "com.example.where")
        self.assertEqual(await ws.call("com.example.where"), "unix")

        await self.terminate(process)
        await defer.DeferredList([c.disconnected for c in clients])
        self.assertFalse(os.path.exists(path))  # the UNIX socket was removed when listening stopped
