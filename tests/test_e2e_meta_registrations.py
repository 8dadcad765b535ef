"""End-to-end: the registration meta API (procedures and events), with autobahn-python clients over real TCP
on one node (every serializer, authorization, errors) and on two nodes sharing a real redis-server (in one
reactor): the same answers on both nodes, and each node's meta subscribers get each event once."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions
from twisted.internet import defer

from sandstone import Sandstone
from tests.cluster_support import ClusterTestCase, Node
from tests.support import SERIALIZERS, Client, ServerTestCase, sleep, wait_until

ON_CREATE = "wamp.registration.on_create"
ON_REGISTER = "wamp.registration.on_register"
ON_UNREGISTER = "wamp.registration.on_unregister"
ON_DELETE = "wamp.registration.on_delete"
REGISTRATION_EVENTS = (ON_CREATE, ON_REGISTER, ON_UNREGISTER, ON_DELETE)
ISO_8601 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
NO_SUCH = "wamp.error.no_such_registration"
INVALID = "wamp.error.invalid_argument"


def open_router() -> Sandstone:
    return Sandstone(anonymous=True, open_uris=True)


def args(client: Client, topic: str) -> list[list[Any]]:
    return [event.args for event in client.received.get(topic, [])]


def answer(*args: Any, **kwargs: Any) -> str:
    return "answer"


async def call_error(call: defer.Deferred[Any]) -> str:
    try:
        await call
    except ApplicationError as error:
        return str(error.error)
    raise AssertionError("the call succeeded")


async def watch(client: Client) -> Client:
    for topic in REGISTRATION_EVENTS:
        await client.record(topic)
    return client


class OneNodeTests(ServerTestCase):
    timeout = 30

    async def test_meta_procedures_and_events_over_every_serializer(self) -> None:
        app = open_router()
        app.procedure("com.example.app")(answer)  # the app's own: no registration of the meta API
        self.serve(app)
        for serializer in SERIALIZERS:
            await self.meta_api_over(serializer)

    async def meta_api_over(self, serializer: str) -> None:
        watcher = await watch(await self.connect(serializer))
        alice, bob = await self.connect(serializer), await self.connect(serializer)
        alice_id, bob_id = alice._session_id, bob._session_id
        shared = RegisterOptions(invoke="roundrobin")
        add = await alice.register(answer, "com.example.add", options=shared)
        await bob.register(answer, "com.example.add", options=shared)
        prefix = await alice.register(answer, "com.example.", options=RegisterOptions(match="prefix"))
        wildcard = await bob.register(answer, "com..add", options=RegisterOptions(match="wildcard"))
        await wait_until(lambda: len(args(watcher, ON_REGISTER)) == 4)
        created = args(watcher, ON_CREATE)
        self.assertEqual(
            [(c[0], c[1]["id"], c[1]["uri"], c[1]["match"], c[1]["invoke"]) for c in created],
            [
                (alice_id, add.id, "com.example.add", "exact", "roundrobin"),
                (alice_id, prefix.id, "com.example.", "prefix", "single"),
                (bob_id, wildcard.id, "com..add", "wildcard", "single"),
            ],
            serializer,
        )
        self.assertRegex(created[0][1]["created"], ISO_8601)
        self.assertEqual(
            args(watcher, ON_REGISTER),
            [[alice_id, add.id], [bob_id, add.id], [alice_id, prefix.id], [bob_id, wildcard.id]],
        )

        call = watcher.call
        self.assertEqual(
            await call("wamp.registration.list"),
            {"exact": [add.id], "prefix": [prefix.id], "wildcard": [wildcard.id]},
        )
        self.assertEqual(await call("wamp.registration.lookup", "com.example.add"), add.id)
        self.assertEqual(
            await call("wamp.registration.lookup", "com.example.", {"match": "prefix"}), prefix.id
        )
        self.assertIsNone(await call("wamp.registration.lookup", "com.example.sub"))
        self.assertIsNone(await call("wamp.registration.lookup", "com.example.app"))
        self.assertEqual(await call("wamp.registration.match", "com.example.add"), add.id)
        self.assertEqual(await call("wamp.registration.match", "com.example.sub"), prefix.id)
        self.assertEqual(await call("wamp.registration.match", "com.other.add"), wildcard.id)
        self.assertIsNone(await call("wamp.registration.match", "org.nothing"))
        self.assertIsNone(await call("wamp.registration.match", "com.example.app"))  # the app serves it
        self.assertEqual(await call("wamp.registration.get", add.id), created[0][1])
        self.assertEqual(await call("wamp.registration.list_callees", add.id), [alice_id, bob_id])
        self.assertEqual(await call("wamp.registration.count_callees", add.id), 2)
        self.assertEqual(await call("wamp.registration.count_callees", wildcard.id), 1)

        for bad, error in (
            (call("wamp.registration.get", 1), NO_SUCH),
            (call("wamp.registration.list_callees", 1), NO_SUCH),
            (call("wamp.registration.count_callees", 1), NO_SUCH),
            (call("wamp.registration.get", "x"), INVALID),
            (call("wamp.registration.list_callees", None), INVALID),
            (call("wamp.registration.count_callees"), INVALID),
            (call("wamp.registration.lookup", 42), INVALID),
            (call("wamp.registration.lookup", "com.x", {"match": "fuzzy"}), INVALID),
            (call("wamp.registration.match", ["com.x"]), INVALID),
        ):
            self.assertEqual(await call_error(bad), error)

        await add.unregister()
        await self.drop(bob)
        await wait_until(lambda: len(args(watcher, ON_DELETE)) == 2)
        self.assertEqual(
            args(watcher, ON_UNREGISTER), [[alice_id, add.id], [bob_id, add.id], [bob_id, wildcard.id]]
        )
        self.assertEqual(args(watcher, ON_DELETE), [[bob_id, add.id], [bob_id, wildcard.id]])
        self.assertEqual(await call_error(call("wamp.registration.get", add.id)), NO_SUCH)
        await alice.leave()
        await wait_until(lambda: len(args(watcher, ON_DELETE)) == 3)
        self.assertEqual(await call("wamp.registration.list"), {"exact": [], "prefix": [], "wildcard": []})
        await watcher.leave()

    async def test_the_welcome_announces_the_registration_meta_api(self) -> None:
        self.serve(open_router())
        client = await self.connect()
        self.assertTrue(client._router_roles["dealer"].registration_meta_api)

    async def test_meta_api_shows_only_what_the_receiver_may_call(self) -> None:
        app = open_router()
        guests: set[int] = set()

        @app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> bool:
            return session.id not in guests or not uri.startswith(("secret.", "wamp.session."))

        self.serve(app)
        guest, staff, other = await self.connect(), await self.connect("msgpack"), await self.connect("cbor")
        guests.add(guest._session_id)
        await guest.record(ON_REGISTER)
        await guest.record("wamp.registration.", match="prefix")
        await staff.record(ON_REGISTER)
        secret = await other.register(answer, "secret.plan")
        pattern = await other.register(answer, "secret.", options=RegisterOptions(match="prefix"))
        public = await other.register(answer, "com.plan")
        await wait_until(lambda: len(args(staff, ON_REGISTER)) == 3 and len(args(guest, ON_REGISTER)) == 1)
        await sleep(0.1)
        other_id = other._session_id
        self.assertEqual(
            args(staff, ON_REGISTER), [[other_id, secret.id], [other_id, pattern.id], [other_id, public.id]]
        )
        self.assertEqual(args(guest, ON_REGISTER), [[other_id, public.id]])
        self.assertEqual(
            [(e.details.topic, e.args[0]) for e in guest.received["wamp.registration."]],
            [(ON_CREATE, other_id), (ON_REGISTER, other_id)],
        )

        self.assertEqual(
            await guest.call("wamp.registration.list"), {"exact": [public.id], "prefix": [], "wildcard": []}
        )
        self.assertEqual(
            await staff.call("wamp.registration.list"),
            {"exact": [secret.id, public.id], "prefix": [pattern.id], "wildcard": []},
        )
        self.assertIsNone(await guest.call("wamp.registration.lookup", "secret.plan"))
        self.assertIsNone(await guest.call("wamp.registration.match", "secret.other"))
        self.assertEqual(await staff.call("wamp.registration.match", "secret.other"), pattern.id)
        for procedure in ("get", "list_callees", "count_callees"):
            for hidden in (secret.id, pattern.id):
                self.assertEqual(
                    await call_error(guest.call(f"wamp.registration.{procedure}", hidden)), NO_SUCH
                )
        self.assertEqual(await guest.call("wamp.registration.list_callees", public.id), [other_id])
        self.assertEqual(await call_error(guest.call("wamp.session.count")), "wamp.error.not_authorized")


class ClusterTests(ClusterTestCase):
    async def two_nodes(self) -> list[Node]:
        return await self.start_cluster(open_router, 2)

    def callees_seen(self, node: Node, procedure: str, match: str = "exact") -> int:
        registration = node.app.router.dealer.registration(procedure, match)
        return 0 if registration is None else len(registration.callees)

    async def test_answers_cover_every_node_with_the_same_ids(self) -> None:
        a, b = await self.two_nodes()
        alice, bob = await self.connect_to(a), await self.connect_to(b, "msgpack")
        shared = RegisterOptions(invoke="roundrobin")
        on_a = await alice.register(answer, "com.shared", options=shared)
        await wait_until(lambda: self.callees_seen(b, "com.shared") == 1)
        on_b = await bob.register(answer, "com.shared", options=shared)
        only_b = await bob.register(answer, "com..only", options=RegisterOptions(match="wildcard"))
        self.assertEqual(on_a.id, on_b.id)  # one registration, one id, whichever node
        await wait_until(
            lambda: self.callees_seen(a, "com.shared") == 2 and self.callees_seen(a, "com..only", "wildcard")
        )
        for client in (alice, bob):
            self.assertEqual(
                await client.call("wamp.registration.list"),
                {"exact": [on_a.id], "prefix": [], "wildcard": [only_b.id]},
            )
            self.assertEqual(
                await client.call("wamp.registration.list_callees", on_a.id),
                [alice._session_id, bob._session_id],  # the order they registered in, cluster-wide
            )
            self.assertEqual(await client.call("wamp.registration.count_callees", on_a.id), 2)
            self.assertEqual(
                await client.call("wamp.registration.lookup", "com..only", {"match": "wildcard"}), only_b.id
            )
            self.assertEqual(await client.call("wamp.registration.match", "com.x.only"), only_b.id)
            details = await client.call("wamp.registration.get", on_a.id)
            self.assertEqual(
                (details["id"], details["uri"], details["match"], details["invoke"]),
                (on_a.id, "com.shared", "exact", "roundrobin"),
            )
        await only_b.unregister()
        await wait_until(lambda: not self.callees_seen(a, "com..only", "wildcard"))
        self.assertEqual(await call_error(alice.call("wamp.registration.get", only_b.id)), NO_SUCH)

    async def test_meta_events_fire_once_on_every_node(self) -> None:
        a, b = await self.two_nodes()
        on_a, on_b = await watch(await self.connect_to(a)), await watch(await self.connect_to(b, "cbor"))
        watchers = (on_a, on_b)
        alice = await self.connect_to(a, "msgpack")
        alice_id = alice._session_id
        shared = RegisterOptions(invoke="roundrobin")
        held = await alice.register(answer, "com.shared", options=shared)
        await wait_until(lambda: all(args(w, ON_REGISTER) for w in watchers))

        bob = await self.connect_to(b)
        bob_id = bob._session_id
        await bob.register(answer, "com.shared", options=shared)  # held on A already: no on_create
        await wait_until(lambda: all(len(args(w, ON_REGISTER)) == 2 for w in watchers))
        await held.unregister()  # bob still holds it: no on_delete
        await wait_until(lambda: all(args(w, ON_UNREGISTER) for w in watchers))
        await bob.leave()
        await wait_until(lambda: all(args(w, ON_DELETE) for w in watchers))
        await sleep(0.3)  # nothing more comes, from either node
        rid = held.id
        for watcher in watchers:
            [[creator, details]] = args(watcher, ON_CREATE)
            self.assertEqual(
                (creator, details["id"], details["uri"], details["invoke"]),
                (alice_id, rid, "com.shared", "roundrobin"),
            )
            self.assertRegex(details["created"], ISO_8601)
            self.assertEqual(args(watcher, ON_REGISTER), [[alice_id, rid], [bob_id, rid]])
            self.assertEqual(args(watcher, ON_UNREGISTER), [[alice_id, rid], [bob_id, rid]])
            self.assertEqual(args(watcher, ON_DELETE), [[bob_id, rid]])

    async def test_a_dead_nodes_callees_are_unregistered(self) -> None:
        a, b = await self.two_nodes()
        watcher = await watch(await self.connect_to(a))
        bob = await self.connect_to(b)
        held = await bob.register(answer, "com.on_b")
        await wait_until(lambda: args(watcher, ON_REGISTER))
        self.assertEqual(await watcher.call("wamp.registration.list_callees", held.id), [bob._session_id])

        await self.kill_bus(b)
        await wait_until(lambda: args(watcher, ON_DELETE), timeout=5)
        self.assertEqual(args(watcher, ON_UNREGISTER), [[bob._session_id, held.id]])
        self.assertEqual(args(watcher, ON_DELETE), [[bob._session_id, held.id]])
        self.assertEqual(await call_error(watcher.call("wamp.registration.get", held.id)), NO_SUCH)
