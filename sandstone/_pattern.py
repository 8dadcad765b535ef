"""
Topic patterns: WAMP topic URIs declared like routes.

A L{TopicPattern} such as C{"chat/{channel}"} or C{"sensors.{room:int}.temp"}
is compiled once into a single regular expression; L{TopicPattern.match} turns
a concrete URI into the converted placeholder values.  L{TopicRoutes} keeps an
ordered table of patterns where the first declared match wins.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "Converter",
    "TopicPattern",
    "TopicPatternError",
    "TopicRoutes",
]

T = TypeVar("T")

Converter = Callable[[str], Any]


class TopicPatternError(ValueError):
    """A topic pattern (or its requirements/converters) was declared wrongly."""


_BUILTIN_CONVERTERS: dict[str, Converter] = {"int": int, "str": str, "float": float}
_BUILTIN_REQUIREMENTS: dict[str, str] = {"int": r"-?\d+"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FORBIDDEN = re.compile(r"[\s#]")
_GROUP_PREFIX = "_sandstone_p"
_BACKREFERENCE = re.compile(r"\\(?![0-7]{3})[1-9][0-9]?")
_CONDITIONAL = re.compile(r"\(\?\(\d+\)")


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """One C{{name}} or C{{name:converter}} as written in the pattern."""

    name: str
    converter: str | None


@dataclass(frozen=True, slots=True)
class _Slot:
    """How L{TopicPattern.match} extracts and converts one placeholder value."""

    name: str
    group: str
    convert: Converter | None
    checked: bool


def _fail(pattern: str, problem: str) -> TopicPatternError:
    """A L{TopicPatternError} whose message starts with the offending pattern."""
    return TopicPatternError(f"topic pattern {pattern!r} {problem}")


def _check_text(pattern: str) -> None:
    """Reject an empty pattern, or one containing whitespace or C{#}."""
    if not pattern:
        raise _fail(pattern, "is empty; declare a topic URI such as 'chat/{channel}'")
    bad = _FORBIDDEN.search(pattern)
    if bad is not None:
        raise _fail(
            pattern,
            f"contains {bad.group()!r} at index {bad.start()}; WAMP URIs cannot contain whitespace or '#'",
        )


def _check_literal(pattern: str, literal: str, offset: int) -> None:
    """Reject a C{{} without its C{}} or a C{}} without its C{{} in literal text."""
    opening = literal.find("{")
    closing = literal.find("}")
    if opening != -1 and (closing == -1 or opening < closing):
        raise _fail(
            pattern,
            f"has an unclosed placeholder at index {offset + opening}; add the missing '}}'",
        )
    if closing != -1:
        raise _fail(
            pattern,
            f"has a stray '}}' at index {offset + closing}; remove it or add the missing '{{'",
        )


def _split(pattern: str) -> tuple[list[str], list[str]]:
    """Split into literal texts and placeholder bodies; literals surround every body."""
    literals: list[str] = []
    bodies: list[str] = []
    position = 0
    for found in _PLACEHOLDER.finditer(pattern):
        literals.append(pattern[position : found.start()])
        bodies.append(found.group(1))
        position = found.end()
    literals.append(pattern[position:])
    offset = 0
    for literal, body in zip(literals, [*bodies, ""], strict=True):
        _check_literal(pattern, literal, offset)
        offset += len(literal) + len(body) + 2
    return literals, bodies


def _check_name(pattern: str, name: str, body: str) -> None:
    """Reject a placeholder name that handlers could not receive as an argument."""
    if not name:
        raise _fail(pattern, f"has a placeholder without a name: '{{{body}}}'")
    if not name.isidentifier():
        raise _fail(
            pattern,
            f"has placeholder name {name!r} that is not a valid Python identifier; "
            "use letters, digits and '_' only",
        )
    if keyword.iskeyword(name):
        raise _fail(
            pattern,
            f"has placeholder name {name!r} that is a Python keyword; "
            "handlers could not accept it as an argument",
        )


def _parse_placeholder(pattern: str, body: str) -> _Placeholder:
    """Parse C{name} or C{name:converter} from between the braces."""
    if not body:
        raise _fail(pattern, "has an empty placeholder '{}'; write '{name}'")
    name, colon, converter = body.partition(":")
    _check_name(pattern, name, body)
    if colon and not converter:
        raise _fail(
            pattern,
            f"has placeholder '{{{body}}}' with an empty converter after ':'; "
            f"write e.g. '{{{name}:int}}' or '{{{name}}}'",
        )
    return _Placeholder(name, converter or None)


def _parse(pattern: str) -> tuple[list[str], list[_Placeholder]]:
    """Literal texts and placeholders of a pattern, validated."""
    _check_text(pattern)
    literals, bodies = _split(pattern)
    placeholders = [_parse_placeholder(pattern, body) for body in bodies]
    for index, literal in enumerate(literals[1:-1]):
        if not literal:
            first, second = placeholders[index].name, placeholders[index + 1].name
            raise _fail(
                pattern,
                f"has placeholders {{{first}}} and {{{second}}} next to each other; "
                "put literal text (such as a separator) between them",
            )
    seen: set[str] = set()
    for placeholder in placeholders:
        if placeholder.name in seen:
            raise _fail(pattern, f"uses placeholder name {placeholder.name!r} more than once")
        seen.add(placeholder.name)
    return literals, placeholders


def _check_known(pattern: str, names: tuple[str, ...], given: Mapping[str, object], what: str) -> None:
    """Reject requirements/converters for names that are not placeholders."""
    for name in given:
        if name not in names:
            known = ", ".join(names) or "none"
            raise _fail(
                pattern,
                f"has no placeholder {name!r} but {what} were given for it (placeholders: {known})",
            )


def _resolve_converter(pattern: str, name: str, converter: str | Converter) -> tuple[str | None, Converter]:
    """The builtin name (if any) and the callable for one converter declaration."""
    if isinstance(converter, str):
        if converter not in _BUILTIN_CONVERTERS:
            known = ", ".join(sorted(_BUILTIN_CONVERTERS))
            raise _fail(
                pattern,
                f"uses unknown converter {converter!r} for placeholder {name!r}; "
                f"use one of {known} or pass a callable",
            )
        return converter, _BUILTIN_CONVERTERS[converter]
    if not callable(converter):
        raise _fail(
            pattern,
            f"has converter {converter!r} for placeholder {name!r} that is neither "
            "a converter name nor a callable",
        )
    return None, converter


def _pick_converter(
    pattern: str, placeholder: _Placeholder, converters: Mapping[str, str | Converter]
) -> str | Converter | None:
    """The inline or keyword converter of a placeholder; declaring both is an error."""
    given = converters.get(placeholder.name)
    if placeholder.converter is not None and given is not None:
        raise _fail(
            pattern,
            f"declares a converter for placeholder {placeholder.name!r} both inline "
            "and in converters=; declare it in one place",
        )
    return placeholder.converter if placeholder.converter is not None else given


def _numbered_backreference(regex: str) -> str | None:
    """The first numbered backreference (C{\\1} or C{(?(1)...)}) outside a character class."""
    index = 0
    in_class = False
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            reference = None if in_class else _BACKREFERENCE.match(regex, index)
            if reference is not None:
                return reference.group()
            index += 2
        elif in_class:
            in_class = char != "]"
            index += 1
        elif char == "[":
            in_class = True
            index += 1
            index += regex.startswith("^", index)
            index += regex.startswith("]", index)
        else:
            conditional = _CONDITIONAL.match(regex, index)
            if conditional is not None:
                return conditional.group()
            index += 1
    return None


def _check_requirement(pattern: str, name: str, requirement: object) -> str:
    """Validate a user requirement for placeholder C{name} and return it."""
    if not isinstance(requirement, str):
        raise _fail(
            pattern,
            f"has requirement {requirement!r} for placeholder {name!r}; "
            "requirements must be regular expressions given as str",
        )
    try:
        compiled = re.compile(requirement)
    except re.error as error:
        raise _fail(
            pattern,
            f"has an invalid requirement {requirement!r} for placeholder {name!r}: {error}",
        ) from None
    if compiled.fullmatch("") is not None:
        raise _fail(
            pattern,
            f"has requirement {requirement!r} for placeholder {name!r} that matches "
            "the empty string; placeholders are never empty (use '+' rather than '*')",
        )
    backreference = _numbered_backreference(requirement)
    if backreference is not None:
        raise _fail(
            pattern,
            f"has requirement {requirement!r} for placeholder {name!r} with numbered "
            f"backreference {backreference!r}; use a named group '(?P<x>...)' and '(?P=x)'",
        )
    return requirement


def _default_part(separator: str) -> str:
    """What a placeholder matches without a requirement: one non-empty part."""
    return rf"[^{re.escape(separator)}\s#]+"


class TopicPattern:
    """
    A topic URI with C{{name}} placeholders, e.g. C{"chat/{channel}"}.

    Parts are separated by C{/} or C{.}: when the literal text (outside the
    placeholders) contains a C{/} the separator is C{/} and any C{.} is just a
    literal character (C{"v1.0/chat/{channel}"}); otherwise the separator is
    C{.} (C{"sensors.{room}.temperature"}).  A placeholder matches one whole
    non-empty part: it never contains the separator, whitespace or C{#}.

    C{requirements} maps placeholder names to regular expressions replacing
    that default; C{converters} maps them to C{"int"}, C{"str"}, C{"float"} or
    a callable, also writable inline as C{{id:int}}.  A converter raising
    L{ValueError} or L{TypeError} makes the URI not match.  Requirements may
    use capture groups and named backreferences, not numbered ones.
    """

    __slots__ = ("_converters", "_regex", "_requirements", "_slots", "names", "pattern", "separator")

    pattern: str
    names: tuple[str, ...]
    separator: str

    def __init__(
        self,
        pattern: str,
        requirements: Mapping[str, str] | None = None,
        converters: Mapping[str, str | Converter] | None = None,
    ) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"topic pattern must be a str, not {type(pattern).__name__}")
        self.pattern = pattern
        self._requirements = dict(requirements or {})
        self._converters = dict(converters or {})
        literals, placeholders = _parse(pattern)
        self.names = tuple(placeholder.name for placeholder in placeholders)
        self.separator = "/" if "/" in "".join(literals) else "."
        _check_known(pattern, self.names, self._requirements, "requirements")
        _check_known(pattern, self.names, self._converters, "converters")
        parts, self._slots = self._build(literals, placeholders)
        self._regex = self._compile("".join(parts))

    def _build(
        self, literals: list[str], placeholders: list[_Placeholder]
    ) -> tuple[list[str], tuple[_Slot, ...]]:
        """Regex source parts and extraction slots for all placeholders."""
        parts = [re.escape(literals[0])]
        slots: list[_Slot] = []
        for index, placeholder in enumerate(placeholders):
            slot, regex = self._slot(index, placeholder)
            slots.append(slot)
            parts.append(f"(?P<{slot.group}>{regex})")
            parts.append(re.escape(literals[index + 1]))
        return parts, tuple(slots)

    def _slot(self, index: int, placeholder: _Placeholder) -> tuple[_Slot, str]:
        """The slot of one placeholder and the regex its value must match."""
        name = placeholder.name
        declared = _pick_converter(self.pattern, placeholder, self._converters)
        builtin: str | None = None
        convert: Converter | None = None
        if declared is not None:
            builtin, convert = _resolve_converter(self.pattern, name, declared)
        if builtin == "str":
            convert = None
        requirement = self._requirements.get(name)
        if requirement is not None:
            regex = f"(?:{_check_requirement(self.pattern, name, requirement)})"
        else:
            regex = _BUILTIN_REQUIREMENTS.get(builtin or "", _default_part(self.separator))
        group = f"{_GROUP_PREFIX}{index}"
        return _Slot(name, group, convert, checked=requirement is not None), regex

    def _compile(self, source: str) -> re.Pattern[str]:
        """Compile the whole pattern; requirements may still clash with each other."""
        try:
            return re.compile(source)
        except re.error as error:
            raise _fail(
                self.pattern,
                f"has requirements that cannot be combined: {error}; "
                "group names must be unique across requirements and inline "
                "global flags like '(?i)' must be scoped, e.g. '(?i:...)'",
            ) from None

    def _acceptable(self, raw: str) -> bool:
        """Whether a value matched by a requirement is one whole non-empty part."""
        return bool(raw) and self.separator not in raw and _FORBIDDEN.search(raw) is None

    def match(self, uri: str) -> dict[str, Any] | None:
        """The converted placeholder values if C{uri} matches, else None."""
        found = self._regex.fullmatch(uri)
        if found is None:
            return None
        values: dict[str, Any] = {}
        for slot in self._slots:
            raw = found.group(slot.group)
            if slot.checked and not self._acceptable(raw):
                return None
            if slot.convert is None:
                values[slot.name] = raw
                continue
            try:
                values[slot.name] = slot.convert(raw)
            except (ValueError, TypeError):
                return None
        return values

    def __repr__(self) -> str:
        extra = "".join(
            f", {label}={given!r}"
            for label, given in (("requirements", self._requirements), ("converters", self._converters))
            if given
        )
        return f"{type(self).__name__}({self.pattern!r}{extra})"


class TopicRoutes(Generic[T]):
    """Ordered table of (pattern, target); the first declared pattern that matches a URI wins."""

    __slots__ = ("_entries", "_texts")

    def __init__(self) -> None:
        self._entries: list[tuple[TopicPattern, T]] = []
        self._texts: set[str] = set()

    def add(self, pattern: TopicPattern, target: T) -> None:
        """Append C{pattern} routing to C{target}; each pattern text may be added once."""
        if not isinstance(pattern, TopicPattern):
            raise TypeError(f"expected a TopicPattern, not {type(pattern).__name__}")
        if pattern.pattern in self._texts:
            raise _fail(pattern.pattern, "is already declared; declare each topic pattern once")
        self._texts.add(pattern.pattern)
        self._entries.append((pattern, target))

    def resolve(self, uri: str) -> tuple[TopicPattern, T, dict[str, Any]] | None:
        """The first pattern matching C{uri}, its target and arguments, or None."""
        for pattern, target in self._entries:
            arguments = pattern.match(uri)
            if arguments is not None:
                return pattern, target, arguments
        return None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[TopicPattern, T]]:
        return iter(self._entries)
