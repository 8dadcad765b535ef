"""Tests for L{sandstone._transport}'s per-turn writer: frames of one reactor turn leave in one send, and
after an idle spell a broadcast is written as it is delivered."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._publication import Publication
from sandstone._router import Router
from sandstone._transport import WampServerFactory, _TurnWriter
from tests.support import ServerTestCase, wait_until


class RecordingTransport(StringTransport):
    """A StringTransport that keeps each write apart: ``sent`` is what each ``write`` call carried."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        super().write(data)


class BrokenTransport(StringTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("broken transport")


class FakeProtocol:
    """What the writer reads of a connection: its transport."""

    def __init__(self, transport: StringTransport | None = None) -> None:
        self.transport: Any = transport if transport is not None else RecordingTransport()


class WriterTestCase(SynchronousTestCase):
    """A writer on a fake reactor (``turns``: ``end_turn`` runs what waits for the end of the turn) and a fake
    monotonic time source (``time``), so that time passes within a turn."""

    def setUp(self) -> None:
        self.turns = Clock()
        self.time = Clock()
        self.time.advance(100.0)
        self.writer = _TurnWriter(self.turns.callLater, self.time.seconds)
        self.one, self.two = FakeProtocol(), FakeProtocol()

    def end_turn(self) -> None:
        self.turns.advance(0)

    def write(self, protocol: FakeProtocol, data: bytes) -> None:
        self.writer.write(protocol, data)  # type: ignore[arg-type]

    def sent(self, protocol: FakeProtocol) -> list[bytes]:
        sent: list[bytes] = protocol.transport.sent
        return sent


class TurnWriterTests(WriterTestCase):
    """A busy server: every frame waits for the end of the turn."""

    def setUp(self) -> None:
        super().setUp()
        self.write(FakeProtocol(), b"earlier")  # frames were sent just now: no idle spell before these turns
        self.end_turn()

    def test_frames_of_one_turn_leave_in_one_send_in_order(self) -> None:
        for frame in (b"a", b"b", b"c"):
            self.write(self.one, frame)
        self.write(self.two, b"z")
        self.assertEqual(self.sent(self.one), [])
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"abc"])
        self.assertEqual(self.sent(self.two), [b"z"])

    def test_a_later_turn_sends_again(self) -> None:
        self.write(self.one, b"a")
        self.end_turn()
        self.write(self.one, b"b")
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"a", b"b"])

    def test_flush_one_sends_that_connections_frames_first(self) -> None:
        self.write(self.one, b"event")
        self.write(self.two, b"other")
        self.writer.flush_one(self.one)  # type: ignore[arg-type]
        self.one.transport.write(b"close")  # what autobahn writes next goes after the queued frames
        self.assertEqual(self.sent(self.one), [b"event", b"close"])
        self.assertEqual(self.sent(self.two), [])
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"event", b"close"])
        self.assertEqual(self.sent(self.two), [b"other"])

    def test_a_forgotten_connection_gets_nothing_more(self) -> None:
        self.write(self.one, b"event")
        self.writer.forget(self.one)  # type: ignore[arg-type]
        self.end_turn()
        self.assertEqual(self.sent(self.one), [])

    def test_the_turn_ends_on_the_writers_reactor(self) -> None:
        self.write(self.one, b"event")
        self.assertEqual(len(self.turns.getDelayedCalls()), 1)
        self.assertEqual(self.sent(self.one), [])
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"event"])


