"""Configured devices and the supervisor that polls them.

A device is a profile (or SunSpec discovery) bound to a bus and a unit id (:class:`Device`), an
S0 pulse meter on a GPIO pin (:class:`agent.pulse.PulseMeter`), or a smart meter's P1 port
(:class:`agent.push_meter.PushMeter`). All read the same way: a dict of glossary quantities, or a
:class:`~agent.modbus_io.DeviceError` saying whether to retry.

The :class:`DeviceSupervisor` decides when each device is read: on multiples of its own poll
interval while it answers; after a transient failure, again after a short backoff with jitter
(:mod:`agent.retry`), a bounded number of times, then marked offline in the status and probed
slowly until it answers and is online again by itself; after a configuration error, not again
until someone could have fixed it. All timing is on the injected clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.config import SUNSPEC, DeviceConfig
from agent.modbus_io import DeviceError, ModbusBus
from agent.profiles import (
    Profile,
    ProfileError,
    ReadBlock,
    decode_registers,
    load_profile,
    plan_reads,
)
from agent.profiles import retarget as retarget_quantities
from agent.retry import RetryPolicy
from agent.sunspec import SunSpecError, SunSpecMap, decode_model, discover, read_model
from protocol.clock import Clock, SystemClock
from protocol.payloads import DeviceHealth
from protocol.quantities import Role

log = logging.getLogger(__name__)


class Readable(Protocol):
    """What the supervisor needs of a device."""

    name: str
    poll_interval_s: float

    @property
    def role(self) -> Role: ...

    def read(self) -> dict[str, float | str]: ...

    def close(self) -> None: ...


class Device:
    """Reads one Modbus device's quantities. SunSpec devices are discovered on first read."""

    def __init__(self, config: DeviceConfig, bus: ModbusBus, profile: Profile | None) -> None:
        self.config = config
        self.name = config.name
        self.poll_interval_s = config.poll_interval_s
        self.bus = bus
        self.profile = profile
        self._blocks = plan_reads(profile) if profile else []
        self._timeout_s = profile.timeout_s if profile else None
        self.sunspec: SunSpecMap | None = None
        self._native = profile.role if profile else Role.PV  # the role the data speaks as

    @property
    def role(self) -> Role:
        return self.config.role or self._native

    def _holding(self, address: int, count: int) -> list[int]:
        return self.bus.read("holding", address, count, self.config.unit, timeout_s=self._timeout_s)

    def read(self) -> dict[str, float | str]:
        """One poll: the device's quantities in glossary units. Raises DeviceError."""
        if self.profile is not None:
            images: dict[ReadBlock, list[int]] = {
                b: self.bus.read(
                    b.table, b.address, b.count, self.config.unit, timeout_s=self._timeout_s
                )
                for b in self._blocks
            }
            quantities = decode_registers(self.profile, images)
        else:
            quantities = self._read_sunspec()
        return retarget_quantities(quantities, self._native, self.role)

    def _read_sunspec(self) -> dict[str, float | str]:
        if self.sunspec is None:
            try:
                self.sunspec = discover(self._holding)
            except SunSpecError as exc:
                raise DeviceError(
                    f"{exc}: not a SunSpec device at unit {self.config.unit} on "
                    f"{self.bus.url}; name its profile instead of sunspec",
                    transient=False,
                ) from None
        model = self.sunspec.measuring(self.config.role)
        if model is None:
            found = ", ".join(str(m.id) for m in self.sunspec.models)
            raise DeviceError(
                f"SunSpec models {found}: none is an inverter (101-103, 111-113) or meter "
                "(201-204)",
                transient=False,
            )
        try:
            # Values and their scale factors come in one request, so they always belong together.
            self._native, quantities = decode_model(model.id, read_model(self._holding, model))
        except (SunSpecError, DeviceError) as exc:
            if isinstance(exc, DeviceError) and exc.transient:
                raise
            # A model that moved or vanished: the device restarted with another model chain
            # (a firmware update does that). Walk the chain again on the next try.
            self.sunspec = None
            raise DeviceError(f"SunSpec model chain changed ({exc})", transient=True) from None
        return quantities

    def forget_discovery(self) -> None:
        """After a device restarts its model chain may move; discover it again."""
        self.sunspec = None

    def close(self) -> None:
        self.bus.close()


