"""``coopwatt-hub prompts show`` and ``prompts plan``: what the prompt planner knows and would
send, a thin layer over :mod:`hub.prompts.service`, :mod:`hub.prompts.planner` and
:mod:`hub.prompts.messages`. Both only read the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hub.cli.common import open_existing
from hub.consent.book import ConsentBook
from hub.prompts.learning import ShiftEstimate
from hub.prompts.messages import build_prompts
from hub.prompts.planner import HomeAppliances, make_jobs, outlook_from_forecast, plan
from hub.prompts.service import PromptBook, prompts_granted
from protocol.cli import CliError
from protocol.clock import SystemClock
from protocol.codec import CodecError, decode, encode
from protocol.payloads import Forecast
from protocol.timeparse import parse_iso_ms


def _iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _parse_at(text: str | None) -> int:
    if text is None:
        return SystemClock().now_ms()
    try:
        return parse_iso_ms(text, naive="utc")
    except ValueError:
        raise CliError(f"--at {text!r} is not ISO 8601 (2026-07-01T09:00Z)") from None


_db = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to read (it is never changed).",
)


@click.group("prompts")
def prompts_group() -> None:
    """Appliance-timing prompts: the homes' appliances, what was learnt, what would be sent."""


@prompts_group.command("show")
@_db
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(db_path: Path, as_json: bool) -> None:
    """Per home: its declared appliances, how often it follows a prompt (learnt), its answers,
    and its planned runs still to come."""
    now = SystemClock().now_ms()
    with open_existing(db_path) as store:
        book = PromptBook(store)
        homes = book.appliances()
        shifts = book.shifts()
        runs = book.runs(ending_after_ms=now)
        rows: list[dict[str, Any]] = []
        for home, a in homes.items():
            est = shifts.get(home, ShiftEstimate()).faded(now)
            rows.append(
                {
                    "home": home,
                    "timezone": a.timezone,
                    "appliances": [x.name for x in a.appliances],
                    "shift": round(est.shift, 3),
                    "runs_judged": round(est.expected, 2),
                    "answers": book.feedback_count(home),
                    "planned": [
                        {"appliance": r.key[1], "windows": [list(w) for w in r.windows]}
                        for r in runs
                        if r.key[0] == home
                    ],
                }
            )
    if as_json:
        click.echo(json.dumps({"homes": rows}, indent=2))
        return
    if not rows:
        click.echo("no home has declared appliances yet")
        return
    click.echo(f"{'home':<20} {'shift':>6} {'judged':>7} {'answers':>8}  appliances")
    for r in rows:
        click.echo(
            f"{r['home']:<20} {r['shift']:>6.2f} {r['runs_judged']:>7.1f} {r['answers']:>8}  "
            + ", ".join(r["appliances"])
        )
        for p in r["planned"]:
            when = ", ".join(f"{_iso(s)}-{_iso(e)[11:]}" for s, e in p["windows"])
            click.echo(f"    {p['appliance']}: {when}")


@prompts_group.command("plan")
@_db
@click.option(
    "--forecast",
    "forecast_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A hub/forecast payload (JSON) to plan with; default: the latest the hub received.",
)
@click.option("--at", "at", default=None, help="Plan as at this time, ISO 8601. Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print the prompts as sent, one per line.")
def plan_cmd(db_path: Path, forecast_path: Path | None, at: str | None, as_json: bool) -> None:
    """Plan now (a dry run: nothing is sent or stored) and print each home's prompts."""
    now = _parse_at(at)
    with open_existing(db_path) as store:
        book = PromptBook(store)
        forecast = _forecast(forecast_path) if forecast_path else book.forecast()
        if forecast is None:
            raise CliError("the hub has received no forecast yet; pass --forecast FILE")
        outlook = outlook_from_forecast(forecast)
        if outlook.end_ms <= now:
            raise CliError(f"the forecast ends at {_iso(outlook.end_ms)}, before --at")
        consent = ConsentBook(store)
        shifts = book.shifts()
        homes: list[HomeAppliances] = []
        for name, declared in book.appliances().items():
            if prompts_granted(consent, name):
                shift = shifts.get(name, ShiftEstimate()).faded(now).shift
                homes.append(
                    HomeAppliances(name, declared.timezone, tuple(declared.appliances), shift)
                )
        previous = book.previous_windows(now, outlook.start_ms)
    p = plan(make_jobs(homes, outlook), outlook, now, previous)
    for home in homes:
        prompts = build_prompts(p, home.home, now)
        if prompts is None:
            continue
        if as_json:
            click.echo(encode(prompts).decode())
            continue
        click.echo(f"{home.home}: {prompts.level} ({prompts.reason}), until "
                   f"{_iso(prompts.valid_until_ms)}")  # fmt: skip
        for run in prompts.appliances:
            when = ", ".join(f"{_iso(w.start_ms)}-{_iso(w.end_ms)[11:]}" for w in run.windows)
            click.echo(f"    {run.appliance}: {when}  {run.reason}; +{run.benefit_wh:.0f} Wh local")
    if not as_json:
        peak = max(p.load_w, default=0.0)
        click.echo(f"{len(p.windows)} run(s) for {len(homes)} home(s); "
                   f"expected shifted peak {peak / 1000:.1f} kW", err=True)  # fmt: skip


def _forecast(path: Path) -> Forecast:
    try:
        return decode(Forecast, path.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CodecError as exc:
        raise CliError(f"{path} is not a hub/forecast payload: {exc}") from None


COMMANDS: tuple[click.Command, ...] = (prompts_group,)
