"""Unit tests for L{sandstone._bus}, without Redis: addresses, keys, dedupe, and what the bus does with the
messages it receives (``RedisBus._received`` is called directly, the bus is never started)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Publication, Sandstone, Topic, on_event
from sandstone import _bus as bus_module
from sandstone._bus import CLUSTER_SECRET_ENV, RedisBus, _Recent
from sandstone._cluster import Cause, publication_id_for
from sandstone._dispatcher import DispatchResult
from sandstone._envelope import Signer, decode, encode_delivery, encode_entry, encode_event, encode_node
from sandstone._ids import MAX_ID
from sandstone.testing import TestClient


@dataclass(frozen=True)
class Ping:
    n: int


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


def make_app(node_id: str, **options: Any) -> tuple[Sandstone, RedisBus, list[dict[str, Any]]]:
    """An app with a bus that is never started (no Redis): the router uses it as if it ran, and
    what it would send is decoded into the returned list. ``options`` go to the bus."""
    app = Sandstone(anonymous=True, open_uris=True)
    app.forward("ping", Ping)
    app.forward("note")

    @app.topic("articles")
    class Articles(Topic):
        @on_event("ping")
        def pinged(self, event: Ping) -> None:
            self.broadcast({"from": "topic", "n": event.n})

    bus = app.use_redis("redis://127.0.0.1:1/0", node_id=node_id, reactor=task.Clock(), **options)
    app.router.use_cluster(bus)  # what startService does
    sent: list[dict[str, Any]] = []

    def publish(channel: str, payload: bytes, announce_key: str | None = None) -> defer.Deferred[Any]:
        sent.append({"channel": channel, **json.loads(payload)})
        return defer.succeed(1)  # one node heard it

    bus._publish = publish  # type: ignore[method-assign]
    return app, bus, sent


def handle(app: Sandstone, event_id: str, event: Ping) -> defer.Deferred[DispatchResult]:
    """Run the app's listeners of ``ping`` as a node does for the forwarded event ``event_id``."""
    return app.events.dispatch("ping", event, cause=Cause(event_id))


