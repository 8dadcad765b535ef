"""Limits that keep a server alive under bad clients: sizes, timeouts, rates and buffers (sane defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-connection and per-session limits of an app's WAMP endpoint and REST side.

    Every field can be set from the app (``Sandstone(limits=Limits(...))``) and from ``twistd sandstone``
    options. ``0`` (or ``None`` where allowed) disables a limit.
    """

    max_message_size: int = 1_048_576  # bytes of one incoming WebSocket message, after decompression
    max_frame_size: int = 1_048_576  # bytes of one incoming WebSocket frame
    max_outgoing_buffer: int = 4_194_304  # bytes queued for a client that does not read, before it is dropped
    open_handshake_timeout: float = 10.0  # seconds for the WebSocket opening handshake
    hello_timeout: float = 10.0  # seconds between the socket opening and HELLO
    auto_ping_interval: float = 30.0  # seconds between pings to each client (0: no pings)
    auto_ping_timeout: float = 10.0  # seconds a client has to answer a ping before it is dropped
    max_connections: int = 10_000  # concurrent WebSocket connections; beyond it the handshake gets 503
    publish_rate: float = 100.0  # PUBLISH messages per second per session (sustained)
    publish_burst: int = 200  # PUBLISH messages a session may send at once
    call_rate: float = 100.0  # CALL messages per second per session (sustained)
    call_burst: int = 200  # CALL messages a session may send at once
    deflate_window_bits: int = 11  # permessage-deflate: at most 2**bits of window per connection (9..15)
    deflate_memory_level: int = 4  # permessage-deflate: zlib memory level (1..9)
    max_request_body: int = 1_048_576  # bytes of a REST request body; beyond it 413
