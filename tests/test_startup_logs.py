"""What a newcomer reads at startup: info and above (debug only with --verbose), the startup line, and the
state of the Redis connection said once per change (cannot reach / connected / lost / back), for
``sandstone run``, ``twistd -n sandstone`` and ``twistd sandstone`` (in the background)."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from sandstone import Sandstone
from sandstone._logging import level_filter, twistd_log_observer
from sandstone._tap import SandstoneService
from tests.redis_server import RedisServer
from tests.support import wait_until
from tests.test_e2e_twistd import TWISTD, environment, free_port

REPO = Path(__file__).resolve().parent.parent
SANDSTONE_RUN = (sys.executable, "-m", "sandstone", "run")
TWISTD_N = (sys.executable, "-c", TWISTD, "-n", "--pidfile=", "sandstone")
#: A twistd log line: time, [namespace#level], text.
LINE = re.compile(r"^\S+ \[(?P<system>[^\]]*)\] (?P<text>.*)$")
NODE = r"cluster bus node [0-9a-f]+"
STARTUP_TIMEOUT = 30.0


class Server(ProcessProtocol):
    """A running server process: its output lines, each with the time it arrived, and its end."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._partial = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        now = time.monotonic()
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines.extend((now, line.decode("utf-8", "replace")) for line in complete)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    @property
    def running(self) -> bool:
        return not self.ended.called

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def texts(self, pattern: str) -> list[str]:
        """The text of the log lines matching ``pattern`` (a regular expression, from the text's start)."""
        texts = [match["text"] for _, line in self.lines if (match := LINE.match(line))]
        return [text for text in texts if re.match(pattern, text)]

    def arrived(self, pattern: str) -> float | None:
        """When the first line whose text matches ``pattern`` arrived."""
        for when, line in self.lines:
            match = LINE.match(line)
            if match and re.match(pattern, match["text"]):
                return when
        return None

    def debug_lines(self) -> list[str]:
        return [line for _, line in self.lines if "#debug]" in line]


class ServerTestCase(TestCase):
    timeout = 90

    def start(self, *argv: str, secret: bool = True) -> Server:
        """Run ``argv`` from the repository; stopped (SIGTERM, then SIGKILL) at the end of the test."""
        server = Server()
        env = environment()
        if secret:  # no "no cluster secret" warning in the way
            env["SANDSTONE_CLUSTER_SECRET"] = "startup logs"
        process = reactor.spawnProcess(server, argv[0], list(argv), env=env, path=str(REPO))
        self.addCleanup(self.stop, server, process)
        return server

    async def stop(self, server: Server, process: Any) -> None:
        if server.running:
            process.signalProcess("TERM")
            try:
                await wait_until(lambda: not server.running, timeout=10.0)
            except AssertionError:
                if server.running:
                    process.signalProcess("KILL")
        await server.ended

    async def started(self, server: Server) -> None:
        await wait_until(
            lambda: not server.running or server.arrived("sandstone serving ") is not None,
            timeout=STARTUP_TIMEOUT,
        )
        if not server.running:
            self.fail(f"the server exited before serving:\n{server.output}")

    def start_redis(self) -> RedisServer:
        redis = RedisServer()
        self.addCleanup(redis.stop)
        redis.start()
        return redis


def listen() -> tuple[str, str]:
    return ("--listen", f"tcp:{free_port()}:interface=127.0.0.1")


