"""Register images of the simulated devices: pure encoders from a values dict to Modbus words.

Each encoder takes what :meth:`sim.household.SimHome.values` returns (glossary names and units)
and produces a :class:`RegisterImage`: the function code that reads it, its first address (the
0-based address on the wire, as in a Modbus PDU) and its 16-bit words. Values are rounded to each
register's resolution. Three device models:

**Eastron SDM630** (``eastron-sdm630``), per the "Eastron SDM630 Modbus protocol" document:
function 04 (input registers), every value an IEEE 754 float32 in two registers, high word first.
The image covers 0x0000-0x004B; registers the sim does not fill are 0. The household's values are
split across the three phases (currents and powers 50/30/20 %, voltages 230 V-ish with small
offsets whose mean is the value given); the totals are exact:

=======  ==========================================  ====
address  parameter                                   unit
=======  ==========================================  ====
0x0000   phase 1/2/3 line-to-neutral voltage         V      (0x0000, 0x0002, 0x0004)
0x0006   phase 1/2/3 current                         A      (0x0006, 0x0008, 0x000A)
0x000C   phase 1/2/3 active power (signed)           W      (0x000C, 0x000E, 0x0010)
0x0012   phase 1/2/3 apparent power                  VA     (0x0012, 0x0014, 0x0016)
0x0018   phase 1/2/3 reactive power                  var    (0x0018, 0x001A, 0x001C)
0x001E   phase 1/2/3 power factor                    1      (0x001E, 0x0020, 0x0022)
0x0024   phase 1/2/3 phase angle                     deg    (0x0024, 0x0026, 0x0028)
0x002A   average line-to-neutral voltage             V
0x002E   average line current                        A
0x0030   sum of line currents                        A
0x0034   total system power (+ import, − export)     W
0x0038   total system apparent power                 VA
0x003C   total system reactive power                 var
0x003E   total system power factor                   1
0x0042   total system phase angle                    deg
0x0046   frequency                                   Hz
0x0048   import active energy                        kWh
0x004A   export active energy                        kWh
=======  ==========================================  ====

**SunSpec inverter** (``sunspec``), per the SunSpec Information Model (models 1 and 103):
function 03 (holding registers), base address 40000: "SunS" (0x5375, 0x6E53); common model 1
(ID 1, L 66: Mn, Md, Opt, Vr, SN strings, DA, Pad; or L 65 without Pad, as some devices ship);
three-phase inverter model 103 (ID 103, L 50); end model (0xFFFF, 0). Scale factors are int16:
A_SF −2, V_SF −1, W_SF 0, Hz_SF −2, VA_SF 0, PF_SF −2, WH_SF 0, Tmp_SF −1. PF is in percent, as
the model defines it (units "Pct"): a power factor of 0.98 is PF 9800 with PF_SF −2. Points the
sim does not implement hold the SunSpec "not implemented" values: int16 and sunssf 0x8000,
uint16 and enum16 0xFFFF, bitfield32 0xFFFFFFFF (VAr, VAr_SF, all DC points, TmpSnk, TmpTrns,
TmpOt, StVnd, EvtVnd1-4). Evt1 and Evt2 are 0 (no events). St: 1 off, 2 sleeping, 3 starting,
4 MPPT, 5 throttled, 6 shutting down, 7 fault, 8 standby.

**coopwatt's generic small-turbine controller** (``coopwatt-wind-generic``), a map this project
defines for small wind-turbine controllers that speak Modbus: function 03, addresses 0-8:

=======  ===========================================================  ======
address  point                                                        unit
=======  ===========================================================  ======
0        state: 0 off, 1 running, 2 braking, 3 fault                  enum
1        wind speed, uint16 × 0.1                                     m/s
2        rotor speed, uint16                                          rpm
3        output power, uint16                                         W
4-5      lifetime energy, uint32, LOW word first (a deliberate quirk)  Wh
6        AC voltage, uint16 × 0.1                                     V
7        AC current, uint16 × 0.01                                    A
8        controller temperature, int16 × 0.1                          °C
=======  ===========================================================  ======
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from sim.profiles import rotor_rpm

Values = Mapping[str, float | str]

PROFILE_SDM630: Final = "eastron-sdm630"
PROFILE_SUNSPEC: Final = "sunspec"
PROFILE_WIND: Final = "coopwatt-wind-generic"

FC_HOLDING: Final = 3
FC_INPUT: Final = 4


@dataclass(frozen=True, slots=True)
class RegisterImage:
    """A contiguous run of 16-bit register words a device answers ``function_code`` with."""

    function_code: int
    start: int
    words: tuple[int, ...]

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.start + len(self.words)

    def read(self, address: int, count: int) -> list[int]:
        """Words at ``address`` .. ``address + count - 1``; IndexError outside the image."""
        if count < 1 or address < self.start or address + count > self.end:
            raise IndexError(f"registers {address}+{count} outside {self.start}..{self.end - 1}")
        return list(self.words[address - self.start : address - self.start + count])


# --- word helpers -----------------------------------------------------------------------------


def float32_words(x: float) -> tuple[int, int]:
    """IEEE 754 single precision as two registers, high word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return hi, lo


