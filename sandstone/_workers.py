"""``twistd sandstone --workers N``: N reactor processes serving one listening TCP socket.

The twistd process is the supervisor and worker 1: it binds the socket once (so a port in use, port 0 or a
privileged port behave as with one process), serves on it itself, and spawns workers 2..N, each a full
node (``python -m sandstone._worker``: its own app, loaded from the same ``--app``, and its own Redis bus
connection and node id) that inherits the socket as its file descriptor 3 and accepts on it with
``reactor.adoptStreamPort``. All processes accept from the one kernel queue, so an idle worker takes the
next connection, and a worker that dies loses no connection still waiting to be accepted.

- Worker logs: each worker writes its log events as JSON lines to its stdout; the supervisor re-publishes
  them in its own log (same level, namespace and time), their text prefixed with ``worker N:``. Anything
  else a worker writes (stderr, non-JSON lines) is logged as text, prefixed the same way.
- A worker that exits or dies while the supervisor runs is logged and started again (at once if it had run
  for a while, else after a growing delay, up to 30 s, so that a worker failing at startup does not spin).
- Stopping the supervisor (SIGTERM to twistd) sends SIGTERM to every worker, which shuts down gracefully
  as a single twistd does (its WebSockets closed, REST requests finish); one still running after
  ``--shutdown-timeout`` + 5 s gets SIGKILL. The supervisor exits once every worker has ended.
- A worker stopped on its own (SIGTERM to its pid, a rolling restart) says so in its log as it stops
  accepting: from then on the supervisor accepts on its socket, so the clients it closes (1001, no GOODBYE)
  reconnect to this process at once instead of waiting on that socket until the worker has exited.
- A worker also stops when the pipe on its stdin closes: the supervisor is gone (even killed with SIGKILL),
  so no worker outlives it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from twisted.application.service import Service
from twisted.internet import error, fdesc
from twisted.internet.abstract import FileDescriptor, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProcessTransport, IReactorTCP, IReactorThreads
from twisted.internet.protocol import ProcessProtocol, ServerFactory
from twisted.logger import ILogObserver, Logger, LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: The file descriptor under which a worker inherits the listening socket.
LISTEN_FD = 3

#: A worker that ran at least this long before it died is restarted at once.
STABLE_AFTER = 10.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: How much longer than ``--shutdown-timeout`` a stopping worker may take before it gets SIGKILL.
KILL_GRACE = 5.0


def bind_sockets(family: int, interface: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address, bound with SO_REUSEPORT so that Linux spreads new
    connections evenly over them; one socket elsewhere (all workers then accept on it).

    @raise CannotListenError: as ``reactor.listenTCP`` does when the address cannot be bound.
    """
    reuse_port = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, port))
            port = sock.getsockname()[1]  # port 0: the others join the port the first one got
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise error.CannotListenError(interface, port, err) from None
    return sockets


class TCPAddress(NamedTuple):
    """Where a TCP server endpoint listens."""

    family: int
    interface: str
    port: int
    backlog: int


