"""Redis URLs, parsed one way for the cluster bus and for ``sandstone.push.Pusher``.

Both take the same forms, so that a ``Pusher`` reaches the same Redis, and derives the same database (which is
part of the channel names), as the nodes it talks to:

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``: plain TCP;
- ``rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_ca_certs=FILE&ssl_certfile=FILE&ssl_keyfile=FILE]``: TLS,
  the server's certificate verified (against the system's CAs, or those of ``ssl_ca_certs``), with a client
  certificate when ``ssl_certfile`` is given;
- ``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB][?sentinel_password=...]``:
  the master named ``MASTER`` as the Sentinels at those addresses (port 26379 by default) know it, found again
  after each failover; ``rediss+sentinel://`` is the same over TLS (to the Sentinels and the servers), with
  the ``ssl_*`` options of ``rediss://``.

The credentials before ``@`` are the Redis servers' (a user alone is an ACL user without password, as in
redis-py); those of the Sentinels, if they want any, are the ``sentinel_username``/``sentinel_password``
options. Names and passwords are percent-encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SENTINEL_PORT",
    "RedisAddress",
    "SentinelAddress",
    "TLSFiles",
    "check_tls_files",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_FORMS = (
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or "
    "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]"
)
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_SCHEMES = {
    # scheme: (TLS, Sentinel)
    "redis": (False, False),
    "rediss": (True, False),
    "redis+sentinel": (False, True),
    "rediss+sentinel": (True, True),
}
# HOST[:PORT] with HOST a name, an IPv4 address or a bracketed IPv6 address
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\[\]:/@,]+))(?::(?P<port>[^:]*))?$")


@dataclass(frozen=True)
class TLSFiles:
    """What a TLS connection to Redis uses besides the system's CAs: ``ca_file`` (PEM certificates to trust
    instead of the system's), ``cert_file`` (a client certificate, PEM, with its key unless ``key_file``
    holds it)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class SentinelAddress:
    """The Sentinels that know where the master named ``master`` is, and their credentials if any."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis listens, parsed from a Redis URL (see the module): ``host``/``port`` (empty/0 when the
    ``sentinel`` are asked for the master's), the database, the servers' credentials, and ``tls`` (None for
    plain TCP)."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSFiles | None = None
    sentinel: SentinelAddress | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Parse a Redis URL; ``ValueError`` says what is wrong with it and which forms are supported."""
        if not isinstance(url, str):
            raise ValueError(f"a Redis URL must be a str, not {type(url).__name__}")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in _SCHEMES:
            if scheme.lower() == "unix" and sep:
                raise ValueError(f"unix:// Redis URLs are not supported (got {url!r}): use {_FORMS}")
            raise ValueError(
                f"expected a Redis URL like redis://127.0.0.1:6379/0, got {url!r} (forms: {_FORMS})"
            )
        tls, sentinel = _SCHEMES[scheme.lower()]
        if "#" in rest:
            raise ValueError(f"a Redis URL has no '#' part (got {url!r}): use {_FORMS}")
        rest, _, query = rest.partition("?")
        options = _options(url, query, tls, sentinel)
        tls_files = (
            TLSFiles(options.get("ssl_ca_certs"), options.get("ssl_certfile"), options.get("ssl_keyfile"))
            if tls
            else None
        )
        if tls_files is not None and tls_files.key_file and not tls_files.cert_file:
            raise ValueError(
                f"ssl_keyfile needs ssl_certfile, the client certificate it goes with (in {url!r})"
            )
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username, password = _credentials(url, userinfo) if at else (None, None)
        if sentinel:
            return cls._sentinel(url, hosts, path, username, password, tls_files, options)
        parts = urlsplit(f"redis://{hosts}")
        if not parts.hostname or "," in hosts:
            raise ValueError(
                f"expected a Redis URL like redis://127.0.0.1:6379/0, got {url!r}"
                + (" (several hosts: use redis+sentinel://)" if "," in hosts else "")
            )
        host, port = _host_port(url, hosts, DEFAULT_PORT)
        return cls(host, port, _database(url, path), username, password, tls_files)

    @classmethod
    def _sentinel(
        cls,
        url: str,
        hosts: str,
        path: str,
        username: str | None,
        password: str | None,
        tls: TLSFiles | None,
        options: dict[str, str],
    ) -> RedisAddress:
        if not hosts:
            raise ValueError(
                f"a {url.partition('://')[0]}:// URL lists the Sentinels, e.g. "
                f"redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0 (got {url!r})"
            )
        addresses = tuple(_host_port(url, host, DEFAULT_SENTINEL_PORT) for host in hosts.split(","))
        master, _, db = path.partition("/")
        if not master:
            raise ValueError(
                f"the master's name is missing in {url!r}: the path names it, then the database, e.g. "
                f"redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
            )
        master = unquote(master)
        if any(c.isspace() for c in master):
            raise ValueError(f"the master name {master!r} in {url!r} contains whitespace")
        sentinels = SentinelAddress(
            addresses, master, options.get("sentinel_username"), options.get("sentinel_password")
        )
        return cls("", 0, _database(url, db), username, password, tls, sentinels)

    @property
    def scheme(self) -> str:
        """The URL scheme of this address (``redis``, ``rediss``, ``redis+sentinel``, ``rediss+sentinel``)."""
        return ("rediss" if self.tls is not None else "redis") + ("+sentinel" if self.sentinel else "")

    def __str__(self) -> str:
        """The address as a URL without passwords or options (for logs)."""
        user = (
            f"{self.username or ''}:***@" if self.password else (f"{self.username}@" if self.username else "")
        )
        if self.sentinel is not None:
            hosts = ",".join(host_port(host, port) for host, port in self.sentinel.hosts)
            return f"{self.scheme}://{user}{hosts}/{self.sentinel.master}/{self.db}"
        return f"{self.scheme}://{user}{host_port(self.host, self.port)}/{self.db}"


