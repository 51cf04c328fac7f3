"""``coopwatt``: the demo and the neighbourhood simulator's command line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from protocol.cli import CliError
from protocol.timeparse import parse_iso_ms

DEMO_TIMEZONE = "Europe/Amsterdam"  # sim.demo_loop.TIMEZONE; not imported, to keep --help fast


def _parse_start(value: str | None) -> int:
    """ISO 8601 start (UTC when no offset is given) -> epoch ms; default: the start of today in
    the demo's time zone, so a 24-hour run is one local day, the day the hub settles."""
    if value is None:
        zone = ZoneInfo(DEMO_TIMEZONE)
        start = datetime.combine(datetime.now(zone).date(), time(0, 0), tzinfo=zone)
        return int(start.timestamp() * 1000)
    try:
        return parse_iso_ms(value, naive="utc")
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coopwatt")
def main() -> None:
    """coopwatt: software for neighbourhood energy cooperatives. This command runs the demo, and
    a simulated home's devices to practise installing on."""


@main.command()
@click.option(
    "--homes",
    type=click.IntRange(1, 200),
    default=5,
    show_default=True,
    help="Simulated homes, each with a grid meter, PV inverter and wind turbine.",
)
@click.option(
    "--hours",
    type=click.FloatRange(0.1, 24 * 14),
    default=24.0,
    show_default=True,
    help="Simulated hours to run.",
)
@click.option(
    "--speed",
    type=click.FloatRange(1, 36_000),
    default=1800.0,
    show_default=True,
    help="How many times faster than real time the simulated clock runs.",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("coopwatt-demo.db"),
    show_default=True,
    help="The hub's SQLite database to create.",
)
@click.option("--replace", is_flag=True, help="Overwrite --db if it exists.")
@click.option(
    "--start",
    "start",
    metavar="ISO8601",
    default=None,
    help="Simulated start time, UTC unless an offset is given. "
    "[default: today 00:00 in Europe/Amsterdam, where the simulated homes are]",
)
@click.option(
    "--poll-interval",
    type=click.IntRange(1, 3600),
    default=None,
    help="Agent poll interval in simulated seconds. [default: about 10 reads per real second]",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "amqtt"]),
    default="auto",
    show_default=True,
    help="auto uses Mosquitto when installed, else the embedded amqtt.",
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Seed of households and weather."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def demo(
    homes: int,
    hours: float,
    speed: float,
    db: Path,
    replace: bool,
    start: str | None,
    poll_interval: int | None,
    broker: str,
    seed: int,
    log_level: str,
) -> None:
    """Run a broker, the hub and N simulated homes with their agents, then compare what the hub
    stored with what the simulated meters measured, and show the whole loop: the forecast the
    hub issued, what each home's light said and when, and each home's settlement in money.

    Exits 0 when every home's stored energy agrees with the simulator within 0.5 %.
    """
    from sim.demo import DemoOptions, main_demo  # noqa: PLC0415 - keeps --help fast

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if db.exists():
        if not replace:
            raise click.UsageError(
                f"{db} exists; pass --replace to overwrite it or choose another --db"
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    opts = DemoOptions(
        homes=homes,
        hours=hours,
        speed=speed,
        db=db,
        start_ms=_parse_start(start),
        poll_interval_s=poll_interval,
        broker=broker,
        seed=seed,
    )
    from sim.broker import find_mosquitto  # noqa: PLC0415

    kind = broker if broker != "auto" else ("mosquitto" if find_mosquitto() else "amqtt")
    click.echo(
        f"broker: {kind}" + ("" if kind == "mosquitto" else " (embedded, MQTT 3.1.1 only)"),
        err=True,
    )
    click.echo(
        f"{homes} homes, {hours:g} simulated hours at {speed:g}x; hub database {db}", err=True
    )
    try:
        code = main_demo(opts)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        code = 130
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command(short_help="Serve a simulated home's devices to practise scan, read and check.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on: 127.0.0.1 for this computer only, or this computer's LAN "
    "address to practise from another one (a Pi, say).",
)
@click.option(
    "--port-base",
    type=click.IntRange(1, 65533),
    default=None,
    metavar="PORT",
    help="Serve the grid meter on PORT, the inverter on PORT+1 and the turbine on PORT+2 "
    "(e.g. 15020). [default: free ports, printed at start]",
)
@click.option(
    "--start",
    "start",
    metavar="ISO8601",
    default=None,
    help="Simulated time to start at, e.g. 2026-06-21T09:00 to see solar power by day; UTC "
    "unless an offset is given. Time then runs at real speed. [default: now]",
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Which household: its load and counters."
)
@click.option(
    "--served-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also append every request the devices answer, with the values they showed, to this "
    "file as JSON lines (to compare with what the agent read).",
)
def devices(
    host: str, port_base: int | None, start: str | None, seed: int, served_log: Path | None
) -> None:
    """Serve one simulated home's devices on local ports until stopped, to practise on.

    A grid meter (Eastron SDM630), a SunSpec PV inverter and a small wind turbine answer Modbus
    TCP at unit 1, each on its own port, like the devices in a real home: their values move
    (the sun, the wind and the household's load follow the clock). The same grid connection's
    smart meter streams DSMR 5.0 telegrams on a P1 port (TCP, as a P1 dongle does). Practise
    `coopwatt-agent scan`, `read` and `check` on the printed URLs, and paste the printed
    [[devices]] tables into an agent.toml. Ctrl-C stops.
    """
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from protocol.clock import Clock, SimClock, SystemClock  # noqa: PLC0415
    from sim.practice import PracticeError, PracticeHome  # noqa: PLC0415 - keeps --help fast

    # pymodbus logs a client hanging up, or a port it cannot bind, as warnings; the one line
    # below says what went wrong instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    clock: Clock
    if start is None:
        clock = SystemClock()
    else:
        try:
            start_ms = parse_iso_ms(start, naive="utc")
        except ValueError:
            raise CliError(f"--start {start!r} is not a time like 2026-06-21T09:00") from None
        sim_clock = SimClock(start_ms)
        sim_clock.start()
        clock = sim_clock
    try:
        home = PracticeHome(clock, host=host, port_base=port_base, seed=seed, served_log=served_log)
        home.start()
    except (PracticeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # the served log
        raise CliError(f"cannot open {served_log}: {exc.strerror or exc}") from None
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        when = datetime.fromtimestamp(clock.now_ms() / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"A simulated home's devices, from {when} in real time:")
        for device in home.devices:
            click.echo(f"  {device.line()}")
        first = home.devices[0]
        click.echo("\nTry:")
        click.echo(f"  coopwatt-agent scan --modbus {first.url} --units 1-10")
        click.echo(f"  coopwatt-agent read --modbus {first.url} --unit 1 --profile eastron-sdm630")
        click.echo(f"  coopwatt-agent read --p1 {home.devices[-1].url}")
        click.echo(
            "\nThe devices part of agent.toml (with coop, home and [broker] as for a real home):\n"
        )
        click.echo(home.agent_toml())
        click.echo("Ctrl-C to stop.")
        while not stop.wait(1.0):
            pass
    finally:
        home.stop()
    click.echo("stopped", err=True)


if __name__ == "__main__":
    main()
