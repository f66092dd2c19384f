"""The consumer's hand-over queue from paho's thread: a FIFO bounded by count and by bytes."""

from __future__ import annotations

import queue
import threading
from collections import deque

from ingest.mqtt import InboundMessage


class MessageQueue:
    """A FIFO of messages bounded by count and by bytes (:attr:`InboundMessage.size_bytes`).

    :meth:`put` blocks while either bound would be passed, except that an empty queue
    takes any one message (ingest.limits bounds a message's size), so nothing waits
    for room that can never come. Raises ``queue.Full`` / ``queue.Empty`` on timeout,
    as ``queue.Queue`` does.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            msg = f"queue bounds must be positive (got {max_messages} messages, {max_bytes} bytes)"
            raise ValueError(msg)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[InboundMessage] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def qsize(self) -> int:
        return len(self._items)

    def _room_for(self, message: InboundMessage) -> bool:
        return not self._items or (
            len(self._items) < self.max_messages
            and self._bytes + message.size_bytes <= self.max_bytes
        )

    def put(self, message: InboundMessage, timeout: float) -> None:
        with self._cond:
            if not self._room_for(message) and not self._cond.wait_for(
                lambda: self._room_for(message), timeout
            ):
                raise queue.Full
            self._items.append(message)
            self._bytes += message.size_bytes
            self._cond.notify_all()

    def get(self, timeout: float) -> InboundMessage:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            return self._pop()

    def get_many(self, limit: int, max_bytes: int, timeout: float) -> list[InboundMessage]:
        """The first messages, in order, waiting up to ``timeout`` for one: at least one,
        at most ``limit``, and no more once they hold ``max_bytes`` (so the last may pass
        it). One lock for them all, where :meth:`get` takes it once a message (and paho's
        thread, putting, waits for it as often)."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            items, size = self._items, 0
            taken: list[InboundMessage] = []
            while items and len(taken) < limit and size < max_bytes:
                message = items.popleft()
                size += message.size_bytes
                taken.append(message)
            self._bytes -= size
            self._cond.notify_all()
            return taken

    def get_nowait(self) -> InboundMessage:
        with self._cond:
            if not self._items:
                raise queue.Empty
            return self._pop()

    def _pop(self) -> InboundMessage:
        message = self._items.popleft()
        self._bytes -= message.size_bytes
        self._cond.notify_all()
        return message
