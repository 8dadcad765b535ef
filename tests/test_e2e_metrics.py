"""End-to-end: ``twistd -n sandstone --metrics tcp:PORT:interface=127.0.0.1`` as a real subprocess, real
traffic from autobahn-python clients and HTTP, then ``/metrics`` scraped and parsed with prometheus_client's
parser; the probes through startup, a Redis outage, a graceful shutdown, and ``--workers``."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable

from autobahn.wamp.types import PublishOptions
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

import sandstone
from tests.redis_server import RedisServer
from tests.support import sleep, wait_until
from tests.test_e2e_limits import RawPeer, upgrade
from tests.test_e2e_twistd import Twistd, TwistdTestCase, accepts, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value (0 when absent: a labelled series appears with its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved_since(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


class MetricsTestCase(TwistdTestCase):
    async def start_with_metrics(self, *arguments: str) -> Twistd:
        self.metrics_port = free_port()
        return await self.start(*arguments, "--metrics", f"tcp:{self.metrics_port}:interface=127.0.0.1")

    async def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        response = await self.http().get(f"http://127.0.0.1:{port or self.metrics_port}{path}")
        return response.code, await response.content()

    async def scrape(self, port: int | None = None) -> Samples:
        code, body = await self.get("/metrics", port)
        self.assertEqual(code, 200)
        return parse(body.decode())

    async def readiness(self, port: int | None = None) -> tuple[int, dict[str, str]]:
        code, body = await self.get("/readyz", port)
        return code, json.loads(body)

    async def until_ready(
        self, expected: int, port: int | None = None, timeout: float = 15.0
    ) -> dict[str, str]:
        """Poll /readyz until it answers ``expected``; its JSON body."""
        answers: list[tuple[int, dict[str, str]]] = []

        async def answered() -> bool:
            answers.append(await self.readiness(port))
            return answers[-1][0] == expected

        await self.eventually(answered, f"/readyz answering {expected}", timeout)
        return answers[-1][1]

    async def eventually(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
    ) -> None:
        """Wait until ``check()`` says True (every 0.1 s), or fail saying ``what`` did not happen."""
        deadline = reactor.seconds() + timeout
        while not await check():
            if reactor.seconds() > deadline:
                self.fail(f"no {what} within {timeout:g} s")
            await sleep(0.1)


class CountersTests(MetricsTestCase):
    async def test_counters_move_with_real_traffic(self) -> None:
        await self.start_with_metrics("--app", "examples.blog:app")
        self.assertEqual(await self.until_ready(200), {"status": "ready"})
        before = await self.scrape()

        reader = await self.connect("json")
        await reader.record("articles")
        chatter = await self.connect("msgpack")
        await chatter.record("chat/general")  # the topic greets it: one EVENT
        await reader.publish("chat/general", {"text": "hi"}, options=PublishOptions(acknowledge=True))
        response = await self.http().post(f"{self.base_url}/api/articles", json={"title": "Metrics"})
        self.assertEqual(response.code, 201)
        await wait_until(
            lambda: len(reader.received["articles"]) == 1 and len(chatter.received["chat/general"]) == 2
        )
        peer = RawPeer()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), peer)
        peer.transport.write(upgrade(f"127.0.0.1:{self.port}", "/ws", "http://evil.example"))
        await peer.closed
        self.assertEqual(peer.status, 403)
        after = await self.scrape()

        def moved(name: str, **labels: str) -> float:
            return moved_since(before, after, name, **labels)

        self.assertEqual(moved("sandstone_sessions_opened_total"), 2)
        self.assertEqual(value(after, "sandstone_sessions", protocol="wamp.2.json", authrole="anonymous"), 1)
        self.assertEqual(
            value(after, "sandstone_sessions", protocol="wamp.2.msgpack", authrole="anonymous"), 1
        )
        for kind, count in (("HELLO", 2), ("SUBSCRIBE", 2), ("PUBLISH", 1)):
            self.assertEqual(moved("sandstone_messages_received_total", type=kind), count, kind)
        for kind, count in (("WELCOME", 2), ("SUBSCRIBED", 2), ("PUBLISHED", 1), ("EVENT", 3)):
            self.assertEqual(moved("sandstone_messages_sent_total", type=kind), count, kind)
        self.assertEqual(moved("sandstone_events_delivered_total"), 3)
        self.assertEqual(
            moved("sandstone_publications_total", origin="local"), 2
        )  # the chat line, the article
        self.assertEqual(value(after, "sandstone_subscriptions"), 2)
        self.assertEqual(value(after, "sandstone_topic_instances"), 2)
        self.assertEqual(value(after, "sandstone_websocket_connections"), 2)
        self.assertEqual(
            moved(
                "sandstone_http_request_duration_seconds_count",
                route="/api/articles",
                method="POST",
                status="2xx",
            ),
            1,
        )
        self.assertEqual(moved("sandstone_dispatch_duration_seconds_count", event="article.created"), 1)
        self.assertEqual(moved("sandstone_refusals_total", reason="origins_refused"), 1)
        self.assertGreater(moved("sandstone_bytes_received_total"), 0)
        self.assertGreater(moved("sandstone_bytes_sent_total"), 0)
        self.assertGreater(value(after, "process_resident_memory_bytes"), 0)
        self.assertGreater(value(after, "process_open_fds"), 0)
        self.assertEqual(value(after, "sandstone_build_info", version=sandstone.__version__), 1)
        labels = {label for _name, labels in after for label, _value in labels}
        self.assertFalse(labels & {"topic", "uri", "session", "path"})

        await reader.leave()
        await self.drop(chatter)

        async def closed() -> bool:
            return moved_since(before, await self.scrape(), "sandstone_sessions_closed_total") == 2

        await self.eventually(closed, "two sessions counted as closed")


class ProbesTests(MetricsTestCase):
    async def test_readiness_through_startup_a_redis_outage_and_recovery(self) -> None:
        redis_server = RedisServer()
        self.addCleanup(redis_server.stop)
        redis_port = free_port()
        # The node starts while Redis is down: alive, not ready.
        await self.start_with_metrics(
            "--app", "examples.blog:app", "--redis", f"redis://127.0.0.1:{redis_port}/0"
        )
        body = await self.until_ready(503)
        self.assertEqual(body, {"status": "not ready", "reason": "the cluster bus is not connected to Redis"})
        self.assertEqual((await self.get("/healthz"))[0], 200)
        self.assertEqual(value(await self.scrape(), "sandstone_bus_connected"), 0)

        redis_server.start(redis_port)
        await self.until_ready(200)
        samples = await self.scrape()
        self.assertEqual(value(samples, "sandstone_bus_connected"), 1)
        client = await self.connect()
        await client.publish("chat/general", {"text": "hi"}, options=PublishOptions(acknowledge=True))

        async def announced() -> bool:
            return moved_since(samples, await self.scrape(), "sandstone_bus_messages_sent_total") > 0

        await self.eventually(announced, "broadcast sent on the bus")

        redis_server.kill()
        body = await self.until_ready(503)
        self.assertEqual(body["reason"], "the cluster bus is not connected to Redis")
        self.assertEqual((await self.get("/healthz"))[0], 200)
        self.assertEqual(value(await self.scrape(), "sandstone_bus_connected"), 0)

        redis_server.start(redis_port)
        await self.until_ready(200)
        samples = await self.scrape()
        self.assertEqual(value(samples, "sandstone_bus_connected"), 1)
        self.assertGreaterEqual(value(samples, "sandstone_bus_reconnects_total"), 1)

    async def test_readiness_turns_503_first_during_a_graceful_shutdown(self) -> None:
        process = await self.start_with_metrics("--app", "tests.shutdown_app:app")
        await self.until_ready(200)
        slow = self.http().get(f"{self.base_url}/slow")  # answers after 1 s: the node drains meanwhile
        await sleep(0.2)
        process.transport.signalProcess("TERM")
        body = await self.until_ready(503, timeout=5.0)
        self.assertEqual(body, {"status": "not ready", "reason": "shutting down"})
        self.assertEqual((await self.get("/healthz"))[0], 200)
        self.assertFalse(accepts(self.port))  # no new clients; the one in flight gets its answer
        response = await slow
        self.assertEqual((response.code, await response.content()), (200, b"done"))
        await wait_until(lambda: not process.running, timeout=10.0)
        self.assertFalse(accepts(self.metrics_port))


def two_free_ports() -> int:
    """A port P such that P and P + 1 are free right now."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


class WorkersTests(MetricsTestCase):
    async def test_each_worker_serves_its_metrics_on_its_own_port(self) -> None:
        redis_server = RedisServer()
        self.addCleanup(redis_server.stop)
        redis_server.start()
        self.metrics_port = two_free_ports()
        await self.start(
            "--redis",
            redis_server.url,
            "--workers",
            "2",
            "--metrics",
            f"tcp:{self.metrics_port}:interface=127.0.0.1",
        )
        ports = (self.metrics_port, self.metrics_port + 1)
        for port in ports:
            await wait_until(lambda port=port: accepts(port), timeout=20.0)
            await self.until_ready(200, port)
        clients = [await self.connect() for _ in range(6)]
        opened = [value(await self.scrape(port), "sandstone_sessions_opened_total") for port in ports]
        self.assertEqual(sum(opened), len(clients))
        for client in clients:
            await client.leave()
