"""What a settled month rests on: its schemes and allocation keys, its grid prices, its figures.

A cooperative that splits shared energy by its regulator's key, buys the rest at day-ahead
prices and bills from the grid operator's figures has to be able to say so on every report:
which key, which prices (and from which file), whose meter figures. :func:`period_terms` reads
that from the settlement tables, so the community report and the HTML report print what the
ledger actually used, not what today's scheme file says.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hub.settlement.ledger import HUB_READINGS
from hub.settlement.statements import pricing_spans, pricing_text
from hub.storage.store import Store
from protocol.payloads import StatementPricing


@dataclass(frozen=True, slots=True)
class ImportPrices:
    """Grid import prices per kWh (network charge included) over a month's intervals.

    ``mean`` is weighted by the energy the community bought from the grid in each interval,
    so it is what a kWh bought from the grid cost on average; None when nothing was bought.
    """

    lowest: Decimal
    highest: Decimal
    mean: Decimal | None


@dataclass(frozen=True, slots=True)
class PeriodTerms:
    pricing: tuple[StatementPricing, ...]  # the community's spans (see pricing_spans)
    import_prices: ImportPrices | None  # under imported prices only
    price_files: tuple[str, ...]  # the files the imported prices came from
    meter_sources: tuple[str, ...]  # "hub", and the grid operator's files, in day order

    @property
    def special(self) -> bool:
        """True when any span has a key, imported prices or official figures to name."""
        return any(p.key or p.grid_prices or p.metered_by for p in self.pricing)


def period_terms(store: Store, period: str, bounds_ms: tuple[int, int]) -> PeriodTerms:
    """The terms ``period`` (local month, ``bounds_ms`` its UTC start and end) was settled on."""
    pricing = tuple(pricing_spans(store, period))
    conn = store.reader()
    import_prices = None
    files: tuple[str, ...] = ()
    if any(p.grid_prices == "imported" for p in pricing):
        rows = [
            (Decimal(price), demand - matched)
            for price, demand, matched in conn.execute(
                "SELECT import_price, demand_mwh, matched_mwh FROM settlement_intervals "
                "WHERE period = ?",
                (period,),
            )
        ]
        if rows:
            bought = sum(w for _, w in rows)
            mean = (
                (sum(p * w for p, w in rows) / bought).quantize(Decimal("0.0001"))
                if bought > 0
                else None
            )
            import_prices = ImportPrices(min(p for p, _ in rows), max(p for p, _ in rows), mean)
        files = tuple(
            source
            for (source,) in conn.execute(
                "SELECT source FROM grid_prices WHERE start_ms < ? AND end_ms > ? "
                "GROUP BY source ORDER BY min(start_ms)",
                (bounds_ms[1], bounds_ms[0]),
            )
        )
    sources = [
        source
        for (source,) in conn.execute(
            "SELECT coalesce(s.source, ?) FROM settlement_intervals i "
            "LEFT JOIN settlement_day_sources s ON s.day = i.day "
            "WHERE i.period = ? GROUP BY 1 ORDER BY min(i.day)",
            (HUB_READINGS, period),
        )
    ]
    return PeriodTerms(pricing, import_prices, files, tuple(sources))


def terms_lines(terms: PeriodTerms, currency: str) -> list[str]:
    """Sentences naming the key, the prices and the figures; none for a plain month."""
    if not terms.special:
        return []
    lines = [f"settled as: {pricing_text(terms.pricing)}"]
    if terms.import_prices is not None:
        ip = terms.import_prices
        mean = "" if ip.mean is None else f", {ip.mean} on average per kWh bought"
        lines.append(
            f"grid import prices per interval {ip.lowest} to {ip.highest} {currency}/kWh "
            f"(network charge included){mean}"
        )
    if terms.price_files:
        lines.append("grid prices from " + ", ".join(terms.price_files))
    official = [s for s in terms.meter_sources if s != HUB_READINGS]
    if official:
        hub = " and the hub's readings" if HUB_READINGS in terms.meter_sources else ""
        lines.append(f"meter figures: the grid operator's ({', '.join(official)}){hub}")
    return lines
