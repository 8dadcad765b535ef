"""Tests for L{sandstone._payload} (the check) and for where the router applies it: a client's PUBLISH,
CALL, YIELD and ERROR, the app's procedures and broadcasts, and the transport's last line of defence
(in memory: TestClient sessions on several serializers, and WampServerProtocol on StringTransports)."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import json
import time
from types import SimpleNamespace
from typing import Any

import cbor2
import msgpack
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone, Topic
from sandstone._autobahn_internals import object_serializer
from sandstone._codec import decode
from sandstone._limits import Limits
from sandstone._payload import MAX_DEPTH, MAX_VALUES, payload_problem, require_carried, value_problem
from sandstone._publication import Publication
from sandstone._transport import WampServerFactory, WampServerProtocol, default_serializers
from sandstone.testing import TestClient, TestSession
from tests.support import websocket_payloads

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
PUBLISH = message.Publish.MESSAGE_TYPE
CALL = message.Call.MESSAGE_TYPE
REGISTER = message.Register.MESSAGE_TYPE
YIELD = message.Yield.MESSAGE_TYPE
ERROR = message.Error.MESSAGE_TYPE
INVOCATION = message.Invocation.MESSAGE_TYPE
INVALID_ARGUMENT = "wamp.error.invalid_argument"


class Color(enum.IntEnum):
    RED = 1


class Shape(enum.StrEnum):
    ROUND = "round"


Point = collections.namedtuple("Point", "x y")


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# Values every serializer carries alike, and values refused with the reason's telling words.
CARRIED = [
    None,
    True,
    False,
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    1e308,
    "",
    "plain",
    "é ∑ 😀",
    "a\x00b",  # NUL only matters first
    b"",
    b"\x00\xff binary",
    [1, "two", [3.0]],
    (1, 2),
    {"user": "alice", "tags": ["a", "b"], "nested": {"ok": True}},
    {"\x00key": 1},  # JSON decoders turn NUL-led strings into bytes only as values, never as keys
    {Shape.ROUND: 1},
    Color.RED,
    Shape.ROUND,
    Point(1, 2),
    collections.OrderedDict(a=1),
]

REFUSED = [
    (NOW, "of type datetime"),
    (datetime.date(2026, 5, 1), "of type date"),
    (cbor2.undefined, "of type UndefinedType"),
    (cbor2.CBORTag(4000, "x"), "of type CBORTag"),
    (cbor2.CBORSimpleValue(99), "of type CBORSimpleValue"),
    ({1, 2}, "of type set"),
    (frozenset({1}), "of type frozenset"),
    (decimal.Decimal("1.5"), "of type Decimal"),
    (msgpack.Timestamp(1, 2), "of type Timestamp"),
    (msgpack.ExtType(5, b"ab"), "of type ExtType"),
    (bytearray(b"x"), "of type bytearray"),
    (object(), "of type object"),
    (2**64, "integer of 65 bits"),
    (-(2**63) - 1, "integer of 64 bits"),
    (2**70, "integer of 71 bits"),
    (float("inf"), "is inf"),
    (float("-inf"), "is -inf"),
    (float("nan"), "is nan"),
    ("\x00aGk=", "starting with NUL"),
    ("ok \ud800", "unpaired surrogate"),
    ({1: "a"}, "key of type int"),
    ({b"k": "a"}, "key of type bytes"),
    ({(1, 2): "a"}, "key of type tuple"),
    ({None: "a"}, "key of type NoneType"),
    ({"\udc00": "a"}, "key with an unpaired surrogate"),
]


def round_trips(value: Any) -> list[str]:
    """The serializers (by name) that fail to carry ``value`` as one EVENT argument, or change it, or
    write what a standard JSON parser (NaN and Infinity are not JSON) refuses."""
    failing = []
    for name, serializer in default_serializers().items():
        if "batched" in name:
            continue
        objects = object_serializer(serializer)
        try:
            data = objects.serialize([36, 1, 2, {}, [value]])
            if name == "wamp.2.json":
                json.loads(data, parse_constant=_not_json)
            back = objects.unserialize(data)[0][4][0]
        except Exception:
            failing.append(name)
            continue
        if back != _plain(value) or type(back) is not type(_plain(value)):
            failing.append(name)
    return failing


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _plain(value: Any) -> Any:
    """What any serializer gives back for a carried value: lists for tuples, base types for subclasses."""
    if isinstance(value, bool) or value is None:
        return value
    for base in (int, float, str, bytes):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class PayloadProblemTests(SynchronousTestCase):
    """``payload_problem``: what every serializer carries alike, and why anything else is refused."""

    def test_carried_values_pass_at_every_position(self) -> None:
        for value in CARRIED:
            for args, kwargs in (([value], None), (None, {"k": value}), ([{"a": [value]}], {"b": (value,)})):
                self.assertIsNone(payload_problem(args, kwargs), (args, kwargs))

    def test_no_payload_passes(self) -> None:
        self.assertIsNone(payload_problem(None, None))
        self.assertIsNone(payload_problem([], {}))

    def test_carried_values_round_trip_identically_on_every_serializer(self) -> None:
        for value in CARRIED:
            self.assertEqual(round_trips(value), [], value)

    def test_each_refused_value_is_named_with_its_reason(self) -> None:
        for value, words in REFUSED:
            problem = payload_problem([value], None)
            self.assertIsNotNone(problem, value)
            assert problem is not None
            self.assertIn(words, problem)
            self.assertTrue(problem.startswith("args[0]"), problem)

    def test_each_refused_value_breaks_or_changes_on_some_serializer(self) -> None:
        # Why refusing is right: passed on, each one fails or arrives different for some peer.
        for value, _ in REFUSED:
            self.assertNotEqual(round_trips(value), [], value)

    def test_the_path_names_nested_positions(self) -> None:
        self.assertEqual(
            payload_problem([1, {"when": NOW}], None),
            "args[1]['when'] is of type datetime, which not every WAMP serializer can carry",
        )
        self.assertEqual(
            payload_problem(["ok"], {"a": [1, {"b": {1, 2}}]}),
            "kwargs['a'][1]['b'] is of type set, which not every WAMP serializer can carry",
        )
        self.assertEqual(
            payload_problem([[{"x": 1}, {2: "y"}]], None),
            "args[0][1] has a key of type int (2), but JSON object keys must be strings",
        )

    def test_huge_integers_are_described_without_their_digits(self) -> None:
        problem = payload_problem([2**100_000], None)  # str() of it would raise ValueError
        self.assertEqual(
            problem,
            "args[0] is an integer of 100001 bits, outside the range MessagePack can carry "
            "(-2**63 to 2**64-1)",
        )

    def test_nesting_up_to_the_limit_passes(self) -> None:
        self.assertIsNone(payload_problem(nested(MAX_DEPTH), None))  # args itself is the first level

    def test_nesting_beyond_the_limit_is_refused(self) -> None:
        problem = payload_problem(nested(MAX_DEPTH + 1), None)
        self.assertEqual(
            problem, f"args nests containers more than {MAX_DEPTH} levels deep (or contains itself)"
        )

    def test_a_list_containing_itself_is_refused(self) -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        loop.append(loop)  # fan-out 2: a breadth-first walk would never end
        self.assertIn("contains itself", payload_problem(loop, None) or "")

    def test_nesting_deep_enough_to_break_a_cbor_peer_is_refused(self) -> None:
        # cbor2 decodes at most 400 levels (autobahn-python's CBOR peers); a JSON client can send more.
        value = nested(450)
        with self.assertRaises(cbor2.CBORDecodeError):
            cbor2.loads(cbor2.dumps(value))
        self.assertIsNotNone(payload_problem([value], None))

    def test_shared_cbor_values_cannot_make_the_check_run_for_ever(self) -> None:
        # CBOR value sharing (tags 28/29) decodes to a graph: 2**60 values reached through 60 lists.
        shared: Any = [1]
        for _ in range(60):
            shared = [shared, shared]
        started = time.monotonic()
        self.assertIn(f"more than {MAX_VALUES} values", payload_problem([shared], None) or "")
        self.assertLess(time.monotonic() - started, 5.0)

    def test_value_problem_names_the_value_itself(self) -> None:
        self.assertEqual(
            value_problem({"when": NOW}),
            "payload['when'] is of type datetime, which not every WAMP serializer can carry",
        )
        self.assertEqual(
            value_problem(NOW, "result"),
            "result is of type datetime, which not every WAMP serializer can carry",
        )
        self.assertIsNone(value_problem({"ok": [1, 2.5, "x", b"y"]}))

    def test_require_carried_raises_type_error(self) -> None:
        with self.assertRaises(TypeError) as caught:
            require_carried({"when": NOW}, "broadcast on", "news")
        self.assertEqual(
            str(caught.exception),
            "cannot broadcast on 'news': payload['when'] is of type datetime, which not every WAMP "
            "serializer can carry",
        )


class DecodedValuesTests(SynchronousTestCase):
    """What autobahn's decoders, as sandstone uses them, actually produce from hostile frames."""

    def parsed(self, serializer: str, raw: Any) -> message.Publish:
        data = cbor2.dumps(raw) if serializer == "wamp.2.cbor" else msgpack.packb(raw)
        [msg] = decode(default_serializers()[serializer], data, True)
        assert isinstance(msg, message.Publish)
        return msg

    def test_cbor_frames_decode_to_values_json_cannot_carry_and_are_refused(self) -> None:
        for value in (NOW, cbor2.undefined, cbor2.CBORTag(4000, 1), {1, 2}, 2**70, {1: "a"}, {(1, 2): 3}):
            msg = self.parsed("wamp.2.cbor", [PUBLISH, 1, {"acknowledge": True}, "x.y", [value]])
            self.assertIsNotNone(payload_problem(msg.args, msg.kwargs), value)

    def test_msgpack_frames_decode_to_lists_dicts_and_ext_types(self) -> None:
        msg = self.parsed("wamp.2.msgpack", [PUBLISH, 1, {}, "x.y", [(1, 2), {"a": b"b"}]])
        self.assertEqual(msg.args, [[1, 2], {"a": b"b"}])  # arrays come as lists
        self.assertIsNone(payload_problem(msg.args, msg.kwargs))
        msg = self.parsed("wamp.2.msgpack", [PUBLISH, 1, {}, "x.y", [msgpack.Timestamp(1, 2)]])
        self.assertIn("of type Timestamp", payload_problem(msg.args, msg.kwargs) or "")

    def test_json_frames_decode_to_big_integers_infinities_and_surrogates(self) -> None:
        serializer = default_serializers()["wamp.2.json"]
        for text, words in (
            ("123456789012345678901234567890", "integer of 97 bits"),
            ("1e400", "is inf"),
            ("NaN", "is nan"),
            ('"\\ud800"', "unpaired surrogate"),
        ):
            frame = f'[16, 1, {{}}, "x.y", [{text}]]'.encode()
            [msg] = decode(serializer, frame, False)
            self.assertIn(words, payload_problem(msg.args, msg.kwargs) or "", text)


