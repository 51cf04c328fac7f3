"""Device profiles: register maps as data (``firmware-configs/devices/*.toml``) and their decoding.

Adding a meter or inverter model is a profile file, not code. A profile is validated when loaded,
so a typo fails at start-up with the file and the point named, not as a wrong number at 3 a.m.
Decoding is a pure function of the registers read, like pymodbus's ``convert_from_registers``.

Two kinds of profile:

- ``kind = "modbus"`` (the default): ``[[points]]``, each a glossary quantity at a register
  address (or several addresses summed or averaged, for per-phase values), with its type, scale,
  word order and the raw values the device uses for "not implemented".
- ``kind = "s0"``: an S0 pulse output counted on a GPIO pin; ``impulses_per_kwh`` and
  ``debounce_ms`` say how to turn edges into energy (see :mod:`agent.pulse`).
- ``kind = "p1"``: a smart meter's P1 port (DSMR), which pushes telegrams; ``[obis]`` maps each
  OBIS code to the glossary quantities it feeds, ``baud``, ``framing`` and ``crc`` say how the
  variant sends (see :mod:`agent.dsmr_decode`, :mod:`agent.push_meter`).

Every shipped profile cites where its register map comes from in a ``# Source:`` comment.
"""

from __future__ import annotations

import math
import os
import struct
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from agent.dsmr_decode import ObisMap, ObisMapError
from protocol.quantities import GLOSSARY, STATES, Role, allowed_for
from protocol.topics import is_id

Table = Literal["holding", "input"]
WordOrder = Literal["big", "little"]
Combine = Literal["sum", "mean"]
Kind = Literal["modbus", "s0", "p1"]
MAX_READ: Final = 125  # Modbus limit for one read of holding/input registers

# Register count and struct format (big-endian within a word, words in big order) per type.
_TYPES: Final[dict[str, tuple[int, str]]] = {
    "uint16": (1, ">H"),
    "int16": (1, ">h"),
    "uint32": (2, ">I"),
    "int32": (2, ">i"),
    "float32": (2, ">f"),
    "uint64": (4, ">Q"),
    "int64": (4, ">q"),
    "float64": (4, ">d"),
}

# Roles whose positive power flows into the household (consumption side) and out of it
# (generation side); see :func:`retarget`.
_CONSUMING: Final = frozenset({Role.GRID, Role.LOAD})


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the point."""


@dataclass(frozen=True, slots=True)
class Point:
    """One quantity from one register address, or from several combined.

    ``value = raw * scale``; with ``addresses`` the raws of each address (same type) are summed
    or averaged (``combine``), skipping those the device marks as not implemented.
    """

    quantity: str
    table: Table
    address: int
    type: str
    scale: float = 1.0
    word_order: WordOrder = "big"
    states: dict[int, str] | None = None  # raw value -> state word, for quantity "state"
    not_implemented: tuple[int, ...] = ()  # raw values the device uses for "no value"
    addresses: tuple[int, ...] = ()  # several registers combined; address is the first
    combine: Combine = "sum"

    @property
    def count(self) -> int:
        return _TYPES[self.type][0]

    @property
    def spans(self) -> tuple[int, ...]:
        return self.addresses or (self.address,)


@dataclass(frozen=True, slots=True)
class Identify:
    """Registers that tell this model apart when scanning a bus (``coopwatt-agent scan``)."""

    table: Table
    address: int
    count: int
    text_prefix: str | None = None  # ASCII registers starting with this text
    values: tuple[int, ...] = ()  # or the first register holding one of these values


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    model: str
    role: Role
    points: tuple[Point, ...]
    max_registers_per_read: int = MAX_READ
    max_gap: int = 8  # read across at most this many unused registers to save a request
    kind: Kind = "modbus"
    timeout_s: float | None = None  # how long this model may take to answer; None: bus default
    identify: Identify | None = None
    impulses_per_kwh: float = 0.0  # s0 only
    debounce_ms: float = 0.0  # s0 only
    source: str = "<profile>"
    obis: ObisMap | None = None  # p1 only: OBIS code -> quantities
    baud: int = 0  # p1 only: the port's default speed, bit/s
    framing: str = ""  # p1 only: "8N1" or "7E1" (data bits, parity, stop bits)
    crc: bool = True  # p1 only: every telegram must carry a CRC (DSMR 4 and later)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One Modbus request: ``count`` registers of ``table`` from ``address``."""

    table: Table
    address: int
    count: int


