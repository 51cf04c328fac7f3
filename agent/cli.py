"""``coopwatt-agent``: the household agent's command line (a thin shell over the library)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from agent.config import ConfigError, load_config
from agent.profiles import ProfileError
from protocol.clock import SystemClock

DEFAULT_CONFIG = Path("/etc/coopwatt/agent.toml")


class AgentCliError(click.ClickException):
    """A problem the installer can fix: printed as ``Error: ...``, exit code 2."""

    exit_code = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coopwatt")
def main() -> None:
    """coopwatt household agent: reads the home's meters, inverter and turbine over Modbus and
    sends the readings the household has agreed to share to the cooperative's hub."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Agent config file (TOML).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run(config_path: Path, log_level: str) -> None:
    """Run the agent until stopped (SIGTERM or Ctrl-C); readings are kept on disk meanwhile."""
    _setup_logging(log_level)
    from agent.service import Agent  # noqa: PLC0415 - keeps --help fast on a Pi Zero

    try:
        config = load_config(config_path)
        agent = Agent(config, SystemClock())
    except (ConfigError, ProfileError) as exc:
        raise AgentCliError(str(exc)) from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("stopping on signal %d", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()
