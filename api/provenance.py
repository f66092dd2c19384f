"""Provenance of an export: what was asked, by which rules, so that it can be repeated.

One record of text fields goes out in every format's file and in the
``X-Bikesense-Provenance`` header: as the CSV's leading ``# key: value`` comment
lines, in the Parquet schema's metadata (``bikesense``, as JSON) and in the
GeoJSON header. Its values are built from parsed parameters, never from the
request's text; the header form is escaped to printable ASCII and the CSV form
to printable text on one line (:func:`api.render.csv_text.comment_value`), so
nothing a client sends can break the header or a comment line.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from api.privacy import Identities
from storage.selection import BBox

Provenance = dict[str, str]

_ORDER = {
    Identities.PSEUDONYMS: "ts, kit_pseudonym, ride_pseudonym",
    Identities.STORED: "ts, kit_id, boot_id, seq, idx",
}


def export_provenance(
    *,
    exported_at: datetime,
    start: datetime,
    end: datetime,
    bbox: BBox | None,
    metrics: Iterable[str],
    kits: Iterable[str],
    identities: Identities,
    day_tz: str,
) -> Provenance:
    """``metrics`` are API metric names, ``kits`` ids or pseudonyms; empty means all."""
    return {
        "generator": "bikesense",
        "exported_at": exported_at.isoformat(),
        "from": start.isoformat(),
        "to": end.isoformat(),
        "bbox": "" if bbox is None else f"{bbox.west},{bbox.south},{bbox.east},{bbox.north}",
        "metrics": ",".join(metrics) or "all",
        "kits": ",".join(kits) or "all",
        "identities": (
            f"daily pseudonyms, local days of {day_tz}"
            if identities is Identities.PSEUDONYMS
            else "as stored"
        ),
        "order": _ORDER[identities],
    }


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in text)


def provenance_header(provenance: Provenance) -> str:
    """The record as one header value: ``key=value; key=value``, printable ASCII only."""
    return _printable("; ".join(f"{k}={v}" for k, v in provenance.items()))
