"""Connections to Redis that keep themselves up: TLS, Sentinel, recovery from every way a connection fails.

A ``RedisLink`` is one connection (the bus has two: commands, and pub/sub). It connects through an endpoint
(plain TCP, TLS, or ``SentinelEndpoint``, which asks the Sentinels where the master is before every attempt),
then says hello itself — AUTH, SELECT, ROLE (through Sentinel: is this still the master?), PING — each answer
awaited at most ``timeout`` seconds, then hands the connection to its owner's ``ready`` (the bus subscribes
there). Whatever fails on the way — refused, a connect that times out, a proxy that accepts then closes, or
that accepts and never answers, a connection closed in the middle of a command, a TLS or AUTH error, a
replica where the master was — the connection is dropped and tried again with capped exponential backoff,
forever, until ``disconnect()``. (txredisapi's own factories stop reconnecting for good when AUTH or SELECT
fail, which is what a proxy in front of a dead Redis makes them do: this module does not use them.)

Through Sentinel, ``SentinelEndpoint.watcher`` also listens for ``+switch-master`` on a Sentinel, so that the
links move to a new master as soon as it is announced (``RedisLink.move_to``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._redis_url import RedisAddress, SentinelAddress, TLSFiles, check_tls_files, host_port

if TYPE_CHECKING:
    from twisted.internet.ssl import PrivateCertificate

__all__ = [
    "ClientTLS",
    "CommandProtocol",
    "RedisLink",
    "SentinelEndpoint",
    "SentinelError",
    "SubscriberProtocol",
    "check_url",
    "redis_endpoint",
]

log = Logger()

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class SentinelError(Exception):
    """No Sentinel could say where the master is."""


class ClientTLS:
    """The TLS settings of a ``rediss://`` URL, loaded once: trusted CAs (the system's unless ``ca_file``)
    and the client certificate. ``ValueError`` when a file cannot be read or holds no usable PEM."""

    def __init__(self, files: TLSFiles) -> None:
        _check_tls_support()
        check_tls_files(files)
        from twisted.internet.ssl import Certificate, PrivateCertificate, trustRootFromCertificates

        self.files = files
        self._trust: Any = None  # the platform's CAs
        if files.ca_file:
            with open(files.ca_file, "rb") as f:
                pems = _PEM_CERTIFICATE.findall(f.read())
            try:
                self._trust = trustRootFromCertificates([Certificate.loadPEM(pem) for pem in pems])
            except Exception as exc:
                raise ValueError(
                    f"ssl_ca_certs={files.ca_file}: not a valid PEM certificate ({exc})"
                ) from None
        self._client: PrivateCertificate | None = None
        if files.cert_file:
            pem = b""
            for path in (files.cert_file, files.key_file):
                if path:
                    with open(path, "rb") as f:
                        pem += f.read() + b"\n"
            try:
                self._client = PrivateCertificate.loadPEM(pem)
            except Exception as exc:
                raise ValueError(
                    f"ssl_certfile={files.cert_file}: not a valid PEM certificate and key ({exc})"
                ) from None

    def creator(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """Client TLS options for a server called ``hostname`` (a name or an IP address its certificate
        must carry)."""
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(hostname, trustRoot=self._trust, clientCertificate=self._client)


def _check_tls_support() -> None:
    """Refuse TLS without the packages that verify certificates: without service_identity, Twisted would
    connect without checking the server's name."""
    try:
        import OpenSSL  # noqa: F401
        import service_identity  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"rediss:// needs pyOpenSSL and service_identity ({exc.name} is missing): "
            "pip install 'twisted[tls]'"
        ) from None


def check_url(url: str) -> RedisAddress:
    """Parse a Redis URL and load its TLS files: ``ValueError`` for anything a node would refuse."""
    address = RedisAddress.parse(url)
    if address.tls is not None:
        ClientTLS(address.tls)
    return address


def _server_endpoint(reactor: Any, host: str, port: int, timeout: float, tls: ClientTLS | None) -> Any:
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    return endpoint if tls is None else wrapClientTLS(tls.creator(host), endpoint)


