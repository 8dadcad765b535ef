"""A client's WAMP session on the router: the protocol state machine between a transport and the router.

The session speaks the protocol (HELLO/WELCOME, request ids, replies); what a request means is the
router's business (``_router.py``), and matching URIs is the broker's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from autobahn.util import rid
from autobahn.wamp import message, role
from autobahn.wamp.exception import InvalidUriError
from autobahn.wamp.message import check_or_raise_uri
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._auth import DENIED_TEXT, Accepted, AuthFailure, Challenge, Hello
from ._call import Call
from ._codec import disclosed
from ._errors import (
    AUTHENTICATION_DENIED,
    GOODBYE_AND_OUT,
    INVALID_URI,
    NO_SUCH_REALM,
    PROTOCOL_VIOLATION,
    RATE_LIMITED,
    ErrorPayload,
    WampError,
    error_payload,
)
from ._ids import MAX_ID
from ._payload import payload_problem, refuse_payload
from ._publication import Publication, optional_set
from ._ratelimit import SessionRates
from ._subscriptions import EXACT, PREFIX

if TYPE_CHECKING:
    from ._registrations import Registration
    from ._router import Router

log = Logger()

_WAITING_HELLO = "waiting-hello"
_AUTHENTICATING = "authenticating"  # an app hook is deciding; nothing but ABORT may arrive
_CHALLENGED = "challenged"  # a CHALLENGE waits for its AUTHENTICATE
_ESTABLISHED = "established"
_CLOSED = "closed"

ROUTER_ROLES = {
    "broker": role.RoleBrokerFeatures(
        publisher_identification=True,
        pattern_based_subscription=True,
        subscriber_blackwhite_listing=True,
        publisher_exclusion=True,
        session_meta_api=True,
        subscription_meta_api=True,
        event_retention=True,
        event_history=True,
    ),
    "dealer": role.RoleDealerFeatures(
        caller_identification=True,
        progressive_call_results=True,
        call_canceling=True,
        call_timeout=True,
        pattern_based_registration=True,
        shared_registration=True,
        session_meta_api=True,
        registration_meta_api=True,
    ),
}


class _Welcome(message.Welcome):
    """WELCOME with the router's roles marshalled once: autobahn's own ``marshal`` walks each role's
    features for every WELCOME, a cost on every connection's setup. Same wire message."""

    __slots__ = ()

    ROLES = message.Welcome(1, ROUTER_ROLES).marshal()[2]["roles"]

    def __init__(
        self,
        session: int,
        realm: str,
        authid: str,
        authrole: str,
        authmethod: str,
        authprovider: str,
        authextra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(session, ROUTER_ROLES, realm, authid, authrole, authmethod, authprovider, authextra)

    def marshal(self) -> list[Any]:
        details = {
            "realm": self.realm,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": self.authmethod,
            "authprovider": self.authprovider,
            "roles": self.ROLES,
        }
        if self.authextra is not None:
            details["authextra"] = self.authextra
        return [self.MESSAGE_TYPE, self.session, details]


class _Request(Protocol):
    """A client's request message (SUBSCRIBE, PUBLISH, CALL, ...): what an ERROR answering it needs."""

    MESSAGE_TYPE: int
    request: int


class Transport(Protocol):
    """What a session needs from the connection carrying it."""

    def send_message(self, msg: message.Message) -> None: ...

    def close_transport(self, reason: str) -> None: ...


class _ProtocolViolation(Exception):
    """The peer broke the WAMP protocol; the session answers with ABORT and closes."""


class Session:
    """A client's WAMP session, as the app sees it in topic hooks and procedures.

    Public, read-only: ``id`` (unique on the router while the session lives), ``realm``, ``authid``,
    ``authrole`` and ``authmethod``. Sessions are compared by identity.
    """

    # limits this session hit and were logged already (see ``note_limit``)
    _limits_noted: frozenset[str] = frozenset()

    def __init__(self, router: Router, transport: Transport, rates: SessionRates | None = None) -> None:
        self._router = router
        self._transport = transport
        # The broker's delivery loop sends a broadcast's EVENTs through this: a session that holds a
        # subscription is open, so they skip send_message's check (one Python call less per subscriber).
        self.send_event: Callable[[message.Message], None] = transport.send_message
        """Send an EVENT of a subscription this session holds (the router's use; apps publish instead)."""
        # The connection's rate buckets, shared by every session on it (a new set if not given).
        self._rates = rates if rates is not None else router.rates()
        self._state = _WAITING_HELLO
        self._challenge: Challenge | None = None
        self._auth_pending: Deferred[Any] | None = None  # the app hook being awaited, if any
        self.id: int = 0
        """The session id, unique on the router while the session lives."""
        self.realm: str | None = None
        """The realm the session joined."""
        self.authid: str | None = None
        """Who the client is (generated for anonymous sessions)."""
        self.authrole: str | None = None
        """The client's role (``anonymous`` for anonymous sessions), for authorizers and ``role_limits``."""
        self.authmethod: str | None = None
        """How the client authenticated: ``anonymous``, ``ticket``, ``wampcra``, ``cryptosign`` or
        ``cookie``."""
        self.authprovider: str | None = None
        """Who authenticated the client (the session meta API's ``authprovider``)."""
        self._interruptible = False  # the client's callee role announced call canceling

    def __repr__(self) -> str:
        return f"<Session {self.id} authid={self.authid!r} authrole={self.authrole!r} {self._state}>"

    @property
    def is_open(self) -> bool:
        """True between WELCOME and the end of the session."""
        return self._state == _ESTABLISHED

    @property
    def has_left(self) -> bool:
        """True once the session is over (GOODBYE, ABORT or transport lost)."""
        return self._state == _CLOSED

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol of the session's connection (``wamp.2.json``...), ``""`` if unknown."""
        return str(getattr(self._transport, "subprotocol", "") or "")

    # from the transport

    def on_message(self, msg: message.Message) -> None:
        """Handle one message from the client; a protocol violation aborts the session."""
        kind = type(msg)
        self._router.activity.received[kind] += 1
        if self._state == _CLOSED:
            return
        table = _HANDLERS_BY_STATE[self._state]
        handler = table.get(kind)
        try:
            if handler is None and isinstance(msg, message.Authenticate):
                raise _ProtocolViolation("AUTHENTICATE with no CHALLENGE pending")
            if handler is None:
                raise _ProtocolViolation(
                    f"unexpected {type(msg).__name__.upper()} message in state {self._state}"
                )
            handler(self, msg)
        except _ProtocolViolation as exc:
            self.abort(PROTOCOL_VIOLATION, str(exc))
        except Exception:
            log.failure(
                "internal error handling {message} from session {session_id}",
                message=type(msg).__name__,
                session_id=self.id,
            )

    def on_transport_lost(self) -> None:
        """The connection is gone: leave the router (subscriptions, registrations, calls in flight)."""
        self._leave()

    def protocol_violation(self, reason: str) -> None:
        """The transport could not decode a frame: ABORT and close."""
        self.abort(PROTOCOL_VIOLATION, reason)

    @property
    def interruptible(self) -> bool:
        """Whether the client, as a callee, announced call canceling (only then is it sent INTERRUPTs)."""
        return self._interruptible

    # to the client

    def send_message(self, msg: message.Message) -> None:
        """Send a WAMP message to the client (nothing once the session is over)."""
        if self._state != _CLOSED:
            self._transport.send_message(msg)

    def send_result(
        self,
        request: int,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        """RESULT for the client's CALL ``request`` (a progressive one when ``progress``)."""
        if not progress:
            self._router.activity.call_ended(None)
        self.send_message(message.Result(request, args=args, kwargs=kwargs, progress=progress or None))

    def send_error(
        self, request: int, error: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> None:
        """ERROR ``error`` for the client's CALL ``request``."""
        self._router.activity.call_ended(error)
        self.send_message(message.Error(message.Call.MESSAGE_TYPE, request, error, args=args, kwargs=kwargs))

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        """INVOCATION ``invocation`` of the client's ``registration``, for ``call``; the caller's identity is
        disclosed when it asked for it, the URI called when the registration is a pattern."""
        caller = call.caller if call.disclose_me else None
        self.send_message(
            message.Invocation(
                invocation,
                registration.id,
                args=call.args,
                kwargs=call.kwargs,
                receive_progress=call.receive_progress or None,
                caller=caller.id if caller is not None else None,
                caller_authid=caller.authid if caller is not None else None,
                caller_authrole=caller.authrole if caller is not None else None,
                procedure=None if registration.match == EXACT else call.procedure,
            )
        )

    def send_interrupt(self, invocation: int, mode: str) -> None:
        """INTERRUPT of the client's INVOCATION ``invocation``."""
        self.send_message(message.Interrupt(invocation, mode=mode))

    def abort(self, reason: str, text: str) -> None:
        """Send ABORT, leave the router and close the transport."""
        if self._state == _CLOSED:
            return
        log.info(
            "aborting session {session_id}: {reason} ({text})", session_id=self.id, reason=reason, text=text
        )
        self._transport.send_message(message.Abort(reason, text))
        self._leave()
        self._transport.close_transport(text)

    def _send_error(self, request: _Request, payload: ErrorPayload) -> None:
        if request.MESSAGE_TYPE == message.Call.MESSAGE_TYPE:
            self._router.activity.call_ended(payload.uri)
        self.send_message(
            message.Error(
                request.MESSAGE_TYPE, request.request, payload.uri, args=payload.args, kwargs=payload.kwargs
            )
        )

    def _leave(self) -> None:
        if self._state == _CLOSED:
            return
        was_open = self._state == _ESTABLISHED
        self._state = _CLOSED
        pending, self._auth_pending, self._challenge = self._auth_pending, None, None
        if pending is not None:
            pending.cancel()  # nothing is welcomed once the transport is gone
        if was_open:
            self._router.leave(self)

    # opening handshake

    def _on_hello(self, hello: message.Hello) -> None:
        if hello.realm != self._router.realm:
            self.abort(NO_SUCH_REALM, f"no realm {hello.realm!r} on this router")
            return
        self.realm = hello.realm
        # Only what the router uses of the client's roles: the role objects would weigh on every session.
        self._interruptible = bool(getattr(hello.roles.get("callee"), "call_canceling", False))
        self.id = rid()  # announced in a WAMP-CRA challenge; the router keeps it on join if still free
        headers = getattr(self._transport, "handshake_headers", None)
        # The Twisted transport under the WAMP one: a cryptosign signature may be bound to its TLS channel.
        connection = getattr(self._transport, "transport", None)
        auth = Hello(
            list(hello.authmethods or []),
            hello.authid,
            hello.authextra or {},
            headers,
            self.id,
            hello.realm,
            connection,
        )
        self._authenticate(self._router.auth.start(auth), self._authentication_step)

    def _authenticate(self, step: Deferred[Any], then: Callable[[Any], None]) -> None:
        """Wait for an authentication step (an app hook may be asynchronous), then go on with ``then``.

        Meanwhile only ABORT may arrive; a step that fails aborts the session (``AuthFailure`` says with
        what), and a step finishing after the session ended does nothing.
        """
        self._state = _AUTHENTICATING
        self._auth_pending = step

        def done(result: Any) -> None:
            if self._auth_pending is not step:
                return
            self._auth_pending = None
            then(result)

        def failed(failure: Failure) -> None:
            if self._auth_pending is not step:
                return
            self._auth_pending = None
            error = failure.value
            if isinstance(error, AuthFailure):
                self._router.activity.auth_failures[error.reason] += 1
                self.abort(error.reason, error.text)
                return
            log.failure("authentication of session {session_id} failed", failure, session_id=self.id)
            self._router.activity.auth_failures[AUTHENTICATION_DENIED] += 1
            self.abort(AUTHENTICATION_DENIED, DENIED_TEXT)

        step.addCallbacks(done, failed).addErrback(
            lambda f: log.failure("opening session {session_id}", f, session_id=self.id)
        )

    def _authentication_step(self, step: Accepted | Challenge) -> None:
        if isinstance(step, Accepted):
            self._welcome(step)
            return
        self._challenge = step
        self._state = _CHALLENGED
        self.send_message(message.Challenge(step.method, step.extra))

    def _on_authenticate(self, msg: message.Authenticate) -> None:
        challenge, self._challenge = self._challenge, None
        assert challenge is not None
        self._authenticate(challenge.verify(msg.signature, msg.extra or {}), self._welcome)

    def _welcome(self, accepted: Accepted) -> None:
        self.authid = accepted.identity.authid
        self.authrole = accepted.identity.authrole
        self.authmethod = accepted.method
        self.authprovider = accepted.provider
        self._rates.use_role(self.authrole)
        # Public, read-only: the token_digest of the REST session it was opened with (method cookie), or None.
        self.login_digest = accepted.login
        self._state = _ESTABLISHED
        self._router.join(self)
        realm = self.realm
        assert realm is not None  # set from HELLO
        extra = None if accepted.authextra is None else dict(accepted.authextra)
        self.send_message(
            _Welcome(self.id, realm, self.authid, self.authrole, self.authmethod, accepted.provider, extra)
        )

    def _on_abort(self, abort: message.Abort) -> None:
        log.debug("session {session_id} aborted by peer: {reason}", session_id=self.id, reason=abort.reason)
        self._leave()
        self._transport.close_transport("peer aborted")

    def _on_goodbye(self, goodbye: message.Goodbye) -> None:
        self.send_message(message.Goodbye(GOODBYE_AND_OUT))
        self._leave()

    # requests

    def _request(self, msg: Any, work: Callable[[], Deferred[None] | None]) -> None:
        """Run a request's work, answering a ``WampError`` with ERROR for that request (also when the
        work returns a Deferred: authorization waiting for an asynchronous answer)."""
        _check_request_id(msg)
        try:
            pending = work()
        except WampError as exc:
            self._send_error(msg, ErrorPayload(exc.uri, exc.args_list or None, exc.kwargs or None))
            return
        if isinstance(pending, Deferred):
            pending.addErrback(self._request_failed, msg)

    def _request_failed(self, failure: Any, msg: Any) -> None:
        if not failure.check(WampError):
            log.failure("internal error handling {message}", failure, message=type(msg).__name__)
        self._send_error(msg, error_payload(failure))

    def _on_subscribe(self, msg: message.Subscribe) -> None:
        if not self._within_rate(msg):
            return

        def work() -> Deferred[None] | None:
            self._check_uri(msg.topic, msg.match)
            return self._router.subscribe(self, msg)

        self._request(msg, work)

    def _on_unsubscribe(self, msg: message.Unsubscribe) -> None:
        self._request(msg, lambda: self._router.unsubscribe(self, msg))

    def _on_publish(self, msg: message.Publish) -> None:
        if not self._within_rate(msg):
            return

        def work() -> None:
            self._check_uri(msg.topic, EXACT)
            problem = payload_problem(msg.args, msg.kwargs)
            if problem is not None:  # it would break the EVENTs of subscribers on other serializers
                first = self.note_limit("payload")
                raise refuse_payload(self._router.stats, "PUBLISH", self.id, problem, first)
            publication = self._publication(msg)
            done = self._router.publish_from(self, publication)
            if msg.acknowledge:
                self._acknowledge(msg, publication, done)
            elif done is not None:
                done.addErrback(lambda f: None)  # already logged by the topic host

        if msg.acknowledge:
            self._request(msg, work)
            return
        _check_request_id(msg)
        try:  # without acknowledge the spec wants no answer, not even an ERROR
            work()
        except WampError as exc:
            log.debug(
                "unacknowledged PUBLISH from session {session_id} dropped: {error}",
                session_id=self.id,
                error=exc,
            )

    def _acknowledge(
        self, msg: message.Publish, publication: Publication, done: Deferred[None] | None
    ) -> None:
        if done is None:
            self.send_message(message.Published(msg.request, publication.id))
            return
        done.addCallbacks(
            lambda _: self.send_message(message.Published(msg.request, publication.id)),
            lambda failure: self._send_error(msg, error_payload(failure)),
        )

    def _publication(self, msg: message.Publish) -> Publication:
        return Publication(
            topic=msg.topic,
            args=msg.args,
            kwargs=msg.kwargs,
            publisher=self.id,
            publisher_authid=self.authid,
            publisher_authrole=self.authrole,
            exclude_me=msg.exclude_me is not False,
            disclose_me=disclosed(msg),
            exclude=optional_set(msg.exclude),
            exclude_authid=optional_set(msg.exclude_authid),
            exclude_authrole=optional_set(msg.exclude_authrole),
            eligible=optional_set(msg.eligible),
            eligible_authid=optional_set(msg.eligible_authid),
            eligible_authrole=optional_set(msg.eligible_authrole),
            retain=msg.retain is True,
        )

    def _on_register(self, msg: message.Register) -> None:
        def work() -> Deferred[None] | None:
            # autobahn refused unknown match and invoke policies already (a protocol violation)
            self._check_uri(msg.procedure, msg.match or EXACT)
            return self._router.register(self, msg)

        self._request(msg, work)

    def _on_unregister(self, msg: message.Unregister) -> None:
        def work() -> None:
            self._router.unregister(self, msg.registration)
            self.send_message(message.Unregistered(msg.request))

        self._request(msg, work)

    def _on_call(self, msg: message.Call) -> None:
        if not self._within_rate(msg):
            return

        def work() -> Deferred[None] | None:
            self._check_uri(msg.procedure, EXACT)
            problem = payload_problem(msg.args, msg.kwargs)
            if problem is not None:  # the callee may speak another serializer
                first = self.note_limit("payload")
                raise refuse_payload(self._router.stats, "CALL", self.id, problem, first)
            call = Call(
                self,
                msg.request,
                msg.procedure,
                msg.args,
                msg.kwargs,
                receive_progress=bool(msg.receive_progress),
                disclose_me=disclosed(msg),
                timeout=msg.timeout / 1000 if msg.timeout else 0.0,  # autobahn checked: an int >= 0, in ms
            )
            return self._router.call(self, call)

        self._request(msg, work)

    def _on_yield(self, msg: message.Yield) -> None:
        _check_request_id(msg)
        problem = payload_problem(msg.args, msg.kwargs)
        if problem is not None:  # the dealer ends the call with an ERROR for the caller instead
            refuse_payload(self._router.stats, "YIELD", self.id, problem, self.note_limit("payload"))
        self._router.dealer.yielded(self, msg.request, msg.args, msg.kwargs, bool(msg.progress), problem)

    def _on_cancel(self, msg: message.Cancel) -> None:
        _check_request_id(msg)
        self._router.cancel(self, msg.request, msg.mode)

    def _on_error(self, msg: message.Error) -> None:
        if msg.request_type != message.Invocation.MESSAGE_TYPE:
            raise _ProtocolViolation(f"ERROR for a message of type {msg.request_type} sent to a router")
        _check_request_id(msg)
        problem = payload_problem(msg.args, msg.kwargs)
        if problem is not None:  # the caller gets the error URI with an explanation instead of these
            refuse_payload(self._router.stats, "ERROR", self.id, problem, self.note_limit("payload"))
        self._router.dealer.failed(self, msg.request, msg.error, msg.args, msg.kwargs, problem)

    def _within_rate(self, msg: message.Publish | message.Call | message.Subscribe) -> bool:
        """Take a token from the connection's PUBLISH, CALL or SUBSCRIBE bucket; over the rate, answer
        ERROR ``rate_limited`` (an unacknowledged PUBLISH is dropped and counted) and return False."""
        rates = self._rates
        if isinstance(msg, message.Publish):
            bucket, kind = rates.publish, "PUBLISH"
        elif isinstance(msg, message.Call):
            bucket, kind = rates.call, "CALL"
        else:
            bucket, kind = rates.subscribe, "SUBSCRIBE"
        if bucket.allow():
            return True
        _check_request_id(msg)
        self._router.stats["rate_limited"] += 1
        if isinstance(msg, message.Publish) and not msg.acknowledge:
            self._router.stats["rate_limited_dropped"] += 1
        else:
            self._send_error(msg, ErrorPayload(RATE_LIMITED, [f"too many {kind} messages; slow down"], None))
        if kind == "SUBSCRIBE" and self.note_limit("subscribe_rate"):
            log.info(
                "session {session_id} sends SUBSCRIBE faster than subscribe_rate/subscribe_burst allow: "
                "the excess gets rate_limited",
                session_id=self.id,
            )
        return False

    def note_limit(self, name: str) -> bool:
        """Record that this session ran into the limit ``name``; True the first time only, so that a
        refusal is logged once per session rather than once per message."""
        if name in self._limits_noted:
            return False
        self._limits_noted = self._limits_noted | {name}
        return True

    def _check_uri(self, uri: str, match: str) -> None:
        try:
            check_or_raise_uri(
                uri,
                "URI",
                strict=self._router.strict_uris,
                allow_empty_components=match != EXACT and match != PREFIX,
                allow_last_empty=match == PREFIX,
            )
        except InvalidUriError:
            raise WampError(INVALID_URI, f"invalid URI {uri!r} for match policy {match!r}") from None
        if match == EXACT and (not uri or ".." in uri or uri.startswith(".") or uri.endswith(".")):
            raise WampError(INVALID_URI, f"invalid URI {uri!r}: exact URIs need non-empty parts")

    def close(self, reason: str, text: str | None = None) -> None:
        """End the session from the router's side: GOODBYE ``reason`` (ABORT if it is not open yet), leave the
        router and close the connection. Clients such as autobahn-js do not reconnect after a GOODBYE."""
        if self._state == _CLOSED:
            return
        if self._state != _ESTABLISHED:
            self.abort(reason, text or reason)
            return
        log.info("closing session {session_id}: {reason}", session_id=self.id, reason=reason)
        self._transport.send_message(message.Goodbye(reason, text))
        self._leave()
        self._transport.close_transport(text or reason)


def _check_request_id(msg: Any) -> None:
    request = msg.request
    if type(request) is not int or not 1 <= request <= MAX_ID:
        raise _ProtocolViolation(f"request id {request!r} is outside [1, 2^53]")


_OPENING_HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    message.Hello: Session._on_hello,
    message.Abort: Session._on_abort,
}

_AUTHENTICATING_HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    message.Abort: Session._on_abort,
}

_CHALLENGED_HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    message.Authenticate: Session._on_authenticate,
    message.Abort: Session._on_abort,
}

_ESTABLISHED_HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    message.Subscribe: Session._on_subscribe,
    message.Unsubscribe: Session._on_unsubscribe,
    message.Publish: Session._on_publish,
    message.Register: Session._on_register,
    message.Unregister: Session._on_unregister,
    message.Call: Session._on_call,
    message.Yield: Session._on_yield,
    message.Cancel: Session._on_cancel,
    message.Error: Session._on_error,
    message.Goodbye: Session._on_goodbye,
    message.Abort: Session._on_abort,
}

_HANDLERS_BY_STATE: dict[str, dict[type, Callable[[Session, Any], None]]] = {
    _WAITING_HELLO: _OPENING_HANDLERS,
    _AUTHENTICATING: _AUTHENTICATING_HANDLERS,
    _CHALLENGED: _CHALLENGED_HANDLERS,
    _ESTABLISHED: _ESTABLISHED_HANDLERS,
    _CLOSED: {},
}
