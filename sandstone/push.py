"""Push events and broadcasts to a running sandstone cluster from code outside Twisted.

Django or Flask views, Celery tasks, cron jobs (with ``examples.blog`` as the cluster's app):

```python
from sandstone.push import Pusher

with Pusher("redis://127.0.0.1:6379/0") as pusher:
    pusher.dispatch("article.created", {"article": {"id": 7, "title": "Unicorns spotted in Alaska"}})
    pusher.broadcast("chat/general", {"text": "maintenance at noon"})
```

Needs the ``redis`` package (``pip install 'sandstone[push]'``). The messages follow the bus envelope,
version 1 (``docs/bus.md``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._envelope import MAX_BYTES, channel_names, encode_delivery, encode_event, event_data
from ._ids import MAX_ID
from ._payload import value_problem
from ._publication import Publication
from ._redis_url import RedisAddress, check_tls_files

if TYPE_CHECKING:
    import redis

__all__ = ["Pusher"]


class Pusher:
    """Push events and broadcasts to a running sandstone cluster through its Redis.

    ``realm``, ``prefix`` and ``cluster_name`` must be the cluster's (``--cluster-name``); the channel names
    also carry the Redis database of ``url`` (or of ``client``), as the nodes' do. A ``client`` given here
    is used as it is and is not closed by ``close()``; otherwise one is made from ``url``, a Redis URL as the
    nodes take: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://`` for TLS (the server's
    certificate verified; ``?ssl_ca_certs=``, ``ssl_certfile=``, ``ssl_keyfile=``), or
    ``redis+sentinel://HOST[:PORT],.../MASTER[/DB]`` (the master the Sentinels name, found again after a
    failover); ``ValueError`` for another form or unusable TLS files (for a unix socket, pass a ``client``).
    ``origin`` names this producer in the messages (default: ``push-`` and a random hex string). Redis errors
    (``redis.exceptions.RedisError``) reach the caller as they are.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        realm: str = "realm1",
        prefix: str = "sandstone",
        cluster_name: str | None = None,
        client: redis.Redis | None = None,
        origin: str | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        try:
            import redis  # noqa: F401  # here, to say how to install it
        except ImportError as e:
            raise ImportError("sandstone.push needs the redis package: pip install 'sandstone[push]'") from e
        if origin is None:
            origin = f"push-{uuid.uuid4().hex}"
        elif not isinstance(origin, str) or not origin:
            raise ValueError(f"origin must be a non-empty str, not {origin!r}")
        self._sentinels: list[redis.Redis] = []
        if client is None:
            client = self._client_for(RedisAddress.parse(url))
            self._owns_client = True
        else:
            self._owns_client = False
        try:
            self.channels = channel_names(prefix, realm, cluster_name=cluster_name, db=_database(client))
        except (TypeError, ValueError):
            if self._owns_client:
                client.close()
            for sentinel in self._sentinels:
                sentinel.close()
            raise
        self.origin = origin
        self.max_bytes = max_bytes
        self.client: redis.Redis = client
        self._closed = False

    def _client_for(self, address: RedisAddress) -> redis.Redis:
        import redis
        import redis.sentinel

        options: dict[str, Any] = {}
        if address.tls is not None:
            check_tls_files(address.tls)
            options = {
                "ssl": True,
                "ssl_ca_certs": address.tls.ca_file,
                "ssl_certfile": address.tls.cert_file,
                "ssl_keyfile": address.tls.key_file,
                "ssl_cert_reqs": "required",
                "ssl_check_hostname": True,
            }
        # (a user without password: redis-py sends AUTH USER "", as the nodes do)
        credentials: dict[str, Any] = {"username": address.username, "password": address.password}
        if address.sentinel is None:
            return redis.Redis(host=address.host, port=address.port, db=address.db, **credentials, **options)
        sentinel = address.sentinel
        sentinels = redis.sentinel.Sentinel(
            list(sentinel.hosts),
            sentinel_kwargs={"username": sentinel.username, "password": sentinel.password, **options},
        )
        self._sentinels = list(sentinels.sentinels)
        client: redis.Redis = sentinels.master_for(sentinel.master, db=address.db, **credentials, **options)
        return client

    def dispatch(self, name: str, event: object) -> str:
        """Dispatch ``event`` (a dataclass instance or a dict) on every node; returns the event id.

        Each node runs its listeners of ``name`` if it forwards that event (its allow-list), rebuilding a
        dataclass event from its fields.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"an event name must be a non-empty str, not {name!r}")
        event_id = uuid.uuid4().hex
        message = encode_event(self.origin, event_id, name, event_data(event))
        self._publish(self.channels.events, message, f"event {name!r}")
        return event_id

    def broadcast(
        self,
        topic: str,
        payload: Any,
        *,
        exclude: Iterable[int] | None = None,
        eligible: Iterable[int] | None = None,
    ) -> int:
        """Send ``payload`` to every subscriber of ``topic`` on every node; returns the publication id.

        Each subscriber gets one EVENT whose first positional argument is ``payload``. ``exclude`` and
        ``eligible`` are WAMP session ids (an empty ``eligible`` reaches nobody).
        """
        _check_topic(topic)
        problem = value_problem(payload)
        if problem is not None:
            raise TypeError(f"cannot broadcast on {topic!r}: {problem}")
        publication = Publication(
            topic,
            [payload],
            id=_random_id(),
            exclude=_session_ids("exclude", exclude) or None,
            eligible=_session_ids("eligible", eligible),
        )
        self._publish(self.channels.deliveries, encode_delivery(self.origin, publication), f"topic {topic!r}")
        return publication.id

    def close(self) -> None:
        """Stop using Redis; closes the client unless it was given to the constructor."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.client.close()
        for sentinel in self._sentinels:
            sentinel.close()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _publish(self, channel: str, message: bytes, what: str) -> None:
        if self._closed:
            raise RuntimeError("this Pusher is closed: make a new one")
        if len(message) > self.max_bytes:
            raise ValueError(
                f"the message for {what} takes {len(message)} bytes, over the bus limit of {self.max_bytes}: "
                f"send less data (e.g. an id the listeners look up)"
            )
        self.client.publish(channel, message)


def _database(client: redis.Redis) -> int:
    """The database number ``client`` uses (0 unless its URL or options say otherwise)."""
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def _check_topic(topic: object) -> None:
    if not isinstance(topic, str):
        raise TypeError(f"a topic URI must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("a topic URI must not be empty")
    if any(c.isspace() for c in topic) or "#" in topic:
        raise ValueError(f"invalid topic URI {topic!r}: it must contain no whitespace and no '#'")


def _session_ids(what: str, ids: Iterable[int] | None) -> frozenset[int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be an iterable of WAMP session ids (int), not {type(ids).__name__}")
    result = frozenset(ids)
    for sid in result:
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise TypeError(f"{what} must hold WAMP session ids (int), not {type(sid).__name__} {sid!r}")
        if not 1 <= sid <= MAX_ID:
            raise ValueError(f"{what} must hold WAMP session ids, from 1 to 2^53, not {sid}")
    return result


def _random_id() -> int:
    """A random publication id in 1..2^53, as WAMP wants."""
    return int.from_bytes(os.urandom(8), "big") % MAX_ID + 1
