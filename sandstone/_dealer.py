"""The dealer: registrations of procedures (by clients or by the app) and routing of calls to them.

The dealer knows this node only: a call to a procedure it does not serve is the router's to pass on to the
cluster. It speaks ``Call``/``Caller``/``Callee`` (``_call.py``), never WAMP messages.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autobahn.util import rid
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._call import Call, Callee, Caller, result_arguments
from ._calling import invoke
from ._errors import (
    CANCELED,
    INVALID_ARGUMENT,
    NO_SUCH_PROCEDURE,
    NO_SUCH_REGISTRATION,
    PROCEDURE_ALREADY_EXISTS,
    WampError,
    error_payload,
)
from ._payload import payload_problem

if TYPE_CHECKING:
    from ._session import Session

log = Logger()

_KILL = "kill"
_KILLNOWAIT = "killnowait"
_SKIP = "skip"


class Registration:
    """A procedure URI bound to its callee: a client session, or a function of the app."""

    __slots__ = ("id", "uri", "callee", "function")

    def __init__(self, uri: str, callee: Session | None, function: Callable[..., Any] | None) -> None:
        self.id: int = rid()
        self.uri = uri
        self.callee = callee
        self.function = function


@dataclass(slots=True, eq=False)
class _InFlight:
    """A call in flight: the call, and where it runs (a client's INVOCATION or an app function)."""

    call: Call
    callee: Callee | None = None
    invocation: int = 0
    running: Deferred[Any] | None = None


class Dealer:
    """Registrations by URI and id, and the calls in flight."""

    def __init__(self) -> None:
        self._by_uri: dict[str, Registration] = {}
        self._by_id: dict[int, Registration] = {}
        self._by_session: dict[Session, dict[int, Registration]] = {}
        # calls in flight, indexed from both ends: per callee by INVOCATION id, per caller by its request id
        self._by_callee: dict[Callee, dict[int, _InFlight]] = {}
        self._by_caller: dict[Caller, dict[int, _InFlight]] = {}
        self._invocation_ids: dict[Callee, itertools.count[int]] = {}
        # Procedures the router implements itself (the meta API): per node, never registered; called with
        # the caller first, then the call's arguments.
        self.meta: dict[str, Callable[..., Any]] = {}

    # registrations

    def may_register(self, session: Session, limit: int) -> bool:
        """False when a session holds ``limit`` registrations already (0: no limit)."""
        return limit <= 0 or len(self._by_session.get(session, ())) < limit

    def register(self, session: Session, uri: str) -> Registration:
        """Register a client session as the callee of ``uri``."""
        registration = self._add(uri, session, None)
        self._by_session.setdefault(session, {})[registration.id] = registration
        return registration

    def register_function(self, uri: str, function: Callable[..., Any]) -> Registration:
        """Register an app function as the procedure ``uri``."""
        return self._add(uri, None, function)

    def _add(self, uri: str, callee: Session | None, function: Callable[..., Any] | None) -> Registration:
        if uri in self._by_uri:
            raise WampError(PROCEDURE_ALREADY_EXISTS, f"procedure {uri!r} is already registered")
        registration = Registration(uri, callee, function)
        while registration.id in self._by_id:
            registration.id = rid()
        self._by_uri[uri] = registration
        self._by_id[registration.id] = registration
        return registration

    def unregister(self, session: Session, registration_id: int) -> Registration:
        """Remove one of a session's registrations, or raise ``no_such_registration``."""
        registration = self._by_session.get(session, {}).get(registration_id)
        if registration is None:
            raise WampError(NO_SUCH_REGISTRATION, f"session has no registration {registration_id}")
        self.withdraw(registration)
        return registration

    def withdraw(self, registration: Registration) -> bool:
        """Drop a registration from the tables; False when it was gone already (its session left)."""
        if self._by_id.get(registration.id) is not registration:
            return False
        del self._by_uri[registration.uri]
        del self._by_id[registration.id]
        if registration.callee is not None:
            _pop_nested(self._by_session, registration.callee, registration.id)
        return True

    def client_registrations(self) -> list[Registration]:
        """Registrations whose callee is a client session (the ones claimed cluster-wide)."""
        return [r for r in self._by_id.values() if r.callee is not None]

    def registration(self, uri: str) -> Registration | None:
        """The registration of a procedure URI, if any."""
        return self._by_uri.get(uri)

    def serves(self, procedure: str) -> bool:
        """Whether a call to ``procedure`` is served on this node (a registration or a meta procedure)."""
        return procedure in self._by_uri or procedure in self.meta

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def calls_in_flight(self) -> int:
        """Number of calls (to clients or app functions) not answered yet."""
        return sum(len(calls) for calls in self._by_caller.values())

    def _track(self, flight: _InFlight) -> None:
        self._by_caller.setdefault(flight.call.caller, {})[flight.call.request] = flight
        if flight.callee is not None:
            self._by_callee.setdefault(flight.callee, {})[flight.invocation] = flight

    def _untrack(self, flight: _InFlight) -> None:
        _pop_nested(self._by_caller, flight.call.caller, flight.call.request)
        if flight.callee is not None:
            _pop_nested(self._by_callee, flight.callee, flight.invocation)

    # calls

    def call(self, call: Call) -> None:
        """Route a call to its callee on this node; its caller eventually gets a result or an error.
        Raises ``no_such_procedure`` when this node serves no such procedure."""
        registration = self._by_uri.get(call.procedure)
        if registration is None:
            function = self.meta.get(call.procedure)
            if function is None:
                raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")
            self._call_function(call, functools.partial(function, call.caller))
        elif registration.function is not None:
            self._call_function(call, registration.function)
        else:
            self._invoke(call, registration)

    def call_client(self, call: Call) -> None:
        """Serve a call from another node: only client callees are claimed cluster-wide (the app's own
        procedures exist on every node). Raises ``no_such_procedure`` when no client serves it here."""
        registration = self._by_uri.get(call.procedure)
        if registration is None or registration.callee is None:
            raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")
        self._invoke(call, registration)

    def _call_function(self, call: Call, function: Callable[..., Any]) -> None:
        caller = call.caller
        args, kwargs = call.args or [], call.kwargs or {}
        try:
            inspect.signature(function).bind(*args, **kwargs)
        except TypeError as exc:
            caller.send_error(call.request, INVALID_ARGUMENT, [f"{call.procedure}: {exc}"])
            return
        except ValueError:
            pass  # no signature available (some builtins): let the call itself decide
        flight = _InFlight(call)
        self._track(flight)
        flight.running = d = maybeDeferred(invoke, function, *args, **kwargs)
        d.addBoth(self._function_done, flight)
        d.addCallbacks(self._function_returned, self._function_failed, (call,), errbackArgs=(call,))

    def _function_done(self, outcome: Any, flight: _InFlight) -> Any:
        self._untrack(flight)
        return outcome

    def _function_returned(self, result: Any, call: Call) -> None:
        args, kwargs = result_arguments(result)
        problem = payload_problem(args, kwargs)
        if problem is None:
            call.caller.send_result(call.request, args, kwargs)
            return
        # An app bug, answered like one: the caller learns why, the log says which procedure.
        log.warn(
            "procedure {procedure} returned a value not every WAMP serializer can carry: {problem}",
            procedure=call.procedure,
            problem=problem,
        )
        text = f"the result of {call.procedure} could not be delivered: {problem}"
        call.caller.send_error(call.request, INVALID_ARGUMENT, [text])

    def _function_failed(self, failure: Failure, call: Call) -> None:
        caller = call.caller
        if failure.check(CancelledError):
            caller.send_error(call.request, CANCELED, [f"call to {call.procedure} canceled"])
            return
        payload = error_payload(failure)
        if payload.uri.startswith("wamp.error.runtime_error"):
            log.failure("procedure {procedure} failed", failure, procedure=call.procedure)
        problem = payload_problem(payload.args, payload.kwargs)
        if problem is not None:
            log.warn(
                "procedure {procedure} failed with {error} and arguments not every WAMP serializer can "
                "carry: {problem}",
                procedure=call.procedure,
                error=payload.uri,
                problem=problem,
            )
            caller.send_error(
                call.request, payload.uri, [f"the arguments of the error could not be delivered: {problem}"]
            )
            return
        caller.send_error(call.request, payload.uri, payload.args, payload.kwargs)

    def _invoke(self, call: Call, registration: Registration) -> None:
        callee = registration.callee
        assert callee is not None
        ids = self._invocation_ids.get(callee)
        if ids is None:
            ids = self._invocation_ids[callee] = itertools.count(1)
        invocation = next(ids)
        self._track(_InFlight(call, callee, invocation))
        callee.send_invocation(invocation, registration.id, call)

    def yielded(
        self,
        callee: Callee,
        invocation: int,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        progress: bool,
        problem: str | None = None,
    ) -> None:
        """A callee's result for an INVOCATION: to the caller (progressive results keep the call open).

        ``problem`` says why the result's payload cannot be passed on (see ``_payload.py``): then the call
        ends with ``wamp.error.invalid_argument`` for the caller, and a callee sending progressive
        results is interrupted.
        """
        flight = self._by_callee.get(callee, {}).get(invocation)
        if flight is None:
            log.debug(
                "YIELD for unknown invocation {request} from session {session}",
                request=invocation,
                session=callee.id,
            )
            return
        call = flight.call
        if not progress:
            self._untrack(flight)
        elif not call.receive_progress:
            return  # the caller did not ask for progressive results
        if problem is not None:
            if progress:
                self._untrack(flight)
                if callee.interruptible:
                    callee.send_interrupt(invocation, _KILLNOWAIT)
            text = f"the callee's result could not be delivered: {problem}"
            call.caller.send_error(call.request, INVALID_ARGUMENT, [text])
            return
        call.caller.send_result(call.request, args, kwargs, progress)

    def failed(
        self,
        callee: Callee,
        invocation: int,
        error: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        problem: str | None = None,
    ) -> None:
        """A callee's error for an INVOCATION: to the caller. When its arguments cannot be passed on
        (``problem``, see ``_payload.py``), the caller gets the error URI with an explanation."""
        flight = self._by_callee.get(callee, {}).get(invocation)
        if flight is None:
            return
        self._untrack(flight)
        if problem is not None:
            args, kwargs = [f"the arguments of the callee's error could not be delivered: {problem}"], None
        flight.call.caller.send_error(flight.call.request, error, args, kwargs)

    def cancel(self, caller: Caller, request: int, mode: str | None) -> bool:
        """A caller's CANCEL; False when no call of that request is in flight here.

        ``skip`` answers the caller at once and leaves the callee alone; ``killnowait`` (the default) also
        INTERRUPTs the callee; ``kill`` INTERRUPTs it and waits for its answer. Callees that did not
        announce call canceling are never interrupted (``skip``). An app function's Deferred is cancelled.
        """
        flight = self._by_caller.get(caller, {}).get(request)
        if flight is None:
            return False
        if flight.running is not None:
            flight.running.cancel()
            return True
        callee = flight.callee
        assert callee is not None
        mode = mode or _KILLNOWAIT
        if mode != _SKIP and callee.interruptible:
            callee.send_interrupt(flight.invocation, mode)
            if mode == _KILL:
                return True  # the callee's ERROR (or RESULT) concludes the call
        self._untrack(flight)
        caller.send_error(request, CANCELED, [f"call {request} canceled by the caller"])
        return True

    def session_lost(self, session: Session) -> list[Registration]:
        """Drop a leaving session's registrations (returned), fail the calls it was serving, forget its own
        calls (interrupting their callees)."""
        registrations = list(self._by_session.pop(session, {}).values())
        for registration in registrations:
            del self._by_uri[registration.uri]
            del self._by_id[registration.id]
        self._invocation_ids.pop(session, None)
        for flight in list(self._by_callee.get(session, {}).values()):
            self._untrack(flight)
            flight.call.caller.send_error(
                flight.call.request, CANCELED, [f"callee session {session.id} left before answering"]
            )
        for flight in list(self._by_caller.get(session, {}).values()):
            callee = flight.callee
            if callee is None:
                continue  # an app function finishes on its own; its answer goes nowhere
            self._untrack(flight)
            if callee.interruptible:
                callee.send_interrupt(flight.invocation, _KILLNOWAIT)
        return registrations


def _pop_nested(index: dict[Any, dict[int, Any]], owner: Any, key: int) -> None:
    entries = index.get(owner)
    if entries is not None:
        entries.pop(key, None)
        if not entries:
            del index[owner]
