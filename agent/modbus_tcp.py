"""A small synchronous Modbus TCP client: read holding (FC 3) and input (FC 4) registers.

Why the agent has its own: on a Pi polling a meter every second, CPU per read is most of the
agent's budget (issue 22: at most 0.1 CPU-s per minute). Reading an SDM630's 34 input
registers once a second, pymodbus's ``ModbusTcpClient`` costs about 0.35 ms of thread CPU a read
(cold caches, as the poll loop wakes) where this client costs about 0.2 ms: some 0.009 CPU-s a
minute saved, a tenth of the budget. The figures are in ``bench/README.md`` ("Modbus TCP reads:
pymodbus's client vs the agent's own"). RTU buses stay on
pymodbus's ``ModbusSerialClient`` (``agent.modbus_io``): RTU framing (silent intervals, CRC) is
where a library earns its keep, and serial polls are slow enough that its cost does not show.

The wire is pure functions over bytes, :func:`build_read_request` and :func:`parse_read_response`
(with :func:`frame_length` to know how much to read); :class:`TcpClient` is the thin socket part.
References: MODBUS Application Protocol Specification v1.1b3 ("the spec": PDU, function codes,
exception responses) and MODBUS Messaging on TCP/IP Implementation Guide v1.0b ("the guide":
the MBAP header).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Final

READ_HOLDING: Final = 3  # spec 6.3
READ_INPUT: Final = 4  # spec 6.4
MAX_READ_COUNT: Final = 125  # spec 6.3/6.4: quantity of registers 1 to 125 (0x7D)
MBAP_SIZE: Final = 7  # guide 3.1.3: transaction id, protocol id, length (2 bytes each), unit id
MIN_LENGTH: Final = 3  # unit id + an exception response's function code and exception code
MAX_READ_LENGTH: Final = 254
"""The largest MBAP length taken: the guide's 260-byte ADU less the 6 bytes before the unit id.
An answer to a read uses at most 253 (unit id, function, byte count, 125 registers); the byte
count check refuses the rest."""

_REQUEST: Final = struct.Struct(">HHHBBHH")
_RECV_SIZE: Final = 4096


class ModbusTcpError(Exception):
    """Anything that went wrong with one request; every error this module raises is one."""


class ProtocolError(ModbusTcpError):
    """An answer that breaks the protocol. Transient, but the connection cannot be trusted any
    more (where the next answer starts is unknown): the client closes it."""


class ShortAnswer(ProtocolError):
    """A well-framed answer carrying a different number of registers than asked for."""

    def __init__(self, got: int, asked: int) -> None:
        super().__init__(f"returned {got} of {asked} registers")
        self.got = got
        self.asked = asked


class StaleAnswer(ModbusTcpError):
    """A well-framed answer to an earlier request (its transaction id is not the one awaited),
    typically one that came after its request timed out. The reader discards it."""

    def __init__(self, tid: int, expected: int) -> None:
        super().__init__(f"answer to transaction {tid}, waiting for {expected}")
        self.tid = tid


class ExceptionAnswer(ModbusTcpError):
    """The device (or a gateway) answered with a Modbus exception (spec 7): ``code`` is the
    exception code. The framing was sound, so the connection stays usable."""

    def __init__(self, function: int, code: int) -> None:
        super().__init__(f"exception {code} for function {function}")
        self.function = function
        self.code = code


class NoAnswer(ModbusTcpError):
    """Nothing (or only part of an answer) arrived before the request's deadline."""


class ConnectionLost(ModbusTcpError):
    """The device closed the connection before its answer was complete."""


# --- the wire: pure functions ------------------------------------------------------------------


