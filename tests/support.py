"""Helpers for end-to-end tests: serve an app on 127.0.0.1 and connect real autobahn clients to it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp import message
from autobahn.wamp import serializer as wamp_serializer
from autobahn.wamp.types import ComponentConfig
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IAddress, IListeningPort, ITransport
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from sandstone import Sandstone
from sandstone._autobahn_internals import object_serializer
from sandstone._web import SandstoneSite

SERIALIZERS = {
    "json": lambda: wamp_serializer.JsonSerializer(),
    "json.batched": lambda: wamp_serializer.JsonSerializer(batched=True),
    "msgpack": lambda: wamp_serializer.MsgPackSerializer(),
    "msgpack.batched": lambda: wamp_serializer.MsgPackSerializer(batched=True),
    "cbor": lambda: wamp_serializer.CBORSerializer(),
    "cbor.batched": lambda: wamp_serializer.CBORSerializer(batched=True),
}


class Client(ApplicationSession):
    """An autobahn-python session that records events and reports join/leave through Deferreds."""

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__(config)
        self.joined: defer.Deferred[Client] = defer.Deferred()
        self.left: defer.Deferred[None] = defer.Deferred()
        self.disconnected: defer.Deferred[None] = defer.Deferred()
        self.received: dict[str, list[Any]] = {}

    def onJoin(self, details: Any) -> None:
        self.joined.callback(self)

    def onLeave(self, details: Any) -> None:
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"session left before joining: {details.reason}"))
        if not self.left.called:
            self.left.callback(details)
        super().onLeave(details)

    def onDisconnect(self) -> None:
        if not self.disconnected.called:
            self.disconnected.callback(None)

    def record(self, topic: str, **subscribe_options: Any) -> Any:
        """Subscribe and store each event's first argument (or its args/kwargs) under ``topic``."""
        from autobahn.wamp.types import SubscribeOptions

        bucket = self.received.setdefault(topic, [])

        def on_event(*args: Any, **kwargs: Any) -> None:
            details = kwargs.pop("details", None)
            bucket.append(Received(list(args), kwargs, details))

        options = SubscribeOptions(details_arg="details", **subscribe_options)
        return self.subscribe(on_event, topic, options=options)


class DisclosingClient(Client):
    """A client asking the router to disclose its identity on every PUBLISH and CALL.

    autobahn-python has no ``disclose_me`` option any more, so the option is added to the
    marshalled message just before it is serialized for the transport.
    """

    def onJoin(self, details: Any) -> None:
        transport = self._transport
        send = transport.send
        inner = object_serializer(transport._serializer)

        def send_disclosing(msg: Any) -> None:
            if isinstance(msg, message.Publish | message.Call):
                raw = msg.marshal()
                raw[2] = dict(raw[2], disclose_me=True)
                msg._serialized[inner] = inner.serialize(raw)
            send(msg)

        transport.send = send_disclosing
        super().onJoin(details)


