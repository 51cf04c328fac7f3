"""``coopwatt-agent``: the household agent's command line (a thin shell over the library)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from agent.cli_consent import config_option, consent
from agent.config import AgentConfig, ConfigError, load_config
from agent.profiles import ProfileError
from protocol.cli import CliError
from protocol.clock import SystemClock
from protocol.systemd import Notifier, configure_logging

if TYPE_CHECKING:
    from agent.ha_discovery import HomeAssistantBridge


def _setup_logging(level: str) -> None:
    # Text on a terminal, syslog priorities under systemd's journal, or COOPWATT_LOG_FORMAT=json.
    configure_logging(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coopwatt")
def main() -> None:
    """coopwatt household agent: reads the home's meters, inverter and turbine over Modbus and
    sends the readings the household has agreed to share to the cooperative's hub."""


@main.command()
@config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="On stop, seconds to wait for the hub to ack what is in flight (the rest stays queued).",
)
@click.option(
    "--home-assistant",
    "ha_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/coopwatt/home-assistant.toml"),
    show_default=True,
    help="Opt-in: also show live values and the cooperative's advice on the household's own "
    "Home Assistant, if this exists.",
)
def run(config_path: Path, log_level: str, drain_timeout: float, ha_path: Path) -> None:
    """Run the agent until stopped (SIGTERM or Ctrl-C); readings are kept on disk meanwhile.

    SIGHUP (systemctl reload coopwatt-agent) rereads the config: when it loads, the agent
    restarts on it (in-flight readings stay in the outbox); when it does not, the agent goes on
    with the one it has and logs why.
    """
    _setup_logging(log_level)
    from agent.service import Agent  # noqa: PLC0415 - keeps --help fast on a Pi Zero

    log = logging.getLogger(__name__)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    notifier = Notifier.from_env()
    bridge = _home_assistant(ha_path, config.home)

    def build(cfg: AgentConfig) -> Agent:
        on_polled = bridge.publish if bridge is not None else None
        built = Agent(cfg, SystemClock(), watchdog=notifier, on_polled=on_polled)
        if bridge is not None:  # the advice and each appliance's "good time now" too
            names = [a.name for a in cfg.appliances]
            built.prompts.add_view(bridge.advice_view(names, cfg.timezone))
        return built

    try:
        agent = build(config)
    except (ConfigError, ProfileError) as exc:
        if bridge is not None:
            bridge.stop()
        raise CliError(str(exc)) from None
    terminating: list[bool] = []
    reloaded: list[AgentConfig] = []
    current = [agent]

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %d", signum)
        terminating.append(True)
        current[0].stop()

    def _reload(signum: int, frame: FrameType | None) -> None:
        try:
            reloaded[:] = [load_config(config_path)]
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running config: %s", exc)
            return
        log.info("SIGHUP: config %s reread, restarting on it", config_path)
        current[0].stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    while not terminating:  # a stop that came while a reloaded agent was being built
        notifier.ready(f"home {config.home}: polling {len(config.devices)} device(s)")
        current[0].run(drain_timeout_s=drain_timeout)
        if terminating or not reloaded:
            break
        notifier.reloading()
        new = reloaded.pop()
        try:
            current[0] = build(new)
            config = new
        except (ConfigError, ProfileError, ValueError, OSError) as exc:
            log.error("reloaded config cannot run (%s); going on with the previous one", exc)
            current[0] = build(config)
    notifier.stopping()
    if bridge is not None:
        bridge.stop()


def _home_assistant(path: Path, home: str) -> HomeAssistantBridge | None:
    """The household's opt-in Home Assistant bridge, when its config file exists."""
    if not path.exists():
        return None
    from agent.ha_discovery import HomeAssistantBridge, load_ha_config  # noqa: PLC0415
    from agent.service import agent_version  # noqa: PLC0415

    try:
        bridge = HomeAssistantBridge(load_ha_config(path, home), home, agent_version())
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    bridge.start()
    logging.getLogger(__name__).info("sharing live values with Home Assistant per %s", path)
    return bridge


# --- installer commands ---------------------------------------------------------------------

_BUS_HELP = "The bus: tcp://HOST[:PORT] or rtu:///dev/ttyUSB0?baud=9600&parity=N."


def _echo_json(data: object) -> None:
    import json  # noqa: PLC0415

    click.echo(json.dumps(data, indent=2, sort_keys=False))


_P1_HELP = (
    "Instead of a Modbus bus: a smart meter's P1 port, serial:///dev/ttyUSB0 (add ?baud=9600&"
    "framing=7E1 for DSMR 2.2) or a P1 dongle, tcp://HOST:PORT."
)


_SML_HELP = (
    "Instead: a German meter's optical SML port through an IR head, serial:///dev/ttyUSB0 "
    "(9600 8N1), or a network IR head, tcp://HOST:PORT."
)


def _one_of(modbus: str | None, p1: str | None, sml: str | None = None) -> None:
    if [modbus, p1, sml].count(None) != 2:
        raise CliError("give --modbus URL, --p1 URL or --sml URL (one of them)")


