"""Forecast features: solar geometry agrees with the simulator's, features never look ahead,
never hold NaN, and are normalised so the community's size does not matter."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from hub.forecast.features import (
    DAY_MS,
    DEMAND_FEATURES,
    PV_FEATURES,
    STEP_MS,
    WIND_FEATURES,
    History,
    demand_features,
    demand_level_w,
    estimate_capacity_w,
    pv_features,
    step_starts,
    wind_features,
)
from hub.forecast.solar import clear_sky_ghi_at, local_day_of_week, solar_elevation_deg
from hub.forecast.weather import WeatherSeries, to_steps
from sim import profiles
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

LAT, LON = 52.0, 5.0
T0 = JULY_1_2026_MIDNIGHT_UTC_MS  # a Wednesday
HOUR_MS = 3_600_000
WEATHER_SEED = 7


@lru_cache(maxsize=4)
def sim_community(
    days: int = 12, homes: int = 12, start_ms: int = T0 - 10 * DAY_MS
) -> tuple[History, WeatherSeries]:
    """The simulator's neighbourhood as 15-minute community series, and its weather as
    Open-Meteo-style hourly rows (radiation averaged over the preceding hour)."""
    n = days * 96
    t = start_ms + np.arange(n, dtype=np.int64) * STEP_MS
    demand = np.zeros(n)
    pv = np.zeros(n)
    wind = np.zeros(n)
    for i, ts in enumerate(t.tolist()):
        mid = ts + STEP_MS // 2
        ghi = profiles.clear_sky_ghi_w_m2(profiles.solar_elevation_deg(mid, LAT, LON))
        cloud = profiles.cloud_factor(WEATHER_SEED, mid)
        speed = profiles.wind_speed_m_s(WEATHER_SEED, mid)
        for home in range(homes):
            demand[i] += profiles.household_demand_w(home + 100, mid, LON)
        pv[i] = homes * 4000 * ghi / 1000 * profiles.PERFORMANCE_RATIO * cloud
        wind[i] = (homes // 2) * profiles.wind_power_w(speed, 2500)
    demand += pv + wind  # consumption does not depend on generation
    hours = start_ms + np.arange(1, days * 24 + 49, dtype=np.int64) * HOUR_MS
    radiation, speeds, temps = [], [], []
    for end in hours.tolist():
        samples = [end - HOUR_MS + k * 300_000 + 150_000 for k in range(12)]
        radiation.append(
            np.mean(
                [
                    profiles.clear_sky_ghi_w_m2(profiles.solar_elevation_deg(s, LAT, LON))
                    * profiles.cloud_factor(WEATHER_SEED, s)
                    for s in samples
                ]
            )
        )
        speeds.append(profiles.wind_speed_m_s(WEATHER_SEED, end) / 1.085)  # hub to 10 m
        temps.append(profiles.ambient_temperature_c(WEATHER_SEED, end, LON))
    cloud_pct = np.full(hours.size, np.nan)
    weather = WeatherSeries(
        hours, np.asarray(radiation), np.asarray(temps), np.asarray(speeds), cloud_pct
    )
    return History(start_ms, demand, pv, wind), weather


@pytest.mark.parametrize("ts", [T0, T0 + 11 * HOUR_MS, T0 + 180 * DAY_MS + 7 * HOUR_MS])
@pytest.mark.parametrize(("lat", "lon"), [(52.0, 5.0), (-33.9, 151.2), (64.1, -21.9)])
def test_solar_geometry_matches_the_simulators(ts: int, lat: float, lon: float) -> None:
    ours = solar_elevation_deg(np.asarray([ts]), lat, lon)[0]
    assert ours == pytest.approx(profiles.solar_elevation_deg(ts, lat, lon), abs=1e-6)
    expected = profiles.clear_sky_ghi_w_m2(profiles.solar_elevation_deg(ts, lat, lon))
    assert clear_sky_ghi_at(np.asarray([ts]), lat, lon)[0] == pytest.approx(expected, abs=1e-6)


def test_day_of_week_is_local_and_monday_is_zero() -> None:
    assert local_day_of_week(np.asarray([T0]), 0.0)[0] == 2  # Wednesday
    # 23:30 UTC on Wednesday is already Thursday at 150° E.
    assert local_day_of_week(np.asarray([T0 + 23 * HOUR_MS + 1_800_000]), 150.0)[0] == 3


def test_history_before_never_includes_the_issue_or_later() -> None:
    history, _ = sim_community()
    issue = T0 + 5 * HOUR_MS
    past = history.before(issue)
    assert past.end_ms == issue
    assert past.start_ms == issue - 28 * DAY_MS or past.start_ms == history.start_ms


def test_features_ignore_everything_from_the_issue_on() -> None:
    history, weather = sim_community()
    issue = T0 + 6 * HOUR_MS
    t = step_starts(issue, 192)
    sw = to_steps(weather, t, STEP_MS, LAT, LON)
    past = history.before(issue)
    poisoned = History(
        history.start_ms,
        history.demand_w.copy(),
        history.pv_w.copy(),
        history.wind_w.copy(),
    )
    cut = (issue - history.start_ms) // STEP_MS
    for series in (poisoned.demand_w, poisoned.pv_w, poisoned.wind_w):
        series[cut:] = 1e9
    level = demand_level_w(past)
    assert level is not None

    def build(h: History) -> list[np.ndarray]:
        return [
            demand_features(h, issue, 192, LAT, LON, level),
            pv_features(h, issue, 192, LAT, LON, sw, 48_000.0),
            wind_features(h, issue, 192, LON, sw, 15_000.0),
        ]

    for a, b in zip(build(past), build(poisoned.before(issue)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_features_are_finite_with_the_names_the_model_expects() -> None:
    history, weather = sim_community()
    issue = T0
    t = step_starts(issue, 192)
    sw = to_steps(weather, t, STEP_MS, LAT, LON)
    past = history.before(issue)
    level = demand_level_w(past)
    assert level is not None
    d = demand_features(past, issue, 192, LAT, LON, level)
    p = pv_features(past, issue, 192, LAT, LON, sw, 48_000.0)
    w = wind_features(past, issue, 192, LON, sw, 15_000.0)
    assert d.shape == (192, len(DEMAND_FEATURES))
    assert p.shape == (192, len(PV_FEATURES))
    assert w.shape == (192, len(WIND_FEATURES))
    for x in (d, p, w):
        assert x.dtype == np.float32
        assert np.isfinite(x).all()
    # A gap in history is filled by a stand-in, never NaN.
    gappy = History(past.start_ms, past.demand_w.copy(), past.pv_w.copy(), past.wind_w.copy())
    gappy.demand_w[-300:] = np.nan
    gappy.pv_w[::3] = np.nan
    assert np.isfinite(demand_features(gappy, issue, 192, LAT, LON, level)).all()
    assert np.isfinite(pv_features(gappy, issue, 192, LAT, LON, sw, 48_000.0)).all()


def test_demand_features_do_not_depend_on_the_communitys_size() -> None:
    history, _ = sim_community()
    issue = T0
    past = history.before(issue)
    doubled = History(past.start_ms, past.demand_w * 2, past.pv_w, past.wind_w)
    a = demand_features(past, issue, 96, LAT, LON, demand_level_w(past) or 1)
    b = demand_features(doubled, issue, 96, LAT, LON, demand_level_w(doubled) or 1)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_demand_mean_24h_is_the_last_days_level_against_the_weeks() -> None:
    """Six days at 1 kW, then a day at 500 W (a household away): the week's level is
    6.5 kW·d / 7 d, and the last day's level is 500 W against it."""
    start = T0 - 7 * DAY_MS
    demand = np.full(7 * 96, 1000.0)
    demand[-96:] = 500.0
    nan = np.full(demand.size, np.nan)
    past = History(start, demand, nan, nan)
    level = demand_level_w(past)
    assert level is not None
    assert level == pytest.approx(6500.0 / 7)
    col = DEMAND_FEATURES.index("mean_24h")
    x = demand_features(past, T0, 8, LAT, LON, level)
    np.testing.assert_allclose(x[:, col], 500.0 / level, rtol=1e-6)
    # Half of the last day missing: the half that is there speaks for it.
    demand[-48:] = np.nan
    assert demand_features(past, T0, 8, LAT, LON, level)[0, col] == pytest.approx(500.0 / level)
    # None of it there: the week's level stands in (1.0), never NaN.
    demand[-96:] = np.nan
    assert demand_features(past, T0, 8, LAT, LON, level)[0, col] == 1.0


