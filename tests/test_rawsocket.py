"""WAMP over RawSocket, driven with fakes: the handshake and its error replies, frames in and out, limits both
ways, PINGs, the session on the connection, admission, fairness and shutdown (``sandstone/_rawsocket.py``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import cbor2
import msgpack
from autobahn.wamp import message
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._admission import Admission
from sandstone._errors import PAYLOAD_TOO_LARGE, PROTOCOL_VIOLATION, SYSTEM_SHUTDOWN
from sandstone._limits import Limits
from sandstone._rawsocket import (
    MAX_LENGTH,
    PING,
    PONG,
    RawSocketFactory,
    RawSocketService,
    frame_header,
    handshake_error,
    length_exponent,
)
from sandstone._tap import Options, makeService
from sandstone._transport import WampServerFactory
from tests.support import open_websocket, websocket_payloads
from tests.test_broker import CountingSerializer
from tests.test_fairness import Reactor, Ticking

ROLES = {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}
HELLO = [1, "realm1", {"roles": ROLES}]
JSON, MSGPACK, CBOR = 1, 2, 3
PACK = {JSON: lambda raw: json.dumps(raw).encode(), MSGPACK: msgpack.packb, CBOR: cbor2.dumps}
UNPACK = {JSON: json.loads, MSGPACK: msgpack.unpackb, CBOR: cbor2.loads}


def handshake(serializer: int = JSON, length: int = 15) -> bytes:
    """A client's handshake: serializer id, and the maximum it receives as ``2**(9 + length)`` bytes."""
    return bytes((0x7F, (length << 4) | serializer, 0, 0))


def frame(raw: Any, serializer: int = JSON) -> bytes:
    payload = PACK[serializer](raw)
    return frame_header(len(payload)) + payload


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each frame in ``data``."""
    parsed = []
    offset = 0
    while offset < len(data):
        kind, length = data[offset] & 0x07, int.from_bytes(data[offset + 1 : offset + 4], "big")
        parsed.append((kind, data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    return parsed


class Connection:
    """A RawSocket connection on a StringTransport, as its client sees it."""

    def __init__(
        self, test: RawSocketTestCase, protocol: Any, transport: StringTransport, serializer: int
    ) -> None:
        self.test = test
        self.protocol = protocol
        self.transport = transport
        self.serializer = serializer

    def send(self, *raws: Any) -> None:
        self.protocol.dataReceived(b"".join(frame(raw, self.serializer) for raw in raws))
        self.test.clock.advance(0)

    def frames(self) -> list[tuple[int, bytes]]:
        return frames(self.transport.value())

    def messages(self) -> list[Any]:
        """The WAMP messages received since the last ``clear``."""
        return [UNPACK[self.serializer](payload) for kind, payload in self.frames() if kind == 0]

    def clear(self) -> None:
        self.transport.clear()

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        return bool(self.transport.disconnected)


class RecordingTransport(StringTransport):
    """A StringTransport keeping each ``write``'s bytes object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class RawSocketTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.make(Limits())

    def make(self, limits: Limits, admission: Admission | None = None, monotonic: Any = None) -> None:
        self.clock = Reactor()
        limits = dataclasses.replace(limits, auto_ping_interval=0)  # no autobahn timers on the global reactor
        self.app = Sandstone(anonymous=True, open_uris=True, limits=limits)
        extra = {"monotonic": monotonic} if monotonic is not None else {}
        self.wamp = WampServerFactory(self.app.router, limits=limits, clock=self.clock, **extra)
        self.factory = RawSocketFactory(self.wamp, admission)

    def tearDown(self) -> None:
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical or "log_failure" in e]
        self.assertEqual(critical, [])

    def log_text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.logged)

    def connect(
        self, data: bytes | None = None, address: Any = None, transport_class: type = StringTransport
    ) -> Connection:
        """A connection that sent ``data`` (default: a JSON handshake)."""
        address = address or IPv4Address("TCP", "127.0.0.1", 50000)
        protocol = self.factory.buildProtocol(address)
        transport = transport_class(peerAddress=address)
        protocol.makeConnection(transport)
        data = handshake() if data is None else data
        serializer = data[1] & 0x0F if len(data) > 1 and data[1] & 0x0F in PACK else JSON
        connection = Connection(self, protocol, transport, serializer)
        if data:
            protocol.dataReceived(data)
        self.clock.advance(0)
        return connection

    def joined(
        self, serializer: int = JSON, length: int = 15, transport_class: type = StringTransport
    ) -> Connection:
        """A connection past its handshake and WELCOME, its output cleared."""
        connection = self.connect(handshake(serializer, length), transport_class=transport_class)
        self.assertEqual(connection.transport.value()[:1], b"\x7f")
        connection.transport.clear()
        connection.send(HELLO)
        self.assertEqual(connection.messages()[0][0], message.Welcome.MESSAGE_TYPE)
        connection.clear()
        return connection


