"""The broker: subscriptions of sessions to topics, and delivery of publications as EVENTs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message
from twisted.logger import Logger

from ._authorization import is_reserved
from ._errors import NO_SUCH_SUBSCRIPTION, WampError
from ._publication import Publication
from ._subscriptions import EXACT, Subscription, SubscriptionTable

if TYPE_CHECKING:
    from ._session import Session

log = Logger()


class Broker:
    """Keeps the subscription table and turns a publication into EVENTs for the sessions it admits.

    One EVENT message is built per matching subscription and shared by all of its sessions; the
    transports serialize it through shared serializers, so each EVENT is serialized once per serializer.
    The router's limits come in as arguments: how many subscriptions a session may hold (``may_subscribe``)
    and how many EVENTs one publication may produce for one session (``deliver``).
    """

    def __init__(self, stats: Counter[str] | None = None) -> None:
        self.subscriptions = SubscriptionTable()
        # Subscriptions to the router's meta topics (``wamp.`` URIs and patterns), kept apart: meta events
        # reach only them (not an app's ``..`` wildcard), and publications never look at them.
        self.meta = SubscriptionTable()
        self._by_session: dict[Session, dict[int, Subscription]] = {}  # each session's, by id
        # What the limits refused (``events_capped``): the router's counters when it gives them.
        self.stats: Counter[str] = stats if stats is not None else Counter()
        # ``gate(session, uri) -> bool``: may a pattern subscriber receive an event of this concrete URI?
        # Set by the router's authorization when something may refuse (defense in depth).
        self.gate: Callable[[Session, str], bool] | None = None

    def may_subscribe(self, session: Session, uri: str, match: str, limit: int) -> bool:
        """False when a session holding ``limit`` subscriptions (0: no limit) asks for a new one; asking
        again for one it holds is always fine (it gets the same subscription id)."""
        if limit <= 0 or len(self._by_session.get(session, ())) < limit:
            return True
        subscription = self.table(uri).find(uri, match)
        return subscription is not None and session in subscription.sessions

    def table(self, uri: str) -> SubscriptionTable:
        """The table holding the subscriptions to ``uri``: ``meta`` for the ``wamp.`` namespace."""
        return self.meta if is_reserved(uri) else self.subscriptions

    def subscribe(self, session: Session, uri: str, match: str) -> tuple[Subscription, bool]:
        """Add a session to the (uri, match) subscription; True when it was not subscribed yet."""
        subscription, added = self.table(uri).add(session, uri, match)
        if added:
            self._by_session.setdefault(session, {})[subscription.id] = subscription
        return subscription, added

    def unsubscribe(self, session: Session, subscription_id: int) -> Subscription:
        """Remove a session from one of its subscriptions, or raise ``no_such_subscription``."""
        held = self._by_session.get(session)
        subscription = None if held is None else held.pop(subscription_id, None)
        if subscription is None:
            raise WampError(NO_SUCH_SUBSCRIPTION, f"session has no subscription {subscription_id}")
        if not held:
            del self._by_session[session]
        self.table(subscription.uri).remove(session, subscription)
        return subscription

    def unsubscribe_all(self, session: Session) -> list[Subscription]:
        """Remove every subscription of a leaving session; returns them, in subscription order."""
        subscriptions = list(self._by_session.pop(session, {}).values())
        for subscription in subscriptions:
            self.table(subscription.uri).remove(session, subscription)
        return subscriptions

    def subscriptions_of(self, session: Session) -> list[Subscription]:
        """The subscriptions a session holds, in the order it made them."""
        return list(self._by_session.get(session, {}).values())

    def deliver_meta(self, publication: Publication, may_see: Callable[[Session], bool] | None = None) -> int:
        """Send a meta event to the subscribers of meta topics it matches (and ``may_see`` admits: what a
        session may learn of); returns the count. Pattern subscribers are checked as for any event."""
        delivered = 0
        gate = self.gate
        topic = publication.topic
        for subscription in self.meta.match(topic):
            event = None
            check = None if subscription.match == EXACT else gate
            for session in subscription.sessions:
                if not publication.admits(session):
                    continue
                if check is not None and not check(session, topic):
                    continue
                if may_see is not None and not may_see(session):
                    continue
                if event is None:
                    event = _event(subscription, publication)
                session.send_event(event)
                delivered += 1
        return delivered

    def deliver(self, publication: Publication, max_events: int = 0) -> int:
        """Send a publication to every admitted session of every matching subscription; returns the count.

        A session gets one EVENT per matching subscription (as the spec says), but at most ``max_events``
        for one publication (0: no bound); the rest are skipped and counted in ``stats["events_capped"]``.
        """
        matched = self.subscriptions.match(publication.topic)
        if 0 < max_events < len(matched):  # only then can a session match more than max_events times
            return self._deliver_capped(publication, matched, max_events)
        delivered = 0
        gate = self.gate
        simple = publication.only_excludes_publisher
        skipped = publication.publisher if publication.exclude_me else None
        for subscription in matched:
            event = None
            check = None if subscription.match == EXACT else gate
            for session in subscription.sessions:
                if simple:
                    if session.id == skipped:
                        continue
                elif not publication.admits(session):
                    continue
                if check is not None and not check(session, publication.topic):
                    continue
                if event is None:
                    event = _event(subscription, publication)
                session.send_event(event)
                delivered += 1
        return delivered

    def _deliver_capped(self, publication: Publication, matched: list[Subscription], max_events: int) -> int:
        """``deliver`` when more subscriptions match than one session may get EVENTs for: the EVENTs of each
        session holding more than ``max_events`` subscriptions are counted (the others cannot reach it)."""
        delivered = 0
        gate = self.gate
        simple = publication.only_excludes_publisher
        skipped = publication.publisher if publication.exclude_me else None
        topic = publication.topic
        sent: dict[Session, int] = {}
        for subscription in matched:
            event = None
            check = None if subscription.match == EXACT else gate
            for session in subscription.sessions:
                if simple:
                    if session.id == skipped:
                        continue
                elif not publication.admits(session):
                    continue
                # -1: not counted, the session holds too few subscriptions to reach the cap
                held = self._by_session.get(session)
                count = sent.get(session, 0) if held is not None and len(held) > max_events else -1
                if count >= max_events:
                    sent[session] = count + 1  # counts the skipped ones too
                    continue
                if check is not None and not check(session, topic):
                    continue
                if count >= 0:
                    sent[session] = count + 1
                if event is None:
                    event = _event(subscription, publication)
                session.send_event(event)
                delivered += 1
        for session, count in sent.items():
            if count > max_events:
                self._capped(session, topic, count, max_events)
        return delivered

    def _capped(self, session: Session, topic: str, due: int, max_events: int) -> None:
        """Count a session's skipped EVENTs; log the first time the cap hits a session (not every time)."""
        self.stats["events_capped"] += due - max_events
        if session.note_limit("max_events_per_publication"):
            log.info(
                "session {session_id} matched {due} subscriptions of one publication to {topic}: sent "
                "{max_events} EVENTs (max_events_per_publication), skipped the rest",
                session_id=session.id,
                due=due,
                topic=topic,
                max_events=max_events,
            )

    def send_to(
        self, session: Session, topic: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> int:
        """One EVENT to one session, on its exact subscription to ``topic``; returns the publication id."""
        subscription = self.subscriptions.exact(topic)
        if subscription is None or session not in subscription.sessions:
            raise ValueError(f"session {session.id} is not subscribed to topic {topic!r}")
        publication = Publication(topic, args, kwargs)
        session.send_message(_event(subscription, publication))
        return publication.id

    def send_retained(self, session: Session, subscription: Subscription, retained: list[Publication]) -> int:
        """The retained events of the topics ``subscription`` covers, to one new subscriber, each as an EVENT
        marked ``retained``, where its delivery rules (and, for a pattern, the gate) admit the session;
        returns how many were sent."""
        gate = None if subscription.match == EXACT else self.gate
        sent = 0
        for publication in retained:
            if not publication.admits(session):
                continue
            if gate is not None and not gate(session, publication.topic):
                continue
            event = _event(subscription, publication)
            event.retained = True
            session.send_message(event)
            sent += 1
        return sent


def _event(subscription: Subscription, publication: Publication) -> message.Event:
    disclose = publication.disclose_me and publication.publisher is not None
    return message.Event(
        subscription.id,
        publication.id,
        args=publication.args,
        kwargs=publication.kwargs,
        topic=None if subscription.match == EXACT else publication.topic,
        publisher=publication.publisher if disclose else None,
        publisher_authid=publication.publisher_authid if disclose else None,
        publisher_authrole=publication.publisher_authrole if disclose else None,
    )
