"""Push meters (P1/DSMR, SML): a thread owns the port, the poll takes the latest good frame.

A push meter sends a frame every second or ten whether anyone listens or not, so it is not polled
like a Modbus device. A reader thread (:class:`PushMeter`) opens the port, a serial device
(``serial:///dev/ttyUSB0?baud=115200&framing=8N1``, pyserial) or a TCP dongle
(``tcp://host:port``), reconnecting with backoff when it closes or fails, and feeds the bytes to a
:class:`~agent.push_frames.FrameDecoder`. It keeps the latest good frame with the time it arrived
on the injected clock. The supervisor's poll (:meth:`PushMeter.read`) then returns that frame's
quantities, so a reading per poll interval goes to the outbox whatever the meter's own rate.

What never reaches the outbox:

- a frame older than ``stale_after_s``: the poll raises a transient
  :class:`~agent.modbus_io.DeviceError` saying why ("no P1 telegram for 31 s", "last 5 P1
  telegrams gave no reading: telegram failed its CRC ..."), which the supervisor shows as the
  device's fault status;
- a frame whose counter is lower than one already accepted (a glitch, or a frame from another
  meter on a shared dongle): dropped with a warning, and counted as a bad frame, so the status
  says so if it goes on.

The decoder is the only part that knows the protocol: SML plugs in with its own decoder and
``what="SML frame"``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

from agent.modbus_io import DeviceError
from agent.push_frames import Frame, FrameDecoder, FrameFault
from protocol.clock import Clock
from protocol.quantities import COUNTERS, Role

log = logging.getLogger(__name__)

STALE_AFTER_S: Final = 30.0  # DSMR 4 sends every 10 s: three missed telegrams
# How long a read on the port blocks when nothing comes. Stopping does not wait for it (close()
# interrupts the read), so it only bounds how often an idle reader wakes: at 0.25 s that was
# 240 wakeups a minute for nothing, a third of a P1 meter's reader thread's CPU.
READ_TIMEOUT_S: Final = 5.0
CHUNK_BYTES: Final = 4096
BACKOFF_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)  # reopening a port that failed, wall seconds
FRAMINGS: Final = ("8N1", "7E1")


@dataclass(frozen=True, slots=True)
class PortAddress:
    """Where a push meter's bytes come from."""

    kind: Literal["serial", "tcp"]
    device: str = ""
    host: str = ""
    port: int = 0
    baud: int | None = None  # None: the profile's
    framing: str | None = None  # "8N1" or "7E1"; None: the profile's

    @property
    def key(self) -> str:
        """The physical port: one meter per port."""
        return f"tcp://{self.host}:{self.port}" if self.kind == "tcp" else f"serial://{self.device}"


