"""The cluster's ``EventStore`` in Redis: retained events and event history every node reads alike.

Keys (``B`` is the bus's channel base, e.g. ``sandstone:realm1``):

- ``B:retained`` — hash, topic → ``<ms> <publication>``: each topic's retained event, with when it was
  retained (milliseconds since the epoch) and the publication as a bus delivery message (its arguments and
  delivery rules); ``B:retained:topics`` — sorted set of those topics by that time, which bounds them.
- ``B:history:t:<topic>`` — a Redis Stream per topic, ``XADD ... MAXLEN ~ N``: fields ``p`` (publication id)
  and ``d`` (the publication as a delivery message); the entry id gives the time and the one order every
  node reads. ``B:history:topics`` — sorted set of the topics with a stream, by last write, which bounds them.
- ``B:history:seen:<topic>:<publication>`` — a short-lived marker so that a publication every node records
  (a keyed broadcast, an outside producer's delivery) is stored once.

Retaining is one script on the bus's command connection; the history entries of one reactor turn go in one
script (at most ``RECORD_BATCH``), which keeps a busy topic's cost per publication low; a read of the history
sends them first, so a reader sees every publication made before it asked. Each read is one script (two for
pattern subscriptions: the topics first). The bounds are applied by the scripts, so Redis holds at most the
configured number of topics and about ``N`` events per stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._envelope import DeliveryMessage, EnvelopeError, decode, encode_delivery
from ._publication import Publication
from ._store import StoredEvent, topic_matches
from ._subscriptions import EXACT

__all__ = ["RedisStore"]

log = Logger()

#: How long a "seen" marker of a shared publication lives (ms): longer than any node takes to record it.
SEEN_MS = 120_000
#: History entries sent to Redis in one script at most.
RECORD_BATCH = 500

_RETAIN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if tonumber(ARGV[4]) > 0 and over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('HDEL', KEYS[1], old[i]) end
end
return 1
"""

# ARGV: the streams' key prefix, the seen markers' life (ms), the bound on topics (0: none), then five values
# per entry: topic, publication id, delivery message, events kept, shared ("1": store once, whoever sends it).
_RECORD = """
local prefix, seen_ms, max_topics = ARGV[1], ARGV[2], tonumber(ARGV[3])
local stored = 0
for i = 4, #ARGV, 5 do
  local topic, id = ARGV[i], ARGV[i + 1]
  local seen = prefix .. 'seen:' .. topic .. ':' .. id
  if ARGV[i + 4] == '0' or redis.call('SET', seen, '1', 'NX', 'PX', seen_ms) then
    local stream = prefix .. 't:' .. topic
    local entry = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[i + 3], '*', 'p', id, 'd', ARGV[i + 2])
    redis.call('ZADD', KEYS[1], tonumber(string.match(entry, '^(%d+)')), topic)
    stored = stored + 1
  end
end
if max_topics > 0 then
  local over = redis.call('ZCARD', KEYS[1]) - max_topics
  if over > 0 then
    local old = redis.call('ZPOPMIN', KEYS[1], over)
    for j = 1, #old, 2 do redis.call('DEL', prefix .. 't:' .. old[j]) end
  end
end
return stored
"""

# The last ARGV[i] entries of each stream KEYS[i], newest first.
_READ = """
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('XREVRANGE', key, '+', '-', 'COUNT', ARGV[i])
end
return found
"""


