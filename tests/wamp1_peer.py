"""A minimal WAMP v1 client for end-to-end tests: raw v1 frames (JSON lists) over autobahn's WebSocket client,
as AutobahnJS 0.8 sends them (AutobahnJS 0.8 is not on npm, and no maintained Python client speaks v1)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from tests.support import wait_until
from tests.test_e2e_limits import RawPeer

WELCOME, PREFIX, CALL, CALLRESULT, CALLERROR, SUBSCRIBE, UNSUBSCRIBE, PUBLISH, EVENT = range(9)


class Wamp1Peer(WebSocketClientProtocol):
    """One v1 connection: sends raw v1 messages, records what arrives and how the server closed."""

    factory: Wamp1PeerFactory

    def onConnect(self, response: Any) -> None:
        self.subprotocol: str | None = response.protocol
        self.received: list[Any] = []
        self.session_id: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._calls: dict[str, defer.Deferred[list[Any]]] = {}
        self._call_ids = itertools.count(1)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        raw = json.loads(payload)
        self.received.append(raw)
        if raw[0] == WELCOME and not self.factory.welcomed.called:
            self.session_id = raw[1]
            self.factory.welcomed.callback(self)
        elif raw[0] in (CALLRESULT, CALLERROR):
            call = self._calls.pop(raw[1], None)
            if call is not None:
                call.callback(raw)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.factory.welcomed.called:
            self.factory.welcomed.errback(RuntimeError(f"closed before WELCOME: {code} {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback((code, reason))

    # sending

    def send(self, raw: Any) -> None:
        """One v1 message (any JSON value) as a text frame."""
        self.sendMessage(json.dumps(raw).encode("utf-8"))

    def prefix(self, prefix: str, uri: str) -> None:
        self.send([PREFIX, prefix, uri])

    def subscribe(self, topic: str) -> None:
        self.send([SUBSCRIBE, topic])

    def unsubscribe(self, topic: str) -> None:
        self.send([UNSUBSCRIBE, topic])

    def publish(self, topic: str, event: Any, *options: Any) -> None:
        """PUBLISH ``[7, topic, event, *options]`` (``excludeMe``, or ``exclude`` and ``eligible``)."""
        self.send([PUBLISH, topic, event, *options])

    def call(self, procedure: str, *args: Any) -> defer.Deferred[list[Any]]:
        """CALL; fires with the CALLRESULT or CALLERROR message (a list)."""
        call_id = f"c{next(self._call_ids)}"
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self._calls[call_id] = d
        self.send([CALL, call_id, procedure, *args])
        return d

    # what arrived

    def events(self, topic: str) -> list[Any]:
        """The events of the EVENTs received on ``topic`` (the full URI the server sends), in order."""
        return [raw[2] for raw in self.received if raw[0] == EVENT and raw[1] == topic]

    @property
    def closed(self) -> defer.Deferred[tuple[int | None, str | None]]:
        return self.factory.closed


class Wamp1PeerFactory(WebSocketClientFactory):
    protocol = Wamp1Peer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.welcomed: defer.Deferred[Wamp1Peer] = defer.Deferred()
        self.closed: defer.Deferred[tuple[int | None, str | None]] = defer.Deferred()


async def connect_v1(
    test: TestCase,
    url: str,
    *,
    protocols: Sequence[str] = ("wamp",),
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> Wamp1Peer:
    """A v1 peer connected to ``url`` and welcomed (fails if the server closes first); its connection is
    closed at test cleanup."""
    factory = Wamp1PeerFactory(url, protocols=list(protocols), headers=dict(headers or {}), origin=origin)
    connector = reactor.connectTCP(factory.host, factory.port, factory)

    def cleanup() -> Any:
        connector.disconnect()
        return None if factory.closed.called else factory.closed

    test.addCleanup(cleanup)
    return await factory.welcomed


async def connect_any(test: TestCase, url: str, protocols: Sequence[str]) -> str | None:
    """Open a WebSocket offering ``protocols``; the subprotocol the server chose (then it is closed)."""
    factory = WebSocketClientFactory(url, protocols=list(protocols))
    opened: defer.Deferred[str | None] = defer.Deferred()
    closed: defer.Deferred[None] = defer.Deferred()

    class Probe(WebSocketClientProtocol):
        def onConnect(self, response: Any) -> None:
            opened.callback(response.protocol)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            if not opened.called:
                opened.errback(RuntimeError(f"closed: {code} {reason}"))
            closed.callback(None)

    factory.protocol = Probe
    connector = reactor.connectTCP(factory.host, factory.port, factory)
    test.addCleanup(lambda: None if closed.called else (connector.disconnect(), closed)[1])
    return await opened


def upgrade_request(
    host: str, path: str = "/ws", *, protocols: str = "wamp", extra: Sequence[str] = ()
) -> bytes:
    """A WebSocket opening handshake asking for ``protocols`` (``extra``: more header lines)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {protocols}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def handshake_status(test: TestCase, port: int, request: bytes) -> tuple[int, bytes]:
    """The HTTP status (and the whole answer) a raw handshake gets from 127.0.0.1:``port``."""
    peer = RawPeer()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
    test.addCleanup(lambda: peer.closed if peer.transport.loseConnection() is None else None)
    peer.transport.write(request)
    await wait_until(lambda: peer.status is not None or peer.closed.called)
    assert peer.status is not None, peer.data
    return peer.status, peer.data


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (fails after ``timeout`` seconds)."""
    await wait_until(predicate, timeout=timeout)