_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def check_tls_files(files: TLSFiles) -> None:
    """Check that the TLS files can be read and hold what they should (PEM certificates, a private key for
    the client certificate); ``ValueError`` says which one does not."""
    if files.ca_file and _PEM_CERTIFICATE not in _read(files.ca_file, "ssl_ca_certs", "CA certificates"):
        raise ValueError(f"ssl_ca_certs={files.ca_file}: no PEM certificate in that file")
    if files.cert_file:
        cert = _read(files.cert_file, "ssl_certfile", "client certificate")
        key = _read(files.key_file, "ssl_keyfile", "client key") if files.key_file else cert
        if _PEM_CERTIFICATE not in cert or not _PEM_KEY.search(key):
            where = f"ssl_certfile={files.cert_file}" + (
                f", ssl_keyfile={files.key_file}" if files.key_file else ""
            )
            raise ValueError(
                f"{where}: expected a PEM certificate and its private key"
                + ("" if files.key_file else " (in the same file, or the key in ssl_keyfile)")
            )


def _read(path: str, option: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{option}={path}: cannot read the {what}: {exc.strerror or exc}") from None


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _options(url: str, query: str, tls: bool, sentinel: bool) -> dict[str, str]:
    allowed = (_TLS_OPTIONS if tls else ()) + (_SENTINEL_OPTIONS if sentinel else ())
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise ValueError(
            f"the options after '?' in {url!r} are not NAME=VALUE pairs joined with '&'"
        ) from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise ValueError(f"the option {name} is given twice in {url!r}")
        if name not in allowed:
            raise ValueError(f"{_option_problem(name, tls, sentinel)} (in {url!r}){_allowed(allowed)}")
        if not value:
            raise ValueError(f"the option {name} is empty in {url!r}")
        options[name] = value
    return options


def _option_problem(name: str, tls: bool, sentinel: bool) -> str:
    if name == "db":
        return "the database is not an option: give it as the path, e.g. redis://127.0.0.1:6379/2"
    if name in _TLS_OPTIONS:
        return f"the option {name} is for TLS: use a rediss:// or rediss+sentinel:// URL"
    if name in _SENTINEL_OPTIONS:
        return f"the option {name} is for Sentinel: use a redis+sentinel:// URL"
    return f"unknown option {name!r}"


def _allowed(allowed: tuple[str, ...]) -> str:
    return f"; this form takes {', '.join(allowed)}" if allowed else "; this form takes no options"


def _credentials(url: str, userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(url: str, text: str, default_port: int) -> tuple[str, int]:
    match = _HOST_PORT.match(text)
    if match is None:
        raise ValueError(f"invalid host {text!r} in Redis URL {url!r}: expected HOST[:PORT]")
    port_text = match["port"]
    if port_text is None or port_text == "":
        port = default_port
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"invalid port in Redis URL {url!r}: {port_text!r}")
    return match["v6"] or match["host"], port


def _database(url: str, path: str) -> int:
    path = path.rstrip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database in {url!r} must be a number, got {path!r}")
    return int(path) if path else 0
