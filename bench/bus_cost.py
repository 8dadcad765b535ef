"""Bus cost benchmark: Redis messages per forwarded event for a cluster of N sandstone nodes.

Run by hand from anywhere (it is not part of the test suite)::

    .venv/bin/python bench/bus_cost.py [--nodes 2,4,8] [--events 50]

For each N: one throwaway redis-server and N ``twistd sandstone --app examples.blog:app --redis`` nodes on it;
one autobahn-python WAMP client subscribed to ``articles`` on EACH node (so every node has a topic instance);
K ``POST /api/articles`` to node 1. Counted from Redis itself, not from sandstone's internals, so the same
script measures any bus design:

- scripts: ``cmdstat_eval`` and ``cmdstat_evalsha`` calls per event, less the heartbeats' and purges' (at
  the rate of an idle window);
- publishes: ``cmdstat_publish`` calls (``INFO commandstats``) before/after, cross-checked against a
  bench-side observer subscribed with ``PSUBSCRIBE *`` that counts every message per channel;
- receipts (messages Redis delivered to the nodes): for each channel, messages the observer saw x the
  channel's subscribers (``PUBSUB NUMSUB``, read before and after the window; the observer's own pattern
  subscription is not counted). Pattern subscriptions of the nodes (``PUBSUB NUMPAT`` beyond the observer's)
  cannot be attributed to channels: they are reported, and the receipts are then a lower bound.

Every client must get every EVENT exactly once (missing/duplicates reported). Results: a table on stdout
and ``bench/results/bus-cost-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cluster_latency import (
    REALM,
    REPO,
    RESULTS_DIR,
    STARTUP_TIMEOUT,
    TOPIC,
    Child,
    node,
    redis_server,
    run_header,
    wait_for_cluster,
)

CLIENTS_FLAG = "--_clients"


# ---------------------------------------------------------------------------------------------------------
# the client process: one WAMP session per node, every EVENT printed as a line


def clients_main(urls: list[str]) -> None:
    """Subscribe one session to the topic on each URL; print ``joined I`` then ``event I TITLE`` lines."""
    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.twisted.websocket import WampWebSocketClientFactory
    from autobahn.wamp.serializer import JsonSerializer
    from autobahn.wamp.types import ComponentConfig
    from twisted.internet import reactor

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    class Client(ApplicationSession):
        def __init__(self, index: int) -> None:
            super().__init__(ComponentConfig(REALM))
            self.index = index

        def onJoin(self, details: Any) -> Any:
            d = self.subscribe(self.on_event, TOPIC)
            d.addCallback(lambda _: say(f"joined {self.index}"))
            d.addErrback(lambda f: say(f"failed {self.index} {f.getErrorMessage()}"))
            return d

        def on_event(self, *args: Any, **kwargs: Any) -> None:
            payload = args[0] if args else kwargs
            text = payload.get("message", "") if isinstance(payload, dict) else str(payload)
            say(f"event {self.index} {json.dumps(text)}")

        def onDisconnect(self) -> None:
            say(f"disconnected {self.index}")

    for index, url in enumerate(urls):
        factory = WampWebSocketClientFactory(
            lambda i=index: Client(i), url=url, serializers=[JsonSerializer()]
        )
        reactor.connectTCP(factory.host, factory.port, factory)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# the observer: PSUBSCRIBE * on the bench side


class Observer:
    """Counts every message published on the Redis server, per channel, from a thread."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("*")
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.kinds: Counter[tuple[str, str]] = Counter()
        self.last_message = time.monotonic()
        self.running = True
        # Wait for the psubscribe confirmation before anything is measured.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            message = self.pubsub.get_message(timeout=1.0)
            if message and message["type"] == "psubscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the observer's PSUBSCRIBE was not confirmed")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                message = self.pubsub.get_message(timeout=0.2)
            except Exception:  # the connection is closed at the end
                return
            if message and message["type"] == "pmessage":
                channel = message["channel"].decode("utf-8", "replace")
                kind = message_type(message["data"])
                with self.lock:
                    self.counts[channel] += 1
                    self.kinds[(channel, kind)] += 1
                    self.last_message = time.monotonic()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def kinds_snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.kinds)

    def quiet_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last_message

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()
        self.client.close()


def message_type(data: bytes) -> str:
    """Best effort, for the breakdown only: the ``type`` of a JSON object message (sandstone's bus format),
    else ``?``. A signed message may carry its JSON after a prefix: the first ``{`` is tried too."""
    text = data.decode("utf-8", "replace")
    for start in (0, text.find("{")):
        if start < 0:
            continue
        try:
            value = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            return str(value["type"])
    return "?"


