"""What an installer runs at commissioning: scan a bus, read one device, check the whole setup.

Library functions behind ``coopwatt-agent scan``, ``read`` and ``check``; they return plain data
and the CLI prints it as a table or as JSON.

- :func:`scan` asks each unit id whether it is SunSpec (and who made it) and, if not, which
  shipped profiles fit it: a profile with an ``[identify]`` table is matched by its model
  registers; others are candidates when every register they read answers with plausible values.
- :func:`read_device` reads once through the same code the agent polls with, and can record the
  registers it read with the values decoded from them, as a test fixture for a new model.
- :func:`check` reads every configured device once, logs in to the broker with the configured
  credentials, checks the clock is synchronised and that the data directory is writable.
"""

from __future__ import annotations

import json
import math
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from agent.clocksync import clock_synced
from agent.config import SUNSPEC, AgentConfig, DeviceConfig
from agent.devices import Device, Readable, close_devices, open_devices
from agent.modbus_io import DeviceError, ModbusBus
from agent.profiles import (
    Profile,
    ProfileError,
    decode_registers,
    list_profiles,
    load_profile,
    matches_identity,
    plan_reads,
)
from agent.push_meter import PushMeter
from agent.sunspec import SunSpecError, discover
from protocol.quantities import GLOSSARY, Role
from protocol.session import BrokerSettings, make_client

Progress = Callable[[int, int, int], None]  # (unit, index, total)
P1_CHECK_WAIT_S = 12.0  # wall seconds to listen for a P1 meter's telegram (DSMR 4: every 10 s)


def parse_units(text: str) -> list[int]:
    """``1-247`` or ``1,2,10-20`` -> unit ids; raises ValueError naming the bad part."""
    units: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"units {part!r} is not a number or a range like 1-247") from None
        if not 0 <= first <= last <= 247:
            raise ValueError(f"units {part!r} must be within 0-247, low to high")
        units.extend(range(first, last + 1))
    return sorted(set(units))


# --- scan -----------------------------------------------------------------------------------


@dataclass
class Found:
    """A unit that answered, and what it is."""

    unit: int
    kind: Literal["sunspec", "profile", "unknown"]
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    sunspec_models: list[int] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # matching profiles
    identified: bool = False  # True: matched by identifying registers; False: candidates

    def describe(self) -> str:
        if self.kind == "sunspec":
            models = ", ".join(map(str, self.sunspec_models))
            return (
                f"SunSpec {self.manufacturer} {self.model} (serial {self.serial}; models {models})"
            )
        if self.kind == "profile":
            how = "identified as" if self.identified else "fits"
            return f"{how} {', '.join(self.profiles)}"
        return "answers, but no shipped profile fits"


def _plausible(quantities: dict[str, float | str]) -> bool:
    """Values a real meter or inverter could show: reading the wrong map gives wild numbers."""
    ranges = {
        "frequency_hz": (40.0, 70.0),
        "voltage_v": (0.0, 500.0),
        "power_factor": (-1.0, 1.0),
        "power_w": (-1e6, 1e6),
        "temperature_c": (-50.0, 120.0),
    }
    numbers = [v for v in quantities.values() if isinstance(v, float | int)]
    if not numbers or not all(math.isfinite(v) for v in numbers):
        return False
    for name, (lo, hi) in ranges.items():
        value = quantities.get(name)
        if isinstance(value, float | int) and not lo <= value <= hi:
            return False
    return True


def _fits(bus: ModbusBus, unit: int, profile: Profile, timeout_s: float) -> bool | None:
    """True when the profile identifies this device, False when it does not fit, None when it
    has no identifying registers but every register it reads answers plausibly (a candidate)."""
    try:
        if profile.identify is not None:
            i = profile.identify
            words = bus.read(i.table, i.address, i.count, unit, timeout_s=timeout_s)
            return matches_identity(i, words)
        images = {
            b: bus.read(b.table, b.address, b.count, unit, timeout_s=timeout_s)
            for b in plan_reads(profile)
        }
    except DeviceError:
        return False
    return None if _plausible(decode_registers(profile, images)) else False


