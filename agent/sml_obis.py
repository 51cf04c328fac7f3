"""Which OBIS codes in an SML meter's list are which glossary quantities, read from a TOML file.

The table is data (``firmware-configs/devices/sml-obis/default.toml``) so that a meter sending a
code the default table lacks is fixed by an installer editing a file, not by a release. Each row
names the unit the value must arrive in: SML carries a unit code beside every value, and a value
in an unexpected unit is refused rather than turned into a wrong number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.profiles import default_profile_dirs
from protocol.config_tables import ConfigError, Table, load

#: SML (DLMS, IEC 62056-62) unit codes of the units the glossary uses.
UNIT_CODES: Final[dict[str, int]] = {"Wh": 30, "W": 27, "V": 35, "A": 33, "Hz": 44}
#: A quantity's name ends in its unit; the table is checked against this.
_SUFFIXES: Final[dict[str, str]] = {"Wh": "_wh", "W": "_w", "V": "_v", "A": "_a", "Hz": "_hz"}
METER_ID: Final = "meter_id"
_OBIS_RE: Final = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def default_table_path() -> Path:
    """``sml-obis/default.toml`` in the first profile folder that has one (as profiles are found:
    $COOPWATT_PROFILES, the checkout's, the system's); the checkout's path if none has."""
    dirs = default_profile_dirs()
    for d in dirs:
        if (d / "sml-obis" / "default.toml").is_file():
            return d / "sml-obis" / "default.toml"
    return dirs[-2] / "sml-obis" / "default.toml"


@dataclass(frozen=True, slots=True)
class ObisValue:
    """One row: the quantity an OBIS code is, and the SML unit code it must come in (None: id)."""

    quantity: str
    unit_code: int | None


def obis_key(code: str) -> bytes:
    """``"1-0:1.8.0"`` as the six bytes an SML list entry names it by (F = 255, the current value).

    Raises ValueError when ``code`` is not ``A-B:C.D.E`` with each part 0 to 255.
    """
    m = _OBIS_RE.fullmatch(code)
    if not m or any(int(part) > 255 for part in m.groups()):
        raise ValueError(f"{code!r} is not an OBIS code like '1-0:1.8.0'")
    return bytes([*(int(part) for part in m.groups()), 255])


def parse_table(data: dict[str, Any], _base_dir: Path | None = None) -> dict[bytes, ObisValue]:
    """The table's rows by the six OBIS bytes; every mistake is a ConfigError naming the key."""
    top = Table(data)
    rows = top.tables("values")
    top.done()
    if not rows:
        raise ConfigError("values is missing: add at least one [[values]] table")
    table: dict[bytes, ObisValue] = {}
    for row in rows:
        code = row.required_text("obis")
        try:
            key = obis_key(code)
        except ValueError as exc:
            raise ConfigError(f"{row.prefix}obis: {exc}") from None
        if key in table:
            raise ConfigError(f"{row.prefix}obis {code!r} is listed twice")
        quantity = row.required_text("quantity")
        if not _NAME_RE.fullmatch(quantity):
            raise ConfigError(f"{row.prefix}quantity must be a glossary name like 'power_w'")
        unit = row.choice("unit", None, tuple(UNIT_CODES))
        if quantity == METER_ID:
            if unit is not None:
                raise ConfigError(f"{row.prefix}unit must not be set for meter_id (it is text)")
        elif unit is None:
            raise ConfigError(f"{row.prefix}unit is missing (one of {', '.join(UNIT_CODES)})")
        elif not quantity.endswith(_SUFFIXES[unit]):
            raise ConfigError(f"{row.prefix}quantity {quantity!r} is not in {unit}")
        row.done()
        table[key] = ObisValue(quantity, None if unit is None else UNIT_CODES[unit])
    return table


def load_table(path: Path | None = None) -> dict[bytes, ObisValue]:
    """Read an OBIS table file (the default one without ``path``)."""
    return load(path or default_table_path(), parse_table)
