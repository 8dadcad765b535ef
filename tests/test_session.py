"""Tests for L{sandstone._session}: the WAMP session state machine, as a client sees it."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone, Session, Topic
from sandstone.testing import SessionClosed, TestClient, TestSession

HELLO = message.Hello.MESSAGE_TYPE
GOODBYE = message.Goodbye.MESSAGE_TYPE
ABORT = message.Abort.MESSAGE_TYPE
SUBSCRIBE = message.Subscribe.MESSAGE_TYPE
PUBLISH = message.Publish.MESSAGE_TYPE
REGISTER = message.Register.MESSAGE_TYPE
ERROR = message.Error.MESSAGE_TYPE

HELLO_DETAILS: dict[str, Any] = {"roles": {"subscriber": {}, "publisher": {}}}


def last(session: TestSession) -> message.Message:
    """The last message a test session received."""
    return session.messages[-1]


class HookLog(Topic):
    """A topic recording its hooks in the list ``self.log`` (given by the app that declares it)."""

    log: list[tuple[str, int]]

    def on_subscribe(self, session: Session) -> None:
        self.log.append(("subscribe", session.id))

    def on_unsubscribe(self, session: Session) -> None:
        self.log.append(("unsubscribe", session.id))


def hook_app(log: list[tuple[str, int]]) -> Sandstone:
    """An app with a ``room/{name}`` topic writing its hooks to ``log``."""
    app = Sandstone(anonymous=True)

    @app.topic("room/{name}")
    class Room(HookLog):
        pass

    Room.log = log
    return app


class WelcomeTests(SynchronousTestCase):
    """HELLO is answered with a WELCOME describing the router and the session."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, realm="sandbox")
        self.session = TestClient(self.app).connect()
        self.welcome = self.session.messages[0]

    def test_hello_is_answered_with_welcome(self) -> None:
        self.assertIsInstance(self.welcome, message.Welcome)
        self.assertEqual(len(self.session.messages), 1)

    def test_welcome_carries_a_positive_session_id(self) -> None:
        self.assertIsInstance(self.welcome.session, int)
        self.assertGreater(self.welcome.session, 0)

    def test_welcome_names_the_realm(self) -> None:
        self.assertEqual(self.welcome.realm, "sandbox")

    def test_welcome_announces_broker_features(self) -> None:
        broker = self.welcome.roles["broker"]
        self.assertTrue(broker.publisher_identification)
        self.assertTrue(broker.pattern_based_subscription)
        self.assertTrue(broker.subscriber_blackwhite_listing)
        self.assertTrue(broker.publisher_exclusion)

    def test_welcome_announces_dealer_features(self) -> None:
        dealer = self.welcome.roles["dealer"]
        self.assertTrue(dealer.caller_identification)
        self.assertTrue(dealer.progressive_call_results)

    def test_welcome_gives_anonymous_authrole_and_authmethod(self) -> None:
        self.assertEqual(self.welcome.authrole, "anonymous")
        self.assertEqual(self.welcome.authmethod, "anonymous")

    def test_welcome_gives_an_anonymous_authid(self) -> None:
        self.assertTrue(self.welcome.authid.startswith("anonymous-"))

    def test_sessions_get_distinct_ids_and_authids(self) -> None:
        other = TestClient(self.app).connect().messages[0]
        self.assertNotEqual(other.session, self.welcome.session)
        self.assertNotEqual(other.authid, self.welcome.authid)

    def test_welcome_marshals_like_autobahns_own(self) -> None:
        """The prebuilt WELCOME is the message autobahn's Welcome would put on the wire."""
        from sandstone._session import ROUTER_ROLES, _Welcome

        ours = _Welcome(7, "sandbox", "alice", "admin", "ticket", "static").marshal()
        theirs = message.Welcome(
            7,
            ROUTER_ROLES,
            realm="sandbox",
            authid="alice",
            authrole="admin",
            authmethod="ticket",
            authprovider="static",
        ).marshal()
        self.assertEqual(ours, theirs)
        self.assertEqual(ours[2]["roles"]["dealer"]["features"]["call_canceling"], True)

    def test_hello_offering_anonymous_among_authmethods_is_welcomed(self) -> None:
        session = TestClient(self.app).connect(authmethods=["ticket", "anonymous"])
        self.assertIsInstance(session.messages[0], message.Welcome)


