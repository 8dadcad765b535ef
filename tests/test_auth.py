"""Tests for authentication (L{sandstone._auth}, L{sandstone._login}): WAMP methods and REST sessions."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from autobahn.wamp import message, role
from autobahn.wamp.auth import compute_wcs, derive_key
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import CraDecoy, CraUser, Credentials, Identity, MemorySessionStore, Publication, Sandstone
from sandstone.testing import SessionClosed, TestClient, TestSession

HELLO = message.Hello.MESSAGE_TYPE


def challenge_shape(challenge: Any) -> tuple[Any, ...]:
    """What a WAMP-CRA challenge tells about its user: its fields, its announced role, its key derivation."""
    extra = challenge.extra
    fields = json.loads(extra["challenge"])
    return (
        sorted(extra),
        sorted(fields),
        fields["authrole"],
        extra.get("iterations"),
        extra.get("keylen"),
        len(extra.get("salt", "")),
    )


AUTHENTICATE = message.Authenticate.MESSAGE_TYPE
ABORT = message.Abort.MESSAGE_TYPE
SUBSCRIBE = message.Subscribe.MESSAGE_TYPE

DENIED = "wamp.error.authentication_denied"
VIOLATION = "wamp.error.protocol_violation"

TICKETS = {"alice": "alice-ticket"}
CRA_USERS = {
    "bob": CraUser("bob-secret", "editor"),
    "carol": CraUser.from_password("carol-password", "admin", salt="pepper", iterations=100, keylen=16),
}
PASSWORDS = {"dave": "dave-password"}


def make_app(*, anonymous: bool = False) -> Sandstone:
    """An app with every method: tickets, WAMP-CRA users, and REST login/logout/me routes."""
    app = Sandstone(anonymous=anonymous, open_uris=True)

    @app.authenticator
    def check(credentials: Credentials) -> Identity | None:
        expected = TICKETS.get(credentials.authid or "")
        if expected is not None and credentials.secret_is(expected):
            return Identity(credentials.authid or "", "user")
        return None

    @app.wampcra_user
    def user(authid: str) -> CraUser | None:
        return CRA_USERS.get(authid)

    @app.route("/login", methods=["POST"])
    def login(request: Any) -> Any:
        body = json.loads(request.content.read())
        if PASSWORDS.get(body["user"]) != body["password"]:
            request.setResponseCode(401)
            return b""
        return json.dumps({"token": app.login(request, Identity(body["user"], "member"))})

    @app.route("/logout", methods=["POST"])
    def logout(request: Any) -> bytes:
        app.logout(request)
        return b""

    @app.route("/me")
    def me(request: Any) -> Any:
        identity = app.identity(request)
        if identity is None:
            request.setResponseCode(401)
            return b""
        return json.dumps({"authid": identity.authid, "authrole": identity.authrole})

    return app


def hello(session: TestSession, *methods: str, authid: str | None = None, realm: str = "realm1") -> None:
    details: dict[str, Any] = {"roles": {"subscriber": {}}, "authmethods": list(methods)}
    if authid is not None:
        details["authid"] = authid
    session.send_raw([HELLO, realm, details])


def last(session: TestSession) -> Any:
    return session.messages[-1]


def cra_signature(challenge: message.Challenge, secret: str) -> str:
    return compute_wcs(secret, challenge.extra["challenge"]).decode("ascii")


def refusal(client: TestClient, **credentials: Any) -> tuple[str, str | None]:
    """The ABORT's reason and message for a connect that must fail."""
    session = TestSession(client.app)
    try:
        session.join(client.app.realm, **_hello_options(credentials))
    except SessionClosed:
        pass
    abort = last(session)
    assert isinstance(abort, message.Abort), abort
    assert session.transport_closed
    return abort.reason, abort.message


def _hello_options(credentials: dict[str, Any]) -> dict[str, Any]:
    options = dict(credentials)
    if "ticket" in options:
        options.setdefault("authmethods", ["ticket"])
    if "secret" in options:
        options.setdefault("authmethods", ["wampcra"])
    return options


class TicketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)

    def test_challenge_is_ticket_with_empty_extra(self) -> None:
        session = TestSession(self.app)
        hello(session, "ticket", authid="alice")
        challenge = last(session)
        self.assertIsInstance(challenge, message.Challenge)
        self.assertEqual((challenge.method, challenge.extra), ("ticket", {}))

    def test_right_ticket_is_welcomed_with_the_hooks_identity(self) -> None:
        session = self.client.connect(authid="alice", ticket="alice-ticket")
        welcome = last(session)
        self.assertIsInstance(welcome, message.Welcome)
        self.assertEqual(
            (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider),
            ("alice", "user", "ticket", "dynamic"),
        )
        self.assertEqual(self.app.router.sessions[session.id].authid, "alice")

    def test_wrong_ticket_is_denied(self) -> None:
        self.assertEqual(refusal(self.client, authid="alice", ticket="nope")[0], DENIED)
        self.assertEqual(self.app.router.sessions, {})

    def test_unknown_user_gets_the_identical_abort(self) -> None:
        self.assertEqual(
            refusal(self.client, authid="nobody", ticket="nope"),
            refusal(self.client, authid="alice", ticket="nope"),
        )

    def test_hook_gets_the_credentials(self) -> None:
        seen: list[Credentials] = []
        self.app.authenticator(lambda credentials: seen.append(credentials))
        refusal(self.client, authid="alice", ticket="t", authextra={"k": 1})
        self.assertEqual(seen, [Credentials("ticket", "alice", "t", {"k": 1})])


class WampCraTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)

    def challenge(self, authid: str) -> tuple[TestSession, message.Challenge]:
        session = TestSession(self.app)
        hello(session, "wampcra", authid=authid)
        challenge = last(session)
        self.assertIsInstance(challenge, message.Challenge)
        return session, challenge

    def test_right_secret_is_welcomed(self) -> None:
        session = self.client.connect(authid="bob", secret="bob-secret")
        welcome = last(session)
        self.assertEqual(
            (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider),
            ("bob", "editor", "wampcra", "dynamic"),
        )

    def test_challenge_names_the_session_it_welcomes(self) -> None:
        session, challenge = self.challenge("bob")
        fields = json.loads(challenge.extra["challenge"])
        self.assertEqual(
            set(fields), {"authid", "authrole", "authmethod", "authprovider", "nonce", "timestamp", "session"}
        )
        self.assertEqual((fields["authid"], fields["authmethod"]), ("bob", "wampcra"))
        session.send_raw([AUTHENTICATE, cra_signature(challenge, "bob-secret"), {}])
        self.assertEqual(last(session).session, fields["session"])

    def test_challenge_names_no_role(self) -> None:
        for authid in ("bob", "carol", "nobody"):
            _, challenge = self.challenge(authid)
            self.assertIsNone(json.loads(challenge.extra["challenge"])["authrole"], authid)

    def test_unsalted_challenge_has_no_salt(self) -> None:
        _, challenge = self.challenge("bob")
        self.assertEqual(set(challenge.extra), {"challenge"})

    def test_wrong_secret_is_denied(self) -> None:
        self.assertEqual(refusal(self.client, authid="bob", secret="wrong")[0], DENIED)

    def test_unknown_user_gets_the_identical_abort(self) -> None:
        self.assertEqual(
            refusal(self.client, authid="nobody", secret="wrong"),
            refusal(self.client, authid="bob", secret="wrong"),
        )

    def test_unknown_user_gets_a_challenge_like_a_known_one(self) -> None:
        self.app.router.auth.wampcra_decoy = CraDecoy(iterations=100, keylen=16)  # carol's parameters
        _, known = self.challenge("carol")
        _, unknown = self.challenge("nobody")
        self.assertEqual(set(unknown.extra), set(known.extra))
        self.assertEqual(
            set(json.loads(unknown.extra["challenge"])), set(json.loads(known.extra["challenge"]))
        )
        self.assertEqual(
            (unknown.extra["iterations"], unknown.extra["keylen"]),
            (known.extra["iterations"], known.extra["keylen"]),
        )

    def test_missing_authid_is_denied(self) -> None:
        session = TestSession(self.app)
        hello(session, "wampcra")
        self.assertEqual(last(session).reason, DENIED)

    def test_salted_secret_is_welcomed(self) -> None:
        session = self.client.connect(authid="carol", secret="carol-password")
        self.assertEqual(
            (session.authid, session.authrole, session.authmethod), ("carol", "admin", "wampcra")
        )

    def test_salted_challenge_carries_salt_iterations_keylen(self) -> None:
        _, challenge = self.challenge("carol")
        self.assertEqual(
            {k: challenge.extra[k] for k in ("salt", "iterations", "keylen")},
            {"salt": "pepper", "iterations": 100, "keylen": 16},
        )

    def test_salted_stored_secret_is_the_derived_key(self) -> None:
        self.assertEqual(CRA_USERS["carol"].secret, derive_key("carol-password", "pepper", 100, 16).decode())

    def test_salted_wrong_password_is_denied(self) -> None:
        self.assertEqual(refusal(self.client, authid="carol", secret="wrong")[0], DENIED)

    def test_unsalted_signature_of_salted_user_is_denied(self) -> None:
        session, challenge = self.challenge("carol")
        session.send_raw([AUTHENTICATE, cra_signature(challenge, "carol-password"), {}])
        self.assertEqual(last(session).reason, DENIED)

    def test_every_challenge_has_a_fresh_nonce(self) -> None:
        nonces = {json.loads(self.challenge("bob")[1].extra["challenge"])["nonce"] for _ in range(5)}
        self.assertEqual(len(nonces), 5)

    def test_signature_replayed_on_another_connection_is_denied(self) -> None:
        first, challenge = self.challenge("bob")
        signature = cra_signature(challenge, "bob-secret")
        first.send_raw([AUTHENTICATE, signature, {}])
        self.assertIsInstance(last(first), message.Welcome)
        second, _ = self.challenge("bob")
        second.send_raw([AUTHENTICATE, signature, {}])
        self.assertEqual(last(second).reason, DENIED)
        self.assertEqual(list(self.app.router.sessions), [first.id])


