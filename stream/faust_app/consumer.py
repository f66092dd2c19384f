"""faust's Kafka consumer, with a rebalance that cannot skip messages.

Found against a real broker (docs/stream.md, "What a real broker showed"): when
a second worker joined mid-stream, the partition that stayed with the first
worker lost the two messages that were in flight. faust-streaming 0.15's
``Consumer._drain_messages`` remembers, per partition, the offset of the last
message it handed to the streams, and drops any later message below it as
"already read". During a rebalance the loop is stopped in the middle of
handing over a message of a batch fetched before it; the rebalance seeks the
partition back to its committed offset, and then the loop, resuming, records
the undelivered message's offset as read. The refetched messages between the
committed offset and that one are then dropped, and the offset is committed
past them: lost for good. (faust-streaming issues #221 and #606 describe the
same family of faults.)

:class:`RebalanceSafeConsumer` replaces that loop. It keeps, per partition,
the next offset to hand over, the meaning faust's seeks give it: a message
counts as read only once handed over; the batch is abandoned at the message a
rebalance interrupted (the seek after the rebalance reads it again); a message
below the next offset was handed over already, and when one above it arrives on
an acked topic, the fetcher is past what was handed over (faust-streaming #221:
records prefetched before a rebalance's seek returned after it; or a seek that
did not take): the partition is sought back to the next offset and fetched
anew, in order; and a partition that has messages beyond the next offset but
does not move is sought back too (``seek_stalled``, every few seconds: records
fetched while a rebalance had the partition paused are dropped by faust's
``getmany`` after the fetcher's position passed them). No offset is ever
marked done because it was not seen. Records
are otherwise never dropped: what the fetcher returned is past its position,
and only a seek brings it back (dropping a batch fetched after a rebalance
starves a table's recovery of its changelog for good). faust's gap
tracking exists for compacted and transactional input topics; the topics this
consumer acknowledges (readings, enriched) are neither, so a jump in offsets
can only be the fault above, and nothing is acknowledged for it.

On those topics a message is handed over only when it is the next offset, so a
kit's readings reach the qa agent in offset order and each sees the kit state
its predecessors left. Until faust's seek after a rebalance has written a
partition's committed offset, the next offset is unknown; the fetcher may then
return anything (found in the kill -9 test: a worker just assigned a partition
committed at 58 was handed message 42 and fetched 120 within a quarter of a
second). Handing over such a message would run the qa agent on a reading with a
kit state from far before or after it: a reading 20 minutes of riding ahead of
the state starts a ride of its own, its copy is stored first, and the replay
that follows cannot change it. So the consumer looks the start up itself first
(:func:`handover` says ``FIND_START``): the group's committed offset, or the
oldest message of a partition the group never committed, where faust's
``consumer_auto_offset_reset="earliest"`` starts it. Nor does it hand a message
to a stream that would drop it (:meth:`RebalanceSafeConsumer._stream_takes`:
faust's streams skip, unacknowledged, what reaches them while a rebalance has
the flow suspended), which would let the next message run with a kit state that
lacks the dropped ones and hold the partition's commits back.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from aiokafka.errors import KafkaError as AiokafkaError  # type: ignore[import-untyped]
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AiokafkaTransport

#: Not checked before: a partition just assigned.
_UNSEEN = object()
#: How long the fetch loop waits before it looks again whether the worker's flow is back.
_FLOW_WAIT_S = 0.05
#: How long the look-up of a partition's committed offset may take before it is asked again.
_LOOKUP_TIMEOUT_S = 10.0
#: Checks in a row that find the worker recovering or stopped before that is logged.
_IDLE_CHECKS_SAID = 6


class Handover(enum.Enum):
    """What the fetch loop does with one fetched message, given the partition's next offset."""

    #: The next offset (or, on a changelog, anything not below it): to the stream.
    HAND_OVER = "hand over"
    #: Below the next offset: handed over already, fetched again after a seek back.
    SKIP = "skip"
    #: Beyond the next offset on an acked topic: the fetcher is past what was handed
    #: over; seek back to the next offset and fetch anew.
    SEEK_BACK = "seek back"
    #: The next offset is not known yet (a partition just assigned, before faust's
    #: seek to the committed offset): look it up and seek there first.
    FIND_START = "find start"


def handover(next_offset: int | None, offset: int, *, acked: bool) -> Handover:
    """The fetch loop's one decision. ``acked``: the topic's messages are acknowledged and
    committed (readings, enriched), so its offsets have no gaps; a changelog's do
    (compaction), and the table's recovery keeps its own positions."""
    if not acked:
        if next_offset is not None and offset < next_offset:
            return Handover.SKIP
        return Handover.HAND_OVER
    if next_offset is None:
        return Handover.FIND_START
    if offset < next_offset:
        return Handover.SKIP
    if offset > next_offset:
        return Handover.SEEK_BACK
    return Handover.HAND_OVER


