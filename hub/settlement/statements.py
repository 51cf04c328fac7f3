"""A member's monthly statement: built from the ledger, shown as text, JSON or CSV, published.

The statement is the ledger's view of one member account over one month, in minor units:

- one line per energy leg (from neighbours, from the grid, to neighbours, to the grid) with the
  energy (Wh) and the amount (each rounded half to even from the ledger's micro-units);
- ``adjustments``: corrections of earlier, closed months posted in this one (late or corrected
  meter data);
- ``repricing``: earlier, closed months priced again under another scheme, posted in this one
  because the operator asked (``settle --reprice``): no data changed;
- ``rounding``: whatever makes the lines add up to the total.

The total is the member's balance for the month rounded in the member's favour (after the month
is closed, the ledger itself holds that whole amount). A month may be priced under more than one
scheme (the scheme changed mid-month): the statement's ``pricing`` (:func:`statement_pricing`)
says which scheme priced which of the member's days, on the wire and in every format. The
grid-only bill re-prices the member's own interval energy at the grid's tariffs and is rounded
the same way, so under SDR and MMR the saving is never negative.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Final, cast

from hub.settlement.intervals import ESTIMATED, MISSING, RESET
from hub.settlement.ledger import (
    ENERGY_LEGS,
    HUB_READINGS,
    MICRO_PER_UNIT,
    Ledger,
    LedgerError,
    member_account,
)
from hub.settlement.scheme import Scheme, parse_period
from hub.storage.store import Store
from protocol.codec import encode
from protocol.payloads import Statement, StatementItem, StatementLine, StatementPricing
from protocol.topics import HomeTopic, home_topic

LABELS: Final[dict[str, str]] = {
    "import-neighbours": "energy from neighbours",
    "import-grid": "energy from the grid",
    "export-neighbours": "energy to neighbours",
    "export-grid": "energy to the grid",
    "adjustments": "corrections of earlier months",
    "repricing": "earlier months repriced",
    "rounding": "rounding",
}


class StatementError(Exception):
    """No statement can be made (unknown home, month not settled); the message says which."""


def statement_pricing(store: Store, home: str, period: str) -> list[StatementPricing]:
    """Which scheme priced which of ``home``'s settled days in ``period``, in day order.

    Runs of days under one scheme (by :attr:`Scheme.fingerprint`) and on one kind of meter
    figures (the hub's readings or the grid operator's) make one span; days the member was
    not settled on are skipped over, not split on. A closed month shows the schemes it was
    closed under: a later repricing is posted, and shown, in the month it was made in. Each
    span names its allocation key and says when grid prices were imported or the figures were
    the grid operator's; otherwise those fields are left out.
    """
    return pricing_spans(store, period, home)


def pricing_spans(store: Store, period: str, home: str | None = None) -> list[StatementPricing]:
    """:func:`statement_pricing` for one member, or (``home`` None) for the whole community."""
    schemes: dict[int, Scheme] = {}
    spans: list[StatementPricing] = []
    held = ("", False)
    conn = store.reader()
    if home is None:
        rows = conn.execute(
            "SELECT DISTINCT i.day, i.scheme_id, coalesce(s.source, ?) "
            "FROM settlement_intervals i LEFT JOIN settlement_day_sources s ON s.day = i.day "
            "WHERE i.period = ? ORDER BY i.day, i.scheme_id",
            (HUB_READINGS, period),
        )
    else:
        rows = conn.execute(
            "SELECT DISTINCT m.day, i.scheme_id, coalesce(s.source, ?) "
            "FROM settlement_member_intervals m "
            "JOIN settlement_intervals i ON i.start_ms = m.start_ms "
            "LEFT JOIN settlement_day_sources s ON s.day = m.day "
            "WHERE m.home = ? AND m.period = ? ORDER BY m.day, i.scheme_id",
            (HUB_READINGS, home, period),
        )
    for day_text, scheme_id, source in rows:
        if scheme_id not in schemes:
            (text,) = conn.execute(
                "SELECT scheme FROM settlement_schemes WHERE id = ?", (scheme_id,)
            ).fetchone()
            schemes[scheme_id] = Scheme.from_json(text)
        scheme = schemes[scheme_id]
        day = date.fromisoformat(day_text).isoformat()
        official = source != HUB_READINGS
        if spans and (scheme.fingerprint, official) == held:
            spans[-1] = replace(spans[-1], last=day)
        else:
            spans.append(
                StatementPricing(
                    day,
                    day,
                    scheme.mechanism.value,
                    scheme.short_id,
                    key=key_text(scheme),
                    grid_prices="imported" if scheme.imported_prices else None,
                    metered_by="grid-operator" if official else None,
                )
            )
            held = (scheme.fingerprint, official)
    return spans


def key_text(scheme: Scheme) -> str | None:
    """The allocation key's name for statements (at most 64 characters), if there is a key."""
    if scheme.allocation is None:
        return None
    label = scheme.allocation.label
    return label if len(label) <= 64 else label[:63] + "…"