def build_read_request(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """The ADU reading ``count`` registers from ``address`` with FC 3 or 4: MBAP header (guide
    3.1.3: protocol id 0, length 6 = unit id + the 5-byte PDU) and the PDU (spec 6.3, 6.4).

    Raises ValueError for arguments no valid request can carry."""
    if function not in (READ_HOLDING, READ_INPUT):
        raise ValueError(f"function {function} is not a register read (3 or 4)")
    if not 0 <= tid <= 0xFFFF:
        raise ValueError(f"transaction id {tid} is outside 0-65535")
    if not 0 <= unit <= 0xFF:
        raise ValueError(f"unit id {unit} is outside 0-255")
    if not 1 <= count <= MAX_READ_COUNT:
        raise ValueError(f"register count {count} is outside 1-{MAX_READ_COUNT}")
    if address < 0 or address + count > 0x10000:
        raise ValueError(f"registers {address}+{count} are outside 0-65535")
    return _REQUEST.pack(tid, 0, 6, unit, function, address, count)


def frame_length(header: bytes | bytearray) -> int:
    """The whole ADU's size in bytes (header included) from its first 7 bytes, the MBAP header.

    Raises :class:`ProtocolError` for a protocol id other than 0 (guide 3.1.3: 0 is Modbus) or a
    length no answer to a read can have (3 to 254): after such a header nothing says where the
    next answer starts."""
    if len(header) < MBAP_SIZE:
        raise ProtocolError(f"MBAP header of {len(header)} bytes, not {MBAP_SIZE}")
    protocol: int = (header[2] << 8) | header[3]
    length: int = (header[4] << 8) | header[5]
    if protocol != 0:
        raise ProtocolError(f"protocol id {protocol}, not 0 (Modbus)")
    if not MIN_LENGTH <= length <= MAX_READ_LENGTH:
        raise ProtocolError(f"MBAP length {length} is outside {MIN_LENGTH}-{MAX_READ_LENGTH}")
    return MBAP_SIZE - 1 + length  # the length counts the unit id and what follows it


def parse_read_response(frame: bytes, *, tid: int, function: int, count: int) -> list[int]:
    """The registers in ``frame``, one whole ADU (MBAP header + PDU) answering a read of
    ``count`` registers with ``function`` (3 or 4) sent as transaction ``tid``.

    Raises :class:`StaleAnswer` (another transaction's answer: discard it and read on),
    :class:`ExceptionAnswer` (spec 7: function | 0x80 and one exception code byte),
    :class:`ShortAnswer` or :class:`ProtocolError` (a malformed answer), and nothing else, for
    any bytes at all.

    The unit id is not checked. The transaction id is what pairs an answer with its request
    (guide 3.1.3), and on TCP the unit id only routes through a gateway; some gateways and
    devices answer with unit 0 or 255 rather than echoing the request's, and refusing those
    answers would make a working device look silent.
    """
    length = frame_length(frame)
    if len(frame) != length:
        raise ProtocolError(f"frame of {len(frame)} bytes, its header says {length}")
    got_tid = (frame[0] << 8) | frame[1]
    if got_tid != tid:
        raise StaleAnswer(got_tid, tid)
    fc = frame[7]
    if fc == function | 0x80:
        if length != MBAP_SIZE + 2:
            raise ProtocolError(f"exception answer of {length - MBAP_SIZE} bytes, not 2")
        raise ExceptionAnswer(function, frame[8])
    if fc != function:
        raise ProtocolError(f"function {fc} in the answer to function {function}")
    if length < MBAP_SIZE + 2:
        raise ProtocolError("read answer without a byte count")
    byte_count = frame[8]
    if byte_count != length - MBAP_SIZE - 2:
        raise ProtocolError(f"byte count {byte_count} in an answer of {length} bytes")
    if byte_count % 2:
        raise ProtocolError(f"odd byte count {byte_count} for 16-bit registers")
    if byte_count != 2 * count:
        raise ShortAnswer(byte_count // 2, count)
    return list(struct.unpack_from(f">{count}H", frame, MBAP_SIZE + 2))


# --- the socket -----------------------------------------------------------------------------------


class TcpClient:
    """One TCP connection to a Modbus server; not thread-safe (``agent.modbus_io`` locks).

    Any error but an exception answer closes the connection, so a late answer can never be
    taken for the next request's; the next :meth:`read` connects again.

    The socket stays blocking, with the deadline in the kernel (SO_RCVTIMEO, SO_SNDTIMEO) rather
    than Python's socket timeout: a read is then one send and one recv, where Python's timeout
    adds a failed recv, a poll and a mode switch per call (about 15 us of CPU per read on a cold
    cache, bench/README.md). Where the kernel refuses the option, Python's timeout is used.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._buf = bytearray()  # bytes received beyond the last answer taken
        self._tid = 0
        self._timeout_s = 0.0  # the receive timeout the socket has now
        self._kernel_timeouts = True

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, timeout_s: float) -> None:
        """Open the connection within ``timeout_s`` seconds; raises OSError."""
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        # Each request is one small write awaiting an answer: Nagle would only delay it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._timeout_s = 0.0
        if self._kernel_timeouts:
            sock.settimeout(None)
            try:
                self._set_timeout(sock, timeout_s)
            except OSError:
                self._kernel_timeouts = False
                sock.settimeout(timeout_s)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def read(
        self, function: int, address: int, count: int, unit: int, timeout_s: float
    ) -> list[int]:
        """``count`` registers, answered within ``timeout_s`` seconds of sending (one deadline
        for the whole answer, however many segments it comes in). Connects first if needed.

        Raises ValueError (bad arguments), OSError (cannot connect, socket errors) or a
        :class:`ModbusTcpError`."""
        self._tid = tid = (self._tid + 1) & 0xFFFF  # guide 3.1.3: a new id per transaction
        request = build_read_request(tid, unit, function, address, count)
        sock = self._sock
        if sock is None:
            self.connect(timeout_s)
            sock = self._sock
            assert sock is not None
        try:
            deadline = time.monotonic() + timeout_s
            if timeout_s != self._timeout_s:
                self._set_timeout(sock, timeout_s)
            sock.sendall(request)
            if not self._buf:
                # The usual case: the answer arrives whole, in one segment, and alone.
                chunk = sock.recv(_RECV_SIZE)
                if len(chunk) >= MBAP_SIZE and frame_length(chunk) == len(chunk):
                    try:
                        return parse_read_response(chunk, tid=tid, function=function, count=count)
                    except StaleAnswer:
                        pass
                elif not chunk:
                    raise ConnectionLost("connection closed by the device before answering")
                else:
                    self._buf += chunk
            while True:
                frame = self._next_frame(sock, deadline)
                try:
                    return parse_read_response(frame, tid=tid, function=function, count=count)
                except StaleAnswer:
                    continue
        except ExceptionAnswer:
            raise
        except (TimeoutError, BlockingIOError):  # Python's timeout, or the kernel's
            self.close()
            raise NoAnswer("timed out") from None
        except BaseException:
            self.close()
            raise

    def _next_frame(self, sock: socket.socket, deadline: float) -> bytes:
        """The next whole ADU, from what is buffered and what arrives before ``deadline``."""
        buf = self._buf
        while True:
            if len(buf) >= MBAP_SIZE:
                size = frame_length(buf)
                if len(buf) >= size:
                    frame = bytes(buf[:size])
                    del buf[:size]
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoAnswer("timed out")
            self._set_timeout(sock, remaining)
            chunk = sock.recv(_RECV_SIZE)
            if not chunk:
                where = "mid-answer" if buf else "before answering"
                raise ConnectionLost(f"connection closed by the device {where}")
            buf += chunk

    def _set_timeout(self, sock: socket.socket, timeout_s: float) -> None:
        """Let a send or receive block at most ``timeout_s`` seconds (raises OSError when the
        kernel refuses the option)."""
        self._timeout_s = timeout_s
        if not self._kernel_timeouts:
            sock.settimeout(timeout_s)
            return
        # A zero timeval means "wait forever": never round a short timeout down to it.
        us = max(1, round(timeout_s * 1e6))
        tv = _timeval(us // 1_000_000, us % 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _timeval(seconds: int, microseconds: int) -> bytes:
    """A ``struct timeval`` as the kernel reads it for SO_RCVTIMEO: two C longs, or two 64-bit
    fields where a 32-bit system has a 64-bit ``time_t`` (then Python's SO_RCVTIMEO is the
    kernel's SO_RCVTIMEO_NEW, which takes 16 bytes)."""
    if struct.calcsize("l") == 4 and socket.SO_RCVTIMEO == _SO_RCVTIMEO_NEW:
        return struct.pack("qq", seconds, microseconds)
    return struct.pack("ll", seconds, microseconds)


_SO_RCVTIMEO_NEW: Final = 66  # linux/asm-generic/socket.h
