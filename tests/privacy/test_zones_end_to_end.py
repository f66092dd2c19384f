"""A reading inside a privacy zone never reaches any table: embedded runtime, real services."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from bikesense.runtimes import EmbeddedConfig
from firmware_protocol import empty_readings, encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit
from stream.core.partials import Metric
from stream.core.privacy import CircleZone, PolygonZone, PrivacyConfig, in_zones, payload_in_zones
from stream.core.process import CoreConfig
from tests.runtime_harness import running, scalar, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

KIT = 5151
DEPOT = (52.1290, 4.6560)
ZONES = (
    CircleZone("depot", DEPOT[0], DEPOT[1], 200.0),
    # A carrier's home street, 2 km north: a small rectangle.
    PolygonZone(
        "home", ((52.1470, 4.6540), (52.1470, 4.6580), (52.1490, 4.6580), (52.1490, 4.6540))
    ),
)
#: A value no real reading has: if it shows up anywhere, a zone reading got through.
MARKER_PM25 = 654.3
M_PER_DEG_LON = 111_320 * np.cos(np.radians(DEPOT[0]))


def _readings(start_ms: int, lat: np.ndarray, lon: np.ndarray, pm25: np.ndarray) -> np.ndarray:
    n = len(lat)
    r = empty_readings(n)
    r["ts_ms"] = start_ms + np.arange(n) * 5000
    r["lat_deg"], r["lon_deg"] = lat, lon
    r["gnss_fix"] = 2
    r["hdop"] = 0.9
    r["satellites"] = 9
    r["speed_mps"] = 5.0
    r["pm1_ugm3"] = 3.0
    r["pm25_ugm3"] = pm25
    r["pm10_ugm3"] = 12.0
    r["noise_laeq_db"] = 60.0
    r["noise_lamax_db"] = 66.0
    r["interval_ms"] = 5000
    r["temperature_c"] = 12.0
    r["humidity_pct"] = 60.0
    return r


def _leaving_depot(start_ms: int, n: int) -> np.ndarray:
    """A bike riding east out of the depot at 5 m/s, a reading every 5 s (25 m)."""
    lat = np.full(n, DEPOT[0])
    lon = DEPOT[1] + np.arange(n) * 25.0 / M_PER_DEG_LON
    inside = in_zones(lat, lon, ZONES)
    return _readings(start_ms, lat, lon, np.where(inside, MARKER_PM25, 9.0))


def _tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _columns(conn: psycopg.Connection[Any], table: str, types: tuple[str, ...]) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = %s AND data_type = ANY(%s)",
        (table, list(types)),
    ).fetchall()
    return [str(r[0]) for r in rows]


def test_readings_in_a_zone_reach_no_table(
    migrated_database_url: str,
    mqtt_url: str,
    unique_topic_prefix: str,
) -> None:
    url = migrated_database_url
    master = MasterKey.generate()
    with psycopg.connect(url, autocommit=True) as conn:
        secret = register_kit(conn, master, KIT).secret
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
        core=CoreConfig(privacy=PrivacyConfig(zones=ZONES)),
    )
    hour_ms = (int(time.time()) // 3600 - 3) * 3_600_000
    leaving = _leaving_depot(hour_ms, 16)  # about 8 in the depot, 8 outside
    zone_inside = in_zones(leaving["lat_deg"], leaving["lon_deg"], ZONES)
    assert 6 <= zone_inside.sum() <= 10
    # An hour later, the bike stands in the home street: all inside, a window of its own.
    home = _readings(
        hour_ms + 3_600_000, np.full(6, 52.1480), np.full(6, 4.6560), np.full(6, MARKER_PM25)
    )
    # A frame with one reading on null island (refused) and the rest in the depot: its
    # reject row must not keep the bytes.
    mixed = _readings(
        hour_ms + 120_000, np.full(5, DEPOT[0]), np.full(5, DEPOT[1]), np.full(5, MARKER_PM25)
    )
    mixed["lat_deg"][2] = mixed["lon_deg"][2] = 0.0
    frames = [
        encode_readings(KIT, 1, 1, leaving, secret),
        encode_readings(KIT, 1, 2, home, secret),
        encode_readings(KIT, 1, 3, mixed, secret),
    ]
    assert all(payload_in_zones(f, ZONES) for f in frames)
    outside = int((~zone_inside).sum())

    with running(config, master):
        publisher = MqttPublisher(mqtt_url, topic_root=root)
        publisher.connect()
        for payload in frames:
            publisher.publish(f"{root}/kits/{KIT}/up", payload)
        publisher.close()
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM rejected_frames") == 1,
            what="the mixed frame's reject",
        )
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM readings") == outside,
            what=f"{outside} readings outside the zones",
        )

    with psycopg.connect(url, autocommit=True) as conn:
        stored = conn.execute("SELECT seq, idx FROM readings ORDER BY idx").fetchall()
        assert stored == [(1, int(i)) for i in np.flatnonzero(~zone_inside)]
        # Aggregates: exactly the outside readings, at every resolution and window.
        sums = conn.execute(
            "SELECT resolution, window_s, sum(n) FROM window_partials WHERE metric = %s"
            " GROUP BY 1, 2",
            (int(Metric.PM25),),
        ).fetchall()
        assert sums
        assert all(n == outside for _, _, n in sums)
        # The home hour left no window, no presence, nothing.
        for table in ("window_partials", "window_presence"):
            n = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE window_start >= to_timestamp(%s / 1000.0)"
                ).format(sql.Identifier(table)),
                (hour_ms + 3_600_000,),
            ).fetchone()
            assert n == (0,), table
        reject = conn.execute("SELECT reason, detail, payload FROM rejected_frames").fetchone()
        assert reject is not None
        assert reject[0].startswith("partial:")
        assert "privacy zone" in reject[1]
        assert bytes(reject[2]) == b""
        # Every table, every column: no trace of the marker value, no frame bytes with a
        # zone position, no position in a zone.
        for table in _tables(conn):
            ident = sql.Identifier(table)
            for column in _columns(conn, table, ("real", "double precision")):
                hits = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE abs({} - %s) < 0.05").format(
                        ident, sql.Identifier(column)
                    ),
                    (MARKER_PM25,),
                ).fetchone()
                assert hits == (0,), f"{table}.{column} holds a zone reading's value"
            for column in _columns(conn, table, ("bytea",)):
                for (blob,) in conn.execute(
                    sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), ident)
                ):
                    assert not payload_in_zones(bytes(blob), ZONES), f"{table}.{column}"
            if {"lat_deg", "lon_deg"} <= set(_columns(conn, table, ("double precision",))):
                if table == "h3_cells":
                    continue  # centres of cells, not positions of readings
                rows = conn.execute(sql.SQL("SELECT lat_deg, lon_deg FROM {}").format(ident))
                positions = np.array(rows.fetchall(), dtype=np.float64).reshape(-1, 2)
                assert not in_zones(positions[:, 0], positions[:, 1], ZONES).any(), table
