"""Tests for L{sandstone.push}, against a real redis-server."""

from __future__ import annotations

import builtins
import os
import shutil
import unittest
from dataclasses import dataclass
from typing import Any

import redis
from twisted.trial.unittest import SynchronousTestCase

from sandstone._envelope import (
    MAX_ID,
    DeliveryMessage,
    EventMessage,
    channel_names,
    decode,
)
from sandstone.push import Pusher
from tests.redis_server import RedisServer


@dataclass
class Author:
    name: str


@dataclass
class Article:
    title: str
    authors: list[Author]


class PusherTests(SynchronousTestCase):
    """Messages a L{Pusher} publishes reach the cluster's channels as valid v1 envelopes."""

    def setUp(self) -> None:
        server = RedisServer()
        self.addCleanup(server.stop)
        server.start()
        self.url = server.url
        self.listener = redis.Redis.from_url(server.url)
        self.addCleanup(self.listener.close)
        self.pubsub = self.listener.pubsub()
        self.addCleanup(self.pubsub.close)
        self.pusher = Pusher(server.url)
        self.addCleanup(self.pusher.close)

    def subscribe(self, *channels: str) -> None:
        """Subscribe and wait for Redis to confirm, so that nothing published afterwards is missed."""
        self.pubsub.subscribe(*channels)
        for channel in channels:
            confirmation = self.pubsub.get_message(timeout=5)
            self.assertIsNotNone(confirmation, f"no confirmation of the subscription to {channel}")

    def received(self) -> tuple[str, bytes]:
        """The next published message: (channel, raw data)."""
        message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        self.assertIsNotNone(message, "nothing was published")
        assert message is not None
        return message["channel"].decode(), message["data"]

    def test_dispatchDict(self) -> None:
        """A dict event arrives on the events channel as an event message; its id is returned."""
        channels = channel_names("sandstone", "realm1")
        self.subscribe(channels.events)
        event_id = self.pusher.dispatch("article.created", {"title": "Unicorns"})
        channel, raw = self.received()
        self.assertEqual(channel, "sandstone:realm1:events")
        self.assertEqual(
            decode(raw), EventMessage(self.pusher.origin, event_id, "article.created", {"title": "Unicorns"})
        )

    def test_dispatchDataclass(self) -> None:
        """A dataclass event travels as its fields, nested dataclasses included."""
        self.subscribe(channel_names("sandstone", "realm1").events)
        self.pusher.dispatch("article.created", Article("Unicorns", [Author("ann")]))
        message = decode(self.received()[1])
        assert isinstance(message, EventMessage)
        self.assertEqual(message.data, {"title": "Unicorns", "authors": [{"name": "ann"}]})

    def test_eventIdsUnique(self) -> None:
        """Each dispatch gets its own id."""
        self.subscribe(channel_names("sandstone", "realm1").events)
        ids = {self.pusher.dispatch("a", {}) for _ in range(3)}
        self.assertEqual(len(ids), 3)

    def test_broadcast(self) -> None:
        """A broadcast arrives on the deliveries channel with the payload as the only argument."""
        self.subscribe(channel_names("sandstone", "realm1").deliveries)
        publication_id = self.pusher.broadcast("chat/general", {"text": "hi"})
        channel, raw = self.received()
        self.assertEqual(channel, "sandstone:realm1:deliveries")
        message = decode(raw)
        assert isinstance(message, DeliveryMessage)
        self.assertEqual(message.origin, self.pusher.origin)
        self.assertIsNone(message.key)
        publication = message.publication
        self.assertEqual((publication.topic, publication.id), ("chat/general", publication_id))
        self.assertEqual((publication.args, publication.kwargs), ([{"text": "hi"}], None))
        self.assertEqual(
            (publication.publisher, publication.exclude, publication.eligible), (None, None, None)
        )
        self.assertTrue(1 <= publication_id <= MAX_ID)

    def test_broadcastRefusesWhatNotEverySerializerCarries(self) -> None:
        """A payload some WAMP client could not receive is refused before anything is sent."""
        self.subscribe(channel_names("sandstone", "realm1").deliveries)
        for payload in (2**70, float("nan"), {"when": object()}, {1: "int key"}):
            error = self.assertRaises(TypeError, self.pusher.broadcast, "chat/general", payload)
            self.assertIn("cannot broadcast on 'chat/general'", str(error))
        self.pusher.broadcast("chat/general", "fine")
        channel, raw = self.received()
        self.assertEqual(decode(raw).publication.args, ["fine"])

    def test_broadcastExcludeEligible(self) -> None:
        """exclude and eligible session ids travel with the delivery."""
        self.subscribe(channel_names("sandstone", "realm1").deliveries)
        self.pusher.broadcast("chat/general", "hi", exclude=[5, 6], eligible=iter([6, 7]))
        message = decode(self.received()[1])
        assert isinstance(message, DeliveryMessage)
        self.assertEqual(message.publication.exclude, frozenset({5, 6}))
        self.assertEqual(message.publication.eligible, frozenset({6, 7}))

    def test_realmAndPrefix(self) -> None:
        """Another realm and prefix select other channels."""
        channels = channel_names("myapp", "blog")
        self.subscribe(channels.events, channels.deliveries)
        with Pusher(self.url, realm="blog", prefix="myapp", origin="cron-1") as pusher:
            pusher.dispatch("a", {})
            pusher.broadcast("articles", 1)
        first, second = self.received(), self.received()
        self.assertEqual([first[0], second[0]], [channels.events, channels.deliveries])
        self.assertEqual(decode(first[1]).origin, "cron-1")

    def test_clusterNameAndDatabase(self) -> None:
        """The cluster name and the database of the URL (or the client) select the cluster's channels."""
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        cases = [
            ({"url": self.url.replace("/0", "/2")}, channel_names("sandstone", "realm1", db=2)),
            (
                {"url": self.url, "cluster_name": "blog"},
                channel_names("sandstone", "realm1", cluster_name="blog"),
            ),
            (
                {"client": redis.Redis(host="127.0.0.1", port=port, db=5), "cluster_name": "blog"},
                channel_names("sandstone", "realm1", cluster_name="blog", db=5),
            ),
        ]
        for options, channels in cases:
            self.subscribe(channels.events, channels.deliveries)
            with Pusher(**options) as pusher:
                self.assertEqual(pusher.channels, channels)
                pusher.dispatch("a", {})
                pusher.broadcast("articles", 1)
            self.assertEqual([self.received()[0], self.received()[0]], [channels.events, channels.deliveries])
            self.pubsub.unsubscribe()
            while self.pubsub.get_message(timeout=0.2):
                pass
            if "client" in options:
                options["client"].close()
        self.assertEqual(channel_names("sandstone", "realm1", db=2).events, "sandstone:db2:realm1:events")

    def test_givenClient(self) -> None:
        """A client given to the constructor is used, and left open by close()."""
        self.subscribe(channel_names("sandstone", "realm1").events)
        client = redis.Redis.from_url(self.url)
        self.addCleanup(client.close)
        pusher = Pusher(client=client)
        pusher.dispatch("a", {})
        pusher.close()
        self.assertIsInstance(decode(self.received()[1]), EventMessage)
        self.assertTrue(client.ping())

    def test_closed(self) -> None:
        """A closed Pusher refuses to publish."""
        self.pusher.close()
        self.assertRaises(RuntimeError, self.pusher.dispatch, "a", {})

    def test_tooLarge(self) -> None:
        """A message over the bus limit is refused before it is published."""
        pusher = Pusher(self.url, max_bytes=100)
        self.addCleanup(pusher.close)
        error = self.assertRaises(ValueError, pusher.broadcast, "articles", "x" * 200)
        self.assertIn("limit of 100", str(error))


