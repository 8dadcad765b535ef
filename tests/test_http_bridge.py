"""Tests for sandstone._http_bridge: Crossbar's HTTP Publisher and HTTP Caller, driven in memory.

Signed requests are built here the way Crossbar's HTTP bridge clients build them (crossbarhttp's
``_compute_signature``, Crossbar's own test helper ``makeSignedArguments``): HMAC-SHA256 keyed with the
secret, updated with key, timestamp, seq, nonce and body in turn, URL-safe base64 with padding.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone, Topic
from sandstone._http_bridge import (
    CALLER,
    KEYS_ENV,
    PUBLISHER,
    BridgeKeysError,
    HttpBridge,
    NonceMemory,
    bridge_options,
    keys_from_environment,
    load_keys,
    parse_keys,
)
from sandstone._tap import Options
from sandstone.testing import TestClient, TestResponse

JSON = {"Content-Type": "application/json"}
KEYS = {"app1": "kkjH68GiuUZ", "app2": "other-secret"}


def utc_stamp(offset: float = 0.0, digits: int = 6) -> str:
    """A timestamp as Crossbar's clients send it: UTC, ``%Y-%m-%dT%H:%M:%S.%fZ`` (``digits`` of fraction:
    crossbarhttp sends 6, autobahn's ``utcnow()`` 3)."""
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    text = now.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - (6 - digits)] + "Z"


def signed_query(
    body: bytes,
    key: str = "app1",
    secret: str | None = None,
    *,
    timestamp: str | None = None,
    seq: int | str = 1,
    nonce: int | str | None = None,
    signature: str | None = None,
    leave_out: str | None = None,
) -> str:
    """The query string of a signed request, computed as crossbarhttp's ``_compute_signature`` does."""
    secret = KEYS.get(key, "x") if secret is None else secret
    timestamp = utc_stamp() if timestamp is None else timestamp
    nonce = random.randint(0, 2**53) if nonce is None else nonce
    if signature is None:
        hm = hmac.new(secret.encode(), None, hashlib.sha256)
        hm.update(key.encode())
        hm.update(timestamp.encode())
        hm.update(str(seq).encode())
        hm.update(str(nonce).encode())
        hm.update(body)
        signature = base64.urlsafe_b64encode(hm.digest()).decode()
    params = {
        "timestamp": timestamp,
        "seq": str(seq),
        "nonce": str(nonce),
        "signature": signature,
        "key": key,
    }
    if leave_out is not None:
        del params[leave_out]
    return urlencode(params)


def body_of(document: Any) -> bytes:
    return json.dumps(document).encode()


class BridgeTestCase(SynchronousTestCase):
    """An open app with the bridge at /publish and /call, an in-memory client, and a subscriber to every
    URI (``self.events``)."""

    bridge_options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.app = self.make_app()
        self.client = TestClient(self.app)
        self.addCleanup(self.client.close)
        self.subscriber = self.client.connect()
        self.everything = self.subscriber.subscribe("", match="prefix")

    def make_app(self) -> Sandstone:
        app = Sandstone(anonymous=True, open_uris=True)
        app.http_publisher("/publish", **self.bridge_options)
        app.http_caller("/call", **self.bridge_options)
        return app

    @property
    def events(self) -> list[Any]:
        return self.everything.events

    def post(
        self, path: str, document: Any = None, *, data: bytes | None = None, **kwargs: Any
    ) -> TestResponse:
        body = data if data is not None else body_of(document)
        headers = kwargs.pop("headers", JSON)
        return self.client.request("POST", path, data=body, headers=headers, **kwargs)

    def assert_error(self, response: TestResponse, status: int, uri: str, *words: str) -> dict[str, Any]:
        self.assertEqual(response.code, status, response.body)
        body = response.json()
        self.assertEqual(set(body), {"error", "args", "kwargs"})
        self.assertEqual(body["error"], uri)
        text = " ".join(str(a) for a in body["args"])
        for word in words:
            self.assertIn(word, text)
        self.assertEqual(response.headers["Content-Type"], ["application/json"])
        return body


