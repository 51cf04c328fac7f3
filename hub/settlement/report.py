"""The community picture: charts of a month and a one-page HTML summary that links them.

Only community aggregates, only from data read for the ``community-stats`` purpose
(:func:`hub.settlement.source.read_community_counters`), and only over groups of at least
``k`` homes (the scheme's ``min_group``): a 15-minute interval in which fewer than ``k`` homes
have complete data is left out of every chart rather than shown, so no picture reveals a
household. Settlement figures on the page (savings, fairness) are community totals too.

Charts (PNG, matplotlib from the ``plots`` extra, imported only here):

- ``typical-day.png``: the neighbourhood's demand against its solar and wind supply over a
  typical day of the month (mean per local quarter-hour);
- ``month.png``: the same per day over the month;
- ``shared.png``: energy shared between neighbours against energy from and to the grid, per day;
- ``forecast.png``: the demand forecast's P10-P90 band and P50 against what happened, when the
  database holds forecasts (otherwise the page says they are not available).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hub.settlement.intervals import MISSING, counter_intervals, home_intervals, interval_boundaries
from hub.settlement.ledger import Ledger
from hub.settlement.metrics import CommunityReport, community_report
from hub.settlement.scheme import INTERVAL_MS, Scheme
from hub.settlement.source import HomeCounters, read_community_counters
from hub.settlement.statements import StatementError, money
from hub.settlement.terms import terms_lines
from hub.storage.store import Store
from protocol.quantities import Role

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KW_PER_KWH_PER_INTERVAL: Final = 4.0  # 1 kWh in 15 minutes is 4 kW on average
FORECAST_TABLES: Final = ("forecasts", "forecast_steps", "community_forecast")
_TIME_COLUMNS: Final = ("step_ms", "target_ms", "ts_ms", "start_ms")


class ReportError(Exception):
    """The report cannot be made (too few homes, no data, no plotting library)."""


@dataclass(frozen=True)
class CommunitySeries:
    """Per 15-minute interval, community sums (kWh) over the homes with complete data.

    A value is None where fewer than ``k`` homes had complete data in that interval.
    """

    starts_ms: list[int]
    homes: list[int]
    imported_kwh: list[float | None]
    exported_kwh: list[float | None]
    pv_kwh: list[float | None]
    wind_kwh: list[float | None]
    consumption_kwh: list[float | None]
    shared_kwh: list[float | None]

    @property
    def shown(self) -> int:
        return sum(1 for v in self.consumption_kwh if v is not None)


def community_series(
    homes: dict[str, HomeCounters], boundaries: Sequence[int], max_gap_ms: int, k: int
) -> CommunitySeries:
    """Aggregate each home's grid and generation counters per interval, over ``>= k`` homes."""
    n = len(boundaries) - 1
    sums = {name: [0] * n for name in ("imp", "exp", "pv", "wind")}
    imports: list[list[int]] = [[] for _ in range(n)]
    exports: list[list[int]] = [[] for _ in range(n)]
    counted = [0] * n
    for counters in homes.values():
        if not counters.grid:
            continue
        grid = home_intervals(counters.home, counters.grid, boundaries, max_gap_ms)
        gens = [
            (role, counter_intervals(series, boundaries, max_gap_ms))
            for role, series in counters.generation.values()
        ]
        for i in range(n):
            g = grid[i]
            if g is None or g.status == MISSING:
                continue
            if any(ci.status[i] == MISSING for _, ci in gens):
                continue
            counted[i] += 1
            sums["imp"][i] += g.import_mwh
            sums["exp"][i] += g.export_mwh
            imports[i].append(g.import_mwh)
            exports[i].append(g.export_mwh)
            for role, ci in gens:
                key = "pv" if role is Role.PV else "wind"
                sums[key][i] += ci.energy_mwh[i] or 0

    def shown(values: list[int]) -> list[float | None]:
        return [v / 1e6 if counted[i] >= k else None for i, v in enumerate(values)]

    consumption = [
        sums["imp"][i] - sums["exp"][i] + sums["pv"][i] + sums["wind"][i] for i in range(n)
    ]
    shared = [min(sum(imports[i]), sum(exports[i])) for i in range(n)]
    return CommunitySeries(
        starts_ms=list(boundaries[:-1]),
        homes=counted,
        imported_kwh=shown(sums["imp"]),
        exported_kwh=shown(sums["exp"]),
        pv_kwh=shown(sums["pv"]),
        wind_kwh=shown(sums["wind"]),
        consumption_kwh=shown(consumption),
        shared_kwh=shown(shared),
    )


