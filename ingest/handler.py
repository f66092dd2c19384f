"""What the MQTT consumer hands admitted batches to: a :class:`BatchHandler`.

The consumer (``ingest.consumer``) owns the broker side — the bounded queue, the
batches, the acks in order — and knows nothing of where a batch goes. A handler
makes an admitted batch durable, in two steps:

- :meth:`~BatchHandler.prepare`, on the prepare stage's thread, one chunk at a time
  in arrival order, while earlier batches are being committed (per-kit state
  carries from one chunk to the next here);
- :meth:`~BatchHandler.commit`, on a writer's thread, once per batch (the chunks
  joined); when it returns, what the batch carried is durable and the consumer
  may acknowledge its messages (in their turn).

Two implementations: the embedded runtime's database handler
(``stream.embedded.DatabaseHandler``: the stream core, then PostgreSQL) and the
Kafka producer handler (``stream.faust_app.ingest.KafkaHandler``). The CLI layer
puts a consumer and a handler together (``bikesense.runtimes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from stream.core.admitted import Admitted, WriteOutcome

B = TypeVar("B")


class BatchHandler(Protocol[B]):
    #: Commits that may run at once, each on a writer thread of its own (numbered from
    #: 0); the consumer acks their batches in arrival order all the same.
    writers: int
    #: Whether :meth:`ready` does work worth doing on the prepare stage while every
    #: writer is busy (``ingest.handover``, state READYING).
    readies_early: bool
    #: Errors that mean a service is away for now, by the name the log gives it:
    #: the consumer retries the step with back-off, and acks nothing meanwhile.
    unavailable: Mapping[type[Exception], str]

    async def start(self) -> None:
        """Before the first batch, on the consumer's event loop."""

    async def stop(self) -> None:
        """After the last batch: release connections."""

    def prepare(self, admitted: Admitted) -> B:
        """One chunk, continuing from the chunks prepared before it."""

    def join(self, chunks: Sequence[B]) -> B:
        """Consecutive prepared chunks as one batch, in order."""

    def ready(self, batch: B) -> B:
        """``batch`` with the work that need not wait for a writer done."""

    def commit(self, batch: B, writer: int) -> WriteOutcome:
        """Make ``batch`` durable; may be called again after an :attr:`unavailable` error."""

    def idle(self, writer: int) -> None:
        """Writer ``writer`` waited a while and found no batch: work that waits for a
        quiet moment (the embedded runtime merges aggregates that waited). An
        :attr:`unavailable` error is logged, and the next idle moment tries again."""
