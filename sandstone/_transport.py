"""WAMP over WebSocket: the server protocol and factory joining autobahn's WebSocket layer to the router."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp import message
from autobahn.wamp.interfaces import ISerializer
from autobahn.wamp.serializer import MsgPackSerializer
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import TrafficStats
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.logger import Logger
from zope.interface import implementer

from ._admission import Ticket
from ._autobahn_internals import (
    PROTOCOL_OPTIONS,
    object_serializer,
    options_class,
    router_data,
    router_data_if_any,
    send_close,
    websocket_data_received,
)
from ._cbor import cbor_serializer
from ._codec import DecodeError, decode
from ._errors import HELLO_TIMEOUT, INVALID_ARGUMENT, PAYLOAD_TOO_LARGE, SYSTEM_SHUTDOWN
from ._json import json_serializer
from ._limits import Limits, host_allowed, origin_allowed
from ._payload import payload_problem
from ._ratelimit import SessionRates
from ._router import Router
from ._session import Session
from ._twisted_internals import TCPServer, buffered_bytes, send_now
from ._wamp1 import SUBPROTOCOL as WAMP1
from ._wamp1 import Wamp1Adapter
from ._wamp1 import accept as accept_wamp1

log = Logger()

_NO_SLICE = float("inf")


def default_serializers() -> dict[str, ISerializer]:
    """One shared serializer per WebSocket subprotocol, in order of preference.

    They are shared by all connections so that autobahn's per-serializer cache on a message
    serializes a broadcast EVENT once per serializer, not once per subscriber.
    """
    # ISerializers by ISerializer.register(), which type checkers do not see.
    serializers = cast(
        "list[ISerializer]",
        [
            cbor_serializer(),
            cbor_serializer(batched=True),
            MsgPackSerializer(),
            MsgPackSerializer(batched=True),
            json_serializer(),
            json_serializer(batched=True),
        ],
    )
    return {f"wamp.2.{s.SERIALIZER_ID}": s for s in serializers}


# The only handshake headers kept past the handshake (per connection memory): a REST session's credentials.
_CREDENTIAL_HEADERS = frozenset(("cookie", "authorization"))


def framed(
    msg: message.Message, serializer: ISerializer, sent: Counter[type] | None = None
) -> tuple[bytes, bytes]:
    """The serialized message and its unmasked, unfragmented WebSocket frame, both built once per message and
    serializer: every subscriber of a broadcast on the same serializer gets the same bytes.

    ``sent`` counts the messages other than EVENT as they are serialized (each goes to one client; the router
    counts EVENTs per broadcast), so that counting costs a broadcast's subscribers nothing."""
    data = router_data_if_any(msg)
    if data is not None:
        cached: tuple[bytes, bytes] | None = data.get(serializer)
        if cached is not None:  # every subscriber of a broadcast after the first on this serializer
            return cached
    # The object serializer itself: autobahn's serialize() also keeps statistics nobody reads, which costs a
    # broadcast about 1 us per serializer (bench/runner.py sat S=1 and S=10, issue 11).
    objects = object_serializer(serializer)
    payload = msg.serialize(objects)
    cached = router_data(msg)[serializer] = (payload, _frame_header(len(payload), objects.BINARY) + payload)
    kind = type(msg)
    if sent is not None and kind is not message.Event:
        sent[kind] += 1
    return cached


_BINARY_FRAME = 0x82  # the first byte of an unfragmented binary frame (FIN + opcode 2); text: 0x81


def _frame_header(length: int, binary: bool) -> bytes:
    first = _BINARY_FRAME if binary else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


