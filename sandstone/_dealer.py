"""The dealer: registrations of procedures (by clients or by the app) and routing of calls to them.

The dealer knows no node: a callee on another node is a ``Callee`` like a local session, which the cluster
gives the router (``arrange``) and which carries INVOCATIONs there. It speaks ``Call``/``Caller``/``Callee``
(``_call.py``), never WAMP messages. Calls with a timeout are cancelled when it runs out, as a CANCEL in mode
``killnowait`` would.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
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
from ._registrations import SINGLE, Registration, RegistrationTable
from ._subscriptions import EXACT

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Dealer", "Registration"]

log = Logger()

_KILL = "kill"
_KILLNOWAIT = "killnowait"
_SKIP = "skip"

#: The error a caller gets when its call's timeout ran out (the issue's choice, as Crossbar does; the latest
#: draft of the spec says ``wamp.error.timeout``).
TIMEOUT_ERROR = CANCELED


@dataclass(slots=True, eq=False)
class _InFlight:
    """A call in flight: the call, where it runs (a callee's INVOCATION or an app function), its timer."""

    call: Call
    callee: Callee | None = None
    invocation: int = 0
    running: Deferred[Any] | None = None
    timer: IDelayedCall | None = None


class Dealer:
    """Registrations by URI, match policy and id, and the calls in flight.

    ``reactor`` runs the timers of calls with a timeout (the global reactor unless given).
    """

    def __init__(self, reactor: IReactorTime | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(IReactorTime, default_reactor)
        self._reactor = reactor
        self._table = RegistrationTable()
        self._exact = self._table.exact.get  # the calls' fast path: one dict lookup
        # each local client callee's registrations, by id (a session is a callee of a registration once)
        self._by_session: dict[Session, dict[int, Registration]] = {}
        # calls in flight, indexed from both ends: per callee by INVOCATION id, per caller by its request id
        self._by_callee: dict[Callee, dict[int, _InFlight]] = {}
        self._by_caller: dict[Caller, dict[int, _InFlight]] = {}
        # INVOCATION ids: one sequence for every callee (each callee's ids are unique and increasing)
        self._invocation_ids = itertools.count(1)
        # Procedures the router implements itself (the meta API): per node, never registered; called with
        # the caller first, then the call's arguments.
        self.meta: dict[str, Callable[..., Any]] = {}

    # registrations

    def may_register(self, session: Session, limit: int) -> bool:
        """False when a session holds ``limit`` registrations already (0: no limit)."""
        return limit <= 0 or len(self._by_session.get(session, ())) < limit

    def register(self, session: Session, uri: str, match: str = EXACT, invoke: str = SINGLE) -> Registration:
        """Make a client session a callee of (``uri``, ``match``): a new registration, or one already there
        whose invocation policy is ``invoke`` too and not ``single``; else ``procedure_already_exists``."""
        registration = self._table.get(uri, match)
        if registration is None:
            registration = Registration(uri, match, invoke)
            self._table.add(registration)
        else:
            self._check_shared(registration, session, invoke)
        registration.add(session)
        self._by_session.setdefault(session, {})[registration.id] = registration
        return registration

    def _check_shared(self, registration: Registration, session: Session, invoke: str) -> None:
        """Refuse a new callee of an existing registration unless both share it (same policy, not
        ``single``). Callees of other nodes only: the cluster decides (they may be gone by now)."""
        uri = registration.uri
        if registration.function is not None:
            raise WampError(PROCEDURE_ALREADY_EXISTS, f"procedure {uri!r} is one of the app's")
        held = self._by_session.get(session)
        if held is not None and registration.id in held:
            raise WampError(PROCEDURE_ALREADY_EXISTS, f"this session registered {uri!r} already")
        if not any(callee in self._by_session for callee in registration.callees):
            # callees of other nodes only (as this node last heard): the cluster decides on the policy the
            # session asks for; a refusal's answer puts the cluster's back
            registration.invoke = invoke
            return
        if registration.invoke == SINGLE:
            raise WampError(PROCEDURE_ALREADY_EXISTS, f"procedure {uri!r} is already registered")
        if invoke != registration.invoke:
            raise WampError(
                PROCEDURE_ALREADY_EXISTS,
                f"procedure {uri!r} is registered with invocation policy {registration.invoke!r}, "
                f"not {invoke!r}",
            )

    def register_function(self, uri: str, function: Callable[..., Any]) -> Registration:
        """Register an app function as the procedure ``uri`` (exact, one callee: the function)."""
        registration = self._table.get(uri)
        if registration is not None:
            raise WampError(PROCEDURE_ALREADY_EXISTS, f"procedure {uri!r} is already registered")
        registration = Registration(uri, function=function)
        self._table.add(registration)
        return registration

    def unregister(self, session: Session, registration_id: int) -> Registration:
        """End a session's part in one of its registrations, or raise ``no_such_registration``."""
        registration = self._by_session.get(session, {}).get(registration_id)
        if registration is None:
            raise WampError(NO_SUCH_REGISTRATION, f"session has no registration {registration_id}")
        self.withdraw(registration, session)
        return registration

    def withdraw(self, registration: Registration, session: Session) -> bool:
        """Remove a session from a registration's callees; False when it was gone already (it left)."""
        held = self._by_session.get(session)
        if held is None or held.pop(registration.id, None) is None:
            return False
        if not held:
            del self._by_session[session]
        registration.remove(session)
        self._drop_if_unused(registration)
        return True

    def _drop_if_unused(self, registration: Registration) -> None:
        if not registration.callees and registration.function is None:
            self._table.remove(registration)

    def arrange(self, uri: str, match: str, invoke: str | None, order: Sequence[Callee | int]) -> None:
        """The cluster's view of (``uri``, ``match``): its policy (``None``: no registration anywhere) and
        its callees in the order they registered cluster-wide, an ``int`` standing for this node's callee
        with that session id. This node's callees missing from ``order`` (their claim is under way, or
        Redis cannot be reached) stay, after the others."""
        registration = self._table.get(uri, match)
        local: dict[int, Callee] = {}
        if registration is not None:
            local = {c.id: c for c in registration.callees if c in self._by_session}
        callees: list[Callee] = []
        for member in order:
            if isinstance(member, int):
                callee = local.pop(member, None)
                if callee is not None:
                    callees.append(callee)
            else:
                callees.append(member)
        callees.extend(local.values())
        if registration is None:
            if not callees or invoke is None:
                return
            registration = Registration(uri, match, invoke)
            self._table.add(registration)
        elif registration.function is not None:
            return  # the app's procedure: on every node, never in the cluster's view
        if invoke is not None:
            registration.invoke = invoke
        registration.arrange(callees)
        self._drop_if_unused(registration)

    def client_registrations(self) -> list[tuple[Registration, Session]]:
        """Each registration of a local client callee, with that callee (what is claimed cluster-wide)."""
        return [
            (registration, session)
            for session, held in self._by_session.items()
            for registration in held.values()
        ]

    def registration(self, uri: str, match: str = EXACT) -> Registration | None:
        """The registration of (``uri``, ``match``), if any."""
        return self._table.get(uri, match)

    def registration_by_id(self, registration_id: int) -> Registration | None:
        """The registration with this id (the app's procedures too), if any."""
        return self._table.by_id(registration_id)

    def best(self, uri: str) -> Registration | None:
        """The registration a call to ``uri`` reaches (the app's procedures too; not the meta API)."""
        return self._table.best(uri)

    def client_view(self) -> list[Registration]:
        """The registrations of client callees, this node's and the other nodes' (the app's procedures
        left out): this node's view of the cluster's registrations."""
        return [registration for registration in self._table if registration.function is None]

    def __len__(self) -> int:
        """Registrations served on this node: the app's procedures and those with a client callee here."""
        held = self._by_session
        return sum(
            1
            for registration in self._table
            if registration.function is not None or any(c in held for c in registration.callees)
        )

    @property
    def calls_in_flight(self) -> int:
        """Number of calls (to clients, here or elsewhere, or to app functions) not answered yet."""
        return sum(len(calls) for calls in self._by_caller.values())

    def _track(self, flight: _InFlight) -> None:
        self._by_caller.setdefault(flight.call.caller, {})[flight.call.request] = flight
        if flight.callee is not None:
            self._by_callee.setdefault(flight.callee, {})[flight.invocation] = flight

    def _untrack(self, flight: _InFlight) -> None:
        _pop_nested(self._by_caller, flight.call.caller, flight.call.request)
        if flight.callee is not None:
            _pop_nested(self._by_callee, flight.callee, flight.invocation)
        timer = flight.timer
        if timer is not None:
            flight.timer = None
            if timer.active():
                timer.cancel()

    # calls

    def call(self, call: Call) -> bool:
        """Route a call to the registration it reaches (exact, a meta procedure, prefix, wildcard): its
        caller eventually gets a result or an error. False when nothing here serves it."""
        procedure = call.procedure
        registration = self._exact(procedure)
        if registration is None:
            function = self.meta.get(procedure)
            if function is not None:
                self._call_function(call, functools.partial(function, call.caller))
                return True
            registration = self._table.best(procedure)
            if registration is None:
                return False
        function = registration.function
        if function is not None:
            self._call_function(call, function)
            return True
        callees = registration.callees
        self._invoke(call, registration, callees[0] if len(callees) == 1 else registration.pick())
        return True

    def call_here(self, call: Call, uri: str, match: str, callee_id: int | None) -> None:
        """Serve a call another node routed to this node's callee ``callee_id`` of (``uri``, ``match``), or
        to another callee of it here when that one left meanwhile. The app's own procedures exist on every
        node and are not served for others. Raises ``no_such_procedure`` when no client serves it here."""
        registration = self._table.get(uri, match)
        held = self._by_session
        local = [] if registration is None else [c for c in registration.callees if c in held]
        if registration is None or not local:
            raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")
        callee = next((c for c in local if c.id == callee_id), local[0])
        self._invoke(call, registration, callee)

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
        if call.timeout > 0 and not d.called:
            flight.timer = self._reactor.callLater(call.timeout, self._expired, flight)

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

    def _invoke(self, call: Call, registration: Registration, callee: Callee) -> None:
        invocation = next(self._invocation_ids)
        flight = _InFlight(call, callee, invocation)
        self._track(flight)
        if call.timeout > 0:
            flight.timer = self._reactor.callLater(call.timeout, self._expired, flight)
        callee.send_invocation(invocation, registration, call)

    def _expired(self, flight: _InFlight) -> None:
        """A call's timeout ran out: cancelled as by a CANCEL in mode ``killnowait``."""
        flight.timer = None
        call = flight.call
        if self._by_caller.get(call.caller, {}).get(call.request) is not flight:
            return
        if flight.running is not None:
            flight.running.cancel()  # the app function's Deferred: its errback answers the caller
            return
        callee = flight.callee
        assert callee is not None
        self._untrack(flight)
        if callee.interruptible:
            callee.send_interrupt(flight.invocation, _KILLNOWAIT)
        text = f"call to {call.procedure} timed out after {call.timeout:g} s"
        call.caller.send_error(call.request, TIMEOUT_ERROR, [text])

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

    def callee_gone(self, callee: Callee, reason: str) -> None:
        """A callee can no longer answer (its session or its node is gone): its calls fail with
        ``wamp.error.canceled``."""
        for flight in list(self._by_callee.get(callee, {}).values()):
            self._untrack(flight)
            flight.call.caller.send_error(flight.call.request, CANCELED, [reason])

    def session_lost(self, session: Session) -> list[Registration]:
        """Drop a leaving session's part in its registrations (returned), fail the calls it was serving,
        forget its own calls (interrupting their callees)."""
        registrations = list(self._by_session.pop(session, {}).values())
        for registration in registrations:
            registration.remove(session)
            self._drop_if_unused(registration)
        self.callee_gone(session, f"callee session {session.id} left before answering")
        for flight in list(self._by_caller.get(session, {}).values()):
            callee = flight.callee
            if callee is None:
                continue  # an app function finishes on its own (or at its timeout); its answer goes nowhere
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
