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

    def test_twistd_prints_the_reason_without_the_option_help(self) -> None:
        result = subprocess.run(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "sandstone", "--app", "no_such_module:app"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("--max-message-size", result.stdout)
        self.assertEqual(
            result.stdout.strip().splitlines()[-1],
            "twistd -n: no module named 'no_such_module' (from --app 'no_such_module:app')",
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
        self.assertTrue(result.stdout.startswith("Usage: sandstone run [--app MODULE:ATTRIBUTE]"))
        self.assertIn("--max-message-size", result.stdout)
        self.assertIn("--debug", result.stdout)


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
