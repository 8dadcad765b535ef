"""End-to-end leak check: 10,000 declared topics subscribed and released over real TCP."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Limits, Sandstone, Session, Topic, on_event
from tests.support import ServerTestCase, wait_until

TOPICS = 10_000
BATCH = 500


def make_app() -> Sandstone:
    # one client holds every topic: beyond the default per-session subscription limit and rate
    app = Sandstone(anonymous=True, limits=Limits(max_subscriptions_per_session=0, subscribe_rate=0))

    @app.topic("item/{n:int}")
    class Item(Topic):
        """A topic per item, listening to app events while someone is subscribed."""

        def on_subscribe(self, session: Session) -> None:
            if self.args["n"] % 1000 == 0:
                self.send(session, {"welcome": self.args["n"]})

        @on_event("item.changed")
        def changed(self, n: int) -> None:
            if n == self.args["n"]:
                self.broadcast({"changed": n})

    @app.topic("control")
    class Control(Topic):
        pass

    return app


class LeakTests(ServerTestCase):
    def setUp(self) -> None:
        self.serve(make_app())

    def counts(self) -> dict[str, int]:
        app = self.app
        return {
            "listeners": app.events.listener_count(),
            "subscriptions": len(app.router.broker.subscriptions),
            "sessions": len(app.router.sessions),
            "topic instances": len(app._core.topics.instances),
            "registrations": len(app.router.dealer),
            "calls in flight": app.router.dealer.calls_in_flight,
        }

    async def in_batches(self, calls: list[Any]) -> list[Any]:
        """Issue calls (thunks returning Deferreds) BATCH at a time without awaiting each one."""
        results: list[Any] = []
        for start in range(0, len(calls), BATCH):
            results += await defer.gatherResults([call() for call in calls[start : start + BATCH]])
        return results

    async def test_ten_thousand_topics_leave_nothing_behind(self) -> None:
        baseline = self.counts()
        self.assertEqual(baseline["topic instances"], 0)
        noop = lambda *args, **kwargs: None  # noqa: E731

        first, second = await self.connect("msgpack"), await self.connect("cbor")
        control = await self.connect("json")
        await control.record("control")

        first_subscriptions = await self.in_batches(
            [lambda n=n: first.subscribe(noop, f"item/{n}") for n in range(TOPICS)]
        )
        # the second client shares half of the topics, and adds pattern subscriptions (no instances)
        await self.in_batches([lambda n=n: second.record(f"item/{n}") for n in range(0, TOPICS, 2)])
        await second.record("item/", match="prefix")

        during = self.counts()
        self.assertEqual(during["topic instances"], TOPICS + 1)  # plus "control"
        self.assertEqual(during["listeners"], baseline["listeners"] + TOPICS)
        self.assertEqual(during["subscriptions"], baseline["subscriptions"] + TOPICS + 2)
        self.assertEqual(during["sessions"], baseline["sessions"] + 3)

        # the live instances work: welcomes were sent, and an app event reaches the right topic
        await wait_until(lambda: len(second.received.get("item/1000", [])) == 1)
        result = await self.app.dispatch("item.changed", 4242)
        self.assertEqual(result.called, TOPICS)
        await wait_until(lambda: len(second.received["item/"]) == 1 and second.received["item/4242"])
        self.assertEqual(second.received["item/4242"][-1].payload, {"changed": 4242})

        # the first client unsubscribes from everything, the second one just goes away
        await self.in_batches([lambda s=s: s.unsubscribe() for s in first_subscriptions])
        await self.drop(second)
        await control.publish("control", "sync", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: self.counts()["topic instances"] == 1, timeout=10)
        self.assertEqual(self.counts()["sessions"], baseline["sessions"] + 2)
        self.assertEqual(self.counts()["subscriptions"], baseline["subscriptions"] + 1)

        await first.leave()
        await first.disconnected
        await self.drop(control)
        await wait_until(lambda: self.counts() == baseline, timeout=10)
        self.assertEqual(self.app._core.topics._busy, {})
