"""Side-by-side benchmark: sandstone vs Crossbar.io vs a raw Autobahn fan-out ceiling, in one command.

    python bench/runner.py [--runs 5] [--quick] [--only sat,lat,rest,idle,cross,workers]

It installs Crossbar into ``bench/.venv-crossbar`` (pip, Python 3.11; reused when present) and the Node load
generator's ``ws`` package into ``bench/node_modules`` (npm), then, for each run, starts in turn sandstone
(``twistd -n sandstone``: the open router; ``--app examples.blog:app`` for REST -> EVENT), Crossbar (the
config ``crossbar init`` writes: an open ``realm1``, WebSocket at /ws; plus an HTTP publisher at /publish) and
the raw ceiling (bench/raw_ceiling.py), each on a free 127.0.0.1 port, and drives the same workloads against
each from separate Node.js processes (bench/load/wamp.js, WAMP v2 JSON spoken directly):

- sat S=N: fan-out saturation, 1 publisher keeping ``--window`` acknowledged PUBLISHes in flight, S
  subscribers; delivered EVENTs/s at the subscribers;
- lat R/s: fan-out latency, R publishes/s x ``--lat-subscribers`` subscribers; publish -> receive percentiles;
- rest: REST -> EVENT, POST /api/articles (sandstone, examples.blog) or POST /publish (Crossbar's HTTP
  publisher), subscribers of ``articles``; requests/s at saturation and delivery percentiles at a fixed rate;
- idle N: N sessions each subscribed to its own topic; server RSS per session, sessions connected per second.

Two more, sandstone only (Crossbar OSS has no clustering, the raw ceiling none), each with its own
redis-server (``--save '' --appendonly no``) on a free port:

- cross: nodes A and B (open router, ``--redis``); fan-out saturation with the publisher on A and every
  subscriber on B (``--scale-subscribers``), then fan-out latency at ``--cross-rate``/s, same split;
- workers: ``--redis URL --workers N`` for each of ``--worker-counts`` (1,2): fan-out saturation (open router)
  and REST -> EVENT saturation (examples.blog), every client on the one port.

They report each process's CPU (nodes or workers, redis-server, generators) and, in a second table, the
ratio to the single-node figure of the same run and the workers speed-up.

Results: a table of medians over the runs with ratios, ``bench/results/runner-<timestamp>.json``,
``bench/results/runner-<timestamp>.png`` (matplotlib) and ``BENCHMARKS.md``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cluster_latency import (
    Child,
    cpu_seconds,
    free_port,
    git_commit,
    machine_busy_seconds,
    redis_server,
    rss_kib,
    twistd_argv,
    uncommitted_changes,
    wait_for,
    wait_for_cluster,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS_DIR = BENCH / "results"
CROSSBAR_VENV = BENCH / ".venv-crossbar"
# Crossbar 26.x runs on Python 3.11: the first python3.11 on PATH, else the Python running the runner.
CROSSBAR_PYTHON = shutil.which("python3.11") or sys.executable
CROSSBAR_REQUIREMENT = "crossbar"
GENERATOR = BENCH / "load" / "wamp.js"
REALM = "realm1"
SERVERS = ("sandstone", "crossbar", "raw")
SCENARIOS = ("sat", "lat", "rest", "idle", "cross", "workers")
# sandstone only (Crossbar OSS has no clustering, the raw ceiling none): nodes or workers sharing a Redis bus.
SCALEOUT = ("cross", "workers")
# A generator process above this share of one core is (near) the bottleneck: its figure is a lower bound.
GENERATOR_BUSY = 85.0
# The server below this share of one core at saturation was not the bottleneck either.
SERVER_BUSY = 85.0
# The supervisor's log line for each worker it spawns (sandstone/_workers.py).
WORKER_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
# Processes to sample over a measured window: label -> (pid, port whose established connections to count).
Watch = dict[str, tuple[int, int | None]]
# --pin: the CPU list ("0", "1,2,3") of the server under test and of the load generators, for the latency
# scenarios; PIN holds the generators' list while one of them runs (taskset -c), else nothing.
PIN_PLAN: dict[str, str] = {}
PIN: dict[str, str] = {}


def pinned(argv: list[str], role: str) -> list[str]:
    """``argv`` under ``taskset -c`` with the CPUs ``role`` ("generators") gets while a latency scenario is
    pinned (``latency_pinning``)."""
    return ["taskset", "-c", PIN[role], *argv] if role in PIN else argv


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Every thread of each process on ``cpus``."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def latency_pinning(server: Server) -> Iterator[None]:
    """With --pin: ``server``'s processes run on the first CPU and the generators started meanwhile on the
    others, so that publish -> receive times measure the server, not its competition with the generators
    for a core. Saturation and idle scenarios stay unpinned: their generators need the spare capacity."""
    if not PIN_PLAN:
        yield
        return
    everything = os.sched_getaffinity(0)
    pids = server.pids()
    set_affinity(pids, {int(PIN_PLAN["server"])})
    PIN["generators"] = PIN_PLAN["generators"]
    try:
        yield
    finally:
        PIN.clear()
        set_affinity(pids, everything)


def pin_plan(cpus: list[int]) -> dict[str, str]:
    """The first CPU for the server under test, the others for the load generators."""
    if len(cpus) < 2:
        raise RuntimeError(f"--pin needs at least 2 CPUs, this process may use {cpus}")
    if shutil.which("taskset") is None:
        raise RuntimeError("--pin needs taskset (util-linux)")
    rest = cpus[1:]
    return {"server": str(cpus[0]), "generators": ",".join(str(c) for c in rest)}


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (as results record them), else absolute."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# setup: Crossbar's virtualenv, the Node generator's dependency, matplotlib


def ensure_crossbar(python: str) -> Path:
    """``bench/.venv-crossbar/bin/crossbar``, installing Crossbar with pip first if it is not there."""
    crossbar = CROSSBAR_VENV / "bin" / "crossbar"
    if crossbar.exists():
        return crossbar
    if not Path(python).exists():
        raise RuntimeError(f"{python} not found: pass --crossbar-python with a Python 3.11 interpreter")
    log(f"installing Crossbar into {CROSSBAR_VENV.relative_to(REPO)} (pip, takes a few minutes) ...")
    subprocess.run([python, "-m", "venv", str(CROSSBAR_VENV)], check=True)
    pip = [str(CROSSBAR_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, CROSSBAR_REQUIREMENT], check=True)
    if not crossbar.exists():
        raise RuntimeError("pip installed Crossbar but bench/.venv-crossbar/bin/crossbar is missing")
    return crossbar


def ensure_node() -> str:
    """The ``node`` executable, with ``ws`` installed into bench/node_modules (``npm ci``/``npm install``)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: the load generator needs Node.js (>= 18) on the PATH")
    if not (BENCH / "node_modules" / "ws").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: run 'npm install --prefix bench ws' by hand")
        log("installing the generator's dependency (npm install --prefix bench) ...")
        subprocess.run([npm, "install", "--prefix", str(BENCH)], check=True, cwd=REPO)
    return node


