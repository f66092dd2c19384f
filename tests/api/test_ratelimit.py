"""The public role's token buckets: a burst, a refill rate, bounded memory."""

from __future__ import annotations

import pytest

from api.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_refusal_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=3, max_clients=10, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    wait = buckets.take("a")
    assert wait == pytest.approx(0.5)
    assert buckets.take("b") is None  # other clients have their own bucket
    clock.now += 0.5
    assert buckets.take("a") is None
    assert buckets.take("a") is not None


def test_memory_is_bounded_forgetting_the_least_recent_client() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_clients=3, clock=clock)
    for client in ("a", "b", "c", "d"):
        assert buckets.take(client) is None
    assert len(buckets) == 3
    assert buckets.take("a") is None  # forgotten, so it starts again with a full bucket
    assert buckets.take("d") is not None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBuckets(rate_per_s=0, burst=1, max_clients=1)