def test_capacity_is_estimated_from_history_and_needs_a_day() -> None:
    history, _ = sim_community()
    cap = estimate_capacity_w(history.pv_w)
    assert cap is not None
    assert 0.5 * 12 * 4000 < cap <= 12 * 4000
    assert estimate_capacity_w(history.pv_w[:50]) is None
    assert estimate_capacity_w(np.zeros(500)) is None


def test_weather_resampling_puts_radiation_inside_its_hour_and_the_sun() -> None:
    _, weather = sim_community()
    t = step_starts(T0, 96)
    sw = to_steps(weather, t, STEP_MS, LAT, LON)
    night = clear_sky_ghi_at(t + STEP_MS // 2, LAT, LON) == 0
    assert (sw.ghi_w_m2[night] == 0).all()
    # The mean of the four steps of an hour is that hour's value (energy is conserved) when the
    # sun is up all hour.
    noon_hour_end = T0 + 13 * HOUR_MS - int(LON / 15 * HOUR_MS)
    noon_hour_end -= noon_hour_end % HOUR_MS
    i = int(np.searchsorted(weather.ts_ms, noon_hour_end))
    steps = (noon_hour_end - HOUR_MS - T0) // STEP_MS
    assert sw.ghi_w_m2[steps : steps + 4].mean() == pytest.approx(
        weather.shortwave_radiation_w_m2[i], rel=0.02
    )
    assert math.isfinite(sw.temperature_c[0]) and math.isfinite(sw.wind_speed_m_s[-1])


def test_weather_beyond_the_file_is_missing_not_invented() -> None:
    _, weather = sim_community()
    short = weather.between(T0, T0 + 6 * HOUR_MS)
    sw = to_steps(short, step_starts(T0, 96), STEP_MS, LAT, LON)
    assert np.isfinite(sw.wind_speed_m_s[:20]).all()
    assert np.isnan(sw.wind_speed_m_s[40:]).all()
    assert np.isnan(sw.ghi_w_m2[40:]).all()


def test_cloud_cover_stands_in_for_missing_radiation() -> None:
    hours = T0 + np.arange(1, 25, dtype=np.int64) * HOUR_MS
    nan = np.full(24, np.nan)
    clear = WeatherSeries(hours, nan, nan, nan, np.zeros(24))
    overcast = WeatherSeries(hours, nan, nan, nan, np.full(24, 100.0))
    t = step_starts(T0, 96)
    a = to_steps(clear, t, STEP_MS, LAT, LON).ghi_w_m2
    b = to_steps(overcast, t, STEP_MS, LAT, LON).ghi_w_m2
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert a.max() > 700
    np.testing.assert_allclose(b, 0.25 * a)


def test_local_time_without_a_timezone_is_mean_solar_time() -> None:
    from hub.forecast.local_time import LocalTime
    from hub.forecast.solar import local_solar_hour

    ts = T0 + np.arange(0, 8 * 96, 7, dtype=np.int64) * STEP_MS
    for lon in (5.0, -105.2, 151.2):
        local = LocalTime(lon)
        np.testing.assert_array_equal(local.hour(ts), local_solar_hour(ts, lon))
        np.testing.assert_array_equal(local.day_of_week(ts), local_day_of_week(ts, lon))


def test_local_time_follows_summer_time_and_keeps_holidays() -> None:
    from datetime import date

    from hub.forecast.local_time import LocalTime, day_number

    berlin = LocalTime(13.4, "Europe/Berlin")
    # 2026-03-29: clocks go from 02:00 to 03:00 CET, i.e. at 01:00 UTC.
    switch = 1_774_746_000_000  # 2026-03-29T01:00Z
    hours = berlin.hour(np.asarray([switch - STEP_MS, switch], dtype=np.int64))
    np.testing.assert_allclose(hours, [1.75, 3.0])
    assert berlin.hour(np.asarray([T0]))[0] == 2.0  # 2026-07-01T00:00Z is 02:00 CEST
    christmas = LocalTime(
        13.4,
        "Europe/Berlin",
        frozenset({day_number(date(2026, 12, 25))}),
        frozenset({day_number(date(2026, 12, 24)), day_number(date(2026, 12, 26))}),
    )
    eve_noon = 1_798_110_000_000  # 2026-12-24T11:00Z, a Thursday
    days = eve_noon + np.arange(3, dtype=np.int64) * DAY_MS
    assert berlin.day_of_week(days).tolist() == [3, 4, 5]
    # Christmas Eve like a Saturday, Christmas Day like a Sunday; a Saturday stays one.
    assert christmas.day_of_week(days).tolist() == [5, 6, 5]


def test_demand_features_see_holidays_as_sundays() -> None:
    from datetime import date

    from hub.forecast.site import Site

    history, _ = sim_community()
    past = history.before(T0)
    level = demand_level_w(past)
    assert level is not None
    site = Site(LAT, LON, timezone="Europe/Amsterdam", holidays=frozenset({date(2026, 7, 1)}))
    plain = demand_features(past, T0, 192, LAT, LON, level)
    kept = demand_features(past, T0, 192, LAT, LON, level, site.local)
    dow = DEMAND_FEATURES.index("day_of_week")
    weekend = DEMAND_FEATURES.index("weekend")
    assert plain[8, dow] == 2 and plain[8, weekend] == 0  # 02:00 local, a Wednesday
    assert kept[8, dow] == 6 and kept[8, weekend] == 1  # ... kept as a Sunday
    assert kept[100, dow] == 3  # the next day is an ordinary Thursday
