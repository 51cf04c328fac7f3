"""What the ``coopwatt-hub`` command modules share: opening the database read-only. Light to
import (the store is loaded when a database is opened), so the command group can import it on a
machine without the hub's packages. The operator's error is ``protocol.cli.CliError``, the one
every coopwatt CLI raises."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from protocol.cli import CliError

if TYPE_CHECKING:
    from hub.storage.store import Store


def open_existing(db_path: Path) -> Store:
    """The hub database at ``db_path``, never created or migrated; an operator's error if not."""
    from hub.storage.store import Store, StoreError  # noqa: PLC0415 - see the module docstring

    try:
        return Store.open_existing(db_path)
    except StoreError as exc:
        raise CliError(str(exc)) from None
