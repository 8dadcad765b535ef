"""Tests for L{sandstone._redis_url}: tables of Redis URLs (plain, TLS, Sentinel), checked against the parser,
the cluster bus and L{sandstone.push.Pusher}, so that the nodes and producers agree on every URL (and on its
database, which is part of the channel names)."""

from __future__ import annotations

import tempfile
from typing import Any

import redis
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone._envelope import channel_names
from sandstone._redis_url import RedisAddress, SentinelAddress, TLSFiles
from sandstone.push import Pusher
from tests.tls_certs import make_pki

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
    "redis://app@h/1": RedisAddress("h", 6379, 1, "app"),  # an ACL user without password
}

#: TLS URL -> what it parses to ({ca}, {cert}, {key}, {combined}: files of a test CA).
TLS_GOOD = {
    "rediss://127.0.0.1:6380/0": RedisAddress("127.0.0.1", 6380, 0, tls=TLSFiles()),
    "rediss://app:s3cret@redis.example.com/2?ssl_ca_certs={ca}": RedisAddress(
        "redis.example.com", 6379, 2, "app", "s3cret", TLSFiles("{ca}")
    ),
    "rediss://:pw@[::1]:6380/1?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}": RedisAddress(
        "::1", 6380, 1, None, "pw", TLSFiles("{ca}", "{cert}", "{key}")
    ),
    "rediss://h?ssl_certfile={combined}": RedisAddress("h", 6379, 0, tls=TLSFiles(None, "{combined}")),
}

