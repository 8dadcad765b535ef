"""Tests for L{sandstone._workers} that need no processes: where a ``--listen`` description listens."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from sandstone._workers import TCPAddress, tcp_address


class TCPAddressTests(SynchronousTestCase):
    def test_tcp_defaults(self) -> None:
        self.assertEqual(tcp_address("tcp:8080"), TCPAddress(socket.AF_INET, "", 8080, 50))

    def test_tcp_interface_and_backlog(self) -> None:
        self.assertEqual(
            tcp_address("tcp:0:interface=127.0.0.1:backlog=7"), TCPAddress(socket.AF_INET, "127.0.0.1", 0, 7)
        )
        self.assertEqual(tcp_address("tcp:0:127.0.0.1:7"), TCPAddress(socket.AF_INET, "127.0.0.1", 0, 7))

    def test_tcp6_defaults_to_every_ipv6_interface(self) -> None:
        self.assertEqual(tcp_address("tcp6:9000"), TCPAddress(socket.AF_INET6, "::", 9000, 50))
        self.assertEqual(tcp_address("tcp6:9000:interface="), TCPAddress(socket.AF_INET6, "::", 9000, 50))

    def test_an_ipv6_interface_listens_on_ipv6(self) -> None:
        self.assertEqual(
            tcp_address(r"tcp6:9000:interface=\:\:1"), TCPAddress(socket.AF_INET6, "::1", 9000, 50)
        )
        self.assertEqual(
            tcp_address(r"tcp:9000:interface=\:\:1"), TCPAddress(socket.AF_INET6, "::1", 9000, 50)
        )

    def test_other_endpoints_are_refused(self) -> None:
        error = self.assertRaises(ValueError, tcp_address, "unix:/tmp/s.sock")
        self.assertEqual(str(error), "not a tcp: or tcp6: endpoint description: 'unix:/tmp/s.sock'")
