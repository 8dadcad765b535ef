"""The broker: subscriptions of sessions to topics, and delivery of publications as EVENTs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message

from ._errors import NO_SUCH_SUBSCRIPTION, WampError
from ._publication import Publication
from ._subscriptions import EXACT, Subscription, SubscriptionTable

if TYPE_CHECKING:
    from ._session import Session


class Broker:
    """Keeps the subscription table and turns a publication into EVENTs for the sessions it admits.

    One EVENT message is built per matching subscription and shared by all of its sessions; the
    transports serialize it through shared serializers, so each EVENT is serialized once per serializer.
    """

    def __init__(self) -> None:
        self.subscriptions = SubscriptionTable()
        # ``gate(session, uri) -> bool``: may a pattern subscriber receive an event of this concrete URI?
        # Set by the router's authorization when something may refuse (defense in depth).
        self.gate: Callable[[Session, str], bool] | None = None

    def subscribe(self, session: Session, uri: str, match: str) -> tuple[Subscription, bool]:
        """Add a session to the (uri, match) subscription; True when it was not subscribed yet."""
        subscription, added = self.subscriptions.add(session, uri, match)
        if added:
            session._subscriptions[subscription.id] = subscription
        return subscription, added

    def unsubscribe(self, session: Session, subscription_id: int) -> Subscription:
        """Remove a session from one of its subscriptions, or raise ``no_such_subscription``."""
        subscription = session._subscriptions.pop(subscription_id, None)
        if subscription is None:
            raise WampError(NO_SUCH_SUBSCRIPTION, f"session has no subscription {subscription_id}")
        self.subscriptions.remove(session, subscription)
        return subscription

    def unsubscribe_all(self, session: Session) -> list[Subscription]:
        """Remove every subscription of a leaving session; returns them, in subscription order."""
        subscriptions = list(session._subscriptions.values())
        session._subscriptions.clear()
        for subscription in subscriptions:
            self.subscriptions.remove(session, subscription)
        return subscriptions

    def deliver(self, publication: Publication) -> int:
        """Send a publication to every admitted session of every matching subscription; returns the count."""
        delivered = 0
        gate = self.gate
        simple = publication.only_excludes_publisher
        skipped = publication.publisher if publication.exclude_me else None
        for subscription in self.subscriptions.match(publication.topic):
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
                session._send(event)
                delivered += 1
        return delivered

    def send_to(
        self, session: Session, topic: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> int:
        """One EVENT to one session, on its exact subscription to ``topic``; returns the publication id."""
        subscription = self.subscriptions.exact(topic)
        if subscription is None or session not in subscription.sessions:
            raise ValueError(f"session {session.id} is not subscribed to topic {topic!r}")
        publication = Publication(topic, args, kwargs)
        session._send(_event(subscription, publication))
        return publication.id


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
