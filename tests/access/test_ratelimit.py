"""The token bucket on its own clock: burst, steady rate, Retry-After, one bucket per key."""

from __future__ import annotations

import pytest

from sensorlake.access.ratelimit import RateLimiter
from sensorlake.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_with_whole_second_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=4, clock=clock)
    for _ in range(4):
        limiter.take("a")
    with pytest.raises(RateLimited) as caught:
        limiter.take("a")
    assert caught.value.status == 429
    assert caught.value.retry_after == 1  # half a second rounds up to a whole one
    limiter.take("b")  # another key has a bucket of its own
    clock.now += 0.5
    limiter.take("a")
    clock.now += 100  # refills to the burst, not beyond
    for _ in range(4):
        limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")


def test_slow_rates_wait_longer_and_zero_means_no_limit() -> None:
    clock = Clock()
    slow = RateLimiter(rate=0.1, burst=1, clock=clock)
    slow.take("a")
    with pytest.raises(RateLimited) as caught:
        slow.take("a")
    assert caught.value.retry_after == 10
    unlimited = RateLimiter(rate=0, burst=1, clock=clock)
    for _ in range(1000):
        unlimited.take("a")
