"""pymodbus TCP servers standing in for the simulated homes' devices.

:class:`SimModbusServers` starts one Modbus TCP server per device (127.0.0.1, a free port, unit
id 1), all in one background thread running one asyncio event loop. Registers are computed at
request time: each server's device has a pymodbus ``SimDevice`` action that, on every read,
encodes the home's values at ``clock.now_ms()`` into the register block before pymodbus answers.

Like a real device, a server answers only its own table: reads outside the image, reads with the
other register function (holding vs input) and writes get an "illegal data address" exception;
requests for a unit id other than 1 do too, or, with ``gateway=True``, "gateway target did not
respond", as a Modbus TCP gateway answers for a unit that is not on its bus (so a scan of every
unit id finds only unit 1). ``ports`` puts a device on a port of its own choosing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from sim.household import GRID_METER, PV_INVERTER, WIND_TURBINE, SimHome
from sim.registers import (
    PROFILE_SDM630,
    PROFILE_SUNSPEC,
    PROFILE_WIND,
    RegisterImage,
    sdm630_image,
    sunspec_inverter_image,
    wind_turbine_image,
)

HOST: Final = "127.0.0.1"
UNIT_ID: Final = 1
START_TIMEOUT_S: Final = 10.0

DEVICE_PROFILES: Final[dict[str, str]] = {
    GRID_METER: PROFILE_SDM630,
    PV_INVERTER: PROFILE_SUNSPEC,
    WIND_TURBINE: PROFILE_WIND,
}
"""Simulated device name → the register-map profile its server speaks."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the agent finds a device: Modbus TCP host, port, unit id and register profile."""

    host: str
    port: int
    unit: int
    profile: str


def image_source(
    home: SimHome, device: str, *, sunspec_common_length: int = 66
) -> Callable[[int], RegisterImage]:
    """The function giving ``device``'s register image at a time (ms) for ``home``."""
    profile = DEVICE_PROFILES[device]
    if profile == PROFILE_SDM630:
        return lambda t_ms: sdm630_image(home.values(device, t_ms))
    if profile == PROFILE_SUNSPEC:
        serial = f"{home.home}-{device}"
        return lambda t_ms: sunspec_inverter_image(
            home.values(device, t_ms), common_length=sunspec_common_length, serial=serial
        )
    return lambda t_ms: wind_turbine_image(home.values(device, t_ms))


@dataclass(frozen=True, slots=True)
class Served:
    """One read request a simulated device answered: when, which registers, and the home's
    values at that moment (the quantities those registers encode)."""

    t_ms: int
    address: int
    count: int
    values: dict[str, float | str]


