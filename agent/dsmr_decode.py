"""P1 (DSMR) telegrams: framing, CRC and OBIS lines, to glossary quantities (a FrameDecoder).

A telegram (DSMR 5.0.2 P1 Companion Standard, section 6.2; IEC 62056-21 mode D) is ASCII::

    /XXX5<identification>\\r\\n
    \\r\\n
    1-0:1.8.1(000123.456*kWh)\\r\\n
    ...
    !CRC4\\r\\n

``CRC4`` is the CRC16 of every byte from ``/`` to ``!`` inclusive (polynomial 0xA001 reflected,
initial value 0: CRC-16/ARC), as four upper-case hex digits. DSMR 2.2 and 3.0 meters send no CRC:
the telegram ends ``!\\r\\n``. Which OBIS code is which quantity is data (a ``kind = "p1"``
profile's ``[obis]`` table, :class:`ObisMap`), so a variant is a profile file, not code.

Written here rather than taken from dsmr-parser 1.11.2: importing that costs +28 MiB resident
(it pulls dlms_cosem, cryptography and pytz for Luxembourg's encrypted telegrams), and the agent
must stay under 35 MiB on a Pi Zero. This parser is strict where that matters for the outbox: a
telegram is a reading only when it is whole, its CRC (if it has one, or if the profile requires
one) is right, and every line the profile maps parses with the unit it expects.

Luxembourg's Smarty meters encrypt each telegram (AES-128-GCM, a DLMS general-glo-ciphering
frame starting 0xDB) with a per-meter key. That is not supported: such a frame gives the fault
"encrypted telegram: needs the meter's key", never a reading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final

from agent.push_frames import REVERSED_BITS, Frame, FrameFault
from protocol.quantities import GLOSSARY

# The longest telegram we accept: a DSMR 5 three-phase telegram with four M-Bus channels and a
# long text message is about 2.5 kB; beyond this it is not a telegram.
MAX_TELEGRAM_BYTES: Final = 8192
# Bytes of noise tolerated between telegrams before we say so (a dongle's banner, line noise).
NOISE_REPORT_BYTES: Final = 64

# Unit in the telegram -> the factor to the glossary's unit, per glossary unit.
_UNITS: Final[dict[str, dict[str, float]]] = {
    "Wh": {"kWh": 1000.0, "Wh": 1.0},
    "W": {"kW": 1000.0, "W": 1.0},
    "V": {"V": 1.0},
    "A": {"A": 1.0},
}
_OBIS_RE: Final = re.compile(r"\A\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
_LINE_RE: Final = re.compile(r"\A(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3})((?:\([^()]*\))+)\Z")
_NUMBER_RE: Final = re.compile(r"\A\d{1,15}(?:\.\d{1,9})?\Z")
_TIMESTAMP_RE: Final = re.compile(r"\A(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW])\Z")
_HEX_RE: Final = re.compile(r"\A(?:[0-9A-Fa-f]{2})+\Z")
_GLO_CIPHERING: Final = b"\xdb\x08"
_NOT_TEXT_RE: Final = re.compile(rb"[^\r\n\x20-\x7e]")  # a telegram is printable ASCII lines

OBIS_TIMESTAMP: Final = "0-0:1.0.0"
OBIS_VERSIONS: Final = ("1-3:0.2.8", "0-0:96.1.4")  # DSMR 4+ version; Belgian e-MUCS version
OBIS_IDS: Final = ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0")  # equipment id; Smarty's name


# Polynomials over GF(2) as Python ints, bit i the coefficient of x^i: XOR adds, a shift multiplies
# by a power of x. CRC-16/ARC takes each byte's bits low first (it is "reflected"): the message
# polynomial's highest term is the first byte's lowest bit, hence the byte-reversing table.
_POLY: Final = 0x18005  # x^16 + x^15 + x^2 + 1


def _mod_poly(value: int) -> int:
    """``value`` mod x^16 + x^15 + x^2 + 1, bit by bit: for the few bits folding leaves."""
    for i in range(value.bit_length() - 1, 15, -1):
        if value >> i & 1:
            value ^= _POLY << (i - 16)
    return value


def _folds() -> tuple[tuple[int, ...], ...]:
    """For each j: the exponents of x^(2^j) mod the polynomial (by squaring: x^(2m) = (x^m)^2)."""
    out: list[tuple[int, ...]] = []
    r = 1 << 1  # x^(2^0)
    for _ in range(64):
        out.append(tuple(i for i in range(16) if r >> i & 1))
        square = 0
        for i in range(16):
            if r >> i & 1:
                square ^= r << i
        r = _mod_poly(square)
    return tuple(out)


_FOLDS: Final = _folds()


def crc16(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected as 0xA001, init 0), as DSMR 4 and 5 use.

    Computed as the message polynomial times x^16 mod the CRC polynomial, with the whole
    telegram as one Python int: splitting it at x^m (m a power of two about half its length)
    and replacing the high part H x^m by H (x^m mod poly), a 16-bit factor's few shifted copies,
    halves it in a handful of big-int shifts and XORs, done in C. About ten such folds for a
    1 kB telegram: 15 us here, where a byte-a-step table loop took 75 and two bytes a step (a
    128 KiB table) 38 (a telegram a second was most of a P1 meter's CPU on a Pi). Its tables
    are a few hundred bytes. (A first A/B run saw the P1 agent's VmRSS 0.2-0.3 MiB higher with
    it; a later one gave 34.4-34.5 MiB with the byte table too: bench/README.md.)
    """
    value = int.from_bytes(data.translate(REVERSED_BITS), "big") << 16
    n = value.bit_length()
    while n > 32:
        j = (n - 1).bit_length() - 1  # 2^j < n: the high part is at most as long as the low
        m = 1 << j
        high = value >> m
        value &= (1 << m) - 1
        for shift in _FOLDS[j]:
            value ^= high << shift
        n = value.bit_length()
    rem = _mod_poly(value)
    return int(f"{rem:016b}"[::-1], 2)


