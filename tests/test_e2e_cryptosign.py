"""End-to-end WAMP-Cryptosign over real TCP (and TLS) with autobahn-python's own client-side authenticator
(``autobahn.wamp.auth.AuthCryptoSign``): keys accepted and refused, fresh challenges, the identity reaching
the authorizer, TLS channel binding, and ``twistd sandstone --cryptosign-principals``."""

from __future__ import annotations

import json
import os
from typing import Any

from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.auth import AuthCryptoSign
from autobahn.wamp.types import ComponentConfig
from twisted.internet import defer, reactor, ssl
from twisted.internet.interfaces import IConnector

from sandstone import CryptosignDetails, CryptosignUser, Sandstone
from tests.support import SERIALIZERS, Client, ServerTestCase
from tests.test_e2e_twistd import TwistdTestCase
from tests.tls_certs import PKI, make_pki

DENIED = ("wamp.error.authentication_denied", "authentication failed")
NO_AUTH_METHOD = "wamp.error.no_auth_method"


class KeyPair:
    """A client's private key (hex, as autobahn takes it) and its public key."""

    def __init__(self) -> None:
        self.private = os.urandom(32).hex()
        self.public = AuthCryptoSign(privkey=self.private).authextra["pubkey"]


ALICE, BOB, STRANGER = KeyPair(), KeyPair(), KeyPair()


class CryptosignClient(Client):
    """An autobahn-python session authenticating with WAMP-Cryptosign through ``AuthCryptoSign``."""

    key: KeyPair = ALICE
    authid: str | None = None
    channel_binding: str | None = None
    tamper = False  # spoil the signature autobahn computes

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__(config)
        authextra = {} if self.channel_binding is None else {"channel_binding": self.channel_binding}
        self.authenticator = AuthCryptoSign(privkey=self.key.private, authextra=authextra)
        self.challenges: list[Any] = []
        self.left_with: tuple[str, str | None] | None = None

    def onConnect(self) -> None:
        self.join(
            self.config.realm,
            authmethods=["cryptosign"],
            authid=self.authid,
            authextra=self.authenticator.authextra,
        )

    def onChallenge(self, challenge: Any) -> Any:
        self.challenges.append(challenge)
        signature = self.authenticator.on_challenge(self, challenge)
        if self.tamper:
            signature.addCallback(lambda hex_: ("0" if hex_[0] != "0" else "1") + hex_[1:])
        return signature

    def onLeave(self, details: Any) -> None:
        self.left_with = (details.reason, details.message)
        super().onLeave(details)


def client_class(**attributes: Any) -> type[CryptosignClient]:
    return type("Configured", (CryptosignClient,), attributes)


class CryptosignTestCase(ServerTestCase):
    timeout = 20

    def open(
        self, cls: type[CryptosignClient], tls: ssl.IOpenSSLClientConnectionCreator | None = None
    ) -> Any:
        """Connect a client (over TLS with ``tls``); it is disconnected at cleanup."""
        session = cls(ComponentConfig("realm1"))
        scheme = "ws" if tls is None else "wss"
        factory = WampWebSocketClientFactory(
            lambda: session,
            url=f"{scheme}://localhost:{self.port}/ws",
            serializers=[SERIALIZERS["json"]()],
        )
        connector: IConnector
        if tls is None:
            connector = reactor.connectTCP("127.0.0.1", self.port, factory)
        else:
            connector = reactor.connectSSL("127.0.0.1", self.port, factory, tls)

        def cleanup() -> Any:
            connector.disconnect()
            return None if session.disconnected.called else session.disconnected

        self.addCleanup(cleanup)
        return session

    async def joined(self, cls: type[CryptosignClient], tls: Any = None) -> Any:
        return await self.open(cls, tls).joined

    async def refused(self, cls: type[CryptosignClient], tls: Any = None) -> Any:
        session = self.open(cls, tls)
        with self.assertRaises(RuntimeError):
            await session.joined
        await session.disconnected
        return session


