"""The hand-over state machine on its own: no broker, no database, no threads, no clock.

The same situations as the embedded runtime's pipeline tests
(tests/stream/test_embedded_pipeline.py) drive it step by step here: the next
batch prepared while the previous one is written, a second writer, acks in
arrival order, a broken chain.
"""

from __future__ import annotations

import pytest

from ingest.handover import Handover, HandoverError, Next, Turn


def handover(
    *,
    max_messages: int = 2,
    writers: int = 1,
    batch_wait_s: float = 0.5,
    overlap: bool = True,
    ready_early: bool = True,
) -> Handover[str]:
    return Handover(
        max_messages=max_messages,
        writers=writers,
        batch_wait_s=batch_wait_s,
        overlap=overlap,
        ready_early=ready_early,
    )


def state(h: Handover[str]) -> Next:
    """The state, read through a call (mypy would narrow the attribute between steps)."""
    return h.state


def test_the_next_batch_is_prepared_during_a_write_and_acked_only_after_it() -> None:
    h = handover(max_messages=2, writers=1)
    assert (h.state, h.room()) == (Next.EMPTY, 2)
    h.add("c0", 1, now=0.0)
    assert state(h) is Next.FILLING
    assert h.can_take(now=0.0)  # no write in flight: taken at once
    first = h.take(now=0.0)
    assert (first.number, first.chunks, h.state, h.writing) == (0, ["c0"], Next.EMPTY, 1)
    # While batch 0 is written, the next one fills up ...
    h.add("c1", 1, now=0.1)
    assert state(h) is Next.FILLING
    assert not h.can_take(now=0.2)  # not full, has not waited: it grows
    h.add("c2", 1, now=0.2)
    assert (h.state, h.room()) == (Next.FULL, 0)  # ... until there is no room
    with pytest.raises(HandoverError):
        h.add("c3", 1, now=0.3)
    # Full while every writer is busy: the prepare stage readies it.
    assert h.should_ready()
    assert h.start_readying() == ["c1", "c2"]
    assert state(h) is Next.READYING
    assert not h.can_take(now=0.3)  # no writer takes a batch being readied
    h.finish_readying("c1+c2")
    assert state(h) is Next.READY
    assert not h.should_ready()
    # Batch 0 commits and is acked; then its writer takes the ready batch.
    assert h.turn(0) is Turn.NOW
    h.acked(0)
    h.finished(acked=True)
    second = h.take(now=0.4)
    assert (second.number, second.chunks) == (1, ["c1+c2"])
    assert h.turn(1) is Turn.NOW
    h.acked(1)
    h.finished(acked=True)
    assert (h.writing, h.broken, h.state) == (0, False, Next.EMPTY)


def test_a_second_writer_takes_a_full_batch_and_acks_wait_for_the_batch_before() -> None:
    h = handover(max_messages=2, writers=2, batch_wait_s=60.0)
    h.add("c0", 1, now=0.0)
    first = h.take(now=0.0)
    h.add("c1", 1, now=0.1)
    assert not h.can_take(now=0.1)
    h.add("c2", 1, now=0.1)
    assert not h.should_ready()  # a writer is free: it takes the batch instead
    second = h.take(now=0.1)
    assert (second.number, second.chunks, h.writing) == (1, ["c1", "c2"], 2)
    # Batch 1 commits first: its ack waits for batch 0's.
    assert h.turn(second.number) is Turn.WAIT
    with pytest.raises(HandoverError, match="out of turn"):
        h.acked(second.number)
    assert h.turn(first.number) is Turn.NOW
    h.acked(first.number)
    h.finished(acked=True)
    assert h.turn(second.number) is Turn.NOW
    h.acked(second.number)
    h.finished(acked=True)


def test_a_second_writer_takes_a_batch_that_has_waited_batch_wait_s() -> None:
    h = handover(max_messages=1000, writers=2, batch_wait_s=0.3)
    h.add("c0", 1, now=0.0)
    h.take(now=0.0)
    h.add("c1", 1, now=1.0)
    assert not h.can_take(now=1.2)
    assert h.wait_s(now=1.2, poll_s=0.5) == pytest.approx(0.1)  # look again by then
    assert h.can_take(now=1.3)
    assert h.take(now=1.3).chunks == ["c1"]


def test_a_later_batch_committed_stays_unacked_when_the_batch_before_fails() -> None:
    h = handover(max_messages=2, writers=2)
    h.add("c0", 1, now=0.0)
    first = h.take(now=0.0)
    h.add("c1", 2, now=0.0)
    second = h.take(now=0.0)
    assert h.turn(second.number) is Turn.WAIT
    h.finished(acked=False)  # batch 0 failed (a stop during an outage)
    assert h.broken
    assert h.turn(second.number) is Turn.NEVER
    h.finished(acked=False)
    assert h.turn(first.number + 5) is Turn.NEVER  # nothing after it, ever
    assert h.writing == 0


def test_an_ack_in_flight_is_recorded_though_a_later_batch_broke_the_chain() -> None:
    h = handover(writers=2)
    h.add("c0", 2, now=0.0)
    first = h.take(now=0.0)
    h.add("c1", 2, now=0.0)
    h.take(now=0.0)
    assert h.turn(first.number) is Turn.NOW  # its messages are being acknowledged ...
    h.finished(acked=False)  # ... while the other writer gives up on batch 1
    h.acked(first.number)
    h.finished(acked=True)
    assert h.broken


def test_without_overlap_the_stages_take_turns() -> None:
    h = handover(max_messages=1000, overlap=False)
    assert not h.ready_early
    assert h.room() == 1000
    h.add("c0", 3, now=0.0)
    assert h.room() == 0  # nothing more is collected while a batch waits ...
    h.take(now=0.0)
    assert h.room() == 0  # ... or is being written
    h.acked(0)
    h.finished(acked=True)
    assert h.room() == 1000


def test_readying_that_fails_leaves_the_chunks_as_they_were() -> None:
    h = handover(max_messages=2, writers=1)
    h.add("c0", 2, now=0.0)
    h.take(now=0.0)
    h.add("c1", 2, now=0.0)
    h.start_readying()
    h.abandon_readying()
    assert state(h) is Next.FULL
    h.finished(acked=True)
    assert h.take(now=0.0).chunks == ["c1"]


def test_no_readying_unless_asked_or_while_a_writer_is_free() -> None:
    h = handover(max_messages=2, writers=1, ready_early=False)
    h.add("c0", 2, now=0.0)
    h.take(now=0.0)
    h.add("c1", 2, now=0.0)
    assert not h.should_ready()
    with pytest.raises(HandoverError, match="empty, not readying"):
        handover().finish_readying("x")


def test_an_empty_batch_is_never_taken() -> None:
    h = handover()
    assert not h.can_take(now=100.0)
    with pytest.raises(HandoverError, match="empty batch cannot be taken"):
        h.take(now=100.0)
    assert h.wait_s(now=0.0, poll_s=0.5) == 0.5
