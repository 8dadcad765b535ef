"""The cluster bus: sandstone processes sharing events, broadcasts and calls through Redis pub/sub.

Delivery rule (every subscriber in the cluster gets each broadcast exactly once):

- A forwarded *event* goes to the bus once; every node dispatches it to its own listeners. A broadcast made
  while a node handles a forwarded event carries a *key* (event id, source, topic, rank) from which
  its publication id is derived, so every node computes the same one: each node delivers the first copy of a
  key it sees (its own, or another node's through the bus) and drops the others. Nodes without a topic
  instance (only pattern subscribers) still get it from the nodes that have one.
- Any other broadcast (a client's publish, ``on_subscribe``, a timer, a REST handler) is delivered locally at
  once and sent to the bus once; the other nodes deliver it to their own subscribers.
- Calls to a procedure registered by a client on another node travel on that node's channel; registrations are
  claimed in a Redis hash; a node whose heartbeat key expires loses them (other nodes purge them) until its
  next beat claims them again.
- An event dispatched while handling a forwarded event gets an id derived from that event's, and nodes run the
  listeners of an event id once, however many nodes sent it.

What outside producers may send and what nodes say to each other are kept apart: producers publish events
and deliveries on the public channels (``events``, ``deliveries``), which accept nothing else; nodes send
theirs on the internal ``peers`` channel and calls on per-node channels, signed when the cluster has a
secret. Channel names carry the cluster name and the Redis database (``docs/bus.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import txredisapi
from autobahn.wamp import message
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ._dispatcher import DispatchResult
from ._envelope import (
    NODE,
    PEERS,
    PUBLIC_DELIVERIES,
    PUBLIC_EVENTS,
    ChannelRule,
    DeliveryMessage,
    EnvelopeError,
    EventCodec,
    EventMessage,
    MessageRejected,
    NodeMessage,
    Signer,
    channel_names,
    decode,
    decode_owner,
    encode_delivery,
    encode_event,
    encode_node,
    encode_owner,
)
from ._errors import CANCELED, NO_SUCH_PROCEDURE, WampError
from ._ids import MAX_ID
from ._payload import payload_problem
from ._publication import Publication
from ._redis_url import RedisAddress

if TYPE_CHECKING:
    from ._dealer import Registration
    from ._dispatcher import EventDispatcher
    from ._router import Router
    from ._session import Session

log = Logger()

# How every message a node sends begins (its type and origin follow): see RedisBus._from_self.
_MESSAGE_HEAD = '{"v":1,"type":"'

CLUSTER_UNAVAILABLE = "sandstone.error.cluster_unavailable"
#: The environment variable a node reads its cluster secret from when none is given in code.
CLUSTER_SECRET_ENV = "SANDSTONE_CLUSTER_SECRET"

# The forwarded event a node is handling, so that broadcasts made meanwhile get a cluster-wide key.
_handling: ContextVar[str | None] = ContextVar("sandstone_forwarded_event", default=None)

# The node id in a procedures-hash entry, or nil when the entry is not one (anyone with write access to Redis
# can put anything there): such entries count as dead, so they neither block a claim nor break the purge.
_OWNER_NODE = """
local function owner_node(entry)
  local ok, owner = pcall(cjson.decode, entry)
  if not ok or type(owner) ~= 'table' then return nil end
  local node = owner['node']
  if type(node) ~= 'string' or node == '' then return nil end
  return node
end
"""

_CLAIM = (
    _OWNER_NODE
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local owner = owner_node(current)
  if owner and owner ~= ARGV[4] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

# SET the heartbeat; returns whether it still existed (if not, the node's registrations may have been purged)
_BEAT = """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return existed
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

# Removes the entries of nodes without a heartbeat, and entries that are not a node's; returns both counts.
_PURGE_DEAD = (
    _OWNER_NODE
    + """
local entries = redis.call('HGETALL', KEYS[1])
local dead, bad = 0, 0
for i = 1, #entries, 2 do
  local owner = owner_node(entries[i + 1])
  if not owner then
    redis.call('HDEL', KEYS[1], entries[i])
    bad = bad + 1
  elseif redis.call('EXISTS', ARGV[1] .. owner) == 0 then
    redis.call('HDEL', KEYS[1], entries[i])
    dead = dead + 1
  end
end
return {dead, bad}
"""
)


