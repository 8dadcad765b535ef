"""Tests for L{sandstone._dealer}: registrations and calls, to client callees and to app procedures."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Limits, Sandstone
from sandstone._call import Call
from sandstone._dealer import Dealer
from sandstone._registrations import Registration
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

    def test_pattern_registrations_are_registered(self) -> None:
        prefix = self.register_raw(self.callee, "app.", {"match": "prefix"})
        wildcard = self.register_raw(self.callee, "app..add", {"match": "wildcard"})
        self.assertIsInstance(prefix, message.Registered)
        self.assertIsInstance(wildcard, message.Registered)
        self.assertNotEqual(prefix.registration, wildcard.registration)

    def test_unknown_match_or_invoke_policy_is_a_protocol_violation(self) -> None:
        for options in ({"match": "regex"}, {"invoke": "all"}, {"invoke": 1}):
            session = self.client.connect()
            session.send_raw([REGISTER, 1, options, "app.x"])
            assert session.closed is not None
            self.assertEqual(session.closed.reason, "wamp.error.protocol_violation", options)
        self.assertIsNone(self.app.router.dealer.registration("app.x"))

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


class SharedRegistrationTests(ClientCalleeTestCase):
    """Several callees share a procedure registered with the same invocation policy."""

    def callees(self, invoke: str, count: int = 3, uri: str = "app.work") -> list[TestSession]:
        """``count`` sessions registering ``uri`` with ``invoke``, each answering with its index."""
        sessions = []
        for index in range(count):
            session = self.client.connect()
            session.register(uri, lambda index=index: index, invoke=invoke)
            sessions.append(session)
        return sessions

    def served(self, count: int, uri: str = "app.work") -> list[int]:
        return [self.successResultOf(self.caller.call(uri)) for _ in range(count)]

    def test_every_callee_gets_the_same_registration_id(self) -> None:
        sessions = self.callees("roundrobin")
        ids = {received(s, message.Registered)[0].registration for s in sessions}
        self.assertEqual(len(ids), 1)
        self.assertEqual(len(self.app.router.dealer), 1)

    def test_roundrobin_in_registration_order(self) -> None:
        self.callees("roundrobin")
        self.assertEqual(self.served(7), [0, 1, 2, 0, 1, 2, 0])

    def test_roundrobin_goes_on_when_a_callee_leaves_mid_rotation(self) -> None:
        sessions = self.callees("roundrobin")
        self.assertEqual(self.served(2), [0, 1])
        sessions[1].disconnect()
        self.assertEqual(self.served(4), [2, 0, 2, 0])

    def test_first_and_last_are_hot_standby(self) -> None:
        first = self.callees("first", uri="app.first")
        last = self.callees("last", uri="app.last")
        self.assertEqual(self.served(3, "app.first"), [0, 0, 0])
        self.assertEqual(self.served(3, "app.last"), [2, 2, 2])
        first[0].disconnect()
        last[2].leave()
        self.assertEqual(self.served(2, "app.first"), [1, 1])
        self.assertEqual(self.served(2, "app.last"), [1, 1])

    def test_random_spreads_the_calls(self) -> None:
        self.callees("random")
        counts = [self.served(300).count(index) for index in range(3)]
        self.assertTrue(all(count > 40 for count in counts), counts)

    def test_single_refuses_a_second_callee(self) -> None:
        self.callees("single", count=1)
        session = self.client.connect()
        session.send_raw([REGISTER, 1, {"invoke": "single"}, "app.work"])
        self.assertEqual(session.messages[-1].error, "wamp.error.procedure_already_exists")

    def test_another_policy_is_refused(self) -> None:
        self.callees("roundrobin", count=1)
        for invoke in ("single", "random", "first", "last"):
            session = self.client.connect()
            options = {} if invoke == "single" else {"invoke": invoke}
            session.send_raw([REGISTER, 1, options, "app.work"])
            self.assertEqual(session.messages[-1].error, "wamp.error.procedure_already_exists", invoke)

    def test_a_session_shares_a_registration_once(self) -> None:
        [session] = self.callees("roundrobin", count=1)
        session.send_raw([REGISTER, 2, {"invoke": "roundrobin"}, "app.work"])
        self.assertEqual(session.messages[-1].error, "wamp.error.procedure_already_exists")

    def test_the_policy_is_free_again_once_every_callee_left(self) -> None:
        sessions = self.callees("roundrobin", count=2)
        for session in sessions:
            session.disconnect()
        self.assertIsNone(self.app.router.dealer.registration("app.work"))
        self.callees("last", count=2)
        self.assertEqual(self.served(2), [1, 1])

    def test_unregister_leaves_the_other_callees(self) -> None:
        sessions = self.callees("roundrobin")
        registration = received(sessions[0], message.Registered)[0].registration
        sessions[0].send_raw([UNREGISTER, 9, registration])
        self.assertIsInstance(sessions[0].messages[-1], message.Unregistered)
        self.assertEqual(self.served(3), [1, 2, 1])


class PatternRegistrationTests(ClientCalleeTestCase):
    """Prefix and wildcard registrations, with the spec's precedence."""

    def register_as(self, uri: str, match: str, answer: str) -> TestSession:
        session = self.client.connect()
        session.register(uri, lambda *args, **kwargs: answer, match=match)
        return session

    def test_exact_then_longest_prefix_then_wildcard(self) -> None:
        self.register_as("a1.b2.c3.d4.e55", "exact", "1")
        self.register_as("a1.b2.c3", "prefix", "2")
        self.register_as("a1.b2.c3.d4", "prefix", "3")
        self.register_as("a1.b2..d4.e5", "wildcard", "4")
        self.register_as("a1.b2.c33..e5", "wildcard", "5")
        self.register_as("a1.b2..d4.e5..g7", "wildcard", "6")
        self.register_as("a1.b2..d4..f6.g7", "wildcard", "7")
        for uri, expected in [
            ("a1.b2.c3.d4.e55", "1"),
            ("a1.b2.c3.d98.e74", "2"),
            ("a1.b2.c3.d4.e325", "3"),
            ("a1.b2.c55.d4.e5", "4"),
            ("a1.b2.c33.d4.e5", "2"),  # the spec's example says 5, but its prefix rule says 2
            ("a1.b2.c88.d4.e5.f6.g7", "6"),
        ]:
            self.assertEqual(self.successResultOf(self.caller.call(uri)), expected, uri)
        error = call_error(self, self.caller.call("a2.b2.c2.d2.e2"))
        self.assertEqual(error.error, "wamp.error.no_such_procedure")

    def test_the_invocation_carries_the_uri_called_for_patterns_only(self) -> None:
        prefix = self.register_as("app.items.", "prefix", "p")
        exact = self.register_as("app.exact", "exact", "e")
        self.caller.call("app.items.42.move", 1)
        self.caller.call("app.exact")
        [pattern_invocation] = received(prefix, message.Invocation)
        [exact_invocation] = received(exact, message.Invocation)
        self.assertEqual(pattern_invocation.procedure, "app.items.42.move")
        self.assertIsNone(exact_invocation.procedure)

    def test_app_procedures_come_before_client_patterns(self) -> None:
        self.app.procedure("app.items.count")(lambda: "the app's")
        self.register_as("app.items.", "prefix", "the client's")
        self.assertEqual(self.successResultOf(self.caller.call("app.items.count")), "the app's")
        self.assertEqual(self.successResultOf(self.caller.call("app.items.other")), "the client's")

    def test_meta_procedures_come_before_client_patterns(self) -> None:
        self.register_as("", "prefix", "everything")
        self.assertEqual(self.successResultOf(self.caller.call("wamp.session.count")), 3)
        self.assertEqual(self.successResultOf(self.caller.call("any.thing")), "everything")

    def test_shared_pattern_registrations(self) -> None:
        for index in range(2):
            session = self.client.connect()
            session.register("app..get", lambda index=index: index, match="wildcard", invoke="roundrobin")
        calls = [self.successResultOf(self.caller.call(f"app.{n}.get")) for n in range(4)]
        self.assertEqual(calls, [0, 1, 0, 1])

    def test_a_pattern_uri_must_fit_its_policy(self) -> None:
        for uri, match in (("app..x", "prefix"), ("app x", "wildcard"), ("app..", "exact")):
            session = self.client.connect()
            session.send_raw([REGISTER, 1, {"match": match}, uri])
            refused = session.closed is not None or session.messages[-1].error == "wamp.error.invalid_uri"
            self.assertTrue(refused, (uri, match))
            self.assertIsNone(self.app.router.dealer.registration(uri, match))