def read_series(store: Store, scheme: Scheme, period: str) -> CommunitySeries:
    start_ms, end_ms = scheme.month_bounds_ms(period)
    homes = read_community_counters(store, start_ms, end_ms)
    boundaries = interval_boundaries(start_ms, end_ms, INTERVAL_MS)
    return community_series(homes, boundaries, scheme.max_gap_ms, scheme.min_group)


def _total(values: Sequence[float | None]) -> float:
    return sum(v for v in values if v is not None)


# -- forecast --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastBand:
    starts_ms: list[int]
    p10_kw: list[float]
    p50_kw: list[float]
    p90_kw: list[float]


def read_forecast_band(store: Store, start_ms: int, end_ms: int) -> ForecastBand | str:
    """The stored demand forecast over the month, or why it is not available.

    Looks for a table of forecast steps (``forecasts``, ``forecast_steps`` or
    ``community_forecast``) with a time column (UTC ms), ``p10``/``p50``/``p90`` columns in W
    and, when it has one, a ``target`` column naming ``demand``.
    """
    conn = store.reader()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    table = next((t for t in FORECAST_TABLES if t in tables), None)
    if table is None:
        return "no forecast is stored in this hub database"
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    time_col = next((c for c in _TIME_COLUMNS if c in columns), None)
    quantiles = [next((c for c in columns if c.startswith(q)), None) for q in ("p10", "p50", "p90")]
    if time_col is None or None in quantiles:
        return f"the forecast table {table!r} has a layout this report does not know"
    where = f"{time_col} >= ? AND {time_col} < ?"
    args: tuple[object, ...] = (start_ms, end_ms)
    if "target" in columns:
        where += " AND target = ?"
        args = (*args, "demand")
    # Identifiers come from FORECAST_TABLES and the table's own schema; values are bound.
    picked = ", ".join(str(q) for q in quantiles)
    sql = f"SELECT {time_col}, {picked} FROM {table} WHERE {where} ORDER BY {time_col}"  # noqa: S608
    rows = conn.execute(sql, args).fetchall()
    if not rows:
        return "no forecast was stored for this month"
    return ForecastBand(
        [int(r[0]) for r in rows],
        [r[1] / 1000 for r in rows],
        [r[2] / 1000 for r in rows],
        [r[3] / 1000 for r in rows],
    )


# -- charts ----------------------------------------------------------------------------------


def _new_figure(title: str) -> Figure:
    # A bare Figure renders with the Agg canvas: no pyplot, no display, no global state.
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - the optional plots extra
    except ImportError:
        raise ReportError("charts need matplotlib: pip install 'coopwatt[plots]'") from None
    fig = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    fig.suptitle(title)
    return fig


def _kw(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v * KW_PER_KWH_PER_INTERVAL for v in values]


def _typical_day(
    series: CommunitySeries, scheme: Scheme
) -> tuple[list[float], dict[str, list[float]]]:
    slots: dict[int, dict[str, list[float]]] = {}
    names = ("consumption_kwh", "pv_kwh", "wind_kwh", "shared_kwh")
    for i, start in enumerate(series.starts_ms):
        t = scheme.local(start)
        slot = t.hour * 4 + t.minute // 15
        for name in names:
            v = getattr(series, name)[i]
            if v is not None:
                slots.setdefault(slot, {n: [] for n in names})[name].append(v)
    hours = [s / 4 for s in range(96)]
    out = {
        name: [
            (sum(vals) / len(vals) * KW_PER_KWH_PER_INTERVAL)
            if (vals := slots.get(s, {}).get(name))
            else math.nan
            for s in range(96)
        ]
        for name in names
    }
    return hours, out


