"""The API under load: how many slow exports and heavy queries it survives while
``/healthz`` and a tile stay under a second, and its memory under concurrent Parquet exports.

Fills a throwaway PostgreSQL like ``bench_reads`` (``--readings`` readings of a postal
fleet through the storage writer, the statistics keeper beside it as ingest runs it),
then starts the API as operators do, ``bikesense api serve`` in its own process with its
default settings (``--set NAME=VALUE`` overrides a ``BIKESENSE_*`` one), and runs phases
of ``--seconds`` each, one per load level ``STALLED:HEAVY`` of ``--levels``:

* ``STALLED`` slow downloads: admin CSV exports of the whole range whose clients read the
  response head and then nothing (a small receive buffer, so the server soon blocks on
  them); two clients share each key, so a key's second export meets the per-key limit;
* ``HEAVY`` officers at once asking, again and again, for 400-day ``/v1/cells`` at
  resolution 10 over the town (the issue's "ordinary heavy use");
* all the while two probers ask, each every 0.2 s, for ``/healthz`` and for one public
  tile (zoom 14, the town's centre, the busiest hour), and a sampler counts the API's
  sessions by state in ``pg_stat_activity`` every second.

Per phase: p50/p95/max latency of ``/healthz`` and of the tile and whether all stayed
under a second; the heavy requests by status, and how many refusals (503/429) carried
``Retry-After``; the stalled exports by status; the most API sessions idle in transaction
at once; and after the clients are gone, how long until every API session was idle, or
what was still stuck after ``--settle`` s.

``--parquet N`` measures memory instead (or as well, with ``--levels`` given): N clients
at once, each downloading a Parquet export of the whole range at full speed, ``--rounds``
times, the server's resident memory sampled every 0.1 s. Twice, each in a fresh server:
with the export slots as configured (most of the N refused) and with the slots opened to
N (``export_concurrency`` and ``export_per_key``), the condition of issue 22's
measurement (130 → 445 MiB for 9). Flat means the peak of the later rounds stays near
the first's.

    .venv/bin/python bench/bench_load.py [--readings 1000000] [--seconds 30]
        [--levels 0:0,2:0,5:0,10:0,0:4,0:8,0:16,0:30,0:60,10:30] [--parquet 9 --rounds 8]
        [--database URL] [--output load.json]

Writes bench/results/load.json (``--output``). Not run by CI: minutes of load on a
shared machine. ``--database`` uses a database filled beforehand (``bench_reads``' fill,
as here) instead of filling one, which takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, ROOT, database, rss_kib, wait_until_healthy
from bench_reads import TOWN_BBOX, busiest_hour, fill, percentiles
from bench_tiles import town_tiles

from api.keys import create_key
from api.roles import Role
from bikesense.services import free_port
from storage.pseudonyms import PseudonymKey
from storage.statistics import StatisticsKeeper

#: What the issue asks of /healthz and a tile while the API is under load.
BUDGET_S = 1.0
#: The API's own database sessions (storage.pool.create_async_pool's name).
API_APPLICATION = "bikesense-api"


@contextmanager
def serve(url: str, settings: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """``bikesense api serve`` on ``url`` in its own process: (base URL, pid)."""
    port = free_port()
    env = {
        **os.environ,
        **{f"BIKESENSE_{k.upper()}": v for k, v in settings.items()},
        "BIKESENSE_DATABASE_URL": url,
        "BIKESENSE_API_HOST": "127.0.0.1",
        "BIKESENSE_API_PORT": str(port),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bikesense", "api", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, timeout_s=60, failure=f"the API did not start; see {log}")
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def api_sessions(url: str) -> dict[str, int]:
    """The API's pooled sessions on the database by state (``/healthz``'s not counted)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s GROUP BY 1",
            (API_APPLICATION,),
        ).fetchall()
    return dict(rows)


