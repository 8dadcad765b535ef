"""The application object: a Klein app whose resource also serves a WAMP router, topics and events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from klein import Klein, KleinErrorHandler
from twisted.internet.defer import Deferred, fail, succeed
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException

from . import _login
from ._auth import Authenticator, CraUserLookup, Identity
from ._authorization import Authorizer, is_reserved, principal
from ._cryptosign import CryptosignLookup, CryptosignPrincipals, PrincipalTable
from ._dispatcher import DispatchResult, EventDispatcher, current_cause
from ._envelope import EventCodec
from ._errors import LOGGED_OUT, WampError
from ._http_bridge import (
    CALLER,
    DEFAULT_AUTHROLE,
    DEFAULT_MAX_SKEW,
    DEFAULT_TIMEOUT,
    PUBLISHER,
    BridgeOptions,
    HttpBridge,
    Kind,
    NonceMemory,
    bridge_options,
)
from ._http_errors import is_websocket_upgrade, json_http_errors, upgrade_required
from ._limits import Limits
from ._pattern import Converter, TopicPattern
from ._payload import require_carried
from ._publication import Publication, session_ids
from ._router import Router
from ._topic import TopicHost
from ._transport import WampServerFactory, websocket_resource
from ._web import GracefulShutdown, LimitedRequest, SandstoneSite

if TYPE_CHECKING:
    from klein.resource import KleinResource

    from ._admission import Admission
    from ._bus import RedisBus
    from ._rawsocket import RawSocketFactory
    from ._session import Session

F = TypeVar("F", bound=Callable[..., Any])


class _Core:
    """Everything a Sandstone app holds besides Klein's routes (shared by bound copies of the app)."""

    def __init__(
        self,
        realm: str,
        ws_path: str,
        open_uris: bool,
        strict_uris: bool,
        anonymous: bool,
        limits: Limits,
        allowed_origins: Sequence[str] | None,
        allowed_hosts: Sequence[str] | None,
    ) -> None:
        self.limits = limits
        self.allowed_origins = allowed_origins
        self.allowed_hosts = None if allowed_hosts is None else list(allowed_hosts)
        self.events = EventDispatcher()
        self.codec = EventCodec()
        self.bus: RedisBus | None = None
        self.topics = TopicHost(self.events)
        self.router = Router(
            realm, topics=self.topics, open_uris=open_uris, strict_uris=strict_uris, anonymous=anonymous
        )
        self.topics.router = self.router
        self.router.limits = limits
        self.ws_path = ws_path
        self.mounted_at: str | None = None
        self.factory: WampServerFactory | None = None
        self.bridge_nonces = NonceMemory()  # the HTTP bridge's replay memory, shared by its paths


