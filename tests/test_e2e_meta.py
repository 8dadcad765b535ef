"""End-to-end: the meta API (session and subscription meta procedures and events) and topic presence, with
autobahn-python clients over real TCP on one node and on two nodes sharing a real redis-server (in one
reactor; ``test_e2e_cluster_twistd`` SIGKILLs real processes)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from sandstone import Member, Sandstone, Topic
from tests.cluster_support import ClusterTestCase, Node, counts
from tests.support import SERIALIZERS, Client, ServerTestCase, sleep, wait_until

ON_JOIN = "wamp.session.on_join"
ON_LEAVE = "wamp.session.on_leave"
ON_CREATE = "wamp.subscription.on_create"
ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
ON_DELETE = "wamp.subscription.on_delete"
SUBSCRIPTION_EVENTS = (ON_CREATE, ON_SUBSCRIBE, ON_UNSUBSCRIBE, ON_DELETE)


def rooms_app(name: str = "") -> Sandstone:
    """An open router whose ``rooms.{name}`` topics broadcast who joined and left (once in the cluster)."""
    app = Sandstone(anonymous=True, open_uris=True)

    @app.topic("rooms.{name}")
    class Room(Topic):
        def on_join(self, member: Member) -> None:
            self.broadcast({"joined": member.session, "node": name})

        def on_leave(self, member: Member) -> None:
            self.broadcast({"left": member.session, "node": name})

    return app


def args(client: Client, topic: str) -> list[list[Any]]:
    return [event.args for event in client.received.get(topic, [])]


def _details(client: Client) -> dict[str, Any]:
    """A client's session details, as wamp.session.on_join gives them."""
    return {
        "session": client._session_id,
        "authid": client._authid,
        "authrole": "anonymous",
        "authmethod": "anonymous",
        "authprovider": "static",
    }


async def call_error(call: defer.Deferred[Any]) -> str:
    try:
        await call
    except ApplicationError as error:
        return str(error.error)
    raise AssertionError("the call succeeded")


