"""The ``sandstone`` command (``sandstone._cli``), run as a real subprocess: its one-line errors and
``sandstone run`` serving the blog over real TCP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import TestCase

import sandstone

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "sandstone"
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
TIMEOUT = 30.0


def run(*argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m sandstone ARGV`` to its end, from the repository root."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sandstone", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def twistd(*argv: str) -> subprocess.CompletedProcess[str]:
    """``twistd ARGV`` to its end, from the repository root (whose twisted/plugins holds sandstone's)."""
    return subprocess.run(
        [sys.executable, "-c", TWISTD, *argv], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OneLineErrorTests(TestCase):
    """Each error: exactly one line on stderr, exit status 1, no traceback, no option dump."""

    def assert_one_line(self, result: subprocess.CompletedProcess[str], line: str) -> None:
        self.assertEqual((result.returncode, result.stderr), (1, line + "\n"))
        self.assertNotIn("Traceback", result.stdout)
        self.assertNotIn("--max-message-size", result.stdout)  # the option help

    def test_no_such_module(self) -> None:
        self.assert_one_line(
            run("run", "--app", "no_such_module:app"),
            "sandstone: no module named 'no_such_module' (from --app 'no_such_module:app')",
        )

    def test_no_such_attribute(self) -> None:
        self.assert_one_line(
            run("run", "--app", "examples.blog:nope"),
            "sandstone: module 'examples.blog' has no attribute 'nope'",
        )

    def test_not_an_app(self) -> None:
        self.assert_one_line(
            run("run", "--app", "examples.blog:Article"),
            "sandstone: examples.blog:Article is a class, not a sandstone.Sandstone app",
        )

    def test_bad_option_value(self) -> None:
        self.assert_one_line(
            run("run", "--app", "examples.blog:app", "--max-connections", "many"),
            "sandstone: --max-connections expects a number, got 'many'",
        )

    def test_bad_workers(self) -> None:
        self.assert_one_line(
            run("run", "--workers", "0"),
            "sandstone: --workers expects a number of processes (1 or more), got '0'",
        )

    def test_unknown_option(self) -> None:
        self.assert_one_line(run("run", "--bogus"), "sandstone: option --bogus not recognized")

    def test_unknown_command(self) -> None:
        self.assert_one_line(
            run("serve"), "sandstone: Unknown command: serve ('sandstone --help' lists the commands)"
        )

    def test_port_in_use(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            result = run("run", "--app", "examples.blog:app", "--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assert_one_line(
            result,
            f"sandstone: cannot listen on 127.0.0.1:{port}: the address is already in use "
            "(another server runs there?)",
        )

    def test_port_in_use_under_twistd(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            result = twistd("-n", "--pidfile=", "sandstone", "--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(
            (result.returncode, result.stderr),
            (
                1,
                f"twistd sandstone: cannot listen on 127.0.0.1:{port}: the address is already in use "
                "(another server runs there?)\n",
            ),
        )
        self.assertNotIn("Traceback", result.stdout)  # twistd's own startup lines may precede it there

    def test_privileged_port(self) -> None:
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:  # root binds any port: run without the capability that allows it
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                self.skipTest("running as root and setpriv (util-linux) is missing")
            prefix = (setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service")
        try:
            unprivileged_from = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
        except (OSError, ValueError):
            unprivileged_from = 1024
        if unprivileged_from <= 81:
            self.skipTest("port 81 is not privileged on this machine")
        result = run(
            "run", "--app", "examples.blog:app", "--listen", "tcp:81:interface=127.0.0.1", prefix=prefix
        )
        self.assert_one_line(
            result,
            "sandstone: cannot listen on 127.0.0.1:81: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE; try a port above 1023)",
        )

    def test_debug_prints_the_traceback_too(self) -> None:
        result = run("run", "--app", "no_such_module:app", "--debug")
        self.assertEqual(result.returncode, 1)
        self.assertIn("Traceback", result.stderr)
        self.assertIn("ModuleNotFoundError", result.stderr)  # the cause, not only the usage error
        self.assertTrue(
            result.stderr.endswith(
                "sandstone: no module named 'no_such_module' (from --app 'no_such_module:app')\n"
            )
        )

    def test_twistd_prints_the_reason_in_one_line(self) -> None:
        result = twistd("-n", "--pidfile=", "sandstone", "--app", "no_such_module:app")
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (1, "", "twistd sandstone: no module named 'no_such_module' (from --app 'no_such_module:app')\n"),
        )


class BadOptionValueTests(TestCase):
    """A bad option value: one line on stderr, exit status 1, for ``sandstone run`` and ``twistd -n``."""

    def assert_one_line(self, arguments: tuple[str, ...], reason: str) -> None:
        for result, line in (
            (run("run", *arguments), f"sandstone: {reason}\n"),
            (twistd("-n", "--pidfile=", "sandstone", *arguments), f"twistd sandstone: {reason}\n"),
        ):
            self.assertEqual((result.returncode, result.stdout, result.stderr), (1, "", line))

    def test_workers_not_a_number(self) -> None:
        self.assert_one_line(
            ("--workers", "abc"), "--workers expects a number of processes (1 or more), got 'abc'"
        )

    def test_listen_not_an_endpoint(self) -> None:
        self.assert_one_line(
            ("--listen", "nonsense"),
            "--listen 'nonsense' is not a valid server endpoint: ValueError: Unknown endpoint type: "
            "'nonsense'",
        )

    def test_negative_limit(self) -> None:
        self.assert_one_line(
            ("--max-request-body", "-1"), "--max-request-body may not be negative (0 disables the limit)"
        )

    def test_malformed_redis_url(self) -> None:
        self.assert_one_line(
            ("--redis", "redis://127.0.0.1:99999/"),
            "--redis: invalid port in Redis URL 'redis://127.0.0.1:99999/': '99999'",
        )

    def test_realm_no_client_can_join(self) -> None:
        self.assert_one_line(
            ("--realm", "my realm"),
            "--realm 'my realm' is not a realm a client can join: dot-separated words without whitespace or "
            "'#', e.g. realm1 or com.example.app",
        )

    def test_ws_path_not_a_path(self) -> None:
        self.assert_one_line(("--ws-path", "ws"), "--ws-path expects a URL path such as /ws, got 'ws'")

    def test_no_allowed_host(self) -> None:
        self.assert_one_line(
            ("--allowed-hosts", ","),
            "--allowed-hosts names no host: give patterns like example.com, or * for any",
        )

    def test_negative_shutdown_timeout(self) -> None:
        self.assert_one_line(("--shutdown-timeout", "-1"), "--shutdown-timeout may not be negative")

    def test_unexpected_argument(self) -> None:
        self.assert_one_line(
            ("examples.blog:app",),
            "unexpected argument 'examples.blog:app' (options are written --name VALUE or --name=VALUE)",
        )


class InformationTests(TestCase):
    def test_version(self) -> None:
        result = run("--version")
        self.assertEqual((result.returncode, result.stdout), (0, f"sandstone {sandstone.__version__}\n"))

    def test_help_names_run(self) -> None:
        result = run("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("run [options]", result.stdout)

    def test_run_help_lists_the_options(self) -> None:
        result = run("run", "--help")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(
            result.stdout.splitlines()[0],
            "Usage: sandstone run [--app MODULE:ATTRIBUTE] [--listen ENDPOINT] [--redis URL [--workers N]] "
            "[--realm REALM] [--ws-path PATH] [--verbose] [option...]",
        )
        self.assertIn("--max-message-size", result.stdout)
        self.assertIn("--debug", result.stdout)

    def test_twistd_help_has_the_synopsis_and_says_what_the_default_app_is(self) -> None:
        result = twistd("sandstone", "--help")
        self.assertEqual(result.returncode, 0)
        text = " ".join(result.stdout.split())
        self.assertIn(
            "Usage: twistd [options] sandstone [--app MODULE:ATTRIBUTE] [--listen ENDPOINT] [--redis URL "
            "[--workers N]]",
            text,
        )
        self.assertIn("Default: an empty open router: no REST routes and no topics", text)
        self.assertIn("-v, --verbose Log debug messages too", text)
        self.assertIn(
            "--max-request-body= Bytes of a REST request body; beyond it 413. Default: 1048576.", text
        )

    def test_run_version_names_sandstone(self) -> None:
        result = run("run", "--version")
        self.assertEqual(result.returncode, 0)
        self.assertTrue(
            result.stdout.startswith(f"sandstone {sandstone.__version__} (Twisted "), result.stdout
        )

    def test_help_into_a_closed_pipe(self) -> None:
        """``sandstone run --help | head -1``: the rest of the help is not wanted, which is no error."""
        reader, writer = os.pipe()
        os.close(reader)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "sandstone", "run", "--help"],
                cwd=REPO,
                stdout=writer,
                stderr=subprocess.PIPE,
                text=True,
                timeout=TIMEOUT,
            )
        finally:
            os.close(writer)
        self.assertEqual((result.returncode, result.stderr), (0, ""))


class ServingTests(TestCase):
    """``sandstone run`` serves the blog in the foreground: no pid file, its log on stdout."""

    def serve(self, command: list[str]) -> None:
        port = free_port()
        process = subprocess.Popen(
            [*command, "run", "--app", "examples.blog:app", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(self.stop, process)
        url = f"http://127.0.0.1:{port}/api/articles"
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    self.assertEqual((response.status, response.read()), (200, b"[]"))
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"not serving {url}: {process.communicate(timeout=TIMEOUT)}")
                time.sleep(0.05)
        out, err = self.stop(process)
        self.assertEqual(process.returncode, -signal.SIGTERM)
        self.assertIn(
            f"sandstone serving examples.blog:app at http://127.0.0.1:{port}/ "
            f"(WebSocket ws://127.0.0.1:{port}/ws, realm realm1)",
            out,
        )
        self.assertEqual(err, "")
        self.assertNotIn("#debug]", out)  # info and above only
        self.assertFalse((REPO / "twistd.pid").exists())

    def stop(self, process: subprocess.Popen[str]) -> tuple[str, str]:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            return process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            return process.communicate()

    def test_python_m_sandstone_run_serves_the_blog(self) -> None:
        self.serve([sys.executable, "-m", "sandstone"])

    def test_console_script_serves_the_blog(self) -> None:
        if not CONSOLE_SCRIPT.exists():
            self.skipTest(f"{CONSOLE_SCRIPT} is not installed (pip install -e .)")
        self.serve([str(CONSOLE_SCRIPT)])
