"""WAMP error URIs and the one place where Python exceptions become WAMP errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.python.failure import Failure

# Spec-defined URIs (WAMP v2 basic and advanced profiles).
INVALID_URI = "wamp.error.invalid_uri"
NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
PROCEDURE_ALREADY_EXISTS = "wamp.error.procedure_already_exists"
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
NO_SUCH_SESSION = "wamp.error.no_such_session"
INVALID_ARGUMENT = "wamp.error.invalid_argument"
NO_SUCH_REALM = "wamp.error.no_such_realm"
NO_AUTH_METHOD = "wamp.error.no_auth_method"
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
NOT_AUTHORIZED = "wamp.error.not_authorized"
AUTHORIZATION_FAILED = "wamp.error.authorization_failed"
AUTHENTICATION_DENIED = "wamp.error.authentication_denied"
CANCELED = "wamp.error.canceled"
RUNTIME_ERROR = "wamp.error.runtime_error"
GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"

# sandstone's own URIs, for conditions the spec does not name.
NO_SUCH_TOPIC = "sandstone.error.no_such_topic"
RATE_LIMITED = "sandstone.error.rate_limited"
HELLO_TIMEOUT = "sandstone.error.hello_timeout"
PAYLOAD_TOO_LARGE = "sandstone.error.payload_too_large"
LIMIT_EXCEEDED = "sandstone.error.limit_exceeded"
CLUSTER_UNAVAILABLE = "sandstone.error.cluster_unavailable"  # Redis cannot answer now
LOGGED_OUT = "sandstone.close.logged_out"


class WampError(Exception):
    """A request failed with a WAMP error URI; the router answers it with an ERROR message."""

    def __init__(self, uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(uri, *args)
        self.uri = uri
        self.args_list = list(args)
        self.kwargs = kwargs


@dataclass(frozen=True)
class ErrorPayload:
    """What goes into an ERROR message: error URI, positional and keyword arguments."""

    uri: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None


def error_payload(failure: Failure) -> ErrorPayload:
    """Map a failure of app code (procedure, topic hook) to the ERROR a client sees.

    ``ApplicationError`` keeps its URI and arguments; ``WampError`` too; anything else becomes
    ``wamp.error.runtime_error`` with the exception's text, so a client learns what went wrong.
    """
    exc = failure.value
    if isinstance(exc, ApplicationError):
        return ErrorPayload(exc.error, list(exc.args) or None, exc.kwargs or None)
    if isinstance(exc, WampError):
        return ErrorPayload(exc.uri, exc.args_list or None, exc.kwargs or None)
    message = f"{type(exc).__name__}: {exc}"
    return ErrorPayload(RUNTIME_ERROR, [message], None)
