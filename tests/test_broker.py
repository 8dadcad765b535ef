"""Tests for L{sandstone._broker}: subscriptions and the delivery of publications as EVENTs."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.interfaces import ISerializer
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Publication, Sandstone, Topic
from sandstone._autobahn_internals import object_serializer
from sandstone._broker import Broker
from sandstone._subscriptions import EXACT, PREFIX, WILDCARD
from sandstone._transport import WampServerFactory, WampServerProtocol
from sandstone.testing import TestClient, TestSession
from tests.support import open_websocket, websocket_payloads

EVENT = message.Event.MESSAGE_TYPE
PUBLISH = message.Publish.MESSAGE_TYPE


def events(session: TestSession) -> list[message.Event]:
    """Every EVENT a test session received, as the router sent it."""
    return [m for m in session.messages if isinstance(m, message.Event)]


def publish_raw(session: TestSession, topic: str, options: dict[str, Any], *args: Any) -> None:
    """Publish with options that ``TestSession.publish`` does not offer."""
    session.send_raw([PUBLISH, 99, options, topic, list(args)])


class PubSubTestCase(SynchronousTestCase):
    """An app whose clients may use any URI (plain pub/sub), and three connected sessions."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.alice = self.client.connect()
        self.bob = self.client.connect()
        self.carol = self.client.connect()


