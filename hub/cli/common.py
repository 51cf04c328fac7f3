"""What the ``coopwatt-hub`` command modules share: the operator's error and opening the
database read-only. Light to import (the store is loaded when a database is opened): the
command group itself uses the error on a machine without the hub's packages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hub.storage.store import Store


class HubCliError(click.ClickException):
    """A problem the operator can fix: printed as ``Error: ...``, exit code 2."""

    exit_code = 2


def open_existing(db_path: Path) -> Store:
    """The hub database at ``db_path``, never created or migrated; an operator's error if not."""
    from hub.storage.store import Store, StoreError  # noqa: PLC0415 - see the module docstring

    try:
        return Store.open_existing(db_path)
    except StoreError as exc:
        raise HubCliError(str(exc)) from None