def _head(sock: socket.socket) -> bytes:
    """The response head (and whatever came with it) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class Stalled:
    """A download whose client reads the head and then nothing."""

    status: int
    retry_after: bool
    sock: socket.socket | None  # kept open (and unread) while the export runs


def stalled_export(base: str, key: str, query: dict[str, str]) -> Stalled:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    # Set before connecting, which also stops the kernel from growing it (tcp(7)).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /v1/exports/readings?{urlencode(query)} HTTP/1.1\r\nHost: bench\r\n"
        f"X-API-Key: {key}\r\n\r\n".encode()
    )
    head = _head(sock)
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    retry_after = b"\r\nretry-after:" in head.lower()
    if status == 200:
        return Stalled(status, retry_after, sock)
    sock.close()
    return Stalled(status, retry_after, None)


@dataclass
class Heavy:
    """Officers asking for the heavy query, each again as soon as answered."""

    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: int = 0  # refusals (429, 503) that said when to come back
    latency_s: list[float] = field(default_factory=list)  # of the answered (200)
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, base: str, key: str, params: dict[str, str], stop: threading.Event) -> None:
        with httpx.Client(base_url=base, timeout=90, headers={"X-API-Key": key}) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.get("/v1/cells", params=params)
                except httpx.TimeoutException:
                    with self.lock:
                        self.timeouts += 1
                    continue
                took = time.perf_counter() - started
                with self.lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.latency_s.append(took)
                    elif "retry-after" in response.headers:
                        self.retry_after += 1


@dataclass
class Probe:
    """``/healthz`` and one tile, as a load balancer and the map would ask."""

    latency_s: dict[str, list[float]] = field(default_factory=lambda: {"healthz": [], "tile": []})
    statuses: dict[str, Counter[int]] = field(
        default_factory=lambda: {"healthz": Counter(), "tile": Counter()}
    )
    timeouts: Counter[str] = field(default_factory=Counter)

    def run(
        self, base: str, name: str, path: str, params: dict[str, str], stop: threading.Event
    ) -> None:
        """Ask for ``path`` every 0.2 s (each kind in a thread of its own, so that a slow
        tile does not thin out the health checks)."""
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.wait(0.2):
                started = time.perf_counter()
                try:
                    response = client.get(path, params=params)
                except httpx.TimeoutException:
                    self.timeouts[name] += 1
                    continue
                self.latency_s[name].append(time.perf_counter() - started)
                self.statuses[name][response.status_code] += 1

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, samples in self.latency_s.items():
            row: dict[str, Any] = dict(percentiles(samples, self.timeouts[name]))
            row["statuses"] = {str(k): v for k, v in sorted(self.statuses[name].items())}
            row["under_budget"] = bool(
                samples
                and not self.timeouts[name]
                and max(samples) < BUDGET_S
                and set(self.statuses[name]) == {200}
            )
            out[name] = row
        return out


def sample_sessions(url: str, stop: threading.Event, most: Counter[str]) -> None:
    while not stop.wait(1.0):
        for state, n in api_sessions(url).items():
            most[state] = max(most[state], n)


def settle(url: str, limit_s: float) -> dict[str, Any]:
    """Wait until every API session is idle; what was not, after ``limit_s``."""
    started = time.monotonic()
    while True:
        sessions = api_sessions(url)
        busy = {s: n for s, n in sessions.items() if s != "idle"}
        if not busy:
            return {"settled_s": round(time.monotonic() - started, 1), "stuck": {}}
        if time.monotonic() - started > limit_s:
            return {"settled_s": None, "stuck": busy}
        time.sleep(0.5)


@dataclass(frozen=True)
class Scene:
    """What the phases ask for: the keys, the heavy query, the tile, the export."""

    officer: str
    admins: list[str]
    heavy: dict[str, str]
    tile: str
    tile_range: dict[str, str]
    export: dict[str, str]


def phase(
    url: str, base: str, scene: Scene, stalled_n: int, heavy_n: int, seconds: float, settle_s: float
) -> dict[str, Any]:
    stop = threading.Event()
    probe, heavy, most = Probe(), Heavy(), Counter[str]()
    threads = [
        threading.Thread(target=probe.run, args=(base, "healthz", "/healthz", {}, stop)),
        threading.Thread(target=probe.run, args=(base, "tile", scene.tile, scene.tile_range, stop)),
        threading.Thread(target=sample_sessions, args=(url, stop, most)),
    ]
    threads += [
        threading.Thread(target=heavy.run, args=(base, scene.officer, scene.heavy, stop))
        for _ in range(heavy_n)
    ]
    for thread in threads:
        thread.start()
    # The slow downloads arrive together; each is answered within the slot wait (2 s).
    stalled: list[Stalled] = []
    openers = [
        threading.Thread(
            target=lambda i=i: stalled.append(
                stalled_export(base, scene.admins[i // 2], scene.export)
            )
        )
        for i in range(stalled_n)
    ]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    for s in stalled:
        if s.sock is not None:
            s.sock.close()
    refused = [s for s in stalled if s.status != 200]
    result: dict[str, Any] = {
        "stalled_exports": stalled_n,
        "heavy_clients": heavy_n,
        "probe": probe.summary(),
        "heavy": {
            "statuses": {str(k): v for k, v in sorted(heavy.statuses.items())},
            "refusals_with_retry_after": heavy.retry_after,
            "timeouts": heavy.timeouts,
            "answered": percentiles(heavy.latency_s, heavy.timeouts),
        },
        "exports": {
            "statuses": dict(sorted(Counter(str(s.status) for s in stalled).items())),
            "refusals_with_retry_after": sum(s.retry_after for s in refused),
        },
        "most_api_sessions_by_state": dict(most),
        "after": settle(url, settle_s),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    p = result["probe"]
    print(
        f"stalled {stalled_n:3d}  heavy {heavy_n:3d} | healthz p50 {p['healthz'].get('p50_ms')}"
        f" p95 {p['healthz'].get('p95_ms')} max {p['healthz'].get('max_ms')} ms"
        f" | tile p50 {p['tile'].get('p50_ms')} p95 {p['tile'].get('p95_ms')}"
        f" max {p['tile'].get('max_ms')} ms | heavy {result['heavy']['statuses']}"
        f" | exports {result['exports']['statuses']} | idle in tx (most)"
        f" {most.get('idle in transaction', 0)} | after {result['after']}",
        flush=True,
    )
    return result


def parquet_round(base: str, pid: int, keys: list[str], export: dict[str, str]) -> dict[str, Any]:
    """``len(keys)`` Parquet exports at once, read at full speed; RSS sampled meanwhile."""
    stop = threading.Event()
    samples: list[int] = []

    def sample() -> None:
        while not stop.wait(0.1):
            samples.append(rss_kib(pid)[0])

    statuses: list[str] = []
    sizes: list[int] = []

    def download(key: str) -> None:
        try:
            with httpx.stream(
                "GET",
                f"{base}/v1/exports/readings",
                params={**export, "format": "parquet"},
                headers={"X-API-Key": key},
                timeout=600,
            ) as response:
                size = sum(len(data) for data in response.iter_bytes())
        except httpx.HTTPError as exc:
            # A 200 whose body ended without its terminating chunk: cut short.
            statuses.append(f"cut short ({type(exc).__name__})")
            return
        statuses.append(str(response.status_code))
        if response.status_code == 200:
            sizes.append(size)

    sampler = threading.Thread(target=sample)
    before = rss_kib(pid)[0]
    started = time.perf_counter()
    sampler.start()
    clients = [threading.Thread(target=download, args=(key,)) for key in keys]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    took = time.perf_counter() - started
    time.sleep(2)  # what the server gives back once the exports are over
    stop.set()
    sampler.join()
    return {
        "rss_before_mib": round(before / 1024),
        "rss_peak_mib": round(max(samples, default=before) / 1024),
        "rss_after_mib": round(rss_kib(pid)[0] / 1024),
        "statuses": dict(sorted(Counter(statuses).items())),
        "bytes_each": sizes[:1],
        "seconds": round(took, 1),
    }


def parquet_memory(
    url: str,
    keys: list[str],
    export: dict[str, str],
    rounds: int,
    settings: dict[str, str],
    log: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = len(keys)
    for name, slots in (
        ("slots_as_configured", {}),
        ("slots_opened", {"export_concurrency": str(n), "export_per_key": str(n)}),
    ):
        with serve(url, {**settings, **slots}, log) as (base, pid):
            httpx.get(f"{base}/healthz", timeout=10)
            runs = []
            for r in range(rounds):
                run = parquet_round(base, pid, keys, export)
                runs.append(run)
                print(
                    f"parquet x{n} {name:20s} round {r + 1}: RSS {run['rss_before_mib']} -> "
                    f"peak {run['rss_peak_mib']} -> {run['rss_after_mib']} MiB "
                    f"{run['statuses']} in {run['seconds']} s",
                    flush=True,
                )
        out[name] = {"settings": slots, "rounds": runs}
    return out


def span(url: str) -> tuple[int, datetime, datetime]:
    """How many readings ``url`` holds, the first one's time and the last one's."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), min(ts), max(ts) FROM readings").fetchone()
    if row is None or not row[0]:
        raise SystemExit(f"{url} holds no readings")
    return int(row[0]), row[1], row[2]


