"""What keeping a topic's event history adds to its fan-out, with the in-memory store and with Redis.

    python bench/history_cost.py [--subscribers 1,10,100] [--publishes 2000] [--rounds 3] [--redis-port 0]

One process per measurement: the open router's app (``make_default_app``) in process, S subscribers and one
publisher as server-side WebSocket protocols on real loopback TCP sockets, fed acknowledged PUBLISH frames
(16 per reactor turn, as a busy client's reads bring them); the EVENTs are really written to the sockets and
read by this process. It reports microseconds per publication with the topic's history off and on
(``app.history(topic, limit=500)``), alternated ``--rounds`` times, medians and the on/off ratio; first with
the memory store, then on a Redis bus (a redis-server it starts on a free port, and stops) with the Redis
store. Wall-clock figures move with the machine's load: for a steadier figure run one measurement under
``valgrind --tool=callgrind`` with ``--publishes 0`` and ``--publishes 400`` and take the difference of the
instruction counts (``python bench/history_cost.py --child MODE HIST S N``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TOPIC = "bench.history"


def child(mode: str, history: bool, subscribers: int, publishes: int, redis_url: str | None) -> None:
    """One measurement; prints the microseconds per publication."""
    from autobahn.wamp import message
    from autobahn.wamp.role import RolePublisherFeatures, RoleSubscriberFeatures
    from twisted.internet import reactor, tcp

    from sandstone._default import make_default_app
    from sandstone._transport import WampServerFactory

    app = make_default_app()
    if history:
        app.history(TOPIC, limit=500)
    factory = WampServerFactory(app.router, limits=app.limits)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(500)
    readers: list[socket.socket] = []

    def connect(subscribe: bool) -> Any:
        protocol = factory.buildProtocol(None)
        reader = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.setblocking(False)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        readers.append(reader)
        port = SimpleNamespace(_realPortNumber=8080)
        transport = tcp.Server(
            server, protocol, ("127.0.0.1", 40000 + len(readers)), port, len(readers), reactor
        )
        protocol.makeConnection(transport)
        # the WebSocket handshake, as if done: the bench measures WAMP, not the opening handshake
        protocol.onConnect(SimpleNamespace(protocols=["wamp.2.json"], headers={}))
        protocol.state = protocol.STATE_OPEN
        protocol.current_frame = None
        protocol.inside_message = False
        protocol.websocket_version = 13
        protocol.data = b""
        protocol.utf8validateIncoming = False
        protocol.close_reason = None
        protocol.onOpen()
        roles = {"subscriber": RoleSubscriberFeatures(), "publisher": RolePublisherFeatures()}
        protocol._wamp.on_message(message.Hello("realm1", roles))
        if subscribe:
            protocol._wamp.on_message(message.Subscribe(1, TOPIC))
        return protocol

    for _ in range(subscribers):
        connect(True)
    publisher = connect(False)

    def frame(payload: bytes) -> bytes:
        mask = b"\x01\x02\x03\x04"
        size = len(payload)
        head = (
            bytes((0x81, 0x80 | size)) if size < 126 else bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
        )
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    warmup = 64
    frames = [
        frame(json.dumps([16, i + 1, {"acknowledge": True}, TOPIC, ["x" * 80]]).encode())
        for i in range(warmup + publishes)
    ]
    state = {"next": 0}

    def drain() -> None:
        for reader in readers:
            try:
                while reader.recv(1 << 20, socket.MSG_DONTWAIT):
                    pass
            except BlockingIOError:
                pass

    def batch(end: int, done: Any) -> None:
        start = state["next"]
        stop = min(start + 16, end)
        for index in range(start, stop):
            publisher.dataReceived(frames[index])
        state["next"] = stop
        drain()
        if stop < end:
            reactor.callLater(0, batch, end, done)
        else:
            done()

    def measured() -> None:
        began = time.perf_counter()

        def finished() -> None:
            elapsed = time.perf_counter() - began

            def report() -> None:
                drain()
                print(json.dumps({"us": elapsed / max(publishes, 1) * 1e6}))
                reactor.stop()

            reactor.callLater(0.3, report)

        batch(warmup + publishes, finished)

    def start(_: Any = None) -> None:
        batch(warmup, lambda: reactor.callLater(0.2, measured))

    if mode == "redis":
        assert redis_url is not None
        bus = app.use_redis(redis_url)
        bus.startService()
        bus.when_connected().addCallback(start)
    else:
        reactor.callWhenRunning(start)
    reactor.run()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1,10,100")
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="memory,redis")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "HIST", "S", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, history, subscribers, publishes = args.child
        child(mode, history == "1", int(subscribers), int(publishes), args.redis_url)
        return
    redis: subprocess.Popen[bytes] | None = None
    url = None
    if "redis" in args.modes:
        port = _free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        time.sleep(0.5)
    try:
        for mode in args.modes.split(","):
            for subscribers in [int(s) for s in args.subscribers.split(",")]:
                figures: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(args.rounds):
                    for history in (False, True):
                        argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
                        argv += ["1" if history else "0", str(subscribers), str(args.publishes)]
                        if url is not None:
                            argv += ["--redis-url", url]
                            subprocess.run(
                                ["redis-cli", "-u", url, "flushall"], capture_output=True, check=False
                            )
                        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=os.environ)
                        figures[history].append(json.loads(out.stdout.strip().splitlines()[-1])["us"])
                off, on = statistics.median(figures[False]), statistics.median(figures[True])
                print(
                    f"{mode:6} S={subscribers:<4} history off {off:7.1f} us/publication, on {on:7.1f} "
                    f"(x{on / off:.2f})",
                    flush=True,
                )
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
