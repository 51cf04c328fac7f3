"""Forecast features: pure functions of the community's 15-minute history, the weather and the
cooperative's location. The same code builds features for training (``models/train.py``), for
backtests and for the hub's live forecast, so the three can never disagree.

Every target is forecast in a normalised form, so one model serves a cooperative of 50 homes and
one of 2,000: demand as a multiple of its mean over the last 7 days; PV and wind as a fraction of
their capacity (configured, or estimated from history by :func:`estimate_capacity_w`). Times are
UTC epoch ms; a step ``k`` covers ``[issue + k·15 min, issue + (k+1)·15 min)``. Missing history
is NaN; features never contain NaN (each has a stated stand-in), so the ONNX model needs no
missing-value support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from hub.forecast.local_time import LocalTime
from hub.forecast.solar import (
    FloatArray,
    IntArray,
    clear_sky_ghi_at,
    local_solar_hour,
    mean_clear_sky_ghi,
    solar_elevation_deg,
)
from hub.forecast.weather import StepWeather

STEP_MS: Final = 900_000
STEP_S: Final = 900
STEPS_PER_DAY: Final = 96
DAY_MS: Final = 86_400_000
HISTORY_DAYS: Final = 28
"""How much history a forecast reads: enough for last week and the capacity estimate."""
MIN_DEMAND_HISTORY_STEPS: Final = STEPS_PER_DAY
"""The demand model needs at least one day of history; less falls back."""

DEMAND_FEATURES: Final = (
    "hour_sin",
    "hour_cos",
    "day_of_week",
    "weekend",
    "horizon_h",
    "daylight",
    "lag_day",
    "lag_week",
    "lag_week_smooth",
    "same_weekday_2w",
    "profile_7d",
    "profile_daytype",
    "recent",
    "recent_vs_profile",
    "mean_24h",
)
PV_FEATURES: Final = (
    "hour_sin",
    "hour_cos",
    "horizon_h",
    "elevation",
    "clear_sky",
    "ghi",
    "clearness",
    "temperature",
    "hist_max_7d",
    "hist_mean_7d",
    "recent",
    "recent_clear_sky",
)
WIND_FEATURES: Final = (
    "hour_sin",
    "hour_cos",
    "horizon_h",
    "wind_speed",
    "wind_speed_cubed",
    "recent",
    "mean_24h",
)
FEATURES: Final = {"demand": DEMAND_FEATURES, "pv": PV_FEATURES, "wind": WIND_FEATURES}
TARGETS: Final = ("demand", "pv", "wind")


@dataclass(frozen=True)
class History:
    """The community's 15-minute mean powers (W) from ``start_ms``; NaN where unknown.

    ``demand_w`` is consumption (grid import + generation + battery discharge), ``pv_w`` and
    ``wind_w`` generation. All three have the same length.
    """

    start_ms: int
    demand_w: FloatArray
    pv_w: FloatArray
    wind_w: FloatArray

    def __post_init__(self) -> None:
        if self.start_ms % STEP_MS:
            raise ValueError("history must start on a 15-minute boundary")
        if not self.demand_w.size == self.pv_w.size == self.wind_w.size:
            raise ValueError("history series differ in length")

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.demand_w.size) * STEP_MS

    def series(self, target: str) -> FloatArray:
        return {"demand": self.demand_w, "pv": self.pv_w, "wind": self.wind_w}[target]

    def before(self, issue_ms: int, days: int = HISTORY_DAYS) -> History:
        """The last ``days`` of history strictly before ``issue_ms``."""
        first = max(self.start_ms, issue_ms - days * DAY_MS)
        first -= (first - self.start_ms) % STEP_MS
        i0 = max(0, (first - self.start_ms) // STEP_MS)
        i1 = max(i0, min(self.demand_w.size, (issue_ms - self.start_ms) // STEP_MS))
        return History(
            self.start_ms + i0 * STEP_MS,
            self.demand_w[i0:i1],
            self.pv_w[i0:i1],
            self.wind_w[i0:i1],
        )

    @classmethod
    def empty(cls, start_ms: int) -> History:
        nothing = np.zeros(0)
        return cls(start_ms - start_ms % STEP_MS, nothing, nothing, nothing)


def step_starts(issue_ms: int, steps: int) -> IntArray:
    """Start times (UTC ms) of the forecast's steps."""
    return issue_ms + np.arange(steps, dtype=np.int64) * STEP_MS


def _at(series: FloatArray, start_ms: int, t_ms: IntArray) -> FloatArray:
    """Values of ``series`` at slot start times ``t_ms``; NaN outside."""
    idx = (t_ms - start_ms) // STEP_MS
    ok = (idx >= 0) & (idx < series.size) & ((t_ms - start_ms) % STEP_MS == 0)
    out = np.full(t_ms.shape, np.nan)
    if series.size:
        out[ok] = series[idx[ok]]
    return out


