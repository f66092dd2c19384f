"""The kit-key cache: "unknown" only for a kit the database did not know after its
message arrived; a flood of unknown kits costs at most one small query per batch."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pytest

from ingest.keys import KeyCache, KitKey


class Clock:
    """Monotonic seconds and wall-clock milliseconds, moved by hand."""

    def __init__(self) -> None:
        self.ms = 1_000_000

    def monotonic(self) -> float:
        return self.ms / 1000

    def wall_ms(self) -> int:
        return self.ms


class Table:
    """The kits table as the cache reads it, counting the reads."""

    def __init__(self, *kit_ids: int) -> None:
        self.keys = {k: KitKey(k, bytes([k % 256]) * 32, active=True) for k in kit_ids}
        self.full_reads = 0
        self.some_reads: list[list[int]] = []
        self.failing = False

    def load(self) -> Mapping[int, KitKey]:
        self._fail_if_asked()
        self.full_reads += 1
        return dict(self.keys)

    def load_some(self, kit_ids: Collection[int]) -> Mapping[int, KitKey]:
        self._fail_if_asked()
        self.some_reads.append(sorted(kit_ids))
        return {k: self.keys[k] for k in kit_ids if k in self.keys}

    def _fail_if_asked(self) -> None:
        if self.failing:
            raise ConnectionError("database away")

    def register(self, kit_id: int) -> None:
        self.keys[kit_id] = KitKey(kit_id, b"n" * 32, active=True)


def _cache(table: Table, clock: Clock, ttl_s: float = 30) -> KeyCache:
    return KeyCache(table, ttl_s=ttl_s, clock=clock.monotonic, wall_ms=clock.wall_ms)


def test_a_kit_registered_just_before_its_first_message_is_found() -> None:
    table, clock = Table(1), Clock()
    cache = _cache(table, clock)
    cache.confirm({1: clock.ms})
    assert cache.lookup(1) == table.keys[1]
    clock.ms += 5  # well inside any interval a reload-on-miss could wait for
    table.register(99)
    clock.ms += 1
    cache.confirm({99: clock.ms})
    assert cache.lookup(99) == table.keys[99]
    assert table.full_reads == 1
    assert table.some_reads == [[99]]


def test_unknown_kits_are_asked_about_once_per_batch_and_not_again_for_older_messages() -> None:
    table, clock = Table(1), Clock()
    cache = _cache(table, clock)
    cache.confirm({1: clock.ms})
    clock.ms += 10
    cache.confirm({1: clock.ms - 1, 7: clock.ms - 1, 8: clock.ms - 2})
    assert table.some_reads == [[7, 8]]  # one query for the batch, the known kit not in it
    assert cache.lookup(7) is None
    assert cache.lookup(8) is None
    for _ in range(100):  # more of their messages that had arrived before the question
        cache.confirm({7: clock.ms - 1, 8: clock.ms - 2})
    assert table.some_reads == [[7, 8]]
    clock.ms += 3  # a message of kit 8 that arrived after the question: asked again
    cache.confirm({7: clock.ms - 5, 8: clock.ms})
    assert table.some_reads == [[7, 8], [8]]


def test_messages_older_than_the_full_read_are_answered_from_it() -> None:
    table, clock = Table(1), Clock()
    cache = _cache(table, clock)
    arrived = clock.ms - 20
    cache.confirm({1: arrived, 7: arrived})
    assert table.full_reads == 1
    assert table.some_reads == []
    assert cache.lookup(7) is None


def test_the_whole_table_is_read_again_after_the_ttl() -> None:
    table, clock = Table(1, 2), Clock()
    cache = _cache(table, clock, ttl_s=30)
    cache.confirm({1: clock.ms})
    table.keys[2] = KitKey(2, table.keys[2].key, active=False)  # revoked
    clock.ms += 29_000
    assert cache.lookup(2) == KitKey(2, table.keys[2].key, active=True)
    clock.ms += 2_000
    assert cache.lookup(2) == KitKey(2, table.keys[2].key, active=False)
    assert table.full_reads == 2


def test_a_failing_read_is_not_taken_for_unknown() -> None:
    table, clock = Table(1), Clock()
    cache = _cache(table, clock)
    cache.confirm({1: clock.ms})
    table.failing = True
    clock.ms += 1
    with pytest.raises(ConnectionError):
        cache.confirm({5: clock.ms})
    table.failing = False
    table.register(5)
    cache.confirm({5: clock.ms})  # the failed question did not count as asked
    assert cache.lookup(5) == table.keys[5]
    table.failing = True
    with pytest.raises(ConnectionError):
        _cache(table, clock).lookup(5)
