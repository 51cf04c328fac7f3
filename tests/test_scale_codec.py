"""The hub's fast paths for readings batches decide exactly as the general decoder does.

Two of them, both msgspec: ``_fast_readings().batch`` for ``decode(ReadingBatch)`` and
``_fast_readings().columns`` for ``decode_columns`` (the hub's ingest: ReadingColumns). Each
only ever accepts; what it returns None for goes to the general decoder, which words the refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import (
    CodecError,
    HomeMismatchError,
    decode,
    decode_columns,
    decode_stored_message,
    encode,
    encode_batch,
    encode_reading,
)
from protocol.payloads import ROW_QUANTITIES, Ack, Reading, ReadingBatch, ReadingColumns
from protocol.quantities import GLOSSARY, Role, allowed_for
from tests.golden_payloads import GOLDEN, golden_json
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS


def _general(raw: bytes) -> ReadingBatch:
    """What the general decoder alone makes of ``raw`` (raises CodecError)."""
    obj = codec.parse_json(raw)
    result: ReadingBatch = codec._decoder_for(ReadingBatch)(obj, "")
    return result


def _fast_columns(raw: bytes) -> ReadingColumns | None:
    return codec._fast_readings().columns(raw)


def _decides_as_general(raw: bytes) -> None:
    """Both fast paths accept what the general decoder accepts, the same readings, and
    nothing else; decode and decode_columns refuse in the general decoder's words."""
    fast, rows = codec._fast_readings().batch(raw), _fast_columns(raw)
    try:
        general = _general(raw)
    except CodecError as exc:
        assert fast is None
        assert rows is None
        for decoder in (lambda: decode(ReadingBatch, raw), lambda: decode_columns(raw)):
            with pytest.raises(CodecError) as refused:
                decoder()
            assert str(refused.value) == str(exc)
        return
    assert fast == general
    assert rows == ReadingColumns.of(general)
    assert decode_columns(raw) == ReadingColumns.of(general)


def _readings_json(batch: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, **batch}, separators=(",", ":")).encode()


def _golden() -> dict[str, Any]:
    obj = golden_json("readings__three-devices")
    del obj["v"]
    return obj


def test_the_fast_path_takes_the_golden_batches() -> None:
    for name in ("readings__three-devices.json", "readings__compacted-aggregate.json"):
        raw = (GOLDEN / name).read_bytes()
        fast = codec._fast_readings().batch(raw)
        assert fast is not None, name
        assert fast == _general(raw)
        assert encode(fast) == raw
        assert _fast_columns(raw) == ReadingColumns.of(fast), name


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
    assert codec._fast_readings().batch(raw) is None
    assert _fast_columns(raw) is None
    with pytest.raises(CodecError, match=r"duplicate key|1 to 5000"):
        decode_columns(raw)
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
    assert codec._fast_readings().batch(raw) is None
    assert _fast_columns(raw) is None
    with pytest.raises(CodecError, match=message):
        decode(ReadingBatch, raw)
    _decides_as_general(raw)


def test_an_integer_beyond_any_float_is_refused_not_a_crash() -> None:
    obj = _golden()
    raw = _readings_json(obj).replace(b"-1204.5", b"1" + b"0" * 400)
    with pytest.raises(CodecError, match="out of range"):
        decode(ReadingBatch, raw)
    with pytest.raises(CodecError, match="out of range"):
        decode_columns(raw)


_GRID = b'"role":"grid","grant":"g1","quantities":{"power_w":'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # what msgspec would take and the general decoder refuses
        (b'"power_w":-1204.5', b'"power_w":1e999', "must be finite"),  # a float parser's inf
        (b'"power_w":-1204.5', b'"power_w":null', "expected float or str, got null"),
        (b'"power_w":-1204.5', b'"power_w":-1204.5,"energy_wh":null', "got null"),
        (b'"state":"mppt"', b'"state":"mppt\\n"', "short lowercase word"),  # not re's $
        (b'"device":"grid-meter"', b'"device":"grid-meter\\n"', "must match"),
        (b'"seq":', b'"period_ms":null,"seq":', "expected an integer"),
        (b'"seq":', b'"period_ms":1.5,"seq":', "expected an integer"),
        (b'"seq":', b'"period_ms":true,"seq":', "expected an integer"),
        (b'"seq":', b'"role":"grid","seq":', "duplicate key 'role'"),
        (b'"v":1', b'"v":true', "unsupported wire version"),
        (b'"v":1', b'"v":1.0', "unsupported wire version"),
        (b'"power_w":-1204.5', b'"power_w":-1204.5,"power_w":-1204.5', "duplicate key"),
        (b'"power_w":-1204.5', b'"power_w":-1204.5,"po\\u0077er_w":1', "duplicate key"),
        (b'"power_w":-1204.5', b'"power_w":false', "expected float or str"),
        (b'"power_w":-1204.5', b'"power_w":"mppt"', "finite number"),
        (b'"state":"mppt"', b'"state":1.0', "short lowercase word"),
        (b'"home":"home-1"', b'"home":"home-1\\u003a"', "must match"),
    ],
)
def test_what_msgspec_alone_would_take_is_refused(old: bytes, new: bytes, message: str) -> None:
    raw = _readings_json(_golden())
    assert old in raw
    raw = raw.replace(old, new, 1)
    assert _fast_columns(raw) is None
    assert codec._fast_readings().batch(raw) is None
    with pytest.raises(CodecError, match=message):
        decode_columns(raw)
    _decides_as_general(raw)


