"""The community forecast: demand, PV and wind for the next 48 hours in 15-minute steps, each
with P10/P50/P90, from the ONNX model, the stored history and imported weather.

Pure apart from onnxruntime: :func:`make_forecast` takes history, weather and the site as data
and returns a :class:`ForecastResult`. Whatever is missing degrades, per target, to a labelled
fallback (``method`` says which and ``note`` says why), never to an exception:

- ``model``: the ONNX model on full inputs;
- ``fallback``: a simple rule from history (demand with under a day of history: its flat mean;
  PV without an irradiance forecast: the last 7 days' profile; wind without a wind forecast: the
  last day's mean), or zeros when there is nothing to go on;
- ``mixed``: the model where the weather file reaches, the fallback after it ends;
- ``absent``: the cooperative has no such generation (none in history and none configured);
- ``selected``: demand, where tuning on the cooperative's own recent weeks
  (:mod:`hub.forecast.tuning`) found a simpler candidate better than the model for some
  horizon; ``basis`` says which serves each horizon band and ``note`` why.

:func:`tuned_forecast` is what the hub and its commands call: it tunes on the history first
(:func:`replay` is one past forecast for that), then forecasts with the tuning applied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from hub.forecast.features import (
    FEATURES,
    STEP_MS,
    STEP_S,
    STEPS_PER_DAY,
    TARGETS,
    History,
    demand_features,
    demand_level_w,
    estimate_capacity_w,
    pv_features,
    step_starts,
    wind_features,
)
from hub.forecast.site import Site
from hub.forecast.solar import FloatArray, local_solar_hour
from hub.forecast.tuning import (
    Band,
    Replay,
    ReplayCache,
    Tuning,
    apply_demand,
    apply_generation,
    band_rows,
    demand_candidates,
    generation_scale_w,
    local_predict,
    tune,
)
from hub.forecast.weather import StepWeather, WeatherSeries, to_steps

log = logging.getLogger(__name__)

QUANTILES: Final = (0.1, 0.5, 0.9)
DEFAULT_HOURS: Final = 48
SHIPPED_MODEL: Final = Path(__file__).resolve().parents[2] / "models" / "forecast.onnx"
MODEL_FORMAT: Final = "coopwatt-forecast-1"

Method = Literal["model", "fallback", "mixed", "absent", "selected"]
CAPACITY_MODES: Final = ("configured", "estimated")
"""How a PV or wind output is normalised: by the configured capacity or by one estimated from
history. The band is calibrated per mode (``coopwatt.interval_scale.{target}.{mode}``)."""


class ModelError(Exception):
    """The ONNX file cannot be used as a coopwatt forecast model."""


@dataclass(frozen=True)
class TargetForecast:
    """One target's quantiles (W), one value per step."""

    p10: FloatArray
    p50: FloatArray
    p90: FloatArray
    method: Method
    note: str = ""
    basis: dict[str, str] = field(default_factory=dict)  # horizon band -> demand candidate


