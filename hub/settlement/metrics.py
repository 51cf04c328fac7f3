"""Community figures for a month: sharing, self-sufficiency, peakiness, savings and fairness.

Pure functions over plain numbers, plus :func:`community_report`, which gathers them from the
settlement tables (settled data, purpose ``settlement``) and, for generation, from counters read
for ``community-stats``.

Definitions (energy over the month, community = the settled members):

- ``shared_kwh``: energy matched between neighbours (``M``, summed over intervals);
- ``sharing_rate_supply`` = ``M / S``: of what members' meters exported, the share neighbours used;
- ``sharing_rate_demand`` = ``M / D``: of what members' meters imported, the share neighbours
  supplied;
- ``self_consumption`` = ``(G − E) / G``: of the community's generation ``G`` (pv and wind
  counters), the share used inside it, ``E`` being what the community sent to the grid;
- ``self_sufficiency`` = ``(C − I) / C``: of the community's consumption ``C`` (import − export
  + generation, over homes with all three), the share not bought from the grid (``I``);
- ``peak_to_average``: highest 15-minute community grid import over its mean;
- each member's saving: its grid-only bill minus its charges (see :mod:`.statements`);
- ``fairness_index``: Jain's index ``(Σx)² / (n·Σx²)`` over each member's saving per kWh that
  passed its meter (import + export), in [1/n, 1], 1 when every member saves alike per kWh (Jain,
  Chiu, Hawe 1984, DEC-TR-301). A member worse off counts as saving nothing there, and is
  counted in ``members_worse_off`` (possible only under bill sharing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from hub.settlement.ledger import Ledger
from hub.settlement.statements import StatementError, build_statements
from hub.settlement.terms import PeriodTerms, period_terms
from hub.storage.store import Store


def ratio(part: float, whole: float) -> float | None:
    return None if whole <= 0 else part / whole


def peak_to_average(values: Sequence[float]) -> float | None:
    """Peak over mean of ``values``; None when empty or the mean is not positive."""
    if not values:
        return None
    mean = sum(values) / len(values)
    return None if mean <= 0 else max(values) / mean


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index of non-negative ``values``; 1.0 when all are zero, None if empty."""
    if not values:
        return None
    if any(v < 0 for v in values):
        raise ValueError("Jain's index is defined for non-negative values")
    square_sum = sum(v * v for v in values)
    if square_sum == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * square_sum)


@dataclass(frozen=True, slots=True)
class MemberSaving:
    home: str
    imported_kwh: float
    exported_kwh: float
    grid_only_minor: int
    charges_minor: int
    saving_minor: int

    @property
    def saving_per_kwh_minor(self) -> float:
        through = self.imported_kwh + self.exported_kwh
        return 0.0 if through <= 0 else self.saving_minor / through


@dataclass(frozen=True)
class CommunityReport:
    period: str
    currency: str
    minor_unit: int
    mechanism: str
    final: bool
    members: int
    intervals: int
    provisional_intervals: int
    demand_kwh: float
    supply_kwh: float
    shared_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    sharing_rate_supply: float | None
    sharing_rate_demand: float | None
    peak_to_average: float | None
    generation_kwh: float | None = None
    consumption_kwh: float | None = None
    self_consumption: float | None = None
    self_sufficiency: float | None = None
    savings: list[MemberSaving] = field(default_factory=list)
    fairness_index: float | None = None
    members_worse_off: int = 0
    terms: PeriodTerms | None = None  # the keys, prices and figures the month was settled on

    @property
    def total_saving_minor(self) -> int:
        return sum(s.saving_minor for s in self.savings)


def community_report(
    store: Store,
    period: str,
    now_ms: int,
    generation_kwh: float | None = None,
    consumption_kwh: float | None = None,
) -> CommunityReport:
    """The month's community figures from the settlement tables (and generation if given)."""
    ledger = Ledger(store)
    scheme = ledger.scheme_for(period)
    if scheme is None:
        raise StatementError(f"{period} has not been settled: run coopwatt-hub settle first")
    conn = store.reader()
    rows = conn.execute(
        "SELECT supply_mwh, demand_mwh, matched_mwh, missing, members FROM settlement_intervals "
        "WHERE period = ? ORDER BY start_ms",
        (period,),
    ).fetchall()
    supply = sum(r[0] for r in rows) / 1e6
    demand = sum(r[1] for r in rows) / 1e6
    shared = sum(r[2] for r in rows) / 1e6
    # kW over each interval that settled anyone: an interval with no data is not a quiet one.
    grid_import_series = [(r[1] - r[2]) / 1e6 * 4 for r in rows if r[4]]
    statements = build_statements(store, period, now_ms)
    savings = []
    for s in statements:
        imported = sum(
            line.energy_wh for line in s.lines if line.item in ("import-neighbours", "import-grid")
        )
        exported = -sum(
            line.energy_wh for line in s.lines if line.item in ("export-neighbours", "export-grid")
        )
        savings.append(
            MemberSaving(
                s.home,
                imported / 1000,
                exported / 1000,
                s.grid_only_minor,
                s.grid_only_minor - s.saving_minor,
                s.saving_minor,
            )
        )
    per_kwh = [s.saving_per_kwh_minor for s in savings if s.imported_kwh + s.exported_kwh > 0]
    grid_import = demand - shared
    grid_export = supply - shared
    report = CommunityReport(
        period=period,
        currency=scheme.currency,
        minor_unit=scheme.minor_unit,
        mechanism=scheme.mechanism.value,
        final=ledger.is_closed(period),
        members=len(savings),
        intervals=len(rows),
        provisional_intervals=sum(1 for r in rows if r[3]),
        demand_kwh=demand,
        supply_kwh=supply,
        shared_kwh=shared,
        grid_import_kwh=grid_import,
        grid_export_kwh=grid_export,
        sharing_rate_supply=ratio(shared, supply),
        sharing_rate_demand=ratio(shared, demand),
        peak_to_average=peak_to_average(grid_import_series),
        generation_kwh=generation_kwh,
        consumption_kwh=consumption_kwh,
        self_consumption=(
            None if generation_kwh is None else ratio(generation_kwh - grid_export, generation_kwh)
        ),
        self_sufficiency=(
            None
            if consumption_kwh is None
            else ratio(consumption_kwh - grid_import, consumption_kwh)
        ),
        savings=savings,
        fairness_index=jain_index([max(x, 0.0) for x in per_kwh]),
        members_worse_off=sum(1 for s in savings if s.saving_minor < 0),
        terms=period_terms(store, period, scheme.month_bounds_ms(period)),
    )
    return report


def decimal_text(value: Decimal | float | None, places: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{places}f}"
