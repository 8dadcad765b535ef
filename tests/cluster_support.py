"""Helpers for cluster tests: several sandstone nodes (each its own app, port and bus) in one reactor,
sharing a throwaway redis-server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from twisted.internet import defer

from sandstone import Sandstone
from sandstone._bus import RedisBus
from tests.redis_server import RedisServer
from tests.support import Client, ServerTestCase

# Short heartbeats and reconnection delays: a dead node is noticed within about a second.
BUS_OPTIONS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "heartbeat_ttl": 1.0,
    "reconnect_max_delay": 0.5,
    "command_timeout": 2.0,
}


@dataclass
class Node:
    """One node of the cluster under test."""

    name: str
    app: Sandstone
    bus: RedisBus
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.app.ws_path}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ClusterTestCase(ServerTestCase):
    """Starts a redis-server per test and nodes connected to it; everything is stopped at cleanup."""

    timeout = 60

    def setUp(self) -> None:
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
        self.redis.start()

    def redis_client(self) -> redis.Redis:
        """A blocking client of the test's Redis (for quick checks from the test itself)."""
        client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)
        self.addCleanup(client.close)
        return client

    async def start_node(self, app: Sandstone, name: str = "", **options: Any) -> Node:
        """Serve ``app`` on a port of its own, start its bus and wait until it is connected."""
        self.serve(app)
        bus = app.use_redis(self.redis.url, **{**BUS_OPTIONS, **options})
        self.addCleanup(self.stop_bus, bus)
        bus.startService()
        await bus.when_connected()
        return Node(name or bus.node_id, app, bus, self.port)

    async def start_cluster(self, factory: Callable[[], Sandstone], count: int, **options: Any) -> list[Node]:
        """``count`` nodes named A, B, C..., each serving a fresh app made by ``factory``."""
        return [await self.start_node(factory(), "ABCDEFGH"[i], **options) for i in range(count)]

    def stop_bus(self, bus: RedisBus) -> defer.Deferred[None] | None:
        if not bus.running:
            return None
        return bus.stopService()

    def connect_to(self, node: Node, serializer: str = "json", client_class: type = Client) -> Any:
        """A Deferred firing with an autobahn client joined on ``node``."""
        return self.connect(serializer, client_class=client_class, url=node.ws_url)

    def kill_bus(self, node: Node) -> defer.Deferred[Any]:
        """Make a node's bus die as a killed process would: no more heartbeats, its Redis connections
        cut, nothing cleaned up in Redis (its heartbeat key and registrations stay until the TTL)."""
        bus = node.bus
        bus._heartbeat.stop()
        factories = [f for f in (bus._commands, bus._subscriber) if f is not None]
        return defer.gatherResults([f.disconnect() for f in factories], consumeErrors=True)


def counts(client: Client, topic: str) -> list[Any]:
    """The payloads a client received on a topic (its ``record`` subscription)."""
    return [event.payload for event in client.received.get(topic, [])]
