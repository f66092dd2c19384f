"""Shared by bench_tiles.py and bench_export.py: a throwaway PostgreSQL and a server process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from bikesense.services import PostgresCluster, free_port
from storage.migrate import Backend, migrate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@contextmanager
def database() -> Iterator[str]:
    """A migrated database on a throwaway cluster (or BIKESENSE_DATABASE_URL's server)."""
    base = os.environ.get("BIKESENSE_DATABASE_URL")
    cluster = None
    if base is None:
        root = Path(tempfile.mkdtemp(prefix="bikesense-bench-"))
        root.chmod(0o755)
        cluster = PostgresCluster(root / "postgres", durable=False)
        cluster.start()
        base = cluster.url
    name = f"bench_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{base.rpartition('/')[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, backend=Backend.PLAIN)
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if cluster is not None:
            cluster.stop(mode="immediate")
            shutil.rmtree(root, ignore_errors=True)


SERVER_CODE = """
import sys, uvicorn
from api.app import create_app
from bikesense.settings import load_settings
url, port = sys.argv[1], int(sys.argv[2])
app = create_app(load_settings(database_url=url, public_rate_per_s=1e6, public_burst=10**6,
                 pool_max_size=4), listen=False)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def wait_until_healthy(
    base: str, proc: subprocess.Popen[bytes], *, timeout_s: float, failure: str
) -> None:
    """Wait for the API at ``base`` to answer /healthz with 200; ``failure`` if it does
    not within ``timeout_s`` or its process ends first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(failure)
        time.sleep(0.1)


@contextmanager
def api_server(url: str, code: Path = ROOT) -> Iterator[tuple[str, int]]:
    """The API in its own process (so its memory can be read): (base URL, pid). ``code``:
    the checkout whose packages it runs (they come first on its path)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, url, str(port)], cwd=code)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, timeout_s=30, failure="the API server did not start")
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def cpu_s(pid: int) -> float:
    """User and system CPU seconds a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The repository's files at ``rev`` (``git archive``) in a temporary directory, the
    web assets' installed packages linked in, for an API server of that code."""
    root = Path(tempfile.mkdtemp(prefix="bikesense-checkout-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        modules = ROOT / "api" / "web" / "node_modules"
        if modules.exists() and (root / "api" / "web").exists():
            (root / "api" / "web" / "node_modules").symlink_to(modules)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc."""
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
