"""Closed books stay closed: a scheme change never reprices a closed month unless asked, and a
month priced under two schemes says which priced which days.

The figures are the hand-worked ones of :mod:`tests.test_settlement_handworked` (three members,
four quarter-hours on 2 June 2026, flat tariffs 0.30/0.10 EUR per kWh).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from hub.settlement.engine import day_range, settle
from hub.settlement.ledger import Ledger, LedgerError, SchemeChangeError
from hub.settlement.statements import (
    build_statement,
    format_csv,
    format_json,
    format_text,
    statement_pricing,
)
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.payloads import Statement
from tests.test_settlement_handworked import (
    COOP,
    WORKED_DAY,
    worked_readings,
    worked_scheme,
)
from tests.test_settlement_ledger import NOW, insert

JUNE = day_range(date(2026, 6, 1), date(2026, 6, 30))


@pytest.fixture(scope="module")
def closed_june(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """June settled under SDR and closed."""
    path = tmp_path_factory.mktemp("closed") / "hub.db"
    sdr = worked_scheme("sdr")
    with Store.open(path, COOP, clock=ManualClock(NOW)) as store:
        insert(store, worked_readings())
        settle(store, sdr, JUNE, NOW)
        Ledger(store).close_period(sdr, "2026-06", NOW + 1)
    return path


@pytest.fixture
def store_path(closed_june: Path, tmp_path: Path) -> Path:
    """``store`` opens a copy of closed June."""
    return Path(shutil.copy(closed_june, tmp_path / "hub.db"))


@pytest.fixture
def store_coop() -> str:
    return COOP


def transactions(store: Store) -> list[tuple[str, str, str | None, str]]:
    return [
        (period, kind, day, memo)
        for period, kind, day, memo in store.db.conn.execute(
            "SELECT period, kind, day, memo FROM ledger_transactions ORDER BY id"
        )
    ]


def test_a_closed_month_is_not_repriced_by_another_scheme(store: Store) -> None:
    before = transactions(store)
    with pytest.raises(SchemeChangeError) as caught:
        settle(store, worked_scheme("mmr"), [WORKED_DAY], NOW + 2)
    message = str(caught.value)
    assert "2026-06 is closed" in message and "SDR" in message and "MMR" in message
    assert "--reprice" in message and "\n" not in message
    assert isinstance(caught.value, LedgerError)
    assert transactions(store) == before  # nothing posted, not even for the other days
    # A range that only touches the closed month is refused as a whole, before any write.
    with pytest.raises(SchemeChangeError):
        settle(store, worked_scheme("mmr"), day_range(date(2026, 6, 30), date(2026, 7, 2)), NOW)
    assert transactions(store) == before


def test_the_same_scheme_and_the_same_data_post_nothing(store: Store) -> None:
    before = transactions(store)
    # The same scheme, written differently ("0.3" for "0.30", another min_group: community
    # figures only) prices the same way: it is the same scheme.
    same = worked_scheme(
        "sdr", import_tariff={"price_per_kwh": "0.3"}, export_tariff={"price_per_kwh": 0.1}
    )
    for sch in (worked_scheme("sdr"), same, worked_scheme("sdr", min_group=7)):
        result = settle(store, sch, JUNE, NOW + 2)
        assert result.count("unchanged") == 30, result.days
    assert transactions(store) == before


def test_reprice_posts_the_difference_labelled_as_a_repricing(store: Store) -> None:
    june_balances = Ledger(store).balances("2026-06")
    result = settle(store, worked_scheme("mmr"), [WORKED_DAY], NOW + 2, reprice=True)
    assert result.count("repriced") == 1
    (txn,) = [t for t in transactions(store) if t[0] == "2026-07"]
    _, kind, day, memo = txn
    assert (kind, day) == ("adjustment", "2026-06-02")
    assert "repricing" in memo and "SDR" in memo and "MMR" in memo
    assert "late or corrected data" not in memo
    assert Ledger(store).balances("2026-06") == june_balances  # history is not rewritten
    # The difference, per member, from the hand-worked postings (micro-EUR; tests/
    # test_settlement_handworked.py): only the neighbour legs change, the grid's do not.
    #   home-a: from neighbours −156,666 − (−131,000) = −25,666; to neighbours 30,000 − 15,000
    #           = 15,000; net −10,666
    #   home-b: −113,333 − (−112,000) = −1,333; 270,000 − 185,000 = 85,000; net 83,667
    #   home-c: −200,000 − (−125,000) = −75,000; 170,001 − 168,001 = 2,000; net −73,000
    #   rounding: the day's −3 under MMR against −2 under SDR: −1. Sum: 0.
    july = Ledger(store).balances("2026-07")
    assert {a: m for a, (_, m) in july.items()} == {
        "member:home-a": -10_666,
        "member:home-b": 83_667,
        "member:home-c": -73_000,
        "rounding": -1,
    }
    assert all(e == 0 for e, _ in july.values())  # no energy changed hands again
    # The day is now held under MMR: the same again posts nothing, SDR again is refused.
    assert settle(store, worked_scheme("mmr"), [WORKED_DAY], NOW + 3).count("unchanged") == 1
    with pytest.raises(SchemeChangeError, match="MMR"):
        settle(store, worked_scheme("sdr"), [WORKED_DAY], NOW + 4)
    # Back to SDR, when asked, undoes it exactly.
    settle(store, worked_scheme("sdr"), [WORKED_DAY], NOW + 5, reprice=True)
    assert all(m == 0 for _, m in Ledger(store).balances("2026-07").values())


def test_reprice_with_late_data_posts_each_for_what_it_is(tmp_path: Path) -> None:
    # June is closed while home-c's readings from 2 June 00:30 on are still in its outbox: the
    # worked intervals 2 and 3 were settled without home-c (provisional). Then they arrive, and
    # the operator settles 2 June again under MMR with --reprice.
    sdr = worked_scheme("sdr")
    cut = sdr.day_start_ms(WORKED_DAY) + 30 * 60_000
    readings = worked_readings()
    held_back = [r for r in readings["home-c"] if r.ts_ms > cut]
    readings["home-c"] = [r for r in readings["home-c"] if r.ts_ms <= cut]
    with Store.open(tmp_path / "hub.db", COOP, clock=ManualClock(NOW)) as store:
        insert(store, readings)
        settle(store, sdr, JUNE, NOW)
        Ledger(store).close_period(sdr, "2026-06", NOW + 1, allow_provisional=True)
        insert(store, {"home-c": held_back})
        result = settle(store, worked_scheme("mmr"), [WORKED_DAY], NOW + 2, reprice=True)
        assert result.count("repriced") == 1
        july = [
            (txn, memo)
            for txn, memo in store.db.conn.execute(
                "SELECT id, memo FROM ledger_transactions WHERE period = '2026-07' ORDER BY id"
            )
        ]
        assert len(july) == 2
        (data_txn, data_memo), (price_txn, price_memo) = july
        assert "late or corrected data" in data_memo and "repricing" not in data_memo
        assert "repricing" in price_memo and "late or corrected data" not in price_memo

        def money(txn: int) -> dict[str, int]:
            return {
                a: int(m)
                for a, m in store.db.conn.execute(
                    "SELECT account, sum(amount_micro) FROM ledger_postings WHERE txn_id = ? "
                    "GROUP BY account",
                    (txn,),
                )
            }

        # The late data, priced as June was (SDR). Held: intervals 2 and 3 without home-c, so
        # no supply: a and b bought everything from the grid (the SDR price with no supply is
        # λ_b). Held postings (micro-EUR), then the worked SDR ones:
        #   home-a: from neighbours 500 Wh at 0.15 = −75,000; from the grid 500 + 1000 + 100.001
        #           Wh at 0.30 = 0.4800003 -> −480,000; to neighbours 15,000; to the grid 45,000
        #           -> worked: −131,000, −395,000, 15,000, 45,000: difference −56,000 + 85,000
        #           = 29,000
        #   home-b: from the grid 2200.002 Wh at 0.30 = 0.6600006 -> −660,000; to neighbours
        #           185,000; to the grid 105,000 -> worked: −112,000 from neighbours, −490,000
        #           from the grid: difference −112,000 + 170,000 = 58,000
        #   home-c: −125,000 and −150,000 as before; it now also sent 850.001 Wh to neighbours:
        #           168,001
        #   grid: 4300.003 Wh at 0.30 = 1.2900009 -> 1,290,001 -> worked 1,035,001: −255,000
        #   rounding: held day +0.3 (a) + 0.6 (b) + 0.1 (grid) = 1 -> −1; worked −2: −1.
        assert money(data_txn) == {
            "member:home-a": 29_000,
            "member:home-b": 58_000,
            "member:home-c": 168_001,
            "grid": -255_000,
            "rounding": -1,
        }
        # The repricing: the worked MMR postings against the worked SDR ones (see
        # test_reprice_posts_the_difference_labelled_as_a_repricing).
        assert money(price_txn) == {
            "member:home-a": -10_666,
            "member:home-b": 83_667,
            "member:home-c": -73_000,
            "rounding": -1,
        }
        # home-a's July statement shows each for what it is, in cents (+ pays, - is paid):
        # the late data credited 29,000 µEUR = 2.9 cents -> -3; the repricing charged 10,666
        # µEUR = 1.0666 cents -> +1 (each line rounded half to even).
        july_a = build_statement(store, "home-a", "2026-07", NOW + 3)
        lines = {line.item: line.amount_minor for line in july_a.lines}
        assert (lines["adjustments"], lines["repricing"]) == (-3, 1)
        assert "earlier months repriced" in format_text(july_a)


def test_the_cli_refuses_a_scheme_change_in_one_line(closed_june: Path, tmp_path: Path) -> None:
    from tests.test_settlement_cli import assert_clean_error, run

    db = tmp_path / "hub.db"
    shutil.copy(closed_june, db)
    mmr = tmp_path / "mmr.toml"
    mmr.write_text(
        'timezone = "UTC"\ncurrency = "EUR"\nmechanism = "mmr"\n'
        '[import_tariff]\nprice_per_kwh = "0.30"\n[export_tariff]\nprice_per_kwh = "0.10"\n'
    )
    args = ["settle", "--db", str(db), "--scheme", str(mmr), "--from", "2026-06-02"]
    refused = run(*args, "--to", "2026-06-02")
    assert_clean_error(refused, "--reprice")
    assert "2026-06 is closed" in refused.stderr
    repriced = run(*args, "--to", "2026-06-02", "--reprice")
    assert repriced.exit_code == 0, repriced.output
    assert "1 days: 1 repriced" in repriced.stdout
    again = run(*args, "--to", "2026-06-02")
    assert again.exit_code == 0 and "1 days: 1 unchanged" in again.stdout


# -- a month priced under two schemes ----------------------------------------------------------


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "hub.db", COOP, clock=ManualClock(NOW))
    insert(s, worked_readings())
    yield s
    s.close()


def test_a_statement_says_which_scheme_priced_which_days(open_store: Store) -> None:
    store = open_store
    settle(store, worked_scheme("sdr"), day_range(date(2026, 6, 1), date(2026, 6, 15)), NOW)
    settle(store, worked_scheme("mmr"), day_range(date(2026, 6, 16), date(2026, 6, 30)), NOW)
    s = build_statement(store, "home-a", "2026-06", NOW)
    pricing = statement_pricing(store, "home-a", "2026-06")
    assert [(p.mechanism, p.first, p.last) for p in pricing] == [
        ("sdr", "2026-06-01", "2026-06-15"),
        ("mmr", "2026-06-16", "2026-06-30"),
    ]
    # The payload published to the home carries it, as it is decoded at the home.
    assert decode(Statement, encode(s)).pricing == pricing
    text = format_text(s)
    assert "SDR 2026-06-01 to 2026-06-15" in text
    assert "MMR 2026-06-16 to 2026-06-30" in text
    data = json.loads(format_json(s))
    assert [(p["mechanism"], p["first"], p["last"]) for p in data["pricing"]] == [
        ("sdr", "2026-06-01", "2026-06-15"),
        ("mmr", "2026-06-16", "2026-06-30"),
    ]
    rows = list(csv.DictReader(io.StringIO(format_csv(s))))
    priced = [r["item"] for r in rows if r["item"].startswith("pricing")]
    assert priced == [
        f"pricing sdr 2026-06-01..2026-06-15 scheme {pricing[0].scheme}",
        f"pricing mmr 2026-06-16..2026-06-30 scheme {pricing[1].scheme}",
    ]


def test_two_tariffs_under_one_mechanism_are_told_apart(open_store: Store) -> None:
    store = open_store
    dear = worked_scheme("sdr", import_tariff={"price_per_kwh": "0.32"})
    settle(store, worked_scheme("sdr"), day_range(date(2026, 6, 1), date(2026, 6, 9)), NOW)
    settle(store, dear, day_range(date(2026, 6, 10), date(2026, 6, 20)), NOW)
    settle(store, worked_scheme("sdr"), day_range(date(2026, 6, 21), date(2026, 6, 30)), NOW)
    pricing = statement_pricing(store, "home-b", "2026-06")
    assert [(p.first[-2:], p.last[-2:]) for p in pricing] == [
        ("01", "09"), ("10", "20"), ("21", "30"),
    ]  # fmt: skip
    assert pricing[0].scheme == pricing[2].scheme != pricing[1].scheme
    text = format_text(build_statement(store, "home-b", "2026-06", NOW))
    assert f"scheme {pricing[1].scheme}" in text


def test_one_scheme_keeps_the_short_label(open_store: Store) -> None:
    settle(open_store, worked_scheme("mmr"), JUNE, NOW)
    pricing = statement_pricing(open_store, "home-c", "2026-06")
    assert [(p.mechanism, p.first, p.last) for p in pricing] == [
        ("mmr", "2026-06-01", "2026-06-30")
    ]
    text = format_text(build_statement(open_store, "home-c", "2026-06", NOW))
    assert "pricing: MMR 2026-06-01 to 2026-06-30;" in text
    assert "scheme" not in text.splitlines()[1]  # one scheme: no need to tell schemes apart
