"""SML transport protocol version 1: finding frames in an optical port's byte stream.

A meter's optical interface sends one SML file every second or few, wrapped as (SML 1.04 section
8, BSI TR-03109-1 part b)::

    1b1b1b1b 01010101 | body, 1b1b1b1b in it doubled, 00-padded to 4 bytes | 1b1b1b1b 1a PP CC CC

``PP`` is how many padding bytes were added (0 to 3) and ``CC CC`` is CRC-16/X-25 over every byte
before it, from the first ``1b`` to ``PP``, sent low byte first. That byte order is checked on two
published meter dumps (``tests/fixtures/sml/README.md``). A body whose CRC is wrong is a fault,
never handed on: the optical link is an IR LED and a phototransistor, and a bit lost to sunlight
would otherwise become a wrong meter reading.

The reader keeps at most :data:`MAX_FRAME_BYTES` of an unfinished frame; everything it has to drop
(noise, a frame with no end, bytes before the first frame) comes back as a :class:`FrameFault`.
"""

from __future__ import annotations

import binascii
from typing import Final

from agent.push_frames import REVERSED_BITS, FrameFault

ESCAPE: Final = b"\x1b\x1b\x1b\x1b"
BEGIN: Final = ESCAPE + b"\x01\x01\x01\x01"
#: Real SML files are 200 to 1000 bytes; one with a signature and a load profile stays under 4 KiB.
MAX_FRAME_BYTES: Final = 8192


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X-25 (poly 0x1021 reflected, init and xorout 0xffff): "123456789" gives 0x906e.

    X-25 is CRC-CCITT with reflected bits, so it is the C-speed binascii.crc_hqx (not reflected)
    over bit-reversed bytes, reversed back (10x the pure-Python loop)."""
    crc = binascii.crc_hqx(bytes(data).translate(REVERSED_BITS), 0xFFFF)
    return int(f"{crc:016b}"[::-1], 2) ^ 0xFFFF


class SmlTransportReader:
    """Cuts an SML byte stream, fed in chunks of any size, into checked, unescaped bodies."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._in_frame = False  # the buffer starts with BEGIN
        self._scan = 0  # where to look for the next escape inside the frame
        self._max = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (at most ``max_frame_bytes`` between feeds)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameFault]:
        """Bodies (padding removed) whose transport CRC is right, and faults, in stream order."""
        self._buf += data
        out: list[bytes | FrameFault] = []
        dropped = 0
        while True:
            if not self._in_frame:
                start = self._buf.find(BEGIN)
                if start < 0:
                    keep = len(BEGIN) - 1  # the tail may be the start of a BEGIN
                    if len(self._buf) > keep:
                        dropped += len(self._buf) - keep
                        del self._buf[:-keep]
                    break
                dropped += start
                del self._buf[:start]
                self._in_frame = True
                self._scan = len(BEGIN)
            if dropped:
                out.append(FrameFault(f"skipped {dropped} bytes outside any SML frame"))
                dropped = 0
            step = self._step()
            if isinstance(step, bool):
                if not step:
                    break
            else:
                out.append(step)
        if dropped:
            out.append(FrameFault(f"skipped {dropped} bytes outside any SML frame"))
        return out

    def _step(self) -> bytes | FrameFault | bool:
        """Advance inside a frame: a body or a fault, True to go on, or False to wait for bytes."""
        buf = self._buf
        esc = buf.find(ESCAPE, self._scan)
        if esc < 0 or len(buf) < esc + 8:
            if esc < 0:
                self._scan = max(len(BEGIN), len(buf) - 3)
            if len(buf) > self._max:
                self._restart(1)
                return FrameFault(f"SML frame had no end within {self._max} bytes; dropped it")
            return False
        code = bytes(buf[esc + 4 : esc + 8])
        if code == ESCAPE:  # a 1b1b1b1b in the data, sent twice
            self._scan = esc + 8
            return True
        if code == BEGIN[4:]:
            self._restart(esc)
            return FrameFault("SML frame cut short: the next frame began before its end")
        if code[0] != 0x1A:
            self._restart(esc + 4)
            return FrameFault(f"SML frame has an unknown escape sequence 1b1b1b1b{code.hex()}")
        frame = bytes(buf[: esc + 8])
        self._restart(esc + 8)
        return _check(frame)

    def _restart(self, drop: int) -> None:
        del self._buf[:drop]
        self._in_frame = False
        self._scan = 0


def _check(frame: bytes) -> bytes | FrameFault:
    """The body of one whole frame (BEGIN to CRC), or why it cannot be used."""
    sent = frame[-2] | frame[-1] << 8
    if crc16_x25(frame[:-2]) != sent:
        return FrameFault("SML frame failed its CRC check")
    padding = frame[-3]
    data = frame[len(BEGIN) : -8].replace(ESCAPE + ESCAPE, ESCAPE)
    if padding > 3 or padding > len(data) or any(data[len(data) - padding :]):
        return FrameFault(f"SML frame has a bad padding count {padding}")
    return data[: len(data) - padding]
