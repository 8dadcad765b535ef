"""The ``twistd sandstone`` command: options, app loading and the service tree.

``twisted/plugins/sandstone_plugin.py`` only points twistd here, so that plugin
discovery (``twistd --help``) never imports the framework itself.
"""

import gc
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from twisted.application.app import ServerOptions
from twisted.application.service import IService, IServiceCollection, MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from sandstone._app import Sandstone
from sandstone._history import parse_history_option
from sandstone._limits import Limits
from sandstone._logging import daemon_notice, level_filter, twistd_log_observer, use_log_observer

__all__ = ["AppLoadError", "Options", "SandstoneService", "load_app", "makeService"]

_log = Logger()

#: What the startup log line says for the app when ``--app`` was not given.
DEFAULT_APP_LABEL = "the default app (an empty open router)"


class AppLoadError(Exception):
    """``--app`` does not name a usable application. The message is one line."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(obj: Any) -> str:
    """A short noun phrase for what *obj* is: "a function", "a Klein instance"..."""
    if obj is None:
        return "None"
    if inspect.ismodule(obj):
        return "a module"
    if inspect.isclass(obj):
        return "a class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "a function"
    if inspect.ismethod(obj):
        return "a method"
    name = type(obj).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} instance"


def _ensure_cwd_on_path() -> None:
    """
    Make ``MODULE`` importable relative to the working directory.

    The ``twistd`` console script puts its own ``bin/`` directory, not the
    working directory, first on ``sys.path``, so ``twistd sandstone --app
    examples.blog:app`` run from a checkout could not find ``examples``.
    """
    cwd = os.getcwd()
    for entry in sys.path:
        if os.path.abspath(entry or os.curdir) == cwd:
            return
    sys.path.insert(0, cwd)


def _module_missing(err: ModuleNotFoundError, modname: str) -> bool:
    """Was it *modname* itself (or one of its parent packages) that was not found?"""
    missing = err.name or ""
    return bool(missing) and (modname == missing or modname.startswith(missing + "."))


def load_app(spec: str) -> Sandstone:
    """
    Import ``MODULE:ATTRIBUTE`` and return that L{Sandstone} app.

    ``ATTRIBUTE`` may be dotted (``pkg.mod:holder.app``).

    @raise AppLoadError: with a one-line message saying what is wrong.
    """
    modname, sep, attrpath = spec.partition(":")
    modname, attrpath = modname.strip(), attrpath.strip()
    if not sep or not modname or not attrpath:
        raise AppLoadError(f"--app expects MODULE:ATTRIBUTE, got {spec!r}")

    _ensure_cwd_on_path()
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as err:
        if _module_missing(err, modname):
            if err.name == modname:
                raise AppLoadError(f"no module named {modname!r} (from --app {spec!r})") from err
            raise AppLoadError(
                f"no module named {err.name!r} (needed to import {modname!r} from --app {spec!r})"
            ) from err
        raise AppLoadError(
            f"module {modname!r} was found but importing it failed: "
            f"{type(err).__name__}: {_one_line(str(err))}"
        ) from err
    except Exception as err:  # ImportError, SyntaxError, or whatever the module raised
        raise AppLoadError(
            f"module {modname!r} was found but importing it failed: "
            f"{type(err).__name__}: {_one_line(str(err))}"
        ) from err

    obj: Any = module
    walked: list[str] = []
    for part in attrpath.split("."):
        if not hasattr(obj, part):
            owner = f"{modname}:{'.'.join(walked)}" if walked else f"module {modname!r}"
            raise AppLoadError(f"{owner} has no attribute {part!r}")
        obj = getattr(obj, part)
        walked.append(part)

    if not isinstance(obj, Sandstone):
        hint = ""
        if inspect.isclass(obj) and issubclass(obj, Sandstone):
            hint = " (instantiate it in the module and point --app at the instance)"
        raise AppLoadError(f"{modname}:{attrpath} is {_describe(obj)}, not a sandstone.Sandstone app{hint}")
    return obj


def _default_app() -> Sandstone:
    # Imported lazily: only ``twistd sandstone`` without --app needs it.
    from sandstone._default import make_default_app

    return make_default_app()


#: ``twistd sandstone`` options setting a field of the app's ``Limits``: option -> (field, type, help).
_LIMIT_OPTIONS: dict[str, tuple[str, type, str]] = {
    "max-message-size": (
        "max_message_size",
        int,
        "Bytes of a WebSocket message, incoming (once inflated) or outgoing (a larger one is not sent).",
    ),
    "max-frame-size": ("max_frame_size", int, "Bytes of one incoming WebSocket frame."),
    "max-connections": ("max_connections", int, "Concurrent WebSocket connections; beyond it 503."),
    "publish-rate": ("publish_rate", float, "PUBLISH messages per second per connection (0: no limit)."),
    "publish-burst": ("publish_burst", int, "PUBLISH messages a connection may send at once."),
    "call-rate": ("call_rate", float, "CALL messages per second per connection (0: no limit)."),
    "call-burst": ("call_burst", int, "CALL messages a connection may send at once."),
    "max-outgoing-buffer": (
        "max_outgoing_buffer",
        int,
        "Bytes queued for a client that does not read; beyond it the client is dropped.",
    ),
    "max-request-body": ("max_request_body", int, "Bytes of a REST request body; beyond it 413."),
    "hello-timeout": ("hello_timeout", float, "Seconds a new WebSocket has to open its WAMP session."),
    "open-handshake-timeout": ("open_handshake_timeout", float, "Seconds for the WebSocket handshake."),
    "ping-interval": ("auto_ping_interval", float, "Seconds between pings to each client (0: none)."),
    "ping-timeout": ("auto_ping_timeout", float, "Seconds a client has to answer a ping."),
    "max-header-bytes": ("max_header_bytes", int, "Bytes of a request head (REST or handshake); then 431."),
    "max-header-count": ("max_header_count", int, "Header lines in a request head; then 431."),
    "header-timeout": ("header_timeout", float, "Seconds for a request head to arrive; then 408."),
    "request-timeout": ("request_timeout", float, "Seconds for a whole REST request to arrive; then 408."),
    "idle-timeout": ("idle_timeout", float, "Seconds a keep-alive REST connection may sit idle."),
    "max-pending-connections": (
        "max_pending_connections",
        int,
        "Connections not serving yet (no request head, no WAMP session), server-wide; then 503.",
    ),
    "max-pending-per-ip": ("max_pending_per_ip", int, "Such connections from one client IP; then 503."),
    "max-connections-per-ip": (
        "max_connections_per_ip",
        int,
        "Connections (REST and WebSocket) open from one client IP; beyond it 503 (0: no limit).",
    ),
    "max-subscriptions-per-session": (
        "max_subscriptions_per_session",
        int,
        "Subscriptions of a session; beyond it SUBSCRIBE gets sandstone.error.limit_exceeded.",
    ),
    "max-registrations-per-session": (
        "max_registrations_per_session",
        int,
        "Registrations of a session; beyond it REGISTER gets sandstone.error.limit_exceeded.",
    ),
    "max-call-timeout": ("max_call_timeout", float, "Seconds: the longest CALL timeout (0: no cap)."),
    "max-retained-topics": (
        "max_retained_topics",
        int,
        "Topics keeping a retained event; beyond it the least recently retained to is forgotten.",
    ),
    "max-history-topics": (
        "max_history_topics",
        int,
        "Topics keeping an event history; beyond it the least recently written is forgotten.",
    ),
    "max-history-events": (
        "max_history_events",
        int,
        "Events one wamp.subscription.get_events answer holds at most.",
    ),
    "subscribe-rate": (
        "subscribe_rate",
        float,
        "SUBSCRIBE messages per second per connection (0: no limit).",
    ),
    "subscribe-burst": ("subscribe_burst", int, "SUBSCRIBE messages a connection may send at once."),
    "max-events-per-publication": (
        "max_events_per_publication",
        int,
        "EVENTs one publication may produce for one session (one per matching subscription).",
    ),
    "message-time-slice": (
        "message_time_slice",
        float,
        "Seconds of its messages a connection gets handled at once; the rest wait, reading paused (0: off).",
    ),
}


def _configured_app(spec: str | None, options: Any) -> Sandstone:
    """The app ``spec`` names (the default app for ``None``) with the realm, WebSocket path and limits of
    ``options`` applied: what ``Options.postOptions`` and ``makeService`` (given a plain mapping) both do."""
    app = load_app(spec) if spec is not None else _default_app()
    if options.get("realm") is not None:
        app.realm = _checked_realm(options["realm"])
    if options.get("ws-path") is not None:
        try:
            app.ws_path = _checked_ws_path(options["ws-path"])
        except RuntimeError as err:  # the app's resource() was made already
            raise usage.UsageError(f"--ws-path {options['ws-path']}: {err}") from None
    _apply_limits(app, options)
    if options.get("cryptosign-principals") is not None:
        _use_cryptosign_principals(app, options["cryptosign-principals"], open_router=spec is None)
    _use_http_bridge(app, options)
    for rule in options.get("history") or ():
        try:
            uri, match, limit = parse_history_option(rule)
        except ValueError as err:
            raise usage.UsageError(str(err)) from None
        app.history(uri, match=match, limit=limit)
    return app


#: Options of the HTTP bridge that mean something only with ``--http-publisher`` or ``--http-caller``.
_HTTP_BRIDGE_OPTIONS = (
    "http-bridge-keys",
    "http-bridge-networks",
    "http-bridge-authid",
    "http-bridge-authrole",
    "http-bridge-timeout",
    "http-bridge-max-skew",
    "http-bridge-require-tls",
    "http-bridge-crossbar-errors",
)


def _use_http_bridge(app: Sandstone, options: Any) -> None:
    """Serve Crossbar's HTTP Publisher and Caller where ``--http-publisher`` and ``--http-caller`` say, with
    the keys of ``--http-bridge-keys`` (or ``SANDSTONE_HTTP_BRIDGE_KEYS``) and the other bridge options."""
    paths = {kind: options.get(f"http-{kind}") for kind in ("publisher", "caller")}
    if not any(paths.values()):
        given = [f"--{name}" for name in _HTTP_BRIDGE_OPTIONS if options.get(name)]
        if given:
            raise usage.UsageError(f"{', '.join(given)}: only with --http-publisher or --http-caller PATH")
        return
    if paths["publisher"] == paths["caller"]:
        raise usage.UsageError("--http-publisher and --http-caller need paths of their own")
    from sandstone._http_bridge import KEYS_ENV, BridgeKeysError, keys_from_environment, load_keys

    keys_file = options.get("http-bridge-keys")
    try:
        keys = load_keys(keys_file) if keys_file else keys_from_environment()
    except BridgeKeysError as err:
        raise usage.UsageError(f"{'--http-bridge-keys' if keys_file else KEYS_ENV}: {err}") from None
    networks = options.get("http-bridge-networks")
    common: dict[str, Any] = {
        "keys": keys,
        "networks": [n for n in networks.split(",") if n.strip()] if networks is not None else None,
        "authid": options.get("http-bridge-authid"),
        "require_tls": bool(options.get("http-bridge-require-tls")),
        "crossbar_errors": bool(options.get("http-bridge-crossbar-errors")),
    }
    if options.get("http-bridge-authrole") is not None:
        common["authrole"] = options["http-bridge-authrole"]
    if options.get("http-bridge-max-skew") is not None:
        common["max_skew"] = _seconds(options, "http-bridge-max-skew")
    for kind, path in paths.items():
        if path is None:
            continue
        try:
            if kind == "caller" and options.get("http-bridge-timeout") is not None:
                app.http_caller(path, timeout=_seconds(options, "http-bridge-timeout"), **common)
            elif kind == "caller":
                app.http_caller(path, **common)
            else:
                app.http_publisher(path, **common)
        except ValueError as err:
            raise usage.UsageError(f"--http-{kind} {path}: {err}") from None
    served = " and ".join(f"{kind} at {path}" for kind, path in paths.items() if path)
    count = len(keys or ())
    _log.info(
        "HTTP bridge: {served} ({signed}; clients from {networks})",
        served=served,
        signed=f"signed requests, {count} key{'s' if count > 1 else ''}" if count else "unsigned requests",
        networks=networks or ("anywhere" if count else "this machine only (loopback)"),
    )


def _seconds(options: Any, name: str) -> float:
    try:
        value = float(options[name])
    except ValueError:
        raise usage.UsageError(f"--{name} expects a number of seconds, got {options[name]!r}") from None
    if value < 0:
        raise usage.UsageError(f"--{name} may not be negative")
    return value


def _use_cryptosign_principals(app: Sandstone, path: str, open_router: bool) -> None:
    """Let the holders of the keys in ``path`` in with WAMP-Cryptosign; the open router then lets no one in
    anonymously (anyone could, or else, and the keys would mean nothing)."""
    from sandstone._cryptosign import CryptosignPrincipals, CryptosignPrincipalsError

    try:
        principals = CryptosignPrincipals.from_file(path)
    except CryptosignPrincipalsError as err:
        raise usage.UsageError(f"--cryptosign-principals: {err}") from None
    app.cryptosign_user(principals)
    if open_router:
        app.router.anonymous = False
    _log.info("cryptosign: {count} public keys from {path}", count=len(principals), path=path)


def _checked_realm(realm: str) -> str:
    from autobahn.wamp.exception import InvalidUriError
    from autobahn.wamp.message import check_or_raise_uri

    try:
        check_or_raise_uri(realm, "realm")  # as a client's HELLO is checked: no session could join another
    except InvalidUriError:
        raise usage.UsageError(
            f"--realm {realm!r} is not a realm a client can join: dot-separated words without whitespace "
            "or '#', e.g. realm1 or com.example.app"
        ) from None
    return realm


def _checked_ws_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise usage.UsageError(f"--ws-path expects a URL path such as /ws, got {path!r}")
    return path


def _apply_limits(app: Sandstone, options: Any) -> None:
    """Set the limits and allowed origins given on the command line on the app (others stay)."""
    changes: dict[str, Any] = {}
    for name, (field, kind, _help) in _LIMIT_OPTIONS.items():
        value = options.get(name)
        if value is None:
            continue
        try:
            number = kind(value)
        except ValueError:
            raise usage.UsageError(f"--{name} expects a number, got {value!r}") from None
        if number < 0:
            raise usage.UsageError(f"--{name} may not be negative (0 disables the limit)")
        changes[field] = number
    if changes:
        app.limits = replace(app.limits, **changes)
    origins = options.get("allowed-origins")
    if origins is not None:
        app.allowed_origins = [origin.strip() for origin in origins.split(",") if origin.strip()]
    hosts = options.get("allowed-hosts")
    if hosts is not None:
        app.allowed_hosts = [host.strip() for host in hosts.split(",") if host.strip()]
        if not app.allowed_hosts:  # every request would get 400
            raise usage.UsageError(
                "--allowed-hosts names no host: give patterns like example.com, or * for any"
            )


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Options(usage.Options):
    """Command-line options of ``twistd sandstone``."""

    synopsis = (
        "[--app MODULE:ATTRIBUTE] [--listen ENDPOINT] [--redis URL [--workers N]] [--realm REALM] "
        "[--ws-path PATH] [--verbose] [option...]"
    )
    longdesc = (
        "Serve a sandstone app: its Klein REST routes and its WAMP router, both on one listening endpoint. "
        "The limit options (sizes, rates, timeouts) replace the app's own Limits; the defaults shown are "
        "sandstone's, which apply unless the app sets others. 0 disables a limit. "
        "The log shows info and above; --verbose adds debug messages."
    )

    optParameters = [
        [
            "app",
            "a",
            None,
            "The app to serve, as MODULE:ATTRIBUTE naming a sandstone.Sandstone instance "
            "(e.g. examples.blog:app; MODULE may be in the working directory). Default: an empty open "
            "router: no REST routes and no topics, and anonymous clients may publish, subscribe, register "
            "and call any URI (for trying WAMP clients).",
        ],
        [
            "listen",
            "l",
            "tcp:8080",
            "Twisted server endpoint to listen on: tcp:PORT listens on all interfaces, "
            "tcp:PORT:interface=127.0.0.1 on this machine only; also tcp6:, unix:PATH and "
            "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem.",
        ],
        [
            "realm",
            None,
            None,
            "WAMP realm clients join. Default: the app's own (realm1 unless the app sets another).",
        ],
        ["ws-path", None, None, "URL path of the WAMP WebSocket. Default: the app's own (/ws unless set)."],
        [
            "redis",
            None,
            None,
            "Join a cluster through the Redis at this URL (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
            "rediss://... for TLS with ?ssl_ca_certs=FILE&ssl_certfile=FILE&ssl_keyfile=FILE, or "
            "redis+sentinel://HOST[:PORT],HOST[:PORT]/MASTER[/DB]): every node started with the same Redis "
            "and app behaves as one server. Default: none (unless the app calls app.use_redis): this "
            "process serves its own clients only.",
        ],
        [
            "cluster-name",
            None,
            None,
            "Name of this cluster (with --redis), part of every Redis channel and key name, so that "
            "clusters sharing one Redis server stay apart. Default: none (the database number of --redis "
            "still separates clusters on different databases).",
        ],
        [
            "cluster-secret",
            None,
            None,
            "Secret shared by the nodes of the cluster (with --redis): messages between nodes are signed "
            "with it and unsigned ones refused. Prefer the environment variable SANDSTONE_CLUSTER_SECRET "
            "(read when this option is not given): a command line is visible to other local users.",
        ],
        [
            "allowed-origins",
            None,
            None,
            "Comma-separated browser origins (patterns like https://*.example.com, http://localhost:*, "
            "or *) whose pages may open the WebSocket, besides the pages this server serves itself. "
            "Replaces the app's allowed_origins. Default: the app's allowed_origins.",
        ],
        [
            "allowed-hosts",
            None,
            None,
            "Comma-separated host names (patterns like example.com, *.example.com, example.com:8443, or *) "
            "the app answers to, REST and WebSocket; others get 400. Replaces the app's allowed_hosts. "
            "Default: the app's allowed_hosts; without any, every host, except that a server reached on a "
            "loopback address answers loopback names only (localhost, 127.0.0.1, [::1]).",
        ],
        [
            "cryptosign-principals",
            None,
            None,
            "JSON file of the Ed25519 public keys allowed in with WAMP-Cryptosign: "
            '{"<pubkey hex>": {"authid": "...", "authrole": "..."}}, or a Crossbar cryptosign block '
            '{"type": "static", "principals": {...}}. Replaces the app\'s cryptosign lookup; the open '
            "router (no --app) then refuses anonymous clients. Default: none.",
        ],
        [
            "http-publisher",
            None,
            None,
            "Serve Crossbar's HTTP Publisher at this URL path (e.g. /publish): a POST of "
            '{"topic": URI, "args": [...], "kwargs": {...}, "options": {...}} publishes as a client would '
            'and is answered {"id": ID}. Default: none.',
        ],
        [
            "http-caller",
            None,
            None,
            "Serve Crossbar's HTTP Caller at this URL path (e.g. /call): a POST of "
            '{"procedure": URI, "args": [...], "kwargs": {...}} calls the procedure and is answered with its '
            'result, {"args": [...], "kwargs": {...}}. Default: none.',
        ],
        [
            "http-bridge-keys",
            None,
            None,
            'JSON file of the HTTP bridge\'s keys and secrets, {"KEY": "SECRET", ...} (or a Crossbar '
            'path\'s {"key": ..., "secret": ...}): every request must then be signed with one, as '
            "Crossbar's clients sign. Read from the environment variable SANDSTONE_HTTP_BRIDGE_KEYS (a file "
            "name, or the JSON itself) when not given. Default: none (unsigned requests).",
        ],
        [
            "http-bridge-networks",
            None,
            None,
            "Comma-separated client networks (CIDR, e.g. 10.0.0.0/8,127.0.0.1) allowed to use the HTTP "
            "bridge; others get 403. Default: any with keys, this machine only (loopback) without.",
        ],
        [
            "http-bridge-authid",
            None,
            None,
            "The authid HTTP bridge requests act as (for the authorizer and the exclude/eligible rules). "
            "Default: the key a request was signed with, else http-bridge.",
        ],
        [
            "http-bridge-authrole",
            None,
            None,
            "The authrole HTTP bridge requests act as. Default: http-bridge.",
        ],
        [
            "http-bridge-timeout",
            None,
            None,
            "Seconds an HTTP bridge call waits for its result; then 504 wamp.error.timeout and the call is "
            "canceled (0: no limit). Default: 60.",
        ],
        [
            "http-bridge-max-skew",
            None,
            None,
            "Seconds a signed request's timestamp may be away from this server's clock (Crossbar's "
            "timestamp_delta_limit); its nonce is single-use for that long. Default: 300.",
        ],
        *[
            [name, None, None, f"{help} Default: {_number(getattr(Limits(), field))}."]
            for name, (field, _kind, help) in _LIMIT_OPTIONS.items()
        ],
        [
            "shutdown-timeout",
            None,
            "5",
            "Seconds to end connections gracefully on shutdown (WebSockets closed, REST requests in flight).",
        ],
        [
            "workers",
            None,
            "1",
            "Processes serving the --listen socket (a tcp: or tcp6: endpoint), each a node of the "
            "cluster, so it needs --redis (or an app that calls app.use_redis). This process is worker 1 "
            "and restarts the others if they die.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics (/metrics) and health probes (/healthz, /readyz) on this Twisted "
            "server endpoint, e.g. tcp:9100:interface=127.0.0.1. With --workers N, worker N serves its own "
            "on the port N - 1 above it. Default: none.",
        ],
    ]

    optFlags = [
        [
            "verbose",
            "v",
            "Log debug messages too (each Redis connection attempt, ...). Default: info and above.",
        ],
        [
            "shutdown-goodbye",
            None,
            "On shutdown, say GOODBYE wamp.close.system_shutdown to every session before closing its "
            "WebSocket: autobahn-js and wampy.js clients then stop reconnecting. Default: close every "
            "WebSocket with 1001 (going away) and no GOODBYE, so that clients reconnect by themselves.",
        ],
        [
            "http-bridge-require-tls",
            None,
            "Refuse HTTP bridge requests that do not come over TLS (https) with 403. Default: any.",
        ],
        [
            "http-bridge-crossbar-errors",
            None,
            "Answer an HTTP bridge publication or call that ended with a WAMP error (no such procedure, the "
            "procedure's error, not authorized...) with status 200 and the error body, as Crossbar does. "
            "Default: a 4xx/5xx status (404, 500, 403...).",
        ],
    ]

    #: The loaded app, set by L{postOptions}.
    app: Sandstone | None = None
    #: Whether a usage error under twistd is one line on stderr and exit status 1, instead of twistd's usage
    #: and reason on stdout (``sandstone run`` reports its errors itself).
    _exits_on_usage_error = True

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as err:
            if not (self._exits_on_usage_error and isinstance(self.parent, ServerOptions)):
                raise
            sys.stderr.write(f"twistd sandstone: {_one_line(str(err))}\n")
            raise SystemExit(1) from None

    def parseArgs(self, *arguments: str) -> None:
        if arguments:
            raise usage.UsageError(
                f"unexpected argument {arguments[0]!r} (options are written --name VALUE or --name=VALUE)"
            )

    def opt_version(self) -> None:
        """Display sandstone's and Twisted's versions and exit."""
        from sandstone import __version__
        from twisted import copyright

        print(f"sandstone {__version__} (Twisted {copyright.version})")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            app = _configured_app(self["app"], self)
        except AppLoadError as err:
            raise usage.UsageError(str(err)) from err  # the cause: for `sandstone run --debug`
        try:
            self["shutdown-timeout"] = float(self["shutdown-timeout"])
        except ValueError:
            raise usage.UsageError(
                f"--shutdown-timeout expects a number of seconds, got {self['shutdown-timeout']!r}"
            ) from None
        if self["shutdown-timeout"] < 0:
            raise usage.UsageError("--shutdown-timeout may not be negative")
        self._check_listen()
        self._check_redis()
        self._check_workers(app)
        self._check_metrics()
        self._check_rawsocket()
        self.app = app

    def _check_workers(self, app: Sandstone) -> None:
        value = self["workers"]
        try:
            workers = int(value)
        except (TypeError, ValueError):
            workers = 0
        if workers < 1:
            raise usage.UsageError(f"--workers expects a number of processes (1 or more), got {value!r}")
        self["workers"] = workers
        if workers == 1:
            return
        if self["redis"] is None and app.bus is None:
            raise usage.UsageError(
                f"--workers {workers} needs --redis URL: the workers share events, broadcasts and calls "
                "through Redis"
            )
        if not _is_tcp(self["listen"]):
            raise usage.UsageError(
                f"--workers {workers} needs a tcp: or tcp6: --listen endpoint (the workers share one "
                f"listening TCP socket), got {self['listen']!r}"
            )

    def _check_redis(self) -> None:
        if self["redis"] is None:
            given = [f"--{name}" for name in ("cluster-name", "cluster-secret") if self[name] is not None]
            if given:
                verb = "need" if len(given) > 1 else "needs"
                raise usage.UsageError(f"{' and '.join(given)} {verb} --redis URL")
            return
        from sandstone._envelope import channel_names
        from sandstone._redis_connect import check_url

        try:
            check_url(self["redis"])  # and its TLS files
        except ValueError as err:
            raise usage.UsageError(f"--redis: {err}") from None
        if self["cluster-name"] is not None:
            try:
                channel_names("sandstone", "realm1", cluster_name=self["cluster-name"])
            except ValueError as err:
                raise usage.UsageError(f"--cluster-name: {err}") from None
        if self["cluster-secret"] == "":
            raise usage.UsageError("--cluster-secret must not be empty")

    def _check_metrics(self) -> None:
        description = self["metrics"]
        if description is None:
            return
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        try:
            serverFromString(reactor, description)
        except Exception as err:
            raise usage.UsageError(
                f"--metrics {description!r} is not a valid server endpoint: "
                f"{type(err).__name__}: {_one_line(str(err))}"
            ) from None
        if self["workers"] > 1 and not _is_tcp(description):
            raise usage.UsageError(
                f"--metrics with --workers {self['workers']} needs a tcp: or tcp6: endpoint (worker N serves "
                f"its metrics on the port N - 1 above it), got {description!r}"
            )

    def _check_listen(self) -> None:
        # Parse (without listening) so that a typo is a usage error, not a
        # traceback once the reactor runs.
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        try:
            serverFromString(reactor, self["listen"])
        except Exception as err:
            raise usage.UsageError(
                f"--listen {self['listen']!r} is not a valid server endpoint: "
                f"{type(err).__name__}: {_one_line(str(err))}"
            ) from None

    def opt_history(self, rule: str) -> None:
        """Keep the last N events of each topic URI=N names, for wamp.subscription.get_events
        (prefix:URI=N or wildcard:URI=N for the topics a pattern covers); repeat for several.
        Default: none (an app's Topics declare their own)."""
        try:
            parse_history_option(rule)
        except ValueError as err:
            raise usage.UsageError(str(err)) from None
        self.setdefault("history", []).append(rule)

    def opt_rawsocket(self, endpoint: str) -> None:
        """Also serve WAMP over RawSocket (JSON, MessagePack, CBOR) on this Twisted server endpoint, e.g.
        tcp:8081:interface=127.0.0.1 or unix:/run/sandstone.sock; repeat for several. Its sessions are peers
        of the WebSocket ones. With --workers, the first process serves it. Default: none."""
        self.setdefault("rawsocket", []).append(endpoint)

    def _check_rawsocket(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        for description in self.get("rawsocket") or ():
            try:
                serverFromString(reactor, description)
            except Exception as err:
                raise usage.UsageError(
                    f"--rawsocket {description!r} is not a valid server endpoint: "
                    f"{type(err).__name__}: {_one_line(str(err))}"
                ) from None


def _is_tcp(listen: str) -> bool:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString

    try:
        endpoint = serverFromString(reactor, listen)
    except Exception:
        return False
    return isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)


class SandstoneService(MultiService):
    """
    The root service of ``twistd sandstone``, named "sandstone".

    ``workers`` is how many processes share the listening socket (``--workers``); ``shared`` is true in
    workers 2..N, which accept on the socket of worker 1. Under twistd, ``log_observer`` is what the
    application logs to (``_logging``); it is given to the application this service joins.

    @ivar app: the L{Sandstone} app being served.
    """

    def __init__(
        self,
        app: Sandstone,
        app_label: str,
        listen: str,
        *,
        workers: int = 1,
        shared: bool = False,
        log_observer: ILogObserver | None = None,
    ) -> None:
        super().__init__()
        self.setName("sandstone")
        self.app = app
        self.app_label = app_label
        self.listen = listen
        self.workers = workers
        self.shared = shared
        self._log_observer = log_observer

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        if self._log_observer is not None and isinstance(parent, Componentized):  # twistd's application
            use_log_observer(parent, self._log_observer)

    def startService(self) -> None:
        super().startService()
        self._log_serving()
        _freeze_startup_objects()

    def _log_serving(self) -> None:
        """Say where to point a browser and a WAMP client, once listening: the one line to read at startup."""
        web = self.namedServices.get("web")
        port: IListeningPort | None = getattr(web, "port", None)
        address = port.getHost() if port is not None else None
        if self.shared:
            _log.info(
                "sandstone serving {app} on the shared port{port}",
                app=self.app_label,
                port=f" {address.port}" if isinstance(address, IPv4Address | IPv6Address) else "",
            )
            return
        base = _base_url(address, self.listen) if address is not None else self.listen
        details = f"WebSocket {_ws_url(base)}{self.app.ws_path}, realm {self.app.realm}"
        redis = str(self.app.bus.address) if self.app.bus is not None else None
        if redis is not None:
            details += f", Redis {redis}"
        rawsocket: Any = self.namedServices.get("rawsocket")  # a RawSocketService (--rawsocket)
        if rawsocket is not None:
            details += "".join(f", RawSocket {address}" for address in rawsocket.addresses())
        where = _where(address, self.workers)
        _log.info(
            "sandstone serving {app} at {url} ({details})",
            app=self.app_label,
            url=f"{base}/",
            details=f"{details}; {where}" if where else details,
            listen=self.listen,
            realm=self.app.realm,
            ws_path=self.app.ws_path,
            redis=redis,
            workers=self.workers,
        )

    def stopService(self) -> Deferred[Any]:
        """Stop every child, the "metrics" one (``--metrics``) after the others: its ``/readyz`` answers 503
        while they stop (``_health.py``)."""
        probes = self.namedServices.get("metrics")
        if probes is None:
            stopped: Deferred[Any] = super().stopService()
            return stopped
        Service.stopService(self)
        others = [maybeDeferred(child.stopService) for child in reversed(list(self)) if child is not probes]
        return DeferredList(others).addCallback(lambda _: probes.stopService())


def _base_url(address: IAddress, listen: str) -> str:
    """``http://HOST:PORT`` for where a port listens (``https`` for TLS endpoints); a wildcard interface is
    shown as the loopback address, which a browser on this machine can open. ``listen`` itself for an
    address that is not TCP (``unix:...``)."""
    if not isinstance(address, IPv4Address | IPv6Address):
        return listen
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    if ":" in host:
        host = f"[{host.split('%')[0]}]"
    scheme = "https" if listen.split(":", 1)[0].lower() in ("ssl", "tls") else "http"
    return f"{scheme}://{host}:{address.port}"


def _where(address: IAddress | None, workers: int) -> str:
    """What the startup line says of the listening socket: shared by workers, on every interface."""
    everywhere = isinstance(address, IPv4Address | IPv6Address) and address.host in ("0.0.0.0", "", "::")
    parts = []
    if workers > 1:
        others = "the other" if workers == 2 else f"the {workers - 1} others"
        parts.append(
            f"{workers} workers share the port: this process (pid {os.getpid()}) and {others} it runs"
        )
    if everywhere:
        parts.append("listening on all interfaces")
    return ", ".join(parts)


def _ws_url(base: str) -> str:
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://")
    return base


def _freeze_startup_objects() -> None:
    """Keep the garbage collector's full collections short: everything alive once the server has started
    (modules, the app, the listening port) is moved out of their reach (``gc.freeze``), so they scan only
    what serving created. Without it each full collection scans every imported module's objects, and every
    request and broadcast in flight waits meanwhile."""
    gc.collect()
    gc.freeze()
    _log.debug(
        "{count} objects of the started server set aside from garbage collection", count=gc.get_freeze_count()
    )


def _fit_fd_limit(app: Sandstone) -> None:
    """Raise the process's file descriptor limit (up to its hard limit) so that ``max_connections`` fits;
    where it cannot, say how many connections the limit allows."""
    from sandstone._admission import FD_RESERVE, fd_limit, raise_fd_limit

    wanted = app.limits.max_connections + FD_RESERVE
    before = fd_limit()
    if before is None or app.limits.max_connections <= 0 or before >= wanted:
        return
    after = raise_fd_limit(wanted)
    if after is not None and after < wanted:
        _log.warn(
            "the file descriptor limit ({fds}) allows {allowed} connections, not max_connections "
            "{wanted}: raise it (ulimit -n) to serve more",
            fds=after,
            allowed=max(1, after - FD_RESERVE),
            wanted=app.limits.max_connections,
        )
    elif after != before:
        _log.info("file descriptor limit raised from {before} to {after}", before=before, after=after)


def makeService(options: Options, *, inherited_fd: int | None = None, worker: int = 1) -> IService:
    """
    Build the service tree: a L{SandstoneService} named "sandstone" holding a
    child "web" that serves C{app.resource()} on C{options["listen"]}.

    With C{--workers N} (N > 1) a child "workers" (a L{WorkerSupervisor}) runs
    workers 2..N on the socket "web" listens on. A worker itself is built with
    C{inherited_fd}: its "web" accepts on that inherited listening socket.
    With C{--metrics}, a child "metrics" serves the metrics and probes (see
    C{_metrics.MetricsService}); C{worker} is this process's number among the
    workers, which picks its metrics port.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from sandstone._listening import ListeningService
    from sandstone._workers import (
        KILL_GRACE,
        InheritedPortService,
        SharedListener,
        WorkerSupervisor,
        worker_arguments,
        worker_environment,
    )

    app = getattr(options, "app", None)
    if app is None:  # options not parsed by twistd (a plain mapping): load and configure the app here
        app = _configured_app(options.get("app") or None, options)

    listen = options.get("listen") or "tcp:8080"
    workers = 1 if inherited_fd is not None else int(options.get("workers") or 1)
    if workers > 1 and not _is_tcp(listen):
        raise usage.UsageError(f"--workers {workers} needs a tcp: or tcp6: --listen endpoint, got {listen!r}")
    root = SandstoneService(
        app,
        options.get("app") or DEFAULT_APP_LABEL,
        listen,
        workers=workers,
        shared=inherited_fd is not None,
        log_observer=_twistd_log(options),
    )
    _fit_fd_limit(app)
    site = app.site()
    if inherited_fd is not None:
        web: IService = InheritedPortService(inherited_fd, site)
    elif workers > 1:
        web = listener = SharedListener(listen, workers, site)
    else:
        # If listening fails (port in use...), startService fails instead of serving nothing: under twistd
        # with one line and exit status 1 (``sandstone run`` reports it itself).
        # (``options`` may be a plain dict, from code building the service itself)
        one_line = getattr(options, "_exits_on_usage_error", False) and isinstance(
            getattr(options, "parent", None), ServerOptions
        )
        web = ListeningService(
            serverFromString(reactor, listen), site, exit_prefix="twistd sandstone" if one_line else None
        )
    web.setName("web")
    web.setServiceParent(root)
    # Stopped alongside "web" (which stops listening): WebSockets closed, REST requests may finish.
    shutdown_timeout = float(options.get("shutdown-timeout") or 5.0)
    goodbye = bool(options.get("shutdown-goodbye"))
    shutdown = app.shutdown_service(site, shutdown_timeout, goodbye=goodbye)
    shutdown.setName("shutdown")
    shutdown.setServiceParent(root)
    if options.get("rawsocket") and inherited_fd is None:  # workers 2..N: no RawSocket
        from sandstone._rawsocket import RawSocketService

        endpoints = [(e, serverFromString(reactor, e)) for e in options["rawsocket"]]
        factory = app.rawsocket_factory(site.admission)
        rawsocket = RawSocketService(factory, endpoints, timeout=shutdown_timeout, goodbye=goodbye)
        rawsocket.setName("rawsocket")
        rawsocket.setServiceParent(root)
    if workers > 1:
        supervisor = WorkerSupervisor(
            workers,
            worker_arguments(options, Options.optParameters, Options.optFlags),
            listener,
            shutdown_timeout + KILL_GRACE,
            environment=worker_environment(options),
        )
        supervisor.setServiceParent(root)
    redis = options.get("redis")
    if redis:
        cluster = {
            key: options[name]
            for name, key in (("cluster-name", "cluster_name"), ("cluster-secret", "cluster_secret"))
            if options.get(name) is not None
        }
        if app.bus is not None and app.bus.url == redis:
            if cluster:
                raise usage.UsageError(
                    "--cluster-name/--cluster-secret: this app sets up its bus in code (app.use_redis); "
                    "give cluster_name/cluster_secret to app.use_redis instead"
                )
            bus = app.bus
        else:
            bus = app.use_redis(redis, **cluster)
        bus.setName("bus")
        bus.setServiceParent(root)
    elif app.bus is not None:  # the app set up its bus in code
        app.bus.setName("bus")
        app.bus.setServiceParent(root)
    if options.get("metrics"):  # worker: which one of --workers this process is (its metrics port)
        from sandstone._metrics import metrics_service

        metrics_service(app, site, root, web, options["metrics"], worker).setServiceParent(root)
    _say_where_a_daemon_logs(options)
    return root


def _twistd_config(options: Any) -> ServerOptions | None:
    """The options of the twistd command line ``options`` were parsed under, if any (``usage.Options``
    gives a subcommand's options their ``parent``)."""
    parent = getattr(options, "parent", None)
    return parent if isinstance(parent, ServerOptions) else None


def _twistd_log(options: Any) -> ILogObserver | None:
    """Under twistd, the observer to log to: twistd's own, showing debug messages only with --verbose."""
    config = _twistd_config(options)
    observer = twistd_log_observer(config) if config is not None else None
    return level_filter(observer, bool(options.get("verbose"))) if observer is not None else None


def _say_where_a_daemon_logs(options: Any) -> None:
    """``twistd sandstone`` without ``-n`` goes to the background without a word on the terminal: say
    where its log and pid file are (on stderr, which is still the terminal: logging has not begun)."""
    config = _twistd_config(options)
    notice = daemon_notice(config) if config is not None else None
    if notice is not None:
        sys.stderr.write(notice + "\n")
        sys.stderr.flush()
