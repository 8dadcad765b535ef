"""A throwaway redis-server on a free 127.0.0.1 port, for tests against a real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

NOT_FOUND = "redis-server not found: install it with 'apt-get install redis-server'"


class RedisServer:
    """One redis-server process without persistence: ``start()``, then ``url``/``port``, then ``stop()``."""

    START_TIMEOUT = 10.0

    def __init__(self) -> None:
        self.port: int = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        if not self.port:
            raise RuntimeError("the Redis server is not started: call start() first")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port: int = 0) -> None:
        """Start redis-server and wait until it answers PING (at most 10 s).

        ``port`` 0 picks a free port; pass the old ``port`` to restart a stopped server where its clients
        expect it.

        Raises ``unittest.SkipTest`` when redis-server is not installed, unless ``CI=true`` (CI must
        run these tests), where it raises ``RuntimeError``.
        """
        if self._process is not None:
            raise RuntimeError("this Redis server is already started")
        executable = shutil.which("redis-server")
        if executable is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError(f"{NOT_FOUND} (CI=true: these tests must run in CI)")
            raise unittest.SkipTest(NOT_FOUND)
        deadline = time.monotonic() + self.START_TIMEOUT
        for _attempt in range(1 if port else 3):  # another process may take a free port before redis binds it
            self.port = port or _free_port()
            self._log = tempfile.TemporaryFile()
            self._process = subprocess.Popen(
                [
                    executable,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready(deadline):
                return
            output = self._output()
            self.stop()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"redis-server did not answer PING within {self.START_TIMEOUT} s:\n{output}"
                )
        raise RuntimeError(f"redis-server did not start:\n{output}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); does nothing when it is not running."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self, deadline: float) -> bool:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _ping(self.port):
                return True
            time.sleep(0.01)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False