class ExactSubscriptionTests(PubSubTestCase):
    """Exact subscriptions receive publications to their URI."""

    def test_subscriber_receives_args_and_kwargs(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        self.alice.publish("news.sport", 1, "two", score=3)
        [event] = subscription.events
        self.assertEqual((event.args, event.kwargs), ([1, "two"], {"score": 3}))

    def test_subscriber_receives_kwargs_without_args(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        self.alice.publish("news.sport", score=3)
        self.assertEqual(subscription.events[0].kwargs, {"score": 3})

    def test_subscriber_of_another_uri_receives_nothing(self) -> None:
        self.bob.subscribe("news.weather")
        self.alice.publish("news.sport", "goal")
        self.assertEqual(events(self.bob), [])

    def test_exact_event_has_no_topic_detail(self) -> None:
        self.bob.subscribe("news.sport")
        self.alice.publish("news.sport", "goal")
        self.assertIsNone(events(self.bob)[0].topic)

    def test_every_subscriber_receives_the_publication(self) -> None:
        first = self.bob.subscribe("news.sport")
        second = self.carol.subscribe("news.sport")
        self.alice.publish("news.sport", "goal")
        self.assertEqual((first.payloads, second.payloads), (["goal"], ["goal"]))

    def test_events_arrive_in_publication_order(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        for n in range(20):
            self.alice.publish("news.sport", n)
        self.assertEqual(subscription.payloads, list(range(20)))

    def test_repeated_subscribe_returns_the_same_subscription_id(self) -> None:
        first = self.bob.subscribe("news.sport")
        second = self.bob.subscribe("news.sport")
        self.assertEqual(first.id, second.id)

    def test_repeated_subscribe_delivers_once(self) -> None:
        self.bob.subscribe("news.sport")
        self.bob.subscribe("news.sport")
        self.alice.publish("news.sport", "goal")
        self.assertEqual(len(events(self.bob)), 1)

    def test_sessions_on_the_same_topic_share_the_subscription_id(self) -> None:
        self.assertEqual(self.bob.subscribe("news.sport").id, self.carol.subscribe("news.sport").id)


class PatternSubscriptionTests(PubSubTestCase):
    """Prefix and wildcard subscriptions, and publications matching several subscriptions."""

    def test_prefix_subscriber_receives_matching_publication(self) -> None:
        subscription = self.bob.subscribe("news", match="prefix")
        self.alice.publish("news.sport.football", "goal")
        self.assertEqual(subscription.payloads, ["goal"])

    def test_prefix_event_names_the_topic(self) -> None:
        self.bob.subscribe("news", match="prefix")
        self.alice.publish("news.sport.football", "goal")
        self.assertEqual(events(self.bob)[0].topic, "news.sport.football")

    def test_prefix_subscriber_does_not_receive_other_publications(self) -> None:
        self.bob.subscribe("news", match="prefix")
        self.alice.publish("weather.today", "rain")
        self.assertEqual(events(self.bob), [])

    def test_wildcard_subscriber_receives_matching_publication(self) -> None:
        subscription = self.bob.subscribe("news..football", match="wildcard")
        self.alice.publish("news.sport.football", "goal")
        self.assertEqual(subscription.payloads, ["goal"])

    def test_wildcard_event_names_the_topic(self) -> None:
        self.bob.subscribe("news..football", match="wildcard")
        self.alice.publish("news.sport.football", "goal")
        self.assertEqual(events(self.bob)[0].topic, "news.sport.football")

    def test_wildcard_subscriber_does_not_receive_other_publications(self) -> None:
        self.bob.subscribe("news..football", match="wildcard")
        self.alice.publish("news.sport.tennis", "ace")
        self.alice.publish("news.sport.football.live", "goal")
        self.assertEqual(events(self.bob), [])

    def test_one_event_per_matching_subscription(self) -> None:
        exact = self.bob.subscribe("news.sport")
        prefix = self.bob.subscribe("news", match="prefix")
        wildcard = self.bob.subscribe("news.", match="wildcard")
        self.alice.publish("news.sport", "goal")
        self.assertEqual(
            sorted(e.subscription for e in events(self.bob)), sorted([exact.id, prefix.id, wildcard.id])
        )

    def test_all_events_of_a_publication_share_its_id(self) -> None:
        self.bob.subscribe("news.sport")
        self.bob.subscribe("news", match="prefix")
        self.carol.subscribe("news.", match="wildcard")
        publication = self.alice.publish("news.sport", "goal", acknowledge=True)
        ids = {e.publication for e in events(self.bob) + events(self.carol)}
        self.assertEqual(ids, {publication})

    def test_only_pattern_events_name_the_topic(self) -> None:
        exact = self.bob.subscribe("news.sport")
        prefix = self.bob.subscribe("news", match="prefix")
        self.alice.publish("news.sport", "goal")
        topics = {e.subscription: e.topic for e in events(self.bob)}
        self.assertEqual(topics, {exact.id: None, prefix.id: "news.sport"})

    def test_repeated_pattern_subscribe_returns_the_same_subscription_id(self) -> None:
        first = self.bob.subscribe("news", match="prefix")
        self.assertEqual(self.carol.subscribe("news", match="prefix").id, first.id)
        self.assertEqual(self.bob.subscribe("news", match="prefix").id, first.id)

    def test_same_uri_with_another_policy_is_another_subscription(self) -> None:
        exact = self.bob.subscribe("news")
        prefix = self.bob.subscribe("news", match="prefix")
        self.assertNotEqual(exact.id, prefix.id)


class UnsubscribeTests(PubSubTestCase):
    """Unsubscribing."""

    def test_unsubscribed_session_receives_no_more_events(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        self.bob.unsubscribe(subscription)
        self.alice.publish("news.sport", "goal")
        self.assertEqual(events(self.bob), [])

    def test_unsubscribe_is_answered_with_unsubscribed(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        self.bob.unsubscribe(subscription)
        self.assertIsInstance(self.bob.messages[-1], message.Unsubscribed)

    def test_unsubscribing_one_session_keeps_the_others(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        kept = self.carol.subscribe("news.sport")
        self.bob.unsubscribe(subscription)
        self.alice.publish("news.sport", "goal")
        self.assertEqual(kept.payloads, ["goal"])

    def test_unsubscribe_unknown_id_fails_with_no_such_subscription(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        subscription.id += 1
        with self.assertRaises(ApplicationError) as caught:
            self.bob.unsubscribe(subscription)
        self.assertEqual(caught.exception.error, "wamp.error.no_such_subscription")

    def test_unsubscribe_twice_fails_with_no_such_subscription(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        self.bob.unsubscribe(subscription)
        with self.assertRaises(ApplicationError) as caught:
            self.bob.unsubscribe(subscription)
        self.assertEqual(caught.exception.error, "wamp.error.no_such_subscription")

    def test_unsubscribe_of_a_subscription_held_only_by_others_fails(self) -> None:
        subscription = self.carol.subscribe("news.sport")
        with self.assertRaises(ApplicationError) as caught:
            self.bob.unsubscribe(subscription)
        self.assertEqual(caught.exception.error, "wamp.error.no_such_subscription")

    def test_resubscribe_after_unsubscribe_delivers_again(self) -> None:
        self.bob.unsubscribe(self.bob.subscribe("news.sport"))
        subscription = self.bob.subscribe("news.sport")
        self.alice.publish("news.sport", "goal")
        self.assertEqual(subscription.payloads, ["goal"])


class PublisherExclusionTests(PubSubTestCase):
    """exclude_me: a publisher does not receive its own publication unless it says so."""

    def setUp(self) -> None:
        super().setUp()
        self.own = self.alice.subscribe("news.sport")
        self.other = self.bob.subscribe("news.sport")

    def test_publisher_is_excluded_by_default(self) -> None:
        self.alice.publish("news.sport", "goal")
        self.assertEqual((self.own.payloads, self.other.payloads), ([], ["goal"]))

    def test_exclude_me_true_excludes_the_publisher(self) -> None:
        self.alice.publish("news.sport", "goal", exclude_me=True)
        self.assertEqual((self.own.payloads, self.other.payloads), ([], ["goal"]))

    def test_exclude_me_false_delivers_to_publisher(self) -> None:
        self.alice.publish("news.sport", "goal", exclude_me=False)
        self.assertEqual((self.own.payloads, self.other.payloads), (["goal"], ["goal"]))

    def test_publisher_is_excluded_from_its_pattern_subscriptions_too(self) -> None:
        pattern = self.alice.subscribe("news", match="prefix")
        self.alice.publish("news.sport", "goal")
        self.assertEqual(pattern.payloads, [])


class BlackWhiteListingTests(PubSubTestCase):
    """exclude / eligible by session id, authid and authrole."""

    def setUp(self) -> None:
        super().setUp()
        self.publisher = self.client.connect()
        self.subscriptions = {
            name: getattr(self, name).subscribe("news.sport") for name in ("alice", "bob", "carol")
        }

    def receivers(self) -> set[str]:
        return {name for name, subscription in self.subscriptions.items() if subscription.events}

    def test_exclude_by_session_id(self) -> None:
        self.publisher.publish("news.sport", "goal", exclude=[self.bob.id])
        self.assertEqual(self.receivers(), {"alice", "carol"})

    def test_eligible_by_session_id(self) -> None:
        self.publisher.publish("news.sport", "goal", eligible=[self.bob.id, self.carol.id])
        self.assertEqual(self.receivers(), {"bob", "carol"})

    def test_exclude_wins_over_eligible(self) -> None:
        self.publisher.publish(
            "news.sport", "goal", eligible=[self.bob.id, self.carol.id], exclude=[self.bob.id]
        )
        self.assertEqual(self.receivers(), {"carol"})

    def test_empty_eligible_delivers_to_nobody(self) -> None:
        self.publisher.publish("news.sport", "goal", eligible=[])
        self.assertEqual(self.receivers(), set())

    def test_eligible_publisher_is_still_excluded_by_default(self) -> None:
        own = self.publisher.subscribe("news.sport")
        self.publisher.publish("news.sport", "goal", eligible=[self.publisher.id])
        self.assertEqual(own.events, [])

    def test_exclude_by_authid(self) -> None:
        publish_raw(self.publisher, "news.sport", {"exclude_authid": [self.alice.authid]}, "goal")
        self.assertEqual(self.receivers(), {"bob", "carol"})

    def test_eligible_by_authid(self) -> None:
        publish_raw(self.publisher, "news.sport", {"eligible_authid": [self.alice.authid]}, "goal")
        self.assertEqual(self.receivers(), {"alice"})

    def test_exclude_by_authrole(self) -> None:
        publish_raw(self.publisher, "news.sport", {"exclude_authrole": ["anonymous"]}, "goal")
        self.assertEqual(self.receivers(), set())

    def test_exclude_by_another_authrole(self) -> None:
        publish_raw(self.publisher, "news.sport", {"exclude_authrole": ["admin"]}, "goal")
        self.assertEqual(self.receivers(), {"alice", "bob", "carol"})

    def test_eligible_by_authrole(self) -> None:
        publish_raw(self.publisher, "news.sport", {"eligible_authrole": ["anonymous"]}, "goal")
        self.assertEqual(self.receivers(), {"alice", "bob", "carol"})

    def test_eligible_by_another_authrole(self) -> None:
        publish_raw(self.publisher, "news.sport", {"eligible_authrole": ["admin"]}, "goal")
        self.assertEqual(self.receivers(), set())

    def test_session_id_and_authid_rules_combine(self) -> None:
        options = {"eligible": [self.alice.id, self.bob.id], "exclude_authid": [self.alice.authid]}
        publish_raw(self.publisher, "news.sport", options, "goal")
        self.assertEqual(self.receivers(), {"bob"})


class AcknowledgeTests(PubSubTestCase):
    """PUBLISHED, and what happens without acknowledge."""

    def test_acknowledge_is_answered_with_published(self) -> None:
        publication = self.alice.publish("news.sport", "goal", acknowledge=True)
        published = self.alice.messages[-1]
        self.assertIsInstance(published, message.Published)
        self.assertEqual(published.publication, publication)

    def test_published_id_is_the_events_publication_id(self) -> None:
        subscription = self.bob.subscribe("news.sport")
        publication = self.alice.publish("news.sport", "goal", acknowledge=True)
        self.assertEqual(subscription.events[0].publication, publication)

    def test_publications_get_distinct_ids(self) -> None:
        ids = {self.alice.publish("news.sport", n, acknowledge=True) for n in range(10)}
        self.assertEqual(len(ids), 10)

    def test_publish_without_acknowledge_gets_no_answer(self) -> None:
        received = len(self.alice.messages)
        self.alice.publish("news.sport", "goal")
        self.assertEqual(len(self.alice.messages), received)


class DeclaredTopicsTests(SynchronousTestCase):
    """On an app without open URIs, exact URIs must be declared topics."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("news/{section}")
        class News(Topic):
            pass

        self.client = TestClient(self.app)
        self.session = self.client.connect()

    def test_publish_to_undeclared_topic_without_acknowledge_gets_no_answer(self) -> None:
        received = len(self.session.messages)
        self.session.publish("weather", "rain")
        self.assertEqual(len(self.session.messages), received)

    def test_publish_to_undeclared_topic_with_acknowledge_fails_with_no_such_topic(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.session.publish("weather", "rain", acknowledge=True)
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_publish_to_undeclared_topic_reaches_no_pattern_subscriber(self) -> None:
        subscription = self.client.connect().subscribe("weather", match="prefix")
        self.session.publish("weather", "rain")
        self.assertEqual(subscription.events, [])

    def test_exact_subscribe_to_undeclared_topic_fails_with_no_such_topic(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.session.subscribe("weather")
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_failed_subscribe_leaves_no_subscription(self) -> None:
        with self.assertRaises(ApplicationError):
            self.session.subscribe("weather")
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)

    def test_pattern_subscription_needs_no_declared_topic(self) -> None:
        subscription = self.session.subscribe("weather", match="prefix")
        self.assertIsInstance(self.session.messages[-1], message.Subscribed)
        self.assertEqual(subscription.match, "prefix")

    def test_declared_topic_is_delivered(self) -> None:
        subscription = self.session.subscribe("news/sport")
        self.client.connect().publish("news/sport", "goal")
        self.assertEqual(subscription.payloads, ["goal"])


class OpenUrisTests(SynchronousTestCase):
    """``open_uris=True``: plain pub/sub on any valid URI, next to declared topics."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.greeted: list[str] = []
        greeted = self.greeted

        @self.app.topic("declared")
        class Declared(Topic):
            def on_subscribe(self, session: Any) -> None:
                greeted.append(self.uri)

        self.client = TestClient(self.app)

    def test_undeclared_uri_works_as_plain_pub_sub(self) -> None:
        subscription = self.client.connect().subscribe("anything.goes")
        self.client.connect().publish("anything.goes", "yes")
        self.assertEqual(subscription.payloads, ["yes"])

    def test_publish_to_undeclared_uri_is_acknowledged(self) -> None:
        publication = self.client.connect().publish("anything.goes", "yes", acknowledge=True)
        self.assertIsInstance(publication, int)

    def test_undeclared_uri_creates_no_topic_instance(self) -> None:
        self.client.connect().subscribe("anything.goes")
        self.assertIsNone(self.app.topic_instance("anything.goes"))

    def test_undeclared_uri_unsubscribes_cleanly(self) -> None:
        session = self.client.connect()
        session.unsubscribe(session.subscribe("anything.goes"))
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)

    def test_declared_topic_still_runs_its_hooks(self) -> None:
        self.client.connect().subscribe("declared")
        self.assertEqual(self.greeted, ["declared"])


class DisclosureTests(PubSubTestCase):
    """disclose_me puts the publisher's identity in the EVENT details."""

    def setUp(self) -> None:
        super().setUp()
        self.bob.subscribe("news.sport")

    def test_disclose_me_puts_publisher_id_in_details(self) -> None:
        self.alice.publish("news.sport", "goal", disclose_me=True)
        self.assertEqual(events(self.bob)[0].publisher, self.alice.id)

    def test_disclose_me_puts_publisher_authid_and_authrole_in_details(self) -> None:
        self.alice.publish("news.sport", "goal", disclose_me=True)
        event = events(self.bob)[0]
        self.assertEqual((event.publisher_authid, event.publisher_authrole), (self.alice.authid, "anonymous"))

    def test_publisher_is_not_disclosed_by_default(self) -> None:
        self.alice.publish("news.sport", "goal")
        event = events(self.bob)[0]
        self.assertEqual((event.publisher, event.publisher_authid, event.publisher_authrole), (None,) * 3)

    def test_disclose_me_false_does_not_disclose(self) -> None:
        self.alice.publish("news.sport", "goal", disclose_me=False)
        self.assertIsNone(events(self.bob)[0].publisher)

    def test_app_broadcast_discloses_no_publisher(self) -> None:
        self.app.broadcast("news.sport", "goal")
        self.assertIsNone(events(self.bob)[0].publisher)


class UriValidationTests(PubSubTestCase):
    """Invalid URIs are refused with wamp.error.invalid_uri."""

    def assertInvalidUri(self, caught: Any) -> None:
        self.assertEqual(caught.exception.error, "wamp.error.invalid_uri")

    def test_exact_subscribe_with_empty_part_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news..sport")
        self.assertInvalidUri(caught)

    def test_exact_subscribe_with_trailing_dot_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news.")
        self.assertInvalidUri(caught)

    def test_subscribe_with_whitespace_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news sport")
        self.assertInvalidUri(caught)

    def test_empty_uri_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("")
        self.assertInvalidUri(caught)

    def test_subscribe_with_hash_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news.#")
        self.assertInvalidUri(caught)

    def test_session_stays_usable_after_an_invalid_uri(self) -> None:
        with self.assertRaises(ApplicationError):
            self.alice.subscribe("news sport")
        subscription = self.alice.subscribe("news.sport")
        self.bob.publish("news.sport", "goal")
        self.assertEqual(subscription.payloads, ["goal"])

    def test_wildcard_subscribe_with_whitespace_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news. .sport", match="wildcard")
        self.assertInvalidUri(caught)

    def test_prefix_may_end_with_a_dot(self) -> None:
        subscription = self.alice.subscribe("news.", match="prefix")
        self.bob.publish("news.sport", "goal")
        self.assertEqual(subscription.payloads, ["goal"])

    def test_prefix_with_empty_inner_part_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.subscribe("news..sport", match="prefix")
        self.assertInvalidUri(caught)

    def test_publish_to_invalid_uri_with_acknowledge_is_refused(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.alice.publish("news..sport", "goal", acknowledge=True)
        self.assertInvalidUri(caught)

    def test_publish_to_invalid_uri_without_acknowledge_gets_no_answer(self) -> None:
        received = len(self.alice.messages)
        self.alice.publish("news..sport", "goal")
        self.assertEqual(len(self.alice.messages), received)

    def test_uppercase_and_slashes_are_valid_by_default(self) -> None:
        subscription = self.alice.subscribe("Chat/General")
        self.bob.publish("Chat/General", "hi")
        self.assertEqual(subscription.payloads, ["hi"])

    def test_strict_uris_refuse_uppercase(self) -> None:
        session = TestClient(Sandstone(anonymous=True, open_uris=True, strict_uris=True)).connect()
        with self.assertRaises(ApplicationError) as caught:
            session.subscribe("Chat.general")
        self.assertInvalidUri(caught)

    def test_strict_uris_accept_lowercase_dotted_uris(self) -> None:
        session = TestClient(Sandstone(anonymous=True, open_uris=True, strict_uris=True)).connect()
        self.assertEqual(session.subscribe("chat.general_2").topic, "chat.general_2")


class CountingSerializer:
    """Wraps the object serializer inside a shared WAMP serializer to count EVENT serializations."""

    def __init__(self, test: SynchronousTestCase, serializer: ISerializer) -> None:
        self.events = 0
        objects = object_serializer(serializer)
        original = objects.serialize

        def serialize(obj: Any) -> bytes:
            if obj[0] == EVENT:
                self.events += 1
            return original(obj)

        test.patch(objects, "serialize", serialize)


class FakeTransport:
    """Serializes what the router sends through a (shared) serializer, as WampServerProtocol does."""

    def __init__(self, serializer: ISerializer) -> None:
        self.serializer = serializer
        self.frames: list[bytes] = []

    def send_message(self, msg: message.Message) -> None:
        payload, _ = self.serializer.serialize(msg)
        self.frames.append(payload)


class FakeSession:
    """Just what the broker needs from a session."""

    authid = "anonymous-fake"
    authrole = "anonymous"

    def __init__(self, session_id: int, transport: FakeTransport) -> None:
        self.id = session_id
        self.transport = transport

    def send_message(self, msg: message.Message) -> None:
        self.transport.send_message(msg)

    send_event = send_message  # the broker's delivery loop sends EVENTs through it


class SerializeOnceTests(SynchronousTestCase):
    """A broadcast EVENT is serialized once per serializer, whatever the number of subscribers."""

    def setUp(self) -> None:
        self.broker = Broker()
        self.json = JsonSerializer()
        self.counter = CountingSerializer(self, self.json)

    def subscribers(
        self, count: int, serializer: ISerializer, uri: str = "t", match: str = EXACT
    ) -> list[Any]:
        sessions = [FakeSession(n + 1, FakeTransport(serializer)) for n in range(count)]
        for session in sessions:
            self.broker.subscribe(session, uri, match)  # type: ignore[arg-type]
        return sessions

    def test_broadcast_to_many_subscribers_serializes_the_event_once(self) -> None:
        sessions = self.subscribers(10, self.json)
        self.assertEqual(self.broker.deliver(Publication("t", ["hello"])), 10)
        self.assertEqual(self.counter.events, 1)
        self.assertEqual({s.transport.frames[0] for s in sessions}, {sessions[0].transport.frames[0]})

    def test_each_matching_subscription_serializes_its_own_event(self) -> None:
        self.subscribers(3, self.json)
        self.subscribers(3, self.json, uri="", match=PREFIX)
        self.broker.deliver(Publication("t", ["hello"]))
        self.assertEqual(self.counter.events, 2)

    def test_each_serializer_serializes_the_event_once(self) -> None:
        msgpack = MsgPackSerializer()
        msgpack_counter = CountingSerializer(self, msgpack)
        self.subscribers(3, self.json)
        for n, session in enumerate(self.subscribers(3, msgpack)):
            session.id = 100 + n
        self.broker.deliver(Publication("t", ["hello"]))
        self.assertEqual((self.counter.events, msgpack_counter.events), (1, 1))

    def test_excluded_subscribers_cost_no_serialization(self) -> None:
        sessions = self.subscribers(3, self.json)
        self.broker.deliver(Publication("t", ["hello"], exclude=frozenset(s.id for s in sessions)))
        self.assertEqual(self.counter.events, 0)

    def test_every_publication_is_serialized_anew(self) -> None:
        self.subscribers(3, self.json)
        self.broker.deliver(Publication("t", ["one"]))
        self.broker.deliver(Publication("t", ["two"]))
        self.assertEqual(self.counter.events, 2)


class ProtocolSerializeOnceTests(SynchronousTestCase):
    """Through the real WampServerProtocol: connections share their factory's serializers."""

    def setUp(self) -> None:
        # no timers on the global reactor: autobahn's handshake timeout off, ours on a fake clock
        self.app = Sandstone(anonymous=True, open_uris=True, limits=Limits(open_handshake_timeout=0))
        self.factory = WampServerFactory(self.app.router, clock=Clock())
        self.serializer = self.factory.serializers["wamp.2.json"]
        self.counter = CountingSerializer(self, self.serializer)

    def connect(self) -> tuple[WampServerProtocol, StringTransport]:
        """An open WebSocket connection that negotiated wamp.2.json and joined the realm."""
        protocol, transport = open_websocket(self.factory)
        self.send(protocol, [message.Hello.MESSAGE_TYPE, "realm1", {"roles": {"subscriber": {}}}])
        return protocol, transport

    def send(self, protocol: WampServerProtocol, raw: list[Any]) -> None:
        protocol.onMessage(object_serializer(self.serializer).serialize(raw), False)

    def test_broadcast_over_websocket_connections_serializes_the_event_once(self) -> None:
        connections = [self.connect() for _ in range(5)]
        for protocol, _ in connections:
            self.send(protocol, [message.Subscribe.MESSAGE_TYPE, 1, {}, "news"])
        publisher, _ = self.connect()
        self.send(publisher, [PUBLISH, 1, {}, "news", ["hello"]])
        frames = [websocket_payloads(transport.value())[-1] for _, transport in connections]
        self.assertEqual(self.counter.events, 1)
        self.assertEqual(len(set(frames)), 1)
        self.assertEqual(object_serializer(self.serializer).unserialize(frames[0])[0][0], EVENT)


def wildcard_patterns(topic: str, count: int) -> list[str]:
    """``count`` distinct wildcard patterns matching ``topic``: each leaves some of its parts empty."""
    parts = topic.split(".")
    if count >= 2 ** len(parts):
        raise ValueError(f"{topic!r} has only {2 ** len(parts) - 1} wildcard patterns")
    blank = [[mask >> i & 1 for i in range(len(parts))] for mask in range(1, count + 1)]
    return [".".join("" if b else part for b, part in zip(bits, parts, strict=True)) for bits in blank]


class NotingFakeSession(FakeSession):
    """A fake session that also remembers which limits it ran into (``note_limit``)."""

    def __init__(self, session_id: int, transport: FakeTransport) -> None:
        super().__init__(session_id, transport)
        self.noted: list[str] = []

    def note_limit(self, name: str) -> bool:
        first = name not in self.noted
        self.noted.append(name)
        return first


class EventCapTests(SynchronousTestCase):
    """One publication produces at most ``max_events`` EVENTs for one session, however many of its
    subscriptions match; below that every matching subscription gets its EVENT, as the spec says."""

    TOPIC = "p0.p1.p2.p3.p4.p5.p6"  # 127 wildcard patterns match it

    def setUp(self) -> None:
        self.broker = Broker()
        self.json = JsonSerializer()
        self.ids = iter(range(1, 1000))

    def session(self, *patterns: str, exact: bool = False) -> NotingFakeSession:
        session = NotingFakeSession(next(self.ids), FakeTransport(self.json))
        if exact:
            self.broker.subscribe(session, self.TOPIC, EXACT)  # type: ignore[arg-type]
        for pattern in patterns:
            self.broker.subscribe(session, pattern, WILDCARD)  # type: ignore[arg-type]
        return session

    def events(self, session: NotingFakeSession) -> list[list[Any]]:
        unserialize = object_serializer(self.json).unserialize
        return [unserialize(frame)[0] for frame in session.transport.frames]

    def test_a_session_matching_more_subscriptions_than_the_cap_gets_the_cap(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        self.assertEqual(self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32), 32)
        self.assertEqual(len(attacker.transport.frames), 32)

    def test_the_skipped_events_are_counted(self) -> None:
        self.session(*wildcard_patterns(self.TOPIC, 100))
        self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32)
        self.assertEqual(self.broker.stats["events_capped"], 68)

    def test_each_event_of_a_capped_session_is_for_a_different_subscription(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32)
        self.assertEqual(len({event[1] for event in self.events(attacker)}), 32)

    def test_up_to_the_cap_every_matching_subscription_gets_its_event(self) -> None:
        session = self.session(*wildcard_patterns(self.TOPIC, 31), exact=True)
        self.assertEqual(self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32), 32)
        self.assertEqual(len(session.transport.frames), 32)
        self.assertEqual(self.broker.stats["events_capped"], 0)
        self.assertEqual(session.noted, [])

    def test_a_cap_of_zero_delivers_every_event(self) -> None:
        session = self.session(*wildcard_patterns(self.TOPIC, 100))
        self.assertEqual(self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=0), 100)
        self.assertEqual(len(session.transport.frames), 100)

    def test_other_sessions_keep_every_event(self) -> None:
        self.session(*wildcard_patterns(self.TOPIC, 100))
        reader = self.session(exact=True)
        several = self.session(*wildcard_patterns(self.TOPIC, 5))
        self.assertEqual(self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32), 32 + 1 + 5)
        self.assertEqual([event[0] for event in self.events(reader)], [EVENT])
        self.assertEqual(len(several.transport.frames), 5)
        self.assertEqual((reader.noted, several.noted), ([], []))

    def test_the_cap_holds_for_each_publication(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        for n in range(3):
            self.broker.deliver(Publication(self.TOPIC, [n]), max_events=32)
        self.assertEqual(len(attacker.transport.frames), 3 * 32)
        self.assertEqual(self.broker.stats["events_capped"], 3 * 68)

    def test_the_cap_is_noted_once_per_publication_and_logged_once_per_session(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        with capturedLogs() as logs:
            for n in range(3):
                self.broker.deliver(Publication(self.TOPIC, [n]), max_events=32)
        self.assertEqual(attacker.noted, ["max_events_per_publication"] * 3)
        capped = [e for e in logs if "max_events_per_publication" in e["log_format"]]
        self.assertEqual(len(capped), 1)
        self.assertEqual(capped[0]["log_level"], LogLevel.info)
        self.assertEqual(capped[0]["session_id"], attacker.id)

    def test_excluded_sessions_are_neither_sent_nor_counted(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        reader = self.session(exact=True)
        publication = Publication(self.TOPIC, ["x"], publisher=attacker.id)  # excluded as its publisher
        self.assertEqual(self.broker.deliver(publication, max_events=32), 1)
        self.assertEqual((len(attacker.transport.frames), len(reader.transport.frames)), (0, 1))
        self.assertEqual(self.broker.stats["events_capped"], 0)

    def test_events_the_gate_refuses_do_not_count_against_the_cap(self) -> None:
        attacker = self.session(*wildcard_patterns(self.TOPIC, 100))
        asked: list[str] = []

        def gate(session: Any, uri: str) -> bool:
            asked.append(uri)
            return len(asked) > 10  # the first ten pattern deliveries are refused

        self.broker.gate = gate
        self.broker.deliver(Publication(self.TOPIC, ["x"]), max_events=32)
        self.assertEqual(len(attacker.transport.frames), 32)
        self.assertEqual(self.broker.stats["events_capped"], 100 - 10 - 32)