class LogCapture:
    """Every log event while a test runs."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def at(self, level: LogLevel) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_level") == level]

    @property
    def critical(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_level") == LogLevel.critical or "log_failure" in e]


class ClientPayloadTests(SynchronousTestCase):
    """Payloads from clients are checked where they enter the router (in memory, real serializers)."""

    def setUp(self) -> None:
        self.logs = LogCapture(self)
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.subscribers = [TestClient(self.app, s).connect() for s in ("cbor", "json", "msgpack", "cbor")]
        self.subscriptions = [s.subscribe("x.y") for s in self.subscribers]

    def connect(self, serializer: str, **details: Any) -> TestSession:
        return TestClient(self.app, serializer).connect(**details)

    def payloads(self) -> list[list[Any]]:
        return [subscription.payloads for subscription in self.subscriptions]

    def tearDown(self) -> None:
        self.assertEqual(self.logs.critical, [])

    def test_acknowledged_publish_of_a_datetime_gets_invalid_argument(self) -> None:
        publisher = self.connect("cbor")
        with self.assertRaises(ApplicationError) as caught:
            publisher.publish("x.y", NOW, acknowledge=True)
        self.assertEqual(caught.exception.error, INVALID_ARGUMENT)
        self.assertIn("args[0] is of type datetime", caught.exception.args[0])
        self.assertEqual(self.payloads(), [[], [], [], []])

    def test_every_subscriber_gets_the_next_valid_event(self) -> None:
        publisher = self.connect("cbor")
        self.assertRaises(ApplicationError, publisher.publish, "x.y", NOW, acknowledge=True)
        publisher.publish("x.y", "fine", acknowledge=True)
        self.assertEqual(self.payloads(), [["fine"]] * 4)

    def test_unacknowledged_publish_is_dropped_silently_and_counted(self) -> None:
        publisher = self.connect("cbor")
        publisher.publish("x.y", {"when": NOW})
        self.assertIsInstance(publisher.messages[-1], message.Welcome)  # no answer at all
        self.assertEqual(self.app.router.stats["invalid_payloads"], 1)
        [logged] = [e for e in self.logs.at(LogLevel.info) if "refused a" in e.get("log_format", "")]
        self.assertEqual((logged["kind"], logged["session_id"]), ("PUBLISH", publisher.id))
        publisher.publish("x.y", "fine")
        self.assertEqual(self.payloads(), [["fine"]] * 4)

    def test_refusals_are_logged_at_info_once_per_session(self) -> None:
        publisher = self.connect("cbor")
        for _ in range(3):
            publisher.publish("x.y", NOW)
            self.assertRaises(ApplicationError, publisher.publish, "x.y", NOW, acknowledge=True)
        self.assertEqual(self.app.router.stats["invalid_payloads"], 6)
        refusals = [e for e in self.logs.events if "refused a" in e.get("log_format", "")]
        levels = [e["log_level"] for e in refusals]
        self.assertEqual(levels, [LogLevel.info] + [LogLevel.debug] * 5)

    def test_json_publisher_integer_beyond_64_bits_is_refused(self) -> None:
        publisher = self.connect("json")
        publisher.send_raw([PUBLISH, 5, {"acknowledge": True}, "x.y", [2**70]])
        error = publisher.messages[-1]
        self.assertEqual((error.request, error.error), (5, INVALID_ARGUMENT))
        self.assertEqual(self.payloads(), [[], [], [], []])

    def test_json_publisher_infinity_and_surrogates_are_refused(self) -> None:
        publisher = self.connect("json")
        for text in ("1e400", "NaN", '"\\ud800"'):
            publisher.send_frame(f'[16, 5, {{"acknowledge": true}}, "x.y", [{text}]]'.encode(), False)
            self.assertEqual(publisher.messages[-1].error, INVALID_ARGUMENT, text)
        self.assertEqual(self.payloads(), [[], [], [], []])

    def test_cbor_dict_with_integer_keys_is_refused(self) -> None:
        publisher = self.connect("cbor")
        with self.assertRaises(ApplicationError) as caught:
            publisher.publish("x.y", scores={1: "a"}, acknowledge=True)
        self.assertIn("kwargs['scores'] has a key of type int", caught.exception.args[0])

    def test_a_topic_hook_never_sees_a_refused_payload(self) -> None:
        seen: list[Any] = []

        @self.app.topic("room.{name}")
        class Room(Topic):
            def on_publish(self, session: Any, payload: Any) -> None:
                seen.append(payload)

        publisher = self.connect("cbor")
        publisher.subscribe("room.a")
        self.assertRaises(ApplicationError, publisher.publish, "room.a", NOW, acknowledge=True)
        self.assertEqual(seen, [])

    def test_call_with_a_datetime_gets_invalid_argument_and_the_callee_is_not_invoked(self) -> None:
        invoked: list[Any] = []
        self.connect("json").register("app.echo", lambda value: invoked.append(value))
        caller = self.connect("cbor")
        error = self.failureResultOf(caller.call("app.echo", NOW), ApplicationError).value
        self.assertEqual(error.error, INVALID_ARGUMENT)  # type: ignore[attr-defined]
        self.assertEqual(invoked, [])
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    def raw_callee(self, serializer: str = "cbor", **details: Any) -> TestSession:
        callee = self.connect(serializer, **details)
        callee.send_raw([REGISTER, 100, {}, "app.now"])
        self.assertIsInstance(callee.messages[-1], message.Registered)
        return callee

    def invocation(self, callee: TestSession) -> message.Invocation:
        return [m for m in callee.messages if isinstance(m, message.Invocation)][-1]

    def test_callee_yielding_a_datetime_ends_the_call_with_an_error(self) -> None:
        callee = self.raw_callee()
        caller = self.connect("json")
        d = caller.call("app.now")
        callee.send_raw([YIELD, self.invocation(callee).request, {}, [NOW]])
        error = self.failureResultOf(d, ApplicationError).value
        self.assertEqual(error.error, INVALID_ARGUMENT)  # type: ignore[attr-defined]
        self.assertEqual(
            error.args[0],
            "the callee's result could not be delivered: args[0] is of type datetime, which not every "
            "WAMP serializer can carry",
        )
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)
        self.assertEqual(self.app.router.stats["invalid_payloads"], 1)

    def test_a_later_yield_for_the_ended_call_is_ignored(self) -> None:
        callee = self.raw_callee()
        caller = self.connect("json")
        d = caller.call("app.now")
        request = self.invocation(callee).request
        callee.send_raw([YIELD, request, {}, [NOW]])
        self.failureResultOf(d, ApplicationError)
        callee.send_raw([YIELD, request, {}, ["late"]])
        self.assertFalse([m for m in caller.messages if isinstance(m, message.Result)])

    def test_bad_progressive_result_ends_the_call_and_interrupts_the_callee(self) -> None:
        roles = {"callee": {"features": {"progressive_call_results": True, "call_canceling": True}}}
        callee = self.raw_callee(roles=roles)
        caller = self.connect("json")
        caller.send_raw([CALL, 9, {"receive_progress": True}, "app.now", []])
        request = self.invocation(callee).request
        callee.send_raw([YIELD, request, {"progress": True}, ["first"]])
        callee.send_raw([YIELD, request, {"progress": True}, [NOW]])
        result, error = caller.messages[-2:]
        self.assertEqual((result.args, result.progress), (["first"], True))
        self.assertEqual((error.request, error.error), (9, INVALID_ARGUMENT))
        interrupt = callee.messages[-1]
        self.assertIsInstance(interrupt, message.Interrupt)
        self.assertEqual(interrupt.request, request)
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    def test_callee_error_with_bad_arguments_keeps_its_uri(self) -> None:
        callee = self.raw_callee()
        caller = self.connect("json")
        d = caller.call("app.now")
        request = self.invocation(callee).request
        callee.send_raw([ERROR, INVOCATION, request, {}, "app.error.clock", [NOW], {"at": NOW}])
        error = self.failureResultOf(d, ApplicationError).value
        self.assertEqual(error.error, "app.error.clock")  # type: ignore[attr-defined]
        self.assertIn("the arguments of the callee's error could not be delivered", error.args[0])
        self.assertEqual(error.kwargs, {})  # type: ignore[attr-defined]


class AppPayloadTests(SynchronousTestCase):
    """The app's own values that no serializer can carry are app bugs: refused where they are made."""

    def setUp(self) -> None:
        self.logs = LogCapture(self)
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.sessions = [TestClient(self.app, s).connect() for s in ("cbor", "json", "msgpack")]

    def test_procedure_returning_a_datetime_answers_invalid_argument_and_warns(self) -> None:
        self.app.procedure("app.now")(lambda: {"at": NOW})
        for session in self.sessions:
            error = self.failureResultOf(session.call("app.now"), ApplicationError).value
            self.assertEqual(error.error, INVALID_ARGUMENT)  # type: ignore[attr-defined]
            self.assertIn("the result of app.now could not be delivered: args[0]['at']", error.args[0])
        warnings = [e for e in self.logs.at(LogLevel.warn) if e.get("procedure") == "app.now"]
        self.assertEqual(len(warnings), 3)
        self.assertEqual(self.logs.critical, [])
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    def test_asynchronous_procedure_result_is_checked_too(self) -> None:
        pending: Deferred[Any] = Deferred()
        self.app.procedure("app.later")(lambda: pending)
        d = self.sessions[1].call("app.later")
        pending.callback({2: "two"})
        error = self.failureResultOf(d, ApplicationError).value
        self.assertEqual(error.error, INVALID_ARGUMENT)  # type: ignore[attr-defined]

    def test_procedure_error_with_bad_arguments_keeps_its_uri(self) -> None:
        @self.app.procedure("app.fail")
        def fail() -> None:
            raise ApplicationError("app.error.late", NOW)

        error = self.failureResultOf(self.sessions[1].call("app.fail"), ApplicationError).value
        self.assertEqual(error.error, "app.error.late")  # type: ignore[attr-defined]
        self.assertIn("the arguments of the error could not be delivered", error.args[0])

    def test_app_broadcast_of_a_datetime_raises_type_error_and_sends_nothing(self) -> None:
        subscriptions = [s.subscribe("news") for s in self.sessions]
        with self.assertRaises(TypeError) as caught:
            self.app.broadcast("news", {"at": NOW})
        self.assertIn("cannot broadcast on 'news': payload['at'] is of type datetime", str(caught.exception))
        self.app.broadcast("news", "fine")
        self.assertEqual([s.payloads for s in subscriptions], [["fine"]] * 3)

    def test_topic_broadcast_and_send_raise_type_error(self) -> None:
        @self.app.topic("clock")
        class Clock_(Topic):
            pass

        self.sessions[0].subscribe("clock")
        topic = self.app.topic_instance("clock")
        self.assertRaises(TypeError, topic.broadcast, NOW)
        with self.assertRaises(TypeError) as caught:
            topic.send(topic.subscribers[0], {1, 2})
        self.assertIn("cannot send on 'clock': payload is of type set", str(caught.exception))


