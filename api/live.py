"""Live updates: PostgreSQL NOTIFY in, Server-Sent Events out.

The stream runtime sends ``storage.notify.notify_payload``'s text on
``storage.notify.CHANNEL`` in each batch's own transaction, so a notification is
delivered exactly when its aggregates are visible. The API LISTENs on one connection
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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from storage.notify import CHANNEL

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One update as the API received it, in the form sent to clients."""

    kind: str  # "aggregates" or "resync"
    data: dict[str, Any]

    def public(self) -> LiveEvent:
        # Which cells a bike just touched, in real time, is a live track: the
        # public gets only "something changed for these metrics" (decision 4).
        return LiveEvent(
            self.kind, {k: v for k, v in self.data.items() if k not in {"cells", "cells_truncated"}}
        )


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


async def listen_forever(
    conninfo: str,
    broadcaster: Broadcaster,
    *,
    ready: asyncio.Event | None = None,
    retry_s: float = 1.0,
    max_retry_s: float = 30.0,
) -> None:
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


#: How often a keyed stream checks that its key is still valid: revoking a key ends
#: its open streams within this many seconds (docs/privacy.md, "Threat model").
KEY_CHECK_S = 2.0


async def sse_stream(
    broadcaster: Broadcaster,
    *,
    public: bool,
    heartbeat_s: float,
    is_disconnected: Any = None,
    still_valid: Callable[[], Awaitable[bool]] | None = None,
    key_check_s: float = KEY_CHECK_S,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one client, with heartbeats as comments.

    ``still_valid``: for a stream opened with a key, whether the key still is; checked
    every ``key_check_s``, and the stream ends with an ``event: revoked`` once it is not.
    """
    sub = broadcaster.subscribe()
    loop = asyncio.get_running_loop()
    try:
        yield b"retry: 3000\n: connected\n\n"
        event_id = 0
        next_check = loop.time() + key_check_s
        last_sent = loop.time()
        while True:
            wait_s = heartbeat_s - (loop.time() - last_sent)
            if still_valid is not None:
                wait_s = min(wait_s, next_check - loop.time())
            event = await sub.get(max(wait_s, 0.0))
            if is_disconnected is not None and await is_disconnected():
                return
            if still_valid is not None and loop.time() >= next_check:
                if not await still_valid():
                    yield sse_format(
                        LiveEvent("revoked", {"reason": "the API key was revoked"}), event_id + 1
                    )
                    return
                next_check = loop.time() + key_check_s
            if event is None:
                if loop.time() - last_sent >= heartbeat_s:
                    yield b": ping\n\n"
                    last_sent = loop.time()
                continue
            event_id += 1
            yield sse_format(event.public() if public else event, event_id)
            last_sent = loop.time()
    finally:
        broadcaster.unsubscribe(sub)
