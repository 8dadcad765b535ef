"""The "web" service of a single process: listens on the ``--listen`` endpoint and knows where it listens.

Twisted's ``strports.service`` keeps its listening port to itself; the startup line ("sandstone serving ...
at http://127.0.0.1:8080/") needs the address actually bound (``tcp:0`` picks a port).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ListeningService"]

_log = Logger()


class ListeningService(Service):
    """
    Listens on ``endpoint`` with ``factory`` from ``privilegedStartService`` (before twistd sheds root), and
    raises there at once if listening fails (port in use, permission denied), so the process stops instead of
    serving nothing.

    @ivar port: the listening port, once listening (and until stopped).
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
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
