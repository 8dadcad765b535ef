"""Unit tests for L{sandstone._bus}, without Redis: addresses, keys, dedupe, and what the bus does with the
messages it receives (``RedisBus._received`` is called directly, the bus is never started)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Publication, Sandstone, Topic, on_event
from sandstone import _bus as bus_module
from sandstone._bus import MAX_ID, RedisAddress, RedisBus, _Recent, publication_id_for
from sandstone._envelope import decode, encode_delivery, encode_event
from sandstone.testing import TestClient


@dataclass(frozen=True)
class Ping:
    n: int


class RedisAddressTests(SynchronousTestCase):
    def test_good_urls(self) -> None:
        cases = {
            "redis://127.0.0.1:6379/0": RedisAddress("127.0.0.1", 6379, 0),
            "redis://localhost": RedisAddress("localhost", 6379, 0),
            "redis://localhost/": RedisAddress("localhost", 6379, 0),
            "redis://redis.example.com:7000/3": RedisAddress("redis.example.com", 7000, 3),
            "redis://[::1]:6380/15": RedisAddress("::1", 6380, 15),
        }
        for url, expected in cases.items():
            self.assertEqual(RedisAddress.parse(url), expected, url)

    def test_credentials(self) -> None:
        self.assertEqual(
            RedisAddress.parse("redis://:s3cret@127.0.0.1:6380/2"),
            RedisAddress("127.0.0.1", 6380, 2, None, "s3cret"),
        )
        self.assertEqual(
            RedisAddress.parse("redis://app:s3cret@redis.internal"),
            RedisAddress("redis.internal", 6379, 0, "app", "s3cret"),
        )

    def test_bad_urls(self) -> None:
        cases = {
            "http://127.0.0.1:6379/0": "expected a Redis URL like redis://127.0.0.1:6379/0, got "
            "'http://127.0.0.1:6379/0'",
            "127.0.0.1:6379": "expected a Redis URL like redis://127.0.0.1:6379/0",
            "redis://": "expected a Redis URL like redis://127.0.0.1:6379/0, got 'redis://'",
            "redis:///0": "expected a Redis URL",
            "redis://h/zero": "the database in 'redis://h/zero' must be a number, got 'zero'",
            "redis://h/0/1": "the database in 'redis://h/0/1' must be a number, got '0/1'",
            "redis://h/-1": "must be a number, got '-1'",
            "redis://h:99999/0": "invalid port in Redis URL 'redis://h:99999/0'",
            "redis://h:port/0": "invalid port in Redis URL 'redis://h:port/0'",
        }
        for url, message in cases.items():
            with self.assertRaises(ValueError, msg=url) as caught:
                RedisAddress.parse(url)
            self.assertIn(message, str(caught.exception), url)

    def test_use_redis_checks_the_url_at_once(self) -> None:
        with self.assertRaises(ValueError):
            Sandstone(anonymous=True).use_redis("redis://h:nope")


class PublicationIdTests(SynchronousTestCase):
    def test_stable_and_derived_from_the_key(self) -> None:
        key = "4f1c0e6b9a2d4d5e8c7b6a5f4e3d2c1b:topic:articles:1"
        expected = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2**53 + 1
        self.assertEqual(publication_id_for(key), expected)
        self.assertEqual(publication_id_for(key), publication_id_for(str(key)))
        self.assertNotEqual(publication_id_for(key), publication_id_for(key[:-1] + "2"))

    def test_in_the_wamp_id_range(self) -> None:
        self.assertEqual(MAX_ID, 2**53)
        ids = {publication_id_for(f"event{i}:app:t:{i % 7}") for i in range(5000)}
        self.assertEqual(len(ids), 5000)
        self.assertTrue(all(isinstance(i, int) and 1 <= i <= 2**53 for i in ids))
        self.assertTrue(all(1 <= publication_id_for(k) <= 2**53 for k in ("", ":", "\u00e9", "x" * 10_000)))


class RecentTests(SynchronousTestCase):
    def test_window(self) -> None:
        clock = task.Clock()
        recent = _Recent(clock, window=10.0)
        self.assertTrue(recent.first_time("a"))
        self.assertFalse(recent.first_time("a"))
        clock.advance(5)
        self.assertTrue(recent.first_time("b"))
        clock.advance(5)  # "a" is exactly one window old: still remembered
        self.assertFalse(recent.first_time("a"))
        clock.advance(0.5)
        self.assertTrue(recent.first_time("a"))  # forgotten, then seen anew
        self.assertFalse(recent.first_time("b"))
        self.assertFalse(recent.first_time("a"))
        clock.advance(100)
        self.assertTrue(recent.first_time("c"))
        self.assertEqual(len(recent), 1)  # everything older than the window is gone

    def test_size_bound(self) -> None:
        clock = task.Clock()
        recent = _Recent(clock, window=60.0, limit=3)
        for key in "abcd":
            self.assertTrue(recent.first_time(key))
            self.assertLessEqual(len(recent), 3)
        self.assertEqual(len(recent), 3)
        # the oldest ones make room: "a" went first, the newest are still known
        self.assertFalse(recent.first_time("d"))
        self.assertFalse(recent.first_time("c"))
        self.assertTrue(recent.first_time("a"))
        self.assertLessEqual(len(recent), 3)
        for i in range(1000):
            recent.first_time(str(i))
        self.assertEqual(len(recent), 3)


def make_app(node_id: str) -> tuple[Sandstone, RedisBus, list[dict[str, Any]]]:
    """An app with a bus that is never started (no Redis): the router uses it as if it ran, and
    what it would send is decoded into the returned list."""
    app = Sandstone(anonymous=True, open_uris=True)
    app.forward("ping", Ping)
    app.forward("note")

    @app.topic("articles")
    class Articles(Topic):
        @on_event("ping")
        def pinged(self, event: Ping) -> None:
            self.broadcast({"from": "topic", "n": event.n})

    bus = app.use_redis("redis://127.0.0.1:1/0", node_id=node_id, reactor=task.Clock())
    app.router.bus = bus  # what startService does
    sent: list[dict[str, Any]] = []
    bus._publish = lambda channel, payload: sent.append(  # type: ignore[method-assign]
        {"channel": channel, **json.loads(payload)}
    )
    return app, bus, sent


class PrepareTests(SynchronousTestCase):
    def test_outside_a_forwarded_event(self) -> None:
        app, bus, sent = make_app("a")
        publication = Publication("articles", [1], id=42)
        self.assertTrue(bus.prepare(publication))
        self.assertIsNone(publication.key)
        self.assertEqual(publication.id, 42)
        self.assertTrue(bus.prepare(publication))  # nothing is remembered for unkeyed broadcasts
        app.broadcast("articles", "x")
        [delivery] = sent
        self.assertEqual(delivery["channel"], "sandstone:realm1:deliveries")
        self.assertNotIn("key", delivery)

    def test_keys_inside_a_forwarded_event(self) -> None:
        app, bus, sent = make_app("a")
        app._core.topics.instance("articles")  # a live topic instance, as when someone subscribed
        ids: list[int] = []

        @app.on_event("ping")
        def app_listener(event: Ping) -> None:
            ids.append(app.broadcast("articles", {"from": "app", "n": event.n}))
            ids.append(app.broadcast("articles", {"from": "app again", "n": event.n}))
            ids.append(app.broadcast("other", {"from": "app", "n": event.n}))

        bus._dispatch_local("e1", "ping", Ping(1))
        keys = [m["key"] for m in sent]
        self.assertEqual(
            keys, ["e1:topic:articles:1", "e1:app:articles:1", "e1:app:articles:2", "e1:app:other:1"]
        )
        self.assertEqual([m["publication"] for m in sent], [publication_id_for(k) for k in keys])
        self.assertEqual(ids, [publication_id_for(k) for k in keys[1:]])
        # back outside the event: no key
        del sent[:]
        app.broadcast("articles", "after")
        self.assertNotIn("key", sent[0])
        # another event starts its ranks anew
        del sent[:]
        bus._dispatch_local("e2", "ping", Ping(2))
        self.assertEqual([m["key"] for m in sent][:2], ["e2:topic:articles:1", "e2:app:articles:1"])

    def test_every_node_derives_the_same_ids(self) -> None:
        nodes = [make_app(name) for name in ("a", "b")]
        for app, bus, _ in nodes:
            app._core.topics.instance("articles")
            bus._dispatch_local("same-event", "ping", Ping(7))
        (_, _, sent_a), (_, _, sent_b) = nodes
        strip = [{k: v for k, v in m.items() if k != "origin"} for m in sent_a]
        self.assertEqual(strip, [{k: v for k, v in m.items() if k != "origin"} for m in sent_b])
        self.assertEqual({m["origin"] for m in sent_a + sent_b}, {"a", "b"})

    def test_a_key_delivered_from_another_node_first_is_not_delivered_again(self) -> None:
        app, bus, sent = make_app("b")
        reader = TestClient(app).connect().subscribe("articles")
        key = "e1:topic:articles:1"
        publication = Publication(
            "articles", [{"from": "topic", "n": 1}], id=publication_id_for(key), key=key
        )
        bus._received(bus.channels.deliveries, encode_delivery("a", publication))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        # node a's event arrives after its delivery: b's own broadcast of that key is neither delivered
        # here nor announced again
        bus._received(bus.channels.events, encode_event("a", "e1", "ping", {"n": 1}))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        self.assertEqual(sent, [])
        self.assertEqual(bus.stats["dispatched_remote"], 1)
        self.assertEqual(bus.stats["delivered_remote"], 1)
        # a third node's copy is a duplicate
        bus._received(bus.channels.deliveries, encode_delivery("c", publication))
        self.assertEqual(bus.stats["duplicates"], 1)
        self.assertEqual(len(reader.events), 1)
        self.assertEqual(reader.events[0].publication, publication_id_for(key))

    def test_own_broadcast_first_then_other_nodes_copy_is_dropped(self) -> None:
        app, bus, sent = make_app("b")
        reader = TestClient(app).connect().subscribe("articles")
        bus._dispatch_local("e1", "ping", Ping(1))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        [announced] = sent
        del announced["channel"]
        self.assertEqual(announced["key"], "e1:topic:articles:1")
        bus._received(bus.channels.deliveries, json.dumps({**announced, "origin": "a"}))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        self.assertEqual(bus.stats["duplicates"], 1)

    def test_listeners_after_an_asynchronous_one_keep_the_key(self) -> None:
        clock = task.Clock()
        app, bus, sent = make_app("a")

        @app.on_event("ping", priority=10)
        async def slow(event: Ping) -> None:
            app.broadcast("t", "before the pause")
            await task.deferLater(clock, 1, lambda: None)
            app.broadcast("t", "after the pause")

        @app.on_event("ping", priority=5)
        def waits(event: Ping) -> defer.Deferred[None]:
            return task.deferLater(clock, 1, lambda: None)

        @app.on_event("ping")
        def later(event: Ping) -> None:
            app.broadcast("t", "next listener")

        done = bus._dispatch_local("e1", "ping", Ping(1))
        clock.advance(1)
        clock.advance(1)
        self.assertTrue(self.successResultOf(done).ok)
        self.assertEqual(
            [(m["args"][0], m.get("key")) for m in sent],
            [
                ("before the pause", "e1:app:t:1"),
                ("after the pause", "e1:app:t:2"),
                ("next listener", "e1:app:t:3"),
            ],
        )


class DeliveredHookTests(SynchronousTestCase):
    """``router.delivered`` (the transport's cue to send a broadcast's EVENTs) runs once per publication
    delivered here, after the bus was told of it."""

    def test_after_a_local_broadcast_and_its_announcement(self) -> None:
        app, bus, sent = make_app("a")
        reader = TestClient(app).connect().subscribe("articles")
        seen: list[tuple[int, int]] = []
        app.router.delivered = lambda: seen.append((len(reader.payloads), len(sent)))
        app.broadcast("articles", "x")
        self.assertEqual(seen, [(1, 1)])

    def test_after_a_delivery_from_another_node(self) -> None:
        app, bus, sent = make_app("b")
        reader = TestClient(app).connect().subscribe("articles")
        seen: list[int] = []
        app.router.delivered = lambda: seen.append(len(reader.payloads))
        publication = Publication("articles", ["from a"], id=7)
        bus._received(bus.channels.deliveries, encode_delivery("a", publication))
        self.assertEqual(seen, [1])

    def test_not_for_a_keyed_broadcast_delivered_here_already(self) -> None:
        app, bus, sent = make_app("b")
        reader = TestClient(app).connect().subscribe("articles")
        seen: list[None] = []
        app.router.delivered = lambda: seen.append(None)
        key = "e1:topic:articles:1"
        publication = Publication(
            "articles", [{"from": "topic", "n": 1}], id=publication_id_for(key), key=key
        )
        bus._received(bus.channels.deliveries, encode_delivery("a", publication))
        # node a's event arrives after its delivery: this node's broadcast of that key is skipped
        bus._received(bus.channels.events, encode_event("a", "e1", "ping", {"n": 1}))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        self.assertEqual(len(seen), 1)

    def test_without_a_bus(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)
        seen: list[None] = []
        app.router.delivered = lambda: seen.append(None)
        app.broadcast("anything", "x")
        self.assertEqual(len(seen), 1)


class ReceivedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app, self.bus, self.sent = make_app("me")
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.events: list[Any] = []
        self.app.on_event("ping")(self.events.append)
        self.app.on_event("note")(self.events.append)
        self.reader = TestClient(self.app).connect().subscribe("news")

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.logged if e.get("log_level") >= LogLevel.warn]

    def test_malformed_payloads_are_counted_and_logged(self) -> None:
        self.bus.max_message_bytes = 1000
        cases: list[tuple[Any, str]] = [
            (b"not json", "not valid JSON"),
            (b"\xff\xfe", "not valid UTF-8"),
            (123, "must be bytes or str, not int"),  # txredisapi turns numeric payloads into numbers
            ("[1, 2]", "must be a JSON object"),
            ('{"type": "event"}', 'no version ("v")'),
            ('{"v": 2, "type": "event"}', "unsupported message version 2"),
            ('{"v": 1, "type": "shout", "origin": "x"}', "unknown message type 'shout'"),
            ('{"v": 1, "type": "event", "origin": "x", "id": "1", "name": "note"}', 'no "data"'),
            (b"{" + b" " * 1000 + b"}", "message too large: 1002 bytes, the limit is 1000"),
            ("{" + " " * 1000 + "}", "message too large: more than 1000 bytes"),
            ('"' + "\u00e9" * 500 + '"', "message too large: 1002 bytes"),
            (encode_event("x", "2", "not.forwarded", {}), "event 'not.forwarded' is not forwarded"),
            (encode_event("x", "3", "ping", {"n": 1, "extra": 2}), "unknown field(s) extra"),
            (encode_event("x", "4", "note", [1]), "data must be a JSON object"),
            ('{"v":1,"type":"delivery","origin":"x","topic":"articles","publication":0}', "publication must"),
            ('{"v":1,"type":"delivery","origin":"x","topic":"a b","publication":1}', "topic must"),
            ('{"v": 1, "type": "call", "origin": ""}', "origin must be a non-empty string"),
        ]
        for count, (payload, reason) in enumerate(cases, 1):
            self.bus._received("sandstone:realm1:events", payload)  # must not raise
            self.assertEqual(self.bus.stats["malformed"], count, payload)
            self.assertIn(reason, self.warnings()[-1], payload)
            self.assertIn("dropped a message on sandstone:realm1:events", self.warnings()[-1])
        self.assertEqual(self.bus.stats["received"], len(cases))
        self.assertEqual(self.bus.stats["dispatched_remote"], 0)
        self.assertEqual(self.bus.stats["delivered_remote"], 0)
        self.assertEqual(self.events, [])
        self.assertEqual(self.reader.payloads, [])

    def test_a_message_that_breaks_its_handler_is_counted_and_logged(self) -> None:
        self.bus._received(self.bus.channels.node("me"), '{"v": 1, "type": "result", "origin": "other"}')
        self.assertEqual(self.bus.stats["malformed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertIn("could not be handled", self.warnings()[-1])

    def test_good_messages_from_others(self) -> None:
        self.bus._received(self.bus.channels.events, encode_event("other", "e1", "ping", {"n": 3}))
        self.bus._received(self.bus.channels.events, encode_event("other", "e2", "note", {"k": "v"}))
        self.assertEqual(self.events, [Ping(3), {"k": "v"}])
        publication = Publication("news", ["hi"], id=99)
        self.bus._received(self.bus.channels.deliveries, encode_delivery("other", publication))
        self.assertEqual(self.reader.payloads, ["hi"])
        self.assertEqual(self.reader.events[0].publication, 99)
        # an unkeyed delivery is not deduplicated: another one is another broadcast
        self.bus._received(self.bus.channels.deliveries, encode_delivery("other", publication))
        self.assertEqual(self.reader.payloads, ["hi", "hi"])
        self.assertEqual(
            {
                k: self.bus.stats[k]
                for k in ("received", "dispatched_remote", "delivered_remote", "malformed")
            },
            {"received": 4, "dispatched_remote": 2, "delivered_remote": 2, "malformed": 0},
        )
        self.assertEqual(self.sent, [])  # what comes from the bus is not sent back to it
        self.assertEqual(self.warnings(), [])

    def test_own_messages_as_redis_hands_them_over_are_dropped_unparsed(self) -> None:
        """txredisapi hands payloads over as text: this node's own are told from their first bytes."""
        parsed: list[Any] = []
        self.patch(bus_module, "decode", lambda raw, **kw: parsed.append(raw) or decode(raw, **kw))
        own = [
            encode_event("me", "e1", "ping", {"n": 3}).decode(),
            encode_delivery("me", Publication("news", ["mine"], id=5)).decode(),
            json.dumps({"v": 1, "type": "result", "origin": "me", "call": 1}, separators=(",", ":")),
        ]
        for payload in own:
            self.bus._received(self.bus.channels.deliveries, payload)
        self.assertEqual(parsed, [])
        # a node whose id starts like this one's, and another key order: parsed and handled
        others = [
            encode_delivery("me2", Publication("news", ["theirs"], id=6)).decode(),
            '{"type":"event","v":1,"origin":"other","id":"e9","name":"note","data":{"k":1}}',
        ]
        for payload in others:
            self.bus._received(self.bus.channels.deliveries, payload)
        self.assertEqual(parsed, others)
        self.assertEqual(self.reader.payloads, ["theirs"])
        self.assertEqual(self.events, [{"k": 1}])
        self.assertEqual(self.bus.stats["received"], 5)

    def test_own_messages_are_ignored(self) -> None:
        self.bus._received(self.bus.channels.events, encode_event("me", "e1", "ping", {"n": 3}))
        self.bus._received(
            self.bus.channels.deliveries, encode_delivery("me", Publication("news", ["mine"], id=5))
        )
        self.bus._received(self.bus.channels.node("me"), '{"v": 1, "type": "result", "origin": "me"}')
        self.assertEqual(self.events, [])
        self.assertEqual(self.reader.payloads, [])
        self.assertEqual(self.bus.stats["received"], 3)
        self.assertEqual(
            [self.bus.stats[k] for k in ("dispatched_remote", "delivered_remote", "malformed", "duplicates")],
            [0, 0, 0, 0],
        )
        self.assertEqual(self.warnings(), [])