class HandshakeTests(RawSocketTestCase):
    def test_reply_echoes_the_serializer_with_max_message_size_as_the_routers_maximum(self) -> None:
        connection = self.connect(handshake(JSON, 15))
        self.assertEqual(connection.transport.value(), bytes((0x7F, 0xB1, 0, 0)))  # 2**20 = 1 MiB, JSON

    def test_max_message_size_is_rounded_down_to_a_power_of_two(self) -> None:
        self.make(Limits(max_message_size=3000))
        self.assertEqual(self.connect(handshake(MSGPACK)).transport.value(), bytes((0x7F, 0x22, 0, 0)))

    def test_no_size_limit_announces_16_mib(self) -> None:
        self.make(Limits(max_message_size=0))
        self.assertEqual(self.connect(handshake(CBOR)).transport.value(), bytes((0x7F, 0xF3, 0, 0)))

    def test_length_exponents(self) -> None:
        self.assertEqual(
            [length_exponent(n) for n in (0, 100, 512, 1023, 1024, 1 << 20, (1 << 24) - 1, 1 << 24, 1 << 30)],
            [15, 0, 0, 0, 1, 11, 14, 15, 15],
        )

    def test_each_serializer_opens_a_session(self) -> None:
        for serializer in (JSON, MSGPACK, CBOR):
            connection = self.joined(serializer)
            connection.send([32, 1, {}, "x.y"])
            self.assertEqual(connection.messages()[0][:2], [message.Subscribed.MESSAGE_TYPE, 1])

    def test_sessions_are_counted_by_serializer(self) -> None:
        self.joined(JSON)
        self.joined(CBOR)
        sessions = self.app.router.activity.sessions
        self.assertEqual(sessions[("rawsocket.json", "anonymous")], 1)
        self.assertEqual(sessions[("rawsocket.cbor", "anonymous")], 1)

    def test_an_unsupported_serializer_gets_the_error_reply_and_the_connection_closes(self) -> None:
        for serializer in (0, 4, 5, 15):
            connection = self.connect(handshake(serializer))
            self.assertEqual(connection.transport.value(), handshake_error(1))
            self.assertEqual(connection.transport.value(), bytes((0x7F, 0x10, 0, 0)))
            self.assertTrue(connection.closed)
            self.assertEqual(self.app.router.sessions, {})
        self.assertEqual(self.wamp.stats["rawsocket_handshakes_refused"], 4)
        self.assertIn(
            "serializer 0 (illegal) is not spoken here, only 1 (JSON), 2 (MessagePack), 3 (CBOR)",
            self.log_text(),
        )

    def test_reserved_handshake_bits_get_the_error_reply(self) -> None:
        connection = self.connect(bytes((0x7F, 0xF1, 0, 1)))
        self.assertEqual(connection.transport.value(), bytes((0x7F, 0x30, 0, 0)))
        self.assertTrue(connection.closed)

    def test_a_bad_magic_octet_fails_the_connection_at_once_without_a_reply(self) -> None:
        connection = self.connect(b"G")  # an HTTP client: no need to wait for more
        self.assertEqual(connection.transport.value(), b"")
        self.assertTrue(connection.aborted)
        self.assertEqual(self.wamp.stats["rawsocket_handshakes_refused"], 1)
        self.assertIn("not a RawSocket handshake: first octet 0x47, not 0x7f", self.log_text())
        connection.protocol.dataReceived(b"ET / HTTP/1.1\r\n\r\n")  # ignored
        self.assertEqual(connection.transport.value(), b"")

    def test_the_handshake_may_arrive_in_pieces(self) -> None:
        connection = self.connect(b"")
        for octet in handshake(JSON, 0):
            connection.protocol.dataReceived(bytes((octet,)))
        self.assertEqual(connection.transport.value(), bytes((0x7F, 0xB1, 0, 0)))

    def test_the_handshake_and_hello_may_arrive_in_one_read(self) -> None:
        connection = self.connect(handshake() + frame(HELLO))
        data = connection.transport.value()
        self.assertEqual(data[:4], bytes((0x7F, 0xB1, 0, 0)))
        self.assertEqual(json.loads(frames(data[4:])[0][1])[0], message.Welcome.MESSAGE_TYPE)

    def test_no_handshake_within_the_open_handshake_timeout_fails_the_connection(self) -> None:
        self.make(Limits(open_handshake_timeout=5.0))
        connection = self.connect(b"\x7f")
        self.clock.advance(4.9)
        self.assertFalse(connection.closed)
        self.clock.advance(0.2)
        self.assertTrue(connection.aborted)
        self.assertEqual(self.wamp.stats["rawsocket_handshake_timeouts"], 1)

    def test_over_the_connection_limit_the_handshake_gets_the_error_reply(self) -> None:
        self.make(Limits(max_connections=1), Admission(lambda: self.wamp.limits, fds=None))
        first = self.connect()
        second = self.connect()
        self.assertEqual(first.transport.value(), bytes((0x7F, 0xB1, 0, 0)))
        self.assertEqual(second.transport.value(), bytes((0x7F, 0x40, 0, 0)))
        self.assertTrue(second.closed)
        self.assertEqual(self.wamp.stats["connections_refused"], 1)

    def test_a_connection_is_pending_until_its_session_opens_and_counted_until_it_closes(self) -> None:
        admission = Admission(lambda: self.wamp.limits, fds=None)
        self.make(Limits(), admission)
        connection = self.connect()
        self.assertEqual((admission.open, admission.pending, admission.pending_from("127.0.0.1")), (1, 1, 1))
        connection.send(HELLO)
        self.assertEqual((admission.open, admission.pending), (1, 0))
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((admission.open, admission.pending, admission.open_from("127.0.0.1")), (0, 0, 0))

    def test_a_unix_socket_peer_counts_against_server_wide_limits_only(self) -> None:
        admission = Admission(lambda: self.wamp.limits, fds=None)
        self.make(Limits(max_connections_per_ip=1), admission)
        connections = [self.connect(address=UNIXAddress(b"/tmp/s.sock")) for _ in range(3)]
        self.assertEqual([c.transport.value()[:2] for c in connections], [b"\x7f\xb1"] * 3)
        self.assertEqual(admission.open, 3)


