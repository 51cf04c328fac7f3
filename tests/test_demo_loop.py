"""The demo's whole loop: the forecast the hub issued, the prompts each home received, and each
home's settlement in money, checked against the simulator's own record where money meets energy.
"""

from __future__ import annotations

import io
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.forecast.weather import parse_open_meteo_json
from protocol.clock import ManualClock
from protocol.payloads import AppliancePrompt, LevelSpan, Prompts, PromptWindow
from sim.cli import _parse_start
from sim.demo import DemoOptions, DemoResult, Progress, format_summary, run_demo, sim_home
from sim.demo_loop import (
    TIMEZONE,
    LocalClock,
    Received,
    appliance_runs,
    demo_appliances,
    light_course,
)
from sim.weather import sky_forecast_json

# 2026-07-01 06:00 in Amsterdam (04:00 UTC), a Wednesday: the sun is rising on roofs of
# different sizes, so some neighbours export while others still import.
START_MS = int(datetime(2026, 7, 1, 4, 0, tzinfo=UTC).timestamp() * 1000)
HOURS = 3
HOMES = 5  # the fifth declares no appliances
QUARTER_MS = 900_000


class PageVisitor(Progress):
    """The newcomer: opens the household page the demo announces, while the demo runs."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.seen: str | None = None

    def note(self, text: str) -> None:
        super().note(text)
        if "household page: " in text:
            url = text.split("household page: ", 1)[1].split(" ", 1)[0]
            with urllib.request.urlopen(url, timeout=10) as answer:  # follows to the setup page
                self.seen = answer.read().decode()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str]:
    db = tmp_path_factory.mktemp("demo") / "d.db"
    visitor = PageVisitor()
    result = run_demo(
        DemoOptions(homes=HOMES, hours=HOURS, speed=1800, db=db, start_ms=START_MS), visitor
    )
    # The page answered while the demo ran: the first visit asks for the one-time code.
    assert visitor.seen is not None and 'name="code"' in visitor.seen
    return result, format_summary(result)


def test_the_loop_runs_and_energy_still_agrees(run: tuple[DemoResult, str]) -> None:
    result, text = run
    assert result.ok, result.homes
    assert result.loop is not None
    assert result.page is not None and "first-visit code" in result.page
    for heading in ("== Energy", "== Forecast", "== Prompts", "== Settlement"):
        assert heading in text


def test_the_summary_shows_when_the_forecast_was_issued_and_how(
    run: tuple[DemoResult, str],
) -> None:
    result, text = run
    assert result.loop is not None
    f = result.loop.forecast
    assert f is not None
    # Issued during the run, the last of them at its end, from what the hub had.
    assert START_MS <= f.issued_ms <= START_MS + HOURS * 3_600_000
    assert result.loop.forecasts_issued >= 2
    issued = LocalClock(START_MS, START_MS).zone
    stamp = datetime.fromtimestamp(f.issued_ms / 1000, issued).strftime("%Y-%m-%d %H:%M")
    assert f"the last at {stamp}" in text
    assert f.model in text
    # Three hours of history is under a day: demand falls back, and the summary says why.
    assert f.demand.method == "fallback"
    assert "demand: fallback; under a day of demand history" in text
    assert f.pv.method == "model"  # the simulated sky was imported as its weather


def test_every_home_got_prompts_or_the_summary_says_why(run: tuple[DemoResult, str]) -> None:
    result, text = run
    assert result.loop is not None
    lines = text.splitlines()
    for i in range(HOMES):
        home = f"home-{i + 1:02d}"
        appliances = demo_appliances(i)
        received = result.loop.prompts[home]
        if not appliances:
            assert not received
            assert f"{home}: no prompts: the household declared no flexible appliances" in text
            continue
        assert received, home
        first = next(n for n, line in enumerate(lines) if line.startswith(f"{home} ("))
        assert f"{len(received)} prompt sets received" in lines[first]
        assert lines[first + 1].startswith("  light  ")
        assert any(level in lines[first + 1] for level in ("green", "amber", "red"))
        # Every appliance's run of the day is shown with its window in local time.
        told = {a.appliance for r in received for a in r.prompts.appliances}
        assert told <= {a.name for a in appliances}
        for name in told:
            assert any(line.startswith(f"  {name:16} run ") for line in lines[first:]), name


def _neighbours_from_the_simulator(joined: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Hand-worked SDR from the simulated meters' own counters: in each quarter-hour what the
    exporting homes delivered and the importing homes took is matched up to the smaller; each
    importer's share of the matched energy is its import's share of the community's import.
    A home counts from quarter-hour ``joined[home]`` of the run on (its agent's first reading
    may come a poll late, and settlement starts at the first quarter-hour after it)."""
    clock = ManualClock(START_MS)
    homes = [sim_home(i, 1, clock) for i in range(HOMES)]
    matched_total = 0.0
    bought = {h.home: 0.0 for h in homes}
    for k in range(HOURS * 4):
        t = START_MS + k * QUARTER_MS
        imports, exports = {}, {}
        for h in homes:
            if k < joined[h.home]:
                continue
            a, b = h.counters_at(t), h.counters_at(t + QUARTER_MS)
            imports[h.home] = b["energy_import_wh"] - a["energy_import_wh"]
            exports[h.home] = b["energy_export_wh"] - a["energy_export_wh"]
        demand, supply = sum(imports.values()), sum(exports.values())
        matched = min(demand, supply)
        matched_total += matched
        for home, imp in imports.items():
            bought[home] += matched * imp / demand if demand else 0.0
    return matched_total, bought


