"""Decoding WAMP frames into autobahn message objects, keeping what autobahn's parser drops."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.interfaces import ISerializer
from autobahn.wamp.serializer import Serializer

from ._autobahn_internals import object_serializer, router_data, router_data_if_any


class DecodeError(Exception):
    """A frame is not a valid sequence of WAMP messages."""


_MESSAGE_TYPES: dict[int, Any] = Serializer.MESSAGE_TYPE_MAP
_DISCLOSING = (message.Publish.MESSAGE_TYPE, message.Call.MESSAGE_TYPE)

# Requests whose URI the session checks itself, answering a bad one with ERROR wamp.error.invalid_uri
# (autobahn's parser would reject the whole message): message type -> (index in the list, attribute).
_REQUEST_URIS: dict[int, tuple[int, str]] = {
    message.Subscribe.MESSAGE_TYPE: (3, "topic"),
    message.Publish.MESSAGE_TYPE: (3, "topic"),
    message.Register.MESSAGE_TYPE: (3, "procedure"),
    message.Call.MESSAGE_TYPE: (3, "procedure"),
}
_PLACEHOLDER_URI = "sandstone.placeholder"


def decode(serializer: ISerializer, payload: bytes, is_binary: bool) -> list[message.Message]:
    """Turn one WebSocket message into WAMP messages, or raise ``DecodeError`` saying why."""
    objects = object_serializer(serializer)
    if is_binary != objects.BINARY:
        kind = "binary" if is_binary else "text"
        raise DecodeError(f"{kind} frame on a {serializer.SERIALIZER_ID} connection")
    try:
        raws = objects.unserialize(payload)
    except Exception as exc:
        raise DecodeError(f"frame does not deserialize: {type(exc).__name__}: {exc}") from None
    return [_parse(raw) for raw in raws]


def _parse(raw: Any) -> message.Message:
    if type(raw) is not list or not raw:
        raise DecodeError(f"a WAMP message must be a non-empty list, got {_describe(raw)}")
    kind = raw[0]
    cls = _MESSAGE_TYPES.get(kind) if type(kind) is int else None
    if cls is None:
        raise DecodeError(f"unknown WAMP message type {kind!r}")
    index, attribute = _REQUEST_URIS.get(kind, (0, ""))
    uri = raw[index] if attribute and len(raw) > index and type(raw[index]) is str else None
    if uri is not None:  # parsed with a valid stand-in, then put back for the session to check
        raw = [*raw[:index], _PLACEHOLDER_URI, *raw[index + 1 :]]
    try:
        msg: message.Message = cls.parse(raw)
    except Exception as exc:
        raise DecodeError(f"invalid {cls.__name__.upper()}: {exc}") from None
    if uri is not None:
        setattr(msg, attribute, uri)
    if kind in _DISCLOSING:
        router_data(msg)["disclose_me"] = _disclose_option(raw)
    return msg


def _disclose_option(raw: list[Any]) -> bool:
    options = raw[2] if len(raw) > 2 else None
    if not isinstance(options, dict):
        return False
    value = options.get("disclose_me", False)
    if type(value) is not bool:
        raise DecodeError(f"invalid type {type(value).__name__} for option 'disclose_me'")
    return value


def disclosed(msg: message.Message) -> bool:
    """Whether a PUBLISH or CALL asked the router to disclose the sender's identity."""
    data = router_data_if_any(msg)
    return bool(data and data.get("disclose_me"))


def _describe(raw: Any) -> str:
    return "an empty list" if raw == [] else type(raw).__name__
