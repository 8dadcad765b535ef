"""Tests for L{sandstone._dispatcher}."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sandstone._dispatcher import (
    DispatchResult,
    EventDispatcher,
    StopPropagation,
)


def _recorder(calls: list[str], label: str) -> Callable[[object], None]:
    """A synchronous listener appending C{label} to C{calls}."""

    def listener(event: object) -> None:
        calls.append(label)

    return listener


def _failing(event: object) -> None:
    """A synchronous listener that always fails."""
    raise ZeroDivisionError("sync boom")


class _Articles:
    """Owner of bound-method listeners."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def article_created(self, event: object) -> None:
        self.seen.append(event)


class OrderingTests(SynchronousTestCase):
    """Listeners are called by priority, then by registration order."""

    def test_higher_priority_listeners_are_called_first(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        dispatcher.add_listener("e", _recorder(calls, "low"), priority=-5)
        dispatcher.add_listener("e", _recorder(calls, "high"), priority=10)
        dispatcher.add_listener("e", _recorder(calls, "default"))

        self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(calls, ["high", "default", "low"])

    def test_same_priority_listeners_are_called_in_registration_order(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        for label in ["first", "second", "third"]:
            dispatcher.add_listener("e", _recorder(calls, label), priority=3)

        self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(calls, ["first", "second", "third"])

    def test_listeners_returns_call_order(self) -> None:
        dispatcher = EventDispatcher()
        low, high = _recorder([], "low"), _recorder([], "high")
        dispatcher.add_listener("e", low)
        dispatcher.add_listener("e", high, priority=1)

        self.assertEqual(dispatcher.listeners("e"), [high, low])


class SynchronousDispatchTests(SynchronousTestCase):
    """Dispatching to synchronous listeners completes without a reactor turn."""

    def test_sync_listeners_give_an_already_fired_deferred(self) -> None:
        dispatcher = EventDispatcher()
        dispatcher.add_listener("e", _recorder([], "a"))
        dispatcher.add_listener("e", lambda event: "a plain value")

        result = self.successResultOf(dispatcher.dispatch("e", "payload"))

        self.assertEqual(
            result,
            DispatchResult("e", "payload", called=2, stopped=False, errors=[]),
        )
        self.assertTrue(result.ok)

    def test_listener_receives_the_event(self) -> None:
        dispatcher = EventDispatcher()
        articles = _Articles()
        dispatcher.add_listener("article.created", articles.article_created)
        event = object()

        self.successResultOf(dispatcher.dispatch("article.created", event))

        self.assertEqual(articles.seen, [event])

    def test_dispatch_without_listeners_fires_immediately(self) -> None:
        dispatcher = EventDispatcher()

        result = self.successResultOf(dispatcher.dispatch("nobody.listens", 42))

        self.assertEqual(result.called, 0)
        self.assertEqual(result.event, 42)
        self.assertFalse(result.stopped)
        self.assertTrue(result.ok)

    def test_already_fired_deferred_does_not_pause_dispatch(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        dispatcher.add_listener("e", lambda event: succeed(None))
        dispatcher.add_listener("e", _recorder(calls, "after"))

        result = self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual((calls, result.called), (["after"], 2))

    def test_many_sync_listeners_do_not_exhaust_the_stack(self) -> None:
        dispatcher = EventDispatcher()
        for _ in range(5000):
            dispatcher.add_listener("e", _recorder([], "x"))
            dispatcher.add_listener("e", lambda event: succeed(None))

        result = self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(result.called, 10000)


class AsynchronousDispatchTests(SynchronousTestCase):
    """Asynchronous listeners are awaited before the next one is called."""

    def test_deferred_listener_is_awaited_before_the_next_one(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[None] = Deferred()
        dispatcher.add_listener("e", lambda event: waiting)
        dispatcher.add_listener("e", _recorder(calls, "next"))

        dispatched = dispatcher.dispatch("e")
        self.assertNoResult(dispatched)
        self.assertEqual(calls, [])

        waiting.callback(None)

        self.assertEqual(calls, ["next"])
        self.assertEqual(self.successResultOf(dispatched).called, 2)

    def test_coroutine_listener_is_awaited_before_the_next_one(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[str] = Deferred()

        async def listener(event: object) -> None:
            calls.append(await waiting)

        dispatcher.add_listener("e", listener)
        dispatcher.add_listener("e", _recorder(calls, "next"))

        dispatched = dispatcher.dispatch("e")
        self.assertNoResult(dispatched)
        self.assertEqual(calls, [])

        waiting.callback("coroutine")

        self.assertEqual(calls, ["coroutine", "next"])
        self.assertTrue(self.successResultOf(dispatched).ok)

    def test_cancelled_dispatch_calls_no_more_listeners(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[None] = Deferred()
        dispatcher.add_listener("e", lambda event: waiting)
        dispatcher.add_listener("e", _recorder(calls, "next"))

        dispatched = dispatcher.dispatch("e")
        dispatched.cancel()
        self.failureResultOf(dispatched, CancelledError)
        waiting.callback(None)

        self.assertEqual(calls, [])


class FailureTests(SynchronousTestCase):
    """A failing listener is logged and recorded; the others still run."""

    def test_raising_listener_is_logged_and_the_others_still_run(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        dispatcher.add_listener("e", _failing, priority=1)
        dispatcher.add_listener("e", _recorder(calls, "after"))

        with capturedLogs() as events:
            result = self.successResultOf(dispatcher.dispatch("e"))

        name = f"{__name__}._failing"
        self.assertEqual(calls, ["after"])
        self.assertEqual((result.called, result.ok), (2, False))
        self.assertEqual([error.listener for error in result.errors], [name])
        self.assertTrue(result.errors[0].failure.check(ZeroDivisionError))
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["listener"], name)
        self.assertEqual(failures[0]["event_name"], "e")
        self.assertEqual(failures[0]["log_level"], LogLevel.critical)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failing_deferred_listener_is_logged_and_the_others_still_run(
        self,
    ) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[None] = Deferred()
        dispatcher.add_listener("e", lambda event: waiting)
        dispatcher.add_listener("e", _recorder(calls, "after"))

        dispatched = dispatcher.dispatch("e")
        with capturedLogs() as events:
            waiting.errback(ZeroDivisionError("deferred boom"))

        result = self.successResultOf(dispatched)
        self.assertEqual(calls, ["after"])
        self.assertEqual(len(result.errors), 1)
        self.assertIn("<lambda>", result.errors[0].listener)
        self.assertEqual(
            [e["listener"] for e in events if "log_failure" in e],
            [result.errors[0].listener],
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failing_coroutine_listener_is_logged_and_the_others_still_run(
        self,
    ) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[None] = Deferred()

        async def explode(event: object) -> None:
            await waiting
            raise ZeroDivisionError("coroutine boom")

        dispatcher.add_listener("e", explode)
        dispatcher.add_listener("e", _recorder(calls, "after"))

        dispatched = dispatcher.dispatch("e")
        waiting.callback(None)

        result = self.successResultOf(dispatched)
        self.assertEqual(calls, ["after"])
        self.assertEqual(
            [error.listener for error in result.errors],
            [f"{__name__}.{explode.__qualname__}"],
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_bound_method_error_names_class_and_method(self) -> None:
        dispatcher = EventDispatcher()

        class Articles:
            def article_created(self, event: object) -> None:
                raise ZeroDivisionError("method boom")

        dispatcher.add_listener("article.created", Articles().article_created)

        result = self.successResultOf(dispatcher.dispatch("article.created"))

        self.assertTrue(
            result.errors[0].listener.endswith("Articles.article_created"),
        )
        self.assertTrue(result.errors[0].listener.startswith(f"{__name__}."))
        self.flushLoggedErrors(ZeroDivisionError)


class StopPropagationTests(SynchronousTestCase):
    """StopPropagation ends the dispatch without being an error."""

    def test_sync_stop_propagation_skips_later_listeners(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []

        def stop(event: object) -> None:
            raise StopPropagation()

        dispatcher.add_listener("e", stop, priority=1)
        dispatcher.add_listener("e", _recorder(calls, "skipped"))

        with capturedLogs() as events:
            result = self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(calls, [])
        self.assertEqual((result.called, result.stopped, result.ok), (1, True, True))
        self.assertEqual(list(events), [])

    def test_async_stop_propagation_skips_later_listeners(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        waiting: Deferred[None] = Deferred()

        async def stop(event: object) -> None:
            await waiting
            raise StopPropagation()

        dispatcher.add_listener("e", stop)
        dispatcher.add_listener("e", _recorder(calls, "skipped"))

        dispatched = dispatcher.dispatch("e")
        waiting.callback(None)

        result = self.successResultOf(dispatched)
        self.assertEqual(calls, [])
        self.assertEqual((result.called, result.stopped, result.ok), (1, True, True))


class RegistrationTests(SynchronousTestCase):
    """Adding, removing and counting listeners."""

    def test_adding_the_same_listener_twice_is_a_no_op(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        listener = _recorder(calls, "once")
        dispatcher.add_listener("e", listener)
        dispatcher.add_listener("e", listener, priority=7)

        self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(dispatcher.listener_count("e"), 1)
        self.assertEqual(calls, ["once"])

    def test_bound_methods_of_the_same_instance_are_equal(self) -> None:
        dispatcher = EventDispatcher()
        articles = _Articles()
        dispatcher.add_listener("e", articles.article_created)
        dispatcher.add_listener("e", articles.article_created)

        self.assertEqual(dispatcher.listener_count("e"), 1)
        self.assertTrue(dispatcher.remove_listener("e", articles.article_created))
        self.assertFalse(dispatcher.has_listeners("e"))

    def test_bound_methods_of_different_instances_are_distinct(self) -> None:
        dispatcher = EventDispatcher()
        dispatcher.add_listener("e", _Articles().article_created)
        dispatcher.add_listener("e", _Articles().article_created)

        self.assertEqual(dispatcher.listener_count("e"), 2)

    def test_removing_an_unknown_listener_returns_false(self) -> None:
        dispatcher = EventDispatcher()
        dispatcher.add_listener("e", _recorder([], "a"))

        self.assertFalse(dispatcher.remove_listener("e", _recorder([], "b")))
        self.assertFalse(dispatcher.remove_listener("other", _recorder([], "b")))

    def test_listener_removed_during_dispatch_is_not_called(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []
        later = _recorder(calls, "later")

        def remover(event: object) -> None:
            dispatcher.remove_listener("e", later)

        dispatcher.add_listener("e", remover, priority=1)
        dispatcher.add_listener("e", later)

        result = self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual((calls, result.called), ([], 1))

    def test_listener_added_during_dispatch_is_not_called(self) -> None:
        dispatcher = EventDispatcher()
        calls: list[str] = []

        def adder(event: object) -> None:
            dispatcher.add_listener("e", _recorder(calls, "added"), priority=-1)

        dispatcher.add_listener("e", adder)

        self.successResultOf(dispatcher.dispatch("e"))

        self.assertEqual(calls, [])
        self.assertEqual(dispatcher.listener_count("e"), 2)

    def test_listener_count_returns_to_zero_without_leaks(self) -> None:
        dispatcher = EventDispatcher()
        listeners = [(f"event.{i}", _recorder([], str(i))) for i in range(10_000)]
        for name, listener in listeners:
            dispatcher.add_listener(name, listener)
        self.assertEqual(dispatcher.listener_count(), 10_000)
        self.assertEqual(dispatcher.listener_count("event.42"), 1)

        for name, listener in listeners:
            self.assertTrue(dispatcher.remove_listener(name, listener))

        self.assertEqual(dispatcher.listener_count(), 0)
        self.assertFalse(dispatcher.has_listeners("event.42"))
        self.assertEqual(dispatcher._entries, {})
