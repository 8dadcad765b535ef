"""Tests for L{sandstone.testing}: the in-memory client tests are written with."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from sandstone import Identity, Sandstone, Session, Topic
from sandstone.testing import (
    Event,
    HandshakeRefused,
    SessionClosed,
    TestClient,
    TestSession,
    TestSubscription,
    Wamp1CallError,
)


class ConnectTests(SynchronousTestCase):
    """TestClient.connect and TestSession's connection methods."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)

    def test_connect_returns_a_joined_session(self) -> None:
        session = self.client.connect()
        self.assertIn(session.id, self.app.router.sessions)
        self.assertEqual(session.authrole, "anonymous")
        self.assertTrue(session.authid)

    def test_connect_to_another_realm_raises_session_closed(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            self.client.connect("other")
        self.assertEqual(caught.exception.reason, "wamp.error.no_such_realm")

    def test_session_closed_message_has_reason_and_text(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            self.client.connect("other")
        self.assertIn("wamp.error.no_such_realm: ", str(caught.exception))

    def test_connect_passes_hello_details(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            self.client.connect(authmethods=["ticket"])
        self.assertEqual(caught.exception.reason, "wamp.error.no_auth_method")

    def test_unjoined_session_has_no_id(self) -> None:
        session = TestSession(self.app)
        self.assertEqual((session.id, session.messages, session.closed), (0, [], None))

    def test_messages_lists_everything_received(self) -> None:
        session = self.client.connect()
        session.subscribe("a.topic")
        self.assertEqual([type(m) for m in session.messages], [message.Welcome, message.Subscribed])

    def test_leave_records_the_goodbye(self) -> None:
        session = self.client.connect()
        session.leave()
        self.assertEqual(session.closed.reason, "wamp.close.goodbye_and_out")

    def test_requests_after_leave_raise_session_closed(self) -> None:
        session = self.client.connect()
        session.leave()
        with self.assertRaises(SessionClosed):
            session.subscribe("a.topic")

    def test_join_after_leave_starts_a_new_session(self) -> None:
        session = self.client.connect()
        first = session.id
        session.leave()
        session.join(self.app.realm)
        self.assertIsNone(session.closed)
        self.assertNotEqual(session.id, first)
        self.assertEqual(list(self.app.router.sessions), [session.id])

    def test_disconnect_closes_the_transport(self) -> None:
        session = self.client.connect()
        session.disconnect()
        self.assertTrue(session.transport_closed)
        self.assertEqual(self.app.router.sessions, {})

    def test_disconnect_twice_is_harmless(self) -> None:
        session = self.client.connect()
        session.disconnect()
        session.disconnect()
        self.assertTrue(session.transport_closed)

    def test_sending_after_disconnect_raises_session_closed(self) -> None:
        session = self.client.connect()
        session.disconnect()
        with self.assertRaises(SessionClosed):
            session.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "a.topic"])

    def test_sending_after_abort_raises_session_closed(self) -> None:
        session = self.client.connect()
        session.send_raw([999])
        with self.assertRaises(SessionClosed):
            session.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "a.topic"])

    def test_nothing_arrives_after_disconnect(self) -> None:
        session = self.client.connect()
        session.subscribe("a.topic")
        session.disconnect()
        received = len(session.messages)
        self.client.connect().publish("a.topic", "late")
        self.assertEqual(len(session.messages), received)


class SerializerTests(SynchronousTestCase):
    """Messages cross the serializer the client was made with."""

    def roundtrip(self, serializer: str) -> list[Any]:
        app = Sandstone(anonymous=True, open_uris=True)
        client = TestClient(app, serializer=serializer)
        subscription = client.connect().subscribe("a.topic")
        client.connect().publish("a.topic", {"n": 1, "data": b"\x00\x01"}, acknowledge=True)
        return subscription.payloads

    def test_json(self) -> None:
        self.assertEqual(self.roundtrip("json"), [{"n": 1, "data": b"\x00\x01"}])

    def test_msgpack(self) -> None:
        self.assertEqual(self.roundtrip("msgpack"), [{"n": 1, "data": b"\x00\x01"}])

    def test_cbor(self) -> None:
        self.assertEqual(self.roundtrip("cbor"), [{"n": 1, "data": b"\x00\x01"}])

    def test_unknown_serializer_is_refused(self) -> None:
        with self.assertRaises(KeyError):
            TestSession(Sandstone(anonymous=True), serializer="xml")

    def test_json_session_refuses_binary_frames(self) -> None:
        session = TestClient(Sandstone(anonymous=True)).connect()
        session.send_frame(b"\x93\x20\x01\x80", True)
        self.assertIsInstance(session.messages[-1], message.Abort)

    def test_msgpack_session_accepts_binary_frames_only(self) -> None:
        session = TestClient(Sandstone(anonymous=True), serializer="msgpack").connect()
        session.send_frame(b'[32, 1, {}, "a.topic"]', False)
        self.assertEqual(session.messages[-1].reason, "wamp.error.protocol_violation")


