"""Tests for L{examples.blog}: the seed scenario, REST and WAMP together, in memory."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.trial.unittest import SynchronousTestCase

from examples import blog
from sandstone.testing import TestClient, TestResponse, TestSession


class BlogTestCase(SynchronousTestCase):
    """The example's module-level app, with its articles cleared and every test session closed after."""

    def setUp(self) -> None:
        blog._articles.clear()
        self.addCleanup(blog._articles.clear)
        self.client = TestClient(blog.app)

    def connect(self) -> TestSession:
        session = self.client.connect()
        self.addCleanup(session.disconnect)
        return session

    def post(self, title: Any) -> TestResponse:
        return self.client.post("/api/articles", json={"title": title})


class CreateArticleTests(BlogTestCase):
    """POST /api/articles."""

    def test_post_answers_201_with_the_article(self) -> None:
        response = self.post("Hello")
        self.assertEqual((response.code, response.json()), (201, {"id": 1, "title": "Hello"}))

    def test_post_answers_json(self) -> None:
        self.assertEqual(self.post("Hello").headers["Content-Type"], ["application/json"])

    def test_articles_get_increasing_ids(self) -> None:
        ids = [self.post(f"Article {n}").json()["id"] for n in range(3)]
        self.assertEqual(ids, [1, 2, 3])

    def test_title_is_stripped(self) -> None:
        self.assertEqual(self.post("  Spaced out  ").json()["title"], "Spaced out")

    def test_post_dispatches_article_created(self) -> None:
        seen: list[Any] = []
        blog.app.events.add_listener("article.created", seen.append)
        self.addCleanup(blog.app.events.remove_listener, "article.created", seen.append)
        self.post("Hello")
        [event] = seen
        self.assertEqual((event.article.id, event.article.title), (1, "Hello"))


class InvalidArticleTests(BlogTestCase):
    """Bad POSTs answer 400, store nothing and announce nothing."""

    def setUp(self) -> None:
        super().setUp()
        self.subscription = self.connect().subscribe("articles")

    def assertRefused(self, response: TestResponse) -> None:
        self.assertEqual(response.code, 400)
        self.assertIn("title", response.json()["error"])
        self.assertEqual(self.client.get("/api/articles").json(), [])
        self.assertEqual(self.subscription.events, [])

    def test_body_that_is_not_json_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", data=b"title=Hello"))

    def test_body_that_is_not_utf8_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", data=b"\xff\xfe"))

    def test_title_with_a_lone_surrogate_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", data=b'{"title": "A \\ud800 B"}'))

    def test_empty_body_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", data=b""))

    def test_missing_title_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", json={"name": "Hello"}))

    def test_empty_title_is_refused(self) -> None:
        self.assertRefused(self.post(""))

    def test_blank_title_is_refused(self) -> None:
        self.assertRefused(self.post("   "))

    def test_title_that_is_not_a_string_is_refused(self) -> None:
        self.assertRefused(self.post(42))

    def test_json_that_is_not_an_object_is_refused(self) -> None:
        self.assertRefused(self.client.post("/api/articles", json=["Hello"]))


class ReadArticleTests(BlogTestCase):
    """GET /api/articles and /api/articles/<id>."""

    def test_list_is_empty_at_first(self) -> None:
        response = self.client.get("/api/articles")
        self.assertEqual((response.code, response.json()), (200, []))

    def test_list_has_every_article_in_order(self) -> None:
        for title in ("One", "Two"):
            self.post(title)
        self.assertEqual(
            self.client.get("/api/articles").json(), [{"id": 1, "title": "One"}, {"id": 2, "title": "Two"}]
        )

    def test_get_one_article(self) -> None:
        self.post("One")
        self.post("Two")
        response = self.client.get("/api/articles/2")
        self.assertEqual((response.code, response.json()), (200, {"id": 2, "title": "Two"}))

    def test_unknown_article_is_404_json(self) -> None:
        response = self.client.get("/api/articles/99")
        self.assertEqual((response.code, response.json()), (404, {"error": "no article 99"}))
        self.assertEqual(response.headers["Content-Type"], ["application/json"])

    def test_non_numeric_id_is_404(self) -> None:
        self.assertEqual(self.client.get("/api/articles/abc").code, 404)

    def test_get_only_collection_refuses_put(self) -> None:
        self.assertEqual(self.client.request("PUT", "/api/articles").code, 405)


