"""Unit tests for the transport limits: origins, permessage-deflate, HELLO timeout, outgoing sizes and
slow consumers, shutdown (in memory, with twisted.internet.testing fakes and a Clock)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from autobahn.wamp import message
from autobahn.websocket.compress import PerMessageDeflateOffer
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._autobahn_internals import object_serializer
from sandstone._limits import Limits, host_allowed, origin_allowed
from sandstone._publication import Publication
from sandstone._transport import WampServerFactory, WampServerProtocol
from tests.support import websocket_closes, websocket_payloads


class OriginTests(SynchronousTestCase):
    def test_no_origin_is_allowed(self) -> None:
        self.assertTrue(origin_allowed(None, "example.com"))
        self.assertTrue(origin_allowed("", "example.com"))

    def test_own_origin_is_allowed(self) -> None:
        self.assertTrue(origin_allowed("http://localhost:8080", "localhost:8080"))
        self.assertTrue(origin_allowed("https://Example.com", "example.com"))
        self.assertTrue(origin_allowed("https://example.com", "example.com:443"))

    def test_websocket_origins_of_the_servers_own_host_are_allowed(self) -> None:
        # non-browser clients such as python wampy send their own URL as the origin
        self.assertTrue(origin_allowed("ws://127.0.0.1:8080", "127.0.0.1:8080"))
        self.assertTrue(origin_allowed("wss://example.com", "example.com:443"))
        self.assertTrue(origin_allowed("ws://example.com:80", "example.com"))
        self.assertFalse(origin_allowed("ws://127.0.0.1:8081", "127.0.0.1:8080"))
        self.assertFalse(origin_allowed("ws://evil.example", "127.0.0.1:8080"))
        self.assertFalse(origin_allowed("wss://example.com", "example.com:80"))
        self.assertFalse(origin_allowed("ftp://example.com", "example.com"))

    def test_foreign_and_null_origins_are_refused(self) -> None:
        self.assertFalse(origin_allowed("http://evil.example", "localhost:8080"))
        self.assertFalse(origin_allowed("http://localhost:9999", "localhost:8080"))
        self.assertFalse(origin_allowed("null", "localhost:8080"))
        self.assertFalse(origin_allowed("http://localhost:8080", None))

    def test_patterns(self) -> None:
        patterns = ["https://*.example.com", "http://localhost:*"]
        self.assertTrue(origin_allowed("https://app.example.com", "api.internal", patterns))
        self.assertTrue(origin_allowed("http://localhost:5173", "api.internal", patterns))
        self.assertFalse(origin_allowed("http://app.example.com", "api.internal", patterns))
        self.assertFalse(origin_allowed("https://example.com.evil", "api.internal", patterns))
        self.assertTrue(origin_allowed("null", "api.internal", ["null"]))
        self.assertTrue(origin_allowed("http://anything", "api.internal", ["*"]))


def factory(clock: Clock | None = None, **limits: Any) -> WampServerFactory:
    # autobahn's own timers run on the global reactor: none in these in-memory tests
    limits.setdefault("open_handshake_timeout", 0)
    app = Sandstone(anonymous=True, open_uris=True, limits=Limits(**limits))
    return WampServerFactory(app.router, limits=app.limits, clock=clock or Clock())


def request(origin: str = "", host: str = "localhost:8080") -> Any:
    return SimpleNamespace(
        protocols=["wamp.2.json"], origin=origin, headers={"host": host, "origin": origin} if origin else {}
    )


class ProtocolOptionTests(SynchronousTestCase):
    """autobahn's options live on the connection's class, not in every connection's ``__dict__``."""

    def test_options_are_not_copied_into_connections(self) -> None:
        f = factory(max_frame_size=4096)
        connection = Connection(f)
        copied = set(WampServerProtocol.CONFIG_ATTRS) & set(vars(connection.protocol))
        self.assertEqual(copied, set())
        self.assertEqual(connection.protocol.maxFramePayloadSize, 4096)
        self.assertIsInstance(connection.protocol, WampServerProtocol)

    def test_options_set_later_apply_to_new_connections(self) -> None:
        f = factory(auto_ping_interval=0)
        before = Connection(f)
        f.setProtocolOptions(autoPingInterval=7.5, maxMessagePayloadSize=1234)
        after = Connection(f)
        self.assertEqual((after.protocol.autoPingInterval, after.protocol.maxMessagePayloadSize), (7.5, 1234))
        self.assertEqual(before.protocol.autoPingInterval, 0)

    def test_a_connection_may_override_an_option_for_itself(self) -> None:
        f = factory()
        one, two = Connection(f), Connection(f)
        one.protocol.maxMessagePayloadSize = 99
        self.assertEqual(one.protocol.maxMessagePayloadSize, 99)
        self.assertEqual(two.protocol.maxMessagePayloadSize, f.maxMessagePayloadSize)


