"""api/render/csv_text.py: an export's head is comment lines that nothing can break."""

from __future__ import annotations

from api.render.columns import RESEARCHER_COLUMNS
from api.render.csv_text import csv_head


def test_a_value_cannot_add_a_line_to_the_head() -> None:
    # Provenance values come from parsed parameters and settings; were one ever to hold a
    # line break, it must not start a line of its own (a forged "# complete" least of all).
    head = csv_head(
        RESEARCHER_COLUMNS,
        {"generator": "bikesense", "kits": "a\n# complete: rows=0 sha256=0\r\u2028b"},
    ).decode()
    lines = head.splitlines()
    assert len(lines) == 1 + 2 + len(RESEARCHER_COLUMNS) + 1
    assert lines[2] == "# kits: a\\u000a# complete: rows=0 sha256=0\\u000d\\u2028b"
    assert all(line.startswith("# ") for line in lines[:-1])
    assert lines[-1] == ",".join(c.name for c in RESEARCHER_COLUMNS)
    assert "#" not in lines[-1]
