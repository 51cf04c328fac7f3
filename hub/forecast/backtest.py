"""Backtests: replay forecasts issued in the past against what happened, beside two baselines.

For each issue time the forecast sees only history before it
(:func:`hub.forecast.model.make_forecast` enforces that), then every step with a known actual is
scored. Baselines, from the same history:

- ``persistence_24h``: the value at the same time of day on the most recent day before the
  issue (24 hours earlier for the first day ahead, 48 for the second);
- ``last_week``: the value at the same time one week earlier.

Per target and horizon band: MAE and RMSE (W) of the P50 and of each baseline, skill as
``1 − error_model / error_baseline`` (on MAE and on RMSE; positive is better than the baseline),
and the share of actuals inside [P10, P90] (ideally 80 %), below P10 and above P90; for PV also
over daylight steps only and for wind over steps where it turned (output above zero), where the
band matters (night and calm are zeros any band covers). Only steps where the model ran (method
``model``, or ``selected`` for demand) are scored, and the count of forecasts that fell back is
reported.

Forecasts are tuned as the hub tunes them (:func:`hub.forecast.model.tuned_forecast`) unless
``tuned`` is off, and demand's report has every candidate of the tuning
(:data:`hub.forecast.tuning.DEMAND_CANDIDATES`) scored beside it, so an operator sees why one is
chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np

from hub.forecast.features import DAY_MS, STEP_MS, STEPS_PER_DAY, TARGETS, History, step_starts
from hub.forecast.model import ForecastModel, make_forecast, replay, tuned_forecast
from hub.forecast.site import Site
from hub.forecast.solar import FloatArray, mean_clear_sky_ghi
from hub.forecast.tuning import DEMAND_CANDIDATES, ReplayCache, local_predict
from hub.forecast.weather import WeatherSeries

BANDS: Final = (("0-6h", 0, 24), ("6-24h", 24, 96), ("24-48h", 96, 192), ("all", 0, 192))
MIN_HISTORY_DAYS: Final = 8  # a week for the last-week baseline, and a day to spare


@dataclass
class _Scores:
    horizon: list[np.ndarray] = field(default_factory=list)
    actual: list[FloatArray] = field(default_factory=list)
    p10: list[FloatArray] = field(default_factory=list)
    p50: list[FloatArray] = field(default_factory=list)
    p90: list[FloatArray] = field(default_factory=list)
    persistence: list[FloatArray] = field(default_factory=list)
    last_week: list[FloatArray] = field(default_factory=list)
    matters: list[np.ndarray] = field(default_factory=list)  # daylight (PV), turning (wind)
    candidates: dict[str, list[FloatArray]] = field(default_factory=dict)
    forecasts: int = 0
    fallbacks: int = 0


def _values_at(history: History, target: str, t: np.ndarray) -> FloatArray:
    series = history.series(target)
    idx = (t - history.start_ms) // STEP_MS
    ok = (idx >= 0) & (idx < series.size)
    out = np.full(t.shape, np.nan)
    out[ok] = series[idx[ok]]
    return out


def default_issues(history: History, every_hours: int = 6) -> list[int]:
    """Issue times every ``every_hours`` from a week and a day into the history to its end."""
    every_ms = every_hours * 3_600_000
    first = history.start_ms + MIN_HISTORY_DAYS * DAY_MS
    first += -first % every_ms
    return list(range(first, history.end_ms - STEP_MS, every_ms))


RETRAIN_START_DAYS: Final = MIN_HISTORY_DAYS  # history before the first training issue
RETRAIN_TRAIN_DAYS: Final = 7  # at least this many days of issues to train on


def retrain_shortfall(history: History, holdout_days: int) -> str | None:
    """Why ``history`` is too short to retrain on (a sentence), or None when it will do.

    Retraining needs :data:`RETRAIN_START_DAYS` days before its first training issue (the
    features look back a week), :data:`RETRAIN_TRAIN_DAYS` days of issues to train on and
    ``holdout_days`` to test the new model against the current one: that many days from the
    first to the last slot, and that many days' worth of demand readings. Cheap, so a command
    can refuse before it spends minutes training.
    """
    needed = RETRAIN_START_DAYS + RETRAIN_TRAIN_DAYS + holdout_days
    days = float(np.isfinite(history.demand_w).sum()) / STEPS_PER_DAY
    span = (history.end_ms - history.start_ms) / DAY_MS
    if days >= needed and span >= needed:
        return None
    return (
        f"the database holds {days:.1f} days of demand history; retraining needs at least "
        f"{needed} ({RETRAIN_START_DAYS} to start, {RETRAIN_TRAIN_DAYS} to train on, "
        f"{holdout_days} to test)"
    )


def _safe_ratio(num: float, den: float) -> float | None:
    return None if not den > 0 else round(1.0 - num / den, 4)


def _band_metrics(s: _Scores, lo: int, hi: int, target: str) -> dict[str, Any]:
    h = np.concatenate(s.horizon)
    keep = (h >= lo) & (h < hi)
    a = np.concatenate(s.actual)[keep]
    p10, p50, p90 = (np.concatenate(x)[keep] for x in (s.p10, s.p50, s.p90))
    pers = np.concatenate(s.persistence)[keep]
    week = np.concatenate(s.last_week)[keep]
    matters = np.concatenate(s.matters)[keep]
    candidates = {c: np.concatenate(v)[keep] for c, v in s.candidates.items()}
    ok = np.isfinite(a) & np.isfinite(pers) & np.isfinite(week)
    a, p10, p50, p90, pers, week = a[ok], p10[ok], p50[ok], p90[ok], pers[ok], week[ok]
    matters = matters[ok] & (a > 0 if target == "wind" else True)
    candidates = {c: v[ok] for c, v in candidates.items()}
    if a.size == 0:
        return {"n": 0}

    def mae(f: FloatArray) -> float:
        return float(np.mean(np.abs(f - a)))

    def rmse(f: FloatArray) -> float:
        return float(np.sqrt(np.mean((f - a) ** 2)))

    m, r = mae(p50), rmse(p50)
    mp, rp, mw, rw = mae(pers), rmse(pers), mae(week), rmse(week)
    inside = (a >= p10) & (a <= p90)
    out: dict[str, Any] = {
        "n": int(a.size),
        "mean_actual_w": round(float(a.mean()), 1),
        "mae_w": round(m, 1),
        "rmse_w": round(r, 1),
        "persistence_24h": {"mae_w": round(mp, 1), "rmse_w": round(rp, 1)},
        "last_week": {"mae_w": round(mw, 1), "rmse_w": round(rw, 1)},
        "skill_mae_vs_persistence_24h": _safe_ratio(m, mp),
        "skill_rmse_vs_persistence_24h": _safe_ratio(r, rp),
        "skill_mae_vs_last_week": _safe_ratio(m, mw),
        "skill_rmse_vs_last_week": _safe_ratio(r, rw),
        "coverage_p10_p90": round(float(np.mean(inside)), 4),
        "below_p10": round(float(np.mean(a < p10)), 4),
        "above_p90": round(float(np.mean(a > p90)), 4),
    }
    if target != "demand" and matters.any():
        where = "daylight" if target == "pv" else "turning"
        out[f"n_{where}"] = int(matters.sum())
        out[f"coverage_p10_p90_{where}"] = round(float(np.mean(inside[matters])), 4)
    if candidates:
        out["candidates"] = {}
        for name, pred in candidates.items():
            fine = np.isfinite(pred)
            if not fine.any():
                continue
            cm = float(np.mean(np.abs(pred[fine] - a[fine])))
            cr = float(np.sqrt(np.mean((pred[fine] - a[fine]) ** 2)))
            wm = float(np.mean(np.abs(week[fine] - a[fine])))
            wr = float(np.sqrt(np.mean((week[fine] - a[fine]) ** 2)))
            out["candidates"][name] = {
                "n": int(fine.sum()),
                "mae_w": round(cm, 1),
                "skill_mae_vs_last_week": _safe_ratio(cm, wm),
                "skill_rmse_vs_last_week": _safe_ratio(cr, wr),
            }
    return out


def backtest(
    model: ForecastModel | None,
    history: History,
    weather: WeatherSeries | Callable[[int], WeatherSeries],
    site: Site,
    issues: Iterable[int],
    *,
    hours: int = 48,
    targets: Iterable[str] = TARGETS,
    progress: Callable[[int], None] | None = None,
    tuned: bool = True,
) -> dict[str, Any]:
    """Replay forecasts at ``issues`` and score them; ``weather`` may be a function of the issue
    time (a bench's synthetic forecast errors), else the same series serves every issue. With
    ``tuned``, each forecast is tuned on the history before it, as the hub does."""
    targets = tuple(targets)
    scores = {t: _Scores() for t in targets}
    issues = list(issues)
    cache = ReplayCache()
    for issue_ms in issues:
        w = weather(issue_ms) if callable(weather) else weather
        if tuned:
            # A bench's weather function gives each replay the forecast of its own issue time.
            replay_weather = weather if callable(weather) else None
            result = tuned_forecast(model, history, w, site, issue_ms, hours, cache, replay_weather)
            here = cache.get(result.issue_ms, partial(replay, model, history, w, site))
        else:
            result = make_forecast(model, history, w, site, issue_ms, hours)
        t = step_starts(result.issue_ms, result.steps)
        back = np.maximum(np.ceil((t - result.issue_ms + 1) / DAY_MS).astype(np.int64), 1)
        daylight = mean_clear_sky_ghi(t, STEP_MS, site.lat, site.lon, samples=3) > 0
        for target in targets:
            s = scores[target]
            f = result.targets[target]
            s.forecasts += 1
            if f.method not in ("model", "selected"):
                s.fallbacks += 1
                continue
            s.horizon.append(np.arange(result.steps))
            s.actual.append(_values_at(history, target, t))
            s.p10.append(f.p10)
            s.p50.append(f.p50)
            s.p90.append(f.p90)
            s.persistence.append(_values_at(history, target, t - back * DAY_MS))
            s.last_week.append(_values_at(history, target, t - 7 * DAY_MS))
            s.matters.append(daylight if target == "pv" else np.ones(result.steps, dtype=bool))
            if target == "demand" and tuned:
                candidates = dict(here.demand)
                weights = result.tuning.local_weights if result.tuning else ()
                if weights and here.demand_x is not None and here.demand_level_w:
                    candidates["local"] = local_predict(weights, here.demand_x, here.demand_level_w)
                for name in DEMAND_CANDIDATES:  # NaN where one could not run at this issue
                    extended = np.full(result.steps, np.nan)
                    pred = candidates.get(name)
                    if pred is not None:
                        extended[: min(pred.size, result.steps)] = pred[: result.steps]
                    s.candidates.setdefault(name, []).append(extended)
        if progress is not None:
            progress(1)
    report: dict[str, Any] = {
        "issues": len(issues),
        "hours": hours,
        "model": model.id if model is not None else "none",
        "tuned": tuned,
        "targets": {},
    }
    for target in targets:
        s = scores[target]
        entry: dict[str, Any] = {"forecasts": s.forecasts, "fallbacks": s.fallbacks}
        if s.horizon:
            entry["bands"] = {name: _band_metrics(s, lo, hi, target) for name, lo, hi in BANDS}
        report["targets"][target] = entry
    return report


def mean_skill(report: dict[str, Any], key: str = "skill_rmse_vs_persistence_24h") -> float | None:
    """The mean over targets of one skill over all horizons: one number to compare models by."""
    values = [
        entry["bands"]["all"].get(key)
        for entry in report["targets"].values()
        if "bands" in entry and entry["bands"]["all"].get(key) is not None
    ]
    return float(np.mean(values)) if values else None
