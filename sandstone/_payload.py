"""The payload check at the router's edge: values every WAMP serializer sandstone speaks carries alike.

A CBOR or MessagePack client can send what JSON has no form for (a datetime, ``undefined``, a set, a tag,
a MessagePack timestamp, a map with integer keys), and a JSON client what MessagePack cannot hold (an
integer of 70 bits) or what no JSON peer can parse (``NaN``, ``1e400``, an unpaired surrogate escape). The
router re-serializes a payload for each peer's serializer, so such a value, passed on, breaks a broadcast
for the subscribers on another serializer, or a call for a caller on another one. It is refused where it
enters instead (see ``payload_problem``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
from twisted.logger import Logger

from ._errors import INVALID_ARGUMENT, WampError

log = Logger()

# Containers nest at most this deep in a payload's args or kwargs. The peers' decoders have limits of
# their own (cbor2: 400 levels for the whole message; Python's JSON encoder: the interpreter's recursion
# limit, less the depth it is called at); a value that refers to itself is infinitely deep.
MAX_DEPTH = 100

# At most this many values are looked at in a payload's args or kwargs (a container's values count each
# time it is met). A message holds fewer values than bytes: only values shared with CBOR's value-sharing
# tags (28/29) count more than once, and those can expand a small message exponentially.
MAX_VALUES = 2**20

# The integers MessagePack can carry (CBOR carries larger ones only as tagged bignums, JSON as text).
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_unpaired_surrogate = re.compile("[\ud800-\udfff]").search

# What a problem is about (the offending value, a key of a dict, or the nesting).
_VALUE, _KEY, _DEPTH, _SIZE = range(4)

# Subclasses of those that a serializer writes as a type of its own: MessagePack's extension type is a
# namedtuple, which JSON and CBOR would write as a list.
_OWN_TYPES: tuple[type, ...] = (msgpack.ExtType,)


def payload_problem(args: Sequence[Any] | None, kwargs: Mapping[Any, Any] | None) -> str | None:
    """Why a message's ``args``/``kwargs`` cannot travel to every peer alike, or ``None`` when they can.

    Carried: ``None``, ``bool``, integers from -2**63 to 2**64-1, finite floats, ``str`` (valid Unicode,
    not starting with NUL, which a JSON peer reads as binary), ``bytes``, lists and tuples, and dicts
    with string keys, nested at most ``MAX_DEPTH`` levels. Anything else, e.g. ``"args[0]['when'] is of
    type datetime, which not every WAMP serializer can carry"``, is a reason to refuse the message.
    """
    found = _first_problem(args) if args else None
    if found is not None:
        return _explain("args", args, *found)
    found = _first_problem(kwargs) if kwargs else None
    if found is not None:
        return _explain("kwargs", kwargs, *found)
    return None


def value_problem(value: Any, name: str = "payload") -> str | None:
    """Like ``payload_problem``, for one value (the app's payload of a broadcast, say), called ``name``."""
    wrapped = (value,)
    found = _first_problem(wrapped)
    return None if found is None else _explain(name, wrapped, *found, wrapped=True)


def require_carried(payload: Any, action: str, uri: str) -> None:
    """Raise ``TypeError`` for an app's payload not every WAMP serializer can carry alike (an app bug:
    said where it was made, before anything is sent), e.g. ``cannot broadcast on 'news': payload['when']
    is of type datetime, which not every WAMP serializer can carry``."""
    problem = value_problem(payload)
    if problem is not None:
        raise TypeError(f"cannot {action} {uri!r}: {problem}")


def refuse_payload(stats: Counter[str], kind: str, session_id: int, problem: str, first: bool) -> WampError:
    """Count (``stats["invalid_payloads"]``) and log a client's message refused for its payload, at info
    the ``first`` time for its session, then at debug; returns the error to answer it with
    (``wamp.error.invalid_argument``, as the spec has routers validating payloads answer)."""
    stats["invalid_payloads"] += 1
    (log.info if first else log.debug)(
        "refused a {kind} from session {session_id}: {problem}",
        kind=kind,
        session_id=session_id,
        problem=problem,
    )
    return WampError(INVALID_ARGUMENT, problem)


def _first_problem(root: Any) -> tuple[Any, int] | None:
    """The first value (or key, or container nested too deep) of ``root`` that is not carried, and what
    is wrong with it. Iterative, and cheap for the common payload of a few strings, numbers and dicts."""
    low, high, surrogate = _INT_MIN, _INT_MAX, _unpaired_surrogate  # locals: read for every value
    budget = MAX_VALUES
    stack = [root]
    depths = [1]
    while stack:
        container = stack.pop()
        depth = depths.pop()
        if depth > MAX_DEPTH:
            return container, _DEPTH
        budget -= len(container)
        if budget < 0:
            return container, _SIZE
        if isinstance(container, dict):
            for key in container:
                if type(key) is str:
                    if not key.isascii() and surrogate(key):
                        return key, _KEY
                elif _key_problem(key):  # a StrEnum key is a string too
                    return key, _KEY
            container = container.values()
        for value in container:
            kind = type(value)
            if kind is str:
                # ``value < "\x01"``: empty, or starting with NUL
                if value < "\x01" and value or not value.isascii() and surrogate(value):
                    return value, _VALUE
            elif kind is int:
                if not low <= value <= high:
                    return value, _VALUE
            elif kind is float:
                if value - value != 0.0:  # inf or nan
                    return value, _VALUE
            elif kind is bool or value is None:
                pass
            elif kind is dict or kind is list or kind is tuple:
                stack.append(value)
                depths.append(depth + 1)
            elif kind is bytes:
                pass
            elif _subclass_problem(value):
                return value, _VALUE
            elif isinstance(value, list | tuple | dict):
                stack.append(value)
                depths.append(depth + 1)
    return None


def _subclass_problem(value: Any) -> bool:
    """Whether a value of no exact carried type is not carried. Every serializer writes a subclass of a
    carried type (IntEnum, StrEnum, OrderedDict, a namedtuple...) as that type, so its value decides."""
    if isinstance(value, _OWN_TYPES):
        return True
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, int):
        return not _INT_MIN <= value <= _INT_MAX
    if isinstance(value, float):
        return value - value != 0.0
    return not isinstance(value, bytes | list | tuple | dict)


