"""A publication: one message on a topic, with who sent it and who may receive it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autobahn.util import rid

if TYPE_CHECKING:
    from ._session import Session


@dataclass(slots=True, eq=False)
class Publication:
    """What the broker delivers: a topic URI, the arguments, and the delivery rules.

    ``publisher`` is the publishing session's id (``None`` for a broadcast made by the app); the
    ``publisher_authid``/``publisher_authrole`` travel with it so that delivery rules and disclosure
    work from identities, not live session objects.
    """

    topic: str
    """The concrete topic URI."""
    args: list[Any] | None = None
    """The positional arguments of the EVENTs (a topic's ``payload`` is the first)."""
    kwargs: dict[str, Any] | None = None
    """The keyword arguments of the EVENTs."""
    id: int = 0
    """The publication id subscribers see (a random one when 0 is given)."""
    publisher: int | None = None
    """The publishing session's id; ``None`` for a broadcast made by the app."""
    publisher_authid: str | None = None
    """The publisher's authid."""
    publisher_authrole: str | None = None
    """The publisher's authrole."""
    exclude_me: bool = True
    """Leave the publisher out of the receivers."""
    disclose_me: bool = False
    """Tell the receivers who published (``details.publisher``...)."""
    exclude: frozenset[int] | None = None
    """Session ids that must not receive it."""
    exclude_authid: frozenset[str] | None = None
    """Authids that must not receive it."""
    exclude_authrole: frozenset[str] | None = None
    """Authroles that must not receive it."""
    eligible: frozenset[int] | None = None
    """Only these session ids may receive it (``None``: everyone)."""
    eligible_authid: frozenset[str] | None = None
    """Only these authids may receive it."""
    eligible_authrole: frozenset[str] | None = None
    """Only these authroles may receive it."""
    retain: bool = False
    """Keep it as its topic's retained event (``PUBLISH`` option ``retain``)."""
    key: str | None = None  # cluster-wide identity of a broadcast made while handling a forwarded event
    source: str = "client"  # who broadcasts: "client", "topic" or "app" (part of the cluster-wide key)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = rid()

    @property
    def payload(self) -> Any:
        """The first positional argument, or ``None`` when there is none."""
        return self.args[0] if self.args else None

    def admits(self, session: Session) -> bool:
        """Whether the delivery rules (publisher exclusion, exclude/eligible lists) admit ``session``."""
        sid = session.id
        if self.exclude_me and sid == self.publisher:
            return False
        if self.exclude is not None and sid in self.exclude:
            return False
        if self.eligible is not None and sid not in self.eligible:
            return False
        return self.admits_identity(session) if self._has_identity_rules else True

    @property
    def only_excludes_publisher(self) -> bool:
        """True when no exclude/eligible rule applies beyond excluding the publisher (the common case,
        which the broker delivers without asking ``admits`` for every subscriber)."""
        return self.exclude is None and self.eligible is None and not self._has_identity_rules

    @property
    def _has_identity_rules(self) -> bool:
        return not (
            self.exclude_authid is None
            and self.exclude_authrole is None
            and self.eligible_authid is None
            and self.eligible_authrole is None
        )

    def admits_identity(self, session: Session) -> bool:
        """Whether the authid/authrole rules alone admit ``session`` (what a later reader of a stored
        publication is judged by: the session-id rules were for the sessions of the moment)."""
        authid, authrole = session.authid, session.authrole
        if self.exclude_authid is not None and authid in self.exclude_authid:
            return False
        if self.exclude_authrole is not None and authrole in self.exclude_authrole:
            return False
        if self.eligible_authid is not None and authid not in self.eligible_authid:
            return False
        if self.eligible_authrole is not None and authrole not in self.eligible_authrole:
            return False
        return True


def session_ids(sessions: Iterable[Session | int] | None) -> frozenset[int] | None:
    """Normalize an exclude/eligible argument (sessions or session ids) to a set of ids."""
    if sessions is None:
        return None
    return frozenset(s if isinstance(s, int) else s.id for s in sessions)


def optional_set(values: Iterable[Any] | None) -> frozenset[Any] | None:
    """A frozen set of the values, or ``None`` when the option was not given."""
    return None if values is None else frozenset(values)