_NOT_JSON = {
    "error": "wamp.error.invalid_argument",
    "args": ["arguments that JSON cannot carry (e.g. binary) cannot cross nodes"],
}


class BusUnavailable(Exception):
    """Redis is not reachable right now; the node keeps serving its own clients."""


def publication_id_for(key: str) -> int:
    """The publication id every node derives from a broadcast's cluster-wide key."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_ID + 1


class _Recent:
    """Keys seen within a time window (dedupe of keyed broadcasts), oldest first, bounded in size."""

    def __init__(self, clock: IReactorTime, window: float, limit: int = 200_000) -> None:
        self._clock = clock
        self._window = window
        self._limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, key: str) -> bool:
        """Record ``key``; True unless it was already seen within the window."""
        now = self._clock.seconds()
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen and (len(seen) > self._limit or next(iter(seen.values())) < now - self._window):
            seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class _Subscriber(txredisapi.SubscriberProtocol):
    """The bus's pub/sub connection; (re)subscribes every time it connects."""

    bus: RedisBus

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.factory.bus._subscriber_ready(self))
        return d

    def messageReceived(self, pattern: Any, channel: str, payload: Any) -> None:
        self.factory.bus._received(channel, payload)

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.factory.bus._subscriber_lost(why)


class _Commands(txredisapi.RedisProtocol):
    """The bus's command connection (PUBLISH, heartbeats, registrations)."""

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.factory.bus._commands_ready())
        return d

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.factory.bus._commands_lost(why)


class _RemoteCaller:
    """Stands in for a caller on another node: the dealer answers it, the bus carries the answer back."""

    __slots__ = ("_bus", "_node", "_call", "id", "authid", "authrole", "_interruptible")

    def __init__(self, bus: RedisBus, node: str, call: str, body: dict[str, Any]) -> None:
        self._bus = bus
        self._node = node
        self._call = call
        self.id = body.get("caller") or 0
        self.authid = body.get("caller_authid")
        self.authrole = body.get("caller_authrole")
        self._interruptible = False

    def _send(self, msg: message.Message) -> None:
        if isinstance(msg, message.Result):
            body = {"args": msg.args, "kwargs": msg.kwargs, "progress": bool(msg.progress)}
            if not self._bus._send_node(self._node, "result", {"call": self._call, **body}):
                self._bus._send_node(self._node, "error", {"call": self._call, **_NOT_JSON})
        elif isinstance(msg, message.Error):
            body = {"error": msg.error, "args": msg.args, "kwargs": msg.kwargs}
            self._bus._send_node(self._node, "error", {"call": self._call, **body})

    def _send_error(self, request: message.Message, payload: Any) -> None:
        body = {"error": payload.uri, "args": payload.args, "kwargs": payload.kwargs}
        self._bus._send_node(self._node, "error", {"call": self._call, **body})

    def _send_result(self, request: int, result: Any) -> None:
        from ._dealer import result_message

        self._send(result_message(request, result))


@dataclass(slots=True, eq=False)
class _RemoteCall:
    """A local caller's call served by a callee on another node."""

    caller: Session
    request: int
    node: str
    receive_progress: bool


