"""Run the embedded runtime for a test — in a thread, or as a real `bikesense ingest`
process — and stop it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from bikesense.runtimes import EmbeddedConfig, EmbeddedRuntime, Runtime
from storage.kits import MasterKey


@contextmanager
def running(config: EmbeddedConfig, master_key: MasterKey) -> Iterator[EmbeddedRuntime]:
    with running_runtime(EmbeddedRuntime(config, master_key)) as runtime:
        yield runtime


R = TypeVar("R", bound=Runtime[Any])


@contextmanager
def running_runtime(runtime: R) -> Iterator[R]:
    """Run ``runtime`` (the embedded one, or Kafka ingest) in a thread until the block ends."""
    with started(runtime):
        yield runtime


@contextmanager
def started(runtime: Runtime[Any]) -> Iterator[Callable[[], None]]:
    """Run ``runtime`` in a thread until the block ends; yields a function that asks it to
    stop earlier (without waiting). A failure of the runtime is raised, also as the cause
    of the test's own."""
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(runtime.run(stop))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            loop.close()

    def request_stop() -> None:
        with suppress(RuntimeError):  # the loop already closed: it has stopped
            loop.call_soon_threadsafe(stop.set)

    thread = threading.Thread(target=main, name="embedded-runtime", daemon=True)
    thread.start()
    try:
        if not runtime.subscribed.wait(30):
            raise AssertionError("the embedded runtime did not subscribe within 30 s")
        yield request_stop
    except BaseException as exc:
        if errors:  # the runtime's own failure explains the test's
            raise errors[0] from exc
        raise
    finally:
        request_stop()
        thread.join(30)
        assert not thread.is_alive(), "the embedded runtime did not stop within 30 s"
    if errors:
        raise errors[0]


def wait_for(predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what or predicate}")


def scalar(url: str, query: Any, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


@contextmanager
def ingest_process(
    database_url: str, mqtt_url: str, master: MasterKey, root: str, client_id: str, *extra_args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`bikesense ingest` with a persistent session, stopped with SIGTERM at the end."""
    env = {
        **os.environ,
        "BIKESENSE_DATABASE_URL": database_url,
        "BIKESENSE_MQTT_URL": mqtt_url,
        "BIKESENSE_KIT_MASTER_KEY": master.to_text(),
    }
    with tempfile.NamedTemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bikesense",
                "ingest",
                "--client-id",
                client_id,
                "--topic-root",
                root,
                "--log-level",
                "INFO",
                *extra_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: (
                    process.poll() is not None
                    or b"embedded runtime consuming" in Path(log.name).read_bytes()
                ),
                what=f"ingest {client_id} to subscribe",
            )
            assert process.poll() is None, "ingest exited at start"
            yield process
        except BaseException:
            log.seek(0)
            sys.stderr.write(
                f"--- ingest {client_id} log ---\n" + log.read().decode(errors="replace")[-5000:]
            )
            raise
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