class DirectWritingTests(WriterTestCase):
    """After an idle spell the turn's first broadcast is written as it is delivered; ``end_direct`` (after
    each broadcast) ends that, and the rest of the turn is batched."""

    def test_a_broadcast_after_an_idle_spell_is_written_as_it_is_delivered(self) -> None:
        self.write(self.one, b"event")
        self.assertEqual(self.sent(self.one), [b"event"])  # before the second subscriber's
        self.write(self.two, b"event")
        self.writer.end_direct()
        self.assertEqual(self.sent(self.two), [b"event"])
        self.end_turn()
        self.assertEqual((self.sent(self.one), self.sent(self.two)), ([b"event"], [b"event"]))

    def test_after_the_broadcast_the_rest_of_the_turn_is_batched(self) -> None:
        self.write(self.one, b"event")
        self.writer.end_direct()
        self.time.advance(self.writer.idle * 5)
        self.write(self.one, b"published")
        self.write(self.one, b"second")
        self.write(self.two, b"second")
        self.assertEqual((self.sent(self.one), self.sent(self.two)), ([b"event"], []))
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"event", b"publishedsecond"])  # one send for the rest
        self.assertEqual(self.sent(self.two), [b"second"])

    def test_a_second_frame_for_a_connection_waits_behind_its_first(self) -> None:
        self.write(self.one, b"a")
        self.write(self.one, b"b")  # (a pattern and an exact subscription)
        self.write(self.two, b"a")
        self.assertEqual((self.sent(self.one), self.sent(self.two)), ([b"a"], [b"a"]))
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"a", b"b"])

    def test_a_turn_right_after_a_send_is_batched_however_long_it_takes(self) -> None:
        # a busy server (e.g. 1000 subscribers per publish, turns back to back) keeps one send per turn
        self.write(self.one, b"a")
        self.writer.end_direct()
        self.end_turn()
        self.time.advance(self.writer.idle / 10)
        self.write(self.one, b"b")
        self.time.advance(self.writer.idle * 5)  # a long delivery
        self.write(self.two, b"b")
        self.writer.end_direct()
        self.write(self.one, b"c")
        self.assertEqual((self.sent(self.one), self.sent(self.two)), ([b"a"], []))
        self.end_turn()
        self.assertEqual((self.sent(self.one), self.sent(self.two)), ([b"a", b"bc"], [b"b"]))

    def test_the_end_of_a_batched_turn_counts_as_a_send(self) -> None:
        self.write(self.two, b"earlier")  # written straight away: a send just now
        self.writer.end_direct()
        self.end_turn()
        self.write(self.one, b"a")  # busy: batched
        self.time.advance(1.0)  # a long turn
        self.end_turn()
        self.write(self.one, b"b")  # no time passed since the end of that turn: busy
        self.assertEqual(self.sent(self.one), [b"a"])
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"a", b"b"])

    def test_a_turn_after_an_idle_spell_writes_straight_away_again(self) -> None:
        self.write(self.one, b"a")
        self.end_turn()  # the end of the turn ends the straight writing too
        self.write(self.two, b"b")
        self.assertEqual(self.sent(self.two), [])
        self.end_turn()
        self.time.advance(self.writer.idle)
        self.write(self.one, b"c")
        self.assertEqual(self.sent(self.one), [b"a", b"c"])
        self.end_turn()

    def test_a_failing_connection_does_not_stop_the_broadcast(self) -> None:
        self.write(FakeProtocol(BrokenTransport()), b"a")
        self.write(self.one, b"a")
        self.assertEqual(self.sent(self.one), [b"a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.end_turn()


class TurnWriterFailureTests(WriterTestCase):
    def test_a_failing_connection_does_not_keep_the_others_frames(self) -> None:
        self.write(FakeProtocol(), b"earlier")
        self.end_turn()  # busy: the frames wait for the end of the turn
        self.write(FakeProtocol(BrokenTransport()), b"a")
        self.write(self.one, b"b")
        self.end_turn()
        self.assertEqual(self.sent(self.one), [b"b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FactoryWriterTests(SynchronousTestCase):
    """Each factory has its own writer, on the factory's reactor, cued by its router after each
    publication."""

    def factory(self, router: Router, turns: Clock) -> WampServerFactory:
        time = Clock()
        time.advance(100.0)
        return WampServerFactory(router, clock=turns, monotonic=time.seconds)

    def test_each_factory_ends_its_turns_on_its_own_reactor(self) -> None:
        turns_a, turns_b = Clock(), Clock()
        router = Router(open_uris=True, anonymous=True)
        a, b = self.factory(router, turns_a), self.factory(Router(), turns_b)
        self.assertIsNot(a.writer, b.writer)
        one, two = FakeProtocol(), FakeProtocol()
        a.writer.write(one, b"x")  # type: ignore[arg-type]
        a.writer.end_direct()
        a.writer.write(one, b"y")  # type: ignore[arg-type]
        b.writer.write(two, b"x")  # type: ignore[arg-type]
        b.writer.end_direct()
        b.writer.write(two, b"y")  # type: ignore[arg-type]
        turns_b.advance(0)
        self.assertEqual((one.transport.sent, two.transport.sent), ([b"x"], [b"x", b"y"]))
        turns_a.advance(0)
        self.assertEqual(one.transport.sent, [b"x", b"y"])

    def test_a_publication_ends_the_straight_writing_of_every_factory_of_its_router(self) -> None:
        router = Router(open_uris=True, anonymous=True)
        turns = Clock()
        factories = [self.factory(router, turns), self.factory(router, turns)]
        ones = [FakeProtocol(), FakeProtocol()]
        twos = [FakeProtocol(), FakeProtocol()]
        for factory, one in zip(factories, ones, strict=True):
            factory.writer.write(one, b"event")  # type: ignore[arg-type]  (after an idle spell: at once)
        router.publish(Publication("com.example.news"))
        for factory, two in zip(factories, twos, strict=True):
            factory.writer.write(two, b"next")  # type: ignore[arg-type]
        self.assertEqual([two.transport.sent for two in twos], [[], []])
        turns.advance(0)
        self.assertEqual([two.transport.sent for two in twos], [[b"next"], [b"next"]])


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