@main.command()
@click.option("--modbus", "url", default=None, help=_BUS_HELP)
@click.option("--p1", "p1_url", default=None, help=_P1_HELP)
@click.option("--sml", "sml_url", default=None, help=_SML_HELP)
@click.option(
    "--units", default="1-247", show_default=True, help="Unit ids to ask: 1-247, or 1,2,10-20."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.05, 30),
    default=None,
    help="Seconds to wait for each unit to answer [0.5]; with --p1 or --sml, to listen [12].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def scan(
    url: str | None,
    p1_url: str | None,
    sml_url: str | None,
    units: str,
    timeout_s: float | None,
    as_json: bool,
) -> None:
    """List what answers on a Modbus bus and what it is: a SunSpec device's maker, model and
    serial, or the device profiles that fit it. With --p1, listen to a smart meter's P1 port and
    say which meter and DSMR version sends there; with --sml, listen to a meter's optical SML
    port and say which meter it is and what it sends (--timeout is then how long to listen)."""
    _one_of(url, p1_url, sml_url)
    if p1_url is not None:
        _scan_p1(p1_url, timeout_s or 12.0, as_json)
        return
    if sml_url is not None:
        _scan_sml(sml_url, timeout_s or 12.0, as_json)
        return
    assert url is not None
    timeout_s = timeout_s or 0.5
    from agent import installer  # noqa: PLC0415
    from agent.modbus_io import parse_bus_url  # noqa: PLC0415

    try:
        unit_list = installer.parse_units(units)
        parse_bus_url(url)  # a typo fails now, not after the scan
    except ValueError as exc:
        raise CliError(str(exc)) from None
    interactive = sys.stderr.isatty()

    def progress(unit: int, index: int, total: int) -> None:
        if interactive:
            click.echo(f"\rasking unit {unit:3d} ({index + 1}/{total})", nl=False, err=True)

    def found(hit: installer.Found) -> None:
        if interactive:
            click.echo("\r" + " " * 40 + "\r", nl=False, err=True)
        if not as_json:
            click.echo(f"unit {hit.unit:3d}: {hit.describe()}")

    try:
        hits = installer.scan(url, unit_list, timeout_s=timeout_s, progress=progress, found=found)
    except (ValueError, ProfileError) as exc:
        raise CliError(str(exc)) from None
    if interactive:
        click.echo("\r" + " " * 40 + "\r", nl=False, err=True)
    if as_json:
        from dataclasses import asdict  # noqa: PLC0415

        _echo_json({"bus": url, "found": [asdict(h) for h in hits]})
    elif not hits:
        click.echo(f"nothing answered on {url} (units {units})")


