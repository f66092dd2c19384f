"""Helpers shared by the test_faust_* modules (no tests here): apps built for
``agent.test_context()``, no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bikesense.settings import load_settings
from stream.faust_app.app import DistributedConfig, StreamApp, create_app

#: Never contacted: test_context() feeds agents directly. Port 9 (discard) to be sure.
NO_KAFKA = "kafka://127.0.0.1:9"
NO_DATABASE = "postgresql://nobody@127.0.0.1:9/none"


def build_app(state_dir: Path, database_url: str = NO_DATABASE, **config: Any) -> StreamApp:
    settings = load_settings(database_url=database_url, kafka_url=NO_KAFKA, state_dir=state_dir)
    config.setdefault("store_batch_within_s", 0.05)
    config.setdefault("retry_min_s", 0.05)
    return create_app(settings, config=DistributedConfig(**config))


def close_app(stream_app: StreamApp) -> None:
    # Iterating an agent's stream makes faust build its Kafka consumer, whose thread
    # gets an event loop of its own that only a started worker would run and close.
    consumer = stream_app.app._consumer
    thread = getattr(consumer, "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_closed():
        loop.close()
    stream_app.sink.close()


@contextmanager
def app_factory(tmp_path: Path) -> Iterator[Callable[..., StreamApp]]:
    """``make(database_url, **DistributedConfig fields)``; every app made is closed after."""
    made: list[StreamApp] = []

    def make(database_url: str = NO_DATABASE, **config: Any) -> StreamApp:
        stream_app = build_app(tmp_path, database_url, **config)
        made.append(stream_app)
        return stream_app

    try:
        yield make
    finally:
        for stream_app in made:
            close_app(stream_app)


@dataclass
class SentMessages:
    """What an agent sent to a topic, in order: faust's guide patches ``topic.send``."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes) -> None:
        self.messages.append((key, value))


def record_sends(topic: Any, monkeypatch: pytest.MonkeyPatch) -> SentMessages:
    sent = SentMessages()
    monkeypatch.setattr(topic, "send", sent.send)
    return sent


async def until(predicate: Callable[[], bool], *, timeout_s: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def feed(
    agent: Any,
    messages: list[tuple[bytes, bytes]],
    *,
    first_ts_s: float,
    done: Callable[[list[Any]], bool],
) -> list[Any]:
    """Put every message without waiting (a batching agent yields once per batch, so
    ``put(wait=True)`` would return after the first batch), each with an explicit event
    timestamp, then wait until ``done(results)``."""
    for i, (key, value) in enumerate(messages):
        await agent.put(value, key=key, timestamp=first_ts_s + i, wait=False)
    await until(lambda: done(list(agent.results.values())), what="the agent's results")
    return list(agent.results.values())
