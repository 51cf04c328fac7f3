"""Decoding SML files from a German smart meter's optical port into frames of glossary quantities.

The meter (eHZ, ISKRA MT175/MT631, EasyMeter Q3A/Q3B, DZG, Holley, ...) pushes an SML file every
second or few: an OpenResponse, a GetListResponse with one entry per OBIS code (value, unit code,
decimal scaler) and a CloseResponse, each message with its own CRC, wrapped by the transport layer
(:mod:`agent.sml_transport`). This module is a small strict decoder of the SML 1.04 TLV encoding
rather than smllib 1.7: smllib does not check the per-message CRCs, raises on bad input instead
of reporting it, trims its buffer silently and has no encoder (the simulator needs one). Memory
did not decide it: both retain about 0.1-0.25 MiB once imported (bench/sml_decode.py).

Every value is ``integer * 10 ** scaler`` in the unit its unit code names; the OBIS table
(:mod:`agent.sml_obis`) says which unit each quantity must come in. A value in another unit, or
not a number, is a :class:`FrameFault` for that value while the frame's other values are kept.
An entry without a value (meters locked by a PIN send their power entries empty, or not at all) is
simply absent from the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.push_frames import Frame, FrameFault
from agent.sml_obis import METER_ID, ObisValue, load_table
from agent.sml_transport import MAX_FRAME_BYTES, SmlTransportReader, crc16_x25

OPEN_RESPONSE: Final = 0x0101
CLOSE_RESPONSE: Final = 0x0201
GET_LIST_RESPONSE: Final = 0x0701
_MAX_DEPTH: Final = 8  # a GetListResponse nests 6 deep (message ... entry, time, local time)
_INT_TYPES: Final = {5: True, 6: False}  # TL type nibble -> signed


class SmlError(ValueError):
    """A body that is not a well-formed SML file; the message is one sentence."""


class _End:
    """The EndOfSmlMsg byte (0x00) that closes each message."""


END: Final = _End()
Value = None | bytes | bool | int | list["Value"] | _End


@dataclass(frozen=True, slots=True)
class SmlEntry:
    """One GetListResponse entry: ``obis`` is its six bytes, ``value`` an int or the raw octets."""

    obis: bytes
    unit: int | None
    scaler: int
    value: int | bytes | bool | None


@dataclass(frozen=True, slots=True)
class SmlList:
    """A GetListResponse: who sent it, its sensor time if it is UTC, and its entries."""

    server_id: bytes | None
    sensor_ts_ms: int | None
    entries: tuple[SmlEntry, ...]


def parse_value(body: bytes, pos: int, depth: int = 0) -> tuple[Value, int]:
    """The TLV element at ``pos`` (SML 1.04 section 6.3.1) and where the next one starts."""
    if pos >= len(body):
        raise SmlError("SML element cut short")
    first = body[pos]
    if first <= 0x01:  # most often: an optional field left out (0x01), or the message's end
        return (None if first else END), pos + 1
    kind = (first >> 4) & 0x07
    length = first & 0x0F
    tl_bytes = 1
    more = first & 0x80
    while more:
        if pos + tl_bytes >= len(body):
            raise SmlError("SML length field cut short")
        nxt = body[pos + tl_bytes]
        if nxt & 0x70:
            raise SmlError("SML length field has type bits in a continuation byte")
        length = length << 4 | (nxt & 0x0F)
        more = nxt & 0x80
        tl_bytes += 1
        if tl_bytes > 4:
            raise SmlError("SML length field longer than 4 bytes")
    pos += tl_bytes
    if kind == 7:
        if depth >= _MAX_DEPTH:
            raise SmlError(f"SML lists nested deeper than {_MAX_DEPTH}")
        items: list[Value] = []
        for _ in range(length):
            item, pos = parse_value(body, pos, depth + 1)
            items.append(item)
        return items, pos
    size = length - tl_bytes
    if size < 0 or pos + size > len(body):
        raise SmlError("SML element cut short")
    raw = body[pos : pos + size]
    pos += size
    if kind == 0:
        return (raw if size else None), pos
    if kind == 4 and size == 1:
        return raw[0] != 0, pos
    if kind in _INT_TYPES and 1 <= size <= 8:
        return int.from_bytes(raw, "big", signed=_INT_TYPES[kind]), pos
    raise SmlError(f"SML element type {kind} with {size} bytes is not allowed")


def parse_file(body: bytes) -> list[tuple[int, Value]]:
    """The messages of one SML file as (body tag, body); each message's CRC is checked."""
    messages: list[tuple[int, Value]] = []
    pos = 0
    while pos < len(body):
        start = pos
        if body[pos] != 0x76:
            raise SmlError(f"SML message {len(messages) + 1} does not start with a 6-element list")
        pos += 1
        fields: list[Value] = []
        for _ in range(4):  # transactionId, groupNo, abortOnError, messageBody
            item, pos = parse_value(body, pos, 1)
            fields.append(item)
        crc_at = pos
        crc, pos = parse_value(body, pos, 1)
        end, pos = parse_value(body, pos, 1)
        if end is not END:
            raise SmlError(f"SML message {len(messages) + 1} has no end-of-message byte")
        if not isinstance(crc, int) or isinstance(crc, bool):
            raise SmlError(f"SML message {len(messages) + 1} has no CRC")
        computed = crc16_x25(body[start:crc_at])
        if crc != ((computed & 0xFF) << 8 | computed >> 8):  # sent low byte first
            raise SmlError(f"SML message {len(messages) + 1} failed its CRC check")
        msg_body = fields[3]
        if not (isinstance(msg_body, list) and len(msg_body) == 2 and _is_int(msg_body[0])):
            raise SmlError(f"SML message {len(messages) + 1} has a malformed body")
        tag = msg_body[0]
        assert isinstance(tag, int)
        messages.append((tag, msg_body[1]))
    return messages


