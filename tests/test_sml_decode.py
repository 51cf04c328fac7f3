"""SML from a meter's optical port: transport framing, TLV decoding, the OBIS table, the composer.

Expected values come from outside the decoder: two published meter dumps worked by hand below
(sources in tests/fixtures/sml/README.md), the sml-rs project's transport vectors, the CRC
catalogue's check value, and the simulator's composer (sim/sml_frames.py, its own OBIS table).
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.push_frames import Frame, FrameFault
from agent.sml_decode import SmlDecoder
from agent.sml_obis import default_table_path, load_table, parse_table
from agent.sml_transport import BEGIN, ESCAPE, MAX_FRAME_BYTES, SmlTransportReader, crc16_x25
from protocol.config_tables import ConfigError
from sim.sml_frames import QUANTITY_OBIS, Entry, compose_file, quantity_entries, wrap
from sim.sml_frames import crc16_x25 as sim_crc16_x25

FIXTURES = Path(__file__).parent / "fixtures" / "sml"
TABLE = load_table()


def fixture(name: str) -> bytes:
    return bytes.fromhex("".join((FIXTURES / name).read_text().split()))


EASYMETER = fixture("easymeter-q3ba1022.hex")
ISKRA = fixture("iskra-isk00047a5544.hex")
ISKRA_EXPORT = fixture("iskra-mt691-export.hex")
ISKRA_BAD_CRC = fixture("iskra-bad-crc.hex")
ISKRA_CUT = fixture("iskra-cut-short.hex")


def frames(items: list[Frame | FrameFault]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def faults(items: list[Frame | FrameFault]) -> list[FrameFault]:
    return [i for i in items if isinstance(i, FrameFault)]


def decode(data: bytes) -> list[Frame | FrameFault]:
    return SmlDecoder(TABLE).feed(data)


# --- published examples, worked by hand -----------------------------------------------------


def test_easymeter_q3ba1022_frame_decodes_to_the_hand_worked_counters() -> None:
    """EasyMeter Q3BA1022 (jSML's test frame). The GetListResponse's entries, from the hex:

    ``77 07 0100010800ff 01 01 62 1e 52 fc 69 0000001408499d07 01``: 1-0:1.8.0, unit 0x1e = 30
    (Wh), scaler 0xfc = -4, u64 0x1408499d07 = 86 038 387 975 -> 8 603 838.7975 Wh.
    ``0100020800ff ... 52 fc 69 00000021e2bd9183``: 2-8-0, 0x21e2bd9183 = 145 537 995 139
    -> 14 553 799.5139 Wh.
    ``0100010801ff ... 62 1e 52 01 65 000d2057``: 1.8.1, scaler +1, 0x0d2057 = 860 247
    -> 8 602 470 Wh; 1.8.2 ``65 00000088`` = 136 -> 1 360 Wh; 2.8.1 ``65 0016348d`` = 1 455 245
    -> 14 552 450 Wh; 2.8.2 ``65 00000086`` = 134 -> 1 340 Wh (the tariffs add up to the sums
    within the scaler's 10 Wh). 1-0:1.7.0 (``62 1b 52 fe 55 00002ac8``, 109.52 W) is import-only
    power, not in the table, so there is no power_w: like a PIN-locked meter, counters only.
    No 96.1.0 entry: the id is the server ID ``0b 06 4553590104c5fa2ef7``. Sensor time is a
    seconds index (``72 62 01 65 0b1a8247``), not a clock, so no meter timestamp.
    """
    out = decode(EASYMETER)
    assert out == [
        Frame(
            {
                "energy_import_wh": 8603838.7975,
                "energy_export_wh": 14553799.5139,
                "energy_import_t1_wh": 8602470.0,
                "energy_import_t2_wh": 1360.0,
                "energy_export_t1_wh": 14552450.0,
                "energy_export_t2_wh": 1340.0,
            },
            meter_id="064553590104c5fa2ef7",
            meter_ts_ms=None,
        )
    ]


def test_iskra_frame_decodes_to_the_hand_worked_values() -> None:
    """ISKRA meter (sml-rs's `real_data`). GetListResponse entries, from the hex:

    ``77 07 0100600100ff 01 01 01 01 0b 0a0149534b00047a5544 01``: 96.1.0, the meter id as 10
    octets (0a 01 "ISK" 00 04 7a 55 44, not printable, so hex).
    ``77 07 0100010800ff 65 00100104 01 62 1e 52 ff 65 000c1361 01``: 1.8.0 with a status word,
    Wh, scaler -1, 0x0c1361 = 791 393 -> 79 139.3 Wh.
    ``77 07 0100020800ff 01 01 62 1e 52 ff 62 00 01``: 2.8.0 = 0 Wh.
    ``77 07 0100100700ff 01 01 62 1b 52 00 53 0860 01``: 16.7.0, W (0x1b = 27), scaler 0, int16
    0x0860 = 2 144 W (+: importing).
    """
    assert decode(ISKRA) == [
        Frame(
            {"energy_import_wh": 79139.3, "energy_export_wh": 0.0, "power_w": 2144.0},
            meter_id="0a0149534b00047a5544",
        )
    ]


def test_iskra_mt691_exporting_decodes_to_negative_power() -> None:
    """ISKRA MT691 feeding in (atc1441/OBI_Energy_Tracker_Local_Cloud issue #12), from the hex:

    ``77 07 0100010800ff 65 001c2904 01 62 1e 52 ff 65 00eff8ad 01``: 1.8.0, Wh, scaler -1,
    0xeff8ad = 15 726 765 -> 1 572 676.5 Wh. ``0100020800ff 01 01 62 1e 52 ff 65 00571811``:
    2.8.0, 0x571811 = 5 707 793 -> 570 779.3 Wh. ``0100100700ff 01 01 62 1b 52 00 53 fe5f``:
    16.7.0, W, int16 0xfe5f = -417 -> -417 W (exporting). The 96.1.0 id ``0a0149534b0000000000``
    has its serial zeroed by the poster.
    """
    assert decode(ISKRA_EXPORT) == [
        Frame(
            {"energy_import_wh": 1572676.5, "energy_export_wh": 570779.3, "power_w": -417.0},
            meter_id="0a0149534b0000000000",
        )
    ]


def test_crc_is_x25_with_the_catalogue_check_value() -> None:
    """CRC-16/X-25's check value in the CRC RevEng catalogue: "123456789" -> 0x906e."""
    assert crc16_x25(b"123456789") == 0x906E


@settings(max_examples=200)
@given(data=st.binary(max_size=600))
def test_crc_agrees_with_the_simulator_s_bit_by_bit_crc(data: bytes) -> None:
    assert crc16_x25(data) == sim_crc16_x25(data)


@pytest.mark.parametrize(
    ("frame_hex", "body_hex"),
    [  # felixwrt/sml-rs src/transport.rs: tests basic, padding, escape_in_user_data
        ("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b", "12345678"),
        ("1b1b1b1b 01010101 12345600 1b1b1b1b 1a0191a5", "123456"),
        ("1b1b1b1b 01010101 12 1b1b1b1b 1b1b1b1b 000000 1b1b1b1b 1a03be25", "121b1b1b1b"),
    ],
)
def test_transport_unwraps_published_vectors_and_the_composer_rebuilds_them(
    frame_hex: str, body_hex: str
) -> None:
    frame, body = bytes.fromhex(frame_hex.replace(" ", "")), bytes.fromhex(body_hex)
    assert SmlTransportReader().feed(frame) == [body]
    assert wrap(body) == frame


@pytest.mark.parametrize(
    "frame", [EASYMETER, ISKRA, ISKRA_EXPORT], ids=["easymeter", "iskra", "iskra-export"]
)
def test_composer_wraps_published_bodies_byte_for_byte(frame: bytes) -> None:
    """The composer's transport layer gives the meters' own frames back from their bodies."""
    padding = frame[-3]
    body = frame[8 : len(frame) - 8 - padding]
    assert wrap(body) == frame


# --- faults ---------------------------------------------------------------------------------


def test_a_bit_flipped_in_a_value_is_a_crc_fault_not_a_reading() -> None:
    """iskra-bad-crc.hex has 16.7.0 = 0x0861 (2145 W) where the meter sent 0x0860."""
    out = decode(ISKRA_BAD_CRC)
    assert out == [FrameFault("SML frame failed its CRC check")]


def test_a_frame_cut_short_is_a_fault_and_the_next_frame_still_decodes() -> None:
    out = decode(ISKRA_CUT + ISKRA)
    assert len(out) == 2
    assert isinstance(out[0], FrameFault) and "cut short" in out[0].reason
    assert out[1] == decode(ISKRA)[0]


def test_a_partial_frame_waits_for_the_rest_across_feeds() -> None:
    decoder = SmlDecoder(TABLE)
    assert decoder.feed(ISKRA_CUT) == []
    assert decoder.feed(ISKRA[len(ISKRA_CUT) :]) == decode(ISKRA)


@pytest.mark.parametrize("frame", [EASYMETER, ISKRA], ids=["easymeter", "iskra"])
def test_a_frame_split_at_every_byte_boundary_decodes_identically(frame: bytes) -> None:
    whole = decode(frame + frame)
    for cut in range(1, 2 * len(frame)):
        decoder = SmlDecoder(TABLE)
        stream = frame + frame
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole, cut
    decoder = SmlDecoder(TABLE)
    assert [f for b in frame + frame for f in decoder.feed(bytes([b]))] == whole


def test_noise_is_reported_once_per_feed_and_the_buffer_stays_bounded() -> None:
    rng = random.Random(22)
    noise = bytes(rng.randrange(256) for _ in range(50_000)).replace(b"\x1b", b"\x00")
    decoder = SmlDecoder(TABLE)
    out = decoder.feed(noise)
    assert out == [FrameFault(f"skipped {len(noise) - 7} bytes outside any SML frame")]
    assert decoder.buffered <= 7
    # a frame start followed by endless noise: dropped once the buffer holds MAX_FRAME_BYTES
    out = decoder.feed(BEGIN + noise)
    assert not frames(out)
    assert any("no end within" in f.reason for f in faults(out))
    assert decoder.buffered <= MAX_FRAME_BYTES
    assert frames(decoder.feed(ISKRA)) == frames(decode(ISKRA))


def test_an_unknown_escape_sequence_is_a_fault() -> None:
    out = decode(BEGIN + b"\x76\x00\x00\x00" + ESCAPE + b"\x02\x02\x02\x02")
    assert out == [FrameFault("SML frame has an unknown escape sequence 1b1b1b1b02020202")]


NOISE_PIECES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([BEGIN, ESCAPE, ESCAPE + b"\x1a", b"\x1a\x00", b"\x76", b"\x00" * 4]),
)


@settings(max_examples=300)
@given(pieces=st.lists(NOISE_PIECES, max_size=40), cuts=st.lists(st.integers(0, 3000)))
def test_any_byte_stream_never_raises_and_never_yields_a_frame(
    pieces: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pieces)
    decoder = SmlDecoder(TABLE, max_frame_bytes=512)
    out: list[Frame | FrameFault] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = max(start, cut)
    assert frames(out) == []
    assert decoder.buffered <= 512


@settings(max_examples=200)
@given(
    pieces=st.lists(
        st.one_of(NOISE_PIECES, st.sampled_from([EASYMETER, ISKRA])), min_size=1, max_size=12
    )
)
def test_every_frame_out_of_a_noisy_stream_is_one_the_meter_sent(pieces: list[bytes]) -> None:
    """Noise can cost a real frame (its bytes may join a false start), never invent one."""
    good = {bytes(EASYMETER): decode(EASYMETER)[0], bytes(ISKRA): decode(ISKRA)[0]}
    out = frames(decode(b"".join(pieces)))
    assert len(out) <= sum(p in good for p in pieces)
    assert all(f in good.values() for f in out)


@settings(max_examples=100)
@given(noise=st.binary(max_size=300).map(lambda b: b.replace(b"\x1b", b"")))
def test_a_frame_after_noise_without_escape_bytes_always_decodes(noise: bytes) -> None:
    assert frames(decode(noise + ISKRA)) == frames(decode(ISKRA))


@settings(max_examples=300)
@given(data=st.data())
def test_any_single_byte_changed_in_a_frame_gives_no_frame(data: st.DataObject) -> None:
    frame = data.draw(st.sampled_from([EASYMETER, ISKRA]))
    index = data.draw(st.integers(0, len(frame) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = bytearray(frame)
    changed[index] ^= flip
    assert frames(decode(bytes(changed))) == []


# --- the composer and the decoder against each other ---------------------------------------


def _amounts(name: str) -> st.SearchStrategy[float]:
    _code, _unit, scaler, signed = QUANTITY_OBIS[name]
    lo = -(10**9) if signed else 0
    return st.integers(lo, 10**12).map(lambda n: float(Decimal(n).scaleb(scaler)))


QUANTITY_DICTS = st.sets(st.sampled_from(sorted(QUANTITY_OBIS))).flatmap(
    lambda names: st.fixed_dictionaries({n: _amounts(n) for n in sorted(names)})
)


@settings(max_examples=200)
@given(
    quantities=QUANTITY_DICTS,
    meter_id=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    transaction=st.integers(0, 2**30),
)
def test_composed_quantities_round_trip_through_the_decoder(
    quantities: dict[str, float], meter_id: str | None, transaction: int
) -> None:
    raw_id = None if meter_id is None else meter_id.encode()
    frame = compose_file(quantity_entries(quantities, raw_id), transaction=transaction)
    out = decode(frame)
    assert len(out) == 1 and isinstance(out[0], Frame)
    assert out[0].quantities == quantities
    if meter_id is not None:
        assert out[0].meter_id == meter_id


ENERGY_IMPORT = bytes([1, 0, 1, 8, 0, 255])
SIM_ID = "0a0153494d0000000001"  # the composer's default server ID, 0a 01 "SIM" 00 00000001
POWER = bytes([1, 0, 16, 7, 0, 255])


@settings(max_examples=200)
@given(value=st.integers(0, 2**64 - 1), scaler=st.integers(-9, 9))
def test_any_scaler_is_applied_exactly(value: int, scaler: int) -> None:
    """Counters sent in 0.1 Wh (scaler -1), in kWh (scaler 3), or anything between."""
    out = decode(compose_file([Entry(ENERGY_IMPORT, value, unit=30, scaler=scaler)]))
    assert out == [Frame({"energy_import_wh": float(Decimal(value).scaleb(scaler))}, SIM_ID)]


def test_counters_in_kwh_and_tenths_of_wh_decode_to_wh() -> None:
    entries = [
        Entry(ENERGY_IMPORT, 12_345, unit=30, scaler=3),  # 12 345 kWh
        Entry(bytes([1, 0, 2, 8, 0, 255]), 67_891, unit=30, scaler=-1),  # 6 789.1 Wh
    ]
    (frame,) = decode(compose_file(entries))
    assert isinstance(frame, Frame)
    assert frame.quantities == {"energy_import_wh": 12_345_000.0, "energy_export_wh": 6789.1}


def test_a_value_in_an_unexpected_unit_is_a_fault_for_that_value_only() -> None:
    entries = [
        Entry(ENERGY_IMPORT, 1000, unit=30, scaler=0),
        Entry(POWER, 500, unit=33, scaler=0, signed=True),  # amperes where watts belong
    ]
    out = decode(compose_file(entries))
    assert out[0] == Frame({"energy_import_wh": 1000.0}, SIM_ID)
    assert out[1:] == [
        FrameFault("SML value 1-0:16.7.0*255 (power_w) came in unit code 33, not 27; dropped")
    ]


def test_a_pin_locked_meter_sends_empty_power_and_decodes_to_counters_only() -> None:
    entries = [
        Entry(ENERGY_IMPORT, 51_234, unit=30, scaler=-1),
        Entry(POWER, None, unit=27, scaler=0),  # value left out until the PIN is entered
    ]
    assert decode(compose_file(entries)) == [Frame({"energy_import_wh": 5123.4}, SIM_ID)]


def test_a_utc_sensor_time_is_the_meter_timestamp_and_a_seconds_index_is_not() -> None:
    """SML_Time choice 2 is UTC seconds (SML 1.04 section 6.3.2); choice 1 counts from power-up."""
    entries = quantity_entries({"power_w": 100.0})
    (utc,) = decode(compose_file(entries, utc_seconds=1_764_633_600))  # 2025-12-02 00:00 UTC
    (index,) = decode(compose_file(entries, seconds_index=1_764_633_600))
    assert isinstance(utc, Frame) and utc.meter_ts_ms == 1_764_633_600_000
    assert isinstance(index, Frame) and index.meter_ts_ms is None


@pytest.mark.parametrize("size", [14, 15, 16, 300])  # one-, two- and three-byte length fields
def test_long_octet_strings_decode(size: int) -> None:
    meter_id = "".join(chr(65 + i % 26) for i in range(size))
    (frame,) = decode(compose_file(quantity_entries({}, meter_id.encode())))
    assert isinstance(frame, Frame) and frame.meter_id == meter_id


def test_export_is_negative_power() -> None:
    (frame,) = decode(compose_file(quantity_entries({"power_w": -1234.0})))
    assert isinstance(frame, Frame) and frame.quantities == {"power_w": -1234.0}


# --- the OBIS table -------------------------------------------------------------------------


def test_the_default_table_maps_the_issue_s_codes() -> None:
    names = {v.quantity for v in TABLE.values()}
    assert names == set(QUANTITY_OBIS) | {"meter_id"}
    assert {k.hex(): v.quantity for k, v in TABLE.items() if v.quantity == "meter_id"} == {
        "0100000009ff": "meter_id",
        "0100600100ff": "meter_id",
    }
    assert default_table_path().is_file()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"obis": "1-0:1.8", "quantity": "energy_import_wh", "unit": "Wh"}],
         "values[1].obis: '1-0:1.8' is not an OBIS code like '1-0:1.8.0'"),
        ([{"obis": "1-0:1.8.0", "quantity": "energy_import_wh", "unit": "W"}],
         "values[1].quantity 'energy_import_wh' is not in W"),
        ([{"obis": "1-0:1.8.0", "quantity": "energy_import_wh"}],
         "values[1].unit is missing (one of Wh, W, V, A, Hz)"),
        ([{"obis": "1-0:1.8.0", "quantity": "energy_import_wh", "unit": "kWh"}],
         "values[1].unit must be one of 'Wh', 'W', 'V', 'A', 'Hz', got a string"),
        ([{"obis": "1-0:0.0.9", "quantity": "meter_id", "unit": "W"}],
         "values[1].unit must not be set for meter_id (it is text)"),
        ([{"obis": "1-0:1.8.0", "quantity": "energy_import_wh", "unit": "Wh", "scale": 1}],
         "unknown key values[1].scale (allowed: obis, quantity, unit)"),
        ([{"obis": "1-0:1.8.0", "quantity": "energy_import_wh", "unit": "Wh"},
          {"obis": "1-0:1.8.0", "quantity": "energy_export_wh", "unit": "Wh"}],
         "values[2].obis '1-0:1.8.0' is listed twice"),
        ([], "values is missing: add at least one [[values]] table"),
    ],
)  # fmt: skip
def test_a_bad_table_is_one_sentence_naming_the_key(rows: list[object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_table({"values": rows})
    assert str(err.value) == message


TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
).filter(lambda v: v is not None)


@settings(max_examples=150)
@given(
    data=st.dictionaries(
        st.sampled_from(["values", "x"]),
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "obis": st.sampled_from(["1-0:1.8.0", "1-0:999.8.0", "x"]) | TOML_VALUES,
                    "quantity": st.sampled_from(["power_w", "meter_id", "Bad"]) | TOML_VALUES,
                    "unit": st.sampled_from(["W", "Wh", "kWh"]) | TOML_VALUES,
                },
            ),
            max_size=3,
        )
        | TOML_VALUES,
    )
)
def test_any_table_data_loads_or_is_a_config_error(data: dict[str, object]) -> None:
    try:
        parse_table(data)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# --- SML bodies behind a right transport CRC ------------------------------------------------


def test_a_wrong_message_crc_is_a_fault_though_the_transport_crc_is_right() -> None:
    """ISKRA body with the GetListResponse's CRC (``63 8e71`` before its ``00``) changed."""
    body = ISKRA[8:-8]
    assert body.count(bytes.fromhex("638e7100")) == 1
    out = decode(wrap(body.replace(bytes.fromhex("638e7100"), bytes.fromhex("638e7200"))))
    assert out == [FrameFault("SML message 2 failed its CRC check")]


@settings(max_examples=300)
@given(body=st.binary(max_size=400))
def test_any_body_behind_a_right_transport_crc_never_raises_or_yields_a_frame(body: bytes) -> None:
    out = decode(wrap(body))
    assert len(out) >= 1 and frames(out) == []


@settings(max_examples=300)
@given(data=st.data())
def test_any_byte_changed_in_an_sml_body_is_caught_by_the_sml_layer(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from([EASYMETER[8:-9], ISKRA[8:-8]]))  # less padding and end
    index = data.draw(st.integers(0, len(body) - 1))
    changed = bytearray(body)
    changed[index] ^= data.draw(st.integers(1, 255))
    assert frames(decode(wrap(bytes(changed)))) == []
