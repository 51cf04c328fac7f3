"""Device profiles: shipped files load, registers decode in word order, bad files fail clearly."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.profiles import (
    Profile,
    ProfileError,
    ReadBlock,
    decode_registers,
    default_profile_dirs,
    list_profiles,
    load_profile,
    matches_identity,
    parse_profile,
    plan_reads,
    raw_value,
    retarget,
)
from protocol.quantities import Role

SHIPPED = sorted(
    p.stem for p in (Path(__file__).parent.parent / "firmware-configs" / "devices").glob("*.toml")
)


def f32_words(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_cites_its_source(name: str) -> None:
    profile = load_profile(name)
    path = Path(profile.source)
    assert any(line.startswith("# Source: ") for line in path.read_text().splitlines())
    if profile.kind == "s0":
        assert profile.impulses_per_kwh > 0 and not profile.points
        return
    if profile.kind == "p1":
        assert profile.obis is not None and profile.obis.codes and not profile.points
        return
    assert profile.points
    for block in plan_reads(profile):
        assert block.count <= profile.max_registers_per_read <= 125


def test_the_required_models_are_shipped() -> None:
    assert {
        "eastron-sdm120",
        "eastron-sdm630",
        "eastron-sdm72d-m",
        "growatt-tl-x",
        "huawei-sun2000",
        "coopwatt-wind-generic",
        "s0-pulse-1000",
    } <= set(SHIPPED)
    assert list_profiles() == sorted(set(list_profiles()))


def test_sdm630_registers_decode_to_glossary_units() -> None:
    profile = load_profile("eastron-sdm630")
    (block,) = plan_reads(profile)  # one request covers the whole map
    assert block.table == "input"
    image = [0] * (block.address + block.count)
    for address, value in {
        0x2A: 231.5,
        0x30: 12.25,
        0x34: -2500.0,
        0x3E: 0.97,
        0x46: 50.01,
        0x48: 1234.567,
        0x4A: 89.5,
    }.items():
        image[address : address + 2] = f32_words(value)
    q = decode_registers(profile, {block: image[block.address :]})
    assert q["power_w"] == -2500.0
    assert q["energy_import_wh"] == pytest.approx(1_234_567, abs=0.1)  # kWh float32 -> Wh
    assert q["energy_export_wh"] == 89_500.0
    assert q["voltage_v"] == pytest.approx(231.5)
    assert q["frequency_hz"] == pytest.approx(50.01, abs=1e-4)


def test_nan_float_means_not_implemented_and_is_absent() -> None:
    profile = load_profile("eastron-sdm630")
    (block,) = plan_reads(profile)
    image = [0] * (block.address + block.count)
    image[0x3E:0x40] = [0x7FC0, 0x0000]  # NaN power factor
    q = decode_registers(profile, {block: image[block.address :]})
    assert "power_factor" not in q
    assert q["power_w"] == 0.0


def test_wind_energy_counter_is_low_word_first() -> None:
    profile = load_profile("coopwatt-wind-generic")
    (block,) = plan_reads(profile)
    image = [0] * block.count
    image[0] = 1  # running
    image[1] = 87  # 8.7 m/s
    image[3] = 1200
    image[4], image[5] = 0x5678, 0x0012  # 0x0012_5678 Wh, low word first
    image[8] = (-55) & 0xFFFF  # -5.5 °C
    q = decode_registers(profile, {block: image})
    assert q["energy_wh"] == 0x00125678
    assert q["state"] == "running"
    assert q["wind_speed_m_s"] == pytest.approx(8.7)
    assert q["temperature_c"] == pytest.approx(-5.5)


def test_raw_value_word_orders() -> None:
    assert raw_value([0x0001, 0x0002], "uint32", "big") == 0x00010002
    assert raw_value([0x0001, 0x0002], "uint32", "little") == 0x00020001
    assert raw_value([0xFFFF], "int16", "big") == -1


def _profile(points: list[dict[str, Any]], **extra: Any) -> Profile:
    return parse_profile("t", {"model": "T", "role": "grid", "points": points, **extra})


def test_plan_reads_coalesces_within_gap_and_limit() -> None:
    pts = [
        {"quantity": "voltage_v", "table": "input", "address": 0, "type": "float32"},
        {"quantity": "current_a", "table": "input", "address": 6, "type": "float32"},
        {"quantity": "power_w", "table": "input", "address": 100, "type": "float32"},
        {"quantity": "frequency_hz", "table": "holding", "address": 2, "type": "uint16"},
    ]
    assert plan_reads(_profile(pts)) == [
        ReadBlock("holding", 2, 1),
        ReadBlock("input", 0, 8),
        ReadBlock("input", 100, 2),
    ]
    # A device that answers at most 4 registers a request gets separate reads.
    assert plan_reads(_profile(pts[:2], max_registers_per_read=4))[0] == ReadBlock("input", 0, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quantity": "watts"}, "unknown quantity"),
        ({"quantity": "energy_wh"}, "not a quantity of a grid device"),
        ({"table": "coil"}, "table must be"),
        ({"type": "float16"}, "type must be one of"),
        ({"address": 70000}, "not a register address"),
        ({"address": -1}, "not a register address"),
        ({"scale": 0}, "non-zero"),
        ({"typo": 1}, "unknown key"),
        ({"quantity": "state"}, "needs a states table"),
    ],
)
def test_invalid_points_are_named(change: dict[str, Any], message: str) -> None:
    point = {"quantity": "power_w", "table": "input", "address": 0, "type": "float32", **change}
    with pytest.raises(ProfileError, match=message):
        _profile([point])


def test_missing_profile_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no device profile 'nope'"):
        load_profile("nope", [tmp_path])
    with pytest.raises(ProfileError, match="not a valid name"):
        load_profile("../etc/passwd", [tmp_path])
    assert any(d.name == "devices" for d in default_profile_dirs())


def test_profile_with_bad_toml_is_a_profile_error(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("model = [")
    with pytest.raises(ProfileError, match=r"broken\.toml"):
        load_profile("broken", [tmp_path])


_scalars = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12)
)
_points = st.lists(
    st.dictionaries(
        st.sampled_from(
            ["quantity", "table", "address", "type", "scale", "word_order", "states", "x"]
        ),
        _scalars | st.dictionaries(st.text(max_size=3), st.text(max_size=5), max_size=3),
        max_size=8,
    ),
    max_size=4,
)


@given(
    st.dictionaries(
        st.sampled_from(["model", "role", "word_order", "max_registers_per_read", "max_gap", "y"]),
        _scalars,
        max_size=6,
    ),
    _points | _scalars,
)
@settings(max_examples=300)
def test_profile_loader_never_crashes_on_hostile_input(top: dict[str, Any], points: Any) -> None:
    try:
        profile = parse_profile("h", {**top, "points": points})
    except ProfileError:
        return
    assert profile.role in Role
    plan_reads(profile)


# --- word order, combined registers, states, identity -------------------------------------------


@pytest.mark.parametrize("value", [231.5, -2500.25, 0.97, 1e-3, 12345.678])
def test_float_word_order(value: float) -> None:
    hi, lo = f32_words(value)
    big = _profile([{"quantity": "power_w", "table": "input", "address": 0, "type": "float32"}])
    little = _profile(
        [{"quantity": "power_w", "table": "input", "address": 0, "type": "float32"}],
        word_order="little",
    )
    (block,) = plan_reads(big)
    assert decode_registers(big, {block: [hi, lo]})["power_w"] == pytest.approx(value, rel=1e-6)
    assert decode_registers(little, {block: [lo, hi]})["power_w"] == pytest.approx(value, rel=1e-6)
    # Read with the wrong order, the same words make a different number: the profile matters.
    assert decode_registers(little, {block: [hi, lo]}).get("power_w") != pytest.approx(
        value, rel=1e-3
    )


def test_point_word_order_overrides_the_profile() -> None:
    p = _profile(
        [
            {"quantity": "power_w", "table": "input", "address": 0, "type": "int32"},
            {
                "quantity": "energy_import_wh",
                "table": "input",
                "address": 2,
                "type": "uint32",
                "word_order": "little",
            },
        ]
    )
    (block,) = plan_reads(p)
    q = decode_registers(p, {block: [0xFFFF, 0xFF38, 0x0002, 0x0001]})
    assert q == {"power_w": -200.0, "energy_import_wh": float(0x00010002)}


def test_phases_summed_and_averaged_skipping_unused_ones() -> None:
    p = _profile(
        [
            {
                "quantity": "voltage_v",
                "table": "holding",
                "addresses": [10, 11, 12],
                "combine": "mean",
                "type": "uint16",
                "scale": 0.1,
                "not_implemented": [0],
            },
            {
                "quantity": "current_a",
                "table": "holding",
                "addresses": [20, 22, 24],
                "type": "int32",
                "scale": 0.001,
            },
        ]
    )
    assert plan_reads(p) == [ReadBlock("holding", 10, 16)]
    words = [0] * 16
    words[0:3] = [2300, 2320, 0]  # phase C unused: left out of the mean
    words[10:16] = [0, 1500, 0, 2500, 0xFFFF, 0xFC18]  # 1.5 + 2.5 - 1.0 A
    q = decode_registers(p, {ReadBlock("holding", 10, 16): words})
    assert q["voltage_v"] == pytest.approx(231.0)
    assert q["current_a"] == pytest.approx(3.0)
    words[0:3] = [0, 0, 0]
    assert "voltage_v" not in decode_registers(p, {ReadBlock("holding", 10, 16): words})


def test_states_accept_hex_keys_and_only_glossary_words() -> None:
    point = {"quantity": "state", "table": "holding", "address": 0, "type": "uint16"}
    p = _profile([{**point, "states": {"0x0200": "running", "0x0A00": "sleeping"}}], role="pv")
    (block,) = plan_reads(p)
    assert decode_registers(p, {block: [0x0A00]}) == {"state": "sleeping"}
    assert decode_registers(p, {block: [0x0999]}) == {"state": "unknown"}
    with pytest.raises(ProfileError, match="not one of the glossary's"):
        _profile([{**point, "states": {"1": "on-grid"}}], role="pv")


def test_identify_by_model_text_or_value() -> None:
    p = parse_profile(
        "h",
        {
            "model": "H",
            "role": "pv",
            "identify": {"table": "holding", "address": 30000, "count": 4, "text_prefix": "SUN"},
            "points": [{"quantity": "power_w", "table": "holding", "address": 0, "type": "int32"}],
        },
    )
    assert p.identify is not None
    assert matches_identity(p.identify, [0x5355, 0x4E32, 0x3030, 0x3000])  # "SUN2000"
    assert not matches_identity(p.identify, [0x4142, 0, 0, 0])
    with pytest.raises(ProfileError, match="text_prefix or values"):
        parse_profile(
            "h",
            {
                "model": "H",
                "role": "pv",
                "identify": {"table": "holding", "address": 0},
                "points": [
                    {"quantity": "power_w", "table": "holding", "address": 0, "type": "int32"}
                ],
            },
        )


def test_s0_profiles_carry_impulses_not_points() -> None:
    p = parse_profile("s", {"model": "S0", "role": "load", "kind": "s0", "impulses_per_kwh": 800})
    assert (p.kind, p.impulses_per_kwh, p.debounce_ms) == ("s0", 800.0, 20.0)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"impulses_per_kwh": 0}, "impulses_per_kwh"),
        ({"impulses_per_kwh": 1000, "points": []}, "only for Modbus"),
        ({"impulses_per_kwh": 1000, "debounce_ms": -1}, "debounce_ms"),
    ]
    for bad, message in cases:
        with pytest.raises(ProfileError, match=message):
            parse_profile("s", {"model": "S0", "role": "load", "kind": "s0", **bad})
    with pytest.raises(ProfileError, match='only for kind = "s0"'):
        _profile(
            [{"quantity": "power_w", "table": "input", "address": 0, "type": "float32"}],
            impulses_per_kwh=1000,
        )


def test_retarget_a_grid_meter_to_other_roles() -> None:
    meter: dict[str, float | str] = {
        "power_w": 500.0,
        "energy_import_wh": 10.0,
        "energy_export_wh": 3.0,
        "voltage_v": 230.0,
    }
    assert retarget(meter, Role.GRID, Role.GRID) == meter
    assert retarget(meter, Role.GRID, Role.LOAD) == {
        "power_w": 500.0,
        "energy_wh": 10.0,
        "voltage_v": 230.0,
    }
    assert retarget(meter, Role.GRID, Role.PV) == {
        "power_w": -500.0,
        "energy_wh": 3.0,
        "voltage_v": 230.0,
    }
    inverter: dict[str, float | str] = {"power_w": 800.0, "energy_wh": 7.0, "state": "mppt"}
    assert retarget(inverter, Role.PV, Role.GRID) == {
        "power_w": -800.0,
        "energy_export_wh": 7.0,
        "state": "mppt",
    }
    assert retarget({"wind_speed_m_s": 5.0}, Role.WIND, Role.GRID) == {"wind_speed_m_s": 5.0}