def _nanmean(a: FloatArray, axis: int) -> FloatArray:
    count = np.isfinite(a).sum(axis=axis)
    total = np.where(np.isfinite(a), a, 0.0).sum(axis=axis)
    result: FloatArray = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return result


def _nanmax(a: FloatArray, axis: int) -> FloatArray:
    has = np.isfinite(a).any(axis=axis)
    result: FloatArray = np.where(has, np.where(np.isfinite(a), a, -np.inf).max(axis=axis), np.nan)
    return result


def _fill(a: FloatArray, stand_in: FloatArray | float) -> FloatArray:
    result: FloatArray = np.where(np.isfinite(a), a, stand_in)
    return result


def _same_slot_days(issue_ms: int, t: IntArray, days: int) -> IntArray:
    """For each step, the same time of day on the ``days`` most recent days before the issue."""
    back = np.ceil((t - issue_ms + 1) / DAY_MS).astype(np.int64)  # first whole day in the past
    back = np.maximum(back, 1)
    k = np.arange(days, dtype=np.int64)
    result: IntArray = t[:, None] - (back[:, None] + k[None, :]) * DAY_MS
    return result


def _time_features(t: IntArray, issue_ms: int, lon: float) -> tuple[FloatArray, ...]:
    mid = t + STEP_MS // 2
    hour = local_solar_hour(mid, lon)
    angle = 2 * np.pi * hour / 24.0
    horizon_h = (t - issue_ms + STEP_MS) / 3_600_000
    return np.sin(angle), np.cos(angle), horizon_h


def demand_level_w(history: History) -> float | None:
    """Mean community demand (W) over the last 7 days of history, or None when under a day."""
    tail = history.demand_w[-7 * STEPS_PER_DAY :]
    valid = tail[np.isfinite(tail)]
    if valid.size < MIN_DEMAND_HISTORY_STEPS or valid.mean() <= 0:
        return None
    return float(valid.mean())


