"""SunSpec discovery and the inverter models, over any register reader.

Source: SunSpec Information Model Specification (models 1, 101-103). A SunSpec device starts with
the "SunS" marker at 40000, 50000 or 0; each model is ``ID, L`` followed by L registers, and the
chain ends with ID 0xFFFF. Walking by each model's own L is what copes with common model 1 being
65 registers on some firmware and 66 on others. Values are int16/uint16/acc32 with a power-of-ten
scale factor read in the same request; 0x8000, 0xFFFF and acc32 0 mean "not implemented".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SUNS: Final = (0x5375, 0x6E53)  # "SunS"
BASES: Final = (40000, 50000, 0)
END_ID: Final = 0xFFFF
INVERTER_MODELS: Final = (101, 102, 103)

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


@dataclass(frozen=True, slots=True)
class SunSpecMap:
    base: int
    models: tuple[ModelRef, ...]
    identity: Identity | None

    def find(self, *ids: int) -> ModelRef | None:
        return next((m for m in self.models if m.id in ids), None)


def _string(words: list[int]) -> str:
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def parse_common(block: list[int]) -> Identity:
    """Common model 1's body (after ID and L): Mn, Md at offsets 0 and 16, SN at 48."""
    if len(block) < 64:
        raise SunSpecError(f"common model is {len(block)} registers, too short")
    return Identity(_string(block[0:16]), _string(block[16:32]), _string(block[48:64]))


def discover(read: ReadHolding, max_models: int = 64) -> SunSpecMap:
    """Find the SunSpec base and walk the model chain; raises :class:`SunSpecError`."""
    for base in BASES:
        try:
            marker = read(base, 2)
        except OSError:
            continue
        if tuple(marker) == SUNS:
            break
    else:
        raise SunSpecError("no SunSpec marker at 40000, 50000 or 0")
    models: list[ModelRef] = []
    identity: Identity | None = None
    address = base + 2
    for _ in range(max_models):
        model_id, length = read(address, 2)
        if model_id == END_ID:
            return SunSpecMap(base, tuple(models), identity)
        ref = ModelRef(model_id, address, length)
        models.append(ref)
        if model_id == 1:
            identity = parse_common(read(address + 2, min(length, 125)))
        address += 2 + length
        if address > 0xFFFF:
            break
    raise SunSpecError("model chain does not end with 0xFFFF")


def _s16(w: int) -> int:
    return w - 0x10000 if w & 0x8000 else w


def _scaled(value: int, sf_word: int, *, signed: bool) -> float | None:
    if (signed and value == 0x8000) or (not signed and value == 0xFFFF) or sf_word == 0x8000:
        return None
    raw = _s16(value) if signed else value
    sf = _s16(sf_word)
    if not -10 <= sf <= 10:
        return None
    return raw * 10.0**sf


def decode_inverter(body: list[int]) -> dict[str, float | str]:
    """Glossary quantities from an inverter model 101/102/103 body (50 registers after ID, L)."""
    if len(body) < 50:
        raise SunSpecError(f"inverter model is {len(body)} registers, expected 50")
    out: dict[str, float | str] = {}

    def put(name: str, value: float | None) -> None:
        if value is not None:
            out[name] = value

    put("current_a", _scaled(body[0], body[4], signed=False))
    put("voltage_v", _scaled(body[8], body[11], signed=False))
    put("power_w", _scaled(body[12], body[13], signed=True))
    put("frequency_hz", _scaled(body[14], body[15], signed=False))
    pf_pct = _scaled(body[20], body[21], signed=True)
    # Model 103's PF is in percent (unit "Pct" in the SunSpec model file); the glossary wants -1..1.
    put("power_factor", None if pf_pct is None else pf_pct / 100)
    wh = (body[22] << 16) | body[23]
    if wh != 0 and body[24] != 0x8000:
        out["energy_wh"] = wh * 10.0 ** _s16(body[24])
    put("temperature_c", _scaled(body[31], body[35], signed=True))  # TmpCab, Tmp_SF
    st = body[36]
    if st != 0xFFFF:
        out["state"] = STATES.get(st, "unknown")
    return out
