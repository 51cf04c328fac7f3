"""Test helpers: pymodbus servers answering from register images, over TCP or a pty null modem.

:class:`ImageServer` serves several unit ids, each from its own holding and input register
images, with per-unit misbehaviour a test can switch at any time: answer with an exception code,
stay silent (a timeout), answer late, or fail only the next few requests. Units that are not
configured either stay silent, as on RS-485, or get "gateway target did not respond" (0x0B), as
from a TCP gateway. :class:`NullModem` joins two pseudo-terminals so a pymodbus serial server on
one end and the agent's RTU client on the other talk real RTU frames, CRC and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FIXTURES = Path(__file__).parent / "fixtures" / "devices"

Mode = Literal["ok", "silent", "exception"]
Missing = Literal["silent", "gateway"]


@dataclass
class Image:
    """Register images of one unit: start address -> words, per table."""

    holding: dict[int, list[int]] = field(default_factory=dict)
    input: dict[int, list[int]] = field(default_factory=dict)

    def table(self, function_code: int) -> dict[int, list[int]]:
        return self.holding if function_code == 3 else self.input

    def put(self, table: str, address: int, words: list[int]) -> None:
        """Overwrite registers inside an existing block (the device's values change)."""
        blocks = self.holding if table == "holding" else self.input
        for start, block in blocks.items():
            if start <= address and address + len(words) <= start + len(block):
                block[address - start : address - start + len(words)] = words
                return
        raise IndexError(f"{table} {address}+{len(words)} is outside the image")


@dataclass
class Behaviour:
    """How a unit answers; switch it from the test thread at any time."""

    mode: Mode = "ok"
    code: int = 0  # exception code for mode "exception"
    delay_s: float = 0.0  # answer this late (a slow device)
    fail_next: int = 0  # the next N requests behave as fail_mode, then as mode
    fail_mode: Mode = "silent"
    fail_code: int = 0
    requests: int = 0  # requests seen, for assertions


def load_fixture(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def image_from_fixture(data: dict[str, Any]) -> Image:
    image = Image()
    for block in data["registers"]:
        table = image.holding if block["table"] == "holding" else image.input
        table[int(block["address"])] = [int(w) for w in block["words"]]
    return image


def fixture_cases() -> list[Path]:
    return sorted(FIXTURES.glob("*/*.json"))


class NullModem:
    """Two pseudo-terminals joined back to back: ``server_port`` and ``client_port``.

    ``corrupt_next`` flips a bit in the next N chunks sent from server to client, which the
    client sees as a frame with a bad CRC.
    """

    def __init__(self) -> None:
        self._a_master, self._a_slave = os.openpty()
        self._b_master, self._b_slave = os.openpty()
        for fd in (self._a_slave, self._b_slave):
            tty.setraw(fd)  # no echo or line editing before pyserial sets the port up
        self.server_port = os.ttyname(self._a_slave)
        self.client_port = os.ttyname(self._b_slave)
        self.corrupt_next = 0
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="null-modem", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        pairs = {self._a_master: self._b_master, self._b_master: self._a_master}
        while True:
            ready, _, _ = select.select([self._a_master, self._b_master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self._a_master and self.corrupt_next > 0 and data:
                    self.corrupt_next -= 1
                    data = bytes([data[0] ^ 0x01]) + data[1:]
                with contextlib.suppress(OSError):
                    os.write(pairs[fd], data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (
            self._a_master,
            self._a_slave,
            self._b_master,
            self._b_slave,
            self._stop_r,
            self._stop_w,
        ):
            with contextlib.suppress(OSError):
                os.close(fd)


class ImageServer:
    """A pymodbus TCP (or, given ``serial_port``, RTU) server for several unit ids."""

    def __init__(
        self,
        units: dict[int, Image],
        *,
        missing: Missing = "gateway",
        serial_port: str | None = None,
        port: int = 0,
    ) -> None:
        self.units = units
        self.behaviour = {unit: Behaviour() for unit in units}
        self.missing = missing
        self.serial_port = serial_port
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.serial_port is not None:
            return f"rtu://{self.serial_port}?baud=9600&parity=N"
        return f"tcp://127.0.0.1:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ImageServer:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="image-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("image server did not start")
        if self._error is not None:
            raise RuntimeError("image server failed to start") from self._error
        return self

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the server thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def _device(self, unit: int, image: Image) -> SimDevice:
        behaviour = self.behaviour[unit]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            behaviour.requests += 1
            if set_values is not None:
                return ExcCodes.ILLEGAL_ADDRESS
            mode, code = behaviour.mode, behaviour.code
            if behaviour.fail_next > 0:
                behaviour.fail_next -= 1
                mode, code = behaviour.fail_mode, behaviour.fail_code
            if mode == "silent":
                await asyncio.sleep(3600)  # cancelled when the server stops
            if mode == "exception":
                return ExcCodes(code)
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            for start, words in image.table(function_code).items():
                offset = address - start
                if offset >= 0 and offset + count <= len(words):
                    at = address - start_address
                    current[at : at + count] = words[offset : offset + count]
                    return None
            return ExcCodes.ILLEGAL_ADDRESS

        def blocks(table: dict[int, list[int]]) -> list[SimData]:
            if not table:
                return [SimData(0, datatype=DataType.INVALID)]
            return [
                SimData(start, values=list(words), datatype=DataType.REGISTERS)
                for start, words in sorted(table.items())
            ]

        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=unit,
            simdata=(bits, list(bits), blocks(image.holding), blocks(image.input)),
            action=action,
        )

    def _catch_all(self) -> SimDevice:
        missing = self.missing

        async def action(*args: object) -> ExcCodes | None:
            if missing == "silent":
                await asyncio.sleep(3600)
            return ExcCodes.GATEWAY_NO_RESPONSE

        block = SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)
        return SimDevice(id=0, simdata=[block], action=action)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        devices = [self._device(u, img) for u, img in self.units.items()] + [self._catch_all()]
        server: Any
        if self.serial_port is not None:
            server = ModbusSerialServer(devices, port=self.serial_port, baudrate=9600)
        else:
            server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        try:
            if not await server.listen():
                raise OSError("could not listen")
            if self.serial_port is None:
                listener = cast(asyncio.Server, server.transport)
                self.port = listener.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
        finally:
            transport = server.transport
            await server.shutdown()
            if self.serial_port is None and transport is not None:
                await transport.wait_closed()
            await asyncio.sleep(0)
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


@contextlib.contextmanager
def serving(units: dict[int, Image], **kwargs: Any) -> Iterator[ImageServer]:
    with ImageServer(units, **kwargs) as server:
        yield server