class ArticlesTopicTests(BlogTestCase):
    """Subscribers of ``articles`` hear about every new article."""

    def test_subscriber_receives_the_announcement(self) -> None:
        subscription = self.connect().subscribe("articles")
        self.post("Hello")
        self.assertEqual(
            subscription.payloads,
            [
                {
                    "message": "An article has just been published: Hello",
                    "article": {"id": 1, "title": "Hello"},
                }
            ],
        )

    def test_subscribing_sends_nothing(self) -> None:
        self.assertEqual(self.connect().subscribe("articles").events, [])

    def test_no_announcement_after_unsubscribe(self) -> None:
        session = self.connect()
        subscription = session.subscribe("articles")
        session.unsubscribe(subscription)
        self.post("Hello")
        self.assertEqual(subscription.events, [])

    def test_post_without_subscribers_succeeds(self) -> None:
        self.assertEqual(self.post("Alone").code, 201)
        self.assertIsNone(blog.app.topic_instance("articles"))

    def test_fifty_posts_reach_every_subscriber_in_order(self) -> None:
        subscriptions = [self.connect().subscribe("articles") for _ in range(3)]
        for n in range(50):
            self.assertEqual(self.post(f"Article {n}").code, 201)
        expected = [f"An article has just been published: Article {n}" for n in range(50)]
        for subscription in subscriptions:
            self.assertEqual([p["message"] for p in subscription.payloads], expected)
            self.assertEqual([p["article"]["id"] for p in subscription.payloads], list(range(1, 51)))


class ChatTests(BlogTestCase):
    """``chat/{channel}``: a welcome for newcomers, messages relayed to the others."""

    def setUp(self) -> None:
        super().setUp()
        self.alice, self.bob = self.connect(), self.connect()
        self.alice_general = self.alice.subscribe("chat/general")

    def test_newcomer_is_welcomed(self) -> None:
        self.assertEqual(self.alice_general.payloads, ["Welcome on general"])

    def test_welcome_goes_to_the_newcomer_only(self) -> None:
        bob_general = self.bob.subscribe("chat/general")
        self.assertEqual((self.alice_general.payloads, bob_general.payloads), (["Welcome on general"],) * 2)

    def test_welcome_names_the_channel(self) -> None:
        self.assertEqual(self.alice.subscribe("chat/random").payloads, ["Welcome on random"])

    def test_message_is_relayed_to_the_others_not_the_publisher(self) -> None:
        bob_general = self.bob.subscribe("chat/general")
        self.alice.publish("chat/general", "hi bob")
        self.assertEqual(bob_general.payloads[1:], ["hi bob"])
        self.assertEqual(self.alice_general.payloads[1:], [])

    def test_exclude_me_false_relays_to_the_publisher_too(self) -> None:
        bob_general = self.bob.subscribe("chat/general")
        self.alice.publish("chat/general", "hi all", exclude_me=False)
        self.assertEqual(
            (bob_general.payloads[1:], self.alice_general.payloads[1:]), (["hi all"], ["hi all"])
        )

    def test_channels_are_separate(self) -> None:
        bob_random = self.bob.subscribe("chat/random")
        self.alice.publish("chat/general", "general only")
        self.assertEqual(bob_random.payloads, ["Welcome on random"])

    def test_publishing_on_an_empty_channel_reaches_nobody(self) -> None:
        publication = self.bob.publish("chat/news", "anyone?", acknowledge=True)
        self.assertIsInstance(publication, int)
        self.assertEqual(self.alice_general.payloads, ["Welcome on general"])
        self.assertIsNone(blog.app.topic_instance("chat/news"))

    def test_undeclared_topic_subscribe_fails(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.bob.subscribe("nochat/x")
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_undeclared_topic_publish_with_acknowledge_fails(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.bob.publish("nochat/x", "hello?", acknowledge=True)
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_leaving_releases_the_channel(self) -> None:
        self.alice.disconnect()
        self.assertIsNone(blog.app.topic_instance("chat/general"))