class FrameTests(RawSocketTestCase):
    def test_frame_headers(self) -> None:
        self.assertEqual(frame_header(5), b"\x00\x00\x00\x05")
        self.assertEqual(frame_header(5, PING), b"\x01\x00\x00\x05")
        self.assertEqual(frame_header(MAX_LENGTH - 1), b"\x00\xff\xff\xff")
        self.assertEqual(frame_header(MAX_LENGTH), b"\x08\x00\x00\x00")  # the 25th bit

    def test_several_frames_in_one_read_and_one_frame_across_reads(self) -> None:
        connection = self.joined()
        data = frame([32, 1, {}, "a"]) + frame([32, 2, {}, "b"]) + frame([32, 3, {}, "c"])
        connection.protocol.dataReceived(data[:3])
        connection.protocol.dataReceived(data[3:30])
        connection.protocol.dataReceived(data[30:])
        self.assertEqual([m[1] for m in connection.messages()], [1, 2, 3])

    def test_an_over_long_frame_fails_the_connection_before_its_payload_arrives(self) -> None:
        self.make(Limits(max_message_size=1024))
        connection = self.joined()
        connection.protocol.dataReceived(frame_header(1025) + b"[")
        self.assertTrue(connection.aborted)
        self.assertEqual(self.wamp.stats["rawsocket_frames_refused"], 1)
        self.assertIn(
            "closing the RawSocket connection from tcp:127.0.0.1:50000: a frame of 1025 bytes, over the "
            "maximum message length of 1024 bytes announced in the handshake",
            self.log_text(),
        )
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.app.router.sessions, {})

    def test_a_frame_of_the_announced_maximum_is_accepted(self) -> None:
        self.make(Limits(max_message_size=1024))
        connection = self.joined()
        raw = [16, 1, {"acknowledge": True}, "x.y", ["a" * 980]]
        payload = json.dumps(raw).encode()
        payload += b" " * (1024 - len(payload))
        connection.protocol.dataReceived(frame_header(1024) + payload)
        self.assertEqual(connection.messages()[0][:2], [message.Published.MESSAGE_TYPE, 1])

    def test_reserved_bits_or_an_unknown_type_fail_the_connection(self) -> None:
        for prefix in (b"\x10\x00\x00\x02", b"\x03\x00\x00\x02", b"\x08\x00\x00\x02", b"GET "):
            connection = self.joined()
            connection.protocol.dataReceived(prefix + b"[]")
            self.assertTrue(connection.aborted, prefix)
            self.assertEqual(connection.frames(), [])
        self.assertEqual(self.wamp.stats["rawsocket_frames_refused"], 4)

    def test_a_payload_that_does_not_deserialize_aborts_the_session(self) -> None:
        connection = self.joined()
        connection.protocol.dataReceived(frame_header(8) + b"not json")
        abort = connection.messages()
        self.assertEqual(abort[0][:1], [message.Abort.MESSAGE_TYPE])
        self.assertEqual(abort[0][2], PROTOCOL_VIOLATION)
        self.assertTrue(connection.closed)
        self.assertFalse(connection.aborted)  # the ABORT is sent first

    def test_a_ping_is_answered_with_a_pong_echoing_its_payload(self) -> None:
        connection = self.joined()
        connection.protocol.dataReceived(frame_header(5, PING) + b"hello" + frame_header(0, PING))
        self.assertEqual(connection.frames(), [(PONG, b"hello"), (PONG, b"")])

    def test_pings_are_answered_before_the_session_opens(self) -> None:
        connection = self.connect(handshake() + frame_header(3, PING) + b"abc")
        self.assertEqual(frames(connection.transport.value()[4:]), [(PONG, b"abc")])

    def test_a_pong_is_ignored(self) -> None:
        connection = self.joined()
        connection.protocol.dataReceived(frame_header(3, PONG) + b"abc")
        connection.send([32, 1, {}, "x.y"])
        self.assertEqual([kind for kind, _ in connection.frames()], [0])
        self.assertFalse(connection.closed)

    def test_goodbye_then_hello_opens_a_new_session_on_the_connection(self) -> None:
        connection = self.joined()
        connection.send([6, {}, "wamp.close.normal"])
        self.assertEqual(connection.messages()[0][:3], [6, {}, "wamp.close.goodbye_and_out"])
        connection.clear()
        connection.send(HELLO)
        self.assertEqual(connection.messages()[0][0], message.Welcome.MESSAGE_TYPE)
        self.assertEqual(len(self.app.router.sessions), 1)

    def test_the_hello_timeout_applies(self) -> None:
        self.make(Limits(hello_timeout=3.0))
        connection = self.connect()
        connection.clear()
        self.clock.advance(3.1)
        self.assertEqual(connection.messages()[0][2], "sandstone.error.hello_timeout")
        self.assertTrue(connection.closed)


