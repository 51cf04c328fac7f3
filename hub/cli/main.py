"""``coopwatt-hub``: the cooperative hub's command line, a thin shell over the library.

Exit codes: 0 on success and on a clean stop (SIGINT/SIGTERM), 2 for a problem the operator can
fix (bad config, missing or foreign database, bad option), shown as one line without a traceback.

A command's module is imported when the command runs, not before: the operator's tools
(``monitor``, ``provision``, ``broker-config``) then work on a laptop with only the ``ops``
extra, where the hub's numpy, onnxruntime and sqlite-utils are missing. A command whose module
cannot be imported there says which extra it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import click

import hub
from protocol.cli import CliError

COMMAND_MODULES: Final[dict[str, str]] = {
    "run": "hub.cli.run",
    "export": "hub.cli.readings",
    "summary": "hub.cli.readings",
    "settle": "hub.cli.settlement",
    "close": "hub.cli.settlement",
    "statement": "hub.cli.settlement",
    "community": "hub.cli.settlement",
    "report": "hub.cli.settlement",
    "publish-statements": "hub.cli.settlement",
    "reconcile": "hub.cli.reconcile",
    "weather": "hub.cli.forecast",
    "forecast": "hub.cli.forecast",
    "backtest": "hub.cli.forecast",
    "train": "hub.cli.forecast",
    "prompts": "hub.cli.prompts",
    "prices": "hub.cli.prices",
    "broker-config": "hub.cli.ops",
    "provision": "hub.cli.ops",
    "deprovision": "hub.cli.ops",
    "homes": "hub.cli.ops",
    "monitor": "hub.cli.ops",
}
"""Every command and the module whose ``COMMANDS`` define it."""


class _Commands(click.Group):
    """The commands of :data:`COMMAND_MODULES`, each imported when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            return _needs_hub_extra(cmd_name, exc)
        commands: Sequence[click.Command] = module.COMMANDS
        return next(c for c in commands if c.name == cmd_name)


def _needs_hub_extra(name: str, exc: ImportError) -> click.Command:
    """Stands in for a command whose module needs packages this machine does not have."""
    missing = exc.name or str(exc)

    def fail(**_: Any) -> NoReturn:
        raise CliError(
            f"coopwatt-hub {name} needs the hub's packages ({missing} is missing): "
            "pip install 'coopwatt[hub]'"
        )

    return click.Command(
        name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1)],
        add_help_option=False,
        context_settings={"ignore_unknown_options": True},
        short_help="needs pip install 'coopwatt[hub]'",
    )


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


if __name__ == "__main__":
    main()
