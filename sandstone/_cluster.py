"""The cluster seam: what a router asks of the other nodes, and the single-node default.

A ``Router`` is given a ``Cluster`` (``LocalCluster`` unless a bus runs): it calls only these methods, and the
cluster calls only the router's public methods. ``RedisBus`` (``_bus.py``) is the other implementation.

The presence side (sessions and subscriptions, for the meta API and ``Topic.presence``): a router tells its
cluster each change of its own sessions and subscriptions, and asks it about *the other nodes'* ones (a router
knows its own): ``LocalCluster`` has none, ``RedisBus`` reads them from Redis. Subscriptions are named alike
on every node (``_subscriptions.subscription_id_for``), so a subscription id means the same everywhere.

Registrations are cluster-wide: the router claims each of its client callees' registrations, and the
cluster tells the router of every registration in the cluster (``Router.arrange_registration``), with the
callees of other nodes as ``Callee`` objects that carry INVOCATIONs to them. So the dealer routes every call
itself (exact, prefix, wildcard; by the invocation policy over the callees of every node); a call nothing
serves makes the cluster check that this node's view is up to date (``settle``) before it fails.

A *cause* is the forwarded event whose listeners are running: every node runs them, so a broadcast they make
is made on every node, and the cause gives it the same *key* (and publication id) everywhere, from which the
nodes tell the copies apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, succeed

from ._ids import MAX_ID

if TYPE_CHECKING:
    from ._call import Call, Callee
    from ._publication import Publication
    from ._registrations import Registration
    from ._session import Session
    from ._store import EventStore
    from ._subscriptions import Subscription

__all__ = [
    "Cause",
    "Cluster",
    "LocalCluster",
    "Member",
    "SessionInfo",
    "SubscriptionInfo",
    "publication_id_for",
]


@dataclass(frozen=True, slots=True)
class Member:
    """A subscriber of a topic somewhere in the cluster (``Topic.presence``, ``on_join``, ``on_leave``):
    its session id, authid and authrole, and whether its session is on this node."""

    session: int
    authid: str | None
    authrole: str | None
    local: bool


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session somewhere in the cluster, as the session meta API describes it."""

    session: int
    authid: str | None
    authrole: str | None
    authmethod: str | None
    authprovider: str | None

    def details(self) -> dict[str, Any]:
        """The spec's session details (``wamp.session.get``, ``wamp.session.on_join``)."""
        return {
            "session": self.session,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": self.authmethod,
            "authprovider": self.authprovider,
        }


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A subscription somewhere in the cluster: its id (the same on every node), topic URI or pattern,
    match policy and creation time (ISO 8601, UTC)."""

    id: int
    uri: str
    match: str
    created: str

    def details(self) -> dict[str, Any]:
        """The spec's ``SubscriptionDetails``."""
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match}


@dataclass(frozen=True, slots=True)
class LostSubscription:
    """What a dead node's subscription held: its members, and whether no live node holds it any more."""

    subscription: SubscriptionInfo
    members: list[Member]
    deleted: bool


