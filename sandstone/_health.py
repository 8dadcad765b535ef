"""Health probes: ``/healthz`` (the process answers) and ``/readyz`` (it should get traffic), served with the
metrics on the ``--metrics`` listener (``_metrics.py``).

Both are rendered by the reactor itself, so an answer proves the reactor turns. ``/readyz`` says 503, with a
JSON reason, while the node starts, when its listening port is not serving, when its cluster bus has lost
Redis, and from the first moment of a graceful shutdown (the listener of the probes stops last, see
``SandstoneService.stopService``): load balancers stop sending new clients before the connections close.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.web.resource import Resource

if TYPE_CHECKING:
    from ._app import Sandstone

__all__ = ["HealthPage", "ReadinessPage", "Readiness"]


class Readiness:
    """Whether a node should get traffic: its service tree (``node``) runs, its listening service
    (``listening``) serves, and the app's cluster bus, if it has one, is connected to Redis."""

    def __init__(self, node: IService, listening: IService, app: Sandstone) -> None:
        self.node = node
        self.listening = listening
        self.app = app
        self.started = False  # the node has run (so a node that does not run any more is shutting down)

    def problem(self) -> str | None:
        """Why the node is not ready, or ``None`` when it is."""
        if not self.node.running:
            return "shutting down" if self.started else "starting"
        if not self.listening.running:
            return "not listening"
        bus = self.app.bus
        if bus is not None and not bus.connected:
            return "the cluster bus is not connected to Redis"
        return None


def _json(request: Any, status: int, body: dict[str, str]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


class HealthPage(Resource):
    """``GET /healthz``: 200 whenever the reactor answers."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, {"status": "ok"})


class ReadinessPage(Resource):
    """``GET /readyz``: 200 when ready, else 503 with the reason (see ``Readiness``)."""

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: Any) -> bytes:
        problem = self.readiness.problem()
        if problem is None:
            return _json(request, 200, {"status": "ready"})
        return _json(request, 503, {"status": "not ready", "reason": problem})
