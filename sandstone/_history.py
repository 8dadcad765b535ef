"""Event history: which topics keep their last events, and ``wamp.subscription.get_events``.

A topic keeps a history when a rule covers it: a Topic declared with ``history=N``, ``app.history(uri,
match=..., limit=N)`` or ``--history`` on the open router. The router records each publication to such a
topic (``Router.publish``) in its ``EventStore``, except those with session-id ``exclude``/``eligible``
lists (the WAMP advanced profile: session ids mean nothing to a later reader). A reader gets the events its
authid and authrole would have been admitted to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from autobahn.wamp.types import CallResult

from ._errors import INVALID_ARGUMENT, WampError
from ._store import StoredEvent
from ._subscriptions import EXACT, MATCH_POLICIES, PREFIX, wildcard_fits

if TYPE_CHECKING:
    from ._cluster import SubscriptionInfo
    from ._publication import Publication
    from ._session import Session
    from ._topic import TopicHost

__all__ = ["EventQuery", "HistoryRules", "events_answer", "parse_history_option", "recordable"]

_CACHED = 10_000  # concrete topics whose history limit is remembered


class HistoryRules:
    """Which concrete topics keep a history, and how many events: the first rule that covers a topic
    decides (exact rules, then the app's Topic declarations, then prefix and wildcard rules in the order
    they were added)."""

    def __init__(self, topics: TopicHost | None = None) -> None:
        self._topics = topics
        self._exact: dict[str, int] = {}
        self._patterns: list[tuple[str, str, int]] = []
        self._cache: dict[str, int] = {}
        #: Whether any rule or Topic declaration asks for a history (else publications skip the lookup).
        self.active = topics is not None and topics.keeps_history

    def add(self, uri: str, match: str = EXACT, limit: int = 100) -> None:
        """Keep the last ``limit`` events of each topic a subscription to ``uri`` with ``match`` covers."""
        if match not in MATCH_POLICIES:
            raise ValueError(f"unknown match policy {match!r}; use one of {', '.join(MATCH_POLICIES)}")
        if not isinstance(uri, str) or (not uri and match == EXACT):
            raise ValueError(f"a history rule needs a topic URI, not {uri!r}")
        if type(limit) is not int or limit < 1:
            raise ValueError(
                f"a history keeps at least 1 event: limit must be a positive integer, not {limit!r}"
            )
        if match == EXACT:
            self._exact[uri] = limit
        else:
            self._patterns.append((uri, match, limit))
        self.changed()

    def changed(self) -> None:
        """Forget the cached answers (a rule was added, or a Topic declared)."""
        self._cache.clear()
        topics = self._topics
        self.active = bool(self._exact or self._patterns or (topics is not None and topics.keeps_history))

    def limit_for(self, topic: str) -> int:
        """How many events ``topic`` keeps (0: no history)."""
        cache = self._cache
        limit = cache.get(topic)
        if limit is None:
            limit = self._find(topic)
            if len(cache) >= _CACHED:
                cache.clear()
            cache[topic] = limit
        return limit

    def _find(self, topic: str) -> int:
        limit = self._exact.get(topic)
        if limit is not None:
            return limit
        if self._topics is not None:
            declared = self._topics.history_for(topic)
            if declared:
                return declared
        parts: list[str] | None = None
        for uri, match, limit in self._patterns:
            if match == PREFIX:
                if topic.startswith(uri):
                    return limit
                continue
            if parts is None:
                parts = topic.split(".")
            pattern = uri.split(".")
            if len(pattern) == len(parts) and wildcard_fits(pattern, parts):
                return limit
        return 0


def parse_history_option(text: str) -> tuple[str, str, int]:
    """``URI=N``, ``prefix:URI=N`` or ``wildcard:URI=N`` (the ``--history`` option) as (URI, match, N)."""
    spec, separator, count = text.rpartition("=")
    if not separator or not spec:
        raise ValueError(f"--history takes URI=N (e.g. chat.lobby=100 or prefix:sensors.=1000), not {text!r}")
    match = EXACT
    for policy in MATCH_POLICIES:
        if spec.startswith(policy + ":"):
            match, spec = policy, spec[len(policy) + 1 :]
            break
    try:
        limit = int(count)
    except ValueError:
        raise ValueError(f"--history {text!r}: {count!r} is not a number of events") from None
    if limit < 1:
        raise ValueError(f"--history {text!r}: keep at least 1 event")
    if not spec and match == EXACT:
        raise ValueError(f"--history {text!r}: the URI is missing")
    return spec, match, limit


def recordable(publication: Publication) -> bool:
    """Whether a publication may go to a history: not when it is meant for session ids only."""
    return publication.exclude is None and publication.eligible is None


# wamp.subscription.get_events

_PUBLICATION_FILTERS = ("after_publication", "from_publication", "before_publication", "until_publication")
_TIME_FILTERS = ("from_time", "after_time", "before_time", "until_time")
_OPTIONS = frozenset({"limit", "reverse", "topic", *_PUBLICATION_FILTERS, *_TIME_FILTERS})


@dataclass(frozen=True, slots=True)
class EventQuery:
    """The arguments of one ``get_events`` call, checked."""

    limit: int | None  # None: no cap
    reverse: bool = False
    topic: str | None = None
    publications: tuple[tuple[str, int], ...] = ()
    times: tuple[tuple[str, int], ...] = ()  # (filter, microseconds since the epoch)

    @classmethod
    def parse(cls, options: dict[str, Any], cap: int) -> EventQuery:
        """Check the keyword arguments; ``limit`` is capped at ``cap`` (and is ``cap`` when not given; 0:
        no cap). Raises ``wamp.error.invalid_argument`` saying what is wrong."""
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise WampError(
                INVALID_ARGUMENT,
                f"get_events does not know {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(sorted(_OPTIONS))}",
            )
        limit = options.get("limit")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise WampError(INVALID_ARGUMENT, f"limit must be a positive integer, not {limit!r}")
        reverse = options.get("reverse", False)
        if reverse is not None and not isinstance(reverse, bool):
            raise WampError(INVALID_ARGUMENT, f"reverse must be true or false, not {reverse!r}")
        topic = options.get("topic")
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise WampError(INVALID_ARGUMENT, f"topic must be a URI string, not {topic!r}")
        publications = []
        for name in _PUBLICATION_FILTERS:
            value = options.get(name)
            if value is None:
                continue
            if type(value) is not int or not 1 <= value <= 2**53:
                raise WampError(
                    INVALID_ARGUMENT, f"{name} must be a publication id (1 to 2^53), not {value!r}"
                )
            publications.append((name, value))
        times = []
        for name in _TIME_FILTERS:
            value = options.get(name)
            if value is not None:
                times.append((name, _rfc3339(name, value)))
        if cap > 0:
            limit = cap if limit is None else min(limit, cap)
        return cls(limit, bool(reverse), topic, tuple(publications), tuple(times))

    def select(self, events: list[StoredEvent], reader: Session) -> tuple[list[StoredEvent], bool, bool]:
        """The events of ``events`` (oldest first) this query and the reader's identity admit, in the
        asked order: (events, more beyond the limit, a ``*_publication`` the history does not hold)."""
        start, end, gap = 0, len(events), False
        for name, publication_id in self.publications:
            index = next((i for i, e in enumerate(events) if e.publication.id == publication_id), None)
            if index is None:
                # not held: older than the oldest one kept (or never on these topics)
                gap = True
                if name in ("before_publication", "until_publication"):
                    end = 0
                continue
            if name == "after_publication":
                start = max(start, index + 1)
            elif name == "from_publication":
                start = max(start, index)
            elif name == "before_publication":
                end = min(end, index)
            else:
                end = min(end, index + 1)
        chosen = [e for e in events[start:end] if self._admits(e, reader)]
        if self.reverse:
            chosen.reverse()
        if self.limit is None:
            return chosen, False, gap
        return chosen[: self.limit], len(chosen) > self.limit, gap

    def _admits(self, event: StoredEvent, reader: Session) -> bool:
        if self.topic is not None and event.publication.topic != self.topic:
            return False
        stamp = event.position[0] * 1000  # microseconds; events are kept to the millisecond
        for name, bound in self.times:
            if name == "from_time" and not stamp >= bound:
                return False
            if name == "after_time" and not stamp > bound:
                return False
            if name == "before_time" and not stamp < bound:
                return False
            if name == "until_time" and not stamp <= bound:
                return False
        return event.publication.admits_identity(reader)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rfc3339(name: str, value: Any) -> int:
    """An RFC 3339 time as microseconds since the epoch (exact, unlike a float)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return (moment - _EPOCH) // timedelta(microseconds=1)
    raise WampError(
        INVALID_ARGUMENT, f"{name} must be an RFC 3339 time such as 2026-12-05T10:00:00.000Z, not {value!r}"
    )


