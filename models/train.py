"""Train the community forecast and export it as ``models/forecast.onnx``.

Reproducible (fixed seeds, fixed data, fixed hyper-parameters)::

    pip install -e '.[hub,train]'
    python -m models.train                 # trains, exports, backtests; shows progress bars
    python -m models.train --quick         # a smaller run, for a smoke test (a minute or so)

Nine gradient-boosted tree ensembles (scikit-learn's HistGradientBoostingRegressor with the
quantile loss: P10, P50 and P90 of demand, PV and wind), each converted by skl2onnx and joined
into one ONNX graph with an input and an output per target. The features are
:mod:`hub.forecast.features`' so training and the hub cannot disagree. Data (``models/data/``, see
``models/prepare_data.py`` and ``models/MODEL_CARD.md``): HTW Berlin's 74 measured homes for
demand, NREL PVDAQ system 50 with NSRDB satellite weather for PV, DWD measured wind for wind.

Weather forecasts are not part of any open data set that ships in a package, so training and the
bench turn the measured weather into a forecast with synthetic errors that grow with lead time
(:class:`ForecastErrors`): the model then learns how far to trust a forecast, and its P10–P90
band covers forecast error as well as the community's own randomness.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from hub.forecast.backtest import RETRAIN_START_DAYS, backtest, mean_skill, retrain_shortfall
from hub.forecast.features import DAY_MS, FEATURES, STEP_MS, TARGETS, History
from hub.forecast.model import (
    CAPACITY_MODES,
    MODEL_FORMAT,
    QUANTILES,
    ForecastModel,
    model_inputs,
    scale_band,
)
from hub.forecast.site import Site
from hub.forecast.solar import FloatArray, IntArray, mean_clear_sky_ghi
from hub.forecast.weather import WeatherSeries, parse_open_meteo_csv, to_steps
from protocol.timeparse import parse_iso_ms

DATA: Final = Path(__file__).resolve().parent / "data"
MODEL_PATH: Final = Path(__file__).resolve().parent / "forecast.onnx"
REPORT_PATH: Final = Path(__file__).resolve().parent / "backtest_report.json"

# Germany's nationwide public holidays of 2010 run like Sundays; 24 and 31 December like
# Saturdays, as in the BDEW standard load profiles (the homes are "in Germany", state unknown, so
# regional holidays are left out). The HTW data are stamped in CET all year, and the homes keep
# to that clock (their mornings start at 07:00 CET in July as in January), hence UTC+1 fixed.
DE_HOLIDAYS_2010: Final = frozenset(
    date.fromisoformat(d)
    for d in (
        "2010-01-01", "2010-04-02", "2010-04-05", "2010-05-01", "2010-05-13", "2010-05-24",
        "2010-10-03", "2010-12-25", "2010-12-26",
    )
)  # fmt: skip
DE_HALF_HOLIDAYS_2010: Final = frozenset((date(2010, 12, 24), date(2010, 12, 31)))
DEMAND_SITE: Final = Site(
    52.52,
    13.41,
    timezone="Etc/GMT-1",
    holidays=DE_HOLIDAYS_2010,
    half_holidays=DE_HALF_HOLIDAYS_2010,
)  # HTW Berlin
# SimBench's feeders follow the German wall clock (summer time included); they have no place,
# so the centre of Germany. Their holidays are unknown: none are configured.
SIMBENCH_SITE: Final = Site(51.2, 10.4, timezone="Europe/Berlin")
SIMBENCH_WINDOW: Final = (
    parse_iso_ms("2016-01-08", naive="utc"),
    parse_iso_ms("2017-01-01", naive="utc"),
)
"""All of 2016 but its first week (the features' history): these feeders are never tested on;
the evaluation feeders are three others (``models/data/eval``)."""
PV_SITE: Final = Site(39.7406, -105.1775)  # NREL, Golden, Colorado (PVDAQ system 50)
WIND_SITE: Final = Site(51.0, 10.0)  # a German DWD station; location only sets local time

# A small turbine's power curve at hub height (the simulator's): cut-in, rated, cut-out (m/s).
TURBINE_CUT_IN: Final = 3.0
TURBINE_RATED: Final = 11.0
TURBINE_CUT_OUT: Final = 25.0
HUB_HEIGHT_FACTOR: Final = (18.0 / 10.0) ** (1 / 7)  # 10 m to an 18 m hub, power law 1/7
WIND_CAPACITY_W: Final = 10_000.0
PV_CAPACITY_W: Final = 3_400.0  # PVDAQ system 50: its highest 15-minute output is 3,368 W

HOUR_MS: Final = 3_600_000
CALIBRATION_EVERY_DAYS: Final = 7
MIN_CALIBRATION_ROWS: Final = 200


# -- data ------------------------------------------------------------------------------------


def _read_gz_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _ts_ms(values: Iterable[str]) -> IntArray:
    return np.asarray(
        [parse_iso_ms(v, naive="local") for v in values],
        dtype=np.int64,
    )


def _on_grid(ts: IntArray, values: FloatArray) -> tuple[int, FloatArray]:
    """Place values on a gap-free 15-minute grid (NaN in gaps)."""
    start = int(ts[0]) - int(ts[0]) % STEP_MS
    n = int((ts[-1] - start) // STEP_MS) + 1
    out = np.full(n, np.nan)
    out[(ts - start) // STEP_MS] = values
    return start, out


def demand_histories() -> dict[str, History]:
    """The 74 homes together and in two halves of 37 (W)."""
    _, rows = _read_gz_csv(DATA / "demand_htw74.csv.gz")
    ts = _ts_ms(r[0] for r in rows)
    out: dict[str, History] = {}
    for col, name in ((1, "74 homes"), (2, "37 homes (a)"), (3, "37 homes (b)")):
        start, values = _on_grid(ts, np.asarray([float(r[col]) for r in rows]))
        nan = np.full(values.size, np.nan)
        out[name] = History(start, values, nan, nan)
    return out


def simbench_histories() -> dict[str, History]:
    """Three SimBench low-voltage feeders (2016, German clock, 80 kW mean each; W)."""
    header, rows = _read_gz_csv(DATA / "demand_simbench_lv.csv.gz")
    ts = _ts_ms(r[0] for r in rows)
    out: dict[str, History] = {}
    for col, name in enumerate(header[1:], start=1):
        cells = [r[col] if col < len(r) else "" for r in rows]
        start, values = _on_grid(ts, np.asarray([float(c) if c else np.nan for c in cells]))
        nan = np.full(values.size, np.nan)
        out[name] = History(start, values, nan, nan)
    return out


def pv_dataset() -> tuple[History, WeatherSeries]:
    """PVDAQ system 50's AC power (W) and its Open-Meteo-style hourly weather."""
    _, rows = _read_gz_csv(DATA / "pv_pvdaq50.csv.gz")
    start, values = _on_grid(_ts_ms(r[0] for r in rows), np.asarray([float(r[1]) for r in rows]))
    nan = np.full(values.size, np.nan)
    with gzip.open(DATA / "weather_pvdaq50.csv.gz", "rt", encoding="utf-8") as f:
        weather = parse_open_meteo_csv(f.read())
    return History(start, nan, values, nan), weather


def turbine_power_w(speed_10m: FloatArray, capacity_w: float = WIND_CAPACITY_W) -> FloatArray:
    v = speed_10m * HUB_HEIGHT_FACTOR
    frac = (v**3 - TURBINE_CUT_IN**3) / (TURBINE_RATED**3 - TURBINE_CUT_IN**3)
    p = np.where(v >= TURBINE_RATED, 1.0, np.clip(frac, 0.0, 1.0))
    result: FloatArray = np.where((v < TURBINE_CUT_IN) | (v > TURBINE_CUT_OUT), 0.0, p)
    return result * capacity_w


def wind_dataset() -> tuple[History, WeatherSeries]:
    """DWD's measured wind: a small turbine's output (W) on its 15-minute speeds, and the
    hourly speeds as an Open-Meteo-style weather series (instantaneous, on the hour)."""
    _, rows = _read_gz_csv(DATA / "wind_dwd2015.csv.gz")
    ts = _ts_ms(r[0] for r in rows)
    speed = np.asarray([float(r[1]) for r in rows])
    start, grid_speed = _on_grid(ts, speed)
    power = turbine_power_w(grid_speed)
    nan = np.full(power.size, np.nan)
    on_hour = ts % HOUR_MS == 0
    hourly = speed[on_hour]
    nanh = np.full(hourly.size, np.nan)
    weather = WeatherSeries(ts[on_hour], nanh, nanh, hourly, nanh)
    return History(start, nan, nan, power), weather


# -- synthetic forecast errors --------------------------------------------------------------


@dataclass(frozen=True)
class ForecastErrors:
    """Turns measured weather into a forecast issued at a given time, with errors that grow with
    lead time and persist for hours (AR(1) per hour), seeded by the issue time.

    Day-ahead irradiance forecasts reach about 20–35 % RMSE of mean daytime GHI in sunny
    climates (more under changeable skies); the clearness-index error here (σ from 0.08 at
    issue to 0.18 at 48 h) gives about that. Wind speed: 15 % to 30 % multiplicative; temperature:
    ±1–2 °C.
    """

    weather: WeatherSeries
    site: Site
    seed: int = 0

    def __call__(self, issue_ms: int) -> WeatherSeries:
        w = self.weather
        rng = np.random.default_rng([self.seed, issue_ms // STEP_MS])
        n = len(w)
        lead_h = np.clip((w.ts_ms - issue_ms) / HOUR_MS, 0.0, 48.0)
        ahead = w.ts_ms >= issue_ms

        def ar1(phi: float) -> FloatArray:
            z = rng.standard_normal(n)
            out = np.empty(n)
            acc = 0.0
            scale = math.sqrt(1 - phi * phi)
            for i in range(n):
                acc = phi * acc + scale * z[i] if i else z[i]
                out[i] = acc
            return out

        cs = mean_clear_sky_ghi(w.ts_ms - HOUR_MS, HOUR_MS, self.site.lat, self.site.lon)
        ghi = w.shortwave_radiation_w_m2
        kt = np.where(cs > 1.0, ghi / np.maximum(cs, 1.0), 0.0)
        kt_f = np.clip(kt + (0.08 + 0.10 * lead_h / 48.0) * ar1(0.85), 0.0, 1.3)
        ghi_f = np.where(ahead & (cs > 1.0), kt_f * cs, ghi)
        wind_f = np.where(
            ahead,
            w.wind_speed_m_s * np.exp((0.15 + 0.15 * lead_h / 48.0) * ar1(0.9)),
            w.wind_speed_m_s,
        )
        temp_f = np.where(
            ahead, w.temperature_c + (1.0 + lead_h / 48.0) * ar1(0.9), w.temperature_c
        )
        return WeatherSeries(
            w.ts_ms, ghi_f, temp_f, wind_f, w.cloud_cover_pct, w.latitude, w.longitude
        )

    def window(self, issue_ms: int, hours: int = 48) -> WeatherSeries:
        """Only the hours a forecast at ``issue_ms`` needs (fast), with errors."""
        sub = self.weather.between(issue_ms - HOUR_MS, issue_ms + (hours + 2) * HOUR_MS)
        return ForecastErrors(sub, self.site, self.seed)(issue_ms)


# -- training rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One target's training source: a history, its weather as forecast at an issue time, and
    where it is. ``weather_at(issue_ms)`` returns the weather that issue may see."""

    name: str
    target: str
    history: History
    weather_at: Callable[[int], WeatherSeries]
    site: Site
    measured: WeatherSeries | None = None  # the weather as measured, for a second backtest
    offset: float = 0.0  # of the issue times, as a fraction of the interval between them
    window: tuple[int, int] | None = None  # training period (ms); default: SPLITS' for target

    def train_window(self) -> tuple[int, int]:
        """The period this source trains on: its own, or its target's chronological split."""
        if self.window is not None:
            return self.window
        start, end, _ = SPLITS[self.target]
        return start, end


def issue_times(start_ms: int, end_ms: int, every_hours: float) -> list[int]:
    """Issues from ``start_ms`` to ``end_ms`` (last step of the horizon before it), staggered by
    15 minutes each time so that every time of day is an issue time somewhere."""
    every = round(every_hours * HOUR_MS)
    out, t, k = [], start_ms - start_ms % STEP_MS, 0
    while t + 48 * HOUR_MS <= end_ms:
        out.append(t + (k % 4) * STEP_MS)
        t += every
        k += 1
    return out


def rows_for(
    ds: Dataset, issues: Sequence[int], step_fraction: float, rng: np.random.Generator, bar: Any
) -> tuple[np.ndarray, FloatArray]:
    xs, ys = [], []
    steps = 192
    for issue_ms in issues:
        weather = ds.weather_at(issue_ms)
        t = issue_ms + np.arange(steps, dtype=np.int64) * STEP_MS
        sw = to_steps(weather, t, STEP_MS, ds.site.lat, ds.site.lon)
        past = ds.history.before(issue_ms)
        inputs = model_inputs(ds.target, past, sw, ds.site, issue_ms, steps)
        bar.update(1)
        if isinstance(inputs, str):
            continue
        series = ds.history.series(ds.target)
        idx = (t - ds.history.start_ms) // STEP_MS
        ok = (idx >= 0) & (idx < series.size)
        y = np.full(steps, np.nan)
        y[ok] = series[idx[ok]]
        keep = np.isfinite(y) & inputs.covered & (rng.random(steps) < step_fraction)
        xs.append(inputs.x[keep])
        ys.append(y[keep] / inputs.scale_w)
    if not xs:
        return np.zeros((0, len(FEATURES[ds.target])), dtype=np.float32), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


# -- fitting and export ----------------------------------------------------------------------


DEMAND_ANCHOR: Final = "same_weekday_2w"
"""The seasonal anchor the demand P50 is blended with (see :class:`Blended`)."""


@dataclass(frozen=True)
class Settings:
    """Training settings. The ``demand_*`` ones can give demand its own tree shape and blend its
    P50 with :data:`DEMAND_ANCHOR`; they default to the shared settings and no blend, because
    the tuned variant that won on the validation split scored worse on the held-out quarter.
    Demand's P50 is bagged by default (:class:`Bagged`): that won on the same validation split
    and then on the held-out quarter. The variants and their figures: ``models/MODEL_CARD.md``,
    "What the demand figure rests on".
    """

    every_hours: float = 3.0
    step_fraction: float = 0.35
    max_iter: int = 250
    learning_rate: float = 0.06
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 100
    seed: int = 0
    demand_max_leaf_nodes: int = 31
    demand_min_samples_leaf: int = 100
    demand_l2_regularization: float = 0.0
    # Weight of the trees in demand's P50, the rest on DEMAND_ANCHOR (1.0: trees only).
    demand_blend: float = 1.0
    # Demand's P50 as the mean of this many tree ensembles, each choosing each split from a
    # random share of the features (see :class:`Bagged`); 1: one ensemble on every feature.
    demand_bag: int = 5
    demand_bag_features: float = 0.5

    @classmethod
    def quick(cls) -> Settings:
        return cls(every_hours=12.0, step_fraction=0.2, max_iter=60, learning_rate=0.15)


@dataclass(frozen=True)
class Blended:
    """A fitted regressor blended with one input feature: ``weight · model(x) + (1 − weight) ·
    x[:, feature]`` (both in the target's normalised unit).

    Why: the demand trees and the two-week same-weekday anchor err differently (the trees on
    the jitter they try to model, the anchor on level changes), and a fixed blend of the two
    beat either alone on validation. Exported exactly (scaled leaf weights, a Gather, a Mul and
    an Add), so ONNX and scikit-learn agree.
    """

    model: Any
    weight: float
    feature: int

    def predict(self, x: np.ndarray) -> FloatArray:
        tree: FloatArray = self.model.predict(x)
        anchor = np.asarray(x[:, self.feature], dtype=np.float64)
        result: FloatArray = self.weight * tree + (1.0 - self.weight) * anchor
        return result


@dataclass(frozen=True)
class Bagged:
    """The mean of tree ensembles fitted on the same rows, each choosing every split from a
    random share of the features (its own seed).

    Why: demand's error is mostly 15-minute jitter that no feature predicts, and one ensemble
    chases part of it; the mean of five, each kept from leaning on the same lags, varies less.
    Five on half the features were chosen on the validation split; more members, another share
    of the features, more iterations or smaller trees did not add to it (figures:
    ``models/MODEL_CARD.md``, "A bagged P50"). Exported as one ``TreeEnsembleRegressor``
    holding every member's trees, leaves scaled by 1/n (:func:`_tree_ensemble`), so ONNX and
    scikit-learn agree.
    """

    models: tuple[Any, ...]

    def predict(self, x: np.ndarray) -> FloatArray:
        result: FloatArray = np.mean([m.predict(x) for m in self.models], axis=0)
        return result


def fit_quantile(
    x: np.ndarray, y: FloatArray, settings: Settings, q: float, demand: bool = False
) -> Any:
    """One quantile's regressor (``q`` 0.5: the mean, see :func:`fit_quantiles`); ``demand``
    uses the demand settings, and its P50 is :class:`Bagged` when ``settings.demand_bag`` > 1."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    # The central forecast is fitted with squared error (the conditional mean): a median
    # regression on a target that is zero more than half the time (wind, PV at dusk) collapses
    # to zero, while the mean keeps the expected output.
    central = q == 0.5
    bag = settings.demand_bag if central and demand else 1
    members = [
        HistGradientBoostingRegressor(
            loss="squared_error" if central else "quantile",
            quantile=None if central else q,
            max_iter=settings.max_iter,
            learning_rate=settings.learning_rate,
            max_leaf_nodes=settings.demand_max_leaf_nodes if demand else settings.max_leaf_nodes,
            min_samples_leaf=(
                settings.demand_min_samples_leaf if demand else settings.min_samples_leaf
            ),
            l2_regularization=settings.demand_l2_regularization if demand else 0.0,
            max_features=settings.demand_bag_features if bag > 1 else 1.0,
            early_stopping=False,
            random_state=settings.seed + k,
        ).fit(x, y)
        for k in range(bag)
    ]
    return members[0] if bag == 1 else Bagged(tuple(members))


def fit_quantiles(
    x: np.ndarray, y: FloatArray, settings: Settings, target: str | None = None
) -> list[Any]:
    """P10, P50 and P90 regressors for one target (``target`` "demand" uses the demand
    settings and blends its P50 with :data:`DEMAND_ANCHOR`)."""
    demand = target == "demand"
    models: list[Any] = []
    for q in QUANTILES:
        central = q == 0.5
        m = fit_quantile(x, y, settings, q, demand)
        if central and demand and settings.demand_blend < 1.0:
            anchor = FEATURES["demand"].index(DEMAND_ANCHOR)
            models.append(Blended(m, settings.demand_blend, anchor))
        else:
            models.append(m)
    return models


def _regressor_nodes(model: Any, input_name: str, output_name: str) -> tuple[list[Any], list[Any]]:
    """ONNX nodes and initialisers computing ``model`` (a fitted HistGradientBoostingRegressor
    or a :class:`Blended` one) from ``input_name`` into ``output_name``, shape (N, 1)."""
    from onnx import TensorProto, helper

    if not isinstance(model, Blended):
        return [_tree_ensemble(model, input_name, output_name)], []
    tree, anchor, scaled = (f"{output_name}_{s}" for s in ("tree", "anchor", "anchor_scaled"))
    index, weight = f"{output_name}_index", f"{output_name}_weight"
    nodes = [
        _tree_ensemble(model.model, input_name, tree, scale=model.weight),
        helper.make_node("Gather", [input_name, index], [anchor], axis=1),
        helper.make_node("Mul", [anchor, weight], [scaled]),
        helper.make_node("Add", [tree, scaled], [output_name]),
    ]
    inits = [
        helper.make_tensor(index, TensorProto.INT64, [1], [model.feature]),
        helper.make_tensor(weight, TensorProto.FLOAT, [], [1.0 - model.weight]),
    ]
    return nodes, inits


def _tree_ensemble(model: Any, input_name: str, output_name: str, scale: float = 1.0) -> Any:
    """A fitted HistGradientBoostingRegressor as one ONNX ``TreeEnsembleRegressor`` node.

    HGB goes left when ``x <= threshold`` (float64). The ONNX node compares float32, so each
    threshold is rounded DOWN to a float32: for float32 inputs, ``x <= t32`` exactly when
    ``x <= t64``, and ONNX agrees with scikit-learn bit for bit on the branch taken.
    Features never hold NaN (see :mod:`hub.forecast.features`), so missing-value routing is not
    needed.
    ``scale`` multiplies every leaf and the baseline (a blend's weight, see :class:`Blended`).
    A :class:`Bagged` model becomes one node with every member's trees, each scaled by 1/n.
    """
    from onnx import helper

    members = model.models if isinstance(model, Bagged) else (model,)
    scale /= len(members)

    attrs: dict[str, Any] = {
        k: []
        for k in [
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        ]
    }
    trees = [predictor for member in members for (predictor,) in member._predictors]
    for tree_id, predictor in enumerate(trees):
        for node_id, node in enumerate(predictor.nodes):
            leaf = bool(node["is_leaf"])
            threshold = np.float32(node["num_threshold"])
            if not leaf and float(threshold) > float(node["num_threshold"]):
                threshold = np.nextafter(threshold, np.float32(-np.inf))
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
            attrs["nodes_values"].append(0.0 if leaf else float(threshold))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
            attrs["nodes_missing_value_tracks_true"].append(0)
            if leaf:
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(node["value"]) * scale)
    return helper.make_node(
        "TreeEnsembleRegressor",
        [input_name],
        [output_name],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[sum(float(np.ravel(m._baseline_prediction)[0]) for m in members) * scale],
        **attrs,
    )


def model_identity(body: bytes, info: dict[str, str]) -> str:
    """The model's id: a hash of its graph (``body``, serialised before any metadata) and of its
    band calibration (``coopwatt.interval_scale.*`` in ``info``), which changes the forecast
    as much as the graph does; not of the training date, so a rerun reproduces it."""
    calibration = {k: v for k, v in sorted(info.items()) if k.startswith("coopwatt.interval_scale")}
    digest = hashlib.sha256(body + json.dumps(calibration).encode()).hexdigest()[:12]
    return f"coopwatt-forecast-{digest}"


def export_onnx(fitted: dict[str, list[Any]], path: Path, info: dict[str, str]) -> str:
    """Join the nine regressors into one ONNX model at ``path``; returns the model's id."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inputs, outputs, inits = [], [], [], []
    for target, models in fitted.items():
        input_name = f"{target}_features"
        n_features = len(FEATURES[target])
        inputs.append(
            helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_features])
        )
        quantile_outputs = []
        for qi, model in enumerate(models):
            name = f"{target}_q{qi}"
            model_nodes, model_inits = _regressor_nodes(model, input_name, name)
            nodes.extend(model_nodes)
            inits.extend(model_inits)
            quantile_outputs.append(name)
        out_name = f"{target}_quantiles"
        nodes.append(helper.make_node("Concat", quantile_outputs, [out_name], axis=1))
        outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [None, 3]))
    graph = helper.make_graph(nodes, "coopwatt_forecast", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    model_id = model_identity(model.SerializeToString(), info)
    meta = {
        "coopwatt.format": MODEL_FORMAT,
        "coopwatt.id": model_id,
        "coopwatt.quantiles": json.dumps(list(QUANTILES)),
        **{f"coopwatt.features.{t}": json.dumps(list(FEATURES[t])) for t in TARGETS},
        **info,
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return model_id


def train(
    datasets: Sequence[Dataset],
    windows: dict[str, tuple[int, int]],
    settings: Settings,
    out: Path,
    info: dict[str, str],
) -> str:
    """Fit on each dataset's ``windows[name]`` (start, end ms) and export to ``out``."""
    from tqdm import tqdm

    rng = np.random.default_rng(settings.seed)
    plan: list[tuple[Dataset, list[int]]] = []
    for ds in datasets:
        start, end = windows[ds.name]
        every = settings.every_hours * (2 if ds.name + " configured" in windows or ds.offset else 1)
        plan.append((ds, issue_times(start + round(ds.offset * every * HOUR_MS), end, every)))
    total = sum(len(i) for _, i in plan)
    # One day in CALIBRATION_EVERY_DAYS of each source's issues is kept out of the fit: on those
    # the P10-P90 band is widened or narrowed to cover 80 % (split-conformal style).
    data: dict[str, list[tuple[np.ndarray, FloatArray]]] = {t: [] for t in TARGETS}
    calib: dict[str, list[tuple[np.ndarray, FloatArray, str]]] = {t: [] for t in TARGETS}
    with tqdm(total=total, desc="features", unit="issue", file=sys.stderr) as bar:
        for ds, issues in plan:
            held = [(i // DAY_MS) % CALIBRATION_EVERY_DAYS == 3 for i in issues]
            fit_issues = [i for i, h in zip(issues, held, strict=True) if not h]
            calib_issues = [i for i, h in zip(issues, held, strict=True) if h]
            data[ds.target].append(rows_for(ds, fit_issues, settings.step_fraction, rng, bar))
            xc, yc = rows_for(ds, calib_issues, settings.step_fraction, rng, bar)
            keep = where_band_matters(ds.target, xc, yc)
            calib[ds.target].append((xc[keep], yc[keep], capacity_mode(ds)))
    fitted: dict[str, list[Any]] = {}
    scales: dict[str, float] = {}
    with tqdm(total=len(TARGETS), desc="fit", unit="target", file=sys.stderr) as bar:
        for target in TARGETS:
            x = np.concatenate([r[0] for r in data[target]])
            y = np.concatenate([r[1] for r in data[target]])
            if y.size < 500:
                raise ValueError(f"only {y.size} training rows for {target}; need more history")
            bar.set_postfix_str(f"{target}: {y.size} rows")
            fitted[target] = fit_quantiles(x, y, settings, target)
            xc = np.concatenate([r[0] for r in calib[target]])
            yc = np.concatenate([r[1] for r in calib[target]])
            scales[target] = interval_scale(fitted[target], xc, yc)
            if target != "demand":
                # One factor per capacity mode as well, when the mode has rows enough
                # (hub.forecast.model.ForecastModel.interval_scale_for says why).
                for mode in CAPACITY_MODES:
                    rows = [r for r in calib[target] if r[2] == mode]
                    if sum(r[1].size for r in rows) >= MIN_CALIBRATION_ROWS:
                        scales[f"{target}.{mode}"] = interval_scale(
                            fitted[target],
                            np.concatenate([r[0] for r in rows]),
                            np.concatenate([r[1] for r in rows]),
                        )
            bar.update(1)
    info = {**info, **{f"coopwatt.interval_scale.{t}": f"{k:.4f}" for t, k in scales.items()}}
    return export_onnx(fitted, out, info)


def where_band_matters(target: str, x: np.ndarray, y: FloatArray) -> np.ndarray:
    """The calibration rows the band is sized on: PV in daylight (clear-sky irradiance above
    zero), wind where it turned (output above zero), demand everywhere.

    Why: night and calm are zeros that any band with a P10 at zero covers. Counted in, they let
    the calibration narrow the band until it missed half of the daylight steps (46 % daylight
    coverage on a real system the model never saw, 67 % on the held-out year here), while the
    band still "covered 80 %". The hub recalibrates on its own weeks as well
    (:mod:`hub.forecast.tuning`); this is what a cooperative without history gets.
    """
    if target == "pv":
        result: np.ndarray = x[:, FEATURES["pv"].index("clear_sky")] > 0
        return result
    if target == "wind":
        return np.asarray(y > 0)
    return np.ones(y.shape, dtype=bool)


def capacity_mode(ds: Dataset) -> str:
    """Whether ``ds``'s PV or wind output is normalised by a configured capacity or an estimated
    one (:data:`hub.forecast.model.CAPACITY_MODES`); demand counts as "estimated" (no mode)."""
    configured = ds.site.pv_capacity_w if ds.target == "pv" else ds.site.wind_capacity_w
    return "configured" if ds.target != "demand" and configured is not None else "estimated"


def interval_scale(models: list[Any], x: np.ndarray, y: FloatArray, target: float = 0.8) -> float:
    """The factor k by which scaling the P10 and P90 distances from the P50 makes the band
    cover ``target`` of the calibration rows (1.0 when there are too few rows).

    The band is the hub's (:func:`hub.forecast.model.scale_band`, then clipped at zero): a P10 at or
    below zero stays, so the zeros of night and calm stay covered whatever k is and coverage
    grows smoothly with k. (Moving that P10 as well made coverage jump at k = 1, as every zero
    left the band at once: the search then always ended at 1.0; ``models/MODEL_CARD.md``,
    "Caveats".)
    """
    if y.size < MIN_CALIBRATION_ROWS:
        return 1.0
    q = np.sort(np.column_stack([m.predict(x) for m in models]), axis=1)

    def coverage(k: float) -> float:
        band = np.maximum(scale_band(q, k), 0.0)  # clipped at zero as the hub clips
        return float(np.mean((y >= band[:, 0]) & (y <= band[:, 2])))

    lo, hi = 0.05, 4.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if coverage(mid) < target else (lo, mid)
    return round(hi, 4)


# -- the shipped model -----------------------------------------------------------------------


def _utc(text: str) -> int:
    return parse_iso_ms(text, naive="utc")


# Chronological splits: train on the earlier part, hold out the later part for the backtest.
SPLITS: Final = {
    "demand": (_utc("2010-01-08"), _utc("2010-10-01"), _utc("2011-01-01")),
    "pv": (_utc("2011-04-23"), _utc("2013-01-01"), _utc("2014-01-01")),
    "wind": (_utc("2015-01-08"), _utc("2015-10-01"), _utc("2016-01-01")),
}


def open_datasets(seed: int = 0) -> list[Dataset]:
    """Every training source, with synthetic forecast errors on its weather."""
    out: list[Dataset] = []
    for name, history in demand_histories().items():
        out.append(
            Dataset(
                f"demand {name}", "demand", history, lambda _i: WeatherSeries.empty(), DEMAND_SITE
            )
        )
    for name, history in simbench_histories().items():
        out.append(
            Dataset(
                f"demand simbench {name}",
                "demand",
                history,
                lambda _i: WeatherSeries.empty(),
                SIMBENCH_SITE,
                window=SIMBENCH_WINDOW,
            )
        )
    pv_history, pv_weather = pv_dataset()
    # PV and wind twice: once with the capacity configured, once estimated from history (each
    # on half of the issue times), so the model serves both kinds of cooperative.
    pv_errors = ForecastErrors(pv_weather, PV_SITE, seed)
    pv_configured = replace(PV_SITE, pv_capacity_w=PV_CAPACITY_W)
    out.append(Dataset("pv", "pv", pv_history, pv_errors.window, PV_SITE, pv_weather))
    out.append(
        Dataset("pv configured", "pv", pv_history, pv_errors.window, pv_configured, pv_weather, 0.5)
    )
    wind_history, wind_weather = wind_dataset()
    wind_errors = ForecastErrors(wind_weather, WIND_SITE, seed + 1)
    wind_configured = replace(WIND_SITE, wind_capacity_w=WIND_CAPACITY_W)
    out.append(Dataset("wind", "wind", wind_history, wind_errors.window, WIND_SITE, wind_weather))
    out.append(
        Dataset(
            "wind configured",
            "wind",
            wind_history,
            wind_errors.window,
            wind_configured,
            wind_weather,
            0.5,
        )
    )
    return out


def held_out_backtests(
    model_path: Path, datasets: Sequence[Dataset], every_hours: float
) -> dict[str, Any]:
    """Backtest the exported model on each target's held-out period, with the synthetic-error
    forecast weather ("forecast") and with the measured weather itself ("measured"); each run
    as the hub forecasts (tuned on the 28 days before each issue, :mod:`hub.forecast.tuning`)
    and with the model alone (", model alone")."""
    from tqdm import tqdm

    model = ForecastModel(model_path)
    report: dict[str, Any] = {"model": model.id, "every_hours": every_hours, "runs": {}}
    runs = []
    for ds in datasets:
        _, test_start, test_end = SPLITS[ds.target]
        issues = issue_times(test_start, test_end, every_hours)
        if ds.name == "wind":  # the other capacity mode, which has its own band calibration
            runs.append((ds, issues, "forecast", "wind, capacity estimated (forecast weather)"))
        if ds.name not in ("demand 74 homes", "pv", "wind configured"):
            continue
        runs.append((ds, issues, "forecast", f"{ds.target} (forecast weather)"))
        if ds.measured is not None:
            runs.append((ds, issues, "measured", f"{ds.target} (measured weather)"))
    total = 2 * sum(len(r[1]) for r in runs)
    with tqdm(total=total, desc="backtest", unit="issue", file=sys.stderr) as bar:
        for ds, issues, kind, key in runs:
            if kind == "forecast":
                weather: Callable[[int], WeatherSeries] = ds.weather_at
            else:
                assert ds.measured is not None
                weather = _measured_window(ds.measured)
            for tuned in (True, False):
                r = backtest(
                    model,
                    ds.history,
                    weather,
                    ds.site,
                    issues,
                    targets=[ds.target],
                    progress=bar.update,
                    tuned=tuned,
                )
                r["dataset"] = ds.name
                r["weather"] = kind
                r["period"] = [
                    datetime.fromtimestamp(issues[0] / 1000, UTC).date().isoformat(),
                    datetime.fromtimestamp(issues[-1] / 1000, UTC).date().isoformat(),
                ]
                report["runs"][key if tuned else f"{key}, model alone"] = r
    return report


@dataclass(frozen=True)
class RetrainOutcome:
    replaced: bool
    model_path: Path
    candidate_id: str
    current_id: str
    candidate_skill: float | None
    current_skill: float | None
    candidate_report: dict[str, Any]
    current_report: dict[str, Any]

    @property
    def message(self) -> str:
        verdict = "replaced the current model" if self.replaced else "kept the current model"
        return (
            f"{verdict}: new {self.candidate_id} skill {_pct(self.candidate_skill)}, current "
            f"{self.current_id} skill {_pct(self.current_skill)} (mean RMSE skill vs 24 h "
            f"persistence on the held-out days)"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "replaced": self.replaced,
            "model_path": str(self.model_path),
            "candidate": {
                "id": self.candidate_id,
                "skill": self.candidate_skill,
                "backtest": self.candidate_report,
            },
            "current": {
                "id": self.current_id,
                "skill": self.current_skill,
                "backtest": self.current_report,
            },
        }


def retrain_from_history(
    history: History,
    weather: WeatherSeries,
    site: Site,
    target: Path,
    holdout_days: int = 14,
    *,
    settings: Settings | None = None,
    include_open_data: bool = True,
    current: Path | None = None,
) -> RetrainOutcome:
    """Train a candidate on the cooperative's history (all but the last ``holdout_days``) plus
    the shipped open data, backtest it and the current model on the held-out days, and replace
    ``target`` with the candidate only if it scores better. ``current`` defaults to ``target``
    when it exists, else the shipped model. The stored weather serves as the forecast (it is
    what was imported, i.e. forecast, for those hours)."""
    from hub.forecast.backtest import default_issues
    from hub.forecast.model import SHIPPED_MODEL, has_stream

    settings = settings or Settings()
    shortfall = retrain_shortfall(history, holdout_days)
    if shortfall is not None:
        raise ValueError(shortfall)
    end = history.end_ms
    test_start = end - holdout_days * DAY_MS
    train_start = history.start_ms + RETRAIN_START_DAYS * DAY_MS
    stored = _measured_window(weather)
    datasets: list[Dataset] = []
    windows: dict[str, tuple[int, int]] = {}
    for name in TARGETS:
        if has_stream(history, name, site):
            ds = Dataset(f"cooperative {name}", name, history, stored, site)
            datasets.append(ds)
            windows[ds.name] = (train_start, test_start)
    if include_open_data:
        for ds in open_datasets(settings.seed):
            datasets.append(ds)
            windows[ds.name] = ds.train_window()
    candidate_path = target.with_name(f".{target.name}.candidate")
    current_path = current or (target if target.exists() else SHIPPED_MODEL)
    info = {
        "coopwatt.trained": datetime.now(UTC).strftime("%Y-%m-%d"),
        "coopwatt.data": "cooperative history",
    }
    try:
        train(datasets, windows, settings, candidate_path, info)
        issues = [t for t in default_issues(history, 6) if t >= test_start]
        candidate = ForecastModel(candidate_path)
        new_report = backtest(candidate, history, stored, site, issues, tuned=False)
        try:
            current_model: ForecastModel | None = ForecastModel(current_path)
        except Exception:
            current_model = None
        cur_report = backtest(current_model, history, stored, site, issues, tuned=False)
        new_skill, cur_skill = mean_skill(new_report), mean_skill(cur_report)
        wins = new_skill is not None and (cur_skill is None or new_skill > cur_skill)
        if wins:
            candidate_path.replace(target)
        return RetrainOutcome(
            wins,
            target if wins else current_path,
            candidate.id,
            current_model.id if current_model is not None else "none",
            new_skill,
            cur_skill,
            new_report,
            cur_report,
        )
    finally:
        candidate_path.unlink(missing_ok=True)


def _measured_window(measured: WeatherSeries) -> Callable[[int], WeatherSeries]:
    def at(issue_ms: int) -> WeatherSeries:
        return measured.between(issue_ms - HOUR_MS, issue_ms + 50 * HOUR_MS)

    return at


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per run and horizon band: MAE, skill (MAE- and RMSE-based) against 24-hour
    persistence and last week, and P10-P90 coverage over all steps and where it matters
    (PV's daylight, wind's turning steps)."""
    lines = [
        f"{'run':<56} {'band':<7} {'MAE W':>8} {'MAE/p24':>8} {'RMSE/p24':>8} "
        f"{'MAE/wk':>8} {'RMSE/wk':>8} {'P10-P90':>8} {'matters':>8}"
    ]
    for name, run in report["runs"].items():
        for entry in run["targets"].values():
            for band, m in entry.get("bands", {}).items():
                if not m.get("n"):
                    continue
                where = m.get("coverage_p10_p90_daylight", m.get("coverage_p10_p90_turning"))
                lines.append(
                    f"{name:<56} {band:<7} {m['mae_w']:>8.1f} "
                    f"{_pct(m['skill_mae_vs_persistence_24h']):>8} "
                    f"{_pct(m['skill_rmse_vs_persistence_24h']):>8} "
                    f"{_pct(m['skill_mae_vs_last_week']):>8} "
                    f"{_pct(m['skill_rmse_vs_last_week']):>8} "
                    f"{_pct(m['coverage_p10_p90']):>8} {_pct(where):>8}"
                )
    return lines


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and export models/forecast.onnx.")
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help="ONNX file to write")
    parser.add_argument("--report", type=Path, default=REPORT_PATH, help="backtest JSON to write")
    parser.add_argument("--quick", action="store_true", help="a small, fast run (smoke test)")
    parser.add_argument("--no-backtest", action="store_true", help="skip the held-out backtest")
    parser.add_argument(
        "--backtest-only",
        action="store_true",
        help="backtest the model at --out and write --report, without training",
    )
    args = parser.parse_args(argv)
    if args.backtest_only:
        report = held_out_backtests(args.out, open_datasets(Settings().seed), every_hours=6.0)
        args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print("\n".join(summary_lines(report)))
        return 0
    settings = Settings.quick() if args.quick else Settings()
    datasets = open_datasets(settings.seed)
    windows = {ds.name: ds.train_window() for ds in datasets}
    started = time.monotonic()
    info = {
        "coopwatt.trained": datetime.now(UTC).strftime("%Y-%m-%d"),
        "coopwatt.data": "HTW Berlin 74 homes and SimBench LV feeders rural2, rural3, "
        "semiurb5 (demand); NREL PVDAQ 50 + NSRDB PSM3 (PV); DWD 2015 wind speed (wind). "
        "See models/MODEL_CARD.md",
        "coopwatt.settings": json.dumps(settings.__dict__),
    }
    model_id = train(datasets, windows, settings, args.out, info)
    print(
        f"exported {args.out} ({model_id}) in {time.monotonic() - started:.0f} s", file=sys.stderr
    )
    if not args.no_backtest:
        report = held_out_backtests(args.out, datasets, every_hours=6.0)
        args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print("\n".join(summary_lines(report)))
        print(
            "mean RMSE skill vs 24 h persistence, first run: "
            f"{mean_skill(next(iter(report['runs'].values())))}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
