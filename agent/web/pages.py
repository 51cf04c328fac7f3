"""What each page shows: plain data for the templates, built from the agent's state and the
home's own files. Words stay message ids here; the templates translate them. Nothing in this
module writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agent.energy_log import EnergyTotals
from agent.local_link import AgentState, RunState
from agent.web import words
from agent.web.charts import Series, bar_chart
from agent.web.i18n import Formats
from agent.web.periods import Period, day_hours, local_day, month_of, week_of
from protocol.consent import ConsentGrant, Purpose
from protocol.payloads import LevelSpan, Receipt, Statement
from protocol.quantities import GLOSSARY, Role

BENEFIT_SHOWN_WH = 50  # a run's local benefit is worth mentioning from here


# -- Now --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    day: str  # "" today; else the weekday and date, in the reader's language
    tomorrow: bool
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class Run:
    appliance: str
    name: str
    windows: list[Window]
    reason: str
    benefit_kwh: str | None
    active: bool
    answer: str | None  # a message id (words.ANSWERS)


@dataclass(frozen=True, slots=True)
class Span:
    start: str
    end: str
    level: str
    reason: str


@dataclass(frozen=True, slots=True)
class NowPage:
    level: str | None
    reason: str
    valid_until: str | None
    snoozed_until: str | None
    expired: bool
    course: list[Span]
    runs: list[Run]
    prompts_shared: bool


def _window(start_ms: int, end_ms: int, now_ms: int, fmt: Formats) -> Window:
    day = fmt.local(start_ms).date()
    today = fmt.local(now_ms).date()
    tomorrow = day == today + timedelta(days=1)
    label = "" if day == today or tomorrow else fmt.weekday_date(day)
    return Window(label, tomorrow, fmt.time(start_ms), fmt.time(end_ms))


def _run(run: RunState, now_ms: int, fmt: Formats) -> Run:
    windows = [_window(w[0], w[1], now_ms, fmt) for w in run.windows if len(w) == 2]
    benefit = fmt.kwh(run.benefit_wh) if run.benefit_wh >= BENEFIT_SHOWN_WH else None
    return Run(
        run.appliance, run.appliance.replace("-", " "), windows, run.reason, benefit,
        run.active, words.ANSWERS.get(run.answer or ""),
    )  # fmt: skip


def now_page(state: AgentState, fmt: Formats) -> NowPage:
    advice = state.advice
    now = state.now_ms
    # The hub starts a new span whenever its reason's figure changes (every quarter hour on a
    # sunny day); the household wants to know when the light changes: one line per level, with
    # the reason it starts with.
    merged: list[LevelSpan] = []
    for s in advice.levels:
        if s.end_ms <= now:
            continue
        if merged and merged[-1].level == s.level:
            merged[-1] = LevelSpan(merged[-1].start_ms, s.end_ms, s.level, merged[-1].reason)
        else:
            merged.append(s)
    course = [
        Span(fmt.time(max(s.start_ms, now)), fmt.time(s.end_ms), s.level, s.reason) for s in merged
    ]
    return NowPage(
        level=advice.level,
        reason=advice.reason,
        valid_until=fmt.time(advice.valid_until_ms) if advice.valid_until_ms else None,
        snoozed_until=fmt.time(advice.snoozed_until_ms) if advice.snoozed_until_ms else None,
        expired=advice.expired,
        course=course if advice.level is not None else [],
        runs=[_run(r, now, fmt) for r in advice.runs],
        prompts_shared=state.prompts_shared,
    )


# -- My energy ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnergyRow:
    label: str
    imported: str
    exported: str
    own: str  # own solar and wind
    self_used: str  # own generation used at home
    used: str  # everything the home used
    complete: bool


@dataclass(frozen=True, slots=True)
class EnergyBlock:
    key: str  # "today", "week", "month"
    first: str
    last: str
    chart: str  # SVG markup
    rows: list[EnergyRow]
    total: EnergyRow
    complete: bool
    neighbours_kwh: str | None = None  # from the month's statement
    neighbours_period: str | None = None


def _sum(totals: Sequence[EnergyTotals]) -> EnergyTotals:
    return EnergyTotals(
        totals[0].start_ms if totals else 0, totals[-1].end_ms if totals else 0,
        sum(t.import_wh for t in totals), sum(t.export_wh for t in totals),
        sum(t.pv_wh for t in totals), sum(t.wind_wh for t in totals),
        sum(t.self_used_wh for t in totals), sum(t.consumed_wh for t in totals),
        all(t.complete for t in totals),
    )  # fmt: skip


def _row(label: str, t: EnergyTotals, fmt: Formats) -> EnergyRow:
    return EnergyRow(
        label, fmt.kwh(t.import_wh), fmt.kwh(t.export_wh), fmt.kwh(t.pv_wh + t.wind_wh),
        fmt.kwh(t.self_used_wh), fmt.kwh(t.consumed_wh), t.complete,
    )  # fmt: skip


def energy_block(
    key: str,
    period: Period,
    totals: list[EnergyTotals],
    texts: dict[str, str],
    fmt: Formats,
) -> EnergyBlock:
    """One period's chart and table. ``texts`` holds the translated words the chart draws:
    its title, description and the three series' names."""
    labels = slot_labels(key, period, fmt)
    short = chart_labels(key, period, fmt)
    kwh = [
        Series(texts["self_used"], "s-own", [t.self_used_wh / 1000 for t in totals]),
        Series(texts["imported"], "s-import", [t.import_wh / 1000 for t in totals]),
        Series(texts["exported"], "s-export", [t.export_wh / 1000 for t in totals], below=True),
    ]
    total = _sum(totals)
    desc = texts["desc"].format(
        imported=fmt.kwh(total.import_wh), exported=fmt.kwh(total.export_wh),
        own=fmt.kwh(total.self_used_wh),
    )  # fmt: skip
    chart = bar_chart(
        f"chart-{key}", short, kwh, title=texts["title"], desc=desc,
        number=lambda v: fmt.decimal(v, 1 if abs(v) < 10 and v != int(v) else 0),
    )  # fmt: skip
    return EnergyBlock(
        key, fmt.date(period.first_day), fmt.date(period.last_day), chart,
        [_row(label, t, fmt) for label, t in zip(labels, totals, strict=True)],
        _row("", total, fmt), total.complete,
    )  # fmt: skip


