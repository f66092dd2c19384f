"""storage.merged_stats.hists_of_wire: merged histograms as PostgreSQL sends them in binary,
read into one array; anything else is a QueryError that says what was wrong. Also: a
metric and its covariate summarised in one call give what each alone gives."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from storage.exceptions import QueryError
from storage.merged_stats import (
    hists_of_wire,
    numbered,
    partials_of,
    raw_hists,
    stats_of,
    stats_of_partials,
)
from storage.selection import Selection
from stream.core.partials import HIST_BINS, Metric


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


def _random_columns(rng: np.random.Generator, rows: int) -> list[np.ndarray]:
    keys = np.sort(rng.choice(2**40, size=rows, replace=False)).astype(np.int64)
    n = rng.integers(0, 500, size=rows)
    total = rng.normal(20.0, 9.0, size=rows) * n
    sumsq = total**2 / np.maximum(n, 1) + rng.random(rows) * 50.0 * n
    low = rng.normal(5.0, 3.0, size=rows)
    high = low + rng.random(rows) * 40.0
    high[::7] = low[::7]  # readings all alike: no spread
    hist = rng.integers(0, 2**20, size=(rows, HIST_BINS))
    nan = np.full(rows, np.nan)
    return [
        keys, n, total, sumsq, low, high, rng.random(rows) * 1e6, rng.random(rows) * 3600,
        rng.random(rows) * 90.0, hist, rng.integers(0, 9, size=rows),
        rng.integers(0, 9, size=rows), rng.random(rows), rng.random(rows), nan, nan,
    ]  # fmt: skip


def test_one_summary_of_two_metrics_gives_what_each_alone_gives() -> None:
    """stats_of_partials summarises a metric and its covariate in one call: every row's
    figures are bit for bit those of stats_of on that metric alone, whatever the keys
    the two share, and parts of one metric are refused."""
    rng = np.random.default_rng(28)
    now = datetime(2030, 6, 1, tzinfo=UTC)
    sel = Selection(Metric.PM25, 10, 300, now - timedelta(hours=1), now)
    cov = dataclasses.replace(sel, metric=Metric.HUMIDITY)
    for rows, cov_rows in ((400, 300), (1, 0), (0, 5), (0, 0)):
        main, other = _random_columns(rng, rows), _random_columns(rng, cov_rows)
        other[0][: min(rows, cov_rows) // 2] = main[0][: min(rows, cov_rows) // 2]
        other[0] = np.sort(other[0])
        alone = [
            stats_of(main, sel, by_cell=True, window_s=300),
            stats_of(other, cov, by_cell=True, window_s=300),
        ]
        together = stats_of_partials(
            [
                partials_of(main, sel, by_cell=True, window_s=300),
                partials_of(other, cov, by_cell=True, window_s=300),
            ],
            by_cell=True,
        )
        for a, b in zip(alone, together, strict=True):
            assert a.dtype == b.dtype
            assert len(a) == len(b)
            assert a.tobytes() == b.tobytes()
        assert (together[0]["metric"] == int(Metric.PM25)).all()
        assert (together[1]["metric"] == int(Metric.HUMIDITY)).all()
    part = partials_of(_random_columns(rng, 3), sel, by_cell=True, window_s=300)
    with pytest.raises(QueryError, match="different metrics"):
        stats_of_partials([part, part], by_cell=True)
