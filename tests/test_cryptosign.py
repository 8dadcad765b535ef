"""Tests for WAMP-Cryptosign (L{sandstone._cryptosign} and its flow in L{sandstone._auth}), driven through
in-memory sessions: challenges, signatures, refusals, principals tables, channel binding."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from typing import Any

from autobahn.wamp import message, types
from autobahn.wamp.cryptosign import CryptosignKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISystemHandle
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sandstone import (
    Credentials,
    CryptosignDetails,
    CryptosignPrincipals,
    CryptosignPrincipalsError,
    CryptosignUser,
    Identity,
    Sandstone,
)
from sandstone._auth import Hello
from sandstone._cryptosign import CryptosignUnavailable, SignedChallenge, channel_id, parse_public_key
from sandstone.testing import TestSession
from tests.test_auth import LogCapture
from tests.tls_certs import self_signed

HELLO = message.Hello.MESSAGE_TYPE
AUTHENTICATE = message.Authenticate.MESSAGE_TYPE
DENIED = ("wamp.error.authentication_denied", "authentication failed")
NO_AUTH_METHOD = "wamp.error.no_auth_method"
VIOLATION = "wamp.error.protocol_violation"


class Key:
    """A client's Ed25519 key pair."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.pubkey = self.private.public_key().public_bytes_raw().hex()

    def sign(self, challenge: message.Challenge, channel: bytes | None = None) -> str:
        """AUTHENTICATE's signature: the Ed25519 signature of the challenge (XORed with ``channel``), then
        what was signed, in hex."""
        signed = bytes.fromhex(challenge.extra["challenge"])
        if channel is not None:
            signed = bytes(a ^ b for a, b in zip(signed, channel, strict=True))
        return (self.private.sign(signed) + signed).hex()


ALICE, BOB, STRANGER = Key(), Key(), Key()


def make_app(**options: Any) -> Sandstone:
    principals = {
        ALICE.pubkey: ("alice", "user"),
        BOB.pubkey: CryptosignUser("bob", "admin", {"team": "ops"}),
    }
    return Sandstone(open_uris=True, cryptosign_principals=principals, **options)


def hello(session: TestSession, authextra: dict[str, Any], *methods: str, authid: str | None = None) -> None:
    details: dict[str, Any] = {
        "roles": {"subscriber": {}},
        "authmethods": list(methods or ["cryptosign"]),
        "authextra": authextra,
    }
    if authid is not None:
        details["authid"] = authid
    session.send_raw([HELLO, "realm1", details])


def last(session: TestSession) -> Any:
    return session.messages[-1]


def abort_of(session: TestSession) -> tuple[str, str | None]:
    abort = last(session)
    assert isinstance(abort, message.Abort), abort
    assert session.transport_closed
    return abort.reason, abort.message


class CryptosignTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = make_app()

    def challenged(self, key: Key, **hello_options: Any) -> tuple[TestSession, message.Challenge]:
        session = TestSession(self.app)
        hello(session, {"pubkey": key.pubkey}, **hello_options)
        challenge = last(session)
        self.assertIsInstance(challenge, message.Challenge)
        return session, challenge

    def authenticate(self, session: TestSession, signature: Any) -> Any:
        session.send_raw([AUTHENTICATE, signature, {}])
        return last(session)

    def refused(self, key: Key, signature: Any = None) -> tuple[str, str | None]:
        session, challenge = self.challenged(key)
        self.authenticate(session, key.sign(challenge) if signature is None else signature)
        return abort_of(session)