def default_profile_dirs() -> list[Path]:
    """Where profiles are looked up: $COOPWATT_PROFILES, the checkout's, the system's."""
    dirs = []
    if env := os.environ.get("COOPWATT_PROFILES"):
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parent.parent / "firmware-configs" / "devices")
    dirs.append(Path("/usr/share/coopwatt/devices"))
    return dirs


def find_profile(name: str, dirs: list[Path] | None = None) -> Path:
    if not is_id(name):
        raise ProfileError(f"profile name {name!r} is not a valid name")
    for d in dirs or default_profile_dirs():
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise ProfileError(
        f"no device profile {name!r} in {', '.join(map(str, dirs or default_profile_dirs()))}"
    )


def list_profiles(dirs: list[Path] | None = None) -> list[str]:
    """Names of every profile found, the first directory winning on duplicates."""
    names: set[str] = set()
    for d in dirs or default_profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml") if is_id(p.stem))
    return sorted(names)


def load_profile(name: str, dirs: list[Path] | None = None) -> Profile:
    path = find_profile(name, dirs)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return parse_profile(name, data, source=str(path))


def _expect(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: {message}")


def _is_number(x: object) -> bool:
    return type(x) in (int, float) and math.isfinite(typing.cast(float, x))


def _check_address(address: Any, type_: str, where: str) -> int:
    _expect(
        type(address) is int and 0 <= address <= 0xFFFF - _TYPES[type_][0] + 1,
        where,
        f"address {address!r} is not a register address 0-65535",
    )
    return int(address)


def _parse_point(raw: Any, role: Role, default_order: WordOrder, where: str) -> Point:
    _expect(isinstance(raw, dict), where, "a point must be a table")
    known = {
        "quantity",
        "table",
        "address",
        "addresses",
        "combine",
        "type",
        "scale",
        "word_order",
        "states",
        "not_implemented",
    }
    extra = set(raw) - known
    _expect(not extra, where, f"unknown key {sorted(extra)[0] if extra else ''!r}")
    quantity = raw.get("quantity")
    _expect(
        isinstance(quantity, str) and quantity in GLOSSARY, where, f"unknown quantity {quantity!r}"
    )
    _expect(
        allowed_for(role, quantity), where, f"{quantity} is not a quantity of a {role.value} device"
    )
    table = raw.get("table")
    _expect(table in ("holding", "input"), where, f"table must be holding or input, not {table!r}")
    type_ = raw.get("type")
    _expect(type_ in _TYPES, where, f"type must be one of {', '.join(_TYPES)}, not {type_!r}")
    addresses: tuple[int, ...] = ()
    if "addresses" in raw:
        _expect("address" not in raw, where, "give address or addresses, not both")
        many = raw["addresses"]
        _expect(
            isinstance(many, list) and 2 <= len(many) <= 16,
            where,
            "addresses is a list of 2 to 16 register addresses",
        )
        addresses = tuple(_check_address(a, type_, where) for a in many)
        address = min(addresses)
    else:
        address = _check_address(raw.get("address"), type_, where)
    combine = raw.get("combine", "sum")
    _expect(combine in ("sum", "mean"), where, "combine must be sum or mean")
    _expect(
        "combine" not in raw or bool(addresses), where, "combine goes with addresses, not address"
    )
    scale = raw.get("scale", 1.0)
    _expect(_is_number(scale) and scale != 0, where, "scale must be a non-zero number")
    order = raw.get("word_order", default_order)
    _expect(order in ("big", "little"), where, "word_order must be big or little")
    states: dict[int, str] | None = None
    if "states" in raw:
        _expect(
            quantity == "state" and isinstance(raw["states"], dict) and not addresses,
            where,
            "states is a table, and only for a state point at one address",
        )
        try:
            states = {int(str(k), 0): str(v) for k, v in raw["states"].items()}
        except ValueError:
            raise ProfileError(f"{where}: states keys must be whole numbers (or 0x hex)") from None
        bad = sorted(set(states.values()) - STATES)
        _expect(not bad, where, f"state {bad[0] if bad else ''!r} is not one of the glossary's")
    else:
        _expect(quantity != "state", where, "a state point needs a states table")
    sentinels = raw.get("not_implemented", [])
    _expect(
        isinstance(sentinels, list) and all(type(s) is int for s in sentinels),
        where,
        "not_implemented is a list of raw integers",
    )
    return Point(
        quantity,
        table,
        address,
        type_,
        float(scale),
        order,
        states,
        tuple(sentinels),
        addresses,
        combine,
    )


def _parse_identify(raw: Any, where: str) -> Identify:
    _expect(isinstance(raw, dict), where, "identify must be a table")
    extra = set(raw) - {"table", "address", "count", "text_prefix", "values"}
    _expect(not extra, where, f"unknown key {sorted(extra)[0] if extra else ''!r}")
    table = raw.get("table")
    _expect(table in ("holding", "input"), where, "table must be holding or input")
    count = raw.get("count", 1)
    _expect(type(count) is int and 1 <= count <= MAX_READ, where, "count must be 1-125")
    address = raw.get("address")
    _expect(
        type(address) is int and 0 <= address <= 0x10000 - count,
        where,
        f"address {address!r} is not a register address 0-65535",
    )
    prefix = raw.get("text_prefix")
    values = raw.get("values", [])
    _expect(prefix is None or (isinstance(prefix, str) and prefix.isascii()), where, "bad prefix")
    _expect(
        isinstance(values, list) and all(type(v) is int for v in values),
        where,
        "values is a list of whole numbers",
    )
    _expect((prefix is None) != (not values), where, "give text_prefix or values")
    return Identify(table, address, count, prefix, tuple(values))


def parse_profile(name: str, data: dict[str, Any], source: str = "<profile>") -> Profile:
    """Validate a profile's parsed TOML; raises :class:`ProfileError` naming what is wrong."""
    known = {
        "model",
        "role",
        "kind",
        "word_order",
        "points",
        "max_registers_per_read",
        "max_gap",
        "timeout_s",
        "identify",
        "impulses_per_kwh",
        "debounce_ms",
        "obis",
        "baud",
        "framing",
        "crc",
    }
    extra = set(data) - known
    _expect(not extra, source, f"unknown key {sorted(extra)[0] if extra else ''!r}")
    model: Any = data.get("model")
    _expect(isinstance(model, str) and bool(model), source, "model must be a non-empty string")
    try:
        role = Role(typing.cast(str, data.get("role")))
    except ValueError:
        raise ProfileError(
            f"{source}: role must be one of {', '.join(r.value for r in Role)}"
        ) from None
    kind = data.get("kind", "modbus")
    _expect(kind in ("modbus", "s0", "p1"), source, "kind must be modbus, s0 or p1")
    if kind == "s0":
        return _parse_s0(name, model, role, data, source)
    if kind == "p1":
        return _parse_p1(name, model, role, data, source)
    for key in ("impulses_per_kwh", "debounce_ms"):
        _expect(key not in data, source, f'{key} is only for kind = "s0"')
    for key in ("obis", "baud", "framing", "crc"):
        _expect(key not in data, source, f'{key} is only for kind = "p1"')
    order = data.get("word_order", "big")
    _expect(order in ("big", "little"), source, "word_order must be big or little")
    max_read = data.get("max_registers_per_read", MAX_READ)
    _expect(
        type(max_read) is int and 1 <= max_read <= MAX_READ,
        source,
        f"max_registers_per_read must be 1-{MAX_READ}",
    )
    max_gap = data.get("max_gap", 8)
    _expect(type(max_gap) is int and 0 <= max_gap <= MAX_READ, source, "max_gap must be 0-125")
    timeout = data.get("timeout_s")
    _expect(
        timeout is None or (_is_number(timeout) and 0.05 <= timeout <= 30),
        source,
        "timeout_s must be 0.05-30 seconds",
    )
    raw_points: Any = data.get("points")
    _expect(isinstance(raw_points, list) and bool(raw_points), source, "a profile needs [[points]]")
    points = tuple(
        _parse_point(p, role, order, f"{source} point {i + 1}") for i, p in enumerate(raw_points)
    )
    names = [p.quantity for p in points]
    dup = {n for n in names if names.count(n) > 1}
    _expect(not dup, source, f"quantity {sorted(dup)[0] if dup else ''!r} appears twice")
    widest = max(p.count for p in points)
    _expect(
        widest <= max_read,
        source,
        f"max_registers_per_read {max_read} is below a {widest}-register point",
    )
    identify = None
    if "identify" in data:
        identify = _parse_identify(data["identify"], f"{source} identify")
    return Profile(
        name,
        model,
        role,
        points,
        max_read,
        max_gap,
        "modbus",
        None if timeout is None else float(timeout),
        identify,
        source=source,
    )


def _parse_s0(name: str, model: str, role: Role, data: dict[str, Any], source: str) -> Profile:
    for key in ("points", "word_order", "max_registers_per_read", "max_gap", "identify"):
        _expect(key not in data, source, f"{key} is only for Modbus profiles")
    imp: Any = data.get("impulses_per_kwh")
    _expect(
        _is_number(imp) and 1 <= imp <= 100_000,
        source,
        "impulses_per_kwh must be a number from 1 to 100000",
    )
    debounce: Any = data.get("debounce_ms", 20)
    _expect(_is_number(debounce) and 0 <= debounce <= 1000, source, "debounce_ms must be 0-1000")
    _expect("timeout_s" not in data, source, "timeout_s is only for Modbus profiles")
    return Profile(
        name,
        model,
        role,
        (),
        kind="s0",
        impulses_per_kwh=float(imp),
        debounce_ms=float(debounce),
        source=source,
    )


FRAMINGS: Final = ("8N1", "7E1")
BAUDS: Final = (9600, 19200, 38400, 57600, 115200)


def _parse_p1(name: str, model: str, role: Role, data: dict[str, Any], source: str) -> Profile:
    allowed = {"model", "role", "kind", "obis", "baud", "framing", "crc"}
    extra = set(data) - allowed
    _expect(not extra, source, f"{sorted(extra)[0] if extra else ''} is not for P1 profiles")
    raw: Any = data.get("obis")
    _expect(isinstance(raw, dict), source, "a P1 profile needs an [obis] table")
    try:
        obis = ObisMap.parse(raw, f"{source} obis")
    except ObisMapError as exc:
        raise ProfileError(str(exc)) from None
    for quantity in obis.needs():
        _expect(
            allowed_for(role, quantity), source, f"quantity {quantity!r} is not for role {role}"
        )
    baud = data.get("baud", 115200)
    _expect(baud in BAUDS and type(baud) is int, source, f"baud must be one of {BAUDS}")
    framing = data.get("framing", "8N1")
    _expect(framing in FRAMINGS, source, "framing must be 8N1 or 7E1")
    crc = data.get("crc", True)
    _expect(isinstance(crc, bool), source, "crc must be true or false")
    return Profile(
        name, model, role, (), kind="p1", source=source, obis=obis, baud=baud, framing=framing,
        crc=crc,
    )  # fmt: skip


def plan_reads(profile: Profile) -> list[ReadBlock]:
    """Coalesce a profile's registers into as few requests as its device allows."""
    spans = sorted({(p.table, a, p.count) for p in profile.points for a in p.spans})
    blocks: list[ReadBlock] = []
    for table, address, count in spans:
        end = address + count
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.table == table
            and address - (last.address + last.count) <= profile.max_gap
            and end - last.address <= profile.max_registers_per_read
        ):
            blocks[-1] = ReadBlock(
                last.table, last.address, max(last.address + last.count, end) - last.address
            )
        else:
            blocks.append(ReadBlock(table, address, count))
    return blocks


