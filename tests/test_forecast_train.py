"""A tiny smoke train: the exported ONNX graph agrees with scikit-learn, and retraining keeps a
model only when it wins the backtest. Skipped without the train extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnx")
pytest.importorskip("tqdm")

from hub.features import FEATURES, TARGETS
from hub.forecast import ForecastModel, Site
from models.train import (
    Settings,
    export_onnx,
    fit_quantiles,
    retrain_from_history,
)
from tests.test_forecast_features import LAT, LON, sim_community

TINY = Settings(every_hours=12.0, step_fraction=0.3, max_iter=10, learning_rate=0.3)


def test_onnx_export_matches_scikit_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    fitted = {}
    xs = {}
    for target in TARGETS:
        n = len(FEATURES[target])
        x = rng.normal(size=(600, n)).astype(np.float32)
        y = x[:, 0] * 2 + np.sin(x[:, 1]) + rng.normal(scale=0.3, size=600)
        fitted[target] = fit_quantiles(x, y, TINY)
        xs[target] = x
    path = tmp_path / "m.onnx"
    export_onnx(fitted, path, {})
    model = ForecastModel(path)
    for target in TARGETS:
        expected = np.sort(np.column_stack([m.predict(xs[target]) for m in fitted[target]]), axis=1)
        np.testing.assert_allclose(model.predict(target, xs[target]), expected, atol=1e-5)


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