class SignatureTests(CryptosignTestCase):
    def test_known_key_is_welcomed_with_its_principals_identity(self) -> None:
        session, challenge = self.challenged(ALICE)
        welcome = self.authenticate(session, ALICE.sign(challenge))
        self.assertIsInstance(welcome, message.Welcome)
        self.assertEqual(
            (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider),
            ("alice", "user", "cryptosign", "static"),
        )
        self.assertEqual(self.app.router.sessions[session.id].authmethod, "cryptosign")

    def test_challenge_is_32_random_bytes_in_hex_without_binding(self) -> None:
        _, challenge = self.challenged(ALICE)
        self.assertEqual(challenge.method, "cryptosign")
        self.assertEqual(set(challenge.extra), {"challenge", "channel_binding"})
        self.assertEqual(len(bytes.fromhex(challenge.extra["challenge"])), 32)
        self.assertIsNone(challenge.extra["channel_binding"])

    def test_every_attempt_gets_a_fresh_challenge(self) -> None:
        challenges = {self.challenged(ALICE)[1].extra["challenge"] for _ in range(5)}
        self.assertEqual(len(challenges), 5)

    def test_unknown_key_gets_a_challenge_like_a_known_one(self) -> None:
        _, known = self.challenged(ALICE)
        _, unknown = self.challenged(STRANGER)
        self.assertEqual(set(unknown.extra), set(known.extra))
        self.assertEqual(len(unknown.extra["challenge"]), len(known.extra["challenge"]))

    def test_unknown_key_and_bad_signature_get_the_identical_abort(self) -> None:
        unknown = self.refused(STRANGER)
        bad_signature = self.refused(ALICE, signature=BOB.sign(self.challenged(ALICE)[1]))
        self.assertEqual(unknown, DENIED)
        self.assertEqual(bad_signature, DENIED)
        self.assertEqual(self.app.router.sessions, {})

    def test_the_abort_is_the_one_of_every_other_method(self) -> None:
        @self.app.authenticator
        def check(credentials: Credentials) -> Identity | None:
            return None

        ticket = TestSession(self.app)
        ticket.send_raw(
            [HELLO, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"], "authid": "x"}]
        )
        self.authenticate(ticket, "wrong")
        self.assertEqual(abort_of(ticket), self.refused(STRANGER))

    def test_signature_by_another_key_is_denied(self) -> None:
        session, challenge = self.challenged(ALICE)
        self.authenticate(session, STRANGER.sign(challenge))
        self.assertEqual(abort_of(session), DENIED)

    def test_signature_of_another_sessions_challenge_is_denied(self) -> None:
        first, challenge = self.challenged(ALICE)
        signature = ALICE.sign(challenge)
        second, _ = self.challenged(ALICE)
        self.authenticate(second, signature)  # replayed on another connection
        self.assertEqual(abort_of(second), DENIED)
        self.assertIsInstance(self.authenticate(first, signature), message.Welcome)
        self.assertEqual(list(self.app.router.sessions), [first.id])

    def test_authenticate_again_after_welcome_is_a_protocol_violation(self) -> None:
        session, challenge = self.challenged(ALICE)
        signature = ALICE.sign(challenge)
        self.assertIsInstance(self.authenticate(session, signature), message.Welcome)
        self.authenticate(session, signature)
        self.assertEqual(abort_of(session)[0], VIOLATION)
        self.assertEqual(self.app.router.sessions, {})

    def test_authenticate_before_the_challenge_is_a_protocol_violation(self) -> None:
        gate: Deferred[CryptosignUser | None] = Deferred()
        self.app.cryptosign_user(lambda pubkey, realm, details: gate)
        session = TestSession(self.app)
        hello(session, {"pubkey": ALICE.pubkey})
        self.authenticate(session, "00" * 96)  # while the lookup runs: no CHALLENGE was sent
        self.assertEqual(abort_of(session)[0], VIOLATION)
        gate.callback(CryptosignUser("alice", "user"))
        self.assertEqual([type(m) for m in session.messages], [message.Abort])
        self.assertEqual(self.app.router.sessions, {})

    def test_unknown_key_with_a_valid_signature_is_denied(self) -> None:
        self.assertEqual(self.refused(STRANGER), DENIED)

    def test_signed_message_other_than_the_challenge_is_denied(self) -> None:
        session, challenge = self.challenged(ALICE)
        valid = bytes.fromhex(ALICE.sign(challenge))
        self.authenticate(session, (valid[:64] + bytes(32)).hex())
        self.assertEqual(abort_of(session), DENIED)

    def test_upper_case_key_is_the_same_key(self) -> None:
        session = TestSession(self.app)
        hello(session, {"pubkey": ALICE.pubkey.upper()})
        self.assertIsInstance(self.authenticate(session, ALICE.sign(last(session))), message.Welcome)

    def test_extra_of_the_user_is_welcomes_authextra(self) -> None:
        session, challenge = self.challenged(BOB)
        welcome = self.authenticate(session, BOB.sign(challenge))
        self.assertEqual((welcome.authid, welcome.authextra), ("bob", {"team": "ops"}))

    def test_welcome_has_no_authextra_when_the_user_has_none(self) -> None:
        session, challenge = self.challenged(ALICE)
        session.send_raw([AUTHENTICATE, ALICE.sign(challenge), {}])
        self.assertIsNone(last(session).authextra)

    def test_autobahn_js_nulls_in_authextra_are_no_requests(self) -> None:
        session = TestSession(self.app)
        authextra = {"pubkey": ALICE.pubkey, "trustroot": None, "challenge": None, "channel_binding": None}
        hello(session, authextra)
        self.assertIsInstance(self.authenticate(session, ALICE.sign(last(session))), message.Welcome)


class MalformedInputTests(CryptosignTestCase):
    """Bad input is logged and refused with the one ABORT of every refusal, never a traceback."""

    def setUp(self) -> None:
        super().setUp()
        self.logged = LogCapture(self)

    def refused_hello(self, authextra: dict[str, Any]) -> tuple[str, str | None]:
        session = TestSession(self.app)
        hello(session, authextra)
        return abort_of(session)

    def assertNoTraceback(self) -> None:
        self.assertEqual([e for e in self.logged.events if e.get("log_failure") is not None], [])

    def test_malformed_public_keys_are_refused_and_logged(self) -> None:
        for pubkey in ("zz" * 32, ALICE.pubkey[:-2], ALICE.pubkey + "00", 42, None, "é" * 64, "x" * 10_000):
            authextra = {} if pubkey is None else {"pubkey": pubkey}
            self.assertEqual(self.refused_hello(authextra), DENIED, pubkey)
        self.assertEqual(len(self.logged.texts("is not an Ed25519 public key")), 7)
        self.assertTrue(all(len(t) < 400 for t in self.logged.texts("is not an Ed25519 public key")))
        self.assertNoTraceback()

    def test_malformed_signatures_are_refused_and_logged(self) -> None:
        session, challenge = self.challenged(ALICE)
        good = ALICE.sign(challenge)
        for signature, log_text in (
            (good[:-2], "not 96 bytes in hex"),
            (good + "00", "not 96 bytes in hex"),
            ("zz" + good[2:], "not hex"),
            ("", "not 96 bytes in hex"),
            ("é" * 192, "not hex"),
        ):
            self.assertEqual(self.refused(ALICE, signature=signature), DENIED, signature)
            self.assertTrue(self.logged.texts(log_text), log_text)
        self.assertNoTraceback()

    def test_bad_signature_is_logged_with_the_key(self) -> None:
        self.refused(ALICE, signature=STRANGER.sign(self.challenged(ALICE)[1]))
        [line] = self.logged.texts("bad signature")
        self.assertIn(ALICE.pubkey, line)

    def test_unknown_key_is_logged_with_the_key(self) -> None:
        self.refused(STRANGER)
        [line] = self.logged.texts("no user holds this public key")
        self.assertIn(STRANGER.pubkey, line)


class LookupTests(CryptosignTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.calls: list[tuple[str, str, CryptosignDetails]] = []

    def record(self, user: Any) -> None:
        def lookup(pubkey: str, realm: str, details: CryptosignDetails) -> Any:
            self.calls.append((pubkey, realm, details))
            return user

        self.app.cryptosign_user(lookup)

    def test_hook_gets_the_key_the_realm_and_the_hellos_details(self) -> None:
        self.record(CryptosignUser("carol", "editor"))
        session = TestSession(self.app)
        hello(session, {"pubkey": ALICE.pubkey.upper(), "custom": 1}, authid="carol")
        self.assertEqual(
            self.calls,
            [
                (
                    ALICE.pubkey,
                    "realm1",
                    CryptosignDetails("carol", {"pubkey": ALICE.pubkey.upper(), "custom": 1}),
                )
            ],
        )
        welcome = self.authenticate(session, ALICE.sign(last(session)))
        self.assertEqual(
            (welcome.authid, welcome.authrole, welcome.authprovider), ("carol", "editor", "dynamic")
        )

    def test_hook_answering_none_is_denied_after_the_signature(self) -> None:
        self.record(None)
        session, challenge = self.challenged(ALICE)
        self.assertEqual((self.authenticate(session, ALICE.sign(challenge)).reason,), (DENIED[0],))

    def test_async_hook(self) -> None:
        @self.app.cryptosign_user
        async def lookup(pubkey: str, realm: str, details: CryptosignDetails) -> CryptosignUser | None:
            return CryptosignUser("dave", "async")

        session, challenge = self.challenged(ALICE)
        self.assertEqual(self.authenticate(session, ALICE.sign(challenge)).authrole, "async")

    def test_hook_returning_something_else_is_denied_and_logged(self) -> None:
        logged = LogCapture(self)
        self.record(("alice", "user"))
        session = TestSession(self.app)
        hello(session, {"pubkey": ALICE.pubkey})
        self.assertEqual(abort_of(session), DENIED)
        self.assertTrue(logged.texts("not a CryptosignUser or None"))

    def test_hook_raising_is_denied_and_logged(self) -> None:
        logged = LogCapture(self)

        @self.app.cryptosign_user
        def lookup(pubkey: str, realm: str, details: CryptosignDetails) -> CryptosignUser | None:
            raise RuntimeError("database down")

        session = TestSession(self.app)
        hello(session, {"pubkey": ALICE.pubkey})
        self.assertEqual(abort_of(session), DENIED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(logged.texts("authentication hook"))

    def test_user_needs_an_authid_and_an_authrole(self) -> None:
        for authid, authrole in (("", "user"), ("alice", ""), (None, "user")):
            with self.assertRaises(ValueError):
                CryptosignUser(authid, authrole)  # type: ignore[arg-type]

    def test_user_extra_must_travel_on_every_serializer(self) -> None:
        with self.assertRaises(ValueError) as caught:
            CryptosignUser("alice", "user", {"since": datetime.date(2024, 1, 1)})
        self.assertIn("extra['since']", str(caught.exception))


class MethodTests(SynchronousTestCase):
    def test_announced_only_when_configured(self) -> None:
        self.assertNotIn("cryptosign", Sandstone().router.auth.methods())
        self.assertIn("cryptosign", make_app().router.auth.methods())

    def test_not_offered_without_a_lookup(self) -> None:
        session = TestSession(Sandstone())
        hello(session, {"pubkey": ALICE.pubkey})
        self.assertEqual(abort_of(session)[0], NO_AUTH_METHOD)

    def test_decorator_enables_it(self) -> None:
        app = Sandstone()
        app.cryptosign_user(lambda pubkey, realm, details: CryptosignUser("x", "y"))
        session = TestSession(app)
        hello(session, {"pubkey": ALICE.pubkey})
        self.assertIsInstance(last(session), message.Challenge)

    def test_first_offered_method_wins(self) -> None:
        app = make_app(anonymous=True)
        for methods, expected in (
            (["cryptosign", "anonymous"], message.Challenge),
            (["anonymous"], message.Welcome),
        ):
            session = TestSession(app)
            hello(session, {"pubkey": ALICE.pubkey}, *methods)
            self.assertIsInstance(last(session), expected)

    def test_principals_instance_is_taken_as_it_is(self) -> None:
        principals = CryptosignPrincipals({ALICE.pubkey: ("alice", "user")})
        app = Sandstone(cryptosign_principals=principals)
        self.assertIs(app.router.auth.cryptosign_user, principals)


class PrincipalsTests(SynchronousTestCase):
    def details(self, authid: str | None = None) -> CryptosignDetails:
        return CryptosignDetails(authid, {})

    def write(self, data: Any) -> str:
        fd, path = tempfile.mkstemp(suffix=".json")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        return path

    def test_lookup_by_key(self) -> None:
        principals = CryptosignPrincipals({ALICE.pubkey.upper(): ("alice", "user")})
        self.assertEqual(principals(ALICE.pubkey, "realm1", self.details()), CryptosignUser("alice", "user"))
        self.assertIsNone(principals(BOB.pubkey, "realm1", self.details()))
        self.assertEqual((len(principals), list(principals)), (1, [ALICE.pubkey]))

    def test_hello_authid_must_be_the_keys(self) -> None:
        principals = CryptosignPrincipals({ALICE.pubkey: ("alice", "user")})
        self.assertIsNotNone(principals(ALICE.pubkey, "realm1", self.details("alice")))
        self.assertIsNone(principals(ALICE.pubkey, "realm1", self.details("admin")))

    def test_hello_naming_another_authid_is_denied(self) -> None:
        session = TestSession(make_app())
        hello(session, {"pubkey": ALICE.pubkey}, authid="bob")
        session.send_raw([AUTHENTICATE, ALICE.sign(last(session)), {}])
        self.assertEqual(abort_of(session), DENIED)

    def test_bad_tables_are_refused_saying_why(self) -> None:
        for table, fragment in (
            ({"abc": ("alice", "user")}, "'abc' is not an Ed25519 public key"),
            ({ALICE.pubkey: ("alice",)}, 'expected ("authid", "authrole")'),
            ({ALICE.pubkey: ("", "user")}, "authid must be a non-empty string"),
            ({ALICE.pubkey: ("a", "b"), ALICE.pubkey.upper(): ("c", "d")}, "listed twice"),
        ):
            with self.assertRaises(CryptosignPrincipalsError) as caught:
                CryptosignPrincipals(table)  # type: ignore[arg-type]
            self.assertIn(fragment, str(caught.exception))

    def test_file_in_sandstones_format(self) -> None:
        path = self.write({ALICE.pubkey: {"authid": "alice", "authrole": "user", "extra": {"n": 1}}})
        principals = CryptosignPrincipals.from_file(path)
        self.assertEqual(
            principals(ALICE.pubkey, "realm1", self.details()), CryptosignUser("alice", "user", {"n": 1})
        )

    def test_file_with_crossbars_cryptosign_block(self) -> None:
        path = self.write(
            {
                "type": "static",
                "principals": {
                    "alice": {
                        "realm": "realm1",
                        "role": "user",
                        "authorized_keys": [ALICE.pubkey, BOB.pubkey],
                    },
                    "carol": {"role": "admin", "authorized_keys": [STRANGER.pubkey]},
                },
            }
        )
        principals = CryptosignPrincipals.from_file(path)
        self.assertEqual(principals(BOB.pubkey, "realm1", self.details()), CryptosignUser("alice", "user"))
        self.assertIsNone(principals(BOB.pubkey, "realm2", self.details()))  # alice is for realm1 only
        self.assertEqual(
            principals(STRANGER.pubkey, "realm2", self.details()), CryptosignUser("carol", "admin")
        )

    def test_bad_files_are_refused_saying_which_and_why(self) -> None:
        for data, fragment in (
            ("{not json", "is not valid JSON"),
            ([], "expected a JSON object"),
            ({ALICE.pubkey: ["alice", "user"]}, 'expected {"authid": "...", "authrole": "..."}'),
            ({ALICE.pubkey: {"authid": "alice", "role": "user"}}, "expected {"),
            ({ALICE.pubkey: {"authid": "alice"}}, "authrole must be a non-empty string"),
            ({"type": "dynamic", "principals": {}}, 'only "type": "static"'),
            ({"principals": {"alice": {"role": "user"}}}, "principal 'alice': no authorized_keys list"),
            (
                {"principals": {"alice": {"role": "user", "authorized_keys": ["00"]}}},
                "'00' is not an Ed25519",
            ),
            ({"principals": {"a": {"role": "u", "authorized_keys": [ALICE.pubkey], "realm": 1}}}, "realm"),
        ):
            path = self.write(data)
            with self.assertRaises(CryptosignPrincipalsError) as caught:
                CryptosignPrincipals.from_file(path)
            self.assertIn(fragment, str(caught.exception))
            self.assertIn(path, str(caught.exception))

    def test_missing_file_is_refused_saying_which(self) -> None:
        with self.assertRaises(CryptosignPrincipalsError) as caught:
            CryptosignPrincipals.from_file("/nonexistent/principals.json")
        self.assertIn("/nonexistent/principals.json", str(caught.exception))


def challenge_of(hex_challenge: str) -> types.Challenge:
    return types.Challenge("cryptosign", {"challenge": hex_challenge})


class CompatibilityTests(SynchronousTestCase):
    """The signatures autobahn-python's client makes, and the spec's test vectors, check out."""

    # WAMP spec, "WAMP-Cryptosign", "Test Vectors" (private key, challenge, channel id, signature).
    VECTORS = [
        (
            "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510",
            "ff" * 32,
            None,
            "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2"
            "cf067ad566a6b7b728e5d03" + "ff" * 32,
        ),
        (
            "d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd",
            "b26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d",
            None,
            "d4209ad10d5aff6bfbc009d7e924795de138a63515efc7afc6b01b7fe5201372190374886a70207b042294af5bd64ce725cd8dce"
            "b344e6d11c09d1aaaf4d660fb26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d",
        ),
        (
            "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510",
            "ff" * 32,
            "62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff",
            "9b6f41540c9b95b4b7b281c3042fa9c54cef43c842d62ea3fd6030fcb66e70b3e80d49d44c29d1635da9348d02ec93f3ed1ef227"
            "dfb59a07b580095c2b82f80f9d16ca518aa0c2b707f2b2a609edeca73bca8dd59817a633f35574ac6fd80d00",
        ),
        (
            "6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b",
            "b05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2",
            "62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff",
            "ee3c7644fd8070532bc1fde3d70d742267da545d8c8f03e63bda63f1ad4214f4d2c4bfdb4eb9526def42deeb7e31602a6ff99eba"
            "893e0a4ad4d45892ca75e608d2b75e24a189a7f78ca776ba36fc53f6c3e31c32f251f2c524f0a44202f2902d",
        ),
    ]

    def test_spec_test_vectors(self) -> None:
        for private, challenge, channel, signature in self.VECTORS:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private)).public_key()
            bound = None if channel is None else bytes.fromhex(channel)
            signed = SignedChallenge(bound, None, challenge=bytes.fromhex(challenge))
            self.assertIsNone(signed.problem(key, signature), signature)
            other = SignedChallenge(None if bound else bytes(32), None, challenge=bytes.fromhex(challenge))
            if bound is not None:  # the same signature without the binding is not the challenge's
                self.assertIsNotNone(other.problem(key, signature))

    def test_autobahn_python_signatures_check_out(self) -> None:
        key = CryptosignKey.from_bytes(os.urandom(32))
        parsed = parse_public_key(key.public_key())
        assert parsed is not None
        channel = os.urandom(32)
        for bound in (None, channel):
            signed = SignedChallenge(bound, None)
            d = key.sign_challenge(
                challenge_of(signed.extra["challenge"]),
                channel_id=bound,
                channel_id_type=None if bound is None else "tls-unique",
            )
            self.assertIsNone(signed.problem(parsed[1], self.successResultOf(d)))


# channel binding


@implementer(ISystemHandle)
class Handle:
    """A Twisted transport as far as channel binding looks at it: its system handle."""

    def __init__(self, handle: object) -> None:
        self.handle = handle

    def getHandle(self) -> object:
        return self.handle


def tls_pair(max_version: int | None) -> tuple[SSL.Connection, SSL.Connection]:
    """A client and a server pyOpenSSL connection past their handshake, in memory."""
    key, certificate = self_signed()
    server_context = SSL.Context(SSL.TLS_METHOD)
    server_context.use_certificate(certificate)
    server_context.use_privatekey(key)
    if max_version is not None:
        server_context.set_max_proto_version(max_version)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    for _ in range(20):
        for connection in (client, server):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                pass
        moved = _pump(client, server) + _pump(server, client)
        if not moved and client.get_finished() and server.get_peer_finished():
            return client, server
    raise AssertionError("the in-memory TLS handshake did not finish")


def _pump(source: SSL.Connection, target: SSL.Connection) -> int:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return 0
    target.bio_write(data)
    return len(data)


class ChannelBindingTests(SynchronousTestCase):
    def test_no_binding_asked_for(self) -> None:
        self.assertIsNone(channel_id(None, None))

    def test_tls_unique_on_tls_1_2_is_the_hash_of_the_clients_finished_message(self) -> None:
        client, server = tls_pair(SSL.TLS1_2_VERSION)
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.2")
        # What autobahn-python's client computes on its side (twisted/util.py, transport_channel_id).
        expected = hashlib.sha256(client.get_finished()).digest()
        self.assertEqual(channel_id("tls-unique", Handle(server)), expected)

    def test_tls_unique_on_tls_1_3_is_refused(self) -> None:
        _, server = tls_pair(None)
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.3")
        with self.assertRaises(CryptosignUnavailable) as caught:
            channel_id("tls-unique", Handle(server))
        self.assertIn("undefined for TLSv1.3", str(caught.exception))

    def test_tls_unique_without_tls_is_refused(self) -> None:
        for connection in (None, object(), Handle(object())):
            with self.assertRaises(CryptosignUnavailable) as caught:
                channel_id("tls-unique", connection)
            self.assertIn("needs a TLS connection", str(caught.exception))

    def test_other_binding_types_are_refused(self) -> None:
        for binding in ("tls-exporter", "x" * 1000, 7):
            with self.assertRaises(CryptosignUnavailable) as caught:
                channel_id(binding, None)
            self.assertIn("is not supported here", str(caught.exception))
            self.assertLess(len(str(caught.exception)), 200)

    def test_binding_on_a_plain_connection_is_a_clear_abort(self) -> None:
        session = TestSession(make_app())
        hello(session, {"pubkey": ALICE.pubkey, "channel_binding": "tls-unique"})
        reason, text = abort_of(session)
        self.assertEqual(reason, NO_AUTH_METHOD)
        self.assertIn("channel binding 'tls-unique' needs a TLS connection", text or "")

    def test_binding_unavailable_falls_back_to_the_next_method_offered(self) -> None:
        session = TestSession(make_app(anonymous=True))
        hello(session, {"pubkey": ALICE.pubkey, "channel_binding": "tls-unique"}, "cryptosign", "anonymous")
        self.assertEqual(last(session).authmethod, "anonymous")

    def test_router_authentication_is_refused_clearly(self) -> None:
        session = TestSession(make_app())
        hello(session, {"pubkey": ALICE.pubkey, "challenge": "00" * 32})
        reason, text = abort_of(session)
        self.assertEqual(reason, NO_AUTH_METHOD)
        self.assertIn("router authentication", text or "")

    def test_tls_1_2_binding_flows_into_the_challenge(self) -> None:
        client, server = tls_pair(SSL.TLS1_2_VERSION)
        channel = hashlib.sha256(client.get_finished()).digest()
        app = make_app()
        seen: list[CryptosignDetails] = []
        principals = app.router.auth.cryptosign_user
        assert principals is not None

        def lookup(pubkey: str, realm: str, details: CryptosignDetails) -> Any:
            seen.append(details)
            return principals(pubkey, realm, details)

        app.cryptosign_user(lookup)
        auth = app.router.auth

        def attempt(bound: bytes | None) -> Any:
            authextra = {"pubkey": ALICE.pubkey, "channel_binding": "tls-unique"}
            step = self.successResultOf(
                auth.start(Hello(["cryptosign"], None, authextra, None, 1, "realm1", Handle(server)))
            )
            self.assertEqual(step.extra["channel_binding"], "tls-unique")
            signature = ALICE.sign(message.Challenge("cryptosign", step.extra), bound)
            return step.verify(signature, {})

        self.assertEqual(self.successResultOf(attempt(channel)).identity, Identity("alice", "user"))
        self.failureResultOf(attempt(None))  # signed without the binding: denied
        self.assertEqual(seen[0].channel_binding, "tls-unique")