class HelloRefusedTests(SynchronousTestCase):
    """A HELLO the router cannot accept is answered with ABORT and the connection closed."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, realm="sandbox")
        self.session = TestSession(self.app)

    def test_unknown_realm_aborts_with_no_such_realm(self) -> None:
        self.session.send_raw([HELLO, "elsewhere", HELLO_DETAILS])
        abort = last(self.session)
        self.assertIsInstance(abort, message.Abort)
        self.assertEqual(abort.reason, "wamp.error.no_such_realm")

    def test_unknown_realm_closes_the_connection(self) -> None:
        self.session.send_raw([HELLO, "elsewhere", HELLO_DETAILS])
        self.assertTrue(self.session.transport_closed)

    def test_unknown_realm_creates_no_session(self) -> None:
        self.session.send_raw([HELLO, "elsewhere", HELLO_DETAILS])
        self.assertEqual(self.app.router.sessions, {})

    def test_authmethods_without_anonymous_abort_with_no_auth_method(self) -> None:
        self.session.send_raw([HELLO, "sandbox", {**HELLO_DETAILS, "authmethods": ["ticket"]}])
        self.assertEqual(last(self.session).reason, "wamp.error.no_auth_method")


class ProtocolViolationTests(SynchronousTestCase):
    """Breaking the protocol aborts the session with wamp.error.protocol_violation."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)

    def assertAborted(self, session: TestSession) -> None:
        abort = last(session)
        self.assertIsInstance(abort, message.Abort)
        self.assertEqual(abort.reason, "wamp.error.protocol_violation")
        self.assertTrue(session.transport_closed)

    def test_subscribe_before_hello_aborts(self) -> None:
        session = TestSession(self.app)
        session.send_raw([SUBSCRIBE, 1, {}, "a.topic"])
        self.assertAborted(session)

    def test_goodbye_before_hello_aborts(self) -> None:
        session = TestSession(self.app)
        session.send_raw([GOODBYE, {}, "wamp.close.normal"])
        self.assertAborted(session)

    def test_second_hello_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([HELLO, self.app.realm, HELLO_DETAILS])
        self.assertAborted(session)

    def test_second_hello_removes_the_session(self) -> None:
        session = self.client.connect()
        session.send_raw([HELLO, self.app.realm, HELLO_DETAILS])
        self.assertEqual(self.app.router.sessions, {})

    def test_request_id_zero_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 0, {}, "a.topic"])
        self.assertAborted(session)

    def test_request_id_zero_aborts_an_unacknowledged_publish(self) -> None:
        session = self.client.connect()
        session.send_raw([PUBLISH, 0, {}, "a.topic", ["x"]])
        self.assertAborted(session)

    def test_request_id_zero_aborts_a_register(self) -> None:
        session = self.client.connect()
        session.send_raw([REGISTER, 0, {}, "a.procedure"])
        self.assertAborted(session)

    def test_request_id_above_2_53_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 2**53 + 1, {}, "a.topic"])
        self.assertAborted(session)

    def test_request_id_of_2_53_is_accepted(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 2**53, {}, "a.topic"])
        self.assertIsInstance(last(session), message.Subscribed)

    def test_frame_that_does_not_deserialize_aborts(self) -> None:
        session = self.client.connect()
        session.send_frame(b"[32, 1, {", False)
        self.assertAborted(session)

    def test_frame_that_does_not_deserialize_before_hello_aborts(self) -> None:
        session = TestSession(self.app)
        session.send_frame(b"\xff\xfe", False)
        self.assertAborted(session)

    def test_binary_frame_on_a_json_connection_aborts(self) -> None:
        session = self.client.connect()
        session.send_frame(b'[32, 1, {}, "a.topic"]', True)
        self.assertAborted(session)

    def test_message_that_is_not_a_list_aborts(self) -> None:
        session = self.client.connect()
        session.send_frame(b'{"type": 32}', False)
        self.assertAborted(session)

    def test_unknown_message_type_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([999, 1, {}])
        self.assertAborted(session)

    def test_malformed_message_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 1, {}])
        self.assertAborted(session)

    def test_uri_that_is_not_a_string_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 1, {}, 42])
        self.assertAborted(session)

    def test_unknown_match_policy_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([SUBSCRIBE, 1, {"match": "regex"}, "a.topic"])
        self.assertAborted(session)

    def test_non_boolean_disclose_me_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([PUBLISH, 1, {"disclose_me": "yes"}, "a.topic"])
        self.assertAborted(session)

    def test_error_for_anything_but_an_invocation_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([ERROR, SUBSCRIBE, 1, {}, "app.error.oops"])
        self.assertAborted(session)

    def test_router_only_message_from_a_client_aborts(self) -> None:
        session = self.client.connect()
        session.send_raw([message.Event.MESSAGE_TYPE, 1, 2, {}])
        self.assertAborted(session)

    def test_protocol_violation_removes_the_sessions_subscriptions(self) -> None:
        session = self.client.connect()
        session.subscribe("a.topic")
        session.send_raw([999])
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)

    def test_protocol_violation_does_not_affect_other_sessions(self) -> None:
        other = self.client.connect()
        subscription = other.subscribe("a.topic")
        self.client.connect().send_raw([999])
        self.client.connect().publish("a.topic", "still here")
        self.assertEqual(subscription.payloads, ["still here"])


