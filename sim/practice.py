"""One simulated home's devices served on local ports, for installers to practise on.

:class:`PracticeHome` serves a :class:`~sim.household.SimHome`'s grid meter (Eastron SDM630
map), PV inverter (SunSpec) and wind turbine (coopwatt's generic controller map) as Modbus TCP
servers, each on a port of its own at unit id 1, as ``coopwatt devices`` does. Their values
follow the clock it is given (the wall clock, or a :class:`~protocol.clock.SimClock` started at
a chosen time so an installer sees PV by day), so ``coopwatt-agent scan``, ``read`` and
``check`` see a home that lives.

Each device is a :class:`ServedDevice`: what it is, where, and its ``[[devices]]`` table for
``agent.toml``. Beside the Modbus devices, the same grid connection's smart meter streams DSMR
5.0 telegrams on a P1 port (a TCP port, like a P1-to-Wi-Fi dongle; :mod:`sim.p1_stream`), so
an installer can practise a home whose grid meter is already there. Its table is printed
commented out: a home has the Modbus grid meter or the P1 meter, never both (two grid meters
would count the connection's energy twice).
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TextIO

from protocol.clock import Clock
from sim.household import GRID_METER, PV_INVERTER, WIND_TURBINE, SimHome
from sim.modbus_server import Endpoint, Served, ServedLog, SimModbusServers
from sim.p1_stream import P1Stream, TelegramLog

HOST: Final = "127.0.0.1"
HOME: Final = "practice-home"

DEVICE_LABELS: Final[dict[str, str]] = {
    GRID_METER: "grid meter (Eastron SDM630)",
    PV_INVERTER: "PV inverter (SunSpec)",
    WIND_TURBINE: "wind turbine (coopwatt generic controller)",
}
"""Device name → what an installer is told it is (the make or map its registers follow)."""


class PracticeError(Exception):
    """The devices could not be served (a port taken, an address not of this machine)."""


@dataclass(frozen=True, slots=True)
class ServedDevice:
    """A device being served: its agent device name, what it is, where to reach it, and the
    ``[[devices]]`` table that configures the agent for it."""

    name: str
    label: str
    url: str
    where: str  # "unit 1" for Modbus; whatever locates it further on its URL
    config_toml: str

    def line(self) -> str:
        """``tcp://127.0.0.1:15020 unit 1  grid meter (Eastron SDM630)``."""
        return " ".join(part for part in (self.url, self.where) if part) + "  " + self.label


def modbus_device(name: str, endpoint: Endpoint) -> ServedDevice:
    """A Modbus TCP device's entry: label, URL, unit and its ``[[devices]]`` table."""
    url = f"tcp://{endpoint.host}:{endpoint.port}"
    toml = (
        f"[[devices]]\n"
        f'name = "{name}"\n'
        f'profile = "{endpoint.profile}"\n'
        f'modbus = "{url}"\n'
        f"unit = {endpoint.unit}\n"
    )
    return ServedDevice(name, DEVICE_LABELS.get(name, name), url, f"unit {endpoint.unit}", toml)


P1_NAME: Final = "p1-meter"
P1_LABEL: Final = "P1 smart meter (DSMR 5.0), the same grid connection"


def p1_device(url: str) -> ServedDevice:
    """The P1 stream's entry; its table is commented out (see the module doc)."""
    toml = (
        "# Or the same connection's P1 smart meter instead of the Modbus grid meter (not both):\n"
        "# [[devices]]\n"
        f'# name = "{P1_NAME}"\n'
        f'# p1 = "{url}"\n'
    )
    return ServedDevice(P1_NAME, P1_LABEL, url, "", toml)


def agent_toml(devices: list[ServedDevice]) -> str:
    """The ``[[devices]]`` part of an ``agent.toml`` for ``devices``, tables one blank line
    apart."""
    return "\n".join(d.config_toml for d in devices)


