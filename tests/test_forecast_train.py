"""A tiny smoke train: the exported ONNX graph agrees with scikit-learn, and retraining keeps a
model only when it wins the backtest. Skipped without the train extra."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnx")
pytest.importorskip("tqdm")

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from hub.forecast.features import FEATURES, TARGETS
from hub.forecast.model import ForecastModel, scale_band
from hub.forecast.site import Site
from models.train import (
    DEMAND_ANCHOR,
    Bagged,
    Blended,
    Settings,
    export_onnx,
    fit_quantiles,
    interval_scale,
    retrain_from_history,
)
from tests.test_forecast_features import LAT, LON, sim_community


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread() -> Iterator[None]:
    """scikit-learn's gradient boosting on one OpenMP thread. These fits are tiny (600 rows, 10
    iterations), and its threads spin while they wait for each other: with other processes on
    the 2 cores, the file took 82 s on two threads and 20 s on one. Nothing here checks a
    figure that depends on the thread count: each comparison is between models fitted in this
    file. (threadpoolctl comes with scikit-learn.)"""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


TINY = Settings(every_hours=12.0, step_fraction=0.3, max_iter=10, learning_rate=0.3)
BLENDED = replace(TINY, demand_blend=0.7, demand_max_leaf_nodes=15, demand_l2_regularization=1.0)


def _fit_every_target(seed: int, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Regressors fitted per target on random features, and those features."""
    rng = np.random.default_rng(seed)
    fitted, xs = {}, {}
    for target in TARGETS:
        n = len(FEATURES[target])
        x = rng.normal(size=(600, n)).astype(np.float32)
        y = x[:, 0] * 2 + np.sin(x[:, 1]) + rng.normal(scale=0.3, size=600)
        fitted[target] = fit_quantiles(x, y, settings, target)
        xs[target] = x
    return fitted, xs


def _exported(
    fitted: dict[str, Any], xs: dict[str, Any], path: Path, info: dict[str, str]
) -> ForecastModel:
    """The ONNX export of ``fitted``, checked to predict what scikit-learn does."""
    export_onnx(fitted, path, info)
    model = ForecastModel(path)
    for target in TARGETS:
        expected = np.sort(np.column_stack([m.predict(xs[target]) for m in fitted[target]]), axis=1)
        np.testing.assert_allclose(model.predict(target, xs[target]), expected, atol=1e-5)
    return model


def test_onnx_export_matches_scikit_learn(tmp_path: Path) -> None:
    fitted, xs = _fit_every_target(1, TINY)
    _exported(fitted, xs, tmp_path / "m.onnx", {})


def test_retrain_replaces_only_a_worse_model(tmp_path: Path) -> None:
    history, weather = sim_community(days=22, homes=6)
    site = Site(LAT, LON)
    target = tmp_path / "forecast.onnx"
    first = retrain_from_history(
        history, weather, site, target, holdout_days=4, settings=TINY, include_open_data=False,
        current=tmp_path / "no-model.onnx",
    )  # fmt: skip
    assert first.replaced  # anything beats having no model
    assert target.exists()
    assert first.candidate_skill is not None and first.current_skill is None
    # The same data and settings again: the candidate is identical, so it does not win.
    second = retrain_from_history(
        history, weather, site, target, holdout_days=4, settings=TINY, include_open_data=False
    )
    assert not second.replaced
    assert second.candidate_skill == pytest.approx(second.current_skill)
    assert ForecastModel(target).id == first.candidate_id
    assert not list(tmp_path.glob(".*candidate*"))


def test_retrain_needs_enough_history(tmp_path: Path) -> None:
    history, weather = sim_community(days=12, homes=12)
    with pytest.raises(ValueError, match="needs at least"):
        retrain_from_history(
            history, weather, Site(LAT, LON), tmp_path / "m.onnx", holdout_days=14,
            settings=TINY, include_open_data=False,
        )  # fmt: skip