def optional_version(package: str) -> str | None:
    """The installed version of ``package`` in this interpreter (the servers'), None when it is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def crossbar_version(crossbar: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(crossbar.with_name("python")), "-c", "import crossbar; print(crossbar.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------------------------------
# the servers


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Crossbar runs a controller and a router worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


class Server:
    """A running server: its name, process, port, WebSocket URL and REST -> EVENT target."""

    def __init__(self, name: str, child: Child, port: int, ws_path: str, rest: dict[str, str] | None) -> None:
        self.name = name
        self.child = child
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}{ws_path}"
        self.rest = rest

    def pids(self) -> list[int]:
        return descendants(self.child.pid)

    def cpu(self) -> float:
        return sum(cpu_seconds(p) or 0.0 for p in self.pids())

    def rss_kib(self) -> int:
        return sum(rss_kib(p) or 0 for p in self.pids())


@contextlib.contextmanager
def sandstone(
    app: str | None,
    redis_url: str | None = None,
    workers: int = 1,
    label: str = "sandstone",
    extra_args: Sequence[str] = (),
    default_limits: bool = False,
) -> Iterator[Server]:
    """``twistd -n sandstone`` on a free port, optionally on a Redis bus (``--redis``) with ``--workers N``;
    ``extra_args`` go to ``twistd sandstone``; ``default_limits`` keeps sandstone's own (see below).

    Ready when /ws answers a handshake and, with workers, when workers 2..N accept connections (until then
    the connections the kernel hashes to their sockets wait). Whether the bus is up is the caller's business
    (``wait_for_cluster``, ``bus_probe``).
    """
    port = free_port()
    argv = [*twistd_argv(), "-n", "--pidfile=", "sandstone", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    argv += list(extra_args)
    # No per-session rate limits, no connection cap and no slow-consumer drop: Crossbar has none of them
    # by default, and a benchmark publisher is meant to go as fast as it can. Every generator connects from
    # 127.0.0.1, opening up to thousands of sessions at once: no cap on connections per address either.
    argv += (
        []
        if default_limits
        else [
            "--publish-rate",
            "0",
            "--call-rate",
            "0",
            "--max-connections",
            "0",
            "--max-outgoing-buffer",
            "0",
            "--max-pending-per-ip",
            "0",
        ]
    )
    if app:
        argv += ["--app", app]
    if redis_url:
        argv += ["--redis", redis_url]
    if workers > 1:
        argv += ["--workers", str(workers)]
    child = Child(label, argv)
    try:
        wait_for(lambda: upgrades(port, "/ws"), child, "no WebSocket handshake on /ws")
        wait_for(
            lambda: child.output().count("accepting connections") >= workers - 1,
            child,
            f"workers 2..{workers} not accepting connections",
        )
        rest = (
            {"url": f"http://127.0.0.1:{port}/api/articles", "body": '{"title": "bench @T@"}'}
            if app
            else None
        )
        yield Server("sandstone", child, port, "/ws", rest)
    finally:
        child.stop()


def worker_pids(server: Server, workers: int) -> dict[str, int]:
    """``{"worker 1": supervisor pid, "worker K": pid}`` from the supervisor's "worker K started (pid P)"."""
    pids = {"worker 1": server.child.pid}
    pids.update({f"worker {k}": int(pid) for k, pid in WORKER_STARTED.findall(server.child.output())})
    if len(pids) != workers:
        raise RuntimeError(f"expected {workers} workers, the supervisor's log names {sorted(pids)}")
    return pids


def tcp_connections(pid: int, port: int) -> int | None:
    """Established TCP connections a process holds on local ``port``: its socket descriptors (/proc/PID/fd)
    matched with /proc/net/tcp{,6}. None without /proc."""
    inodes = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is HEXIP:HEXPORT, st 01 is ESTABLISHED, field 9 the socket's inode
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
    return count


def upgrades(port: int, path: str) -> bool:
    """Does ws://127.0.0.1:port/path accept a WAMP WebSocket handshake (101) right now?"""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(request.encode())
            return s.recv(64).startswith(b"HTTP/1.1 101")
    except OSError:
        return False


def crossbar_config(template: dict[str, Any], ports: Iterator[int]) -> dict[str, Any]:
    """Crossbar's own ``crossbar init`` node config, changed only where a benchmark must change it.

    Every transport endpoint gets the next port of ``ports`` and listens on 127.0.0.1, and the web transport
    gains an HTTP publisher bridge at ``publish`` (realm1, role anonymous). Everything else (the open
    ``realm1``, the serializers and the WebSocket options, ``/`` static and ``info``) stays as written.
    """
    config = json.loads(json.dumps(template))
    try:
        realms = {realm["name"] for worker in config["workers"] for realm in worker.get("realms", ())}
        transports = [t for worker in config["workers"] for t in worker.get("transports", ())]
        web = next(t for t in transports if t["type"] == "web")
        if REALM not in realms or web["paths"].get("ws", {}).get("type") != "websocket":
            raise ValueError(f"no {REALM} or no websocket path 'ws'")
    except (KeyError, StopIteration, ValueError) as e:
        raise RuntimeError(f"'crossbar init' wrote a config the runner does not know: {e!r}") from e
    for transport in transports:
        transport["endpoint"].update(port=next(ports), interface="127.0.0.1")
    web["paths"]["publish"] = {"type": "publisher", "realm": REALM, "role": "anonymous"}
    return config