class RedisStore:
    """An ``EventStore`` in Redis, through ``command`` (the bus's command connection); ``base`` is the
    bus's key prefix, ``origin`` its node id (written into the stored messages), ``limit_for`` how many
    events a topic's history keeps (the reader trims the stream's approximate length to it)."""

    def __init__(
        self,
        command: Callable[..., Deferred[Any]],
        base: str,
        origin: str,
        limit_for: Callable[[str], int],
        clock: IReactorTime,
        announced: Callable[[Publication], bytes | None] = lambda publication: None,
    ) -> None:
        self._command = command
        self._origin = origin
        self._limit_for = limit_for
        self._clock = clock
        self._announced = announced
        self._pending: list[str] = []  # history entries not sent yet, five values each
        self._pending_bound = "0"
        self._flush_call: IDelayedCall | None = None
        self.retained_key = f"{base}:retained"
        self.retained_topics_key = f"{base}:retained:topics"
        self.history_prefix = f"{base}:history:"
        self.history_topics_key = f"{base}:history:topics"
        self._unstorable_logged = False

    def history_key(self, topic: str) -> str:
        """The stream of ``topic``'s history."""
        return f"{self.history_prefix}t:{topic}"

    def _encoded(self, publication: Publication) -> str | None:
        """The publication as a delivery message: the one the bus just announced, else encoded here (its
        payload was checked when it came in)."""
        announced = self._announced(publication)
        if announced is not None:
            return announced.decode("utf-8")
        try:
            return encode_delivery(self._origin, publication, checked=False).decode("utf-8")
        except (TypeError, ValueError) as exc:  # arguments JSON cannot carry (binary)
            if not self._unstorable_logged:
                self._unstorable_logged = True
                log.warn(
                    "cluster store: a publication to {topic} cannot be kept in Redis ({error}); such "
                    "publications are delivered but not retained nor kept in the history",
                    topic=publication.topic,
                    error=exc,
                )
            return None

    def retain(self, publication: Publication, timestamp: float, max_topics: int) -> None:
        encoded = self._encoded(publication)
        if encoded is None:
            return
        keys = [self.retained_key, self.retained_topics_key]
        arguments = [publication.topic, str(int(timestamp * 1000)), encoded, str(max(max_topics, 0))]
        self._write("eval", _RETAIN, keys, arguments, what=f"the retained event of {publication.topic!r}")

    def record(
        self, publication: Publication, limit: int, timestamp: float, shared: bool, max_topics: int
    ) -> None:
        encoded = self._encoded(publication)
        if encoded is None:
            return
        self._pending += [
            publication.topic,
            str(publication.id),
            encoded,
            str(limit),
            "1" if shared else "0",
        ]
        self._pending_bound = str(max(max_topics, 0))
        if len(self._pending) >= 5 * RECORD_BATCH:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Send the history entries waiting for the end of the reactor turn."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        pending, self._pending = self._pending, []
        if pending:
            arguments = [self.history_prefix, str(SEEN_MS), self._pending_bound, *pending]
            what = f"{len(pending) // 5} history entries"
            self._write("eval", _RECORD, [self.history_topics_key], arguments, what=what)

    def _write(self, *command: Any, what: str) -> None:
        d = self._command(*command)
        d.addErrback(
            lambda failure: log.warn(
                "cluster store: could not write {what} to Redis: {error}",
                what=what,
                error=failure.getErrorMessage(),
            )
        )

    def retained(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        if match == EXACT:
            d = self._command("hmget", self.retained_key, [uri])
            return d.addCallback(lambda values: _retained_events(values))
        d = self._command("zrange", self.retained_topics_key, 0, -1)

        def read(topics: Any) -> Deferred[list[StoredEvent]] | list[StoredEvent]:
            wanted = [t for t in map(_text, topics or ()) if topic_matches(t, uri, match)]
            if not wanted:
                return []
            return self._command("hmget", self.retained_key, wanted).addCallback(_retained_events)

        return d.addCallback(read)

    def recorded(self, uri: str, match: str) -> Deferred[list[StoredEvent]]:
        self.flush()  # the reader sees every publication made before it asked
        if match == EXACT:
            return self._read([uri])
        d = self._command("zrange", self.history_topics_key, 0, -1)
        return d.addCallback(
            lambda topics: self._read([t for t in map(_text, topics or ()) if topic_matches(t, uri, match)])
        )

    def _read(self, topics: list[str]) -> Deferred[list[StoredEvent]]:
        limits = [(topic, self._limit_for(topic)) for topic in topics]
        limits = [(topic, limit) for topic, limit in limits if limit > 0]
        if not limits:
            return succeed([])
        keys = [self.history_key(topic) for topic, _ in limits]
        d = self._command("eval", _READ, keys, [str(limit) for _, limit in limits])
        return d.addCallback(_stream_events)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _publication(raw: str) -> Publication | None:
    try:
        message = decode(raw)
    except EnvelopeError as exc:
        log.warn("cluster store: skipped a stored publication Redis holds: {error}", error=exc)
        return None
    return message.publication if isinstance(message, DeliveryMessage) else None


def _retained_events(values: Any) -> list[StoredEvent]:
    found = []
    for value in values or ():
        if value is None:
            continue
        stamp, _, raw = _text(value).partition(" ")
        publication = _publication(raw)
        if publication is None or not stamp.isdigit():
            continue
        milliseconds = int(stamp)
        found.append(StoredEvent(publication, milliseconds / 1000, (milliseconds, 0)))
    return sorted(found, key=lambda event: event.position)


def _stream_events(streams: Any) -> list[StoredEvent]:
    """The events of XREVRANGE answers (one per stream), oldest first across the streams."""
    found = []
    for entries in streams or ():
        for entry in entries or ():
            try:
                entry_id, fields = _text(entry[0]), entry[1]
                values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
                milliseconds, _, sequence = entry_id.partition("-")
                position = (int(milliseconds), int(sequence or 0))
            except (IndexError, TypeError, ValueError):
                log.warn("cluster store: skipped a malformed history entry {entry!r}", entry=entry)
                continue
            publication = _publication(_text(values.get("d", "")))
            if publication is not None:
                found.append(StoredEvent(publication, position[0] / 1000, position))
    return sorted(found, key=lambda event: event.position)
