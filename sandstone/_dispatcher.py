"""
In-process event dispatcher.

Listeners are registered per event name with a priority and are called one
after another when an event is dispatched.  A listener may be synchronous or
return a ``Deferred`` or a coroutine; asynchronous listeners are awaited before
the next one is called, so the call order is deterministic and a listener can
stop the propagation of the event to the later ones.
"""

from __future__ import annotations

import contextvars
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._calling import as_deferred

if TYPE_CHECKING:
    from ._cluster import Cause

__all__ = [
    "DispatchResult",
    "EventDispatcher",
    "ListenerError",
    "StopPropagation",
    "current_cause",
]

_log = Logger()

# The forwarded event whose listeners are running (their context: set by the dispatch, so that it follows
# a coroutine listener across its awaits and the listeners after it).
_cause: contextvars.ContextVar[Cause | None] = contextvars.ContextVar("sandstone_cause", default=None)


def current_cause() -> Cause | None:
    """The forwarded event whose listener is running, if any (see ``_cluster.Cause``)."""
    return _cause.get()


_Listener = Callable[[Any], Any]


class StopPropagation(Exception):
    """Raised by a listener (sync or async) to stop later listeners of this dispatch."""


@dataclass(frozen=True)
class ListenerError:
    """A listener failure recorded during a dispatch."""

    listener: str
    """The listener's qualified name (``module.Class.method``), as the log says it."""
    failure: Failure
    """What it raised."""


@dataclass
class DispatchResult:
    """What happened during one dispatch; the value its Deferred fires with."""

    name: str
    """The event name dispatched."""
    event: object
    """The event itself."""
    called: int
    """How many listeners were called."""
    stopped: bool
    """Whether a listener raised ``StopPropagation``."""
    errors: list[ListenerError]
    """The listeners that failed (logged; the others still ran)."""

    @property
    def ok(self) -> bool:
        """True when no listener failed."""
        return not self.errors


@dataclass(eq=False, slots=True)
class _Entry:
    """One registration; ``active`` is cleared on removal so running dispatches skip it."""

    listener: _Listener
    priority: int
    sequence: int
    active: bool = field(default=True)


def _call_order(entry: _Entry) -> tuple[int, int]:
    """Sort key: higher priority first, then registration order."""
    return (-entry.priority, entry.sequence)


