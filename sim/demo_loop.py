"""The demo's whole loop: what the cooperative did with the simulated day's readings.

The demo's hub runs the real forecast and prompts (:class:`hub.app.Hub`), so this module gives it
what a real cooperative configures: where it is (a ``[site]``), the weather (the simulated sky,
imported from an Open-Meteo file the simulator writes: :mod:`sim.weather`), each home's
flexible appliances and time zone, and a settlement scheme. At the end of the day it gathers,
from the hub's own library, what the newcomer should see:

- the forecast the hub issued last (when, which model or fallback, the next day's demand, PV and
  wind);
- what each home's light said and when: the prompts each home's agent received, as level spans
  and appliance windows in the demo's local time (or why a home got none);
- each home's settlement for the day in money: the day settled by :func:`hub.settlement.engine.
  settle` and shown by :func:`hub.settlement.statements.build_statement`, as ``coopwatt-hub
  settle`` and ``statement`` do.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from agent.service import Agent
from hub.forecast.service import import_weather
from hub.forecast.site import Site
from hub.forecast.weather import load_weather_file
from hub.settlement.engine import day_range, settle
from hub.settlement.scheme import DAYS, Scheme, Tariff, parse_scheme, period_of
from hub.settlement.statements import build_statements, money
from hub.storage.store import Store
from protocol.payloads import Appliance, Forecast, Prompts, Statement, TargetQuantiles
from sim.household import SimHome
from sim.weather import sky_forecast_json

TIMEZONE: Final = "Europe/Amsterdam"  # the simulated homes are at 52° N, 5° E
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000

# The cooperative's settlement scheme, as a settlement.toml would hold it.
SCHEME: Final[Scheme] = parse_scheme(
    {
        "timezone": TIMEZONE,
        "currency": "EUR",
        "minor_unit": 2,
        "mechanism": "sdr",
        "min_group": 2,
        "max_gap_minutes": 15,
        "import_tariff": {
            "price_per_kwh": "0.30",
            "windows": [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "from": "17:00",
                    "to": "21:00",
                    "price_per_kwh": "0.38",
                }
            ],
        },
        "export_tariff": {"price_per_kwh": "0.08"},
    }
)

_DISHWASHER: Final = Appliance("dishwasher", 1100.0, 120, 8 * 60, 22 * 60, False, 7)
_WASHER: Final = Appliance("washing-machine", 1000.0, 120, 8 * 60, 20 * 60, False, 4)
_EV: Final = Appliance("ev-charger", 7000.0, 240, 9 * 60, 7 * 60, True, 3)
# What each simulated household lets the hub plan, by home number; the fifth declares nothing,
# so the demo shows a home that gets no prompts and says why.
_APPLIANCES: Final = (
    (_DISHWASHER, _WASHER),
    (_EV, _DISHWASHER),
    (_WASHER,),
    (_DISHWASHER,),
    (),
)


def demo_appliances(i: int) -> tuple[Appliance, ...]:
    """The flexible appliances of the demo's ``i``-th home (from 0), as its agent declares them."""
    return _APPLIANCES[i % len(_APPLIANCES)]


def demo_site(homes: Sequence[SimHome]) -> Site:
    """The cooperative's ``[site]``: where the simulated homes are, their PV and wind nameplate
    (a real cooperative configures it or lets the hub estimate it from history), its time zone."""
    first = homes[0]
    pv = sum(h.pv_capacity_w for h in homes)
    wind = sum(h.wind_rated_w for h in homes if h.with_wind)
    return Site(first.lat_deg, first.lon_deg, pv or None, wind or None, TIMEZONE)


def import_sky(
    store: Store, home: SimHome, start_ms: int, end_ms: int, workdir: Path, now_ms: int
) -> int:
    """Write the simulated sky from a day before ``start_ms`` to two days after ``end_ms`` as an
    Open-Meteo file, and import it into the hub as ``coopwatt-hub weather import`` does; returns
    the hours imported. No network: the file comes from the simulator."""
    path = workdir / "weather.json"
    path.write_text(
        sky_forecast_json(
            home.weather_seed, start_ms - DAY_MS, end_ms + 2 * DAY_MS, home.lat_deg, home.lon_deg
        ),
        encoding="utf-8",
    )
    return import_weather(store, load_weather_file(path), now_ms)


# -- the prompts each home's agent received ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    at_ms: int  # the simulated time the agent took it
    prompts: Prompts


