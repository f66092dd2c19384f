"""How many exports run at once: a bound of their own, in all and per API key.

An export holds one or two pooled connections for as long as its client reads
(:mod:`api.export_stream`), so without a bound a few slow downloads take every
connection of the pool and tiles and cells answer 503. :class:`ExportSlots`
admits at most ``total`` exports at a time, and at most ``per_key`` of one key;
an export beyond them waits at most ``wait_s`` (a slot of an export whose
client went away comes back within a second, so cancelling a download and
starting it again just works), then is refused, before any byte or connection,
with the uniform error body and ``Retry-After``: 429 ``rate_limited`` when the
key already has its share, 503 ``unavailable`` when every slot is taken.
Refusing rather than queueing longer keeps a waiting export from holding a
request open for the length of another's download.

Slots live in one process (the event loop's thread), like the pool they protect.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from api.errors import RateLimitedError, ServiceUnavailableError

#: Seconds a refused export is asked to wait: exports last seconds to minutes.
EXPORT_RETRY_AFTER_S = 10
#: Seconds an export waits for a slot before it is refused.
EXPORT_SLOT_WAIT_S = 2.0


class ExportSlot:
    """One admitted export; :meth:`release` (idempotent) gives its slot back."""

    def __init__(self, slots: ExportSlots, key: str) -> None:
        self._slots: ExportSlots | None = slots
        self._key = key

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self._key)


class ExportSlots:
    def __init__(self, total: int, per_key: int, wait_s: float = EXPORT_SLOT_WAIT_S) -> None:
        if total < 1 or per_key < 1 or wait_s < 0:
            msg = "total and per_key must be >= 1, wait_s >= 0"
            raise ValueError(msg)
        self.total = total
        self.per_key = per_key
        self.wait_s = wait_s
        self._running: Counter[str] = Counter()
        self._freed = asyncio.Event()  # set (and replaced) whenever a slot is given back

    @property
    def running(self) -> int:
        return self._running.total()

    async def acquire(self, key: str) -> ExportSlot:
        """A slot for an export of ``key``, waiting at most ``wait_s`` for one; else the
        refusal, as an :class:`api.errors.ApiError`."""
        deadline = time.monotonic() + self.wait_s
        while self._running[key] >= self.per_key or self.running >= self.total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._refusal(key)
            try:
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                raise self._refusal(key) from None
        # No await since the check: on the event loop's one thread, nothing took it.
        self._running[key] += 1
        return ExportSlot(self, key)

    def _refusal(self, key: str) -> RateLimitedError | ServiceUnavailableError:
        if self._running[key] >= self.per_key:
            return RateLimitedError(
                f"this key already has {self._running[key]} exports running (at most "
                f"{self.per_key} at a time); retry when one has finished",
                parameter="X-API-Key",
                location="header",
                headers={"Retry-After": str(EXPORT_RETRY_AFTER_S)},
            )
        return ServiceUnavailableError(
            f"all {self.total} export slots are busy; retry shortly",
            retry_after_s=EXPORT_RETRY_AFTER_S,
        )

    def _release(self, key: str) -> None:
        self._running[key] -= 1
        if self._running[key] <= 0:
            del self._running[key]
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()
