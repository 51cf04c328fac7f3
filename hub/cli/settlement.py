"""``coopwatt-hub`` settlement commands: settle, close, statement, community, report, publish.

Thin click layers over :mod:`hub.settlement`. An operator-fixable problem (no database, a bad
scheme file, a month not settled, a closed month) is one ``Error: ...`` line and exit code 2.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import click

from hub.cli.common import command_clock, db_option, open_store, parse_day
from hub.cli.reconcile import ALERT_EXIT, tolerance_of, tolerance_options
from hub.config import ConfigError, load_config
from hub.settlement.engine import (
    MeterSourceError,
    MissingPriceError,
    check_official,
    check_prices,
    check_scheme_change,
    check_sources,
    day_range,
    settle,
)
from hub.settlement.ledger import Ledger, LedgerError
from hub.settlement.metrics import community_report
from hub.settlement.operator_files import load_official
from hub.settlement.reconcile import OfficialFigures, ReconcileError, Reconciliation
from hub.settlement.report import (
    ReportError,
    format_community_json,
    format_community_text,
    read_series,
    write_report,
)
from hub.settlement.scheme import Scheme, load_scheme, parse_period
from hub.settlement.statements import (
    FORMATS,
    StatementError,
    build_statement,
    build_statements,
)
from hub.settlement.statements import publish_statements as publish_all
from protocol.cli import CliError
from protocol.payloads import Statement
from protocol.session import BrokerSettings, MqttSession

SCHEME_HELP = (
    "The cooperative's settlement scheme (TOML): mechanism, tariffs, allocation key, time zone, "
    "currency."
)


def _scheme(path: Path) -> Scheme:
    try:
        return load_scheme(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _period(month: str) -> str:
    try:
        parse_period(month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--month'") from None
    return month


_month_option = click.option(
    "--month", required=True, help="The month, YYYY-MM, in the cooperative's time zone."
)


@click.command("settle")
@db_option
@click.option(
    "--scheme", "scheme_path", required=True, type=click.Path(path_type=Path), help=SCHEME_HELP
)
@click.option("--from", "first", required=True, metavar="DATE", help="First local day, YYYY-MM-DD.")
@click.option("--to", "last", required=True, metavar="DATE", help="Last local day (included).")
@click.option(
    "--reprice",
    is_flag=True,
    help="Days of closed months settled under another scheme: price them under this one and "
    "post the difference in the next open month, labelled as a repricing (refused without it).",
)
@click.option(
    "--official",
    "official_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Settle on the grid operator's 15-minute figures in this CSV (the reconcile format) "
    "instead of the hub's readings, which are then the check. Needs --map.",
)
@click.option(
    "--map",
    "map_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --official: TOML mapping each metering point to its home, [metering_points] "
    'ID = "home".',
)
@click.option(
    "--replace-official",
    is_flag=True,
    help="Days settled on the operator's figures: settle them on the hub's readings after all "
    "(refused without it).",
)
@tolerance_options
@click.pass_context
def settle_command(
    ctx: click.Context,
    db_path: Path,
    scheme_path: Path,
    first: str,
    last: str,
    reprice: bool,
    official_path: Path | None,
    map_path: Path | None,
    replace_official: bool,
    tolerance_wh: str,
    tolerance_pct: str,
    alert_pct: str,
) -> None:
    """Settle the energy members shared, per 15-minute interval, from --from to --to.

    Reads each member's grid-meter import and export counters, matches what neighbours
    exported against what neighbours imported in every quarter-hour (pro rata to consumption, or
    by the scheme's allocation key), prices it by the scheme's mechanism (or its community
    price) and records one balanced ledger transaction per day. Run it again at any time:
    days whose data has not changed stay as they were; days of an open month whose data changed
    (late readings arrived) are settled again; days of a closed month get an adjustment in the
    next open month. A quarter-hour in which a member's data is still missing is settled
    provisionally without that member and flagged.

    Under a scheme whose import tariff says prices = "imported", each interval's grid import
    costs the price stored by coopwatt-hub prices import (plus the scheme's network charge); a
    day without a stored price for every interval is refused before anything is written.

    A closed month keeps the scheme it was settled under: settling its days under another
    scheme file is refused, unless --reprice asks to post the difference (as a repricing, apart
    from any late data) in the next open month.

    With --official FILE --map MAP the members' energy comes from the grid operator's
    15-minute figures, and the hub's own readings are the check: the run ends with how well
    they agree per home (exit 1 when a home is above --alert-pct, after settling). The file
    must cover every mapped metering point in every quarter-hour of the days, and name every
    home the hub has readings for. Statements say which days were settled on which figures;
    a later run on the hub's readings leaves those days alone unless --replace-official.

    \b
    Examples:
        coopwatt-hub settle --db hub.db --scheme settlement.toml --from 2026-06-01 --to 2026-06-30
        coopwatt-hub settle --db hub.db --scheme settlement.toml --from 2026-06-01 \\
            --to 2026-06-30 --official operator-june.csv --map metering-points.toml
    """
    scheme = _scheme(scheme_path)
    if (official_path is None) != (map_path is None):
        raise click.UsageError("--official and --map go together")
    if official_path is not None and replace_official:
        raise click.UsageError("--replace-official and --official exclude each other")
    tolerance = tolerance_of(tolerance_wh, tolerance_pct, alert_pct)
    official: OfficialFigures | None = None
    if official_path is not None and map_path is not None:
        try:
            official = load_official(official_path, map_path)
        except ReconcileError as exc:
            raise CliError(str(exc)) from None
    first_day, last_day = parse_day(first, "'--from'"), parse_day(last, "'--to'")
    if last_day < first_day:
        raise click.BadParameter("--to is before --from", param_hint="'--to'")
    days = day_range(first_day, last_day)
    if len(days) > 366:
        raise click.BadParameter("settle at most a year at a time", param_hint="'--to'")
    clock = command_clock(ctx)
    with open_store(db_path, write=True) as store:
        try:
            check_scheme_change(Ledger(store), scheme, days, reprice)
            check_prices(store, scheme, days)
            check_sources(Ledger(store), days, official, replace_official)
            if official is not None:
                check_official(store, scheme, days, official)
            with click.progressbar(length=len(days), label="settling", file=sys.stderr) as bar:

                def progress(day: date, outcome: str) -> None:
                    bar.update(1)

                result = settle(
                    store,
                    scheme,
                    days,
                    clock.now_ms(),
                    progress,
                    reprice=reprice,
                    official=official,
                    replace_official=replace_official,
                    tolerance=tolerance,
                )
        except (LedgerError, MissingPriceError, MeterSourceError) as exc:
            raise CliError(str(exc)) from None
    outcomes = ("settled", "resettled", "unchanged", "adjusted", "repriced")
    parts = [f"{result.count(o)} {o}" for o in outcomes]
    click.echo(f"{len(days)} days: " + ", ".join(p for p in parts if not p.startswith("0 ")))
    if scheme.imported_prices:
        click.echo(
            "grid import priced at the imported grid prices per interval plus "
            f"{scheme.import_tariff.network_per_kwh} {scheme.currency}/kWh network charge"
        )
    if scheme.allocation is not None:
        price = (
            f"at {scheme.community_price} {scheme.currency}/kWh"
            if scheme.community_price is not None
            else f"at the {scheme.mechanism.value.upper()} price"
        )
        click.echo(
            f"shared energy allocated by key {scheme.allocation.label!r} per "
            f"{scheme.allocation.interval_minutes} minutes, {price}"
        )
    if result.provisional_intervals:
        click.echo(
            f"{result.provisional_intervals} of {result.intervals} quarter-hours are provisional: "
            f"{result.missing_member_intervals} member readings have not arrived yet; "
            "settle again once they do"
        )
    if result.estimated_member_intervals:
        click.echo(
            f"{result.estimated_member_intervals} member quarter-hours were estimated across "
            "gaps in readings"
        )
    if official is not None and result.check is not None:
        _echo_check(official, result.check)
        if result.check.alert:
            raise SystemExit(ALERT_EXIT)


def _echo_check(official: OfficialFigures, check: Reconciliation) -> None:
    """The hub's readings against the figures just settled on: one line per home."""
    tol = check.tolerance
    click.echo(
        f"settled on the grid operator's figures ({official.source}); the hub's readings as "
        f"the check, agreeing within {tol.wh} Wh or {tol.pct} %:"
    )
    for h in check.homes:
        state = "ALERT" if h.alert else "ok"
        missing = f", {h.hub_missing} without hub readings" if h.hub_missing else ""
        click.echo(
            f"  {h.home}: {state}: {h.agreeing} of {h.intervals} quarter-hours agree "
            f"({100 * h.agree_share:.1f} %){missing}"
        )
    if check.alert:
        click.echo(
            f"more than {tol.alert_pct} % of some home's quarter-hours disagree: see "
            "coopwatt-hub reconcile for the largest differences",
            err=True,
        )


@click.command("close")
@db_option
@_month_option
@click.option(
    "--allow-provisional",
    is_flag=True,
    help="Close even though some quarter-hours still lack a member's data (they become final).",
)
@click.pass_context
def close_command(ctx: click.Context, db_path: Path, month: str, allow_provisional: bool) -> None:
    """Close a settled month for good: round balances to whole cents and freeze its ledger.

    A closed month never changes again; data that arrives later is settled as an adjustment in
    the next open month. Months close in order.
    """
    period = _period(month)
    with open_store(db_path, write=True) as store:
        ledger = Ledger(store)
        scheme = ledger.scheme_for(period)
        if scheme is None:
            raise CliError(f"{period} has not been settled: run coopwatt-hub settle first")
        try:
            summary = ledger.close_period(
                scheme, period, command_clock(ctx).now_ms(), allow_provisional=allow_provisional
            )
        except LedgerError as exc:
            raise CliError(str(exc)) from None
    micro = summary.rounding_micro
    click.echo(
        f"closed {period}; rounding to whole minor units cost the cooperative "
        f"{-micro / 1_000_000:.6f} {scheme.currency}"
    )


@click.command("statement")
@click.argument("home")
@db_option
@_month_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default="text",
    show_default=True,
    help="text for people, json (the statement topic's payload plus pricing) or csv.",
)
@click.pass_context
def statement_command(ctx: click.Context, home: str, db_path: Path, month: str, fmt: str) -> None:
    """Show HOME's settlement statement for a month.

    Energy from and to neighbours and the grid, what each cost or earned, corrections of
    earlier months, the total, and what the same meter readings would have cost on the grid's
    tariffs alone. Amounts: + the home pays, - the home is paid. Which scheme priced which days
    is shown in every format (json: "pricing", as in the statement topic's payload).
    """
    period = _period(month)
    with open_store(db_path, write=False) as store:
        try:
            statement = build_statement(store, home, period, command_clock(ctx).now_ms())
        except StatementError as exc:
            raise CliError(str(exc)) from None
    click.echo(FORMATS[fmt](statement), nl=False)


@click.command("community")
@db_option
@_month_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def community_command(ctx: click.Context, db_path: Path, month: str, fmt: str) -> None:
    """The community report for the operator: sharing, self-consumption, self-sufficiency,
    peak-to-average ratio, each member's saving against a grid-only bill, and a fairness index.
    """
    period = _period(month)
    with open_store(db_path, write=False) as store:
        ledger = Ledger(store)
        scheme = ledger.scheme_for(period)
        if scheme is None:
            raise CliError(f"{period} has not been settled: run coopwatt-hub settle first")
        series = read_series(store, scheme, period)
        generation = consumption = None
        if series.shown:
            generation = sum(v or 0.0 for v in series.pv_kwh) + sum(
                v or 0.0 for v in series.wind_kwh
            )
            consumption = sum(v or 0.0 for v in series.consumption_kwh)
        report = community_report(
            store, period, command_clock(ctx).now_ms(), generation, consumption
        )
    click.echo(
        (format_community_json if fmt == "json" else format_community_text)(report), nl=False
    )


@click.command("report")
@db_option
@_month_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write the charts and index.html into (created if needed).",
)
@click.pass_context
def report_command(ctx: click.Context, db_path: Path, month: str, out_dir: Path) -> None:
    """Write the community picture of a month: charts and a one-page HTML summary.

    Charts of the neighbourhood's demand against its solar and wind supply over a typical day
    and over the month, the energy shared between neighbours, and the forecast band against what
    happened when forecasts are stored. Only community totals over groups of at least the
    scheme's min_group homes; needs the plots extra (pip install 'coopwatt[plots]').
    """
    period = _period(month)
    with open_store(db_path, write=False) as store:
        try:
            files = write_report(store, period, out_dir, command_clock(ctx).now_ms())
        except ReportError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    click.echo(f"wrote {files.html} and {len(files.charts)} charts")
    if files.forecast_note:
        click.echo(f"forecast against actual: not available ({files.forecast_note})")


