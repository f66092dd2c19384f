"""Reference-station data: both file formats, an error naming its line for every bad
input, all-or-nothing storage and idempotent re-import, against the real server.

Every time here is a fixed historic hour: nothing depends on the day the tests run.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storage.exceptions import ReferenceDataError
from storage.reference import reference_values, station_summaries, store_reference
from storage.reference_csv import CSV_COLUMNS, format_csv, parse_csv
from storage.reference_file import Format, HourLabel, ReferenceFile, ReferenceValue, Station
from storage.reference_formats import parse_reference
from storage.reference_luchtmeetnet import parse_luchtmeetnet
from stream.core.partials import Metric

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
HEADER = ",".join(CSV_COLUMNS)
T0 = datetime(2024, 3, 5, 8, tzinfo=UTC)


def csv_text(*rows: str) -> bytes:
    return "\n".join((HEADER, *rows, "")).encode()


def row(
    station: str = "NL99901",
    name: str = "Stationsplein",
    lat: str = "52.0893",
    lon: str = "5.1105",
    metric: str = "no2",
    hour: str = "2024-03-05T08:00:00Z",
    value: str = "31.4",
    valid: str = "true",
) -> str:
    return ",".join((station, name, lat, lon, metric, hour, value, valid))


def lmn(
    measurements: list[dict[str, Any]],
    stations: list[dict[str, Any]] | None = None,
) -> bytes:
    """A Luchtmeetnet file, pretty-printed: a record's line is known (see ``record_line``)."""
    if stations is None:
        stations = [
            {
                "number": "NL99901",
                "location": "Stationsplein",
                "geometry": {"type": "point", "coordinates": [5.1105, 52.0893]},
            }
        ]
    document = {"stations": stations, "measurements": [{"data": measurements}]}
    return json.dumps(document, indent=1).encode()


def measurement(**changes: Any) -> dict[str, Any]:
    return {
        "station_number": "NL99901",
        "formula": "NO2",
        "value": 31.4,
        "timestamp_measured": "2024-03-05T09:00:00+00:00",
        **changes,
    }


def record_line(data: bytes, index: int) -> int:
    """The line of the ``{`` of the index-th measurement record in an ``lmn`` file."""
    lines = data.decode().splitlines()
    starts = [
        n
        for n, text in enumerate(lines, start=1)
        if text.strip() == "{" and '"station_number"' in lines[n]
    ]
    return starts[index]


# -- the documented examples ---------------------------------------------------------


def test_the_documented_examples_hold_the_same_hours() -> None:
    luchtmeetnet = parse_reference((EXAMPLES / "reference-luchtmeetnet.json").read_bytes())
    plain = parse_reference((EXAMPLES / "reference.csv").read_bytes())
    assert luchtmeetnet.format is Format.LUCHTMEETNET
    assert plain.format is Format.CSV
    assert luchtmeetnet.stations == plain.stations
    assert luchtmeetnet.values == plain.values
    assert luchtmeetnet.skipped == {"O3": 1}
    assert luchtmeetnet.stations[0] == Station(
        "NL99901", "Voorbeeldstad-Stationsplein", 52.0893, 5.1105
    )
    by_key = {(v.station_id, v.metric, v.hour_start): v for v in plain.values}
    # timestamp_measured 10:00 names the end of the hour 09:00-10:00 (the default label).
    assert by_key["NL99901", Metric.NO2, T0 + timedelta(hours=1)].value_ugm3 == 28.9
    missing = by_key["NL99901", Metric.PM25, T0 + timedelta(hours=1)]
    assert (missing.value_ugm3, missing.valid) == (None, False)
    # 10:00+01:00 in the CSV is 09:00 UTC.
    assert by_key["NL99902", Metric.PM10, T0 + timedelta(hours=1)].value_ugm3 == 19.1


