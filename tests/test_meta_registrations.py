"""The registration meta API (L{sandstone._meta}, L{sandstone._router}): the registration meta procedures and
meta events, called and subscribed to by clients of the router; on one node, and with the cluster's
registrations arranged into the router as a bus does (``Router.arrange_registration``).

Sessions get their authrole from authentication; these tests set ``session._session.authrole`` (the
router-side session of a ``TestSession``) right after connecting, to get a distinct role without it.
"""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._call import Call, Callee
from sandstone._cluster import LocalCluster
from sandstone._registrations import Registration, registration_id_for
from sandstone._subscriptions import subscription_id_for
from sandstone.testing import TestClient, TestSession

ON_CREATE = "wamp.registration.on_create"
ON_REGISTER = "wamp.registration.on_register"
ON_UNREGISTER = "wamp.registration.on_unregister"
ON_DELETE = "wamp.registration.on_delete"
REGISTRATION_EVENTS = (ON_CREATE, ON_REGISTER, ON_UNREGISTER, ON_DELETE)
ISO_8601 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def error_of(d: Deferred[Any], case: SynchronousTestCase) -> str:
    return str(case.failureResultOf(d, ApplicationError).value.error)


def answer() -> str:
    return "answer"


_requests = itertools.count(1000)


def unregister(session: TestSession, registration_id: int) -> None:
    session.send_raw([message.Unregister.MESSAGE_TYPE, next(_requests), registration_id])
    assert isinstance(session.messages[-1], message.Unregistered), session.messages[-1]


class Watching:
    """A watcher subscribed to the four registration meta events, and what it saw, in order."""

    watcher: TestSession

    def watch(self, client: TestClient) -> None:
        self.watcher = client.connect()
        self.topics = {self.watcher.subscribe(topic).id: topic for topic in REGISTRATION_EVENTS}

    def seen(self) -> list[tuple[str, list[Any]]]:
        return [
            (self.topics[m.subscription], list(m.args or []))
            for m in self.watcher.messages
            if isinstance(m, message.Event)
        ]


class RemoteCallee:
    """A callee on another node, as the bus gives it to the router (its session ``id`` there)."""

    interruptible = True

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.calls: list[Call] = []

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        self.calls.append(call)

    def send_interrupt(self, invocation: int, mode: str) -> None:
        pass