class PublisherTests(BridgeTestCase):
    def test_publish_delivers_the_event_and_answers_its_id(self) -> None:
        response = self.post(
            "/publish", {"topic": "com.example.news", "args": ["hello", 2], "kwargs": {"source": "curl"}}
        )
        self.assertEqual(response.code, 200)
        [event] = self.events
        self.assertEqual(response.json(), {"id": event.publication})
        self.assertEqual(
            (event.topic, event.args, event.kwargs), ("com.example.news", ["hello", 2], {"source": "curl"})
        )
        self.assertEqual(response.headers["Cache-Control"], ["no-store"])

    def test_publish_without_payload(self) -> None:
        response = self.post("/publish", {"topic": "com.example.ping", "args": [], "kwargs": {}})
        self.assertEqual(response.code, 200)
        [event] = self.events
        self.assertEqual((event.args, event.kwargs), ([], {}))

    def test_put_publishes_too(self) -> None:
        response = self.client.request(
            "PUT", "/publish", data=body_of({"topic": "com.example.a"}), headers=JSON
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.events), 1)

    def test_no_content_type_is_accepted(self) -> None:
        response = self.client.request(
            "POST", "/publish", data=body_of({"topic": "com.example.a"}), headers={}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.events), 1)

    def test_eligible_and_exclude_options(self) -> None:
        other = self.client.connect()
        received = other.subscribe("com.example.news")
        self.post("/publish", {"topic": "com.example.news", "args": [1], "options": {"eligible": [other.id]}})
        self.post("/publish", {"topic": "com.example.news", "args": [2], "options": {"exclude": [other.id]}})
        self.post(
            "/publish",
            {"topic": "com.example.news", "args": [3], "options": {"exclude_authid": [other.authid]}},
        )
        self.post(
            "/publish",
            {"topic": "com.example.news", "args": [4], "options": {"eligible_authrole": ["anonymous"]}},
        )
        self.assertEqual(received.payloads, [1, 4])
        self.assertEqual([e.payload for e in self.events], [2, 3, 4])

    def test_crossbar_options_without_meaning_are_ignored(self) -> None:
        options = {"exclude_me": False, "forward_for": [{"session": 1}], "acknowledge": True}
        response = self.post("/publish", {"topic": "com.example.a", "args": [1], "options": options})
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.events), 1)

    def test_retain(self) -> None:
        response = self.post("/publish", {"topic": "com.example.a", "args": [1], "options": {"retain": True}})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.successResultOf(self.app.retained("com.example.a")), 1)
        document = {"topic": "com.example.a", "args": [2], "options": {"retain": "yes"}}
        response = self.post("/publish", document)
        self.assert_error(response, 400, "sandstone.error.bad_request", "'retain' must be true or false")

    def test_reserved_uri_refused(self) -> None:
        response = self.post("/publish", {"topic": "wamp.session.on_join", "args": [1]})
        self.assert_error(response, 400, "wamp.error.invalid_uri", "reserved")
        self.assertEqual(self.events, [])


class AuthorizedPublisherTests(BridgeTestCase):
    def make_app(self) -> Sandstone:
        app = Sandstone(anonymous=True, open_uris=True)
        self.asked: list[tuple[Any, ...]] = []

        @app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> Any:
            if action == "subscribe":  # the test's subscriber
                return True
            self.asked.append((session.authid, session.authrole, session.authmethod, action, uri, match))
            if uri.startswith("com.private"):
                return False
            if uri.startswith("com.later"):
                return succeed(True)
            return True

        app.http_publisher("/publish", authid="backend", authrole="producer")
        app.http_caller("/call", crossbar_errors=True)
        return app

    def test_authorizer_sees_the_bridge_identity(self) -> None:
        self.asked.clear()
        self.assertEqual(self.post("/publish", {"topic": "com.example.a", "args": [1]}).code, 200)
        self.assertEqual(
            self.asked, [("backend", "producer", "http-bridge", "publish", "com.example.a", "exact")]
        )

    def test_refused_publication_is_403_and_not_delivered(self) -> None:
        response = self.post("/publish", {"topic": "com.private.a", "args": [1]})
        self.assert_error(response, 403, "wamp.error.not_authorized")
        self.assertEqual(self.events, [])

    def test_asynchronous_authorizer(self) -> None:
        response = self.post("/publish", {"topic": "com.later.a", "args": [1]})
        self.assertEqual(response.code, 200)
        self.assertEqual([e.payload for e in self.events], [1])

    def test_crossbar_errors_answer_a_refused_call_with_200(self) -> None:
        response = self.post("/call", {"procedure": "com.private.add", "args": [1, 2]})
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["error"], "wamp.error.not_authorized")
        self.asked.clear()
        self.post("/call", {"procedure": "com.example.add"})
        self.assertEqual(
            self.asked, [("http-bridge", "http-bridge", "http-bridge", "call", "com.example.add", "exact")]
        )


class TopicPublisherTests(BridgeTestCase):
    """On a closed app the topic must be declared, and its hooks run as for a client's PUBLISH."""

    def make_app(self) -> Sandstone:
        app = Sandstone(anonymous=True)

        @app.topic("chat/{channel}")
        class Chat(Topic):
            def may_publish(self, session: Any, payload: Any) -> bool:
                return isinstance(payload, dict) and "text" in payload

            def on_publish(self, session: Any, payload: Any) -> None:
                self.broadcast({"text": payload["text"].upper(), "by": session.authid})

        app.http_publisher("/publish")
        return app

    def setUp(self) -> None:
        super().setUp()
        self.chat = self.subscriber.subscribe("chat/general")

    def test_on_publish_runs(self) -> None:
        self.assertEqual(self.post("/publish", {"topic": "chat/general", "args": [{"text": "hi"}]}).code, 200)
        self.assertEqual(self.chat.payloads, [{"text": "HI", "by": "http-bridge"}])

    def test_may_publish_refuses(self) -> None:
        response = self.post("/publish", {"topic": "chat/general", "args": ["no text"]})
        self.assert_error(response, 403, "wamp.error.not_authorized")
        self.assertEqual(self.chat.payloads, [])

    def test_undeclared_topic_is_404(self) -> None:
        response = self.post("/publish", {"topic": "news.today", "args": [1]})
        self.assert_error(response, 404, "sandstone.error.no_such_topic", "news.today")