class Received:
    """One event a client received."""

    def __init__(self, args: list[Any], kwargs: dict[str, Any], details: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.details = details

    @property
    def payload(self) -> Any:
        return self.args[0] if self.args else None

    def __repr__(self) -> str:
        return f"Received({self.args!r}, {self.kwargs!r})"


class ConnectionTracking:
    """A Site mixin remembering the transports of its connections (HTTP and upgraded WebSocket alike),
    so that a test can wait for the server side of every connection to be gone too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transports: list[ITransport] = []

    def buildProtocol(self, addr: IAddress) -> Any:
        protocol = super().buildProtocol(addr)  # type: ignore[misc]
        make_connection = protocol.makeConnection

        def track(transport: ITransport) -> None:
            self.transports.append(transport)
            make_connection(transport)

        protocol.makeConnection = track
        return protocol

    def open_transports(self) -> list[ITransport]:
        """The connections still open; a TLS transport is judged by the TCP transport under it."""
        inner = [t.transport if isinstance(t, ProtocolWrapper) else t for t in self.transports]
        return [t for t in inner if not getattr(t, "disconnected", True)]


class TrackingSite(ConnectionTracking, SandstoneSite):
    """The app's kind of Site (as ``app.site()`` builds) remembering the transports of its connections."""


class ServerTestCase(TestCase):
    """Serves an app on an ephemeral 127.0.0.1 port and connects autobahn clients to it."""

    def serve(self, app: Sandstone, site: Any = None, tls: Any = None) -> IListeningPort:
        """Serve ``app`` through ``site`` (default: ``app.site(TrackingSite)``; any other must track its
        connections too, see ``ConnectionTracking``), over TLS when given ``tls`` context options."""
        if site is None:
            site = app.site(TrackingSite)
        if tls is not None:
            port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        # Cleanups run last-in first-out: this one runs after the clients connected later are gone.
        self.addCleanup(self._server_connections_closed, site)
        self.app = app
        self.site = site
        self.port = port.getHost().port
        self.ws_url = f"ws://127.0.0.1:{self.port}{app.ws_path}"
        return port

    @defer.inlineCallbacks
    def _server_connections_closed(self, site: TrackingSite) -> Any:
        try:
            yield wait_until(lambda: not site.open_transports(), timeout=2.0)
        except AssertionError:
            for transport in site.open_transports():
                transport.abortConnection()  # type: ignore[attr-defined]
            yield wait_until(lambda: not site.open_transports(), timeout=2.0)
        # autobahn's WebSocket timers (e.g. the closing handshake's) live in txaio batched-timer
        # buckets that stay scheduled until they fire even when the timer was cancelled.
        yield wait_until(lambda: not pending_websocket_timers(), timeout=2.0)

    def http(self) -> HTTPClient:
        """A treq client whose connections are all closed at test cleanup."""
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1000  # keep every connection cached, so closing the cache closes all
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(Agent(reactor, pool=pool))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(
        self,
        serializer: str = "json",
        realm: str | None = None,
        client_class: type = Client,
        *,
        url: str | None = None,
    ) -> Any:
        """A Deferred firing with a joined client session, closed again at test cleanup.

        ``url`` defaults to the served app's WebSocket URL; ``client.connector`` is the TCP connector
        (``drop`` uses it to cut the connection without a WAMP goodbye).
        """
        url = url or self.ws_url
        config = ComponentConfig(realm or (self.app.realm if hasattr(self, "app") else "realm1"))
        session = client_class(config)
        factory = WampWebSocketClientFactory(
            lambda: session,
            url=url,
            serializers=[SERIALIZERS[serializer]()],
        )
        connector = reactor.connectTCP(factory.host, factory.port, factory)
        session.connector = connector

        def cleanup() -> Any:
            connector.disconnect()
            if session.disconnected.called:
                return None
            return session.disconnected

        self.addCleanup(cleanup)
        return session.joined

    def drop(self, client: Client) -> defer.Deferred[None]:
        """Cut a client's TCP connection (no GOODBYE, no WebSocket close); fires once it is gone."""
        client.connector.disconnect()  # type: ignore[attr-defined]
        return client.disconnected


def pending_websocket_timers() -> list[Any]:
    """Delayed calls of txaio batched timers (used by autobahn's WebSocket protocol) still scheduled."""
    return [
        call
        for call in reactor.getDelayedCalls()
        if type(getattr(call.func, "__self__", None)).__name__ == "_BatchedTimer"
    ]


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> defer.Deferred[None]:
    """Poll ``predicate`` on the reactor until it is true; fail after ``timeout`` seconds."""
    d: defer.Deferred[None] = defer.Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        try:
            ok = predicate()
        except Exception as exc:  # pragma: no cover - surfaced as the failure
            d.errback(exc)
            return
        if ok:
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError(f"condition not met within {timeout}s"))
        else:
            reactor.callLater(interval, check)

    check()
    return d


async def stop_process(process: Any) -> None:
    """Stop a child process started with ``reactor.spawnProcess`` (its protocol has ``running`` and an
    ``ended`` Deferred): SIGTERM, then SIGKILL if it has not ended within 10 s; wait for its end."""
    if process.running:
        process.transport.signalProcess("TERM")
        try:
            await wait_until(lambda: not process.running, timeout=10.0)
        except AssertionError:
            if process.running:
                process.transport.signalProcess("KILL")
    await process.ended


def sleep(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on the reactor (to let stray messages arrive)."""
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def websocket_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each frame in bytes a server wrote (unmasked, unfragmented frames)."""
    frames = []
    offset = 0
    while offset < len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length, offset = int.from_bytes(data[offset : offset + 2], "big"), offset + 2
        elif length == 127:
            length, offset = int.from_bytes(data[offset : offset + 8], "big"), offset + 8
        frames.append((opcode, data[offset : offset + length]))
        offset += length
    return frames


def websocket_payloads(data: bytes) -> list[bytes]:
    """The payloads of the text and binary frames in bytes a server wrote."""
    return [payload for opcode, payload in websocket_frames(data) if opcode in (1, 2)]


def websocket_closes(data: bytes) -> list[tuple[int, bytes]]:
    """(status code, reason) of each close frame in bytes a server wrote."""
    return [(int.from_bytes(p[:2], "big"), p[2:]) for opcode, p in websocket_frames(data) if opcode == 8]


def open_websocket(factory: Any) -> tuple[Any, StringTransport]:
    """A WampServerProtocol of ``factory`` on a StringTransport, past a wamp.2.json handshake (no HELLO)."""
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    request = SimpleNamespace(protocols=["wamp.2.json"], headers={})
    assert protocol.onConnect(request) == "wamp.2.json"
    protocol.state = protocol.STATE_OPEN
    protocol.onOpen()
    return protocol, transport