def pricing_text(pricing: Sequence[StatementPricing]) -> str:
    """``SDR 2026-06-01 to 2026-06-15, MMR 2026-06-16 to 2026-06-30``; each span names its
    scheme too when one mechanism appears under two schemes (a tariff changed), and adds its
    allocation key, imported grid prices and the grid operator's figures where they apply:
    ``SDR 2026-06-01 to 2026-06-30 (key 'dynamic', grid prices imported per interval, on the
    grid operator's figures)``."""
    named = len({p.scheme for p in pricing}) > len({p.mechanism for p in pricing})
    out = []
    for p in pricing:
        notes = [f"scheme {p.scheme}"] if named else []
        if p.key is not None:
            notes.append(f"key {p.key!r}")
        if p.grid_prices == "imported":
            notes.append("grid prices imported per interval")
        if p.metered_by == "grid-operator":
            notes.append("on the grid operator's figures")
        note = f" ({', '.join(notes)})" if notes else ""
        out.append(f"{p.mechanism.upper()} {p.first} to {p.last}{note}")
    return ", ".join(out)


def _round(value: Decimal, rounding: str) -> int:
    return int(value.to_integral_value(rounding=rounding))


def members(store: Store, period: str) -> list[str]:
    """Homes settled in ``period``, in order."""
    parse_period(period)
    return [
        row[0]
        for row in store.reader().execute(
            "SELECT DISTINCT home FROM settlement_member_intervals WHERE period = ? ORDER BY home",
            (period,),
        )
    ]


def grid_only_owed(store: Store, home: str, period: str) -> tuple[Decimal, dict[str, int]]:
    """The member's exact grid-only bill for ``period`` (major units) and its interval counts."""
    owed = Decimal(0)
    counts = {"intervals": 0, MISSING: 0, ESTIMATED: 0}
    for status, imp, exp, imp_price, exp_price in store.reader().execute(
        "SELECT m.status, m.import_mwh, m.export_mwh, i.import_price, i.export_price "
        "FROM settlement_member_intervals m JOIN settlement_intervals i ON i.start_ms = m.start_ms "
        "WHERE m.home = ? AND m.period = ?",
        (home, period),
    ):
        counts["intervals"] += 1
        if status == MISSING:
            counts[MISSING] += 1
            continue
        if status in (ESTIMATED, RESET):
            counts[ESTIMATED] += 1
        owed += (Decimal(imp) * Decimal(imp_price) - Decimal(exp) * Decimal(exp_price)) / 1_000_000
    return owed, counts


