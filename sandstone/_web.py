"""The HTTP side of serving an app: a Site bounding connections, request heads and bodies, and a graceful
shutdown service."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site
from zope.interface import implementer

from ._admission import Admission, Refusal, Ticket
from ._http_errors import error_body, is_websocket_upgrade, request_wants_json, upgrade_hint, wants_json
from ._limits import Limits, host_allowed
from ._twisted_internals import skip_form_parsing

if TYPE_CHECKING:
    from ._app import Sandstone

log = Logger()


class LimitedRequest(Request):
    """A request whose body may not exceed its site's ``max_request_body`` bytes (0: no limit).

    A ``Content-Length`` over the limit is answered 413 before any of the body is read; a chunked
    body is counted as it arrives and answered 413 once it goes over. The connection is then closed.
    A JSON client (see ``_http_errors``) gets that 413, and the 500 of an unhandled error, as JSON.
    """

    _body_refused = False
    _body_received = 0
    #: The name of the Klein endpoint (route) that served the request, if one did: see ``Sandstone``.
    endpoint: str | None = None

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
        # twisted.web parses a POST's Content-Type with the (slow) email package to find out whether the
        # body is a form for ``request.args``: only a type with "form" in it can be one.
        content_type = self.requestHeaders.getRawHeaders(b"content-type")
        if content_type is not None and b"form" not in content_type[0].lower():
            skip_form_parsing(self)
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
        message = f"request body too large: the limit is {limit} bytes"
        if request_wants_json(self):
            response = _raw_response(b"413 Content Too Large", b"application/json", error_body(413, message))
        else:
            response = _response("413 Content Too Large", message + "\n")
        transport.write(response)
        self.channel.loseConnection()

    def processingFailed(self, reason: Failure) -> Failure:
        """Answer an unhandled error with 500, logging its traceback once; a JSON client gets a JSON body
        (without the traceback, whatever the site's ``displayTracebacks``)."""
        if not request_wants_json(self):
            failed: Failure = super().processingFailed(reason)
            return failed
        log.failure(
            "500 for {method} {path}: unhandled error",
            failure=reason,
            method=self.method.decode("latin-1"),
            path=self.path.decode("latin-1"),
        )
        body = error_body(500, "internal server error")
        self.setResponseCode(500)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()
        return reason

    def process(self) -> None:
        # Site.buildProtocol sets channel.site (twisted.web's own Request.process reads it too), but
        # HTTPChannel does not declare it.
        site = self.channel.site  # type: ignore[attr-defined]
        if isinstance(site, SandstoneSite):
            host = self.requestHeaders.getRawHeaders(b"host", [None])[0]
            if not site.host_allowed(host.decode("latin-1") if host else None, self.getHost()):
                self._refuse_host(site, host)
                return
            for observer in site._request_observers:
                observer(self)
        inflight = getattr(site, "inflight", None)
        if inflight is not None:
            inflight.add(self)
            self.notifyFinish().addBoth(lambda _: inflight.discard(self))
        super().process()

    def _refuse_host(self, site: SandstoneSite, host: bytes | None) -> None:
        site.stats["hosts_refused"] += 1
        site._refusals.log("400 for a request to host {host!r}: not in allowed_hosts", host=host)
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"connection", b"close")
        self.write(_HOST_REFUSED)
        self.finish()


_HOST_REFUSED = b"this host name is not served here (see allowed_hosts)\n"