class GoodbyeTests(SynchronousTestCase):
    """GOODBYE ends the session politely; the connection stays open for a new one."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)

    def test_goodbye_is_answered_with_goodbye_and_out(self) -> None:
        session = self.client.connect()
        session.leave()
        goodbye = last(session)
        self.assertIsInstance(goodbye, message.Goodbye)
        self.assertEqual(goodbye.reason, "wamp.close.goodbye_and_out")

    def test_goodbye_keeps_the_connection_open(self) -> None:
        session = self.client.connect()
        session.leave()
        self.assertFalse(session.transport_closed)

    def test_goodbye_removes_the_session_from_the_router(self) -> None:
        session = self.client.connect()
        session.leave()
        self.assertNotIn(session.id, self.app.router.sessions)

    def test_goodbye_releases_registrations(self) -> None:
        session = self.client.connect()
        session.register("app.echo", lambda x: x)
        session.leave()
        failure = self.failureResultOf(self.client.connect().call("app.echo", 1), ApplicationError)
        self.assertEqual(failure.value.error, "wamp.error.no_such_procedure")

    def test_goodbye_runs_topic_unsubscribe_hooks(self) -> None:
        log: list[tuple[str, int]] = []
        session = TestClient(hook_app(log)).connect()
        session.subscribe("room/a")
        session.leave()
        self.assertEqual(log, [("subscribe", session.id), ("unsubscribe", session.id)])

    def test_goodbye_stops_events(self) -> None:
        session = self.client.connect()
        session.subscribe("a.topic")
        session.leave()
        received = len(session.messages)
        self.client.connect().publish("a.topic", "late")
        self.assertEqual(len(session.messages), received)

    def test_rejoin_after_goodbye_gets_a_new_session_id(self) -> None:
        session = self.client.connect()
        first = session.id
        session.leave()
        session.join(self.app.realm)
        self.assertIsInstance(last(session), message.Welcome)
        self.assertNotEqual(session.id, first)

    def test_rejoined_session_is_usable(self) -> None:
        session = self.client.connect()
        session.leave()
        session.join(self.app.realm)
        subscription = session.subscribe("a.topic")
        self.client.connect().publish("a.topic", "again")
        self.assertEqual(subscription.payloads, ["again"])

    def test_request_between_goodbye_and_rejoin_aborts(self) -> None:
        session = self.client.connect()
        session.leave()
        session.send_raw([SUBSCRIBE, 1, {}, "a.topic"])
        self.assertEqual(last(session).reason, "wamp.error.protocol_violation")


class ClientAbortTests(SynchronousTestCase):
    """A client's ABORT ends its session and the connection."""

    def test_client_abort_closes_the_connection(self) -> None:
        session = TestClient(Sandstone(anonymous=True)).connect()
        session.send_raw([ABORT, {}, "wamp.close.system_shutdown"])
        self.assertTrue(session.transport_closed)

    def test_client_abort_runs_topic_unsubscribe_hooks(self) -> None:
        log: list[tuple[str, int]] = []
        session = TestClient(hook_app(log)).connect()
        session.subscribe("room/a")
        session.send_raw([ABORT, {}, "wamp.close.system_shutdown"])
        self.assertEqual(log[-1], ("unsubscribe", session.id))

    def test_client_abort_before_hello_closes_the_connection(self) -> None:
        session = TestSession(Sandstone(anonymous=True))
        session.send_raw([ABORT, {}, "wamp.close.system_shutdown"])
        self.assertTrue(session.transport_closed)


