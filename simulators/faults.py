"""Faults on request: what goes wrong, how often, and each kit's draw of them.

A :class:`FaultPlan` holds rates; nothing is injected unless asked for. Rates
are of three kinds, stated per field: a fraction of kits (each kit has the
fault or not), a probability per frame, or a fraction of time. The CLI and
tests write plans as text::

    none
    typical
    typical,duplicate=0.05,offline_kits=0.5
    gps_loss=0.1,corrupt=0.01,offline_s=600-1200
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from simulators.exceptions import SimulatorConfigError


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Rates of each fault. Zero everywhere (the default) is a fleet without faults."""

    #: Fraction of each kit's time without a GNSS fix, in episodes of about gps_loss_episode_s.
    gps_loss: float = 0.0
    gps_loss_episode_s: float = 90.0
    #: Fraction of kits that lose their connection once, buffer, and upload late in bursts.
    offline_kits: float = 0.0
    offline_s: tuple[float, float] = (300.0, 1800.0)
    #: Probability that a frame is published twice (the copy follows within seconds).
    duplicate: float = 0.0
    #: Fraction of kits whose clock is off by up to ±clock_skew_s (uniformly drawn).
    clock_skew_kits: float = 0.0
    clock_skew_s: float = 120.0
    #: Fraction of kits whose PM sensor repeats one value for stuck_s of the run.
    stuck_kits: float = 0.0
    # Long enough for a stuck-value check to see it: a PM sensor may legitimately
    # repeat a whole-µg/m³ value for minutes in clean air, so checks wait ~15 min.
    stuck_s: tuple[float, float] = (1200.0, 2400.0)
    #: Probability that a frame's bytes are damaged (bit flips, truncation, garbage, padding).
    corrupt: float = 0.0
    #: Probability that a frame is signed with a key that is not the kit's.
    wrong_mac: float = 0.0
    #: Extra frames from kits that are not in the fleet, per genuine frame.
    unknown_kit: float = 0.0
    #: Power cycles per kit-hour: a new boot id, seq from 0, sensors warming up again.
    reboots_per_hour: float = 0.0

    _PROBABILITIES = (
        "gps_loss",
        "offline_kits",
        "duplicate",
        "clock_skew_kits",
        "stuck_kits",
        "corrupt",
        "wrong_mac",
    )

    def validate(self) -> None:
        for name in self._PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SimulatorConfigError(f"fault rate {name} must be within 0–1 (got {value})")
        if self.gps_loss >= 0.95:
            raise SimulatorConfigError(f"gps_loss must be below 0.95 (got {self.gps_loss})")
        if self.corrupt + self.wrong_mac > 1.0:
            raise SimulatorConfigError("corrupt + wrong_mac must not exceed 1")
        for name in ("unknown_kit", "reboots_per_hour", "clock_skew_s", "gps_loss_episode_s"):
            if getattr(self, name) < 0:
                raise SimulatorConfigError(
                    f"fault option {name} must be ≥ 0 (got {getattr(self, name)})"
                )
        if self.gps_loss_episode_s <= 0:
            raise SimulatorConfigError("gps_loss_episode_s must be positive")
        for name in ("offline_s", "stuck_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise SimulatorConfigError(
                    f"{name} must be a range 0 < low ≤ high (got {low}-{high})"
                )

    @property
    def any(self) -> bool:
        return self != FaultPlan()

    @classmethod
    def typical(cls) -> FaultPlan:
        """Every fault at a rate a busy test run shows several times."""
        return cls(
            gps_loss=0.03,
            offline_kits=0.2,
            duplicate=0.02,
            clock_skew_kits=0.1,
            stuck_kits=0.05,
            corrupt=0.005,
            wrong_mac=0.005,
            unknown_kit=0.005,
            reboots_per_hour=0.2,
        )

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """A plan from ``none`` / ``typical`` and ``name=value`` overrides, comma-separated."""
        plan = cls()
        fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
        for raw_part in text.split(","):
            part = raw_part.strip()
            if not part or part == "none":
                continue
            if part == "typical":
                plan = cls.typical()
                continue
            name, sep, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields_by_name:
                known = ", ".join(sorted(fields_by_name))
                raise SimulatorConfigError(
                    f"bad fault option {part!r}: expected none, typical or name=value with a name "
                    f"among {known}"
                )
            try:
                if isinstance(getattr(plan, name), tuple):
                    low, _, high = value.partition("-")
                    parsed: object = (float(low), float(high or low))
                else:
                    parsed = float(value)
            except ValueError as exc:
                raise SimulatorConfigError(f"bad value for fault option {name}: {value!r}") from exc
            plan = dataclasses.replace(plan, **{name: parsed})  # type: ignore[arg-type]
        plan.validate()
        return plan

    def describe(self) -> str:
        """The plan as text that :meth:`parse` reads back."""
        default = FaultPlan()
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                parts.append(
                    f"{f.name}={value[0]:g}-{value[1]:g}"
                    if isinstance(value, tuple)
                    else f"{f.name}={value:g}"
                )
        return ",".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class KitFaults:
    """One kit's draw of the time-based faults, in seconds since the simulation start."""

    gps_loss: tuple[tuple[float, float], ...] = ()
    offline: tuple[float, float] | None = None
    clock_skew_ms: int = 0
    stuck: tuple[float, float] | None = None
    stuck_pm_ugm3: tuple[float, float, float] = (0.0, 0.0, 0.0)  # PM1, PM2.5, PM10 repeated
    reboots_s: tuple[float, ...] = field(default=())

    @classmethod
    def draw(
        cls, plan: FaultPlan, rng: np.random.Generator, *, start_s: float, end_s: float
    ) -> KitFaults:
        """Faults for a kit powered from start_s to end_s.

        Every number is drawn whatever the plan, so that changing one rate leaves
        the other faults' draws alone.
        """
        duration = max(end_s - start_s, 0.0)
        u_off, u_skew, u_stuck = rng.random(3)
        off_len = rng.uniform(*plan.offline_s)
        off_at = rng.random()
        skew = rng.uniform(-1.0, 1.0)
        stuck_len = rng.uniform(*plan.stuck_s)
        stuck_at = rng.random()
        stuck_pm25 = rng.uniform(5.0, 30.0)
        loss_rng, reboot_rng = rng.spawn(2)

        gps_loss: list[tuple[float, float]] = []
        if plan.gps_loss > 0:
            episode = plan.gps_loss_episode_s
            gap = episode * (1 - plan.gps_loss) / plan.gps_loss
            t = start_s + loss_rng.exponential(gap)
            while t < end_s:
                length = loss_rng.exponential(episode)
                gps_loss.append((t, min(t + length, end_s)))
                t += length + loss_rng.exponential(gap)

        offline = None
        if u_off < plan.offline_kits and duration > 0:
            length = min(off_len, duration * 0.8)
            begin = start_s + off_at * (duration - length)
            offline = (begin, begin + length)
        stuck = None
        if u_stuck < plan.stuck_kits and duration > 0:
            length = min(stuck_len, duration)
            begin = start_s + stuck_at * (duration - length)
            stuck = (begin, begin + length)

        reboots: list[float] = []
        if plan.reboots_per_hour > 0:
            t = start_s + reboot_rng.exponential(3600.0 / plan.reboots_per_hour)
            while t < end_s:
                reboots.append(t)
                t += reboot_rng.exponential(3600.0 / plan.reboots_per_hour)

        return cls(
            gps_loss=tuple(gps_loss),
            offline=offline,
            clock_skew_ms=round(skew * plan.clock_skew_s * 1000)
            if u_skew < plan.clock_skew_kits
            else 0,
            stuck=stuck,
            stuck_pm_ugm3=(0.7 * stuck_pm25, stuck_pm25, 1.6 * stuck_pm25),
            reboots_s=tuple(reboots),
        )


def in_intervals(t_s: np.ndarray, intervals: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Mask of the times that fall inside any of the half-open intervals."""
    mask = np.zeros(np.shape(t_s), dtype=bool)
    for a, b in intervals:
        mask |= (t_s >= a) & (t_s < b)
    return mask
