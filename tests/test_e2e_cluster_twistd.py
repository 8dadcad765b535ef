"""End-to-end: two ``twistd -n sandstone --redis URL`` processes form one server; one of them is killed."""

from __future__ import annotations

import json
import re
from typing import Any

import redis
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, reactor

from sandstone._envelope import channel_names
from tests.redis_server import RedisServer
from tests.support import Client, sleep, wait_until
from tests.test_e2e_twistd import Twistd, TwistdTestCase

CHANNELS = channel_names("sandstone", "realm1")
NODE_ID = re.compile(r"cluster bus node ([0-9a-f]+) connecting")


class TwistdClusterTestCase(TwistdTestCase):
    """twistd processes with a redis-server of their own (``self.redis_server``, a client ``self.redis``)."""

    def setUp(self) -> None:
        self.redis_server = RedisServer()
        self.addCleanup(self.redis_server.stop)
        self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_server.url, decode_responses=True, socket_timeout=5)
        self.addCleanup(self.redis.close)

    async def start_nodes(self, *arguments: str) -> list[tuple[Twistd, str, str]]:
        """Two twistd nodes with the same arguments and Redis: [(process, ws URL, base URL)], once both
        are subscribed to the bus."""
        nodes = []
        for _ in range(2):
            process = await self.start(*arguments, "--redis", self.redis_server.url)
            nodes.append((process, self.ws_url, self.base_url))
        await wait_until(lambda: self.subscribed_nodes() == 2, timeout=10)
        return nodes

    def subscribed_nodes(self) -> int:
        return int(self.redis.pubsub_numsub(CHANNELS.events)[0][1])

    async def kill(self, process: Twistd) -> None:
        process.transport.signalProcess("KILL")
        await process.ended


class BlogClusterTests(TwistdClusterTestCase):
    async def test_post_and_chat_across_processes_and_a_killed_node(self) -> None:
        (first, url1, base1), (second, url2, base2) = await self.start_nodes("--app", "examples.blog:app")
        reader1, reader2 = await self.connect(url=url1), await self.connect("msgpack", url=url2)
        for reader in (reader1, reader2):
            await reader.record("articles")
            await reader.record("chat/general")
        http = self.http()

        response = await http.post(f"{base1}/api/articles", json={"title": "Unicorns"})
        self.assertEqual(response.code, 201)
        article = await response.json()
        await wait_until(lambda: reader1.received["articles"] and reader2.received["articles"])
        await reader1.publish("chat/general", {"text": "hi"}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: len(reader2.received["chat/general"]) == 2)
        await sleep(0.3)
        for reader in (reader1, reader2):
            [event] = reader.received["articles"]
            self.assertEqual(event.payload["message"], "An article has just been published: Unicorns")
            self.assertEqual(event.payload["article"], article)
        self.assertEqual([e.payload for e in reader1.received["chat/general"]], ["Welcome on general"])
        self.assertEqual(
            [e.payload for e in reader2.received["chat/general"]], ["Welcome on general", {"text": "hi"}]
        )
        self.assertEqual(
            reader1.received["articles"][0].details.publication,
            reader2.received["articles"][0].details.publication,
        )

        await self.kill(second)
        await reader2.disconnected
        await wait_until(lambda: self.subscribed_nodes() == 1)
        response = await http.post(f"{base1}/api/articles", json={"title": "Dragons"})
        self.assertEqual(response.code, 201)
        await wait_until(lambda: len(reader1.received["articles"]) == 2)
        self.assertEqual(reader1.received["articles"][1].payload["article"], await response.json())
        other = await self.connect("cbor", url=url1)
        await other.record("chat/general")
        await reader1.publish(
            "chat/general", {"text": "still here"}, options=PublishOptions(acknowledge=True)
        )
        await wait_until(lambda: len(other.received["chat/general"]) == 2)
        await self.terminate(first)


class OpenRouterClusterTests(TwistdClusterTestCase):
    async def test_killed_callee_node_fails_calls_and_frees_its_uris(self) -> None:
        (first, url1, _), (second, url2, _) = await self.start_nodes()
        callee, caller = await self.connect(url=url2), await self.connect("cbor", url=url1)
        held: list[defer.Deferred[Any]] = []

        def hang() -> defer.Deferred[Any]:
            held.append(defer.Deferred())
            return held[-1]

        await callee.register(lambda a, b: a * b, "com.example.multiply")
        await callee.register(hang, "com.example.hang")
        self.assertEqual(await caller.call("com.example.multiply", 6, 7), 42)
        call = caller.call("com.example.hang")
        await wait_until(lambda: held)

        await self.kill(second)
        # node 1 notices within the heartbeat TTL (6 s) and a beat (2 s): an error, not a hang
        with self.assertRaises(ApplicationError) as caught:
            await call
        self.assertEqual(caught.exception.error, "wamp.error.canceled")
        self.assertEqual(self.redis.hgetall(CHANNELS.procedures), {})
        with self.assertRaises(ApplicationError) as caught:
            await caller.call("com.example.multiply", 1, 2)
        self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")
        # the URIs are free again, for a client of node 1
        newcomer = await self.connect("msgpack", url=url1)
        await newcomer.register(lambda a, b: a + b, "com.example.multiply")
        self.assertEqual(await caller.call("com.example.multiply", 6, 7), 13)
        await self.terminate(first)