def publish_calls(client: Any) -> int:
    """``cmdstat_publish`` calls so far (0 before the first PUBLISH), PUBLISHes made by scripts included."""
    return command_calls(client, "publish")


def command_calls(client: Any, *commands: str) -> int:
    """``cmdstat_<command>`` calls so far, summed over ``commands``."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in commands)


def subscribers(client: Any, channels: list[str]) -> dict[str, int]:
    """``PUBSUB NUMSUB`` for each channel (channel subscriptions only)."""
    if not channels:
        return {}
    return {c.decode("utf-8", "replace"): int(n) for c, n in client.pubsub_numsub(*channels)}


def all_channels(client: Any) -> list[str]:
    """Channels with at least one channel subscriber (``PUBSUB CHANNELS``)."""
    return sorted(c.decode("utf-8", "replace") for c in client.pubsub_channels())


# ---------------------------------------------------------------------------------------------------------
# one run: N nodes


class Events:
    """Reads the client process's lines: joins and EVENTs per client."""

    def __init__(self, child: Child, count: int) -> None:
        self.child = child
        self.joined: set[int] = set()
        self.received: list[Counter[str]] = [Counter() for _ in range(count)]
        self.problems: list[str] = []

    def pump(self, timeout: float = 0.05) -> bool:
        """Read available lines; True if at least one was read."""
        got = False
        while True:
            try:
                line = self.child.lines.get(timeout=timeout if not got else 0)
            except queue.Empty:
                return got
            got = True
            kind, _, rest = line.rstrip("\n").partition(" ")
            index, _, text = rest.partition(" ")
            if kind == "joined":
                self.joined.add(int(index))
            elif kind == "event":
                self.received[int(index)][json.loads(text)] += 1
            else:
                self.problems.append(line.strip())


