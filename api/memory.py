"""How the API process allocates memory: few glibc malloc arenas.

glibc gives each thread that allocates under contention an arena of its own, up to
eight per core, and an arena keeps the high-water mark of what was freed in it for
reuse. The API decodes and encodes exports, tiles and cells in worker threads (AnyIO's
pool, up to 40 threads), and an export's work moves between them from one slice to
the next; so every worker thread that ever held a Parquet row group keeps tens of MiB,
and the process grows with the number of threads touched rather than with the work
at hand. Measured with ``bench/bench_load.py --parquet 9 --rounds 8`` (1,000,000
readings, each round 9 clients asking for a Parquet export of all of them, the 2
export slots admitting 2): the server's peak resident memory per round rose
297 → 442 MiB with glibc's default arenas (16 on 2 cores), and stayed at 311–345 MiB
from the second round on with 2 (bench/results/load-parquet-default-arenas.json and
load.json); over 20 rounds, the default levelled near 440 MiB, 2 arenas near 340.

:func:`limit_malloc_arenas` caps the arenas with ``mallopt(M_ARENA_MAX)`` (mallopt(3))
before the server starts its threads. Python's small objects do not use these arenas
(pymalloc), numpy's and libpq's buffers do; pyarrow has its own allocator (mimalloc),
which was not the one growing. An operator's ``MALLOC_ARENA_MAX`` wins, and on a C
library other than glibc nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

#: mallopt(3)'s parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8
#: Two: one for the event loop's thread, one shared by the workers; large allocations
#: are few, so threads waiting on an arena's lock cost nothing measurable.
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True when the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    done = bool(ctypes.CDLL(name).mallopt(_M_ARENA_MAX, arenas))
    if not done:
        log.warning("mallopt(M_ARENA_MAX, %d) failed; memory may grow with threads", arenas)
    return done
