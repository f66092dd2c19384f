"""The faust agents under ``agent.test_context()``: the same core, the same writer.

No broker: faust feeds each agent directly. The qa agent's sends to the
enriched topic are recorded (faust's testing guide patches ``topic.send``); the
store agent writes to the real PostgreSQL of the test harness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from storage.kits import MasterKey, register_kit
from stream.core.batch import ENRICHED_DTYPE
from stream.core.binning import parent_cells
from stream.core.process import CoreConfig, aggregate_new_rows, process_batch
from stream.core.state import KitState
from stream.faust_app.app import StreamApp
from stream.faust_app.codec import (
    decode_enriched,
    decode_kit_log,
    encode_enriched,
    encode_readings,
    kit_key,
    route_key,
)
from stream.faust_app.steps import QaOutcome, StoreOutcome, qa_step, route_by_cell, store_batch
from tests.stream.stream_factories import T0_MS, riding
from tests.stream.test_faust_support import app_factory, feed, record_sends

CORE = CoreConfig()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., StreamApp]]:
    with app_factory(tmp_path) as make:
        yield make


def _message(readings: np.ndarray, *, received_ms: int | None = None) -> tuple[bytes, bytes]:
    kit = int(readings["kit_id"][0])
    received = np.full(len(readings), received_ms or int(readings["ts_ms"].max()) + 2000)
    return kit_key(kit), encode_readings(readings, received)


def _embedded_way(batches: list[np.ndarray]) -> tuple[np.ndarray, dict[int, KitState]]:
    """What the embedded runtime computes for the same messages, one after the other."""
    states: dict[int, KitState] = {}
    out = []
    for readings in batches:
        received = int(readings["ts_ms"].max()) + 2000
        processed = process_batch(readings, received, states, CORE)
        processed.enriched["received_ms"] = received
        states = processed.states
        out.append(processed.enriched)
    return np.concatenate(out), states


def _by_identity(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows["idx"], rows["seq"], rows["boot_id"], rows["kit_id"]))]


def _run(scenario: Any) -> Any:
    return asyncio.run(scenario)


# --- qa agent ------------------------------------------------------------------------------


def test_qa_agent_carries_kit_state_across_messages_like_the_embedded_runtime(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream_app = make_app()
    sent = record_sends(stream_app.enriched, monkeypatch)
    ride = riding(90, kit_id=7, speed_mps=6.0, seed=2)
    # A position jump in the second message: only the state carried over from the first
    # message (the jump filter's anchor) can tell it from the readings before it.
    ride["lat_deg"][50] += 0.05
    batches = [ride[:30], ride[30:60], ride[60:]]

    async def scenario() -> list[Any]:
        async with stream_app.qa.test_context() as agent:
            for i, readings in enumerate(batches):
                key, value = _message(readings)
                await agent.put(value, key=key, timestamp=T0_MS / 1000 + i)
            return list(agent.results.values())

    outcomes = _run(scenario())
    assert [(o.kit_id, o.readings) for o in outcomes] == [(7, 30), (7, 30), (7, 30)]
    expected, states = _embedded_way(batches)
    forwarded = np.concatenate([decode_enriched(value) for _, value in sent.messages])
    assert _by_identity(forwarded).tobytes() == _by_identity(expected).tobytes()
    assert len(np.unique(forwarded["ride_id"])) == 1  # one ride, not three
    # The table holds the kit's states by readings offset: the last one is the embedded one.
    assert decode_kit_log(stream_app.kit_states[kit_key(7)]).entries[-1] == (2, states[7])


def test_qa_agent_keys_enriched_messages_by_coarse_cell(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream_app = make_app()
    sent = record_sends(stream_app.enriched, monkeypatch)
    # 20 km east at 20 m/s: several resolution-7 cells (about 1.2 km across).
    ride = riding(1000, kit_id=11, speed_mps=20.0)
    ride["gnss_fix"][5:8] = 0  # no fix: no cell, still stored
    ride["lat_deg"][5:8] = np.nan
    ride["lon_deg"][5:8] = np.nan

    async def scenario() -> None:
        async with stream_app.qa.test_context() as agent:
            key, value = _message(ride)
            await agent.put(value, key=key, timestamp=T0_MS / 1000)

    _run(scenario())
    assert len(sent.messages) > 3
    rows_seen = 0
    for key, value in sent.messages:
        rows = decode_enriched(value)
        rows_seen += len(rows)
        parents = np.unique(parent_cells(rows["cell"], min(CORE.resolutions)))
        assert len(parents) == 1
        assert key == route_key(int(parents[0]), 11)
    assert rows_seen == 1000
    assert [k for k, _ in sent.messages if k.startswith(b"k")] == [b"k11"]


def test_qa_agent_files_a_kits_state_under_the_partition_of_its_readings(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a worker taking over the partition restores: the changelog entry of the kit's
    state goes to the partition its readings came from (co-partitioned with the topic)."""
    stream_app = make_app()
    record_sends(stream_app.enriched, monkeypatch)

    async def scenario() -> list[tuple[str, bytes, int]]:
        async with stream_app.qa.test_context() as agent:
            for kit, partition in ((7, 5), (8, 2)):
                key, value = _message(riding(10, kit_id=kit))
                await agent.put(value, key=key, partition=partition, timestamp=1.0)
        # Not started, faust's producer keeps what it was given in its buffer.
        pending = stream_app.app.producer.buffer.pending
        futures = [pending.get_nowait() for _ in range(pending.qsize())]
        return [
            (f.message.channel.get_topic_name(), f.message.key, f.message.partition)
            for f in futures
        ]

    assert _run(scenario()) == [
        ("bikesense-kit-states-changelog", b"7", 5),
        ("bikesense-kit-states-changelog", b"8", 2),
    ]


