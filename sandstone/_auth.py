"""Authentication: who a client is, and how the router finds out while opening a WAMP session.

Methods, in the order the client lists them in HELLO (the first one the app supports wins):

- ``anonymous``: when the app allows it (``Sandstone(anonymous=True)``); a HELLO offering no method at all
  means anonymous.
- ``ticket``: CHALLENGE, then the client's ticket goes to the app's ``@app.authenticator`` hook.
- ``wampcra``: the app's ``@app.wampcra_user`` hook gives the user's secret (optionally salted), the router
  sends a fresh signed-challenge string and checks the client's HMAC-SHA256 signature.
- ``cryptosign``: the client announces an Ed25519 public key; the app's ``@app.cryptosign_user`` hook (or
  a ``CryptosignPrincipals`` table) says who holds it, and the router checks the client's signature of a
  fresh random challenge, bound to the TLS connection when the client asks (see ``_cryptosign.py``).
- ``cookie``: no CHALLENGE; the WebSocket handshake carried a REST session (cookie or bearer token) started
  by ``app.login`` (see ``_login.py``).

Every refusal of credentials is the same ABORT (``wamp.error.authentication_denied`` with ``DENIED_TEXT``),
whether the user exists or not, the secret is wrong, or a hook failed. A WAMP-CRA challenge tells nothing
either: it names no role, and an unknown authid gets one shaped by ``Authentication.wampcra_decoy``. An
unknown public key gets a cryptosign challenge like a known one, and its signature is checked the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autobahn.wamp.auth import compute_wcs, derive_key
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._calling import invoke
from ._cryptosign import (
    CRYPTOSIGN,
    TLS_UNIQUE,
    CryptosignDetails,
    CryptosignLookup,
    CryptosignPrincipals,
    CryptosignUnavailable,
    CryptosignUser,
    SignedChallenge,
    parse_public_key,
    session_channel,
    shown,
)
from ._errors import AUTHENTICATION_DENIED, NO_AUTH_METHOD
from ._login import SessionStore, login_from_headers, token_digest

log = Logger()

ANONYMOUS = "anonymous"
TICKET = "ticket"
WAMPCRA = "wampcra"
COOKIE = "cookie"

DENIED_TEXT = "authentication failed"
"""The one text of every ``authentication_denied`` ABORT, so that a refusal tells nothing about the user."""

PROVIDER = "dynamic"  # identities that came from the app's hooks
COOKIE_PROVIDER = "cookie"  # identities that came from a REST session
CHALLENGE_AUTHROLE = None
"""The ``authrole`` of every WAMP-CRA challenge string: the role is told in WELCOME, once the signature is
checked. (Clients only sign the string; the field stays so that it keeps the shape other routers give it.)"""


@dataclass(frozen=True)
class Identity:
    """Who a client is: its WAMP ``authid`` and ``authrole``."""

    authid: str
    authrole: str


@dataclass(frozen=True)
class Credentials:
    """What a client presented to authenticate, as given to ``@app.authenticator``.

    ``method`` is the WAMP auth method (``"ticket"``), ``authid`` the one announced in HELLO (``None`` if the
    client sent none), ``secret`` the ticket, ``authextra`` the HELLO's ``authextra`` (never trust it).
    """

    method: str
    authid: str | None
    secret: str
    authextra: Mapping[str, Any] = field(default_factory=dict)

    def secret_is(self, expected: str) -> bool:
        """Compare the presented secret with ``expected`` in constant time."""
        return hmac.compare_digest(self.secret.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class CraUser:
    """A WAMP-CRA user, as ``@app.wampcra_user`` returns it.

    Without ``salt``, ``secret`` is the shared secret itself. With ``salt``, ``secret`` is the key derived
    from the user's password by PBKDF2 (``autobahn.wamp.auth.derive_key(password, salt, iterations,
    keylen)``, what ``CraUser.from_password`` computes): store that, never the password. The client gets
    ``salt``, ``iterations`` and ``keylen`` in the CHALLENGE and derives the same key from the password.
    """

    secret: str | bytes
    authrole: str
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32

    @classmethod
    def from_password(
        cls,
        password: str,
        authrole: str,
        salt: str | None = None,
        iterations: int = 1000,
        keylen: int = 32,
    ) -> CraUser:
        """A salted user whose stored secret is derived from ``password`` (a random salt unless given)."""
        salt = salt if salt is not None else secrets.token_urlsafe(16)
        key = derive_key(password, salt, iterations, keylen).decode("ascii")
        return cls(key, authrole, salt, iterations, keylen)


@dataclass(frozen=True)
class CraDecoy:
    """What the WAMP-CRA challenge of an unknown authid looks like, so that it looks like a real user's.

    Salted by default, with ``CraUser.from_password``'s defaults: every unknown authid gets a salt derived
    from ``key`` and the authid (the same on every attempt, as a real user's), ``iterations`` and ``keylen``.
    Set them to your users' parameters; ``salted=False`` when your users are unsalted (``CraUser(secret,
    role)``). ``key`` is random per process: give every node of a cluster the same one, or an unknown authid's
    salt would change from node to node while a real user's does not.
    """

    salted: bool = True
    iterations: int = 1000
    keylen: int = 32
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def user(self, authid: str) -> CraUser:
        """The stand-in user for an unknown ``authid``: its salt is as long as ``CraUser.from_password``'s
        random ones, its secret (which no client knows) as long as a real user's derived key, so that the
        challenge and the signature check are those of a real user. It has no role: it never gets in."""
        message = authid.encode("utf-8", "surrogatepass")
        # One PBKDF2 round is an HMAC of any length: 16 bytes of salt, then the secret.
        material = hashlib.pbkdf2_hmac("sha256", self.key, message, 1, 16 + self.keylen)
        secret = base64.b64encode(material[16:]).decode("ascii")
        if not self.salted:
            return CraUser(secret, "")
        salt = base64.urlsafe_b64encode(material[:16]).rstrip(b"=").decode("ascii")
        return CraUser(secret, "", salt, self.iterations, self.keylen)


Authenticator = Callable[[Credentials], Any]
"""``f(credentials) -> Identity | None``, plain, ``async def`` or returning a Deferred."""
CraUserLookup = Callable[[str], Any]
"""``f(authid) -> CraUser | None``, plain, ``async def`` or returning a Deferred."""


class AuthFailure(Exception):
    """Opening the session failed: ABORT with ``reason`` and ``text``."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason, text)
        self.reason = reason
        self.text = text


