"""Reference-station files: the two formats, parsed into stations and hourly values.

Two file formats (docs/reference-data.md has both, with examples):

* ``luchtmeetnet``: JSON as the Luchtmeetnet open API returns it, one object
  ``{"stations": [...], "measurements": [page, ...]}``: the station objects
  (``number``, ``location``, ``geometry.coordinates`` [lon, lat]) and the pages of
  ``/open_api/measurements`` (``{"pagination": ..., "data": [record, ...]}``) as
  downloaded;
* ``csv``: one row per station, metric and hour, with a header naming
  :data:`~storage.reference_csv.CSV_COLUMNS` in any order.

Parsing is pure (bytes in, a :class:`~storage.reference_file.ReferenceFile` out) and
refuses a file with one :class:`~storage.exceptions.ReferenceDataError` naming the line
(and for JSON the column and the path of the value) and the field. Pure: no I/O;
:mod:`storage.reference` stores the result. Each format has its module
(:mod:`storage.reference_csv`, :mod:`storage.reference_luchtmeetnet`); this one reads
the bytes and chooses between them.
"""

from __future__ import annotations

from storage.exceptions import ReferenceDataError
from storage.reference_csv import parse_csv
from storage.reference_file import Format, HourLabel, ReferenceFile
from storage.reference_luchtmeetnet import parse_luchtmeetnet

#: A file is read whole; larger ones are refused before parsing (split them).
MAX_FILE_BYTES = 200 * 1024 * 1024


def decode_text(data: bytes) -> str:
    """The file's text: UTF-8 (with or without a byte order mark), at most
    :data:`MAX_FILE_BYTES`."""
    if len(data) > MAX_FILE_BYTES:
        raise ReferenceDataError(
            f"the file has {len(data):,} bytes, more than {MAX_FILE_BYTES:,}: split it", line=1
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ReferenceDataError(
            f"not UTF-8 text (byte {exc.start} of the file)", line=line
        ) from None


def detect_format(text: str) -> Format:
    """JSON if the text starts with ``{`` or ``[`` (after white space), CSV otherwise."""
    return Format.LUCHTMEETNET if text.lstrip()[:1] in ("{", "[") else Format.CSV


def parse_reference(
    data: bytes, fmt: Format | None = None, *, hour_label: HourLabel = HourLabel.END
) -> ReferenceFile:
    """Parse a reference file in ``fmt`` (detected from the content when None).

    ``hour_label`` says which end of the hour Luchtmeetnet's ``timestamp_measured``
    names (docs/reference-data.md); CSV names the start, in ``hour_start``.
    """
    text = decode_text(data)
    fmt = fmt or detect_format(text)
    if fmt is Format.CSV:
        return parse_csv(text)
    return parse_luchtmeetnet(text, hour_label=hour_label)