class PusherValidationTests(SynchronousTestCase):
    """Arguments are checked before anything is sent (no Redis is contacted)."""

    def setUp(self) -> None:
        # nothing listens on port 1: any attempt to publish would fail with a ConnectionError
        self.pusher = Pusher("redis://127.0.0.1:1/0")
        self.addCleanup(self.pusher.close)

    def test_topicEmpty(self) -> None:
        """An empty topic URI is refused."""
        self.assertRaises(ValueError, self.pusher.broadcast, "", 1)

    def test_topicWhitespace(self) -> None:
        """A topic URI with whitespace is refused."""
        self.assertRaises(ValueError, self.pusher.broadcast, "chat general", 1)

    def test_topicHash(self) -> None:
        """A topic URI with '#' is refused."""
        self.assertRaises(ValueError, self.pusher.broadcast, "chat#general", 1)

    def test_topicNotString(self) -> None:
        """A topic URI is a str."""
        self.assertRaises(TypeError, self.pusher.broadcast, b"chat", 1)

    def test_badSessionId(self) -> None:
        """exclude/eligible hold session ids from 1 to 2^53."""
        self.assertRaises(ValueError, self.pusher.broadcast, "chat", 1, exclude=[0])
        self.assertRaises(TypeError, self.pusher.broadcast, "chat", 1, eligible=["5"])
        self.assertRaises(TypeError, self.pusher.broadcast, "chat", 1, eligible=[True])

    def test_payloadNotJson(self) -> None:
        """A payload JSON cannot encode is a TypeError."""
        self.assertRaises(TypeError, self.pusher.broadcast, "chat", {1, 2})

    def test_eventNotDataclassOrDict(self) -> None:
        """Only dataclass instances and dicts can be dispatched."""
        self.assertRaises(TypeError, self.pusher.dispatch, "a", ["x"])

    def test_emptyEventName(self) -> None:
        """An event name is a non-empty str."""
        self.assertRaises(ValueError, self.pusher.dispatch, "", {})

    def test_badRealm(self) -> None:
        """A realm that cannot name channels is refused at construction."""
        self.assertRaises(ValueError, Pusher, realm="a:b")

    def test_badClusterName(self) -> None:
        """A cluster name that cannot name channels is refused at construction."""
        self.assertRaises(ValueError, Pusher, cluster_name="a:b")

    def test_defaultOrigin(self) -> None:
        """Without an origin, each Pusher makes its own."""
        other = Pusher("redis://127.0.0.1:1/0")
        self.addCleanup(other.close)
        self.assertTrue(self.pusher.origin.startswith("push-"))
        self.assertNotEqual(self.pusher.origin, other.origin)

    def test_withoutRedis(self) -> None:
        """Without the redis package, constructing a Pusher says how to install it."""
        real_import = builtins.__import__

        def no_redis(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "redis":
                raise ImportError("No module named 'redis'")
            return real_import(name, *args, **kwargs)

        self.patch(builtins, "__import__", no_redis)
        error = self.assertRaises(ImportError, Pusher)
        self.assertIn("pip install 'sandstone[push]'", str(error))


class RedisServerTests(SynchronousTestCase):
    """The L{RedisServer} fixture starts and stops a private server."""

    def test_startStop(self) -> None:
        """After start() the server answers; after stop() the port is closed."""
        server = RedisServer()
        self.addCleanup(server.stop)
        server.start()
        client = redis.Redis.from_url(server.url)
        self.addCleanup(client.close)
        self.assertTrue(client.ping())
        self.assertEqual(client.config_get("save"), {"save": ""})
        server.stop()
        client.connection_pool.disconnect()
        self.assertRaises(redis.ConnectionError, client.ping)

    def test_notFoundSkips(self) -> None:
        """Without redis-server on PATH the tests are skipped, with how to install it."""
        self.patch(shutil, "which", lambda name: None)
        self.patch(os, "environ", {key: value for key, value in os.environ.items() if key != "CI"})
        error = self.assertRaises(unittest.SkipTest, RedisServer().start)
        self.assertIn("apt-get install redis-server", str(error))

    def test_notFoundInCI(self) -> None:
        """With CI=true a missing redis-server is an error, not a skip."""
        self.patch(shutil, "which", lambda name: None)
        self.patch(os, "environ", {**os.environ, "CI": "true"})
        self.assertRaises(RuntimeError, RedisServer().start)
