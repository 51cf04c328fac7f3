"""Composing SML files as a German smart meter's optical port sends them, for the sim and tests.

:func:`compose_file` writes a whole transport frame: escape and version, an OpenResponse, a
GetListResponse with one entry per value, a CloseResponse (each message with its CRC), padding and
the transport CRC, following SML 1.04 (sections 6-8). :func:`quantity_entries` turns a dict of
glossary quantities into entries with the OBIS codes, unit codes and scalers a typical eHZ uses.

The OBIS table here is the simulator's own, written from the OBIS standard, not imported from the
agent (``sim`` imports ``agent`` only for the demo), so a test that composes with it and decodes
with the agent checks the two against each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

ESCAPE: Final = b"\x1b\x1b\x1b\x1b"

# quantity -> (OBIS A, B, C, D, E; SML unit code; scaler a typical meter uses; signed)
QUANTITY_OBIS: Final[dict[str, tuple[tuple[int, int, int, int, int], int, int, bool]]] = {
    "energy_import_wh": ((1, 0, 1, 8, 0), 30, -1, False),
    "energy_export_wh": ((1, 0, 2, 8, 0), 30, -1, False),
    "energy_import_t1_wh": ((1, 0, 1, 8, 1), 30, -1, False),
    "energy_import_t2_wh": ((1, 0, 1, 8, 2), 30, -1, False),
    "energy_export_t1_wh": ((1, 0, 2, 8, 1), 30, -1, False),
    "energy_export_t2_wh": ((1, 0, 2, 8, 2), 30, -1, False),
    "power_w": ((1, 0, 16, 7, 0), 27, 0, True),
    "power_l1_w": ((1, 0, 36, 7, 0), 27, 0, True),
    "power_l2_w": ((1, 0, 56, 7, 0), 27, 0, True),
    "power_l3_w": ((1, 0, 76, 7, 0), 27, 0, True),
    "voltage_l1_v": ((1, 0, 32, 7, 0), 35, -1, False),
    "voltage_l2_v": ((1, 0, 52, 7, 0), 35, -1, False),
    "voltage_l3_v": ((1, 0, 72, 7, 0), 35, -1, False),
    "current_l1_a": ((1, 0, 31, 7, 0), 33, -2, False),
    "current_l2_a": ((1, 0, 51, 7, 0), 33, -2, False),
    "current_l3_a": ((1, 0, 71, 7, 0), 33, -2, False),
    "frequency_hz": ((1, 0, 14, 7, 0), 44, -2, False),
}
METER_ID_OBIS: Final = bytes([1, 0, 96, 1, 0, 255])


@dataclass(frozen=True, slots=True)
class Entry:
    """One GetListResponse entry as sent: ``value`` is an integer (``signed`` picks the SML type)
    or octets; ``unit`` is the SML unit code and ``scaler`` the power of ten, None to leave out."""

    obis: bytes
    value: int | bytes | None
    unit: int | None = None
    scaler: int | None = None
    signed: bool = False


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25, bit by bit (the agent has a table-driven one; this one checks it)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _tl(kind: int, length: int) -> bytes:
    """A type-length field; for all but lists ``length`` excludes the field, added here."""
    for n in range(1, 5):
        total = length if kind == 7 else length + n
        if total < 16**n:
            nibbles = [(total >> (4 * i)) & 0x0F for i in reversed(range(n))]
            head = [(kind << 4) | nibbles[0]] + [nib for nib in nibbles[1:]]
            return bytes(b | 0x80 if i < n - 1 else b for i, b in enumerate(head))
    raise ValueError(f"SML element of {length} bytes is too long")


def octets(raw: bytes | None) -> bytes:
    return b"\x01" if raw is None else _tl(0, len(raw)) + raw


def unsigned(value: int, size: int | None = None) -> bytes:
    if value < 0:
        raise ValueError(f"{value} is negative: it cannot be sent as an SML unsigned")
    size = size or _size(value.bit_length())
    return _tl(6, size) + value.to_bytes(size, "big")


def integer(value: int, size: int | None = None) -> bytes:
    size = size or _size(value.bit_length() + 1)
    return _tl(5, size) + value.to_bytes(size, "big", signed=True)


def _size(bits: int) -> int:
    for size in (1, 2, 4, 8):
        if bits <= 8 * size:
            return size
    raise ValueError("integer does not fit in 64 bits")


def sml_list(*items: bytes) -> bytes:
    return _tl(7, len(items)) + b"".join(items)


def message(transaction: bytes, tag: int, body: bytes, group: int = 0) -> bytes:
    """One SML message: a list of 6 whose last two are its CRC (X-25 over the bytes before it,
    sent low byte first) and the end-of-message byte."""
    head = (
        b"\x76"
        + octets(transaction)
        + unsigned(group, 1)
        + unsigned(0, 1)  # abortOnError
        + sml_list(unsigned(tag, 2), body)
    )
    crc = crc16_x25(head)
    return head + unsigned((crc & 0xFF) << 8 | crc >> 8, 2) + b"\x00"


def _entry(entry: Entry) -> bytes:
    if entry.value is None:
        value = b"\x01"
    elif isinstance(entry.value, bytes):
        value = octets(entry.value)
    else:
        value = integer(entry.value) if entry.signed else unsigned(entry.value)
    return sml_list(
        octets(entry.obis),
        b"\x01",  # status
        b"\x01",  # valTime
        b"\x01" if entry.unit is None else unsigned(entry.unit, 1),
        b"\x01" if entry.scaler is None else integer(entry.scaler, 1),
        value,
        b"\x01",  # valueSignature
    )


def quantity_entries(quantities: Mapping[str, float], meter_id: bytes | None = None) -> list[Entry]:
    """Entries for glossary quantities, each rounded to its usual scaler (0.1 Wh, 1 W, 0.1 V)."""
    entries = [] if meter_id is None else [Entry(METER_ID_OBIS, meter_id)]
    for name, amount in quantities.items():
        code, unit, scaler, signed = QUANTITY_OBIS[name]
        entries.append(
            Entry(bytes([*code, 255]), round(amount * 10**-scaler), unit, scaler, signed)
        )
    return entries


def compose_file(
    entries: Sequence[Entry],
    *,
    server_id: bytes = b"\x0a\x01SIM\x00\x00\x00\x00\x01",
    transaction: int = 1,
    seconds_index: int = 0,
    utc_seconds: int | None = None,
) -> bytes:
    """A whole transport frame carrying one SML file with ``entries`` in its GetListResponse.

    Its sensor time is ``utc_seconds`` (UTC epoch seconds, SML_Time choice 2) when given, else
    ``seconds_index`` (seconds since the meter started, choice 1, what most meters send)."""
    file_id = transaction.to_bytes(4, "big")
    ids = [(transaction * 3 + i).to_bytes(4, "big") for i in range(3)]
    open_res = sml_list(b"\x01", b"\x01", octets(file_id), octets(server_id), b"\x01", b"\x01")
    if utc_seconds is None:
        sensor_time = sml_list(unsigned(1, 1), unsigned(seconds_index, 4))
    else:
        sensor_time = sml_list(unsigned(2, 1), unsigned(utc_seconds, 4))
    get_list = sml_list(
        b"\x01",
        octets(server_id),
        octets(bytes([1, 0, 98, 10, 255, 255])),  # the list name volkszaehler users see
        sensor_time,
        sml_list(*(_entry(e) for e in entries)),
        b"\x01",
        b"\x01",
    )
    body = (
        message(ids[0], 0x0101, open_res)
        + message(ids[1], 0x0701, get_list)
        + message(ids[2], 0x0201, sml_list(b"\x01"))
    )
    return wrap(body)


def wrap(body: bytes) -> bytes:
    """Transport v1: escape, pad to 4 bytes, end sequence and CRC (low byte first)."""
    data = body.replace(ESCAPE, ESCAPE + ESCAPE)
    padding = -len(data) % 4
    frame = ESCAPE + b"\x01\x01\x01\x01" + data + b"\x00" * padding + ESCAPE
    frame += bytes([0x1A, padding])
    crc = crc16_x25(frame)
    return frame + bytes([crc & 0xFF, crc >> 8])
