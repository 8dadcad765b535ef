"""The HTTP side of serving an app: a Site limiting request bodies, and a graceful shutdown service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
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
    the REST requests being served (WebSocket upgrades leave it once upgraded)."""

    requestFactory = LimitedRequest

    def __init__(self, resource: Any, *, max_request_body: int = 0, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.max_request_body = max_request_body
        self.inflight: set[Request] = set()


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