def chart_typical_day(series: CommunitySeries, scheme: Scheme, period: str, path: Path) -> None:
    hours, v = _typical_day(series, scheme)
    fig = _new_figure(f"A typical day in {period}: demand and local supply")
    ax = fig.add_subplot()
    pv = [0.0 if math.isnan(x) else x for x in v["pv_kwh"]]
    wind = [0.0 if math.isnan(x) else x for x in v["wind_kwh"]]
    ax.stackplot(
        hours, pv, wind, labels=["solar", "wind"], colors=["#f2b705", "#5aa9e6"], alpha=0.8
    )
    ax.plot(hours, v["consumption_kwh"], color="#222222", linewidth=2, label="demand")
    ax.plot(
        hours, v["shared_kwh"], color="#2a9d5c", linestyle="--", label="shared between neighbours"
    )
    ax.set_xlabel(f"local time ({scheme.timezone})")
    ax.set_ylabel("average power, kW")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.savefig(path)


def _daily(series: CommunitySeries, scheme: Scheme, name: str) -> dict[str, float]:
    """Per local day, the sum over its shown intervals; NaN for a day with none (a gap)."""
    out: dict[str, float] = {}
    for i, start in enumerate(series.starts_ms):
        v = getattr(series, name)[i]
        day = scheme.local(start).date().isoformat()
        out.setdefault(day, math.nan)
        if v is not None:
            out[day] = v if math.isnan(out[day]) else out[day] + v
    return out


def chart_month(series: CommunitySeries, scheme: Scheme, period: str, path: Path) -> None:
    demand = _daily(series, scheme, "consumption_kwh")
    pv = _daily(series, scheme, "pv_kwh")
    wind = _daily(series, scheme, "wind_kwh")
    days = sorted(demand)
    x = list(range(1, len(days) + 1))
    fig = _new_figure(f"{period} day by day: demand and local supply")
    ax = fig.add_subplot()
    ax.bar(x, [pv[d] for d in days], color="#f2b705", label="solar")
    ax.bar(x, [wind[d] for d in days], bottom=[pv[d] for d in days], color="#5aa9e6", label="wind")
    ax.plot(x, [demand[d] for d in days], color="#222222", marker="o", markersize=3, label="demand")
    ax.set_xlabel("day of the month")
    ax.set_ylabel("energy, kWh")
    ax.set_xlim(0.3, len(days) + 0.7)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path)


def chart_shared(series: CommunitySeries, scheme: Scheme, period: str, path: Path) -> None:
    shared = _daily(series, scheme, "shared_kwh")
    imported = _daily(series, scheme, "imported_kwh")
    exported = _daily(series, scheme, "exported_kwh")
    days = sorted(shared)
    x = list(range(1, len(days) + 1))
    fig = _new_figure(f"{period}: energy shared between neighbours")
    ax = fig.add_subplot()
    ax.bar(x, [shared[d] for d in days], color="#2a9d5c", label="shared between neighbours")
    ax.bar(
        x,
        [imported[d] - shared[d] for d in days],
        bottom=[shared[d] for d in days],
        color="#adb5bd",
        label="bought from the grid",
    )
    ax.bar(
        x,
        [-(exported[d] - shared[d]) for d in days],
        color="#e76f51",
        label="sold to the grid (below zero)",
    )
    ax.axhline(0, color="#222222", linewidth=0.8)
    ax.set_xlabel("day of the month")
    ax.set_ylabel("energy, kWh")
    ax.set_xlim(0.3, len(days) + 0.7)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path)


def chart_forecast(
    series: CommunitySeries, band: ForecastBand, scheme: Scheme, period: str, path: Path
) -> None:
    actual = dict(zip(series.starts_ms, _kw(series.consumption_kwh), strict=True))
    month_start, _ = scheme.month_bounds_ms(period)
    times = [1 + (t - month_start) / 86_400_000 for t in band.starts_ms]
    fig = _new_figure(f"{period}: demand forecast against what happened")
    ax = fig.add_subplot()
    ax.fill_between(
        times, band.p10_kw, band.p90_kw, color="#9ecae1", alpha=0.6, label="forecast P10-P90"
    )
    ax.plot(times, band.p50_kw, color="#3182bd", linewidth=1, label="forecast P50")
    ax.plot(
        times,
        [actual.get(t, math.nan) for t in band.starts_ms],
        color="#222222",
        linewidth=1,
        label="actual",
    )
    ax.set_ylabel("community demand, kW")
    ax.set_xlabel("day of the month")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.savefig(path)


