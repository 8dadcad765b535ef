"""The router: one realm's sessions, its broker and dealer, and the app's topics behind them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from autobahn.util import rid
from autobahn.wamp import message
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ._activity import Activity
from ._auth import Authentication
from ._authorization import Authorization, is_reserved, refuse_reserved
from ._broker import Broker
from ._call import Call, Callee, Caller
from ._cluster import (
    Cluster,
    LocalCluster,
    LostSubscription,
    Member,
    SessionInfo,
    publication_id_for,
)
from ._dealer import Dealer, Registration
from ._dispatcher import current_cause
from ._errors import (
    INVALID_URI,
    LIMIT_EXCEEDED,
    NO_SUCH_PROCEDURE,
    NO_SUCH_TOPIC,
    PROCEDURE_ALREADY_EXISTS,
    WampError,
)
from ._history import HistoryRules, recordable
from ._limits import Limits
from ._login import MemorySessionStore
from ._meta import (
    META_TOPICS,
    REGISTRATION_ON_CREATE,
    REGISTRATION_ON_DELETE,
    REGISTRATION_ON_REGISTER,
    REGISTRATION_ON_UNREGISTER,
    SESSION_ON_JOIN,
    SESSION_ON_LEAVE,
    SUBSCRIPTION_ON_CREATE,
    SUBSCRIPTION_ON_DELETE,
    SUBSCRIPTION_ON_SUBSCRIBE,
    SUBSCRIPTION_ON_UNSUBSCRIBE,
    member,
    meta_procedures,
    registration_details,
    session_info,
    subscription_info,
)
from ._publication import Publication
from ._ratelimit import SessionRates
from ._registrations import SINGLE
from ._session import Session, Transport
from ._store import EventStore, MemoryStore, StoredEvent
from ._subscriptions import EXACT, Subscription, subscription_id_for

if TYPE_CHECKING:
    from ._topic import TopicHost

log = Logger()


class Router:
    """Routes one realm: sessions join and leave here; every broadcast goes through ``publish``.

    ``publish`` is the single door through which publications reach subscribers, whoever made
    them (a client, a topic, the app). ``cluster`` is how the other nodes are reached (``LocalCluster``:
    there are none); the router calls nothing else of it than the ``Cluster`` interface. ``reactor`` runs
    the timers of calls with a timeout (the global reactor unless given).
    """

    def __init__(
        self,
        realm: str = "realm1",
        *,
        topics: TopicHost | None = None,
        open_uris: bool = False,
        strict_uris: bool = False,
        anonymous: bool = False,
        cluster: Cluster | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        self.realm = realm
        self.auth = Authentication(MemorySessionStore(), anonymous=anonymous)
        self.open_uris = open_uris
        self.strict_uris = strict_uris
        self.stats: Counter[str] = Counter()  # what the limits refused: rate_limited, oversize_skipped...
        self.activity = Activity()  # what happened: sessions, messages, publications, calls (for the metrics)
        self.broker = Broker(self.stats)
        self.dealer = Dealer(reactor)
        self.sessions: dict[int, Session] = {}
        self._topics = topics
        self._cluster: Cluster = cluster if cluster is not None else LocalCluster()
        self.limits = Limits()  # the app's limits (rates here; sizes and buffers on the transport)
        self.clock = time.monotonic  # seconds, for the rate limits (tests inject a fake clock)
        self.wall_clock = time.time  # when a retained event or a history entry was taken in
        self.authorization = Authorization(self, topics)
        self.dealer.meta.update(meta_procedures(self))
        self.history_rules = HistoryRules(topics)  # which topics keep their last events
        self._memory_store = MemoryStore()  # retained events and history while no cluster keeps them
        self._meta_listening = False  # whether this node has subscribers of meta topics (told to the cluster)
        # Called once a publication was delivered to the local subscribers (and handed to the bus): see
        # on_delivered.
        self.delivered: Callable[[], None] = _nothing

    @property
    def topics(self) -> TopicHost | None:
        """The app's topics: the declared patterns and the live instances."""
        return self._topics

    @property
    def cluster(self) -> Cluster:
        """The other nodes, as this router reaches them (``LocalCluster`` when it is on its own)."""
        return self._cluster

    def use_cluster(self, cluster: Cluster | None) -> None:
        """Reach the other nodes through ``cluster`` from now on (``None``: this node is on its own). A bus
        does it while it runs (``RedisBus.startService`` / ``stopService``)."""
        self._cluster = cluster if cluster is not None else LocalCluster()

    @property
    def store(self) -> EventStore:
        """Where retained events and event history are kept: the cluster's store (Redis), else this
        process's memory."""
        return self._cluster.store or self._memory_store

    def on_delivered(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once each publication was delivered to the local subscribers (and handed to the bus):
        a WebSocket factory, which may have written that broadcast straight away, batches the rest of the
        reactor turn (see ``_transport._TurnWriter``). Every hook added is called, in order."""
        previous = self.delivered
        if previous is _nothing:
            self.delivered = hook
            return

        def both() -> None:
            previous()
            hook()

        self.delivered = both

    # sessions

    def attach(self, transport: Transport, rates: SessionRates | None = None) -> Session:
        """A session waiting for its HELLO on a connection; ``rates`` are the connection's rate buckets,
        shared by every session it carries in turn (fresh ones when not given)."""
        return Session(self, transport, rates)

    def rates(self) -> SessionRates:
        """Fresh rate buckets (PUBLISH, CALL, SUBSCRIBE) for a new connection, from the app's limits."""
        return SessionRates(self.limits, self.clock)

    def join(self, session: Session) -> None:
        """Give a welcomed session its id and make it reachable."""
        session_id = session.id or rid()  # the id announced during authentication, if any
        while session_id in self.sessions:
            session_id = rid()
        session.id = session_id
        self.sessions[session_id] = session
        self.activity.joined(session.subprotocol, session.authrole)
        self._cluster.joined(session)
        if self._meta_wanted():
            self._meta_event(SESSION_ON_JOIN, [session_info(session).details()])

    def leave(self, session: Session) -> None:
        """Remove every trace of a session: subscriptions (firing topic hooks), registrations, calls."""
        joined = self.sessions.pop(session.id, None) is not None
        if joined:
            self.activity.left(session.subprotocol, session.authrole)
        self.authorization.forget(session)
        told = [self._unsubscribed(session, s) for s in self.broker.unsubscribe_all(session)]
        cluster = self._cluster
        for registration in self.dealer.session_lost(session):
            cluster.released(registration, session)
            if self._meta_listening:
                self._callees_left(registration, [session])
        if joined:
            cluster.left(session)
            # after the on_unsubscribe events, which may wait for the cluster's answer
            gone = [session.id, session.authid, session.authrole]
            gatherResults(told).addBoth(lambda _: self._meta_event(SESSION_ON_LEAVE, gone))

    @property
    def anonymous(self) -> bool:
        """Whether sessions may join without credentials."""
        return self.auth.anonymous

    @anonymous.setter
    def anonymous(self, allowed: bool) -> None:
        self.auth.anonymous = allowed

    # pub/sub

    def subscribe(self, session: Session, msg: message.Subscribe) -> Deferred[None] | None:
        """Subscribe a session (after checking a topic is declared for exact URIs, and authorization) and
        answer SUBSCRIBED; a Deferred when authorization answers asynchronously.

        A new exact subscription to a declared topic gets its topic instance before SUBSCRIBED, so that
        a failing topic factory is answered with an ERROR and leaves no subscription behind.
        """
        match = msg.match or EXACT
        if is_reserved(msg.topic):
            if match == EXACT and msg.topic not in META_TOPICS:
                raise WampError(
                    INVALID_URI,
                    f"cannot subscribe to {msg.topic!r}: the 'wamp.' namespace is reserved for the router, "
                    f"whose meta topics are {', '.join(sorted(META_TOPICS))}",
                )
        elif match == EXACT and not self._accepts(msg.topic):
            raise WampError(NO_SUCH_TOPIC, f"no topic is declared for URI {msg.topic!r}")
        self._check_subscription_room(session, msg.topic, match)  # before authorization does any work
        checks, cleanup = self.authorization.checks(session, "subscribe", msg.topic, match)
        return self.authorization.gate(
            session, checks, "subscribe to", msg.topic, lambda: self._subscribe(session, msg, match), cleanup
        )

    def _subscribe(self, session: Session, msg: message.Subscribe, match: str) -> None:
        # Again: while an asynchronous authorization answered, other SUBSCRIBEs of the session got in.
        self._check_subscription_room(session, msg.topic, match)
        subscription, added = self.broker.subscribe(session, msg.topic, match)
        # On open URIs an exact subscription may have no declared topic: then there is no hook to run.
        topics = self._topics if added and match == EXACT and self._declared(msg.topic) else None
        if topics is not None:
            try:
                topics.instance(msg.topic)
            except WampError:
                self.broker.unsubscribe(session, subscription.id)
                raise
        session.send_message(message.Subscribed(msg.request, subscription.id))
        if msg.get_retained:
            self._send_retained(session, subscription)
        if topics is not None:
            topics.subscribed(session, msg.topic)
        if added:
            self._track_subscribed(session, subscription)

    def _check_subscription_room(self, session: Session, uri: str, match: str) -> None:
        """Refuse a new subscription beyond ``max_subscriptions_per_session`` with ``limit_exceeded``."""
        limit = self.limits.max_subscriptions_per_session
        if not self.broker.may_subscribe(session, uri, match, limit):
            self._refuse_beyond_limit(session, "subscriptions", "max_subscriptions_per_session", limit)

    def _check_registration_room(self, session: Session) -> None:
        """Refuse a registration beyond ``max_registrations_per_session`` with ``limit_exceeded``."""
        limit = self.limits.max_registrations_per_session
        if not self.dealer.may_register(session, limit):
            self._refuse_beyond_limit(session, "registrations", "max_registrations_per_session", limit)

    def _refuse_beyond_limit(self, session: Session, what: str, field: str, limit: int) -> NoReturn:
        """Count the refusal (``stats["<what>_refused"]``), log it once per session, raise the ERROR."""
        self.stats[f"{what}_refused"] += 1
        if session.note_limit(field):
            log.info(
                "session {session_id} (authid {authid}) holds {limit} {what} ({field}): further ones are "
                "refused with limit_exceeded",
                session_id=session.id,
                authid=session.authid,
                limit=limit,
                what=what,
                field=field,
            )
        raise WampError(
            LIMIT_EXCEEDED, f"a session may hold at most {limit} {what} ({field}); release some first"
        )

    def unsubscribe(self, session: Session, msg: message.Unsubscribe) -> None:
        """Unsubscribe a session from one subscription, answer UNSUBSCRIBED, then run topic hooks."""
        subscription = self.broker.unsubscribe(session, msg.subscription)
        session.send_message(message.Unsubscribed(msg.request))
        self._unsubscribed(session, subscription)

    def _unsubscribed(self, session: Session, subscription: Subscription) -> Deferred[None]:
        """Run the topic hooks, tell the cluster; fires once the meta events are published."""
        if subscription.match == EXACT and self._topics is not None:
            self._topics.unsubscribed(session, subscription.uri)
        if is_reserved(subscription.uri):
            self._meta_listeners_changed()
            return succeed(None)
        d = self._cluster.unsubscribed(subscription, session, not subscription.sessions)
        told = d.addCallback(self._announce_unsubscribed, session.id, subscription)
        return told.addErrback(_log_failure, "wamp.subscription.on_unsubscribe")

    # presence and the meta API

    def _track_subscribed(self, session: Session, subscription: Subscription) -> None:
        if is_reserved(subscription.uri):
            self._meta_listeners_changed()
            return
        d = self._cluster.subscribed(subscription, session, len(subscription.sessions) == 1)
        d.addCallback(self._announce_subscribed, session.id, subscription)
        d.addErrback(_log_failure, "wamp.subscription.on_subscribe")

    def _announce_subscribed(self, created: bool, session_id: int, subscription: Subscription) -> None:
        about = (subscription.uri, subscription.match)
        if created and self._meta_wanted():
            details = subscription_info(subscription).details()
            self._meta_event(SUBSCRIPTION_ON_CREATE, [session_id, details], about)
        self._meta_event(SUBSCRIPTION_ON_SUBSCRIBE, [session_id, subscription.id], about)

    def _announce_unsubscribed(self, deleted: bool, session_id: int, subscription: Subscription) -> None:
        about = (subscription.uri, subscription.match)
        self._meta_event(SUBSCRIPTION_ON_UNSUBSCRIBE, [session_id, subscription.id], about)
        if deleted:
            self._meta_event(SUBSCRIPTION_ON_DELETE, [session_id, subscription.id], about)

    def _meta_wanted(self) -> bool:
        return self._meta_listening or self._cluster.wants_meta

    @property
    def meta_listening(self) -> bool:
        """Whether sessions of this node subscribe to meta topics (``wamp.session.on_join``...)."""
        return self._meta_listening

    def _meta_listeners_changed(self) -> None:
        listening = bool(self.broker.meta)
        if listening != self._meta_listening:
            self._meta_listening = listening
            self._cluster.meta_interest(listening)

    def _meta_event(self, topic: str, args: list[Any], about: tuple[str, str] | None = None) -> None:
        """Publish a meta event, if anyone in the cluster listens: to this node's meta subscribers, and
        through the cluster to the other nodes' ones."""
        cluster = self._cluster
        elsewhere = cluster.wants_meta
        if not elsewhere and not self._meta_listening:  # nobody listens: cheap, and nothing is built
            return
        publication = Publication(topic, args, source="router")
        self.deliver_meta(publication, about)
        if elsewhere:
            cluster.announce_meta(publication, about)

    def deliver_meta(self, publication: Publication, about: tuple[str, str] | None) -> int:
        """Deliver a meta event (of this node or another) to this node's subscribers of meta topics; one
        about a subscription (``about``: its URI and match policy) only to the sessions that may
        subscribe to it themselves. Returns how many EVENTs were sent."""
        if not self._meta_listening:
            return 0
        may_see = None
        if about is not None and self.broker.gate is not None:  # something may refuse a subscription
            uri, match = about
            allows = self.authorization.allows_delivery

            def may_see(session: Session) -> bool:
                return allows(session, uri, match)

        delivered = self.broker.deliver_meta(publication, may_see)
        self.activity.events += delivered
        self.delivered()
        return delivered

    def subscribers(self, subscription_id: int) -> Deferred[list[Member]]:
        """Every subscriber of a subscription in the cluster (this node's first)."""
        subscription = self.broker.subscriptions.get(subscription_id)
        local = [] if subscription is None else [member(s) for s in subscription.sessions]
        d = self._cluster.subscribers(subscription_id)
        return d.addCallback(lambda remote: local + remote)

    def subscriber_count(self, subscription_id: int) -> Deferred[int]:
        """How many subscribers a subscription has in the cluster."""
        subscription = self.broker.subscriptions.get(subscription_id)
        local = 0 if subscription is None else len(subscription.sessions)
        return self._cluster.subscriber_count(subscription_id).addCallback(lambda remote: local + remote)

    def presence(self, uri: str) -> Deferred[list[Member]]:
        """Every exact subscriber of a concrete topic URI in the cluster (this node's first)."""
        return self.subscribers(subscription_id_for(uri, EXACT))

    def presence_count(self, uri: str) -> Deferred[int]:
        """How many exact subscribers a concrete topic URI has in the cluster."""
        return self.subscriber_count(subscription_id_for(uri, EXACT))

    def node_lost(self, sessions: list[SessionInfo], subscriptions: list[LostSubscription]) -> None:
        """Another node died and this one removed what it held from the cluster's state: its members
        leave their topics (``on_leave`` runs here, once in the cluster) and the meta events are
        published, as if each of its sessions had left."""
        topics = self._topics
        for lost in subscriptions:
            info = lost.subscription
            about = (info.uri, info.match)
            if info.match == EXACT and topics is not None:
                topics.left_elsewhere(info.uri, lost.members)
            for gone in lost.members:
                self._meta_event(SUBSCRIPTION_ON_UNSUBSCRIBE, [gone.session, info.id], about)
            if lost.deleted and lost.members:
                self._meta_event(SUBSCRIPTION_ON_DELETE, [lost.members[-1].session, info.id], about)
        for session in sessions:
            self._meta_event(SESSION_ON_LEAVE, [session.session, session.authid, session.authrole])

    def rejoined(self, subscribed: list[tuple[Subscription, Session, Deferred[bool]]]) -> None:
        """The other nodes had taken this node for dead and told its members' leaving; its state is back in
        the cluster: its sessions and subscribers join again, once in the cluster (``wamp.session.on_join``,
        ``on_subscribe`` meta events, the topics' ``on_join``). ``subscribed`` gives each subscriber with
        whether its subscription was made anew in the cluster by it (fires when the cluster answered)."""
        if self._meta_wanted():
            for session in list(self.sessions.values()):
                self._meta_event(SESSION_ON_JOIN, [session_info(session).details()])
        topics = self._topics
        for subscription, session, created in subscribed:
            if session not in subscription.sessions:  # gone meanwhile: its leaving was told already
                created.addErrback(lambda _: None)
                continue
            if subscription.match == EXACT and topics is not None:
                topics.joined_again(session, subscription.uri)
            created.addCallback(self._announce_subscribed, session.id, subscription)
            created.addErrback(_log_failure, "wamp.subscription.on_subscribe")

    def _accepts(self, uri: str) -> bool:
        return self.open_uris or self._declared(uri)

    def _declared(self, uri: str) -> bool:
        return self._topics is not None and self._topics.has_route(uri)

    def publish_from(self, session: Session, publication: Publication) -> Deferred[None] | None:
        """A client's PUBLISH: handed to the topic declared for its URI, or delivered as is on open URIs.

        Returns a Deferred when a topic's ``on_publish`` or the authorization works asynchronously.
        """
        uri = publication.topic
        refuse_reserved(uri, "publish to")
        if not self.open_uris and not self._declared(uri):
            raise WampError(NO_SUCH_TOPIC, f"no topic is declared for URI {uri!r}")
        checks, cleanup = self.authorization.checks(session, "publish", uri, EXACT, publication.payload)
        return self.authorization.gate(
            session, checks, "publish to", uri, lambda: self._publish_from(session, publication), cleanup
        )

    def _publish_from(self, session: Session, publication: Publication) -> Deferred[None] | None:
        if self._topics is not None and self._topics.has_route(publication.topic):
            return self._topics.published(session, publication)
        if not self.open_uris:
            raise WampError(NO_SUCH_TOPIC, f"no topic is declared for URI {publication.topic!r}")
        self.publish(publication)
        return None

    def publish(self, publication: Publication) -> int:
        """Deliver a publication to every local subscriber it admits and, in a cluster, to the other
        nodes; returns how many EVENTs were sent here.

        Made while a forwarded event is handled (on every node alike), it gets that cause's next key, and
        its id from the key: then the cluster delivers each key once per node.
        """
        cluster = self._cluster
        if publication.key is None and cluster.keys_broadcasts:
            cause = current_cause()
            if cause is not None:
                publication.key = cause.key(publication.source, publication.topic)
                publication.id = publication_id_for(publication.key)
        if publication.key is not None and not cluster.first_delivery(publication):
            return 0  # another node's copy of this keyed broadcast was delivered here already
        delivered = self.broker.deliver(publication, self.limits.max_events_per_publication)
        activity = self.activity
        activity.publications += 1
        activity.events += delivered
        cluster.announce(publication)
        if publication.retain or self.history_rules.active:
            self._keep(publication, publication.key is not None)
        self.delivered()
        return delivered

    def deliver_remote(self, publication: Publication, produced: bool = False) -> int:
        """A publication another node delivered and announced: to the local subscribers only.
        ``produced``: an outside producer sent it to every node (then this node keeps it too, where a
        retained event or a history is due: the store keeps one copy)."""
        delivered = self.broker.deliver(publication, self.limits.max_events_per_publication)
        activity = self.activity
        activity.remote_publications += 1
        activity.events += delivered
        if produced and (publication.retain or self.history_rules.active):
            self._keep(publication, True)
        self.delivered()
        return delivered

    # retained events and history

    def _keep(self, publication: Publication, shared: bool) -> None:
        """Store a publication as its topic's retained event and/or in its history, as due."""
        now = self.wall_clock()
        store = self.store
        limits = self.limits
        if publication.retain:
            store.retain(publication, now, limits.max_retained_topics)
        limit = self.history_rules.limit_for(publication.topic) if self.history_rules.active else 0
        if limit and recordable(publication):
            store.record(publication, limit, now, shared, limits.max_history_topics)

    def retained_payload(self, uri: str) -> Deferred[Any]:
        """The first argument of ``uri``'s retained event (``None`` when it has none)."""
        found = self.store.retained(uri, EXACT)
        return found.addCallback(lambda events: events[0].publication.payload if events else None)

    def _send_retained(self, session: Session, subscription: Subscription) -> None:
        """After SUBSCRIBED with ``get_retained``: the retained events the subscription covers, each as an
        EVENT with ``retained`` set, where the event's delivery rules admit the session."""
        found = self.store.retained(subscription.uri, subscription.match)
        found.addCallback(self._deliver_retained, session, subscription)
        found.addErrback(
            lambda failure: log.warn(
                "the retained events of {uri} could not be read for session {session_id}: {error}",
                uri=subscription.uri,
                session_id=session.id,
                error=failure.getErrorMessage(),
            )
        )

    def _deliver_retained(
        self, events: list[StoredEvent], session: Session, subscription: Subscription
    ) -> None:
        if session in subscription.sessions:  # not gone, nor unsubscribed, while the store answered
            self.broker.send_retained(session, subscription, [event.publication for event in events])

    def register(self, session: Session, msg: message.Register) -> Deferred[None] | None:
        """Register a client callee (if authorized) with the message's match and invocation policies,
        claiming it cluster-wide; answers REGISTERED."""
        refuse_reserved(msg.procedure, "register")
        self._check_registration_room(session)
        checks, cleanup = self.authorization.checks(session, "register", msg.procedure)
        return self.authorization.gate(
            session, checks, "register", msg.procedure, lambda: self._register(session, msg), cleanup
        )

    def call(self, session: Session, call: Call) -> Deferred[None] | None:
        """Route a client's call (if authorized) to its callee, here or on another node; only the meta
        procedures are callable in ``wamp.``. A timeout above ``limits.max_call_timeout`` is lowered to it."""
        procedure = call.procedure
        if procedure not in self.dealer.meta:
            refuse_reserved(procedure, "call")
        cap = self.limits.max_call_timeout
        if cap > 0 and call.timeout > cap:
            call.timeout = cap
        checks, cleanup = self.authorization.checks(session, "call", procedure)
        return self.authorization.gate(session, checks, "call", procedure, lambda: self._call(call), cleanup)

    def _call(self, call: Call) -> Deferred[None] | None:
        if self.dealer.call(call):
            return None
        # nothing here serves it, unless this node's view of the cluster's registrations was behind
        return self._cluster.settle(call).addCallback(self._call_again, call)

    def _call_again(self, _: None, call: Call) -> None:
        if not self.dealer.call(call):
            raise WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")

    def client_subscriptions(self) -> list[Subscription]:
        """This node's subscriptions (not those of meta topics), each with its sessions."""
        return list(self.broker.subscriptions)

    def cancel(self, caller: Caller, request: int, mode: str | None) -> None:
        """A caller's CANCEL of its call ``request`` (see ``Dealer.cancel``), wherever its callee is."""
        self.dealer.cancel(caller, request, mode)

    def unregister(self, session: Session, registration_id: int) -> None:
        """End one of a session's registrations (``no_such_registration`` if it holds none such)."""
        registration = self.dealer.unregister(session, registration_id)
        self._cluster.released(registration, session)
        if self._meta_listening:
            self._callees_left(registration, [session])

    def _register(self, session: Session, msg: message.Register) -> None:
        self._check_registration_room(session)  # again, after an asynchronous authorization
        uri, match = msg.procedure, msg.match or EXACT
        created = self._meta_listening and self.dealer.registration(uri, match) is None
        registration = self.dealer.register(session, uri, match, msg.invoke or SINGLE)
        told = False  # whether the meta events of this callee were published

        def claimed(ok: bool) -> None:
            if ok:
                session.send_message(message.Registered(msg.request, registration.id))
                return
            if not self.dealer.withdraw(registration, session):
                return  # the session left meanwhile, and its leaving removed the registration already
            if told and self._meta_listening:
                self._callees_left(registration, [session])
            session.send_message(
                message.Error(
                    message.Register.MESSAGE_TYPE,
                    msg.request,
                    PROCEDURE_ALREADY_EXISTS,
                    args=[f"procedure {msg.procedure!r} is registered on another node"],
                )
            )

        self._cluster.claim(registration, session).addCallback(claimed)
        # after REGISTERED when the claim was answered at once; else now (calls made here reach it now)
        if self._meta_listening and session in registration.callees:
            told = True
            self._callees_joined(registration, [session], created)

    # what the cluster tells about registrations and calls on other nodes

    def client_registrations(self) -> list[tuple[Registration, Session]]:
        """Each registration of this node's client callees, with that callee (what is claimed
        cluster-wide)."""
        return self.dealer.client_registrations()

    def arrange_registration(
        self, uri: str, match: str, invoke: str | None, order: list[Callee | int]
    ) -> None:
        """The cluster's view of the registration (``uri``, ``match``): see ``Dealer.arrange``. The changes
        of this node's view make the registration meta events of the other nodes' callees here."""
        dealer = self.dealer
        if not self._meta_listening:
            dealer.arrange(uri, match, invoke, order)
            return
        before = dealer.registration(uri, match)
        was = _client_callees(before)
        dealer.arrange(uri, match, invoke, order)
        after = dealer.registration(uri, match)
        now = _client_callees(after)
        if before is not None:
            kept = set(now)
            gone = [callee for callee in was if callee not in kept]
            if gone:
                self._callees_left(before, gone)
        if after is not None:
            known = set(was)
            came = [callee for callee in now if callee not in known]
            if came:
                self._callees_joined(after, came, created=not was)

    # the registration meta events: each node's own, from the changes of its view of the cluster's

    def _callees_joined(self, registration: Registration, callees: list[Callee], created: bool) -> None:
        """Callees were added to a registration of this node's view (``created``: it was not in it)."""
        about = (registration.uri, registration.match)
        if created:
            details = registration_details(registration)
            self._registration_event(REGISTRATION_ON_CREATE, [callees[0].id, details], about)
        for callee in callees:
            self._registration_event(REGISTRATION_ON_REGISTER, [callee.id, registration.id], about)

    def _callees_left(self, registration: Registration, callees: list[Callee]) -> None:
        """Callees were removed from a registration of this node's view (gone from it when it has no
        callee left)."""
        about = (registration.uri, registration.match)
        for callee in callees:
            self._registration_event(REGISTRATION_ON_UNREGISTER, [callee.id, registration.id], about)
        if not registration.callees:
            self._registration_event(REGISTRATION_ON_DELETE, [callees[-1].id, registration.id], about)

    def _registration_event(self, topic: str, args: list[Any], about: tuple[str, str]) -> None:
        """Deliver a registration meta event to this node's meta subscribers that may call the procedure
        (``about``: its URI and match policy) themselves; never to the other nodes, which make their own."""
        may_see = None
        authorization = self.authorization
        if authorization.authorizer is not None:
            uri, match = about
            allows = authorization.allows_call

            def may_see(session: Session) -> bool:
                return allows(session, uri, match)

        delivered = self.broker.deliver_meta(Publication(topic, args, source="router"), may_see)
        self.activity.events += delivered
        self.delivered()

    def call_from_cluster(self, call: Call, uri: str, match: str, callee: int | None) -> None:
        """A call another node routed to this node's client callee ``callee`` (a session id) of the
        registration (``uri``, ``match``); raises ``no_such_procedure`` when no client here serves it."""
        self.dealer.call_here(call, uri, match, callee)

    def yielded(
        self,
        callee: Callee,
        invocation: int,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        progress: bool,
        problem: str | None = None,
    ) -> None:
        """A result from a callee on another node (see ``Dealer.yielded``)."""
        self.dealer.yielded(callee, invocation, args, kwargs, progress, problem)

    def failed(
        self,
        callee: Callee,
        invocation: int,
        error: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        problem: str | None = None,
    ) -> None:
        """An error from a callee on another node (see ``Dealer.failed``)."""
        self.dealer.failed(callee, invocation, error, args, kwargs, problem)

    def callee_gone(self, callee: Callee, reason: str) -> None:
        """A callee on another node can no longer answer: its calls fail with ``wamp.error.canceled``."""
        self.dealer.callee_gone(callee, reason)

    def send(
        self, session: Session, topic: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> int:
        """Send one EVENT on ``topic`` to a single subscribed session; returns the publication id."""
        publication_id = self.broker.send_to(session, topic, args, kwargs)
        self.activity.events += 1
        return publication_id

    def sessions_opened_with(self, login_digest: str) -> list[Session]:
        """The open sessions of this node opened (auth method ``cookie``) with the REST session whose token
        has this ``token_digest``."""
        return [session for session in self.sessions.values() if session.login_digest == login_digest]


def _nothing() -> None:
    pass


def _client_callees(registration: Registration | None) -> list[Callee]:
    """A registration's callees as the registration meta API tells of them (the app's procedures have
    none)."""
    if registration is None or registration.function is not None:
        return []
    return list(registration.callees)


def _log_failure(failure: Any, what: str) -> None:
    log.failure("the {what} meta event could not be published", failure, what=what)
