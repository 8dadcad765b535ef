"""A small TCP proxy on a free 127.0.0.1 port, in the test's reactor, standing for HAProxy, Envoy or a cloud
endpoint in front of Redis. It misbehaves on demand, the ways such proxies do while their backend is down:

- ``forward`` (the default): each accepted connection is connected to the backend; when the backend refuses,
  the accepted connection is closed at once (accepted, then closed: what HAProxy does);
- ``hold``: connections are accepted and then left hanging, nothing forwarded, nothing answered (a proxy
  waiting for a backend that does not answer: the client's command times out);
- ``close_on_data``: connections are accepted and closed when the first bytes arrive (closed mid-command);
- ``refuse()``: the proxy does not listen (connection refused), ``listen()`` takes the same port again;
- ``blackhole()``: the port listens with a full backlog and never accepts, so that connecting to it times out
  (SYNs dropped, as with a firewall or a dead host); ``listen()`` ends that.

``cut()`` closes every connection the proxy holds; ``freeze()`` stops them forwarding anything, left open
(a proxy whose backend went away without a word).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure

MODES = ("forward", "hold", "close_on_data")


class _Backend(Protocol):
    """The proxy's connection to the backend, for one client connection."""

    def __init__(self, peer: _Accepted) -> None:
        self.peer = peer

    def connectionMade(self) -> None:
        self.peer.backend_connected(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.peer.frozen:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.peer.transport.loseConnection()


class _BackendFactory(ClientFactory):
    def __init__(self, peer: _Accepted) -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> _Backend:
        return _Backend(self.peer)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.peer.transport.loseConnection()  # accepted, then closed


class _Accepted(Protocol):
    """One connection accepted by the proxy."""

    factory: TCPProxy

    def __init__(self) -> None:
        self.backend: _Backend | None = None
        self.buffer: list[bytes] = []
        self.frozen = False

    def connectionMade(self) -> None:
        self.mode = self.factory.mode
        self.factory.connections.add(self)
        self.factory.accepted += 1
        if self.mode == "forward":
            self.transport.pauseProducing()
            reactor.connectTCP("127.0.0.1", self.factory.backend_port, _BackendFactory(self), timeout=2)

    def backend_connected(self, backend: _Backend) -> None:
        self.backend = backend
        for data in self.buffer:
            backend.transport.write(data)
        self.buffer = []
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.frozen:
            return
        if self.mode == "close_on_data":
            self.transport.loseConnection()
        elif self.mode == "forward":
            if self.backend is None:
                self.buffer.append(data)
            else:
                self.backend.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.connections.discard(self)
        if self.backend is not None:
            self.backend.transport.loseConnection()


class TCPProxy(Factory):
    """Listens on a free 127.0.0.1 port (``port``) and proxies to ``backend_port`` there, as ``mode`` says."""

    protocol = _Accepted
    noisy = False

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.mode = "forward"
        self.port = 0
        self.accepted = 0
        self.connections: set[_Accepted] = set()
        self._listening: IListeningPort | None = None
        self._blackhole: list[socket.socket] = []

    def listen(self) -> None:
        """Listen (on the port of the last time, if any)."""
        self._end_blackhole()
        if self._listening is None:
            self._listening = reactor.listenTCP(self.port, self, interface="127.0.0.1")
            self.port = self._listening.getHost().port

    def refuse(self) -> Any:
        """Stop listening (connections are refused); fires when the port is closed."""
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None

    async def blackhole(self) -> None:
        """Stop listening; the port then accepts no connection and answers no SYN (connects time out)."""
        stopping = self.refuse()
        if stopping is not None:
            await stopping
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(0)
        filler = socket.create_connection(("127.0.0.1", self.port))  # the backlog is full from now on
        self._blackhole = [filler, listener]

    def _end_blackhole(self) -> None:
        for sock in self._blackhole:
            sock.close()
        self._blackhole = []

    def freeze(self) -> None:
        """The connections open now forward nothing any more, in either direction, and stay open."""
        for conn in self.connections:
            conn.frozen = True

    def cut(self) -> None:
        """Close every connection the proxy holds (both sides)."""
        for conn in list(self.connections):
            conn.transport.abortConnection()

    def stop(self) -> Any:
        """Close everything (for test cleanup)."""
        self.cut()
        self._end_blackhole()
        return self.refuse()
