"""The bus envelope, version 1: the JSON messages sandstone nodes (and outside producers) exchange on Redis.

Every message is one UTF-8 JSON object with ``"v": 1`` and a ``"type"``. Outside producers send
``event`` and ``delivery`` messages on the public channels; nodes send theirs (and ``procedures``: which
entries of the procedures hash changed), and the node-channel messages (``call``, ``result``, ``error``,
``cancel``), on internal channels, signed with HMAC-SHA256 when the cluster has a secret. Each channel
accepts its own message types only (``ChannelRule``), and every member is checked before use.
``docs/bus.md`` describes the format for producers written in any language.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._ids import MAX_ID
from ._publication import Publication
from ._registrations import INVOKE_POLICIES
from ._subscriptions import EXACT, PREFIX, WILDCARD

VERSION = 1
MAX_BYTES = 1_048_576

EVENT = "event"
DELIVERY = "delivery"
NODE_TYPES = frozenset({"call", "result", "error", "cancel"})
PROCEDURES = "procedures"  # a node changed entries of the procedures hash (on the peers channel)
#: What nodes tell every other node on the peers channel besides events and deliveries: meta events
#: (``wamp.session.on_join``...), whether a node has subscribers of meta topics, and changes of the
#: procedures hash.
PEER_TYPES = frozenset({"meta", "interest", PROCEDURES})
PUBLIC_TYPES = frozenset({EVENT, DELIVERY})

# characters that would make a channel name ambiguous or turn it into a Redis glob pattern
_GLOB = frozenset("*?[]\\")


class EnvelopeError(ValueError):
    """A bus message is malformed, too large, of an unknown version/type, or carries an event type that is
    not allowed."""


class MessageRejected(EnvelopeError):
    """A well-formed bus message that its channel does not accept: a type or member meant for another
    channel, or a missing or wrong signature on an internal channel."""


# channels


@dataclass(frozen=True)
class Channels:
    """The Redis channel and key names of one realm of one cluster on the bus.

    Every name starts with ``base``: the prefix, the cluster name if any, ``db<N>`` for a Redis database
    other than 0 (pub/sub ignores the database), and the realm, joined with ``:``.
    """

    prefix: str
    realm: str
    cluster_name: str | None = None
    db: int = 0
    base: str = field(init=False)
    events: str = field(init=False)
    deliveries: str = field(init=False)
    peers: str = field(init=False)
    procedures: str = field(init=False)
    procedures_version: str = field(init=False)
    state: str = field(init=False)

    def __post_init__(self) -> None:
        _check_name_part("prefix", self.prefix, allow_colon=True)
        _check_name_part("realm", self.realm, allow_colon=False)
        parts = [self.prefix]
        if self.cluster_name is not None:
            _check_name_part("cluster name", self.cluster_name, allow_colon=False)
            parts.append(self.cluster_name)
        if not _is_int(self.db) or self.db < 0:
            raise ValueError(f"the Redis database must be a number from 0, not {self.db!r}")
        if self.db:
            parts.append(f"db{self.db}")
        base = ":".join([*parts, self.realm])
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "events", f"{base}:events")
        object.__setattr__(self, "deliveries", f"{base}:deliveries")
        object.__setattr__(self, "peers", f"{base}:peers")
        object.__setattr__(self, "procedures", f"{base}:procedures")
        object.__setattr__(self, "procedures_version", f"{base}:procedures:version")
        object.__setattr__(self, "state", f"{base}:state")

    def node(self, node_id: str) -> str:
        """The channel of one node (calls and results addressed to it)."""
        _check_name_part("node id", node_id, allow_colon=False)
        return f"{self.base}:node:{node_id}"

    def heartbeat(self, node_id: str) -> str:
        """The key a node refreshes while it is alive."""
        _check_name_part("node id", node_id, allow_colon=False)
        return f"{self.base}:nodes:{node_id}"

    def announced(self, key: str) -> str:
        """The key naming the node that announces the keyed broadcast ``key`` (see ``RedisBus.announce``)."""
        return f"{self.base}:announced:{key}"

    def sessions(self, node_id: str) -> str:
        """The hash of one node's sessions (session id: its identity), for the session meta API."""
        _check_name_part("node id", node_id, allow_colon=False)
        return f"{self.base}:sessions:{node_id}"

    def subscriptions(self, node_id: str) -> str:
        """The hash of one node's subscriptions (subscription id: URI, match policy, creation time)."""
        _check_name_part("node id", node_id, allow_colon=False)
        return f"{self.base}:subscriptions:{node_id}"

    def subscribers(self, node_id: str, subscription_id: int) -> str:
        """The hash of one node's subscribers of one subscription (session id: authid, authrole)."""
        _check_name_part("node id", node_id, allow_colon=False)
        return f"{self.base}:subscribers:{node_id}:{subscription_id}"

    @property
    def heartbeat_prefix(self) -> str:
        """What every heartbeat key starts with (the node id follows)."""
        return f"{self.base}:nodes:"