class _Fixed:
    """Stands in for a fitted regressor: predicts given values."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.values


def test_calibration_narrows_a_band_over_many_zeros() -> None:
    """PV-like rows: half are night (actual 0, P10 exactly 0, P50 just above it), half day.
    The fitted band covers 95 %: calibration must narrow it to 80 % (it used to stay at 1.0,
    because narrowing lifted the P10 off every night's zero at once)."""
    rng = np.random.default_rng(3)
    n = 4000
    night = np.arange(n) < n // 2
    p50 = np.where(night, 0.002, 0.5)
    p10 = np.where(night, 0.0, 0.2)
    p90 = np.where(night, 0.01, 0.8)
    y = np.where(night, 0.0, np.clip(rng.normal(0.5, 0.15, n), 0, None))
    models = [_Fixed(p10), _Fixed(p50), _Fixed(p90)]
    x = np.zeros((n, 1), dtype=np.float32)
    k = interval_scale(models, x, y)
    assert 0.3 < k < 0.9
    band = np.maximum(scale_band(np.column_stack([p10, p50, p90]), k), 0.0)
    covered = (y >= band[:, 0]) & (y <= band[:, 2])
    assert covered.mean() == pytest.approx(0.8, abs=0.01)
    assert covered[night].all()  # the zeros stay inside


def test_a_bagged_demand_p50_is_the_mean_of_its_members_and_exports_as_one_node(
    tmp_path: Path,
) -> None:
    fitted, xs = _fit_every_target(3, TINY)
    bagged = fitted["demand"][1]
    assert isinstance(bagged, Bagged) and len(bagged.models) == TINY.demand_bag
    assert [m.random_state for m in bagged.models] == list(range(TINY.demand_bag))
    assert {m.max_features for m in bagged.models} == {TINY.demand_bag_features}
    x = xs["demand"]
    members = np.column_stack([m.predict(x) for m in bagged.models])
    assert np.ptp(members, axis=1).max() > 0  # the members differ: the features drawn differ
    np.testing.assert_allclose(bagged.predict(x), members.mean(axis=1))
    assert not isinstance(fitted["demand"][0], Bagged)  # P10 and P90: one ensemble each
    assert not isinstance(fitted["pv"][1], Bagged)
    _exported(fitted, xs, tmp_path / "m.onnx", {})  # predicts what scikit-learn does
    import onnx

    graph = onnx.load(tmp_path / "m.onnx").graph
    demand_p50 = [n for n in graph.node if n.output == ["demand_q1"]]
    assert len(demand_p50) == 1 and demand_p50[0].op_type == "TreeEnsembleRegressor"


def test_a_blended_demand_p50_exports_exactly(tmp_path: Path) -> None:
    """Demand's P50 is the trees blended with its seasonal anchor; the ONNX graph computes the
    same blend (scaled leaves + Gather/Mul/Add) as scikit-learn."""
    fitted, xs = _fit_every_target(2, BLENDED)
    blended = fitted["demand"][1]
    assert isinstance(blended, Blended)
    assert blended.feature == FEATURES["demand"].index(DEMAND_ANCHOR)
    x = xs["demand"]
    expected_p50 = (
        BLENDED.demand_blend * blended.model.predict(x)
        + (1 - BLENDED.demand_blend) * x[:, blended.feature]
    )
    np.testing.assert_allclose(blended.predict(x), expected_p50, rtol=1e-5, atol=1e-6)
    info = {"coopwatt.interval_scale.wind.configured": "0.5"}
    model = _exported(fitted, xs, tmp_path / "m.onnx", info)
    # A per-mode calibration factor applies to its mode only; others use the pooled one.
    assert model.interval_scale_for("wind", configured=True) == 0.5
    assert model.interval_scale_for("wind") == model.interval_scale["wind"] == 1.0
    assert model.interval_scale_for("pv", configured=True) == 1.0