def test_the_hour_label_of_luchtmeetnet_stamps_is_chosen() -> None:
    data = lmn([measurement()])
    (end,) = parse_luchtmeetnet(data.decode()).values
    (start,) = parse_luchtmeetnet(data.decode(), hour_label=HourLabel.START).values
    assert end.hour_start == T0
    assert start.hour_start == T0 + timedelta(hours=1)


def test_a_minified_download_names_line_and_column_of_the_record() -> None:
    records = [measurement(station_number="NL1"), measurement(station_number="NL1", value="12")]
    document = {
        "stations": [{"number": "NL1", "location": "A", "geometry": {"coordinates": [5.0, 52.0]}}],
        "measurements": [{"data": records}],
    }
    text = json.dumps(document, separators=(",", ":"))
    with pytest.raises(ReferenceDataError) as caught:
        parse_luchtmeetnet(text)
    second = text.index("{", text.index('"station_number"') + 1)
    assert (caught.value.line, caught.value.column) == (1, second + 1)
    assert caught.value.field == "measurements[0].data[1].value"


def test_format_is_detected_by_content() -> None:
    assert parse_reference(b"  \n" + lmn([measurement()])).format is Format.LUCHTMEETNET
    assert parse_reference(csv_text(row())).format is Format.CSV
    assert parse_reference(b"\xef\xbb\xbf" + csv_text(row())).format is Format.CSV  # a BOM


def test_blank_lines_and_crlf_are_fine_and_the_same_hour_twice_is_one() -> None:
    text = (HEADER + "\r\n" + row() + "\r\n\r\n" + row() + "\r\n").encode()
    parsed = parse_reference(text)
    assert len(parsed.values) == 1
    pages = lmn([measurement(), measurement()])
    assert len(parse_reference(pages).values) == 1  # overlapping pages of a download


def test_a_station_with_no_measurement_needs_no_position() -> None:
    stations: list[dict[str, Any]] = [
        {"number": "NL99901", "location": "A", "geometry": {"coordinates": [5.1, 52.1]}},
        {"number": "NL99909", "location": "listed only"},
    ]
    parsed = parse_reference(lmn([measurement()], stations))
    assert [s.station_id for s in parsed.stations] == ["NL99901"]


# -- every bad input: one error naming the line and the field ------------------------

CSV_ERRORS = [
    # (rows, line, field, message)
    ((row(value="abc"),), 2, "value_ugm3", "'abc' is not a number"),
    ((row(value="nan"),), 2, "value_ugm3", "'nan' is not a number"),
    ((row(value="1e999"),), 2, "value_ugm3", "is not a number"),
    (
        (
            row(),
            row(hour="2024-03-05T09:00:00Z", value=""),
        ),
        3,
        "value_ugm3",
        "needs a value",
    ),
    ((row(metric="o3"),), 2, "metric", "unknown metric 'o3'"),
    ((row(metric="noise"),), 2, "metric", "unknown metric 'noise'"),
    ((row(hour="5 March 2024"),), 2, "hour_start", "not an ISO 8601 time"),
    ((row(hour="2024-03-05T08:00:00"),), 2, "hour_start", "has no UTC offset"),
    ((row(hour="2024-03-05T08:30:00Z"),), 2, "hour_start", "is not a whole hour"),
    ((row(hour="0024-03-05T08:00:00Z"),), 2, "hour_start", "outside 1970 to 2099"),
    ((row(lat="95"),), 2, "lat_deg", "not a latitude"),
    ((row(lon="-181"),), 2, "lon_deg", "not a longitude"),
    ((row(lat="0", lon="0"),), 2, "lat_deg", "missing position"),
    ((row(lat=""),), 2, "lat_deg", "'' is not a number"),
    ((row(station="NL 1"),), 2, "station_id", "is not a station id"),
    ((row(name=" "),), 2, "station_name", "1 to 200 characters"),
    ((row(valid="yes"),), 2, "valid", "not one of true, false"),
    ((row(), row(), row(value="30")), 4, "hour_start", "has another value at line 2"),
    ((row(), row(name="Elders", hour="2024-03-05T09:00:00Z")), 3, "station_id", "at line 2"),
    ((row() + ",extra",), 2, None, "9 fields, but the header names 8"),
    ((row(), 'NL1,"unterminated'), 3, None, "not valid CSV"),
]


