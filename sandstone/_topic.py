"""Topics: classes (or factories) declared for URI patterns, one live instance per concrete topic URI."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._calling import invoke
from ._cluster import Member
from ._dispatcher import EventDispatcher
from ._errors import RUNTIME_ERROR, WampError, error_payload
from ._meta import member
from ._pattern import TopicPattern, TopicRoutes
from ._payload import require_carried
from ._publication import Publication, session_ids

if TYPE_CHECKING:
    from ._router import Router
    from ._session import Session

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])
TopicFactory = Callable[[str, dict[str, Any]], "Topic"]

_EVENTS_ATTRIBUTE = "_sandstone_events"


def on_event(name: str, *, priority: int = 0) -> Callable[[F], F]:
    """Mark a Topic method as a listener of the event ``name`` while the topic instance lives."""

    def mark(method: F) -> F:
        marks = list(getattr(method, _EVENTS_ATTRIBUTE, ()))
        marks.append((name, priority))
        setattr(method, _EVENTS_ATTRIBUTE, marks)
        return method

    return mark


class Topic:
    """Base class of a topic: override the hooks, call ``broadcast`` and ``send``.

    An instance serves one concrete URI (``self.uri``) with the values its pattern matched
    (``self.args``, converted). It is created when the first exact subscription to that URI arrives
    and released when the last one leaves; its ``@on_event`` methods listen only meanwhile.
    Hooks may be plain methods, coroutines, or return Deferreds.
    """

    _event_methods: tuple[tuple[str, str, int], ...] = ()
    _publish_takes_publication: bool = True

    def __init__(self, uri: str, args: dict[str, Any]) -> None:
        self.uri = uri
        self.args = args
        self._subscribers: dict[Session, None] = {}
        self._router: Router | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._event_methods = tuple(_event_methods(cls))
        cls._publish_takes_publication = _takes_publication(cls.on_publish)

    @property
    def subscribers(self) -> tuple[Session, ...]:
        """The sessions subscribed to this exact URI, in the order they subscribed."""
        return tuple(self._subscribers)

    # hooks

    def on_subscribe(self, session: Session) -> Any:
        """A session subscribed to this URI (after its SUBSCRIBED was sent)."""

    def on_unsubscribe(self, session: Session) -> Any:
        """A session unsubscribed, or left without unsubscribing."""

    def on_join(self, member: Member) -> Any:
        """A subscriber joined this URI somewhere in the cluster (``member``: its session id, authid,
        authrole, and ``local``). Runs once per join in the whole cluster: on the node of the joining
        session, right after its ``on_subscribe``; so a ``broadcast`` from here reaches everyone once."""

    def on_leave(self, member: Member) -> Any:
        """A subscriber left this URI somewhere in the cluster. Runs once per leave in the whole cluster:
        on the node of the leaving session, right after its ``on_unsubscribe``; when that node died, on
        the node that found it dead (within the heartbeat TTL), on its instance for this URI or, if none
        lives there, on a transient one."""

    def may_subscribe(self, session: Session) -> Any:
        """Whether ``session`` may subscribe to this URI (exactly, or receive its events through a
        pattern subscription). Runs after the app's authorizer allowed it; a false answer refuses
        with ``wamp.error.not_authorized``, an exception with ``wamp.error.authorization_failed``.
        May return a Deferred or be a coroutine, except for checks of pattern subscribers' deliveries.
        """
        return True

    def may_publish(self, session: Session, payload: Any) -> Any:
        """Whether ``session`` may publish ``payload`` on this URI (before ``on_publish`` runs)."""
        return True

    def on_publish(self, session: Session, payload: Any, publication: Publication) -> Any:
        """A client published on this URI. Default: deliver it as published to every subscriber,
        honouring the client's ``exclude_me`` (the publisher is excluded unless it says false),
        ``exclude`` and ``eligible`` options.

        ``payload`` is the first positional argument (``None`` if there is none); the whole
        publication (``args``, ``kwargs``, options, ``id``) is ``publication``. An override may
        leave out the ``publication`` parameter.
        """
        self._require_router().publish(publication)

    # actions

    def broadcast(
        self,
        payload: Any,
        *,
        exclude: Iterable[Session | int] = (),
        eligible: Iterable[Session | int] | None = None,
        retain: bool = False,
    ) -> int:
        """Send ``payload`` as the first argument of an EVENT to every subscriber of this URI
        (pattern subscriptions included), except ``exclude`` and, when given, only ``eligible``.
        Returns the publication id. A payload not every WAMP serializer can carry alike (a datetime, a
        set, a dict with integer keys...) raises ``TypeError`` saying where, and nothing is sent.

        ``retain=True`` keeps it as this URI's retained event: a later subscriber asking for it
        (``get_retained``) gets it at once, if ``exclude``/``eligible`` admit it.
        """
        require_carried(payload, "broadcast on", self.uri)
        publication = Publication(
            topic=self.uri,
            args=[payload],
            exclude=session_ids(exclude) or None,
            eligible=session_ids(eligible),
            retain=retain,
            source="topic",
        )
        self._require_router().publish(publication)
        return publication.id

    def send(self, session: Session, payload: Any) -> int:
        """Send ``payload`` to one subscriber of this URI only. Returns the publication id. A payload not
        every WAMP serializer can carry raises ``TypeError``, as in ``broadcast``."""
        require_carried(payload, "send on", self.uri)
        return self._require_router().send(session, self.uri, [payload], None)

    def retained(self) -> Deferred[Any]:
        """The payload of this URI's retained event (``None`` when it has none):
        ``await self.retained()``."""
        return self._require_router().retained_payload(self.uri)

    def presence(self) -> Deferred[list[Member]]:
        """Every exact subscriber of this URI in the cluster (this node's first, in the order they
        subscribed): ``await self.presence()``. On a single node it answers at once."""
        return self._require_router().presence(self.uri)

    def presence_count(self) -> Deferred[int]:
        """How many exact subscribers this URI has in the cluster: ``await self.presence_count()``."""
        return self._require_router().presence_count(self.uri)

    def _require_router(self) -> Router:
        if self._router is None:
            raise RuntimeError(f"topic {self.uri!r} is not attached to a running app yet")
        return self._router

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri!r} ({len(self._subscribers)} subscribers)>"


def _event_methods(cls: type) -> Iterable[tuple[str, str, int]]:
    seen: set[str] = set()
    for klass in cls.__mro__:
        for attribute, value in vars(klass).items():
            if attribute in seen:
                continue
            seen.add(attribute)
            for name, priority in getattr(value, _EVENTS_ATTRIBUTE, ()):
                yield attribute, name, priority


def _takes_publication(method: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "publication" or p.kind is p.VAR_KEYWORD for p in parameters)


class TopicHost:
    """The app's declared topics and their live instances, driven by the router.

    The router calls ``subscribed``/``unsubscribed`` for exact subscriptions and ``published`` for
    client publications; the host creates instances on demand, wires their event listeners to the
    dispatcher, runs the hooks and releases instances nobody uses any more.
    """

    def __init__(self, events: EventDispatcher) -> None:
        self.routes: TopicRoutes[TopicFactory] = TopicRoutes()
        self.instances: dict[str, Topic] = {}
        self._events = events
        self._busy: dict[str, int] = {}
        self.router: Router | None = None
        self.guarded = False  # some declared topic may refuse subscribers (``may_subscribe``)
        self._history: dict[str, int] = {}  # pattern text -> events each concrete topic keeps

    def declare(self, pattern: TopicPattern, factory: TopicFactory, history: int = 0) -> None:
        """Declare a topic pattern served by ``factory(uri, args)``; each concrete topic keeps its last
        ``history`` events (0: none)."""
        if type(history) is not int or history < 0:
            raise ValueError(f"history is a number of events (0: none), not {history!r}")
        self.routes.add(pattern, factory)
        if history:
            self._history[pattern.pattern] = history
            if self.router is not None:
                self.router.history_rules.changed()
        if _may_define(factory, "may_subscribe") and not self.guarded:
            self.guarded = True
            if self.router is not None:
                self.router.authorization.refresh()

    def defines(self, uri: str, hook: str) -> bool:
        """Whether the topic declared for ``uri`` may override ``hook`` (factories that are not Topic
        classes may, as far as anyone can tell without calling them)."""
        resolved = self.routes.resolve(uri)
        return resolved is not None and _may_define(resolved[1], hook)

    def class_name(self, uri: str) -> str:
        """The qualified name of the topic class (or factory) declared for ``uri``, for logs."""
        resolved = self.routes.resolve(uri)
        return getattr(resolved[1], "__qualname__", repr(resolved[1])) if resolved else "?"

    def hold(self, uri: str) -> Topic:
        """The instance for ``uri`` (created if needed), kept alive until ``unhold``."""
        topic = self.instance(uri)
        self._busy[topic.uri] = self._busy.get(topic.uri, 0) + 1
        return topic

    def unhold(self, topic: Topic) -> None:
        """Let a held instance go; it is released when nobody subscribes to it."""
        self._done_publishing(None, topic)

    def has_route(self, uri: str) -> bool:
        """Whether a declared pattern matches ``uri``."""
        return self.routes.resolve(uri) is not None

    @property
    def keeps_history(self) -> bool:
        """Whether some declared topic keeps a history."""
        return bool(self._history)

    def history_for(self, uri: str) -> int:
        """How many events the topic declared for ``uri`` keeps (0: none, or no topic is declared)."""
        if not self._history:
            return 0
        resolved = self.routes.resolve(uri)
        return 0 if resolved is None else self._history.get(resolved[0].pattern, 0)

    def get(self, uri: str) -> Topic | None:
        """The live instance for ``uri``, if any."""
        return self.instances.get(uri)

    def subscribed(self, session: Session, uri: str) -> None:
        """An exact subscription arrived: make sure the instance exists, then run ``on_subscribe``."""
        topic = self.instance(uri)
        topic._subscribers[session] = None
        self._run_hook(topic, "on_subscribe", session)
        self._run_hook(topic, "on_join", member(session))

    def joined_again(self, session: Session, uri: str) -> None:
        """A subscriber the other nodes had taken for gone (its node was cut off) is back: ``on_join``."""
        topic = self.instances.get(uri)
        if topic is not None and session in topic._subscribers:
            self._run_hook(topic, "on_join", member(session))

    def unsubscribed(self, session: Session, uri: str) -> None:
        """An exact subscription ended: run ``on_unsubscribe``, release the instance if it is unused."""
        topic = self.instances.get(uri)
        if topic is None or topic._subscribers.pop(session, False) is not None:
            return
        self._run_hook(topic, "on_unsubscribe", session)
        self._run_hook(topic, "on_leave", member(session))
        self._release_if_unused(topic)

    def left_elsewhere(self, uri: str, gone: list[Member]) -> None:
        """Subscribers of ``uri`` on a node that died left: run ``on_leave`` here for each (on a transient
        instance when none lives, kept until every hook is done)."""
        if not gone or not self.has_route(uri):
            return
        try:
            topic = self.hold(uri)
        except WampError:
            return  # the factory failed (and said so)
        running = []
        for member_gone in gone:
            d = maybeDeferred(invoke, topic.on_leave, member_gone)
            d.addErrback(self._hook_failed, topic, "on_leave")
            running.append(d.addErrback(lambda _: None))
        gatherResults(running).addBoth(lambda _: self.unhold(topic))

    def published(self, session: Session, publication: Publication) -> Deferred[None]:
        """Run ``on_publish`` on the instance for the publication's URI (a transient one if none lives)."""
        topic = self.instance(publication.topic)
        self._busy[topic.uri] = self._busy.get(topic.uri, 0) + 1
        if topic._publish_takes_publication:
            # by keyword: an override may take it as ``publication`` or through ``**kwargs``
            d = maybeDeferred(invoke, topic.on_publish, session, publication.payload, publication=publication)
        else:
            d = maybeDeferred(invoke, topic.on_publish, session, publication.payload)
        d.addErrback(self._hook_failed, topic, "on_publish")
        d.addBoth(self._done_publishing, topic)
        return d

    def _done_publishing(self, result: Any, topic: Topic) -> Any:
        remaining = self._busy[topic.uri] - 1
        if remaining:
            self._busy[topic.uri] = remaining
        else:
            del self._busy[topic.uri]
        self._release_if_unused(topic)
        return None if not isinstance(result, Failure) else result

    def instance(self, uri: str) -> Topic:
        """The instance for a declared ``uri``, created if none lives.

        A factory that fails, or returns something else than a ``Topic``, raises ``WampError`` (its
        ``ApplicationError`` URI, or ``wamp.error.runtime_error``, which is also logged).
        """
        topic = self.instances.get(uri)
        if topic is not None:
            return topic
        resolved = self.routes.resolve(uri)
        if resolved is None:
            raise LookupError(f"no topic is declared for URI {uri!r}")
        pattern, factory, args = resolved
        try:
            topic = factory(uri, args)
            if not isinstance(topic, Topic):
                raise TypeError(
                    f"factory for topic pattern {pattern.pattern!r} returned {topic!r}, not a Topic"
                )
        except Exception:
            failure = Failure()
            payload = error_payload(failure)
            if payload.uri == RUNTIME_ERROR:
                log.failure(
                    "factory of topic pattern {pattern} failed for {uri}",
                    failure,
                    pattern=pattern.pattern,
                    uri=uri,
                )
            raise WampError(payload.uri, *(payload.args or ()), **(payload.kwargs or {})) from None
        topic._router = self.router
        self.instances[uri] = topic
        for attribute, name, priority in type(topic)._event_methods:
            self._events.add_listener(name, getattr(topic, attribute), priority)
        return topic

    def _release_if_unused(self, topic: Topic) -> None:
        if topic._subscribers or topic.uri in self._busy or self.instances.get(topic.uri) is not topic:
            return
        del self.instances[topic.uri]
        for attribute, name, _ in type(topic)._event_methods:
            self._events.remove_listener(name, getattr(topic, attribute))

    def _run_hook(self, topic: Topic, hook: str, argument: Session | Member) -> None:
        d = maybeDeferred(invoke, getattr(topic, hook), argument)
        d.addErrback(self._hook_failed, topic, hook)
        d.addErrback(lambda _: None)

    def _hook_failed(self, failure: Failure, topic: Topic, hook: str) -> Failure:
        if failure.check(ApplicationError, WampError):
            # a deliberate refusal, answered to the client as is: not a crash worth a traceback
            log.info(
                "{hook} of topic {topic_class} for {uri} answered {error}",
                hook=hook,
                topic_class=type(topic).__qualname__,
                uri=topic.uri,
                error=failure.value,
            )
            return failure
        log.failure(
            "{hook} of topic {topic_class} for {uri} failed",
            failure,
            hook=hook,
            topic_class=type(topic).__qualname__,
            uri=topic.uri,
        )
        return failure


def _may_define(factory: Any, hook: str) -> bool:
    if isinstance(factory, type) and issubclass(factory, Topic):
        return getattr(factory, hook) is not getattr(Topic, hook)
    return True
