"""A kit's states by readings offset: what makes a replayed message see the state it saw.

The qa agent's table holds, per kit, the state after each of its messages that
may still be processed again, each with the offset of that message on
``{app id}.readings``::

    kit 42: (offset 17, state after 17), (offset 23, state after 23), (offset 31, ...)

A message at offset ``o`` is run with the state of the newest entry *below*
``o``, and leaves the entries below ``o`` plus its own. faust writes a table's
changelog as messages are processed but commits their input offsets every few
seconds, so after a crash (kill -9) or a rebalance the next owner restores a
kit's value from the changelog that can include messages it then processes
again from the committed offset. With a single state it ran those again with a
state that already held them and everything after: a late upload then joins a
ride it did not join the first time, a stuck-sensor run or a jump filter's
anchor is not carried, and when the first copy of their output was lost with
the crash, what is stored differs from what the embedded runtime stores. With
the entries, a message's state is the one left by the kit's messages below it,
however often it is processed: the ride ids and flags of a reading are a
function of the readings topic alone (docs/design.md decision 2).

Entries below the partition's committed offset (the next message to process:
where a replay starts) are never needed again except the newest of them (the
state the next message after the commit starts from), so each write keeps
that one and drops the older ones. The
number of entries is bounded (:data:`MAX_ENTRIES`); past it the oldest go, and
a replay that reaches below what is kept runs with the oldest state kept and is
logged (it can only follow a partition whose commits stood still for that many
of the kit's messages).

Pure: no faust, no Kafka; the agent passes the message's offset and the
consumer's committed offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

#: A kit's state: :class:`~stream.core.state.KitState`, or its JSON document in the
#: table's value (the qa agent turns only the state it starts from into a KitState).
S = TypeVar("S")

#: Entries kept per kit at most: the kit's messages since the last commit, plus one.
#: faust commits every 2.8 s (``broker_commit_interval``); a kit sends a message per
#: ingest batch it has frames in, and a worker catching up after a kill -9 got through
#: about 50 of one kit's messages before a rebalance sent it back to the committed
#: offset (measured in the kill -9 test). About 400 bytes of JSON each.
MAX_ENTRIES = 64

#: The offset of a state whose message is not known: one written before states carried
#: offsets (kit state version 1). Below every offset, so it is what any message starts from.
UNKNOWN_OFFSET = -1


@dataclass(frozen=True, slots=True)
class KitStateLog(Generic[S]):
    """``entries``: (readings offset of a message, the kit's state after it), ascending."""

    kit_id: int
    entries: tuple[tuple[int, S], ...] = ()

    def before(self, offset: int) -> S | None:
        """The state a message at ``offset`` starts from: the newest entry below it; the
        oldest kept when every entry is at or above it (see :meth:`reaches`)."""
        found = None
        for at, state in self.entries:
            if at >= offset:
                break
            found = state
        if found is None and self.entries:
            return self.entries[0][1]
        return found

    def reaches(self, offset: int) -> bool:
        """Whether the state before ``offset`` is kept: false only for a message processed
        again from below the oldest entry (commits stood still past :data:`MAX_ENTRIES`)."""
        return not self.entries or self.entries[0][0] < offset

    def after(
        self,
        offset: int,
        state: S,
        *,
        committed: int | None,
        max_entries: int = MAX_ENTRIES,
    ) -> KitStateLog[S]:
        """The log once the message at ``offset`` left ``state``. Entries at or above
        ``offset`` belong to a pass being made again and go; so do entries below the newest
        one under ``committed`` (the partition's committed offset: where any replay starts)."""
        kept = [entry for entry in self.entries if entry[0] < offset]
        if committed is not None:
            below = [i for i, (at, _) in enumerate(kept) if at < committed]
            if below:
                kept = kept[below[-1] :]
        kept.append((offset, state))
        return KitStateLog(self.kit_id, tuple(kept[-max_entries:]))
