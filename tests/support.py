"""Helpers for end-to-end tests: serve an app on 127.0.0.1 and connect real autobahn clients to it."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp import serializer as wamp_serializer
from autobahn.wamp.types import ComponentConfig
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from sandstone import Sandstone

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


class ServerTestCase(TestCase):
    """Serves an app on an ephemeral 127.0.0.1 port and connects autobahn clients to it."""

    def serve(self, app: Sandstone) -> IListeningPort:
        port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.app = app
        self.port = port.getHost().port
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, serializer: str = "json", realm: str | None = None, client_class: type = Client) -> Any:
        """A Deferred firing with a joined client session, closed again at test cleanup."""
        config = ComponentConfig(realm or self.app.realm)
        session = client_class(config)
        factory = WampWebSocketClientFactory(
            lambda: session,
            url=f"ws://127.0.0.1:{self.port}{self.app.ws_path}",
            serializers=[SERIALIZERS[serializer]()],
        )
        connector = reactor.connectTCP("127.0.0.1", self.port, factory)

        def cleanup() -> Any:
            connector.disconnect()
            if session.disconnected.called:
                return None
            return session.disconnected

        self.addCleanup(cleanup)
        return session.joined


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


def sleep(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on the reactor (to let stray messages arrive)."""
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
