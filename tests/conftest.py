"""Session-wide fixtures: one private Mosquitto process for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.broker import RunningBroker, run_mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A real Mosquitto on a free loopback port; tests isolate themselves by coop id."""
    with run_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker
