"""P1 (DSMR) telegram decoding: the published examples, worked by hand, and the bad input.

Expected values are read off the fixture telegrams (tests/fixtures/p1/README.md says where each
comes from) by hand: kWh x 1000 = Wh, kW x 1000 = W, tariffs summed, + import - export.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dsmr_decode import (
    MAX_TELEGRAM_BYTES,
    DsmrDecoder,
    ObisMap,
    ObisMapError,
    crc16,
    split_lines,
)
from agent.profiles import ProfileError, load_profile, parse_profile
from agent.push_frames import Frame, FrameFault
from sim.p1_stream import crc16_arc

FIXTURES = Path(__file__).parent / "fixtures" / "p1"
DSMR5 = (FIXTURES / "dsmr-5.0.2-example.txt").read_bytes()
DSMR22 = (FIXTURES / "dsmr-2.2-example.txt").read_bytes()
EMUCS = (FIXTURES / "e-mucs-1.7.1-example.txt").read_bytes()
SMARTY = (FIXTURES / "smarty-encrypted.bin").read_bytes()

# DSMR 5.0.2 P1 Companion Standard, section 6.12's example, by hand.
DSMR5_EXPECTED = {
    "energy_import_t1_wh": 123_456_789.0,  # 1-0:1.8.1(123456.789*kWh)
    "energy_import_t2_wh": 123_456_789.0,
    "energy_import_wh": 246_913_578.0,
    "energy_export_t1_wh": 123_456_789.0,
    "energy_export_t2_wh": 123_456_789.0,
    "energy_export_wh": 246_913_578.0,
    "power_w": 1193.0,  # 1-0:1.7.0(01.193*kW) - 1-0:2.7.0(00.000*kW)
    "voltage_l1_v": 220.1,
    "voltage_l2_v": 220.2,
    "voltage_l3_v": 220.3,
    "current_l1_a": 1.0,
    "current_l2_a": 2.0,
    "current_l3_a": 3.0,
    "power_l1_w": -3333.0,  # 1-0:21.7.0(01.111*kW) - 1-0:22.7.0(04.444*kW)
    "power_l2_w": -3333.0,  # 2.222 - 5.555 kW
    "power_l3_w": -3333.0,  # 3.333 - 6.666 kW
}
DSMR22_EXPECTED = {
    "energy_import_t1_wh": 123_456.0,  # 00123.456 kWh
    "energy_import_t2_wh": 654_321.0,
    "energy_import_wh": 777_777.0,
    "energy_export_t1_wh": 10_001.0,
    "energy_export_t2_wh": 20_002.0,
    "energy_export_wh": 30_003.0,
    "power_w": 1250.0,  # 0001.25 kW
}
EMUCS_EXPECTED = {
    "energy_import_t1_wh": 34.0,  # day tariff in Belgium: 000000.034 kWh
    "energy_import_t2_wh": 15_758.0,  # night
    "energy_import_wh": 15_792.0,
    "energy_export_t1_wh": 0.0,
    "energy_export_t2_wh": 11.0,
    "energy_export_wh": 11.0,
    "power_w": 0.0,
    "voltage_l1_v": 234.7,
    "voltage_l2_v": 234.7,
    "voltage_l3_v": 234.7,
    "current_l1_a": 0.0,
    "current_l2_a": 0.0,
    "current_l3_a": 0.0,
    "power_l1_w": 0.0,
    "power_l2_w": 0.0,
    "power_l3_w": 0.0,
}

# The OBIS codes that make each quantity under the dsmr-5 profile, copied by hand from
# firmware-configs/devices/dsmr-5.toml's [obis] table.
DSMR5_CODES = {
    "energy_import_t1_wh": {"1-0:1.8.1"},
    "energy_import_t2_wh": {"1-0:1.8.2"},
    "energy_import_wh": {"1-0:1.8.1", "1-0:1.8.2"},
    "energy_export_t1_wh": {"1-0:2.8.1"},
    "energy_export_t2_wh": {"1-0:2.8.2"},
    "energy_export_wh": {"1-0:2.8.1", "1-0:2.8.2"},
    "power_w": {"1-0:1.7.0", "1-0:2.7.0"},
    "voltage_l1_v": {"1-0:32.7.0"},
    "voltage_l2_v": {"1-0:52.7.0"},
    "voltage_l3_v": {"1-0:72.7.0"},
    "current_l1_a": {"1-0:31.7.0"},
    "current_l2_a": {"1-0:51.7.0"},
    "current_l3_a": {"1-0:71.7.0"},
    "power_l1_w": {"1-0:21.7.0", "1-0:22.7.0"},
    "power_l2_w": {"1-0:41.7.0", "1-0:42.7.0"},
    "power_l3_w": {"1-0:61.7.0", "1-0:62.7.0"},
}
# Every fixture: the profile it is read with and the readings worked by hand above.
FIXTURE_READINGS = {
    "dsmr-5.0.2-example.txt": ("dsmr-5", [DSMR5_EXPECTED]),
    "dsmr-2.2-example.txt": ("dsmr-2", [DSMR22_EXPECTED]),
    "e-mucs-1.7.1-example.txt": ("e-mucs", [EMUCS_EXPECTED]),
    "smarty-encrypted.bin": ("dsmr-5", []),
}


def decoder(profile: str = "dsmr-5") -> DsmrDecoder:
    p = load_profile(profile)
    assert p.obis is not None
    return DsmrDecoder(p.obis, require_crc=p.crc)


def frames(items: list[Frame | FrameFault]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def faults(items: list[Frame | FrameFault]) -> list[str]:
    return [i.reason for i in items if isinstance(i, FrameFault)]


def test_crc16_is_crc16_arc() -> None:
    # The CRC catalogue's check value for CRC-16/ARC (poly 0x8005 reflected, init 0).
    assert crc16(b"123456789") == 0xBB3D
    # The fixtures' CRC lines were computed with it; the telegram text was composed by hand.
    assert DSMR5.endswith(b"!E47C\r\n")


def crc16_bit_by_bit(data: bytes) -> int:
    """CRC-16/ARC as the catalogue defines it: poly 0x8005 reflected (0xA001), init 0, a bit a
    step, low bit first."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_crc16_bit_by_bit_reference_is_crc16_arc() -> None:
    assert crc16_bit_by_bit(b"123456789") == 0xBB3D  # the catalogue's check value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_crc16_equals_the_bitwise_reference(data: bytes) -> None:
    # Any length, odd, even and empty: the folds split at every power of 2 up to a telegram's.
    assert crc16(data) == crc16_bit_by_bit(data)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 31, 32, 33, 1023, 1024, 1025, 8192])