class MetaEventTests(Watching, SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.watch(self.client)

    def test_lifecycle_of_a_registration(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        rid = alice.register("com.example.add", answer, invoke="roundrobin")
        created = self.seen()[0][1][1]["created"]
        bob.register("com.example.add", answer, invoke="roundrobin")
        unregister(alice, rid)
        bob.disconnect()
        self.assertEqual(
            self.seen(),
            [
                (
                    ON_CREATE,
                    [
                        alice.id,
                        {
                            "id": rid,
                            "created": created,
                            "uri": "com.example.add",
                            "match": "exact",
                            "invoke": "roundrobin",
                        },
                    ],
                ),
                (ON_REGISTER, [alice.id, rid]),
                (ON_REGISTER, [bob.id, rid]),
                (ON_UNREGISTER, [alice.id, rid]),
                (ON_UNREGISTER, [bob.id, rid]),
                (ON_DELETE, [bob.id, rid]),
            ],
        )
        self.assertRegex(created, ISO_8601)

    def test_registered_is_answered_before_the_meta_events(self) -> None:
        self.watcher.register("com.example.mine", answer)
        kinds = [type(m) for m in self.watcher.messages[-3:]]
        self.assertEqual(kinds, [message.Registered, message.Event, message.Event])

    def test_pattern_registrations_have_their_policies(self) -> None:
        alice = self.client.connect()
        rid = alice.register("com..add", answer, match="wildcard", invoke="first")
        [(topic, [session, details]), registered] = self.seen()
        self.assertEqual((topic, session), (ON_CREATE, alice.id))
        self.assertEqual(
            (details["id"], details["uri"], details["match"], details["invoke"]),
            (rid, "com..add", "wildcard", "first"),
        )
        self.assertEqual(registered, (ON_REGISTER, [alice.id, rid]))

    def test_a_refused_registration_fires_nothing(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        rid = alice.register("com.example.single", answer)
        with self.assertRaises(ApplicationError):
            bob.register("com.example.single", answer)
        self.assertEqual(self.seen()[1:], [(ON_REGISTER, [alice.id, rid])])

    def test_the_apps_procedures_fire_no_meta_event(self) -> None:
        self.app.procedure("com.example.app")(answer)
        self.assertEqual(self.seen(), [])

    def test_a_prefix_pattern_in_wamp_hears_every_registration_meta_event(self) -> None:
        everything = self.client.connect().subscribe("wamp.registration.", match="prefix")
        bob = self.client.connect()
        rid = bob.register("com.x", answer)
        bob.leave()
        self.assertEqual(
            [(event.topic, event.args[0]) for event in everything.events],
            [(ON_CREATE, bob.id), (ON_REGISTER, bob.id), (ON_UNREGISTER, bob.id), (ON_DELETE, bob.id)],
        )
        self.assertEqual(everything.events[-1].args, [bob.id, rid])

    def test_nothing_is_built_while_nobody_listens(self) -> None:
        self.watcher.leave()
        built: list[Any] = []
        self.patch(self.app.router.broker, "deliver_meta", lambda *args: built.append(args) or 0)
        alice = self.client.connect()
        unregister(alice, alice.register("com.x", answer))
        alice.register("com.y", answer)
        alice.leave()
        self.app.router.arrange_registration("com.z", "exact", "single", [RemoteCallee(9)])
        self.app.router.arrange_registration("com.z", "exact", None, [])
        self.assertEqual(built, [])
        self.assertFalse(self.app.router.meta_listening)


class MetaProcedureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.app.procedure("com.example.app")(answer)
        self.client = TestClient(self.app)
        self.alice, self.bob = self.client.connect(), self.client.connect()
        self.exact = self.alice.register("com.example.add", answer, invoke="roundrobin")
        self.bob.register("com.example.add", answer, invoke="roundrobin")
        self.prefix = self.bob.register("com.example.", answer, match="prefix")
        self.wildcard = self.alice.register("com..add", answer, match="wildcard", invoke="last")

    def call(self, procedure: str, *args: Any) -> Any:
        return self.successResultOf(self.alice.call(f"wamp.registration.{procedure}", *args))

    def test_ids_are_derived_from_uri_and_match_policy(self) -> None:
        self.assertEqual(self.exact, registration_id_for("com.example.add", "exact"))
        self.assertEqual(self.prefix, registration_id_for("com.example.", "prefix"))
        self.assertNotEqual(self.exact, subscription_id_for("com.example.add", "exact"))

    def test_list(self) -> None:
        self.assertEqual(
            self.call("list"),
            {"exact": [self.exact], "prefix": [self.prefix], "wildcard": [self.wildcard]},
        )

    def test_lookup(self) -> None:
        self.assertEqual(self.call("lookup", "com.example.add"), self.exact)
        self.assertEqual(self.call("lookup", "com.example.add", {"match": "exact"}), self.exact)
        self.assertEqual(self.call("lookup", "com.example.", {"match": "prefix"}), self.prefix)
        self.assertEqual(
            self.call("lookup", "com..add", {"match": "wildcard", "invoke": "last"}), self.wildcard
        )
        self.assertIsNone(self.call("lookup", "com.example.sub"))
        self.assertIsNone(self.call("lookup", "com.example.add", {"match": "prefix"}))

    def test_lookup_answers_one_null_argument(self) -> None:
        self.alice.call("wamp.registration.lookup", "com.nothing")
        [result] = [m for m in self.alice.messages if isinstance(m, message.Result)]
        self.assertEqual(result.args, [None])

    def test_match_is_the_registration_a_call_reaches(self) -> None:
        self.assertEqual(self.call("match", "com.example.add"), self.exact)
        self.assertEqual(self.call("match", "com.example.sub"), self.prefix)
        self.assertEqual(self.call("match", "com.other.add"), self.wildcard)
        self.assertIsNone(self.call("match", "org.nothing"))

    def test_get(self) -> None:
        details = self.call("get", self.wildcard)
        self.assertEqual(
            {key: details[key] for key in ("id", "uri", "match", "invoke")},
            {"id": self.wildcard, "uri": "com..add", "match": "wildcard", "invoke": "last"},
        )
        self.assertRegex(details["created"], ISO_8601)

    def test_callees(self) -> None:
        self.assertEqual(self.call("list_callees", self.exact), [self.alice.id, self.bob.id])
        self.assertEqual(self.call("count_callees", self.exact), 2)
        self.assertEqual(self.call("list_callees", self.prefix), [self.bob.id])
        self.assertEqual(self.call("count_callees", self.wildcard), 1)
        self.bob.disconnect()
        self.assertEqual(self.call("list_callees", self.exact), [self.alice.id])
        self.assertEqual(error_of(self.alice.call("wamp.registration.get", self.prefix), self), NO_SUCH)

    def test_the_apps_procedures_are_not_registrations_of_the_meta_api(self) -> None:
        app_id = self.app.router.dealer.registration("com.example.app").id  # type: ignore[union-attr]
        self.assertNotIn(app_id, sum(self.call("list").values(), []))
        self.assertIsNone(self.call("lookup", "com.example.app"))
        self.assertIsNone(self.call("match", "com.example.app"))  # a call reaches the app, not the prefix
        for procedure in ("get", "list_callees", "count_callees"):
            self.assertEqual(
                error_of(self.alice.call(f"wamp.registration.{procedure}", app_id), self), NO_SUCH
            )

    def test_unknown_registrations(self) -> None:
        unknown = registration_id_for("com.nothing", "exact")
        for procedure in ("get", "list_callees", "count_callees"):
            for registration_id in (unknown, 1):
                d = self.alice.call(f"wamp.registration.{procedure}", registration_id)
                self.assertEqual(error_of(d, self), NO_SUCH, procedure)

    def test_bad_arguments(self) -> None:
        for procedure, args in (
            ("get", ["1"]),
            ("get", [1.5]),
            ("get", [True]),
            ("get", [None]),
            ("list_callees", [[1]]),
            ("count_callees", []),
            ("lookup", [1]),
            ("lookup", []),
            ("lookup", ["com.x", {"match": "fuzzy"}]),
            ("lookup", ["com.x", "exact"]),
            ("match", [["com.x"]]),
            ("match", ["com.x", "com.y"]),
            ("list", [1]),
        ):
            d = self.alice.call(f"wamp.registration.{procedure}", *args)
            self.assertEqual(error_of(d, self), "wamp.error.invalid_argument", (procedure, args))
        self.assertTrue(self.alice._session.is_open)

    def test_welcome_announces_the_registration_meta_api(self) -> None:
        [welcome] = [m for m in self.alice.messages if isinstance(m, message.Welcome)]
        self.assertTrue(welcome.roles["dealer"].registration_meta_api)


NO_SUCH = "wamp.error.no_such_registration"

# staff may call everything; users only com. procedures (and the registration meta API)
ALLOWED = {"staff": ("wamp.", "com.", "secret."), "user": ("wamp.registration.", "com.")}


def authorize(session: Any, action: str, uri: str, match: str) -> bool:
    return any(uri.startswith(prefix) for prefix in ALLOWED.get(session.authrole, ()))


def connect(client: TestClient, authrole: str) -> TestSession:
    session = client.connect()
    session._session.authrole = authrole
    return session


class MetaAuthorizationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.asked: list[tuple[str, str, str]] = []

        def recording(session: Any, action: str, uri: str, match: str) -> bool:
            self.asked.append((action, uri, match))
            return authorize(session, action, uri, match)

        self.app.authorizer(recording)
        self.client = TestClient(self.app)
        self.staff, self.user = connect(self.client, "staff"), connect(self.client, "user")

    def call(self, session: TestSession, procedure: str, *args: Any) -> Any:
        return self.successResultOf(session.call(f"wamp.registration.{procedure}", *args))

    def test_meta_procedures_and_topics_are_subject_to_the_authorizer(self) -> None:
        nobody = connect(self.client, "nobody")
        self.assertEqual(error_of(nobody.call("wamp.registration.list"), self), "wamp.error.not_authorized")
        with self.assertRaises(ApplicationError) as caught:
            nobody.subscribe(ON_CREATE)
        self.assertEqual(caught.exception.error, "wamp.error.not_authorized")
        self.assertIn(("call", "wamp.registration.list", "exact"), self.asked)
        self.assertIn(("subscribe", ON_CREATE, "exact"), self.asked)

    def test_meta_events_show_only_what_the_receiver_may_call(self) -> None:
        staffs, users = self.staff.subscribe(ON_REGISTER), self.user.subscribe(ON_REGISTER)
        wide = self.user.subscribe("wamp.registration.", match="prefix")
        other = connect(self.client, "staff")
        secret = other.register("secret.plan", answer)
        public = other.register("com.plan", answer)
        other.leave()
        self.assertEqual([e.args for e in staffs.events], [[other.id, secret], [other.id, public]])
        self.assertEqual([e.args for e in users.events], [[other.id, public]])
        self.assertEqual([e.topic for e in wide.events], [ON_CREATE, ON_REGISTER, ON_UNREGISTER, ON_DELETE])
        self.assertTrue(all(e.args[0] == other.id for e in wide.events))
        self.assertEqual(wide.events[-1].args, [other.id, public])

    def test_meta_procedures_show_only_what_the_caller_may_call(self) -> None:
        other = connect(self.client, "staff")
        secret, public = other.register("secret.plan", answer), other.register("com.plan", answer)
        pattern = other.register("secret.", answer, match="prefix")
        self.assertEqual(self.call(self.user, "list"), {"exact": [public], "prefix": [], "wildcard": []})
        self.assertEqual(self.call(self.staff, "list")["prefix"], [pattern])
        self.assertIsNone(self.call(self.user, "lookup", "secret.plan"))
        self.assertEqual(self.call(self.staff, "lookup", "secret.plan"), secret)
        self.assertIsNone(self.call(self.user, "match", "secret.plan"))
        self.assertIsNone(self.call(self.user, "match", "secret.other"))
        self.assertEqual(self.call(self.staff, "match", "secret.other"), pattern)
        for procedure in ("get", "list_callees", "count_callees"):
            for hidden in (secret, pattern):
                d = self.user.call(f"wamp.registration.{procedure}", hidden)
                self.assertEqual(error_of(d, self), NO_SUCH)
        self.assertEqual(self.call(self.user, "list_callees", public), [other.id])

    def test_the_authorizer_is_asked_of_the_pattern_with_its_match_policy(self) -> None:
        other = connect(self.client, "staff")
        other.register("com..plan", answer, match="wildcard")
        self.asked.clear()
        self.call(self.user, "list")
        self.assertIn(("call", "com..plan", "wildcard"), self.asked)

    def test_asynchronous_answers_hide_the_registration(self) -> None:
        self.app.authorizer(lambda session, action, uri, match: succeed(True) if uri == "com.slow" else True)
        other = self.client.connect()
        other.register("com.slow", answer)
        other.register("com.fast", answer)
        self.assertEqual(self.call(self.user, "list")["exact"], [registration_id_for("com.fast", "exact")])
        self.flushLoggedErrors()

    def test_decisions_are_cached_only_for_joined_sessions(self) -> None:
        authorization = self.app.router.authorization

        class Principal:  # as the HTTP bridge's one request
            id = 0
            authrole = "user"

        self.assertTrue(authorization.allows_call(Principal(), "com.x"))
        self.assertTrue(authorization.allows_call(self.user._session, "com.x"))
        self.assertEqual(list(authorization._decisions), [self.user._session])


class ClusterViewTests(Watching, SynchronousTestCase):
    """The other nodes' callees, as the bus arranges them into the router: answers and meta events."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.router = self.app.router
        self.client = TestClient(self.app)
        self.watch(self.client)
        self.carol, self.dave = RemoteCallee(77), RemoteCallee(88)

    def arrange(self, uri: str, invoke: str | None, *order: Callee | int, match: str = "exact") -> None:
        self.router.arrange_registration(uri, match, invoke, list(order))

    def call(self, procedure: str, *args: Any) -> Any:
        return self.successResultOf(self.watcher.call(f"wamp.registration.{procedure}", *args))

    def test_a_registration_held_only_elsewhere(self) -> None:
        rid = registration_id_for("com.remote", "prefix")
        self.arrange("com.remote", "roundrobin", self.carol, self.dave, match="prefix")
        [(topic, [creator, details]), *registered] = self.seen()
        self.assertEqual((topic, creator), (ON_CREATE, 77))
        self.assertEqual(
            {key: details[key] for key in ("id", "uri", "match", "invoke")},
            {"id": rid, "uri": "com.remote", "match": "prefix", "invoke": "roundrobin"},
        )
        self.assertEqual(registered, [(ON_REGISTER, [77, rid]), (ON_REGISTER, [88, rid])])
        self.assertEqual(self.call("list")["prefix"], [rid])
        self.assertEqual(self.call("match", "com.remote.x"), rid)
        self.assertEqual(self.call("list_callees", rid), [77, 88])
        self.assertEqual(self.call("get", rid)["created"], details["created"])

        self.arrange("com.remote", "roundrobin", self.dave, match="prefix")
        self.arrange("com.remote", None, match="prefix")
        self.assertEqual(
            self.seen()[3:], [(ON_UNREGISTER, [77, rid]), (ON_UNREGISTER, [88, rid]), (ON_DELETE, [88, rid])]
        )
        self.assertEqual(error_of(self.watcher.call("wamp.registration.get", rid), self), NO_SUCH)

    def test_a_shared_registration_across_nodes(self) -> None:
        alice = self.client.connect()
        rid = alice.register("com.shared", answer, invoke="roundrobin")
        self.arrange("com.shared", "roundrobin", self.carol, alice.id)  # the cluster's order
        self.assertEqual(self.call("list_callees", rid), [77, alice.id])
        self.assertEqual(self.call("count_callees", rid), 2)
        alice.leave()
        self.arrange("com.shared", "roundrobin", self.carol)
        self.arrange("com.shared", None)
        self.assertEqual(
            [(topic, args[0]) for topic, args in self.seen()],
            [
                (ON_CREATE, alice.id),
                (ON_REGISTER, alice.id),
                (ON_REGISTER, 77),
                (ON_UNREGISTER, alice.id),
                (ON_UNREGISTER, 77),
                (ON_DELETE, 77),
            ],
        )

    def test_a_new_order_of_the_same_callees_fires_nothing(self) -> None:
        self.arrange("com.x", "roundrobin", self.carol, self.dave)
        before = self.seen()
        self.arrange("com.x", "roundrobin", self.dave, self.carol)
        self.arrange("com.x", "roundrobin", self.dave, self.carol)
        self.assertEqual(self.seen(), before)
        self.assertEqual(self.call("list_callees", registration_id_for("com.x", "exact")), [88, 77])

    def test_a_callee_replaced_at_once_keeps_the_registration(self) -> None:
        rid = registration_id_for("com.x", "exact")
        self.arrange("com.x", "single", self.carol)
        self.arrange("com.x", "single", self.dave)
        self.assertEqual(
            self.seen()[1:], [(ON_REGISTER, [77, rid]), (ON_UNREGISTER, [77, rid]), (ON_REGISTER, [88, rid])]
        )

    def test_the_apps_procedure_is_never_the_clusters(self) -> None:
        self.app.procedure("com.app")(answer)
        self.arrange("com.app", "single", self.carol)
        self.assertEqual(self.seen(), [])


class ClaimingCluster(LocalCluster):
    """A cluster whose claims are answered later, by the test."""

    def __init__(self) -> None:
        self.claims: list[Deferred[bool]] = []

    def claim(self, registration: Registration, callee: Callee) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.claims.append(d)
        return d


class ClaimTests(Watching, SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.cluster = ClaimingCluster()
        self.app.router.use_cluster(self.cluster)
        self.client = TestClient(self.app)
        self.watch(self.client)
        self.alice = self.client.connect()

    def register(self) -> Deferred[Any]:
        return self.alice._request(message.Register.MESSAGE_TYPE, {}, "com.claimed")

    def test_events_as_soon_as_this_node_routes_to_it(self) -> None:
        registered = self.register()
        rid = registration_id_for("com.claimed", "exact")
        self.assertEqual([topic for topic, _ in self.seen()], [ON_CREATE, ON_REGISTER])
        self.cluster.claims[0].callback(True)
        self.assertEqual(self.successResultOf(registered), rid)
        self.assertEqual(len(self.seen()), 2)

    def test_a_claim_the_cluster_refuses_takes_it_back(self) -> None:
        registered = self.register()
        self.cluster.claims[0].callback(False)
        self.assertEqual(error_of(registered, self), "wamp.error.procedure_already_exists")
        rid = registration_id_for("com.claimed", "exact")
        self.assertEqual(
            [(topic, args[0]) for topic, args in self.seen()],
            [
                (ON_CREATE, self.alice.id),
                (ON_REGISTER, self.alice.id),
                (ON_UNREGISTER, self.alice.id),
                (ON_DELETE, self.alice.id),
            ],
        )
        self.assertEqual(self.seen()[-1][1], [self.alice.id, rid])

    def test_a_callee_leaving_during_its_claim(self) -> None:
        self.register()
        self.alice.disconnect()
        self.cluster.claims[0].callback(True)
        self.assertEqual(
            [topic for topic, _ in self.seen()], [ON_CREATE, ON_REGISTER, ON_UNREGISTER, ON_DELETE]
        )
