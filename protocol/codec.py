"""The strict codec: JSON bytes <-> payload dataclasses.

Strict because a hub that guesses at a malformed reading stores wrong money: it rejects unknown
versions, missing or extra fields, wrong types (``true`` is not a number, ``1.5`` is not an int),
NaN and infinities, duplicate keys, ids outside the allowed pattern, oversized payloads, and a
payload whose ``home`` differs from its topic's. Every failure is a :class:`CodecError` with a
message that names the field; nothing else escapes :func:`decode`.

Decoders are compiled once per dataclass from its annotations, so the per-reading cost on the
hub's ingest path is a few dictionary look-ups and ``isinstance`` checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from functools import cache
from typing import Any, Final, TypeVar

from protocol import WIRE_VERSION
from protocol.consent import ConsentGrant
from protocol.payloads import (
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
    Receipt,
    Statement,
    check_batch_envelope,
)
from protocol.quantities import Role
from protocol.topics import HomeTopic, HubTopic, TopicAddress, TopicError, parse_topic

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
        fast = _fast_readings_payload(data)
        if fast is not None:
            return typing.cast(T, fast)
    obj = parse_json(data)
    result: T = _decoder_for(typing.cast(Any, cls))(obj, "")
    return result


# -- the hub's hot path: readings batches -------------------------------------------------------
# A readings batch is most of what a hub decodes. The general decoder builds a field path for every
# value in case it must name one in an error; this one checks the same types without paths and
# builds the same objects (their __post_init__ checks everything else). It only ever accepts: on
# anything unusual it returns None and the general decoder decides, so every rejection, and its
# message, is the general decoder's own.

_BATCH_FIELDS: Final = frozenset({"home", "sent_ms", "readings"})
_READING_REQUIRED: Final = frozenset({"device", "seq", "ts_ms", "role", "grant", "quantities"})
_READING_FIELDS: Final = _READING_REQUIRED | {"period_ms"}
_ROLES: Final = {role.value: role for role in Role}


def _fast_readings_payload(data: bytes) -> ReadingBatch | None:
    """A well-formed readings batch, decoded quickly; None to let :func:`parse_json` and the
    general decoder decide (and explain) anything else.

    Parsed without :func:`parse_json`'s per-object duplicate-key hook: once the batch has been
    built, every string in it (keys included) is a checked id, role, glossary name or state, none
    of which holds a ``:``; so every ``:`` byte in the payload separates a key from its value,
    and the payload repeated no key exactly when it holds as many ``:`` as the decoded objects
    hold keys. NaN, infinities and oversized integers never get that far: no field takes them.
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        return None
    if type(obj) is not dict:
        return None
    version = obj.pop("v", None)
    if type(version) is not int or version != WIRE_VERSION:
        return None
    batch = _fast_reading_batch(obj)
    if batch is None:
        return None
    keys = len(obj) + 1  # the envelope's, and "v"
    for item in obj["readings"]:
        keys += len(item) + len(item["quantities"])
    return batch if data.count(b":") == keys else None


def _fast_reading_batch(obj: dict[str, Any]) -> ReadingBatch | None:
    if obj.keys() != _BATCH_FIELDS:
        return None
    home, sent_ms, items = obj["home"], obj["sent_ms"], obj["readings"]
    if type(home) is not str or type(sent_ms) is not int or type(items) is not list:
        return None
    readings: list[Reading] = []
    append = readings.append
    roles = _ROLES
    try:
        for item in items:
            if type(item) is not dict:
                return None
            keys = item.keys()
            if keys not in (_READING_REQUIRED, _READING_FIELDS):  # == as sets
                return None
            device, seq, ts_ms = item["device"], item["seq"], item["ts_ms"]
            grant, quantities, period_ms = item["grant"], item["quantities"], None
            role = roles.get(item["role"]) if type(item["role"]) is str else None
            if "period_ms" in item:
                period_ms = item["period_ms"]
                if type(period_ms) is not int:
                    return None
            if (
                role is None
                or type(device) is not str
                or type(seq) is not int
                or type(ts_ms) is not int
                or type(grant) is not str
                or type(quantities) is not dict
            ):
                return None
            ints = False
            for value in quantities.values():
                kind = type(value)
                if kind is not float and kind is not str:
                    if kind is not int:
                        return None
                    ints = True
            if ints:  # the general decoder turns an integer quantity into a float, and so do we
                quantities = {k: float(v) if type(v) is int else v for k, v in quantities.items()}
            append(Reading(device, seq, ts_ms, role, grant, quantities, period_ms))
        return ReadingBatch(home, sent_ms, readings)
    except (ValueError, TypeError, OverflowError):
        return None


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


def encode(payload: object) -> bytes:
    """Encode a payload dataclass as compact v1 JSON; ``None`` fields are left out."""
    body = _to_json(payload)
    try:
        data = json.dumps({"v": WIRE_VERSION, **body}, separators=(",", ":"), allow_nan=False)
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
        return json.dumps(body, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise CodecError(f"cannot encode: {exc}") from None


def encode_batch(home: str, sent_ms: int, readings_json: Sequence[str]) -> bytes:
    """A readings batch from readings already encoded by :func:`encode_reading`.

    Splicing stored text avoids rebuilding thousands of objects when a backlog drains; the
    readings were validated when they were built, and the envelope is checked here.
    """
    check_batch_envelope(home, sent_ms, len(readings_json))
    raw = (
        f'{{"v":{WIRE_VERSION},"home":"{home}","sent_ms":{sent_ms},"readings":['
        + ",".join(readings_json)
        + "]}"
    ).encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise CodecError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return raw


def decode_message(topic: str, data: bytes) -> tuple[TopicAddress, Any]:
    """Decode a message by its topic; a payload's ``home`` or ``coop`` must match the topic's."""
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
    payload: Any = decode(cls, data)
    if address.home is not None and payload.home != address.home:
        raise HomeMismatchError(
            f"payload home {payload.home!r} differs from topic home {address.home!r}", address.home
        )
    if address.home is None and payload.coop != address.coop:
        raise CodecError(f"payload coop {payload.coop!r} differs from topic coop {address.coop!r}")
    return address, payload
