"""The broker's subscription table: exact, prefix and wildcard subscriptions, matched against topic URIs.

A subscription's id is derived from its (URI, match policy), so that every node of a cluster gives the same
subscription the same id: the subscription meta API (``wamp.subscription.get``, ``list_subscribers``...)
and presence then name one subscription cluster-wide.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from autobahn.util import rid

from ._ids import MAX_ID

if TYPE_CHECKING:
    from ._session import Session

EXACT = "exact"
PREFIX = "prefix"
WILDCARD = "wildcard"
MATCH_POLICIES = (EXACT, PREFIX, WILDCARD)


def subscription_id_for(uri: str, match: str) -> int:
    """The id every node gives the subscription to ``uri`` with the ``match`` policy."""
    digest = hashlib.sha256(f"{match}\0{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_ID + 1


def iso_8601(timestamp: float) -> str:
    """A UTC time as the meta API writes it (``2026-12-05T03:25:09.123Z``)."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{seconds}.{int(timestamp * 1000) % 1000:03d}Z"


T = TypeVar("T")


def prefixed(prefixes: Mapping[str, T], uri: str) -> Iterator[T]:
    """The values of ``prefixes`` whose key is a prefix of ``uri`` (prefix matching, for subscriptions and
    registrations alike): the cheaper of walking the table or the URI's prefixes."""
    if len(prefixes) < len(uri) + 1:
        return (value for prefix, value in prefixes.items() if uri.startswith(prefix))
    return (prefixes[uri[:i]] for i in range(len(uri) + 1) if uri[:i] in prefixes)


def wildcard_fits(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """True when a URI split on dots fits a wildcard pattern split alike (empty parts match anything);
    both have the same number of parts."""
    for mine, theirs in zip(pattern, parts, strict=True):
        if mine and mine != theirs:
            return False
    return True


class Subscription:
    """One subscription: a (URI, match policy) pair shared by every session subscribed to it."""

    __slots__ = ("id", "uri", "match", "sessions", "created", "_parts")

    def __init__(self, uri: str, match: str) -> None:
        self.id: int = subscription_id_for(uri, match)
        self.uri = uri
        self.match = match
        self.created = time.time()  # when this node created it (seconds since the epoch)
        # An insertion-ordered set: events reach subscribers in the order they subscribed.
        self.sessions: dict[Session, None] = {}
        self._parts: tuple[str, ...] = tuple(uri.split(".")) if match == WILDCARD else ()

    def matches_wildcard(self, parts: list[str]) -> bool:
        """True when a topic URI split on dots fits this wildcard pattern (empty parts match anything)."""
        return wildcard_fits(self._parts, parts)

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.match} {self.uri!r} ({len(self.sessions)} sessions)>"


class SubscriptionTable:
    """Subscriptions by id and by (URI, policy), with matching of a publication's topic URI."""

    def __init__(self) -> None:
        self._by_id: dict[int, Subscription] = {}
        self._exact: dict[str, Subscription] = {}
        self._prefix: dict[str, Subscription] = {}
        # Wildcard patterns grouped by their number of parts: only equal lengths can match.
        self._wildcard: dict[int, dict[str, Subscription]] = {}

    def _table(self, match: str, uri: str) -> dict[str, Subscription]:
        if match == EXACT:
            return self._exact
        if match == PREFIX:
            return self._prefix
        return self._wildcard.setdefault(uri.count(".") + 1, {})

    def add(self, session: Session, uri: str, match: str) -> tuple[Subscription, bool]:
        """Subscribe a session; returns the subscription and whether the session was newly added."""
        table = self._table(match, uri)
        subscription = table.get(uri)
        if subscription is None:
            subscription = Subscription(uri, match)
            while subscription.id in self._by_id:  # a hash collision (1 in 2**53): unique here still
                subscription.id = rid()
            table[uri] = subscription
            self._by_id[subscription.id] = subscription
        if session in subscription.sessions:
            return subscription, False
        subscription.sessions[session] = None
        return subscription, True

    def remove(self, session: Session, subscription: Subscription) -> bool:
        """Unsubscribe a session; drops the subscription when it has no session left. True if removed."""
        if subscription.sessions.pop(session, False) is False:
            return False
        if not subscription.sessions:
            self._drop(subscription)
        return True

    def _drop(self, subscription: Subscription) -> None:
        del self._by_id[subscription.id]
        if subscription.match == WILDCARD:
            size = len(subscription._parts)
            group = self._wildcard[size]
            del group[subscription.uri]
            if not group:
                del self._wildcard[size]
        else:
            del self._table(subscription.match, subscription.uri)[subscription.uri]

    def get(self, subscription_id: int) -> Subscription | None:
        """The subscription with this id, if any."""
        return self._by_id.get(subscription_id)

    def exact(self, uri: str) -> Subscription | None:
        """The exact subscription for a URI, if any."""
        return self._exact.get(uri)

    def find(self, uri: str, match: str) -> Subscription | None:
        """The subscription for this (URI, match policy), if any (nothing is created)."""
        if match == WILDCARD:
            return self._wildcard.get(uri.count(".") + 1, {}).get(uri)
        return self._table(match, uri).get(uri)

    def match(self, uri: str) -> list[Subscription]:
        """Every subscription receiving a publication to ``uri``: exact first, then prefix, then wildcard."""
        found: list[Subscription] = []
        exact = self._exact.get(uri)
        if exact is not None:
            found.append(exact)
        if self._prefix:
            found.extend(self._match_prefix(uri))
        if self._wildcard:
            parts = uri.split(".")
            group = self._wildcard.get(len(parts))
            if group:
                found.extend(s for s in group.values() if s.matches_wildcard(parts))
        return found

    def _match_prefix(self, uri: str) -> Iterator[Subscription]:
        return prefixed(self._prefix, uri)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self._by_id.values()))
