"""End-to-end: the example blog app from outside, over real TCP (treq for REST, autobahn for WAMP)."""

from __future__ import annotations

import json
from typing import Any

import treq
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from examples import blog
from tests.support import ServerTestCase, sleep, wait_until

TITLE = "Unicorns spotted in Alaska"
NO_SUCH_TOPIC = "sandstone.error.no_such_topic"


class BlogTestCase(ServerTestCase):
    """Serves ``examples.blog:app`` with an empty article store."""

    def setUp(self) -> None:
        blog._articles.clear()
        self.addCleanup(blog._articles.clear)
        self.serve(blog.app)
        self.client = self.http()
        self.dispatched: list[Any] = []
        blog.app.events.add_listener("article.created", self.dispatched.append)
        self.addCleanup(blog.app.events.remove_listener, "article.created", self.dispatched.append)

    async def post(self, body: Any, *, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        response = await self.client.post(
            f"{self.base_url}/api/articles", data=data, headers={b"Content-Type": [b"application/json"]}
        )
        return response.code, await self.json_of(response)

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(f"{self.base_url}{path}")
        return response.code, await self.json_of(response)

    async def json_of(self, response: Any) -> Any:
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        return await treq.json_content(response)


class RestTests(BlogTestCase):
    async def test_create_returns_201_with_the_article(self) -> None:
        code, body = await self.post({"title": TITLE})
        self.assertEqual(code, 201)
        self.assertEqual(body, {"id": 1, "title": TITLE})

    async def test_list_and_get(self) -> None:
        self.assertEqual(await self.get("/api/articles"), (200, []))
        await self.post({"title": TITLE})
        await self.post({"title": "  Second  "})
        code, articles = await self.get("/api/articles")
        self.assertEqual(code, 200)
        self.assertEqual(articles, [{"id": 1, "title": TITLE}, {"id": 2, "title": "Second"}])
        self.assertEqual(await self.get("/api/articles/2"), (200, {"id": 2, "title": "Second"}))

    async def test_unknown_article_is_404_json(self) -> None:
        code, body = await self.get("/api/articles/42")
        self.assertEqual(code, 404)
        self.assertIn("42", body["error"])

    async def test_bad_bodies_are_400_json_and_dispatch_nothing(self) -> None:
        subscriber = await self.connect()
        await subscriber.record("articles")
        bad: list[tuple[Any, bytes | None]] = [
            (None, b"this is not json"),
            (None, b"\xff\xfe"),
            (None, b""),
            ({}, None),
            ({"title": ""}, None),
            ({"title": "   "}, None),
            ({"title": 42}, None),
            ([TITLE], None),
            ({"name": TITLE}, None),
        ]
        for body, raw in bad:
            code, answer = await self.post(body, raw=raw)
            self.assertEqual(code, 400, (body, raw))
            self.assertIn("title", answer["error"])
        await sleep(0.2)
        self.assertEqual(subscriber.received["articles"], [])
        self.assertEqual(self.dispatched, [])
        self.assertEqual(await self.get("/api/articles"), (200, []))


class ArticleBroadcastTests(BlogTestCase):
    async def test_subscriber_hears_about_a_new_article(self) -> None:
        subscriber = await self.connect()
        await subscriber.record("articles")
        code, article = await self.post({"title": TITLE})
        self.assertEqual(code, 201)
        await wait_until(lambda: subscriber.received["articles"])
        [event] = subscriber.received["articles"]
        self.assertEqual(event.payload["message"], f"An article has just been published: {TITLE}")
        self.assertEqual(event.payload["article"], article)
        self.assertEqual(event.kwargs, {})
        self.assertEqual(len(self.dispatched), 1)

    async def subscribers(self) -> list[Any]:
        clients = []
        for serializer in ("json", "msgpack", "cbor"):
            client = await self.connect(serializer)
            await client.record("articles")
            clients.append(client)
        return clients

    def assert_all_received(self, clients: list[Any], articles: list[dict[str, Any]]) -> None:
        for client in clients:
            got = [event.payload["article"] for event in client.received["articles"]]
            self.assertEqual(got, articles)
            for event in client.received["articles"]:
                self.assertEqual(
                    event.payload["message"],
                    f"An article has just been published: {event.payload['article']['title']}",
                )

    async def test_fifty_sequential_posts_reach_every_subscriber_in_order(self) -> None:
        clients = await self.subscribers()
        articles = []
        for n in range(50):
            code, article = await self.post({"title": f"article {n}"})
            self.assertEqual(code, 201)
            articles.append(article)
        self.assertEqual([a["id"] for a in articles], list(range(1, 51)))
        await wait_until(lambda: all(len(c.received["articles"]) >= 50 for c in clients))
        await sleep(0.05)
        self.assert_all_received(clients, articles)

    async def test_fifty_concurrent_posts_reach_every_subscriber_in_id_order(self) -> None:
        clients = await self.subscribers()
        posts = [self.post({"title": f"article {n}"}) for n in range(50)]
        answers = await defer.gatherResults([defer.Deferred.fromCoroutine(p) for p in posts])
        self.assertEqual({code for code, _ in answers}, {201})
        articles = sorted((article for _, article in answers), key=lambda a: a["id"])
        self.assertEqual([a["id"] for a in articles], list(range(1, 51)))
        self.assertEqual({a["title"] for a in articles}, {f"article {n}" for n in range(50)})
        await wait_until(lambda: all(len(c.received["articles"]) >= 50 for c in clients))
        await sleep(0.05)
        self.assert_all_received(clients, articles)


class ChatTests(BlogTestCase):
    async def test_welcome_goes_to_the_newcomer_only(self) -> None:
        first = await self.connect()
        await first.record("chat/general")
        await wait_until(lambda: first.received["chat/general"])
        self.assertEqual([e.payload for e in first.received["chat/general"]], ["Welcome on general"])

        second = await self.connect("msgpack")
        await second.record("chat/general")
        await second.record("chat/news")
        await wait_until(lambda: second.received["chat/general"] and second.received["chat/news"])
        await sleep(0.1)
        self.assertEqual([e.payload for e in second.received["chat/general"]], ["Welcome on general"])
        self.assertEqual([e.payload for e in second.received["chat/news"]], ["Welcome on news"])
        self.assertEqual([e.payload for e in first.received["chat/general"]], ["Welcome on general"])

    async def test_welcome_arrives_after_subscribed(self) -> None:
        client = await self.connect()
        events: list[Any] = []
        subscribing = client.subscribe(events.append, "chat/general")
        subscribed_with: list[int] = []
        subscribing.addCallback(lambda _: subscribed_with.append(len(events)))
        await subscribing
        self.assertEqual(subscribed_with, [0])  # no EVENT before SUBSCRIBED
        await wait_until(lambda: events)
        self.assertEqual(events, ["Welcome on general"])

    async def chatters(self) -> tuple[Any, Any, Any, Any]:
        publisher, other, another, news = [await self.connect(s) for s in ("json", "cbor", "msgpack", "json")]
        for client in (publisher, other, another):
            await client.record("chat/general")
        await news.record("chat/news")
        await wait_until(
            lambda: (
                all(len(c.received["chat/general"]) == 1 for c in (publisher, other, another))
                and len(news.received["chat/news"]) == 1
            )
        )
        for client in (publisher, other, another):
            del client.received["chat/general"][:]
        del news.received["chat/news"][:]
        return publisher, other, another, news

    async def test_message_reaches_the_others_not_the_publisher(self) -> None:
        publisher, other, another, news = await self.chatters()
        await publisher.publish("chat/general", {"text": "hi"}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: other.received["chat/general"] and another.received["chat/general"])
        await sleep(0.1)
        for client in (other, another):
            [event] = client.received["chat/general"]
            self.assertEqual(event.args, [{"text": "hi"}])
        self.assertEqual(publisher.received["chat/general"], [])
        self.assertEqual(news.received["chat/news"], [])

    async def test_publisher_included_with_exclude_me_false(self) -> None:
        publisher, other, another, news = await self.chatters()
        publisher.publish("chat/general", {"text": "hi"}, options=PublishOptions(exclude_me=False))
        clients = (publisher, other, another)
        await wait_until(lambda: all(c.received["chat/general"] for c in clients))
        await sleep(0.1)
        for client in clients:
            self.assertEqual([e.payload for e in client.received["chat/general"]], [{"text": "hi"}])
        self.assertEqual(news.received["chat/news"], [])

    async def test_undeclared_topic_is_refused_and_the_session_stays_usable(self) -> None:
        client = await self.connect()
        with self.assertRaises(ApplicationError) as caught:
            await client.subscribe(lambda *a: None, "nochat/x")
        self.assertEqual(caught.exception.error, NO_SUCH_TOPIC)

        with self.assertRaises(ApplicationError) as caught:
            await client.publish("nochat/x", {"text": "hi"}, options=PublishOptions(acknowledge=True))
        self.assertEqual(caught.exception.error, NO_SUCH_TOPIC)

        self.assertTrue(client.is_attached())
        await client.record("chat/general")
        await wait_until(lambda: client.received["chat/general"])
        self.assertEqual(client.received["chat/general"][0].payload, "Welcome on general")
        code, _ = await self.post({"title": TITLE})
        self.assertEqual(code, 201)