class ObisMapError(ValueError):
    """An ``[obis]`` table that cannot be used; the message names the code."""


@dataclass(frozen=True, slots=True)
class Target:
    """One glossary quantity an OBIS line adds to (``sign`` +1) or subtracts from (-1)."""

    quantity: str
    sign: int = 1


@dataclass(frozen=True, slots=True)
class ObisMap:
    """OBIS code -> the quantities its value goes into.

    A quantity fed by several codes (``power_w`` = delivered - received; ``energy_import_wh`` =
    tariff 1 + tariff 2) is set only when every one of its codes is in the telegram: a sum
    missing a term is a wrong number, and a missing number is only a gap.
    """

    codes: tuple[tuple[str, tuple[Target, ...]], ...]

    @classmethod
    def parse(cls, raw: Mapping[str, object], where: str = "obis") -> ObisMap:
        """From TOML: ``"1-0:1.8.1" = ["energy_import_t1_wh", "energy_import_wh"]``, a single
        name for one target, and ``-name`` for a value that is subtracted."""
        if not raw:
            raise ObisMapError(f"{where}: maps no OBIS code")
        codes = []
        for code, value in raw.items():
            if not _OBIS_RE.match(code):
                raise ObisMapError(f"{where}: {code!r} is not an OBIS code like 1-0:1.8.1")
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names:
                raise ObisMapError(f"{where}.{code}: give a quantity name or a list of them")
            targets: list[Target] = []
            for name in names:
                if not isinstance(name, str):
                    raise ObisMapError(f"{where}.{code}: quantity names are strings")
                sign = -1 if name.startswith("-") else 1
                quantity = name.lstrip("-")
                q = GLOSSARY.get(quantity)
                if q is None or q.kind is not float or q.unit not in _UNITS:
                    raise ObisMapError(f"{where}.{code}: {quantity!r} is not a glossary number")
                if targets and GLOSSARY[targets[0].quantity].unit != q.unit:
                    raise ObisMapError(f"{where}.{code}: its quantities have different units")
                targets.append(Target(quantity, sign))
            codes.append((code, tuple(targets)))
        return cls(tuple(codes))

    def needs(self) -> dict[str, frozenset[str]]:
        """Quantity -> the codes it is made of."""
        out: dict[str, set[str]] = {}
        for code, targets in self.codes:
            for t in targets:
                out.setdefault(t.quantity, set()).add(code)
        return {q: frozenset(c) for q, c in out.items()}


