from __future__ import annotations

import pytest

from ingest.keys import KeyCache, KitKey


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unknown_kits_reload_at_most_once_per_interval() -> None:
    loads = []
    table = {1: KitKey(1, b"k" * 32, active=True)}

    def load() -> dict[int, KitKey]:
        loads.append(1)
        return dict(table)

    clock = FakeClock()
    cache = KeyCache(load, ttl_s=30, miss_interval_s=1, clock=clock)
    assert cache.lookup(1) == table[1]
    for _ in range(100):
        assert cache.lookup(99) is None
    assert len(loads) == 1
    table[99] = KitKey(99, b"x" * 32, active=True)
    clock.now = 1.5
    assert cache.lookup(99) == table[99]
    assert len(loads) == 2


def test_a_failing_reload_is_not_taken_for_unknown() -> None:
    def load() -> dict[int, KitKey]:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        KeyCache(load).lookup(5)