def post(port: int, title: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"title": title})
        connection.request("POST", "/api/articles", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def title_of(message: str) -> str:
    """The title in examples.blog's broadcast ("An article has just been published: TITLE"): its last word
    pair, since the bench's titles are ``TAG SEQ``."""
    return " ".join(message.split(" ")[-2:])


def run_n(n: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    import redis as redis_lib

    with contextlib.ExitStack() as stack:
        redis_child, url = stack.enter_context(redis_server())
        nodes = [stack.enter_context(node(f"node {i + 1}", url)) for i in range(n)]
        wait_for_cluster(url, [child for child, _ in nodes])
        client = redis_lib.Redis.from_url(url)
        stack.callback(client.close)
        observer = Observer(url)
        stack.callback(observer.close)

        argv = [sys.executable, str(Path(__file__).resolve()), CLIENTS_FLAG]
        argv += [f"ws://127.0.0.1:{port}/ws" for _, port in nodes]
        clients = Child("clients", argv, lines=True)
        stack.callback(clients.stop)
        events = Events(clients, n)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(events.joined) < n:
            events.pump()
            if events.problems or not clients.running or time.monotonic() > deadline:
                raise RuntimeError(f"clients did not all join: {events.problems}\n{clients.output()}")

        # Probe until every client got one (the whole path is up), then let the bus go quiet.
        probe = 0
        port1 = nodes[0][1]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(any("probe" in t for t in r) for r in events.received):
            if time.monotonic() > deadline:
                raise RuntimeError("probe articles did not reach every client")
            probe += 1
            post(port1, f"{tag}-probe {probe}")
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                events.pump()
        settle_end = time.monotonic() + 60
        while observer.quiet_for() < args.quiet and time.monotonic() < settle_end:
            events.pump()

        # Idle window: what the bus carries with no event at all (heartbeats or the like).
        idle_before = observer.snapshot()
        idle_calls = publish_calls(client)
        idle_evals = command_calls(client, "eval", "evalsha")
        time.sleep(args.idle)
        idle_counts = observer.snapshot() - idle_before
        idle_publishes = publish_calls(client) - idle_calls
        idle_evals = command_calls(client, "eval", "evalsha") - idle_evals

        # The measured window.
        channels = all_channels(client)
        subs_before = subscribers(client, channels)
        numpat_before = int(client.pubsub_numpat())
        counts_before = observer.snapshot()
        kinds_before = observer.kinds_snapshot()
        calls_before = publish_calls(client)
        evals_before = command_calls(client, "eval", "evalsha")
        t0 = time.monotonic()
        statuses: Counter[int] = Counter()
        titles = [f"{tag}-n{n} {seq}" for seq in range(1, args.events + 1)]
        for title in titles:
            statuses[post(port1, title)] += 1
            events.pump(0)
        post_s = time.monotonic() - t0

        # Drain: every client has every title (or nothing new for --drain-quiet s), then the bus is quiet.
        wanted = set(titles)
        last_progress = time.monotonic()
        seen = 0
        while True:
            events.pump(0.1)
            done = sum(len(wanted & set(map(title_of, r))) for r in events.received)
            if done != seen:
                seen, last_progress = done, time.monotonic()
            if done >= n * len(titles) or time.monotonic() - last_progress > args.drain_quiet:
                break
        while observer.quiet_for() < args.quiet and time.monotonic() - last_progress < 60:
            events.pump(0.05)
        window_s = time.monotonic() - t0
        calls_after = publish_calls(client)
        evals = command_calls(client, "eval", "evalsha") - evals_before
        idle_evals_in_window = idle_evals / args.idle * window_s if args.idle else 0.0
        counts = observer.snapshot() - counts_before
        kinds = observer.kinds_snapshot() - kinds_before
        subs_after = subscribers(client, sorted(set(all_channels(client)) | set(counts)))
        numpat_after = int(client.pubsub_numpat())
        events.pump(0.2)

        # Delivery check: per client, each measured title exactly once.
        delivery = []
        for index, received in enumerate(events.received):
            per_title: Counter[str] = Counter()
            unexpected = 0
            for message, times in received.items():
                title = title_of(message)
                if title in wanted:
                    per_title[title] += times
                elif "-probe " not in message:
                    unexpected += times
            delivery.append(
                {
                    "client_on": f"node {index + 1}",
                    "received": sum(per_title.values()),
                    "missing": sum(1 for t in titles if per_title[t] == 0),
                    "duplicates": sum(c - 1 for c in per_title.values() if c > 1),
                    "unexpected": unexpected,
                }
            )

        # Receipts: per channel, messages x channel subscribers (stable subscriptions are checked).
        per_channel: dict[str, dict[str, Any]] = {}
        receipts = 0
        for channel, published in sorted(counts.items()):
            subs = subs_before.get(channel, subs_after.get(channel, 0))
            changed = subs_before.get(channel) is not None and subs_before[channel] != subs_after.get(channel)
            per_channel[channel] = {
                "published": published,
                "subscribers": subs,
                "receipts": published * subs,
                "subscribers_changed": changed,
                "by_type": {kind: c for (ch, kind), c in sorted(kinds.items()) if ch == channel},
            }
            receipts += published * subs
        idle_per_s = sum(idle_counts.values()) / args.idle if args.idle else 0.0
        k = len(titles)
        observed = sum(counts.values())
        result = {
            "nodes": n,
            "events": k,
            "http_statuses": {str(s): c for s, c in statuses.items()},
            "posts_s": round(post_s, 3),
            "window_s": round(window_s, 3),
            "publishes": calls_after - calls_before,
            "publishes_seen_by_observer": observed,
            "receipts": receipts,
            "publishes_per_event": round((calls_after - calls_before) / k, 3),
            "receipts_per_event": round(receipts / k, 3),
            "issue_claim": {"publishes_per_event": n + 1, "receipts_per_event": n * (n + 1)},
            # scripts the nodes ran (claims to announce a broadcast; heartbeats and purges, estimated from
            # the idle window, taken off)
            "evals_per_event": round((evals - idle_evals_in_window) / k, 2),
            "idle": {
                "seconds": args.idle,
                "publishes": idle_publishes,
                "per_channel": dict(idle_counts),
                "messages_per_s": round(idle_per_s, 3),
                "expected_in_window": round(idle_per_s * window_s, 1),
            },
            "node_pattern_subscriptions": {"before": numpat_before - 1, "after": numpat_after - 1},
            "receipts_lower_bound_only": numpat_before > 1 or numpat_after > 1,
            "per_channel": per_channel,
            "channels_with_subscribers": {c: subs_before.get(c, 0) for c in channels},
            "delivery": delivery,
            "deliveries_ok": all(
                d["missing"] == 0 and d["duplicates"] == 0 and d["unexpected"] == 0 for d in delivery
            ),
            "probes": probe,
            "client_problems": events.problems[:20],
            "node_log_warnings": {child.name: child.noteworthy()[:20] for child, _ in nodes},
            "redis_pid": redis_child.pid,
        }
        return result


# ---------------------------------------------------------------------------------------------------------
# report


def table(runs: list[dict[str, Any]]) -> str:
    header = ["", *[f"N = {r['nodes']}" for r in runs]]
    rows = [
        ["events (POSTs to node 1)", *[str(r["events"]) for r in runs]],
        ["PUBLISH per event", *[f"{r['publishes_per_event']:g}" for r in runs]],
        ["  issue's claim (N+1)", *[str(r["issue_claim"]["publishes_per_event"]) for r in runs]],
        ["receipts per event", *[f"{r['receipts_per_event']:g}" for r in runs]],
        ["  issue's claim (N(N+1))", *[str(r["issue_claim"]["receipts_per_event"]) for r in runs]],
        ["PUBLISH seen by observer", *[str(r["publishes_seen_by_observer"]) for r in runs]],
        ["EVAL per event (less heartbeats)", *[f"{r.get('evals_per_event', 0):g}" for r in runs]],
        ["idle bus messages in window", *[str(r["idle"]["expected_in_window"]) for r in runs]],
        ["node pattern subscriptions", *[str(r["node_pattern_subscriptions"]["before"]) for r in runs]],
        [
            "deliveries exactly once",
            *[
                "yes"
                if r["deliveries_ok"]
                else "NO ({} missing, {} dup, {} unexpected)".format(
                    *(sum(d[k] for d in r["delivery"]) for k in ("missing", "duplicates", "unexpected"))
                )
                for r in runs
            ],
        ],
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def channel_kinds(run: dict[str, Any]) -> list[str]:
    """One line per channel of the window: messages per event and subscribers."""
    k = run["events"]
    lines = []
    for channel, c in run["per_channel"].items():
        types = ", ".join(f"{kind} {n / k:g}" for kind, n in c["by_type"].items())
        changed = " (changed during the window!)" if c["subscribers_changed"] else ""
        lines.append(
            f"  {channel}: {c['published'] / k:g} msg/event ({types})"
            f" x {c['subscribers']} subscribers{changed}"
        )
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="2,4,8", help="comma-separated node counts")
    parser.add_argument("--events", type=int, default=50, help="POSTs (events) per node count")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle bus traffic measured first")
    parser.add_argument(
        "--quiet", type=float, default=1.0, help="the bus counts as drained after this long without a message"
    )
    parser.add_argument(
        "--drain-quiet",
        type=float,
        default=5.0,
        help="stop waiting for missing EVENTs once none arrived for this many seconds",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    args = parser.parse_args(argv)
    try:
        args.node_counts = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        parser.error("--nodes takes comma-separated integers, e.g. 2,4,8")
    if not args.node_counts or min(args.node_counts) < 1 or args.events < 1 or args.idle < 0:
        parser.error("--nodes and --events must be positive, --idle >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    stamp = time.strftime("%Y%m%dT%H%M%S")
    tag = f"bus{os.getpid()}"
    results = run_header("bus_cost", argv, args)
    results["runs"] = []
    started = time.monotonic()
    for n in args.node_counts:
        print(f"N = {n}: redis-server + {n} nodes, {args.events} events", file=sys.stderr, flush=True)
        run = run_n(n, args, tag)
        results["runs"].append(run)
        print(
            f"  {run['publishes_per_event']:g} PUBLISH/event, {run['receipts_per_event']:g} receipts/event, "
            f"deliveries {'ok' if run['deliveries_ok'] else 'NOT ok'}",
            file=sys.stderr,
            flush=True,
        )
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"bus-cost-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results["runs"]))
    for run in results["runs"]:
        print(f"N = {run['nodes']} per channel:")
        print("\n".join(channel_kinds(run)))
        if run["receipts_lower_bound_only"]:
            print("  note: nodes hold pattern subscriptions; receipts are a lower bound")
        if run["publishes"] != run["publishes_seen_by_observer"]:
            print("  note: cmdstat_publish and the observer disagree (traffic outside the bus?)")
        for who, lines in run["node_log_warnings"].items():
            lines = [line for line in lines if "no cluster secret" not in line]  # expected: no secret here
            if lines:
                print(f"  note: {who} logged {len(lines)}+ warning(s), e.g. {lines[0]}")
    print(
        f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({results['elapsed_s']} s)"
    )
    return 0 if all(r["deliveries_ok"] for r in results["runs"]) else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == CLIENTS_FLAG:
        clients_main(sys.argv[2:])
    else:
        try:
            sys.exit(main(sys.argv[1:]))
        except KeyboardInterrupt:
            print("interrupted; everything stopped", file=sys.stderr)
            sys.exit(130)
