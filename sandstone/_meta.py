"""The meta API of the WAMP advanced profile: the procedures the router implements in the reserved ``wamp.``
namespace and the meta events it publishes there.

Session meta API: ``wamp.session.count``, ``.list``, ``.get`` and the events ``wamp.session.on_join``,
``.on_leave``. Subscription meta API: ``wamp.subscription.list``, ``.lookup``, ``.match``, ``.get``,
``.list_subscribers``, ``.count_subscribers`` and the events ``wamp.subscription.on_create``,
``.on_subscribe``, ``.on_unsubscribe``, ``.on_delete``. In a cluster the answers cover every node: this
router's own sessions and subscriptions, and the other nodes' ones from its ``Cluster``. A subscription's id
is the same on every node (derived from its URI and match policy), so ids from any node work on any other.
Subscriptions to meta topics themselves are left out of the subscription meta API, as in Crossbar, and so
is every subscription the caller may not make itself (as the app's authorizer and the topics' hooks say): the
meta API shows no more than authorization does.

Registration meta API: ``wamp.registration.list``, ``.lookup``, ``.match``, ``.get``, ``.list_callees``,
``.count_callees`` and the events ``wamp.registration.on_create``, ``.on_register``, ``.on_unregister``,
``.on_delete``. Every node's dealer holds the cluster's registrations (the other nodes' callees as
``RemoteCallee`` objects), so the answers come from this router's own table and cover every node; a
registration's id is the same on every node. Each node derives the registration meta events from the changes
of its own view and delivers them to its own meta subscribers only (none crosses the bus). A registration's
``created`` is when this node made it or first learned of it (the cluster's view carries no time), so it may
differ a little between nodes. The app's own procedures (``@app.procedure``) are served by the router of every
node, by no callee session: they are not registrations here. A session learns of a registration only if the
app's authorizer lets it call that procedure (pattern and match policy) itself; the others do not exist for
it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.wamp.types import CallResult

from ._cluster import Member, SessionInfo, SubscriptionInfo
from ._errors import (
    CLUSTER_UNAVAILABLE,
    INVALID_ARGUMENT,
    NO_SUCH_REGISTRATION,
    NO_SUCH_SESSION,
    NO_SUCH_SUBSCRIPTION,
    WampError,
)
from ._history import EventQuery, events_answer
from ._registrations import Registration
from ._subscriptions import (
    EXACT,
    MATCH_POLICIES,
    PREFIX,
    Subscription,
    iso_8601,
    subscription_id_for,
)

if TYPE_CHECKING:
    from ._router import Router
    from ._session import Session

SESSION_ON_JOIN = "wamp.session.on_join"
SESSION_ON_LEAVE = "wamp.session.on_leave"
SUBSCRIPTION_ON_CREATE = "wamp.subscription.on_create"
SUBSCRIPTION_ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
SUBSCRIPTION_ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
SUBSCRIPTION_ON_DELETE = "wamp.subscription.on_delete"
REGISTRATION_ON_CREATE = "wamp.registration.on_create"
REGISTRATION_ON_REGISTER = "wamp.registration.on_register"
REGISTRATION_ON_UNREGISTER = "wamp.registration.on_unregister"
REGISTRATION_ON_DELETE = "wamp.registration.on_delete"

#: The meta topics a client may subscribe to exactly (patterns in ``wamp.`` are accepted too).
META_TOPICS = frozenset(
    {
        SESSION_ON_JOIN,
        SESSION_ON_LEAVE,
        SUBSCRIPTION_ON_CREATE,
        SUBSCRIPTION_ON_SUBSCRIBE,
        SUBSCRIPTION_ON_UNSUBSCRIBE,
        SUBSCRIPTION_ON_DELETE,
        REGISTRATION_ON_CREATE,
        REGISTRATION_ON_REGISTER,
        REGISTRATION_ON_UNREGISTER,
        REGISTRATION_ON_DELETE,
    }
)


def session_info(session: Session) -> SessionInfo:
    """What the session meta API tells of a session of this node."""
    return SessionInfo(session.id, session.authid, session.authrole, session.authmethod, session.authprovider)


def subscription_info(subscription: Subscription) -> SubscriptionInfo:
    """What the subscription meta API tells of a subscription of this node."""
    return SubscriptionInfo(
        subscription.id, subscription.uri, subscription.match, iso_8601(subscription.created)
    )


def registration_details(registration: Registration) -> dict[str, Any]:
    """The spec's ``RegistrationDetails`` of a registration in this node's view."""
    return {
        "id": registration.id,
        "created": iso_8601(registration.created),
        "uri": registration.uri,
        "match": registration.match,
        "invoke": registration.invoke,
    }


def member(session: Session) -> Member:
    """A session of this node as a member of a topic's presence."""
    return Member(session.id, session.authid, session.authrole, True)


