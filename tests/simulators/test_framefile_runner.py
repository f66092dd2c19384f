"""Frame files for replay, and the pacing of a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.exceptions import FrameFileError, SimulatorConfigError
from simulators.fleet import Kind, Publication
from simulators.framefile import MAGIC, FrameFileWriter, read_frame_file
from simulators.runner import RunStats, parse_speed, pump
from tests.simulators.simulated import Simulated


def test_frame_file_round_trip(clean_run: Simulated, tmp_path: Path) -> None:
    path = tmp_path / "run.frames"
    with FrameFileWriter(path) as writer:
        stats = pump(clean_run.publications, [writer], speed=None)
    assert writer.records == stats.publications == len(clean_run.publications)
    assert list(read_frame_file(path)) == clean_run.publications
    assert path.read_bytes().startswith(MAGIC)


def test_frame_file_errors_name_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.frames"
    bad.write_bytes(b"NOTFRAMES")
    with pytest.raises(FrameFileError, match="not a bikesense frame file"):
        list(read_frame_file(bad))
    path = tmp_path / "cut.frames"
    with FrameFileWriter(path) as writer:
        writer.send(Publication(1, 7, Kind.FRAME, b"x" * 40))
        writer.send(Publication(2, 7, Kind.STATUS, b"{}"))
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(FrameFileError, match="cut short"):
        list(read_frame_file(path))
    path.write_bytes(data)
    assert [p.kind for p in read_frame_file(path)] == [Kind.FRAME, Kind.STATUS]


def test_speed_parsing() -> None:
    assert parse_speed("max") is None
    assert parse_speed("realtime") == 1.0
    assert parse_speed("60") == 60.0
    for bad in ("fast", "0", "-2"):
        with pytest.raises(SimulatorConfigError, match="speed"):
            parse_speed(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class Collect:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.at: list[tuple[float, int]] = []

    def send(self, pub: Publication) -> None:
        self.at.append((self.clock.now, pub.publish_ms))


def test_pump_paces_by_simulated_time() -> None:
    pubs = [Publication(1_000_000 + i * 10_000, 1, Kind.FRAME, b"p") for i in range(7)]
    clock = FakeClock()
    sink = Collect(clock)
    seen: list[RunStats] = []
    stats = pump(
        pubs,
        [sink],
        speed=10.0,
        clock=clock.clock,
        sleep=clock.sleep,
        on_progress=seen.append,
        progress_every=3,
    )
    # 60 simulated seconds at ten times real time: 6 wall seconds.
    assert clock.slept == pytest.approx(6.0)
    for wall, publish_ms in sink.at:
        assert wall - 100.0 == pytest.approx((publish_ms - 1_000_000) / 10_000)
    assert stats.frames == 7
    assert [s.publications for s in seen][-1] == 7
    fast = FakeClock()
    pump(pubs, [Collect(fast)], speed=None, clock=fast.clock, sleep=fast.sleep)
    assert fast.slept == 0.0
