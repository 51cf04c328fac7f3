"""Register images decode back to the values they encode, per the vendors' maps."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from sim import registers as r

DT = ModbusTcpClient.DATATYPE
convert = ModbusTcpClient.convert_from_registers

GRID = {
    "power_w": -1234.0,
    "energy_import_wh": 2_621_553.25,
    "energy_export_wh": 845_849.0,
    "voltage_v": 231.4,
    "current_a": 5.87,
    "power_factor": 0.91,
    "frequency_hz": 49.98,
}
PV: dict[str, float | str] = {
    "power_w": 2873.0,
    "energy_wh": 4_123_456.0,
    "voltage_v": 229.8,
    "current_a": 12.5,
    "power_factor": 1.0,
    "frequency_hz": 50.01,
    "temperature_c": 38.2,
    "state": "mppt",
}
WIND: dict[str, float | str] = {
    "power_w": 812.0,
    "energy_wh": 1_234_567.6,
    "voltage_v": 230.6,
    "current_a": 3.52,
    "temperature_c": -4.3,
    "wind_speed_m_s": 8.7,
    "state": "running",
}


def f32(image: r.RegisterImage, address: int) -> float:
    value = convert(image.read(address, 2), DT.FLOAT32)
    assert isinstance(value, float)
    return value


def as_f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


# --- SDM630 -----------------------------------------------------------------------------------


def test_sdm630_image_covers_0_to_0x4b_as_input_registers() -> None:
    image = r.sdm630_image(GRID)
    assert image.function_code == 4
    assert image.start == 0
    assert len(image.words) == 0x4C
    assert all(0 <= w <= 0xFFFF for w in image.words)
    for unused in (0x002C, 0x0032, 0x0036, 0x003A, 0x0040, 0x0044):
        assert image.read(unused, 2) == [0, 0]


def test_sdm630_float32_high_word_first() -> None:
    image = r.sdm630_image(GRID)
    # -1234.0 is 0xC49A4000: high word first.
    assert image.read(0x0034, 2) == [0xC49A, 0x4000]
    assert f32(image, 0x0034) == -1234.0
    assert f32(image, 0x0046) == as_f32(49.98)
    assert f32(image, 0x003E) == as_f32(0.91)
    assert f32(image, 0x002A) == as_f32(231.4)
    assert f32(image, 0x0030) == as_f32(5.87)
    assert f32(image, 0x0048) == as_f32(2621.55325)
    assert f32(image, 0x004A) == as_f32(845.849)


def test_sdm630_phases_add_up() -> None:
    image = r.sdm630_image(GRID)
    volts = [f32(image, a) for a in (0x0000, 0x0002, 0x0004)]
    amps = [f32(image, a) for a in (0x0006, 0x0008, 0x000A)]
    watts = [f32(image, a) for a in (0x000C, 0x000E, 0x0010)]
    assert sum(volts) / 3 == pytest.approx(231.4, abs=1e-4)
    assert all(225 < v < 235 for v in volts)
    assert sum(amps) == pytest.approx(5.87, abs=1e-5)
    assert sum(watts) == pytest.approx(-1234.0, abs=1e-3)
    assert all(w < 0 for w in watts)  # export shows on every phase
    va = f32(image, 0x0038)
    var = f32(image, 0x003C)
    assert va == pytest.approx(1234.0 / 0.91, rel=1e-6)
    assert va**2 == pytest.approx(1234.0**2 + var**2, rel=1e-5)


@given(
    power_w=st.integers(min_value=-30_000, max_value=30_000),
    import_wh=st.floats(min_value=0, max_value=5_000_000),
    export_wh=st.floats(min_value=0, max_value=5_000_000),
    voltage_v=st.integers(min_value=2100, max_value=2500),
    pf=st.integers(min_value=50, max_value=100),
)
def test_sdm630_roundtrip(
    power_w: int, import_wh: float, export_wh: float, voltage_v: int, pf: int
) -> None:
    values = dict(GRID)
    values.update(
        power_w=float(power_w),
        energy_import_wh=import_wh,
        energy_export_wh=export_wh,
        voltage_v=voltage_v / 10,
        power_factor=pf / 100,
    )
    image = r.sdm630_image(values)
    assert f32(image, 0x0034) == power_w  # whole watts are exact in float32
    # float32 kWh below 5,000 kWh keeps better than 1 Wh.
    assert abs(f32(image, 0x0048) * 1000 - import_wh) <= 0.5
    assert abs(f32(image, 0x004A) * 1000 - export_wh) <= 0.5
    assert f32(image, 0x002A) == pytest.approx(voltage_v / 10, abs=1e-4)
    assert f32(image, 0x003E) == pytest.approx(pf / 100, abs=1e-6)


# --- SunSpec ----------------------------------------------------------------------------------


def walk_models(image: r.RegisterImage) -> dict[int, tuple[int, int]]:
    """SunSpec discovery as an agent does it: model id → (address of ID, length)."""
    assert image.read(40000, 2) == [0x5375, 0x6E53]
    found: dict[int, tuple[int, int]] = {}
    address = 40002
    while True:
        model_id, length = image.read(address, 2)
        if model_id == 0xFFFF:
            assert length == 0
            return found
        found[model_id] = (address, length)
        address += 2 + length


def sunssf(word: int) -> int:
    value = convert([word], DT.INT16)
    assert isinstance(value, int)
    return value


@pytest.mark.parametrize("common_length", [66, 65])
def test_sunspec_model_chain(common_length: int) -> None:
    image = r.sunspec_inverter_image(PV, common_length=common_length, serial="h1-pv-inverter")
    assert image.function_code == 3
    assert image.start == 40000
    models = walk_models(image)
    assert models == {1: (40002, common_length), 103: (40004 + common_length, 50)}
    assert image.end == 40004 + common_length + 52 + 2
    mn = convert(image.read(40004, 16), DT.STRING)
    assert isinstance(mn, str)
    assert mn.rstrip("\0") == "coopwatt-sim"
    sn = convert(image.read(40004 + 16 + 16 + 8 + 8, 16), DT.STRING)
    assert isinstance(sn, str)
    assert sn.rstrip("\0") == "h1-pv-inverter"
    da = image.read(40004 + 64, 1)[0]
    assert da == 1
    if common_length == 66:
        assert image.read(40004 + 65, 1) == [0x8000]  # Pad


def point(image: r.RegisterImage, name: str, m103_at: int) -> int:
    return image.read(m103_at + r.M103_OFFSETS[name], 1)[0]


@pytest.mark.parametrize("common_length", [66, 65])
def test_sunspec_inverter_points_and_scale_factors(common_length: int) -> None:
    image = r.sunspec_inverter_image(PV, common_length=common_length)
    at = walk_models(image)[103][0]

    def scaled(name: str, sf_name: str, signed: bool = False) -> float:
        raw = point(image, name, at)
        if signed:
            raw = sunssf(raw)
        return float(raw * 10.0 ** sunssf(point(image, sf_name, at)))

    assert sunssf(point(image, "A_SF", at)) == -2
    assert sunssf(point(image, "V_SF", at)) == -1
    assert sunssf(point(image, "W_SF", at)) == 0
    assert sunssf(point(image, "Hz_SF", at)) == -2
    assert sunssf(point(image, "WH_SF", at)) == 0
    assert sunssf(point(image, "Tmp_SF", at)) == -1
    assert sunssf(point(image, "PF_SF", at)) == -2
    assert scaled("W", "W_SF", signed=True) == 2873.0
    assert scaled("A", "A_SF") == pytest.approx(12.5)
    assert scaled("AphA", "A_SF") == pytest.approx(12.5 / 3, abs=0.006)
    assert scaled("PhVphA", "V_SF") == pytest.approx(229.8)
    assert scaled("PPVphAB", "V_SF") == pytest.approx(229.8 * 3**0.5, abs=0.06)
    assert scaled("Hz", "Hz_SF") == pytest.approx(50.01)
    assert scaled("TmpCab", "Tmp_SF", signed=True) == pytest.approx(38.2)
    # PF is a percentage in model 103: 1.0 → 100.00 %.
    assert scaled("PF", "PF_SF", signed=True) == pytest.approx(100.0)
    wh = convert(image.read(at + r.M103_OFFSETS["WH"], 2), DT.UINT32)
    assert wh == 4_123_456
    assert point(image, "St", at) == 4  # MPPT
    assert image.read(at + r.M103_OFFSETS["Evt1"], 4) == [0, 0, 0, 0]


def test_sunspec_unimplemented_sentinels() -> None:
    image = r.sunspec_inverter_image(PV)
    at = walk_models(image)[103][0]
    for name in ("VAr", "VAr_SF", "DCA_SF", "DCV_SF", "DCW", "DCW_SF"):
        assert point(image, name, at) == 0x8000, name
    for name in ("TmpSnk", "TmpTrns", "TmpOt"):
        assert point(image, name, at) == 0x8000, name
    for name in ("DCA", "DCV", "StVnd"):
        assert point(image, name, at) == 0xFFFF, name
    assert image.read(at + r.M103_OFFSETS["EvtVnd1"], 8) == [0xFFFF] * 8


def test_sunspec_sleeping_at_night_and_negative_temperature() -> None:
    night = dict(PV, power_w=0.0, current_a=0.0, state="sleeping", temperature_c=-7.5)
    image = r.sunspec_inverter_image(night)
    at = walk_models(image)[103][0]
    assert point(image, "St", at) == 2
    assert point(image, "W", at) == 0
    assert sunssf(point(image, "TmpCab", at)) == -75


def test_sunspec_rejects_other_common_lengths() -> None:
    with pytest.raises(ValueError):
        r.sunspec_inverter_image(PV, common_length=64)


@given(wh=st.integers(min_value=0, max_value=2**40))
def test_sunspec_energy_accumulator_wraps(wh: int) -> None:
    image = r.sunspec_inverter_image(dict(PV, energy_wh=float(wh)))
    at = walk_models(image)[103][0]
    assert convert(image.read(at + r.M103_OFFSETS["WH"], 2), DT.UINT32) == wh % 2**32


# --- wind turbine -----------------------------------------------------------------------------


def test_wind_turbine_map() -> None:
    image = r.wind_turbine_image(WIND)
    assert image.function_code == 3
    assert image.start == 0
    assert len(image.words) == 9
    state, speed, rpm, power, e_lo, e_hi, volts, amps, temp = image.words
    assert state == 1
    assert speed == 87
    assert 0 < rpm <= 450
    assert power == 812
    # Lifetime energy: uint32, LOW word first.
    assert (e_hi << 16) | e_lo == 1_234_568
    assert convert([e_lo, e_hi], DT.UINT32, word_order="little") == 1_234_568
    assert convert([e_lo, e_hi], DT.UINT32) != 1_234_568  # the quirk bites a naive reader
    assert volts == 2306
    assert amps == 352
    assert sunssf(temp) == -43


@pytest.mark.parametrize(("state", "code"), [("off", 0), ("running", 1), ("braking", 2)])
def test_wind_turbine_states(state: str, code: int) -> None:
    image = r.wind_turbine_image(dict(WIND, state=state))
    assert image.words[0] == code
    if state != "running":
        assert image.words[2] == 0  # rotor stopped


@given(wh=st.integers(min_value=0, max_value=2**32 - 1))
def test_wind_energy_roundtrip(wh: int) -> None:
    image = r.wind_turbine_image(dict(WIND, energy_wh=float(wh)))
    assert convert(image.read(4, 2), DT.UINT32, word_order="little") == wh


# --- helpers ----------------------------------------------------------------------------------


def test_register_image_read_bounds() -> None:
    image = r.RegisterImage(3, 100, (1, 2, 3))
    assert image.read(100, 3) == [1, 2, 3]
    assert image.read(102, 1) == [3]
    for address, count in ((99, 1), (102, 2), (103, 1), (100, 0)):
        with pytest.raises(IndexError):
            image.read(address, count)


@given(text=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=32))
def test_string_words_roundtrip(text: str) -> None:
    words = r.string_words(text, 16)
    assert len(words) == 16
    decoded = convert(words, DT.STRING)
    assert isinstance(decoded, str)
    assert decoded.rstrip("\0") == text.rstrip("\0")


@given(x=st.floats(min_value=-1e6, max_value=1e6))
def test_int16_and_uint16_saturate(x: float) -> None:
    i = r.int16_word(x)
    u = r.uint16_word(x)
    assert 0 <= i <= 0xFFFF and i != 0x8000
    assert 0 <= u < 0xFFFF