class RedisBus(Service):
    """Connects one node (an app's router and dispatcher) to the others through Redis.

    Add it to a service tree (``twistd sandstone --redis URL`` does) or call ``startService`` yourself.
    Without Redis the node keeps serving its own clients; it reconnects with capped backoff.

    ``cluster_name`` (if any) and the Redis database are part of every channel and key name, so that
    clusters sharing a Redis server stay apart. With a ``cluster_secret`` (default: the environment
    variable ``SANDSTONE_CLUSTER_SECRET``), the messages between nodes are signed, and unsigned ones refused.
    """

    def __init__(
        self,
        router: Router,
        events: EventDispatcher,
        codec: EventCodec,
        url: str,
        *,
        node_id: str | None = None,
        prefix: str = "sandstone",
        cluster_name: str | None = None,
        cluster_secret: str | bytes | None = None,
        heartbeat_interval: float = 2.0,
        heartbeat_ttl: float = 6.0,
        command_timeout: float = 2.0,
        reconnect_max_delay: float = 5.0,
        max_message_bytes: int = 1_048_576,
        dedupe_window: float = 120.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.address = RedisAddress.parse(url)
        self.url = url
        self.node_id = node_id or uuid.uuid4().hex
        self._origin_field = '","origin":' + json.dumps(self.node_id) + ","
        self.router = router
        self.codec = codec
        self.prefix = prefix
        self.cluster_name = cluster_name
        if cluster_secret is None:
            cluster_secret = os.environ.get(CLUSTER_SECRET_ENV)
        self._signer = Signer(cluster_secret) if cluster_secret else None
        self._set_channels()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.command_timeout = command_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.max_message_bytes = max_message_bytes
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "published",
                "received",
                "delivered_remote",
                "dispatched_remote",
                "duplicates",
                "malformed",
                "rejected",
                "bad_entries",
                "send_failures",
            ),
            0,
        )
        self._events = events
        self._reactor = reactor
        self._seen = _Recent(reactor, dedupe_window)
        self._ranks: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._remote_calls: dict[str, _RemoteCall] = {}
        self._served: dict[tuple[str, str], _RemoteCaller] = {}
        self._commands: txredisapi.RedisFactory | None = None
        self._subscriber: txredisapi.SubscriberFactory | None = None
        self._commands_up = False
        self._subscribed = False
        self._outage_logged = False
        self._beat_failing = False
        self._purge_failing = False
        self._ready_waiters: list[Deferred[None]] = []
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor

    # lifecycle

    @property
    def signed(self) -> bool:
        """Whether this node signs its messages to other nodes and refuses unsigned ones."""
        return self._signer is not None

    def shared_key(self, purpose: str) -> bytes | None:
        """A key every node of the cluster derives alike from the cluster secret (``None`` without one)."""
        return None if self._signer is None else self._signer.derive(purpose)

    def _set_channels(self) -> None:
        self.channels = channel_names(
            self.prefix, self.router.realm, cluster_name=self.cluster_name, db=self.address.db
        )
        self._heartbeat_prefix = self.channels.heartbeat_prefix
        self._rules: dict[str, ChannelRule] = {
            self.channels.events: PUBLIC_EVENTS,
            self.channels.deliveries: PUBLIC_DELIVERIES,
            self.channels.peers: PEERS,
            self.channels.node(self.node_id): NODE,
        }

    def startService(self) -> None:
        super().startService()
        self._set_channels()  # the realm may change until now
        self.router.bus = self
        self.router.dealer.cluster = self
        endpoint = HostnameEndpoint(self._reactor, self.address.host, self.address.port, timeout=5)
        self._commands = self._factory(
            txredisapi.RedisFactory(
                None,
                self.address.db,
                1,
                isLazy=True,
                replyTimeout=self.command_timeout,
                password=self.address.password,
                username=self.address.username,
            ),
            _Commands,
        )
        self._subscriber = self._factory(txredisapi.SubscriberFactory(isLazy=True), _Subscriber)
        self._commands.startConnecting(endpoint)
        self._subscriber.startConnecting(endpoint)
        self._heartbeat.start(self.heartbeat_interval, now=False)
        log.info(
            "cluster bus node {node} connecting to {url} (realm {realm}, channels {base}:*)",
            node=self.node_id,
            url=str(self.address),
            realm=self.router.realm,
            base=self.channels.base,
        )
        if self._signer is None:
            log.warn(
                "cluster bus node {node}: no cluster secret (--cluster-secret or {env}): messages between "
                "nodes are not signed, so any client that may PUBLISH to this Redis can send them; set a "
                "secret, or limit other Redis users to the public channels (docs/bus.md)",
                node=self.node_id,
                env=CLUSTER_SECRET_ENV,
            )

    def _factory(self, factory: txredisapi.RedisFactory, protocol: type) -> txredisapi.RedisFactory:
        factory.protocol = protocol
        factory.bus = self
        factory.password = self.address.password  # SubscriberFactory takes no credentials of its own
        factory.username = self.address.username
        factory.maxDelay = self.reconnect_max_delay
        factory.initialDelay = min(0.5, self.reconnect_max_delay)
        factory.deferred.addErrback(lambda _: None)  # connection failures are retried and logged here
        return factory

    def stopService(self) -> Deferred[None]:
        """Leave the cluster: drop the heartbeat and this node's registrations, then disconnect."""
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        self._fail_remote_calls("this node is shutting down")
        if self.router.bus is self:
            self.router.bus = None
            self.router.dealer.cluster = None
        leaving = self._command("delete", self.channels.heartbeat(self.node_id))
        leaving.addCallback(lambda _: self._command("eval", _PURGE_DEAD, *self._purge_arguments()))
        leaving.addErrback(lambda _: None)  # then the TTL does it
        return leaving.addCallback(lambda _: self._disconnect())

    def _disconnect(self) -> Deferred[None]:
        from twisted.internet.defer import gatherResults

        stopping = [f.disconnect() for f in (self._commands, self._subscriber) if f is not None]
        return gatherResults(stopping, consumeErrors=True).addBoth(lambda _: None)

    @property
    def connected(self) -> bool:
        """True while both Redis connections are up and subscribed."""
        return self._commands_up and self._subscribed

    def when_connected(self) -> Deferred[None]:
        """A Deferred firing once the node is connected and subscribed (at once if it is)."""
        if self.connected:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ready_waiters.append(d)
        return d

    def _maybe_ready(self) -> None:
        if not self.connected:
            return
        if self._outage_logged:
            log.info("cluster bus node {node} reconnected to {url}", node=self.node_id, url=str(self.address))
            self._outage_logged = False
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def _subscriber_ready(self, protocol: _Subscriber) -> None:
        d = protocol.subscribe(list(self._rules))

        def subscribed(_: Any) -> None:
            self._subscribed = True
            self._maybe_ready()

        d.addCallbacks(subscribed, lambda f: log.failure("subscribing to the bus channels failed", f))

    def _subscriber_lost(self, why: Failure) -> None:
        self._subscribed = False
        self._outage(f"pub/sub connection lost ({why.getErrorMessage()})")

    def _commands_ready(self) -> None:
        self._commands_up = True
        self._beat()
        self._reclaim()
        self._maybe_ready()

    def _commands_lost(self, why: Failure) -> None:
        self._commands_up = False
        self._outage(f"command connection lost ({why.getErrorMessage()})")
        self._fail_remote_calls("the cluster bus lost its Redis connection")

    def _outage(self, what: str) -> None:
        if not self.running:
            return
        if not self._outage_logged:
            log.warn(
                "cluster bus node {node}: {what}; serving local clients only, reconnecting",
                node=self.node_id,
                what=what,
            )
            self._outage_logged = True

    # commands

    def _command(self, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        if not self._commands_up or self._commands is None:
            return _failed(BusUnavailable("Redis is not connected"))
        d: Deferred[Any] = getattr(self._commands.handler, name)(*args, **kwargs)
        d.addTimeout(self.command_timeout, self._reactor)
        return d

    def _publish(self, channel: str, payload: bytes) -> None:
        if len(payload) > self.max_message_bytes:
            self.stats["send_failures"] += 1
            log.warn(
                "cluster bus: a {size}-byte message for {channel} exceeds the {limit}-byte limit; not sent",
                size=len(payload),
                channel=channel,
                limit=self.max_message_bytes,
            )
            return
        d = self._command("publish", channel, payload.decode())

        def sent(_: Any) -> None:
            self.stats["published"] += 1

        def failed(failure: Failure) -> None:
            self.stats["send_failures"] += 1
            if not self._outage_logged:
                log.warn(
                    "cluster bus: could not publish on {channel}: {error}",
                    channel=channel,
                    error=failure.getErrorMessage(),
                )

        d.addCallbacks(sent, failed)

    def _publish_internal(self, channel: str, payload: bytes) -> None:
        """Publish a node's message on an internal channel, signed when the cluster has a secret."""
        self._publish(channel, payload if self._signer is None else self._signer.sign(channel, payload))

    def _beat(self) -> Deferred[Any]:
        if not self._commands_up:
            return succeed(None)
        key = self.channels.heartbeat(self.node_id)
        d = self._command("eval", _BEAT, [key], [int(self.heartbeat_ttl * 1000)])
        d.addCallbacks(self._beaten, self._beat_failed)
        return d

    def _beaten(self, existed: Any) -> Deferred[Any]:
        if self._beat_failing:
            self._beat_failing = False
            log.info("cluster bus node {node}: heartbeats work again", node=self.node_id)
        if not existed:
            # expired (this node was paused longer than the TTL, or Redis lost it): the other nodes purged
            # our registrations, claim them again
            self._reclaim()
        d = self._purge()
        d.addCallback(lambda _: self._check_remote_nodes())
        return d

    def _beat_failed(self, failure: Failure) -> None:
        if self._beat_failing or self._outage_logged:  # once per streak; an outage is logged already
            return
        self._beat_failing = True
        log.warn(
            "cluster bus node {node}: heartbeat failed ({error}); the other nodes purge this node's "
            "registrations if it keeps failing for {ttl} s",
            node=self.node_id,
            error=failure.getErrorMessage(),
            ttl=self.heartbeat_ttl,
        )

    def _purge_arguments(self) -> tuple[list[str], list[str]]:
        return [self.channels.procedures], [self._heartbeat_prefix]

    def _purge(self) -> Deferred[None]:
        """Remove dead nodes' registrations, and entries that are not a node's, from the procedures hash."""
        d = self._command("eval", _PURGE_DEAD, *self._purge_arguments())
        d.addCallbacks(self._purged, self._purge_failed)
        return d

    def _purged(self, counts: Any) -> None:
        if self._purge_failing:
            self._purge_failing = False
            log.info("cluster bus node {node}: the purge of dead nodes works again", node=self.node_id)
        bad = counts[1] if isinstance(counts, list) and len(counts) == 2 and isinstance(counts[1], int) else 0
        if bad:
            self.stats["bad_entries"] += bad
            log.warn(
                "cluster bus: removed {count} entries that name no node from {key} (written there by "
                "something other than a sandstone node)",
                count=bad,
                key=self.channels.procedures,
            )

    def _purge_failed(self, failure: Failure) -> None:
        if self._purge_failing or self._outage_logged:  # once per streak; an outage is logged already
            return
        self._purge_failing = True
        log.warn(
            "cluster bus node {node}: could not purge dead nodes' registrations from {key} ({error}); "
            "they stay there (and calls to them wait for a dead node) until it works again",
            node=self.node_id,
            key=self.channels.procedures,
            error=failure.getErrorMessage(),
        )

    # broadcasts

    def prepare(self, publication: Publication) -> bool:
        """Called by the router before delivering locally: keys broadcasts made while handling a forwarded
        event (same publication id on every node). False when this key was already delivered here."""
        event_id = _handling.get()
        if event_id is None:
            return True
        # Ranked per source too: a node without a topic instance must not mistake the app's broadcast
        # for the instance's (nodes differ in which instances they have, not in app listeners).
        rank = self._rank(event_id, publication.source, publication.topic)
        publication.key = f"{event_id}:{publication.source}:{publication.topic}:{rank}"
        publication.id = publication_id_for(publication.key)
        return self._seen.first_time(publication.key)

    def _rank(self, event_id: str, source: str, name: str) -> int:
        """How many times (this one included) ``source`` has sent ``name`` while handling ``event_id``."""
        rank_key = (event_id, source, name)
        rank = self._ranks.get(rank_key, 0) + 1
        self._ranks[rank_key] = rank
        while len(self._ranks) > 100_000:
            self._ranks.popitem(last=False)
        return rank

    def announce(self, publication: Publication) -> None:
        """Send a publication to the other nodes (after it was delivered here)."""
        try:
            payload = encode_delivery(self.node_id, publication, publication.key)
        except (TypeError, ValueError, EnvelopeError) as exc:
            # e.g. bytes from a MessagePack/CBOR client: JSON cannot carry them to the other nodes
            self.stats["send_failures"] += 1
            log.warn(
                "cluster bus: publication on {topic} delivered on this node only: {reason}",
                topic=publication.topic,
                reason=exc,
            )
            return
        self._publish_internal(self.channels.peers, payload)

    # events

    def dispatch(self, name: str, event: object) -> Deferred[DispatchResult]:
        """Dispatch a forwarded event: to the bus once, and to this node's listeners right away.

        Dispatched while handling another forwarded event (which every node does), its id derives from
        that event's, so each node runs its listeners once however many nodes sent it.
        """
        data = self.codec.encode(name, event)
        parent = _handling.get()
        if parent is None:
            event_id = uuid.uuid4().hex
        else:
            digest = hashlib.sha256(f"{parent}:event:{name}:{self._rank(parent, 'event', name)}".encode())
            event_id = digest.hexdigest()[:32]
        if not self._seen.first_time(f"event:{event_id}"):
            return succeed(DispatchResult(name, event, called=0, stopped=False, errors=[]))
        self._publish_internal(self.channels.peers, encode_event(self.node_id, event_id, name, data))
        return self._dispatch_local(event_id, name, event)

    def _dispatch_local(self, event_id: str, name: str, event: object) -> Deferred[DispatchResult]:
        token = _handling.set(event_id)
        try:
            return self._events.dispatch(name, event)
        finally:
            _handling.reset(token)

    # receiving

    def _received(self, channel: str, payload: Any) -> None:
        self.stats["received"] += 1
        if self._from_self(payload):  # Redis sends a node its own publications too
            return
        try:
            rule = self._rules.get(channel)
            if rule is None:
                raise MessageRejected("this node does not listen on that channel")
            msg = decode(
                payload, max_bytes=self.max_message_bytes, rule=rule, channel=channel, signer=self._signer
            )
            if msg.origin == self.node_id:
                return
            self._HANDLERS[type(msg)](self, msg)
        except MessageRejected as exc:
            self.stats["rejected"] += 1
            log.warn("cluster bus: refused a message on {channel}: {reason}", channel=channel, reason=exc)
        except EnvelopeError as exc:
            self.stats["malformed"] += 1
            log.warn("cluster bus: dropped a message on {channel}: {reason}", channel=channel, reason=exc)
        except Exception:
            self.stats["malformed"] += 1
            log.failure(
                "cluster bus: a message on {channel} could not be handled",
                channel=channel,
                level=LogLevel.error,
            )

    def _from_self(self, payload: Any) -> bool:
        """Whether a message is one this node sent, told from its first bytes without parsing it: every
        message a node sends starts ``{"v":1,"type":"<type>","origin":"<node id>",``."""
        if type(payload) is not str or not payload.startswith(_MESSAGE_HEAD):
            return False
        end = payload.find('"', len(_MESSAGE_HEAD))
        return end > 0 and payload.startswith(self._origin_field, end)

    def _on_event(self, msg: EventMessage) -> None:
        event = self.codec.decode(msg.name, msg.data)
        if not self._seen.first_time(f"event:{msg.id}"):
            self.stats["duplicates"] += 1
            return
        self.stats["dispatched_remote"] += 1
        self._dispatch_local(msg.id, msg.name, event)

    def _on_delivery(self, msg: DeliveryMessage) -> None:
        if msg.key is not None and not self._seen.first_time(msg.key):
            self.stats["duplicates"] += 1
            return
        publication = msg.publication
        problem = payload_problem(publication.args, publication.kwargs)
        if problem is not None:  # JSON carries what other serializers cannot: 2**70, 1e400, "\u0000..."
            self.stats["malformed"] += 1
            log.warn(
                "cluster bus: dropped a delivery on {topic} from {origin}: {problem}",
                topic=publication.topic,
                origin=msg.origin,
                problem=problem,
            )
            return
        self.stats["delivered_remote"] += 1
        self.router.deliver_remote(publication)

    def _on_node_message(self, msg: NodeMessage) -> None:
        handler = self._NODE_HANDLERS.get(msg.type)
        if handler is None:
            raise EnvelopeError(f"unknown node message type {msg.type!r}")
        handler(self, msg.origin, msg.body)

    # registrations

    def claim(self, registration: Registration) -> Deferred[bool]:
        """Claim a client registration cluster-wide; False if a live node already holds the URI.

        When Redis cannot answer, the registration stays local and is claimed again on reconnect.
        """
        d = self._command(
            "eval",
            _CLAIM,
            [self.channels.procedures],
            [registration.uri, self._owner(registration), self._heartbeat_prefix, self.node_id],
        )
        d.addCallback(lambda claimed: bool(claimed))

        def unavailable(failure: Failure) -> bool:
            log.warn(
                "cluster bus: could not claim {uri} ({error}); it is local until Redis is back",
                uri=registration.uri,
                error=failure.getErrorMessage(),
            )
            return True

        return d.addErrback(unavailable)

    def released(self, registration: Registration) -> None:
        """A client registration ended here: give the URI back."""
        d = self._command(
            "eval", _RELEASE, [self.channels.procedures], [registration.uri, self._owner(registration)]
        )
        d.addErrback(
            lambda f: log.debug(
                "release of {uri} failed: {error}", uri=registration.uri, error=f.getErrorMessage()
            )
        )

    def _owner(self, registration: Registration) -> str:
        return encode_owner(self.node_id, registration.id)

    def _reclaim(self) -> None:
        for registration in self.router.dealer.client_registrations():
            self.claim(registration).addCallback(self._reclaimed, registration)

    def _reclaimed(self, claimed: bool, registration: Registration) -> None:
        if not claimed:
            log.warn(
                "cluster bus: {uri} was registered on another node during the outage; this node keeps "
                "serving its own registration for its own callers",
                uri=registration.uri,
            )

    # calls: caller side

    def call(self, caller: Session, call: message.Call) -> None:
        """A call with no local callee: find the owning node and forward it there."""
        d = self._command("hget", self.channels.procedures, call.procedure)
        d.addCallbacks(self._forward_call, self._lookup_failed, (caller, call), errbackArgs=(caller, call))
        d.addErrback(self._forward_failed, caller, call)

    def _forward_failed(self, failure: Failure, caller: Session, call: message.Call) -> None:
        log.failure(
            "cluster bus: the call to {procedure} could not be forwarded",
            failure,
            procedure=call.procedure,
            level=LogLevel.error,
        )
        self._lookup_failed(failure, caller, call)

    def _lookup_failed(self, failure: Failure, caller: Session, call: message.Call) -> None:
        caller._send(
            message.Error(
                message.Call.MESSAGE_TYPE,
                call.request,
                CLUSTER_UNAVAILABLE,
                args=[f"cannot reach the cluster to find {call.procedure}"],
            )
        )

    def _forward_call(self, owner: Any, caller: Session, call: message.Call) -> None:
        node = None if owner is None else self._owner_node(owner, call.procedure)
        if node is None or node == self.node_id:
            error = WampError(NO_SUCH_PROCEDURE, f"no callee registered for procedure {call.procedure!r}")
            caller._send(
                message.Error(message.Call.MESSAGE_TYPE, call.request, error.uri, args=error.args_list)
            )
            return
        call_id = uuid.uuid4().hex
        self._remote_calls[call_id] = _RemoteCall(caller, call.request, node, bool(call.receive_progress))
        disclose = bool(call._router_internal and call._router_internal.get("disclose_me"))
        sent = self._send_node(
            node,
            "call",
            {
                "call": call_id,
                "procedure": call.procedure,
                "args": call.args,
                "kwargs": call.kwargs,
                "receive_progress": bool(call.receive_progress),
                "caller": caller.id if disclose else None,
                "caller_authid": caller.authid if disclose else None,
                "caller_authrole": caller.authrole if disclose else None,
            },
        )
        if not sent:
            del self._remote_calls[call_id]
            caller._send(
                message.Error(
                    message.Call.MESSAGE_TYPE, call.request, _NOT_JSON["error"], args=_NOT_JSON["args"]
                )
            )

    def _owner_node(self, owner: Any, procedure: str) -> str | None:
        """The node an entry of the procedures hash names; None (logged, counted) for a bad entry."""
        try:
            return decode_owner(owner)
        except EnvelopeError as exc:
            self.stats["bad_entries"] += 1
            log.warn(
                "cluster bus: the entry of {procedure} in {key} is not a node's ({reason}); calls to it fail "
                "with no_such_procedure until the next purge removes it",
                procedure=procedure,
                key=self.channels.procedures,
                reason=exc,
            )
            return None

    def cancel(self, caller: Session, msg: message.Cancel) -> bool:
        """Forward a CANCEL for a remote call; False if the call is not a remote one."""
        for call_id, remote in self._remote_calls.items():
            if remote.caller is caller and remote.request == msg.request:
                self._send_node(remote.node, "cancel", {"call": call_id, "mode": msg.mode})
                return True
        return False

    def caller_left(self, caller: Session) -> None:
        """Forget a leaving session's remote calls and interrupt them on their nodes."""
        for call_id, remote in list(self._remote_calls.items()):
            if remote.caller is caller:
                del self._remote_calls[call_id]
                self._send_node(remote.node, "cancel", {"call": call_id, "mode": message.Cancel.KILLNOWAIT})

    def _on_result(self, origin: str, body: dict[str, Any]) -> None:
        remote = self._remote_calls.get(body["call"])
        if remote is None:
            return
        progress = bool(body.get("progress"))
        if not progress:
            del self._remote_calls[body["call"]]
        elif not remote.receive_progress:
            return
        remote.caller._send(
            message.Result(
                remote.request, args=body.get("args"), kwargs=body.get("kwargs"), progress=progress or None
            )
        )

    def _on_error(self, origin: str, body: dict[str, Any]) -> None:
        remote = self._remote_calls.pop(body["call"], None)
        if remote is None:
            return
        remote.caller._send(
            message.Error(
                message.Call.MESSAGE_TYPE,
                remote.request,
                body["error"],
                args=body.get("args"),
                kwargs=body.get("kwargs"),
            )
        )

    def _check_remote_nodes(self) -> Deferred[Any] | None:
        nodes = {remote.node for remote in self._remote_calls.values()}
        if not nodes:
            return None
        checks = [
            self._command("exists", self.channels.heartbeat(node)).addCallback(self._node_alive, node)
            for node in nodes
        ]
        from twisted.internet.defer import gatherResults

        return gatherResults(checks, consumeErrors=True).addErrback(lambda _: None)

    def _node_alive(self, exists: Any, node: str) -> None:
        if not exists:
            log.warn("cluster bus: node {node} is gone; failing its calls in flight", node=node)
            self._fail_remote_calls(f"node {node} left the cluster", node)

    def _fail_remote_calls(self, reason: str, node: str | None = None) -> None:
        for call_id, remote in list(self._remote_calls.items()):
            if node is None or remote.node == node:
                del self._remote_calls[call_id]
                remote.caller._send(
                    message.Error(message.Call.MESSAGE_TYPE, remote.request, CANCELED, args=[reason])
                )

    @property
    def remote_calls_in_flight(self) -> int:
        """Calls of local callers waiting for a callee on another node."""
        return len(self._remote_calls)

    # calls: callee side

    def _on_call(self, origin: str, body: dict[str, Any]) -> None:
        if not self._seen.first_time(f"call:{origin}:{body['call']}"):  # a replayed call runs once
            self.stats["duplicates"] += 1
            return
        registration = self.router.dealer.registration(body["procedure"])
        caller = _RemoteCaller(self, origin, body["call"], body)
        if registration is None or registration.callee is None:
            caller._send(
                message.Error(
                    message.Call.MESSAGE_TYPE,
                    1,
                    NO_SUCH_PROCEDURE,
                    args=[f"no callee registered for procedure {body['procedure']!r}"],
                )
            )
            return
        call = message.Call(
            1,
            body["procedure"],
            args=body.get("args"),
            kwargs=body.get("kwargs"),
            receive_progress=body.get("receive_progress") or None,
        )
        call._router_internal = {"disclose_me": body.get("caller") is not None}
        self._served[(origin, body["call"])] = caller
        self.router.dealer.serve_remote(
            caller, call, registration, lambda: self._served.pop((origin, body["call"]), None)
        )

    def _on_cancel(self, origin: str, body: dict[str, Any]) -> None:
        caller = self._served.get((origin, body["call"]))
        if caller is not None:
            self.router.dealer.cancel(caller, message.Cancel(1, mode=body.get("mode")))  # type: ignore[arg-type]

    def _send_node(self, node: str, kind: str, body: dict[str, Any]) -> bool:
        """Send a call/result/error/cancel to one node; False when its arguments cannot travel as JSON."""
        try:
            payload = encode_node(kind, self.node_id, body)
        except (TypeError, ValueError) as exc:
            log.warn(
                "cluster bus: a {kind} for node {node} cannot travel as JSON: {reason}",
                kind=kind,
                node=node,
                reason=exc,
            )
            return False
        self._publish_internal(self.channels.node(node), payload)
        return True

    _HANDLERS: dict[type, Callable[[RedisBus, Any], None]] = {
        EventMessage: _on_event,
        DeliveryMessage: _on_delivery,
        NodeMessage: _on_node_message,
    }
    _NODE_HANDLERS: dict[str, Callable[[RedisBus, str, dict[str, Any]], None]] = {
        "call": _on_call,
        "result": _on_result,
        "error": _on_error,
        "cancel": _on_cancel,
    }


def _failed(exc: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(exc)
    return d
