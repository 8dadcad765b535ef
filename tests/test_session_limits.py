"""Tests for the per-session limits the router enforces (sandstone._router, _broker, _dealer, _session):
subscriptions and registrations per session, and EVENTs per publication, as a client sees them."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone
from sandstone.testing import TestClient, TestSession
from tests.test_broker import wildcard_patterns

LIMIT_EXCEEDED = "sandstone.error.limit_exceeded"
SUBSCRIBE = message.Subscribe.MESSAGE_TYPE
REGISTER = message.Register.MESSAGE_TYPE


def limited_app(**limits: Any) -> Sandstone:
    return Sandstone(anonymous=True, open_uris=True, limits=Limits(**limits))


def limit_logs(logs: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The log events that name the limit ``field``."""
    return [e for e in logs if e.get("field") == field or field in e.get("log_format", "")]


def errors(session: TestSession) -> list[message.Error]:
    return [m for m in session.messages if isinstance(m, message.Error)]


class SubscriptionLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = limited_app(max_subscriptions_per_session=3)
        self.client = TestClient(self.app)
        self.session = self.client.connect()
        for n in range(3):
            self.session.subscribe(f"news.{n}")

    def test_subscribe_beyond_the_limit_gets_limit_exceeded(self) -> None:
        error = self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertEqual(error.error, LIMIT_EXCEEDED)
        self.assertIn("at most 3 subscriptions", error.args[0])

    def test_pattern_subscriptions_count_too(self) -> None:
        error = self.assertRaises(ApplicationError, self.session.subscribe, "news", match="prefix")
        self.assertEqual(error.error, LIMIT_EXCEEDED)

    def test_the_session_lives_after_a_refusal(self) -> None:
        self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertIsNone(self.session.closed)
        reader = self.client.connect().subscribe("news.0")
        self.session.publish("news.0", "still here")
        self.assertEqual(reader.payloads, ["still here"])

    def test_subscribing_again_to_one_the_session_holds_returns_the_same_id(self) -> None:
        first = self.app.router.broker.subscriptions.exact("news.1")
        assert first is not None
        self.assertEqual(self.session.subscribe("news.1").id, first.id)

    def test_unsubscribing_makes_room(self) -> None:
        self.session.unsubscribe(self.session.subscribe("news.2"))
        self.assertIsInstance(self.session.subscribe("news.3").id, int)

    def test_the_limit_is_per_session(self) -> None:
        other = self.client.connect()
        self.assertIsInstance(other.subscribe("news.3").id, int)

    def test_a_refused_subscription_leaves_nothing_behind(self) -> None:
        self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertIsNone(self.app.router.broker.subscriptions.exact("news.3"))

    def test_refusals_are_counted(self) -> None:
        for _ in range(4):
            self.assertRaises(ApplicationError, self.session.subscribe, "news.3")
        self.assertEqual(self.app.router.stats["subscriptions_refused"], 4)

    def test_refusals_are_logged_at_info_once_per_session(self) -> None:
        other = self.client.connect()
        for n in range(3):
            other.subscribe(f"news.{n}")
        with capturedLogs() as logs:
            for session in (self.session, self.session, other, other):
                self.assertRaises(ApplicationError, session.subscribe, "news.3")
        refused = limit_logs(logs, "max_subscriptions_per_session")
        self.assertEqual(
            [(e["session_id"], e["log_level"]) for e in refused],
            [(self.session.id, LogLevel.info), (other.id, LogLevel.info)],
        )

    def test_a_new_session_on_the_connection_starts_empty(self) -> None:
        self.session.leave()
        self.session.join("realm1")
        self.assertIsInstance(self.session.subscribe("news.3").id, int)


