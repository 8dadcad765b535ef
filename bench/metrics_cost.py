"""What ``--metrics`` costs: fan-out saturation (and optionally REST -> EVENT) with and without it.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/metrics_cost.py [--runs 5] [--subscribers 100] [--rest] [--scrape-interval 1]
                                           [--baseline TREE]

One ``twistd -n sandstone`` per case (the open router, the runner's "limits off" options; ``examples.blog``
for REST), alternated run by run so that the machine's other load hits both alike: "metrics off", then
"metrics on" (``--metrics tcp:PORT:interface=127.0.0.1``, scraped every ``--scrape-interval`` seconds by
this script while the generators run: much more often than Prometheus's usual 15 s). Reports the medians
of EVENTs/s, of the server's CPU and of its CPU time per EVENT (the figure least moved by a busy machine),
and the medians of the on/off ratios of the runs made back to back. ``--baseline TREE`` adds a third case:
metrics off with sandstone imported from another source tree (``git archive`` of the commit before the
metrics), for what the counting that is always on costs. Results: a table on stdout and
``bench/results/metrics_cost-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_latency import free_port, run_header  # noqa: E402
from runner import RESULTS_DIR, Server, ensure_node, fanout_saturation, rest_to_event, sandstone  # noqa: E402


class Scraper(threading.Thread):
    """GETs ``url`` every ``interval`` seconds until stopped; counts the answers."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.stopped = threading.Event()
        self.scrapes = 0
        self.failures = 0
        self.bytes = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.bytes = len(response.read())
                    self.scrapes += 1
            except OSError:
                self.failures += 1


@contextlib.contextmanager
def source_tree(path: str | None) -> Iterator[None]:
    """Servers started meanwhile import sandstone from ``path`` (first on their PYTHONPATH), if given."""
    if path is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (path, before)))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def one_case(
    node: str, args: argparse.Namespace, metrics: bool, rest: bool, tree: str | None = None
) -> dict[str, Any]:
    port = free_port()
    extra = ("--metrics", f"tcp:{port}:interface=127.0.0.1") if metrics else ()
    with source_tree(tree), sandstone("examples.blog:app" if rest else None, extra_args=extra) as server:
        scraper = Scraper(f"http://127.0.0.1:{port}/metrics", args.scrape_interval) if metrics else None
        if scraper is not None:
            scraper.start()
        try:
            result = run_scenario(node, server, args, rest)
        finally:
            if scraper is not None:
                scraper.stopped.set()
                scraper.join()
    if scraper is not None:
        result["scrapes"] = scraper.scrapes
        result["scrape_failures"] = scraper.failures
        result["scrape_bytes"] = scraper.bytes
    events, cpu = result.get("events_per_s"), result.get("server_cpu_percent")
    # microseconds of server CPU per EVENT delivered
    result["cpu_us_per_event"] = round(cpu * 1e4 / events, 3) if events and cpu else None
    return result


def run_scenario(node: str, server: Server, args: argparse.Namespace, rest: bool) -> dict[str, Any]:
    if rest:
        return rest_to_event(node, server, "sat", args)
    return fanout_saturation(node, server, args.subscribers, args)


def paired_median(pairs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> float | None:
    """The median over the pairs (this case, metrics off) of this case's ``key`` / metrics off's."""
    ratios = [
        case[key] / off[key]
        for case, off in pairs
        if isinstance(case.get(key), int | float) and isinstance(off.get(key), int | float) and off[key]
    ]
    return round(statistics.median(ratios), 4) if ratios else None


def median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--window", type=int, default=16, help="acknowledged PUBLISHes in flight")
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--rest", action="store_true", help="also REST -> EVENT saturation (examples.blog)")
    parser.add_argument(
        "--baseline",
        metavar="TREE",
        help="also metrics off with sandstone imported from TREE (e.g. a `git archive` of the commit before "
        "the metrics), to see what the counting that is always on costs",
    )
    args = parser.parse_args(argv)
    # what runner's scenarios read
    args.sub_procs = 2
    args.lat_procs = 1
    args.rest_subscribers = args.subscribers
    args.rest_inflight = 16
    args.rest_rate = 200.0
    node = ensure_node()
    header = run_header("metrics_cost", argv, args)
    scenarios = ["sat", "rest"] if args.rest else ["sat"]
    states = ("off", "on", "base") if args.baseline else ("off", "on")
    runs: dict[str, list[dict[str, Any]]] = {
        f"{scenario} {state}": [] for scenario in scenarios for state in states
    }
    started = time.monotonic()
    for n in range(1, args.runs + 1):
        for scenario in scenarios:
            # alternate which one goes first, so that a drift in the machine's load favours neither
            order = list(states) if n % 2 else list(reversed(states))
            for state in order:
                case = f"{scenario} {state}"
                print(f"run {n}/{args.runs}: {case}", flush=True)
                tree = args.baseline if state == "base" else None
                runs[case].append(one_case(node, args, state == "on", scenario == "rest", tree))
    print()
    keys = ("events_per_s", "server_cpu_percent", "cpu_us_per_event")
    print(f"{'case':12} " + " ".join(f"{key:>20}" for key in keys))
    medians = {case: {key: median(results, key) for key in keys} for case, results in runs.items()}
    for case, values in medians.items():
        print(f"{case:12} " + " ".join(f"{'-' if v is None else v:>20}" for v in values.values()))
    # Ratios of the cases run back to back (same run number): the machine's load drifts less within a pair
    # than across the whole series. Their medians, per scenario.
    ratios: dict[str, dict[str, float | None]] = {}
    for scenario in scenarios:
        for state in states[1:]:
            pairs = list(zip(runs[f"{scenario} {state}"], runs[f"{scenario} off"], strict=True))
            name = f"{scenario} {state} vs off"
            ratios[name] = {key: paired_median(pairs, key) for key in ("events_per_s", "cpu_us_per_event")}
            ratio = ratios[name]
            print(
                f"{name}: EVENTs/s x{ratio['events_per_s']}, CPU per EVENT x{ratio['cpu_us_per_event']} "
                "(medians of the paired runs' ratios)"
            )
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"metrics_cost-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {**header, "args": vars(args), "runs": runs, "medians": medians, "ratios": ratios}, indent=1
        )
    )
    print(f"results: {path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
