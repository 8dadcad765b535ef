"""WAMP over RawSocket (TCP, TLS, UNIX sockets): the spec's opening handshake and length-prefixed frames,
into the same router as the WebSocket connections.

A RawSocket connection is a ``WampConnection`` like a WebSocket one: the same router, limits, rate buckets,
admission, HELLO timeout, per-turn writer, fairness and slow-consumer check (``_transport.py``), so RawSocket
and WebSocket sessions are peers. What is RawSocket's own:

- the handshake (4 octets each way): ``0x7F``, then the client's maximum message length (``2**(9+L)``) and
  serializer (1 JSON, 2 MessagePack, 3 CBOR); the reply echoes the serializer with the largest power of two
  within ``Limits.max_message_size`` as the router's maximum, or is an error reply (serializer unsupported,
  reserved bits used, connection count reached). A first octet other than ``0x7F`` fails the connection.
- frames: a 4-octet prefix (reserved bits, message type, 24-bit length; the 25th bit for exactly 16 MiB) and
  the serialized message. A frame longer than the router's maximum, or with reserved bits or an unknown type,
  fails the connection (logged). A PING is answered with a PONG echoing its payload; a message or PONG over
  the client's maximum (or over ``max_message_size``) is not sent, as on WebSocket.
- each broadcast EVENT's frame is built once per serializer, next to its WebSocket frame (``framed``), and
  shared by every RawSocket subscriber on that serializer.

This router sends no PINGs of its own: autobahn-python's RawSocket client reads a PING's prefix as a length
and fails the connection.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from autobahn.wamp import message
from autobahn.wamp.interfaces import ISerializer
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._admission import Admission, Refusal
from ._autobahn_internals import object_serializer, router_data, router_data_if_any
from ._codec import DecodeError, decode
from ._errors import SYSTEM_SHUTDOWN
from ._listening import ListeningService
from ._transport import WampConnection, WampServerFactory, framed
from ._twisted_internals import TCPServer

log = Logger()

MAGIC = 0x7F
"""The first octet of a RawSocket handshake (no HTTP request starts with it)."""

MIN_LENGTH = 1 << 9
MAX_LENGTH = 1 << 24
"""The longest message a RawSocket frame carries (and a peer may announce): 16 MiB."""

# handshake error replies (the upper 4 bits of the reply's second octet)
SERIALIZER_UNSUPPORTED = 1
LENGTH_UNACCEPTABLE = 2
RESERVED_BITS_USED = 3
CONNECTION_COUNT_REACHED = 4

# frame types (the lower 3 bits of a frame's first octet)
MESSAGE, PING, PONG = 0, 1, 2

_REFUSED = "rawsocket_handshakes_refused"  # the stats entry counting refused handshakes

SERIALIZER_NAMES = {1: "JSON", 2: "MessagePack", 3: "CBOR", 4: "UBJSON", 5: "FlatBuffers"}


def length_exponent(limit: int) -> int:
    """The handshake's ``LENGTH`` for a router accepting messages of at most ``limit`` bytes (0: no limit):
    the largest power of two within it, between 512 bytes and 16 MiB."""
    if limit <= 0 or limit >= MAX_LENGTH:
        return 15
    return max(0, limit.bit_length() - 1 - 9)


def frame_header(length: int, kind: int = MESSAGE) -> bytes:
    """The 4-octet prefix of a frame of type ``kind`` carrying ``length`` bytes (at most 16 MiB)."""
    if length == MAX_LENGTH:
        return bytes((0x08 | kind, 0, 0, 0))
    return ((kind << 24) | length).to_bytes(4, "big")


def handshake_error(code: int) -> bytes:
    """The router's 4-octet handshake reply refusing a connection with error ``code``."""
    return bytes((MAGIC, code << 4, 0, 0))


def rawsocket_serializers(serializers: dict[str, ISerializer]) -> dict[int, ISerializer]:
    """The serializers of a WebSocket factory's subprotocols (``wamp.2.json``...) by RawSocket serializer id,
    unbatched (RawSocket frames carry one message each). Sharing the WebSocket connections' serializers shares
    the cache of a broadcast's serialized EVENT."""
    by_id: dict[int, ISerializer] = {}
    for serializer in serializers.values():
        if serializer.SERIALIZER_ID.endswith(".batched"):
            continue
        by_id.setdefault(serializer.RAWSOCKET_SERIALIZER_ID, serializer)
    return by_id