class PrepareTests(SynchronousTestCase):
    def test_outside_a_forwarded_event(self) -> None:
        app, bus, sent = make_app("a")
        publication = Publication("articles", [1], id=42)
        self.assertTrue(bus.first_delivery(publication))
        self.assertTrue(bus.first_delivery(publication))  # nothing is remembered for unkeyed broadcasts
        app.broadcast("articles", "x")
        [delivery] = sent
        self.assertEqual(delivery["channel"], "sandstone:realm1:peers")  # nodes speak on their own channel
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

        handle(app, "e1", Ping(1))
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
        handle(app, "e2", Ping(2))
        self.assertEqual([m["key"] for m in sent][:2], ["e2:topic:articles:1", "e2:app:articles:1"])

    def test_every_node_derives_the_same_ids(self) -> None:
        nodes = [make_app(name) for name in ("a", "b")]
        for app, _, _ in nodes:
            app._core.topics.instance("articles")
            handle(app, "same-event", Ping(7))
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
        bus._received(bus.channels.peers, encode_delivery("a", publication))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        # node a's event arrives after its delivery: b's own broadcast of that key is neither delivered
        # here nor announced again
        bus._received(bus.channels.peers, encode_event("a", "e1", "ping", {"n": 1}))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        self.assertEqual(sent, [])
        self.assertEqual(bus.stats["dispatched_remote"], 1)
        self.assertEqual(bus.stats["delivered_remote"], 1)
        # a third node's copy is a duplicate
        bus._received(bus.channels.peers, encode_delivery("c", publication))
        self.assertEqual(bus.stats["duplicates"], 1)
        self.assertEqual(len(reader.events), 1)
        self.assertEqual(reader.events[0].publication, publication_id_for(key))

    def test_own_broadcast_first_then_other_nodes_copy_is_dropped(self) -> None:
        app, bus, sent = make_app("b")
        reader = TestClient(app).connect().subscribe("articles")
        handle(app, "e1", Ping(1))
        self.assertEqual(reader.payloads, [{"from": "topic", "n": 1}])
        [announced] = sent
        del announced["channel"]
        self.assertEqual(announced["key"], "e1:topic:articles:1")
        bus._received(bus.channels.peers, json.dumps({**announced, "origin": "a"}))
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

        done = handle(app, "e1", Ping(1))
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
        bus._received(bus.channels.peers, encode_delivery("a", publication))
        # node a's event arrives after its delivery: this node's broadcast of that key is skipped
        bus._received(bus.channels.peers, encode_event("a", "e1", "ping", {"n": 1}))
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
            ('{"v": 1, "type": "event", "origin": "", "id": "1", "name": "note", "data": {}}', "origin must"),
        ]
        for count, (payload, reason) in enumerate(cases, 1):
            kind = "deliveries" if "delivery" in str(payload) else "events"
            self.bus._received(f"sandstone:realm1:{kind}", payload)  # must not raise
            self.assertEqual(self.bus.stats["malformed"], count, payload)
            self.assertIn(reason, self.warnings()[-1], payload)
            self.assertIn(f"dropped a message on sandstone:realm1:{kind}", self.warnings()[-1])
        self.assertEqual(self.bus.stats["received"], len(cases))
        self.assertEqual(self.bus.stats["dispatched_remote"], 0)
        self.assertEqual(self.bus.stats["delivered_remote"], 0)
        self.assertEqual(self.events, [])
        self.assertEqual(self.reader.payloads, [])

    def test_a_message_that_breaks_its_handler_is_counted_and_logged_as_an_error(self) -> None:
        def broken(event: Any, produced: bool = False) -> None:
            raise KeyError("a bug")

        self.patch(self.bus.router, "deliver_remote", broken)
        delivery = encode_delivery("other", Publication("news", [1], id=9))
        self.bus._received(self.bus.channels.deliveries, delivery)
        self.assertEqual(self.bus.stats["malformed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertIn("could not be handled", self.warnings()[-1])
        self.assertNotIn(LogLevel.critical, [e["log_level"] for e in self.logged])

    def test_a_delivery_other_serializers_cannot_carry_is_dropped(self) -> None:
        """JSON carries integers beyond 64 bits, 1e400 (infinity) and strings starting with NUL, which
        MessagePack/CBOR subscribers (or JSON ones) cannot receive as sent."""
        for count, args in enumerate(([2**70], "[1e400]", '["\\u0000not bytes"]'), 1):
            raw = encode_delivery("other", Publication("news", args if isinstance(args, list) else [0], id=9))
            if isinstance(args, str):
                raw = raw.replace(b'"args":[0]', b'"args":' + args.encode())
            self.bus._received(self.bus.channels.deliveries, raw)
            self.assertEqual(self.bus.stats["malformed"], count, raw)
            self.assertIn("dropped a delivery on news", self.warnings()[-1])
        self.assertEqual(self.reader.payloads, [])
        self.assertEqual(self.bus.stats["delivered_remote"], 0)

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
        channels = self.bus.channels
        others = [
            (channels.deliveries, encode_delivery("me2", Publication("news", ["theirs"], id=6)).decode()),
            (channels.events, '{"type":"event","v":1,"origin":"other","id":"e9","name":"note","data":{}}'),
        ]
        for channel, payload in others:
            self.bus._received(channel, payload)
        self.assertEqual(parsed, [payload for _, payload in others])
        self.assertEqual(self.reader.payloads, ["theirs"])
        self.assertEqual(self.events, [{}])
        self.assertEqual(self.bus.stats["received"], 5)

    def test_own_messages_are_ignored(self) -> None:
        self.bus._received(self.bus.channels.events, encode_event("me", "e1", "ping", {"n": 3}))
        self.bus._received(
            self.bus.channels.deliveries, encode_delivery("me", Publication("news", ["mine"], id=5))
        )
        self.bus._received(
            self.bus.channels.node("me"), '{"v": 1, "type": "result", "origin": "me", "call": "c1"}'
        )
        self.assertEqual(self.events, [])
        self.assertEqual(self.reader.payloads, [])
        self.assertEqual(self.bus.stats["received"], 3)
        self.assertEqual(
            [self.bus.stats[k] for k in ("dispatched_remote", "delivered_remote", "malformed", "duplicates")],
            [0, 0, 0, 0],
        )
        self.assertEqual(self.warnings(), [])


def forged_call(origin: str = "intruder", call: str = "c1", **fields: Any) -> bytes:
    """A well-formed node-internal call of com.x, as the attacker of issue 10 published it."""
    body = {
        "call": call,
        "procedure": "com.x",
        "args": ["payload"],
        "kwargs": None,
        "receive_progress": False,
        "caller": None,
        "caller_authid": "root",
        "caller_authrole": "admin",
        **fields,
    }
    return encode_node("call", origin, body)


class BusTestCase(SynchronousTestCase):
    """A node ``me`` with a reader of ``articles`` and a callee of ``com.x`` that records its calls."""

    options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.app, self.bus, self.sent = make_app("me", **self.options)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.reader = TestClient(self.app).connect().subscribe("articles")
        self.invoked: list[Any] = []
        TestClient(self.app).connect().register("com.x", lambda *args: self.invoked.append(args) or "done")
        del self.logged[:]  # the claim of com.x, which has no Redis to go to

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.logged if e.get("log_level") == LogLevel.warn]

    def assertNoCritical(self) -> None:
        bad = [e for e in self.logged if "log_failure" in e or e.get("log_level") == LogLevel.critical]
        self.assertEqual(bad, [])


class ChannelSeparationTests(BusTestCase):
    """Each channel accepts its own message types: outside producers cannot reach node internals."""

    def test_a_call_published_on_the_public_channels_reaches_no_callee(self) -> None:
        for channel in (self.bus.channels.deliveries, self.bus.channels.events):
            self.bus._received(channel, forged_call())
            self.assertIn(
                f"refused a message on {channel}: call messages are not accepted on this channel: it is a "
                "node-internal message",
                self.warnings()[-1],
            )
        self.assertEqual(self.invoked, [])
        self.assertEqual(self.bus.stats["rejected"], 2)
        self.assertEqual(self.bus.stats["malformed"], 0)
        self.assertEqual(self.sent, [])
        self.assertNoCritical()

    def test_without_a_secret_the_node_channel_serves_a_call_once(self) -> None:
        self.bus._received(self.bus.channels.node("me"), forged_call(origin="other"))
        self.bus._received(self.bus.channels.node("me"), forged_call(origin="other"))  # replayed
        self.assertEqual(self.invoked, [("payload",)])
        self.assertEqual(self.bus.stats["duplicates"], 1)
        [result] = self.sent
        self.assertEqual(
            (result["channel"], result["type"], result["args"]),
            ("sandstone:realm1:node:other", "result", ["done"]),
        )

    def test_each_channel_takes_its_own_types(self) -> None:
        event = encode_event("other", "e1", "note", {})
        delivery = encode_delivery("other", Publication("articles", ["x"], id=5))
        channels = self.bus.channels
        for channel, payload in [
            (channels.deliveries, event),
            (channels.events, delivery),
            (channels.node("me"), event),
            (channels.node("me"), delivery),
            (channels.peers, forged_call()),
            ("sandstone:realm1:node:someone-else", forged_call()),
        ]:
            self.bus._received(channel, payload)
        self.assertEqual(self.bus.stats["rejected"], 6)
        self.assertEqual(self.reader.payloads, [])
        self.assertEqual(self.invoked, [])
        self.assertIn("producers publish event messages on the events channel", self.warnings()[0])
        self.assertIn("producers publish delivery messages on the deliveries channel", self.warnings()[1])
        self.assertNoCritical()

    def test_a_producer_cannot_set_the_dedupe_key_of_the_nodes(self) -> None:
        key = "e1:topic:articles:1"
        forged = Publication("articles", ["forged"], id=publication_id_for(key), key=key)
        self.bus._received(self.bus.channels.deliveries, encode_delivery("producer", forged))
        self.assertIn("key is the nodes' internal dedupe key", self.warnings()[-1])
        self.assertEqual(self.bus.stats["rejected"], 1)
        # the key was not remembered: the node's own broadcast of it still reaches the reader
        self.app._core.topics.instance("articles")
        handle(self.app, "e1", Ping(1))
        self.assertEqual(self.reader.payloads, [{"from": "topic", "n": 1}])

    def test_what_nodes_send_goes_to_the_internal_channels(self) -> None:
        self.app.broadcast("articles", "x")
        self.successResultOf(self.app.dispatch("note", {"k": 1}))
        self.assertEqual([m["channel"] for m in self.sent], ["sandstone:realm1:peers"] * 2)
        self.assertEqual([m["type"] for m in self.sent], ["delivery", "event"])


class NodeMessageValidationTests(BusTestCase):
    """Every member of a node message is checked before use: bad ones are a warning, not a traceback."""

    def test_malformed_node_messages_are_dropped_with_the_reason(self) -> None:
        result = {"call": "c1", "args": None, "kwargs": None}
        cases: list[tuple[bytes | str, str]] = [
            ('{"v": 1, "type": "call", "origin": "other", "call": "c1"}', "procedure is missing"),
            (forged_call(procedure="com x"), "procedure must be a URI"),
            (forged_call(procedure=7), "procedure must be a URI"),
            (forged_call(call=""), "call must be a non-empty string"),
            (forged_call(args={"a": 1}), "args must be an array or null"),
            (forged_call(kwargs=[1]), "kwargs must be an object or null"),
            (forged_call(receive_progress="yes"), "receive_progress must be true or false"),
            (forged_call(caller=0), "caller must be an integer from 1 to 2^53 or null"),
            (forged_call(caller_authid=1), "caller_authid must be a string or null"),
            (forged_call(origin="a:b"), "origin must be a node id"),
            ('{"v": 1, "type": "result", "origin": "other"}', "call is missing"),
            (encode_node("result", "other", {**result, "progress": 1}), "progress must be true or false"),
            (encode_node("error", "other", result), "error is missing"),
            (encode_node("error", "other", {**result, "error": 5}), "error must be a URI"),
            (encode_node("cancel", "other", {"call": "c1", "mode": "now"}), "mode must be"),
            (encode_node("cancel", "other", {"call": ["c1"]}), "call must be a non-empty string"),
        ]
        for count, (payload, reason) in enumerate(cases, 1):
            self.bus._received(self.bus.channels.node("me"), payload)
            self.assertEqual(self.bus.stats["malformed"], count, payload)
            self.assertIn(reason, self.warnings()[-1], payload)
            self.assertIn("dropped a message on sandstone:realm1:node:me", self.warnings()[-1])
        self.assertEqual(self.invoked, [])
        self.assertEqual(self.sent, [])
        self.assertNoCritical()

    def test_answers_for_unknown_calls_are_ignored(self) -> None:
        for kind, body in [
            ("result", {"call": "nobody", "args": [1], "progress": True}),
            ("error", {"call": "nobody", "error": "wamp.error.canceled"}),
            ("cancel", {"call": "nobody", "mode": "kill"}),
        ]:
            self.bus._received(self.bus.channels.node("me"), encode_node(kind, "other", body))
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.bus.stats["malformed"], 0)


