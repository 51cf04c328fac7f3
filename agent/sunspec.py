"""SunSpec discovery and the inverter and meter models, over any holding-register reader.

Source: SunSpec Information Model Specification and the SunSpec model definitions (SMDX/JSON)
for models 1, 101-103 (integer inverter), 111-113 (float inverter) and 201-204 (integer meter).
A SunSpec device starts with the "SunS" marker at 40000, 50000 or 0; each model is ``ID, L``
followed by L registers, and the chain ends with ID 0xFFFF. Walking by each model's own L is what
copes with common model 1 being 65 registers on some firmware and 66 on others.

Integer models carry a power-of-ten scale factor (``*_SF``) beside their values. A model's values
and scale factors are always read in one request, so a scale factor that changes at dawn can
never be applied to a value read under the old one. "Not implemented" is 0x8000 (int16, sunssf),
0xFFFF (uint16, enum16), 0x80000000 (int32), 0xFFFFFFFF (uint32, bitfield32), NaN (float32) and
0 for an acc32 counter; such points are absent from the result, never a number.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol.quantities import Role

SUNS: Final = (0x5375, 0x6E53)  # "SunS"
BASES: Final = (40000, 50000, 0)
END_ID: Final = 0xFFFF
INVERTER_MODELS: Final = (101, 102, 103)
FLOAT_INVERTER_MODELS: Final = (111, 112, 113)
METER_MODELS: Final = (201, 202, 203, 204)
MAX_READ: Final = 125

# SunSpec inverter state enumeration (St) -> glossary state words.
STATES: Final = {
    1: "off",
    2: "sleeping",
    3: "starting",
    4: "mppt",
    5: "throttled",
    6: "shutting-down",
    7: "fault",
    8: "standby",
}

ReadHolding = Callable[[int, int], list[int]]  # (address, count) -> registers


class SunSpecError(ValueError):
    """The device is not SunSpec, or its model chain is malformed."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    id: int
    address: int  # of the model's ID register
    length: int  # registers after ID and L


@dataclass(frozen=True, slots=True)
class Identity:
    manufacturer: str
    model: str
    serial: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class SunSpecMap:
    base: int
    models: tuple[ModelRef, ...]
    identity: Identity | None

    def find(self, *ids: int) -> ModelRef | None:
        return next((m for m in self.models if m.id in ids), None)

    def measuring(self, role: Role | None = None) -> ModelRef | None:
        """The model to poll: an inverter model, or a meter model for a ``grid``/``load`` role
        or a device that has no inverter model (a SunSpec meter)."""
        inverter = self.find(*INVERTER_MODELS, *FLOAT_INVERTER_MODELS)
        meter = self.find(*METER_MODELS)
        if role in (Role.GRID, Role.LOAD) and meter is not None:
            return meter
        return inverter or meter


def _string(words: list[int]) -> str:
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def parse_common(block: list[int]) -> Identity:
    """Common model 1's body (after ID and L): Mn, Md, Opt, Vr, SN at 0, 16, 32, 40, 48."""
    if len(block) < 64:
        raise SunSpecError(f"common model is {len(block)} registers, too short")
    return Identity(
        _string(block[0:16]), _string(block[16:32]), _string(block[48:64]), _string(block[40:48])
    )


def _not_here(exc: OSError) -> bool:
    """A read refused with a Modbus exception says "no SunSpec base here"; a timeout does not."""
    return not getattr(exc, "transient", False)


def discover(read: ReadHolding, max_models: int = 64) -> SunSpecMap:
    """Find the SunSpec base and walk the model chain; raises :class:`SunSpecError`.

    A timeout (an OSError with ``transient`` set) propagates: the device may be SunSpec but not
    answering right now, which is not the same as "not SunSpec".
    """
    for base in BASES:
        try:
            marker = read(base, 2)
        except OSError as exc:
            if _not_here(exc):
                continue
            raise
        if tuple(marker) == SUNS:
            break
    else:
        raise SunSpecError("no SunSpec marker at 40000, 50000 or 0")
    models: list[ModelRef] = []
    identity: Identity | None = None
    address = base + 2
    for _ in range(max_models):
        header = read(address, 2)
        if len(header) < 2:
            raise SunSpecError(f"short read at {address}")
        model_id, length = header
        if model_id == END_ID:
            return SunSpecMap(base, tuple(models), identity)
        ref = ModelRef(model_id, address, length)
        models.append(ref)
        if model_id == 1 and identity is None:
            identity = parse_common(read(address + 2, min(length, MAX_READ)))
        address += 2 + length
        if address > 0xFFFF:
            break
    raise SunSpecError("model chain does not end with 0xFFFF")


def read_model(read: ReadHolding, ref: ModelRef) -> list[int]:
    """A model's body (after ID and L), read with its header in as few requests as possible.

    The header is read too, and checked: a device that restarted with a different model chain
    answers with another ID here, and the caller must discover again.
    """
    total = ref.length + 2
    words: list[int] = []
    while len(words) < total:
        chunk = min(MAX_READ, total - len(words))
        words += read(ref.address + len(words), chunk)
    if words[0] != ref.id or words[1] != ref.length:
        raise SunSpecError(
            f"model {ref.id} at {ref.address} now reads as {words[0]} (length {words[1]})"
        )
    return words[2:]