class PubSubTests(SynchronousTestCase):
    """subscribe, unsubscribe, publish and the events they record."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.alice, self.bob = self.client.connect(), self.client.connect()

    def test_subscribe_returns_the_subscription(self) -> None:
        subscription = self.alice.subscribe("a", match="prefix")
        self.assertIsInstance(subscription, TestSubscription)
        self.assertEqual((subscription.topic, subscription.match), ("a", "prefix"))
        self.assertEqual(subscription.id, self.alice.messages[-1].subscription)

    def test_events_record_args_kwargs_publication_topic_and_publisher(self) -> None:
        subscription = self.alice.subscribe("a", match="prefix")
        publication = self.bob.publish("a.b", 1, 2, acknowledge=True, disclose_me=True, k="v")
        self.assertEqual(subscription.events, [Event([1, 2], {"k": "v"}, publication, "a.b", self.bob.id)])

    def test_event_payload_is_the_first_argument(self) -> None:
        subscription = self.alice.subscribe("a.b")
        self.bob.publish("a.b", "first", "second")
        self.bob.publish("a.b", k="only kwargs")
        self.assertEqual(subscription.payloads, ["first", None])

    def test_events_of_each_subscription_are_kept_apart(self) -> None:
        exact = self.alice.subscribe("a.b")
        prefix = self.alice.subscribe("a", match="prefix")
        self.bob.publish("a.c", "c")
        self.assertEqual((exact.payloads, prefix.payloads), ([], ["c"]))

    def test_events_sent_by_on_subscribe_are_recorded(self) -> None:
        @self.app.topic("welcome")
        class Welcome(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, "hello")

        self.assertEqual(self.alice.subscribe("welcome").payloads, ["hello"])

    def test_resubscribing_returns_the_same_recorder(self) -> None:
        first = self.alice.subscribe("a.b")
        self.assertIs(self.alice.subscribe("a.b"), first)

    def test_subscribe_error_raises_application_error(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("a..b")
        self.assertEqual(caught.exception.error, "wamp.error.invalid_uri")

    def test_unsubscribe_stops_recording(self) -> None:
        subscription = self.alice.subscribe("a.b")
        self.alice.unsubscribe(subscription)
        self.bob.publish("a.b", "late")
        self.assertEqual(subscription.events, [])

    def test_unsubscribe_error_raises_application_error(self) -> None:
        subscription = TestSubscription(12345, "a.b", "exact")
        with self.assertRaises(ApplicationError) as caught:
            self.alice.unsubscribe(subscription)
        self.assertEqual(caught.exception.error, "wamp.error.no_such_subscription")

    def test_publish_without_acknowledge_returns_none(self) -> None:
        self.assertIsNone(self.alice.publish("a.b", "x"))

    def test_publish_with_acknowledge_returns_the_publication_id(self) -> None:
        publication = self.alice.publish("a.b", "x", acknowledge=True)
        self.assertEqual(publication, self.alice.messages[-1].publication)

    def test_publish_error_raises_application_error(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            TestClient(Sandstone(anonymous=True)).connect().publish("a.b", "x", acknowledge=True)
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_publish_options_reach_the_router(self) -> None:
        subscription = self.alice.subscribe("a.b")
        carol = self.client.connect()
        carol_subscription = carol.subscribe("a.b")
        self.bob.publish("a.b", "x", eligible=[self.alice.id, carol.id], exclude=[carol.id])
        self.assertEqual((subscription.payloads, carol_subscription.payloads), (["x"], []))

    def test_send_raw_sends_exactly_what_it_is_given(self) -> None:
        subscription = self.alice.subscribe("a.b")
        self.bob.send_raw([message.Publish.MESSAGE_TYPE, 5, {"acknowledge": True}, "a.b", ["raw"], {"k": 1}])
        self.assertEqual(self.bob.messages[-1].request, 5)
        self.assertEqual((subscription.events[0].args, subscription.events[0].kwargs), (["raw"], {"k": 1}))


class RpcTests(SynchronousTestCase):
    """call and register."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.client = TestClient(self.app)
        self.session = self.client.connect()

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Any:
        return self.successResultOf(self.session.call(procedure, *args, **kwargs))

    def test_call_with_one_result_gives_the_value(self) -> None:
        self.app.procedure("app.one")(lambda: {"a": 1})
        self.assertEqual(self.call("app.one"), {"a": 1})

    def test_call_with_several_results_gives_a_list(self) -> None:
        from autobahn.wamp.types import CallResult

        self.app.procedure("app.two")(lambda: CallResult(1, 2))
        self.assertEqual(self.call("app.two"), [1, 2])

    def test_call_with_keyword_results_gives_args_and_kwargs(self) -> None:
        from autobahn.wamp.types import CallResult

        self.app.procedure("app.kw")(lambda: CallResult(1, total=3))
        self.assertEqual(self.call("app.kw"), {"args": [1], "kwargs": {"total": 3}})

    def test_call_without_result_gives_none(self) -> None:
        self.app.procedure("app.none")(lambda: None)
        self.assertIsNone(self.call("app.none"))

    def test_call_error_fails_with_application_error(self) -> None:
        failure = self.failureResultOf(self.session.call("app.missing"), ApplicationError)
        self.assertEqual(failure.value.error, "wamp.error.no_such_procedure")

    def test_call_stays_pending_until_answered(self) -> None:
        pending: Deferred[str] = Deferred()
        self.app.procedure("app.later")(lambda: pending)
        d = self.session.call("app.later")
        self.assertNoResult(d)
        pending.callback("now")
        self.assertEqual(self.successResultOf(d), "now")

    def test_register_returns_the_registration_id(self) -> None:
        registration = self.session.register("app.echo", lambda x: x)
        self.assertEqual(registration, self.session.messages[-1].registration)

    def test_registered_function_answers_invocations(self) -> None:
        self.session.register("app.add", lambda a, b=0: a + b)
        self.assertEqual(self.successResultOf(self.client.connect().call("app.add", 1, b=2)), 3)

    def test_registered_function_returning_a_deferred(self) -> None:
        pending: Deferred[int] = Deferred()
        self.session.register("app.later", lambda: pending)
        d = self.client.connect().call("app.later")
        self.assertNoResult(d)
        pending.callback(7)
        self.assertEqual(self.successResultOf(d), 7)

    def test_failing_registered_function_answers_runtime_error(self) -> None:
        def broken() -> None:
            raise ValueError("callee broke")

        self.session.register("app.broken", broken)
        failure = self.failureResultOf(self.client.connect().call("app.broken"), ApplicationError)
        self.assertEqual(
            (failure.value.error, failure.value.args), ("wamp.error.runtime_error", ("callee broke",))
        )

    def test_register_error_raises_application_error(self) -> None:
        self.session.register("app.echo", lambda x: x)
        with self.assertRaises(ApplicationError) as caught:
            self.client.connect().register("app.echo", lambda x: x)
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")


