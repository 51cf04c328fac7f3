"""Tuning on the cooperative's own recent weeks: which demand forecaster to trust at each
horizon, and how wide each target's P10-P90 band must be to mean what it says.

Why: the ONNX model was trained on other people's data (``models/MODEL_CARD.md``). On a
neighbourhood it never saw it can be worse than a method with no training at all, and its bands,
calibrated on the training site, can be far too narrow on another. The cooperative's own recent
history is the only honest judge, so the hub replays forecasts it would have issued over the
last :data:`TUNE_DAYS` days (each seeing only the history before its issue time, as
:func:`~hub.forecast.model.make_forecast` does) and scores them against what happened:

- **demand**: every candidate of :data:`DEMAND_CANDIDATES` (the model, same time last week, the
  mean and the median of the same slot over the last four weeks, the model averaged with that
  mean, and ``local``: a ridge regression on the model's own inputs, fitted per horizon band on
  the cooperative's replayed weeks, which learns how this neighbourhood's demand follows its
  lags where the trees learnt someone else's) per horizon band of :data:`HORIZON_BANDS`; the
  one with the lowest MAE serves that band, and its band is the 10th and 90th percentiles of
  actual / forecast over the scored steps (so it covers 80 % of them by construction, and is
  wider at the evening peak). Every candidate is scored out of sample: ``local`` for a replay
  is fitted only on replays whose whole horizon had passed by its issue time;
- **PV and wind**: for PV, the model or the model times this site's factor per hour of the day
  (what it made over what the model forecast: orientation and shading the model never saw),
  whichever had the lower MAE out of sample; then, for both, the band widened or narrowed per
  horizon band by split-conformal calibration (Romano et al. 2019, "Conformalized quantile
  regression") on the steps where the band matters: daylight for PV (scores in units of the
  step's clear-sky output, so dawn and dusk move little), output above zero for wind (the
  turbine past its cut-in).

Pure apart from onnxruntime, like the model module. Replays depend only on history before their
issue time, so :class:`ReplayCache` keeps them between refreshes and backtest issues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from hub.forecast.features import DAY_MS, STEP_MS, STEPS_PER_DAY, History, step_starts
from hub.forecast.site import Site
from hub.forecast.solar import FloatArray, IntArray, mean_clear_sky_ghi

HOUR_MS: Final = 3_600_000
HORIZON_BANDS: Final = (("0-6h", 0, 24), ("6-24h", 24, 96), ("24-48h", 96, 1 << 30))
"""Horizon bands (name, first step, end step): a forecast past 48 hours is tuned as 24-48 h."""
TUNE_DAYS: Final = 28
"""How far back forecasts are replayed: four of each weekday, and recent enough to follow the
season."""
TUNE_EVERY_MS: Final = 6 * HOUR_MS
TUNE_HOURS_MS: Final = 48 * HOUR_MS
"""The horizon a replay forecasts."""
MIN_WEEKS_BEFORE: Final = 7 * DAY_MS
"""A replayed issue needs a week of history before it: same time last week is a candidate."""
MIN_BAND_STEPS: Final = STEPS_PER_DAY
"""Scored steps a horizon band needs before its choice or calibration is trusted."""
MIN_REPLAYS: Final = 8
"""Replayed issues (two days of them) needed before anything is tuned: a cooperative with nine
days of history is tuned, and with two weeks it has a week of replays."""
COVERAGE: Final = 0.8
DEMAND_CANDIDATES: Final = (
    "model",
    "last_week",
    "mean_4w",
    "median_4w",
    "model+mean_4w",
    "local",
)
"""Demand forecasters scored against each other; on a tie the earlier one wins."""
LOCAL_MIN_REPLAYS: Final = 16
"""Replays (four days of them, all their steps known) the local model is fitted on at least."""
LOCAL_RIDGE: Final = 1e-3
"""Ridge penalty per fitted row: keeps the local model near zero weights where data is thin."""


def weekly_lags(series: FloatArray, start_ms: int, issue_ms: int, t: IntArray) -> FloatArray:
    """The value at each step time ``t`` minus 1, 2, 3 and 4 weeks (W), shape (steps, 4); NaN
    where the history has no value or the time is not before ``issue_ms``."""
    back = t[:, None] - np.arange(1, 5, dtype=np.int64)[None, :] * 7 * DAY_MS
    idx = (back - start_ms) // STEP_MS
    ok = (idx >= 0) & (idx < series.size) & (back < issue_ms)
    out = np.full(back.shape, np.nan)
    out[ok] = series[idx[ok]]
    return out


def simple_candidates(history: History, issue_ms: int, steps: int) -> dict[str, FloatArray]:
    """The demand candidates that need no model (W per step; NaN where history is missing):
    ``last_week``, and the ``mean_4w`` and ``median_4w`` of the same slot on the same weekday
    over the last four weeks (over the weeks there are, at least one)."""
    lags = weekly_lags(history.demand_w, history.start_ms, issue_ms, step_starts(issue_ms, steps))
    has: np.ndarray = np.asarray(np.isfinite(lags).any(axis=1), dtype=bool)
    filled = np.where(has[:, None], lags, 0.0)  # all-NaN rows: keep numpy quiet, then NaN
    mean = np.where(has, np.nanmean(filled, axis=1), np.nan)
    median = np.where(has, np.nanmedian(filled, axis=1), np.nan)
    return {"last_week": lags[:, 0], "mean_4w": mean, "median_4w": median}


def demand_candidates(
    model_p50: FloatArray | None, history: History, issue_ms: int, steps: int
) -> dict[str, FloatArray]:
    """Every demand candidate's P50 (W per step); ``model_p50`` is None when the model did not
    run, and then the model and its combination are not candidates."""
    out = simple_candidates(history, issue_ms, steps)
    if model_p50 is not None:
        out["model"] = model_p50
        out["model+mean_4w"] = np.where(
            np.isfinite(out["mean_4w"]), (model_p50 + out["mean_4w"]) / 2, np.nan
        )
    return out


# -- replays ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """A replayed model band for PV or wind (W per step) and the scale its calibration scores are
    measured in (W per step; zero where the band is not calibrated, such as PV at night)."""

    p10: FloatArray
    p50: FloatArray
    p90: FloatArray
    scale_w: FloatArray
    hour: IntArray | None = None  # local solar hour (0-23) of each step, for PV's correction


@dataclass(frozen=True)
class Replay:
    """What the hub would have forecast at ``issue_ms``: demand's candidates and the model's PV
    and wind bands (None where the model did not run for them)."""

    issue_ms: int
    demand: dict[str, FloatArray]
    generation: dict[str, Band]
    demand_x: FloatArray | None = None  # the model's demand inputs, for the local model
    demand_level_w: float | None = None  # what demand_x and the local model are relative to


def generation_scale_w(target: str, capacity_w: float, t: IntArray, site: Site) -> FloatArray:
    """The unit a PV or wind band is calibrated in, per step (W): PV's clear-sky output (the
    capacity times the step's clear-sky irradiance in kW/m², zero at night) and wind's capacity.
    """
    if target == "pv":
        clear_kw_m2 = mean_clear_sky_ghi(t, STEP_MS, site.lat, site.lon, samples=3) / 1000.0
        result: FloatArray = capacity_w * clear_kw_m2
        return result
    return np.full(t.shape, capacity_w)


ReplayFn = Callable[[int], Replay]


class ReplayCache:
    """Replays by issue time, and the last tuning made from them. A replay sees only history
    before its issue time, so it stays valid as history grows; the cache forgets those older
    than the tuning window needs."""

    def __init__(self) -> None:
        self._replays: dict[int, Replay] = {}
        self.tuning: tuple[tuple[int, int], Tuning] | None = None  # see tune()

    def get(self, issue_ms: int, make: ReplayFn) -> Replay:
        replay = self._replays.get(issue_ms)
        if replay is None:
            replay = make(issue_ms)
            self._replays[issue_ms] = replay
        return replay

    def forget_before(self, issue_ms: int) -> None:
        for key in [k for k in self._replays if k < issue_ms]:
            del self._replays[key]

    def __len__(self) -> int:
        return len(self._replays)


# -- what tuning found -----------------------------------------------------------------------


@dataclass(frozen=True)
class DemandBand:
    """One horizon band's choice: the candidate with the lowest MAE over ``steps`` scored steps
    (``mae_w`` has every candidate's), and the band as actual / P50 at P10 and P90."""

    name: str
    first: int
    end: int
    chosen: str
    mae_w: dict[str, float]
    steps: int
    ratio_p10: float
    ratio_p90: float


@dataclass(frozen=True)
class GenerationBand:
    """One horizon band's conformal correction for PV or wind: P10 moves down and P90 up by
    ``widen`` times the step's calibration scale (negative narrows), from ``steps`` steps whose
    model band covered ``coverage_before``."""

    name: str
    first: int
    end: int
    widen: float
    steps: int
    coverage_before: float
    chosen: str = "model"  # or "model_by_hour": the model times this site's hourly factor
    mae_w: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """What the replays of the ``issues`` issue times before ``issue_ms`` showed."""

    issue_ms: int
    issues: int
    demand: tuple[DemandBand, ...] = ()
    generation: dict[str, tuple[GenerationBand, ...]] = field(default_factory=dict)
    local_weights: tuple[FloatArray | None, ...] = ()  # per horizon band; see local_predict
    hour_factors: dict[str, FloatArray] = field(default_factory=dict)  # see hour_factors

    def demand_note(self) -> str:
        """A sentence (at most 200 characters) on what serves each band and why."""
        if not self.demand:
            return ""
        parts = []
        for b in self.demand:
            base = b.mae_w.get("last_week")
            vs = f", last week {base / 1000:.1f}" if base is not None else ""
            parts.append(f"{b.name} {b.chosen} (MAE {b.mae_w[b.chosen] / 1000:.1f} kW{vs})")
        compared = max(len(b.mae_w) for b in self.demand)
        return f"best of {compared} on the last {self.days:g} days: " + "; ".join(parts)

    @property
    def days(self) -> float:
        return round(self.issues * TUNE_EVERY_MS / DAY_MS, 1)


def _band_of(steps: int) -> IntArray:
    """Index into :data:`HORIZON_BANDS` of each step 0..steps-1."""
    h = np.arange(steps)
    out = np.zeros(steps, dtype=np.int64)
    for i, (_name, first, _end) in enumerate(HORIZON_BANDS):
        out[h >= first] = i
    return out


def _actuals(history: History, target: str, t: IntArray, before_ms: int) -> FloatArray:
    series = history.series(target)
    idx = (t - history.start_ms) // STEP_MS
    ok = (idx >= 0) & (idx < series.size) & (t < before_ms)
    out = np.full(t.shape, np.nan)
    out[ok] = series[idx[ok]]
    return out


def replay_issues(history: History, issue_ms: int) -> list[int]:
    """The issue times to replay for a forecast at ``issue_ms``: every 6 hours of UTC over the
    last :data:`TUNE_DAYS` days (on fixed boundaries, so a refresh 15 minutes later replays
    nothing new), each with a week of ``history`` before it."""
    anchor = issue_ms - issue_ms % TUNE_EVERY_MS
    if anchor == issue_ms:
        anchor -= TUNE_EVERY_MS
    first_ok = history.start_ms + MIN_WEEKS_BEFORE
    count = TUNE_DAYS * DAY_MS // TUNE_EVERY_MS
    return [
        p for p in (anchor - k * TUNE_EVERY_MS for k in range(count - 1, -1, -1)) if p >= first_ok
    ]


def tune(
    history: History,
    issue_ms: int,
    replay: ReplayFn,
    cache: ReplayCache | None = None,
) -> Tuning:
    """Score the replays of the last :data:`TUNE_DAYS` days against ``history`` (actuals before
    ``issue_ms`` only) and choose and calibrate per horizon band. ``replay(p)`` forecasts as the
    hub would have at ``p``; ``cache`` keeps them for the next call."""
    issues = replay_issues(history, issue_ms)
    if cache is not None:
        cache.forget_before(issues[0] if issues else issue_ms)
    if len(issues) < MIN_REPLAYS:
        return Tuning(issue_ms, 0)
    # The same replays as last time (a refresh within the same 6 hours): the same tuning. Only
    # the newest steps' actuals differ, a few hundredths of the 28 days scored; re-scoring every
    # 15 minutes would cost the refresh more than the forecast itself.
    key = (issues[0], issues[-1])
    if cache is not None and cache.tuning is not None and cache.tuning[0] == key:
        return cache.tuning[1]
    replays = [cache.get(p, replay) if cache is not None else replay(p) for p in issues]
    demand, weights = _tune_demand(history, issue_ms, replays)
    generation: dict[str, tuple[GenerationBand, ...]] = {}
    factors: dict[str, FloatArray] = {}
    for target in ("pv", "wind"):
        bands, target_factors = _tune_generation(history, issue_ms, replays, target)
        if bands:
            generation[target] = bands
        if target_factors is not None:
            factors[target] = target_factors
    tuning = Tuning(issue_ms, len(replays), demand, generation, weights, factors)
    if cache is not None:
        cache.tuning = (key, tuning)
    return tuning


def _stack(
    history: History, issue_ms: int, replays: list[Replay], target: str
) -> tuple[list[Replay], list[FloatArray], FloatArray, IntArray]:
    """The replays that have ``target``, each one's actuals (NaN from ``issue_ms`` on), and
    the actuals and horizon band index of all their steps, concatenated."""
    used = [
        r
        for r in replays
        if (r.demand if target == "demand" else r.generation.get(target)) is not None
        and (target != "demand" or r.demand)
    ]
    per_replay = [
        _actuals(history, target, step_starts(r.issue_ms, _steps(r, target)), issue_ms)
        for r in used
    ]
    if not used:
        return [], [], np.zeros(0), np.zeros(0, dtype=np.int64)
    band = np.concatenate([_band_of(a.size) for a in per_replay])
    return used, per_replay, np.concatenate(per_replay), band


def _steps(r: Replay, target: str) -> int:
    if target == "demand":
        return int(next(iter(r.demand.values())).size)
    return int(r.generation[target].p50.size)


def _design(x: FloatArray) -> FloatArray:
    """The local model's inputs: the model's demand features and a constant."""
    result: FloatArray = np.column_stack([x.astype(np.float64), np.ones(x.shape[0])])
    return result


def _normal_equations(
    r: Replay, actual: FloatArray, band: IntArray
) -> list[tuple[FloatArray, FloatArray, int]]:
    """Per horizon band, X'X, X'y and the row count of one replay's known steps (y and X
    relative to the replay's demand level)."""
    assert r.demand_x is not None and r.demand_level_w is not None
    x = _design(r.demand_x)
    y = actual / r.demand_level_w
    out = []
    for i in range(len(HORIZON_BANDS)):
        keep = np.isfinite(y) & (band == i)
        xb, yb = x[keep], y[keep]
        out.append((xb.T @ xb, xb.T @ yb, int(keep.sum())))
    return out


def _solve(xtx: FloatArray, xty: FloatArray, rows: int) -> FloatArray | None:
    if rows < MIN_BAND_STEPS:
        return None
    penalty = LOCAL_RIDGE * rows * np.eye(xtx.shape[0])
    penalty[-1, -1] = 0.0  # the constant is not shrunk
    try:
        weights = np.linalg.solve(xtx + penalty, xty)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(weights, dtype=np.float64)


def local_predict(
    weights: tuple[FloatArray | None, ...], x: FloatArray, level_w: float
) -> FloatArray:
    """The local model's demand (W per step) from the model's demand inputs ``x``; NaN in a
    horizon band it has no weights for."""
    band = _band_of(x.shape[0])
    out = np.full(x.shape[0], np.nan)
    design = _design(x)
    for i, w in enumerate(weights):
        here = band == i
        if w is not None and here.any():
            out[here] = np.maximum(design[here] @ w, 0.0) * level_w
    return out


def _local_candidates(
    replays: list[Replay], actuals: list[FloatArray], bands: list[IntArray]
) -> tuple[list[FloatArray | None], tuple[FloatArray | None, ...]]:
    """The local model's out-of-sample forecast for each replay (fitted on the replays whose
    whole horizon had passed by its issue time; None with under :data:`LOCAL_MIN_REPLAYS`),
    and the weights fitted on every replay, for the forecast being made."""
    usable = [r.demand_x is not None and bool(r.demand_level_w) for r in replays]
    if sum(usable) < LOCAL_MIN_REPLAYS:
        return [None] * len(replays), ()
    bands_n = len(HORIZON_BANDS)
    eq = [
        _normal_equations(r, a, b) if ok else None
        for r, a, b, ok in zip(replays, actuals, bands, usable, strict=True)
    ]
    width = next(e for e in eq if e is not None)[0][0].shape[0]
    sums = [(np.zeros((width, width)), np.zeros(width), 0) for _ in range(bands_n)]
    ends = [r.issue_ms + TUNE_HOURS_MS for r in replays]
    fitted_upto = 0  # replays [0, fitted_upto) are in ``sums``
    count = 0
    out: list[FloatArray | None] = []
    for r in replays:
        while fitted_upto < len(replays) and ends[fitted_upto] <= r.issue_ms:
            e = eq[fitted_upto]
            if e is not None:
                count += 1
                sums = [
                    (s[0] + q[0], s[1] + q[1], s[2] + q[2]) for s, q in zip(sums, e, strict=True)
                ]
            fitted_upto += 1
        if count < LOCAL_MIN_REPLAYS or r.demand_x is None or not r.demand_level_w:
            out.append(None)
            continue
        weights = tuple(_solve(*s) for s in sums)
        out.append(local_predict(weights, r.demand_x, r.demand_level_w))
    total = [(np.zeros((width, width)), np.zeros(width), 0) for _ in range(bands_n)]
    for e in eq:
        if e is not None:
            total = [(s[0] + q[0], s[1] + q[1], s[2] + q[2]) for s, q in zip(total, e, strict=True)]
    return out, tuple(_solve(*s) for s in total)


def _tune_demand(
    history: History, issue_ms: int, replays: list[Replay]
) -> tuple[tuple[DemandBand, ...], tuple[FloatArray | None, ...]]:
    used, per_replay, actual, band = _stack(history, issue_ms, replays, "demand")
    if not used:
        return (), ()
    local, weights = _local_candidates(used, per_replay, [_band_of(a.size) for a in per_replay])
    preds: dict[str, FloatArray] = {}
    for c in DEMAND_CANDIDATES:
        if c == "local":
            if any(p is not None for p in local):
                preds[c] = np.concatenate(
                    [
                        p if p is not None else np.full(a.size, np.nan)
                        for p, a in zip(local, per_replay, strict=True)
                    ]
                )
        elif all(c in r.demand for r in used):
            preds[c] = np.concatenate([r.demand[c] for r in used])
    out = []
    for i, (name, first, end) in enumerate(HORIZON_BANDS):
        here = np.isfinite(actual) & (band == i)
        # A candidate takes part where it has a value on nearly every step others have; the
        # comparison is then over the steps every taking part has (the local model joins once
        # it has days enough behind it, and is compared only where it could have run).
        names = [c for c in preds if np.isfinite(preds[c][here]).mean() > 0.5] if here.any() else []
        keep = here.copy()
        for c in names:
            keep &= np.isfinite(preds[c])
        n = int(keep.sum())
        if n < MIN_BAND_STEPS or not names:
            continue
        a = actual[keep]
        mae = {c: float(np.mean(np.abs(preds[c][keep] - a))) for c in names}
        chosen = min(names, key=lambda c: mae[c])  # min keeps the first of equals
        p = preds[chosen][keep]
        positive = p > 0
        ratio = a[positive] / p[positive]
        lo, hi = np.quantile(ratio, [0.1, 0.9]) if ratio.size else (1.0, 1.0)
        out.append(
            DemandBand(
                name,
                first,
                end,
                chosen,
                {c: round(v, 1) for c, v in mae.items()},
                n,
                round(min(float(lo), 1.0), 4),
                round(max(float(hi), 1.0), 4),
            )
        )
    return tuple(out), weights


HOUR_FACTOR_MIN_STEPS: Final = 20
"""Daylight steps an hour of the day needs before PV's factor for it is more than 1."""
HOUR_FACTOR_LIMITS: Final = (0.5, 2.0)


def _hour_sums(actual: FloatArray, p50: FloatArray, hour: IntArray) -> FloatArray:
    """Per local solar hour: what was made, what the model forecast, and how many steps (3, 24)."""
    return np.stack(
        [
            np.bincount(hour, weights=actual, minlength=24),
            np.bincount(hour, weights=p50, minlength=24),
            np.bincount(hour, minlength=24).astype(np.float64),
        ]
    )


def hour_factors(sums: FloatArray) -> FloatArray:
    """PV's correction per local solar hour (24 factors) from :func:`_hour_sums`: what this
    site produced over what the model forecast, summed over the scored steps of that hour (1
    where there are too few).

    Why: the model learnt one system's orientation and shading; a west-facing array produces
    more in the afternoon than it expects and less in the morning, every day. This is the
    classic model-output-statistics correction, fitted on the cooperative's own weeks.
    """
    made, expected, steps = sums
    ratio = np.divide(made, expected, out=np.ones(24), where=expected > 0)
    low, high = HOUR_FACTOR_LIMITS
    result: FloatArray = np.where(steps >= HOUR_FACTOR_MIN_STEPS, np.clip(ratio, low, high), 1.0)
    return result


def _hourly_candidates(
    used: list[Replay], target: str, per_replay: list[FloatArray]
) -> tuple[list[FloatArray | None], FloatArray | None]:
    """Each replay's PV factor per step, fitted out of sample on the replays whose horizon had
    passed by its issue time (None with under :data:`LOCAL_MIN_REPLAYS` of them), and the
    factors fitted on every replay."""
    bands = [r.generation[target] for r in used]
    if target != "pv" or any(b.hour is None for b in bands):
        return [None] * len(used), None
    sums = []
    for b, a in zip(bands, per_replay, strict=True):
        keep = np.isfinite(a) & (b.scale_w > 0)  # daylight steps with a known output
        assert b.hour is not None  # checked above
        sums.append(_hour_sums(a[keep], b.p50[keep], b.hour[keep]))
    # Replays are in issue order, so those whose horizon had passed are a prefix: running sums.
    ends = [r.issue_ms + TUNE_HOURS_MS for r in used]
    total = np.zeros((3, 24))
    passed = 0
    out: list[FloatArray | None] = []
    for r, b in zip(used, bands, strict=True):
        while passed < len(used) and ends[passed] <= r.issue_ms:
            total = total + sums[passed]
            passed += 1
        if passed < LOCAL_MIN_REPLAYS:
            out.append(None)
            continue
        assert b.hour is not None
        out.append(hour_factors(total)[b.hour])
    return out, hour_factors(np.sum(sums, axis=0))


def _tune_generation(
    history: History, issue_ms: int, replays: list[Replay], target: str
) -> tuple[tuple[GenerationBand, ...], FloatArray | None]:
    used, per_replay, actual, band = _stack(history, issue_ms, replays, target)
    if not used:
        return (), None
    bands = [r.generation[target] for r in used]
    hourly, factors = _hourly_candidates(used, target, per_replay)
    p10 = np.concatenate([b.p10 for b in bands])
    p50 = np.concatenate([b.p50 for b in bands])
    p90 = np.concatenate([b.p90 for b in bands])
    scale = np.concatenate([b.scale_w for b in bands])
    factor = np.concatenate(
        [
            f if f is not None else np.full(b.p50.size, np.nan)
            for f, b in zip(hourly, bands, strict=True)
        ]
    )
    # Where the band matters: PV in daylight (scale > 0), wind turning (output above zero).
    ok = np.isfinite(actual) & (scale > 0)
    if target == "wind":
        ok &= actual > 0
    out = []
    for i, (name, first, end) in enumerate(HORIZON_BANDS):
        keep = ok & (band == i)
        n = int(keep.sum())
        if n < MIN_BAND_STEPS:
            continue
        a, lo, mid, hi, s = actual[keep], p10[keep], p50[keep], p90[keep], scale[keep]
        chosen, mae = "model", {"model": round(float(np.mean(np.abs(mid - a))), 1)}
        f = factor[keep]
        fitted = np.isfinite(f)
        if fitted.mean() > 0.5:
            # Compared where the correction could have run; chosen only if it did better there.
            plain = float(np.mean(np.abs(mid[fitted] - a[fitted])))
            corrected = float(np.mean(np.abs(mid[fitted] * f[fitted] - a[fitted])))
            mae = {"model": round(plain, 1), "model_by_hour": round(corrected, 1)}
            if corrected < plain:
                chosen = "model_by_hour"
                a, s = a[fitted], s[fitted]
                lo, hi = lo[fitted] * f[fitted], hi[fitted] * f[fitted]
                n = int(fitted.sum())
        score = np.maximum(lo - a, a - hi) / s
        # The split-conformal quantile: ceil((n + 1) * 0.8) / n of the scores.
        level = min(1.0, np.ceil((n + 1) * COVERAGE) / n)
        widen = float(np.quantile(score, level, method="higher"))
        covered = float(np.mean((a >= lo) & (a <= hi)))
        out.append(
            GenerationBand(name, first, end, round(widen, 5), n, round(covered, 4), chosen, mae)
        )
    return tuple(out), factors


# -- applying it -----------------------------------------------------------------------------


def band_rows(spans: Sequence[tuple[int, int]], steps: int) -> IntArray:
    """Per step, the index into ``spans`` (first step, end step) of the tuned band that serves
    it, or -1 where no band was tuned."""
    h = np.arange(steps)
    out = np.full(steps, -1, dtype=np.int64)
    for i, (first, end) in enumerate(spans):
        out[(h >= first) & (h < end)] = i
    return out


def apply_demand(
    bands: tuple[DemandBand, ...],
    candidates: Mapping[str, FloatArray],
    p10: FloatArray,
    p50: FloatArray,
    p90: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, dict[str, str]]:
    """Each tuned band's chosen candidate as the P50 and its ratio band around it; untuned steps,
    and steps where the chosen candidate has no value, keep the forecast as it was. Returns the
    quantiles and which candidate serves each band."""
    lo, mid, hi = p10.copy(), p50.copy(), p90.copy()
    rows = band_rows([(b.first, b.end) for b in bands], p50.size)
    basis: dict[str, str] = {}
    for i, b in enumerate(bands):
        chosen = candidates.get(b.chosen)
        if chosen is None:
            continue
        here = (rows == i) & np.isfinite(chosen)
        if not here.any():
            continue
        basis[b.name] = b.chosen
        centre = np.maximum(chosen[here], 0.0)
        mid[here] = centre
        lo[here] = centre * b.ratio_p10
        hi[here] = centre * b.ratio_p90
    return lo, mid, hi, basis


def apply_generation(
    bands: tuple[GenerationBand, ...],
    p10: FloatArray,
    p50: FloatArray,
    p90: FloatArray,
    scale_w: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """P10 and P90 moved out (or in) by each band's ``widen`` times the step's scale, kept on
    either side of the P50 and P10 not below zero."""
    rows = band_rows([(b.first, b.end) for b in bands], p50.size)
    widen = np.zeros(p50.size)
    for i, b in enumerate(bands):
        widen[rows == i] = b.widen
    move = widen * scale_w
    lo = np.clip(p10 - move, 0.0, p50)
    hi = np.maximum(p90 + move, p50)
    return lo, hi