def test_qa_agent_keeps_kits_apart(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream_app = make_app()
    record_sends(stream_app.enriched, monkeypatch)
    a, b = riding(40, kit_id=1), riding(40, kit_id=2, boot_id=5, speed_mps=3.0, seed=9)
    batches = [a[:20], b[:20], a[20:], b[20:]]

    async def scenario() -> None:
        async with stream_app.qa.test_context() as agent:
            for i, readings in enumerate(batches):
                key, value = _message(readings)
                await agent.put(value, key=key, timestamp=T0_MS / 1000 + i)

    _run(scenario())
    _, states_a = _embedded_way([a[:20], a[20:]])
    _, states_b = _embedded_way([b[:20], b[20:]])
    assert decode_kit_log(stream_app.kit_states[b"1"]).entries[-1][1] == states_a[1]
    assert decode_kit_log(stream_app.kit_states[b"2"]).entries[-1][1] == states_b[2]


def test_qa_agent_gives_a_message_processed_again_what_it_gave_the_first_time(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Messages 0, 1, 2 of a kit, then 1 and 2 again at their offsets (the next owner after
    a kill -9 restores the kit's value as of 2 and starts at the committed offset 1): the
    same enriched rows, ride ids and flags included (stream/faust_app/kitlog.py)."""
    stream_app = make_app()
    sent = record_sends(stream_app.enriched, monkeypatch)
    minute_ms = 60_000
    batches = [
        riding(60, t0_ms=T0_MS),
        riding(60, t0_ms=T0_MS + 25 * minute_ms, seq0=100),  # a second ride
        riding(60, t0_ms=T0_MS + 10 * minute_ms, seq0=50),  # late: joins the first
    ]

    async def scenario() -> None:
        async with stream_app.qa.test_context() as agent:
            for i, readings in enumerate(batches):
                key, value = _message(readings)
                await agent.put(value, key=key, timestamp=T0_MS / 1000 + i)
            agent.sent_offset = 1  # delivered again from offset 1
            for i, readings in enumerate(batches[1:], start=1):
                key, value = _message(readings)
                await agent.put(value, key=key, timestamp=T0_MS / 1000 + i)

    _run(scenario())
    rows = np.concatenate([decode_enriched(value) for _, value in sent.messages])
    first, again = _by_identity(rows[:180]), _by_identity(rows[180:])  # sent in message order
    expected, _ = _embedded_way(batches)
    assert _by_identity(expected).tobytes() == first.tobytes()
    assert _by_identity(expected[60:]).tobytes() == again.tobytes()


def test_qa_agent_skips_unreadable_messages_and_goes_on(
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream_app = make_app()
    sent = record_sends(stream_app.enriched, monkeypatch)
    good_key, good = _message(riding(10, kit_id=3))
    _, other_kit = _message(riding(10, kit_id=4))

    async def scenario() -> list[Any]:
        async with stream_app.qa.test_context() as agent:
            await agent.put(b"garbage!", key=b"3", timestamp=1.0)
            await agent.put(other_kit, key=b"3", timestamp=2.0)  # kit 4's readings, keyed 3
            await agent.put(good, key=good_key, timestamp=3.0)
            return list(agent.results.values())

    with caplog.at_level(logging.ERROR):
        outcomes = _run(scenario())
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], QaOutcome)
    assert outcomes[2].readings == 10
    assert "envelope magic" in caplog.text
    assert "must hold readings of that kit alone" in caplog.text
    assert set(stream_app.kit_states.keys()) == {b"3"}
    assert sum(len(decode_enriched(v)) for _, v in sent.messages) == 10


# --- store agent (real PostgreSQL) ---------------------------------------------------------


@pytest.fixture
def kits_registered(migrated_database_url: str) -> str:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        for kit in (1, 2, 7):
            register_kit(conn, MasterKey.generate(), kit)
    return migrated_database_url


def _enriched_messages(batches: list[np.ndarray]) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
    messages: list[tuple[bytes, bytes]] = []
    rows: list[np.ndarray] = []
    states: dict[bytes, bytes] = {}
    for offset, readings in enumerate(batches):
        key, value = _message(readings)
        outcome = qa_step(value, key, states.get(key), CORE, min(CORE.resolutions), offset=offset)
        assert outcome.state is not None
        states[key] = outcome.state
        messages.extend(outcome.forwards)
        rows.extend(decode_enriched(v) for _, v in outcome.forwards)
    return messages, np.concatenate(rows)


def _partials(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT metric, resolution, cell, window_s,"
            " (extract(epoch FROM window_start) * 1000)::bigint, n, sum, min, max, hist"
            " FROM window_partials ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()


def _expected_partials(enriched: np.ndarray) -> list[tuple[Any, ...]]:
    partials, _ = aggregate_new_rows(enriched, CORE)
    partials = partials[partials["n"] > 0]
    return sorted(
        (
            int(p["metric"]),
            int(p["resolution"]),
            int(p["cell"]),
            int(p["window_s"]),
            int(p["window_start_ms"]),
            int(p["n"]),
            pytest.approx(float(p["sum"])),
            pytest.approx(float(p["min"])),
            pytest.approx(float(p["max"])),
            p["hist"].tolist(),
        )
        for p in partials
    )


def test_store_agent_writes_readings_and_partials_once(
    kits_registered: str,
    make_app: Callable[..., StreamApp],
) -> None:
    url = kits_registered
    stream_app = make_app(url)
    batches = [
        riding(50, kit_id=1),
        riding(50, kit_id=2, boot_id=3, seed=4),
        riding(50, kit_id=1, seq0=5, t0_ms=T0_MS + 50_000, seed=5),
    ]
    messages, enriched = _enriched_messages(batches)

    def stored(results: list[StoreOutcome]) -> int:
        return sum(r.messages for r in results)

    async def scenario() -> tuple[list[StoreOutcome], list[StoreOutcome]]:
        async with stream_app.store.test_context() as agent:
            first = await feed(
                agent, messages, first_ts_s=T0_MS / 1000, done=lambda r: stored(r) == len(messages)
            )
        # Kafka delivers again after a crash before the offsets were committed:
        async with stream_app.store.test_context() as agent:
            again = await feed(
                agent, messages, first_ts_s=T0_MS / 1000, done=lambda r: stored(r) == len(messages)
            )
        return first, again

    first, again = _run(scenario())
    assert sum(r.inserted for r in first) == 150
    assert sum(r.duplicates for r in first) == 0
    assert sum(r.inserted for r in again) == 0
    assert sum(r.duplicates for r in again) == 150
    assert _partials(url) == _expected_partials(enriched)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (150,)
        seen = conn.execute(
            "SELECT kit_id FROM kits WHERE last_seen_at IS NOT NULL ORDER BY kit_id"
        ).fetchall()
        assert seen == [(1,), (2,)]


def test_qa_then_store_end_to_end(
    kits_registered: str,
    make_app: Callable[..., StreamApp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Readings messages through the qa agent, what it sends through the store agent."""
    url = kits_registered
    stream_app = make_app(url)
    sent = record_sends(stream_app.enriched, monkeypatch)
    ride = riding(300, kit_id=7, speed_mps=12.0, seed=8)
    batches = [ride[i : i + 60] for i in range(0, 300, 60)]

    async def scenario() -> list[StoreOutcome]:
        async with stream_app.qa.test_context() as qa:
            for i, readings in enumerate(batches):
                key, value = _message(readings)
                await qa.put(value, key=key, timestamp=T0_MS / 1000 + i)
        async with stream_app.store.test_context() as store:
            return await feed(
                store,
                sent.messages,
                first_ts_s=T0_MS / 1000 + 10,
                done=lambda r: sum(o.messages for o in r) == len(sent.messages),
            )

    outcomes = _run(scenario())
    assert sum(o.inserted for o in outcomes) == 300
    expected, _ = _embedded_way(batches)
    assert _partials(url) == _expected_partials(expected)


def test_store_agent_skips_unreadable_messages(
    kits_registered: str,
    make_app: Callable[..., StreamApp],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream_app = make_app(kits_registered)
    messages, _ = _enriched_messages([riding(20, kit_id=2)])
    messages.insert(0, (b"1", b"BSR1\x00\x00\x00\x00"))

    async def scenario() -> list[StoreOutcome]:
        async with stream_app.store.test_context() as agent:
            return await feed(
                agent,
                messages,
                first_ts_s=1.0,
                done=lambda r: sum(o.messages for o in r) == len(messages),
            )

    with caplog.at_level(logging.ERROR):
        outcomes = _run(scenario())
    assert sum(o.unreadable for o in outcomes) == 1
    assert sum(o.inserted for o in outcomes) == 20
    assert "unreadable message on the enriched topic" in caplog.text


def test_store_batch_holds_on_while_the_database_is_away(
    make_app: Callable[..., StreamApp],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No return (so no ack of the events) while the database cannot be reached."""
    stream_app = make_app()  # a database URL nothing listens on
    messages, _ = _enriched_messages([riding(5, kit_id=1)])

    async def scenario() -> None:
        await asyncio.wait_for(
            store_batch(
                stream_app.sink, [v for _, v in messages], retry_min_s=0.05, retry_max_s=0.1
            ),
            timeout=1.0,
        )

    with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError):
        _run(scenario())
    assert caplog.text.count("database unavailable") >= 2


def test_route_by_cell_of_nothing_and_of_placeless_rows() -> None:
    assert route_by_cell(np.empty(0, ENRICHED_DTYPE), 7) == []
    rows = np.zeros(3, ENRICHED_DTYPE)
    rows["kit_id"] = [5, 6, 5]
    routed = route_by_cell(rows, 7)
    assert [(k, len(decode_enriched(v))) for k, v in routed] == [(b"k5", 2), (b"k6", 1)]
    assert encode_enriched(rows[[0, 2]]) == routed[0][1]
