"""The meta API (L{sandstone._meta}): the session and subscription meta procedures and meta events, called
and subscribed to by clients of the router, and the presence of a topic (``Topic.presence``, ``on_join``,
``on_leave``) on one node, and with a fake cluster standing for the other nodes.

Sessions get their authrole from authentication; these tests set ``session._session.authrole`` (the
router-side session of a ``TestSession``) right after connecting, to get a distinct role without it.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone, Topic
from sandstone._cluster import LocalCluster, LostSubscription, Member, SessionInfo, SubscriptionInfo
from sandstone._subscriptions import subscription_id_for
from sandstone.testing import TestClient, TestSession

ON_JOIN = "wamp.session.on_join"
ON_LEAVE = "wamp.session.on_leave"
ON_CREATE = "wamp.subscription.on_create"
ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
ON_DELETE = "wamp.subscription.on_delete"
SUBSCRIPTION_EVENTS = (ON_CREATE, ON_SUBSCRIBE, ON_UNSUBSCRIBE, ON_DELETE)


def error_of(d: Deferred[Any], case: SynchronousTestCase) -> str:
    return str(case.failureResultOf(d, ApplicationError).value.error)


class SessionMetaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.alice = self.client.connect()

    def test_session_meta_api(self) -> None:
        bob = self.client.connect()
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count")), 2)
        self.assertEqual(
            sorted(self.successResultOf(self.alice.call("wamp.session.list"))),
            sorted([self.alice.id, bob.id]),
        )
        bob._session.authrole = "user"
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count", ["user"])), 1)
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.list", ["user"])), [bob.id])
        self.assertEqual(
            self.successResultOf(self.alice.call("wamp.session.get", bob.id)),
            {
                "session": bob.id,
                "authid": bob.authid,
                "authrole": "user",
                "authmethod": "anonymous",
                "authprovider": "static",
            },
        )
        failure = self.failureResultOf(self.alice.call("wamp.session.get", 12345), ApplicationError)
        self.assertEqual(failure.value.error, "wamp.error.no_such_session")
        bob.leave()
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count")), 1)
        self.assertEqual(len(self.app.router.dealer), 0)  # not registrations

    def test_bad_arguments_are_invalid_argument(self) -> None:
        for procedure, args in (
            ("wamp.session.get", ["1"]),
            ("wamp.session.get", []),
            ("wamp.session.count", ["user"]),
            ("wamp.session.list", [[1]]),
            ("wamp.session.count", [None, 2]),
        ):
            self.assertEqual(
                error_of(self.alice.call(procedure, *args), self), "wamp.error.invalid_argument", procedure
            )

    def test_welcome_announces_the_meta_apis(self) -> None:
        [welcome] = [m for m in self.alice.messages if isinstance(m, message.Welcome)]
        self.assertTrue(welcome.roles["dealer"].session_meta_api)
        self.assertTrue(welcome.roles["broker"].session_meta_api)
        self.assertTrue(welcome.roles["broker"].subscription_meta_api)

    def test_on_join_and_on_leave(self) -> None:
        joins, leaves = self.alice.subscribe(ON_JOIN), self.alice.subscribe(ON_LEAVE)
        bob = self.client.connect()
        self.assertEqual(
            [event.args for event in joins.events],
            [
                [
                    {
                        "session": bob.id,
                        "authid": bob.authid,
                        "authrole": "anonymous",
                        "authmethod": "anonymous",
                        "authprovider": "static",
                    }
                ]
            ],
        )
        bob.disconnect()
        self.assertEqual([event.args for event in leaves.events], [[bob.id, bob.authid, "anonymous"]])

    def test_a_leaving_session_does_not_hear_of_its_own_leaving(self) -> None:
        bob = self.client.connect()
        bobs = bob.subscribe(ON_LEAVE)
        bob.leave()
        self.assertEqual(bobs.events, [])


class SubscriptionMetaEventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.watcher = self.client.connect()
        self.inbox = {topic: self.watcher.subscribe(topic) for topic in SUBSCRIPTION_EVENTS}

    def seen(self) -> list[tuple[str, list[Any]]]:
        events = [
            (event.publication, topic, event.args) for topic, s in self.inbox.items() for event in s.events
        ]
        return [(topic, args) for _, topic, args in sorted(events, key=lambda e: self.order.index(e[0]))]

    @property
    def order(self) -> list[int]:
        return [m.publication for m in self.watcher.messages if isinstance(m, message.Event)]

    def test_lifecycle_of_a_subscription(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        first = alice.subscribe("com.example.news")
        created = self.inbox[ON_CREATE].events[0].args[1]["created"]
        bob.subscribe("com.example.news")
        alice.unsubscribe(first)
        bob.disconnect()
        sid = first.id
        self.assertEqual(
            self.seen(),
            [
                (
                    ON_CREATE,
                    [alice.id, {"id": sid, "created": created, "uri": "com.example.news", "match": "exact"}],
                ),
                (ON_SUBSCRIBE, [alice.id, sid]),
                (ON_SUBSCRIBE, [bob.id, sid]),
                (ON_UNSUBSCRIBE, [alice.id, sid]),
                (ON_UNSUBSCRIBE, [bob.id, sid]),
                (ON_DELETE, [bob.id, sid]),
            ],
        )
        self.assertRegex(created, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_pattern_subscriptions_have_their_match_policy(self) -> None:
        alice = self.client.connect()
        wildcard = alice.subscribe("com..news", match="wildcard")
        [created] = self.inbox[ON_CREATE].events
        self.assertEqual(created.args[1]["match"], "wildcard")
        self.assertEqual(created.args[1]["id"], wildcard.id)

    def test_subscriptions_to_meta_topics_fire_no_meta_events(self) -> None:
        alice = self.client.connect()
        alice.subscribe(ON_JOIN)
        alice.subscribe("wamp.", match="prefix")
        self.assertEqual(self.seen(), [])

    def test_a_prefix_pattern_in_wamp_hears_every_meta_event_with_its_topic(self) -> None:
        everything = self.client.connect().subscribe("wamp.", match="prefix")
        bob = self.client.connect()
        bob.subscribe("com.x")
        self.assertEqual([event.topic for event in everything.events], [ON_JOIN, ON_CREATE, ON_SUBSCRIBE])

    def test_app_patterns_outside_wamp_hear_no_meta_event(self) -> None:
        wide = self.client.connect().subscribe("..", match="wildcard")  # would match wamp.session.on_join
        empty = self.client.connect().subscribe("", match="prefix")
        self.client.connect().subscribe("com.x")
        self.assertEqual((wide.events, empty.events), ([], []))

    def test_nothing_is_built_while_nobody_listens(self) -> None:
        for subscription in self.inbox.values():
            self.watcher.unsubscribe(subscription)
        built: list[Any] = []
        self.patch(self.app.router.broker, "deliver_meta", lambda *args: built.append(args) or 0)
        alice = self.client.connect()
        alice.unsubscribe(alice.subscribe("com.x"))
        alice.leave()
        self.assertEqual(built, [])
        self.assertFalse(self.app.router.meta_listening)


class SubscriptionMetaProcedureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.alice, self.bob = self.client.connect(), self.client.connect()
        self.news = self.alice.subscribe("com.example.news")
        self.bob.subscribe("com.example.news")
        self.prefix = self.bob.subscribe("com.example.", match="prefix")
        self.wildcard = self.alice.subscribe("com..news", match="wildcard")
        self.alice.subscribe(ON_JOIN)  # meta subscriptions are left out

    def call(self, procedure: str, *args: Any) -> Any:
        return self.successResultOf(self.alice.call(f"wamp.subscription.{procedure}", *args))

    def test_list(self) -> None:
        self.assertEqual(
            self.call("list"),
            {"exact": [self.news.id], "prefix": [self.prefix.id], "wildcard": [self.wildcard.id]},
        )

    def test_lookup(self) -> None:
        self.assertEqual(self.call("lookup", "com.example.news"), self.news.id)
        self.assertEqual(self.call("lookup", "com.example.news", {"match": "exact"}), self.news.id)
        self.assertEqual(self.call("lookup", "com.example.", {"match": "prefix"}), self.prefix.id)
        self.assertEqual(self.call("lookup", "com..news", {"match": "wildcard"}), self.wildcard.id)
        self.assertIsNone(self.call("lookup", "com.example.sport"))
        self.assertIsNone(self.call("lookup", "com.example.news", {"match": "prefix"}))

    def test_lookup_answers_one_null_argument(self) -> None:
        self.alice.call("wamp.subscription.lookup", "com.nothing")
        [result] = [m for m in self.alice.messages if isinstance(m, message.Result)]
        self.assertEqual(result.args, [None])

    def test_match(self) -> None:
        self.assertEqual(
            sorted(self.call("match", "com.example.news")),
            sorted([self.news.id, self.prefix.id, self.wildcard.id]),
        )
        self.assertEqual(self.call("match", "com.example.sport"), [self.prefix.id])
        self.assertIsNone(self.call("match", "org.nothing"))

    def test_get(self) -> None:
        details = self.call("get", self.prefix.id)
        self.assertEqual(
            {key: details[key] for key in ("id", "uri", "match")},
            {"id": self.prefix.id, "uri": "com.example.", "match": "prefix"},
        )
        self.assertIn("created", details)

    def test_subscribers(self) -> None:
        self.assertEqual(self.call("list_subscribers", self.news.id), [self.alice.id, self.bob.id])
        self.assertEqual(self.call("count_subscribers", self.news.id), 2)
        self.assertEqual(self.call("list_subscribers", self.prefix.id), [self.bob.id])
        self.assertEqual(self.call("count_subscribers", self.wildcard.id), 1)

    def test_unknown_subscriptions(self) -> None:
        meta = self.app.router.broker.meta.exact(ON_JOIN)
        assert meta is not None
        for unknown in (12345, meta.id):
            for procedure in ("get", "list_subscribers", "count_subscribers"):
                d = self.alice.call(f"wamp.subscription.{procedure}", unknown)
                self.assertEqual(error_of(d, self), "wamp.error.no_such_subscription")

    def test_bad_arguments(self) -> None:
        for procedure, args in (
            ("get", ["1"]),
            ("get", [1.5]),
            ("get", [True]),
            ("list_subscribers", [None]),
            ("count_subscribers", []),
            ("lookup", [1]),
            ("lookup", ["com.x", {"match": "fuzzy"}]),
            ("lookup", ["com.x", "exact"]),
            ("match", [["com.x"]]),
            ("list", [1]),
        ):
            d = self.alice.call(f"wamp.subscription.{procedure}", *args)
            self.assertEqual(error_of(d, self), "wamp.error.invalid_argument", (procedure, args))
        self.assertTrue(self.alice._session.is_open)


ALLOWED = {"staff": ("wamp.", "com.", "secret."), "user": ("wamp.subscription.", "com.")}


def authorize(session: Any, action: str, uri: str, match: str) -> bool:
    return any(uri.startswith(prefix) for prefix in ALLOWED.get(session.authrole, ()))


def connect(client: TestClient, authrole: str) -> TestSession:
    session = client.connect()
    session._session.authrole = authrole
    return session


class MetaAuthorizationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.app.authorizer(authorize)
        self.client = TestClient(self.app)
        self.staff, self.user = connect(self.client, "staff"), connect(self.client, "user")

    def test_meta_topics_and_procedures_are_subject_to_the_authorizer(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.user.subscribe(ON_JOIN)
        self.assertEqual(caught.exception.error, "wamp.error.not_authorized")
        self.assertEqual(error_of(self.user.call("wamp.session.count"), self), "wamp.error.not_authorized")
        self.assertEqual(self.successResultOf(self.staff.call("wamp.session.count")), 2)
        self.successResultOf(self.user.call("wamp.subscription.list"))

    def test_subscription_meta_events_show_only_what_the_receiver_may_subscribe_to(self) -> None:
        staffs, users = self.staff.subscribe(ON_SUBSCRIBE), self.user.subscribe(ON_SUBSCRIBE)
        wide = self.user.subscribe("wamp.subscription.", match="prefix")
        other = connect(self.client, "staff")
        secret = other.subscribe("secret.plans")
        public = other.subscribe("com.news")
        self.assertEqual([e.args for e in staffs.events], [[other.id, secret.id], [other.id, public.id]])
        self.assertEqual([e.args for e in users.events], [[other.id, public.id]])
        self.assertEqual([e.topic for e in wide.events], [ON_CREATE, ON_SUBSCRIBE])
        self.assertEqual(wide.events[1].args, [other.id, public.id])

    def test_meta_procedures_show_only_what_the_caller_may_subscribe_to(self) -> None:
        other = connect(self.client, "staff")
        secret, public = other.subscribe("secret.plans"), other.subscribe("com.news")
        other.subscribe("secret.", match="prefix")

        def call(session: TestSession, procedure: str, *args: Any) -> Any:
            return self.successResultOf(session.call(f"wamp.subscription.{procedure}", *args))

        self.assertEqual(call(self.user, "list"), {"exact": [public.id], "prefix": [], "wildcard": []})
        self.assertEqual(len(call(self.staff, "list")["prefix"]), 1)
        self.assertIsNone(call(self.user, "lookup", "secret.plans"))
        self.assertEqual(call(self.staff, "lookup", "secret.plans"), secret.id)
        self.assertIsNone(call(self.user, "match", "secret.plans"))
        self.assertEqual(len(call(self.staff, "match", "secret.plans")), 2)
        for procedure in ("get", "list_subscribers", "count_subscribers"):
            d = self.user.call(f"wamp.subscription.{procedure}", secret.id)
            self.assertEqual(error_of(d, self), "wamp.error.no_such_subscription")
        self.assertEqual(call(self.user, "list_subscribers", public.id), [other.id])

    def test_pattern_subscriptions_are_shown_to_who_may_make_them(self) -> None:
        users = self.user.subscribe(ON_CREATE)
        other = connect(self.client, "staff")
        other.subscribe("secret.", match="prefix")
        other.subscribe("com.", match="prefix")
        self.assertEqual([e.args[1]["uri"] for e in users.events], ["com."])


class Room(Topic):
    joined: list[Member] = []
    left: list[Member] = []
    counts: list[int] = []

    def on_join(self, member: Member) -> None:
        self.joined.append(member)
        self.presence_count().addCallback(self.counts.append)

    def on_leave(self, member: Member) -> None:
        self.left.append(member)


class PresenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        Room.joined, Room.left, Room.counts = [], [], []
        self.app = Sandstone(anonymous=True)
        self.app.topic("rooms.{name}")(Room)
        self.client = TestClient(self.app)

    def test_presence_on_one_node(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        alice.subscribe("rooms.kitchen")
        bob.subscribe("rooms.kitchen")
        room = self.app.topic_instance("rooms.kitchen")
        assert room is not None
        members = self.successResultOf(room.presence())
        self.assertEqual(
            members,
            [
                Member(alice.id, alice.authid, "anonymous", True),
                Member(bob.id, bob.authid, "anonymous", True),
            ],
        )
        self.assertEqual(self.successResultOf(room.presence_count()), 2)
        self.assertEqual([m.session for m in Room.joined], [alice.id, bob.id])
        self.assertEqual(Room.counts, [1, 2])
        bob.disconnect()
        self.assertEqual(Room.left, [Member(bob.id, bob.authid, "anonymous", True)])
        self.assertEqual(self.successResultOf(room.presence_count()), 1)

    def test_pattern_subscribers_are_not_members(self) -> None:
        alice = self.client.connect()
        alice.subscribe("rooms.", match="prefix")
        alice.subscribe("rooms.hall")
        room = self.app.topic_instance("rooms.hall")
        assert room is not None
        self.assertEqual([m.session for m in self.successResultOf(room.presence())], [alice.id])


class FakeCluster(LocalCluster):
    """Another node's sessions and subscriptions, as a cluster would answer for them."""

    def __init__(self) -> None:
        self.remote_sessions = [SessionInfo(77, "carol", "user", "ticket", "static")]
        self.remote_subscriptions = [
            SubscriptionInfo(
                subscription_id_for("rooms.hall", "exact"), "rooms.hall", "exact", "2026-01-01T00:00:00.000Z"
            )
        ]
        self.remote_members = [Member(77, "carol", "user", False)]
        self.told: list[tuple[str, Any]] = []

    def joined(self, session: Any) -> None:
        self.told.append(("joined", session.id))

    def subscribed(self, subscription: Any, session: Any, first: bool) -> Deferred[bool]:
        self.told.append(("subscribed", session.id))
        return succeed(False)  # the other node holds it already: no on_create

    def sessions(self) -> Deferred[list[SessionInfo]]:
        return succeed(self.remote_sessions)

    def session_count(self) -> Deferred[int]:
        return succeed(len(self.remote_sessions))

    def subscriptions(self) -> Deferred[list[SubscriptionInfo]]:
        return succeed(self.remote_subscriptions)

    def subscribers(self, subscription_id: int) -> Deferred[list[Member]]:
        held = any(s.id == subscription_id for s in self.remote_subscriptions)
        return succeed(self.remote_members if held else [])

    def subscriber_count(self, subscription_id: int) -> Deferred[int]:
        return self.subscribers(subscription_id).addCallback(len)


class ClusterAnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        Room.joined, Room.left, Room.counts = [], [], []
        self.app = Sandstone(anonymous=True)
        self.app.topic("rooms.{name}")(Room)
        self.cluster = FakeCluster()
        self.app.router.use_cluster(self.cluster)
        self.client = TestClient(self.app)
        self.alice = self.client.connect()

    def call(self, procedure: str, *args: Any) -> Any:
        return self.successResultOf(self.alice.call(procedure, *args))

    def test_answers_cover_the_other_nodes(self) -> None:
        self.alice.subscribe("rooms.hall")
        hall = subscription_id_for("rooms.hall", "exact")
        self.assertEqual(self.call("wamp.session.count"), 2)
        self.assertEqual(self.call("wamp.session.count", ["user"]), 1)
        self.assertEqual(sorted(self.call("wamp.session.list")), sorted([self.alice.id, 77]))
        self.assertEqual(self.call("wamp.session.get", 77)["authid"], "carol")
        self.assertEqual(self.call("wamp.subscription.list")["exact"], [hall])
        self.assertEqual(self.call("wamp.subscription.list_subscribers", hall), [self.alice.id, 77])
        self.assertEqual(self.call("wamp.subscription.count_subscribers", hall), 2)
        room = self.app.topic_instance("rooms.hall")
        assert room is not None
        self.assertEqual([m.local for m in self.successResultOf(room.presence())], [True, False])
        self.assertEqual(Room.counts, [2])

    def test_a_subscription_held_only_elsewhere_is_known_here(self) -> None:
        hall = subscription_id_for("rooms.hall", "exact")
        self.assertEqual(self.call("wamp.subscription.lookup", "rooms.hall"), hall)
        self.assertEqual(self.call("wamp.subscription.get", hall)["created"], "2026-01-01T00:00:00.000Z")
        self.assertEqual(self.call("wamp.subscription.list_subscribers", hall), [77])

    def test_the_cluster_is_told_and_decides_on_create(self) -> None:
        creates, subscribes = self.alice.subscribe(ON_CREATE), self.alice.subscribe(ON_SUBSCRIBE)
        bob = self.client.connect()
        bob.subscribe("rooms.hall")
        self.assertEqual(self.cluster.told[-1], ("subscribed", bob.id))
        self.assertEqual(creates.events, [])
        self.assertEqual(len(subscribes.events), 1)

    def test_a_dead_nodes_members_leave_here(self) -> None:
        leaves = self.alice.subscribe(ON_LEAVE)
        unsubscribes, deletes = self.alice.subscribe(ON_UNSUBSCRIBE), self.alice.subscribe(ON_DELETE)
        [info] = self.cluster.remote_subscriptions
        lost = LostSubscription(info, self.cluster.remote_members, deleted=True)
        self.app.router.node_lost(self.cluster.remote_sessions, [lost])
        self.assertEqual(Room.left, self.cluster.remote_members)  # on a transient instance
        self.assertIsNone(self.app.topic_instance("rooms.hall"))
        self.assertEqual([e.args for e in unsubscribes.events], [[77, info.id]])
        self.assertEqual([e.args for e in deletes.events], [[77, info.id]])
        self.assertEqual([e.args for e in leaves.events], [[77, "carol", "user"]])


class ReservedBroadcastTests(SynchronousTestCase):
    def test_the_app_cannot_broadcast_in_the_wamp_namespace(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        joins = TestClient(app).connect().subscribe(ON_JOIN)
        for uri in (ON_JOIN, "wamp"):
            with self.assertRaises(ValueError) as caught:
                app.broadcast(uri, {"session": 1})
            self.assertIn("reserved for the router", str(caught.exception))
        self.assertEqual(joins.events, [])
