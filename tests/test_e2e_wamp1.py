"""End-to-end over real TCP: WAMP v1 clients (raw v1 frames, as AutobahnJS 0.8 sends them) next to WAMP v2
clients (autobahn-python) on one router: every v1 message, PREFIX, publisher exclusion, exclude/eligible,
mixed sessions, the blog, identity from a REST login, authorization, malformed messages, limits, shutdown
and two nodes over a real Redis."""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, PublishOptions
from twisted.web.iweb import IRequest

from examples import blog
from sandstone import Identity, Limits, Sandstone, Session, Topic
from tests.cluster_support import ClusterTestCase
from tests.support import ServerTestCase, wait_until
from tests.wamp1_peer import (
    CALLERROR,
    CALLRESULT,
    WELCOME,
    Wamp1Peer,
    connect_any,
    connect_v1,
    handshake_status,
    upgrade_request,
)

NOT_AUTHORIZED = "wamp.error.not_authorized"


def make_app(**options: Any) -> Sandstone:
    """Topics and procedures covering what v1 clients do: a greeting chat, a plain feed, a topic whose
    on_publish reshapes the payload, one nobody may subscribe to; procedures with every result shape."""
    options.setdefault("anonymous", True)
    app = Sandstone(**options)

    @app.topic("chat/{channel}")
    class Chat(Topic):
        def on_subscribe(self, session: Session) -> None:
            self.send(session, f"Welcome on {self.args['channel']}")

    @app.topic("news")
    class News(Topic):
        pass

    @app.topic("echo")
    class Echo(Topic):
        def on_publish(self, session: Session, payload: Any) -> None:
            self.broadcast({"from": str(session.id), "payload": payload})

    @app.topic("relay")
    class Relay(Topic):
        def on_publish(self, session: Session, payload: Any) -> None:
            self.broadcast(payload, exclude=[session])

    @app.topic("whoami")
    class WhoAmI(Topic):
        def on_subscribe(self, session: Session) -> None:
            self.send(session, [session.authid, session.authrole, session.authmethod])

    @app.topic("private")
    class Private(Topic):
        def may_subscribe(self, session: Session) -> bool:
            return False

    @app.topic("to/{name}")
    class Direct(Topic):
        """app.broadcast / Topic.broadcast with exclude and eligible, driven by a procedure below."""

    @app.procedure("math.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.procedure("math.divmod")
    def divmod_(a: int, b: int) -> CallResult:
        return CallResult(*divmod(a, b))

    @app.procedure("math.named")
    def named(a: int) -> CallResult:
        return CallResult(double=2 * a)

    @app.procedure("nothing")
    def nothing() -> None:
        return None

    @app.procedure("fail")
    def fail() -> None:
        raise ValueError("boom")

    @app.procedure("refuse")
    def refuse() -> None:
        raise ApplicationError("com.example.refused", "not today", reason="closed", retry=3)

    @app.procedure("to.broadcast")
    def broadcast(name: str, payload: Any, exclude: list[str], eligible: list[str] | None) -> int:
        return app.broadcast(
            f"to/{name}",
            payload,
            exclude=[int(s) for s in exclude],
            eligible=None if eligible is None else [int(s) for s in eligible],
        )

    return app


def subscribed(app: Sandstone, peer: Wamp1Peer, uri: str) -> bool:
    """Whether ``peer`` is among the subscribers of the declared topic ``uri``."""
    topic = app.topic_instance(uri)
    return topic is not None and any(str(s.id) == peer.session_id for s in topic.subscribers)


class Wamp1TestCase(ServerTestCase):
    timeout = 30

    def serve_app(self, **options: Any) -> Sandstone:
        app = make_app(**options)
        self.serve(app)
        return app

    async def v1(self, **options: Any) -> Wamp1Peer:
        return await connect_v1(self, self.ws_url, **options)

    async def subscribed(self, peer: Wamp1Peer, topic: str, uri: str | None = None) -> None:
        """SUBSCRIBE and wait until the router holds the subscription (v1 has no SUBSCRIBED)."""
        peer.subscribe(topic)
        await wait_until(lambda: subscribed(self.app, peer, uri or topic))

    async def barrier(self, peer: Wamp1Peer) -> None:
        """Everything the peer sent before has been handled (a CALL answered after it)."""
        answer = await peer.call("wamp.session.count")  # answered in every app (the session meta API)
        self.assertIn(answer[0], (CALLRESULT, CALLERROR))


class HandshakeTests(Wamp1TestCase):
    async def test_welcome_right_after_the_handshake(self) -> None:
        self.serve_app()
        peer = await self.v1()
        self.assertEqual(peer.subprotocol, "wamp")
        welcome = peer.received[0]
        self.assertEqual(welcome[0], WELCOME)
        self.assertIsInstance(welcome[1], str)
        self.assertEqual(welcome[2], 1)
        self.assertTrue(welcome[3].startswith("sandstone"))
        session = self.app.router.sessions[int(welcome[1])]
        self.assertEqual(
            (session.realm, session.authrole, session.subprotocol), ("realm1", "anonymous", "wamp")
        )

    async def test_v2_wins_when_a_client_offers_both(self) -> None:
        self.serve_app()
        self.assertEqual(await connect_any(self, self.ws_url, ["wamp", "wamp.2.json"]), "wamp.2.json")
        self.assertEqual(await connect_any(self, self.ws_url, ["wamp.2.json", "wamp"]), "wamp.2.json")
        self.assertEqual(await connect_any(self, self.ws_url, ["wamp"]), "wamp")

    async def test_v1_sessions_are_listed_by_the_session_meta_api(self) -> None:
        self.serve_app()
        peer = await self.v1()
        v2 = await self.connect()
        self.assertIn(int(peer.session_id or 0), await v2.call("wamp.session.list"))
        details = await v2.call("wamp.session.get", int(peer.session_id or 0))
        self.assertEqual(details["authrole"], "anonymous")

    async def test_topic_subscribers_list_v1_sessions(self) -> None:
        self.serve_app()
        peer = await self.v1()
        await self.subscribed(peer, "news")
        subscribers = self.app.topic_instance("news").subscribers
        self.assertEqual([str(s.id) for s in subscribers], [peer.session_id])


class PrefixTests(Wamp1TestCase):
    async def test_prefix_resolves_in_subscribe_publish_and_unsubscribe(self) -> None:
        self.serve_app()
        alice, bob = await self.v1(), await self.v1()
        alice.prefix("c", "chat/")
        bob.prefix("room", "chat/")
        await self.subscribed(alice, "c:general", "chat/general")
        await self.subscribed(bob, "room:general", "chat/general")
        bob.publish("room:general", {"text": "hi"})
        await wait_until(lambda: alice.events("chat/general") == ["Welcome on general", {"text": "hi"}])
        alice.unsubscribe("c:general")
        await self.barrier(alice)
        bob.publish("chat/general", "after")
        await self.barrier(bob)
        bob.publish("room:general", "marker")  # reaches nobody either: it proves alice got nothing before
        await self.barrier(bob)
        self.assertEqual(alice.events("chat/general"), ["Welcome on general", {"text": "hi"}])

    async def test_prefix_resolves_in_call(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.prefix("m", "math.")
        self.assertEqual(await peer.call("m:add", 2, 3), [CALLRESULT, "c1", 5])

    async def test_an_unknown_prefix_is_used_as_it_is(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("x:add", 1, 2)
        self.assertEqual(answer[:3], [CALLERROR, "c1", "wamp.error.no_such_procedure"])
        self.assertIn("x:add", answer[3])

    async def test_a_prefix_can_be_redefined(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.prefix("p", "nowhere.")
        peer.prefix("p", "math.")
        self.assertEqual((await peer.call("p:add", 1, 1))[2], 2)


class CallTests(Wamp1TestCase):
    async def test_call_an_app_procedure(self) -> None:
        self.serve_app()
        peer = await self.v1()
        self.assertEqual(await peer.call("math.add", 20, 22), [CALLRESULT, "c1", 42])

    async def test_result_shapes(self) -> None:
        self.serve_app()
        peer = await self.v1()
        self.assertEqual((await peer.call("math.divmod", 7, 2))[2], [3, 1])  # several: the list
        self.assertEqual((await peer.call("math.named", 4))[2], {"double": 8})  # only kwargs: the object
        self.assertIsNone((await peer.call("nothing"))[2])

    async def test_call_a_v2_callee(self) -> None:
        self.serve_app(open_uris=True)
        callee = await self.connect()
        await callee.register(lambda name: f"hello {name}", "com.example.greet")
        peer = await self.v1()
        self.assertEqual(await peer.call("com.example.greet", "v1"), [CALLRESULT, "c1", "hello v1"])

    async def test_a_v2_callee_error_becomes_callerror_with_details(self) -> None:
        self.serve_app(open_uris=True)
        callee = await self.connect()

        def refuse() -> None:
            raise ApplicationError("com.example.nope", "no way", code=7)

        await callee.register(refuse, "com.example.refuse")
        peer = await self.v1()
        answer = await peer.call("com.example.refuse")
        self.assertEqual(answer, [CALLERROR, "c1", "com.example.nope", "no way", {"code": 7}])

    async def test_unknown_procedure(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("no.such")
        self.assertEqual(answer[:3], [CALLERROR, "c1", "wamp.error.no_such_procedure"])
        self.assertEqual(len(answer), 4)

    async def test_invalid_arguments(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("math.add", 1)
        self.assertEqual(answer[:3], [CALLERROR, "c1", "wamp.error.invalid_argument"])
        self.assertIn("missing a required argument", answer[3])

    async def test_runtime_error(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("fail")
        self.assertEqual(answer, [CALLERROR, "c1", "wamp.error.runtime_error", "ValueError: boom"])
        self.flushLoggedErrors(ValueError)

    async def test_application_error_with_args_and_kwargs(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("refuse")
        self.assertEqual(
            answer, [CALLERROR, "c1", "com.example.refused", "not today", {"reason": "closed", "retry": 3}]
        )

    async def test_not_authorized(self) -> None:
        app = self.serve_app()
        app.authorizer(lambda session, action, uri, match: not (action == "call" and uri == "math.add"))
        peer = await self.v1()
        answer = await peer.call("math.add", 1, 2)
        self.assertEqual(answer[:3], [CALLERROR, "c1", NOT_AUTHORIZED])

    async def test_invalid_uri(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("bad uri")
        self.assertEqual(answer[:3], [CALLERROR, "c1", "wamp.error.invalid_uri"])

    async def test_wampcra_v1_says_it_is_not_supported(self) -> None:
        self.serve_app()
        peer = await self.v1()
        answer = await peer.call("http://api.wamp.ws/procedure#authreq", "alice", {})
        self.assertEqual(answer[:3], [CALLERROR, "c1", "sandstone.error.wampcra_v1_not_supported"])
        self.assertIn("REST", answer[3])

    async def test_calls_in_flight_are_told_apart_by_call_id(self) -> None:
        self.serve_app()
        peer = await self.v1()
        first, second = peer.call("math.add", 1, 1), peer.call("math.add", 2, 2)
        self.assertEqual(await second, [CALLRESULT, "c2", 4])
        self.assertEqual(await first, [CALLRESULT, "c1", 2])


class SubscribeTests(Wamp1TestCase):
    async def test_a_declared_topic_greets_a_v1_subscriber(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.subscribe("chat/general")
        await wait_until(lambda: peer.events("chat/general") == ["Welcome on general"])
        self.assertEqual(len(self.app.topic_instance("chat/general").subscribers), 1)

    async def test_an_undeclared_topic_delivers_nothing_and_the_session_stays_open(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.subscribe("undeclared")
        await self.barrier(peer)
        self.app.broadcast("undeclared", "nobody hears this")
        await self.barrier(peer)
        self.assertEqual(peer.events("undeclared"), [])
        self.assertIsNone(peer.close_code)

    async def test_may_subscribe_refuses(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.subscribe("private")
        await self.barrier(peer)
        self.assertIsNone(self.app.topic_instance("private"))
        self.assertIsNone(peer.close_code)

    async def test_the_authorizer_refuses(self) -> None:
        app = self.serve_app()
        app.authorizer(lambda session, action, uri, match: uri != "chat/secret")
        peer = await self.v1()
        peer.subscribe("chat/secret")
        peer.subscribe("chat/open")
        await wait_until(lambda: peer.events("chat/open") == ["Welcome on open"])
        self.assertEqual(peer.events("chat/secret"), [])

    async def test_unsubscribe_stops_events_and_runs_on_unsubscribe(self) -> None:
        self.serve_app()
        peer = await self.v1()
        await self.subscribed(peer, "news")
        peer.unsubscribe("news")
        await self.barrier(peer)
        self.assertIsNone(self.app.topic_instance("news"))
        self.app.broadcast("news", "late")
        await self.barrier(peer)
        self.assertEqual(peer.events("news"), [])

    async def test_subscribing_twice_delivers_once(self) -> None:
        self.serve_app()
        peer = await self.v1()
        await self.subscribed(peer, "news")
        await self.subscribed(peer, "news")
        self.app.broadcast("news", 1)
        await wait_until(lambda: peer.events("news") == [1])
        await self.barrier(peer)
        self.assertEqual(peer.events("news"), [1])


class PublishTests(Wamp1TestCase):
    async def publisher_and_listener(self) -> tuple[Wamp1Peer, Wamp1Peer]:
        self.serve_app()
        publisher, listener = await self.v1(), await self.v1()
        await self.subscribed(publisher, "news")
        await self.subscribed(listener, "news")
        return publisher, listener

    async def test_the_publisher_is_excluded_by_default(self) -> None:
        publisher, listener = await self.publisher_and_listener()
        publisher.publish("news", "one")
        await wait_until(lambda: listener.events("news") == ["one"])
        await self.barrier(publisher)
        self.assertEqual(publisher.events("news"), [])

    async def test_exclude_me_false_includes_the_publisher(self) -> None:
        publisher, listener = await self.publisher_and_listener()
        publisher.publish("news", "two", False)
        await wait_until(lambda: publisher.events("news") == ["two"] and listener.events("news") == ["two"])

    async def test_exclude_me_true_excludes_the_publisher(self) -> None:
        publisher, listener = await self.publisher_and_listener()
        publisher.publish("news", "three", True)
        await wait_until(lambda: listener.events("news") == ["three"])
        await self.barrier(publisher)
        self.assertEqual(publisher.events("news"), [])

    async def test_on_publish_gets_the_event_as_payload(self) -> None:
        self.serve_app()
        publisher, listener = await self.v1(), await self.v1()
        await self.subscribed(listener, "echo")
        publisher.publish("echo", {"n": 1})
        await wait_until(
            lambda: listener.events("echo") == [{"from": publisher.session_id, "payload": {"n": 1}}]
        )

    async def test_exclude_and_eligible_name_v1_and_v2_sessions(self) -> None:
        self.serve_app()
        publisher, v1_a, v1_b = await self.v1(), await self.v1(), await self.v1()
        v2_a, v2_b = await self.connect(), await self.connect()
        for peer in (publisher, v1_a, v1_b):
            await self.subscribed(peer, "news")
        for client in (v2_a, v2_b):
            await client.record("news")
        ids = {"v1_a": v1_a.session_id, "v1_b": v1_b.session_id}
        ids.update(v2_a=str(v2_a._session_id), v2_b=str(v2_b._session_id))

        # exclude: exactly the listed sessions (a list replaces excludeMe; the publisher is not listed)
        publisher.publish("news", "x", [ids["v1_a"], ids["v2_a"]])
        # eligible: only the listed sessions, minus the excluded ones
        publisher.publish(
            "news", "e", [ids["v1_b"]], [ids["v1_a"], ids["v1_b"], ids["v2_b"], publisher.session_id]
        )

        def received() -> dict[str, list[Any]]:
            return {
                "publisher": publisher.events("news"),
                "v1_a": v1_a.events("news"),
                "v1_b": v1_b.events("news"),
                "v2_a": [e.payload for e in v2_a.received["news"]],
                "v2_b": [e.payload for e in v2_b.received["news"]],
            }

        expected = {"publisher": ["x", "e"], "v1_a": ["e"], "v1_b": ["x"], "v2_a": [], "v2_b": ["x", "e"]}
        await wait_until(lambda: received() == expected)

    async def test_exclude_with_integer_ids_and_foreign_strings(self) -> None:
        publisher, listener = await self.publisher_and_listener()
        publisher.publish("news", "n", [int(listener.session_id or 0), "not-an-id", "00"])
        publisher.publish("news", "marker", False)
        await wait_until(lambda: publisher.events("news") == ["n", "marker"])
        self.assertEqual(listener.events("news"), ["marker"])

    async def test_publishing_on_an_undeclared_topic_is_dropped_silently(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.publish("undeclared", 1)
        await self.barrier(peer)
        self.assertIsNone(peer.close_code)


class MixedTests(Wamp1TestCase):
    async def test_v2_publish_reaches_v1_subscribers(self) -> None:
        self.serve_app()
        peer = await self.v1()
        await self.subscribed(peer, "news")
        v2 = await self.connect()
        await v2.publish("news", {"a": 1}, options=PublishOptions(acknowledge=True))
        await v2.publish("news", 1, 2, options=PublishOptions(acknowledge=True))  # args[0]
        await v2.publish("news", k="v", options=PublishOptions(acknowledge=True))  # kwargs only
        await v2.publish("news", options=PublishOptions(acknowledge=True))  # nothing: null
        await wait_until(lambda: peer.events("news") == [{"a": 1}, 1, {"k": "v"}, None])

    async def test_v1_publish_reaches_v2_subscribers(self) -> None:
        self.serve_app()
        v2 = await self.connect()
        await v2.record("news")
        peer = await self.v1()
        peer.publish("news", {"from": "v1"})
        await wait_until(lambda: [e.args for e in v2.received.get("news", [])] == [[{"from": "v1"}]])

    async def test_v2_pattern_subscriptions_receive_v1_publications(self) -> None:
        self.serve_app()
        v2 = await self.connect()
        await v2.record("chat/", match="prefix")
        peer = await self.v1()
        peer.publish("chat/general", "to the pattern")
        await wait_until(lambda: [e.payload for e in v2.received.get("chat/", [])] == ["to the pattern"])
        self.assertEqual(v2.received["chat/"][0].details.topic, "chat/general")

    async def test_topic_broadcast_excluding_the_publishing_session_v1_or_v2(self) -> None:
        self.serve_app()
        alice, bob = await self.v1(), await self.v1()
        carol = await self.connect()
        for peer in (alice, bob):
            await self.subscribed(peer, "relay")
        await carol.record("relay")
        alice.publish("relay", "from alice", False)  # the topic excludes her anyway
        await self.barrier(alice)
        await carol.publish("relay", "from carol", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: bob.events("relay") == ["from alice", "from carol"])
        await wait_until(lambda: [e.payload for e in carol.received["relay"]] == ["from alice"])
        await self.barrier(alice)
        self.assertEqual(alice.events("relay"), ["from carol"])

    async def test_app_and_topic_broadcast_with_exclude_and_eligible(self) -> None:
        self.serve_app()
        a, b = await self.v1(), await self.v1()
        v2 = await self.connect()
        for peer in (a, b):
            await self.subscribed(peer, "to/all")
        await v2.record("to/all")
        await a.call("to.broadcast", "all", "everyone", [], None)
        await a.call("to.broadcast", "all", "not b", [b.session_id], None)
        await a.call("to.broadcast", "all", "only b and v2", [], [b.session_id, str(v2._session_id)])
        await wait_until(lambda: len(v2.received.get("to/all", [])) == 3)
        await self.barrier(a)
        await self.barrier(b)
        self.assertEqual(a.events("to/all"), ["everyone", "not b"])
        self.assertEqual(b.events("to/all"), ["everyone", "only b and v2"])


class BlogTests(Wamp1TestCase):
    """The seed's own client code: a v1 page on examples.blog."""

    def setUp(self) -> None:
        blog._articles.clear()
        self.addCleanup(blog._articles.clear)
        self.serve(blog.app)

    async def test_a_posted_article_reaches_a_v1_subscriber(self) -> None:
        peer = await self.v1()
        await self.subscribed(peer, "articles")
        response = await self.http().post(
            f"{self.base_url}/api/articles",
            data=json.dumps({"title": "Unicorns"}).encode(),
            headers={b"Content-Type": [b"application/json"]},
        )
        self.assertEqual(response.code, 201)
        await response.content()
        await wait_until(lambda: len(peer.events("articles")) == 1)
        event = peer.events("articles")[0]
        self.assertEqual(event["message"], "An article has just been published: Unicorns")

    async def test_chat_greets_and_relays_between_v1_and_v2(self) -> None:
        alice, bob = await self.v1(), await self.v1()
        carol = await self.connect()
        alice.subscribe("chat/general")
        bob.subscribe("chat/general")
        await carol.record("chat/general")
        await wait_until(lambda: bob.events("chat/general") == ["Welcome on general"])
        await wait_until(lambda: alice.events("chat/general") == ["Welcome on general"])
        alice.publish("chat/general", {"text": "hi from v1"})
        await self.barrier(alice)  # handled before carol's, so everyone gets them in this order
        await carol.publish("chat/general", {"text": "hi from v2"}, options=PublishOptions(acknowledge=True))
        both = ["Welcome on general", {"text": "hi from v1"}, {"text": "hi from v2"}]
        await wait_until(lambda: bob.events("chat/general") == both)
        await wait_until(
            lambda: alice.events("chat/general") == ["Welcome on general", {"text": "hi from v2"}]
        )
        await wait_until(
            lambda: [e.payload for e in carol.received["chat/general"]] == ["Welcome on general", both[1]]
        )


class IdentityTests(Wamp1TestCase):
    def serve_login_app(self) -> Sandstone:
        app = self.serve_app(anonymous=False)

        @app.route("/login", methods=["POST"])
        def login(request: IRequest) -> bytes:
            return app.login(request, Identity("alice", "member")).encode()

        @app.route("/logout", methods=["POST"])
        def logout(request: IRequest) -> bytes:
            app.logout(request)
            return b""

        return app

    async def log_in(self) -> tuple[str, str]:
        response = await self.http().post(f"{self.base_url}/login")
        token = (await response.content()).decode()
        cookie = response.cookies()["sandstone_session"]
        return token, cookie

    async def test_cookie_from_app_login_gives_the_identity(self) -> None:
        self.serve_login_app()
        _token, cookie = await self.log_in()
        peer = await self.v1(headers={"Cookie": f"sandstone_session={cookie}"})
        peer.subscribe("whoami")
        await wait_until(lambda: peer.events("whoami") == [["alice", "member", "cookie"]])

    async def test_bearer_token_gives_the_identity(self) -> None:
        self.serve_login_app()
        token, _cookie = await self.log_in()
        peer = await self.v1(headers={"Authorization": f"Bearer {token}"})
        peer.subscribe("whoami")
        await wait_until(lambda: peer.events("whoami") == [["alice", "member", "cookie"]])

    async def test_anonymous_where_allowed(self) -> None:
        self.serve_app()
        peer = await self.v1()
        peer.subscribe("whoami")
        await wait_until(lambda: len(peer.events("whoami")) == 1)
        authid, authrole, authmethod = peer.events("whoami")[0]
        self.assertEqual((authrole, authmethod), ("anonymous", "anonymous"))

    async def test_no_login_and_no_anonymous_gets_403(self) -> None:
        self.serve_login_app()
        host = f"127.0.0.1:{self.port}"
        status, _ = await handshake_status(self, self.port, upgrade_request(host))
        self.assertEqual(status, 403)
        bad_cookie = upgrade_request(host, extra=["Cookie: sandstone_session=forged"])
        self.assertEqual((await handshake_status(self, self.port, bad_cookie))[0], 403)
        self.assertEqual(self.app.router.stats["wamp1_refused"], 2)

    async def test_logout_closes_the_v1_session(self) -> None:
        self.serve_login_app()
        _token, cookie = await self.log_in()
        peer = await self.v1(headers={"Cookie": f"sandstone_session={cookie}"})
        await self.http().post(f"{self.base_url}/logout", headers={"Cookie": f"sandstone_session={cookie}"})
        code, reason = await peer.closed
        self.assertEqual((code, reason), (1000, "logged out"))


class MalformedTests(Wamp1TestCase):
    async def assert_closed(self, frame: Any, code: int, reason: str, *, binary: bool = False) -> None:
        """Send ``frame`` from a subscribed v1 peer: the connection closes with ``code`` and a reason
        containing ``reason``, its subscriptions are gone, and another subscriber carries on."""
        self.serve_app()
        bad, good = await self.v1(), await self.v1()
        await self.subscribed(bad, "news")
        await self.subscribed(good, "news")
        if binary:
            bad.sendMessage(b'[5, "news"]', isBinary=True)
        elif isinstance(frame, bytes):
            bad.sendMessage(frame)
        else:
            bad.send(frame)
        closed_code, closed_reason = await bad.closed
        self.assertEqual(closed_code, code)
        self.assertIn(reason, closed_reason or "")
        self.assertNotIn(int(bad.session_id or 0), self.app.router.sessions)
        self.assertEqual([str(s.id) for s in self.app.topic_instance("news").subscribers], [good.session_id])
        self.app.broadcast("news", "still here")
        await wait_until(lambda: good.events("news") == ["still here"])

    async def test_not_json(self) -> None:
        await self.assert_closed(b"[5, 'news']", 1002, "not JSON")

    async def test_not_a_list(self) -> None:
        await self.assert_closed({"type": 5}, 1002, "must be a non-empty list, got dict")

    async def test_empty_list(self) -> None:
        await self.assert_closed([], 1002, "got an empty list")

    async def test_unknown_type_id(self) -> None:
        await self.assert_closed([42, "x"], 1002, "unknown WAMP v1 message type 42")

    async def test_type_id_not_an_integer(self) -> None:
        await self.assert_closed(["5", "news"], 1002, "unknown WAMP v1 message type '5'")

    async def test_a_server_message_from_a_client(self) -> None:
        await self.assert_closed([8, "news", 1], 1002, "EVENT (type 8) is sent by servers only")

    async def test_subscribe_with_a_number_for_a_topic(self) -> None:
        await self.assert_closed([5, 17], 1002, "SUBSCRIBE must be [5, topicUri]")

    async def test_unsubscribe_without_topic(self) -> None:
        await self.assert_closed([6], 1002, "UNSUBSCRIBE must be [6, topicUri]")

    async def test_prefix_with_a_missing_uri(self) -> None:
        await self.assert_closed([1, "p"], 1002, "PREFIX must be [1, prefix, uri]")

    async def test_publish_without_event(self) -> None:
        await self.assert_closed([7, "news"], 1002, "PUBLISH must be")

    async def test_publish_with_a_wrong_fourth_element(self) -> None:
        await self.assert_closed([7, "news", 1, "yes"], 1002, "4th element")

    async def test_publish_with_a_non_id_in_exclude(self) -> None:
        await self.assert_closed([7, "news", 1, [{"id": 1}]], 1002, "must list session ids")

    async def test_publish_with_a_wrong_eligible(self) -> None:
        await self.assert_closed([7, "news", 1, [], "all"], 1002, "eligible")

    async def test_call_without_id(self) -> None:
        await self.assert_closed([2], 1002, "call id")

    async def test_call_with_a_number_for_an_id(self) -> None:
        await self.assert_closed([2, 5, "math.add"], 1002, "call id")

    async def test_call_with_an_empty_id(self) -> None:
        await self.assert_closed([2, "", "math.add"], 1002, "call id")

    async def test_call_without_procedure(self) -> None:
        await self.assert_closed([2, "c1", None], 1002, "procedure URI")

    async def test_binary_frame(self) -> None:
        await self.assert_closed(None, 1003, "binary frame", binary=True)


class LimitTests(Wamp1TestCase):
    async def test_a_foreign_origin_gets_403(self) -> None:
        self.serve_app()
        request = upgrade_request(f"127.0.0.1:{self.port}", extra=["Origin: http://evil.example"])
        self.assertEqual((await handshake_status(self, self.port, request))[0], 403)

    async def test_beyond_max_connections_gets_503(self) -> None:
        self.serve_app(limits=Limits(max_connections=1))
        await self.v1()
        status, _ = await handshake_status(self, self.port, upgrade_request(f"127.0.0.1:{self.port}"))
        self.assertEqual(status, 503)

    async def test_an_oversize_message_closes_with_1009(self) -> None:
        self.serve_app(limits=Limits(max_message_size=1024))
        peer = await self.v1()
        peer.publish("news", "x" * 2000)
        code, _reason = await peer.closed
        self.assertEqual(code, 1009)

    async def test_an_oversize_result_becomes_callerror(self) -> None:
        app = self.serve_app(limits=Limits(max_message_size=1024))
        app.procedure("big")(lambda: "x" * 2000)
        peer = await self.v1()
        answer = await peer.call("big")
        self.assertEqual(answer[:3], [CALLERROR, "c1", "sandstone.error.payload_too_large"])

    async def test_call_rate_limit_answers_callerror(self) -> None:
        self.serve_app(limits=Limits(call_rate=0.001, call_burst=1))
        peer = await self.v1()
        first, second = peer.call("math.add", 1, 1), peer.call("math.add", 1, 2)
        self.assertEqual((await first)[0], CALLRESULT)
        self.assertEqual((await second)[:3], [CALLERROR, "c2", "sandstone.error.rate_limited"])

    async def test_a_v1_subscriber_that_stops_reading_is_dropped(self) -> None:
        app = self.serve_app(limits=Limits(max_outgoing_buffer=256 * 1024))
        slow = await self.v1()
        await self.subscribed(slow, "news")
        slow.transport.pauseProducing()
        self.addCleanup(slow.transport.resumeProducing)
        publisher = await self.connect()
        payload = "x" * 60_000
        for _ in range(200):
            await publisher.publish("news", payload, options=PublishOptions(acknowledge=True))
            if app.router.stats["slow_consumers_dropped"]:
                break
        self.assertEqual(app.router.stats["slow_consumers_dropped"], 1)
        await wait_until(lambda: int(slow.session_id or 0) not in app.router.sessions)

    async def test_shutdown_closes_with_1001(self) -> None:
        app = self.serve_app()
        peer = await self.v1()
        await app.shutdown_service(self.site, timeout=2).stopService()
        self.assertEqual((await peer.closed)[0], 1001)

    async def test_shutdown_with_goodbye_closes_v1_at_once_with_1001(self) -> None:
        app = self.serve_app()
        peer = await self.v1()
        started = self.app.router.clock()
        await app.shutdown_service(self.site, timeout=5, goodbye=True).stopService()
        self.assertEqual((await peer.closed)[0], 1001)
        self.assertLess(self.app.router.clock() - started, 0.9)  # no GOODBYE grace for v1


class ClusterTests(ClusterTestCase):
    async def test_a_v1_client_and_a_v2_client_on_two_nodes(self) -> None:
        node_a, node_b = await self.start_cluster(lambda: make_app(open_uris=True), 2)
        peer = await connect_v1(self, node_a.ws_url)
        v2 = await self.connect_to(node_b)
        await v2.record("news")
        await v2.register(lambda x: x * 2, "com.example.double")
        peer.subscribe("news")
        await wait_until(lambda: subscribed(node_a.app, peer, "news"))

        await v2.publish("news", "from B", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: peer.events("news") == ["from B"])
        peer.publish("news", "from A")
        await wait_until(lambda: [e.payload for e in v2.received["news"]] == ["from A"])
        # REGISTERED came once the registration was claimed in Redis: node A passes the call on to B.
        self.assertEqual(await peer.call("com.example.double", 21), [CALLRESULT, "c1", 42])
