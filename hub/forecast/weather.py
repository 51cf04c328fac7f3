"""Open weather data for the forecast: Open-Meteo responses (JSON or CSV) parsed, checked, and
resampled onto the forecast's 15-minute steps. No network: files come from the operator.

Open-Meteo's hourly variables, by their names in its API:

- ``shortwave_radiation``: global horizontal irradiance, W/m², the mean over the PRECEDING hour
  (the value stamped 13:00 is the mean from 12:00 to 13:00);
- ``temperature_2m``: °C (°F accepted), instantaneous;
- ``wind_speed_10m``: km/h by default (m/s, mph and kn accepted when the file says so);
  instantaneous, stored as m/s;
- ``cloud_cover``: %, instantaneous; used for irradiance only when radiation is missing.

Times are ISO 8601 (``2026-07-01T13:00``, with or without a UTC offset) or Unix seconds. A time
without an offset is in the response's ``utc_offset_seconds`` (0, i.e. UTC, when absent). A file
missing a variable, or holding ``null``/empty cells, is fine: those values are missing (NaN).
Anything else wrong is a :class:`WeatherError` whose one-line message says where.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any, Final

import numpy as np

from hub.forecast.solar import FloatArray, IntArray, mean_clear_sky_ghi
from protocol.timeparse import parse_iso_ms

MS_PER_HOUR: Final = 3_600_000
MAX_ROWS: Final = 24 * 366 * 3  # three years of hours: far more than any forecast file
VARIABLES: Final = ("shortwave_radiation", "temperature_2m", "wind_speed_10m", "cloud_cover")

_WIND_TO_M_S: Final = {"km/h": 1 / 3.6, "m/s": 1.0, "mph": 0.44704, "kn": 0.514444, "kt": 0.514444}
_RANGES: Final = {
    "shortwave_radiation": (0.0, 1500.0),
    "temperature_2m": (-90.0, 70.0),
    "wind_speed_10m": (0.0, 120.0),  # m/s, after conversion
    "cloud_cover": (0.0, 100.0),
}
_HEADER_RE: Final = re.compile(r"^\s*([a-z0-9_]+)\s*(?:\((.*)\))?\s*$")


class WeatherError(ValueError):
    """A weather file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class WeatherSeries:
    """Hourly weather: UTC epoch ms, strictly increasing; NaN where a value is missing."""

    ts_ms: IntArray
    shortwave_radiation_w_m2: FloatArray
    temperature_c: FloatArray
    wind_speed_m_s: FloatArray
    cloud_cover_pct: FloatArray
    latitude: float | None = None
    longitude: float | None = None

    def __len__(self) -> int:
        return int(self.ts_ms.size)

    @classmethod
    def empty(cls) -> WeatherSeries:
        nothing = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), nothing, nothing, nothing, nothing)

    def between(self, start_ms: int, end_ms: int) -> WeatherSeries:
        """Rows with ``start_ms <= ts_ms < end_ms``."""
        keep = (self.ts_ms >= start_ms) & (self.ts_ms < end_ms)
        return WeatherSeries(
            self.ts_ms[keep],
            self.shortwave_radiation_w_m2[keep],
            self.temperature_c[keep],
            self.wind_speed_m_s[keep],
            self.cloud_cover_pct[keep],
            self.latitude,
            self.longitude,
        )


# -- parsing ---------------------------------------------------------------------------------