class DisconnectTests(SynchronousTestCase):
    """A connection lost without GOODBYE cleans up everything its session held."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)

    def test_disconnect_removes_the_session_from_the_router(self) -> None:
        session = self.client.connect()
        session.disconnect()
        self.assertEqual(self.app.router.sessions, {})

    def test_disconnect_removes_subscriptions(self) -> None:
        session = self.client.connect()
        session.subscribe("a.topic")
        session.subscribe("a", match="prefix")
        session.subscribe("a.", match="wildcard")
        session.disconnect()
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)

    def test_disconnect_keeps_other_subscribers(self) -> None:
        leaving, staying = self.client.connect(), self.client.connect()
        leaving.subscribe("a.topic")
        subscription = staying.subscribe("a.topic")
        leaving.disconnect()
        self.client.connect().publish("a.topic", "hello")
        self.assertEqual(subscription.payloads, ["hello"])

    def test_disconnect_releases_registrations(self) -> None:
        session = self.client.connect()
        session.register("app.echo", lambda x: x)
        session.disconnect()
        self.client.connect().register("app.echo", lambda x: x)
        self.assertEqual(len(self.app.router.dealer), 1)

    def test_disconnect_runs_topic_unsubscribe_hooks(self) -> None:
        log: list[tuple[str, int]] = []
        session = TestClient(hook_app(log)).connect()
        session.subscribe("room/a")
        session.subscribe("room/b")
        session.disconnect()
        self.assertEqual(log[2:], [("unsubscribe", session.id), ("unsubscribe", session.id)])

    def test_disconnect_before_hello_is_harmless(self) -> None:
        session = TestSession(self.app)
        session.disconnect()
        self.assertEqual(self.app.router.sessions, {})

    def test_disconnect_after_goodbye_is_harmless(self) -> None:
        session = self.client.connect()
        session.leave()
        session.disconnect()
        self.assertEqual(self.app.router.sessions, {})


class SessionObjectTests(SynchronousTestCase):
    """The Session the app sees in topic hooks describes the client."""

    def setUp(self) -> None:
        self.seen: list[Session] = []
        self.app = Sandstone(anonymous=True)
        seen = self.seen

        @self.app.topic("spy")
        class Spy(Topic):
            def on_subscribe(self, session: Session) -> None:
                seen.append(session)

        self.client = TestClient(self.app)

    def test_session_has_the_clients_id_and_identity(self) -> None:
        session = self.client.connect()
        session.subscribe("spy")
        seen = self.seen[0]
        self.assertEqual(
            (seen.id, seen.realm, seen.authid, seen.authrole, seen.authmethod),
            (session.id, "realm1", session.authid, "anonymous", "anonymous"),
        )

    def test_session_is_open_while_joined(self) -> None:
        self.client.connect().subscribe("spy")
        self.assertTrue(self.seen[0].is_open)
        self.assertFalse(self.seen[0].has_left)

    def test_session_has_left_after_goodbye(self) -> None:
        session = self.client.connect()
        session.subscribe("spy")
        session.leave()
        self.assertFalse(self.seen[0].is_open)
        self.assertTrue(self.seen[0].has_left)

    def test_joining_with_a_wrong_realm_raises_session_closed(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            self.client.connect("nowhere")
        self.assertEqual(caught.exception.reason, "wamp.error.no_such_realm")
