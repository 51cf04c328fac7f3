"""Deterministic household, solar and wind profiles: pure functions of (seed, time).

Every function here is a pure function of its arguments: the same ``(seed, ts_ms)`` always gives
the same value, with no state, so a simulated home can be evaluated at any time in any order and
two processes agree on what a home did. Randomness comes from a 64-bit integer hash (SplitMix64's
finaliser) of ``(seed, stream, index)``; slowly varying quantities interpolate hashed values at
knots ("value noise"), so they are smooth in time and still stateless.

Units are in the names: ``ts_ms`` is UTC epoch milliseconds, powers are W, speeds m/s, angles
degrees, temperatures °C. Powers are quantised to whole watts (``int``) so every register a
simulated device shows can represent them exactly.
"""

from __future__ import annotations

import calendar
import math
import time
from functools import lru_cache
from typing import Final, NamedTuple

_MASK64: Final = (1 << 64) - 1
_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000

# Independent noise streams, so that e.g. cloud and wind noise never correlate.
_S_BASE: Final = 1
_S_BASE_NOISE: Final = 2
_S_STEP_NOISE: Final = 3
_S_DAY: Final = 4
_S_CLOUD_DAY: Final = 10
_S_CLOUD_HOURS: Final = 11
_S_CLOUD_FAST: Final = 12
_S_WIND_PHASE: Final = 20
_S_WIND_SLOW: Final = 21
_S_WIND_FAST: Final = 22
_S_TEMP: Final = 30
_S_VOLT_HOME: Final = 40
_S_VOLT_SLOW: Final = 41
_S_FREQ: Final = 50
_S_PF: Final = 51

PERFORMANCE_RATIO: Final = 0.8
"""PV system performance ratio: AC energy out / (nameplate × irradiance / 1000 W/m²)."""

WIND_CUT_IN_M_S: Final = 3.0
WIND_RATED_M_S: Final = 11.0
WIND_CUT_OUT_M_S: Final = 25.0


# --- hashing and value noise ------------------------------------------------------------------


def _mix64(x: int) -> int:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a fast, well-mixing 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def unit_hash(seed: int, stream: int, index: int) -> float:
    """A uniform number in [0, 1) determined by ``(seed, stream, index)``, without state."""
    h = _mix64((seed & _MASK64) ^ _mix64((stream << 40) ^ _mix64(index & _MASK64)))
    return (h >> 11) * (1.0 / (1 << 53))


def _smooth_noise(seed: int, stream: int, t_s: float, period_s: float) -> float:
    """Value noise in [0, 1]: hashed knots every ``period_s`` seconds, smoothstep between them."""
    x = t_s / period_s
    k = math.floor(x)
    f = x - k
    a = unit_hash(seed, stream, k)
    b = unit_hash(seed, stream, k + 1)
    return a + (b - a) * (f * f * (3.0 - 2.0 * f))


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


# --- solar geometry and PV ------------------------------------------------------------------


