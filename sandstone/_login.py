"""REST sessions: ``app.login`` gives a browser a cookie (and other clients a bearer token) that names an
``Identity``; REST handlers read it back with ``app.identity(request)``, and the app's WebSocket accepts it
as WAMP auth method ``cookie``.

Sessions live in a ``SessionStore``; ``MemorySessionStore`` (one process, lost on restart, bounded) is the
default. ``app.logout`` also ends the WAMP sessions opened with the REST session: they remember its
``token_digest``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ._auth import Identity

log = Logger()

SESSION_COOKIE = "sandstone_session"
DEFAULT_TTL = 24 * 3600.0
DEFAULT_MAX_SESSIONS = 100_000
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
_SWEEP_STEP = 4  # expired sessions dropped, at most, per session started
_EVICTION_LOG_INTERVAL = 60.0  # seconds between two log lines about evictions


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
    """Sessions in memory of this process, each expiring ``ttl`` seconds after it started.

    At most ``max_sessions`` are kept: starting one more evicts the oldest (its token stops working at once;
    evictions are logged at info, at most once a minute). Expired sessions are dropped a few at a time as
    new ones start, so no call does more than a bounded amount of work; one session costs about 400 bytes
    (more if its ``Identity`` is large), so the default cap bounds the store to some 40 MB.
    """

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        clock: IReactorTime | None = None,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, not {max_sessions!r}")
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        # Oldest first: every session gets the same ttl, so the first entries are also the first to expire.
        self._sessions: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._evicted = 0  # evictions not logged yet
        self._next_eviction_log = 0.0

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, identity: Identity) -> str:
        now = self._now()
        self._sweep(now)
        token = secrets.token_urlsafe(32)
        sessions = self._sessions
        sessions[token] = (identity, now + self.ttl)
        if len(sessions) > self.max_sessions:
            self._evict(now)
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
            from twisted.internet import reactor as clock
        return clock.seconds()  # type: ignore[union-attr]

    def _sweep(self, now: float) -> None:
        """Drop up to ``_SWEEP_STEP`` expired sessions from the oldest end: more than one per session started,
        so sessions nobody uses again never pile up, and never a scan of the whole store."""
        sessions = self._sessions
        for _ in range(_SWEEP_STEP):
            if not sessions:
                return
            token = next(iter(sessions))
            if now < sessions[token][1]:
                return
            del sessions[token]

    def _evict(self, now: float) -> None:
        """Over the cap: drop the oldest sessions; say so now and then."""
        sessions = self._sessions
        while len(sessions) > self.max_sessions:
            sessions.popitem(last=False)
            self._evicted += 1
        if now >= self._next_eviction_log:
            log.info(
                "REST session store full ({max_sessions} sessions): evicted the {count} oldest since the "
                "last report",
                max_sessions=self.max_sessions,
                count=self._evicted,
            )
            self._evicted = 0
            self._next_eviction_log = now + _EVICTION_LOG_INTERVAL


def session_tokens(cookie: str | None, authorization: str | None) -> list[str]:
    """The session tokens a request carries: its bearer token first, then its session cookies."""
    tokens = []
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            tokens.append(credentials.strip())
    if cookie:
        tokens.extend(_session_cookies(cookie))
    return tokens


def _session_cookies(header: str) -> list[str]:
    """The values of every session cookie in a Cookie header (or several joined by ``,``), in order.

    Each pair goes to its own ``SimpleCookie``: one stops at the first malformed pair and keeps only the last
    of two cookies of one name, so a broken neighbour would hide our cookie, or one of two paths' sessions.
    """
    values = []
    for pair in header.replace(",", ";").split(";"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(pair)
        except CookieError:
            continue
        morsel = jar.get(SESSION_COOKIE)
        if morsel is not None and morsel.value:
            values.append(morsel.value)
    return values


def lookup(store: SessionStore, tokens: list[str]) -> Identity | None:
    """The identity of the first live session among ``tokens``."""
    found = _first_live(store, tokens)
    return found[1] if found is not None else None


def _first_live(store: SessionStore, tokens: list[str]) -> tuple[str, Identity] | None:
    for token in tokens:
        identity = store.get(token)
        if identity is not None:
            return token, identity
    return None


def login_from_headers(store: SessionStore, headers: Mapping[str, str] | None) -> tuple[str, Identity] | None:
    """The token and identity of a WebSocket handshake's REST session (headers keyed in lower case), or
    ``None``."""
    if not headers:
        return None
    return _first_live(store, session_tokens(headers.get("cookie"), headers.get("authorization")))


def token_digest(token: str) -> str:
    """What a WAMP session keeps of the REST session it was opened with: enough to be found by ``logout``,
    useless as a credential."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


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


def logout(store: SessionStore, request: Any) -> list[str]:
    """End the request's REST sessions and clear the cookie; returns the tokens the request carried."""
    tokens = request_tokens(request)
    for token in tokens:
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
    return tokens
