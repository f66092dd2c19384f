"""Run the embedded runtime in a background thread for a test, and stop it cleanly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from storage.kits import MasterKey
from stream.embedded import EmbeddedConfig, EmbeddedRuntime


@contextmanager
def running(config: EmbeddedConfig, master_key: MasterKey) -> Iterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime(config, master_key)
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

    thread = threading.Thread(target=main, name="embedded-runtime", daemon=True)
    thread.start()
    try:
        if not runtime.ready.wait(30):
            raise AssertionError("the embedded runtime did not subscribe within 30 s")
        yield runtime
    except BaseException as exc:
        if errors:  # the runtime's own failure explains the test's
            raise errors[0] from exc
        raise
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
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
