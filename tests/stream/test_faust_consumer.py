"""The stall check of :class:`stream.faust_app.consumer.RebalanceSafeConsumer`.

The check's inputs are the consumer's next offsets, the broker's end and oldest
offsets and the assignment; a stand-in object carries them so that each case
states exactly what the consumer knows. (The consumer runs against a real broker
in ``test_distributed_kafka.py``.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.faust_app.consumer import RebalanceSafeConsumer

READINGS = TP("app.readings", 0)
ENRICHED = TP("app.enriched", 2)
CHANGELOG = TP("app-kit-states-changelog", 2)


@dataclass
class Known:
    """What the consumer and the broker know, and what the check did."""

    read_offset: dict[TP, int | None]
    ends: dict[TP, int]
    oldest: dict[TP, int] = field(default_factory=dict)
    sought: list[dict[TP, int]] = field(default_factory=list)
    resumed: list[TP] = field(default_factory=list)
    in_recovery: bool = False

    def consumer(self) -> Any:
        async def highwaters(*tps: TP) -> dict[TP, int]:
            return {tp: self.ends[tp] for tp in tps}

        async def earliest_offsets(*tps: TP) -> dict[TP, int]:
            return {tp: self.oldest.get(tp, 0) for tp in tps}

        async def seek_wait(offsets: dict[TP, int]) -> None:
            self.sought.append(dict(offsets))

        return SimpleNamespace(
            app=SimpleNamespace(
                in_recovery=self.in_recovery,
                topics=SimpleNamespace(
                    acks_enabled_for=lambda topic: not topic.endswith("-changelog")
                ),
            ),
            flow_active=True,
            _read_offset=self.read_offset,
            assignment=lambda: set(self.ends),
            highwaters=highwaters,
            earliest_offsets=earliest_offsets,
            seek_wait=seek_wait,
            on_buffer_drop=self.resumed.append,
            log=logging.getLogger("test"),
        )


def check(consumer: Any) -> list[TP]:
    return asyncio.run(RebalanceSafeConsumer.seek_stalled(consumer))


def test_a_partition_that_does_not_move_past_its_next_offset_is_sought_back() -> None:
    known = Known({ENRICHED: 5, READINGS: 7}, {ENRICHED: 9, READINGS: 7})
    consumer = known.consumer()
    assert check(consumer) == []  # the first look: nothing to compare with
    assert check(consumer) == [ENRICHED]
    assert known.sought == [{ENRICHED: 5}]
    assert known.resumed == [ENRICHED]  # taken back into fetching, in case it was paused


def test_a_partition_that_moves_or_is_caught_up_is_left_alone() -> None:
    known = Known({ENRICHED: 5, READINGS: 7}, {ENRICHED: 9, READINGS: 7})
    consumer = known.consumer()
    check(consumer)
    known.read_offset[ENRICHED] = 6
    assert check(consumer) == []
    assert known.sought == []


def test_a_never_committed_partition_that_hands_nothing_over_is_sought_to_its_oldest() -> None:
    """A worker that takes over partitions the group never committed (the worker before it
    died holding its first batch) has no next offset for them; if the fetcher does not
    start them, the check seeks them to their oldest message, what the fetcher should
    have done."""
    known = Known(
        {ENRICHED: None, READINGS: None},
        {ENRICHED: 6, READINGS: 3},
        oldest={ENRICHED: 0, READINGS: 3},
    )
    consumer = known.consumer()
    assert check(consumer) == []
    assert check(consumer) == [ENRICHED]  # READINGS holds nothing (oldest == end)
    assert known.sought == [{ENRICHED: 0}]


def test_a_never_committed_partition_is_left_alone_once_it_hands_over() -> None:
    known = Known({ENRICHED: None}, {ENRICHED: 6})
    consumer = known.consumer()
    check(consumer)
    known.read_offset[ENRICHED] = 2
    assert check(consumer) == []
    assert known.sought == []


def test_changelogs_and_recovery_are_not_touched() -> None:
    known = Known({CHANGELOG: 1}, {CHANGELOG: 9})
    consumer = known.consumer()
    check(consumer)
    assert check(consumer) == []
    recovering = Known({ENRICHED: 1}, {ENRICHED: 9}, in_recovery=True)
    consumer = recovering.consumer()
    check(consumer)
    assert check(consumer) == []
    assert known.sought == recovering.sought == []


def test_a_worker_that_stays_in_recovery_is_said_once(caplog: Any) -> None:
    """A check that returns at once while the worker recovers is normal in a rebalance;
    when it lasts, the worker consumes nothing, and the log says so, once."""
    recovering = Known({ENRICHED: 1}, {ENRICHED: 9}, in_recovery=True)
    consumer = recovering.consumer()
    with caplog.at_level(logging.WARNING, logger="test"):
        for _ in range(10):
            check(consumer)
    said = [r.getMessage() for r in caplog.records if "stall check" in r.getMessage()]
    assert said == ["stall check: 6 checks in a row found the worker in table recovery"]