class PromptLog:
    """The prompts each agent took from the broker, in order, as its light and button used them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[str, list[Received]] = {}

    def follow(self, agent: Agent) -> None:
        """Record what ``agent`` takes, then let it take it as usual."""
        home_prompts = agent.prompts
        take = home_prompts.take

        def recording(prompts: Prompts | None) -> None:
            if prompts is not None:
                with self._lock:
                    seen = self._received.setdefault(home_prompts.home, [])
                    if not any(r.prompts.prompt == prompts.prompt for r in seen):
                        seen.append(Received(agent.clock.now_ms(), prompts))
            take(prompts)

        home_prompts.take = recording  # type: ignore[method-assign]

    def received(self, home: str) -> list[Received]:
        with self._lock:
            return list(self._received.get(home, []))


# -- the summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HomeSettlement:
    """A home's statement for one month of the run (its figures are for the run's days)."""

    statement: Statement

    def line(self, item: str) -> tuple[int, int]:
        """(Wh, minor units) of a statement line, both as positive amounts."""
        for line in self.statement.lines:
            if line.item == item:
                return abs(line.energy_wh), abs(line.amount_minor)
        return 0, 0


@dataclass(frozen=True)
class LoopSummary:
    """What the cooperative did with the day: forecast, prompts, settlement."""

    start_ms: int
    end_ms: int
    forecast: Forecast | None
    forecasts_issued: int
    appliances: dict[str, tuple[Appliance, ...]]
    prompts: dict[str, list[Received]]
    days: list[date]
    settlements: list[HomeSettlement] = field(default_factory=list)

    def neighbours_wh(self) -> tuple[int, int]:
        """(bought from neighbours, sold to neighbours) over every home, Wh."""
        return (
            sum(s.line("import-neighbours")[0] for s in self.settlements),
            sum(s.line("export-neighbours")[0] for s in self.settlements),
        )

    def neighbours_minor(self) -> tuple[int, int]:
        """(paid to neighbours, earned from neighbours) over every home, minor units."""
        return (
            sum(s.line("import-neighbours")[1] for s in self.settlements),
            sum(s.line("export-neighbours")[1] for s in self.settlements),
        )


def settle_run(
    store: Store, start_ms: int, end_ms: int, now_ms: int
) -> tuple[list[date], list[HomeSettlement]]:
    """Settle the local days the run touched and build each home's statement for each month
    among them, as ``coopwatt-hub settle`` and ``coopwatt-hub statement`` do."""
    days = day_range(SCHEME.day_of(start_ms), SCHEME.day_of(max(start_ms, end_ms - 1)))
    settle(store, SCHEME, days, now_ms)
    periods = sorted({period_of(d) for d in days})
    return days, [HomeSettlement(s) for p in periods for s in build_statements(store, p, now_ms)]


# -- formatting -----------------------------------------------------------------------------

SPARKS: Final = "▁▂▃▄▅▆▇█"
LEGEND: Final = "green: a good time to use power; amber: no better or worse; red: better wait"


class LocalClock:
    """Times in the demo's local time: ``14:15`` on the run's first local day, ``Thu 09:00`` on
    any other; the run's end at local midnight is ``24:00`` of the day before."""

    def __init__(self, start_ms: int, end_ms: int, timezone: str = TIMEZONE) -> None:
        self.zone = ZoneInfo(timezone)
        self.first_day = self.date(start_ms)
        self.end_ms = end_ms

    def date(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self.zone).date()

    def __call__(self, ms: int) -> str:
        t = datetime.fromtimestamp(ms / 1000, self.zone)
        if t.hour == t.minute == 0 and self.date(ms - 1) == self.first_day:
            return "24:00"
        return t.strftime("%H:%M" if t.date() == self.first_day else "%a %H:%M")

    def span(self, start_ms: int, end_ms: int) -> str:
        """``Thu 11:00-13:00``: the end's day only when it differs from the start's."""
        end = self(end_ms)
        if self.date(end_ms) == self.date(start_ms) and self.date(start_ms) != self.first_day:
            end = end.split(" ")[-1]
        return f"{self(start_ms)}-{end}"


def _kw(w: float) -> str:
    return f"{w / 1000:5.1f}"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _band(t: TargetQuantiles, k: int) -> str:
    """``  2.0 (1.2-  3.1)``: step ``k``'s P50 and P10-P90, kW."""
    return f"{_kw(t.p50_w[k])} ({t.p10_w[k] / 1000:.1f}-{t.p90_w[k] / 1000:5.1f})"


def sparkline(values: Sequence[float], top: float) -> str:
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(
        SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] for v in values
    )