def raw_value(words: list[int], type_: str, word_order: WordOrder) -> int | float:
    """Combine register words into a raw number; ``word_order`` little means low word first."""
    ordered = words if word_order == "big" else words[::-1]
    data = b"".join(w.to_bytes(2, "big") for w in ordered)
    value: int | float = struct.unpack(_TYPES[type_][1], data)[0]
    return value


def _usable(p: Point, raw: int | float) -> bool:
    if isinstance(raw, float):
        return math.isfinite(raw)
    return raw not in p.not_implemented


def decode_point(p: Point, words: list[int]) -> float | str | None:
    """The quantity's value from its registers, or None when the device says it has none."""
    raw = raw_value(words, p.type, p.word_order)
    if not _usable(p, raw):
        return None
    if p.states is not None:
        return p.states.get(int(raw), "unknown")
    return scaled(raw, p.scale)


def scaled(raw: float, scale: float) -> float:
    """``raw * scale``, dividing by 10 for 0.1 so 2312 scales to 231.2, not 231.20000000000002."""
    if scale == 1.0:
        return float(raw)
    divisor = round(1.0 / scale)
    if abs(divisor) > 1 and divisor * scale == 1.0:
        return raw / divisor
    return raw * scale


def _words_at(
    images: dict[ReadBlock, list[int]], table: Table, address: int, count: int
) -> list[int] | None:
    for block, words in images.items():
        offset = address - block.address
        if block.table == table and offset >= 0 and offset + count <= block.count:
            return words[offset : offset + count]
    return None