def _scan_p1(url: str, timeout_s: float, as_json: bool) -> None:
    from dataclasses import asdict  # noqa: PLC0415

    from agent.modbus_io import DeviceError  # noqa: PLC0415
    from agent.p1_commission import scan_p1, with_baud  # noqa: PLC0415

    try:
        found = scan_p1(url, timeout_s=timeout_s)
    except (ValueError, ProfileError, DeviceError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        _echo_json({"bus": url, "found": [asdict(found)]})
        return
    click.echo(found.describe())
    click.echo(f'  [[devices]] p1 = "{with_baud(found)}"  profile = "{found.profile}"')


def _scan_sml(url: str, timeout_s: float, as_json: bool) -> None:
    from agent.modbus_io import DeviceError  # noqa: PLC0415
    from agent.p1_commission import read_sml  # noqa: PLC0415

    try:
        found = read_sml(url, timeout_s=timeout_s)
    except (ValueError, DeviceError) as exc:
        raise CliError(str(exc)) from None
    sends = sorted(found["quantities"])
    if as_json:
        _echo_json(
            {"bus": url, "found": [{"kind": "sml", "device": found["device"], "sends": sends}]}
        )
        return
    click.echo(f"{found['device']}: sends {', '.join(sends)}")
    if "power_w" not in sends:
        click.echo("  no power: the meter may need its PIN entered to send it (see its manual)")
    click.echo(f'  [[devices]] sml = "{url}"')


@main.command()
@click.option("--modbus", "url", default=None, help=_BUS_HELP)
@click.option("--p1", "p1_url", default=None, help=_P1_HELP)
@click.option("--sml", "sml_url", default=None, help=_SML_HELP)
@click.option("--unit", type=click.IntRange(0, 247), default=None, help="The device's unit id.")
@click.option("--profile", default=None, help="Device profile name; without it, SunSpec discovery.")
@click.option(
    "--role",
    type=click.Choice(["grid", "pv", "wind", "battery", "load"]),
    default=None,
    help="Read as this role instead of the profile's (a meter used as a sub-meter).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.05, 30),
    default=None,
    help="Seconds to wait for each answer [1.5]; with --p1, for a good telegram [12].",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the registers read and the values decoded from them as a test fixture.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def read(
    url: str | None,
    p1_url: str | None,
    sml_url: str | None,
    unit: int | None,
    profile: str | None,
    role: str | None,
    timeout_s: float | None,
    record: Path | None,
    as_json: bool,
) -> None:
    """Read one device once and print its values in glossary units. With --p1, wait for one good
    telegram from a smart meter's P1 port (--profile dsmr-5, the default, dsmr-2 or e-mucs); with
    --sml, for one SML frame from its optical port."""
    from agent import installer  # noqa: PLC0415
    from agent.modbus_io import DeviceError  # noqa: PLC0415
    from protocol.quantities import Role  # noqa: PLC0415

    if [url, p1_url, sml_url].count(None) != 2:
        raise CliError("give --modbus URL, --p1 URL or --sml URL (one of them)")
    try:
        if sml_url is not None:
            if unit is not None or record is not None or profile is not None:
                raise CliError("--unit, --record and --profile are for Modbus devices, not --sml")
            from agent.p1_commission import read_sml  # noqa: PLC0415

            result = read_sml(sml_url, role=Role(role) if role else None, timeout_s=timeout_s or 12)
        elif p1_url is not None:
            if unit is not None or record is not None:
                raise CliError("--unit and --record are for Modbus devices, not --p1")
            from agent.p1_commission import read_p1  # noqa: PLC0415

            result = read_p1(
                p1_url, profile, role=Role(role) if role else None, timeout_s=timeout_s or 12.0
            )
        else:
            if unit is None:
                raise CliError("give the device's --unit")
            assert url is not None
            result = installer.read_device(
                url,
                unit,
                profile,
                role=Role(role) if role else None,
                timeout_s=timeout_s or 1.5,
                record=record,
            )
    except (ValueError, ProfileError, DeviceError, OSError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        _echo_json(result)
        return
    click.echo(f"{result['device']} ({result['profile']}, role {result['role']})")
    for line in installer.format_quantities(result["quantities"]):
        click.echo(f"  {line}")


@main.command()
@config_option
@click.option(
    "--broker-timeout",
    "broker_timeout_s",
    type=click.FloatRange(0.5, 120),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the broker.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check(config_path: Path, broker_timeout_s: float, as_json: bool) -> None:
    """Commissioning check: read every configured device once, log in to the broker, and check
    that the clock is synchronised. Exits non-zero naming what failed."""
    from agent import installer  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    rows = installer.check(config, broker_timeout_s=broker_timeout_s)
    failed = [r.what for r in rows if r.ok is False]
    if as_json:
        from dataclasses import asdict  # noqa: PLC0415

        _echo_json({"ok": not failed, "checks": [asdict(r) for r in rows]})
    else:
        width = max(len(r.what) for r in rows)
        marks = {True: "ok", False: "FAIL", None: "?"}
        for r in rows:
            click.echo(f"{r.what:<{width}}  {marks[r.ok]:<4}  {r.detail}")
    if failed:
        raise CliError(f"check failed: {', '.join(failed)}")


# --- the household's page -------------------------------------------------------------------


@main.group(invoke_without_command=True)
@config_option
@click.option(
    "--bind",
    default="0.0.0.0",  # noqa: S104 - the page is for the home network
    show_default=True,
    help="Where to listen: 0.0.0.0 for the whole home network, 127.0.0.1 for this Pi only.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
    help="The TCP port of the page.",
)  # fmt: skip
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.pass_context
def web(ctx: click.Context, config_path: Path, bind: str, port: int, log_level: str) -> None:
    """Serve the household's own page on the home network (http://<this Pi's name>.local:8080/).

    The page shows the advice and lets the household answer it, the home's energy, the monthly
    statements and what the home shares, and changes the sharing choices. It asks the running
    agent for its state over a local socket; it never talks to the cooperative itself.

    \b
    The first visit asks for the one-time code the installer handed over (it is kept in the
    agent's data folder as household-code) and a new password. Lost the password? Run
    `coopwatt-agent web new-code` and set a new one with that code.
    """
    if ctx.invoked_subcommand is not None:
        return
    import os  # noqa: PLC0415

    from agent.web.settings import SettingsError, read_settings  # noqa: PLC0415

    try:
        read_settings(config_path)  # a mistake is told here, in one line
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    # Become the page's own small process (python -m agent.web): this one has imported the
    # agent's command line (Modbus, MQTT), which the page must not carry. glibc's malloc: one
    # arena per thread is what makes a threaded server grow (two are plenty), and a fixed mmap
    # threshold gives scrypt's 8 MiB back to the system as soon as a password is checked.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    argv = [sys.executable, "-m", "agent.web", "--config", str(config_path), "--bind", bind,
            "--port", str(port), "--log-level", log_level]  # fmt: skip
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, our own module


@web.command("new-code")
@config_option
def web_new_code(config_path: Path) -> None:
    """Write a fresh one-time setup code and print it.

    For the installer's sheet, or for a household that lost its password: the code, typed on
    the page's setup screen with a new password, sets that password (and signs every browser
    out). It works once; a newer code replaces an older one.
    """
    from agent.web.household import write_code  # noqa: PLC0415
    from agent.web.settings import SettingsError, read_settings  # noqa: PLC0415

    try:
        settings = read_settings(config_path)
        code = write_code(settings.code_path)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the code to {settings.code_path}: {exc.strerror}") from None
    click.echo(code)


main.add_command(consent)