def rfc3339_ms(milliseconds: int) -> str:
    """Milliseconds since the epoch as the events' ``timestamp`` (``2026-12-05T10:00:00.123Z``)."""
    seconds, fraction = divmod(milliseconds, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{fraction:03d}Z"


def event_object(event: StoredEvent, info: SubscriptionInfo) -> dict[str, Any]:
    """An event of the ``get_events`` answer: the EVENT's details, arguments, and when it was taken in."""
    publication = event.publication
    details: dict[str, Any] = {}
    if info.match != EXACT:
        details["topic"] = publication.topic
    if publication.disclose_me and publication.publisher is not None:
        details["publisher"] = publication.publisher
        details["publisher_authid"] = publication.publisher_authid
        details["publisher_authrole"] = publication.publisher_authrole
    found: dict[str, Any] = {
        "timestamp": rfc3339_ms(event.position[0]),
        "subscription": info.id,
        "publication": publication.id,
        "details": details,
    }
    if publication.args is not None:
        found["args"] = list(publication.args)
    if publication.kwargs is not None:
        found["kwargs"] = publication.kwargs
    return found


def events_answer(
    events: list[StoredEvent], query: EventQuery, reader: Session, info: SubscriptionInfo
) -> CallResult:
    """The RESULT of ``get_events``: the event objects as positional arguments, and ``more`` (more events
    match beyond ``limit``) and ``gap`` (the history does not reach back to a publication named) as keyword
    arguments."""
    chosen, more, gap = query.select(events, reader)
    return CallResult(*[event_object(e, info) for e in chosen], more=more, gap=gap)
