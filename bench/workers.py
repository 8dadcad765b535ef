"""Workers benchmark: what ``twistd sandstone --workers 2`` gains over one process, for REST -> EVENT fan-out.

Run by hand from anywhere (it is not part of the test suite)::

    python bench/workers.py [--workers 1,2] [--subscribers 40] [--rate 50] [--duration 10]

For each worker count it starts a redis-server and ``twistd -n sandstone --app examples.blog:app --redis URL
--workers N`` (N = 1 too, so that both runs pay for the bus), and runs the load generator of
``cluster_latency.py`` twice against it: the latency phase (POSTs at a fixed rate) and the saturation phase
(``--inflight`` POSTs in flight). Subscribers and POSTs all use the one port; the kernel spreads the
connections over the workers. CPU of the generator, of every worker and of redis-server is sampled over
each window. Results: a table on stdout and ``bench/results/workers-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "cluster_latency", Path(__file__).with_name("cluster_latency.py")
)
assert _spec is not None and _spec.loader is not None
cl = importlib.util.module_from_spec(_spec)
sys.modules["cluster_latency"] = cl
_spec.loader.exec_module(cl)

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


@contextlib.contextmanager
def server(workers: int, redis_url: str) -> Iterator[tuple[Any, int, dict[str, int]]]:
    """``twistd sandstone --workers N``: (child, port, {"worker K": pid}) once every worker is on the bus."""
    port = cl.free_port()
    argv = [*cl.twistd_argv(), "-n", "--pidfile=", "sandstone", "--app", cl.APP]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--redis", redis_url, "--workers", str(workers)]
    child = cl.Child(f"twistd --workers {workers}", argv)
    try:
        cl.wait_for(lambda: cl.accepts(port), child, "not listening")
        cl.wait_for(
            lambda: child.output().count("accepting connections") >= workers - 1,
            child,
            "workers not accepting",
        )
        cl.wait_for_cluster(redis_url, [child] * workers)
        pids = {"worker 1": child.pid}
        pids.update({f"worker {n}": int(pid) for n, pid in STARTED.findall(child.output())})
        yield child, port, pids
    finally:
        child.stop()


def run(args: argparse.Namespace, workers: int, tag: str) -> dict[str, Any]:
    with cl.redis_server() as (redis_child, redis_url), server(workers, redis_url) as (child, port, pids):
        base = cl.generator_config(args, port, port, {**pids, "redis": redis_child.pid})
        result: dict[str, Any] = {"workers": workers}
        for mode in ("latency", "saturation"):
            print(f"  {workers} worker(s): {mode}", file=sys.stderr, flush=True)
            result[mode] = cl.run_generator({**base, "mode": mode, "tag": f"{tag}-w{workers}-{mode[:3]}"})
        result["noteworthy_log_lines"] = child.noteworthy()[:20]
        return result


def table(results: dict[str, Any]) -> str:
    runs = results["runs"]
    header = ["", *(f"{r['workers']} worker(s)" for r in runs)]
    rows: list[list[str]] = [header]
    s = results["settings"]
    titles = {
        "latency": f"fixed rate {s['rate']:g} POST/s, {s['subscribers']} subscribers, {s['duration']:g} s",
        "saturation": f"saturation, {s['inflight']} POSTs in flight, {s['subscribers']} subscribers",
    }
    for phase, title in titles.items():
        rows.append([title] + [""] * len(runs))

        def add(label: str, get: Any, phase: str = phase) -> None:
            rows.append([f"  {label}", *(cl.fmt(get(r[phase])) for r in runs)])

        for p in ("p50", "p99"):
            add(f"latency {p} (ms)", lambda r, p=p: r["latency_ms"][p])
        add("all subscribers got it p99 (ms)", lambda r: r["all_subscribers_ms"]["p99"])
        add("POSTs/s", lambda r: r["posts"]["per_s_in_window"])
        add("EVENTs/s at subscribers", lambda r: r["events"]["per_s_in_window"])
        add("exactly once", lambda r: r["events"]["exactly_once"])
        names = sorted({k for r in runs for k in r[phase]["cpu_percent_of_one_core"]})
        for name in names:
            add(f"CPU {name} (% of 1 core)", lambda r, name=name: r["cpu_percent_of_one_core"].get(name))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--subscribers", type=int, default=40)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain-quiet", type=float, default=5.0)
    parser.add_argument("--output-dir", type=Path, default=cl.RESULTS_DIR)
    args = parser.parse_args(argv)
    tag = f"wbench{os.getpid()}"
    results: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "commit": cl.git_commit(),
        "machine": {"cores": os.cpu_count()},
        "runs": [run(args, int(n), tag) for n in args.workers.split(",")],
    }
    print(table(results))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"workers-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    ok = all(
        r[phase]["events"]["exactly_once"] for r in results["runs"] for phase in ("latency", "saturation")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