def test_every_home_is_settled_in_money_and_neighbours_balance(
    run: tuple[DemoResult, str],
) -> None:
    result, text = run
    assert result.loop is not None
    settled = {s.statement.home: s for s in result.loop.settlements}
    assert sorted(settled) == [f"home-{i + 1:02d}" for i in range(HOMES)]
    for home, s in settled.items():
        st = s.statement
        assert st.currency == "EUR"
        # The run's quarter-hours are settled (from the first that starts at or after the
        # agent's first reading); the rest of the local day has no readings yet.
        assert HOURS * 4 - 1 <= st.intervals - st.provisional_intervals <= HOURS * 4
        section = text.split("== Settlement")[1]
        row = next(line for line in section.splitlines() if line.startswith(home + " "))
        assert f"{st.total_minor / 100:.2f}" in row
        assert f"{st.saving_minor / 100:.2f}" in row
        assert st.saving_minor >= 0  # SDR never costs a member more than the grid would

    # What homes bought from neighbours is what neighbours sold them, and both are what the
    # simulator's own meters say was there to match (the hub reads counters the agents polled
    # between quarter-hour boundaries and interpolates them: a few Wh of slack per home).
    joined = {
        home: HOURS * 4 - (s.statement.intervals - s.statement.provisional_intervals)
        for home, s in settled.items()
    }
    matched_wh, bought_wh = _neighbours_from_the_simulator(joined)
    assert matched_wh > 150  # there is sharing to check
    bought, sold = result.loop.neighbours_wh()
    assert bought == pytest.approx(sold, abs=HOMES)  # each home's figure is rounded to the Wh
    assert bought == pytest.approx(matched_wh, rel=0.02, abs=10)
    for home, s in settled.items():
        assert s.line("import-neighbours")[0] == pytest.approx(bought_wh[home], rel=0.05, abs=10), (
            home
        )
    paid, earned = result.loop.neighbours_minor()
    assert paid == pytest.approx(earned, abs=HOMES)  # each home's amount rounded to the cent
    assert f"{bought / 1000:.3f} kWh bought and {sold / 1000:.3f} kWh sold" in text


# -- the pure parts ------------------------------------------------------------------------------

T0 = START_MS
MIN = 60_000


