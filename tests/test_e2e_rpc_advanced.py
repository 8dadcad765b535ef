"""End-to-end over real TCP with autobahn-python: shared registrations, pattern-based registrations with the
spec's precedence, and call timeouts (to a slow client callee, to a slow app procedure, capped by the app)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions
from twisted.internet import defer, reactor

from sandstone import Limits, Sandstone
from tests.support import Client, ServerTestCase, wait_until

CANCELED = "wamp.error.canceled"


def make_app(limits: Limits | None = None) -> tuple[Sandstone, list[defer.Deferred[Any]]]:
    """An open router with one slow app procedure, ``com.app.slow``; returns the Deferreds it made."""
    app = Sandstone(anonymous=True, open_uris=True, limits=limits)
    running: list[defer.Deferred[Any]] = []

    @app.procedure("com.app.slow")
    def slow() -> defer.Deferred[Any]:
        running.append(defer.Deferred())
        return running[-1]

    return app, running


def within(seconds: float, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """``d``, failing with ``TimeoutError`` unless it fires within ``seconds`` (an answer, not a hang)."""
    return d.addTimeout(seconds, reactor)


class AdvancedRpcTestCase(ServerTestCase):
    def setUp(self) -> None:
        self.app, self.running = make_app()
        self.serve(self.app)

    async def callees(self, procedure: str, count: int, **options: Any) -> list[Client]:
        """``count`` clients registering ``procedure`` with ``options``, each answering with its index."""
        clients = []
        for index in range(count):
            client = await self.connect(("json", "msgpack", "cbor")[index % 3])
            await client.register(
                lambda *args, index=index, **kwargs: index, procedure, RegisterOptions(**options)
            )
            clients.append(client)
        return clients

    async def assert_call_error(self, client: Client, uri: str, error: str, **options: Any) -> None:
        with self.assertRaises(ApplicationError) as caught:
            await within(10, client.call(uri, options=CallOptions(**options)))
        self.assertEqual(caught.exception.error, error)


class SharedRegistrationTests(AdvancedRpcTestCase):
    async def test_roundrobin_first_last_over_three_callees(self) -> None:
        await self.callees("com.rr", 3, invoke="roundrobin")
        await self.callees("com.first", 3, invoke="first")
        await self.callees("com.last", 3, invoke="last")
        caller = await self.connect()
        self.assertEqual([await caller.call("com.rr") for _ in range(7)], [0, 1, 2, 0, 1, 2, 0])
        self.assertEqual([await caller.call("com.first") for _ in range(3)], [0, 0, 0])
        self.assertEqual([await caller.call("com.last") for _ in range(3)], [2, 2, 2])

    async def test_random_reaches_every_callee(self) -> None:
        await self.callees("com.random", 3, invoke="random")
        caller = await self.connect()
        served = await defer.gatherResults([caller.call("com.random") for _ in range(150)])
        counts = [served.count(index) for index in range(3)]
        self.assertTrue(all(count > 15 for count in counts), counts)

    async def test_a_callee_leaving_mid_rotation(self) -> None:
        callees = await self.callees("com.rr", 3, invoke="roundrobin")
        caller = await self.connect()
        self.assertEqual([await caller.call("com.rr") for _ in range(2)], [0, 1])
        await callees[1].leave()
        await wait_until(lambda: len(self.app.router.sessions) == 3)
        self.assertEqual([await caller.call("com.rr") for _ in range(4)], [2, 0, 2, 0])

    async def test_mismatching_policies_and_single_are_refused(self) -> None:
        await self.callees("com.rr", 1, invoke="roundrobin")
        await self.callees("com.single", 1)
        other = await self.connect("cbor")
        for procedure, options in (("com.rr", {"invoke": "random"}), ("com.rr", {}), ("com.single", {})):
            with self.assertRaises(ApplicationError) as caught:
                await other.register(lambda: None, procedure, RegisterOptions(**options))
            self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")


class PatternRegistrationTests(AdvancedRpcTestCase):
    async def test_precedence_and_the_procedure_called(self) -> None:
        seen: list[tuple[str, Any]] = []

        async def register(uri: str, match: str) -> None:
            client = await self.connect()

            def serve(*args: Any, details: Any) -> str:
                seen.append((uri, details.procedure))
                return uri

            await client.register(serve, uri, RegisterOptions(match=match, details_arg="details"))

        await register("com.items.special.get", "exact")
        await register("com.items.", "prefix")
        await register("com.items.special.", "prefix")
        await register("com..get", "wildcard")
        caller = await self.connect("msgpack")
        for uri, expected in [
            ("com.items.special.get", "com.items.special.get"),
            ("com.items.special.put", "com.items.special."),
            ("com.items.7.get", "com.items."),
            ("com.orders.get", "com..get"),
        ]:
            self.assertEqual(await caller.call(uri), expected, uri)
        self.assertEqual(
            seen,
            [
                ("com.items.special.get", "com.items.special.get"),  # autobahn's own for exact ones
                ("com.items.special.", "com.items.special.put"),
                ("com.items.", "com.items.7.get"),
                ("com..get", "com.orders.get"),
            ],
        )
        await self.assert_call_error(caller, "org.items.get.x", "wamp.error.no_such_procedure")


class CallTimeoutTests(AdvancedRpcTestCase):
    async def test_a_slow_client_callee_is_interrupted_and_the_caller_canceled(self) -> None:
        callee = await self.connect("msgpack")
        held: list[defer.Deferred[str]] = []

        def hang() -> defer.Deferred[str]:
            held.append(defer.Deferred())
            return held[-1]

        await callee.register(hang, "com.slow")
        caller = await self.connect()
        await self.assert_call_error(caller, "com.slow", CANCELED, timeout=200)
        await wait_until(lambda: held and held[0].called)  # INTERRUPT: autobahn cancelled the callee's work
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)
        # the callee and the caller carry on
        answer = caller.call("com.slow", options=CallOptions(timeout=60_000))
        await wait_until(lambda: len(held) == 2)
        held[1].callback("in time")
        self.assertEqual(await answer, "in time")

    async def test_a_slow_app_procedure_is_cancelled(self) -> None:
        caller = await self.connect("cbor")
        await self.assert_call_error(caller, "com.app.slow", CANCELED, timeout=200)
        [running] = self.running
        self.assertTrue(running.called)  # cancelled
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    async def test_max_call_timeout_caps_the_callers_timeout(self) -> None:
        app, running = make_app(Limits(max_call_timeout=0.2))
        self.serve(app)
        caller = await self.connect()
        await self.assert_call_error(caller, "com.app.slow", CANCELED, timeout=3_600_000)
        self.assertTrue(running[0].called)
        # without a timeout, the call is not limited: it waits for its answer
        answer = caller.call("com.app.slow")
        await wait_until(lambda: len(running) == 2)
        running[1].callback("answered")
        self.assertEqual(await answer, "answered")
