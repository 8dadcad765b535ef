"""Tests for L{sandstone._transport}'s per-turn writer: frames of one reactor turn leave in one send."""

from __future__ import annotations

from typing import Any

from twisted.internet import main, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sandstone import Sandstone
from sandstone._transport import _send_now, _TurnWriter
from tests.support import ServerTestCase, wait_until


class FakeTCP:
    """The parts of twisted.internet.tcp.Server the writer uses, recording what reaches the socket."""

    def __init__(self, takes: int | None = None, lost: bool = False) -> None:
        self.sent: list[bytes] = []
        self.written: list[bytes] = []  # through transport.write (Twisted's own buffer)
        self.dataBuffer = b""
        self._tempDataLen = 0
        self.connected = True
        self.disconnecting = False
        self.takes = takes
        self.lost = lost

    def writeSomeData(self, data: bytes) -> Any:
        if self.lost:
            return main.CONNECTION_LOST
        taken = data if self.takes is None else data[: self.takes]
        self.sent.append(bytes(taken))
        return len(taken)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self._tempDataLen += len(data)


class FakeProtocol:
    def __init__(self, transport: FakeTCP) -> None:
        self.transport = transport


def next_turn() -> Any:
    return deferLater(reactor, 0, lambda: None)


class TurnWriterTests(TestCase):
    def setUp(self) -> None:
        self.writer = _TurnWriter()

    async def test_frames_of_one_turn_leave_in_one_send_in_order(self) -> None:
        one, two = FakeProtocol(FakeTCP()), FakeProtocol(FakeTCP())
        for frame in (b"a", b"b", b"c"):
            self.writer.write(one, frame)  # type: ignore[arg-type]
        self.writer.write(two, b"z")  # type: ignore[arg-type]
        self.assertEqual(one.transport.sent, [])
        await next_turn()
        self.assertEqual(one.transport.sent, [b"abc"])
        self.assertEqual(two.transport.sent, [b"z"])
        self.assertEqual(self.writer.queued, {})

    async def test_a_later_turn_sends_again(self) -> None:
        one = FakeProtocol(FakeTCP())
        self.writer.write(one, b"a")  # type: ignore[arg-type]
        await next_turn()
        self.writer.write(one, b"b")  # type: ignore[arg-type]
        await next_turn()
        self.assertEqual(one.transport.sent, [b"a", b"b"])

    async def test_flush_one_sends_that_connections_frames_first(self) -> None:
        one, two = FakeProtocol(FakeTCP()), FakeProtocol(FakeTCP())
        self.writer.write(one, b"event")  # type: ignore[arg-type]
        self.writer.write(two, b"other")  # type: ignore[arg-type]
        self.writer.flush_one(one)  # type: ignore[arg-type]
        one.transport.write(b"close")  # what autobahn writes next goes after the queued frames
        self.assertEqual(one.transport.sent, [b"event"])
        await next_turn()
        self.assertEqual(one.transport.sent, [b"event"])
        self.assertEqual(two.transport.sent, [b"other"])


class SendNowTests(TestCase):
    def test_the_kernel_gets_it_at_once(self) -> None:
        transport = FakeTCP()
        _send_now(transport, b"frame")
        self.assertEqual((transport.sent, transport.written), ([b"frame"], []))

    def test_what_the_kernel_does_not_take_goes_to_the_transport(self) -> None:
        transport = FakeTCP(takes=2)
        _send_now(transport, b"frame")
        self.assertEqual((transport.sent, transport.written), ([b"fr"], [b"ame"]))

    def test_bytes_already_buffered_keep_their_place(self) -> None:
        transport = FakeTCP()
        transport.write(b"earlier")
        _send_now(transport, b"frame")
        self.assertEqual((transport.sent, transport.written), ([], [b"earlier", b"frame"]))

    def test_a_lost_or_closing_connection_is_left_to_the_transport(self) -> None:
        lost = FakeTCP(lost=True)
        _send_now(lost, b"frame")
        self.assertEqual(lost.written, [b"frame"])
        closing = FakeTCP()
        closing.disconnecting = True
        _send_now(closing, b"frame")
        self.assertEqual((closing.sent, closing.written), ([], [b"frame"]))


class BurstOverTCPTests(ServerTestCase):
    """A burst of broadcasts in one reactor turn over real TCP: larger than the socket takes at once."""

    async def test_every_event_of_a_burst_arrives_once_and_in_order(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        self.serve(app)
        received: list[int] = []
        client = await self.connect()
        await client.subscribe(lambda event: received.append(event["n"]), "com.example.burst")
        other: list[int] = []
        second = await self.connect("msgpack")
        await second.subscribe(lambda event: other.append(event["n"]), "com.example.burst")
        count = 3000
        for n in range(count):  # ~1.5 MB for each subscriber, written in this one turn
            app.broadcast("com.example.burst", {"n": n, "pad": "x" * 500})
        await wait_until(lambda: len(received) == count and len(other) == count, timeout=10)
        self.assertEqual(received, list(range(count)))
        self.assertEqual(other, list(range(count)))


class BrokenTCP(FakeTCP):
    def writeSomeData(self, data: bytes) -> Any:
        raise RuntimeError("broken transport")


class TurnWriterFailureTests(TestCase):
    async def test_a_failing_connection_does_not_keep_the_others_frames(self) -> None:
        writer = _TurnWriter()
        broken, fine = FakeProtocol(BrokenTCP()), FakeProtocol(FakeTCP())
        writer.write(broken, b"a")  # type: ignore[arg-type]
        writer.write(fine, b"b")  # type: ignore[arg-type]
        await next_turn()
        self.assertEqual(fine.transport.sent, [b"b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