class OutgoingTests(RawSocketTestCase):
    def test_an_event_over_the_clients_maximum_is_not_sent(self) -> None:
        small = self.joined(length=1)  # receives at most 1024 bytes (a WELCOME takes more than 512)
        large = self.joined()
        for connection in (small, large):
            connection.send([32, 1, {}, "x.y"])
            connection.clear()
        self.app.broadcast("x.y", "a" * 1100)
        self.app.broadcast("x.y", "b" * 900)
        self.assertEqual([m[4] for m in small.messages()], [["b" * 900]])
        self.assertEqual([m[4] for m in large.messages()], [["a" * 1100], ["b" * 900]])
        self.assertEqual(self.wamp.stats["oversize_skipped"], 1)
        self.assertIn("over the client's maximum message length 1024", self.log_text())

    def test_a_result_over_the_clients_maximum_becomes_an_error(self) -> None:
        @self.app.procedure("big")
        def big() -> str:
            return "x" * 1100

        connection = self.joined(length=1)
        connection.send([48, 7, {}, "big"])
        error = connection.messages()[0]
        self.assertEqual(error[:5], [message.Error.MESSAGE_TYPE, 48, 7, {}, PAYLOAD_TOO_LARGE])

    def test_max_message_size_bounds_what_is_sent_too(self) -> None:
        self.make(Limits(max_message_size=1024))
        connection = self.joined()  # receives up to 16 MiB
        connection.send([32, 1, {}, "x.y"])
        connection.clear()
        self.app.broadcast("x.y", "a" * 2000)
        self.assertEqual(connection.messages(), [])
        self.assertIn("over max_message_size 1024", self.log_text())

    def test_a_broadcast_is_serialized_once_for_websocket_and_rawsocket_subscribers(self) -> None:
        self.make(Limits(open_handshake_timeout=0))  # no autobahn timers on the global reactor
        # EVENTs serialized by the shared JSON serializer (WebSocket and RawSocket connections must share it)
        counter = CountingSerializer(self, self.wamp.serializers["wamp.2.json"])
        raw = [self.joined(), self.joined(), self.joined(CBOR)]
        for connection in raw:
            connection.send([32, 1, {}, "x.y"])
            connection.clear()
        ws, ws_transport = open_websocket(self.wamp)
        ws.onMessage(json.dumps(HELLO).encode(), False)
        ws.onMessage(json.dumps([32, 1, {}, "x.y"]).encode(), False)
        self.clock.advance(0)
        ws_transport.clear()
        counter.events = 0
        self.app.broadcast("x.y", {"n": 1})
        self.assertEqual(counter.events, 1)
        received = [c.messages() for c in raw]
        self.assertEqual([m[0][4] for m in received], [[{"n": 1}]] * 3)
        self.assertEqual(raw[0].transport.value(), raw[1].transport.value())
        self.assertEqual(json.loads(websocket_payloads(ws_transport.value())[0])[4], [{"n": 1}])

    def test_a_broadcasts_frame_is_built_once_for_every_subscriber_on_a_serializer(self) -> None:
        first, second = (
            self.joined(transport_class=RecordingTransport),
            self.joined(transport_class=RecordingTransport),
        )
        other = self.joined(MSGPACK, transport_class=RecordingTransport)
        for connection in (first, second, other):
            connection.send([32, 1, {}, "x.y"])
        self.app.broadcast("x.y", "news")
        frame = first.transport.writes[-1]
        self.assertEqual(json.loads(frame[4:])[4], ["news"])
        self.assertIs(second.transport.writes[-1], frame)
        self.assertEqual(msgpack.unpackb(other.transport.writes[-1][4:])[4], ["news"])

    def test_a_client_that_does_not_read_is_dropped_over_max_outgoing_buffer(self) -> None:
        self.make(Limits(max_outgoing_buffer=10_000))
        connection = self.joined()
        connection.transport.producer.pauseProducing()  # the kernel's buffer is full
        connection.protocol.dataReceived((frame_header(1000, PING) + b"p" * 1000) * 20)
        self.assertTrue(connection.aborted)
        self.assertEqual(self.wamp.stats["slow_consumers_dropped"], 1)


