"""hub.settlement.pricing: worked examples computed by hand, and the invariants under hypothesis."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.settlement.ledger import GRID, MEMBER_PREFIX, MICRO_PER_UNIT, ROUNDING, day_postings
from hub.settlement.pricing import (
    MemberFlow,
    allocate,
    mmr_price,
    sdr_price,
    settle_interval,
)
from hub.settlement.scheme import Mechanism

KWH = 1_000_000  # mWh
D = Decimal


def by_home(result: object) -> dict[str, object]:
    return {m.home: m for m in result.members}  # type: ignore[attr-defined]


# -- worked examples ---------------------------------------------------------------------------
# Grid import λ_b = 0.30, export λ_s = 0.10 per kWh. "a" exports 2 kWh; "b" imports 3 kWh and
# "c" 1 kWh. S = 2, D = 4, M = 2: b gets 3·2/4 = 1.5 kWh from neighbours, c gets 0.5 kWh.


def test_sdr_shortage_by_hand() -> None:
    # SDR = 2/4 = 0.5. P_s = 0.30·0.10 / (0.20·0.5 + 0.10) = 0.03 / 0.2 = 0.15;
    # P_b = 0.15·0.5 + 0.30·0.5 = 0.225 per kWh of import.
    r = settle_interval(
        [MemberFlow("a", 0, 2 * KWH), MemberFlow("b", 3 * KWH, 0), MemberFlow("c", KWH, 0)],
        D("0.30"),
        D("0.10"),
        Mechanism.SDR,
    )
    assert (r.supply_mwh, r.demand_mwh, r.matched_mwh) == (2 * KWH, 4 * KWH, 2 * KWH)
    assert r.internal_price == D("0.15")
    m = by_home(r)
    a, b, c = m["a"], m["b"], m["c"]
    assert a.received_neighbours == D("0.30") and a.received_grid == 0  # type: ignore[attr-defined]
    assert a.grid_only == D("-0.20")  # type: ignore[attr-defined]
    assert b.import_neighbours_mwh == 1_500_000  # type: ignore[attr-defined]
    assert b.owed == D("0.675") == 3 * D("0.225")  # type: ignore[attr-defined]
    assert b.grid_only == D("0.90")  # type: ignore[attr-defined]
    assert c.owed == D("0.225")  # type: ignore[attr-defined]
    assert r.grid_owed == D("0.60")  # 2 kWh from the grid at 0.30
    assert sum(x.owed for x in r.members) == r.grid_owed


def test_sdr_surplus_by_hand() -> None:
    # S = 3 > D = 1: SDR > 1, so everything matched trades at λ_s = 0.10.
    r = settle_interval(
        [MemberFlow("a", 0, 3 * KWH), MemberFlow("b", KWH, 0)], D("0.30"), D("0.10"), Mechanism.SDR
    )
    assert r.internal_price == D("0.10")
    m = by_home(r)
    assert m["b"].owed == D("0.10")  # type: ignore[attr-defined]
    assert m["a"].owed == D("-0.30") == m["a"].grid_only  # type: ignore[attr-defined]
    assert r.grid_export_mwh == 2 * KWH


def test_sdr_price_with_a_repeating_ratio() -> None:
    # λ_b 0.30, λ_s 0.08, SDR = 1/3: 0.024 / (0.22/3 + 0.08) = 0.072 / 0.46 = 0.15652173913…
    assert sdr_price(KWH, 3 * KWH, D("0.30"), D("0.08")) == D("0.1565217391")
    assert sdr_price(0, KWH, D("0.30"), D("0.08")) == D("0.30")  # no supply: the import price
    assert sdr_price(KWH, KWH, D("0.30"), D("0.08")) == D("0.08")  # balance: the export price
    assert sdr_price(KWH, 0, D("0.30"), D("0.08")) == D("0.08")  # nothing to buy
    assert sdr_price(KWH, 2 * KWH, D("0.30"), D("0")) == 0  # free export tariff


def test_mmr_by_hand() -> None:
    # p = (0.30 + 0.10) / 2 = 0.20. Shortage: a gets 2·0.20 = 0.40; b pays 1.5·0.20 + 1.5·0.30
    # = 0.75, i.e. (0.20·2 + 0.30·2)/4 = 0.25 per kWh; c pays 0.5·0.20 + 0.5·0.30 = 0.25.
    assert mmr_price(D("0.30"), D("0.10")) == D("0.20")
    r = settle_interval(
        [MemberFlow("a", 0, 2 * KWH), MemberFlow("b", 3 * KWH, 0), MemberFlow("c", KWH, 0)],
        D("0.30"),
        D("0.10"),
        Mechanism.MMR,
    )
    m = by_home(r)
    assert [m[h].owed for h in "abc"] == [D("-0.40"), D("0.75"), D("0.25")]  # type: ignore[attr-defined]
    # Surplus: a exports 3, b imports 1. b pays 0.20; a gets 1·0.20 + 2·0.10 = 0.40.
    r = settle_interval(
        [MemberFlow("a", 0, 3 * KWH), MemberFlow("b", KWH, 0)], D("0.30"), D("0.10"), Mechanism.MMR
    )
    m = by_home(r)
    assert (m["a"].owed, m["b"].owed) == (D("-0.40"), D("0.20"))  # type: ignore[attr-defined]


def test_bill_sharing_by_hand() -> None:
    # The community's grid bill, 2 kWh · 0.30 = 0.60, is shared by import: b 3/4 = 0.45,
    # c 1/4 = 0.15; the exporter's 2 kWh all went to neighbours, so it earns nothing.
    r = settle_interval(
        [MemberFlow("a", 0, 2 * KWH), MemberFlow("b", 3 * KWH, 0), MemberFlow("c", KWH, 0)],
        D("0.30"),
        D("0.10"),
        Mechanism.BILL_SHARING,
    )
    m = by_home(r)
    assert [m[h].owed for h in "abc"] == [0, D("0.45"), D("0.15")]  # type: ignore[attr-defined]
    # In surplus the grid revenue λ_s·(S − D) is shared by export: a 3 kWh, d 1 kWh, b imports 2.
    r = settle_interval(
        [MemberFlow("a", 0, 3 * KWH), MemberFlow("d", 0, KWH), MemberFlow("b", 2 * KWH, 0)],
        D("0.30"),
        D("0.10"),
        Mechanism.BILL_SHARING,
    )
    m = by_home(r)
    assert [m[h].owed for h in "adb"] == [D("-0.15"), D("-0.05"), 0]  # type: ignore[attr-defined]


def test_a_meter_that_imports_and_exports_in_one_interval() -> None:
    # a: imports 1, exports 1; b imports 1. S = 1, D = 2, M = 1; each importer gets 0.5 from
    # neighbours; a's export is all matched. SDR 0.5 with λ_b 0.30, λ_s 0.10 gives p = 0.15.
    r = settle_interval(
        [MemberFlow("a", KWH, KWH), MemberFlow("b", KWH, 0)], D("0.30"), D("0.10"), Mechanism.SDR
    )
    a = by_home(r)["a"]
    assert (a.import_neighbours_mwh, a.export_neighbours_mwh) == (500_000, KWH)  # type: ignore[attr-defined]
    # a pays 0.5·0.15 + 0.5·0.30 = 0.225 and gets 1·0.15: owes 0.075, against 0.30 − 0.10 = 0.20.
    assert a.owed == D("0.075")  # type: ignore[attr-defined]


def test_allocate_largest_remainder() -> None:
    assert allocate(5, [3, 3, 3]) == [2, 2, 1]  # ties go to the earlier member
    assert allocate(2, [3, 1]) == [2, 0]  # 1.5 and 0.5: the larger remainder, then the earlier
    assert allocate(7, [0, 0, 7]) == [0, 0, 7]
    assert allocate(0, [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        allocate(5, [1, 1])


def test_settle_refuses_bad_prices() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        settle_interval([MemberFlow("a", 1, 0)], D("0.10"), D("0.20"))
    with pytest.raises(ValueError, match="twice"):
        settle_interval([MemberFlow("a", 1, 0), MemberFlow("a", 0, 1)], D("0.3"), D("0.1"))


# -- invariants ---------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False)
energy = st.integers(min_value=0, max_value=5 * KWH)
flows = st.lists(st.tuples(energy, energy), min_size=1, max_size=12).map(
    lambda xs: [MemberFlow(f"home-{i:02d}", imp, exp) for i, (imp, exp) in enumerate(xs)]
)
# Real meters mostly either import or export in a quarter-hour; mix in pure ones.
pure_flows = st.lists(
    st.one_of(energy.map(lambda e: (e, 0)), energy.map(lambda e: (0, e))), min_size=1, max_size=12
).map(lambda xs: [MemberFlow(f"home-{i:02d}", imp, exp) for i, (imp, exp) in enumerate(xs)])


@settings(max_examples=300, deadline=None)
@given(st.one_of(flows, pure_flows), prices, prices, st.sampled_from(list(Mechanism)))
def test_invariants_every_mechanism(
    fs: list[MemberFlow], p1: Decimal, p2: Decimal, mechanism: Mechanism
) -> None:
    import_price, export_price = max(p1, p2), min(p1, p2)
    r = settle_interval(fs, import_price, export_price, mechanism)
    # Matched energy never exceeds supply or demand, and is split exactly on both sides.
    assert r.matched_mwh <= r.supply_mwh and r.matched_mwh <= r.demand_mwh
    assert sum(m.import_neighbours_mwh for m in r.members) == r.matched_mwh
    assert sum(m.export_neighbours_mwh for m in r.members) == r.matched_mwh
    for m in r.members:
        assert 0 <= m.import_neighbours_mwh <= m.import_mwh
        assert 0 <= m.export_neighbours_mwh <= m.export_mwh
    # Internal payments equal internal receipts; the rest is exactly the grid's bill.
    assert sum(m.paid_neighbours for m in r.members) == sum(
        m.received_neighbours for m in r.members
    )
    assert sum(m.owed for m in r.members) == r.grid_owed
    # The day's ledger postings balance in energy and money, and rounding never costs a member.
    postings = day_postings([r])
    assert sum(p.energy_mwh for p in postings) == 0
    assert sum(p.amount_micro for p in postings) == 0
    for m in r.members:
        posted = sum(p.amount_micro for p in postings if p.account == MEMBER_PREFIX + m.home)
        assert posted >= -m.owed * MICRO_PER_UNIT
        assert posted < -m.owed * MICRO_PER_UNIT + 5  # at most 1 micro-unit per leg
    assert {p.account for p in postings} <= {GRID, ROUNDING} | {
        MEMBER_PREFIX + m.home for m in r.members
    }


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(flows, pure_flows), prices, prices, st.sampled_from([Mechanism.SDR, Mechanism.MMR])
)
def test_sdr_and_mmr_never_cost_more_than_the_grid(
    fs: list[MemberFlow], p1: Decimal, p2: Decimal, mechanism: Mechanism
) -> None:
    import_price, export_price = max(p1, p2), min(p1, p2)
    r = settle_interval(fs, import_price, export_price, mechanism)
    assert export_price <= r.internal_price <= import_price
    for m in r.members:
        # No member pays more than its grid-only bill ...
        assert m.owed <= m.grid_only
        # ... and no producer earns less than the export tariff for what it exported.
        earned = m.received_neighbours + m.received_grid
        assert earned >= Decimal(m.export_mwh) * export_price / KWH
