"""End-to-end across nodes sharing a real redis-server, with autobahn-python clients over real TCP: shared
registrations over the callees of every node (per policy, a callee leaving mid-rotation, a dead node, a
SIGKILLed twistd node), pattern registrations with the spec's precedence, and call timeouts across nodes."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions
from twisted.internet import defer, reactor

from sandstone import Sandstone
from sandstone._envelope import decode_entry
from tests.cluster_support import ClusterTestCase, Node
from tests.support import Client, sleep, wait_until
from tests.test_e2e_cluster_twistd import CHANNELS, TwistdClusterTestCase


def open_router() -> Sandstone:
    return Sandstone(anonymous=True, open_uris=True)


def within(seconds: float, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """``d``, failing with ``TimeoutError`` unless it fires within ``seconds`` (an answer, not a hang)."""
    return d.addTimeout(seconds, reactor)


class SharedClusterTestCase(ClusterTestCase):
    async def callee(self, node: Node, procedure: str, answer: Any, **options: Any) -> Client:
        """A client of ``node`` registering ``procedure`` (with ``options``), answering ``answer``."""
        client = await self.connect_to(node, "msgpack")
        await client.register(lambda *args, **kwargs: answer, procedure, RegisterOptions(**options))
        return client

    def callees_seen(self, node: Node, procedure: str, match: str = "exact") -> int:
        """How many callees of the registration ``node`` routes calls to (its view of the cluster)."""
        registration = node.app.router.dealer.registration(procedure, match)
        return 0 if registration is None else len(registration.callees)

    async def calls(self, client: Client, procedure: str, count: int) -> list[Any]:
        return [await within(10, client.call(procedure)) for _ in range(count)]


class SharedRegistrationTests(SharedClusterTestCase):
    async def test_roundrobin_over_the_callees_of_both_nodes(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        await self.callee(a, "com.rr", 0, invoke="roundrobin")
        await self.callee(b, "com.rr", 1, invoke="roundrobin")
        await self.callee(a, "com.rr", 2, invoke="roundrobin")
        on_a, on_b = await self.connect_to(a), await self.connect_to(b, "cbor")
        await wait_until(lambda: self.callees_seen(a, "com.rr") == 3 and self.callees_seen(b, "com.rr") == 3)
        # each node rotates over every callee of the cluster, in the order they registered
        self.assertEqual(await self.calls(on_a, "com.rr", 6), [0, 1, 2, 0, 1, 2])
        self.assertEqual(await self.calls(on_b, "com.rr", 4), [0, 1, 2, 0])
        entry = decode_entry(self.redis_client().hget(a.bus.channels.procedures, "com.rr"))
        self.assertEqual(entry.invoke, "roundrobin")
        self.assertEqual([node for node, _ in entry.members], [a.bus.node_id, b.bus.node_id, a.bus.node_id])
        for node in (a, b):
            self.assertEqual(node.bus.remote_calls_in_flight, 0)
            self.assertEqual(node.app.router.dealer.calls_in_flight, 0)

    async def test_a_callee_leaving_mid_rotation(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        await self.callee(a, "com.rr", 0, invoke="roundrobin")
        leaving = await self.callee(b, "com.rr", 1, invoke="roundrobin")
        await self.callee(a, "com.rr", 2, invoke="roundrobin")
        caller = await self.connect_to(a)
        await wait_until(lambda: self.callees_seen(a, "com.rr") == 3)
        self.assertEqual(await self.calls(caller, "com.rr", 2), [0, 1])
        await leaving.leave()
        await wait_until(lambda: self.callees_seen(a, "com.rr") == 2)
        self.assertEqual(await self.calls(caller, "com.rr", 4), [2, 0, 2, 0])

    async def test_first_and_last_across_nodes(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        first = await self.callee(b, "com.first", "B1", invoke="first")
        await self.callee(a, "com.first", "A2", invoke="first")
        await self.callee(a, "com.last", "A1", invoke="last")
        await self.callee(b, "com.last", "B2", invoke="last")
        caller = await self.connect_to(a, "cbor")
        await wait_until(
            lambda: self.callees_seen(a, "com.first") == 2 and self.callees_seen(a, "com.last") == 2
        )
        self.assertEqual(await self.calls(caller, "com.first", 3), ["B1"] * 3)
        self.assertEqual(await self.calls(caller, "com.last", 3), ["B2"] * 3)
        await first.leave()  # the hot standby takes over
        await wait_until(lambda: self.callees_seen(a, "com.first") == 1)
        self.assertEqual(await self.calls(caller, "com.first", 2), ["A2"] * 2)

    async def test_random_across_nodes(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        for node, answer in ((a, 0), (b, 1), (b, 2)):
            await self.callee(node, "com.random", answer, invoke="random")
        caller = await self.connect_to(a)
        await wait_until(lambda: self.callees_seen(a, "com.random") == 3)
        served = await within(20, defer.gatherResults([caller.call("com.random") for _ in range(150)]))
        counts = [served.count(answer) for answer in range(3)]
        self.assertTrue(all(count > 15 for count in counts), counts)

    async def test_a_mismatching_policy_on_another_node_is_refused(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        await self.callee(a, "com.rr", "A", invoke="roundrobin")
        await self.callee(a, "com.single", "A")
        other = await self.connect_to(b, "cbor")
        for procedure, options in (("com.rr", {"invoke": "first"}), ("com.rr", {}), ("com.single", {})):
            with self.assertRaises(ApplicationError) as caught:
                await other.register(lambda: "B", procedure, RegisterOptions(**options))
            self.assertEqual(
                caught.exception.error, "wamp.error.procedure_already_exists", (procedure, options)
            )
        self.assertEqual(await other.call("com.rr"), "A")
        self.assertEqual(await other.call("com.single"), "A")

    async def test_a_dead_nodes_callees_leave_the_rotation(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        await self.callee(a, "com.rr", 0, invoke="roundrobin")
        await self.callee(b, "com.rr", 1, invoke="roundrobin")
        await self.callee(a, "com.rr", 2, invoke="roundrobin")
        caller = await self.connect_to(a)
        await wait_until(lambda: self.callees_seen(a, "com.rr") == 3)
        self.assertEqual(await self.calls(caller, "com.rr", 3), [0, 1, 2])
        await self.kill_bus(b)
        # within the heartbeat TTL (1 s here) and a beat, A purges B's callee and forgets it
        await wait_until(lambda: self.callees_seen(a, "com.rr") == 2, timeout=10)
        self.assertEqual(await self.calls(caller, "com.rr", 4), [0, 2, 0, 2])
        entry = decode_entry(self.redis_client().hget(a.bus.channels.procedures, "com.rr"))
        self.assertEqual({node for node, _ in entry.members}, {a.bus.node_id})


class PatternRegistrationTests(SharedClusterTestCase):
    async def test_precedence_over_the_registrations_of_every_node(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        seen: list[tuple[str, Any]] = []

        async def register(node: Node, uri: str, match: str) -> None:
            client = await self.connect_to(node)

            def serve(*args: Any, details: Any) -> str:
                seen.append((uri, details.procedure))
                return f"{uri} on {node.name}"

            await client.register(serve, uri, RegisterOptions(match=match, details_arg="details"))

        registrations = [
            (a, "com.items.special.get", "exact"),
            (b, "com.items.", "prefix"),
            (a, "com.items.special.", "prefix"),
            (b, "com..get", "wildcard"),
        ]
        for node, uri, match in registrations:
            await register(node, uri, match)
        await wait_until(
            lambda: all(self.callees_seen(n, uri, match) for n in (a, b) for _, uri, match in registrations)
        )
        expected = [
            ("com.items.special.get", "com.items.special.get on A"),
            ("com.items.special.put", "com.items.special. on A"),
            ("com.items.7.get", "com.items. on B"),
            ("com.orders.get", "com..get on B"),
        ]
        for node in (a, b):
            caller = await self.connect_to(node, "cbor")
            for uri, answer in expected:
                self.assertEqual(await within(10, caller.call(uri)), answer, (node.name, uri))
            with self.assertRaises(ApplicationError) as caught:
                await within(10, caller.call("org.orders.get"))
            self.assertEqual(caught.exception.error, "wamp.error.no_such_procedure")
        # the callee gets the URI called for its pattern registrations, from either node
        self.assertEqual(
            seen,
            [
                ("com.items.special.get", "com.items.special.get"),  # autobahn's own for exact ones
                ("com.items.special.", "com.items.special.put"),
                ("com.items.", "com.items.7.get"),
                ("com..get", "com.orders.get"),
            ]
            * 2,
        )

    async def test_a_pattern_registered_a_moment_ago_on_another_node_is_found(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        caller = await self.connect_to(a)
        for n in range(5):  # no waiting: a call this node's view misses waits for the view to catch up
            await self.callee(b, f"com.fresh{n}.", n, match="prefix")
            self.assertEqual(await within(10, caller.call(f"com.fresh{n}.x")), n)


class CallTimeoutTests(SharedClusterTestCase):
    async def test_a_call_to_a_slow_callee_on_another_node_times_out(self) -> None:
        a, b = await self.start_cluster(open_router, 2)
        callee = await self.connect_to(b, "msgpack")
        held: list[defer.Deferred[str]] = []

        def hang() -> defer.Deferred[str]:
            held.append(defer.Deferred())
            return held[-1]

        await callee.register(hang, "com.slow")
        caller = await self.connect_to(a)
        with self.assertRaises(ApplicationError) as caught:
            await within(10, caller.call("com.slow", options=CallOptions(timeout=300)))
        self.assertEqual(caught.exception.error, "wamp.error.canceled")
        await wait_until(lambda: held and held[0].called)  # the INTERRUPT crossed to B's callee
        await wait_until(lambda: b.app.router.dealer.calls_in_flight == 0)
        self.assertEqual(a.bus.remote_calls_in_flight, 0)
        self.assertEqual(a.app.router.dealer.calls_in_flight, 0)


class KilledNodeTests(TwistdClusterTestCase):
    async def test_a_sigkilled_nodes_callee_leaves_the_rotation(self) -> None:
        (first, url1, _), (second, url2, _) = await self.start_nodes()
        for url, answer in ((url1, 0), (url2, 1), (url1, 2)):  # registered in this order, cluster-wide
            callee = await self.connect(url=url)
            await callee.register(
                lambda answer=answer: answer, "com.rr", RegisterOptions(invoke="roundrobin")
            )
        caller = await self.connect("cbor", url=url1)
        # node 1 learned the whole rotation from the answer to its last claim
        self.assertEqual([await within(10, caller.call("com.rr")) for _ in range(6)], [0, 1, 2, 0, 1, 2])

        await self.kill(second)
        # node 1 purges node 2's callee within the heartbeat TTL (6 s) and a beat (2 s)
        members = lambda: decode_entry(self.redis.hget(CHANNELS.procedures, "com.rr")).members  # noqa: E731
        await wait_until(lambda: len(members()) == 2, timeout=20)
        served = await self.served_once_settled(caller)
        self.assertIn(served[:2], ([0, 2], [2, 0]))
        self.assertEqual(served, served[:2] * 3)  # an exact alternation of the two callees left
        for process in (first,):
            self.assertNotIn("Traceback", process.output)
        await self.terminate(first)

    async def served_once_settled(self, caller: Client) -> list[Any]:
        """Six answers in a row, once node 1's view no longer sends calls to the dead node (a call sent
        there meanwhile fails at once: nobody listens on its channel)."""
        for _ in range(100):
            try:
                return [await within(10, caller.call("com.rr")) for _ in range(6)]
            except ApplicationError as error:
                self.assertEqual(error.error, "wamp.error.canceled")
                await sleep(0.1)
        self.fail("calls kept going to the killed node")