class FairnessTests(RawSocketTestCase):
    def test_a_ping_flood_gets_time_slices_and_reading_pauses(self) -> None:
        self.make(Limits(message_time_slice=0.005), monotonic=Ticking(0.001))
        flooder = self.joined()
        other = self.joined()
        flooder.protocol.dataReceived((frame_header(1, PING) + b"p") * 50)
        self.assertEqual(flooder.transport.producerState, "paused")
        answered = len(flooder.frames())
        self.assertTrue(0 < answered < 50, answered)
        other.protocol.dataReceived(frame([32, 1, {}, "x.y"]))  # served at once, in its own slice
        self.assertEqual(other.messages()[0][0], message.Subscribed.MESSAGE_TYPE)
        self.assertEqual(flooder.transport.producerState, "paused")
        self.assertEqual(len(flooder.frames()), answered)
        turns = 0
        while flooder.transport.producerState == "paused":
            self.clock.turn()
            turns += 1
            self.assertLess(turns, 50)
        self.assertEqual(flooder.frames(), [(PONG, b"p")] * 50)


class ShutdownTests(RawSocketTestCase):
    def test_shutdown_closes_without_goodbye(self) -> None:
        connection = self.joined()
        self.factory.shutdown()
        self.assertEqual(connection.messages(), [])
        self.assertTrue(connection.closed)
        self.assertEqual(self.app.router.sessions, {})

    def test_shutdown_with_goodbye_says_goodbye_then_closes_after_the_grace(self) -> None:
        connection = self.joined()
        self.factory.shutdown(grace=1.0, goodbye=True)
        self.assertEqual(connection.messages()[0][2], SYSTEM_SHUTDOWN)
        self.assertFalse(connection.closed)
        self.clock.advance(1.0)
        self.assertTrue(connection.closed)

    def test_the_clients_goodbye_answer_closes_at_once(self) -> None:
        connection = self.joined()
        self.factory.shutdown(grace=1.0, goodbye=True)
        connection.send([6, {}, "wamp.close.goodbye_and_out"])
        self.assertTrue(connection.closed)

    def test_a_connection_without_handshake_is_cut_off(self) -> None:
        connection = self.connect(b"")
        self.factory.shutdown()
        self.assertTrue(connection.aborted)

    def test_stopping_the_service_closes_connections_then_cuts_off_what_is_left(self) -> None:
        service = RawSocketService(self.factory, [], timeout=2.0)
        service.startService()
        connection, other = self.joined(), self.joined()
        stopped = service.stopService()
        self.assertTrue(connection.closed and other.closed)
        self.assertFalse(connection.aborted)
        other.protocol.connectionLost(Failure(ConnectionDone()))  # this one's client closed too
        self.clock.advance(1.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.2)
        self.assertTrue(connection.aborted)
        self.successResultOf(stopped)

    def test_connections_are_forgotten_once_lost(self) -> None:
        connection = self.joined()
        self.assertEqual(self.factory.connections, {connection.protocol})
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.app.router.sessions, {})