class WampConnection:
    """What a connection carrying WAMP sessions does whatever its framing (WebSocket, RawSocket): its
    session and HELLO timeout, its admission ticket, its share of the reactor, its slow-consumer check and the
    messages it cannot send. A transport class derives from it (first) and provides ``_handle``,
    ``send_message``, ``close_transport`` and ``_drop``.

    ``factory`` is the app's ``WampServerFactory`` (router, limits, stats, the per-turn writer, fairness),
    shared by the connections of every transport.
    """

    factory: WampServerFactory
    transport: ITransport | None = None
    peer: str | None = None  # who is connected, for the logs
    _serializer: ISerializer
    _wamp: Session | None = None

    # Fairness (see ``WampServerFactory.backlogged``): the messages of one read are handled at once until
    # its time slice ends; the rest wait in the inbox, in order, and reading pauses until they are handled.
    _slice_end = _NO_SLICE  # monotonic time: handle the messages arriving before it at once
    _inbox: deque[tuple[bytes, bool]] | None = None

    _hello_timer: IDelayedCall | None = None
    _backlog: _Backlog | None = None
    _ticket: Ticket | None = None
    _pending = False  # admitted (see ``admitted``), and no WAMP session open yet
    _rates: SessionRates | None = None  # the connection's rate buckets, made with its first session

    def _handle(self, payload: bytes, isBinary: bool) -> None:
        """Handle one message received (the transport's own)."""
        raise NotImplementedError

    def send_message(self, msg: message.Message) -> None:
        """Send one WAMP message (the transport's own)."""
        raise NotImplementedError

    def close_transport(self, reason: str) -> None:
        """Close the connection after an ABORT or GOODBYE (the transport's own)."""
        raise NotImplementedError

    def _drop(self, reason: str) -> None:
        """Close the connection at once, without a closing handshake (the transport's own)."""
        raise NotImplementedError

    def _is_open(self) -> bool:
        """Whether the connection is open and not closing, so that a new session may follow one that left
        (the transport's own)."""
        raise NotImplementedError

    def _on_messages(self, session: Session, messages: Iterable[message.Message]) -> None:
        """Hand one frame's messages to ``session``, in order. A session that leaves (GOODBYE, ABORT) ends
        the frame: the connection gets a fresh session waiting for HELLO while it stays open."""
        for msg in messages:
            session.on_message(msg)
            if session.has_left:
                if self._is_open():
                    self._attach()
                else:
                    self._wamp = None
                break
        if (self._hello_timer is not None or self._pending) and session.is_open:
            self._cancel_hello_timer()
            self._serving()

    def _read(self, frames: Callable[[bytes], None], data: bytes) -> None:
        """Hand one read's bytes to ``frames``, the transport's parser, which calls ``onMessage`` for each
        message: the read's messages are handled within one time slice, the rest wait in the inbox."""
        self._slice_end = self.factory.slice_end()
        try:
            frames(data)
        finally:
            self._slice_end = _NO_SLICE

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        factory = self.factory
        if factory.last_sender is not self:
            factory.sender_changed(self)
        inbox = self._inbox
        if inbox is not None:
            inbox.append((payload, isBinary))
        elif self._slice_end != _NO_SLICE and self._slice_end <= factory.monotonic():
            # This connection had its share of the turn: the rest of what it sent waits for the next turns,
            # and TCP tells it to slow down meanwhile.
            self._inbox = deque(((payload, isBinary),))
            cast(IPushProducer, self.transport).pauseProducing()
            factory.backlogged(self)
        else:
            self._handle(payload, isBinary)

    def serve_backlog(self) -> bool:
        """Handle the messages waiting in the inbox for one time slice; True when some are left. Reading
        resumes once the inbox is empty."""
        inbox = self._inbox
        if inbox is None:
            return False
        self._slice_end = self.factory.slice_end()
        try:
            while inbox:
                payload, is_binary = inbox.popleft()
                self._handle(payload, is_binary)
                if self._inbox is not inbox:
                    return False  # the connection is gone
                if inbox and self._slice_end <= self.factory.monotonic():
                    return True
        finally:
            self._slice_end = _NO_SLICE
        self._inbox = None
        cast(IPushProducer, self.transport).resumeProducing()
        return False

    def admitted(self, ticket: Ticket) -> None:
        """Take over the connection's admission ticket (from the Site, or the RawSocket factory): the
        connection counts as pending (see ``_admission.py``) until its first WAMP session is open."""
        self._ticket = ticket
        self._pending = True

    def _serving(self) -> None:
        if self._pending:
            self._pending = False
            assert self._ticket is not None
            self._ticket.ready()

    def _attach(self) -> None:
        """A fresh session waiting for HELLO, which must be welcomed within ``hello_timeout``.

        Every session on this connection shares its rate buckets: GOODBYE then HELLO does not refill them.
        """
        router = self.factory.router
        rates = self._rates
        if rates is None:
            rates = self._rates = router.rates()
        self._wamp = router.attach(self, rates)
        self._cancel_hello_timer()
        timeout = self.factory.limits.hello_timeout
        if timeout > 0:
            self._hello_timer = self.factory.clock.callLater(timeout, self._hello_timed_out)

    def _cancel_hello_timer(self) -> None:
        timer, self._hello_timer = self._hello_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        session = self._wamp
        if session is None or session.is_open or session.has_left:
            return
        self.factory.stats["hello_timeouts"] += 1
        timeout = self.factory.limits.hello_timeout
        session.abort(HELLO_TIMEOUT, f"no session opened within {timeout:g} s of connecting")

    def _watch_backlog(self) -> None:
        """Register as the transport's streaming producer, to learn when its send buffer is full.

        Under ``WebSocketResource`` the transport was taken over from twisted.web's HTTP channel,
        which is still registered as its producer: it is replaced.
        """
        # Stream transports are consumers too; one that is not fails below and keeps no check.
        transport = cast(IConsumer, self.transport)
        try:
            transport.unregisterProducer()
        except RuntimeError:  # none was registered (twisted.internet.testing's transports say so)
            pass
        try:
            backlog = _Backlog()
            transport.registerProducer(backlog, True)
        except Exception as exc:  # a transport without producer support: no slow-consumer check
            log.debug("no slow-consumer check on {transport}: {error}", transport=transport, error=exc)
            return
        self._backlog = backlog

    def _check_backlog(self, backlog: _Backlog, size: int) -> None:
        backlog.written += size
        buffered = buffered_bytes(self.transport)
        if buffered is None:
            buffered = backlog.written
        limit = self.factory.limits.max_outgoing_buffer
        if buffered <= limit:
            return
        self.factory.stats["slow_consumers_dropped"] += 1
        log.warn(
            "dropping slow consumer {peer}: {buffered} bytes not sent yet, over max_outgoing_buffer {limit}",
            peer=self.peer,
            buffered=buffered,
            limit=limit,
        )
        self._drop("slow consumer: outgoing buffer over its limit")

    def _skip_oversize(
        self, msg: message.Message, size: int, limit: int, name: str = "max_message_size"
    ) -> None:
        """Not sending a message of ``size`` bytes, over ``limit`` (``name``: which limit, for the log); a
        RESULT becomes an ERROR for the call."""
        self.factory.stats["oversize_skipped"] += 1
        log.warn(
            "not sending a {kind} of {size} bytes to {peer}: over {name} {limit}",
            kind=type(msg).__name__.upper(),
            size=size,
            peer=self.peer,
            name=name,
            limit=limit,
        )
        if isinstance(msg, message.Result):
            text = f"the result ({size} bytes) is larger than the client accepts ({limit} bytes)"
            error = message.Error(message.Call.MESSAGE_TYPE, msg.request, PAYLOAD_TOO_LARGE, [text])
            self.send_message(error)

    def _skip_unserializable(self, msg: message.Message, error: Exception) -> None:
        """Not sending a message this connection's serializer cannot carry (what the router's edge checks
        could not refuse: an app's value, one from another node). Logged once per message, however many
        subscribers it was for; a RESULT, or the ERROR of a call, becomes an ERROR for that caller."""
        self.factory.stats["unserializable_skipped"] += 1
        serializer = self._serializer.SERIALIZER_ID
        internal = router_data(msg)
        if "unserializable" not in internal:  # the first session it fails for
            problem = payload_problem(getattr(msg, "args", None), getattr(msg, "kwargs", None))
            internal["unserializable"] = problem
            log.warn(
                "a {kind} cannot be serialized for {serializer} and is not sent to the sessions it fails "
                "for: {problem}",
                kind=type(msg).__name__.upper(),
                serializer=serializer,
                problem=problem or f"{type(error).__name__}: {error}",
            )
        problem = internal["unserializable"]
        is_call_error = isinstance(msg, message.Error) and msg.request_type == message.Call.MESSAGE_TYPE
        if (isinstance(msg, message.Result) or is_call_error) and not internal.get("replacement"):
            uri = msg.error if is_call_error else INVALID_ARGUMENT  # type: ignore[attr-defined]
            reason = problem or f"its payload cannot be serialized as {serializer}"
            text = f"the {'error' if is_call_error else 'result'} could not be delivered: {reason}"
            request = msg.request  # type: ignore[attr-defined]
            replacement = message.Error(message.Call.MESSAGE_TYPE, request, uri, [text])
            router_data(replacement)["replacement"] = True  # never replaced in turn
            self.send_message(replacement)