def probe(bus: ModbusBus, unit: int, profiles: list[Profile], timeout_s: float) -> Found | None:
    """What answers at ``unit``, or None when nothing does."""

    def holding(address: int, count: int) -> list[int]:
        return bus.read("holding", address, count, unit, timeout_s=timeout_s)

    try:
        found = discover(holding)
    except DeviceError as exc:
        if not exc.answered:  # a timeout or a gateway saying nobody is there
            try:
                bus.read("input", 0, 1, unit, timeout_s=timeout_s)
            except DeviceError as again:
                if not again.answered:
                    return None
    except SunSpecError:
        pass  # something answered, but not with a SunSpec model chain
    else:
        ident = found.identity
        return Found(
            unit,
            "sunspec",
            ident.manufacturer if ident else None,
            ident.model if ident else None,
            ident.serial if ident else None,
            [m.id for m in found.models],
            [SUNSPEC],
            True,
        )
    identified: list[str] = []
    candidates: list[str] = []
    for profile in profiles:
        fit = _fits(bus, unit, profile, timeout_s)
        if fit is True:
            identified.append(profile.name)
        elif fit is None:
            candidates.append(profile.name)
    if identified:
        return Found(unit, "profile", profiles=identified, identified=True)
    if candidates:
        return Found(unit, "profile", profiles=candidates)
    return Found(unit, "unknown")


def scan(
    url: str,
    units: Iterable[int],
    *,
    timeout_s: float = 0.5,
    profile_dirs: list[Path] | None = None,
    progress: Progress | None = None,
    found: Callable[[Found], None] | None = None,
) -> list[Found]:
    """Probe each unit id on the bus at ``url``; raises ValueError for a bad URL."""
    profiles = [
        p
        for p in (load_profile(n, profile_dirs) for n in list_profiles(profile_dirs))
        if p.kind == "modbus"
    ]
    bus = ModbusBus(url, timeout_s=timeout_s)
    unit_list = list(units)
    results: list[Found] = []
    try:
        for i, unit in enumerate(unit_list):
            if progress is not None:
                progress(unit, i, len(unit_list))
            hit = probe(bus, unit, profiles, timeout_s)
            if hit is not None:
                results.append(hit)
                if found is not None:
                    found(hit)
    finally:
        bus.close()
    return results


# --- read -----------------------------------------------------------------------------------


class RecordingBus(ModbusBus):
    """A bus that keeps every register it reads, to write them out as a fixture."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        super().__init__(url, timeout_s=timeout_s)
        self.reads: list[tuple[str, int, list[int]]] = []

    def read(
        self,
        table: Literal["holding", "input"],
        address: int,
        count: int,
        unit: int,
        *,
        timeout_s: float | None = None,
    ) -> list[int]:
        words = super().read(table, address, count, unit, timeout_s=timeout_s)
        self.reads.append((table, address, words))
        return words

    def image(self) -> list[dict[str, Any]]:
        """The registers read, merged into contiguous blocks per table."""
        cells: dict[tuple[str, int], int] = {}
        for table, address, words in self.reads:
            for i, w in enumerate(words):
                cells[(table, address + i)] = w
        blocks: list[dict[str, Any]] = []
        for (table, address), word in sorted(cells.items()):
            last = blocks[-1] if blocks else None
            if last and last["table"] == table and last["address"] + len(last["words"]) == address:
                last["words"].append(word)
            else:
                blocks.append({"table": table, "address": address, "words": [word]})
        return blocks


def read_device(
    url: str,
    unit: int,
    profile: str | None = None,
    *,
    role: Role | None = None,
    timeout_s: float = 1.5,
    profile_dirs: list[Path] | None = None,
    record: Path | None = None,
) -> dict[str, Any]:
    """Read a device once: ``{"device", "profile", "role", "quantities", ...}``.

    Raises ValueError (bad URL), :class:`ProfileError` or :class:`DeviceError`.
    """
    name = profile or SUNSPEC
    config = DeviceConfig(f"unit-{unit}", name, url, unit, 1.0, role=role)
    prof = None if name == SUNSPEC else load_profile(name, profile_dirs)
    if prof is not None and prof.kind != "modbus":
        raise ProfileError(f"{name} is not a Modbus profile")
    bus = RecordingBus(url, timeout_s=timeout_s)
    device = Device(config, bus, prof)
    try:
        quantities = device.read()
    finally:
        bus.close()
    result: dict[str, Any] = {
        "device": prof.model if prof else "SunSpec device",
        "profile": name,
        "bus": url,
        "unit": unit,
        "role": device.role.value,
        "quantities": quantities,
    }
    if device.sunspec is not None:
        if device.sunspec.identity is not None:
            ident = device.sunspec.identity
            result["device"] = f"{ident.manufacturer} {ident.model}".strip()
            result["identity"] = asdict(ident)
        result["sunspec_models"] = [m.id for m in device.sunspec.models]
    if record is not None:
        fixture: dict[str, Any] = {
            "profile": name,
            "description": f"recorded from {result['device']} at unit {unit}",
            "registers": bus.image(),
            "expected": quantities,
        }
        if role is not None:
            fixture["role"] = role.value
        record.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    return result


def number_text(value: float) -> str:
    """``231.8`` for a value a device sent as a 32-bit float (231.8000031 as a Python float):
    the shortest text that gives back the same float32, so an installer reads what the device
    holds, not the conversion's noise. Whole numbers (counters) are shown exactly, other values
    with up to 10 significant digits."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if math.isfinite(value) and abs(value) >= _FLOAT32_TINY and _float32(value) == value:
        for digits in range(1, 10):
            text = f"{value:.{digits}g}"
            if _float32(float(text)) == value:
                return f"{float(text):.10g}"  # 2410, not 2.41e+03
    return f"{value:.10g}"


