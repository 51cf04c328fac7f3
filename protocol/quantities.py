"""The quantity glossary: every value a reading may carry, with its unit and sign convention.

Names carry their unit (``power_w``, ``energy_import_wh``). A value a device marks as not
implemented is absent from a reading, never a sentinel number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """What a device is in the household, which fixes the sign of ``power_w``."""

    GRID = "grid"  # the household's connection meter: + import, - export
    PV = "pv"  # + generation
    WIND = "wind"  # + generation
    BATTERY = "battery"  # + discharge, - charge
    LOAD = "load"  # a sub-meter: + consumption


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    unit: str
    kind: type  # float or str
    description: str
    counter: bool = False  # monotonic energy counter, Wh
    roles: frozenset[Role] | None = None  # None: any role


_PHASES = (1, 2, 3)
_ALL_BUT_GRID = frozenset({Role.PV, Role.WIND, Role.BATTERY, Role.LOAD})

GLOSSARY: Final[dict[str, Quantity]] = {
    q.name: q
    for q in (
        Quantity("power_w", "W", float, "active power, signed by role"),
        Quantity(
            "energy_import_wh",
            "Wh",
            float,
            "energy imported from the grid, lifetime counter",
            counter=True,
            roles=frozenset({Role.GRID}),
        ),
        Quantity(
            "energy_export_wh",
            "Wh",
            float,
            "energy exported to the grid, lifetime counter",
            counter=True,
            roles=frozenset({Role.GRID}),
        ),
        Quantity(
            "energy_wh",
            "Wh",
            float,
            "lifetime energy counter: generated (pv, wind), discharged (battery), consumed (load)",
            counter=True,
            roles=_ALL_BUT_GRID,
        ),
        Quantity("voltage_v", "V", float, "RMS voltage (phase to neutral; mean of phases)"),
        Quantity("current_a", "A", float, "RMS current (sum of phases)"),
        Quantity("frequency_hz", "Hz", float, "grid frequency"),
        Quantity("power_factor", "1", float, "power factor, -1 to 1"),
        Quantity("temperature_c", "°C", float, "device temperature"),
        Quantity("wind_speed_m_s", "m/s", float, "wind speed at the turbine's anemometer"),
        Quantity("state", "", str, "operating state, e.g. mppt, sleeping, fault"),
        # Added for smart meters' P1 and SML ports (hub migration 12 adds their columns, at the
        # end of the readings table, so they come last here too).
        # Per-tariff counters, numbered as the meter numbers its tariffs (DSMR: tariff 1 is the
        # low/night tariff in the Netherlands, the day tariff in Belgium); their sum is
        # energy_import_wh / energy_export_wh, which every reader of energy uses.
        *(
            Quantity(
                f"energy_{way}_t{t}_wh",
                "Wh",
                float,
                f"energy {way}ed {'from' if way == 'import' else 'to'} the grid at tariff {t}, "
                "lifetime counter",
                counter=True,
                roles=frozenset({Role.GRID}),
            )
            for way in ("import", "export")
            for t in (1, 2)
        ),
        *(
            Quantity(f"voltage_l{n}_v", "V", float, f"RMS voltage, phase L{n} to neutral")
            for n in _PHASES
        ),
        *(Quantity(f"current_l{n}_a", "A", float, f"RMS current of phase L{n}") for n in _PHASES),
        *(
            Quantity(f"power_l{n}_w", "W", float, f"active power of phase L{n}, signed by role")
            for n in _PHASES
        ),
    )
}

COUNTERS: Final[frozenset[str]] = frozenset(n for n, q in GLOSSARY.items() if q.counter)

# States are short lowercase words so displays and the hub can match on them.
STATES: Final[frozenset[str]] = frozenset(
    {
        "off",
        "sleeping",
        "starting",
        "mppt",
        "throttled",
        "shutting-down",
        "fault",
        "standby",
        "running",
        "braking",
        "unknown",
    }
)


def allowed_for(role: Role, name: str) -> bool:
    """True when quantity ``name`` may appear on a device of ``role``."""
    q = GLOSSARY.get(name)
    return q is not None and (q.roles is None or role in q.roles)
