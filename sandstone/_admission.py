"""Connection admission: how many connections a server holds, and how many are not serving yet.

A connection is *pending* from the moment it is accepted until it serves: an HTTP connection until its
first request has been received (head and body), a WebSocket until its WAMP session is open. Pending
connections cost the server memory and a file descriptor while giving nothing back, so they are bounded
server-wide and per client IP address (``Limits.max_pending_connections``, ``max_pending_per_ip``);
all connections are bounded by ``max_connections`` (never more than the process's file descriptor limit
allows) and, optionally, per client IP (``max_connections_per_ip``).
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Callable

from twisted.logger import Logger

from ._limits import Limits

log = Logger()

# File descriptors kept free for everything that is not a client connection (listening sockets, Redis,
# log files, worker pipes): the connection cap never uses them.
FD_RESERVE = 64
PROCESS_LIMIT = -1  # ``Admission(fds=...)``: the process's own file descriptor limit


def fd_limit() -> int | None:
    """The process's soft limit on open file descriptors, if it has one."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def raise_fd_limit(wanted: int) -> int | None:
    """Raise the soft file descriptor limit towards ``wanted`` (at most the hard limit); returns the new
    soft limit."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            if target > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warn("could not raise the file descriptor limit: {error}", error=exc)
    return fd_limit()


class Refusal(Exception):
    """A new connection is over a limit: ``reason`` says which, ``counter`` names its stats entry."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


class Ticket:
    """One admitted connection. ``ready()`` when it starts serving; ``release()`` when it closes."""

    __slots__ = ("_admission", "ip", "pending", "released")

    def __init__(self, admission: Admission, ip: str) -> None:
        self._admission = admission
        self.ip = ip
        self.pending = True
        self.released = False

    def ready(self) -> None:
        """The connection serves now: it no longer counts as pending (idempotent)."""
        if self.pending and not self.released:
            self.pending = False
            self._admission._ready(self)

    def release(self) -> None:
        """The connection is gone (idempotent)."""
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """Counts a server's connections and refuses new ones over the limits (``admit`` raises ``Refusal``).

    ``limits`` is read at every admission, so replacing an app's limits takes effect for new connections.
    ``fds`` is the file descriptor limit the connection cap must stay under (``PROCESS_LIMIT``: the
    process's soft limit at the time; ``None``: no such cap).
    """

    def __init__(self, limits: Callable[[], Limits], fds: int | None = PROCESS_LIMIT) -> None:
        self._limits = limits
        self._fds = fd_limit() if fds == PROCESS_LIMIT else fds
        self.open = 0
        self.pending = 0
        self._open_by_ip: Counter[str] = Counter()
        self._pending_by_ip: Counter[str] = Counter()

    @property
    def max_open(self) -> int:
        """The cap on all connections: ``max_connections``, lowered to fit the file descriptor limit
        (0: none)."""
        return self._max_open(self._limits())

    def _max_open(self, limits: Limits) -> int:
        configured = limits.max_connections
        if self._fds is None:
            return configured
        room = max(1, self._fds - FD_RESERVE)
        return room if configured <= 0 else min(configured, room)

    def admit(self, ip: str) -> Ticket:
        """Admit a new connection from ``ip`` (``""`` when it has none, e.g. a UNIX socket)."""
        limits = self._limits()
        cap = self._max_open(limits)
        if 0 < cap <= self.open:
            raise Refusal(f"{self.open} connections open (max_connections {cap})", "connections_refused")
        if 0 < limits.max_pending_connections <= self.pending:
            raise Refusal(
                f"{self.pending} connections not serving yet (max_pending_connections "
                f"{limits.max_pending_connections})",
                "pending_refused",
            )
        if ip:
            if 0 < limits.max_pending_per_ip <= self._pending_by_ip[ip]:
                raise Refusal(
                    f"{self._pending_by_ip[ip]} connections from {ip} not serving yet "
                    f"(max_pending_per_ip {limits.max_pending_per_ip})",
                    "pending_per_ip_refused",
                )
            if 0 < limits.max_connections_per_ip <= self._open_by_ip[ip]:
                raise Refusal(
                    f"{self._open_by_ip[ip]} connections open from {ip} "
                    f"(max_connections_per_ip {limits.max_connections_per_ip})",
                    "connections_per_ip_refused",
                )
        self.open += 1
        self.pending += 1
        if ip:
            self._open_by_ip[ip] += 1
            self._pending_by_ip[ip] += 1
        return Ticket(self, ip)

    def pending_from(self, ip: str) -> int:
        """Connections from ``ip`` not serving yet."""
        return self._pending_by_ip.get(ip, 0)

    def open_from(self, ip: str) -> int:
        """Connections open from ``ip``."""
        return self._open_by_ip.get(ip, 0)

    def _ready(self, ticket: Ticket) -> None:
        self.pending -= 1
        if ticket.ip:
            _decrement(self._pending_by_ip, ticket.ip)

    def _release(self, ticket: Ticket) -> None:
        self.open -= 1
        if ticket.pending:
            ticket.pending = False
            self._ready(ticket)
        if ticket.ip:
            _decrement(self._open_by_ip, ticket.ip)


def _decrement(counter: Counter[str], key: str) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
