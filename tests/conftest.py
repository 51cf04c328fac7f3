"""Session-wide fixtures: one private Mosquitto process for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from sim.broker import RunningBroker, run_mosquitto

# Hypothesis' timing checks (a per-example deadline, "input generation is slow") fail a test by
# how busy the machine is, not by what the code does: a shared 2-core CI runner tripped them.
# Tests check behaviour here; speed is for the benchmarks in bench/.
settings.register_profile("coopwatt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("coopwatt")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A real Mosquitto on a free loopback port; tests isolate themselves by coop id."""
    with run_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker
