"""Token buckets: how many PUBLISH and CALL messages a session may send, sustained and at once."""

from __future__ import annotations

import time
from collections.abc import Callable

from ._limits import Limits


class TokenBucket:
    """``rate`` tokens per second refill a bucket holding at most ``burst``; each message takes one.

    ``clock`` returns seconds (``time.monotonic`` by default; tests pass a fake such as
    ``twisted.internet.task.Clock().seconds``). A ``rate`` of 0 (or less) disables the limit.
    """

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
    """The publish and call buckets of one session, built from the app's ``Limits``."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.publish = TokenBucket(limits.publish_rate, limits.publish_burst, clock)
        self.call = TokenBucket(limits.call_rate, limits.call_burst, clock)
