"""The simulated sky as an Open-Meteo forecast file, so the demo's hub can forecast offline.

The hub imports weather only from files (``coopwatt-hub weather import``; no network at run
time). The demo writes the simulator's own sky (:mod:`sim.profiles`: the clouds over the PV
panels, the wind at the turbines, the air temperature) in Open-Meteo's JSON response format and
imports it the same way, so the forecast's PV and wind see the weather the simulated homes will
have: a perfect weather forecast, which no real cooperative gets.

Hourly values, as Open-Meteo stamps them: ``shortwave_radiation`` is the mean over the hour
before its time stamp; temperature, wind and cloud cover are the values at the time stamp. The
wind is the simulator's hub-height speed brought down to 10 m (power law, exponent 1/7, from a
15 m mast), since Open-Meteo's ``wind_speed_10m`` is what the hub expects.
"""

from __future__ import annotations

import json
from typing import Final

from sim import profiles

HOUR_MS: Final = 3_600_000
SAMPLE_MS: Final = 300_000  # irradiance samples per hour: every 5 minutes
HUB_HEIGHT_M: Final = 15.0
TO_10_M: Final = (10.0 / HUB_HEIGHT_M) ** (1 / 7)


def sky_hour(seed: int, hour_ms: int, lat_deg: float, lon_deg: float) -> dict[str, float]:
    """One hour stamped ``hour_ms`` (UTC ms on the hour), in Open-Meteo's variable names."""
    samples = range(hour_ms - HOUR_MS + SAMPLE_MS // 2, hour_ms, SAMPLE_MS)
    ghi = [
        profiles.clear_sky_ghi_w_m2(profiles.solar_elevation_deg(t, lat_deg, lon_deg))
        * profiles.cloud_factor(seed, t)
        for t in samples
    ]
    # cloud_factor is 1 - 0.8 * cloudiness^1.4; cloud cover is that cloudiness as a percentage.
    cloudiness = ((1.0 - profiles.cloud_factor(seed, hour_ms)) / 0.8) ** (1 / 1.4)
    return {
        "shortwave_radiation": round(sum(ghi) / len(ghi), 1),
        "temperature_2m": round(profiles.ambient_temperature_c(seed, hour_ms, lon_deg), 1),
        "wind_speed_10m": round(profiles.wind_speed_m_s(seed, hour_ms) * TO_10_M, 2),
        "cloud_cover": round(min(max(cloudiness, 0.0), 1.0) * 100.0),
    }


def sky_forecast_json(seed: int, start_ms: int, end_ms: int, lat_deg: float, lon_deg: float) -> str:
    """An Open-Meteo hourly forecast response (JSON text) covering ``[start_ms, end_ms]``."""
    first = start_ms - start_ms % HOUR_MS
    hours = list(range(first, end_ms + HOUR_MS, HOUR_MS))
    rows = [sky_hour(seed, h, lat_deg, lon_deg) for h in hours]
    names = ("shortwave_radiation", "temperature_2m", "wind_speed_10m", "cloud_cover")
    return json.dumps(
        {
            "latitude": lat_deg,
            "longitude": lon_deg,
            "utc_offset_seconds": 0,
            "hourly_units": {
                "time": "unixtime",
                "shortwave_radiation": "W/m²",
                "temperature_2m": "°C",
                "wind_speed_10m": "m/s",
                "cloud_cover": "%",
            },
            "hourly": {
                "time": [h // 1000 for h in hours],
                **{name: [r[name] for r in rows] for name in names},
            },
        }
    )
