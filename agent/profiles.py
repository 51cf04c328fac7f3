"""Device profiles: register maps as data (``firmware-configs/devices/*.toml``) and their decoding.

Adding a meter or inverter model is a profile file, not code. A profile is validated when loaded,
so a typo fails at start-up with the file and the point named, not as a wrong number at 3 a.m.
Decoding is a pure function of the registers read, like pymodbus's ``convert_from_registers``.
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

from protocol.quantities import GLOSSARY, Role, allowed_for
from protocol.topics import is_id

Table = Literal["holding", "input"]
WordOrder = Literal["big", "little"]
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


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the point."""


@dataclass(frozen=True, slots=True)
class Point:
    """One quantity at one register address. ``value = raw * scale``."""

    quantity: str
    table: Table
    address: int
    type: str
    scale: float = 1.0
    word_order: WordOrder = "big"
    states: dict[int, str] | None = None  # raw value -> state word, for quantity "state"
    not_implemented: tuple[int, ...] = ()  # raw values the device uses for "no value"

    @property
    def count(self) -> int:
        return _TYPES[self.type][0]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    model: str
    role: Role
    points: tuple[Point, ...]
    max_registers_per_read: int = MAX_READ
    max_gap: int = 8  # read across at most this many unused registers to save a request


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


def _parse_point(raw: Any, role: Role, default_order: WordOrder, where: str) -> Point:
    _expect(isinstance(raw, dict), where, "a point must be a table")
    known = {
        "quantity",
        "table",
        "address",
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
    address = raw.get("address")
    _expect(
        type(address) is int and 0 <= address <= 0xFFFF - _TYPES[type_][0] + 1,
        where,
        f"address {address!r} is not a register address 0-65535",
    )
    scale = raw.get("scale", 1.0)
    _expect(
        type(scale) in (int, float) and math.isfinite(scale) and scale != 0,
        where,
        "scale must be a non-zero number",
    )
    order = raw.get("word_order", default_order)
    _expect(order in ("big", "little"), where, "word_order must be big or little")
    states: dict[int, str] | None = None
    if "states" in raw:
        _expect(
            quantity == "state" and isinstance(raw["states"], dict),
            where,
            "states is a table, and only for the state quantity",
        )
        try:
            states = {int(k): str(v) for k, v in raw["states"].items()}
        except ValueError:
            raise ProfileError(f"{where}: states keys must be whole numbers") from None
    else:
        _expect(quantity != "state", where, "a state point needs a states table")
    sentinels = raw.get("not_implemented", [])
    _expect(
        isinstance(sentinels, list) and all(type(s) is int for s in sentinels),
        where,
        "not_implemented is a list of raw integers",
    )
    return Point(quantity, table, address, type_, float(scale), order, states, tuple(sentinels))


def parse_profile(name: str, data: dict[str, Any], source: str = "<profile>") -> Profile:
    """Validate a profile's parsed TOML; raises :class:`ProfileError` naming what is wrong."""
    known = {"model", "role", "word_order", "points", "max_registers_per_read", "max_gap"}
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
    raw_points: Any = data.get("points")
    _expect(isinstance(raw_points, list) and bool(raw_points), source, "a profile needs [[points]]")
    points = tuple(
        _parse_point(p, role, order, f"{source} point {i + 1}") for i, p in enumerate(raw_points)
    )
    names = [p.quantity for p in points]
    dup = {n for n in names if names.count(n) > 1}
    _expect(not dup, source, f"quantity {sorted(dup)[0] if dup else ''!r} appears twice")
    return Profile(name, model, role, points, max_read, max_gap)


def plan_reads(profile: Profile) -> list[ReadBlock]:
    """Coalesce a profile's points into as few requests as its device allows."""
    blocks: list[ReadBlock] = []
    for p in sorted(profile.points, key=lambda p: (p.table, p.address)):
        end = p.address + p.count
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.table == p.table
            and p.address - (last.address + last.count) <= profile.max_gap
            and end - last.address <= profile.max_registers_per_read
        ):
            blocks[-1] = ReadBlock(
                last.table, last.address, max(last.address + last.count, end) - last.address
            )
        else:
            blocks.append(ReadBlock(p.table, p.address, p.count))
    return blocks


def raw_value(words: list[int], type_: str, word_order: WordOrder) -> int | float:
    """Combine register words into a raw number; ``word_order`` little means low word first."""
    ordered = words if word_order == "big" else words[::-1]
    data = b"".join(w.to_bytes(2, "big") for w in ordered)
    value: int | float = struct.unpack(_TYPES[type_][1], data)[0]
    return value


def decode_point(p: Point, words: list[int]) -> float | str | None:
    """The quantity's value from its registers, or None when the device says it has none."""
    raw = raw_value(words, p.type, p.word_order)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
    elif raw in p.not_implemented:
        return None
    if p.states is not None:
        return p.states.get(int(raw), "unknown")
    return raw * p.scale


def decode(profile: Profile, images: dict[ReadBlock, list[int]]) -> dict[str, float | str]:
    """Quantities from the registers of each planned block; absent where not implemented."""
    out: dict[str, float | str] = {}
    for p in profile.points:
        for block, words in images.items():
            offset = p.address - block.address
            if block.table == p.table and offset >= 0 and offset + p.count <= block.count:
                value = decode_point(p, words[offset : offset + p.count])
                if value is not None:
                    out[p.quantity] = value
                break
    return out
