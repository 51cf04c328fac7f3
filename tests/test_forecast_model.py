"""The shipped ONNX model through onnxruntime: what it forecasts, and how it degrades."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.forecast.features import DAY_MS, STEP_MS, TARGETS, History
from hub.forecast.model import (
    ForecastModel,
    ModelError,
    load_model,
    make_forecast,
    model_inputs,
    smooth_centre,
)
from hub.forecast.site import Site
from hub.forecast.solar import clear_sky_ghi_at
from hub.forecast.weather import WeatherSeries, to_steps
from tests.test_forecast_features import LAT, LON, T0, sim_community

SITE = Site(LAT, LON)


@pytest.fixture(scope="module")
def model() -> ForecastModel:
    return load_model()


def test_the_shipped_model_loads_and_names_its_features(model: ForecastModel) -> None:
    assert model.id.startswith("coopwatt-forecast-")
    assert model.metadata["coopwatt.format"] == "coopwatt-forecast-1"
    for target in TARGETS:
        assert model.interval_scale[target] > 0


def test_a_full_forecast_from_history_and_weather(model: ForecastModel) -> None:
    history, weather = sim_community()
    result = make_forecast(model, history, weather, SITE, T0 + 7 * 60_000)
    assert result.issue_ms == T0  # aligned down to 15 minutes
    assert result.steps == 192
    for target in TARGETS:
        t = result.targets[target]
        assert t.method == "model", (target, t.note)
        assert np.isfinite(t.p50).all()
        assert (t.p10 >= 0).all()
        assert (t.p10 <= t.p50).all() and (t.p50 <= t.p90).all()
    steps = T0 + np.arange(192, dtype=np.int64) * STEP_MS + STEP_MS // 2
    night = clear_sky_ghi_at(steps, LAT, LON) == 0
    pv = result.targets["pv"]
    assert pv.p90[night].max() < 0.02 * pv.p50.max()
    assert pv.p50[~night].max() > 0.2 * 12 * 4000
    # Demand is the right size: within a factor of two of the week's mean.
    mean_demand = np.nanmean(history.before(T0).demand_w[-672:])
    assert 0.5 * mean_demand < result.targets["demand"].p50.mean() < 2 * mean_demand


def test_smooth_centre_evens_out_the_p50_and_keeps_the_band() -> None:
    q = np.array([[0.5, 1.0, 2.0], [0.5, 1.0, 2.0], [3.0, 4.0, 6.0], [0.5, 1.0, 2.0]])
    out = smooth_centre(q)
    # A spike of 4 among 1s: a third of it reaches each neighbour; an end has one neighbour.
    np.testing.assert_allclose(out[:, 1], [1.0, 2.0, 2.0, 2.5])
    # P10 and P90 keep their distances from the P50: the calibrated width is untouched.
    np.testing.assert_allclose(out[:, 0] - out[:, 1], q[:, 0] - q[:, 1])
    np.testing.assert_allclose(out[:, 2] - out[:, 1], q[:, 2] - q[:, 1])
    flat = np.tile([0.8, 1.0, 1.3], (5, 1))
    np.testing.assert_allclose(smooth_centre(flat), flat)
    one = q[:1]
    np.testing.assert_array_equal(smooth_centre(one), one)


@given(
    st.lists(
        st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)).map(sorted),
        min_size=0,
        max_size=50,
    )
)
def test_smooth_centre_stays_inside_each_window_and_keeps_widths(rows: list[list[float]]) -> None:
    q = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    out = smooth_centre(q)
    assert out.shape == q.shape
    np.testing.assert_allclose(out[:, 2] - out[:, 1], q[:, 2] - q[:, 1], atol=1e-9)
    np.testing.assert_allclose(out[:, 1] - out[:, 0], q[:, 1] - q[:, 0], atol=1e-9)
    for i in range(len(q)):
        window = q[max(0, i - 1) : i + 2, 1]
        assert window.min() - 1e-9 <= out[i, 1] <= window.max() + 1e-9


def test_demand_p50_is_the_models_smoothed(model: ForecastModel) -> None:
    history, weather = sim_community()
    past = history.before(T0)
    t = T0 + np.arange(192, dtype=np.int64) * STEP_MS
    sw = to_steps(weather, t, STEP_MS, LAT, LON)
    inputs = model_inputs("demand", past, sw, SITE, T0, 192)
    assert not isinstance(inputs, str)
    raw = model.predict("demand", inputs.x)
    demand = make_forecast(model, history, weather, SITE, T0).targets["demand"]
    expected = np.clip(smooth_centre(raw), 0.0, None) * inputs.scale_w
    np.testing.assert_allclose(demand.p50, expected[:, 1], rtol=1e-9)
    np.testing.assert_allclose(demand.p90, expected[:, 2], rtol=1e-9)
    assert np.abs(demand.p50 - raw[:, 1] * inputs.scale_w).max() > 1.0  # watts
    # PV is not smoothed: its trajectory is the model's own.
    pv_inputs = model_inputs("pv", past, sw, SITE, T0, 192)
    assert not isinstance(pv_inputs, str)
    pv_raw = np.clip(model.predict("pv", pv_inputs.x), 0.0, None) * pv_inputs.scale_w
    pv = make_forecast(model, history, weather, SITE, T0).targets["pv"]
    np.testing.assert_allclose(pv.p50, pv_raw[:, 1], rtol=1e-9)


def test_demand_scales_with_the_community(model: ForecastModel) -> None:
    history, weather = sim_community()
    bigger = History(history.start_ms, history.demand_w * 10, history.pv_w, history.wind_w)
    a = make_forecast(model, history, weather, SITE, T0).targets["demand"].p50
    b = make_forecast(model, bigger, weather, SITE, T0).targets["demand"].p50
    np.testing.assert_allclose(b, 10 * a, rtol=1e-4)


def test_pv_scales_with_configured_capacity(model: ForecastModel) -> None:
    history, weather = sim_community()
    one = make_forecast(model, history, weather, Site(LAT, LON, pv_capacity_w=40_000), T0)
    two = make_forecast(model, history, weather, Site(LAT, LON, pv_capacity_w=80_000), T0)
    assert two.targets["pv"].p50.sum() > 1.3 * one.targets["pv"].p50.sum()


def test_brighter_weather_means_more_pv(model: ForecastModel) -> None:
    history, weather = sim_community()
    dull = WeatherSeries(
        weather.ts_ms,
        weather.shortwave_radiation_w_m2 * 0.3,
        weather.temperature_c,
        weather.wind_speed_m_s,
        weather.cloud_cover_pct,
    )
    sunny = make_forecast(model, history, weather, SITE, T0).targets["pv"].p50.sum()
    cloudy = make_forecast(model, history, dull, SITE, T0).targets["pv"].p50.sum()
    assert cloudy < 0.8 * sunny


def test_without_weather_pv_and_wind_fall_back_and_say_why(model: ForecastModel) -> None:
    history, _ = sim_community()
    result = make_forecast(model, history, WeatherSeries.empty(), SITE, T0)
    assert result.targets["demand"].method == "model"
    for target in ("pv", "wind"):
        t = result.targets[target]
        assert t.method == "fallback"
        assert "forecast" in t.note
        assert np.isfinite(t.p50).all() and (t.p10 <= t.p90).all()
    # The PV fallback is yesterday's shape: dark at night.
    assert result.targets["pv"].p50[:8].max() == pytest.approx(0, abs=1)


def test_weather_that_ends_early_gives_a_mixed_forecast(model: ForecastModel) -> None:
    history, weather = sim_community()
    short = weather.between(0, T0 + 12 * 3_600_000)
    pv = make_forecast(model, history, short, SITE, T0).targets["pv"]
    assert pv.method == "mixed"
    assert "2026-07-01T11:00Z" in pv.note  # the last hour stamped 11:00 ends then


def test_short_history_falls_back_without_crashing(model: ForecastModel) -> None:
    history, weather = sim_community()
    six_hours = history.before(T0, days=28)
    six_hours = History(
        T0 - 6 * 3_600_000,
        six_hours.demand_w[-24:],
        six_hours.pv_w[-24:],
        six_hours.wind_w[-24:],
    )
    result = make_forecast(model, six_hours, weather, SITE, T0)
    assert result.targets["demand"].method == "fallback"
    assert "under a day" in result.targets["demand"].note
    assert result.targets["pv"].method == "fallback"  # capacity unknown
    configured = Site(LAT, LON, pv_capacity_w=48_000, wind_capacity_w=15_000)
    result = make_forecast(model, six_hours, weather, configured, T0)
    assert result.targets["pv"].method == "model"
    assert result.targets["wind"].method == "model"


def test_nothing_at_all_is_still_a_forecast(model: ForecastModel) -> None:
    result = make_forecast(model, History.empty(T0), WeatherSeries.empty(), SITE, T0)
    assert result.targets["demand"].method == "fallback"
    assert result.targets["pv"].method == "absent"
    assert result.targets["wind"].method == "absent"
    assert not result.targets["demand"].p50.any()
    obj = result.to_json_obj()
    assert obj["methods"] == {"demand": "fallback", "pv": "absent", "wind": "absent"}


def test_no_model_falls_back_everywhere() -> None:
    history, weather = sim_community()
    result = make_forecast(None, history, weather, SITE, T0)
    assert {t.method for t in result.targets.values()} == {"fallback"}
    assert result.model == "none"


def test_a_file_that_is_not_a_forecast_model_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        load_model(bad)


def test_future_history_is_never_used(model: ForecastModel) -> None:
    history, weather = sim_community()
    cut = (T0 - history.start_ms) // STEP_MS
    future = History(
        history.start_ms,
        np.concatenate([history.demand_w[:cut], np.full(history.demand_w.size - cut, 1e7)]),
        history.pv_w,
        history.wind_w,
    )
    a = make_forecast(model, history, weather, SITE, T0).to_json_obj()
    b = make_forecast(model, future, weather, SITE, T0).to_json_obj()
    assert a == b
    assert history.end_ms > T0 + DAY_MS  # the sim history does reach past the issue