def decode_registers(
    profile: Profile, images: dict[ReadBlock, list[int]]
) -> dict[str, float | str]:
    """Quantities from the registers of each planned block; absent where not implemented."""
    out: dict[str, float | str] = {}
    for p in profile.points:
        if not p.addresses:
            words = _words_at(images, p.table, p.address, p.count)
            value = None if words is None else decode_point(p, words)
            if value is not None:
                out[p.quantity] = value
            continue
        raws = []
        for a in p.addresses:
            words = _words_at(images, p.table, a, p.count)
            if words is not None:
                raw = raw_value(words, p.type, p.word_order)
                if _usable(p, raw):
                    raws.append(raw)
        if raws:
            total = float(sum(raws))
            out[p.quantity] = scaled(total / len(raws) if p.combine == "mean" else total, p.scale)
    return out


def matches_identity(identify: Identify, words: list[int]) -> bool:
    """Do the registers read at ``identify`` say this is the profile's model?"""
    if identify.text_prefix is not None:
        text = b"".join(w.to_bytes(2, "big") for w in words).split(b"\x00", 1)[0]
        return text.decode("ascii", errors="replace").strip().startswith(identify.text_prefix)
    return bool(words) and words[0] in identify.values


def retarget(
    quantities: dict[str, float | str], source: Role, target: Role
) -> dict[str, float | str]:
    """A device's quantities as seen in another role, for a meter installed as a sub-meter.

    A meter profile speaks as a ``grid`` meter: ``power_w`` positive on import, with import and
    export counters. As a ``load`` sub-meter its import is the load's consumption. On a
    generator or battery (``pv``, ``wind``, ``battery``) the device sits on the meter's export
    side, as installers wire a meter on an inverter's output: export is generation and the sign
    of power flips. The reverse holds for a generator's profile used as ``grid`` or ``load``.
    Quantities the target role cannot carry are dropped.
    """
    if source == target:
        return dict(quantities)
    flip = (source in _CONSUMING) != (target in _CONSUMING)
    out: dict[str, float | str] = {}
    for name, value in quantities.items():
        if name == "power_w" and flip and isinstance(value, float | int):
            out[name] = -value
        elif name in ("energy_import_wh", "energy_export_wh"):
            keep = "energy_import_wh" if target in _CONSUMING else "energy_export_wh"
            if name == keep:
                out["energy_wh"] = value
        elif name == "energy_wh" and target == Role.GRID:
            out["energy_export_wh" if flip else "energy_import_wh"] = value
        elif allowed_for(target, name):
            out[name] = value
    return out