class BadInputTests(BridgeTestCase):
    """Every bad request gets a clear 4xx JSON error naming the problem, and nothing is published."""

    def tearDown(self) -> None:
        self.assertEqual(self.events, [])

    def test_not_json(self) -> None:
        self.assert_error(
            self.post("/publish", data=b"topic=com.example.a"), 400, "sandstone.error.bad_request", "not JSON"
        )

    def test_not_utf8(self) -> None:
        response = self.post("/publish", data=b'{"topic": "com.example.a", "args": ["\xff"]}')
        self.assert_error(response, 400, "sandstone.error.bad_request", "not UTF-8")

    def test_nan_is_not_json(self) -> None:
        response = self.post("/publish", data=b'{"topic": "com.example.a", "args": [NaN]}')
        self.assert_error(response, 400, "sandstone.error.bad_request", "NaN")

    def test_nested_too_deeply(self) -> None:
        response = self.post("/publish", data=b"[" * 200_000 + b"]" * 200_000)
        self.assert_error(response, 400, "sandstone.error.bad_request", "not JSON")

    def test_not_an_object(self) -> None:
        response = self.post("/publish", ["com.example.a", 1])
        self.assert_error(response, 400, "sandstone.error.bad_request", "JSON object, not an array")

    def test_missing_topic(self) -> None:
        response = self.post("/publish", {"args": [1]})
        self.assert_error(response, 400, "sandstone.error.bad_request", "no 'topic'")

    def test_missing_procedure(self) -> None:
        response = self.post("/call", {"topic": "com.example.a"})
        self.assert_error(response, 400, "sandstone.error.bad_request", "no 'procedure'")

    def test_topic_not_a_string(self) -> None:
        response = self.post("/publish", {"topic": 42})
        self.assert_error(response, 400, "sandstone.error.bad_request", "'topic' must be a URI string")

    def test_invalid_uris(self) -> None:
        for uri in ("com..example", "com.example.", "com.exa mple", "", ".com"):
            response = self.post("/publish", {"topic": uri})
            self.assert_error(response, 400, "wamp.error.invalid_uri", repr(uri))
        response = self.post("/call", {"procedure": "com.#.x"})
        self.assert_error(response, 400, "wamp.error.invalid_uri", "'com.#.x'")

    def test_args_kwargs_and_options_types(self) -> None:
        for field, value, words in (
            ("args", "hello", "'args' must be a JSON array, got a string"),
            ("kwargs", [1], "'kwargs' must be a JSON object, got an array"),
            ("options", True, "'options' must be a JSON object, got a boolean"),
        ):
            response = self.post("/publish", {"topic": "com.example.a", field: value})
            self.assert_error(response, 400, "sandstone.error.bad_request", words)

    def test_bad_delivery_options(self) -> None:
        for options, words in (
            ({"exclude": "123"}, "option 'exclude' must be a list of session ids"),
            ({"eligible": [1, "2"]}, "option 'eligible' must be a list of session ids"),
            ({"exclude_authid": [True]}, "option 'exclude_authid' must be a list of strings"),
        ):
            response = self.post("/publish", {"topic": "com.example.a", "options": options})
            self.assert_error(response, 400, "sandstone.error.bad_request", *words.split(" must "))

    def test_payload_not_every_serializer_carries(self) -> None:
        response = self.post("/publish", {"topic": "com.example.a", "args": [2**70]})
        self.assert_error(response, 400, "wamp.error.invalid_argument", "args[0]")
        response = self.post("/call", {"procedure": "com.example.a", "kwargs": {"x": "\u0000binary?"}})
        self.assert_error(response, 400, "wamp.error.invalid_argument", "kwargs['x']")

    def test_wrong_content_type(self) -> None:
        response = self.post("/publish", {"topic": "com.example.a"}, headers={"Content-Type": "text/plain"})
        self.assert_error(response, 415, "sandstone.error.unsupported_media_type", "text/plain")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        response = self.post("/publish", data=b"topic=com.example.a", headers=form)
        self.assert_error(response, 415, "sandstone.error.unsupported_media_type")

    def test_wrong_charset(self) -> None:
        headers = {"Content-Type": "application/json; charset=latin-1"}
        response = self.post("/publish", {"topic": "com.example.a"}, headers=headers)
        self.assert_error(response, 415, "sandstone.error.unsupported_media_type", "UTF-8")
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        self.assertEqual(self.post("/call", {"procedure": "wamp.session.count"}, headers=headers).code, 200)

    def test_get_is_405(self) -> None:
        response = self.client.get("/publish")
        self.assert_error(response, 405, "sandstone.error.method_not_allowed", "GET")
        self.assertEqual(response.headers["Allow"], ["POST, PUT, OPTIONS"])

    def test_options_answers_allow(self) -> None:
        response = self.client.request("OPTIONS", "/call")
        self.assertEqual((response.code, response.body), (204, b""))
        self.assertEqual(response.headers["Allow"], ["POST, PUT, OPTIONS"])


