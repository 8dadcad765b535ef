"""Tests for sandstone._ratelimit (token buckets) and the PUBLISH/CALL/SUBSCRIBE rate limits, whose buckets
belong to the connection."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message, role
from autobahn.wamp.exception import ApplicationError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone, Session
from sandstone._autobahn_internals import object_serializer
from sandstone._limits import Limits
from sandstone._ratelimit import SessionRates, TokenBucket
from sandstone._transport import WampServerFactory, WampServerProtocol
from sandstone.testing import TestClient
from tests.support import open_websocket, websocket_payloads

ERROR = 8
WELCOME = message.Welcome.MESSAGE_TYPE
PUBLISH = message.Publish.MESSAGE_TYPE
PUBLISHED = message.Published.MESSAGE_TYPE
SUBSCRIBE = message.Subscribe.MESSAGE_TYPE


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=2.0, burst=3, clock=clock.seconds)
        self.assertEqual([bucket.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)  # one token back
        self.assertEqual([bucket.allow(), bucket.allow()], [True, False])
        clock.advance(10)  # refills up to the burst only
        self.assertEqual([bucket.allow() for _ in range(4)], [True, True, True, False])

    def test_zero_rate_is_unlimited(self) -> None:
        bucket = TokenBucket(rate=0, burst=1, clock=Clock().seconds)
        self.assertTrue(all(bucket.allow() for _ in range(1000)))


def limited_app(clock: Clock, **limits: float) -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=True, limits=Limits(**limits))  # type: ignore[arg-type]
    app.router.clock = clock.seconds

    @app.procedure("com.example.echo")
    def echo(value: object) -> object:
        return value

    return app


class SessionRateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.app = limited_app(self.clock, publish_rate=1.0, publish_burst=2, call_rate=1.0, call_burst=1)
        self.client = TestClient(self.app)

    def test_acknowledged_publish_over_the_rate_gets_rate_limited_and_the_session_lives(self) -> None:
        session = self.client.connect()
        session.publish("news", 1, acknowledge=True)
        session.publish("news", 2, acknowledge=True)
        error = self.assertRaises(ApplicationError, session.publish, "news", 3, acknowledge=True)
        self.assertEqual(error.error, "sandstone.error.rate_limited")
        self.assertEqual(self.app.router.stats["rate_limited"], 1)
        self.clock.advance(1.0)
        self.assertIsInstance(session.publish("news", 4, acknowledge=True), int)

    def test_unacknowledged_publish_over_the_rate_is_dropped_and_counted(self) -> None:
        reader = self.client.connect().subscribe("news")
        session = self.client.connect()
        for n in range(5):
            session.publish("news", n)
        self.assertEqual(reader.payloads, [0, 1])
        self.assertEqual(self.app.router.stats["rate_limited_dropped"], 3)
        self.assertNotIn(ERROR, [m.MESSAGE_TYPE for m in session.messages])
        self.clock.advance(1.0)
        session.publish("news", "again")
        self.assertEqual(reader.payloads, [0, 1, "again"])

    def test_call_over_the_rate_gets_rate_limited(self) -> None:
        session = self.client.connect()
        self.assertEqual(self.successResultOf(session.call("com.example.echo", 1)), 1)
        failure = self.failureResultOf(session.call("com.example.echo", 2), ApplicationError)
        self.assertEqual(failure.value.error, "sandstone.error.rate_limited")
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(session.call("com.example.echo", 3)), 3)

    def test_buckets_are_per_session(self) -> None:
        first, second = self.client.connect(), self.client.connect()
        self.successResultOf(first.call("com.example.echo", 1))
        self.assertEqual(self.successResultOf(second.call("com.example.echo", 2)), 2)


class SessionRatesTests(SynchronousTestCase):
    def test_each_bucket_follows_its_limits(self) -> None:
        clock = Clock()
        limits = Limits(
            publish_rate=100.0,
            publish_burst=1,
            call_rate=100.0,
            call_burst=2,
            subscribe_rate=1.0,
            subscribe_burst=3,
        )
        rates = SessionRates(limits, clock.seconds)
        self.assertEqual([rates.publish.allow() for _ in range(2)], [True, False])
        self.assertEqual([rates.call.allow() for _ in range(3)], [True, True, False])
        self.assertEqual([rates.subscribe.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(1.0)
        self.assertEqual([rates.subscribe.allow(), rates.subscribe.allow()], [True, False])

    def test_publish_and_call_are_not_capped_by_default(self) -> None:
        rates = SessionRates(Limits(), Clock().seconds)
        self.assertTrue(all(rates.publish.allow() for _ in range(10_000)))
        self.assertTrue(all(rates.call.allow() for _ in range(10_000)))
        self.assertFalse(all(rates.subscribe.allow() for _ in range(10_000)))  # SUBSCRIBE keeps its cap

    def test_a_bucket_keeps_its_tokens_between_uses(self) -> None:
        rates = SessionRates(Limits(subscribe_burst=1), Clock().seconds)
        self.assertIs(rates.subscribe, rates.subscribe)
        self.assertTrue(rates.subscribe.allow())
        self.assertFalse(rates.subscribe.allow())

    def test_sessions_attached_with_the_same_rates_share_them(self) -> None:
        app = limited_app(Clock(), publish_rate=0.001, publish_burst=1)
        rates = app.router.rates()
        transports = [RecordingTransport(), RecordingTransport()]
        for transport in transports:  # as WampServerProtocol attaches each session of one connection
            publish_once(app.router.attach(transport, rates))
        self.assertIsInstance(transports[0].messages[-1], message.Published)
        self.assertEqual(transports[1].messages[-1].error, "sandstone.error.rate_limited")

    def test_sessions_attached_without_rates_get_their_own(self) -> None:
        app = limited_app(Clock(), publish_rate=0.001, publish_burst=1)
        transports = [RecordingTransport(), RecordingTransport()]
        for transport in transports:
            publish_once(app.router.attach(transport))
        self.assertEqual([type(t.messages[-1]) for t in transports], [message.Published] * 2)


class RecordingTransport:
    """A session's transport that keeps what the router sends."""

    def __init__(self) -> None:
        self.messages: list[message.Message] = []

    def send_message(self, msg: message.Message) -> None:
        self.messages.append(msg)

    def close_transport(self, reason: str) -> None:
        pass


