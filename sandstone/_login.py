"""REST sessions: ``app.login`` gives a browser a cookie (and other clients a bearer token) that names an
``Identity``; REST handlers read it back with ``app.identity(request)``, and the app's WebSocket accepts it
as WAMP auth method ``cookie``.

Sessions live in a ``SessionStore``; ``MemorySessionStore`` (one process, lost on restart) is the default.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ._auth import Identity

SESSION_COOKIE = "sandstone_session"
DEFAULT_TTL = 24 * 3600.0
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


class SessionStore(Protocol):
    """Where REST sessions live: token → identity, until they expire or are deleted.

    Methods are synchronous: a store shared between nodes (Redis) would keep a local cache in front.
    """

    def create(self, identity: Identity) -> str:
        """Start a session for ``identity``; returns its token (unguessable, URL-safe)."""
        ...

    def get(self, token: str) -> Identity | None:
        """The identity of a live session, or ``None`` (unknown or expired token)."""
        ...

    def delete(self, token: str) -> None:
        """End a session (unknown tokens are ignored)."""
        ...


class MemorySessionStore:
    """Sessions in a dict of this process, each expiring ``ttl`` seconds after it started."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: IReactorTime | None = None) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: dict[str, tuple[Identity, float]] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, identity: Identity) -> str:
        now = self._now()
        self._sweep(now)
        token = secrets.token_urlsafe(32)
        self._sessions[token] = (identity, now + self.ttl)
        return token

    def get(self, token: str) -> Identity | None:
        entry = self._sessions.get(token)
        if entry is None:
            return None
        identity, expires = entry
        if self._now() >= expires:
            del self._sessions[token]
            return None
        return identity

    def delete(self, token: str) -> None:
        self._sessions.pop(token, None)

    def _now(self) -> float:
        clock = self._clock
        if clock is None:  # the reactor, looked up late: creating an app must not install one
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        return clock.seconds()  # type: ignore[union-attr]

    def _sweep(self, now: float) -> None:
        """Drop expired sessions now and then, so that sessions nobody uses again do not pile up."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.ttl, 60.0)
        for token in [t for t, (_, expires) in self._sessions.items() if now >= expires]:
            del self._sessions[token]


def session_tokens(cookie: str | None, authorization: str | None) -> list[str]:
    """The session tokens a request carries: its bearer token first, then its session cookies."""
    tokens = []
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            tokens.append(credentials.strip())
    if cookie:
        for part in cookie.replace(",", ";").split(";"):
            name, sep, value = part.partition("=")
            if sep and name.strip() == SESSION_COOKIE and value.strip():
                tokens.append(value.strip().strip('"'))
    return tokens


def lookup(store: SessionStore, tokens: list[str]) -> Identity | None:
    """The identity of the first live session among ``tokens``."""
    for token in tokens:
        identity = store.get(token)
        if identity is not None:
            return identity
    return None


def identity_from_headers(store: SessionStore, headers: Mapping[str, str] | None) -> Identity | None:
    """The identity of a WebSocket handshake's REST session (headers keyed in lower case), or ``None``."""
    if not headers:
        return None
    return lookup(store, session_tokens(headers.get("cookie"), headers.get("authorization")))


def request_tokens(request: Any) -> list[str]:
    """The session tokens of a twisted.web request."""
    headers = request.requestHeaders
    cookie = b"; ".join(headers.getRawHeaders(b"cookie", [])).decode("latin-1")
    authorization = headers.getRawHeaders(b"authorization", [None])[0]
    return session_tokens(cookie, authorization.decode("latin-1") if authorization else None)


def login(store: SessionStore, request: Any, identity: Identity) -> str:
    """Start a REST session: set its cookie (HttpOnly, SameSite=Lax, Secure over TLS); return its token."""
    token = store.create(identity)
    request.addCookie(
        SESSION_COOKIE, token, path="/", httpOnly=True, sameSite="lax", secure=bool(request.isSecure())
    )
    return token


def logout(store: SessionStore, request: Any) -> None:
    """End the request's REST sessions and clear the cookie."""
    for token in request_tokens(request):
        store.delete(token)
    request.addCookie(
        SESSION_COOKIE,
        "",
        path="/",
        expires=_EXPIRED,
        max_age="0",
        httpOnly=True,
        sameSite="lax",
        secure=bool(request.isSecure()),
    )
