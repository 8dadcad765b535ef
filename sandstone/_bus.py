"""The cluster bus: sandstone processes sharing events, broadcasts and calls through Redis pub/sub.

Delivery rule (every subscriber in the cluster gets each broadcast exactly once):

- A forwarded *event* goes to the bus once; every node dispatches it to its own listeners. A broadcast made
  while a node handles a forwarded event carries a *key* (event id, source, topic, rank: see
  ``_cluster.Cause``) from which its publication id is derived, so every node computes the same one: each
  node delivers the first copy of a key it sees (its own, or another node's through the bus) and drops the
  others. Of the nodes that made it, the first to claim the key in Redis (``SET NX``) announces it, in the
  same script: one PUBLISH per key, so that nodes without a topic instance (only pattern subscribers) get
  it, and the bus carries O(N) messages per broadcast for N nodes, not N per node.
- Any other broadcast (a client's publish, ``on_subscribe``, a timer, a REST handler) is delivered locally at
  once and sent to the bus once; the other nodes deliver it to their own subscribers.
- Registrations are cluster-wide: the procedures hash holds one entry per registration (URI and match policy)
  with its invocation policy and its callees, ``"<node>:<session>"``, in the order they registered; claims
  and releases change it in Lua scripts that also count a version. Each node keeps a view of the hash (its
  router holds the other nodes' callees as ``RemoteCallee`` objects), read whole when it (re)connects and
  field by field when another node says it changed them (``procedures`` on the peers channel), and read
  whole again when a heartbeat finds the version ahead of the view for two beats in a row (a lost message).
  So a call costs Redis one PUBLISH to the callee's node (none for a local callee), whatever the policy,
  and a registration O(nodes) messages. A node whose heartbeat key expires loses its callees (other nodes
  purge them) until its next beat claims them again.
- An event dispatched while handling a forwarded event gets an id derived from that event's, and nodes run the
  listeners of an event id once, however many nodes sent it.
- Presence (the meta API's sessions and subscriptions, ``Topic.presence``): each node keeps its own
  sessions, subscriptions and subscribers in hashes of its own, listed in the ``state`` hash (the changes of
  a reactor turn in one script); answers read the live nodes' hashes. The node that purges a dead one (the
  first whose purge sees its heartbeat gone: the script is atomic) gets what it held and runs the
  ``on_leave`` hooks and meta events for its members, once. Meta events travel on ``peers`` only while some
  node has subscribers of meta topics (``interest``).

What outside producers may send and what nodes say to each other are kept apart: producers publish events
and deliveries on the public channels (``events``, ``deliveries``), which accept nothing else; nodes send
theirs on the internal ``peers`` channel and calls on per-node channels, signed when the cluster has a
secret. Channel names carry the cluster name and the Redis database (``docs/bus.md``).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError
from txredisapi import ResponseError

from ._call import Call
from ._cluster import Cause, LostSubscription, Member, SessionInfo, SubscriptionInfo
from ._envelope import (
    NODE,
    PEERS,
    PROCEDURES,
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
    decode_entry,
    encode_delivery,
    encode_event,
    encode_node,
    parse_procedure_field,
    procedure_field,
)
from ._errors import CANCELED, CLUSTER_UNAVAILABLE, WampError
from ._payload import payload_problem
from ._publication import Publication
from ._redis_connect import (
    ClientTLS,
    CommandProtocol,
    RedisLink,
    SentinelEndpoint,
    SubscriberProtocol,
    redis_endpoint,
)
from ._redis_store import RedisStore
from ._redis_url import RedisAddress
from ._subscriptions import EXACT, iso_8601

if TYPE_CHECKING:
    from ._call import Callee
    from ._dispatcher import EventDispatcher
    from ._registrations import Registration
    from ._router import Router
    from ._session import Session
    from ._subscriptions import Subscription

log = Logger()

# How every message a node sends begins (its type and origin follow): see RedisBus._from_self.
_MESSAGE_HEAD = '{"v":1,"type":"'

#: Seconds after starting without a Redis connection (nor an attempt that failed yet) before saying so.
SLOW_START_WARNING = 2.0
#: The environment variable a node reads its cluster secret from when none is given in code.
CLUSTER_SECRET_ENV = "SANDSTONE_CLUSTER_SECRET"

# Entries of the procedures hash: one per registration (field: its URI, or "<match> <uri>" for a pattern),
# {"invoke": <policy>, "members": ["<node id>:<session id>", ...]} with its callees in the order they
# registered. Session ids stay strings here: Lua's cjson would round large numbers. An entry that is not one
# (anyone with write access to Redis can put anything there) reads as nil: it neither blocks a claim nor
# breaks the purge, which removes it.
_ENTRY = """
local policies = {single = true, roundrobin = true, random = true, first = true, last = true}
local function read_entry(raw)
  local ok, entry = pcall(cjson.decode, raw)
  if not ok or type(entry) ~= 'table' then return nil end
  local invoke, members = entry['invoke'], entry['members']
  if type(invoke) ~= 'string' or not policies[invoke] or type(members) ~= 'table' or #members == 0 then
    return nil
  end
  for _, member in ipairs(members) do
    if type(member) ~= 'string' or not string.match(member, '^[^:%s]+:%d+$') then return nil end
  end
  return invoke, members
end
local function node_of(member) return string.match(member, '^([^:]+):') end
local alive_nodes = {}
local function alive(prefix, node)
  local known = alive_nodes[node]
  if known == nil then
    known = redis.call('EXISTS', prefix .. node) == 1
    alive_nodes[node] = known
  end
  return known
end
local function write_entry(key, field, invoke, members)
  if #members == 0 then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, cjson.encode({invoke = invoke, members = members}))
  end