#: Sentinel URL -> what it parses to.
SENTINEL_GOOD = {
    "redis+sentinel://10.0.0.1/mymaster": RedisAddress(
        "", 0, 0, sentinel=SentinelAddress((("10.0.0.1", 26379),), "mymaster")
    ),
    "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380,[::1]/mymaster/3": RedisAddress(
        "",
        0,
        3,
        None,
        "pw",
        sentinel=SentinelAddress((("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379)), "mymaster"),
    ),
    "redis+sentinel://app:pw@s1,s2/shop-main/1/?sentinel_password=sp%26w&sentinel_username=w": RedisAddress(
        "",
        0,
        1,
        "app",
        "pw",
        sentinel=SentinelAddress((("s1", 26379), ("s2", 26379)), "shop-main", "w", "sp&w"),
    ),
    "rediss+sentinel://s1/mymaster/0?ssl_ca_certs=/etc/ca.pem&sentinel_password=x": RedisAddress(
        "",
        0,
        0,
        tls=TLSFiles("/etc/ca.pem"),
        sentinel=SentinelAddress((("s1", 26379),), "mymaster", None, "x"),
    ),
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
    "unix:///run/redis.sock": "unix:// Redis URLs are not supported",
    "redis://h?db=2": "the database is not an option: give it as the path, e.g. redis://127.0.0.1:6379/2 "
    "(in 'redis://h?db=2'); this form takes no options",
    "redis://h/0?socket_timeout=1": "unknown option 'socket_timeout' (in 'redis://h/0?socket_timeout=1'); "
    "this form takes no options",
    "redis://h/0#x": "a Redis URL has no '#' part",
    "redis://h?x": "the options after '?' in 'redis://h?x' are not NAME=VALUE pairs joined with '&'",
    "redis://a,b/0": "(several hosts: use redis+sentinel://)",
    "redis://h?ssl_ca_certs=/ca.pem": "the option ssl_ca_certs is for TLS: use a rediss:// or rediss+sentinel://",
    "redis://h?sentinel_password=x": "the option sentinel_password is for Sentinel: use a redis+sentinel://",
    "rediss://h?ssl_cert_reqs=none": "unknown option 'ssl_cert_reqs' (in 'rediss://h?ssl_cert_reqs=none'); "
    "this form takes ssl_ca_certs, ssl_certfile, ssl_keyfile",
    "rediss://h?ssl_keyfile=/k.pem": "ssl_keyfile needs ssl_certfile, the client certificate it goes with",
    "rediss://h?ssl_ca_certs=": "the option ssl_ca_certs is empty",
    "rediss://h?ssl_ca_certs=a&ssl_ca_certs=b": "the option ssl_ca_certs is given twice",
    "rediss://h:0": "invalid port in Redis URL 'rediss://h:0'",
    "redis+sentinel://s1,s2": "the master's name is missing in 'redis+sentinel://s1,s2'",
    "redis+sentinel://s1/": "the master's name is missing",
    "redis+sentinel:///mymaster": "a redis+sentinel:// URL lists the Sentinels, e.g. redis+sentinel://",
    "redis+sentinel://s1:99999/mymaster": "invalid port in Redis URL 'redis+sentinel://s1:99999/mymaster'",
    "redis+sentinel://s1,/mymaster": "invalid host '' in Redis URL",
    "redis+sentinel://s1/mymaster/x": "the database in 'redis+sentinel://s1/mymaster/x' must be a number",
    "redis+sentinel://s1/my%20master": "the master name 'my master' in",
    "redis+sentinel://s1/m?ssl_ca_certs=/ca.pem": "the option ssl_ca_certs is for TLS",
    "redis+tls://h": "expected a Redis URL like redis://127.0.0.1:6379/0",
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

    def test_tls_parsed(self) -> None:
        for url, expected in self.tls_good().items():
            self.assertEqual(RedisAddress.parse(url), expected, url)

    def test_sentinel_parsed(self) -> None:
        for url, expected in SENTINEL_GOOD.items():
            self.assertEqual(RedisAddress.parse(url), expected, url)
            self.assertEqual(
                RedisAddress.parse(url.replace("://", "://", 1)).sentinel, expected.sentinel, url
            )

    def test_bus_takes_every_form(self) -> None:
        """The bus (made, not started) takes the TLS and Sentinel forms; its channels carry their database."""
        for url, expected in {**self.tls_good(), **SENTINEL_GOOD}.items():
            if url.startswith("rediss+sentinel"):
                url = url.replace("/etc/ca.pem", self.pki.ca)
                expected = RedisAddress.parse(url)
            bus = Sandstone(anonymous=True).use_redis(url)
            self.assertEqual(bus.address, expected, url)
            self.assertEqual(bus.channels, channel_names("sandstone", "realm1", db=expected.db), url)

    def test_pusher_over_tls(self) -> None:
        """A Pusher's client for a rediss:// URL verifies the server's certificate with the URL's files."""
        for url, expected in self.tls_good().items():
            pusher = Pusher(url)
            try:
                pool = pusher.client.connection_pool
                kwargs = pool.connection_kwargs
                self.assertIs(pool.connection_class, redis.SSLConnection, url)
                self.assertEqual(
                    (kwargs["host"], kwargs["port"], kwargs["db"]),
                    (expected.host, expected.port, expected.db),
                )
                self.assertEqual(
                    (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]), ("required", True), url
                )
                tls = expected.tls
                assert tls is not None
                self.assertEqual(
                    (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]),
                    (tls.ca_file, tls.cert_file, tls.key_file),
                    url,
                )
                self.assertEqual(pusher.channels, channel_names("sandstone", "realm1", db=expected.db), url)
            finally:
                pusher.close()

    def test_pusher_with_sentinels(self) -> None:
        """A Pusher's client for a redis+sentinel:// URL asks those Sentinels for that master."""
        for url, expected in SENTINEL_GOOD.items():
            if url.startswith("rediss+sentinel"):
                continue  # its CA file is not there; TLS options are checked above
            pusher = Pusher(url)
            try:
                sentinel = expected.sentinel
                assert sentinel is not None
                pool = pusher.client.connection_pool
                self.assertEqual(pool.service_name, sentinel.master, url)
                self.assertEqual(pool.connection_kwargs["db"], expected.db, url)
                self.assertEqual(pool.connection_kwargs["password"], expected.password, url)
                hosts = [
                    (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                    for s in pool.sentinel_manager.sentinels
                ]
                self.assertEqual(hosts, list(sentinel.hosts), url)
                watcher = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
                self.assertEqual(
                    (watcher.get("username"), watcher.get("password")), (sentinel.username, sentinel.password)
                )
                self.assertEqual(pusher.channels, channel_names("sandstone", "realm1", db=expected.db), url)
            finally:
                pusher.close()

    def tls_good(self) -> dict[str, RedisAddress]:
        """TLS_GOOD with the files of a throwaway CA."""
        directory = tempfile.TemporaryDirectory(prefix="sandstone-url-")
        self.addCleanup(directory.cleanup)
        self.pki = make_pki(directory.name)
        files = {"ca": self.pki.ca, "cert": self.pki.client_cert, "key": self.pki.client_key}
        files["combined"] = self.pki.client_combined
        table: dict[str, RedisAddress] = {}
        for url, address in TLS_GOOD.items():
            tls = address.tls
            assert tls is not None
            paths = TLSFiles(
                *(
                    None if p is None else p.format(**files)
                    for p in (tls.ca_file, tls.cert_file, tls.key_file)
                )
            )
            table[url.format(**files)] = RedisAddress(
                address.host, address.port, address.db, address.username, address.password, paths
            )
        return table

    def test_shown_without_the_password(self) -> None:
        address = RedisAddress.parse("redis://app:s3cret@127.0.0.1:6380/2")
        self.assertEqual(str(address), "redis://app:***@127.0.0.1:6380/2")
        self.assertNotIn("s3cret", repr(address))
        self.assertEqual(str(RedisAddress.parse("redis://:s3cret@[::1]")), "redis://:***@[::1]:6379/0")
        self.assertEqual(str(RedisAddress.parse("redis://h")), "redis://h:6379/0")
        self.assertEqual(
            str(RedisAddress.parse("rediss://app:pw@h:6380/2?ssl_ca_certs=/c")), "rediss://app:***@h:6380/2"
        )
        sentinel = RedisAddress.parse("redis+sentinel://:pw@a,b:26380/mymaster/3?sentinel_password=spw")
        self.assertEqual(str(sentinel), "redis+sentinel://:***@a:26379,b:26380/mymaster/3")
        self.assertNotIn("spw", repr(sentinel))
        self.assertNotIn("pw", repr(sentinel).replace("password", ""))
