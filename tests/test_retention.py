"""Event retention on one node, through the test client: ``PUBLISH`` with ``retain``, ``SUBSCRIBE`` with
``get_retained``, the delivery rules a retained event keeps, and the app's side (``broadcast(retain=)``,
``app.retained``, ``Topic.retained``)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone, Topic
from sandstone._publication import Publication
from sandstone.testing import TestClient


class RetentionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.publisher = self.client.connect()
        self.reader = self.client.connect()

    def test_a_late_subscriber_asking_for_it_gets_the_last_retained_event(self) -> None:
        self.publisher.publish("news", "first", acknowledge=True, retain=True)
        self.publisher.publish("news", "not retained", acknowledge=True)
        second = self.publisher.publish("news", "second", acknowledge=True, retain=True)
        sub = self.reader.subscribe("news", get_retained=True)
        [event] = sub.events
        self.assertEqual((event.payload, event.publication, event.retained), ("second", second, True))
        # only when asked for
        self.assertEqual(self.client.connect().subscribe("news").events, [])
        # live events after it are not marked retained
        self.publisher.publish("news", "live", acknowledge=True)
        self.assertEqual([(e.payload, e.retained) for e in sub.events][1:], [("live", False)])

    def test_a_retained_event_goes_only_where_its_rules_admit(self) -> None:
        router = self.app.router
        router.publish(
            Publication("admins", ["for admins"], eligible_authrole=frozenset({"admin"}), retain=True)
        )
        router.publish(
            Publication(
                "notme", ["not for reader"], exclude_authid=frozenset({self.reader.authid}), retain=True
            )
        )
        self.publisher.publish(
            "mine", "own", acknowledge=True, retain=True
        )  # exclude_me: not to the publisher
        self.assertEqual(self.reader.subscribe("admins", get_retained=True).events, [])
        self.assertEqual(self.reader.subscribe("notme", get_retained=True).events, [])
        self.assertEqual(self.publisher.subscribe("mine", get_retained=True).events, [])
        admin = self.client.connect()
        admin._session.authrole = "admin"
        self.assertEqual(admin.subscribe("admins", get_retained=True).payloads, ["for admins"])
        self.assertEqual(admin.subscribe("notme", get_retained=True).payloads, ["not for reader"])
        self.assertEqual(self.reader.subscribe("mine", get_retained=True).payloads, ["own"])

    def test_session_rules_are_kept_too(self) -> None:
        self.publisher.publish("s", "only reader", acknowledge=True, retain=True, eligible=[self.reader.id])
        other = self.client.connect()
        self.assertEqual(other.subscribe("s", get_retained=True).events, [])
        self.assertEqual(self.reader.subscribe("s", get_retained=True).payloads, ["only reader"])

    def test_a_pattern_subscription_gets_every_topic_it_covers(self) -> None:
        self.publisher.publish("sensors.a", 1, acknowledge=True, retain=True)
        self.publisher.publish("sensors.b", 2, acknowledge=True, retain=True)
        self.publisher.publish("other", 3, acknowledge=True, retain=True)
        sub = self.reader.subscribe("sensors.", match="prefix", get_retained=True)
        self.assertEqual(
            [(e.topic, e.payload, e.retained) for e in sub.events],
            [
                ("sensors.a", 1, True),
                ("sensors.b", 2, True),
            ],
        )

    def test_the_app_retains_and_reads(self) -> None:
        @self.app.topic("room/{name}")
        class Room(Topic):
            def on_subscribe(self, session: Any) -> None:
                self.broadcast({"joined": session.id}, retain=True)

        self.app.broadcast("board", {"state": "open"}, retain=True)
        self.assertEqual(self.successResultOf(self.app.retained("board")), {"state": "open"})
        self.assertIsNone(self.successResultOf(self.app.retained("nothing")))
        self.assertEqual(self.reader.subscribe("board", get_retained=True).payloads, [{"state": "open"}])
        self.reader.subscribe("room/x")
        topic = self.app.topic_instance("room/x")
        self.assertEqual(self.successResultOf(topic.retained()), {"joined": self.reader.id})
        late = self.client.connect().subscribe("room/x", get_retained=True)
        self.assertEqual(late.events[0].payload, {"joined": self.reader.id})
        self.assertTrue(late.events[0].retained)

    def test_topics_with_a_retained_event_are_bounded(self) -> None:
        self.app.limits = Limits(max_retained_topics=2)
        for topic in ("t.a", "t.b", "t.c"):
            self.app.broadcast(topic, topic, retain=True)
        self.assertIsNone(self.successResultOf(self.app.retained("t.a")))  # the oldest, forgotten
        self.assertEqual(self.successResultOf(self.app.retained("t.c")), "t.c")

    def test_a_subscriber_gone_before_the_store_answers_gets_nothing(self) -> None:
        self.app.broadcast("x", 1, retain=True)
        session = self.reader._session
        router = self.app.router
        sub = self.reader.subscribe("x")
        held = router.broker.subscriptions.exact("x")
        assert held is not None
        self.reader.unsubscribe(sub)
        events = self.successResultOf(router.store.retained("x", "exact"))
        sent = len(self.reader.messages)
        router._deliver_retained(events, session, held)
        self.assertEqual(len(self.reader.messages), sent)
