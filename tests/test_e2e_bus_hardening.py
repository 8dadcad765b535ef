"""End-to-end bus hardening (issue 10, findings 5 and 7): nodes on a real redis-server, real autobahn
clients, and an attacker with Redis write access.

- Node-internal messages published where outside producers publish (or unsigned, when the cluster has a
  secret) reach no callee; they are counted and logged at warn, never a critical traceback.
- A procedures-hash entry that is not a node's makes calls fail at once, and does not stop the purge of
  dead nodes' registrations.
- Clusters on two databases, or with two cluster names, of one Redis do not hear each other.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import redis
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from sandstone import Sandstone
from sandstone._envelope import Signer
from sandstone.push import Pusher
from tests.cluster_support import BUS_OPTIONS, ClusterTestCase, Node, counts
from tests.support import sleep, wait_until

# What the attacker of issue 10 published: a call "from root", with the fields a node would send.
FORGED_CALL = {
    "v": 1,
    "type": "call",
    "origin": "intruder",
    "call": "forged-1",
    "procedure": "com.example.secret",
    "args": ["forged"],
    "kwargs": None,
    "receive_progress": False,
    "caller": 1,
    "caller_authid": "root",
    "caller_authrole": "admin",
}


def open_router() -> Sandstone:
    return Sandstone(anonymous=True, open_uris=True)


def forged(**fields: Any) -> str:
    return json.dumps({**FORGED_CALL, **fields}, separators=(",", ":"))


class HardeningTestCase(ClusterTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.logged if e.get("log_level") == LogLevel.warn]

    def assertNoCritical(self) -> None:
        bad = [
            formatEvent(e)
            for e in self.logged
            if "log_failure" in e or e.get("log_level") in (LogLevel.critical, LogLevel.error)
        ]
        self.assertEqual(bad, [])

    async def start_at(self, url: str, name: str, **options: Any) -> Node:
        """A node of the open router on ``url`` (another database, another cluster name...)."""
        app = open_router()
        self.serve(app)
        bus = app.use_redis(url, node_id=name, **{**BUS_OPTIONS, **options})
        self.addCleanup(self.stop_bus, bus)
        bus.startService()
        await bus.when_connected()
        return Node(name, app, bus, self.port)

    async def callee(self, node: Node, procedure: str) -> list[Any]:
        """A client of ``node`` registering ``procedure``; returns the arguments of each call it gets."""
        calls: list[Any] = []
        client = await self.connect_to(node)

        def record(*args: Any) -> str:
            calls.append(args)
            return "from the callee"

        await client.register(record, procedure)
        return calls


def within(seconds: float, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """``d``, failing with ``TimeoutError`` unless it fires within ``seconds`` (an answer, not a hang)."""
    return d.addTimeout(seconds, reactor)


class ForgedCallTests(HardeningTestCase):
    async def test_a_call_published_on_the_public_channels_reaches_no_callee(self) -> None:
        a, b = [await self.start_at(self.redis.url, name) for name in ("A", "B")]
        calls = await self.callee(b, "com.example.secret")
        redis = self.redis_client()

        self.assertEqual(redis.publish(b.bus.channels.deliveries, forged()), 2)  # both nodes hear it
        self.assertEqual(redis.publish(b.bus.channels.events, forged(call="forged-2")), 2)
        await wait_until(lambda: a.bus.stats["received"] >= 2 and b.bus.stats["received"] >= 2)
        await sleep(0.2)

        self.assertEqual(calls, [])
        self.assertEqual((a.bus.stats["rejected"], b.bus.stats["rejected"]), (2, 2))
        refused = [m for m in self.warnings() if "refused a message on sandstone:realm1:" in m]
        self.assertEqual(len(refused), 4)
        self.assertTrue(all("call messages are not accepted on this channel" in m for m in refused))
        caller = await self.connect_to(a)
        self.assertEqual(await caller.call("com.example.secret", "legit"), "from the callee")
        self.assertEqual(calls, [("legit",)])
        self.assertNoCritical()

    async def test_with_a_secret_unsigned_node_messages_are_refused_and_signed_ones_served(self) -> None:
        a, b = [await self.start_at(self.redis.url, name, cluster_secret="s3cret") for name in ("A", "B")]
        self.assertFalse([m for m in self.warnings() if "no cluster secret" in m])
        calls = await self.callee(b, "com.example.secret")
        redis = self.redis_client()
        node_b = b.bus.channels.node("B")

        self.assertEqual(redis.publish(node_b, forged()), 1)
        guessed = Signer("guess").sign(node_b, forged(call="forged-2").encode())
        self.assertEqual(redis.publish(node_b, guessed), 1)
        elsewhere = Signer("s3cret").sign(b.bus.channels.node("C"), forged(call="forged-3").encode())
        self.assertEqual(redis.publish(node_b, elsewhere), 1)  # signed for another channel
        await wait_until(lambda: b.bus.stats["rejected"] == 3)
        await sleep(0.2)

        self.assertEqual(calls, [])
        refused = [m for m in self.warnings() if "refused a message on sandstone:realm1:node:B" in m]
        self.assertEqual(len(refused), 3)
        self.assertIn("unsigned message on an internal channel", refused[0])
        self.assertTrue(all("bad signature on an internal channel" in m for m in refused[1:]))
        # the nodes' own calls and broadcasts are signed: they work
        caller, reader = await self.connect_to(a), await self.connect_to(a)
        await reader.record("news")
        self.assertEqual(await caller.call("com.example.secret", "legit"), "from the callee")
        publisher = await self.connect_to(b)
        await publisher.publish("news", "hello", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: counts(reader, "news") == ["hello"])
        self.assertEqual(calls, [("legit",)])
        self.assertEqual((a.bus.stats["rejected"], b.bus.stats["rejected"]), (0, 3))
        self.assertNoCritical()

    async def test_a_node_with_another_secret_is_heard_by_nobody(self) -> None:
        a = await self.start_at(self.redis.url, "A", cluster_secret="s3cret")
        stranger = await self.start_at(self.redis.url, "S", cluster_secret="other")
        reader = await self.connect_to(a)
        await reader.record("news")
        publisher = await self.connect_to(stranger)
        await publisher.publish("news", "from S", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: a.bus.stats["rejected"] == 1)
        self.assertEqual(counts(reader, "news"), [])
        self.assertIn("bad signature", self.warnings()[-1])
        self.assertNoCritical()

    async def test_without_a_secret_the_node_says_so_at_start(self) -> None:
        await self.start_at(self.redis.url, "A")
        [warning] = [m for m in self.warnings() if "no cluster secret" in m]
        self.assertIn("--cluster-secret or SANDSTONE_CLUSTER_SECRET", warning)


class MalformedNodeMessageTests(HardeningTestCase):
    async def test_malformed_node_messages_are_warned_and_counted(self) -> None:
        a = await self.start_at(self.redis.url, "A")
        calls = await self.callee(a, "com.example.secret")
        redis = self.redis_client()
        node_a = a.bus.channels.node("A")
        bad = [
            (forged(procedure=None), "procedure must be a URI"),
            (json.dumps({k: v for k, v in FORGED_CALL.items() if k != "procedure"}), "procedure is missing"),
            (forged(args={"a": 1}), "args must be an array or null"),
            (forged(origin="x:y"), "origin must be a node id"),
            ('{"v":1,"type":"result","origin":"B"}', "call is missing"),
            ('{"v":1,"type":"error","origin":"B","call":"c","error":7}', "error must be a URI"),
            ('{"v":1,"type":"cancel","origin":"B","call":"c","mode":"now"}', "mode must be"),
            ("12", "must be bytes or str, not int"),
            ("[]", "must be a JSON object"),
        ]
        for payload, _reason in bad:
            redis.publish(node_a, payload)
        await wait_until(lambda: a.bus.stats["malformed"] == len(bad))
        dropped = [m for m in self.warnings() if "dropped a message on sandstone:realm1:node:A" in m]
        for (_payload, reason), warning in zip(bad, dropped, strict=True):
            self.assertIn(reason, warning)
        self.assertEqual(calls, [])
        self.assertNoCritical()


class ProceduresEntryTests(HardeningTestCase):
    async def test_a_call_to_a_procedure_with_a_bad_entry_fails_at_once(self) -> None:
        # heartbeats (and purges) far apart: the bad entries stay while the calls are made
        a, b = [await self.start_at(self.redis.url, name, heartbeat_interval=30) for name in ("A", "B")]
        await sleep(0.3)  # the first beats (and purges), made as the nodes connected, are over
        redis = self.redis_client()
        procedures = a.bus.channels.procedures
        entries = {"com.x": "not json", "com.n": "42", "com.o": '{"node":["B"],"registration":1}'}
        for uri, entry in entries.items():
            redis.hset(procedures, uri, entry)
        caller = await self.connect_to(a)
        for uri in entries:
            with self.assertRaises(ApplicationError) as caught:
                await within(2, caller.call(uri))
            self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")
        # a bad entry does not block a claim either: a callee on B takes the URI, A's callers reach it
        calls = await self.callee(b, "com.x")
        self.assertEqual(await within(2, caller.call("com.x", 1)), "from the callee")
        self.assertEqual(calls, [(1,)])
        self.assertNoCritical()

    async def test_dead_nodes_are_purged_in_spite_of_bad_entries(self) -> None:
        a, b = [await self.start_at(self.redis.url, name) for name in ("A", "B")]
        redis = self.redis_client()
        procedures = a.bus.channels.procedures
        redis.hset(procedures, "com.a", "not json")  # before B's entry (a hash keeps the order of entries)
        await self.callee(b, "com.example.dead")
        self.assertTrue(redis.hexists(procedures, "com.example.dead"))
        await self.kill_bus(b)
        redis.hset(procedures, "com.z", "not json")  # after it, and there when B's heartbeat expires

        await wait_until(lambda: not redis.hexists(procedures, "com.example.dead"), timeout=5)
        self.assertEqual(redis.hgetall(procedures), {})  # the bad entry went too
        caller = await self.connect_to(a)
        with self.assertRaises(ApplicationError) as caught:
            await within(2, caller.call("com.example.dead"))
        self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")
        # each bad entry is counted by the purge that removed it, and by a node that read it before, if any
        self.assertGreaterEqual(a.bus.stats["bad_entries"] + b.bus.stats["bad_entries"], 2)
        self.assertNoCritical()

    async def test_a_failing_purge_is_warned_once(self) -> None:
        a = await self.start_at(self.redis.url, "A")
        redis = self.redis_client()
        procedures = a.bus.channels.procedures
        redis.hset(procedures, "com.x", "not json")
        await wait_until(lambda: not redis.exists(procedures))
        redis.set(procedures, "not a hash")  # HGETALL fails now, on every heartbeat
        await sleep(1.0)
        failed = [m for m in self.warnings() if "could not purge dead nodes' registrations" in m]
        self.assertEqual(len(failed), 1)
        self.assertIn("WRONGTYPE", failed[0])
        redis.delete(procedures)
        await wait_until(
            lambda: any("the purge of dead nodes works again" in formatEvent(e) for e in self.logged)
        )
        self.assertNoCritical()


class ClusterSeparationTests(HardeningTestCase):
    async def two_clusters(self, *settings: tuple[str, dict[str, Any]]) -> Any:
        """Two nodes in each cluster, a reader of ``news`` on each node: [(nodes, readers)] per cluster.

        Every node is started before the first client connects (cleanups run in reverse order: a
        server's waits for the connections made after it to close).
        """
        nodes = [
            [await self.start_at(url, f"{name}{index}", **options) for name in "AB"]
            for index, (url, options) in enumerate(settings)
        ]
        clusters = []
        for cluster in nodes:
            readers = []
            for node in cluster:
                reader = await self.connect_to(node)
                await reader.record("news")
                readers.append(reader)
            clusters.append((cluster, readers))
        return clusters

    async def assert_separate(self, clusters: Any) -> None:
        """What is published in one cluster reaches all of its readers and none of the other's."""
        for index, (nodes, readers) in enumerate(clusters):
            publisher = await self.connect_to(nodes[0])
            await publisher.publish("news", f"in {index}", options=PublishOptions(acknowledge=True))
            expected = [f"in {index}"]
            await wait_until(lambda r=readers, e=expected: all(counts(reader, "news") == e for reader in r))
        await sleep(0.3)
        for index, (_nodes, readers) in enumerate(clusters):
            for reader in readers:
                self.assertEqual(counts(reader, "news"), [f"in {index}"])
        for nodes, _readers in clusters:
            for node in nodes:
                self.assertEqual(node.bus.stats["malformed"] + node.bus.stats["rejected"], 0)

    async def test_clusters_on_two_databases_do_not_hear_each_other(self) -> None:
        db1 = self.redis.url.replace("/0", "/1")
        clusters = await self.two_clusters((self.redis.url, {}), (db1, {}))
        await self.assert_separate(clusters)
        self.assertEqual(clusters[0][0][0].bus.channels.events, "sandstone:realm1:events")
        self.assertEqual(clusters[1][0][0].bus.channels.events, "sandstone:db1:realm1:events")

    async def test_clusters_with_two_names_do_not_hear_each_other(self) -> None:
        clusters = await self.two_clusters(
            (self.redis.url, {"cluster_name": "red"}), (self.redis.url, {"cluster_name": "blue"})
        )
        self.assertEqual(clusters[1][0][0].bus.channels.events, "sandstone:blue:realm1:events")
        await self.assert_separate(clusters)
        # their registrations are apart too: the same URI in each cluster
        red_calls = await self.callee(clusters[0][0][1], "com.example.where")
        blue_calls = await self.callee(clusters[1][0][1], "com.example.where")
        blue_caller = await self.connect_to(clusters[1][0][0])
        self.assertEqual(await blue_caller.call("com.example.where", "blue"), "from the callee")
        self.assertEqual((red_calls, blue_calls), ([], [("blue",)]))

    async def test_a_pusher_reaches_the_cluster_it_names(self) -> None:
        clusters = await self.two_clusters(
            (self.redis.url, {"cluster_name": "red"}), (self.redis.url.replace("/0", "/1"), {})
        )
        red = await deferToThread(Pusher, self.redis.url, cluster_name="red")
        self.addCleanup(deferToThread, red.close)
        db1 = await deferToThread(Pusher, self.redis.url.replace("/0", "/1"))
        self.addCleanup(deferToThread, db1.close)
        await deferToThread(red.broadcast, "news", "to red")
        await deferToThread(db1.broadcast, "news", "to db1")
        expected = [["to red"], ["to db1"]]
        await wait_until(
            lambda: all(
                counts(reader, "news") == expected[index]
                for index, (_, readers) in enumerate(clusters)
                for reader in readers
            )
        )
        await sleep(0.3)
        for index, (_nodes, readers) in enumerate(clusters):
            for reader in readers:
                self.assertEqual(counts(reader, "news"), expected[index])
        self.assertNoCritical()


class RedisAclTests(HardeningTestCase):
    def documented_acls(self) -> list[list[str]]:
        """The ``ACL SETUSER`` commands of docs/bus.md, as argument lists."""
        text = (Path(__file__).parent.parent / "docs" / "bus.md").read_text(encoding="utf-8")
        return [
            shlex.split(line.strip()) for line in text.splitlines() if line.strip().startswith("ACL SETUSER")
        ]

    async def test_the_documented_acls_let_nodes_work_and_keep_producers_out(self) -> None:
        admin = self.redis_client()
        acls = self.documented_acls()
        self.assertEqual([acl[2] for acl in acls], ["producer", "sandstone"])
        for acl in acls:
            admin.execute_command(*acl)
        port = self.redis.port
        node_url = f"redis://sandstone:node-password@127.0.0.1:{port}/0"
        a, b = [await self.start_at(node_url, name) for name in ("A", "B")]
        calls = await self.callee(b, "com.example.secret")
        caller, reader = await self.connect_to(a), await self.connect_to(a)
        await reader.record("news")
        self.assertEqual(await caller.call("com.example.secret", "legit"), "from the callee")
        publisher = await self.connect_to(b)
        await publisher.publish("news", "from B", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: counts(reader, "news") == ["from B"])

        producer_url = f"redis://producer:producer-password@127.0.0.1:{port}/0"
        pusher = await deferToThread(Pusher, producer_url)
        self.addCleanup(deferToThread, pusher.close)
        await deferToThread(pusher.broadcast, "news", "from a producer")
        await wait_until(lambda: counts(reader, "news") == ["from B", "from a producer"])

        producer = redis.Redis.from_url(producer_url, decode_responses=True, socket_timeout=5)
        self.addCleanup(producer.close)
        for command in [
            ("PUBLISH", a.bus.channels.node("B"), forged()),
            ("PUBLISH", a.bus.channels.peers, forged()),
            ("HSET", a.bus.channels.procedures, "com.x", "not json"),
            ("SUBSCRIBE", a.bus.channels.node("B")),
        ]:
            with self.assertRaises(redis.exceptions.NoPermissionError):
                await deferToThread(producer.execute_command, *command)
        self.assertEqual(calls, [("legit",)])
        self.assertFalse([m for m in self.warnings() if "could not" in m or "failed" in m])
        self.assertNoCritical()
