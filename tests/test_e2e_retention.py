"""End-to-end: event retention (PUBLISH ``retain``, SUBSCRIBE ``get_retained``,
``app.broadcast(retain=)``, ``Topic.broadcast(retain=)``, ``app.retained``, ``Topic.retained``) with
autobahn-python clients over real TCP, on one node and on nodes sharing a real redis-server (the retained
events live in Redis there, and outlive the node that kept them)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Credentials, Identity, Limits, Sandstone, Topic
from tests.cluster_support import BUS_OPTIONS, ClusterTestCase, Node
from tests.support import Client, ServerTestCase, wait_until
from tests.test_e2e_auth import AuthClient, client_class

#: The ticket users of the test apps: authid -> authrole (the ticket is "<authid>-ticket").
USERS = {"alice": "user", "bob": "admin", "carol": "user"}


def retention_app(limits: Limits | None = None) -> Sandstone:
    """An open router (anonymous or ticket sessions) with a ``status.{name}`` Topic that keeps the latest
    status as its retained event, naming the one before (read with ``Topic.retained``)."""
    app = Sandstone(anonymous=True, open_uris=True, limits=limits)

    @app.authenticator
    def check(credentials: Credentials) -> Identity | None:
        authid = credentials.authid or ""
        if authid in USERS and credentials.secret_is(f"{authid}-ticket"):
            return Identity(authid, USERS[authid])
        return None

    @app.topic("status.{name}")
    class Status(Topic):
        async def on_publish(self, session: Any, payload: Any) -> None:
            previous = await self.retained()
            self.broadcast({"status": payload, "previous": previous}, retain=True)

    return app


def ticket(authid: str) -> type[AuthClient]:
    """A client class joining as ``authid`` with ticket authentication."""
    return client_class(authmethods=["ticket"], authid=authid, ticket=f"{authid}-ticket")


ACK = PublishOptions(acknowledge=True)


def retain(**options: Any) -> PublishOptions:
    return PublishOptions(acknowledge=True, retain=True, **options)


def events(client: Client, topic: str) -> list[Any]:
    return client.received.get(topic, [])


def seen(client: Client, topic: str) -> list[tuple[Any, bool]]:
    """(payload, retained) of each event a client's ``record`` subscription to ``topic`` received."""
    return [(event.payload, bool(event.details.retained)) for event in events(client, topic)]


async def round_trip(client: Client) -> None:
    """A call answered after everything the router sent the client before (one node: the memory store
    answers at once, so a retained EVENT would be sent before this RESULT)."""
    await client.call("wamp.session.count")


