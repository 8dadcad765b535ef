"""Authorization: the app's authorizer, topic ``may_*`` hooks, pattern subscriptions (at subscribe time and
at delivery), the reserved ``wamp.`` namespace, the authorizer on the session meta API and
``app.broadcast(on_behalf_of=...)``.

Sessions get their authrole from authentication; these tests set ``session._session.authrole`` (the
router-side session of a ``TestSession``) right after connecting, to get distinct roles without it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred, succeed
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Publication, Sandstone, Topic, WampError
from sandstone.testing import TestClient, TestSession

NOT_AUTHORIZED = "wamp.error.not_authorized"
AUTHORIZATION_FAILED = "wamp.error.authorization_failed"
INVALID_URI = "wamp.error.invalid_uri"

# The example authorizer of the README: a role may use the URIs under its prefixes.
ALLOWED = {"user": ("com.app.",), "admin": ("com.",)}


def authorize(session: Any, action: str, uri: str, match: str) -> bool:
    """Allow URIs under the role's prefixes. A prefix subscription is allowed when its prefix is under one
    of them; a wildcard one when every URI it could match is, i.e. its fixed first parts are."""
    if match == "wildcard":
        uri = ".".join(itertools.takewhile(bool, uri.split("."))) + "."
    return any(uri.startswith(prefix) for prefix in ALLOWED.get(session.authrole, ()))


def connect(client: TestClient, authrole: str) -> TestSession:
    session = client.connect()
    session._session.authrole = authrole  # stands in for authentication (see the module docstring)
    return session


def error_of(session: TestSession, request_type: int) -> message.Error | None:
    errors = [m for m in session.messages if isinstance(m, message.Error) and m.request_type == request_type]
    return errors[-1] if errors else None


class Recorder:
    """An authorizer recording its calls, answering from a function."""

    def __init__(self, answer: Any = True) -> None:
        self.calls: list[tuple[Any, str, str, str]] = []
        self.answer = answer

    def __call__(self, session: Any, action: str, uri: str, match: str) -> Any:
        self.calls.append((session, action, uri, match))
        return self.answer(session, action, uri, match) if callable(self.answer) else self.answer


class LogCapture:
    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)


def make_app(authorizer: Any = None, open_uris: bool = True) -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=open_uris)
    if authorizer is not None:
        app.authorizer(authorizer)
    return app


class AuthorizerTests(SynchronousTestCase):
    def test_no_authorizer_allows_everything(self) -> None:
        client = TestClient(make_app())
        alice, bob = client.connect(), client.connect()
        inbox = alice.subscribe("com.x")
        bob.publish("com.x", 1, acknowledge=True)
        self.assertEqual(inbox.payloads, [1])

    def test_authorizer_sees_session_action_uri_and_match(self) -> None:
        recorder = Recorder()
        app = make_app(recorder)

        @app.procedure("com.app.add")
        def add(a: int, b: int) -> int:
            return a + b

        client = TestClient(app)
        alice = connect(client, "user")
        alice.subscribe("com.app.news")
        alice.subscribe("com.", match="prefix")
        alice.subscribe("com..x", match="wildcard")
        alice.publish("com.app.news", 1, acknowledge=True)
        alice.register("com.app.echo", lambda x: x)
        self.assertEqual(self.successResultOf(alice.call("com.app.add", 1, 2)), 3)
        session = alice._session
        self.assertEqual(
            recorder.calls,
            [
                (session, "subscribe", "com.app.news", "exact"),
                (session, "subscribe", "com.", "prefix"),
                (session, "subscribe", "com..x", "wildcard"),
                (session, "publish", "com.app.news", "exact"),
                (session, "register", "com.app.echo", "exact"),
                (session, "call", "com.app.add", "exact"),
            ],
        )

    def test_refusals_are_errors_echoing_the_request_and_the_session_lives(self) -> None:
        app = make_app(authorize)

        @app.procedure("com.secret.add")
        def add(a: int, b: int) -> int:
            return a + b

        client = TestClient(app)
        alice = connect(client, "user")
        for attempt in (
            lambda: alice.subscribe("com.secret.news"),
            lambda: alice.publish("com.secret.news", 1, acknowledge=True),
            lambda: alice.register("com.secret.echo", lambda x: x),
        ):
            with self.assertRaises(ApplicationError) as caught:
                attempt()
            self.assertEqual(caught.exception.error, NOT_AUTHORIZED)
        failure = self.failureResultOf(alice.call("com.secret.add", 1, 2), ApplicationError)
        self.assertEqual(failure.value.error, NOT_AUTHORIZED)
        self.assertIn("com.secret.add", failure.value.args[0])
        error = error_of(alice, message.Call.MESSAGE_TYPE)
        assert error is not None
        self.assertEqual(error.request, max(m.request for m in alice.messages if hasattr(m, "request")))
        # still open, and allowed requests work
        self.assertTrue(alice._session.is_open)
        self.assertEqual(alice.subscribe("com.app.news").payloads, [])
        self.assertIsNone(app.router.broker.subscriptions.exact("com.secret.news"))
        self.assertIsNone(app.router.dealer.registration("com.secret.echo"))

    def test_refused_unacknowledged_publish_is_dropped_silently(self) -> None:
        client = TestClient(make_app(authorize))
        admin, user = connect(client, "admin"), connect(client, "user")
        inbox = admin.subscribe("com.secret.news")
        before = len(user.messages)
        user.publish("com.secret.news", "psst")
        self.assertEqual(user.messages[before:], [])
        self.assertEqual(inbox.payloads, [])
        self.assertTrue(user._session.is_open)

    def test_raising_authorizer_denies_with_authorization_failed_and_logs_its_name(self) -> None:
        def broken(session: Any, action: str, uri: str, match: str) -> bool:
            raise ZeroDivisionError("oops")

        logs = LogCapture(self)
        client = TestClient(make_app(broken))
        alice = client.connect()
        with self.assertRaises(ApplicationError) as caught:
            alice.subscribe("com.x")
        self.assertEqual(caught.exception.error, AUTHORIZATION_FAILED)
        self.assertNotIn("oops", str(caught.exception.args))  # no internals to the client
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [event] = [e for e in logs.events if e.get("hook")]
        self.assertIn("broken", event["hook"])
        self.assertTrue(alice._session.is_open)

    def test_authorizer_answering_none_denies(self) -> None:
        client = TestClient(make_app(lambda session, action, uri, match: None))
        with self.assertRaises(ApplicationError) as caught:
            client.connect().subscribe("com.x")
        self.assertEqual(caught.exception.error, NOT_AUTHORIZED)

    def test_coroutine_and_deferred_authorizers(self) -> None:
        async def coroutine(session: Any, action: str, uri: str, match: str) -> bool:
            return uri.startswith("com.ok")

        for authorizer in (coroutine, lambda s, a, uri, m: succeed(uri.startswith("com.ok"))):
            client = TestClient(make_app(authorizer))
            alice = client.connect()
            alice.subscribe("com.ok")
            with self.assertRaises(ApplicationError) as caught:
                alice.subscribe("com.no")
            self.assertEqual(caught.exception.error, NOT_AUTHORIZED)


class AsyncAuthorizerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.answers: list[Deferred[bool]] = []

        def authorizer(session: Any, action: str, uri: str, match: str) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            self.answers.append(d)
            return d

        self.app = make_app(authorizer)
        self.client = TestClient(self.app)
        self.alice = self.client.connect()

    def sent(self, *types: type) -> list[Any]:
        return [m for m in self.alice.messages if isinstance(m, types)]

    def test_subscribed_waits_for_the_answer(self) -> None:
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "com.x"])
        self.assertEqual(self.sent(message.Subscribed, message.Error), [])
        self.assertIsNone(self.app.router.broker.subscriptions.exact("com.x"))
        self.answers[0].callback(True)
        [subscribed] = self.sent(message.Subscribed)
        self.assertEqual(subscribed.request, 1)

    def test_refusal_arrives_later_as_error(self) -> None:
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "com.x"])
        self.answers[0].callback(False)
        [error] = self.sent(message.Error)
        self.assertEqual((error.request, error.error), (1, NOT_AUTHORIZED))
        self.assertIsNone(self.app.router.broker.subscriptions.exact("com.x"))

    def test_failure_arrives_later_as_authorization_failed(self) -> None:
        self.alice.send_raw([message.Register.MESSAGE_TYPE, 4, {}, "com.proc"])
        self.answers[0].errback(ZeroDivisionError())
        [error] = self.sent(message.Error)
        self.assertEqual((error.request, error.error), (4, AUTHORIZATION_FAILED))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_later_requests_take_effect_in_order(self) -> None:
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "com.a"])
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 2, {}, "com.b"])
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 3, {}, "com.c"])
        self.assertEqual(len(self.answers), 1)  # the others wait behind the first
        self.answers[0].callback(True)
        self.assertEqual(len(self.answers), 2)
        self.answers[1].callback(False)
        self.answers[2].callback(True)
        replies = [(type(m).__name__, m.request) for m in self.sent(message.Subscribed, message.Error)]
        self.assertEqual(replies, [("Subscribed", 1), ("Error", 2), ("Subscribed", 3)])

    def test_queued_requests_answered_at_once_run_in_one_go(self) -> None:
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "com.a"])
        for request in range(2, 150):  # within the PUBLISH burst of the default limits
            self.alice.send_raw([message.Publish.MESSAGE_TYPE, request, {"acknowledge": True}, "com.a"])
        self.answers[0].callback(True)
        for answer in self.answers[1:]:
            self.assertFalse(answer.called)
        while not all(a.called for a in self.answers):
            for answer in self.answers:
                if not answer.called:
                    answer.callback(True)
        published = [m.request for m in self.sent(message.Published)]
        self.assertEqual(published, list(range(2, 150)))

    def test_a_session_leaving_while_waiting_leaves_nothing_behind(self) -> None:
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 1, {}, "com.a"])
        self.alice.send_raw([message.Subscribe.MESSAGE_TYPE, 2, {}, "com.b"])
        self.alice.disconnect()
        self.answers[0].callback(True)
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)
        self.assertEqual(self.app.router.authorization._queues, {})


class TopicHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.order: list[str] = []
        self.created: list[str] = []
        order, created = self.order, self.created

        def authorizer(session: Any, action: str, uri: str, match: str) -> bool:
            order.append(f"app {action}")
            return session.authrole != "banned"

        self.app = app = make_app(authorizer, open_uris=False)

        @app.topic("rooms.{room}")
        class Room(Topic):
            def __init__(self, uri: str, args: dict[str, Any]) -> None:
                super().__init__(uri, args)
                created.append(uri)

            def may_subscribe(self, session: Any) -> bool:
                order.append(f"topic subscribe {self.uri}")
                if self.args["room"] == "broken":
                    raise RuntimeError("hook bug")
                return self.args["room"] != "private" or session.authrole == "member"

            def may_publish(self, session: Any, payload: Any) -> Any:
                order.append(f"topic publish {payload}")
                return succeed(payload != "spam")

        self.client = TestClient(app)

    def test_app_authorizer_first_then_topic_hook(self) -> None:
        alice = self.client.connect()
        alice.subscribe("rooms.lobby")
        self.assertEqual(self.order, ["app subscribe", "topic subscribe rooms.lobby"])

    def test_topic_hook_refuses_and_transient_instance_is_released(self) -> None:
        alice = self.client.connect()
        with self.assertRaises(ApplicationError) as caught:
            alice.subscribe("rooms.private")
        self.assertEqual(caught.exception.error, NOT_AUTHORIZED)
        self.assertIsNone(self.app.topic_instance("rooms.private"))
        member = connect(self.client, "member")
        member.subscribe("rooms.private")
        self.assertIsNotNone(self.app.topic_instance("rooms.private"))

    def test_app_refusal_skips_the_topic_hook_and_creates_no_instance(self) -> None:
        banned = connect(self.client, "banned")
        with self.assertRaises(ApplicationError):
            banned.subscribe("rooms.lobby")
        self.assertEqual(self.order, ["app subscribe"])
        self.assertEqual(self.created, [])

    def test_raising_topic_hook_fails_authorization(self) -> None:
        logs = LogCapture(self)
        with self.assertRaises(ApplicationError) as caught:
            self.client.connect().subscribe("rooms.broken")
        self.assertEqual(caught.exception.error, AUTHORIZATION_FAILED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = [e for e in logs.events if e.get("hook")]
        self.assertEqual(event["hook"], "TopicHookTests.setUp.<locals>.Room.may_subscribe")
        self.assertIsNone(self.app.topic_instance("rooms.broken"))

    def test_may_publish_decides_before_on_publish(self) -> None:
        alice, bob = self.client.connect(), self.client.connect()
        inbox = bob.subscribe("rooms.lobby")
        alice.publish("rooms.lobby", "hello", acknowledge=True)
        with self.assertRaises(ApplicationError) as caught:
            alice.publish("rooms.lobby", "spam", acknowledge=True)
        self.assertEqual(caught.exception.error, NOT_AUTHORIZED)
        alice.publish("rooms.lobby", "spam")
        self.assertEqual(inbox.payloads, ["hello"])

    def test_publish_on_a_room_nobody_watches_leaves_no_instance(self) -> None:
        alice = self.client.connect()
        alice.publish("rooms.empty", "hello", acknowledge=True)
        with self.assertRaises(ApplicationError):
            alice.publish("rooms.empty", "spam", acknowledge=True)
        self.assertIsNone(self.app.topic_instance("rooms.empty"))
        self.assertEqual(self.app.router._topics._busy, {})


class PatternSubscriptionTests(SynchronousTestCase):
    def test_the_example_authorizer_refuses_patterns_wider_than_the_role(self) -> None:
        client = TestClient(make_app(authorize))
        user = connect(client, "user")
        for uri, match in (
            ("com.", "prefix"),
            ("", "prefix"),
            ("com", "prefix"),
            ("com.ap", "prefix"),
            ("com..x", "wildcard"),
            (".app.x", "wildcard"),
            ("com.app", "exact"),
        ):
            with self.assertRaises(ApplicationError, msg=(uri, match)) as caught:
                user.subscribe(uri, match=match)
            self.assertEqual(caught.exception.error, NOT_AUTHORIZED)
        for uri, match in (
            ("com.app.", "prefix"),
            ("com.app.x", "prefix"),
            ("com.app..x", "wildcard"),
            ("com.app.a.b", "wildcard"),
        ):
            user.subscribe(uri, match=match)

    def make(self, authorizer: Any) -> tuple[Sandstone, TestClient]:
        app = make_app(authorizer)
        return app, TestClient(app)

    def test_pattern_subscribers_never_receive_forbidden_topics(self) -> None:
        # A careless authorizer allowing every pattern: delivery checks still keep secrets secret.
        recorder = Recorder(lambda s, a, uri, match: match != "exact" or authorize(s, a, uri, match))
        app, client = self.make(recorder)
        user, admin = connect(client, "user"), connect(client, "admin")
        wide = user.subscribe("", match="prefix")
        wild = user.subscribe("com..news", match="wildcard")
        admin_wide = admin.subscribe("com.", match="prefix")
        app.broadcast("com.secret.news", "classified")
        app.broadcast("com.app.news", "public")
        app.broadcast("com.secret.news", "classified again")
        self.assertEqual(wide.payloads, ["public"])
        self.assertEqual(wild.payloads, ["public"])
        self.assertEqual(admin_wide.payloads, ["classified", "public", "classified again"])
        # decisions are cached per (session, uri)
        delivery_checks = [c for c in recorder.calls if c[3] == "exact"]
        self.assertEqual(len(delivery_checks), 4)
        self.assertEqual(set(app.router.authorization._decisions), {user._session, admin._session})
        user.disconnect()
        self.assertEqual(set(app.router.authorization._decisions), {admin._session})

    def test_exact_subscribers_are_not_checked_again(self) -> None:
        recorder = Recorder()
        app, client = self.make(recorder)
        alice = client.connect()
        inbox = alice.subscribe("com.x")
        app.broadcast("com.x", 1)
        app.broadcast("com.x", 2)
        self.assertEqual(inbox.payloads, [1, 2])
        self.assertEqual(len(recorder.calls), 1)

    def test_cluster_deliveries_are_checked_too(self) -> None:
        app, client = self.make(lambda s, a, uri, match: match != "exact" or authorize(s, a, uri, match))
        user = connect(client, "user")
        wide = user.subscribe("com.", match="prefix")
        # what the Redis bus does with another node's publication
        app.router.broker.deliver(Publication("com.secret.x", ["classified"]))
        app.router.broker.deliver(Publication("com.app.x", ["public"]))
        self.assertEqual(wide.payloads, ["public"])

    def test_cache_is_bounded(self) -> None:
        from sandstone import _authorization

        self.patch(_authorization, "DELIVERY_CACHE_SIZE", 3)
        app, client = self.make(Recorder())
        alice = client.connect()
        alice.subscribe("com.", match="prefix")
        for i in range(10):
            app.broadcast(f"com.t{i}", i)
        decisions = app.router.authorization._decisions[alice._session]
        self.assertEqual(list(decisions), ["com.t7", "com.t8", "com.t9"])

    def test_async_answers_at_delivery_deny_and_are_logged_once(self) -> None:
        async def authorizer(session: Any, action: str, uri: str, match: str) -> bool:
            return True

        logs = LogCapture(self)
        app, client = self.make(authorizer)
        alice = client.connect()
        wide = alice.subscribe("com.", match="prefix")  # allowed (asynchronously)
        app.broadcast("com.a", 1)
        app.broadcast("com.b", 2)
        self.assertEqual(wide.payloads, [])
        self.assertEqual(len([e for e in logs.events if "asynchronously" in e.get("log_format", "")]), 1)

    def test_topic_may_subscribe_applies_to_pattern_subscribers(self) -> None:
        app = make_app()

        @app.topic("rooms.{room}")
        class Room(Topic):
            def may_subscribe(self, session: Any) -> bool:
                return self.args["room"] != "private"

        client = TestClient(app)
        alice, bob = client.connect(), client.connect()
        wide = alice.subscribe("rooms.", match="prefix")
        bob.subscribe("rooms.lobby")
        app.broadcast("rooms.private", "secret")
        app.broadcast("rooms.lobby", "hello")
        self.assertEqual(wide.payloads, ["hello"])
        self.assertIsNone(app.topic_instance("rooms.private"))  # the transient instance was released

    def test_no_delivery_checks_without_anything_that_may_refuse(self) -> None:
        app = make_app()

        @app.topic("plain")
        class Plain(Topic):
            pass

        self.assertIsNone(app.router.broker.gate)
        app.authorizer(authorize)
        self.assertIsNotNone(app.router.broker.gate)
        app.authorizer(None)
        self.assertIsNone(app.router.broker.gate)


class ReservedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)
        self.alice = self.client.connect()

    def test_clients_may_not_use_the_wamp_namespace(self) -> None:
        alice = self.alice
        for attempt in (
            lambda: alice.subscribe("wamp.session.on_kill"),  # not a meta topic
            lambda: alice.subscribe("wamp.registration.on_kill"),  # nor this
            lambda: alice.publish("wamp.session.on_join", acknowledge=True),
            lambda: alice.register("wamp.session.kill", lambda: None),
        ):
            with self.assertRaises(ApplicationError) as caught:
                attempt()
            self.assertEqual(caught.exception.error, INVALID_URI)
            self.assertIn("reserved", caught.exception.args[0])
        failure = self.failureResultOf(alice.call("wamp.session.kill", 1), ApplicationError)
        self.assertEqual(failure.value.error, INVALID_URI)
        self.assertTrue(alice._session.is_open)

    def test_meta_topics_and_patterns_in_wamp_may_be_subscribed_to(self) -> None:
        self.alice.subscribe("wamp.session.on_join")
        self.alice.subscribe("wamp.", match="prefix")
        self.alice.subscribe("wamp..on_join", match="wildcard")

    def test_wide_patterns_are_fine(self) -> None:
        self.alice.subscribe("", match="prefix")
        self.alice.subscribe("wam", match="prefix")
        self.alice.subscribe("..x", match="wildcard")

    def test_the_authorizer_decides_on_meta_procedures_too(self) -> None:
        app = make_app(authorize)
        client = TestClient(app)
        user = connect(client, "user")
        failure = self.failureResultOf(user.call("wamp.session.count"), ApplicationError)
        self.assertEqual(failure.value.error, NOT_AUTHORIZED)


@dataclass
class Identity:
    authid: str
    authrole: str


class BroadcastOnBehalfTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.recorder = Recorder(authorize)
        self.app = make_app(self.recorder)
        self.client = TestClient(self.app)
        self.admin = connect(self.client, "admin")
        self.inbox = self.admin.subscribe("com.", match="prefix")

    def test_allowed_identity_broadcasts(self) -> None:
        sent = self.app.broadcast("com.app.news", "hi", on_behalf_of=Identity("joe", "user"))
        self.assertEqual(self.inbox.payloads, ["hi"])
        self.assertEqual(self.inbox.events[0].publication, self.successResultOf(sent))
        [(principal, action, uri, match)] = [c for c in self.recorder.calls if c[1] == "publish"]
        self.assertEqual(
            (principal.authid, principal.authrole, action, uri, match),
            ("joe", "user", "publish", "com.app.news", "exact"),
        )

    def test_refused_identity_fails_and_nothing_is_sent(self) -> None:
        refused = self.app.broadcast("com.secret.news", "hi", on_behalf_of=Identity("joe", "user"))
        self.assertEqual(self.failureResultOf(refused, WampError).value.uri, NOT_AUTHORIZED)
        self.assertEqual(self.inbox.payloads, [])

    def test_a_session_may_be_given(self) -> None:
        user = connect(self.client, "user")
        self.failureResultOf(
            self.app.broadcast("com.secret.news", "hi", on_behalf_of=user._session), WampError
        )
        self.assertIs(self.recorder.calls[-1][0], user._session)

    def test_without_on_behalf_of_nothing_is_checked(self) -> None:
        calls = len(self.recorder.calls)
        self.app.broadcast("com.secret.news", "hi")
        self.assertEqual(self.inbox.payloads, ["hi"])
        self.assertEqual(len(self.recorder.calls), calls + 1)  # the admin's delivery check only

    def test_async_authorizer_gives_a_deferred(self) -> None:
        answers: list[Deferred[bool]] = []

        def authorizer(session: Any, action: str, uri: str, match: str) -> Any:
            if match != "exact" or session.authrole == "admin":
                return True
            answers.append(Deferred())
            return answers[-1]

        self.app.authorizer(authorizer)
        allowed = self.app.broadcast("com.app.news", "hi", on_behalf_of=Identity("joe", "user"))
        refused = self.app.broadcast("com.app.news", "no", on_behalf_of=Identity("joe", "user"))
        self.assertEqual(self.inbox.payloads, [])
        answers[0].callback(True)
        answers[1].callback(False)
        self.assertEqual(self.inbox.payloads, ["hi"])
        self.assertEqual(self.successResultOf(allowed), self.inbox.events[0].publication)
        self.assertEqual(self.failureResultOf(refused, WampError).value.uri, NOT_AUTHORIZED)

    def test_topic_may_publish_applies(self) -> None:
        app = make_app()

        @app.topic("com.app.rooms.{room}")
        class Room(Topic):
            def may_publish(self, session: Any, payload: Any) -> bool:
                return session.authrole == "moderator"

        self.failureResultOf(
            app.broadcast("com.app.rooms.a", "hi", on_behalf_of=Identity("joe", "user")), WampError
        )
        self.successResultOf(
            app.broadcast("com.app.rooms.a", "hi", on_behalf_of=Identity("ann", "moderator"))
        )
        self.assertIsNone(app.topic_instance("com.app.rooms.a"))


class ReadmeExampleTests(SynchronousTestCase):
    def test_readme_authorizer_is_the_tested_one(self) -> None:
        import re
        from pathlib import Path

        guide = Path(__file__).resolve().parent.parent / "docs" / "guides" / "auth.md"
        blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
        [source] = [b for b in blocks if "@app.authorizer" in b]
        namespace: dict[str, Any] = {}
        exec(compile(source, str(guide), "exec"), namespace)  # a whole program: it makes its own app
        example = namespace["app"].router.authorization.authorizer
        session = type("S", (), {"authrole": "user"})()
        for uri, match in [
            ("com.", "prefix"),
            ("", "prefix"),
            ("com..x", "wildcard"),
            ("com.app.", "prefix"),
            ("com.app..x", "wildcard"),
            ("com.app.x", "exact"),
            ("com.secret", "exact"),
        ]:
            for action in ("subscribe", "publish"):
                self.assertEqual(
                    example(session, action, uri, match), authorize(session, action, uri, match), (uri, match)
                )