class SignatureTests(BusTestCase):
    """With a cluster secret, the internal channels take only messages signed with it."""

    options = {"cluster_secret": "s3cret"}

    def test_sent_messages_are_signed_for_their_channel(self) -> None:
        raw: list[tuple[str, bytes]] = []
        self.patch(
            self.bus, "_publish", lambda channel, payload, announce_key=None: raw.append((channel, payload))
        )
        self.app.broadcast("articles", "x")
        node = "sandstone:realm1:node:me"
        self.bus._received(node, Signer("s3cret").sign(node, forged_call(origin="b")))
        self.assertEqual([c for c, _ in raw], ["sandstone:realm1:peers", "sandstone:realm1:node:b"])
        for channel, payload in raw:
            Signer("s3cret").check(channel, payload)  # raises when wrong
            self.assertTrue(json.loads(payload)["sig"])
        self.assertTrue(self.bus.signed)
        self.assertNotIn("s3cret", repr(self.bus._signer))

    def test_unsigned_or_badly_signed_messages_are_refused(self) -> None:
        node = self.bus.channels.node("me")
        call = forged_call(origin="other")
        cases = [
            (call, "unsigned message on an internal channel"),
            (Signer("guess").sign(node, call), "bad signature"),
            (Signer("s3cret").sign("sandstone:realm1:node:elsewhere", call), "bad signature"),
            (Signer("s3cret").sign(node, call)[:-3] + b'0"}', "bad signature"),
            (Signer("s3cret").sign(node, call).replace(b"payload", b"PAYLOAD"), "bad signature"),
            (call[:-1] + b',"sig":"' + b"0" * 64 + b'"}', "bad signature"),
        ]
        for count, (payload, reason) in enumerate(cases, 1):
            self.bus._received(node, payload)
            self.assertEqual(self.bus.stats["rejected"], count)
            self.assertIn(reason, self.warnings()[-1])
        key = "e1:topic:articles:1"
        keyed = Publication("articles", ["x"], id=publication_id_for(key), key=key)
        delivery = encode_delivery("other", keyed)
        self.bus._received(self.bus.channels.peers, delivery)
        self.assertEqual(self.bus.stats["rejected"], len(cases) + 1)
        self.assertEqual(self.invoked, [])
        self.assertEqual(self.reader.payloads, [])
        self.assertNoCritical()
        # signed with the secret for this channel: served and delivered
        self.bus._received(node, Signer("s3cret").sign(node, call))
        self.bus._received(self.bus.channels.peers, Signer("s3cret").sign(self.bus.channels.peers, delivery))
        self.assertEqual(self.invoked, [("payload",)])
        self.assertEqual(self.reader.payloads, ["x"])

    def test_public_channels_need_no_signature(self) -> None:
        events: list[Any] = []
        self.app.on_event("note")(events.append)
        self.bus._received(self.bus.channels.events, encode_event("producer", "e1", "note", {"k": 1}))
        self.bus._received(
            self.bus.channels.deliveries, encode_delivery("producer", Publication("articles", ["x"], id=3))
        )
        self.assertEqual(events, [{"k": 1}])
        self.assertEqual(self.reader.payloads, ["x"])

    def test_the_secret_comes_from_the_environment_by_default(self) -> None:
        os.environ[CLUSTER_SECRET_ENV] = "from-env"
        self.addCleanup(os.environ.pop, CLUSTER_SECRET_ENV)
        _, bus, _ = make_app("n")
        self.assertTrue(bus.signed)
        raw: list[bytes] = []
        self.patch(bus, "_publish", lambda channel, payload, announce_key=None: raw.append(payload))
        bus.announce(Publication("articles", ["x"], id=3))
        Signer("from-env").check(bus.channels.peers, raw[0])
        _, given, _ = make_app("n", cluster_secret="given")
        self.assertTrue(given.signed)
        self.assertFalse(make_app("n", cluster_secret="")[1].signed)