def test_crc16_at_fold_boundaries(size: int) -> None:
    data = bytes((7 * i + 3) % 256 for i in range(size))
    assert crc16(data) == crc16_bit_by_bit(data)
    assert crc16(b"\xff" * size) == crc16_bit_by_bit(b"\xff" * size)


def test_dsmr5_spec_example() -> None:
    d = decoder()
    [frame] = d.feed(DSMR5)
    assert frame == Frame(
        DSMR5_EXPECTED,
        meter_id="K8EG004046395507",  # 0-0:96.1.1, hex-encoded ASCII
        meter_ts_ms=1_291_890_620_000,  # 101209113020W: 2010-12-09 11:30:20 CET
    )
    assert d.last is not None and d.last.version == "DSMR 5.0"


def test_dsmr42_reads_like_dsmr5() -> None:
    # DSMR 4.2's telegram differs from 5.0's example here only in its version line (and in its
    # rate, every 10 s); its CRC is recomputed by the simulator's own CRC-16/ARC.
    body = DSMR5[: DSMR5.rindex(b"!") + 1].replace(b"1-3:0.2.8(50)", b"1-3:0.2.8(42)")
    d = decoder()
    [frame] = d.feed(body + f"{crc16_arc(body):04X}\r\n".encode())
    assert isinstance(frame, Frame) and frame.quantities == DSMR5_EXPECTED
    assert d.last is not None and d.last.version == "DSMR 4.2"


def test_dsmr22_without_crc() -> None:
    d = decoder("dsmr-2")
    [frame] = d.feed(DSMR22)
    assert isinstance(frame, Frame)
    assert frame.quantities == DSMR22_EXPECTED
    assert frame.meter_ts_ms is None  # DSMR 2.2 telegrams carry no time
    assert d.last is not None and d.last.version == "DSMR 2.2/3.0"