def publication_id_for(key: str) -> int:
    """The publication id every node derives from a broadcast's cluster-wide key."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_ID + 1


class Cause:
    """A forwarded event being handled (its cluster-wide ``event_id``), which names what its listeners make.

    The n-th broadcast a source (``"topic"``, ``"app"``, ``"client"``) makes on one topic while handling it
    gets the key ``<event id>:<source>:<topic>:<n>``, and the n-th event of one name it dispatches gets an
    id derived from the same parts: every node handling the event runs the same listeners in the same
    order, so every node comes to the same keys.
    """

    __slots__ = ("event_id", "_ranks")

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        self._ranks: Counter[tuple[str, str]] = Counter()

    def _rank(self, source: str, name: str) -> int:
        ranks = self._ranks
        ranks[source, name] += 1
        return ranks[source, name]

    def key(self, source: str, topic: str) -> str:
        """The key of the next broadcast ``source`` makes on ``topic`` while this event is handled."""
        return f"{self.event_id}:{source}:{topic}:{self._rank(source, topic)}"

    def child_event_id(self, name: str) -> str:
        """The id of the next event ``name`` dispatched while this event is handled."""
        rank = self._rank("event", name)
        return hashlib.sha256(f"{self.event_id}:event:{name}:{rank}".encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"<Cause {self.event_id}>"


class Cluster(Protocol):
    """The other nodes, as a router sees them."""

    #: Whether broadcasts made while a forwarded event is handled need their cluster-wide key (only where
    #: other nodes make them too).
    keys_broadcasts: bool

    def forward(self, name: str, data: dict[str, Any], parent: Cause | None) -> Cause | None:
        """Send the forwarded event ``name`` (``data``: its JSON form) to the other nodes; the cause under
        which this node runs its listeners, or ``None`` when this node handled that event already."""
        ...

    def first_delivery(self, publication: Publication) -> bool:
        """For a keyed publication: whether this node has not delivered that key yet (and now has)."""
        ...

    def announce(self, publication: Publication) -> None:
        """A publication was delivered to this node's subscribers: let the other nodes deliver it."""
        ...

    def claim(self, registration: Registration, callee: Callee) -> Deferred[bool]:
        """Claim cluster-wide that a local client ``callee`` serves ``registration`` (its URI, match and
        invocation policies); fires False when the cluster refuses it (``procedure_already_exists``: a
        ``single`` registration, or another policy, held on another node). Until the claim fires the
        callee serves this node's callers."""
        ...

    def released(self, registration: Registration, callee: Callee) -> None:
        """A local client ``callee`` no longer serves ``registration``."""
        ...

    def settle(self, call: Call) -> Deferred[None]:
        """No registration this node knows of serves ``call``: fires once this node's view of the cluster's
        registrations has every change made before (a registration made on another node a moment ago may
        not have reached it yet); fails with ``WampError`` when the cluster cannot be asked."""
        ...

    # presence: this node's sessions and subscriptions, the other nodes' ones

    @property
    def store(self) -> EventStore | None:
        """Where retained events and event history are kept cluster-wide (``None``: in the router's
        memory)."""
        ...

    #: Whether another node has subscribers of meta topics (then meta events made here go to it).
    wants_meta: bool

    def meta_interest(self, listening: bool) -> None:
        """This node has subscribers of meta topics from now on (or no more)."""
        ...

    def announce_meta(self, publication: Publication, about: tuple[str, str] | None) -> None:
        """A meta event was delivered here: let the other nodes deliver it to their meta subscribers.
        ``about`` is the (URI, match policy) of the subscription a subscription meta event is about."""
        ...

    def joined(self, session: Session) -> None:
        """A session joined this node."""
        ...

    def left(self, session: Session) -> None:
        """A session left this node."""
        ...

    def subscribed(self, subscription: Subscription, session: Session, first: bool) -> Deferred[bool]:
        """A session of this node was added to ``subscription`` (its ``first`` on this node); fires with
        whether that created the subscription in the cluster (no other node held it)."""
        ...

    def unsubscribed(self, subscription: Subscription, session: Session, last: bool) -> Deferred[bool]:
        """A session of this node was removed from ``subscription`` (its ``last`` one here); fires with
        whether no node holds the subscription any more."""
        ...

    def sessions(self) -> Deferred[list[SessionInfo]]:
        """The other nodes' sessions."""
        ...

    def session_count(self) -> Deferred[int]:
        """How many sessions the other nodes have."""
        ...

    def subscriptions(self) -> Deferred[list[SubscriptionInfo]]:
        """The other nodes' subscriptions (not those of meta topics)."""
        ...

    def subscribers(self, subscription_id: int) -> Deferred[list[Member]]:
        """The other nodes' subscribers of a subscription."""
        ...

    def subscriber_count(self, subscription_id: int) -> Deferred[int]:
        """How many subscribers the other nodes have of a subscription."""
        ...


class LocalCluster:
    """A node on its own: nothing to tell anyone, no callee anywhere else, no broadcast to tell apart."""

    keys_broadcasts = False

    def forward(self, name: str, data: dict[str, Any], parent: Cause | None) -> Cause | None:
        return _LOCAL_CAUSE

    def first_delivery(self, publication: Publication) -> bool:
        return True

    def announce(self, publication: Publication) -> None:
        pass

    def claim(self, registration: Registration, callee: Callee) -> Deferred[bool]:
        return succeed(True)

    def released(self, registration: Registration, callee: Callee) -> None:
        pass

    def settle(self, call: Call) -> Deferred[None]:
        return succeed(None)

    wants_meta = False
    store: EventStore | None = None

    def meta_interest(self, listening: bool) -> None:
        pass

    def announce_meta(self, publication: Publication, about: tuple[str, str] | None) -> None:
        pass

    def joined(self, session: Session) -> None:
        pass

    def left(self, session: Session) -> None:
        pass

    def subscribed(self, subscription: Subscription, session: Session, first: bool) -> Deferred[bool]:
        return succeed(first)

    def unsubscribed(self, subscription: Subscription, session: Session, last: bool) -> Deferred[bool]:
        return succeed(last)

    def sessions(self) -> Deferred[list[SessionInfo]]:
        return succeed([])

    def session_count(self) -> Deferred[int]:
        return succeed(0)

    def subscriptions(self) -> Deferred[list[SubscriptionInfo]]:
        return succeed([])

    def subscribers(self, subscription_id: int) -> Deferred[list[Member]]:
        return succeed([])

    def subscriber_count(self, subscription_id: int) -> Deferred[int]:
        return succeed(0)


# What a node on its own handles a forwarded event under: nothing is keyed there, so one cause serves all.
_LOCAL_CAUSE = Cause("local")