def demand_features(
    history: History,
    issue_ms: int,
    steps: int,
    lat: float,
    lon: float,
    level_w: float,
    local: LocalTime | None = None,
) -> FloatArray:
    """Rows of :data:`DEMAND_FEATURES`; the target is demand / ``level_w``.

    Hour and day of the week are as the community keeps them (``local``: its clock, with
    holidays as Sundays and half-holidays as Saturdays); without ``local``, mean solar time at
    ``lon`` and no holidays.
    """
    local = local or LocalTime(lon)
    t = step_starts(issue_ms, steps)
    series = history.demand_w / level_w
    at = _at
    _, _, horizon_h = _time_features(t, issue_ms, lon)
    angle = 2 * np.pi * local.hour(t + STEP_MS // 2) / 24.0
    hour_sin, hour_cos = np.sin(angle), np.cos(angle)
    dow = local.day_of_week(t + STEP_MS // 2).astype(np.float64)
    weekend = (dow >= 5).astype(np.float64)
    daylight = clear_sky_ghi_at(t + STEP_MS // 2, lat, lon) / 1000.0
    same7 = _same_slot_days(issue_ms, t, 7)
    profile7 = _nanmean(at(series, history.start_ms, same7.ravel()).reshape(same7.shape), 1)
    profile7 = _fill(profile7, 1.0)
    lag_day = _fill(at(series, history.start_ms, same7[:, 0]), profile7)
    week = t - 7 * DAY_MS
    lag_week = _fill(at(series, history.start_ms, week), lag_day)
    around = np.arange(-2, 3, dtype=np.int64) * STEP_MS
    near_week = (week[:, None] + around[None, :]).ravel()
    lag_week_smooth = _nanmean(at(series, history.start_ms, near_week).reshape(-1, 5), 1)
    lag_week_smooth = _fill(lag_week_smooth, lag_week)
    weeks = np.stack([week, week - 7 * DAY_MS], axis=1).ravel()
    near_weeks = (weeks[:, None] + around[None, :]).ravel()
    same_weekday_2w = _nanmean(at(series, history.start_ms, near_weeks).reshape(-1, 10), 1)
    same_weekday_2w = _fill(same_weekday_2w, lag_week_smooth)
    same21 = _same_slot_days(issue_ms, t, 21)
    values21 = at(series, history.start_ms, same21.ravel()).reshape(same21.shape)
    dow21 = local.day_of_week(same21.ravel() + STEP_MS // 2).reshape(same21.shape)
    match = (dow21 >= 5) == (weekend[:, None] > 0.5)
    profile_daytype = _fill(_nanmean(np.where(match, values21, np.nan), 1), profile7)
    last_day = at(series, history.start_ms, issue_ms - STEP_MS * np.arange(1, STEPS_PER_DAY + 1))
    last = issue_ms - STEP_MS * np.arange(1, 5, dtype=np.int64)
    recent_values = last_day[: last.size]
    recent = float(np.nanmean(recent_values)) if np.isfinite(recent_values).any() else np.nan
    last_same = _same_slot_days(issue_ms, last, 7)
    last_profile = _nanmean(at(series, history.start_ms, last_same.ravel()).reshape(-1, 7), 1)
    profile_recent = float(np.nanmean(last_profile)) if np.isfinite(last_profile).any() else 1.0
    recent = 1.0 if not np.isfinite(recent) else recent
    recent_vs_profile = recent / profile_recent if profile_recent > 0 else 1.0
    # The last day's level against the week's: a household away, or back, shows here first.
    mean_24h = float(np.nanmean(last_day)) if np.isfinite(last_day).any() else 1.0
    n = t.size
    return np.column_stack(
        [
            hour_sin,
            hour_cos,
            dow,
            weekend,
            horizon_h,
            daylight,
            lag_day,
            lag_week,
            lag_week_smooth,
            same_weekday_2w,
            profile7,
            profile_daytype,
            np.full(n, recent),
            np.full(n, recent_vs_profile),
            np.full(n, mean_24h),
        ]
    ).astype(np.float32)


def estimate_capacity_w(series: FloatArray) -> float | None:
    """A generator's effective capacity (W) from its history: the 99.7th percentile of its
    15-minute means, or None when the history shows no generation (under a day, or all ~0).

    This is the normalisation the model was trained with; a configured capacity replaces it.
    """
    valid = series[np.isfinite(series)]
    if valid.size < STEPS_PER_DAY:
        return None
    cap = float(np.percentile(valid, 99.7))
    return cap if cap > 1.0 else None


def pv_features(
    history: History,
    issue_ms: int,
    steps: int,
    lat: float,
    lon: float,
    weather: StepWeather,
    capacity_w: float,
) -> FloatArray:
    """Rows of :data:`PV_FEATURES`; the target is PV power / ``capacity_w``."""
    t = step_starts(issue_ms, steps)
    mid = t + STEP_MS // 2
    hour_sin, hour_cos, horizon_h = _time_features(t, issue_ms, lon)
    elevation = solar_elevation_deg(mid, lat, lon) / 90.0
    clear = mean_clear_sky_ghi(t, STEP_MS, lat, lon, samples=3) / 1000.0
    ghi = _fill(weather.ghi_w_m2 / 1000.0, clear * 0.7)
    clearness = np.where(clear > 0.01, np.clip(ghi / np.maximum(clear, 0.01), 0.0, 1.5), 0.0)
    temperature = _fill(weather.temperature_c, 15.0)
    series = history.pv_w / capacity_w
    same7 = _same_slot_days(issue_ms, t, 7)
    values = _at(series, history.start_ms, same7.ravel()).reshape(same7.shape)
    hist_max = _fill(_nanmax(values, 1), clear * 0.8)
    hist_mean = _fill(_nanmean(values, 1), clear * 0.5)
    last = issue_ms - STEP_MS * np.arange(1, 5, dtype=np.int64)
    recent_values = _at(series, history.start_ms, last)
    recent_clear = float(mean_clear_sky_ghi(last, STEP_MS, lat, lon, samples=3).mean() / 1000.0)
    recent = float(np.nanmean(recent_values)) if np.isfinite(recent_values).any() else -1.0
    n = t.size
    return np.column_stack(
        [
            hour_sin,
            hour_cos,
            horizon_h,
            elevation,
            clear,
            ghi,
            clearness,
            temperature,
            hist_max,
            hist_mean,
            np.full(n, recent),
            np.full(n, recent_clear),
        ]
    ).astype(np.float32)


def wind_features(
    history: History,
    issue_ms: int,
    steps: int,
    lon: float,
    weather: StepWeather,
    capacity_w: float,
) -> FloatArray:
    """Rows of :data:`WIND_FEATURES`; the target is wind power / ``capacity_w``.

    Wind speed is Open-Meteo's at 10 m (m/s); the model learnt the turbines' height and power
    curve from the training data, and the recent output tells it how this site compares.
    """
    t = step_starts(issue_ms, steps)
    hour_sin, hour_cos, horizon_h = _time_features(t, issue_ms, lon)
    speed = _fill(weather.wind_speed_m_s, 4.0)
    cubed = np.minimum(speed, 25.0) ** 3 / 1000.0
    series = history.wind_w / capacity_w
    last = issue_ms - STEP_MS * np.arange(1, 5, dtype=np.int64)
    recent_values = _at(series, history.start_ms, last)
    recent = float(np.nanmean(recent_values)) if np.isfinite(recent_values).any() else -1.0
    day = issue_ms - STEP_MS * np.arange(1, STEPS_PER_DAY + 1, dtype=np.int64)
    day_values = _at(series, history.start_ms, day)
    mean_24h = float(np.nanmean(day_values)) if np.isfinite(day_values).any() else -1.0
    n = t.size
    return np.column_stack(
        [
            hour_sin,
            hour_cos,
            horizon_h,
            speed,
            cubed,
            np.full(n, recent),
            np.full(n, mean_24h),
        ]
    ).astype(np.float32)