class OneNodeTests(ServerTestCase):
    timeout = 20

    async def test_meta_procedures_and_events_over_every_serializer(self) -> None:
        self.serve(Sandstone(anonymous=True, open_uris=True))
        for serializer in SERIALIZERS:
            await self.meta_api_over(serializer)

    async def meta_api_over(self, serializer: str) -> None:
        watcher = await self.connect(serializer)
        for topic in (ON_JOIN, ON_LEAVE, *SUBSCRIPTION_EVENTS):
            await watcher.record(topic)
        alice = await self.connect(serializer)
        alice_id, alice_authid = alice._session_id, alice._authid
        news = await alice.subscribe(lambda *a: None, "com.example.news")
        prefix = await alice.subscribe(lambda *a: None, "com.example.", options=_match("prefix"))
        await wait_until(lambda: len(args(watcher, ON_SUBSCRIBE)) == 2)
        [joined] = args(watcher, ON_JOIN)
        self.assertEqual(
            joined,
            [
                {
                    "session": alice_id,
                    "authid": alice_authid,
                    "authrole": "anonymous",
                    "authmethod": "anonymous",
                    "authprovider": "static",
                }
            ],
        )
        created = args(watcher, ON_CREATE)
        self.assertEqual(
            [(c[0], c[1]["id"], c[1]["uri"], c[1]["match"]) for c in created],
            [
                (alice_id, news.id, "com.example.news", "exact"),
                (alice_id, prefix.id, "com.example.", "prefix"),
            ],
            serializer,
        )
        self.assertEqual(args(watcher, ON_SUBSCRIBE), [[alice_id, news.id], [alice_id, prefix.id]])

        call = watcher.call
        self.assertEqual(
            await call("wamp.subscription.list"),
            {"exact": [news.id], "prefix": [prefix.id], "wildcard": []},
        )
        self.assertEqual(await call("wamp.subscription.lookup", "com.example.news"), news.id)
        self.assertEqual(
            await call("wamp.subscription.lookup", "com.example.", {"match": "prefix"}), prefix.id
        )
        self.assertIsNone(await call("wamp.subscription.lookup", "com.example.sport"))
        self.assertEqual(
            sorted(await call("wamp.subscription.match", "com.example.news")),
            sorted([news.id, prefix.id]),
        )
        self.assertIsNone(await call("wamp.subscription.match", "org.nothing"))
        details = await call("wamp.subscription.get", news.id)
        self.assertEqual(details["uri"], "com.example.news")
        self.assertEqual(details["created"], created[0][1]["created"])
        self.assertEqual(await call("wamp.subscription.list_subscribers", news.id), [alice_id])
        self.assertEqual(await call("wamp.subscription.count_subscribers", news.id), 1)
        self.assertEqual(await call("wamp.session.count"), 2)
        self.assertEqual(sorted(await call("wamp.session.list")), sorted([watcher._session_id, alice_id]))

        for bad, error in (
            (call("wamp.subscription.get", 1), "wamp.error.no_such_subscription"),
            (call("wamp.subscription.list_subscribers", 1), "wamp.error.no_such_subscription"),
            (call("wamp.subscription.count_subscribers", 1), "wamp.error.no_such_subscription"),
            (call("wamp.subscription.get", "x"), "wamp.error.invalid_argument"),
            (
                call("wamp.subscription.lookup", "com.x", {"match": "fuzzy"}),
                "wamp.error.invalid_argument",
            ),
            (call("wamp.subscription.count_subscribers"), "wamp.error.invalid_argument"),
            (call("wamp.session.get", 1), "wamp.error.no_such_session"),
        ):
            self.assertEqual(await call_error(bad), error)

        await news.unsubscribe()
        await self.drop(alice)
        await wait_until(lambda: args(watcher, ON_LEAVE))
        self.assertEqual(args(watcher, ON_UNSUBSCRIBE), [[alice_id, news.id], [alice_id, prefix.id]])
        self.assertEqual(args(watcher, ON_DELETE), [[alice_id, news.id], [alice_id, prefix.id]])
        self.assertEqual(args(watcher, ON_LEAVE), [[alice_id, alice_authid, "anonymous"]])
        await watcher.leave()

    async def test_meta_events_show_only_what_the_receiver_may_subscribe_to(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)

        @app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> bool:
            if session.id in guests:
                return not uri.startswith(("secret.", "wamp.session."))
            return True

        guests: set[int] = set()
        self.serve(app)
        guest, staff, other = await self.connect(), await self.connect("msgpack"), await self.connect("cbor")
        guests.add(guest._session_id)
        self.assertEqual(
            await call_error(guest.subscribe(lambda *a: None, ON_JOIN)), "wamp.error.not_authorized"
        )
        self.assertEqual(await call_error(guest.call("wamp.session.count")), "wamp.error.not_authorized")
        await guest.record(ON_SUBSCRIBE)
        await guest.record("wamp.subscription.", match="prefix")
        await staff.record(ON_SUBSCRIBE)
        secret = await other.subscribe(lambda *a: None, "secret.plans")
        public = await other.subscribe(lambda *a: None, "com.news")
        await wait_until(lambda: len(args(staff, ON_SUBSCRIBE)) == 2 and len(args(guest, ON_SUBSCRIBE)) == 1)
        await sleep(0.1)
        self.assertEqual(
            args(staff, ON_SUBSCRIBE), [[other._session_id, secret.id], [other._session_id, public.id]]
        )
        self.assertEqual(args(guest, ON_SUBSCRIBE), [[other._session_id, public.id]])
        self.assertEqual(
            [(e.details.topic, e.args[0]) for e in guest.received["wamp.subscription."]],
            [(ON_CREATE, other._session_id), (ON_SUBSCRIBE, other._session_id)],
        )


def _match(policy: str) -> Any:
    from autobahn.wamp.types import SubscribeOptions

    return SubscribeOptions(match=policy)