class AdmitTests(SynchronousTestCase):
    def test_foreign_origin_gets_403(self) -> None:
        f = factory()
        deny = self.assertRaises(ConnectionDeny, f.admit, request("http://evil.example"))
        self.assertEqual(deny.code, 403)
        self.assertEqual(f.stats["origins_refused"], 1)
        f.admit(request("http://localhost:8080"))

    def test_beyond_max_connections_gets_503(self) -> None:
        f = factory(max_connections=2)
        f.connections.update({object(), object()})  # type: ignore[arg-type]
        f.admit(request())  # the connection being admitted is one of the two
        f.connections.add(object())  # type: ignore[arg-type]
        deny = self.assertRaises(ConnectionDeny, f.admit, request())
        self.assertEqual(deny.code, 503)


class DeflateTests(SynchronousTestCase):
    def test_accepts_with_our_window_and_memory_level(self) -> None:
        f = factory(deflate_window_bits=11, deflate_memory_level=4)
        accept = f.accept_deflate([PerMessageDeflateOffer(accept_max_window_bits=True)])
        self.assertIsNotNone(accept)
        self.assertEqual((accept.request_max_window_bits, accept.window_bits, accept.mem_level), (11, 11, 4))
        self.assertIn("client_max_window_bits=11", accept.get_extension_string())

    def test_keeps_a_smaller_window_the_client_asked_for(self) -> None:
        f = factory(deflate_window_bits=11)
        offer = PerMessageDeflateOffer(accept_max_window_bits=True, request_max_window_bits=9)
        self.assertEqual(f.accept_deflate([offer]).window_bits, 9)

    def test_refuses_a_client_that_cannot_bound_its_window(self) -> None:
        f = factory(deflate_window_bits=11)
        self.assertIsNone(f.accept_deflate([PerMessageDeflateOffer(accept_max_window_bits=False)]))

    def test_zero_bits_disables_compression(self) -> None:
        f = factory(deflate_window_bits=0)
        self.assertIsNone(f.accept_deflate([PerMessageDeflateOffer()]))


class Connection:
    """A WampServerProtocol on a StringTransport, open and speaking wamp.2.json."""

    def __init__(self, f: WampServerFactory) -> None:
        self.protocol: WampServerProtocol = f.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.onConnect(request())
        self.protocol.state = self.protocol.STATE_OPEN
        self.protocol.onOpen()
        self.serializer = object_serializer(f.serializers["wamp.2.json"])

    def send(self, raw: list[Any]) -> None:
        self.protocol.onMessage(self.serializer.serialize(raw), False)

    @property
    def sent(self) -> list[bytes]:
        """The payloads of the WebSocket messages the server wrote."""
        return websocket_payloads(self.transport.value())

    def received(self) -> list[list[Any]]:
        return [self.serializer.unserialize(p)[0] for p in websocket_payloads(self.transport.value())]

    def hello(self) -> None:
        self.send([message.Hello.MESSAGE_TYPE, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}])


