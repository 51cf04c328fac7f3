"""Solar geometry for the forecast, vectorised over numpy arrays of UTC epoch milliseconds.

The same formulas as the simulator's (NOAA's "General Solar Position Calculations": Spencer's
Fourier series for the equation of time and declination; Haurwitz's clear-sky irradiance), but
over whole arrays at once, since a 48-hour forecast evaluates 192 steps and training millions.
The hub may not import ``sim``, hence the second copy; ``tests/test_forecast_features.py`` checks
that both agree.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000


def _day_of_year(ts_ms: IntArray) -> tuple[FloatArray, FloatArray]:
    """(0-based day of year, days in that year) of each UTC timestamp."""
    days = (ts_ms // _MS_PER_DAY).astype("datetime64[D]")
    years = days.astype("datetime64[Y]")
    doy = (days - years).astype(np.float64)
    next_years = years + np.timedelta64(1, "Y")
    length = (next_years.astype("datetime64[D]") - years.astype("datetime64[D]")).astype(np.float64)
    return doy, length


def solar_elevation_deg(ts_ms: IntArray, lat_deg: float, lon_deg: float) -> FloatArray:
    """Sun elevation above the horizon in degrees (negative at night), without refraction."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    doy, length = _day_of_year(ts_ms)
    hour_utc = (ts_ms % _MS_PER_DAY) / _MS_PER_HOUR
    gamma = 2.0 * np.pi / length * (doy + (hour_utc - 12.0) / 24.0)
    eqtime_min = 229.18 * (
        0.000075
        + 0.001868 * np.cos(gamma)
        - 0.032077 * np.sin(gamma)
        - 0.014615 * np.cos(2 * gamma)
        - 0.040849 * np.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * np.cos(gamma)
        + 0.070257 * np.sin(gamma)
        - 0.006758 * np.cos(2 * gamma)
        + 0.000907 * np.sin(2 * gamma)
        - 0.002697 * np.cos(3 * gamma)
        + 0.00148 * np.sin(3 * gamma)
    )
    true_solar_min = hour_utc * 60.0 + eqtime_min + 4.0 * lon_deg
    hour_angle = np.radians(true_solar_min / 4.0 - 180.0)
    lat = np.radians(lat_deg)
    sin_elev = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    result: FloatArray = np.degrees(np.arcsin(np.clip(sin_elev, -1.0, 1.0)))
    return result


def clear_sky_ghi_w_m2(elevation_deg: FloatArray) -> FloatArray:
    """Haurwitz clear-sky global horizontal irradiance (W/m²); 0 with the sun down."""
    cos_z = np.sin(np.radians(np.maximum(elevation_deg, 0.0)))
    safe = np.where(cos_z > 1e-6, cos_z, 1.0)
    ghi = 1098.0 * safe * np.exp(-0.059 / safe)
    result: FloatArray = np.where(cos_z > 1e-6, ghi, 0.0)
    return result


def clear_sky_ghi_at(ts_ms: IntArray, lat_deg: float, lon_deg: float) -> FloatArray:
    """Clear-sky GHI (W/m²) at each timestamp for the location."""
    return clear_sky_ghi_w_m2(solar_elevation_deg(ts_ms, lat_deg, lon_deg))


def mean_clear_sky_ghi(
    start_ms: IntArray, period_ms: int, lat_deg: float, lon_deg: float, samples: int = 12
) -> FloatArray:
    """Mean clear-sky GHI (W/m²) over ``[start, start + period)`` for each start, by sampling."""
    start_ms = np.asarray(start_ms, dtype=np.int64)
    offsets = (np.arange(samples, dtype=np.int64) * 2 + 1) * period_ms // (2 * samples)
    grid = start_ms[:, None] + offsets[None, :]
    values = clear_sky_ghi_at(grid.ravel(), lat_deg, lon_deg).reshape(grid.shape)
    result: FloatArray = values.mean(axis=1)
    return result


def local_solar_hour(ts_ms: IntArray, lon_deg: float) -> FloatArray:
    """Local mean solar time in hours (0 to 24): UTC + lon / 15."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    result: FloatArray = ((ts_ms / _MS_PER_HOUR) + lon_deg / 15.0) % 24.0
    return result


def local_day_of_week(ts_ms: IntArray, lon_deg: float) -> IntArray:
    """Day of the week in local mean solar time, Monday = 0 (1970-01-01 was a Thursday)."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    local_ms = ts_ms + np.int64(round(lon_deg / 15.0 * _MS_PER_HOUR))
    result: IntArray = ((local_ms // _MS_PER_DAY) + 3) % 7
    return result
