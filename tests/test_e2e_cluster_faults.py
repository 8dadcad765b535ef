"""End-to-end cluster faults: Redis restarts, pub/sub connections killed, Redis data lost, missed heartbeats.
Nodes serve their own clients meanwhile, reconnect, resubscribe, claim their registrations again, and
deliver nothing twice."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from sandstone._envelope import decode_entry
from tests.cluster_support import ClusterTestCase, Node, counts
from tests.support import Client, wait_until
from tests.test_e2e_cluster import make_blog


class FaultTestCase(ClusterTestCase):
    async def blog_cluster(self, count: int = 2) -> list[Node]:
        names = iter("ABCDEFGH")
        return await self.start_cluster(lambda: make_blog(next(names)), count)

    async def post(self, node: Node, title: str) -> dict[str, Any]:
        response = await self.http().post(f"{node.base_url}/api/articles", json={"title": title})
        self.assertEqual(response.code, 201)
        return await response.json()

    async def redis_down(self, *nodes: Node) -> None:
        self.redis.stop()
        await wait_until(lambda: not any(node.bus.connected for node in nodes))

    async def redis_up(self, *nodes: Node) -> None:
        self.redis.start(self.redis.port)  # the same address: the nodes reconnect by themselves
        for node in nodes:
            await node.bus.when_connected()

    def capture_logs(self) -> list[str]:
        """Messages logged from now on (info and above), formatted."""
        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level", LogLevel.info) >= LogLevel.info:
                logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return logged


def titles(client: Client) -> list[str]:
    return [payload["article"]["title"] for payload in counts(client, "articles")]


def numbers(client: Client) -> list[int]:
    return [p["n"] for p in counts(client, "chat/general") if isinstance(p, dict) and "n" in p]


class RedisRestartTests(FaultTestCase):
    async def test_redis_restart_mid_traffic(self) -> None:
        a, b = await self.blog_cluster()
        talker, local = await self.connect_to(a), await self.connect_to(a, "msgpack")
        remote = await self.connect_to(b, "cbor")
        for client in (local, remote):
            await client.record("articles")
            await client.record("chat/general")
        sent: list[int] = []

        def talk() -> None:
            sent.append(len(sent))
            talker.publish("chat/general", {"n": sent[-1]})

        traffic = LoopingCall(talk)
        traffic.start(0.01)
        self.addCleanup(lambda: traffic.stop() if traffic.running else None)
        await self.post(a, "before")
        await wait_until(lambda: titles(remote) == ["before"] and len(numbers(remote)) > 5)

        await self.redis_down(a, b)
        down_at = len(sent)
        failures = a.bus.stats["send_failures"]
        await self.post(a, "during")  # REST still answers, local subscribers still hear about it
        await wait_until(lambda: titles(local) == ["before", "during"])
        await wait_until(lambda: numbers(local)[-1:] >= [down_at + 5])
        self.assertGreater(a.bus.stats["send_failures"], failures)

        await self.redis_up(a, b)
        up_at = len(sent)
        await self.post(a, "after")
        await self.post(b, "after, from B")
        traffic.stop()
        await talker.publish("chat/general", {"n": len(sent)}, options=PublishOptions(acknowledge=True))
        sent.append(len(sent))
        await wait_until(lambda: numbers(remote)[-1:] == [sent[-1]] and numbers(local)[-1:] == [sent[-1]])
        await wait_until(lambda: len(titles(remote)) == 3 and len(titles(local)) == 4)

        self.assertEqual(titles(local), ["before", "during", "after", "after, from B"])
        self.assertEqual(titles(remote), ["before", "after", "after, from B"])
        self.assertEqual(numbers(local), sent)  # nothing lost or doubled on the publisher's node
        received = numbers(remote)
        self.assertEqual(received, sorted(set(received)))  # in order, nothing twice
        self.assertTrue(set(range(up_at, len(sent))) <= set(received))  # everything after the reconnect
        for node in (a, b):
            self.assertEqual(node.bus.stats["malformed"], 0)

    async def test_registrations_are_claimed_again_after_redis_lost_its_data(self) -> None:
        a, b = await self.blog_cluster()
        callee, caller = await self.connect_to(b), await self.connect_to(a, "cbor")
        await callee.register(lambda: "from B", "com.example.kept")
        self.assertEqual(await caller.call("com.example.kept"), "from B")
        redis = self.redis_client()
        redis.flushall()  # the restarted server has no persistence either: nothing survives
        await self.redis_down(a, b)

        # meanwhile: a registration made on A stays local until Redis is back; remote callers get an error
        offline = await self.connect_to(a)
        await offline.register(lambda: "from A", "com.example.offline")
        with self.assertRaises(ApplicationError) as caught:
            await callee.call("com.example.offline")
        self.assertEqual(caught.exception.error, "sandstone.error.cluster_unavailable")

        await self.redis_up(a, b)
        redis = self.redis_client()

        def owners() -> dict[str, str]:
            return {
                uri: decode_entry(entry).members[0][0]
                for uri, entry in redis.hgetall(a.bus.channels.procedures).items()
            }

        await wait_until(lambda: len(owners()) == 2)
        self.assertEqual(owners(), {"com.example.kept": b.bus.node_id, "com.example.offline": a.bus.node_id})
        self.assertEqual(await caller.call("com.example.kept"), "from B")
        self.assertEqual(await callee.call("com.example.offline"), "from A")
        with self.assertRaises(ApplicationError) as caught:
            await caller.register(lambda: "again", "com.example.kept")
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
        self.assertTrue(redis.exists(a.bus.channels.heartbeat(b.bus.node_id)))


class MissedHeartbeatTests(FaultTestCase):
    async def test_a_paused_node_claims_its_registrations_again(self) -> None:
        a, b = await self.blog_cluster()
        callee, caller = await self.connect_to(b), await self.connect_to(a)
        await callee.register(lambda: "from B", "com.example.paused")
        redis = self.redis_client()
        # B stops beating for longer than the TTL (a blocked reactor, a stopped VM) but stays connected
        b.bus._heartbeat.stop()
        await wait_until(lambda: not redis.hexists(a.bus.channels.procedures, "com.example.paused"))
        await wait_until(lambda: a.app.router.dealer.registration("com.example.paused") is None)
        with self.assertRaises(ApplicationError) as caught:
            await caller.call("com.example.paused")
        self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")
        b.bus._heartbeat.start(b.bus.heartbeat_interval)
        await wait_until(lambda: redis.hexists(a.bus.channels.procedures, "com.example.paused"))
        self.assertEqual(await caller.call("com.example.paused"), "from B")

    async def test_registrations_are_claimed_again_after_a_flushall(self) -> None:
        a, b = await self.blog_cluster()
        callee, caller = await self.connect_to(b), await self.connect_to(a)
        await callee.register(lambda: "from B", "com.example.flushed")
        redis = self.redis_client()
        redis.flushall()  # no reconnect: the next heartbeat finds its key gone
        await wait_until(lambda: redis.hexists(a.bus.channels.procedures, "com.example.flushed"))
        self.assertEqual(await caller.call("com.example.flushed"), "from B")
        with self.assertRaises(ApplicationError) as caught:
            await caller.register(lambda: "again", "com.example.flushed")
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")


class ConnectionKilledTests(FaultTestCase):
    async def test_client_kill_type_pubsub(self) -> None:
        a, b = await self.blog_cluster()
        logged = self.capture_logs()
        reader_a, reader_b = await self.connect_to(a), await self.connect_to(b, "msgpack")
        for reader in (reader_a, reader_b):
            await reader.record("articles")
            await reader.record("chat/general")
        redis = self.redis_client()
        before = {client["id"] for client in redis.client_list(_type="pubsub")}
        self.assertEqual(len(before), 2)

        self.assertEqual(redis.client_kill_filter(_type="pubsub"), 2)

        def resubscribed() -> bool:
            clients = redis.client_list(_type="pubsub")
            # events, deliveries, peers and the node's own channel
            return len(clients) == 2 and all(c["id"] not in before and c["sub"] == "4" for c in clients)

        await wait_until(resubscribed)
        for node in (a, b):
            await node.bus.when_connected()
        for node in (a, b):
            lost = [m for m in logged if f"node {node.bus.node_id}: pub/sub connection lost" in m]
            self.assertEqual(len(lost), 1, logged)
            await wait_until(
                lambda node=node: any(f"node {node.bus.node_id} reconnected" in m for m in logged)
            )

        await self.post(a, "from A")
        await reader_b.publish("chat/general", {"n": 1}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: titles(reader_b) == ["from A"] and numbers(reader_a) == [1])
        await self.post(b, "end")
        await wait_until(lambda: titles(reader_a)[-1:] == ["end"] and titles(reader_b)[-1:] == ["end"])
        self.assertEqual(titles(reader_a), ["from A", "end"])
        self.assertEqual(titles(reader_b), ["from A", "end"])

    async def test_client_kill_type_normal_fails_remote_calls_in_flight(self) -> None:
        a, b = await self.blog_cluster()
        callee, caller = await self.connect_to(b), await self.connect_to(a, "msgpack")
        pending: list[defer.Deferred[str]] = []

        def held() -> defer.Deferred[str]:
            pending.append(defer.Deferred())
            return pending[-1]

        await callee.register(held, "com.example.held")
        call = caller.call("com.example.held")
        await wait_until(lambda: pending)
        redis = self.redis_client()
        self.assertEqual(redis.client_kill_filter(_type="normal", skipme=True), 2)  # the command connections

        with self.assertRaises(ApplicationError) as caught:
            await call
        self.assertEqual(caught.exception.error, "wamp.error.canceled")
        self.assertEqual(a.bus.remote_calls_in_flight, 0)
        for node in (a, b):
            await node.bus.when_connected()
        pending[0].callback("too late")  # its answer has nowhere to go
        call = caller.call("com.example.held")
        await wait_until(lambda: len(pending) == 2)
        pending[1].callback("in time")
        self.assertEqual(await call, "in time")
        reader = await self.connect_to(a)
        await reader.record("articles")
        await self.post(b, "end")
        await wait_until(lambda: titles(reader) == ["end"])