class ClusterOptionsTests(TwistdClusterTestCase):
    """``--cluster-name`` and ``--cluster-secret`` (or ``SANDSTONE_CLUSTER_SECRET``) across processes."""

    async def test_named_signed_cluster_on_another_database(self) -> None:
        url = self.redis_server.url.replace("/0", "/2")
        options = ("--redis", url, "--cluster-name", "blog", "--cluster-secret", "s3cret")
        first = await self.start(*options)
        url1 = self.ws_url
        second = await self.start(*options)
        url2 = self.ws_url
        channels = channel_names("sandstone", "realm1", cluster_name="blog", db=2)
        await wait_until(lambda: int(self.redis.pubsub_numsub(channels.peers)[0][1]) == 2, timeout=10)
        self.assertEqual(self.redis.pubsub_numsub(CHANNELS.events)[0][1], 0)

        calls: list[Any] = []
        callee = await self.connect(url=url2)
        await callee.register(lambda *args: calls.append(args) or len(calls), "com.example.count")
        caller, reader = await self.connect("cbor", url=url1), await self.connect(url=url1)
        await reader.record("news")
        self.assertEqual(await caller.call("com.example.count", "legit"), 1)  # signed both ways
        await callee.publish("news", "hi", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: [e.payload for e in reader.received["news"]] == ["hi"])

        [node] = NODE_ID.findall(second.output)
        forged = {
            "v": 1,
            "type": "call",
            "origin": "intruder",
            "call": "forged-1",
            "procedure": "com.example.count",
            "args": ["forged"],
            "caller_authid": "root",
        }
        self.assertEqual(self.redis.publish(channels.node(node), json.dumps(forged)), 1)
        await wait_until(lambda: "refused a message on sandstone:blog:db2:realm1:node:" in second.output)
        self.assertIn("unsigned message on an internal channel", second.output)
        self.assertEqual(calls, [("legit",)])
        for process in (first, second):
            self.assertNotIn("no cluster secret", process.output)
            self.assertNotIn("Traceback", process.output)
        await self.terminate(first)
        await self.terminate(second)

    async def test_workers_share_the_secret_outside_their_command_line(self) -> None:
        process = await self.start(
            "--app",
            "examples.blog:app",
            "--redis",
            self.redis_server.url,
            "--workers",
            "2",
            "--cluster-name",
            "blog",
            "--cluster-secret",
            "s3cret",
        )
        await wait_until(lambda: "worker 2: accepting connections" in process.output, timeout=30)
        channels = channel_names("sandstone", "realm1", cluster_name="blog")
        await wait_until(lambda: int(self.redis.pubsub_numsub(channels.peers)[0][1]) == 2, timeout=10)
        [worker_pid] = re.findall(r"worker 2 started \(pid (\d+)\)", process.output)
        with open(f"/proc/{worker_pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        self.assertIn(b"--cluster-name=blog", argv)
        self.assertFalse([arg for arg in argv if b"s3cret" in arg])

        readers: list[Client] = [await self.connect(url=self.ws_url) for _ in range(6)]
        for reader in readers:
            await reader.record("articles")
        response = await self.http().post(f"{self.base_url}/api/articles", json={"title": "Signed"})
        self.assertEqual(response.code, 201)
        await wait_until(lambda: all(len(r.received["articles"]) == 1 for r in readers))
        self.assertNotIn("no cluster secret", process.output)  # worker 2's log is relayed here too
        self.assertNotIn("refused a message", process.output)
        await self.terminate(process)


class PresenceClusterTests(TwistdClusterTestCase):
    """``tests.presence_app`` on two processes: one is SIGKILLed with a member in a room."""

    async def test_a_killed_nodes_members_leave_once_within_the_ttl(self) -> None:
        (first, url1, _), (second, url2, _) = await self.start_nodes("--app", "tests.presence_app:app")
        [_, killed_node] = NODE_ID.findall(first.output + second.output)
        watcher = await self.connect(url=url1)
        await watcher.record("rooms.kitchen")
        for topic in ("wamp.session.on_leave", "wamp.subscription.on_unsubscribe"):
            await watcher.record(topic)
        bob = await self.connect("msgpack", url=url2)
        bob_id, bob_authid = bob._session_id, bob._authid
        kitchen = await bob.subscribe(lambda *a: None, "rooms.kitchen")
        await wait_until(lambda: len(watcher.received["rooms.kitchen"]) == 2)  # the watcher's join, bob's
        self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", kitchen.id), 2)
        self.assertEqual(await watcher.call("wamp.session.count"), 2)

        await self.kill(second)
        await bob.disconnected
        killed_at = reactor.seconds()
        # the heartbeat TTL (6 s) and a beat (2 s)
        await wait_until(lambda: len(watcher.received["rooms.kitchen"]) == 3, timeout=12)
        noticed_after = reactor.seconds() - killed_at
        await sleep(2.5)  # another beat: nothing is told twice
        self.assertEqual(
            [event.payload for event in watcher.received["rooms.kitchen"]],
            [
                {"joined": watcher._session_id, "authid": watcher._authid},
                {"joined": bob_id, "authid": bob_authid},
                {"left": bob_id, "authid": bob_authid},
            ],
        )
        self.assertLess(noticed_after, 9)
        self.assertEqual(
            [event.args for event in watcher.received["wamp.session.on_leave"]],
            [[bob_id, bob_authid, "anonymous"]],
        )
        self.assertEqual(
            [event.args for event in watcher.received["wamp.subscription.on_unsubscribe"]],
            [[bob_id, kitchen.id]],
        )
        self.assertEqual(await watcher.call("wamp.session.count"), 1)
        self.assertEqual(await watcher.call("wamp.subscription.count_subscribers", kitchen.id), 1)
        self.assertEqual(self.redis.keys(f"{CHANNELS.base}:*:{killed_node}*"), [])  # its state is gone
        await self.terminate(first)
