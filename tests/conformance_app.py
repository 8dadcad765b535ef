"""A test-only app for WebSocket conformance runs: sandstone's own WebSocket stack, echoing.

The Autobahn cases (run by ``kosoku``) need an *echo* server and send no ``Sec-WebSocket-Protocol``,
while sandstone's endpoint speaks only WAMP and refuses a handshake without a WAMP subprotocol. So this
app is served by the real ``twistd -n sandstone --app tests.conformance_app:app``, with sandstone's
site, ``WebSocketResource``, factory (and its options) at the usual ``/ws`` path, and only the
application edge of ``WampServerProtocol`` changed: the handshake goes through sandstone's own
``onConnect`` as if ``wamp.2.json`` had been offered (so every check it makes still applies) but
answers without a subprotocol, and messages are echoed instead of being handed to a WAMP session.
Nothing of this is in the ``sandstone`` package.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.types import ConnectionRequest

from sandstone import Sandstone
from sandstone._transport import WampServerProtocol


class EchoProtocol(WampServerProtocol):
    """``WampServerProtocol`` with an echo application instead of a WAMP session."""

    def onConnect(self, request: ConnectionRequest) -> Any:
        offered = request.protocols
        request.protocols = offered or ["wamp.2.json"]
        try:
            chosen = super().onConnect(request)
        finally:
            request.protocols = offered
        # answer with a subprotocol only if the client offered one (a client that offered none
        # must get none back)
        return chosen if offered else None

    def onOpen(self) -> None:
        pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class ConformanceApp(Sandstone):
    """A ``Sandstone`` app whose WebSocket endpoint echoes (for conformance suites only)."""

    def websocket_resource(self) -> Any:
        resource = super().websocket_resource()
        factory = self._core.factory
        assert factory is not None
        factory.protocol = EchoProtocol
        return resource


app = ConformanceApp(anonymous=True)
