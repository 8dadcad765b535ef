"""Unit tests of the graceful shutdown service (``GracefulShutdown``, ``app.shutdown_service``), in memory: by
default every WebSocket is closed with 1001 and no GOODBYE, so that clients reconnect; ``goodbye=True`` says
GOODBYE ``wamp.close.system_shutdown`` first."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._autobahn_internals import object_serializer
from sandstone._limits import Limits
from sandstone._web import GracefulShutdown
from tests.support import open_websocket, websocket_closes, websocket_payloads


class Node:
    """An app with one open WAMP session on an in-memory WebSocket, and its shutdown service."""

    def __init__(self, goodbye: bool = False, timeout: float = 5.0) -> None:
        # no WebSocket timers of autobahn's own (they run on the global reactor)
        limits = Limits(open_handshake_timeout=0, auto_ping_interval=0)
        self.app = Sandstone(anonymous=True, open_uris=True, limits=limits)
        self.site = self.app.site()
        _path, self.factory = self.site.websocket
        self.factory.setProtocolOptions(closeHandshakeTimeout=0)
        self.clock = Clock()
        self.shutdown = GracefulShutdown(self.app, self.site, timeout, self.clock, goodbye=goodbye)
        self.shutdown.startService()
        self.protocol, self.transport = open_websocket(self.factory)
        self.json = object_serializer(self.factory.serializers["wamp.2.json"])
        self.send([message.Hello.MESSAGE_TYPE, "realm1", {"roles": {"subscriber": {}}}])

    def send(self, raw: list[Any]) -> None:
        self.protocol.onMessage(self.json.serialize(raw), False)

    def received(self) -> list[list[Any]]:
        return [self.json.unserialize(p)[0] for p in websocket_payloads(self.transport.value())]

    def closes(self) -> list[tuple[int, bytes]]:
        return websocket_closes(self.transport.value())

    def lost(self) -> None:
        """The TCP connection is closed."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class GracefulShutdownTests(SynchronousTestCase):
    def node(self, goodbye: bool = False, timeout: float = 5.0) -> Node:
        node = Node(goodbye, timeout)

        def no_timers_left() -> None:  # the factory's clock is the global reactor
            left = [
                call
                for call in reactor.getDelayedCalls()
                if getattr(call.func, "__self__", None) is node.protocol
            ]
            self.assertEqual(left, [])

        self.addCleanup(no_timers_left)
        return node

    def test_closes_websockets_going_away_without_goodbye_by_default(self) -> None:
        node = self.node()
        self.assertEqual(node.received()[0][0], message.Welcome.MESSAGE_TYPE)
        with capturedLogs() as events:
            stopped = node.shutdown.stopService()
        self.assertEqual(node.closes(), [(1001, b"server shutting down")])
        self.assertEqual([m[0] for m in node.received()], [message.Welcome.MESSAGE_TYPE])  # no GOODBYE
        self.assertEqual(node.app.router.sessions, {})
        self.assertIn(
            "shutting down: closing 1 connection(s), 1001 going away",
            [event["log_format"].format(**event) for event in events if event["log_level"] == LogLevel.info],
        )
        self.assertNoResult(stopped)
        node.lost()  # the client answered the close
        node.clock.advance(0.05)
        self.successResultOf(stopped)

    def test_goodbye_option_says_goodbye_system_shutdown_first(self) -> None:
        node = self.node(goodbye=True)
        stopped = node.shutdown.stopService()
        goodbye = node.received()[-1]
        self.assertEqual(
            (goodbye[0], goodbye[2]), (message.Goodbye.MESSAGE_TYPE, "wamp.close.system_shutdown")
        )
        self.assertEqual(node.closes(), [])
        node.send([message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.goodbye_and_out"])  # the client's answer
        self.assertEqual(node.closes(), [(1001, b"server shutting down")])
        node.lost()
        node.clock.advance(0.05)
        self.successResultOf(stopped)

    def test_connections_still_open_after_the_timeout_are_cut_off(self) -> None:
        for goodbye in (False, True):
            node = self.node(goodbye=goodbye, timeout=2.0)
            stopped = node.shutdown.stopService()
            node.clock.advance(1.0)
            node.clock.pump([0.05] * 19)
            self.assertNoResult(stopped)
            node.clock.pump([0.05] * 2)
            self.successResultOf(stopped)
            self.assertTrue(node.transport.disconnecting)
            node.lost()


class ShutdownServiceTests(SynchronousTestCase):
    def test_shutdown_service_closes_without_goodbye_unless_asked(self) -> None:
        app = Sandstone()
        site = app.site()
        default = app.shutdown_service(site, 3.0)
        self.assertEqual((default.site, default.timeout, default.goodbye), (site, 3.0, False))
        self.assertTrue(app.shutdown_service(site, goodbye=True).goodbye)
