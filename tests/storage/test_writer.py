"""The batch writer against the real PostgreSQL: exactly-once effect, late data, noise energy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from h3.api import basic_int as h3int

from storage.exceptions import BatchError
from storage.writer import WriteResult, dedupe, join_plans, plan_write, write_batch
from stream.core.partials import HIST_BINS, PARTIAL_DTYPE, PRESENCE_DTYPE, Metric
from tests.storage.storage_factories import T0_MS, make_readings
from tests.storage.storage_reference import (
    TABLES,
    ReferenceAggregate,
    assert_partials_equal,
    assert_ride_shares_equal,
    cell_windows_of,
    merge,
    presence,
    presence_ride_counts,
    reading_partials,
    ride_counts,
    ride_shares,
    snapshot,
    stored_ride_counts,
    stored_ride_shares,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


def test_a_batch_is_stored_with_its_aggregates(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(200)
    agg = ReferenceAggregate()
    result = write_batch(conn, batch, agg)
    assert result.inserted == 200
    assert result.duplicates == 0
    expected = agg(batch)[0]
    assert result.partials_merged == cell_windows_of(expected)
    assert_partials_equal(conn, expected)
    row = conn.execute(
        "SELECT count(*), count(no2_ugm3), min(ts), max(received_at) FROM readings"
    ).fetchone()
    assert row is not None
    assert row[0] == 200
    assert row[1] == 0  # NaN became NULL
    assert int(row[2].timestamp() * 1000) == T0_MS
    n_presence = conn.execute("SELECT count(*) FROM window_presence").fetchone()
    assert n_presence == (len(presence(batch, (8, 10), (60, 3600))),)


def _hour_key(res: int, batch: np.ndarray) -> tuple[int, int, int, int]:
    """The ride-count key of the hour window and res-``res`` cell of ``batch``'s first reading."""
    first = batch[0]
    cell = h3int.cell_to_parent(int(first["cell"]), res)
    return (res, 3600, cell, int(first["ts_ms"]) // 3_600_000 * 3_600_000)


def test_ride_counts_are_the_distinct_rides_of_the_new_presence_rows(
    conn: psycopg.Connection[Any],
) -> None:
    # Three bikes ride the same street a minute apart, two of them again an hour later.
    first = [
        make_readings(120, kit_id=k, ride_id=10 + k, seed=k, t0_ms=T0_MS + k * 60_000)
        for k in (1, 2, 3)
    ]
    again = [
        make_readings(
            120, kit_id=k, boot_id=2, ride_id=20 + k, seed=k, t0_ms=T0_MS + 3_600_000 + k * 60_000
        )
        for k in (1, 2)
    ]
    everything = np.concatenate(first + again)
    agg = ReferenceAggregate()
    # Overlapping slices, a replay of the whole, and a batch of nothing new.
    for a, b in [(0, 150), (100, 400), (0, 600), (350, 600), (590, 600)]:
        write_batch(conn, everything[a:b], agg)

    counts = stored_ride_counts(conn)
    assert counts == ride_counts(presence(everything, (8, 10), (60, 3600)))
    assert counts == presence_ride_counts(conn)
    # Each ride's readings and noise energy in a cell-window add up over the batches
    # that brought them, every reading once (replays and overlaps add nothing).
    assert_ride_shares_equal(
        stored_ride_shares(conn), ride_shares(presence(everything, (8, 10), (60, 3600)))
    )
    day = T0_MS // 86_400_000
    assert counts[_hour_key(8, first[0])] == (3, [day])
    assert counts[_hour_key(8, again[0])] == (2, [day])


def test_a_ride_seen_again_with_another_day_adds_the_day_not_a_ride(
    conn: psycopg.Connection[Any],
) -> None:
    # The day of a ride is fixed by its id and the configured time zone; if that
    # setting changes between writes, one ride shows up with two days.
    ride = make_readings(60)
    other = make_readings(30, kit_id=2, ride_id=2)
    agg = ReferenceAggregate(resolutions=(8,), windows_s=(3600,))

    def days_later(by: tuple[int, ...]) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        def shifted(enriched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            partials, rows = agg(enriched)
            moved = [rows.copy() for _ in by]
            for m, d in zip(moved, by, strict=True):
                m["day"] += d
            return partials, np.concatenate(moved)

        return shifted

    write_batch(conn, ride[:30], agg)
    write_batch(conn, ride[30:], days_later((1,)))  # stored earlier with another day
    write_batch(conn, other, days_later((0, 2)))  # two days for one ride in one batch
    day = T0_MS // 86_400_000
    counts = stored_ride_counts(conn)
    assert counts[_hour_key(8, ride)] == (2, [day, day + 1, day + 2])
    assert counts == presence_ride_counts(conn)


def test_a_stored_reading_round_trips_exactly(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(3)
    batch["satellites"][1] = -1
    batch["hdop"][1] = np.nan
    batch["cell"][2] = 0
    write_batch(conn, batch, ReferenceAggregate())
    rows = conn.execute(
        "SELECT kit_id, boot_id, seq, idx, (extract(epoch FROM ts) * 1000)::bigint, lat_deg,"
        " satellites, hdop, pm25_ugm3, cell, status, qa_flags"
        " FROM readings ORDER BY idx"
    ).fetchall()
    assert rows[0][:5] == (1, 1, 0, 0, T0_MS)
    assert rows[0][5] == batch["lat_deg"][0]
    assert rows[0][8] == pytest.approx(float(batch["pm25_ugm3"][0]), rel=1e-7)
    assert rows[1][6:8] == (None, None)
    assert rows[2][9] is None


def test_replaying_a_batch_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(300)
    write_batch(conn, batch, ReferenceAggregate())
    before = snapshot(conn)
    agg = ReferenceAggregate()
    result = write_batch(conn, batch, agg)
    assert result == WriteResult(inserted=0, duplicates=300, partials_merged=0)
    assert agg.calls == []  # nothing new, nothing aggregated
    assert snapshot(conn) == before


def test_overlapping_batches_count_every_reading_once(conn: psycopg.Connection[Any]) -> None:
    everything = make_readings(500)
    agg = ReferenceAggregate()
    results = [
        write_batch(conn, everything[a:b], agg)
        for a, b in [(0, 200), (100, 300), (150, 500), (0, 500), (499, 500)]
    ]
    assert [r.inserted for r in results] == [200, 100, 200, 0, 0]
    assert sum(len(c) for c in agg.calls) == 500
    assert_partials_equal(conn, ReferenceAggregate()(everything)[0])

    # And the same readings in one batch, in another database state, give the same tables.
    conn.execute("TRUNCATE readings, cell_windows, window_presence, window_rides, h3_cells")
    before = snapshot(conn)
    assert before == {t: [] for t in TABLES}


def test_a_plan_aggregated_outside_the_transaction_is_used_only_if_every_reading_is_new(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(400)
    planner, writer = ReferenceAggregate(), ReferenceAggregate()
    result = write_batch(conn, plan_write(everything[:300], planner), writer)
    assert result == WriteResult(
        inserted=300,
        duplicates=0,
        partials_merged=cell_windows_of(ReferenceAggregate()(everything[:300])[0]),
    )
    assert [len(c) for c in planner.calls] == [300]
    assert writer.calls == []  # all new: the plan's aggregates were right and were used
    assert_partials_equal(conn, ReferenceAggregate()(everything[:300])[0])

    # A redelivered plan: nothing new, its aggregates must not be merged again.
    before = snapshot(conn)
    assert write_batch(conn, plan_write(everything[:300], planner), writer) == WriteResult(
        inserted=0, duplicates=300, partials_merged=0
    )
    assert writer.calls == []
    assert snapshot(conn) == before

    # Overlapping: only the 100 new readings are aggregated, in the transaction.
    result = write_batch(conn, plan_write(everything[200:], planner), writer)
    assert (result.inserted, result.duplicates) == (100, 100)
    assert [len(c) for c in writer.calls] == [100]
    assert_partials_equal(conn, ReferenceAggregate()(everything)[0])
    assert stored_ride_counts(conn) == ride_counts(presence(everything, (8, 10), (60, 3600)))


def test_joined_plans_merge_their_aggregates_unless_a_reading_repeats(
    conn: psycopg.Connection[Any],
) -> None:
    everything = make_readings(300)
    agg = ReferenceAggregate()
    parts = [plan_write(everything[a:b], agg) for a, b in [(0, 120), (120, 250), (250, 300)]]
    joined = join_plans(parts)
    assert joined.aggregates is not None
    assert len(joined.rows) == 300
    writer = ReferenceAggregate()
    assert write_batch(conn, joined, writer).inserted == 300
    assert writer.calls == []
    assert_partials_equal(conn, ReferenceAggregate()(everything)[0])
    assert stored_ride_counts(conn) == ride_counts(presence(everything, (8, 10), (60, 3600)))

    # A reading in two chunks (a redelivery between them): the chunks' aggregates
    # would count it twice, so the write aggregates what is new instead.
    conn.execute("TRUNCATE readings, cell_windows, window_presence, window_rides, h3_cells")
    overlapping = join_plans([plan_write(everything[:200], agg), plan_write(everything[150:], agg)])
    assert overlapping.aggregates is None
    assert overlapping.repeated == 50
    result = write_batch(conn, overlapping, writer)
    assert (result.inserted, result.duplicates) == (300, 50)
    assert [len(c) for c in writer.calls] == [300]
    assert_partials_equal(conn, ReferenceAggregate()(everything)[0])


def test_duplicates_within_a_batch_are_stored_once(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(50)
    doubled = np.concatenate([batch, batch[::-1], batch[:10]])
    result = write_batch(conn, doubled, ReferenceAggregate())
    assert result.inserted == 50
    assert result.duplicates == 60
    assert_partials_equal(conn, ReferenceAggregate()(batch)[0])


def test_late_data_lands_in_its_own_windows(conn: psycopg.Connection[Any]) -> None:
    now = make_readings(120, t0_ms=T0_MS + 6 * 3_600_000, seed=1)
    write_batch(conn, now, ReferenceAggregate())
    # A bike that was offline uploads readings six hours and three days old.
    late = make_readings(120, kit_id=2, seed=2, received_ms=T0_MS + 6 * 3_600_000)
    older = make_readings(60, kit_id=3, seed=3, t0_ms=T0_MS - 3 * 86_400_000)
    write_batch(conn, late, ReferenceAggregate())
    write_batch(conn, older, ReferenceAggregate())
    everything = np.concatenate([now, late, older])
    assert_partials_equal(conn, ReferenceAggregate()(everything)[0])
    days = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
    ).fetchone()
    assert days == (2,)


def test_noise_is_averaged_on_energy(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(2, step_ms=10_000)
    batch["noise_laeq_db"] = [60.0, 80.0]
    batch["noise_lamax_db"] = [70.0, 85.0]
    agg = ReferenceAggregate(resolutions=(8,), windows_s=(60,))
    write_batch(conn, batch[:1], agg)
    write_batch(conn, batch[1:], agg)
    row = conn.execute(
        "SELECT 10 * log(energy / duration_s), lamax_db, n FROM window_partials WHERE metric = %s",
        (int(Metric.NOISE),),
    ).fetchone()
    assert row is not None
    assert round(row[0], 1) == 77.0
    assert row[1:] == (85.0, 2)


def test_a_failing_aggregation_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    def broken(_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_batch(conn, make_readings(10), broken)
    assert snapshot(conn)["readings"] == []
    # The same batch later goes through completely.
    assert write_batch(conn, make_readings(10), ReferenceAggregate()).inserted == 10


def test_wrong_shapes_are_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(BatchError, match="ENRICHED_DTYPE"):
        write_batch(conn, np.zeros(3, dtype=PARTIAL_DTYPE), ReferenceAggregate())

    def duplicated(enriched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        partials = reading_partials(enriched, (8,), (60,))
        return partials, np.zeros(0, PRESENCE_DTYPE)

    with pytest.raises(BatchError, match="several partials for one key"):
        write_batch(conn, make_readings(5), duplicated)
    assert write_batch(conn, make_readings(0), ReferenceAggregate()) == WriteResult(0, 0, 0)


def test_dedupe_keeps_first_occurrence_sorted_by_key() -> None:
    batch = make_readings(20)
    shuffled = batch[np.random.default_rng(3).permutation(20)]
    twice = np.concatenate([shuffled, shuffled])
    twice["pm25_ugm3"][20:] = -1  # the second copies must lose
    out = dedupe(twice)
    assert len(out) == 20
    assert (out["pm25_ugm3"] >= 0).all()
    assert (np.diff(out["seq"] * 100 + out["idx"].astype(np.int64)) > 0).all()


def test_merging_reference_partials_matches(conn: psycopg.Connection[Any]) -> None:
    # Sanity of the test helper itself: merge is idempotent on merged partials.
    batch = make_readings(30)
    merged = merge(reading_partials(batch, (8,), (60,)))
    again = merge(merged)
    assert (merged["n"] == again["n"]).all()


def test_both_paths_store_absent_values_as_null(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(20)
    batch["hdop"][::2] = np.nan
    batch["satellites"][::3] = -1
    batch["cell"][::5] = 0
    # Rows 0-9 go the fast path (a plain COPY); 5-19 overlap them, so the rest are
    # found through the staging table.
    assert write_batch(conn, batch[:10], ReferenceAggregate()).inserted == 10
    assert write_batch(conn, batch[5:], ReferenceAggregate()).inserted == 10
    rows = conn.execute(
        "SELECT hdop IS NULL, satellites IS NULL, cell IS NULL FROM readings ORDER BY seq, idx"
    ).fetchall()
    assert rows == [(i % 2 == 0, i % 3 == 0, i % 5 == 0) for i in range(20)]


def test_inside_the_callers_transaction(conn: psycopg.Connection[Any]) -> None:
    # The embedded sink writes rejects and readings in one transaction of its own.
    batch = make_readings(30)
    with conn.transaction():
        assert write_batch(conn, batch[:20], ReferenceAggregate()).inserted == 20
        assert write_batch(conn, batch, ReferenceAggregate()).inserted == 10  # fell back, went on
    assert snapshot(conn)["readings"] != []

    def write_then_fail() -> None:
        with conn.transaction():
            write_batch(conn, make_readings(5, kit_id=9), ReferenceAggregate())
            raise RuntimeError("the caller fails after the write")

    with pytest.raises(RuntimeError, match="caller"):
        write_then_fail()
    assert conn.execute("SELECT count(*) FROM readings WHERE kit_id = 9").fetchone() == (0,)


def test_impossible_times_are_refused_before_the_database(conn: psycopg.Connection[Any]) -> None:
    batch = make_readings(5)
    batch["ts_ms"][3] = 10**15  # year 33658
    with pytest.raises(BatchError, match=r"1 reading\(s\) have ts_ms outside 1970..9999.*idx 3"):
        write_batch(conn, batch, ReferenceAggregate())
    batch = make_readings(5)
    batch["received_ms"][:] = -1
    with pytest.raises(BatchError, match="received_ms"):
        write_batch(conn, batch, ReferenceAggregate())
    assert snapshot(conn)["readings"] == []


def test_a_metric_seen_on_one_side_only_merges_into_the_cell_window(
    conn: psycopg.Connection[Any],
) -> None:
    # cell_windows keeps a metric without readings as n = 0 and NULLs; merging a batch
    # that has it into a row that has not (and the other way) must take the side that
    # has it, for the extremes and the histogram alike.
    agg = ReferenceAggregate()
    first = make_readings(120, seed=1)  # NO2 absent (NaN) from every reading
    second = make_readings(120, seq0=12, t0_ms=T0_MS + 120_000, seed=2)
    second["no2_ugm3"] = np.linspace(5.0, 60.0, 120)
    second["pm10_ugm3"] = np.nan
    write_batch(conn, first, agg)
    write_batch(conn, second, agg)
    expected = merge(np.concatenate([agg(first)[0], agg(second)[0]]))
    assert {int(m) for m in expected["metric"]} >= {Metric.NO2, Metric.PM10}
    assert_partials_equal(conn, expected)
    merged = conn.execute(
        "SELECT count(*) FROM cell_windows WHERE no2_n > 0 AND pm10_n > 0"
    ).fetchone()
    assert merged is not None
    assert merged[0] > 0  # the hour windows hold both


def test_histograms_add_bin_by_bin_and_only_of_one_length(conn: psycopg.Connection[Any]) -> None:
    # The writer adds histograms with an expression unrolled over HIST_BINS bins; every
    # histogram read back has them all. (Bin-by-bin sums over overlapping batches: the
    # tests above compare every histogram.)
    first, second = make_readings(40), make_readings(40, seq0=4, t0_ms=T0_MS + 40_000)
    agg = ReferenceAggregate()
    write_batch(conn, first, agg)
    write_batch(conn, second, agg)
    assert_partials_equal(conn, merge(np.concatenate([agg(first)[0], agg(second)[0]])))
    hists = [h for (h,) in conn.execute("SELECT hist FROM window_partials").fetchall()]
    assert {len(h) for h in hists} == {HIST_BINS}


CELL = h3int.latlng_to_cell(52.09, 5.12, 10)


def one_histogram(bins: dict[int, int]) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """An aggregation that returns one PM2.5 partial of CELL's first minute, whatever it is
    given, with ``bins`` (bin: count) as its histogram."""

    def aggregate(_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.zeros(1, PARTIAL_DTYPE)
        p["metric"], p["resolution"], p["cell"] = Metric.PM25, 10, CELL
        p["window_s"], p["window_start_ms"] = 60, T0_MS
        p["min"], p["max"], p["lamax_db"] = 1.0, 1.0, np.nan
        for b, count in bins.items():
            p["hist"][0, b] = count
        p["n"] = p["hist"].sum()
        return p, np.zeros(0, PRESENCE_DTYPE)

    return aggregate


def stored_histogram(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """CELL's PM2.5 histogram: as stored (offset, counts) and as read (all bins)."""
    row = conn.execute(
        "SELECT pm25_hist_offset, pm25_hist, bikesense_hist_dense(pm25_hist_offset, pm25_hist)"
        " FROM cell_windows WHERE cell = %s",
        (CELL,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def dense(bins: dict[int, int]) -> list[int]:
    return [bins.get(b, 0) for b in range(HIST_BINS)]


def test_histograms_are_stored_from_their_first_counted_bin_to_their_last(
    conn: psycopg.Connection[Any],
) -> None:
    batches = iter(make_readings(10, seq0=k, t0_ms=T0_MS + k * 10_000) for k in range(0, 40, 4))
    write_batch(conn, next(batches), one_histogram({3: 2, 5: 1}))
    assert stored_histogram(conn) == (3, [2, 0, 1], dense({3: 2, 5: 1}))
    # Merged with one inside it, one reaching further on each side, one at both ends.
    write_batch(conn, next(batches), one_histogram({4: 6}))
    assert stored_histogram(conn) == (3, [2, 6, 1], dense({3: 2, 4: 6, 5: 1}))
    write_batch(conn, next(batches), one_histogram({0: 7, 9: 1}))
    want = {0: 7, 3: 2, 4: 6, 5: 1, 9: 1}
    assert stored_histogram(conn) == (0, dense(want)[:10], dense(want))
    write_batch(conn, next(batches), one_histogram({HIST_BINS - 1: 5}))
    want[HIST_BINS - 1] = 5
    assert stored_histogram(conn) == (0, dense(want), dense(want))
    # A histogram that starts and ends in one bin; merged into from a side without one.
    write_batch(conn, next(batches), one_histogram({}))
    assert stored_histogram(conn) == (0, dense(want), dense(want))


def histogram_at(
    bins: dict[int, int], window_start_ms: int
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """:func:`one_histogram`, in CELL's minute from ``window_start_ms``."""
    of_cell = one_histogram(bins)

    def aggregate(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, presence = of_cell(rows)
        p["window_start_ms"] = window_start_ms
        return p, presence

    return aggregate


#: Pairs of histograms (stored, then merged into it) whose merged spans fall on either
#: side of each length the merge has an expression of its own for
#: (storage.cellwindows.HIST_MERGE_SPANS), at both ends of the bins, overlapping,
#: one inside the other and apart.
SPAN_CASES = [
    ({0: 1}, {0: 2}),
    ({31: 4}, {31: 1}),
    ({5: 1}, {6: 2}),
    ({0: 3, 7: 1}, {2: 5}),
    ({1: 1}, {9: 2}),
    ({8: 2}, {0: 1, 3: 3}),
    ({0: 1}, {15: 1}),
    ({16: 2, 31: 1}, {20: 3}),
    ({3: 1, 19: 2}, {10: 4}),
    ({0: 1, 23: 1}, {4: 2, 12: 9}),
    ({30: 2}, {6: 1}),
    ({24: 1}, {0: 6}),
    ({0: 1, 31: 2}, {15: 3, 16: 4}),
    ({2: 1, 29: 1}, {0: 2, 31: 7}),
]


def test_histograms_merge_over_every_span_length(conn: psycopg.Connection[Any]) -> None:
    for k, (stored, added) in enumerate(SPAN_CASES):
        start_ms = T0_MS + k * 60_000
        rows = make_readings(20, seq0=2 * k, t0_ms=T0_MS + k * 20_000)
        write_batch(conn, rows[:10], histogram_at(stored, start_ms))
        write_batch(conn, rows[10:], histogram_at(added, start_ms))
        want = {b: stored.get(b, 0) + added.get(b, 0) for b in {*stored, *added}}
        first, last = min(want), max(want)
        row = conn.execute(
            "SELECT pm25_hist_offset, pm25_hist FROM cell_windows"
            " WHERE cell = %s AND window_s = 60"
            " AND window_start = 'epoch'::timestamptz + %s * interval '1 millisecond'",
            (CELL, start_ms),
        ).fetchone()
        assert row == (first, dense(want)[first : last + 1]), (stored, added)


def test_a_partial_with_readings_and_an_empty_histogram_is_refused(
    conn: psycopg.Connection[Any],
) -> None:
    def empty(_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, presence = one_histogram({2: 1})(_)
        p["hist"] = 0
        return p, presence

    with pytest.raises(BatchError, match=r"pm25 partial counts readings \(n > 0\) in no histogram"):
        write_batch(conn, make_readings(10), empty)
    assert snapshot(conn)["readings"] == []


@pytest.mark.parametrize(
    ("n", "offset", "hist"),
    [
        (1, None, [1]),  # a histogram without its offset
        (1, 0, None),  # readings without a histogram
        (0, 0, [1]),  # a histogram without readings
        (1, 31, [1, 1]),  # past the last bin
        (1, -1, [1]),
        (1, 0, [0, 1]),  # not cut at a counted bin
        (1, 0, [1, 0]),
        (1, 0, []),
        (1, 0, [[1], [1]]),  # not one-dimensional
    ],
)
def test_the_table_refuses_a_histogram_out_of_its_form(
    conn: psycopg.Connection[Any], n: int, offset: int | None, hist: list[Any] | None
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="cell_windows_pm25_hist"):
        conn.execute(
            "INSERT INTO cell_windows (resolution, window_s, window_start, cell, pm25_n,"
            " pm25_hist_offset, pm25_hist) VALUES (10, 60, now(), 1, %s, %s, %s)",
            (n, offset, hist),
        )


def test_the_table_refuses_a_histogram_indexed_from_elsewhere(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="cell_windows_pm25_hist"):
        conn.execute(
            "INSERT INTO cell_windows (resolution, window_s, window_start, cell, pm25_n,"
            " pm25_hist_offset, pm25_hist) VALUES (10, 60, now(), 1, 1, 0, '[2:2]={1}')"
        )


def test_presence_rows_stored_before_their_shares_were_kept_stay_unknown(
    conn: psycopg.Connection[Any],
) -> None:
    # A row from before migration 0112 has no readings and no noise energy (NULL). A
    # later batch of the same ride in the cell-window must not turn it into a count of
    # the later readings alone: it stays NULL, unknown (api/stats.py then assumes the
    # ride may carry the whole mean).
    ride = make_readings(120)
    agg = ReferenceAggregate(resolutions=(8,), windows_s=(3600,))
    write_batch(conn, ride[:60], agg)
    conn.execute("UPDATE window_presence SET readings = NULL, noise_energy = NULL")
    write_batch(conn, ride[60:], agg)
    rows = conn.execute("SELECT readings, noise_energy FROM window_presence").fetchall()
    assert rows == [(None, None)]
    other = make_readings(30, kit_id=2, ride_id=2)
    write_batch(conn, other, agg)
    shares = stored_ride_shares(conn)
    assert shares[next(k for k in shares if k[4] == 2)][0] == 30


def test_ride_counts_kept_before_per_metric_counts_count_every_ride_for_every_metric(
    conn: psycopg.Connection[Any],
) -> None:
    # A window_rides row from before migration 0103 has no per-metric counts (NULL):
    # each of its rides counted for every metric. A later ride adds to those, metric by
    # metric, and a later batch of a ride already counted adds nothing.
    agg = ReferenceAggregate(resolutions=(8,), windows_s=(3600,))
    ride = make_readings(60)
    write_batch(conn, ride[:30], agg)
    conn.execute("UPDATE window_rides SET metric_rides = NULL")
    write_batch(conn, ride[30:], agg)
    write_batch(conn, make_readings(30, kit_id=2, ride_id=2, seed=2), agg)
    rows = conn.execute("SELECT rides, metric_rides FROM window_rides").fetchall()
    assert rows
    for rides, metric_rides in rows:
        assert rides == 2
        # The second ride measured every metric the table counts (bits 1-7 of presence).
        measured = conn.execute(
            "SELECT bit_or(metrics) FROM window_presence WHERE ride_id = 2"
        ).fetchone()[0]  # type: ignore[index]
        assert metric_rides == [1 + ((measured >> b) & 1) for b in range(1, 8)]
