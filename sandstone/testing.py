"""Test an app's topics, procedures and REST routes in memory, with no sockets (for ``twisted.trial``).

```python
from twisted.trial.unittest import SynchronousTestCase

from examples.blog import app
from sandstone.testing import TestClient

class ChatTests(SynchronousTestCase):
    def test_welcome(self):
        client = TestClient(app)
        self.addCleanup(client.close)
        alice = client.connect()
        general = alice.subscribe("chat/general")
        self.assertEqual(general.payloads, ["Welcome on general"])
```

Messages cross a real WAMP serializer (JSON by default) in both directions, so what a test sees
is what a client on the wire would see.
"""

from __future__ import annotations

import itertools
import json as jsonlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from autobahn.wamp import message
from autobahn.wamp.auth import compute_wcs, derive_key
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.interfaces import ISerializer
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.websocket.types import ConnectionDeny
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred

from ._app import Sandstone
from ._autobahn_internals import object_serializer
from ._codec import DecodeError, decode
from ._login import SESSION_COOKIE
from ._session import Session
from ._wamp1 import Wamp1Adapter, Wamp1Violation
from ._wamp1 import accept as accept_wamp1

__all__ = [
    "Event",
    "HandshakeRefused",
    "SessionClosed",
    "TestClient",
    "TestResponse",
    "TestSession",
    "TestSubscription",
    "Wamp1CallError",
    "Wamp1Subscription",
    "Wamp1TestSession",
]

# ISerializers by ISerializer.register(), which type checkers do not see.
_SERIALIZERS = cast(
    "dict[str, Callable[[], ISerializer]]",
    {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer},
)

_CLIENT_ROLES = {
    "publisher": {"features": {"publisher_exclusion": True, "subscriber_blackwhite_listing": True}},
    "subscriber": {"features": {"pattern_based_subscription": True}},
    "caller": {"features": {"progressive_call_results": True}},
    "callee": {"features": {"progressive_call_results": True}},
}


class SessionClosed(Exception):
    """The router ended the session (ABORT or GOODBYE); ``reason`` is the URI it gave."""

    def __init__(self, reason: str, text: str | None) -> None:
        super().__init__(f"{reason}: {text}" if text else reason)
        self.reason = reason


@dataclass
class Event:
    """One EVENT a test session received."""

    args: list[Any]
    """Its positional arguments."""
    kwargs: dict[str, Any]
    """Its keyword arguments."""
    publication: int
    """The publication id."""
    topic: str | None
    """The concrete topic URI (``details.topic``), for prefix and wildcard subscriptions; else ``None``."""
    publisher: int | None
    """The publisher's session id when it was disclosed (``disclose_me``), else ``None``."""
    retained: bool = False
    """Whether it is the topic's retained event, sent on subscribing with ``get_retained``."""

    @property
    def payload(self) -> Any:
        """The first positional argument (what ``Topic.broadcast`` sends), or ``None``."""
        return self.args[0] if self.args else None


@dataclass
class TestSubscription:
    """A subscription of a test session, with every event received on it so far."""

    id: int
    """The subscription id the router gave."""
    topic: str
    """The URI or pattern subscribed to."""
    match: str
    """The match policy: ``exact``, ``prefix`` or ``wildcard``."""
    events: list[Event] = field(default_factory=list)
    """Every EVENT received on it, in order."""

    @property
    def payloads(self) -> list[Any]:
        """The first argument of each received event, in order."""
        return [event.payload for event in self.events]


