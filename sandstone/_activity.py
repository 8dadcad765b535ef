"""What a router's sessions did, counted where it happens, for the metrics to read at scrape time.

Each count costs a plain integer increment on a path that runs anyway; ``_metrics.py`` turns them into
Prometheus families only when scraped. Nothing here is counted per EVENT sent: a broadcast adds the number
of EVENTs it produced, once (``Router.publish``), and the transport counts the other messages it
serializes (each is serialized once, for its one receiver).
"""

from __future__ import annotations

from collections import Counter

from ._errors import (
    AUTHORIZATION_FAILED,
    CANCELED,
    NO_SUCH_PROCEDURE,
    NOT_AUTHORIZED,
    RATE_LIMITED,
)

#: At most this many authroles get a label of their own in the open-sessions counts; the sessions of any
#: other role count as ``OTHER_ROLE`` (an app minting a role per user must not blow up the metrics).
MAX_AUTHROLES = 50
OTHER_ROLE = "other"

#: The outcomes a call is counted under (``Activity.calls``), by the error URI its caller got.
_CALL_OUTCOMES = {
    CANCELED: "canceled",
    NO_SUCH_PROCEDURE: "no_such_procedure",
    NOT_AUTHORIZED: "not_authorized",
    AUTHORIZATION_FAILED: "not_authorized",
    RATE_LIMITED: "rate_limited",
}
CALL_OUTCOMES = ("result", "error", *dict.fromkeys(_CALL_OUTCOMES.values()))


class Activity:
    """A router's counts of what happened (``Router.activity``); ``_metrics.py`` reads them.

    - ``received``: messages received from clients, by message class; ``sent``: messages other than EVENT
      serialized for a client, by class (EVENTs are ``events``).
    - ``sessions``: sessions open now, by (WebSocket subprotocol, authrole label); ``sessions_opened`` and
      ``sessions_closed`` since start.
    - ``publications``: broadcasts delivered from this node (clients', topics', the app's);
      ``remote_publications``: those another node announced, delivered here; ``events``: EVENTs handed to
      sessions for all of them.
    - ``calls``: calls answered (the caller got its final RESULT or an ERROR), by outcome (``CALL_OUTCOMES``).
    - ``auth_failures``: opening handshakes refused, by ABORT reason.
    """

    def __init__(self) -> None:
        self.received: Counter[type] = Counter()
        self.sent: Counter[type] = Counter()
        self.sessions: Counter[tuple[str, str]] = Counter()
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.publications = 0
        self.remote_publications = 0
        self.events = 0
        self.calls: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self._roles: set[str] = set()

    def joined(self, protocol: str, authrole: str | None) -> None:
        """A session was welcomed."""
        self.sessions_opened += 1
        self.sessions[protocol, self._role_label(authrole)] += 1

    def left(self, protocol: str, authrole: str | None) -> None:
        """A welcomed session ended."""
        self.sessions_closed += 1
        key = (protocol, self._role_label(authrole))
        left = self.sessions[key] - 1
        if left > 0:
            self.sessions[key] = left
        else:
            del self.sessions[key]

    def _role_label(self, authrole: str | None) -> str:
        """The label of an authrole: itself, unless ``MAX_AUTHROLES`` others came first. A role keeps the
        label it got (roles are only ever added), so a session leaves under the label it joined with."""
        role = authrole or ""
        roles = self._roles
        if role in roles:
            return role
        if len(roles) < MAX_AUTHROLES:
            roles.add(role)
            return role
        return OTHER_ROLE

    def call_ended(self, error: str | None) -> None:
        """A caller got the answer to its call: a RESULT (``error`` is ``None``) or an ERROR with that URI."""
        self.calls["result" if error is None else _CALL_OUTCOMES.get(error, "error")] += 1
