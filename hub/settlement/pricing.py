"""One 15-minute interval's settlement: who got whose energy, and at what price. Pure.

Inputs per member: the energy its grid meter imported and exported in the interval (integer mWh;
a meter may do both within 15 minutes). The community's internal demand ``D`` is the sum of the
imports, its internal supply ``S`` the sum of the exports, and ``M = min(S, D)`` is matched inside
the community; ``D - M`` comes from the grid and ``S - M`` goes to it. Matched energy is shared
pro rata: each importer gets ``M / D`` of its import from neighbours, each exporter sends ``M / S``
of its export to them (integer mWh, largest remainder, so the parts add up exactly).

Every mechanism here reduces to one internal price ``p`` for matched energy, paid by the importer
and received by the exporter, with unmatched energy at the grid's import price ``λ_b`` and export
price ``λ_s``:

- **SDR**, supply-demand ratio (Liu, Wu, Zhang, Wang, Zhang 2017, "Energy sharing model with
  price-based demand response for microgrids of peer-to-peer prosumers", IEEE Trans. Power
  Systems 32(5):3569-3583). With ``SDR = S / D``, for ``0 <= SDR <= 1`` the internal selling price
  is ``P_s = λ_b·λ_s / ((λ_b − λ_s)·SDR + λ_s)`` and the buying price
  ``P_b = P_s·SDR + λ_b·(1 − SDR)``; for ``SDR > 1`` both are ``λ_s``. Sellers are all matched
  when ``SDR <= 1``, and a buyer's ``P_b`` for its whole import is exactly ``P_s`` for its matched
  share plus ``λ_b`` for the rest, so ``p = P_s`` (or ``λ_s`` in surplus). The price falls from
  ``λ_b`` with no supply to ``λ_s`` at balance.
- **MMR**, mid-market rate (Long, Wu, Zhang, Thomas, Cheng, Jenkins 2017, "Peer-to-peer energy
  trading in a community microgrid", IEEE PES General Meeting): ``p = (λ_b + λ_s) / 2``; in a
  shortage the buyers' average price is ``(p·S + λ_b·(D − S)) / D``, in a surplus the sellers'
  is ``(p·D + λ_s·(S − D)) / S``, which is what the pro-rata split gives.
- **Bill sharing** (Long et al. 2017, as evaluated by Zhou, Wu, Long 2018, "Evaluation of
  peer-to-peer energy sharing mechanisms based on a multiagent simulation framework", Applied
  Energy 222:993-1022): the community's grid bill ``λ_b·(D − M)`` is shared by the importers in
  proportion to their import, and its grid revenue ``λ_s·(S − M)`` by the exporters in
  proportion to their export. Matched energy itself changes hands at ``p = 0``: exporters are
  paid only for what reached the grid, so unlike SDR and MMR an exporter can earn less than the
  export tariff. It is offered because some cooperatives prefer it; SDR is the default.

Since ``λ_s <= p <= λ_b`` under SDR and MMR, each member pays at most its grid-only bill
(``import·λ_b − export·λ_s``) and each exporter earns at least ``λ_s`` per kWh exported.

Money here is :class:`~decimal.Decimal` in the currency's major unit, exact: an amount is
``mWh × price_per_kWh / 10^6``, and the SDR price is rounded to :data:`INTERNAL_PRICE_PLACES`
decimals (half-even), which keeps it between ``λ_s`` and ``λ_b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final

from hub.settlement.allocation import AllocationKey
from hub.settlement.allocation import allocate as allocate_by_key
from hub.settlement.scheme import Mechanism

INTERNAL_PRICE_PLACES: Final = 10
_QUANTUM: Final = Decimal(1).scaleb(-INTERNAL_PRICE_PLACES)
MWH_PER_KWH: Final = 1_000_000


def sdr_price(
    supply_mwh: int, demand_mwh: int, import_price: Decimal, export_price: Decimal
) -> Decimal:
    """The SDR internal price per kWh of matched energy (Liu et al. 2017, see the module doc).

    ``supply_mwh``/``demand_mwh`` are the community's internal supply and demand. With no demand
    there is nothing to match and the price is ``export_price`` (the SDR > 1 branch).
    """
    if supply_mwh < 0 or demand_mwh < 0:
        raise ValueError("supply and demand cannot be negative")
    if export_price > import_price:
        raise ValueError("the export price exceeds the import price")
    if demand_mwh == 0 or supply_mwh >= demand_mwh:
        return export_price
    if export_price == 0:
        # λ_s = 0 makes P_s's denominator 0 at SDR = 0 and the price 0 for any SDR > 0.
        return Decimal(0) if supply_mwh else import_price
    with localcontext() as ctx:
        ctx.prec = 40
        sdr = Decimal(supply_mwh) / Decimal(demand_mwh)
        p = import_price * export_price / ((import_price - export_price) * sdr + export_price)
        return p.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def mmr_price(import_price: Decimal, export_price: Decimal) -> Decimal:
    """The mid-market rate (Long et al. 2017): halfway between the grid's two prices."""
    if export_price > import_price:
        raise ValueError("the export price exceeds the import price")
    return (import_price + export_price) / 2


