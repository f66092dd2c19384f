from __future__ import annotations

import numpy as np

from firmware_protocol.readings import empty_readings
from ingest.validation import AdmissionRules, IngestReject, check_readings

NOW_MS = 1_790_000_000_000


def _readings(n: int) -> np.ndarray:
    r = empty_readings(n)
    r["ts_ms"] = NOW_MS - 60_000
    r["lat_deg"] = 52.13
    r["lon_deg"] = 4.66
    return r


def test_clean_frame_keeps_everything() -> None:
    verdict = check_readings(_readings(5), NOW_MS, AdmissionRules())
    assert verdict.keep.all()
    assert verdict.dropped == 0


def test_each_rule_drops_only_its_readings() -> None:
    r = _readings(8)
    r["ts_ms"][1] = NOW_MS + 3_600_000  # an hour ahead
    r["ts_ms"][2] = NOW_MS - 40 * 86_400_000  # forty days old
    r["lat_deg"][3] = 91.0
    r["lon_deg"][4] = np.nan  # half a position is a broken one
    r["lat_deg"][5] = 0.0
    r["lon_deg"][5] = 0.0
    verdict = check_readings(r, NOW_MS, AdmissionRules())
    assert verdict.keep.tolist() == [True, False, False, False, False, False, True, True]
    assert {k: v.tolist() for k, v in verdict.reasons.items()} == {
        IngestReject.FAR_FUTURE: [1],
        IngestReject.TOO_OLD: [2],
        IngestReject.BAD_POSITION: [3, 4],
        IngestReject.NULL_ISLAND: [5],
    }
    assert "bad_position: idx 3-4" in verdict.summary()


def test_a_reading_without_a_fix_keeps_its_values() -> None:
    r = _readings(2)
    r["lat_deg"][1] = np.nan
    r["lon_deg"][1] = np.nan
    assert check_readings(r, NOW_MS, AdmissionRules()).keep.all()


def test_buffered_hours_old_data_is_accepted() -> None:
    r = _readings(3)
    r["ts_ms"] = NOW_MS - 20 * 3_600_000
    assert check_readings(r, NOW_MS, AdmissionRules()).keep.all()
