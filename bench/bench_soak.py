"""Soak: a fleet publishing in real time for a long while; is anything growing or lost?

Each of ``--kits`` simulated kits reads once a second and publishes a 10-reading
frame every 10 s, QoS 1, as the hardware does (kits staggered over the 10 s), to
Mosquitto → ``bikesense ingest`` (its own process, durable PostgreSQL, the
default configuration, raw-reading retention and maintenance included) → the API
server. Every ``--sample-s`` seconds it records ingest's and the API server's
resident memory, what ingest has stored and acked, the database's size, and the
publish → visible latency of marker frames (one a second, read back through the
API's export like a researcher would). At the end it waits for everything to be
stored and counts it exactly.

Reported: memory at the start and end and its trend after the warm-up (MiB per
hour, least squares), latency p50 / p99 per quarter of the run, readings lost and
duplicated. Not part of the test suite or of ``run_all.py``: it runs for as long
as it is told (30 minutes by default). Writes ``bench/results/soak.json``.

    .venv/bin/python bench/bench_soak.py [--minutes 30] [--kits 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import api_server, rss_kib
from bench_e2e import (
    MARKER_KIT,
    PER_FRAME,
    ROOT_TOPIC,
    Prober,
    count_non_marker,
    frame_readings,
    ingest_process,
    machine,
    new_database,
    readings_acked,
    services,
)

from api.keys import create_key
from api.roles import Role
from bikesense.services import free_port
from firmware_protocol import encode_readings
from simulators.publisher import MqttPublisher
from storage.kits import MasterKey, register_kit

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
FRAME_S = PER_FRAME  # one reading a second, a frame every 10 readings


class Fleet(threading.Thread):
    """``kits`` kits in real time: kit i publishes frame k (readings of seconds
    [10k, 10k + 10) after its start) 10 s after that frame's first reading; kits start
    staggered over the first 10 s."""

    def __init__(self, mqtt_url: str, secrets: dict[int, bytes], start_ms: int) -> None:
        super().__init__(daemon=True)
        self.mqtt_url, self.secrets, self.start_ms = mqtt_url, secrets, start_ms
        self.stop = threading.Event()
        self.frames = 0
        self.late_s = 0.0  # the most the schedule fell behind

    def run(self) -> None:
        kits = sorted(self.secrets)
        offsets_ms = [i * FRAME_S * 1000 // len(kits) for i in range(len(kits))]
        rng = np.random.default_rng(3)
        with MqttPublisher(
            self.mqtt_url,
            topic_root=ROOT_TOPIC,
            client_id="bench-soak-fleet",
            max_inflight=1000,
            ack_timeout_s=120,
        ) as pub:
            seq = 0
            while not self.stop.is_set():
                for kit, offset in zip(kits, offsets_ms, strict=True):
                    first_ms = self.start_ms + offset
                    due_s = (first_ms + (seq + 1) * FRAME_S * 1000) / 1000
                    wait = due_s - time.time()
                    if wait > 0 and self.stop.wait(wait):
                        return
                    self.late_s = max(self.late_s, -wait)
                    readings = frame_readings(kit, seq, first_ms, rng)
                    pub.publish(
                        f"{ROOT_TOPIC}/kits/{kit}/up",
                        encode_readings(kit, 1, seq, readings, self.secrets[kit]),
                    )
                    self.frames += 1
                seq += 1


def slope_mib_per_hour(times_s: list[float], kib: list[int]) -> float | None:
    if len(times_s) < 3:
        return None
    slope, _ = np.polyfit(np.array(times_s), np.array(kib, dtype=float) / 1024, 1)
    return float(slope * 3600)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def soak(minutes: float, kits: int, sample_s: float, warmup_s: float) -> dict[str, Any]:
    with services(None, durable=True) as (cluster, broker, _broker_pid):
        info = machine(cluster.url)
        db = new_database(cluster.url, "bench_soak")
        master = MasterKey.generate()
        with psycopg.connect(db, autocommit=True) as conn:
            secrets = {k: register_kit(conn, master, k).secret for k in range(1, kits + 1)}
            marker_secret = register_kit(conn, master, MARKER_KIT).secret
            api_key = create_key(conn, Role.ADMIN, "bench-soak").token
        log_path = Path(tempfile.mkstemp(prefix="bikesense-soak-ingest-", suffix=".log")[1])
        metrics_port = free_port()
        with (
            api_server(db) as (api_url, api_pid),
            ingest_process(db, broker.url, master, log_path, metrics_port=metrics_port) as proc,
            httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as metrics,
            psycopg.connect(db, autocommit=True) as conn,
        ):
            conn.execute("DELETE FROM rejected_frames")  # ingest's warm-up probe
            started = time.time()
            fleet = Fleet(broker.url, secrets, int(started * 1000))
            prober = Prober(
                broker.url, api_url, api_key, marker_secret, interval_s=1.0, poll_s=0.05
            )
            fleet.start()
            prober.start()
            samples: list[dict[str, Any]] = []
            seen_latencies = 0
            end = started + minutes * 60
            print(
                f"{kits:,} kits publishing {kits / FRAME_S:,.0f} frames/s "
                f"({kits:,} readings/s) for {minutes:g} minutes ...",
                flush=True,
            )
            while time.time() < end:
                time.sleep(min(sample_s, max(end - time.time(), 0)))
                latencies = prober.latencies_s[seen_latencies:]
                seen_latencies += len(latencies)
                sample = {
                    "t_s": round(time.time() - started, 1),
                    "ingest_rss_kib": rss_kib(proc.pid)[0],
                    "api_rss_kib": rss_kib(api_pid)[0],
                    "frames_published": fleet.frames,
                    "marker_frames_published": prober.published,
                    "readings_acked": readings_acked(metrics),
                    "database_bytes": conn.execute(
                        "SELECT pg_database_size(current_database())"
                    ).fetchone()[0],  # type: ignore[index]
                    "latency_p50_s": quantile(latencies, 0.5),
                    "latency_max_s": max(latencies, default=None),
                    "markers": len(latencies),
                }
                samples.append(sample)
                print(
                    f"{sample['t_s']:7.0f} s: ingest {sample['ingest_rss_kib'] / 1024:6.1f} MiB, "
                    f"API {sample['api_rss_kib'] / 1024:6.1f} MiB, "
                    f"{sample['readings_acked']:,} readings acked of "
                    f"{sample['frames_published'] * PER_FRAME:,} published (and "
                    f"{sample['marker_frames_published'] * PER_FRAME:,} in markers), database "
                    f"{sample['database_bytes'] / 2**20:,.0f} MiB, latency p50 "
                    f"{sample['latency_p50_s'] or float('nan'):.3f} s",
                    flush=True,
                )
            fleet.stop.set()
            fleet.join(60)
            prober.stop.set()
            prober.join(60)
            published = fleet.frames * PER_FRAME
            markers = prober.published * PER_FRAME
            deadline = time.time() + 300
            while readings_acked(metrics) < published + markers and time.time() < deadline:
                time.sleep(0.5)
            stored = count_non_marker(db)
    log = log_path.read_text()
    log_path.unlink(missing_ok=True)
    problems = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    latencies = prober.latencies_s
    quarter = len(latencies) // 4 or 1
    steady = [s for s in samples if s["t_s"] >= warmup_s]
    times = [s["t_s"] for s in steady]
    return {
        "benchmark": "soak",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "minutes": minutes,
        "kits": kits,
        "readings_per_s_offered": kits / FRAME_S * PER_FRAME,
        "fleet_schedule_max_late_s": fleet.late_s,
        "readings_published": published,
        "readings_stored": stored,
        "readings_lost": max(published - stored, 0),
        "readings_duplicated": max(stored - published, 0),
        "marker_timeouts": prober.timeouts,
        "latency_p50_s": quantile(latencies, 0.5),
        "latency_p99_s": quantile(latencies, 0.99),
        "latency_p99_by_quarter_s": [
            quantile(latencies[i * quarter : (i + 1) * quarter], 0.99) for i in range(4)
        ],
        "ingest_rss_mib_first_last": [
            samples[0]["ingest_rss_kib"] / 1024,
            samples[-1]["ingest_rss_kib"] / 1024,
        ]
        if samples
        else None,
        "api_rss_mib_first_last": [
            samples[0]["api_rss_kib"] / 1024,
            samples[-1]["api_rss_kib"] / 1024,
        ]
        if samples
        else None,
        "warmup_s": warmup_s,
        "ingest_rss_trend_mib_per_hour": slope_mib_per_hour(
            times, [s["ingest_rss_kib"] for s in steady]
        ),
        "api_rss_trend_mib_per_hour": slope_mib_per_hour(times, [s["api_rss_kib"] for s in steady]),
        "ingest_warnings_and_errors": problems[:20],
        "ingest_log_tail": log[-4000:] if problems else "",
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--kits",
        type=int,
        default=5000,
        help="kits reading once a second: the offered rate in readings/s",
    )
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=120.0,
        help="samples before this are left out of the memory trend",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = soak(args.minutes, args.kits, args.sample_s, args.warmup_s)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    q = result["latency_p99_by_quarter_s"]
    print(
        f"\n{result['readings_published']:,} readings published, "
        f"{result['readings_stored']:,} stored: lost {result['readings_lost']}, "
        f"duplicated {result['readings_duplicated']}"
    )
    print(
        f"publish → visible: p50 {result['latency_p50_s'] or float('nan'):.3f} s, p99 "
        f"{result['latency_p99_s'] or float('nan'):.3f} s; p99 by quarter "
        + " / ".join(f"{v:.3f}" if v is not None else "-" for v in q)
        + f" s; {result['marker_timeouts']} markers timed out"
    )
    for who in ("ingest", "api"):
        first, last = result[f"{who}_rss_mib_first_last"] or (float("nan"), float("nan"))
        trend = result[f"{who}_rss_trend_mib_per_hour"]
        print(
            f"{who} RSS {first:.1f} → {last:.1f} MiB; after the warm-up "
            f"{trend if trend is not None else float('nan'):+.1f} MiB per hour"
        )
    late = result["fleet_schedule_max_late_s"]
    print(
        f"the fleet's schedule fell behind by at most {late:.2f} s; "
        f"{len(result['ingest_warnings_and_errors'])} warnings or errors in ingest's log"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
