"""End-to-end: nodes and a Pusher reach a redis-server that speaks TLS only (``rediss://``), the server's
certificate verified against the CA of the URL's ``ssl_ca_certs``, with a client certificate when the server
wants one; an untrusted certificate or one for another name is refused, and said so in the log; Sentinel over
TLS (``rediss+sentinel://``). The tests make their own throwaway CA."""

from __future__ import annotations

import tempfile
from typing import Any

import redis
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone.push import Pusher
from tests.bus_support import BusTestCase
from tests.redis_server import RedisSentinel, RedisServer, ServerTLS, tls_query
from tests.support import wait_until
from tests.tls_certs import PKI, make_pki

OPTIONS: dict[str, Any] = {"reconnect_max_delay": 0.3}


def _pki(test: SynchronousTestCase | BusTestCase, name: str = "test", **options: Any) -> PKI:
    directory = tempfile.TemporaryDirectory(prefix="sandstone-tls-")
    test.addCleanup(directory.cleanup)
    return make_pki(directory.name, name, **options)


class TLSTests(BusTestCase):
    def start_redis(self, pki: PKI, auth_clients: bool = False) -> RedisServer:
        client = (pki.client_cert, pki.client_key) if auth_clients else (None, None)
        server = RedisServer(
            password="tls secret",
            tls=ServerTLS(pki.server_cert, pki.server_key, pki.ca, auth_clients, *client),
        )
        self.addCleanup(server.stop)
        server.start()
        return server

    async def test_nodes_connect_over_tls(self) -> None:
        server = self.start_redis(_pki(self))
        self.assertTrue(server.url.startswith("rediss://"))
        a, b = await self.two_nodes(server.url, **OPTIONS)
        traffic = await self.traffic(a, b)
        await self.crosses(traffic)

    async def test_with_a_client_certificate(self) -> None:
        """A server that wants client certificates gets the URL's, given as two files or as one."""
        pki = _pki(self)
        server = self.start_redis(pki, auth_clients=True)
        base = f"rediss://:tls%20secret@127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}"
        a = await self.start_node_at(
            f"{base}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}", "A"
        )
        b = await self.start_node_at(f"{base}&ssl_certfile={pki.client_combined}", "B")
        await self.crosses(await self.traffic(a, b))

    async def test_a_server_name_is_verified(self) -> None:
        """The same server reached as localhost: the certificate names it too."""
        pki = _pki(self)
        server = self.start_redis(pki)
        url = f"rediss://:tls%20secret@localhost:{server.port}/0?ssl_ca_certs={pki.ca}"
        a, b = await self.two_nodes(url, **OPTIONS)
        await self.crosses(await self.traffic(a, b))

    async def refused(self, url: str, reason: str) -> None:
        """A node on ``url`` never connects, says why once, and keeps trying."""
        logged = self.capture_logs()
        app = Sandstone(anonymous=True)
        bus = app.use_redis(url, **OPTIONS)
        self.addCleanup(bus.stopService)
        bus.startService()
        await wait_until(lambda: any("connection to Redis failed" in m for m in logged))
        failures = [m for m in logged if "failed" in m]
        self.assertIn(reason, failures[0])
        self.assertEqual(len(failures), 1, failures)  # once per outage, not once per attempt
        self.assertEqual([m for m in logged if "Traceback" in m], [])
        self.assertFalse(bus.connected)

    async def test_a_certificate_of_another_ca_is_refused(self) -> None:
        server = self.start_redis(_pki(self))
        other = _pki(self, "other")
        await self.refused(
            f"rediss://:tls%20secret@127.0.0.1:{server.port}/0?ssl_ca_certs={other.ca}", "certificate"
        )

    async def test_a_certificate_for_another_name_is_refused(self) -> None:
        pki = _pki(self, server_names=("redis.example.com",))
        server = self.start_redis(pki)
        url = f"rediss://:tls%20secret@127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}"
        await self.refused(url, "127.0.0.1")

    async def test_without_the_client_certificate_the_server_wants(self) -> None:
        pki = _pki(self)
        server = self.start_redis(pki, auth_clients=True)
        await self.refused(f"rediss://:tls%20secret@127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}", "")

    async def test_a_pusher_over_tls(self) -> None:
        pki = _pki(self)
        server = self.start_redis(pki, auth_clients=True)
        (node,) = [await self.start_node_at(server.url, "A")]
        reader = await self.connect_to(node)
        await reader.record("chat/general")
        with Pusher(server.url) as pusher:
            connection = pusher.client.connection_pool.get_connection()
            self.assertIsInstance(connection, redis.SSLConnection)
            pusher.client.connection_pool.release(connection)
            pusher.broadcast("chat/general", {"n": 1})
        await wait_until(lambda: [e.payload for e in reader.received.get("chat/general", [])] == [{"n": 1}])


class TLSFileTests(SynchronousTestCase):
    """TLS files that cannot be used are refused when the bus or the Pusher is made, with a clear error."""

    def test_unusable_files(self) -> None:
        pki = _pki(self)
        cases = {
            "ssl_ca_certs=/nonexistent/ca.pem": "ssl_ca_certs=/nonexistent/ca.pem: cannot read the CA",
            f"ssl_ca_certs={pki.server_key}": "no PEM certificate in that file",
            f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}": "a PEM certificate and its private key",
            f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile=/nonexistent/key": (
                "ssl_keyfile=/nonexistent/key: cannot read the client key"
            ),
        }
        for query, message in cases.items():
            url = f"rediss://127.0.0.1:6380/0?{query}"
            with self.assertRaises(ValueError, msg=url) as caught:
                Sandstone(anonymous=True).use_redis(url)
            self.assertIn(message, str(caught.exception), url)
            with self.assertRaises(ValueError, msg=url) as caught:
                Pusher(url)
            self.assertIn(message, str(caught.exception), url)

    def test_url_for_the_fixture(self) -> None:
        pki = _pki(self)
        tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca, True, pki.client_cert, pki.client_key)
        self.assertEqual(
            tls_query(tls),
            f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}",
        )


class SentinelOverTLSTests(BusTestCase):
    async def test_sentinels_and_servers_over_tls(self) -> None:
        """``rediss+sentinel://``: the node and a Pusher ask a Sentinel that speaks TLS only for the master,
        which speaks TLS only too."""
        pki = _pki(self)
        tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca)
        master = RedisServer(tls=tls)
        self.addCleanup(master.stop)
        master.start()
        sentinel = RedisSentinel(master.port, quorum=1, tls=tls)
        self.addCleanup(sentinel.stop)
        sentinel.start()
        url = f"rediss+sentinel://127.0.0.1:{sentinel.port}/mymaster/0?ssl_ca_certs={pki.ca}"
        logged = self.capture_logs()
        (node,) = [await self.start_node_at(url, "A", **OPTIONS)]
        self.assertIn(f"the Sentinels name 127.0.0.1:{master.port} as master mymaster", "\n".join(logged))
        reader = await self.connect_to(node)
        await reader.record("chat/general")
        with Pusher(url) as pusher:
            await deferToThread(pusher.broadcast, "chat/general", {"n": 1})
        await wait_until(lambda: [e.payload for e in reader.received.get("chat/general", [])] == [{"n": 1}])
