"""A cache of kit keys, so that authenticating a frame costs no database round trip.

Known kits are served from memory and the whole table is re-read every
``ttl_s`` (a revocation takes effect within that time). A kit that is not in
the cache triggers a re-read at most once per ``miss_interval_s``, so a flood
of frames from unknown kits cannot hammer the database. When the re-read
fails, the error propagates: "unknown" is only said of a kit the database
confirmed it does not know. :class:`KitKeyReader` is the loader that reads
them from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from storage.kits import MasterKey, kit_secrets


@dataclass(frozen=True, slots=True)
class KitKey:
    """A kit's MAC key as ingest needs it."""

    kit_id: int
    key: bytes = field(repr=False)
    active: bool


#: Looks a kit up by id: None for a kit that was never registered.
KeyLookup = Callable[[int], "KitKey | None"]
KeyLoader = Callable[[], Mapping[int, KitKey]]


class KeyCache:
    def __init__(
        self,
        load: KeyLoader,
        *,
        ttl_s: float = 30.0,
        miss_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._miss_interval_s = miss_interval_s
        self._clock = clock
        self._keys: Mapping[int, KitKey] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        keys = self._load()
        self._keys = keys
        self._loaded_at = self._clock()

    def lookup(self, kit_id: int) -> KitKey | None:
        with self._lock:
            age = self._clock() - self._loaded_at
            if age > self._ttl_s or (kit_id not in self._keys and age > self._miss_interval_s):
                self._refresh()
            return self._keys.get(kit_id)


class KitKeyReader:
    """Reads every kit's key for the key cache, on a connection of its own.

    Its own: admission must never run a query inside a writer's open transaction.
    """

    def __init__(self, database_url: str, master_key: MasterKey) -> None:
        self._url = database_url
        self._master_key = master_key
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> Mapping[int, KitKey]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._close()
                    self._conn = psycopg.connect(
                        self._url,
                        autocommit=True,
                        connect_timeout=5,
                        application_name="bikesense-stream-keys",
                    )
                secrets = kit_secrets(self._conn, self._master_key)
            except psycopg.OperationalError:
                self._close()
                raise
        return {k: KitKey(k, s.secret, s.active) for k, s in secrets.items()}

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
