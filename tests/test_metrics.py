"""Unit tests of ``_activity.py``, ``_metrics.py`` and ``_health.py``: what the collectors read, the bounded
labels, the histograms, the probes and the ``--metrics`` service and option."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import treq
from autobahn.wamp.exception import ApplicationError
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import MultiService, Service
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

import sandstone
from sandstone import Limits, Sandstone, Topic
from sandstone import _tap as tap_module
from sandstone._activity import MAX_AUTHROLES, OTHER_ROLE, Activity
from sandstone._health import HealthPage, Readiness, ReadinessPage
from sandstone._metrics import MAX_EVENT_NAMES, REFUSALS, Metrics, MetricsService, metrics_endpoint
from sandstone._tap import Options, SandstoneService, makeService
from sandstone.testing import SessionClosed, TestClient
from tests.support import open_websocket, wait_until
from tests.test_e2e_twistd import free_port


class ActivityTests(SynchronousTestCase):
    def test_open_sessions_by_protocol_and_role(self) -> None:
        activity = Activity()
        activity.joined("wamp.2.json", "user")
        activity.joined("wamp.2.json", "user")
        activity.joined("wamp.2.cbor", "admin")
        activity.left("wamp.2.json", "user")
        self.assertEqual(dict(activity.sessions), {("wamp.2.json", "user"): 1, ("wamp.2.cbor", "admin"): 1})
        self.assertEqual((activity.sessions_opened, activity.sessions_closed), (3, 1))
        activity.left("wamp.2.cbor", "admin")
        self.assertNotIn(("wamp.2.cbor", "admin"), activity.sessions)

    def test_roles_beyond_the_cap_share_one_label(self) -> None:
        activity = Activity()
        for n in range(MAX_AUTHROLES + 20):
            activity.joined("wamp.2.json", f"role{n}")
        self.assertEqual(len(activity.sessions), MAX_AUTHROLES + 1)
        self.assertEqual(activity.sessions["wamp.2.json", OTHER_ROLE], 20)
        for n in range(MAX_AUTHROLES + 20):  # each leaves under the label it joined with
            activity.left("wamp.2.json", f"role{n}")
        self.assertEqual(dict(activity.sessions), {})

    def test_call_outcomes(self) -> None:
        activity = Activity()
        activity.call_ended(None)
        activity.call_ended("wamp.error.canceled")
        activity.call_ended("wamp.error.not_authorized")
        activity.call_ended("wamp.error.authorization_failed")
        activity.call_ended("com.example.oops")
        self.assertEqual(dict(activity.calls), {"result": 1, "canceled": 1, "not_authorized": 2, "error": 1})


def make_app() -> Sandstone:
    # No WebSocket opening handshake timer: one left by an in-memory connection would outlive its test in
    # txaio's timer buckets.
    app = Sandstone(anonymous=True, open_uris=True, limits=Limits(open_handshake_timeout=0))

    @app.topic("room.{name}")
    class Room(Topic):
        def on_subscribe(self, session: Any) -> None:
            self.send(session, "hello")

    @app.procedure("com.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.procedure("com.fail")
    def fail() -> None:
        raise ApplicationError("com.example.oops")

    @app.route("/api/items/<int:item>", methods=["GET"])
    def item(request: Any, item: int) -> bytes:
        return b"item"

    @app.route("/api/broken")
    def broken(request: Any) -> bytes:
        raise RuntimeError("broken")

    return app


class CollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.site = self.app.site()
        self.metrics = Metrics(self.app, self.site)
        self.metrics.start()
        self.addCleanup(self.metrics.stop)
        self.client = TestClient(self.app)
        self.addCleanup(self.client.close)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def test_sessions_messages_publications_and_events(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        alice.subscribe("room.a")  # the topic sends "hello": one EVENT
        bob.publish("room.a", {"text": "hi"}, acknowledge=True)  # one EVENT to alice
        self.app.broadcast("room.b", "nobody listens")  # a publication, no EVENT
        self.assertEqual(self.value("sandstone_sessions", protocol="unknown", authrole="anonymous"), 2)
        self.assertEqual(self.value("sandstone_sessions_opened_total"), 2)
        self.assertEqual(self.value("sandstone_messages_received_total", type="HELLO"), 2)
        self.assertEqual(self.value("sandstone_messages_received_total", type="SUBSCRIBE"), 1)
        self.assertEqual(self.value("sandstone_messages_received_total", type="PUBLISH"), 1)
        self.assertEqual(self.value("sandstone_publications_total", origin="local"), 2)
        self.assertEqual(self.value("sandstone_publications_total", origin="remote"), 0)
        self.assertEqual(self.value("sandstone_events_delivered_total"), 2)
        self.assertEqual(self.value("sandstone_messages_sent_total", type="EVENT"), 2)
        self.assertEqual(self.value("sandstone_subscriptions"), 1)
        self.assertEqual(self.value("sandstone_topic_instances"), 1)
        self.assertEqual(self.value("sandstone_registrations"), 2)
        bob.leave()
        self.assertEqual(self.value("sandstone_sessions", protocol="unknown", authrole="anonymous"), 1)
        self.assertEqual(self.value("sandstone_sessions_closed_total"), 1)

    def test_calls_by_outcome(self) -> None:
        session = self.client.connect()
        self.assertEqual(self.successResultOf(session.call("com.add", 1, 2)), 3)
        self.failureResultOf(session.call("com.fail"), ApplicationError)
        self.failureResultOf(session.call("com.missing"), ApplicationError)
        self.assertEqual(self.value("sandstone_calls_total", outcome="result"), 1)
        self.assertEqual(self.value("sandstone_calls_total", outcome="error"), 1)
        self.assertEqual(self.value("sandstone_calls_total", outcome="no_such_procedure"), 1)
        self.assertEqual(self.value("sandstone_calls_total", outcome="canceled"), 0)

    def test_authentication_failures_by_reason(self) -> None:
        app = Sandstone()  # nobody may join
        metrics = Metrics(app)
        client = TestClient(app)
        self.addCleanup(client.close)
        self.assertRaises(SessionClosed, client.connect)
        value = metrics.registry.get_sample_value
        self.assertEqual(value("sandstone_auth_failures_total", {"reason": "wamp.error.no_auth_method"}), 1)
        self.assertEqual(
            value("sandstone_auth_failures_total", {"reason": "wamp.error.authentication_denied"}), 0
        )

    def test_refusals_are_the_routers_stats(self) -> None:
        stats = self.app.router.stats
        stats["origins_refused"] += 3
        stats["slow_consumers_dropped"] += 1
        stats["something_new"] += 2
        self.assertEqual(self.value("sandstone_refusals_total", reason="origins_refused"), 3)
        self.assertEqual(self.value("sandstone_refusals_total", reason="slow_consumers_dropped"), 1)
        self.assertEqual(self.value("sandstone_refusals_total", reason="rate_limited"), 0)
        self.assertEqual(self.value("sandstone_refusals_total", reason="something_new"), 2)

    def test_bus_metrics_come_from_the_bus_stats(self) -> None:
        self.assertIsNone(self.value("sandstone_bus_connected"))  # no bus, no bus metrics
        bus = self.app.use_redis("redis://127.0.0.1:1")  # never started: not connected
        bus.stats["received"] = 7
        bus.stats["published"] = 5
        bus.stats["duplicates"] = 2
        bus.stats["reconnects"] = 1
        self.assertEqual(self.value("sandstone_bus_connected"), 0)
        self.assertEqual(self.value("sandstone_bus_messages_received_total"), 7)
        self.assertEqual(self.value("sandstone_bus_messages_sent_total"), 5)
        self.assertEqual(self.value("sandstone_bus_messages_dropped_total", reason="duplicates"), 2)
        self.assertEqual(self.value("sandstone_bus_messages_dropped_total", reason="malformed"), 0)
        self.assertEqual(self.value("sandstone_bus_reconnects_total"), 1)

    def test_process_and_build_info(self) -> None:
        self.assertGreater(self.value("process_resident_memory_bytes") or 0, 0)
        self.assertGreater(self.value("process_open_fds") or 0, 0)
        self.assertEqual(self.value("sandstone_build_info", version=sandstone.__version__), 1)

    def test_the_exposition_parses(self) -> None:
        self.client.connect().subscribe("room.a")
        body, content_type = self.metrics.exposition()
        self.assertTrue(content_type.startswith("text/plain"))
        names = {family.name for family in text_string_to_metric_families(body.decode())}
        self.assertTrue({"sandstone_sessions", "sandstone_messages_sent", "process_cpu_seconds"} <= names)
        body, content_type = self.metrics.exposition("application/openmetrics-text")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def label_sets(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {
            (sample.name, tuple(sorted(sample.labels.items())))
            for family in self.metrics.registry.collect()
            for sample in family.samples
        }

    def test_no_label_per_topic_uri_or_session(self) -> None:
        def traffic(prefix: str) -> None:
            sessions = [self.client.connect() for _ in range(5)]
            for n, session in enumerate(sessions):
                session.subscribe(f"{prefix}.{n}")
                session.publish(f"{prefix}.{n}", "x", acknowledge=True)
                self.app.dispatch("news")
            for session in sessions:
                session.leave()

        traffic("room")
        before = self.label_sets()
        traffic("other.topics")
        self.assertEqual(self.label_sets(), before)
        values = {value for _name, labels in before for _label, value in labels}
        self.assertFalse([v for v in values if v.startswith(("room.", "other."))])

    def test_dispatch_durations_by_event_name(self) -> None:
        self.app.dispatch("article.created", {})
        self.app.dispatch("article.created", {})
        self.assertEqual(self.value("sandstone_dispatch_duration_seconds_count", event="article.created"), 2)
        self.metrics.stop()
        self.app.dispatch("article.created", {})
        self.assertEqual(self.value("sandstone_dispatch_duration_seconds_count", event="article.created"), 2)
        self.metrics.start()

    def test_event_names_beyond_the_cap_share_other(self) -> None:
        for n in range(MAX_EVENT_NAMES + 30):
            self.app.dispatch(f"event{n}")
        events = {
            labels
            for name, labels in self.label_sets()
            if name == "sandstone_dispatch_duration_seconds_count"
        }
        self.assertEqual(len(events), MAX_EVENT_NAMES + 1)
        self.assertEqual(self.value("sandstone_dispatch_duration_seconds_count", event="other"), 30)

    def request(self, line: bytes) -> bytes:
        """One request through the app's real Site (over a StringTransport); the response's bytes."""
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return transport.value()

    def test_rest_durations_by_route_template_method_and_status_class(self) -> None:
        self.assertIn(b"200 OK", self.request(b"GET /api/items/1"))
        self.request(b"GET /api/items/2")
        self.assertIn(b"404", self.request(b"GET /nothing/here"))
        self.assertIn(b"405", self.request(b"BREW /api/items/3"))
        self.assertIn(b"500", self.request(b"GET /api/broken"))
        self.flushLoggedErrors(RuntimeError)
        count = "sandstone_http_request_duration_seconds_count"
        self.assertEqual(self.value(count, route="/api/items/<int:item>", method="GET", status="2xx"), 2)
        self.assertEqual(self.value(count, route="unmatched", method="GET", status="4xx"), 1)
        self.assertEqual(self.value(count, route="unmatched", method="other", status="4xx"), 1)
        self.assertEqual(self.value(count, route="/api/broken", method="GET", status="5xx"), 1)
        routes = {dict(labels)["route"] for name, labels in self.label_sets() if name == count}
        self.assertEqual(routes, {"/api/items/<int:item>", "unmatched", "/api/broken"})

    def test_websocket_bytes_and_messages_sent_over_a_real_transport(self) -> None:
        factory = self.site.websocket[1] if self.site.websocket else None
        protocol, transport = open_websocket(factory)
        protocol.onMessage(json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]).encode(), False)
        protocol.onMessage(json.dumps([32, 1, {}, "room.x"]).encode(), False)
        self.assertEqual(self.value("sandstone_websocket_connections"), 1)
        self.assertEqual(self.value("sandstone_messages_sent_total", type="WELCOME"), 1)
        self.assertEqual(self.value("sandstone_messages_sent_total", type="SUBSCRIBED"), 1)
        self.assertEqual(self.value("sandstone_messages_sent_total", type="EVENT"), 1)  # "hello"
        self.assertGreater(self.value("sandstone_bytes_sent_total") or 0, len(transport.value()) - 1)
        protocol.dropConnection(abort=True)


class ReadinessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node, self.web = Service(), Service()
        self.app = SimpleNamespace(bus=None)
        self.readiness = Readiness(self.node, self.web, self.app)  # type: ignore[arg-type]

    def render(self, page: Any) -> tuple[int, dict[str, str]]:
        request = DummyRequest([b""])
        body = page.render(request)
        return request.responseCode or 200, json.loads(body)

    def test_starting_ready_not_listening_bus_down_shutting_down(self) -> None:
        self.assertEqual(self.readiness.problem(), "starting")
        self.node.running = self.web.running = True
        self.readiness.started = True
        self.assertIsNone(self.readiness.problem())
        self.web.running = False
        self.assertEqual(self.readiness.problem(), "not listening")
        self.web.running = True
        self.app.bus = SimpleNamespace(connected=False)
        self.assertEqual(self.readiness.problem(), "the cluster bus is not connected to Redis")
        self.app.bus.connected = True
        self.assertIsNone(self.readiness.problem())
        self.node.running = False
        self.assertEqual(self.readiness.problem(), "shutting down")

    def test_pages(self) -> None:
        self.assertEqual(self.render(HealthPage()), (200, {"status": "ok"}))
        self.assertEqual(
            self.render(ReadinessPage(self.readiness)), (503, {"status": "not ready", "reason": "starting"})
        )
        self.node.running = self.web.running = True
        self.assertEqual(self.render(ReadinessPage(self.readiness)), (200, {"status": "ready"}))


class EndpointTests(SynchronousTestCase):
    def listened(self, description: str, worker: int) -> tuple[int, str]:
        memory = MemoryReactor()
        metrics_endpoint(memory, description, worker).listen(Factory())
        [(port, _factory, _backlog, interface)] = memory.tcpServers
        return port, interface

    def test_worker_n_serves_on_the_port_n_minus_1_above(self) -> None:
        self.assertEqual(self.listened("tcp:9100:interface=127.0.0.1", 1), (9100, "127.0.0.1"))
        self.assertEqual(self.listened("tcp:9100:interface=127.0.0.1", 3), (9102, "127.0.0.1"))
        self.assertEqual(self.listened("tcp:0:interface=127.0.0.1", 2), (0, "127.0.0.1"))
        self.assertEqual(self.listened("tcp6:9100:interface=\\:\\:1", 2), (9101, "::1"))


class OptionsTests(SynchronousTestCase):
    def test_a_bad_endpoint_is_a_usage_error(self) -> None:
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--metrics", "nonsense:9100"])
        self.assertIn("--metrics 'nonsense:9100' is not a valid server endpoint", str(error))

    def test_workers_need_a_tcp_endpoint(self) -> None:
        arguments = ["--workers", "2", "--redis", "redis://127.0.0.1:6379", "--metrics", "unix:/tmp/m.sock"]
        error = self.assertRaises(usage.UsageError, Options().parseOptions, arguments)
        self.assertIn("needs a tcp: or tcp6: endpoint", str(error))

    def test_no_metrics_service_by_default(self) -> None:
        root = makeService({"listen": "tcp:0:interface=127.0.0.1"})
        self.assertNotIn("metrics", [service.name for service in root])  # type: ignore[attr-defined]


class _Stopping(Service):
    """A service whose stop takes until ``done`` fires; records when it was asked to stop."""

    def __init__(self, name: str, log: list[str], done: defer.Deferred[None] | None = None) -> None:
        self.setName(name)
        self.log = log
        self.done = done

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        self.log.append(self.name)
        return self.done


class StopOrderTests(SynchronousTestCase):
    def test_the_metrics_stop_after_the_other_services(self) -> None:
        root = SandstoneService(Sandstone(), "app", "tcp:0")
        log: list[str] = []
        slow: defer.Deferred[None] = defer.Deferred()
        _Stopping("web", log).setServiceParent(root)
        _Stopping("shutdown", log, slow).setServiceParent(root)
        _Stopping("metrics", log).setServiceParent(root)
        stopped = root.stopService()
        self.assertEqual(sorted(log), ["shutdown", "web"])
        self.assertNoResult(stopped)
        slow.callback(None)
        self.assertEqual(log[-1], "metrics")
        self.successResultOf(stopped)

    def test_without_metrics_the_children_stop_as_before(self) -> None:
        root = SandstoneService(Sandstone(), "app", "tcp:0")
        log: list[str] = []
        _Stopping("web", log).setServiceParent(root)
        _Stopping("shutdown", log).setServiceParent(root)
        self.successResultOf(root.stopService())
        self.assertEqual(log, ["shutdown", "web"])


class MetricsServiceTests(TestCase):
    """The service tree of ``twistd sandstone --metrics ...``, in this reactor."""

    async def get(self, port: int, path: str) -> tuple[int, bytes]:
        response = await treq.get(f"http://127.0.0.1:{port}{path}", persistent=False)
        return response.code, await response.content()

    async def test_probes_through_start_and_a_graceful_stop(self) -> None:
        # the test process's own heap stays out of gc.freeze()
        self.patch(
            tap_module,
            "gc",
            SimpleNamespace(collect=lambda: 0, freeze=lambda: None, get_freeze_count=lambda: 0),
        )
        web_port, metrics_port = free_port(), free_port()
        root = makeService(
            {
                "app": "tests.shutdown_app:app",
                "listen": f"tcp:{web_port}:interface=127.0.0.1",
                "metrics": f"tcp:{metrics_port}:interface=127.0.0.1",
            }
        )
        metrics = root.getServiceNamed("metrics")  # type: ignore[attr-defined]
        self.assertIsInstance(metrics, MetricsService)
        root.privilegedStartService()
        root.startService()
        stopping = None
        try:
            self.assertEqual(await self.get(metrics_port, "/healthz"), (200, b'{"status": "ok"}\n'))
            self.assertEqual(await self.get(metrics_port, "/readyz"), (200, b'{"status": "ready"}\n'))
            code, body = await self.get(metrics_port, "/metrics")
            self.assertEqual(code, 200)
            self.assertIn(b"sandstone_build_info", body)
            slow = treq.get(f"http://127.0.0.1:{web_port}/slow", persistent=False)  # 1 s
            site = root.getServiceNamed("web").factory  # type: ignore[attr-defined]
            await wait_until(lambda: bool(site.inflight))
            stopping = root.stopService()  # the request in flight may finish: the node drains
            self.assertEqual(
                await self.get(metrics_port, "/readyz"),
                (503, b'{"status": "not ready", "reason": "shutting down"}\n'),
            )
            self.assertEqual((await self.get(metrics_port, "/healthz"))[0], 200)
            self.assertEqual((await slow).code, 200)
        finally:
            await (stopping or root.stopService())
        self.assertIsNone(metrics.port)


class ListenFailureTests(SynchronousTestCase):
    def test_a_port_in_use_fails_the_start(self) -> None:
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        app = make_app()
        readiness = Readiness(MultiService(), Service(), app)
        service = MetricsService(Metrics(app), readiness, serverFromString(reactor, busy))
        self.assertRaises(CannotListenError, service.startService)


class ReadmeTests(SynchronousTestCase):
    def test_the_readme_lists_every_sandstone_metric_and_refusal(self) -> None:
        app = make_app()
        app.use_redis("redis://127.0.0.1:1")  # the bus's metrics too (never started)
        metrics = Metrics(app, app.site())
        readme = (Path(__file__).resolve().parent.parent / "docs" / "guides" / "production.md").read_text(
            encoding="utf-8"
        )
        suffixes = {"counter": "_total", "info": "_info"}
        for family in metrics.registry.collect():
            if family.name.startswith("sandstone_"):
                self.assertIn(f"`{family.name}{suffixes.get(family.type, '')}`", readme)
        for reason in REFUSALS:
            self.assertIn(f"`{reason}`", readme)
