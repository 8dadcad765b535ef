"""End-to-end: ``twistd -n sandstone ...`` as a real subprocess, driven over TCP from outside."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import ServerTestCase, pending_websocket_timers, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent

# ``python -m twisted`` is the newer ``twist`` runner; this runs ``twistd`` itself, from this interpreter.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

STARTUP_TIMEOUT = 30.0


def twistd_command(*arguments: str) -> list[str]:
    """argv for ``twistd -n sandstone ARGUMENTS`` (no pid file, so that several can run at once)."""
    return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "sandstone", *arguments]


def twist_command(*arguments: str) -> list[str]:
    """argv for ``python -m twisted sandstone ARGUMENTS`` (the ``twist`` runner)."""
    return [sys.executable, "-m", "twisted", "--log-format=text", "sandstone", *arguments]


def environment(*extra_paths: str) -> dict[str, str]:
    paths = [*extra_paths, str(REPO)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def free_port() -> int:
    """A TCP port nobody listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


class Twistd(ProcessProtocol):
    """A running ``twistd``: its output so far, and a Deferred firing when it has ended."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exit_code: int | None = None
        self.signal: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def errReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def processEnded(self, reason: Any) -> None:
        self.exit_code = reason.value.exitCode
        self.signal = reason.value.signal
        self.ended.callback(None)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    @property
    def running(self) -> bool:
        return not self.ended.called


class TwistdTestCase(ServerTestCase):
    timeout = 120

    async def start(self, *arguments: str, command: Any = twistd_command, port: int | None = None) -> Twistd:
        """Start ``twistd -n sandstone ARGUMENTS --listen tcp:PORT:interface=127.0.0.1`` (a free PORT unless
        ``port`` is given: a stopped server started again where its clients expect it); wait until it
        accepts connections."""
        # runs last: autobahn's client-side WebSocket timers are flushed once everything is closed
        self.addCleanup(wait_until, lambda: not pending_websocket_timers(), 2.0)
        port = free_port() if port is None else port
        process = Twistd()
        argv = command(*arguments, "--listen", f"tcp:{port}:interface=127.0.0.1")
        reactor.spawnProcess(process, sys.executable, argv, env=environment(), path=str(REPO))
        self.addCleanup(self.stop, process)
        await wait_until(lambda: not process.running or accepts(port), timeout=STARTUP_TIMEOUT, interval=0.05)
        if not process.running:
            self.fail(f"twistd exited with {process.exit_code} before listening:\n{process.output}")
        self.port = port
        self.ws_path = "/ws"
        return process

    @property
    def ws_url(self) -> str:  # type: ignore[override]
        return f"ws://127.0.0.1:{self.port}{self.ws_path}"

    async def stop(self, process: Twistd) -> None:
        """SIGTERM, wait; SIGKILL if it does not end."""
        await stop_process(process)

    async def terminate(self, process: Twistd) -> None:
        """Stop twistd with SIGTERM and check it shut down cleanly."""
        process.transport.signalProcess("TERM")
        await wait_until(lambda: not process.running, timeout=15.0)
        # twistd re-raises the signal it stopped on, so that its exit status tells so
        self.assertIn(
            (process.exit_code, process.signal), [(0, None), (None, signal.SIGTERM)], process.output
        )
        self.assertIn("Received SIGTERM, shutting down.", process.output)
        self.assertIn("Main loop terminated.", process.output)


class BlogAppTests(TwistdTestCase):
    async def test_blog_app_serves_rest_and_wamp(self) -> None:
        await self.check_blog(await self.start("--app", "examples.blog:app"))
        self.assertIn("Server Shut Down.", self.process.output)

    async def test_blog_app_with_the_twist_runner(self) -> None:
        await self.check_blog(await self.start("--app", "examples.blog:app", command=twist_command))

    async def check_blog(self, process: Twistd) -> None:
        self.process = process

        subscriber = await self.connect("cbor")
        await subscriber.record("articles")
        http = self.http()
        response = await http.post(
            f"{self.base_url}/api/articles", json={"title": "Unicorns spotted in Alaska"}
        )
        self.assertEqual(response.code, 201)
        article = await response.json()
        self.assertEqual(article, {"id": 1, "title": "Unicorns spotted in Alaska"})
        await wait_until(lambda: subscriber.received["articles"])
        [event] = subscriber.received["articles"]
        self.assertEqual(
            event.payload["message"], "An article has just been published: Unicorns spotted in Alaska"
        )
        self.assertEqual(event.payload["article"], article)
        response = await http.get(f"{self.base_url}/api/articles")
        self.assertEqual(await response.json(), [article])

        await wait_until(lambda: "sandstone serving examples.blog:app" in process.output)
        await self.terminate(process)
        await subscriber.disconnected


class DefaultAppTests(TwistdTestCase):
    async def test_without_app_serves_an_open_router(self) -> None:
        process = await self.start()
        first, second = await self.connect("json"), await self.connect("msgpack")

        await second.record("com.example.anything")
        await second.record("com.example.", match="prefix")
        await first.publish(
            "com.example.anything", {"hello": "world"}, options=PublishOptions(acknowledge=True)
        )
        await wait_until(lambda: second.received["com.example.anything"] and second.received["com.example."])
        self.assertEqual(second.received["com.example.anything"][0].payload, {"hello": "world"})
        self.assertEqual(second.received["com.example."][0].details.topic, "com.example.anything")

        await first.register(lambda a, b: a * b, "com.example.multiply")
        self.assertEqual(await second.call("com.example.multiply", 6, 7), 42)
        with self.assertRaises(ApplicationError) as caught:
            await second.call("com.example.missing")
        self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")

        await wait_until(lambda: "sandstone serving the default app" in process.output)
        await self.terminate(process)

    async def test_realm_and_ws_path_options(self) -> None:
        process = await self.start("--realm", "other", "--ws-path", "/wamp")
        self.ws_path = "/wamp"
        client = await self.connect("cbor", realm="other")
        await client.record("com.example.topic")
        await client.publish(
            "com.example.topic", 1, options=PublishOptions(acknowledge=True, exclude_me=False)
        )
        await wait_until(lambda: client.received["com.example.topic"])

        with self.assertRaises(RuntimeError) as caught:
            await self.connect("json", realm="realm1")
        self.assertIn("wamp.error.no_such_realm", str(caught.exception))

        http = self.http()
        self.assertEqual((await http.get(f"{self.base_url}/ws")).code, 404)
        self.assertNotEqual((await http.get(f"{self.base_url}/wamp")).code, 404)

        await wait_until(
            lambda: f"(WebSocket ws://127.0.0.1:{self.port}/wamp, realm other)" in process.output
        )
        await self.terminate(process)


class BadAppTests(TwistdTestCase):
    async def run_twistd(self, app: str, *extra_paths: str) -> tuple[str, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            twistd_command("--app", app, "--listen", f"tcp:{free_port()}:interface=127.0.0.1")[1:],
            env=environment(*extra_paths),
            path=str(REPO),
        )
        return (out + err).decode("utf-8", "replace"), code

    async def test_bad_app_exits_with_a_one_line_error(self) -> None:
        broken = Path(self.mktemp()).resolve()
        broken.mkdir()
        (broken / "sandstone_e2e_broken.py").write_text(
            textwrap.dedent(
                """
                raise RuntimeError("this module cannot be imported")
                """
            )
        )
        cases = {
            "sandstone_e2e_nosuchmodule:app": "no module named 'sandstone_e2e_nosuchmodule'",
            "examples.nosuchmodule:app": "no module named 'examples.nosuchmodule'",
            "examples.blog:nope": "module 'examples.blog' has no attribute 'nope'",
            "examples.blog:Article": "examples.blog:Article is a class, not a sandstone.Sandstone app",
            "examples.blog:create_article": "examples.blog:create_article is a function, not a sandstone",
            "examples.blog:_articles": "examples.blog:_articles is a dict instance, not a sandstone",
            "examples.blog": "--app expects MODULE:ATTRIBUTE, got 'examples.blog'",
            "sandstone_e2e_broken:app": (
                "module 'sandstone_e2e_broken' was found but importing it failed: "
                "RuntimeError: this module cannot be imported"
            ),
        }
        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(self.run_twistd(app, str(broken))) for app in cases]
        )
        for (app, expected), (output, code) in zip(cases.items(), results, strict=True):
            self.assertNotEqual(code, 0, output)
            lines = [line for line in output.splitlines() if expected in line]
            self.assertEqual(len(lines), 1, f"--app {app}: expected one line with {expected!r} in:\n{output}")
            self.assertNotIn("Traceback", output, app)
            self.assertNotIn("Starting reactor", output, app)
