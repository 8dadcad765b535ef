"""WAMP-Cryptosign: a client proves it holds the Ed25519 private key of the public key it announces.

The client's HELLO carries ``authextra.pubkey`` (32 bytes, hex). The router looks the key up (the app's
``@app.cryptosign_user`` hook, or a ``CryptosignPrincipals`` table) and sends 32 fresh random bytes in
``CHALLENGE.extra.challenge`` (hex). The client answers with the Ed25519 signature of the challenge (64
bytes) followed by the 32 bytes it signed, in hex. With ``authextra.channel_binding: "tls-unique"`` it signs
the challenge XORed with the TLS channel id (the SHA-256 of the client's TLS Finished message, as
autobahn-python computes it), so that the signature is worth nothing on another TLS connection.

Ed25519 is ``cryptography``'s; this module only checks formats, keeps the principals and finds the channel.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from twisted.internet.interfaces import ISystemHandle

from ._payload import value_problem

CRYPTOSIGN = "cryptosign"
TLS_UNIQUE = "tls-unique"

_KEY_BYTES = 32
_CHALLENGE_BYTES = 32
_SIGNATURE_BYTES = 64
_TLS_UNIQUE_VERSIONS = ("TLSv1.2",)  # tls-unique is undefined for TLS 1.3 (RFC 8446, appendix C.5)


@dataclass(frozen=True)
class CryptosignUser:
    """Who the holder of a public key is, as ``@app.cryptosign_user`` returns it.

    ``extra``, if given, is sent to the client in WELCOME's ``authextra`` (values every WAMP serializer
    carries: no datetimes or sets).
    """

    authid: str
    authrole: str
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("authid", "authrole"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"CryptosignUser {name} must be a non-empty string, got {value!r}")
        if self.extra is not None:
            problem = value_problem(dict(self.extra), "extra")
            if problem is not None:
                raise ValueError(f"CryptosignUser {self.authid!r}: {problem}")


@dataclass(frozen=True)
class CryptosignDetails:
    """What the HELLO said besides the public key, as given to ``@app.cryptosign_user``.

    ``authid`` is the one the client asked for (``None`` if it named none); ``authextra`` the HELLO's
    ``authextra`` (never trust it beyond the public key, which the signature proves); ``channel_binding``
    ``"tls-unique"`` when the signature will be bound to the TLS connection, else ``None``.
    """

    authid: str | None
    authextra: Mapping[str, Any] = field(default_factory=dict)
    channel_binding: str | None = None


PrincipalTable = Mapping[str, tuple[str, str] | CryptosignUser]
"""``{pubkey_hex: ("authid", "authrole")}``, or ``CryptosignUser`` values."""

CryptosignLookup = Callable[[str, str, CryptosignDetails], Any]
"""``f(pubkey_hex, realm, details) -> CryptosignUser | None``: plain, ``async def`` or Deferred-returning."""


class CryptosignPrincipalsError(ValueError):
    """A principals table (or its file) is not usable: the message says which entry and why."""


class CryptosignPrincipals:
    """A fixed table of the public keys allowed in: ``{pubkey_hex: ("authid", "authrole")}`` (or
    ``CryptosignUser`` values). It is a ``@app.cryptosign_user`` lookup itself.

    A HELLO naming an ``authid`` other than the key's is refused, as is a key limited to another realm
    (see ``from_file``).
    """

    def __init__(self, principals: PrincipalTable) -> None:
        self._users: dict[str, tuple[CryptosignUser, str | None]] = {}
        for pubkey, value in principals.items():
            user = value if isinstance(value, CryptosignUser) else _user_from_pair(pubkey, value)
            self._add(pubkey, user, None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CryptosignPrincipals:
        """Load a JSON file: either sandstone's ``{"<pubkey hex>": {"authid": "...", "authrole": "..."}}``,
        or Crossbar's ``cryptosign`` block as it is in a Crossbar config, ``{"type": "static", "principals":
        {"<authid>": {"role": "...", "authorized_keys": ["<pubkey hex>", ...], "realm": "..."}}}`` (a
        principal with a ``realm`` is let in on that realm only)."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as err:
            raise CryptosignPrincipalsError(f"cannot read cryptosign principals {path}: {err}") from None
        except ValueError as err:
            raise CryptosignPrincipalsError(
                f"cryptosign principals {path} is not valid JSON: {err}"
            ) from None
        try:
            return cls._from_json(data)
        except CryptosignPrincipalsError as err:
            raise CryptosignPrincipalsError(f"cryptosign principals {path}: {err}") from None

    @classmethod
    def _from_json(cls, data: object) -> CryptosignPrincipals:
        if not isinstance(data, dict):
            raise CryptosignPrincipalsError("expected a JSON object")
        if "principals" in data:
            return cls._from_crossbar(data)
        table = cls({})
        for pubkey, entry in data.items():
            if not isinstance(entry, dict) or set(entry) - {"authid", "authrole", "extra"}:
                raise CryptosignPrincipalsError(
                    f'key {pubkey!r}: expected {{"authid": "...", "authrole": "..."}}, got {entry!r}'
                )
            table._add(
                pubkey, _user(pubkey, entry.get("authid"), entry.get("authrole"), entry.get("extra")), None
            )
        return table

    @classmethod
    def _from_crossbar(cls, data: dict[str, Any]) -> CryptosignPrincipals:
        kind = data.get("type", "static")
        if kind != "static":
            raise CryptosignPrincipalsError(f'only "type": "static" principals can be loaded, not {kind!r}')
        principals = data["principals"]
        if not isinstance(principals, dict):
            raise CryptosignPrincipalsError('"principals" must be an object of authid -> principal')
        table = cls({})
        for authid, principal in principals.items():
            keys = principal.get("authorized_keys") if isinstance(principal, dict) else None
            if not isinstance(keys, list) or not keys:
                raise CryptosignPrincipalsError(f"principal {authid!r}: no authorized_keys list")
            realm = principal.get("realm")
            if realm is not None and not isinstance(realm, str):
                raise CryptosignPrincipalsError(f"principal {authid!r}: realm must be a string")
            for pubkey in keys:
                table._add(
                    pubkey, _user(pubkey, authid, principal.get("role"), principal.get("extra")), realm
                )
        return table

    def _add(self, pubkey: object, user: CryptosignUser, realm: str | None) -> None:
        key = parse_public_key(pubkey)
        if key is None:
            raise CryptosignPrincipalsError(f"{pubkey!r} is not an Ed25519 public key (64 hex digits)")
        if key[0] in self._users:
            raise CryptosignPrincipalsError(f"public key {key[0]} is listed twice")
        self._users[key[0]] = (user, realm)

    def __call__(self, pubkey: str, realm: str, details: CryptosignDetails) -> CryptosignUser | None:
        found = self._users.get(pubkey)
        if found is None:
            return None
        user, only_realm = found
        if only_realm is not None and only_realm != realm:
            return None
        if details.authid is not None and details.authid != user.authid:
            return None
        return user

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __repr__(self) -> str:
        return f"<CryptosignPrincipals of {len(self._users)} keys>"