# -- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    charts: list[Path]
    forecast_note: str | None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def write_report(store: Store, period: str, out_dir: Path, now_ms: int) -> ReportFiles:
    """Write the month's charts and ``index.html`` into ``out_dir``; refuses under k homes."""
    scheme = Ledger(store).scheme_for(period)
    if scheme is None:
        raise ReportError(f"{period} has not been settled: run coopwatt-hub settle first")
    series = read_series(store, scheme, period)
    k = scheme.min_group
    if series.shown == 0:
        most = max(series.homes, default=0)
        raise ReportError(
            f"no 15-minute interval of {period} has data from at least {k} homes "
            f"(at most {most}): the community picture needs a group of at least {k}"
        )
    try:
        report = community_report(
            store,
            period,
            now_ms,
            generation_kwh=_total(series.pv_kwh) + _total(series.wind_kwh),
            consumption_kwh=_total(series.consumption_kwh),
        )
    except StatementError as exc:
        raise ReportError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = [out_dir / "typical-day.png", out_dir / "month.png", out_dir / "shared.png"]
    chart_typical_day(series, scheme, period, charts[0])
    chart_month(series, scheme, period, charts[1])
    chart_shared(series, scheme, period, charts[2])
    start_ms, end_ms = scheme.month_bounds_ms(period)
    band = read_forecast_band(store, start_ms, end_ms)
    note: str | None = None
    if isinstance(band, ForecastBand):
        charts.append(out_dir / "forecast.png")
        chart_forecast(series, band, scheme, period, charts[-1])
    else:
        note = band
    page = out_dir / "index.html"
    page.write_text(_html(report, series, scheme, charts, note), encoding="utf-8")
    (out_dir / "figures.json").write_text(
        json.dumps(report_json(report, series, k), indent=2) + "\n", encoding="utf-8"
    )
    return ReportFiles(page, charts, note)


def report_json(
    report: CommunityReport, series: CommunitySeries | None, k: int
) -> dict[str, object]:
    """Community figures only: member savings appear as a sorted list without home ids."""
    data = asdict(report)
    data.pop("savings")
    data["savings_minor_sorted"] = sorted(s.saving_minor for s in report.savings)
    data["total_saving_minor"] = report.total_saving_minor
    data["min_group"] = k
    if series is not None:
        data["intervals_shown"] = series.shown
    return data


def _html(
    report: CommunityReport,
    series: CommunitySeries,
    scheme: Scheme,
    charts: list[Path],
    note: str | None,
) -> str:
    e = html.escape
    m = scheme.minor_unit
    cur = e(report.currency)
    shown_days = {
        scheme.local(t).date()
        for t, v in zip(series.starts_ms, series.consumption_kwh, strict=True)
        if v is not None
    }
    first, last = scheme.month_bounds_ms(report.period)
    days = (scheme.local(last) - scheme.local(first) + timedelta(hours=1)).days
    savings = sorted((s.saving_minor for s in report.savings), reverse=True)
    figures = [
        ("Members", f"{report.members}"),
        ("Energy shared between neighbours", f"{report.shared_kwh:,.1f} kWh"),
        ("Self-consumption (local generation used locally)", _pct(report.self_consumption)),
        ("Self-sufficiency (demand met locally)", _pct(report.self_sufficiency)),
        ("Members' exports used by neighbours", _pct(report.sharing_rate_supply)),
        ("Members' imports supplied by neighbours", _pct(report.sharing_rate_demand)),
        (
            "Peak-to-average ratio of grid import",
            "n/a" if report.peak_to_average is None else f"{report.peak_to_average:.1f}",
        ),
        ("Saved together against grid-only bills", f"{money(report.total_saving_minor, m)} {cur}"),
        (
            "Fairness of savings (Jain's index, 1 = equal per kWh)",
            "n/a" if report.fairness_index is None else f"{report.fairness_index:.2f}",
        ),
    ]
    rows = "\n".join(f"<tr><th>{e(a)}</th><td>{e(b)}</td></tr>" for a, b in figures)
    captions = {
        "typical-day.png": "A typical day: the neighbourhood's demand, its solar and wind supply",
        "month.png": "Day by day: demand against local supply",
        "shared.png": "Energy shared between neighbours, bought from and sold to the grid",
        "forecast.png": "The demand forecast's band against what happened",
    }
    imgs = "\n".join(
        f'<figure><a href="{e(c.name)}"><img src="{e(c.name)}" alt="{e(captions[c.name])}"></a>'
        f"<figcaption>{e(captions[c.name])}</figcaption></figure>"
        for c in charts
    )
    forecast = (
        ""
        if note is None
        else f"<p class=note>Forecast against actual: not available ({e(note)}).</p>"
    )
    state = (
        "final" if report.final else "provisional: figures may change as late meter data arrives"
    )
    saving_list = ", ".join(money(s, m) for s in savings)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>coopwatt: {e(report.period)} in our neighbourhood</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th {{ text-align: left; font-weight: normal; padding: .2em 1em .2em 0; }}