def solar_elevation_deg(ts_ms: int, lat_deg: float, lon_deg: float) -> float:
    """Sun's elevation above the horizon (degrees, negative at night), without refraction.

    Uses NOAA's "General Solar Position Calculations" (NOAA Global Monitoring Division), i.e.
    Spencer's (1971) Fourier series for the equation of time and the solar declination from the
    fractional year, then the hour angle from true solar time. Accurate to a few tenths of a
    degree, which is ample for a power profile.
    """
    tm = time.gmtime(ts_ms // 1000)
    days_in_year = 366 if calendar.isleap(tm.tm_year) else 365
    hour_utc = (ts_ms % _MS_PER_DAY) / _MS_PER_HOUR
    gamma = 2.0 * math.pi / days_in_year * (tm.tm_yday - 1 + (hour_utc - 12.0) / 24.0)
    eqtime_min = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl_rad = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_min = hour_utc * 60.0 + eqtime_min + 4.0 * lon_deg
    hour_angle_rad = math.radians(true_solar_min / 4.0 - 180.0)
    lat_rad = math.radians(lat_deg)
    sin_elev = math.sin(lat_rad) * math.sin(decl_rad) + math.cos(lat_rad) * math.cos(
        decl_rad
    ) * math.cos(hour_angle_rad)
    return math.degrees(math.asin(_clamp(sin_elev, -1.0, 1.0)))


def clear_sky_ghi_w_m2(elevation_deg: float) -> float:
    """Clear-sky global horizontal irradiance (W/m²) by Haurwitz's model (1945).

    GHI = 1098 · cos z · exp(−0.059 / cos z), z the solar zenith angle; 0 with the sun down.
    """
    if elevation_deg <= 0.0:
        return 0.0
    cos_z = math.sin(math.radians(elevation_deg))
    return 1098.0 * cos_z * math.exp(-0.059 / cos_z)


def cloud_factor(seed: int, ts_ms: int) -> float:
    """Fraction of clear-sky irradiance that gets through the clouds, 0.2 to 1.

    A day-scale overcast level, an hours-scale component and a 20-minute component of value noise,
    so weather changes slowly and a sunny spell can be interrupted by passing clouds. Averages
    about 0.7, roughly the ratio of measured to clear-sky irradiance in north-western Europe.
    """
    t_s = ts_ms / 1000.0
    cloudiness = (
        0.5 * _smooth_noise(seed, _S_CLOUD_DAY, t_s, 86_400.0)
        + 0.35 * _smooth_noise(seed, _S_CLOUD_HOURS, t_s, 3 * 3600.0)
        + 0.15 * _smooth_noise(seed, _S_CLOUD_FAST, t_s, 20 * 60.0)
    )
    return 1.0 - 0.8 * math.pow(cloudiness, 1.4)


def pv_power_w(seed: int, ts_ms: int, lat_deg: float, lon_deg: float, capacity_w: float) -> int:
    """AC output (W, whole watts) of a PV system of nameplate ``capacity_w`` (W).

    Clear-sky GHI (Haurwitz) × capacity / 1000 W/m² × performance ratio 0.8 × the seeded cloud
    factor, capped at the nameplate. The array is treated as horizontal, which keeps the model
    simple and slightly undersells winter. Zero at night.
    """
    ghi = clear_sky_ghi_w_m2(solar_elevation_deg(ts_ms, lat_deg, lon_deg))
    if ghi <= 0.0:
        return 0
    p = capacity_w * ghi / 1000.0 * PERFORMANCE_RATIO * cloud_factor(seed, ts_ms)
    return round(min(p, capacity_w))


# --- wind -------------------------------------------------------------------------------------

# (period s, amplitude of log-speed) for the slow weather components.
_WIND_WAVES: Final = (
    (4.3 * 86_400.0, 0.5),
    (31 * 3600.0, 0.3),
    (7.7 * 3600.0, 0.15),
    (2.1 * 3600.0, 0.08),
)
# exp of sums of sinusoids and uniform noise is not mean 1; divide by its mean so the speed
# averages WIND_MEAN_M_S (product of I0(a) for the waves and sinh-terms for the noise).
_WIND_LOG_NORM: Final = 0.1039
WIND_MEAN_M_S: Final = 5.0


def wind_speed_m_s(seed: int, ts_ms: int) -> float:
    """Hub-height wind speed (m/s), slowly varying, non-negative, mean about 5 m/s.

    Log-speed is a sum of seeded-phase sinusoids (periods of days down to hours) plus value noise
    at 30-minute and 5-minute scales; exponentiating gives the right-skewed distribution real
    wind has (a calm 1 m/s to gusty spells near 18 m/s).
    """
    t_s = ts_ms / 1000.0
    s = 0.0
    for i, (period_s, amp) in enumerate(_WIND_WAVES):
        phase = 2.0 * math.pi * unit_hash(seed, _S_WIND_PHASE, i)
        s += amp * math.sin(2.0 * math.pi * t_s / period_s + phase)
    s += 0.5 * (_smooth_noise(seed, _S_WIND_SLOW, t_s, 1800.0) - 0.5)
    s += 0.2 * (_smooth_noise(seed, _S_WIND_FAST, t_s, 300.0) - 0.5)
    return WIND_MEAN_M_S * math.exp(s - _WIND_LOG_NORM)


def wind_power_w(wind_speed_m_s: float, rated_w: float) -> int:
    """Small-turbine power curve (W, whole watts) at ``wind_speed_m_s``.

    Zero below the 3 m/s cut-in; rises with the cube of the speed, P = rated · (v³ − 3³) /
    (11³ − 3³), to the rated power at 11 m/s; flat to the 25 m/s cut-out; zero above (the turbine
    brakes in a storm).
    """
    v = wind_speed_m_s
    if v < WIND_CUT_IN_M_S or v > WIND_CUT_OUT_M_S:
        return 0
    if v >= WIND_RATED_M_S:
        return round(rated_w)
    frac = (v**3 - WIND_CUT_IN_M_S**3) / (WIND_RATED_M_S**3 - WIND_CUT_IN_M_S**3)
    return round(rated_w * frac)


def rotor_rpm(wind_speed_m_s: float, running: bool) -> int:
    """Rotor speed (rpm) of a ~3 m rotor at tip-speed ratio 6, capped at 450 rpm; 0 when stopped."""
    if not running:
        return 0
    return min(450, round(wind_speed_m_s * 6.0 / (math.pi * 3.0) * 60.0))


# --- household demand -------------------------------------------------------------------------


class _Event(NamedTuple):
    start_h: float  # local solar hour the segment starts
    end_h: float
    power_w: float


class _DayPlan(NamedTuple):
    scale: float  # multiplies everything above the base load
    day_extra_w: float  # occupancy during the day
    morning_w: float  # height of the morning peak
    evening_w: float  # height of the evening peak
    events: tuple[_Event, ...]


_KETTLE_WINDOWS: Final = ((6.6, 8.3), (10.0, 11.5), (12.5, 13.5), (15.5, 17.0), (18.0, 21.5))


@lru_cache(maxsize=512)
def _day_plan(seed: int, day: int) -> _DayPlan:
    """The seeded plan of one local day: peak heights and appliance events."""
    k = 0

    def u() -> float:
        nonlocal k
        k += 1
        return unit_hash(seed, _S_DAY, day * 64 + k)

    scale = 0.85 + 0.25 * u()
    day_extra_w = 30.0 + 120.0 * u()
    morning_w = 300.0 + 600.0 * u()
    evening_w = 1200.0 + 1200.0 * u()
    events: list[_Event] = []
    for lo, hi in _KETTLE_WINDOWS:
        present, at, power = u(), u(), u()
        if present < 0.6:
            start = lo + (hi - lo) * at
            events.append(_Event(start, start + 0.05, 2000.0 + 800.0 * power))
    present, at = u(), u()
    if present < 0.4:  # washing machine: heat, wash, spin
        start = 8.0 + 11.0 * at
        events += [
            _Event(start, start + 0.25, 2000.0),
            _Event(start + 0.25, start + 1.25, 250.0),
            _Event(start + 1.25, start + 1.4, 500.0),
        ]
    present, at = u(), u()
    if present < 0.5:  # dishwasher: heat, wash, dry
        start = 19.5 + 2.5 * at
        events += [
            _Event(start, start + 0.3, 1900.0),
            _Event(start + 0.3, start + 1.2, 100.0),
            _Event(start + 1.2, start + 1.35, 1500.0),
        ]
    return _DayPlan(scale, day_extra_w, morning_w, evening_w, tuple(events))


def base_load_w(seed: int) -> float:
    """The home's always-on load (W): fridge, standby, router; 150 to 350 W by seed."""
    return 150.0 + 200.0 * unit_hash(seed, _S_BASE, 0)


def _bump(h: float, centre_h: float, half_width_h: float) -> float:
    """A peak of height 1 at ``centre_h`` falling to 0 at ± ``half_width_h`` (raised cosine³)."""
    d = (h - centre_h) / half_width_h
    if d <= -1.0 or d >= 1.0:
        return 0.0
    c = 0.5 * (1.0 + math.cos(math.pi * d))
    return c * c * c


def local_solar_hour(ts_ms: int, lon_deg: float) -> float:
    """Local mean solar time (hours, 0 to 24) at longitude ``lon_deg``: UTC + lon / 15."""
    return ((ts_ms / _MS_PER_HOUR) + lon_deg / 15.0) % 24.0


def household_demand_w(seed: int, ts_ms: int, lon_deg: float) -> int:
    """A household's electricity demand (W, whole watts) at ``ts_ms``.

    In local mean solar time: a base load (150–350 W by seed) with slow wander; a daytime
    occupancy load from 08:30 to 17:30; a morning peak around 06:30–08:30 and an evening peak
    around 17:30–21:30 reaching 1.5–3 kW; kettles, a washing machine and a dishwasher placed from
    the seed per day; ±5 % per-minute noise. Averages roughly 8–12 kWh a day.
    """
    t_s = ts_ms / 1000.0
    local_ms = ts_ms + round(lon_deg / 15.0 * _MS_PER_HOUR)
    day = local_ms // _MS_PER_DAY
    h = (local_ms % _MS_PER_DAY) / _MS_PER_HOUR
    plan = _day_plan(seed, day)
    base = base_load_w(seed) * (0.9 + 0.2 * _smooth_noise(seed, _S_BASE_NOISE, t_s, 1800.0))
    extra = plan.day_extra_w * (1.0 if 8.5 <= h < 17.5 else 0.0)
    extra += plan.morning_w * _bump(h, 7.5, 1.0)
    extra += plan.evening_w * _bump(h, 19.5, 2.0)
    for ev in plan.events:
        if ev.start_h <= h < ev.end_h:
            extra += ev.power_w
    noise = 0.95 + 0.1 * unit_hash(seed, _S_STEP_NOISE, ts_ms // 60_000)
    return round((base + plan.scale * extra) * noise)


# --- ambient conditions -----------------------------------------------------------------------


def ambient_temperature_c(seed: int, ts_ms: int, lon_deg: float) -> float:
    """Outdoor air temperature (°C) in a temperate climate: season, day/night swing, weather.

    About 3 °C in mid-January to 17 °C in mid-July, ±4 °C warmest at 15:00 local solar time, and
    ±2 °C of slow weather noise.
    """
    doy = time.gmtime(ts_ms // 1000).tm_yday
    season = 10.0 - 7.0 * math.cos(2.0 * math.pi * (doy - 15) / 365.0)
    h = local_solar_hour(ts_ms, lon_deg)
    diurnal = 4.0 * math.cos(2.0 * math.pi * (h - 15.0) / 24.0)
    weather = 4.0 * (_smooth_noise(seed, _S_TEMP, ts_ms / 1000.0, 6 * 3600.0) - 0.5)
    return season + diurnal + weather


def grid_voltage_v(seed: int, ts_ms: int) -> float:
    """RMS phase voltage (V) at the home: 230 V ± a per-home offset (±3 V) and slow wander."""
    offset = 6.0 * (unit_hash(seed, _S_VOLT_HOME, 0) - 0.5)
    wander = 3.0 * (_smooth_noise(seed, _S_VOLT_SLOW, ts_ms / 1000.0, 900.0) - 0.5)
    return 230.0 + offset + wander


def grid_frequency_hz(ts_ms: int) -> float:
    """Grid frequency (Hz), the same for every home: 50 Hz ± 0.05 Hz, varying over ~minutes."""
    return 50.0 + 0.1 * (_smooth_noise(0, _S_FREQ, ts_ms / 1000.0, 120.0) - 0.5)


def load_power_factor(seed: int, ts_ms: int) -> float:
    """Power factor of a household's net load, 0.90 to 0.99, varying over ~15 minutes."""
    return 0.90 + 0.09 * _smooth_noise(seed, _S_PF, ts_ms / 1000.0, 900.0)