@pytest.mark.parametrize(("rows", "line", "field", "message"), CSV_ERRORS)
def test_every_bad_csv_row_names_its_line_and_field(
    rows: tuple[str, ...], line: int, field: str | None, message: str
) -> None:
    with pytest.raises(ReferenceDataError, match=message) as caught:
        parse_reference(csv_text(*rows), Format.CSV)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert str(caught.value).startswith(f"line {line}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "no header"),
        (b"station_id,station_name\n", "missing column(s): lat_deg, lon_deg"),
        ((HEADER + ",vaule\n").encode(), "unknown column 'vaule'"),
        ((HEADER + ",valid\n").encode(), "column 'valid' appears twice"),
    ],
)
def test_a_bad_header_is_line_1(text: bytes, message: str) -> None:
    with pytest.raises(ReferenceDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_reference(text, Format.CSV)


def csv_text_latin1() -> bytes:
    return (HEADER + "\n" + row() + "\n" + row(name="Café") + "\n").encode("latin-1")


def test_latin1_is_refused_on_its_line() -> None:
    with pytest.raises(ReferenceDataError, match=r"^line 3: not UTF-8 text"):
        parse_reference(csv_text_latin1())


LMN_ERRORS = [
    # (measurement changes, field, message)
    ({"value": "12"}, "value", "expected a finite number or null"),
    ({"value": True}, "value", "expected a finite number or null"),
    ({"timestamp_measured": "yesterday"}, "timestamp_measured", "not an ISO 8601 time"),
    ({"timestamp_measured": "2024-03-05T09:00:00"}, "timestamp_measured", "no UTC offset"),
    ({"timestamp_measured": "2024-03-05T09:15:00Z"}, "timestamp_measured", "not a whole hour"),
    ({"timestamp_measured": 1709629200}, "timestamp_measured", "expected a string"),
    ({"station_number": "NL00000"}, "station_number", "'NL00000' is not in stations"),
    ({"formula": None}, "formula", "expected a string"),
]


@pytest.mark.parametrize(("changes", "member", "message"), LMN_ERRORS)
def test_every_bad_measurement_names_its_line_and_path(
    changes: dict[str, Any], member: str, message: str
) -> None:
    data = lmn(
        [measurement(), measurement(**{"timestamp_measured": "2024-03-05T10:00Z", **changes})]
    )
    with pytest.raises(ReferenceDataError, match=message) as caught:
        parse_reference(data)
    assert caught.value.line == record_line(data, 1)
    assert caught.value.field == f"measurements[0].data[1].{member}"


def test_a_measurement_without_a_value_is_refused() -> None:
    bare = measurement()
    del bare["value"]
    data = lmn([bare])
    with pytest.raises(ReferenceDataError, match="missing 'value'") as caught:
        parse_reference(data)
    assert caught.value.line == record_line(data, 0)


@pytest.mark.parametrize(
    ("stations", "field", "message"),
    [
        ([{"number": "NL99901", "location": "A"}], "stations[0]", "has 1 measurement.*no position"),
        (
            [{"number": "NL99901", "location": "A", "geometry": {"coordinates": [5.1]}}],
            "stations[0].geometry.coordinates",
            r"expected \[lon, lat\] numbers",
        ),
        (
            [{"number": "NL99901", "location": "A", "geometry": {"coordinates": [52.1, 95.0]}}],
            "stations[0].geometry.coordinates",
            "not a latitude",
        ),
        ([{"number": "NL99901"}], "stations[0]", "missing 'location'"),
        ([{"number": 99901, "location": "A"}], "stations[0].number", "expected a string"),
        (
            [
                {"number": "NL99901", "location": "A", "geometry": {"coordinates": [5.1, 52.1]}},
                {"number": "NL99901", "location": "B", "geometry": {"coordinates": [5.1, 52.1]}},
            ],
            "stations[1]",
            "listed twice",
        ),
    ],
)
def test_every_bad_station_names_its_line_and_path(
    stations: list[dict[str, Any]], field: str, message: str
) -> None:
    data = lmn([measurement()], stations)
    with pytest.raises(ReferenceDataError, match=message) as caught:
        parse_reference(data)
    assert caught.value.field == field
    assert caught.value.line > 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"stations": [],\n "measurements": [}', "not valid JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"stations": [], "measurements": [], "extra": 1}', "unknown member 'extra'"),
        (b'{"stations": []}', "missing 'measurements'"),
        (b'{"stations": [], "measurements": [{"pagination": {}}]}', "missing 'data'"),
        (b'{"stations": [], "measurements": {"data": []}}', "expected a list"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_a_malformed_document_is_refused_with_its_position(text: bytes, message: str) -> None:
    with pytest.raises(ReferenceDataError, match=message) as caught:
        parse_reference(text, Format.LUCHTMEETNET)
    assert caught.value.line >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_parse_or_raise_the_one_error(data: bytes) -> None:
    for fmt in (Format.CSV, Format.LUCHTMEETNET):
        try:
            parse_reference(data, fmt)
        except ReferenceDataError as exc:
            line = exc.line
        else:
            line = 1
        assert line >= 1


# -- the CSV writer and reader are inverses (hypothesis) -----------------------------

station_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:\-]{0,20}\Z")
names = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda s: 1 <= len(s) <= 200)
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def reference_files(draw: st.DrawFn) -> tuple[list[Station], list[ReferenceValue]]:
    ids = draw(st.lists(station_ids, min_size=1, max_size=4, unique=True))
    stations = []
    for station_id in ids:
        lat = draw(st.floats(-90, 90))
        lon = draw(st.floats(-180, 180))
        assume((lat, lon) != (0, 0))  # (0, 0) is refused as a missing position
        stations.append(Station(station_id, draw(names), lat, lon))
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ids),
                st.sampled_from([Metric.PM1, Metric.PM25, Metric.PM10, Metric.NO2]),
                st.integers(0, 24 * 365 * 60),
            ),
            unique=True,
            max_size=30,
        )
    )
    values = []
    for station_id, metric, hours in keys:
        valid = draw(st.booleans())
        value = draw(finite) if valid else draw(st.none() | finite)
        hour = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(hours=hours)
        values.append(ReferenceValue(station_id, metric, hour, value, valid))
    return stations, values


