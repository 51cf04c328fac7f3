"""Settle a range of local days: read the meters, cut into intervals, price, post to the ledger.

The I/O shell around the pure core (:mod:`.intervals`, :mod:`.pricing`): one read of grid-meter
counters per day (through :func:`hub.settlement.source.read_settlement_counters`), one ledger
transaction per day. Settling is deterministic, so running it again over the same data changes
nothing, and running it after late data arrived settles the affected days again (or posts
adjustments for days of closed periods).

A closed day is never priced again under another scheme unless asked (``reprice``): without it
:func:`settle` refuses the whole range before writing anything (:func:`check_scheme_change`).

Settling on the grid operator's figures (``official``, :class:`.reconcile.OfficialFigures`)
takes each member's interval energy from the operator's file instead of the hub's counters,
records the file as the days' source, and compares the hub's own readings with it (the
check, :func:`.reconcile.reconcile`). Every problem is found before anything is written: a
day the file does not cover, a home the hub has readings for but the map leaves out (it would
silently drop out of the community), and a day settled on official figures that a run on the
hub's readings would replace (refused unless asked, ``replace_official``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

from hub.settlement.intervals import (
    ESTIMATED,
    MISSING,
    RESET,
    MemberInterval,
    interval_boundaries,
)
from hub.settlement.ledger import (
    HUB_READINGS,
    DaySettlement,
    IntervalRow,
    Ledger,
    MemberIntervalRow,
    SchemeChangeError,
    day_postings,
)
from hub.settlement.price_store import prices_at, stored_currency, stored_prices
from hub.settlement.prices import PriceError, utc_text
from hub.settlement.pricing import IntervalSettlement, MemberFlow, allocate, settle_interval
from hub.settlement.reconcile import (
    OfficialFigures,
    ReconcileError,
    Reconciliation,
    Tolerance,
    hub_intervals,
    reconcile,
)
from hub.settlement.scheme import INTERVAL_MS, Scheme, period_of
from hub.storage.store import Store


@dataclass(slots=True)
class SettleResult:
    """What :func:`settle` did, per outcome, and the data gaps it met."""

    days: dict[str, list[date]] = field(default_factory=dict)  # outcome -> days
    intervals: int = 0
    provisional_intervals: int = 0
    missing_member_intervals: int = 0
    estimated_member_intervals: int = 0
    check: Reconciliation | None = None  # on official figures: the hub's readings against them

    def count(self, outcome: str) -> int:
        return len(self.days.get(outcome, []))


class MissingPriceError(ValueError):
    """Imported grid prices do not cover what is to be settled; one sentence for the operator."""


class MeterSourceError(ValueError):
    """The official figures cannot settle these days, or a run would replace them unasked."""


def _span_ms(scheme: Scheme) -> int:
    """How long one settled interval is: 15 minutes, or the allocation key's hour."""
    return INTERVAL_MS if scheme.allocation is None else scheme.allocation.interval_minutes * 60_000


def import_prices(store: Store, scheme: Scheme, day: date) -> list[Decimal] | None:
    """Under ``prices = "imported"``, the import price of each interval of ``day`` (the stored
    grid price plus the scheme's network charge); None under a tariff of the scheme's own.

    Raises :class:`MissingPriceError` naming the first interval without a stored price, or
    when the stored prices are in another currency.
    """
    if not scheme.imported_prices:
        return None
    start_ms = scheme.day_start_ms(day)
    end_ms = scheme.day_start_ms(day + timedelta(days=1))
    currency = stored_currency(store)
    if currency is not None and currency != scheme.currency:
        raise MissingPriceError(
            f"the hub's grid prices are in {currency}, the scheme settles in {scheme.currency}"
        )
    try:
        prices = prices_at(store, start_ms, end_ms, _span_ms(scheme))
    except PriceError:
        covered = stored_prices(store, start_ms, end_ms)
        gap = start_ms
        for iv in covered:
            if iv.start_ms > gap:
                break
            gap = max(gap, iv.end_ms)
        raise MissingPriceError(
            f"no grid price for the interval from {utc_text(gap)} (settling {day} on imported "
            "prices): import prices covering it with coopwatt-hub prices import"
        ) from None
    network = scheme.import_tariff.network_per_kwh
    return [p + network for p in prices]