class WampCraDecoyTests(SynchronousTestCase):
    """An unknown authid's challenge looks like a real user's, whoever was looked up before it."""

    def setUp(self) -> None:
        self.app = make_app()

    def challenge(self, authid: str) -> message.Challenge:
        session = TestSession(self.app)
        hello(session, "wampcra", authid=authid)
        challenge = last(session)
        self.assertIsInstance(challenge, message.Challenge)
        return challenge

    def shape(self, challenge: message.Challenge) -> tuple[Any, ...]:
        return challenge_shape(challenge)

    def test_unknown_users_look_the_same_whoever_was_looked_up_before(self) -> None:
        self.challenge("carol")  # salted, 100 iterations, keylen 16, role admin
        after_carol = self.challenge("nobody")
        self.challenge("bob")  # unsalted, role editor
        after_bob = self.challenge("nemo")
        self.assertEqual(self.shape(after_carol), self.shape(after_bob))

    def test_unknown_users_look_salted_with_from_password_defaults(self) -> None:
        self.challenge("carol")
        real = CraUser.from_password("pw", "admin")
        shape = self.shape(self.challenge("nobody"))
        self.assertEqual(shape[2:], (None, real.iterations, real.keylen, len(real.salt or "")))

    def test_unknown_users_salt_is_stable_per_authid(self) -> None:
        first, again, other = (self.challenge(a).extra["salt"] for a in ("nobody", "nobody", "nemo"))
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)

    def test_decoy_key_decides_the_salt(self) -> None:
        key = b"k" * 32
        self.assertEqual(CraDecoy(key=key).user("nobody"), CraDecoy(key=key).user("nobody"))
        self.assertNotEqual(CraDecoy(key=key).user("nobody").salt, CraDecoy().user("nobody").salt)

    def test_unsalted_decoy_for_apps_with_unsalted_users(self) -> None:
        self.app.router.auth.wampcra_decoy = CraDecoy(salted=False)
        self.assertEqual(self.shape(self.challenge("nobody")), self.shape(self.challenge("bob")))

    def test_decoy_with_the_users_parameters_looks_like_them(self) -> None:
        self.app.router.auth.wampcra_decoy = CraDecoy(iterations=100, keylen=16)
        # All but the salt's length: carol's salt is the hand-picked "pepper", not a from_password one.
        self.assertEqual(self.shape(self.challenge("nobody"))[:5], self.shape(self.challenge("carol"))[:5])

    def test_unknown_user_is_denied_even_signing_with_the_decoy_secret(self) -> None:
        decoy = self.app.router.auth.wampcra_decoy
        session = TestSession(self.app)
        hello(session, "wampcra", authid="nobody")
        challenge = last(session)
        signature = compute_wcs(decoy.user("nobody").secret, challenge.extra["challenge"]).decode("ascii")
        session.send_raw([AUTHENTICATE, signature, {}])
        self.assertEqual(last(session).reason, DENIED)