def _prompts(
    prompt: str, spans: list[tuple[int, int, str]], windows: list[tuple[int, int]]
) -> Prompts:
    """A prompt set issued when its first level span starts."""
    return Prompts(
        home="home-01",
        prompt=prompt,
        issued_ms=spans[0][0],
        valid_until_ms=spans[-1][1],
        level=spans[0][2],  # type: ignore[arg-type]
        reason="why",
        levels=[LevelSpan(a, b, lvl, "why") for a, b, lvl in spans],  # type: ignore[arg-type]
        appliances=[
            AppliancePrompt("dishwasher", [PromptWindow(a, b) for a, b in windows], "sun", 500, 100)
        ]
        if windows
        else [],
        benefit_wh=100.0 if windows else 0.0,
    )


def test_the_light_follows_each_prompt_set_until_the_next_arrives() -> None:
    first = _prompts(
        "p1", [(T0, T0 + 60 * MIN, "amber"), (T0 + 60 * MIN, T0 + 180 * MIN, "green")], []
    )
    # The second arrives 90 minutes in and turns the rest of the green span red after an hour.
    second = _prompts(
        "p2",
        [(T0 + 90 * MIN, T0 + 150 * MIN, "green"), (T0 + 150 * MIN, T0 + 270 * MIN, "red")],
        [],
    )
    course = light_course([Received(T0 + 90 * MIN, second), Received(T0, first)], T0 + 240 * MIN)
    assert [(a - T0, b - T0, level) for a, b, level, _ in course] == [
        (0, 60 * MIN, "amber"),
        (60 * MIN, 150 * MIN, "green"),  # one span: the level did not change at 90 minutes
        (150 * MIN, 240 * MIN, "red"),  # cut at the run's end
    ]


def test_a_run_moved_by_a_re_plan_is_one_run_and_counted() -> None:
    zone = LocalClock(T0, T0).zone
    day = [(T0, T0 + 240 * MIN, "green")]
    a = _prompts("p1", day, [(T0 + 60 * MIN, T0 + 180 * MIN)])
    b = _prompts("p2", day, [(T0 + 90 * MIN, T0 + 210 * MIN)])
    runs = appliance_runs([Received(T0, a), Received(T0 + 30 * MIN, b)], demo_appliances(0), zone)
    assert runs == [("dishwasher", [(T0 + 90 * MIN, T0 + 210 * MIN)], T0, 1)]


def test_local_times_name_other_days_and_midnight_ends_the_day() -> None:
    midnight = int(datetime(2026, 6, 30, 22, 0, tzinfo=UTC).timestamp() * 1000)  # 1 July, 00:00
    at = LocalClock(midnight, midnight + 86_400_000)
    assert at.zone.key == TIMEZONE
    assert at(midnight + 11 * 3_600_000) == "11:00"
    assert at(midnight + 86_400_000) == "24:00"
    assert at.span(midnight + 35 * 3_600_000, midnight + 37 * 3_600_000) == "Thu 11:00-13:00"


def test_the_simulated_sky_is_an_open_meteo_file_the_hub_reads(tmp_path: Path) -> None:
    text = sky_forecast_json(1, T0, T0 + 86_400_000, 52.0, 5.0)
    weather = parse_open_meteo_json(text)
    assert len(weather) == 25
    hours = {int(t): i for i, t in enumerate(weather.ts_ms)}
    noon = hours[T0 + 8 * 3_600_000]  # 14:00 local: the hour before it is bright
    night = hours[T0 + 19 * 3_600_000]  # 01:00 local
    assert weather.shortwave_radiation_w_m2[noon] > 100
    assert weather.shortwave_radiation_w_m2[night] == 0
    assert 0 <= weather.cloud_cover_pct[noon] <= 100
    assert json.loads(text)["hourly_units"]["wind_speed_10m"] == "m/s"


def test_the_default_start_is_midnight_where_the_homes_are() -> None:
    start = datetime.fromtimestamp(_parse_start(None) / 1000, LocalClock(0, 0).zone)
    assert (start.hour, start.minute) == (0, 0)
