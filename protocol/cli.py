"""The one error every coopwatt command line raises for a mistake its user can fix.

Agent, hub and simulator CLIs all raise ``CliError``: click prints it as one ``Error: ...`` line
and the command exits 2, never with a traceback. It lives here because the agent and the hub may
not import each other; click is a core dependency and every CLI imports it already, so this
module adds nothing to any import path (protocol's other modules do not import it).
"""

from __future__ import annotations

import click


class CliError(click.ClickException):
    """A problem the user can fix (a missing file, a bad option value, a refused change):
    printed as ``Error: <message>``, exit code 2."""

    exit_code = 2
