"""End-to-end, at scale: presence of 10,000 subscribers of one topic across two nodes over a real
redis-server, and subscribe/unsubscribe churn of about 1,000 per second across two nodes, after which Redis
holds what the live subscribers need and nothing more. Sessions are in-memory test sessions
(``sandstone.testing``) on nodes with a real bus: what is measured is the nodes' Redis traffic and memory.

The figures (Redis memory, keys, timings) are logged at info level: ``trial --logfile`` keeps them.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sandstone import Sandstone, Topic
from sandstone.testing import TestClient, TestSubscription
from tests.cluster_support import ClusterTestCase, Node
from tests.support import sleep

log = Logger()

MEMBERS = 10_000
CHURN_SECONDS = 5.0
CHURN_PER_SECOND = 1_000  # subscribes and unsubscribes together, both nodes together


def rooms() -> Sandstone:
    app = Sandstone(anonymous=True)

    @app.topic("rooms.{name}")
    class Room(Topic):
        pass

    return app


class PresenceScaleTests(ClusterTestCase):
    timeout = 120

    async def two_nodes(self) -> list[Node]:
        # the default heartbeat (2 s, TTL 6 s), not the tests' short one: creating 10,000 sessions keeps a
        # node's reactor busy long enough to miss a one-second TTL
        return await self.start_cluster(rooms, 2, heartbeat_interval=2.0, heartbeat_ttl=6.0)

    def memory(self) -> tuple[int, int]:
        """The memory of Redis's data (``used_memory_dataset``: without the server's own overhead, the
        clients' buffers and the scripts) in bytes, and its number of keys."""
        redis = self.redis_client()
        return int(redis.info("memory")["used_memory_dataset"]), int(redis.dbsize())

    async def flushed(self, *nodes: Node) -> None:
        """Wait until every command the nodes sent was answered (a PING answered after them)."""
        for node in nodes:
            await node.bus._command("ping")

    async def test_presence_of_ten_thousand_subscribers(self) -> None:
        a, b = await self.two_nodes()
        await self.flushed(a, b)
        before = self.memory()
        started = time.monotonic()
        clients = {node.name: TestClient(node.app) for node in (a, b)}
        for i in range(MEMBERS):
            node = a if i % 2 else b
            clients[node.name].connect().subscribe("rooms.hall")
            if i % 500 == 499:  # clients arrive over reactor turns, not all in one
                await sleep(0)
        await self.flushed(a, b)
        joined_in = time.monotonic() - started
        room = a.app.topic_instance("rooms.hall")
        assert room is not None
        started = time.monotonic()
        members = await room.presence()
        presence_in = time.monotonic() - started
        self.assertEqual(len(members), MEMBERS)
        self.assertEqual(len({m.session for m in members}), MEMBERS)
        self.assertEqual(sum(m.local for m in members), MEMBERS // 2)
        self.assertEqual(await room.presence_count(), MEMBERS)
        during = self.memory()
        for client in clients.values():
            client.close()
        await self.flushed(a, b)
        after = self.memory()
        log.info(
            "presence of {n} subscribers on 2 nodes: joined and subscribed in {joined:.2f} s, presence() in "
            "{presence:.3f} s; Redis used_memory_dataset {before} B / {during} B / {after} B (before / with "
            "them / after they left), keys {keys_before} / {keys_during} / {keys_after}",
            n=MEMBERS,
            joined=joined_in,
            presence=presence_in,
            before=before[0],
            during=during[0],
            after=after[0],
            keys_before=before[1],
            keys_during=during[1],
            keys_after=after[1],
        )
        self.assertEqual(after[1], before[1])  # nothing left of them
        self.assertLess(after[0] - before[0], 256 * 1024)

    async def test_churn_does_not_grow_redis(self) -> None:
        a, b = await self.two_nodes()
        pools: dict[str, list[Any]] = {}
        held: dict[str, list[TestSubscription | None]] = {}
        for node in (a, b):
            client = TestClient(node.app)
            self.addCleanup(client.close)
            pools[node.name] = [client.connect() for _ in range(100)]
            held[node.name] = [None] * 100
        await self.flushed(a, b)
        baseline = self.memory()
        turns = itertools.count()
        rooms_cycle = itertools.cycle([f"rooms.r{i}" for i in range(20)])
        changes = [0]
        per_tick = 3  # every 10 ms, per node: pairs of unsubscribe + subscribe (1,200 changes/s in all)

        def churn() -> None:
            for name, sessions in pools.items():
                for _ in range(per_tick):
                    i = next(turns) % len(sessions)
                    previous = held[name][i]
                    if previous is not None:
                        sessions[i].unsubscribe(previous)
                        changes[0] += 1
                    held[name][i] = sessions[i].subscribe(next(rooms_cycle))
                    changes[0] += 1

        loop = LoopingCall(churn)
        started = time.monotonic()
        loop.start(0.01)
        samples = []
        while time.monotonic() - started < CHURN_SECONDS:
            await sleep(1.0)
            samples.append(self.memory())
        loop.stop()
        elapsed = time.monotonic() - started
        await self.flushed(a, b)
        live = sum(1 for name in held for s in held[name] if s is not None)
        during = self.memory()
        for name, sessions in pools.items():
            for i, subscription in enumerate(held[name]):
                if subscription is not None:
                    sessions[i].unsubscribe(subscription)
        await self.flushed(a, b)
        after = self.memory()
        log.info(
            "churn: {changes} subscribe/unsubscribe in {elapsed:.1f} s ({rate:.0f}/s) over 2 nodes, "
            "{live} live subscriptions at the end; Redis used_memory_dataset baseline {base} B, each second "
            "{samples}, at the end {during} B, after unsubscribing all {after} B; keys {keys_base} / "
            "{keys_during} / {keys_after}",
            changes=changes[0],
            elapsed=elapsed,
            rate=changes[0] / elapsed,
            live=live,
            base=baseline[0],
            samples=[m for m, _ in samples],
            during=during[0],
            after=after[0],
            keys_base=baseline[1],
            keys_during=during[1],
            keys_after=after[1],
        )
        self.assertGreater(changes[0] / elapsed, CHURN_PER_SECOND * 0.8)
        self.assertEqual(after[1], baseline[1])
        # bounded by the live subscribers (200 at most), not by the number of changes
        self.assertLess(max(m for m, _ in samples) - baseline[0], 512 * 1024)
        self.assertLess(after[0] - baseline[0], 128 * 1024)