def matches(info: SubscriptionInfo, topic: str) -> bool:
    """Whether a publication to ``topic`` reaches the subscription ``info`` (of any node)."""
    if info.match == EXACT:
        return info.uri == topic
    if info.match == PREFIX:
        return topic.startswith(info.uri)
    mine, theirs = info.uri.split("."), topic.split(".")
    return len(mine) == len(theirs) and all(not m or m == t for m, t in zip(mine, theirs, strict=True))


def meta_procedures(router: Router) -> dict[str, Callable[..., Any]]:
    """The session and subscription meta procedures, answered over the cluster's sessions and
    subscriptions (this router's own, and the other nodes' through its cluster). Each takes the caller
    first (see ``Dealer.meta``), then the call's arguments."""

    async def all_sessions() -> list[SessionInfo]:
        local = [session_info(s) for s in router.sessions.values()]
        return local + await router.cluster.sessions()

    def selected(sessions: list[SessionInfo], filter_authroles: Any) -> list[SessionInfo]:
        if filter_authroles is None:
            return sessions
        roles = _strings(filter_authroles, "filter_authroles")
        return [s for s in sessions if s.authrole in roles]

    async def count(caller: Any, filter_authroles: list[str] | None = None) -> int:
        if filter_authroles is None:
            return len(router.sessions) + await router.cluster.session_count()
        return len(selected(await all_sessions(), filter_authroles))

    async def session_list(caller: Any, filter_authroles: list[str] | None = None) -> list[int]:
        return [s.session for s in selected(await all_sessions(), filter_authroles)]

    async def get(caller: Any, session_id: int) -> dict[str, Any]:
        _require_id(session_id, "session")
        session = router.sessions.get(session_id)
        if session is not None:
            return session_info(session).details()
        for info in await router.cluster.sessions():
            if info.session == session_id:
                return info.details()
        raise WampError(NO_SUCH_SESSION, f"no session {session_id!r} on this router")

    async def all_subscriptions(caller: Any) -> dict[int, SubscriptionInfo]:
        """The cluster's subscriptions the caller may know of (those it may make itself)."""
        found = {info.id: info for info in await router.cluster.subscriptions()}
        for subscription in router.broker.subscriptions:
            info = subscription_info(subscription)
            known = found.get(info.id)
            if known is None or info.created < known.created:  # created: when the first node made it
                found[info.id] = info
        if router.broker.gate is None:  # nothing may refuse a subscription
            return found
        allows = router.authorization.allows_delivery
        return {i: info for i, info in found.items() if allows(caller, info.uri, info.match)}

    async def subscription_list(caller: Any) -> dict[str, list[int]]:
        lists: dict[str, list[int]] = {policy: [] for policy in MATCH_POLICIES}
        for info in (await all_subscriptions(caller)).values():
            lists[info.match].append(info.id)
        return lists

    async def lookup(caller: Any, topic: str, options: dict[str, Any] | None = None) -> int | CallResult:
        _require_uri(topic)
        match = EXACT
        if options is not None:
            if not isinstance(options, dict):
                raise WampError(INVALID_ARGUMENT, "options must be a dictionary")
            match = options.get("match", EXACT)
            if match not in MATCH_POLICIES:
                raise WampError(INVALID_ARGUMENT, f"unknown match policy {match!r}")
        subscription_id = subscription_id_for(topic, match)
        found = await all_subscriptions(caller)
        info = found.get(subscription_id)
        return info.id if info is not None and info.uri == topic and info.match == match else _NULL

    async def match(caller: Any, topic: str) -> list[int] | CallResult:
        _require_uri(topic)
        ids = [info.id for info in (await all_subscriptions(caller)).values() if matches(info, topic)]
        return ids or _NULL

    async def subscription_get(caller: Any, subscription_id: int) -> dict[str, Any]:
        return (await _subscription(caller, subscription_id)).details()

    async def list_subscribers(caller: Any, subscription_id: int) -> list[int]:
        await _subscription(caller, subscription_id)
        return [m.session for m in await router.subscribers(subscription_id)]

    async def count_subscribers(caller: Any, subscription_id: int) -> int:
        await _subscription(caller, subscription_id)
        return await router.subscriber_count(subscription_id)

    async def get_events(caller: Any, subscription_id: int, **options: Any) -> CallResult:
        query = EventQuery.parse(options, router.limits.max_history_events)  # bad input first
        info = await _subscription(caller, subscription_id)
        try:
            events = await router.store.recorded(info.uri, info.match)
        except WampError:
            raise
        except Exception as exc:
            raise WampError(
                CLUSTER_UNAVAILABLE, f"the event history of {info.uri!r} cannot be read now: {exc}"
            ) from None
        return events_answer(events, query, caller, info)

    async def _subscription(caller: Any, subscription_id: int) -> SubscriptionInfo:
        _require_id(subscription_id, "subscription")
        info = (await all_subscriptions(caller)).get(subscription_id)
        if info is None:
            raise WampError(NO_SUCH_SUBSCRIPTION, f"no subscription {subscription_id!r} on this router")
        return info

    return {
        **registration_procedures(router),
        "wamp.session.count": count,
        "wamp.session.list": session_list,
        "wamp.session.get": get,
        "wamp.subscription.list": subscription_list,
        "wamp.subscription.lookup": lookup,
        "wamp.subscription.match": match,
        "wamp.subscription.get": subscription_get,
        "wamp.subscription.list_subscribers": list_subscribers,
        "wamp.subscription.count_subscribers": count_subscribers,
        "wamp.subscription.get_events": get_events,
    }