def crossbar_init(executable: Path, appdir: Path) -> dict[str, Any]:
    """Run ``crossbar init --appdir APPDIR`` and return the node config it wrote."""
    subprocess.run(
        [str(executable), "init", "--appdir", str(appdir)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return json.loads((appdir / ".crossbar" / "config.json").read_text())


@contextlib.contextmanager
def crossbar(executable: Path) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="crossbar-") as tmp:
        appdir = Path(tmp)
        cbdir = appdir / ".crossbar"
        ports = iter(free_port, None)
        config = crossbar_config(crossbar_init(executable, appdir), ports)
        (cbdir / "config.json").write_text(json.dumps(config, indent=2))
        web = next(t for w in config["workers"] for t in w.get("transports", ()) if t["type"] == "web")
        port = web["endpoint"]["port"]
        argv = [str(executable), "start", "--cbdir", str(cbdir), "--loglevel", "warn"]
        child = Child("crossbar", argv)
        try:
            wait_for(lambda: upgrades(port, "/ws"), child, "no WebSocket handshake on /ws")
            rest = {
                "url": f"http://127.0.0.1:{port}/publish",
                "body": '{"topic": "articles", "args": [{"article": {"title": "bench @T@"}}]}',
            }
            yield Server("crossbar", child, port, "/ws", rest)
        finally:
            child.stop()


@contextlib.contextmanager
def raw() -> Iterator[Server]:
    port = free_port()
    child = Child("raw", [sys.executable, str(BENCH / "raw_ceiling.py"), str(port)])
    try:
        wait_for(lambda: upgrades(port, "/ws"), child, "no WebSocket handshake on /ws")
        yield Server("raw", child, port, "/ws", None)
    finally:
        child.stop()


# ---------------------------------------------------------------------------------------------------------
# the generators


class Generator:
    """One Node process of bench/load/wamp.js, driven by stdin lines, answering JSON lines on stdout."""

    def __init__(self, node: str, config: dict[str, Any]) -> None:
        self.config = config
        self.process = subprocess.Popen(
            pinned([node, str(GENERATOR), json.dumps(config)], "generators"),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(
                f"generator {self.config['role']} gave no answer (exit {self.process.returncode})"
            )
        return dict(json.loads(line))

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("quit")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def subscriber_procs(count: int, args: argparse.Namespace) -> int:
    return 1 if count < 100 else args.sub_procs


@contextlib.contextmanager
def generators(node: str, configs: list[dict[str, Any]], timeout: float) -> Iterator[list[Generator]]:
    """Start the generators together, wait for each one's "ready" line; always stop them."""
    gens = [Generator(node, c) for c in configs]
    try:
        for g in gens:
            g.ready = g.read(timeout)  # type: ignore[attr-defined]
        yield gens
    finally:
        for g in gens:
            g.close()


def measure(
    server_cpu: Callable[[], float],
    gens: list[Generator],
    pub: Generator,
    warmup: float,
    duration: float,
    watch: Watch | None = None,
) -> dict[str, Any]:
    """go, warm up, open the window on every generator, wait, close it; server and machine CPU meanwhile.

    ``server_cpu`` is the CPU seconds of every server process; ``watch`` adds each listed process's CPU
    (``cpu_percent``) and, for those with a port, its established connections at the end of the window.
    """
    watch = watch or {}
    pub.send("go")
    time.sleep(warmup)
    each0 = {label: cpu_seconds(pid) for label, (pid, _) in watch.items()}
    cpu0, machine0, t0 = server_cpu(), machine_busy_seconds(), time.perf_counter()
    for g in gens:
        g.send("start")
    time.sleep(duration)
    for g in gens:
        g.send("stop")
    results = [g.read(30) for g in gens]
    wall = time.perf_counter() - t0
    cpu1, machine1 = server_cpu(), machine_busy_seconds()
    each1 = {label: cpu_seconds(pid) for label, (pid, _) in watch.items()}
    connections = {label: tcp_connections(pid, port) for label, (pid, port) in watch.items() if port}
    pub.send("halt")
    machine = None if machine0 is None or machine1 is None else round((machine1 - machine0) / wall * 100, 1)
    measured: dict[str, Any] = {
        "server_cpu_percent": round((cpu1 - cpu0) / wall * 100, 1),
        "machine_cpu_percent": machine,
        "generators": results,
    }
    if watch:
        measured["cpu_percent"] = {
            label: None if a is None or b is None else round((b - a) / wall * 100, 1)
            for label, a, b in ((label, each0[label], each1[label]) for label in watch)
        }
        measured["connections"] = connections
    return measured


def sub_configs(server: Server, count: int, procs: int, **extra: Any) -> list[dict[str, Any]]:
    configs, offset = [], 0
    for n in split(count, procs):
        configs.append(
            {"role": "sub", "url": server.ws_url, "realm": REALM, "count": n, "index_offset": offset, **extra}
        )
        offset += n
    return configs


def summarize_generators(m: dict[str, Any]) -> dict[str, Any]:
    subs = [g for g in m["generators"] if g["role"] == "sub"]
    pubs = [g for g in m["generators"] if g["role"] != "sub"]
    gen_cpu = [round(g["cpu_percent"], 1) for g in m["generators"]]
    return {
        "events_per_s": round(sum(g["events_per_s"] for g in subs), 1),
        "acked_per_s": round(sum(g["acked_per_s"] for g in pubs), 1),
        "errors": sum(g["errors"] for g in m["generators"]),
        "non_event_messages": sum(g["other"] for g in subs),
        "generator_cpu_percent": gen_cpu,
        "server_cpu_percent": m["server_cpu_percent"],
        "machine_cpu_percent": m["machine_cpu_percent"],
        "lower_bound": max(gen_cpu) >= GENERATOR_BUSY,
        **{k: m[k] for k in ("cpu_percent", "connections") if k in m},
    }


def mark_saturation(result: dict[str, Any], m: dict[str, Any]) -> None:
    """Was the server the bottleneck? One process: >= SERVER_BUSY of a core. Several (nodes, workers): the
    busiest sandstone process (not redis-server) decides, and is recorded."""
    busy = m["server_cpu_percent"]
    if "cpu_percent" in m:
        ours = {k: v for k, v in m["cpu_percent"].items() if k != "redis" and v is not None}
        if ours:
            label = max(ours, key=lambda k: ours[k])
            busy = ours[label]
            result["busiest_process"] = label
            result["busiest_cpu_percent"] = busy
    result["server_saturated"] = busy >= SERVER_BUSY


def subscriber_latency(m: dict[str, Any]) -> dict[str, Any]:
    """Latency percentiles over every subscriber process: merged from their samples when there are several
    (the samples are then dropped from ``m``), else the one process's own percentiles."""
    subs = [g for g in m["generators"] if g["role"] == "sub"]
    if len(subs) == 1:
        return dict(subs[0]["latency_ms"])
    samples = sorted(v for g in subs for v in g.pop("latency_samples"))
    if not samples:
        return {"samples": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}

    def rank(p: float) -> float:
        return round(samples[max(0, math.ceil(p / 100 * len(samples)) - 1)], 3)

    return {
        "samples": len(samples),
        **{f"p{p}": rank(p) for p in (50, 90, 99)},
        "max": round(samples[-1], 3),
        "mean": round(sum(samples) / len(samples), 3),
    }


def pub_config(server: Server, topic: str, **extra: Any) -> dict[str, Any]:
    return {"role": "pub", "url": server.ws_url, "realm": REALM, "topic": topic, **extra}


def total_cpu(*servers: Server) -> Callable[[], float]:
    return lambda: sum(s.cpu() for s in servers)


def fanout_saturation(
    node: str,
    server: Server,
    s: int,
    args: argparse.Namespace,
    pub_server: Server | None = None,
    watch: Watch | None = None,
) -> dict[str, Any]:
    """Subscribers on ``server``, the publisher on ``pub_server`` (another node) or ``server``."""
    topic = "bench.fanout"
    subs = sub_configs(server, s, subscriber_procs(s, args), topic=topic, mode="count")
    pub = pub_config(
        pub_server or server, topic, mode="sat", window=args.window, payload_bytes=args.payload_bytes
    )
    cpu = total_cpu(server, pub_server) if pub_server else server.cpu
    with generators(node, [*subs, pub], 120) as gens:
        m = measure(cpu, gens, gens[-1], args.warmup, args.duration, watch)
    result = summarize_generators(m)
    result["subscribers"] = s
    if watch:
        # EVENTs per acknowledged PUBLISH: S when every subscriber keeps up with the publisher
        acked = result["acked_per_s"]
        result["events_per_publish"] = round(result["events_per_s"] / acked, 2) if acked else None
        mark_saturation(result, m)
    else:
        result["server_saturated"] = m["server_cpu_percent"] >= SERVER_BUSY
    return result


def fanout_latency(
    node: str,
    server: Server,
    rate: float,
    args: argparse.Namespace,
    pub_server: Server | None = None,
    watch: Watch | None = None,
) -> dict[str, Any]:
    """Subscribers on ``server``, the publisher on ``pub_server`` (another node) or ``server``."""
    topic = "bench.latency"
    s = args.lat_subscribers
    subs = sub_configs(server, s, args.lat_procs, topic=topic, mode="latency", samples=args.lat_procs > 1)
    pub = pub_config(pub_server or server, topic, mode="rate", rate=rate, payload_bytes=args.payload_bytes)
    cpu = total_cpu(server, pub_server) if pub_server else server.cpu
    with generators(node, [*subs, pub], 120) as gens:
        m = measure(cpu, gens, gens[-1], args.warmup, args.duration, watch)
    result = summarize_generators(m)
    result.update(
        rate=rate,
        subscribers=s,
        latency_ms=subscriber_latency(m),
        send_lag_ms=m["generators"][-1]["send_lag_ms"],
    )
    return result


def rest_to_event(
    node: str, server: Server, mode: str, args: argparse.Namespace, watch: Watch | None = None
) -> dict[str, Any]:
    assert server.rest is not None
    s = args.rest_subscribers
    many = args.lat_procs > 1
    subs = sub_configs(server, s, args.lat_procs, topic="articles", mode="latency", samples=many)
    post = {"role": "http", **server.rest, "mode": mode, "window": args.rest_inflight, "rate": args.rest_rate}
    with generators(node, [*subs, post], 120) as gens:
        m = measure(server.cpu, gens, gens[-1], args.warmup, args.duration, watch)
    result = summarize_generators(m)
    if watch and mode == "sat":
        acked = result["acked_per_s"]
        result["events_per_request"] = round(result["events_per_s"] / acked, 2) if acked else None
        mark_saturation(result, m)
    result.update(
        mode=mode,
        rate=args.rest_rate if mode == "rate" else None,
        inflight=args.rest_inflight if mode == "sat" else None,
        subscribers=s,
        latency_ms=subscriber_latency(m),
        post_rtt_ms=m["generators"][-1].get("rtt_ms"),
    )
    return result


def idle_sessions(node: str, server: Server, n: int, args: argparse.Namespace) -> dict[str, Any]:
    time.sleep(0.5)
    before = server.rss_kib()
    procs = max(1, -(-n // 5000))
    configs = sub_configs(
        server, n, procs, topic_prefix="bench.idle.", mode="count", concurrency=args.idle_concurrency
    )
    started = time.perf_counter()
    with generators(node, configs, 300) as gens:
        connect_s = time.perf_counter() - started
        time.sleep(1.0)
        after = server.rss_kib()
        gen_connect = max(g.ready["connect_s"] for g in gens)  # type: ignore[attr-defined]
    return {
        "sessions": n,
        "connect_s": round(connect_s, 2),
        "generator_connect_s": round(gen_connect, 2),
        "sessions_per_s": round(n / connect_s, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": round((after - before) / n, 2),
    }


# ---------------------------------------------------------------------------------------------------------
# sandstone scale-out: two nodes on the Redis bus ("cross"), --workers N ("workers")


def bus_check(
    node: str, pub_server: Server, sub_server: Server, count: int, timeout: float = 30.0
) -> dict[str, Any]:
    """Is the path through the bus up, and does it deliver every publication exactly once?

    ``count`` subscribers on ``sub_server``, a publisher on ``pub_server`` (WAMP PUBLISH, or POST
    /api/articles for an app server) at 50/s. First until the subscribers get (nearly) every publication in
    a 0.4 s window (the nodes are on the bus), then the check: counters reset, 1 s of publishing, and once
    the publisher is acknowledged and the subscribers stop receiving, EVENTs received must equal
    publications x ``count``. With workers on one port the subscribers land on the workers as the kernel
    hashes them (with 2 workers, all 100 on the publisher's: 2 in 2^100)."""
    topic = "articles" if pub_server.rest else "bench.probe"
    subs = sub_configs(sub_server, count, 1, topic=topic, mode="count")
    if pub_server.rest:
        pub = {"role": "http", **pub_server.rest, "mode": "rate", "rate": 50.0, "window": 1}
    else:
        pub = pub_config(pub_server, topic, mode="rate", rate=50.0, payload_bytes=50)
    deadline = time.monotonic() + timeout
    with generators(node, [*subs, pub], 60) as (sub, publisher):
        publisher.send("go")
        while True:
            for g in (sub, publisher):
                g.send("start")
            time.sleep(0.4)
            for g in (sub, publisher):
                g.send("stop")
            got, sent = sub.read(10)["events"], publisher.read(10)["acked"]
            if sent >= 5 and got >= 0.9 * sent * count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"bus probe: {got} EVENTs for {sent} publishes x {count} subscribers after {timeout:g} s"
                )
        publisher.send("halt")
        time.sleep(0.5)  # the last scheduled publishes are answered and delivered
        for g in (sub, publisher):
            g.send("start")
        publisher.send("go")
        time.sleep(1.0)
        publisher.send("halt")
        # "stop" reports the counters without resetting them: poll until nothing changes for 1 s
        last: tuple[int, ...] = ()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() < deadline + 10:
            time.sleep(0.2)
            for g in (sub, publisher):
                g.send("stop")
            r_sub, r_pub = sub.read(10), publisher.read(10)
            now = (r_sub["events"], r_sub["other"], r_pub["sent"], r_pub["acked"], r_pub["errors"])
            if now != last:
                last, quiet_since = now, time.monotonic()
    events, other, sent, acked, errors = last
    return {
        "subscribers": count,
        "publications": acked,
        "sent": sent,
        "errors": errors,
        "expected_events": acked * count,
        "events": events,
        "non_event_messages": other,
        "exact": events == acked * count and sent == acked and not errors and not other and acked > 0,
    }


def checked(check: dict[str, Any], what: str) -> dict[str, Any]:
    log(
        f"  sandstone: {what}: delivery check {check['publications']} publications x {check['subscribers']} "
        f"subscribers -> {check['events']:,} EVENTs: {'exact' if check['exact'] else 'NOT EXACT'}"
    )
    return check


def wait_idle(pids: list[int], timeout: float = 30.0) -> None:
    """Wait until each process uses under 20 % of a core over 0.5 s: a node that fell behind the bus at
    saturation (the backlog waits in socket buffers and redis-server's output buffer) has caught up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [cpu_seconds(p) or 0.0 for p in pids]
        time.sleep(0.5)
        if all((cpu_seconds(p) or 0.0) - b < 0.1 for p, b in zip(pids, before, strict=True)):
            return
    log(f"    still busy {timeout:g} s after the window: measuring anyway")


def log_warnings(*children: Child) -> list[str]:
    """Warning/error lines the servers logged so far (the result records them; none is expected), and
    redis-server closing a client over its output buffer limit (a node that cannot keep up with the bus)."""
    lines = []
    for c in children:
        found = c.noteworthy()
        if c.name == "redis-server":
            found += [line for line in c.output().splitlines() if "output buffer" in line]
        lines += [f"{c.name}: {line}" for line in found]
    for line in lines[:5]:
        log(f"    log: {line[:200]}")
    return lines[:20]


def cross_node(node: str, args: argparse.Namespace) -> dict[str, Any]:
    """Scenario 6: redis-server, nodes A and B on it; the publisher on A, every subscriber on B."""
    detail: dict[str, Any] = {}
    with (
        redis_server() as (redis_child, redis_url),
        sandstone(None, redis_url, label="node A") as a,
        sandstone(None, redis_url, label="node B") as b,
    ):
        wait_for_cluster(redis_url, [a.child, b.child])
        s = args.scale_subscribers
        check = checked(bus_check(node, a, b, s), "cross")
        watch: Watch = {
            "node A": (a.child.pid, a.port),
            "node B": (b.child.pid, b.port),
            "redis": (redis_child.pid, None),
        }
        log(f"  sandstone: cross-node fan-out saturation S={s} (publisher on A, subscribers on B)")
        result = fanout_saturation(node, b, s, args, pub_server=a, watch=watch)
        result["delivery_check"] = check
        result["log_warnings"] = log_warnings(a.child, b.child, redis_child)
        detail[f"cross sat S={s}"] = result
        wait_idle([a.child.pid, b.child.pid])
        rate = args.cross_rate
        log(f"  sandstone: cross-node fan-out latency {rate:g}/s x {args.lat_subscribers}")
        result = fanout_latency(node, b, rate, args, pub_server=a, watch=watch)
        result["log_warnings"] = log_warnings(a.child, b.child, redis_child)
        detail[f"cross lat {rate:g}/s"] = result
    return detail


def workers_scaleout(node: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--redis URL --workers N`` for each N: fan-out saturation (open router), REST -> EVENT saturation
    (examples.blog); a fresh redis-server and server for each, everything on the one port."""
    detail: dict[str, Any] = {}
    for n in args.worker_counts:
        for app in (None, "examples.blog:app"):
            with (
                redis_server() as (redis_child, redis_url),
                sandstone(app, redis_url, workers=n, label=f"sandstone --workers {n}") as server,
            ):
                pids = worker_pids(server, n)
                wait_for_cluster(redis_url, [server.child] * n)
                check = checked(bus_check(node, server, server, args.scale_subscribers), f"workers={n}")
                watch: Watch = {label: (pid, server.port) for label, pid in pids.items()}
                watch["redis"] = (redis_child.pid, None)
                if app is None:
                    s = args.scale_subscribers
                    log(f"  sandstone: --workers {n} fan-out saturation S={s}")
                    key, result = (
                        f"workers={n} sat S={s}",
                        fanout_saturation(node, server, s, args, watch=watch),
                    )
                else:
                    log(f"  sandstone: --workers {n} REST -> EVENT saturation")
                    key, result = (
                        f"workers={n} rest sat",
                        rest_to_event(node, server, "sat", args, watch=watch),
                    )
                result["workers"] = n
                result["delivery_check"] = check
                result["log_warnings"] = log_warnings(server.child, redis_child)
                detail[key] = result
    return detail


# ---------------------------------------------------------------------------------------------------------
# one run of one server, the flat metrics, medians and the report


def run_server(name: str, node: str, cb: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """Every selected scenario against one server; a fresh server process per scenario group."""

    def start(app: str | None = None) -> contextlib.AbstractContextManager[Server]:
        if name == "sandstone":
            return sandstone(app, extra_args=args.sandstone_args)
        if name == "crossbar":
            assert cb is not None
            return crossbar(cb)
        return raw()

    detail: dict[str, Any] = {}
    if "sat" in args.only or "lat" in args.only:
        with start() as server:
            for s in args.subscribers if "sat" in args.only else []:
                log(f"  {name}: fan-out saturation S={s}")
                detail[f"sat S={s}"] = fanout_saturation(node, server, s, args)
            for rate in args.lat_rates if "lat" in args.only else []:
                log(f"  {name}: fan-out latency {rate:g}/s x {args.lat_subscribers}")
                with latency_pinning(server):
                    detail[f"lat {rate:g}/s"] = fanout_latency(node, server, rate, args)
    if "rest" in args.only and name != "raw":
        # sandstone: examples.blog (POST /api/articles dispatches, the articles topic broadcasts);
        # Crossbar: its HTTP publisher bridge (POST /publish).
        with start("examples.blog:app") as server:
            for mode in ("sat", "rate"):
                log(f"  {name}: REST -> EVENT ({mode})")
                with latency_pinning(server) if mode == "rate" else contextlib.nullcontext():
                    detail[f"rest {mode}"] = rest_to_event(node, server, mode, args)
    for n in args.idle if "idle" in args.only else []:
        with start() as server:
            log(f"  {name}: idle sessions {n}")
            detail[f"idle {n}"] = idle_sessions(node, server, n, args)
    if name == "sandstone" and "cross" in args.only:
        detail.update(cross_node(node, args))
    if name == "sandstone" and "workers" in args.only:
        detail.update(workers_scaleout(node, args))
    return detail


def scenario_metrics(label: str, scenario: str, r: dict[str, Any]) -> dict[str, float | None]:
    """The table's figures of one fan-out or REST scenario result, labelled ``label``."""
    metrics: dict[str, float | None] = {}
    if scenario.startswith("sat "):
        metrics[f"{label}: EVENTs/s"] = r["events_per_s"]
        metrics[f"{label}: publishes/s"] = r["acked_per_s"]
        if "events_per_publish" in r:
            metrics[f"{label}: EVENTs per publish"] = r["events_per_publish"]
    elif scenario.startswith("lat "):
        for p in ("p50", "p90", "p99", "max"):
            metrics[f"{label}: latency {p} ms"] = r["latency_ms"][p]
    elif scenario == "rest sat":
        rest = f"{label} ({r['inflight']} in flight)"
        metrics[f"{rest}: requests/s"] = r["acked_per_s"]
        metrics[f"{rest}: EVENTs/s"] = r["events_per_s"]
        if "events_per_request" in r:
            metrics[f"{rest}: EVENTs per request"] = r["events_per_request"]
    return metrics


def flat(detail: dict[str, Any]) -> dict[str, float | None]:
    """The figures of the table, from one server's run."""
    metrics: dict[str, float | None] = {}
    for key, r in detail.items():
        if key.startswith(("sat ", "lat ")) or key == "rest sat":
            metrics.update(scenario_metrics(key, key, r))
        elif key == "rest rate":
            for p in ("p50", "p99"):
                metrics[f"rest {r['rate']:g}/s: delivery {p} ms"] = r["latency_ms"][p]
        elif key.startswith("idle "):
            metrics[f"{key}: KiB/session"] = r["kib_per_session"]
            metrics[f"{key}: sessions/s"] = r["sessions_per_s"]
    return metrics


def flat_scaleout(detail: dict[str, Any]) -> dict[str, float | None]:
    """The figures of the scale-out table: "<group> <single-node metric>", e.g. "cross sat S=100: EVENTs/s"
    (group "cross sat S=100", single-node metric "sat S=100: EVENTs/s"), plus the CPU of each process."""
    metrics: dict[str, float | None] = {}
    for key, r in detail.items():
        group, _, scenario = key.partition(" ")
        if group not in ("cross",) and not group.startswith("workers="):
            continue
        metrics.update(scenario_metrics(key, scenario, r))
        for label, v in r.get("cpu_percent", {}).items():
            metrics[f"{key}: CPU {label} %"] = v
        metrics[f"{key}: CPU generators %"] = round(sum(r["generator_cpu_percent"]), 1)
        metrics[f"{key}: CPU machine %"] = r["machine_cpu_percent"]
    return metrics


def scaleout_medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    values: dict[str, list[float]] = {}
    for run in runs:
        for k, v in flat_scaleout(run.get("sandstone", {})).items():
            if v is not None:
                values.setdefault(k, []).append(v)
    return {k: round(statistics.median(v), 3) for k, v in values.items()}


def medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in SERVERS:
        values: dict[str, list[float]] = {}
        for run in runs:
            for k, v in flat(run.get(name, {})).items():
                if v is not None:
                    values.setdefault(k, []).append(v)
        out[name] = {k: round(statistics.median(v), 3) for k, v in values.items()}
    return out


def lower_bounds(runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Where a generator was (near) saturated or the server was not the bottleneck at saturation."""
    notes = set()
    for run in runs:
        for name, detail in run.items():
            for key, r in detail.items():
                if r.get("lower_bound"):
                    notes.add(
                        f"{name} {key}: a generator process reached "
                        f"{max(r['generator_cpu_percent']):.0f}% of a core: the figure is a lower bound"
                    )
                if (check := r.get("delivery_check")) and not check["exact"]:
                    notes.add(
                        f"{name} {key}: DELIVERY CHECK FAILED: {check['events']} EVENTs for "
                        f"{check['publications']} publications x {check['subscribers']} subscribers "
                        f"({check['sent']} sent, {check['errors']} errors)"
                    )
                if "server_saturated" in r and not r["server_saturated"] and not r.get("lower_bound"):
                    if "busiest_process" in r:
                        notes.add(
                            f"{name} {key}: the busiest sandstone process ({r['busiest_process']}) used only "
                            f"{r['busiest_cpu_percent']:.0f}% of a core (machine: "
                            f"{r['machine_cpu_percent'] or 0:.0f}% of {(os.cpu_count() or 1) * 100}%): "
                            "something else (the generators, the other processes, the bus) limited it; "
                            "a lower bound"
                        )
                    else:
                        notes.add(
                            f"{name} {key}: the server used only {r['server_cpu_percent']:.0f}% of a core: "
                            "something else (the generators, the other core's load) limited it; a lower bound"
                        )
    return sorted(notes)


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def table(med: dict[str, dict[str, float | None]], markdown: bool = False) -> str:
    keys: list[str] = []
    for name in SERVERS:
        keys.extend(k for k in med[name] if k not in keys)
    header = ["metric (median)", "sandstone", "crossbar", "raw", "sandstone/crossbar", "sandstone/raw"]
    rows = [header]
    for k in keys:
        s, c, r = (med[n].get(k) for n in SERVERS)
        rows.append(
            [
                k,
                fmt(s),
                fmt(c),
                fmt(r),
                f"{s / c:.2f}" if s is not None and c else "-",
                f"{s / r:.2f}" if s is not None and r else "-",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    )


def scaleout_table(
    scale: dict[str, float | None], med: dict[str, dict[str, float | None]], markdown: bool = False
) -> str:
    """sandstone on the Redis bus: each figure, the single-node figure of the same run (``sat``/``lat``/
    ``rest`` against sandstone alone, no Redis), their ratio, the speed-up of the workers rows over
    workers=1, and on each group's first row the CPU (medians, % of one core) of its processes."""
    single = med.get("sandstone", {})
    header = [
        "metric (median)",
        "sandstone",
        "1 node, no Redis",
        "vs 1 node",
        "vs workers=1",
        "CPU % of a core",
    ]
    rows = [header]
    groups: list[str] = []
    for k in scale:
        group = k.split(":")[0].split(" (")[0]
        if group not in groups:
            groups.append(group)
    for group in groups:
        keys = [k for k in scale if k.split(":")[0].split(" (")[0] == group and ": CPU " not in k]
        cpu = ", ".join(
            f"{k.rsplit(': CPU ', 1)[1].removesuffix(' %')} {'-' if v is None else f'{v:.0f}'}"
            for k, v in scale.items()
            if k.startswith(f"{group}: CPU ")
        )
        for i, k in enumerate(keys):
            v = scale[k]
            base = k.split(" ", 1)[1]
            ref = single.get(base)
            one = scale.get(f"workers=1 {base}") if k.startswith("workers=") else None
            rows.append(
                [
                    k,
                    fmt(v),
                    fmt(ref),
                    f"{v / ref:.2f}" if v is not None and ref else "-",
                    f"{v / one:.2f}"
                    if v is not None and one and k.endswith("/s") and k != f"workers=1 {base}"
                    else "-",
                    cpu if i == 0 else "",
                ]
            )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)),
                row[-1],
            ]
        )
        for row in rows
    )


def plot(med: dict[str, dict[str, float | None]], args: argparse.Namespace, path: Path) -> str | None:
    """Latency percentiles vs publish rate, one line per server and percentile. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no plot: matplotlib is missing (install it with 'pip install matplotlib')")
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"p50": ":", "p90": "--", "p99": "-"}
    colors = {"sandstone": "tab:orange", "crossbar": "tab:blue", "raw": "tab:gray"}
    rates = args.lat_rates
    for name in SERVERS:
        for p, style in styles.items():
            ys = [med[name].get(f"lat {r:g}/s: latency {p} ms") for r in rates]
            pts = [(r * args.lat_subscribers, y) for r, y in zip(rates, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, marker="o", color=colors[name], label=f"{name} {p}")
    ax.set_xlabel(f"EVENTs/s delivered (publishes/s x {args.lat_subscribers} subscribers)")
    ax.set_ylabel("publish -> receive latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Fan-out latency, medians of {args.runs} run(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return shown(path)


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": node,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_markdown(
    results: dict[str, Any],
    med: dict[str, dict[str, float | None]],
    scale: dict[str, float | None],
    notes: list[str],
) -> Path:
    m = results["machine"]
    v = results["versions"]
    lines = [
        "# Benchmarks",
        "",
        "sandstone vs Crossbar.io vs a raw Autobahn/Twisted fan-out of one pre-serialized frame (the "
        "ceiling), same machine, same run, generated by `bench/runner.py` (see bench/README.md for what "
        "each scenario does and how to read it).",
        "",
        f"Latest run: {results['timestamp']}, {results['settings']['runs']} run(s) per server, alternating "
        f"(medians){' — **quick smoke run, not a measurement**' if results['settings']['quick'] else ''}; "
        f"sandstone commit `{(results['sandstone_commit'] or '?')[:10]}`"
        + (
            " with uncommitted changes in the measured working tree: "
            + ", ".join(f"`{c.strip()}`" for c in results["sandstone_uncommitted_changes"])
            if results["sandstone_uncommitted_changes"]
            else ""
        )
        + ".",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['platform']}; "
        f"Python {m['python']} (sandstone, raw), Crossbar {v.get('crossbar')} on its own Python 3.11 venv; "
        f"Node {m['node']} for the "
        "load generators. Everything (servers and generators) shares the cores"
        + (
            f", except in the latency scenarios (`lat`, `rest` at a fixed rate): there the server runs on "
            f"CPU {pins['server']} and the generators on CPU {pins['generators']} (`--pin`)."
            if (pins := results.get("latency_pinning"))
            else "."
        ),
        "",
        "Command:",
        "",
        f"    {results['command']}",
        "",
    ]
    if any(med.values()):
        lines += [table(med, markdown=True), ""]
    if scale:
        lines += [
            "sandstone on the Redis bus (no Crossbar or raw counterpart): `cross` = publisher on node A, "
            "subscribers on node B, both on one redis-server; `workers=N` = `--redis URL --workers N`, "
            "every client on the one port. `1 node, no Redis` is the same figure against sandstone alone "
            "in the same run; `vs 1 node` their ratio (rates: higher is better; latencies: lower is "
            "better); `vs workers=1` the speed-up of N workers over one. CPU in % of one core, medians. "
            f"Redis client: txredisapi {v.get('txredisapi')}, hiredis "
            f"{v.get('hiredis') or 'not installed (pure-Python reply parser)'}.",
            "",
            scaleout_table(scale, med, markdown=True),
            "",
        ]
    lines += [
        f"Raw results: `{results['json']}`" + (f"; plot: `{results['plot']}`" if results.get("plot") else ""),
        "",
    ]
    if results.get("plot"):
        lines += [f"![latency vs load]({results['plot']})", ""]
    if notes:
        lines += ["Notes (lower bounds):", ""] + [f"- {n}" for n in notes] + [""]
    path = REPO / "BENCHMARKS.md"
    path.write_text("\n".join(lines))
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    floats = lambda text: [float(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per server (alternating); medians are reported"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke: short windows, fewer sizes")
    parser.add_argument(
        "--sandstone-arg",
        dest="sandstone_args",
        action="append",
        default=[],
        help="an extra option for twistd sandstone (repeat it; e.g. --sandstone-arg=--message-time-slice=0)",
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="scenarios: sat,lat,rest,idle,cross,workers"
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="servers: sandstone,crossbar,raw")
    parser.add_argument("--subscribers", type=ints, default=[1, 10, 100, 1000], help="fan-out saturation S")
    parser.add_argument("--lat-rates", type=floats, default=[100, 200, 400, 800], help="publishes/s")
    parser.add_argument("--lat-subscribers", type=int, default=100)
    parser.add_argument(
        "--lat-procs", type=int, default=1, help="subscriber processes of the latency and REST scenarios"
    )
    parser.add_argument("--rest-subscribers", type=int, default=100)
    parser.add_argument("--rest-inflight", type=int, default=16)
    parser.add_argument("--rest-rate", type=float, default=200.0)
    parser.add_argument("--idle", type=ints, default=[1000, 5000, 10000], help="idle session counts")
    parser.add_argument("--idle-concurrency", type=int, default=50, help="handshakes at a time per process")
    parser.add_argument(
        "--window", type=int, default=16, help="acknowledged PUBLISHes in flight at saturation"
    )
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument(
        "--scale-subscribers", type=int, default=100, help="S of the cross and workers fan-out saturation"
    )
    parser.add_argument(
        "--cross-rate", type=float, default=100.0, help="publishes/s of the cross-node latency scenario"
    )
    parser.add_argument(
        "--worker-counts", type=ints, default=[1, 2], help="--workers N of the workers scenario"
    )
    parser.add_argument("--sub-procs", type=int, default=2, help="subscriber processes when S >= 100")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario")
    parser.add_argument("--crossbar-python", default=CROSSBAR_PYTHON)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="in the latency scenarios (lat, REST at a fixed rate) run the server under test on the first"
        " CPU and the load generators on the others",
    )
    parser.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    args.servers = [s for s in args.servers.split(",") if s]
    if unknown := set(args.only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {sorted(unknown)}")
    if unknown := set(args.servers) - set(SERVERS):
        parser.error(f"unknown server(s) {sorted(unknown)}")
    if "sandstone" not in args.servers and (skipped := [s for s in args.only if s in SCALEOUT]):
        log(f"note: {','.join(skipped)} run against sandstone only, which --servers leaves out")
    if args.quick:
        defaults = {
            "subscribers": [1, 100, 1000],
            "lat_rates": [100, 400],
            "idle": [1000],
            "warmup": 1.0,
            "duration": 2.0,
        }
        for k, v in defaults.items():
            if getattr(args, k) == parser.get_default(k):
                setattr(args, k, v)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it (10,000 idle sessions)
    node = ensure_node()
    if args.pin:
        PIN_PLAN.update(pin_plan(sorted(os.sched_getaffinity(0))))
        log(
            f"latency scenarios pinned: servers on CPU {PIN_PLAN['server']},"
            f" load generators on CPU(s) {PIN_PLAN['generators']}"
        )
    cb = ensure_crossbar(args.crossbar_python) if "crossbar" in args.servers else None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    from importlib.metadata import version

    results: dict[str, Any] = {
        "benchmark": "runner",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "bench/runner.py", *argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "latency_pinning": dict(PIN_PLAN),
        "sandstone_commit": git_commit(),
        "sandstone_uncommitted_changes": uncommitted_changes(),
        "versions": {
            "twisted": version("twisted"),
            "autobahn": version("autobahn"),
            "crossbar": crossbar_version(cb) if cb else None,
            # the Redis bus's client; with hiredis importable it parses replies in C (see bench/README.md)
            "txredisapi": version("txredisapi"),
            "hiredis": optional_version("hiredis"),
        },
        "runs": [],
    }
    started = time.monotonic()
    for i in range(args.runs):
        run: dict[str, dict[str, Any]] = {}
        for name in args.servers:
            log(f"run {i + 1}/{args.runs}: {name}")
            run[name] = run_server(name, node, cb, args)
        results["runs"].append(run)
    med = medians(results["runs"])
    scale = scaleout_medians(results["runs"])
    notes = lower_bounds(results["runs"])
    results["medians"] = med
    results["medians_scaleout"] = scale
    results["notes"] = notes
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.output_dir / f"runner-{stamp}.json"
    results["json"] = shown(json_path)
    if "lat" in args.only:
        results["plot"] = plot(med, args, args.output_dir / f"runner-{stamp}.png")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    if any(med.values()):
        print(table(med))
    if scale:
        print()
        print(scaleout_table(scale, med))
    for n in notes:
        print(f"note: {n}")
    if not args.no_markdown:
        print(f"wrote {write_markdown(results, med, scale, notes).relative_to(REPO)}")
    print(f"results: {results['json']}" + (f", plot: {results['plot']}" if results.get("plot") else ""))
    print(f"({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; everything stopped")
        sys.exit(130)
