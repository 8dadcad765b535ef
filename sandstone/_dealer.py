"""The dealer: registrations of procedures (by clients or by the app) and routing of calls to them."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autobahn.util import rid
from autobahn.wamp import message
from autobahn.wamp.types import CallResult
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._calling import invoke
from ._codec import disclosed
from ._errors import (
    CANCELED,
    INVALID_ARGUMENT,
    NO_SUCH_PROCEDURE,
    NO_SUCH_REGISTRATION,
    PROCEDURE_ALREADY_EXISTS,
    ErrorPayload,
    WampError,
    error_payload,
)
from ._payload import payload_problem

if TYPE_CHECKING:
    from ._bus import RedisBus
    from ._session import Session

log = Logger()


class Registration:
    """A procedure URI bound to its callee: a client session, or a function of the app."""

    __slots__ = ("id", "uri", "callee", "function")

    def __init__(self, uri: str, callee: Session | None, function: Callable[..., Any] | None) -> None:
        self.id: int = rid()
        self.uri = uri
        self.callee = callee
        self.function = function


@dataclass(slots=True, eq=False)
class _Call:
    """A call in flight: who waits for it and where it runs (a client's INVOCATION or an app function)."""

    caller: Session
    request: int
    receive_progress: bool
    callee: Session | None = None
    invocation: int = 0
    running: Deferred[Any] | None = None
    on_done: Callable[[], Any] | None = None


class Dealer:
    """Registrations by URI and id, and the calls in flight."""

    def __init__(self) -> None:
        self._by_uri: dict[str, Registration] = {}
        self._by_id: dict[int, Registration] = {}
        # calls in flight, indexed from both ends: per callee by INVOCATION id, per caller by CALL id
        self._by_callee: dict[Session, dict[int, _Call]] = {}
        self._by_caller: dict[Session, dict[int, _Call]] = {}
        self._invocation_ids: dict[Session, itertools.count[int]] = {}
        self.cluster: RedisBus | None = None  # set while a cluster bus runs: remote callees and claims
        # Procedures the router implements itself (the session meta API): per node, never registered.
        self.meta: dict[str, Callable[..., Any]] = {}

    # registrations

    def may_register(self, session: Session, limit: int) -> bool:
        """False when a session holds ``limit`` registrations already (0: no limit)."""
        return limit <= 0 or len(session._registrations) < limit

    def register(self, session: Session, uri: str) -> Registration:
        """Register a client session as the callee of ``uri``."""
        registration = self._add(uri, session, None)
        session._registrations[registration.id] = registration
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
        registration = session._registrations.pop(registration_id, None)
        if registration is None:
            raise WampError(NO_SUCH_REGISTRATION, f"session has no registration {registration_id}")
        self._remove(registration)
        return registration

    def _remove(self, registration: Registration) -> None:
        self.forget(registration)
        if self.cluster is not None and registration.callee is not None:
            self.cluster.released(registration)

    def forget(self, registration: Registration) -> None:
        """Drop a registration from the tables (without telling the cluster)."""
        del self._by_uri[registration.uri]
        del self._by_id[registration.id]

    def client_registrations(self) -> list[Registration]:
        """Registrations whose callee is a client session (the ones claimed cluster-wide)."""
        return [r for r in self._by_id.values() if r.callee is not None]

    def registration(self, uri: str) -> Registration | None:
        """The registration of a procedure URI, if any."""
        return self._by_uri.get(uri)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def calls_in_flight(self) -> int:
        """Number of calls (to clients or app functions) not answered yet."""
        return sum(len(calls) for calls in self._by_caller.values())

    def _track(self, call: _Call) -> None:
        self._by_caller.setdefault(call.caller, {})[call.request] = call
        if call.callee is not None:
            self._by_callee.setdefault(call.callee, {})[call.invocation] = call

    def _untrack(self, call: _Call) -> None:
        _pop_nested(self._by_caller, call.caller, call.request)
        if call.callee is not None:
            _pop_nested(self._by_callee, call.callee, call.invocation)
        if call.on_done is not None:
            call.on_done()

    # calls

    def call(self, caller: Session, call: message.Call) -> None:
        """Route a CALL to its callee; the caller eventually gets a RESULT or an ERROR."""
        registration = self._by_uri.get(call.procedure)
        if registration is None and call.procedure in self.meta:
            self._call_function(caller, call, self.meta[call.procedure])
            return
        if registration is None and self.cluster is not None:
            self.cluster.call(caller, call)
            return
        if registration is None:
            raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")
        if registration.function is not None:
            self._call_function(caller, call, registration.function)
        else:
            assert registration.callee is not None
            self._invoke(caller, call, registration)

    def _call_function(self, caller: Session, call: message.Call, function: Callable[..., Any]) -> None:
        args, kwargs = call.args or [], call.kwargs or {}
        try:
            inspect.signature(function).bind(*args, **kwargs)
        except TypeError as exc:
            caller._send_error(call, ErrorPayload(INVALID_ARGUMENT, [f"{call.procedure}: {exc}"], None))
            return
        except ValueError:
            pass  # no signature available (some builtins): let the call itself decide
        tracked = _Call(caller, call.request, False)
        self._track(tracked)
        tracked.running = d = maybeDeferred(invoke, function, *args, **kwargs)
        d.addBoth(self._function_done, tracked)

        def returned(result: Any) -> None:
            answer = result_message(call.request, result)
            problem = payload_problem(answer.args, answer.kwargs)
            if problem is None:
                caller._send(answer)
                return
            # An app bug, answered like one: the caller learns why, the log says which procedure.
            log.warn(
                "procedure {procedure} returned a value not every WAMP serializer can carry: {problem}",
                procedure=call.procedure,
                problem=problem,
            )
            text = f"the result of {call.procedure} could not be delivered: {problem}"
            caller._send_error(call, ErrorPayload(INVALID_ARGUMENT, [text], None))

        d.addCallbacks(returned, lambda failure: self._function_failed(caller, call, failure))

    def _function_done(self, outcome: Any, call: _Call) -> Any:
        self._untrack(call)
        return outcome

    def _function_failed(self, caller: Session, call: message.Call, failure: Failure) -> None:
        if failure.check(CancelledError):
            caller._send_error(call, ErrorPayload(CANCELED, [f"call to {call.procedure} canceled"], None))
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
            text = f"the arguments of the error could not be delivered: {problem}"
            payload = ErrorPayload(payload.uri, [text], None)
        caller._send_error(call, payload)

    def serve_remote(
        self, caller: Any, call: message.Call, registration: Registration, done: Callable[[], Any]
    ) -> None:
        """Invoke a local client callee for a caller on another node; ``done`` runs when the call ends."""
        self._invoke(caller, call, registration, done)

    def _invoke(
        self,
        caller: Session,
        call: message.Call,
        registration: Registration,
        on_done: Callable[[], Any] | None = None,
    ) -> None:
        callee = registration.callee
        assert callee is not None
        ids = self._invocation_ids.setdefault(callee, itertools.count(1))
        request = next(ids)
        self._track(
            _Call(caller, call.request, bool(call.receive_progress), callee, request, on_done=on_done)
        )
        disclose = disclosed(call)
        callee._send(
            message.Invocation(
                request,
                registration.id,
                args=call.args,
                kwargs=call.kwargs,
                receive_progress=call.receive_progress or None,
                caller=caller.id if disclose else None,
                caller_authid=caller.authid if disclose else None,
                caller_authrole=caller.authrole if disclose else None,
                procedure=None,
            )
        )

    def yielded(self, callee: Session, msg: message.Yield, problem: str | None = None) -> None:
        """A callee's YIELD: forward it to the caller as a RESULT (progressive results keep the call open).

        ``problem`` says why the YIELD's payload cannot be passed on (see ``_payload.py``): then the call
        ends with ERROR ``wamp.error.invalid_argument`` for the caller, and a callee sending progressive
        results is interrupted.
        """
        call = self._by_callee.get(callee, {}).get(msg.request)
        if call is None:
            log.debug(
                "YIELD for unknown invocation {request} from session {session}",
                request=msg.request,
                session=callee.id,
            )
            return
        if not msg.progress:
            self._untrack(call)
        elif not call.receive_progress:
            return  # the caller did not ask for progressive results
        if problem is not None:
            if msg.progress:
                self._untrack(call)
                if _can_be_interrupted(callee):
                    callee._send(message.Interrupt(msg.request, mode=message.Cancel.KILLNOWAIT))
            text = f"the callee's result could not be delivered: {problem}"
            call.caller._send(
                message.Error(message.Call.MESSAGE_TYPE, call.request, INVALID_ARGUMENT, args=[text])
            )
            return
        call.caller._send(
            message.Result(call.request, args=msg.args, kwargs=msg.kwargs, progress=msg.progress or None)
        )

    def failed(self, callee: Session, msg: message.Error, problem: str | None = None) -> None:
        """A callee's ERROR for an INVOCATION: forward it to the caller. When its arguments cannot be
        passed on (``problem``, see ``_payload.py``), the caller gets the error URI with an explanation."""
        call = self._by_callee.get(callee, {}).get(msg.request)
        if call is None:
            return
        self._untrack(call)
        args, kwargs = msg.args, msg.kwargs
        if problem is not None:
            args, kwargs = [f"the arguments of the callee's error could not be delivered: {problem}"], None
        call.caller._send(
            message.Error(message.Call.MESSAGE_TYPE, call.request, msg.error, args=args, kwargs=kwargs)
        )

    def cancel(self, caller: Session, msg: message.Cancel) -> None:
        """A caller's CANCEL. ``skip`` answers the caller at once and leaves the callee alone;
        ``killnowait`` (the default) also INTERRUPTs the callee; ``kill`` INTERRUPTs it and waits for its
        answer. Callees that did not announce call canceling are never interrupted (``skip``).
        An app function's Deferred is cancelled.
        """
        call = self._by_caller.get(caller, {}).get(msg.request)
        if call is None:
            if self.cluster is not None:
                self.cluster.cancel(caller, msg)
            return  # already answered: nothing to cancel
        if call.running is not None:
            call.running.cancel()
            return
        assert call.callee is not None
        mode = msg.mode or message.Cancel.KILLNOWAIT
        if mode != message.Cancel.SKIP and _can_be_interrupted(call.callee):
            call.callee._send(message.Interrupt(call.invocation, mode=mode))
            if mode == message.Cancel.KILL:
                return  # the callee's ERROR (or RESULT) concludes the call
        self._untrack(call)
        caller._send(
            message.Error(
                message.Call.MESSAGE_TYPE,
                call.request,
                CANCELED,
                args=[f"call {call.request} canceled by the caller"],
            )
        )

    def session_lost(self, session: Session) -> None:
        """Drop a leaving session's registrations, fail the calls it was serving, forget its own calls."""
        for registration in session._registrations.values():
            self._remove(registration)
        session._registrations.clear()
        self._invocation_ids.pop(session, None)
        for call in list(self._by_callee.get(session, {}).values()):
            self._untrack(call)
            call.caller._send(
                message.Error(
                    message.Call.MESSAGE_TYPE,
                    call.request,
                    CANCELED,
                    args=[f"callee session {session.id} left before answering"],
                )
            )
        for call in list(self._by_caller.get(session, {}).values()):
            if call.callee is None:
                continue  # an app function finishes on its own; its answer goes nowhere
            self._untrack(call)
            if _can_be_interrupted(call.callee):
                call.callee._send(message.Interrupt(call.invocation, mode=message.Cancel.KILLNOWAIT))
        if self.cluster is not None:
            self.cluster.caller_left(session)


def _can_be_interrupted(callee: Session) -> bool:
    return callee._interruptible


def _pop_nested(index: dict[Session, dict[int, _Call]], session: Session, key: int) -> None:
    calls = index.get(session)
    if calls is not None:
        calls.pop(key, None)
        if not calls:
            del index[session]


def result_message(request: int, result: Any) -> message.Result:
    """The RESULT for an app function's return value: ``CallResult`` spreads, ``None`` is empty."""
    if isinstance(result, CallResult):
        return message.Result(request, args=list(result.results) or None, kwargs=result.kwresults or None)
    if result is None:
        return message.Result(request)
    return message.Result(request, args=[result])
