"""SunSpec discovery and inverter decoding over an in-memory register map."""

from __future__ import annotations

import pytest

from agent.sunspec import SunSpecError, decode_inverter, discover

NOT_IMPL_I16 = 0x8000
NOT_IMPL_U16 = 0xFFFF


def _text(s: str, regs: int) -> list[int]:
    raw = s.encode().ljust(regs * 2, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, regs * 2, 2)]


def _common(length: int) -> list[int]:
    body = _text("Fronius", 16) + _text("Symo 5.0-3-M", 16) + _text("", 8) + _text("1.2", 8)
    body += [*_text("SN-12345", 16), 1]
    body += [0x8000] * (length - len(body))
    return [1, length, *body]


def _inverter(power_w: int = 2410, wh: int = 5_120_300, st: int = 4) -> list[int]:
    body = [NOT_IMPL_U16] * 50
    body[0], body[4] = 1050, (-2) & 0xFFFF  # 10.50 A
    body[8], body[11] = 2314, (-1) & 0xFFFF  # 231.4 V
    body[12], body[13] = power_w & 0xFFFF, 0
    body[14], body[15] = 5001, (-2) & 0xFFFF  # 50.01 Hz
    body[20], body[21] = NOT_IMPL_I16, (-2) & 0xFFFF  # PF not implemented
    body[22], body[23], body[24] = wh >> 16, wh & 0xFFFF, 0
    body[31], body[35] = 415, (-1) & 0xFFFF  # TmpCab 41.5 °C, Tmp_SF
    body[36] = st
    return [103, 50, *body]


def _reader(base: int, models: list[list[int]]) -> tuple[dict[int, int], object]:
    regs: dict[int, int] = {}
    words = [0x5375, 0x6E53] + [w for m in models for w in m] + [0xFFFF, 0]
    for i, w in enumerate(words):
        regs[base + i] = w

    def read(address: int, count: int) -> list[int]:
        if address not in regs:
            raise OSError("illegal data address")
        return [regs.get(address + i, 0) for i in range(count)]

    return regs, read


@pytest.mark.parametrize("common_length", [65, 66])
@pytest.mark.parametrize("base", [40000, 50000, 0])
def test_discovery_walks_by_each_models_own_length(base: int, common_length: int) -> None:
    _, read = _reader(base, [_common(common_length), _inverter()])
    found = discover(read)  # type: ignore[arg-type]
    assert found.base == base
    assert [m.id for m in found.models] == [1, 103]
    assert found.identity is not None
    assert (found.identity.manufacturer, found.identity.model, found.identity.serial) == (
        "Fronius",
        "Symo 5.0-3-M",
        "SN-12345",
    )
    inverter = found.find(101, 102, 103)
    assert inverter is not None
    assert inverter.address == base + 2 + 2 + common_length


def test_inverter_values_scale_and_absent_points() -> None:
    q = decode_inverter(_inverter()[2:])
    assert q["power_w"] == 2410
    assert q["current_a"] == pytest.approx(10.5)
    assert q["voltage_v"] == pytest.approx(231.4)
    assert q["frequency_hz"] == pytest.approx(50.01)
    assert q["energy_wh"] == 5_120_300
    assert q["temperature_c"] == pytest.approx(41.5)
    assert q["state"] == "mppt"
    assert "power_factor" not in q  # 0x8000: not implemented, so absent, never -327.68


def test_sleeping_inverter_with_unset_counter() -> None:
    q = decode_inverter(_inverter(power_w=0, wh=0, st=2)[2:])
    assert q["state"] == "sleeping"
    assert "energy_wh" not in q  # acc32 0 means not implemented


def test_no_marker_and_unterminated_chain_are_errors() -> None:
    def nothing(address: int, count: int) -> list[int]:
        return [0] * count

    with pytest.raises(SunSpecError, match="no SunSpec marker"):
        discover(nothing)

    def endless(address: int, count: int) -> list[int]:
        return [0x5375, 0x6E53] if address == 40000 else [7, 0][:count]

    with pytest.raises(SunSpecError, match="does not end"):
        discover(endless, max_models=5)


def test_power_factor_is_percent_in_model_103() -> None:
    body = _inverter()[2:]
    body[20], body[21] = 9850, (-2) & 0xFFFF  # 98.50 %
    assert decode_inverter(body)["power_factor"] == pytest.approx(0.985)
