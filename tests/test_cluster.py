"""Tests for L{sandstone._cluster}: causes and their keys, the single-node ``LocalCluster``, and the seam
between the router and its cluster (what the router asks of a ``Cluster``, in what terms)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Publication, Sandstone, Topic, on_event
from sandstone._call import Call, Callee
from sandstone._cluster import Cause, Cluster, LocalCluster, publication_id_for
from sandstone._errors import NO_SUCH_PROCEDURE, PROCEDURE_ALREADY_EXISTS, WampError
from sandstone._ids import MAX_ID
from sandstone._registrations import Registration
from sandstone._router import Router
from sandstone.testing import TestClient


class CauseTests(SynchronousTestCase):
    def test_keys_count_per_source_and_topic(self) -> None:
        cause = Cause("e1")
        keys = [
            cause.key("topic", "articles"),
            cause.key("app", "articles"),
            cause.key("topic", "articles"),
            cause.key("topic", "other"),
        ]
        self.assertEqual(
            keys, ["e1:topic:articles:1", "e1:app:articles:1", "e1:topic:articles:2", "e1:topic:other:1"]
        )

    def test_every_node_derives_the_same_keys_and_child_ids(self) -> None:
        here, there = Cause("e1"), Cause("e1")
        for cause in (here, there):
            cause.key("app", "t")
        self.assertEqual(here.child_event_id("note"), there.child_event_id("note"))
        self.assertEqual(here.key("app", "t"), there.key("app", "t"))
        # the second child event of a name gets another id, as does the same rank under another cause
        self.assertNotEqual(here.child_event_id("note"), Cause("e1").child_event_id("note"))
        self.assertNotEqual(Cause("e1").child_event_id("note"), Cause("e2").child_event_id("note"))
        self.assertEqual(len(Cause("e1").child_event_id("note")), 32)

    def test_publication_ids_are_derived_from_keys(self) -> None:
        self.assertEqual(publication_id_for("e1:app:t:1"), publication_id_for("e1:app:t:1"))
        self.assertNotEqual(publication_id_for("e1:app:t:1"), publication_id_for("e1:app:t:2"))
        self.assertTrue(all(1 <= publication_id_for(str(i)) <= MAX_ID for i in range(1000)))


class LocalClusterTests(SynchronousTestCase):
    def test_a_node_on_its_own(self) -> None:
        cluster = LocalCluster()
        self.assertFalse(cluster.keys_broadcasts)  # no other node makes the same broadcasts
        cause = cluster.forward("ping", {"n": 1}, None)
        self.assertIsNotNone(cause)
        self.assertIs(cluster.forward("pong", {}, cause), cause)  # one cause serves all: nothing is keyed
        publication = Publication("t", [1], key="e1:app:t:1")
        self.assertTrue(cluster.first_delivery(publication))
        self.assertTrue(cluster.first_delivery(publication))  # nothing else can deliver it here
        registration = Registration("com.x")
        self.assertTrue(self.successResultOf(cluster.claim(registration, _Callee())))
        cluster.released(registration, _Callee())
        # no other node has registrations this one has not heard of
        self.assertIsNone(self.successResultOf(cluster.settle(Call(_Caller(), 1, "com.nowhere"))))

    def test_a_node_on_its_own_keys_nothing(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.forward("ping")
        reader = TestClient(app).connect().subscribe("news")
        ids: list[int] = []
        app.on_event("ping")(lambda event: ids.append(app.broadcast("news", event)))
        self.successResultOf(app.dispatch("ping", {"n": 1}))
        self.assertEqual(reader.payloads, [{"n": 1}])
        self.assertNotEqual(ids[0], publication_id_for("local:app:news:1"))  # a fresh id, no key

    def test_routers_start_with_one(self) -> None:
        router = Router()
        self.assertIsInstance(router.cluster, LocalCluster)
        given = RecordingCluster()
        self.assertIs(Router(cluster=given).cluster, given)
        router.use_cluster(given)
        self.assertIs(router.cluster, given)
        router.use_cluster(None)
        self.assertIsInstance(router.cluster, LocalCluster)


class _Caller:
    """A caller elsewhere, recording its answers."""

    id = 77
    authid = "far"
    authrole = "away"

    def __init__(self) -> None:
        self.answers: list[tuple[Any, ...]] = []

    def send_result(self, request: int, args: Any = None, kwargs: Any = None, progress: bool = False) -> None:
        self.answers.append(("result", request, args, kwargs, progress))

    def send_error(self, request: int, error: str, args: Any = None, kwargs: Any = None) -> None:
        self.answers.append(("error", request, error, args, kwargs))


class _Callee:
    """A callee elsewhere, recording what it is asked."""

    id = 88
    interruptible = True

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        self.asked.append(("invocation", invocation, registration.uri, call))

    def send_interrupt(self, invocation: int, mode: str) -> None:
        self.asked.append(("interrupt", invocation, mode))


class RecordingCluster(LocalCluster):
    """A ``Cluster`` recording what the router asks of it (presence aside: a node on its own's answers);
    its answers are set by the test."""

    keys_broadcasts = True

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []
        self.first = True
        self.claimed = True
        self.learned: list[tuple[str, str, str, list[Any]]] = []  # what the cluster tells while settling
        self.causes: dict[str, Cause | None] = {}
        self.router: Any = None

    def forward(self, name: str, data: dict[str, Any], parent: Cause | None) -> Cause | None:
        self.asked.append(("forward", name, data, parent))
        return self.causes.get(name, Cause(f"cause-of-{name}"))

    def first_delivery(self, publication: Publication) -> bool:
        self.asked.append(("first_delivery", publication.key))
        return self.first

    def announce(self, publication: Publication) -> None:
        self.asked.append(("announce", publication.topic, publication.args, publication.key))

    def claim(self, registration: Registration, callee: Callee) -> Deferred[bool]:
        self.asked.append(("claim", registration.uri, registration.match, registration.invoke, callee))
        return succeed(self.claimed)

    def released(self, registration: Registration, callee: Callee) -> None:
        self.asked.append(("released", registration.uri, callee))

    def settle(self, call: Call) -> Deferred[None]:
        self.asked.append(("settle", call.procedure))
        for uri, match, invoke, callees in self.learned:
            self.router.arrange_registration(uri, match, invoke, callees)
        return succeed(None)

    def kinds(self) -> list[str]:
        return [asked[0] for asked in self.asked]


def _is_cluster(cluster: Cluster) -> Cluster:
    return cluster  # type-checks that RecordingCluster and LocalCluster implement the interface


class RouterSeamTests(SynchronousTestCase):
    """The router asks its cluster through the interface only, in domain terms."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.cluster = RecordingCluster()
        self.cluster.router = self.app.router
        self.app.router.use_cluster(_is_cluster(self.cluster))
        _is_cluster(LocalCluster())
        self.client = TestClient(self.app)

    def test_a_broadcast_is_delivered_then_announced(self) -> None:
        reader = self.client.connect().subscribe("news")
        self.app.broadcast("news", "x")
        self.assertEqual(reader.payloads, ["x"])
        self.assertEqual(self.cluster.asked, [("announce", "news", ["x"], None)])  # unkeyed: no dedupe asked

    def test_a_broadcast_of_a_forwarded_event_is_keyed_by_its_cause(self) -> None:
        reader = self.client.connect().subscribe("news")
        self.app.forward("ping")

        @self.app.topic("news")
        class News(Topic):
            @on_event("ping")
            def pinged(self, event: Any) -> None:
                self.broadcast("from the topic")

        self.app.router.authorization.refresh()
        self.app._core.topics.instance("news")
        self.successResultOf(self.app.dispatch("ping", {"n": 1}))
        key = "cause-of-ping:topic:news:1"
        self.assertEqual(
            self.cluster.asked,
            [
                ("forward", "ping", {"n": 1}, None),
                ("first_delivery", key),
                ("announce", "news", ["from the topic"], key),
            ],
        )
        self.assertEqual(reader.events[0].publication, publication_id_for(key))

    def test_a_key_delivered_here_already_is_not_delivered_again(self) -> None:
        reader = self.client.connect().subscribe("news")
        self.app.forward("ping")
        self.app.on_event("ping")(lambda event: self.app.broadcast("news", "again"))
        self.cluster.first = False
        self.successResultOf(self.app.dispatch("ping", {}))
        self.assertEqual(reader.payloads, [])
        self.assertEqual(self.cluster.kinds(), ["forward", "first_delivery"])

    def test_an_event_handled_here_already_runs_no_listener(self) -> None:
        self.app.forward("ping")
        heard: list[Any] = []
        self.app.on_event("ping")(heard.append)
        self.cluster.causes["ping"] = None
        result = self.successResultOf(self.app.dispatch("ping", {"n": 1}))
        self.assertEqual((heard, result.called), ([], 0))

    def test_registrations_are_claimed_and_released(self) -> None:
        callee = self.client.connect()
        registration = callee.register("com.x", lambda: 1)
        self.assertEqual(self.cluster.asked, [("claim", "com.x", "exact", "single", callee._session)])
        callee.send_raw([66, 9, registration])  # UNREGISTER
        self.assertEqual(self.cluster.asked[-1], ("released", "com.x", callee._session))

    def test_pattern_and_shared_registrations_are_claimed_with_their_policies(self) -> None:
        callee = self.client.connect()
        callee.send_raw([64, 1, {"match": "prefix", "invoke": "roundrobin"}, "com.x."])
        callee.send_raw([64, 2, {"match": "wildcard", "invoke": "last"}, "com..y"])
        self.assertEqual(
            [asked[:4] for asked in self.cluster.asked],
            [("claim", "com.x.", "prefix", "roundrobin"), ("claim", "com..y", "wildcard", "last")],
        )

    def test_a_registration_claimed_elsewhere_is_refused_and_withdrawn(self) -> None:
        self.cluster.claimed = False
        callee = self.client.connect()
        with self.assertRaises(ApplicationError) as caught:
            callee.register("com.x", lambda: 1)
        self.assertEqual(caught.exception.error, PROCEDURE_ALREADY_EXISTS)
        self.assertIsNone(self.app.router.dealer.registration("com.x"))
        callee.leave()
        self.assertNotIn("released", self.cluster.kinds())

    def test_a_call_nothing_here_serves_asks_the_cluster_to_settle_first(self) -> None:
        caller = self.client.connect()
        failure = self.failureResultOf(caller.call("com.far"), ApplicationError)
        self.assertEqual(failure.value.error, NO_SUCH_PROCEDURE)
        self.assertEqual(self.cluster.asked, [("settle", "com.far")])

    def test_a_call_finds_a_callee_the_cluster_learns_of_while_settling(self) -> None:
        far = _Callee()
        self.cluster.learned.append(("com.far.", "prefix", "single", [far]))
        caller = self.client.connect()
        caller.call("com.far.away", 1)
        self.assertEqual(self.cluster.asked, [("settle", "com.far.away")])
        [(kind, _, uri, call)] = far.asked
        self.assertEqual(
            (kind, uri, call.procedure, call.args), ("invocation", "com.far.", "com.far.away", [1])
        )

    def test_a_call_finds_a_callee_the_cluster_made_known(self) -> None:
        far = _Callee()
        self.app.router.arrange_registration("com.far", "exact", "single", [far])
        caller = self.client.connect()
        caller._request(48, {"disclose_me": True, "receive_progress": True}, "com.far", [1], {"k": 2})
        [(kind, invocation, uri, call)] = far.asked
        self.assertEqual((kind, uri), ("invocation", "com.far"))
        self.assertIs(call.caller, caller._session)
        self.assertEqual(
            (call.procedure, call.args, call.kwargs, call.receive_progress, call.disclose_me),
            ("com.far", [1], {"k": 2}, True, True),
        )
        self.app.router.yielded(far, invocation, [1], None, True)  # a progressive result
        self.app.router.yielded(far, invocation, [3], None, False)
        results = [m for m in caller.messages if type(m).__name__ == "Result"]
        self.assertEqual([(r.request, r.args, r.progress) for r in results], [(1, [1], True), (1, [3], None)])
        self.assertEqual(self.cluster.asked, [])  # nothing to ask the cluster for a call it routes itself

    def test_a_call_served_here_stays_here(self) -> None:
        self.app.procedure("com.here")(lambda: "here")
        caller = self.client.connect()
        self.assertEqual(self.successResultOf(caller.call("com.here")), "here")
        self.assertEqual(self.cluster.asked, [])

    def test_cancel_and_leave_of_a_call_elsewhere_interrupt_its_callee(self) -> None:
        far = _Callee()
        self.app.router.arrange_registration("com.far", "exact", "single", [far])
        caller = self.client.connect()
        pending = caller.call("com.far")
        caller.call("com.far")
        (_, first, _, _), (_, second, _, _) = far.asked
        caller.cancel(pending, "kill")
        self.assertEqual(far.asked[-1], ("interrupt", first, "kill"))
        caller.leave()
        self.assertEqual(
            far.asked[-2:], [("interrupt", first, "killnowait"), ("interrupt", second, "killnowait")]
        )

    def test_a_leaving_callee_releases_its_registrations(self) -> None:
        callee = self.client.connect()
        callee.register("com.a", lambda: 1)
        callee.register("com.b", lambda: 2)
        callee.disconnect()
        self.assertEqual(
            sorted(a[:2] for a in self.cluster.asked if a[0] == "released"),
            [("released", "com.a"), ("released", "com.b")],
        )

    def test_a_call_from_another_node_reaches_a_client_callee_here(self) -> None:
        callee = self.client.connect()
        callee.register("com.x", lambda a: a * 2)
        caller = _Caller()
        call = Call(caller, 5, "com.x", [21], disclose_me=True)
        self.app.router.call_from_cluster(call, "com.x", "exact", callee.id)
        self.assertEqual(caller.answers, [("result", 5, [42], None, False)])
        invocation = next(m for m in callee.messages if type(m).__name__ == "Invocation")
        self.assertEqual((invocation.caller, invocation.caller_authid), (77, "far"))
        # the app's own procedures are on every node: not served for another one
        self.app.procedure("com.app")(lambda: 1)
        with self.assertRaises(WampError) as caught:
            self.app.router.call_from_cluster(Call(caller, 6, "com.app"), "com.app", "exact", None)
        self.assertEqual(caught.exception.uri, NO_SUCH_PROCEDURE)

    def test_the_clusters_view_orders_the_callees_of_every_node(self) -> None:
        here = self.client.connect()
        here.send_raw([64, 1, {"invoke": "roundrobin"}, "com.rr"])
        there = _Callee()
        self.app.router.arrange_registration("com.rr", "exact", "roundrobin", [there, here.id])
        registration = self.app.router.dealer.registration("com.rr")
        assert registration is not None
        self.assertEqual(registration.callees, [there, here._session])
        # the other node's callee left the cluster: this node's stays
        self.app.router.arrange_registration("com.rr", "exact", None, [])
        self.assertEqual(registration.callees, [here._session])

    def test_a_call_for_a_callee_that_left_goes_to_another_callee_here(self) -> None:
        first, second = self.client.connect(), self.client.connect()
        first.register("com.rr", lambda: "first", invoke="roundrobin")
        second.register("com.rr", lambda: "second", invoke="roundrobin")
        gone = first.id
        first.disconnect()
        caller = _Caller()
        self.app.router.call_from_cluster(Call(caller, 5, "com.rr"), "com.rr", "exact", gone)
        self.assertEqual(caller.answers, [("result", 5, ["second"], None, False)])