class SubscriptionLimitSettingTests(SynchronousTestCase):
    def test_zero_disables_the_limit(self) -> None:
        session = TestClient(limited_app(max_subscriptions_per_session=0, subscribe_rate=0)).connect()
        for n in range(1_200):
            session.subscribe(f"news.{n}")
        self.assertEqual(errors(session), [])

    def test_the_default_allows_1000(self) -> None:
        session = TestClient(Sandstone(anonymous=True, open_uris=True)).connect()
        for n in range(1_000):
            session.subscribe(f"news.{n}")
        error = self.assertRaises(ApplicationError, session.subscribe, "news.1000")
        self.assertEqual(error.error, LIMIT_EXCEEDED)

    def test_limits_set_on_the_app_before_serving_apply(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.limits = Limits(max_subscriptions_per_session=1)
        session = TestClient(app).connect()
        session.subscribe("news.0")
        error = self.assertRaises(ApplicationError, session.subscribe, "news.1")
        self.assertEqual(error.error, LIMIT_EXCEEDED)

    def test_subscriptions_authorized_asynchronously_are_counted_when_they_are_granted(self) -> None:
        app = limited_app(max_subscriptions_per_session=2)
        answers: list[Deferred[bool]] = []

        @app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> Deferred[bool]:
            answers.append(Deferred())
            return answers[-1]

        session = TestClient(app).connect()
        for n in range(4):  # all four pass the first check while none is granted yet
            session.send_raw([SUBSCRIBE, n + 1, {}, f"news.{n}"])
        for answer in answers:
            answer.callback(True)
        subscribed = [m for m in session.messages if isinstance(m, message.Subscribed)]
        self.assertEqual(len(subscribed), 2)
        self.assertEqual([e.error for e in errors(session)], [LIMIT_EXCEEDED] * 2)
        self.assertEqual(len(app.router.broker.subscriptions), 2)


class RegistrationLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = limited_app(max_registrations_per_session=2)
        self.client = TestClient(self.app)
        self.session = self.client.connect()
        for n in range(2):
            self.session.register(f"com.example.p{n}", lambda: None)

    def test_register_beyond_the_limit_gets_limit_exceeded(self) -> None:
        error = self.assertRaises(ApplicationError, self.session.register, "com.example.p2", lambda: None)
        self.assertEqual(error.error, LIMIT_EXCEEDED)
        self.assertIn("at most 2 registrations", error.args[0])
        self.assertIsNone(self.app.router.dealer.registration("com.example.p2"))

    def test_the_session_lives_and_its_procedures_still_answer(self) -> None:
        self.assertRaises(ApplicationError, self.session.register, "com.example.p2", lambda: None)
        self.assertIsNone(self.session.closed)
        caller = self.client.connect()
        self.assertIsNone(self.successResultOf(caller.call("com.example.p0")))

    def test_unregistering_makes_room(self) -> None:
        registration = self.app.router.dealer.registration("com.example.p1")
        assert registration is not None
        self.session.send_raw([message.Unregister.MESSAGE_TYPE, 50, registration.id])
        self.assertIsInstance(self.session.register("com.example.p2", lambda: None), int)

    def test_the_limit_is_per_session(self) -> None:
        self.assertIsInstance(self.client.connect().register("com.example.p2", lambda: None), int)

    def test_refusals_are_counted_and_logged_once(self) -> None:
        with capturedLogs() as logs:
            for n in range(3):
                self.session.send_raw([REGISTER, 100 + n, {}, f"com.example.q{n}"])
        self.assertEqual([e.error for e in errors(self.session)], [LIMIT_EXCEEDED] * 3)
        self.assertEqual(self.app.router.stats["registrations_refused"], 3)
        self.assertEqual(len(limit_logs(logs, "max_registrations_per_session")), 1)

    def test_zero_disables_the_limit(self) -> None:
        session = TestClient(limited_app(max_registrations_per_session=0)).connect()
        for n in range(1_100):
            session.register(f"com.example.p{n}", lambda: None)
        self.assertEqual(errors(session), [])


class EventsPerPublicationTests(SynchronousTestCase):
    """Through the router: the app's ``max_events_per_publication`` bounds what one publication sends
    to one session."""

    TOPIC = "p0.p1.p2.p3.p4.p5.p6.p7"

    def test_a_session_with_many_matching_patterns_gets_at_most_the_cap(self) -> None:
        app = limited_app(max_events_per_publication=32)
        client = TestClient(app)
        attacker = client.connect()
        for pattern in wildcard_patterns(self.TOPIC, 200):
            attacker.subscribe(pattern, match="wildcard")
        reader = client.connect().subscribe(self.TOPIC)
        client.connect().publish(self.TOPIC, "news")
        events = [m for m in attacker.messages if isinstance(m, message.Event)]
        self.assertEqual(len(events), 32)
        self.assertEqual(reader.payloads, ["news"])
        self.assertEqual(app.router.stats["events_capped"], 200 - 32)

    def test_the_limit_set_on_the_app_applies(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.limits = Limits(max_events_per_publication=2)
        client = TestClient(app)
        session = client.connect()
        for pattern in wildcard_patterns(self.TOPIC, 5):
            session.subscribe(pattern, match="wildcard")
        client.connect().publish(self.TOPIC, "news")
        self.assertEqual(len([m for m in session.messages if isinstance(m, message.Event)]), 2)

    def test_the_cap_applies_to_app_broadcasts_too(self) -> None:
        app = limited_app(max_events_per_publication=3)
        session = TestClient(app).connect()
        for pattern in wildcard_patterns(self.TOPIC, 10):
            session.subscribe(pattern, match="wildcard")
        app.broadcast(self.TOPIC, "from the app")
        self.assertEqual(len([m for m in session.messages if isinstance(m, message.Event)]), 3)
