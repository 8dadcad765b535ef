"""Tests for L{sandstone._cluster}: causes and their keys, the single-node ``LocalCluster``, and the seam
between the router and its cluster (what the router asks of a ``Cluster``, in what terms)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Publication, Sandstone, Topic, on_event
from sandstone._call import Call, Caller
from sandstone._cluster import Cause, Cluster, LocalCluster, publication_id_for
from sandstone._dealer import Registration
from sandstone._errors import NO_SUCH_PROCEDURE, PROCEDURE_ALREADY_EXISTS, WampError
from sandstone._ids import MAX_ID
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
        registration = Registration("com.x", None, lambda: None)
        self.assertTrue(self.successResultOf(cluster.claim(registration)))
        with self.assertRaises(WampError) as caught:
            cluster.call(Call(_Caller(), 1, "com.nowhere"))
        self.assertEqual(caught.exception.uri, NO_SUCH_PROCEDURE)
        self.assertFalse(cluster.cancel(_Caller(), 1, None))

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


class RecordingCluster(LocalCluster):
    """A ``Cluster`` recording what the router asks of it (presence aside: a node on its own's answers);
    its answers are set by the test."""

    keys_broadcasts = True

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []
        self.first = True
        self.claimed = True
        self.causes: dict[str, Cause | None] = {}

    def forward(self, name: str, data: dict[str, Any], parent: Cause | None) -> Cause | None:
        self.asked.append(("forward", name, data, parent))
        return self.causes.get(name, Cause(f"cause-of-{name}"))

    def first_delivery(self, publication: Publication) -> bool:
        self.asked.append(("first_delivery", publication.key))
        return self.first

    def announce(self, publication: Publication) -> None:
        self.asked.append(("announce", publication.topic, publication.args, publication.key))

    def claim(self, registration: Registration) -> Deferred[bool]:
        self.asked.append(("claim", registration.uri))
        return succeed(self.claimed)

    def released(self, registration: Registration) -> None:
        self.asked.append(("released", registration.uri))

    def call(self, call: Call) -> None:
        self.asked.append(("call", call))

    def cancel(self, caller: Caller, request: int, mode: str | None) -> bool:
        self.asked.append(("cancel", caller, request, mode))
        return True

    def caller_left(self, caller: Caller) -> None:
        self.asked.append(("caller_left", caller))

    def kinds(self) -> list[str]:
        return [asked[0] for asked in self.asked]


def _is_cluster(cluster: Cluster) -> Cluster:
    return cluster  # type-checks that RecordingCluster and LocalCluster implement the interface


class RouterSeamTests(SynchronousTestCase):
    """The router asks its cluster through the interface only, in domain terms."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.cluster = RecordingCluster()
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
        self.assertEqual(self.cluster.asked, [("claim", "com.x")])
        callee.send_raw([66, 9, registration])  # UNREGISTER
        self.assertEqual(self.cluster.asked[-1], ("released", "com.x"))

    def test_a_registration_claimed_elsewhere_is_refused_and_withdrawn(self) -> None:
        self.cluster.claimed = False
        callee = self.client.connect()
        with self.assertRaises(ApplicationError) as caught:
            callee.register("com.x", lambda: 1)
        self.assertEqual(caught.exception.error, PROCEDURE_ALREADY_EXISTS)
        self.assertIsNone(self.app.router.dealer.registration("com.x"))
        callee.leave()
        self.assertNotIn("released", self.cluster.kinds())

    def test_a_call_with_no_callee_here_goes_to_the_cluster_as_a_call(self) -> None:
        caller = self.client.connect()
        answer = caller._request(
            48, {"disclose_me": True, "receive_progress": True}, "com.far", [1], {"k": 2}
        )
        [(kind, call)] = self.cluster.asked
        self.assertEqual(kind, "call")
        self.assertIs(call.caller, caller._session)
        self.assertEqual(
            (call.procedure, call.args, call.kwargs, call.receive_progress, call.disclose_me),
            ("com.far", [1], {"k": 2}, True, True),
        )
        call.caller.send_result(call.request, [1], None, True)  # a progressive result
        call.caller.send_result(call.request, [3])
        results = [m for m in caller.messages if type(m).__name__ == "Result"]
        self.assertEqual([(r.request, r.args, r.progress) for r in results], [(1, [1], True), (1, [3], None)])
        self.assertEqual(self.successResultOf(answer), 1)  # the test client settles on the first RESULT

    def test_a_call_served_here_stays_here(self) -> None:
        self.app.procedure("com.here")(lambda: "here")
        caller = self.client.connect()
        self.assertEqual(self.successResultOf(caller.call("com.here")), "here")
        self.assertEqual(self.cluster.asked, [])

    def test_cancel_and_leave_of_a_call_elsewhere(self) -> None:
        caller = self.client.connect()
        pending = caller.call("com.far")
        [(_, call)] = self.cluster.asked
        session = caller._session
        caller.cancel(pending, "kill")
        self.assertEqual(self.cluster.asked[-1], ("cancel", session, call.request, "kill"))
        caller.leave()
        self.assertEqual(self.cluster.asked[-1], ("caller_left", session))

    def test_a_leaving_callee_releases_its_registrations(self) -> None:
        callee = self.client.connect()
        callee.register("com.a", lambda: 1)
        callee.register("com.b", lambda: 2)
        callee.disconnect()
        self.assertEqual(
            sorted(a for a in self.cluster.asked if a[0] == "released"),
            [("released", "com.a"), ("released", "com.b")],
        )
        self.assertEqual(self.cluster.asked[-1], ("caller_left", callee._session))

    def test_a_call_from_another_node_reaches_a_client_callee_here(self) -> None:
        callee = self.client.connect()
        callee.register("com.x", lambda a: a * 2)
        caller = _Caller()
        self.app.router.call_from_cluster(Call(caller, 5, "com.x", [21], disclose_me=True))
        self.assertEqual(caller.answers, [("result", 5, [42], None, False)])
        invocation = next(m for m in callee.messages if type(m).__name__ == "Invocation")
        self.assertEqual((invocation.caller, invocation.caller_authid), (77, "far"))
        # the app's own procedures are on every node: not served for another one
        self.app.procedure("com.app")(lambda: 1)
        with self.assertRaises(WampError) as caught:
            self.app.router.call_from_cluster(Call(caller, 6, "com.app"))
        self.assertEqual(caught.exception.uri, NO_SUCH_PROCEDURE)
