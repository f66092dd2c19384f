"""Helpers shared by the simulator tests (a module of the tests package)."""

from __future__ import annotations

from dataclasses import dataclass

from simulators.faults import FaultPlan
from simulators.fleet import Fleet, Publication, Run, SimulationConfig


@dataclass(frozen=True)
class Simulated:
    fleet: Fleet
    run: Run
    publications: list[Publication]


def simulate(config: SimulationConfig) -> Simulated:
    fleet = Fleet(config)
    run = fleet.run()
    return Simulated(fleet, run, list(run))


#: Rates high enough to be counted in a short run.
BUSY_FAULTS = FaultPlan(
    gps_loss=0.1,
    offline_kits=0.5,
    duplicate=0.05,
    clock_skew_kits=0.3,
    stuck_kits=0.3,
    corrupt=0.03,
    wrong_mac=0.03,
    unknown_kit=0.02,
    reboots_per_hour=1.0,
    offline_s=(300.0, 600.0),
    stuck_s=(300.0, 600.0),
)