@dataclass(frozen=True)
class ForecastResult:
    issue_ms: int  # the first step's start, UTC ms, on a 15-minute boundary
    steps: int
    targets: dict[str, TargetForecast]
    model: str  # the model's id, or "none" when none could be loaded
    tuning: Tuning | None = None

    def to_json_obj(self) -> dict[str, Any]:
        """The evaluation interface: ``start``, ``step_s``, ``{target}_w`` and its quantiles."""
        out: dict[str, Any] = {
            "start": datetime.fromtimestamp(self.issue_ms / 1000, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "step_s": STEP_S,
        }
        for name in TARGETS:
            t = self.targets[name]
            out[f"{name}_w"] = _rounded(t.p50)
            out[f"{name}_w_p10"] = _rounded(t.p10)
            out[f"{name}_w_p90"] = _rounded(t.p90)
        out["methods"] = {name: self.targets[name].method for name in TARGETS}
        notes = {name: self.targets[name].note for name in TARGETS if self.targets[name].note}
        if notes:
            out["notes"] = notes
        basis = {name: self.targets[name].basis for name in TARGETS if self.targets[name].basis}
        if basis:
            out["basis"] = basis
        out["model"] = self.model
        if self.tuning is not None:
            out["tuning"] = tuning_json(self.tuning)
        return out


def solar_hour_bins(t: np.ndarray, lon: float) -> np.ndarray:
    """The local solar hour (0-23) each step's middle falls in: PV's correction's bins."""
    return np.floor(local_solar_hour(t + STEP_MS // 2, lon)).astype(np.int64) % 24


def tuning_json(tuning: Tuning) -> dict[str, Any]:
    """What tuning found, for the operator: each demand candidate's MAE per horizon band and the
    one chosen; PV's and wind's band corrections and the coverage before them."""
    out: dict[str, Any] = {"issues": tuning.issues, "days": tuning.days}
    if tuning.demand:
        out["demand"] = {
            b.name: {
                "chosen": b.chosen,
                "mae_w": b.mae_w,
                "steps": b.steps,
                "ratio_p10": b.ratio_p10,
                "ratio_p90": b.ratio_p90,
            }
            for b in tuning.demand
        }
    for target, bands in tuning.generation.items():
        out[target] = {
            b.name: {
                "chosen": b.chosen,
                "mae_w": b.mae_w,
                "widen": b.widen,
                "steps": b.steps,
                "coverage_before": b.coverage_before,
            }
            for b in bands
        }
    return out


def _rounded(values: FloatArray) -> list[float]:
    return [round(float(v), 1) for v in values]


class ForecastModel:
    """The ONNX forecast model: one input and one (N, 3) quantile output per target."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort  # noqa: PLC0415  # heavy: only when a model is loaded

        self.path = Path(path)
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # a Pi; the batches are small
            options.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, undocumented exception types
            raise ModelError(f"{self.path}: cannot load the forecast model: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("coopwatt.format") != MODEL_FORMAT:
            raise ModelError(f"{self.path}: not a {MODEL_FORMAT} model")
        for target in TARGETS:
            names = json.loads(meta.get(f"coopwatt.features.{target}", "[]"))
            if tuple(names) != FEATURES[target]:
                raise ModelError(
                    f"{self.path}: the {target} features differ from this hub's; retrain the model"
                )
        self.id = meta.get("coopwatt.id", self.path.name)
        # Calibration: P10 and P90 sit this many times their fitted distance from the P50.
        self.interval_scale = {
            t: float(meta.get(f"coopwatt.interval_scale.{t}", "1.0")) for t in TARGETS
        }
        # PV and wind may carry one factor per capacity mode (see interval_scale_for).
        self.mode_interval_scale = {
            (t, mode): float(meta[f"coopwatt.interval_scale.{t}.{mode}"])
            for t in TARGETS
            for mode in CAPACITY_MODES
            if f"coopwatt.interval_scale.{t}.{mode}" in meta
        }
        self.metadata = dict(meta)

    def interval_scale_for(self, target: str, configured: bool = False) -> float:
        """The band's calibration factor for ``target``: the one calibrated on rows normalised
        the same way (capacity ``configured``, or estimated from history) when the model has
        it, else the one calibrated on all rows (older models, and demand).

        Why per mode: an estimated capacity (a high percentile of 28 days) is small after a
        calm or dull month, so the normalised output is larger and more erratic than with the
        nameplate; one factor for both leaves the configured band too wide and the estimated
        one too narrow.
        """
        mode = "configured" if configured else "estimated"
        return self.mode_interval_scale.get((target, mode), self.interval_scale[target])

    def predict(self, target: str, x: np.ndarray, configured: bool = False) -> FloatArray:
        """Normalised quantiles, shape (N, 3), sorted so P10 <= P50 <= P90; ``configured``
        says whether a PV or wind output is normalised by a configured capacity."""
        # Every input must be fed: the other targets get zero rows, which cost nothing.
        feed = {
            f"{t}_features": x if t == target else np.zeros((0, len(FEATURES[t])), np.float32)
            for t in TARGETS
        }
        (out,) = self.session.run([f"{target}_quantiles"], feed)
        q = np.sort(np.asarray(out, dtype=np.float64).reshape(-1, 3), axis=1)
        return scale_band(q, self.interval_scale_for(target, configured))


def scale_band(q: FloatArray, k: float) -> FloatArray:
    """Calibrated quantiles from fitted ones (N, 3), sorted: P10 and P90 move to ``k`` times
    their fitted distance from the P50 (``k`` from the model's calibration, see
    ``models.train.interval_scale``).

    A fitted P10 at or below zero stays where it is: it says the target may well be nothing (PV
    at night, wind in a calm), and narrowing it towards a P50 just above zero would lift the band
    off the zeros that are the commonest outcome. Without this the calibration could only narrow
    PV's and wind's bands by giving up every zero at once, so it never narrowed them at all.
    """
    mid = q[:, 1]
    low = np.where(q[:, 0] <= 0.0, q[:, 0], mid - k * (mid - q[:, 0]))
    result: FloatArray = np.column_stack([low, mid, mid + k * (q[:, 2] - mid)])
    return result


def smooth_centre(q: FloatArray) -> FloatArray:
    """Quantiles (N, 3) of N consecutive 15-minute steps with each P50 replaced by the mean of
    itself and its two neighbours (one neighbour at either end), P10 and P90 moved with it.

    Why, for demand: the trees map the 15-minute jitter in single-slot lags (yesterday, last
    week at the same quarter hour) into their P50, while the community's expected demand moves
    smoothly. Three steps, not five: chosen on the month-blocked cross-validation of the
    training year (``bench/forecast_demand_cv.py``; the figures are in ``models/MODEL_CARD.md``,
    "A smoothed P50"). The band keeps its calibrated width around the new centre.
    """
    mid = q[:, 1]
    if mid.size < 2:
        return q
    total = mid.copy()
    count = np.ones_like(mid)
    total[1:] += mid[:-1]
    count[1:] += 1
    total[:-1] += mid[1:]
    count[:-1] += 1
    shift = total / count - mid
    result: FloatArray = q + shift[:, None]
    return result


SMOOTHED_CENTRE: Final = frozenset({"demand"})
"""Targets whose P50 trajectory :func:`smooth_centre` evens out."""


def load_model(path: str | Path | None = None) -> ForecastModel:
    """Load ``path``, or the model shipped in ``models/forecast.onnx``."""
    return ForecastModel(path or SHIPPED_MODEL)


# -- building model inputs -------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """Model rows for one target and how to scale its output back to watts."""

    x: np.ndarray
    scale_w: float
    covered: np.ndarray  # bool per step: the weather this target needs reaches the step
    configured: bool = False  # PV/wind: scale_w is the configured capacity, not an estimate


def has_stream(history: History, target: str, site: Site) -> bool:
    """Whether the cooperative has this generation at all (demand always exists)."""
    if target == "demand":
        return True
    configured = site.pv_capacity_w if target == "pv" else site.wind_capacity_w
    if configured is not None:
        return True
    series = history.series(target)
    return bool(np.isfinite(series).any())


def capacity_w(history: History, target: str, site: Site) -> float | None:
    configured = site.pv_capacity_w if target == "pv" else site.wind_capacity_w
    return configured if configured is not None else estimate_capacity_w(history.series(target))


def model_inputs(
    target: str,
    history: History,
    weather: StepWeather,
    site: Site,
    issue_ms: int,
    steps: int,
) -> Inputs | str:
    """The model's rows for ``target``, or the reason (a sentence) the model cannot run."""
    all_steps = np.ones(steps, dtype=bool)
    if target == "demand":
        level = demand_level_w(history)
        if level is None:
            return "under a day of demand history"
        x = demand_features(history, issue_ms, steps, site.lat, site.lon, level, site.local)
        return Inputs(x, level, all_steps)
    cap = capacity_w(history, target, site)
    configured = (site.pv_capacity_w if target == "pv" else site.wind_capacity_w) is not None
    if cap is None:
        return f"{target} capacity unknown: not configured and under a day of {target} history"
    if target == "pv":
        covered = np.isfinite(weather.ghi_w_m2)
        if not covered.any():
            return "no irradiance or cloud forecast for these hours"
        x = pv_features(history, issue_ms, steps, site.lat, site.lon, weather, cap)
        return Inputs(x, cap, covered, configured)
    covered = np.isfinite(weather.wind_speed_m_s)
    if not covered.any():
        return "no wind speed forecast for these hours"
    x = wind_features(history, issue_ms, steps, site.lon, weather, cap)
    return Inputs(x, cap, covered, configured)


def _fallback(target: str, history: History, issue_ms: int, steps: int) -> TargetForecast:
    series = history.series(target)
    valid = series[np.isfinite(series)]
    zeros = np.zeros(steps)
    if valid.size == 0:
        return TargetForecast(zeros, zeros, zeros, "fallback", f"no {target} history")
    if target == "pv" and series.size >= STEPS_PER_DAY:
        t = step_starts(issue_ms, steps)
        back = np.maximum(np.ceil((t - issue_ms + 1) / 86_400_000).astype(np.int64), 1)
        days = t[:, None] - (back[:, None] + np.arange(7)[None, :]) * 86_400_000
        idx = (days - history.start_ms) // STEP_MS
        ok = (idx >= 0) & (idx < series.size)
        values = np.where(ok, series[np.clip(idx, 0, max(series.size - 1, 0))], np.nan)
        if np.isfinite(values).any(axis=1).all():
            vmin, vmax = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
            return TargetForecast(vmin, np.nanmean(values, axis=1), vmax, "fallback")
    recent = valid[-STEPS_PER_DAY:]
    mean = float(recent.mean())
    if target == "demand":
        low, high = 0.6 * mean, 1.6 * mean
    else:
        low, high = 0.0, 2.0 * mean
    return TargetForecast(
        np.full(steps, low), np.full(steps, mean), np.full(steps, high), "fallback"
    )


def forecast_target(
    model: ForecastModel | None,
    target: str,
    history: History,
    weather: StepWeather,
    site: Site,
    issue_ms: int,
    steps: int,
    inputs: Inputs | str | None = None,
) -> TargetForecast:
    """One target's forecast, falling back (and saying why) when the model cannot run;
    ``inputs`` are :func:`model_inputs`' for it when the caller has them already."""
    zeros = np.zeros(steps)
    if not has_stream(history, target, site):
        return TargetForecast(zeros, zeros, zeros, "absent", f"no {target} in history or config")
    if inputs is None:
        inputs = model_inputs(target, history, weather, site, issue_ms, steps)
    if model is None:
        reason = "no forecast model loaded"
    elif isinstance(inputs, str):
        reason = inputs
    else:
        q = model.predict(target, inputs.x, inputs.configured)
        if target in SMOOTHED_CENTRE:
            q = smooth_centre(q)
        q = np.clip(q, 0.0, None) * inputs.scale_w
        if inputs.covered.all():
            return TargetForecast(q[:, 0], q[:, 1], q[:, 2], "model")
        fb = _fallback(target, history, issue_ms, steps)
        c = inputs.covered
        end = int(np.nonzero(c)[0].max()) if c.any() else 0
        until = datetime.fromtimestamp((issue_ms + (end + 1) * STEP_MS) / 1000, UTC)
        return TargetForecast(
            np.where(c, q[:, 0], fb.p10),
            np.where(c, q[:, 1], fb.p50),
            np.where(c, q[:, 2], fb.p90),
            "mixed",
            "weather forecast covers only part of the horizon "
            f"(model until {until:%Y-%m-%dT%H:%MZ})",
        )
    fb = _fallback(target, history, issue_ms, steps)
    note = reason if not fb.note else f"{reason}; {fb.note}"
    return TargetForecast(fb.p10, fb.p50, fb.p90, "fallback", note)


def align_issue_ms(t_ms: int) -> int:
    """The 15-minute boundary at or before ``t_ms``: history before it is complete steps only."""
    return t_ms - t_ms % STEP_MS


def make_forecast(
    model: ForecastModel | None,
    history: History,
    weather: WeatherSeries,
    site: Site,
    issue_ms: int,
    hours: int = DEFAULT_HOURS,
    tuning: Tuning | None = None,
) -> ForecastResult:
    """Forecast ``hours`` ahead from ``issue_ms`` (aligned down to 15 minutes), using only history
    before it. ``weather`` may be empty: PV and wind then fall back. ``tuning`` (from
    :func:`tuned_forecast`) chooses demand's method per horizon and calibrates the bands."""
    if not 1 <= hours <= 168:
        raise ValueError("hours must be between 1 and 168")
    issue_ms = align_issue_ms(issue_ms)
    steps = hours * 4
    past = history.before(issue_ms)
    step_weather = to_steps(weather, step_starts(issue_ms, steps), STEP_MS, site.lat, site.lon)
    # Demand's inputs serve the model and, when tuned, the local candidate: built once.
    demand_inputs = model_inputs("demand", past, step_weather, site, issue_ms, steps)
    targets = {
        target: forecast_target(
            model,
            target,
            past,
            step_weather,
            site,
            issue_ms,
            steps,
            demand_inputs if target == "demand" else None,
        )
        for target in TARGETS
    }
    if tuning is not None:
        # Demand: the forecaster chosen per horizon; PV and wind: hourly factor and band.
        targets = {
            target: _tuned_demand(f, tuning, past, demand_inputs, issue_ms)
            if target == "demand"
            else _tuned_generation(target, f, tuning, past, site, issue_ms)
            for target, f in targets.items()
        }
    model_id = model.id if model is not None else "none"
    return ForecastResult(issue_ms, steps, targets, model_id, tuning)


def _tuned_demand(
    f: TargetForecast, tuning: Tuning, past: History, inputs: Inputs | str, issue_ms: int
) -> TargetForecast:
    steps = f.p50.size
    if not tuning.demand or f.method not in ("model", "fallback"):
        return f
    model_p50 = f.p50 if f.method == "model" else None
    candidates = demand_candidates(model_p50, past, issue_ms, steps)
    if tuning.local_weights and isinstance(inputs, Inputs):
        candidates["local"] = local_predict(tuning.local_weights, inputs.x, inputs.scale_w)
    lo, mid, hi, basis = apply_demand(tuning.demand, candidates, f.p10, f.p50, f.p90)
    if not basis:
        return f
    only_model = f.method == "model" and set(basis.values()) == {"model"}
    method: Method = "model" if only_model else "selected"
    return TargetForecast(lo, mid, hi, method, tuning.demand_note(), basis)


def _tuned_generation(
    target: str, f: TargetForecast, tuning: Tuning, past: History, site: Site, issue_ms: int
) -> TargetForecast:
    steps = f.p50.size
    bands = tuning.generation.get(target)
    cap = capacity_w(past, target, site)
    if not bands or cap is None or f.method not in ("model", "mixed"):
        return f
    t = step_starts(issue_ms, steps)
    scale = generation_scale_w(target, cap, t, site)
    p10, p50, p90 = f.p10, f.p50, f.p90
    factors = tuning.hour_factors.get(target)
    basis: dict[str, str] = {}
    if factors is not None and any(b.chosen == "model_by_hour" for b in bands):
        by_hour = factors[solar_hour_bins(t, site.lon)]
        rows = band_rows([(b.first, b.end) for b in bands], steps)
        for i, b in enumerate(bands):
            basis[b.name] = b.chosen
            if b.chosen == "model_by_hour":
                here = rows == i
                p10, p50, p90 = (np.where(here, q * by_hour, q) for q in (p10, p50, p90))
    lo, hi = apply_generation(bands, p10, p50, p90, scale)
    where = "daylight" if target == "pv" else "turning"
    before = ", ".join(f"{b.name} {b.coverage_before:.0%}" for b in bands)
    note = f"band calibrated on {where} steps of the last {tuning.days:g} days"
    note += f" (it covered {before})"
    if basis:
        note = f"scaled by this site's hourly factor where it did better; {note}"
    note = note if not f.note else f"{f.note}; {note}"
    return TargetForecast(lo, p50, hi, f.method, note[:200], basis)


TUNE_HOURS: Final = 48
"""The horizon replays are made for: the bands of :data:`~hub.forecast.tuning.HORIZON_BANDS`."""


def replay(
    model: ForecastModel | None, history: History, weather: WeatherSeries, site: Site, issue_ms: int
) -> Replay:
    """The forecast the hub would have issued at ``issue_ms`` (from history before it), as
    tuning scores it: demand's candidates, and PV's and wind's model band with the scale its
    calibration is measured in."""
    steps = TUNE_HOURS * 4
    past = history.before(issue_ms)
    t = step_starts(issue_ms, steps)
    step_weather = to_steps(weather, t, STEP_MS, site.lat, site.lon)
    inputs = model_inputs("demand", past, step_weather, site, issue_ms, steps)
    demand = forecast_target(model, "demand", past, step_weather, site, issue_ms, steps, inputs)
    model_p50 = demand.p50 if demand.method == "model" else None
    candidates = demand_candidates(model_p50, past, issue_ms, steps)
    demand_x, level = (inputs.x, inputs.scale_w) if isinstance(inputs, Inputs) else (None, None)
    generation: dict[str, Band] = {}
    for target in ("pv", "wind"):
        f = forecast_target(model, target, past, step_weather, site, issue_ms, steps)
        cap = capacity_w(past, target, site)
        if f.method not in ("model", "mixed") or cap is None:
            continue
        scale = generation_scale_w(target, cap, t, site)
        if f.method == "mixed":  # score only where the model ran
            needed = step_weather.ghi_w_m2 if target == "pv" else step_weather.wind_speed_m_s
            scale = np.where(np.isfinite(needed), scale, 0.0)
        hour = solar_hour_bins(t, site.lon) if target == "pv" else None
        generation[target] = Band(f.p10, f.p50, f.p90, scale, hour)
    return Replay(issue_ms, candidates, generation, demand_x, level)


def tuned_forecast(
    model: ForecastModel | None,
    history: History,
    weather: WeatherSeries,
    site: Site,
    issue_ms: int,
    hours: int = DEFAULT_HOURS,
    cache: ReplayCache | None = None,
    replay_weather: Callable[[int], WeatherSeries] | None = None,
) -> ForecastResult:
    """Tune on the history before ``issue_ms`` (:func:`hub.forecast.tuning.tune`; ``history``
    should reach :data:`~hub.forecast.tuning.TUNE_DAYS` plus a week before it), then forecast
    with the tuning applied. ``weather`` serves the replays as well as the forecast, unless
    ``replay_weather(p)`` gives the weather as it was forecast at each replayed issue ``p``."""
    issue_ms = align_issue_ms(issue_ms)

    def replay_at(p: int) -> Replay:
        w = replay_weather(p) if replay_weather is not None else weather
        return replay(model, history, w, site, p)

    tuning = tune(history, issue_ms, replay_at, cache=cache)
    return make_forecast(model, history, weather, site, issue_ms, hours, tuning)
