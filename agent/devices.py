"""Configured devices: a profile (or SunSpec discovery) bound to a bus and a unit id."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.config import SUNSPEC, DeviceConfig
from agent.modbus_io import DeviceError, ModbusBus
from agent.profiles import Profile, ReadBlock, decode, load_profile, plan_reads
from agent.sunspec import INVERTER_MODELS, SunSpecError, SunSpecMap, decode_inverter, discover
from protocol.quantities import Role


class Device:
    """Reads one device's quantities. SunSpec devices are discovered on first read."""

    def __init__(self, config: DeviceConfig, bus: ModbusBus, profile: Profile | None) -> None:
        self.config = config
        self.bus = bus
        self.profile = profile
        self._blocks = plan_reads(profile) if profile else []
        self._sunspec: SunSpecMap | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def role(self) -> Role:
        return self.profile.role if self.profile else Role.PV

    def _holding(self, address: int, count: int) -> list[int]:
        return self.bus.read("holding", address, count, self.config.unit)

    def read(self) -> dict[str, float | str]:
        """One poll: the device's quantities in glossary units. Raises DeviceError."""
        if self.profile is not None:
            images: dict[ReadBlock, list[int]] = {
                b: self.bus.read(b.table, b.address, b.count, self.config.unit)
                for b in self._blocks
            }
            return decode(self.profile, images)
        if self._sunspec is None:
            try:
                self._sunspec = discover(self._holding)
            except SunSpecError as exc:
                raise DeviceError(f"{self.name}: {exc}", transient=False) from None
        model = self._sunspec.find(*INVERTER_MODELS)
        if model is None:
            raise DeviceError(
                f"{self.name}: SunSpec device has no inverter model 101-103", transient=False
            )
        # Values and their scale factors come in one request, so they always belong together.
        return decode_inverter(self._holding(model.address + 2, model.length))

    def forget_discovery(self) -> None:
        """After a device restarts its model chain may move; discover it again."""
        self._sunspec = None


def open_devices(
    configs: Iterable[DeviceConfig], profile_dirs: list[Path] | None = None
) -> list[Device]:
    """Devices sharing one bus URL share one client, so requests on that bus never overlap."""
    buses: dict[str, ModbusBus] = {}
    devices = []
    for c in configs:
        if c.modbus not in buses:
            buses[c.modbus] = ModbusBus(c.modbus)
        bus = buses[c.modbus]
        profile = None if c.profile == SUNSPEC else load_profile(c.profile, profile_dirs)
        devices.append(Device(c, bus, profile))
    return devices


def close_devices(devices: Iterable[Device]) -> None:
    for bus in {id(d.bus): d.bus for d in devices}.values():
        bus.close()
