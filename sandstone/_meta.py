"""The session meta API: the procedures the router implements in the reserved ``wamp.`` namespace
(``wamp.session.count``, ``wamp.session.list``, ``wamp.session.get``) over the sessions of one router."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import NO_SUCH_SESSION, WampError

if TYPE_CHECKING:
    from ._router import Router
    from ._session import Session


def meta_procedures(router: Router) -> dict[str, Callable[..., Any]]:
    """``wamp.session.count``, ``wamp.session.list`` and ``wamp.session.get`` over this router's sessions."""

    def selected(filter_authroles: list[str] | None) -> list[Session]:
        sessions = list(router.sessions.values())
        if filter_authroles is None:
            return sessions
        return [s for s in sessions if s.authrole in filter_authroles]

    def count(filter_authroles: list[str] | None = None) -> int:
        return len(selected(filter_authroles))

    def session_list(filter_authroles: list[str] | None = None) -> list[int]:
        return [s.id for s in selected(filter_authroles)]

    def get(session_id: int) -> dict[str, Any]:
        session = router.sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None:
            raise WampError(NO_SUCH_SESSION, f"no session {session_id!r} on this router")
        return {
            "session": session.id,
            "authid": session.authid,
            "authrole": session.authrole,
            "authmethod": session.authmethod,
        }

    return {"wamp.session.count": count, "wamp.session.list": session_list, "wamp.session.get": get}