# ignore: mypy checks every pair of bases of a class with several, and autobahn's own disagree (on
# _transport_details and peer).
class WampServerProtocol(WampConnection, WebSocketServerProtocol):  # type: ignore[misc]
    """One WebSocket connection carrying one WAMP session at a time."""

    transport: ITransport  # connected before any of this class's methods runs

    _compressed = False  # permessage-deflate is in use (known once open)
    _v1: Wamp1Adapter | None = None  # translates WAMP v1 (subprotocol "wamp") to the session's v2 messages

    def dataReceived(self, data: bytes) -> None:
        self._slice_end = self.factory.slice_end()
        try:
            # autobahn's own, without the debug line it formats for every chunk received.
            websocket_data_received(self, data)
        finally:
            self._slice_end = _NO_SLICE

    def onConnect(self, request: ConnectionRequest) -> str:
        # limits: allowed hosts (400), origin (403), concurrent connections (503)
        self.factory.admit(request, str(getattr(self.transport.getHost(), "host", "") or ""))
        # The session reads a REST session's cookie or bearer token from these (WAMP auth method "cookie").
        self.handshake_headers: dict[str, str] = {
            name: value for name, value in request.headers.items() if name in _CREDENTIAL_HEADERS
        }
        serializers = self.factory.serializers
        subprotocol: str
        for subprotocol in request.protocols:
            serializer = serializers.get(subprotocol)
            if serializer is not None:
                self._serializer = serializer
                return subprotocol
        if WAMP1 in request.protocols:  # only when no v2 subprotocol is offered: v2 wins
            self._v1 = accept_wamp1(self.factory.router, self.handshake_headers)  # 403 if it could not open
            return WAMP1
        raise ConnectionDeny(
            ConnectionDeny.BAD_REQUEST,
            "this server speaks the WebSocket subprotocols " + ", ".join([*serializers, WAMP1]),
        )

    def onOpen(self) -> None:
        # A compressing connection's messages go through autobahn's sendMessage, not as prebuilt frames. (A
        # connection opened without a handshake, as in-memory tests do, has no extensions.)
        self._compressed = bool(getattr(self, "websocket_extensions_in_use", None))
        # What autobahn kept of the handshake is not needed any more, and every idle connection would keep it.
        self.http_headers = {}
        self.http_request_data = b""
        self.http_response_data = ""
        self.websocket_protocols = []
        self._attach()
        if self._v1 is not None:
            self._open_wamp1(self._v1)

    def _is_open(self) -> bool:
        return bool(self.state == self.STATE_OPEN)

    def _handle(self, payload: bytes, isBinary: bool) -> None:
        session = self._wamp
        if session is None:
            if self._shutting_down:
                send_close(self, self.CLOSE_STATUS_CODE_GOING_AWAY, "server shutting down")
            return
        try:
            v1 = self._v1
            messages = v1.decode(payload, isBinary) if v1 else decode(self._serializer, payload, isBinary)
        except DecodeError as exc:
            session.protocol_violation(str(exc))
            return
        self._on_messages(session, messages)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_hello_timer()
        session, self._wamp = self._wamp, None
        if session is not None:
            session.on_transport_lost()

    # the session's transport interface

    def send_message(self, msg: message.Message) -> None:
        """Serialize (through the shared serializer's cache) and send one WAMP message.

        A message larger than ``max_message_size`` is not sent (counted in ``stats["oversize_skipped"]``;
        a RESULT becomes an ERROR for the call), nor one this connection's serializer cannot serialize
        (``stats["unserializable_skipped"]``; a RESULT or a call's ERROR becomes an ERROR saying why).
        A client whose unsent bytes exceed ``max_outgoing_buffer`` is dropped
        (``stats["slow_consumers_dropped"]``).
        """
        if self.state != self.STATE_OPEN:
            return
        factory = self.factory
        try:
            v1 = self._v1
            if v1 is None:
                # framed(), with its cache hit inline: every subscriber of a broadcast after the first
                data = router_data_if_any(msg)
                cached = data.get(self._serializer) if data is not None else None
                if cached is None:
                    cached = framed(msg, self._serializer, factory.sent_messages)
                payload, frame = cached
            else:
                v1_framed = v1.framed(msg, factory.sent_messages)
                if v1_framed is None:
                    return  # nothing in WAMP v1 for it (SUBSCRIBED, PUBLISHED, ABORT...)
                payload, frame = v1_framed
        except Exception as exc:  # a broadcast's other subscribers must still get their EVENT
            self._skip_unserializable(msg, exc)
            return
        limit = factory.limits.max_message_size
        if 0 < limit < len(payload):
            self._skip_oversize(msg, len(payload), limit)
            return
        if not self._compressed and not self.send_queue:
            # The hot path of a broadcast: the frame was built once for every subscriber on this serializer.
            transport = self.transport
            if type(transport) is TCPServer:
                factory.writer.write(self, frame)
            else:
                transport.write(frame)
                factory.traffic.outgoingOctetsWireLevel += len(frame)
        else:
            self.sendMessage(payload, frame[0] == _BINARY_FRAME)
        backlog = self._backlog
        if backlog is not None and backlog.paused:
            self._check_backlog(backlog, len(payload))

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's own writes (control frames, close, compressed messages) go after the frames queued
        # for this turn.
        self.factory.writer.flush_one(self)
        super().sendData(data, sync, chopsize)

    def dropConnection(self, abort: bool = False) -> None:
        self.factory.writer.flush_one(self)
        super().dropConnection(abort)

    def _drop(self, reason: str) -> None:
        self.wasClean = False
        self.wasNotCleanReason = reason
        self.dropConnection(abort=True)

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol chosen in the handshake (``wamp.2.json``...), ``""`` before."""
        return getattr(self, "websocket_protocol_in_use", None) or ""

    def close_transport(self, reason: str) -> None:
        """Close the WebSocket after an ABORT."""
        if self.state == self.STATE_OPEN:
            if self._v1 is None:
                self.sendClose(self.CLOSE_STATUS_CODE_NORMAL, reason[:120])
            else:  # 1002/1003 after a malformed v1 message (v1 has no ABORT), which sendClose refuses
                send_close(self, self._v1.close_code, reason[:120])

    # limits and lifecycle

    _close_timer: IDelayedCall | None = None  # closes the WebSocket a while after a shutdown's GOODBYE
    _shutting_down = False

    def connectionMade(self) -> None:
        super().connectionMade()
        # One set of autobahn traffic counters for all connections (nothing reads them per connection).
        self.trafficStats = self.factory.traffic
        self.factory.connections.add(self)
        if self.factory.limits.max_outgoing_buffer > 0:
            self._watch_backlog()

    def connectionLost(self, reason: Any = None) -> None:
        self._inbox = None
        if self.factory.last_sender is self:
            self.factory.last_sender = None
        self.factory.writer.forget(self)
        self.factory.connections.discard(self)
        self._cancel_hello_timer()
        close_timer, self._close_timer = self._close_timer, None
        if close_timer is not None and close_timer.active():
            close_timer.cancel()
        if self._ticket is not None:
            self._pending = False
            self._ticket.release()
        super().connectionLost(reason)

    def _open_wamp1(self, v1: Wamp1Adapter) -> None:
        """WAMP v1 has no HELLO: the session opens with the WebSocket (WELCOME at once), with the handshake's
        REST login or anonymously (see ``_wamp1.accept``)."""
        session = self._wamp
        assert session is not None
        session.on_message(v1.hello(self.factory.router.realm))
        if session.is_open:
            self._cancel_hello_timer()
            self._serving()

    def shut_down(self, grace: float = 1.0, goodbye: bool = False) -> None:
        """Server shutdown: close the WebSocket with 1001 "going away" and no WAMP GOODBYE, so that clients
        reconnect (autobahn-js and wampy.js take a GOODBYE from the router as the end and stop retrying).
        With ``goodbye``, an open session first gets GOODBYE ``wamp.close.system_shutdown``, and the
        WebSocket is closed after ``grace`` seconds (or once the client answers)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self._cancel_hello_timer()
        session, self._wamp = self._wamp, None
        if self.state != self.STATE_OPEN:
            self.dropConnection(abort=True)
            return
        if not goodbye or session is None or not session.is_open or self._v1 is not None:  # v1: no GOODBYE
            if session is not None:
                session.on_transport_lost()
            send_close(self, self.CLOSE_STATUS_CODE_GOING_AWAY, "server shutting down")
            return
        self.send_message(message.Goodbye(SYSTEM_SHUTDOWN, "the server is shutting down"))
        session.on_transport_lost()  # leave the router now; the client's GOODBYE needs no answer
        self._close_timer = self.factory.clock.callLater(grace, self._close_after_goodbye)

    def _close_after_goodbye(self) -> None:
        self._close_timer = None
        if self.state == self.STATE_OPEN:
            send_close(self, self.CLOSE_STATUS_CODE_GOING_AWAY, "server shutting down")