def _text_problem(text: str) -> bool:
    return text.startswith("\x00") or _unpaired_surrogate(text) is not None


def _key_problem(key: Any) -> bool:
    return not isinstance(key, str) or _unpaired_surrogate(key) is not None


def _explain(name: str, root: Any, found: Any, what: int, wrapped: bool = False) -> str:
    """The reason, in words, with where in ``root`` (called ``name``) the problem is. ``wrapped``: ``root``
    is a one-element tuple around the value called ``name``."""
    if what == _DEPTH:
        return f"{name} nests containers more than {MAX_DEPTH} levels deep (or contains itself)"
    if what == _SIZE:
        return f"{name} holds more than {MAX_VALUES} values (counting shared CBOR values each time)"
    where = _path(name, root, found, what == _KEY, wrapped)
    if what == _KEY:
        if isinstance(found, str):
            return f"{where} has a key with an unpaired surrogate, which is not valid Unicode"
        return (
            f"{where} has a key of type {type(found).__name__} ({_short(found)}), "
            "but JSON object keys must be strings"
        )
    if isinstance(found, str):
        if found.startswith("\x00"):
            return f"{where} is a string starting with NUL, which a JSON peer would read as binary"
        return f"{where} is a string with an unpaired surrogate, which is not valid Unicode"
    if isinstance(found, int) and not isinstance(found, bool):
        return (
            f"{where} is an integer of {found.bit_length()} bits, outside the range MessagePack can carry "
            "(-2**63 to 2**64-1)"
        )
    if isinstance(found, float):
        return f"{where} is {found!r}, which JSON cannot carry"
    return f"{where} is of type {type(found).__name__}, which not every WAMP serializer can carry"


def _path(name: str, root: Any, target: Any, in_keys: bool, wrapped: bool) -> str:
    """Where ``target`` (a value, or a key when ``in_keys``) is in ``root``, e.g. ``args[0]['when']``.

    Only called once a problem was found, by a walk in the same order as ``_first_problem``'s (so it
    ends no later). Any value identical to the target has the same problem, so the first one found will do.
    """
    stack: list[tuple[Any, str, int]] = [(root, name, 1)]
    while stack:
        container, where, depth = stack.pop()
        if isinstance(container, dict):
            if in_keys and any(key is target for key in container):
                return where
            items: Any = container.items()
        else:
            items = enumerate(container)
        unwrap = wrapped and container is root
        for key, value in items:
            inner = where if unwrap else f"{where}[{_short(key)}]"
            if not in_keys and value is target:
                return inner
            if isinstance(value, list | tuple | dict) and depth < MAX_DEPTH:
                stack.append((value, inner, depth + 1))
    return name


def _short(value: Any) -> str:
    """A short text for a key or index in a path or a message (never a huge integer's digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if value.bit_length() <= 64 else f"<{value.bit_length()}-bit integer>"
    elif isinstance(value, str | bytes | bool | float) or value is None:
        text = repr(value)
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."
