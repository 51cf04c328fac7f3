"""Settling stored readings into the ledger: balance, late data, period close, adjustments."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest

from hub.consent.book import ConsentBook
from hub.settlement.engine import day_range, settle
from hub.settlement.ledger import GRID, MICRO_PER_UNIT, ROUNDING, Ledger, LedgerError
from hub.settlement.scheme import INTERVAL_MS, Scheme, load_scheme
from hub.settlement.statements import build_statement, build_statements
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.consent import PurposeGrant, Resolution, next_version, nothing_shared
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role
from sim.household import SimHome

SCHEME_FILE = Path(__file__).parent / "fixtures" / "settlement" / "scheme.toml"
NOW = 1_790_000_000_000
COOP = "coop-settle"
JUNE_2 = date(2026, 6, 2)  # a Tuesday


def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


def sim_readings(
    sch: Scheme, first: date, days: int, homes: int = 6, step_min: int = 5
) -> dict[str, list[Reading]]:
    """Readings of ``homes`` simulated homes (grid, pv and, every other home, wind meters)
    every ``step_min`` minutes over ``days`` local days from ``first``."""
    start = sch.day_start_ms(first)
    end = sch.day_start_ms(first + timedelta(days=days))
    out: dict[str, list[Reading]] = {}
    for i in range(homes):
        clock = ManualClock(start)
        home = SimHome(
            f"home-{i + 1:02d}",
            7 + i,
            clock,
            pv_capacity_w=(4000, 2500, 5500, 3200, 6000, 0)[i % 6],
            with_wind=i % 2 == 0,
            weather_seed=7,
            step_s=60,
        )
        readings: list[Reading] = []
        for n, t in enumerate(range(start, end + 1, step_min * 60_000)):
            c = home.counters(t)
            grid: dict[str, float | str] = {
                "energy_import_wh": c["energy_import_wh"],
                "energy_export_wh": c["energy_export_wh"],
            }
            readings.append(Reading("grid-meter", n + 1, t, Role.GRID, "g1", grid))
            if home.pv_capacity_w:
                readings.append(Reading("pv", n + 1, t, Role.PV, "g1", {"energy_wh": c["pv_wh"]}))
            if home.with_wind:
                readings.append(
                    Reading("wind", n + 1, t, Role.WIND, "g1", {"energy_wh": c["wind_wh"]})
                )
        out[home.home] = readings
    return out


def share_for_settlement(store: Store, homes: list[str]) -> None:
    """Each home grants its meters for settlement and community figures (settlement reads only
    what consent shares)."""
    book = ConsentBook(store)
    terms = {p: PurposeGrant(Resolution.RAW, 3650) for p in ("settlement", "community-stats")}
    for home in homes:
        if book.current(home).version == 0:
            streams = {role: dict(terms) for role in ("grid", "pv", "wind")}
            book.record(next_version(nothing_shared(home), streams, NOW), NOW)


def insert(store: Store, readings: dict[str, list[Reading]]) -> None:
    share_for_settlement(store, list(readings))
    items = []
    for home, rs in readings.items():
        for i in range(0, len(rs), 4000):
            items.append((home, ReadingBatch(home, NOW, rs[i : i + 4000])))
    store.insert_batches(items, NOW)


@pytest.fixture
def store_coop() -> str:
    return COOP


def test_store_counter_samples_bracket_the_window(store: Store) -> None:
    sch = scheme()
    insert(store, sim_readings(sch, JUNE_2, 1, homes=1, step_min=60))
    start = sch.day_start_ms(JUNE_2) + 3 * 3600_000 + 1
    samples = [s for s in store.counter_samples(start, start + 2 * 3600_000, [Role.GRID])]
    assert [s.ts_ms - start for s in samples] == [
        -1,
        3600_000 - 1,
        2 * 3600_000 - 1,
        3 * 3600_000 - 1,
    ]
    assert all(s.role is Role.GRID and s.energy_import_wh is not None for s in samples)
    assert list(store.counter_samples(start, start + 1, [Role.BATTERY])) == []


def test_a_settled_day_balances_and_every_member_saves(store: Store) -> None:
    sch = scheme()
    insert(store, sim_readings(sch, JUNE_2, 1))
    result = settle(store, sch, [JUNE_2], NOW)
    assert result.count("settled") == 1
    assert result.intervals == 96 and result.provisional_intervals == 0
    ledger = Ledger(store)
    assert ledger.verify() == []
    balances = ledger.balances("2026-06")
    assert sum(e for e, _ in balances.values()) == 0
    assert sum(a for _, a in balances.values()) == 0
    assert abs(balances[ROUNDING][1]) < 6 * 4 + 2  # at most a micro-unit per posting
    statements = build_statements(store, "2026-06", NOW)
    assert [s.home for s in statements] == [f"home-{i:02d}" for i in range(1, 7)]
    for s in statements:
        assert s.saving_minor >= 0 and not s.final
        assert s.intervals == 96 and s.provisional_intervals == 0
        member = balances[f"member:{s.home}"][1]
        assert s.total_minor == -((member + 9_999) // 10_000)  # the balance, up to whole cents
    # Community energy: what members imported from neighbours is what they exported to them.
    shared_in = sum(
        line.energy_wh for s in statements for line in s.lines if line.item == "import-neighbours"
    )
    shared_out = -sum(
        line.energy_wh for s in statements for line in s.lines if line.item == "export-neighbours"
    )
    assert shared_in > 0 and abs(shared_in - shared_out) <= len(statements)
    # Settling again changes nothing.
    assert settle(store, sch, [JUNE_2], NOW + 1).count("unchanged") == 1


def test_late_data_is_provisional_until_the_backlog_arrives(store: Store) -> None:
    sch = scheme()
    readings = sim_readings(sch, JUNE_2, 1)
    noon = sch.day_start_ms(JUNE_2) + 12 * 3600_000
    held_back = [r for r in readings["home-03"] if r.ts_ms > noon]
    readings["home-03"] = [r for r in readings["home-03"] if r.ts_ms <= noon]
    insert(store, readings)

    first = settle(store, sch, [JUNE_2], NOW)
    assert first.provisional_intervals == 48  # the afternoon, settled without home-03
    assert first.missing_member_intervals == 48
    s3 = build_statement(store, "home-03", "2026-06", NOW)
    assert s3.provisional_intervals == 48
    before = {s.home: s.total_minor for s in build_statements(store, "2026-06", NOW)}

    insert(store, {"home-03": held_back})  # the agent's outbox drains
    second = settle(store, sch, [JUNE_2], NOW + 1)
    assert second.count("resettled") == 1 and second.provisional_intervals == 0
    assert build_statement(store, "home-03", "2026-06", NOW).provisional_intervals == 0
    after = {s.home: s.total_minor for s in build_statements(store, "2026-06", NOW)}
    assert after["home-03"] != before["home-03"]
    assert Ledger(store).verify() == []
    # One settlement transaction for the day, whatever happened before.
    n = store.db.conn.execute(
        "SELECT count(*) FROM ledger_transactions WHERE day = ?", (JUNE_2.isoformat(),)
    ).fetchone()[0]
    assert n == 1


def test_close_rounds_to_cents_freezes_the_month_and_corrects_by_adjustment(store: Store) -> None:
    sch = scheme()
    readings = sim_readings(sch, JUNE_2, 1)
    late = [r for r in readings["home-02"] if r.ts_ms > sch.day_start_ms(JUNE_2) + 18 * 3600_000]
    readings["home-02"] = [r for r in readings["home-02"] if r not in late]
    insert(store, readings)
    june = day_range(date(2026, 6, 1), date(2026, 6, 30))
    settle(store, sch, june, NOW)
    ledger = Ledger(store)

    with pytest.raises(LedgerError, match="provisional"):
        ledger.close_period(sch, "2026-06", NOW)
    summary = ledger.close_period(sch, "2026-06", NOW + 1, allow_provisional=True)
    assert ledger.is_closed("2026-06")
    balances = ledger.balances("2026-06")
    assert sum(a for _, a in balances.values()) == 0
    for account, (_, amount) in balances.items():
        if account != ROUNDING:
            assert amount % (MICRO_PER_UNIT // 100) == 0, account  # whole cents
    assert balances[ROUNDING][1] <= 0 or summary.rounding_micro <= 0  # the coop pays rounding
    june_statements = {s.home: s for s in build_statements(store, "2026-06", NOW)}
    assert all(s.final for s in june_statements.values())
    for s in june_statements.values():
        assert s.total_minor * 10_000 == -balances[f"member:{s.home}"][1]

    # A closed month is immutable, in the database itself.
    with pytest.raises(sqlite3.IntegrityError, match="closed"):
        store.db.conn.execute("DELETE FROM ledger_postings")
    with pytest.raises(sqlite3.IntegrityError, match="closed"):
        store.db.conn.execute("UPDATE ledger_periods SET closed_ms = NULL")
    with pytest.raises(sqlite3.IntegrityError, match="closed"):
        store.db.conn.execute("UPDATE settlement_member_intervals SET import_mwh = 0")
    store.db.conn.rollback()
    with pytest.raises(LedgerError, match="already closed"):
        ledger.close_period(sch, "2026-06", NOW + 2)

    # The late readings arrive: June 2 is corrected by an adjustment in July.
    insert(store, {"home-02": late})
    result = settle(store, sch, [JUNE_2], NOW + 3)
    assert result.count("adjusted") == 1
    assert settle(store, sch, [JUNE_2], NOW + 4).count("unchanged") == 1
    assert ledger.verify() == []
    assert ledger.balances("2026-06") == balances
    assert build_statement(store, "home-02", "2026-06", NOW) == june_statements["home-02"]
    july = build_statement(store, "home-02", "2026-07", NOW)
    adjustment = [line for line in july.lines if line.item == "adjustments"]
    assert len(adjustment) == 1 and adjustment[0].energy_wh > 0
    assert not july.final and july.intervals == 0

    # Months close in order, and only when fully settled.
    with pytest.raises(LedgerError, match="not settled"):
        ledger.close_period(sch, "2026-07", NOW + 5)
    settle(store, sch, day_range(date(2026, 7, 1), date(2026, 7, 31)), NOW + 5)
    with pytest.raises(LedgerError, match="2026-07 is still open"):
        ledger.close_period(sch, "2026-08", NOW + 6)
    ledger.close_period(sch, "2026-07", NOW + 6, allow_provisional=True)  # no data after June
    assert build_statement(store, "home-02", "2026-07", NOW).final


def test_every_interval_of_a_dst_day_is_settled(store: Store) -> None:
    sch = scheme()
    insert(store, sim_readings(sch, date(2026, 10, 25), 1, homes=2, step_min=15))
    result = settle(store, sch, [date(2026, 10, 25)], NOW)  # clocks go back: 25 hours
    assert result.intervals == 100
    starts = [
        r[0] for r in store.db.conn.execute("SELECT start_ms FROM settlement_intervals ORDER BY 1")
    ]
    assert all(b - a == INTERVAL_MS for a, b in itertools.pairwise(starts))


def test_grid_account_is_the_community_connection(store: Store) -> None:
    sch = scheme()
    insert(store, sim_readings(sch, JUNE_2, 1))
    settle(store, sch, [JUNE_2], NOW)
    row = store.db.conn.execute(
        "SELECT sum(demand_mwh - matched_mwh), sum(supply_mwh - matched_mwh) "
        "FROM settlement_intervals"
    ).fetchone()
    grid_energy = Ledger(store).balances("2026-06")[GRID][0]
    assert grid_energy == row[1] - row[0]  # received exports minus delivered imports


def test_time_of_use_prices_apply_per_local_quarter_hour(store: Store) -> None:
    sch = scheme()
    insert(store, sim_readings(sch, JUNE_2, 1, homes=2, step_min=15))
    settle(store, sch, [JUNE_2], NOW)
    prices = dict(store.db.conn.execute("SELECT start_ms, import_price FROM settlement_intervals"))
    five_pm = sch.day_start_ms(JUNE_2) + 17 * 3600_000  # Tuesday 17:00 in Amsterdam
    assert prices[five_pm - 900_000] == "0.30"
    assert prices[five_pm] == prices[five_pm + 4 * 3600_000 - 900_000] == "0.38"
    assert prices[five_pm + 4 * 3600_000] == "0.30"