@settings(max_examples=200, deadline=None)
@given(reference_files())
def test_csv_round_trip(case: tuple[list[Station], list[ReferenceValue]]) -> None:
    stations, values = case
    parsed = parse_csv(format_csv(stations, values))
    assert parsed.values == tuple(
        sorted(values, key=lambda v: (v.station_id, v.metric, v.hour_start))
    )
    used = {v.station_id for v in values}
    assert parsed.stations == tuple(
        sorted((s for s in stations if s.station_id in used), key=lambda s: s.station_id)
    )
    for v in parsed.values:
        assert v.value_ugm3 is None or math.isfinite(v.value_ugm3)


# -- storing -------------------------------------------------------------------------


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM reference_stations), (SELECT count(*) FROM reference_values)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.postgres
def test_store_then_reimport_changes_nothing_then_a_revision_updates(
    migrated_database_url: str,
) -> None:
    parsed = parse_reference((EXAMPLES / "reference-luchtmeetnet.json").read_bytes())
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        first = store_reference(conn, parsed)
        assert (first.stations, first.inserted, first.updated, first.unchanged) == (2, 6, 0, 0)
        again = store_reference(conn, parse_reference((EXAMPLES / "reference.csv").read_bytes()))
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 6)
        assert _counts(conn) == (2, 6)

        revised = parse_reference(
            csv_text(
                row(
                    name="Voorbeeldstad-Stationsplein",
                    metric="pm25",
                    hour="2024-03-05T09:00:00Z",
                    value="11.5",
                ),
            )
        )
        report = store_reference(conn, revised)
        assert (report.inserted, report.updated, report.unchanged) == (0, 1, 0)
        assert _counts(conn) == (2, 6)
        hours = reference_values(conn, "NL99901", Metric.PM25, T0, T0 + timedelta(hours=2))
        assert [(h.hour_start, h.value_ugm3, h.valid) for h in hours] == [
            (T0, 9.2, True),
            (T0 + timedelta(hours=1), 11.5, True),
        ]
        assert conn.execute(
            "SELECT source FROM reference_values WHERE metric = 'pm25' ORDER BY hour_start"
        ).fetchall() == [("luchtmeetnet",), ("csv",)]

        summaries = station_summaries(conn)
        assert [s.station.station_id for s in summaries] == ["NL99901", "NL99902"]
        pm25, no2 = summaries[0].coverage  # in the order of Metric
        assert (no2.metric, no2.first_hour, no2.last_hour, no2.hours) == (
            Metric.NO2,
            T0,
            T0 + timedelta(hours=1),
            2,
        )
        assert (pm25.hours, pm25.valid_hours) == (2, 2)