class UnreachableRedisTests(ServerTestCase):
    """A Redis that refuses connections: one warning naming it (password masked) within 2 s, then silence."""

    async def check_warned_once(self, command: tuple[str, ...]) -> None:
        port = free_port()  # nothing listens there
        server = self.start(
            *command,
            "--app",
            "examples.blog:app",
            *listen(),
            "--redis",
            f"redis://:hunter2@127.0.0.1:{port}/",
        )
        await self.started(server)
        warning = (
            rf"{NODE}: cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1:{port}/0: "
            r"(command|pub/sub) connection to Redis failed \(Connection was refused .*\); "
            r"serving local clients only, retrying$"
        )
        await wait_until(lambda: server.arrived(warning) is not None, timeout=5.0)
        warned = server.arrived(warning) or 0.0
        connecting = server.arrived(rf"{NODE} connecting to redis://:\*\*\*@127\.0\.0\.1:{port}/0 ") or 0.0
        self.assertLess(warned - connecting, 2.0, server.output)
        await wait_until(lambda: time.monotonic() > connecting + 3.0, timeout=5.0)  # several retries later
        self.assertEqual(len(server.texts(rf"{NODE}")), 2, server.output)  # connecting, cannot reach
        self.assertEqual(server.debug_lines(), [])
        self.assertNotIn("hunter2", server.output)
        self.assertNotIn("Traceback", server.output)

    async def test_sandstone_run(self) -> None:
        await self.check_warned_once(SANDSTONE_RUN)

    async def test_twistd_n(self) -> None:
        await self.check_warned_once(TWISTD_N)

    async def test_verbose_shows_each_attempt(self) -> None:
        port = free_port()
        server = self.start(*SANDSTONE_RUN, *listen(), "--redis", f"redis://127.0.0.1:{port}/", "--verbose")
        await self.started(server)
        attempt = rf"{NODE}: (command|pub/sub) connection: attempt 2 failed: Connection was refused"
        await wait_until(lambda: server.arrived(attempt) is not None, timeout=10.0)
        self.assertTrue(any("[sandstone._redis_connect#debug]" in line for line in server.debug_lines()))

    async def test_debug_shows_debug_lines_too(self) -> None:
        server = self.start(*SANDSTONE_RUN, *listen(), "--debug")
        await self.started(server)
        gc = r"\d+ objects of the started server set aside from garbage collection"
        await wait_until(lambda: server.arrived(gc) is not None, timeout=5.0)


class RedisStateTests(ServerTestCase):
    """With a real Redis, stopped and started again: one line per change of state, none per retry."""

    async def test_connected_lost_and_back(self) -> None:
        redis = self.start_redis()
        url = re.escape(f"redis://127.0.0.1:{redis.port}/0")
        server = self.start(*SANDSTONE_RUN, "--app", "examples.blog:app", *listen(), "--redis", redis.url)
        await self.started(server)
        connected = rf"{NODE} connected to Redis at {url}$"
        await wait_until(lambda: server.arrived(connected) is not None, timeout=10.0)

        redis.stop()
        lost = (
            rf"{NODE}: (command|pub/sub) connection lost \(.*\); serving local clients only until Redis at "
            rf"{url} is back$"
        )
        await wait_until(lambda: server.arrived(lost) is not None, timeout=10.0)
        down = time.monotonic()
        await wait_until(
            lambda: time.monotonic() > down + 3.0, timeout=5.0
        )  # several attempts fail meanwhile
        redis.start(redis.port)
        back = rf"{NODE} reconnected to Redis at {url}$"
        await wait_until(lambda: server.arrived(back) is not None, timeout=15.0)

        bus_lines = server.texts(NODE)
        self.assertEqual(len(bus_lines), 4, server.output)  # connecting, connected, lost, reconnected
        self.assertEqual(server.debug_lines(), [])


class StartupLineTests(ServerTestCase):
    async def test_workers_share_the_port(self) -> None:
        redis = self.start_redis()
        port = free_port()
        server = self.start(
            *SANDSTONE_RUN,
            "--app",
            "examples.blog:app",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--redis",
            redis.url,
            "--workers",
            "2",
        )
        await self.started(server)
        worker = f"worker 2: sandstone serving examples.blog:app on the shared port {port}$"
        await wait_until(lambda: server.arrived(worker) is not None, timeout=STARTUP_TIMEOUT)
        [line] = server.texts("sandstone serving examples.blog:app at ")
        self.assertEqual(
            line,
            f"sandstone serving examples.blog:app at http://127.0.0.1:{port}/ (WebSocket "
            f"ws://127.0.0.1:{port}/ws, realm realm1, Redis redis://127.0.0.1:{redis.port}/0; "
            f"2 workers share the port: this process (pid {server_pid(server)}) and the other it runs)",
        )

    def test_all_interfaces_shows_a_loopback_url(self) -> None:
        for address, url in (
            (IPv4Address("TCP", "0.0.0.0", 8080), "http://127.0.0.1:8080/"),
            (IPv6Address("TCP", "::", 8080), "http://[::1]:8080/"),
        ):
            self.assertEqual(
                serving_line(address),
                f"sandstone serving the app at {url} (WebSocket ws{url[4:]}ws, realm realm1; "
                "listening on all interfaces)",
            )

    def test_one_interface_says_nothing_more(self) -> None:
        self.assertEqual(
            serving_line(IPv4Address("TCP", "192.0.2.7", 8080)),
            "sandstone serving the app at http://192.0.2.7:8080/ "
            "(WebSocket ws://192.0.2.7:8080/ws, realm realm1)",
        )


