"""Geo-binning agrees with h3's own functions, at every resolution."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.binning import (
    NO_CELL,
    cell_resolutions,
    cells_at,
    cells_by_resolution,
    check_resolutions,
    parent_cells,
)
from stream.core.exceptions import InvalidConfigError

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(lats, lons), min_size=1, max_size=30), res=st.integers(0, 15))
def test_cells_match_h3(points: list[tuple[float, float]], res: int) -> None:
    lat, lon = np.array(points).T
    cells = cells_at(lat, lon, res)
    assert cells.dtype == np.int64
    expected = [h3.str_to_int(h3.latlng_to_cell(a, b, res)) for a, b in points]
    assert cells.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(st.tuples(lats, lons), min_size=1, max_size=30),
    fine=st.integers(0, 15),
    data=st.data(),
)
def test_parents_by_bit_operations_match_h3(
    points: list[tuple[float, float]], fine: int, data: st.DataObject
) -> None:
    coarse = data.draw(st.integers(0, fine))
    lat, lon = np.array(points).T
    cells = cells_at(lat, lon, fine)
    expected = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), coarse)) for c in cells.tolist()]
    assert parent_cells(cells, coarse).tolist() == expected
    assert set(cell_resolutions(parent_cells(cells, coarse)).tolist()) == {coarse}


def test_parents_of_pentagon_children_match_h3() -> None:
    for pentagon in h3.get_pentagons(2):
        for child in h3.cell_to_children(pentagon, 6)[:50]:
            as_int = np.array([h3.str_to_int(child)])
            for r in range(7):
                assert parent_cells(as_int, r)[0] == h3.str_to_int(h3.cell_to_parent(child, r))


def test_positions_that_cannot_be_placed_get_no_cell() -> None:
    lat = np.array([np.nan, 91.0, 52.37, 10.0])
    lon = np.array([4.9, 4.9, np.inf, -181.0])
    assert cells_at(lat, lon, 10).tolist() == [NO_CELL] * 4
    assert parent_cells(np.array([NO_CELL]), 5).tolist() == [NO_CELL]


def test_coarser_cells_are_the_parents_of_the_finest_cell() -> None:
    # H3 children do not tile their parent exactly, so a point's own res-7 cell can
    # differ from the res-7 parent of its res-10 cell. Parents are what we want:
    # a coarse cell then holds exactly the data of its fine cells.
    lat, lon = np.array([52.37, 51.92]), np.array([4.89, 4.48])
    cells = cells_by_resolution(lat, lon, [10, 7, 8])
    assert sorted(cells) == [7, 8, 10]
    assert cells[10].tolist() == cells_at(lat, lon, 10).tolist()
    for r in (7, 8):
        fine = [h3.int_to_str(c) for c in cells[10].tolist()]
        expected = [h3.str_to_int(h3.cell_to_parent(c, r)) for c in fine]
        assert cells[r].tolist() == expected


def test_bad_resolutions_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="between 0 and 15"):
        check_resolutions([16])
    with pytest.raises(InvalidConfigError, match="at least one"):
        check_resolutions([])
    with pytest.raises(InvalidConfigError, match="coarser cells"):
        parent_cells(cells_at(np.array([52.0]), np.array([5.0]), 7), 9)
