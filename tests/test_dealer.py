"""Tests for L{sandstone._dealer}: registrations and calls, to client callees and to app procedures."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone.testing import TestClient, TestSession

CALL = message.Call.MESSAGE_TYPE
REGISTER = message.Register.MESSAGE_TYPE
UNREGISTER = message.Unregister.MESSAGE_TYPE
YIELD = message.Yield.MESSAGE_TYPE
ERROR = message.Error.MESSAGE_TYPE
INVOCATION = message.Invocation.MESSAGE_TYPE


def received(session: TestSession, kind: type) -> list[Any]:
    """The messages of one type a test session received."""
    return [m for m in session.messages if isinstance(m, kind)]


def call_error(test: SynchronousTestCase, d: Deferred[Any]) -> ApplicationError:
    """The ApplicationError a call failed with."""
    return test.failureResultOf(d, ApplicationError).value  # type: ignore[return-value]


class ClientCalleeTestCase(SynchronousTestCase):
    """A caller and a callee session on one router; the callee answers by hand (raw messages)."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.client = TestClient(self.app)
        self.caller = self.client.connect()
        self.callee = self.client.connect()

    def register_raw(
        self, session: TestSession, procedure: str, options: dict[str, Any] | None = None
    ) -> Any:
        """Register without an automatic answer: the test plays the callee."""
        session.send_raw([REGISTER, 1000 + len(session.messages), options or {}, procedure])
        return session.messages[-1]

    def invocation(self) -> message.Invocation:
        [invocation] = received(self.callee, message.Invocation)
        return invocation


