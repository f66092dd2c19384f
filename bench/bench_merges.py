# ruff: noqa: PLC0415 - the worker imports the storage code of the checkout it measures
"""PostgreSQL's CPU per reading on the embedded runtime's write path, statement by statement.

The end-to-end benchmark (bench/bench_e2e.py) says how much CPU PostgreSQL spends per
reading, but not on which statement, and it moves with the load of the machine. This
script writes bench_e2e's fleet (200 kits at 1 Hz, each ride on its own streets, in
arrival order) as the embedded runtime writes it, without MQTT or ingest:

* batches of ``--batch`` readings, each in its own transaction, store their readings and
  their ``aggregate_backlog`` record (``WritePlan.deferring``);
* every ``--merge`` readings, the waiting batches' aggregates are computed at once and
  merged in one transaction (what the runtime's merger thread does:
  ``stream.sink.PostgresSink.flush``), leaving out the cells earlier merges registered.

With ``--steady D[,D...]`` the fleet rides in real time instead of uploading a backlog:
each kit's frame of 10 readings arrives when its last reading was taken (a frame every
10 s), a batch holds the frames of one second, and the waiting aggregates are merged
every ``D`` seconds of that time (``bikesense ingest --aggregate-delay``); each delay
is a run of the first source.

Around every statement it reads the backend's CPU time (``/proc/<pid>/schedstat``,
nanoseconds), and reports µs per reading per statement kind, and the whole cluster's
CPU over the run (the postmaster and its children, ended ones too: autovacuum, WAL).

Several sources (checkouts of the repository, ``name=path``) run alternately, each on a
fresh database migrated by its own ``storage.migrate``, over the same readings; the
final aggregates of every run are digested, so a change that claims the same results
shows the same digest.

    .venv/bin/python bench/bench_merges.py --source main=/path/to/main --source new=. \
        --readings 400000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The aggregate tables, each with the order its digest reads it in.
DIGESTED = {
    "cell_windows": "resolution, window_s, window_start, cell",
    "window_presence": "resolution, window_s, cell, window_start, ride_id, day",
    "window_rides": "resolution, window_s, cell, window_start",
    "h3_cells": "cell",
    "aggregate_backlog": "id",
}


def backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def cluster_cpu_s(postmaster: int) -> float:
    """CPU seconds of the postmaster, its live children and its ended ones."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{postmaster}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


# -- the worker: one source, one fresh database -------------------------------------------


