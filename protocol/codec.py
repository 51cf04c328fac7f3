"""The strict codec: JSON bytes <-> payload dataclasses.

Strict because a hub that guesses at a malformed reading stores wrong money: it rejects unknown
versions, missing or extra fields, wrong types (``true`` is not a number, ``1.5`` is not an int),
NaN and infinities, duplicate keys, ids outside the allowed pattern, oversized payloads, and a
payload whose ``home`` differs from its topic's. Every failure is a :class:`CodecError` with a
message that names the field; nothing else escapes :func:`decode`.

Decoders are compiled once per dataclass from its annotations. Readings batches, most of what a
hub decodes, also take a fast path through msgspec (the hub's dependency, imported on first use:
an agent never decodes one), which only ever accepts; the general decoder decides and words every
refusal. The hub's ingest gets them as :class:`ReadingColumns` (:func:`decode_stored_message`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import operator
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

from protocol import WIRE_VERSION
from protocol.consent import ConsentGrant
from protocol.payloads import (
    _MAX_ABS_VALUE,
    _MAX_TS_MS,
    _MIN_TS_MS,
    _STATE_RE,
    MAX_PERIOD_MS,
    MAX_READINGS_PER_BATCH,
    Ack,
    Appliances,
    Feedback,
    Forecast,
    HomeStatus,
    HubAlert,
    HubMetrics,
    HubStatus,
    Prompts,
    Reading,
    ReadingBatch,
    ReadingColumns,
    Receipt,
    Statement,
    are_ids,
    check_batch_envelope,
)
from protocol.quantities import GLOSSARY, Role, allowed_for
from protocol.topics import HomeTopic, HubTopic, TopicAddress, TopicError, parse_topic

if TYPE_CHECKING:
    from msgspec import Struct

MAX_PAYLOAD_BYTES: Final = 1_048_576  # also the broker's max_packet_size, with headroom

T = TypeVar("T")
_Decoder = Callable[[Any, str], Any]


class CodecError(ValueError):
    """A payload that does not follow wire contract v1; the message says where and why."""


class HomeMismatchError(CodecError):
    """A payload whose ``home`` differs from its topic's: a broken agent, or a home trying to
    pass data off as a neighbour's (the broker's ACLs let it write only its own topics)."""

    def __init__(self, message: str, topic_home: str) -> None:
        super().__init__(message)
        self.topic_home = topic_home


class _TypeMismatch(CodecError):
    """The JSON value has the wrong type; a union tries its next option."""


# Payload class per topic kind; kinds not listed here are not part of v1 yet.
HOME_PAYLOADS: Final[dict[HomeTopic, type]] = {
    HomeTopic.CONSENT: ConsentGrant,
    HomeTopic.RECEIPTS: Receipt,
    HomeTopic.READINGS: ReadingBatch,
    HomeTopic.ACK: Ack,
    HomeTopic.STATUS: HomeStatus,
    HomeTopic.STATEMENT: Statement,
    HomeTopic.APPLIANCES: Appliances,
    HomeTopic.PROMPTS: Prompts,
    HomeTopic.FEEDBACK: Feedback,
}
HUB_PAYLOADS: Final[dict[HubTopic, type]] = {
    HubTopic.STATUS: HubStatus,
    HubTopic.FORECAST: Forecast,
    HubTopic.METRICS: HubMetrics,
    HubTopic.ALERTS: HubAlert,
}


def _reject_constant(name: str) -> Any:
    raise CodecError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise CodecError(f"duplicate key {dup!r}")
    return obj


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _fail(path: str, expected: str, value: object) -> typing.NoReturn:
    raise _TypeMismatch(f"{path or 'payload'}: expected {expected}, got {_type_name(value)}")


def _decode_int(value: Any, path: str) -> int:
    if type(value) is not int:
        _fail(path, "an integer", value)
    return value


def _decode_float(value: Any, path: str) -> float:
    if type(value) is float:
        if not math.isfinite(value):
            raise CodecError(f"{path}: must be finite")
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond any float: refused, never a crash
            raise CodecError(f"{path}: number out of range") from None
    _fail(path, "a number", value)


def _decode_str(value: Any, path: str) -> str:
    if type(value) is not str:
        _fail(path, "a string", value)
    return value


def _decode_bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        _fail(path, "true or false", value)
    return value


def _union_decoder(options: tuple[Any, ...]) -> _Decoder:
    # float | str, the only scalar union v1 uses, is decided by JSON's own type.
    decoders = [_decoder_for(o) for o in options]

    def decode(value: Any, path: str) -> Any:
        for d in decoders:
            try:
                return d(value, path)
            except _TypeMismatch:
                continue
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        _fail(path, names, value)

    return decode


@cache
def _decoder_for(tp: Any) -> _Decoder:
    if tp is int:
        return _decode_int
    if tp is float:
        return _decode_float
    if tp is str:
        return _decode_str
    if tp is bool:
        return _decode_bool
    if isinstance(tp, type) and issubclass(tp, Enum):
        enum_type = tp
        allowed = ", ".join(repr(m.value) for m in enum_type)

        def decode_enum(value: Any, path: str) -> Any:
            try:
                return enum_type(value)
            except (ValueError, TypeError):
                raise CodecError(f"{path}: expected one of {allowed}, got {value!r}") from None

        return decode_enum
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_decoder(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        literals = args

        def decode_literal(value: Any, path: str) -> Any:
            if type(value) is str and value in literals:
                return value
            raise CodecError(f"{path}: expected one of {', '.join(map(repr, literals))}")

        return decode_literal
    if origin is list:
        item = _decoder_for(args[0])

        def decode_list(value: Any, path: str) -> list[Any]:
            if type(value) is not list:
                _fail(path, "a list", value)
            return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return decode_list
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"unsupported key type in {tp}")
        val = _decoder_for(args[1])

        def decode_dict(value: Any, path: str) -> dict[str, Any]:
            if type(value) is not dict:
                _fail(path, "an object", value)
            return {k: val(v, f"{path}.{k}") for k, v in value.items()}

        return decode_dict
    if origin in (types.UnionType, typing.Union):
        return _union_decoder(tuple(a for a in args if a is not type(None)))
    raise TypeError(f"the codec does not support {tp!r}")


def _dataclass_decoder(cls: type) -> _Decoder:
    hints = typing.get_type_hints(cls)
    required: set[str] = set()
    fields: dict[str, _Decoder] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        optional = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        if typing.get_origin(tp) in (types.UnionType, typing.Union) and type(
            None
        ) in typing.get_args(tp):
            optional = True
            rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
            tp = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
        fields[f.name] = _decoder_for(tp)
        if not optional:
            required.add(f.name)

    def decode(value: Any, path: str) -> Any:
        if type(value) is not dict:
            _fail(path, "an object", value)
        extra = value.keys() - fields.keys()
        if extra:
            raise CodecError(f"{path or 'payload'}: unknown field {sorted(extra)[0]!r}")
        missing = required - value.keys()
        if missing:
            raise CodecError(f"{path or 'payload'}: missing field {sorted(missing)[0]!r}")
        kwargs = {k: fields[k](v, f"{path}.{k}" if path else k) for k, v in value.items()}
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise CodecError(f"{path or cls.__name__}: {exc}") from None

    return decode


def parse_json(data: bytes) -> dict[str, Any]:
    """Parse a v1 payload's JSON object and check its size and version."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise CodecError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise CodecError("payload is not UTF-8") from None
    except RecursionError:
        raise CodecError("payload is nested too deeply") from None
    except CodecError:
        raise
    except json.JSONDecodeError as exc:
        raise CodecError(f"payload is not JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise CodecError(f"payload is not acceptable JSON: {exc}") from None
    if type(obj) is not dict:
        raise CodecError("payload is not a JSON object")
    version = obj.pop("v", None)
    if version != WIRE_VERSION or type(version) is not int:
        raise CodecError(f"unsupported wire version {version!r}; this side speaks {WIRE_VERSION}")
    return obj


def decode(cls: type[T], data: bytes) -> T:
    """Decode ``data`` as a ``cls`` payload, or raise :class:`CodecError`."""
    if cls is ReadingBatch:
        fast = _fast_readings().batch(data)
        if fast is not None:
            return typing.cast(T, fast)
    return _decode_general(cls, data)


def _decode_general(cls: type[T], data: bytes) -> T:
    """The general decoder: decides every payload, and words every refusal."""
    obj = parse_json(data)
    result: T = _decoder_for(typing.cast(Any, cls))(obj, "")
    return result


# -- the hub's hot path: readings batches, decoded by msgspec -------------------------------------
# A readings batch is most of what a hub decodes: tens of thousands of readings a second. The
# general decoder builds a field path for every value in case it must name one in an error, and a
# Reading checks itself in Python. Here msgspec (a C library, the hub's dependency: imported only
# once a readings batch is decoded, which an agent never does) decodes into typed Structs that say
# the same rules: types, ranges, each role's quantities, the patterns of states. What is left is
# checked per batch (ids, against a cache), and the hub gets the batch as columns
# (ReadingColumns), all without Python code per reading. These paths only ever accept: on
# anything unusual, or any msgspec error, they return None and the general decoder decides, so
# every refusal, and its message, is the general decoder's own.
#
# Duplicate keys: msgspec keeps the last of a repeated key, and decodes an explicit null in an
# optional field as absent (the general decoder refuses both). Once a batch has been accepted,
# every string in it (keys included) is a field name, a checked id, a role, a glossary name or a
# state, none of which holds a ``:``; so every ``:`` byte in the payload separates a key from its
# value, and the payload repeated no key and named no null exactly when it holds as many ``:`` as
# the decoded batch holds keys with a value.

_ENVELOPE_KEYS: Final = 4  # v, home, sent_ms, readings
_READING_KEYS: Final = 6  # device, seq, ts_ms, role, grant, quantities; period_ms is optional


class _ReadingStruct(typing.Protocol):
    """A reading as a msgspec Struct of :func:`_fast_readings`."""

    @property
    def device(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts_ms(self) -> int: ...
    @property
    def role(self) -> Role: ...
    @property
    def grant(self) -> str: ...
    @property
    def period_ms(self) -> int | None: ...


class _ColumnsReading(_ReadingStruct, typing.Protocol):
    @property
    def quantities(self) -> Struct: ...  # every glossary name, in glossary order


class _ObjectsReading(_ReadingStruct, typing.Protocol):
    @property
    def quantities(self) -> dict[str, float | str]: ...  # in the payload's order


_R_co = TypeVar("_R_co", covariant=True)


class _BatchStruct(typing.Protocol[_R_co]):
    """A readings batch as a msgspec Struct of :func:`_fast_readings`."""

    @property
    def v(self) -> int: ...
    @property
    def home(self) -> str: ...
    @property
    def sent_ms(self) -> int: ...
    @property
    def readings(self) -> Sequence[_R_co]: ...


class _FastReadings(typing.NamedTuple):
    columns: Callable[[bytes], ReadingColumns | None]
    batch: Callable[[bytes], ReadingBatch | None]


@cache
def _fast_readings() -> _FastReadings:
    """The msgspec decoders of readings batches, built on first use. Without msgspec (an agent's
    install, whose tools may still decode a batch) every batch goes to the general decoder."""
    try:
        import msgspec  # noqa: PLC0415  (the hub's dependency, not the agent's)
    except ImportError:
        return _FastReadings(lambda data: None, lambda data: None)

    meta = msgspec.Meta
    Number = Annotated[float, meta(ge=-_MAX_ABS_VALUE, le=_MAX_ABS_VALUE)]  # finite; JSON ints too
    State = Annotated[str, meta(pattern=rf"\A(?:{_STATE_RE.pattern})\Z")]
    Seq = Annotated[int, meta(ge=1, lt=2**53)]
    Timestamp = Annotated[int, meta(ge=_MIN_TS_MS, lt=_MAX_TS_MS)]
    Period = Annotated[int, meta(ge=0, le=MAX_PERIOD_MS)]
    Count = meta(min_length=1, max_length=MAX_READINGS_PER_BATCH)
    # Readings and their quantities hold no other objects: no reference cycles, so the garbage
    # collector need not track them (tens of thousands a second would make it run often).
    config: dict[str, Any] = {"forbid_unknown_fields": True, "frozen": True, "gc": False}

    # For decode_columns: one Reading Struct per role, told apart by "role" (msgspec refuses any
    # other value, and a repeated one). Its quantities are every glossary name in glossary order
    # (the hub's columns, ROW_QUANTITIES): those the role may carry typed as they must be, the
    # others as null alone, so that any value refuses the batch (and a null is a key without a
    # value: see the count of ':').
    by_role = []
    for role in Role:
        quantities = msgspec.defstruct(
            f"Quantities_{role.value}",
            [
                (name, ((Number if q.kind is float else State) | None) if allowed_for(role, name)
                 else None, None)
                for name, q in GLOSSARY.items()
            ],
            **config,
        )  # fmt: skip
        by_role.append(
            msgspec.defstruct(
                f"Reading_{role.value}",
                [("device", str), ("seq", Seq), ("ts_ms", Timestamp), ("grant", str),
                 ("quantities", quantities), ("period_ms", Period | None, None)],
                namespace={"role": role},  # a class attribute, not a field: the tag's member
                tag_field="role",
                tag=role.value,
                **config,
            )
        )  # fmt: skip
    any_role: Any = typing.Union.__getitem__(tuple(by_role))
    columns_batch: Any = msgspec.defstruct(
        "ColumnsBatch",
        [
            ("v", int),
            ("home", str),
            ("sent_ms", Timestamp),
            ("readings", Annotated[list[any_role], Count]),
        ],
        forbid_unknown_fields=True,
    )

    # For decode(ReadingBatch): the types alone (what the hand-written path checked before); the
    # Reading objects check the rest as they are built. Quantities keep their order on the wire.
    objects_reading: Any = msgspec.defstruct(
        "ObjectsReading",
        [("device", str), ("seq", int), ("ts_ms", int), ("role", Role), ("grant", str),
         ("quantities", dict[str, float | str]), ("period_ms", int | None, None)],
        **config,
    )  # fmt: skip
    objects_batch: Any = msgspec.defstruct(
        "ObjectsBatch",
        [("v", int), ("home", str), ("sent_ms", int), ("readings", list[objects_reading])],
        forbid_unknown_fields=True,
    )

    columns_decoder = msgspec.json.Decoder(columns_batch)
    objects_decoder = msgspec.json.Decoder(objects_batch)
    astuple = msgspec.structs.astuple
    # Any of these means: let the general decoder decide (UnicodeDecodeError is a ValueError).
    failed = (msgspec.MsgspecError, ValueError, TypeError, OverflowError)
    no_values = len(GLOSSARY)

    def columns(data: bytes) -> ReadingColumns | None:
        if len(data) > MAX_PAYLOAD_BYTES:
            return None
        try:
            batch: _BatchStruct[_ColumnsReading] = columns_decoder.decode(data)
        except failed:
            return None
        if batch.v != WIRE_VERSION:
            return None
        # Column by column, with C loops: no Python code and no new object per reading.
        readings = batch.readings
        devices, roles, seqs, ts_ms, grants, periods = (
            tuple(map(field, readings)) for field in _READING_FIELDS
        )
        values = tuple(map(astuple, map(_QUANTITIES_OF, readings)))  # in ROW_QUANTITIES order
        absent = list(map(tuple.count, values, itertools.repeat(None)))
        if no_values in absent:  # a reading without quantities
            return None
        if not are_ids({batch.home, *devices, *grants}):
            return None
        n = len(readings)
        keys = (
            _ENVELOPE_KEYS
            + n * (_READING_KEYS + no_values)
            + (n - periods.count(None))
            - sum(absent)
        )
        if data.count(b":") != keys:
            return None
        return ReadingColumns(
            batch.home,
            batch.sent_ms,
            devices=devices,
            roles=roles,
            seqs=seqs,
            ts_ms=ts_ms,
            grants=grants,
            periods=periods,
            values=values,
        )

    def objects(data: bytes) -> ReadingBatch | None:
        if len(data) > MAX_PAYLOAD_BYTES:
            return None
        try:
            batch: _BatchStruct[_ObjectsReading] = objects_decoder.decode(data)
            if batch.v != WIRE_VERSION:
                return None
            readings = [
                Reading(r.device, r.seq, r.ts_ms, r.role, r.grant, r.quantities, r.period_ms)
                for r in batch.readings
            ]
            result = ReadingBatch(batch.home, batch.sent_ms, readings)
        except failed:  # a Reading's or the batch's own checks raise ValueError
            return None
        keys = _ENVELOPE_KEYS + sum(
            _READING_KEYS + (r.period_ms is not None) + len(r.quantities) for r in readings
        )
        return result if data.count(b":") == keys else None

    return _FastReadings(columns, objects)


_READING_FIELDS: Final = tuple(
    map(operator.attrgetter, ("device", "role", "seq", "ts_ms", "grant", "period_ms"))
)
_QUANTITIES_OF: Final = operator.attrgetter("quantities")


def decode_columns(data: bytes) -> ReadingColumns:
    """Decode a readings batch as the hub stores it, or raise :class:`CodecError`.

    Accepts and refuses exactly what ``decode(ReadingBatch, data)`` does, with the same messages;
    what it accepts comes as :class:`ReadingColumns`, which hold the same readings.
    """
    fast = _fast_readings().columns(data)
    if fast is not None:
        return fast
    return ReadingColumns.of(_decode_general(ReadingBatch, data))


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_json(v)
            for f in dataclasses.fields(value)
            if (v := getattr(value, f.name)) is not None
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


# json.dumps with arguments builds a new encoder for every call: a reading a second on the Pi
# paid for that each time (issue 22). Made once; check_circular off, as payloads are trees.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def encode(payload: object) -> bytes:
    """Encode a payload dataclass as compact v1 JSON; ``None`` fields are left out."""
    body = _to_json(payload)
    try:
        data = _COMPACT.encode({"v": WIRE_VERSION, **body})
    except ValueError as exc:
        raise CodecError(f"cannot encode: {exc}") from None
    raw = data.encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise CodecError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return raw


def encode_reading(reading: Reading) -> str:
    """One reading as compact JSON text, for an outbox to store and later send as is.

    The same text as :func:`encode` gives for a reading inside a batch (field order, ``None``
    left out), built directly: an agent encodes every reading it polls.
    """
    role = reading.role
    body: dict[str, Any] = {
        "device": reading.device,
        "seq": reading.seq,
        "ts_ms": reading.ts_ms,
        "role": role.value if isinstance(role, Enum) else role,
        "grant": reading.grant,
        "quantities": reading.quantities,
    }
    if reading.period_ms is not None:
        body["period_ms"] = reading.period_ms
    try:
        return _COMPACT.encode(body)
    except ValueError as exc:
        raise CodecError(f"cannot encode: {exc}") from None


def encode_batch(home: str, sent_ms: int, readings_json: Sequence[str]) -> bytes:
    """A readings batch from readings already encoded by :func:`encode_reading`.

    Splicing stored text avoids rebuilding thousands of objects when a backlog drains; the
    readings were validated when they were built, and the envelope is checked here.
    """
    check_batch_envelope(home, sent_ms, len(readings_json))
    readings = ",".join(readings_json)
    # One f-string, one encode: a drained batch is ~250 kB, and each `+` would copy it again.
    head = f'{{"v":{WIRE_VERSION},"home":"{home}","sent_ms":{sent_ms},"readings":['
    raw = f"{head}{readings}]}}".encode()
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise CodecError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return raw


def decode_message(topic: str, data: bytes) -> tuple[TopicAddress, Any]:
    """Decode a message by its topic; a payload's ``home`` or ``coop`` must match the topic's."""
    address, cls = _payload_class(topic)
    payload: Any = decode(cls, data)
    _check_origin(address, payload)
    return address, payload


def decode_stored_message(topic: str, data: bytes) -> tuple[TopicAddress, Any]:
    """:func:`decode_message` for the hub's ingest: a readings batch comes as the
    :class:`ReadingColumns` the hub stores (:func:`decode_columns`) rather than a
    :class:`ReadingBatch`. Accepts and refuses exactly the same messages, in the same words."""
    address, cls = _payload_class(topic)
    payload: Any = decode_columns(data) if cls is ReadingBatch else decode(cls, data)
    _check_origin(address, payload)
    return address, payload


def _payload_class(topic: str) -> tuple[TopicAddress, type]:
    try:
        address = parse_topic(topic)
    except TopicError as exc:
        raise CodecError(str(exc)) from None
    if isinstance(address.kind, HomeTopic):
        cls = HOME_PAYLOADS.get(address.kind)
    else:
        cls = HUB_PAYLOADS.get(address.kind)
    if cls is None:
        raise CodecError(f"no v1 payload is defined for {address.kind.value!r} yet")
    return address, cls


def _check_origin(address: TopicAddress, payload: Any) -> None:
    if address.home is not None and payload.home != address.home:
        raise HomeMismatchError(
            f"payload home {payload.home!r} differs from topic home {address.home!r}", address.home
        )
    if address.home is None and payload.coop != address.coop:
        raise CodecError(f"payload coop {payload.coop!r} differs from topic coop {address.coop!r}")