class LimitTests(BridgeTestCase):
    bridge_options = {"max_body": 100, "networks": ["127.0.0.0/8"]}

    def tearDown(self) -> None:
        self.assertEqual(self.events, [])

    def test_oversized_body(self) -> None:
        response = self.post("/publish", {"topic": "com.example.a", "args": ["x" * 100]})
        self.assert_error(response, 413, "sandstone.error.payload_too_large", "100 bytes")

    def test_app_max_request_body_is_the_default(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.http_publisher("/publish")
        app.limits = Limits(max_request_body=50)  # replaced after the bridge was mounted
        response = TestClient(app).post("/publish", json={"topic": "com.example.a", "args": ["x" * 50]})
        self.assert_error(response, 413, "sandstone.error.payload_too_large", "50 bytes")

    def test_client_outside_networks_is_403(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.http_publisher("/publish", networks=["10.0.0.0/8", "::1"])
        response = TestClient(app).post("/publish", json={"topic": "com.example.a"})
        self.assert_error(response, 403, "sandstone.error.forbidden", "127.0.0.1 is not allowed")

    def test_default_networks_are_loopback_without_keys_and_anywhere_with(self) -> None:
        unsigned = bridge_options()
        self.assertEqual([str(n) for n in unsigned.networks], ["127.0.0.0/8", "::1/128"])
        signed = bridge_options(keys={"k": "s"})
        self.assertEqual([str(n) for n in signed.networks], ["0.0.0.0/0", "::/0"])

    def test_require_tls(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        app.http_publisher("/publish", require_tls=True)
        stub = StubTreq(app.resource())
        body = body_of({"topic": "com.example.a"})
        plain = self.successResultOf(stub.post("http://localhost/publish", data=body, headers=JSON))
        self.assertEqual(plain.code, 403)
        self.assertIn("TLS", self.successResultOf(stub.json_content(plain))["args"][0])
        secure = self.successResultOf(stub.post("https://localhost/publish", data=body, headers=JSON))
        self.assertEqual(secure.code, 200)


class SignatureTests(BridgeTestCase):
    bridge_options = {"keys": KEYS}

    def make_app(self) -> Sandstone:
        app = super().make_app()
        self.asked: list[str] = []

        @app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> bool:
            if action != "subscribe":
                self.asked.append(session.authid)
            return True

        return app

    def signed_post(self, document: Any, path: str = "/publish", **signing: Any) -> TestResponse:
        body = body_of(document)
        return self.post(f"{path}?{signed_query(body, **signing)}", data=body)

    def test_signed_request_acts_as_its_key(self) -> None:
        response = self.signed_post({"topic": "com.example.a", "args": [1]})
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual([e.payload for e in self.events], [1])
        response = self.signed_post({"procedure": "wamp.session.count"}, "/call", key="app2")
        self.assertEqual(response.json(), {"args": [1]})
        self.assertEqual(self.asked, ["app1", "app2"])

    def test_autobahn_timestamps_and_unpadded_signatures(self) -> None:
        self.assertEqual(
            self.signed_post({"topic": "com.example.a"}, timestamp=utc_stamp(digits=3)).code, 200
        )
        body = body_of({"topic": "com.example.b"})
        query = signed_query(body).replace("%3D", "")  # the signature's base64 padding
        self.assertEqual(self.post(f"/publish?{query}", data=body).code, 200)
        self.assertEqual(len(self.events), 2)

    def test_unsigned_request_is_refused(self) -> None:
        response = self.post("/publish", {"topic": "com.example.a"})
        self.assert_error(response, 400, "sandstone.error.bad_request", "signed request required", "'key'")
        for name in ("timestamp", "seq", "nonce", "signature"):
            response = self.signed_post({"topic": "com.example.a"}, leave_out=name)
            self.assert_error(response, 400, "sandstone.error.bad_request", f"{name!r} is missing")
        self.assertEqual(self.events, [])

    def test_unknown_key(self) -> None:
        response = self.signed_post({"topic": "com.example.a"}, key="intruder", secret="guess")
        self.assert_error(response, 401, "sandstone.error.bad_signature", "unknown key 'intruder'")

    def test_wrong_secret(self) -> None:
        response = self.signed_post({"topic": "com.example.a"}, secret="not-the-secret")
        self.assert_error(response, 401, "sandstone.error.bad_signature", "does not match")

    def test_tampered_body(self) -> None:
        body = body_of({"topic": "com.example.a", "args": ["ok"]})
        query = signed_query(body)
        response = self.post(f"/publish?{query}", {"topic": "com.example.a", "args": ["evil"]})
        self.assert_error(response, 401, "sandstone.error.bad_signature")
        self.assertEqual(self.events, [])

    def test_malformed_timestamp_seq_nonce(self) -> None:
        for signing, words in (
            ({"timestamp": "2011-10-14 16:59:51"}, "invalid timestamp"),
            ({"timestamp": "yesterday"}, "invalid timestamp 'yesterday'"),
            ({"seq": "first"}, "invalid seq 'first'"),
            ({"nonce": "abc"}, "invalid nonce 'abc'"),
        ):
            response = self.signed_post({"topic": "com.example.a"}, **signing)
            self.assert_error(response, 400, "sandstone.error.bad_request", words)
        self.assertEqual(self.events, [])

    def test_stale_and_future_timestamps(self) -> None:
        for offset in (-301, 301, -86_400):
            response = self.signed_post({"topic": "com.example.a"}, timestamp=utc_stamp(offset))
            self.assert_error(response, 400, "sandstone.error.request_expired", "300 s away")
        self.assertEqual(self.signed_post({"topic": "com.example.a"}, timestamp=utc_stamp(-290)).code, 200)

    def test_replayed_request_is_refused(self) -> None:
        body = body_of({"topic": "com.example.a", "args": ["once"]})
        url = f"/publish?{signed_query(body)}"
        self.assertEqual(self.post(url, data=body).code, 200)
        response = self.post(url, data=body)
        self.assert_error(response, 401, "sandstone.error.request_replayed", "used already")
        self.assertEqual([e.payload for e in self.events], ["once"])

    def test_a_nonce_is_single_use_per_key(self) -> None:
        self.assertEqual(self.signed_post({"topic": "com.example.a"}, nonce=7).code, 200)
        response = self.signed_post({"topic": "com.example.b"}, nonce=7, seq=2)  # newly signed
        self.assert_error(response, 401, "sandstone.error.request_replayed", "nonce 7 of key 'app1'")
        self.assertEqual(self.signed_post({"topic": "com.example.c"}, nonce=7, key="app2").code, 200)
        # a caller path of the same app shares the memory
        response = self.signed_post({"procedure": "wamp.session.count"}, "/call", nonce=7)
        self.assert_error(response, 401, "sandstone.error.request_replayed")

    def test_signature_checked_before_the_nonce_is_spent(self) -> None:
        self.signed_post({"topic": "com.example.a"}, nonce=8, secret="wrong")
        self.assertEqual(self.signed_post({"topic": "com.example.a"}, nonce=8).code, 200)


class NonceMemoryTests(SynchronousTestCase):
    def test_replay_within_the_window(self) -> None:
        memory = NonceMemory()
        self.assertEqual(memory.claim("k", 1, expires=100.0, now=0.0), "new")
        self.assertEqual(memory.claim("k", 1, expires=100.0, now=50.0), "replayed")
        self.assertEqual(memory.claim("other", 1, expires=100.0, now=50.0), "new")

    def test_forgotten_once_out_of_the_window(self) -> None:
        memory = NonceMemory()
        for nonce in range(100):
            memory.claim("k", nonce, expires=10.0 + nonce, now=0.0)
        self.assertEqual(len(memory), 100)
        memory.claim("k", 1000, expires=200.0, now=60.0)
        self.assertEqual(len(memory), 51)  # those expiring from 60.0 on, and the new one
        self.assertEqual(memory.claim("k", 99, expires=300.0, now=60.0), "replayed")
        self.assertEqual(memory.claim("k", 3, expires=300.0, now=60.0), "new")

    def test_full(self) -> None:
        memory = NonceMemory(limit=2)
        memory.claim("k", 1, expires=10.0, now=0.0)
        memory.claim("k", 2, expires=20.0, now=0.0)
        self.assertEqual(memory.claim("k", 3, expires=30.0, now=5.0), "full")
        self.assertEqual(memory.claim("k", 3, expires=30.0, now=11.0), "new")

    def test_full_memory_answers_429_and_warns_once(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        bridge = HttpBridge(
            app.router, PUBLISHER, "/publish", bridge_options(keys=KEYS), NonceMemory(limit=1)
        )
        app.route("/publish")(bridge.render)
        client = TestClient(app)
        warnings: list[Any] = []
        observer = warnings.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        body = body_of({"topic": "com.example.a"})
        codes = [
            client.post(f"/publish?{signed_query(body)}", data=body, headers=JSON).code for _ in range(3)
        ]
        self.assertEqual(codes, [200, 429, 429])
        self.assertEqual(len([e for e in warnings if e.get("log_level") == LogLevel.warn]), 1)


class CallerTests(BridgeTestCase):
    def make_app(self) -> Sandstone:
        app = super().make_app()
        self.held: list[Deferred[Any]] = []

        @app.procedure("com.example.add2")
        def add2(a: int, b: int) -> int:
            return a + b

        @app.procedure("com.example.nothing")
        def nothing() -> None:
            return None

        @app.procedure("com.example.split")
        def split(text: str, upper: bool = False) -> CallResult:
            return CallResult(*text.split(), count=len(text.split()))

        @app.procedure("com.example.only_kwargs")
        def only_kwargs() -> CallResult:
            return CallResult(a=1)

        @app.procedure("com.example.binary")
        def binary() -> bytes:
            return b"\x01\x02"

        @app.procedure("com.example.checkname")
        def checkname(name: str) -> None:
            raise ApplicationError("com.example.error.mixed_case", name.lower(), name.upper(), hint="lower")

        @app.procedure("com.example.crash")
        def crash() -> None:
            raise ValueError("don't ask foolish questions")

        return app

    def test_app_procedure(self) -> None:
        response = self.post("/call", {"procedure": "com.example.add2", "args": [1, 2]})
        self.assertEqual((response.code, response.json()), (200, {"args": [3]}))

    def test_keyword_arguments(self) -> None:
        response = self.post("/call", {"procedure": "com.example.add2", "args": [1], "kwargs": {"b": 5}})
        self.assertEqual(response.json(), {"args": [6]})

    def test_results_as_crossbar_gives_them(self) -> None:
        self.assertEqual(self.post("/call", {"procedure": "com.example.nothing"}).json(), {"args": [None]})
        response = self.post("/call", {"procedure": "com.example.split", "args": ["a b c"]})
        self.assertEqual(response.json(), {"args": ["a", "b", "c"], "kwargs": {"count": 3}})
        self.assertEqual(
            self.post("/call", {"procedure": "com.example.only_kwargs"}).json(), {"kwargs": {"a": 1}}
        )

    def test_binary_result_as_wamp_json(self) -> None:
        response = self.post("/call", {"procedure": "com.example.binary"})
        self.assertEqual(response.json(), {"args": ["\u0000AQI="]})

    def test_client_callee(self) -> None:
        callee = self.client.connect()
        callee.register("com.example.mul", lambda a, b: a * b)
        response = self.post("/call", {"procedure": "com.example.mul", "args": [6, 7]})
        self.assertEqual(response.json(), {"args": [42]})

    def test_meta_procedure(self) -> None:
        self.client.connect()
        response = self.post("/call", {"procedure": "wamp.session.count"})
        self.assertEqual(response.json(), {"args": [2]})

    def test_meta_answers_keep_no_authorization_cache_for_requests(self) -> None:
        # each request is a principal of its own: its authorization decisions must not pile up
        @self.app.authorizer
        def authorize(session: Any, action: str, uri: str, match: str) -> bool:
            return not uri.startswith("com.example.secret")

        subscriber = self.client.connect()
        subscriber.subscribe("com.example.news")
        subscriber.subscribe("com.example.", match="prefix")
        authorization = self.app.router.authorization
        held = len(authorization._decisions)
        answers = [self.post("/call", {"procedure": "wamp.subscription.list"}).json() for _ in range(5)]
        self.assertEqual(len(answers[0]["args"][0]["exact"]), 1)  # com.example.news
        self.assertTrue(all(answer == answers[0] for answer in answers))
        self.assertEqual(len(authorization._decisions), held)

    def test_no_callee_is_404(self) -> None:
        response = self.post("/call", {"procedure": "com.example.nobody"})
        self.assert_error(response, 404, "wamp.error.no_such_procedure", "com.example.nobody")

    def test_application_error(self) -> None:
        response = self.post("/call", {"procedure": "com.example.checkname", "args": ["Hello"]})
        body = self.assert_error(response, 500, "com.example.error.mixed_case")
        self.assertEqual(
            body,
            {
                "error": "com.example.error.mixed_case",
                "args": ["hello", "HELLO"],
                "kwargs": {"hint": "lower"},
            },
        )

    def test_runtime_error(self) -> None:
        response = self.post("/call", {"procedure": "com.example.crash"})
        self.assert_error(
            response, 500, "wamp.error.runtime_error", "ValueError: don't ask foolish questions"
        )
        self.flushLoggedErrors(ValueError)

    def test_wrong_arguments(self) -> None:
        response = self.post("/call", {"procedure": "com.example.add2", "args": [1]})
        self.assert_error(response, 400, "wamp.error.invalid_argument", "com.example.add2")

    def test_reserved_procedure(self) -> None:
        response = self.post("/call", {"procedure": "wamp.registration.kill"})
        self.assert_error(response, 400, "wamp.error.invalid_uri", "reserved")

    def test_callee_leaving_is_502(self) -> None:
        callee = self.client.connect()
        callee.register("com.example.slow", lambda: Deferred())
        held = self.client.rest.post(
            "http://localhost/call", data=body_of({"procedure": "com.example.slow"}), headers=JSON
        )
        self.client.rest.flush()
        self.assertNoResult(held)
        callee.disconnect()
        self.client.rest.flush()
        response = self.successResultOf(held)
        self.assertEqual(response.code, 502)
        body = self.successResultOf(self.client.rest.json_content(response))
        self.assertEqual(body["error"], "wamp.error.canceled")


class CallTimeoutTests(SynchronousTestCase):
    """A call without an answer in time: 504, and the call is canceled (the callee interrupted, an app
    function's Deferred canceled)."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.clock = MemoryReactorClock()
        options = bridge_options(timeout=5)
        bridge = HttpBridge(self.app.router, CALLER, "/call", options, NonceMemory(), reactor=self.clock)
        self.app.route("/call")(bridge.render)
        self.client = TestClient(self.app)
        self.addCleanup(self.client.close)
        self.canceled: list[str] = []

        @self.app.procedure("com.example.hang")
        def hang() -> Deferred[None]:
            return Deferred(lambda _: self.canceled.append("hang"))

    def call(self, document: Any) -> Deferred[Any]:
        d = self.client.rest.post("http://localhost/call", data=body_of(document), headers=JSON)
        self.client.rest.flush()
        return d

    def answer(self, d: Deferred[Any]) -> tuple[int, Any]:
        self.client.rest.flush()
        response = self.successResultOf(d)
        return response.code, self.successResultOf(self.client.rest.json_content(response))

    def test_app_function_times_out_and_is_canceled(self) -> None:
        d = self.call({"procedure": "com.example.hang"})
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        code, body = self.answer(d)
        self.assertEqual(code, 504)
        self.assertEqual(
            body,
            {
                "error": "wamp.error.timeout",
                "args": ["com.example.hang did not answer within 5 s"],
                "kwargs": {},
            },
        )
        self.assertEqual(self.canceled, ["hang"])

    def test_client_callee_is_interrupted(self) -> None:
        roles = {"callee": {"features": {"call_canceling": True}}}
        callee = self.client.connect(roles=roles)
        callee.register("com.example.slow", lambda: Deferred())
        d = self.call({"procedure": "com.example.slow", "options": {"timeout": 1500}})
        self.clock.advance(1.5)
        self.assertEqual(self.answer(d)[0], 504)
        interrupts = [m for m in callee.messages if type(m).__name__ == "Interrupt"]
        self.assertEqual(len(interrupts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answer_in_time_stops_the_timer(self) -> None:
        held: list[Deferred[int]] = []

        @self.app.procedure("com.example.later")
        def later() -> Deferred[int]:
            held.append(Deferred())
            return held[-1]

        d = self.call({"procedure": "com.example.later"})
        held[0].callback(7)
        self.assertEqual(self.answer(d), (200, {"args": [7]}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_timeout_option(self) -> None:
        code, body = self.answer(self.call({"procedure": "com.example.hang", "options": {"timeout": "soon"}}))
        self.assertEqual((code, body["error"]), (400, "sandstone.error.bad_request"))
        self.assertEqual(self.canceled, [])


class KeysTests(SynchronousTestCase):
    def test_sandstone_and_crossbar_forms(self) -> None:
        self.assertEqual(parse_keys('{"a": "1", "b": "2"}', "f"), {"a": b"1", "b": b"2"})
        self.assertEqual(parse_keys('{"key": "app1", "secret": "s3"}', "f"), {"app1": b"s3"})

    def test_bad_keys(self) -> None:
        for text, words in (
            ("not json", "f is not JSON"),
            ("[]", "must be a JSON object"),
            ("{}", "must be a JSON object"),
            ('{"a": ""}', "the secret of key 'a'"),
            ('{"a": 1}', "the secret of key 'a'"),
            ('{"": "s"}', "a key may not be empty"),
        ):
            with self.assertRaises(BridgeKeysError) as caught:
                parse_keys(text, "f")
            self.assertIn(words, str(caught.exception))

    def test_file_and_environment(self) -> None:
        path = Path(self.mktemp())
        path.write_text('{"app1": "from-file"}')
        self.assertEqual(load_keys(str(path)), {"app1": b"from-file"})
        self.assertEqual(keys_from_environment({KEYS_ENV: str(path)}), {"app1": b"from-file"})
        self.assertEqual(keys_from_environment({KEYS_ENV: ' {"app1": "inline"}'}), {"app1": b"inline"})
        self.assertIsNone(keys_from_environment({}))
        with self.assertRaises(BridgeKeysError) as caught:
            load_keys(str(path) + ".missing")
        self.assertIn("cannot read", str(caught.exception))

    def test_bad_options(self) -> None:
        for options, words in (
            ({"networks": ["10.0.0.0/33"]}, "is not a network"),
            ({"networks": []}, "no client network"),
            ({"keys": {"": "s"}}, "non-empty strings"),
            ({"keys": {"k": ""}}, "non-empty string"),
            ({"timeout": -1}, "timeout may not be negative"),
            ({"keys": {"k": "s"}, "max_skew": 0}, "max_skew > 0"),
            ({"authrole": ""}, "authrole may not be empty"),
        ):
            with self.assertRaises(ValueError) as caught:
                bridge_options(**options)
            self.assertIn(words, str(caught.exception))

    def test_app_path_must_be_its_own(self) -> None:
        app = Sandstone()
        for path in ("/ws", "publish"):
            with self.assertRaises(ValueError):
                app.http_publisher(path)


class TapOptionsTests(SynchronousTestCase):
    """``twistd sandstone --http-publisher PATH --http-caller PATH --http-bridge-...``."""

    def parse(self, *arguments: str) -> Options:
        options = Options()
        options.parseOptions(list(arguments))
        return options

    def test_open_router_serves_both(self) -> None:
        options = self.parse(
            "--http-publisher", "/publish", "--http-caller", "/call", "--http-bridge-timeout", "3"
        )
        assert options.app is not None
        client = TestClient(options.app)
        self.addCleanup(client.close)
        subscription = client.connect().subscribe("com.example.a")
        self.assertEqual(client.post("/publish", json={"topic": "com.example.a", "args": [1]}).code, 200)
        self.assertEqual(subscription.payloads, [1])
        self.assertEqual(client.post("/call", json={"procedure": "wamp.session.count"}).json(), {"args": [1]})

    def test_keys_file_authrole_and_networks(self) -> None:
        path = Path(self.mktemp())
        path.write_text(json.dumps(KEYS))
        options = self.parse(
            "--http-publisher=/publish",
            f"--http-bridge-keys={path}",
            "--http-bridge-authrole=producer",
            "--http-bridge-networks=127.0.0.1, 10.0.0.0/8",
        )
        assert options.app is not None
        roles: list[str] = []
        options.app.authorizer(lambda session, *_: roles.append(session.authrole) or True)
        client = TestClient(options.app)
        body = body_of({"topic": "com.example.a"})
        self.assertEqual(client.post("/publish", data=body, headers=JSON).code, 400)  # unsigned
        self.assertEqual(client.post(f"/publish?{signed_query(body)}", data=body, headers=JSON).code, 200)
        self.assertEqual(roles, ["producer"])

    def test_keys_from_the_environment(self) -> None:
        os.environ[KEYS_ENV] = '{"envkey": "s"}'
        self.addCleanup(os.environ.pop, KEYS_ENV)
        options = self.parse("--http-caller", "/call")
        assert options.app is not None
        client = TestClient(options.app)
        body = body_of({"procedure": "wamp.session.count"})
        response = client.post(f"/call?{signed_query(body, 'envkey', 's')}", data=body, headers=JSON)
        self.assertEqual(response.json(), {"args": [0]})

    def test_usage_errors(self) -> None:
        path = Path(self.mktemp())
        path.write_text("[1]")
        for arguments, words in (
            (["--http-bridge-keys", str(path)], "only with --http-publisher"),
            (["--http-publisher", "/p", "--http-bridge-keys", str(path)], "--http-bridge-keys:"),
            (["--http-publisher", "/p", "--http-bridge-networks", "nowhere"], "'nowhere' is not a network"),
            (
                ["--http-caller", "/c", "--http-bridge-timeout", "soon"],
                "--http-bridge-timeout expects a number",
            ),
            (["--http-publisher", "/x", "--http-caller", "/x"], "paths of their own"),
            (["--http-publisher", "/ws"], "--http-publisher /ws"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*arguments)
            self.assertIn(words, str(caught.exception))


class MountTests(SynchronousTestCase):
    def test_bridge_on_a_plain_klein_app(self) -> None:
        """``HttpBridge.render`` is a plain Klein handler (what ``app.http_publisher`` mounts)."""
        app = Sandstone(anonymous=True, open_uris=True)
        web = Klein()
        bridge = HttpBridge(app.router, PUBLISHER, "/in", bridge_options(), NonceMemory())
        web.route("/in")(bridge.render)
        stub = StubTreq(web.resource())
        response = self.successResultOf(
            stub.post("http://localhost/in", data=body_of({"topic": "com.example.a"}), headers=JSON)
        )
        self.assertEqual(response.code, 200)
        self.assertIn("id", self.successResultOf(stub.json_content(response)))
