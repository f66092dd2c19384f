"""A small fleet through the embedded pipeline, stored aggregates against the simulator's truth.

A first end-to-end check of the truth API's design, with every fault on: what
the pipeline stored must be exactly what the truth says it was sent, and the
stored per-cell means must equal the truth's ``measured_mean`` over the
readings the pipeline kept, and lie within ``error_bound`` of ``true_mean``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import psycopg
import pytest

from bikesense.runtimes import EmbeddedConfig
from simulators.faults import FaultPlan
from simulators.fleet import Fleet, SimulationConfig
from simulators.publisher import MqttPublisher
from simulators.runner import pump
from simulators.truthflags import TruthFlag
from storage.kits import MasterKey, register_kit
from stream.core.partials import Metric
from stream.core.policy import EXCLUDING_FLAGS
from stream.core.qa import QaFlag
from tests.runtime_harness import running, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.slow]

IDENTITY = np.dtype(
    [("kit_id", "<u4"), ("boot_id", "<u4"), ("seq", "<u4"), ("idx", "<u2"), ("qa_flags", "<u8")]
)


def _stored(url: str) -> np.ndarray:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT kit_id, boot_id, seq, idx, qa_flags FROM readings").fetchall()
    return np.array([tuple(r) for r in rows], dtype=IDENTITY)


def _count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def test_stored_aggregates_match_the_truth(
    migrated_database_url: str, mqtt_url: str, unique_topic_prefix: str
) -> None:
    hour_ms = 3_600_000
    start_ms = (int(time.time() * 1000) // hour_ms - 3) * hour_ms  # a whole hour, 3 h ago
    faults = FaultPlan(
        gps_loss=0.05,
        duplicate=0.05,
        corrupt=0.02,
        wrong_mac=0.02,
        unknown_kit=0.02,
        offline_kits=0.5,
        offline_s=(300.0, 600.0),
        clock_skew_kits=0.5,
        stuck_kits=0.5,
        stuck_s=(1200.0, 1500.0),
        reboots_per_hour=2.0,
    )
    fleet = Fleet(
        SimulationConfig(n_bikes=4, duration_s=1800, start_ms=start_ms, seed=21, faults=faults)
    )
    master = MasterKey.generate()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        for kit_id, key in fleet.kits:
            register_kit(conn, master, kit_id, secret=key)
    root = f"{unique_topic_prefix}/bikesense/v1"
    config = EmbeddedConfig(
        mqtt_url=mqtt_url,
        database_url=migrated_database_url,
        client_id=f"{unique_topic_prefix}-ingest",
        topic_root=root,
    )
    run = fleet.run()
    with running(config, master):
        with MqttPublisher(mqtt_url, topic_root=root) as publisher:
            pump(run, [publisher], speed=None)
        truth = run.truth
        assert truth is not None
        # Every deliverable reading is stored, those without a fix too (flagged NO_FIX).
        deliverable = truth.deliverable()
        expected_rows = len(deliverable)
        wait_for(
            lambda: _count(migrated_database_url) >= expected_rows,
            timeout_s=60,
            what=f"{expected_rows} readings stored",
        )

    stored = _stored(migrated_database_url)
    # Exactly the deliverable readings, each once: duplicates, forgeries, strangers,
    # damaged frames, late bursts and reboots changed nothing.
    assert len(stored) == expected_rows
    rows = truth.lookup(stored)
    assert not np.any(rows["flags"] & int(TruthFlag.undeliverable()))
    no_fix = ~np.isfinite(rows["lat_deg"])
    assert no_fix.any()  # the plan has GPS loss: those readings are kept, out of the map
    assert np.all(stored["qa_flags"][no_fix] & int(QaFlag.NO_FIX))

    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        for column, metric in (
            ("pm25_ugm3", Metric.PM25),
            ("no2_ugm3", Metric.NO2),
            ("noise_laeq_db", Metric.NOISE),
        ):
            kept = stored[(stored["qa_flags"] & int(EXCLUDING_FLAGS[metric])) == 0]
            expected = truth.expected_aggregates(column, 9, 900, only=kept)
            partials = conn.execute(
                "SELECT cell, (extract(epoch FROM window_start) * 1000)::bigint, n, sum,"
                " energy, duration_s FROM window_partials"
                " WHERE metric = %s AND resolution = 9 AND window_s = 900",
                (int(metric),),
            ).fetchall()
            got = {(int(c), int(w)): (n, s, e, d) for c, w, n, s, e, d in partials}
            assert len(got) == len(expected), column
            for row in expected:
                n, total, energy, duration = got[(int(row["cell"]), int(row["window_start_ms"]))]
                assert n == row["n"]
                mean = 10 * math.log10(energy / duration) if metric == Metric.NOISE else total / n
                assert mean == pytest.approx(row["measured_mean"], abs=1e-4), column
                assert abs(mean - row["true_mean"]) <= row["error_bound"], (column, row)
