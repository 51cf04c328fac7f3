"""``coopwatt-hub export`` and ``summary``: the stored readings, read-only, as CSV or as energy
per home. Thin layers over :mod:`hub.ops.export` and :mod:`hub.ops.summary`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Final, TextIO

import click

from hub.cli.common import open_existing
from hub.ops.export import export_csv
from hub.ops.summary import home_summaries
from hub.storage.store import Store
from protocol.cli import CliError


@click.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to read (it is never created or changed).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv"]),
    default="csv",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    help="File to write, or - for stdout. A file appears only once complete.",
)
@click.option("--home", default=None, help="Export only this home.")
def export(db_path: Path, fmt: str, output: str, home: str | None) -> None:
    """Export stored readings, one row per reading, ordered by home, device and seq.

    Columns: home, device, role, seq, ts_ms (UTC epoch milliseconds), then every quantity in
    glossary order with its unit in its name (power_w, energy_import_wh, ...); a cell is empty
    when the reading did not carry that quantity.
    """
    assert fmt == "csv"
    with open_existing(db_path) as store:
        if output == "-":
            _export_stdout(store, home)
            return
        target = Path(output)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                rows = export_csv(store, out, home=home)
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        click.echo(f"exported {rows} readings to {target}", err=True)


def _export_stdout(store: Store, home: str | None) -> None:
    out: TextIO = sys.stdout
    try:
        export_csv(store, out, home=home)
        out.flush()
    except BrokenPipeError:
        # The reader (head, less) went away: not an error worth a traceback.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


@click.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to read (it is never created or changed).",
)
def summary(db_path: Path) -> None:
    """Per home: readings stored and energy imported, exported and generated (Wh).

    Energy is read from the meters' lifetime counters: last minus first over the stored period.
    """
    with open_existing(db_path) as store:
        summaries = home_summaries(store)
    click.echo(
        f"{'home':<32} {'readings':>10} {'imported_wh':>14} {'exported_wh':>14} "
        f"{'generated_wh':>14}"
    )
    for s in summaries.values():
        click.echo(
            f"{s.home:<32} {s.readings:>10} {s.imported_wh:>14.1f} {s.exported_wh:>14.1f} "
            f"{s.generated_wh:>14.1f}"
        )


COMMANDS: Final[tuple[click.Command, ...]] = (export, summary)