class _TurnWriter:
    """The WAMP frames written to TCP connections during one reactor turn, sent at the end of that turn
    with one ``send`` per connection. One per factory, on the factory's reactor (``call_later``).

    ``transport.write`` queues too, but its bytes leave only after the next poll, at the cost of two
    epoll changes and a writability event per connection. Here a broadcast to N subscribers costs N
    system calls, however many EVENTs each gets in the turn; whatever a socket does not take goes
    to ``transport.write`` (and Twisted's flow control) as before.

    A server that was idle before the turn (see ``idle``) writes the turn's first broadcast straight to the
    kernel as it delivers it, so that its first subscribers get their EVENT while the others are still being
    served, and a REST request's EVENTs leave before its response is rendered and logged; ``end_direct``
    (called after each broadcast) ends that, and the rest of the turn is batched. A busy server, whose turns
    follow each other, batches everything, however long a turn takes.
    """

    # The server sat idle at least this many seconds between the last send and a turn's first frame: that
    # turn's first broadcast is written as it is delivered. Otherwise frames wait for the end of the turn,
    # where they share each connection's send with the turn's other frames.
    idle = 0.001

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``call_later(0, f)`` runs ``f`` at the end of the reactor turn (``IReactorTime.callLater``);
        ``clock`` is a monotonic time source in seconds, to tell an idle spell."""
        self.queued: dict[WampConnection, list[bytes]] = {}
        self.scheduled = False
        self.sent_bytes = 0  # handed to the kernel or the transports, for the metrics
        self.call_later = call_later
        self.clock = clock
        self.last_flush = float("-inf")  # when frames were last sent
        # While a broadcast after an idle spell is written straight away: the connections written to (a
        # second frame for one of them waits for the end of the turn, behind the first).
        self.direct: set[WampConnection] | None = None

    def write(self, protocol: WampConnection, data: bytes) -> None:
        chunks = self.queued.get(protocol)
        if chunks is not None:
            chunks.append(data)
            return
        if not self.scheduled:  # the turn's first frame
            self.scheduled = True
            if self.clock() - self.last_flush >= self.idle:
                self.direct = set()
            self.call_later(0, self.flush)
        direct = self.direct
        if direct is not None and protocol not in direct:
            direct.add(protocol)
            self.sent_bytes += len(data)
            _send_logged(protocol, data)
            return
        self.queued[protocol] = [data]

    def flush(self) -> None:
        """The end of the turn: send everything queued."""
        self.scheduled = False
        self.end_direct()
        self.send_queued()

    def end_direct(self) -> None:
        """After a broadcast (and at the end of the turn): if it was written straight away, batch the rest
        of the turn."""
        if self.direct is not None:
            self.direct = None
            self.last_flush = self.clock()

    def send_queued(self) -> None:
        queued, self.queued = self.queued, {}
        sent = 0
        for protocol, chunks in queued.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            sent += len(data)
            _send_logged(protocol, data)
        if queued:
            self.sent_bytes += sent
            self.last_flush = self.clock()

    def flush_one(self, protocol: WampConnection) -> None:
        """Send what waits for ``protocol`` now, if anything (before autobahn writes to it itself)."""
        chunks = self.queued.pop(protocol, None)
        if chunks:
            data = b"".join(chunks)
            self.sent_bytes += len(data)
            send_now(protocol.transport, data)

    def forget(self, protocol: WampConnection) -> None:
        """Drop what waits for ``protocol`` (its connection is lost)."""
        self.queued.pop(protocol, None)


def _send_logged(protocol: WampConnection, data: bytes) -> None:
    try:
        send_now(protocol.transport, data)
    except Exception:  # one broken connection must not keep the others' frames
        log.failure("writing to {peer} failed", peer=getattr(protocol, "peer", None))


@implementer(IPushProducer)
class _Backlog:
    """Registered on a connection's transport: paused while the transport's send buffer is full.

    ``written`` counts the bytes written since the last pause (used when the transport's buffer
    cannot be measured directly).
    """

    paused = False
    written = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.written = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self.written = 0

    def stopProducing(self) -> None:
        self.paused = False


class WampServerFactory(WebSocketServerFactory):
    """Builds WAMP connections for one router."""

    # autobahn subclasses Twisted's generic Factory without a type argument, leaving protocol's type unbound.
    protocol = WampServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        router: Router,
        serializers: dict[str, ISerializer] | None = None,
        *,
        limits: Limits | None = None,
        allowed_origins: Sequence[str] | None = None,
        allowed_hosts: Sequence[str] | None = None,
        clock: IReactorTime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """``clock`` is the reactor the factory's connections run on (its timers, the end of a reactor turn);
        ``monotonic`` the time source the per-turn writer tells idle spells with."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        # The frames written to this factory's connections during one turn of its reactor, sent at its end.
        self.writer = _TurnWriter(self.clock.callLater, monotonic)
        self.monotonic = monotonic
        self._backlogged: deque[WampConnection] = deque()  # connections with messages waiting
        self._serving_backlogs = False
        self.last_sender: WampConnection | None = None  # the connection whose message came last
        # several connections sent messages until then (monotonic); 0.0: not since the last slice_end after it
        self._contended_until = 0.0
        self.serializers = serializers if serializers is not None else default_serializers()
        self._protocol_base: type[WampServerProtocol] = self.protocol
        super().__init__(protocols=list(self.serializers), **kwargs)
        self.traffic = TrafficStats()  # autobahn's counters, summed over every connection
        self.router = router
        router.on_delivered(self.writer.end_direct)
        self.limits = limits if limits is not None else router.limits
        self.allowed_origins = list(allowed_origins or ())
        self.allowed_hosts = None if allowed_hosts is None else list(allowed_hosts)
        self.connections: set[WampServerProtocol] = set()
        self.stats: Counter[str] = router.stats
        self.sent_messages: Counter[type] = router.activity.sent  # see framed()
        limits = self.limits
        self.setProtocolOptions(
            maxFramePayloadSize=limits.max_frame_size,
            maxMessagePayloadSize=limits.max_message_size,
            openHandshakeTimeout=limits.open_handshake_timeout,
            autoPingInterval=limits.auto_ping_interval,
            autoPingTimeout=limits.auto_ping_timeout,
            perMessageCompressionAccept=self.accept_deflate,
            failByDrop=False,  # a refused frame or message gets a close frame with its code (1009)
            allowNullOrigin=True,  # origins are checked in admit(), which answers 403
        )

    def slice_end(self) -> float:
        """When a time slice starting now ends: after ``limits.message_time_slice`` while several connections
        send messages (see ``sender_changed``); never when one sends alone, or the slice is 0."""
        time_slice = self.limits.message_time_slice
        if time_slice <= 0:
            return _NO_SLICE
        if not self._contended_until:  # one connection sends alone: no clock read
            return _NO_SLICE
        now = self.monotonic()
        if now < self._contended_until:
            return now + time_slice
        self._contended_until = 0.0  # the contention is over
        return _NO_SLICE

    def sender_changed(self, protocol: WampConnection) -> None:
        """``protocol`` sends a message after another connection did: for the next ``CONTENTION`` seconds,
        connections share the reactor in time slices. A connection sending alone (subscribers only read) is
        not sliced: slices would cost it a flush of every subscriber's socket per slice, and gain nobody."""
        if self.last_sender is not None:
            self._contended_until = self.monotonic() + self.CONTENTION
        self.last_sender = protocol

    def backlogged(self, protocol: WampConnection) -> None:
        """``protocol`` has messages waiting: from the next reactor turn on, each turn handles one time slice
        of every backlogged connection's messages, in turn, between the reads of the other connections, so
        that a connection sending as fast as it can does not hold the others up."""
        self._backlogged.append(protocol)
        if not self._serving_backlogs:
            self._serving_backlogs = True
            self.clock.callLater(0, self._serve_backlogs)

    def _serve_backlogs(self) -> None:
        self._serving_backlogs = False
        backlogged = self._backlogged
        for _ in range(len(backlogged)):
            protocol = backlogged.popleft()
            if protocol.serve_backlog():
                backlogged.append(protocol)
        if backlogged and not self._serving_backlogs:
            self._serving_backlogs = True
            self.clock.callLater(0, self._serve_backlogs)

    #: Seconds during which connections are sliced after two of them sent messages in turn.
    CONTENTION = 0.1

    def setProtocolOptions(self, *args: Any, **options: Any) -> None:
        """autobahn's protocol options, for the connections made from now on (they read them from their
        class, see ``_options_class``: set options through this method, not as factory attributes)."""
        super().setProtocolOptions(*args, **options)
        self._options_class()

    def _options_class(self) -> None:
        """Build connections from a subclass of the protocol holding the factory's options in the class.

        autobahn copies ~30 options from the factory into every connection's ``__dict__`` unless the
        connection already has them, and pretty-prints them for a debug line: as class attributes they cost
        an idle connection nothing, are read as fast as instance attributes, and connecting formats nothing
        (see ``_autobahn_internals.options_class``).
        """
        options = {name: getattr(self, name) for name in PROTOCOL_OPTIONS}
        self.protocol = options_class(self._protocol_base, options)

    def admit(self, request: ConnectionRequest, local_ip: str = "") -> None:
        """Refuse a WebSocket handshake: 400 for a host name not in ``allowed_hosts`` (received on
        ``local_ip``), 403 for a foreign browser origin, 503 beyond ``max_connections``."""
        headers = getattr(request, "headers", None) or {}
        host = headers.get("host")
        if not host_allowed(host, self.allowed_hosts, local_ip):
            self.stats["hosts_refused"] += 1
            log.info("WebSocket refused: host {host!r} is not in allowed_hosts", host=host)
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, f"host {host!r} is not served here")
        origin = getattr(request, "origin", None) or headers.get("origin")
        if not origin_allowed(origin, headers.get("host"), self.allowed_origins):
            self.stats["origins_refused"] += 1
            log.info("WebSocket refused: origin {origin!r} is not allowed", origin=origin)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, f"origin {origin!r} is not allowed")
        limit = self.limits.max_connections
        if 0 < limit < len(self.connections):
            self.stats["connections_refused"] += 1
            log.warn("WebSocket refused: {limit} connections already open", limit=limit)
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "too many connections")

    def accept_deflate(self, offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
        """Accept a permessage-deflate offer whose windows fit ``deflate_window_bits`` (else none).

        A client that cannot be told to use a smaller window compresses with up to 32 KiB of window,
        which the server would need to inflate: its offer is refused (the connection goes on
        uncompressed).
        """
        bits = self.limits.deflate_window_bits
        if not bits:
            return None
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            if bits < 15 and not offer.accept_max_window_bits:
                continue
            return PerMessageDeflateOfferAccept(
                offer,
                request_max_window_bits=bits if bits < 15 else 0,
                window_bits=min(bits, offer.request_max_window_bits or 15),
                mem_level=self.limits.deflate_memory_level or None,
                max_message_size=self.limits.max_message_size or None,
            )
        return None

    def shutdown(self, grace: float = 1.0, goodbye: bool = False) -> None:
        """Close every connection with 1001 "going away" (clients reconnect); with ``goodbye``, say GOODBYE
        (``wamp.close.system_shutdown``) to every session first (see ``WampServerProtocol.shut_down``)."""
        for protocol in list(self.connections):
            protocol.shut_down(grace, goodbye)


class _WampResource(WebSocketResource):
    """``WebSocketResource`` telling a tracking Site that an upgraded request is no REST request in flight."""

    def render(self, request: Any) -> Any:
        inflight = getattr(getattr(request, "site", None), "inflight", None)
        if inflight is not None:
            inflight.discard(request)
        return super().render(request)


def websocket_resource(factory: WampServerFactory) -> WebSocketResource:
    """A twisted.web resource that upgrades requests to WAMP-over-WebSocket connections."""
    return _WampResource(factory)
