"""The simulator's pure profiles: solar geometry, PV, demand, wind."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sim import profiles as p

LAT, LON = 52.0, 5.0
MIN_MS = 60_000
DAY_MS = 86_400_000

seeds = st.integers(min_value=-(2**63), max_value=2**64)
times = st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 .. 2100


def utc_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def test_solar_elevation_matches_known_values() -> None:
    # Solar noon at 5°E is about 11:40 UTC in June, 11:47 UTC at the March equinox.
    assert abs(p.solar_elevation_deg(utc_ms("2024-06-21T11:40:00"), LAT, LON) - 61.4) < 0.5
    assert abs(p.solar_elevation_deg(utc_ms("2024-03-20T11:47:00"), LAT, LON) - 38.0) < 0.5
    assert abs(p.solar_elevation_deg(utc_ms("2024-12-21T11:52:00"), LAT, LON) - 14.6) < 0.5
    assert p.solar_elevation_deg(utc_ms("2024-06-21T23:40:00"), LAT, LON) < -10


def test_pv_zero_at_night_and_positive_at_summer_midday() -> None:
    for seed in range(20):
        assert p.pv_power_w(seed, utc_ms("2024-06-21T23:00:00"), LAT, LON, 4000) == 0
        assert p.pv_power_w(seed, utc_ms("2024-12-21T02:00:00"), LAT, LON, 4000) == 0
        noon = p.pv_power_w(seed, utc_ms("2024-06-21T11:40:00"), LAT, LON, 4000)
        assert 500 < noon <= 4000


def test_pv_clear_sky_midday_is_near_nameplate_times_performance_ratio() -> None:
    ghi = p.clear_sky_ghi_w_m2(61.4)
    assert 850 < ghi < 950  # W/m², Haurwitz at a 61° sun


def test_pv_yearly_yield_is_realistic_for_the_netherlands() -> None:
    t0 = utc_ms("2024-01-01T00:00:00")
    hourly_wh = sum(p.pv_power_w(7, t0 + h * 3_600_000, LAT, LON, 1000) for h in range(24 * 366))
    assert 800 < hourly_wh / 1000 < 1100  # kWh per kWp per year


@given(seed=seeds, ts_ms=times, capacity_w=st.integers(min_value=0, max_value=20_000))
def test_pv_is_bounded_by_nameplate(seed: int, ts_ms: int, capacity_w: int) -> None:
    pv = p.pv_power_w(seed, ts_ms, LAT, LON, capacity_w)
    assert isinstance(pv, int)
    assert 0 <= pv <= capacity_w


def _daily_kwh(seed: int, day_start_ms: int) -> float:
    return sum(p.household_demand_w(seed, day_start_ms + i * MIN_MS, LON) for i in range(1440)) / (
        60 * 1000
    )


def test_demand_daily_energy_is_realistic() -> None:
    # Local solar midnight at 5°E is 23:40 UTC; whole days either way.
    t0 = utc_ms("2024-05-06T00:00:00")
    days = [_daily_kwh(seed, t0 + (seed % 3) * DAY_MS) for seed in range(12)]
    assert all(5.0 < kwh < 17.0 for kwh in days), days
    assert 8.0 < sum(days) / len(days) < 12.0


def test_demand_has_base_load_and_morning_and_evening_peaks() -> None:
    t0 = utc_ms("2024-05-06T00:00:00") - round(LON / 15 * 3_600_000)  # local solar midnight
    night, morning, evening = [], [], []
    for seed in range(8):
        for day in range(3):
            for minute in range(0, 1440, 5):
                w = p.household_demand_w(seed, t0 + day * DAY_MS + minute * MIN_MS, LON)
                h = minute / 60
                if 1 <= h < 5:
                    night.append(w)
                elif 7 <= h < 8:
                    morning.append(w)
                elif 18.5 <= h < 20.5:
                    evening.append(w)
    night_mean = sum(night) / len(night)
    assert min(night) >= 150
    assert night_mean < 400
    assert sum(morning) / len(morning) > night_mean + 200
    evening_mean = sum(evening) / len(evening)
    assert 1300 < evening_mean < 3300
    assert max(evening) >= 1500


def test_base_load_range() -> None:
    loads = [p.base_load_w(seed) for seed in range(200)]
    assert all(150 <= w <= 350 for w in loads)
    assert max(loads) - min(loads) > 150  # seeds really differ


@given(seed=seeds, ts_ms=times)
def test_profiles_are_deterministic(seed: int, ts_ms: int) -> None:
    assert p.household_demand_w(seed, ts_ms, LON) == p.household_demand_w(seed, ts_ms, LON)
    assert p.pv_power_w(seed, ts_ms, LAT, LON, 4000) == p.pv_power_w(seed, ts_ms, LAT, LON, 4000)
    assert p.wind_speed_m_s(seed, ts_ms) == p.wind_speed_m_s(seed, ts_ms)
    assert isinstance(p.household_demand_w(seed, ts_ms, LON), int)


def test_seeds_give_different_homes() -> None:
    t0 = utc_ms("2024-05-06T18:00:00")
    series = {
        seed: tuple(p.household_demand_w(seed, t0 + i * MIN_MS, LON) for i in range(60))
        for seed in range(5)
    }
    assert len(set(series.values())) == 5


@given(seed=seeds, ts_ms=times)
def test_wind_speed_is_non_negative(seed: int, ts_ms: int) -> None:
    v = p.wind_speed_m_s(seed, ts_ms)
    assert 0.0 <= v < 40.0


def test_wind_speed_mean_and_smoothness() -> None:
    t0 = utc_ms("2024-01-01T00:00:00")
    speeds = [p.wind_speed_m_s(seed, t0 + h * 3_600_000) for seed in range(4) for h in range(2400)]
    assert 4.3 < sum(speeds) / len(speeds) < 5.7
    assert max(speeds) > 11.0  # reaches rated power sometimes
    # Slowly varying: a minute apart differs by little.
    steps = [
        abs(p.wind_speed_m_s(3, t0 + i * MIN_MS) - p.wind_speed_m_s(3, t0 + (i + 1) * MIN_MS))
        for i in range(1000)
    ]
    assert max(steps) < 0.5


def test_power_curve_shape() -> None:
    rated = 1500
    assert p.wind_power_w(0.0, rated) == 0
    assert p.wind_power_w(2.99, rated) == 0
    assert p.wind_power_w(3.0, rated) == 0  # cut-in: the cubic starts from zero
    assert 0 < p.wind_power_w(5.0, rated) < p.wind_power_w(8.0, rated) < rated
    assert p.wind_power_w(11.0, rated) == rated
    assert p.wind_power_w(18.0, rated) == rated
    assert p.wind_power_w(25.0, rated) == rated
    assert p.wind_power_w(25.01, rated) == 0
    # Cubic: (v³ − 27) / (1331 − 27) of rated.
    assert p.wind_power_w(7.0, rated) == round(rated * (343 - 27) / (1331 - 27))


@given(
    v1=st.floats(min_value=0.0, max_value=25.0),
    v2=st.floats(min_value=0.0, max_value=25.0),
    rated=st.integers(min_value=1, max_value=100_000),
)
def test_power_curve_is_monotonic_up_to_cut_out(v1: float, v2: float, rated: int) -> None:
    lo, hi = sorted((v1, v2))
    assert 0 <= p.wind_power_w(lo, rated) <= p.wind_power_w(hi, rated) <= rated


def test_rotor_rpm() -> None:
    assert p.rotor_rpm(8.0, running=False) == 0
    assert 0 < p.rotor_rpm(5.0, running=True) < p.rotor_rpm(8.0, running=True) <= 450
    assert p.rotor_rpm(30.0, running=True) == 450


@given(seed=seeds, ts_ms=times)
def test_grid_conditions_are_plausible(seed: int, ts_ms: int) -> None:
    assert 225.0 <= p.grid_voltage_v(seed, ts_ms) <= 235.0
    assert 49.94 <= p.grid_frequency_hz(ts_ms) <= 50.06
    assert 0.9 <= p.load_power_factor(seed, ts_ms) <= 0.99
    assert -15.0 <= p.ambient_temperature_c(seed, ts_ms, LON) <= 35.0