class ClusterNameTests(SynchronousTestCase):
    """Channel and key names carry the cluster name and the Redis database."""

    def bus(self, url: str, **options: Any) -> RedisBus:
        return Sandstone(anonymous=True).use_redis(url, node_id="n1", reactor=task.Clock(), **options)

    def test_database_zero_without_a_name_keeps_the_names(self) -> None:
        channels = self.bus("redis://127.0.0.1:6379").channels
        self.assertEqual(
            (channels.events, channels.deliveries, channels.peers, channels.procedures, channels.node("n1")),
            (
                "sandstone:realm1:events",
                "sandstone:realm1:deliveries",
                "sandstone:realm1:peers",
                "sandstone:realm1:procedures",
                "sandstone:realm1:node:n1",
            ),
        )

    def test_other_databases_and_names(self) -> None:
        cases = {
            ("redis://h/1", None): "sandstone:db1:realm1",
            ("redis://h/0", "blog"): "sandstone:blog:realm1",
            ("redis://h/15", "blog"): "sandstone:blog:db15:realm1",
        }
        for (url, name), base in cases.items():
            channels = self.bus(url, cluster_name=name).channels
            self.assertEqual(channels.events, f"{base}:events")
            self.assertEqual(channels.heartbeat("n1"), f"{base}:nodes:n1")
            self.assertEqual(channels.node("n1"), f"{base}:node:n1")

    def test_bad_cluster_names(self) -> None:
        for name in ("a:b", "", "a b", "a*"):
            self.assertRaises(ValueError, self.bus, "redis://h/0", cluster_name=name)


