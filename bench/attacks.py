#!/usr/bin/env python
"""By-hand attack harness for the hardening issue (issue 10): before/after figures of each attack.

    python bench/attacks.py --source /work/before --label before      # every attack, ~8 min
    python bench/attacks.py --label after                             # this checkout
    python bench/attacks.py --attacks headers,payload --quick          # smoke run with small sizes

For each attack it starts a fresh ``twistd -n --pidfile= sandstone`` from ``--source`` (default: the
repository this script lives in) on a free 127.0.0.1 port, a legitimate client process and an attacker
process, samples the server's RSS, open fds and CPU every 100 ms, and reports what the attack did to the
server, to the legitimate client and what the attacker got back. Results:
``bench/results/attacks-<label>-<timestamp>.json`` and a table.
See the section "attacks.py" of bench/README.md for what each figure means.

The same file is also each child process: ``--_server`` (twistd, after checking which sandstone it imports),
``--_probe`` (the legitimate client) and ``--_attacker``. Nothing here is imported by the test suite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import platform
import queue
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
MiB = 1024 * 1024
HOST = "127.0.0.1"
REALM = "realm1"

#: attack name -> app served ("blog": examples.blog:app, "open": the default open router, no --app)
ATTACK_APPS = {
    "headers": "blog",
    "headers_rest": "blog",
    "slowloris": "blog",
    "halfopen": "blog",
    "halfopen_head": "blog",
    "wildcard": "open",
    "exact": "open",
    "payload": "open",
}
ATTACKS = list(ATTACK_APPS)
RAW_ATTACKS = {"headers", "headers_rest", "slowloris", "halfopen", "halfopen_head"}

LEGIT_TOPIC_OPEN = "bench.legit"
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: bind() to an address without reserving a port until connect()


class HarnessError(Exception):
    """Something the harness cannot work around (busy port, a process died...): a message for the user."""


# ----------------------------------------------------------------------------------------------------------
# small helpers shared by every process


def now() -> float:
    """CLOCK_MONOTONIC: the same clock in every process of the machine, so timestamps compare across them."""
    return time.monotonic()


def emit(obj: Any) -> None:
    """One JSON line on stdout: how child processes talk to the orchestrator."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def watch_parent() -> None:
    """Exit (SIGTERM to ourselves) when the process that started us goes away: no orphans left running."""
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def attacker_sources(count: int) -> list[str]:
    """Source addresses of the attacker: 127.0.0.2... (the legitimate client is 127.0.0.1)."""
    if not 1 <= count <= 250:
        raise HarnessError("--attacker-ips must be between 1 and 250")
    return [f"127.0.0.{2 + i}" for i in range(count)]


