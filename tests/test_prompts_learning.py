"""How the hub learns what a home shifts (pure): outcomes from meters and answers, a faded
record, and an estimate that finds each home's real habit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.prompts.learning import (
    DAY_MS,
    HALF_LIFE_MS,
    MIN_SHIFT,
    HomeMeters,
    ShiftEstimate,
    consumption_wh,
    counter_at,
    feedback_outcome,
    measure_run,
    metered_outcome,
    run_outcome,
)
from hub.prompts.planner import JobKey
from tests.test_prompts_hub import H as PLAN_H
from tests.test_prompts_hub import Hub, forecast
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
H = 3_600_000


def test_an_unknown_home_counts_as_following_half_the_time() -> None:
    assert ShiftEstimate().shift == 0.5


@pytest.mark.parametrize("true_shift", [0.1, 0.5, 0.9])
def test_the_estimate_finds_a_homes_habit(true_shift: float) -> None:
    rng = random.Random(7)
    est = ShiftEstimate()
    t = T0
    for _ in range(60):  # two months of daily runs that happen on 4 days in 7
        t += DAY_MS
        chance = 4 / 7
        if rng.random() < chance:  # it ran that day: in its window or not
            est = est.observe(1.0 if rng.random() < true_shift else 0.0, chance, t)
        else:
            est = est.observe(0.0, chance, t)
    assert est.shift == pytest.approx(true_shift, abs=0.15)


def test_old_runs_fade_so_a_changed_habit_is_followed() -> None:
    est = ShiftEstimate()
    for day in range(30):
        est = est.observe(1.0, 1.0, T0 + day * DAY_MS)
    assert est.shift > 0.9
    later = T0 + 30 * DAY_MS
    for day in range(30):
        est = est.observe(0.0, 1.0, later + day * DAY_MS)
    assert est.shift < 0.4
    faded = est.faded(est.updated_ms + HALF_LIFE_MS)
    assert faded.expected == pytest.approx(est.expected / 2)


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0, 1)), max_size=50))
def test_the_estimate_stays_a_probability(outcomes: list[tuple[float, float]]) -> None:
    est = ShiftEstimate()
    for i, (outcome, chance) in enumerate(outcomes):
        est = est.observe(outcome, chance, T0 + i * H)
    assert MIN_SHIFT <= est.shift <= 1.0


def test_answers_and_meters_make_an_outcome() -> None:
    assert feedback_outcome([]) is None
    assert feedback_outcome(["accepted"]) == 0.6
    assert feedback_outcome(["accepted", "snoozed"]) == 0.0
    assert feedback_outcome(["snoozed", "done", "accepted"]) == 1.0
    assert run_outcome(None, None) is None
    assert run_outcome(None, 0.6) == 0.6
    assert run_outcome(0.0, None) == 0.0
    assert run_outcome(0.0, 1.0) == pytest.approx(0.3)  # said done; the meters saw nothing
    assert metered_outcome(1300, 500, 1000) == 1.0
    assert metered_outcome(900, 500, 1000) == pytest.approx(0.5)
    assert metered_outcome(100, 500, 1000) == 0.0


def test_counters_are_interpolated_between_readings() -> None:
    series = [(T0, 100.0), (T0 + H, 200.0)]
    assert counter_at(series, T0 + H // 4) == pytest.approx(125.0)
    assert counter_at(series, T0) == 100.0
    assert counter_at(series, T0 - 1) is None and counter_at(series, T0 + H + 1) is None


def _series(rate_w: float, extra: dict[int, float], days: int = 5) -> list[tuple[int, float]]:
    out, v = [], 0.0
    start = T0 - 4 * DAY_MS
    for k in range(days * 96 + 1):
        t = start + k * 900_000
        out.append((t, v))
        v += (rate_w + extra.get(t, 0.0)) * 0.25
    return out


def test_a_run_shows_in_the_whole_homes_use_against_the_days_before() -> None:
    window = (T0 + H, T0 + 3 * H)
    ran = {t: 1000.0 for t in range(*window, 900_000)}
    # The home also ran its dryer at the same hour two days ago: the least of three days wins.
    ran.update({t - 2 * DAY_MS: 800.0 for t in range(*window, 900_000)})
    meters = HomeMeters({"grid": _series(300, ran)}, {}, {}, {})
    assert measure_run(meters, "washer", [window], 2000.0) == pytest.approx(1.0)
    idle = HomeMeters({"grid": _series(300, {})}, {}, {}, {})
    assert measure_run(idle, "washer", [window], 2000.0) == pytest.approx(0.0)
    # Own generation counts as use: import falls when the panels cover the washer.
    pv = {t: 1000.0 for t in range(*window, 900_000)}
    solar = HomeMeters({"grid": _series(300, {})}, {}, {"pv": _series(0, pv)}, {})
    assert consumption_wh(solar, *window) == pytest.approx(2600.0)
    assert measure_run(solar, "washer", [window], 2000.0) == pytest.approx(1.0)


def test_a_sub_meter_named_like_the_appliance_measures_it_alone() -> None:
    window = (T0 + H, T0 + 3 * H)
    sub = _series(0, {t: 500.0 for t in range(*window, 900_000)})
    meters = HomeMeters({}, {}, {}, {"ev-charger": sub})
    assert measure_run(meters, "ev-charger", [window], 2000.0) == pytest.approx(0.625)
    assert measure_run(meters, "washer", [window], 1000.0) is None  # no grid meter at all


def test_meters_that_do_not_cover_the_window_cannot_tell() -> None:
    window = (T0 + 10 * DAY_MS, T0 + 10 * DAY_MS + H)
    meters = HomeMeters({"grid": _series(300, {})}, {}, {}, {})
    assert measure_run(meters, "washer", [window], 1000.0) is None


def test_a_run_is_judged_on_the_window_it_was_sent_not_on_a_later_replan(tmp_path: Path) -> None:
    # The hub re-plans every three hours from 06:00 UTC. A washer run that is over must stay as
    # it was sent: re-planned into the afternoon, its record (what learn() judges the meters and
    # answers against) would name a window the household never saw, and it would be prompted
    # twice in a day.
    hub = Hub(tmp_path)
    try:
        began: dict[JobKey, tuple[tuple[int, int], ...]] = {}
        for _ in range(5):
            now = hub.clock.now_ms()
            hub.service.on_forecast(forecast(now))
            hub.service.replan()
            for r in hub.service.db.runs():
                if r.start_ms < now:
                    began.setdefault(r.key, r.windows)
            hub.clock.advance(3 * PLAN_H)
        today = {k for k in began if k[2] == "2026-07-01"}
        assert len(today) == len(hub.homes)
        recorded = {r.key: r.windows for r in hub.service.db.runs()}
        for key in today:
            assert recorded[key] == began[key], key
    finally:
        hub.close()
