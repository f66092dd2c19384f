"""The fetch loop and the stall check of :class:`stream.faust_app.consumer.RebalanceSafeConsumer`.

Their inputs are the consumer's next offsets, what the fetcher returns from where
it stands, the broker's committed, end and oldest offsets and the assignment; a
stand-in object carries them so that each case states exactly what the consumer
knows. (The consumer runs against a real broker in ``test_distributed_kafka.py``.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.types import TP

from stream.faust_app.consumer import Handover, RebalanceSafeConsumer, handover
from tests.stream.test_faust_support import app_factory

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


def test_the_hand_over_decision() -> None:
    acked = {"acked": True}
    assert handover(7, 7, **acked) is Handover.HAND_OVER
    assert handover(7, 6, **acked) is Handover.SKIP
    assert handover(7, 9, **acked) is Handover.SEEK_BACK
    assert handover(None, 9, **acked) is Handover.FIND_START
    # A changelog: compacted, so gaps are real; its recovery keeps its own positions.
    assert handover(7, 9, acked=False) is Handover.HAND_OVER
    assert handover(None, 9, acked=False) is Handover.HAND_OVER
    assert handover(7, 6, acked=False) is Handover.SKIP


@dataclass
class Partition:
    """One partition as the fetcher sees it: a log of ``oldest`` to ``end`` - 1, the
    fetcher's position in it, and the group's committed offset."""

    oldest: int
    end: int
    position: int
    committed: int | None
    #: A seek the fetcher does not take: records fetched before it keep coming.
    ignore_seeks: int = 0


@dataclass
class Fetching:
    """What :meth:`RebalanceSafeConsumer._drain_messages` sees of aiokafka and faust."""

    partitions: dict[TP, Partition]
    read_offset: dict[TP, int | None] = field(default_factory=lambda: defaultdict(lambda: None))
    handed_over: list[tuple[TP, int]] = field(default_factory=list)
    sought: list[dict[TP, int]] = field(default_factory=list)
    stop_after: int = 12  # three batches
    batch: int = 4
    #: How many times the worker's flow control is found suspended (a rebalance) first.
    suspended_checks: int = 0
    #: How many times the app is found rebalancing first (flow active: its recovery is
    #: done, and the flow control's resume is about to empty the streams' queues).
    rebalancing_checks: int = 0
    #: Messages handed over while the flow control was suspended: faust's stream drops them.
    dropped: list[int] = field(default_factory=list)

    def consumer(self) -> Any:
        def stop() -> bool:
            exhausted = all(part.position >= part.end for part in self.partitions.values())
            return exhausted or len(self.handed_over) >= self.stop_after

        stopped = SimpleNamespace(is_set=stop)

        async def getmany(**_timeout: float) -> AsyncIterator[tuple[TP, Any]]:
            for tp, part in self.partitions.items():
                start = max(part.position, part.oldest)
                for offset in range(start, min(start + self.batch, part.end)):
                    part.position = offset + 1
                    yield (
                        tp,
                        SimpleNamespace(
                            topic=tp.topic, partition=tp.partition, offset=offset, generation_id=1
                        ),
                    )

        fetching = self

        class App:
            """faust's app as the loop sees it; ``rebalancing`` for the first looks."""

            consumer_generation_id = 1
            flow_control: Any = None
            topics = SimpleNamespace(
                acks_enabled_for=lambda topic: not topic.endswith("-changelog")
            )

            @property
            def rebalancing(self) -> bool:
                if fetching.rebalancing_checks:
                    fetching.rebalancing_checks -= 1
                    return True
                return False

        def is_active() -> bool:
            if self.suspended_checks:
                self.suspended_checks -= 1
                return False
            return True

        app = App()
        app.flow_control = SimpleNamespace(is_active=is_active)

        async def callback(message: Any) -> None:
            if self.suspended_checks or self.rebalancing_checks:
                self.dropped.append(message.offset)
                return
            self.handed_over.append((TP(message.topic, message.partition), message.offset))

        async def wait_first(handed: Any, _suspended: None) -> Any:
            await handed
            return SimpleNamespace(done={handed})

        async def seek_wait(offsets: dict[TP, int]) -> None:
            self.sought.append(dict(offsets))
            for tp, offset in offsets.items():
                part = self.partitions[tp]
                if part.ignore_seeks:
                    part.ignore_seeks -= 1
                else:
                    part.position = offset
                # faust's seek_wait: the offset as the next to read, 0 forgotten.
                if offset > 0:
                    self.read_offset[tp] = offset
                else:
                    self.read_offset.pop(tp, None)

        async def start_offset(tp: TP) -> int:
            part = self.partitions[tp]
            return part.oldest if part.committed is None else part.committed

        async def earliest_offsets(*tps: TP) -> dict[TP, int]:
            return {tp: self.partitions[tp].oldest for tp in tps}

        async def sleep(_s: float) -> None:
            return None

        consumer = SimpleNamespace(
            app=app,
            transport=SimpleNamespace(app=SimpleNamespace(should_stop=False)),
            consumer_stopped_errors=(),
            diag=SimpleNamespace(set_flag=lambda _f: None, unset_flag=lambda _f: None),
            should_stop=False,
            _stopped=stopped,
            _commit_every=None,
            _read_offset=self.read_offset,
            getmany=getmany,
            sleep=sleep,
            callback=callback,
            wait_first=wait_first,
            suspend_flow=SimpleNamespace(wait=lambda: None),
            seek_wait=seek_wait,
            start_offset=start_offset,
            earliest_offsets=earliest_offsets,
            assignment=lambda: set(self.partitions),
            log=logging.getLogger("test"),
        )
        consumer._seek_back = lambda *args: RebalanceSafeConsumer._seek_back(consumer, *args)
        consumer._stream_takes = lambda m: RebalanceSafeConsumer._stream_takes(consumer, m)
        return consumer

    def run(self) -> list[int]:
        fetcher = SimpleNamespace(_stopped=SimpleNamespace(is_set=lambda: False))
        asyncio.run(RebalanceSafeConsumer._drain_messages(self.consumer(), fetcher))
        return [offset for _, offset in self.handed_over]