class ClusterMetaTests(ClusterTestCase):
    async def two_nodes(self) -> list[Node]:
        names = iter("AB")
        return await self.start_cluster(lambda: rooms_app(next(names)), 2)

    async def listening(self, *nodes: Node) -> None:
        """Wait until every node knows another one has subscribers of meta topics."""
        await wait_until(lambda: all(node.bus.wants_meta for node in nodes))

    async def test_session_meta_api_covers_every_node(self) -> None:
        a, b = await self.two_nodes()
        alice, carol = await self.connect_to(a), await self.connect_to(a, "msgpack")
        bob = await self.connect_to(b, "cbor")
        ids = sorted([alice._session_id, carol._session_id, bob._session_id])
        for client in (alice, bob):
            self.assertEqual(await client.call("wamp.session.count"), 3)
            self.assertEqual(sorted(await client.call("wamp.session.list")), ids)
            self.assertEqual(await client.call("wamp.session.count", ["anonymous"]), 3)
            self.assertEqual(await client.call("wamp.session.count", ["admin"]), 0)
        details = await alice.call("wamp.session.get", bob._session_id)
        self.assertEqual((details["session"], details["authid"]), (bob._session_id, bob._authid))
        await carol.leave()
        await wait_until(lambda: len(a.app.router.sessions) == 1)
        self.assertEqual(await bob.call("wamp.session.count"), 2)

    async def test_subscription_meta_api_covers_every_node(self) -> None:
        a, b = await self.two_nodes()
        alice, bob = await self.connect_to(a), await self.connect_to(b, "msgpack")
        on_a = await alice.subscribe(lambda *a: None, "rooms.kitchen")
        on_b = await bob.subscribe(lambda *a: None, "rooms.kitchen")
        only_b = await bob.subscribe(lambda *a: None, "rooms..", options=_match("wildcard"))
        self.assertEqual(on_a.id, on_b.id)  # one subscription, one id, whichever node
        await sleep(0.1)  # the subscriptions reach Redis
        for client in (alice, bob):
            self.assertEqual(
                await client.call("wamp.subscription.list"),
                {"exact": [on_a.id], "prefix": [], "wildcard": [only_b.id]},
            )
            self.assertEqual(
                sorted(await client.call("wamp.subscription.list_subscribers", on_a.id)),
                sorted([alice._session_id, bob._session_id]),
            )
            self.assertEqual(await client.call("wamp.subscription.count_subscribers", on_a.id), 2)
            self.assertEqual(
                await client.call("wamp.subscription.lookup", "rooms..", {"match": "wildcard"}), only_b.id
            )
            self.assertEqual(
                sorted(await client.call("wamp.subscription.match", "rooms.kitchen.x")), [only_b.id]
            )
            self.assertEqual((await client.call("wamp.subscription.get", only_b.id))["match"], "wildcard")
        await only_b.unsubscribe()
        await sleep(0.1)
        self.assertEqual(
            await call_error(alice.call("wamp.subscription.get", only_b.id)),
            "wamp.error.no_such_subscription",
        )

    async def test_meta_events_fire_on_every_node(self) -> None:
        a, b = await self.two_nodes()
        watcher = await self.connect_to(b)
        for topic in (ON_JOIN, ON_LEAVE, *SUBSCRIPTION_EVENTS):
            await watcher.record(topic)
        await self.listening(a)
        alice = await self.connect_to(a, "cbor")
        kitchen = await alice.subscribe(lambda *a: None, "rooms.kitchen")
        await wait_until(lambda: args(watcher, ON_SUBSCRIBE))
        self.assertEqual(args(watcher, ON_JOIN)[0][0]["session"], alice._session_id)
        [[creator, details]] = args(watcher, ON_CREATE)
        self.assertEqual(
            (creator, details["id"], details["uri"]), (alice._session_id, kitchen.id, "rooms.kitchen")
        )

        bob = await self.connect_to(b)
        bob_id, bob_authid = bob._session_id, bob._authid
        await bob.subscribe(lambda *a: None, "rooms.kitchen")  # held on A already: no on_create
        await wait_until(lambda: len(args(watcher, ON_SUBSCRIBE)) == 2)
        await kitchen.unsubscribe()  # bob still holds it: no on_delete
        await wait_until(lambda: args(watcher, ON_UNSUBSCRIBE))
        await bob.leave()
        await wait_until(lambda: args(watcher, ON_DELETE))
        await sleep(0.2)
        self.assertEqual(len(args(watcher, ON_CREATE)), 1)
        self.assertEqual(
            args(watcher, ON_UNSUBSCRIBE), [[alice._session_id, kitchen.id], [bob_id, kitchen.id]]
        )
        self.assertEqual(args(watcher, ON_DELETE), [[bob_id, kitchen.id]])
        self.assertEqual(args(watcher, ON_LEAVE), [[bob_id, bob_authid, "anonymous"]])
        self.assertEqual(len(args(watcher, ON_JOIN)), 2)

    async def test_presence_and_its_hooks_across_nodes(self) -> None:
        a, b = await self.two_nodes()
        alice = await self.connect_to(a)
        await alice.record("rooms.kitchen")
        bob = await self.connect_to(b, "msgpack")
        bob_id = bob._session_id
        await bob.record("rooms.kitchen")
        joined = [{"joined": alice._session_id, "node": "A"}, {"joined": bob_id, "node": "B"}]
        await wait_until(lambda: counts(alice, "rooms.kitchen") == joined)
        await wait_until(lambda: joined[1] in counts(bob, "rooms.kitchen"))
        await sleep(0.2)  # each join was told once, by the joining member's node
        self.assertEqual(counts(alice, "rooms.kitchen"), joined)
        # alice's join may still have been on its way to B when bob subscribed there: then bob got it too
        bob_got = counts(bob, "rooms.kitchen")
        self.assertIn(sorted(map(str, bob_got)), [[str(joined[1])], sorted(map(str, joined))])
        room = a.app.topic_instance("rooms.kitchen")
        assert room is not None
        members = await room.presence()
        self.assertEqual(
            members,
            [
                Member(alice._session_id, alice._authid, "anonymous", True),
                Member(bob._session_id, bob._authid, "anonymous", False),
            ],
        )
        self.assertEqual(await room.presence_count(), 2)
        await bob.leave()
        await wait_until(lambda: len(counts(alice, "rooms.kitchen")) == 3)
        await sleep(0.2)
        self.assertEqual(counts(alice, "rooms.kitchen"), [*joined, {"left": bob_id, "node": "B"}])
        self.assertEqual(await room.presence_count(), 1)

    async def test_a_dead_nodes_members_leave_within_the_ttl(self) -> None:
        a, b = await self.two_nodes()
        watcher = await self.connect_to(a)
        await watcher.record("rooms.kitchen")
        for topic in (ON_LEAVE, ON_UNSUBSCRIBE, ON_DELETE):
            await watcher.record(topic)
        bob, dave = await self.connect_to(b), await self.connect_to(b)
        kitchen = await bob.subscribe(lambda *a: None, "rooms.kitchen")
        attic = await bob.subscribe(lambda *a: None, "rooms.attic")
        await wait_until(lambda: len(counts(watcher, "rooms.kitchen")) == 2)  # the watcher's join, bob's
        self.assertEqual(await watcher.call("wamp.session.count"), 3)

        await self.kill_bus(b)
        await wait_until(lambda: len(counts(watcher, "rooms.kitchen")) == 3, timeout=5)
        await sleep(0.5)  # more beats: nothing fires twice
        self.assertEqual(counts(watcher, "rooms.kitchen")[2], {"left": bob._session_id, "node": "A"})
        self.assertEqual(len(counts(watcher, "rooms.kitchen")), 3)
        self.assertEqual(
            sorted(args(watcher, ON_LEAVE)),
            sorted(
                [[bob._session_id, bob._authid, "anonymous"], [dave._session_id, dave._authid, "anonymous"]]
            ),
        )
        self.assertEqual(
            sorted(args(watcher, ON_UNSUBSCRIBE)),
            sorted([[bob._session_id, kitchen.id], [bob._session_id, attic.id]]),
        )
        self.assertEqual(args(watcher, ON_DELETE), [[bob._session_id, attic.id]])  # A holds the kitchen still
        self.assertEqual(await watcher.call("wamp.session.count"), 1)
        room = a.app.topic_instance("rooms.kitchen")
        assert room is not None
        self.assertEqual([m.session for m in await room.presence()], [watcher._session_id])
        redis = self.redis_client()
        self.assertEqual(
            sorted(redis.keys(f"{a.bus.channels.base}:s*")),
            [
                f"{a.bus.channels.base}:sessions:{a.bus.node_id}",
                f"{a.bus.channels.base}:state",
                f"{a.bus.channels.base}:subscribers:{a.bus.node_id}:{kitchen.id}",
                f"{a.bus.channels.base}:subscriptions:{a.bus.node_id}",
            ],
        )
        self.assertEqual(a.bus.stats["nodes_purged"], 1)

    async def test_a_paused_node_taken_for_dead_joins_again_once_when_it_is_back(self) -> None:
        a, b = await self.two_nodes()
        watcher = await self.connect_to(a)
        await watcher.record("rooms.kitchen")
        for topic in (ON_JOIN, ON_LEAVE, ON_SUBSCRIBE, ON_UNSUBSCRIBE, ON_CREATE, ON_DELETE):
            await watcher.record(topic)
        await self.listening(b)
        bob = await self.connect_to(b)
        kitchen = await bob.subscribe(lambda *a: None, "rooms.kitchen")
        attic = await bob.subscribe(lambda *a: None, "rooms.attic")
        joined = {"joined": bob._session_id, "node": "B"}
        await wait_until(lambda: counts(watcher, "rooms.kitchen")[-1:] == [joined])

        # B stops beating (a long GC pause, a suspended VM) longer than the TTL: A takes it for dead
        b.bus._heartbeat.stop()
        left = {"left": bob._session_id, "node": "A"}
        await wait_until(lambda: counts(watcher, "rooms.kitchen")[-1:] == [left], timeout=5)
        self.assertEqual(await watcher.call("wamp.session.count"), 1)
        before = {topic: len(args(watcher, topic)) for topic in (ON_JOIN, ON_SUBSCRIBE, ON_CREATE)}

        # B is back: it finds its heartbeat gone, writes its state again and its members join again, once
        b.bus._heartbeat.start(b.bus.heartbeat_interval)
        back = {"joined": bob._session_id, "node": "B"}
        await wait_until(lambda: counts(watcher, "rooms.kitchen")[-1:] == [back], timeout=5)
        await wait_until(lambda: len(args(watcher, ON_SUBSCRIBE)) == before[ON_SUBSCRIBE] + 2)
        await sleep(0.6)  # more beats: nothing fires twice
        self.assertEqual(counts(watcher, "rooms.kitchen")[-2:], [left, back])
        self.assertEqual(counts(watcher, "rooms.kitchen").count(back), 2)  # the first join, and this one
        self.assertEqual(args(watcher, ON_JOIN)[before[ON_JOIN] :], [[_details(bob)]])
        self.assertEqual(
            sorted(args(watcher, ON_SUBSCRIBE)[before[ON_SUBSCRIBE] :]),
            sorted([[bob._session_id, kitchen.id], [bob._session_id, attic.id]]),
        )
        # the attic had been deleted with B's state (nobody else held it): it is created again
        self.assertEqual(args(watcher, ON_CREATE)[before[ON_CREATE] :][0][1]["id"], attic.id)
        self.assertEqual(len(args(watcher, ON_CREATE)[before[ON_CREATE] :]), 1)
        self.assertEqual(await watcher.call("wamp.session.count"), 2)
        room = a.app.topic_instance("rooms.kitchen")
        assert room is not None
        self.assertEqual(
            sorted(m.session for m in await room.presence()), sorted([watcher._session_id, bob._session_id])
        )
        self.assertEqual(b.bus.stats["rejoined"], 1)

    async def test_a_node_stopped_gracefully_leaves_its_members_to_the_others_and_the_last_drops_all(
        self,
    ) -> None:
        a, b = await self.two_nodes()
        watcher = await self.connect_to(a)
        await watcher.record("rooms.kitchen")
        bob = await self.connect_to(b)
        bob_id = bob._session_id
        await bob.subscribe(lambda *a: None, "rooms.kitchen")
        await wait_until(lambda: len(counts(watcher, "rooms.kitchen")) == 2)

        await b.bus.stopService()
        await wait_until(lambda: len(counts(watcher, "rooms.kitchen")) == 3, timeout=3)  # within a beat
        self.assertEqual(counts(watcher, "rooms.kitchen")[2], {"left": bob_id, "node": "A"})
        self.assertEqual(await watcher.call("wamp.session.count"), 1)

        redis = self.redis_client()
        await a.bus.stopService()
        self.assertEqual(redis.keys(f"{a.bus.channels.base}:*"), [])  # the last node leaves nothing behind
