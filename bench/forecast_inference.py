"""Inference time of the forecast for a cooperative of 1,000 homes (target: under 50 ms), and the
cost of the history read the hub does before each forecast.

Builds a real hub store with ``--homes`` homes (grid meter + PV each, every other home a
turbine), ``--days`` of 15-minute readings, every home granting its streams for the forecast,
and imported weather; then times, separately:

- the first build of the forecast's community series from every stored reading (once per
  database: the migration that brings in the series, or the hub's first forecast);
- the history read of a refresh (:func:`hub.forecast.service.read_community_history`: fold in
  what was committed since the last one, then read 28 days of the series) in the steady state,
  after each home sent one more 15-minute reading per device, and with nothing new;
- what queueing a reading for the series costs ingest (one 15-minute round for every home,
  inserted with and without the series' trigger);
- the forecast itself (features + onnxruntime + fallbacks) on the history read.

    .venv/bin/python bench/forecast_inference.py [--homes 1000] [--days 28]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hub.consent.book import ConsentBook
from hub.forecast.features import DAY_MS, HISTORY_DAYS, STEP_MS, History
from hub.forecast.model import load_model, make_forecast, tuned_forecast
from hub.forecast.service import READ_DAYS, import_weather, read_community_history, read_weather
from hub.forecast.site import Site
from hub.forecast.tuning import ReplayCache
from hub.storage.store import Store
from protocol.consent import PurposeGrant, Resolution, next_version, nothing_shared
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role
from tests.test_forecast_features import LAT, LON, T0, sim_community

ROUNDS = 8  # steady-state refreshes timed, each after one more 15-minute round of readings


def _home_readings(
    history: History, h: int, first_slot: int, slots: int, start_ms: int
) -> list[Reading]:
    scale = 0.8 + 0.4 * ((h * 7919) % 100) / 100
    out = []
    for i in range(first_slot, first_slot + slots):
        ts = start_ms + i * STEP_MS
        d = history.demand_w[i] / 12 * scale
        pv = history.pv_w[i] / 12 * scale
        out.append(Reading("grid", i + 1, ts, Role.GRID, "g1", {"power_w": d - pv}))
        out.append(Reading("pv", i + 1, ts, Role.PV, "g1", {"power_w": pv}))
        if h % 2 == 0:
            w = history.wind_w[i] / 6
            out.append(Reading("wind", i + 1, ts, Role.WIND, "g1", {"power_w": w}))
    return out


def build(path: Path, homes: int, days: int) -> tuple[Store, History]:
    start = T0 - days * DAY_MS
    history, weather = sim_community(days=days + 2, homes=12, start_ms=start)
    store = Store.open(path, "bench-forecast", durable=False)
    book = ConsentBook(store)
    terms = {
        role: {"forecast": PurposeGrant(Resolution.RAW, 365)} for role in ("grid", "pv", "wind")
    }
    for h in range(homes):
        home = f"home-{h}"
        book.record(next_version(nothing_shared(home), terms, start), start)
        readings = _home_readings(history, h, 0, days * 96, start)
        for first in range(0, len(readings), 5000):
            store.insert_batches(
                [(home, ReadingBatch(home, T0, readings[first : first + 5000]))], T0
            )
    import_weather(store, weather, T0)
    return store, history


def one_round(store: Store, history: History, homes: int, days: int, k: int) -> float:
    """Every home sends its readings of slot ``k`` after the stored days; returns ms."""
    start = T0 - days * DAY_MS
    batches = []
    for h in range(homes):
        readings = _home_readings(history, h, days * 96 + k, 1, start)
        batches.append((f"home-{h}", ReadingBatch(f"home-{h}", T0, readings)))
    t = time.perf_counter()
    store.insert_batches(batches, T0)
    return (time.perf_counter() - t) * 1000


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--days", type=int, default=56, help="history: 56 tunes on 28 days")
    args = parser.parse_args()
    model = load_model()
    site = Site(LAT, LON)
    homes, days = args.homes, args.days
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store, history = build(Path(tmp) / "hub.db", homes, days)
        readings = store.count_readings()
        print(f"built {homes} homes x {days} days ({readings:,} readings) in "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
        insert_plain = one_round(store, history, homes, days, 0)  # no series yet: no trigger
        book = ConsentBook(store)

        def read(now_ms: int) -> History:
            return read_community_history(
                store, now_ms - HISTORY_DAYS * DAY_MS, now_ms, now_ms=now_ms, book=book
            )

        t = time.perf_counter()
        read(T0 + STEP_MS)
        first_ms = (time.perf_counter() - t) * 1000
        print(f"first build of the community series from every reading: {first_ms:.0f} ms (once)")
        inserts, refresh = [], []
        for k in range(1, ROUNDS + 1):
            inserts.append(one_round(store, history, homes, days, k))
            now = T0 + (k + 1) * STEP_MS
            refresh.extend(timed(lambda now=now: read(now), 1))  # type: ignore[misc]
        idle = timed(lambda: read(T0 + (ROUNDS + 1) * STEP_MS), 5)
        devices = len(store.devices())
        print(
            f"history read per refresh (fold in one new 15-minute reading from each of {devices} "
            f"devices, then read {HISTORY_DAYS} days): median {statistics.median(refresh):.1f} ms, "
            f"max {max(refresh):.1f} ms; nothing new: median {statistics.median(idle):.1f} ms"
        )
        print(
            f"ingest of one 15-minute round ({devices} readings): {insert_plain:.0f} ms before "
            f"the series existed, median {statistics.median(inserts):.0f} ms with its trigger"
        )
        issue = T0 + (ROUNDS + 1) * STEP_MS
        history_now = read(issue)
        weather = read_weather(store, issue - 3_600_000, issue + 50 * 3_600_000)
        fc_ms = timed(lambda: make_forecast(model, history_now, weather, site, issue), 50)
        result = make_forecast(model, history_now, weather, site, issue)
        print(f"methods: { {k: v.method for k, v in result.targets.items()} }")
        print(
            f"forecast (features + onnxruntime), median {statistics.median(fc_ms):.1f} ms, "
            f"p95 {np.percentile(fc_ms, 95):.1f} ms  [target < 50 ms]"
        )
        # What the hub runs: tuned on the history's last 28 days (hub.forecast.tuning). The
        # first refresh replays every past issue; later ones find them in the cache.
        long_history = read_community_history(
            store, issue - READ_DAYS * DAY_MS, issue, now_ms=issue, book=book
        )
        long_reads = timed(
            lambda: read_community_history(
                store, issue - READ_DAYS * DAY_MS, issue, now_ms=issue, book=book
            ),
            5,
        )
        print(
            f"the hub's read of {READ_DAYS} days (the model's 28 before each replayed issue), "
            f"nothing new to fold: median {statistics.median(long_reads):.1f} ms"
        )
        long_weather = read_weather(store, issue - READ_DAYS * DAY_MS, issue + 50 * 3_600_000)
        cold = []
        for _ in range(3):
            cache = ReplayCache()
            t = time.perf_counter()
            tuned = tuned_forecast(model, long_history, long_weather, site, issue, cache=cache)
            cold.append((time.perf_counter() - t) * 1000)
        warm = timed(
            lambda: tuned_forecast(model, long_history, long_weather, site, issue, cache=cache), 20
        )
        assert tuned.tuning is not None
        print(
            f"tuned forecast ({tuned.tuning.issues} replays over {tuned.tuning.days:g} days; "
            f"demand basis {tuned.targets['demand'].basis}): first refresh (replays every past "
            f"issue) median {statistics.median(cold):.0f} ms; later refreshes (replays cached) "
            f"median {statistics.median(warm):.1f} ms, p95 {np.percentile(warm, 95):.1f} ms  "
            "[target < 50 ms]"
        )
        store.close()


if __name__ == "__main__":
    main()
