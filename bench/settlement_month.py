"""Benchmark: settle a month for N homes with 15-minute grid-meter readings; prints figures.

    .venv/bin/python bench/settlement_month.py --homes 200

Readings are synthetic (a daily import and export shape per home, seeded), stored through the
hub's own insert path into a temporary database, then settled day by day as ``settle`` does.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from datetime import date
from pathlib import Path

from hub.settlement.engine import day_range, settle
from hub.settlement.ledger import Ledger
from hub.settlement.scheme import parse_scheme
from hub.settlement.statements import build_statements
from hub.storage.store import Store
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role

SCHEME = {
    "timezone": "Europe/Amsterdam",
    "currency": "EUR",
    "import_tariff": {"price_per_kwh": "0.30"},
    "export_tariff": {"price_per_kwh": "0.08"},
}


def readings(home: int, start_ms: int, end_ms: int, step_ms: int) -> list[Reading]:
    rng = random.Random(home)
    pv_kw = rng.choice([0.0, 2.5, 4.0, 6.0])
    base_kw = rng.uniform(0.2, 0.6)
    imp = exp = 1000.0
    out = []
    for n, t in enumerate(range(start_ms, end_ms + 1, step_ms)):
        hour = (t // 3_600_000) % 24
        solar = max(0.0, math.sin((hour - 6) / 12 * math.pi)) * pv_kw
        net_kw = base_kw + rng.uniform(0, 0.8) - solar
        hours = step_ms / 3_600_000
        if net_kw > 0:
            imp += net_kw * hours * 1000
        else:
            exp -= net_kw * hours * 1000
        q: dict[str, float | str] = {"energy_import_wh": imp, "energy_export_wh": exp}
        out.append(Reading("grid-meter", n + 1, t, Role.GRID, "g1", q))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    scheme = parse_scheme(dict(SCHEME))
    days = day_range(date(2026, 6, 1), date(2026, 6, args.days))
    start = scheme.day_start_ms(days[0])
    end = scheme.day_start_ms(days[-1]) + 86_400_000
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db", "bench", durable=False)
        t0 = time.perf_counter()
        for h in range(args.homes):
            home = f"home-{h:04d}"
            rs = readings(h, start, end, 900_000)
            batches = [
                (home, ReadingBatch(home, start, rs[i : i + 5000])) for i in range(0, len(rs), 5000)
            ]
            store.insert_batches(batches, start)
        t1 = time.perf_counter()
        result = settle(store, scheme, days, end)
        t2 = time.perf_counter()
        statements = build_statements(store, "2026-06", end)
        t3 = time.perf_counter()
        assert Ledger(store).verify() == []
        store.close()
    member_intervals = args.homes * result.intervals
    print(f"homes {args.homes}, days {len(days)}, member-intervals {member_intervals}")
    print(f"insert readings      {t1 - t0:8.2f} s")
    rate = member_intervals / (t2 - t1)
    print(f"settle               {t2 - t1:8.2f} s  ({rate:,.0f} member-intervals/s)")
    print(f"build {len(statements)} statements {t3 - t2:8.2f} s")


if __name__ == "__main__":
    main()
