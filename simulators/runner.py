"""Pacing: send publications to their sinks as fast as possible or on the simulated clock.

``speed`` is how many simulated seconds pass per wall-clock second: ``None``
for as fast as the sinks take them, ``1.0`` for real time, ``10.0`` for ten
times faster. A sink that falls behind (the MQTT window full) simply delays
the ones after it; the runner never drops or reorders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from simulators.exceptions import SimulatorConfigError
from simulators.fleet import Kind, Publication


class Sink(Protocol):
    def send(self, pub: Publication) -> None: ...


@dataclass(slots=True)
class RunStats:
    publications: int = 0
    frames: int = 0
    statuses: int = 0
    payload_bytes: int = 0
    wall_s: float = 0.0
    last_publish_ms: int = 0


def parse_speed(text: str) -> float | None:
    """``max`` → None, ``realtime`` → 1.0, a positive number → that factor."""
    value = text.strip().lower()
    if value == "max":
        return None
    if value in ("realtime", "real-time", "1"):
        return 1.0
    try:
        factor = float(value)
    except ValueError:
        factor = -1.0
    if not factor > 0:
        raise SimulatorConfigError(
            f"speed must be max, realtime or a positive factor (got {text!r})"
        )
    return factor


def pump(
    publications: Iterable[Publication],
    sinks: Sequence[Sink],
    *,
    speed: float | None,
    start_ms: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    progress_every: int = 200,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStats:
    """Send every publication to every sink, paced by ``speed``; returns what was sent.

    ``start_ms`` is the simulated time that maps to the moment pumping starts
    (default: the first publication's time).
    """
    stats = RunStats()
    wall0 = clock()
    reported = wall0
    for pub in publications:
        if speed is not None:
            if start_ms is None:
                start_ms = pub.publish_ms
            due = (pub.publish_ms - start_ms) / 1000.0 / speed
            ahead = due - (clock() - wall0)
            if ahead > 0:
                sleep(ahead)
        for sink in sinks:
            sink.send(pub)
        stats.publications += 1
        if pub.kind == Kind.FRAME:
            stats.frames += 1
        else:
            stats.statuses += 1
        stats.payload_bytes += len(pub.payload)
        stats.last_publish_ms = pub.publish_ms
        if on_progress is not None:
            now = clock()
            # Every progress_every publications, or twice a second when paced slowly.
            if stats.publications % progress_every == 0 or now - reported >= 0.5:
                reported = now
                stats.wall_s = now - wall0
                on_progress(stats)
    stats.wall_s = clock() - wall0
    if on_progress is not None:
        on_progress(stats)
    return stats