def worker(
    source: Path,
    url: str,
    rows_file: Path,
    batch: int,
    merge: int,
    postmaster: int,
    steady_s: float = 0.0,
) -> dict[str, Any]:
    sys.path.insert(0, str(source))
    import functools

    import numpy as np
    import psycopg

    from storage import aggregate_rows, backlog, staging
    from storage.deferred import DeferredRows
    from storage.known_rows import KnownRows
    from storage.migrate import Backend, migrate
    from storage.writer import WritePlan, plan_write, write_batch
    from stream.core.batch import ENRICHED_DTYPE
    from stream.core.process import CoreConfig, aggregate_new_rows

    assert Path(aggregate_rows.__file__).is_relative_to(source), aggregate_rows.__file__
    cpu: dict[str, float] = {}
    calls: dict[str, int] = {}

    def add(label: str, ns: int) -> None:
        cpu[label] = cpu.get(label, 0.0) + ns / 1e9
        calls[label] = calls.get(label, 0) + 1

    names = {
        id(v): k.lstrip("_").lower()
        for mod in (aggregate_rows, backlog)
        for k, v in vars(mod).items()
        if isinstance(v, bytes | str) and k.isupper()
    }

    def label(query: Any) -> str:
        found = names.get(id(query))
        if found:
            return found
        text = query if isinstance(query, str) else bytes(query).decode(errors="replace")
        return " ".join(text.split()[:4])[:50]

    class Timed(psycopg.Connection):  # type: ignore[type-arg]
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:  # type: ignore[override]
            t0 = backend_cpu_ns(pid)
            try:
                return super().execute(query, params, **kw)
            finally:
                add(label(query), backend_cpu_ns(pid) - t0)

    plain_copy = staging.copy

    def timed_copy(conn: Any, statement: bytes, payload: bytes) -> None:
        t0 = backend_cpu_ns(pid)
        try:
            plain_copy(conn, statement, payload)
        finally:
            add("copy " + statement.split(b" ")[1].decode().strip('"'), backend_cpu_ns(pid) - t0)

    staging.copy = timed_copy  # type: ignore[assignment]

    rows = np.load(rows_file)
    assert rows.dtype == ENRICHED_DTYPE, "the sources' ENRICHED_DTYPE differ"
    aggregate = functools.partial(aggregate_new_rows, config=CoreConfig())
    conn = Timed.connect(url, autocommit=True)
    pid = conn.info.backend_pid
    migrate(conn, backend=Backend.PLAIN)
    cpu.clear()
    calls.clear()
    conn.execute("CHECKPOINT")
    cluster_before = cluster_cpu_s(postmaster)
    known = KnownRows()
    waiting: list[DeferredRows] = []
    staged = {"cell_windows": 0, "presence": 0}
    py_s = 0.0

    def merged_now() -> None:
        nonlocal py_s
        t = time.process_time()
        plan = WritePlan(np.zeros(0, dtype=ENRICHED_DTYPE), [], None)
        plan = plan.with_earlier(tuple(waiting)).aggregated(aggregate).leaving_out(known)
        plan = plan.encode()
        py_s += time.process_time() - t
        assert plan.aggregates is not None
        staged["cell_windows"] += len(
            np.unique(
                plan.aggregates.partials[["resolution", "window_s", "window_start_ms", "cell"]]
            )
        )
        staged["presence"] += len(plan.aggregates.presence)
        t0 = backend_cpu_ns(pid)
        result = write_batch(conn, plan, aggregate, create_partitions=False)
        add("merge transaction", backend_cpu_ns(pid) - t0)
        assert result.settled == len(waiting)
        known.remember(plan.stored_after or plan.aggregates)
        waiting.clear()

    def stored(batch_rows: np.ndarray) -> None:
        plan = plan_write(batch_rows, None).deferring().encode()
        t0 = backend_cpu_ns(pid)
        result = write_batch(conn, plan, aggregate)
        add("readings transaction", backend_cpu_ns(pid) - t0)
        assert result.deferred is not None
        waiting.append(result.deferred)

    if steady_s:
        # A frame arrives with its last reading; a batch is a second of arrivals.
        frames = rows["kit_id"].astype(np.int64) << 32 | rows["seq"].astype(np.int64)
        _, inverse = np.unique(frames, return_inverse=True)
        arrival_s = np.zeros(inverse.max() + 1, dtype=np.int64)
        np.maximum.at(arrival_s, inverse, rows["ts_ms"] // 1000)
        second = arrival_s[inverse]
        order = np.argsort(second, kind="stable")
        rows, second = rows[order], second[order]
        cuts = np.flatnonzero(np.diff(second)) + 1
        due = second[0] + steady_s
        for part in np.split(rows, cuts):
            now = int(part["ts_ms"].max() // 1000)
            if now >= due:
                merged_now()
                due = now + steady_s
            stored(part)
    else:
        since_merge = 0
        for start in range(0, len(rows), batch):
            stored(rows[start : start + batch])
            since_merge += min(batch, len(rows) - start)
            if since_merge >= merge:
                merged_now()
                since_merge = 0
    if waiting:
        merged_now()
    staging.copy = plain_copy  # type: ignore[assignment]
    timed = dict(cpu), dict(calls)
    cluster_s = cluster_cpu_s(postmaster) - cluster_before
    digest = {
        table: conn.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} t"
        ).fetchone()
        for table, order in DIGESTED.items()
    }
    conn.close()
    return {
        "readings": len(rows),
        "cpu_s": timed[0],
        "calls": timed[1],
        "staged": staged,
        "python_s": py_s,
        "cluster_cpu_s": cluster_s,
        "digest": {k: list(v) for k, v in digest.items() if v is not None},
    }


