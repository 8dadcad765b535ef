"""WAMP over WebSocket: the server protocol and factory joining autobahn's WebSocket layer to the router."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp import message
from autobahn.wamp.interfaces import ISerializer
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from ._codec import DecodeError, decode
from ._router import Router
from ._session import Session

log = Logger()


def default_serializers() -> dict[str, ISerializer]:
    """One shared serializer per WebSocket subprotocol, in order of preference.

    They are shared by all connections so that autobahn's per-serializer cache on a message
    serializes a broadcast EVENT once per serializer, not once per subscriber.
    """
    serializers: list[ISerializer] = [
        CBORSerializer(),
        CBORSerializer(batched=True),
        MsgPackSerializer(),
        MsgPackSerializer(batched=True),
        JsonSerializer(),
        JsonSerializer(batched=True),
    ]
    return {f"wamp.2.{s.SERIALIZER_ID}": s for s in serializers}


class WampServerProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying one WAMP session at a time."""

    factory: WampServerFactory
    _serializer: ISerializer
    _wamp: Session | None = None

    def onConnect(self, request: ConnectionRequest) -> str:
        serializers = self.factory.serializers
        for subprotocol in request.protocols:
            serializer = serializers.get(subprotocol)
            if serializer is not None:
                self._serializer = serializer
                return subprotocol
        raise ConnectionDeny(
            ConnectionDeny.BAD_REQUEST,
            "this server speaks the WebSocket subprotocols " + ", ".join(serializers),
        )

    def onOpen(self) -> None:
        self._wamp = self.factory.router.attach(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self._wamp
        if session is None:
            return
        try:
            messages = decode(self._serializer, payload, isBinary)
        except DecodeError as exc:
            session.protocol_violation(str(exc))
            return
        for msg in messages:
            session.on_message(msg)
            if session.has_left:
                self._wamp = self.factory.router.attach(self) if self.state == self.STATE_OPEN else None
                break

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self._wamp = self._wamp, None
        if session is not None:
            session.on_transport_lost()

    # the session's transport interface

    def send_message(self, msg: message.Message) -> None:
        """Serialize (through the shared serializer's cache) and send one WAMP message."""
        if self.state != self.STATE_OPEN:
            return
        payload, is_binary = self._serializer.serialize(msg)
        self.sendMessage(payload, is_binary)

    def close_transport(self, reason: str) -> None:
        """Close the WebSocket after an ABORT."""
        if self.state == self.STATE_OPEN:
            self.sendClose(self.CLOSE_STATUS_CODE_NORMAL, reason[:120])


class WampServerFactory(WebSocketServerFactory):
    """Builds WAMP connections for one router."""

    protocol = WampServerProtocol

    def __init__(
        self, router: Router, serializers: dict[str, ISerializer] | None = None, **kwargs: Any
    ) -> None:
        self.serializers = serializers if serializers is not None else default_serializers()
        super().__init__(protocols=list(self.serializers), **kwargs)
        self.router = router


def websocket_resource(factory: WampServerFactory) -> WebSocketResource:
    """A twisted.web resource that upgrades requests to WAMP-over-WebSocket connections."""
    return WebSocketResource(factory)
