"""SimHome: counters are the exact integral of the power its devices show."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.quantities import GLOSSARY, STATES, Role, allowed_for
from sim import profiles
from sim.household import GRID_METER, PV_INVERTER, WIND_TURBINE, SimHome

MIN_MS = 60_000
WMS_PER_WH = 3_600_000


def utc_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


SUMMER_MIDNIGHT = utc_ms("2024-06-20T23:40:00")  # about local solar midnight at 5°E


def test_counters_equal_integral_of_shown_power_over_a_day() -> None:
    """Step a clock through a day in 1-minute steps, integrate the shown power ourselves."""
    clock = ManualClock(SUMMER_MIDNIGHT)
    home = SimHome("h1", 11, clock, step_s=60)
    start = {d: home.values(d, clock.now_ms()) for d in home.devices}
    import_wms = export_wms = pv_wms = wind_wms = 0
    for _ in range(1440):
        t = clock.now_ms()
        grid = int(home.values(GRID_METER, t)["power_w"])
        pv = int(home.values(PV_INVERTER, t)["power_w"])
        wind = int(home.values(WIND_TURBINE, t)["power_w"])
        import_wms += max(grid, 0) * MIN_MS
        export_wms += max(-grid, 0) * MIN_MS
        pv_wms += pv * MIN_MS
        wind_wms += wind * MIN_MS
        clock.advance(MIN_MS)
    end = {d: home.values(d, clock.now_ms()) for d in home.devices}

    def delta(device: str, key: str) -> float:
        return float(end[device][key]) - float(start[device][key])

    assert delta(GRID_METER, "energy_import_wh") == pytest.approx(import_wms / WMS_PER_WH, abs=1e-6)
    assert delta(GRID_METER, "energy_export_wh") == pytest.approx(export_wms / WMS_PER_WH, abs=1e-6)
    assert delta(PV_INVERTER, "energy_wh") == pytest.approx(pv_wms / WMS_PER_WH, abs=1e-6)
    assert delta(WIND_TURBINE, "energy_wh") == pytest.approx(wind_wms / WMS_PER_WH, abs=1e-6)
    # A June day: PV produces, the home both imports (evening) and exports (midday).
    assert pv_wms / WMS_PER_WH > 5000
    assert import_wms > 0
    assert export_wms > 0


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    start_ms=st.integers(min_value=utc_ms("2020-01-01T00:00:00"), max_value=utc_ms("2030-01-01")),
    steps_ms=st.lists(st.integers(min_value=0, max_value=95_000), min_size=1, max_size=40),
)
def test_partial_steps_integrate_exactly(seed: int, start_ms: int, steps_ms: list[int]) -> None:
    """Arbitrary clock moves (mid-step, several steps, none) against a reference from profiles."""
    clock = ManualClock(start_ms)
    home = SimHome("h", seed, clock, step_s=10)
    first = home.counters(start_ms)
    for dt in steps_ms:
        clock.advance(dt)
        home.values(GRID_METER, clock.now_ms())
    end_ms = clock.now_ms()
    last = home.counters(end_ms)

    ref = {"energy_import_wh": 0, "energy_export_wh": 0, "pv_wh": 0, "wind_wh": 0, "demand_wh": 0}
    t = start_ms
    while t < end_ms:
        s = t - t % 10_000
        e = min(s + 10_000, end_ms)
        demand = profiles.household_demand_w(seed, s, 5.0)
        pv = profiles.pv_power_w(seed, s, 52.0, 5.0, 4000)
        wind = profiles.wind_power_w(profiles.wind_speed_m_s(seed, s), 1500)
        grid = demand - pv - wind
        ref["energy_import_wh"] += max(grid, 0) * (e - t)
        ref["energy_export_wh"] += max(-grid, 0) * (e - t)
        ref["pv_wh"] += pv * (e - t)
        ref["wind_wh"] += wind * (e - t)
        ref["demand_wh"] += demand * (e - t)
        t = e
    for key, wms in ref.items():
        assert last[key] - first[key] == pytest.approx(wms / WMS_PER_WH, abs=1e-6), key


def test_grid_is_demand_minus_pv_minus_wind() -> None:
    clock = ManualClock(SUMMER_MIDNIGHT)
    home = SimHome("h2", 5, clock)
    for _ in range(48):
        t = clock.now_ms()
        powers = home.powers(t)
        grid = float(home.values(GRID_METER, t)["power_w"])
        pv = float(home.values(PV_INVERTER, t)["power_w"])
        wind = float(home.values(WIND_TURBINE, t)["power_w"])
        assert grid == powers.demand_w - pv - wind
        assert powers.grid_w == grid
        clock.advance(30 * MIN_MS)


def test_import_and_export_split_by_sign() -> None:
    clock = ManualClock(utc_ms("2024-06-21T00:00:00"))
    home = SimHome("h3", 2, clock, step_s=10)
    seen_import = seen_export = False
    for _ in range(24 * 12):
        t = clock.now_ms()
        before = home.values(GRID_METER, t)
        clock.advance(10_000)  # exactly one step
        after = home.values(GRID_METER, clock.now_ms())
        grid = float(before["power_w"])
        d_import = float(after["energy_import_wh"]) - float(before["energy_import_wh"])
        d_export = float(after["energy_export_wh"]) - float(before["energy_export_wh"])
        assert d_import == pytest.approx(max(grid, 0) * 10 / 3600, abs=1e-9)
        assert d_export == pytest.approx(max(-grid, 0) * 10 / 3600, abs=1e-9)
        seen_import |= grid > 0
        seen_export |= grid < 0
        clock.advance(5 * MIN_MS - 10_000)
    assert seen_import
    assert seen_export


def test_totals_since_baseline_and_energy_balance() -> None:
    clock = ManualClock(utc_ms("2024-06-21T03:00:00"))
    home = SimHome("h4", 9, clock)
    clock.advance(3_600_000)
    home.mark_baseline()
    base_ms = clock.now_ms()
    before = home.counters(base_ms)
    for _ in range(12):
        clock.advance(3_600_000)
        home.values(GRID_METER, clock.now_ms())  # the agent polls now and then
    clock.advance(123_456)  # end mid-step
    totals = home.totals()
    after = home.counters(clock.now_ms())
    assert set(totals) == {"energy_import_wh", "energy_export_wh", "pv_wh", "wind_wh", "demand_wh"}
    for key in totals:
        assert totals[key] == pytest.approx(after[key] - before[key], abs=1e-6)
    # Energy balance: demand = import − export + pv + wind, exactly.
    balance = totals["energy_import_wh"] - totals["energy_export_wh"] + totals["pv_wh"]
    assert totals["demand_wh"] == pytest.approx(balance + totals["wind_wh"], abs=1e-6)
    # since_ms recomputes the same baseline from the pure profiles.
    again = home.totals(since_ms=base_ms)
    for key in totals:
        assert again[key] == pytest.approx(totals[key], abs=1e-6)
    assert home.baseline_ms == base_ms


def test_totals_default_baseline_is_creation() -> None:
    clock = ManualClock(utc_ms("2024-03-01T12:00:00"))
    home = SimHome("h5", 1, clock)
    clock.advance(2 * 3_600_000)
    totals = home.totals()
    assert totals["demand_wh"] > 0
    assert totals == pytest.approx(home.totals(since_ms=home.created_ms))


def test_query_in_the_past_answers_for_the_last_integrated_time() -> None:
    clock = ManualClock(utc_ms("2024-06-21T12:00:00"))
    home = SimHome("h6", 3, clock)
    clock.advance(3_600_000)
    latest = home.values(PV_INVERTER, clock.now_ms())
    assert home.values(PV_INVERTER, clock.now_ms() - 1_800_000) == latest


def test_values_use_glossary_names_units_and_states() -> None:
    clock = ManualClock(utc_ms("2024-06-21T12:00:00"))
    home = SimHome("h7", 4, clock)
    for hour in (0, 12):
        t = utc_ms(f"2024-06-22T{hour:02d}:00:00")
        clock.set(t)
        for device, role in home.devices.items():
            values = home.values(device, t)
            for name, value in values.items():
                assert name in GLOSSARY, name
                assert allowed_for(role, name), (role, name)
                assert isinstance(value, GLOSSARY[name].kind)
            if "state" in values:
                assert values["state"] in STATES
        grid = home.values(GRID_METER, t)
        assert 225 <= float(grid["voltage_v"]) <= 235
        assert 49.9 <= float(grid["frequency_hz"]) <= 50.1
        expected_a = abs(float(grid["power_w"])) / (
            float(grid["voltage_v"]) * float(grid["power_factor"])
        )
        assert float(grid["current_a"]) == pytest.approx(expected_a, abs=0.006)
    night = SimHome("h7n", 4, ManualClock(utc_ms("2024-06-22T00:00:00")))
    assert night.values(PV_INVERTER, night.clock.now_ms())["state"] == "sleeping"
    assert night.values(PV_INVERTER, night.clock.now_ms())["power_w"] == 0.0
    assert night.values(PV_INVERTER, utc_ms("2024-06-22T12:00:00"))["state"] == "mppt"


def test_devices_and_roles() -> None:
    clock = ManualClock(utc_ms("2024-06-21T12:00:00"))
    home = SimHome("h8", 4, clock)
    assert home.devices == {GRID_METER: Role.GRID, PV_INVERTER: Role.PV, WIND_TURBINE: Role.WIND}
    no_wind = SimHome("h9", 4, clock, with_wind=False)
    assert WIND_TURBINE not in no_wind.devices
    with pytest.raises(KeyError):
        no_wind.values(WIND_TURBINE, clock.now_ms())
    assert no_wind.totals()["wind_wh"] == 0


def test_lifetime_counters_start_plausible_and_seeded() -> None:
    clock = ManualClock(utc_ms("2024-06-21T12:00:00"))
    starts = []
    for seed in range(30):
        home = SimHome(f"h{seed}", seed, clock)
        grid = home.values(GRID_METER, clock.now_ms())
        imp, exp = float(grid["energy_import_wh"]), float(grid["energy_export_wh"])
        pv = float(home.values(PV_INVERTER, clock.now_ms())["energy_wh"])
        assert 100_000 <= imp < 5_000_000
        assert 100_000 <= exp < 5_000_000
        assert 100_000 <= pv <= 10_000_000
        starts.append((imp, exp, pv))
    assert len(set(starts)) == 30


def test_shared_weather_seed_gives_the_same_sky() -> None:
    clock = ManualClock(utc_ms("2024-06-21T11:00:00"))
    a = SimHome("a", 1, clock, weather_seed=42)
    b = SimHome("b", 2, clock, weather_seed=42)
    t = clock.now_ms()
    assert a.values(PV_INVERTER, t)["power_w"] == b.values(PV_INVERTER, t)["power_w"]
    assert a.values(WIND_TURBINE, t)["power_w"] == b.values(WIND_TURBINE, t)["power_w"]
    assert a.powers(t).demand_w != b.powers(t).demand_w


def test_five_homes_catch_up_an_hour_in_one_query() -> None:
    """An hour of 10-second steps (360 per home) integrated on one query per device; how fast
    is for bench/sim_household.py to print, not for a test to assert."""
    start = utc_ms("2024-06-21T06:00:00")
    clock = ManualClock(start)
    homes = [SimHome(f"h{i}", i, clock) for i in range(5)]
    before = [home.counters(start) for home in homes]
    clock.advance(3_600_000)
    for home, counters in zip(homes, before, strict=True):
        for device in home.devices:
            assert home.values(device, clock.now_ms())
        after = home.counters(clock.now_ms())
        assert after["energy_import_wh"] >= counters["energy_import_wh"]
        assert after["pv_wh"] > counters["pv_wh"]  # a June morning: the panels produced
        assert home.counters_at(clock.now_ms()) == after


def test_counters_at_recomputes_any_past_time() -> None:
    from protocol.clock import ManualClock
    from sim.household import SimHome

    clock = ManualClock(1_782_900_000_000)
    home = SimHome("h", 3, clock)
    seen = {}
    for _ in range(100):
        clock.advance(37_000)
        seen[clock.now_ms()] = home.counters(clock.now_ms())
    for t, counters in seen.items():
        assert home.counters_at(t) == counters
