"""The Modbus edge: one client per bus, with errors sorted into what to do about them.

A TCP bus is read by the agent's own client (:mod:`agent.modbus_tcp`, for CPU per read on a Pi);
an RTU bus by pymodbus's ``ModbusSerialClient``.

A bus is ``tcp://host[:502]`` or ``rtu:///dev/ttyUSB0?baud=9600&parity=N``. Modbus exception codes
1-3 (illegal function, address, value) mean the configuration is wrong (wrong unit id, wrong
profile), and retrying cannot help. Everything else is transient: timeouts, broken frames (an RTU
frame with a bad CRC is dropped and shows up as a timeout), a busy or failing device (codes 4, 5,
6) and a gateway that cannot reach the device behind it (0x0A, 0x0B).

One lock per bus keeps one request in flight, as RS-485 and most TCP gateways need; devices that
share a bus URL (or, for RTU, a serial port) share its :class:`ModbusBus`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from agent.modbus_tcp import (
    READ_HOLDING,
    READ_INPUT,
    ExceptionAnswer,
    ModbusTcpError,
    NoAnswer,
    ShortAnswer,
    TcpClient,
)

log = logging.getLogger(__name__)

# pymodbus logs every timeout and refused connection at ERROR, once per request. The supervisor
# (agent.devices) logs one line per outage and reports it in the status instead.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

DEFAULT_TIMEOUT_S: Final = 1.5
CONFIG_EXCEPTION_CODES: Final = frozenset({1, 2, 3})
GATEWAY_CODES: Final = frozenset({10, 11})  # the gateway answered; the device behind it did not
EXCEPTION_NAMES: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge (busy with a long command)",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


class DeviceError(OSError):
    """A read that failed. ``transient`` says whether a later retry may succeed; ``code`` is the
    Modbus exception code when the device (or a gateway) answered with one."""

    def __init__(self, message: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code

    @property
    def answered(self) -> bool:
        """True when a device at this unit id answered (with an exception): it is there."""
        return self.code is not None and self.code not in GATEWAY_CODES


@dataclass(frozen=True, slots=True)
class BusAddress:
    kind: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 502
    device: str = ""
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1

    @property
    def key(self) -> str:
        """What identifies the physical bus: a TCP endpoint, or a serial port."""
        return f"tcp://{self.host}:{self.port}" if self.kind == "tcp" else f"rtu://{self.device}"


def parse_bus_url(url: str) -> BusAddress:
    """Parse a bus URL; raises ValueError with a message an installer can act on."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        if not parts.hostname:
            raise ValueError(f"Modbus URL {url!r} names no host")
        try:
            port = parts.port or 502
        except ValueError:
            raise ValueError(f"Modbus URL {url!r} has an invalid port") from None
        return BusAddress("tcp", host=parts.hostname, port=port)
    if parts.scheme == "rtu":
        if not parts.path.startswith("/dev/"):
            raise ValueError(
                f"Modbus URL {url!r}: an RTU bus is a serial device, rtu:///dev/ttyUSB0"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"baud", "parity", "stopbits"}
        if unknown:
            raise ValueError(f"Modbus URL {url!r}: unknown option {sorted(unknown)[0]!r}")
        parity = query.get("parity", "N").upper()
        if parity not in ("N", "E", "O"):
            raise ValueError(f"Modbus URL {url!r}: parity must be N, E or O")
        try:
            baud = int(query.get("baud", "9600"))
            stopbits = int(query.get("stopbits", "1"))
        except ValueError:
            raise ValueError(f"Modbus URL {url!r}: baud and stopbits are numbers") from None
        if not 300 <= baud <= 921600 or stopbits not in (1, 2):
            raise ValueError(f"Modbus URL {url!r}: baud 300-921600, stopbits 1 or 2")
        return BusAddress("rtu", device=parts.path, baud=baud, parity=parity, stopbits=stopbits)  # type: ignore[arg-type]
    raise ValueError(f"Modbus URL {url!r} must start with tcp:// or rtu://")


