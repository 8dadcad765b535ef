"""Redis URLs, parsed one way for the cluster bus and for ``sandstone.push.Pusher``.

Both accept ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` only: the bus connects over plain TCP, and a
``Pusher`` must derive the same database (which is part of the channel names) as the nodes it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_PORT", "RedisAddress"]

DEFAULT_PORT = 6379

_FORM = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis listens, parsed from ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Parse a redis:// URL; ``ValueError`` says what is wrong with it and which form is supported."""
        parts = urlsplit(url)
        if parts.scheme in ("rediss", "unix"):
            raise ValueError(
                f"{parts.scheme}:// Redis URLs are not supported (got {url!r}): use a plain TCP URL, {_FORM}"
            )
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"expected a Redis URL like redis://127.0.0.1:6379/0, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(
                f"options after '?' or '#' are not supported in Redis URLs (got {url!r}): "
                f"give the database as the path, {_FORM}"
            )
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database in {url!r} must be a number, got {path!r}")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"invalid port in Redis URL {url!r}") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, int(path) if path else 0, username, password)

    def __str__(self) -> str:
        """The address as a URL without the password (for logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username or ''}:***@" if self.password else ""
        return f"redis://{user}{host}:{self.port}/{self.db}"
