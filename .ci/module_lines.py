"""Fail, naming each one, if a module of stream/, ingest/ or storage/ is over 400 lines.

Small modules, each named after the one concept it holds, are how a newcomer finds
their way (CONTRIBUTING.md, "Where code goes"). A module that outgrows the limit is
split by concept, not trimmed to fit. Run by `./run check`.
"""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400
PACKAGES = ("stream", "ingest", "storage")


def too_long(root: Path) -> list[tuple[Path, int]]:
    """Every module of PACKAGES under ``root`` with more than LIMIT lines, and its count."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > LIMIT:
                found.append((path.relative_to(root), lines))
    return found


def main() -> int:
    found = too_long(Path(__file__).resolve().parent.parent)
    for path, lines in found:
        sys.stderr.write(f"{path}: {lines} lines, more than {LIMIT}: split it by concept\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