# -- the driver ------------------------------------------------------------------------------


def make_rows(n: int, path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT))
    import bench_e2e
    import numpy as np

    secrets = {k: bytes([k % 256]) * 32 for k in range(1, 201)}
    rows = bench_e2e.enriched_rows(bench_e2e.make_frames(secrets, n), secrets)
    np.save(path, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, help="name=path")
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--merge", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steady",
        default="",
        help="comma-separated aggregate delays in s: the fleet in real time, one run each",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sources = dict(s.split("=", 1) for s in args.source)
    # name: (path, steady delay in s or 0)
    runs_of = {name: (path, 0.0) for name, path in sources.items()}
    if args.steady:
        path = next(iter(sources.values()))
        runs_of = {f"steady-{d}s": (path, float(d)) for d in args.steady.split(",")}

    sys.path.insert(0, str(ROOT))
    import psycopg

    from bikesense.services import PostgresCluster

    root = Path(tempfile.mkdtemp(prefix="bikesense-bench-merges-"))
    root.chmod(0o755)
    rows_file = root / "rows.npy"
    make_rows(args.readings, rows_file)
    rows_file.chmod(0o644)
    cluster = PostgresCluster(root / "postgres", durable=True)
    cluster.start()
    runs: list[dict[str, Any]] = []
    try:
        postmaster = cluster.pid()
        for rnd in range(args.rounds):
            order = list(runs_of.items())
            if rnd % 2:
                order.reverse()
            for name, (path, steady_s) in order:
                db = f"merges_{name}_{rnd}"
                with psycopg.connect(cluster.url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{db}"')
                url = cluster.url.rpartition("/")[0] + "/" + db
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        path,
                        url,
                        str(rows_file),
                        str(args.batch),
                        str(args.merge),
                        str(postmaster),
                        str(steady_s),
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                    cwd=path,
                )
                if out.returncode:
                    raise SystemExit(f"{name} failed:\n{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                result["source"], result["round"] = name, rnd
                runs.append(result)
                with psycopg.connect(cluster.url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
                report_run(result)
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    summary(runs, list(runs_of))
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))


def report_run(r: dict[str, Any]) -> None:
    n = r["readings"]
    parts = ", ".join(f"{k} {v / n * 1e6:.2f}" for k, v in sorted(r["cpu_s"].items()))
    print(
        f"[{r['source']} round {r['round']}] cluster {r['cluster_cpu_s'] / n * 1e6:.1f}"
        f" µs/reading; {parts}",
        flush=True,
    )


def summary(runs: list[dict[str, Any]], names: list[str]) -> None:
    labels = sorted({k for r in runs for k in r["cpu_s"]})
    print("\nmedian µs of PostgreSQL CPU per reading")
    print(f"{'statement':45}" + "".join(f"{n:>12}" for n in names))
    for lab in [*labels, "cluster"]:
        cells = []
        for name in names:
            vals = [
                (r["cluster_cpu_s"] if lab == "cluster" else r["cpu_s"].get(lab, 0.0))
                / r["readings"]
                * 1e6
                for r in runs
                if r["source"] == name
            ]
            cells.append(f"{statistics.median(vals):12.2f}")
        print(f"{lab[:45]:45}" + "".join(cells))
    for name in names:
        r = next(r for r in runs if r["source"] == name)
        st = {k: round(v / r["readings"], 4) for k, v in r["staged"].items()}
        print(f"{name}: staged rows per reading {st}; calls {r['calls']}")
    digests = {
        name: {r2["source"]: json.dumps(r2["digest"]) for r2 in runs}[name] for name in names
    }
    same = len(set(digests.values())) == 1
    print("final aggregates identical across sources:", same)
    if not same:
        for name, d in digests.items():
            print(name, d)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        src, url, rows_file, batch, merge, pm, steady = sys.argv[2:9]
        result = worker(
            Path(src), url, Path(rows_file), int(batch), int(merge), int(pm), float(steady)
        )
        print(json.dumps(result))
    else:
        main()