class ProceduresEntryTests(BusTestCase):
    """Entries of the procedures hash are checked before use; heartbeat and purge say when they fail."""

    def redis_answers(self, answers: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
        commands: list[tuple[str, tuple[Any, ...]]] = []

        def command(name: str, *args: Any) -> defer.Deferred[Any]:
            commands.append((name, args))
            answer = answers[name]
            if isinstance(answer, Exception):
                return defer.fail(answer)
            return defer.succeed(answer)

        self.patch(self.bus, "_command", command)
        return commands

    def procedures_changed(self, *fields: str, version: int = 1) -> None:
        """Another node says these fields of the procedures hash changed."""
        message = encode_node("procedures", "b", {"fields": list(fields), "version": version})
        self.bus._received(self.bus.channels.peers, message)

    def test_an_entry_that_is_not_a_nodes_is_counted_warned_and_serves_no_call(self) -> None:
        self.patch(self.bus, "_commands_up", True)
        self.patch(self.bus, "_subscribed", True)
        caller = TestClient(self.app).connect()
        entries = [
            "not json",
            123,
            "[1]",
            '{"node": "b", "registration": 4}',  # an entry of an older version
            '{"invoke": "single", "members": ["a:b:1"]}',
            '{"invoke": "single", "members": []}',
        ]
        for count, entry in enumerate(entries, 1):
            self.redis_answers({"hmget": [entry], "get": count})
            self.procedures_changed("com.y", version=count)
            self.assertEqual(self.bus.stats["bad_entries"], count)
            self.assertIn(
                "the entry of com.y in sandstone:realm1:procedures is not a node's", self.warnings()[-1]
            )
            failure = self.failureResultOf(caller.call("com.y"), ApplicationError)
            self.assertEqual(failure.value.error, "wamp.error.no_such_procedure")
        self.assertEqual(self.sent, [])
        self.assertNoCritical()
        # a callee of node b: the call goes to b's channel, for that callee
        self.redis_answers({"hmget": [encode_entry("single", [("b", 4)])]})
        self.procedures_changed("com.y", version=len(entries) + 1)
        caller.call("com.y", 1)
        [sent] = self.sent
        self.assertEqual(
            (sent["channel"], sent["procedure"], sent["registration"], sent["match"], sent["callee"]),
            ("sandstone:realm1:node:b", "com.y", "com.y", "exact", 4),
        )

    def test_a_call_the_view_misses_waits_for_the_view_to_catch_up(self) -> None:
        self.patch(self.bus, "_commands_up", True)
        self.patch(self.bus, "_subscribed", True)
        caller = TestClient(self.app).connect()
        # Redis is at version 3 while this node's view is at 0: it reloads the whole hash, then calls
        entry = encode_entry("roundrobin", [("b", 4), ("c", 5)])
        commands = self.redis_answers({"get": 3, "eval": [3, ["prefix com.far.", entry]]})
        caller.call("com.far.away", 1)
        self.assertEqual([name for name, _ in commands], ["get", "eval"])
        self.assertEqual(
            [(m["channel"], m["procedure"], m["registration"], m["match"]) for m in self.sent],
            [("sandstone:realm1:node:b", "com.far.away", "com.far.", "prefix")],
        )
        # up to date now: a call nothing serves fails after one GET
        commands = self.redis_answers({"get": 3})
        failure = self.failureResultOf(caller.call("com.nowhere"), ApplicationError)
        self.assertEqual(failure.value.error, "wamp.error.no_such_procedure")
        self.assertEqual([name for name, _ in commands], ["get"])
        # without Redis: cluster_unavailable
        self.patch(self.bus, "_subscribed", False)
        failure = self.failureResultOf(caller.call("com.nowhere"), ApplicationError)
        self.assertEqual(failure.value.error, "sandstone.error.cluster_unavailable")

    def test_a_lost_change_is_read_at_the_next_beat_but_one(self) -> None:
        self.patch(self.bus, "_commands_up", True)
        loads: list[str] = []
        version = 2

        def command(name: str, *args: Any) -> defer.Deferred[Any]:
            script = args[0] if name == "eval" else None
            if script is bus_module._BEAT:
                return defer.succeed([1, version])
            if script is bus_module._PURGE:
                return defer.succeed([0, 0, version, []])
            if script is bus_module._PURGE_STATE:
                return defer.succeed([[], []])  # no dead node's presence state
            if script is bus_module._LOAD:
                loads.append("load")
                return defer.succeed([version, ["com.y", encode_entry("single", [("b", 4)])]])
            if name == "hmget":
                return defer.succeed([encode_entry("single", [("b", 4)])])
            raise AssertionError((name, args))

        self.patch(self.bus, "_command", command)
        self.bus._beat()  # Redis is at version 2, this node's view at 0: a message may be on its way
        self.assertEqual(loads, [])
        self.bus._beat()  # still behind a beat later: it was lost, read the whole hash
        self.assertEqual(loads, ["load"])
        self.assertIsNotNone(self.app.router.dealer.registration("com.y"))
        self.bus._beat()
        self.assertEqual(loads, ["load"])  # up to date
        # changes learned out of order still bring the view up to date
        version = 4
        self.procedures_changed("com.y", version=4)
        self.bus._beat()
        self.procedures_changed("com.y", version=3)
        self.bus._beat()
        self.bus._beat()
        self.assertEqual(loads, ["load"])
        self.assertNoCritical()

    def test_heartbeat_failures_are_warned_once_per_streak(self) -> None:
        self.patch(self.bus, "_commands_up", True)
        self.redis_answers({"eval": defer.TimeoutError("timed out")})
        for _ in range(3):
            self.bus._beat()
        beat = [m for m in self.warnings() if "heartbeat failed" in m]
        self.assertEqual(len(beat), 1)
        self.assertIn("heartbeat failed (", beat[0])
        self.redis_answers({"eval": 1, "exists": 1})
        self.bus._beat()
        self.assertIn("heartbeats work again", formatEvent(self.logged[-1]))

    def test_purge_failures_and_bad_entries_are_warned(self) -> None:
        self.patch(self.bus, "_commands_up", True)
        nobody_lost: list[Any] = [[], []]  # the presence purge: no dead node, no node's flags
        outcomes = iter(
            [
                [1, 0],  # beat
                Exception("ERR script failed"),  # purge
                nobody_lost,
                [1, 0],
                Exception("ERR script failed"),
                nobody_lost,
                [1, 0],
                [0, 2, 1, ["com.a", "com.b"]],  # the purge removed two bad entries: the view reads them
                [None, None],
                nobody_lost,
            ]
        )

        def command(name: str, *args: Any) -> defer.Deferred[Any]:
            answer = next(outcomes)
            return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)

        self.patch(self.bus, "_command", command)
        for _ in range(3):
            self.bus._beat()
        purge = [m for m in self.warnings() if "could not purge" in m]
        self.assertEqual(len(purge), 1)
        self.assertIn("ERR script failed", purge[0])
        self.assertIn(
            "removed 2 entries that name no node from sandstone:realm1:procedures", self.warnings()[-1]
        )
        self.assertEqual(self.bus.stats["bad_entries"], 2)
        [changed] = self.sent  # the other nodes are told
        self.assertEqual(
            (changed["type"], changed["fields"], changed["version"]), ("procedures", ["com.a", "com.b"], 1)
        )
        self.assertNoCritical()