def test_belgian_e_mucs() -> None:
    d = decoder("e-mucs")
    [frame] = d.feed(EMUCS)
    assert isinstance(frame, Frame)
    assert frame.quantities == EMUCS_EXPECTED
    assert frame.meter_id == "1SAG3101021605"
    assert frame.meter_ts_ms == 1_589_284_449_000  # 200512135409S: 13:54:09 CEST
    assert d.last is not None and d.last.version == "e-MUCS (Belgium), version 50217"


@pytest.mark.parametrize("name", sorted(FIXTURE_READINGS))
def test_every_fixture_reads_as_worked_by_hand_whole_and_a_byte_at_a_time(name: str) -> None:
    profile, expected = FIXTURE_READINGS[name]
    stream = (FIXTURES / name).read_bytes()
    d = decoder(profile)
    whole = d.feed(stream)
    bytewise = [item for i in range(len(stream)) for item in d.feed(stream[i : i + 1])]
    assert [f.quantities for f in frames(whole)] == expected
    assert [f.quantities for f in frames(bytewise)] == expected


def test_every_fixture_has_its_worked_readings() -> None:
    on_disk = {p.name for p in FIXTURES.iterdir()} - {"README.md", ".gitattributes"}
    assert on_disk == set(FIXTURE_READINGS)


def test_dsmr5_codes_table_is_the_profiles() -> None:
    # DSMR5_CODES was copied by hand; it must still be the profile file's table.
    p = load_profile("dsmr-5")
    assert p.obis is not None
    assert {q: set(codes) for q, codes in p.obis.needs().items()} == DSMR5_CODES


@settings(max_examples=100, deadline=None)
@given(dropped=st.sets(st.sampled_from(sorted(set().union(*DSMR5_CODES.values())))))
def test_a_quantity_is_read_only_when_all_its_codes_are_there(dropped: set[str]) -> None:
    body = DSMR5[: DSMR5.rindex(b"!") + 1]
    for code in dropped:
        body = re.sub(rb"(?m)^" + re.escape(code.encode()) + rb"\(.*\r\n", b"", body)
    telegram = body + f"{crc16_arc(body):04X}\r\n".encode()  # the simulator's own CRC
    expected = {q: v for q, v in DSMR5_EXPECTED.items() if not DSMR5_CODES[q] & dropped}
    items = decoder().feed(telegram)
    if expected:
        assert [f.quantities for f in frames(items)] == [expected]
    else:
        assert faults(items) == ["telegram holds none of the OBIS codes this meter's profile maps"]


def test_a_decoder_given_another_map_reads_by_it() -> None:
    d = decoder()
    d.obis = ObisMap.parse({"1-0:1.7.0": "power_w", "1-0:2.7.0": "-power_w"})
    [frame] = d.feed(DSMR5)
    assert isinstance(frame, Frame) and frame.quantities == {"power_w": 1193.0}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("\r\n1-0:1.8.1(001.5*kWh)\r\n", {"1-0:1.8.1": ("001.5*kWh",)}),
        # DSMR 2.2's gas reading continues its line on the next; blanks around lines are dropped
        (
            "0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n  (00001.001)  \r\n\r\n",
            {"0-1:24.3.0": ("090212160000", "00", "60", "1", "0-1:24.2.1", "m3", "00001.001")},
        ),
        ("1-0:1.8.1()\r\n1-0:1.8.1(2)(3)\r\n", {"1-0:1.8.1": ("2", "3")}),  # the last wins
        ("", {}),
        ("(1)\r\n1-0:1.8.1(2)\r\n", "not an OBIS line: '(1)'"),  # continues nothing
        ("1-0:1.8.1(1) (2)\r\n", "not an OBIS line: '1-0:1.8.1(1) (2)'"),
        ("1-0:1.8.1(1)\r\nhello\r\n", "not an OBIS line: 'hello'"),
        ("1-0:1.8.1(1(2))\r\n", "not an OBIS line: '1-0:1.8.1(1(2))'"),
    ],
)
def test_split_lines_by_hand(body: str, expected: dict[str, tuple[str, ...]] | str) -> None:
    got = split_lines(body)
    if isinstance(expected, str):
        assert isinstance(got, FrameFault) and got.reason.endswith(expected)
    else:
        assert got == expected


