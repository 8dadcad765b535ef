"""Tests for L{sandstone._topic}: route-like topics, their hooks, their lifetime and their events."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Publication, Sandstone, Session, Topic, on_event
from sandstone.testing import TestClient, TestSession


def subscribed_ok(session: TestSession) -> bool:
    """Whether the session's latest answer is a SUBSCRIBED (not an ERROR)."""
    return any(isinstance(m, message.Subscribed) for m in session.messages[-2:])


class Recorder(Topic):
    """A topic recording its hooks in ``self.calls`` (a list shared by the test through the class)."""

    calls: list[tuple[Any, ...]] = []

    def on_subscribe(self, session: Session) -> None:
        self.calls.append(("subscribe", self.uri, session.id))

    def on_unsubscribe(self, session: Session) -> None:
        self.calls.append(("unsubscribe", self.uri, session.id))


class RoutingTests(SynchronousTestCase):
    """Which topic serves a URI, and with which arguments."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.client = TestClient(self.app)

    def test_first_declared_matching_pattern_wins(self) -> None:
        @self.app.topic("chat/{channel}")
        class Channel(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, "channel")

        @self.app.topic("chat/news")
        class News(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, "news")

        self.assertEqual(self.client.connect().subscribe("chat/news").payloads, ["channel"])

    def test_later_pattern_serves_uris_the_first_does_not_match(self) -> None:
        @self.app.topic("room.{number:int}")
        class Numbered(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, "numbered")

        @self.app.topic("room.{name}")
        class Named(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, "named")

        session = self.client.connect()
        self.assertEqual(session.subscribe("room.12").payloads, ["numbered"])
        self.assertEqual(session.subscribe("room.lobby").payloads, ["named"])

    def test_converted_values_reach_args(self) -> None:
        @self.app.topic("sensors.{room:int}.{kind}")
        class Sensor(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, self.args)

        session = self.client.connect()
        self.assertEqual(
            session.subscribe("sensors.12.temperature").payloads, [{"room": 12, "kind": "temperature"}]
        )
        self.assertIsInstance(self.app.topic_instance("sensors.12.temperature").args["room"], int)

    def test_custom_converter_reaches_args(self) -> None:
        @self.app.topic("shout/{word}", converters={"word": str.upper})
        class Shout(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, self.args["word"])

        self.assertEqual(self.client.connect().subscribe("shout/hey").payloads, ["HEY"])

    def test_uri_not_meeting_requirements_is_no_such_topic(self) -> None:
        @self.app.topic("user/{id}", requirements={"id": r"\d+"})
        class User(Topic):
            pass

        with self.assertRaises(ApplicationError) as caught:
            self.client.connect().subscribe("user/bob")
        self.assertEqual(caught.exception.error, "sandstone.error.no_such_topic")

    def test_topic_knows_its_uri(self) -> None:
        @self.app.topic("chat/{channel}")
        class Channel(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, self.uri)

        self.assertEqual(self.client.connect().subscribe("chat/general").payloads, ["chat/general"])

    def test_topic_decorator_returns_the_class(self) -> None:
        class Channel(Topic):
            pass

        self.assertIs(self.app.topic("chat/{channel}")(Channel), Channel)

    def test_factory_function_serves_the_topic(self) -> None:
        made: list[str] = []

        class Greeter(Topic):
            def on_subscribe(self, session: Session) -> None:
                self.send(session, f"hello from {self.args['name']}")

        @self.app.topic("greet/{name}")
        def make(uri: str, args: dict[str, Any]) -> Topic:
            made.append(uri)
            return Greeter(uri, args)

        self.assertEqual(self.client.connect().subscribe("greet/ann").payloads, ["hello from ann"])
        self.assertEqual(made, ["greet/ann"])


class FactoryErrorTests(SynchronousTestCase):
    """A topic factory that fails: the client gets an ERROR, the router keeps nothing."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("broken/{x}")
        def broken(uri: str, args: dict[str, Any]) -> Any:
            return "not a topic"

        @self.app.topic("crash/{x}")
        def crash(uri: str, args: dict[str, Any]) -> Topic:
            raise RuntimeError("no topic today")

        @self.app.topic("private/{x}")
        def private(uri: str, args: dict[str, Any]) -> Topic:
            raise ApplicationError("app.error.not_allowed", "members only")

        self.session = TestClient(self.app).connect()

    def subscribe_error(self, uri: str) -> ApplicationError:
        with self.assertRaises(ApplicationError) as caught:
            self.session.subscribe(uri)
        return caught.exception

    def test_factory_returning_a_non_topic_fails_the_subscribe(self) -> None:
        error = self.subscribe_error("broken/1")
        self.assertEqual(error.error, "wamp.error.runtime_error")
        self.assertIn("not a Topic", error.args[0])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_factory_returning_a_non_topic_leaves_no_subscription(self) -> None:
        self.subscribe_error("broken/1")
        self.flushLoggedErrors(TypeError)
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)
        self.assertIsNone(self.app.topic_instance("broken/1"))

    def test_failing_factory_fails_the_subscribe_with_runtime_error(self) -> None:
        error = self.subscribe_error("crash/1")
        self.assertEqual(
            (error.error, error.args), ("wamp.error.runtime_error", ("RuntimeError: no topic today",))
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_factory_application_error_keeps_its_uri_and_is_not_logged(self) -> None:
        error = self.subscribe_error("private/1")
        self.assertEqual((error.error, error.args), ("app.error.not_allowed", ("members only",)))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_factory_error_fails_an_acknowledged_publish(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.session.publish("broken/1", "x", acknowledge=True)
        self.assertEqual(caught.exception.error, "wamp.error.runtime_error")
        self.flushLoggedErrors(TypeError)

    def test_session_survives_a_factory_error(self) -> None:
        self.subscribe_error("crash/1")
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.session.subscribe("private/1", match="prefix").match, "prefix")


class LifetimeTests(SynchronousTestCase):
    """One instance per URI, from the first exact subscription to the last one."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.calls: list[tuple[Any, ...]] = []
        calls = self.calls

        @self.app.topic("room/{name}")
        class Room(Recorder):
            pass

        Room.calls = calls
        self.client = TestClient(self.app)
        self.alice = self.client.connect()
        self.bob = self.client.connect()

    def test_no_instance_before_a_subscription(self) -> None:
        self.assertIsNone(self.app.topic_instance("room/a"))

    def test_first_subscription_creates_the_instance(self) -> None:
        self.alice.subscribe("room/a")
        self.assertIsInstance(self.app.topic_instance("room/a"), Topic)

    def test_one_instance_per_uri(self) -> None:
        self.alice.subscribe("room/a")
        first = self.app.topic_instance("room/a")
        self.bob.subscribe("room/a")
        self.assertIs(self.app.topic_instance("room/a"), first)

    def test_distinct_uris_get_distinct_instances(self) -> None:
        self.alice.subscribe("room/a")
        self.alice.subscribe("room/b")
        self.assertIsNot(self.app.topic_instance("room/a"), self.app.topic_instance("room/b"))

    def test_on_subscribe_runs_for_each_session(self) -> None:
        self.alice.subscribe("room/a")
        self.bob.subscribe("room/a")
        self.assertEqual(
            self.calls, [("subscribe", "room/a", self.alice.id), ("subscribe", "room/a", self.bob.id)]
        )

    def test_repeated_subscribe_runs_on_subscribe_once(self) -> None:
        self.alice.subscribe("room/a")
        self.alice.subscribe("room/a")
        self.assertEqual(self.calls, [("subscribe", "room/a", self.alice.id)])

    def test_subscribers_lists_sessions_in_subscription_order(self) -> None:
        self.bob.subscribe("room/a")
        self.alice.subscribe("room/a")
        self.assertEqual(
            [s.id for s in self.app.topic_instance("room/a").subscribers], [self.bob.id, self.alice.id]
        )

    def test_on_unsubscribe_runs_on_unsubscribe(self) -> None:
        self.alice.unsubscribe(self.alice.subscribe("room/a"))
        self.assertEqual(self.calls[-1], ("unsubscribe", "room/a", self.alice.id))

    def test_instance_lives_while_someone_is_subscribed(self) -> None:
        self.alice.subscribe("room/a")
        subscription = self.bob.subscribe("room/a")
        self.bob.unsubscribe(subscription)
        self.assertIsNotNone(self.app.topic_instance("room/a"))

    def test_last_unsubscribe_releases_the_instance(self) -> None:
        first = self.alice.subscribe("room/a")
        second = self.bob.subscribe("room/a")
        self.alice.unsubscribe(first)
        self.bob.unsubscribe(second)
        self.assertIsNone(self.app.topic_instance("room/a"))

    def test_disconnect_runs_on_unsubscribe(self) -> None:
        self.alice.subscribe("room/a")
        self.alice.disconnect()
        self.assertEqual(self.calls[-1], ("unsubscribe", "room/a", self.alice.id))

    def test_disconnect_of_the_last_subscriber_releases_the_instance(self) -> None:
        self.alice.subscribe("room/a")
        self.alice.disconnect()
        self.assertIsNone(self.app.topic_instance("room/a"))

    def test_subscribing_again_after_release_creates_a_fresh_instance(self) -> None:
        self.alice.unsubscribe(self.alice.subscribe("room/a"))
        old_calls = len(self.calls)
        self.alice.subscribe("room/a")
        self.assertIsNotNone(self.app.topic_instance("room/a"))
        self.assertEqual(len(self.calls), old_calls + 1)

    def test_pattern_subscription_runs_no_hook(self) -> None:
        self.alice.subscribe("room/", match="prefix")
        self.alice.subscribe("room/a", match="wildcard")
        self.assertEqual(self.calls, [])
        self.assertIsNone(self.app.topic_instance("room/a"))

    def test_pattern_unsubscribe_runs_no_hook(self) -> None:
        self.alice.subscribe("room/a")
        self.alice.unsubscribe(self.alice.subscribe("room/a", match="prefix"))
        self.assertEqual(self.calls, [("subscribe", "room/a", self.alice.id)])
        self.assertIsNotNone(self.app.topic_instance("room/a"))

    def test_on_unsubscribe_on_disconnect_can_broadcast_to_the_others(self) -> None:
        @self.app.topic("lobby")
        class Lobby(Topic):
            def on_unsubscribe(self, session: Session) -> None:
                self.broadcast(f"{session.id} left")

        staying = self.bob.subscribe("lobby")
        self.alice.subscribe("lobby")
        self.alice.disconnect()
        self.assertEqual(staying.payloads, [f"{self.alice.id} left"])


class EventHandlerTests(SynchronousTestCase):
    """``@on_event`` methods listen only while their instance lives."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.heard: list[tuple[str, Any]] = []
        heard = self.heard

        @self.app.topic("ticker/{symbol}")
        class Ticker(Topic):
            @on_event("price")
            def price(self, event: dict[str, Any]) -> None:
                heard.append((self.uri, event))
                if event["symbol"] == self.args["symbol"]:
                    self.broadcast(event["value"])

        self.client = TestClient(self.app)
        self.session = self.client.connect()

    def dispatch(self, symbol: str, value: int) -> Any:
        return self.successResultOf(self.app.dispatch("price", {"symbol": symbol, "value": value}))

    def test_no_handler_runs_before_a_subscription(self) -> None:
        self.assertEqual(self.dispatch("ACME", 1).called, 0)
        self.assertEqual(self.heard, [])

    def test_handler_runs_while_the_instance_lives(self) -> None:
        subscription = self.session.subscribe("ticker/ACME")
        self.dispatch("ACME", 10)
        self.assertEqual(subscription.payloads, [10])

    def test_each_live_instance_handles_the_event(self) -> None:
        self.session.subscribe("ticker/ACME")
        self.session.subscribe("ticker/INIT")
        self.assertEqual(self.dispatch("ACME", 10).called, 2)

    def test_handler_stops_after_the_last_unsubscribe(self) -> None:
        self.session.unsubscribe(self.session.subscribe("ticker/ACME"))
        self.assertEqual(self.dispatch("ACME", 10).called, 0)
        self.assertEqual(self.heard, [])

    def test_handler_stops_after_disconnect(self) -> None:
        self.session.subscribe("ticker/ACME")
        self.session.disconnect()
        self.assertEqual(self.dispatch("ACME", 10).called, 0)

    def test_inherited_handlers_listen_too(self) -> None:
        heard: list[str] = []

        class Base(Topic):
            @on_event("ping")
            def ping(self, event: Any) -> None:
                heard.append(self.uri)

        @self.app.topic("derived")
        class Derived(Base):
            pass

        self.session.subscribe("derived")
        self.successResultOf(self.app.dispatch("ping"))
        self.assertEqual(heard, ["derived"])

    def test_overridden_handler_replaces_the_inherited_one(self) -> None:
        heard: list[str] = []

        class Base(Topic):
            @on_event("ping")
            def ping(self, event: Any) -> None:
                heard.append("base")

        @self.app.topic("derived")
        class Derived(Base):
            @on_event("ping")
            def ping(self, event: Any) -> None:
                heard.append("derived")

        self.session.subscribe("derived")
        self.successResultOf(self.app.dispatch("ping"))
        self.assertEqual(heard, ["derived"])

    def test_one_method_may_listen_to_several_events(self) -> None:
        heard: list[Any] = []

        @self.app.topic("multi")
        class Multi(Topic):
            @on_event("a")
            @on_event("b")
            def either(self, event: Any) -> None:
                heard.append(event)

        self.session.subscribe("multi")
        self.successResultOf(self.app.dispatch("a", 1))
        self.successResultOf(self.app.dispatch("b", 2))
        self.assertEqual(heard, [1, 2])

    def test_handler_priority_orders_topic_and_app_listeners(self) -> None:
        order: list[str] = []

        @self.app.topic("first")
        class First(Topic):
            @on_event("go", priority=10)
            def go(self, event: Any) -> None:
                order.append("topic")

        self.app.on_event("go")(lambda event: order.append("app"))
        self.session.subscribe("first")
        self.successResultOf(self.app.dispatch("go"))
        self.assertEqual(order, ["topic", "app"])


class _ThreeInARoom(SynchronousTestCase):
    """Alice, Bob and Carol subscribed to ``room/a`` of a topic with no overrides."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("room/{name}")
        class Room(Topic):
            pass

        self.client = TestClient(self.app)
        self.alice, self.bob, self.carol = (self.client.connect() for _ in range(3))
        self.subscriptions = [s.subscribe("room/a") for s in (self.alice, self.bob, self.carol)]


class SendAndBroadcastTests(_ThreeInARoom):
    """``Topic.send`` and ``Topic.broadcast``."""

    def setUp(self) -> None:
        super().setUp()
        self.room = self.app.topic_instance("room/a")
        self.sessions = {s.id: s for s in self.room.subscribers}

    def payloads(self) -> list[list[Any]]:
        return [s.payloads for s in self.subscriptions]

    def test_send_reaches_one_session_only(self) -> None:
        self.room.send(self.sessions[self.bob.id], "psst")
        self.assertEqual(self.payloads(), [[], ["psst"], []])

    def test_send_returns_the_events_publication_id(self) -> None:
        publication = self.room.send(self.sessions[self.bob.id], "psst")
        self.assertEqual(self.subscriptions[1].events[0].publication, publication)

    def test_send_does_not_reach_pattern_subscribers(self) -> None:
        pattern = self.bob.subscribe("room/", match="prefix")
        self.room.send(self.sessions[self.bob.id], "psst")
        self.assertEqual(pattern.events, [])

    def test_send_to_a_session_not_subscribed_raises(self) -> None:
        self.carol.unsubscribe(self.subscriptions[2])
        with self.assertRaises(ValueError):
            self.room.send(self.sessions[self.carol.id], "psst")

    def test_broadcast_reaches_every_subscriber(self) -> None:
        self.room.broadcast("all")
        self.assertEqual(self.payloads(), [["all"], ["all"], ["all"]])

    def test_broadcast_returns_the_events_publication_id(self) -> None:
        publication = self.room.broadcast("all")
        self.assertEqual({s.events[0].publication for s in self.subscriptions}, {publication})

    def test_broadcast_exclude_by_session(self) -> None:
        self.room.broadcast("all", exclude=[self.sessions[self.alice.id]])
        self.assertEqual(self.payloads(), [[], ["all"], ["all"]])

    def test_broadcast_exclude_by_session_id(self) -> None:
        self.room.broadcast("all", exclude=[self.alice.id, self.bob.id])
        self.assertEqual(self.payloads(), [[], [], ["all"]])

    def test_broadcast_eligible(self) -> None:
        self.room.broadcast("all", eligible=[self.sessions[self.bob.id], self.carol.id])
        self.assertEqual(self.payloads(), [[], ["all"], ["all"]])

    def test_broadcast_to_empty_eligible_reaches_nobody(self) -> None:
        self.room.broadcast("all", eligible=[])
        self.assertEqual(self.payloads(), [[], [], []])

    def test_broadcast_reaches_pattern_subscribers_with_the_topic(self) -> None:
        observer = self.client.connect()
        prefix = observer.subscribe("room/", match="prefix")
        self.room.broadcast("all")
        self.assertEqual((prefix.payloads, prefix.events[0].topic), (["all"], "room/a"))

    def test_broadcast_discloses_no_publisher(self) -> None:
        self.room.broadcast("all")
        self.assertIsNone(self.subscriptions[0].events[0].publisher)

    def test_unattached_topic_cannot_broadcast(self) -> None:
        with self.assertRaises(RuntimeError):
            Topic("loose", {}).broadcast("x")


class DefaultOnPublishTests(_ThreeInARoom):
    """Without an ``on_publish`` override a client's publication is delivered as published."""

    def payloads(self) -> list[list[Any]]:
        return [s.payloads for s in self.subscriptions]

    def test_publication_reaches_the_others_not_the_publisher(self) -> None:
        self.alice.publish("room/a", "hi")
        self.assertEqual(self.payloads(), [[], ["hi"], ["hi"]])

    def test_exclude_me_false_reaches_the_publisher_too(self) -> None:
        self.alice.publish("room/a", "hi", exclude_me=False)
        self.assertEqual(self.payloads(), [["hi"], ["hi"], ["hi"]])

    def test_exclude_is_honoured(self) -> None:
        self.alice.publish("room/a", "hi", exclude=[self.bob.id])
        self.assertEqual(self.payloads(), [[], [], ["hi"]])

    def test_eligible_is_honoured(self) -> None:
        self.alice.publish("room/a", "hi", eligible=[self.bob.id])
        self.assertEqual(self.payloads(), [[], ["hi"], []])

    def test_args_and_kwargs_are_delivered_as_published(self) -> None:
        self.alice.publish("room/a", 1, 2, mood="happy")
        event = self.subscriptions[1].events[0]
        self.assertEqual((event.args, event.kwargs), ([1, 2], {"mood": "happy"}))

    def test_acknowledged_publication_id_is_the_events(self) -> None:
        publication = self.alice.publish("room/a", "hi", acknowledge=True)
        self.assertEqual(self.subscriptions[1].events[0].publication, publication)

    def test_disclose_me_is_honoured(self) -> None:
        self.alice.publish("room/a", "hi", disclose_me=True)
        self.assertEqual(self.subscriptions[1].events[0].publisher, self.alice.id)

    def test_publish_without_subscribers_leaves_no_instance(self) -> None:
        self.client.connect().publish("room/empty", "anyone?", acknowledge=True)
        self.assertIsNone(self.app.topic_instance("room/empty"))


class OnPublishOverrideTests(SynchronousTestCase):
    """``on_publish`` overrides, with and without the ``publication`` parameter."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.client = TestClient(self.app)
        self.publisher = self.client.connect()
        self.listener = self.client.connect()

    def test_override_with_two_parameters_gets_session_and_payload(self) -> None:
        seen: list[tuple[int, Any]] = []

        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any) -> None:
                seen.append((session.id, payload))

        self.publisher.publish("echo", "hi", "ignored")
        self.assertEqual(seen, [(self.publisher.id, "hi")])

    def test_override_gets_none_payload_without_args(self) -> None:
        seen: list[Any] = []

        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any) -> None:
                seen.append(payload)

        self.publisher.publish("echo", only="kwargs")
        self.assertEqual(seen, [None])

    def test_override_replaces_the_default_delivery(self) -> None:
        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any) -> None:
                self.broadcast(f"echo: {payload}")

        subscription = self.listener.subscribe("echo")
        self.publisher.publish("echo", "hi")
        self.assertEqual(subscription.payloads, ["echo: hi"])

    def test_override_with_publication_parameter_gets_the_publication(self) -> None:
        seen: list[Publication] = []

        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any, publication: Publication) -> None:
                seen.append(publication)

        publication_id = self.publisher.publish(
            "echo", "hi", 2, acknowledge=True, exclude_me=False, mood="ok"
        )
        [publication] = seen
        self.assertEqual(
            (
                publication.id,
                publication.args,
                publication.kwargs,
                publication.exclude_me,
                publication.publisher,
            ),
            (publication_id, ["hi", 2], {"mood": "ok"}, False, self.publisher.id),
        )

    def test_override_with_var_keywords_gets_the_publication(self) -> None:
        seen: list[Any] = []

        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any, **extra: Any) -> None:
                seen.append(extra["publication"].topic)

        self.publisher.publish("echo", "hi")
        self.assertEqual(seen, ["echo"])

    def test_override_may_call_the_default_delivery(self) -> None:
        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any, publication: Publication) -> None:
                if payload != "secret":
                    super().on_publish(session, payload, publication)

        subscription = self.listener.subscribe("echo")
        self.publisher.publish("echo", "secret")
        self.publisher.publish("echo", "hi")
        self.assertEqual(subscription.payloads, ["hi"])

    def test_publish_runs_on_publish_on_the_live_instance(self) -> None:
        instances: list[Topic] = []

        @self.app.topic("echo")
        class Echo(Topic):
            def on_publish(self, session: Session, payload: Any) -> None:
                instances.append(self)

        self.listener.subscribe("echo")
        self.publisher.publish("echo", "hi")
        self.assertIs(instances[0], self.app.topic_instance("echo"))

    def test_publish_without_subscribers_runs_on_publish_on_a_transient_instance(self) -> None:
        seen: list[str] = []

        @self.app.topic("echo/{x}")
        class Echo(Topic):
            @on_event("never")
            def never(self, event: Any) -> None:
                pass

            def on_publish(self, session: Session, payload: Any) -> None:
                seen.append(self.args["x"])

        self.publisher.publish("echo/1", "hi")
        self.assertEqual(seen, ["1"])
        self.assertIsNone(self.app.topic_instance("echo/1"))
        self.assertEqual(self.app.events.listener_count(), 0)


class AsyncHookTests(SynchronousTestCase):
    """Hooks may be coroutines or return Deferreds."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.gate: Deferred[str] = Deferred()
        self.client = TestClient(self.app)
        self.session = self.client.connect()

    def test_async_on_subscribe(self) -> None:
        gate = self.gate

        @self.app.topic("slow")
        class Slow(Topic):
            async def on_subscribe(self, session: Session) -> None:
                self.send(session, await gate)

        subscription = self.session.subscribe("slow")
        self.assertEqual(subscription.payloads, [])
        gate.callback("ready")
        self.assertEqual(subscription.payloads, ["ready"])

    def test_deferred_returning_on_unsubscribe(self) -> None:
        gate, done = self.gate, []

        @self.app.topic("slow")
        class Slow(Topic):
            def on_unsubscribe(self, session: Session) -> Deferred[str]:
                return gate.addCallback(done.append)

        self.session.unsubscribe(self.session.subscribe("slow"))
        gate.callback("gone")
        self.assertEqual(done, ["gone"])

    def test_acknowledge_waits_for_an_async_on_publish(self) -> None:
        gate = self.gate

        @self.app.topic("slow")
        class Slow(Topic):
            async def on_publish(self, session: Session, payload: Any) -> None:
                await gate

        self.session.send_raw([message.Publish.MESSAGE_TYPE, 1, {"acknowledge": True}, "slow", ["x"]])
        self.assertIsInstance(self.session.messages[-1], message.Welcome)
        gate.callback("done")
        self.assertIsInstance(self.session.messages[-1], message.Published)

    def test_transient_instance_lives_until_an_async_on_publish_is_done(self) -> None:
        gate = self.gate

        @self.app.topic("slow")
        class Slow(Topic):
            async def on_publish(self, session: Session, payload: Any) -> None:
                await gate
                self.broadcast(payload)

        self.session.publish("slow", "x")
        self.assertIsNotNone(self.app.topic_instance("slow"))
        gate.callback("done")
        self.assertIsNone(self.app.topic_instance("slow"))

    def test_async_on_publish_failure_fails_the_acknowledged_publish(self) -> None:
        gate = self.gate

        @self.app.topic("slow")
        class Slow(Topic):
            async def on_publish(self, session: Session, payload: Any) -> None:
                await gate
                raise ValueError("too late")

        self.session.send_raw([message.Publish.MESSAGE_TYPE, 1, {"acknowledge": True}, "slow", ["x"]])
        gate.callback("done")
        error = self.session.messages[-1]
        self.assertEqual((error.error, error.args), ("wamp.error.runtime_error", ["ValueError: too late"]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class FailingHookTests(SynchronousTestCase):
    """A hook that raises is logged; the session goes on."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)

        @self.app.topic("bad/{x}")
        class Bad(Topic):
            def on_subscribe(self, session: Session) -> None:
                raise ZeroDivisionError("subscribe")

            def on_unsubscribe(self, session: Session) -> None:
                raise ZeroDivisionError("unsubscribe")

            def on_publish(self, session: Session, payload: Any) -> None:
                if payload == "refuse":
                    raise ApplicationError("app.error.refused", "no thanks")
                raise ZeroDivisionError("publish")

        self.client = TestClient(self.app)
        self.session = self.client.connect()

    def test_failing_on_subscribe_is_logged(self) -> None:
        self.session.subscribe("bad/1")
        [logged] = self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(str(logged.value), "subscribe")

    def test_failing_on_subscribe_still_subscribes(self) -> None:
        subscription = self.session.subscribe("bad/1")
        self.flushLoggedErrors(ZeroDivisionError)
        self.app.topic_instance("bad/1").broadcast("still there")
        self.assertEqual(subscription.payloads, ["still there"])

    def test_session_survives_a_failing_hook(self) -> None:
        self.session.subscribe("bad/1")
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertTrue(subscribed_ok(self.session))
        self.assertEqual(self.session.subscribe("bad/2").topic, "bad/2")
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertFalse(self.session.transport_closed)

    def test_failing_on_unsubscribe_still_releases_the_instance(self) -> None:
        self.session.unsubscribe(self.session.subscribe("bad/1"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertIsInstance(self.session.messages[-1], message.Unsubscribed)
        self.assertIsNone(self.app.topic_instance("bad/1"))

    def test_failing_on_publish_with_acknowledge_answers_error(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.session.publish("bad/1", "x", acknowledge=True)
        self.assertEqual(
            (caught.exception.error, caught.exception.args),
            ("wamp.error.runtime_error", ("ZeroDivisionError: publish",)),
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_on_publish_application_error_keeps_its_uri(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.session.publish("bad/1", "refuse", acknowledge=True)
        self.assertEqual(
            (caught.exception.error, caught.exception.args), ("app.error.refused", ("no thanks",))
        )
        self.flushLoggedErrors(ApplicationError)

    def test_failing_on_publish_without_acknowledge_is_logged_and_unanswered(self) -> None:
        received = len(self.session.messages)
        self.session.publish("bad/1", "x")
        self.assertEqual(len(self.session.messages), received)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failing_on_publish_releases_the_transient_instance(self) -> None:
        self.session.publish("bad/1", "x")
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertIsNone(self.app.topic_instance("bad/1"))


class LeakTests(SynchronousTestCase):
    """Thousands of topics come and go without leaving anything behind."""

    COUNT = 10_000

    def setUp(self) -> None:
        # one session holds all of them: beyond the default per-session subscription limit and rate
        self.app = Sandstone(anonymous=True, limits=Limits(max_subscriptions_per_session=0, subscribe_rate=0))

        @self.app.topic("item/{n:int}")
        class Item(Topic):
            @on_event("item.changed")
            def changed(self, event: Any) -> None:
                if event == self.args["n"]:
                    self.broadcast("changed")

        self.client = TestClient(self.app)
        self.observer = self.client.connect()
        self.baseline = self.state()

    def state(self) -> tuple[int, int, int, int]:
        """Listeners, broker subscriptions, live topic instances and router sessions."""
        topics = self.app._core.topics.instances
        return (
            self.app.events.listener_count(),
            len(self.app.router.broker.subscriptions),
            len(topics),
            len(self.app.router.sessions),
        )

    def subscribe_all(self, session: TestSession) -> list[Any]:
        subscriptions = [session.subscribe(f"item/{n}") for n in range(self.COUNT)]
        self.assertEqual(
            self.state()[:3], (self.baseline[0] + self.COUNT, self.baseline[1] + self.COUNT, self.COUNT)
        )
        return subscriptions

    def test_unsubscribing_every_topic_leaves_nothing_behind(self) -> None:
        session = self.client.connect()
        for subscription in self.subscribe_all(session):
            session.unsubscribe(subscription)
        session.leave()
        self.assertEqual(self.state(), self.baseline)

    def test_disconnecting_leaves_nothing_behind(self) -> None:
        session = self.client.connect()
        self.subscribe_all(session)
        session.disconnect()
        self.assertEqual(self.state(), self.baseline)

    def test_live_topics_still_work_among_thousands(self) -> None:
        session = self.client.connect()
        subscriptions = self.subscribe_all(session)
        self.successResultOf(self.app.dispatch("item.changed", 1234))
        self.assertEqual(subscriptions[1234].payloads, ["changed"])
        self.assertEqual(sum(len(s.events) for s in subscriptions), 1)
