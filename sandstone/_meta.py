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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.wamp.types import CallResult

from ._cluster import Member, SessionInfo, SubscriptionInfo
from ._errors import INVALID_ARGUMENT, NO_SUCH_SESSION, NO_SUCH_SUBSCRIPTION, WampError
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

#: The meta topics a client may subscribe to exactly (patterns in ``wamp.`` are accepted too).
META_TOPICS = frozenset(
    {
        SESSION_ON_JOIN,
        SESSION_ON_LEAVE,
        SUBSCRIPTION_ON_CREATE,
        SUBSCRIPTION_ON_SUBSCRIBE,
        SUBSCRIPTION_ON_UNSUBSCRIBE,
        SUBSCRIPTION_ON_DELETE,
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

    async def _subscription(caller: Any, subscription_id: int) -> SubscriptionInfo:
        _require_id(subscription_id, "subscription")
        info = (await all_subscriptions(caller)).get(subscription_id)
        if info is None:
            raise WampError(NO_SUCH_SUBSCRIPTION, f"no subscription {subscription_id!r} on this router")
        return info

    return {
        "wamp.session.count": count,
        "wamp.session.list": session_list,
        "wamp.session.get": get,
        "wamp.subscription.list": subscription_list,
        "wamp.subscription.lookup": lookup,
        "wamp.subscription.match": match,
        "wamp.subscription.get": subscription_get,
        "wamp.subscription.list_subscribers": list_subscribers,
        "wamp.subscription.count_subscribers": count_subscribers,
    }


# A result of one positional argument, null (a plain ``None`` would be a RESULT without arguments).
_NULL = CallResult(None)


def _require_id(value: Any, what: str) -> None:
    if type(value) is not int:
        raise WampError(INVALID_ARGUMENT, f"a {what} id must be an integer, not {value!r}")


def _require_uri(value: Any) -> None:
    if not isinstance(value, str):
        raise WampError(INVALID_ARGUMENT, f"a topic must be a URI string, not {value!r}")


def _strings(values: Any, what: str) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise WampError(INVALID_ARGUMENT, f"{what} must be a list of strings, not {values!r}")
    return frozenset(values)