def _user_from_pair(pubkey: str, value: object) -> CryptosignUser:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise CryptosignPrincipalsError(f'key {pubkey!r}: expected ("authid", "authrole"), got {value!r}')
    return _user(pubkey, value[0], value[1], None)


def _user(pubkey: object, authid: object, authrole: object, extra: object) -> CryptosignUser:
    if extra is not None and not isinstance(extra, dict):
        raise CryptosignPrincipalsError(f"key {pubkey!r}: extra must be an object")
    try:
        return CryptosignUser(authid, authrole, extra)  # type: ignore[arg-type]  # checked there
    except ValueError as err:
        raise CryptosignPrincipalsError(f"key {pubkey!r}: {err}") from None


def parse_public_key(value: object) -> tuple[str, Ed25519PublicKey] | None:
    """``(lower-case hex, key)`` for a public key given as 64 hex digits, ``None`` for anything else."""
    if not isinstance(value, str) or len(value) != 2 * _KEY_BYTES:
        return None
    try:
        raw = binascii.unhexlify(value)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        return None
    return raw.hex(), key


class CryptosignUnavailable(Exception):
    """The client asks for what cryptosign cannot give here (the message says what and why)."""


def session_channel(authextra: Mapping[str, Any], connection: object) -> bytes | None:
    """The channel id the client's signature is bound to (``None``: not bound), for the HELLO's
    ``authextra`` on ``connection``. Raises ``CryptosignUnavailable`` for what the client asks and this
    router cannot do: router authentication (a non-null ``authextra.challenge``), or a channel binding the
    connection cannot give (see ``channel_id``)."""
    if authextra.get("challenge") is not None:
        raise CryptosignUnavailable(
            "cryptosign router authentication (authextra.challenge) is not supported here: this router has "
            "no key of its own to sign with"
        )
    return channel_id(authextra.get("channel_binding"), connection)