def redis_endpoint(
    address: RedisAddress,
    reactor: Any,
    *,
    timeout: float,
    tls: ClientTLS | None = None,
    on_master: Callable[[str | None, str], None] | None = None,
) -> IStreamClientEndpoint:
    """Where to connect for ``address``: its server over TCP or TLS (``tls``), or the master its Sentinels
    name (``on_master(old, new)`` is told when that changes). ``timeout`` bounds each TCP connect and each
    question to a Sentinel."""
    if address.sentinel is not None:
        return SentinelEndpoint(reactor, address.sentinel, timeout=timeout, tls=tls, on_master=on_master)
    endpoint: IStreamClientEndpoint = _server_endpoint(reactor, address.host, address.port, timeout, tls)
    return endpoint


@implementer(IStreamClientEndpoint)
class _Rotating:
    """Connects through each of ``endpoints`` in turn, one per attempt."""

    def __init__(self, endpoints: list[Any]) -> None:
        self._endpoints = endpoints
        self._next = 0

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        endpoint = self._endpoints[self._next % len(self._endpoints)]
        self._next += 1
        d: Deferred[Any] = endpoint.connect(protocolFactory)
        return d


class _SentinelQuery(txredisapi.RedisProtocol):  # type: ignore[misc]  # txredisapi has no types
    """A short connection to one Sentinel."""


