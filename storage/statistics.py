"""Planner statistics kept current while the tables grow, by the process that grows them.

PostgreSQL plans a query from each table's statistics (``pg_class.reltuples``,
``pg_statistic``), which ``ANALYZE`` gathers. Autovacuum runs it by itself, but only
after its ``autovacuum_naptime`` (60 s by default), throttled by its cost delay, one
table at a time per worker, and never on a partitioned table's parent (the PostgreSQL
manual, "The Autovacuum Daemon": partitioned tables are not processed by autovacuum).
After a bulk upload (a fleet coming back online, a backlog replayed) the tables the API
reads grow from almost nothing to millions of rows within a minute; until they are
analyzed the planner believes they are as small as they were and picks plans for that
(an officer's one-hour ``/v1/cells`` at resolution 10 took over 60 s this way).

:class:`StatisticsKeeper` runs beside ingest (``stream.maintenance.keep_statistics``): every
``interval_s`` it reads ``pg_stat_user_tables`` and analyzes each table of the schema
(partitions and TimescaleDB chunks included) changed by at least ``min_rows`` rows and
``fraction`` of the rows it had when it was last analyzed, and the parent of a
partitioned table once its partitions together hold that much more or fewer rows than
the parent's own statistics say (at most once per ``parent_interval_s``: analyzing a
parent samples every partition again). A TimescaleDB hypertable is such a parent too,
one autovacuum never analyzes either (its rows are in its chunks; ANALYZE on it gathers
the statistics of the whole table and analyzes every chunk again). Its ``reltuples``
counts only the parent's own rows (none), so the keeper remembers how many rows its
chunks held when it last analyzed it, and analyzes it once after it starts (once the
chunks hold ``min_rows``): a restart costs one ANALYZE of each hypertable. A manual
``ANALYZE`` is not cost-throttled; it reads a sample (30,000 rows at the default
statistics target) whatever the table's size, so a round costs well under a second.
It takes a lock that does not block writes; a table another process is vacuuming or
analyzing is skipped for the round (``lock_timeout``). Several processes may run a
keeper against one database: an advisory lock lets one of them do each round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

#: Key of the session advisory lock of a keeper round ("bsstats" in ASCII).
ADVISORY_LOCK_KEY = 0x62737374617473

#: Every permanent table and partition of the database (TimescaleDB's chunks too, in
#: their own schema; not the temporary staging tables of the writers' sessions), with
#: what changed since it was last analyzed and the row count the planner has for it
#: (-1: never analyzed).
_CHANGED = """
SELECT s.schemaname, s.relname, s.n_mod_since_analyze, c.reltuples
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND s.n_mod_since_analyze > 0
ORDER BY s.n_mod_since_analyze DESC
"""

#: Each parent of partitions (relkind p) or of inheritance children (relkind r: a
#: TimescaleDB hypertable; not TimescaleDB's own internal ones, which no query of ours
#: names): the rows its children hold now, by their own counts, and the rows its
#: statistics say (for relkind r only its own rows).
_PARENTS = """
SELECT n.nspname, p.relname, p.relkind = 'p', p.reltuples,
       coalesce(sum(greatest(s.n_live_tup, 0)), 0) AS live
FROM pg_class p
JOIN pg_namespace n ON n.oid = p.relnamespace
JOIN pg_inherits i ON i.inhparent = p.oid
JOIN pg_stat_user_tables s ON s.relid = i.inhrelid
WHERE p.relkind IN ('p', 'r') AND p.relpersistence = 'p'
  AND n.nspname NOT LIKE '\\_timescaledb\\_%'
GROUP BY n.nspname, p.relname, p.relkind, p.reltuples
"""


@dataclass(slots=True)
class StatisticsKeeper:
    """Analyzes the tables whose statistics fell behind; see the module docstring."""

    interval_s: float = 15.0
    min_rows: int = 1000
    fraction: float = 0.2
    parent_interval_s: float = 600.0
    lock_timeout_ms: int = 1000
    clock: Callable[[], float] = time.monotonic
    _parents_at: dict[str, float] = field(default_factory=dict)
    #: Rows an inheritance parent's children held when this keeper last analyzed it.
    _parent_rows: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.min_rows < 1 or not self.fraction > 0:
            msg = (
                "the statistics keeper needs a positive interval, row threshold and fraction "
                f"(got {self.interval_s}, {self.min_rows}, {self.fraction})"
            )
            raise ValueError(msg)

    def behind(self, changed: int, reltuples: float) -> bool:
        """Whether a table with ``changed`` rows modified since its statistics, which
        counted ``reltuples`` rows (-1: never analyzed), needs analyzing."""
        return changed >= max(self.min_rows, self.fraction * max(reltuples, 0.0))

    def run(self, conn: psycopg.Connection[Any]) -> list[str]:
        """One round on an autocommit connection: the tables analyzed, schema-qualified
        (none when another process holds the round's lock)."""
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        if not locked or not locked[0]:
            return []
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(self.lock_timeout_ms))
            due = [
                (schema, name)
                for schema, name, changed, reltuples in conn.execute(_CHANGED).fetchall()
                if self.behind(int(changed), float(reltuples))
            ]
            analyzed = [f"{s}.{n}" for s, n in due if _analyze(conn, s, n)]
            now = self.clock()
            for schema, name, partitioned, reltuples, live in conn.execute(_PARENTS).fetchall():
                qualified = f"{schema}.{name}"
                # -1, never analyzed, for a hypertable this keeper has not analyzed yet.
                counted = (
                    float(reltuples) if partitioned else self._parent_rows.get(qualified, -1.0)
                )
                drift = abs(float(live) - max(counted, 0.0))
                if not self.behind(int(drift), counted):
                    continue
                last = self._parents_at.get(qualified)
                if last is not None and now - last < self.parent_interval_s:
                    continue
                if _analyze(conn, schema, name):
                    self._parents_at[qualified] = now
                    self._parent_rows[qualified] = float(live)
                    analyzed.append(qualified)
            return analyzed
        finally:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _analyze(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    """ANALYZE one table; False when its lock was not to be had (or it is gone)."""
    try:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.UndefinedTable) as exc:
        log.debug("statistics of %s.%s left for the next round: %s", schema, name, exc)
        return False
    return True