def open_devices(
    configs: Iterable[DeviceConfig],
    profile_dirs: list[Path] | None = None,
    *,
    data_dir: Path | None = None,
    pin_factory: object | None = None,
    clock: Clock | None = None,
) -> list[Readable]:
    """Devices sharing one bus (a TCP endpoint or a serial port) share one client, so requests
    on that bus never overlap. Raises :class:`ProfileError` for a profile that cannot be used.
    ``clock`` stamps a push meter's frames (the system clock when not given)."""
    buses: dict[str, ModbusBus] = {}
    devices: list[Readable] = []
    for c in configs:
        if c.sml:
            devices.append(open_sml(c, clock or SystemClock()))
            continue
        profile = None if c.profile == SUNSPEC else load_profile(c.profile, profile_dirs)
        if profile is not None and profile.kind == "p1":
            if not c.p1:
                raise ProfileError(f"{c.name}: {c.profile} is a P1 meter: give its p1 port URL")
            devices.append(open_p1(c, profile, clock or SystemClock()))
            continue
        if c.p1:
            raise ProfileError(f"{c.name}: {c.profile} is not a P1 profile (dsmr-5, dsmr-2 ...)")
        if profile is not None and profile.kind == "s0":
            if c.gpio is None:
                raise ProfileError(f"{c.name}: {c.profile} is an S0 pulse meter: give its gpio")
            from agent.pulse import PulseMeter  # noqa: PLC0415 - gpiozero only where needed

            devices.append(PulseMeter(c, profile, data_dir or Path(), pin_factory=pin_factory))
            continue
        if not c.modbus:
            raise ProfileError(f"{c.name}: {c.profile} is a Modbus profile: give its modbus URL")
        bus = ModbusBus(c.modbus)
        bus = buses.setdefault(bus.key, bus)
        devices.append(Device(c, bus, profile))
    return devices


def open_p1(config: DeviceConfig, profile: Profile, clock: Clock) -> Readable:
    """A smart meter's P1 port as a device: a reader thread and the DSMR decoder."""
    from agent.dsmr_decode import DsmrDecoder  # noqa: PLC0415
    from agent.push_meter import PushMeter  # noqa: PLC0415

    assert profile.obis is not None
    return PushMeter(
        config.name,
        config.role or profile.role,
        config.p1,
        DsmrDecoder(profile.obis, require_crc=profile.crc),
        clock,
        poll_interval_s=config.poll_interval_s,
        baud=profile.baud,
        framing=profile.framing,
    )


def open_sml(config: DeviceConfig, clock: Clock) -> Readable:
    """A smart meter's optical SML port as a device: SML's decoder behind the same reader (an IR
    head: 9600 8N1, the rate eHZ meters send at)."""
    from agent.push_meter import PushMeter  # noqa: PLC0415
    from agent.sml_decode import SmlDecoder  # noqa: PLC0415

    return PushMeter(
        config.name, config.role or Role.GRID, config.sml, SmlDecoder(), clock,
        poll_interval_s=config.poll_interval_s, baud=9600, framing="8N1", what="SML frame",
    )  # fmt: skip


def close_devices(devices: Iterable[Readable]) -> None:
    """Close every device once (a bus shared by several devices is closed once too)."""
    for device in {id(d): d for d in devices}.values():
        try:
            device.close()
        except OSError as exc:  # closing must not hide why we are closing
            log.warning("closing %s: %s", device.name, exc)


# --- the supervisor --------------------------------------------------------------------------


@dataclass
class DeviceSlot:
    """One device's schedule and health, as the status reports it."""

    device: Readable
    next_due_ms: int
    health: DeviceHealth
    failures: int = 0  # consecutive transient failures
    last_error: str | None = None
    furthest_ms: int = 0  # the furthest ahead it is ever scheduled (see poll_due)


