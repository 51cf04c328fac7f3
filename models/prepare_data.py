"""Extract the shipped training data (``models/data/``) from the packages that publish it.

Run once by a maintainer; the hub and the training command then use the small files in
``models/data/`` and never download anything. Reproduce with::

    pip download --no-deps -d /tmp/wheels vpplib==0.0.6 pvanalytics==0.2.2
    python -m models.prepare_data --vpplib /tmp/wheels/vpplib-0.0.6-py3-none-any.whl \\
        --pvanalytics /tmp/wheels/pvanalytics-0.2.2-py3-none-any.whl

Sources (see ``models/MODEL_CARD.md`` for licences):

- demand: HTW Berlin's 74 measured single-family-house load profiles (one year, 2010), as
  15-minute means in vpplib's ``input/baseload/df_S_15min.csv``. vpplib relabels the year as
  2017; the weekly pattern (Saturday/Sunday middays are the highest) and the Christmas peak show
  that the days are 2010's, so dates are mapped back to 2010. Times are CET (UTC+1, no DST).
  Shipped: the sum over all 74 homes and over two halves of 37, in whole watts.
- PV: NREL PVDAQ system 50 (Golden, Colorado; 39.7406 N, 105.1775 W), 15-minute AC power
  from April 2011 to December 2013, and NSRDB PSM3 satellite irradiance and temperature for the
  same site, both in pvanalytics' ``data/`` folder. The power series follows local clock time
  (it shifts by an hour at daylight saving time although labelled UTC−7), so its timestamps are
  read as America/Denver wall time. PSM3's 30-minute values become Open-Meteo-style hourly rows:
  ``shortwave_radiation`` as the mean over the preceding hour, ``temperature_2m`` instantaneous.
- wind: Deutscher Wetterdienst measured 10 m wind speed, 15-minute, 2015, from vpplib's
  ``input/wind/dwd_wind_data_2015.csv`` (UTC).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
STEP_MS = 900_000
_DENVER = ZoneInfo("America/Denver")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    # mtime=0: the same input gives byte-identical files.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    print(f"wrote {path} ({len(rows)} rows, {path.stat().st_size // 1024} KiB)")


def demand(vpplib: Path) -> None:
    with zipfile.ZipFile(vpplib) as z, z.open("input/baseload/df_S_15min.csv") as f:
        reader = csv.reader(io.TextIOWrapper(f, "utf-8"))
        header = next(reader)
        homes = len(header) - 1
        rows = []
        cet = timezone(timedelta(hours=1))
        for row in reader:
            stamp = datetime.fromisoformat(row[0]).replace(year=2010, tzinfo=cet)
            values = np.asarray(row[1:], dtype=np.float64)
            half = homes // 2
            rows.append(
                [
                    _iso(round(stamp.timestamp() * 1000)),
                    round(values.sum()),
                    round(values[:half].sum()),
                    round(values[half:].sum()),
                ]
            )
    rows.sort(key=lambda r: str(r[0]))
    _write(DATA / "demand_htw74.csv.gz", ["ts", "demand_w", "demand_a_w", "demand_b_w"], rows)


def pv(pvanalytics: Path) -> None:
    import pyarrow.parquet as pq

    with zipfile.ZipFile(pvanalytics) as z:
        power = pq.read_table(
            io.BytesIO(z.read("pvanalytics/data/system_50_ac_power_2_full_DST.parquet"))
        )
        weather = pq.read_table(
            io.BytesIO(z.read("pvanalytics/data/system_50_ac_power_2_full_DST_psm3.parquet"))
        )
    by_ms: dict[int, float] = {}
    for stamp, value in zip(
        power.column("measured_on").to_pylist(), power.column("ac_power_2").to_pylist(), strict=True
    ):
        wall = stamp.replace(tzinfo=None)
        local = wall.replace(tzinfo=_DENVER, fold=0)
        ms = round(local.timestamp() * 1000)
        ms -= ms % STEP_MS
        if value is None or ms in by_ms:  # the repeated hour in autumn: keep the first
            continue
        by_ms[ms] = max(0.0, float(value))
    pv_rows: list[list[object]] = [[_iso(ms), round(by_ms[ms], 1)] for ms in sorted(by_ms)]
    _write(DATA / "pv_pvdaq50.csv.gz", ["ts", "pv_w"], pv_rows)

    w_ms = np.asarray(
        [round(s.timestamp() * 1000) for s in weather.column("index").to_pylist()], dtype=np.int64
    )
    ghi = np.asarray(weather.column("ghi").to_pylist(), dtype=np.float64)
    temp = np.asarray(weather.column("temp_air").to_pylist(), dtype=np.float64)
    half_hour = 1_800_000
    lookup = {int(ms): i for i, ms in enumerate(w_ms)}
    weather_rows: list[list[object]] = []
    first = int(w_ms[0]) + 3_600_000 - int(w_ms[0]) % 3_600_000
    for hour_end in range(first, int(w_ms[-1]) + 1, 3_600_000):
        idx = [lookup.get(hour_end - k * half_hour) for k in (2, 1, 0)]
        if any(i is None for i in idx):
            continue
        a, b, c = (int(i) for i in idx if i is not None)
        mean_ghi = 0.25 * ghi[a] + 0.5 * ghi[b] + 0.25 * ghi[c]  # trapezoid over the hour
        weather_rows.append([_iso(hour_end), round(float(mean_ghi), 1), round(float(temp[c]), 1)])
    _write(
        DATA / "weather_pvdaq50.csv.gz",
        ["time", "shortwave_radiation (W/m²)", "temperature_2m (°C)"],
        weather_rows,
    )


def wind(vpplib: Path) -> None:
    with zipfile.ZipFile(vpplib) as z, z.open("input/wind/dwd_wind_data_2015.csv") as f:
        reader = csv.reader(io.TextIOWrapper(f, "utf-8"))
        for _ in range(3):  # names, heights, index name
            next(reader)
        rows: list[list[object]] = []
        for row in reader:
            stamp = datetime.fromisoformat(row[0]).replace(tzinfo=UTC)
            rows.append([_iso(round(stamp.timestamp() * 1000)), float(row[1])])
    _write(DATA / "wind_dwd2015.csv.gz", ["ts", "wind_speed_10m_m_s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vpplib", type=Path, required=True, help="vpplib 0.0.6 wheel")
    parser.add_argument("--pvanalytics", type=Path, required=True, help="pvanalytics 0.2.2 wheel")
    args = parser.parse_args()
    demand(args.vpplib)
    pv(args.pvanalytics)
    wind(args.vpplib)


if __name__ == "__main__":
    main()