class OptionTests(SynchronousTestCase):
    def test_rawsocket_is_repeatable_and_each_endpoint_is_checked(self) -> None:
        options = Options()
        options.parseOptions(["--rawsocket", "tcp:8081", "--rawsocket", "unix:/run/s.sock"])
        self.assertEqual(options["rawsocket"], ["tcp:8081", "unix:/run/s.sock"])
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--rawsocket", "tcp:8081", "--rawsocket", "tpc:8082"])
        self.assertIn("--rawsocket 'tpc:8082' is not a valid server endpoint", str(caught.exception))

    def test_the_service_listens_on_each_endpoint_with_one_factory(self) -> None:
        options = {"listen": "tcp:0:interface=127.0.0.1", "rawsocket": ["tcp:0", "unix:/run/s.sock"]}
        root = makeService(options)  # type: ignore[arg-type]
        service = root.getServiceNamed("rawsocket")  # type: ignore[attr-defined]
        self.assertIsInstance(service, RawSocketService)
        self.assertEqual([s.factory for s in service], [service.factory] * 2)
        self.assertEqual(service.addresses(), ["tcp:0", "unix:/run/s.sock"])  # not listening yet

    def test_no_rawsocket_by_default(self) -> None:
        root = makeService({"listen": "tcp:0:interface=127.0.0.1"})  # type: ignore[arg-type]
        self.assertNotIn("rawsocket", root.namedServices)  # type: ignore[attr-defined]