def test_a_partition_just_assigned_is_handed_over_from_its_committed_offset() -> None:
    """Seen in the kill -9 test: a worker just assigned a readings partition committed at 58
    fetched 120 before faust's seek to the committed offset had said where to start.
    Handed over, message 120 ran the qa agent with the kit state of message 57, twenty
    minutes of riding behind: a ride of its own for that frame, stored first, so the
    replay from 58 could not mend it. The consumer finds the start itself."""
    fetching = Fetching({READINGS: Partition(oldest=0, end=200, position=120, committed=58)})
    assert fetching.run() == list(range(58, 70))
    assert fetching.sought == [{READINGS: 58}]


def test_nothing_is_handed_over_while_a_rebalance_has_the_flow_suspended() -> None:
    """Seen in the kill -9 test: between faust's seek to the committed offsets and the
    worker being ready, readings 58 to 67 were handed over to a stream that dropped them
    (its flow control suspended; its resume empties the queues). The next handed over was
    68, run with the kit state of 57; and 58, never acknowledged, held the partition's
    commits back until the workers were restarted. The loop waits for the flow instead."""
    fetching = Fetching(
        {READINGS: Partition(oldest=0, end=100, position=58, committed=58)},
        read_offset=defaultdict(lambda: None, {READINGS: 58}),
        suspended_checks=3,
    )
    assert fetching.run() == list(range(58, 70))
    assert fetching.dropped == []
    assert fetching.sought == [{READINGS: 58}] * 3


def test_nothing_is_handed_over_until_the_rebalance_has_ended() -> None:
    """Seen in the joining-worker test: after faust's seek to the committed offsets, with
    the flow active, readings 34 to 39 were handed over, then emptied from the stream's
    queue by the flow control's resume at the end of the rebalance; 40 ran with the kit
    state of 33."""
    fetching = Fetching(
        {READINGS: Partition(oldest=0, end=100, position=34, committed=30)},
        read_offset=defaultdict(lambda: None, {READINGS: 34}),
        rebalancing_checks=2,
    )
    assert fetching.run() == list(range(34, 46))
    assert fetching.dropped == []


def test_a_partition_the_group_never_committed_starts_at_its_oldest_message() -> None:
    fetching = Fetching({ENRICHED: Partition(oldest=0, end=50, position=30, committed=None)})
    assert fetching.run() == list(range(12))
    assert fetching.sought == [{ENRICHED: 0}]


def test_a_seek_back_that_does_not_take_is_made_again_not_skipped_past() -> None:
    fetching = Fetching(
        {READINGS: Partition(oldest=0, end=100, position=40, committed=None, ignore_seeks=2)},
        read_offset=defaultdict(lambda: None, {READINGS: 20}),
    )
    assert fetching.run() == list(range(20, 32))
    assert fetching.sought == [{READINGS: 20}] * 3


def test_offsets_deleted_by_retention_are_gone_past_from_the_oldest_message() -> None:
    fetching = Fetching(
        {READINGS: Partition(oldest=30, end=100, position=30, committed=None)},
        read_offset=defaultdict(lambda: None, {READINGS: 20}),
    )
    assert fetching.run() == list(range(30, 42))
    assert fetching.sought == [{READINGS: 20}, {READINGS: 30}]


def test_a_changelog_is_handed_over_as_fetched() -> None:
    fetching = Fetching({CHANGELOG: Partition(oldest=0, end=100, position=40, committed=None)})
    assert fetching.run() == list(range(40, 52))
    assert fetching.sought == []


def test_the_committed_offset_is_the_one_the_broker_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The qa agent drops a kit's states below the committed offset (kitlog.py), so that
    offset must be the broker's: faust's own ``_committed_offset`` also takes the offsets
    of a commit the broker refused (as it does in a rebalance). The broker's answers are
    the stand-ins here."""
    answers: dict[str, Any] = {"commit": False, "committed": {}}

    async def commit(_self: Any, offsets: dict[TP, int]) -> bool:
        return bool(answers["commit"])

    async def seek_to_committed(_self: Any) -> dict[TP, int | None]:
        return dict(answers["committed"])

    monkeypatch.setattr(AiokafkaConsumer, "_commit", commit)
    monkeypatch.setattr(AiokafkaConsumer, "seek_to_committed", seek_to_committed)
    with app_factory(tmp_path) as make:
        consumer: Any = make().app.consumer
        assert isinstance(consumer, RebalanceSafeConsumer)
        assert consumer.committed_offset(READINGS) is None
        assert not asyncio.run(consumer._commit({READINGS: 9}))
        assert consumer.committed_offset(READINGS) is None  # refused: still unknown
        answers["commit"] = True
        assert asyncio.run(consumer._commit({READINGS: 9}))
        assert consumer.committed_offset(READINGS) == 9
        # After a rebalance, faust's seek reads the group's offsets from the broker.
        answers["committed"] = {READINGS: 12, ENRICHED: None}
        asyncio.run(consumer.seek_to_committed())
        assert consumer.committed_offset(READINGS) == 12
        assert consumer.committed_offset(ENRICHED) is None