def make_app() -> tuple[Sandstone, list[tuple[str, str | None, str | None]]]:
    """An app whose cryptosign lookup knows ALICE and BOB, and whose authorizer records who asks."""
    app = Sandstone(open_uris=True)
    asked: list[tuple[str, str | None, str | None]] = []
    users = {ALICE.public: CryptosignUser("alice", "user"), BOB.public: CryptosignUser("bob", "admin")}

    @app.cryptosign_user
    async def lookup(pubkey: str, realm: str, details: CryptosignDetails) -> CryptosignUser | None:
        return users.get(pubkey) if realm == "realm1" else None

    @app.authorizer
    def authorize(session: Any, action: str, uri: str, match: str) -> bool:
        asked.append((action, session.authid, session.authrole))
        return session.authrole == "admin" or action == "subscribe"

    return app, asked


class ClientAuthenticationTests(CryptosignTestCase):
    def setUp(self) -> None:
        self.app, self.asked = make_app()
        self.serve(self.app)

    @defer.inlineCallbacks
    def test_known_key_joins_and_its_identity_reaches_the_authorizer(self) -> Any:
        client = yield defer.Deferred.fromCoroutine(self.joined(client_class(key=BOB)))
        self.assertEqual(
            (client._authid, client._authrole, client._authmethod), ("bob", "admin", "cryptosign")
        )
        [challenge] = client.challenges
        self.assertEqual((challenge.method, len(challenge.extra["challenge"])), ("cryptosign", 64))
        yield client.record("news")
        yield client.publish("news", "hi", options=_acknowledged())
        self.assertEqual(self.asked, [("subscribe", "bob", "admin"), ("publish", "bob", "admin")])
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_the_authorizer_decides_by_the_lookups_role(self) -> Any:
        from autobahn.wamp.exception import ApplicationError

        client = yield defer.Deferred.fromCoroutine(self.joined(client_class(key=ALICE)))
        with self.assertRaises(ApplicationError) as caught:
            yield client.publish("news", "hi", options=_acknowledged())
        self.assertEqual(caught.exception.error, "wamp.error.not_authorized")
        self.assertEqual(self.asked, [("publish", "alice", "user")])
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_unknown_key_and_bad_signature_get_the_identical_abort(self) -> Any:
        unknown = yield defer.Deferred.fromCoroutine(self.refused(client_class(key=STRANGER)))
        tampered = yield defer.Deferred.fromCoroutine(self.refused(client_class(key=ALICE, tamper=True)))
        self.assertEqual(unknown.left_with, DENIED)
        self.assertEqual(tampered.left_with, DENIED)
        self.assertEqual(len(unknown.challenges), 1)  # challenged like a known key before the refusal
        self.assertEqual(self.app.router.sessions, {})

    @defer.inlineCallbacks
    def test_every_attempt_gets_a_fresh_challenge(self) -> Any:
        challenges = []
        for _ in range(3):
            client = yield defer.Deferred.fromCoroutine(self.joined(client_class(key=ALICE)))
            challenges.append(client.challenges[0].extra["challenge"])
            client.leave()
            yield client.left
        self.assertEqual(len(set(challenges)), 3)

    @defer.inlineCallbacks
    def test_channel_binding_without_tls_is_refused_clearly(self) -> Any:
        client = yield defer.Deferred.fromCoroutine(
            self.refused(client_class(key=ALICE, channel_binding="tls-unique"))
        )
        reason, text = client.left_with
        self.assertEqual(reason, NO_AUTH_METHOD)
        self.assertIn("channel binding 'tls-unique' needs a TLS connection", text)
        self.assertEqual(client.challenges, [])


def _acknowledged() -> Any:
    from autobahn.wamp.types import PublishOptions

    return PublishOptions(acknowledge=True, exclude_me=False)