def _factory() -> WampServerFactory:
    app = Sandstone(anonymous=True, open_uris=True, limits=Limits(open_handshake_timeout=0))
    return WampServerFactory(app.router, limits=app.limits, clock=Clock())


class Connection:
    """A WampServerProtocol on a StringTransport, open, speaking ``wamp.2.<serializer>``, with a session."""

    def __init__(self, f: WampServerFactory, serializer: str) -> None:
        subprotocol = f"wamp.2.{serializer}"
        self.protocol: WampServerProtocol = f.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        handshake = SimpleNamespace(protocols=[subprotocol], origin="", headers={})
        self.protocol.onConnect(handshake)  # type: ignore[arg-type]
        self.protocol.state = self.protocol.STATE_OPEN
        self.protocol.onOpen()
        self.objects = object_serializer(f.serializers[subprotocol])
        self.send([message.Hello.MESSAGE_TYPE, "realm1", {"roles": {"subscriber": {}, "caller": {}}}])

    def send(self, raw: list[Any]) -> None:
        self.protocol.onMessage(self.objects.serialize(raw), self.objects.BINARY)

    def received(self) -> list[list[Any]]:
        return [self.objects.unserialize(p)[0] for p in websocket_payloads(self.transport.value())]


class TransportDefenceTests(SynchronousTestCase):
    """What slips past the edge checks (here: a publication made by hand) fails for one connection only."""

    def setUp(self) -> None:
        self.logs = LogCapture(self)
        self.factory = _factory()
        self.connections = [Connection(self.factory, s) for s in ("cbor", "json", "msgpack", "cbor")]
        for connection in self.connections:
            connection.send([message.Subscribe.MESSAGE_TYPE, 1, {}, "news"])

    def events(self) -> list[list[Any]]:
        return [[m[4] for m in c.received() if m[0] == message.Event.MESSAGE_TYPE] for c in self.connections]

    def test_an_unserializable_event_skips_only_the_connections_it_fails_for(self) -> None:
        delivered = self.factory.router.publish(Publication("news", [NOW]))
        self.assertEqual(delivered, 4)
        self.assertEqual(self.events(), [[[NOW]], [], [], [[NOW]]])
        self.assertEqual(self.factory.stats["unserializable_skipped"], 2)

    def test_it_is_logged_once_per_message_without_a_traceback(self) -> None:
        self.factory.router.publish(Publication("news", [NOW]))
        skipped = [e for e in self.logs.at(LogLevel.warn) if e.get("kind") == "EVENT"]
        self.assertEqual(len(skipped), 1)
        self.assertIn("args[0] is of type datetime", skipped[0]["problem"])
        self.assertEqual(self.logs.critical, [])

    def test_the_next_event_reaches_everyone(self) -> None:
        self.factory.router.publish(Publication("news", [NOW]))
        self.factory.router.publish(Publication("news", ["fine"]))
        self.assertEqual([e[-1] for e in self.events()], [["fine"]] * 4)

    def test_an_unserializable_result_becomes_an_error(self) -> None:
        json_connection = self.connections[1]
        json_connection.protocol.send_message(message.Result(7, args=[{"at": NOW}]))
        error = json_connection.received()[-1]
        self.assertEqual((error[0], error[1], error[2], error[4]), (ERROR, CALL, 7, INVALID_ARGUMENT))
        self.assertIn("the result could not be delivered: args[0]['at']", error[5][0])

    def test_an_unserializable_call_error_keeps_its_uri(self) -> None:
        json_connection = self.connections[1]
        json_connection.protocol.send_message(message.Error(CALL, 7, "app.error.late", args=[NOW]))
        error = json_connection.received()[-1]
        self.assertEqual((error[2], error[4]), (7, "app.error.late"))
        self.assertIn("the error could not be delivered", error[5][0])
