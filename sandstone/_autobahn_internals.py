"""The private details of autobahn that sandstone relies on, in one place.

- ``Serializer._serializer``: the object serializer a WAMP serializer wraps. Nothing public reaches it, and
  decoding needs it: sandstone parses the raw lists itself, keeping what autobahn's parser drops.
- ``Message._router_internal``: a slot of every autobahn message kept for a router's own use (``None`` until
  set). Messages have ``__slots__``; sandstone keeps its per-message state there (the frames built for each
  serializer, a PUBLISH's or CALL's ``disclose_me``, a serialization that failed).
- ``WebSocketProtocol._connectionMade`` copies each option named in the connection's ``CONFIG_ATTRS`` from
  the factory unless the connection already has it, and pretty-prints all of them for a debug line even when
  nothing logs it, the largest part of a connection's setup. A connection class holding the options itself,
  with an empty ``CONFIG_ATTRS``, skips both (``options_class``).
- ``WebSocketProtocol._dataReceived``: where autobahn's Twisted ``dataReceived`` hands the bytes over, after
  formatting a debug line for every frame, even when nothing logs it; a connection class calls it directly
  (``websocket_data_received``).
- ``WebSocketProtocol.sendCloseFrame``: autobahn's own way to start the closing handshake, with any code.
  Its public ``sendClose`` refuses 1001 "going away", which a server shutting down sends (``send_close``).

tests/test_autobahn_internals.py fails if an autobahn release changes these; setup.py bounds autobahn to the
releases tested.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from autobahn.util import encode_truncate
from autobahn.wamp.interfaces import IObjectSerializer, ISerializer
from autobahn.wamp.message import Message
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol

PROTOCOL_OPTIONS: tuple[str, ...] = tuple(WebSocketServerProtocol.CONFIG_ATTRS)
"""The names of autobahn's server protocol options (``setProtocolOptions``), as factory attributes."""

_P = TypeVar("_P", bound=type)


def object_serializer(serializer: ISerializer) -> IObjectSerializer:
    """The object serializer (raw lists to bytes and back) inside a WAMP serializer."""
    return cast(IObjectSerializer, serializer._serializer)  # type: ignore[attr-defined]


def router_data(msg: Message) -> dict[Any, Any]:
    """The router's own dict on a message, made on first use."""
    data: dict[Any, Any] | None = msg._router_internal
    if data is None:
        data = msg._router_internal = {}
    return data


#: ``router_data_if_any(msg)``: the router's own dict on a message, if one was made (``None`` else). An
#: ``attrgetter``: read for every EVENT a broadcast sends, it must cost no Python call.
router_data_if_any: Callable[[Message], dict[Any, Any] | None] = operator.attrgetter("_router_internal")


def options_class(base: _P, options: Mapping[str, Any]) -> _P:
    """A subclass of the connection class ``base`` holding autobahn's protocol ``options`` (name -> value, the
    names of ``PROTOCOL_OPTIONS``) as class attributes, which autobahn neither copies into each connection
    nor formats for its debug log."""
    namespace = {"__module__": base.__module__, **options, "CONFIG_ATTRS": ()}
    return cast(_P, type(base.__name__, (base,), namespace))


def send_close(protocol: WebSocketProtocol, code: int, reason: str) -> None:
    """Start the closing handshake of ``protocol`` with close ``code`` (which may be 1001 "going away", which
    autobahn's ``sendClose`` refuses: it takes only 1000 and 3000-4999) and ``reason``. Does nothing on a
    connection already closing or closed."""
    protocol.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)


websocket_data_received = WebSocketProtocol._dataReceived
"""autobahn's Twisted ``dataReceived`` without the debug line it formats for every chunk received (as a
connection class's ``dataReceived``)."""