def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def ws_handshake(port: int, path: str = "/ws", protocol: str = "wamp.2.json") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {ws_key()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


def ws_client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked, final WebSocket frame (a client's)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    if n:
        key = (mask * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    else:
        body = b""
    return head + mask + body


def ws_parse_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete frames at the start of ``buf`` (removed from it): [(opcode, payload)]."""
    frames = []
    while len(buf) >= 2:
        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = int.from_bytes(buf[2:10], "big"), 10
        masked = buf[1] & 0x80
        if masked:
            pos += 4
        if len(buf) < pos + n:
            break
        payload = bytes(buf[pos : pos + n])
        if masked:
            key = bytes(buf[pos - 4 : pos])
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        del buf[: pos + n]
        frames.append((opcode, payload))
    return frames


def describe_frame(opcode: int, payload: bytes) -> str:
    """What a server frame says, for the counters: 'close 1002 ...', 'ABORT wamp.error...', 'WELCOME'."""
    if opcode == 8:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        reason = payload[2:].decode("utf-8", "replace")[:80]
        return f"close {code} {reason}".strip()
    if opcode == 9:
        return "ping"
    if opcode in (1, 2):
        try:
            msg = json.loads(payload)
        except ValueError:
            return f"{'text' if opcode == 1 else 'binary'} frame ({len(payload)} bytes)"
        if isinstance(msg, list) and msg:
            names = {2: "WELCOME", 3: "ABORT", 6: "GOODBYE", 8: "ERROR"}
            name = names.get(msg[0], f"WAMP type {msg[0]}")
            if msg[0] == 3 and len(msg) > 2:
                return f"ABORT {msg[2]}"
            if msg[0] == 6 and len(msg) > 2:
                return f"GOODBYE {msg[2]}"
            return name
    return f"opcode {opcode}"


class ResponseParser:
    """Incremental HTTP/1.1 response parser (Content-Length, chunked or close-delimited): status codes out."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status: int | None = None
        self.length: int | None = None  # body bytes left (Content-Length), or None
        self.chunked = False
        self.until_close = False
        self.state = "head"

    def feed(self, data: bytes) -> list[int]:
        self.buf += data
        done: list[int] = []
        while True:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return done
                head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                del self.buf[: end + 4]
                parts = head[0].split(" ", 2)
                self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                self.length = int(headers["content-length"]) if "content-length" in headers else None
                if 100 <= self.status < 200 or self.status in (204, 304):
                    self.chunked, self.length = False, 0
                self.until_close = not self.chunked and self.length is None
                self.state = "chunk-size" if self.chunked else "body"
            elif self.state == "body":
                if self.until_close:
                    self.buf.clear()
                    return done
                take = min(self.length or 0, len(self.buf))
                del self.buf[:take]
                self.length = (self.length or 0) - take
                if self.length > 0:
                    return done
                self._complete(done)
            elif self.state == "chunk-size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return done
                size = int(bytes(self.buf[:end]).split(b";")[0].strip() or b"0", 16)
                del self.buf[: end + 2]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.length, self.state = size + 2, "chunk-data"
            elif self.state == "chunk-data":
                take = min(self.length or 0, len(self.buf))
                del self.buf[:take]
                self.length = (self.length or 0) - take
                if self.length > 0:
                    return done
                self.state = "chunk-size"
            elif self.state == "trailer":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return done
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                if not line:
                    self._complete(done)

    def _complete(self, done: list[int]) -> None:
        done.append(self.status or 0)
        self.state, self.status = "head", None

    def close(self) -> list[int]:
        """The connection ended: a close-delimited body is complete."""
        if self.state == "body" and self.until_close and self.status is not None:
            done: list[int] = []
            self._complete(done)
            return done
        return []


def wildcard_patterns(parts: int) -> list[str]:
    """Every wildcard pattern matching ``p0.p1.….p{parts-1}``: each part empty or not, except all empty."""
    names = [f"p{i}" for i in range(parts)]
    return [".".join(names[i] if mask >> i & 1 else "" for i in range(parts)) for mask in range(1, 2**parts)]


def wildcard_topic(parts: int) -> str:
    return ".".join(f"p{i}" for i in range(parts))


# ----------------------------------------------------------------------------------------------------------
# the server process: check which sandstone is imported, then run twistd


def server_main(argv: list[str]) -> None:
    """``--_server SOURCE twistd-args...``: import sandstone from SOURCE (refuse any other), then run twistd.

    twistd's own plugin scan is replaced by SOURCE's ``twisted/plugins/sandstone_plugin.py``: the scan would
    write ``dropin.cache`` into the source tree (which may be a read-only reference checkout), and with
    several checkouts on ``sys.path`` it would see several ``sandstone`` plugins.
    """
    watch_parent()
    source = Path(argv[0]).resolve()
    sys.path.insert(0, str(source))
    import sandstone

    where = Path(sandstone.__file__).resolve()
    if source not in where.parents:
        sys.stderr.write(f"attacks.py: sandstone was imported from {where}, not from {source}\n")
        sys.exit(3)
    sys.stdout.write(f"attacks.py: sandstone imported from {where}\n")
    sys.stdout.flush()

    import importlib.util

    plugin_path = source / "twisted" / "plugins" / "sandstone_plugin.py"
    spec = importlib.util.spec_from_file_location("_attacks_sandstone_plugin", plugin_path)
    if spec is None or spec.loader is None:
        sys.stderr.write(f"attacks.py: cannot load {plugin_path}\n")
        sys.exit(3)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    maker = module.sandstone

    from twisted.application import app, service

    from twisted import plugin

    def plugins(interface: Any, package: Any = None) -> Any:
        if interface is service.IServiceMaker:
            return [maker]
        return plugin.getPlugins(interface, package)

    app.ServerOptions._getPlugins = staticmethod(plugins)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *argv[1:]]
    run()


# ----------------------------------------------------------------------------------------------------------
# autobahn-python WAMP clients (probe and attacker processes)


def use_twisted() -> None:
    """autobahn's serializers need txaio's framework chosen before they are created."""
    import txaio

    txaio.use_twisted()


def _wamp_classes() -> tuple[Any, Any]:
    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.twisted.websocket import WampWebSocketClientFactory

    class _Session(ApplicationSession):
        def onJoin(self, details: Any) -> None:
            self.config.extra["peer"]._on_join(self, details)

        def onLeave(self, details: Any) -> None:
            self.config.extra["peer"]._on_leave(details)
            self.disconnect()

        def onDisconnect(self) -> None:
            self.config.extra["peer"]._on_disconnect()

    class _Factory(WampWebSocketClientFactory):
        peer: Any = None

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            self.peer._on_connection_end(f"connection failed: {reason.getErrorMessage()}")

        def clientConnectionLost(self, connector: Any, reason: Any) -> None:
            self.peer._on_connection_end(f"connection lost: {reason.getErrorMessage()}")

    return _Session, _Factory


class Peer:
    """One autobahn-python WAMP session over WebSocket: ``connect()`` fires with the session once joined."""

    def __init__(
        self, reactor: Any, port: int, serializer: Any, *, bind: str | None = None, timeout: float = 10.0
    ) -> None:
        from twisted.internet.defer import Deferred

        self.reactor, self.port, self.serializer, self.bind, self.timeout = (
            reactor,
            port,
            serializer,
            bind,
            timeout,
        )
        self.session: Any = None
        self.joined: Deferred = Deferred()
        self.gone: Deferred = Deferred()
        self.end: str | None = None  # why the session or connection ended
        self.t_end: float | None = None

    def connect(self) -> Any:
        from autobahn.wamp.types import ComponentConfig

        session_class, factory_class = _wamp_classes()
        config = ComponentConfig(REALM, extra={"peer": self})
        factory = factory_class(
            lambda: session_class(config), url=f"ws://{HOST}:{self.port}/ws", serializers=[self.serializer]
        )
        factory.peer = self
        factory.setProtocolOptions(openHandshakeTimeout=self.timeout, closeHandshakeTimeout=2)
        bind = (self.bind, 0) if self.bind else None
        self.reactor.connectTCP(HOST, self.port, factory, timeout=self.timeout, bindAddress=bind)
        return self.joined

    def _on_join(self, session: Any, details: Any) -> None:
        self.session = session
        if not self.joined.called:
            self.joined.callback(session)

    def _on_leave(self, details: Any) -> None:
        if self.end is None:
            self.end = f"session ended: {details.reason} {details.message or ''}".strip()

    def _on_disconnect(self) -> None:
        self._on_connection_end("disconnected")

    def _on_connection_end(self, why: str) -> None:
        self.session = None
        if self.end is None:
            self.end = why
        if self.t_end is None:
            self.t_end = now()
        if not self.joined.called:
            self.joined.errback(RuntimeError(self.end))
        if not self.gone.called:
            self.gone.callback(self.end)


def within(reactor: Any, d: Any, seconds: float) -> Any:
    """A Deferred firing with (True, result), (False, failure), or (None, None) after ``seconds``; ``d`` is
    not cancelled (a late answer is simply ignored)."""
    from twisted.internet.defer import Deferred

    out: Deferred = Deferred()

    def fire(result: Any) -> None:
        if not out.called:
            out.callback(result)

    def ok(value: Any) -> None:
        fire((True, value))

    def failed(failure: Any) -> None:
        fire((False, failure))

    d.addCallbacks(ok, failed)
    call = reactor.callLater(seconds, fire, (None, None))
    out.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
    return out


def sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, max(0.0, seconds), lambda: None)


def error_name(failure: Any) -> str:
    """A WAMP ERROR's URI, else the exception's class and message."""
    value = getattr(failure, "value", failure)
    uri = getattr(value, "error", None)
    if isinstance(uri, str):
        return f"ERROR {uri}"
    return f"{type(value).__name__}: {str(value)[:100]}"


# ----------------------------------------------------------------------------------------------------------
# the legitimate client process


def probe_main(cfg: dict[str, Any]) -> None:
    """The legitimate client: a subscriber, a publication every ``interval`` s, fresh REST/WebSocket checks.

    ``blog``: autobahn-python subscriber of ``articles``; ``POST /api/articles`` pipelined on one keep-alive
    connection opened before the attack. ``open``: subscriber and publisher sessions on ``bench.legit``.
    Each publication's delivery latency is send -> EVENT handler, in this process. Every ``check_interval``
    s a new TCP connection does a REST GET and another a WebSocket handshake + HELLO -> WELCOME.
    Stops on a ``stop`` line on stdin; prints one JSON line with every record.
    """
    raise_nofile()
    watch_parent()
    use_twisted()
    from autobahn.wamp.serializer import JsonSerializer
    from autobahn.wamp.types import PublishOptions
    from twisted.internet import protocol, reactor, task

    port, mode = cfg["port"], cfg["mode"]
    interval, check_interval, check_timeout = cfg["interval"], cfg["check_interval"], cfg["check_timeout"]
    posts: dict[int, list[Any]] = {}  # seq -> [t_sent, t_answer, answer, t_event]
    checks: list[list[Any]] = []  # [kind, t_start, t_end, ok, detail]
    incidents: list[list[Any]] = []  # [t, what]
    state: dict[str, Any] = {"seq": 0, "ready": False, "stopping": False, "duplicates": 0, "unknown": 0}

    def on_event(seq: int | None) -> None:
        t = now()
        record = posts.get(seq) if seq is not None else None
        if record is None:
            state["unknown"] += 1
            return
        if record[3] is not None:
            state["duplicates"] += 1
            return
        record[3] = t
        if not state["ready"]:
            state["ready"] = True
            emit({"ready": True, "t": t})

    def blog_event(*args: Any, **kwargs: Any) -> None:
        seq = None
        try:
            title = args[0]["article"]["title"]
            if title.startswith("legit "):
                seq = int(title.split()[1])
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            pass
        on_event(seq)

    def open_event(*args: Any, **kwargs: Any) -> None:
        on_event(args[0] if args and isinstance(args[0], int) else None)

    topic = "articles" if mode == "blog" else LEGIT_TOPIC_OPEN
    handler = blog_event if mode == "blog" else open_event
    peers: dict[str, Peer] = {}

    def start_peer(name: str, subscribe: bool) -> None:
        peer = Peer(reactor, port, JsonSerializer(), timeout=check_timeout)
        peers[name] = peer

        def joined(session: Any) -> Any:
            if subscribe:
                return session.subscribe(handler, topic)
            return None

        def failed(failure: Any) -> None:
            incidents.append([now(), f"{name}: {failure.getErrorMessage()}"])

        def gone(why: str) -> None:
            incidents.append([now(), f"{name} lost: {why}"])
            if not state["stopping"]:
                reactor.callLater(1.0, start_peer, name, subscribe)

        d = peer.connect()
        d.addCallback(joined)
        d.addErrback(failed)
        peer.gone.addCallback(gone)

    start_peer("subscriber", True)
    if mode == "open":
        start_peer("publisher", False)

    # -- blog: POSTs pipelined on one keep-alive connection
    class Pipeline(protocol.Protocol):
        def __init__(self) -> None:
            self.parser = ResponseParser()
            self.pending: deque[int] = deque()

        def connectionMade(self) -> None:
            pipeline["conn"] = self

        def send(self, seq: int) -> None:
            body = json.dumps({"title": f"legit {seq}"}).encode()
            self.pending.append(seq)
            self.transport.write(
                b"POST /api/articles HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), port, len(body), body)
            )

        def dataReceived(self, data: bytes) -> None:
            try:
                statuses = self.parser.feed(data)
            except ValueError:
                incidents.append([now(), "POST connection: unparsable response"])
                self.transport.abortConnection()
                return
            for status in statuses:
                if self.pending:
                    record = posts[self.pending.popleft()]
                    record[1], record[2] = now(), status

        def connectionLost(self, reason: Any = None) -> None:
            if pipeline.get("conn") is self:
                pipeline["conn"] = None
            for seq in self.pending:
                posts[seq][1], posts[seq][2] = now(), "connection lost"
            if not state["stopping"]:
                incidents.append([now(), f"POST connection lost: {reason.getErrorMessage()}"])
                reactor.callLater(0.5, connect_pipeline)

    pipeline: dict[str, Any] = {"conn": None}

    class PipelineFactory(protocol.ClientFactory):
        def buildProtocol(self, addr: Any) -> Pipeline:
            return Pipeline()

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            incidents.append([now(), f"POST connection failed: {reason.getErrorMessage()}"])
            if not state["stopping"]:
                reactor.callLater(0.5, connect_pipeline)

    def connect_pipeline() -> None:
        reactor.connectTCP(HOST, port, PipelineFactory(), timeout=check_timeout)

    if mode == "blog":
        connect_pipeline()

    def publish_one() -> None:
        state["seq"] += 1
        seq = state["seq"]
        record = posts[seq] = [now(), None, None, None]
        if mode == "blog":
            conn = pipeline.get("conn")
            if conn is None:
                record[1], record[2] = record[0], "not connected"
                return
            conn.send(seq)
            return
        peer = peers.get("publisher")
        session = peer.session if peer is not None else None
        if session is None:
            record[1], record[2] = record[0], "not connected"
            return

        def answered(result: Any) -> None:
            record[1], record[2] = now(), "PUBLISHED"

        def refused(failure: Any) -> None:
            record[1], record[2] = now(), error_name(failure)

        d = session.publish(LEGIT_TOPIC_OPEN, seq, options=PublishOptions(acknowledge=True))
        d.addCallbacks(answered, refused)

    def tick(count: int) -> None:
        if count > 1:
            incidents.append([now(), f"probe late: {count - 1} publication(s) skipped"])
        publish_one()

    # -- fresh connections: a REST GET and a WebSocket handshake + HELLO -> WELCOME
    class Check(protocol.Protocol):
        def __init__(self, kind: str, t0: float) -> None:
            self.kind, self.t0 = kind, t0
            self.buf = bytearray()
            self.stage = "connecting"
            self.finished = False
            self.timer = reactor.callLater(check_timeout, self.timed_out)

        def finish(self, ok: bool, detail: str) -> None:
            if self.finished:
                return
            self.finished = True
            if self.timer.active():
                self.timer.cancel()
            checks.append([self.kind, self.t0, now(), ok, detail])
            transport = getattr(self, "transport", None)
            if transport is not None and self.stage != "connecting":
                if ok and self.kind == "ws":
                    transport.write(ws_client_frame(b"\x03\xe8", opcode=8))
                    transport.loseConnection()
                else:
                    transport.abortConnection()

        def timed_out(self) -> None:
            detail = {
                "connecting": "timeout: no TCP connection",
                "head": "timeout: connected, no answer",
                "welcome": "timeout: 101 but no WELCOME",
            }[self.stage]
            self.finish(
                False, detail
            )  # before stopConnecting, whose clientConnectionFailed would say "aborted"
            if self.stage == "connecting":
                connector = getattr(self, "connector", None)
                if connector is not None:
                    connector.stopConnecting()

        def connectionMade(self) -> None:
            if self.finished:
                self.transport.abortConnection()
                return
            self.stage = "head"
            if self.kind == "rest":
                path = b"/api/articles/1" if mode == "blog" else b"/"
                self.transport.write(
                    b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                    % (path, HOST.encode(), port)
                )
            else:
                self.transport.write(ws_handshake(port))

        def dataReceived(self, data: bytes) -> None:
            if self.finished:
                return
            self.buf += data
            if self.stage == "head":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                status_line = bytes(self.buf[:end]).decode("latin-1")
                parts = status_line.split(" ")
                status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                if self.kind == "rest":
                    self.finish(0 < status < 500, f"status {status}")
                    return
                if status != 101:
                    self.finish(False, f"status {status}")
                    return
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                del self.buf[: head_end + 4]
                self.stage = "welcome"
                hello = [1, REALM, {"roles": {"subscriber": {}, "publisher": {}}}]
                self.transport.write(ws_client_frame(json.dumps(hello).encode()))
            if self.stage == "welcome":
                for opcode, payload in ws_parse_frames(self.buf):
                    what = describe_frame(opcode, payload)
                    if what == "ping":
                        continue
                    self.finish(what == "WELCOME", what)
                    return

        def connectionLost(self, reason: Any = None) -> None:
            if self.stage == "welcome":
                self.finish(False, "closed after 101, before WELCOME")
            else:
                self.finish(False, "closed without an answer")

    class CheckFactory(protocol.ClientFactory):
        def __init__(self, kind: str) -> None:
            self.kind = kind
            self.t0 = now()
            self.check: Check | None = None

        def startedConnecting(self, connector: Any) -> None:
            self.check = Check(self.kind, self.t0)
            self.check.connector = connector

        def buildProtocol(self, addr: Any) -> Check:
            assert self.check is not None
            return self.check

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            if self.check is not None:
                self.check.finish(False, f"connect failed: {reason.getErrorMessage()[:60]}")

    def check_tick() -> None:
        for kind in ("rest", "ws"):
            reactor.connectTCP(HOST, port, CheckFactory(kind), timeout=check_timeout + 1)

    ticker = task.LoopingCall.withCount(tick)
    checker = task.LoopingCall(check_tick)

    def start_traffic() -> None:
        ready = (
            peers["subscriber"].session is not None
            and (mode != "blog" or pipeline.get("conn") is not None)
            and (mode != "open" or peers["publisher"].session is not None)
        )
        if not ready:
            reactor.callLater(0.1, start_traffic)
            return
        # give the SUBSCRIBE a moment to be answered before the first publication
        reactor.callLater(
            0.3, lambda: (ticker.start(interval, now=True), checker.start(check_interval, now=False))
        )

    start_traffic()

    def stop() -> None:
        state["stopping"] = True
        for loop in (ticker, checker):
            if loop.running:
                loop.stop()
        deadline = now() + cfg["drain"]

        def drained() -> bool:
            return all(r[3] is not None for r in posts.values() if r[2] in (201, "PUBLISHED"))

        def wait() -> None:
            pending_checks = False  # checks finish on their own within check_timeout
            if (drained() and not pending_checks) or now() >= deadline:
                emit(
                    {
                        "result": {
                            "posts": [[seq, *r] for seq, r in sorted(posts.items())],
                            "checks": checks,
                            "incidents": incidents,
                            "duplicates": state["duplicates"],
                            "unknown_events": state["unknown"],
                        }
                    }
                )
                reactor.stop()
                return
            reactor.callLater(0.1, wait)

        reactor.callLater(min(check_timeout, cfg["drain"]), wait)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        reactor.callFromThread(stop)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    reactor.run()


# ----------------------------------------------------------------------------------------------------------
# the attacker process: raw socket floods (no reactor: a selector loop, so that 20,000 sockets stay cheap)


class _Conn:
    __slots__ = (
        "sock",
        "state",
        "offset",
        "t_start",
        "t_open",
        "inbuf",
        "said",
        "next_trickle",
        "trickles",
        "source",
    )

    def __init__(self, sock: socket.socket, source: str | None) -> None:
        self.sock = sock
        self.source = source
        self.state = "connecting"
        self.offset = 0
        self.t_start = now()
        self.t_open = 0.0
        self.inbuf = bytearray()
        self.said: str | None = None  # the first thing the server said (status line), if anything
        self.next_trickle = 0.0
        self.trickles = 0


class RawFlood:
    """``headers``/``headers_rest``/``slowloris``/``halfopen``: ``sockets`` connections, each sending its
    payload as fast as the server reads it, then holding the socket (``slowloris``: one more header line every
    ``trickle`` s). A connection the server closes is opened again ``reopen_delay`` s later (``reopen``), so
    pressure lasts the whole ``duration``. At most ``max_connecting`` connects in progress at once."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.kind = cfg["attack"]
        self.port = cfg["port"]
        self.sources = cfg["sources"]
        self.fd_limit = raise_nofile()
        self.target = min(cfg["sockets"], self.fd_limit - 64)
        self.payload = self._payload()
        self.view = memoryview(self.payload)
        self.sel = selectors.EpollSelector()
        self.conns: dict[int, _Conn] = {}
        self.ready: deque[float] = deque([0.0] * self.target)
        self.count: Counter[str] = Counter()
        self.said: Counter[str] = Counter()  # status lines / frames / "closed without an answer"
        self.connect_errors: Counter[str] = Counter()
        self.open_seconds: list[float] = []  # how long connections lived before the server closed them
        self.closes: dict[str, list[float]] = {}  # "<fin|reset> while <state>" -> how long they lived
        self.sent_before_close: list[int] = []  # bytes sent by connections closed before they sent it all
        self.n_connecting = 0
        self.n_open = 0
        self.n_ws_open = 0
        self.max_open = 0
        self.max_ws_open = 0
        self.bytes_sent = 0
        self.timeline: list[dict[str, Any]] = []
        self.deadline = 0.0

    def _payload(self) -> bytes:
        # A valid Host (the server's own address), so that an allowed-hosts check cannot refuse the
        # request before the part under test (the issue's attacks sent "Host: x").
        host = f"Host: {HOST}:{self.port}\r\n".encode()
        if self.kind in ("headers", "headers_rest"):
            path = "/ws" if self.kind == "headers" else "/api/articles"
            head = f"GET {path} HTTP/1.1\r\n".encode() + host
            line_len = max(16, self.cfg["header_line"])
            line = b"X-Pad: " + b"a" * (line_len - 9) + b"\r\n"
            return head + line * max(1, self.cfg["header_bytes"] // len(line))
        if self.kind == "slowloris":
            return b"GET /api/articles HTTP/1.1\r\n" + host
        if self.kind == "halfopen":
            return ws_handshake(self.port)
        if self.kind == "halfopen_head":  # a WebSocket request head that never ends: no 101, no HELLO
            return b"GET /ws HTTP/1.1\r\n" + host
        raise HarnessError(f"not a raw attack: {self.kind}")

    def run(self) -> dict[str, Any]:
        t_start = now()
        deadline = self.deadline = t_start + self.cfg["duration"]
        next_chores = next_progress = t_start
        emit({"started": True, "t": t_start, "target": self.target, "fd_limit": self.fd_limit})
        while True:
            t = now()
            if t >= deadline:
                break
            self._open_some(t, deadline)
            for key, mask in self.sel.select(timeout=0.02):
                conn = key.data
                if conn.sock.fileno() < 0:
                    continue
                if mask & selectors.EVENT_WRITE:
                    self._writable(conn)
                if mask & selectors.EVENT_READ and conn.state != "gone":
                    self._readable(conn, deadline)
            t = now()
            if t >= next_chores:
                next_chores = t + 0.25
                self._chores(t, deadline)
            if t >= next_progress:
                next_progress = t + 1.0
                row = self._progress(t)
                self.timeline.append(row)
                emit({"progress": row})
        t_end = now()
        open_at_end = self.n_open
        for conn in list(self.conns.values()):
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self._drop(conn)
        return {
            "t_start": t_start,
            "t_end": t_end,
            "target_sockets": self.target,
            "requested_sockets": self.cfg["sockets"],
            "attacker_fd_limit": self.fd_limit,
            "payload_bytes": len(self.payload),
            "sources": self.sources,
            "reopen": self.cfg["reopen"],
            "connected_total": self.count["connected"],
            "max_open_at_once": self.max_open,
            "max_ws_open_at_once": self.max_ws_open if self.kind == "halfopen" else None,
            "open_at_end": open_at_end,
            "server_closed": self.count["server_fin"] + self.count["server_reset"],
            "server_fin": self.count["server_fin"],
            "server_reset": self.count["server_reset"],
            "connect_failed": sum(self.connect_errors.values()),
            "connect_errors": dict(self.connect_errors),
            "attacker_out_of_fds": self.count["attacker_emfile"],
            "server_said": dict(self.said.most_common()),
            "open_seconds_before_server_close_p50": percentile(self.open_seconds, 50),
            "open_seconds_before_server_close_max": max(self.open_seconds) if self.open_seconds else None,
            "open_seconds_sample": [round(x, 3) for x in self.open_seconds[:2000]],
            "server_closes": summarize_closes(self.closes),
            "closes_sample": {k: [round(x, 3) for x in v[:3000]] for k, v in self.closes.items()},
            "kib_sent_before_close_p50": _r(
                percentile(self.sent_before_close, 50) / 1024 if self.sent_before_close else None
            ),
            "bytes_sent": self.bytes_sent,
            "trickled_lines": self.count["trickles"],
            "timeline": self.timeline,
        }

    def _progress(self, t: float) -> dict[str, Any]:
        return {
            "t": t,
            "open": self.n_open,
            "connecting": self.n_connecting,
            "ws_open": self.n_ws_open,
            "connected_total": self.count["connected"],
            "server_closed": self.count["server_fin"] + self.count["server_reset"],
            "connect_failed": sum(self.connect_errors.values()),
            "mib_sent": round(self.bytes_sent / MiB, 1),
        }

    def _open_some(self, t: float, deadline: float) -> None:
        budget = self.fd_limit - 32
        while (
            self.ready
            and self.ready[0] <= t
            and self.n_connecting < self.cfg["max_connecting"]
            and len(self.conns) < budget
        ):
            self.ready.popleft()
            source = self.sources[self.count["attempts"] % len(self.sources)] if self.sources else None
            self.count["attempts"] += 1
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    self.count["attacker_emfile"] += 1
                    self.ready.appendleft(t + 0.5)
                    return
                raise
            sock.setblocking(False)
            try:
                if source:
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((source, 0))
                code = sock.connect_ex((HOST, self.port))
            except OSError as err:
                code = err.errno
            if code not in (0, errno.EINPROGRESS):
                self.connect_errors[errno.errorcode.get(code, str(code))] += 1
                sock.close()
                self._requeue(t, deadline)
                continue
            conn = _Conn(sock, source)
            self.conns[sock.fileno()] = conn
            self.n_connecting += 1
            self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def _requeue(self, t: float, deadline: float) -> None:
        if self.cfg["reopen"] and t + self.cfg["reopen_delay"] < deadline:
            self.ready.append(t + self.cfg["reopen_delay"])

    def _writable(self, conn: _Conn) -> None:
        if conn.state == "connecting":
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.n_connecting -= 1
            if code:
                self.connect_errors[errno.errorcode.get(code, str(code))] += 1
                conn.state = "failed"
                self._drop(conn)
                self._requeue(now(), self.deadline)
                return
            conn.state = "sending"
            conn.t_open = now()
            self.count["connected"] += 1
            self.n_open += 1
            self.max_open = max(self.max_open, self.n_open)
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        if conn.state == "sending":
            view = self.view
            while conn.offset < len(view):
                try:
                    sent = conn.sock.send(view[conn.offset : conn.offset + 262_144])
                except BlockingIOError:
                    return
                except OSError:
                    return  # the read side sees the reset/close
                conn.offset += sent
                self.bytes_sent += sent
            conn.state = "holding"
            conn.next_trickle = now() + self.cfg["trickle"]
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn, deadline: float) -> None:
        try:
            data = conn.sock.recv(65_536)
        except BlockingIOError:
            return
        except OSError as err:
            self._server_closed(
                conn,
                "reset" if err.errno == errno.ECONNRESET else errno.errorcode.get(err.errno, "?"),
                deadline,
            )
            return
        if not data:
            self._server_closed(conn, "fin", deadline)
            return
        if len(conn.inbuf) < 65_536:
            conn.inbuf += data
        if conn.said is None:
            end = conn.inbuf.find(b"\r\n")
            if end < 0:
                return
            conn.said = bytes(conn.inbuf[:end]).decode("latin-1")[:80]
            self.said[conn.said] += 1
        if self.kind == "halfopen" and conn.said.startswith("HTTP/1.1 101"):
            if conn.state != "ws-open":
                end = conn.inbuf.find(b"\r\n\r\n")
                if end < 0:
                    return
                del conn.inbuf[: end + 4]
                conn.state = "ws-open"
                self.n_ws_open += 1
                self.max_ws_open = max(self.max_ws_open, self.n_ws_open)
            for opcode, payload in ws_parse_frames(conn.inbuf):
                self.said[describe_frame(opcode, payload)] += 1
        elif len(conn.inbuf) >= 65_536:
            conn.inbuf.clear()

    def _server_closed(self, conn: _Conn, how: str, deadline: float) -> None:
        self.count["server_fin" if how == "fin" else "server_reset"] += 1
        if how not in ("fin", "reset"):
            self.count[f"server_{how}"] += 1
        if conn.said is None:
            self.said["closed without an answer" if how == "fin" else "reset without an answer"] += 1
        lived = now() - conn.t_open
        self.open_seconds.append(lived)
        key = f"{how} while {conn.state}"
        if conn.state == "sending":
            key = f"{how} while sending"
            self.sent_before_close.append(conn.offset)
        self.closes.setdefault(key, []).append(lived)
        self._drop(conn)
        self._requeue(now(), deadline)

    def _drop(self, conn: _Conn) -> None:
        if conn.state == "gone":
            return
        if conn.state == "connecting":
            self.n_connecting -= 1
        elif conn.state in ("sending", "holding", "ws-open"):
            self.n_open -= 1
            if conn.state == "ws-open":
                self.n_ws_open -= 1
        conn.state = "gone"
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.sel.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _chores(self, t: float, deadline: float) -> None:
        timeout = self.cfg["connect_timeout"]
        trickle = self.kind == "slowloris"
        for conn in list(self.conns.values()):
            if conn.state == "connecting" and t - conn.t_start > timeout:
                self.connect_errors["connect timeout"] += 1
                self._drop(conn)
                self._requeue(t, deadline)
            elif trickle and conn.state == "holding" and t >= conn.next_trickle:
                conn.trickles += 1
                try:
                    conn.sock.send(b"X-a-%d: b\r\n" % conn.trickles)
                    self.count["trickles"] += 1
                except OSError:
                    pass
                conn.next_trickle = t + self.cfg["trickle"]


# ----------------------------------------------------------------------------------------------------------
# the attacker process: WAMP attacks (autobahn-python sessions in a Twisted reactor)


async def _subscribe_batches(
    reactor: Any, peer: Peer, topics: list[str], options: Any, handler: Any, window: int, deadline: float
) -> dict[str, Any]:
    """SUBSCRIBE every topic, ``window`` at a time; stops when the session is gone or at ``deadline``."""
    from twisted.internet.defer import DeferredList

    ok = 0
    errors: Counter[str] = Counter()
    t0 = now()
    sent = 0
    last_progress = t0
    for start in range(0, len(topics), window):
        session = peer.session
        if session is None or now() >= deadline:
            break
        batch = []
        for topic in topics[start : start + window]:
            try:
                batch.append(session.subscribe(handler, topic, options=options))
            except Exception as err:  # autobahn raises synchronously once the transport is gone
                errors[f"{type(err).__name__}: {str(err)[:80]}"] += 1
                continue
            sent += 1
        results = await DeferredList(batch, consumeErrors=True)
        for success, value in results:
            if success:
                ok += 1
            else:
                errors[error_name(value)] += 1
        if now() - last_progress >= 1.0:
            last_progress = now()
            emit(
                {
                    "progress": {
                        "t": last_progress,
                        "subscribed": ok,
                        "refused": sum(errors.values()),
                        "sent": sent,
                    }
                }
            )
    return {
        "requested": len(topics),
        "sent": sent,
        "subscribed": ok,
        "refused": dict(errors.most_common(8)),
        "seconds": round(now() - t0, 2),
        "t_done": now(),
    }


def wamp_attack_main(cfg: dict[str, Any]) -> None:
    raise_nofile()
    watch_parent()
    use_twisted()
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    result: dict[str, Any] = {"t_start": now()}
    attack = cfg["attack"]
    main = {"wildcard": _wildcard, "exact": _exact, "payload": _payload}[attack]
    emit({"started": True, "t": result["t_start"]})

    def failed(failure: Any) -> None:
        result["error"] = f"{failure.type.__name__}: {failure.getErrorMessage()}"

    d = ensureDeferred(main(reactor, cfg, result))
    d.addErrback(failed)
    d.addBoth(lambda _: reactor.stop())
    reactor.callLater(
        cfg["duration"] + 60, lambda: (result.setdefault("error", "hard deadline"), reactor.stop())
    )
    reactor.run()
    result["t_end"] = result.get("t_end") or now()
    emit({"result": result})


async def _wildcard(reactor: Any, cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """One session subscribes every wildcard pattern matching p0.….p15, then publishes to p0.….p15
    (acknowledged, exclude_me=False) every ``publish_interval`` s until ``duration``."""
    from autobahn.wamp.serializer import JsonSerializer
    from autobahn.wamp.types import PublishOptions, SubscribeOptions

    deadline = result["t_start"] + cfg["duration"]
    peer = Peer(reactor, cfg["port"], JsonSerializer(), bind=cfg["sources"][0])
    await peer.connect()
    events: Counter[int] = Counter()
    last_event: dict[int, float] = {}

    def on_event(*args: Any, details: Any = None, **kwargs: Any) -> None:
        publication = getattr(details, "publication", None)
        events[publication] += 1
        last_event[publication] = now()

    patterns = wildcard_patterns(cfg["parts"])
    options = SubscribeOptions(match="wildcard", details_arg="details")
    result["subscribe"] = await _subscribe_batches(
        reactor, peer, patterns, options, on_event, cfg["window"], deadline
    )
    topic = wildcard_topic(cfg["parts"])
    publishes = []
    n = 0
    while peer.session is not None and (now() < deadline or n < cfg["min_publishes"]):
        if now() > deadline + 30:
            break
        n += 1
        t0 = now()
        d = peer.session.publish(topic, n, options=PublishOptions(acknowledge=True, exclude_me=False))
        ok, value = await within(reactor, d, 30.0)
        answer = "PUBLISHED" if ok else ("no answer in 30 s" if ok is None else error_name(value))
        publishes.append(
            {
                "t": t0,
                "answer": answer,
                "answer_ms": round((now() - t0) * 1000, 1),
                "publication": getattr(value, "id", None) if ok else None,
            }
        )
        emit({"progress": {"t": now(), "publish": n, "answer": answer}})
        await sleep(reactor, cfg["publish_interval"] - (now() - t0))
    await sleep(reactor, 2.0)
    result["t_end"] = now()
    for p in publishes:
        pub = p.pop("publication")
        p["events_received"] = events.get(pub, 0) if pub is not None else None
        p["last_event_after_ms"] = round((last_event[pub] - p["t"]) * 1000, 1) if pub in last_event else None
    result["publish_topic"] = topic
    result["publishes"] = publishes
    result["events_total"] = sum(events.values())
    result["session_end"] = peer.end
    if peer.session is not None:
        peer.session.leave()
        await within(reactor, peer.gone, 3.0)


async def _exact(reactor: Any, cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """One session subscribes ``subscriptions`` distinct exact topics, holds them ``hold`` s, leaves."""
    from autobahn.wamp.serializer import JsonSerializer

    deadline = result["t_start"] + cfg["duration"]
    peer = Peer(reactor, cfg["port"], JsonSerializer(), bind=cfg["sources"][0])
    await peer.connect()
    topics = [f"bench.exact.{i}" for i in range(cfg["subscriptions"])]
    result["subscribe"] = await _subscribe_batches(
        reactor, peer, topics, None, lambda *a, **k: None, cfg["window"], deadline
    )
    await sleep(reactor, cfg["hold"])
    result["t_end"] = now()
    result["session_end"] = peer.end
    if peer.session is not None:
        peer.session.leave()
        await within(reactor, peer.gone, 5.0)


def _payload_values(kinds: list[str]) -> list[tuple[str, Any]]:
    import datetime

    values = []
    for kind in kinds:
        if kind == "datetime":
            values.append((kind, datetime.datetime.now(datetime.UTC)))
        elif kind == "bigint":
            values.append((kind, 2**70))
        elif kind == "undefined":
            import cbor2

            values.append((kind, cbor2.undefined))
        elif kind == "tag":
            import cbor2

            values.append((kind, cbor2.CBORTag(4000, "x")))
        else:
            raise HarnessError(f"unknown --payload-values kind {kind!r}")
    return values


async def _payload(reactor: Any, cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """Subscribers on x.y with cbor, json, msgpack, cbor (subscribed in that order); a CBOR publisher sends
    a value JSON cannot carry (acknowledged), then a valid one, every ``interval`` s."""
    from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
    from autobahn.wamp.types import PublishOptions

    deadline = result["t_start"] + cfg["duration"]
    source = cfg["sources"][0]
    topic = "x.y"
    subscribers = []
    for name, serializer in (
        ("cbor", CBORSerializer()),
        ("json", JsonSerializer()),
        ("msgpack", MsgPackSerializer()),
        ("cbor", CBORSerializer()),
    ):
        peer = Peer(reactor, cfg["port"], serializer, bind=source)
        session = await peer.connect()
        got: Counter[str] = Counter()

        def on_event(*args: Any, _got: Counter[str] = got, **kwargs: Any) -> None:
            value = args[0] if args else None
            _got["valid" if isinstance(value, dict) and "seq" in value else "bad"] += 1

        await session.subscribe(on_event, topic)
        subscribers.append((name, peer, got))
    publisher = Peer(reactor, cfg["port"], CBORSerializer(), bind=source)
    await publisher.connect()
    outcomes: dict[str, Counter[str]] = {"bad": Counter(), "valid": Counter()}
    reconnects = 0
    sent = {"bad": 0, "valid": 0}
    seq = 0
    while now() < deadline:
        t0 = now()
        for kind, value in _payload_values(cfg["values"]):
            for label, args in (("bad", [value]), ("valid", [{"seq": seq}])):
                if publisher.session is None:
                    outcomes[label][f"publisher gone ({publisher.end})"] += 1
                    reconnects += 1
                    publisher = Peer(reactor, cfg["port"], CBORSerializer(), bind=source)
                    ok, _ = await within(reactor, publisher.connect(), 5.0)
                    if not ok:
                        continue
                sent[label] += 1
                seq += 1
                try:
                    d = publisher.session.publish(topic, *args, options=PublishOptions(acknowledge=True))
                except Exception as err:
                    outcomes[label][f"{kind}: client raised {type(err).__name__}: {str(err)[:60]}"] += 1
                    continue
                ok, answer = await within(reactor, d, 3.0)
                what = "PUBLISHED" if ok else ("no answer in 3 s" if ok is None else error_name(answer))
                outcomes[label][f"{kind}: {what}" if label == "bad" else what] += 1
        emit({"progress": {"t": now(), "published": dict(sent)}})
        await sleep(reactor, cfg["interval"] - (now() - t0))
    await sleep(reactor, 2.0)
    result["t_end"] = now()
    result["values"] = cfg["values"]
    result["sent"] = sent
    result["publisher_got"] = {k: dict(v) for k, v in outcomes.items()}
    result["publisher_reconnects"] = reconnects
    result["subscribers"] = [
        {
            "serializer": name,
            "bad_received": got["bad"],
            "valid_received": got["valid"],
            "session_end": peer.end,
        }
        for name, peer, got in subscribers
    ]
    for _, peer, _ in subscribers:
        if peer.session is not None:
            peer.session.leave()


def attacker_main(cfg: dict[str, Any]) -> None:
    if cfg["attack"] in RAW_ATTACKS:
        watch_parent()
        flood = RawFlood(cfg)
        emit({"result": flood.run()})
    else:
        wamp_attack_main(cfg)


# ----------------------------------------------------------------------------------------------------------
# the orchestrator


def summarize_closes(closes: dict[str, list[float]], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """ "<fin|reset> while <state>" -> count and how long those connections lived (p50, max)."""
    return {
        k: {
            "count": (counts or {}).get(k, len(v)),
            "lived_s_p50": _r(percentile(v, 50), 2),
            "lived_s_max": _r(max(v), 2) if v else None,
        }
        for k, v in sorted(closes.items())
    }


def merge_raw_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One socket attack's figures over its attacker processes (counts summed; "at once" peaks summed too,
    an upper bound since the processes peak at about the same time)."""
    ok = [r for r in results if "error" not in r]
    if len(results) == 1 or not ok:
        return results[0]
    merged: dict[str, Any] = dict(ok[0])
    summed = (
        "target_sockets",
        "requested_sockets",
        "payload_bytes_total",
        "connected_total",
        "max_open_at_once",
        "open_at_end",
        "server_closed",
        "server_fin",
        "server_reset",
        "connect_failed",
        "attacker_out_of_fds",
        "bytes_sent",
        "trickled_lines",
    )
    for key in summed:
        merged[key] = sum(r.get(key) or 0 for r in ok)
    if ok[0].get("max_ws_open_at_once") is not None:
        merged["max_ws_open_at_once"] = sum(r.get("max_ws_open_at_once") or 0 for r in ok)
    for key in ("connect_errors", "server_said"):
        total: Counter[str] = Counter()
        for r in ok:
            total.update(r.get(key) or {})
        merged[key] = dict(total.most_common())
    sample = [x for r in ok for x in r.get("open_seconds_sample", [])]
    merged["open_seconds_sample"] = sample[:5000]
    merged["open_seconds_before_server_close_p50"] = percentile(sample, 50)
    merged["open_seconds_before_server_close_max"] = max(
        (
            r["open_seconds_before_server_close_max"]
            for r in ok
            if r.get("open_seconds_before_server_close_max")
        ),
        default=None,
    )
    samples: dict[str, list[float]] = {}
    counts: Counter[str] = Counter()
    for r in ok:
        for k, v in (r.get("closes_sample") or {}).items():
            samples.setdefault(k, []).extend(v)
        for k, v in (r.get("server_closes") or {}).items():
            counts[k] += v["count"]
    merged["server_closes"] = summarize_closes(samples, counts)
    merged["t_start"] = min(r["t_start"] for r in ok)
    merged["t_end"] = max(r["t_end"] for r in ok)
    merged["timeline"] = [row for r in ok for row in r.get("timeline", [])][:600]
    merged["processes"] = len(results)
    merged["processes_failed"] = len(results) - len(ok)
    return merged


class Proc:
    """A child process started by the harness; stopped by its pid (SIGTERM, then SIGKILL)."""

    started: list[Proc] = []

    def __init__(
        self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str], logdir: Path, json_out: bool
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.err_path = logdir / f"{name}.stderr"
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._log = open(self.log_path, "wb")  # closed in stop()
        self._err = open(self.err_path, "wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if json_out else subprocess.DEVNULL,
            stdout=subprocess.PIPE if json_out else self._log,
            stderr=self._err if json_out else subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the harness only; it stops the children itself
        )
        self.pid = self.popen.pid
        Proc.started.append(self)
        if json_out:
            threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self._log.write(raw)
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue
        self._log.flush()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, line: str) -> None:
        if self.popen.stdin is not None and self.alive():
            with contextlib.suppress(OSError):
                self.popen.stdin.write(line.encode() + b"\n")
                self.popen.stdin.flush()

    def next_line(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def tail(self, lines: int = 15) -> str:
        chunks = []
        for path in (self.err_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip().splitlines()
                if text:
                    chunks.append(f"--- {path.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks)

    def stop(self, grace: float = 10.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        for f in (self._log, self._err):
            with contextlib.suppress(OSError):
                f.close()
        if self in Proc.started:
            Proc.started.remove(self)
        return self.popen.returncode

    @classmethod
    def stop_all(cls) -> None:
        for proc in reversed(list(cls.started)):
            proc.stop(grace=5.0)


class Sampler(threading.Thread):
    """Every ``interval`` s: VmRSS (KiB), open fds and CPU ticks of one process, from /proc."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int, int]] = []
        self.halt = threading.Event()

    def sample(self) -> tuple[float, int, int, int] | None:
        try:
            rss = 0
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                        break
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            return None
        return (now(), rss, fds, ticks)

    def run(self) -> None:
        while not self.halt.is_set():
            s = self.sample()
            if s is not None:
                self.samples.append(s)
            self.halt.wait(self.interval)

    def window(self, t0: float, t1: float) -> list[tuple[float, int, int, int]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


#: TcpExt counters of /proc/net/netstat that say the kernel, not the server, refused or dropped connections
KERNEL_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "SyncookiesFailed",
)


def kernel_counters() -> dict[str, int]:
    """Machine-wide TCP counters (all processes): listen-queue overflows and SYN cookies."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in KERNEL_COUNTERS}
    return {}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages, as /proc/loadavg says them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as err:
            raise HarnessError(
                f"port {port} on {HOST} is busy ({err.strerror}): pick another --port or omit it"
            ) from None


def http_status(port: int, timeout: float = 1.0) -> int | None:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET /api/articles/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(200)
    except OSError:
        return None
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.source = Path(args.source).resolve()
        self.python = sys.executable
        self.logdir = Path(tempfile.mkdtemp(prefix="attacks-"))
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(self.source) + (
            os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else ""
        )
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the source tree as it is
        self.env["PYTHONUNBUFFERED"] = "1"
        self.sources = attacker_sources(args.attacker_ips)
        self.sandstone_file: str | None = None
        self.keep_dir = Path(args.output_dir)
        self.nofile = raise_nofile()

    # -- processes

    def start_server(self, name: str, app: str) -> tuple[Proc, int]:
        port = self.args.port or free_port()
        check_port(port)
        cmd = [
            self.python,
            str(Path(__file__).resolve()),
            "--_server",
            str(self.source),
            "-n",
            "--pidfile=",
            "sandstone",
            "--listen",
            f"tcp:{port}:interface={HOST}",
        ]
        if app == "blog":
            cmd += ["--app", "examples.blog:app"]
        cmd += self.args.server_arg
        proc = Proc(f"{name}-server", cmd, cwd=self.source, env=self.env, logdir=self.logdir, json_out=False)
        deadline = now() + 30
        while now() < deadline:
            if not proc.alive():
                code = proc.popen.returncode
                tail = proc.tail()
                proc.stop()
                hint = " (port busy?)" if "Address already in use" in tail or "CannotListen" in tail else ""
                raise HarnessError(f"the server exited with status {code} before serving{hint}:\n{tail}")
            if http_status(port) is not None:
                break
            time.sleep(0.2)
        else:
            tail = proc.tail()
            proc.stop()
            raise HarnessError(f"the server did not answer HTTP on port {port} within 30 s:\n{tail}")
        text = proc.log_path.read_text(errors="replace")
        marker = "attacks.py: sandstone imported from "
        line = next((ln for ln in text.splitlines() if ln.startswith(marker)), None)
        if line is None:
            proc.stop()
            raise HarnessError(f"the server did not say which sandstone it imported:\n{proc.tail()}")
        self.sandstone_file = line[len(marker) :].strip()
        return proc, port

    def start_child(self, name: str, flag: str, cfg: dict[str, Any]) -> Proc:
        cmd = [self.python, str(Path(__file__).resolve()), flag, json.dumps(cfg)]
        return Proc(name, cmd, cwd=REPO_DIR, env=self.env, logdir=self.logdir, json_out=True)

    # -- one attack

    def attack_config(self, name: str, port: int) -> dict[str, Any]:
        a = self.args
        cfg: dict[str, Any] = {"attack": name, "port": port, "sources": self.sources}
        raw = {
            "reopen": a.reopen,
            "reopen_delay": a.reopen_delay,
            "max_connecting": a.max_connecting,
            "connect_timeout": a.connect_timeout,
            "trickle": a.slowloris_interval,
            "header_line": a.headers_line,
            "header_bytes": a.headers_bytes,
        }
        if name in ("headers", "headers_rest"):
            cfg.update(raw, sockets=a.headers_sockets, duration=a.headers_duration)
        elif name == "slowloris":
            cfg.update(raw, sockets=a.slowloris_sockets, duration=a.slowloris_duration)
        elif name in ("halfopen", "halfopen_head"):
            cfg.update(raw, sockets=a.halfopen_sockets, duration=a.halfopen_duration)
        elif name == "wildcard":
            cfg.update(
                parts=a.wildcard_parts,
                duration=a.wildcard_duration,
                window=a.subscribe_window,
                publish_interval=a.wildcard_publish_interval,
                min_publishes=a.wildcard_min_publishes,
            )
        elif name == "exact":
            cfg.update(
                subscriptions=a.exact_subscriptions,
                duration=a.exact_duration,
                hold=a.exact_hold,
                window=a.subscribe_window,
            )
        elif name == "payload":
            cfg.update(
                duration=a.payload_duration,
                interval=a.payload_interval,
                values=[v.strip() for v in a.payload_values.split(",") if v.strip()],
            )
        return cfg

    def run_attack(self, name: str) -> dict[str, Any]:
        a = self.args
        app = ATTACK_APPS[name]
        print(
            f"\n== {name} ({'examples.blog:app' if app == 'blog' else 'open router'}) loadavg {loadavg()}",
            flush=True,
        )
        server, port = self.start_server(name, app)
        sampler = Sampler(server.pid, a.sample_interval)
        sampler.start()
        out: dict[str, Any] = {"app": app, "port": port, "server_pid": server.pid}
        probe = None
        attackers: list[Proc] = []
        try:
            probe = self.start_child(
                f"{name}-probe",
                "--_probe",
                {
                    "port": port,
                    "mode": app,
                    "interval": a.interval,
                    "check_interval": a.check_interval,
                    "check_timeout": a.check_timeout,
                    "drain": a.drain,
                },
            )
            self._wait_for(probe, "ready", 30, server, "the legitimate subscriber got no EVENT")
            t_base = now()
            print(f"   legit client ready; baseline {a.baseline:g} s", flush=True)
            time.sleep(a.baseline)
            load_before = loadavg()
            busy0, total0 = machine_ticks()
            kernel0 = kernel_counters()
            cfg = self.attack_config(name, port)
            shares = self.attacker_shares(name, cfg)
            out["attack_config"] = {k: v for k, v in cfg.items() if k != "port"}
            out["attacker_processes"] = len(shares)
            t_attack = now()
            for i, share in enumerate(shares):
                attackers.append(self.start_child(f"{name}-attacker{i + 1}", "--_attacker", share))
            results, progress, server_died = self._follow_attackers(attackers, server, cfg["duration"] + 90)
            t_attack_end = now()
            for proc in attackers:
                proc.stop(grace=15)
            t_attacker_gone = now()
            busy1, total1 = machine_ticks()
            kernel1 = kernel_counters()
            out["kernel_tcp_during_attack"] = {k: kernel1.get(k, 0) - v for k, v in kernel0.items()}
            print(f"   attacker done; recovery {a.recovery:g} s", flush=True)
            if not server_died:
                deadline = now() + a.recovery
                while now() < deadline and server.alive():
                    time.sleep(0.2)
            t_end = now()
            probe.send("stop")
            probe_result = self._wait_for(
                probe, "result", a.drain + a.check_timeout + 30, None, "the probe gave no result"
            )
            out["probe_incidents"] = probe_result["incidents"][:50]
            out["probe_duplicates"] = probe_result["duplicates"]
            out["probe_unknown_events"] = probe_result["unknown_events"]
            out["attacker"] = merge_raw_results(results) if name in RAW_ATTACKS else results[0]
            for key in ("open_seconds_sample", "closes_sample"):
                out["attacker"].pop(key, None)
            if len(results) > 1:
                out["attacker_per_process"] = [
                    {
                        k: v
                        for k, v in r.items()
                        if k not in ("timeline", "open_seconds_sample", "closes_sample")
                    }
                    for r in results
                ]
            out["attacker_progress"] = progress[-300:]
            out["server_died"] = server_died or (
                None if server.alive() else f"exit status {server.popen.returncode}"
            )
            phases = {
                "baseline": (t_base, t_attack),
                "attack": (t_attack, t_attacker_gone),
                "recovery": (t_attacker_gone, t_end),
            }
            out["phases"] = {k: [round(v[0] - t_base, 2), round(v[1] - t_base, 2)] for k, v in phases.items()}
            out["server"] = self._server_figures(sampler, phases)
            cores = os.cpu_count() or 1
            out["machine_cpu_percent_during_attack"] = round(
                100 * cores * (busy1 - busy0) / max(1, total1 - total0), 1
            )
            out["loadavg_before_attack"] = load_before
            out["loadavg_after_attack"] = loadavg()
            out["legit"] = {k: self._legit_figures(probe_result, t0, t1) for k, (t0, t1) in phases.items()}
            out["attacker_seconds"] = round(t_attack_end - t_attack, 1)
        finally:
            for proc in [*attackers, probe]:
                if proc is not None:
                    proc.stop(grace=5)
            sampler.halt.set()
            sampler.join(2)
            server.stop(grace=15)
            out["server_log"] = self._server_log(server)
            if a.keep_logs:
                dest = self.keep_dir / name
                dest.mkdir(parents=True, exist_ok=True)
                for path in self.logdir.glob(f"{name}-*"):
                    shutil.copy(path, dest / path.name)
        return out

    def attacker_shares(self, name: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        """One config per attacker process: a socket attack needing more sockets than one process may open
        (its hard open-files limit, less a margin) is split over several processes."""
        if name not in RAW_ATTACKS:
            return [cfg]
        per_process = max(1, self.nofile - 100)
        count = -(-cfg["sockets"] // per_process)
        shares = []
        for i in range(count):
            sockets = cfg["sockets"] // count + (1 if i < cfg["sockets"] % count else 0)
            shares.append(dict(cfg, sockets=sockets))
        return shares

    def _wait_for(self, proc: Proc, key: str, timeout: float, server: Proc | None, what: str) -> Any:
        deadline = now() + timeout
        while now() < deadline:
            line = proc.next_line(0.2)
            if line is not None and key in line:
                return line[key]
            if line is None and not proc.alive() and proc.lines.empty():
                raise HarnessError(f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.tail()}")
            if server is not None and not server.alive():
                raise HarnessError(
                    f"the server exited with status {server.popen.returncode}:\n{server.tail()}"
                )
        raise HarnessError(f"{what} within {timeout:g} s:\n{proc.tail()}")

    def _follow_attackers(
        self, attackers: list[Proc], server: Proc, timeout: float
    ) -> tuple[list[dict[str, Any]], list[Any], str | None]:
        """Wait for every attacker's result line; progress lines are kept (and printed every 5 s)."""
        deadline = now() + timeout
        progress: list[Any] = []
        results: dict[int, dict[str, Any]] = {}
        last_print = now()
        while len(results) < len(attackers):
            if now() >= deadline:
                for i in range(len(attackers)):
                    results.setdefault(i, {"error": f"no result within {timeout:g} s"})
                break
            for i, proc in enumerate(attackers):
                if i in results:
                    continue
                while (line := proc.next_line(0)) is not None:
                    if "result" in line:
                        results[i] = line["result"]
                    elif "progress" in line:
                        progress.append(dict(line["progress"], process=i + 1))
                if i not in results and not proc.alive() and proc.lines.empty():
                    raise HarnessError(
                        f"{proc.name} exited with status {proc.popen.returncode}, no result:\n{proc.tail()}"
                    )
            if not server.alive():
                msg = f"exit status {server.popen.returncode} during the attack"
                print(f"   THE SERVER DIED: {msg}", flush=True)
                for i, proc in enumerate(attackers):
                    proc.stop(grace=5)
                    results.setdefault(i, {"error": "server died"})
                return [results[i] for i in range(len(attackers))], progress, msg
            if progress and now() - last_print >= 5:
                last_print = now()
                latest: dict[int, dict[str, Any]] = {}
                for row in progress:
                    latest[row["process"]] = row
                for row in latest.values():
                    shown = {k: v for k, v in row.items() if k not in ("t", "process")}
                    print(f"   attacker{row['process']}: {shown}", flush=True)
            time.sleep(0.1)
        return [results[i] for i in range(len(attackers))], progress, None

    @staticmethod
    def _server_figures(sampler: Sampler, phases: dict[str, tuple[float, float]]) -> dict[str, Any]:
        mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
        tck = os.sysconf("SC_CLK_TCK")
        fig: dict[str, Any] = {}
        for name, (t0, t1) in phases.items():
            w = sampler.window(t0, t1)
            if not w:
                fig[name] = None
                continue
            cpu = 100 * (w[-1][3] - w[0][3]) / tck / max(1e-6, w[-1][0] - w[0][0]) if len(w) > 1 else None
            fig[name] = {
                "rss_first_mib": mib(w[0][1]),
                "rss_last_mib": mib(w[-1][1]),
                "rss_peak_mib": mib(max(s[1] for s in w)),
                "fds_first": w[0][2],
                "fds_last": w[-1][2],
                "fds_peak": max(s[2] for s in w),
                "cpu_percent": round(cpu, 1) if cpu is not None else None,
                "samples": len(w),
            }
        base, attack, rec = fig.get("baseline"), fig.get("attack"), fig.get("recovery")
        fig["rss_before_mib"] = base["rss_last_mib"] if base else None
        fig["rss_peak_mib"] = attack["rss_peak_mib"] if attack else None
        fig["rss_after_mib"] = rec["rss_last_mib"] if rec else (attack["rss_last_mib"] if attack else None)
        fig["fds_before"] = base["fds_last"] if base else None
        fig["fds_peak"] = attack["fds_peak"] if attack else None
        fig["fds_after"] = rec["fds_last"] if rec else None
        # the RSS curve, 1 sample a second, to see when it grew and whether it came down
        t0 = phases["baseline"][0]
        curve, last = [], -1.0
        for s in sampler.samples:
            if s[0] - last >= 1.0:
                last = s[0]
                curve.append([round(s[0] - t0, 1), mib(s[1]), s[2]])
        fig["curve_t_rss_mib_fds"] = curve
        return fig

    @staticmethod
    def _legit_figures(probe: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
        posts = [p for p in probe["posts"] if t0 <= p[1] < t1]
        answered = [p for p in posts if p[3] in (201, "PUBLISHED")]
        delivered = [p for p in posts if p[4] is not None]
        lat = [(p[4] - p[1]) * 1000 for p in delivered]
        answers = Counter(str(p[3]) for p in posts)
        figures: dict[str, Any] = {
            "published": len(posts),
            "answered_ok": len(answered),
            "answers": dict(answers),
            "delivered": len(delivered),
            "lost": len(posts) - len(delivered),
            "latency_ms_p50": _r(percentile(lat, 50)),
            "latency_ms_p99": _r(percentile(lat, 99)),
            "latency_ms_max": _r(max(lat) if lat else None),
        }
        for kind in ("rest", "ws"):
            mine = [c for c in probe["checks"] if c[0] == kind and t0 <= c[1] < t1]
            ok = [c for c in mine if c[3]]
            lat = [(c[2] - c[1]) * 1000 for c in ok]
            figures[f"new_{kind}"] = {
                "tried": len(mine),
                "ok": len(ok),
                "ratio": round(len(ok) / len(mine), 3) if mine else None,
                "latency_ms_p50": _r(percentile(lat, 50)),
                "latency_ms_max": _r(max(lat) if lat else None),
                "outcomes": dict(Counter(c[4] for c in mine).most_common(6)),
            }
        return figures

    @staticmethod
    def _server_log(server: Proc) -> dict[str, Any]:
        levels: Counter[str] = Counter()
        notable: Counter[str] = Counter()
        tracebacks = 0
        with contextlib.suppress(OSError), open(server.log_path, errors="replace") as f:
            for line in f:
                if line.lstrip().startswith("Traceback"):
                    tracebacks += 1
                    continue
                head, sep, message = line.partition("] ")
                if not sep or " [" not in head:
                    continue
                system = head.rpartition(" [")[2]
                level = system.rpartition("#")[2] if "#" in system else "-"
                levels[level] += 1
                if level in ("warn", "error", "critical"):
                    key = "".join("N" if ch.isdigit() else ch for ch in message.strip())[:120]
                    notable[f"{level}: {key}"] += 1
        size = server.log_path.stat().st_size if server.log_path.exists() else 0
        return {
            "lines_by_level": dict(levels),
            "tracebacks": tracebacks,
            "bytes": size,
            "warn_error_critical": dict(notable.most_common(10)),
        }


def _r(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None else None


# ----------------------------------------------------------------------------------------------------------
# report


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def attacker_summary(name: str, res: dict[str, Any]) -> str:
    name = name.partition("#")[0]
    a = res.get("attacker") or {}
    if a.get("error") and len(a) <= 2:
        return f"attacker: {a['error']}"
    if name in RAW_ATTACKS:
        said = a.get("server_said", {})
        said_text = "; ".join(f"{k} x{v:,}" for k, v in list(said.items())[:4]) or "nothing"
        errs = a.get("connect_errors", {})
        parts = [
            f"{a.get('connected_total', 0):,} connections made (target {a.get('target_sockets', 0):,}"
            + (
                f" of {a['requested_sockets']:,} requested"
                if a.get("requested_sockets") != a.get("target_sockets")
                else ""
            )
            + f"), {a.get('max_open_at_once', 0):,} open at once"
            + (
                f", {a['max_ws_open_at_once']:,} WebSockets open at once"
                if a.get("max_ws_open_at_once") is not None
                else ""
            ),
            f"closed on the server side: {a.get('server_closed', 0):,}"
            + "".join(
                f"; {k} {v['count']:,} (lived p50 {_fmt(v['lived_s_p50'], 2)} s)"
                for k, v in (a.get("server_closes") or {}).items()
            ),
            f"server said: {said_text}",
        ]
        if errs:
            parts.append("connect failures: " + ", ".join(f"{k} x{v:,}" for k, v in errs.items()))
        if a.get("attacker_out_of_fds"):
            parts.append(f"attacker ran out of fds {a['attacker_out_of_fds']:,} times")
        kernel = res.get("kernel_tcp_during_attack") or {}
        if kernel.get("ListenOverflows") or kernel.get("SyncookiesSent"):
            parts.append(
                f"kernel (machine-wide): listen-queue overflows {kernel.get('ListenOverflows', 0):,}, "
                f"SYN cookies sent {kernel.get('SyncookiesSent', 0):,}"
                f" / failed {kernel.get('SyncookiesFailed', 0):,}"
            )
        return "\n      ".join(parts)
    if name in ("wildcard", "exact"):
        sub = a.get("subscribe", {})
        text = (
            f"{sub.get('subscribed', 0):,}/{sub.get('requested', 0):,} SUBSCRIBEs accepted in "
            f"{_fmt(sub.get('seconds'), 1)} s; refused: {sub.get('refused') or 'none'}"
        )
        if name == "wildcard":
            pubs = a.get("publishes", [])
            ev = [p["events_received"] for p in pubs if p.get("events_received") is not None]
            ans = Counter(p["answer"] for p in pubs)
            ack = [p["answer_ms"] for p in pubs]
            last = [p["last_event_after_ms"] for p in pubs if p.get("last_event_after_ms") is not None]
            text += (
                f"\n      {len(pubs)} PUBLISH: answers {dict(ans)}, "
                f"answer ms p50 {_fmt(percentile(ack, 50))} "
                f"max {_fmt(max(ack) if ack else None)}; EVENTs received per publish "
                f"{min(ev) if ev else '-'}..{max(ev) if ev else '-'} (total {a.get('events_total', 0):,}); "
                f"last EVENT of a publish after p50 {_fmt(percentile(last, 50))} ms"
            )
        text += f"\n      session end: {a.get('session_end') or 'still open at the end (left normally)'}"
        if a.get("error"):
            text += f"\n      error: {a['error']}"
        return text
    if name == "payload":
        subs = ", ".join(
            f"{s['serializer']}: bad {s['bad_received']} valid {s['valid_received']}"
            + (f" ({s['session_end']})" if s.get("session_end") else "")
            for s in a.get("subscribers", [])
        )
        sent = a.get("sent", {})
        got = a.get("publisher_got", {})
        text = (
            f"sent bad {sent.get('bad', 0)}, valid {sent.get('valid', 0)}; subscribers got: {subs}"
            f"\n      publisher got for bad: {got.get('bad')}; for valid: {got.get('valid')}"
        )
        if a.get("publisher_reconnects"):
            text += f"; publisher reconnected {a['publisher_reconnects']} times"
        if a.get("error"):
            text += f"\n      error: {a['error']}"
        return text
    return json.dumps(a)[:300]


def print_table(report: dict[str, Any]) -> None:
    print()
    print(f"label {report['label']}  source {report['source']} ({report['source_commit']})")
    cols = [
        "attack",
        "RSS MiB before/peak/after",
        "fds before/peak",
        "srv CPU%",
        "stall ms max/p99 (base p99)",
        "lost/sent",
        "new REST ok",
        "new WS ok",
        "log warn+/tb",
    ]
    rows = []
    for name, res in report["attacks"].items():
        if "error" in res and "server" not in res:
            rows.append([name, "ERROR: " + res["error"].splitlines()[0][:80]] + [""] * (len(cols) - 2))
            continue
        s = res["server"]
        att = s.get("attack") or {}
        lg = res["legit"]["attack"]
        base = res["legit"]["baseline"]
        rest, ws = lg["new_rest"], lg["new_ws"]
        log = res.get("server_log", {})
        levels = log.get("lines_by_level", {})
        warn = sum(levels.get(k, 0) for k in ("warn", "error", "critical"))
        rows.append(
            [
                name + (" (DIED)" if res.get("server_died") else ""),
                f"{_fmt(s['rss_before_mib'])}/{_fmt(s['rss_peak_mib'])}/{_fmt(s['rss_after_mib'])}",
                f"{_fmt(s['fds_before'])}/{_fmt(s['fds_peak'])}",
                _fmt(att.get("cpu_percent")),
                f"{_fmt(lg['latency_ms_max'])}/{_fmt(lg['latency_ms_p99'])}"
                f" ({_fmt(base['latency_ms_p99'], 1)})",
                f"{lg['lost']}/{lg['published']}",
                f"{rest['ok']}/{rest['tried']}"
                + (f" p50 {_fmt(rest['latency_ms_p50'])}ms" if rest["ok"] else ""),
                f"{ws['ok']}/{ws['tried']}" + (f" p50 {_fmt(ws['latency_ms_p50'])}ms" if ws["ok"] else ""),
                f"{warn:,}/{log.get('tracebacks', 0):,}",
            ]
        )
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\nwhat the attacker got:")
    for name, res in report["attacks"].items():
        if "attacker" in res:
            print(f"  {name}: {attacker_summary(name, res)}")
    print("\nnot-ok answers of the legit client during the attack:")
    for name, res in report["attacks"].items():
        if "legit" not in res:
            continue
        lg = res["legit"]["attack"]
        bad = {k: v for k, v in lg["answers"].items() if k not in ("201", "PUBLISHED")}
        rest = {
            k: v
            for k, v in lg["new_rest"]["outcomes"].items()
            if not k.startswith("status 2") and k != "status 404"
        }
        ws = {k: v for k, v in lg["new_ws"]["outcomes"].items() if k != "WELCOME"}
        if bad or rest or ws:
            print(f"  {name}: publications {bad or '-'}; new REST {rest or '-'}; new WS {ws or '-'}")


# ----------------------------------------------------------------------------------------------------------
# command line


def git_describe(path: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "not a git checkout"
    return head + (f" + {len(dirty.splitlines())} changed file(s)" if dirty else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run issue 10's attacks one at a time against a fresh sandstone server and report RSS, "
        "fds, the stall of a legitimate subscriber and what the attacker got.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--source", default=str(REPO_DIR), help="sandstone checkout to serve (its own sandstone is imported)"
    )
    p.add_argument(
        "--label", default=None, help="name in the results file (default: the source directory's name)"
    )
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, from {','.join(ATTACKS)}")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one per attack)")
    p.add_argument("--output-dir", default=str(BENCH_DIR / "results"))
    p.add_argument("--keep-logs", action="store_true", help="copy every process's log next to the JSON")
    p.add_argument(
        "--quick", action="store_true", help="small sizes and short phases: a smoke test of the harness"
    )
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra 'twistd sandstone' option (repeatable)"
    )
    g = p.add_argument_group("phases and the legitimate client")
    g.add_argument("--baseline", type=float, default=5.0, help="seconds measured before the attack")
    g.add_argument("--recovery", type=float, default=10.0, help="seconds measured after the attacker exited")
    g.add_argument("--interval", type=float, default=0.1, help="seconds between legit publications (POSTs)")
    g.add_argument("--check-interval", type=float, default=0.5, help="seconds between fresh REST/WS checks")
    g.add_argument("--check-timeout", type=float, default=5.0, help="seconds a fresh check may take")
    g.add_argument("--drain", type=float, default=3.0, help="seconds to wait for the last EVENTs at the end")
    g.add_argument(
        "--sample-interval", type=float, default=0.1, help="seconds between /proc samples of the server"
    )
    g = p.add_argument_group("socket attacks (headers, headers_rest, slowloris, halfopen, halfopen_head)")
    g.add_argument(
        "--attacker-ips", type=int, default=1, help="source addresses 127.0.0.2... (legit is 127.0.0.1)"
    )
    g.add_argument(
        "--no-reopen", dest="reopen", action="store_false", help="do not reopen sockets the server closed"
    )
    g.add_argument(
        "--reopen-delay", type=float, default=1.0, help="seconds before a closed socket is reopened"
    )
    g.add_argument("--max-connecting", type=int, default=2000, help="connects in progress at once")
    g.add_argument("--connect-timeout", type=float, default=5.0)
    g.add_argument("--headers-sockets", type=int, default=1500)
    g.add_argument(
        "--headers-bytes", type=int, default=MiB, help="header bytes each socket sends (no blank line)"
    )
    g.add_argument("--headers-line", type=int, default=1000, help="bytes per X-Pad line")
    g.add_argument("--headers-duration", type=float, default=30.0)
    g.add_argument(
        "--slowloris-sockets", type=int, default=20500, help="a little over the server's fd limit (20,000)"
    )
    g.add_argument("--slowloris-interval", type=float, default=20.0, help="seconds between header lines")
    g.add_argument("--slowloris-duration", type=float, default=70.0)
    g.add_argument("--halfopen-sockets", type=int, default=12000, help="halfopen and halfopen_head")
    g.add_argument("--halfopen-duration", type=float, default=40.0)
    g = p.add_argument_group("WAMP attacks (wildcard, exact, payload; open router)")
    g.add_argument("--subscribe-window", type=int, default=1000, help="SUBSCRIBEs in flight")
    g.add_argument("--wildcard-parts", type=int, default=16, help="topic parts: 2**N - 1 patterns")
    g.add_argument("--wildcard-duration", type=float, default=40.0)
    g.add_argument("--wildcard-publish-interval", type=float, default=3.0)
    g.add_argument("--wildcard-min-publishes", type=int, default=3)
    g.add_argument("--exact-subscriptions", type=int, default=200_000)
    g.add_argument("--exact-hold", type=float, default=10.0, help="seconds the subscriptions are held")
    g.add_argument("--exact-duration", type=float, default=120.0, help="upper bound of the subscribe phase")
    g.add_argument("--payload-duration", type=float, default=20.0)
    g.add_argument("--payload-interval", type=float, default=1.0)
    g.add_argument(
        "--payload-values", default="datetime", help="values JSON cannot carry: datetime,bigint,undefined,tag"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.baseline, args.recovery = 3.0, 4.0
        args.headers_sockets, args.headers_bytes, args.headers_duration = 100, 256 * 1024, 8.0
        args.slowloris_sockets, args.slowloris_interval, args.slowloris_duration = 1000, 5.0, 12.0
        args.halfopen_sockets, args.halfopen_duration = 500, 12.0
        args.wildcard_parts, args.wildcard_duration, args.wildcard_publish_interval = 10, 10.0, 2.0
        args.exact_subscriptions, args.exact_hold = 10_000, 2.0
        args.payload_duration = 5.0
    args.attack_list = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in args.attack_list if a not in ATTACK_APPS]
    if unknown:
        p.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
    source = Path(args.source).resolve()
    for needed in ("sandstone/__init__.py", "twisted/plugins/sandstone_plugin.py", "examples/blog.py"):
        if not (source / needed).is_file():
            p.error(f"--source {source} has no {needed}: not a sandstone checkout")
    if args.label is None:
        args.label = source.name
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--_server"]:
        server_main(argv[1:])
        return 0
    if argv[:1] == ["--_probe"]:
        probe_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--_attacker"]:
        attacker_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    nofile = raise_nofile()
    if not Path("/proc/self/status").exists():
        print("attacks.py needs Linux /proc", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"attacks-{args.label}-{stamp}.json"
    harness = Harness(args)
    harness.keep_dir = out_dir / f"attacks-{args.label}-{stamp}-logs"
    report: dict[str, Any] = {
        "label": args.label,
        "timestamp": stamp,
        "source": str(harness.source),
        "source_commit": git_describe(harness.source),
        "harness_commit": git_describe(REPO_DIR),
        "command": " ".join([sys.executable, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items() if k != "attack_list"},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "open_files_limit": nofile,
            "uptime_at_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        },
        "attacks": {},
    }
    print(
        f"attacks.py: {', '.join(args.attack_list)} against {harness.source} ({report['source_commit']}); "
        f"open files limit {nofile}; logs in {harness.logdir}",
        flush=True,
    )
    status = 0
    try:
        for name in args.attack_list:
            key, n = name, 1
            while key in report["attacks"]:  # an attack named twice runs twice: "wildcard", "wildcard#2"
                n += 1
                key = f"{name}#{n}"
            try:
                report["attacks"][key] = harness.run_attack(name)
            except HarnessError as err:
                print(f"   ERROR in {key}: {err}", file=sys.stderr, flush=True)
                report["attacks"][key] = {"error": str(err)}
                status = 1
            report["sandstone_file"] = harness.sandstone_file
            out_path.write_text(json.dumps(report, indent=1, default=str))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started", file=sys.stderr, flush=True)
        status = 130
    finally:
        Proc.stop_all()
        report["sandstone_file"] = harness.sandstone_file
        report["machine"]["uptime_at_end"] = subprocess.run(
            ["uptime"], capture_output=True, text=True
        ).stdout.strip()
        out_path.write_text(json.dumps(report, indent=1, default=str))
        if not args.keep_logs:
            shutil.rmtree(harness.logdir, ignore_errors=True)
    if report["attacks"]:
        print_table(report)
    print(f"\nresults: {out_path}")
    print(f"sandstone imported from: {report.get('sandstone_file')}")
    print(f"machine: {report['machine']['uptime_at_start']}  ->  {report['machine']['uptime_at_end']}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