@dataclass(frozen=True, slots=True)
class PollResult:
    device: Readable
    ts_ms: int  # when the device answered, on the agent's clock
    quantities: dict[str, float | str]


class DeviceSupervisor:
    """Polls due devices, schedules retries and keeps each device's health."""

    def __init__(
        self,
        devices: Sequence[Readable],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()  # jitter, not secrets
        now = clock.now_ms()
        self.slots = [
            DeviceSlot(
                d, now, DeviceHealth(online=False, error="not read yet"),
                furthest_ms=int(1000 * self.policy.longest_wait_s(d.poll_interval_s)),
            )
            for d in devices
        ]  # fmt: skip

    @property
    def devices(self) -> list[Readable]:
        return [s.device for s in self.slots]

    def next_due_ms(self) -> int:
        return min(s.next_due_ms for s in self.slots)

    def poll_due(self) -> list[PollResult]:
        """Read every device that is due now; returns what was read.

        A device due further ahead than it is ever scheduled was scheduled before the clock
        went back (a Pi has no clock of its own: NTP may step it back after boot, by hours):
        it is due now, not when the clock gets back to where it was.
        """
        results: list[PollResult] = []
        now = self.clock.now_ms()
        for slot in self.slots:
            if slot.next_due_ms - now > slot.furthest_ms:
                slot.next_due_ms = now
            if slot.next_due_ms <= now:
                result = self.poll(slot)
                if result is not None:
                    results.append(result)
        return results

    def poll(self, slot: DeviceSlot) -> PollResult | None:
        """Read one device now and schedule its next read."""
        try:
            quantities = slot.device.read()
        except DeviceError as exc:
            self._failed(slot, exc)
            return None
        except Exception as exc:  # a bug or a library surprise must not stop the other devices
            if slot.last_error is None or not slot.last_error.startswith("internal error"):
                log.exception("%s: reading failed unexpectedly", slot.device.name)
            self._failed(slot, DeviceError(f"internal error: {exc!r}", transient=True))
            return None
        ts = self.clock.now_ms()
        if not slot.health.online:
            if slot.failures or slot.last_error:
                log.info("%s: answering again", slot.device.name)
            else:
                log.info("%s: reading", slot.device.name)
        slot.health = DeviceHealth(online=True, last_ok_ms=ts)
        slot.failures = 0
        slot.last_error = None
        interval_ms = max(1, int(slot.device.poll_interval_s * 1000))
        slot.next_due_ms = (ts // interval_ms + 1) * interval_ms
        return PollResult(slot.device, ts, quantities)

    def _failed(self, slot: DeviceSlot, exc: DeviceError) -> None:
        now = self.clock.now_ms()
        name, message = slot.device.name, str(exc)
        interval_s = slot.device.poll_interval_s
        if not exc.transient:
            if message != slot.last_error:
                log.error("%s: %s (not retried until fixed)", name, message)
            slot.failures = 0
            slot.last_error = message
            slot.health = _offline(f"configuration: {message}", slot.health.last_ok_ms)
            delay_s = max(self.policy.config_recheck_s, interval_s)
            slot.next_due_ms = now + int(delay_s * 1000)
            return
        slot.failures += 1
        offline = self.policy.offline_after(slot.failures)
        if offline or not slot.health.online:
            if slot.health.online:
                log.warning("%s: offline after %d tries: %s", name, slot.failures, message)
            elif slot.last_error is None:
                log.warning("%s: not answering: %s", name, message)
            slot.health = _offline(message, slot.health.last_ok_ms)
        else:
            log.debug("%s: retry %d: %s", name, slot.failures, message)
        slot.last_error = message
        delay_s = self.policy.delay_s(slot.failures, self._rng)
        slot.next_due_ms = now + max(1, int(delay_s * 1000))

    def health(self) -> dict[str, DeviceHealth]:
        return {s.device.name: s.health for s in self.slots}

    def close(self) -> None:
        close_devices(self.devices)


def _offline(error: str, last_ok_ms: int | None) -> DeviceHealth:
    return DeviceHealth(online=False, error=error[:200], last_ok_ms=last_ok_ms)