def channel_names(prefix: str, realm: str, *, cluster_name: str | None = None, db: int = 0) -> Channels:
    """The channel and key names for ``realm`` under ``prefix`` (e.g. ``"sandstone"``), for the cluster
    called ``cluster_name`` (if any) on Redis database ``db``."""
    return Channels(prefix, realm, cluster_name, db)


def _check_name_part(what: str, value: object, *, allow_colon: bool) -> None:
    if not isinstance(value, str):
        raise TypeError(f"the bus {what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"the bus {what} must not be empty")
    bad = sorted({c for c in value if c.isspace() or c in _GLOB or (c == ":" and not allow_colon)})
    if bad:
        raise ValueError(
            f"the bus {what} {value!r} contains {''.join(bad)!r}: use letters, digits, '.', '-' or '_'"
        )


# event data


def event_data(event: object) -> Any:
    """The JSON-able form of an event: a dataclass instance becomes its fields (recursively), a dict itself.

    Raises ``TypeError`` for any other event, and when the result is not JSON-encodable.
    """
    if not (_is_dataclass_instance(event) or isinstance(event, dict)):
        raise TypeError(
            f"an event sent over the bus must be a dataclass instance or a dict, not {type(event).__name__}"
        )
    try:
        data = _plain(event, "event")
    except RecursionError:
        raise TypeError("the event is not JSON-encodable: it contains itself") from None
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the event is not JSON-encodable: {e}") from None
    return data


def _is_dataclass_instance(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _plain(value: Any, path: str) -> Any:
    """Dataclasses to dicts, tuples to lists, recursively; dict keys must be strings."""
    if _is_dataclass_instance(value):
        return {f.name: _plain(getattr(value, f.name), f"{path}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path} has the key {key!r} of type {type(key).__name__}: JSON object keys must be str"
                )
            result[key] = _plain(item, f"{path}[{key!r}]")
        return result
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


# typed decoding of event data

Converter = Callable[[Any, str], Any]


class _Builder:
    """Rebuilds one dataclass type from a JSON object, with converters for its dataclass-typed fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.converters: dict[str, Converter | None] = {}
        self.required: frozenset[str] = frozenset()
        self.computed: frozenset[str] = frozenset()

    def build(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            raise EnvelopeError(
                f"{path} must be a JSON object for {self.cls.__qualname__}, not {_json_type(data)}"
            )
        missing = self.required - data.keys()
        if missing:
            raise EnvelopeError(f"{path} lacks the field(s) {', '.join(sorted(missing))}")
        unknown = data.keys() - self.converters.keys() - self.computed
        if unknown:
            raise EnvelopeError(
                f"{path} has unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                f"for {self.cls.__qualname__}"
            )
        kwargs = {}
        for name, convert in self.converters.items():
            if name in data:
                value = data[name]
                kwargs[name] = value if convert is None else convert(value, f"{path}.{name}")
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise EnvelopeError(f"{path}: {self.cls.__qualname__} rejected the data: {e}") from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


class _Schemas:
    """Builders for dataclass types, made once per type (recursive types included)."""

    def __init__(self) -> None:
        self._builders: dict[type, _Builder] = {}

    def builder(self, cls: type) -> _Builder:
        """The builder of ``cls``; ``TypeError`` (and nothing cached) when its fields cannot be decoded."""
        if cls in self._builders:
            return self._builders[cls]
        snapshot = dict(self._builders)
        try:
            return self._builder(cls)
        except TypeError:
            self._builders = snapshot
            raise

    def _builder(self, cls: type) -> _Builder:
        builder = self._builders.get(cls)
        if builder is not None:
            return builder
        builder = self._builders[cls] = _Builder(cls)
        try:
            hints = typing.get_type_hints(cls)
        except Exception as e:
            raise TypeError(
                f"cannot resolve the type hints of {cls.__qualname__} ({e}): define the dataclasses of "
                f"bus events, and the types their fields name, at module level"
            ) from None
        required, computed = set(), set()
        for f in dataclasses.fields(cls):
            if not f.init:
                computed.add(f.name)
                continue
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.add(f.name)
            where = f"{cls.__qualname__}.{f.name}"
            builder.converters[f.name] = self._converter(hints.get(f.name, Any), where)
        builder.required, builder.computed = frozenset(required), frozenset(computed)
        return builder

    def _converter(self, hint: Any, where: str) -> Converter | None:
        """How to rebuild a value annotated with ``hint``; ``None`` when it is taken as it is."""
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self._builder(hint).build
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Annotated:
            return self._converter(args[0], where)
        if origin is list and args:
            return _sequence(self._converter(args[0], where), list)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return _sequence(self._converter(args[0], where), tuple)
        if origin is dict and len(args) == 2:
            return _mapping(self._converter(args[1], where))
        if origin is typing.Union or origin is types.UnionType:
            options = [arg for arg in args if arg is not type(None)]
            converters = [self._converter(arg, where) for arg in options]
            if all(c is None for c in converters):
                return None
            if len(options) > 1:
                raise TypeError(
                    f"{where} is annotated {hint}: a union of several types that include a dataclass "
                    f"cannot be decoded from JSON; use one dataclass type (or X | None)"
                )
            return _optional(converters[0])
        return None


def _sequence(item: Converter | None, kind: type) -> Converter | None:
    if item is None:
        return None

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise EnvelopeError(f"{path} must be an array, not {_json_type(value)}")
        return kind(item(element, f"{path}[{i}]") for i, element in enumerate(value))

    return convert


def _mapping(item: Converter | None) -> Converter | None:
    if item is None:
        return None

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise EnvelopeError(f"{path} must be an object, not {_json_type(value)}")
        return {key: item(element, f"{path}[{key!r}]") for key, element in value.items()}

    return convert


def _optional(item: Converter | None) -> Converter | None:
    if item is None:
        return None

    def convert(value: Any, path: str) -> Any:
        return None if value is None else item(value, path)

    return convert


class EventCodec:
    """Allow-list of forwarded events: name -> type (a dataclass type, or dict)."""

    def __init__(self) -> None:
        self._types: dict[str, type] = {}
        self._schemas = _Schemas()

    def allow(self, name: str, event_type: type = dict) -> None:
        """Forward events called ``name`` over the bus; their values are ``event_type`` instances."""
        if not isinstance(name, str):
            raise TypeError(f"an event name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("an event name must not be empty")
        if event_type is not dict and not (
            isinstance(event_type, type) and dataclasses.is_dataclass(event_type)
        ):
            raise TypeError(
                f"event {name!r}: the type of a forwarded event must be dict or a dataclass type, "
                f"not {event_type!r}"
            )
        known = self._types.get(name)
        if known is not None:
            if known is not event_type:
                raise ValueError(
                    f"event {name!r} is already forwarded as {known.__qualname__}, "
                    f"it cannot also be {event_type.__qualname__}"
                )
            return
        if event_type is not dict:
            self._schemas.builder(event_type)  # resolves the type hints now, so mistakes show up here
        self._types[name] = event_type

    def is_forwarded(self, name: str) -> bool:
        """Whether events called ``name`` travel over the bus."""
        return name in self._types

    def names(self) -> frozenset[str]:
        """The names of the forwarded events."""
        return frozenset(self._types)

    def encode(self, name: str, event: object) -> Any:
        """The JSON-able ``data`` of a forwarded event; ``TypeError`` when it is not of the allowed type."""
        event_type = self._type(name)
        if not isinstance(event, event_type):
            raise TypeError(
                f"event {name!r} is forwarded as {event_type.__qualname__}, "
                f"but the dispatched event is a {type(event).__qualname__}"
            )
        return event_data(event)

    def decode(self, name: str, data: Any) -> object:
        """The event rebuilt from its ``data``; ``EnvelopeError`` when the name or the shape is wrong."""
        event_type = self._type(name)
        if event_type is dict:
            if not isinstance(data, dict):
                raise EnvelopeError(f"event {name!r}: data must be a JSON object, not {_json_type(data)}")
            return data
        return self._schemas.builder(event_type).build(data, f"event {name!r}: data")

    def _type(self, name: str) -> type:
        try:
            return self._types[name]
        except KeyError:
            raise EnvelopeError(
                f"event {name!r} is not forwarded over the bus: allow it on every node first"
            ) from None


# encoding


def _dumps(message: dict[str, Any], what: str) -> bytes:
    try:
        text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"the {what} is not JSON-encodable: {e}") from None
    return text.encode("utf-8")


def encode_event(origin: str, event_id: str, name: str, data: Any) -> bytes:
    """An event message; ``data`` is the event's JSON-able form (``EventCodec.encode`` or ``event_data``)."""
    message = {"v": VERSION, "type": EVENT, "origin": origin, "id": event_id, "name": name, "data": data}
    for key in ("origin", "id", "name"):
        _encoding_check(_NONEMPTY_STR, message, key)
    return _dumps(message, f"data of event {name!r}")


def encode_delivery(
    origin: str, publication: Publication, key: str | None = None, *, checked: bool = True
) -> bytes:
    """A delivery message: ``publication`` broadcast on every node. Options at their defaults are left out.

    ``key`` (a dedupe key) defaults to the publication's own ``key`` attribute when it has one. ``checked``:
    check each field (a caller whose publication passed ``payload_problem`` already may skip it).
    """
    p = publication
    message: dict[str, Any] = {
        "v": VERSION,
        "type": DELIVERY,
        "origin": origin,
        "topic": p.topic,
        "publication": p.id,
        "args": list(p.args) if isinstance(p.args, tuple) else p.args,
        "kwargs": p.kwargs,
    }
    optional: dict[str, Any] = {
        "publisher": p.publisher,
        "publisher_authid": p.publisher_authid,
        "publisher_authrole": p.publisher_authrole,
        "exclude": _sorted(p.exclude),
        "exclude_authid": _sorted(p.exclude_authid),
        "exclude_authrole": _sorted(p.exclude_authrole),
        "eligible": _sorted(p.eligible),
        "eligible_authid": _sorted(p.eligible_authid),
        "eligible_authrole": _sorted(p.eligible_authrole),
        "key": key if key is not None else getattr(p, "key", None),
    }
    message.update((name, value) for name, value in optional.items() if value is not None)
    if not p.exclude_me:
        message["exclude_me"] = False
    if p.disclose_me:
        message["disclose_me"] = True
    if checked:
        for name, check in _DELIVERY_FIELDS.items():
            _encoding_check(check, message, name)
    return _dumps(message, f"publication to {p.topic!r}")


def _sorted(values: Iterable[Any] | None) -> list[Any] | None:
    return None if values is None else sorted(values)


def _encoding_check(check: _Check, message: dict[str, Any], key: str) -> None:
    problem = check.problem(message.get(key, _ABSENT))
    if problem is not None:
        raise EnvelopeError(f"cannot encode the {message['type']} message: {key} {problem}")


# decoding


@dataclass(frozen=True)
class EventMessage:
    """An event dispatched somewhere in the cluster; ``data`` is still in its JSON form."""

    origin: str
    id: str
    name: str
    data: Any


@dataclass(frozen=True)
class DeliveryMessage:
    """A publication to deliver to the local subscribers of its topic."""

    origin: str
    publication: Publication
    key: str | None


@dataclass(frozen=True)
class NodeMessage:
    """A node's own message: one of a node channel (call, result, error, cancel) or ``procedures`` on the
    peers channel; ``body`` is the whole JSON object."""

    type: str
    origin: str
    body: dict[str, Any]


Message = EventMessage | DeliveryMessage
AnyMessage = EventMessage | DeliveryMessage | NodeMessage

_ABSENT: Any = object()
# whether Publication carries its dedupe key itself (then it travels both ways with it)


@dataclass(frozen=True)
class ChannelRule:
    """What one channel accepts: its message ``types``, and whether it is ``internal`` (written by nodes
    only: node-only members such as a delivery's dedupe ``key`` are allowed, and signatures are checked
    when the cluster has a secret)."""

    types: frozenset[str]
    internal: bool


PUBLIC_EVENTS = ChannelRule(frozenset({EVENT}), internal=False)
PUBLIC_DELIVERIES = ChannelRule(frozenset({DELIVERY}), internal=False)
PEERS = ChannelRule(PUBLIC_TYPES | PEER_TYPES, internal=True)
NODE = ChannelRule(NODE_TYPES, internal=True)
ANY_CHANNEL = ChannelRule(PUBLIC_TYPES | NODE_TYPES | PEER_TYPES, internal=True)


def decode(
    raw: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    rule: ChannelRule = ANY_CHANNEL,
    channel: str = "",
    signer: Signer | None = None,
) -> AnyMessage:
    """Parse and check one bus message received on ``channel``, which follows ``rule``; raises only
    ``EnvelopeError`` (``MessageRejected`` for a well-formed message the channel does not accept).

    With a ``signer``, a message on an internal channel must carry a valid signature.
    """
    data, text = _message_bytes(raw, max_bytes)
    if signer is not None and rule.internal:
        signer.check(channel, data)
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EnvelopeError(f"message is not valid UTF-8: {e}") from None
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise EnvelopeError(f"message is not valid JSON: {e}") from None
    if not isinstance(message, dict):
        raise EnvelopeError(f"message must be a JSON object, not {_json_type(message)}")
    version = message.get("v", _ABSENT)
    if version is _ABSENT:
        raise EnvelopeError('message has no version ("v")')
    if not _is_int(version) or version != VERSION:
        raise EnvelopeError(f"unsupported message version {version!r}: this node speaks version {VERSION}")
    kind = message.get("type", _ABSENT)
    if kind is _ABSENT:
        raise EnvelopeError('message has no "type"')
    if not isinstance(kind, str) or kind not in _DECODERS:
        raise EnvelopeError(f"unknown message type {kind!r}")
    if kind not in rule.types:
        raise MessageRejected(f"{kind} messages are not accepted on this channel: {_where(kind)}")
    return _DECODERS[kind](message, rule)


def _message_bytes(raw: Any, max_bytes: int) -> tuple[bytes, str | None]:
    """The message's bytes (and its text when it came as text), checked against the size limit."""
    if isinstance(raw, str):
        if len(raw) > max_bytes:  # a character takes at least one byte
            raise EnvelopeError(f"message too large: more than {max_bytes} bytes")
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as e:
            raise EnvelopeError(f"message is not valid UTF-8: {e}") from None
        text: str | None = raw
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data, text = bytes(raw), None
    else:
        raise EnvelopeError(f"message must be bytes or str, not {type(raw).__name__}")
    if len(data) > max_bytes:
        raise EnvelopeError(f"message too large: {len(data)} bytes, the limit is {max_bytes}")
    return data, text


def _where(kind: str) -> str:
    if kind in NODE_TYPES:
        return "it is a node-internal message, sent by nodes on their own channels only"
    if kind in PEER_TYPES:
        return "it is a node-internal message, sent by nodes on the peers channel only"
    if kind == EVENT:
        return "producers publish event messages on the events channel"
    return "producers publish delivery messages on the deliveries channel"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _event(message: dict[str, Any], rule: ChannelRule) -> EventMessage:
    for key in ("origin", "id", "name"):
        _field(message, key, _NONEMPTY_STR)
    if "data" not in message:
        raise EnvelopeError('event message has no "data"')
    return EventMessage(message["origin"], message["id"], message["name"], message["data"])


def _delivery(message: dict[str, Any], rule: ChannelRule) -> DeliveryMessage:
    for key, check in _DELIVERY_FIELDS.items():
        _field(message, key, check)
    topic = message["topic"]
    if topic == "wamp" or topic.startswith("wamp."):
        raise MessageRejected(
            f"delivery message: topic {topic!r} is in the 'wamp.' namespace, where only the router publishes"
        )
    if not rule.internal and message.get("key") is not None:
        raise MessageRejected(
            "delivery message: key is the nodes' internal dedupe key; producers leave it out"
        )
    get = message.get
    publication = Publication(
        message["topic"],
        get("args"),
        get("kwargs"),
        id=message["publication"],
        publisher=get("publisher"),
        publisher_authid=get("publisher_authid"),
        publisher_authrole=get("publisher_authrole"),
        exclude_me=get("exclude_me", True),
        disclose_me=get("disclose_me", False),
        exclude=_frozen(get("exclude")),
        exclude_authid=_frozen(get("exclude_authid")),
        exclude_authrole=_frozen(get("exclude_authrole")),
        eligible=_frozen(get("eligible")),
        eligible_authid=_frozen(get("eligible_authid")),
        eligible_authrole=_frozen(get("eligible_authrole")),
    )
    publication.key = get("key")
    return DeliveryMessage(message["origin"], publication, get("key"))


def _node(message: dict[str, Any], rule: ChannelRule) -> NodeMessage:
    for key, check in _NODE_FIELDS[message["type"]].items():
        _field(message, key, check)
    return NodeMessage(message["type"], message["origin"], message)


_DECODERS: dict[str, Callable[[dict[str, Any], ChannelRule], AnyMessage]] = {
    EVENT: _event,
    DELIVERY: _delivery,
    **dict.fromkeys(NODE_TYPES | PEER_TYPES, _node),
}


def _frozen(values: list[Any] | None) -> frozenset[Any] | None:
    return None if values is None else frozenset(values)


def _field(message: dict[str, Any], key: str, check: _Check) -> None:
    problem = check.problem(message.get(key, _ABSENT))
    if problem is not None:
        raise EnvelopeError(f"{message['type']} message: {key} {problem}")


# field checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Check:
    """What a field must be; ``optional`` fields may be absent."""

    ok: Callable[[Any], bool]
    expected: str
    optional: bool = False

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is fine, else what is wrong with it."""
        if value is _ABSENT:
            return None if self.optional else "is missing"
        if self.ok(value):
            return None
        text = repr(value)
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"must be {self.expected}, but is {_json_type(value)} ({shown})"


def _nullable(check: _Check) -> _Check:
    return _Check(lambda v: v is None or check.ok(v), f"{check.expected} or null", optional=True)


def _is_id(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= MAX_ID


_NONEMPTY_STR = _Check(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
_TOPIC = _Check(
    lambda v: isinstance(v, str) and bool(v) and not any(c.isspace() for c in v),
    "a non-empty string without whitespace",
)
_ID = _Check(_is_id, "an integer from 1 to 2^53")
_BOOL = _Check(lambda v: isinstance(v, bool), "true or false", optional=True)
_STR = _Check(lambda v: isinstance(v, str), "a string")
_ARRAY = _Check(lambda v: isinstance(v, list), "an array")
_OBJECT = _Check(lambda v: isinstance(v, dict), "an object")
_IDS = _Check(lambda v: isinstance(v, list) and all(map(_is_id, v)), "an array of integers from 1 to 2^53")
_STRS = _Check(lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "an array of strings")

_DELIVERY_FIELDS: dict[str, _Check] = {
    "origin": _NONEMPTY_STR,
    "topic": _TOPIC,
    "publication": _ID,
    "args": _nullable(_ARRAY),
    "kwargs": _nullable(_OBJECT),
    "publisher": _nullable(_ID),
    "publisher_authid": _nullable(_STR),
    "publisher_authrole": _nullable(_STR),
    "exclude_me": _BOOL,
    "disclose_me": _BOOL,
    "exclude": _nullable(_IDS),
    "exclude_authid": _nullable(_STRS),
    "exclude_authrole": _nullable(_STRS),
    "eligible": _nullable(_IDS),
    "eligible_authid": _nullable(_STRS),
    "eligible_authrole": _nullable(_STRS),
    "key": _nullable(_STR),
}


_CANCEL_MODES = ("skip", "kill", "killnowait")


def _is_node_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and not any(c.isspace() or c in _GLOB or c == ":" for c in value)
    )


_NODE_ID = _Check(_is_node_id, "a node id (a non-empty string without whitespace, ':' or * ? [ ] \\)")
_URI = _Check(
    lambda v: isinstance(v, str) and bool(v) and not any(c.isspace() for c in v),
    "a URI (a non-empty string without whitespace)",
)
_MODE = _Check(
    lambda v: v is None or v in _CANCEL_MODES, '"skip", "kill", "killnowait" or null', optional=True
)
_MATCH = _Check(
    lambda v: v is None or v in (EXACT, PREFIX, WILDCARD),
    '"exact", "prefix", "wildcard" or null',
    optional=True,
)
_VERSION = _Check(lambda v: _is_int(v) and v >= 0, "an integer from 0")
_PAYLOAD_FIELDS: dict[str, _Check] = {"args": _nullable(_ARRAY), "kwargs": _nullable(_OBJECT)}

_NODE_FIELDS: dict[str, dict[str, _Check]] = {
    "call": {
        "origin": _NODE_ID,
        "call": _NONEMPTY_STR,
        "procedure": _URI,
        **_PAYLOAD_FIELDS,
        "receive_progress": _BOOL,
        "caller": _nullable(_ID),
        "caller_authid": _nullable(_STR),
        "caller_authrole": _nullable(_STR),
        # the registration (URI and match policy, default: the procedure, exact) and its callee there
        "registration": _nullable(_STR),
        "match": _MATCH,
        "callee": _nullable(_ID),
    },
    "result": {"origin": _NODE_ID, "call": _NONEMPTY_STR, **_PAYLOAD_FIELDS, "progress": _BOOL},
    "error": {"origin": _NODE_ID, "call": _NONEMPTY_STR, "error": _URI, **_PAYLOAD_FIELDS},
    "cancel": {"origin": _NODE_ID, "call": _NONEMPTY_STR, "mode": _MODE},
    "meta": {
        "origin": _NODE_ID,
        "topic": _URI,
        "publication": _ID,
        "args": _nullable(_ARRAY),
        "about": _nullable(_Check(lambda v: _STRS.ok(v) and len(v) == 2, "an array of two strings")),
    },
    "interest": {"origin": _NODE_ID, "meta": _Check(lambda v: isinstance(v, bool), "true or false")},
    # fields of the procedures hash that changed (null: reload them all), and the version after the change
    PROCEDURES: {"origin": _NODE_ID, "fields": _nullable(_STRS), "version": _VERSION},
}


# node-internal messages: encoding and signatures


def encode_node(kind: str, origin: str, body: dict[str, Any]) -> bytes:
    """A node-channel message (``call``, ``result``, ``error``, ``cancel``) or a peers-channel one (``meta``,
    ``interest``, ``procedures``) from node ``origin``.

    Raises ``TypeError`` when the body (e.g. binary arguments) is not JSON-encodable.
    """
    if kind not in NODE_TYPES and kind not in PEER_TYPES:
        raise ValueError(f"{kind!r} is not a node message type")
    return _dumps({"v": VERSION, "type": kind, "origin": origin, **body}, f"{kind} message")


_SIG_HEAD = b',"sig":"'
_SIG_TAIL = b'"}'
_SIG_SIZE = len(_SIG_HEAD) + 64 + len(_SIG_TAIL)


class Signer:
    """Signs and checks the messages of internal channels with HMAC-SHA256 of the cluster secret.

    The signature covers the channel name and the message's exact bytes, and travels as a last member
    ``"sig"`` (64 hex digits): a signed message is still one JSON object.
    """

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ValueError("the cluster secret must not be empty")
        self._key = key

    def __repr__(self) -> str:
        return "Signer(<cluster secret>)"

    def derive(self, purpose: str) -> bytes:
        """A key for ``purpose`` that every node with this secret derives alike (and nobody else can)."""
        return hmac.new(self._key, b"sandstone key: " + purpose.encode("utf-8"), "sha256").digest()

    def sign(self, channel: str, body: bytes) -> bytes:
        """``body`` (the bytes of a JSON object) with its signature for ``channel`` added as ``"sig"``."""
        if not body.endswith(b"}"):
            raise ValueError("only a JSON object can be signed")
        return body[:-1] + _SIG_HEAD + self._mac(channel, body) + _SIG_TAIL

    def check(self, channel: str, raw: bytes) -> None:
        """Raise ``MessageRejected`` unless ``raw`` was signed for ``channel`` with this secret."""
        head = len(raw) - _SIG_SIZE
        if head < 1 or not raw.endswith(_SIG_TAIL) or raw[head : head + len(_SIG_HEAD)] != _SIG_HEAD:
            raise MessageRejected(
                "unsigned message on an internal channel: every node of this cluster must be given the "
                "same cluster secret"
            )
        signature = raw[head + len(_SIG_HEAD) : -len(_SIG_TAIL)]
        if not hmac.compare_digest(signature, self._mac(channel, raw[:head] + b"}")):
            raise MessageRejected(
                "bad signature on an internal channel: the sender has another cluster secret, or the "
                "message was changed or sent to another channel"
            )

    def _mac(self, channel: str, body: bytes) -> bytes:
        message = channel.encode("utf-8") + b"\n" + body
        return hmac.new(self._key, message, hashlib.sha256).hexdigest().encode("ascii")


# the procedures hash


def procedure_field(uri: str, match: str) -> str:
    """The field of a registration in the procedures hash: its URI when exact, else ``"<match> <uri>"``
    (URIs hold no whitespace, so the two never meet)."""
    return uri if match == EXACT else f"{match} {uri}"


def parse_procedure_field(field: str) -> tuple[str, str]:
    """(URI, match policy) of a procedures-hash field; ``EnvelopeError`` if it names no registration."""
    match, space, uri = field.partition(" ")
    if not space:
        return field, EXACT
    if match not in (PREFIX, WILDCARD) or any(c.isspace() for c in uri):
        shown = field if len(field) <= 60 else field[:57] + "..."
        raise EnvelopeError(f"the field {shown!r} names no registration")
    return uri, match


@dataclass(frozen=True)
class ProcedureEntry:
    """An entry of the procedures hash: a registration's invocation policy and its callees cluster-wide,
    (node id, session id), in the order they registered."""

    invoke: str
    members: tuple[tuple[str, int], ...]


def encode_entry(invoke: str, members: Iterable[tuple[str, int]]) -> str:
    """A procedures-hash entry (what the nodes' Lua scripts write too)."""
    listed = [f"{node}:{session}" for node, session in members]
    return json.dumps({"invoke": invoke, "members": listed}, separators=(",", ":"))


def decode_entry(raw: Any) -> ProcedureEntry:
    """Read a procedures-hash entry; ``EnvelopeError`` says what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("the entry is not valid UTF-8") from None
    if not isinstance(raw, str):
        raise EnvelopeError(f"the entry must be a JSON object, not {type(raw).__name__} {raw!r}")
    if len(raw) > MAX_BYTES:
        raise EnvelopeError(f"the entry is longer than {MAX_BYTES} characters")
    try:
        entry = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        raise EnvelopeError(f"the entry is not JSON: {shown!r}") from None
    if not isinstance(entry, dict):
        raise EnvelopeError(f"the entry must be a JSON object, not {_json_type(entry)}")
    invoke = entry.get("invoke")
    if invoke not in INVOKE_POLICIES:
        raise EnvelopeError(f"the entry's invoke must be one of {sorted(INVOKE_POLICIES)}, not {invoke!r}")
    members = entry.get("members")
    if not isinstance(members, list) or not members:
        raise EnvelopeError("the entry's members must be a non-empty array")
    return ProcedureEntry(invoke, tuple(_member(m) for m in members))


def _member(member: Any) -> tuple[str, int]:
    node, colon, session = member.rpartition(":") if isinstance(member, str) else ("", "", "")
    if colon and _is_node_id(node) and session.isascii() and session.isdigit() and _is_id(int(session)):
        return node, int(session)
    shown = repr(member) if len(repr(member)) <= 60 else repr(member)[:57] + "..."
    raise EnvelopeError(f"the entry's member {shown} is not 'node:session'")


__all__ = [
    "MAX_BYTES",
    "MAX_ID",
    "VERSION",
    "ANY_CHANNEL",
    "NODE",
    "PEERS",
    "PUBLIC_DELIVERIES",
    "PUBLIC_EVENTS",
    "AnyMessage",
    "ChannelRule",
    "Channels",
    "DeliveryMessage",
    "EnvelopeError",
    "EventCodec",
    "EventMessage",
    "Message",
    "MessageRejected",
    "NodeMessage",
    "PROCEDURES",
    "ProcedureEntry",
    "Signer",
    "channel_names",
    "decode",
    "decode_entry",
    "encode_delivery",
    "encode_entry",
    "encode_event",
    "encode_node",
    "event_data",
    "parse_procedure_field",
    "procedure_field",
]