@dataclass(frozen=True, slots=True)
class Telegram:
    """A telegram that passed its framing and CRC: header and OBIS code -> value groups."""

    header: str  # the identification after '/', e.g. "ISk5\\2MT382-1000"
    lines: dict[str, tuple[str, ...]]
    has_crc: bool

    @property
    def version(self) -> str:
        """ "DSMR 5.0", "e-MUCS 1.7.1" ..., or "DSMR 2.2/3.0" for a telegram with no version."""
        if (v := self.lines.get("0-0:96.1.4")) and v[-1].isdigit():
            return f"e-MUCS (Belgium), version {v[-1]}"  # as sent, e.g. 50217
        if (v := self.lines.get("1-3:0.2.8")) and v[-1].isdigit() and len(v[-1]) == 2:
            return f"DSMR {v[-1][0]}.{v[-1][1]}"
        return "DSMR 2.2/3.0" if not self.has_crc else "DSMR (version not sent)"

    @property
    def meter_id(self) -> str | None:
        for code in OBIS_IDS:
            if value := self.lines.get(code):
                return _text(value[-1])
        return None


@lru_cache(maxsize=8)  # a meter sends its same id in every telegram
def _text(value: str) -> str:
    """DSMR 4+ sends text as hex-encoded ASCII; DSMR 2.2 as plain text."""
    if _HEX_RE.match(value):
        raw = bytes.fromhex(value)
        if all(0x20 <= b < 0x7F for b in raw):
            return raw.decode("ascii")
    return value


def meter_time_ms(value: str) -> int | None:
    """``YYMMDDhhmmssX`` (X: S summer = UTC+2, W winter = UTC+1; the Benelux's local time)."""
    m = _TIMESTAMP_RE.match(value)
    if m is None:
        return None
    yy, mo, dd, hh, mi, ss = (int(g) for g in m.groups()[:6])
    offset = timedelta(hours=2 if m.group(7) == "S" else 1)
    try:
        local = datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=UTC)
    except ValueError:
        return None
    return int((local - offset).timestamp() * 1000)


def split_lines(body: str) -> dict[str, tuple[str, ...]] | FrameFault:
    """OBIS lines of a telegram's body (between the header and '!') -> their value groups.

    A line starting with '(' continues the one before (DSMR 2.2's gas reading is on its own
    line). Lines that are not OBIS lines are a fault: a telegram is either whole or not used.
    """
    joined: list[str] = []  # the lines with their continuations
    for raw in body.split("\r\n"):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "(" and joined:
            joined[-1] += line
        else:
            joined.append(line)
    lines: dict[str, tuple[str, ...]] = {}
    match = _LINE_RE.match
    for line in joined:
        m = match(line)
        if m is None:
            return FrameFault(f"telegram has a line that is not an OBIS line: {line[:40]!r}")
        code, groups = m.groups()
        # "(a)(b)" -> a, b: the groups hold no parentheses (_LINE_RE), so ")(" only parts them
        lines[code] = tuple(groups[1:-1].split(")("))
    return lines


