"""WAMP's JSON serializer with the standard library's C scanner and encoder, same bytes as autobahn's.

autobahn decodes every JSON message with the pure-Python scanner (to turn strings starting with NUL
into bytes, WAMP's convention for binary values in JSON) and builds a new encoder for every message.
Here a frame whose text has no ``\\u0000`` escape, so no string that can start with NUL, is decoded by
the C scanner, any other by autobahn's decoder; encoding uses one reusable C encoder. Both give exactly
what autobahn's ``JsonObjectSerializer`` gives.
"""

from __future__ import annotations

import base64
import decimal
import json
from typing import Any

from autobahn.wamp.interfaces import IObjectSerializer
from autobahn.wamp.serializer import JsonObjectSerializer, JsonSerializer, Serializer

_BATCH_SEPARATOR = b"\x18"
_NUL_ESCAPE = b"\\u0000"


def _binary(value: Any) -> str:
    """What autobahn's encoder writes for values JSON has no type for."""
    if isinstance(value, bytes):
        return "\x00" + base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_binary).encode
_decode = json.JSONDecoder().decode


class FastJsonObjectSerializer(IObjectSerializer):
    """autobahn's ``JsonObjectSerializer`` (NUL-prefixed base64 for bytes), with C fast paths."""

    NAME = "json"
    BINARY = False

    def __init__(self, batched: bool = False) -> None:
        self.batched = batched
        self._autobahn = JsonObjectSerializer(batched=batched)  # for frames that may carry bytes

    def serialize(self, obj: Any) -> bytes:
        data: bytes = _encode(obj).encode("utf8")
        return data + _BATCH_SEPARATOR if self.batched else data

    def unserialize(self, payload: bytes) -> list[Any]:
        if _NUL_ESCAPE in payload:  # a string may stand for bytes: autobahn's own decoder
            objects: list[Any] = self._autobahn.unserialize(payload)
            return objects
        if self.batched:
            chunks = payload.split(_BATCH_SEPARATOR)[:-1]
            if not chunks:
                raise ValueError("batch format error")
            return [_decode(chunk.decode("utf8")) for chunk in chunks]
        return [_decode(payload.decode("utf8"))]


class _FastJsonSerializer(JsonSerializer):
    """autobahn's ``JsonSerializer`` over a ``FastJsonObjectSerializer``."""

    def __init__(self, batched: bool = False) -> None:
        Serializer.__init__(self, FastJsonObjectSerializer(batched=batched))
        if batched:
            self.SERIALIZER_ID = "json.batched"


def json_serializer(batched: bool = False) -> JsonSerializer:
    """A ``JsonSerializer`` (subprotocol ``wamp.2.json`` or ``wamp.2.json.batched``) using the fast paths."""
    return _FastJsonSerializer(batched=batched)
