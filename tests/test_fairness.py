"""Fairness of the WAMP transport: one read's messages get a time slice; the rest wait for the next reactor
turns, in order, while reading from that connection pauses (``Limits.message_time_slice``)."""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp import message
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._limits import Limits
from sandstone._transport import WampServerFactory
from tests.support import websocket_payloads
from tests.test_web_handoff import upgrade_request
from tests.test_web_handoff import wamp_frame as client_frame


class Ticking:
    """A monotonic clock that moves on by ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Reactor(Clock):
    """A fake reactor whose ``turn`` runs the calls due when it starts, as a real reactor's turn does
    (``Clock.advance`` also runs those they schedule for the same time)."""

    def turn(self) -> None:
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.func(*call.args, **call.kw)


class TimeSliceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Reactor()
        self.ticking = Ticking(0.001)  # every message handled costs at least a millisecond, here
        # no timers of autobahn's own (they would run on the global reactor)
        limits = Limits(message_time_slice=0.005, open_handshake_timeout=0, auto_ping_interval=0)
        app = Sandstone(anonymous=True, open_uris=True, limits=limits)
        self.factory = WampServerFactory(
            app.router, limits=app.limits, clock=self.clock, monotonic=self.ticking
        )

    def connect(self) -> tuple[Any, StringTransport]:
        """A connection past its WebSocket handshake and WELCOME."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade_request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value())
        transport.clear()
        protocol.dataReceived(client_frame([1, "realm1", {"roles": {"publisher": {}}}]))
        self.clock.advance(0)
        self.assertEqual(
            json.loads(websocket_payloads(transport.value())[0])[0], message.Welcome.MESSAGE_TYPE
        )
        transport.clear()
        return protocol, transport

    def acknowledged(self, transport: StringTransport) -> list[int]:
        """The request ids of the PUBLISHED answers written so far."""
        self.clock.advance(0)  # the end of the turn: the per-turn writer sends
        answers = [json.loads(p) for p in websocket_payloads(transport.value())]
        return [a[1] for a in answers if a[0] == message.Published.MESSAGE_TYPE]

    def test_a_read_beyond_its_slice_waits_in_order_and_pauses_reading(self) -> None:
        protocol, transport = self.connect()
        self.connect()  # another connection sends too (its HELLO): connections are sliced
        frames = b"".join(client_frame([16, n, {"acknowledge": True}, "news", [n]]) for n in range(1, 21))
        protocol.dataReceived(frames)
        waiting = len(protocol._inbox or ())
        self.assertTrue(0 < waiting < 20, waiting)
        self.assertEqual(transport.producerState, "paused")
        turns = 0
        while protocol._inbox is not None:
            self.clock.turn()
            turns += 1
            self.assertLess(turns, 20)
        self.assertGreater(turns, 1)  # one slice per turn
        self.assertEqual(self.acknowledged(transport), list(range(1, 21)))
        self.assertEqual(transport.producerState, "producing")

    def test_other_connections_are_served_while_one_has_a_backlog(self) -> None:
        flooder, flooder_transport = self.connect()
        other, other_transport = self.connect()
        flooder.dataReceived(
            b"".join(client_frame([16, n, {"acknowledge": True}, "flood", [n]]) for n in range(1, 41))
        )
        self.assertIsNotNone(flooder._inbox)
        other.dataReceived(client_frame([16, 1, {"acknowledge": True}, "news", ["hi"]]))
        self.clock.turn()
        self.assertIsNotNone(flooder._inbox)  # the flooder still waits
        self.assertEqual(self.acknowledged(other_transport), [1])
        while flooder._inbox is not None:
            self.clock.advance(0)
        self.assertEqual(self.acknowledged(flooder_transport), list(range(1, 41)))

    def test_a_connection_lost_with_a_backlog_drops_it(self) -> None:
        protocol, transport = self.connect()
        self.connect()
        protocol.dataReceived(
            b"".join(client_frame([16, n, {"acknowledge": True}, "news", [n]]) for n in range(1, 21))
        )
        self.assertIsNotNone(protocol._inbox)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(protocol._inbox)
        self.clock.advance(0)  # the scheduled turn finds nothing to do
        self.assertEqual(self.factory._backlogged, type(self.factory._backlogged)())

    def test_a_connection_sending_alone_is_not_sliced(self) -> None:
        protocol, transport = self.connect()
        frames = b"".join(client_frame([16, n, {"acknowledge": True}, "news", [n]]) for n in range(1, 21))
        protocol.dataReceived(frames)
        self.assertIsNone(protocol._inbox)
        self.assertEqual(self.acknowledged(transport), list(range(1, 21)))
        # another connection's message: slicing from the next read on, for a while
        self.connect()
        protocol.dataReceived(frames.replace(b'"news"', b'"more"'))
        self.assertIsNotNone(protocol._inbox)
        while protocol._inbox is not None:
            self.clock.turn()
        self.ticking.now += WampServerFactory.CONTENTION  # nobody else spoke since
        protocol.dataReceived(frames)
        self.assertIsNone(protocol._inbox)

    def test_no_slice(self) -> None:
        self.factory.limits = Limits(message_time_slice=0, open_handshake_timeout=0, auto_ping_interval=0)
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"".join(client_frame([16, n, {"acknowledge": True}, "news", [n]]) for n in range(1, 21))
        )
        self.assertIsNone(protocol._inbox)
        self.assertEqual(self.acknowledged(transport), list(range(1, 21)))