class RebalanceSafeConsumer(AiokafkaConsumer):
    async def _drain_messages(self, fetcher: Any) -> None:
        """Hand fetched messages to the streams until the consumer or ``fetcher`` stops.

        ``_read_offset[tp]`` holds the next offset to hand over, as faust's seeks
        (which write the committed offset there) mean it.
        """
        next_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        sought_back: dict[Any, int] = {}
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # getmany itself ends a batch at a rebalance (a new consumer generation).
                batch = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in batch:
                    expected = next_offsets[tp]
                    acked = acks_enabled_for(tp.topic)
                    step = handover(expected, message.offset, acked=acked)
                    if step is Handover.SKIP:
                        continue
                    if step is Handover.FIND_START:
                        if tp not in self.assignment():
                            continue  # revoked meanwhile: not ours to hand over
                        try:
                            start = await asyncio.wait_for(
                                self.start_offset(tp), timeout=_LOOKUP_TIMEOUT_S
                            )
                        except (TimeoutError, AiokafkaError) as exc:
                            # Nothing handed over; the next fetch of the partition asks again.
                            self.log.warning(
                                "%s: cannot look up where to start (%r); asking again", tp, exc
                            )
                            break
                        self.log.info(
                            "%s: fetched offset %d before the next offset was known: "
                            "starting at %d",
                            tp,
                            message.offset,
                            start,
                        )
                        await self.seek_wait({tp: start})
                        next_offsets[tp] = start  # seek_wait forgets an offset of 0
                        break
                    if step is Handover.SEEK_BACK:
                        assert expected is not None  # handover() says SEEK_BACK only with one
                        await self._seek_back(tp, message.offset, expected, sought_back)
                        break
                    if acked and not self._stream_takes(message):
                        # The stream would drop it, unacknowledged: fetch it again once the
                        # worker's flow is back (a rebalance's seek may move the next offset).
                        await self.seek_wait({tp: message.offset})
                        next_offsets[tp] = message.offset  # seek_wait forgets an offset of 0
                        await self.sleep(_FLOW_WAIT_S)
                        break
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    generation = self.app.consumer_generation_id
                    handed = self.callback(message)
                    outcome = await self.wait_first(handed, self.suspend_flow.wait())
                    if handed not in outcome.done:
                        break  # a rebalance began: the message was not handed over
                    if self.app.consumer_generation_id != generation:
                        break  # a rebalance passed meanwhile: its seek says where to go on
                    next_offsets[tp] = message.offset + 1
                    sought_back.pop(tp, None)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def _stream_takes(self, message: Any) -> bool:
        """Whether faust's stream will process ``message`` once it is handed over.

        A stream skips, without acknowledging, a message that reaches it while the app's
        flow control is suspended or that was fetched in an earlier consumer generation;
        and when a rebalance's table recovery completes, the flow control's resume empties
        the streams' queues, after faust's seek to the committed offsets has let this loop
        hand messages over again. Seen in the kill -9 and joining-worker tests: readings
        handed over in that window were dropped (58 to 67 of a partition), the next (68)
        was processed with the kit state of 57, and 58, never acknowledged, held the
        partition's commits back until the workers were restarted. So nothing is handed
        over from a rebalance's start (``app.rebalancing``) to its end, which faust marks
        after that resume."""
        app = self.app
        return bool(
            not app.rebalancing
            and app.flow_control.is_active()
            and message.generation_id == app.consumer_generation_id
        )

    async def _seek_back(
        self, tp: Any, fetched: int, expected: int, sought_back: dict[Any, int]
    ) -> None:
        """The fetcher is past what was handed over (records fetched before a seek back and
        returned after it, or a position a seek did not reach): seek to the next offset
        to hand over and fetch anew, in the consumer's own thread (``seek`` would call
        aiokafka from this one), back here once the position moved. Seeking again when
        the fetcher is still past it; an offset deleted by retention is the one real gap
        on these topics, and the hand-over then goes on from the oldest message."""
        if sought_back.get(tp) == expected:
            oldest = (await self.earliest_offsets(tp)).get(tp)
            if oldest is not None and oldest > expected:
                self.log.warning(
                    "%s: offsets %d to %d are gone from the log (retention): going on at %d",
                    tp,
                    expected,
                    oldest - 1,
                    oldest,
                )
                self._read_offset[tp] = expected = oldest
        else:
            self.log.info(
                "%s: fetched offset %d, %d not handed over yet: seeking back",
                tp,
                fetched,
                expected,
            )
        sought_back[tp] = expected
        await self.seek_wait({tp: expected})
        self._read_offset[tp] = expected  # seek_wait forgets an offset of 0

    def committed_offset(self, tp: Any) -> int | None:
        """The offset the group holds as committed for ``tp``, as far as this worker knows:
        where a replay of the partition would start (the qa agent's table keeps the kit
        states from there on, kitlog.py). Not faust's ``_committed_offset``, which also
        takes the offsets of a commit that failed (as commits do in a rebalance)."""
        return self._broker_committed().get(tp)

    def _broker_committed(self) -> dict[Any, int]:
        known: dict[Any, int] | None = getattr(self, "_known_committed", None)
        if known is None:
            known = self._known_committed = {}
        return known

    async def _commit(self, offsets: Any) -> bool:
        did_commit = bool(await super()._commit(offsets))
        if did_commit:
            self._broker_committed().update(offsets)
        return did_commit

    async def seek_to_committed(self) -> Any:
        """faust's seek after a rebalance (``perform_seek``): the offsets it returns are the
        broker's."""
        committed = await super().seek_to_committed()
        self._broker_committed().update(
            {tp: offset for tp, offset in committed.items() if offset is not None and offset >= 0}
        )
        return committed

    async def start_offset(self, tp: Any) -> int:
        """Where the hand-over of a partition starts: the group's committed offset, or the
        oldest message of a partition the group never committed."""
        thread: Any = self._thread
        committed = await thread.call_thread(thread._ensure_consumer().committed, tp)
        if committed is not None:
            self._broker_committed()[tp] = int(committed)
            return int(committed)
        return int((await self.earliest_offsets(tp))[tp])

    _progress: dict[Any, Any]
    _idle_checks: int
    _known_committed: dict[Any, int]

    async def seek_stalled(self) -> list[Any]:
        """Seek back every acked partition that has messages beyond the next offset to hand
        over and has not moved since the last call: the fetcher is past them (records
        dropped while the partition was paused in a rebalance), and only a seek fetches
        them again. A partition with no committed offset that has handed nothing over in
        two calls in a row is sought to its oldest message, where the fetcher should
        have started. Called every few seconds (``app.py``); returns the partitions sought."""
        previous = getattr(self, "_progress", {})
        self._progress = current = {}
        if self.app.in_recovery or not self.flow_active:
            # Normal for a moment in a rebalance; said once when it lasts (a worker that
            # stays there consumes nothing, and this check would otherwise be silent).
            self._idle_checks = getattr(self, "_idle_checks", 0) + 1
            if self._idle_checks == _IDLE_CHECKS_SAID:
                self.log.warning(
                    "stall check: %d checks in a row found the worker %s",
                    self._idle_checks,
                    "in table recovery" if self.app.in_recovery else "with its flow stopped",
                )
            return []
        self._idle_checks = 0
        acks_enabled_for = self.app.topics.acks_enabled_for
        watched = [tp for tp in self.assignment() if acks_enabled_for(tp.topic)]
        if not watched:
            return []
        # From the broker: the fetcher's cached high-water mark of a partition it does
        # not fetch from does not move.
        ends = await self.highwaters(*watched)
        # A partition the group never committed has no next offset (None) until its first
        # message is handed over; the fetcher starts it at the oldest message.
        never = [
            tp
            for tp in watched
            if self._read_offset.get(tp) is None and previous.get(tp, _UNSEEN) is None
        ]
        oldest = await self.earliest_offsets(*never) if never else {}
        sought = []
        for tp in watched:
            expected = self._read_offset.get(tp)
            current[tp] = expected
            highwater = ends.get(tp)
            if expected is None and previous.get(tp, _UNSEEN) is None:
                expected = oldest.get(tp)
                previous_expected = expected
            else:
                previous_expected = previous.get(tp, _UNSEEN)
            if (
                expected is not None
                and highwater is not None
                and highwater > expected
                and previous_expected == expected
            ):
                self.log.info(
                    "%s: no message handed over since offset %d of %d: seeking back",
                    tp,
                    expected,
                    highwater,
                )
                # A partition taken out of fetching because its stream's buffer was full
                # comes back only when that buffer drains; a rebalance that cleared the
                # buffer leaves it out for good. Put it back, then fetch from ``expected``.
                self.on_buffer_drop(tp)
                await self.seek_wait({tp: expected})
                sought.append(tp)
        return sought


class RebalanceSafeTransport(AiokafkaTransport):
    """faust's aiokafka transport with :class:`RebalanceSafeConsumer`."""

    Consumer = RebalanceSafeConsumer
