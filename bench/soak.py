"""Soak test: the open router under many idle-ish subscribers and a steady publish rate, for minutes.

Run by hand from anywhere (it is not part of the test suite)::

    python bench/soak.py [--connections 2000] [--rate 200] [--minutes 5] [--topics 100]

It starts ``twistd -n sandstone`` (no ``--app``: the open router) on a free 127.0.0.1 port, then a load
process (this file, run with ``--_load``: one Twisted reactor with autobahn-python WAMP sessions over
WebSocket, JSON serializer) that opens ``--connections`` subscriber sessions, each subscribed to one of
``--topics`` topics (round-robin), and ``--publishers`` publisher sessions that together publish ``--rate``
messages per second (~``--payload-bytes`` of JSON each, acknowledged) to the topics in turn, for
``--minutes``. Every ``--interval`` seconds it samples the server's RSS (``/proc/PID/status`` VmRSS) and CPU
(``/proc/PID/stat``), and the load process's, and prints a table row; at the end it writes
``bench/results/soak-<timestamp>.json``. Exit status 1 if anything was lost or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from cluster_latency import Child, accepts, cpu_seconds, free_port, percentiles, rss_kib, twistd_argv

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
REALM = "realm1"
LOAD_FLAG = "--_load"
STARTUP_TIMEOUT = 30.0
TOPIC_PREFIX = "soak.topic"


# ---------------------------------------------------------------------------------------------------------
# shared helpers


# ---------------------------------------------------------------------------------------------------------
# the load process: subscribers and publishers in one Twisted reactor; JSON status lines on stdout


def emit(record: dict[str, Any]) -> None:
    """One status line for the orchestrator."""
    print(json.dumps(record), flush=True)


def load_main(config: dict[str, Any]) -> None:
    """Entry point of the load process."""
    from twisted.internet import defer, task

    task.react(lambda reactor: defer.Deferred.fromCoroutine(Load(reactor, config).run()))


class Load:
    """Holds the sessions, publishes on schedule and counts what arrives."""

    def __init__(self, reactor: Any, config: dict[str, Any]) -> None:
        self.reactor = reactor
        self.config = config
        self.topics = [f"{TOPIC_PREFIX}.{i}" for i in range(config["topics"])]
        self.subscribers_per_topic = [0] * len(self.topics)
        self.next_seq = [0] * len(self.topics)
        self.phase = "connecting"
        self.stopping = False
        self.started = time.perf_counter()
        self.counts: dict[str, int] = dict.fromkeys(
            [
                "connected",
                "subscribed",
                "connect_failures",
                "disconnects",
                "published",
                "acked",
                "publish_errors",
                "expected",
                "received",
                "gaps",
                "duplicates",
            ],
            0,
        )
        self.error_samples: list[str] = []
        self.window: list[float] = []
        self.latencies = array("d")
        self.sessions: list[Any] = []
        self.publishers: list[Any] = []
        pad = {"seq": 10**6, "ts": 123456.123456, "pad": ""}
        self.pad = "x" * max(0, config["payload_bytes"] - len(json.dumps(pad)))

    def error(self, kind: str, text: str) -> None:
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {text}")

    def status(self, event: str) -> None:
        """Emit the counters and the latencies since the previous status line."""
        window, self.window = self.window, []
        emit(
            {
                "kind": "status",
                "event": event,
                "phase": self.phase,
                "t": round(time.perf_counter() - self.started, 3),
                **self.counts,
                "latency_ms": percentiles(window),
            }
        )

    # sessions

    def session_class(self) -> type:
        from autobahn.twisted.wamp import ApplicationSession

        load = self

        class SoakSession(ApplicationSession):
            """A subscriber (``topic`` set) or a publisher; ``joined`` fires once it is ready."""

            def __init__(self, config: Any, topic: int | None) -> None:
                super().__init__(config)
                self.topic = topic
                self.last_seq = -1
                self.ready = False
                from twisted.internet import defer

                self.joined: defer.Deferred[Any] = defer.Deferred()

            async def onJoin(self, details: Any) -> None:
                if self.topic is not None:
                    await self.subscribe(self.on_event, load.topics[self.topic])
                    load.counts["subscribed"] += 1
                    load.subscribers_per_topic[self.topic] += 1
                self.ready = True
                self.joined.callback(self)

            def on_event(self, payload: dict[str, Any]) -> None:
                now = time.perf_counter()
                seq = payload["seq"]
                if seq <= self.last_seq:
                    load.counts["duplicates"] += 1
                elif seq != self.last_seq + 1:
                    load.counts["gaps"] += 1
                self.last_seq = max(self.last_seq, seq)
                load.counts["received"] += 1
                latency = now - payload["ts"]
                load.window.append(latency)
                load.latencies.append(latency)

            def onDisconnect(self) -> None:
                if not self.joined.called:
                    self.joined.errback(ConnectionError("disconnected before joining"))
                elif not load.stopping:
                    load.counts["disconnects"] += 1
                    load.error("disconnect", f"session {self._session_id} lost its connection")

        return SoakSession

    async def connect(self, topic: int | None) -> Any:
        """Open one WebSocket connection with a WAMP session; return the session once joined."""
        from autobahn.twisted.websocket import WampWebSocketClientFactory
        from autobahn.wamp.serializer import JsonSerializer
        from autobahn.wamp.types import ComponentConfig

        session = self.SoakSession(ComponentConfig(realm=REALM), topic)

        class Factory(WampWebSocketClientFactory):
            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                if not session.joined.called:
                    session.joined.errback(reason)

        factory = Factory(lambda: session, url=self.config["url"], serializers=[JsonSerializer()])
        self.reactor.connectTCP("127.0.0.1", self.config["port"], factory, timeout=30)
        session.joined.addTimeout(60, self.reactor)
        await session.joined
        self.counts["connected"] += 1
        return session

    async def connect_all(self) -> None:
        """Open the subscribers (at most 100 handshakes at a time), then the publishers."""
        from twisted.internet import defer

        self.SoakSession = self.session_class()
        semaphore = defer.DeferredSemaphore(100)

        async def one(index: int, topic: int | None) -> None:
            try:
                session = await semaphore.run(lambda: defer.Deferred.fromCoroutine(self.connect(topic)))
            except Exception as exc:  # noqa: BLE001 - any failure to connect is counted
                self.counts["connect_failures"] += 1
                self.error("connect", repr(exc))
                return
            (self.sessions if topic is not None else self.publishers).append(session)

        n, t = self.config["connections"], len(self.topics)
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(one(i, i % t)) for i in range(n)], consumeErrors=True
        )
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(one(n + i, None)) for i in range(self.config["publishers"])],
            consumeErrors=True,
        )

    # publishing

    def publish(self, index: int) -> None:
        """Publish message ``index``: topic ``index % T``, from publisher ``topic % P``."""
        from autobahn.wamp.types import PublishOptions

        topic = index % len(self.topics)
        seq = self.next_seq[topic]
        self.next_seq[topic] += 1
        publisher = self.publishers[topic % len(self.publishers)]
        payload = {"seq": seq, "ts": time.perf_counter(), "pad": self.pad}
        self.counts["published"] += 1
        d = publisher.publish(self.topics[topic], payload, options=PublishOptions(acknowledge=True))
        fanout = self.subscribers_per_topic[topic]

        def acked(_: Any) -> None:
            self.counts["acked"] += 1
            self.counts["expected"] += fanout

        def failed(failure: Any) -> None:
            self.counts["publish_errors"] += 1
            self.error("publish", failure.getErrorMessage())

        d.addCallbacks(acked, failed)

    async def publish_for(self, seconds: float) -> None:
        """Publish at ``rate``/s for ``seconds``: every 10 ms, whatever the schedule says is due."""
        from twisted.internet import task

        rate = self.config["rate"]
        start = time.perf_counter()
        sent = 0

        def tick() -> None:
            nonlocal sent
            elapsed = time.perf_counter() - start
            due = min(int(elapsed * rate), int(seconds * rate)) - sent
            for _ in range(due):
                self.publish(sent)
                sent += 1
            if elapsed >= seconds:
                loop.stop()

        loop = task.LoopingCall(tick)
        await loop.start(0.01)

    # the run

    async def sleep(self, seconds: float) -> None:
        from twisted.internet import task

        await task.deferLater(self.reactor, seconds, lambda: None)

    async def drain(self) -> None:
        """Wait for outstanding acks and events: until all arrived or ``drain`` s pass without progress."""
        quiet_limit = self.config["drain"]
        last, quiet = -1, 0.0
        while quiet < quiet_limit:
            done = self.counts["acked"] + self.counts["publish_errors"] == self.counts["published"]
            if done and self.counts["received"] >= self.counts["expected"]:
                return
            progress = self.counts["received"] + self.counts["acked"]
            quiet = 0.0 if progress != last else quiet + 0.1
            last = progress
            await self.sleep(0.1)

    async def run(self) -> None:
        from twisted.internet import task

        ticker = task.LoopingCall(self.status, "tick")
        ticker.start(self.config["interval"], now=False)
        connect_started = time.perf_counter()
        await self.connect_all()
        connect_seconds = time.perf_counter() - connect_started
        self.phase = "connected"
        self.status("connected")
        if not self.publishers or not self.sessions:
            self.error("setup", "no publisher or no subscriber could connect")
        else:
            await self.sleep(self.config["settle"])
            self.phase = "publishing"
            self.status("publishing")
            publish_started = time.perf_counter()
            await self.publish_for(self.config["minutes"] * 60)
            publish_seconds = time.perf_counter() - publish_started
            self.phase = "draining"
            self.status("published")
            await self.drain()
        self.phase = "leaving"
        ticker.stop()
        self.status("drained")
        self.stopping = True
        emit(
            {
                "kind": "done",
                **self.counts,
                "missing": max(0, self.counts["expected"] - self.counts["received"]),
                "subscribers_per_topic": {
                    "min": min(self.subscribers_per_topic),
                    "max": max(self.subscribers_per_topic),
                },
                "connect_seconds": round(connect_seconds, 2),
                "publish_seconds": round(publish_seconds, 2) if self.publishers and self.sessions else None,
                "latency_ms": percentiles(self.latencies),
                "error_samples": self.error_samples,
            }
        )
        for session in [*self.sessions, *self.publishers]:
            if session.is_attached():
                session.leave()
        await self.sleep(2.0)


# ---------------------------------------------------------------------------------------------------------
# the orchestrator: twistd, the load process, sampling, report


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); fail if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target < needed:
        raise SystemExit(f"soak: the open-files limit ({hard}) is below the {needed} this run needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class Sampler:
    """RSS and CPU of the server and the load process, as rows."""

    def __init__(self, server: int) -> None:
        self.pids = {"server": server}
        self.rows: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._last: dict[str, tuple[float, float | None]] = {}

    def cpu(self, name: str, pid: int) -> float | None:
        """CPU use since the previous sample of this process, in % of one core."""
        now, seconds = time.monotonic(), cpu_seconds(pid)
        before = self._last.get(name)
        self._last[name] = (now, seconds)
        if before is None or before[1] is None or seconds is None or now <= before[0]:
            return None
        return round((seconds - before[1]) / (now - before[0]) * 100, 1)

    def sample(self, event: str, load: dict[str, Any] | None) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1), "event": event}
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        for name, pid in self.pids.items():
            row[f"{name}_rss_kib"] = rss_kib(pid)
            row[f"{name}_cpu_pct"] = self.cpu(name, pid)
        if load is not None:
            row["load"] = {k: v for k, v in load.items() if k != "kind"}
        self.rows.append(row)
        return row


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


HEADER = (
    f"{'t(s)':>7} {'event':<10} {'srv RSS':>8} {'srv CPU':>7} {'load RSS':>8} {'load CPU':>8} "
    f"{'conns':>6} {'published':>9} {'pub/s':>6} {'received':>10} {'ev/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'errors':>6} {'loadavg':>7}"
)


def row_line(row: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """One table line; rates against the previous row that had load counters."""
    load = row.get("load") or {}
    pub_rate = ev_rate = None
    if previous is not None and load and previous.get("load"):
        dt = row["t"] - previous["t"]
        if dt > 0:
            pub_rate = round((load["published"] - previous["load"]["published"]) / dt)
            ev_rate = round((load["received"] - previous["load"]["received"]) / dt)
    errors = None
    if load:
        errors = sum(
            load[k] for k in ("connect_failures", "disconnects", "publish_errors", "gaps", "duplicates")
        )
    latency = load.get("latency_ms") or {}
    return (
        f"{row['t']:>7} {row['event']:<10} {mib(row.get('server_rss_kib')):>8} "
        f"{fmt(row.get('server_cpu_pct')):>7} {mib(row.get('load_rss_kib')):>8} "
        f"{fmt(row.get('load_cpu_pct')):>8} "
        f"{fmt(load.get('connected')):>6} {fmt(load.get('published')):>9} {fmt(pub_rate):>6} "
        f"{fmt(load.get('received')):>10} {fmt(ev_rate):>7} {fmt(latency.get('p50')):>7} "
        f"{fmt(latency.get('p99')):>7} {fmt(errors):>6} {fmt(row.get('loadavg_1m')):>7}"
    )


def git(*arguments: str) -> str | None:
    try:
        out = subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for package in ("twisted", "autobahn", "klein"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def summarize(sampler: Sampler, done: dict[str, Any] | None, connections: int) -> dict[str, Any]:
    """RSS start/connected/peak/end, per-connection RSS, CPU while publishing, delivery counts."""
    rows = sampler.rows

    def first(event: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["event"] == event), None)

    def rss(row: dict[str, Any] | None) -> int | None:
        return None if row is None else row.get("server_rss_kib")

    idle, connected = first("idle"), first("connected")
    published, after = first("published"), first("after-leave")
    all_rss = [r["server_rss_kib"] for r in rows if r.get("server_rss_kib") is not None]
    publishing = [
        r["server_cpu_pct"]
        for r in rows
        if r.get("load", {}).get("phase") == "publishing" and r["event"] == "tick" and r.get("server_cpu_pct")
    ]
    held = done["connected"] - done.get("publishers", 0) if done else None
    per_connection = None
    if rss(idle) is not None and rss(connected) is not None and done and done["subscribed"]:
        per_connection = round((rss(connected) - rss(idle)) / done["subscribed"], 1)
    return {
        "server_rss_kib": {
            "idle": rss(idle),
            "connected": rss(connected),
            "peak": max(all_rss) if all_rss else None,
            "end_of_publishing": rss(published),
            "after_clients_left": rss(after),
        },
        "server_rss_per_connection_kib": per_connection,
        "server_rss_growth_while_publishing_kib": (
            rss(published) - rss(connected) if rss(published) is not None and rss(connected) else None
        ),
        "server_cpu_pct_while_publishing": {
            "mean": round(sum(publishing) / len(publishing), 1) if publishing else None,
            "max": max(publishing) if publishing else None,
        },
        "connections_requested": connections,
        "connections_held": held,
        "load": done,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="subscriber connections to hold")
    parser.add_argument("--rate", type=float, default=200.0, help="publishes per second, all publishers")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to publish")
    parser.add_argument("--topics", type=int, default=100, help="topics the subscribers are spread over")
    parser.add_argument(
        "--publishers",
        type=int,
        default=4,
        help="publisher sessions sharing --rate (each under the default per-session publish limit)",
    )
    parser.add_argument("--payload-bytes", type=int, default=100, help="size of each payload, as JSON")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between connecting and publishing")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds without progress before giving up")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    args = parser.parse_args(argv)
    if min(args.connections, args.topics, args.publishers) < 1 or args.topics > args.connections:
        parser.error("--connections, --topics and --publishers must be >= 1, --topics <= --connections")
    if args.rate <= 0 or args.minutes <= 0 or args.interval <= 0:
        parser.error("--rate, --minutes and --interval must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    fd_limit = raise_fd_limit(args.connections + args.publishers + 256)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    port = free_port()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    results: dict[str, Any] = {
        "benchmark": "soak",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "bench/soak.py", *argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "open_files_limit": fd_limit,
        },
        "sandstone_commit": git("rev-parse", "HEAD"),
        "sandstone_uncommitted_changes": (
            git("status", "--porcelain", "--", "sandstone", "twisted") or ""
        ).splitlines(),
        "versions": versions(),
    }
    server = Child(
        "twistd",
        [*twistd_argv(), "-n", "--pidfile=", "sandstone", "--listen", f"tcp:{port}:interface=127.0.0.1"],
        env,
        lines=True,
    )
    load: Child | None = None
    sampler = Sampler(server.pid)
    done: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not accepts(port):
            if not server.running or time.monotonic() > deadline:
                raise SystemExit(f"soak: twistd did not start listening:\n{server.output()}")
            time.sleep(0.1)
        sampler.cpu("server", server.pid)  # the idle row's CPU is over the next 2 s
        time.sleep(2.0)
        print(
            f"soak: server pid {server.pid} on port {port}; {args.connections} subscribers on "
            f"{args.topics} topics, {args.rate:g} publishes/s from {args.publishers} publishers for "
            f"{args.minutes:g} min",
            file=sys.stderr,
            flush=True,
        )
        print(HEADER, flush=True)
        previous: dict[str, Any] | None = None
        print(row_line(sampler.sample("idle", None), None), flush=True)
        config = {
            "url": f"ws://127.0.0.1:{port}/ws",
            "port": port,
            "connections": args.connections,
            "topics": args.topics,
            "publishers": args.publishers,
            "rate": args.rate,
            "minutes": args.minutes,
            "payload_bytes": args.payload_bytes,
            "interval": args.interval,
            "settle": args.settle,
            "drain": args.drain,
        }
        load = Child("load", [sys.executable, __file__, LOAD_FLAG, json.dumps(config)], env, lines=True)
        sampler.pids["load"] = load.pid
        # bounded: connecting (~1 s per 100 connections, generously), publishing, draining
        budget = 120 + args.connections / 10 + args.minutes * 60 + args.settle + args.drain * 3
        limit = time.monotonic() + budget
        while done is None:
            if time.monotonic() > limit:
                raise SystemExit(f"soak: the load process overran its time:\n{load.output()[-4000:]}")
            try:
                line = load.lines.get(timeout=0.5)
            except queue.Empty:
                if not load.running and load.lines.empty():
                    message = f"soak: the load process exited early:\n{load.output()[-4000:]}"
                    raise SystemExit(message) from None
                continue
            record = json.loads(line)
            if record["kind"] == "done":
                done = record
                done["publishers"] = args.publishers
                break
            row = sampler.sample(record["event"], record)
            print(row_line(row, previous), flush=True)
            previous = row
        load.process.wait(30)
        sampler.pids.pop("load")
        time.sleep(args.interval)
        print(row_line(sampler.sample("after-leave", None), None), flush=True)
    finally:
        if load is not None:
            load.stop()
        server.stop()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(sampler, done, args.connections)
    results["samples"] = sampler.rows
    warnings = [line for line in server.output().splitlines() if "Traceback" in line or "#error]" in line]
    results["server_log_errors"] = warnings[:20]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results), flush=True)
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)
    assert done is not None
    failed = (
        done["missing"]
        or done["connect_failures"]
        or done["disconnects"]
        or done["publish_errors"]
        or done["gaps"]
        or done["duplicates"]
        or warnings
    )
    return 1 if failed else 0


def report(results: dict[str, Any]) -> str:
    """The summary, a few lines."""
    s = results["summary"]
    rss, load = s["server_rss_kib"], s["load"]
    lat = load["latency_ms"]
    return "\n".join(
        [
            "",
            f"server RSS (MiB): idle {mib(rss['idle'])}, with {s['connections_held']} connections "
            f"{mib(rss['connected'])}, peak {mib(rss['peak'])}, "
            f"end of publishing {mib(rss['end_of_publishing'])}, "
            f"after the clients left {mib(rss['after_clients_left'])}",
            f"per connection: {fmt(s['server_rss_per_connection_kib'])} KiB; growth while publishing: "
            f"{fmt(s['server_rss_growth_while_publishing_kib'])} KiB",
            f"server CPU while publishing: mean {fmt(s['server_cpu_pct_while_publishing']['mean'])} %, "
            f"max {fmt(s['server_cpu_pct_while_publishing']['max'])} % of one core",
            f"connect: {load['connected']} sessions in {load['connect_seconds']} s, "
            f"{load['connect_failures']} failures",
            f"published {load['published']} ({load['acked']} acked, {load['publish_errors']} errors) in "
            f"{load['publish_seconds']} s; events delivered {load['received']} "
            f"of {load['expected']} expected "
            f"(missing {load['missing']}, gaps {load['gaps']}, duplicates {load['duplicates']}, "
            f"disconnects {load['disconnects']})",
            f"delivery latency (ms): p50 {lat['p50']}, p90 {lat['p90']}, p99 {lat['p99']}, max {lat['max']}",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == LOAD_FLAG:
        load_main(json.loads(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
