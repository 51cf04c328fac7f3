"""Settlement against figures worked out by hand: three members, four quarter-hours, SDR and MMR.

Nothing here is computed by the settlement code: every expected figure is the arithmetic in the
comments, from the scheme (flat tariffs: the grid sells at λ_b = 0.30 EUR/kWh and buys at
λ_s = 0.10 EUR/kWh) and the meter readings below. The readings fall on quarter-hour boundaries, so
no interpolation is involved.

The four quarter-hours of 2 June 2026 (UTC), energy each grid meter measured, in Wh:

    interval        home-a          home-b          home-c          D (imports)  S (exports)
    0  00:00        import 1000     export 1000     import 1000     2000         1000
    1  00:15        export 600      export 1400     import 500      500          2000
    2  00:30        import 1000     import 2000     export 750      3000         750
    3  00:45        import 100.001  import 200.002  export 100.001  300.003      100.001

Every other quarter-hour of June the counters stand still (zero energy).

Matched energy M = min(S, D) is shared pro rata (largest remainder in mWh, ties to the earlier
home):

    0: M = 1000; importers a, c get 1000·1000/2000 = 500 each; b sends all 1000.
    1: M = 500; c gets 500; exporters a: 500·600/2000 = 150, b: 500·1400/2000 = 350.
    2: M = 750; importers a: 750·1000/3000 = 250, b: 750·2000/3000 = 500; c sends 750.
    3: M = 100.001 Wh = 100001 mWh; importers a: 100001·100001/300003 = 33333.67 mWh,
       b: 100001·200002/300003 = 66667.33 mWh; floors 33333 + 66667 = 100000, the one mWh
       left goes to the larger remainder (a: .67): a 33334 mWh, b 66667 mWh; c sends 100001.

Internal prices per kWh:

    SDR (S/D = SDR; P_s = λ_b·λ_s / ((λ_b − λ_s)·SDR + λ_s), and λ_s when S >= D):
        0: SDR = 0.5: 0.03 / (0.2·0.5 + 0.1) = 0.03 / 0.2 = 0.15
        1: S > D: 0.10
        2: SDR = 0.25: 0.03 / (0.2·0.25 + 0.1) = 0.03 / 0.15 = 0.20
        3: SDR = 100001/300003 = 1/3: 0.03 / (0.2/3 + 0.1) = 0.03 / (1/6) = 0.18
    MMR: (0.30 + 0.10) / 2 = 0.20 in every interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hub.settlement.engine import day_range, settle
from hub.settlement.ledger import GRID, ROUNDING, Ledger
from hub.settlement.scheme import Scheme, parse_scheme
from hub.settlement.statements import build_statement
from hub.storage.store import Store
from protocol.payloads import Reading
from protocol.quantities import Role
from tests.test_settlement_ledger import NOW, insert

COOP = "coop-handworked"
HOMES = ("home-a", "home-b", "home-c")
WORKED_DAY = date(2026, 6, 2)
QUARTER_MS = 15 * 60_000

# (import Wh, export Wh) per home, per worked interval (00:00, 00:15, 00:30, 00:45 UTC).
FLOWS: tuple[dict[str, tuple[str, str]], ...] = (
    {"home-a": ("1000", "0"), "home-b": ("0", "1000"), "home-c": ("1000", "0")},
    {"home-a": ("0", "600"), "home-b": ("0", "1400"), "home-c": ("500", "0")},
    {"home-a": ("1000", "0"), "home-b": ("2000", "0"), "home-c": ("0", "750")},
    {"home-a": ("100.001", "0"), "home-b": ("200.002", "0"), "home-c": ("0", "100.001")},
)


def scheme_data(mechanism: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "timezone": "UTC",
        "currency": "EUR",
        "minor_unit": 2,
        "mechanism": mechanism,
        "import_tariff": {"price_per_kwh": "0.30"},
        "export_tariff": {"price_per_kwh": "0.10"},
    }
    data.update(changes)
    return data


def worked_scheme(mechanism: str, **changes: Any) -> Scheme:
    return parse_scheme(scheme_data(mechanism, **changes))


def worked_readings(
    first: date = date(2026, 6, 1), last: date = date(2026, 6, 30)
) -> dict[str, list[Reading]]:
    """A grid-meter reading at every quarter-hour boundary from ``first`` 00:00 to the end of
    ``last`` (UTC), with the counters moving only in the four worked intervals of 2 June."""
    sch = worked_scheme("sdr")
    start, end = sch.day_start_ms(first), sch.day_start_ms(last + timedelta(days=1))
    worked_start = sch.day_start_ms(WORKED_DAY)
    out: dict[str, list[Reading]] = {}
    for n_home, home in enumerate(HOMES):
        imp = exp = Decimal(10_000 * (n_home + 1))  # lifetime counters, Wh
        readings = []
        for seq, t in enumerate(range(start, end + 1, QUARTER_MS), start=1):
            k = (t - worked_start) // QUARTER_MS  # the worked interval that ended at t, if any
            if 1 <= k <= len(FLOWS) and (t - worked_start) % QUARTER_MS == 0:
                i, e = FLOWS[k - 1][home]
                imp += Decimal(i)
                exp += Decimal(e)
            quantities: dict[str, float | str] = {
                "energy_import_wh": float(imp),
                "energy_export_wh": float(exp),
            }
            readings.append(Reading("grid-meter", seq, t, Role.GRID, "g1", quantities))
        out[home] = readings
    return out


@pytest.fixture
def store_coop() -> str:
    return COOP


@pytest.fixture
def store(store: Store) -> Store:
    insert(store, worked_readings())
    return store


# -- the grid account is the grid bill ---------------------------------------------------------

# Energy from the grid, D − M per interval: 1000 + 0 + 2250 + 200.002 = 3450.002 Wh, at 0.30:
#   3450.002 Wh × 0.30 EUR/kWh = 1.0350006 EUR = 1,035,000.6 micro-EUR, posted half to even:
#   1,035,001 (the grid's postings round half to even: .6 goes up).
# Energy to the grid, S − M: 0 + 1500 + 0 + 0 = 1500 Wh, at 0.10: 0.15 EUR = 150,000 micro.
# The grid account receives the community's exports and delivers its imports, so its energy is
# +1,500,000 mWh on export-grid and −3,450,002 mWh on import-grid; money the other way round.
# The grid's bill does not depend on the mechanism: only who pays which neighbour does.
GRID_IMPORT_MWH = 3_450_002
GRID_IMPORT_MICRO = 1_035_001
GRID_EXPORT_MWH = 1_500_000
GRID_EXPORT_MICRO = 150_000


@pytest.mark.parametrize("mechanism", ["sdr", "mmr"])
def test_grid_postings_are_the_grid_bill(store: Store, mechanism: str) -> None:
    settle(store, worked_scheme(mechanism), [WORKED_DAY], NOW)
    postings = {
        p.leg: (p.energy_mwh, p.amount_micro)
        for _, p in Ledger(store).period_postings("2026-06", GRID)
    }
    assert postings == {
        "import-grid": (-GRID_IMPORT_MWH, GRID_IMPORT_MICRO),
        "export-grid": (GRID_EXPORT_MWH, -GRID_EXPORT_MICRO),
    }


# -- rounding: bounded, and never against a member ---------------------------------------------

# Each member's exact balance (what it is owed, negative: what it owes), in micro-EUR, from the
# per-member sums worked out in EXPECTED below:
#   SDR a: −(0.13100012 + 0.3950001 − 0.015 − 0.045) EUR = −0.46600022 EUR = −466,000.22
#   SDR b: −(0.11200006 + 0.4900005 − 0.185 − 0.105) = −0.31200056 EUR = −312,000.56
#   SDR c: −(0.125 + 0.15 − 0.16800018 − 0) = −0.10699982 EUR = −106,999.82
#   MMR a: −(0.1566668 + 0.3950001 − 0.03 − 0.045) = −0.4766669 EUR = −476,666.9
#   MMR b: −(0.1133334 + 0.4900005 − 0.27 − 0.105) = −0.2283339 EUR = −228,333.9
#   MMR c: −(0.20 + 0.15 − 0.1700002 − 0) = −0.1799998 EUR = −179,999.8
EXACT_BALANCE_MICRO: dict[str, dict[str, Decimal]] = {
    "sdr": {
        "home-a": Decimal("-466000.22"),
        "home-b": Decimal("-312000.56"),
        "home-c": Decimal("-106999.82"),
    },
    "mmr": {
        "home-a": Decimal("-476666.9"),
        "home-b": Decimal("-228333.9"),
        "home-c": Decimal("-179999.8"),
    },
}
# The grid's exact balance: 1,035,000.6 − 150,000 = 885,000.6 micro.
GRID_EXACT_MICRO = Decimal("885000.6")

# The bound, from the ledger's rounding rule (hub/settlement/ledger.py): a member's day posting
# per leg is rounded up on the member's balance to whole micro-units, so it gains less than one
# micro-unit per posting and never loses; it has at most four postings a day (one per leg), so
# before closing 0 <= ledger − exact < 4 micro-units per settled day. Closing rounds the
# month's balance up again, to whole cents (10,000 micro-EUR): 0 <= ledger − exact < 4·days +
# 10,000. The grid's two postings a day round half to even (at most 0.5 micro each), and its
# month's balance half to even at close (at most 5,000). The rounding account holds exactly the
# negative of all these differences.
MICRO_PER_POSTING = 1
POSTINGS_PER_MEMBER_DAY = 4
MICRO_PER_CENT = 10_000


@pytest.mark.parametrize("mechanism", ["sdr", "mmr"])
def test_rounding_is_bounded_per_member_and_never_against_one(store: Store, mechanism: str) -> None:
    sch = worked_scheme(mechanism)
    june = day_range(date(2026, 6, 1), date(2026, 6, 30))
    settle(store, sch, june, NOW)
    ledger = Ledger(store)
    exact = EXACT_BALANCE_MICRO[mechanism]

    def differences() -> dict[str, Decimal]:
        balances = ledger.balances("2026-06")
        out = {home: balances[f"member:{home}"][1] - exact[home] for home in HOMES}
        out[GRID] = balances[GRID][1] - GRID_EXACT_MICRO
        out[ROUNDING] = Decimal(balances[ROUNDING][1])
        return out

    before = differences()
    # Only 2 June moved energy, and every member has at most four postings on it.
    for home in HOMES:
        assert 0 <= before[home] < POSTINGS_PER_MEMBER_DAY * MICRO_PER_POSTING, home
    assert abs(before[GRID]) <= Decimal("0.5") * 2
    assert before[ROUNDING] == -sum(before[a] for a in (*HOMES, GRID))
    # By hand, SDR: 0.22 + 0.56 + 0.82 (members) + 0.4 (grid) = 2 micro-EUR the cooperative gave.
    # MMR: 0.9 + 0.9 + 0.8 + 0.4 = 3.
    assert before[ROUNDING] == {"sdr": -2, "mmr": -3}[mechanism]

    ledger.close_period(sch, "2026-06", NOW + 1)
    after = differences()
    for home in HOMES:
        assert 0 <= after[home] < POSTINGS_PER_MEMBER_DAY * len(june) + MICRO_PER_CENT, home
    assert abs(after[GRID]) <= Decimal("0.5") * 2 * len(june) + MICRO_PER_CENT // 2
    assert after[ROUNDING] == -sum(after[a] for a in (*HOMES, GRID))
    # By hand, SDR: members' balances −466,000 −312,000 −106,999 rise to whole cents −460,000,
    # −310,000, −100,000 (6,000 + 2,000 + 6,999 = 14,999 micro); the grid's 885,001 rounds half
    # to even to 890,000 (4,999). The cooperative gives 14,999 + 4,999 + the 2 of the day = 20,000.
    # MMR: −476,666 −228,333 −179,999 -> −470,000, −220,000, −170,000 (6,666 + 8,333 + 9,999 =
    # 24,998), grid 4,999, plus the 3 of the day: 30,000.
    assert after[ROUNDING] == {"sdr": -20_000, "mmr": -30_000}[mechanism]


# -- a statement worked by hand ----------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    energy_wh: int
    amount_minor: int


@dataclass(frozen=True)
class Expected:
    lines: dict[str, Line]
    total_minor: int
    grid_only_minor: int
    saving_minor: int


# Per member and leg, sums over the four intervals (energy Wh; money EUR, exact), the ledger's
# micro-EUR posting (rounded up on the member's balance: a payment of 0.13100012 EUR posts as
# −131,000; a receipt of 0.16800018 as 168,001), and the statement line: energy rounded half to
# even to whole Wh, amount = the posting in cents, rounded half to even, as paid (+) or earned (−).
# The total is the balance rounded in the member's favour to whole cents; the difference from
# the lines' sum is a rounding line. The grid-only bill prices the member's own import at 0.30
# and export at 0.10, rounded down to whole cents; the saving is grid-only minus the total.
#
# SDR, home-a:
#   from neighbours 500 + 0 + 250 + 33.334 = 783.334 Wh -> 783;
#     500·0.15 + 250·0.20 + 33.334·0.18 = 0.075 + 0.05 + 0.00600012 = 0.13100012 EUR
#     -> −131,000 micro -> 13.1 cents -> 13
#   from the grid 500 + 0 + 750 + 66.667 = 1316.667 Wh -> 1317;
#     1316.667 × 0.30 = 0.3950001 EUR -> −395,000 -> 39.5 cents -> 40 (half to even)
#   to neighbours −150 Wh (interval 1): 150 × 0.10 = 0.015 -> 15,000 -> 1.5 -> −2
#   to the grid −450 Wh: 450 × 0.10 = 0.045 -> 45,000 -> 4.5 -> −4 (half to even)
#   balance −131,000 − 395,000 + 15,000 + 45,000 = −466,000 micro = 46.6 cents owed -> total 46;
#   lines 13 + 40 − 2 − 4 = 47, so rounding −1.
#   grid-only: (1000 + 1000 + 100.001) × 0.30 − 600 × 0.10 = 0.6300003 − 0.06 = 0.5700003 -> 57;
#   saving 57 − 46 = 11.
# SDR, home-b:
#   from neighbours 0 + 0 + 500 + 66.667 = 566.667 Wh -> 567;
#     500 × 0.20 + 66.667 × 0.18 = 0.10 + 0.01200006 = 0.11200006 -> −112,000 -> 11.2 -> 11
#   from the grid 1500 + 133.335 = 1633.335 Wh -> 1633; × 0.30 = 0.4900005 -> −490,000 -> 49
#   to neighbours −(1000 + 350) = −1350 Wh: 1000 × 0.15 + 350 × 0.10 = 0.185 -> 185,000 -> −18
#     (18.5, half to even)
#   to the grid −1050 Wh (interval 1: 1400 − 350): 0.105 -> 105,000 -> 10.5 -> −10
#   balance −112,000 − 490,000 + 185,000 + 105,000 = −312,000 -> total 31; lines 11 + 49 − 18 − 10
#   = 32: rounding −1.
#   grid-only: 2200.002 × 0.30 − 2400 × 0.10 = 0.6600006 − 0.24 = 0.4200006 -> 42; saving 11.
# SDR, home-c:
#   from neighbours 500 + 500 = 1000 Wh: 500 × 0.15 + 500 × 0.10 = 0.125 -> −125,000 -> 12.5
#     -> 12 (half to even)
#   from the grid 500 Wh (interval 0): 0.15 -> −150,000 -> 15
#   to neighbours −(750 + 100.001) = −850.001 Wh -> −850: 750 × 0.20 + 100.001 × 0.18 =
#     0.15 + 0.01800018 = 0.16800018 -> 168,001 (up: the member's favour) -> 16.8001 -> −17
#   to the grid: nothing, 0.
#   balance −125,000 − 150,000 + 168,001 = −106,999 = 10.6999 cents owed -> total 10;
#   lines 12 + 15 − 17 + 0 = 10: no rounding line.
#   grid-only: 1500 × 0.30 − 850.001 × 0.10 = 0.45 − 0.0850001 = 0.3649999 -> 36; saving 26.
# MMR (0.20 everywhere), home-a:
#   from neighbours 783.334 Wh × 0.20 = 0.1566668 -> −156,666 -> 15.6666 -> 16
#   from the grid as SDR: 1317 Wh, 40
#   to neighbours 150 × 0.20 = 0.03 -> 30,000 -> −3; to the grid as SDR: −450 Wh, −4
#   balance −156,666 − 395,000 + 30,000 + 45,000 = −476,666 -> 47.6666 -> total 47;
#   lines 16 + 40 − 3 − 4 = 49: rounding −2. grid-only 57 as SDR; saving 57 − 47 = 10.
# MMR, home-b:
#   from neighbours 566.667 × 0.20 = 0.1133334 -> −113,333 -> 11.3333 -> 11; from the grid 49
#   to neighbours 1350 × 0.20 = 0.27 -> 270,000 -> −27; to the grid −10
#   balance −113,333 − 490,000 + 270,000 + 105,000 = −228,333 -> total 22; lines 11 + 49 − 27
#   − 10 = 23: rounding −1. grid-only 42; saving 20.
# MMR, home-c:
#   from neighbours 1000 × 0.20 = 0.20 -> −200,000 -> 20; from the grid 15
#   to neighbours 850.001 × 0.20 = 0.1700002 -> 170,001 -> −17; to the grid 0
#   balance −200,000 − 150,000 + 170,001 = −179,999 -> total 17; lines 20 + 15 − 17 = 18:
#   rounding −1. grid-only 36; saving 19.
EXPECTED: dict[str, dict[str, Expected]] = {
    "sdr": {
        "home-a": Expected(
            {
                "import-neighbours": Line(783, 13),
                "import-grid": Line(1317, 40),
                "export-neighbours": Line(-150, -2),
                "export-grid": Line(-450, -4),
                "rounding": Line(0, -1),
            },
            46,
            57,
            11,
        ),
        "home-b": Expected(
            {
                "import-neighbours": Line(567, 11),
                "import-grid": Line(1633, 49),
                "export-neighbours": Line(-1350, -18),
                "export-grid": Line(-1050, -10),
                "rounding": Line(0, -1),
            },
            31,
            42,
            11,
        ),
        "home-c": Expected(
            {
                "import-neighbours": Line(1000, 12),
                "import-grid": Line(500, 15),
                "export-neighbours": Line(-850, -17),
                "export-grid": Line(0, 0),
            },
            10,
            36,
            26,
        ),
    },
    "mmr": {
        "home-a": Expected(
            {
                "import-neighbours": Line(783, 16),
                "import-grid": Line(1317, 40),
                "export-neighbours": Line(-150, -3),
                "export-grid": Line(-450, -4),
                "rounding": Line(0, -2),
            },
            47,
            57,
            10,
        ),
        "home-b": Expected(
            {
                "import-neighbours": Line(567, 11),
                "import-grid": Line(1633, 49),
                "export-neighbours": Line(-1350, -27),
                "export-grid": Line(-1050, -10),
                "rounding": Line(0, -1),
            },
            22,
            42,
            20,
        ),
        "home-c": Expected(
            {
                "import-neighbours": Line(1000, 20),
                "import-grid": Line(500, 15),
                "export-neighbours": Line(-850, -17),
                "export-grid": Line(0, 0),
                "rounding": Line(0, -1),
            },
            17,
            36,
            19,
        ),
    },
}


@pytest.mark.parametrize("mechanism", ["sdr", "mmr"])
@pytest.mark.parametrize("home", HOMES)
def test_hand_worked_statement(store: Store, mechanism: str, home: str) -> None:
    settle(store, worked_scheme(mechanism), [WORKED_DAY], NOW)
    s = build_statement(store, home, "2026-06", NOW)
    want = EXPECTED[mechanism][home]
    assert {line.item: Line(line.energy_wh, line.amount_minor) for line in s.lines} == want.lines
    assert (s.total_minor, s.grid_only_minor, s.saving_minor) == (
        want.total_minor,
        want.grid_only_minor,
        want.saving_minor,
    )
    assert s.mechanism == mechanism and s.intervals == 96 and not s.final
