"""The Modbus edge: one pymodbus client per bus, with errors sorted into what to do about them.

A bus is ``tcp://host[:502]`` or ``rtu:///dev/ttyUSB0?baud=9600&parity=N``. Modbus exception codes
1-3 (illegal function, address, value) mean the configuration is wrong, and retrying cannot help;
everything else (timeouts, broken frames, a busy device) is transient.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

log = logging.getLogger(__name__)

CONFIG_EXCEPTION_CODES: Final = frozenset({1, 2, 3})
EXCEPTION_NAMES: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


class DeviceError(OSError):
    """A read that failed. ``transient`` says whether a later retry may succeed."""

    def __init__(self, message: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


@dataclass(frozen=True, slots=True)
class BusAddress:
    kind: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 502
    device: str = ""
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1


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
        return BusAddress("rtu", device=parts.path, baud=baud, parity=parity, stopbits=stopbits)  # type: ignore[arg-type]
    raise ValueError(f"Modbus URL {url!r} must start with tcp:// or rtu://")


class ModbusBus:
    """One physical bus. A lock keeps one request in flight, as RS-485 and most gateways need."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        self.address = parse_bus_url(url)
        self._lock = threading.Lock()
        a = self.address
        self._client: ModbusTcpClient | ModbusSerialClient
        if a.kind == "tcp":
            self._client = ModbusTcpClient(a.host, port=a.port, timeout=timeout_s, retries=0)
        else:
            self._client = ModbusSerialClient(
                a.device,
                baudrate=a.baud,
                parity=a.parity,
                stopbits=a.stopbits,
                timeout=timeout_s,
                retries=0,
            )

    def read(
        self, table: Literal["holding", "input"], address: int, count: int, unit: int
    ) -> list[int]:
        with self._lock:
            if not self._client.connected and not self._client.connect():
                raise DeviceError(f"cannot connect to {self.url}", transient=True)
            try:
                if table == "holding":
                    rr = self._client.read_holding_registers(address, count=count, device_id=unit)
                else:
                    rr = self._client.read_input_registers(address, count=count, device_id=unit)
            except ModbusException as exc:
                # The client drops the connection after an I/O error; the next read reconnects.
                self._client.close()  # type: ignore[no-untyped-call]
                raise DeviceError(
                    f"no answer from unit {unit} on {self.url}: {exc}", transient=True
                ) from None
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, f"exception {code}")
            raise DeviceError(
                f"unit {unit} on {self.url} answered {name} for {table} {address}+{count}",
                transient=code not in CONFIG_EXCEPTION_CODES,
                code=code,
            )
        registers: list[int] = list(rr.registers[:count])
        if len(registers) != count:
            raise DeviceError(
                f"unit {unit} returned {len(registers)} of {count} registers", transient=True
            )
        return registers

    def close(self) -> None:
        with self._lock:
            self._client.close()  # type: ignore[no-untyped-call]
