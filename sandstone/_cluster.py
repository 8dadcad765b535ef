"""The cluster seam: what a router asks of the other nodes, and the single-node default.

A ``Router`` is given a ``Cluster`` (``LocalCluster`` unless a bus runs): it calls only these methods, and the
cluster calls only the router's public methods. ``RedisBus`` (``_bus.py``) is the other implementation.

A *cause* is the forwarded event whose listeners are running: every node runs them, so a broadcast they make
is made on every node, and the cause gives it the same *key* (and publication id) everywhere, from which the
nodes tell the copies apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, succeed

from ._errors import NO_SUCH_PROCEDURE, WampError
from ._ids import MAX_ID

if TYPE_CHECKING:
    from ._call import Call, Caller
    from ._dealer import Registration
    from ._publication import Publication

__all__ = ["Cause", "Cluster", "LocalCluster", "publication_id_for"]


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

    def claim(self, registration: Registration) -> Deferred[bool]:
        """Claim a client's registration cluster-wide; fires False when another node holds its URI."""
        ...

    def released(self, registration: Registration) -> None:
        """A client's registration ended on this node."""
        ...

    def call(self, call: Call) -> None:
        """A call with no callee on this node: route it to the node that has one. The call's caller is
        answered; ``WampError`` may be raised instead when no node can serve it."""
        ...

    def cancel(self, caller: Caller, request: int, mode: str | None) -> bool:
        """Cancel a call of ``caller`` served on another node; False when it is no such call."""
        ...

    def caller_left(self, caller: Caller) -> None:
        """A caller left: its calls served on other nodes are interrupted and forgotten."""
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

    def claim(self, registration: Registration) -> Deferred[bool]:
        return succeed(True)

    def released(self, registration: Registration) -> None:
        pass

    def call(self, call: Call) -> None:
        raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")

    def cancel(self, caller: Caller, request: int, mode: str | None) -> bool:
        return False

    def caller_left(self, caller: Caller) -> None:
        pass


# What a node on its own handles a forwarded event under: nothing is keyed there, so one cause serves all.
_LOCAL_CAUSE = Cause("local")
