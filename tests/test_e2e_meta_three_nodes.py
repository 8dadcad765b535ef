"""End-to-end: the cluster-wide answers of the meta API and topic presence on THREE nodes sharing one real
redis-server (in one reactor), with autobahn-python clients over real TCP on each node.

Cross-node propagation is awaited with bounded deadlines. "Nothing came twice" is checked after a barrier:
a marker published from a client of each node (on that node's one Redis connection, after whatever the node
sent before) reaches every observer, twice over; after a node's death, after more purges by the survivors.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet import defer, reactor

from sandstone import Member, Sandstone, Topic
from tests.cluster_support import BUS_OPTIONS, ClusterTestCase, Node, counts
from tests.support import Client, sleep, wait_until

ON_LEAVE = "wamp.session.on_leave"
ON_CREATE = "wamp.subscription.on_create"
ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
ON_DELETE = "wamp.subscription.on_delete"
SUBSCRIPTION_EVENTS = (ON_CREATE, ON_SUBSCRIBE, ON_UNSUBSCRIBE, ON_DELETE)
REG_ON_CREATE = "wamp.registration.on_create"
REG_ON_REGISTER = "wamp.registration.on_register"
REG_ON_UNREGISTER = "wamp.registration.on_unregister"
REG_ON_DELETE = "wamp.registration.on_delete"
REGISTRATION_EVENTS = (REG_ON_CREATE, REG_ON_REGISTER, REG_ON_UNREGISTER, REG_ON_DELETE)
NO_SUCH_SESSION = "wamp.error.no_such_session"
NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
BARRIER = "sync.barrier"
KITCHEN = "rooms.kitchen"
ATTIC = "rooms.attic"
TTL = BUS_OPTIONS["heartbeat_ttl"]
BEAT = BUS_OPTIONS["heartbeat_interval"]

_markers = itertools.count(1)

Hooks = list[tuple[str, str, str, int]]  # (node, "join" or "leave", topic URI, member's session)


class Peer(Client):
    """A client keeping its session id and authid as ``sid`` and ``who`` (autobahn forgets them when the
    session leaves)."""

    sid: int
    who: str

    def onJoin(self, details: Any) -> None:
        self.sid, self.who = details.session, details.authid
        super().onJoin(details)


def rooms_app(name: str, hooks: Hooks) -> Sandstone:
    """An open router whose ``rooms.{name}`` topics broadcast who joined and left (once in the cluster) and
    note each hook run in ``hooks`` (shared by the nodes: they run in one process)."""
    app = Sandstone(anonymous=True, open_uris=True)

    @app.topic("rooms.{room}")
    class Room(Topic):
        def on_join(self, member: Member) -> None:
            hooks.append((name, "join", self.uri, member.session))
            self.broadcast({"joined": member.session, "node": name})

        def on_leave(self, member: Member) -> None:
            hooks.append((name, "leave", self.uri, member.session))
            self.broadcast({"left": member.session, "node": name})

    return app


def args(client: Client, topic: str, about: int | None = None) -> list[list[Any]]:
    """The positional arguments of the events a client recorded on ``topic``; with ``about``, only those
    of the meta events about that subscription or registration id (their second argument)."""
    found = [event.args for event in client.received.get(topic, [])]
    if about is None:
        return found
    return [
        a for a in found if len(a) > 1 and (a[1] == about or (isinstance(a[1], dict) and a[1]["id"] == about))
    ]


def answer(*args: Any, **kwargs: Any) -> str:
    return "answer"


async def call_error(call: defer.Deferred[Any]) -> str:
    try:
        await call
    except ApplicationError as error:
        return str(error.error)
    raise AssertionError("the call succeeded")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll an asynchronous ``check`` (e.g. a meta call on another node) until it is true; fail after
    ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await sleep(0.02)


async def settle(publishers: Iterable[Client], observers: Iterable[Client], rounds: int = 2) -> None:
    """Wait until a marker published from each publisher (one per node that must be flushed) reached every
    observer (all of them record ``BARRIER``), ``rounds`` times: whatever those nodes sent to the bus before
    has reached every observer's node by then."""
    publishers, observers = list(publishers), list(observers)
    for _ in range(rounds):
        markers = {f"marker-{next(_markers)}" for _ in publishers}
        options = PublishOptions(acknowledge=True, exclude_me=False)
        for publisher, marker in zip(publishers, sorted(markers), strict=True):
            await publisher.publish(BARRIER, marker, options=options)
        await wait_until(lambda wanted=markers: all(wanted <= set(counts(o, BARRIER)) for o in observers))


