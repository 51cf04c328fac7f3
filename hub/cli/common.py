"""What the ``coopwatt-hub`` command modules share: opening the database, the clock. Light to
import (the store is loaded when a database is opened), so the command group can import it on a
machine without the hub's packages. The operator's error is ``protocol.cli.CliError``, the one
every coopwatt CLI raises."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from protocol.cli import CliError
from protocol.clock import Clock, SystemClock

if TYPE_CHECKING:
    from hub.storage.store import Store


db_option = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The hub database.",
)


def parse_day(value: str, option: str) -> date:
    """A ``--from``/``--to`` day, YYYY-MM-DD, or a usage error naming the option."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


def command_clock(ctx: click.Context) -> Clock:
    """The clock stamping what a command records; tests put a ManualClock in ``ctx.obj``."""
    obj = ctx.find_root().obj
    clock = obj.get("clock") if isinstance(obj, dict) else None
    return clock if clock is not None else SystemClock()


def open_store(db_path: Path, *, write: bool) -> Store:
    """An existing hub database; for writing, its schema brought up to date first."""
    from hub.storage.store import Store, StoreError  # noqa: PLC0415 - see the module docstring

    try:
        return Store.open_to_write(db_path) if write else Store.open_existing(db_path)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def open_existing(db_path: Path) -> Store:
    """The hub database at ``db_path``, never created or migrated; an operator's error if not."""
    from hub.storage.store import Store, StoreError  # noqa: PLC0415 - see the module docstring

    try:
        return Store.open_existing(db_path)
    except StoreError as exc:
        raise CliError(str(exc)) from None
