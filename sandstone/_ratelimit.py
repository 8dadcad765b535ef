"""Token buckets: how many PUBLISH, CALL and SUBSCRIBE messages a connection may send (sustained, at once)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ._limits import Limits


class TokenBucket:
    """``rate`` tokens per second refill a bucket holding at most ``burst``; each message takes one.

    ``clock`` returns seconds (``time.monotonic`` by default; tests pass a fake such as
    ``twisted.internet.task.Clock().seconds``). A ``rate`` of 0 (or less) disables the limit.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def allow(self) -> bool:
        """Take one token if there is one; False means the caller is over its rate."""
        if self.unlimited:
            return True
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class SessionRates:
    """The PUBLISH, CALL and SUBSCRIBE buckets of one connection, built from the app's ``Limits``.

    Every session on the connection shares them (GOODBYE then HELLO does not refill them). A bucket is
    made on the first message of its kind: most connections never call, many never publish. A session whose
    authrole has rates of its own (``Limits.role_limits``) switches the connection to them (``use_role``).
    """

    __slots__ = ("_app_limits", "_limits", "_clock", "_publish", "_call", "_subscribe")

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._app_limits = limits
        self._limits = limits
        self._clock = clock
        self._publish: TokenBucket | None = None
        self._call: TokenBucket | None = None
        self._subscribe: TokenBucket | None = None

    def use_role(self, authrole: str | None) -> None:
        """Count a session of ``authrole`` from now on: its role's rates if ``role_limits`` has them, else
        the app's. Changing from one to the other starts new buckets."""
        roles = self._app_limits.role_limits
        limits = (roles.get(authrole) if roles and authrole is not None else None) or self._app_limits
        if limits is not self._limits:
            self._limits = limits
            self._publish = self._call = self._subscribe = None

    @property
    def publish(self) -> TokenBucket:
        """PUBLISH messages: ``publish_rate`` per second, ``publish_burst`` at once."""
        bucket = self._publish
        if bucket is None:
            limits = self._limits
            bucket = self._publish = TokenBucket(limits.publish_rate, limits.publish_burst, self._clock)
        return bucket

    @property
    def call(self) -> TokenBucket:
        """CALL messages: ``call_rate`` per second, ``call_burst`` at once."""
        bucket = self._call
        if bucket is None:
            bucket = self._call = TokenBucket(self._limits.call_rate, self._limits.call_burst, self._clock)
        return bucket

    @property
    def subscribe(self) -> TokenBucket:
        """SUBSCRIBE messages: ``subscribe_rate`` per second, ``subscribe_burst`` at once."""
        bucket = self._subscribe
        if bucket is None:
            limits = self._limits
            bucket = self._subscribe = TokenBucket(limits.subscribe_rate, limits.subscribe_burst, self._clock)
        return bucket
