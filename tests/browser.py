"""Helpers for the browser tests and ``docs/screenshots.py``: headless Chromium (Debian's package) driven by
Playwright, the example pages' autobahn-js served offline, and ``twistd -n sandstone`` subprocesses.

The pages load autobahn-js from a CDN (pinned version, SRI hash). Here that URL is answered with the file of
the same npm package (``autobahn-browser``), installed once into ``.cache/`` (git-ignored) with npm, so the
pages run offline and Chromium checks the pinned hash against the npm file. Nothing else outside 127.0.0.1
is reachable from the pages.

``python -m tests.browser`` installs that file (``.ci/run`` does, before the tests).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.npm import NpmFailed, npm_install
from tests.test_e2e_twistd import REPO, accepts, environment, free_port, twistd_command

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Playwright, Route

CHROMIUM = Path(os.environ.get("SANDSTONE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = REPO / "examples" / "static"
INSTALL_HINT = (
    "apt-get install -y chromium npm && pip install -e '.[test]' --config-settings editable_mode=compat"
)

_SCRIPT = re.compile(
    r'<script[^>]*\ssrc="(?P<url>https://cdn\.jsdelivr\.net/npm/autobahn-browser@(?P<version>[0-9.]+)'
    r'/autobahn\.min\.js)"[^>]*\sintegrity="(?P<integrity>[^"]+)"',
    re.S,
)


class AutobahnScript:
    """The ``<script>`` loading autobahn-js in an example page: its CDN URL, npm version and SRI hash."""

    def __init__(self, page: Path) -> None:
        found = _SCRIPT.search(page.read_text(encoding="utf-8"))
        if found is None:
            raise ValueError(f"{page}: no autobahn-browser <script> from cdn.jsdelivr.net with an integrity")
        self.url: str = found["url"]
        self.version: str = found["version"]
        self.integrity: str = found["integrity"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AutobahnScript) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"AutobahnScript({self.url!r}, {self.integrity!r})"


BLOG_SCRIPT = AutobahnScript(PAGES / "blog" / "index.html")


class BrowserMissing(Exception):
    """What this machine lacks to run the browser tests, with the command that installs it."""


def required() -> bool:
    """Under CI the browser tests must run: a missing piece fails them instead of skipping them."""
    return os.environ.get("CI") == "true"


def autobahn_js(script: AutobahnScript = BLOG_SCRIPT) -> Path:
    """The npm package's ``autobahn.min.js`` for the pages' pinned version, installed into ``.cache/``
    with npm the first time (into a staging directory, renamed when complete: concurrent test workers
    never read half a file)."""
    try:
        modules = npm_install(f"autobahn-browser-{script.version}", "autobahn-browser", script.version)
    except NpmFailed as failed:
        raise BrowserMissing(f"{failed}: {INSTALL_HINT}") from None
    return modules / "autobahn-browser" / "autobahn.min.js"


def check_browser() -> None:
    """Raise ``BrowserMissing`` unless Playwright, Chromium and autobahn-js are all here."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BrowserMissing(f"Playwright is not installed: {INSTALL_HINT}") from None
    if not os.access(CHROMIUM, os.X_OK):
        raise BrowserMissing(f"Chromium is missing ({CHROMIUM}): {INSTALL_HINT}")
    autobahn_js()


def skip_without_browser(test: unittest.TestCase, check: Callable[[], object] = check_browser) -> None:
    """Skip ``test`` when ``check`` finds the browser tests cannot run here (fail it under ``CI=true``)."""
    try:
        check()
    except BrowserMissing as missing:
        if required():
            test.fail(f"{missing} (CI=true: the browser tests must run)")
        raise unittest.SkipTest(str(missing)) from None


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium (Playwright's own browser download is not used)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def new_context(browser: Browser, blocked: list[str] | None = None, **options: Any) -> BrowserContext:
    """A browser context whose pages get autobahn-js from the npm package at the CDN URL, and nothing else
    from outside 127.0.0.1 (such requests are aborted and, given ``blocked``, recorded there)."""
    context = browser.new_context(**options)
    body = autobahn_js().read_bytes()
    headers = {
        "Content-Type": "application/javascript; charset=utf-8",
        "Access-Control-Allow-Origin": "*",  # as the CDN answers: the crossorigin SRI check needs it
    }

    def outside(route: Route) -> None:
        if route.request.url == BLOG_SCRIPT.url:
            route.fulfill(status=200, body=body, headers=headers)
            return
        if blocked is not None:
            blocked.append(route.request.url)
        route.abort()

    context.route(lambda url: not url.startswith(("http://127.0.0.1:", "http://localhost:")), outside)
    return context


class Server:
    """``twistd -n sandstone --app APP`` on 127.0.0.1:``port`` as a subprocess; ``stop`` ends it by pid and
    ``start`` starts it again on the same port."""

    def __init__(self, app: str, port: int | None = None) -> None:
        self.app = app
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def start(self, timeout: float = 30.0) -> Server:
        """Start twistd and wait until it accepts connections."""
        argv = twistd_command("--app", self.app, "--listen", f"tcp:{self.port}:interface=127.0.0.1")
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not accepts(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"twistd did not listen on {self.port} within {timeout} s:\n{self.output}")
            time.sleep(0.05)
        return self

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Send ``how`` (SIGTERM: a graceful shutdown; SIGKILL: the server just dies) and wait for the end;
        SIGKILL if it does not end in ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server (SIGTERM) and let go of its log."""
        self.stop()
        self._log.close()


class WebSocketCutter:
    """Routes the WebSockets a browser context opens from then on through Playwright, so that a test can cut
    them as a network drop would (no WAMP goodbye: the page retries) and refuse new ones until ``restore``.
    Install it before the page opens its WebSocket (or reload the page)."""

    def __init__(self, context: BrowserContext) -> None:
        self.down = False
        self._sockets: list[Any] = []
        context.route_web_socket(lambda url: True, self._opened)

    def _opened(self, socket: Any) -> None:
        if self.down:
            socket.close(code=4000, reason="the network is down (test)")
            return
        socket.connect_to_server()
        self._sockets.append(socket)

    def cut(self) -> None:
        """Close every WebSocket (both ends) and refuse the next ones."""
        self.down = True
        sockets, self._sockets = self._sockets, []
        for socket in sockets:
            socket.close(code=4000, reason="the network is down (test)")

    def restore(self) -> None:
        """Let the page's next attempt connect."""
        self.down = False


if __name__ == "__main__":
    autobahn_js()