def _hourly(q: Sequence[float], step_s: int, hours: int) -> list[float]:
    per = max(1, 3600 // step_s)
    return [sum(q[h * per : (h + 1) * per]) / per for h in range(min(hours, len(q) // per))]


def _how(t: TargetQuantiles) -> str:
    text: str = t.method
    if t.basis:
        text += " (" + ", ".join(f"{band}: {how}" for band, how in t.basis.items()) + ")"
    if t.note:
        text += f"; {t.note}"
    return text


def format_forecast(s: LoopSummary, at: LocalClock, hours: int = 24) -> list[str]:
    f = s.forecast
    if f is None:
        return ["the hub issued no forecast during the run"]
    zone = at.zone
    issued = datetime.fromtimestamp(f.issued_ms / 1000, zone)
    ahead_h = len(f.demand.p50_w) * f.step_s // 3600
    lines = [
        f"{s.forecasts_issued} forecasts issued; the last at {issued:%Y-%m-%d %H:%M %Z}, "
        f"{ahead_h} hours ahead, model {f.model}",
        f"  demand: {_how(f.demand)}",
        f"  PV:     {_how(f.pv)}",
        f"  wind:   {_how(f.wind)}",
    ]
    series = {"demand": f.demand, "PV": f.pv, "wind": f.wind}
    hourly = {name: _hourly(t.p50_w, f.step_s, hours) for name, t in series.items()}
    top = max((max(v, default=0.0) for v in hourly.values()), default=0.0)
    first = datetime.fromtimestamp(f.start_ms / 1000, zone)
    lines.append(
        f"  next {hours} hours from {first:%H:%M}, hourly P50 on one scale "
        f"(peak {top / 1000:.1f} kW):"
    )
    for name, values in hourly.items():
        lines.append(
            f"    {name:7}{sparkline(values, top)}  peak {max(values, default=0.0) / 1000:4.1f} kW"
        )
    lines.append(
        f"  {'local time':>9}   {'demand kW (P10-P90)':>19}   {'PV kW (P10-P90)':>19}"
        f"   {'wind kW':>7}"
    )
    per = max(1, 3600 // f.step_s)
    for h in range(0, hours, 3):
        k = h * per
        if k >= len(f.demand.p50_w):
            break
        t = datetime.fromtimestamp((f.start_ms + k * f.step_s * 1000) / 1000, zone)
        d, p = f.demand, f.pv
        lines.append(f"  {t:%a %H:%M}   {_band(d, k)}   {_band(p, k)}   {_kw(f.wind.p50_w[k]):>7}")
    return lines


Span = tuple[int, int, str, str]  # start, end, level, reason


def light_course(received: Sequence[Received], end_ms: int) -> list[Span]:
    """What the light showed: each prompt set's level spans from when the agent took it until
    the next one arrived (or it expired), merged where the level stays the same."""
    ordered = sorted(received, key=lambda r: r.at_ms)
    spans: list[Span] = []
    for k, r in enumerate(ordered):
        until = ordered[k + 1].at_ms if k + 1 < len(ordered) else end_ms
        for s in r.prompts.levels:
            a, b = max(s.start_ms, r.at_ms), min(s.end_ms, until, end_ms)
            if a >= b:
                continue
            if spans and spans[-1][1] == a and spans[-1][2] == s.level:
                spans[-1] = (spans[-1][0], b, s.level, spans[-1][3])
            else:
                spans.append((a, b, s.level, s.reason))
    return spans


Run = tuple[str, list[tuple[int, int]], int, int]  # appliance, windows, first told, re-plans


def appliance_runs(
    received: Sequence[Received], appliances: Sequence[Appliance], zone: ZoneInfo
) -> list[Run]:
    """Each planned run as last told: (appliance, windows, when first told, times it was told
    something different), in order of its window. A run is its appliance's on one local day (the
    day its earliest start falls on, as the hub's planner counts them); re-plans move it."""
    earliest = {a.name: a.earliest_start_min for a in appliances}
    runs: dict[tuple[str, date], tuple[list[tuple[int, int]], int, int]] = {}
    for r in sorted(received, key=lambda r: r.at_ms):
        for a in r.prompts.appliances:
            windows = [(w.start_ms, w.end_ms) for w in a.windows]
            opened = datetime.fromtimestamp(windows[0][0] / 1000, zone)
            day = (opened - timedelta(minutes=earliest.get(a.appliance, 0))).date()
            key = (a.appliance, day)
            if key not in runs:
                runs[key] = (windows, r.at_ms, 0)
            elif runs[key][0] != windows:
                runs[key] = (windows, runs[key][1], runs[key][2] + 1)
    return sorted(
        ((k[0], w, first, moved) for k, (w, first, moved) in runs.items()),
        key=lambda run: (run[1][0][0], run[0]),
    )


def format_prompts(s: LoopSummary, at: LocalClock) -> list[str]:
    lines = [f"times are local ({TIMEZONE})", LEGEND]
    for home, appliances in sorted(s.appliances.items()):
        received = s.prompts.get(home, [])
        names = ", ".join(a.name for a in appliances)
        if not appliances:
            lines.append(f"{home}: no prompts: the household declared no flexible appliances, "
                         "so the hub has nothing to plan for it")  # fmt: skip
            continue
        if not received:
            why = "the hub had no forecast to plan with, or the run ended before a plan reached it"
            lines.append(f"{home} ({names}): no prompts arrived: {why}")
            continue
        lines.append(f"{home} ({names}): {len(received)} prompt sets received, the first at "
                     f"{at(min(r.at_ms for r in received))}")  # fmt: skip
        course = light_course(received, s.end_ms)
        parts = [f"{at.span(a, b)} {level}" for a, b, level, _ in course]
        lines += _wrapped("  light  ", parts)
        for name, windows, first, moved in appliance_runs(received, appliances, at.zone):
            when = ", ".join(at.span(a, b) for a, b in windows)
            again = f", re-planned {moved}x" if moved else ""
            after = " (after the run)" if windows[0][0] >= s.end_ms else ""
            lines.append(f"  {name:16} run {when}{after}: first told at {at(first)}{again}")
    return lines


def _wrapped(prefix: str, parts: Sequence[str], width: int = 100) -> list[str]:
    """``parts`` joined by `` · ``, wrapped under ``prefix``."""
    out: list[str] = []
    line = ""
    for p in parts:
        if line and len(prefix) + len(line) + len(p) + 3 > width:
            out.append(line)
            line = ""
        line = f"{line} · {p}" if line else p
    out.append(line)
    return [(prefix if i == 0 else " " * len(prefix)) + text for i, text in enumerate(out)]


_WEEKDAYS: Final = frozenset(range(5))


def tariff_text(tariff: Tariff, currency: str) -> str:
    """``0.30 EUR/kWh, weekdays 17:00-21:00 0.38``."""
    text = f"{tariff.price_per_kwh} {currency}/kWh"
    for w in tariff.windows:
        days = "weekdays" if w.days == _WEEKDAYS else ",".join(DAYS[d] for d in sorted(w.days))
        text += f", {days} {_hhmm(w.start_min)}-{_hhmm(w.end_min)} {w.price_per_kwh}"
    return text


def format_settlement(s: LoopSummary) -> list[str]:
    if not s.settlements:
        return ["nothing was settled: no home shared grid-meter readings for settlement"]
    first = s.settlements[0].statement
    cur, m = first.currency, first.minor_unit
    days = f"{s.days[0]}" if len(s.days) == 1 else f"{s.days[0]} to {s.days[-1]}"
    lines = [
        f"settled {days} ({TIMEZONE}) under {SCHEME.label}",
        f"the grid's tariffs: import {tariff_text(SCHEME.import_tariff, cur)}; "
        f"export {tariff_text(SCHEME.export_tariff, cur)}",
        f"{'':8}  {'from neighbours':>17}  {'to neighbours':>17}  {'from the grid':>17}  "
        f"{'to the grid':>17}  {'pays':>8}  {'grid-only':>9}  {'saving':>7}",
        f"{'home':8}  "
        + "  ".join([f"{'kWh':>7} {cur:>9}"] * 4)
        + f"  {cur:>8}  {cur:>9}  {cur:>7}",
    ]
    for h in s.settlements:
        st = h.statement
        cells = []
        for item in ("import-neighbours", "export-neighbours", "import-grid", "export-grid"):
            wh, minor = h.line(item)
            cells.append(f"{wh / 1000:7.3f} {money(minor, m):>9}")
        home = (
            st.home
            if len({x.statement.period for x in s.settlements}) == 1
            else f"{st.home} {st.period}"
        )
        lines.append(
            f"{home:8}  " + "  ".join(cells) + f"  {money(st.total_minor, m):>8}  "
            f"{money(st.grid_only_minor, m):>9}  {money(st.saving_minor, m):>7}"
        )
    bought, sold = s.neighbours_wh()
    paid, earned = s.neighbours_minor()
    lines.append(
        f"between neighbours: {bought / 1000:.3f} kWh bought and {sold / 1000:.3f} kWh sold; "
        f"{money(paid, m)} {cur} paid and {money(earned, m)} {cur} earned"
        + (
            " (each home's figures rounded to the Wh and the cent)"
            if bought != sold or paid != earned
            else ""
        )
    )
    lines.append(
        "pays: + the home pays, - it is paid; saving: against the same meters on the grid's "
        "tariffs alone"
    )
    provisional = sum(h.statement.provisional_intervals for h in s.settlements)
    if provisional:
        lines.append(
            f"{provisional} home quarter-hours after the run's end have no readings: settled "
            "provisionally, as the hub does while readings are on their way"
        )
    return lines
