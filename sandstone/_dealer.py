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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

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

if TYPE_CHECKING:
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


@dataclass(slots=True)
class _Invocation:
    caller: Session
    call_request: int
    receive_progress: bool


class Dealer:
    """Registrations by URI and id, and the calls in flight towards client callees."""

    def __init__(self) -> None:
        self._by_uri: dict[str, Registration] = {}
        self._by_id: dict[int, Registration] = {}
        # calls in flight, per callee session: INVOCATION request id -> who waits for the result
        self._in_flight: dict[Session, dict[int, _Invocation]] = {}
        self._invocation_ids: dict[Session, itertools.count[int]] = {}

    # registrations

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
        del self._by_uri[registration.uri]
        del self._by_id[registration.id]

    def registration(self, uri: str) -> Registration | None:
        """The registration of a procedure URI, if any."""
        return self._by_uri.get(uri)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def calls_in_flight(self) -> int:
        """Number of INVOCATIONs sent to client callees and not answered yet."""
        return sum(len(calls) for calls in self._in_flight.values())

    # calls

    def call(self, caller: Session, call: message.Call) -> None:
        """Route a CALL to its callee; the caller eventually gets a RESULT or an ERROR."""
        registration = self._by_uri.get(call.procedure)
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
        d = maybeDeferred(_run, function, args, kwargs)
        d.addCallbacks(
            lambda result: caller._send_result(call.request, result),
            lambda failure: self._function_failed(caller, call, failure),
        )

    def _function_failed(self, caller: Session, call: message.Call, failure: Failure) -> None:
        payload = error_payload(failure)
        if payload.uri.startswith("wamp.error.runtime_error"):
            log.failure("procedure {procedure} failed", failure, procedure=call.procedure)
        caller._send_error(call, payload)

    def _invoke(self, caller: Session, call: message.Call, registration: Registration) -> None:
        callee = registration.callee
        assert callee is not None
        ids = self._invocation_ids.setdefault(callee, itertools.count(1))
        request = next(ids)
        self._in_flight.setdefault(callee, {})[request] = _Invocation(
            caller, call.request, bool(call.receive_progress)
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

    def yielded(self, callee: Session, msg: message.Yield) -> None:
        """A callee's YIELD: forward it to the caller as a RESULT (progressive results kept open)."""
        calls = self._in_flight.get(callee, {})
        invocation = calls.get(msg.request) if msg.progress else calls.pop(msg.request, None)
        if invocation is None:
            log.debug(
                "YIELD for unknown invocation {request} from session {session}",
                request=msg.request,
                session=callee.id,
            )
            return
        if msg.progress and not invocation.receive_progress:
            return  # the caller did not ask for progressive results
        invocation.caller._send(
            message.Result(
                invocation.call_request, args=msg.args, kwargs=msg.kwargs, progress=msg.progress or None
            )
        )

    def failed(self, callee: Session, msg: message.Error) -> None:
        """A callee's ERROR for an INVOCATION: forward it to the caller."""
        invocation = self._in_flight.get(callee, {}).pop(msg.request, None)
        if invocation is None:
            return
        invocation.caller._send(
            message.Error(
                message.Call.MESSAGE_TYPE,
                invocation.call_request,
                msg.error,
                args=msg.args,
                kwargs=msg.kwargs,
            )
        )

    def session_lost(self, session: Session) -> None:
        """Drop a leaving session's registrations and fail the calls it was serving."""
        for registration in session._registrations.values():
            self._remove(registration)
        session._registrations.clear()
        self._invocation_ids.pop(session, None)
        for invocation in self._in_flight.pop(session, {}).values():
            invocation.caller._send(
                message.Error(
                    message.Call.MESSAGE_TYPE,
                    invocation.call_request,
                    CANCELED,
                    args=[f"callee session {session.id} left before answering"],
                )
            )


def _run(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    result = function(*args, **kwargs)
    if inspect.isawaitable(result) and not isinstance(result, Deferred):
        return Deferred.fromCoroutine(result)  # type: ignore[arg-type]
    return result


def result_message(request: int, result: Any) -> message.Result:
    """The RESULT for an app function's return value: ``CallResult`` spreads, ``None`` is empty."""
    if isinstance(result, CallResult):
        return message.Result(request, args=list(result.results) or None, kwargs=result.kwresults or None)
    if result is None:
        return message.Result(request)
    return message.Result(request, args=[result])
