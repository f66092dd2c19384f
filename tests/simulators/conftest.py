"""Shared fleets: built once per session, they are what most simulator tests look at."""

from __future__ import annotations

import pytest

from simulators.fleet import SimulationConfig
from tests.simulators.simulated import BUSY_FAULTS, Simulated, simulate


@pytest.fixture(scope="session")
def clean_run() -> Simulated:
    return simulate(SimulationConfig(n_bikes=6, duration_s=1800, seed=11))


@pytest.fixture(scope="session")
def faulty_run() -> Simulated:
    return simulate(SimulationConfig(n_bikes=16, duration_s=2400, seed=5, faults=BUSY_FAULTS))


# The two-listener broker with kit accounts, for publishing as the kits.
from tests.security.conftest import secured_broker  # noqa: E402, F401