def _listener_name(listener: _Listener) -> str:
    """Qualified name of a listener, for logs and ``ListenerError``."""
    qualname = getattr(listener, "__qualname__", None)
    if not isinstance(qualname, str):
        return repr(listener)
    module = getattr(listener, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


class _Dispatch:
    """
    One running dispatch: calls a snapshot of the listeners in a loop (not by
    recursion, so thousands of listeners cannot exhaust the stack) and pauses
    only while an asynchronous listener has not finished.
    """

    def __init__(self, name: str, event: object, entries: list[_Entry], cause: Cause | None) -> None:
        self._pending = deque(entries)
        self.result = DispatchResult(name, event, called=0, stopped=False, errors=[])
        self.done: Deferred[DispatchResult] = Deferred()
        # The listeners run in a context of their own (its cause: the forwarded event they handle, or the
        # one being handled where the dispatch started), also after an asynchronous one, whatever fired
        # its Deferred.
        self._context = contextvars.copy_context()
        if cause is not None:
            self._context.run(_cause.set, cause)

    def start(self) -> None:
        """Call the listeners (see ``run``), in the dispatch's context."""
        self._context.run(self.run)

    def run(self) -> None:
        """Call listeners until one must be awaited or none remain."""
        while self._pending and not self.result.stopped and not self.done.called:
            entry = self._pending.popleft()
            if entry.active and self._call(entry):
                return
        if not self.done.called:
            self.done.callback(self.result)

    def _call(self, entry: _Entry) -> bool:
        """Call one listener; return True if the dispatch must wait for it."""
        self.result.called += 1
        try:
            returned = entry.listener(self.result.event)
        except Exception:
            self._record(entry, Failure())
            return False
        waiting = as_deferred(returned)
        if waiting is None:
            return False
        outcomes: list[object] = []
        waiting.addBoth(outcomes.append)
        if outcomes:
            self._record(entry, outcomes[0])
            return False
        waiting.addCallback(self._resume, entry, outcomes)
        return True

    def _resume(self, _: object, entry: _Entry, outcomes: list[object]) -> None:
        """Record an awaited listener's outcome, then carry on with the next ones."""
        self._record(entry, outcomes[0])
        self._context.run(self.run)

    def _record(self, entry: _Entry, outcome: object) -> None:
        """Note a StopPropagation or log and keep a failure; plain values are ignored."""
        if not isinstance(outcome, Failure):
            return
        if outcome.check(StopPropagation):
            self.result.stopped = True
            return
        name = _listener_name(entry.listener)
        _log.failure(
            "listener {listener} failed on event {event_name}",
            outcome,
            listener=name,
            event_name=self.result.name,
        )
        self.result.errors.append(ListenerError(name, outcome))


def _hashable(listener: _Listener) -> bool:
    try:
        hash(listener)
    except TypeError:
        return False
    return True


def _find(entries: list[_Entry], listener: _Listener) -> _Entry | None:
    """The entry whose listener equals ``listener``, if any."""
    for entry in entries:
        if entry.listener == listener:
            return entry
    return None


class EventDispatcher:
    """Registry of event listeners by name, and dispatcher of events to them."""

    def __init__(self) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        # Per name, the entries of hashable listeners by listener, so that finding a registration
        # is not a scan of the list (thousands of topic instances may listen to one event name).
        self._hashed: dict[str, dict[_Listener, _Entry]] = {}
        self._sequence = count()
        self._observers: list[Callable[[str, float], None]] = []

    def add_observer(self, observer: Callable[[str, float], None]) -> None:
        """Call ``observer(name, seconds)`` after every dispatch, once its listeners are done (the metrics'
        dispatch durations)."""
        self._observers.append(observer)

    def remove_observer(self, observer: Callable[[str, float], None]) -> None:
        """Stop calling an observer added with ``add_observer``."""
        if observer in self._observers:
            self._observers.remove(observer)

    def _lookup(self, name: str, entries: list[_Entry], listener: _Listener) -> _Entry | None:
        """The registration of a listener equal to ``listener`` under ``name``, if any."""
        hashed = self._hashed.get(name, {})
        if not _hashable(listener) or len(hashed) < len(entries):
            # unhashable listeners are only found by scanning (and could be equal to a hashable one)
            return _find(entries, listener)
        return hashed.get(listener)

    def add_listener(self, name: str, listener: _Listener, priority: int = 0) -> None:
        """Register ``listener`` for ``name``; registering an equal listener again is a no-op."""
        entries = self._entries.setdefault(name, [])
        if self._lookup(name, entries, listener) is not None:
            return
        entry = _Entry(listener, priority, next(self._sequence))
        insort(entries, entry, key=_call_order)
        if _hashable(listener):
            self._hashed.setdefault(name, {})[listener] = entry

    def remove_listener(self, name: str, listener: _Listener) -> bool:
        """Unregister ``listener`` from ``name``; return True if it was registered."""
        entries = self._entries.get(name)
        if entries is None:
            return False
        entry = self._lookup(name, entries, listener)
        if entry is None:
            return False
        entry.active = False
        del entries[bisect_left(entries, _call_order(entry), key=_call_order)]
        if _hashable(entry.listener):
            self._hashed[name].pop(entry.listener, None)
        if not entries:
            del self._entries[name]
            self._hashed.pop(name, None)
        return True

    def listeners(self, name: str) -> list[_Listener]:
        """The listeners of ``name``, in call order."""
        return [entry.listener for entry in self._entries.get(name, ())]

    def listener_count(self, name: str | None = None) -> int:
        """Number of listeners of ``name``, or of all names when ``name`` is None."""
        if name is None:
            return sum(len(entries) for entries in self._entries.values())
        return len(self._entries.get(name, ()))

    def has_listeners(self, name: str) -> bool:
        """True when at least one listener is registered for ``name``."""
        return name in self._entries

    def dispatch(
        self, name: str, event: object = None, *, cause: Cause | None = None
    ) -> Deferred[DispatchResult]:
        """
        Call the listeners of ``name`` with ``event``, one after another.

        The returned Deferred never fails; it fires with a ``DispatchResult``,
        already before returning when every listener is synchronous. ``cause``
        is given for a forwarded event: what its listeners broadcast is keyed
        by it (see ``_cluster.Cause``).
        """
        running = _Dispatch(name, event, list(self._entries.get(name, ())), cause)
        if self._observers:
            running.done.addCallback(_observed, list(self._observers), time.perf_counter())
        running.start()
        return running.done


def _observed(
    result: DispatchResult, observers: list[Callable[[str, float], None]], started: float
) -> DispatchResult:
    elapsed = time.perf_counter() - started
    for observer in observers:
        try:
            observer(result.name, elapsed)
        except Exception:
            _log.failure("dispatch observer {observer} failed", observer=observer)
    return result