def publish_once(session: Session) -> None:
    """HELLO, then one acknowledged PUBLISH."""
    session.on_message(message.Hello("realm1", {"publisher": role.RolePublisherFeatures()}))
    session.on_message(message.Publish(1, "news", ["x"], acknowledge=True))


class SubscribeRateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.app = limited_app(self.clock, subscribe_rate=1.0, subscribe_burst=3)
        self.client = TestClient(self.app)
        self.session = self.client.connect()
        for n in range(3):
            self.session.subscribe(f"news.{n}")

    def test_subscribe_over_the_rate_gets_rate_limited_and_the_session_lives(self) -> None:
        error = self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertEqual(error.error, "sandstone.error.rate_limited")
        self.assertIn("SUBSCRIBE", error.args[0])
        self.assertIsNone(self.session.closed)
        self.clock.advance(1.0)
        self.assertIsInstance(self.session.subscribe("news.3").id, int)

    def test_a_rate_limited_subscribe_subscribes_nothing(self) -> None:
        self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertIsNone(self.app.router.broker.subscriptions.exact("news.3"))

    def test_rate_limited_subscribes_are_counted(self) -> None:
        for _ in range(5):
            self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertEqual(self.app.router.stats["rate_limited"], 5)

    def test_rate_limited_subscribes_are_logged_once_per_session(self) -> None:
        with capturedLogs() as logs:
            for _ in range(5):
                self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        lines = [e for e in logs if "subscribe_rate" in e["log_format"]]
        logged = [(e["session_id"], e["log_level"]) for e in lines]
        self.assertEqual(logged, [(self.session.id, LogLevel.info)])

    def test_other_sessions_have_their_own_bucket(self) -> None:
        self.assertIsInstance(self.client.connect().subscribe("news.3").id, int)

    def test_zero_rate_is_unlimited(self) -> None:
        session = TestClient(limited_app(self.clock, subscribe_rate=0, subscribe_burst=1)).connect()
        for n in range(50):
            session.subscribe(f"news.{n}")
        self.assertEqual([m for m in session.messages if isinstance(m, message.Error)], [])