def check_prices(store: Store, scheme: Scheme, days: Iterable[date]) -> None:
    """Raise :class:`MissingPriceError` before anything is settled if a day lacks a price."""
    for day in days:
        import_prices(store, scheme, day)


def day_range(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _hub_per_home(
    store: Store, scheme: Scheme, start_ms: int, end_ms: int
) -> dict[str, list[MemberInterval | None]]:
    return hub_intervals(store, start_ms, end_ms, INTERVAL_MS, scheme.max_gap_ms)


def settle_day(
    store: Store, scheme: Scheme, day: date, official: OfficialFigures | None = None
) -> tuple[DaySettlement, int, int]:
    """Settle one local day from the store's readings, or from the grid operator's figures.

    Returns the day and its counts of missing and estimated member intervals.
    """
    start_ms = scheme.day_start_ms(day)
    end_ms = scheme.day_start_ms(day + timedelta(days=1))
    boundaries = interval_boundaries(start_ms, end_ms, INTERVAL_MS)
    per_home: dict[str, list[MemberInterval | None]]
    if official is None:
        per_home = _hub_per_home(store, scheme, start_ms, end_ms)
    else:
        per_home = {h: list(v) for h, v in official.intervals(start_ms, end_ms).items()}
    settled, missing, estimated = settle_intervals(
        scheme, day, boundaries, per_home, import_prices(store, scheme, day)
    )
    if official is not None:
        settled = replace(settled, source=official.source)
    return settled, missing, estimated


def check_official(
    store: Store, scheme: Scheme, days: Iterable[date], official: OfficialFigures
) -> None:
    """Raise :class:`MeterSourceError` unless ``official`` can settle every day of ``days``.

    The file must be in 15-minute intervals (the ledger keeps quarter-hours), cover every
    mapped metering point in every interval of each day, and name every home the hub would
    settle from its own readings on that day.
    """
    if official.file.step_ms != INTERVAL_MS:
        raise MeterSourceError(
            f"{official.source} has {official.file.step_ms // 60_000}-minute figures; settling "
            "needs the operator's 15-minute figures (reconcile can compare hourly ones)"
        )
    for day in days:
        start_ms = scheme.day_start_ms(day)
        end_ms = scheme.day_start_ms(day + timedelta(days=1))
        try:
            theirs = official.intervals(start_ms, end_ms)
        except ReconcileError as exc:
            raise MeterSourceError(f"cannot settle {day} on {official.source}: {exc}") from None
        ours = _hub_per_home(store, scheme, start_ms, end_ms)
        left_out = sorted(h for h, v in ours.items() if h not in theirs and any(v))
        if left_out:
            raise MeterSourceError(
                f"{left_out[0]} has readings at the hub on {day} but no metering point in the "
                "map: on the official figures it would drop out of the community; add its "
                "metering point to the map"
            )


def check_sources(
    ledger: Ledger, days: Iterable[date], official: OfficialFigures | None, replace_official: bool
) -> None:
    """Refuse to settle on the hub's readings a day held on the operator's figures, unless
    ``replace_official``: billing would move off the official figures without anyone asking."""
    if official is not None or replace_official:
        return
    held = {d: s for d, s in ledger.day_sources(days).items() if s != HUB_READINGS}
    if held:
        first = min(held)
        raise MeterSourceError(
            f"{first} was settled on the grid operator's figures ({held[first]}): settle it "
            "with --official again, or with --replace-official to go back to the hub's readings"
        )


def check_against_hub(
    store: Store,
    scheme: Scheme,
    days: Sequence[date],
    official: OfficialFigures,
    tolerance: Tolerance,
) -> Reconciliation:
    """The hub's own readings against the official figures over ``days``, per home."""
    start_ms = scheme.day_start_ms(days[0])
    end_ms = scheme.day_start_ms(days[-1] + timedelta(days=1))
    return reconcile(
        official.intervals(start_ms, end_ms),
        _hub_per_home(store, scheme, start_ms, end_ms),
        tolerance,
        INTERVAL_MS,
    )


def settle_intervals(
    scheme: Scheme,
    day: date,
    boundaries: list[int],
    per_home: dict[str, list[MemberInterval | None]],
    imported: Sequence[Decimal] | None = None,
) -> tuple[DaySettlement, int, int]:
    """Price each interval of ``day`` among the members with data (pure).

    Under an hourly allocation key (``interval_minutes = 60``) each local hour's quarters are
    settled together, as one interval of the hour's totals (the scheme guarantees its prices
    do not change within an hour), and each member's shared energy is spread back over the
    quarters in proportion to its own import (or export) in each, largest remainder; the rows
    stay per quarter. Otherwise every quarter is settled on its own.

    ``imported`` (required under ``prices = "imported"``) is the import price of each settled
    interval (each quarter, or each hour under an hourly key) from :func:`import_prices`; the
    export price stays the scheme's. An interval whose import price is below its export price
    shares nothing, and a community price is held between the two.
    """
    interval_rows: list[IntervalRow] = []
    member_rows: list[MemberIntervalRow] = []
    settled: list[IntervalSettlement] = []
    missing_total = estimated_total = 0
    span_ms = _span_ms(scheme)
    if scheme.imported_prices and imported is None:
        raise ValueError("a scheme with imported prices needs each interval's import price")
    spans: dict[int, list[int]] = {}
    for i, start in enumerate(boundaries[:-1]):
        spans.setdefault((start - boundaries[0]) // span_ms, []).append(i)
    for span, quarters in spans.items():
        members = {
            i: [m for _, ivs in sorted(per_home.items()) if (m := ivs[i]) is not None]
            for i in quarters
        }
        known = {i: [m for m in ms if m.status != MISSING] for i, ms in members.items()}
        by_home: dict[str, list[MemberInterval]] = {}
        for i in quarters:
            for m in known[i]:
                by_home.setdefault(m.home, []).append(m)
        totals: dict[str, list[int]] = {}
        for i in quarters:
            for m in known[i]:
                t = totals.setdefault(m.home, [0, 0])
                t[0] += m.import_mwh
                t[1] += m.export_mwh
        community_price = scheme.community_price
        if imported is None:
            import_price, export_price = scheme.prices_at(boundaries[quarters[0]])
        else:
            local = scheme.local(boundaries[quarters[0]])
            import_price = imported[span]
            export_price = scheme.export_tariff.price_at(
                local.weekday(), local.hour * 60 + local.minute
            )
            if community_price is not None:
                community_price = min(max(community_price, export_price), import_price)
        result = settle_interval(
            [MemberFlow(home, imp, exp) for home, (imp, exp) in sorted(totals.items())],
            import_price,
            export_price,
            scheme.mechanism,
            scheme.allocation,
            community_price,
            share=export_price <= import_price,
        )
        settled.append(result)
        got: dict[tuple[str, int], tuple[int, int]] = {}
        for share in result.members:
            mine = by_home[share.home]
            ins = allocate(share.import_neighbours_mwh, [m.import_mwh for m in mine])
            outs = allocate(share.export_neighbours_mwh, [m.export_mwh for m in mine])
            for m, g_in, g_out in zip(mine, ins, outs, strict=True):
                got[(m.home, m.start_ms)] = (g_in, g_out)
        for i in quarters:
            start = boundaries[i]
            missing = len(members[i]) - len(known[i])
            estimated = sum(m.status in (ESTIMATED, RESET) for m in known[i])
            missing_total += missing
            estimated_total += estimated
            for m in members[i]:
                g_in, g_out = got.get((m.home, start), (0, 0))
                member_rows.append(
                    MemberIntervalRow(
                        m.home, start, m.status, m.import_mwh, m.export_mwh, g_in, g_out
                    )
                )
            interval_rows.append(
                IntervalRow(
                    start,
                    len(known[i]),
                    missing,
                    estimated,
                    sum(m.export_mwh for m in known[i]),
                    sum(m.import_mwh for m in known[i]),
                    sum(got.get((m.home, start), (0, 0))[0] for m in known[i]),
                    import_price,
                    export_price,
                    result.internal_price,
                )
            )
    day_settlement = DaySettlement(
        day=day,
        intervals=tuple(interval_rows),
        members=tuple(sorted(member_rows, key=lambda r: (r.start_ms, r.home))),
        postings=tuple(day_postings(settled)),
    )
    return day_settlement, missing_total, estimated_total


def check_scheme_change(
    ledger: Ledger, scheme: Scheme, days: Iterable[date], reprice: bool
) -> dict[date, Scheme]:
    """Days of closed months in ``days`` held under another scheme, with that scheme.

    Raises :class:`SchemeChangeError` (one line, for the operator) when there are any and
    ``reprice`` is false, or when the other scheme has another time zone, currency or minor
    unit: those move the days and the money themselves, so no difference can be posted.
    """
    changes = ledger.scheme_changes(scheme, days)
    if not changes:
        return changes
    first = min(changes)
    old = changes[first]
    period = period_of(first)
    same_month = [d for d in changes if period_of(d) == period]
    for day, held in sorted(changes.items()):
        if (held.timezone, held.currency, held.minor_unit) != (
            scheme.timezone,
            scheme.currency,
            scheme.minor_unit,
        ):
            raise SchemeChangeError(
                f"{period_of(day)} is closed under {held.label} in {held.timezone}, "
                f"{held.currency}; a scheme with another time zone, currency or minor unit "
                "cannot reprice it"
            )
    if not reprice:
        span = (
            f"on {first}"
            if len(same_month) == 1
            else f"on {len(same_month)} of the days asked ({first} to {max(same_month)})"
        )
        raise SchemeChangeError(
            f"{period} is closed and was priced under {old.label} {span}, but this scheme is "
            f"{scheme.label}: a closed month is not repriced silently; settle again with "
            "--reprice to post the difference in the next open month, labelled as a repricing"
        )
    return changes


def settle(
    store: Store,
    scheme: Scheme,
    days: Iterable[date],
    now_ms: int,
    progress: Callable[[date, str], None] | None = None,
    *,
    reprice: bool = False,
    official: OfficialFigures | None = None,
    replace_official: bool = False,
    tolerance: Tolerance | None = None,
) -> SettleResult:
    """Settle each local day in ``days`` and record it in the ledger (one transaction a day).

    A day of a closed month held under another scheme is repriced only with ``reprice``
    (:meth:`Ledger.reprice_day`); otherwise nothing is settled and :class:`SchemeChangeError`
    says why. Under imported prices, a day without a stored price for every interval stops
    the run before anything is written (:class:`MissingPriceError`).

    With ``official`` each day is settled on the grid operator's figures and the result's
    ``check`` compares the hub's readings with them (``tolerance``, default 1 Wh or 1 %).
    Days held on official figures are not settled on the hub's readings unless
    ``replace_official`` (:class:`MeterSourceError`, before anything is written).
    """
    ledger = Ledger(store)
    days = list(days)
    changes = check_scheme_change(ledger, scheme, days, reprice)
    check_prices(store, scheme, days)
    check_sources(ledger, days, official, replace_official)
    if official is not None:
        check_official(store, scheme, days, official)
    scheme_id = ledger.scheme_id(scheme, now_ms)
    result = SettleResult()
    for day in days:
        settled, missing, estimated = settle_day(store, scheme, day, official)
        old = changes.get(day)
        if old is None:
            outcome = ledger.record_day(settled, scheme_id, now_ms)
        else:
            at_old, _, _ = settle_day(store, old, day, official)
            outcome = ledger.reprice_day(settled, at_old, scheme_id, old, scheme, now_ms)
        result.days.setdefault(outcome, []).append(day)
        result.intervals += len(settled.intervals)
        result.provisional_intervals += sum(1 for iv in settled.intervals if iv.missing)
        result.missing_member_intervals += missing
        result.estimated_member_intervals += estimated
        if progress is not None:
            progress(day, outcome)
    if official is not None and days:
        result.check = check_against_hub(store, scheme, days, official, tolerance or Tolerance())
    return result