class ProtocolTests(SynchronousTestCase):
    """The opening handshake's rules: one AUTHENTICATE per CHALLENGE, nothing else meanwhile."""

    def setUp(self) -> None:
        self.app = make_app(anonymous=True)

    def assertViolation(self, session: TestSession) -> None:
        self.assertEqual(last(session).reason, VIOLATION)
        self.assertTrue(session.transport_closed)
        self.assertEqual(self.app.router.sessions, {})

    def test_authenticate_before_hello_is_a_protocol_violation(self) -> None:
        session = TestSession(self.app)
        session.send_raw([AUTHENTICATE, "alice-ticket", {}])
        self.assertViolation(session)
        self.assertIn("no CHALLENGE pending", last(session).message)

    def test_authenticate_after_welcome_is_a_protocol_violation(self) -> None:
        session = TestClient(self.app).connect()
        session.send_raw([AUTHENTICATE, "alice-ticket", {}])
        self.assertViolation(session)

    def test_second_authenticate_is_a_protocol_violation(self) -> None:
        gate: Deferred[Identity | None] = Deferred()
        self.app.authenticator(lambda credentials: gate)
        session = TestSession(self.app)
        hello(session, "ticket", authid="alice")
        session.send_raw([AUTHENTICATE, "alice-ticket", {}])
        session.send_raw([AUTHENTICATE, "alice-ticket", {}])
        self.assertViolation(session)

    def test_subscribe_during_challenge_is_a_protocol_violation(self) -> None:
        session = TestSession(self.app)
        hello(session, "ticket", authid="alice")
        session.send_raw([SUBSCRIBE, 1, {}, "com.example.news"])
        self.assertViolation(session)

    def test_hello_during_challenge_is_a_protocol_violation(self) -> None:
        session = TestSession(self.app)
        hello(session, "ticket", authid="alice")
        hello(session, "ticket", authid="alice")
        self.assertViolation(session)

    def test_abort_during_challenge_ends_the_session(self) -> None:
        session = TestSession(self.app)
        hello(session, "ticket", authid="alice")
        session.send_raw([ABORT, {}, "wamp.close.normal"])
        self.assertTrue(session.transport_closed)
        self.assertIsInstance(last(session), message.Challenge)  # no answer to an ABORT
        self.assertEqual(self.app.router.sessions, {})


class MethodChoiceTests(SynchronousTestCase):
    def test_first_offered_supported_method_wins(self) -> None:
        app = make_app(anonymous=True)
        for methods, expected in ((["wampcra", "ticket"], "wampcra"), (["ticket", "wampcra"], "ticket")):
            session = TestSession(app)
            hello(session, *methods, authid="bob")
            self.assertEqual(last(session).method, expected)

    def test_unsupported_methods_are_skipped(self) -> None:
        session = TestSession(make_app())
        hello(session, "scram", "ticket", authid="alice")
        self.assertEqual(last(session).method, "ticket")

    def test_no_offered_method_supported_aborts_with_no_auth_method(self) -> None:
        app = Sandstone(anonymous=True)
        with self.assertRaises(SessionClosed) as caught:
            TestClient(app).connect(authid="alice", ticket="alice-ticket")
        self.assertEqual(caught.exception.reason, "wamp.error.no_auth_method")

    def test_offering_ticket_before_anonymous_gets_a_challenge(self) -> None:
        session = TestSession(make_app(anonymous=True))
        hello(session, "ticket", "anonymous", authid="alice")
        self.assertIsInstance(last(session), message.Challenge)


