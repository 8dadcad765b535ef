"""Tests for L{sandstone._workers} that need no processes: where a ``--listen`` description listens, what
the supervisor does with the log events of its workers, the arguments a worker gets."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, eventAsJSON
from twisted.trial.unittest import SynchronousTestCase

from sandstone._workers import (
    InheritedPortService,
    TCPAddress,
    WorkerSupervisor,
    tcp_address,
    worker_arguments,
)


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


class _Listener:
    """Stands for the SharedListener: records which worker's socket it takes over or hands back."""

    running = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def take_over(self, number: int) -> None:
        self.calls.append(("take_over", number))

    def hand_back(self, number: int) -> None:
        self.calls.append(("hand_back", number))


class _Port:
    def stopListening(self) -> None:
        return None


class AcceptingTests(SynchronousTestCase):
    """A worker says in its log when it starts and stops accepting; the supervisor accepts on the worker's
    socket while it does not."""

    def relay(self, event: dict[str, Any]) -> tuple[_Listener, list[dict[str, Any]]]:
        listener, relayed = _Listener(), []
        supervisor = WorkerSupervisor(2, [], listener, 10.0, MemoryReactorClock(), relayed.append)  # type: ignore[arg-type]
        supervisor.relay(2, eventAsJSON(event).encode(), 1)  # a JSON line on the worker's stdout
        return listener, relayed

    def test_a_stopping_worker_hands_its_socket_to_the_supervisor(self) -> None:
        service = InheritedPortService(-1, None, MemoryReactorClock())
        service.port = _Port()  # type: ignore[assignment]
        with capturedLogs() as events:
            service.stopService()
        [stopping] = [event for event in events if "sandstone_accepting" in event]
        listener, relayed = self.relay(stopping)
        self.assertEqual(listener.calls, [("take_over", 2)])
        self.assertEqual(relayed[0]["log_format"], "worker 2: no longer accepting connections")

    def test_an_accepting_worker_gets_its_socket_back(self) -> None:
        event = {"log_format": "accepting connections", "sandstone_accepting": True, "log_namespace": "w"}
        listener, _relayed = self.relay(event)
        self.assertEqual(listener.calls, [("hand_back", 2)])

    def test_other_events_leave_the_sockets_alone(self) -> None:
        listener, relayed = self.relay({"log_format": "hello", "log_namespace": "w"})
        self.assertEqual((listener.calls, len(relayed)), ([], 1))


class WorkerArgumentsTests(SynchronousTestCase):
    def test_flags_given_are_passed_on(self) -> None:
        parameters = [["listen", "l", "tcp:8080", ""], ["workers", None, "1", ""], ["realm", None, None, ""]]
        flags = [["shutdown-goodbye", None, ""], ["other-flag", None, ""]]
        options = {"listen": "tcp:0", "workers": 2, "realm": None, "shutdown-goodbye": 1, "other-flag": 0}
        self.assertEqual(
            worker_arguments(options, parameters, flags), ["--listen=tcp:0", "--shutdown-goodbye"]
        )