class FileServedLog(ServedLog):
    """A :class:`ServedLog` that also appends every request answered to a file, one JSON
    object a line (``t_ms``, ``device``, ``address``, ``count`` and the ``values`` those
    registers encoded), flushed at once: the simulator's own record, readable by another
    process while the devices run."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._file_lock = threading.Lock()

    def record(self, home: str, device: str, served: Served) -> None:
        super().record(home, device, served)
        line = json.dumps(
            {
                "t_ms": served.t_ms,
                "home": home,
                "device": device,
                "address": served.address,
                "count": served.count,
                "values": served.values,
            }
        )
        with self._file_lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._file_lock:
            self._file.close()


def _why_not(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, in the system's words (e.g. "Address already in
    use"), found by trying to bind it as asyncio does."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return "it could not be listened on"


class PracticeHome:
    """One simulated home's Modbus devices on ``host``, until :meth:`stop`.

    ``port_base`` N puts the devices on ports N, N+1, ... in the order of :attr:`devices`
    (grid meter, PV inverter, wind turbine, then the P1 port); without it each gets a free
    port. ``seed`` picks
    the household (its load and its lifetime counters). With ``served_log``, every request the
    devices answer is appended there as a JSON line (see :class:`FileServedLog`).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        host: str = HOST,
        port_base: int | None = None,
        seed: int = 1,
        served_log: Path | None = None,
    ) -> None:
        self.home = SimHome(HOME, seed, clock)
        names = list(self.home.devices)
        if port_base is not None and not 1 <= port_base <= 65536 - len(names) - 1:
            raise ValueError(
                f"port base {port_base} leaves no room for {len(names) + 1} ports below 65536"
            )
        self.host = host
        self.port_base = port_base
        self._served_log_path = served_log
        self._log: FileServedLog | None = None
        self._ports = (
            {name: port_base + i for i, name in enumerate(names)} if port_base is not None else {}
        )
        self._servers: SimModbusServers | None = None
        self._p1: P1Stream | None = None
        self._p1_port = 0 if port_base is None else port_base + len(names)
        self._clock = clock
        self._devices: list[ServedDevice] = []

    def start(self) -> None:
        """Serve every device; raises :class:`PracticeError` when one cannot listen."""
        if self._served_log_path is not None:
            self._log = FileServedLog(self._served_log_path)
        servers = SimModbusServers(
            [self.home],
            host=self.host,
            served=self._log,
            ports={HOME: self._ports},
            gateway=True,
        )
        try:
            servers.start()
        except (RuntimeError, TimeoutError) as exc:
            self._close_log()
            raise PracticeError(self._start_failure(exc)) from None
        self._servers = servers
        endpoints = servers.endpoints()[HOME]
        self._devices = [modbus_device(name, endpoints[name]) for name in self.home.devices]
        try:
            self._p1 = P1Stream(
                lambda t_ms: self.home.values(GRID_METER, t_ms),
                self._clock,
                host=self.host,
                port=self._p1_port,
            ).start()
        except OSError as exc:
            self.stop()
            raise PracticeError(
                f"cannot serve the P1 meter on {self.host}:{self._p1_port}: {exc.strerror or exc}"
            ) from None
        self._devices.append(p1_device(self._p1.url))

    def _start_failure(self, exc: BaseException) -> str:
        for name, port in self._ports.items():
            why = _why_not(self.host, port)
            if why != "it could not be listened on":
                return f"cannot serve the {DEVICE_LABELS[name]} on {self.host}:{port}: {why}"
        cause = exc.__cause__ or exc
        return f"cannot serve the devices on {self.host}: {cause}"

    def stop(self) -> None:
        """Close every server (and the served log)."""
        if self._p1 is not None:
            self._p1.stop()
            self._p1 = None
        if self._servers is not None:
            self._servers.stop()
            self._servers = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PracticeHome:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def p1_log(self) -> TelegramLog | None:
        """What the P1 port sent (None until :meth:`start`)."""
        return None if self._p1 is None else self._p1.log

    @property
    def devices(self) -> list[ServedDevice]:
        """The devices being served, in port order (empty until :meth:`start`)."""
        return list(self._devices)

    def agent_toml(self) -> str:
        """The ``[[devices]]`` tables an ``agent.toml`` needs for these devices."""
        return agent_toml(self._devices)
