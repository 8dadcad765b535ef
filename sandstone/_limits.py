"""Limits that keep a server alive under bad clients: sizes, timeouts, rates and buffers (sane defaults)."""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Limits:
    """Per-connection and per-session limits of an app's WAMP endpoint and REST side.

    Every field can be set from the app (``Sandstone(limits=Limits(...))``), and most from the command line
    (``sandstone run --max-message-size ...``, the same for ``twistd sandstone``), whose options override the
    app's values. ``0`` (or ``None`` where allowed) disables a limit.
    """

    max_message_size: int = 1_048_576
    """Bytes of one WebSocket message: a bigger incoming one (counted after permessage-deflate
    decompression) closes the connection with 1009; a bigger outgoing one is not sent to that client."""
    max_frame_size: int = 1_048_576
    """Bytes of one incoming WebSocket frame; beyond it the connection is closed with 1009."""
    max_outgoing_buffer: int = 4_194_304
    """Bytes queued for a client that does not read, before it is dropped (a slow consumer)."""
    open_handshake_timeout: float = 10.0
    """Seconds for the WebSocket opening handshake."""
    hello_timeout: float = 10.0
    """Seconds between the socket opening and the WAMP session being open; then
    ``ABORT sandstone.error.hello_timeout``."""
    auto_ping_interval: float = 30.0
    """Seconds between pings to each client (0: no pings)."""
    auto_ping_timeout: float = 10.0
    """Seconds a client has to answer a ping before it is dropped."""
    max_connections: int = 10_000
    """Open connections, REST and WebSocket (WebSocket ones only when ``app.resource()`` is mounted in
    another Site); beyond it 503. Never more than the file descriptor limit allows."""
    publish_rate: float = 0.0
    """PUBLISH messages per second per connection (sustained); 0: no cap."""
    publish_burst: int = 200
    """PUBLISH messages a connection may send at once, with ``publish_rate``."""
    call_rate: float = 0.0
    """CALL messages per second per connection (sustained); 0: no cap."""
    call_burst: int = 200
    """CALL messages a connection may send at once, with ``call_rate``."""
    deflate_window_bits: int = 11
    """Permessage-deflate: at most ``2**bits`` of window per connection (9..15)."""
    deflate_memory_level: int = 4
    """Permessage-deflate: zlib memory level (1..9)."""
    max_request_body: int = 1_048_576
    """Bytes of a REST request body; beyond it 413."""
    # request heads (REST requests and WebSocket handshakes alike)
    max_header_bytes: int = 16_384
    """Bytes of a request head (request line and headers, REST or WebSocket handshake); beyond it 431."""
    max_header_count: int = 100
    """Header lines in a request head; beyond it 431."""
    header_timeout: float = 10.0
    """Seconds for a request head to arrive, from its first byte; then 408."""
    request_timeout: float = 60.0
    """Seconds for a whole REST request (head and body) to arrive; then 408."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive REST connection may wait for its next request."""
    # connections not serving yet: HTTP before its first request head is complete, WebSocket until its
    # WAMP session is open
    max_pending_connections: int = 1_000
    """Connections not serving yet (an HTTP connection until its first request has been received, a
    WebSocket until its WAMP session is open), server-wide; beyond it a new connection is refused (503)."""
    max_pending_per_ip: int = 100
    """Connections not serving yet from one client IP address; beyond it refused (503)."""
    max_connections_per_ip: int = 0
    """All connections (REST and WebSocket) from one client IP address; 0: no cap."""
    # per WAMP session
    max_subscriptions_per_session: int = 1_000
    """Subscriptions of one session; beyond it SUBSCRIBE gets ``sandstone.error.limit_exceeded``."""
    max_registrations_per_session: int = 1_000
    """Registrations of one session; beyond it REGISTER gets ``sandstone.error.limit_exceeded``."""
    subscribe_rate: float = 100.0
    """SUBSCRIBE messages per second per connection (sustained)."""
    subscribe_burst: int = 1_000
    """SUBSCRIBE messages a connection may send at once."""
    max_call_timeout: float = 0.0
    """Seconds: the longest timeout a CALL may ask for (``CALL.Options.timeout``); a longer one is lowered to
    it. A cap, not a default: calls without a timeout are not limited. 0: no cap."""
    max_retained_topics: int = 10_000
    """Topics keeping a retained event (``retain``); beyond it the least recently retained to is forgotten."""
    max_history_topics: int = 10_000
    """Topics keeping an event history; beyond it the least recently written is forgotten."""
    max_history_events: int = 1000
    """Events one ``wamp.subscription.get_events`` answer holds at most (a bigger ``limit`` is lowered to
    it; ``more`` says when there are more to page through)."""
    max_events_per_publication: int = 32
    """EVENTs one publication may produce for one session (one per matching subscription)."""
    message_time_slice: float = 0.002
    """Fairness, while several connections send messages: seconds of one read's messages a connection gets
    handled at once; the rest wait for the next reactor turns (between the other connections' reads), and
    reading from it pauses meanwhile. 0: off."""
    role_limits: Mapping[str, Limits] | None = None
    """Per authrole, the PUBLISH, CALL and SUBSCRIBE rates (and bursts) of that role's sessions, e.g.
    ``{"anonymous": Limits(publish_rate=10)}``; the other fields of these ``Limits`` are not used."""