def denied() -> AuthFailure:
    """The one refusal of credentials."""
    return AuthFailure(AUTHENTICATION_DENIED, DENIED_TEXT)


@dataclass(frozen=True)
class Accepted:
    """Authentication succeeded: WELCOME with this identity, method and provider.

    ``login`` is the ``token_digest`` of the REST session a ``cookie`` session was opened with (``None`` for
    the other methods): ``app.logout`` ends the WAMP sessions opened with its token.
    """

    identity: Identity
    method: str
    provider: str
    login: str | None = None
    authextra: Mapping[str, Any] | None = None  # WELCOME's authextra, if the method gives one


@dataclass(frozen=True)
class Challenge:
    """A CHALLENGE to send; ``verify(signature, extra)`` checks the client's AUTHENTICATE.

    ``verify`` returns a Deferred firing with ``Accepted`` or failing with ``AuthFailure``.
    """

    method: str
    extra: dict[str, Any]
    verify: Callable[[str, Mapping[str, Any]], Deferred[Accepted]]


@dataclass(frozen=True)
class Hello:
    """What HELLO says about authentication, and what the connection carried."""

    authmethods: list[str]
    authid: str | None
    authextra: Mapping[str, Any]
    headers: Mapping[str, str] | None
    session_id: int
    realm: str = ""
    connection: object = None  # the Twisted transport under the WAMP one: TLS or not, for channel binding


