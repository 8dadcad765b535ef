"""WAMP v1 next to v2: fan-out to v1 subscribers (subprotocol ``wamp``, AutobahnJS 0.8's) against fan-out to
v2 subscribers (``wamp.2.json``) on the same server, in one command:

    python bench/wamp1.py [--runs 5] [--subscribers 100] [--duration 5] [--warmup 2]

One ``twistd -n sandstone`` (the open router, no rate limits, as bench/runner.py starts it) on a free
127.0.0.1 port serves every run. Each run measures both protocols, alternating which goes first (v1 then v2,
then v2 then v1...): S subscribers of ``bench.fanout`` in ``--sub-procs`` Node.js processes
(bench/load/wamp.js, ``protocol: "wamp"`` for v1) and one v2 publisher keeping ``--window`` acknowledged
PUBLISHes in flight (~100-byte kwargs payload: v2 subscribers get ``[36, sub, pub, {}, [], {...}]``, v1
subscribers ``[8, "bench.fanout", {...}]``). The figure is the EVENTs/s all subscribers received during the
window. It prints the per-run figures and the medians, the v1/v2 ratio of the medians, and writes
``bench/results/wamp1-<timestamp>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import runner  # noqa: E402  (bench/ is not a package: the sibling scripts import each other this way)
from cluster_latency import git_commit, uncommitted_changes  # noqa: E402

PROTOCOLS = {"v1": "wamp", "v2": "wamp.2.json"}
TOPIC = "bench.fanout"


def parse_args(argv: list[str]) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=5, help="runs; each measures v1 and v2 once (default 5)")
    parser.add_argument("--subscribers", type=int, default=100, help="subscribers per measurement")
    parser.add_argument("--sub-procs", type=int, default=2, help="Node.js processes for the subscribers")
    parser.add_argument("--window", type=int, default=16, help="acknowledged PUBLISHes in flight")
    parser.add_argument("--payload-bytes", type=int, default=100, help="approximate payload size")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured at the start")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--output-dir", type=Path, default=runner.RESULTS_DIR)
    return parser.parse_args(argv)


def fanout(node: str, server: runner.Server, version: str, args: argparse.Namespace) -> dict[str, Any]:
    """One saturation measurement with every subscriber speaking ``version`` ("v1" or "v2")."""
    extra: dict[str, Any] = {"topic": TOPIC, "mode": "count"}
    if version == "v1":
        extra["protocol"] = "wamp"
    subs = runner.sub_configs(server, args.subscribers, args.sub_procs, **extra)
    pub = runner.pub_config(server, TOPIC, mode="sat", window=args.window, payload_bytes=args.payload_bytes)
    with runner.generators(node, [*subs, pub], 120) as gens:
        measured = runner.measure(server.cpu, gens, gens[-1], args.warmup, args.duration)
    result = runner.summarize_generators(measured)
    acked = result["acked_per_s"]
    result["events_per_publish"] = round(result["events_per_s"] / acked, 2) if acked else None
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    node = runner.ensure_node()
    runs: list[dict[str, dict[str, Any]]] = []
    started = time.strftime("%Y%m%dT%H%M%S")
    with runner.sandstone(None) as server:
        for run in range(args.runs):
            order = ("v1", "v2") if run % 2 == 0 else ("v2", "v1")
            figures: dict[str, dict[str, Any]] = {}
            for version in order:
                figures[version] = fanout(node, server, version, args)
                runner.log(
                    f"run {run + 1}/{args.runs} {version} ({PROTOCOLS[version]}): "
                    f"{figures[version]['events_per_s']:,.0f} EVENTs/s, "
                    f"server CPU {figures[version]['server_cpu_percent']}%, "
                    f"generators {figures[version]['generator_cpu_percent']}"
                )
            runs.append(figures)
    medians = {
        version: statistics.median(run[version]["events_per_s"] for run in runs) for version in PROTOCOLS
    }
    ratio = medians["v1"] / medians["v2"] if medians["v2"] else None
    print()
    print(f"fan-out to {args.subscribers} subscribers, medians of {args.runs} runs (EVENTs/s):")
    for version, protocol in PROTOCOLS.items():
        each = ", ".join(f"{run[version]['events_per_s']:,.0f}" for run in runs)
        print(f"  {version} ({protocol:11}) {medians[version]:>12,.0f}   runs: {each}")
    if ratio is not None:
        print(f"  v1 / v2: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")
    lower = [v for run in runs for v, r in run.items() if r["lower_bound"]]
    if lower:
        print(f"  note: a generator process near a full core in {len(lower)} measurement(s): lower bounds")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"wamp1-{started}.json"
    document = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "commit": git_commit(),
        "uncommitted_changes": uncommitted_changes(),
        "runs": runs,
        "medians_events_per_s": medians,
        "v1_over_v2": ratio,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"  results: {runner.shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
