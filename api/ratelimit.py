"""Rate limiting of the public role: a token bucket per client, in bounded memory.

Each client address has a bucket of ``burst`` tokens refilled at ``rate_per_s``;
a request takes one token or is refused with the seconds until one is back.
At most ``max_clients`` buckets are kept: when a new client arrives and the
table is full, the bucket seen least recently is forgotten (that client starts
again with a full bucket, which errs on the side of serving).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_clients < 1:
            msg = "rate_per_s must be > 0, burst and max_clients >= 1"
            raise ValueError(msg)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        # client -> (tokens, last refill time); ordered by last use
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float | None:
        """Take a token; None when granted, else the seconds to wait."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        granted = tokens >= 1.0
        if granted:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return None if granted else (1.0 - tokens) / self.rate_per_s