class ThreeNodeTests(ClusterTestCase):
    timeout = 30

    async def three_nodes(self) -> tuple[list[Node], Hooks]:
        hooks: Hooks = []
        names = iter("ABC")
        nodes = await self.start_cluster(lambda: rooms_app(next(names), hooks), 3)
        return nodes, hooks

    async def join(self, node: Node, serializer: str = "json") -> Peer:
        """A client joined on ``node``."""
        client: Peer = await self.connect_to(node, serializer, client_class=Peer)
        return client

    async def observer(self, node: Node, serializer: str = "json", *topics: str) -> Peer:
        """A client on ``node`` recording the barrier, then ``topics``."""
        client = await self.join(node, serializer)
        for topic in (BARRIER, *topics):
            await client.record(topic)
        return client

    async def meta_listening(self, nodes: list[Node], others: int) -> None:
        """Wait until each node knows that ``others`` other nodes have subscribers of meta topics."""
        await wait_until(lambda: all(len(node.bus._meta_nodes) == others for node in nodes))

    def count_purges(self, node: Node) -> list[None]:
        """A list growing by one each time ``node``'s heartbeat finished a purge of dead nodes' state."""
        done: list[None] = []
        original = node.bus._purge_state

        def finished(result: Any) -> Any:
            done.append(None)
            return result

        def counting() -> defer.Deferred[None]:
            return original().addBoth(finished)

        self.patch(node.bus, "_purge_state", counting)
        return done

    async def test_session_meta_api_answers_for_every_node_from_any_node(self) -> None:
        (a, b, c), _ = await self.three_nodes()
        alice = await self.join(a)
        bob = await self.join(b, "msgpack")
        carol, dave = await self.join(c, "cbor"), await self.join(c, "json.batched")
        clients = (alice, bob, carol, dave)
        ids = sorted(client.sid for client in clients)
        for client in clients:  # each node's sessions reach Redis in the reactor turn after their join
            await eventually(lambda client=client: _equals(client.call("wamp.session.count"), len(ids)))
        for client in clients:
            self.assertEqual(await client.call("wamp.session.count"), 4)
            self.assertEqual(sorted(await client.call("wamp.session.list")), ids)
            self.assertEqual(await client.call("wamp.session.count", ["anonymous"]), 4)
            self.assertEqual(sorted(await client.call("wamp.session.list", ["anonymous"])), ids)
            self.assertEqual(await client.call("wamp.session.count", ["admin"]), 0)
            self.assertEqual(await client.call("wamp.session.list", ["admin"]), [])
            for other in clients:
                self.assertEqual(
                    await client.call("wamp.session.get", other.sid),
                    {
                        "session": other.sid,
                        "authid": other.who,
                        "authrole": "anonymous",
                        "authmethod": "anonymous",
                        "authprovider": "static",
                    },
                )
            self.assertEqual(await call_error(client.call("wamp.session.get", 1)), NO_SUCH_SESSION)

        await dave.leave()  # a goodbye on C
        await self.drop(bob)  # B's only client cut without one
        remaining = sorted([alice.sid, carol.sid])
        for client in (alice, carol):
            await eventually(lambda client=client: _equals(client.call("wamp.session.count"), 2))
            self.assertEqual(sorted(await client.call("wamp.session.list")), remaining)
            for gone in (bob, dave):
                self.assertEqual(await call_error(client.call("wamp.session.get", gone.sid)), NO_SUCH_SESSION)

    async def test_one_topic_subscribed_on_three_nodes(self) -> None:
        (a, b, c), _ = await self.three_nodes()
        nodes = [a, b, c]
        watchers = [
            await self.observer(node, serializer, *SUBSCRIPTION_EVENTS)
            for node, serializer in zip(nodes, ("json", "msgpack", "cbor"), strict=True)
        ]
        await self.meta_listening(nodes, 2)
        alice, bob, carol = await self.join(a), await self.join(b), await self.join(c)
        topic = "com.example.news"

        on_a = await alice.subscribe(lambda *_: None, topic)
        sid = on_a.id
        await wait_until(partial(_told, watchers, ON_SUBSCRIBE, sid, 1))
        on_b = await bob.subscribe(lambda *_: None, topic)
        await wait_until(partial(_told, watchers, ON_SUBSCRIBE, sid, 2))
        on_c = await carol.subscribe(lambda *_: None, topic)
        await wait_until(partial(_told, watchers, ON_SUBSCRIBE, sid, 3))
        self.assertEqual({on_a.id, on_b.id, on_c.id}, {sid})  # one subscription, one id, whichever node
        subscribers = sorted([alice.sid, bob.sid, carol.sid])

        details = []
        for watcher in watchers:
            self.assertEqual(await watcher.call("wamp.subscription.lookup", topic), sid)
            self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", sid), 3)
            self.assertEqual(
                sorted(await watcher.call("wamp.subscription.list_subscribers", sid)), subscribers
            )
            barrier = await watcher.call("wamp.subscription.lookup", BARRIER)
            listed = await watcher.call("wamp.subscription.list")
            self.assertEqual(
                (sorted(listed["exact"]), listed["prefix"], listed["wildcard"]),
                (sorted([sid, barrier]), [], []),
            )
            self.assertEqual(await watcher.call("wamp.subscription.match", topic), [sid])
            details.append(await watcher.call("wamp.subscription.get", sid))

        await settle(watchers, watchers)
        [[creator, created]] = args(watchers[0], ON_CREATE, sid)
        self.assertEqual(creator, alice.sid)
        self.assertEqual((created["id"], created["uri"], created["match"]), (sid, topic, "exact"))
        self.assertEqual(details, [created] * 3)  # every node tells when the first node made it
        for watcher in watchers:
            self.assertEqual(args(watcher, ON_CREATE, sid), [[alice.sid, created]])
            self.assertEqual(
                args(watcher, ON_SUBSCRIBE, sid),
                [[alice.sid, sid], [bob.sid, sid], [carol.sid, sid]],
            )
            self.assertEqual(args(watcher, ON_UNSUBSCRIBE, sid), [])
            self.assertEqual(args(watcher, ON_DELETE, sid), [])

        await on_c.unsubscribe()  # A and B still hold it: no on_delete
        await wait_until(partial(_told, watchers, ON_UNSUBSCRIBE, sid, 1))
        await alice.leave()
        await wait_until(partial(_told, watchers, ON_UNSUBSCRIBE, sid, 2))
        for watcher in watchers:
            self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", sid), 1)
            self.assertEqual(await watcher.call("wamp.subscription.list_subscribers", sid), [bob.sid])
        await self.drop(bob)  # the last subscriber in the cluster, cut without a goodbye
        await wait_until(partial(_told, watchers, ON_DELETE, sid, 1))
        await settle(watchers, watchers)
        for watcher in watchers:
            self.assertEqual(
                args(watcher, ON_UNSUBSCRIBE, sid),
                [[carol.sid, sid], [alice.sid, sid], [bob.sid, sid]],
            )
            self.assertEqual(args(watcher, ON_DELETE, sid), [[bob.sid, sid]])
            self.assertEqual(len(args(watcher, ON_CREATE, sid)), 1)
            self.assertEqual(len(args(watcher, ON_SUBSCRIBE, sid)), 3)
            self.assertIsNone(await watcher.call("wamp.subscription.lookup", topic))
            self.assertEqual(
                await call_error(watcher.call("wamp.subscription.count_subscribers", sid)),
                NO_SUCH_SUBSCRIPTION,
            )

    async def test_simultaneous_first_and_last_subscribers_make_one_create_and_one_delete(self) -> None:
        (a, b, c), _ = await self.three_nodes()
        nodes = [a, b, c]
        watchers = [await self.observer(node, "json", *SUBSCRIPTION_EVENTS) for node in nodes]
        await self.meta_listening(nodes, 2)
        subscribers = [await self.join(node, "msgpack") for node in nodes]
        ids = sorted(s.sid for s in subscribers)
        topic = "com.example.race"
        held = await defer.gatherResults([s.subscribe(lambda *_: None, topic) for s in subscribers])
        sid = held[0].id
        self.assertEqual({h.id for h in held}, {sid})
        await wait_until(partial(_told, watchers, ON_SUBSCRIBE, sid, 3))
        for watcher in watchers:
            self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", sid), 3)
        await defer.gatherResults([h.unsubscribe() for h in held])
        await wait_until(partial(_told, watchers, ON_DELETE, sid, 1))
        await settle(watchers, watchers)
        [[creator, created]] = args(watchers[0], ON_CREATE, sid)
        [[last, _]] = args(watchers[0], ON_DELETE, sid)
        self.assertIn(creator, ids)
        self.assertIn(last, ids)
        for watcher in watchers:
            self.assertEqual(args(watcher, ON_CREATE, sid), [[creator, created]])  # one in the cluster
            self.assertEqual(sorted(args(watcher, ON_SUBSCRIBE, sid)), [[i, sid] for i in ids])
            self.assertEqual(sorted(args(watcher, ON_UNSUBSCRIBE, sid)), [[i, sid] for i in ids])
            self.assertEqual(args(watcher, ON_DELETE, sid), [[last, sid]])
            self.assertIsNone(await watcher.call("wamp.subscription.lookup", topic))

    async def test_presence_hooks_run_once_in_the_cluster_and_presence_lists_every_node(self) -> None:
        (a, b, c), hooks = await self.three_nodes()
        nodes = [a, b, c]
        flushers = [await self.observer(node) for node in nodes]  # a barrier publisher per node
        alice = await self.observer(a, "json", KITCHEN)
        joined_alice = {"joined": alice.sid, "node": "A"}
        await wait_until(lambda: counts(alice, KITCHEN) == [joined_alice])
        await settle(flushers, flushers)  # A's broadcast reached B and C before anyone else joins
        bob = await self.observer(b, "msgpack", KITCHEN)
        joined_bob = {"joined": bob.sid, "node": "B"}
        await wait_until(lambda: counts(alice, KITCHEN)[1:] == [joined_bob] == counts(bob, KITCHEN))
        await settle(flushers, flushers)
        carol = await self.observer(c, "cbor", KITCHEN)
        joined_carol = {"joined": carol.sid, "node": "C"}
        await wait_until(
            lambda: (
                counts(alice, KITCHEN)[2:]
                == counts(bob, KITCHEN)[1:]
                == counts(carol, KITCHEN)
                == [joined_carol]
            )
        )
        members = (alice, bob, carol)
        await settle(flushers, members)
        self.assertEqual(counts(alice, KITCHEN), [joined_alice, joined_bob, joined_carol])
        self.assertEqual(counts(bob, KITCHEN), [joined_bob, joined_carol])
        self.assertEqual(counts(carol, KITCHEN), [joined_carol])
        self.assertEqual(
            hooks,
            [
                ("A", "join", KITCHEN, alice.sid),
                ("B", "join", KITCHEN, bob.sid),
                ("C", "join", KITCHEN, carol.sid),
            ],
        )

        for node, local in zip(nodes, members, strict=True):
            room = node.app.topic_instance(KITCHEN)
            assert room is not None
            found = await room.presence()
            self.assertEqual(found[0], Member(local.sid, local.who, "anonymous", True), node.name)
            self.assertEqual(
                sorted(found, key=lambda m: m.session),
                sorted(
                    (Member(m.sid, m.who, "anonymous", m is local) for m in members),
                    key=lambda m: m.session,
                ),
            )
            self.assertEqual(await room.presence_count(), 3)

        await carol.leave()  # a goodbye on C
        left_carol = {"left": carol.sid, "node": "C"}
        await wait_until(lambda: counts(alice, KITCHEN)[3:] == counts(bob, KITCHEN)[2:] == [left_carol])
        await self.drop(bob)  # cut on B
        left_bob = {"left": bob.sid, "node": "B"}
        await wait_until(lambda: counts(alice, KITCHEN)[4:] == [left_bob])
        await settle(flushers, [alice, *flushers])
        self.assertEqual(
            counts(alice, KITCHEN), [joined_alice, joined_bob, joined_carol, left_carol, left_bob]
        )
        self.assertEqual(counts(bob, KITCHEN), [joined_bob, joined_carol, left_carol])
        self.assertEqual(hooks[3:], [("C", "leave", KITCHEN, carol.sid), ("B", "leave", KITCHEN, bob.sid)])
        room = a.app.topic_instance(KITCHEN)
        assert room is not None
        self.assertEqual(await room.presence(), [Member(alice.sid, alice.who, "anonymous", True)])
        self.assertEqual(await room.presence_count(), 1)

    async def test_registrations_on_one_node_are_seen_from_the_others(self) -> None:
        (a, b, c), _ = await self.three_nodes()
        nodes = [a, b, c]
        watchers = [await self.observer(node, "json", *REGISTRATION_EVENTS) for node in nodes]
        on_a, on_b, _on_c = watchers
        carol = await self.join(c, "cbor")
        held = await carol.register(lambda: "from C", "com.on_c")
        rid = held.id
        await wait_until(lambda: all(args(w, REG_ON_REGISTER, rid) for w in (on_a, on_b)))
        for watcher in (on_a, on_b):
            self.assertEqual(await watcher.call("wamp.registration.lookup", "com.on_c"), rid)
            self.assertEqual(await watcher.call("wamp.registration.match", "com.on_c"), rid)
            self.assertEqual(await watcher.call("wamp.registration.list_callees", rid), [carol.sid])
            self.assertEqual(await watcher.call("wamp.registration.count_callees", rid), 1)
            details = await watcher.call("wamp.registration.get", rid)
            self.assertEqual(
                (details["id"], details["uri"], details["match"], details["invoke"]),
                (rid, "com.on_c", "exact", "single"),
            )
            self.assertEqual(await watcher.call("com.on_c"), "from C")  # and the call reaches C

        # a shared registration with a callee on every node: the same id, the callees in registration order
        shared = RegisterOptions(invoke="roundrobin")
        alice, bob = await self.join(a, "msgpack"), await self.join(b)
        callees = []
        for callee in (carol, alice, bob):  # on C, then A, then B
            registration = await callee.register(answer, "com.shared", options=shared)
            callees.append((callee.sid, registration.id))
            await wait_until(partial(_told, watchers, REG_ON_REGISTER, registration.id, len(callees)))
        sid = callees[0][1]
        self.assertEqual({r for _, r in callees}, {sid})
        order = [session for session, _ in callees]
        for watcher in watchers:
            self.assertEqual(await watcher.call("wamp.registration.lookup", "com.shared"), sid)
            self.assertEqual(await watcher.call("wamp.registration.list_callees", sid), order)
            self.assertEqual(await watcher.call("wamp.registration.count_callees", sid), 3)
            listed = await watcher.call("wamp.registration.list")
            self.assertEqual(
                (sorted(listed["exact"]), listed["prefix"], listed["wildcard"]), (sorted([rid, sid]), [], [])
            )

        await held.unregister()
        await wait_until(lambda: all(args(w, REG_ON_DELETE, rid) for w in watchers))
        await carol.leave()  # alice and bob still hold com.shared: no on_delete
        await wait_until(lambda: all(args(w, REG_ON_UNREGISTER, sid) for w in watchers))
        await settle(watchers, watchers)
        carol_id = carol.sid
        for watcher in watchers:
            [[creator, created]] = args(watcher, REG_ON_CREATE, rid)
            self.assertEqual((creator, created["uri"]), (carol_id, "com.on_c"))
            self.assertEqual(args(watcher, REG_ON_REGISTER, rid), [[carol_id, rid]])
            self.assertEqual(args(watcher, REG_ON_UNREGISTER, rid), [[carol_id, rid]])
            self.assertEqual(args(watcher, REG_ON_DELETE, rid), [[carol_id, rid]])
            self.assertEqual(len(args(watcher, REG_ON_CREATE, sid)), 1)
            self.assertEqual(args(watcher, REG_ON_REGISTER, sid), [[s, sid] for s in order])
            self.assertEqual(args(watcher, REG_ON_UNREGISTER, sid), [[carol_id, sid]])
            self.assertEqual(args(watcher, REG_ON_DELETE, sid), [])
            self.assertIsNone(await watcher.call("wamp.registration.lookup", "com.on_c"))
            self.assertEqual(
                await call_error(watcher.call("wamp.registration.get", rid)), NO_SUCH_REGISTRATION
            )
            self.assertEqual(await watcher.call("wamp.registration.list_callees", sid), order[1:])

    async def test_a_killed_nodes_sessions_leave_every_answer_and_its_members_leave_once(self) -> None:
        (a, b, c), hooks = await self.three_nodes()
        flushers = [await self.observer(node) for node in (a, b)]
        watchers = [
            await self.observer(node, "json", KITCHEN, ON_LEAVE, ON_UNSUBSCRIBE, ON_DELETE) for node in (a, b)
        ]
        attic_spy = await self.observer(b, "json")  # a pattern subscriber: no member, hears the attic
        await attic_spy.record(ATTIC, match="prefix")
        await self.meta_listening([a, b], 1)
        carol, dave = await self.join(c, "msgpack"), await self.join(c, "cbor")
        kitchen = await carol.subscribe(lambda *_: None, KITCHEN)
        attic = await carol.subscribe(lambda *_: None, ATTIC)
        joined_carol = {"joined": carol.sid, "node": "C"}
        await wait_until(
            lambda: (
                all(joined_carol in counts(w, KITCHEN) for w in watchers)
                and counts(attic_spy, ATTIC) == [joined_carol]
            )
        )
        survivors = [*flushers, *watchers, attic_spy]
        alive = sorted(s.sid for s in survivors)
        everyone = sorted([*alive, carol.sid, dave.sid])
        for watcher in watchers:
            await eventually(lambda w=watcher: _equals(w.call("wamp.session.count"), len(everyone)))
            self.assertEqual(sorted(await watcher.call("wamp.session.list")), everyone)
            self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", kitchen.id), 3)
        purges = {node.name: self.count_purges(node) for node in (a, b)}
        hooks_before = len(hooks)

        killed_at = reactor.seconds()
        await self.kill_bus(c)
        left_carol = [{"left": carol.sid, "node": n} for n in "AB"]
        await wait_until(
            lambda: (
                all(any(p in left_carol for p in counts(w, KITCHEN)) for w in watchers)
                and any(p in left_carol for p in counts(attic_spy, ATTIC))
            ),
            timeout=TTL + 5,
        )
        noticed = reactor.seconds() - killed_at
        # gone once the heartbeat key expired (TTL) and a survivor's next beat purged it (within a beat)
        self.assertLess(noticed, TTL + 2 * BEAT + 1.5)
        for watcher in watchers:
            await eventually(lambda w=watcher: _equals(w.call("wamp.session.count"), len(alive)), timeout=2)
            self.assertEqual(sorted(await watcher.call("wamp.session.list")), alive)
            self.assertEqual(await watcher.call("wamp.session.count", ["anonymous"]), len(alive))
            for gone in (carol, dave):
                self.assertEqual(
                    await call_error(watcher.call("wamp.session.get", gone.sid)), NO_SUCH_SESSION
                )
            self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", kitchen.id), 2)
            self.assertEqual(
                sorted(await watcher.call("wamp.subscription.list_subscribers", kitchen.id)),
                sorted(w.sid for w in watchers),
            )
            self.assertIsNone(await watcher.call("wamp.subscription.lookup", ATTIC))
        for node in (a, b):
            room = node.app.topic_instance(KITCHEN)
            assert room is not None
            self.assertEqual(
                sorted(m.session for m in await room.presence()), sorted(w.sid for w in watchers)
            )

        # more beats, each purging on both survivors: nothing is told twice
        start = {name: len(done) for name, done in purges.items()}
        await wait_until(
            lambda: all(len(done) >= start[name] + 3 for name, done in purges.items()), timeout=5
        )
        await settle(flushers, [*watchers, attic_spy])
        leaves = hooks[hooks_before:]
        self.assertEqual(
            sorted((kind, uri, s) for _, kind, uri, s in leaves),
            [
                ("leave", ATTIC, carol.sid),
                ("leave", KITCHEN, carol.sid),
            ],
        )
        self.assertTrue(all(node in "AB" for node, *_ in leaves), leaves)
        purger = leaves[0][0]
        self.assertEqual({node for node, *_ in leaves}, {purger})  # the node that found C dead
        self.assertEqual(a.bus.stats["nodes_purged"] + b.bus.stats["nodes_purged"], 1)
        left = {"left": carol.sid, "node": purger}
        for watcher in watchers:
            self.assertEqual([p for p in counts(watcher, KITCHEN) if "left" in p], [left])
            self.assertEqual(
                sorted(args(watcher, ON_LEAVE)),
                sorted(
                    [
                        [carol.sid, carol.who, "anonymous"],
                        [dave.sid, dave.who, "anonymous"],
                    ]
                ),
            )
            self.assertEqual(
                sorted(args(watcher, ON_UNSUBSCRIBE)),
                sorted([[carol.sid, kitchen.id], [carol.sid, attic.id]]),
            )
            self.assertEqual(args(watcher, ON_DELETE), [[carol.sid, attic.id]])  # A and B hold the kitchen
        self.assertEqual(counts(attic_spy, ATTIC), [joined_carol, left])


def _told(watchers: Iterable[Client], topic: str, about: int, count: int) -> bool:
    """Whether each watcher got ``count`` events on ``topic`` about ``about``."""
    return all(len(args(w, topic, about)) == count for w in watchers)


async def _equals(call: defer.Deferred[Any], expected: Any) -> bool:
    return await call == expected