class Sandstone(Klein):
    """A Klein app for REST routes plus a WAMP router for real-time topics, served on one port.

    ``realm`` is the WAMP realm clients join; ``ws_path`` the URL path of the WebSocket endpoint;
    ``open_uris=True`` lets clients subscribe and publish on URIs no topic pattern declares
    (plain pub/sub, as on a development Crossbar); ``strict_uris`` applies the spec's strict URI rule.
    ``anonymous=True`` lets clients join without credentials (off unless the app says so);
    ``limits`` bounds sizes, rates, timeouts and buffers (see ``Limits``); ``allowed_origins`` lists the
    browser origins (patterns) allowed to open the WebSocket besides the app's own; ``allowed_hosts`` the
    host names (patterns) the app answers to, REST and WebSocket alike (default: any, except that a server
    reached on a loopback address answers loopback names only). ``cryptosign_principals`` lets the holders of
    these Ed25519 keys in with WAMP-Cryptosign: ``{pubkey_hex: ("authid", "authrole")}`` or a
    ``CryptosignPrincipals`` (``CryptosignPrincipals.from_file(path)``); see ``cryptosign_user`` for a lookup.

    A JSON client (``Accept: application/json``, or a JSON body) gets Klein's 404 and 405 (and, served by
    ``site()``, 413 and 500) as ``{"error": ..., "status": ...}``; the app's ``handle_errors`` come first.
    """

    def __init__(
        self,
        *,
        realm: str = "realm1",
        ws_path: str = "/ws",
        open_uris: bool = False,
        strict_uris: bool = False,
        anonymous: bool = False,
        limits: Limits | None = None,
        allowed_origins: Sequence[str] | None = None,
        allowed_hosts: Sequence[str] | None = None,
        cryptosign_principals: CryptosignPrincipals | PrincipalTable | None = None,
    ) -> None:
        super().__init__()
        self._core = _Core(
            realm,
            ws_path,
            open_uris,
            strict_uris,
            anonymous,
            limits or Limits(),
            allowed_origins,
            allowed_hosts,
        )
        if isinstance(cryptosign_principals, CryptosignPrincipals):
            self.cryptosign_user(cryptosign_principals)
        elif cryptosign_principals is not None:
            self.cryptosign_user(CryptosignPrincipals(cryptosign_principals))
        # Typed for one of Klein's two call shapes, it takes both: (request, failure) and, for an app bound to
        # an instance, (instance, request, failure).
        self.handle_errors(HTTPException)(cast(KleinErrorHandler, json_http_errors))

    def __get__(self, instance: Any, owner: object) -> Klein:
        bound = super().__get__(instance, owner)
        if bound is not self:
            bound._core = self._core  # type: ignore[attr-defined]
        return bound

    # configuration

    @property
    def realm(self) -> str:
        """The WAMP realm sessions join."""
        return self._core.router.realm

    @realm.setter
    def realm(self, realm: str) -> None:
        self._core.router.realm = realm

    @property
    def ws_path(self) -> str:
        """URL path of the WebSocket (WAMP) endpoint; set it before calling ``resource()``."""
        return self._core.ws_path

    @ws_path.setter
    def ws_path(self, path: str) -> None:
        if self._core.mounted_at is not None and path != self._core.mounted_at:
            raise RuntimeError(f"the WebSocket endpoint is already served at {self._core.mounted_at!r}")
        self._core.ws_path = path

    @property
    def limits(self) -> Limits:
        """The limits in force (sizes, rates, timeouts, buffers); replace them before serving."""
        return self._core.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._core.limits = limits
        self._core.router.limits = limits

    @property
    def allowed_origins(self) -> list[str]:
        """Browser origins (``fnmatch`` patterns) allowed to open the WebSocket besides the app's own."""
        return list(self._core.allowed_origins or ())

    @allowed_origins.setter
    def allowed_origins(self, patterns: Sequence[str]) -> None:
        self._core.allowed_origins = list(patterns)

    @property
    def allowed_hosts(self) -> list[str] | None:
        """Host names (``fnmatch`` patterns, optionally with ``:port``) this app answers to; ``None``: the
        default (any host, but only loopback names on a loopback address). Set it before serving."""
        hosts = self._core.allowed_hosts
        return None if hosts is None else list(hosts)

    @allowed_hosts.setter
    def allowed_hosts(self, patterns: Sequence[str] | None) -> None:
        self._core.allowed_hosts = None if patterns is None else list(patterns)

    @property
    def router(self) -> Router:
        """The WAMP router of this app (sessions, broker, dealer)."""
        return self._core.router

    @property
    def events(self) -> EventDispatcher:
        """The event dispatcher behind ``dispatch`` and ``on_event``."""
        return self._core.events

    # topics

    def topic(
        self,
        pattern: str,
        *,
        requirements: Mapping[str, str] | None = None,
        converters: Mapping[str, str | Converter] | None = None,
        history: int = 0,
    ) -> Callable[[F], F]:
        """Declare a topic for a URI pattern like ``chat/{channel}`` or ``sensors.{room:int}.temperature``.

        Decorates a ``Topic`` subclass, or any factory ``f(uri, args) -> Topic``. Patterns are tried in
        declaration order; the first that matches a URI serves it. ``history=N`` keeps the last ``N``
        events of each concrete URI, for ``wamp.subscription.get_events`` (and recovery after a reconnect).
        """
        compiled = TopicPattern(pattern, requirements, converters)
        if type(history) is not int or history < 0:
            raise ValueError(f"history is a number of events (0: none), not {history!r}")

        def declare(factory: F) -> F:
            self._core.topics.declare(compiled, factory, history)
            return factory

        return declare

    def history(self, uri: str, *, match: str = "exact", limit: int = 100) -> None:
        """Keep the last ``limit`` events of each topic a subscription to ``uri`` with ``match`` (exact,
        prefix or wildcard) covers, for ``wamp.subscription.get_events``: for URIs no Topic serves (a
        Topic declares its own with ``history=``). Raises ``ValueError`` for a bad rule."""
        self._core.router.history_rules.add(uri, match, limit)

    def retained(self, uri: str) -> Deferred[Any]:
        """The payload (first argument) of ``uri``'s retained event, or ``None`` when it has none:
        ``await app.retained(uri)``. Cluster-wide with a bus."""
        return self._core.router.retained_payload(uri)

    def topic_instance(self, uri: str) -> Any:
        """The live Topic instance for a concrete URI, or ``None`` when nobody is subscribed."""
        return self._core.topics.get(uri)

    @overload
    def broadcast(
        self,
        uri: str,
        payload: Any,
        *,
        exclude: Iterable[Session | int] = ...,
        eligible: Iterable[Session | int] | None = ...,
        retain: bool = ...,
        on_behalf_of: None = ...,
    ) -> int: ...

    @overload
    def broadcast(
        self,
        uri: str,
        payload: Any,
        *,
        exclude: Iterable[Session | int] = ...,
        eligible: Iterable[Session | int] | None = ...,
        retain: bool = ...,
        on_behalf_of: object,
    ) -> Deferred[int]: ...

    def broadcast(
        self,
        uri: str,
        payload: Any,
        *,
        exclude: Iterable[Session | int] = (),
        eligible: Iterable[Session | int] | None = None,
        retain: bool = False,
        on_behalf_of: object = None,
    ) -> int | Deferred[int]:
        """Publish ``payload`` (an EVENT's first argument) to the subscribers of ``uri``; returns its id.

        ``on_behalf_of`` (a ``Session``, or anything with ``authid`` and ``authrole``, such as an
        ``Identity``) applies the authorization a client publishing on ``uri`` gets: the app's authorizer
        (action ``"publish"``) and the topic's ``may_publish``. Then a ``Deferred`` is returned, always:
        it fires with the id once the publication is sent, or fails with
        ``WampError(wamp.error.not_authorized)`` (``authorization_failed`` when a hook raised) and nothing
        is sent (``await`` it in an ``async def`` route).

        ``retain=True`` keeps it as ``uri``'s retained event: a later subscriber asking for it
        (``get_retained``) gets it at once, if ``exclude``/``eligible`` admit it.

        A payload that not every WAMP serializer can carry alike (a datetime, a set, a dict with integer
        keys, an integer beyond 64 bits, NaN...) raises ``TypeError`` saying where, and nothing is sent. A URI
        in the ``wamp.`` namespace, where the router publishes its meta events, raises ``ValueError``.
        """
        if is_reserved(uri):
            raise ValueError(f"cannot broadcast on {uri!r}: the 'wamp.' namespace is reserved for the router")
        require_carried(payload, "broadcast on", uri)
        publication = Publication(
            uri,
            [payload],
            exclude=session_ids(exclude) or None,
            eligible=session_ids(eligible),
            retain=retain,
            source="app",
        )
        router = self._core.router
        if on_behalf_of is None:
            return _published(router, publication)
        authorization = router.authorization
        try:
            checks, cleanup = authorization.checks(principal(on_behalf_of), "publish", uri, payload=payload)
            pending = authorization.decide(checks, "publish to", uri, cleanup)
        except WampError as refused:
            return fail(refused)
        if pending is None:
            return succeed(_published(router, publication))
        return pending.addCallback(lambda _: _published(router, publication))

    # authorization

    def authorizer(self, authorize: Authorizer | None) -> Authorizer | None:
        """Decorate the app's ``authorize(session, action, uri, match) -> bool``.

        ``action`` is ``"subscribe"``, ``"publish"``, ``"register"`` or ``"call"``; ``match`` is the
        subscription's match policy (``"exact"``, ``"prefix"``, ``"wildcard"``; ``"exact"`` for the
        others). Plain, ``async def`` or Deferred-returning; a false answer refuses the request with
        ``wamp.error.not_authorized``, an exception with ``wamp.error.authorization_failed``. Without an
        authorizer everything is allowed. Events reaching prefix/wildcard subscribers are checked again as
        ``(session, "subscribe", concrete_uri, "exact")``, which must be answered synchronously.
        """
        self._core.router.authorization.authorizer = authorize
        return authorize

    # events

    def on_event(self, name: str, *, priority: int = 0) -> Callable[[F], F]:
        """Register the decorated function as a listener of event ``name`` (higher priority runs first)."""

        def register(listener: F) -> F:
            self._core.events.add_listener(name, listener, priority)
            return listener

        return register

    def dispatch(self, name: str, event: object = None) -> Deferred[DispatchResult]:
        """Dispatch an event to its listeners, one after another by priority.

        The Deferred fires once this node's listeners have finished, with a ``DispatchResult``; it never
        fails: a failing listener is logged and recorded in ``result.errors``, and the others still run.
        A forwarded event (see ``forward``) also goes to every other node of the cluster, which dispatch
        it to their own listeners; one that cannot be encoded raises ``TypeError`` here.
        """
        core = self._core
        if not core.codec.is_forwarded(name):
            return core.events.dispatch(name, event)
        data = core.codec.encode(name, event)  # the same error without Redis as with it
        cause = core.router.cluster.forward(name, data, current_cause())
        if cause is None:  # dispatched on another node already, and handled here
            return succeed(DispatchResult(name, event, called=0, stopped=False, errors=[]))
        return core.events.dispatch(name, event, cause=cause)

    def forward(self, name: str, event_type: type = dict) -> None:
        """Make event ``name`` cross nodes: dispatched on one node, handled on all of them.

        ``event_type`` is a dataclass (nested dataclasses allowed) or ``dict``; events travel as JSON
        and only the types declared here are accepted from the bus.
        """
        self._core.codec.allow(name, event_type)

    # cluster

    def use_redis(self, url: str, **options: Any) -> RedisBus:
        """Share events, broadcasts and calls with the other nodes using the Redis at ``url``
        (``redis://HOST[:PORT][/DB]``, ``rediss://`` for TLS, ``redis+sentinel://HOST[:PORT],.../MASTER[/DB]``:
        see docs/bus.md). Returns the bus, a Twisted service: start it, or give it a parent service
        (``twistd sandstone --redis URL`` does both). Options: see ``RedisBus``.
        """
        from ._bus import RedisBus

        core = self._core
        if core.bus is not None:
            raise RuntimeError(f"this app already uses Redis at {core.bus.url}")
        core.bus = RedisBus(core.router, core.events, core.codec, url, **options)
        decoy_key = core.bus.shared_key("wampcra decoy")
        if decoy_key is not None:  # unknown WAMP-CRA users get the same challenge from every node
            auth = core.router.auth
            auth.wampcra_decoy = dataclasses.replace(auth.wampcra_decoy, key=decoy_key)
        return core.bus

    @property
    def bus(self) -> RedisBus | None:
        """The cluster bus set up by ``use_redis``, if any."""
        return self._core.bus

    # procedures

    def procedure(self, uri: str) -> Callable[[F], F]:
        """Expose the decorated function (sync, async or Deferred-returning) as WAMP procedure ``uri``."""

        def register(function: F) -> F:
            self._core.router.dealer.register_function(uri, function)
            return function

        return register

    # HTTP bridge

    def http_publisher(
        self,
        path: str,
        *,
        keys: Mapping[str, str | bytes] | None = None,
        networks: Iterable[str] | None = None,
        authid: str | None = None,
        authrole: str = DEFAULT_AUTHROLE,
        require_tls: bool = False,
        max_body: int = 0,
        max_skew: float = DEFAULT_MAX_SKEW,
        crossbar_errors: bool = False,
    ) -> None:
        """Serve Crossbar's HTTP Publisher at ``path``: a POST of ``{"topic": URI, "args": [...], "kwargs":
        {...}, "options": {...}}`` publishes as a client's PUBLISH does (the authorizer, the topic's hooks,
        the ``exclude``/``eligible`` options, every node of a cluster) and is answered ``{"id": ID}``.

        ``keys`` (``{key: secret}``): every request must be signed with one, as Crossbar's clients sign;
        ``networks``: the client addresses allowed (CIDR; default: any with keys, loopback only without);
        requests act as ``authid`` (default: the signing key, else ``http-bridge``) and ``authrole``;
        ``require_tls``; ``max_body`` bytes (default: the app's ``max_request_body``); ``max_skew``: seconds
        a signed request's timestamp may be off. A refused publication gets a 4xx/5xx status and ``{"error":
        URI, "args": [...], "kwargs": {...}}``; with ``crossbar_errors``, status 200, as Crossbar answers.
        """
        options = bridge_options(
            keys=keys,
            networks=networks,
            authid=authid,
            authrole=authrole,
            require_tls=require_tls,
            max_body=max_body,
            max_skew=max_skew,
            crossbar_errors=crossbar_errors,
        )
        self._http_bridge(PUBLISHER, path, options)

    def http_caller(
        self,
        path: str,
        *,
        keys: Mapping[str, str | bytes] | None = None,
        networks: Iterable[str] | None = None,
        authid: str | None = None,
        authrole: str = DEFAULT_AUTHROLE,
        require_tls: bool = False,
        max_body: int = 0,
        max_skew: float = DEFAULT_MAX_SKEW,
        timeout: float = DEFAULT_TIMEOUT,
        crossbar_errors: bool = False,
    ) -> None:
        """Serve Crossbar's HTTP Caller at ``path``: a POST of ``{"procedure": URI, "args": [...], "kwargs":
        {...}}`` calls as a client's CALL does (the app's procedures, client callees on this node or another)
        and is answered with the result, ``{"args": [...], "kwargs": {...}}``, or ``{"error": URI, "args":
        [...], "kwargs": {...}}`` with 404 (no such procedure), 504 (no answer within ``timeout`` seconds: the
        call is canceled), 500 (the procedure's own error)... or 200 with ``crossbar_errors``. The other
        options are ``http_publisher``'s.
        """
        options = bridge_options(
            keys=keys,
            networks=networks,
            authid=authid,
            authrole=authrole,
            require_tls=require_tls,
            max_body=max_body,
            max_skew=max_skew,
            timeout=timeout,
            crossbar_errors=crossbar_errors,
        )
        self._http_bridge(CALLER, path, options)

    def _http_bridge(self, kind: Kind, path: str, options: BridgeOptions) -> None:
        core = self._core
        if not path.startswith("/") or path == core.ws_path:
            raise ValueError(f"the HTTP {kind} needs a URL path of its own such as /{kind}, got {path!r}")
        bridge = HttpBridge(core.router, kind, path, options, core.bridge_nonces)
        self.route(path, endpoint=f"sandstone_http_{kind}:{path}")(bridge.render)

    # authentication

    def authenticator(self, hook: Authenticator) -> Authenticator:
        """Decorate the app's ``ticket`` authenticator: ``f(credentials) -> Identity | None``.

        It gets a ``Credentials`` (``method``, ``authid`` from HELLO or ``None``, ``secret``: the ticket,
        ``authextra``) and returns the session's ``Identity``, or ``None`` to refuse; plain, ``async def`` or
        Deferred-returning. Compare secrets with ``credentials.secret_is(expected)`` (constant time).
        """
        self._core.router.auth.authenticator = hook
        return hook

    def wampcra_user(self, hook: CraUserLookup) -> CraUserLookup:
        """Decorate the app's WAMP-CRA user lookup: ``f(authid) -> CraUser | None``.

        Plain, ``async def`` or Deferred-returning. The router needs the secret before the client signs,
        hence a lookup rather than a check.
        """
        self._core.router.auth.wampcra_user = hook
        return hook

    def cryptosign_user(self, hook: CryptosignLookup) -> CryptosignLookup:
        """Decorate the app's WAMP-Cryptosign lookup: ``f(pubkey_hex, realm, details) -> CryptosignUser |
        None``.

        ``pubkey_hex`` is the Ed25519 public key the client announced (64 lower-case hex digits); ``details``
        a ``CryptosignDetails`` (the ``authid`` the client asked for or ``None``, its ``authextra``, the
        ``channel_binding`` in use). Return who holds the key (``CryptosignUser(authid, authrole, extra)``),
        or ``None`` to refuse; plain, ``async def`` or Deferred-returning. The router then checks the client's
        signature of a fresh challenge; an unknown key is refused only after that same check.
        """
        self._core.router.auth.cryptosign_user = hook
        return hook

    @property
    def session_store(self) -> _login.SessionStore:
        """Where REST sessions live: ``MemorySessionStore`` by default (at most 100,000 sessions of 24 h,
        the oldest evicted first); any ``SessionStore`` will do. Deleting a token from the store ends the
        REST session only; ``logout`` also ends the WAMP sessions opened with it."""
        return self._core.router.auth.sessions

    @session_store.setter
    def session_store(self, store: _login.SessionStore) -> None:
        self._core.router.auth.sessions = store

    def login(self, request: Any, identity: Identity) -> str:
        """Start a REST session for ``identity`` in a Klein handler.

        Sets an HttpOnly, SameSite=Lax cookie (Secure over TLS) and returns the session's token, which
        non-browser clients send as ``Authorization: Bearer TOKEN``. The app's WebSocket accepts either
        as WAMP auth method ``cookie``, with no second login.
        """
        return _login.login(self.session_store, request, identity)

    def logout(self, request: Any) -> None:
        """End the REST session the request carries (cookie or bearer token) and clear its cookie.

        The WAMP sessions of this node opened with that session (auth method ``cookie``) end too: GOODBYE
        ``sandstone.close.logged_out``, then the WebSocket is closed.
        """
        router = self._core.router
        for token in _login.logout(self.session_store, request):
            for session in router.sessions_opened_with(_login.token_digest(token)):
                session.close(LOGGED_OUT, "logged out")

    def identity(self, request: Any) -> Identity | None:
        """The identity of the request's REST session (bearer token or cookie), or ``None``."""
        return _login.lookup(self.session_store, _login.request_tokens(request))

    # serving

    def execute_endpoint(self, endpoint: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Klein's: run a route's handler. A ``SandstoneSite`` request notes which route served it (the REST
        metrics are labelled by route, never by path)."""
        if isinstance(request, LimitedRequest):
            request.endpoint = endpoint
        return super().execute_endpoint(endpoint, request, *args, **kwargs)

    def websocket_resource(self) -> IResource:
        """The resource serving WAMP over WebSocket for this app (mounted at ``ws_path`` by ``resource``)."""
        core = self._core
        if core.factory is None:
            core.factory = WampServerFactory(
                core.router,
                limits=core.limits,
                allowed_origins=core.allowed_origins,
                allowed_hosts=core.allowed_hosts,
            )
        return websocket_resource(core.factory)

    def rawsocket_factory(self, admission: Admission | None = None) -> RawSocketFactory:
        """A Twisted protocol factory serving WAMP over RawSocket (JSON, MessagePack, CBOR) into this app's
        router: listen with it on any stream endpoint (``tcp:8081``, ``unix:/run/app.sock``), or several. Its
        sessions are peers of the WebSocket ones (same limits, authentication, authorization). ``admission``:
        the connection counts to share, e.g. the app's Site's (``site.admission``)."""
        from ._rawsocket import RawSocketFactory

        self.websocket_resource()  # the WebSocket factory, whose serializers, writer and fairness it shares
        assert self._core.factory is not None
        return RawSocketFactory(self._core.factory, admission)

    def resource(self) -> KleinResource:
        """The twisted.web resource serving the REST routes and, at ``ws_path``, the WAMP endpoint (which
        answers a plain HTTP GET, without ``Upgrade: websocket``, with 426 and a hint)."""
        core = self._core
        if core.mounted_at is None:
            ws = self.websocket_resource()
            core.mounted_at = core.ws_path

            def websocket(request: Any) -> IResource | bytes:
                if not is_websocket_upgrade(request.getHeader(b"upgrade")):
                    return upgrade_required(request)
                return ws

            self.route(core.ws_path, endpoint="sandstone_websocket", methods=["GET"])(websocket)
        return super().resource()

    def site(self, site_class: type[SandstoneSite] = SandstoneSite, **kwargs: Any) -> SandstoneSite:
        """A ``twisted.web.server.Site`` serving ``resource()`` with the app's limits (connections, request
        heads and bodies, allowed hosts) and tracking REST requests in flight for a graceful shutdown.

        WebSocket connections to ``ws_path`` go to the WAMP router without passing through twisted.web.
        """
        resource = self.resource()
        core = self._core
        assert core.factory is not None and core.mounted_at is not None
        kwargs.setdefault("limits", self.limits)
        kwargs.setdefault("allowed_hosts", core.allowed_hosts)
        kwargs.setdefault("stats", core.router.stats)
        return site_class(resource, websocket=(core.mounted_at, core.factory), **kwargs)

    def shutdown_service(
        self, site: SandstoneSite | None = None, timeout: float = 5.0, *, goodbye: bool = False
    ) -> GracefulShutdown:
        """A Twisted service whose stop closes every WebSocket with 1001 "going away" (clients reconnect)
        and waits for REST requests in flight on ``site``, for at most ``timeout`` seconds. With
        ``goodbye``, every session gets GOODBYE ``wamp.close.system_shutdown`` first, after which
        autobahn-js and wampy.js clients do not reconnect."""
        return GracefulShutdown(self, site, timeout, goodbye=goodbye)


def _published(router: Router, publication: Publication) -> int:
    router.publish(publication)
    return publication.id