class ServedLog:
    """Every request the servers answered, per (home, device): the simulator's own record.

    Fault tests check what reached the hub against this, not against the agent's bookkeeping:
    a reading the agent numbered but lost, or one it never made, shows up here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str], list[Served]] = {}

    def record(self, home: str, device: str, served: Served) -> None:
        with self._lock:
            self._served.setdefault((home, device), []).append(served)

    def requests(self, home: str, device: str) -> list[Served]:
        with self._lock:
            return list(self._served.get((home, device), []))

    def polls(self, home: str, device: str) -> list[Served]:
        """The first request of each poll of ``device``, oldest first.

        A poll reads the same blocks every time, lowest address first; a SunSpec device is
        also read once at connection to find its model chain, in requests no poll repeats (a
        model's two-word header, where the poll reads header and body). So a poll starts with
        the lowest of the blocks (address and length) requested most often.
        """
        served = self.requests(home, device)
        if not served:
            return []
        counts = Counter((s.address, s.count) for s in served)
        most = max(counts.values())
        start = min(block for block, n in counts.items() if n == most)
        return [s for s in served if (s.address, s.count) == start]


def _sim_device(
    home: SimHome, device: str, sunspec_common_length: int, log: ServedLog | None = None
) -> SimDevice:
    """A pymodbus SimDevice whose registers are refreshed from ``home`` on every read."""
    source = image_source(home, device, sunspec_common_length=sunspec_common_length)
    template = source(home.clock.now_ms())
    fc = template.function_code

    async def refresh(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # Shared register block: pymodbus serves it to both 03 and 04, so refuse the other one.
        if function_code != fc or set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        now = home.clock.now_ms()
        image = source(now)
        offset = address - start_address
        current_registers[offset : offset + count] = image.read(address, count)
        if log is not None:
            log.record(home.home, device, Served(now, address, count, home.values(device, now)))
        return None

    block = SimData(
        template.start,
        values=list(template.words),
        datatype=DataType.REGISTERS,
        readonly=True,
    )
    return SimDevice(id=UNIT_ID, simdata=[block], action=refresh)


def _catch_all_device(gateway: bool = False) -> SimDevice:
    """Device id 0 catches every other unit id: it has no valid registers ("illegal data
    address"), or with ``gateway`` it says "gateway target did not respond" to everything."""
    if not gateway:
        return SimDevice(id=0, simdata=[SimData(0, datatype=DataType.INVALID)])

    async def nobody_there(*args: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    block = SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)
    return SimDevice(id=0, simdata=[block], action=nobody_there)


class SimModbusServers:
    """Modbus TCP servers for every device of the given homes, in one background event loop.

    Use as a context manager; :meth:`endpoints` maps home → device → :class:`Endpoint`.
    ``sunspec_common_length`` 65 serves inverters whose common model leaves out Pad, as some
    real ones do, so the agent's SunSpec discovery can be tested against both. With ``served``,
    every request answered is recorded there (see :class:`ServedLog`). ``ports`` maps home →
    device → TCP port (a device not in it, or at 0, gets a free port); with ``gateway``, unit
    ids other than 1 get "gateway target did not respond" rather than "illegal data address".
    """

    def __init__(
        self,
        homes: Iterable[SimHome],
        *,
        host: str = HOST,
        sunspec_common_length: int = 66,
        served: ServedLog | None = None,
        ports: Mapping[str, Mapping[str, int]] | None = None,
        gateway: bool = False,
    ) -> None:
        if sunspec_common_length not in (65, 66):
            raise ValueError("sunspec_common_length must be 65 or 66")
        self.homes = list(homes)
        self.host = host
        self.sunspec_common_length = sunspec_common_length
        self.served = served
        self.ports = {home: dict(devices) for home, devices in (ports or {}).items()}
        self.gateway = gateway
        self._endpoints: dict[str, dict[str, Endpoint]] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every server; returns once all are listening (raises if one could not)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="sim-modbus", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise TimeoutError("Modbus servers did not start")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("Modbus servers failed to start") from self._error

    def stop(self) -> None:
        """Close every server and join the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already have finished
                loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> SimModbusServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def endpoints(self) -> dict[str, dict[str, Endpoint]]:
        """home → device name → Endpoint (host, port, unit, profile)."""
        return {home: dict(devices) for home, devices in self._endpoints.items()}

    # --- the server thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers: list[Any] = []  # ModbusTcpServer; pymodbus's own types are partly untyped
        try:
            for home in self.homes:
                for device in home.devices:
                    wanted = self.ports.get(home.home, {}).get(device, 0)
                    server = ModbusTcpServer(
                        [
                            _sim_device(home, device, self.sunspec_common_length, self.served),
                            _catch_all_device(self.gateway),
                        ],
                        address=(self.host, wanted),
                    )
                    servers.append(server)
                    if not await server.listen():
                        raise OSError(
                            f"could not listen on {self.host}:{wanted} for {home.home}/{device}"
                        )
                    listener = cast(asyncio.Server, server.transport)
                    port = listener.sockets[0].getsockname()[1]
                    self._endpoints.setdefault(home.home, {})[device] = Endpoint(
                        self.host, port, UNIT_ID, DEVICE_PROFILES[device]
                    )
            self._ready.set()
            await self._stop.wait()
        finally:
            await _close_all(servers)


async def _close_all(servers: list[Any]) -> None:
    """Close listeners and their connections, and let the transports finish closing."""
    listeners = [s.transport for s in servers if s.transport is not None]
    for server in servers:
        await server.shutdown()
    for listener in listeners:
        await listener.wait_closed()
    # Let connection_lost callbacks and any in-flight request tasks run to completion.
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