def _parse_time(value: object, offset_s: int, where: str) -> int:
    if isinstance(value, bool):
        raise WeatherError(f"{where}: time {value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise WeatherError(f"{where}: time {value!r} is not a time")
        ms = int(value) * 1000
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            ms = int(text) * 1000
        else:
            try:
                ms = parse_iso_ms(text, naive=timezone(timedelta(seconds=offset_s)))
            except ValueError:
                raise WeatherError(f"{where}: time {value!r} is not ISO 8601") from None
    else:
        raise WeatherError(f"{where}: time {value!r} is not a time")
    if not 946_684_800_000 <= ms < 4_102_444_800_000:
        raise WeatherError(f"{where}: time {value!r} is not between 2000 and 2100")
    return ms


def _number(value: object, name: str, where: str) -> float:
    if value is None or (isinstance(value, str) and value.strip() in ("", "null", "nan", "NaN")):
        return math.nan
    if isinstance(value, bool):
        raise WeatherError(f"{where}: {name} {value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise WeatherError(f"{where}: {name} {value!r} is not a number") from None
    else:
        raise WeatherError(f"{where}: {name} {value!r} is not a number")
    if not math.isfinite(number):
        raise WeatherError(f"{where}: {name} must be finite")
    return number


def _unit_factor(name: str, unit: str | None) -> tuple[float, float]:
    """(scale, offset) turning a value in ``unit`` into the stored unit."""
    u = (unit or "").strip().replace("²", "2").replace("°", "").lower()
    if name == "wind_speed_10m":
        u = u or "km/h"
        if u not in _WIND_TO_M_S:
            raise WeatherError(f"wind_speed_10m: unit {unit!r} is not km/h, m/s, mph or kn")
        return _WIND_TO_M_S[u], 0.0
    if name == "temperature_2m":
        if u in ("", "c"):
            return 1.0, 0.0
        if u == "f":
            return 5.0 / 9.0, -32.0 * 5.0 / 9.0
        raise WeatherError(f"temperature_2m: unit {unit!r} is not °C or °F")
    if name == "shortwave_radiation":
        if u not in ("", "w/m2", "wm-2"):
            raise WeatherError(f"shortwave_radiation: unit {unit!r} is not W/m²")
        return 1.0, 0.0
    if u not in ("", "%"):
        raise WeatherError(f"cloud_cover: unit {unit!r} is not %")
    return 1.0, 0.0


def _build(
    times: list[int],
    columns: dict[str, list[float]],
    latitude: float | None,
    longitude: float | None,
) -> WeatherSeries:
    if not times:
        raise WeatherError("the file holds no hourly rows")
    if len(times) > MAX_ROWS:
        raise WeatherError(f"the file holds {len(times)} rows; at most {MAX_ROWS} are accepted")
    ts = np.asarray(times, dtype=np.int64)
    bad = np.nonzero(np.diff(ts) <= 0)[0]
    if bad.size:
        raise WeatherError(f"row {int(bad[0]) + 2}: times must be strictly increasing")
    arrays: dict[str, FloatArray] = {}
    for name in VARIABLES:
        values = np.asarray(columns.get(name, [math.nan] * len(times)), dtype=np.float64)
        lo, hi = _RANGES[name]
        out = np.nonzero((values < lo - 1e-9) | (values > hi + 1e-9))[0]
        if out.size:
            raise WeatherError(
                f"row {int(out[0]) + 1}: {name} {values[out[0]]:g} is outside {lo:g}..{hi:g}"
            )
        arrays[name] = values
    if all(np.isnan(a).all() for a in arrays.values()):
        raise WeatherError(f"the file holds none of {', '.join(VARIABLES)}")
    return WeatherSeries(
        ts,
        arrays["shortwave_radiation"],
        arrays["temperature_2m"],
        arrays["wind_speed_10m"],
        arrays["cloud_cover"],
        latitude,
        longitude,
    )


def _optional_coord(value: object, lo: float, hi: float) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
        return float(value)
    return None


def parse_open_meteo_json(data: bytes | str) -> WeatherSeries:
    """Parse an Open-Meteo forecast API response (``hourly`` and ``hourly_units``)."""
    try:
        obj: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WeatherError(f"not JSON: {exc}") from None
    if isinstance(obj, list):
        if len(obj) != 1:
            raise WeatherError("the response holds several locations; import one at a time")
        obj = obj[0]
    if not isinstance(obj, dict):
        raise WeatherError("not an Open-Meteo response: expected a JSON object")
    hourly = obj.get("hourly")
    if not isinstance(hourly, dict):
        raise WeatherError("not an Open-Meteo response: no 'hourly' object")
    units = obj.get("hourly_units") or {}
    if not isinstance(units, dict):
        raise WeatherError("'hourly_units' is not an object")
    offset = obj.get("utc_offset_seconds", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 18 * 3600:
        raise WeatherError("'utc_offset_seconds' is not a whole number of seconds")
    raw_times = hourly.get("time")
    if not isinstance(raw_times, list):
        raise WeatherError("'hourly.time' is missing or not a list")
    if len(raw_times) > MAX_ROWS:
        raise WeatherError(f"the file holds {len(raw_times)} rows; at most {MAX_ROWS} are accepted")
    times = [_parse_time(t, offset, f"hourly.time[{i}]") for i, t in enumerate(raw_times)]
    columns: dict[str, list[float]] = {}
    for name in VARIABLES:
        values = hourly.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(times):
            raise WeatherError(f"'hourly.{name}' is not a list as long as 'hourly.time'")
        unit = units.get(name)
        scale, shift = _unit_factor(name, unit if isinstance(unit, str) else None)
        columns[name] = [
            _number(v, name, f"hourly.{name}[{i}]") * scale + shift for i, v in enumerate(values)
        ]
    return _build(
        times,
        columns,
        _optional_coord(obj.get("latitude"), -90, 90),
        _optional_coord(obj.get("longitude"), -180, 180),
    )


def parse_open_meteo_csv(text: str) -> WeatherSeries:
    """Parse a CSV with Open-Meteo's hourly names, as Open-Meteo's own CSV download or plain.

    Open-Meteo's download starts with a location block (``latitude,longitude,...`` and one row of
    values, then a blank line); its header names carry units in brackets
    (``wind_speed_10m (km/h)``). A plain file starts at its header:
    ``time,shortwave_radiation,...``.
    """
    try:
        rows = list(csv.reader(io.StringIO(text, newline=None)))
    except csv.Error as exc:
        raise WeatherError(f"not CSV: {exc}") from None
    offset = 0
    latitude = longitude = None
    header_at = None
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row]
        if cells and cells[0].lower().split(" ")[0] == "time":
            header_at = i
            break
        if cells and cells[0].lower() == "latitude" and i + 1 < len(rows):
            meta = dict(zip(cells, (c.strip() for c in rows[i + 1]), strict=False))
            try:
                offset = int(float(meta.get("utc_offset_seconds", "0") or 0))
                latitude = _optional_coord(float(meta.get("latitude", "nan")), -90, 90)
                longitude = _optional_coord(float(meta.get("longitude", "nan")), -180, 180)
            except ValueError:
                raise WeatherError(f"line {i + 2}: the location block is not numbers") from None
    if header_at is None:
        raise WeatherError("no header row starting with 'time'")
    header = rows[header_at]
    positions: dict[str, tuple[int, tuple[float, float]]] = {}
    for col, cell in enumerate(header[1:], start=1):
        match = _HEADER_RE.match(cell)
        if match is None or match.group(1) not in VARIABLES:
            continue  # other Open-Meteo variables are allowed and ignored
        name = match.group(1)
        if name in positions:
            raise WeatherError(f"column {name!r} appears twice")
        positions[name] = (col, _unit_factor(name, match.group(2)))
    times: list[int] = []
    columns: dict[str, list[float]] = {name: [] for name in positions}
    for line, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(times) >= MAX_ROWS:
            raise WeatherError(f"more than {MAX_ROWS} rows; at most {MAX_ROWS} are accepted")
        times.append(_parse_time(row[0], offset, f"line {line}"))
        for name, (col, (scale, shift)) in positions.items():
            cell = row[col] if col < len(row) else ""
            columns[name].append(_number(cell, name, f"line {line}") * scale + shift)
    return _build(times, columns, latitude, longitude)


def load_weather_file(path: str | Path) -> WeatherSeries:
    """Read an Open-Meteo JSON or CSV file, by its content (JSON starts with ``{`` or ``[``)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise WeatherError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WeatherError(f"{path} is not UTF-8 text") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            return parse_open_meteo_json(stripped)
        return parse_open_meteo_csv(text)
    except WeatherError as exc:
        raise WeatherError(f"{path}: {exc}") from None


# -- resampling onto forecast steps ---------------------------------------------------------


@dataclass(frozen=True)
class StepWeather:
    """Weather on forecast steps ``[start, start + step)``; NaN where the file does not reach."""

    ghi_w_m2: FloatArray
    temperature_c: FloatArray
    wind_speed_m_s: FloatArray
    cloud_cover_pct: FloatArray

    @property
    def has_ghi(self) -> bool:
        return bool(np.isfinite(self.ghi_w_m2).all())

    @property
    def has_wind(self) -> bool:
        return bool(np.isfinite(self.wind_speed_m_s).all())


def _instant(ts: IntArray, values: FloatArray, at: IntArray, reach_ms: int) -> FloatArray:
    ok = np.isfinite(values)
    out = np.full(at.shape, np.nan)
    if not ok.any():
        return out
    t, v = ts[ok], values[ok]
    out = np.interp(at.astype(np.float64), t.astype(np.float64), v)
    # Never invent weather far from any sample: NaN beyond ``reach_ms`` of the nearest one.
    idx = np.clip(np.searchsorted(t, at), 1, t.size) if t.size > 1 else np.ones_like(at)
    prev = t[np.clip(idx - 1, 0, t.size - 1)]
    nxt = t[np.clip(idx, 0, t.size - 1)]
    nearest = np.minimum(np.abs(at - prev), np.abs(nxt - at))
    result: FloatArray = np.where(nearest <= reach_ms, out, np.nan)
    return result


def to_steps(
    weather: WeatherSeries, step_start_ms: IntArray, step_ms: int, lat: float, lon: float
) -> StepWeather:
    """Resample hourly weather onto steps, using the cooperative's solar geometry.

    Irradiance: each hour's clearness (its mean over the preceding hour divided by the mean
    clear-sky irradiance of that hour) times the clear-sky irradiance of the step, so the sun's
    rise and set fall inside the hour where they belong. Where radiation is missing but cloud
    cover is known, Kasten & Czeplak (1980): GHI = clear-sky × (1 − 0.75 (cover)^3.4).
    Temperature, wind and cloud cover are linear between samples, missing more than 90 minutes
    from the nearest one.
    """
    steps = np.asarray(step_start_ms, dtype=np.int64)
    mid = steps + step_ms // 2
    cs_step = mean_clear_sky_ghi(steps, step_ms, lat, lon, samples=3)
    temperature = _instant(weather.ts_ms, weather.temperature_c, mid, 90 * 60_000)
    wind = _instant(weather.ts_ms, weather.wind_speed_m_s, mid, 90 * 60_000)
    cloud = _instant(weather.ts_ms, weather.cloud_cover_pct, mid, 90 * 60_000)
    ghi = np.full(steps.shape, np.nan)
    ts = weather.ts_ms
    if ts.size:
        # The hourly value stamped T covers [T - 1 h, T): the step belongs to the first T > start.
        idx = np.searchsorted(ts, steps, side="right")
        inside = idx < ts.size
        safe = np.where(inside, idx, 0)
        covering = inside & (ts[safe] - steps <= MS_PER_HOUR) & (ts[safe] - steps >= step_ms)
        hour_ghi = weather.shortwave_radiation_w_m2[safe]
        cs_hour = mean_clear_sky_ghi(ts[safe] - MS_PER_HOUR, MS_PER_HOUR, lat, lon, samples=12)
        kt = np.where(cs_hour > 1.0, hour_ghi / np.maximum(cs_hour, 1.0), 0.0)
        shaped = np.where(cs_hour > 1.0, np.clip(kt, 0.0, 1.5) * cs_step, 0.0)
        ghi = np.where(covering & np.isfinite(hour_ghi), shaped, np.nan)
    from_cloud = cs_step * (1.0 - 0.75 * np.power(np.clip(cloud, 0.0, 100.0) / 100.0, 3.4))
    ghi = np.where(np.isnan(ghi) & np.isfinite(cloud), from_cloud, ghi)
    return StepWeather(ghi, temperature, wind, cloud)
