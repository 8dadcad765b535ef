"""Fairness benchmark: does one session flooding the router starve another one?

Run by hand (not part of the test suite)::

    .venv/bin/python bench/fairness.py [--runs 3] [--duration 4] [--pin]

One ``twistd -n sandstone`` (the open router, no rate limits), the Node generators of bench/runner.py:

- **flooder**: one session keeping ``--window`` (100) acknowledged PUBLISHes in flight to ``flood``, which
  ``--flood-subscribers`` (100) sessions receive;
- **second publisher**: one session publishing ``--rate`` (50) PUBLISHes/s to ``news``, which
  ``--news-subscribers`` (10) sessions receive, measuring publish -> receive latency.

Cases, alternated run by run (medians reported): the flooder alone and the flooder with the second publisher,
for each ``--message-time-slice`` of ``--slices`` (default: 5 ms, sandstone's, and 0: no slicing, to see what
fairness costs and gives). Also the
fan-out saturation of bench/runner.py (S=100) with sandstone's default options against the runner's
"limits off" options: the figure users see must equal the other within noise.
Results: a table on stdout and ``bench/results/fairness-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_latency import run_header  # noqa: E402
from runner import (  # noqa: E402
    PIN_PLAN,
    RESULTS_DIR,
    Server,
    ensure_node,
    fanout_saturation,
    generators,
    latency_pinning,
    pin_plan,
    pub_config,
    sandstone,
    sub_configs,
    subscriber_latency,
)


def flood(node: str, server: Server, args: argparse.Namespace, second: bool) -> dict[str, Any]:
    """One window: the flooder (and the second publisher when ``second``); rates and the news latency."""
    configs = [
        *sub_configs(server, args.flood_subscribers, 1, topic="flood", mode="count"),
        pub_config(server, "flood", mode="sat", window=args.window, payload_bytes=args.payload_bytes),
    ]
    if second:
        configs += [
            *sub_configs(server, args.news_subscribers, 1, topic="news", mode="latency", samples=False),
            pub_config(server, "news", mode="rate", rate=args.rate, payload_bytes=args.payload_bytes),
        ]
    with generators(node, configs, 120) as gens:
        publishers = [g for g in gens if g.config["role"] == "pub"]
        for pub in publishers:
            pub.send("go")
        time.sleep(args.warmup)
        cpu0, t0 = server.cpu(), time.perf_counter()
        for g in gens:
            g.send("start")
        time.sleep(args.duration)
        for g in gens:
            g.send("stop")
        results = [g.read(30) for g in gens]
        wall = time.perf_counter() - t0
        cpu = round((server.cpu() - cpu0) / wall * 100, 1)
        for pub in publishers:
            pub.send("halt")
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for g, r in zip(gens, results, strict=True):
        by_topic.setdefault(f"{g.config['role']}:{g.config['topic']}", []).append(r)
    out: dict[str, Any] = {
        "flood_events_per_s": round(sum(r["events_per_s"] for r in by_topic["sub:flood"]), 1),
        "flood_acked_per_s": round(by_topic["pub:flood"][0]["acked_per_s"], 1),
        "server_cpu_percent": cpu,
        "errors": sum(r["errors"] for r in results),
        "generator_cpu_percent": [round(r["cpu_percent"], 1) for r in results],
    }
    if second:
        out["news_latency_ms"] = subscriber_latency({"generators": by_topic["sub:news"]})
        out["news_acked_per_s"] = round(by_topic["pub:news"][0]["acked_per_s"], 1)
    return out


def median(runs: list[dict[str, Any]], path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return round(statistics.median(values), 2) if values else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--flood-subscribers", type=int, default=100)
    parser.add_argument("--news-subscribers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument(
        "--slices",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.005, 0.0],
        help="values of --message-time-slice to compare, in seconds (0: no slicing; default 0.005,0)",
    )
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, generators on the others")
    parser.add_argument("--no-saturation", action="store_true", help="skip the default-vs-off fan-out check")
    args = parser.parse_args(argv)
    args.sub_procs = 1
    node = ensure_node()
    if args.pin:
        PIN_PLAN.update(pin_plan(sorted(os.sched_getaffinity(0))))
    header = run_header("fairness", argv, args)
    cases: dict[str, tuple[tuple[str, ...], bool]] = {}
    for time_slice in args.slices:
        label = "no slice" if time_slice == 0 else f"slice {time_slice * 1000:g} ms"
        extra = ("--message-time-slice", str(time_slice))
        cases[f"{label}: flooder alone"] = (extra, False)
        cases[f"{label}: flooder + second"] = (extra, True)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    saturation: dict[str, list[dict[str, Any]]] = {"default options": [], "limits off": []}
    started = time.monotonic()
    for n in range(1, args.runs + 1):
        for case, (extra, second) in cases.items():
            print(f"run {n}/{args.runs}: {case}", flush=True)
            with sandstone(None, extra_args=extra) as server, latency_pinning(server):
                runs[case].append(flood(node, server, args, second))
        if not args.no_saturation:
            for label, default in (("default options", True), ("limits off", False)):
                print(f"run {n}/{args.runs}: fan-out S=100, {label}", flush=True)
                with sandstone(None, default_limits=default) as server:
                    saturation[label].append(fanout_saturation(node, server, 100, args))
    rows = []
    for case, results in runs.items():
        rows.append(
            (
                case,
                median(results, "flood_events_per_s"),
                median(results, "news_latency_ms.p50"),
                median(results, "news_latency_ms.p99"),
                median(results, "news_latency_ms.max"),
                median(results, "server_cpu_percent"),
            )
        )
    print()
    titles = ("flood EVENTs/s", "news p50 ms", "news p99 ms", "news max ms", "CPU %")
    print(f"{'case':30} " + " ".join(f"{title:>15}" for title in titles))
    for row in rows:
        print(f"{row[0]:30} " + " ".join(f"{'-' if v is None else v:>15}" for v in row[1:]))
    for slicing in dict.fromkeys(case.split(":")[0] for case in cases):
        alone = median(runs[f"{slicing}: flooder alone"], "flood_events_per_s")
        shared = median(runs[f"{slicing}: flooder + second"], "flood_events_per_s")
        if alone and shared:
            print(f"{slicing}: the flooder keeps {shared / alone:.1%} of its fan-out alone")
    sat = {label: median(results, "events_per_s") for label, results in saturation.items()}
    if all(sat.values()):
        print(
            f"fan-out S=100: default options {sat['default options']:,.0f} EVENTs/s, limits off "
            f"{sat['limits off']:,.0f} EVENTs/s ({sat['default options'] / sat['limits off']:.1%})"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"fairness-{time.strftime('%Y%m%dT%H%M%S')}.json"
    report = {
        **header,
        "args": vars(args),
        "runs": runs,
        "saturation": saturation,
        "medians": [
            dict(
                zip(
                    (
                        "case",
                        "flood_events_per_s",
                        "news_p50_ms",
                        "news_p99_ms",
                        "news_max_ms",
                        "server_cpu_percent",
                    ),
                    row,
                    strict=True,
                )
            )
            for row in rows
        ],
        "saturation_medians": sat,
    }
    path.write_text(json.dumps(report, indent=1))
    print(f"results: {path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