class ObisPlan:
    """What an :class:`ObisMap` asks of each telegram, worked out once per decoder.

    ``reads``: each mapped code with its glossary unit and the factor for each unit the telegram
    may give it in; ``sums``: each quantity with the (code, sign) terms that make it, in the
    map's order. A telegram a second on a Pi made working this out again each time a third of
    the decoding.
    """

    __slots__ = ("reads", "sums")

    def __init__(self, obis: ObisMap) -> None:
        self.reads: tuple[tuple[str, str, dict[str, float]], ...] = tuple(
            (code, unit, _UNITS[unit])
            for code, targets in obis.codes
            for unit in (GLOSSARY[targets[0].quantity].unit,)
        )
        terms: dict[str, list[tuple[str, int]]] = {}
        for code, targets in obis.codes:
            for t in targets:
                terms.setdefault(t.quantity, []).append((code, t.sign))
        self.sums: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = tuple(
            (quantity, tuple(ts)) for quantity, ts in terms.items()
        )

    def quantities(self, lines: Mapping[str, tuple[str, ...]]) -> dict[str, float] | FrameFault:
        """The glossary quantities a telegram's lines give, or what was wrong."""
        values: dict[str, float] = {}
        for code, glossary_unit, factors in self.reads:
            groups = lines.get(code)
            if groups is None:
                continue
            number, _, unit = groups[-1].partition("*")
            if not _NUMBER_RE.match(number):
                return FrameFault(f"{code} has no number: ({groups[-1][:24]})")
            factor = factors.get(unit)
            if factor is None:
                return FrameFault(f"{code} is in {unit or 'no unit'!r}, not {glossary_unit}")
            values[code] = float(number) * factor
        out: dict[str, float] = {}
        for quantity, terms in self.sums:
            total = 0.0
            for code, sign in terms:
                value = values.get(code)
                if value is None:  # a sum missing a term is a wrong number: leave it out
                    break
                total += sign * value
            else:  # kWh with 3 decimals * 1000: rounded, no 0.1 + 0.2 artefacts
                out[quantity] = round(total, 6)
        return out