def build_statement(store: Store, home: str, period: str, now_ms: int) -> Statement:
    """The statement of ``home`` for month ``period`` (``YYYY-MM``) as the ledger holds it now."""
    try:
        parse_period(period)
    except ValueError as exc:
        raise StatementError(str(exc)) from None
    ledger = Ledger(store)
    scheme = ledger.scheme_for(period)
    if scheme is None:
        raise StatementError(f"{period} has not been settled: run coopwatt-hub settle first")
    postings = ledger.period_postings(period, member_account(home))
    grid_only, counts = grid_only_owed(store, home, period)
    if not postings and not counts["intervals"]:
        raise StatementError(f"home {home!r} has no settlement in {period}")
    unit = MICRO_PER_UNIT // scheme.minor_per_unit
    legs: dict[str, list[int]] = {leg: [0, 0] for leg in (*ENERGY_LEGS, "adjustments", "repricing")}
    settled_micro = balance_micro = 0
    for kind, p in postings:
        balance_micro += p.amount_micro
        if kind == "settlement":
            legs[p.leg][0] += p.energy_mwh
            legs[p.leg][1] += p.amount_micro
            settled_micro += p.amount_micro
        elif kind in ("adjustment", "repricing"):
            leg = "adjustments" if kind == "adjustment" else "repricing"
            legs[leg][0] += p.energy_mwh
            legs[leg][1] += p.amount_micro
    # Owed amounts are minus balances; rounding the balance up is rounding in the member's favour.
    total = -_round(Decimal(balance_micro) / unit, ROUND_CEILING)
    charges = -_round(Decimal(settled_micro) / unit, ROUND_CEILING)
    grid_only_minor = _round(grid_only * scheme.minor_per_unit, ROUND_FLOOR)
    lines = [
        StatementLine(
            cast(StatementItem, leg),
            _round(Decimal(energy) / 1000, ROUND_HALF_EVEN),
            -_round(Decimal(amount) / unit, ROUND_HALF_EVEN),
        )
        for leg, (energy, amount) in legs.items()
        if energy or amount or leg in ENERGY_LEGS
    ]
    rest = total - sum(line.amount_minor for line in lines)
    if rest:
        lines.append(StatementLine("rounding", 0, rest))
    return Statement(
        home=home,
        period=period,
        issued_ms=now_ms,
        final=ledger.is_closed(period),
        currency=scheme.currency,
        minor_unit=scheme.minor_unit,
        mechanism=scheme.mechanism.value,
        lines=lines,
        total_minor=total,
        grid_only_minor=grid_only_minor,
        saving_minor=grid_only_minor - charges,
        intervals=counts["intervals"],
        provisional_intervals=counts[MISSING],
        estimated_intervals=counts[ESTIMATED],
        pricing=statement_pricing(store, home, period) or None,
    )


def build_statements(store: Store, period: str, now_ms: int) -> list[Statement]:
    """Every member's statement for ``period``."""
    return [build_statement(store, home, period, now_ms) for home in members(store, period)]


# -- formats ---------------------------------------------------------------------------------


