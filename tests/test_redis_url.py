"""Tests for L{sandstone._redis_url}: one table of Redis URLs, checked against the parser, the cluster bus
and L{sandstone.push.Pusher}, so that the nodes and producers agree on every URL (and on its database, which
is part of the channel names)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._envelope import channel_names
from sandstone._redis_url import RedisAddress
from sandstone.push import Pusher

#: URL -> what it parses to.
GOOD = {
    "redis://127.0.0.1:6379/0": RedisAddress("127.0.0.1", 6379, 0),
    "redis://localhost": RedisAddress("localhost", 6379, 0),
    "redis://localhost/": RedisAddress("localhost", 6379, 0),
    "redis://redis.example.com:7000/3": RedisAddress("redis.example.com", 7000, 3),
    "redis://[::1]:6380/15": RedisAddress("::1", 6380, 15),
    "redis://:s3cret@127.0.0.1:6380/2": RedisAddress("127.0.0.1", 6380, 2, None, "s3cret"),
    "redis://app:s3cret@redis.internal": RedisAddress("redis.internal", 6379, 0, "app", "s3cret"),
    "redis://app%40eu:p%40ss%3Aw@h/1": RedisAddress("h", 6379, 1, "app@eu", "p@ss:w"),
}

#: URL -> part of the ValueError's message.
BAD = {
    "http://127.0.0.1:6379/0": "expected a Redis URL like redis://127.0.0.1:6379/0, got 'http://127.0.0.1:6379/0'",
    "127.0.0.1:6379": "expected a Redis URL like redis://127.0.0.1:6379/0",
    "redis://": "expected a Redis URL like redis://127.0.0.1:6379/0, got 'redis://'",
    "redis:///0": "expected a Redis URL",
    "redis://h/zero": "the database in 'redis://h/zero' must be a number, got 'zero'",
    "redis://h/0/1": "the database in 'redis://h/0/1' must be a number, got '0/1'",
    "redis://h/-1": "must be a number, got '-1'",
    "redis://h:99999/0": "invalid port in Redis URL 'redis://h:99999/0'",
    "redis://h:port/0": "invalid port in Redis URL 'redis://h:port/0'",
    "redis://h:nope": "invalid port in Redis URL 'redis://h:nope'",
    "rediss://h:6380/0": "rediss:// Redis URLs are not supported (got 'rediss://h:6380/0'): "
    "use a plain TCP URL, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
    "unix:///run/redis.sock": "unix:// Redis URLs are not supported",
    "redis://h?db=2": "options after '?' or '#' are not supported in Redis URLs (got 'redis://h?db=2'): "
    "give the database as the path, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
    "redis://h/0?socket_timeout=1": "options after '?' or '#' are not supported",
    "redis://h/0#x": "options after '?' or '#' are not supported",
}


def _pusher_address(url: str) -> tuple[RedisAddress, int]:
    """What the client of a L{Pusher} made from ``url`` connects to, and the database in its channel names."""
    pusher = Pusher(url)
    try:
        kwargs: dict[str, Any] = pusher.client.connection_pool.connection_kwargs
        address = RedisAddress(
            kwargs["host"], kwargs["port"], kwargs["db"], kwargs["username"], kwargs["password"]
        )
        expected = channel_names("sandstone", "realm1", db=address.db)
        return address, address.db if pusher.channels == expected else -1
    finally:
        pusher.close()


class RedisURLTests(SynchronousTestCase):
    """Every URL of the table means the same to the parser, the bus and L{Pusher}."""

    def test_parsed(self) -> None:
        for url, expected in GOOD.items():
            self.assertEqual(RedisAddress.parse(url), expected, url)

    def test_refused(self) -> None:
        for url, message in BAD.items():
            with self.assertRaises(ValueError, msg=url) as caught:
                RedisAddress.parse(url)
            self.assertIn(message, str(caught.exception), url)

    def test_bus_parsed(self) -> None:
        """The bus connects where the URL says, and its channel names carry the URL's database."""
        for url, expected in GOOD.items():
            bus = Sandstone(anonymous=True).use_redis(url)
            self.assertEqual(bus.address, expected, url)
            self.assertEqual(bus.channels, channel_names("sandstone", "realm1", db=expected.db), url)

    def test_bus_refused(self) -> None:
        """A bad URL is refused when the bus is made, not when it starts."""
        for url, message in BAD.items():
            with self.assertRaises(ValueError, msg=url) as caught:
                Sandstone(anonymous=True).use_redis(url)
            self.assertIn(message, str(caught.exception), url)

    def test_pusher_parsed(self) -> None:
        """A Pusher's client connects where the URL says; its channels carry the database as the bus's do."""
        for url, expected in GOOD.items():
            self.assertEqual(_pusher_address(url), (expected, expected.db), url)

    def test_pusher_refused(self) -> None:
        for url, message in BAD.items():
            with self.assertRaises(ValueError, msg=url) as caught:
                Pusher(url)
            self.assertIn(message, str(caught.exception), url)

    def test_shown_without_the_password(self) -> None:
        address = RedisAddress.parse("redis://app:s3cret@127.0.0.1:6380/2")
        self.assertEqual(str(address), "redis://app:***@127.0.0.1:6380/2")
        self.assertNotIn("s3cret", repr(address))
        self.assertEqual(str(RedisAddress.parse("redis://:s3cret@[::1]")), "redis://:***@[::1]:6379/0")
        self.assertEqual(str(RedisAddress.parse("redis://h")), "redis://h:6379/0")