def server_pid(server: Server) -> int:
    [pid] = {int(pid) for pid in re.findall(r"this process \(pid (\d+)\)", server.output)}
    return pid


class _Port:
    def __init__(self, address: Any) -> None:
        self.address = address

    def getHost(self) -> Any:
        return self.address


class _Web(Service):
    """A "web" service listening at a given address (nothing listens)."""

    def __init__(self, address: Any) -> None:
        self.port = _Port(address)
        self.setName("web")


def serving_line(address: Any) -> str:
    """The startup line of a service whose "web" child listens at ``address``."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        root = SandstoneService(Sandstone(), "the app", "tcp:8080")
        _Web(address).setServiceParent(root)
        root._log_serving()
    finally:
        globalLogPublisher.removeObserver(events.append)
    [line] = [formatEvent(e) for e in events if "sandstone serving" in e.get("log_format", "")]
    return line


class LevelFilterTests(TestCase):
    def events(self, verbose: bool) -> list[str]:
        seen: list[dict[str, Any]] = []
        observer = level_filter(seen.append, verbose)
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
            observer({"log_level": level, "log_namespace": "t", "log_format": level.name})
        observer({"log_format": "no level"})  # written to the publisher directly: kept
        return [formatEvent(event) for event in seen]

    def test_info_and_above_by_default(self) -> None:
        self.assertEqual(self.events(False), ["info", "warn", "error", "critical", "no level"])

    def test_verbose_shows_debug(self) -> None:
        self.assertEqual(self.events(True), ["debug", "info", "warn", "error", "critical", "no level"])


class TwistdObserverTests(TestCase):
    """``_logging.twistd_log_observer`` makes the observer twistd would (through twistd's private
    ``_SomeApplicationRunner.loggerFactory(config)._getLogObserver()``): this fails if a Twisted release
    changes that."""

    def config(self, *argv: str) -> Any:
        from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

        config = ServerOptions()
        config.parseOptions(list(argv))
        return config

    def test_the_log_file_twistd_would_write(self) -> None:
        # twistd's observer for a log file rotates it on SIGUSR1 (unless something else handles it)
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        logfile = Path(self.mktemp()).resolve()
        observer = twistd_log_observer(self.config("--logfile", str(logfile)))
        assert observer is not None
        observer({"log_level": LogLevel.info, "log_namespace": "t", "log_format": "hello", "log_time": 0.0})
        self.assertIn("[t#info] hello", logfile.read_text())

    def test_none_when_twistd_is_given_a_logger(self) -> None:
        config = self.config("-n", "--logger", "twisted.logger.jsonFileLogObserver")
        self.assertIsNone(twistd_log_observer(config))


class DaemonTests(TestCase):
    timeout = 60

    async def test_twistd_without_n_says_where_it_logs(self) -> None:
        """``twistd sandstone`` (no ``-n``) goes to the background saying so, in one line; its log shows no
        debug lines."""
        here = Path(self.mktemp()).resolve()
        here.mkdir()
        logfile, pidfile = here / "sandstone.log", here / "sandstone.pid"
        port = free_port()
        argv = [
            "-c",
            TWISTD,
            f"--logfile={logfile}",
            f"--pidfile={pidfile}",
            "sandstone",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ]
        out, err, code = await getProcessOutputAndValue(
            sys.executable, argv, env=environment(), path=str(REPO)
        )
        if pidfile.exists():
            self.addCleanup(stop_daemon, int(pidfile.read_text()))
        self.assertEqual(
            (code, out.decode(), err.decode()),
            (
                0,
                "",
                f"twistd sandstone: running in the background (log in {logfile}, pid in {pidfile}); "
                "'sandstone run' or 'twistd -n sandstone' runs in the foreground\n",
            ),
        )
        await wait_until(lambda: "sandstone serving" in logfile.read_text(), timeout=STARTUP_TIMEOUT)
        self.assertNotIn("#debug]", logfile.read_text())


def stop_daemon(pid: int) -> defer.Deferred[None]:
    """SIGTERM the daemon ``pid``; wait until it is gone (SIGKILL after 10 s)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return defer.succeed(None)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    def kill(failure: Any) -> None:
        if not gone():
            os.kill(pid, signal.SIGKILL)

    return wait_until(gone, timeout=10.0).addErrback(kill)
