"""The consumer's hand-over queue is bounded by bytes as well as by count."""

from __future__ import annotations

import queue
import threading

import pytest

from ingest.consumer_config import ConsumerConfig
from ingest.message_queue import MessageQueue
from ingest.mqtt import InboundMessage


def _message(payload_bytes: int, mid: int = 1) -> InboundMessage:
    return InboundMessage(
        topic="t", payload=bytes(payload_bytes), mid=mid, qos=1, received_ms=0, generation=1
    )


def test_put_blocks_once_the_bytes_would_pass_the_bound() -> None:
    q = MessageQueue(max_messages=100, max_bytes=10_000)
    q.put(_message(6_000), timeout=0.1)
    with pytest.raises(queue.Full):
        q.put(_message(6_000), timeout=0.1)  # 2 messages, far under the count bound
    assert (q.qsize(), q.size_bytes) == (1, 6_001)


def test_count_bound_still_holds() -> None:
    q = MessageQueue(max_messages=2, max_bytes=10**9)
    q.put(_message(1), timeout=0.1)
    q.put(_message(1), timeout=0.1)
    with pytest.raises(queue.Full):
        q.put(_message(1), timeout=0.1)


def test_an_empty_queue_takes_one_message_larger_than_the_bound() -> None:
    q = MessageQueue(max_messages=10, max_bytes=100)
    q.put(_message(500), timeout=0.1)  # never waits for room that cannot come
    with pytest.raises(queue.Full):
        q.put(_message(1), timeout=0.1)


def test_a_blocked_put_goes_on_once_a_get_makes_room_in_order() -> None:
    q = MessageQueue(max_messages=100, max_bytes=1_000)
    q.put(_message(900, 1), timeout=0.1)
    waiting = threading.Thread(target=q.put, args=(_message(900, 2), 5.0))
    waiting.start()
    assert q.get(timeout=1.0).mid == 1
    waiting.join(5)
    assert q.get(timeout=1.0).mid == 2
    assert (q.qsize(), q.size_bytes) == (0, 0)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_the_consumer_bounds_its_queue_in_bytes_by_default() -> None:
    config = ConsumerConfig(mqtt_url="mqtt://127.0.0.1:1883")
    assert config.queue_bytes == 32 * 1024 * 1024
    with pytest.raises(ValueError, match="queue_bytes"):
        ConsumerConfig(mqtt_url="mqtt://127.0.0.1:1883", queue_bytes=0)


def test_get_many_takes_what_is_there_in_order_within_its_bounds() -> None:
    q = MessageQueue(max_messages=100, max_bytes=10_000)
    for mid in range(1, 8):
        q.put(_message(99, mid), timeout=0.1)  # 100 bytes each with the topic
    assert [m.mid for m in q.get_many(3, 10_000, timeout=0.1)] == [1, 2, 3]
    # The bytes bound stops it once reached: the message that reaches it is taken.
    assert [m.mid for m in q.get_many(10, 150, timeout=0.1)] == [4, 5]
    assert (q.qsize(), q.size_bytes) == (2, 200)
    assert [m.mid for m in q.get_many(10, 10_000, timeout=0.1)] == [6, 7]
    assert (q.qsize(), q.size_bytes) == (0, 0)
    with pytest.raises(queue.Empty):
        q.get_many(10, 10_000, timeout=0.05)


def test_get_many_waits_for_a_first_message_and_makes_room_for_a_blocked_put() -> None:
    q = MessageQueue(max_messages=2, max_bytes=10_000)
    q.put(_message(1, 1), timeout=0.1)
    q.put(_message(1, 2), timeout=0.1)
    waiting = threading.Thread(target=q.put, args=(_message(1, 3), 5.0))
    waiting.start()
    assert [m.mid for m in q.get_many(2, 10_000, timeout=1.0)] == [1, 2]
    waiting.join(5)
    assert not waiting.is_alive()
    late = threading.Timer(0.1, q.put, args=(_message(1, 4), 1.0))
    assert [m.mid for m in q.get_many(5, 10_000, timeout=1.0)] == [3]
    late.start()
    assert [m.mid for m in q.get_many(5, 10_000, timeout=2.0)] == [4]
    late.join()
