"""``coopwatt-agent consent``: the household decides what leaves its home.

Written for members, not engineers: every command answers in plain words what is shared, with
whom, what for, how finely and for how long. Changes take effect at the agent's next reading, and
the hub confirms each one (and any erasure) with a receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from agent.config import ConfigError, load_config
from agent.consent_ledger import ConsentLedger, LedgerError
from protocol.cli import CliError
from protocol.clock import SystemClock
from protocol.consent import MAX_RETENTION_DAYS, Purpose, Resolution, describe
from protocol.quantities import Role

DEFAULT_CONFIG = Path("/etc/coopwatt/agent.toml")
STREAMS = [r.value for r in Role]
PURPOSES = [p.value for p in Purpose]

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
    show_default=True, help="The agent's config file (TOML).",
)  # fmt: skip


def _ledger(config_path: Path) -> ConsentLedger:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return ConsentLedger(config.consent_path, config.home)


def _expand(values: tuple[str, ...], everything: list[str]) -> list[str]:
    return everything if "all" in values else list(dict.fromkeys(values))


def _show(ledger: ConsentLedger) -> None:
    try:
        grant = ledger.current()
    except LedgerError as exc:
        raise CliError(f"the consent ledger is damaged: {exc}") from None
    for line in describe(grant):
        click.echo(line)
    if grant.version:
        when = datetime.fromtimestamp(grant.issued_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"(consent version {grant.version}, given {when})")


@click.group()
def consent() -> None:
    """See and change what your home shares with the cooperative.

    \b
    Streams:  grid (your electricity meter), pv (solar), wind, battery, load (an appliance meter)
    Purposes: forecast, prompts, settlement, community-stats
    Nothing is shared until you grant it, and you can withdraw at any time: the cooperative's
    hub then erases what you no longer share and sends your home a receipt.
    """


@consent.command()
@config_option
def show(config_path: Path) -> None:
    """Say in plain words what your home shares now."""
    _show(_ledger(config_path))


@consent.command()
@click.argument("streams", nargs=-1, required=True, type=click.Choice([*STREAMS, "all"]))
@click.option(
    "--for",
    "purposes",
    multiple=True,
    required=True,
    type=click.Choice([*PURPOSES, "all"]),
    help="What the data may be used for (repeat).",
)
@click.option(
    "--resolution",
    type=click.Choice([r.value for r in Resolution]),
    default="15min",
    show_default=True,
    help="How fine: every reading (raw), or one total per 15min, hour or day.",
)
@click.option(
    "--keep-days",
    type=click.IntRange(1, MAX_RETENTION_DAYS),
    default=400,
    show_default=True,
    help="How long the hub may keep it.",
)
@config_option
def grant(streams: tuple[str, ...], purposes: tuple[str, ...], resolution: str, keep_days: int,
          config_path: Path) -> None:  # fmt: skip
    """Share STREAMS for the given purposes (other choices stay as they are).

    Example: coopwatt-agent consent grant grid --for settlement --resolution 15min
    """
    ledger = _ledger(config_path)
    try:
        ledger.grant(
            [Role(s) for s in _expand(streams, STREAMS)],
            [Purpose(p) for p in _expand(purposes, PURPOSES)],
            Resolution(resolution), keep_days, SystemClock().now_ms(),
        )  # fmt: skip
    except LedgerError as exc:
        raise CliError(f"the consent ledger is damaged: {exc}") from None
    click.echo("Recorded. From your next reading on:")
    _show(ledger)


@consent.command()
@click.argument("streams", nargs=-1, required=True, type=click.Choice([*STREAMS, "all"]))
@click.option(
    "--for",
    "purposes",
    multiple=True,
    type=click.Choice([*PURPOSES, "all"]),
    help="Withdraw only these purposes (default: every purpose).",
)
@config_option
def revoke(streams: tuple[str, ...], purposes: tuple[str, ...], config_path: Path) -> None:
    """Stop sharing STREAMS (for every purpose, or only those given with --for).

    The hub erases what it no longer may keep and sends your home a receipt.
    """
    ledger = _ledger(config_path)
    try:
        ledger.revoke(
            [Role(s) for s in _expand(streams, STREAMS)],
            [Purpose(p) for p in _expand(purposes, PURPOSES)] if purposes else None,
            SystemClock().now_ms(),
        )
    except LedgerError as exc:
        raise CliError(f"the consent ledger is damaged: {exc}") from None
    click.echo("Recorded. From your next reading on:")
    _show(ledger)


@consent.command()
@config_option
def history(config_path: Path) -> None:
    """Every version you have given, oldest first, and whether the chain is intact."""
    ledger = _ledger(config_path)
    try:
        versions = ledger.history()
    except LedgerError as exc:
        raise CliError(f"the consent ledger is damaged: {exc}") from None
    if not versions:
        click.echo("You have never shared anything.")
        return
    for g in versions:
        when = datetime.fromtimestamp(g.issued_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        shared = ", ".join(
            f"{role} ({', '.join(sorted(p))})" for role, p in sorted(g.streams.items())
        )
        click.echo(f"version {g.version}  {when}  {shared or 'nothing shared'}  [{g.hash[:12]}]")
    click.echo("The chain is intact: each version names the one before it.")