@pytest.mark.postgres
def test_a_store_that_fails_half_way_stores_nothing(migrated_database_url: str) -> None:
    good = parse_reference((EXAMPLES / "reference.csv").read_bytes())
    # A value of a station the file does not hold: the stations are upserted first,
    # then the values' foreign key fails, and the stations go with them.
    broken = ReferenceFile(
        Format.CSV,
        good.stations,
        (*good.values, ReferenceValue("NL00000", Metric.NO2, T0, 1.0, True)),
    )
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            store_reference(conn, broken)
        assert _counts(conn) == (0, 0)
        store_reference(conn, good)  # the session is usable: the staging table is gone
        assert _counts(conn) == (2, 6)


@pytest.mark.postgres
def test_the_tables_refuse_what_the_parser_refuses(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reference_stations (station_id, name, lat_deg, lon_deg)"
            " VALUES ('NL1', 'A', 52, 5)"
        )
        bad = [
            ("station_id, name, lat_deg, lon_deg", "'NL 2', 'B', 52, 5"),
            ("station_id, name, lat_deg, lon_deg", "'NL2', 'B', 91, 5"),
            ("station_id, name, lat_deg, lon_deg", "'NL2', '', 52, 5"),
        ]
        for columns, values in bad:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"INSERT INTO reference_stations ({columns}) VALUES ({values})")
        value_columns = "station_id, metric, hour_start, value_ugm3, valid, source"
        for values in (
            "'NL1', 'o3', '2024-03-05T08:00Z', 1, true, 'csv'",
            "'NL1', 'no2', '2024-03-05T08:30Z', 1, true, 'csv'",
            "'NL1', 'no2', '2024-03-05T08:00Z', 'NaN', true, 'csv'",
            "'NL1', 'no2', '2024-03-05T08:00Z', 'Infinity', true, 'csv'",
            "'NL1', 'no2', '2024-03-05T08:00Z', NULL, true, 'csv'",
            "'NL1', 'no2', '2024-03-05T08:00Z', 1, true, 'ftp'",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"INSERT INTO reference_values ({value_columns}) VALUES ({values})")
        # An hour that is whole in UTC is whole whatever the session's time zone.
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")
        conn.execute(
            f"INSERT INTO reference_values ({value_columns})"
            " VALUES ('NL1', 'no2', '2024-03-05T08:00Z', NULL, false, 'csv')"
        )
