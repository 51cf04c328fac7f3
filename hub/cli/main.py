"""``coopwatt-hub``: the cooperative hub's command line, a thin shell over the library.

Exit codes: 0 on success and on a clean stop (SIGINT/SIGTERM), 2 for a problem the operator can
fix (bad config, missing or foreign database, bad option), shown as one line without a traceback.
"""

from __future__ import annotations

import click

import hub
from hub.cli.forecast import COMMANDS as FORECAST_COMMANDS
from hub.cli.ops import COMMANDS as OPS_COMMANDS
from hub.cli.prompts import COMMANDS as PROMPTS_COMMANDS
from hub.cli.readings import export, summary
from hub.cli.run import run
from hub.cli.settlement import COMMANDS as SETTLEMENT_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(hub.__version__, prog_name="coopwatt-hub")
def main() -> None:
    """The coopwatt cooperative hub.

    Receives meter readings from household agents over MQTT, stores them in the cooperative's
    SQLite database exactly once, and acknowledges each reading only after it is committed.

    \b
    Start the hub:        coopwatt-hub run --config /etc/coopwatt/hub.toml
    Export readings:      coopwatt-hub export --db /var/lib/coopwatt/hub.db -o readings.csv
    Energy per home:      coopwatt-hub summary --db /var/lib/coopwatt/hub.db
    """


for _command in (run, export, summary):
    main.add_command(_command)


for _command in SETTLEMENT_COMMANDS:
    main.add_command(_command)


for _command in FORECAST_COMMANDS:
    main.add_command(_command)


for _command in PROMPTS_COMMANDS:
    main.add_command(_command)


for _command in OPS_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
