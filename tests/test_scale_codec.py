"""The hub's fast path for readings batches decides exactly as the general decoder does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import CodecError, decode, encode, encode_batch, encode_reading
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import GLOSSARY, Role, allowed_for

GOLDEN = Path(__file__).parent / "golden"
T0 = 1_782_900_000_000


def _general(raw: bytes) -> ReadingBatch:
    """What the general decoder alone makes of ``raw`` (raises CodecError)."""
    obj = codec.parse_json(raw)
    result: ReadingBatch = codec._decoder_for(ReadingBatch)(obj, "")
    return result


def _readings_json(batch: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, **batch}, separators=(",", ":")).encode()


def _golden() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((GOLDEN / "readings__three-devices.json").read_bytes())
    del obj["v"]
    return obj


def test_the_fast_path_takes_the_golden_batches() -> None:
    for name in ("readings__three-devices.json", "readings__compacted-aggregate.json"):
        raw = (GOLDEN / name).read_bytes()
        fast = codec._fast_readings_payload(raw)
        assert fast is not None, name
        assert fast == _general(raw)
        assert encode(fast) == raw


@pytest.mark.parametrize(
    "raw",
    [
        # a key repeated, with the same value: the dict hides it, the count of ':' does not
        b'{"v":1,"home":"h","home":"h","sent_ms":1782900000000,"readings":[]}',
        b'{"v":1,"home":"h","sent_ms":1782900000000,"readings":[{"device":"d","seq":1,'
        b'"seq":1,"ts_ms":1782900000000,"role":"grid","grant":"g1","quantities":{"power_w":1.0}}]}',
        b'{"v":1,"home":"h","sent_ms":1782900000000,"readings":[{"device":"d","seq":1,'
        b'"ts_ms":1782900000000,"role":"grid","grant":"g1",'
        b'"quantities":{"power_w":1.0,"power_w":1.0}}]}',
        b'{"v":1,"v":1,"home":"h","sent_ms":1782900000000,"readings":[{"device":"d","seq":1,'
        b'"ts_ms":1782900000000,"role":"grid","grant":"g1","quantities":{"power_w":1.0}}]}',
    ],
)
def test_duplicate_keys_anywhere_are_refused(raw: bytes) -> None:
    assert codec._fast_readings_payload(raw) is None
    with pytest.raises(CodecError, match=r"duplicate key|1 to 5000"):
        decode(ReadingBatch, raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["readings"][0]["quantities"].update(power_w=1e400), "Infinity"),
        (lambda o: o["readings"][0].update(device="a:b"), "must match"),
        (lambda o: o["readings"][1]["quantities"].update(state="mppt:x"), "lowercase word"),
        (lambda o: o["readings"][0].update(period_ms=None), "expected an integer"),
        (lambda o: o["readings"][0].update(role=["grid"]), "expected one of"),
        (lambda o: o.update(home=7), "expected a string"),
        (lambda o: o["readings"][0]["quantities"].update(power_w=True), "float or str"),
    ],
)
def test_what_the_fast_path_leaves_the_general_decoder_refuses(mutate: Any, message: str) -> None:
    obj = _golden()
    mutate(obj)
    raw = json.dumps({"v": 1, **obj}).encode()  # NaN and 1e400 as Python writes them
    assert codec._fast_readings_payload(raw) is None
    with pytest.raises(CodecError, match=message):
        decode(ReadingBatch, raw)


def test_an_integer_beyond_any_float_is_refused_not_a_crash() -> None:
    obj = _golden()
    raw = _readings_json(obj).replace(b"-1204.5", b"1" + b"0" * 400)
    with pytest.raises(CodecError, match="out of range"):
        decode(ReadingBatch, raw)


_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,6}", fullmatch=True)
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    st.integers(min_value=-(10**6), max_value=10**6),
)


@st.composite
def _readings(draw: st.DrawFn) -> Reading:
    role = draw(st.sampled_from(list(Role)))
    names = [n for n in GLOSSARY if allowed_for(role, n) and n != "state"]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=5, unique=True))
    quantities: dict[str, float | str] = {n: draw(_values) for n in chosen}
    if draw(st.booleans()):
        quantities["state"] = draw(st.sampled_from(["mppt", "off", "shutting-down"]))
    return Reading(
        device=draw(_ids),
        seq=draw(st.integers(1, 2**53 - 1)),
        ts_ms=draw(st.integers(946_684_800_000, 4_102_444_799_999)),
        role=role,
        grant=draw(_ids),
        quantities=quantities,
        period_ms=draw(st.one_of(st.none(), st.integers(0, 31 * 86_400_000))),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_readings(), min_size=1, max_size=6))
def test_any_valid_batch_decodes_the_same_both_ways(readings: list[Reading]) -> None:
    raw = encode_batch("home-1", T0, [encode_reading(r) for r in readings])
    fast = codec._fast_readings_payload(raw)
    assert fast is not None
    assert fast == _general(raw)  # integer quantities become floats either way


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_paths = st.sampled_from(
    [("home",), ("sent_ms",), ("readings",), ("readings", 0), ("readings", 0, "seq"),
     ("readings", 0, "device"), ("readings", 0, "role"), ("readings", 0, "quantities"),
     ("readings", 0, "period_ms"), ("readings", 1, "quantities", "state"),
     ("readings", 0, "quantities", "power_w"), ("readings", 2, "grant"), ("extra",)]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_paths, _json)
def test_the_fast_path_never_accepts_what_the_general_decoder_refuses(
    path: tuple[str | int, ...], value: Any
) -> None:
    obj: Any = _golden()
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    raw = json.dumps({"v": 1, **obj}).encode()
    fast = codec._fast_readings_payload(raw)
    try:
        general = _general(raw)
    except CodecError:
        assert fast is None
        return
    if fast is not None:
        assert fast == general


@given(_readings())
def test_encode_reading_writes_what_encode_writes_inside_a_batch(reading: Reading) -> None:
    batch = encode(ReadingBatch("home-1", T0, [reading]))
    assert batch == encode_batch("home-1", T0, [encode_reading(reading)])