class RequestTests(SynchronousTestCase):
    """TestClient.request and its shortcuts."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.route("/echo", methods=["GET", "POST", "PUT"])
        def echo(request: IRequest) -> bytes:
            request.setHeader(b"X-Method", request.method)
            request.setHeader(b"X-Seen", request.getHeader(b"X-Test") or b"-")
            return request.content.read()

        self.client = TestClient(self.app)

    def test_get(self) -> None:
        response = self.client.get("/echo")
        self.assertEqual((response.code, response.headers["X-Method"], response.body), (200, ["GET"], b""))

    def test_post_with_data(self) -> None:
        self.assertEqual(self.client.post("/echo", data=b"raw").body, b"raw")

    def test_post_with_json(self) -> None:
        response = self.client.post("/echo", json={"a": [1, 2]})
        self.assertEqual(response.json(), {"a": [1, 2]})

    def test_request_with_any_method(self) -> None:
        self.assertEqual(self.client.request("PUT", "/echo").headers["X-Method"], ["PUT"])

    def test_request_headers_reach_the_handler(self) -> None:
        response = self.client.get("/echo", headers={"X-Test": "yes"})
        self.assertEqual(response.headers["X-Seen"], ["yes"])

    def test_query_string_reaches_the_handler(self) -> None:
        @self.app.route("/query")
        def query(request: IRequest) -> bytes:
            return request.args[b"q"][0]

        self.assertEqual(TestClient(self.app).get("/query?q=found").body, b"found")

    def test_handler_that_never_finishes_is_reported(self) -> None:
        self.app.route("/never")(lambda request: Deferred())
        with self.assertRaises(AssertionError) as caught:
            TestClient(self.app).get("/never")
        self.assertIn("GET /never", str(caught.exception))

    def test_handler_exception_is_a_500(self) -> None:
        @self.app.route("/boom")
        def boom(request: IRequest) -> bytes:
            raise ZeroDivisionError("boom")

        self.assertEqual(TestClient(self.app).get("/boom").code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class CloseTests(SynchronousTestCase):
    def test_close_disconnects_every_session_of_the_client(self) -> None:
        app = Sandstone(anonymous=True)

        @app.topic("room")
        class Room(Topic):
            pass

        client = TestClient(app)
        alice, bob = client.connect(), client.connect()
        alice.subscribe("room")
        bob.subscribe("room")
        bob.disconnect()  # already gone: closing leaves it alone
        other = TestClient(app).connect()
        self.assertIsNotNone(app.topic_instance("room"))
        client.close()
        self.assertTrue(alice.transport_closed)
        self.assertIsNone(app.topic_instance("room"))  # its last subscriber left
        self.assertEqual(list(app.router.sessions.values()), [other._session])
        client.close()  # twice is fine


class Wamp1SessionTests(SynchronousTestCase):
    """TestClient.connect_v1: a WAMP v1 client (AutobahnJS 0.8) in memory, next to v2 test sessions."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("chat/{channel}")
        class Chat(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, f"Welcome on {self.args['channel']}")

        @self.app.procedure("add")
        def add(a: int, b: int) -> int:
            return a + b

        self.client = TestClient(self.app)
        self.addCleanup(self.client.close)

    def test_connect_v1_is_welcomed_with_a_string_id(self) -> None:
        session = self.client.connect_v1()
        self.assertEqual(session.messages, [[0, session.id, 1, session.messages[0][3]]])
        self.assertIs(self.app.router.sessions[int(session.id)], session.session)
        self.assertEqual(session.session.subprotocol, "wamp")

    def test_subscribe_publish_and_prefix_next_to_v2(self) -> None:
        v1 = self.client.connect_v1()
        v1.prefix("c", "chat/")
        general = v1.subscribe("c:general")
        v2 = self.client.connect()
        v2_general = v2.subscribe("chat/general")
        v1.publish("c:general", {"text": "from v1"})
        v2.publish("chat/general", {"text": "from v2"})
        self.assertEqual(general.topic, "chat/general")
        self.assertEqual(general.payloads, ["Welcome on general", {"text": "from v2"}])
        self.assertEqual(v2_general.payloads, ["Welcome on general", {"text": "from v1"}])
        v1.publish("c:general", "to myself too", exclude_me=False)
        self.assertEqual(general.events[-1], "to myself too")
        v1.publish("c:general", "to v1 only", exclude=[], eligible=[v1.id])
        self.assertEqual((general.events[-1], v2_general.payloads[-1]), ("to v1 only", "to myself too"))
        v1.unsubscribe("c:general")
        self.assertEqual([s.id for s in self.app.topic_instance("chat/general").subscribers], [v2.id])

    def test_call_results_and_errors(self) -> None:
        v1 = self.client.connect_v1()
        self.assertEqual(self.successResultOf(v1.call("add", 1, 2)), 3)
        failure = self.failureResultOf(v1.call("add", 1), Wamp1CallError)
        self.assertEqual(failure.value.uri, "wamp.error.invalid_argument")
        self.assertIn("missing a required argument", failure.value.desc)

    def test_a_malformed_message_closes_with_1002(self) -> None:
        v1 = self.client.connect_v1()
        v1.send_raw({"not": "a list"})
        self.assertEqual(v1.close_code, 1002)
        self.assertTrue(v1.transport_closed)
        self.assertEqual(self.app.router.sessions, {})
        with self.assertRaises(SessionClosed):
            v1.send_raw([5, "chat/general"])

    def test_identity_from_a_rest_login_or_refused(self) -> None:
        self.app.router.anonymous = False
        with self.assertRaises(HandshakeRefused) as caught:
            self.client.connect_v1()
        self.assertEqual(caught.exception.code, 403)
        token = self.app.session_store.create(Identity("alice", "member"))
        for session in (self.client.connect_v1(cookie=token), self.client.connect_v1(bearer=token)):
            self.assertEqual((session.session.authid, session.session.authmethod), ("alice", "cookie"))

    def test_close_disconnects_v1_sessions_too(self) -> None:
        v1 = self.client.connect_v1()
        v1.subscribe("chat/general")
        self.client.close()
        self.assertTrue(v1.transport_closed)
        self.assertIsNone(self.app.topic_instance("chat/general"))