td {{ font-weight: bold; text-align: right; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} .note {{ color: #555; }}
</style></head><body>
<h1>{e(report.period)} in our neighbourhood</h1>
<p>{e(state)}. Pricing of shared energy: {e(report.mechanism.upper())}.
{"".join(f"{e(line[0].upper() + line[1:])}. " for line in _terms(report))}
Charts show only quarter-hours with data from at least {scheme.min_group} homes
({len(shown_days)} of {days} days have some).</p>
<table>
{rows}
</table>
<p>Each member's saving this month, largest first, in {cur}: {e(saving_list)}.</p>
{imgs}
{forecast}
</body></html>
"""


def _terms(report: CommunityReport) -> list[str]:
    return [] if report.terms is None else terms_lines(report.terms, report.currency)


# -- text and JSON of the community report ----------------------------------------------------


def format_community_text(report: CommunityReport) -> str:
    m = report.minor_unit
    lines = [
        f"community report {report.period} ({'final' if report.final else 'provisional'}), "
        f"{report.members} members, pricing {report.mechanism.upper()}",
        *(f"  {line}" for line in _terms(report)),
        f"  demand through members' meters   {report.demand_kwh:12.3f} kWh",
        f"  supply through members' meters   {report.supply_kwh:12.3f} kWh",
        f"  shared between neighbours        {report.shared_kwh:12.3f} kWh",
        f"  bought from the grid             {report.grid_import_kwh:12.3f} kWh",
        f"  sold to the grid                 {report.grid_export_kwh:12.3f} kWh",
        f"  self-consumption                 {_pct(report.self_consumption):>12}",
        f"  self-sufficiency                 {_pct(report.self_sufficiency):>12}",
        f"  exports used by neighbours       {_pct(report.sharing_rate_supply):>12}",
        f"  imports supplied by neighbours   {_pct(report.sharing_rate_demand):>12}",
        "  peak-to-average (grid import)    "
        + ("n/a" if report.peak_to_average is None else f"{report.peak_to_average:12.2f}"),
        "  fairness index (Jain)            "
        + ("n/a" if report.fairness_index is None else f"{report.fairness_index:12.3f}"),
        f"  provisional intervals            {report.provisional_intervals:12d}"
        f" of {report.intervals}",
        "",
        f"{'home':<32} {'grid-only':>12} {'charges':>12} {'saving':>12}  ({report.currency})",
    ]
    for s in report.savings:
        lines.append(
            f"{s.home:<32} {money(s.grid_only_minor, m):>12} {money(s.charges_minor, m):>12} "
            f"{money(s.saving_minor, m):>12}"
        )
    if report.members_worse_off:
        lines.append(f"{report.members_worse_off} member(s) pay more than on grid tariffs alone")
    return "\n".join(lines) + "\n"


def format_community_json(report: CommunityReport) -> str:
    return json.dumps(asdict(report), indent=2, default=str) + "\n"  # Decimal prices as text