@contextmanager
def filled(given: str | None, readings: int, now: datetime) -> Iterator[tuple[str, dict[str, Any]]]:
    """A database with ``readings`` readings ending ``now``: filled here on a throwaway
    cluster, or ``given`` (filled by an earlier run, kept as it is)."""
    if given is None:
        with database() as url:
            yield url, fill(url, readings, now, StatisticsKeeper())
        return
    count, first, last = span(given)
    yield (
        given,
        {
            "readings": count,
            "days": (last - first).days + 1,
            "last_day": last.date().isoformat(),
            "given": True,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument(
        "--database", help="a database filled by an earlier run (bench_reads' fill): no fill"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--settle", type=float, default=30.0, help="wait for idle sessions")
    parser.add_argument(
        "--levels",
        default="0:0,2:0,5:0,10:0,0:4,0:8,0:16,0:30,0:60,10:30",
        help="phases as STALLED:HEAVY, comma-separated; empty for none",
    )
    parser.add_argument("--parquet", type=int, default=0, help="concurrent Parquet exports")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--output", default="load.json", help="file name in bench/results")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="an API setting"
    )
    args = parser.parse_args()
    levels = [tuple(int(x) for x in lv.split(":")) for lv in args.levels.split(",") if lv]
    settings = dict(item.split("=", 1) for item in args.set)
    # Researchers' exports need the pseudonym key; the server processes inherit it.
    os.environ["BIKESENSE_PSEUDONYM_KEY"] = PseudonymKey.generate().to_text()
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, Any] = {
        "readings": args.readings,
        "settings": settings,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "when": now.isoformat(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    log = Path(tempfile.gettempdir()) / f"bench-load-api-{os.getpid()}.log"
    with filled(args.database, args.readings, now) as (url, fill_info):
        results["fill"] = fill_info
        _n, first, last = span(url)
        # The whole of it, as one export: a download long enough to stall.
        everything = {"from": first.isoformat(), "to": (last + timedelta(seconds=1)).isoformat()}
        last_day = datetime.fromisoformat(fill_info["last_day"]).replace(tzinfo=UTC)
        hour, _cell = busiest_hour(url, last_day)
        with psycopg.connect(url, autocommit=True) as conn:
            officer = create_key(conn, Role.OFFICER, "bench").token
            admins = [create_key(conn, Role.ADMIN, f"bench {i}").token for i in range(32)]
        tiles = list(town_tiles(14))
        centre = tiles[len(tiles) // 2]
        scene = Scene(
            officer=officer,
            admins=admins,
            heavy={
                "metric": "pm25",
                "resolution": "10",
                "bbox": TOWN_BBOX,
                "from": (now - timedelta(days=400)).isoformat(),
                "to": now.isoformat(),
            },
            tile=f"/v1/tiles/pm25/{centre.z}/{centre.x}/{centre.y}.png",
            tile_range={
                "from": hour.isoformat(),
                "to": (hour + timedelta(hours=1)).isoformat(),
            },
            export={"format": "csv", **everything},
        )
        results["tile"] = scene.tile
        if levels:
            phases = []
            with serve(url, settings, log) as (base, _pid):
                for stalled_n, heavy_n in levels:
                    phases.append(
                        phase(url, base, scene, stalled_n, heavy_n, args.seconds, args.settle)
                    )
            results["phases"] = phases
            results["load_average_after_phases"] = [round(x, 2) for x in os.getloadavg()]
        if args.parquet:
            results["parquet"] = {
                "clients": args.parquet,
                "rows": args.readings,
                **parquet_memory(
                    url,
                    admins[: args.parquet],
                    everything,
                    args.rounds,
                    settings,
                    log,
                ),
            }
        results["after_all"] = settle(url, args.settle)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / args.output}; the server's log: {log}")


if __name__ == "__main__":
    main()
