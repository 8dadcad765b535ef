"""Unit tests for connection admission: caps on open and pending connections, server-wide and per IP, and
how a SandstoneSite's connections report serving and closing (in memory, with StringTransports)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone
from sandstone._admission import FD_RESERVE, Admission, Refusal
from sandstone._web import SandstoneSite
from tests.support import websocket_payloads
from tests.test_web_handoff import HELLO, upgrade_request, wamp_frame


def admission(fds: int | None = None, **limits: Any) -> Admission:
    values = Limits(**limits)
    return Admission(lambda: values, fds=fds)


class AdmissionTests(SynchronousTestCase):
    def test_pending_connections_are_capped_server_wide(self) -> None:
        a = admission(max_pending_connections=2, max_pending_per_ip=0)
        first, _second = a.admit("10.0.0.1"), a.admit("10.0.0.2")
        refusal = self.assertRaises(Refusal, a.admit, "10.0.0.3")
        self.assertEqual(refusal.counter, "pending_refused")
        first.ready()  # serving now: no longer pending
        a.admit("10.0.0.3")
        self.assertEqual((a.open, a.pending), (3, 2))

    def test_pending_connections_are_capped_per_ip(self) -> None:
        a = admission(max_pending_per_ip=2)
        tickets = [a.admit("10.0.0.1"), a.admit("10.0.0.1")]
        refusal = self.assertRaises(Refusal, a.admit, "10.0.0.1")
        self.assertEqual(refusal.counter, "pending_per_ip_refused")
        self.assertIn("10.0.0.1", refusal.reason)
        a.admit("10.0.0.2")  # another address is not concerned
        tickets[0].release()
        a.admit("10.0.0.1")
        self.assertEqual(a.pending_from("10.0.0.1"), 2)

    def test_connections_per_ip_count_serving_connections_too(self) -> None:
        a = admission(max_connections_per_ip=2)
        for ticket in (a.admit("10.0.0.1"), a.admit("10.0.0.1")):
            ticket.ready()
        refusal = self.assertRaises(Refusal, a.admit, "10.0.0.1")
        self.assertEqual(refusal.counter, "connections_per_ip_refused")
        self.assertEqual(a.open_from("10.0.0.1"), 2)

    def test_open_connections_are_capped_by_max_connections(self) -> None:
        a = admission(max_connections=2)
        a.admit("a").ready()
        a.admit("b").ready()
        self.assertEqual(self.assertRaises(Refusal, a.admit, "c").counter, "connections_refused")

    def test_the_cap_stays_under_the_file_descriptor_limit(self) -> None:
        a = admission(fds=FD_RESERVE + 3, max_connections=10_000)
        self.assertEqual(a.max_open, 3)
        for ip in "abc":
            a.admit(ip).ready()
        self.assertRaises(Refusal, a.admit, "d")
        self.assertEqual(admission(fds=None, max_connections=0).max_open, 0)

    def test_ready_and_release_are_idempotent(self) -> None:
        a = admission()
        ticket = a.admit("10.0.0.1")
        ticket.ready()
        ticket.ready()
        ticket.release()
        ticket.release()
        self.assertEqual(
            (a.open, a.pending, a.pending_from("10.0.0.1"), a.open_from("10.0.0.1")), (0, 0, 0, 0)
        )

    def test_release_of_a_pending_connection_frees_both_counts(self) -> None:
        a = admission()
        a.admit("10.0.0.1").release()
        self.assertEqual((a.open, a.pending), (0, 0))

    def test_zero_disables_each_limit(self) -> None:
        a = admission(max_pending_connections=0, max_pending_per_ip=0, max_connections=0)
        for _ in range(500):
            a.admit("10.0.0.1")
        self.assertEqual(a.pending, 500)


class SiteAdmissionTests(SynchronousTestCase):
    """A SandstoneSite counts a connection as pending until it serves, and as open until it closes."""

    def setUp(self) -> None:
        self.app = Sandstone(
            anonymous=True,
            open_uris=True,
            limits=Limits(
                open_handshake_timeout=0,
                hello_timeout=0,
                auto_ping_interval=0,
                max_pending_per_ip=2,
            ),
        )

        @self.app.route("/hello")
        def hello(request: Any) -> str:
            return "hi"

        self.site = self.app.site(clock=Clock(), reactor=Clock())  # no timer on the global reactor

    def connect(self, ip: str = "10.0.0.1") -> StringTransport:
        peer = IPv4Address("TCP", ip, 40000)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "10.0.0.100", 8080))
        protocol = self.site.buildProtocol(peer)
        assert protocol is not None
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def send(self, transport: StringTransport, data: bytes) -> None:
        transport.protocol.dataReceived(data)

    def test_an_http_connection_serves_once_its_first_request_is_in(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /hello HTTP/1.1\r\n")
        self.assertEqual(self.site.admission.pending_from("10.0.0.1"), 1)
        self.send(transport, b"Host: 10.0.0.100\r\n\r\n")
        self.assertIn(b"hi", transport.value())
        self.assertEqual(self.site.admission.pending_from("10.0.0.1"), 0)
        self.assertEqual(self.site.admission.open_from("10.0.0.1"), 1)
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.site.admission.open, 0)

    def test_a_websocket_serves_once_its_wamp_session_is_open(self) -> None:
        transport = self.connect()
        self.send(transport, upgrade_request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.site.admission.pending_from("10.0.0.1"), 1)  # handshake done, no HELLO yet
        self.send(transport, wamp_frame(HELLO))
        self.assertEqual(self.site.admission.pending_from("10.0.0.1"), 0)
        self.assertEqual(self.site.admission.open, 1)
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.site.admission.open, self.site.admission.pending), (0, 0))

    def test_connections_over_the_per_ip_pending_cap_get_503(self) -> None:
        waiting = [self.connect(), self.connect()]
        refused = self.connect()
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 503 "), refused.value())
        self.assertTrue(refused.disconnecting)
        self.assertEqual(self.app.router.stats["pending_per_ip_refused"], 1)
        self.assertFalse(self.connect("10.0.0.2").disconnecting)  # others still get in
        waiting[0].protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(self.connect().disconnecting)

    def test_a_lost_pending_connection_is_released(self) -> None:
        transport = self.connect()
        self.send(transport, b"GET /ws HTTP/1.1\r\n")
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.site.admission.open, self.site.admission.pending), (0, 0))

    def test_a_refused_head_is_released_when_the_connection_closes(self) -> None:
        transport = self.connect()
        self.send(transport, b"G" * 20_000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.site.admission.open, self.site.admission.pending), (0, 0))

    def test_welcome_arrives_for_the_admitted_websocket(self) -> None:
        transport = self.connect()
        self.send(transport, upgrade_request() + wamp_frame(HELLO))
        body = transport.value().partition(b"\r\n\r\n")[2]
        welcome = json.loads(websocket_payloads(body)[0])
        self.assertEqual(welcome[0], 2)


class SiteHostTests(SynchronousTestCase):
    """Host names: a loopback server answers loopback names only by default; ``allowed_hosts`` decides."""

    def serve(self, allowed_hosts: list[str] | None = None) -> SandstoneSite:
        app = Sandstone(
            anonymous=True,
            open_uris=True,
            allowed_hosts=allowed_hosts,
            limits=Limits(open_handshake_timeout=0, hello_timeout=0, auto_ping_interval=0),
        )

        @app.route("/hello")
        def hello(request: Any) -> str:
            return "hi"

        self.app = app
        return app.site(clock=Clock(), reactor=Clock())

    def get(
        self, site: SandstoneSite, host: bytes, local: str = "127.0.0.1", path: bytes = b"/hello"
    ) -> bytes:
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", local, 8080))
        protocol = site.buildProtocol(peer)
        assert protocol is not None
        transport.protocol = protocol
        protocol.makeConnection(transport)
        if path == b"/ws":
            request = upgrade_request().replace(b"Host: 127.0.0.1:8080", b"Host: " + host)
        else:
            request = b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        transport.protocol.dataReceived(request)
        return transport.value()

    def test_loopback_server_refuses_a_rebound_name(self) -> None:
        site = self.serve()
        for path in (b"/hello", b"/ws"):
            self.assertTrue(self.get(site, b"evil.example:8080", path=path).startswith(b"HTTP/1.1 400 "))
        self.assertEqual(self.app.router.stats["hosts_refused"], 2)
        for host in (b"localhost:8080", b"127.0.0.1:8080", b"[::1]:8080", b"app.localhost"):
            self.assertTrue(self.get(site, host).startswith(b"HTTP/1.1 200 "), host)
        self.assertTrue(self.get(site, b"localhost:8080", path=b"/ws").startswith(b"HTTP/1.1 101 "))

    def test_other_addresses_serve_any_host_by_default(self) -> None:
        site = self.serve()
        self.assertTrue(self.get(site, b"api.example.com", local="10.1.2.3").startswith(b"HTTP/1.1 200 "))

    def test_allowed_hosts_are_enforced_on_every_address(self) -> None:
        site = self.serve(["api.example.com", "*.example.org"])
        self.assertTrue(
            self.get(site, b"api.example.com:8080", local="10.1.2.3").startswith(b"HTTP/1.1 200 ")
        )
        self.assertTrue(self.get(site, b"a.example.org").startswith(b"HTTP/1.1 200 "))
        self.assertTrue(self.get(site, b"localhost", local="10.1.2.3").startswith(b"HTTP/1.1 400 "))
        self.assertTrue(self.get(site, b"evil.example", path=b"/ws").startswith(b"HTTP/1.1 400 "))
