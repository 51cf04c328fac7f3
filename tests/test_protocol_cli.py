"""``protocol.cli.CliError``: one line, ``Error: ...``, exit code 2, in every coopwatt CLI."""

from __future__ import annotations

import click
from click.testing import CliRunner

from protocol.cli import CliError


def test_a_fixable_mistake_is_one_line_and_exit_code_2() -> None:
    @click.command()
    def cmd() -> None:
        raise CliError("the config file /etc/x.toml does not exist")

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    assert result.output == "Error: the config file /etc/x.toml does not exist\n"
    assert "Traceback" not in result.output
