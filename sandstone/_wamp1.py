"""WAMP v1 (WebSocket subprotocol ``wamp``: AutobahnJS 0.8, the clients of PHP Sandstone) next to v2.

A v1 connection carries an ordinary ``Session``: ``Wamp1Adapter`` turns the client's v1 frames into the v2
messages a session handles (``decode``) and the v2 messages the session sends into v1 frames (``framed``), so
the router, broker, dealer and topics never learn which version a session speaks. What maps to what:

- the session opens as the WebSocket opens (v1 has no HELLO): a HELLO offering ``cookie`` then ``anonymous``
  (``hello``), answered by the v1 ``WELCOME [0, sessionId, 1, serverIdent]`` with the session id as a string;
  ``accept`` refuses the handshake (403) of an app that would admit neither;
- ``PREFIX [1, prefix, uri]`` defines a CURIE, resolved in every URI of a later CALL, SUBSCRIBE, UNSUBSCRIBE
  and PUBLISH (``prefix:rest`` → ``uri + rest``; anything else is used as it is);
- ``CALL [2, callId, procUri, arg...]`` → CALL (positional arguments); RESULT → ``CALLRESULT [3, callId,
  result]``, a CALL's ERROR → ``CALLERROR [4, callId, errorUri, errorDesc(, errorDetails)]``;
- ``SUBSCRIBE [5, topicUri]`` / ``UNSUBSCRIBE [6, topicUri]`` → exact SUBSCRIBE / UNSUBSCRIBE (the adapter
  keeps topic URI ⇄ subscription id); v1 has no error reply for them: a refusal is logged at debug;
- ``PUBLISH [7, topicUri, event(, excludeMe | , exclude(, eligible))]`` → unacknowledged PUBLISH with
  ``args=[event]``; the publisher is excluded unless ``excludeMe`` is false or an ``exclude`` list is given
  (then exactly the listed sessions are), as autobahn-python 0.8 did;
- EVENT → ``EVENT [8, topicUri, event]``, ``event`` being the first positional argument (or the keyword
  arguments when there are none, else ``null``), serialized once per broadcast for every v1 subscriber.

A malformed v1 message raises ``Wamp1Violation`` (a ``DecodeError``): the session aborts as for a v2 protocol
violation, and the connection closes with ``close_code`` (1002; 1003 for a binary frame).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message, role
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger

from ._auth import ANONYMOUS, COOKIE
from ._autobahn_internals import router_data
from ._codec import DecodeError
from ._ids import MAX_ID
from ._json import FastJsonObjectSerializer
from ._login import login_from_headers

if TYPE_CHECKING:
    from ._router import Router

log = Logger()

SUBPROTOCOL = "wamp"
"""The WebSocket subprotocol of WAMP v1 (a client offering a ``wamp.2.*`` one too gets v2)."""

PROTOCOL_VERSION = 1

# v1 message type ids
WELCOME, PREFIX, CALL, CALLRESULT, CALLERROR, SUBSCRIBE, UNSUBSCRIBE, PUBLISH, EVENT = range(9)
_SERVER_TO_CLIENT = {WELCOME: "WELCOME", CALLRESULT: "CALLRESULT", CALLERROR: "CALLERROR", EVENT: "EVENT"}

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008

MAX_PREFIXES = 256
"""CURIE prefixes one v1 session may define (redefining one does not count): each costs memory."""

WAMPCRA_PROCEDURES = frozenset(("http://api.wamp.ws/procedure#authreq", "http://api.wamp.ws/procedure#auth"))
"""AutobahnJS 0.8's ``session.authreq`` / ``session.auth`` (WAMP-CRA v1), answered with ``WAMPCRA_ERROR``."""
WAMPCRA_ERROR = "sandstone.error.wampcra_v1_not_supported"
_WAMPCRA_TEXT = (
    "WAMP-CRA over WAMP v1 is not supported: log in over REST (app.login) and open the WebSocket with the "
    "session cookie, or use WAMP v2"
)