def channel_id(binding: object, connection: object) -> bytes | None:
    """The 32-byte id of ``connection`` for ``binding`` (``None``: no binding asked for).

    Only ``"tls-unique"`` on a TLS 1.2 connection: the SHA-256 of the client's Finished message, as
    autobahn-python and Crossbar compute it. Raises ``CryptosignUnavailable`` otherwise, rather than
    binding to something the client cannot compute or that is not bound to the connection at all.
    """
    if binding is None:
        return None
    if binding != TLS_UNIQUE:
        raise CryptosignUnavailable(
            f"cryptosign channel binding {shown(binding)} is not supported here (only {TLS_UNIQUE!r}, on TLS "
            "1.2)"
        )
    tls = _tls_connection(connection)
    if tls is None:
        raise CryptosignUnavailable(
            f"cryptosign channel binding {TLS_UNIQUE!r} needs a TLS connection to this server, and this one "
            "is not TLS (or TLS ends before it, at a proxy)"
        )
    version = tls.get_protocol_version_name()
    if version not in _TLS_UNIQUE_VERSIONS:
        raise CryptosignUnavailable(
            f"cryptosign channel binding {TLS_UNIQUE!r} is undefined for {version} (RFC 8446, C.5): "
            "connect with TLS 1.2, or without channel_binding"
        )
    finished = tls.get_peer_finished()  # a server's peer is the client: its Finished comes first
    if not finished:
        raise CryptosignUnavailable(f"the TLS handshake is not complete: no {TLS_UNIQUE!r} yet")
    return hashlib.sha256(finished).digest()


def _tls_connection(connection: object) -> Any:
    """The pyOpenSSL connection under a Twisted TLS transport (``ISystemHandle.getHandle``), or ``None``."""
    if not ISystemHandle.providedBy(connection):
        return None
    try:
        from OpenSSL.SSL import Connection
    except ImportError:  # no pyOpenSSL, no TLS in Twisted
        return None
    handle = connection.getHandle()
    return handle if isinstance(handle, Connection) else None


def shown(value: object, limit: int = 80) -> str:
    """A client's value as a log line or an ABORT shows it: a string, cut if long, else its type, so that a
    client cannot flood either."""
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    return repr(value if len(value) <= limit else value[:limit] + "...")


class SignedChallenge:
    """One CHALLENGE: 32 fresh random bytes, which the client signs (XORed with ``channel``, when bound).

    ``challenge`` replaces the random bytes, for tests (the spec's test vectors) only.
    """

    def __init__(
        self, channel: bytes | None = None, binding: str | None = None, *, challenge: bytes | None = None
    ) -> None:
        self.challenge = secrets.token_bytes(_CHALLENGE_BYTES) if challenge is None else challenge
        self._binding = binding
        self._expected = (
            self.challenge
            if channel is None
            else bytes(a ^ b for a, b in zip(self.challenge, channel, strict=True))
        )

    @property
    def extra(self) -> dict[str, Any]:
        """The CHALLENGE's ``extra``: the challenge in hex and the channel binding in use (or ``None``)."""
        return {"challenge": self.challenge.hex(), "channel_binding": self._binding}

    def problem(self, key: Ed25519PublicKey, signature: object) -> str | None:
        """Why ``signature`` (AUTHENTICATE's, hex) is not ``key``'s signature of this challenge; ``None`` if
        it is. Malformed answers are refused before any signature check."""
        if not isinstance(signature, str) or len(signature) != 2 * (_SIGNATURE_BYTES + _CHALLENGE_BYTES):
            return (
                f"the signature is not {_SIGNATURE_BYTES + _CHALLENGE_BYTES} bytes in hex: {shown(signature)}"
            )
        try:
            raw = binascii.unhexlify(signature)
        except (ValueError, binascii.Error):
            return "the signature is not hex"
        signed = raw[_SIGNATURE_BYTES:]
        try:
            key.verify(raw[:_SIGNATURE_BYTES], self._expected)  # what it should have signed, whatever it says
        except InvalidSignature:
            return "bad signature"
        if not hmac.compare_digest(signed, self._expected):
            return "the signed message that follows the signature is not the challenge"
        return None
