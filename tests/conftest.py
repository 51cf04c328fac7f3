"""Fixtures shared by the test files: one private Mosquitto process for the whole run, a real hub
database per test, and one headless Chromium for the whole run (``browser``, see tests/browser.py).

``store`` is a real SQLite hub database in the test's ``tmp_path``, opened with a ``ManualClock``.
A file whose figures need another cooperative, another instant or a prepared file overrides
``store_coop``, ``store_clock`` or ``store_path``; one that needs data in it overrides ``store``
with a fixture that takes the ``store`` from here and fills it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from selenium import webdriver

from hub.storage.store import Store
from protocol.clock import ManualClock
from sim.broker import RunningBroker, run_mosquitto
from tests import browser as browsers
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


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the run, with a fresh profile. Missing packages fail the tests
    that need it with the command that installs them, never skip them: CI installs the browser,
    and a skip would hide an install step that broke."""
    folder = tmp_path_factory.mktemp("chromium")
    started = time.perf_counter()
    try:
        driver = browsers.start_chromium(
            browsers.new_profile_dir(folder), folder / "chromedriver.log"
        )
    except RuntimeError as exc:
        why = str(exc)
    else:
        why = ""
    if why:
        pytest.fail(why, pytrace=False)  # outside the except: the message alone, no traceback
    _browser_start_s.append(time.perf_counter() - started)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> webdriver.Chrome:
    """The session's Chromium on a blank desktop-sized page with no cookies, cache or storage
    left from an earlier test."""
    browsers.forget_everything(chromium)
    return chromium


_browser_start_s: list[float] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the browser is marked ``browser``, so ``-m 'not browser'`` leaves
    them out on a machine without Chromium."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where this run's screenshots are, and how long Chromium took to start."""
    if not (_browser_start_s or browsers.WRITTEN):
        return  # no browser test ran: nothing to say
    terminalreporter.section("browser")
    for seconds in _browser_start_s:
        terminalreporter.write_line(f"Chromium started in {seconds:.2f} s")
    shown = {p for p in browsers.WRITTEN if p.parent == browsers.SCREENSHOTS}
    if shown:
        terminalreporter.write_line(f"screenshots ({len(shown)}): {browsers.SCREENSHOTS}")