class _OneProtocol(Factory):
    """Builds the one protocol it is given (as ``connectProtocol`` does, without logging each connection)."""

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self._protocol


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the master of ``sentinel.master``: asks the Sentinels for its address before every
    attempt (``SENTINEL GET-MASTER-ADDR-BY-NAME``), one after the other (the one that answered last time
    first), and connects there. The link then checks with ROLE that it is the master indeed."""

    def __init__(
        self,
        reactor: Any,
        sentinel: SentinelAddress,
        *,
        timeout: float,
        tls: ClientTLS | None = None,
        on_master: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self.sentinel = sentinel
        self._timeout = timeout
        self._tls = tls
        self._on_master = on_master
        self._hosts = list(sentinel.hosts)
        self.master: tuple[str, int] | None = None

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        d = self.find_master()
        d.addCallback(
            lambda addr: _server_endpoint(self._reactor, addr[0], addr[1], self._timeout, self._tls).connect(
                protocolFactory
            )
        )
        return d

    def watcher(
        self,
        *,
        initial_delay: float,
        max_delay: float,
        on_switch: Callable[[tuple[str, int]], None],
        label: str = "Sentinel watch",
    ) -> RedisLink:
        """A link (to start) subscribed to ``+switch-master`` on one of the Sentinels (the next one after each
        failed attempt): when they announce a new address for this master, ``on_switch(address)`` is called,
        so that connections move at once instead of at their next failure. (Without it, a failover asked for
        while the old master runs moves them only when the Sentinels reconfigure the old one, some seconds
        later.) Its own failures are logged at debug level only: the connections do not depend on it."""
        sentinel = self.sentinel
        credentials = RedisAddress("", 0, 0, sentinel.username, sentinel.password)
        endpoint = _Rotating(
            [
                _server_endpoint(self._reactor, host, port, self._timeout, self._tls)
                for host, port in self._hosts
            ]
        )

        def subscribe(protocol: SubscriberProtocol) -> Deferred[Any]:
            d: Deferred[Any] = protocol.subscribe(["+switch-master"])
            return d.addTimeout(self._timeout, self._reactor)

        def announced(channel: str, payload: Any) -> None:
            parts = str(payload).split()
            if len(parts) == 5 and parts[0] == sentinel.master and parts[4].isdigit():
                address = (parts[3], int(parts[4]))
                self._found(address)
                on_switch(address)

        def quiet(what: str) -> Callable[[str], None]:
            return lambda reason: log.debug(
                "{label}: {what} ({reason})", label=label, what=what, reason=reason
            )

        return RedisLink(
            endpoint,
            SubscriberProtocol,
            credentials,
            reactor=self._reactor,
            timeout=self._timeout,
            initial_delay=initial_delay,
            max_delay=max_delay,
            select_db=False,
            ready=subscribe,
            lost=quiet("connection lost"),
            failed=quiet("connection failed"),
            on_message=announced,
            label=label,
            ready_step="SUBSCRIBE +switch-master",
        )

    def find_master(self) -> Deferred[tuple[str, int]]:
        """The master's address as the first Sentinel that knows it says; ``SentinelError`` (saying what
        each one answered) when none does."""
        hosts = list(self._hosts)
        problems: list[str] = []
        name = self.sentinel.master

        def ask_next(_: object = None) -> Deferred[tuple[str, int]]:
            if not hosts:
                raise SentinelError(
                    f"no Sentinel gave the address of master {name!r}: " + "; ".join(problems)
                )
            host = hosts.pop(0)
            return self._ask(host).addCallbacks(found, failed, callbackArgs=(host,), errbackArgs=(host,))

        def found(addr: tuple[str, int] | None, host: tuple[str, int]) -> Any:
            if addr is None:
                problems.append(f"{host_port(*host)} knows no master named {name!r}")
                return ask_next()
            self._hosts.remove(host)
            self._hosts.insert(0, host)
            self._found(addr)
            return addr

        def failed(failure: Failure, host: tuple[str, int]) -> Any:
            if failure.check(CancelledError):
                return failure
            problems.append(f"{host_port(*host)}: {_reason(failure)}")
            return ask_next()

        return ask_next()

    def _found(self, addr: tuple[str, int]) -> None:
        old, self.master = self.master, addr
        if old != addr and self._on_master is not None:
            self._on_master(None if old is None else host_port(*old), host_port(*addr))

    def _ask(self, host: tuple[str, int]) -> Deferred[tuple[str, int] | None]:
        endpoint = _server_endpoint(self._reactor, host[0], host[1], self._timeout, self._tls)
        query = _SentinelQuery(replyTimeout=self._timeout)
        query.callLater = self._reactor.callLater
        sentinel = self.sentinel

        def ask(protocol: _SentinelQuery) -> Deferred[Any]:
            d: Deferred[Any] = succeed(None)
            if sentinel.password is not None or sentinel.username:
                d.addCallback(lambda _: protocol.auth(sentinel.password or "", sentinel.username))
            d.addCallback(
                lambda _: protocol.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinel.master)
            )
            return d

        def close(result: object) -> object:
            if query.transport is not None and query.connected:
                query.transport.loseConnection()
            return result

        connecting: Deferred[Any] = endpoint.connect(_OneProtocol(query))
        d: Deferred[tuple[str, int] | None] = (
            connecting.addCallback(ask).addBoth(close).addCallback(_master_address)
        )
        return d.addTimeout(self._timeout * 2, self._reactor, onTimeoutCancel=_timed_out)


def _master_address(reply: Any) -> tuple[str, int] | None:
    if reply is None:
        return None
    if isinstance(reply, list) and len(reply) == 2 and str(reply[1]).isdigit():
        return str(reply[0]), int(reply[1])
    raise SentinelError(f"unexpected answer to SENTINEL GET-MASTER-ADDR-BY-NAME: {reply!r}")


def _timed_out(result: Any, timeout: float) -> Any:
    if isinstance(result, Failure) and result.check(CancelledError):
        raise TimeoutError(f"no answer within {timeout} s")
    return result


def _reason(failure: Failure, lost: Failure | None = None) -> str:
    """What went wrong, in a few words for a log line."""
    if lost is not None and failure.check(txredisapi.ConnectionError):
        failure = lost  # "Lost connection" says less than why it was lost (a TLS error, ...)
    tls = _tls_problem(failure)
    if tls is not None:
        return tls
    if failure.check(TimeoutError):  # Deferred.addTimeout's: TimeoutError(seconds, "Deferred")
        args = getattr(failure.value, "args", ())
        return f"timed out: no answer within {args[0]} s" if args else "timed out"
    if failure.check(txredisapi.TimeoutError):
        return f"timed out ({failure.getErrorMessage()})"
    if failure.check(error.TimeoutError):
        return "TCP connect timed out"
    return failure.getErrorMessage()


def _tls_problem(failure: Failure) -> str | None:
    if failure.check("service_identity.exceptions.VerificationError"):
        return f"TLS: the server's certificate is not for the name or address connected to ({failure.value})"
    if failure.check("OpenSSL.SSL.Error"):
        args = getattr(failure.value, "args", ())
        errors = args[0] if args else []
        if isinstance(errors, list) and all(isinstance(e, tuple) and e for e in errors):
            return "TLS: " + "; ".join(str(e[-1]) for e in errors)
        return f"TLS: {failure.getErrorMessage()}"
    return None


class _Linked:
    """What a link's protocols do besides Redis: tell their link when the connection is lost."""

    factory: _LinkFactory
    lost_reason: Failure | None = None

    def connectionLost(self, why: Failure) -> None:
        self.lost_reason = why
        super().connectionLost(why)  # type: ignore[misc]  # txredisapi's protocol, after this class
        self.factory.link._lost(self, why)