@click.command("publish-statements")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The hub's TOML config: its database and broker.",
)
@_month_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the broker.")
@click.pass_context
def publish_command(ctx: click.Context, config_path: Path, month: str, timeout: float) -> None:
    """Publish every member's statement for a month, retained, on its home's statement topic.

    Each home's agent receives its own statement (and only its own: broker ACLs) whenever it
    connects, and can show it on its display.
    """
    period = _period(month)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    with open_store(config.db_path, write=False) as store:
        try:
            statements = build_statements(store, period, command_clock(ctx).now_ms())
        except StatementError as exc:
            raise CliError(str(exc)) from None
    count = publish_over_mqtt(config.coop, statements, config.broker, timeout)
    click.echo(f"published {count} statements for {period}")


def publish_over_mqtt(
    coop: str, statements: list[Statement], settings: BrokerSettings, timeout_s: float
) -> int:
    """Connect, publish each statement retained at QoS 1, wait until the broker has them all.

    Connects under its own client id (the hub's with ``-statements`` appended), so a running
    hub is never disconnected by a broker taking over its client id.
    """
    own_id = f"{settings.client_id[:53]}-statements"
    session = MqttSession(replace(settings, client_id=own_id))
    session.start()
    infos = []
    try:
        if not session.connected.wait(timeout_s):
            raise CliError(f"cannot reach the broker at {settings.url}")

        def publish(topic: str, payload: bytes) -> None:
            infos.append(session.publish(topic, payload, qos=1, retain=True))

        count = publish_all(coop, statements, publish)
        for info in infos:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise CliError("the broker did not confirm every statement in time")
        return count
    finally:
        session.stop()


COMMANDS: list[click.Command] = [
    settle_command,
    close_command,
    statement_command,
    community_command,
    report_command,
    publish_command,
]
