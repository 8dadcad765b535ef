"""The "web" service of a single process: listens on the ``--listen`` endpoint and knows where it listens.

Twisted's ``strports.service`` keeps its listening port to itself; the startup line ("sandstone serving ...
at http://127.0.0.1:8080/") needs the address actually bound (``tcp:0`` picks a port).
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ListeningService", "listen_error"]

_log = Logger()


class ListeningService(Service):
    """
    Listens on ``endpoint`` with ``factory`` from ``privilegedStartService`` (before twistd sheds root), and
    raises there at once if listening fails (port in use, permission denied), so the process stops instead of
    serving nothing.

    @ivar port: the listening port, once listening (and until stopped).
    @ivar exit_prefix: when set (under twistd), a port that cannot be bound ends the process with one line,
        ``<exit_prefix>: cannot listen on ...``, on stderr and exit status 1, instead of a traceback.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any, exit_prefix: str | None = None) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.exit_prefix = exit_prefix
        self.port: IListeningPort | None = None
        self._listening: Deferred[Any] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._listening is not None:
            return
        failures: list[Failure] = []
        listening: Deferred[Any] = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._listened, failures.append)
        if failures:  # at once, as TCP, TLS and UNIX endpoints fail: stop whoever starts us
            error = failures[0].value
            if self.exit_prefix is not None and isinstance(error, CannotListenError):
                (sys.__stderr__ or sys.stderr).write(f"{self.exit_prefix}: {listen_error(error)}\n")
                raise SystemExit(1)
            failures[0].raiseException()
        # an endpoint that listens asynchronously fails later: that can only be logged
        listening.addCallback(self._log_failure, failures)
        self._listening = listening

    @staticmethod
    def _log_failure(_: object, failures: list[Failure]) -> None:
        if failures:
            _log.failure("cannot listen", failures[0])

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            stopped: Deferred[None] | None = port.stopListening()
            return stopped
        if listening is not None:
            listening.cancel()
        return None


def listen_error(err: CannotListenError) -> str:
    """The one-line reason a listening endpoint could not be bound."""
    where = f"{err.interface}:{err.port}" if err.interface else f"port {err.port}"
    code = getattr(err.socketError, "errno", None)
    if code == errno.EADDRINUSE:
        return f"cannot listen on {where}: the address is already in use (another server runs there?)"
    if code == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE; try a port above 1023)"
        )
    reason = getattr(err.socketError, "strerror", None) or str(err.socketError)
    return f"cannot listen on {where}: {reason}"