class ChannelBindingTests(CryptosignTestCase):
    """tls-unique over real TLS: autobahn-python's client computes its channel id on its side, the router on
    its own, and the signature checks out only if both agree."""

    def setUp(self) -> None:
        self.app, _ = make_app()
        directory = self.mktemp()
        os.makedirs(directory)
        self.pki: PKI = make_pki(directory)

    def serve_tls(self, max_version: Any = None) -> None:
        with open(self.pki.server_cert, "rb") as cert, open(self.pki.server_key, "rb") as key:
            private = ssl.PrivateCertificate.loadPEM(cert.read() + key.read())
        options = ssl.CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            lowerMaximumSecurityTo=max_version,
        )
        self.serve(self.app, tls=options)

    def client_tls(self) -> Any:
        with open(self.pki.ca, "rb") as f:
            return ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(f.read()))

    @defer.inlineCallbacks
    def test_tls_unique_on_tls_1_2_binds_the_signature(self) -> Any:
        self.serve_tls(ssl.TLSVersion.TLSv1_2)
        cls = client_class(key=BOB, channel_binding="tls-unique")
        client = yield defer.Deferred.fromCoroutine(self.joined(cls, self.client_tls()))
        self.assertEqual((client._authid, client._authmethod), ("bob", "cryptosign"))
        self.assertEqual(client.challenges[0].extra["channel_binding"], "tls-unique")
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_signature_without_the_binding_is_denied(self) -> Any:
        self.serve_tls(ssl.TLSVersion.TLSv1_2)

        class Unbound(CryptosignClient):
            key = BOB

            def onConnect(self) -> None:  # asks for the binding, then signs as if it had not
                self.join(
                    self.config.realm,
                    authmethods=["cryptosign"],
                    authextra={"pubkey": BOB.public, "channel_binding": "tls-unique"},
                )

        client = yield defer.Deferred.fromCoroutine(self.refused(Unbound, self.client_tls()))
        self.assertEqual(client.left_with, DENIED)

    @defer.inlineCallbacks
    def test_without_binding_tls_is_fine(self) -> Any:
        self.serve_tls()
        client = yield defer.Deferred.fromCoroutine(self.joined(client_class(key=BOB), self.client_tls()))
        self.assertIsNone(client.challenges[0].extra["channel_binding"])
        client.leave()
        yield client.left

    @defer.inlineCallbacks
    def test_tls_unique_on_tls_1_3_is_refused_clearly(self) -> Any:
        self.serve_tls()  # TLS 1.3 with this client
        cls = client_class(key=BOB, channel_binding="tls-unique")
        client = yield defer.Deferred.fromCoroutine(self.refused(cls, self.client_tls()))
        reason, text = client.left_with
        self.assertEqual(reason, NO_AUTH_METHOD)
        self.assertIn("undefined for TLSv1.3", text)


class OpenRouterTests(TwistdTestCase, CryptosignTestCase):
    """``twistd sandstone --cryptosign-principals FILE``: the open router lets these keys in, no one else."""

    async def start_with_principals(self, data: Any) -> Any:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            json.dump(data, f)
        return await self.start("--cryptosign-principals", path)

    async def test_keys_in_the_file_join_with_their_identity(self) -> None:
        process = await self.start_with_principals({ALICE.public: {"authid": "alice", "authrole": "device"}})
        client = await self.joined(client_class(key=ALICE))
        self.assertEqual(
            (client._authid, client._authrole, client._authmethod), ("alice", "device", "cryptosign")
        )
        await client.record("com.example.news")  # the open router lets it use any URI
        client.leave()
        await client.left
        self.assertIn("cryptosign: 1 public keys from", process.output)

    async def test_crossbars_block_and_refusals(self) -> None:
        await self.start_with_principals(
            {"type": "static", "principals": {"bob": {"role": "backend", "authorized_keys": [BOB.public]}}}
        )
        client = await self.joined(client_class(key=BOB, authid="bob"))
        self.assertEqual((client._authid, client._authrole), ("bob", "backend"))
        client.leave()
        await client.left
        unknown = await self.refused(client_class(key=STRANGER))
        self.assertEqual(unknown.left_with, DENIED)
        anonymous = await self.refused(_AnonymousClient)
        self.assertEqual(anonymous.left_with[0], NO_AUTH_METHOD)


class _AnonymousClient(CryptosignClient):
    def onConnect(self) -> None:
        self.join(self.config.realm)