def meta_message(origin: str = "other", topic: str = "wamp.session.on_join", **fields: Any) -> bytes:
    body = {"topic": topic, "publication": 7, "args": [{"session": 5}], "about": None, **fields}
    return encode_node("meta", origin, body)


class PresenceMessageTests(BusTestCase):
    """Meta events and meta interest between nodes, on the peers channel only."""

    def test_a_meta_event_from_another_node_reaches_the_meta_subscribers(self) -> None:
        joins = TestClient(self.app).connect().subscribe("wamp.session.on_join")
        self.bus._received(self.bus.channels.peers, meta_message())
        self.assertEqual([(e.publication, e.args) for e in joins.events], [(7, [{"session": 5}])])

    def test_a_subscription_meta_event_reaches_who_may_subscribe_to_its_subscription(self) -> None:
        self.app.authorizer(lambda session, action, uri, match: not uri.startswith("secret."))
        watcher = TestClient(self.app).connect().subscribe("wamp.subscription.on_subscribe")
        for uri in ("secret.plans", "com.news"):
            message = meta_message(topic="wamp.subscription.on_subscribe", args=[5, 9], about=[uri, "exact"])
            self.bus._received(self.bus.channels.peers, message)
        self.assertEqual(len(watcher.events), 1)

    def test_meta_and_interest_messages_are_refused_off_the_peers_channel(self) -> None:
        interest = encode_node("interest", "other", {"meta": True})
        for channel in (self.bus.channels.events, self.bus.channels.deliveries, self.bus.channels.node("me")):
            for payload in (meta_message(), interest):
                self.bus._received(channel, payload)
        self.assertEqual(self.bus.stats["rejected"], 6)
        self.assertFalse(self.bus.wants_meta)
        self.assertIn("sent by nodes on the peers channel only", self.warnings()[0])

    def test_a_meta_message_outside_the_wamp_namespace_is_dropped(self) -> None:
        self.bus._received(self.bus.channels.peers, meta_message(topic="articles"))
        self.assertEqual(self.reader.payloads, [])
        self.assertIn("is not a meta topic", self.warnings()[-1])

    def test_producers_cannot_publish_to_meta_topics(self) -> None:
        joins = TestClient(self.app).connect().subscribe("wamp.", match="prefix")
        forged = encode_delivery("producer", Publication("wamp.session.on_join", [{"session": 1}], id=3))
        for channel in (self.bus.channels.deliveries, self.bus.channels.peers):
            self.bus._received(channel, forged)
        self.assertEqual(self.bus.stats["rejected"], 2)
        self.assertIn("only the router publishes", self.warnings()[-1])
        self.assertEqual(joins.events, [])

    def test_interest_turns_meta_events_on_and_off(self) -> None:
        alice = TestClient(self.app).connect()
        self.assertEqual(self.sent, [])  # nobody listens: no meta event crosses
        self.bus._received(self.bus.channels.peers, encode_node("interest", "other", {"meta": True}))
        self.assertTrue(self.bus.wants_meta)
        alice.subscribe("com.news")
        self.assertEqual(
            [(m["type"], m["topic"]) for m in self.sent],
            [("meta", "wamp.subscription.on_create"), ("meta", "wamp.subscription.on_subscribe")],
        )
        self.assertEqual(self.sent[0]["about"], ["com.news", "exact"])
        self.bus._received(self.bus.channels.peers, encode_node("interest", "other", {"meta": False}))
        self.assertFalse(self.bus.wants_meta)

    def test_this_nodes_interest_is_told_to_the_others(self) -> None:
        watcher = TestClient(self.app).connect()
        joins = watcher.subscribe("wamp.session.on_join")
        watcher.unsubscribe(joins)
        self.assertEqual(
            [(m["type"], m["meta"]) for m in self.sent], [("interest", True), ("interest", False)]
        )


