"""The wire contract: golden payloads round-trip; the decoder refuses all else clearly."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import MAX_PAYLOAD_BYTES, CodecError, decode, decode_message, encode
from protocol.payloads import (
    Ack,
    Forecast,
    HomeStatus,
    Reading,
    ReadingBatch,
    Statement,
    seq_ranges,
)
from protocol.quantities import GLOSSARY, Role
from protocol.session import parse_broker_url
from protocol.topics import (
    HomeTopic,
    HubTopic,
    TopicError,
    home_filter,
    home_topic,
    hub_topic,
    parse_topic,
)
from tests.golden_payloads import DELETE, GOLDEN, edited, golden_json
from tests.times import JULY_1_2026_1000_UTC_MS

COOP, HOME = "test-coop", "home-1"
T0 = JULY_1_2026_1000_UTC_MS


def _topic_for(file: Path) -> str:
    kind = file.name.split("__")[0]
    if kind.startswith("hub-"):
        return hub_topic(COOP, HubTopic(kind.removeprefix("hub-")))
    return home_topic(COOP, HOME, HomeTopic(kind))


@pytest.mark.parametrize("file", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_payloads_round_trip_byte_for_byte(file: Path) -> None:
    raw = file.read_bytes()
    _, payload = decode_message(_topic_for(file), raw)
    assert encode(payload) == raw


def _decode_readings(obj: object) -> ReadingBatch:
    _, batch = decode_message(home_topic(COOP, HOME, HomeTopic.READINGS), json.dumps(obj).encode())
    assert isinstance(batch, ReadingBatch)
    return batch


def test_golden_reading_values_and_types() -> None:
    batch = _decode_readings(golden_json("readings__three-devices"))
    grid = batch.readings[0]
    assert grid.role is Role.GRID
    assert grid.quantities["power_w"] == -1204.5
    assert batch.readings[1].quantities["state"] == "mppt"
    # An integer on the wire is still a float quantity.
    assert isinstance(batch.readings[2].quantities["power_w"], float)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["v"], 2, "unsupported wire version"),
        (["v"], "1", "unsupported wire version"),
        (["v"], DELETE, "unsupported wire version"),
        (["home"], DELETE, "missing field 'home'"),
        (["surprise"], 1, "unknown field 'surprise'"),
        (["readings", 0, "extra"], 1, "unknown field 'extra'"),
        (["readings", 0, "seq"], 1.5, "expected an integer"),
        (["readings", 0, "seq"], True, "expected an integer"),
        (["readings", 0, "seq"], 0, "seq 0 out of range"),
        (["readings", 0, "ts_ms"], 1_782_900_000, "epoch milliseconds"),
        (["readings", 0, "device"], "Grid_Meter", "must match"),
        (["readings", 0, "device"], "a" * 33, "must match"),
        (["readings", 0, "role"], "solar", "expected one of"),
        (["readings", 0, "quantities", "power_w"], "12", "finite number"),
        (["readings", 0, "quantities", "power_w"], True, "expected float or str"),
        (["readings", 0, "quantities", "power_w"], None, "expected float or str"),
        (["readings", 0, "quantities", "power_w"], 1e300, "finite number"),
        (["readings", 0, "quantities", "energy_wh"], 1.0, "not allowed on a grid device"),
        (["readings", 0, "quantities", "watts"], 1.0, "not allowed"),
        (["readings", 1, "quantities", "state"], "MPPT!", "short lowercase word"),
        (["readings", 0, "quantities"], {}, "carries no quantities"),
        (["readings"], [], "1 to 5000 readings"),
        (["readings"], {}, "expected a list"),
    ],
)
def test_decoder_rejects_with_a_message_naming_the_problem(
    path: list[str | int], value: Any, message: str
) -> None:
    with pytest.raises(CodecError, match=message):
        _decode_readings(edited(golden_json("readings__three-devices"), path, value))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 1, "v": 1}', "duplicate key"),
        (b'{"v": 1, "home": NaN}', "NaN is not allowed"),
        (b'{"v": 1, "home": -Infinity}', "Infinity is not allowed"),
        (b"[" * 100_000, "nested too deeply|not JSON"),
        (b'{"v": 1, "home": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
    ],
)
def test_decoder_rejects_malformed_json(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(ReadingBatch, raw)


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"first": "2026-07-01", "last": "2026-07-02"}, "outside 2026-06"),
        ({"first": "2026-06-10", "last": "2026-06-09"}, "ends .* before it begins"),
        ({"first": "2026-06-31", "last": "2026-06-31"}, "not a date"),
        ({"first": "2026-6-1", "last": "2026-06-02"}, "not YYYY-MM-DD"),
        ({"scheme": "XYZ"}, "not a scheme id"),
        ({"mechanism": "fifo"}, "expected one of"),
        ({"first": "2026-06-14", "last": "2026-06-20"}, "overlap"),  # into the second span
        ({"key": ""}, "key is not 1 to 64 printable"),
        ({"key": "k" * 65}, "key is not 1 to 64 printable"),
        ({"key": "dynamic\nkey"}, "key is not 1 to 64 printable"),
        ({"grid_prices": "flat"}, "expected one of"),
        ({"metered_by": "hub"}, "expected one of"),
    ],
)
def test_a_statement_s_pricing_is_checked(span: dict[str, str], message: str) -> None:
    data = golden_json("statement__two-schemes")
    data["pricing"][0].update(span)
    with pytest.raises(CodecError, match=message):
        decode(Statement, json.dumps(data).encode())


def test_nan_inside_readings_is_rejected() -> None:
    raw = (GOLDEN / "readings__three-devices.json").read_bytes().replace(b"231.4", b"NaN")
    with pytest.raises(CodecError, match="NaN"):
        decode(ReadingBatch, raw)


def test_oversized_payload_is_rejected_before_parsing() -> None:
    with pytest.raises(CodecError, match="exceeds"):
        decode(ReadingBatch, b" " * (MAX_PAYLOAD_BYTES + 1))


def test_topic_home_must_match_payload_home() -> None:
    raw = (GOLDEN / "readings__three-devices.json").read_bytes()
    with pytest.raises(CodecError, match="differs from topic home"):
        decode_message(home_topic(COOP, "home-2", HomeTopic.READINGS), raw)


def test_hub_status_coop_must_match_topic() -> None:
    raw = (GOLDEN / "hub-status__online.json").read_bytes()
    with pytest.raises(CodecError, match="differs from topic coop"):
        decode_message(hub_topic("other-coop", HubTopic.STATUS), raw)


@pytest.mark.parametrize(
    "topic",
    [
        "coopwatt/c1/homes/h1",
        "coopwatt/c1/homes/h1/readings/extra",
        "coopwatt/c1/homes/H1/readings",
        "coopwatt/c1/homes/h1/nonsense",
        "coopwatt/c1/hub/readings",
        "other/c1/homes/h1/readings",
        "coopwatt/c 1/hub/status",
        "coopwatt/+/homes/#",
    ],
)
def test_parse_topic_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_topic_builders_and_parser_agree() -> None:
    t = home_topic("c1", "h-9", HomeTopic.ACK)
    assert t == "coopwatt/c1/homes/h-9/ack"
    a = parse_topic(t)
    assert (a.coop, a.home, a.kind) == ("c1", "h-9", HomeTopic.ACK)
    assert parse_topic(hub_topic("c1", HubTopic.FORECAST)).kind is HubTopic.FORECAST
    assert home_filter("c1", HomeTopic.READINGS) == "coopwatt/c1/homes/+/readings"
    with pytest.raises(ValueError, match="must match"):
        home_topic("c1", "h/#", HomeTopic.READINGS)


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_decoder_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    for cls in (ReadingBatch, Ack, HomeStatus):
        with contextlib.suppress(CodecError):
            decode(cls, raw)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
@settings(max_examples=300)
def test_decoder_never_crashes_on_arbitrary_json(obj: Any) -> None:
    for wrapped in (obj, {"v": 1, **obj} if isinstance(obj, dict) else obj):
        with contextlib.suppress(CodecError):
            decode_message(home_topic(COOP, HOME, HomeTopic.READINGS), json.dumps(wrapped).encode())


_float_q = sorted(
    n for n, q in GLOSSARY.items() if q.kind is float and (q.roles is None or Role.GRID in q.roles)
)


@given(
    seq=st.integers(1, 2**53 - 1),
    ts=st.integers(946_684_800_000, 4_102_444_799_999),
    values=st.dictionaries(
        st.sampled_from(_float_q), st.floats(-1e12, 1e12, allow_nan=False), min_size=1
    ),
)
def test_any_valid_reading_round_trips(seq: int, ts: int, values: dict[str, float | str]) -> None:
    batch = ReadingBatch(HOME, ts, [Reading("grid-meter", seq, ts, Role.GRID, "g1", values)])
    _, back = decode_message(home_topic(COOP, HOME, HomeTopic.READINGS), encode(batch))
    assert back == batch


@given(st.lists(st.integers(1, 200), max_size=60))
def test_seq_ranges_cover_exactly_the_seqs(seqs: list[int]) -> None:
    ranges = seq_ranges(seqs)
    ack = Ack(HOME, {"d": ranges} if ranges else {})
    assert ack.seqs("d") == sorted(set(seqs))
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))


def test_encode_refuses_values_json_cannot_carry() -> None:
    status = HomeStatus(HOME, "online", ts_ms=T0)
    assert b'"devices"' not in encode(status)  # None fields are left out, not sent as null
    with pytest.raises(ValueError, match="finite number"):
        Reading("grid-meter", 1, T0, Role.GRID, "g1", {"power_w": float("nan")})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://hub", (False, "hub", 1883)),
        ("mqtts://hub", (True, "hub", 8883)),
        ("mqtt://127.0.0.1:1884", (False, "127.0.0.1", 1884)),
    ],
)
def test_broker_urls(url: str, expected: tuple[bool, str, int]) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://hub", "mqtt://", "mqtt://hub:0", "mqtt://hub:99999", "mqtt://u:p@hub"]
)
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError, match="broker"):
        parse_broker_url(url)


_FORECAST_GOLDEN = json.loads((GOLDEN / "hub-forecast__selected.json").read_text(encoding="utf-8"))


_names = st.from_regex(r"[A-Za-z0-9+_ -]{0,40}", fullmatch=True)


@given(basis=_json_values | st.dictionaries(_names, _names, max_size=10))
@settings(max_examples=300)
def test_a_forecast_basis_is_a_small_map_of_names_or_a_clear_refusal(basis: Any) -> None:
    """Whatever ``basis`` a hub (or an impostor) sends, the decoder either returns a map of at
    most 8 band names to forecaster names, or refuses with a CodecError; never anything else."""
    obj = json.loads(json.dumps(_FORECAST_GOLDEN))
    obj["demand"]["basis"] = basis
    topic = hub_topic(COOP, HubTopic.FORECAST)
    try:
        _, msg = decode_message(topic, json.dumps(obj).encode())
    except CodecError:
        return
    assert isinstance(msg, Forecast) and isinstance(msg.demand.basis, dict)
    assert 1 <= len(msg.demand.basis) <= 8
    for band, name in msg.demand.basis.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9+_-]{0,31}", band)
        assert re.fullmatch(r"[a-z0-9][a-z0-9+_-]{0,31}", name)