def test_equivalent_spellings_are_taken_by_every_path() -> None:
    raw = _readings_json(_golden())
    for old, new in [
        (b'"power_w":-1204.5', b'"power_w":-1204'),  # an integer quantity becomes a float
        (b'"power_w":-1204.5', b'"power_w":-0'),  # 0.0, as float(0) gives
        (b'"device":"grid-meter"', b'"device":"grid-\\u006deter"'),
        (b'"seq":', b'  "seq" :\n '),
    ]:
        changed = raw.replace(old, new, 1)
        assert changed != raw
        assert _fast_columns(changed) is not None, new
        _decides_as_general(changed)


def test_the_hub_decodes_readings_messages_as_rows() -> None:
    raw = _readings_json(_golden())
    topic = "coopwatt/c/homes/home-1/readings"
    address, rows = decode_stored_message(topic, raw)
    assert address.home == "home-1"
    assert rows == ReadingColumns.of(_general(raw))
    with pytest.raises(HomeMismatchError):
        decode_stored_message("coopwatt/c/homes/home-2/readings", raw)
    ack = b'{"v":1,"home":"home-1","acked":{"d":[[1,2]]}}'
    assert decode_stored_message("coopwatt/c/homes/home-1/ack", ack)[1] == decode(Ack, ack)


def test_without_msgspec_batches_go_to_the_general_decoder() -> None:
    """An agent's install has no msgspec; a tool there that decodes a batch still works."""
    code = (
        "import sys\n"
        "sys.modules['msgspec'] = None  # import msgspec raises ImportError\n"
        "from protocol.codec import decode_columns, decode\n"
        "from protocol.payloads import ReadingBatch, ReadingColumns\n"
        "raw = sys.stdin.buffer.read()\n"
        "assert decode_columns(raw) == ReadingColumns.of(decode(ReadingBatch, raw))\n"
        "print(len(decode(ReadingBatch, raw).readings))\n"
    )
    raw = _readings_json(_golden())
    out = subprocess.run([sys.executable, "-c", code], input=raw, capture_output=True, check=True)
    assert int(out.stdout) == len(_general(raw).readings)


def test_the_agent_never_imports_msgspec() -> None:
    """msgspec is the hub's: an agent encodes readings and decodes acks and prompts only."""
    code = (
        "import sys, agent.cli, agent.service\n"
        "from protocol.codec import decode, encode\n"
        "from protocol.payloads import Ack\n"
        "decode(Ack, encode(Ack(home='h', acked={'d': [[1, 2]]})))\n"
        "assert 'msgspec' not in sys.modules, 'msgspec imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
    fast = codec._fast_readings().batch(raw)
    assert fast is not None
    assert fast == _general(raw)  # integer quantities become floats either way
    rows = _fast_columns(raw)
    assert rows is not None
    assert rows == ReadingColumns.of(fast)
    at = ROW_QUANTITIES.index("state")
    numbers = [values[:at] + values[at + 1 :] for values in rows.values]  # all but state
    assert all(type(v) is float for values in numbers for v in values if v is not None)


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
    fast, rows = codec._fast_readings().batch(raw), _fast_columns(raw)
    try:
        general = _general(raw)
    except CodecError:
        assert fast is None
        assert rows is None
        return
    if fast is not None:
        assert fast == general
    if rows is not None:
        assert rows == ReadingColumns.of(general)


@given(_readings())
def test_encode_reading_writes_what_encode_writes_inside_a_batch(reading: Reading) -> None:
    batch = encode(ReadingBatch("home-1", T0, [reading]))
    assert batch == encode_batch("home-1", T0, [encode_reading(reading)])


def test_the_hub_stores_decoded_columns_as_it_stores_batches(tmp_path: Path) -> None:
    from hub.storage.store import Store
    from protocol.clock import ManualClock

    readings = [
        Reading("meter", 1, T0, Role.GRID, "g1", {"power_w": 1.0}),
        Reading("pv", 1, T0, Role.PV, "g1", {"state": "mppt", "power_w": 2}),
        Reading("meter", 2, T0 + 1, Role.PV, "g1", {"power_w": 3.0}),  # not its role: rejected
        Reading("meter", 2, T0 + 1, Role.GRID, "g1", {"voltage_v": 230.0}),
        Reading("meter", 2, T0 + 1, Role.GRID, "g1", {"voltage_v": 231.0}),  # a duplicate
        Reading("pv", 3, T0 + 2, Role.PV, "g1", {"energy_wh": 5.0}, period_ms=900_000),
    ]
    batch = ReadingBatch("home-1", T0, readings)
    columns = decode_columns(encode(batch))
    assert columns == ReadingColumns.of(batch)
    query = (
        "SELECT device, role, seq, power_w, voltage_v, energy_wh, state, period_ms, received_ms "
        "FROM readings JOIN devices ON id = device_id ORDER BY device, seq"
    )
    results, stored = [], []
    for name, payload in (("objects", batch), ("columns", columns)):
        with Store.open(tmp_path / f"{name}.db", "c", clock=ManualClock(T0)) as store:
            results.append(store.insert_batches([("home-1", payload)], T0 + 9))
            stored.append(store.reader().execute(query).fetchall())
    assert results[0] == results[1]
    assert stored[0] == stored[1]
    result = results[1]
    assert (result.new, result.duplicates, result.rejected) == (4, 1, 1)
    assert result.acks() == [Ack("home-1", {"meter": [[1, 2]], "pv": [[1, 1], [3, 3]]})]
    assert stored[1] == [
        ("meter", "grid", 1, 1.0, None, None, None, None, T0 + 9),
        ("meter", "grid", 2, None, 230.0, None, None, None, T0 + 9),  # the first of seq 2
        ("pv", "pv", 1, 2.0, None, None, "mppt", None, T0 + 9),
        ("pv", "pv", 3, None, None, 5.0, None, 900_000, T0 + 9),
    ]