@dataclass
class TestResponse:
    """A REST response: status code, headers and body."""

    code: int
    """The HTTP status code."""
    headers: dict[str, list[str]]
    """The response headers: name → values."""
    body: bytes
    """The body, whole."""

    def json(self) -> Any:
        """The body decoded as JSON."""
        return jsonlib.loads(self.body)

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies the response sets (name → value; an empty value clears one)."""
        jar: dict[str, str] = {}
        for name, values in self.headers.items():
            if name.lower() == "set-cookie":
                for value in values:
                    key, _, rest = value.partition("=")
                    jar[key.strip()] = rest.split(";", 1)[0]
        return jar


class _MemoryTransport:
    """The router side of an in-memory connection: serializes what the router sends to the client."""

    def __init__(self, client: TestSession, headers: Mapping[str, str] | None) -> None:
        self._client = client
        self.closed = False
        # What a WebSocket transport keeps of the opening handshake (header names in lower case).
        self.handshake_headers = {k.lower(): v for k, v in (headers or {}).items()}

    def send_message(self, msg: message.Message) -> None:
        if self.closed:
            return
        payload, is_binary = self._client._serializer.serialize(msg)
        for parsed in self._client._serializer.unserialize(payload, is_binary):
            self._client._receive(parsed)

    def close_transport(self, reason: str) -> None:
        self.closed = True
        self._client._transport_closed(reason)


class TestSession:
    """A WAMP client session connected in memory to an app's router. Replies arrive synchronously."""

    __test__ = False  # not a test case, whatever trial or pytest think of the name

    def __init__(
        self, app: Sandstone, serializer: str = "json", *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._serializer = _SERIALIZERS[serializer]()
        self._transport = _MemoryTransport(self, headers)
        self._router = app.router
        self._rates = app.router.rates()  # the connection's, kept by every session on it
        self._session: Session = app.router.attach(self._transport, self._rates)
        self._requests = itertools.count(1)
        self._pending: dict[int, Deferred[Any]] = {}
        self._subscriptions: dict[int, TestSubscription] = {}
        self._subscribing: dict[int, tuple[str, str]] = {}
        self._registrations: dict[int, Callable[..., Any]] = {}
        self.messages: list[message.Message] = []
        """Every message the router sent this session (autobahn message objects), for protocol tests."""
        self.closed: SessionClosed | None = None
        """How the router ended the session (ABORT or GOODBYE), if it did."""
        self.id = 0
        """The session id of WELCOME."""
        self.authid: str | None = None
        """The authid of WELCOME."""
        self.authrole: str | None = None
        """The authrole of WELCOME."""
        self.authmethod: str | None = None
        """The authmethod of WELCOME."""
        self.transport_closed = False
        """Whether the connection is closed (by the router, or by ``disconnect``)."""
        self._ticket: str | None = None
        self._secret: str | bytes | None = None
        self._delivering = 0  # > 0 while the router handles a frame from this client
        self._unanswered: message.Challenge | None = None

    # connection

    def join(
        self, realm: str, *, ticket: str | None = None, secret: str | bytes | None = None, **details: Any
    ) -> TestSession:
        """Send HELLO; raises ``SessionClosed`` when the router answers ABORT.

        A CHALLENGE is answered with ``ticket`` (method ``ticket``) or signed with ``secret`` (``wampcra``,
        the password when the challenge is salted). After a GOODBYE the connection stays open, and ``join``
        starts a new session on it.
        """
        hello_details = {"roles": _CLIENT_ROLES, **details}
        self._ticket, self._secret = ticket, secret
        self.closed = None
        self.send_raw([message.Hello.MESSAGE_TYPE, realm, hello_details])
        if self.closed is not None:
            raise self.closed
        return self

    def leave(self) -> None:
        """Say GOODBYE."""
        self.send_raw([message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.normal"])

    def disconnect(self) -> None:
        """Drop the connection without a GOODBYE, as a crashed client would."""
        if not self._transport.closed:
            self._transport.closed = True
            self.transport_closed = True
            self._session.on_transport_lost()

    # pub/sub

    def subscribe(self, topic: str, *, match: str = "exact", get_retained: bool = False) -> TestSubscription:
        """Subscribe; returns the subscription, whose ``events`` fill up as events arrive. With
        ``get_retained`` the topic's retained event comes first (``Event.retained``)."""
        options: dict[str, Any] = {} if match == "exact" else {"match": match}
        if get_retained:
            options["get_retained"] = True
        request = next(self._requests)
        self._subscribing[request] = (topic, match)
        subscription: TestSubscription = self._result(
            self._request(message.Subscribe.MESSAGE_TYPE, options, topic, request=request)
        )
        return subscription

    def unsubscribe(self, subscription: TestSubscription) -> None:
        """Unsubscribe; raises ``ApplicationError`` on an ERROR."""
        self._result(self._request(message.Unsubscribe.MESSAGE_TYPE, subscription.id))
        self._subscriptions.pop(subscription.id, None)

    def publish(
        self,
        topic: str,
        *args: Any,
        acknowledge: bool = False,
        exclude_me: bool | None = None,
        exclude: Iterable[int] | None = None,
        eligible: Iterable[int] | None = None,
        disclose_me: bool | None = None,
        retain: bool | None = None,
        **kwargs: Any,
    ) -> int | None:
        """Publish; with ``acknowledge`` returns the publication id or raises ``ApplicationError``.
        ``retain`` keeps it as the topic's retained event."""
        options: dict[str, Any] = {}
        for name, value in (
            ("acknowledge", acknowledge or None),
            ("exclude_me", exclude_me),
            ("disclose_me", disclose_me),
            ("retain", retain),
        ):
            if value is not None:
                options[name] = value
        if exclude is not None:
            options["exclude"] = list(exclude)
        if eligible is not None:
            options["eligible"] = list(eligible)
        if not acknowledge:
            self.send_raw(
                [message.Publish.MESSAGE_TYPE, next(self._requests), options, topic, *_payload(args, kwargs)]
            )
            return None
        publication: int = self._result(
            self._request(message.Publish.MESSAGE_TYPE, options, topic, *_payload(args, kwargs))
        )
        return publication

    # RPC

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call a procedure: a Deferred firing with the result (one value, or a list/dict when several)
        or failing with ``ApplicationError``."""
        return self._request(message.Call.MESSAGE_TYPE, {}, procedure, *_payload(args, kwargs))

    def cancel(self, call: Deferred[Any], mode: str | None = None) -> None:
        """Send CANCEL for a call in flight (a Deferred returned by ``call``), optionally with a mode."""
        request = next((r for r, d in self._pending.items() if d is call), None)
        if request is None:
            raise ValueError("that call is not in flight")
        self.send_raw([message.Cancel.MESSAGE_TYPE, request, {"mode": mode} if mode else {}])

    def register(
        self, procedure: str, function: Callable[..., Any], *, match: str = "exact", invoke: str = "single"
    ) -> int:
        """Register ``function`` as the callee of ``procedure`` (a pattern with ``match="prefix"`` or
        ``"wildcard"``; shared with other callees by ``invoke="roundrobin"``, ``"random"``, ``"first"`` or
        ``"last"``); returns the registration id."""
        options: dict[str, str] = {}
        if match != "exact":
            options["match"] = match
        if invoke != "single":
            options["invoke"] = invoke
        registration: int = self._result(self._request(message.Register.MESSAGE_TYPE, options, procedure))
        self._registrations[registration] = function
        return registration

    # raw access, for protocol tests

    def send_raw(self, raw: list[Any]) -> None:
        """Serialize a raw WAMP message (a list) and hand it to the router as a frame."""
        objects = object_serializer(self._serializer)
        payload, is_binary = objects.serialize(raw), objects.BINARY
        self.send_frame(payload, is_binary)

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        """Hand the router one frame, exactly as a transport would."""
        if self._transport.closed:
            raise SessionClosed("transport closed", None)
        self._delivering += 1
        try:
            self._deliver(payload, is_binary)
        finally:
            self._delivering -= 1
        challenge, self._unanswered = self._unanswered, None
        if challenge is not None and not self._delivering:
            self._answer(challenge)

    def _deliver(self, payload: bytes, is_binary: bool) -> None:
        try:
            messages = decode(self._serializer, payload, is_binary)
        except DecodeError as exc:
            self._session.protocol_violation(str(exc))
            return
        for msg in messages:
            self._session.on_message(msg)
            if self._session.has_left:
                # As a WebSocket connection does: after GOODBYE a new session may join on it.
                if not self._transport.closed:
                    self._session = self._router.attach(self._transport, self._rates)
                break

    # internals

    def _request(self, kind: int, *fields: Any, request: int | None = None) -> Deferred[Any]:
        request = request or next(self._requests)
        d: Deferred[Any] = Deferred()
        self._pending[request] = d
        self.send_raw([kind, request, *fields])
        return d

    def _result(self, d: Deferred[Any]) -> Any:
        if self.closed is not None:
            raise self.closed
        return _fired(d, "the router's answer")

    def _receive(self, msg: message.Message) -> None:
        self.messages.append(msg)
        handler = _CLIENT_HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, msg)

    def _on_welcome(self, msg: message.Welcome) -> None:
        self.id, self.authid, self.authrole = msg.session, msg.authid, msg.authrole
        self.authmethod = msg.authmethod

    def _on_challenge(self, msg: message.Challenge) -> None:
        if self._delivering:
            self._unanswered = msg  # answered once the router is done with the frame it is handling
        else:
            self._answer(msg)  # a challenge sent later, after an asynchronous hook

    def _answer(self, challenge: message.Challenge) -> None:
        """AUTHENTICATE with the credentials given to ``join``; with none, the challenge is not answered."""
        if self._transport.closed:
            return
        if challenge.method == "ticket" and self._ticket is not None:
            signature = self._ticket
        elif challenge.method == "wampcra" and self._secret is not None:
            key: str | bytes = self._secret
            extra = challenge.extra
            if "salt" in extra:
                key = derive_key(key, extra["salt"], extra["iterations"], extra["keylen"])
            signature = compute_wcs(key, extra["challenge"]).decode("ascii")
        else:
            return
        self.send_raw([message.Authenticate.MESSAGE_TYPE, signature, {}])

    def _on_abort(self, msg: message.Abort) -> None:
        self.closed = SessionClosed(msg.reason, msg.message)

    def _on_goodbye(self, msg: message.Goodbye) -> None:
        self.closed = SessionClosed(msg.reason, msg.message)

    def _on_subscribed(self, msg: message.Subscribed) -> None:
        # Created on SUBSCRIBED, not when subscribe() returns: an on_subscribe hook may send at once.
        topic, match = self._subscribing.pop(msg.request, ("", "exact"))
        subscription = self._subscriptions.get(msg.subscription)
        if subscription is None:
            subscription = TestSubscription(msg.subscription, topic, match)
            self._subscriptions[msg.subscription] = subscription
        _settle(self, msg.request, subscription)

    def _on_event(self, msg: message.Event) -> None:
        subscription = self._subscriptions.get(msg.subscription)
        if subscription is not None:
            subscription.events.append(
                Event(
                    list(msg.args or []),
                    dict(msg.kwargs or {}),
                    msg.publication,
                    msg.topic,
                    msg.publisher,
                    msg.retained is True,
                )
            )

    def _on_invocation(self, msg: message.Invocation) -> None:
        function = self._registrations.get(msg.registration)
        if function is None:
            return
        d = maybeDeferred(function, *(msg.args or []), **(msg.kwargs or {}))
        d.addCallbacks(
            lambda result: self.send_raw([message.Yield.MESSAGE_TYPE, msg.request, {}, [result]]),
            lambda failure: self.send_raw(
                [
                    message.Error.MESSAGE_TYPE,
                    message.Invocation.MESSAGE_TYPE,
                    msg.request,
                    {},
                    "wamp.error.runtime_error",
                    [str(failure.value)],
                ]
            ),
        )

    def _transport_closed(self, reason: str) -> None:
        self.transport_closed = True


def _payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    if kwargs:
        return [list(args), kwargs]
    if args:
        return [list(args)]
    return []


def _call_value(msg: message.Result) -> Any:
    if msg.kwargs:
        return {"args": list(msg.args or []), "kwargs": msg.kwargs}
    args = msg.args or []
    if len(args) == 1:
        return args[0]
    return list(args) if args else None


def _settle(session: TestSession, request: int, value: Any) -> None:
    d = session._pending.pop(request, None)
    if d is None:
        return
    if isinstance(value, Exception):
        d.errback(value)
    else:
        d.callback(value)


_CLIENT_HANDLERS: dict[type, Callable[[TestSession, Any], None]] = {
    message.Welcome: TestSession._on_welcome,
    message.Challenge: TestSession._on_challenge,
    message.Abort: TestSession._on_abort,
    message.Goodbye: TestSession._on_goodbye,
    message.Event: TestSession._on_event,
    message.Invocation: TestSession._on_invocation,
    message.Subscribed: TestSession._on_subscribed,
    message.Unsubscribed: lambda s, m: _settle(s, m.request, None),
    message.Published: lambda s, m: _settle(s, m.request, m.publication),
    message.Registered: lambda s, m: _settle(s, m.request, m.registration),
    message.Unregistered: lambda s, m: _settle(s, m.request, None),
    message.Result: lambda s, m: _settle(s, m.request, _call_value(m)),
    message.Error: lambda s, m: _settle(
        s, m.request, ApplicationError(m.error, *(m.args or []), **(m.kwargs or {}))
    ),
}


class HandshakeRefused(Exception):
    """The server refused the WebSocket handshake; ``code`` is the HTTP status it answered (403...)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"HTTP {code}: {text}")
        self.code = code


class Wamp1CallError(Exception):
    """A v1 CALL was answered with CALLERROR: ``uri``, ``desc`` and ``details`` (``None`` if not sent)."""

    def __init__(self, uri: str, desc: Any, details: Any = None) -> None:
        super().__init__(f"{uri}: {desc}")
        self.uri = uri
        self.desc = desc
        self.details = details


@dataclass
class Wamp1Subscription:
    """A v1 session's subscription to ``topic`` (the full URI), with the event of every EVENT so far."""

    topic: str
    """The full URI subscribed to."""
    events: list[Any] = field(default_factory=list)
    """The event of every EVENT received, in order."""

    @property
    def payloads(self) -> list[Any]:
        """The events received, in order (as ``TestSubscription.payloads``)."""
        return self.events


class _Wamp1MemoryTransport:
    """The router side of an in-memory WAMP v1 connection: v2 messages become v1 messages for the client."""

    subprotocol = "wamp"

    def __init__(self, client: Wamp1TestSession, adapter: Wamp1Adapter, headers: Mapping[str, str]) -> None:
        self._client = client
        self._adapter = adapter
        self.closed = False
        self.handshake_headers = dict(headers)

    def send_message(self, msg: message.Message) -> None:
        if self.closed:
            return
        framed = self._adapter.framed(msg)
        if framed is not None:
            self._client._receive(jsonlib.loads(framed[0]))

    def close_transport(self, reason: str) -> None:
        self.closed = True
        self._client._transport_closed(self._adapter.close_code, reason)


class Wamp1TestSession:
    """A WAMP v1 client, as AutobahnJS 0.8 is one, connected in memory to an app's router (see
    ``TestClient.connect_v1``). Its frames cross the same v1 translation as a WebSocket's, as JSON.

    ``id`` is the session id of the v1 WELCOME (a string); ``messages`` every v1 message received (lists);
    ``close_code``/``close_reason`` the WebSocket close the server started, if any (1002 for a malformed
    message...). Like AutobahnJS, the session resolves CURIEs with its own ``prefix`` map to know which
    subscription an EVENT is for.
    """

    __test__ = False

    def __init__(self, app: Sandstone, headers: Mapping[str, str]) -> None:
        self._router = app.router
        self._adapter = Wamp1Adapter()
        self._transport = _Wamp1MemoryTransport(self, self._adapter, headers)
        self._session: Session = app.router.attach(self._transport, app.router.rates())
        self._prefixes: dict[str, str] = {}
        self._subscriptions: dict[str, Wamp1Subscription] = {}
        self._calls: dict[str, Deferred[Any]] = {}
        self._call_ids = itertools.count(1)
        self.messages: list[list[Any]] = []
        self.id = ""
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.transport_closed = False
        self._session.on_message(self._adapter.hello(app.router.realm))

    @property
    def session(self) -> Session:
        """The router's ``Session`` of this client (what topic hooks and procedures get)."""
        return self._session

    def prefix(self, prefix: str, uri: str) -> None:
        """PREFIX: ``prefix:rest`` stands for ``uri + rest`` from now on, here and on the server."""
        self._prefixes[prefix] = uri
        self.send_raw([1, prefix, uri])

    def resolve(self, curie: str) -> str:
        """The full URI of a CURIE of this session's prefixes (other strings as they are)."""
        prefix, colon, rest = curie.partition(":")
        base = self._prefixes.get(prefix) if colon else None
        return curie if base is None else base + rest

    def subscribe(self, topic: str) -> Wamp1Subscription:
        """SUBSCRIBE (a CURIE or a URI); the subscription's ``events`` fill up as EVENTs arrive. v1 has no
        answer: a refused subscription just gets no events."""
        uri = self.resolve(topic)
        subscription = self._subscriptions.get(uri)
        if subscription is None:
            subscription = self._subscriptions[uri] = Wamp1Subscription(uri)
        self.send_raw([5, topic])
        return subscription

    def unsubscribe(self, topic: str) -> None:
        """UNSUBSCRIBE (a CURIE or a URI)."""
        self._subscriptions.pop(self.resolve(topic), None)
        self.send_raw([6, topic])

    def publish(
        self,
        topic: str,
        event: Any,
        *,
        exclude_me: bool | None = None,
        exclude: Iterable[str] | None = None,
        eligible: Iterable[str] | None = None,
    ) -> None:
        """PUBLISH ``event``: ``[7, topic, event]``; with ``exclude_me``, ``[..., excludeMe]``; with
        ``exclude`` and/or ``eligible`` (lists of v1 session ids), ``[..., exclude, eligible]``."""
        raw: list[Any] = [7, topic, event]
        if exclude is not None or eligible is not None:
            raw.append(list(exclude or []))
            if eligible is not None:
                raw.append(list(eligible))
        elif exclude_me is not None:
            raw.append(exclude_me)
        self.send_raw(raw)

    def call(self, procedure: str, *args: Any) -> Deferred[Any]:
        """CALL: a Deferred firing with the CALLRESULT's result or failing with ``Wamp1CallError``."""
        call_id = f"call-{next(self._call_ids)}"
        d: Deferred[Any] = Deferred()
        self._calls[call_id] = d
        self.send_raw([2, call_id, procedure, *args])
        return d

    def disconnect(self) -> None:
        """Drop the connection, as a closed browser tab does."""
        if not self._transport.closed:
            self._transport.closed = True
            self.transport_closed = True
            self._session.on_transport_lost()

    def send_raw(self, raw: Any) -> None:
        """Send one v1 message (any JSON value, for protocol tests) as a text frame."""
        self.send_frame(jsonlib.dumps(raw).encode("utf-8"), False)

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        """Hand the router one frame, exactly as the WebSocket transport would."""
        if self._transport.closed:
            raise SessionClosed("transport closed", self.close_reason)
        try:
            messages = self._adapter.decode(payload, is_binary)
        except Wamp1Violation as exc:
            self._session.protocol_violation(str(exc))
            return
        for msg in messages:
            self._session.on_message(msg)

    def _receive(self, raw: list[Any]) -> None:
        self.messages.append(raw)
        kind = raw[0]
        if kind == 0:
            self.id = raw[1]
        elif kind == 3:
            d = self._calls.pop(raw[1], None)
            if d is not None:
                d.callback(raw[2])
        elif kind == 4:
            d = self._calls.pop(raw[1], None)
            if d is not None:
                d.errback(Wamp1CallError(raw[2], raw[3], raw[4] if len(raw) > 4 else None))
        elif kind == 8:
            subscription = self._subscriptions.get(self.resolve(raw[1]))
            if subscription is not None:
                subscription.events.append(raw[2])

    def _transport_closed(self, code: int, reason: str) -> None:
        self.transport_closed = True
        self.close_code, self.close_reason = code, reason


class TestClient:
    """Connects in-memory WAMP sessions to an app and drives its REST routes, for trial tests."""

    __test__ = False

    def __init__(self, app: Sandstone, serializer: str = "json") -> None:
        self.app = app
        self.serializer = serializer
        self.rest = StubTreq(app.resource())
        self._sessions: list[TestSession | Wamp1TestSession] = []

    def close(self) -> None:
        """Disconnect every session this client connected (``self.addCleanup(client.close)``): an app shared
        by several tests then starts each one without the previous one's subscribers."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            if not session.transport_closed:
                session.disconnect()

    def connect(
        self,
        realm: str | None = None,
        *,
        authid: str | None = None,
        ticket: str | None = None,
        secret: str | bytes | None = None,
        cookie: str | None = None,
        bearer: str | None = None,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> TestSession:
        """A joined session (HELLO/WELCOME done); raises ``SessionClosed`` on ABORT.

        Without credentials the session is anonymous. ``ticket`` authenticates with method ``ticket``,
        ``secret`` with ``wampcra`` (the password for salted users), ``cookie``/``bearer`` (a token returned
        by ``app.login``) with ``cookie``, sent in the WebSocket handshake's headers as a browser or a
        script would. ``authmethods=[...]`` overrides the methods offered; other ``details`` go to HELLO.
        """
        handshake = dict(headers or {})
        if cookie is not None:
            handshake["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        if bearer is not None:
            handshake["Authorization"] = f"Bearer {bearer}"
        if "authmethods" not in details:
            offered = [
                method
                for method, given in (
                    ("ticket", ticket),
                    ("wampcra", secret),
                    ("cookie", cookie or bearer),
                )
                if given is not None
            ]
            if offered:
                details["authmethods"] = offered
        if authid is not None:
            details["authid"] = authid
        session = TestSession(self.app, self.serializer, headers=handshake)
        self._sessions.append(session)
        return session.join(realm or self.app.realm, ticket=ticket, secret=secret, **details)

    def connect_v1(
        self,
        *,
        cookie: str | None = None,
        bearer: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Wamp1TestSession:
        """A WAMP v1 session (WebSocket subprotocol ``wamp``, AutobahnJS 0.8), welcomed: anonymous, or with
        the REST login of ``cookie``/``bearer`` (a token returned by ``app.login``). Raises
        ``HandshakeRefused`` (403) where the server would refuse the handshake: the app allows no anonymous
        sessions and no live REST login is given."""
        handshake = {name.lower(): value for name, value in (headers or {}).items()}
        if cookie is not None:
            handshake["cookie"] = f"{SESSION_COOKIE}={cookie}"
        if bearer is not None:
            handshake["authorization"] = f"Bearer {bearer}"
        try:
            accept_wamp1(self.app.router, handshake)
        except ConnectionDeny as refused:
            raise HandshakeRefused(refused.code, refused.reason or "") from None
        session = Wamp1TestSession(self.app, handshake)
        self._sessions.append(session)
        return session

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Make a REST request to the app and return its response (the handler must finish in memory)."""
        url = "http://localhost" + path
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if json is not None:
            kwargs["json"] = json
        elif data is not None:
            kwargs["data"] = data
        d = self.rest.request(method, url, **kwargs)  # type: ignore[attr-defined]  # StubTreq setattr()s it
        self.rest.flush()
        response = _fired(d, f"{method} {path}")
        body_d = response.content()
        self.rest.flush()
        body = _fired(body_d, f"body of {method} {path}")
        headers_out = {k.decode(): [v.decode() for v in vs] for k, vs in response.headers.getAllRawHeaders()}
        return TestResponse(response.code, headers_out, body)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """``request("GET", path)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        """``request("POST", path)``."""
        return self.request("POST", path, **kwargs)


def _fired(d: Deferred[Any], what: str) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError(
            f"{what} did not complete in memory (does the handler wait on the real reactor?)"
        )
    outcome = box[0]
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()
    return outcome