class ConnectionRatesTests(SynchronousTestCase):
    """Through the real WampServerProtocol: the buckets belong to the connection, so GOODBYE then HELLO on
    the same WebSocket does not refill them."""

    def setUp(self) -> None:
        self.clock = Clock()
        limits = dict(publish_rate=0.001, publish_burst=2, subscribe_rate=0.001, subscribe_burst=2)
        self.app = limited_app(self.clock, open_handshake_timeout=0, **limits)
        self.factory = WampServerFactory(self.app.router, clock=self.clock)
        self.json = object_serializer(self.factory.serializers["wamp.2.json"])

    def connect(self) -> tuple[WampServerProtocol, StringTransport]:
        """An open WebSocket connection that negotiated wamp.2.json (no session yet)."""
        protocol, transport = open_websocket(self.factory)
        return protocol, transport

    def send(self, protocol: WampServerProtocol, raw: list[Any]) -> None:
        protocol.onMessage(self.json.serialize(raw), False)

    def hello(self, protocol: WampServerProtocol) -> None:
        roles = {"publisher": {}, "subscriber": {}}
        self.send(protocol, [message.Hello.MESSAGE_TYPE, "realm1", {"roles": roles}])

    def received(self, transport: StringTransport) -> list[list[Any]]:
        return [self.json.unserialize(payload)[0] for payload in websocket_payloads(transport.value())]

    def test_goodbye_then_hello_does_not_refill_the_publish_bucket(self) -> None:
        protocol, transport = self.connect()
        self.hello(protocol)
        for request in (1, 2):
            self.send(protocol, [PUBLISH, request, {"acknowledge": True}, "news", ["x"]])
        self.send(protocol, [message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.normal"])
        self.hello(protocol)
        self.send(protocol, [PUBLISH, 3, {"acknowledge": True}, "news", ["x"]])
        received = self.received(transport)
        self.assertEqual([m[0] for m in received if m[0] == WELCOME], [WELCOME, WELCOME])
        answers = [m for m in received if m[0] in (PUBLISHED, ERROR)]
        self.assertEqual([m[0] for m in answers], [PUBLISHED, PUBLISHED, ERROR])
        self.assertEqual((answers[2][2], answers[2][4]), (3, "sandstone.error.rate_limited"))

    def test_goodbye_then_hello_does_not_refill_the_subscribe_bucket(self) -> None:
        protocol, transport = self.connect()
        self.hello(protocol)
        for request in (1, 2):
            self.send(protocol, [SUBSCRIBE, request, {}, f"news.{request}"])
        self.send(protocol, [message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.normal"])
        self.hello(protocol)
        self.send(protocol, [SUBSCRIBE, 3, {}, "news.3"])
        last = self.received(transport)[-1]
        self.assertEqual((last[0], last[2], last[4]), (ERROR, 3, "sandstone.error.rate_limited"))

    def test_each_connection_has_its_own_buckets(self) -> None:
        first, _ = self.connect()
        self.hello(first)
        for request in (1, 2, 3):
            self.send(first, [PUBLISH, request, {"acknowledge": True}, "news", ["x"]])
        second, transport = self.connect()
        self.hello(second)
        self.send(second, [PUBLISH, 1, {"acknowledge": True}, "news", ["x"]])
        self.assertEqual(self.received(transport)[-1][:2], [PUBLISHED, 1])


class RoleLimitsTests(SynchronousTestCase):
    """``Limits.role_limits``: the rates of a role's sessions, the app's for the others."""

    def setUp(self) -> None:
        self.clock = Clock()
        roles = {"anonymous": Limits(publish_rate=0.001, publish_burst=2)}
        self.app = limited_app(self.clock, role_limits=roles)  # type: ignore[arg-type]

        @self.app.authenticator
        def authenticate(credentials: Any) -> Any:
            from sandstone import Identity

            return Identity(credentials.authid, "user") if credentials.secret_is("pw") else None

    def publish(self, session: Any, count: int) -> list[bool]:
        outcomes = []
        for _ in range(count):
            try:
                session.publish("news", "x", acknowledge=True)
                outcomes.append(True)
            except ApplicationError as exc:
                self.assertEqual(exc.error, "sandstone.error.rate_limited")
                outcomes.append(False)
        return outcomes

    def test_a_role_with_rates_of_its_own(self) -> None:
        anonymous = TestClient(self.app).connect()
        self.assertEqual(self.publish(anonymous, 3), [True, True, False])

    def test_the_other_roles_get_the_apps(self) -> None:
        user = TestClient(self.app).connect(authid="joe", ticket="pw")
        self.assertEqual(user.authrole, "user")
        self.assertTrue(all(self.publish(user, 500)))  # the app's default: no PUBLISH cap
