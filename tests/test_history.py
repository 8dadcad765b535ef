"""Event history (L{sandstone._history}, L{sandstone._store}): which topics keep their events, what
``wamp.subscription.get_events`` answers with each filter, and what is never stored; on one node, through
the test client."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone, Topic
from sandstone._history import HistoryRules, parse_history_option
from sandstone._publication import Publication
from sandstone._store import MemoryStore, topic_matches
from sandstone._tap import Options
from sandstone.testing import TestClient, TestSession

GET_EVENTS = "wamp.subscription.get_events"


def answer(case: SynchronousTestCase, d: Deferred[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = case.successResultOf(d)
    if isinstance(result, dict) and set(result) == {"args", "kwargs"}:
        return result["args"], result["kwargs"]
    raise AssertionError(f"unexpected answer {result!r}")


def error_of(case: SynchronousTestCase, d: Deferred[Any]) -> str:
    return str(case.failureResultOf(d, ApplicationError).value.error)


class RulesTests(SynchronousTestCase):
    def test_exact_prefix_wildcard_and_topic_declarations(self) -> None:
        app = Sandstone(anonymous=True)

        @app.topic("chat/{channel}", history=50)
        class Chat(Topic):
            pass

        rules = app.router.history_rules
        self.assertTrue(rules.active)
        rules.add("sensors.", "prefix", 7)
        rules.add("a..c", "wildcard", 3)
        rules.add("exact.one", "exact", 2)
        self.assertEqual(rules.limit_for("chat/general"), 50)
        self.assertEqual(rules.limit_for("sensors.kitchen.temperature"), 7)
        self.assertEqual(rules.limit_for("a.b.c"), 3)
        self.assertEqual(rules.limit_for("a.b.c.d"), 0)
        self.assertEqual(rules.limit_for("exact.one"), 2)
        self.assertEqual(rules.limit_for("exact.one.more"), 0)
        self.assertEqual(rules.limit_for("elsewhere"), 0)

    def test_no_rule_no_lookup(self) -> None:
        self.assertFalse(HistoryRules().active)
        self.assertFalse(Sandstone().router.history_rules.active)

    def test_bad_rules_are_refused(self) -> None:
        rules = HistoryRules()
        for uri, match, limit in (
            ("a", "regex", 3),
            ("", "exact", 3),
            ("a", "exact", 0),
            ("a", "exact", "9"),
        ):
            self.assertRaises(ValueError, rules.add, uri, match, limit)
        app = Sandstone()
        self.assertRaises(ValueError, app.topic, "x/{y}", history=-1)

    def test_history_option(self) -> None:
        self.assertEqual(parse_history_option("chat.lobby=100"), ("chat.lobby", "exact", 100))
        self.assertEqual(parse_history_option("prefix:sensors.=1000"), ("sensors.", "prefix", 1000))
        self.assertEqual(parse_history_option("wildcard:a..c=5"), ("a..c", "wildcard", 5))
        self.assertEqual(parse_history_option("a=b=3"), ("a=b", "exact", 3))
        for bad in ("chat.lobby", "=3", "chat=x", "chat=0", "prefix:=3x"):
            self.assertRaises(ValueError, parse_history_option, bad)

    def test_topic_matches(self) -> None:
        self.assertTrue(topic_matches("a.b", "a.b", "exact"))
        self.assertTrue(topic_matches("a.b", "a.", "prefix"))
        self.assertTrue(topic_matches("a.b.c", "a..c", "wildcard"))
        self.assertFalse(topic_matches("a.b", "a..c", "wildcard"))


class MemoryStoreTests(SynchronousTestCase):
    def test_each_topic_keeps_its_last_events_and_topics_are_bounded(self) -> None:
        store = MemoryStore()
        for i in range(5):
            store.record(Publication("t.a", [i]), 3, 100.0 + i, False, 2)
        events = self.successResultOf(store.recorded("t.a", "exact"))
        self.assertEqual([e.publication.payload for e in events], [2, 3, 4])
        store.record(Publication("t.b", [0]), 3, 200.0, False, 2)
        store.record(Publication("t.c", [0]), 3, 201.0, False, 2)  # t.a, least recently written, goes
        self.assertEqual(self.successResultOf(store.recorded("t.a", "exact")), [])
        merged = self.successResultOf(store.recorded("t.", "prefix"))
        self.assertEqual([e.publication.topic for e in merged], ["t.b", "t.c"])

    def test_retained_events_are_one_per_topic_and_bounded(self) -> None:
        store = MemoryStore()
        store.retain(Publication("r.a", [1]), 1.0, 2)
        store.retain(Publication("r.a", [2]), 2.0, 2)
        store.retain(Publication("r.b", [3]), 3.0, 2)
        [kept] = self.successResultOf(store.retained("r.a", "exact"))
        self.assertEqual(kept.publication.payload, 2)
        store.retain(Publication("r.c", [4]), 4.0, 2)  # r.a is the least recently retained to
        self.assertEqual(self.successResultOf(store.retained("r.a", "exact")), [])
        found = self.successResultOf(store.retained("r.", "prefix"))
        self.assertEqual([e.publication.payload for e in found], [3, 4])


class GetEventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)

        @self.app.topic("room/{name}", history=5)
        class Room(Topic):
            pass

        self.app.history("sensors.", match="prefix", limit=4)
        self.client = TestClient(self.app)
        self.reader = self.client.connect()
        self.writer = self.client.connect()

    def publish(self, topic: str, count: int, **options: Any) -> list[int]:
        ids = []
        for i in range(count):
            publication = self.writer.publish(topic, i, acknowledge=True, **options)
            assert publication is not None
            ids.append(publication)
        return ids

    def events(self, subscription: int, **options: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return answer(self, self.reader.call(GET_EVENTS, subscription, **options))

    def test_the_last_events_in_order_with_the_spec_shape(self) -> None:
        sub = self.reader.subscribe("room/a")
        ids = self.publish("room/a", 7)
        events, info = self.events(sub.id)
        self.assertEqual([e["publication"] for e in events], ids[2:])
        self.assertEqual([e["args"] for e in events], [[i] for i in range(2, 7)])
        self.assertEqual(info, {"more": False, "gap": False})
        first = events[0]
        self.assertEqual(set(first), {"timestamp", "subscription", "publication", "details", "args"})
        self.assertEqual(first["subscription"], sub.id)
        self.assertEqual(first["details"], {})
        self.assertRegex(first["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # the same events reached the subscriber live
        self.assertEqual([e.publication for e in sub.events], ids)

    def test_publication_filters(self) -> None:
        sub = self.reader.subscribe("room/a")
        ids = self.publish("room/a", 5)

        def published(**options: Any) -> list[int]:
            return [e["publication"] for e in self.events(sub.id, **options)[0]]

        self.assertEqual(published(after_publication=ids[1]), ids[2:])
        self.assertEqual(published(from_publication=ids[1]), ids[1:])
        self.assertEqual(published(before_publication=ids[3]), ids[:3])
        self.assertEqual(published(until_publication=ids[3]), ids[:4])
        self.assertEqual(published(after_publication=ids[0], before_publication=ids[4]), ids[1:4])
        self.assertEqual(published(reverse=True), ids[::-1])
        self.assertEqual(published(reverse=True, limit=2), ids[:2:-1])

    def test_pagination(self) -> None:
        sub = self.reader.subscribe("room/a")
        ids = self.publish("room/a", 5)
        seen: list[int] = []
        after = None
        pages = 0
        while True:
            options: dict[str, Any] = {"limit": 2}
            if after is not None:
                options["after_publication"] = after
            events, info = self.events(sub.id, **options)
            pages += 1
            seen += [e["publication"] for e in events]
            if not info["more"]:
                break
            after = events[-1]["publication"]
        self.assertEqual((seen, pages), (ids, 3))

    def test_a_gap_says_the_history_no_longer_reaches_back(self) -> None:
        sub = self.reader.subscribe("room/a")
        ids = self.publish("room/a", 8)  # keeps the last 5
        events, info = self.events(sub.id, after_publication=ids[0])
        self.assertEqual([e["publication"] for e in events], ids[3:])
        self.assertTrue(info["gap"])
        events, info = self.events(sub.id, before_publication=ids[0])
        self.assertEqual((events, info["gap"]), ([], True))
        events, info = self.events(sub.id, after_publication=ids[2])  # the one just before the oldest kept
        self.assertTrue(info["gap"])
        events, info = self.events(sub.id, after_publication=ids[3])
        self.assertEqual(([e["publication"] for e in events], info["gap"]), (ids[4:], False))

    def test_time_filters(self) -> None:
        sub = self.reader.subscribe("room/a")
        clock = iter([1000.0, 1001.0, 1002.0, 1003.0])
        self.patch(self.app.router, "wall_clock", lambda: next(clock))
        ids = self.publish("room/a", 4)

        def published(**options: Any) -> list[int]:
            return [e["publication"] for e in self.events(sub.id, **options)[0]]

        at = "1970-01-01T00:16:41.000Z"  # 1001 s
        self.assertEqual(published(from_time=at), ids[1:])
        self.assertEqual(published(after_time=at), ids[2:])
        self.assertEqual(published(before_time=at), ids[:1])
        self.assertEqual(published(until_time=at), ids[:2])
        self.assertEqual(published(after_time="1970-01-01T00:16:40+00:00", until_time=at), ids[1:2])
        [first] = self.events(sub.id, limit=1)[0]
        self.assertEqual(first["timestamp"], "1970-01-01T00:16:40.000Z")

    def test_a_pattern_subscription_reads_every_topic_it_covers(self) -> None:
        sub = self.reader.subscribe("sensors.", match="prefix")
        a = self.writer.publish("sensors.a", 1, acknowledge=True)
        b = self.writer.publish("sensors.b", 2, acknowledge=True)
        c = self.writer.publish("sensors.a", 3, acknowledge=True)
        events, _ = self.events(sub.id)
        self.assertEqual([e["publication"] for e in events], [a, b, c])
        self.assertEqual([e["details"]["topic"] for e in events], ["sensors.a", "sensors.b", "sensors.a"])
        only, _ = self.events(sub.id, topic="sensors.b")
        self.assertEqual([e["publication"] for e in only], [b])

    def test_topics_without_a_rule_keep_nothing(self) -> None:
        sub = self.reader.subscribe("other.topic")
        self.writer.publish("other.topic", 1, acknowledge=True)
        self.assertEqual(self.events(sub.id), ([], {"more": False, "gap": False}))

    def test_session_id_rules_are_not_stored_identity_rules_apply_to_the_reader(self) -> None:
        sub = self.reader.subscribe("room/a")
        self.writer.publish("room/a", "to some", acknowledge=True, exclude=[self.reader.id])
        self.writer.publish("room/a", "eligible", acknowledge=True, eligible=[self.reader.id])
        role_only = self.app.router.publish(
            Publication("room/a", ["admins"], eligible_authrole=frozenset({"admin"}))
        )
        not_me = self.app.router.publish(
            Publication("room/a", ["not reader"], exclude_authid=frozenset({self.reader.authid}))
        )
        del role_only, not_me
        admin: TestSession = self.client.connect()
        admin._session.authrole = "admin"
        events, _ = self.events(sub.id)
        self.assertEqual([e["args"] for e in events], [])  # neither admin nor excluded-by-authid fits
        admin_events = answer(self, admin.call(GET_EVENTS, sub.id))[0]
        self.assertEqual([e["args"] for e in admin_events], [["admins"], ["not reader"]])

    def test_disclosed_publishers_stay_disclosed(self) -> None:
        sub = self.reader.subscribe("room/a")
        self.writer.publish("room/a", 1, acknowledge=True, disclose_me=True)
        [event] = self.events(sub.id)[0]
        self.assertEqual(event["details"]["publisher"], self.writer.id)
        self.assertEqual(event["details"]["publisher_authid"], self.writer.authid)

    def test_app_broadcasts_are_kept(self) -> None:
        sub = self.reader.subscribe("room/a")
        publication = self.app.broadcast("room/a", {"from": "app"})
        [event] = self.events(sub.id)[0]
        self.assertEqual((event["publication"], event["args"]), (publication, [{"from": "app"}]))

    def test_bad_input(self) -> None:
        sub = self.reader.subscribe("room/a")
        self.assertEqual(
            error_of(self, self.reader.call(GET_EVENTS, 12345)), "wamp.error.no_such_subscription"
        )
        for options in (
            {"limit": 0},
            {"limit": "3"},
            {"reverse": "yes"},
            {"after_publication": "1"},
            {"after_publication": 0},
            {"from_time": "yesterday"},
            {"from_time": 12},
            {"topic": 3},
            {"color": "red"},
        ):
            self.assertEqual(
                error_of(self, self.reader.call(GET_EVENTS, sub.id, **options)),
                "wamp.error.invalid_argument",
                options,
            )
        self.assertEqual(error_of(self, self.reader.call(GET_EVENTS, "1")), "wamp.error.invalid_argument")

    def test_a_huge_limit_is_capped(self) -> None:
        self.app.limits = Limits(max_history_events=2)
        sub = self.reader.subscribe("room/a")
        ids = self.publish("room/a", 4)
        events, info = self.events(sub.id, limit=10**9)
        self.assertEqual(([e["publication"] for e in events], info["more"]), (ids[:2], True))
        events, info = self.events(sub.id)
        self.assertEqual(len(events), 2)

    def test_a_subscription_the_reader_may_not_make_does_not_exist_for_it(self) -> None:
        @self.app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> bool:
            return not (uri.startswith("room/secret") and session.authrole != "admin")

        admin = self.client.connect()
        admin._session.authrole = "admin"
        sub = admin.subscribe("room/secret")
        self.app.broadcast("room/secret", "hush")
        self.assertEqual(
            error_of(self, self.reader.call(GET_EVENTS, sub.id)), "wamp.error.no_such_subscription"
        )
        self.assertEqual(len(answer(self, admin.call(GET_EVENTS, sub.id))[0]), 1)

    def test_welcome_announces_event_history(self) -> None:
        [welcome] = [m for m in self.reader.messages if isinstance(m, message.Welcome)]
        self.assertTrue(welcome.roles["broker"].event_history)
        self.assertTrue(welcome.roles["broker"].event_retention)


class HistoryOptionTests(SynchronousTestCase):
    def test_the_open_router_keeps_what_the_options_say(self) -> None:
        options = Options()
        options.parseOptions(["--history", "chat.lobby=3", "--history", "prefix:sensors.=2"])
        rules = options.app.router.history_rules
        self.assertEqual(
            [rules.limit_for(uri) for uri in ("chat.lobby", "sensors.a.b", "chat.other")], [3, 2, 0]
        )
        client = TestClient(options.app)
        alice = client.connect()
        sub = alice.subscribe("chat.lobby")
        for n in range(4):
            client.connect().publish("chat.lobby", n, acknowledge=True)
        events = self.successResultOf(alice.call(GET_EVENTS, sub.id))["args"]
        self.assertEqual([event["args"] for event in events], [[1], [2], [3]])
        client.close()

    def test_a_bad_rule_is_a_usage_error(self) -> None:
        for bad in ("chat.lobby", "chat.lobby=none", "prefix:=0"):
            error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--history", bad])
            self.assertIn("--history", str(error))