class _Channel(HTTPChannel):
    """twisted.web's HTTP/1.1 channel, with deadlines that do not move with every byte received.

    A request's head must arrive within ``header_timeout`` and the whole request within ``request_timeout``
    of its first byte (else 408 and the connection is closed); its head is bounded by
    ``max_header_bytes`` and ``max_header_count`` (twisted.web answers 400 beyond). The channel's admission
    ticket stops counting as pending once its first request has been received.
    """

    site: SandstoneSite  # set by Site.buildProtocol
    ticket: Ticket | None = None
    _deadline: IDelayedCall | None = None
    _receiving = False  # between the first byte of a request and its last
    _started = 0.0

    def admitted(self, ticket: Ticket) -> None:
        """Take over the connection's admission ticket (see ``SandstoneSite``)."""
        self.ticket = ticket

    def connectionMade(self) -> None:
        super().connectionMade()
        limits = self._limits()
        if limits is not None:
            if limits.max_header_count > 0:
                self.maxHeaders = limits.max_header_count
            if limits.max_header_bytes > 0:
                self.totalHeadersSize = limits.max_header_bytes

    def _limits(self) -> Limits | None:
        site = getattr(self, "site", None)
        return site.limits if isinstance(site, SandstoneSite) else None

    def lineReceived(self, line: bytes) -> None:
        if not self._receiving:
            self._receiving = True
            limits = self._limits()
            if limits is not None:
                self._started = self.site.clock.seconds()
                self._arm(limits.header_timeout, "no complete request head within {timeout:g} s")
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        limits = self._limits()
        if limits is not None and self._receiving:
            elapsed = self.site.clock.seconds() - self._started
            left = limits.request_timeout - elapsed if limits.request_timeout > 0 else 0
            self._arm(
                max(left, 0.001) if limits.request_timeout > 0 else 0,
                "no complete request within {timeout:g} s",
            )

    def allContentReceived(self) -> None:
        self._receiving = False
        self._disarm()
        if self.ticket is not None:
            self.ticket.ready()
        super().allContentReceived()

    def connectionLost(self, reason: Any = None) -> None:
        self._disarm()
        if self.ticket is not None:
            self.ticket.release()
        super().connectionLost(reason)

    def _arm(self, timeout: float, text: str) -> None:
        self._disarm()
        if timeout > 0:
            self._deadline = self.site.clock.callLater(timeout, self._too_slow, text.format(timeout=timeout))

    def _disarm(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _too_slow(self, reason: str) -> None:
        self._deadline = None
        site, transport = self.site, self.transport
        assert transport is not None  # the deadline is disarmed when the connection is lost
        site.stats["request_timeouts"] += 1
        site._refusals.log(
            "408 to {peer}: {reason}", peer=getattr(transport.getPeer(), "host", ""), reason=reason
        )
        transport.write(_TIMED_OUT)
        transport.loseConnection()


class SandstoneSite(Site):
    """A Site for a sandstone app (see ``Sandstone.site()``): ``LimitedRequest``s, and ``inflight``,
    the REST requests being served (WebSocket upgrades leave it once upgraded).

    Every new connection is admitted against the connection limits first (``Admission``: all connections,
    and those not serving yet, server-wide and per client IP; over a limit: 503 and closed). Its request
    head is then read whole, within ``max_header_bytes``, ``max_header_count`` (431 beyond) and
    ``header_timeout`` (408), before anything parses it. Given ``websocket=(path, factory)``, a head
    whose request line is ``GET path`` goes straight to ``factory``'s WebSocket protocol: no twisted.web
    request, resource lookup or transport takeover for it; one without ``Upgrade: websocket`` (a browser,
    curl) is answered 426 with a hint and closed, logged at debug level. Any other is served by the Site,
    whose HTTP channel bounds each later request on the connection the same way (plus ``request_timeout``
    for the body) and closes a keep-alive connection idle for ``idle_timeout``.
    """

    requestFactory = LimitedRequest
    protocol = _Channel  # type: ignore[assignment]
    noisy = False  # no "Starting factory <...SandstoneSite object at 0x...>" line (the port says it listens)

    def __init__(
        self,
        resource: Any,
        *,
        limits: Limits | None = None,
        max_request_body: int | None = None,
        websocket: tuple[str, IProtocolFactory] | None = None,
        header_timeout: float | None = None,
        allowed_hosts: Sequence[str] | None = None,
        stats: Counter[str] | None = None,
        clock: IReactorTime | None = None,
        admission: Admission | None = None,
        **kwargs: Any,
    ) -> None:
        limits = limits if limits is not None else Limits()
        kwargs.setdefault("timeout", limits.idle_timeout or None)
        super().__init__(resource, **kwargs)
        self.limits = limits
        self.max_request_body = limits.max_request_body if max_request_body is None else max_request_body
        self.header_timeout = limits.header_timeout if header_timeout is None else header_timeout
        self.allowed_hosts = None if allowed_hosts is None else list(allowed_hosts)
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.admission = admission if admission is not None else Admission(lambda: self.limits)
        self.inflight: set[Request] = set()
        # Called with each REST request about to be served (the metrics time it: see observe_requests).
        self._request_observers: list[Callable[[LimitedRequest], None]] = []
        self.websocket = websocket
        self._upgrade_line = b"GET " + websocket[0].encode("utf-8") if websocket is not None else b""
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self._refusals = _Throttled(self.clock)

    # HTTPFactory types its protocols as HTTP channels; this Site deliberately builds others first.
    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]
        ip = str(getattr(addr, "host", "") or "")
        try:
            ticket = self.admission.admit(ip)
        except Refusal as refusal:
            self.stats[refusal.counter] += 1
            self._refusals.log(
                "refused a connection from {peer} with 503: {reason}", peer=ip, reason=refusal.reason
            )
            return _Answer(_SERVICE_UNAVAILABLE)
        return _Head(self, addr, ticket)

    def observe_requests(self, observer: Callable[[LimitedRequest], None]) -> None:
        """Call ``observer(request)`` with each REST request as it starts being served (after its host was
        allowed), e.g. to learn its duration and status from ``request.notifyFinish()``."""
        self._request_observers.append(observer)

    def host_allowed(self, host: str | None, local: IAddress | None) -> bool:
        """May a request carrying this ``Host`` header, received on ``local``, be served?"""
        return host_allowed(host, self.allowed_hosts, str(getattr(local, "host", "") or ""))

    def _protocol_for(self, head: bytes, addr: IAddress) -> IProtocol | None:
        """For a complete request head: the WebSocket protocol for ``GET <ws_path>[?query] HTTP/...`` with
        ``Upgrade: websocket``, a 426 for one without, else the Site's HTTP channel."""
        if self.websocket is not None:
            request_line = head.partition(b"\n")[0].rstrip(b"\r")
            target, _, _ = request_line.partition(b" HTTP/")
            path = target.partition(b"?")[0]
            if path == self._upgrade_line:
                lowered = head.lower()
                if is_websocket_upgrade(_raw_header(lowered, b"upgrade")):
                    return self.websocket[1].buildProtocol(addr)
                return self._upgrade_required(lowered, addr)
        channel: IProtocol | None = super().buildProtocol(addr)
        return channel

    def _upgrade_required(self, lowered_head: bytes, addr: IAddress) -> IProtocol:
        log.debug(
            "426 for a plain HTTP GET on the WebSocket path from {peer}", peer=getattr(addr, "host", "")
        )
        accept = _raw_header(lowered_head, b"accept")
        content_type = _raw_header(lowered_head, b"content-type")
        json_client = wants_json(
            None if accept is None else (accept,), None if content_type is None else (content_type,)
        )
        body_type, body = upgrade_hint(json_client)
        return _Answer(_raw_response(b"426 Upgrade Required", body_type, body, b"Upgrade: websocket\r\n"))