class DsmrDecoder:
    """The :class:`~agent.push_frames.FrameDecoder` for P1 ports.

    ``require_crc``: a DSMR 4/5 profile refuses a telegram without a CRC (a cut one could look
    like a DSMR 2.2 telegram otherwise); a DSMR 2.2 profile takes both. The last good telegram's
    header and version are kept for ``scan``.
    """

    def __init__(self, obis: ObisMap, *, require_crc: bool = True) -> None:
        self.obis = obis  # and its plan
        self.require_crc = require_crc
        self._buffer = bytearray()
        self._noise = 0  # bytes dropped before a '/' since the last fault or telegram
        self._encrypted = False  # an encrypted frame's start was among them
        self._skip = 0  # bytes still to come of an encrypted frame being skipped
        self.last: Telegram | None = None

    @property
    def obis(self) -> ObisMap:
        return self._obis

    @obis.setter
    def obis(self, obis: ObisMap) -> None:
        self._obis = obis
        self._plan = ObisPlan(obis)

    def feed(self, data: bytes) -> list[Frame | FrameFault]:
        out: list[Frame | FrameFault] = []
        self._buffer += data
        while True:
            item = self._next()
            if item is None:
                break
            out.append(item)
        if self._encrypted:
            self._encrypted, self._noise = False, 0
            out.append(FrameFault("encrypted telegram (Luxembourg Smarty): needs the meter's key"))
        elif self._noise >= NOISE_REPORT_BYTES:
            out.append(self._noise_fault())
        return out

    def _noise_fault(self) -> FrameFault:
        n, self._noise = self._noise, 0
        return FrameFault(
            f"{n} bytes of noise and no telegram: wrong baud rate or framing, or not a P1 port"
        )

    def _skip_encrypted(self) -> bool:
        """Drop encrypted frames (and the rest of one) at the buffer's start; False when more
        bytes are needed to know how long the next one is."""
        buf = self._buffer
        while True:
            if self._skip:  # the rest of an encrypted frame: its bytes are not telegram text
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return True
            start = buf.find(b"/")
            glo = buf.find(_GLO_CIPHERING, 0, start if start >= 0 else len(buf))
            if glo < 0:
                return True
            # DB 08 <system title: 8> 82 <length: 2> <length bytes>: skipped whole, once known.
            if len(buf) < glo + 13:
                return False
            self._drop(glo)
            self._encrypted = True
            length = int.from_bytes(buf[11:13], "big") if buf[10] == 0x82 else MAX_TELEGRAM_BYTES
            self._skip = 13 + length if length < MAX_TELEGRAM_BYTES else 2  # else noise

    def _next(self) -> Frame | FrameFault | None:
        if not self._skip_encrypted():
            return None
        buf = self._buffer
        start = buf.find(b"/")
        if start < 0:  # keep a last 0xDB: it may start an encrypted frame's DB 08
            self._drop(len(buf) - buf.endswith(b"\xdb"))
            return None
        if start > 0:
            self._drop(start)
        end = buf.find(b"!")
        restart = buf.find(b"/", 1, end if end >= 0 else len(buf))
        if restart > 0:  # a new telegram began before this one ended
            del buf[:restart]
            return FrameFault("partial telegram: cut off before its end '!'")
        if end < 0:
            if len(buf) > MAX_TELEGRAM_BYTES:
                n = len(buf)
                buf.clear()
                return FrameFault(f"{n} bytes without a telegram end: not a P1 telegram stream")
            return None
        tail = bytes(buf[end + 1 : end + 7])
        if tail[:2] == b"\r\n":  # DSMR 2.2/3.0: no CRC
            crc_text, size = None, end + 3
        elif _is_hex(tail[:4]) and len(tail) == 6 and tail[4:] == b"\r\n":
            crc_text, size = tail[:4].decode("ascii"), end + 7
        elif b"\r\n".startswith(tail) or (_is_hex(tail[:4]) and b"\r\n".startswith(tail[4:])):
            return None  # the CRC or its line end has not arrived yet
        else:
            del buf[: end + 1]
            return FrameFault("telegram end '!' is not followed by a CRC and a line end")
        raw = bytes(buf[:size])
        del buf[:size]
        self._noise = 0
        return self._decode(raw, end, crc_text)

    def _drop(self, n: int) -> None:
        dropped = self._buffer[:n]
        del self._buffer[:n]
        # A DLMS general-glo-ciphering frame: tag 0xDB, then an 8-byte system title.
        self._encrypted = self._encrypted or _GLO_CIPHERING in dropped
        self._noise += len(dropped) - dropped.count(b"\r") - dropped.count(b"\n")

    def _decode(self, raw: bytes, end: int, crc_text: str | None) -> Frame | FrameFault:
        if crc_text is None:
            if self.require_crc:
                return FrameFault("telegram has no CRC, and this meter's profile requires one")
        elif (computed := crc16(raw[: end + 1])) != int(crc_text, 16):
            return FrameFault(f"telegram failed its CRC (sent {crc_text}, computed {computed:04X})")
        if _NOT_TEXT_RE.search(raw):
            return FrameFault(
                "telegram has bytes that are not ASCII text: wrong framing (7E1 vs 8N1)?"
            )
        text = raw[1:end].decode("ascii")
        header, sep, body = text.partition("\r\n")
        if not sep or not header or len(header) > 96:
            return FrameFault("telegram has no identification line")
        lines = split_lines(body)
        if isinstance(lines, FrameFault):
            return lines
        telegram = Telegram(header, lines, crc_text is not None)
        values = self._plan.quantities(lines)
        if isinstance(values, FrameFault):
            return values
        if not values:
            return FrameFault("telegram holds none of the OBIS codes this meter's profile maps")
        self.last = telegram
        stamp = lines.get(OBIS_TIMESTAMP)
        return Frame(values, telegram.meter_id, meter_time_ms(stamp[-1]) if stamp else None)


def _is_hex(data: bytes) -> bool:
    return all(chr(b) in "0123456789ABCDEF" for b in data)
