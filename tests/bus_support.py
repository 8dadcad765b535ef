"""Helpers for the tests of how the bus reaches Redis (TLS, Sentinel, through a proxy): two nodes of an open
router on any Redis URL, with clients whose traffic must cross the nodes (a broadcast and a call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from sandstone import Sandstone
from tests.cluster_support import BUS_OPTIONS, Node, counts
from tests.support import Client, ServerTestCase, wait_until


@dataclass
class Traffic:
    """A talker and a caller on node A, a reader and a callee on node B."""

    talker: Client
    reader: Client
    sent: int = 0

    def received(self) -> list[int]:
        return [p["n"] for p in counts(self.reader, "chat/general") if isinstance(p, dict)]


class BusTestCase(ServerTestCase):
    """Nodes started on a given Redis URL, stopped at cleanup."""

    timeout = 60

    async def start_node_at(self, url: str, name: str, **options: Any) -> Node:
        """Serve an open router on a port of its own with a bus on ``url``; wait until it is connected."""
        app = Sandstone(anonymous=True, open_uris=True)
        self.serve(app)
        bus = app.use_redis(url, **{**BUS_OPTIONS, **options})
        self.addCleanup(lambda: bus.stopService() if bus.running else None)
        bus.startService()
        await bus.when_connected()
        return Node(name, app, bus, self.port)

    async def two_nodes(self, url: str, **options: Any) -> list[Node]:
        return [await self.start_node_at(url, name, **options) for name in "AB"]

    def connect_to(self, node: Node) -> Any:
        return self.connect(url=node.ws_url)

    async def traffic(self, a: Node, b: Node) -> Traffic:
        """Clients on both nodes: B's reader hears ``chat/general``, B's callee serves ``com.example.where``;
        the first cross-node broadcast and call have gone through."""
        talker, reader, callee = await self.connect_to(a), await self.connect_to(b), await self.connect_to(b)
        await reader.record("chat/general")
        await callee.register(lambda: "B", "com.example.where")
        traffic = Traffic(talker, reader)
        await self.crosses(traffic)
        return traffic

    async def crosses(self, traffic: Traffic, timeout: float = 5.0) -> None:
        """A broadcast from A reaches B's reader, and a call from A reaches B's callee."""
        traffic.sent += 1
        n = traffic.sent
        await traffic.talker.publish("chat/general", {"n": n}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: n in traffic.received(), timeout=timeout)
        self.assertEqual(await traffic.talker.call("com.example.where"), "B")

    def capture_logs(self, level: LogLevel = LogLevel.info) -> list[str]:
        """Messages logged from now on at ``level`` and above, formatted."""
        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level", LogLevel.info) >= level:
                logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return logged


def all_connected(*nodes: Node) -> defer.Deferred[None]:
    return defer.gatherResults([node.bus.when_connected() for node in nodes]).addCallback(lambda _: None)
