"""End-to-end: the bus comes back after Redis does, whichever way its connection attempts fail meanwhile.

Redis sits behind a TCP proxy (as HAProxy, Envoy or a cloud endpoint would), is SIGKILLed and restarted on
the same port. While it is down, the proxy fails the nodes' attempts one way per test: accepted then closed,
refused, accepted and never answered, connects that time out, closed in the middle of a command. Once Redis
is back each node must be subscribed and heartbeating again with its registrations claimed: a broadcast and
a call cross the nodes. The database is 2 and Redis wants a password, so that AUTH and SELECT are part of
every attempt (txredisapi's factories gave up for good when those failed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis
from twisted.logger import LogLevel

from tests.bus_support import BusTestCase, all_connected
from tests.cluster_support import Node
from tests.redis_server import RedisServer
from tests.support import wait_until
from tests.tcp_proxy import TCPProxy

PASSWORD = "pr0xy secret"
OPTIONS: dict[str, Any] = {"command_timeout": 0.5, "connect_timeout": 0.5, "reconnect_max_delay": 0.5}


class ProxyRecoveryTests(BusTestCase):
    def setUp(self) -> None:
        self.redis = RedisServer(password=PASSWORD)
        self.addCleanup(self.redis.stop)
        self.redis.start()
        self.proxy = TCPProxy(self.redis.port)
        self.proxy.listen()
        self.addCleanup(self.proxy.stop)

    def client(self) -> redis.Redis:
        client = redis.Redis(
            port=self.redis.port, db=2, password=PASSWORD, decode_responses=True, socket_timeout=5
        )
        self.addCleanup(client.close)
        return client

    async def recovers(self, fail_attempts: Callable[[], Awaitable[None] | None], symptom: str) -> None:
        """Kill Redis; have the proxy ``fail_attempts``, until each connection of each node failed that way
        (its log says ``symptom``) twice; restart Redis and the proxy; the cluster works again."""
        a, b = await self.two_nodes(f"redis://:pr0xy%20secret@127.0.0.1:{self.proxy.port}/2", **OPTIONS)
        traffic = await self.traffic(a, b)
        logged = self.capture_logs(LogLevel.debug)
        broken = fail_attempts()
        if broken is not None:
            await broken
        self.redis.kill()
        await wait_until(lambda: not a.bus.connected and not b.bus.connected)

        def failed_attempts() -> int:
            return sum("connection: attempt" in m and symptom in m for m in logged)

        await wait_until(lambda: failed_attempts() >= 8, timeout=10)  # 2 nodes x 2 connections x 2
        self.redis.start(self.redis.port)
        self.proxy.mode = "forward"
        self.proxy.listen()
        await all_connected(a, b)

        await self.crosses(traffic)
        self.assertHeartbeatsAndSubscriptions(a, b)
        self.assertEqual([m for m in logged if "Traceback" in m or "subscribing to the bus" in m], [])
        for node in (a, b):
            self.assertEqual(sum(f"node {node.bus.node_id} reconnected" in m for m in logged), 1, logged)

    def assertHeartbeatsAndSubscriptions(self, *nodes: Node) -> None:
        """Every node beats in (and is subscribed to its own channel of) the restarted Redis, and its
        callee's registration is claimed there again."""
        client = self.client()
        for node in nodes:
            self.assertTrue(client.exists(node.bus.channels.heartbeat(node.bus.node_id)), node.name)
            channel = node.bus.channels.node(node.bus.node_id)
            self.assertEqual(client.pubsub_numsub(channel), [(channel, 1)], node.name)
        procedures = nodes[0].bus.channels.procedures
        self.assertEqual(client.hkeys(procedures), ["com.example.where"])

    async def test_accepted_then_closed(self) -> None:
        """The proxy accepts, fails to reach Redis and closes (HAProxy's way)."""
        await self.recovers(lambda: None, "closed cleanly")

    async def test_refused(self) -> None:
        await self.recovers(self.proxy.refuse, "refused")

    async def test_accepted_and_never_answered(self) -> None:
        """The proxy accepts and holds the connection: every command of the hello times out."""

        def hold() -> None:
            self.proxy.mode = "hold"

        await self.recovers(hold, "timed out")

    async def test_connect_timed_out(self) -> None:
        """Nothing answers the SYNs (a firewall, a dead host): connects time out."""
        await self.recovers(self.proxy.blackhole, "TCP connect timed out")

    async def test_closed_mid_command(self) -> None:
        """The proxy closes the connection when the first command arrives."""

        def close_on_data() -> None:
            self.proxy.mode = "close_on_data"

        await self.recovers(close_on_data, "closed cleanly")

    async def test_a_connection_that_stops_answering_is_replaced(self) -> None:
        """A proxy that keeps both connections open but forwards nothing any more (its backend gone without a
        word): heartbeats time out on the command connection, PINGs on the pub/sub one; both are made
        again."""
        a, b = await self.two_nodes(f"redis://:pr0xy%20secret@127.0.0.1:{self.proxy.port}/2", **OPTIONS)
        traffic = await self.traffic(a, b)
        logged = self.capture_logs()
        self.proxy.freeze()

        def lost(node: Node) -> bool:
            return any(f"node {node.bus.node_id}: " in m and "connection lost" in m for m in logged)

        await wait_until(lambda: lost(a) and lost(b), timeout=5)
        await all_connected(a, b)
        await self.crosses(traffic)
        self.assertHeartbeatsAndSubscriptions(a, b)