class PurgeStateTests(BusTestCase):
    """What the presence purge returns for the nodes it removed becomes leaving members here."""

    def test_a_dead_nodes_members_and_sessions_leave(self) -> None:
        watcher = TestClient(self.app).connect()
        leaves = watcher.subscribe("wamp.session.on_leave")
        unsubscribes = watcher.subscribe("wamp.subscription.on_unsubscribe")
        deletes = watcher.subscribe("wamp.subscription.on_delete")
        sessions = ["5", json.dumps(["bob", "user", "ticket", "static"]), "bad", "entry"]
        details = json.dumps(["articles", "exact", "2026-12-05T03:00:00.000Z"])
        members = ["5", json.dumps(["bob", "user"])]
        answer = [
            [["dead", sessions, [["9", details, members, 1], ["x", "y", [], 0]]]],
            ["me", "0", "b", "1"],
        ]
        self.bus._state_purged(answer)
        self.assertEqual([e.args for e in leaves.events], [[5, "bob", "user"]])
        self.assertEqual([e.args for e in unsubscribes.events], [[5, 9]])
        self.assertEqual([e.args for e in deletes.events], [[5, 9]])
        self.assertEqual(self.bus.stats["nodes_purged"], 1)
        self.assertTrue(self.bus.wants_meta)  # node b listens
        self.assertNoCritical()

    def test_answers_that_are_not_the_scripts_are_ignored(self) -> None:
        for answer in (None, 3, [1], [[1, 2], []], [["x"], "y"], [[["n", "not a list", "x"]], []]):
            self.bus._state_purged(answer)
        self.assertEqual(self.bus.stats["nodes_purged"], 1)  # the last one: a node without anything
        self.assertNoCritical()
