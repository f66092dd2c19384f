"""Slow exports cannot take the API down: /healthz has its own connection, and exports
run on slots of their own, in all and per key (issue 22, item 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from api.database import HEALTH_TIMEOUT_S
from api.errors import RateLimitedError, ServiceUnavailableError
from api.export_slots import EXPORT_RETRY_AFTER_S, EXPORT_SLOT_WAIT_S, ExportSlots
from api.roles import Role
from tests.api.api_factories import BUSY, T0_MS, day_range, ride, write
from tests.api.api_server import wait_for
from tests.api.test_exports import _stalled_export

#: The scenario's town (tests/api/test_cells.py).
BBOX = "4.60,52.10,4.70,52.16"


def _long_day(url: str) -> None:
    """Enough rows that a stalled client holds its export (and connections) open."""
    write(
        url,
        [
            ride(
                kit_id=1,
                ride_id=2000,
                start=BUSY,
                n=60_000,
                boot_id=9,
                seed=9,
                t0_ms=T0_MS - 7 * 3_600_000,
            )
        ],
    )


def _export(client: httpx.Client, key: str) -> httpx.Response:
    return client.get(
        "/v1/exports/readings",
        params={**day_range(), "format": "csv"},
        headers={"X-API-Key": key},
    )


def test_health_tells_the_truth_while_exports_hold_every_pooled_connection(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str], seeded_url: str
) -> None:
    _long_day(seeded_url)
    # One pooled connection, held by a stalled download: the pool is exhausted.
    client = make_client(
        pool_max_size=1, database_timeout_s=1.0, export_batch_rows=500, send_timeout_s=60.0
    )
    assert client.get("/healthz").status_code == 200  # the probe's connection is open
    with _stalled_export(client, own_keys[Role.ADMIN]):
        cells = client.get("/v1/cells", params={"metric": "pm25", "bbox": BBOX, **day_range()})
        assert cells.status_code == 503, "the pool should be exhausted"
        for _ in range(3):
            started = time.monotonic()
            health = client.get("/healthz")
            assert time.monotonic() - started < HEALTH_TIMEOUT_S
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            assert health.json()["database"] == "ok"


def test_health_reopens_its_connection(
    make_client: Callable[..., httpx.Client], seeded_url: str
) -> None:
    client = make_client()
    assert client.get("/healthz").status_code == 200
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'bikesense-api-health' AND datname = current_database()"
        ).fetchall()
    assert len(ended) == 1  # one connection of its own, not one per check
    # The database is up: the very next check says so, on a new connection.
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["database"] == "ok"


def test_exports_beyond_their_slots_are_refused_with_retry_after(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str], seeded_url: str
) -> None:
    _long_day(seeded_url)
    client = make_client(
        export_concurrency=1, export_per_key=1, export_batch_rows=500, send_timeout_s=60.0
    )
    with _stalled_export(client, own_keys[Role.ADMIN]):
        started = time.monotonic()
        same_key = _export(client, own_keys[Role.ADMIN])
        assert time.monotonic() - started >= EXPORT_SLOT_WAIT_S - 0.1  # it waited, briefly
        assert same_key.status_code == 429
        assert same_key.headers["retry-after"] == str(EXPORT_RETRY_AFTER_S)
        assert same_key.json() == {
            "error": "rate_limited",
            "detail": [
                {
                    "parameter": "X-API-Key",
                    "in": "header",
                    "message": "this key already has 1 exports running (at most 1 at a time); "
                    "retry when one has finished",
                }
            ],
        }
        other_key = _export(client, own_keys[Role.RESEARCHER])
        assert other_key.status_code == 503
        assert other_key.headers["retry-after"] == str(EXPORT_RETRY_AFTER_S)
        assert other_key.json()["error"] == "unavailable"
        assert "export slots are busy" in other_key.json()["detail"][0]["message"]
        # Tiles and cells still get connections: exports hold at most their slots'.
        cells = client.get(
            "/v1/cells",
            params={"metric": "pm25", "bbox": BBOX, **day_range()},
            headers={"X-API-Key": own_keys[Role.OFFICER]},
        )
        assert cells.status_code == 200, cells.text
    # The stalled client went away: its slot comes back, and exports run again.
    wait_for(
        lambda: _export(client, own_keys[Role.RESEARCHER]).status_code == 200,
        timeout_s=20,
        what="the export slot back",
    )
    assert _export(client, own_keys[Role.ADMIN]).status_code == 200


def test_export_slots_count_per_key_and_in_all() -> None:
    async def scenario() -> None:
        slots = ExportSlots(total=3, per_key=2, wait_s=0.05)
        a1 = await slots.acquire("a")
        await slots.acquire("a")
        with pytest.raises(RateLimitedError):
            await slots.acquire("a")
        await slots.acquire("b")
        with pytest.raises(ServiceUnavailableError):
            await slots.acquire("c")
        a1.release()
        a1.release()  # twice is once
        assert slots.running == 2
        await slots.acquire("c")
        # A waiting export gets the slot freed while it waits.
        slots = ExportSlots(total=1, per_key=1, wait_s=5.0)
        held = await slots.acquire("a")
        asyncio.get_running_loop().call_later(0.05, held.release)
        started = time.monotonic()
        await slots.acquire("b")
        assert time.monotonic() - started < 1.0

    asyncio.run(scenario())
