"""Settlement on imported grid prices (``[import_tariff] prices = "imported"``), worked by hand.

Nothing here is computed by the settlement code. Scheme: MMR, time zone UTC, the export tariff
flat at 0.08 EUR/kWh, the import tariff the stored grid price plus a network charge of
0.10 EUR/kWh. Stored prices for 2 June 2026 (UTC), per kWh, and so the import price:

    interval   stored    + network = import price
    0  00:00    0.20       0.30
    1  00:15   -0.15      -0.05    (negative: importing earns; below export 0.08: nothing shared)
    2  00:30    0.10       0.20
    3  00:45    0.40       0.50
    01:00-24:00 0.25       0.35    (no energy moves then)

Energy each grid meter measured, Wh, and what follows:

    0: a imports 1000, b exports 500. Shared M = 500 at MMR (0.30 + 0.08) / 2 = 0.19:
       a pays b 0.5 kWh x 0.19 = 0.095; a pays the grid 0.5 kWh x 0.30 = 0.150.
    1: a imports 400, b exports 600. Import price -0.05 < export 0.08: nothing is shared.
       a pays the grid 0.4 x -0.05 = -0.020 (is paid 0.02); b is paid 0.6 x 0.08 = 0.048.
    2: a imports 200, b imports 300, nobody exports:
       a pays 0.2 x 0.20 = 0.040, b 0.3 x 0.20 = 0.060.
    3: a exports 1000, b imports 2000. M = 1000 at MMR (0.50 + 0.08) / 2 = 0.29:
       b pays a 1.0 x 0.29 = 0.290; b pays the grid 1.0 x 0.50 = 0.500.

Per home and ledger leg (energy in Wh, money in EUR, + = the home is paid):

    a: import-neighbours 500, -0.095; import-grid 500 + 400 + 200 = 1100,
       -(0.150 - 0.020 + 0.040) = -0.170; export-neighbours 1000, +0.290.   Balance +0.025.
    b: export-neighbours 500, +0.095; export-grid 600, +0.048;
       import-grid 300 + 1000 = 1300, -(0.060 + 0.500) = -0.560;
       import-neighbours 1000, -0.290.                                      Balance -0.707.

The grid: imports 500 x 0.30 + 400 x -0.05 + 500 x 0.20 + 1000 x 0.50 = 0.730, exports
600 x 0.08 = 0.048: the community owes it 0.682 = 0.707 - 0.025.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hub.cli.main import main
from hub.config import ConfigError
from hub.settlement.engine import MissingPriceError, settle
from hub.settlement.ledger import GRID, Ledger, member_account
from hub.settlement.price_store import import_prices
from hub.settlement.prices import PriceInterval, PriceSeries
from hub.settlement.scheme import Scheme, parse_scheme
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.payloads import Reading
from protocol.quantities import Role
from tests.test_settlement_ledger import NOW, insert

COOP = "coop-imported-prices"
DAY = date(2026, 6, 2)
Q = 15 * 60_000
H = 4 * Q

# (import Wh, export Wh) of home-a and home-b in the four worked quarters.
FLOWS = (
    {"home-a": (1000, 0), "home-b": (0, 500)},
    {"home-a": (400, 0), "home-b": (0, 600)},
    {"home-a": (200, 0), "home-b": (300, 0)},
    {"home-a": (0, 1000), "home-b": (2000, 0)},
)
STORED = ("0.20", "-0.15", "0.10", "0.40")


def t0() -> int:
    return int(datetime(2026, 6, 2, tzinfo=UTC).timestamp() * 1000)


def scheme_data(**import_tariff: Any) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "currency": "EUR",
        "mechanism": "mmr",
        "import_tariff": import_tariff or {"prices": "imported", "network_per_kwh": "0.10"},
        "export_tariff": {"price_per_kwh": "0.08"},
    }


def scheme() -> Scheme:
    return parse_scheme(scheme_data())


def readings() -> dict[str, list[Reading]]:
    out: dict[str, list[Reading]] = {}
    for n, home in enumerate(("home-a", "home-b")):
        imp = exp = 10_000 * (n + 1)
        rs = []
        for seq, t in enumerate(range(t0(), t0() + 24 * H + 1, Q), start=1):
            k = (t - t0()) // Q
            if 1 <= k <= len(FLOWS):
                imp += FLOWS[k - 1][home][0]
                exp += FLOWS[k - 1][home][1]
            q: dict[str, float | str] = {"energy_import_wh": imp, "energy_export_wh": exp}
            rs.append(Reading("grid-meter", seq, t, Role.GRID, "g1", q))
        out[home] = rs
    return out


def prices(*, hole_hour: int | None = None) -> PriceSeries:
    ivs = [
        PriceInterval(t0() + i * Q, t0() + (i + 1) * Q, Decimal(p)) for i, p in enumerate(STORED)
    ]
    ivs += [
        PriceInterval(t0() + h * H, t0() + (h + 1) * H, Decimal("0.25"))
        for h in range(1, 24)
        if h != hole_hour
    ]
    return PriceSeries("EUR", tuple(ivs))


@pytest.fixture
def store_coop() -> str:
    return COOP


def legs(store: Store, account: str) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for _, p in Ledger(store).period_postings("2026-06", account):
        e, m = out.get(p.leg, (0, 0))
        out[p.leg] = (e + p.energy_mwh, m + p.amount_micro)
    return out


def test_a_day_on_imported_prices_worked_by_hand(store: Store) -> None:
    insert(store, readings())
    import_prices(store, prices(), "test", NOW)
    settle(store, scheme(), [DAY], NOW)
    a, b = legs(store, member_account("home-a")), legs(store, member_account("home-b"))
    assert a == {
        "import-neighbours": (500_000, -95_000),
        "import-grid": (1_100_000, -170_000),
        "export-neighbours": (-1_000_000, 290_000),
    }
    assert b == {
        "export-neighbours": (-500_000, 95_000),
        "export-grid": (-600_000, 48_000),
        "import-grid": (1_300_000, -560_000),
        "import-neighbours": (1_000_000, -290_000),
    }
    assert sum(m for _, m in a.values()) == 25_000
    assert sum(m for _, m in b.values()) == -707_000
    grid = legs(store, GRID)
    assert sum(m for _, m in grid.values()) == 730_000 - 48_000
    rows = (
        store.reader()
        .execute(
            "SELECT import_price, export_price, matched_mwh FROM settlement_intervals "
            "WHERE start_ms < ? ORDER BY start_ms",
            (t0() + H,),
        )
        .fetchall()
    )
    assert [(Decimal(i), Decimal(e), m) for i, e, m in rows] == [
        (Decimal("0.30"), Decimal("0.08"), 500_000),
        (Decimal("-0.05"), Decimal("0.08"), 0),
        (Decimal("0.20"), Decimal("0.08"), 0),
        (Decimal("0.50"), Decimal("0.08"), 1_000_000),
    ]


def test_a_missing_hour_stops_settle_before_anything_is_written(store: Store) -> None:
    insert(store, readings())
    import_prices(store, prices(hole_hour=5), "test", NOW)
    with pytest.raises(MissingPriceError, match="2026-06-02T05:00Z"):
        settle(store, scheme(), [DAY], NOW)
    import_prices(store, prices(), "test", NOW)  # 2 June whole now; 3 June has no prices
    with pytest.raises(MissingPriceError, match="2026-06-03T00:00Z"):
        settle(store, scheme(), [DAY, date(2026, 6, 3)], NOW)
    assert Ledger(store).period_postings("2026-06", GRID) == []


def test_no_prices_at_all_is_an_error_not_a_zero(store: Store) -> None:
    insert(store, readings())
    with pytest.raises(MissingPriceError, match="2026-06-02T00:00Z"):
        settle(store, scheme(), [DAY], NOW)


def test_cli_names_the_missing_interval(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    with Store.open(db, COOP, clock=ManualClock(NOW)) as store:
        insert(store, readings())
        import_prices(store, prices(hole_hour=7), "test", NOW)
    toml = tmp_path / "settlement.toml"
    toml.write_text(
        'timezone = "UTC"\ncurrency = "EUR"\nmechanism = "mmr"\n'
        '[import_tariff]\nprices = "imported"\nnetwork_per_kwh = "0.10"\n'
        '[export_tariff]\nprice_per_kwh = "0.08"\n'
    )
    args = ["settle", "--db", str(db), "--scheme", str(toml), "--from", "2026-06-02"]
    result = CliRunner().invoke(
        main, [*args, "--to", "2026-06-02"], obj={"clock": ManualClock(NOW)}
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "2026-06-02T07:00Z" in lines[0] and "prices import" in lines[0]
    assert "Traceback" not in result.output
    with Store.open(db, COOP, clock=ManualClock(NOW)) as store:
        import_prices(store, prices(), "test", NOW)
    result = CliRunner().invoke(
        main, [*args, "--to", "2026-06-02"], obj={"clock": ManualClock(NOW)}
    )
    assert result.exit_code == 0, result.output
    assert "imported grid prices per interval plus 0.10 EUR/kWh" in result.output


def test_scheme_imported_prices_round_trip_and_fingerprint() -> None:
    sch = scheme()
    assert sch.imported_prices and sch.import_tariff.network_per_kwh == Decimal("0.10")
    assert Scheme.from_json(sch.to_json()) == sch
    with pytest.raises(ValueError, match="stored grid prices"):
        sch.prices_at(t0())
    same = parse_scheme(scheme_data(prices="imported", network_per_kwh="0.1"))
    assert same.fingerprint == sch.fingerprint
    other = parse_scheme(scheme_data(prices="imported"))
    assert other.fingerprint != sch.fingerprint and other.import_tariff.network_per_kwh == 0
    # A scheme without the option keeps the fingerprint it had before imported prices existed.
    flat = parse_scheme(scheme_data(price_per_kwh="0.30"))
    assert flat.fingerprint == "65ee3aab953fe54c70c304debe3779e0eb7e8f7d47d4447fe644e12c44c3948f"
    assert not flat.imported_prices


@pytest.mark.parametrize(
    ("tariff", "message"),
    [
        ({"prices": "imported", "price_per_kwh": "0.30"}, "import_tariff.price_per_kwh cannot"),
        ({"prices": "file"}, "import_tariff.prices must be one of 'imported'"),
        ({"prices": "imported", "network_per_kwh": "-1"}, "import_tariff.network_per_kwh"),
        ({"prices": "imported", "surcharge": "1"}, "surcharge"),
    ],
)
def test_scheme_mistakes_name_the_key(tariff: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scheme(scheme_data(**tariff))
