"""What the ``coopwatt-hub`` command modules share: the operator's error and opening the
database read-only."""

from __future__ import annotations

from pathlib import Path

import click

from hub.storage.store import Store, StoreError


class HubCliError(click.ClickException):
    """A problem the operator can fix: printed as ``Error: ...``, exit code 2."""

    exit_code = 2


def open_existing(db_path: Path) -> Store:
    """The hub database at ``db_path``, never created or migrated; an operator's error if not."""
    try:
        return Store.open_existing(db_path)
    except StoreError as exc:
        raise HubCliError(str(exc)) from None
