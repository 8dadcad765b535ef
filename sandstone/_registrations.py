"""The dealer's registration table: procedures registered exact, by prefix or by wildcard, each with its
callees in the order they registered and the invocation policy that picks one of them for each call.

A registration is one (URI, match policy) pair, whichever callees share it: every callee of it gets the same
registration id (as subscriptions do in the broker). A called URI finds at most one registration, by the
spec's precedence: the exact one, else the longest matching prefix, else the wildcard pattern with the
longest run of literal parts before each wildcard (``_wildcard_rank``).

A registration's id is derived from its (URI, match policy), as a subscription's is (in another hash
domain), so that every node of a cluster gives the same registration the same id: the registration meta
API (``wamp.registration.get``, ``list_callees``...) then names one registration cluster-wide.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autobahn.util import rid

from ._ids import MAX_ID
from ._subscriptions import EXACT, PREFIX, WILDCARD, prefixed, wildcard_fits

if TYPE_CHECKING:
    from ._call import Callee

__all__ = [
    "FIRST",
    "INVOKE_POLICIES",
    "LAST",
    "MATCH_POLICIES",
    "RANDOM",
    "ROUNDROBIN",
    "SINGLE",
    "Registration",
    "RegistrationTable",
    "registration_id_for",
]

SINGLE = "single"
ROUNDROBIN = "roundrobin"
RANDOM = "random"
FIRST = "first"
LAST = "last"
INVOKE_POLICIES = frozenset({SINGLE, ROUNDROBIN, RANDOM, FIRST, LAST})
MATCH_POLICIES = frozenset({EXACT, PREFIX, WILDCARD})


def registration_id_for(uri: str, match: str) -> int:
    """The id every node gives the registration of ``uri`` with the ``match`` policy (never a
    subscription's id for the same pair: the hash input differs)."""
    digest = hashlib.sha256(f"registration\0{match}\0{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_ID + 1


class Registration:
    """A procedure (URI and match policy) and what serves it: an app ``function``, or ``callees`` in the
    order they registered, one of which ``pick`` chooses for each call by the ``invoke`` policy."""

    __slots__ = (
        "id",
        "uri",
        "match",
        "invoke",
        "function",
        "callees",
        "created",
        "_next",
        "_turning",
        "_parts",
        "_rank",
    )

    def __init__(
        self,
        uri: str,
        match: str = EXACT,
        invoke: str = SINGLE,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.id: int = registration_id_for(uri, match)
        self.uri = uri
        self.match = match
        self.invoke = invoke
        self.function = function
        self.callees: list[Callee] = []
        # when this node made it, or first learned of it from the cluster (seconds since the epoch)
        self.created = time.time()
        self._next = 0  # roundrobin: the index of the next callee
        self._turning = False  # roundrobin: a call was made (until then the first callee is next)
        self._parts: tuple[str, ...] = tuple(uri.split(".")) if match == WILDCARD else ()
        self._rank = _wildcard_rank(self._parts)

    def __repr__(self) -> str:
        return (
            f"<Registration {self.id} {self.match} {self.invoke} {self.uri!r} ({len(self.callees)} callees)>"
        )

    def pick(self) -> Callee:
        """The callee of the next call: the only one, or the one the invocation policy picks."""
        callees = self.callees
        if len(callees) == 1:
            return callees[0]
        invoke = self.invoke
        if invoke == ROUNDROBIN:
            index = self._next % len(callees)
            self._next = index + 1
            self._turning = True
            return callees[index]
        if invoke == RANDOM:
            return random.choice(callees)
        if invoke == LAST:
            return callees[-1]
        return callees[0]  # first, and single (two callees only while a refused claim is withdrawn)

    def add(self, callee: Callee) -> None:
        """A callee joins, last in the order."""
        self.callees.append(callee)

    def remove(self, callee: Callee) -> bool:
        """A callee leaves; the round robin goes on with the callee that would have come next. False when
        it was no callee of this registration."""
        try:
            index = self.callees.index(callee)
        except ValueError:
            return False
        del self.callees[index]
        if index < self._next:
            self._next -= 1
        return True

    def arrange(self, callees: Sequence[Callee]) -> None:
        """Take ``callees`` as the callees, in that order (the cluster's order). The round robin goes on with
        the callee that would have come next, or the first one after it that is still there; before the
        first call, it starts with the first callee."""
        current = self.callees
        self.callees = list(callees)
        if not self._turning:
            return
        for step in range(len(current)):
            following = current[(self._next + step) % len(current)]
            if following in self.callees:
                self._next = self.callees.index(following)
                return
        self._next = 0

    def matches(self, parts: Sequence[str]) -> bool:
        """True when a URI split on dots fits this wildcard registration (same number of parts)."""
        return wildcard_fits(self._parts, parts)


def _wildcard_rank(parts: Sequence[str]) -> tuple[int, ...]:
    """How a wildcard pattern ranks among others matching the same URI: the lengths of its runs of literal
    parts, one before each wildcard and the last one after it, compared in order (``a1.b2.c3..e5`` (3, 1)
    beats ``a1.b2..d4.e5`` (2, 2), which beats ``a1...d4.e5`` (1, 0, 2))."""
    rank: list[int] = []
    run = 0
    for part in parts:
        if part:
            run += 1
        else:
            rank.append(run)
            run = 0
    rank.append(run)
    return tuple(rank)


class RegistrationTable:
    """Registrations by id and by (URI, match policy); finds the one a called URI reaches."""

    def __init__(self) -> None:
        self._by_id: dict[int, Registration] = {}
        self._exact: dict[str, Registration] = {}
        self._prefix: dict[str, Registration] = {}
        # wildcard patterns grouped by their number of parts: only equal lengths can match
        self._wildcard: dict[int, dict[str, Registration]] = {}

    def _table(self, uri: str, match: str, create: bool = False) -> dict[str, Registration]:
        if match == EXACT:
            return self._exact
        if match == PREFIX:
            return self._prefix
        size = uri.count(".") + 1
        group = self._wildcard.get(size)
        if group is None:
            group = {}
            if create:
                self._wildcard[size] = group
        return group

    def get(self, uri: str, match: str = EXACT) -> Registration | None:
        """The registration of this (URI, match policy), if any."""
        return self._table(uri, match).get(uri)

    def by_id(self, registration_id: int) -> Registration | None:
        """The registration with this id, if any."""
        return self._by_id.get(registration_id)

    def add(self, registration: Registration) -> None:
        """Add a registration (its (URI, match policy) has none yet); its id is made unique here."""
        while registration.id in self._by_id:  # a hash collision (1 in 2**53): unique here still
            registration.id = rid()
        self._table(registration.uri, registration.match, create=True)[registration.uri] = registration
        self._by_id[registration.id] = registration

    def remove(self, registration: Registration) -> bool:
        """Drop a registration; False when it was not (or no longer) in the table."""
        if self._by_id.get(registration.id) is not registration:
            return False
        del self._by_id[registration.id]
        uri, match = registration.uri, registration.match
        table = self._table(uri, match)
        del table[uri]
        if match == WILDCARD and not table:
            del self._wildcard[uri.count(".") + 1]
        return True

    @property
    def exact(self) -> Mapping[str, Registration]:
        """The exact registrations by URI (read-only: the calls' fast path looks a URI up here first)."""
        return self._exact

    def best(self, uri: str) -> Registration | None:
        """The registration a call to ``uri`` reaches: exact, else the longest prefix, else the highest
        ranked wildcard pattern; ``None`` when nothing matches."""
        registration = self._exact.get(uri)
        if registration is not None:
            return registration
        if self._prefix:
            registration = max(prefixed(self._prefix, uri), key=_prefix_length, default=None)
            if registration is not None:
                return registration
        if self._wildcard:
            parts = uri.split(".")
            group = self._wildcard.get(len(parts))
            if group:
                return max((r for r in group.values() if r.matches(parts)), key=_rank, default=None)
        return None

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._by_id.values()))


def _prefix_length(registration: Registration) -> int:
    return len(registration.uri)


def _rank(registration: Registration) -> tuple[int, ...]:
    return registration._rank
