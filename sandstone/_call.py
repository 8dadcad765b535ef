"""A call to a procedure, and who is at either end of it: the caller waiting for the answer, the callee
serving it. The dealer and the cluster speak these, not WAMP messages: a caller may be a client session or
a caller on another node, answered through the bus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autobahn.wamp.types import CallResult

if TYPE_CHECKING:
    from ._registrations import Registration

__all__ = ["Call", "Callee", "Caller", "result_arguments"]


class Caller(Protocol):
    """Who waits for a call's answer: its identity (disclosed to the callee when the caller asks) and
    where the answer goes. ``request`` is the caller's own id for the call."""

    @property
    def id(self) -> int: ...

    @property
    def authid(self) -> str | None: ...

    @property
    def authrole(self) -> str | None: ...

    def send_result(
        self,
        request: int,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        """A result of the call (a progressive one when ``progress``: more follow)."""
        ...

    def send_error(
        self, request: int, error: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> None:
        """The call ended with the error URI ``error``."""
        ...


class Callee(Protocol):
    """A client session serving a registration (here, or on another node through the bus): it gets
    INVOCATIONs, and INTERRUPTs if it can take them."""

    @property
    def id(self) -> int: ...

    @property
    def interruptible(self) -> bool:
        """Whether the callee announced call canceling (only then is it sent INTERRUPTs)."""
        ...

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        """Ask the callee to serve ``call`` as its INVOCATION ``invocation`` of ``registration`` (which may
        be a pattern the called URI matched)."""
        ...

    def send_interrupt(self, invocation: int, mode: str) -> None:
        """Ask the callee to stop serving its INVOCATION ``invocation``."""
        ...


@dataclass(slots=True, eq=False)
class Call:
    """One call: who called (``caller``, and its ``request`` id for it), what, and how."""

    caller: Caller
    request: int
    procedure: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    receive_progress: bool = False  # the caller takes progressive results
    disclose_me: bool = False  # the caller asked for its identity to be disclosed to the callee
    timeout: float = 0.0  # seconds after which the dealer cancels the call (0: never)


def result_arguments(result: Any) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The RESULT arguments of a procedure's return value: ``CallResult`` spreads, ``None`` is empty."""
    if isinstance(result, CallResult):
        return list(result.results) or None, result.kwresults or None
    if result is None:
        return None, None
    return [result], None
