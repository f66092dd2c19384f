"""Daily pseudonyms: stable within a day, different across days, keyed, admin-reversible."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from bikesense.settings import load_settings
from storage.cli import pseudonym_key_of
from storage.exceptions import SecretError
from storage.pseudonyms import (
    WITHHELD_FIELDS,
    PseudonymKey,
    local_day_spans,
    local_days,
    pseudonym,
    pseudonym_table,
    pseudonymise,
    ride_pseudonym,
)
from stream.core.batch import ENRICHED_DTYPE
from stream.core.rides import ride_id_for

KEY = PseudonymKey(b"k" * 32)
TZ = "Europe/Amsterdam"


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_pseudonyms_are_stable_within_a_day_and_differ_across_days() -> None:
    monday, tuesday = date(2026, 11, 23), date(2026, 11, 24)
    assert pseudonym(7, monday, KEY) == pseudonym(7, monday, KEY)
    assert pseudonym(7, monday, KEY) != pseudonym(7, tuesday, KEY)
    assert pseudonym(7, monday, KEY) != pseudonym(8, monday, KEY)
    assert pseudonym(7, monday, KEY) != pseudonym(7, monday, PseudonymKey(b"x" * 32))
    name = pseudonym(7, monday, KEY)
    assert len(name) == 12
    assert name.isalnum()
    assert name == name.lower()
    days = {pseudonym(7, date.fromordinal(monday.toordinal() + i), KEY) for i in range(365)}
    assert len(days) == 365


def test_days_are_local_days_of_the_deployment() -> None:
    # 23:30 UTC on 23 November is 00:30 on the 24th in Amsterdam (UTC+1).
    ts = np.array(
        [
            _ms("2026-11-23T22:30:00+00:00"),
            _ms("2026-11-23T23:30:00+00:00"),
            _ms("2026-07-01T22:30:00+00:00"),
        ]
    )  # summer: UTC+2, already 2 July
    assert local_days(ts, TZ).astype(str).tolist() == ["2026-11-23", "2026-11-24", "2026-07-02"]


def _rows(ts_ms: list[int], kit_id: int = 7, boot_id: int = 3) -> np.ndarray:
    out = np.zeros(len(ts_ms), dtype=ENRICHED_DTYPE)
    out["kit_id"], out["boot_id"] = kit_id, boot_id
    out["ts_ms"] = ts_ms
    out["seq"] = np.arange(len(ts_ms)) + 1000
    out["idx"] = 4
    out["ride_id"] = [ride_id_for(kit_id, boot_id, t) for t in ts_ms]
    out["lat_deg"], out["pm25_ugm3"] = 52.1, 8.5
    return out


def test_pseudonymised_rows_cannot_be_linked_across_days() -> None:
    day1 = _ms("2026-11-23T08:00:00.437+00:00")
    day2 = _ms("2026-11-24T08:00:00.437+00:00")
    rows = _rows([day1, day1 + 1000, day2, day2 + 1000])
    rows["ride_id"][1] = rows["ride_id"][0]
    rows["ride_id"][3] = rows["ride_id"][2]
    out = pseudonymise(rows, KEY, TZ)
    kits = out["kit_pseudonym"].astype(str).tolist()
    assert kits[0] == kits[1] == pseudonym(7, date(2026, 11, 23), KEY)
    assert kits[2] == kits[3] == pseudonym(7, date(2026, 11, 24), KEY)
    assert kits[0] != kits[2]
    rides = out["ride_pseudonym"].astype(str).tolist()
    assert rides[0] == rides[1] == ride_pseudonym(int(rows["ride_id"][0]), date(2026, 11, 23), KEY)
    assert rides[2] == rides[3] != rides[0]
    assert len(rides[0]) == 16
    # What links days is gone (ids, counters, arrival, the sub-second clock phase);
    # what was measured stays.
    assert set(out.dtype.names or ()) & set(WITHHELD_FIELDS) == set()
    np.testing.assert_array_equal(out["ts_ms"], rows["ts_ms"] - 437)
    np.testing.assert_array_equal(out["pm25_ugm3"], rows["pm25_ugm3"])
    assert rows["kit_id"].tolist() == [7] * 4  # the input is not touched
    assert len(pseudonymise(rows[:0], KEY, TZ)) == 0


def test_a_ride_across_local_midnight_gets_a_name_per_day() -> None:
    # 22:50 and 23:10 UTC on 23 November are 23:50 on the 23rd and 00:10 on the 24th locally.
    rows = _rows([_ms("2026-11-23T22:50:00+00:00"), _ms("2026-11-23T23:10:00+00:00")])
    rows["ride_id"] = rows["ride_id"][0]
    out = pseudonymise(rows, KEY, TZ)
    ride = int(rows["ride_id"][0])
    assert out["ride_pseudonym"].astype(str).tolist() == [
        ride_pseudonym(ride, date(2026, 11, 23), KEY),
        ride_pseudonym(ride, date(2026, 11, 24), KEY),
    ]
    assert out["kit_pseudonym"][0] != out["kit_pseudonym"][1]


def test_local_day_spans_follow_the_clock_changes() -> None:
    # 25 October 2026: clocks go back in Amsterdam, the day lasts 25 hours.
    start = datetime.fromisoformat("2026-10-24T12:00:00+00:00")
    end = datetime.fromisoformat("2026-10-26T12:00:00+00:00")
    spans = list(local_day_spans(start, end, TZ))
    assert [d.isoformat() for d, _, _ in spans] == ["2026-10-24", "2026-10-25", "2026-10-26"]
    assert spans[0][1] == start
    assert spans[-1][2] == end
    assert spans[1][1].isoformat() == "2026-10-24T22:00:00+00:00"
    assert (spans[1][2] - spans[1][1]).total_seconds() == 25 * 3600
    assert all(a[2] == b[1] for a, b in itertools.pairwise(spans))


def test_the_admin_mapping_finds_the_kit_behind_a_pseudonym() -> None:
    day = date(2026, 11, 22)
    table = pseudonym_table([1, 2, 3], day, KEY)
    assert [kit for kit, _ in table] == [1, 2, 3]
    assert table[1][1] == pseudonym(2, day, KEY)


def test_the_key_comes_from_the_environment_a_file_or_the_state_dir(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BIKESENSE_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("BIKESENSE_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.setenv("BIKESENSE_STATE_DIR", str(tmp_path))
    created = pseudonym_key_of(load_settings())
    assert (tmp_path / "pseudonym.key").stat().st_mode & 0o777 == 0o600
    assert pseudonym_key_of(load_settings()) == created  # created once, then read
    other = PseudonymKey.generate()
    key_file = tmp_path / "other.key"
    key_file.write_text(other.to_text())
    monkeypatch.setenv("BIKESENSE_PSEUDONYM_KEY_FILE", str(key_file))
    assert pseudonym_key_of(load_settings()) == other
    monkeypatch.setenv("BIKESENSE_PSEUDONYM_KEY", KEY.to_text())
    settings = load_settings()
    assert pseudonym_key_of(settings) == KEY
    assert "k" * 8 not in repr(KEY)
    # The key's text is a secret: no repr of the settings shows it.
    assert KEY.to_text() not in repr(settings)
    assert KEY.to_text() not in str(settings)


def test_weak_or_malformed_keys_are_refused() -> None:
    with pytest.raises(SecretError, match="32 bytes"):
        PseudonymKey(b"short")
    with pytest.raises(SecretError, match="base64"):
        PseudonymKey.from_text("not base64!")