@implementer(IReactorTCP)
class _ListenRecorder:
    """A reactor that only notes where an endpoint asks it to listen."""

    address: tuple[int, int, str] | None = None

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        self.address = (port, backlog, interface)

    def connectTCP(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def tcp_address(listen: str) -> TCPAddress:
    """Where the ``tcp:`` or ``tcp6:`` endpoint description ``listen`` listens, as Twisted parses it: the
    endpoint ``serverFromString`` builds is asked to listen on a reactor that notes where (endpoints keep
    their address private).

    @raise ValueError: ``listen`` describes another kind of endpoint (one Twisted cannot parse raises what
        ``serverFromString`` raises).
    """
    recorder = _ListenRecorder()
    endpoint = serverFromString(recorder, listen)
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        endpoint.listen(ServerFactory())
    if recorder.address is None:
        raise ValueError(f"not a tcp: or tcp6: endpoint description: {listen!r}")
    port, backlog, interface = recorder.address
    ipv6 = isinstance(endpoint, TCP6ServerEndpoint) or isIPv6Address(interface)
    if ipv6:
        return TCPAddress(socket.AF_INET6, interface or "::", port, backlog)
    return TCPAddress(socket.AF_INET, interface, port, backlog)


class SharedListener(Service):
    """The supervisor's "web" service: binds the ``--listen`` address once per worker (see
    ``bind_sockets``), accepts on worker 1's socket itself, and keeps the others open for the workers.

    While a worker is down, this process accepts on its socket too (``take_over``), until the restarted
    worker accepts again (``hand_back``): connections queued there are served, not lost.
    """

    name = "web"  # type: ignore[assignment, unused-ignore]  # Service declares `name = None`

    def __init__(self, listen: str, count: int, factory: Any, reactor: Any = None) -> None:
        """``listen`` is a ``tcp:`` or ``tcp6:`` endpoint description (``--listen``)."""
        self.family, self.interface, self.requested_port, self.backlog = tcp_address(listen)
        self.count = count
        self.factory = factory
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.sockets: list[socket.socket] = []
        self.port: IListeningPort | None = None
        self.taken_over: dict[int, IListeningPort] = {}

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.sockets:
            return
        self.sockets = bind_sockets(
            self.family, self.interface, self.requested_port, self.backlog, self.count
        )
        self.port = self._adopt(1)

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def fileno(self, number: int) -> int:
        """The file descriptor of worker ``number``'s listening socket."""
        return self.sockets[(number - 1) % len(self.sockets)].fileno()

    def _adopt(self, number: int) -> IListeningPort:
        port: IListeningPort = self._reactor.adoptStreamPort(self.fileno(number), self.family, self.factory)
        return port

    def take_over(self, number: int) -> None:
        """Accept on worker ``number``'s socket here, while it is down."""
        if self.running and number not in self.taken_over and len(self.sockets) > 1:
            self.taken_over[number] = self._adopt(number)

    def hand_back(self, number: int) -> None:
        """Worker ``number`` accepts again: stop accepting on its socket here."""
        port = self.taken_over.pop(number, None)
        if port is not None:
            port.stopListening()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        ports = [port for port in (self.port, *self.taken_over.values()) if port is not None]
        self.port, self.taken_over = None, {}
        stopped = DeferredList([maybeDeferred(port.stopListening) for port in ports])
        sockets, self.sockets = self.sockets, []
        for sock in sockets:  # the workers hold their own copies
            sock.close()
        return stopped


class InheritedPortService(Service):
    """A worker's "web" service: accepts on the listening socket inherited as file descriptor ``fd``."""

    name = "web"  # type: ignore[assignment, unused-ignore]  # Service declares `name = None`

    def __init__(self, fd: int, factory: Any, reactor: Any = None) -> None:
        self.fd = fd
        self.factory = factory
        self.port: IListeningPort | None = None
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is not None:
            return
        probe = socket.socket(fileno=self.fd)  # finds out the address family (AF_INET or AF_INET6)
        family = probe.family
        probe.detach()
        self.port = self._reactor.adoptStreamPort(self.fd, family, self.factory)  # adopts a duplicate
        os.close(self.fd)
        # tells the supervisor to stop accepting on this socket for us, if it did while we were down
        log.info("accepting connections", sandstone_accepting=True)

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        # tells the supervisor to accept on this socket meanwhile, while it runs (see WorkerSupervisor.relay)
        log.info("no longer accepting connections", sandstone_accepting=False)
        return port.stopListening()


# Options a worker gets some other way than its command line (which other local users can read).
_NOT_IN_ARGV = frozenset({"workers", "cluster-secret"})


def worker_arguments(options: Any, parameters: Sequence[Any], flags: Sequence[Any] = ()) -> list[str]:
    """The ``twistd sandstone`` arguments a worker gets: every option given, except ``--workers`` and
    ``--cluster-secret`` (see ``worker_environment``). ``parameters``: ``Options.optParameters``;
    ``flags``: ``Options.optFlags``."""
    arguments = []
    for long, *_rest in parameters:
        if long in _NOT_IN_ARGV:
            continue
        value = options.get(long)
        if value is not None:
            arguments.append(f"--{long}={value}")
    arguments.extend(f"--{long}" for long, *_rest in flags if options.get(long))
    return arguments


def worker_environment(options: Any) -> dict[str, str]:
    """The environment variables a worker gets besides the supervisor's own: the cluster secret given
    with ``--cluster-secret`` travels as ``SANDSTONE_CLUSTER_SECRET``, not on the command line."""
    secret = options.get("cluster-secret")
    if not secret:
        return {}
    from sandstone._bus import CLUSTER_SECRET_ENV

    return {CLUSTER_SECRET_ENV: secret}


def _describe_end(reason: Failure) -> str:
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by {name}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class _WorkerProcess(ProcessProtocol):
    """One worker process, seen from the supervisor: relays its output to the log, reports its end."""

    transport: IProcessTransport  # set before connectionMade

    def __init__(self, supervisor: WorkerSupervisor, number: int, started: float) -> None:
        self.supervisor = supervisor
        self.number = number
        self.started = started
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._buffers = {1: b"", 2: b""}

    @property
    def running(self) -> bool:
        return not self.ended.called

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd not in self._buffers:
            return
        *lines, self._buffers[fd] = (self._buffers[fd] + data).split(b"\n")
        for line in lines:
            self.supervisor.relay(self.number, line, fd)

    def signal(self, name: str) -> None:
        if self.running:
            try:
                self.transport.signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest:
                self.supervisor.relay(self.number, rest, fd)
        self._buffers = {1: b"", 2: b""}
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class WorkerSupervisor(Service):
    """Runs workers 2..``count`` on the listening port that ``listening()`` returns, while it runs.

    ``arguments`` are the ``twistd sandstone`` options of a worker (see ``worker_arguments``);
    ``environment`` adds variables to the supervisor's own for the workers (see ``worker_environment``).
    """

    name = "workers"  # type: ignore[assignment, unused-ignore]  # Service declares `name = None`

    def __init__(
        self,
        count: int,
        arguments: Sequence[str],
        listener: SharedListener,
        stop_timeout: float,
        reactor: Any = None,
        observer: ILogObserver | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.count = count
        self.arguments = list(arguments)
        self._extra_environment = dict(environment or {})
        self.listener = listener
        self.stop_timeout = stop_timeout
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._observer = observer if observer is not None else globalLogPublisher
        self.workers: dict[int, _WorkerProcess] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, Any] = {}

    # starting

    def startService(self) -> None:
        super().startService()
        log.debug(  # the startup line says it too ("sandstone serving ...")
            "sandstone runs {count} workers: this process (pid {pid}) is worker 1 and supervises the others",
            count=self.count,
            pid=os.getpid(),
        )
        for number in range(2, self.count + 1):
            self._spawn(number)

    def command(self, number: int) -> list[str]:
        """The argv of worker ``number``."""
        return [sys.executable, "-m", "sandstone._worker", str(number), str(LISTEN_FD), *self.arguments]

    def _environment(self) -> dict[str, str]:
        # The worker imports this very sandstone, whatever made it importable here.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {**os.environ, **self._extra_environment, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        if not self.running or not self.listener.running:
            return
        worker = _WorkerProcess(self, number, self._reactor.seconds())
        self.workers[number] = worker
        # stdin is a pipe the worker watches: when it closes, the supervisor is gone and the worker stops.
        self._reactor.spawnProcess(
            worker,
            sys.executable,
            self.command(number),
            env=self._environment(),
            path=os.getcwd(),
            childFDs={0: "w", 1: "r", 2: "r", LISTEN_FD: self.listener.fileno(number)},
        )
        log.info("worker {number} started (pid {pid})", number=number, pid=worker.pid)

    # a worker's end

    def ended(self, worker: _WorkerProcess, reason: Failure) -> None:
        how = _describe_end(reason)
        if not self.running:
            log.info("worker {number} (pid {pid}) {how}", number=worker.number, pid=worker.pid, how=how)
            return
        ran = self._reactor.seconds() - worker.started
        if ran >= STABLE_AFTER:
            delay = 0.0
        else:
            delay = self._delays.get(worker.number, FIRST_RESTART_DELAY / 2) * 2
            delay = min(delay, MAX_RESTART_DELAY)
        self._delays[worker.number] = delay or FIRST_RESTART_DELAY / 2
        self.listener.take_over(worker.number)
        log.warn(
            "worker {number} (pid {pid}) {how} after {ran:.1f} s; restarting it{when} (this process accepts"
            " its connections meanwhile)",
            number=worker.number,
            pid=worker.pid,
            how=how,
            ran=ran,
            when=f" in {delay:g} s" if delay else "",
        )
        self._restarts[worker.number] = self._reactor.callLater(delay, self._spawn, worker.number)

    # stopping

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        alive = [worker for worker in self.workers.values() if worker.running]
        if not alive:
            return succeed(None)
        log.info("stopping {count} worker(s) (SIGTERM)", count=len(alive))
        for worker in alive:
            worker.signal("TERM")

        def kill() -> None:
            late = [worker for worker in alive if worker.running]
            log.warn(
                "worker(s) {numbers} still running {timeout:g} s after SIGTERM; sending SIGKILL",
                numbers=", ".join(str(worker.number) for worker in late),
                timeout=self.stop_timeout,
            )
            for worker in late:
                worker.signal("KILL")

        killer = self._reactor.callLater(self.stop_timeout, kill)
        done = DeferredList([worker.ended for worker in alive])

        def finished(_: Any) -> None:
            if killer.active():
                killer.cancel()

        return done.addCallback(finished)

    # logs

    def relay(self, number: int, line: bytes, fd: int) -> None:
        """Log one line of worker ``number``'s stdout (JSON log events) or stderr (text)."""
        text = line.strip(b"\x1e\r\n \t")
        if not text:
            return
        decoded = text.decode("utf-8", "replace")
        if fd == 1 and decoded.startswith("{"):
            try:
                event = eventFromJSON(decoded)
            except (ValueError, TypeError, KeyError):
                event = None
            if isinstance(event, dict):
                accepting = event.get("sandstone_accepting")
                if accepting is True:
                    self.listener.hand_back(number)
                elif accepting is False:  # the worker is stopping: its clients reconnect, to this process
                    self.listener.take_over(number)
                log_format = event.get("log_format")
                # literal text: the worker flattened the format's fields, and the prefix has none
                event["log_format"] = f"worker {number}: " + (
                    log_format if isinstance(log_format, str) else ""
                )
                event["sandstone_worker"] = number
                self._observer(event)
                return
        level = LogLevel.info if fd == 1 else LogLevel.warn
        log.emit(level, "worker {number}: {line}", number=number, line=decoded)


# ---------------------------------------------------------------------------------------------------------
# the worker process


class _ParentPipe(FileDescriptor):
    """Reads the worker's stdin until it closes, which means the supervisor is gone."""

    def __init__(self, reactor: Any, gone: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._gone = gone
        fdesc.setNonBlocking(0)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        return fdesc.readFromFD(0, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._gone()


def run_worker(argv: Sequence[str]) -> None:
    """``python -m sandstone._worker NUMBER FD OPTION...``: serve as worker NUMBER of ``--workers``."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, jsonFileLogObserver
    from twisted.python import usage

    from sandstone._tap import Options, makeService

    # argv[0] is the worker's number: the supervisor's log says which worker a line comes from
    fd, arguments = int(argv[1]), list(argv[2:])
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=True)

    options = Options()
    try:
        options.parseOptions(arguments)
    except usage.UsageError as err:
        log.critical("{error}", error=str(err))
        sys.exit(2)
    root = makeService(options, inherited_fd=fd, worker=int(argv[0]))

    stopping: list[str] = []

    def stop(why: str) -> None:
        if stopping:
            return
        stopping.append(why)
        log.info("{why}, shutting down", why=why)
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            pass

    def on_signal(signum: int, frame: Any) -> None:
        # The global reactor's static type leaves IReactorThreads out; every reactor twistd runs provides it.
        cast(IReactorThreads, reactor).callFromThread(stop, f"Received {signal.Signals(signum).name}")

    def install_signal_handlers() -> None:
        # Twisted's own raise ReactorNotRunning on a second signal (Ctrl-C reaches the whole process group,
        # then the supervisor sends SIGTERM): stop once, whatever arrives.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    try:
        root.privilegedStartService()
        root.startService()
    except Exception:
        log.failure("could not start")
        sys.exit(1)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(install_signal_handlers)
    _ParentPipe(reactor, lambda: stop("The supervisor is gone")).startReading()
    reactor.run()
