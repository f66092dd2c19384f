"""k-anonymous publication end to end: kits → MQTT → embedded runtime → PostgreSQL → API.

A cell seen on k − 1 distinct rides (k = 3 by default) is absent for the public
in tiles, cells, time series and live events, and visible to an officer; a cell
with k rides is public. The rides are assigned by the stream core from real
frames, not written by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import httpx
import mercantile
import numpy as np
import psycopg
import pytest
from PIL import Image

from api.app import create_app
from api.keys import create_key
from api.roles import Role
from bikesense.runtimes import EmbeddedConfig
from bikesense.settings import load_settings
from firmware_protocol import empty_readings, encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.binning import parent_cells
from tests.api.api_factories import BUSY, QUIET, RESOLUTIONS, WINDOWS, h3_hex
from tests.api.api_server import ServerThread
from tests.runtime_harness import running, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

K = 3
PUBLIC_KITS = (31, 32, 33)  # k rides through BUSY
BELOW_K_KITS = (41, 42)  # k − 1 rides through QUIET


def _ride(start_ms: int, where: tuple[float, float], seed: int) -> np.ndarray:
    """Twelve readings, 5 s apart, a bike dawdling within a few metres of ``where``."""
    rng = np.random.default_rng(seed)
    r = empty_readings(12)
    r["ts_ms"] = start_ms + np.arange(12) * 5000
    r["lat_deg"] = where[0] + rng.normal(0, 1e-5, 12)
    r["lon_deg"] = where[1] + rng.normal(0, 1e-5, 12)
    r["gnss_fix"] = 2
    r["hdop"] = 0.9
    r["satellites"] = 9
    r["speed_mps"] = 1.0
    r["pm1_ugm3"] = 5.0
    r["pm25_ugm3"] = 8.0
    r["pm10_ugm3"] = 12.0
    r["noise_laeq_db"] = 60.0
    r["noise_lamax_db"] = 66.0
    r["interval_ms"] = 5000
    r["temperature_c"] = 12.0
    r["humidity_pct"] = 60.0
    return r


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            yield kind, json.loads(line[6:])


def _pixel_alpha(png: bytes, where: tuple[float, float], z: int = 15) -> int:
    t = mercantile.tile(where[1], where[0], z)
    b = mercantile.xy_bounds(t)
    x, y = mercantile.xy(where[1], where[0])
    px = int((x - b.left) / (b.right - b.left) * 256)
    py = int((b.top - y) / (b.top - b.bottom) * 256)
    return int(np.asarray(Image.open(BytesIO(png)).convert("RGBA"))[py, px, 3])


def test_a_cell_with_k_minus_one_rides_is_invisible_to_the_public_and_seen_by_officers(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    master = MasterKey.generate()
    with psycopg.connect(url, autocommit=True) as conn:
        secrets = {
            kit: register_kit(conn, master, kit).secret for kit in PUBLIC_KITS + BELOW_K_KITS
        }
        officer = create_key(conn, Role.OFFICER, label="privacy test").token
    hour_ms = (int(time.time()) // 3600 - 2) * 3_600_000
    frames = [
        (kit, encode_readings(kit, 1, 1, _ride(hour_ms + i * 300_000, where, kit), secrets[kit]))
        for i, (kit, where) in enumerate(
            [(k, BUSY) for k in PUBLIC_KITS] + [(k, QUIET) for k in BELOW_K_KITS]
        )
    ]
    root = f"{unique_topic_prefix}/bikesense/v1"
    runtime_config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=url,
        topic_root=root,
        client_id=f"{unique_topic_prefix}-ingest",
        maintenance=None,
    )
    settings = load_settings(
        database_url=url,
        h3_resolutions=RESOLUTIONS,
        window_sizes_s=WINDOWS,
        public_rate_per_s=10_000.0,
        public_burst=10_000,
        public_min_rides=K,
        live_heartbeat_s=0.2,
    )
    span = {
        "from": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour_ms / 1000)),
        "to": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour_ms / 1000 + 3600)),
    }
    as_officer = {"X-API-Key": officer}
    below_k_coarse = format(
        int(parent_cells(np.array([int(h3_hex(QUIET, 10), 16)]), min(RESOLUTIONS))[0]), "x"
    )

    with (
        ServerThread(create_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        running(runtime_config, master),
        client.stream("GET", "/v1/live") as public_live,
        client.stream("GET", "/v1/live", headers=as_officer) as officer_live,
    ):
        public_lines, officer_lines = public_live.iter_lines(), officer_live.iter_lines()
        assert next(public_lines).startswith("retry:")
        assert next(officer_lines).startswith("retry:")
        publisher = MqttPublisher(mqtt_url, topic_root=root)
        publisher.connect()
        for kit, payload in frames[len(PUBLIC_KITS) :]:  # the k − 1 rides first, alone
            publisher.publish(f"{root}/kits/{kit}/up", payload)
        wait_for(
            lambda: scalar(url, "SELECT count(DISTINCT ride_id) FROM readings") == K - 1,
            what="the k − 1 rides stored",
        )
        # Live: the officer is told which cells changed; the public only that something did.
        _, data = next(e for e in _events(officer_lines) if e[0] == "aggregates")
        assert below_k_coarse in data["cells"]  # type: ignore[operator]
        _, data = next(e for e in _events(public_lines) if e[0] == "aggregates")
        assert "cells" not in data
        assert data["metrics"]
        for kit, payload in frames[: len(PUBLIC_KITS)]:
            publisher.publish(f"{root}/kits/{kit}/up", payload)
        publisher.close()
        wait_for(
            lambda: scalar(url, "SELECT count(DISTINCT ride_id) FROM readings") == 2 * K - 1,
            what="all rides stored",
        )
        # The aggregates of the last batches may wait a moment for later ones
        # (storage.deferred): merged once nothing waits in the backlog.
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM aggregate_backlog") == 0,
            what="every aggregate merged",
        )

        # Cells.
        def cells(headers: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
            body = client.get(
                "/v1/cells",
                params={
                    "metric": "pm25",
                    "resolution": 10,
                    "bbox": "4.60,52.10,4.70,52.16",
                    **span,
                },
                headers=headers,
            ).json()
            return {f["id"]: f["properties"] for f in body["features"]}

        public_cells, officer_cells = cells(), cells(as_officer)
        assert h3_hex(BUSY, 10) in public_cells
        assert public_cells[h3_hex(BUSY, 10)]["rides"] == K
        assert h3_hex(QUIET, 10) not in public_cells  # absent, not zero
        assert officer_cells[h3_hex(QUIET, 10)]["rides"] == K - 1

        # Tiles: the k − 1 cell is transparent for the public, painted for the officer.
        for where, public_alpha, officer_alpha in ((BUSY, True, True), (QUIET, False, True)):
            t = mercantile.tile(where[1], where[0], 15)
            tile = f"/v1/tiles/pm25/{t.z}/{t.x}/{t.y}.png"
            public_png = client.get(tile, params=span).content
            officer_png = client.get(tile, params=span, headers=as_officer).content
            assert (_pixel_alpha(public_png, where) > 0) is public_alpha
            assert (_pixel_alpha(officer_png, where) > 0) is officer_alpha

        # Time series: no point with data for the public, the hour for the officer.
        def series(
            where: tuple[float, float], headers: dict[str, str] | None = None
        ) -> list[dict[str, Any]]:
            response = client.get(
                "/v1/timeseries",
                params={"metric": "pm25", "cell": h3_hex(where, 10), **span},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            points: list[dict[str, Any]] = response.json()["points"]
            return [p for p in points if p["n_readings"] > 0]  # not the empty buckets

        assert series(QUIET) == []
        (point,) = series(QUIET, as_officer)
        assert point["rides"] == K - 1
        (point,) = series(BUSY)
        assert point["rides"] == K
