"""``coopwatt-hub reconcile``: the hub's readings against the grid operator's figures.

A thin click layer over :mod:`hub.settlement.reconcile`. Exit codes: 0 when every home agrees
well enough, 1 when any home is above the alert threshold (so a cron job or CI step notices),
2 for a problem the operator can fix (bad file, map, scheme or option), one ``Error: ...`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from hub.cli.common import db_option, open_existing, parse_day
from hub.config import ConfigError
from hub.settlement.operator_files import read_operator_file
from hub.settlement.reconcile import (
    FORMATS,
    ReconcileError,
    Tolerance,
    hub_intervals,
    load_map,
    official_intervals,
    reconcile,
)
from hub.settlement.scheme import load_scheme
from protocol.cli import CliError

ALERT_EXIT = 1


def _amount(value: str, option: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=option) from None
    if not number.is_finite() or number < 0 or number > 10**9:
        raise click.BadParameter(f"{value!r} must be 0 or more", param_hint=option)
    return number


def tolerance_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--tolerance-wh``, ``--tolerance-pct`` and ``--alert-pct``: when an interval agrees."""
    for option in reversed(
        (
            click.option(
                "--tolerance-wh",
                default="1",
                metavar="WH",
                show_default=True,
                help="An interval agrees when hub and operator differ by at most this many Wh ...",
            ),
            click.option(
                "--tolerance-pct",
                default="1",
                metavar="PCT",
                show_default=True,
                help="... or by at most this percentage of the operator's figure (either is "
                "enough).",
            ),
            click.option(
                "--alert-pct",
                default="5",
                metavar="PCT",
                show_default=True,
                help="Flag a home (and exit 1) when more than this percentage of its intervals "
                "disagree.",
            ),
        )
    ):
        command = option(command)
    return command


def tolerance_of(tolerance_wh: str, tolerance_pct: str, alert_pct: str) -> Tolerance:
    return Tolerance(
        _amount(tolerance_wh, "'--tolerance-wh'"),
        _amount(tolerance_pct, "'--tolerance-pct'"),
        _amount(alert_pct, "'--alert-pct'"),
    )


@click.command("reconcile")
@db_option
@click.option(
    "--scheme",
    "scheme_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The settlement scheme (TOML): its time zone makes the days, its max_gap_minutes "
    "which hub intervals are estimated.",
)
@click.option(
    "--file",
    "file_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The grid operator's per-interval CSV (member,metering_point,start,end,import_wh,"
    "export_wh[,allocated_wh]).",
)
@click.option(
    "--map",
    "map_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help='TOML mapping each metering point to its home: [metering_points] ID = "home".',
)
@click.option("--from", "first", required=True, metavar="DATE", help="First local day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, metavar="DATE", help="Last local day (included).")
@tolerance_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default="text",
    show_default=True,
    help="Per-home summary as text, JSON or CSV.",
)
def reconcile_command(
    db_path: Path,
    scheme_path: Path,
    file_path: Path,
    map_path: Path,
    first: str,
    last: str,
    tolerance_wh: str,
    tolerance_pct: str,
    alert_pct: str,
    fmt: str,
) -> None:
    """Compare the hub's readings with the grid operator's figures, per home and interval.

    Reads the operator's file, maps its metering points to homes, and puts each home's
    interval energy from its own grid meters (as settlement computes it, from the readings it
    shares for settlement) beside the operator's: the share of intervals that agree within the
    tolerance, the totals, and the largest differences. Exits 1 when any home has more
    intervals out of tolerance than --alert-pct allows, 0 otherwise.

    \b
    Example:
        coopwatt-hub reconcile --db hub.db --scheme settlement.toml \\
            --file operator-june.csv --map metering-points.toml --from 2026-06-01 --to 2026-06-30
    """
    first_day, last_day = parse_day(first, "'--from'"), parse_day(last, "'--to'")
    if last_day < first_day:
        raise click.BadParameter("--to is before --from", param_hint="'--to'")
    if (last_day - first_day).days > 366:
        raise click.BadParameter("reconcile at most a year at a time", param_hint="'--to'")
    tolerance = tolerance_of(tolerance_wh, tolerance_pct, alert_pct)
    try:
        scheme = load_scheme(scheme_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    start_ms = scheme.day_start_ms(first_day)
    end_ms = scheme.day_start_ms(last_day + timedelta(days=1))
    try:
        points = load_map(map_path)
        operator = read_operator_file(file_path)
        official = official_intervals(operator, points, start_ms, end_ms)
    except ReconcileError as exc:
        raise CliError(str(exc)) from None
    with open_existing(db_path) as store:
        hub = hub_intervals(store, start_ms, end_ms, operator.step_ms, scheme.max_gap_ms)
    result = reconcile(official, hub, tolerance, operator.step_ms)
    click.echo(FORMATS[fmt](result), nl=False)
    if result.alert:
        raise SystemExit(ALERT_EXIT)


COMMANDS = [reconcile_command]
