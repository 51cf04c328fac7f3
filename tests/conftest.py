"""Fixtures shared by the test files: one private Mosquitto process for the whole run, and a
real hub database per test.

``store`` is a real SQLite hub database in the test's ``tmp_path``, opened with a ``ManualClock``.
A file whose figures need another cooperative, another instant or a prepared file overrides
``store_coop``, ``store_clock`` or ``store_path``; one that needs data in it overrides ``store``
with a fixture that takes the ``store`` from here and fills it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from hub.storage.store import Store
from protocol.clock import ManualClock
from sim.broker import RunningBroker, run_mosquitto
from tests.times import ROUND_SECOND_MS

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


@pytest.fixture
def store_coop() -> str:
    """The cooperative the ``store`` fixture's database belongs to."""
    return "coop-a"


@pytest.fixture
def store_clock() -> ManualClock:
    """The ``store`` fixture's clock. It only stamps the migrations' ``applied_ms``, which no
    figure reads, so the files share one instant."""
    return ManualClock(ROUND_SECOND_MS)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the ``store`` fixture opens its database: a new file unless a file overrides this."""
    return tmp_path / "hub.db"


@pytest.fixture
def store(store_path: Path, store_coop: str, store_clock: ManualClock) -> Iterator[Store]:
    """A real hub database, migrated, closed after the test."""
    s = Store.open(store_path, store_coop, clock=store_clock)
    yield s
    s.close()
