"""Throwaway redis-server and redis-sentinel processes on free 127.0.0.1 ports, for tests against a real
Redis: plain, with a password, over TLS, as a replica, and Sentinels watching a master."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

NOT_FOUND = "redis-server not found: install it with 'apt-get install redis-server'"
SENTINEL_NOT_FOUND = "redis-sentinel not found: install it with 'apt-get install redis-sentinel'"


@dataclass(frozen=True)
class ServerTLS:
    """The files of a Redis server with TLS: its certificate and key, the CA it checks clients against, and
    whether clients must show a certificate (``tls-auth-clients``). ``client_cert``/``client_key`` are what
    the fixture itself connects with when clients must."""

    cert: str
    key: str
    ca: str
    auth_clients: bool = False
    client_cert: str | None = None
    client_key: str | None = None


class _RedisProcess:
    """A Redis process (server or Sentinel) on a free 127.0.0.1 port: ``start()``, ``stop()``, ``kill()``."""

    START_TIMEOUT = 10.0
    EXECUTABLE = "redis-server"
    MISSING = NOT_FOUND

    def __init__(self) -> None:
        self.port: int = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, port: int = 0) -> None:
        """Start the process and wait until it answers PING (at most 10 s).

        ``port`` 0 picks a free port; pass the old ``port`` to restart a stopped server where its clients
        expect it.

        Raises ``unittest.SkipTest`` when the executable is not installed, unless ``CI=true`` (CI must
        run these tests), where it raises ``RuntimeError``.
        """
        if self._process is not None:
            raise RuntimeError(f"this {self.EXECUTABLE} is already started")
        executable = shutil.which(self.EXECUTABLE)
        if executable is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError(f"{self.MISSING} (CI=true: these tests must run in CI)")
            raise unittest.SkipTest(self.MISSING)
        deadline = time.monotonic() + self.START_TIMEOUT
        output = ""
        for _attempt in range(1 if port else 3):  # another process may take a free port before redis binds it
            self.port = port or _free_port()
            self._log = tempfile.TemporaryFile()
            self._process = subprocess.Popen(
                [executable, *self._arguments()],
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
                    f"{self.EXECUTABLE} did not answer PING within {self.START_TIMEOUT} s:\n{output}"
                )
        raise RuntimeError(f"{self.EXECUTABLE} did not start:\n{output}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s); does nothing when it is not running."""
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

    def kill(self) -> None:
        """Kill the process at once (SIGKILL, as a crash or an OOM kill would), keeping its port for
        ``start(port)``."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.stop()

    def _arguments(self) -> list[str]:
        raise NotImplementedError

    def _ping(self) -> bool:
        return _ping(self.port)

    def _wait_ready(self, deadline: float) -> bool:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._ping():
                return True
            time.sleep(0.01)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")


class RedisServer(_RedisProcess):
    """One redis-server process without persistence: ``start()``, then ``url``/``port``, then ``stop()``.

    With ``password`` it wants AUTH; with ``tls`` it listens with TLS only; ``replica_of`` (a port on
    127.0.0.1) makes it a replica of that server; ``args`` are further redis-server options.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        tls: ServerTLS | None = None,
        replica_of: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.password = password
        self.tls = tls
        self.replica_of = replica_of
        self.args = list(args)

    @property
    def url(self) -> str:
        """The URL of database 0 (``rediss://`` trusting the test CA, with a client certificate if the server
        wants one, under TLS)."""
        if not self.port:
            raise RuntimeError("the Redis server is not started: call start() first")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{tls_query(self.tls)}"

    def _arguments(self) -> list[str]:
        args = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            tls = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls.cert]
            args += ["--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca]
            args += ["--tls-auth-clients", "yes" if tls.auth_clients else "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return args + self.args

    def _ping(self) -> bool:
        if self.tls is None:
            return _ping(self.port, self.password)
        return _ping(self.port, self.password, _client_context(self.tls))


class RedisSentinel(_RedisProcess):
    """One redis-sentinel watching the master ``name`` at 127.0.0.1:``master_port``, with short timings so
    that a failover takes a few seconds: the master is down after ``down_after_ms`` without an answer. With
    ``tls`` it listens with TLS only and speaks TLS to the servers (which must then too)."""

    EXECUTABLE = "redis-sentinel"
    MISSING = SENTINEL_NOT_FOUND

    def __init__(
        self,
        master_port: int,
        *,
        name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        tls: ServerTLS | None = None,
    ) -> None:
        super().__init__()
        self.tls = tls
        self.master_port = master_port
        self.name = name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._dir = tempfile.mkdtemp(prefix="sandstone-sentinel-")

    def _arguments(self) -> list[str]:
        os.makedirs(self._dir, exist_ok=True)
        config = os.path.join(self._dir, "sentinel.conf")  # Sentinel rewrites its configuration
        if self.tls is None:
            listen = f"port {self.port}\n"
        else:
            tls = self.tls
            listen = (
                f"port 0\ntls-port {self.port}\ntls-replication yes\ntls-cert-file {tls.cert}\n"
                f"tls-key-file {tls.key}\ntls-ca-cert-file {tls.ca}\n"
                f"tls-auth-clients {'yes' if tls.auth_clients else 'no'}\n"
            )
        with open(config, "w") as f:
            f.write(
                listen + "bind 127.0.0.1\n"
                f"dir {self._dir}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
        return [config]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _ping(self) -> bool:
        return _ping(self.port, None, None if self.tls is None else _client_context(self.tls))


def tls_query(tls: ServerTLS) -> str:
    """The ``?ssl_...`` options of a URL trusting ``tls.ca``, with the client certificate if there is one."""
    query = f"ssl_ca_certs={quote(tls.ca)}"
    if tls.client_cert:
        query += f"&ssl_certfile={quote(tls.client_cert)}"
    if tls.client_key:
        query += f"&ssl_keyfile={quote(tls.client_key)}"
    return query


def _client_context(tls: ServerTLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    context.check_hostname = False  # whether the server answers, whatever names its certificate carries
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, password: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            s = context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw
            if password is not None:
                secret = password.encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False
