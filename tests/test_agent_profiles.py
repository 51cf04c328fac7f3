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
    decode,
    default_profile_dirs,
    load_profile,
    parse_profile,
    plan_reads,
    raw_value,
)
from protocol.quantities import Role

SHIPPED = sorted(
    p.stem for p in (Path(__file__).parent.parent / "firmware-configs" / "devices").glob("*.toml")
)


def f32_words(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.points
    for block in plan_reads(profile):
        assert block.count <= profile.max_registers_per_read


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
    q = decode(profile, {block: image[block.address :]})
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
    q = decode(profile, {block: image[block.address :]})
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
    q = decode(profile, {block: image})
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
