"""Cluster latency benchmark: how much the Redis hop between two sandstone nodes adds to a broadcast.

Run by hand from anywhere (it is not part of the test suite)::

    python bench/cluster_latency.py [--rate 50] [--duration 20] [--subscribers 10]

Scenarios: "one node" (node A alone, no Redis; subscribers and POSTs on A) and "two nodes" (A and B sharing a
throwaway redis-server; subscribers on B, POSTs on A, so every event crosses the bus). Each scenario runs two
phases in a separate load-generator process (this file, run with ``--_generator``):

- latency: POST /api/articles at a fixed rate; for every POST, the time from sending it to each subscriber's
  EVENT (``time.perf_counter`` in the generator), after a warm-up; exactly-once check of every delivery;
- saturation: POSTs with ``--inflight`` requests in flight for ``--duration`` s; POSTs/s and EVENTs/s.

CPU use of the generator, the nodes and redis-server is sampled over each measurement window (/proc), since
everything shares the machine's cores. Results: a table on stdout and
``bench/results/cluster_latency-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
APP = "examples.blog:app"
TOPIC = "articles"
REALM = "realm1"
GENERATOR_FLAG = "--_generator"
STARTUP_TIMEOUT = 30.0
# twistd as run by the tests when the console script is not next to this interpreter.
TWISTD_CODE = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
# Log lines of a node that deserve attention (Twisted's text format: "[namespace#level]").
NOTEWORTHY = re.compile(r"#(warn|error|critical)\]|Traceback|Unhandled")


# ---------------------------------------------------------------------------------------------------------
# shared helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(samples: list[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean of durations in seconds, in milliseconds (nearest-rank percentiles)."""
    if not samples:
        return {"samples": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    ms = {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }
    return {"samples": len(ordered), **{k: round(v * 1000, 3) for k, v in ms.items()}}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, from /proc (None when unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after "pid (comm)": fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (VmRSS), None when unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_busy_seconds() -> float | None:
    """CPU seconds spent busy (not idle/iowait) on all cores since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, Any]:
    """CPU seconds of this process (getrusage), of the watched processes and of the machine, with the time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter(),
        "generator": usage.ru_utime + usage.ru_stime,
        "machine": machine_busy_seconds(),
        **{name: cpu_seconds(pid) for name, pid in pids.items()},
    }


def cpu_percent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    """CPU use between two snapshots, in % of one core (the machine's entry can reach cores x 100)."""
    wall = after["wall"] - before["wall"]
    result: dict[str, float | None] = {}
    for name, start in before.items():
        if name == "wall":
            continue
        end = after.get(name)
        ok = start is not None and end is not None and wall > 0
        result[name] = round((end - start) / wall * 100, 1) if ok else None
    ours = [v for k, v in result.items() if k != "machine"]
    if result.get("machine") is not None and None not in ours:
        # whatever else ran on the machine meanwhile (the kernel, other people's processes)
        result["other"] = round(result["machine"] - sum(v for v in ours if v is not None), 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# the load generator (a separate process running a Twisted reactor)


def note(text: str) -> None:
    """Progress on stderr (stdout carries the generator's JSON result)."""
    print(f"    {text}", file=sys.stderr, flush=True)


class Recorder:
    """Send times of the POSTs and arrival times of the EVENTs, per subscriber."""

    def __init__(self, tag: str, subscribers: int) -> None:
        self.tag = tag
        self.sent: dict[int, float] = {}
        self.received: list[dict[int, float]] = [{} for _ in range(subscribers)]
        self.probes_seen = [False] * subscribers
        self.duplicates = 0
        self.unexpected = 0
        self.last_arrival = 0.0
        self.completions: list[tuple[float, bool]] = []
        self.rtts: dict[int, float] = {}
        self.send_lags: list[float] = []
        self.http_errors: list[str] = []

    def title(self, seq: int, t0: float) -> str:
        """An article title carrying the run's tag, the sequence number and the send time."""
        return f"{self.tag} {seq} {t0:.6f}"

    def event(self, subscriber: int, payload: Any, now: float) -> None:
        """One EVENT arrived at a subscriber."""
        try:
            title = payload["article"]["title"]
            tag, seq_text, _ = title.split(" ")
        except (TypeError, KeyError, ValueError):
            self.unexpected += 1
            return
        if tag == f"{self.tag}-probe":
            self.probes_seen[subscriber] = True
            return
        seq = int(seq_text) if tag == self.tag and seq_text.isdigit() else -1
        if seq not in self.sent:
            self.unexpected += 1
            return
        arrivals = self.received[subscriber]
        if seq in arrivals:
            self.duplicates += 1
            return
        arrivals[seq] = now
        self.last_arrival = now

    @property
    def delivered(self) -> int:
        """Distinct (POST, subscriber) deliveries so far."""
        return sum(len(r) for r in self.received)


async def generate(reactor: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Connect the subscribers, prove the path works, run one phase, drain, and summarize."""
    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.twisted.websocket import WampWebSocketClientFactory
    from autobahn.wamp.serializer import JsonSerializer
    from autobahn.wamp.types import ComponentConfig
    from treq.client import HTTPClient
    from twisted.internet.defer import Deferred, DeferredList, gatherResults
    from twisted.internet.task import deferLater
    from twisted.web.client import Agent, HTTPConnectionPool

    count: int = config["subscribers"]
    recorder = Recorder(config["tag"], count)

    class Subscriber(ApplicationSession):
        """One WAMP session subscribed to the topic, feeding the recorder."""

        def __init__(self, index: int) -> None:
            super().__init__(ComponentConfig(REALM))
            self.index = index
            self.ready: Deferred[None] = Deferred()
            self.gone: Deferred[None] = Deferred()

        def onJoin(self, details: Any) -> Any:
            d = self.subscribe(self.on_event, TOPIC)
            d.addCallback(lambda _: self.ready.callback(None))
            d.addErrback(self.ready.errback)
            return d

        def on_event(self, *args: Any, **kwargs: Any) -> None:
            recorder.event(self.index, args[0] if args else None, time.perf_counter())

        def onLeave(self, details: Any) -> None:
            if not self.ready.called:
                self.ready.errback(RuntimeError(f"subscriber left before joining: {details.reason}"))
            super().onLeave(details)

        def onDisconnect(self) -> None:
            if not self.ready.called:
                self.ready.errback(RuntimeError("subscriber disconnected before joining"))
            if not self.gone.called:
                self.gone.callback(None)

    sessions = [Subscriber(i) for i in range(count)]
    for session in sessions:
        factory = WampWebSocketClientFactory(
            lambda s=session: s, url=config["ws_url"], serializers=[JsonSerializer()]
        )
        reactor.connectTCP(factory.host, factory.port, factory)
    await gatherResults([s.ready for s in sessions]).addTimeout(STARTUP_TIMEOUT, reactor)
    note(f"{count} subscribers joined on {config['ws_url']}")

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = config["inflight"] + 8
    http = HTTPClient(Agent(reactor, pool=pool))
    headers = {b"Content-Type": [b"application/json"]}
    url = config["post_url"]

    async def post(title: str) -> bool:
        response = await http.post(url, data=json.dumps({"title": title}).encode(), headers=headers)
        await response.content()
        if response.code != 201:
            recorder.http_errors.append(f"HTTP {response.code}")
        return bool(response.code == 201)

    # Until every subscriber got a probe, the path (and for two nodes, both bus connections) is not up.
    started = time.perf_counter()
    probe = 0
    while not all(recorder.probes_seen):
        if time.perf_counter() - started > STARTUP_TIMEOUT:
            raise RuntimeError(f"probe articles did not reach every subscriber within {STARTUP_TIMEOUT} s")
        probe += 1
        await post(f"{recorder.tag}-probe {probe} 0")
        await deferLater(reactor, 0.2)
    await deferLater(reactor, 0.3)  # let stray probes arrive
    note(f"path up after {probe} probe POST(s); {config['mode']} phase: {config['duration']} s")

    warmup: float = config["warmup"]
    duration: float = config["duration"]
    seq = 0

    async def send_one(due: float | None = None) -> None:
        nonlocal seq
        seq += 1
        mine = seq
        t0 = time.perf_counter()
        if due is not None:
            recorder.send_lags.append(t0 - due)
        recorder.sent[mine] = t0
        ok = False
        try:
            ok = await post(recorder.title(mine, t0))
        except Exception as exc:  # a failed POST is counted, the run goes on
            recorder.http_errors.append(f"{type(exc).__name__}: {exc}")
        done = time.perf_counter()
        recorder.rtts[mine] = done - t0
        recorder.completions.append((done, ok))

    in_flight: list[Deferred[None]] = []
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    snapshots: dict[str, dict[str, Any]] = {}
    pids: dict[str, int] = config["watch"]
    reactor.callLater(warmup, lambda: snapshots.setdefault("start", cpu_snapshot(pids)))
    reactor.callLater(warmup + duration, lambda: snapshots.setdefault("end", cpu_snapshot(pids)))

    if config["mode"] == "latency":
        rate: float = config["rate"]
        finished: Deferred[None] = Deferred()
        sent = 0

        def tick() -> None:
            nonlocal sent
            now = time.perf_counter()
            while start + sent / rate <= now and start + sent / rate < window_end:
                in_flight.append(Deferred.fromCoroutine(send_one(start + sent / rate)))
                sent += 1
            due = start + sent / rate
            if due >= window_end:
                finished.callback(None)
            else:
                reactor.callLater(max(0.0, due - time.perf_counter()), tick)

        tick()
        await finished
    else:

        async def worker() -> None:
            while time.perf_counter() < window_end:
                await send_one()

        in_flight.extend(Deferred.fromCoroutine(worker()) for _ in range(config["inflight"]))
    await DeferredList(in_flight)
    while "end" not in snapshots:
        await deferLater(reactor, 0.05)

    # Drain: wait until every POST reached every subscriber, or nothing arrived for a while.
    expected = len(recorder.sent) * count
    quiet_since = time.perf_counter()
    delivered = recorder.delivered
    while recorder.delivered < expected:
        await deferLater(reactor, 0.05)
        if recorder.delivered != delivered:
            delivered, quiet_since = recorder.delivered, time.perf_counter()
        elif time.perf_counter() - quiet_since > config["drain_quiet"]:
            break
    await deferLater(reactor, 0.5)  # duplicates, if any, would come now

    for session in sessions:
        if session.is_attached():
            session.leave()
    await DeferredList([s.gone for s in sessions]).addTimeout(5, reactor, lambda *_: None)
    await pool.closeCachedConnections()
    return summarize(recorder, config, window_start, window_end, snapshots)


def summarize(
    recorder: Recorder,
    config: dict[str, Any],
    window_start: float,
    window_end: float,
    snapshots: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The phase's numbers: latencies of POSTs sent in the window, rates in the window, checks, CPU."""
    count = config["subscribers"]
    measured = [s for s, t0 in recorder.sent.items() if window_start <= t0 < window_end]
    latencies: list[float] = []
    fanout: list[float] = []
    for s in measured:
        arrivals = [r[s] for r in recorder.received if s in r]
        latencies.extend(a - recorder.sent[s] for a in arrivals)
        if len(arrivals) == count:
            fanout.append(max(arrivals) - recorder.sent[s])
    window = window_end - window_start
    events_in_window = sum(
        1 for r in recorder.received for a in r.values() if window_start <= a <= window_end
    )
    posts_in_window = sum(1 for done, ok in recorder.completions if ok and window_start <= done <= window_end)
    expected = len(recorder.sent) * count
    delivered = recorder.delivered
    result: dict[str, Any] = {
        "mode": config["mode"],
        "window_s": round(window, 3),
        "posts": {
            "sent": len(recorder.sent),
            "sent_in_window": len(measured),
            "ok": sum(1 for _, ok in recorder.completions if ok),
            "errors": len(recorder.http_errors),
            "first_errors": recorder.http_errors[:5],
            "per_s_in_window": round(posts_in_window / window, 1),
        },
        "events": {
            "expected": expected,
            "received": delivered,
            "missing": expected - delivered,
            "duplicates": recorder.duplicates,
            "unexpected": recorder.unexpected,
            "exactly_once": delivered == expected and recorder.duplicates == 0 and recorder.unexpected == 0,
            "per_s_in_window": round(events_in_window / window, 1),
            "last_arrival_after_window_s": round(max(0.0, recorder.last_arrival - window_end), 3),
        },
        "latency_ms": percentiles(latencies),
        "all_subscribers_ms": percentiles(fanout),
        "post_rtt_ms": percentiles([recorder.rtts[s] for s in measured if s in recorder.rtts]),
        "cpu_percent_of_one_core": cpu_percent(snapshots["start"], snapshots["end"]),
    }
    if config["mode"] == "latency":
        result["send_lag_ms"] = percentiles(recorder.send_lags)
    return result


def generator_main(config: dict[str, Any]) -> None:
    """Entry point of the generator process: run the phase, print its result as one JSON line."""
    from twisted.internet import defer, task

    async def main(reactor: Any) -> None:
        result = await generate(reactor, config)
        print(json.dumps(result), flush=True)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))


# ---------------------------------------------------------------------------------------------------------
# the orchestrator: redis-server, twistd nodes, generator runs, report


class Child:
    """A subprocess whose output goes to a temporary file; ``stop()`` is SIGTERM, then SIGKILL.

    With ``lines=True`` only its stderr goes to the file and each stdout line to the queue ``lines``.
    """

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, *, lines: bool = False
    ) -> None:
        self.name = name
        self.argv = argv
        self.log: IO[bytes] = tempfile.TemporaryFile()
        self.lines: queue.Queue[str] = queue.Queue()
        if not lines:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
            )
            return
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True until the process exits."""
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def noteworthy(self) -> list[str]:
        """Warning/error log lines and tracebacks."""
        return [line for line in self.output().splitlines() if NOTEWORTHY.search(line)]

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 10 s); its output stays readable."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(condition: Callable[[], bool], child: Child, what: str) -> None:
    """Poll ``condition`` until true; fail with the child's output if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not condition():
        if not child.running:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{child.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name}: {what} within {STARTUP_TIMEOUT} s:\n{child.output()}")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    """Does something accept TCP connections on 127.0.0.1:port?"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def redis_answers(port: int) -> bool:
    """Does a Redis on 127.0.0.1:port answer PING?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[Child, str]]:
    """A redis-server without persistence on a free port: (child, redis:// URL)."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server not found: install it with 'apt-get install redis-server'")
    port = free_port()
    argv = [executable, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1"]
    child = Child("redis-server", argv)
    try:
        wait_for(lambda: redis_answers(port), child, "no answer to PING")
        yield child, f"redis://127.0.0.1:{port}/0"
    finally:
        child.stop()


def twistd_argv() -> list[str]:
    """The twistd next to this interpreter (the venv's), else twistd run through this interpreter."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", TWISTD_CODE]


@contextlib.contextmanager
def node(name: str, redis_url: str | None) -> Iterator[tuple[Child, int]]:
    """``twistd -n sandstone --app examples.blog:app`` on a free port: (child, port)."""
    port = free_port()
    argv = [*twistd_argv(), "-n", "--pidfile=", "sandstone", "--app", APP]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    if redis_url:
        argv += ["--redis", redis_url]
    child = Child(name, argv)
    try:
        wait_for(lambda: accepts(port), child, "not listening")
        yield child, port
    finally:
        child.stop()


def wait_for_cluster(url: str, nodes: list[Child]) -> None:
    """Wait until every node's bus is up: subscribed to the events channel and heartbeating in Redis."""
    import redis

    client = redis.Redis.from_url(url)
    channel = f"sandstone:{REALM}:events"
    try:

        def ready() -> bool:
            subscribed = dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
            beating = len(client.keys(f"sandstone:{REALM}:nodes:*"))
            return subscribed >= len(nodes) and beating >= len(nodes)

        for child in nodes:
            wait_for(ready, child, "the cluster bus did not come up")
    finally:
        client.close()


def run_generator(config: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in a separate generator process; its stderr shows progress, stdout is the result."""
    argv = [sys.executable, str(Path(__file__).resolve()), GENERATOR_FLAG, json.dumps(config)]
    limit = config["warmup"] + config["duration"] + 3 * STARTUP_TIMEOUT + config["drain_quiet"] + 60
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=limit)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the generator failed (exit {done.returncode}); see its output above")
    return dict(json.loads(lines[-1]))


def generator_config(
    args: argparse.Namespace, post_port: int, ws_port: int, watch: dict[str, int]
) -> dict[str, Any]:
    """The load generator's settings for both phases: POSTs to ``post_port``, subscribers on ``ws_port``,
    CPU sampled for the ``watch`` pids."""
    return {
        "post_url": f"http://127.0.0.1:{post_port}/api/articles",
        "ws_url": f"ws://127.0.0.1:{ws_port}/ws",
        "subscribers": args.subscribers,
        "rate": args.rate,
        "inflight": args.inflight,
        "warmup": args.warmup,
        "duration": args.duration,
        "drain_quiet": args.drain_quiet,
        "watch": watch,
    }


def run_scenario(
    name: str,
    args: argparse.Namespace,
    post_node: tuple[Child, int],
    sub_node: tuple[Child, int],
    watch: dict[str, int],
    tag: str,
) -> dict[str, Any]:
    """The latency phase then the saturation phase, POSTs to ``post_node``, subscribers on ``sub_node``."""
    base = generator_config(args, post_node[1], sub_node[1], watch)
    result: dict[str, Any] = {
        "posts_to": post_node[0].name,
        "subscribers_on": sub_node[0].name,
    }
    for mode in ("latency", "saturation"):
        print(f"  {name}: {mode}", file=sys.stderr, flush=True)
        result[mode] = run_generator({**base, "mode": mode, "tag": f"{tag}-{mode[:3]}"})
    return result


def git_commit() -> str | None:
    """The checked-out sandstone commit, if this is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def uncommitted_changes() -> list[str]:
    """``git status --porcelain`` lines for the code the nodes run (the measurement uses the working tree)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", "sandstone", "examples", "twisted"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.splitlines()


def versions() -> dict[str, str | None]:
    """Versions of the packages and of redis-server the results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for package in ("twisted", "autobahn", "treq", "klein", "txredisapi"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    redis = shutil.which("redis-server")
    found["redis-server"] = (
        subprocess.run([redis, "--version"], capture_output=True, text=True).stdout.strip() if redis else None
    )
    return found


def fmt(value: Any) -> str:
    """A table cell: "-" for no value, 2 decimals below 100, none above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def diff(a: Any, b: Any) -> float | None:
    """b - a, or None when one is missing."""
    return None if a is None or b is None else round(b - a, 3)


def compare(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """The cross-node hop: differences of the latency percentiles, and the saturation rates side by side."""
    l1, l2 = one["latency"]["latency_ms"], two["latency"]["latency_ms"]
    return {
        "added_latency_ms": {p: diff(l1[p], l2[p]) for p in ("p50", "p90", "p99", "max")},
        "saturation_posts_per_s": {
            "one node": one["saturation"]["posts"]["per_s_in_window"],
            "two nodes": two["saturation"]["posts"]["per_s_in_window"],
        },
        "saturation_events_per_s": {
            "one node": one["saturation"]["events"]["per_s_in_window"],
            "two nodes": two["saturation"]["events"]["per_s_in_window"],
        },
    }


def bottleneck_notes(phase: dict[str, Any], cores: int) -> list[str]:
    """Hints on what limited a phase, from its CPU figures."""
    cpu = phase["cpu_percent_of_one_core"]
    notes = []
    if (cpu.get("generator") or 0) >= 70:
        notes.append(
            f"the generator used {cpu['generator']}% of a core (it is single-threaded): it is at or near the "
            "bottleneck, so these rates are a lower bound for sandstone"
        )
    if (cpu.get("machine") or 0) >= 90 * cores:
        notes.append(
            f"the machine was {cpu['machine'] / cores:.0f}% busy: the processes compete for the cores"
        )
    return notes


def table(results: dict[str, Any]) -> str:
    """The printed summary: one node vs two nodes, and the hop."""
    one, two = results["scenarios"]["one node"], results["scenarios"]["two nodes"]
    s = results["settings"]
    rows: list[tuple[str, str, str, str]] = [("", "one node", "two nodes", "hop (2-1)")]

    def add(phase: str, label: str, get: Callable[[dict[str, Any]], Any], hop: bool = False) -> None:
        x, y = get(one[phase]), get(two[phase])
        rows.append((f"  {label}", fmt(x), fmt(y), fmt(diff(x, y)) if hop else ""))

    titles = {
        "latency": f"fixed rate {s['rate']:g}/s, {s['subscribers']} subscribers, {s['duration']:g} s",
        "saturation": f"saturation, {s['inflight']} POSTs in flight, {s['duration']:g} s",
    }
    for phase, title in titles.items():
        rows.append((title, "", "", ""))
        for p in ("p50", "p90", "p99", "max"):
            add(phase, f"latency {p} (ms)", lambda r, p=p: r["latency_ms"][p], hop=phase == "latency")
        add(phase, "all subscribers got it p99 (ms)", lambda r: r["all_subscribers_ms"]["p99"])
        add(phase, "POST round trip p50 (ms)", lambda r: r["post_rtt_ms"]["p50"])
        if phase == "latency":
            add(phase, "generator send lag p99 (ms)", lambda r: r["send_lag_ms"]["p99"])
        add(phase, "POSTs/s (window)", lambda r: r["posts"]["per_s_in_window"])
        add(phase, "EVENTs/s at subscribers (window)", lambda r: r["events"]["per_s_in_window"])
        add(
            phase,
            "EVENTs received/expected",
            lambda r: f"{r['events']['received']}/{r['events']['expected']}",
        )
        add(
            phase,
            "duplicate/unexpected EVENTs",
            lambda r: f"{r['events']['duplicates']}/{r['events']['unexpected']}",
        )
        add(phase, "HTTP errors", lambda r: r["posts"]["errors"])
        if phase == "saturation":
            add(
                phase, "last EVENT after window end (s)", lambda r: r["events"]["last_arrival_after_window_s"]
            )
        for who in ("generator", "node A", "node B", "redis", "other", "machine"):
            add(phase, f"CPU {who} (% of 1 core)", lambda r, who=who: r["cpu_percent_of_one_core"].get(who))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        ).rstrip()
        for row in rows
    ]
    cores = results["machine"]["cores"]
    lines.append(
        f"(CPU in % of one core; this machine has {cores} cores, so 'machine' can reach {cores * 100}%: "
        "generator, nodes and redis-server share them)"
    )
    return "\n".join(lines)


def run_header(benchmark: str, argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """What every bench script's JSON result starts with: the command, its settings, the machine, the code."""
    return {
        "benchmark": benchmark,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).as_posix(), f"bench/{benchmark}.py", *argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sandstone_commit": git_commit(),
        "sandstone_uncommitted_changes": uncommitted_changes(),
        "versions": versions(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="POSTs per second in the latency phase")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds of each phase")
    parser.add_argument("--subscribers", type=int, default=10, help="WAMP subscribers to the topic")
    parser.add_argument("--inflight", type=int, default=32, help="POSTs in flight in the saturation phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of each phase not counted")
    parser.add_argument(
        "--drain-quiet",
        type=float,
        default=5.0,
        help="after sending, stop waiting for missing EVENTs once none arrived for this many seconds",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.subscribers < 1 or args.inflight < 1 or args.warmup < 0:
        parser.error("--rate, --duration, --subscribers and --inflight must be positive, --warmup >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    stamp = time.strftime("%Y%m%dT%H%M%S")
    tag = f"bench{os.getpid()}"
    results = run_header("cluster_latency", argv, args)
    results["scenarios"] = {}
    started = time.monotonic()
    print("one node: node A, no Redis; subscribers and POSTs on A", file=sys.stderr, flush=True)
    with node("node A", None) as a:
        one = run_scenario("one node", args, a, a, {"node A": a[0].pid}, f"{tag}-one")
        one["node_log_warnings"] = {"node A": a[0].noteworthy()[:20]}
    results["scenarios"]["one node"] = one
    print("two nodes: A and B on one Redis; subscribers on B, POSTs on A", file=sys.stderr, flush=True)
    with redis_server() as (redis, url), node("node A", url) as a, node("node B", url) as b:
        wait_for_cluster(url, [a[0], b[0]])
        watch = {"node A": a[0].pid, "node B": b[0].pid, "redis": redis.pid}
        two = run_scenario("two nodes", args, a, b, watch, f"{tag}-two")
        two["node_log_warnings"] = {"node A": a[0].noteworthy()[:20], "node B": b[0].noteworthy()[:20]}
    results["scenarios"]["two nodes"] = two
    results["comparison"] = compare(one, two)
    for r in results["scenarios"].values():
        for phase in ("latency", "saturation"):
            r[phase]["notes"] = bottleneck_notes(r[phase], os.cpu_count() or 1)
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"cluster_latency-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    failures = [
        f"{scenario} {phase}: {r[phase]['events']['missing']} missing, {r[phase]['events']['duplicates']} "
        f"duplicate, {r[phase]['events']['unexpected']} unexpected EVENTs, {r[phase]['posts']['errors']} "
        "HTTP errors"
        for scenario, r in results["scenarios"].items()
        for phase in ("latency", "saturation")
        if not r[phase]["events"]["exactly_once"] or r[phase]["posts"]["errors"]
    ]
    for scenario, r in results["scenarios"].items():
        for phase in ("latency", "saturation"):
            for hint in r[phase]["notes"]:
                print(f"note: {scenario}, {phase}: {hint}")
        for who, lines in r["node_log_warnings"].items():
            if lines:
                print(f"note: {scenario}, {who} logged {len(lines)}+ warning(s), e.g. {lines[0]}")
    for failure in failures:
        print(f"FAILED exactly-once check: {failure}")
    print(
        f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({results['elapsed_s']} s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == GENERATOR_FLAG:
        generator_main(json.loads(sys.argv[2]))
    else:
        try:
            sys.exit(main(sys.argv[1:]))
        except KeyboardInterrupt:
            print("interrupted; everything stopped", file=sys.stderr)
            sys.exit(130)
