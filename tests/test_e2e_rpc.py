"""End-to-end RPC over real TCP: client-to-client calls and calls to the app's procedures."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult, RegisterOptions
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from sandstone import Sandstone
from tests.support import DisclosingClient, ServerTestCase, wait_until

RUNTIME_ERROR = "wamp.error.runtime_error"


def make_app() -> Sandstone:
    app = Sandstone(anonymous=True)

    @app.procedure("com.app.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.procedure("com.app.greet")
    async def greet(name: str, *, punctuation: str = "!") -> str:
        await deferLater(reactor, 0.001, lambda: None)
        return f"Hello, {name}{punctuation}"

    @app.procedure("com.app.later")
    def later(value: Any) -> defer.Deferred[Any]:
        return deferLater(reactor, 0.001, lambda: {"value": value})

    @app.procedure("com.app.spread")
    def spread() -> CallResult:
        return CallResult(1, "two", three=3)

    @app.procedure("com.app.nothing")
    def nothing() -> None:
        return None

    @app.procedure("com.app.fail")
    def fail(value: int) -> None:
        raise ValueError(f"bad value {value}")

    @app.procedure("com.app.fail_later")
    async def fail_later() -> None:
        await deferLater(reactor, 0.001, lambda: None)
        raise KeyError("missing")

    @app.procedure("com.app.not_found")
    def not_found(item: str) -> None:
        raise ApplicationError("com.app.error.not_found", item, 7, reason="gone")

    @app.procedure("com.app.not_found_later")
    def not_found_later() -> defer.Deferred[None]:
        return defer.fail(ApplicationError("com.app.error.not_found", "later"))

    return app


def held_procedure() -> tuple[list[defer.Deferred[str]], Any]:
    """A procedure whose calls wait on Deferreds the test fires: (those Deferreds, the procedure)."""
    pending: list[defer.Deferred[str]] = []

    def held() -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        pending.append(d)
        return d

    return pending, held


class RpcTestCase(ServerTestCase):
    def setUp(self) -> None:
        self.serve(make_app())

    async def assert_call_error(
        self,
        client: Any,
        uri: str,
        *args: Any,
        error: str,
        error_args: tuple[Any, ...] | None = None,
        **kw: Any,
    ) -> ApplicationError:
        with self.assertRaises(ApplicationError) as caught:
            await client.call(uri, *args, **kw)
        self.assertEqual(caught.exception.error, error)
        if error_args is not None:
            self.assertEqual(caught.exception.args, error_args)
        return caught.exception


class AppProcedureTests(RpcTestCase):
    async def test_sync_procedure(self) -> None:
        for serializer in ("json", "msgpack", "cbor.batched"):
            client = await self.connect(serializer)
            self.assertEqual(await client.call("com.app.add", 2, 3), 5)
            self.assertEqual(await client.call("com.app.add", a=2, b=40), 42)
            self.assertEqual(await client.call("com.app.add", "a", b="b"), "ab")

    async def test_async_def_procedure(self) -> None:
        client = await self.connect()
        self.assertEqual(await client.call("com.app.greet", "Ada"), "Hello, Ada!")
        self.assertEqual(await client.call("com.app.greet", "Ada", punctuation="?"), "Hello, Ada?")

    async def test_deferred_returning_procedure(self) -> None:
        client = await self.connect("msgpack")
        self.assertEqual(await client.call("com.app.later", [1, 2]), {"value": [1, 2]})

    async def test_call_result_and_none(self) -> None:
        client = await self.connect("cbor")
        result = await client.call("com.app.spread")
        self.assertIsInstance(result, CallResult)
        self.assertEqual(list(result.results), [1, "two"])
        self.assertEqual(result.kwresults, {"three": 3})
        self.assertIsNone(await client.call("com.app.nothing"))

    async def test_many_concurrent_calls(self) -> None:
        client = await self.connect()
        calls = [client.call("com.app.later", n) for n in range(100)]
        calls += [client.call("com.app.add", n, n) for n in range(100)]
        results = await defer.gatherResults(calls)
        self.assertEqual(results, [{"value": n} for n in range(100)] + [2 * n for n in range(100)])

    async def test_exception_becomes_runtime_error_with_its_text(self) -> None:
        client = await self.connect()
        await self.assert_call_error(
            client, "com.app.fail", 42, error=RUNTIME_ERROR, error_args=("ValueError: bad value 42",)
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        await self.assert_call_error(
            client, "com.app.fail_later", error=RUNTIME_ERROR, error_args=("KeyError: 'missing'",)
        )
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        # the session is still usable
        self.assertEqual(await client.call("com.app.add", 1, 1), 2)

    async def test_application_error_keeps_its_uri_and_arguments(self) -> None:
        client = await self.connect("msgpack")
        error = await self.assert_call_error(
            client, "com.app.not_found", "spoon", error="com.app.error.not_found", error_args=("spoon", 7)
        )
        self.assertEqual(error.kwargs, {"reason": "gone"})
        await self.assert_call_error(
            client, "com.app.not_found_later", error="com.app.error.not_found", error_args=("later",)
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_wrong_arguments(self) -> None:
        client = await self.connect()
        for args, kwargs in [((1,), {}), ((1, 2, 3), {}), ((1, 2), {"c": 3}), ((), {"a": 1})]:
            error = await self.assert_call_error(
                client, "com.app.add", *args, error="wamp.error.invalid_argument", **kwargs
            )
            self.assertIn("com.app.add", error.args[0])
        await self.assert_call_error(client, "com.app.greet", error="wamp.error.invalid_argument")
        await self.assert_call_error(
            client, "com.app.greet", "x", punctuation=".", extra=1, error="wamp.error.invalid_argument"
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_no_such_procedure(self) -> None:
        client = await self.connect()
        error = await self.assert_call_error(client, "com.app.missing", error="wamp.error.no_such_procedure")
        self.assertIn("com.app.missing", error.args[0])

    async def test_registering_an_app_procedure_again_fails(self) -> None:
        client = await self.connect()
        with self.assertRaises(ApplicationError) as caught:
            await client.register(lambda: None, "com.app.add")
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
        self.assertEqual(await client.call("com.app.add", 1, 2), 3)


class ClientProcedureTests(RpcTestCase):
    async def test_register_and_call(self) -> None:
        callee, caller = await self.connect("cbor"), await self.connect("json")
        await callee.register(lambda a, b, **kw: {"sum": a + b, "kw": kw}, "com.example.sum")
        self.assertEqual(await caller.call("com.example.sum", 1, 2, scale=3), {"sum": 3, "kw": {"scale": 3}})

    async def test_async_callee_and_concurrent_calls_out_of_order(self) -> None:
        callee, caller = await self.connect("msgpack"), await self.connect("json.batched")

        async def slow_square(n: int) -> int:
            await deferLater(reactor, (100 - n) * 0.0002, lambda: None)  # later calls finish first
            return n * n

        await callee.register(slow_square, "com.example.square")
        results = await defer.gatherResults([caller.call("com.example.square", n) for n in range(100)])
        self.assertEqual(results, [n * n for n in range(100)])
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    async def test_callee_error_reaches_the_caller(self) -> None:
        callee, caller = await self.connect("json"), await self.connect("cbor")

        def oops(item: str) -> None:
            raise ApplicationError("com.example.error.oops", item, 2, detail="bad")

        await callee.register(oops, "com.example.oops")
        error = await self.assert_call_error(
            caller, "com.example.oops", "cup", error="com.example.error.oops", error_args=("cup", 2)
        )
        self.assertEqual(error.kwargs, {"detail": "bad"})

    async def test_callee_exception_reaches_the_caller_as_runtime_error(self) -> None:
        callee, caller = await self.connect("json"), await self.connect("json")

        def broken() -> None:
            raise ZeroDivisionError("boom")

        await callee.register(broken, "com.example.broken")
        error = await self.assert_call_error(caller, "com.example.broken", error=RUNTIME_ERROR)
        self.assertIn("boom", str(error.args))
        self.flushLoggedErrors(ZeroDivisionError)

    async def test_progressive_results(self) -> None:
        callee, caller = await self.connect("msgpack"), await self.connect("cbor")

        async def count_to(n: int, details: Any = None) -> str:
            for i in range(1, n + 1):
                if details.progress is not None:
                    details.progress(i, of=n)
                await deferLater(reactor, 0, lambda: None)
            return "done"

        await callee.register(count_to, "com.example.count", options=RegisterOptions(details_arg="details"))
        progress: list[Any] = []

        def on_progress(*args: Any, **kwargs: Any) -> None:
            progress.append((args, kwargs))

        result = await caller.call("com.example.count", 3, options=CallOptions(on_progress=on_progress))
        self.assertEqual(result, "done")
        self.assertEqual(progress, [((i,), {"of": 3}) for i in (1, 2, 3)])
        # a caller that did not ask for progress gets the final result only
        self.assertEqual(await caller.call("com.example.count", 2), "done")
        self.assertEqual(len(progress), 3)

    async def test_caller_disclosure(self) -> None:
        callee = await self.connect("json")
        seen: list[Any] = []

        def who(details: Any = None) -> str:
            seen.append((details.caller, details.caller_authid, details.caller_authrole))
            return "ok"

        await callee.register(who, "com.example.who", options=RegisterOptions(details_arg="details"))
        plain = await self.connect("cbor")
        disclosing = await self.connect("msgpack", client_class=DisclosingClient)
        self.assertEqual(await plain.call("com.example.who"), "ok")
        self.assertEqual(await disclosing.call("com.example.who"), "ok")
        self.assertEqual(seen, [(None, None, None), (disclosing.session_id, disclosing.authid, "anonymous")])

    async def test_procedure_already_exists(self) -> None:
        first, second = await self.connect(), await self.connect("cbor")
        await first.register(lambda: "first", "com.example.only")
        with self.assertRaises(ApplicationError) as caught:
            await second.register(lambda: "second", "com.example.only")
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")
        self.assertEqual(await second.call("com.example.only"), "first")

    async def test_unregister(self) -> None:
        callee, caller = await self.connect(), await self.connect()
        registration = await callee.register(lambda: 1, "com.example.temp")
        self.assertEqual(await caller.call("com.example.temp"), 1)
        await registration.unregister()
        await self.assert_call_error(caller, "com.example.temp", error="wamp.error.no_such_procedure")
        # the URI is free again
        await caller.register(lambda: 2, "com.example.temp")
        self.assertEqual(await callee.call("com.example.temp"), 2)

    async def test_callee_dropping_its_connection_fails_the_call_in_flight(self) -> None:
        callee, caller = await self.connect("msgpack"), await self.connect("json")
        invoked: list[Any] = []

        def never_answers(n: int) -> defer.Deferred[None]:
            invoked.append(n)
            return defer.Deferred()

        await callee.register(never_answers, "com.example.hang")
        calls = [caller.call("com.example.hang", n) for n in range(3)]
        await wait_until(lambda: len(invoked) == 3)
        self.assertEqual(self.app.router.dealer.calls_in_flight, 3)
        await self.drop(callee)
        for call in calls:
            with self.assertRaises(ApplicationError) as caught:
                await call
            self.assertEqual(caught.exception.error, "wamp.error.canceled")
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)
        await self.assert_call_error(caller, "com.example.hang", error="wamp.error.no_such_procedure")
        # the URI can be registered again by another session
        await caller.register(lambda: "back", "com.example.hang")
        self.assertEqual(await caller.call("com.example.hang"), "back")

    async def test_caller_dropping_its_connection_leaves_the_callee_working(self) -> None:
        callee, caller, other = await self.connect(), await self.connect(), await self.connect()
        pending, held = held_procedure()
        await callee.register(held, "com.example.held")
        caller.call("com.example.held").addErrback(lambda _: None)
        await wait_until(lambda: pending)
        await self.drop(caller)
        await wait_until(lambda: len(self.app.router.sessions) == 2)
        pending[0].callback("too late")  # the answer to a gone caller is dropped
        answer = other.call("com.example.held")
        await wait_until(lambda: len(pending) == 2)
        pending[1].callback("in time")
        self.assertEqual(await answer, "in time")
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)


class CancelTests(RpcTestCase):
    async def test_cancelling_a_call_interrupts_the_callee_and_keeps_the_session(self) -> None:
        callee, caller = await self.connect(), await self.connect()
        pending, held = held_procedure()
        await callee.register(held, "com.example.held")
        call = caller.call("com.example.held")
        call.addErrback(lambda failure: failure.trap(defer.CancelledError, ApplicationError))
        await wait_until(lambda: pending)
        call.cancel()  # autobahn sends CANCEL; the router INTERRUPTs the callee (killnowait)
        await wait_until(lambda: pending[0].called)
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)
        self.assertEqual(await caller.call("com.app.add", 1, 2), 3)
        self.assertEqual(len(self.app.router.sessions), 2)