def money(minor: int, minor_unit: int) -> str:
    """``1234`` with 2 decimals -> ``12.34``; exact, from integers."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**minor_unit)
    return f"{sign}{whole}.{frac:0{minor_unit}d}" if minor_unit else f"{sign}{whole}"


def kwh(wh: int) -> str:
    return f"{Decimal(wh) / 1000:.3f}"


def _pay_or_be_paid(minor: int, minor_unit: int) -> str:
    return (
        f"pay {money(minor, minor_unit)}" if minor >= 0 else f"be paid {money(-minor, minor_unit)}"
    )


def format_text(s: Statement) -> str:
    """The statement as a member reads it."""
    m = s.minor_unit
    state = "final" if s.final else "provisional: may change as late meter data arrives"
    priced = pricing_text(s.pricing) if s.pricing else s.mechanism.upper()
    out = [
        f"coopwatt statement for {s.home}, {s.period} ({state})",
        f"pricing: {priced}; amounts in {s.currency}, + you pay, - you are paid; "
        "kWh: + received, - delivered",
        "",
        f"{'':32} {'kWh':>12} {s.currency:>12}",
    ]
    grid = next((line for line in s.lines if line.item == "import-grid"), None)
    if any(p.grid_prices == "imported" for p in s.pricing or []) and grid and grid.energy_wh > 0:
        per_kwh = Decimal(grid.amount_minor) / 10**m / (Decimal(grid.energy_wh) / 1000)
        out.insert(
            2,
            f"grid import at the imported prices per interval: {per_kwh:.4f} {s.currency}/kWh "
            "on average",
        )
    for line in s.lines:
        energy = kwh(line.energy_wh) if line.item in ENERGY_LEGS or line.energy_wh else ""
        out.append(f"{LABELS[line.item]:32} {energy:>12} {money(line.amount_minor, m):>12}")
    out += [
        f"{'total':32} {'':>12} {money(s.total_minor, m):>12}",
        "",
        f"on grid tariffs alone you would {_pay_or_be_paid(s.grid_only_minor, m)} {s.currency}; "
        f"sharing with neighbours saved you {money(s.saving_minor, m)} {s.currency}",
        f"{s.intervals} quarter-hours settled"
        + (
            f", {s.provisional_intervals} without your meter's data yet"
            if s.provisional_intervals
            else ""
        )
        + (
            f", {s.estimated_intervals} estimated across a gap in readings"
            if s.estimated_intervals
            else ""
        ),
    ]
    return "\n".join(out) + "\n"


def format_json(s: Statement) -> str:
    """The wire payload (``homes/{home}/statement``), indented for people."""
    return json.dumps(json.loads(encode(s)), indent=2) + "\n"


def format_csv(s: Statement) -> str:
    """One row per line plus total, grid-only and saving rows: ``item,energy_wh,amount``;
    then one ``pricing MECHANISM FIRST..LAST scheme ID`` row per pricing span (no amount)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["home", "period", "item", "energy_wh", f"amount_{s.currency.lower()}", "final"])
    rows: list[tuple[str, int | str, int]] = [
        (line.item, line.energy_wh, line.amount_minor) for line in s.lines
    ]
    rows += [("total", "", s.total_minor), ("grid-only", "", s.grid_only_minor)]
    rows.append(("saving", "", s.saving_minor))
    final = str(s.final).lower()
    for item, energy, amount in rows:
        w.writerow([s.home, s.period, item, energy, money(amount, s.minor_unit), final])
    for p in s.pricing or []:
        item = f"pricing {p.mechanism} {p.first}..{p.last} scheme {p.scheme}"
        if p.key is not None:
            item += f" key {p.key}"
        if p.grid_prices is not None:
            item += f" grid-prices {p.grid_prices}"
        if p.metered_by is not None:
            item += f" metered-by {p.metered_by}"
        w.writerow([s.home, s.period, item, "", "", final])
    return buf.getvalue()


FORMATS: Final[dict[str, Callable[[Statement], str]]] = {
    "text": format_text,
    "json": format_json,
    "csv": format_csv,
}


# -- publishing ------------------------------------------------------------------------------


def publish_statements(
    coop: str,
    statements: Iterable[Statement],
    publish: Callable[[str, bytes], None],
) -> int:
    """Publish each statement on its home's ``statement`` topic; returns how many.

    ``publish(topic, payload)`` must publish retained at QoS 1 (the home reads its latest
    statement whenever it connects), e.g. ``MqttSession.publish(..., qos=1, retain=True)``.
    """
    n = 0
    for s in statements:
        publish(home_topic(coop, s.home, HomeTopic.STATEMENT), encode(s))
        n += 1
    return n


def scheme_or_error(ledger: Ledger, period: str) -> Scheme:
    scheme = ledger.scheme_for(period)
    if scheme is None:
        raise LedgerError(f"{period} has not been settled: run coopwatt-hub settle first")
    return scheme