class WelcomeFeaturesTests(ClientCalleeTestCase):
    def test_the_dealer_announces_what_it_implements(self) -> None:
        [welcome] = received(self.caller, message.Welcome)
        dealer = welcome.roles["dealer"]
        for feature in (
            "shared_registration",
            "pattern_based_registration",
            "call_timeout",
            "call_canceling",
            "progressive_call_results",
            "caller_identification",
            "registration_meta_api",
        ):
            self.assertTrue(getattr(dealer, feature), feature)


class _Caller:
    """A caller recording its answers."""

    id = 5
    authid = "caller"
    authrole = "user"

    def __init__(self) -> None:
        self.answers: list[tuple[Any, ...]] = []

    def send_result(self, request: int, args: Any = None, kwargs: Any = None, progress: bool = False) -> None:
        self.answers.append(("result", request, args))

    def send_error(self, request: int, error: str, args: Any = None, kwargs: Any = None) -> None:
        self.answers.append(("error", request, error))


class _Callee:
    """A callee recording its INVOCATIONs and INTERRUPTs."""

    def __init__(self, interruptible: bool = True, id: int = 9) -> None:
        self.interruptible = interruptible
        self.id = id
        self.invocations: list[tuple[int, Call]] = []
        self.interrupts: list[tuple[int, str]] = []

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        self.invocations.append((invocation, call))

    def send_interrupt(self, invocation: int, mode: str) -> None:
        self.interrupts.append((invocation, mode))