class Authentication:
    """An app's authentication setup: the methods it supports, its hooks and its REST session store.

    ``wampcra_decoy`` shapes the challenge of unknown WAMP-CRA authids (see ``CraDecoy``).
    """

    def __init__(
        self, sessions: SessionStore, *, anonymous: bool = False, wampcra_decoy: CraDecoy | None = None
    ) -> None:
        self.anonymous = anonymous
        self.sessions = sessions
        self.authenticator: Authenticator | None = None
        self.wampcra_user: CraUserLookup | None = None
        self.wampcra_decoy = wampcra_decoy if wampcra_decoy is not None else CraDecoy()
        self.cryptosign_user: CryptosignLookup | None = None

    def methods(self) -> list[str]:
        """The auth methods this app supports now."""
        supported = [ANONYMOUS] if self.anonymous else []
        if self.authenticator is not None:
            supported.append(TICKET)
        if self.wampcra_user is not None:
            supported.append(WAMPCRA)
        if self.cryptosign_user is not None:
            supported.append(CRYPTOSIGN)
        return [*supported, COOKIE]

    def start(self, hello: Hello) -> Deferred[Accepted | Challenge]:
        """Pick the first method the client offers that the app supports and begin it.

        Fires with ``Accepted`` (WELCOME at once) or a ``Challenge``; fails with ``AuthFailure``.
        """
        offered = hello.authmethods or [ANONYMOUS]
        unavailable: str | None = None  # why cryptosign could not be done on this connection
        for method in offered:
            if method == ANONYMOUS and self.anonymous:
                authid = f"anonymous-{secrets.token_hex(8)}"
                return succeed(Accepted(Identity(authid, ANONYMOUS), ANONYMOUS, "static"))
            if method == TICKET and self.authenticator is not None:
                return succeed(Challenge(TICKET, {}, self._ticket_verifier(hello)))
            if method == WAMPCRA and self.wampcra_user is not None:
                return self._wampcra_challenge(self.wampcra_user, hello)
            if method == CRYPTOSIGN and self.cryptosign_user is not None:
                try:  # what the router cannot give makes the method unavailable: try the next one
                    channel = session_channel(hello.authextra, hello.connection)
                except CryptosignUnavailable as exc:
                    unavailable = unavailable or str(exc)
                    continue
                return self._cryptosign_challenge(self.cryptosign_user, hello, channel)
            if method == COOKIE:
                found = login_from_headers(self.sessions, hello.headers)
                if found is not None:
                    token, identity = found
                    return succeed(Accepted(identity, COOKIE, COOKIE_PROVIDER, token_digest(token)))
        if COOKIE in offered:
            return fail(denied())  # the method is supported; the handshake carried no valid session
        if unavailable is not None:
            return fail(AuthFailure(NO_AUTH_METHOD, unavailable))
        return fail(AuthFailure(NO_AUTH_METHOD, f"none of the auth methods {offered} is offered here"))

    # ticket

    def _ticket_verifier(self, hello: Hello) -> Callable[[str, Mapping[str, Any]], Deferred[Accepted]]:
        hook = self.authenticator

        def verify(ticket: str, extra: Mapping[str, Any]) -> Deferred[Accepted]:
            credentials = Credentials(TICKET, hello.authid, ticket, dict(hello.authextra))
            d = call_hook(hook, credentials)

            def checked(identity: object) -> Accepted:
                if identity is None:
                    raise denied()
                if not isinstance(identity, Identity):
                    log.error(
                        "the authenticator {hook!r} returned {value!r}, not an Identity or None",
                        hook=hook,
                        value=identity,
                    )
                    raise denied()
                return Accepted(identity, TICKET, PROVIDER)

            return d.addCallback(checked).addErrback(_hook_failed, hook)

        return verify

    # WAMP-CRA

    def _wampcra_challenge(self, lookup: CraUserLookup, hello: Hello) -> Deferred[Accepted | Challenge]:
        authid = hello.authid
        if not authid:
            return fail(denied())

        def found(user: object) -> Challenge:
            if user is not None and not isinstance(user, CraUser):
                log.error(
                    "the wampcra_user hook {hook!r} returned {value!r}, not a CraUser or None",
                    hook=lookup,
                    value=user,
                )
                raise denied()
            return self._cra_challenge(authid, user, hello.session_id)

        d = call_hook(lookup, authid).addCallback(found).addErrback(_hook_failed, lookup)
        return d  # type: ignore[return-value]

    def _cra_challenge(self, authid: str, user: CraUser | None, session_id: int) -> Challenge:
        """A challenge for a known user, or one shaped by ``wampcra_decoy`` for an unknown user (always
        refused after the same signature check)."""
        challenge = json.dumps(
            {
                "authid": authid,
                "authrole": CHALLENGE_AUTHROLE,
                "authmethod": WAMPCRA,
                "authprovider": PROVIDER,
                "nonce": secrets.token_urlsafe(24),
                "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "session": session_id,
            }
        )
        decoy = self.wampcra_decoy.user(authid)  # for a real user too: the same work and time for both
        shown = user if user is not None else decoy
        extra: dict[str, Any] = {"challenge": challenge}
        if shown.salt is not None:
            extra.update(salt=shown.salt, iterations=shown.iterations, keylen=shown.keylen)

        def verify(signature: str, _extra: Mapping[str, Any]) -> Deferred[Accepted]:
            expected = compute_wcs(shown.secret, challenge)
            matches = hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))
            if user is None or not matches:
                return fail(denied())
            return succeed(Accepted(Identity(authid, user.authrole), WAMPCRA, PROVIDER))

        return Challenge(WAMPCRA, extra, verify)

    # WAMP-Cryptosign

    def _cryptosign_challenge(
        self, lookup: CryptosignLookup, hello: Hello, channel: bytes | None
    ) -> Deferred[Accepted | Challenge]:
        """Look the public key up, then challenge: a known key and an unknown one get the same CHALLENGE and
        the same signature check; only then is the unknown one refused."""
        key = parse_public_key(hello.authextra.get("pubkey"))
        if key is None:
            log.info(
                "cryptosign HELLO of session {session_id} refused: authextra.pubkey {pubkey} is not an "
                "Ed25519 public key (64 hex digits)",
                session_id=hello.session_id,
                pubkey=shown(hello.authextra.get("pubkey")),
            )
            return fail(denied())
        pubkey, public_key = key
        binding = None if channel is None else TLS_UNIQUE
        details = CryptosignDetails(hello.authid, dict(hello.authextra), binding)
        provider = "static" if isinstance(lookup, CryptosignPrincipals) else PROVIDER

        def found(user: object) -> Challenge:
            if user is not None and not isinstance(user, CryptosignUser):
                log.error(
                    "the cryptosign_user hook {hook!r} returned {value!r}, not a CryptosignUser or None",
                    hook=lookup,
                    value=user,
                )
                raise denied()
            challenge = SignedChallenge(channel, binding)

            def verify(signature: str, _extra: Mapping[str, Any]) -> Deferred[Accepted]:
                problem = challenge.problem(public_key, signature)
                if problem is None and user is None:
                    problem = "no user holds this public key"
                if problem is not None:
                    log.info(
                        "cryptosign AUTHENTICATE of session {session_id} with public key {pubkey} refused: "
                        "{problem}",
                        session_id=hello.session_id,
                        pubkey=pubkey,
                        problem=problem,
                    )
                    return fail(denied())
                assert user is not None
                identity = Identity(user.authid, user.authrole)
                return succeed(Accepted(identity, CRYPTOSIGN, provider, authextra=user.extra))

            return Challenge(CRYPTOSIGN, challenge.extra, verify)

        d = (
            call_hook(lookup, pubkey, hello.realm, details)
            .addCallback(found)
            .addErrback(_hook_failed, lookup)
        )
        return d  # type: ignore[return-value]


def call_hook(hook: Callable[..., Any] | None, *args: Any) -> Deferred[Any]:
    """Call an app hook that may be plain, ``async def`` or return a Deferred; always a Deferred."""
    if hook is None:
        return fail(denied())

    return maybeDeferred(invoke, hook, *args)


def _hook_failed(failure: Failure, hook: object) -> Failure:
    """An exception in an app hook is logged and becomes the usual refusal."""
    if failure.check(AuthFailure):
        return failure
    if not failure.check(CancelledError):
        log.failure("authentication hook {hook!r} failed", failure, hook=hook)
    return Failure(denied())