end
-- Add member to the entry of field, unless a live node holds it as 'single' or with another policy.
-- Returns whether it is (now) a callee, and whether the entry changed.
local function claim(key, field, invoke, member, prefix)
  local raw = redis.call('HGET', key, field)
  local kept = {}
  if raw then
    local current, members = read_entry(raw)
    if current then
      for _, m in ipairs(members) do
        if m == member then return true, false end
        if alive(prefix, node_of(m)) then kept[#kept + 1] = m end
      end
      if #kept > 0 and (current == 'single' or current ~= invoke) then return false, false end
    end
  end
  kept[#kept + 1] = member
  write_entry(key, field, invoke, kept)
  return true, true
end
"""

# KEYS: procedures, version; ARGV: field, invoke, member, heartbeat prefix, node id. Adds a callee to a
# registration unless a live node holds it as "single" or with another policy. Returns {1, entry, version}
# when it changed the entry, {claimed, entry} when not (the callee was there already, or it is refused).
_CLAIM = (
    _ENTRY
    + """
alive_nodes[ARGV[5]] = true
local claimed, changed = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if changed then return {1, entry, redis.call('INCR', KEYS[2])} end
return {claimed and 1 or 0, entry}
"""
)

# KEYS: procedures, version; ARGV: node id, heartbeat prefix, then (field, invoke, member) for each callee
# the node has. Makes the hash say exactly that of the node (after Redis lost the node's callees, or some
# left while Redis could not be told), keeping the place of those still there. Returns {version (0: no
# change), changed fields, refused fields}.
_SYNC = (
    _ENTRY
    + """
alive_nodes[ARGV[1]] = true
local wanted = {}
for i = 3, #ARGV, 3 do wanted[ARGV[i] .. ' ' .. ARGV[i + 2]] = true end
local changed, refused = {}, {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local field = entries[i]
  local invoke, members = read_entry(entries[i + 1])
  if invoke then
    local kept = {}
    for _, member in ipairs(members) do
      if node_of(member) ~= ARGV[1] or wanted[field .. ' ' .. member] then kept[#kept + 1] = member end
    end
    if #kept < #members then
      write_entry(KEYS[1], field, invoke, kept)
      changed[#changed + 1] = field
    end
  end
end
for i = 3, #ARGV, 3 do
  local claimed, change = claim(KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2])
  if change then changed[#changed + 1] = ARGV[i] end
  if not claimed then refused[#refused + 1] = ARGV[i] end
end
local version = 0
if #changed > 0 then version = redis.call('INCR', KEYS[2]) end
return {version, changed, refused}
"""
)

# KEYS: procedures, version; ARGV: field, member. Returns the new version, or 0 when nothing changed.
_RELEASE = (
    _ENTRY
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local invoke, members = read_entry(raw)
if not invoke then return 0 end
local kept = {}
for _, member in ipairs(members) do
  if member ~= ARGV[2] then kept[#kept + 1] = member end
end
if #kept == #members then return 0 end
write_entry(KEYS[1], ARGV[1], invoke, kept)
return redis.call('INCR', KEYS[2])
"""
)

# KEYS: procedures, version; ARGV: heartbeat prefix, a node whose callees go too ('' for none). Removes the
# callees of nodes without a heartbeat, and entries that are not one. Returns {entries that lost callees,
# bad entries, version, changed fields}.
_PURGE = (
    _ENTRY
    + """
local entries = redis.call('HGETALL', KEYS[1])
local dead, bad, changed = 0, 0, {}
for i = 1, #entries, 2 do
  local field = entries[i]
  local invoke, members = read_entry(entries[i + 1])
  if not invoke then
    redis.call('HDEL', KEYS[1], field)
    bad = bad + 1
    changed[#changed + 1] = field
  else
    local kept = {}
    for _, member in ipairs(members) do
      local node = node_of(member)
      if node ~= ARGV[2] and alive(ARGV[1], node) then kept[#kept + 1] = member end
    end
    if #kept < #members then
      write_entry(KEYS[1], field, invoke, kept)
      dead = dead + 1
      changed[#changed + 1] = field
    end
  end
end
local version
if #changed > 0 then
  version = redis.call('INCR', KEYS[2])
else
  version = tonumber(redis.call('GET', KEYS[2]) or '0')
end
return {dead, bad, version, changed}
"""
)

# KEYS: procedures, version. The whole hash and its version, for a node's view of it.
_LOAD = """
return {tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('HGETALL', KEYS[1])}
"""

# Announce a keyed broadcast unless another node did: the first node to SET the key PUBLISHes the delivery.
_ANNOUNCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('PUBLISH', KEYS[2], ARGV[3])
end
return -1
"""

# KEYS: heartbeat, procedures version. SET the heartbeat; returns whether it still existed (if not, the
# node's callees may have been purged) and the version of the procedures hash.
_BEAT = """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return {existed, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

#: Fields named in one ``procedures`` message at most; beyond, the message asks for a reload of them all.
_MAX_NOTIFIED_FIELDS = 1000

# Presence state: ``B:state`` lists the nodes keeping state (node id: "1" when it has subscribers of meta
# topics, else "0"); each node has ``B:sessions:<node>``, ``B:subscriptions:<node>`` and
# ``B:subscribers:<node>:<subscription id>`` (see ``Channels``). A node is alive while its heartbeat key is.
_LIVE_OTHERS = """
local function live_others(state, me, beats)
  local nodes = {}
  for _, node in ipairs(redis.call('HKEYS', state)) do
    if node ~= me and redis.call('EXISTS', beats .. node) == 1 then table.insert(nodes, node) end
  end
  return nodes
end
"""

# KEYS[1] state; ARGV: this node, heartbeat prefix, key prefix, key suffix, HGETALL or HLEN. For each other
# live node: its id, then the command's answer for its key (prefix .. node .. suffix).
_GATHER = (
    _LIVE_OTHERS
    + """
local out = {}
for _, node in ipairs(live_others(KEYS[1], ARGV[1], ARGV[2])) do
  table.insert(out, node)
  table.insert(out, redis.call(ARGV[5], ARGV[3] .. node .. ARGV[4]))
end
return out
"""
)

# KEYS[1] state; ARGV: this node, heartbeat prefix, base, then changes of this node's state, each a code and
# its arguments: J session identity (joined), L session (left), S subscription details session identity
# first-here (subscribed; details only when first), U subscription session last-here (unsubscribed). One
# answer per change: for S, 1 when no other live node held the subscription (it was created in the cluster);
# for U, 1 when no live node holds it any more (deleted); else 0.
_APPLY = (
    _LIVE_OTHERS
    + """
local me, beats, base = ARGV[1], ARGV[2], ARGV[3]
local sessions = base .. 'sessions:' .. me
local subscriptions = base .. 'subscriptions:' .. me
local others = nil
local function held_elsewhere(id)
  if others == nil then others = live_others(KEYS[1], me, beats) end
  for _, node in ipairs(others) do
    if redis.call('HEXISTS', base .. 'subscriptions:' .. node, id) == 1 then return true end
  end
  return false
end
local out = {}
local i = 4
while i <= #ARGV do
  local op = ARGV[i]
  local answer = 0
  if op == 'J' then
    redis.call('HSET', sessions, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'L' then
    redis.call('HDEL', sessions, ARGV[i + 1])
    i = i + 2
  elseif op == 'S' then
    local id = ARGV[i + 1]
    redis.call('HSET', base .. 'subscribers:' .. me .. ':' .. id, ARGV[i + 3], ARGV[i + 4])
    if ARGV[i + 5] == '1' then
      redis.call('HSET', subscriptions, id, ARGV[i + 2])
      if not held_elsewhere(id) then answer = 1 end
    end
    i = i + 6
  elseif op == 'U' then
    local id = ARGV[i + 1]
    redis.call('HDEL', base .. 'subscribers:' .. me .. ':' .. id, ARGV[i + 2])
    if ARGV[i + 3] == '1' then
      redis.call('HDEL', subscriptions, id)
      if not held_elsewhere(id) then answer = 1 end
    end
    i = i + 4
  else
    return redis.error_reply('unknown presence change ' .. tostring(op))
  end
  table.insert(out, answer)
end
return out
"""
)

# Delete one node's state (ARGV[1]: the node, ARGV[2]: the base with its colon).
_DROP_NODE = """
local function drop_node(node, base)
  local subscriptions = base .. 'subscriptions:' .. node
  for _, id in ipairs(redis.call('HKEYS', subscriptions)) do
    redis.call('DEL', base .. 'subscribers:' .. node .. ':' .. id)
  end
  redis.call('DEL', subscriptions, base .. 'sessions:' .. node)
end
"""

# KEYS[1] state; ARGV: this node, base, "1" if it has subscribers of meta topics. Start afresh: the node
# writes its sessions and subscriptions again next.
# KEYS[1] state; ARGV: this node, base, its meta flag. Answers 1 when the node was in the state hash (0: it
# never was, or the other nodes purged it, taking it for dead, and told its members' leaving).
_RESET_NODE = (
    _DROP_NODE
    + """
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
drop_node(ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return existed
"""
)

# KEYS[1] state; ARGV: this node, heartbeat prefix, base. A node leaving the cluster (its heartbeat deleted)
# leaves its state to the live nodes, whose purge tells its members' leaving; with none left, it drops it.
_LEAVE_STATE = (
    _LIVE_OTHERS
    + _DROP_NODE
    + """
if #live_others(KEYS[1], ARGV[1], ARGV[2]) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
drop_node(ARGV[1], ARGV[3])
return 1
"""
)

# KEYS[1] state; ARGV: heartbeat prefix, base. Removes the state of the nodes whose heartbeat is gone and
# returns it, to this node only (the script is atomic): {{node, sessions, {{subscription id, details,
# subscribers, 1 if no live node holds it}, ...}}, ...}, then the live nodes' flags (HGETALL of the state).
_PURGE_STATE = """
local dead = {}
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 0 then table.insert(dead, node) end
end
for _, node in ipairs(dead) do redis.call('HDEL', KEYS[1], node) end
local live = redis.call('HKEYS', KEYS[1])
local lost = {}
for _, node in ipairs(dead) do
  local sessions_key = ARGV[2] .. 'sessions:' .. node
  local subscriptions_key = ARGV[2] .. 'subscriptions:' .. node
  local sessions = redis.call('HGETALL', sessions_key)
  local subscriptions = redis.call('HGETALL', subscriptions_key)
  local held = {}
  for i = 1, #subscriptions, 2 do
    local id = subscriptions[i]
    local key = ARGV[2] .. 'subscribers:' .. node .. ':' .. id
    local members = redis.call('HGETALL', key)
    redis.call('DEL', key)
    local deleted = 1
    for _, other in ipairs(live) do
      if redis.call('HEXISTS', ARGV[2] .. 'subscriptions:' .. other, id) == 1 then deleted = 0 break end
    end
    table.insert(held, {id, subscriptions[i + 1], members, deleted})
  end
  redis.call('DEL', sessions_key, subscriptions_key)
  table.insert(lost, {node, sessions, held})
end
return {lost, redis.call('HGETALL', KEYS[1])}
"""

#: The most changes of a node's presence state sent to Redis in one script.
STATE_BATCH = 2000

_NOT_JSON_ERROR = "wamp.error.invalid_argument"
_NOT_JSON_ARGS = ["arguments that JSON cannot carry (e.g. binary) cannot cross nodes"]


class BusUnavailable(Exception):
    """Redis is not reachable right now; the node keeps serving its own clients."""


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


class RemoteCaller:
    """A ``Caller`` on another node, for the call ``call_id`` it sent this one (``request`` here): the answers
    travel back on the bus. Its identity is known only when the caller asked for it to be disclosed."""

    __slots__ = ("_bus", "node", "call_id", "request", "id", "authid", "authrole")

    def __init__(self, bus: RedisBus, node: str, call_id: str, request: int, body: dict[str, Any]) -> None:
        self._bus = bus
        self.node = node
        self.call_id = call_id
        self.request = request
        self.id: int = body.get("caller") or 0
        self.authid: str | None = body.get("caller_authid")
        self.authrole: str | None = body.get("caller_authrole")

    def send_result(
        self,
        request: int,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        """Carry a result back to the calling node (one that JSON cannot carry becomes an error)."""
        body = {"call": self.call_id, "args": args, "kwargs": kwargs, "progress": progress}
        if not self._bus._send_node(self.node, "result", body):
            body = {"call": self.call_id, "error": _NOT_JSON_ERROR, "args": _NOT_JSON_ARGS}
            self._bus._send_node(self.node, "error", body)
        if not progress:
            self._bus._served.pop((self.node, self.call_id), None)

    def send_error(
        self, request: int, error: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> None:
        """Carry the call's error back to the calling node."""
        body = {"call": self.call_id, "error": error, "args": args, "kwargs": kwargs}
        self._bus._send_node(self.node, "error", body)
        self._bus._served.pop((self.node, self.call_id), None)


class RemoteCallee:
    """A ``Callee`` on another node (its session ``id`` there): INVOCATIONs travel to its node as calls on
    the bus, INTERRUPTs as cancels. Always interruptible: its node knows whether the session takes
    INTERRUPTs, and answers a cancel as its own dealer does."""

    __slots__ = ("_bus", "node", "id")

    interruptible = True

    def __init__(self, bus: RedisBus, node: str, session_id: int) -> None:
        self._bus = bus
        self.node = node
        self.id = session_id

    def __repr__(self) -> str:
        return f"<RemoteCallee {self.id} on {self.node}>"

    def send_invocation(self, invocation: int, registration: Registration, call: Call) -> None:
        """Send ``call`` to the callee's node, for that callee of ``registration``."""
        self._bus._invoke_remote(self, invocation, registration, call)

    def send_interrupt(self, invocation: int, mode: str) -> None:
        """Cancel the INVOCATION on the callee's node."""
        self._bus._interrupt_remote(invocation, mode)


@dataclass(slots=True, eq=False)
class _RemoteInvocation:
    """An INVOCATION of this node's dealer served by a callee on another node."""

    callee: RemoteCallee
    invocation: int


class RedisBus(Service):
    """Connects one node (an app's router and dispatcher) to the others through Redis.

    Add it to a service tree (``twistd sandstone --redis URL`` does) or call ``startService`` yourself.
    ``url`` is a ``redis://``, ``rediss://`` (TLS) or ``redis+sentinel://`` URL (``_redis_url``); a bad one,
    or TLS files that cannot be loaded, raise ``ValueError`` here. Without Redis the node keeps serving its
    own clients; it reconnects with capped backoff (from 0.5 s to ``reconnect_max_delay``), however the
    connection failed, each TCP connect bounded by ``connect_timeout`` and each Redis answer by
    ``command_timeout``.

    ``cluster_name`` (if any) and the Redis database are part of every channel and key name, so that
    clusters sharing a Redis server stay apart. With a ``cluster_secret`` (default: the environment
    variable ``SANDSTONE_CLUSTER_SECRET``), the messages between nodes are signed, and unsigned ones refused.
    """

    keys_broadcasts = True  # every node makes the broadcasts of a forwarded event: tell them apart

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
        connect_timeout: float = 5.0,
        reconnect_max_delay: float = 5.0,
        max_message_bytes: int = 1_048_576,
        dedupe_window: float = 120.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.address = RedisAddress.parse(url)
        self._tls = ClientTLS(self.address.tls) if self.address.tls is not None else None
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
        self._reactor = reactor
        self._set_channels()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
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
                "announced_elsewhere",
                "reconnects",
                "nodes_purged",
                "rejoined",
            ),
            0,
        )
        self._events = events
        self._reactor = reactor
        self._seen = _Recent(reactor, dedupe_window)
        # How long a node's claim to announce a keyed broadcast lives in Redis: every node handles a
        # forwarded event within it (a later copy still meets the dedupe window of each node).
        self.announce_claim_ttl = min(dedupe_window, 30.0)
        # calls sent to callees on other nodes, by call id; the call id of each INVOCATION (its dealer's id)
        self._remote_calls: dict[str, _RemoteInvocation] = {}
        self._call_ids: dict[int, str] = {}
        # this node's view of the procedures hash: each field's callees, the callees of other nodes (one
        # object each, as long as some field names it), the version every change up to which it reflects
        self._view: dict[str, tuple[tuple[str, int], ...]] = {}
        self._callees: dict[tuple[str, int], RemoteCallee] = {}
        self._callee_refs: Counter[tuple[str, int]] = Counter()
        self._version = 0
        self._versions_seen: set[int] = set()  # versions learned beyond ``_version``
        self._suspect = 0  # a version Redis had at a beat while the view was behind: reload if still behind
        self._reloading: list[Deferred[None]] | None = None  # calls waiting for the reload under way
        self._reclaim_due = True  # False between a (re)connect's claims and the next beat
        self._served: dict[tuple[str, str], RemoteCaller] = {}
        self._served_requests = itertools.count(1)
        self._commands: RedisLink | None = None
        self._subscriber: RedisLink | None = None
        self._sentinel_watch: RedisLink | None = None
        self._commands_up = False
        self._subscribed = False
        self._outage_logged = False
        self._was_connected = False  # ever, since started: "cannot reach" Redis before, "lost" it after
        self._slow_start: IDelayedCall | None = None  # the warning due if connecting takes too long
        self._beat_failing = False
        self._purge_failing = False
        self._ready_waiters: list[Deferred[None]] = []
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._pending_ops: list[Any] = []  # changes of the presence state not sent yet (see _queue_state)
        self._state_written = False  # whether this node wrote its state to Redis before (see _restore_state)
        self._last_announced: tuple[Publication | None, bytes] = (None, b"")  # what the store may reuse
        self._pending_answers: list[Deferred[bool] | None] = []
        self._state_flush: IDelayedCall | None = None
        self._meta_nodes: set[str] = set()  # the other nodes with subscribers of meta topics
        self.wants_meta = False  # whether there are any (the ``Cluster`` attribute)

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
        #: Retained events and event history, in Redis (``_redis_store.py``).
        self.store = RedisStore(
            self._command,
            self.channels.base,
            self.node_id,
            self.router.history_rules.limit_for,
            self._reactor,
            self._announced_as,
        )

    def _announced_as(self, publication: Publication) -> bytes | None:
        """The delivery message ``announce`` just made of ``publication`` (the store keeps the same)."""
        last, payload = self._last_announced
        return payload if last is publication else None

    def startService(self) -> None:
        super().startService()
        self._set_channels()  # the realm may change until now
        self.router.use_cluster(self)
        endpoint = redis_endpoint(
            self.address,
            self._reactor,
            timeout=self.connect_timeout,
            tls=self._tls,
            on_master=self._master_found,
        )
        self._commands = self._link(
            endpoint, CommandProtocol, "command", self._commands_ready, self._commands_lost
        )
        self._subscriber = self._link(
            endpoint,
            SubscriberProtocol,
            "pub/sub",
            self._subscriber_ready,
            self._subscriber_lost,
            "SUBSCRIBE",
        )
        self._commands.start()
        self._subscriber.start()
        if isinstance(endpoint, SentinelEndpoint):
            self._sentinel_watch = endpoint.watcher(
                initial_delay=min(0.5, self.reconnect_max_delay),
                max_delay=self.reconnect_max_delay,
                on_switch=self._master_switched,
                label=f"cluster bus node {self.node_id}: Sentinel watch",
            )
            self._sentinel_watch.start()
        self._heartbeat.start(self.heartbeat_interval, now=False)
        self._slow_start = self._reactor.callLater(SLOW_START_WARNING, self._not_connected_yet)
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

    def _link(
        self,
        endpoint: Any,
        protocol: type,
        kind: str,
        ready: Callable[[Any], Deferred[Any] | None],
        lost: Callable[[str], None],
        ready_step: str = "ready",
    ) -> RedisLink:
        return RedisLink(
            endpoint,
            protocol,
            self.address,
            reactor=self._reactor,
            timeout=self.command_timeout,
            initial_delay=min(0.5, self.reconnect_max_delay),
            max_delay=self.reconnect_max_delay,
            select_db=protocol is CommandProtocol,  # pub/sub ignores the database
            ready=ready,
            lost=lost,
            failed=lambda reason: self._outage(f"{kind} connection to Redis failed ({reason})"),
            on_message=self._received,
            label=f"cluster bus node {self.node_id}: {kind} connection",
            ready_step=ready_step,
        )

    def _master_switched(self, address: tuple[str, int]) -> None:
        """The Sentinels announced a new master: move both connections there now."""
        for link in (self._commands, self._subscriber):
            if link is not None:
                link.move_to(address)

    def _master_found(self, old: str | None, new: str) -> None:
        """The Sentinels name a master (another one than before, if ``old``)."""
        sentinel = self.address.sentinel
        master = sentinel.master if sentinel is not None else ""
        if old is None:
            log.info(
                "cluster bus node {node}: the Sentinels name {new} as master {master}",
                node=self.node_id,
                master=master,
                new=new,
            )
        else:
            log.warn(
                "cluster bus node {node}: master {master} moved from {old} to {new} (Sentinel failover)",
                node=self.node_id,
                master=master,
                old=old,
                new=new,
            )

    def stopService(self) -> Deferred[None]:
        """Leave the cluster: drop the heartbeat and this node's callees (telling the other nodes), then
        disconnect."""
        super().stopService()
        self._flush_state()  # the last changes of this node's sessions, before it leaves
        self.store.flush()  # and the last history entries
        self._cancel_slow_start()
        if self._heartbeat.running:
            self._heartbeat.stop()
        self._fail_remote_calls("this node is shutting down")
        if self.router.cluster is self:
            self.router.use_cluster(None)
        for field in list(self._view):  # the other nodes' callees are out of reach from now on
            self._apply(field, None)
        leaving = self._command("delete", self.channels.heartbeat(self.node_id))
        leaving.addCallback(lambda _: self._command("eval", _PURGE, *self._purge_arguments(self.node_id)))
        leaving.addCallback(self._left)
        leaving.addCallback(
            lambda _: self._command(
                "eval",
                _LEAVE_STATE,
                [self.channels.state],
                [self.node_id, self._heartbeat_prefix, self._base],
            )
        )
        leaving.addErrback(lambda _: None)  # then the TTL does it
        return leaving.addCallback(lambda _: self._disconnect())

    def _left(self, reply: Any) -> Deferred[Any] | None:
        """Tell the other nodes which registrations lost this node's callees."""
        purged = _purge_reply(reply)
        return None if purged is None or not purged[3] else self._notify(purged[3], purged[2])

    def _disconnect(self) -> Deferred[None]:
        from twisted.internet.defer import gatherResults

        links = (self._commands, self._subscriber, self._sentinel_watch)
        stopping = [link.disconnect() for link in links if link is not None]
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
        self._cancel_slow_start()
        if self._outage_logged:
            self.stats["reconnects"] += 1
            self._outage_logged = False
            if self._was_connected:
                log.info(
                    "cluster bus node {node} reconnected to Redis at {url}", node=self.node_id, url=self._url
                )
        if not self._was_connected:
            self._was_connected = True
            log.info("cluster bus node {node} connected to Redis at {url}", node=self.node_id, url=self._url)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def _subscriber_ready(self, protocol: SubscriberProtocol) -> Deferred[None]:
        """Subscribe a new pub/sub connection to the bus channels; if Redis does not confirm in time, the
        connection is dropped and made again (``RedisLink``)."""
        d: Deferred[Any] = protocol.subscribe(list(self._rules))
        d.addTimeout(self.command_timeout, self._reactor)

        def subscribed(_: Any) -> None:
            self._subscribed = True
            self._reload()  # what changed while this node was not listening
            self._maybe_ready()

        return d.addCallback(subscribed)

    def _subscriber_lost(self, reason: str) -> None:
        self._subscribed = False
        self._outage(f"pub/sub connection lost ({reason})")

    def _commands_ready(self, protocol: CommandProtocol) -> None:
        self._commands_up = True
        self._beat()
        self._reclaim()
        self._restore_state()
        self._reclaim_due = False  # done: the first beat need not do it again (its key is new)
        self._reload()
        self._maybe_ready()

    def _commands_lost(self, reason: str) -> None:
        self._commands_up = False
        self._outage(f"command connection lost ({reason})")
        self._fail_remote_calls("the cluster bus lost its Redis connection")

    @property
    def _url(self) -> str:
        return str(self.address)  # without its password

    def _outage(self, what: str) -> None:
        """Say once per outage (not once per attempt: those are debug lines) that Redis is out of reach."""
        if not self.running or self._outage_logged:
            return
        self._outage_logged = True
        if self._was_connected:
            message = "{what}; serving local clients only until Redis at {url} is back"
        else:
            message = "cannot reach Redis at {url}: {what}; serving local clients only, retrying"
        log.warn("cluster bus node {node}: " + message, node=self.node_id, what=what, url=self._url)

    def _not_connected_yet(self) -> None:
        self._slow_start = None
        if not self.connected:
            self._outage(f"not connected within {SLOW_START_WARNING:g} s")

    def _cancel_slow_start(self) -> None:
        call, self._slow_start = self._slow_start, None
        if call is not None and call.active():
            call.cancel()

    # commands

    def _command(self, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run a command on the command connection; it fails at once when that is down, and after
        ``command_timeout`` without an answer (the connection is then dropped and made again)."""
        protocol = self._commands.protocol if self._commands is not None else None
        if not self._commands_up or protocol is None:
            return _failed(BusUnavailable("Redis is not connected"))
        d: Deferred[Any] = maybeDeferred(getattr(protocol, name), *args, **kwargs)
        return d

    def _publish(self, channel: str, payload: bytes, announce_key: str | None = None) -> Deferred[Any]:
        """PUBLISH ``payload`` on ``channel``; with an ``announce_key``, only if no node claimed that key
        (this one claims it: see ``announce``). Fires with the number of nodes that got it (-1: another node
        announced it), or ``None`` when it was not sent."""
        if len(payload) > self.max_message_bytes:
            self.stats["send_failures"] += 1
            log.warn(
                "cluster bus: a {size}-byte message for {channel} exceeds the {limit}-byte limit; not sent",
                size=len(payload),
                channel=channel,
                limit=self.max_message_bytes,
            )
            return succeed(None)
        if announce_key is None:
            d = self._command("publish", channel, payload.decode())
        else:
            claim = self.channels.announced(announce_key)
            ttl = int(self.announce_claim_ttl * 1000)
            d = self._command("eval", _ANNOUNCE, [claim, channel], [self.node_id, ttl, payload.decode()])

        def sent(receivers: Any) -> Any:
            if receivers == -1:  # another node announced it
                self.stats["announced_elsewhere"] += 1
            else:
                self.stats["published"] += 1
            return receivers

        def failed(failure: Failure) -> None:
            self.stats["send_failures"] += 1
            if not self._outage_logged:
                log.warn(
                    "cluster bus: could not publish on {channel}: {error}",
                    channel=channel,
                    error=failure.getErrorMessage(),
                )

        return d.addCallbacks(sent, failed)

    def _publish_internal(
        self, channel: str, payload: bytes, announce_key: str | None = None
    ) -> Deferred[Any]:
        """Publish a node's message on an internal channel, signed when the cluster has a secret."""
        signed = payload if self._signer is None else self._signer.sign(channel, payload)
        return self._publish(channel, signed, announce_key)

    def _beat(self) -> Deferred[Any]:
        self._check_subscriber()
        if not self._commands_up:
            return succeed(None)
        keys = [self.channels.heartbeat(self.node_id), self.channels.procedures_version]
        d = self._command("eval", _BEAT, keys, [int(self.heartbeat_ttl * 1000)])
        d.addCallbacks(self._beaten, self._beat_failed)
        return d

    def _check_subscriber(self) -> None:
        """PING the pub/sub connection, which otherwise only listens: one that no longer answers (a peer
        or proxy gone without closing it) is dropped and made again after ``command_timeout``."""
        protocol = self._subscriber.protocol if self._subscriber is not None else None
        if self._subscribed and protocol is not None:
            maybeDeferred(protocol.ping).addErrback(lambda _: None)  # a timeout drops the connection

    def _beaten(self, reply: Any) -> Deferred[Any]:
        if self._beat_failing:
            self._beat_failing = False
            log.info("cluster bus node {node}: heartbeats work again", node=self.node_id)
        existed, version = (
            (reply[0], reply[1]) if isinstance(reply, list) and len(reply) == 2 else (reply, None)
        )
        if not existed and self._reclaim_due:
            # expired (this node was paused longer than the TTL, or Redis lost it): the other nodes purged
            # our registrations and presence state, claim and write them again
            self._reclaim()
            self._restore_state()
        self._reclaim_due = True
        if isinstance(version, int):
            self._check_view(version)
        d = self._purge()
        d.addCallback(lambda _: self._check_remote_nodes())
        d.addCallback(lambda _: self._purge_state())
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

    def _purge_arguments(self, drop: str = "") -> tuple[list[str], list[str]]:
        keys = [self.channels.procedures, self.channels.procedures_version]
        return keys, [self._heartbeat_prefix, drop]

    def _purge(self, drop: str = "") -> Deferred[None]:
        """Remove dead nodes' callees (and those of node ``drop``), and entries that are not a
        registration's, from the procedures hash; update this node's view and tell the others."""
        d = self._command("eval", _PURGE, *self._purge_arguments(drop))
        d.addCallbacks(self._purged, self._purge_failed)
        return d

    def _purged(self, reply: Any) -> Deferred[None] | None:
        if self._purge_failing:
            self._purge_failing = False
            log.info("cluster bus node {node}: the purge of dead nodes works again", node=self.node_id)
        purged = _purge_reply(reply)
        if purged is None:
            return None
        _, bad, version, changed = purged
        if bad:
            self.stats["bad_entries"] += bad
            log.warn(
                "cluster bus: removed {count} entries that name no node from {key} (written there by "
                "something other than a sandstone node)",
                count=bad,
                key=self.channels.procedures,
            )
        if not changed:
            return None
        self._notify(changed, version)
        return self._refresh(changed, version)

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

    def first_delivery(self, publication: Publication) -> bool:
        """Whether this node has not delivered the keyed ``publication`` yet (its own copy, or another
        node's from the bus); it has from now on."""
        key = publication.key
        return key is None or self._seen.first_time(key)

    def announce(self, publication: Publication) -> None:
        """Send a publication to the other nodes (after it was delivered here). A keyed one is announced by
        the first node to claim its key only: the others made the same broadcast, or get it from that one."""
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
        self._last_announced = (publication, payload)
        self._publish_internal(self.channels.peers, payload, publication.key)

    # events

    def forward(self, name: str, data: dict[str, Any], parent: Cause | None) -> Cause | None:
        """Send a forwarded event to the other nodes; the cause to handle it under here.

        Dispatched while handling another forwarded event (which every node does), its id derives from
        that event's, so each node runs its listeners once however many nodes sent it: ``None`` when this
        node has handled it already.
        """
        event_id = uuid.uuid4().hex if parent is None else parent.child_event_id(name)
        if not self._seen.first_time(f"event:{event_id}"):
            return None
        self._publish_internal(self.channels.peers, encode_event(self.node_id, event_id, name, data))
        return Cause(event_id)

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
            if type(msg) is DeliveryMessage:
                self._on_delivery(msg, produced=channel == self.channels.deliveries)
            else:
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
        self._events.dispatch(msg.name, event, cause=Cause(msg.id))

    def _on_delivery(self, msg: DeliveryMessage, produced: bool = False) -> None:
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
        self.router.deliver_remote(publication, produced)

    def _on_node_message(self, msg: NodeMessage) -> None:
        handler = self._NODE_HANDLERS.get(msg.type)
        if handler is None:
            raise EnvelopeError(f"unknown node message type {msg.type!r}")
        handler(self, msg.origin, msg.body)

    # registrations: claims, and this node's view of the cluster's

    def claim(self, registration: Registration, callee: Callee) -> Deferred[bool]:
        """Claim cluster-wide that this node's ``callee`` serves ``registration``; False when a live node
        holds it as ``single`` or with another invocation policy. The answer updates this node's view (and
        the other nodes are told of the change).

        When Redis cannot answer, the callee stays local and is claimed again on reconnect.
        """
        field = procedure_field(registration.uri, registration.match)
        member = self._member(callee)
        arguments = [field, registration.invoke, member, self._heartbeat_prefix, self.node_id]
        d = self._command("eval", _CLAIM, self._procedure_keys(), arguments)
        d.addCallback(self._claimed, field)

        def unavailable(failure: Failure) -> bool:
            log.warn(
                "cluster bus: could not claim {uri} ({error}); it is local until Redis is back",
                uri=registration.uri,
                error=failure.getErrorMessage(),
            )
            return True

        return d.addErrback(unavailable)

    def _claimed(self, reply: Any, field: str) -> bool:
        if not isinstance(reply, list) or len(reply) < 2:
            raise EnvelopeError(f"unexpected answer to a claim: {reply!r}")
        claimed, entry = reply[0], reply[1]
        self._apply(field, entry)
        if len(reply) > 2 and isinstance(reply[2], int):  # the claim changed the entry
            self._learned(reply[2])
            self._notify([field], reply[2])
        return bool(claimed)

    def released(self, registration: Registration, callee: Callee) -> None:
        """This node's ``callee`` no longer serves ``registration``: out of its entry (and the view)."""
        field = procedure_field(registration.uri, registration.match)
        d = self._command("eval", _RELEASE, self._procedure_keys(), [field, self._member(callee)])

        def done(version: Any) -> None:
            if isinstance(version, int) and version > 0:
                self._learned(version)
                self._notify([field], version)

        d.addCallbacks(
            done,
            lambda f: log.debug(
                "release of {uri} failed: {error}", uri=registration.uri, error=f.getErrorMessage()
            ),
        )

    def settle(self, call: Call) -> Deferred[None]:
        """No registration in this node's view serves ``call``: fires once the view has every change Redis
        has (a registration made on another node a moment ago, whose message is on its way, is read now).
        One GET when the view is up to date. Fails with ``cluster_unavailable`` when Redis cannot be
        asked."""
        unavailable = WampError(CLUSTER_UNAVAILABLE, f"cannot reach the cluster to find {call.procedure}")
        if not self.connected:
            return _failed(unavailable)
        d = self._command("get", self.channels.procedures_version)

        def compare(version: Any) -> Deferred[None] | None:
            if int(version or 0) <= self._version:
                return None
            return self._reload_once()

        def failed(failure: Failure) -> None:
            raise unavailable

        return d.addCallbacks(compare, failed)

    def _reload_once(self) -> Deferred[None]:
        """A reload of the view; calls waiting for one share the one under way."""
        waiting: Deferred[None] = Deferred()
        if self._reloading is not None:
            self._reloading.append(waiting)
            return waiting
        self._reloading = [waiting]
        self._reload().addBoth(self._reloaded)
        return waiting

    def _reloaded(self, _: Any) -> None:
        waiting, self._reloading = self._reloading or [], None
        for d in waiting:
            d.callback(None)

    def _member(self, callee: Callee) -> str:
        return f"{self.node_id}:{callee.id}"

    def _procedure_keys(self) -> list[str]:
        return [self.channels.procedures, self.channels.procedures_version]

    def _reclaim(self) -> Deferred[None]:
        """Make the procedures hash say of this node's callees what is true now (Redis lost them, or some
        left while Redis could not be told), in one script."""
        arguments = [self.node_id, self._heartbeat_prefix]
        for registration, callee in self.router.client_registrations():
            field = procedure_field(registration.uri, registration.match)
            arguments += [field, registration.invoke, self._member(callee)]
        d = self._command("eval", _SYNC, self._procedure_keys(), arguments)
        d.addCallback(self._reclaimed)
        d.addErrback(self._view_failed)
        return d

    def _reclaimed(self, reply: Any) -> Deferred[None] | None:
        if not isinstance(reply, list) or len(reply) != 3 or not isinstance(reply[0], int):
            raise EnvelopeError(f"unexpected answer to the claims of this node's callees: {reply!r}")
        version, changed, refused = reply[0], [str(f) for f in reply[1]], [str(f) for f in reply[2]]
        for field in refused:
            log.warn(
                "cluster bus: {field} was registered on another node during the outage; calls go to that "
                "node's callee, and this node's stays registered behind it",
                field=field,
            )
        fields = list(dict.fromkeys(changed + refused))
        if not fields:
            return None
        if version:
            self._notify(changed, version)
        return self._refresh(fields, version)

    def _notify(self, fields: list[str], version: int) -> Deferred[Any]:
        """Tell the other nodes that these fields of the procedures hash changed (up to ``version``)."""
        body = {"fields": fields if len(fields) <= _MAX_NOTIFIED_FIELDS else None, "version": version}
        return self._publish_internal(self.channels.peers, encode_node(PROCEDURES, self.node_id, body))

    def _on_procedures(self, origin: str, body: dict[str, Any]) -> None:
        fields, version = body.get("fields"), body["version"]
        if fields is None:
            self._reload()
        elif fields:
            self._refresh(fields, version)

    def _refresh(self, fields: list[str], version: int) -> Deferred[None]:
        """Read these fields of the procedures hash into the view; every change up to ``version`` is then
        in it, as far as these fields go."""
        d = self._command("hmget", self.channels.procedures, fields)

        def read(entries: Any) -> None:
            if not isinstance(entries, list) or len(entries) != len(fields):
                raise EnvelopeError(f"unexpected answer to HMGET: {entries!r}")
            for field, entry in zip(fields, entries, strict=True):
                self._apply(field, entry)
            self._learned(version)

        d.addCallback(read)
        d.addErrback(self._view_failed)
        return d

    def _reload(self) -> Deferred[None]:
        """Read the whole procedures hash into the view."""
        d = self._command("eval", _LOAD, self._procedure_keys(), [])

        def loaded(reply: Any) -> None:
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                raise EnvelopeError(f"unexpected answer to the load of the procedures: {reply!r}")
            version, flat = reply
            entries = {str(field): entry for field, entry in zip(flat[::2], flat[1::2], strict=True)}
            for field in [f for f in self._view if f not in entries]:
                self._apply(field, None)
            for field, entry in entries.items():
                self._apply(field, entry)
            self._version = int(version)
            self._versions_seen = {v for v in self._versions_seen if v > self._version}
            self._suspect = 0

        d.addCallback(loaded)
        d.addErrback(self._view_failed)
        return d

    def _view_failed(self, failure: Failure) -> None:
        if failure.check(EnvelopeError):
            self.stats["malformed"] += 1
            log.warn("cluster bus: {reason}", reason=failure.getErrorMessage())
        elif failure.check(
            BusUnavailable, CancelledError, TimeoutError, ConnectionError, RedisConnectionError
        ):
            # Redis went away: the reconnect reads the view again
            log.debug("cluster bus: could not read the procedures: {error}", error=failure.getErrorMessage())
        elif failure.check(ResponseError):  # Redis refused it (a key of the wrong type...): say it, no trace
            log.warn(
                "cluster bus: could not read the procedures from Redis: {error}",
                error=failure.getErrorMessage(),
            )
        else:
            log.failure("cluster bus: could not update this node's view of the procedures", failure)

    def _learned(self, version: int) -> None:
        """The change that made ``version`` of the procedures hash is in the view."""
        if version <= self._version:
            return
        seen = self._versions_seen
        seen.add(version)
        while self._version + 1 in seen:
            self._version += 1
            seen.discard(self._version)

    def _check_view(self, version: int) -> None:
        """At a heartbeat: reload the view if a change is missing from it since the previous beat (its
        message was lost), or if Redis lost the hash (its version went back)."""
        if version < self._version:
            self._reload()
        elif version == self._version:
            self._suspect = 0
        elif self._suspect and self._version < self._suspect:
            self._reload()
        else:
            self._suspect = version

    def _apply(self, field: Any, raw: Any) -> None:
        """Give the router this node's view of one entry of the procedures hash (``None``: none)."""
        field = str(field)  # txredisapi reads a field made of digits as a number
        try:
            uri, match = parse_procedure_field(field)
        except EnvelopeError as exc:
            self._bad_entry(field, exc)
            return
        try:
            entry = None if raw is None else decode_entry(raw)
        except EnvelopeError as exc:
            self._bad_entry(field, exc)
            entry = None
        members = () if entry is None else entry.members
        self._hold(members)
        self._release_view(self._view.pop(field, ()))
        if members:
            self._view[field] = members
        order: list[Callee | int] = [
            session if node == self.node_id else self._callees[node, session] for node, session in members
        ]
        self.router.arrange_registration(uri, match, None if entry is None else entry.invoke, order)

    def _bad_entry(self, field: str, problem: EnvelopeError) -> None:
        self.stats["bad_entries"] += 1
        log.warn(
            "cluster bus: the entry of {field} in {key} is not a node's ({reason}); calls to it fail with "
            "no_such_procedure until the next purge removes it",
            field=field,
            key=self.channels.procedures,
            reason=problem,
        )

    def _hold(self, members: tuple[tuple[str, int], ...]) -> None:
        for node, session in members:
            if node != self.node_id:
                key = (node, session)
                if key not in self._callees:
                    self._callees[key] = RemoteCallee(self, node, session)
                self._callee_refs[key] += 1

    def _release_view(self, members: tuple[tuple[str, int], ...]) -> None:
        refs = self._callee_refs
        for node, session in members:
            if node != self.node_id:
                key = (node, session)
                refs[key] -= 1
                if refs[key] <= 0:
                    del refs[key]
                    del self._callees[key]

    # calls to callees on other nodes

    def _invoke_remote(
        self, callee: RemoteCallee, invocation: int, registration: Registration, call: Call
    ) -> None:
        """Send an INVOCATION of this node's dealer to the callee's node, as a call on its channel."""
        if not self._commands_up:
            text = f"cannot reach the cluster to call {call.procedure}"
            self.router.failed(callee, invocation, CLUSTER_UNAVAILABLE, [text], None)
            return
        call_id = uuid.uuid4().hex
        caller = call.caller
        disclose = call.disclose_me
        body = {
            "call": call_id,
            "procedure": call.procedure,
            "args": call.args,
            "kwargs": call.kwargs,
            "receive_progress": call.receive_progress,
            "caller": caller.id if disclose else None,
            "caller_authid": caller.authid if disclose else None,
            "caller_authrole": caller.authrole if disclose else None,
            "registration": registration.uri,
            "match": registration.match,
            "callee": callee.id,
        }
        try:
            payload = encode_node("call", self.node_id, body)
        except (TypeError, ValueError) as exc:
            log.warn(
                "cluster bus: a call for node {node} cannot travel as JSON: {reason}",
                node=callee.node,
                reason=exc,
            )
            self.router.failed(callee, invocation, _NOT_JSON_ERROR, list(_NOT_JSON_ARGS), None)
            return
        self._remote_calls[call_id] = _RemoteInvocation(callee, invocation)
        self._call_ids[invocation] = call_id
        sent = self._publish_internal(self.channels.node(callee.node), payload)
        sent.addCallback(self._call_sent, call_id)

    def _call_sent(self, receivers: Any, call_id: str) -> None:
        """A call reached no node (its node is gone, or the call could not be sent): it fails at once."""
        if isinstance(receivers, int) and receivers > 0:
            return
        remote = self._forget_call(call_id)
        if remote is None:
            return
        if receivers is None:
            error, reason = CLUSTER_UNAVAILABLE, f"the call could not be sent to node {remote.callee.node}"
        else:
            error, reason = CANCELED, f"node {remote.callee.node} is gone"
        self.router.failed(remote.callee, remote.invocation, error, [reason], None)

    def _forget_call(self, call_id: str) -> _RemoteInvocation | None:
        remote = self._remote_calls.pop(call_id, None)
        if remote is not None:
            self._call_ids.pop(remote.invocation, None)
        return remote

    def _interrupt_remote(self, invocation: int, mode: str) -> None:
        """Cancel an INVOCATION on the node serving it. In mode ``kill`` the caller waits for that node's
        answer; otherwise the call is over here already, and the answer is not waited for."""
        call_id = self._call_ids.get(invocation)
        if call_id is None:
            return
        remote = self._remote_calls[call_id]
        if mode != "kill":
            self._forget_call(call_id)
        self._send_node(remote.callee.node, "cancel", {"call": call_id, "mode": mode})

    def _on_result(self, origin: str, body: dict[str, Any]) -> None:
        remote = self._remote_calls.get(body["call"])
        if remote is None or remote.callee.node != origin:  # only the callee's node answers
            return
        progress = bool(body.get("progress"))
        if not progress:
            self._forget_call(body["call"])
        args, kwargs = body.get("args"), body.get("kwargs")
        problem = payload_problem(args, kwargs)  # JSON carries what other serializers cannot
        self.router.yielded(remote.callee, remote.invocation, args, kwargs, progress, problem)

    def _on_error(self, origin: str, body: dict[str, Any]) -> None:
        remote = self._remote_calls.get(body["call"])
        if remote is None or remote.callee.node != origin:
            return
        self._forget_call(body["call"])
        args, kwargs = body.get("args"), body.get("kwargs")
        problem = payload_problem(args, kwargs)
        self.router.failed(remote.callee, remote.invocation, body["error"], args, kwargs, problem)

    def _check_remote_nodes(self) -> Deferred[Any] | None:
        nodes = {remote.callee.node for remote in self._remote_calls.values()}
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
        """Calls to callees on ``node`` (every other node if ``None``) fail with ``wamp.error.canceled``."""
        for call_id, remote in list(self._remote_calls.items()):
            if node is None or remote.callee.node == node:
                self._forget_call(call_id)
                self.router.failed(remote.callee, remote.invocation, CANCELED, [reason], None)

    @property
    def remote_calls_in_flight(self) -> int:
        """Calls of local callers waiting for a callee on another node."""
        return len(self._remote_calls)

    # calls: callee side

    def _on_call(self, origin: str, body: dict[str, Any]) -> None:
        if not self._seen.first_time(f"call:{origin}:{body['call']}"):  # a replayed call runs once
            self.stats["duplicates"] += 1
            return
        caller = RemoteCaller(self, origin, body["call"], next(self._served_requests), body)
        call = Call(
            caller,
            caller.request,
            body["procedure"],
            body.get("args"),
            body.get("kwargs"),
            receive_progress=bool(body.get("receive_progress")),
            disclose_me=body.get("caller") is not None,
        )
        self._served[(origin, body["call"])] = caller
        uri = body.get("registration")
        try:
            self.router.call_from_cluster(
                call,
                body["procedure"] if uri is None else uri,
                body.get("match") or EXACT,
                body.get("callee"),
            )
        except WampError as exc:
            caller.send_error(call.request, exc.uri, exc.args_list or None, exc.kwargs or None)

    def _on_cancel(self, origin: str, body: dict[str, Any]) -> None:
        caller = self._served.get((origin, body["call"]))
        if caller is not None:
            mode = body.get("mode")
            self.router.cancel(caller, caller.request, mode if isinstance(mode, str) else None)

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

    # presence: this node's sessions and subscriptions in Redis, the other nodes' ones from there

    @property
    def _base(self) -> str:
        return self.channels.base + ":"

    def _restore_state(self) -> None:
        """Write this node's sessions and subscriptions afresh (after a reconnect, or when the other nodes
        took it for dead): what was written while Redis was out of reach is lost.

        When the other nodes had purged this node's state (it was cut off, or paused, longer than the
        heartbeat TTL), they told its members' leaving: then they join again (``Router.rejoined``: meta
        events, ``on_join``), once the state is back."""
        router = self.router
        flag = "1" if router.meta_listening else "0"
        written_before, self._state_written = self._state_written, True
        reset_done = self._state_command(
            "eval", _RESET_NODE, [self.channels.state], [self.node_id, self._base, flag]
        )
        if router.meta_listening:  # the others learn it at their next beat anyway; now is sooner
            self._send_peer("interest", {"meta": True})
        for session in list(router.sessions.values()):
            self.joined(session)
        rejoining: list[tuple[Subscription, Session, Deferred[bool]]] = []
        for subscription in router.client_subscriptions():
            details = _subscription_entry(subscription)
            for index, session in enumerate(list(subscription.sessions)):
                op = ["S", subscription.id, details, session.id, _member_entry(session), _flag(index == 0)]
                created: Deferred[bool] | None = Deferred() if written_before else None
                self._queue_state(op, created)
                if created is not None:
                    rejoining.append((subscription, session, created))
        if not written_before:
            return

        def reset(existed: Any) -> None:
            if existed == 0 and router.sessions:
                self.stats["rejoined"] += 1
                log.info(
                    "cluster bus node {node}: this node's state was gone from Redis (the other nodes took it "
                    "for dead, or Redis lost its data); its {sessions} sessions join the cluster again",
                    node=self.node_id,
                    sessions=len(router.sessions),
                )
                router.rejoined(rejoining)
            else:
                for _, _, created in rejoining:
                    created.addErrback(lambda _: None)

        reset_done.addCallback(reset)

    def _state_command(self, name: str, *args: Any) -> Deferred[Any]:
        """A command writing this node's state; when Redis cannot take it, the next reconnect rewrites all."""
        d = self._command(name, *args)
        d.addErrback(
            lambda f: log.debug("cluster bus: presence state not written: {error}", error=f.getErrorMessage())
        )
        return d

    def _queue_state(self, op: list[Any], answer: Deferred[bool] | None) -> None:
        """Queue a change of this node's state; the changes of one reactor turn go to Redis in one script
        (``_APPLY``), at most ``STATE_BATCH`` at a time. ``answer`` fires with the script's answer for it (or
        fails when Redis could not take it: the next reconnect rewrites the state anyway)."""
        if not self._commands_up:
            if answer is not None:
                answer.errback(BusUnavailable("Redis is not connected"))
            return
        self._pending_ops.extend(op)
        self._pending_answers.append(answer)
        if len(self._pending_answers) >= STATE_BATCH:
            self._flush_state()
        elif self._state_flush is None:
            self._state_flush = self._reactor.callLater(0, self._flush_state)

    def _flush_state(self) -> None:
        call, self._state_flush = self._state_flush, None
        if call is not None and call.active():
            call.cancel()
        ops, answers = self._pending_ops, self._pending_answers
        if not answers:
            return
        self._pending_ops, self._pending_answers = [], []
        d = self._command(
            "eval", _APPLY, [self.channels.state], [self.node_id, self._heartbeat_prefix, self._base, *ops]
        )

        def applied(results: Any) -> None:
            if not isinstance(results, list) or len(results) != len(answers):
                failed(Failure(BusUnavailable(f"unexpected answer from Redis: {results!r}"[:200])))
                return
            for answer, result in zip(answers, results, strict=True):
                if answer is not None:
                    answer.callback(result == 1)

        def failed(failure: Failure) -> None:
            log.debug("cluster bus: presence state not written: {error}", error=failure.getErrorMessage())
            for answer in answers:
                if answer is not None:
                    answer.errback(failure)

        d.addCallbacks(applied, failed)

    def joined(self, session: Session) -> None:
        """A session joined this node: add it to this node's sessions hash."""
        entry = json.dumps([session.authid, session.authrole, session.authmethod, session.authprovider])
        self._queue_state(["J", session.id, entry], None)

    def left(self, session: Session) -> None:
        """A session left this node: remove it from this node's sessions hash."""
        self._queue_state(["L", session.id], None)

    def subscribed(self, subscription: Subscription, session: Session, first: bool) -> Deferred[bool]:
        """Add a subscriber to this node's state; fires with whether no other live node held the
        subscription (when Redis cannot answer: whether it is the first here)."""
        d: Deferred[bool] = Deferred()
        entry = _subscription_entry(subscription) if first else ""
        self._queue_state(["S", subscription.id, entry, session.id, _member_entry(session), _flag(first)], d)
        return d.addErrback(lambda _: first)

    def unsubscribed(self, subscription: Subscription, session: Session, last: bool) -> Deferred[bool]:
        """Remove a subscriber from this node's state; fires with whether no live node holds the
        subscription any more (when Redis cannot answer: whether it was the last here)."""
        d: Deferred[bool] = Deferred()
        self._queue_state(["U", subscription.id, session.id, _flag(last)], d)
        return d.addErrback(lambda _: last)

    def _gather(self, prefix: str, suffix: str, command: str) -> Deferred[list[tuple[str, Any]]]:
        """(node, answer) for each other live node: ``command`` (HGETALL or HLEN) on its key. Without Redis,
        no other node is known: the answers are this node's own."""
        d = self._command(
            "eval",
            _GATHER,
            [self.channels.state],
            [self.node_id, self._heartbeat_prefix, self._base + prefix, suffix, command],
        )

        def pairs(flat: Any) -> list[tuple[str, Any]]:
            if not isinstance(flat, list):
                return []
            return [(_text(flat[i]), flat[i + 1]) for i in range(0, len(flat) - 1, 2)]

        def unavailable(failure: Failure) -> list[tuple[str, Any]]:
            if self._outage_logged:  # said once already
                return []
            log.warn(
                "cluster bus: could not read the other nodes' presence from Redis ({error}); answering "
                "for this node only",
                error=failure.getErrorMessage(),
            )
            return []

        return d.addCallbacks(pairs, unavailable)

    def sessions(self) -> Deferred[list[SessionInfo]]:
        """The other live nodes' sessions."""

        def parse(answers: list[tuple[str, Any]]) -> list[SessionInfo]:
            found = []
            for _node, flat in answers:
                for key, value in _hash_items(flat):
                    info = _session_info(key, value)
                    if info is None:
                        self.stats["bad_entries"] += 1
                    else:
                        found.append(info)
            return found

        return self._gather("sessions:", "", "HGETALL").addCallback(parse)

    def session_count(self) -> Deferred[int]:
        """How many sessions the other live nodes have."""
        return self._gather("sessions:", "", "HLEN").addCallback(_total)

    def subscriptions(self) -> Deferred[list[SubscriptionInfo]]:
        """The other live nodes' subscriptions (one per id, whichever node has it)."""

        def parse(answers: list[tuple[str, Any]]) -> list[SubscriptionInfo]:
            found: dict[int, SubscriptionInfo] = {}
            for _node, flat in answers:
                for key, value in _hash_items(flat):
                    info = _subscription_info(key, value)
                    if info is None:
                        self.stats["bad_entries"] += 1
                    elif info.id not in found or info.created < found[info.id].created:
                        found[info.id] = info
            return list(found.values())

        return self._gather("subscriptions:", "", "HGETALL").addCallback(parse)

    def subscribers(self, subscription_id: int) -> Deferred[list[Member]]:
        """The other live nodes' subscribers of a subscription."""

        def parse(answers: list[tuple[str, Any]]) -> list[Member]:
            found = []
            for _node, flat in answers:
                for key, value in _hash_items(flat):
                    member = _member(key, value)
                    if member is None:
                        self.stats["bad_entries"] += 1
                    else:
                        found.append(member)
            return found

        return self._gather("subscribers:", f":{subscription_id}", "HGETALL").addCallback(parse)

    def subscriber_count(self, subscription_id: int) -> Deferred[int]:
        """How many subscribers of a subscription the other live nodes have."""

        return self._gather("subscribers:", f":{subscription_id}", "HLEN").addCallback(_total)

    def meta_interest(self, listening: bool) -> None:
        """This node has subscribers of meta topics (or no more): say so in the state hash, for nodes that
        start later, and on the peers channel, for the others now."""
        self._state_command("hset", self.channels.state, self.node_id, "1" if listening else "0")
        self._send_peer("interest", {"meta": listening})

    def announce_meta(self, publication: Publication, about: tuple[str, str] | None) -> None:
        """Send a meta event to the other nodes (for their subscribers of meta topics)."""
        body = {
            "topic": publication.topic,
            "publication": publication.id,
            "args": publication.args,
            "about": None if about is None else list(about),
        }
        self._send_peer("meta", body)

    def _send_peer(self, kind: str, body: dict[str, Any]) -> None:
        try:
            payload = encode_node(kind, self.node_id, body)
        except (TypeError, ValueError) as exc:
            log.warn("cluster bus: a {kind} message cannot travel as JSON: {reason}", kind=kind, reason=exc)
            return
        self._publish_internal(self.channels.peers, payload)

    def _on_meta(self, origin: str, body: dict[str, Any]) -> None:
        topic = body["topic"]
        if not topic.startswith("wamp."):
            raise EnvelopeError(f"meta message: topic {topic!r} is not a meta topic")
        about = body.get("about")
        publication = Publication(topic, body.get("args"), id=body["publication"], source="router")
        self.router.deliver_meta(publication, None if about is None else (about[0], about[1]))

    def _on_interest(self, origin: str, body: dict[str, Any]) -> None:
        if body["meta"]:
            self._meta_nodes.add(origin)
        else:
            self._meta_nodes.discard(origin)
        self.wants_meta = bool(self._meta_nodes)

    def _purge_state(self) -> Deferred[None]:
        """Remove the dead nodes' presence state; for those this node removed, their members leave (hooks
        and meta events run here). Also learns which live nodes listen to meta events."""
        d = self._command("eval", _PURGE_STATE, [self.channels.state], [self._heartbeat_prefix, self._base])
        d.addCallback(self._state_purged)
        d.addErrback(
            lambda f: log.debug("cluster bus: presence purge failed: {error}", error=f.getErrorMessage())
        )
        return d

    def _state_purged(self, answer: Any) -> None:
        if not isinstance(answer, list) or len(answer) != 2:
            return
        lost, flags = answer
        self._meta_nodes = {node for node, flag in _hash_items(flags) if flag == "1" and node != self.node_id}
        self.wants_meta = bool(self._meta_nodes)
        for entry in lost if isinstance(lost, list) else ():
            self._node_lost(entry)

    def _node_lost(self, entry: Any) -> None:
        if not isinstance(entry, list) or len(entry) != 3:
            return
        node, flat_sessions, held = entry
        sessions = [
            info for info in (_session_info(k, v) for k, v in _hash_items(flat_sessions)) if info is not None
        ]
        subscriptions = []
        for item in held if isinstance(held, list) else ():
            if not isinstance(item, list) or len(item) != 4:
                continue
            info = _subscription_info(item[0], item[1])
            if info is None:
                continue
            members = [m for m in (_member(k, v) for k, v in _hash_items(item[2])) if m is not None]
            subscriptions.append(LostSubscription(info, members, item[3] == 1))
        self.stats["nodes_purged"] += 1
        log.info(
            "cluster bus: node {node} is gone; its {sessions} sessions left the cluster",
            node=_text(node),
            sessions=len(sessions),
        )
        self.router.node_lost(sessions, subscriptions)

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
        "meta": _on_meta,
        "interest": _on_interest,
        PROCEDURES: _on_procedures,
    }


def _total(answers: list[tuple[str, Any]]) -> int:
    """The sum of the nodes' HLEN answers."""
    return sum(count for _node, count in answers if isinstance(count, int))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash_items(flat: Any) -> list[tuple[str, str]]:
    """The (field, value) pairs of an HGETALL answer."""
    if not isinstance(flat, list):
        return []
    return [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _entry(raw: str, size: int) -> list[Any] | None:
    """A presence entry: a JSON array of ``size`` strings (or nulls); ``None`` when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, list) or len(value) != size:
        return None
    return value if all(v is None or isinstance(v, str) for v in value) else None


def _id(raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= 2**53 else None


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _subscription_entry(subscription: Subscription) -> str:
    return json.dumps([subscription.uri, subscription.match, iso_8601(subscription.created)])


def _member_entry(session: Session) -> str:
    return json.dumps([session.authid, session.authrole])


def _session_info(key: str, value: str) -> SessionInfo | None:
    session_id, entry = _id(key), _entry(value, 4)
    if session_id is None or entry is None:
        return None
    return SessionInfo(session_id, *entry)


def _subscription_info(key: Any, value: Any) -> SubscriptionInfo | None:
    subscription_id, entry = _id(_text(key)), _entry(_text(value), 3)
    if subscription_id is None or entry is None or None in entry:
        return None
    return SubscriptionInfo(subscription_id, entry[0], entry[1], entry[2])


def _member(key: str, value: str) -> Member | None:
    session_id, entry = _id(key), _entry(value, 2)
    if session_id is None or entry is None:
        return None
    return Member(session_id, entry[0], entry[1], False)


def _purge_reply(reply: Any) -> tuple[int, int, int, list[str]] | None:
    """(entries that lost callees, bad entries, version, changed fields) of the purge script's answer."""
    if not isinstance(reply, list) or len(reply) != 4 or not isinstance(reply[3], list):
        return None
    dead, bad, version, changed = reply
    if not all(isinstance(n, int) for n in (dead, bad, version)):
        return None
    return dead, bad, version, [str(field) for field in changed]


def _failed(exc: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(exc)
    return d
