"""End-to-end: nodes and a Pusher on ``redis+sentinel://``, against a real topology started on free loopback
ports (a master, a replica, three redis-sentinel processes with short timings). The master is SIGKILLed,
Sentinel promotes the replica, and cross-node broadcasts and calls work again a few seconds later; each node
logs the failover once."""

from __future__ import annotations

import time
from typing import Any

import redis
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone.push import Pusher
from tests.bus_support import BusTestCase, Traffic, all_connected
from tests.redis_server import RedisSentinel, RedisServer
from tests.support import sleep, wait_until

MASTER = "mymaster"
OPTIONS: dict[str, Any] = {"reconnect_max_delay": 0.5, "command_timeout": 1.0, "connect_timeout": 1.0}
#: How long a failover may take here (Sentinel: 1 s to call the master down, then agreement, election and
#: promotion); a failed election is tried again after twice the 3 s failover timeout.
FAILOVER_TIMEOUT = 20.0

log = Logger()


class Topology:
    """A master, its replica and three Sentinels (quorum 2) watching them, on free 127.0.0.1 ports."""

    def __init__(self, test: SynchronousTestCase | BusTestCase) -> None:
        self.master = RedisServer()
        test.addCleanup(self.master.stop)
        self.master.start()
        self.replica = RedisServer(replica_of=self.master.port)
        test.addCleanup(self.replica.stop)
        self.replica.start()
        self.sentinels = [RedisSentinel(self.master.port, name=MASTER) for _ in range(3)]
        for sentinel in self.sentinels:
            test.addCleanup(sentinel.stop)
            sentinel.start()
        self._wait_ready(test)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/{db}"

    def _wait_ready(self, test: Any) -> None:
        """Until the replica is in sync and every Sentinel knows it and the two others (a failover needs
        both); the Sentinels announce themselves every 2 s."""
        clients = [redis.Redis(port=s.port, decode_responses=True, socket_timeout=2) for s in self.sentinels]
        replica = redis.Redis(port=self.replica.port, decode_responses=True, socket_timeout=2)
        for client in (*clients, replica):
            test.addCleanup(client.close)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if replica.info("replication").get("master_link_status") == "up" and all(
                len(c.sentinel_sentinels(MASTER)) == 2 and len(c.sentinel_slaves(MASTER)) == 1
                for c in clients
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("the Sentinels did not find each other and the replica within 15 s")


class SentinelTests(BusTestCase):
    def setUp(self) -> None:
        self.topology = Topology(self)

    async def recovered(self, traffic: Traffic) -> float:
        """Publish a new number from A every 0.1 s until B's reader gets one; how long that took."""
        start, before = time.monotonic(), traffic.sent
        deadline = start + FAILOVER_TIMEOUT
        while time.monotonic() < deadline:
            traffic.sent += 1
            traffic.talker.publish("chat/general", {"n": traffic.sent})
            await sleep(0.1)
            if traffic.received()[-1] > before:
                return time.monotonic() - start
        raise AssertionError(
            f"no broadcast crossed the nodes within {FAILOVER_TIMEOUT} s of the master's death"
        )

    async def test_failover(self) -> None:
        a, b = await self.two_nodes(self.topology.url(), **OPTIONS)
        traffic = await self.traffic(a, b)
        logged = self.capture_logs()
        old, new = f"127.0.0.1:{self.topology.master.port}", f"127.0.0.1:{self.topology.replica.port}"

        self.topology.master.kill()
        elapsed = await self.recovered(traffic)
        log.info("Sentinel failover: master killed -> first cross-node broadcast after {s:.2f} s", s=elapsed)

        await all_connected(a, b)
        await self.crosses(traffic)  # a broadcast and a call
        for node in (a, b):
            moved = [m for m in logged if f"node {node.bus.node_id}: master {MASTER} moved from" in m]
            self.assertEqual(len(moved), 1, logged)
            self.assertIn(f"from {old} to {new}", moved[0])
        received = traffic.received()
        self.assertEqual(received, sorted(set(received)))  # in order, nothing twice

    async def test_a_pusher_follows_the_failover(self) -> None:
        url = self.topology.url(3)
        (node,) = [await self.start_node_at(url, "A", **OPTIONS)]
        self.assertEqual(node.bus.channels.base, "sandstone:db3:realm1")
        reader = await self.connect_to(node)
        await reader.record("chat/general")
        pusher = Pusher(url)
        self.addCleanup(pusher.close)
        self.assertEqual(pusher.channels, node.bus.channels)

        def heard() -> list[Any]:
            return [e.payload for e in reader.received.get("chat/general", [])]

        await deferToThread(pusher.broadcast, "chat/general", "before")
        await wait_until(lambda: heard() == ["before"])
        self.topology.master.kill()
        await wait_until(lambda: node.bus.connected is False)
        await wait_until(lambda: node.bus.connected, timeout=FAILOVER_TIMEOUT)
        await deferToThread(pusher.broadcast, "chat/general", "after")
        await wait_until(lambda: heard() == ["before", "after"])

    async def test_a_master_name_the_sentinels_do_not_know(self) -> None:
        """Said once, clearly; the node keeps asking."""
        logged = self.capture_logs()
        bus = Sandstone(anonymous=True).use_redis(
            self.topology.url().replace(MASTER, "nosuchmaster"), **OPTIONS
        )
        self.addCleanup(bus.stopService)
        bus.startService()
        await wait_until(lambda: any("failed" in m for m in logged))
        await sleep(0.5)
        failures = [m for m in logged if "failed" in m]
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("no Sentinel gave the address of master 'nosuchmaster'", failures[0])
        self.assertIn(f"127.0.0.1:{self.topology.sentinels[0].port} knows no master named", failures[0])
        self.assertFalse(bus.connected)

    async def test_a_failover_while_the_old_master_runs(self) -> None:
        """``SENTINEL FAILOVER``: the old master runs on (until the Sentinels make it a replica, seconds
        later); the nodes move to the new one as soon as the Sentinels announce it (``+switch-master``)."""
        a, b = await self.two_nodes(self.topology.url(), **OPTIONS)
        traffic = await self.traffic(a, b)
        logged = self.capture_logs()
        sentinel = redis.Redis(port=self.topology.sentinels[0].port, decode_responses=True)
        self.addCleanup(sentinel.close)
        new_master = redis.Redis(port=self.topology.replica.port, decode_responses=True, socket_timeout=2)
        self.addCleanup(new_master.close)
        await deferToThread(sentinel.sentinel_failover, MASTER)
        start = time.monotonic()

        def subscribed_there() -> int:  # the nodes' pub/sub connections listen on 4 channels each
            return sum(c["sub"] == "4" for c in new_master.client_list(_type="pubsub"))

        await wait_until(lambda: subscribed_there() == 2, timeout=FAILOVER_TIMEOUT)
        log.info("Sentinel failover asked for: the nodes moved after {s:.2f} s", s=time.monotonic() - start)
        await all_connected(a, b)
        await self.recovered(traffic)  # so the publisher's node publishes on the new master too
        await self.crosses(traffic)
        for node in (a, b):
            moved = [m for m in logged if f"node {node.bus.node_id}: master {MASTER} moved from" in m]
            self.assertEqual(len(moved), 1, logged)