# --- value helpers --------------------------------------------------------------------------


def _s16(w: int) -> int:
    return w - 0x10000 if w & 0x8000 else w


def _sf(word: int) -> int | None:
    if word == 0x8000:
        return None
    sf = _s16(word)
    return sf if -10 <= sf <= 10 else None


def _times_ten_to(value: int, sf: int) -> float:
    # Dividing by 10**-sf keeps 2312 x 10**-1 at 231.2 rather than 231.20000000000002.
    return value / 10**-sf if sf < 0 else float(value * 10**sf)


def _int16(body: list[int], at: int, sf_at: int) -> float | None:
    v, sf = body[at], _sf(body[sf_at])
    return None if v == 0x8000 or sf is None else _times_ten_to(_s16(v), sf)


def _uint16(body: list[int], at: int, sf_at: int) -> float | None:
    v, sf = body[at], _sf(body[sf_at])
    return None if v == 0xFFFF or sf is None else _times_ten_to(v, sf)


def _acc32(body: list[int], at: int, sf_at: int) -> float | None:
    v, sf = (body[at] << 16) | body[at + 1], _sf(body[sf_at])
    return None if v == 0 or sf is None else _times_ten_to(v, sf)


def _float32(body: list[int], at: int) -> float | None:
    value: float = struct.unpack(">f", struct.pack(">HH", body[at], body[at + 1]))[0]
    return value if math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _pf(pct: float | None) -> float | None:
    # PF is in percent (units "Pct" in the SunSpec models); the glossary wants -1..1.
    if pct is None:
        return None
    pf = pct / 100
    return pf if -1.0 <= pf <= 1.0 else None


def _state(word: int) -> str | None:
    return None if word == 0xFFFF else STATES.get(word, "unknown")


def _put(out: dict[str, float | str], name: str, value: float | str | None) -> None:
    if value is not None:
        out[name] = value


# --- models ---------------------------------------------------------------------------------


def decode_inverter(body: list[int]) -> dict[str, float | str]:
    """Glossary quantities from an inverter model 101/102/103 body (50 registers after ID, L)."""
    if len(body) < 50:
        raise SunSpecError(f"inverter model is {len(body)} registers, expected 50")
    out: dict[str, float | str] = {}
    _put(out, "current_a", _uint16(body, 0, 4))
    _put(out, "voltage_v", _mean([_uint16(body, i, 11) for i in (8, 9, 10)]))  # PhVphA-C
    _put(out, "power_w", _int16(body, 12, 13))
    _put(out, "frequency_hz", _uint16(body, 14, 15))
    _put(out, "power_factor", _pf(_int16(body, 20, 21)))
    _put(out, "energy_wh", _acc32(body, 22, 24))
    _put(out, "temperature_c", _int16(body, 31, 35))  # TmpCab, Tmp_SF
    _put(out, "state", _state(body[36]))
    return out


def decode_float_inverter(body: list[int]) -> dict[str, float | str]:
    """Glossary quantities from an inverter model 111/112/113 body (60 registers, float32)."""
    if len(body) < 60:
        raise SunSpecError(f"float inverter model is {len(body)} registers, expected 60")
    out: dict[str, float | str] = {}
    _put(out, "current_a", _float32(body, 0))
    _put(out, "voltage_v", _mean([_float32(body, i) for i in (14, 16, 18)]))
    _put(out, "power_w", _float32(body, 20))
    _put(out, "frequency_hz", _float32(body, 22))
    _put(out, "power_factor", _pf(_float32(body, 28)))
    wh = _float32(body, 30)
    _put(out, "energy_wh", wh or None)  # 0 Wh: an unset counter, as acc32 0
    _put(out, "temperature_c", _float32(body, 38))
    _put(out, "state", _state(body[46]))
    return out


def decode_meter(body: list[int]) -> dict[str, float | str]:
    """Glossary quantities (as a grid meter) from a meter model 201-204 body (105 registers).

    SunSpec meters count real power positive when imported from the grid, as the glossary's
    grid role does.
    """
    if len(body) < 53:
        raise SunSpecError(f"meter model is {len(body)} registers, expected 105")
    out: dict[str, float | str] = {}
    _put(out, "current_a", _int16(body, 0, 4))
    voltage = _int16(body, 5, 13)  # PhV, the average of active phases
    if voltage is None:
        voltage = _mean([_int16(body, i, 13) for i in (6, 7, 8)])
    _put(out, "voltage_v", voltage)
    _put(out, "frequency_hz", _int16(body, 14, 15))
    _put(out, "power_w", _int16(body, 16, 20))
    _put(out, "power_factor", _pf(_int16(body, 31, 35)))
    _put(out, "energy_export_wh", _acc32(body, 36, 52))  # TotWhExp
    _put(out, "energy_import_wh", _acc32(body, 44, 52))  # TotWhImp
    return out


def decode_model(model_id: int, body: list[int]) -> tuple[Role, dict[str, float | str]]:
    """The role a model speaks as, and its quantities."""
    if model_id in INVERTER_MODELS:
        return Role.PV, decode_inverter(body)
    if model_id in FLOAT_INVERTER_MODELS:
        return Role.PV, decode_float_inverter(body)
    if model_id in METER_MODELS:
        return Role.GRID, decode_meter(body)
    raise SunSpecError(f"model {model_id} is not one coopwatt reads")
