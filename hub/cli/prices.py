"""``coopwatt-hub prices import`` and ``prices show``: the grid's price per interval.

Thin click layers over :mod:`hub.settlement.prices` (parsing, pure) and
:mod:`hub.settlement.price_store` (the table). A bad file or request is one ``Error: ...`` line
and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.cli.common import command_clock, open_store
from hub.settlement.price_store import import_prices, stored_currency, stored_prices
from hub.settlement.prices import FORMATS, Format, PriceError, decode, parse_prices, utc_text
from protocol.cli import CliError
from protocol.timeparse import parse_iso_ms

MAX_FILE_BYTES = 64 * 1024 * 1024
PROGRESS_FROM = 5_000  # intervals: a bar only for files that take a moment


def _time(value: str, option: str) -> int:
    try:
        return parse_iso_ms(value, naive="utc")
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or ISO 8601 time (UTC unless it says otherwise)",
            param_hint=option,
        ) from None


_db_option = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The hub database.",
)


@click.group("prices")
def prices_group() -> None:
    """The grid's price per interval (day-ahead or a tariff), from a file you fetched."""


@prices_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="csv: start,end,price with the currency and unit stated (see README); entsoe: the "
    "ENTSO-E transparency platform's day-ahead prices, its CSV download or API XML. "
    "Detected from the file when left out.",
)
@click.pass_context
def prices_import(ctx: click.Context, file: Path, db_path: Path, fmt: Format | None) -> None:
    """Import grid prices per interval from FILE into the hub database.

    The intervals must follow each other without a gap or overlap; a missing hour, a cell that
    is not a number or a file that is not the format it claims is refused with the line it is on,
    and nothing is stored. A newer import replaces the stored intervals it covers.

    \b
    Examples:
      coopwatt-hub prices import --db hub.db day-ahead-2026-01.csv
      coopwatt-hub prices import --db hub.db --format entsoe A44.xml
    """
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise CliError(f"{file} is over {MAX_FILE_BYTES // 2**20} MB; import it in parts")
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        series = parse_prices(decode(raw), fmt)
    except PriceError as exc:
        raise CliError(f"{file}: {exc}") from None
    with open_store(db_path, write=True) as store:
        total = len(series.intervals)
        try:
            if total >= PROGRESS_FROM:
                with click.progressbar(length=total, label="storing", file=sys.stderr) as bar:
                    n = import_prices(
                        store, series, file.name, command_clock(ctx).now_ms(), progress=bar.update
                    )
            else:
                n = import_prices(store, series, file.name, command_clock(ctx).now_ms())
        except PriceError as exc:
            raise CliError(f"{file}: {exc}") from None
    click.echo(
        f"imported {n} prices in {series.currency}, {utc_text(series.start_ms)} to "
        f"{utc_text(series.end_ms)}",
        err=True,
    )


@prices_group.command("show")
@_db_option
@click.option("--from", "first", required=True, metavar="TIME", help="From, ISO 8601 (UTC).")
@click.option("--to", "last", required=True, metavar="TIME", help="To (excluded), ISO 8601.")
def prices_show(db_path: Path, first: str, last: str) -> None:
    """Show the stored grid prices from --from to --to: start,end,price per kWh (UTC times).

    A stretch without prices is shown as a line starting with '# missing'.
    """
    start_ms, end_ms = _time(first, "'--from'"), _time(last, "'--to'")
    if end_ms <= start_ms:
        raise click.BadParameter("must be after --from", param_hint="'--to'")
    with open_store(db_path, write=False) as store:
        if (
            not store.reader()
            .execute("SELECT 1 FROM sqlite_master WHERE name = 'grid_prices'")
            .fetchone()
        ):
            raise CliError("this hub database holds no prices yet: run coopwatt-hub prices import")
        currency = stored_currency(store) or "?"
        rows = stored_prices(store, start_ms, end_ms)
    if not rows:
        raise CliError(f"no prices stored between {utc_text(start_ms)} and {utc_text(end_ms)}")
    click.echo(f"start,end,price [{currency}/kWh]")
    at = start_ms
    for row in rows:
        if row.start_ms > at:
            click.echo(f"# missing {utc_text(at)} to {utc_text(row.start_ms)}")
        click.echo(f"{utc_text(row.start_ms)},{utc_text(row.end_ms)},{row.price_per_kwh}")
        at = row.end_ms
    if at < end_ms:
        click.echo(f"# missing {utc_text(at)} to {utc_text(end_ms)}")


COMMANDS = (prices_group,)
