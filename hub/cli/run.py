"""``coopwatt-hub run``: the hub (or an extra ingest worker) until SIGINT or SIGTERM; SIGHUP
rereads the config. The hub itself is :func:`hub.app.serve`; this is its signal handling, config
reloads and systemd notifications.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Final

import click

from hub.app import serve
from hub.config import ConfigError, HubConfig, load_config
from hub.storage.store import StoreError
from protocol.cli import CliError
from protocol.systemd import Notifier, configure_logging

log = logging.getLogger("hub")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


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


@click.command()
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
        raise CliError(str(exc)) from None
    if worker is not None and config.shared_group is None:
        raise CliError(f"{config_path}: --worker needs broker.shared_group in the config")
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
        raise CliError(str(exc)) from None
    notifier.stopping()
    log.info("hub stopped %s", " ".join(f"{k}={v}" for k, v in stats.items()))


COMMANDS: Final[tuple[click.Command, ...]] = (run,)
