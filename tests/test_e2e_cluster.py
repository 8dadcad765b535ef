"""End-to-end cluster tests: sandstone nodes in one reactor, each its own app, port and bus, sharing a
real redis-server, with autobahn clients on every node. Every subscriber gets each broadcast exactly once,
in order.

"Nothing more arrives" is checked with a marker: a last message from the same source, after which an earlier
message could not arrive any more (one node's messages cross Redis in order), or a short sleep otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult, PublishOptions, RegisterOptions
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.web.iweb import IRequest

from examples.blog import Article, ArticleCreated
from sandstone import Sandstone, Session, Topic, on_event
from sandstone.push import Pusher
from tests.cluster_support import ClusterTestCase, Node, counts
from tests.support import Client, DisclosingClient, sleep, wait_until

SERIALIZERS = ("json", "msgpack", "cbor")


def make_blog(name: str = "") -> Sandstone:
    """A node of the blog: REST posts forwarded as events, topics broadcasting them, a chat, rooms whose
    ``on_subscribe`` broadcasts, a REST route broadcasting, and app procedures."""
    app = Sandstone(anonymous=True)
    app.forward("article.created", ArticleCreated)
    articles: dict[int, Article] = {}

    @app.route("/api/articles", methods=["POST"])
    async def create_article(request: IRequest) -> bytes:
        article = Article(len(articles) + 1, json.loads(request.content.read())["title"])
        articles[article.id] = article
        await app.dispatch("article.created", ArticleCreated(article))
        request.setResponseCode(201)
        return json.dumps(asdict(article)).encode()

    @app.route("/api/announce", methods=["POST"])
    def announce(request: IRequest) -> bytes:
        body = json.loads(request.content.read())
        return json.dumps({"publication": app.broadcast(body["topic"], body["payload"])}).encode()

    @app.on_event("article.created", priority=10)
    async def audit(event: ArticleCreated) -> None:
        await deferLater(reactor, 0.005, lambda: None)  # the listeners after this one resume later

    @app.on_event("article.created", priority=-10)
    def log_article(event: ArticleCreated) -> None:
        app.broadcast("log.articles", {"logged": event.article.title})  # an app listener, on every node

    @app.topic("articles")
    class Articles(Topic):
        @on_event("article.created")
        def created(self, event: ArticleCreated) -> None:
            self.broadcast(
                {
                    "message": f"An article has just been published: {event.article.title}",
                    "article": asdict(event.article),
                }
            )

    @app.topic("feeds.{section}")
    class Feed(Topic):
        @on_event("article.created")
        def created(self, event: ArticleCreated) -> None:
            self.broadcast({"section": self.args["section"], "title": event.article.title})

    @app.topic("chat/{channel}")
    class Chat(Topic):
        def on_subscribe(self, session: Session) -> None:
            self.send(session, f"Welcome on {self.args['channel']}")

    @app.topic("rooms.{room}")
    class Room(Topic):
        def on_subscribe(self, session: Session) -> None:
            self.broadcast({"joined": session.id})

    @app.procedure("com.app.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.procedure("com.app.where")
    def where() -> str:
        return name

    return app


def open_router() -> Sandstone:
    return Sandstone(anonymous=True, open_uris=True)


class BlogClusterTestCase(ClusterTestCase):
    async def blog_cluster(self, count: int = 3) -> list[Node]:
        names = iter("ABCDEFGH")
        return await self.start_cluster(lambda: make_blog(next(names)), count)

    async def post(self, node: Node, path: str, body: Any) -> Any:
        response = await self.http().post(f"{node.base_url}{path}", json=body)
        self.assertIn(response.code, (200, 201))
        return await response.json()

    async def settle(self) -> None:
        """Give stray copies the time to arrive (there is no marker to wait for)."""
        await sleep(0.3)


class ForwardedEventTests(BlogClusterTestCase):
    async def test_rest_post_reaches_every_subscriber_once_with_one_publication_id(self) -> None:
        a, b, c = await self.blog_cluster()
        readers = {}
        for node, serializer in zip((a, b, c), SERIALIZERS, strict=True):
            readers[node.name] = reader = await self.connect_to(node, serializer)
            await reader.record("articles")
            await reader.record("log.", match="prefix")
        # exact feed subscribers on A and B only; C has pattern subscribers of the feed and no instance
        feed_a, feed_b = await self.connect_to(a), await self.connect_to(b, "cbor")
        for client in (feed_a, feed_b):
            await client.record("feeds.news")
        await feed_a.record("feeds.", match="prefix")  # same session: one EVENT per subscription
        patterns_c = await self.connect_to(c, "msgpack")
        await patterns_c.record("feeds.", match="prefix")
        await patterns_c.record(".news", match="wildcard")
        self.assertIsNone(c.app.topic_instance("feeds.news"))

        article = await self.post(a, "/api/articles", {"title": "Unicorns"})
        self.assertEqual(article, {"id": 1, "title": "Unicorns"})
        feed_subscriptions = [
            (feed_a, "feeds.news"),
            (feed_a, "feeds."),
            (feed_b, "feeds.news"),
            (patterns_c, "feeds."),
            (patterns_c, ".news"),
        ]
        everything = [(r, t) for r in readers.values() for t in ("articles", "log.")] + feed_subscriptions
        await wait_until(lambda: all(counts(client, topic) for client, topic in everything))
        await self.settle()
        for reader in readers.values():
            self.assertEqual(
                counts(reader, "articles"),
                [{"message": "An article has just been published: Unicorns", "article": article}],
            )
            self.assertEqual(counts(reader, "log."), [{"logged": "Unicorns"}])
        for client, topic in feed_subscriptions:
            self.assertEqual(counts(client, topic), [{"section": "news", "title": "Unicorns"}], topic)
        for topic in ("articles", "log."):
            ids = {r.received[topic][0].details.publication for r in readers.values()}
            self.assertEqual(len(ids), 1, topic)
        feed_ids = {client.received[topic][0].details.publication for client, topic in feed_subscriptions}
        self.assertEqual(len(feed_ids), 1)
        for client, topic in feed_subscriptions[1:2] + feed_subscriptions[3:]:
            self.assertEqual(client.received[topic][0].details.topic, "feeds.news")

        # posted on the node without a feed instance: the feed still reaches its pattern subscribers once
        await self.post(c, "/api/articles", {"title": "Dragons"})
        await wait_until(lambda: all(len(counts(client, topic)) == 2 for client, topic in everything))
        await self.settle()
        for client, topic in everything:
            self.assertEqual(len(counts(client, topic)), 2, topic)
        self.assertEqual(counts(patterns_c, ".news")[1], {"section": "news", "title": "Dragons"})
        self.assertEqual(counts(readers["B"], "articles")[1]["article"], {"id": 1, "title": "Dragons"})
        for node in (a, b, c):
            self.assertEqual(node.bus.stats["malformed"], 0)
            self.assertEqual(node.bus.stats["send_failures"], 0)
        self.assertEqual(a.bus.stats["dispatched_remote"], 1)  # C's event; its own went out, not back


class ClientPublishTests(BlogClusterTestCase):
    async def test_chat_publish_reaches_the_other_nodes_with_the_publisher_options(self) -> None:
        a, b, c = await self.blog_cluster()
        alice = await self.connect_to(a, client_class=DisclosingClient)
        bob1, bob2 = await self.connect_to(b, "msgpack"), await self.connect_to(b, "cbor")
        carol = await self.connect_to(c)
        everyone = (alice, bob1, bob2, carol)
        for client in everyone:
            await client.record("chat/general")
        sub = await self.connect_to(c)
        await sub.record("chat/", match="prefix")

        async def say(text: str, **options: Any) -> None:
            await alice.publish(
                "chat/general", {"text": text}, options=PublishOptions(acknowledge=True, **options)
            )

        await say("to the others")
        await say("to all", exclude_me=False)
        await say("not bob1", exclude=[bob1.session_id])
        await say("bob2 and carol", eligible=[bob2.session_id, carol.session_id])
        await say("not bob2", exclude_authid=[bob2.authid])
        await say("only carol", eligible_authid=[carol.authid])
        await say("nobody", exclude_authrole=["anonymous"])
        await say("anonymous ones", eligible_authrole=["anonymous"])
        await say("others than admins", exclude_authrole=["admin"])
        await say("end")
        await wait_until(
            lambda: all(counts(c, "chat/general")[-1:] == [{"text": "end"}] for c in everyone[1:])
        )
        await wait_until(lambda: counts(sub, "chat/")[-1:] == [{"text": "end"}])

        def texts(client: Client, topic: str = "chat/general") -> list[str]:
            return [p if isinstance(p, str) else p["text"] for p in counts(client, topic)]

        self.assertEqual(texts(alice), ["Welcome on general", "to all"])
        common = ["to the others", "to all"]
        tail = ["anonymous ones", "others than admins", "end"]
        self.assertEqual(texts(bob1), ["Welcome on general", *common, "not bob2", *tail])
        self.assertEqual(texts(bob2), ["Welcome on general", *common, "not bob1", "bob2 and carol", *tail])
        self.assertEqual(
            texts(carol),
            ["Welcome on general", *common, "not bob1", "bob2 and carol", "not bob2", "only carol", *tail],
        )
        # a pattern subscriber is not in the eligible lists naming the others
        self.assertEqual(texts(sub, "chat/"), [*common, "not bob1", "not bob2", *tail])

        # the original publisher's identity is disclosed on every node, and the publication id is shared
        for client in (bob1, carol):
            details = client.received["chat/general"][-1].details
            self.assertEqual(
                (details.publisher, details.publisher_authid, details.publisher_authrole),
                (alice.session_id, alice.authid, "anonymous"),
            )
        ids = {c.received["chat/general"][-1].details.publication for c in everyone[1:]}
        self.assertEqual(len(ids | {sub.received["chat/"][-1].details.publication}), 1)

    async def test_args_and_kwargs_cross_as_published_and_the_publisher_is_not_disclosed(self) -> None:
        a, b = await self.blog_cluster(2)
        publisher, reader = await self.connect_to(a, "cbor"), await self.connect_to(b, "msgpack")
        await reader.record("chat/general")
        await publisher.publish(
            "chat/general",
            1,
            [2, "three"],
            {"four": 4.5},
            k=None,
            flag=True,
            options=PublishOptions(acknowledge=True),
        )
        await wait_until(lambda: len(reader.received["chat/general"]) == 2)
        event = reader.received["chat/general"][1]
        self.assertEqual(event.args, [1, [2, "three"], {"four": 4.5}])
        self.assertEqual(event.kwargs, {"k": None, "flag": True})
        self.assertIsNone(event.details.publisher)


class AppBroadcastTests(BlogClusterTestCase):
    async def test_on_subscribe_rest_and_timer_broadcasts_reach_every_node_once(self) -> None:
        a, b, c = await self.blog_cluster()
        watcher = await self.connect_to(a, "cbor")
        await watcher.record("rooms.", match="prefix")
        members = []
        for node, serializer in zip((a, b, c), SERIALIZERS, strict=True):
            member = await self.connect_to(node, serializer)
            await member.record("rooms.lobby")
            members.append(member)
            joined = {"joined": member.session_id}
            await wait_until(
                lambda joined=joined: (
                    all(joined in counts(m, "rooms.lobby") for m in members)
                    and joined in counts(watcher, "rooms.")
                )
            )
        announced = await self.post(b, "/api/announce", {"topic": "rooms.lobby", "payload": "from REST"})
        await wait_until(lambda: all("from REST" in counts(m, "rooms.lobby") for m in members))
        timer = reactor.callLater(0.01, c.app.broadcast, "rooms.lobby", "from a timer")
        self.addCleanup(lambda: timer.cancel() if timer.active() else None)
        await wait_until(lambda: all("from a timer" in counts(m, "rooms.lobby") for m in members))
        await self.post(c, "/api/announce", {"topic": "rooms.lobby", "payload": "end"})
        await wait_until(lambda: all(counts(m, "rooms.lobby")[-1:] == ["end"] for m in members))
        await wait_until(lambda: counts(watcher, "rooms.")[-1:] == ["end"])

        await self.settle()
        joins = [{"joined": m.session_id} for m in members]
        after = ["from REST", "from a timer", "end"]
        for i, member in enumerate(members):
            self.assertEqual(counts(member, "rooms.lobby"), [*joins[i:], *after])
        self.assertEqual(counts(watcher, "rooms."), [*joins, *after])
        rest_ids = {e.details.publication for m in members for e in m.received["rooms.lobby"][-3:-2]}
        self.assertEqual(rest_ids, {announced["publication"]})


class OpenRouterTests(ClusterTestCase):
    async def test_plain_pub_sub_with_patterns_across_nodes(self) -> None:
        a, b, c = await self.start_cluster(open_router, 3)
        publisher, local = await self.connect_to(a), await self.connect_to(a, "msgpack")
        exact_b, patterns_c = await self.connect_to(b, "cbor"), await self.connect_to(c)
        for client in (publisher, local, exact_b):
            await client.record("com.example.news")
        await patterns_c.record("com.example.", match="prefix")
        await patterns_c.record("com..news", match="wildcard")

        options = PublishOptions(acknowledge=True)
        await publisher.publish("com.example.news", 1, 2, k="v", options=options)
        await publisher.publish("com.example.other", "other", options=options)
        await publisher.publish("com.example.news", "end", options=options)
        await wait_until(lambda: counts(exact_b, "com.example.news")[-1:] == ["end"])
        await wait_until(lambda: counts(patterns_c, "com..news")[-1:] == ["end"])
        await wait_until(lambda: counts(local, "com.example.news")[-1:] == ["end"])

        self.assertEqual(counts(publisher, "com.example.news"), [])
        for client in (local, exact_b):
            self.assertEqual(counts(client, "com.example.news"), [1, "end"])
            self.assertEqual(client.received["com.example.news"][0].args, [1, 2])
            self.assertEqual(client.received["com.example.news"][0].kwargs, {"k": "v"})
        self.assertEqual(counts(patterns_c, "com.example."), [1, "other", "end"])
        self.assertEqual(counts(patterns_c, "com..news"), [1, "end"])
        self.assertEqual(
            [e.details.topic for e in patterns_c.received["com.example."]],
            ["com.example.news", "com.example.other", "com.example.news"],
        )

    async def test_messages_arrive_in_order_on_every_node(self) -> None:
        a, b, c = await self.start_cluster(open_router, 3)
        first, second = await self.connect_to(a), await self.connect_to(b, "msgpack")
        readers = [await self.connect_to(node, s) for node, s in zip((a, b, c), SERIALIZERS, strict=True)]
        for reader in readers:
            await reader.record("com.example.seq")
        for n in range(200):
            first.publish("com.example.seq", ["first", n])
            second.publish("com.example.seq", ["second", n])
        await first.publish("com.example.seq", ["first", "end"], options=PublishOptions(acknowledge=True))
        await second.publish("com.example.seq", ["second", "end"], options=PublishOptions(acknowledge=True))
        expected = [*range(200), "end"]
        for reader in readers:
            await wait_until(lambda reader=reader: len(counts(reader, "com.example.seq")) >= 402)
        await sleep(0.2)
        for reader in readers:
            received = counts(reader, "com.example.seq")
            self.assertEqual(len(received), 402)
            for source in ("first", "second"):
                self.assertEqual([n for s, n in received if s == source], expected, source)

    async def test_session_ids_are_distinct_across_nodes(self) -> None:
        nodes = await self.start_cluster(open_router, 3)
        clients = [await self.connect_to(node) for node in nodes for _ in range(5)]
        ids = {client.session_id for client in clients}
        self.assertEqual(len(ids), 15)
        self.assertEqual(set().union(*(node.app.router.sessions for node in nodes)), ids)


def held_procedure() -> tuple[list[defer.Deferred[Any]], Any]:
    """A procedure whose calls wait on Deferreds the test fires: (those Deferreds, the procedure)."""
    pending: list[defer.Deferred[Any]] = []

    def held(*args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        pending.append(d)
        return d

    return pending, held


class RemoteCallTests(BlogClusterTestCase):
    async def assert_call_error(self, client: Client, uri: str, *args: Any, error: str) -> ApplicationError:
        with self.assertRaises(ApplicationError) as caught:
            await client.call(uri, *args)
        self.assertEqual(caught.exception.error, error)
        return caught.exception

    async def test_call_a_callee_on_another_node(self) -> None:
        a, b, c = await self.blog_cluster()
        callee = await self.connect_to(b, "cbor")
        await callee.register(lambda x, y, **kw: {"sum": x + y, "kw": kw}, "com.example.sum")
        await callee.register(lambda: CallResult(1, "two", three=3), "com.example.spread")
        await callee.register(lambda: None, "com.example.nothing")

        def oops(item: str) -> None:
            raise ApplicationError("com.example.error.oops", item, 2, detail="bad")

        await callee.register(oops, "com.example.oops")
        callers = [await self.connect_to(node, s) for node, s in ((a, "json"), (c, "msgpack"), (b, "json"))]
        for caller in callers:
            self.assertEqual(
                await caller.call("com.example.sum", 1, 2, scale=3), {"sum": 3, "kw": {"scale": 3}}
            )
            spread = await caller.call("com.example.spread")
            self.assertEqual((list(spread.results), spread.kwresults), ([1, "two"], {"three": 3}))
            self.assertIsNone(await caller.call("com.example.nothing"))
            error = await self.assert_call_error(
                caller, "com.example.oops", "cup", error="com.example.error.oops"
            )
            self.assertEqual((error.args, error.kwargs), (("cup", 2), {"detail": "bad"}))
        caller = callers[0]
        results = await defer.gatherResults([caller.call("com.example.sum", n, n) for n in range(50)])
        self.assertEqual([r["sum"] for r in results], [2 * n for n in range(50)])
        await self.assert_call_error(caller, "com.example.missing", error="wamp.error.no_such_procedure")
        for node in (a, b, c):
            self.assertEqual(node.bus.remote_calls_in_flight, 0)
            self.assertEqual(node.app.router.dealer.calls_in_flight, 0)

    async def test_binary_arguments_and_results_cannot_cross_nodes_and_say_so(self) -> None:
        a, b = await self.blog_cluster(2)
        callee = await self.connect_to(b, "msgpack")
        await callee.register(lambda data: data, "com.example.echo")
        await callee.register(lambda: b"\x00\x01", "com.example.blob")
        caller = await self.connect_to(a, "msgpack")
        await self.assert_call_error(caller, "com.example.echo", b"\xff", error="wamp.error.invalid_argument")
        await self.assert_call_error(caller, "com.example.blob", error="wamp.error.invalid_argument")
        self.assertEqual(await caller.call("com.example.echo", "text"), "text")
        for node in (a, b):
            self.assertEqual(node.bus.remote_calls_in_flight, 0)
            self.assertEqual(node.app.router.dealer.calls_in_flight, 0)

    async def test_progressive_results_and_disclosure_across_nodes(self) -> None:
        a, b = await self.blog_cluster(2)
        callee = await self.connect_to(b, "msgpack")
        seen: list[Any] = []

        async def count_to(n: int, details: Any = None) -> str:
            seen.append((details.caller, details.caller_authid, details.caller_authrole))
            for i in range(1, n + 1):
                if details.progress is not None:
                    details.progress(i, of=n)
                await deferLater(reactor, 0, lambda: None)
            return "done"

        await callee.register(count_to, "com.example.count", options=RegisterOptions(details_arg="details"))
        caller = await self.connect_to(a, client_class=DisclosingClient)
        progress: list[Any] = []
        options = CallOptions(on_progress=lambda *args, **kwargs: progress.append((args, kwargs)))
        self.assertEqual(await caller.call("com.example.count", 3, options=options), "done")
        self.assertEqual(progress, [((i,), {"of": 3}) for i in (1, 2, 3)])
        self.assertEqual(await caller.call("com.example.count", 2), "done")  # no progress asked: none sent
        self.assertEqual(len(progress), 3)
        plain = await self.connect_to(a, "cbor")
        self.assertEqual(await plain.call("com.example.count", 1), "done")
        self.assertEqual(seen, [(caller.session_id, caller.authid, "anonymous")] * 2 + [(None, None, None)])

    async def test_procedure_already_exists_across_nodes_and_app_procedures_everywhere(self) -> None:
        a, b, c = await self.blog_cluster()
        first = await self.connect_to(b)
        await first.register(lambda: "on B", "com.example.only")
        for node in (a, c, b):
            other = await self.connect_to(node, "cbor")
            with self.assertRaises(ApplicationError) as caught:
                await other.register(lambda: "again", "com.example.only")
            self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
            self.assertEqual(await other.call("com.example.only"), "on B")
            # every node serves the app's procedures itself
            self.assertEqual(await other.call("com.app.where"), node.name)
            self.assertEqual(await other.call("com.app.add", 2, 3), 5)
            with self.assertRaises(ApplicationError) as caught:
                await other.register(lambda: None, "com.app.add")
            self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
        self.assertEqual(len(self.redis_client().hgetall(a.bus.channels.procedures)), 1)

    async def test_a_refused_claim_after_the_session_left(self) -> None:
        a, b = await self.blog_cluster(2)
        owner = await self.connect_to(a)
        await owner.register(lambda: "A", "com.example.taken")
        # REGISTER on B, then gone before Redis refuses the claim; meanwhile another session of B tries too
        leaving, trying = await self.connect_to(b), await self.connect_to(b, "cbor")
        leaving.register(lambda: "B", "com.example.taken").addErrback(lambda _: None)
        await self.drop(leaving)
        with self.assertRaises(ApplicationError) as caught:
            await trying.register(lambda: "B again", "com.example.taken")
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
        # B knows the registration (its callee is A's), and serves none of it itself
        registration = b.app.router.dealer.registration("com.example.taken")
        assert registration is not None
        self.assertEqual([getattr(c, "node", None) for c in registration.callees], [a.bus.node_id])
        self.assertEqual(len(b.app.router.dealer), len(a.app.router.dealer) - 1)  # the app's two procedures
        self.assertEqual(await trying.call("com.example.taken"), "A")

    async def test_unregister_frees_the_uri_for_another_node(self) -> None:
        a, b = await self.blog_cluster(2)
        on_b, on_a = await self.connect_to(b), await self.connect_to(a)
        registration = await on_b.register(lambda: "B", "com.example.temp")
        self.assertEqual(await on_a.call("com.example.temp"), "B")
        await registration.unregister()
        await wait_until(
            lambda: not self.redis_client().hexists(a.bus.channels.procedures, "com.example.temp")
        )
        await self.assert_call_error(on_a, "com.example.temp", error="wamp.error.no_such_procedure")
        await on_a.register(lambda: "A", "com.example.temp")
        self.assertEqual(await on_b.call("com.example.temp"), "A")

    async def test_callee_leaving_with_calls_in_flight(self) -> None:
        a, b = await self.blog_cluster(2)
        callee, caller = await self.connect_to(b, "msgpack"), await self.connect_to(a)
        pending, held = held_procedure()
        await callee.register(held, "com.example.hang")
        calls = [caller.call("com.example.hang", n) for n in range(3)]
        await wait_until(lambda: len(pending) == 3)
        self.assertEqual(a.bus.remote_calls_in_flight, 3)
        await self.drop(callee)
        for call in calls:
            with self.assertRaises(ApplicationError) as caught:
                await call
            self.assertEqual(caught.exception.error, "wamp.error.canceled")
        self.assertEqual(a.bus.remote_calls_in_flight, 0)
        self.assertEqual(b.app.router.dealer.calls_in_flight, 0)
        await wait_until(
            lambda: not self.redis_client().hexists(a.bus.channels.procedures, "com.example.hang")
        )
        await self.assert_call_error(caller, "com.example.hang", error="wamp.error.no_such_procedure")
        await caller.register(lambda: "back", "com.example.hang")
        self.assertEqual(await caller.call("com.example.hang"), "back")

    async def test_cancel_a_remote_call(self) -> None:
        a, b = await self.blog_cluster(2)
        callee, caller = await self.connect_to(b), await self.connect_to(a, "cbor")
        pending, held = held_procedure()
        await callee.register(held, "com.example.held")
        call = caller.call("com.example.held")
        outcome: list[Any] = []
        call.addBoth(outcome.append)
        await wait_until(lambda: pending)
        call.cancel()  # CANCEL (killnowait): B interrupts its callee and answers the caller
        await wait_until(lambda: pending[0].called)
        await wait_until(lambda: a.bus.remote_calls_in_flight == 0)
        self.assertEqual(b.app.router.dealer.calls_in_flight, 0)
        self.assertEqual(len(outcome), 1)
        outcome[0].trap(defer.CancelledError, ApplicationError)
        # the caller and the callee are still fine
        call = caller.call("com.example.held", "again")
        await wait_until(lambda: len(pending) == 2)
        pending[1].callback("answered")
        self.assertEqual(await call, "answered")

    async def test_caller_leaving_interrupts_the_remote_callee(self) -> None:
        a, b = await self.blog_cluster(2)
        callee, caller = await self.connect_to(b), await self.connect_to(a)
        pending, held = held_procedure()
        await callee.register(held, "com.example.held")
        caller.call("com.example.held").addErrback(lambda _: None)
        await wait_until(lambda: pending)
        await self.drop(caller)
        await wait_until(lambda: pending[0].called)  # interrupted: autobahn cancels the callee's Deferred
        self.assertEqual(a.bus.remote_calls_in_flight, 0)
        await wait_until(lambda: b.app.router.dealer.calls_in_flight == 0)

    async def test_dead_node_loses_its_registrations_and_fails_calls_in_flight(self) -> None:
        a, b, c = await self.blog_cluster()
        callee = await self.connect_to(b)
        pending, held = held_procedure()
        await callee.register(held, "com.example.dead")
        caller = await self.connect_to(a)
        call = caller.call("com.example.dead")
        await wait_until(lambda: pending)
        await self.kill_bus(b)

        with self.assertRaises(ApplicationError) as caught:
            await call  # within the heartbeat TTL and a beat, not never
        self.assertEqual(caught.exception.error, "wamp.error.canceled")
        self.assertEqual(a.bus.remote_calls_in_flight, 0)
        redis = self.redis_client()
        await wait_until(lambda: not redis.hexists(a.bus.channels.procedures, "com.example.dead"), timeout=5)
        # the node that purged it told the others: they forget it too
        await wait_until(lambda: a.app.router.dealer.registration("com.example.dead") is None)
        await self.assert_call_error(caller, "com.example.dead", error="wamp.error.no_such_procedure")
        # the URI is free for the living nodes
        await caller.register(lambda: "A took over", "com.example.dead")
        other = await self.connect_to(c)
        self.assertEqual(await other.call("com.example.dead"), "A took over")


class PusherTests(BlogClusterTestCase):
    async def test_pusher_dispatches_and_broadcasts_to_a_running_cluster(self) -> None:
        a, b = await self.blog_cluster(2)
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        readers = [await self.connect_to(a), await self.connect_to(b, "msgpack")]
        for reader in readers:
            await reader.record("articles")
            await reader.record("chat/general")
            await reader.record("log.", match="prefix")
        pusher = await deferToThread(Pusher, self.redis.url)
        self.addCleanup(deferToThread, pusher.close)

        event_id = await deferToThread(
            pusher.dispatch, "article.created", ArticleCreated(Article(7, "From a worker"))
        )
        await wait_until(lambda: all(counts(r, "articles") and counts(r, "log.") for r in readers))
        publication = await deferToThread(pusher.broadcast, "chat/general", {"text": "maintenance"})
        await wait_until(
            lambda: all(counts(r, "chat/general")[-1:] == [{"text": "maintenance"}] for r in readers)
        )
        await deferToThread(pusher.dispatch, "article.deleted", {"id": 7})
        await wait_until(lambda: all(node.bus.stats["malformed"] == 1 for node in (a, b)))
        await self.settle()

        for reader in readers:
            self.assertEqual(
                counts(reader, "articles"),
                [
                    {
                        "message": "An article has just been published: From a worker",
                        "article": {"id": 7, "title": "From a worker"},
                    }
                ],
            )
            self.assertEqual(counts(reader, "log."), [{"logged": "From a worker"}])
            self.assertEqual(counts(reader, "chat/general"), ["Welcome on general", {"text": "maintenance"}])
            self.assertEqual(reader.received["chat/general"][-1].details.publication, publication)
        self.assertEqual({r.received["articles"][0].details.publication for r in readers}.__len__(), 1)
        self.assertTrue(event_id)
        dropped = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
        self.assertEqual(
            [m for m in dropped if "'article.deleted' is not forwarded" in m and "dropped a message" in m],
            [
                "cluster bus: dropped a message on sandstone:realm1:events: event 'article.deleted' is not "
                "forwarded over the bus: allow it on every node first"
            ]
            * 2,
        )


class NestedEventTests(ClusterTestCase):
    async def test_an_event_dispatched_by_a_forwarded_events_listener_runs_once_per_node(self) -> None:
        ran: dict[str, list[str]] = {}

        def make(name: str) -> Sandstone:
            app = Sandstone(anonymous=True)
            app.forward("order.placed")
            app.forward("invoice.due")
            ran[name] = []

            @app.on_event("order.placed")
            async def bill(event: dict[str, Any]) -> None:  # runs on every node
                await app.dispatch("invoice.due", {"order": event["order"]})

            @app.on_event("invoice.due")
            def invoice(event: dict[str, Any]) -> None:
                ran[name].append(event["order"])
                app.broadcast("invoices", event)

            @app.topic("invoices")
            class Invoices(Topic):
                pass

            return app

        names = iter("ABC")
        a, b, c = await self.start_cluster(lambda: make(next(names)), 3)
        readers = []
        for node in (a, b, c):
            reader = await self.connect_to(node)
            await reader.record("invoices")
            readers.append(reader)
        await a.app.dispatch("order.placed", {"order": 7})
        await wait_until(lambda: all(counts(r, "invoices") for r in readers))
        await sleep(0.3)
        self.assertEqual(ran, {"A": [7], "B": [7], "C": [7]})
        for reader in readers:
            self.assertEqual(counts(reader, "invoices"), [{"order": 7}])


class RedisPasswordTests(ClusterTestCase):
    async def test_a_password_in_the_url_is_used_by_both_connections(self) -> None:
        self.redis_client().config_set("requirepass", "s3cret")
        secret_url = f"redis://:s3cret@127.0.0.1:{self.redis.port}/0"
        nodes = []
        for name in "AB":
            app = Sandstone(anonymous=True, open_uris=True)
            self.serve(app)
            bus = app.use_redis(secret_url, node_id=name, heartbeat_interval=0.2, heartbeat_ttl=1.0)
            self.addCleanup(self.stop_bus, bus)
            bus.startService()
            await bus.when_connected()
            nodes.append(Node(name, app, bus, self.port))
        reader = await self.connect_to(nodes[1])
        await reader.record("news")
        writer = await self.connect_to(nodes[0])
        await writer.publish("news", {"n": 1}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: counts(reader, "news"))
        self.assertEqual(counts(reader, "news"), [{"n": 1}])


def make_pinged(name: str) -> Sandstone:
    """A node whose topic ``news`` and whose app both broadcast once per forwarded ``ping``."""
    app = Sandstone(anonymous=True, open_uris=True)
    app.forward("ping")

    @app.topic("news")
    class News(Topic):
        @on_event("ping")
        def pinged(self, event: dict[str, Any]) -> None:
            self.broadcast({"news": event["n"]})

    @app.on_event("ping")
    def log_ping(event: dict[str, Any]) -> None:
        app.broadcast("log.pings", {"logged": event["n"]})

    return app


class BusCostTests(ClusterTestCase):
    """A broadcast made on every node while a forwarded event is handled crosses the bus once, whatever the
    number of nodes making it (O(N) receipts, not N per node)."""

    async def test_each_keyed_broadcast_is_published_once(self) -> None:
        names = iter("ABCD")
        nodes = await self.start_cluster(lambda: make_pinged(next(names)), 4)
        *with_instances, patterns_only = nodes
        exact = []
        for node in with_instances:
            client = await self.connect_to(node)
            await client.record("news")
            await client.record("log.", match="prefix")
            exact.append(client)
        watcher = await self.connect_to(patterns_only)
        await watcher.record("ne", match="prefix")
        await watcher.record("log.", match="prefix")
        self.assertIsNone(patterns_only.app.topic_instance("news"))
        redis_client = self.redis_client()
        publishes = int(redis_client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))

        self.successResultOf(nodes[0].app.dispatch("ping", {"n": 1}))
        everything = [(c, t) for c in exact for t in ("news", "log.")] + [(watcher, "ne"), (watcher, "log.")]
        await wait_until(lambda: all(counts(client, topic) for client, topic in everything))
        await sleep(0.3)  # stray copies would have arrived by now

        for client in exact:
            self.assertEqual(counts(client, "news"), [{"news": 1}])
            self.assertEqual(counts(client, "log."), [{"logged": 1}])
        self.assertEqual(counts(watcher, "ne"), [{"news": 1}])
        self.assertEqual(counts(watcher, "log."), [{"logged": 1}])
        ids = {c.received[t][0].details.publication for c, t in everything if t != "log."}
        self.assertEqual(len(ids), 1)
        # the event, then one announcement per key (news by one of its three nodes, log by one of four)
        after = int(redis_client.info("commandstats")["cmdstat_publish"]["calls"])
        self.assertEqual(after - publishes, 3)
        self.assertEqual(sum(node.bus.stats["published"] for node in nodes), 3)
        self.assertEqual(sum(node.bus.stats["announced_elsewhere"] for node in nodes), (3 - 1) + (4 - 1))
        self.assertEqual(sum(node.bus.stats["duplicates"] for node in nodes), 2 + 3)