_FLOAT32_TINY: Final = 2.0**-126  # below it float32 is subnormal, with fewer digits to go by


def _float32(value: float) -> float | None:
    """``value`` rounded to IEEE 754 single precision; None beyond its range."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return None


def format_quantities(quantities: dict[str, float | str]) -> list[str]:
    """``power_w       2410 W`` lines, in glossary order."""
    lines = []
    width = max([18, *(len(name) for name in quantities)])  # a P1 meter's per-tariff names
    for name in GLOSSARY:
        if name in quantities:
            value, unit = quantities[name], GLOSSARY[name].unit.strip("1")
            shown = value if isinstance(value, str) else number_text(value)
            lines.append(f"{name:<{width}} {shown} {unit}".rstrip())
    return lines


# --- check ----------------------------------------------------------------------------------


@dataclass
class CheckRow:
    what: str
    ok: bool | None  # None: could not tell, not a failure
    detail: str


def _short(name: str, value: float | str) -> str:
    unit = GLOSSARY[name].unit.strip("1") if name in GLOSSARY else ""  # power factor: no unit
    return (
        f"{name}={value}"
        if isinstance(value, str)
        else f"{name}={number_text(value)}{unit and ' ' + unit}"
    )


def _check_device(
    config: DeviceConfig, data_dir: Path, profile_dirs: list[Path] | None
) -> CheckRow:
    devices: list[Readable] = []
    try:
        devices = open_devices([config], profile_dirs, data_dir=data_dir)
        if isinstance(devices[0], PushMeter):  # a P1 meter sends every 1 to 10 s: listen first
            devices[0].wait(P1_CHECK_WAIT_S)
        quantities = devices[0].read()
        summary = ", ".join(_short(name, value) for name, value in quantities.items())
        return CheckRow(config.name, True, f"{devices[0].role.value}: {summary or 'no values'}")
    except (DeviceError, ProfileError) as exc:
        return CheckRow(config.name, False, str(exc))
    finally:
        close_devices(devices)


def check_broker(settings: BrokerSettings, timeout_s: float = 10.0) -> CheckRow:
    """Log in to the broker with the agent's credentials and a clean session (nothing is left
    behind). Its client id is the agent's with ``-check``, which keeps a running agent
    connected on a broker that takes client ids as given; the cooperative's broker makes the
    certificate's home the client id, so there the agent is bumped off for a moment,
    reconnects and resends what was not acked."""
    s = replace(settings, client_id=f"{settings.client_id}-check"[:64])
    client = make_client(s, clean=True)
    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    who = f" as {s.username}" if s.username else ""
    try:
        client.connect(s.host, s.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CheckRow("broker", False, f"cannot reach {s.url}: {reason}")
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return CheckRow("broker", False, f"{s.url} did not answer within {timeout_s:g} s")
        reason = outcome["reason"]
        if reason.is_failure:
            return CheckRow("broker", False, f"{s.url} refused the login{who}: {reason}")
        return CheckRow("broker", True, f"logged in to {s.url}{who}")
    finally:
        client.disconnect()
        client.loop_stop()


def check_data_dir(data_dir: Path) -> CheckRow:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        return CheckRow("data dir", False, f"{data_dir} is not writable: {exc.strerror or exc}")
    return CheckRow("data dir", True, f"{data_dir} is writable")


def check_clock(synced: bool | None = None) -> CheckRow:
    state = clock_synced() if synced is None else synced
    if state is None:
        return CheckRow("clock", None, "cannot tell whether the clock is synchronised here")
    if not state:
        return CheckRow(
            "clock", False, "not synchronised: readings would carry wrong times (timedatectl)"
        )
    return CheckRow("clock", True, "synchronised")


def check(
    config: AgentConfig,
    *,
    profile_dirs: list[Path] | None = None,
    broker_timeout_s: float = 10.0,
    clock_state: Callable[[], bool | None] | None = None,
) -> list[CheckRow]:
    """Every configured device read once, then the broker, the clock and the data directory."""
    rows = [_check_device(d, config.data_dir, profile_dirs) for d in config.devices]
    rows.append(check_broker(config.broker, broker_timeout_s))
    rows.append(check_clock((clock_state or clock_synced)()))
    rows.append(check_data_dir(config.data_dir))
    return rows
