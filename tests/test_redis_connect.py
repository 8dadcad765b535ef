"""Tests for L{sandstone._redis_connect}, with a fake endpoint and clock: a L{RedisLink} says hello (AUTH,
SELECT, ROLE, PING), hands the connection over, and after any failure tries again with a growing, capped
delay, forever, until it is disconnected; L{SentinelEndpoint} asks the Sentinels in turn."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sandstone._redis_connect import CommandProtocol, RedisLink, SentinelEndpoint, SentinelError
from sandstone._redis_url import RedisAddress


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connection attempts wait until the test accepts or refuses them."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self) -> tuple[Any, StringTransport]:
        factory, d = self.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        self.attempts[-1][1].errback(ConnectionRefusedError())


def commands(transport: StringTransport) -> list[list[bytes]]:
    """The commands written so far (RESP arrays of bulk strings), and forget them."""
    data, found = transport.value(), []
    transport.clear()
    while data:
        assert data.startswith(b"*"), data
        count, _, data = data[1:].partition(b"\r\n")
        args = []
        for _ in range(int(count)):
            length, _, data = data[1:].partition(b"\r\n")
            args.append(data[: int(length)])
            data = data[int(length) + 2 :]
        found.append(args)
    return found


class LinkTestCase(SynchronousTestCase):
    def make_link(self, url: str = "redis://127.0.0.1/0", **options: Any) -> RedisLink:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.events: list[tuple[str, Any]] = []

        ready_result = options.pop("ready_result", None)

        def ready(protocol: Any) -> Any:
            self.events.append(("ready", protocol))
            return ready_result

        link = RedisLink(
            self.endpoint,
            CommandProtocol,
            RedisAddress.parse(url),
            reactor=self.clock,
            timeout=2.0,
            initial_delay=0.5,
            max_delay=5.0,
            select_db=True,
            ready=ready,
            lost=lambda reason: self.events.append(("lost", reason)),
            failed=lambda reason: self.events.append(("failed", reason)),
            **options,
        )
        link.start()
        return link

    def retry_delay(self) -> float:
        (call,) = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()


class HelloTests(LinkTestCase):
    def test_auth_select_ping_then_ready(self) -> None:
        link = self.make_link("redis://app:s3cret@127.0.0.1/2")
        protocol, transport = self.endpoint.accept()
        self.assertEqual(commands(transport), [[b"AUTH", b"app", b"s3cret"]])
        protocol.dataReceived(b"+OK\r\n")
        self.assertEqual(commands(transport), [[b"SELECT", b"2"]])
        protocol.dataReceived(b"+OK\r\n")
        self.assertEqual(commands(transport), [[b"PING"]])
        self.assertEqual(self.events, [])
        protocol.dataReceived(b"+PONG\r\n")
        self.assertEqual(self.events, [("ready", protocol)])
        self.assertIs(link.protocol, protocol)

    def test_a_user_without_password_authenticates_as_redis_py_does(self) -> None:
        self.make_link("redis://app@127.0.0.1/0")
        _, transport = self.endpoint.accept()
        self.assertEqual(commands(transport), [[b"AUTH", b"app", b""]])

    def test_through_sentinel_the_server_must_be_the_master(self) -> None:
        link = self.make_link("redis+sentinel://s1/mymaster/0")
        protocol, transport = self.endpoint.accept()
        self.assertEqual(commands(transport), [[b"ROLE"]])
        protocol.dataReceived(b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6380\r\n$9\r\nconnected\r\n:10\r\n")
        self.assertEqual(
            self.events,
            [("failed", "the server the Sentinels named is not the master (ROLE: slave); asking again")],
        )
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(link.protocol)
        self.clock.advance(self.retry_delay())
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"*3\r\n$6\r\nmaster\r\n:10\r\n*0\r\n")
        self.assertEqual(self.events[-1], ("ready", protocol))

    def test_a_refused_password_is_said_and_tried_again(self) -> None:
        self.make_link("redis://:wrong@127.0.0.1/0")
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0][0], "failed")
        self.assertIn("AUTH failed: WRONGPASS invalid username-password pair", self.events[0][1])
        self.clock.advance(self.retry_delay())
        self.assertEqual(len(self.endpoint.attempts), 2)

    def test_an_answer_that_does_not_come_times_out(self) -> None:
        self.make_link()
        _, transport = self.endpoint.accept()
        self.clock.advance(2.0)
        self.assertEqual(
            self.events, [("failed", "PING failed: timed out (Not received Redis response in 2.0 seconds)")]
        )
        self.assertTrue(transport.disconnecting)

    def test_a_connection_closed_during_the_hello(self) -> None:
        self.make_link()
        protocol, _ = self.endpoint.accept()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.events, [("failed", "PING failed: Connection was closed cleanly.")])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_a_failing_ready_drops_the_connection(self) -> None:
        self.make_link(ready_result=fail(RuntimeError("ERR not allowed")), ready_step="SUBSCRIBE")
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"+PONG\r\n")
        self.assertEqual(self.events, [("ready", protocol), ("failed", "SUBSCRIBE failed: ERR not allowed")])
        self.assertTrue(transport.disconnecting)


class RetryTests(LinkTestCase):
    def test_the_delay_doubles_up_to_the_maximum_and_attempts_never_stop(self) -> None:
        link = self.make_link()
        delays = []
        for _ in range(8):
            self.endpoint.refuse()
            delays.append(self.retry_delay())
            self.clock.advance(delays[-1])
        for delay, expected in zip(delays, [0.5, 1, 2, 4, 5, 5, 5, 5], strict=True):
            self.assertTrue(0.9 * expected <= delay <= 1.1 * expected, delays)
        self.assertEqual(len(self.endpoint.attempts), 9)
        self.assertEqual(link.failures, 8)

    def test_after_a_lost_connection_the_first_delay_is_the_shortest(self) -> None:
        link = self.make_link()
        for _ in range(4):
            self.endpoint.refuse()
            self.clock.advance(self.retry_delay())
        protocol, _ = self.endpoint.accept()
        protocol.dataReceived(b"+PONG\r\n")
        self.assertEqual(link.failures, 0)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.events[-1], ("lost", "Connection was closed cleanly."))
        self.assertIsNone(link.protocol)
        self.assertLessEqual(self.retry_delay(), 0.55)

    def test_disconnect_while_waiting_to_retry(self) -> None:
        link = self.make_link()
        self.endpoint.refuse()
        d = link.disconnect()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disconnect_during_the_hello_closes_the_connection(self) -> None:
        link = self.make_link()
        protocol, transport = self.endpoint.accept()
        d = link.disconnect()
        self.assertNoResult(d)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disconnect_when_up(self) -> None:
        link = self.make_link()
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"+PONG\r\n")
        d = link.disconnect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([kind for kind, _ in self.events], ["ready", "lost"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MoveTests(LinkTestCase):
    """``move_to``: the Sentinels announced a new master."""

    def test_a_connection_elsewhere_is_left_and_made_again_at_once(self) -> None:
        link = self.make_link()
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"+PONG\r\n")
        link.move_to(("10.0.0.6", 6379))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.retry_delay(), 0)
        self.clock.advance(0)
        self.assertEqual(len(self.endpoint.attempts), 2)

    def test_a_connection_there_already_stays(self) -> None:
        link = self.make_link()
        protocol, transport = self.endpoint.accept()
        protocol.dataReceived(b"+PONG\r\n")
        peer = transport.getPeer()
        link.move_to((peer.host, peer.port))
        self.assertFalse(transport.disconnecting)

    def test_a_wait_is_cut_short(self) -> None:
        link = self.make_link()
        for _ in range(4):
            self.endpoint.refuse()
            self.clock.advance(self.retry_delay())
        self.endpoint.refuse()
        link.move_to(("10.0.0.6", 6379))
        self.assertEqual(len(self.endpoint.attempts), 6)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_attempt_in_flight_is_made_again(self) -> None:
        link = self.make_link()
        link.move_to(("10.0.0.6", 6379))
        self.assertEqual(self.events, [])  # not a failure
        self.assertEqual(self.retry_delay(), 0)
        self.clock.advance(0)
        self.assertEqual(len(self.endpoint.attempts), 2)


class SentinelEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        address = RedisAddress.parse("redis+sentinel://s1,s2:26380,s3/mymaster/0")
        assert address.sentinel is not None
        self.moves: list[tuple[str | None, str]] = []
        self.endpoint = SentinelEndpoint(
            MemoryReactorClock(),
            address.sentinel,
            timeout=1.0,
            on_master=lambda old, new: self.moves.append((old, new)),
        )
        self.asked: list[tuple[str, int]] = []
        self.answers: dict[tuple[str, int], Any] = {}

        def ask(host: tuple[str, int]) -> Deferred[Any]:
            self.asked.append(host)
            answer = self.answers.get(host)
            return fail(answer) if isinstance(answer, Exception) else succeed(answer)

        self.endpoint._ask = ask  # type: ignore[method-assign]

    def test_the_first_sentinel_that_knows_the_master_answers_and_is_asked_first_next_time(self) -> None:
        self.answers = {
            ("s1", 26379): ConnectionRefusedError(),
            ("s2", 26380): None,
            ("s3", 26379): ("10.0.0.5", 6379),
        }
        self.assertEqual(self.successResultOf(self.endpoint.find_master()), ("10.0.0.5", 6379))
        self.assertEqual(self.asked, [("s1", 26379), ("s2", 26380), ("s3", 26379)])
        self.assertEqual(self.moves, [(None, "10.0.0.5:6379")])
        del self.asked[:]
        self.answers[("s3", 26379)] = ("10.0.0.6", 6379)
        self.successResultOf(self.endpoint.find_master())
        self.successResultOf(self.endpoint.find_master())
        self.assertEqual(self.asked, [("s3", 26379)] * 2)
        self.assertEqual(self.moves, [(None, "10.0.0.5:6379"), ("10.0.0.5:6379", "10.0.0.6:6379")])

    def test_the_watcher_reports_switches_of_this_master(self) -> None:
        switched: list[tuple[str, int]] = []
        watch = self.endpoint.watcher(initial_delay=0.5, max_delay=5, on_switch=switched.append)
        watch.on_message("+switch-master", "other 10.0.0.1 6379 10.0.0.9 6379")
        watch.on_message("+switch-master", "mymaster 10.0.0.5 6379 10.0.0.6 6380")
        watch.on_message("+switch-master", "mymaster garbage")
        self.assertEqual(switched, [("10.0.0.6", 6380)])
        self.assertEqual(self.moves, [(None, "10.0.0.6:6380")])
        self.assertEqual(self.endpoint.master, ("10.0.0.6", 6380))

    def test_when_none_knows_it_the_error_says_what_each_one_answered(self) -> None:
        self.answers = {("s1", 26379): ConnectionRefusedError(), ("s2", 26380): None, ("s3", 26379): None}
        failure = self.failureResultOf(self.endpoint.find_master(), SentinelError)
        self.assertEqual(
            failure.getErrorMessage(),
            "no Sentinel gave the address of master 'mymaster': s1:26379: Connection was refused by other "
            "side.; s2:26380 knows no master named 'mymaster'; s3:26379 knows no master named 'mymaster'",
        )
        self.assertEqual(self.moves, [])