class ModbusBus:
    """One physical bus. A lock keeps one request in flight, as RS-485 and most gateways need."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.address = parse_bus_url(url)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        a = self.address
        self._client: TcpClient | ModbusSerialClient
        if a.kind == "tcp":
            self._client = TcpClient(a.host, a.port)
        else:
            self._client = ModbusSerialClient(
                a.device,
                baudrate=a.baud,
                parity=a.parity,
                stopbits=a.stopbits,
                timeout=timeout_s,
                retries=0,
            )

    @property
    def key(self) -> str:
        return self.address.key

    def read(
        self,
        table: Literal["holding", "input"],
        address: int,
        count: int,
        unit: int,
        *,
        timeout_s: float | None = None,
    ) -> list[int]:
        """``count`` registers from ``address``; raises :class:`DeviceError`."""
        timeout = timeout_s or self.timeout_s
        with self._lock:
            if isinstance(self._client, TcpClient):
                return self._read_tcp(self._client, table, address, count, unit, timeout)
            return self._read_rtu(self._client, table, address, count, unit, timeout)

    def _read_tcp(
        self,
        client: TcpClient,
        table: Literal["holding", "input"],
        address: int,
        count: int,
        unit: int,
        timeout_s: float,
    ) -> list[int]:
        if not client.connected:
            try:
                client.connect(timeout_s)
            except OSError:
                raise DeviceError(f"cannot connect to {self.url}", transient=True) from None
        try:
            # The client closes the connection on any error but an exception answer.
            return client.read(
                READ_HOLDING if table == "holding" else READ_INPUT, address, count, unit, timeout_s
            )
        except (ModbusTcpError, OSError, ValueError) as exc:
            raise self._tcp_error(exc, table, address, count, unit) from None

    def _tcp_error(
        self, exc: Exception, table: str, address: int, count: int, unit: int
    ) -> DeviceError:
        """The DeviceError for what went wrong, in the words pymodbus's failures were given."""
        where = f"unit {unit} on {self.url}"
        if isinstance(exc, ExceptionAnswer):
            return _exception_error(where, table, address, count, exc.code)
        if isinstance(exc, ShortAnswer):
            return DeviceError(f"{where} returned {exc.got} of {count} registers", transient=True)
        if isinstance(exc, NoAnswer):
            return DeviceError(f"no answer from {where}: timed out", transient=True)
        if isinstance(exc, ValueError):  # a request no device could answer; nothing was sent
            return DeviceError(f"cannot ask {where}: {exc}", transient=False)
        return DeviceError(f"no answer from {where}: {_short(exc)}", transient=True)

    def _read_rtu(
        self,
        client: ModbusSerialClient,
        table: Literal["holding", "input"],
        address: int,
        count: int,
        unit: int,
        timeout_s: float,
    ) -> list[int]:
        where = f"unit {unit} on {self.url}"
        client.comm_params.timeout_connect = timeout_s
        if not client.connected and not client.connect():
            raise DeviceError(
                f"cannot open {self.address.device}: missing, or in use by another "
                "program (a running agent holds its serial port)",
                transient=True,
            )
        try:
            if table == "holding":
                rr = client.read_holding_registers(address, count=count, device_id=unit)
            else:
                rr = client.read_input_registers(address, count=count, device_id=unit)
        except (ModbusException, OSError) as exc:
            # The client drops stale bytes before each request: no need to start afresh.
            raise DeviceError(f"no answer from {where}: {_short(exc)}", transient=True) from None
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise _exception_error(where, table, address, count, code)
        registers: list[int] = list(rr.registers[:count])
        if len(registers) != count:
            raise DeviceError(
                f"{where} returned {len(registers)} of {count} registers", transient=True
            )
        return registers

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _exception_error(where: str, table: str, address: int, count: int, code: int) -> DeviceError:
    """A Modbus exception answer (codes 1-3: the configuration is wrong) as a DeviceError."""
    name = EXCEPTION_NAMES.get(code, f"exception {code}")
    message = f"{where} answered {name} for {table} registers {address}+{count}"
    if code in CONFIG_EXCEPTION_CODES:
        message += ": check the unit id and the device profile"
    return DeviceError(message, transient=code not in CONFIG_EXCEPTION_CODES, code=code)


def _short(exc: BaseException) -> str:
    text = str(exc).replace("Modbus Error: ", "").strip()
    if "No response received" in text or not text:
        return "timed out"
    return text[:120]