def _response(status: str, text: str) -> bytes:
    """A complete plain-text HTTP response that closes the connection."""
    return _raw_response(status.encode("ascii"), b"text/plain; charset=utf-8", text.encode("utf-8"))


def _raw_response(status: bytes, content_type: bytes, body: bytes, headers: bytes = b"") -> bytes:
    """A complete HTTP response that closes the connection; ``headers``: more lines, each ending in CRLF."""
    return b"HTTP/1.1 %s\r\nConnection: close\r\n%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        headers,
        content_type,
        len(body),
        body,
    )


def _raw_header(lowered_head: bytes, name: bytes) -> bytes | None:
    """The value of the first header ``name`` (lowercase) in a lowercased request head, if it has one."""
    start = lowered_head.find(b"\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 2
    end = lowered_head.find(b"\n", start)
    return lowered_head[start : end if end >= 0 else len(lowered_head)].strip()


_SERVICE_UNAVAILABLE = _response("503 Service Unavailable", "too many connections; retry later\n")
_HEAD_TOO_LARGE = _response("431 Request Header Fields Too Large", "request header fields too large\n")
_TIMED_OUT = _response("408 Request Timeout", "the request did not arrive in time\n")


class _Throttled:
    """Logs a repeated condition (an attack may cause thousands) at most once per ``interval`` seconds,
    saying how many were not logged in between."""

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self._clock = clock
        self._interval = interval
        self._next = float("-inf")
        self._skipped = 0

    def log(self, text: str, **fields: Any) -> None:
        now = self._clock.seconds()
        if now < self._next:
            self._skipped += 1
            return
        skipped, self._skipped = self._skipped, 0
        self._next = now + self._interval
        if skipped:
            text += " ({skipped} more like it not logged in the last {interval:g} s)"
        log.info(text, skipped=skipped, interval=self._interval, **fields)


@implementer(IProtocol)
class _Answer(Protocol):
    """A connection answered at once with a canned ``response`` (503 over the limits, 426...) and closed."""

    def __init__(self, response: bytes) -> None:
        self.response = response

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None  # set by makeConnection
        transport.write(self.response)
        transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        pass


class _Head(Protocol):
    """A new connection's protocol until its first request head is complete and says who serves it.

    It then hands the transport, the bytes received so far and the connection's admission ticket to that
    protocol (see ``SandstoneSite``). A head over ``max_header_bytes`` or ``max_header_count`` is answered
    431, one not complete within ``header_timeout`` of connecting 408; the connection is then closed.
    """

    def __init__(self, site: SandstoneSite, addr: IAddress, ticket: Ticket) -> None:
        self.site = site
        self.addr = addr
        self.ticket = ticket
        self.buffer = b""
        self.timer: IDelayedCall | None = None
        self.done = False  # the head was handed over, or refused
        self.handed_over = False

    def connectionMade(self) -> None:
        if self.site.header_timeout > 0:
            self.timer = self.site.clock.callLater(self.site.header_timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        buffer = self.buffer + data if self.buffer else data
        if buffer[:1] in (b"\r", b"\n"):  # empty lines before a request line are allowed (RFC 9112 2.2)
            buffer = buffer.lstrip(b"\r\n")
        end = _head_end(buffer)
        head = buffer if end < 0 else buffer[:end]
        problem = self._too_large(head, end >= 0)
        if problem is not None:
            self._refuse(_HEAD_TOO_LARGE, "head_refused", problem)
            return
        if end < 0:
            self.buffer = buffer
            return
        self.buffer = b""
        self.done = self.handed_over = True
        self._cancel_timer()
        protocol = self.site._protocol_for(buffer[:end], self.addr)
        transport = self.transport
        assert transport is not None  # data arrives only on a connected transport
        if protocol is None:
            self.ticket.release()
            transport.loseConnection()
            return
        if isinstance(transport, ProtocolWrapper):  # TLS and other wrapping transports
            transport.wrappedProtocol = protocol
        else:
            # Every reactor's connection (tcp.Server, unix.Server, iocp) dispatches to its .protocol, an
            # attribute ITransport does not declare.
            transport.protocol = protocol  # type: ignore[attr-defined]
        admitted = getattr(protocol, "admitted", None)
        if admitted is not None:
            admitted(self.ticket)
        else:  # a protocol that cannot report its end: count it as serving, and as closed
            self.ticket.release()
        protocol.makeConnection(transport)
        protocol.dataReceived(buffer)

    def _too_large(self, head: bytes, complete: bool) -> str | None:
        limits = self.site.limits
        if 0 < limits.max_header_bytes < len(head):
            return f"a request head of more than {limits.max_header_bytes} bytes (max_header_bytes)"
        # Lines ended so far, less the request line and (in a complete head) the blank line.
        if 0 < limits.max_header_count < head.count(b"\n") - (2 if complete else 1):
            return f"more than {limits.max_header_count} header lines (max_header_count)"
        return None

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_timer()
        if not self.handed_over:
            self.ticket.release()

    def _timed_out(self) -> None:
        self.timer = None
        self._refuse(
            _TIMED_OUT, "head_timeouts", f"no complete request head within {self.site.header_timeout:g} s"
        )

    def _refuse(self, response: bytes, counter: str, reason: str) -> None:
        self.done = True
        self.buffer = b""
        self._cancel_timer()
        self.site.stats[counter] += 1
        status = response[9:12].decode()
        self.site._refusals.log(
            "{status} to {peer}: {reason}", status=status, peer=getattr(self.addr, "host", ""), reason=reason
        )
        transport = self.transport
        assert transport is not None  # refused on data received or a timer cancelled on connection lost
        transport.write(response)
        transport.loseConnection()

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()


def _head_end(buffer: bytes) -> int:
    """Where the first request head in ``buffer`` ends (after its blank line), or -1 while incomplete."""
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n", 0, crlf if crlf >= 0 else len(buffer))
    if lf >= 0:
        return lf + 2
    return crlf + 4 if crlf >= 0 else -1


class GracefulShutdown(Service):
    """Stopping it (``twistd`` stops it on SIGTERM) ends the app's connections gracefully, within a bound.

    Every WebSocket is closed with 1001 "going away", without a WAMP GOODBYE, so that clients reconnect
    (to another node, or to this one once restarted); with ``goodbye``, every session first gets GOODBYE
    ``wamp.close.system_shutdown``, which autobahn-js and wampy.js take as the end: they do not reconnect.
    REST requests in flight on ``site`` may finish. After ``timeout`` seconds what is left is cut off.
    Stop listening alongside (``twistd sandstone`` stops its listening port at the same time).
    """

    name = "shutdown"  # type: ignore[assignment, unused-ignore]  # Service declares `name = None`

    def __init__(
        self,
        app: Sandstone,
        site: SandstoneSite | None = None,
        timeout: float = 5.0,
        clock: Any = None,
        *,
        goodbye: bool = False,
    ) -> None:
        self.app = app
        self.site = site
        self.timeout = timeout
        self.goodbye = goodbye
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock

    def stopService(self) -> Deferred[None]:
        super().stopService()
        factory = self.app._core.factory
        if factory is not None:
            count = len(factory.connections)
            if self.goodbye:
                log.info("shutting down: GOODBYE to {count} connection(s)", count=count)
            else:
                log.info("shutting down: closing {count} connection(s), 1001 going away", count=count)
            factory.shutdown(grace=min(1.0, self.timeout / 2), goodbye=self.goodbye)
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
