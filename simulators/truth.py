"""The record of a run: every reading with its truth, every frame with its fate.

End-to-end tests compare what the pipeline stored with this record:

- :attr:`TruthRecord.readings` has one row per reading identity
  (kit_id, boot_id, seq, idx) the fleet produced, with the true values at the
  true place and time, the values as encoded (already rounded to the wire
  resolution, so they equal what a decoder returns), the model's bias and
  sigma for each, and :class:`~simulators.truthflags.TruthFlag` bits;
- :attr:`TruthRecord.frames` has one row per frame put on the wire (copies of
  duplicates count once, with ``copies`` = 2), with its fate;
- :meth:`TruthRecord.expected_aggregates` gives, per H3 cell and window, the
  mean a correct pipeline stores (of the measured values) next to the true
  mean over the same readings and a bound on their difference.

Readings are binned as the pipeline must bin them: by the *reported* position
and timestamp. The true value of each reading is the field at its *true*
position and time, so the difference between measured and true means is the
sensors' error alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import h3.api.basic_int as h3
import numpy as np

from simulators.environment import ENERGY_FIELDS, FIELDS, check_field
from simulators.truthflags import FrameFate, TruthFlag

TRUTH_DTYPE = np.dtype(
    [
        ("kit_id", "<u4"),
        ("boot_id", "<u4"),
        ("seq", "<u4"),
        ("idx", "<u2"),
        ("ts_ms", "<i8"),  # as reported (skewed clocks included)
        ("true_ts_ms", "<i8"),
        ("interval_ms", "<u4"),
        ("lat_deg", "<f8"),  # as reported; NaN without a fix
        ("lon_deg", "<f8"),
        ("true_lat_deg", "<f8"),
        ("true_lon_deg", "<f8"),
        ("depot_distance_m", "<f8"),  # reported position to nearest depot; NaN without a fix
        ("publish_ms", "<i8"),  # when its frame was first published
        ("flags", "<u4"),  # TruthFlag
        *((f"true_{name}", "<f8") for name in FIELDS),
        *((name, "<f8") for name in FIELDS),  # as encoded
        *((f"bias_{name}", "<f4") for name in FIELDS),
        *((f"sigma_{name}", "<f4") for name in FIELDS),
    ]
)

FRAME_DTYPE = np.dtype(
    [
        ("kit_id", "<u4"),
        ("boot_id", "<u4"),
        ("seq", "<u4"),
        ("count", "<u2"),  # readings in the frame
        ("publish_ms", "<i8"),  # first publication
        ("fate", "u1"),  # FrameFate
        ("corruption", "u1"),  # CorruptionKind
        ("copies", "u1"),  # 1, or 2 for a duplicated frame
        ("buffered", "?"),  # part of a late upload burst
        ("payload_bytes", "<u4"),
    ]
)

EXPECTED_DTYPE = np.dtype(
    [
        ("cell", "<i8"),  # H3 cell as int
        ("window_start_ms", "<i8"),
        ("n", "<i8"),  # readings in the cell-window
        ("measured_mean", "<f8"),  # what a correct pipeline computes from the readings it was sent
        ("measured_min", "<f8"),
        ("measured_max", "<f8"),
        ("true_mean", "<f8"),  # the truth field, over the same readings' true places and times
        ("error_bound", "<f8"),  # |measured_mean − true_mean| stays below this (see error_bound)
        ("kits", "<i8"),  # distinct kits
    ]
)

#: The finest H3 resolution the pipeline bins at by default (bikesense.settings:
#: resolutions 7–10); coarser cells are its parents.
DEFAULT_FINEST_RESOLUTION = 10

#: Half the wire resolution of the PM, NO2 and noise fields (0.1 units, docs/protocol.md §4.3).
_QUANTISATION = 0.05
#: Standard errors allowed on top of the model's mean bias; 4σ keeps a run of
#: thousands of cell-windows free of false alarms (two-sided p ≈ 6e-5 each).
_SIGMAS = 4.0


class TruthRecord:
    """Grows while a run publishes; query it once the run has finished."""

    def __init__(self, depots_latlon: Iterable[tuple[float, float]]) -> None:
        self.depots_latlon = tuple(depots_latlon)
        self._reading_chunks: list[np.ndarray] = []
        self._frame_chunks: list[np.ndarray] = []
        self._readings: np.ndarray | None = None
        self._frames: np.ndarray | None = None
        self._index: dict[tuple[int, int, int, int], int] | None = None

    # -- recording ----------------------------------------------------------

    def add(self, readings: np.ndarray, frame: np.ndarray) -> None:
        """Record one frame (a FRAME_DTYPE row) and its readings (TRUTH_DTYPE rows)."""
        self._reading_chunks.append(readings)
        self._frame_chunks.append(frame.reshape(1))
        self._readings = self._frames = None
        self._index = None

    # -- queries ------------------------------------------------------------

    @property
    def readings(self) -> np.ndarray:
        """All readings in order of their frames' creation (TRUTH_DTYPE)."""
        if self._readings is None:
            readings: np.ndarray = (
                np.concatenate(self._reading_chunks)
                if self._reading_chunks
                else np.zeros(0, TRUTH_DTYPE)
            )
            self._readings = readings
            self._reading_chunks = [readings]
        return self._readings

    @property
    def frames(self) -> np.ndarray:
        """All frames put on the wire (FRAME_DTYPE), unknown kits' included."""
        if self._frames is None:
            frames: np.ndarray = (
                np.concatenate(self._frame_chunks)
                if self._frame_chunks
                else np.zeros(0, FRAME_DTYPE)
            )
            self._frames = frames
            self._frame_chunks = [frames]
        return self._frames

    def deliverable(self) -> np.ndarray:
        """Readings a correct pipeline receives and can decode: one row per identity."""
        r = self.readings
        out: np.ndarray = r[(r["flags"] & int(TruthFlag.undeliverable())) == 0]
        return out

    def frames_with_fate(self, fate: FrameFate) -> np.ndarray:
        f = self.frames
        out: np.ndarray = f[f["fate"] == fate]
        return out

    def lookup(self, identities: np.ndarray) -> np.ndarray:
        """Truth rows for an array with kit_id, boot_id, seq, idx columns (e.g. stored rows).

        Raises KeyError naming the first identity the simulator never produced.
        """
        if self._index is None:
            r = self.readings
            keys = zip(
                r["kit_id"].tolist(),
                r["boot_id"].tolist(),
                r["seq"].tolist(),
                r["idx"].tolist(),
                strict=True,
            )
            self._index = {k: i for i, k in enumerate(keys)}
        rows = []
        for key in zip(
            identities["kit_id"].tolist(),
            identities["boot_id"].tolist(),
            identities["seq"].tolist(),
            identities["idx"].tolist(),
            strict=True,
        ):
            if key not in self._index:
                raise KeyError(f"reading (kit, boot, seq, idx) = {key} was never produced")
            rows.append(self._index[key])
        return self.readings[np.array(rows, dtype=np.int64)]

    def save(self, path: Path) -> None:
        """Write the record to an ``.npz`` file (:meth:`load` reads it back)."""
        with path.open("wb") as f:
            np.savez_compressed(
                f,
                readings=self.readings,
                frames=self.frames,
                depots=np.array(self.depots_latlon, dtype=np.float64).reshape(-1, 2),
            )

    @classmethod
    def load(cls, path: Path) -> TruthRecord:
        with np.load(path) as data:
            record = cls([(float(a), float(b)) for a, b in data["depots"].tolist()])
            record._reading_chunks = [data["readings"].astype(TRUTH_DTYPE)]
            record._frame_chunks = [data["frames"].astype(FRAME_DTYPE)]
        return record

    def summary(self) -> dict[str, int]:
        """Counts for humans: readings, frames, and each fault as it happened."""
        r, f = self.readings, self.frames
        out = {
            "readings": len(r),
            "readings_deliverable": int(np.sum((r["flags"] & int(TruthFlag.undeliverable())) == 0)),
            "frames": len(f),
            "publications": int(f["copies"].sum()),
        }
        for fate in FrameFate:
            if fate != FrameFate.OK:
                out[f"frames_{fate.name.lower()}"] = int(np.sum(f["fate"] == fate))
        out["frames_duplicated"] = int(np.sum(f["copies"] > 1))
        out["frames_buffered"] = int(np.sum(f["buffered"]))
        for flag in (
            TruthFlag.GPS_LOST,
            TruthFlag.GPS_JUMP,
            TruthFlag.STUCK,
            TruthFlag.CLOCK_SKEWED,
            TruthFlag.WARMING_UP,
            TruthFlag.HUMID,
        ):
            out[f"readings_{(flag.name or '').lower()}"] = int(
                np.sum((r["flags"] & int(flag)) != 0)
            )
        return out

    def expected_aggregates(
        self,
        metric: str,
        resolution: int,
        window_s: int,
        *,
        exclude: TruthFlag | int | None = None,
        privacy_radius_m: float = 0.0,
        bin_by: Literal["reported", "true"] = "reported",
        only: np.ndarray | None = None,
        finest_resolution: int | None = DEFAULT_FINEST_RESOLUTION,
    ) -> np.ndarray:
        """Per (cell, window): the mean a correct pipeline stores, the true mean, and a bound.

        ``metric`` is a reading column (``pm25_ugm3``, ``noise_laeq_db`` …). Readings
        without a value or a position, with any ``exclude`` flag (default
        :meth:`TruthFlag.default_excluded`), or within ``privacy_radius_m`` of a depot
        are left out, as a pipeline that drops them would.

        ``only`` restricts the readings to those identities (any array with kit_id,
        boot_id, seq and idx columns, duplicates allowed): pass the raw readings the
        pipeline kept for this metric, and ``measured_mean`` is exactly what its
        aggregates must hold, while ``true_mean`` and ``error_bound`` say how far that
        may be from the truth. With ``only``, ``exclude`` defaults to nothing.

        Cells are found as the pipeline finds them: at ``finest_resolution`` (its
        finest configured resolution), then the parent at ``resolution``. H3
        children poke out of their parents, so this differs from asking h3 for the
        cell at ``resolution`` directly for points near a cell's edge; pass
        ``finest_resolution=None`` for that.

        Noise means are energy means weighted by ``interval_ms`` (docs/design.md
        decision 3). Rows are sorted by (window_start_ms, cell).
        """
        check_field(metric)
        if only is not None:
            ids = np.unique(np.asarray(only)[["kit_id", "boot_id", "seq", "idx"]])
            r = self.lookup(ids)
            exclude = 0 if exclude is None else exclude
        else:
            r = self.readings
        if exclude is None:
            exclude = TruthFlag.default_excluded()
        lat_col, lon_col, ts_col = (
            ("lat_deg", "lon_deg", "ts_ms")
            if bin_by == "reported"
            else ("true_lat_deg", "true_lon_deg", "true_ts_ms")
        )
        keep = (
            ((r["flags"] & int(exclude)) == 0)
            & np.isfinite(r[metric])
            & np.isfinite(r[lat_col])
            & np.isfinite(r[lon_col])
        )
        if privacy_radius_m > 0:
            keep &= ~(r["depot_distance_m"] <= privacy_radius_m)
        r = r[keep]
        if len(r) == 0:
            return np.zeros(0, EXPECTED_DTYPE)
        at = resolution if finest_resolution is None else finest_resolution
        if at < resolution:
            raise ValueError(f"finest_resolution {at} is coarser than resolution {resolution}")
        cells = np.fromiter(
            (
                h3.latlng_to_cell(a, b, at)
                for a, b in zip(r[lat_col].tolist(), r[lon_col].tolist(), strict=True)
            ),
            dtype=np.int64,
            count=len(r),
        )
        if at != resolution:
            cells = np.fromiter(
                (h3.cell_to_parent(c, resolution) for c in cells.tolist()),
                dtype=np.int64,
                count=len(cells),
            )
        window_ms = window_s * 1000
        starts = (r[ts_col] // window_ms) * window_ms
        order = np.lexsort((cells, starts))
        cells, starts, r = cells[order], starts[order], r[order]
        edges = np.flatnonzero((np.diff(cells) != 0) | (np.diff(starts) != 0)) + 1
        groups = np.split(np.arange(len(r)), edges)
        out = np.zeros(len(groups), EXPECTED_DTYPE)
        for g, idx in enumerate(groups):
            rows = r[idx]
            out[g]["cell"] = cells[idx[0]]
            out[g]["window_start_ms"] = starts[idx[0]]
            out[g]["n"] = len(rows)
            out[g]["kits"] = len(np.unique(rows["kit_id"]))
            measured = rows[metric]
            weights = rows["interval_ms"].astype(np.float64)
            out[g]["measured_mean"] = _mean(metric, measured, weights)
            out[g]["measured_min"] = measured.min()
            out[g]["measured_max"] = measured.max()
            out[g]["true_mean"] = _mean(metric, rows[f"true_{metric}"], weights)
            out[g]["error_bound"] = error_bound(
                metric, rows[f"bias_{metric}"], rows[f"sigma_{metric}"]
            )
        return out


def error_bound(metric: str, bias: np.ndarray, sigma: np.ndarray) -> float:
    """Bound on |measured mean − true mean| over readings with these biases and sigmas.

    |mean bias| + 4·√(Σσ²)/n + half the wire resolution; for noise the energy
    mean of noisy levels also reads high by about σ²·ln10/20 dB (Jensen), and
    averaging in dB vs energy moves the bias by up to its own spread, so the
    largest |bias| is used instead of the mean.
    """
    n = len(bias)
    b = bias.astype(np.float64)
    s = sigma.astype(np.float64)
    if metric in ENERGY_FIELDS:
        return float(
            np.abs(b).max()
            + _SIGMAS * np.sqrt(np.sum(s * s)) / n
            + float(np.max(s)) ** 2 * np.log(10) / 20
            + _QUANTISATION
        )
    return float(abs(b.mean()) + _SIGMAS * np.sqrt(np.sum(s * s)) / n + _QUANTISATION)


def _mean(metric: str, values: np.ndarray, weights: np.ndarray) -> float:
    v = values.astype(np.float64)
    if metric in ENERGY_FIELDS:
        return float(10 * np.log10(np.sum(weights * 10 ** (v / 10)) / np.sum(weights)))
    return float(v.mean())  # the pipeline's sum / n: every reading counts once