class AnonymousTests(SynchronousTestCase):
    def test_allowed_when_the_client_offers_nothing(self) -> None:
        session = TestClient(make_app(anonymous=True)).connect()
        self.assertEqual((session.authrole, session.authmethod), ("anonymous", "anonymous"))

    def test_refused_by_default(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            TestClient(make_app()).connect()
        self.assertEqual(caught.exception.reason, "wamp.error.no_auth_method")

    def test_refused_when_offered_explicitly(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            TestClient(make_app()).connect(authmethods=["anonymous"])
        self.assertEqual(caught.exception.reason, "wamp.error.no_auth_method")

    def test_default_open_router_allows_it(self) -> None:
        from sandstone._default import make_default_app

        self.assertEqual(TestClient(make_default_app()).connect().authmethod, "anonymous")


class AsyncHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.gate: Deferred[Any] = Deferred()
        self.calls: list[Any] = []

    def waiting_ticket_hook(self, credentials: Credentials) -> Deferred[Any]:
        self.calls.append(credentials)
        return self.gate

    def test_deferred_ticket_hook_welcomes_when_it_fires(self) -> None:
        self.app.authenticator(self.waiting_ticket_hook)
        session = TestClient(self.app).connect(authid="alice", ticket="alice-ticket")
        self.assertEqual(session.id, 0)
        self.gate.callback(Identity("alice", "late"))
        self.assertEqual((session.authid, session.authrole), ("alice", "late"))
        self.assertIn(session.id, self.app.router.sessions)

    def test_coroutine_hooks_work(self) -> None:
        @self.app.authenticator
        async def check(credentials: Credentials) -> Identity | None:
            return await self.gate

        session = TestClient(self.app).connect(authid="alice", ticket="x")
        self.gate.callback(Identity("alice", "async"))
        self.assertEqual(session.authrole, "async")

    def test_deferred_wampcra_lookup_challenges_when_it_fires(self) -> None:
        self.app.wampcra_user(lambda authid: self.gate)
        session = TestClient(self.app).connect(authid="bob", secret="bob-secret")
        self.assertEqual(session.messages, [])
        self.gate.callback(CRA_USERS["bob"])
        self.assertEqual((session.authid, session.authrole), ("bob", "editor"))

    def test_deferred_hook_answering_none_is_denied(self) -> None:
        self.app.authenticator(self.waiting_ticket_hook)
        session = TestClient(self.app).connect(authid="alice", ticket="alice-ticket")
        self.gate.callback(None)
        self.assertEqual(last(session).reason, DENIED)

    def test_message_while_hook_runs_is_a_protocol_violation(self) -> None:
        self.app.authenticator(self.waiting_ticket_hook)
        session = TestClient(self.app).connect(authid="alice", ticket="alice-ticket")
        session.send_raw([SUBSCRIBE, 1, {}, "com.example.news"])
        self.assertEqual(last(session).reason, VIOLATION)
        self.gate.callback(Identity("alice", "user"))
        self.assertNotIsInstance(last(session), message.Welcome)
        self.assertEqual(self.app.router.sessions, {})

    def test_transport_closed_while_hook_runs_welcomes_nothing(self) -> None:
        self.app.authenticator(self.waiting_ticket_hook)
        session = TestClient(self.app).connect(authid="alice", ticket="alice-ticket")
        session.disconnect()
        self.assertTrue(self.gate.called)  # cancelled: the hook may stop its work
        self.gate.callback(Identity("alice", "user"))  # too late: ignored
        self.assertEqual([type(m) for m in session.messages], [message.Challenge])
        self.assertEqual(self.app.router.sessions, {})

    def test_abort_while_hook_runs_welcomes_nothing(self) -> None:
        self.app.wampcra_user(lambda authid: self.gate)
        session = TestClient(self.app).connect(authid="bob", secret="bob-secret")
        session.send_raw([ABORT, {}, "wamp.close.normal"])
        self.gate.callback(CRA_USERS["bob"])
        self.assertEqual(session.messages, [])
        self.assertEqual(self.app.router.sessions, {})


class HookFailureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)

    def test_raising_ticket_hook_is_logged_and_denied(self) -> None:
        def broken(credentials: Credentials) -> None:
            raise RuntimeError("database down")

        self.app.authenticator(broken)
        self.assertEqual(
            refusal(self.client, authid="alice", ticket="alice-ticket"),
            refusal(TestClient(make_app()), authid="alice", ticket="nope"),
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_raising_wampcra_lookup_is_logged_and_denied(self) -> None:
        def broken(authid: str) -> None:
            raise RuntimeError("database down")

        self.app.wampcra_user(broken)
        self.assertEqual(refusal(self.client, authid="bob", secret="bob-secret")[0], DENIED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failing_deferred_hook_is_logged_and_denied(self) -> None:
        gate: Deferred[Any] = Deferred()
        self.app.authenticator(lambda credentials: gate)
        session = self.client.connect(authid="alice", ticket="alice-ticket")
        gate.errback(RuntimeError("timeout"))
        self.assertEqual(last(session).reason, DENIED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_hook_returning_something_else_is_denied(self) -> None:
        self.app.authenticator(lambda credentials: ("alice", "user"))
        self.assertEqual(refusal(self.client, authid="alice", ticket="alice-ticket")[0], DENIED)


class RestSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)

    def login(self) -> tuple[str, str]:
        """Log dave in; returns (bearer token, cookie value)."""
        response = self.client.post("/login", json={"user": "dave", "password": "dave-password"})
        self.assertEqual(response.code, 200)
        return response.json()["token"], response.cookies["sandstone_session"]

    def test_login_sets_an_httponly_samesite_lax_cookie(self) -> None:
        response = self.client.post("/login", json={"user": "dave", "password": "dave-password"})
        [cookie] = response.headers["Set-Cookie"]
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        self.assertTrue({"httponly", "samesite=lax", "path=/"} <= attributes, attributes)
        self.assertNotIn("secure", attributes)  # plain HTTP

    def test_login_returns_the_cookies_token(self) -> None:
        token, cookie = self.login()
        self.assertEqual(token, cookie)
        self.assertGreaterEqual(len(token), 43)

    def test_identity_from_the_cookie(self) -> None:
        _, cookie = self.login()
        response = self.client.get("/me", headers={"Cookie": f"sandstone_session={cookie}"})
        self.assertEqual(response.json(), {"authid": "dave", "authrole": "member"})

    def test_a_malformed_neighbour_cookie_does_not_hide_the_session_cookie(self) -> None:
        _, cookie = self.login()
        for neighbours in ('theme="dark', 'bad"name=1', "path=/", "=x"):
            for header in (
                f"{neighbours}; sandstone_session={cookie}",
                f"sandstone_session={cookie}; {neighbours}",
            ):
                response = self.client.get("/me", headers={"Cookie": header})
                self.assertEqual(response.json(), {"authid": "dave", "authrole": "member"}, header)

    def test_identity_from_a_bearer_token(self) -> None:
        token, _ = self.login()
        response = TestClient(self.app).get("/me", headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(response.json(), {"authid": "dave", "authrole": "member"})

    def test_no_identity_without_a_session(self) -> None:
        self.assertEqual(TestClient(self.app).get("/me").code, 401)

    def test_no_identity_for_an_unknown_token(self) -> None:
        response = TestClient(self.app).get("/me", headers={"Authorization": "Bearer forged"})
        self.assertEqual(response.code, 401)

    def test_logout_ends_the_session_and_clears_the_cookie(self) -> None:
        token, _ = self.login()
        bearer = {"Authorization": f"Bearer {token}"}
        response = TestClient(self.app).post("/logout", headers=bearer)
        self.assertEqual(response.cookies["sandstone_session"], "")
        self.assertEqual(TestClient(self.app).get("/me", headers=bearer).code, 401)

    def test_sessions_expire(self) -> None:
        clock = Clock()
        self.app.session_store = MemorySessionStore(ttl=60, clock=clock)
        token, _ = self.login()
        clock.advance(59)
        self.assertEqual(self.app.session_store.get(token), Identity("dave", "member"))
        clock.advance(1)
        self.assertIsNone(self.app.session_store.get(token))

    def test_expired_sessions_are_swept(self) -> None:
        clock = Clock()
        store = MemorySessionStore(ttl=60, clock=clock)
        store.create(Identity("a", "r"))
        clock.advance(61)
        store.create(Identity("b", "r"))
        self.assertEqual(len(store), 1)


class LogCapture:
    """Log events emitted during a test."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self, fragment: str) -> list[str]:
        return [t for t in map(formatEvent, self.events) if fragment in t]


class SessionStoreCapTests(SynchronousTestCase):
    """``MemorySessionStore`` keeps at most ``max_sessions`` and sweeps expired ones a few at a time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemorySessionStore(ttl=60, clock=self.clock, max_sessions=5)

    def create(self, count: int) -> list[str]:
        return [self.store.create(Identity(f"user{i}", "member")) for i in range(count)]

    def test_default_cap(self) -> None:
        self.assertEqual(MemorySessionStore().max_sessions, 100_000)

    def test_beyond_the_cap_the_oldest_sessions_are_evicted(self) -> None:
        tokens = self.create(8)
        self.assertEqual(len(self.store), 5)
        self.assertEqual([self.store.get(t) for t in tokens[:3]], [None] * 3)
        self.assertEqual([self.store.get(t).authid for t in tokens[3:]], [f"user{i}" for i in range(3, 8)])

    def test_evictions_are_logged_at_info_once_a_minute(self) -> None:
        self.store.ttl = 3600  # nothing expires meanwhile: every new session evicts one
        logs = LogCapture(self)
        self.create(20)
        self.clock.advance(30)
        self.create(1)
        self.assertEqual(len(logs.texts("session store full")), 1)
        self.clock.advance(31)
        self.create(1)
        [_, second] = logs.texts("session store full")
        self.assertIn("evicted the 16 oldest", second)  # 14 more at once, then 1, then 1
        self.assertTrue(all(e["log_level"] == LogLevel.info for e in logs.events))

    def test_expired_sessions_are_swept_a_few_per_create(self) -> None:
        store = MemorySessionStore(ttl=60, clock=self.clock, max_sessions=1000)
        for i in range(100):
            store.create(Identity(f"user{i}", "member"))
        self.clock.advance(61)
        store.create(Identity("new", "member"))
        self.assertEqual(len(store), 100 - 4 + 1)  # bounded work per call, not a scan of the store
        for _ in range(24):
            store.create(Identity("new", "member"))
        self.assertEqual(len(store), 25)  # every expired session is gone

    def test_deleted_sessions_free_their_place(self) -> None:
        tokens = self.create(5)
        self.store.delete(tokens[0])
        self.create(1)
        self.assertEqual(self.store.get(tokens[1]).authid, "user1")

    def test_max_sessions_must_be_positive(self) -> None:
        self.assertRaises(ValueError, MemorySessionStore, max_sessions=0)


class CookieMethodTests(SynchronousTestCase):
    """A REST session authenticates the app's WebSocket (auth method ``cookie``), with no CHALLENGE."""

    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)
        response = self.client.post("/login", json={"user": "dave", "password": "dave-password"})
        self.token = response.json()["token"]

    def test_cookie_session_is_welcomed_without_challenge(self) -> None:
        session = self.client.connect(cookie=self.token)
        self.assertEqual([type(m) for m in session.messages], [message.Welcome])
        welcome = session.messages[0]
        self.assertEqual(
            (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider),
            ("dave", "member", "cookie", "cookie"),
        )

    def test_bearer_token_in_the_handshake_works_too(self) -> None:
        self.assertEqual(self.client.connect(bearer=self.token).authid, "dave")

    def test_invalid_cookie_is_denied(self) -> None:
        with self.assertRaises(SessionClosed) as caught:
            self.client.connect(cookie="forged")
        self.assertEqual(caught.exception.reason, DENIED)

    def test_without_a_session_the_next_offered_method_is_used(self) -> None:
        session = self.client.connect(
            cookie="forged", authid="alice", ticket="alice-ticket", authmethods=["cookie", "ticket"]
        )
        self.assertEqual((session.authid, session.authmethod), ("alice", "ticket"))

    def test_after_logout_the_cookie_is_denied(self) -> None:
        self.client.post("/logout", headers={"Authorization": f"Bearer {self.token}"})
        with self.assertRaises(SessionClosed):
            self.client.connect(cookie=self.token)

    def test_rejoin_after_goodbye_uses_the_same_handshake(self) -> None:
        session = self.client.connect(cookie=self.token)
        session.leave()
        session.join(self.app.realm, authmethods=["cookie"])
        self.assertEqual((session.authid, session.authmethod), ("dave", "cookie"))


class LogoutTests(SynchronousTestCase):
    """``app.logout`` ends the WAMP sessions opened with the REST session it ends; nothing else."""

    def setUp(self) -> None:
        self.app = make_app()
        self.client = TestClient(self.app)
        self.token = self.login()

    def login(self) -> str:
        response = self.client.post("/login", json={"user": "dave", "password": "dave-password"})
        return str(response.json()["token"])

    def logout(self, token: str) -> None:
        TestClient(self.app).post("/logout", headers={"Authorization": f"Bearer {token}"})

    def test_logout_says_goodbye_logged_out_and_closes_the_connection(self) -> None:
        session = self.client.connect(cookie=self.token)
        self.logout(self.token)
        goodbye = last(session)
        self.assertIsInstance(goodbye, message.Goodbye)
        self.assertEqual(goodbye.reason, "sandstone.close.logged_out")
        self.assertTrue(session.transport_closed)
        self.assertEqual(self.app.router.sessions, {})

    def test_logout_ends_every_session_of_the_token_bearer_or_cookie(self) -> None:
        first = self.client.connect(cookie=self.token)
        second = self.client.connect(bearer=self.token)
        self.logout(self.token)
        self.assertTrue(first.transport_closed and second.transport_closed)

    def test_sessions_of_other_logins_stay(self) -> None:
        other = self.login()
        stays = self.client.connect(cookie=other)
        ticket = self.client.connect(authid="alice", ticket="alice-ticket")
        self.client.connect(cookie=self.token).subscribe("news")
        stays.subscribe("news")
        self.logout(self.token)
        self.assertEqual(set(self.app.router.sessions), {stays.id, ticket.id})
        self.assertFalse(stays.transport_closed)
        # The logged-out session's subscription left with it: one EVENT, to the session that stays.
        self.assertEqual(self.app.router.publish(Publication("news", ["hi"])), 1)

    def test_deleting_the_token_from_the_store_leaves_wamp_sessions_open(self) -> None:
        session = self.client.connect(cookie=self.token)
        self.app.session_store.delete(self.token)
        self.assertEqual(list(self.app.router.sessions), [session.id])
        self.assertFalse(session.transport_closed)

    def test_logout_with_an_unknown_token_closes_nothing(self) -> None:
        session = self.client.connect(cookie=self.token)
        self.logout("forged")
        self.assertFalse(session.transport_closed)

    def test_logout_is_logged_at_info(self) -> None:
        logs = LogCapture(self)
        session = self.client.connect(cookie=self.token)
        self.logout(self.token)
        [text] = logs.texts("closing session")
        self.assertIn(str(session.id), text)
        self.assertIn("sandstone.close.logged_out", text)


class RecordingTransport:
    """A session's transport that records what the router sends and whether it closed the connection."""

    def __init__(self) -> None:
        self.sent: list[message.Message] = []
        self.closed: str | None = None

    def send_message(self, msg: message.Message) -> None:
        self.sent.append(msg)

    def close_transport(self, reason: str) -> None:
        self.closed = reason


class SessionCloseTests(SynchronousTestCase):
    """``Session.close``: the router ends a session (what ``logout`` uses)."""

    def setUp(self) -> None:
        self.app = make_app(anonymous=True)
        self.transport = RecordingTransport()
        self.session = self.app.router.attach(self.transport)

    def hello(self, **details: Any) -> None:
        roles = {"subscriber": role.RoleSubscriberFeatures()}
        self.session.on_message(message.Hello(self.app.realm, roles, **details))

    def test_open_session_gets_goodbye_leaves_and_is_disconnected(self) -> None:
        self.hello()
        self.session.close("sandstone.close.logged_out", "logged out")
        goodbye = self.transport.sent[-1]
        self.assertIsInstance(goodbye, message.Goodbye)
        self.assertEqual((goodbye.reason, goodbye.message), ("sandstone.close.logged_out", "logged out"))
        self.assertEqual(self.transport.closed, "logged out")
        self.assertTrue(self.session.has_left)
        self.assertEqual(self.app.router.sessions, {})

    def test_session_not_open_yet_gets_abort(self) -> None:
        self.hello(authmethods=["wampcra"], authid="bob")  # waits for its AUTHENTICATE
        self.session.close("sandstone.close.logged_out", "logged out")
        self.assertIsInstance(self.transport.sent[-1], message.Abort)
        self.assertEqual(self.transport.closed, "logged out")

    def test_closing_twice_sends_nothing_more(self) -> None:
        self.hello()
        self.session.close("sandstone.close.logged_out")
        sent = len(self.transport.sent)
        self.session.close("sandstone.close.logged_out")
        self.assertEqual(len(self.transport.sent), sent)


class ReadmeExampleTests(SynchronousTestCase):
    """The authentication example of docs/guides/auth.md works as written."""

    def setUp(self) -> None:
        guide = Path(__file__).resolve().parent.parent / "docs" / "guides" / "auth.md"
        blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
        source = next(block for block in blocks if "@app.wampcra_user" in block)
        namespace: dict[str, Any] = {"__name__": "readme_auth_example"}
        exec(compile(source, str(guide), "exec"), namespace)
        self.client = TestClient(namespace["app"])

    def test_ticket(self) -> None:
        self.assertEqual(self.client.connect(authid="alice", ticket="s3cret").authrole, "user")

    def test_salted_wampcra(self) -> None:
        self.assertEqual(self.client.connect(authid="bob", secret="b0b-password").authrole, "editor")

    def test_anonymous_refused(self) -> None:
        self.assertRaises(SessionClosed, self.client.connect)


class ClusterDecoyTests(SynchronousTestCase):
    """With a cluster secret every node shows an unknown WAMP-CRA authid the same salt."""

    def decoy_salt(self, **options: Any) -> str | None:
        app = Sandstone()
        app.use_redis("redis://127.0.0.1:1/0", **options)  # not started: no connection is made
        return app.router.auth.wampcra_decoy.user("nobody").salt

    def test_nodes_with_one_secret_agree_on_the_decoy(self) -> None:
        one, two = self.decoy_salt(cluster_secret="s3cret"), self.decoy_salt(cluster_secret="s3cret")
        self.assertEqual(one, two)
        self.assertNotEqual(one, self.decoy_salt(cluster_secret="other"))

    def test_without_a_secret_each_process_has_its_own(self) -> None:
        self.patch(os, "environ", {})
        self.assertNotEqual(self.decoy_salt(), self.decoy_salt())