def parse_port_url(url: str, what: str = "P1") -> PortAddress:
    """``serial:///dev/ttyUSB0?baud=115200&framing=8N1`` or ``tcp://host:port``; raises
    ValueError with a message an installer can act on."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{what} URL {url!r}: a TCP dongle is tcp://host:port")
        return PortAddress("tcp", host=parts.hostname, port=port)
    if parts.scheme == "serial":
        if not parts.path.startswith("/dev/") or parts.netloc:
            raise ValueError(f"{what} URL {url!r}: a serial port is serial:///dev/ttyUSB0")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"baud", "framing"}
        if unknown:
            raise ValueError(f"{what} URL {url!r}: unknown option {sorted(unknown)[0]!r}")
        baud = None
        if "baud" in query:
            if not query["baud"].isdigit() or not 300 <= int(query["baud"]) <= 921600:
                raise ValueError(f"{what} URL {url!r}: baud is a number from 300 to 921600")
            baud = int(query["baud"])
        framing = query.get("framing", "").upper() or None
        if framing is not None and framing not in FRAMINGS:
            raise ValueError(f"{what} URL {url!r}: framing is 8N1 or 7E1")
        return PortAddress("serial", device=parts.path, baud=baud, framing=framing)
    raise ValueError(f"{what} URL {url!r} must start with serial:// or tcp://")


class Port(Protocol):
    """An open port: ``read`` returns what arrived within a timeout (b"" for nothing); raises
    OSError (EOFError for a TCP peer that closed). ``interrupt``, from another thread, makes a
    blocked ``read`` return at once."""

    def read(self) -> bytes: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class _SerialPort:
    def __init__(self, address: PortAddress, baud: int, framing: str) -> None:
        import serial  # noqa: PLC0415 - only homes with a serial meter need it

        seven = framing == "7E1"
        try:
            self._serial: Any = serial.Serial(
                address.device,
                baudrate=baud,
                bytesize=serial.SEVENBITS if seven else serial.EIGHTBITS,
                parity=serial.PARITY_EVEN if seven else serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=READ_TIMEOUT_S,
            )
        except (serial.SerialException, ValueError) as exc:
            raise OSError(f"cannot open {address.device}: {_reason(exc)}") from None

    def read(self) -> bytes:
        import serial  # noqa: PLC0415

        try:
            data: bytes = self._serial.read(max(1, min(self._serial.in_waiting, CHUNK_BYTES)))
        except serial.SerialException as exc:
            raise OSError(f"serial port failed: {_reason(exc)}") from None
        return data

    def interrupt(self) -> None:
        with contextlib.suppress(Exception):  # the port may be closing already
            self._serial.cancel_read()

    def close(self) -> None:
        self._serial.close()


class _TcpPort:
    def __init__(self, address: PortAddress) -> None:
        self._where = f"{address.host}:{address.port}"
        try:
            self._sock = socket.create_connection((address.host, address.port), timeout=5.0)
        except OSError as exc:
            raise OSError(f"cannot connect to {self._where}: {_reason(exc)}") from None
        self._sock.settimeout(READ_TIMEOUT_S)

    def read(self) -> bytes:
        try:
            data = self._sock.recv(CHUNK_BYTES)
        except TimeoutError:
            return b""
        if not data:
            raise EOFError(f"{self._where} closed the connection")
        return data

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):  # not connected any more: nothing to interrupt
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_port(address: PortAddress, baud: int, framing: str) -> Port:
    """Open the port; raises OSError saying why."""
    if address.kind == "tcp":
        return _TcpPort(address)
    return _SerialPort(address, address.baud or baud, address.framing or framing)


class PushMeter:
    """A push meter that reads like any device (:class:`agent.devices.Readable`)."""

    def __init__(
        self,
        name: str,
        role: Role,
        url: str,
        decoder: FrameDecoder,
        clock: Clock,
        *,
        poll_interval_s: float = 10.0,
        baud: int = 115200,
        framing: str = "8N1",
        stale_after_s: float = STALE_AFTER_S,
        what: str = "P1 telegram",
        opener: Callable[[PortAddress, int, str], Port] = open_port,
    ) -> None:
        self.name = name
        self.role = role
        self.url = url
        self.address = parse_port_url(url)
        self.decoder = decoder
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.baud = baud
        self.framing = framing
        self.stale_after_ms = int(stale_after_s * 1000)
        self.what = what
        self._opener = opener
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Port | None = None  # the open port, for close() to interrupt its read
        self._latest: tuple[int, Frame] | None = None  # (arrived at, ms on the clock; frame)
        self._high: dict[str, float] = {}  # the highest value each counter was accepted at
        self._bad_in_a_row = 0
        self._last_fault: str | None = None
        self._port_error: str | None = None
        self.frames = 0  # good frames taken
        self.faults = 0  # frames (or stretches of bytes) that gave no reading
        self.got_frame = threading.Condition(self._lock)

    # --- the reader thread ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"push-{self.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                port = self._opener(self.address, self.baud, self.framing)
            except OSError as exc:
                self._set_port_error(str(exc))
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                self._stop.wait(delay)
                continue
            self._set_port_error(None)
            with self._lock:
                self._port = port
            if self._stop.is_set():  # close() came while the port was opening
                port.interrupt()
            try:
                while not self._stop.is_set():
                    data = port.read()
                    if data:
                        failures = 0
                        for item in self._decode(data):
                            self._take(item)
            except (OSError, EOFError) as exc:
                if not self._stop.is_set():
                    self._set_port_error(str(exc) or type(exc).__name__)
                    self._stop.wait(BACKOFF_S[0])
            finally:
                with self._lock:
                    self._port = None
                port.close()

    def _decode(self, data: bytes) -> list[Frame | FrameFault]:
        try:
            return self.decoder.feed(data)
        except Exception as exc:  # a decoder bug must not end the reader thread for good
            if self._last_fault is None or not self._last_fault.startswith("internal error"):
                log.exception("%s: decoding failed unexpectedly", self.name)
            return [FrameFault(f"internal error decoding: {exc!r}")]

    def _set_port_error(self, message: str | None) -> None:
        with self._lock:
            if message != self._port_error:
                if message:
                    log.warning("%s: %s", self.name, message)
                elif self._port_error:
                    log.info("%s: port open again", self.name)
            self._port_error = message

    def _take(self, item: Frame | FrameFault) -> None:
        with self._lock:
            if isinstance(item, Frame):
                fault = self._went_backwards(item)
                if fault is None:
                    for name, value in item.quantities.items():
                        if name in COUNTERS:
                            self._high[name] = value
                    self._latest = (self.clock.now_ms(), item)
                    self._bad_in_a_row = 0
                    self.frames += 1
                    self.got_frame.notify_all()
                    return
                item = fault
            self.faults += 1
            self._bad_in_a_row += 1
            if item.reason != self._last_fault:
                log.warning("%s: %s", self.name, item.reason)
            self._last_fault = item.reason
            self.got_frame.notify_all()

    def _went_backwards(self, frame: Frame) -> FrameFault | None:
        for name, value in frame.quantities.items():
            high = self._high.get(name) if name in COUNTERS else None
            if high is not None and value < high:
                return FrameFault(
                    f"{self.what} dropped: {name} went backwards from {high:.10g} to "
                    f"{value:.10g} Wh"
                )
        return None

    # --- what the supervisor and the installer see ----------------------------------------

    def read(self) -> dict[str, float | str]:
        """The latest good frame's quantities; raises a transient :class:`DeviceError` saying
        why there is none fresh enough."""
        self.start()
        with self._lock:
            now = self.clock.now_ms()
            if self._latest is not None and now - self._latest[0] <= self.stale_after_ms:
                return dict(self._latest[1].quantities)
            raise DeviceError(self._why_none(now), transient=True)

    def _why_none(self, now: int) -> str:
        if self._port_error:
            return self._port_error
        if self._bad_in_a_row:
            return f"last {self._bad_in_a_row} {self.what}s gave no reading: {self._last_fault}"
        if self._latest is None:
            return f"no {self.what} yet from {self.url}"
        return f"no {self.what} for {(now - self._latest[0]) / 1000:.0f} s"

    def wait(self, timeout_s: float, *, frames: int = 1) -> bool:
        """Wait (wall time) until ``frames`` good frames arrived since start, or a bad one when
        none did; True when the frames came. For ``read`` and ``scan`` on the command line."""
        self.start()
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.frames < frames:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.got_frame.wait(min(left, 0.5))
            return True

    @property
    def latest(self) -> Frame | None:
        """The latest good frame, however old (for the installer's commands)."""
        with self._lock:
            return None if self._latest is None else self._latest[1]

    @property
    def last_fault(self) -> str | None:
        with self._lock:
            return self._last_fault

    @property
    def port_error(self) -> str | None:
        with self._lock:
            return self._port_error

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            port = self._port
        if port is not None:
            port.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
