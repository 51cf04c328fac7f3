"""Open-Meteo weather files: JSON and CSV, units, time zones, and refusal of bad input."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.forecast.weather import (
    WeatherError,
    WeatherSeries,
    load_weather_file,
    parse_open_meteo_csv,
    parse_open_meteo_json,
)
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

FIXTURES = Path(__file__).parent / "fixtures" / "forecast"
T0 = JULY_1_2026_MIDNIGHT_UTC_MS


def _response(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "latitude": 52.52,
        "longitude": 13.419998,
        "generationtime_ms": 0.05,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 38.0,
        "hourly_units": {
            "time": "iso8601",
            "shortwave_radiation": "W/m²",
            "temperature_2m": "°C",
            "wind_speed_10m": "km/h",
            "cloud_cover": "%",
        },
        "hourly": {
            "time": ["2026-07-01T00:00", "2026-07-01T01:00", "2026-07-01T02:00"],
            "shortwave_radiation": [0.0, 12.5, None],
            "temperature_2m": [14.1, 13.8, 13.5],
            "wind_speed_10m": [18.0, 36.0, 7.2],
            "cloud_cover": [100, 50, 0],
        },
    }
    obj.update(changes)
    return obj


def test_the_shipped_example_files_parse_alike() -> None:
    a = load_weather_file(FIXTURES / "open-meteo.json")
    b = load_weather_file(FIXTURES / "open-meteo.csv")
    np.testing.assert_array_equal(a.ts_ms, b.ts_ms)
    np.testing.assert_allclose(a.wind_speed_m_s, b.wind_speed_m_s)
    np.testing.assert_allclose(a.shortwave_radiation_w_m2, b.shortwave_radiation_w_m2)
    assert a.latitude == pytest.approx(52.52)


def test_json_values_units_and_nulls() -> None:
    w = parse_open_meteo_json(json.dumps(_response()))
    assert list(w.ts_ms) == [T0, T0 + 3_600_000, T0 + 7_200_000]
    np.testing.assert_allclose(w.wind_speed_m_s, [5.0, 10.0, 2.0])  # km/h -> m/s
    assert math.isnan(w.shortwave_radiation_w_m2[2])
    assert w.cloud_cover_pct[1] == 50
    assert (w.latitude, w.longitude) == (52.52, 13.419998)


def test_json_local_times_use_the_utc_offset() -> None:
    w = parse_open_meteo_json(json.dumps(_response(utc_offset_seconds=7200)))
    assert w.ts_ms[0] == T0 - 7_200_000


def test_json_unix_times_and_other_units() -> None:
    obj = _response()
    obj["hourly"]["time"] = [T0 // 1000, T0 // 1000 + 3600, T0 // 1000 + 7200]
    obj["hourly_units"]["wind_speed_10m"] = "m/s"
    obj["hourly_units"]["temperature_2m"] = "°F"
    obj["hourly"]["temperature_2m"] = [32, 104, 50]
    w = parse_open_meteo_json(json.dumps(obj))
    assert w.ts_ms[0] == T0
    np.testing.assert_allclose(w.wind_speed_m_s, [18.0, 36.0, 7.2])
    np.testing.assert_allclose(w.temperature_c, [0.0, 40.0, 10.0])


def test_a_missing_variable_is_all_missing() -> None:
    obj = _response()
    del obj["hourly"]["cloud_cover"]
    assert np.isnan(parse_open_meteo_json(json.dumps(obj)).cloud_cover_pct).all()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda o: o.pop("hourly"), "no 'hourly'"),
        (lambda o: o["hourly"].update(time="x"), "'hourly.time'"),
        (lambda o: o["hourly"]["time"].__setitem__(1, "yesterday"), "not ISO 8601"),
        (lambda o: o["hourly"]["time"].reverse(), "strictly increasing"),
        (lambda o: o["hourly"]["wind_speed_10m"].pop(), "as long as"),
        (lambda o: o["hourly"]["cloud_cover"].__setitem__(0, 140), "outside 0..100"),
        (lambda o: o["hourly"]["temperature_2m"].__setitem__(0, "warm"), "not a number"),
        (lambda o: o["hourly"]["temperature_2m"].__setitem__(0, True), "not a number"),
        (lambda o: o["hourly_units"].update(wind_speed_10m="furlongs"), "unit"),
        (lambda o: o.update(hourly={"time": []}), "no hourly rows"),
        (lambda o: o.update(utc_offset_seconds="2h"), "utc_offset_seconds"),
    ],
)
def test_json_mistakes_are_one_clear_error(change: Any, needle: str) -> None:
    obj = _response()
    change(obj)
    with pytest.raises(WeatherError, match=needle):
        parse_open_meteo_json(json.dumps(obj))


def test_plain_csv_with_bare_names_and_offsets() -> None:
    text = (
        "time,shortwave_radiation,wind_speed_10m,temperature_2m\n"
        "2026-07-01T02:00+02:00,0,36,12\n"
        "2026-07-01T01:00Z,,18,\n"
    )
    w = parse_open_meteo_csv(text)
    assert list(w.ts_ms) == [T0, T0 + 3_600_000]
    np.testing.assert_allclose(w.wind_speed_m_s, [10.0, 5.0])  # km/h, Open-Meteo's default
    assert math.isnan(w.temperature_c[1])
    assert np.isnan(w.cloud_cover_pct).all()


def test_csv_without_a_time_header_is_refused() -> None:
    with pytest.raises(WeatherError, match="no header row"):
        parse_open_meteo_csv("a,b\n1,2\n")


_values = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=60),
)


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(min_value=946_684_800, max_value=4_000_000_000),
    rows=st.lists(st.tuples(_values, _values, _values, _values), min_size=1, max_size=30),
)
def test_generated_json_and_csv_agree(start: int, rows: list[tuple[float | None, ...]]) -> None:
    names = ("shortwave_radiation", "temperature_2m", "wind_speed_10m", "cloud_cover")
    times = [start + 3600 * i for i in range(len(rows))]
    obj = {
        "utc_offset_seconds": 0,
        "hourly_units": {"wind_speed_10m": "m/s", "time": "unixtime"},
        "hourly": {"time": times, **{n: [r[i] for r in rows] for i, n in enumerate(names)}},
    }
    csv_text = (
        "time,shortwave_radiation (W/m²),temperature_2m (°C),wind_speed_10m (m/s),cloud_cover (%)\n"
    )
    csv_text += "".join(
        f"{t}," + ",".join("" if v is None else repr(v) for v in r) + "\n"
        for t, r in zip(times, rows, strict=True)
    )
    if all(v is None for r in rows for v in r):
        for parse, data in (
            (parse_open_meteo_json, json.dumps(obj)),
            (parse_open_meteo_csv, csv_text),
        ):
            with pytest.raises(WeatherError):
                parse(data)
        return
    a = parse_open_meteo_json(json.dumps(obj))
    b = parse_open_meteo_csv(csv_text)
    for x, y in ((a, b),):
        np.testing.assert_array_equal(x.ts_ms, y.ts_ms)
        for field in (
            "shortwave_radiation_w_m2",
            "temperature_c",
            "wind_speed_m_s",
            "cloud_cover_pct",
        ):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    assert isinstance(a, WeatherSeries)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_csv_text_fails_only_with_weather_error(text: str) -> None:
    with contextlib.suppress(WeatherError):
        parse_open_meteo_csv(text)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_fails_only_with_weather_error(obj: object) -> None:
    if isinstance(obj, dict) and obj:
        obj = {"hourly": obj, **{k: v for k, v in obj.items() if k != "hourly"}}
    try:
        data = json.dumps(obj)
    except ValueError:
        return
    with contextlib.suppress(WeatherError):
        parse_open_meteo_json(data)
