"""End-to-end pub/sub over real TCP with autobahn-python clients, on an ``open_uris=True`` app."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Sandstone, Session, Topic, on_event
from tests.support import SERIALIZERS, DisclosingClient, ServerTestCase, sleep, wait_until

PAYLOAD = {
    "text": "Grüße, 世界 🌍",
    "int": 2**40,
    "negative": -7,
    "float": 1.5,
    "bool": True,
    "none": None,
    "list": [1, "two", [3.0, {"four": 4}]],
    "bytes": b"\x00\x01\xfe\xff",
}


def make_app() -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=True)

    @app.topic("sensor.{room}")
    class Sensor(Topic):
        """Relays readings published by clients, and readings dispatched as app events, as broadcasts."""

        def on_subscribe(self, session: Session) -> None:
            self.send(session, {"hello": self.args["room"]})

        def on_publish(self, session: Session, payload: Any) -> None:
            self.broadcast({"room": self.args["room"], "reading": payload})

        @on_event("reading")
        def reading(self, event: dict[str, Any]) -> None:
            if event["room"] == self.args["room"]:
                self.broadcast({"room": self.args["room"], "reading": event["value"], "from": "app"})

    return app


class PubSubTestCase(ServerTestCase):
    def setUp(self) -> None:
        self.serve(make_app())

    async def clients(self, *serializers: str) -> list[Any]:
        return [await self.connect(serializer) for serializer in serializers]

    async def quiet(self) -> None:
        """Give stray messages the chance to arrive before checking that they did not."""
        await sleep(0.1)


class SerializerTests(PubSubTestCase):
    async def check_round_trip(self, serializer: str) -> None:
        publisher, subscriber, other = await self.clients(serializer, serializer, serializer)
        await subscriber.record("com.example.topic")
        await other.record("com.example.other")
        await publisher.record("com.example.topic")
        published = await publisher.publish(
            "com.example.topic", PAYLOAD, "second", options=PublishOptions(acknowledge=True), key="value"
        )
        await wait_until(lambda: subscriber.received["com.example.topic"])
        await self.quiet()
        [event] = subscriber.received["com.example.topic"]
        self.assertEqual(event.args, [PAYLOAD, "second"])
        self.assertEqual(event.kwargs, {"key": "value"})
        self.assertEqual(event.details.publication, published.id)
        self.assertEqual(event.details.topic, "com.example.topic")
        self.assertIsNone(event.details.publisher)
        self.assertEqual(publisher.received["com.example.topic"], [])
        self.assertEqual(other.received["com.example.other"], [])

    def test_json(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("json"))

    def test_json_batched(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("json.batched"))

    def test_msgpack(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("msgpack"))

    def test_msgpack_batched(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("msgpack.batched"))

    def test_cbor(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("cbor"))

    def test_cbor_batched(self) -> Any:
        return defer.Deferred.fromCoroutine(self.check_round_trip("cbor.batched"))

    async def test_mixed_serializers_receive_the_same_broadcast(self) -> None:
        serializers = list(SERIALIZERS)
        subscribers = await self.clients(*serializers)
        for subscriber in subscribers:
            await subscriber.record("com.example.mixed")
        publisher = await self.connect("json")
        published = []
        for n in range(3):
            published.append(
                await publisher.publish(
                    "com.example.mixed", PAYLOAD, n, options=PublishOptions(acknowledge=True), n=n
                )
            )
        await wait_until(lambda: all(len(s.received["com.example.mixed"]) == 3 for s in subscribers))
        await self.quiet()
        for serializer, subscriber in zip(serializers, subscribers, strict=True):
            events = subscriber.received["com.example.mixed"]
            self.assertEqual([e.args for e in events], [[PAYLOAD, n] for n in range(3)], serializer)
            self.assertEqual([e.kwargs for e in events], [{"n": n} for n in range(3)], serializer)
            self.assertEqual([e.details.publication for e in events], [p.id for p in published])

    async def test_app_broadcast_reaches_every_serializer(self) -> None:
        subscribers = await self.clients(*SERIALIZERS)
        for subscriber in subscribers:
            await subscriber.record("com.example.news")
        publication_id = self.app.broadcast("com.example.news", PAYLOAD)
        await wait_until(lambda: all(s.received["com.example.news"] for s in subscribers))
        await self.quiet()
        for subscriber in subscribers:
            [event] = subscriber.received["com.example.news"]
            self.assertEqual(event.args, [PAYLOAD])
            self.assertEqual(event.details.publication, publication_id)


class PatternSubscriptionTests(PubSubTestCase):
    async def test_prefix_subscription(self) -> None:
        subscriber, publisher = await self.clients("json", "cbor")
        await subscriber.record("com.example.", match="prefix")
        for topic in ("com.example.a", "com.example.a.b", "com.examples", "com.other.a", "com.example"):
            publisher.publish(topic, topic)
        await publisher.publish("com.example.last", "last", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: len(subscriber.received["com.example."]) >= 3)
        await self.quiet()
        events = subscriber.received["com.example."]
        self.assertEqual([e.payload for e in events], ["com.example.a", "com.example.a.b", "last"])
        self.assertEqual(
            [e.details.topic for e in events], ["com.example.a", "com.example.a.b", "com.example.last"]
        )

    async def test_wildcard_subscription(self) -> None:
        subscriber, publisher = await self.clients("msgpack", "json")
        await subscriber.record("com..status", match="wildcard")
        for topic in ("com.a.status", "com.a.b.status", "com.b.state", "org.a.status", "com.b.status"):
            publisher.publish(topic, topic)
        await publisher.publish("com.c.status", "last", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: len(subscriber.received["com..status"]) >= 3)
        await self.quiet()
        events = subscriber.received["com..status"]
        self.assertEqual([e.payload for e in events], ["com.a.status", "com.b.status", "last"])
        self.assertEqual([e.details.topic for e in events], ["com.a.status", "com.b.status", "com.c.status"])

    async def test_exact_prefix_and_wildcard_of_one_session_each_get_one_event(self) -> None:
        subscriber, publisher = await self.clients("cbor", "json")
        await subscriber.record("com.example.x.y")
        await subscriber.record("com.example.", match="prefix")
        await subscriber.record("com.example..y", match="wildcard")
        published = await publisher.publish(
            "com.example.x.y", "hello", options=PublishOptions(acknowledge=True)
        )
        topics = ("com.example.x.y", "com.example.", "com.example..y")
        await wait_until(lambda: all(subscriber.received[t] for t in topics))
        await self.quiet()
        for topic in topics:
            [event] = subscriber.received[topic]
            self.assertEqual(event.payload, "hello")
            self.assertEqual(event.details.publication, published.id)
            self.assertEqual(event.details.topic, "com.example.x.y")

    async def test_pattern_subscriber_receives_broadcasts_of_a_declared_topic(self) -> None:
        watcher, publisher, kitchen = await self.clients("json", "msgpack", "cbor")
        await watcher.record("sensor.", match="prefix")
        await watcher.record("sensor.", match="wildcard")

        # a client publication handled by the topic's on_publish (transient instance: no exact subscriber)
        await publisher.publish("sensor.kitchen", 21.5, options=PublishOptions(acknowledge=True))
        expected = {"room": "kitchen", "reading": 21.5}
        await wait_until(lambda: watcher.received["sensor."])
        self.assertIsNone(self.app.topic_instance("sensor.kitchen"))

        # an app event turned into a broadcast by a live instance (kept alive by an exact subscriber)
        await kitchen.record("sensor.kitchen")
        await wait_until(lambda: kitchen.received["sensor.kitchen"])
        result = await self.app.dispatch("reading", {"room": "kitchen", "value": 22})
        self.assertTrue(result.ok)
        await wait_until(lambda: len(watcher.received["sensor."]) >= 4)
        await self.quiet()
        from_app = {"room": "kitchen", "reading": 22, "from": "app"}
        events = watcher.received["sensor."]
        self.assertEqual([e.payload for e in events], [expected, expected, from_app, from_app])
        self.assertEqual({e.details.topic for e in events}, {"sensor.kitchen"})
        self.assertEqual(len({e.details.publication for e in events}), 2)
        # the welcome is sent to the exact subscriber only, not to pattern subscribers
        self.assertEqual(
            [e.payload for e in kitchen.received["sensor.kitchen"]], [{"hello": "kitchen"}, from_app]
        )


class DeliveryRuleTests(PubSubTestCase):
    TOPIC = "com.example.rules"

    async def setup_clients(self) -> tuple[Any, Any, Any]:
        publisher, a, b = await self.clients("json", "cbor", "msgpack")
        for client in (publisher, a, b):
            await client.record(self.TOPIC)
        return publisher, a, b

    async def receivers(self, publisher: Any, clients: list[Any], **options: Any) -> list[Any]:
        """Publish (acknowledged) with ``options`` and return which of ``clients`` got the event."""
        for client in clients:
            client.received[self.TOPIC].clear()
        await publisher.publish(self.TOPIC, "x", options=PublishOptions(acknowledge=True, **options))
        # a marker that everyone receives tells when the first publication has been delivered too
        await publisher.publish(
            self.TOPIC, "marker", options=PublishOptions(acknowledge=True, exclude_me=False)
        )
        await wait_until(
            lambda: all(any(e.payload == "marker" for e in c.received[self.TOPIC]) for c in clients)
        )
        return [c for c in clients if any(e.payload == "x" for e in c.received[self.TOPIC])]

    async def test_exclude_me(self) -> None:
        publisher, a, b = await self.setup_clients()
        everyone = [publisher, a, b]
        self.assertEqual(await self.receivers(publisher, everyone), [a, b])
        self.assertEqual(await self.receivers(publisher, everyone, exclude_me=True), [a, b])
        self.assertEqual(await self.receivers(publisher, everyone, exclude_me=False), everyone)

    async def test_exclude_and_eligible_by_session_id(self) -> None:
        publisher, a, b = await self.setup_clients()
        everyone = [publisher, a, b]
        self.assertEqual(await self.receivers(publisher, everyone, exclude=[a.session_id]), [b])
        self.assertEqual(await self.receivers(publisher, everyone, eligible=[b.session_id]), [b])
        self.assertEqual(
            await self.receivers(
                publisher, everyone, exclude_me=False, eligible=[publisher.session_id, a.session_id]
            ),
            [publisher, a],
        )
        self.assertEqual(
            await self.receivers(
                publisher, everyone, eligible=[a.session_id, b.session_id], exclude=[b.session_id]
            ),
            [a],
        )

    async def test_exclude_and_eligible_by_authid(self) -> None:
        publisher, a, b = await self.setup_clients()
        everyone = [publisher, a, b]
        self.assertEqual(len({publisher.authid, a.authid, b.authid}), 3)
        self.assertEqual(await self.receivers(publisher, everyone, exclude_authid=[a.authid]), [b])
        self.assertEqual(await self.receivers(publisher, everyone, eligible_authid=[a.authid]), [a])
        self.assertEqual(
            await self.receivers(publisher, everyone, exclude_me=False, eligible_authid=[publisher.authid]),
            [publisher],
        )

    async def test_exclude_and_eligible_by_authrole(self) -> None:
        publisher, a, b = await self.setup_clients()
        everyone = [publisher, a, b]
        self.assertEqual({publisher.authrole, a.authrole, b.authrole}, {"anonymous"})
        self.assertEqual(await self.receivers(publisher, everyone, exclude_authrole=["anonymous"]), [])
        self.assertEqual(await self.receivers(publisher, everyone, exclude_authrole=["admin"]), [a, b])
        self.assertEqual(await self.receivers(publisher, everyone, eligible_authrole=["anonymous"]), [a, b])
        self.assertEqual(await self.receivers(publisher, everyone, eligible_authrole=["admin"]), [])
        self.assertEqual(
            await self.receivers(
                publisher, everyone, eligible_authrole=["anonymous"], exclude=[b.session_id]
            ),
            [a],
        )


class AcknowledgeAndDisclosureTests(PubSubTestCase):
    async def test_acknowledge(self) -> None:
        publisher, subscriber = await self.clients("json", "cbor")
        await subscriber.record("com.example.ack")
        published = await publisher.publish("com.example.ack", "hi", options=PublishOptions(acknowledge=True))
        self.assertIsInstance(published.id, int)
        await wait_until(lambda: subscriber.received["com.example.ack"])
        self.assertEqual(subscriber.received["com.example.ack"][0].details.publication, published.id)
        # with nobody subscribed, a publication is still acknowledged
        again = await publisher.publish("com.example.nobody", options=PublishOptions(acknowledge=True))
        self.assertNotEqual(again.id, published.id)
        # without acknowledge there is nothing to wait for
        self.assertIsNone(publisher.publish("com.example.ack", "fire and forget"))
        await wait_until(lambda: len(subscriber.received["com.example.ack"]) == 2)

    async def test_disclose_me(self) -> None:
        subscriber = await self.connect("msgpack")
        await subscriber.record("com.example.who")
        plain = await self.connect("json")
        disclosing = await self.connect("cbor", client_class=DisclosingClient)
        await plain.publish("com.example.who", "plain", options=PublishOptions(acknowledge=True))
        await disclosing.publish("com.example.who", "disclosed", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: len(subscriber.received["com.example.who"]) == 2)
        anonymous, disclosed = subscriber.received["com.example.who"]
        self.assertEqual(anonymous.payload, "plain")
        self.assertIsNone(anonymous.details.publisher)
        self.assertIsNone(anonymous.details.publisher_authid)
        self.assertIsNone(anonymous.details.publisher_authrole)
        self.assertEqual(disclosed.payload, "disclosed")
        self.assertEqual(disclosed.details.publisher, disclosing.session_id)
        self.assertEqual(disclosed.details.publisher_authid, disclosing.authid)
        self.assertEqual(disclosed.details.publisher_authrole, "anonymous")

    async def test_disclose_me_on_a_pattern_subscription(self) -> None:
        subscriber = await self.connect("json")
        await subscriber.record("com.example.", match="prefix")
        disclosing = await self.connect("msgpack", client_class=DisclosingClient)
        await disclosing.publish("com.example.who", "me", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: subscriber.received["com.example."])
        [event] = subscriber.received["com.example."]
        self.assertEqual(event.details.publisher, disclosing.session_id)
        self.assertEqual(event.details.topic, "com.example.who")


class StrictUriTests(ServerTestCase):
    def setUp(self) -> None:
        self.serve(Sandstone(anonymous=True, open_uris=True, strict_uris=True))

    async def test_acknowledged_publish_to_an_invalid_uri_fails(self) -> None:
        client = await self.connect()
        # loose URIs pass autobahn's own check on the client, but not the router's strict rule
        with self.assertRaises(ApplicationError) as caught:
            await client.publish("com.Example.topic", options=PublishOptions(acknowledge=True))
        self.assertEqual(caught.exception.error, "wamp.error.invalid_uri")
        with self.assertRaises(ApplicationError) as caught:
            await client.subscribe(lambda: None, "chat/general")
        self.assertEqual(caught.exception.error, "wamp.error.invalid_uri")
        # the session is still usable
        await client.record("com.example.topic")
        await client.publish(
            "com.example.topic", 1, options=PublishOptions(acknowledge=True, exclude_me=False)
        )
        await wait_until(lambda: client.received["com.example.topic"])


class InvalidUriTests(PubSubTestCase):
    def publish_unchecked(self, client: Any, uri: str) -> defer.Deferred[Any]:
        """An acknowledged PUBLISH sent without autobahn's client-side URI check."""
        from autobahn.wamp import message
        from autobahn.wamp.request import PublishRequest

        request_id = client._request_id_gen.next()
        on_reply: defer.Deferred[Any] = defer.Deferred()
        client._publish_reqs[request_id] = PublishRequest(request_id, on_reply, was_encrypted=False)
        client._transport.send(message.Publish(request_id, uri, args=["x"], acknowledge=True))
        return on_reply

    async def test_invalid_uri_is_an_error_not_an_abort(self) -> None:
        publisher, subscriber = await self.clients("json", "msgpack")
        await subscriber.record("com.", match="prefix")
        for uri in ("com..example", "com.example.", "com.exa mple", "com.#"):
            with self.assertRaises(ApplicationError) as caught:
                await self.publish_unchecked(publisher, uri)
            self.assertEqual(caught.exception.error, "wamp.error.invalid_uri", uri)
        self.assertTrue(publisher.is_attached())
        await publisher.publish("com.example.fine", "ok", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: subscriber.received["com."])
        await self.quiet()
        self.assertEqual([e.payload for e in subscriber.received["com."]], ["ok"])


class UnsubscribeTests(PubSubTestCase):
    async def test_no_events_after_unsubscribe(self) -> None:
        publisher, subscriber = await self.clients("json", "json")
        subscription = await subscriber.record("com.example.u")
        await publisher.publish("com.example.u", 1, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: subscriber.received["com.example.u"])
        await subscription.unsubscribe()
        await publisher.publish("com.example.u", 2, options=PublishOptions(acknowledge=True))
        await self.quiet()
        self.assertEqual([e.payload for e in subscriber.received["com.example.u"]], [1])
        self.assertEqual(len(self.app.router.broker.subscriptions), 0)

    async def test_a_dropped_subscriber_is_forgotten(self) -> None:
        publisher, subscriber, other = await self.clients("json", "cbor", "msgpack")
        await subscriber.record("com.example.d")
        await other.record("com.example.d")
        await self.drop(subscriber)
        await wait_until(lambda: len(self.app.router.sessions) == 2)
        await publisher.publish("com.example.d", "after", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: other.received["com.example.d"])
        self.assertEqual(subscriber.received["com.example.d"], [])
        self.assertEqual(len(self.app.router.broker.subscriptions), 1)
