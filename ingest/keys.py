"""A cache of kit keys, so that authenticating a frame costs no database round trip.

Known kits are served from memory and the whole table is re-read every
``ttl_s`` (a revocation takes effect within that time). "Unknown" is only said
of a kit the database did not know *after* its message arrived: before a batch
is admitted, :meth:`KeyCache.confirm` reads the kits the cache does not hold
whose latest message arrived after the cache last asked the database about
them, in one query for the whole batch. A kit registered a moment before it
first publishes is therefore found, and a flood of frames from unknown kits
costs at most one small query per batch (a kit asked about is not asked again
for messages that arrived before that question). When a read fails, the error
propagates: a database that is away is never taken for "unknown".
:class:`KitKeyReader` reads the keys from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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

#: Kits asked about and not found, remembered at most this many at once (then forgotten,
#: which costs queries, never a wrong answer).
MAX_REMEMBERED_UNKNOWN = 100_000


class KeySource(Protocol):
    """Where the cache reads keys: every kit's, or those of some kits."""

    def load(self) -> Mapping[int, KitKey]: ...

    def load_some(self, kit_ids: Collection[int]) -> Mapping[int, KitKey]: ...


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyCache:
    def __init__(
        self,
        source: KeySource,
        *,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._keys: dict[int, KitKey] = {}
        self._loaded_at = float("-inf")
        #: Wall-clock ms at which the whole table was last read, and at which each
        #: unknown kit was last asked about: a message that arrived before then needs no
        #: new question.
        self._loaded_ms = -1
        self._asked_ms: dict[int, int] = {}
        self._lock = threading.Lock()

    def _reload_if_stale(self) -> None:
        if self._clock() - self._loaded_at > self._ttl_s:
            started_ms = self._wall_ms()
            self._keys = dict(self._source.load())
            self._loaded_at = self._clock()
            self._loaded_ms = started_ms
            self._asked_ms.clear()

    def confirm(self, latest_ms: Mapping[int, int]) -> None:
        """Before admitting a batch: ``latest_ms`` maps each kit id its messages name to
        when the latest of them arrived (wall-clock ms). Kits the cache does not hold are
        read from the database, in one query, unless it was asked about them after that."""
        with self._lock:
            self._reload_if_stale()
            missing = [
                kit_id
                for kit_id, arrived_ms in latest_ms.items()
                if kit_id not in self._keys
                and arrived_ms >= max(self._loaded_ms, self._asked_ms.get(kit_id, -1))
            ]
            if not missing:
                return
            started_ms = self._wall_ms()
            found = self._source.load_some(missing)
            self._keys.update(found)
            if len(self._asked_ms) + len(missing) > MAX_REMEMBERED_UNKNOWN:
                self._asked_ms.clear()
            for kit_id in missing:
                if kit_id not in found:
                    self._asked_ms[kit_id] = started_ms

    def lookup(self, kit_id: int) -> KitKey | None:
        """The kit's key as last read (after :meth:`confirm` for the batch at hand)."""
        with self._lock:
            self._reload_if_stale()
            return self._keys.get(kit_id)


class KitKeyReader:
    """Reads kits' keys for the key cache, on a connection of its own.

    Its own: admission must never run a query inside a writer's open transaction.
    """

    def __init__(self, database_url: str, master_key: MasterKey) -> None:
        self._url = database_url
        self._master_key = master_key
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> Mapping[int, KitKey]:
        return self._read(None)

    def load_some(self, kit_ids: Collection[int]) -> Mapping[int, KitKey]:
        return self._read(kit_ids)

    def _read(self, kit_ids: Collection[int] | None) -> Mapping[int, KitKey]:
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
                secrets = kit_secrets(self._conn, self._master_key, kit_ids)
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
