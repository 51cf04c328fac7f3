"""``coopwatt-hub`` commands for running a cooperative for real: the broker's config, provisioning
homes, and the operator's monitor. Thin click layers over :mod:`hub.ops.broker_config`,
:mod:`hub.ops.provision` and :mod:`hub.ops.monitor`; passwords are never printed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from protocol.cli import CliError

# hub.ops.provision and hub.ops.monitor need the ``ops`` extra (cryptography, rich): imported by the
# commands that use them, so `coopwatt-hub run` works without it.

DIR_HELP = "The broker folder broker-config writes (/etc/coopwatt/broker)."
DEFAULT_DIR = Path("/etc/coopwatt/broker")


def _quiet_logs() -> None:
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(levelname)s: %(message)s")


@click.command("broker-config")
@click.option("--coop", required=True, help="The cooperative's id.")
@click.option(
    "--name",
    "names",
    multiple=True,
    required=True,
    help="A hostname or IP address agents use to reach the broker; repeat for several. "
    "The first is what agent configs name.",
)
@click.option(
    "--dir",
    "broker_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where to write the config set.",
)
@click.option("--tls-port", type=click.IntRange(1, 65535), default=8883, show_default=True)
@click.option(
    "--bind",
    "tls_bind",
    default=None,
    help="Listen for agents on this IP address only (default: every address).",
)
@click.option(
    "--local-port",
    type=click.IntRange(0, 65535),
    default=1883,
    show_default=True,
    help="Plain MQTT on 127.0.0.1 for the hub on this machine (required: the hub's account "
    "exists only there).",
)
@click.option(
    "--persistence-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/mosquitto"),
    show_default=True,
    help="Where Mosquitto keeps retained and queued messages; created and given to the "
    "broker's user.",
)
@click.option(
    "--log-denied",
    is_flag=True,
    help="Log every packet (Mosquitto's debug log), the only way Mosquitto 2.0 names the "
    "client of a refused publish. Noisy: for investigating, not for every day.",
)
@click.option(
    "--broker-user",
    default=None,
    help="Owner of the files Mosquitto reads (default: mosquitto, when run as root).",
)
@click.option(
    "--hub-user",
    default=None,
    help="Owner of the hub's credentials (default: coopwatt, when it exists).",
)
def broker_config_cmd(
    coop: str,
    names: tuple[str, ...],
    broker_dir: Path,
    tls_port: int,
    tls_bind: str | None,
    local_port: int,
    persistence_dir: Path,
    broker_user: str | None,
    hub_user: str | None,
    log_denied: bool,
) -> None:
    """Write a working Mosquitto config set for the cooperative.

    A TLS listener where the client certificate from the cooperative's own CA is the login (its
    common name is the account and the client id), ACLs per home (a home reaches only its own
    topics), and a loopback listener for the hub by password; allow_anonymous false,
    max_packet_size from the wire contract's limit, persistence. Creates the CA, the broker's
    certificate and the hub's and the operator's accounts the first time; running it again
    keeps them and every provisioned home.

    \b
    Then:
      sudo install -D -m 0644 systemd/mosquitto.service.d/coopwatt.conf \\
          /etc/systemd/system/mosquitto.service.d/coopwatt.conf
      sudo systemctl daemon-reload && sudo systemctl restart mosquitto
    """
    from hub.ops.broker_config import write_broker_config  # noqa: PLC0415
    from hub.ops.provision import ProvisionError, default_broker_user, user_exists  # noqa: PLC0415

    _quiet_logs()
    if broker_user is None:
        broker_user = default_broker_user()
    if hub_user is None and user_exists("coopwatt"):
        hub_user = "coopwatt"
    try:
        files = write_broker_config(
            broker_dir,
            coop,
            list(names),
            tls_port=tls_port,
            tls_bind=tls_bind,
            local_port=local_port or None,
            persistence_dir=persistence_dir,
            broker_user=broker_user,
            hub_user=hub_user,
            log_denied=log_denied,
        )
    except (ProvisionError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {broker_dir}: {exc.strerror or exc}") from None
    click.echo(f"wrote {files.layout.conf}")
    click.echo(f"agents connect to {files.site.public_url}")
    for user in files.new_accounts:
        click.echo(f"created account {user}")
    click.echo(f"the hub's [broker] table (for hub.toml): {files.hub_config}")
    click.echo(f"the operator's monitor config: {files.operator_config}")
    click.echo("reload or restart mosquitto to apply: sudo systemctl restart mosquitto")


@click.command("provision")
@click.argument("home")
@click.option(
    "--dir",
    "broker_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help=DIR_HELP,
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/coopwatt/bundles"),
    show_default=True,
    help="Where to write the home's first-boot bundle (a folder named after the home, mode "
    "0700). Keep it out of any checkout or shared drive: it holds the home's key.",
)
@click.option(
    "--devices",
    "devices_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A TOML file of [[devices]] tables for the agent config (else added at commissioning).",
)
@click.option(
    "--package",
    "agent_package",
    default="coopwatt[agent,web]",
    show_default=True,
    help="What the Pi installs with pip.",
)
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A coopwatt wheel to put in the bundle and install from.",
)
@click.option(
    "--rotate",
    is_flag=True,
    help="The home exists: issue a new password and certificate, revoke the old.",
)
def provision_cmd(
    home: str,
    broker_dir: Path,
    out_dir: Path,
    devices_file: Path | None,
    agent_package: str,
    wheel: Path | None,
    rotate: bool,
) -> None:
    """Give HOME a client certificate, a broker account, an agent config and a first-boot bundle.

    HOME is the home's id (1-32 of a-z, 0-9 and '-'): it is the certificate's common name, which
    the broker takes as the home's account and client id, and the ACLs confine to the home's
    own topics. The key and password are written only into the bundle (mode 0600). Reload the
    broker afterwards: sudo systemctl reload mosquitto.
    """
    from hub.ops.provision import Layout, ProvisionError, provision_home  # noqa: PLC0415

    _quiet_logs()
    try:
        result = provision_home(
            Layout(broker_dir),
            home,
            out_dir,
            devices_file=devices_file,
            agent_package=agent_package,
            wheel=wheel,
            rotate=rotate,
        )
    except ProvisionError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write: {exc.strerror or exc}") from None
    verb = "re-provisioned (old certificate revoked)" if result.rotated else "provisioned"
    click.echo(f"{verb} {home}; first-boot bundle: {result.bundle}")
    click.echo("the bundle holds the home's password and key: hand it over, then delete it")
    click.echo("apply on the broker: sudo systemctl reload mosquitto")


@click.command("deprovision")
@click.argument("home")
@click.option(
    "--dir",
    "broker_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help=DIR_HELP,
)
def deprovision_cmd(home: str, broker_dir: Path) -> None:
    """Remove HOME's broker account and revoke its certificate.

    Takes effect when the broker reloads (sudo systemctl reload mosquitto): the home can no
    longer connect, and a connection it still holds can neither send nor receive. Its stored
    readings stay until erased under its consent.
    """
    from hub.ops.provision import Layout, ProvisionError, deprovision_home  # noqa: PLC0415

    _quiet_logs()
    try:
        result = deprovision_home(Layout(broker_dir), home)
    except ProvisionError as exc:
        raise CliError(str(exc)) from None
    revoked = "certificate revoked" if result.revoked_serial is not None else "no certificate"
    click.echo(f"deprovisioned {home}: account removed, {revoked}")
    click.echo("apply on the broker: sudo systemctl reload mosquitto")


@click.command("homes")
@click.option(
    "--dir",
    "broker_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help=DIR_HELP,
)
def homes_cmd(broker_dir: Path) -> None:
    """List the provisioned homes and when they were provisioned (UTC)."""
    import datetime as dt  # noqa: PLC0415

    from hub.ops.provision import Layout, provisioned_homes  # noqa: PLC0415

    try:
        homes = provisioned_homes(Layout(broker_dir))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {broker_dir}: {exc}") from None
    for home, entry in homes.items():
        when = dt.datetime.fromtimestamp(entry.get("provisioned_ms", 0) / 1000, dt.UTC)
        click.echo(f"{home:<32} {when:%Y-%m-%d %H:%M}")


@click.command("monitor")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="coop and a [broker] table: the operator.toml broker-config writes, or the hub's.",
)
@click.option("--once", is_flag=True, help="Print one frame once the hub's metrics arrive, exit.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.5, 300),
    default=10.0,
    show_default=True,
    help="With --once: seconds to wait for the metrics.",
)
def monitor_cmd(config_path: Path, once: bool, timeout_s: float) -> None:
    """Live view of the cooperative over MQTT: the hub, homes online and last seen, stale data,
    device faults, backlogs, ingest rates, the forecast's age and active alerts.

    Exits 1 with --once when no metrics arrived in time (hub down, or no access).
    """
    from hub.ops.monitor import ConfigError, load_monitor_config, run_monitor  # noqa: PLC0415

    logging.basicConfig(level="ERROR", stream=sys.stderr, format="%(levelname)s: %(message)s")
    try:
        config = load_monitor_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        state = run_monitor(config, once=once, timeout_s=timeout_s)
    except KeyboardInterrupt:
        return
    if once and state.metrics is None:
        raise click.exceptions.Exit(1)


COMMANDS = (broker_config_cmd, provision_cmd, deprovision_cmd, homes_cmd, monitor_cmd)
