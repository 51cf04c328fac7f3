"""The agent's TOML config, written by the installer at commissioning.

```toml
coop = "sunny-street"
home = "home-7"
poll_interval_s = 10          # default for every device
data_dir = "/var/lib/coopwatt"  # the outbox lives here
outbox_budget_mb = 256        # disk for readings waiting to be sent (about 50 days of a home)
ack_timeout_s = 30            # send a batch again when the hub has not acked it by then
send_interval_s = 5           # live readings leave at most this long after their poll

[broker]
url = "mqtt://hub.local:1883"
username = "home-7"
password_file = "/etc/coopwatt/agent.password"

[[devices]]
name = "grid-meter"
profile = "eastron-sdm630"    # a file in firmware-configs/devices, or "sunspec" to discover
modbus = "tcp://192.168.1.50:502"
unit = 1
poll_interval_s = 5           # optional, per device

[[devices]]
name = "heat-pump"
profile = "s0-pulse-1000"     # an S0 pulse meter: impulses/kWh come from the profile
gpio = 17                     # BCM pin number; S0+ to the pin, S0- to ground
role = "load"                 # optional: overrides the profile's role

[[devices]]
name = "smart-meter"
p1 = "serial:///dev/ttyUSB0"  # a smart meter's P1 port, or a TCP dongle: tcp://192.168.1.60:23
profile = "dsmr-5"            # optional, the default; dsmr-2 (DSMR 2.2/3.0), e-mucs (Belgium)

[[devices]]
name = "zaehler"
sml = "serial:///dev/ttyUSB1"  # a German meter's optical SML port through an IR head (9600 8N1)
```

Optional, for appliance-timing prompts: ``timezone``, ``[[appliances]]`` (see
:mod:`agent.appliances`) and ``[indicator]``: the traffic light, button and displays (see
:mod:`agent.indicator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.appliances import parse_appliances
from agent.indicator import IndicatorConfig, parse_indicator
from agent.modbus_io import BusAddress, parse_bus_url
from agent.push_meter import parse_port_url
from protocol.config_tables import ConfigError, Table, broker_settings, load
from protocol.payloads import Appliance
from protocol.quantities import Role
from protocol.session import BrokerSettings

__all__ = ["AgentConfig", "ConfigError", "DeviceConfig", "load_config", "parse_config"]

SUNSPEC = "sunspec"
SML = "sml"  # the profile of an SML meter: its OBIS table is sml-obis/default.toml
P1_DEFAULT_PROFILE = "dsmr-5"


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str
    profile: str  # profile file name, or "sunspec"
    modbus: str  # bus URL; empty for an S0 pulse meter
    unit: int
    poll_interval_s: float
    gpio: int | None = None  # BCM pin of an S0 pulse meter
    role: Role | None = None  # overrides the profile's role (a meter used as a sub-meter)
    p1: str = ""  # the P1 port of a smart meter: serial:///dev/ttyUSB0 or tcp://host:port
    sml: str = ""  # a smart meter's optical SML port (an IR head): serial:///dev/ttyUSB0

    @property
    def push_url(self) -> str:
        """The port of a meter that pushes its readings (P1 or SML); empty for others."""
        return self.p1 or self.sml


@dataclass(frozen=True, slots=True)
class AgentConfig:
    coop: str
    home: str
    broker: BrokerSettings
    data_dir: Path
    devices: tuple[DeviceConfig, ...]
    poll_interval_s: float = 10.0
    outbox_budget_bytes: int = 256 * 1024 * 1024
    # Wall seconds before an unacked batch goes again (then twice that, up to 120 s).
    ack_timeout_s: float = 30.0
    # Appliance-timing prompts (agent/appliances.py, agent/indicator.py): optional.
    timezone: str | None = None
    appliances: tuple[Appliance, ...] = ()
    indicator: IndicatorConfig | None = None
    # Agent-clock seconds a live reading may wait to leave with later polls' readings: at 1 s
    # polling one message of six polls every 6 s instead of one a second (issue 22); 0 sends
    # every poll at once. Each poll is still committed to the outbox at once.
    send_interval_s: float = 5.0

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def consent_path(self) -> Path:
        return self.data_dir / "consent.jsonl"


def parse_config(data: dict[str, object], base_dir: Path = Path()) -> AgentConfig:
    root = Table(data)
    coop = root.ident("coop")
    home = root.ident("home")
    if "grant" in data:
        raise ConfigError(
            "grant is not set in the config: the household grants consent with "
            "`coopwatt-agent consent grant` (see `coopwatt-agent consent --help`)"
        )
    poll_s = root.number("poll_interval_s", 10.0, lo=0.1, hi=86400.0)
    data_dir = root.path("data_dir", base_dir, ".")
    assert data_dir is not None
    budget_mb = root.number("outbox_budget_mb", 256.0, lo=1.0, hi=1024.0 * 1024)
    ack_timeout_s = root.number("ack_timeout_s", 30.0, lo=1.0, hi=120.0)
    send_interval_s = root.number("send_interval_s", 5.0, lo=0.0, hi=60.0)
    broker = broker_settings(root.table("broker"), f"coopwatt-agent-{coop}-{home}", base_dir)
    devices = []
    buses: dict[str, BusAddress] = {}
    for t in root.tables("devices"):
        name = t.ident("name")
        bus = t.text("modbus") or ""
        gpio = t.integer("gpio", -1, lo=0, hi=53)
        p1 = t.text("p1") or ""
        sml = t.text("sml") or ""
        if [bool(bus), gpio >= 0, bool(p1), bool(sml)].count(True) != 1:
            raise ConfigError(
                f"{t.prefix[:-1]} needs modbus (a Modbus device) or gpio (an S0 pulse meter) "
                "or p1 (a smart meter's P1 port) or sml (its optical SML port), one of them"
            )
        if sml and "profile" in t.data:
            raise ConfigError(
                f"{t.prefix}profile is not for an SML meter: its OBIS codes are in "
                "firmware-configs/devices/sml-obis/default.toml"
            )
        if p1 or sml:
            profile = t.ident("profile") if "profile" in t.data else P1_DEFAULT_PROFILE
            profile = SML if sml else profile
            key = "sml" if sml else "p1"
            try:
                parse_port_url(p1 or sml, "SML" if sml else "P1")
            except ValueError as exc:
                raise ConfigError(f"{t.prefix}{key}: {exc}") from None
            if "unit" in t.data:
                raise ConfigError(f"{t.prefix}unit is for Modbus devices, not a {key} port")
        else:
            profile = t.ident("profile")
        if bus:
            try:
                address = parse_bus_url(bus)
            except ValueError as exc:
                raise ConfigError(f"{t.prefix}modbus: {exc}") from None
            if buses.setdefault(address.key, address) != address:
                raise ConfigError(f"{t.prefix}modbus: {address.device} is set up twice, unalike")
        unit = t.integer("unit", 1, lo=0, hi=247)
        interval = t.number("poll_interval_s", poll_s, lo=0.1, hi=86400.0)
        role_name = t.choice("role", "", tuple(r.value for r in Role))
        t.done()
        devices.append(
            DeviceConfig(
                name,
                profile,
                bus,
                unit,
                interval,
                gpio if gpio >= 0 else None,
                Role(role_name) if role_name else None,
                p1,
                sml,
            )
        )
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ConfigError("two [[devices]] share a name")
    places = [
        (parse_bus_url(d.modbus).key, d.unit)
        if d.modbus
        else (parse_port_url(d.push_url).key if d.push_url else d.gpio)
        for d in devices
    ]
    if len(set(places)) != len(places):
        raise ConfigError(
            "two [[devices]] are at the same unit id on one bus, one GPIO pin or one meter port"
        )
    if {parse_port_url(d.push_url).key.removeprefix("serial://") for d in devices if d.push_url} & {
        parse_bus_url(d.modbus).device for d in devices if d.modbus
    }:
        raise ConfigError("a P1 or SML port is also configured as a Modbus RTU bus")
    if not devices:
        raise ConfigError("no [[devices]] configured")
    timezone, appliances = parse_appliances(root)
    indicator = parse_indicator(root)
    if indicator is not None:
        pins = {indicator.red, indicator.green, indicator.blue, indicator.amber, indicator.button}
        if pins & {d.gpio for d in devices if d.gpio is not None}:
            raise ConfigError("an [indicator] part is on the GPIO pin of an S0 meter")
    root.done()
    return AgentConfig(
        coop, home, broker, data_dir, tuple(devices), poll_s, int(budget_mb * 1024 * 1024),
        ack_timeout_s, timezone, appliances, indicator, send_interval_s,
    )  # fmt: skip


def load_config(path: Path) -> AgentConfig:
    return load(path, parse_config)
