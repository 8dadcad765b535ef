"""What the server spends on one WAMP connection's setup (handshake, HELLO -> WELCOME, close), and on one
received frame, in memory.

    python bench/connect_cost.py [--connections 5000] [--frames 20000] [--runs 7]

Each connection goes through the app's Site as a TCP connection does (``app.site()``, the open router of
``twistd sandstone``), on a ``StringTransport``: the WebSocket opening handshake (wamp.2.json), a HELLO
frame, the WELCOME checked in what the server wrote, then the connection lost. No sockets and no client: the
figure is the server's own CPU per connection (the kernel's accept and the client's side excluded). Then, on
one open session, ``--frames`` frames each carrying a PUBLISH to a topic nobody subscribed to, one frame per
``dataReceived``: the cost of receiving a message, up to the router. Reports the median and the best of
``--runs`` runs, in microseconds per connection and per frame.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from sandstone import Limits, Sandstone  # noqa: E402

_UPGRADE = (
    b"GET /ws HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: wamp.2.json\r\n"
    b"\r\n"
)


def _client_frame(payload: bytes) -> bytes:
    mask = b"\x0f\x1e\x2d\x3c"
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + len(payload).to_bytes(2, "big")
    return b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


_HELLO = _client_frame(json.dumps([1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]).encode())
_PUBLISH = _client_frame(json.dumps([16, 1, {}, "bench.nobody", ["hello"]]).encode())
_DONE = Failure(ConnectionDone())


def run(site: object, connections: int) -> float:
    """Seconds for ``connections`` connections, each opened, welcomed and lost."""
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    gc.collect()
    started = time.perf_counter()
    for _ in range(connections):
        transport = StringTransport(peerAddress=address)
        protocol = site.buildProtocol(address)  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        protocol.dataReceived(_UPGRADE)
        websocket = transport.protocol  # the Site handed the connection over, as it does a TCP one
        websocket.dataReceived(_HELLO)
        websocket.connectionLost(_DONE)
    elapsed = time.perf_counter() - started
    if b"[2," not in transport.value():
        raise SystemExit(f"no WELCOME: {transport.value()[-300:]!r}")
    return elapsed


def receive(site: object, frames: int) -> float:
    """Seconds for one session to receive ``frames`` PUBLISH frames."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol = site.buildProtocol(transport.getPeer())  # type: ignore[attr-defined]
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    websocket = transport.protocol
    websocket.dataReceived(_HELLO)
    gc.collect()
    started = time.perf_counter()
    for _ in range(frames):
        websocket.dataReceived(_PUBLISH)
    elapsed = time.perf_counter() - started
    if b"[2," not in transport.value() or b"abort" in transport.value().lower():
        raise SystemExit(f"the session did not stay open: {transport.value()[-300:]!r}")
    websocket.connectionLost(_DONE)
    return elapsed


def _report(what: str, per: list[float], count: int, runs: int) -> None:
    print(f"{what}: median {statistics.median(per):.2f} us, best {min(per):.2f} us ({count} x {runs} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    # The timers (opening handshake, pings, HELLO, request head) would run on the global reactor: none here;
    # nor a PUBLISH rate limit.
    limits = Limits(
        open_handshake_timeout=0, auto_ping_interval=0, hello_timeout=0, header_timeout=0, publish_rate=0
    )
    site = Sandstone(open_uris=True, anonymous=True, limits=limits).site()
    run(site, 200)  # warm-up
    per = [run(site, args.connections) / args.connections * 1e6 for _ in range(args.runs)]
    _report("connection setup, per connection", per, args.connections, args.runs)
    receive(site, 1000)  # warm-up
    per = [receive(site, args.frames) / args.frames * 1e6 for _ in range(args.runs)]
    _report("a PUBLISH received, per frame", per, args.frames, args.runs)


if __name__ == "__main__":
    main()
