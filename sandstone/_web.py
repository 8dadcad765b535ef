"""The HTTP side of serving an app: a Site limiting request bodies, and a graceful shutdown service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.server import Request, Site

if TYPE_CHECKING:
    from ._app import Sandstone

log = Logger()

_TOO_LARGE_BODY = b"request body too large\n"


class LimitedRequest(Request):
    """A request whose body may not exceed its site's ``max_request_body`` bytes (0: no limit).

    A ``Content-Length`` over the limit is answered 413 before any of the body is read; a chunked
    body is counted as it arrives and answered 413 once it goes over. The connection is then closed.
    """

    _body_refused = False
    _body_received = 0

    def _body_limit(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_request_body", 0) or 0)

    def gotLength(self, length: int | None) -> None:
        limit = self._body_limit()
        if length is not None and 0 < limit < length:
            super().gotLength(0)
            self._refuse_body(length, limit)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_refused:
            return
        self._body_received += len(data)
        limit = self._body_limit()
        if 0 < limit < self._body_received:
            self._refuse_body(None, limit)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._body_refused:
            return
        # twisted.web parses a POST's Content-Type with the email package (~30 us) to find out whether the
        # body is a form for ``request.args``: only a type with "form" in it can be one.
        content_type = self.requestHeaders.getRawHeaders(b"content-type")
        if content_type is not None and b"form" not in content_type[0].lower():
            self._parsePOSTFormSubmission = False
        super().requestReceived(command, path, version)

    def _refuse_body(self, length: int | None, limit: int) -> None:
        self._body_refused = True
        # No "100 Continue" for a body that will not be read (twisted.web checks it after gotLength).
        self.requestHeaders.removeHeader(b"expect")
        log.info(
            "413 for a request body of {size} bytes (max_request_body {limit})",
            size=length if length is not None else f"more than {limit}",
            limit=limit,
        )
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
        )
        self.channel.loseConnection()

    def process(self) -> None:
        inflight = getattr(self.channel.site, "inflight", None)
        if inflight is not None:
            inflight.add(self)
            self.notifyFinish().addBoth(lambda _: inflight.discard(self))
        super().process()


class SandstoneSite(Site):
    """A Site for a sandstone app (see ``Sandstone.site()``): ``LimitedRequest``s, and ``inflight``,
    the REST requests being served (WebSocket upgrades leave it once upgraded).

    Given ``websocket=(path, factory)``, a connection whose first request line is ``GET path`` goes
    straight to ``factory``'s WebSocket protocol, which parses the handshake itself: no twisted.web
    request, resource lookup or transport takeover for it. Any other connection is served by the Site.
    """

    requestFactory = LimitedRequest

    def __init__(
        self,
        resource: Any,
        *,
        max_request_body: int = 0,
        websocket: tuple[str, IProtocolFactory] | None = None,
        handshake_timeout: float = 10.0,
        clock: IReactorTime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.max_request_body = max_request_body
        self.inflight: set[Request] = set()
        self.websocket = websocket
        self._upgrade_line = b"GET " + websocket[0].encode("utf-8") if websocket is not None else b""
        self.handshake_timeout = handshake_timeout
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock  # type: ignore[assignment]

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        if self.websocket is None:
            return super().buildProtocol(addr)
        return _FirstLine(self, addr)

    def _protocol_for(self, request_line: bytes, addr: IAddress) -> IProtocol | None:
        """The WebSocket protocol for ``GET <ws_path>[?query] HTTP/...``, else the Site's HTTP channel."""
        assert self.websocket is not None
        target, _, _ = request_line.partition(b" HTTP/")
        path = target.partition(b"?")[0]
        if path == self._upgrade_line:
            return self.websocket[1].buildProtocol(addr)
        return super().buildProtocol(addr)


# The longest first line waited for: longer, the connection is answered 400 and closed, as twisted.web
# answers an oversized request head (its HTTP channel would wait for up to 16 KiB and then close silently).
_MAX_FIRST_LINE = 8192
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class _FirstLine(Protocol):
    """A new connection's protocol until its first request line says who serves it (see ``SandstoneSite``).

    It then hands the transport and the bytes received so far to that protocol. A peer sending no
    complete line within the site's ``handshake_timeout`` is disconnected.
    """

    def __init__(self, site: SandstoneSite, addr: IAddress) -> None:
        self.site = site
        self.addr = addr
        self.buffer = b""
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        if self.site.handshake_timeout > 0:
            self.timer = self.site.clock.callLater(self.site.handshake_timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data
        end = buffer.find(b"\r\n")
        if end < 0 and len(buffer) < _MAX_FIRST_LINE:
            self.buffer = buffer
            return
        self.buffer = b""
        self._cancel_timer()
        if end < 0:
            self.transport.write(_BAD_REQUEST)
            self.transport.loseConnection()
            return
        protocol = self.site._protocol_for(buffer[:end], self.addr)
        transport = self.transport
        if protocol is None:
            transport.loseConnection()
            return
        if isinstance(transport, ProtocolWrapper):  # TLS and other wrapping transports
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(buffer)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_timer()

    def _timed_out(self) -> None:
        self.timer = None
        log.info(
            "closing a connection that sent no request line within {timeout} s",
            timeout=self.site.handshake_timeout,
        )
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()


class GracefulShutdown(Service):
    """Stopping it (``twistd`` stops it on SIGTERM) ends the app's connections gracefully, within a bound.

    Every WAMP session gets GOODBYE ``wamp.close.system_shutdown`` and its WebSocket is closed; REST
    requests in flight on ``site`` may finish. After ``timeout`` seconds what is left is cut off.
    Stop listening alongside (``twistd sandstone`` stops its listening port at the same time).
    """

    name = "shutdown"

    def __init__(
        self, app: Sandstone, site: SandstoneSite | None = None, timeout: float = 5.0, clock: Any = None
    ) -> None:
        self.app = app
        self.site = site
        self.timeout = timeout
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock

    def stopService(self) -> Deferred[None]:
        super().stopService()
        factory = self.app._core.factory
        if factory is not None:
            log.info("shutting down: GOODBYE to {count} connection(s)", count=len(factory.connections))
            factory.shutdown(grace=min(1.0, self.timeout / 2))
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + self.timeout

        def busy() -> bool:
            return bool((factory is not None and factory.connections) or (self.site and self.site.inflight))

        def check() -> None:
            if not busy():
                done.callback(None)
                return
            if self.clock.seconds() >= deadline:
                left = len(factory.connections) if factory is not None else 0
                requests = len(self.site.inflight) if self.site else 0
                log.warn(
                    "shutdown: {connections} connection(s) and {requests} request(s) still open after "
                    "{timeout} s; cutting them off",
                    connections=left,
                    requests=requests,
                    timeout=self.timeout,
                )
                for protocol in list(factory.connections if factory is not None else ()):
                    protocol.dropConnection(abort=True)
                done.callback(None)
                return
            self.clock.callLater(0.05, check)

        check()
        return done