def internal_price(
    mechanism: Mechanism,
    supply_mwh: int,
    demand_mwh: int,
    import_price: Decimal,
    export_price: Decimal,
) -> Decimal:
    """Price per kWh at which matched energy changes hands under ``mechanism``."""
    if mechanism is Mechanism.SDR:
        return sdr_price(supply_mwh, demand_mwh, import_price, export_price)
    if mechanism is Mechanism.MMR:
        return mmr_price(import_price, export_price)
    return Decimal(0)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split integer ``total`` in proportion to ``weights`` (Hamilton's largest remainder).

    Each share is ``floor(total·w/W)`` plus one for the largest remainders until the shares add
    up to ``total``; ties go to the earlier weight, so the result depends only on the order of
    ``weights`` (callers sort members by home). Requires ``0 <= total <= sum(weights)``; every
    share then lies between 0 and its weight.
    """
    whole = sum(weights)
    if any(w < 0 for w in weights):
        raise ValueError("weights cannot be negative")
    if not 0 <= total <= whole:
        raise ValueError(f"cannot allocate {total} over weights summing to {whole}")
    if whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass(frozen=True, slots=True)
class MemberFlow:
    """What one member's grid meter measured in one interval (mWh, never negative)."""

    home: str
    import_mwh: int
    export_mwh: int

    def __post_init__(self) -> None:
        if self.import_mwh < 0 or self.export_mwh < 0:
            raise ValueError(f"{self.home}: energy cannot be negative")


@dataclass(frozen=True, slots=True)
class MemberShare:
    """One member's part of an interval: energy (mWh) and money (Decimal, major unit)."""

    home: str
    import_mwh: int
    export_mwh: int
    import_neighbours_mwh: int  # of the import, what neighbours supplied
    export_neighbours_mwh: int  # of the export, what neighbours used
    paid_neighbours: Decimal
    paid_grid: Decimal
    received_neighbours: Decimal
    received_grid: Decimal
    grid_only: Decimal  # what the member would owe on grid tariffs alone (negative: be owed)

    @property
    def import_grid_mwh(self) -> int:
        return self.import_mwh - self.import_neighbours_mwh

    @property
    def export_grid_mwh(self) -> int:
        return self.export_mwh - self.export_neighbours_mwh

    @property
    def owed(self) -> Decimal:
        """Net amount the member owes for the interval (negative: the member is owed)."""
        return self.paid_neighbours + self.paid_grid - self.received_neighbours - self.received_grid


@dataclass(frozen=True, slots=True)
class IntervalSettlement:
    """A settled interval: community totals (mWh), the prices used, and each member's share."""

    supply_mwh: int
    demand_mwh: int
    matched_mwh: int
    import_price: Decimal
    export_price: Decimal
    internal_price: Decimal
    members: tuple[MemberShare, ...]

    @property
    def grid_import_mwh(self) -> int:
        return self.demand_mwh - self.matched_mwh

    @property
    def grid_export_mwh(self) -> int:
        return self.supply_mwh - self.matched_mwh

    @property
    def grid_owed(self) -> Decimal:
        """What the community owes the grid for the interval (negative: the grid owes it)."""
        return _money(self.grid_import_mwh, self.import_price) - _money(
            self.grid_export_mwh, self.export_price
        )


def _money(energy_mwh: int, price_per_kwh: Decimal) -> Decimal:
    return Decimal(energy_mwh) * price_per_kwh / MWH_PER_KWH


def settle_interval(
    flows: Sequence[MemberFlow],
    import_price: Decimal,
    export_price: Decimal,
    mechanism: Mechanism = Mechanism.SDR,
    key: AllocationKey | None = None,
    community_price: Decimal | None = None,
    *,
    share: bool = True,
) -> IntervalSettlement:
    """Match and price one interval among the members in ``flows`` (missing members left out).

    Members are settled in home order, whatever the order of ``flows``. Exact: the members'
    payments to neighbours equal their receipts from neighbours, and what they pay and receive
    for grid energy equals :attr:`IntervalSettlement.grid_owed`.

    With an allocation ``key`` (:mod:`hub.settlement.allocation`), the key decides how much of
    the community's export ``S`` each importer gets, and the matched energy is the sum of those
    allocations (at most ``min(S, D)``: a fixed share a member cannot use may go to the grid).
    The exporters' side is shared pro rata to export as before. Allocated energy changes hands
    at ``community_price`` if given, otherwise at the mechanism's price.

    Prices may be negative (day-ahead prices are). With ``share`` false nothing is matched:
    every member trades with the grid alone, at any prices (the engine's choice for an interval
    whose import price is below its export price, where no price lies between the two); the
    interval's internal price is then reported as the import price, and nothing is paid at it.
    """
    if export_price > import_price and share:
        raise ValueError("the export price exceeds the import price")
    ordered = sorted(flows, key=lambda f: f.home)
    if len({f.home for f in ordered}) != len(ordered):
        raise ValueError("a member appears twice in one interval")
    demand = sum(f.import_mwh for f in ordered)
    supply = sum(f.export_mwh for f in ordered)
    if not share:
        return IntervalSettlement(
            supply_mwh=supply,
            demand_mwh=demand,
            matched_mwh=0,
            import_price=import_price,
            export_price=export_price,
            internal_price=import_price,
            members=tuple(
                MemberShare(
                    home=f.home,
                    import_mwh=f.import_mwh,
                    export_mwh=f.export_mwh,
                    import_neighbours_mwh=0,
                    export_neighbours_mwh=0,
                    paid_neighbours=Decimal(0),
                    paid_grid=_money(f.import_mwh, import_price),
                    received_neighbours=Decimal(0),
                    received_grid=_money(f.export_mwh, export_price),
                    grid_only=_money(f.import_mwh, import_price)
                    - _money(f.export_mwh, export_price),
                )
                for f in ordered
            ),
        )
    price = internal_price(mechanism, supply, demand, import_price, export_price)
    if community_price is not None:
        if not export_price <= community_price <= import_price:
            raise ValueError("the community price is outside the grid's prices")
        price = community_price
    if key is None:
        matched = min(supply, demand)
        got = allocate(matched, [f.import_mwh for f in ordered])
    else:
        by_key = allocate_by_key(supply, {f.home: f.import_mwh for f in ordered}, key)
        got = [by_key[f.home] for f in ordered]
        matched = sum(got)
    gave = allocate(matched, [f.export_mwh for f in ordered])
    shares = tuple(
        MemberShare(
            home=f.home,
            import_mwh=f.import_mwh,
            export_mwh=f.export_mwh,
            import_neighbours_mwh=g_in,
            export_neighbours_mwh=g_out,
            paid_neighbours=_money(g_in, price),
            paid_grid=_money(f.import_mwh - g_in, import_price),
            received_neighbours=_money(g_out, price),
            received_grid=_money(f.export_mwh - g_out, export_price),
            grid_only=_money(f.import_mwh, import_price) - _money(f.export_mwh, export_price),
        )
        for f, g_in, g_out in zip(ordered, got, gave, strict=True)
    )
    return IntervalSettlement(
        supply_mwh=supply,
        demand_mwh=demand,
        matched_mwh=matched,
        import_price=import_price,
        export_price=export_price,
        internal_price=price,
        members=shares,
    )
