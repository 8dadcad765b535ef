"""Tests for L{sandstone._transport}'s per-turn writer: frames of one reactor turn leave in one send, and
after an idle spell a broadcast is written as it is delivered."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import main, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sandstone import Sandstone
from sandstone._router import Router
from sandstone._transport import WampServerFactory, _send_now, _turn, _TurnWriter
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


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def next_turn() -> Any:
    return deferLater(reactor, 0, lambda: None)


class TurnWriterTests(TestCase):
    """A busy server: every frame waits for the end of the turn."""

    def setUp(self) -> None:
        self.writer = _TurnWriter(FakeClock())
        self.writer.last_flush = 100.0  # frames were sent just now: no idle spell before these turns

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


class DirectWritingTests(TestCase):
    """After an idle spell the turn's first broadcast is written as it is delivered; ``end_direct`` (after
    each broadcast) ends that, and the rest of the turn is batched."""

    def setUp(self) -> None:
        self.clock = FakeClock()
        self.writer = _TurnWriter(self.clock)
        self.one, self.two = FakeProtocol(FakeTCP()), FakeProtocol(FakeTCP())

    async def test_a_broadcast_after_an_idle_spell_is_written_as_it_is_delivered(self) -> None:
        self.writer.write(self.one, b"event")  # type: ignore[arg-type]
        self.assertEqual(self.one.transport.sent, [b"event"])  # before the second subscriber's
        self.writer.write(self.two, b"event")  # type: ignore[arg-type]
        self.writer.end_direct()
        self.assertEqual(self.two.transport.sent, [b"event"])
        self.assertEqual((self.writer.queued, self.writer.last_flush), ({}, 100.0))
        await next_turn()

    async def test_after_the_broadcast_the_rest_of_the_turn_is_batched(self) -> None:
        self.writer.write(self.one, b"event")  # type: ignore[arg-type]
        self.writer.end_direct()
        self.clock.now += self.writer.idle * 5
        self.writer.write(self.one, b"published")  # type: ignore[arg-type]
        self.writer.write(self.one, b"second")  # type: ignore[arg-type]
        self.writer.write(self.two, b"second")  # type: ignore[arg-type]
        self.assertEqual((self.one.transport.sent, self.two.transport.sent), ([b"event"], []))
        await next_turn()
        self.assertEqual(self.one.transport.sent, [b"event", b"publishedsecond"])  # one send for the rest
        self.assertEqual(self.two.transport.sent, [b"second"])
        self.assertFalse(self.writer.scheduled)

    async def test_a_second_frame_for_a_connection_waits_behind_its_first(self) -> None:
        self.writer.write(self.one, b"a")  # type: ignore[arg-type]
        self.writer.write(self.one, b"b")  # type: ignore[arg-type]  (a pattern and an exact subscription)
        self.writer.write(self.two, b"a")  # type: ignore[arg-type]
        self.assertEqual((self.one.transport.sent, self.two.transport.sent), ([b"a"], [b"a"]))
        await next_turn()
        self.assertEqual(self.one.transport.sent, [b"a", b"b"])

    async def test_a_turn_right_after_a_send_is_batched_however_long_it_takes(self) -> None:
        # a busy server (e.g. 1000 subscribers per publish, turns back to back) keeps one send per turn
        self.writer.write(self.one, b"a")  # type: ignore[arg-type]
        self.writer.end_direct()
        await next_turn()
        self.clock.now += self.writer.idle / 10
        self.writer.write(self.one, b"b")  # type: ignore[arg-type]
        self.clock.now += self.writer.idle * 5  # a long delivery
        self.writer.write(self.two, b"b")  # type: ignore[arg-type]
        self.writer.end_direct()
        self.writer.write(self.one, b"c")  # type: ignore[arg-type]
        self.assertEqual((self.one.transport.sent, self.two.transport.sent), ([b"a"], []))
        await next_turn()
        self.assertEqual((self.one.transport.sent, self.two.transport.sent), ([b"a", b"bc"], [b"b"]))

    async def test_the_end_of_a_batched_turn_counts_as_a_send(self) -> None:
        self.writer.last_flush = self.clock.now
        self.writer.write(self.one, b"a")  # type: ignore[arg-type]
        self.clock.now += 1.0
        await next_turn()
        self.assertEqual(self.writer.last_flush, 101.0)
        self.writer.write(self.one, b"b")  # type: ignore[arg-type]  (no time passed: busy)
        self.assertEqual(self.one.transport.sent, [b"a"])
        await next_turn()
        self.assertEqual(self.one.transport.sent, [b"a", b"b"])

    async def test_a_turn_after_an_idle_spell_writes_straight_away_again(self) -> None:
        self.writer.write(self.one, b"a")  # type: ignore[arg-type]
        await next_turn()  # the end of the turn ends the straight writing too
        self.assertIsNone(self.writer.direct)
        self.clock.now += self.writer.idle
        self.writer.write(self.one, b"b")  # type: ignore[arg-type]
        self.assertEqual(self.one.transport.sent, [b"a", b"b"])
        await next_turn()

    async def test_a_failing_connection_does_not_stop_the_broadcast(self) -> None:
        broken = FakeProtocol(BrokenTCP())
        self.writer.write(broken, b"a")  # type: ignore[arg-type]
        self.writer.write(self.one, b"a")  # type: ignore[arg-type]
        self.assertEqual(self.one.transport.sent, [b"a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        await next_turn()

    def test_the_factory_hooks_the_writer_to_its_router(self) -> None:
        router = Router(open_uris=True, anonymous=True)
        WampServerFactory(router)
        self.assertEqual(router.delivered, _turn.end_direct)


class RestBroadcastOverTCPTests(ServerTestCase):
    async def test_a_rest_broadcast_reaches_the_subscriber_before_the_handler_returns(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        peeked: list[bytes] = []
        client_socket: list[socket.socket] = []

        @app.route("/api/announce", methods=["POST"])
        def announce(request: Any) -> str:
            app.broadcast("com.example.news", "from rest")
            # still inside the request: the EVENT is in the subscriber's socket already
            [sock] = client_socket
            peeked.append(sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            return "announced"

        self.serve(app)
        client = await self.connect()
        await client.record("com.example.news")
        client_socket.append(client._transport.transport.socket)
        await deferLater(reactor, 0.01, lambda: None)  # the server's last flush is over the busy time
        response = await self.http().post(f"{self.base_url}/api/announce", data=b"")
        self.assertEqual(await response.text(), "announced")
        self.assertIn(b'"from rest"', peeked[0])
        self.assertTrue(peeked[0].startswith(b"\x81"))  # a text frame: [36, ...]
        await wait_until(lambda: client.received["com.example.news"], timeout=2.0)
        self.assertEqual(client.received["com.example.news"][0].args, ["from rest"])


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
        writer = _TurnWriter(FakeClock())
        writer.last_flush = 100.0  # busy: the frames wait for the end of the turn
        broken, fine = FakeProtocol(BrokenTCP()), FakeProtocol(FakeTCP())
        writer.write(broken, b"a")  # type: ignore[arg-type]
        writer.write(fine, b"b")  # type: ignore[arg-type]
        await next_turn()
        self.assertEqual(fine.transport.sent, [b"b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