def _is_int(value: Value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time_ms(value: Value) -> int | None:
    """An SML_Time as UTC epoch ms; None for a seconds index (time since the meter started)."""
    if not (isinstance(value, list) and len(value) == 2 and value[0] in (2, 3)):
        return None
    ts = value[1]
    if value[0] == 3 and isinstance(ts, list) and ts:  # localTimestamp: UTC seconds + offsets
        ts = ts[0]
    return ts * 1000 if _is_int(ts) and isinstance(ts, int) and ts > 0 else None


def get_list(body: Value) -> SmlList:
    """A GetListResponse body's entries (SML 1.04 section 7.1.12)."""
    if not (isinstance(body, list) and len(body) == 7 and isinstance(body[4], list)):
        raise SmlError("SML GetListResponse is malformed")
    entries = []
    for item in body[4]:
        if not (isinstance(item, list) and len(item) == 7 and isinstance(item[0], bytes)):
            raise SmlError("SML list entry is malformed")
        obj_name, _status, _val_time, unit, scaler, value, _signature = item
        if not (unit is None or _is_int(unit)) or not (scaler is None or _is_int(scaler)):
            raise SmlError("SML list entry has a malformed unit or scaler")
        if isinstance(value, list | _End):
            raise SmlError("SML list entry has a malformed value")
        assert unit is None or isinstance(unit, int)
        assert scaler is None or isinstance(scaler, int)
        assert isinstance(obj_name, bytes)
        entries.append(SmlEntry(obj_name, unit, scaler or 0, value))
    server_id = body[1] if isinstance(body[1], bytes) else None
    return SmlList(server_id, _time_ms(body[3]), tuple(entries))


def meter_id_text(raw: bytes) -> str:
    """An identifier as the meter sent it: printable ASCII as text, anything else as hex."""
    if raw.isascii() and raw.decode("ascii").isprintable():
        return raw.decode("ascii")
    return raw.hex()


def obis_text(obis: bytes) -> str:
    """Six OBIS bytes as ``A-B:C.D.E*F``, for messages."""
    if len(obis) != 6:
        return obis.hex()
    a, b, c, d, e, f = obis
    return f"{a}-{b}:{c}.{d}.{e}*{f}"


def scaled(value: int, scaler: int) -> float:
    """``value * 10 ** scaler``, divided rather than multiplied so 791393, -1 gives 79139.3."""
    return value / 10**-scaler if scaler < 0 else float(value * 10**scaler)


def to_frame(sml: SmlList, table: dict[bytes, ObisValue]) -> list[Frame | FrameFault]:
    """The frame of one GetListResponse, followed by a fault for each value that was refused."""
    quantities: dict[str, float] = {}
    faults: list[Frame | FrameFault] = []
    meter_id = None
    for entry in sml.entries:
        row = table.get(entry.obis)
        if row is None or entry.value is None:
            continue
        name = f"{obis_text(entry.obis)} ({row.quantity})"
        if row.quantity == METER_ID:
            if not isinstance(entry.value, bytes):
                faults.append(FrameFault(f"SML value {name} is not an octet string; dropped"))
            elif meter_id is None:
                meter_id = meter_id_text(entry.value)
            continue
        if entry.unit != row.unit_code:
            faults.append(
                FrameFault(
                    f"SML value {name} came in unit code {entry.unit}, not {row.unit_code}; dropped"
                )
            )
        elif not isinstance(entry.value, int) or isinstance(entry.value, bool):
            faults.append(FrameFault(f"SML value {name} is not a number; dropped"))
        elif row.quantity in quantities:
            faults.append(FrameFault(f"SML value {name} is sent twice; kept the first"))
        elif not -20 <= entry.scaler <= 20:
            faults.append(FrameFault(f"SML value {name} has scaler {entry.scaler}; dropped"))
        else:
            quantities[row.quantity] = scaled(entry.value, entry.scaler)
    if meter_id is None and sml.server_id:
        meter_id = meter_id_text(sml.server_id)
    return [Frame(quantities, meter_id=meter_id, meter_ts_ms=sml.sensor_ts_ms), *faults]


class SmlDecoder:
    """A :class:`agent.push_frames.FrameDecoder` for SML transport v1 from an optical port."""

    def __init__(
        self,
        table: dict[bytes, ObisValue] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self._table = load_table() if table is None else table
        self._reader = SmlTransportReader(max_frame_bytes)

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return self._reader.buffered

    def feed(self, data: bytes) -> list[Frame | FrameFault]:
        out: list[Frame | FrameFault] = []
        for item in self._reader.feed(data):
            if isinstance(item, FrameFault):
                out.append(item)
            else:
                out.extend(self.decode_body(item))
        return out

    def decode_body(self, body: bytes) -> list[Frame | FrameFault]:
        """One transport-checked body: a frame per GetListResponse, or why there is none."""
        try:
            lists = [get_list(b) for tag, b in parse_file(body) if tag == GET_LIST_RESPONSE]
        except SmlError as exc:
            return [FrameFault(str(exc))]
        if not lists:
            return [FrameFault("SML file carries no GetListResponse")]
        out: list[Frame | FrameFault] = []
        for sml in lists:
            out.extend(to_frame(sml, self._table))
        return out
