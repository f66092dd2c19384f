"""How a file says that the export it holds is whole: its rows and a digest, written last.

An export counts its rows as it writes them and, after the last one, states
the count where the format's readers see it (docs/api.md, "A complete export
says so"). A file cut short, by a failure mid-stream or by a copy stopped
halfway, lacks that statement.

In the text formats (CSV, GeoJSON) the statement is the file's last line and
carries the SHA-256 of every byte before that line, so that
``head -n -1 FILE | sha256sum`` checks the file; Parquet states it in the
footer's key-value metadata, which a reader only finds in a whole file, and
its pages carry their own CRC-32 checksums.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from starlette.concurrency import run_in_threadpool

from storage.exceptions import QueryError

#: The key of the statement in GeoJSON (a member of the FeatureCollection after
#: ``features``) and in Parquet's key-value metadata; CSV's last line starts with ``# complete:``.
COMPLETE_KEY = "bikesense_complete"
#: The key of the corrections an export's corrected columns used: a comment line before
#: the last in CSV, a member before ``bikesense_complete`` in GeoJSON, Parquet's footer.
CORRECTIONS_KEY = "bikesense_corrections"
#: Below this many bytes hashing in the event loop costs less than handing it to a thread
#: (hashlib releases the GIL for large buffers, so a block is hashed beside other work).
_THREAD_BYTES = 1 << 16


class Completion:
    """The rows written so far and the SHA-256 of the bytes written so far."""

    def __init__(self) -> None:
        self.rows = 0
        self._sha256 = hashlib.sha256()

    async def wrote(self, data: bytes, rows: int = 0) -> bytes:
        """Count ``data`` (holding ``rows`` rows) as written; returns it."""
        if len(data) >= _THREAD_BYTES:
            await run_in_threadpool(self._sha256.update, data)
        else:
            self._sha256.update(data)
        self.rows += rows
        return data

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


def check_lines(data: bytes, rows: int, separators: int) -> None:
    """A block from the database holds ``rows`` rows and so ``separators`` newlines: else
    the count the file states would not be the rows it holds, and the export stops."""
    found = data.count(b"\n")
    if found != separators:
        msg = f"an export block of {rows} rows holds {found} line breaks, not {separators}"
        raise QueryError(msg)


class CorrectionsUsed:
    """The versions (or a researcher's daily names) of the corrections in force for the
    kits and days an export holds, per metric, gathered from its blocks: known only at
    the end, so stated there, beside the statement that the export is whole."""

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}

    def add(self, corrections: Mapping[str, frozenset[str]]) -> None:
        for metric, versions in corrections.items():
            self._used.setdefault(metric, set()).update(versions)

    def json(self) -> str:
        """``{"pm25": ["1-…", …], …}``, sorted: one line, no ``#``."""
        return json.dumps({m: sorted(v) for m, v in sorted(self._used.items())})