def periods_now(now_ms: int, fmt: Formats) -> dict[str, Period]:
    today = local_day(now_ms, fmt.zone)
    return {
        "today": day_hours(today, fmt.zone),
        "week": week_of(today, fmt.zone),
        "month": month_of(today, fmt.zone),
    }


def slot_labels(key: str, period: Period, fmt: Formats) -> list[str]:
    """The table's row labels: ``14:00``, ``Mon 23 Mar``."""
    if key == "today":
        return [fmt.time(int(s.timestamp() * 1000)) for s in period.starts]
    return [fmt.weekday_date(s) for s in period.starts]


def chart_labels(key: str, period: Period, fmt: Formats) -> list[str]:
    """The chart's slot labels, short: the hour, the weekday, the day of the month."""
    if key == "today":
        return [str(s.hour) for s in period.starts]
    if key == "week":
        return [fmt.weekday_short(s) for s in period.starts]
    return [str(s.day) for s in period.starts]


def neighbours_wh(statement: Statement | None) -> int | None:
    """Energy the home bought from its neighbours in the statement's month (Wh)."""
    if statement is None:
        return None
    return next((ln.energy_wh for ln in statement.lines if ln.item == "import-neighbours"), 0)


# -- Money -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MoneyLine:
    item: str  # message id
    energy_kwh: str | None
    direction: str  # "in" (the home received energy), "out", "" (no energy)
    amount: str  # absolute, in the currency
    paid: bool  # True: the home pays it; False: the home is paid
    price: str | None  # per kWh


@dataclass(frozen=True, slots=True)
class MoneyStatement:
    period: str
    month: str
    final: bool
    lines: list[MoneyLine]
    total: str
    total_paid: bool
    grid_only: str
    saving: str
    saved: bool  # False: sharing cost more than grid-only
    issued: str
    intervals: int
    provisional_intervals: int
    estimated_intervals: int


def money_statement(s: Statement, fmt: Formats) -> MoneyStatement:
    def money(minor: int) -> str:
        return fmt.money(abs(minor), s.currency, s.minor_unit)

    lines = []
    for ln in s.lines:
        price = None
        if ln.energy_wh and ln.item in ("import-neighbours", "import-grid", "export-neighbours",
                                         "export-grid"):  # fmt: skip
            price = fmt.price_per_kwh(abs(ln.amount_minor), abs(ln.energy_wh), s.currency,
                                      s.minor_unit)  # fmt: skip
        direction = "in" if ln.energy_wh > 0 else "out" if ln.energy_wh < 0 else ""
        lines.append(MoneyLine(
            words.STATEMENT_ITEMS.get(ln.item, ln.item),
            fmt.kwh(abs(ln.energy_wh)) if ln.energy_wh else None, direction,
            money(ln.amount_minor), ln.amount_minor >= 0, price,
        ))  # fmt: skip
    year, month = (int(x) for x in s.period.split("-"))
    return MoneyStatement(
        s.period, fmt.month(year, month), s.final, lines, money(s.total_minor),
        s.total_minor >= 0, money(s.grid_only_minor), money(s.saving_minor),
        s.saving_minor >= 0, fmt.datetime(s.issued_ms), s.intervals, s.provisional_intervals,
        s.estimated_intervals,
    )  # fmt: skip


