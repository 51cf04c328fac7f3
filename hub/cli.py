"""``coopwatt-hub``: the cooperative hub's command line, a thin shell over the library.

Exit codes: 0 on success and on a clean stop (SIGINT/SIGTERM), 2 for a problem the operator can
fix (bad config, missing or foreign database, bad option), shown as one line without a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TextIO

import click

import hub
from hub.app import serve
from hub.cli_forecast import COMMANDS as FORECAST_COMMANDS
from hub.cli_ops import COMMANDS as OPS_COMMANDS
from hub.cli_prompts import COMMANDS as PROMPTS_COMMANDS
from hub.cli_settlement import COMMANDS as SETTLEMENT_COMMANDS
from hub.config import ConfigError, HubConfig, load_config
from hub.ops.export import export_csv
from hub.ops.summary import home_summaries
from hub.storage.store import Store, StoreError
from protocol.systemd import Notifier, configure_logging

log = logging.getLogger("hub")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


class HubCliError(click.ClickException):
    """A problem the operator can fix: printed as ``Error: ...``, exit code 2."""

    exit_code = 2


@contextlib.contextmanager
def _stop_on_signals(
    stop: threading.Event, on_reload: Callable[[], None] | None = None
) -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set ``stop`` and the yielded "terminating" event; SIGHUP calls
    ``on_reload`` (which sets ``stop`` only when the new config is usable)."""
    terminating = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        terminating.set()
        stop.set()

    def hup(signum: int, frame: FrameType | None) -> None:
        if on_reload is not None:
            on_reload()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)
    try:
        yield terminating
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _open_existing(db_path: Path) -> Store:
    try:
        return Store.open_existing(db_path)
    except StoreError as exc:
        raise HubCliError(str(exc)) from None


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


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The hub's TOML config: coop, db and a [broker] table.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="How much to log to stderr.",
)
@click.option(
    "--worker",
    type=click.IntRange(1, 64),
    default=None,
    metavar="N",
    help="Run as extra ingest worker N beside the hub: it stores and acks the readings the "
    "broker's shared subscription (broker.shared_group) hands it. Start the hub itself first.",
)
def run(config_path: Path, log_level: str, worker: int | None) -> None:
    """Run the hub until SIGINT or SIGTERM; SIGHUP rereads the config.

    Connects to the broker (retrying with backoff while it is down), subscribes to every home's
    readings and status, stores readings and acks them. On SIGINT/SIGTERM it stores and acks
    what it has received, publishes its offline status and exits 0.

    \b
    Example config:
        coop = "sunny-street"
        db = "/var/lib/coopwatt/hub.db"     # relative to the config's folder
        [broker]
        url = "mqtt://localhost:1883"       # or mqtts://host:8883
        username = "_hub"
        password_file = "/etc/coopwatt/hub.password"
        protocol = 5                        # or 311
        shared_group = "hub-<secret>"       # optional, as broker-config wrote it: readings via
                                            # $share/<group>/..., so that extra workers
                                            # (--worker N) share the load
        [site]                              # optional: forecast demand, PV and wind
        latitude = 52.52
        longitude = 13.41
        timezone = "Europe/Berlin"          # optional; see hub/config.py for every key

    \b
    Scale-out on one machine: with broker.shared_group set, start the hub, then as many
    workers as there are spare cores, each with its own N (client id gets "-wN"):
        coopwatt-hub run --config hub.toml
        coopwatt-hub run --config hub.toml --worker 1
    """
    configure_logging(log_level)  # journald priorities under systemd; COOPWATT_LOG_FORMAT=json
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise HubCliError(str(exc)) from None
    if worker is not None and config.shared_group is None:
        raise HubCliError(f"{config_path}: --worker needs broker.shared_group in the config")
    notifier = Notifier.from_env()
    stop = threading.Event()
    reloaded: list[HubConfig] = []

    def reread() -> None:
        # A config that does not load keeps the running one: a typo must not stop the hub.
        try:
            reloaded[:] = [load_config(config_path)]
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running config: %s", exc)
            return
        log.info("SIGHUP: config %s reread, restarting ingest with it", config_path)
        stop.set()

    try:
        with _stop_on_signals(stop, reread) as terminating:
            while True:
                stats = serve(config, stop, notifier=notifier, worker=worker)
                if terminating.is_set() or not reloaded:
                    break
                config = reloaded.pop()
                notifier.reloading()
                stop.clear()
    except StoreError as exc:
        raise HubCliError(str(exc)) from None
    notifier.stopping()
    log.info("hub stopped %s", " ".join(f"{k}={v}" for k, v in stats.items()))


@main.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to read (it is never created or changed).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv"]),
    default="csv",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    help="File to write, or - for stdout. A file appears only once complete.",
)
@click.option("--home", default=None, help="Export only this home.")
def export(db_path: Path, fmt: str, output: str, home: str | None) -> None:
    """Export stored readings, one row per reading, ordered by home, device and seq.

    Columns: home, device, role, seq, ts_ms (UTC epoch milliseconds), then every quantity in
    glossary order with its unit in its name (power_w, energy_import_wh, ...); a cell is empty
    when the reading did not carry that quantity.
    """
    assert fmt == "csv"
    with _open_existing(db_path) as store:
        if output == "-":
            _export_stdout(store, home)
            return
        target = Path(output)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                rows = export_csv(store, out, home=home)
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise HubCliError(f"cannot write {output}: {exc.strerror or exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        click.echo(f"exported {rows} readings to {target}", err=True)


def _export_stdout(store: Store, home: str | None) -> None:
    out: TextIO = sys.stdout
    try:
        export_csv(store, out, home=home)
        out.flush()
    except BrokenPipeError:
        # The reader (head, less) went away: not an error worth a traceback.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


@main.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to read (it is never created or changed).",
)
def summary(db_path: Path) -> None:
    """Per home: readings stored and energy imported, exported and generated (Wh).

    Energy is read from the meters' lifetime counters: last minus first over the stored period.
    """
    with _open_existing(db_path) as store:
        summaries = home_summaries(store)
    click.echo(
        f"{'home':<32} {'readings':>10} {'imported_wh':>14} {'exported_wh':>14} "
        f"{'generated_wh':>14}"
    )
    for s in summaries.values():
        click.echo(
            f"{s.home:<32} {s.readings:>10} {s.imported_wh:>14.1f} {s.exported_wh:>14.1f} "
            f"{s.generated_wh:>14.1f}"
        )


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
