"""End-to-end authentication over real TCP with autobahn-python clients: ticket, WAMP-CRA (plain and salted),
refusals and decoy challenges, a REST login (treq) whose cookie authenticates the WebSocket, and a REST logout
that ends the WebSocket sessions opened with it."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.auth import AuthWampCra, compute_wcs
from autobahn.wamp.types import ComponentConfig, PublishOptions
from twisted.internet import defer, reactor

from sandstone import CraUser, Credentials, Identity, MemorySessionStore, Sandstone
from sandstone._auth import CraDecoy
from tests.support import SERIALIZERS, Client, ServerTestCase, wait_until
from tests.test_auth import challenge_shape

DENIED = "wamp.error.authentication_denied"


def make_app() -> Sandstone:
    app = Sandstone(open_uris=True)
    users = {
        "bob": CraUser("bob-secret", "editor"),
        "carol": CraUser.from_password("carol-password", "admin", iterations=500, keylen=32),
    }

    @app.authenticator
    async def check(credentials: Credentials) -> Identity | None:
        if credentials.authid == "alice" and credentials.secret_is("alice-ticket"):
            return Identity("alice", "user")
        return None

    @app.wampcra_user
    def user(authid: str) -> CraUser | None:
        return users.get(authid)

    @app.route("/login", methods=["POST"])
    def login(request: Any) -> Any:
        body = json.loads(request.content.read())
        if body != {"user": "dave", "password": "dave-password"}:
            request.setResponseCode(401)
            return b""
        return json.dumps({"token": app.login(request, Identity("dave", "member"))})

    @app.route("/logout", methods=["POST"])
    def logout(request: Any) -> bytes:
        app.logout(request)
        return b""

    @app.route("/me")
    def me(request: Any) -> Any:
        identity = app.identity(request)
        return json.dumps(identity and {"authid": identity.authid, "authrole": identity.authrole})

    return app


class AuthClient(Client):
    """A client joining with the given auth methods and answering CHALLENGEs with its credentials."""

    authmethods: list[str] = []
    authid: str | None = None
    ticket: str | None = None
    secret: str | None = None
    salted = False  # answer WAMP-CRA with autobahn's AuthWampCra (which derives salted keys)

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__(config)
        self.challenges: list[Any] = []
        self.abort_reason: str | None = None
        self.abort_message: str | None = None

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=self.authmethods, authid=self.authid)

    def onChallenge(self, challenge: Any) -> str:
        self.challenges.append(challenge)
        if challenge.method == "ticket":
            return self.ticket or ""
        if self.salted:
            return AuthWampCra(authid=self.authid, secret=self.secret).on_challenge(self, challenge)
        return compute_wcs(self.secret or "", challenge.extra["challenge"]).decode("ascii")

    def onLeave(self, details: Any) -> None:
        self.abort_reason, self.abort_message = details.reason, details.message
        super().onLeave(details)


class PassiveClient(AuthClient):
    """A client that does not close its connection when its session ends: whatever closes it is the server."""

    def onLeave(self, details: Any) -> None:
        self.abort_reason, self.abort_message = details.reason, details.message
        if not self.left.called:
            self.left.callback(details)


def client_class(base: type[AuthClient] = AuthClient, **attributes: Any) -> type[AuthClient]:
    return type("Configured", (base,), attributes)


class AuthTestCase(ServerTestCase):
    def setUp(self) -> None:
        self.serve(make_app())

    def open(self, cls: type[AuthClient], headers: dict[str, str] | None = None) -> AuthClient:
        """Connect a client (with extra handshake headers); it is disconnected at cleanup."""
        session = cls(ComponentConfig(self.app.realm))
        factory = WampWebSocketClientFactory(
            lambda: session, url=self.ws_url, serializers=[SERIALIZERS["json"]()], headers=headers
        )
        connector = reactor.connectTCP(factory.host, factory.port, factory)

        def cleanup() -> Any:
            connector.disconnect()
            return None if session.disconnected.called else session.disconnected

        self.addCleanup(cleanup)
        return session

    async def joined(self, cls: type[AuthClient], headers: dict[str, str] | None = None) -> AuthClient:
        return await self.open(cls, headers).joined

    async def refused(self, cls: type[AuthClient]) -> AuthClient:
        session = self.open(cls)
        with self.assertRaises(RuntimeError):
            await session.joined
        await session.disconnected
        return session


class TicketTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_ticket_joins_with_the_hooks_identity(self) -> Any:
        cls = client_class(authmethods=["ticket"], authid="alice", ticket="alice-ticket")
        client = yield defer.Deferred.fromCoroutine(self.joined(cls))
        self.assertEqual((client._authid, client._authrole, client._authmethod), ("alice", "user", "ticket"))
        self.assertEqual([c.method for c in client.challenges], ["ticket"])
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_wrong_ticket_is_denied(self) -> Any:
        cls = client_class(authmethods=["ticket"], authid="alice", ticket="wrong")
        client = yield defer.Deferred.fromCoroutine(self.refused(cls))
        self.assertEqual(client.abort_reason, DENIED)


class WampCraTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_wampcra_joins(self) -> Any:
        cls = client_class(authmethods=["wampcra"], authid="bob", secret="bob-secret")
        client = yield defer.Deferred.fromCoroutine(self.joined(cls))
        self.assertEqual((client._authid, client._authrole, client._authmethod), ("bob", "editor", "wampcra"))
        challenge = json.loads(client.challenges[0].extra["challenge"])
        self.assertEqual(challenge["session"], client._session_id)
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_salted_wampcra_joins_with_autobahns_authenticator(self) -> Any:
        cls = client_class(authmethods=["wampcra"], authid="carol", secret="carol-password", salted=True)
        client = yield defer.Deferred.fromCoroutine(self.joined(cls))
        self.assertEqual((client._authid, client._authrole), ("carol", "admin"))
        self.assertEqual(client.challenges[0].extra["iterations"], 500)
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_wrong_and_unknown_users_get_the_same_refusal(self) -> Any:
        wrong = yield defer.Deferred.fromCoroutine(
            self.refused(client_class(authmethods=["wampcra"], authid="bob", secret="nope"))
        )
        unknown = yield defer.Deferred.fromCoroutine(
            self.refused(client_class(authmethods=["wampcra"], authid="nobody", secret="nope"))
        )
        self.assertEqual((wrong.abort_reason, wrong.abort_message), (DENIED, "authentication failed"))
        self.assertEqual(
            (unknown.abort_reason, unknown.abort_message), (wrong.abort_reason, wrong.abort_message)
        )

    @defer.inlineCallbacks
    def test_no_supported_method_is_refused(self) -> Any:
        client = yield defer.Deferred.fromCoroutine(self.refused(client_class(authmethods=["anonymous"])))
        self.assertEqual(client.abort_reason, "wamp.error.no_auth_method")


class LoginTestCase(AuthTestCase):
    async def log_in(self) -> tuple[str, str]:
        """POST /login over HTTP; returns (the Set-Cookie header's name=value, the bearer token)."""
        response = await self.http().post(
            f"{self.base_url}/login", json={"user": "dave", "password": "dave-password"}
        )
        self.assertEqual(response.code, 200)
        [set_cookie] = response.headers.getRawHeaders("set-cookie")
        token = json.loads(await response.content())["token"]
        return set_cookie.split(";", 1)[0], token


class CookieSessionTests(LoginTestCase):
    @defer.inlineCallbacks
    def test_rest_login_cookie_authenticates_the_websocket(self) -> Any:
        cookie, _ = yield defer.Deferred.fromCoroutine(self.log_in())
        client = yield defer.Deferred.fromCoroutine(
            self.joined(client_class(authmethods=["cookie"]), headers={"Cookie": cookie})
        )
        self.assertEqual((client._authid, client._authrole, client._authmethod), ("dave", "member", "cookie"))
        self.assertEqual(client.challenges, [])
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_bearer_token_authenticates_rest_and_websocket(self) -> Any:
        _, token = yield defer.Deferred.fromCoroutine(self.log_in())
        bearer = {"Authorization": f"Bearer {token}"}
        response = yield self.http().get(f"{self.base_url}/me", headers=bearer)
        self.assertEqual(json.loads((yield response.content())), {"authid": "dave", "authrole": "member"})
        client = yield defer.Deferred.fromCoroutine(self.joined(client_class(authmethods=["cookie"]), bearer))
        self.assertEqual(client._authid, "dave")
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_websocket_without_a_session_is_denied(self) -> Any:
        client = yield defer.Deferred.fromCoroutine(self.refused(client_class(authmethods=["cookie"])))
        self.assertEqual(client.abort_reason, DENIED)


class WampCraDecoyTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_unknown_authids_get_the_challenge_of_a_salted_user(self) -> Any:
        self.app.router.auth.wampcra_decoy = CraDecoy(iterations=500)  # the app's users' parameters
        challenges = {}
        for authid in ("carol", "nobody", "bob", "nemo"):  # a real salted, unknown, real unsalted, unknown
            cls = client_class(authmethods=["wampcra"], authid=authid, secret="wrong", salted=True)
            client = yield defer.Deferred.fromCoroutine(self.refused(cls))
            self.assertEqual(client.abort_reason, DENIED)
            [challenges[authid]] = client.challenges
        carol, nobody, nemo = (challenge_shape(challenges[a]) for a in ("carol", "nobody", "nemo"))
        self.assertEqual(nobody, nemo)
        self.assertEqual(nobody, carol)
        self.assertEqual(nobody[2:5], (None, 500, 32))  # no role before success
        self.assertIsNone(challenge_shape(challenges["bob"])[2])
        self.assertNotEqual(challenges["nobody"].extra["salt"], challenges["nemo"].extra["salt"])


class LogoutTests(LoginTestCase):
    @defer.inlineCallbacks
    def test_logout_ends_the_websocket_sessions_of_that_login_only(self) -> Any:
        cookie, _ = yield defer.Deferred.fromCoroutine(self.log_in())
        _, other = yield defer.Deferred.fromCoroutine(self.log_in())
        ended = yield defer.Deferred.fromCoroutine(
            self.joined(client_class(PassiveClient, authmethods=["cookie"]), headers={"Cookie": cookie})
        )
        stays = yield defer.Deferred.fromCoroutine(
            self.joined(client_class(authmethods=["cookie"]), headers={"Authorization": f"Bearer {other}"})
        )
        yield ended.record("news")
        yield stays.record("news")
        response = yield self.http().post(f"{self.base_url}/logout", headers={"Cookie": cookie})
        self.assertEqual(response.code, 200)
        details = yield ended.left.addTimeout(5, reactor)
        self.assertEqual((details.reason, details.message), ("sandstone.close.logged_out", "logged out"))
        # The server closed the WebSocket: this client never does by itself.
        yield ended.disconnected.addTimeout(5, reactor)
        self.assertEqual(list(self.app.router.sessions), [stays._session_id])
        yield stays.publish("news", "still here", options=PublishOptions(acknowledge=True, exclude_me=False))
        yield wait_until(lambda: stays.received["news"])
        self.assertEqual([r.payload for r in stays.received["news"]], ["still here"])
        self.assertEqual(ended.received["news"], [])
        stays.leave()
        yield stays.left


class SessionStoreCapTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_logins_beyond_the_cap_evict_the_oldest(self) -> Any:
        self.app.session_store = MemorySessionStore(max_sessions=3)
        tokens = []
        for _ in range(5):
            response = yield self.http().post(
                f"{self.base_url}/login", json={"user": "dave", "password": "dave-password"}
            )
            tokens.append(json.loads((yield response.content()))["token"])
        self.assertEqual(len(self.app.session_store), 3)
        identities = []
        for token in tokens:
            response = yield self.http().get(
                f"{self.base_url}/me", headers={"Authorization": f"Bearer {token}"}
            )
            identities.append(json.loads((yield response.content())))
        member = {"authid": "dave", "authrole": "member"}
        self.assertEqual(identities, [None, None, member, member, member])
