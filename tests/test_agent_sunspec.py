"""SunSpec discovery and the inverter and meter models over in-memory register maps."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.modbus_io import DeviceError
from agent.sunspec import (
    ModelRef,
    SunSpecError,
    SunSpecMap,
    decode_float_inverter,
    decode_inverter,
    decode_meter,
    decode_model,
    discover,
    read_model,
)
from protocol.quantities import Role

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


# --- float inverters, meters, sentinels, the chain ------------------------------------------------


def _f32(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


NAN = [0x7FC0, 0]


def test_float_inverter_nan_points_are_absent() -> None:
    body = [0] * 60
    for at in range(0, 46, 2):
        body[at : at + 2] = NAN
    body[0:2] = _f32(7.25)
    body[14:16] = _f32(229.5)
    body[20:22] = _f32(1666.5)
    body[22:24] = _f32(49.95)
    body[30:32] = _f32(0.0)  # an unset counter, like acc32 0
    body[46], body[47] = 5, 0xFFFF
    q = decode_float_inverter(body)
    assert q == {
        "current_a": 7.25,
        "voltage_v": 229.5,
        "power_w": 1666.5,
        "frequency_hz": pytest.approx(49.95),
        "state": "throttled",
    }


def test_meter_model_int16_with_scale_factors_and_sentinels() -> None:
    body = [0x8000] * 105
    body[0], body[4] = 153, (-1) & 0xFFFF  # 15.3 A
    body[5] = 0x8000  # PhV not implemented: the mean of the phases instead
    body[6], body[7], body[8], body[13] = 2300, 2320, 0x8000, (-1) & 0xFFFF
    body[14], body[15] = 5000, (-2) & 0xFFFF
    body[16], body[20] = (-1850) & 0xFFFF, 0
    body[36:38] = [0, 0]  # TotWhExp acc32 0: not implemented
    body[44:46] = [0x0001, 0x0002]
    body[52] = 1  # TotWh_SF: tens of Wh
    q = decode_meter(body)
    assert q == {
        "current_a": pytest.approx(15.3),
        "voltage_v": pytest.approx(231.0),
        "frequency_hz": 50.0,
        "power_w": -1850.0,
        "energy_import_wh": float(0x00010002 * 10),
    }


@pytest.mark.parametrize(
    ("sentinel_at", "word", "absent"),
    [
        (12, 0x8000, "power_w"),  # int16
        (13, 0x8000, "power_w"),  # its sunssf
        (0, 0xFFFF, "current_a"),  # uint16
        (36, 0xFFFF, "state"),  # enum16
        (15, (11) & 0xFFFF, "frequency_hz"),  # a scale factor outside -10..10 is garbage
    ],
)
def test_inverter_sentinels_never_become_numbers(sentinel_at: int, word: int, absent: str) -> None:
    body = _inverter()[2:]
    body[sentinel_at] = word
    assert absent not in decode_inverter(body)


def test_scale_factor_read_with_its_value_changes_at_dawn() -> None:
    night = _inverter(power_w=353)[2:]
    night[13] = (-1) & 0xFFFF
    assert decode_inverter(night)["power_w"] == pytest.approx(35.3)
    day = _inverter(power_w=2410)[2:]
    assert decode_inverter(day)["power_w"] == 2410


def test_discovery_propagates_a_timeout_instead_of_saying_not_sunspec() -> None:
    def silent(address: int, count: int) -> list[int]:
        raise DeviceError("timed out", transient=True)

    with pytest.raises(DeviceError, match="timed out"):
        discover(silent)

    def refuses(address: int, count: int) -> list[int]:
        raise DeviceError("illegal data address", transient=False, code=2)

    with pytest.raises(SunSpecError, match="no SunSpec marker"):
        discover(refuses)


def test_read_model_checks_the_header_and_reads_long_models_in_pieces() -> None:
    words = [203, 105, *range(105)]
    calls: list[tuple[int, int]] = []

    def read(address: int, count: int) -> list[int]:
        calls.append((address, count))
        return words[address - 1000 : address - 1000 + count]

    assert read_model(read, ModelRef(203, 1000, 105)) == list(range(105))
    assert calls == [(1000, 107)]
    long = [64001, 200, *range(200)]
    calls.clear()
    assert read_model(lambda a, c: long[a : a + c], ModelRef(64001, 0, 200)) == list(range(200))
    with pytest.raises(SunSpecError, match="now reads as"):
        read_model(read, ModelRef(103, 1000, 105))


def test_measuring_model_follows_the_role() -> None:
    both = SunSpecMap(
        40000, (ModelRef(1, 40002, 66), ModelRef(103, 40070, 50), ModelRef(203, 40122, 105)), None
    )
    assert both.measuring() == ModelRef(103, 40070, 50)
    assert both.measuring(Role.GRID) == ModelRef(203, 40122, 105)
    meter_only = SunSpecMap(40000, (ModelRef(1, 40002, 66), ModelRef(201, 40070, 105)), None)
    assert meter_only.measuring(Role.PV) == ModelRef(201, 40070, 105)
    assert decode_model(113, [0] * 60)[0] == Role.PV
    assert decode_model(204, [0x8000] * 105)[0] == Role.GRID
    with pytest.raises(SunSpecError, match="not one coopwatt reads"):
        decode_model(160, [])


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=105, max_size=105), st.sampled_from([103, 113, 203])
)
@settings(max_examples=300)
def test_decoders_never_crash_or_return_sentinel_numbers(words: list[int], model: int) -> None:
    _, q = decode_model(model, words)
    for name, value in q.items():
        if isinstance(value, float):
            assert not math.isnan(value)
            if name == "voltage_v":
                assert value != pytest.approx(3276.8)
            if name == "power_factor":
                assert -1 <= value <= 1
