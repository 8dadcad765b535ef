"""Tests for sandstone._ratelimit (token buckets) and the per-session PUBLISH/CALL rate limits."""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._limits import Limits
from sandstone._ratelimit import TokenBucket
from sandstone.testing import TestClient

ERROR = 8


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