# -- Sharing ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SharedPurpose:
    purpose: str
    name: str  # message id
    resolution: str  # message id
    days: int


@dataclass(frozen=True, slots=True)
class SharedStream:
    stream: str
    name: str  # message id
    details: str  # message id
    purposes: list[SharedPurpose]


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    when: str
    shared: list[tuple[str, list[str]]]  # (stream name, purpose names): message ids
    hash_prefix: str


def shared_streams(grant: ConsentGrant) -> list[SharedStream]:
    out = []
    for role in Role:
        purposes = grant.streams.get(role.value)
        if not purposes:
            continue
        out.append(SharedStream(
            role.value, words.STREAMS[role.value], words.STREAM_DETAILS[role.value],
            [SharedPurpose(p.value, words.PURPOSES[p.value],
                           words.RESOLUTIONS[purposes[p.value].resolution.value],
                           purposes[p.value].retention_days)
             for p in Purpose if p.value in purposes],
        ))  # fmt: skip
    return out


def unshared_streams(grant: ConsentGrant) -> list[str]:
    return [words.STREAMS[r.value] for r in Role if not grant.streams.get(r.value)]


def versions(history: list[ConsentGrant], fmt: Formats) -> list[Version]:
    out = []
    for g in reversed(history):
        shared = [
            (words.STREAMS.get(role, role), [words.PURPOSES.get(p, p) for p in sorted(ps)])
            for role, ps in sorted(g.streams.items())
        ]
        out.append(Version(g.version, fmt.datetime(g.issued_ms), shared, g.hash[:12]))
    return out


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    when: str
    kind: str
    text: str  # message id with %(version)s
    version: int
    erased: list[tuple[str, int]] = field(default_factory=list)  # (stream name id, readings)
    reason: str | None = None


def receipt_rows(receipts: list[Receipt], fmt: Formats) -> list[ReceiptRow]:
    return [
        ReceiptRow(
            fmt.datetime(r.ts_ms),
            r.kind,
            words.RECEIPTS[r.kind],
            r.version,
            [(words.STREAMS.get(s, s), n) for s, n in sorted((r.erased or {}).items())],
            r.reason,
        )
        for r in receipts
    ]


# -- The Pi ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reading:
    name: str  # message id
    value: str
    unit: str


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    role: str  # message id
    online: bool
    error: str | None
    last_reading: str | None
    readings: list[Reading]


def _reading(key: str, value: float | str, fmt: Formats) -> Reading:
    label = words.QUANTITIES.get(key, key)
    if isinstance(value, str):
        return Reading(label, value, "")
    q = GLOSSARY.get(key)
    unit = q.unit if q is not None else ""
    if unit == "Wh":
        return Reading(label, fmt.kwh(value), "kWh")
    if unit == "1":
        return Reading(label, fmt.decimal(value, 2), "")
    return Reading(label, fmt.decimal(value, 1 if abs(value) < 100 else 0), unit)


def devices(state: AgentState, fmt: Formats) -> list[Device]:
    out = []
    for d in state.devices:
        last = d.last_ts_ms or d.last_ok_ms
        out.append(Device(
            d.name, words.ROLES.get(d.role, d.role), d.online, d.error,
            fmt.datetime(last) if last else None,
            [_reading(k, v, fmt) for k, v in sorted((d.quantities or {}).items())],
        ))  # fmt: skip
    return out


def pi_facts(state: AgentState, fmt: Formats) -> dict[str, Any]:
    return {
        "coop": state.coop,
        "home": state.home,
        "version": state.version,
        "connected": state.connected,
        "since": fmt.datetime(state.connected_since_ms) if state.connected_since_ms else None,
        "last": fmt.datetime(state.last_connected_ms) if state.last_connected_ms else None,
        "backlog": fmt.decimal(state.backlog, 0),
        "unacked_age_s": state.unacked_age_s,
        "lost": fmt.decimal(state.lost, 0),
        "compacted": fmt.decimal(state.compacted, 0),
    }
