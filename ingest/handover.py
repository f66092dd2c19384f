"""The hand-over of batches from the prepare stage to the writers, and the order of acks.

A state machine, pure like the protocol code: no threads, no clock, no I/O. The
MQTT consumer (``ingest.consumer``) calls it under its one lock, passing the time,
and waits on that lock's condition whenever an answer is "not yet"; the tests
drive it step by step (``tests/ingest/test_handover.py``).

**The next batch.** The prepare stage adds prepared chunks to the *next batch*
while earlier batches are being written, so the next one grows for as long as a
write takes (bigger batches cost the database less per reading), up to
``max_messages``. Its states::

    EMPTY ──add──▶ FILLING ──add (max_messages reached)──▶ FULL
      ▲               │                                     │  ▲
      │               │                      start_readying │  │ abandon_readying
      │               │                                     ▼  │
      │               │                                   READYING
      │               │                                     │ finish_readying
      │               │                                     ▼
      └────take───────┴──────────── take ─────────────── FULL, READY

- ``FILLING`` is taken by a writer when no other batch is being written, or once
  it has waited ``batch_wait_s`` (the latency bound at a steady rate);
- ``FULL`` and ``READY`` are taken by any free writer;
- ``READYING``: full while every writer is busy, the prepare stage, which can take
  nothing more, does the batch's pre-transaction work itself (the handler's
  ``ready``); no writer takes it meanwhile; it then holds one readied chunk.

Without overlap (``overlap=False``) the stages take turns: nothing is collected
while a batch waits or is being written.

**The ack chain.** Batches are numbered as they are taken. Writers may commit
them out of order, but a batch is acknowledged only after the one before it was
(:meth:`Handover.turn`). A batch that ends unacknowledged (a stop, an error)
breaks the chain: nothing after it is acknowledged, and the broker redelivers it
all (what had committed is then a duplicate, which changes nothing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from bikesense.exceptions import BikesenseError

C = TypeVar("C")


class Next(enum.Enum):
    """The state of the next batch."""

    EMPTY = "empty"
    FILLING = "filling"
    FULL = "full"
    READYING = "readying"
    READY = "ready"


class Turn(enum.Enum):
    """May a committed batch be acknowledged?"""

    NOW = "now"  # every batch before it was acknowledged
    WAIT = "wait"  # an earlier batch is still being written
    NEVER = "never"  # an earlier batch ended unacknowledged: the chain is broken


@dataclass(frozen=True, slots=True)
class Taken(Generic[C]):
    """A batch taken by a writer: its number in the ack chain and its chunks, in order."""

    number: int
    chunks: list[C]


class HandoverError(BikesenseError, RuntimeError):
    """A transition asked of a state that does not allow it (a bug in the caller)."""


class Handover(Generic[C]):
    def __init__(
        self,
        *,
        max_messages: int,
        writers: int,
        batch_wait_s: float,
        overlap: bool = True,
        ready_early: bool = True,
    ) -> None:
        self.max_messages = max_messages
        self.writers = writers
        self.batch_wait_s = batch_wait_s
        self.overlap = overlap
        self.ready_early = ready_early and overlap
        self.state = Next.EMPTY
        self._chunks: list[C] = []
        #: Messages in the next batch.
        self.messages = 0
        self._since = 0.0  # when the next batch's first chunk was added
        #: Batches taken by writers and not finished.
        self.writing = 0
        self._taken = 0
        self._acked_through = -1
        self.broken = False

    # the prepare stage ---------------------------------------------------------------

    def room(self) -> int:
        """How many more messages the next batch may take now."""
        if self.overlap:
            return self.max_messages - self.messages
        return 0 if self.state is not Next.EMPTY or self.writing else self.max_messages

    def add(self, chunk: C, messages: int, now: float) -> None:
        if messages > self.room():
            raise HandoverError(f"{messages} messages added with room for {self.room()}")
        if self.state is Next.EMPTY:
            self._since = now
        self._chunks.append(chunk)
        self.messages += messages
        self.state = Next.FULL if self.messages >= self.max_messages else Next.FILLING

    def should_ready(self) -> bool:
        """Full while every writer is busy: the prepare stage readies it rather than idle."""
        return self.ready_early and self.state is Next.FULL and self.writing >= self.writers

    def start_readying(self) -> list[C]:
        self._expect(Next.FULL)
        self.state = Next.READYING
        return list(self._chunks)

    def finish_readying(self, readied: C) -> None:
        self._expect(Next.READYING)
        self._chunks = [readied]
        self.state = Next.READY

    def abandon_readying(self) -> None:
        """Readying failed: the chunks stay as they were."""
        self._expect(Next.READYING)
        self.state = Next.FULL

    # the writers -----------------------------------------------------------------------

    def can_take(self, now: float) -> bool:
        if self.state is Next.FILLING:
            return self.writing == 0 or now - self._since >= self.batch_wait_s
        return self.state in (Next.FULL, Next.READY)

    def wait_s(self, now: float, poll_s: float) -> float:
        """How long a writer may wait for a change before :meth:`can_take` turns by itself."""
        if self.state is not Next.FILLING:
            return poll_s
        return min(poll_s, max(self.batch_wait_s - (now - self._since), 0.001))

    def take(self, now: float) -> Taken[C]:
        if not self.can_take(now):
            raise HandoverError(f"a {self.state.value} batch cannot be taken now")
        taken = Taken(self._taken, self._chunks)
        self._taken += 1
        self._chunks, self.messages, self.state = [], 0, Next.EMPTY
        self.writing += 1
        return taken

    def turn(self, number: int) -> Turn:
        if self.broken:
            return Turn.NEVER
        return Turn.NOW if self._acked_through == number - 1 else Turn.WAIT

    def acked(self, number: int) -> None:
        # Not checked against a break: a later batch may have broken the chain while
        # this one's messages were being acknowledged.
        if self._acked_through != number - 1:
            raise HandoverError(f"batch {number} acknowledged out of turn")
        self._acked_through = number

    def finished(self, *, acked: bool) -> None:
        """A writer is done with the batch it took; unacknowledged, it breaks the chain."""
        self.writing -= 1
        self.broken |= not acked

    def _expect(self, state: Next) -> None:
        if self.state is not state:
            raise HandoverError(f"the next batch is {self.state.value}, not {state.value}")