def registration_procedures(router: Router) -> dict[str, Callable[..., Any]]:
    """The registration meta procedures, answered from this router's view of the cluster's registrations
    (see the module's docstring). Each takes the caller first, then the call's arguments."""
    dealer = router.dealer
    authorization = router.authorization

    def visible(caller: Any, registration: Registration | None) -> Registration | None:
        """``registration`` if ``caller`` may know of it: a client's (not the app's procedure) that it may
        call itself; else ``None``."""
        if registration is None or registration.function is not None:
            return None
        if not authorization.allows_call(caller, registration.uri, registration.match):
            return None
        return registration

    def registration_list(caller: Any) -> dict[str, list[int]]:
        lists: dict[str, list[int]] = {policy: [] for policy in MATCH_POLICIES}
        for registration in dealer.client_view():
            if visible(caller, registration) is not None:
                lists[registration.match].append(registration.id)
        return lists

    def lookup(caller: Any, procedure: str, options: dict[str, Any] | None = None) -> int | CallResult:
        _require_uri(procedure, "procedure")
        match = _match_option(options)
        registration = visible(caller, dealer.registration(procedure, match))
        return _NULL if registration is None else registration.id

    def best_match(caller: Any, procedure: str) -> int | CallResult:
        _require_uri(procedure, "procedure")
        # the one a call reaches, or null (never another one a call would not reach)
        registration = visible(caller, dealer.best(procedure))
        return _NULL if registration is None else registration.id

    def get(caller: Any, registration_id: int) -> dict[str, Any]:
        return registration_details(_registration(caller, registration_id))

    def list_callees(caller: Any, registration_id: int) -> list[int]:
        return [callee.id for callee in _registration(caller, registration_id).callees]

    def count_callees(caller: Any, registration_id: int) -> int:
        return len(_registration(caller, registration_id).callees)

    def _registration(caller: Any, registration_id: int) -> Registration:
        _require_id(registration_id, "registration")
        registration = visible(caller, dealer.registration_by_id(registration_id))
        if registration is None:
            raise WampError(NO_SUCH_REGISTRATION, f"no registration {registration_id!r} on this router")
        return registration

    return {
        "wamp.registration.list": registration_list,
        "wamp.registration.lookup": lookup,
        "wamp.registration.match": best_match,
        "wamp.registration.get": get,
        "wamp.registration.list_callees": list_callees,
        "wamp.registration.count_callees": count_callees,
    }


# A result of one positional argument, null (a plain ``None`` would be a RESULT without arguments).
_NULL = CallResult(None)


def _require_id(value: Any, what: str) -> None:
    if type(value) is not int:
        raise WampError(INVALID_ARGUMENT, f"a {what} id must be an integer, not {value!r}")


def _require_uri(value: Any, what: str = "topic") -> None:
    if not isinstance(value, str):
        raise WampError(INVALID_ARGUMENT, f"a {what} must be a URI string, not {value!r}")


def _match_option(options: Any) -> str:
    """The match policy of a lookup's options (``exact`` unless they say otherwise)."""
    if options is None:
        return EXACT
    if not isinstance(options, dict):
        raise WampError(INVALID_ARGUMENT, "options must be a dictionary")
    match = options.get("match", EXACT)
    if match not in MATCH_POLICIES:
        raise WampError(INVALID_ARGUMENT, f"unknown match policy {match!r}")
    return str(match)


def _strings(values: Any, what: str) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise WampError(INVALID_ARGUMENT, f"{what} must be a list of strings, not {values!r}")
    return frozenset(values)
