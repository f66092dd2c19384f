"""storage.merged_stats.hists_of_wire: merged histograms as PostgreSQL sends them in binary,
read into one array; anything else is a QueryError that says what was wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

from storage.cell_stats import floats_at
from storage.exceptions import QueryError
from storage.merged_stats import hists_of_wire, numbered, raw_hists
from storage.pair_rows import packed, pair_rows
from stream.core.partials import HIST_BINS


def _wire(conn: psycopg.Connection[object], arrays: list[str]) -> list[bytes]:
    with conn.cursor(binary=True) as cur:
        raw_hists(cur)
        rows = cur.execute(
            "SELECT a::int8[] FROM unnest(%s::text[]) WITH ORDINALITY u(a, i) ORDER BY i",
            (arrays,),
        ).fetchall()
    return [row[0] for row in rows]


def test_histograms_from_the_server_s_binary_arrays(postgres_url: str) -> None:
    rng = np.random.default_rng(5)
    hists = rng.integers(0, 2**40, size=(7, HIST_BINS))
    hists[2] = 0
    hists[3, 0] = 2**62  # bigint sums of many windows
    texts = ["{" + ",".join(map(str, h)) + "}" for h in hists.tolist()]
    with psycopg.connect(postgres_url) as conn:
        got = hists_of_wire(_wire(conn, texts))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, hists)
        assert hists_of_wire([]).shape == (0, HIST_BINS)
        short = _wire(conn, ["{1,2,3}"])
        nulls = _wire(conn, ["{" + ",".join(["1"] * (HIST_BINS - 1)) + ",NULL}"])
        two_d = _wire(conn, ["{" + ",".join(["{1,2}"] * (HIST_BINS // 2)) + "}"])
    # A 404-byte array of zeros has a histogram's size but no array's header.
    for bad in (short, nulls, two_d, [bytes(20 + 12 * HIST_BINS)]):
        with pytest.raises(QueryError, match=f"not one-dimensional arrays of {HIST_BINS} bigints"):
            hists_of_wire(bad)


def test_numbered_parameters_keep_one_number_per_name(postgres_url: str) -> None:
    query = numbered(b"SELECT %(a)s::int + %(b)s::int * %(a)s::int, %(c)s::text")
    assert query.sql == b"SELECT $1::int + $2::int * $1::int, $3::text"
    assert query.names == ("a", "b", "c")
    args = query.args({"c": "x", "b": 3, "a": 2, "unused": 0})
    with psycopg.connect(postgres_url) as conn, psycopg.RawCursor(conn) as cur:
        assert cur.execute(query.sql, args).fetchone() == (8, "x")
    with pytest.raises(QueryError, match="needs parameters b, c"):
        query.args({"a": 1})
    with pytest.raises(QueryError, match="names no parameter"):
        numbered(b"SELECT %(a)s, %s")
    with pytest.raises(QueryError, match="names no parameter"):
        numbered(b"SELECT 7 %% 2")


def test_floats_at_converts_only_the_rows_taken() -> None:
    column = (1.5, None, 2**53 + 1, -0.0, None, 3)
    np.testing.assert_array_equal(
        floats_at(column, np.array([4, 0, 2, 3])), [np.nan, 1.5, float(2**53 + 1), -0.0]
    )
    assert np.signbit(floats_at(column, np.array([3])))[0]
    one = floats_at(column, np.array([1]))
    assert one.shape == (1,)
    assert np.isnan(one[0])
    empty = floats_at(column, np.array([], dtype=np.int64))
    assert empty.shape == (0,)
    assert empty.dtype == np.float64
    assert floats_at((), np.array([], dtype=np.int64)).shape == (0,)


_PAIR_ROW_SQL = (
    "SELECT 7::bigint, 3::bigint, 1.5::float8, 2.5::float8, 0.1::float8, 0.9::float8,"
    " 0::float8, 0::float8, 'NaN'::float8, array_fill(4::bigint, ARRAY[32]), 2::bigint,"
    " 1::bigint, 52.1::float8, 5.1::float8, 3::float8, {ride_w_sq}, 1::bigint,"
    " 70::float8, 4900::float8, 70::float8, 70::float8, 0::float8, 0::float8,"
    " 'NaN'::float8"
)


def _packed(conn: psycopg.Connection[Any], query: str) -> tuple[int, bytes]:
    row = conn.execute(packed(query)).fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


def test_pair_rows_packed_in_one_value(postgres_url: str) -> None:
    """storage.pair_rows.packed sends PAIR_ROWS' columns as one bytea that pair_rows
    reads with one frombuffer; a NULL field (a column the query did not give a value)
    drops its row from string_agg and is a QueryError, not a row lost."""
    with psycopg.connect(postgres_url) as conn:
        one = _PAIR_ROW_SQL.format(ride_w_sq="9::float8")
        rows = pair_rows(
            *_packed(conn, f"{one} UNION ALL {one.replace('7::bigint', '8::bigint', 1)}")
        )
        assert rows["key"].tolist() == [7, 8]
        assert rows["n"].tolist() == [3, 3]
        assert rows["hist"]["bins"]["value"].tolist() == [[4] * HIST_BINS] * 2
        assert rows["ride_w_sq"].tolist() == [9.0, 9.0]
        assert np.isnan(rows["lamax_db"][0])
        assert rows["c_sumsq"].tolist() == [4900.0, 4900.0]
        count, data = _packed(conn, f"{one} LIMIT 0")
        assert (count, len(pair_rows(count, data))) == (0, 0)
        with_null = _packed(
            conn, f"{one} UNION ALL " + _PAIR_ROW_SQL.format(ride_w_sq="NULL::float8")
        )
    with pytest.raises(QueryError, match="NULL or a field"):
        pair_rows(*with_null)
    with pytest.raises(QueryError, match="not of their fixed layout"):
        pair_rows(1, data + b"\x00")
