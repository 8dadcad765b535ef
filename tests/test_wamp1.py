"""Tests for L{sandstone._wamp1}: the translation between WAMP v1 frames and a session's v2 messages, and the
v1 connection on the WebSocket transport (subprotocol choice, WELCOME, close codes, limits), with fakes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from autobahn.wamp import message, role
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Identity, Limits, Sandstone, Topic
from sandstone._ids import MAX_ID
from sandstone._transport import WampServerFactory
from sandstone._wamp1 import (
    MAX_PREFIXES,
    SERVER_IDENT,
    WAMPCRA_ERROR,
    Wamp1Adapter,
    Wamp1Violation,
    accept,
)
from tests.support import websocket_closes, websocket_payloads
from tests.test_fairness import Reactor, Ticking
from tests.test_web_handoff import wamp_frame as client_frame


def v1(adapter: Wamp1Adapter, raw: Any) -> list[message.Message]:
    return adapter.decode(json.dumps(raw).encode(), False)


def subscribed(adapter: Wamp1Adapter, topic: str, subscription: int) -> None:
    """SUBSCRIBE ``topic`` and its SUBSCRIBED with ``subscription``."""
    (subscribe,) = v1(adapter, [5, topic])
    assert isinstance(subscribe, message.Subscribe)
    adapter.encode(message.Subscribed(subscribe.request, subscription))


def sent(adapter: Wamp1Adapter, msg: message.Message) -> Any:
    """What the client receives for ``msg`` (a parsed v1 message), or ``None``."""
    framed = adapter.framed(msg)
    return None if framed is None else json.loads(framed[0])


class DecodeTests(SynchronousTestCase):
    """v1 frames → the v2 messages a session handles."""

    def setUp(self) -> None:
        self.adapter = Wamp1Adapter()

    def test_hello_offers_cookie_then_anonymous(self) -> None:
        hello = self.adapter.hello("realm1")
        self.assertEqual((hello.realm, hello.authmethods), ("realm1", ["cookie", "anonymous"]))
        self.assertEqual(set(hello.roles), {"subscriber", "publisher", "caller"})

    def test_prefix_gives_no_message(self) -> None:
        self.assertEqual(v1(self.adapter, [1, "ex", "http://example.com/"]), [])

    def test_call(self) -> None:
        (call,) = v1(self.adapter, [2, "abc", "math.add", 1, {"b": 2}])
        self.assertIsInstance(call, message.Call)
        self.assertEqual((call.procedure, call.args, call.kwargs), ("math.add", [1, {"b": 2}], None))

    def test_request_ids_count_up(self) -> None:
        first, second = v1(self.adapter, [2, "a", "p"])[0], v1(self.adapter, [5, "t"])[0]
        self.assertEqual((first.request, second.request), (1, 2))  # type: ignore[attr-defined]

    def test_subscribe_is_exact(self) -> None:
        (subscribe,) = v1(self.adapter, [5, "chat/general"])
        self.assertIsInstance(subscribe, message.Subscribe)
        self.assertEqual((subscribe.topic, subscribe.match), ("chat/general", "exact"))

    def test_unsubscribe_names_the_subscription_of_the_topic(self) -> None:
        subscribed(self.adapter, "news", 77)
        (unsubscribe,) = v1(self.adapter, [6, "news"])
        self.assertIsInstance(unsubscribe, message.Unsubscribe)
        self.assertEqual(unsubscribe.subscription, 77)

    def test_unsubscribe_from_a_topic_not_subscribed_is_nothing(self) -> None:
        self.assertEqual(v1(self.adapter, [6, "news"]), [])

    def test_publish_excludes_the_publisher_by_default(self) -> None:
        (publish,) = v1(self.adapter, [7, "news", {"a": 1}])
        self.assertIsInstance(publish, message.Publish)
        self.assertEqual((publish.topic, publish.args, publish.kwargs), ("news", [{"a": 1}], None))
        self.assertEqual((publish.exclude_me, publish.exclude, publish.eligible), (True, None, None))
        self.assertFalse(publish.acknowledge)

    def test_publish_exclude_me_false_and_true(self) -> None:
        self.assertFalse(v1(self.adapter, [7, "news", 1, False])[0].exclude_me)  # type: ignore[attr-defined]
        self.assertTrue(v1(self.adapter, [7, "news", 1, True])[0].exclude_me)  # type: ignore[attr-defined]

    def test_publish_exclude_list_replaces_exclude_me(self) -> None:
        (publish,) = v1(self.adapter, [7, "news", 1, ["12", 34]])
        self.assertEqual((publish.exclude_me, publish.exclude, publish.eligible), (False, [12, 34], None))

    def test_publish_exclude_and_eligible(self) -> None:
        (publish,) = v1(self.adapter, [7, "news", None, [], ["5"]])
        self.assertEqual((publish.args, publish.exclude, publish.eligible), ([None], [], [5]))

    def test_strings_that_are_no_session_id_name_nobody(self) -> None:
        ids = ["x", "", "0", "-3", "1.5", "٣", str(MAX_ID + 1), 0, MAX_ID + 1, "7"]
        (publish,) = v1(self.adapter, [7, "news", 1, ids])
        self.assertEqual(publish.exclude, [7])

    def test_prefix_resolves_every_uri(self) -> None:
        v1(self.adapter, [1, "c", "chat/"])
        self.assertEqual(v1(self.adapter, [2, "x", "c:hello"])[0].procedure, "chat/hello")  # type: ignore[attr-defined]
        (subscribe,) = v1(self.adapter, [5, "c:general"])
        self.assertEqual(subscribe.topic, "chat/general")
        self.assertEqual(v1(self.adapter, [7, "c:general", 1])[0].topic, "chat/general")  # type: ignore[attr-defined]
        self.adapter.encode(message.Subscribed(subscribe.request, 9))
        self.assertEqual(v1(self.adapter, [6, "c:general"])[0].subscription, 9)  # type: ignore[attr-defined]

    def test_what_is_no_known_curie_is_used_as_it_is(self) -> None:
        v1(self.adapter, [1, "c", "chat/"])
        for uri in ("http://example.com/a", "x:y", "plain", "c"):
            self.assertEqual(v1(self.adapter, [5, uri])[0].topic, uri)  # type: ignore[attr-defined]

    def test_a_prefix_is_redefined(self) -> None:
        v1(self.adapter, [1, "c", "old."])
        v1(self.adapter, [1, "c", "new."])
        self.assertEqual(v1(self.adapter, [5, "c:t"])[0].topic, "new.t")  # type: ignore[attr-defined]

    def test_wampcra_procedures_are_answered_with_a_clear_error(self) -> None:
        (call,) = v1(self.adapter, [2, "auth1", "http://api.wamp.ws/procedure#authreq", "alice"])
        error = message.Error(message.Call.MESSAGE_TYPE, call.request, "wamp.error.invalid_uri")  # type: ignore[attr-defined]
        answer = sent(self.adapter, error)
        self.assertEqual(answer[:3], [4, "auth1", WAMPCRA_ERROR])
        self.assertIn("not supported", answer[3])


class ViolationTests(SynchronousTestCase):
    """Malformed v1 frames raise ``Wamp1Violation`` with the close code."""

    def assertViolation(self, payload: bytes, reason: str, code: int = 1002, binary: bool = False) -> None:
        adapter = Wamp1Adapter()
        with self.assertRaises(Wamp1Violation) as caught:
            adapter.decode(payload, binary)
        self.assertIn(reason, str(caught.exception))
        self.assertEqual((caught.exception.code, adapter.close_code), (code, code))

    def test_malformed_messages(self) -> None:
        cases: list[tuple[Any, str]] = [
            ({"a": 1}, "non-empty list, got dict"),
            ([], "got an empty list"),
            ("5", "got str"),
            ([99], "unknown WAMP v1 message type 99"),
            ([True, "t"], "unknown WAMP v1 message type True"),
            ([None], "unknown WAMP v1 message type None"),
            ([0, "s", 1, "x"], "WELCOME (type 0) is sent by servers only"),
            ([3, "c", 1], "CALLRESULT (type 3) is sent by servers only"),
            ([4, "c", "u", "d"], "CALLERROR (type 4) is sent by servers only"),
            ([1, "p"], "PREFIX must be [1, prefix, uri]"),
            ([1, "p", 5], "PREFIX must be"),
            ([2], "call id"),
            ([2, "c"], "call id"),
            ([2, 1, "p"], "call id"),
            ([2, "", "p"], "call id"),
            ([2, "c", ["p"]], "procedure URI"),
            ([5], "SUBSCRIBE must be [5, topicUri]"),
            ([5, 1], "SUBSCRIBE must be"),
            ([5, "t", "extra"], "SUBSCRIBE must be"),
            ([6, None], "UNSUBSCRIBE must be [6, topicUri]"),
            ([7, "t"], "PUBLISH must be"),
            ([7, 5, 1], "PUBLISH must be"),
            ([7, "t", 1, True, []], "4th element"),
            ([7, "t", 1, "me"], "4th element"),
            ([7, "t", 1, [True]], "must list session ids"),
            ([7, "t", 1, [1.5]], "must list session ids"),
            ([7, "t", 1, [], {}], "eligible"),
            ([7, "t", 1, [], [], []], "PUBLISH must be"),
        ]
        for raw, reason in cases:
            self.assertViolation(json.dumps(raw).encode(), reason)

    def test_not_json(self) -> None:
        self.assertViolation(b"[5, 'x']", "frame is not JSON")
        self.assertViolation(b"\xff", "frame is not JSON")
        self.assertViolation(b"[" * 100_000, "frame is not JSON")

    def test_binary_frame_is_1003(self) -> None:
        self.assertViolation(b'[5, "t"]', "binary frame", 1003, binary=True)

    def test_too_many_prefixes_is_a_policy_violation(self) -> None:
        adapter = Wamp1Adapter()
        for n in range(MAX_PREFIXES):
            v1(adapter, [1, f"p{n}", "u"])
        v1(adapter, [1, "p0", "again"])  # redefining one is fine
        with self.assertRaises(Wamp1Violation) as caught:
            v1(adapter, [1, "one-more", "u"])
        self.assertEqual(caught.exception.code, 1008)


class EncodeTests(SynchronousTestCase):
    """The v2 messages a session sends → what a v1 client receives."""

    def setUp(self) -> None:
        self.adapter = Wamp1Adapter()

    def call(self, call_id: str = "c1") -> int:
        (call,) = v1(self.adapter, [2, call_id, "p"])
        request: int = call.request  # type: ignore[attr-defined]
        return request

    def test_welcome_has_the_session_id_as_a_string(self) -> None:
        welcome = message.Welcome(123, {"broker": role.RoleBrokerFeatures()})
        self.assertEqual(sent(self.adapter, welcome), [0, "123", 1, SERVER_IDENT])

    def test_the_routers_own_welcome_class_is_translated(self) -> None:
        app = Sandstone(anonymous=True)
        client_messages: list[Any] = []
        transport = SimpleNamespace(
            send_message=lambda msg: client_messages.append(sent(self.adapter, msg)),
            close_transport=lambda reason: None,
        )
        session = app.router.attach(transport)
        session.on_message(self.adapter.hello("realm1"))
        self.assertEqual(client_messages, [[0, str(session.id), 1, SERVER_IDENT]])

    def test_event_of_a_subscribed_topic(self) -> None:
        subscribed(self.adapter, "news", 5)
        self.assertEqual(sent(self.adapter, message.Event(5, 1, args=[{"a": 1}, 2])), [8, "news", {"a": 1}])
        self.assertEqual(sent(self.adapter, message.Event(5, 2, kwargs={"k": "v"})), [8, "news", {"k": "v"}])
        self.assertEqual(sent(self.adapter, message.Event(5, 3)), [8, "news", None])
        self.assertEqual(
            sent(self.adapter, message.Event(5, 4, args=[None], kwargs={"k": 1})), [8, "news", None]
        )

    def test_event_of_an_unknown_subscription_is_dropped(self) -> None:
        self.assertIsNone(self.adapter.framed(message.Event(5, 1, args=[1])))

    def test_one_event_is_serialized_once_for_every_v1_subscriber(self) -> None:
        other = Wamp1Adapter()
        subscribed(self.adapter, "news", 5)
        subscribed(other, "news", 5)
        event = message.Event(5, 1, args=["x" * 300])
        first, second = self.adapter.framed(event), other.framed(event)
        assert first is not None and second is not None
        self.assertIs(first, second)
        self.assertEqual(first[1], b"\x81\x7e" + len(first[0]).to_bytes(2, "big") + first[0])

    def test_frame_lengths(self) -> None:
        subscribed(self.adapter, "t", 1)
        for size in (10, 200, 70_000):
            framed = self.adapter.framed(message.Event(1, size, args=["y" * size]))
            assert framed is not None
            payload, frame = framed
            self.assertTrue(frame.endswith(payload))
            header = frame[: len(frame) - len(payload)]
            self.assertEqual(header[0], 0x81)
            expected = {10: 2, 200: 4, 70_000: 10}[size]
            self.assertEqual(len(header), expected)

    def test_result_shapes(self) -> None:
        cases: list[tuple[Any, Any, Any]] = [
            ([5], None, 5),
            ([1, 2], None, [1, 2]),
            (None, {"k": 1}, {"k": 1}),
            (None, None, None),
            ([[1]], None, [1]),
            ([1], {"k": 2}, {"args": [1], "kwargs": {"k": 2}}),
        ]
        for n, (args, kwargs, result) in enumerate(cases):
            request = self.call(f"c{n}")
            answer = sent(self.adapter, message.Result(request, args=args, kwargs=kwargs))
            self.assertEqual(answer, [3, f"c{n}", result])

    def test_call_errors(self) -> None:
        cases: list[tuple[Any, Any, list[Any]]] = [
            (None, None, ["wamp.error.x"]),
            (["no such thing"], None, ["no such thing"]),
            (["text", 1], None, ["text", 1]),
            (["text", 1, 2], None, ["text", [1, 2]]),
            (["text"], {"k": 1}, ["text", {"k": 1}]),
            ([42], None, ["wamp.error.x", 42]),
            (None, {"k": 1}, ["wamp.error.x", {"k": 1}]),
        ]
        for n, (args, kwargs, rest) in enumerate(cases):
            request = self.call(f"c{n}")
            error = message.Error(
                message.Call.MESSAGE_TYPE, request, "wamp.error.x", args=args, kwargs=kwargs
            )
            self.assertEqual(sent(self.adapter, error), [4, f"c{n}", "wamp.error.x", *rest])

    def test_answers_to_unknown_calls_are_dropped(self) -> None:
        self.assertIsNone(self.adapter.framed(message.Result(99, args=[1])))
        self.assertIsNone(self.adapter.framed(message.Error(message.Call.MESSAGE_TYPE, 99, "wamp.error.x")))

    def test_a_result_replaced_by_an_error_answers_the_same_call(self) -> None:
        request = self.call("big")
        self.assertEqual(sent(self.adapter, message.Result(request, args=[1]))[0], 3)
        error = message.Error(
            message.Call.MESSAGE_TYPE, request, "sandstone.error.payload_too_large", ["big"]
        )
        self.assertEqual(sent(self.adapter, error), [4, "big", "sandstone.error.payload_too_large", "big"])
        self.assertIsNone(self.adapter.framed(message.Result(request + 1, args=[1])))

    def test_a_refused_subscribe_sends_nothing(self) -> None:
        (subscribe,) = v1(self.adapter, [5, "nope"])
        error = message.Error(
            message.Subscribe.MESSAGE_TYPE, subscribe.request, "sandstone.error.no_such_topic"
        )  # type: ignore[attr-defined]
        self.assertIsNone(self.adapter.framed(error))
        self.assertEqual(v1(self.adapter, [6, "nope"]), [])  # not subscribed, not pending

    def test_what_v1_has_no_message_for(self) -> None:
        for msg in (
            message.Subscribed(1, 2),
            message.Unsubscribed(1),
            message.Published(1, 2),
            message.Goodbye(),
            message.Abort("wamp.error.protocol_violation"),
            message.Error(message.Unsubscribe.MESSAGE_TYPE, 1, "wamp.error.no_such_subscription"),
        ):
            self.assertIsNone(self.adapter.framed(msg), msg)

    def test_sent_counts_the_messages_other_than_events(self) -> None:
        from collections import Counter

        counts: Counter[type] = Counter()
        request = self.call()
        self.adapter.framed(message.Result(request, args=[1]), counts)
        self.adapter.framed(message.Published(1, 2), counts)
        self.assertEqual(counts, Counter({message.Result: 1}))


class PendingSubscriptionTests(SynchronousTestCase):
    """UNSUBSCRIBE before the router confirmed the SUBSCRIBE (an authorizer answering later)."""

    def setUp(self) -> None:
        self.adapter = Wamp1Adapter()
        (self.subscribe,) = v1(self.adapter, [5, "news"])

    def test_events_stop_at_once_and_the_subscription_is_dropped_with_the_next_frame(self) -> None:
        self.assertEqual(v1(self.adapter, [6, "news"]), [])
        self.adapter.encode(message.Subscribed(self.subscribe.request, 8))  # type: ignore[attr-defined]
        self.assertIsNone(self.adapter.framed(message.Event(8, 1, args=[1])))
        messages = v1(self.adapter, [1, "p", "u"])
        self.assertEqual([(type(m), m.subscription) for m in messages], [(message.Unsubscribe, 8)])  # type: ignore[attr-defined]
        self.assertEqual(v1(self.adapter, [1, "p", "u"]), [])

    def test_subscribing_again_meanwhile_keeps_the_subscription(self) -> None:
        v1(self.adapter, [6, "news"])
        (again,) = v1(self.adapter, [5, "news"])
        self.adapter.encode(message.Subscribed(self.subscribe.request, 8))  # type: ignore[attr-defined]
        self.adapter.encode(message.Subscribed(again.request, 8))  # type: ignore[attr-defined]
        self.assertEqual(v1(self.adapter, [1, "p", "u"]), [])
        self.assertEqual(sent(self.adapter, message.Event(8, 1, args=[1])), [8, "news", 1])


class AcceptTests(SynchronousTestCase):
    def test_anonymous_app_accepts(self) -> None:
        self.assertIsInstance(accept(Sandstone(anonymous=True).router, {}), Wamp1Adapter)

    def test_without_anonymous_a_live_login_is_needed(self) -> None:
        app = Sandstone()
        with self.assertRaises(ConnectionDeny) as caught:
            accept(app.router, {})
        self.assertEqual(caught.exception.code, 403)
        with self.assertRaises(ConnectionDeny):
            accept(app.router, {"cookie": "sandstone_session=forged"})
        token = app.session_store.create(Identity("alice", "member"))
        self.assertIsInstance(accept(app.router, {"cookie": f"sandstone_session={token}"}), Wamp1Adapter)
        self.assertIsInstance(accept(app.router, {"authorization": f"Bearer {token}"}), Wamp1Adapter)
        self.assertEqual(app.router.stats["wamp1_refused"], 2)


def upgrade_request(protocols: str = "wamp", extra: str = "") -> bytes:
    return (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {protocols}\r\n{extra}\r\n"
    ).encode()


class ConnectionTests(SynchronousTestCase):
    """A v1 WebSocket connection on ``WampServerProtocol``, over a StringTransport."""

    def setUp(self) -> None:
        self.clock = Reactor()
        self.limits = Limits(open_handshake_timeout=0, auto_ping_interval=0)
        self.app = Sandstone(anonymous=True, limits=self.limits)

        @self.app.topic("news")
        class News(Topic):
            pass

        self.factory = WampServerFactory(self.app.router, limits=self.limits, clock=self.clock)

    def connect(self, protocols: str = "wamp", extra: str = "") -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade_request(protocols, extra))
        return protocol, transport

    def received(self, transport: StringTransport) -> list[Any]:
        self.clock.advance(0)
        payloads = [json.loads(p) for p in websocket_payloads(transport.value().split(b"\r\n\r\n", 1)[-1])]
        transport.clear()
        return payloads

    def test_the_handshake_chooses_wamp_and_welcome_follows(self) -> None:
        protocol, transport = self.connect()
        self.assertIn(b"Sec-WebSocket-Protocol: wamp\r\n", transport.value())
        (welcome,) = self.received(transport)
        self.assertEqual(welcome[0], 0)
        self.assertIn(int(welcome[1]), self.app.router.sessions)
        self.assertEqual(protocol.subprotocol, "wamp")
        self.assertIsNone(protocol._hello_timer)

    def test_v2_wins(self) -> None:
        for offered in ("wamp, wamp.2.json", "wamp.2.json, wamp"):
            _protocol, transport = self.connect(offered)
            self.assertIn(b"Sec-WebSocket-Protocol: wamp.2.json\r\n", transport.value())
            self.assertEqual(self.app.router.sessions, {})

    def test_refused_with_403_without_anonymous_or_login(self) -> None:
        self.app.router.anonymous = False
        _protocol, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403"), transport.value())

    def test_the_handshakes_login_opens_the_session(self) -> None:
        self.app.router.anonymous = False
        token = self.app.session_store.create(Identity("alice", "member"))
        _protocol, transport = self.connect(extra=f"Cookie: sandstone_session={token}\r\n")
        (welcome,) = self.received(transport)
        session = self.app.router.sessions[int(welcome[1])]
        self.assertEqual(
            (session.authid, session.authrole, session.authmethod), ("alice", "member", "cookie")
        )

    def test_a_malformed_message_closes_with_1002_and_leaves_the_router(self) -> None:
        protocol, transport = self.connect()
        self.received(transport)
        protocol.dataReceived(client_frame([5, "news"]))
        self.assertEqual(len(self.app.topic_instance("news").subscribers), 1)
        protocol.dataReceived(client_frame([5, 17]))
        closes = websocket_closes(transport.value())
        self.assertEqual(closes, [(1002, b"SUBSCRIBE must be [5, topicUri] with a topic URI (a string)")])
        self.assertEqual(self.app.router.sessions, {})
        self.assertIsNone(self.app.topic_instance("news"))

    def test_a_binary_frame_closes_with_1003(self) -> None:
        protocol, transport = self.connect()
        self.received(transport)
        payload = b'[5, "news"]'
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        protocol.dataReceived(bytes((0x82, 0x80 | len(payload))) + mask + masked)
        (close,) = websocket_closes(transport.value())
        self.assertEqual(close[0], 1003)
        self.assertEqual(self.app.router.sessions, {})

    def test_shutdown_with_goodbye_closes_v1_at_once_with_1001(self) -> None:
        _protocol, transport = self.connect()
        self.received(transport)
        self.factory.shutdown(grace=5.0, goodbye=True)
        self.assertEqual(websocket_payloads(transport.value()), [])  # no GOODBYE: v1 has none
        self.assertEqual([code for code, _ in websocket_closes(transport.value())], [1001])
        self.assertEqual(self.app.router.sessions, {})

    def test_the_session_closed_by_the_router_closes_with_1000(self) -> None:
        _protocol, transport = self.connect()
        (welcome,) = self.received(transport)
        self.app.router.sessions[int(welcome[1])].close("sandstone.close.logged_out", "logged out")
        self.assertEqual(websocket_payloads(transport.value()), [])
        self.assertEqual(websocket_closes(transport.value()), [(1000, b"logged out")])

    def test_a_read_beyond_its_time_slice_waits_in_order(self) -> None:
        self.factory.monotonic = Ticking(0.001)
        self.factory.limits = Limits(open_handshake_timeout=0, auto_ping_interval=0, message_time_slice=0.005)
        self.app.procedure("echo")(lambda n: n)
        protocol, transport = self.connect()
        self.received(transport)
        for other in (object(), object()):  # two other connections sent in turn: connections are sliced
            self.factory.sender_changed(other)
        protocol.dataReceived(b"".join(client_frame([2, f"c{n}", "echo", n]) for n in range(20)))
        self.assertIsNotNone(protocol._inbox)
        while protocol._inbox is not None:
            self.clock.turn()
        self.assertEqual([m[2] for m in self.received(transport)], list(range(20)))