_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _authority(scheme: str, netloc: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    netloc = netloc.strip().lower()
    host, sep, port = netloc.rpartition(":")
    if sep and "]" not in port and port == _DEFAULT_PORTS.get(scheme):
        return host
    return netloc


def origin_allowed(origin: str | None, host: str | None, patterns: Sequence[str] = ()) -> bool:
    """May a WebSocket handshake carrying this ``Origin`` header proceed?

    Allowed: no Origin at all (non-browser clients send none), an origin matching one of ``patterns``
    (``fnmatch`` style, e.g. ``https://*.example.com`` or ``http://localhost:*``; ``*`` allows any),
    and the app's own origin: the one whose ``host[:port]`` is the handshake's ``Host`` header, with the
    scheme ``http``/``https`` of a page, or ``ws``/``wss`` as non-browser clients such as wampy send (a
    browser never sends those). Anything else, including the opaque ``null`` origin of sandboxed frames and
    ``file:`` pages, is refused.
    """
    if origin is None or not origin.strip():
        return True
    origin = origin.strip().lower()
    if any(fnmatch.fnmatchcase(origin, pattern.strip().lower()) for pattern in patterns):
        return True
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False
    return _authority(parts.scheme, parts.netloc) == _authority(parts.scheme, host)


_LOOPBACK_NAMES = frozenset(("localhost", "localhost.", "ip6-localhost", "ip6-loopback"))


def _split_host(host: str) -> tuple[str, str]:
    """``(name, port)`` of a ``Host`` header, lower case, IPv6 brackets removed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    name, _, port = host.partition(":")
    return name, port


@functools.lru_cache(maxsize=1024)  # a server sees few local addresses and host names: parse each once
def _is_loopback(name: str) -> bool:
    return name in _LOOPBACK_NAMES or name.endswith(".localhost") or _is_loopback_ip(name)


def host_allowed(host: str | None, patterns: Sequence[str] | None, local_ip: str = "") -> bool:
    """May a request (REST or WebSocket handshake) carrying this ``Host`` header be served?

    With ``patterns`` (an app's ``allowed_hosts``), the host name must match one of them (``fnmatch``
    style: ``example.com``, ``*.example.com``; a pattern with a port, ``example.com:8443``, is matched
    against name and port; ``*`` allows any). Without (``None``, the default), a server reached on a
    loopback address only answers loopback names (``localhost``, ``*.localhost``, ``127.0.0.1``,
    ``[::1]``): a page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) cannot reach a
    development server; any other address serves any host. A request without ``Host`` is allowed.
    """
    if host is None or not host.strip():
        return True
    name, port = _split_host(host)
    if patterns is None:
        return not _is_loopback_ip(local_ip) or _is_loopback(name)
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == "*":
            return True
        want_name, want_port = _split_host(pattern)
        if fnmatch.fnmatchcase(name, want_name) and (not want_port or fnmatch.fnmatchcase(port, want_port)):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _is_loopback_ip(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