class CallTimeoutTests(SynchronousTestCase):
    """``CALL.Options.timeout``: the dealer cancels a call when it runs out, as CANCEL killnowait would."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.dealer = Dealer(self.clock)
        self.caller = _Caller()
        self.callee = _Callee()
        self.dealer.arrange("app.slow", "exact", "single", [self.callee])

    def call(self, timeout: float, procedure: str = "app.slow") -> Call:
        call = Call(self.caller, len(self.caller.answers) + 1, procedure, timeout=timeout)
        self.assertTrue(self.dealer.call(call))
        return call

    def test_the_caller_gets_canceled_and_the_callee_an_interrupt(self) -> None:
        self.call(1.5)
        [(invocation, _)] = self.callee.invocations
        self.clock.advance(1.4)
        self.assertEqual(self.caller.answers, [])
        self.clock.advance(0.2)
        self.assertEqual(self.caller.answers, [("error", 1, "wamp.error.canceled")])
        self.assertEqual(self.callee.interrupts, [(invocation, "killnowait")])
        self.assertEqual(self.dealer.calls_in_flight, 0)
        self.dealer.yielded(self.callee, invocation, ["late"], None, False)  # dropped
        self.assertEqual(len(self.caller.answers), 1)

    def test_a_callee_without_call_canceling_is_not_interrupted(self) -> None:
        plain = _Callee(interruptible=False)
        self.dealer.arrange("app.plain", "exact", "single", [plain])
        self.call(1, "app.plain")
        self.clock.advance(1)
        self.assertEqual(self.caller.answers, [("error", 1, "wamp.error.canceled")])
        self.assertEqual(plain.interrupts, [])

    def test_an_answer_in_time_stops_the_timer(self) -> None:
        self.call(1)
        [(invocation, _)] = self.callee.invocations
        self.dealer.yielded(self.callee, invocation, ["in time"], None, False)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.caller.answers, [("result", 1, ["in time"])])
        self.assertEqual(self.callee.interrupts, [])

    def test_cancel_and_a_leaving_callee_stop_the_timer(self) -> None:
        self.call(1)
        self.dealer.cancel(self.caller, 1, "skip")
        self.call(1)
        self.dealer.callee_gone(self.callee, "gone")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timer_without_a_timeout(self) -> None:
        self.call(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_progressive_results_do_not_stop_the_timer(self) -> None:
        call = self.call(1)
        call.receive_progress = True
        [(invocation, _)] = self.callee.invocations
        self.dealer.yielded(self.callee, invocation, [1], None, True)
        self.clock.advance(1)
        self.assertEqual(self.caller.answers, [("result", 1, [1]), ("error", 1, "wamp.error.canceled")])

    def test_an_app_procedures_deferred_is_cancelled(self) -> None:
        running: Deferred[int] = Deferred()
        self.dealer.register_function("app.wait", lambda: running)
        self.call(2, "app.wait")
        self.clock.advance(2)
        self.assertTrue(running.called)  # cancelled
        self.assertEqual(self.caller.answers, [("error", 1, "wamp.error.canceled")])
        self.assertEqual(self.dealer.calls_in_flight, 0)

    def test_an_app_procedure_answering_at_once_needs_no_timer(self) -> None:
        self.dealer.register_function("app.now", lambda: 1)
        self.call(2, "app.now")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.caller.answers, [("result", 1, [1])])


class CallTimeoutOptionTests(SynchronousTestCase):
    """How CALL.Options.timeout reaches the dealer: milliseconds, capped by ``max_call_timeout``."""

    def timeout_of(self, options: dict[str, Any], limits: Limits | None = None) -> float:
        app = Sandstone(anonymous=True, limits=limits)
        callee = _Callee()
        app.router.arrange_registration("app.far", "exact", "single", [callee])
        caller = TestClient(app).connect()
        caller.send_raw([CALL, 1, options, "app.far"])
        [(_, call)] = callee.invocations
        return call.timeout

    def test_milliseconds_to_seconds(self) -> None:
        self.assertEqual(self.timeout_of({"timeout": 1500}), 1.5)
        self.assertEqual(self.timeout_of({"timeout": 0}), 0)
        self.assertEqual(self.timeout_of({}), 0)

    def test_max_call_timeout_caps_a_longer_timeout_only(self) -> None:
        limits = Limits(max_call_timeout=2)
        self.assertEqual(self.timeout_of({"timeout": 60_000}, limits), 2)
        self.assertEqual(self.timeout_of({"timeout": 500}, limits), 0.5)
        self.assertEqual(self.timeout_of({}, limits), 0)  # a cap, not a default

    def test_a_negative_or_non_integer_timeout_is_a_protocol_violation(self) -> None:
        app = Sandstone(anonymous=True)
        app.procedure("app.add")(lambda a, b: a + b)
        for timeout in (-1, 1.5, "10"):
            caller = TestClient(app).connect()
            caller.send_raw([CALL, 1, {"timeout": timeout}, "app.add", [1, 2]])
            assert caller.closed is not None
            self.assertEqual(caller.closed.reason, "wamp.error.protocol_violation", timeout)