class _FrameKey:
    """The key of a message's RawSocket frame for one serializer among the router's data of that message
    (next to its WebSocket frame, keyed by the serializer itself)."""

    __slots__ = ("__weakref__", "serializer_id")

    def __init__(self, serializer_id: str) -> None:
        self.serializer_id = serializer_id


_FRAME_KEYS: weakref.WeakKeyDictionary[ISerializer, _FrameKey] = weakref.WeakKeyDictionary()


def _frame_key(serializer: ISerializer) -> _FrameKey:
    key = _FRAME_KEYS.get(serializer)
    if key is None:
        key = _FRAME_KEYS[serializer] = _FrameKey(serializer.SERIALIZER_ID)
    return key


def _describe_address(address: IAddress | None) -> str:
    """``tcp:HOST:PORT`` (``tcp6:[HOST]:PORT``) or ``unix:PATH``: a peer, for the logs, or where a port
    listens."""
    if isinstance(address, IPv4Address | IPv6Address):
        if address.type == "TCP" and ":" in address.host:
            return f"tcp6:[{address.host}]:{address.port}"
        return f"tcp:{address.host}:{address.port}"
    name = getattr(address, "name", None)
    return f"unix:{name.decode() if isinstance(name, bytes) else name or ''}"


class RawSocketProtocol(WampConnection, Protocol):
    """One RawSocket connection carrying one WAMP session at a time.

    ``factory`` is the app's ``WampServerFactory`` (router, limits, writer, fairness), shared with the
    WebSocket connections; ``listener`` the ``RawSocketFactory`` that accepted the connection.
    """

    listener: RawSocketFactory
    peer: str | None = None
    _refusal: Refusal | None = None  # over a connection limit: refused once its handshake arrives
    _handshake = b""  # the client's handshake octets received so far
    _open = False  # the handshake succeeded and the connection is not closing
    _closed = False  # closing or closed
    _shutting_down = False
    _binary = True  # the serializer's payloads are binary (JSON's are text)
    _frame_key: _FrameKey | None = None
    _max_receive = 0  # the longest frame the router accepts (announced in its handshake reply)
    _max_send = 0  # the longest message the client accepts (and max_message_size)
    _max_send_name = ""  # which of the two, for the log
    _partial: bytearray | None = None  # a frame received in part (a bytearray: amortized appends)
    _needed = 0  # bytes _partial needs before a frame (or its prefix) is complete
    _handshake_timer: IDelayedCall | None = None
    _close_timer: IDelayedCall | None = None

    def __init__(
        self, factory: WampServerFactory, listener: RawSocketFactory, refusal: Refusal | None = None
    ) -> None:
        """``refusal``: the connection is over a connection limit, and its handshake gets the error reply."""
        self.factory = factory
        self.listener = listener
        self._refusal = refusal

    @property
    def subprotocol(self) -> str:
        """``rawsocket.json``, ``rawsocket.msgpack`` or ``rawsocket.cbor`` (``""`` before the handshake)."""
        key = self._frame_key
        return f"rawsocket.{key.serializer_id}" if key is not None else ""

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.peer = _describe_address(transport.getPeer())
        self.listener.connections.add(self)
        limits = self.factory.limits
        if limits.open_handshake_timeout > 0:
            self._handshake_timer = self.factory.clock.callLater(
                limits.open_handshake_timeout, self._handshake_timed_out
            )
        if limits.max_outgoing_buffer > 0:
            self._watch_backlog()

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            if self._closed:
                return
            data = self._handshake_received(data)
            if not data:
                return
        self._read(self._frames_received, data)

    # the handshake

    def _handshake_received(self, data: bytes) -> bytes:
        """Take the handshake's octets from ``data``; once complete, reply. Returns what follows it."""
        missing = 4 - len(self._handshake)
        handshake = self._handshake = self._handshake + data[:missing]
        if handshake[0] != MAGIC:
            self._fail(f"not a RawSocket handshake: first octet 0x{handshake[0]:02x}, not 0x7f", _REFUSED)
            return b""
        if len(handshake) < 4:
            return b""
        self._cancel_handshake_timer()
        self._handshake = b""
        octet = handshake[1]
        refusal = self._refusal
        if refusal is not None:
            self._refuse(CONNECTION_COUNT_REACHED, refusal.reason, None)  # counted when refused
            return b""
        if handshake[2] or handshake[3]:
            self._refuse(RESERVED_BITS_USED, "the reserved octets of its handshake are not zero")
            return b""
        serializer = self.listener.serializers.get(octet & 0x0F)
        if serializer is None:
            self._refuse(SERIALIZER_UNSUPPORTED, self._unsupported(octet & 0x0F))
            return b""
        self._open_with(serializer, MIN_LENGTH << (octet >> 4))
        return data[missing:]

    def _unsupported(self, serializer_id: int) -> str:
        spoken = ", ".join(f"{i} ({SERIALIZER_NAMES[i]})" for i in sorted(self.listener.serializers))
        name = SERIALIZER_NAMES.get(serializer_id, "reserved" if serializer_id else "illegal")
        return f"serializer {serializer_id} ({name}) is not spoken here, only {spoken}"

    def _open_with(self, serializer: ISerializer, client_max: int) -> None:
        limits = self.factory.limits
        exponent = length_exponent(limits.max_message_size)
        self._max_receive = MIN_LENGTH << exponent
        self._max_send, self._max_send_name = client_max, "the client's maximum message length"
        if 0 < limits.max_message_size < client_max:
            self._max_send, self._max_send_name = limits.max_message_size, "max_message_size"
        self._serializer = serializer
        self._binary = bool(object_serializer(serializer).BINARY)
        self._frame_key = _frame_key(serializer)
        self._write(bytes((MAGIC, (exponent << 4) | serializer.RAWSOCKET_SERIALIZER_ID, 0, 0)))
        self._open = True
        self._attach()

    def _refuse(self, code: int, reason: str, counter: str | None = _REFUSED) -> None:
        """Answer the handshake with an error reply and close."""
        if counter is not None:
            self.factory.stats[counter] += 1
        self.listener.log_refusal("refused a RawSocket connection from {peer}: {reason}", self.peer, reason)
        self._closed = True
        transport = self.transport
        assert transport is not None
        transport.write(handshake_error(code))
        transport.loseConnection()

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if not self._open and not self._closed:
            timeout = self.factory.limits.open_handshake_timeout
            self._fail(
                f"no RawSocket handshake within {timeout:g} s of connecting", "rawsocket_handshake_timeouts"
            )

    def _cancel_handshake_timer(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # frames

    def _frames_received(self, data: bytes) -> None:
        partial = self._partial
        if partial is not None:  # the rest of a frame (or of its prefix)
            partial += data
            if len(partial) < self._needed:
                return
            data = bytes(partial)
            self._partial = None
        size = len(data)
        offset = 0
        needed = 4
        while size - offset >= 4:
            first = data[offset]
            length = int.from_bytes(data[offset + 1 : offset + 4], "big")
            kind = first & 0x07
            if first & 0xF8 or kind > PONG or length > self._max_receive:
                if (first & 0xF8) == 0x08 and not length:
                    length = MAX_LENGTH  # the 25th bit: exactly 16 MiB
                problem = self._frame_problem(first, kind, length)
                if problem is not None:
                    self._fail(problem, "rawsocket_frames_refused")
                    return
            end = offset + 4 + length
            if end > size:
                needed = 4 + length
                break
            payload = data[offset + 4 : end]
            offset = end
            if kind != PONG:  # a PONG answers nothing: this router sends no PINGs
                self.onMessage(payload, kind == PING)
                if self._closed:
                    return
        if offset < size:
            self._partial = bytearray(memoryview(data)[offset:])
            self._needed = needed

    def _frame_problem(self, first: int, kind: int, length: int) -> str | None:
        if first & 0xF0:
            return f"a frame prefix with reserved bits set (0x{first:02x})"
        if first & 0x08 and length != MAX_LENGTH:
            return "a frame prefix with both the 25th length bit and other length bits set"
        if kind > PONG:
            return f"a frame of unknown type {kind}"
        if length > self._max_receive:
            return (
                f"a frame of {length} bytes, over the maximum message length of {self._max_receive} bytes "
                "announced in the handshake"
            )
        return None

    def _handle(self, payload: bytes, isBinary: bool) -> None:
        """Handle one frame's payload: a message, or (``isBinary`` set, this transport's mark) a PING."""
        if self._closed:
            return
        if isBinary:
            self._pong(payload)
            return
        session = self._wamp
        if session is None:
            if self._shutting_down:  # the client's answer to the GOODBYE of a shutdown
                self.close_transport("server shutting down")
            return
        try:
            messages = decode(self._serializer, payload, self._binary)
        except DecodeError as exc:
            session.protocol_violation(str(exc))
            return
        self._on_messages(session, messages)

    def _is_open(self) -> bool:
        return self._open

    def _pong(self, payload: bytes) -> None:
        if len(payload) > self._max_send:
            log.debug(
                "no PONG of {size} bytes to {peer}: over its maximum", size=len(payload), peer=self.peer
            )
            return
        self._write(frame_header(len(payload), PONG) + payload)

    def _write(self, frame: bytes) -> None:
        transport = self.transport
        if type(transport) is TCPServer:
            self.factory.writer.write(self, frame)  # sent at the end of the turn, with the turn's others
        else:
            assert transport is not None
            transport.write(frame)
        backlog = self._backlog
        if backlog is not None and backlog.paused:
            self._check_backlog(backlog, len(frame))

    # the session's transport interface

    def send_message(self, msg: message.Message) -> None:
        """Serialize (through the shared serializer's cache) and send one WAMP message, as
        ``WampServerProtocol.send_message`` does: a message over the client's maximum (or
        ``max_message_size``) or that the serializer cannot carry is not sent."""
        if not self._open:
            return
        key = self._frame_key
        data = router_data_if_any(msg)
        frame: bytes | None = data.get(key) if data is not None else None
        if frame is None:
            try:
                payload = framed(msg, self._serializer, self.factory.sent_messages)[0]
            except Exception as exc:  # a broadcast's other subscribers must still get their EVENT
                self._skip_unserializable(msg, exc)
                return
            size = len(payload)
            if size > self._max_send:
                self._skip_oversize(msg, size, self._max_send, self._max_send_name)
                return
            frame = router_data(msg)[key] = frame_header(size) + payload
        elif len(frame) - 4 > self._max_send:
            self._skip_oversize(msg, len(frame) - 4, self._max_send, self._max_send_name)
            return
        self._write(frame)

    def close_transport(self, reason: str) -> None:
        """Close the connection (after an ABORT, or a GOODBYE from the router), once what was sent left."""
        if self._closed:
            return
        self._open = False
        self._closed = True
        self.factory.writer.flush_one(self)
        transport = self.transport
        assert transport is not None
        transport.loseConnection()

    def _fail(self, reason: str, counter: str) -> None:
        """The client broke the RawSocket protocol: log why and fail the connection."""
        self.factory.stats[counter] += 1
        self.listener.log_refusal("closing the RawSocket connection from {peer}: {reason}", self.peer, reason)
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self._open = False
        self._closed = True
        self.factory.writer.forget(self)
        transport = self.transport
        assert transport is not None
        abort: Callable[[], None] | None = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    # lifecycle

    def shut_down(self, grace: float = 1.0, goodbye: bool = False) -> None:
        """Server shutdown: close the connection without a WAMP GOODBYE, so that clients reconnect; with
        ``goodbye``, an open session first gets GOODBYE ``wamp.close.system_shutdown``, and the connection is
        closed after ``grace`` seconds (or once the client answers)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self._cancel_hello_timer()
        session, self._wamp = self._wamp, None
        if not self._open:
            self._drop("server shutting down")
            return
        if not goodbye or session is None or not session.is_open:
            if session is not None:
                session.on_transport_lost()
            self.close_transport("server shutting down")
            return
        self.send_message(message.Goodbye(SYSTEM_SHUTDOWN, "the server is shutting down"))
        session.on_transport_lost()  # leave the router now; the client's GOODBYE needs no answer
        self._close_timer = self.factory.clock.callLater(grace, self._close_after_goodbye)

    def abort_connection(self) -> None:
        """Close the connection at once (what a shutdown's grace did not close)."""
        self._drop("server shutting down")

    def _close_after_goodbye(self) -> None:
        self._close_timer = None
        self.close_transport("server shutting down")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open = False
        self._closed = True
        self._inbox = None
        self._partial = None
        factory = self.factory
        if factory.last_sender is self:
            factory.last_sender = None
        factory.writer.forget(self)
        self.listener.connections.discard(self)
        self._cancel_handshake_timer()
        self._cancel_hello_timer()
        close_timer, self._close_timer = self._close_timer, None
        if close_timer is not None and close_timer.active():
            close_timer.cancel()
        session, self._wamp = self._wamp, None
        if session is not None:
            session.on_transport_lost()
        if self._ticket is not None:
            self._pending = False
            self._ticket.release()
        if not reason.check(ConnectionDone):
            log.debug("RawSocket connection from {peer} lost: {reason}", peer=self.peer, reason=reason.value)


@implementer(IProtocolFactory)
class RawSocketFactory:
    """Builds WAMP-over-RawSocket connections into the router of ``wamp``, the app's ``WampServerFactory``
    (its serializers, limits, stats, per-turn writer and fairness). Listen with it on any stream endpoint
    (``tcp:8081``, ``unix:/run/app.sock``, ``ssl:...``), or several.

    ``admission`` counts the connections against the connection limits; give the app's Site's
    (``site.admission``) to count RawSocket and HTTP connections together. Over a limit, a connection's
    handshake gets the error reply "maximum connection count reached".
    """

    def __init__(
        self, wamp: WampServerFactory, admission: Admission | None = None, *, log_interval: float = 10.0
    ) -> None:
        self.wamp = wamp
        self.admission = admission if admission is not None else Admission(lambda: wamp.limits)
        self.serializers = rawsocket_serializers(wamp.serializers)
        self.connections: set[RawSocketProtocol] = set()
        self._log_interval = log_interval
        self._next_log = float("-inf")
        self._unlogged = 0

    def doStart(self) -> None:
        """Listening starts (``IProtocolFactory``)."""

    def doStop(self) -> None:
        """Listening stops (``IProtocolFactory``)."""

    def buildProtocol(self, addr: IAddress) -> RawSocketProtocol:
        # A UNIX socket's peer has no IP address: only the server-wide limits apply to it.
        ip = str(getattr(addr, "host", "") or "")
        try:
            ticket = self.admission.admit(ip)
        except Refusal as refusal:
            self.wamp.stats[refusal.counter] += 1
            return RawSocketProtocol(self.wamp, self, refusal)
        protocol = RawSocketProtocol(self.wamp, self)
        protocol.admitted(ticket)
        return protocol

    def log_refusal(self, text: str, peer: str | None, reason: str) -> None:
        """Log a refused or failed connection, at most once per ``log_interval`` seconds (a misbehaving
        client may cause thousands), saying how many were not logged in between."""
        now = self.wamp.clock.seconds()
        if now < self._next_log:
            self._unlogged += 1
            return
        unlogged, self._unlogged = self._unlogged, 0
        self._next_log = now + self._log_interval
        if unlogged:
            text += " ({unlogged} more not logged in the last {interval:g} s)"
        log.info(text, peer=peer, reason=reason, unlogged=unlogged, interval=self._log_interval)

    def shutdown(self, grace: float = 1.0, goodbye: bool = False) -> None:
        """Close every connection (see ``RawSocketProtocol.shut_down``)."""
        for protocol in list(self.connections):
            protocol.shut_down(grace, goodbye)


class RawSocketService(MultiService):
    """Serves ``factory`` on each of ``endpoints`` (name, endpoint): listening starts with the service (see
    ``ListeningService``); stopping it stops listening and closes the connections gracefully, within
    ``timeout`` seconds (with ``goodbye``: GOODBYE ``wamp.close.system_shutdown`` first)."""

    def __init__(
        self,
        factory: RawSocketFactory,
        endpoints: Iterable[tuple[str, IStreamServerEndpoint]],
        *,
        timeout: float = 5.0,
        goodbye: bool = False,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.timeout = timeout
        self.goodbye = goodbye
        self.clock = clock if clock is not None else factory.wamp.clock
        self.listeners: list[tuple[str, ListeningService]] = []
        for name, endpoint in endpoints:
            listener = ListeningService(endpoint, factory)
            listener.setServiceParent(self)
            self.listeners.append((name, listener))

    def addresses(self) -> list[str]:
        """Where each endpoint listens, for the startup line (``tcp:127.0.0.1:8081``, ``unix:/run/app.sock``;
        its description while it does not listen)."""
        return [
            _describe_address(listener.port.getHost()) if listener.port is not None else name
            for name, listener in self.listeners
        ]

    def stopService(self) -> Deferred[Any]:
        stopped = maybeDeferred(super().stopService)
        factory = self.factory
        if factory.connections:
            log.info("shutting down: closing {count} RawSocket connection(s)", count=len(factory.connections))
        factory.shutdown(grace=min(1.0, self.timeout / 2), goodbye=self.goodbye)
        return DeferredList([stopped, self._closed()], consumeErrors=True)

    def _closed(self) -> Deferred[None]:
        """Fires once every connection is closed, the rest cut off after ``timeout`` seconds."""
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + self.timeout
        connections = self.factory.connections

        def check() -> None:
            if not connections:
                done.callback(None)
            elif self.clock.seconds() >= deadline:
                log.warn(
                    "shutdown: {count} RawSocket connection(s) open after {timeout} s; cutting them off",
                    count=len(connections),
                    timeout=self.timeout,
                )
                for protocol in list(connections):
                    protocol.abort_connection()
                done.callback(None)
            else:
                self.clock.callLater(0.05, check)

        check()
        return done