def uint16_word(x: float) -> int:
    """Round to an unsigned 16-bit register, saturating at 0 and 0xFFFE (0xFFFF is reserved)."""
    return min(max(round(x), 0), 0xFFFE)


def int16_word(x: float) -> int:
    """Round to a two's-complement 16-bit register, saturating at ±32767 (0x8000 is reserved)."""
    return min(max(round(x), -32767), 32767) & 0xFFFF


def uint32_words(x: float, *, low_word_first: bool = False) -> tuple[int, int]:
    """Round to an unsigned 32-bit value (modulo 2**32, as accumulators wrap) in two registers."""
    v = round(x) % (1 << 32)
    hi, lo = v >> 16, v & 0xFFFF
    return (lo, hi) if low_word_first else (hi, lo)


def string_words(s: str, n_registers: int) -> list[int]:
    """ASCII text, two characters a register (first in the high byte), NUL-padded, truncated."""
    raw = s.encode("ascii", errors="replace")[: 2 * n_registers].ljust(2 * n_registers, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def _num(values: Values, name: str) -> float:
    v = values[name]
    if isinstance(v, str):
        raise TypeError(f"{name} must be a number, got {v!r}")
    return float(v)


def apparent_power_va(power_w: float, power_factor: float) -> float:
    """Apparent power (VA) from active power (W) and power factor: |P| / |pf|."""
    return abs(power_w) / abs(power_factor) if power_factor else 0.0


def reactive_power_var(power_w: float, power_factor: float) -> float:
    """Reactive power magnitude (var) from active power (W) and power factor: √(S² − P²)."""
    s = apparent_power_va(power_w, power_factor)
    return math.sqrt(max(s * s - power_w * power_w, 0.0))


# --- Eastron SDM630 ---------------------------------------------------------------------------

SDM630_PHASE_VOLTAGE: Final = (0x0000, 0x0002, 0x0004)
SDM630_PHASE_CURRENT: Final = (0x0006, 0x0008, 0x000A)
SDM630_PHASE_POWER: Final = (0x000C, 0x000E, 0x0010)
SDM630_PHASE_VA: Final = (0x0012, 0x0014, 0x0016)
SDM630_PHASE_VAR: Final = (0x0018, 0x001A, 0x001C)
SDM630_PHASE_PF: Final = (0x001E, 0x0020, 0x0022)
SDM630_PHASE_ANGLE: Final = (0x0024, 0x0026, 0x0028)
SDM630_AVG_VOLTAGE: Final = 0x002A
SDM630_AVG_CURRENT: Final = 0x002E
SDM630_SUM_CURRENT: Final = 0x0030
SDM630_TOTAL_POWER: Final = 0x0034
SDM630_TOTAL_VA: Final = 0x0038
SDM630_TOTAL_VAR: Final = 0x003C
SDM630_TOTAL_PF: Final = 0x003E
SDM630_TOTAL_ANGLE: Final = 0x0042
SDM630_FREQUENCY: Final = 0x0046
SDM630_IMPORT_KWH: Final = 0x0048
SDM630_EXPORT_KWH: Final = 0x004A
SDM630_LENGTH: Final = 0x004C  # registers 0x0000..0x004B

_PHASE_SHARE: Final = (0.5, 0.3, 0.2)
_PHASE_VOLT_OFFSET: Final = (0.4, -0.3, -0.1)  # sums to 0: the mean is the household's voltage


def sdm630_image(values: Values) -> RegisterImage:
    """Input-register image (function 04) of an Eastron SDM630 showing a grid meter's values."""
    regs = [0] * SDM630_LENGTH

    def put(address: int, x: float) -> None:
        regs[address], regs[address + 1] = float32_words(x)

    power_w = _num(values, "power_w")
    voltage_v = _num(values, "voltage_v")
    current_a = _num(values, "current_a")
    pf = _num(values, "power_factor")
    angle_deg = math.degrees(math.acos(min(abs(pf), 1.0)))
    for i in range(3):
        p_i = power_w * _PHASE_SHARE[i]
        put(SDM630_PHASE_VOLTAGE[i], voltage_v + _PHASE_VOLT_OFFSET[i])
        put(SDM630_PHASE_CURRENT[i], current_a * _PHASE_SHARE[i])
        put(SDM630_PHASE_POWER[i], p_i)
        put(SDM630_PHASE_VA[i], apparent_power_va(p_i, pf))
        put(SDM630_PHASE_VAR[i], reactive_power_var(p_i, pf))
        put(SDM630_PHASE_PF[i], pf)
        put(SDM630_PHASE_ANGLE[i], angle_deg)
    put(SDM630_AVG_VOLTAGE, voltage_v)
    put(SDM630_AVG_CURRENT, current_a / 3.0)
    put(SDM630_SUM_CURRENT, current_a)
    put(SDM630_TOTAL_POWER, power_w)
    put(SDM630_TOTAL_VA, apparent_power_va(power_w, pf))
    put(SDM630_TOTAL_VAR, reactive_power_var(power_w, pf))
    put(SDM630_TOTAL_PF, pf)
    put(SDM630_TOTAL_ANGLE, angle_deg)
    put(SDM630_FREQUENCY, _num(values, "frequency_hz"))
    put(SDM630_IMPORT_KWH, _num(values, "energy_import_wh") / 1000.0)
    put(SDM630_EXPORT_KWH, _num(values, "energy_export_wh") / 1000.0)
    return RegisterImage(FC_INPUT, 0, tuple(regs))


# --- SunSpec inverter -------------------------------------------------------------------------

SUNSPEC_BASE: Final = 40000
SUNSPEC_MARKER: Final = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_COMMON_ID: Final = 1
SUNSPEC_INVERTER_ID: Final = 103
SUNSPEC_INVERTER_LENGTH: Final = 50
SUNSPEC_END_ID: Final = 0xFFFF

NOT_IMPLEMENTED_INT16: Final = 0x8000
NOT_IMPLEMENTED_UINT16: Final = 0xFFFF
NOT_IMPLEMENTED_SUNSSF: Final = 0x8000

A_SF: Final = -2
V_SF: Final = -1
W_SF: Final = 0
HZ_SF: Final = -2
VA_SF: Final = 0
PF_SF: Final = -2
WH_SF: Final = 0
TMP_SF: Final = -1

SUNSPEC_STATES: Final[dict[str, int]] = {
    "off": 1,
    "sleeping": 2,
    "starting": 3,
    "mppt": 4,
    "throttled": 5,
    "shutting-down": 6,
    "fault": 7,
    "standby": 8,
}

# Offsets of model 103's points from the model's first register (its ID).
M103_OFFSETS: Final[dict[str, int]] = {
    name: i + 2
    for i, name in enumerate(
        [
            "A", "AphA", "AphB", "AphC", "A_SF",
            "PPVphAB", "PPVphBC", "PPVphCA", "PhVphA", "PhVphB", "PhVphC", "V_SF",
            "W", "W_SF", "Hz", "Hz_SF", "VA", "VA_SF", "VAr", "VAr_SF", "PF", "PF_SF",
            "WH", "WH.lo", "WH_SF", "DCA", "DCA_SF", "DCV", "DCV_SF", "DCW", "DCW_SF",
            "TmpCab", "TmpSnk", "TmpTrns", "TmpOt", "Tmp_SF", "St", "StVnd",
            "Evt1", "Evt1.lo", "Evt2", "Evt2.lo", "EvtVnd1", "EvtVnd1.lo", "EvtVnd2",
            "EvtVnd2.lo", "EvtVnd3", "EvtVnd3.lo", "EvtVnd4", "EvtVnd4.lo",
        ]
    )
}  # fmt: skip


def _scaled(x: float, sf: int) -> float:
    return x / 10.0**sf


def sunspec_common_model(
    *,
    manufacturer: str,
    model: str,
    options: str,
    version: str,
    serial: str,
    device_address: int,
    length: int = 66,
) -> list[int]:
    """Common model 1: ID, L, Mn (16 regs), Md (16), Opt (8), Vr (8), SN (16), DA, and Pad
    when ``length`` is 66 (65 leaves Pad out, as some inverters do)."""
    if length not in (65, 66):
        raise ValueError(f"common model length must be 65 or 66, got {length}")
    words = [SUNSPEC_COMMON_ID, length]
    words += string_words(manufacturer, 16)
    words += string_words(model, 16)
    words += string_words(options, 8)
    words += string_words(version, 8)
    words += string_words(serial, 16)
    words.append(device_address & 0xFFFF)
    if length == 66:
        words.append(NOT_IMPLEMENTED_INT16)  # Pad
    return words


def sunspec_inverter_model(values: Values) -> list[int]:
    """Three-phase inverter model 103 (52 words: ID, L and 50 points) from a PV values dict."""
    w = [0] * (2 + SUNSPEC_INVERTER_LENGTH)
    w[0], w[1] = SUNSPEC_INVERTER_ID, SUNSPEC_INVERTER_LENGTH

    def put(name: str, word: int) -> None:
        w[M103_OFFSETS[name]] = word

    power_w = _num(values, "power_w")
    current_a = _num(values, "current_a")
    voltage_v = _num(values, "voltage_v")
    pf = _num(values, "power_factor")
    put("A", uint16_word(_scaled(current_a, A_SF)))
    for phase in ("AphA", "AphB", "AphC"):
        put(phase, uint16_word(_scaled(current_a / 3.0, A_SF)))
    put("A_SF", A_SF & 0xFFFF)
    for ll in ("PPVphAB", "PPVphBC", "PPVphCA"):
        put(ll, uint16_word(_scaled(voltage_v * math.sqrt(3.0), V_SF)))
    for ln in ("PhVphA", "PhVphB", "PhVphC"):
        put(ln, uint16_word(_scaled(voltage_v, V_SF)))
    put("V_SF", V_SF & 0xFFFF)
    put("W", int16_word(_scaled(power_w, W_SF)))
    put("W_SF", W_SF & 0xFFFF)
    put("Hz", uint16_word(_scaled(_num(values, "frequency_hz"), HZ_SF)))
    put("Hz_SF", HZ_SF & 0xFFFF)
    put("VA", int16_word(_scaled(apparent_power_va(power_w, pf), VA_SF)))
    put("VA_SF", VA_SF & 0xFFFF)
    put("VAr", NOT_IMPLEMENTED_INT16)
    put("VAr_SF", NOT_IMPLEMENTED_SUNSSF)
    put("PF", int16_word(_scaled(pf * 100.0, PF_SF)))  # percent, per the model
    put("PF_SF", PF_SF & 0xFFFF)
    w[M103_OFFSETS["WH"]], w[M103_OFFSETS["WH.lo"]] = uint32_words(
        _scaled(_num(values, "energy_wh"), WH_SF)
    )
    put("WH_SF", WH_SF & 0xFFFF)
    for name in ("DCA", "DCV"):
        put(name, NOT_IMPLEMENTED_UINT16)
    put("DCW", NOT_IMPLEMENTED_INT16)
    for name in ("DCA_SF", "DCV_SF", "DCW_SF"):
        put(name, NOT_IMPLEMENTED_SUNSSF)
    put("TmpCab", int16_word(_scaled(_num(values, "temperature_c"), TMP_SF)))
    for name in ("TmpSnk", "TmpTrns", "TmpOt"):
        put(name, NOT_IMPLEMENTED_INT16)
    put("Tmp_SF", TMP_SF & 0xFFFF)
    put("St", SUNSPEC_STATES[str(values["state"])])
    put("StVnd", NOT_IMPLEMENTED_UINT16)
    # Evt1, Evt2: implemented, no events (0); vendor event bitfields not implemented.
    for name in ("EvtVnd1", "EvtVnd2", "EvtVnd3", "EvtVnd4"):
        put(name, 0xFFFF)
        put(name + ".lo", 0xFFFF)
    return w


def sunspec_inverter_image(
    values: Values,
    *,
    common_length: int = 66,
    manufacturer: str = "coopwatt-sim",
    model: str = "sim-inverter-3p",
    options: str = "",
    version: str = "1.0",
    serial: str = "0000",
    device_address: int = 1,
) -> RegisterImage:
    """Holding-register image (function 03) of a SunSpec inverter from 40000: marker, common
    model 1 (length 66, or 65 without Pad), inverter model 103, end model."""
    words = list(SUNSPEC_MARKER)
    words += sunspec_common_model(
        manufacturer=manufacturer,
        model=model,
        options=options,
        version=version,
        serial=serial,
        device_address=device_address,
        length=common_length,
    )
    words += sunspec_inverter_model(values)
    words += [SUNSPEC_END_ID, 0]
    return RegisterImage(FC_HOLDING, SUNSPEC_BASE, tuple(words))


# --- coopwatt generic small-turbine controller ------------------------------------------------

WIND_STATES: Final[dict[str, int]] = {"off": 0, "running": 1, "braking": 2, "fault": 3}
WIND_LENGTH: Final = 9


def wind_turbine_image(values: Values) -> RegisterImage:
    """Holding-register image (function 03, 0-8) of coopwatt's generic small-turbine map."""
    state = str(values["state"])
    speed = _num(values, "wind_speed_m_s")
    energy_lo, energy_hi = uint32_words(_num(values, "energy_wh"), low_word_first=True)
    words = (
        WIND_STATES[state],
        uint16_word(speed * 10.0),
        rotor_rpm(speed, state == "running"),
        uint16_word(_num(values, "power_w")),
        energy_lo,
        energy_hi,
        uint16_word(_num(values, "voltage_v") * 10.0),
        uint16_word(_num(values, "current_a") * 100.0),
        int16_word(_num(values, "temperature_c") * 10.0),
    )
    return RegisterImage(FC_HOLDING, 0, words)


ENCODERS: Final[dict[str, Callable[[Values], RegisterImage]]] = {
    PROFILE_SDM630: sdm630_image,
    PROFILE_SUNSPEC: sunspec_inverter_image,
    PROFILE_WIND: wind_turbine_image,
}
"""Device profile name → encoder with default identity."""
