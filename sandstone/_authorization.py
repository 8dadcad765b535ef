"""Authorization: the app's authorizer and the topics' ``may_*`` hooks, between a request and its effect.

A request (SUBSCRIBE, PUBLISH, REGISTER, CALL) runs its checks in order — the app's authorizer first,
then the topic hook — and takes effect only when every one of them said yes. Checks may answer at once
(a plain value) or later (a Deferred or a coroutine); a session's requests that need authorization take
effect in the order the session sent them, whenever their answers arrive.

Pattern subscriptions are authorized twice: when they are made (the authorizer sees the pattern and its
match policy) and, as defense in depth, when an event is delivered through them (the authorizer sees the
concrete URI with ``"exact"``). The delivery check must answer synchronously; its answers are cached per
session and URI for the life of the session.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._calling import as_deferred, invoke
from ._errors import AUTHORIZATION_FAILED, INVALID_URI, NOT_AUTHORIZED, WampError
from ._subscriptions import EXACT

if TYPE_CHECKING:
    from ._router import Router
    from ._session import Session
    from ._topic import Topic, TopicHost

log = Logger()

#: ``authorize(session, action, uri, match) -> bool`` (or a Deferred/coroutine of one)
Authorizer = Callable[[Any, str, str, str], Any]

RESERVED = "wamp"
DELIVERY_CACHE_SIZE = 1024  # decisions remembered per session for delivery-time checks


def is_reserved(uri: str) -> bool:
    """Whether a URI (or a pattern's fixed beginning) is in the ``wamp.`` namespace."""
    return uri == RESERVED or uri.startswith(RESERVED + ".")


def refuse_reserved(uri: str, action: str) -> None:
    """Raise ``wamp.error.invalid_uri`` for a client request on a reserved URI."""
    if is_reserved(uri):
        raise WampError(
            INVALID_URI, f"cannot {action} {uri!r}: the 'wamp.' namespace is reserved for the router"
        )


@dataclass(frozen=True, eq=False)
class Principal:
    """Who a REST handler acts for (``app.broadcast(..., on_behalf_of=...)``): a session-like object the
    authorizer and topic hooks receive. It has no session ``id``."""

    authid: str | None
    authrole: str | None
    authmethod: str | None = None
    id: None = None
    realm: str | None = None


def principal(who: Any) -> Any:
    """A session is used as is; anything else with ``authid``/``authrole`` becomes a ``Principal``."""
    from ._session import Session

    if isinstance(who, Session | Principal):
        return who
    try:
        return Principal(who.authid, who.authrole, getattr(who, "authmethod", None))
    except AttributeError:
        raise TypeError(f"on_behalf_of needs authid and authrole attributes, got {who!r}") from None


class Check(NamedTuple):
    """One authorization step: a name for logs and a thunk returning a verdict (maybe asynchronously)."""

    name: str
    run: Callable[[], Any]


def _judge(verdict: Any, check: Check, action: str, uri: str) -> None:
    if not verdict:  # False, and also None: a hook that forgot to answer denies
        raise WampError(NOT_AUTHORIZED, f"not authorized to {action} {uri!r}")


def _failed(failure: Failure, check: Check, action: str, uri: str) -> Failure:
    if failure.check(WampError):
        return failure  # a topic factory's own error (or a deliberate sandstone error): answered as is
    log.failure(
        "authorization hook {hook} failed for {action} on {uri}; denied",
        failure,
        hook=check.name,
        action=action,
        uri=uri,
    )
    return Failure(WampError(AUTHORIZATION_FAILED, f"authorization of {action} on {uri!r} failed"))


def run_checks(checks: Sequence[Check], action: str, uri: str) -> Deferred[None] | None:
    """Run checks in order, stopping at the first refusal.

    Returns ``None`` when every check allowed synchronously, raises ``WampError`` when one refused or
    failed synchronously, and otherwise returns a Deferred firing with ``None`` or failing with
    ``WampError`` (``not_authorized`` for a no, ``authorization_failed`` for an exception).
    """
    for index, check in enumerate(checks):
        try:
            verdict = check.run()
            waiting = as_deferred(verdict)
        except Exception:
            _failed(Failure(), check, action, uri).raiseException()
        if waiting is None:
            _judge(verdict, check, action, uri)
            continue
        rest = checks[index + 1 :]

        def answered(verdict: Any, check: Check = check, rest: Sequence[Check] = rest) -> Any:
            _judge(verdict, check, action, uri)
            return run_checks(rest, action, uri)

        waiting.addCallbacks(answered, _failed, errbackArgs=(check, action, uri))
        return waiting
    return None


def _name(function: Any) -> str:
    qualname = getattr(function, "__qualname__", None) or repr(function)
    module = getattr(function, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


class _Queued(NamedTuple):
    checks: list[Check]
    action: str
    uri: str
    then: Callable[[], Any]
    cleanup: Callable[[], None]
    result: Deferred[Any]


class Authorization:
    """A router's authorization: the app's authorizer, topic hooks, delivery checks and their cache."""

    def __init__(self, router: Router, topics: TopicHost | None) -> None:
        self._router = router
        self._topics = topics
        self._authorizer: Authorizer | None = None
        self._decisions: dict[Any, dict[str, bool]] = {}
        self._queues: dict[Any, deque[_Queued]] = {}
        self._warned_async: set[str] = set()  # the actions whose asynchronous answers were logged

    @property
    def authorizer(self) -> Authorizer | None:
        """The app's ``authorize(session, action, uri, match)``, or ``None`` (everything is allowed)."""
        return self._authorizer

    @authorizer.setter
    def authorizer(self, authorizer: Authorizer | None) -> None:
        self._authorizer = authorizer
        self.clear()
        self.refresh()

    def refresh(self) -> None:
        """Turn the broker's delivery check on when something may refuse, off otherwise."""
        guarded = self._authorizer is not None or (self._topics is not None and self._topics.guarded)
        self._router.broker.gate = self.allows_delivery if guarded else None

    def clear(self) -> None:
        """Forget every cached delivery decision (after the authorizer's rules changed)."""
        self._decisions.clear()

    def forget(self, session: Any) -> None:
        """A session left: drop its cached decisions and its requests waiting for authorization."""
        self._decisions.pop(session, None)
        self._queues.pop(session, None)

    # building checks

    def checks(
        self, session: Any, action: str, uri: str, match: str = EXACT, payload: Any = None
    ) -> tuple[list[Check], Callable[[], None]]:
        """The checks of a request (authorizer, then the topic hook) and a cleanup to run after it.

        The topic hook runs on the instance for the concrete URI, created on demand and held until the
        cleanup runs (then released if it has no subscribers).
        """
        checks: list[Check] = []
        authorizer = self._authorizer
        if authorizer is not None:
            checks.append(Check(_name(authorizer), lambda: authorizer(session, action, uri, match)))
        hook = {"subscribe": "may_subscribe", "publish": "may_publish"}.get(action)
        topics = self._topics
        if hook is None or match != EXACT or topics is None or not topics.defines(uri, hook):
            return checks, _nothing
        held: list[Topic] = []

        def run_hook() -> Any:
            topic = topics.hold(uri)
            held.append(topic)
            method = getattr(topic, hook)
            if hook == "may_publish":
                return invoke(method, session, payload)
            return invoke(method, session)

        def cleanup() -> None:
            while held:
                topics.unhold(held.pop())

        checks.append(Check(f"{topics.class_name(uri)}.{hook}", run_hook))
        return checks, cleanup

    # requests

    def decide(
        self, checks: list[Check], action: str, uri: str, cleanup: Callable[[], None]
    ) -> Deferred[None] | None:
        """Run checks outside any session's order (REST side); same contract as ``run_checks``."""
        pending = _checked(checks, action, uri, cleanup)
        if pending is None:
            cleanup()
            return None
        return pending.addBoth(_then_cleanup, cleanup)

    def gate(
        self,
        session: Session,
        checks: list[Check],
        action: str,
        uri: str,
        then: Callable[[], Deferred[None] | None],
        cleanup: Callable[[], None] = lambda: None,
    ) -> Deferred[None] | None:
        """Authorize a session's request, then run ``then`` (its effect).

        When every check answers at once this returns what ``then`` returns (or raises ``WampError``);
        otherwise a Deferred firing with it or failing with ``WampError``. Requests of one session take
        effect in the order they arrived: while one waits for its answer, later ones wait behind it.
        A session that left meanwhile gets nothing.
        """
        queue = self._queues.get(session)
        if queue is not None:
            result: Deferred[None] = Deferred()
            queue.append(_Queued(checks, action, uri, then, cleanup, result))
            return result
        pending = _checked(checks, action, uri, cleanup)
        if pending is None:
            try:
                return then()
            finally:
                cleanup()
        self._queues[session] = deque()
        result = Deferred()
        pending.addBoth(self._answered, session, _Queued(checks, action, uri, then, cleanup, result))
        return result

    def _answered(self, outcome: Any, session: Session, request: _Queued) -> None:
        self._conclude(outcome, session, request)
        self._drain(session)

    def _conclude(self, outcome: Any, session: Session, request: _Queued) -> None:
        result = request.result
        try:
            if isinstance(outcome, Failure):
                result.errback(outcome)
                return
            if session.has_left:
                result.callback(None)
                return
            try:
                value = request.then()
            except Exception:
                result.errback(Failure())
                return
            if isinstance(value, Deferred):
                value.chainDeferred(result)
            else:
                result.callback(value)
        finally:
            request.cleanup()

    def _drain(self, session: Session) -> None:
        """Run the requests that waited behind an answered one, until one has to wait again."""
        queue = self._queues.get(session)
        while queue:
            request = queue.popleft()
            try:
                pending = run_checks(request.checks, request.action, request.uri)
            except Exception:
                self._conclude(Failure(), session, request)
                continue
            if pending is None:
                self._conclude(None, session, request)
                continue
            outcomes: list[Any] = []
            pending.addBoth(outcomes.append)
            if outcomes:
                self._conclude(outcomes[0], session, request)
                continue
            pending.addCallback(  # type: ignore[call-overload]  # mypy makes a lambda's defaulted args required
                lambda _, request=request, outcomes=outcomes: self._answered(outcomes[0], session, request)
            )
            return
        if queue is not None and self._queues.get(session) is queue:
            del self._queues[session]

    # delivery

    def allows_delivery(self, session: Session, uri: str, match: str = EXACT) -> bool:
        """Whether a pattern subscriber may receive an event of ``uri`` (as if it subscribed to it exactly);
        with another ``match`` policy, whether the session may subscribe to that pattern (a subscription
        meta event about it is then its business).

        Decisions are cached per session (at most ``DELIVERY_CACHE_SIZE`` URIs, oldest dropped first), for
        sessions that joined only (an HTTP bridge request's principal lives for one request).
        """
        key = uri if match == EXACT else f"{match} {uri}"  # a URI has no space
        decisions = self._decisions.get(session)
        if decisions is None:
            if self._router.sessions.get(getattr(session, "id", None)) is not session:  # type: ignore[arg-type]
                return self._allowed_now(session, uri, match)
            decisions = self._decisions[session] = {}
        else:
            cached = decisions.get(key)
            if cached is not None:
                return cached
        allowed = self._allowed_now(session, uri, match)
        if len(decisions) >= DELIVERY_CACHE_SIZE:
            del decisions[next(iter(decisions))]
        decisions[key] = allowed
        return allowed

    def allows_call(self, session: Any, uri: str, match: str = EXACT) -> bool:
        """Whether the authorizer lets a session call the procedure ``uri`` (a pattern, with another
        ``match`` policy): then the registration meta API may tell it of that registration. Must answer
        synchronously (an asynchronous answer is a no); cached like ``allows_delivery``, for sessions
        that joined only (an HTTP bridge request's principal lives for one request)."""
        if self._authorizer is None:
            return True
        key = f"call {match} {uri}"  # a URI has no space; "call" is no match policy
        joined = getattr(session, "id", None) and self._router.sessions.get(session.id) is session
        decisions = self._decisions.setdefault(session, {}) if joined else {}
        cached = decisions.get(key)
        if cached is not None:
            return cached
        allowed = self._allowed_now(session, uri, match, "call")
        if len(decisions) >= DELIVERY_CACHE_SIZE:
            del decisions[next(iter(decisions))]
        decisions[key] = allowed
        return allowed

    def _allowed_now(self, session: Session, uri: str, match: str, action: str = "subscribe") -> bool:
        checks, cleanup = self.checks(session, action, uri, match)
        try:
            for check in checks:
                try:
                    verdict = check.run()
                except Exception:
                    _failed(Failure(), check, _LEARNING[action], uri)
                    return False
                if _as_deferred_or_close(verdict):
                    self._warn_async(check, uri, action)
                    return False
                if not verdict:
                    return False
            return True
        finally:
            cleanup()

    def _warn_async(self, check: Check, uri: str, action: str) -> None:
        if action in self._warned_async:
            return
        self._warned_async.add(action)
        if action == "call":
            log.warn(
                "authorization hook {hook} answered asynchronously when checking whether a session may "
                "learn of the registration of {uri} (registration meta API); such registrations are hidden "
                "from it. Answer synchronously for (session, 'call', uri, match) (logged once)",
                hook=check.name,
                uri=uri,
            )
            return
        log.warn(
            "authorization hook {hook} answered asynchronously when checking the delivery of an event "
            "of {uri} to a pattern subscriber; such events are not delivered. Answer synchronously for "
            "(session, 'subscribe', concrete_uri, 'exact') when clients use prefix or wildcard "
            "subscriptions (logged once)",
            hook=check.name,
            uri=uri,
        )


# What a session would do with a delivery-time decision, for the log of a failing hook.
_LEARNING = {"subscribe": "receive events of", "call": "learn of the registration of"}


def _as_deferred_or_close(verdict: Any) -> bool:
    """True when a verdict is asynchronous; it is disposed of without waiting (the answer is no)."""
    if isinstance(verdict, Deferred):
        verdict.addErrback(lambda _: None)
        return True
    if inspect.iscoroutine(verdict):
        verdict.close()
        return True
    return inspect.isawaitable(verdict)


def _then_cleanup(result: Any, cleanup: Callable[[], None]) -> Any:
    cleanup()
    return result


def _nothing() -> None:
    pass


def _checked(
    checks: list[Check], action: str, uri: str, cleanup: Callable[[], None]
) -> Deferred[None] | None:
    """``run_checks``, running ``cleanup`` if it raises."""
    try:
        return run_checks(checks, action, uri)
    except BaseException:
        cleanup()
        raise