class RegisterTests(ClientCalleeTestCase):
    """Registering and unregistering procedures."""

    def test_register_is_answered_with_registered(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.assertIsInstance(registered, message.Registered)

    def test_registrations_get_distinct_ids(self) -> None:
        first = self.callee.register("app.add", lambda a, b: a + b)
        second = self.callee.register("app.sub", lambda a, b: a - b)
        self.assertNotEqual(first, second)

    def test_register_twice_fails_with_procedure_already_exists(self) -> None:
        self.callee.register("app.add", lambda a, b: a + b)
        with self.assertRaises(ApplicationError) as caught:
            self.caller.register("app.add", lambda a, b: a + b)
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")

    def test_register_over_an_app_procedure_fails_with_procedure_already_exists(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        with self.assertRaises(ApplicationError) as caught:
            self.callee.register("app.add", lambda a, b: a + b)
        self.assertEqual(caught.exception.error, "wamp.error.procedure_already_exists")

    def test_app_procedure_over_a_registered_uri_raises(self) -> None:
        self.callee.register("app.add", lambda a, b: a + b)
        with self.assertRaises(Exception) as caught:
            self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertIn("app.add", str(caught.exception))

    def test_pattern_registration_fails_with_invalid_argument(self) -> None:
        error = self.register_raw(self.callee, "app.", {"match": "prefix"})
        self.assertEqual(error.error, "wamp.error.invalid_argument")

    def test_register_of_an_invalid_uri_fails_with_invalid_uri(self) -> None:
        with self.assertRaises(ApplicationError) as caught:
            self.callee.register("app add", lambda: None)
        self.assertEqual(caught.exception.error, "wamp.error.invalid_uri")

    def test_unregister_is_answered_with_unregistered(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.callee.send_raw([UNREGISTER, 5, registered.registration])
        self.assertIsInstance(self.callee.messages[-1], message.Unregistered)

    def test_unregistered_procedure_is_no_longer_callable(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.callee.send_raw([UNREGISTER, 5, registered.registration])
        error = call_error(self, self.caller.call("app.add", 1, 2))
        self.assertEqual(error.error, "wamp.error.no_such_procedure")

    def test_unregistered_uri_can_be_registered_again(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.callee.send_raw([UNREGISTER, 5, registered.registration])
        self.caller.register("app.add", lambda a, b: a + b)
        self.assertEqual(self.successResultOf(self.callee.call("app.add", 1, 2)), 3)

    def test_unregister_of_an_unknown_id_fails_with_no_such_registration(self) -> None:
        self.callee.send_raw([UNREGISTER, 5, 123456])
        error = self.callee.messages[-1]
        self.assertEqual((error.request_type, error.error), (UNREGISTER, "wamp.error.no_such_registration"))

    def test_unregister_of_another_sessions_registration_fails(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.caller.send_raw([UNREGISTER, 5, registered.registration])
        self.assertEqual(self.caller.messages[-1].error, "wamp.error.no_such_registration")
        self.assertEqual(len(self.app.router.dealer), 1)


class ClientCallTests(ClientCalleeTestCase):
    """Calls routed to a client callee: INVOCATION, YIELD/ERROR, RESULT/ERROR."""

    def test_call_reaches_the_callee_and_returns_its_result(self) -> None:
        self.callee.register("app.add", lambda a, b: a + b)
        self.assertEqual(self.successResultOf(self.caller.call("app.add", 2, 3)), 5)

    def test_invocation_carries_args_kwargs_and_registration_id(self) -> None:
        registered = self.register_raw(self.callee, "app.add")
        self.caller.call("app.add", 2, 3, carry=True)
        invocation = self.invocation()
        self.assertEqual(
            (invocation.registration, invocation.args, invocation.kwargs),
            (registered.registration, [2, 3], {"carry": True}),
        )

    def test_result_carries_the_yielded_args_and_kwargs(self) -> None:
        self.register_raw(self.callee, "app.add")
        self.caller.send_raw([CALL, 7, {}, "app.add", [2, 3]])
        self.callee.send_raw([YIELD, self.invocation().request, {}, [5], {"exact": True}])
        result = self.caller.messages[-1]
        self.assertEqual((result.request, result.args, result.kwargs), (7, [5], {"exact": True}))

    def test_no_result_before_the_callee_yields(self) -> None:
        self.register_raw(self.callee, "app.add")
        d = self.caller.call("app.add", 2, 3)
        self.assertNoResult(d)

    def test_callee_error_reaches_the_caller_with_uri_and_args(self) -> None:
        self.register_raw(self.callee, "app.divide")
        d = self.caller.call("app.divide", 1, 0)
        self.callee.send_raw(
            [ERROR, INVOCATION, self.invocation().request, {}, "app.error.division_by_zero", ["no"], {"n": 1}]
        )
        error = call_error(self, d)
        self.assertEqual(
            (error.error, error.args, error.kwargs), ("app.error.division_by_zero", ("no",), {"n": 1})
        )

    def test_call_to_an_unknown_procedure_fails_with_no_such_procedure(self) -> None:
        error = call_error(self, self.caller.call("app.nothing"))
        self.assertEqual(error.error, "wamp.error.no_such_procedure")

    def test_call_to_an_invalid_uri_fails_with_invalid_uri(self) -> None:
        error = call_error(self, self.caller.call("app. nothing"))
        self.assertEqual(error.error, "wamp.error.invalid_uri")

    def test_concurrent_calls_with_equal_request_ids_get_their_own_results(self) -> None:
        other = self.client.connect()
        self.register_raw(self.callee, "app.echo")
        self.caller.send_raw([CALL, 1, {}, "app.echo", ["from caller"]])
        other.send_raw([CALL, 1, {}, "app.echo", ["from other"]])
        first, second = received(self.callee, message.Invocation)
        self.callee.send_raw([YIELD, second.request, {}, second.args])
        self.callee.send_raw([YIELD, first.request, {}, first.args])
        self.assertEqual(self.caller.messages[-1].args, ["from caller"])
        self.assertEqual(other.messages[-1].args, ["from other"])

    def test_yield_for_an_unknown_invocation_is_ignored(self) -> None:
        self.callee.send_raw([YIELD, 99, {}, ["stray"]])
        self.assertIsInstance(self.callee.messages[-1], message.Welcome)
        self.assertFalse(self.callee.transport_closed)

    def test_second_yield_for_an_invocation_is_ignored(self) -> None:
        self.register_raw(self.callee, "app.echo")
        self.caller.call("app.echo", 1)
        request = self.invocation().request
        self.callee.send_raw([YIELD, request, {}, [1]])
        self.callee.send_raw([YIELD, request, {}, [2]])
        self.assertEqual([r.args for r in received(self.caller, message.Result)], [[1]])

    def test_yield_after_the_caller_left_is_dropped(self) -> None:
        self.register_raw(self.callee, "app.echo")
        self.caller.call("app.echo", 1)
        self.caller.disconnect()
        self.callee.send_raw([YIELD, self.invocation().request, {}, [1]])
        self.assertFalse(self.callee.transport_closed)
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)


class ProgressiveResultsTests(ClientCalleeTestCase):
    """Progressive call results reach callers that asked for them."""

    def setUp(self) -> None:
        super().setUp()
        self.register_raw(self.callee, "app.count")

    def results(self) -> list[tuple[list[Any], bool]]:
        return [(r.args, bool(r.progress)) for r in received(self.caller, message.Result)]

    def test_invocation_tells_the_callee_the_caller_receives_progress(self) -> None:
        self.caller.send_raw([CALL, 1, {"receive_progress": True}, "app.count"])
        self.assertTrue(self.invocation().receive_progress)

    def test_progressive_results_then_final_result_reach_the_caller(self) -> None:
        self.caller.send_raw([CALL, 1, {"receive_progress": True}, "app.count"])
        request = self.invocation().request
        for n in (1, 2):
            self.callee.send_raw([YIELD, request, {"progress": True}, [n]])
        self.callee.send_raw([YIELD, request, {}, [3]])
        self.assertEqual(self.results(), [([1], True), ([2], True), ([3], False)])

    def test_progress_is_dropped_for_a_caller_that_did_not_ask(self) -> None:
        self.caller.send_raw([CALL, 1, {}, "app.count"])
        request = self.invocation().request
        self.callee.send_raw([YIELD, request, {"progress": True}, [1]])
        self.callee.send_raw([YIELD, request, {}, [3]])
        self.assertEqual(self.results(), [([3], False)])

    def test_error_after_progress_ends_the_call(self) -> None:
        self.caller.send_raw([CALL, 1, {"receive_progress": True}, "app.count"])
        request = self.invocation().request
        self.callee.send_raw([YIELD, request, {"progress": True}, [1]])
        self.callee.send_raw([ERROR, INVOCATION, request, {}, "app.error.tired"])
        self.assertEqual(self.caller.messages[-1].error, "app.error.tired")
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)


class CallerDisclosureTests(ClientCalleeTestCase):
    """disclose_me on a CALL tells the callee who calls."""

    def setUp(self) -> None:
        super().setUp()
        self.register_raw(self.callee, "app.whoami")

    def test_disclose_me_puts_the_caller_in_the_invocation(self) -> None:
        self.caller.send_raw([CALL, 1, {"disclose_me": True}, "app.whoami"])
        invocation = self.invocation()
        self.assertEqual(
            (invocation.caller, invocation.caller_authid, invocation.caller_authrole),
            (self.caller.id, self.caller.authid, "anonymous"),
        )

    def test_caller_is_not_disclosed_by_default(self) -> None:
        self.caller.send_raw([CALL, 1, {}, "app.whoami"])
        invocation = self.invocation()
        self.assertEqual(
            (invocation.caller, invocation.caller_authid, invocation.caller_authrole), (None, None, None)
        )


class CalleeLeavesTests(ClientCalleeTestCase):
    """A callee that leaves with calls in flight: the callers get wamp.error.canceled."""

    def setUp(self) -> None:
        super().setUp()
        self.register_raw(self.callee, "app.slow")
        self.d = self.caller.call("app.slow")

    def test_callee_disconnect_cancels_the_call_in_flight(self) -> None:
        self.callee.disconnect()
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")

    def test_callee_goodbye_cancels_the_call_in_flight(self) -> None:
        self.callee.leave()
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")

    def test_every_call_in_flight_is_canceled(self) -> None:
        other = self.client.connect().call("app.slow")
        self.callee.disconnect()
        self.assertEqual(call_error(self, other).error, "wamp.error.canceled")
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")

    def test_callee_disconnect_removes_its_registration(self) -> None:
        self.callee.disconnect()
        self.failureResultOf(self.d)
        error = call_error(self, self.caller.call("app.slow"))
        self.assertEqual(error.error, "wamp.error.no_such_procedure")

    def test_caller_leaving_does_not_cancel_anything_for_the_callee(self) -> None:
        self.caller.disconnect()
        self.assertEqual(received(self.callee, message.Interrupt), [])
        self.assertFalse(self.callee.transport_closed)


class AppProcedureTests(SynchronousTestCase):
    """Procedures the app declares with ``@app.procedure``."""

    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True)
        self.session = TestClient(self.app).connect()

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Any:
        return self.successResultOf(self.session.call(procedure, *args, **kwargs))

    def call_fails(self, procedure: str, *args: Any, **kwargs: Any) -> ApplicationError:
        return call_error(self, self.session.call(procedure, *args, **kwargs))

    def test_procedure_decorator_returns_the_function(self) -> None:
        def add(a: int, b: int) -> int:
            return a + b

        self.assertIs(self.app.procedure("app.add")(add), add)

    def test_sync_procedure(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertEqual(self.call("app.add", 2, 3), 5)

    def test_procedure_receives_kwargs(self) -> None:
        self.app.procedure("app.greet")(lambda name, punctuation="": f"hello {name}{punctuation}")
        self.assertEqual(self.call("app.greet", "ann", punctuation="!"), "hello ann!")

    def test_async_procedure(self) -> None:
        gate: Deferred[int] = Deferred()

        @self.app.procedure("app.wait")
        async def wait() -> int:
            return await gate + 1

        d = self.session.call("app.wait")
        self.assertNoResult(d)
        gate.callback(41)
        self.assertEqual(self.successResultOf(d), 42)

    def test_deferred_returning_procedure(self) -> None:
        pending: Deferred[str] = Deferred()
        self.app.procedure("app.later")(lambda: pending)
        d = self.session.call("app.later")
        self.assertNoResult(d)
        pending.callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_already_fired_deferred_returning_procedure(self) -> None:
        self.app.procedure("app.now")(lambda: succeed("now"))
        self.assertEqual(self.call("app.now"), "now")

    def test_procedure_returning_none_gives_an_empty_result(self) -> None:
        self.app.procedure("app.nothing")(lambda: None)
        self.session.call("app.nothing")
        result = self.session.messages[-1]
        self.assertEqual((result.args, result.kwargs), (None, None))

    def test_procedure_returning_a_list_gives_one_argument(self) -> None:
        self.app.procedure("app.list")(lambda: [1, 2])
        self.session.call("app.list")
        self.assertEqual(self.session.messages[-1].args, [[1, 2]])

    def test_call_result_return_spreads_args_and_kwargs(self) -> None:
        self.app.procedure("app.split")(lambda: CallResult(1, 2, total=3))
        self.session.call("app.split")
        result = self.session.messages[-1]
        self.assertEqual((result.args, result.kwargs), ([1, 2], {"total": 3}))

    def test_application_error_keeps_its_uri_args_and_kwargs(self) -> None:
        @self.app.procedure("app.refuse")
        def refuse() -> None:
            raise ApplicationError("app.error.refused", "not today", retry=False)

        error = self.call_fails("app.refuse")
        self.assertEqual(
            (error.error, error.args, error.kwargs), ("app.error.refused", ("not today",), {"retry": False})
        )

    def test_application_error_is_not_logged(self) -> None:
        @self.app.procedure("app.refuse")
        def refuse() -> None:
            raise ApplicationError("app.error.refused")

        self.call_fails("app.refuse")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_other_exception_becomes_runtime_error_with_its_message(self) -> None:
        @self.app.procedure("app.crash")
        def crash() -> None:
            raise ValueError("boom")

        error = self.call_fails("app.crash")
        self.assertEqual((error.error, error.args), ("wamp.error.runtime_error", ("ValueError: boom",)))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_async_exception_becomes_runtime_error(self) -> None:
        @self.app.procedure("app.crash")
        async def crash() -> None:
            raise KeyError("missing")

        self.assertEqual(self.call_fails("app.crash").error, "wamp.error.runtime_error")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_session_survives_a_failing_procedure(self) -> None:
        @self.app.procedure("app.crash")
        def crash() -> None:
            raise ValueError("boom")

        self.app.procedure("app.ok")(lambda: "ok")
        self.call_fails("app.crash")
        self.flushLoggedErrors(ValueError)
        self.assertEqual(self.call("app.ok"), "ok")

    def test_too_many_arguments_fail_with_invalid_argument(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertEqual(self.call_fails("app.add", 1, 2, 3).error, "wamp.error.invalid_argument")

    def test_missing_argument_fails_with_invalid_argument(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertEqual(self.call_fails("app.add", 1).error, "wamp.error.invalid_argument")

    def test_unexpected_keyword_fails_with_invalid_argument(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertEqual(self.call_fails("app.add", 1, 2, c=3).error, "wamp.error.invalid_argument")

    def test_invalid_argument_names_the_procedure_and_is_not_logged(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        error = self.call_fails("app.add", 1)
        self.assertIn("app.add", error.args[0])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_type_error_inside_the_procedure_is_a_runtime_error(self) -> None:
        self.app.procedure("app.add")(lambda a, b: a + b)
        self.assertEqual(self.call_fails("app.add", 1, "x").error, "wamp.error.runtime_error")
        self.flushLoggedErrors(TypeError)

    def test_caller_leaving_before_an_async_result_is_harmless(self) -> None:
        pending: Deferred[str] = Deferred()
        self.app.procedure("app.later")(lambda: pending)
        self.session.call("app.later")
        self.session.disconnect()
        received = len(self.session.messages)
        pending.callback("done")
        self.assertEqual(len(self.session.messages), received)

    def test_bound_method_procedure(self) -> None:
        class Counter:
            def __init__(self) -> None:
                self.value = 0

            def increment(self, by: int = 1) -> int:
                self.value += by
                return self.value

        counter = Counter()
        self.app.procedure("app.increment")(counter.increment)
        self.call("app.increment")
        self.assertEqual(self.call("app.increment", by=5), 6)


CANCELING_CALLEE = {"roles": {"callee": {"features": {"call_canceling": True}}, "caller": {}}}


class CancelTests(ClientCalleeTestCase):
    """CANCEL from a caller, with each mode, towards callees that can or cannot be interrupted."""

    def setUp(self) -> None:
        super().setUp()
        self.callee = self.client.connect(**CANCELING_CALLEE)
        self.register_raw(self.callee, "app.slow")
        self.d = self.caller.call("app.slow")

    def interrupts(self) -> list[message.Interrupt]:
        return received(self.callee, message.Interrupt)

    def test_welcome_announces_call_canceling(self) -> None:
        [welcome] = received(self.caller, message.Welcome)
        self.assertTrue(welcome.roles["dealer"].call_canceling)

    def test_skip_answers_the_caller_and_leaves_the_callee_alone(self) -> None:
        self.caller.cancel(self.d, "skip")
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")
        self.assertEqual(self.interrupts(), [])

    def test_a_yield_after_skip_is_dropped(self) -> None:
        self.caller.cancel(self.d, "skip")
        self.failureResultOf(self.d)
        self.callee.send_raw([YIELD, self.invocation().request, {}, ["late"]])
        self.assertEqual(received(self.caller, message.Result), [])
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    def test_killnowait_interrupts_the_callee_and_answers_the_caller_at_once(self) -> None:
        self.caller.cancel(self.d, "killnowait")
        [interrupt] = self.interrupts()
        self.assertEqual((interrupt.request, interrupt.mode), (self.invocation().request, "killnowait"))
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")

    def test_default_mode_is_killnowait(self) -> None:
        self.caller.cancel(self.d)
        self.assertEqual([i.mode for i in self.interrupts()], ["killnowait"])
        self.assertEqual(call_error(self, self.d).error, "wamp.error.canceled")

    def test_kill_waits_for_the_callees_error(self) -> None:
        self.caller.cancel(self.d, "kill")
        self.assertEqual([i.mode for i in self.interrupts()], ["kill"])
        self.assertNoResult(self.d)
        self.callee.send_raw(
            [ERROR, INVOCATION, self.invocation().request, {}, "wamp.error.canceled", ["stopped"]]
        )
        error = call_error(self, self.d)
        self.assertEqual((error.error, error.args), ("wamp.error.canceled", ("stopped",)))

    def test_a_callee_without_call_canceling_is_never_interrupted(self) -> None:
        plain = self.client.connect()
        self.register_raw(plain, "app.plain")
        d = self.caller.call("app.plain")
        self.caller.cancel(d, "kill")
        self.assertEqual(received(plain, message.Interrupt), [])
        self.assertEqual(call_error(self, d).error, "wamp.error.canceled")

    def test_cancel_of_an_answered_call_is_ignored(self) -> None:
        self.callee.send_raw([YIELD, self.invocation().request, {}, [1]])
        self.assertEqual(self.successResultOf(self.d), 1)
        self.caller.send_raw([message.Cancel.MESSAGE_TYPE, 1, {}])
        self.assertIsNone(self.caller.closed)
        self.assertEqual(self.interrupts(), [])

    def test_caller_leaving_interrupts_a_callee_that_can_be_interrupted(self) -> None:
        self.caller.disconnect()
        self.assertEqual([i.mode for i in self.interrupts()], ["killnowait"])
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)

    def test_cancel_of_an_app_procedure_cancels_its_deferred(self) -> None:
        running: Deferred[int] = Deferred()
        self.app.procedure("app.wait")(lambda: running)
        d = self.caller.call("app.wait")
        self.caller.cancel(d)
        self.assertEqual(call_error(self, d).error, "wamp.error.canceled")
        self.assertTrue(running.called)  # cancelled: the function's own result will be ignored
        self.assertEqual(self.app.router.dealer.calls_in_flight, 1)  # setUp's call to app.slow only
