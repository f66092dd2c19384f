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
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AiokafkaTransport

#: Not checked before: a partition just assigned.
_UNSEEN = object()
#: Checks in a row that find the worker recovering or stopped before that is logged.
_IDLE_CHECKS_SAID = 6


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
                    if expected is not None and message.offset < expected:
                        continue  # handed over already: fetched again after a seek
                    if (
                        expected is not None
                        and message.offset > expected
                        and acks_enabled_for(message.topic)
                        and sought_back.get(tp) != expected
                    ):
                        # The fetcher is past what was handed over: records fetched before
                        # a seek back and returned after it, or a position the seek did
                        # not reach. Seek to the next offset to hand over and fetch anew.
                        # (Gaps are real in the compacted changelogs only, whose messages
                        # are not acked; an offset gone from the log, deleted by retention,
                        # is let go after one seek: the fetcher then starts at the oldest.)
                        self.log.info(
                            "%s: fetched offset %d, %d not handed over yet: seeking back",
                            tp,
                            message.offset,
                            expected,
                        )
                        sought_back[tp] = expected
                        # In the consumer's own thread (``seek`` would call aiokafka from
                        # this one), and back here once the position moved.
                        await self.seek_wait({tp: expected})
                        break
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    generation = self.app.consumer_generation_id
                    handover = self.callback(message)
                    outcome = await self.wait_first(handover, self.suspend_flow.wait())
                    if handover not in outcome.done:
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

    _progress: dict[Any, Any]
    _idle_checks: int

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
