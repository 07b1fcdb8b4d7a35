"""Per-key request budgets: a token bucket for each API key.

A bucket rather than a fixed window, so a gateway that was quiet may send a burst at once
(`burst` requests) while its long-run rate stays at `rate`. Buckets live in memory only: a
restart refills them, which errs on the side of serving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sensorlake.errors import RateLimited


class RateLimiter:
    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """key id → (tokens, when they were counted); bounded by the number of valid keys, as
        only authenticated requests reach it."""

    def take(self, key_id: str) -> None:
        """Spend one request of the key's budget, or raise RateLimited with when to retry."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, then = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return
        self._buckets[key_id] = (tokens, now)
        retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
        raise RateLimited(
            f"API key {key_id} is over its rate limit of {self.rate:g} requests/s "
            f"(burst {self.burst})",
            retry_after=retry_after,
            hint=f"retry after {retry_after} s; send fewer, larger batches, or raise "
            "api.rate_limit / api.rate_limit_burst",
        )