class OneNodeRetentionTests(ServerTestCase):
    timeout = 30

    def setUp(self) -> None:
        self.serve(retention_app())

    async def test_welcome_announces_event_retention(self) -> None:
        client = await self.connect("msgpack")
        broker = client._router_roles["broker"]
        self.assertIs(broker.event_retention, True)
        self.assertIs(broker.event_history, True)

    async def test_a_later_subscriber_asking_for_it_gets_the_retained_event_after_subscribed(self) -> None:
        publisher = await self.connect()
        kept = await publisher.publish("com.news.today", "headline", extra=1, options=retain())
        await publisher.publish("com.news.today", "not kept", options=ACK)  # does not replace it
        for serializer in ("json", "msgpack", "cbor"):
            reader, other = await self.connect(serializer), await self.connect(serializer)
            await other.record("com.news.today")
            await reader.record("com.news.today", get_retained=True)  # a subscription held already
            await wait_until(lambda reader=reader: events(reader, "com.news.today"))
            [event] = events(reader, "com.news.today")
            self.assertEqual((event.args, event.kwargs), (["headline"], {"extra": 1}), serializer)
            self.assertIs(event.details.retained, True)
            self.assertEqual(event.details.publication, kept.id)
            # a subscriber that did not ask gets nothing
            await round_trip(other)
            self.assertEqual(events(other, "com.news.today"), [], serializer)
            # live events afterwards are not retained ones
            await publisher.publish("com.news.today", f"live {serializer}", options=ACK)
            await wait_until(lambda reader=reader: len(events(reader, "com.news.today")) == 2)
            await wait_until(lambda other=other: events(other, "com.news.today"))
            self.assertEqual(
                seen(reader, "com.news.today"), [("headline", True), (f"live {serializer}", False)]
            )
            self.assertEqual(seen(other, "com.news.today"), [(f"live {serializer}", False)])
            await reader.leave()
            await other.leave()
        self.assertEqual(await self.app.retained("com.news.today"), "headline")

    async def test_a_newer_retained_event_replaces_the_older_one(self) -> None:
        publisher = await self.connect()
        await publisher.publish("com.price", 1, options=retain())
        newer = await publisher.publish("com.price", 2, options=retain())
        await publisher.publish("com.price", 3, options=ACK)
        self.assertEqual(await self.app.retained("com.price"), 2)
        reader = await self.connect("cbor")
        await reader.record("com.price", get_retained=True)
        await wait_until(lambda: events(reader, "com.price"))
        await round_trip(reader)
        self.assertEqual(seen(reader, "com.price"), [(2, True)])
        self.assertEqual(events(reader, "com.price")[0].details.publication, newer.id)
        self.assertIsNone(await self.app.retained("com.nothing.retained"))
        nobody = await self.connect()
        await nobody.record("com.nothing.retained", get_retained=True)
        await round_trip(nobody)
        self.assertEqual(events(nobody, "com.nothing.retained"), [])

    async def test_the_delivery_rules_of_a_retained_event_choose_its_later_subscribers(self) -> None:
        publisher = await self.connect()
        alice, carol = (
            await self.connect(client_class=ticket("alice")),
            await self.connect(client_class=ticket("carol")),
        )
        bob = await self.connect("msgpack", client_class=ticket("bob"))
        anonymous = await self.connect("cbor")
        self.assertEqual((alice._authid, alice._authrole, bob._authrole), ("alice", "user", "admin"))
        await publisher.publish("com.rules.admins", "for admins", options=retain(eligible_authrole=["admin"]))
        await publisher.publish("com.rules.not-alice", "not alice", options=retain(exclude_authid=["alice"]))
        await publisher.publish("com.rules.users", "users", options=retain(exclude_authrole=["admin"]))
        await publisher.publish("com.rules.carol", "carol", options=retain(eligible_authid=["carol"]))
        # session ids: those of the sessions of the moment
        await publisher.publish(
            "com.rules.session", "alice's session", options=retain(eligible=[alice._session_id])
        )
        await publisher.publish(
            "com.rules.not-bob-session", "not bob's session", options=retain(exclude=[bob._session_id])
        )
        topics = [
            "com.rules.admins",
            "com.rules.not-alice",
            "com.rules.users",
            "com.rules.carol",
            "com.rules.session",
            "com.rules.not-bob-session",
        ]
        readers = {"alice": alice, "bob": bob, "carol": carol, "anonymous": anonymous}
        for reader in readers.values():
            for topic in topics:
                await reader.record(topic, get_retained=True)
            await round_trip(reader)
        received = {
            name: sorted(payload for topic in topics for payload, _ in seen(reader, topic))
            for name, reader in readers.items()
        }
        self.assertEqual(
            received,
            {
                "alice": sorted(["users", "alice's session", "not bob's session"]),
                "bob": sorted(["for admins", "not alice"]),
                "carol": sorted(["not alice", "users", "carol", "not bob's session"]),
                "anonymous": sorted(["not alice", "users", "not bob's session"]),
            },
        )
        self.assertTrue(all(retained for r in readers.values() for t in topics for _, retained in seen(r, t)))

    async def test_a_clients_own_retained_event_is_not_given_back_to_it_unless_exclude_me_is_false(
        self,
    ) -> None:
        publisher = await self.connect()
        await publisher.publish("com.own.excluded", "mine", options=retain())
        await publisher.publish("com.own.included", "mine too", options=retain(exclude_me=False))
        await publisher.record("com.own.excluded", get_retained=True)
        await publisher.record("com.own.included", get_retained=True)
        await round_trip(publisher)
        self.assertEqual(seen(publisher, "com.own.excluded"), [])  # as it would not have received it live
        self.assertEqual(seen(publisher, "com.own.included"), [("mine too", True)])
        other = await self.connect()  # another session gets both
        await other.record("com.own.", match="prefix", get_retained=True)
        await round_trip(other)
        self.assertEqual(sorted(payload for payload, _ in seen(other, "com.own.")), ["mine", "mine too"])

    async def test_pattern_subscriptions_get_the_retained_events_of_every_matching_topic(self) -> None:
        publisher = await self.connect()
        kept = {}
        for topic in ("com.p.kitchen.temp", "com.p.attic.temp", "com.p.attic.humidity", "com.q.cellar.temp"):
            kept[topic] = (await publisher.publish(topic, topic, options=retain())).id
        await publisher.publish("com.p.plain", "not retained", options=ACK)
        reader = await self.connect("msgpack")
        await reader.record("com.p.", match="prefix", get_retained=True)
        await reader.record("com...temp", match="wildcard", get_retained=True)
        await wait_until(lambda: [len(events(reader, t)) for t in ("com.p.", "com...temp")] == [3, 3])
        await round_trip(reader)
        by_prefix = events(reader, "com.p.")
        self.assertEqual(
            sorted((e.details.topic, e.payload, e.details.publication) for e in by_prefix),
            sorted(
                (topic, topic, kept[topic])
                for topic in ("com.p.kitchen.temp", "com.p.attic.temp", "com.p.attic.humidity")
            ),
        )
        self.assertEqual(
            sorted(e.details.topic for e in events(reader, "com...temp")),
            sorted(["com.p.kitchen.temp", "com.p.attic.temp", "com.q.cellar.temp"]),
        )
        self.assertTrue(all(e.details.retained for e in by_prefix + events(reader, "com...temp")))

    async def test_the_app_and_a_topic_broadcast_retained_events(self) -> None:
        publication_id = self.app.broadcast("com.app.state", {"up": True}, retain=True)
        self.app.broadcast("com.app.state", {"up": "not kept"})
        self.assertEqual(await self.app.retained("com.app.state"), {"up": True})
        reader = await self.connect("cbor")
        await reader.record("com.app.state", get_retained=True)
        await wait_until(lambda: events(reader, "com.app.state"))
        [event] = events(reader, "com.app.state")
        self.assertEqual((event.payload, event.details.retained), ({"up": True}, True))
        self.assertEqual(event.details.publication, publication_id)

        # the status Topic: each client publication becomes its retained event, naming the one before
        alice = await self.connect()
        await alice.publish("status.alice", "online", options=ACK)
        await alice.publish("status.alice", "away", options=ACK)
        expected = {"status": "away", "previous": {"status": "online", "previous": None}}
        await wait_until_retained(self.app, "status.alice", expected)
        watcher = await self.connect("msgpack")
        await watcher.record("status.alice", get_retained=True)
        await watcher.record("status.", match="prefix", get_retained=True)
        await wait_until(lambda: events(watcher, "status.alice") and events(watcher, "status."))
        self.assertEqual(seen(watcher, "status.alice"), [(expected, True)])
        self.assertEqual(
            [(e.details.topic, e.payload) for e in events(watcher, "status.")], [("status.alice", expected)]
        )
        self.assertIsNone(await self.app.retained("status.bob"))

    async def test_retained_topics_are_bounded_by_the_limit(self) -> None:
        self.app.limits = Limits(max_retained_topics=2)
        for topic in ("com.b.one", "com.b.two", "com.b.three"):
            self.app.broadcast(topic, topic, retain=True)
        self.assertIsNone(await self.app.retained("com.b.one"))  # the least recently retained to
        self.assertEqual(await self.app.retained("com.b.two"), "com.b.two")
        self.assertEqual(await self.app.retained("com.b.three"), "com.b.three")

    async def test_max_retained_topics_0_disables_the_limit(self) -> None:
        # Limits: "0 (or None where allowed) disables a limit"
        self.app.limits = Limits(max_retained_topics=0)
        for topic in ("com.u.one", "com.u.two", "com.u.three"):
            self.app.broadcast(topic, topic, retain=True)
        self.assertEqual(
            [await self.app.retained(topic) for topic in ("com.u.one", "com.u.two", "com.u.three")],
            ["com.u.one", "com.u.two", "com.u.three"],
        )


