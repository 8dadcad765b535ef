"""End-to-end over real TCP with autobahn-python clients: the per-session limits hold against the attacks of
issue 10 (finding 3: wildcard subscriptions multiplying one publication's cost; finding 7: GOODBYE then HELLO
refilling the rate buckets)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet import defer

from sandstone import Limits, Sandstone
from tests.support import Client, ServerTestCase, sleep, wait_until
from tests.test_broker import wildcard_patterns

LIMIT_EXCEEDED = "sandstone.error.limit_exceeded"
RATE_LIMITED = "sandstone.error.rate_limited"
TOPIC = "p0.p1.p2.p3.p4.p5.p6.p7.p8.p9.p10"  # 2,047 wildcard patterns match it


class RejoiningClient(Client):
    """A client that stays connected after GOODBYE, so that it can join again on the same WebSocket."""

    def onJoin(self, details: Any) -> None:
        if not self.joined.called:
            self.joined.callback(self)

    def onLeave(self, details: Any) -> None:
        left, self.left = self.left, defer.Deferred()
        left.callback(details)  # and no disconnect, unlike autobahn's own onLeave

    def rejoin(self) -> defer.Deferred[RejoiningClient]:
        """HELLO again on the same transport; fires once WELCOME arrived."""
        self.joined = defer.Deferred()
        self.join(self.config.realm)
        return self.joined


async def outcomes(requests: list[defer.Deferred[Any]]) -> list[str]:
    """``"ok"`` or the error URI of each request, in order."""
    answers = []
    for ok, value in await defer.DeferredList(requests, consumeErrors=True):
        if not ok:
            value.trap(ApplicationError)
        answers.append(value.value.error if not ok else "ok")
    return answers


class SessionLimitsTestCase(ServerTestCase):
    timeout = 30

    def serve_app(self, **limits: Any) -> Sandstone:
        app = Sandstone(anonymous=True, open_uris=True, limits=Limits(**limits))
        self.serve(app)
        return app


class WildcardFanOutTests(SessionLimitsTestCase):
    async def test_many_wildcard_subscriptions_are_refused_and_one_publication_stays_bounded(self) -> None:
        # Default limits (1,000 subscriptions a session, 32 EVENTs a publication), except a SUBSCRIBE
        # burst big enough that the subscription limit, not the rate, is what refuses.
        app = self.serve_app(subscribe_burst=2_000)
        attacker = await self.connect()
        reader = await self.connect()
        publisher = await self.connect()
        await reader.record(TOPIC)
        received: list[Any] = []
        options = SubscribeOptions(match="wildcard")
        requests = [
            attacker.subscribe(lambda *a, **kw: received.append(a), pattern, options=options)
            for pattern in wildcard_patterns(TOPIC, 1_500)
        ]
        answers = await outcomes(requests)
        self.assertEqual(answers, ["ok"] * 1_000 + [LIMIT_EXCEEDED] * 500)
        self.assertEqual(app.router.stats["subscriptions_refused"], 500)

        await publisher.publish(TOPIC, "news", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: len(reader.received[TOPIC]) == 1 and len(received) >= 32)
        await sleep(0.2)  # the stray EVENTs would be here by now
        self.assertEqual(len(received), 32)
        self.assertEqual([r.payload for r in reader.received[TOPIC]], ["news"])
        self.assertEqual(app.router.stats["events_capped"], 1_000 - 32)

        # the attacker's session lives on
        self.assertTrue(attacker.is_attached())
        await attacker.publish("other.topic", 1, options=PublishOptions(acknowledge=True))

    async def test_a_burst_of_subscribes_beyond_the_rate_gets_rate_limited(self) -> None:
        self.serve_app(subscribe_rate=1.0, subscribe_burst=50)
        attacker = await self.connect()
        requests = [attacker.subscribe(lambda *a: None, f"news.{n}") for n in range(100)]
        answers = await outcomes(requests)
        self.assertEqual(answers[:50], ["ok"] * 50)
        self.assertGreaterEqual(answers.count(RATE_LIMITED), 45)  # the rate gives back 1 a second
        self.assertEqual(set(answers), {"ok", RATE_LIMITED})
        self.assertTrue(attacker.is_attached())


class RejoinTests(SessionLimitsTestCase):
    timeout = 20

    async def test_goodbye_then_hello_on_one_websocket_does_not_refill_the_publish_bucket(self) -> None:
        self.serve_app(publish_rate=0.001, publish_burst=3)
        client = await self.connect(client_class=RejoiningClient)
        acknowledged = PublishOptions(acknowledge=True)
        for n in range(3):
            await client.publish("news", n, options=acknowledged)
        first_session = client._session_id
        client.leave()  # what it returns fires once the transport closes: here it does not
        await client.left
        await client.rejoin()
        self.assertNotEqual(client._session_id, first_session)
        self.assertFalse(client.disconnected.called)  # the same WebSocket
        with self.assertRaises(ApplicationError) as raised:
            await client.publish("news", "again", options=acknowledged)
        self.assertEqual(raised.exception.error, RATE_LIMITED)

    async def test_goodbye_then_hello_does_not_refill_the_subscribe_bucket(self) -> None:
        self.serve_app(subscribe_rate=0.001, subscribe_burst=3)
        client = await self.connect(client_class=RejoiningClient)
        for n in range(3):
            await client.subscribe(lambda *a: None, f"news.{n}")
        client.leave()  # what it returns fires once the transport closes: here it does not
        await client.left
        await client.rejoin()
        with self.assertRaises(ApplicationError) as raised:
            await client.subscribe(lambda *a: None, "news.3")
        self.assertEqual(raised.exception.error, RATE_LIMITED)
