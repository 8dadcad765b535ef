"""What the router keeps of past publications: each topic's retained event and its event history.

A ``Router`` stores through an ``EventStore``: ``MemoryStore`` (this module) on a node of its own, the
``RedisStore`` of its bus (``_redis_store.py``) in a cluster, where every node reads the same events. Both
keep whole publications (with their delivery rules, which are applied to whoever reads them later) and the
time the router took each in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, succeed

from ._subscriptions import EXACT, PREFIX, wildcard_fits

if TYPE_CHECKING:
    from ._publication import Publication

__all__ = ["EventStore", "MemoryStore", "StoredEvent", "topic_matches"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A publication as the store keeps it: ``timestamp`` is when the router took it in (seconds since the
    epoch, to the millisecond), ``position`` orders the events of one topic (and, across topics, the time
    they were stored): (milliseconds since the epoch, a sequence number)."""

    publication: Publication
    timestamp: float
    position: tuple[int, int]


class EventStore(Protocol):
    """Where a router keeps retained events and event history."""

    def retain(self, publication: Publication, timestamp: float, max_topics: int) -> None:
        """Keep ``publication`` as its topic's retained event, in place of the one before; at most
        ``max_topics`` topics keep one (the least recently retained to is forgotten first; 0: no bound)."""
        ...

    def retained(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        """The retained events of the topics a subscription to ``uri`` with ``match`` covers."""
        ...

    def record(
        self, publication: Publication, limit: int, timestamp: float, shared: bool, max_topics: int
    ) -> None:
        """Add ``publication`` to its topic's history, which keeps the last ``limit`` events; at most
        ``max_topics`` topics keep one (the least recently written is forgotten first; 0: no bound).
        ``shared``: every
        node records this same publication (a keyed broadcast, an outside producer's delivery): keep one
        copy."""
        ...

    def recorded(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        """The history of the topics a subscription to ``uri`` with ``match`` covers, oldest first."""
        ...


def topic_matches(topic: str, uri: str, match: str) -> bool:
    """Whether a subscription to ``uri`` with ``match`` covers the concrete ``topic``."""
    if match == EXACT:
        return topic == uri
    if match == PREFIX:
        return topic.startswith(uri)
    pattern, parts = uri.split("."), topic.split(".")
    return len(pattern) == len(parts) and wildcard_fits(pattern, parts)


class MemoryStore:
    """An ``EventStore`` in this process."""

    def __init__(self) -> None:
        self._retained: OrderedDict[str, StoredEvent] = OrderedDict()
        self._history: OrderedDict[str, deque[StoredEvent]] = OrderedDict()
        self._sequence = 0

    def _event(self, publication: Publication, timestamp: float) -> StoredEvent:
        self._sequence += 1
        milliseconds = int(timestamp * 1000)
        return StoredEvent(publication, milliseconds / 1000, (milliseconds, self._sequence))

    def retain(self, publication: Publication, timestamp: float, max_topics: int) -> None:
        topic = publication.topic
        retained = self._retained
        retained.pop(topic, None)
        retained[topic] = self._event(publication, timestamp)
        while 0 < max_topics < len(retained):
            retained.popitem(last=False)

    def retained(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        if match == EXACT:
            event = self._retained.get(uri)
            return succeed([] if event is None else [event])
        found = [event for topic, event in self._retained.items() if topic_matches(topic, uri, match)]
        return succeed(sorted(found, key=lambda event: event.position))

    def record(
        self, publication: Publication, limit: int, timestamp: float, shared: bool, max_topics: int
    ) -> None:
        topic = publication.topic
        history = self._history
        events = history.pop(topic, None)
        if events is None or events.maxlen != limit:
            events = deque(events or (), maxlen=limit)
        events.append(self._event(publication, timestamp))
        history[topic] = events
        while 0 < max_topics < len(history):
            history.popitem(last=False)

    def recorded(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        if match == EXACT:
            return succeed(list(self._history.get(uri, ())))
        found = [
            event
            for topic, events in self._history.items()
            if topic_matches(topic, uri, match)
            for event in events
        ]
        return succeed(sorted(found, key=lambda event: event.position))