class CommandProtocol(_Linked, txredisapi.RedisProtocol):  # type: ignore[misc]  # txredisapi has no types
    """A link's command connection."""


class SubscriberProtocol(_Linked, txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """A link's pub/sub connection: messages go to the link's ``on_message(channel, payload)``."""

    def messageReceived(self, pattern: Any, channel: str, payload: Any) -> None:
        self.factory.link.on_message(channel, payload)


class _LinkFactory(Factory):
    """Builds the protocols of one link, answering within the link's timeout, on its reactor."""

    noisy = False

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.link.protocol_class(replyTimeout=self.link.timeout)
        protocol.factory = self
        protocol.callLater = self.link.reactor.callLater  # the reply timeouts
        return protocol


class RedisLink:
    """One connection to Redis, kept up (see the module).

    ``ready(protocol)`` runs once the hello is done, each time; it may return a Deferred (the connection
    counts as up when it fires; if it fails, the connection is dropped and retried, and the failure is
    said to be ``ready_step``'s). ``lost(reason)`` is
    called when an up connection is lost, ``failed(reason)`` after every attempt that did not get that far
    (each also logged at debug level, after ``label``). ``protocol`` is the connection while it is up, else
    None.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        protocol_class: type,
        address: RedisAddress,
        *,
        reactor: Any,
        timeout: float,
        initial_delay: float,
        max_delay: float,
        select_db: bool,
        ready: Callable[[Any], Deferred[Any] | None],
        lost: Callable[[str], None],
        failed: Callable[[str], None],
        on_message: Callable[[str, Any], None] | None = None,
        label: str = "Redis connection",
        ready_step: str = "ready",
    ) -> None:
        self.endpoint = endpoint
        self.label = label
        self.protocol_class = protocol_class
        self.address = address
        self.reactor = reactor
        self.timeout = timeout
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._select_db = select_db
        self._ready = ready
        self._ready_step = ready_step
        self._lost_callback = lost
        self._failed_callback = failed
        self.on_message = on_message or (lambda channel, payload: None)
        self.protocol: Any = None
        self.failures = 0  # attempts failed in a row
        self._factory = _LinkFactory(self)
        self._current: Any = None  # the protocol whose transport is open, up or saying hello
        self._up = False
        self._stopped = True
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._closed: list[Deferred[None]] = []
        self._prompt = False  # the next attempt without waiting

    def start(self) -> None:
        """Connect, and keep connecting."""
        if self._stopped:
            self._stopped = False
            self._connect()

    def disconnect(self) -> Deferred[None]:
        """Stop (re)connecting and close the connection; fires once it is closed."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        if self._current is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        self._current.transport.loseConnection()
        return d

    def move_to(self, address: tuple[str, int]) -> None:
        """Redis is at ``address`` from now on (the Sentinels said so): drop a connection (or an attempt)
        that may lead elsewhere and try again at once; skip the wait if one was due."""
        if self._stopped:
            return
        current = self._current
        if current is not None:
            peer = current.transport.getPeer()
            if (getattr(peer, "host", None), getattr(peer, "port", None)) != address:
                self._prompt = True
                current.transport.abortConnection()
        elif self._attempt is not None:
            self._prompt = True
            self._attempt.cancel()
        elif self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._connect()

    def _connect(self) -> None:
        self._retry = None
        d = self.endpoint.connect(self._factory)
        d.addCallback(self._hello)
        d.addCallbacks(self._succeeded, self._failed)
        self._attempt = d if not d.called else None

    def _hello(self, protocol: Any) -> Deferred[None]:
        """AUTH, SELECT, ROLE, PING as needed, then the owner's ``ready``."""
        self._current = protocol
        address = self.address
        steps: list[tuple[str, Callable[[], Deferred[Any]]]] = []
        if address.password is not None or address.username:
            steps.append(("AUTH", lambda: protocol.auth(address.password or "", address.username)))
        if self._select_db and address.db:
            steps.append((f"SELECT {address.db}", lambda: protocol.select(address.db)))
        if address.sentinel is not None:
            steps.append(("ROLE", lambda: protocol.role().addCallback(_check_master)))
        elif self._select_db:  # the command connection proves here that Redis answers
            steps.append(("PING", protocol.ping))
        d: Deferred[Any] = succeed(None)
        for name, step in steps:
            d.addCallback(_run_step, step)
            d.addErrback(_failed_step, name, protocol)
        d.addCallback(lambda _: self._became_ready(protocol))
        d.addErrback(_failed_step, self._ready_step, protocol)
        d.addErrback(lambda f: self._drop(f, protocol))
        return d

    def _became_ready(self, protocol: Any) -> Deferred[Any]:
        self.protocol = protocol
        return maybeDeferred(self._ready, protocol)

    def _drop(self, failure: Failure, protocol: Any) -> Failure:
        """The hello failed: close the connection (unless lost already), pass the failure on explained."""
        self.protocol = None
        if protocol.connected:
            protocol.transport.abortConnection()
        if failure.check(CancelledError):
            return failure
        return Failure(_HelloFailed(_reason(failure, protocol.lost_reason)))

    def _succeeded(self, _: object) -> None:
        self._attempt = None
        self.failures = 0
        self._up = True

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if self._stopped:
            return
        if not (self._prompt and failure.check(CancelledError)):  # not just moving to another master
            self.failures += 1
            reason = failure.getErrorMessage() if failure.check(_HelloFailed) else _reason(failure)
            log.debug(
                "{label}: attempt {count} failed: {reason}",
                label=self.label,
                count=self.failures,
                reason=reason,
            )
            self._failed_callback(reason)
        self._schedule()

    def _lost(self, protocol: Any, why: Failure) -> None:
        if protocol is not self._current:
            return
        self._current = None
        was_up, self._up = self._up, False
        if protocol is self.protocol:
            self.protocol = None
        if was_up:
            self._lost_callback("left for the new master" if self._prompt else _reason(why))
            if not self._stopped:
                self._schedule()
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def _schedule(self) -> None:
        if self._retry is not None or self._stopped:
            return
        delay = 0.0 if self._prompt else self.delay(max(1, self.failures))
        self._prompt = False
        self._retry = self.reactor.callLater(delay, self._connect)

    def delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt`` of a row (1 after a lost connection): doubling from
        ``initial_delay`` up to ``max_delay``, give or take 10% so that nodes do not come back in step."""
        delay = min(self.initial_delay * 2 ** min(attempt - 1, 30), self.max_delay)
        return float(delay * random.uniform(0.9, 1.1))


class _HelloFailed(Exception):
    """A connection was made but is not usable (its failure explained)."""


def _run_step(_: object, step: Callable[[], Deferred[Any]]) -> Deferred[Any]:
    return step()


def _failed_step(failure: Failure, name: str, protocol: Any) -> Failure:
    if failure.check(CancelledError, _HelloFailed):
        return failure  # cancelled, or explained already
    lost = protocol.lost_reason
    if lost is not None and _tls_problem(lost) is not None:
        return Failure(_HelloFailed(_reason(lost)))  # not the command's fault
    return Failure(_HelloFailed(f"{name} failed: {_reason(failure, lost)}"))


def _check_master(role: Any) -> None:
    kind = role[0] if isinstance(role, list) and role else role
    if kind != "master":
        what = kind if kind in ("slave", "replica", "sentinel") else "not master"
        raise _HelloFailed(f"the server the Sentinels named is not the master (ROLE: {what}); asking again")