def split_lines_reference(body: str) -> dict[str, tuple[str, ...]] | str:
    """split_lines written the plain way: join continuations, then each line by one regex."""
    joined: list[str] = []
    for piece in body.split("\r\n"):
        line = piece.strip()
        if line.startswith("(") and joined:
            joined[-1] += line
        elif line:
            joined.append(line)
    out: dict[str, tuple[str, ...]] = {}
    for line in joined:
        m = re.fullmatch(r"(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3})((?:\([^()]*\))+)", line)
        if m is None:
            return f"telegram has a line that is not an OBIS line: {line[:40]!r}"
        out[m.group(1)] = tuple(re.findall(r"\(([^()]*)\)", m.group(2)))
    return out


# Mostly good lines, so that many bodies read; some continuation, blank and bad ones.
_BODY_LINES = st.lists(
    st.tuples(
        st.sampled_from(["1-0:1.8.1"] * 4 + ["0-1:24.2.1"] * 4 + ["", "", "1-0:1.8", "x", " "]),
        st.lists(
            st.sampled_from(
                ["(12.5*kWh)"] * 8 + ["(0-0:96.7.19)"] * 4 + ["()", "(a b)", "(", ")", "(1\n2)"]
            ),
            min_size=1,
            max_size=3,
        ),
        st.sampled_from(["\r\n"] * 10 + ["\r\n\r\n", " \r\n", "\r", "\n", ""]),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_BODY_LINES)
def test_split_lines_equals_the_plain_reference(lines: list[tuple[str, list[str], str]]) -> None:
    # Lines, continuation lines (no code), blank ones and bad ones, in any order.
    body = "".join(code + "".join(groups) + end for code, groups, end in lines)
    got = split_lines(body)
    assert (got.reason if isinstance(got, FrameFault) else got) == split_lines_reference(body)


def test_luxembourg_smarty_encrypted_is_a_fault_naming_the_key() -> None:
    items = decoder().feed(SMARTY)
    assert not frames(items)
    assert "encrypted telegram (Luxembourg Smarty): needs the meter's key" in faults(items)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_a_smarty_stream_gives_only_the_key_fault_and_then_a_telegram_reads(chunk: int) -> None:
    d = decoder()
    stream = SMARTY * 3 + DSMR5
    got: list[Frame | FrameFault] = []
    for at in range(0, len(stream), chunk):
        got += d.feed(stream[at : at + chunk])
    assert set(faults(got)) == {"encrypted telegram (Luxembourg Smarty): needs the meter's key"}
    assert [f.quantities for f in frames(got)] == [DSMR5_EXPECTED]


def test_many_encrypted_frame_starts_in_one_chunk_do_not_crash() -> None:
    items = decoder().feed(b"\xdb\x08" * 3_000 + DSMR5)
    assert [f.quantities for f in frames(items)] == [DSMR5_EXPECTED]


def test_a_dsmr5_profile_refuses_a_telegram_without_crc() -> None:
    items = decoder("dsmr-5").feed(DSMR22)
    assert faults(items) == ["telegram has no CRC, and this meter's profile requires one"]


@pytest.mark.parametrize("at", [1, 7, 100, len(DSMR5) - 5, len(DSMR5) - 1])
def test_byte_chunks_of_any_size(at: int) -> None:
    d = decoder()
    got = d.feed(DSMR5[:at]) + d.feed(DSMR5[at:] + DSMR5)
    assert [f.quantities for f in frames(got)] == [DSMR5_EXPECTED, DSMR5_EXPECTED]
    assert not faults(got)


def test_bad_crc_gives_a_fault_and_no_reading() -> None:
    bad = DSMR5.replace(b"1-0:1.7.0(01.193*kW)", b"1-0:1.7.0(01.198*kW)")
    items = decoder().feed(bad)
    assert not frames(items)
    [reason] = faults(items)
    assert reason.startswith("telegram failed its CRC (sent E47C, computed ")


def test_partial_telegram_then_a_whole_one() -> None:
    items = decoder().feed(DSMR5[:500] + DSMR5)
    assert faults(items) == ["partial telegram: cut off before its end '!'"]
    assert [f.quantities for f in frames(items)] == [DSMR5_EXPECTED]


def test_7e1_bytes_read_as_8n1_are_noise() -> None:
    # A DSMR 2.2 meter (7E1) read at 8N1: each byte's even-parity bit lands in bit 7.
    def with_parity(b: int) -> int:
        return b | 0x80 if bin(b).count("1") % 2 else b

    wire = bytes(with_parity(b) for b in DSMR22)
    items = decoder("dsmr-2").feed(wire)
    assert not frames(items)
    assert any("wrong baud rate or framing" in r or "not ASCII" in r for r in faults(items))


def test_noise_gives_faults_and_no_reading() -> None:
    rng = random.Random(7)
    d = decoder()
    got: list[Frame | FrameFault] = []
    for _ in range(50):
        got += d.feed(bytes(rng.randrange(256) for _ in range(512)))
    assert not frames(got)
    assert faults(got)
    assert len(d._buffer) <= MAX_TELEGRAM_BYTES + 512


def test_a_telegram_missing_a_tariff_gives_no_sum() -> None:
    # Without 1-0:1.8.2 the import sum would be short by a whole tariff: leave it out.
    text = DSMR22.replace(b"1-0:1.8.2(00654.321*kWh)\r\n", b"")
    [frame] = decoder("dsmr-2").feed(text)
    assert isinstance(frame, Frame)
    assert "energy_import_wh" not in frame.quantities
    assert frame.quantities["energy_import_t1_wh"] == 123_456.0


def test_a_wrong_unit_is_a_fault() -> None:
    text = DSMR22.replace(b"(00123.456*kWh)", b"(00123.456*m3)")
    assert faults(decoder("dsmr-2").feed(text)) == ["1-0:1.8.1 is in 'm3', not Wh"]


# --- hypothesis on the edges ------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_arbitrary_bytes_never_crash_nor_read(chunks: list[bytes]) -> None:
    d = decoder()
    for chunk in chunks:
        for item in d.feed(chunk):
            assert isinstance(item, FrameFault)  # no CRC-valid telegram can come from this
            assert item.reason
        assert len(d._buffer) <= MAX_TELEGRAM_BYTES + 600


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(0, len(DSMR5) - 1),
    value=st.integers(0, 255),
    cuts=st.lists(st.integers(0, 2 * len(DSMR5)), max_size=5),
)
def test_a_corrupted_byte_never_gives_a_wrong_reading(
    position: int, value: int, cuts: list[int]
) -> None:
    stream = DSMR5[:position] + bytes([value]) + DSMR5[position + 1 :] + DSMR5
    d = decoder()
    got: list[Frame | FrameFault] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for a, b in itertools.pairwise(bounds):
        got += d.feed(stream[a:b])
    good = frames(got)
    # The whole telegram after it always comes through; the corrupted one only if unchanged.
    assert good and all(f.quantities == DSMR5_EXPECTED for f in good)
    assert len(good) == (2 if value == DSMR5[position] else 1)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=14),
        st.one_of(st.text(max_size=20), st.lists(st.text(max_size=20), max_size=3), st.integers()),
        max_size=4,
    )
)
def test_obis_map_refuses_bad_tables_in_one_sentence(raw: dict[str, object]) -> None:
    try:
        ObisMap.parse(raw)
    except ObisMapError as exc:
        assert str(exc).startswith("obis")
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"baud": 1200}, "baud must be one of"),
        ({"framing": "8E1"}, "framing must be 8N1 or 7E1"),
        ({"crc": "yes"}, "crc must be true or false"),
        ({"obis": {"1-0:1.8.1": "energy_wh"}}, "'energy_wh' is not for role grid"),
        ({"obis": {"1.8.1": "power_w"}}, "is not an OBIS code"),
        ({"obis": {"1-0:1.8.1": ["energy_import_wh", "power_w"]}}, "different units"),
        ({"obis": {"1-0:1.8.1": "state"}}, "is not a glossary number"),
        ({"points": []}, "points is not for P1 profiles"),
    ],
)
def test_p1_profile_mistakes_are_named(change: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"model": "m", "role": "grid", "kind": "p1",
                               "obis": {"1-0:1.7.0": "power_w"}}  # fmt: skip
    data.update(change)
    with pytest.raises(ProfileError, match=message):
        parse_profile("x", data)
