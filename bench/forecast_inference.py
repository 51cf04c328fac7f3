"""Inference time of the forecast for a cooperative of 1,000 homes (target: under 50 ms).

Builds a real hub store with 1,000 homes (grid meter + PV each, every other home a turbine),
two weeks of 15-minute readings, and imported weather; then times, separately:

- the forecast itself (features + onnxruntime + fallbacks) on the community history;
- reading the community history from the store (incremental refresh + 28-day query);
- the first, full fold of the readings into 15-minute sums (once per hub start).

    .venv/bin/python bench/forecast_inference.py [--homes 1000] [--days 14]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hub.features import DAY_MS, STEP_MS
from hub.forecast import Site, load_model, make_forecast
from hub.forecast_service import import_weather, read_community_history, read_weather
from hub.store import Store
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role
from tests.test_forecast_features import LAT, LON, T0, sim_community


def build(path: Path, homes: int, days: int) -> Store:
    history, weather = sim_community(days=days + 2, homes=12, start_ms=T0 - days * DAY_MS)
    store = Store.open(path, "bench-forecast", durable=False)
    n = days * 96
    start = T0 - days * DAY_MS
    for h in range(homes):
        home = f"home-{h}"
        scale = 0.8 + 0.4 * ((h * 7919) % 100) / 100
        readings = []
        for i in range(n):
            ts = start + i * STEP_MS
            d = history.demand_w[i] / 12 * scale
            pv = history.pv_w[i] / 12 * scale
            readings.append(Reading("grid", i + 1, ts, Role.GRID, "g1", {"power_w": d - pv}))
            readings.append(Reading("pv", i + 1, ts, Role.PV, "g1", {"power_w": pv}))
            if h % 2 == 0:
                w = history.wind_w[i] / 6
                readings.append(Reading("wind", i + 1, ts, Role.WIND, "g1", {"power_w": w}))
        for first in range(0, len(readings), 5000):
            store.insert_batches(
                [(home, ReadingBatch(home, T0, readings[first : first + 5000]))], T0
            )
    import_weather(store, weather, T0)
    return store


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    model = load_model()
    site = Site(LAT, LON)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = build(Path(tmp) / "hub.db", args.homes, args.days)
        print(f"built {args.homes} homes x {args.days} days in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        store.refresh_power_slots()
        print(f"first fold of all readings: {(time.perf_counter() - t) * 1000:.0f} ms (once)")
        history = read_community_history(store, T0 - 28 * DAY_MS, T0)
        weather = read_weather(store, T0 - 3_600_000, T0 + 50 * 3_600_000)
        read_ms = timed(lambda: read_community_history(store, T0 - 28 * DAY_MS, T0), 5)
        fc_ms = timed(lambda: make_forecast(model, history, weather, site, T0), 50)
        result = make_forecast(model, history, weather, site, T0)
        print(f"methods: { {k: v.method for k, v in result.targets.items()} }")
        print(
            f"forecast (features + onnxruntime), median {statistics.median(fc_ms):.1f} ms, "
            f"p95 {np.percentile(fc_ms, 95):.1f} ms  [target < 50 ms]"
        )
        print(
            "read history from the store (refresh + 28-day query), median "
            f"{statistics.median(read_ms):.0f} ms"
        )
        store.close()


if __name__ == "__main__":
    main()
