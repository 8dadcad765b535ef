"""``twistd sandstone --metrics ENDPOINT``: Prometheus metrics and health probes on a listener of their own.

What the node counts anyway is read when ``/metrics`` is scraped, by a custom collector (``NodeCollector``):
``router.stats`` (what the limits refused), ``router.activity`` (sessions, messages, publications, EVENTs,
calls, authentication failures: ``_activity.py``), the WebSocket factory's byte counts and connections, the
subscription table, the topic instances, the dealer, and ``bus.stats``. Nothing is added to the path of a
broadcast. Only durations are observed as they happen, into histograms: each event dispatch (by event name)
and each REST request (by route template, method and status class).

Label values are bounded: WAMP message types, WebSocket subprotocols, authroles (``_activity.MAX_AUTHROLES``),
event names (``MAX_EVENT_NAMES``), the app's route templates, HTTP methods, status classes and the names of
the stats; never a topic URI, a request path or a session.

The text is written by prometheus_client's exposition, in the reactor thread: the library's own
``prometheus_client.twisted.MetricsResource`` renders in a thread pool, which would read the router's dicts
while the reactor changes them.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from ._activity import CALL_OUTCOMES
from ._errors import AUTHENTICATION_DENIED, NO_AUTH_METHOD
from ._health import HealthPage, Readiness, ReadinessPage
from ._transport import WampServerFactory

if TYPE_CHECKING:
    from ._app import Sandstone
    from ._web import LimitedRequest, SandstoneSite

__all__ = ["MAX_EVENT_NAMES", "Metrics", "MetricsService", "NodeCollector", "metrics_endpoint"]

log = Logger()

#: At most this many event names get a label of their own in the dispatch durations; others count as "other".
MAX_EVENT_NAMES = 100
OTHER = "other"

#: The durations the histograms tell apart, in seconds.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)

#: The HTTP methods labelled as themselves (a client may send any token as a method).
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

#: The Klein endpoint ``Sandstone.resource()`` mounts the WebSocket at: its requests are no REST requests.
_WEBSOCKET_ENDPOINT = "sandstone_websocket"

#: The names of the counts in ``router.stats`` (and a ``SandstoneSite``'s ``stats``), exposed from the start
#: as ``sandstone_refusals_total{reason=...}`` (any other name found there is exposed too).
REFUSALS = (
    "connections_refused",
    "connections_per_ip_refused",
    "pending_refused",
    "pending_per_ip_refused",
    "head_refused",
    "head_timeouts",
    "request_timeouts",
    "hosts_refused",
    "origins_refused",
    "hello_timeouts",
    "rate_limited",
    "rate_limited_dropped",
    "invalid_payloads",
    "subscriptions_refused",
    "registrations_refused",
    "events_capped",
    "oversize_skipped",
    "unserializable_skipped",
    "slow_consumers_dropped",
)

#: ``bus.stats`` entries counting messages the bus dropped: ``sandstone_bus_messages_dropped_total{reason}``.
_BUS_DROPS = ("duplicates", "malformed", "rejected", "send_failures")

# WAMP message type code -> name ("PUBLISH"), for the message classes the router sends and receives.
_MESSAGE_NAMES: dict[int, str] = {
    code: cls.__name__.upper()
    for cls in vars(message).values()
    if isinstance(cls, type) and isinstance(code := cls.__dict__.get("MESSAGE_TYPE"), int)
}


def _message_name(kind: type) -> str:
    code = getattr(kind, "MESSAGE_TYPE", None)
    return _MESSAGE_NAMES.get(code, kind.__name__.upper()) if isinstance(code, int) else kind.__name__.upper()


def _by_message_name(counts: Counter[type]) -> dict[str, int]:
    named: dict[str, int] = {}
    for kind, count in counts.items():
        name = _message_name(kind)
        named[name] = named.get(name, 0) + count
    return named


class NodeCollector(Collector):
    """Reads a node's counts and sizes when scraped (nothing is kept here): see the module's docstring."""

    def __init__(self, app: Sandstone, site: SandstoneSite | None = None) -> None:
        self.app = app
        self.site = site

    def _factory(self) -> WampServerFactory | None:
        websocket = self.site.websocket if self.site is not None else None
        factory = websocket[1] if websocket is not None else None
        return factory if isinstance(factory, WampServerFactory) else None

    def collect(self) -> Iterator[Metric]:
        yield from self._sessions()
        yield from self._routing()
        yield from self._messages()
        yield from self._connections()
        yield from self._refusals()
        yield from self._bus()

    def _sessions(self) -> Iterator[Metric]:
        activity = self.app.router.activity
        sessions = GaugeMetricFamily(
            "sandstone_sessions",
            "WAMP sessions open, by WebSocket subprotocol and authrole.",
            labels=["protocol", "authrole"],
        )
        for (protocol, authrole), count in sorted(activity.sessions.items()):
            sessions.add_metric([protocol or "unknown", authrole], count)
        yield sessions
        yield CounterMetricFamily(
            "sandstone_sessions_opened", "WAMP sessions welcomed.", value=activity.sessions_opened
        )
        yield CounterMetricFamily(
            "sandstone_sessions_closed", "WAMP sessions ended.", value=activity.sessions_closed
        )
        failures = CounterMetricFamily(
            "sandstone_auth_failures",
            "Opening handshakes refused (ABORT), by reason.",
            labels=["reason"],
        )
        for reason, count in _seeded(activity.auth_failures, (AUTHENTICATION_DENIED, NO_AUTH_METHOD)):
            failures.add_metric([reason], count)
        yield failures

    def _routing(self) -> Iterator[Metric]:
        router = self.app.router
        activity = router.activity
        yield GaugeMetricFamily(
            "sandstone_subscriptions",
            "Subscriptions (one per topic URI and match policy, shared by its subscribers).",
            value=len(router.broker.subscriptions),
        )
        topics = router.topics
        yield GaugeMetricFamily(
            "sandstone_topic_instances",
            "Live Topic instances (one per concrete topic URI with exact subscribers).",
            value=len(topics.instances) if topics is not None else 0,
        )
        yield GaugeMetricFamily(
            "sandstone_registrations",
            "Registered procedures (clients' and the app's).",
            value=len(router.dealer),
        )
        publications = CounterMetricFamily(
            "sandstone_publications",
            "Broadcasts delivered: made on this node (local) or announced by another one (remote).",
            labels=["origin"],
        )
        publications.add_metric(["local"], activity.publications)
        publications.add_metric(["remote"], activity.remote_publications)
        yield publications
        yield CounterMetricFamily(
            "sandstone_events_delivered",
            "EVENTs handed to sessions, for every broadcast.",
            value=activity.events,
        )
        calls = CounterMetricFamily(
            "sandstone_calls",
            "Calls answered (final RESULT or ERROR to the caller), by outcome.",
            labels=["outcome"],
        )
        for outcome, count in _seeded(activity.calls, CALL_OUTCOMES):
            calls.add_metric([outcome], count)
        yield calls

    def _messages(self) -> Iterator[Metric]:
        activity = self.app.router.activity
        received = CounterMetricFamily(
            "sandstone_messages_received", "WAMP messages received from clients, by type.", labels=["type"]
        )
        for name, count in sorted(_by_message_name(activity.received).items()):
            received.add_metric([name], count)
        yield received
        sent = CounterMetricFamily(
            "sandstone_messages_sent", "WAMP messages sent to clients, by type.", labels=["type"]
        )
        named = _by_message_name(activity.sent)
        named["EVENT"] = activity.events
        for name, count in sorted(named.items()):
            sent.add_metric([name], count)
        yield sent

    def _connections(self) -> Iterator[Metric]:
        factory = self._factory()
        if factory is not None:
            traffic = factory.traffic
            yield GaugeMetricFamily(
                "sandstone_websocket_connections",
                "WebSocket connections open.",
                value=len(factory.connections),
            )
            yield CounterMetricFamily(
                "sandstone_bytes_received",
                "Bytes received on WebSocket connections (handshakes included).",
                value=traffic.incomingOctetsWireLevel + traffic.preopenIncomingOctetsWireLevel,
            )
            yield CounterMetricFamily(
                "sandstone_bytes_sent",
                "Bytes sent on WebSocket connections (handshakes included).",
                value=traffic.outgoingOctetsWireLevel
                + traffic.preopenOutgoingOctetsWireLevel
                + factory.writer.sent_bytes,
            )
        if self.site is not None:
            yield GaugeMetricFamily(
                "sandstone_http_requests_in_flight",
                "REST requests being served.",
                value=len(self.site.inflight),
            )

    def _refusals(self) -> Iterator[Metric]:
        counts = Counter(self.app.router.stats)
        if self.site is not None and self.site.stats is not self.app.router.stats:
            counts.update(self.site.stats)
        refusals = CounterMetricFamily(
            "sandstone_refusals",
            "What the limits refused, dropped or skipped (router.stats), by reason.",
            labels=["reason"],
        )
        for reason, count in _seeded(counts, REFUSALS):
            refusals.add_metric([reason], count)
        yield refusals

    def _bus(self) -> Iterator[Metric]:
        bus = self.app.bus
        if bus is None:
            return
        stats = bus.stats
        yield GaugeMetricFamily(
            "sandstone_bus_connected",
            "1 when the cluster bus is connected to Redis, else 0.",
            value=int(bus.connected),
        )
        yield CounterMetricFamily(
            "sandstone_bus_messages_received",
            "Messages received from the cluster bus (this node's own included).",
            value=stats.get("received", 0),
        )
        yield CounterMetricFamily(
            "sandstone_bus_messages_sent",
            "Messages published on the cluster bus.",
            value=stats.get("published", 0),
        )
        dropped = CounterMetricFamily(
            "sandstone_bus_messages_dropped",
            "Cluster bus messages dropped, by reason (duplicates, malformed, rejected, send_failures).",
            labels=["reason"],
        )
        for reason in _BUS_DROPS:
            dropped.add_metric([reason], stats.get(reason, 0))
        yield dropped
        yield CounterMetricFamily(
            "sandstone_bus_reconnects",
            "Times the cluster bus got its Redis connections back after losing them.",
            value=stats.get("reconnects", 0),
        )


def _seeded(counts: Counter[str] | dict[str, int], names: Iterable[str]) -> list[tuple[str, int]]:
    """``counts`` with each of ``names`` present (0 if absent), sorted: a series exists from the start."""
    merged = dict.fromkeys(names, 0)
    merged.update(counts)
    return sorted(merged.items())


class Metrics:
    """One node's metrics: a registry holding the ``NodeCollector``, prometheus_client's process, platform
    and garbage collector collectors, the build info, and the two duration histograms, fed while
    ``start``ed (dispatches) and as the site serves (REST requests)."""

    def __init__(self, app: Sandstone, site: SandstoneSite | None = None) -> None:
        from . import __version__

        self.app = app
        self.site = site
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(app, site))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("sandstone_build", "The sandstone version serving.", registry=self.registry).info(
            {"version": __version__}
        )
        self._dispatches = Histogram(
            "sandstone_dispatch_duration_seconds",
            "Time for all of an event's listeners on this node, from dispatch to the last one done.",
            ["event"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._requests = Histogram(
            "sandstone_http_request_duration_seconds",
            "REST requests, from their complete arrival to their last byte, by route template, method and "
            "status class (aborted: the client left first).",
            ["route", "method", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._dispatch_children: dict[str, Any] = {}
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._routes: dict[str, str] = {}
        if site is not None:
            site.observe_requests(self._request_started)

    def start(self) -> None:
        """Time the app's dispatches from now on."""
        self.app.events.add_observer(self._dispatched)

    def stop(self) -> None:
        """Stop timing the app's dispatches (the app may outlive this node's services)."""
        self.app.events.remove_observer(self._dispatched)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (Prometheus text by default) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # dispatches

    def _dispatched(self, name: str, seconds: float) -> None:
        children = self._dispatch_children
        child = children.get(name)
        if child is None:
            if len(children) >= MAX_EVENT_NAMES:  # the first names keep their label, later ones share one
                name = OTHER
                child = children.get(OTHER)
            if child is None:
                child = children[name] = self._dispatches.labels(name)
        child.observe(seconds)

    # REST requests

    def _request_started(self, request: LimitedRequest) -> None:
        request.notifyFinish().addBoth(self._request_done, request, time.perf_counter())

    def _request_done(self, outcome: object, request: LimitedRequest, started: float) -> None:
        elapsed = time.perf_counter() - started
        endpoint = request.endpoint
        if endpoint == _WEBSOCKET_ENDPOINT:
            return
        status = "aborted" if isinstance(outcome, Failure) else f"{request.code // 100}xx"
        method = request.method.decode("latin-1", "replace").upper()
        key = (self._route(endpoint), method if method in _METHODS else OTHER, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(*key)
        child.observe(elapsed)

    def _route(self, endpoint: str | None) -> str:
        """The route template (Klein's rule, e.g. ``/api/articles/<int:id>``) of the endpoint that served a
        request; ``unmatched`` when none did (404, 405)."""
        if endpoint is None:
            return "unmatched"
        route = self._routes.get(endpoint)
        if route is None:
            for rule in self.app.url_map.iter_rules():  # a route declared since: learn the table again
                self._routes.setdefault(rule.endpoint, rule.rule)
            route = self._routes.setdefault(endpoint, endpoint)
        return route


class MetricsPage(Resource):
    """``GET /metrics``: the registry in the Prometheus text format (or OpenMetrics, if asked for)."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.exposition(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode("latin-1"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class _QuietSite(Site):
    """The probes' Site: no access log line for each scrape and probe."""

    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        pass


def probes_resource(metrics: Metrics, readiness: Readiness) -> Resource:
    """``/metrics``, ``/healthz`` and ``/readyz``."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"healthz", HealthPage())
    root.putChild(b"readyz", ReadinessPage(readiness))
    return root


def metrics_endpoint(reactor: Any, description: str, worker: int = 1) -> IStreamServerEndpoint:
    """Where worker ``worker`` of ``--workers`` serves its metrics: the ``--metrics`` endpoint for worker 1
    (the supervisor, and a node without workers); for worker N the port N - 1 above it, on the same
    interface (``tcp:`` and ``tcp6:`` endpoints only; port 0 gives each worker a free port of its own,
    logged)."""
    if worker <= 1:
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
        return endpoint
    from ._workers import tcp_address

    family, interface, port, backlog = tcp_address(description)
    port = port + worker - 1 if port else 0
    if family == socket.AF_INET6:
        return TCP6ServerEndpoint(reactor, port, backlog, interface)
    return TCP4ServerEndpoint(reactor, port, backlog, interface)


class MetricsService(Service):
    """The ``--metrics`` listener (named "metrics"): ``/metrics``, ``/healthz`` and ``/readyz`` (see
    ``_health.py``). It listens when started (a port in use fails the start) and, in ``twistd sandstone``'s
    service tree, stops after the other services, so that ``/readyz`` answers 503 while the node shuts down.
    """

    name = "metrics"  # type: ignore[assignment, unused-ignore]  # Service declares `name = None`

    def __init__(self, metrics: Metrics, readiness: Readiness, endpoint: IStreamServerEndpoint) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.endpoint = endpoint
        self.site = _QuietSite(probes_resource(metrics, readiness))
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._listening is not None:
            return
        self._listening = self.endpoint.listen(self.site)
        failed: list[Failure] = []
        self._listening.addCallbacks(self._listened, failed.append)
        if failed:
            self._listening = None
            failed[0].raiseException()  # e.g. the port is in use: twistd says so and exits

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        where = f"http://{host}:{number}" if host is not None else str(address)
        log.info("metrics and probes at {where}/metrics, /healthz and /readyz", where=where)
        return port

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        self.readiness.started = True
        self.metrics.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.metrics.stop()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            stopped = port.stopListening()
            return stopped if isinstance(stopped, Deferred) else succeed(None)
        if listening is not None:
            listening.cancel()
            listening.addErrback(lambda _: None)
        return succeed(None)


def metrics_service(
    app: Sandstone, site: SandstoneSite, node: IService, web: IService, description: str, worker: int = 1
) -> MetricsService:
    """The "metrics" service of ``twistd sandstone --metrics DESCRIPTION``: the metrics of ``app`` served by
    ``site``, ready while ``node`` (the root service) runs and ``web`` listens; ``worker``: see
    ``metrics_endpoint``."""
    from twisted.internet import reactor

    readiness = Readiness(node, web, app)
    return MetricsService(Metrics(app, site), readiness, metrics_endpoint(reactor, description, worker))