async def wait_until_retained(app: Sandstone, uri: str, payload: Any, timeout: float = 5.0) -> None:
    """Poll ``app.retained(uri)`` until it is ``payload`` (a retained event written to Redis by another node
    is read by this one a moment later)."""
    found: list[Any] = [None]

    def poll() -> None:
        app.retained(uri).addCallback(lambda payload: found.__setitem__(0, payload))

    def check() -> bool:
        if found[0] == payload:
            return True
        poll()
        return False

    await wait_until(check, timeout=timeout, interval=0.05)


class ClusterRetentionTests(ClusterTestCase):
    async def start_node_and_port(self, app: Sandstone, name: str) -> tuple[Node, Any]:
        """``ClusterTestCase.start_node``, also returning the listening port (to stop the node)."""
        port = self.serve(app)
        bus = app.use_redis(self.redis.url, **BUS_OPTIONS)
        self.addCleanup(self.stop_bus, bus)
        bus.startService()
        await bus.when_connected()
        return Node(name, app, bus, self.port), port

    async def test_retained_through_one_node_reaches_subscribers_on_another(self) -> None:
        a, b = await self.start_cluster(retention_app, 2)
        publisher = await self.connect_to(a)
        kept = await publisher.publish("com.c.news", "from A", options=retain())
        await publisher.publish("com.c.admins", "admins only", options=retain(eligible_authrole=["admin"]))
        await wait_until_retained(b.app, "com.c.news", "from A")
        await wait_until_retained(b.app, "com.c.admins", "admins only")
        redis = self.redis_client()
        base = a.bus.channels.base
        self.assertEqual(base, "sandstone:realm1")
        self.assertEqual(sorted(redis.hkeys(f"{base}:retained")), ["com.c.admins", "com.c.news"])

        readers = [await self.connect_to(b, "msgpack"), await self.connect_to(b, client_class=ticket("bob"))]
        for reader in readers:
            await reader.record("com.c.news", get_retained=True)
            await reader.record("com.c.", match="prefix", get_retained=True)
        await wait_until(lambda: all(events(r, "com.c.news") for r in readers))
        await wait_until(lambda: len(events(readers[1], "com.c.")) == 2)
        for reader in readers:
            [event] = events(reader, "com.c.news")
            self.assertEqual((event.payload, event.details.retained), ("from A", True))
            self.assertEqual(event.details.publication, kept.id)
        await round_trip(readers[0])
        self.assertEqual([e.payload for e in events(readers[0], "com.c.")], ["from A"])  # not an admin
        self.assertEqual(
            sorted((e.details.topic, e.payload) for e in events(readers[1], "com.c.")),
            [("com.c.admins", "admins only"), ("com.c.news", "from A")],
        )

        # the app of B retains; a subscriber on A gets it, and a newer one replaces it everywhere
        b.app.broadcast("com.c.news", "from B's app", retain=True)
        await wait_until_retained(a.app, "com.c.news", "from B's app")
        late = await self.connect_to(a, "cbor")
        await late.record("com.c.news", get_retained=True)
        await wait_until(lambda: events(late, "com.c.news"))
        self.assertEqual(seen(late, "com.c.news"), [("from B's app", True)])

    async def test_retained_topics_are_bounded_in_redis(self) -> None:
        a, b = await self.start_cluster(lambda: retention_app(Limits(max_retained_topics=2)), 2)
        redis = self.redis_client()
        key = f"{a.bus.channels.base}:retained"
        for node, topic in ((a, "com.b.one"), (b, "com.b.two"), (a, "com.b.three")):
            node.app.broadcast(topic, topic, retain=True)
            await wait_until(lambda topic=topic: redis.hexists(key, topic))
        self.assertEqual(sorted(redis.hkeys(key)), ["com.b.three", "com.b.two"])
        self.assertEqual(sorted(redis.zrange(f"{key}:topics", 0, -1)), ["com.b.three", "com.b.two"])
        self.assertIsNone(await b.app.retained("com.b.one"))
        self.assertEqual(await b.app.retained("com.b.three"), "com.b.three")

    async def test_a_topics_retained_event_is_shared_by_the_nodes(self) -> None:
        a, b = await self.start_cluster(retention_app, 2)
        alice = await self.connect_to(a)
        await alice.publish("status.alice", "online", options=ACK)
        await wait_until_retained(b.app, "status.alice", {"status": "online", "previous": None})
        bob = await self.connect_to(b)
        await bob.publish("status.alice", "away", options=ACK)  # B's Topic reads A's retained event
        expected = {"status": "away", "previous": {"status": "online", "previous": None}}
        await wait_until_retained(a.app, "status.alice", expected)

    async def test_retained_events_outlive_the_node_that_kept_them(self) -> None:
        a, port = await self.start_node_and_port(retention_app(), "A")
        publisher = await self.connect_to(a)
        kept = await publisher.publish("com.r.config", {"mode": "eco"}, options=retain())
        a.app.broadcast("com.r.app", "by the app", retain=True)
        redis = self.redis_client()
        await wait_until(lambda: redis.hlen(f"{a.bus.channels.base}:retained") == 2)

        await self.drop(publisher)
        await defer.maybeDeferred(port.stopListening)
        await a.bus.stopService()  # the only node: the cluster is empty now

        again = await self.start_node(retention_app(), "A2")
        self.assertEqual(await again.app.retained("com.r.config"), {"mode": "eco"})
        reader = await self.connect_to(again, "cbor")
        await reader.record("com.r.", match="prefix", get_retained=True)
        await reader.record("com.r.config", get_retained=True)
        await wait_until(lambda: len(events(reader, "com.r.")) == 2 and events(reader, "com.r.config"))
        [event] = events(reader, "com.r.config")
        self.assertEqual((event.payload, event.details.retained), ({"mode": "eco"}, True))
        self.assertEqual(event.details.publication, kept.id)
        self.assertEqual(
            sorted((e.details.topic, e.details.retained) for e in events(reader, "com.r.")),
            [("com.r.app", True), ("com.r.config", True)],
        )