def _server_ident() -> str:
    try:
        return f"sandstone/{metadata.version('sandstone')}"
    except metadata.PackageNotFoundError:
        return "sandstone"


SERVER_IDENT = _server_ident()

# The roles of the HELLO standing for a v1 client: it subscribes, publishes and calls (it cannot register).
_CLIENT_ROLES = {
    "subscriber": role.RoleSubscriberFeatures(),
    "publisher": role.RolePublisherFeatures(),
    "caller": role.RoleCallerFeatures(),
}

_json = FastJsonObjectSerializer()  # writes what wamp.2.json clients get (bytes as NUL-prefixed base64)
_decode_json = json.JSONDecoder().decode  # v1 has no binary convention: strings stay strings


class Wamp1Violation(DecodeError):
    """A v1 frame breaks the protocol: the connection is closed with ``code`` (1002, 1003 for binary)."""

    def __init__(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


def accept(router: Router, headers: Mapping[str, str] | None) -> Wamp1Adapter:
    """Accept a WebSocket handshake asking for ``wamp`` (``headers``: the handshake's cookie and
    authorization headers, in lower case): a v1 session is anonymous when the app allows it, else it carries
    the REST login of the handshake (``app.login``'s cookie or bearer token). Without either it could not
    open: the handshake is refused with 403 (``stats["wamp1_refused"]``)."""
    auth = router.auth
    if not auth.anonymous and login_from_headers(auth.sessions, headers) is None:
        router.stats["wamp1_refused"] += 1
        log.info(
            "WAMP v1 handshake refused: the app allows no anonymous sessions and it carries no REST login"
        )
        raise ConnectionDeny(
            ConnectionDeny.FORBIDDEN,
            "WAMP v1 sessions must be anonymous or carry a REST login (cookie or bearer token)",
        )
    return Wamp1Adapter()


class Wamp1Adapter:
    """One v1 connection's translation state: its CURIE prefixes, its subscriptions (topic URI ⇄
    subscription id) and its calls in flight (request id → v1 call id). See the module's docstring."""

    def __init__(self) -> None:
        self._requests = itertools.count(1)  # the ids of the v2 requests made for the client
        self._prefixes: dict[str, str] = {}
        self._subscribing: dict[int, str] = {}  # SUBSCRIBE request id → topic URI, until answered
        self._subscriptions: dict[str, int] = {}  # topic URI → subscription id
        self._topics: dict[int, str] = {}  # subscription id → topic URI
        self._withdrawn: set[int] = set()  # SUBSCRIBE requests the client unsubscribed from before SUBSCRIBED
        self._stale: list[int] = []  # subscriptions to drop with the client's next frame (see _on_subscribed)
        self._calls: dict[int, str] = {}  # CALL request id → v1 call id
        # The call answered last: its answer may be replaced by an ERROR for the same request (a result too
        # large or unserializable for the client, see ``WampServerProtocol.send_message``).
        self._answered: tuple[int, str] = (0, "")
        self._refused_calls: set[int] = set()  # CALL request ids of WAMP-CRA procedures
        self.session_id = 0  # known once welcomed
        self.close_code = CLOSE_NORMAL
        """The WebSocket close code for the end of the session: 1002/1003 after a ``Wamp1Violation``."""

    # client → router

    def hello(self, realm: str) -> message.Hello:
        """The HELLO that opens the session of a v1 client on ``realm``: the REST login the handshake carried,
        else anonymous."""
        return message.Hello(realm, _CLIENT_ROLES, authmethods=[COOKIE, ANONYMOUS])

    def decode(self, payload: bytes, is_binary: bool) -> list[message.Message]:
        """The v2 messages for one v1 frame (none for PREFIX); raises ``Wamp1Violation`` saying why a frame
        is malformed (and sets ``close_code``)."""
        try:
            messages = self._decode(payload, is_binary)
        except Wamp1Violation as exc:
            self.close_code = exc.code
            raise
        if self._stale:
            messages[:0] = self._drop_stale()
        return messages

    def _decode(self, payload: bytes, is_binary: bool) -> list[message.Message]:
        if is_binary:
            raise Wamp1Violation(
                "binary frame on a WAMP v1 connection (v1 speaks JSON text)", CLOSE_UNSUPPORTED_DATA
            )
        try:
            raw = _decode_json(payload.decode("utf8"))
        except Exception as exc:  # also RecursionError for absurdly nested JSON
            raise Wamp1Violation(f"frame is not JSON: {type(exc).__name__}: {exc}") from None
        if type(raw) is not list or not raw:
            got = "an empty list" if raw == [] else type(raw).__name__
            raise Wamp1Violation(f"a WAMP v1 message must be a non-empty list, got {got}")
        kind = raw[0]
        handler = _INCOMING.get(kind) if type(kind) is int else None
        if handler is None:
            if type(kind) is int and kind in _SERVER_TO_CLIENT:
                raise Wamp1Violation(f"{_SERVER_TO_CLIENT[kind]} (type {kind}) is sent by servers only")
            raise Wamp1Violation(f"unknown WAMP v1 message type {kind!r}")
        return handler(self, raw)

    def _resolve(self, curie: str) -> str:
        prefix, colon, rest = curie.partition(":")
        if colon:
            uri = self._prefixes.get(prefix)
            if uri is not None:
                return uri + rest
        return curie

    def _request(self) -> int:
        request = next(self._requests)
        if request > MAX_ID:  # after 2^53 requests on one connection
            self._requests = itertools.count(1)
            request = next(self._requests)
        return request

    def _on_prefix(self, raw: list[Any]) -> list[message.Message]:
        if len(raw) != 3 or type(raw[1]) is not str or type(raw[2]) is not str:
            raise Wamp1Violation("PREFIX must be [1, prefix, uri] with two strings")
        prefix, uri = raw[1], raw[2]
        if prefix not in self._prefixes and len(self._prefixes) >= MAX_PREFIXES:
            raise Wamp1Violation(f"more than {MAX_PREFIXES} PREFIXes on one session", CLOSE_POLICY_VIOLATION)
        self._prefixes[prefix] = uri
        return []

    def _on_call(self, raw: list[Any]) -> list[message.Message]:
        if len(raw) < 3 or type(raw[1]) is not str or not raw[1]:
            raise Wamp1Violation(
                "CALL must be [2, callId, procUri, arg...] with a call id (a non-empty string)"
            )
        if type(raw[2]) is not str:
            raise Wamp1Violation("CALL must be [2, callId, procUri, arg...] with a procedure URI (a string)")
        procedure = self._resolve(raw[2])
        request = self._request()
        self._calls[request] = raw[1]
        if procedure in WAMPCRA_PROCEDURES:
            self._refused_calls.add(request)  # its ERROR (an invalid URI) is answered with WAMPCRA_ERROR
        return [message.Call(request, procedure, args=raw[3:])]

    def _on_subscribe(self, raw: list[Any]) -> list[message.Message]:
        topic = self._resolve(_topic_of(raw, "SUBSCRIBE", "[5, topicUri]"))
        request = self._request()
        self._subscribing[request] = topic
        return [message.Subscribe(request, topic)]

    def _on_unsubscribe(self, raw: list[Any]) -> list[message.Message]:
        topic = self._resolve(_topic_of(raw, "UNSUBSCRIBE", "[6, topicUri]"))
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            del self._topics[subscription]
            return [message.Unsubscribe(self._request(), subscription)]
        pending = [request for request, uri in self._subscribing.items() if uri == topic]
        if pending:
            self._withdrawn.update(pending)
        else:
            log.debug(
                "v1 session {session_id}: UNSUBSCRIBE from {topic}, which it is not subscribed to",
                session_id=self.session_id,
                topic=topic,
            )
        return []

    def _on_publish(self, raw: list[Any]) -> list[message.Message]:
        size = len(raw)
        if not 3 <= size <= 5 or type(raw[1]) is not str:
            raise Wamp1Violation(
                "PUBLISH must be [7, topicUri, event], [7, topicUri, event, excludeMe] or "
                "[7, topicUri, event, exclude(, eligible)]"
            )
        exclude_me = True
        exclude = eligible = None
        if size >= 4:
            option = raw[3]
            if type(option) is bool and size == 4:
                exclude_me = option
            elif type(option) is list:
                exclude_me = False  # the list says whom to exclude, the publisher only if listed
                exclude = _session_ids(option, "exclude")
            else:
                raise Wamp1Violation(
                    "PUBLISH's 4th element must be excludeMe (a boolean) or exclude (a list)"
                )
        if size == 5:
            if type(raw[4]) is not list:
                raise Wamp1Violation("PUBLISH's eligible (5th element) must be a list of session ids")
            eligible = _session_ids(raw[4], "eligible")
        topic = self._resolve(raw[1])
        return [
            message.Publish(
                self._request(),
                topic,
                args=[raw[2]],
                exclude_me=exclude_me,
                exclude=exclude,
                eligible=eligible,
            )
        ]

    def _drop_stale(self) -> list[message.Message]:
        """UNSUBSCRIBE the subscriptions the client withdrew before they were confirmed, unless it has
        subscribed to their topic again since."""
        stale, self._stale = self._stale, []
        return [message.Unsubscribe(self._request(), s) for s in stale if s not in self._topics]

    # router → client

    def framed(self, msg: message.Message, sent: Counter[type] | None = None) -> tuple[bytes, bytes] | None:
        """The v1 payload and its WebSocket text frame for a message the session sends, or ``None`` when v1
        has nothing for it. An EVENT's are built once, for every v1 subscriber of the broadcast.
        ``sent`` counts the other messages sent, by v2 type."""
        if type(msg) is message.Event:
            topic = self._topics.get(msg.subscription)
            if topic is None:
                return None  # unsubscribed by the client meanwhile
            data = router_data(msg)
            cached: tuple[bytes, bytes] | None = data.get(SUBPROTOCOL)
            if cached is None:
                payload = _json.serialize([EVENT, topic, _event_payload(msg)])
                cached = data[SUBPROTOCOL] = (payload, _text_frame(payload))
            return cached
        raw = self.encode(msg)
        if raw is None:
            return None
        if sent is not None:
            sent[type(msg)] += 1
        payload = _json.serialize(raw)
        return payload, _text_frame(payload)

    def encode(self, msg: message.Message) -> list[Any] | None:
        """The v1 message (a list) for a message other than EVENT, or ``None`` when v1 has none for it."""
        for kind in type(msg).__mro__:  # the session sends subclasses of autobahn's messages (WELCOME)
            handler = _OUTGOING.get(kind)
            if handler is not None:
                return handler(self, msg)
        return None

    def _on_welcome(self, msg: message.Welcome) -> list[Any]:
        self.session_id = msg.session
        return [WELCOME, str(msg.session), PROTOCOL_VERSION, SERVER_IDENT]

    def _on_subscribed(self, msg: message.Subscribed) -> None:
        topic = self._subscribing.pop(msg.request, None)
        if topic is None:
            return None
        if msg.request in self._withdrawn:
            # Unsubscribed by the client before this answer: dropped with its next frame (the router is
            # still busy subscribing, with the topic's on_subscribe to run).
            self._withdrawn.discard(msg.request)
            self._stale.append(msg.subscription)
            return None
        self._subscriptions[topic] = msg.subscription
        self._topics[msg.subscription] = topic
        return None

    def _answer(self, request: int) -> str | None:
        """The v1 call id of the CALL ``request`` being answered (``None`` if there is no such call)."""
        call_id = self._calls.pop(request, None)
        if call_id is not None:
            self._answered = (request, call_id)
            return call_id
        answered, call_id = self._answered
        return call_id if answered == request else None

    def _on_result(self, msg: message.Result) -> list[Any] | None:
        call_id = self._answer(msg.request)
        if call_id is None:
            return None
        self._refused_calls.discard(msg.request)
        return [CALLRESULT, call_id, _call_result(msg.args, msg.kwargs)]

    def _on_error(self, msg: message.Error) -> list[Any] | None:
        if msg.request_type == message.Call.MESSAGE_TYPE:
            call_id = self._answer(msg.request)
            if call_id is None:
                return None
            if msg.request in self._refused_calls:
                self._refused_calls.discard(msg.request)
                return [CALLERROR, call_id, WAMPCRA_ERROR, _WAMPCRA_TEXT]
            return [CALLERROR, call_id, msg.error, *_error_description(msg.error, msg.args, msg.kwargs)]
        if msg.request_type == message.Subscribe.MESSAGE_TYPE:
            topic = self._subscribing.pop(msg.request, None)
            self._withdrawn.discard(msg.request)
            log.debug(
                "v1 session {session_id}: SUBSCRIBE to {topic} refused with {error} {args} (v1 has no error "
                "reply: nothing is delivered)",
                session_id=self.session_id,
                topic=topic,
                error=msg.error,
                args=msg.args,
            )
        return None


def _topic_of(raw: list[Any], name: str, shape: str) -> str:
    if len(raw) != 2 or type(raw[1]) is not str:
        raise Wamp1Violation(f"{name} must be {shape} with a topic URI (a string)")
    topic: str = raw[1]
    return topic


def _session_ids(values: list[Any], what: str) -> list[int]:
    """The session ids of a v1 exclude/eligible list: v1 ids are strings (``str(id)`` of the WELCOME), but
    integers are taken too; a string that is no id names no session."""
    ids = []
    for value in values:
        kind = type(value)
        if kind is str:
            if not (value.isascii() and value.isdigit()):
                continue
            value = int(value)
        elif kind is not int:
            raise Wamp1Violation(f"PUBLISH's {what} must list session ids (strings), not {kind.__name__}")
        if 1 <= value <= MAX_ID:
            ids.append(value)
    return ids


def _event_payload(msg: message.Event) -> Any:
    if msg.args:
        return msg.args[0]
    return msg.kwargs or None


def _call_result(args: list[Any] | None, kwargs: dict[str, Any] | None) -> Any:
    """A v2 RESULT's arguments as the one result of v1: the single positional argument, the list of several,
    the keyword arguments when there are only those, both as ``{"args", "kwargs"}``, else ``null``."""
    if args and kwargs:
        return {"args": args, "kwargs": kwargs}
    if args:
        return args[0] if len(args) == 1 else args
    return kwargs or None


def _error_description(uri: str, args: list[Any] | None, kwargs: dict[str, Any] | None) -> list[Any]:
    """``errorDesc`` and, when there is more, ``errorDetails`` of a CALLERROR: the ERROR's first positional
    argument when it is a text (else the URI), then the other arguments as in ``_call_result``."""
    rest = list(args or [])
    description = rest.pop(0) if rest and type(rest[0]) is str else uri
    if not rest and not kwargs:
        return [description]
    return [description, _call_result(rest, kwargs)]


def _text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (FIN + opcode 1) carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + length.to_bytes(8, "big") + payload


_INCOMING: dict[int, Callable[[Wamp1Adapter, list[Any]], list[message.Message]]] = {
    PREFIX: Wamp1Adapter._on_prefix,
    CALL: Wamp1Adapter._on_call,
    SUBSCRIBE: Wamp1Adapter._on_subscribe,
    UNSUBSCRIBE: Wamp1Adapter._on_unsubscribe,
    PUBLISH: Wamp1Adapter._on_publish,
}

_OUTGOING: dict[type, Callable[[Wamp1Adapter, Any], list[Any] | None]] = {
    message.Welcome: Wamp1Adapter._on_welcome,
    message.Subscribed: Wamp1Adapter._on_subscribed,
    message.Result: Wamp1Adapter._on_result,
    message.Error: Wamp1Adapter._on_error,
}
