"""WAMP's CBOR serializer, decoding without CBOR's value sharing (tags 28 and 29).

With value sharing a frame of a few hundred bytes can decode into a structure of exponential size (each level
referring twice to the one below), or one large string referenced thousands of times: re-serialized for other
subscribers it would take gigabytes. No WAMP client needs it, so a frame using it does not decode (the session
gets ABORT ``wamp.error.protocol_violation``). Encoding is autobahn's.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from autobahn.wamp.interfaces import IObjectSerializer
from autobahn.wamp.serializer import CBORObjectSerializer, CBORSerializer, Serializer

_SHAREABLE = 28
_SHARED_REFERENCE = 29


class _SharingRefused(ValueError):
    pass


def _refuse_sharing(decoder: Any, value: Any) -> Any:
    raise _SharingRefused


_SEMANTIC = {_SHAREABLE: _refuse_sharing, _SHARED_REFERENCE: _refuse_sharing}


def _loads(data: bytes) -> Any:
    try:
        return cbor2.loads(data, semantic_decoders=_SEMANTIC)
    except cbor2.CBORDecodeError as exc:
        if isinstance(exc.__cause__, _SharingRefused):
            raise ValueError("CBOR value sharing (tags 28/29) is not accepted") from None
        raise


class SafeCBORObjectSerializer(IObjectSerializer):
    """autobahn's ``CBORObjectSerializer``, refusing value sharing when decoding."""

    NAME = "cbor"
    BINARY = True

    def __init__(self, batched: bool = False) -> None:
        self.batched = batched
        self._autobahn = CBORObjectSerializer(batched=batched)  # encodes

    def serialize(self, obj: Any) -> bytes:
        data: bytes = self._autobahn.serialize(obj)
        return data

    def unserialize(self, payload: bytes) -> list[Any]:
        if not self.batched:
            return [_loads(payload)]
        messages, size, i = [], len(payload), 0
        while i < size:
            if i + 4 > size:
                raise ValueError("batch format error: truncated length prefix")
            (length,) = struct.unpack("!L", payload[i : i + 4])
            if i + 4 + length > size:
                raise ValueError("batch format error: truncated message")
            messages.append(_loads(payload[i + 4 : i + 4 + length]))
            i += 4 + length
        return messages


class _SafeCBORSerializer(CBORSerializer):
    """autobahn's ``CBORSerializer`` over a ``SafeCBORObjectSerializer``."""

    def __init__(self, batched: bool = False) -> None:
        Serializer.__init__(self, SafeCBORObjectSerializer(batched=batched))
        if batched:
            self.SERIALIZER_ID = "cbor.batched"


def cbor_serializer(batched: bool = False) -> CBORSerializer:
    """A ``CBORSerializer`` (subprotocol ``wamp.2.cbor`` or ``.batched``) that refuses value sharing."""
    return _SafeCBORSerializer(batched=batched)
