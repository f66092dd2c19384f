"""docs/api.md's tables of qa_flags and status bits say what the code does, and its
recipe decodes an export as the publication policy does."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from firmware_protocol.frames import StatusBits
from stream.core.partials import METRIC_COLUMNS, Metric
from stream.core.policy import DEFAULT_POLICY, EXCLUDING_FLAGS
from stream.core.qa import QaFlag
from tests.stream.stream_factories import random_enriched

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
SECTION = DOC[DOC.index("### Reading the columns of an export") : DOC.index("## Live updates")]


def _table(after: str) -> list[list[str]]:
    """Rows of the first markdown table after ``after`` in the section, cells stripped."""
    rest = SECTION[SECTION.index(after) :]
    lines = [ln for ln in rest.splitlines() if ln.startswith("|")]
    rows, started = [], False
    for ln in rest.splitlines():
        if ln.startswith("|"):
            started = True
            rows.append([c.strip() for c in ln.strip("|").split("|")])
        elif started:
            break
    assert lines
    return rows[2:]  # header and rule


def test_the_qa_flag_table_is_the_code() -> None:
    rows = _table("**`qa_flags`**")
    single = [f for f in QaFlag if f.name and f.value.bit_count() == 1]
    assert [r[2].strip("`") for r in rows] == [f.name for f in single]
    for row, flag in zip(rows, single, strict=True):
        bit = flag.value.bit_length() - 1
        assert (int(row[0]), int(row[1])) == (bit, int(flag))
        kept_out = [m.api_name for m in Metric if EXCLUDING_FLAGS[m] & flag]
        expected = (
            "all"
            if len(kept_out) == len(Metric)
            else ", ".join(kept_out)
            if kept_out
            else "annotation"
        )
        assert row[4] == expected, flag.name


def test_the_stated_masks_are_the_policy() -> None:
    stated = {m: int(v, 16) for m, v in re.findall(r"(\w+)\s+`(0x[0-9a-f]+)`", SECTION)}
    assert stated == {m.api_name: int(EXCLUDING_FLAGS[m]) for m in Metric}


def test_the_status_table_is_the_protocol() -> None:
    rows = _table("**`status`**")
    bits = [b for b in StatusBits if b.name and b.value]
    assert [(int(r[0]), int(r[1]), r[2].strip("`")) for r in rows] == [
        (b.value.bit_length() - 1, int(b), b.name) for b in bits
    ]


def _recipe() -> dict[str, Any]:
    code = SECTION[SECTION.index("```python") + len("```python") :]
    code = code[: code.index("```")]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/api.md recipe", "exec"), namespace)
    return namespace


def test_the_recipe_decodes_as_the_policy_counts(tmp_path: Path) -> None:
    rows = random_enriched(5, 400)
    columns = [*METRIC_COLUMNS.values(), "interval_ms", "qa_flags"]
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows.tolist():
            rec = dict(zip(rows.dtype.names or (), r, strict=True))
            w.writerow(
                ["" if isinstance(rec[c], float) and np.isnan(rec[c]) else rec[c] for c in columns]
            )
    decoded = list(_recipe()["read_export"](path))
    assert len(decoded) == len(rows)
    for metric, column in METRIC_COLUMNS.items():
        counted = DEFAULT_POLICY.publishable(rows, metric)
        assert [d[f"{column}_on_map"] for d in decoded] == counted.tolist(), column
    for d, flags in zip(decoded, rows["qa_flags"].tolist(), strict=True):
        assert d["qa_names"] == [
            f.name for f in QaFlag if f.name and f.value.bit_count() == 1 and flags & f
        ]
