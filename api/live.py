"""Live updates: PostgreSQL NOTIFY in, Server-Sent Events out.

The stream runtime calls :func:`notify_payload` after each committed batch and
sends the result with ``SELECT pg_notify('bikesense_aggregates', %s)`` (or
``NOTIFY``) in the same transaction, so a notification is delivered exactly when
its aggregates are visible. The API LISTENs on one connection
(:func:`listen_forever`) and fans events out through a :class:`Broadcaster`.

Each SSE client has a bounded queue. Overflow policy: when a slow client's
queue is full, the oldest event is dropped and the client is sent one
``resync`` event before the next update, meaning "you missed some: reload what
you show". The same happens to every client when the LISTEN connection was
lost and re-established (notifications sent meanwhile are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

CHANNEL = "bikesense_aggregates"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well under.
MAX_PAYLOAD_BYTES = 7_500
PAYLOAD_VERSION = 1

log = logging.getLogger(__name__)


def notify_payload(*, metrics: Iterable[str], resolutions: Iterable[int],
                   windows: Iterable[tuple[int, int]], cells: Iterable[int] = ()) -> str:
    """The JSON text to NOTIFY on :data:`CHANNEL` after a batch of aggregates is committed.

    ``metrics``: API metric names (``"pm25"``…); ``resolutions``: H3 resolutions
    written; ``windows``: distinct (window_s, window_start_ms) pairs written;
    ``cells``: H3 cells touched (ints), at any resolution. Cells are dropped
    from the end (and ``"cells_truncated": true`` set) to keep the payload under
    :data:`MAX_PAYLOAD_BYTES`; windows are summarised by their range if needed.

    Example: ``{"v": 1, "metrics": ["pm25"], "resolutions": [9],
    "windows": [[3600, 1700000000000]], "cells": ["891f1d48177ffff"]}``
    """
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "metrics": sorted(set(metrics)),
        "resolutions": sorted({int(r) for r in resolutions}),
        "windows": sorted({(int(w), int(s)) for w, s in windows}),
    }
    if len(body["windows"]) > 64:
        starts = [s for _, s in body["windows"]]
        body["windows_range_ms"] = [min(starts), max(starts)]
        body["windows"] = []
    cell_list = [format(int(c), "x") for c in dict.fromkeys(cells)]
    body["cells"] = cell_list
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        body["cells_truncated"] = True
        # Each cell costs ~18 bytes in the text: cut to fit, then trim any rest.
        budget = MAX_PAYLOAD_BYTES - len(json.dumps({**body, "cells": []}).encode())
        cell_list = cell_list[: max(budget // 18, 0)]
        while True:
            body["cells"] = cell_list
            text = json.dumps(body, separators=(",", ":"))
            if len(text.encode()) <= MAX_PAYLOAD_BYTES:
                break
            cell_list = cell_list[:-8]
    return text


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One update as the API received it, in the form sent to clients."""

    kind: str  # "aggregates" or "resync"
    data: dict[str, Any]

    def public(self) -> LiveEvent:
        # Which cells a bike just touched, in real time, is a live track: the
        # public gets only "something changed for these metrics" (decision 4).
        return LiveEvent(self.kind, {k: v for k, v in self.data.items()
                                     if k not in {"cells", "cells_truncated"}})


def parse_payload(text: str) -> LiveEvent:
    """A notification's payload as an event; anything unreadable becomes ``resync``."""
    try:
        data = json.loads(text)
    except ValueError:
        return LiveEvent("resync", {"reason": "unreadable notification"})
    if not isinstance(data, dict):
        return LiveEvent("resync", {"reason": "unreadable notification"})
    return LiveEvent("aggregates", data)


@dataclass(eq=False)
class Subscription:
    """A client's bounded queue of events."""

    maxlen: int
    _events: deque[LiveEvent] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    missed: bool = False
    dropped: int = 0

    def put(self, event: LiveEvent) -> None:
        if len(self._events) >= self.maxlen:
            self._events.popleft()
            self.missed = True
            self.dropped += 1
        self._events.append(event)
        self._wakeup.set()

    def flag_missed(self) -> None:
        self.missed = True
        self._wakeup.set()

    async def get(self, timeout_s: float) -> LiveEvent | None:
        """The next event; a ``resync`` first if some were dropped; None on timeout."""
        if not self._events and not self.missed:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        if self.missed:
            self.missed = False
            return LiveEvent("resync", {"reason": "client too slow; events were dropped"})
        if self._events:
            return self._events.popleft()
        return None


class Broadcaster:
    """Fans events out to subscriptions; never blocks the publisher."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self.published = 0

    @property
    def clients(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        sub = Subscription(self.queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, event: LiveEvent) -> None:
        self.published += 1
        for sub in self._subs:
            sub.put(event)

    def resync_all(self, reason: str) -> None:
        for sub in self._subs:
            sub.flag_missed()
        log.info("live: asked %d clients to resync (%s)", len(self._subs), reason)


async def listen_forever(conninfo: str, broadcaster: Broadcaster, *,
                         ready: asyncio.Event | None = None,
                         retry_s: float = 1.0, max_retry_s: float = 30.0) -> None:
    """LISTEN on :data:`CHANNEL` and publish each notification; reconnect when the link drops."""
    delay = retry_s
    first = True
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if not first:
                    broadcaster.resync_all("database connection re-established")
                first = False
                delay = retry_s
                if ready is not None:
                    ready.set()
                async for notify in conn.notifies():
                    broadcaster.publish(parse_payload(notify.payload))
        except psycopg.Error as exc:
            log.warning("live: LISTEN connection lost (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry_s)


def sse_format(event: LiveEvent, event_id: int) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def sse_stream(broadcaster: Broadcaster, *, public: bool, heartbeat_s: float,
                     is_disconnected: Any = None) -> AsyncIterator[bytes]:
    """The SSE byte stream of one client, with heartbeats as comments."""
    sub = broadcaster.subscribe()
    try:
        yield b"retry: 3000\n: connected\n\n"
        event_id = 0
        while True:
            event = await sub.get(heartbeat_s)
            if is_disconnected is not None and await is_disconnected():
                return
            if event is None:
                yield b": ping\n\n"
                continue
            event_id += 1
            yield sse_format(event.public() if public else event, event_id)
    finally:
        broadcaster.unsubscribe(sub)