class HelloTimeoutTests(SynchronousTestCase):
    def test_no_hello_in_time_aborts_and_closes(self) -> None:
        clock = Clock()
        f = factory(clock, hello_timeout=2.0)
        connection = Connection(f)
        closes: list[Any] = []
        connection.protocol.sendClose = lambda *a, **kw: closes.append(a)  # type: ignore[method-assign]
        clock.advance(1.9)
        self.assertEqual(connection.sent, [])
        clock.advance(0.2)
        self.assertEqual(
            connection.received()[0][:2],
            [message.Abort.MESSAGE_TYPE, {"message": "no session opened within 2 s of connecting"}],
        )
        self.assertEqual(connection.received()[0][2], "sandstone.error.hello_timeout")
        self.assertEqual(len(closes), 1)
        self.assertEqual(f.stats["hello_timeouts"], 1)

    def test_a_welcomed_session_has_no_timer(self) -> None:
        clock = Clock()
        connection = Connection(factory(clock, hello_timeout=2.0))
        connection.hello()
        self.assertEqual(connection.received()[0][0], message.Welcome.MESSAGE_TYPE)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_goodbye_starts_a_new_timer_for_the_next_session(self) -> None:
        clock = Clock()
        connection = Connection(factory(clock, hello_timeout=2.0))
        connection.hello()
        connection.send([message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.close_realm"])
        self.assertEqual(len(clock.getDelayedCalls()), 1)


class OutgoingTests(SynchronousTestCase):
    def test_oversize_event_is_skipped_for_that_subscriber_and_counted(self) -> None:
        f = factory(max_message_size=1000)
        connection = Connection(f)
        connection.hello()
        connection.send([message.Subscribe.MESSAGE_TYPE, 1, {}, "news"])
        before = len(connection.sent)
        f.router.publish(Publication("news", ["x" * 2000]))
        self.assertEqual(len(connection.sent), before)
        self.assertEqual(f.stats["oversize_skipped"], 1)

    def test_oversize_result_becomes_an_error(self) -> None:
        f = factory(max_message_size=1000)
        connection = Connection(f)
        connection.hello()
        connection.protocol.send_message(message.Result(7, args=["x" * 2000]))
        error = connection.received()[-1]
        self.assertEqual(
            (error[0], error[1], error[2], error[4]), (8, 48, 7, "sandstone.error.payload_too_large")
        )

    def test_slow_consumer_is_dropped_once_its_backlog_is_over_the_limit(self) -> None:
        f = factory(max_outgoing_buffer=10_000)
        connection = Connection(f)
        connection.hello()
        backlog = connection.protocol._backlog
        self.assertIs(connection.transport.producer, backlog)
        drops: list[bool] = []
        connection.protocol.dropConnection = lambda abort=False: drops.append(abort)  # type: ignore[method-assign]
        for _ in range(5):
            connection.protocol.send_message(message.Event(1, 2, args=["x" * 3000]))
        self.assertEqual(drops, [])  # not paused: the kernel takes it
        backlog.pauseProducing()
        for _ in range(3):
            connection.protocol.send_message(message.Event(1, 2, args=["x" * 3000]))
        self.assertEqual(drops, [])
        connection.protocol.send_message(message.Event(1, 2, args=["x" * 3000]))
        self.assertEqual(drops, [True])
        self.assertEqual(f.stats["slow_consumers_dropped"], 1)


class ShutdownTests(SynchronousTestCase):
    GOING_AWAY = (1001, b"server shutting down")

    def connection(self, clock: Clock | None = None) -> Connection:
        f = factory(clock)
        f.setProtocolOptions(closeHandshakeTimeout=0)  # autobahn's close timer runs on the global reactor
        return Connection(f)

    def test_closes_going_away_without_goodbye_by_default(self) -> None:
        # autobahn-js and wampy.js reconnect after a close without GOODBYE; after a GOODBYE they do not
        clock = Clock()
        connection = self.connection(clock)
        f = connection.protocol.factory
        connection.hello()
        connection.send([message.Subscribe.MESSAGE_TYPE, 1, {}, "news"])
        sent = len(connection.sent)
        f.shutdown(grace=1.0)
        self.assertEqual(websocket_closes(connection.transport.value()), [self.GOING_AWAY])
        self.assertEqual(len(connection.sent), sent)  # no GOODBYE
        self.assertEqual(f.router.sessions, {})  # the session has left the router
        f.router.publish(Publication("news", ["late"]))
        self.assertEqual(len(connection.sent), sent)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_message_after_the_close_is_not_handled(self) -> None:
        connection = self.connection()
        connection.hello()
        connection.protocol.factory.shutdown()
        before = connection.transport.value()
        connection.send([message.Subscribe.MESSAGE_TYPE, 2, {}, "news"])
        self.assertEqual(connection.transport.value(), before)
        self.assertEqual(connection.protocol.factory.router.sessions, {})

    def test_a_session_not_open_yet_is_closed_going_away(self) -> None:
        for goodbye in (False, True):
            connection = self.connection()
            connection.protocol.factory.shutdown(goodbye=goodbye)
            self.assertEqual(websocket_closes(connection.transport.value()), [self.GOING_AWAY])
            self.assertEqual(connection.sent, [])

    def test_goodbye_system_shutdown_then_close(self) -> None:
        connection = self.connection()
        f = connection.protocol.factory
        connection.hello()
        f.shutdown(grace=1.0, goodbye=True)
        goodbye = connection.received()[-1]
        self.assertEqual(
            (goodbye[0], goodbye[2]), (message.Goodbye.MESSAGE_TYPE, "wamp.close.system_shutdown")
        )
        self.assertEqual(f.router.sessions, {})
        self.assertEqual(websocket_closes(connection.transport.value()), [])
        connection.send(
            [message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.goodbye_and_out"]
        )  # the client's reply
        self.assertEqual(websocket_closes(connection.transport.value()), [self.GOING_AWAY])
        self.assertEqual(connection.received()[-1][0], message.Goodbye.MESSAGE_TYPE)  # not answered again
        self.assertEqual(len(connection.sent), 2)

    def test_goodbye_unanswered_closes_after_the_grace(self) -> None:
        clock = Clock()
        connection = self.connection(clock)
        connection.hello()
        connection.protocol.factory.shutdown(grace=1.0, goodbye=True)
        self.assertEqual(connection.received()[-1][2], "wamp.close.system_shutdown")
        clock.advance(0.9)
        self.assertEqual(websocket_closes(connection.transport.value()), [])
        clock.advance(0.2)
        self.assertEqual(websocket_closes(connection.transport.value()), [self.GOING_AWAY])


class HostTests(SynchronousTestCase):
    def test_loopback_server_answers_loopback_names_only_by_default(self) -> None:
        for host in (
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "app.localhost",
        ):
            self.assertTrue(host_allowed(host, None, "127.0.0.1"), host)
        for host in ("evil.example", "evil.example:8080", "localhost.evil.example", "10.0.0.1:8080"):
            self.assertFalse(host_allowed(host, None, "127.0.0.1"), host)
        self.assertFalse(host_allowed("evil.example", None, "::ffff:127.0.0.1"))

    def test_other_servers_answer_any_host_by_default(self) -> None:
        self.assertTrue(host_allowed("evil.example", None, "10.0.0.5"))
        self.assertTrue(host_allowed("evil.example", None, ""))

    def test_no_host_header_is_allowed(self) -> None:
        self.assertTrue(host_allowed(None, None, "127.0.0.1"))
        self.assertTrue(host_allowed("", ["example.com"], "127.0.0.1"))

    def test_patterns(self) -> None:
        patterns = ["example.com", "*.example.org", "api.internal:8443"]
        self.assertTrue(host_allowed("Example.com:8080", patterns, "10.0.0.5"))
        self.assertTrue(host_allowed("a.example.org", patterns, "127.0.0.1"))
        self.assertTrue(host_allowed("api.internal:8443", patterns))
        self.assertFalse(host_allowed("api.internal:8080", patterns))
        self.assertFalse(host_allowed("example.org", patterns))
        self.assertFalse(host_allowed("localhost", patterns, "127.0.0.1"))
        self.assertTrue(host_allowed("anything", ["*"], "127.0.0.1"))
        self.assertFalse(host_allowed("anything", [], "10.0.0.5"))
