"""S0 pulse meters on a GPIO pin: edges counted with debounce, energy and power from the count.

An S0 output (DIN 43864 / EN 62053-31) closes a contact for at least 30 ms per fixed amount of
energy: ``impulses_per_kwh`` comes from the meter's profile. Wired S0+ to the GPIO pin and S0- to
ground, the pin's pull-up holds it high and each pulse pulls it low (active).

- :class:`PulseCounter` is the pure core: edges with their times in, pulses, energy and power out.
  An edge within ``debounce`` of the last accepted one is contact bounce and ignored; a pulse
  counts only after the line was seen inactive, so a line that is already active when the agent
  starts (mid-pulse, or a floating input) never counts a phantom pulse.
- Power comes from the interval between the last two pulses. While no pulse arrives, it can be
  at most one pulse's energy over the time since the last one, so it decays toward zero instead
  of freezing at the last value. Until two pulses have been seen since start it is absent.
- :class:`CounterStore` keeps the count in the data directory (an atomic file write), and a
  reading reports only a count that is already on disk: a crash or power cut can lose pulses
  that were never reported, but the reported counter never goes backwards after a restart.
- :class:`PulseMeter` binds these to a gpiozero ``DigitalInputDevice`` (pin factory injectable,
  ``gpiozero.pins.mock.MockFactory`` in tests) and reads like any other device.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from agent.config import DeviceConfig
from agent.modbus_io import DeviceError
from agent.profiles import Profile
from protocol.quantities import Role

log = logging.getLogger(__name__)

WH_PER_KWH: Final = 1000.0
S_PER_H: Final = 3600.0


class PulseCounter:
    """Counts S0 pulses from timed edges. Times are seconds on any monotonic scale."""

    def __init__(
        self,
        impulses_per_kwh: float,
        debounce_s: float,
        *,
        pulses: int = 0,
        line_active: bool = False,
        now_s: float = 0.0,
    ) -> None:
        if impulses_per_kwh <= 0:
            raise ValueError("impulses_per_kwh must be positive")
        self.impulses_per_kwh = impulses_per_kwh
        self.debounce_s = debounce_s
        self.pulses = pulses
        self._armed = not line_active
        self._last_edge_s: float | None = None
        self._last_pulse_s: float | None = None
        self._interval_s: float | None = None
        self._lock = threading.Lock()
        self.bounces = 0  # edges ignored as bounce: a diagnostic for installers
        self.started_s = now_s

    @property
    def wh_per_pulse(self) -> float:
        return WH_PER_KWH / self.impulses_per_kwh

    def edge(self, t_s: float, active: bool) -> bool:
        """The line changed to ``active`` at ``t_s``; returns True when a pulse was counted."""
        with self._lock:
            if self._last_edge_s is not None and t_s - self._last_edge_s < self.debounce_s:
                self.bounces += 1
                return False
            self._last_edge_s = t_s
            if not active:
                self._armed = True
                return False
            if not self._armed:
                return False
            self._armed = False
            self.pulses += 1
            if self._last_pulse_s is not None:
                self._interval_s = t_s - self._last_pulse_s
            self._last_pulse_s = t_s
            return True

    def power_w(self, now_s: float) -> float | None:
        """Mean power over the last pulse interval, capped by the time since the last pulse."""
        with self._lock:
            if self._interval_s is None or self._last_pulse_s is None:
                return None
            interval = max(self._interval_s, now_s - self._last_pulse_s)
        if interval <= 0:
            return None
        return self.wh_per_pulse * S_PER_H / interval


class CounterStore:
    """A pulse count kept in a small JSON file, replaced atomically on every change.

    Stored with the ``impulses_per_kwh`` it was counted at, so a profile change (a meter
    reconfigured from 1000 to 2000 imp/kWh) keeps the energy already counted as an offset.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, impulses_per_kwh: float) -> tuple[int, float]:
        """(pulses, offset_wh) to resume from; (0, 0.0) for a new meter."""
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
            pulses, imp = int(data["pulses"]), float(data["impulses_per_kwh"])
            offset_wh = float(data.get("offset_wh", 0.0))
        except FileNotFoundError:
            return 0, 0.0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeviceError(
                f"pulse counter file {self.path} is unreadable ({exc}); restore it from the "
                "backup or delete it to count from zero",
                transient=False,
            ) from None
        if pulses < 0:
            raise DeviceError(f"pulse counter file {self.path} is corrupt", transient=False)
        if imp != impulses_per_kwh:
            log.warning(
                "%s: counted at %g imp/kWh, the profile now says %g; keeping the energy so far",
                self.path.name,
                imp,
                impulses_per_kwh,
            )
            return 0, offset_wh + pulses * WH_PER_KWH / imp
        return pulses, offset_wh

    def save(self, pulses: int, impulses_per_kwh: float, offset_wh: float) -> None:
        data = {"v": 1, "pulses": pulses, "impulses_per_kwh": impulses_per_kwh,
                "offset_wh": offset_wh}  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class PulseMeter:
    """A configured S0 meter: reads like any device, counts in gpiozero's callback thread."""

    def __init__(
        self,
        config: DeviceConfig,
        profile: Profile,
        data_dir: Path,
        *,
        pin_factory: object | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.gpio is None:
            raise ValueError(f"{config.name}: an S0 meter needs a gpio pin")
        self.config = config
        self.profile = profile
        self.name = config.name
        self.role: Role = config.role or profile.role
        self.poll_interval_s = config.poll_interval_s
        self.store = CounterStore(data_dir / f"pulse-{config.name}.json")
        self._pin_factory = pin_factory
        self._ticks = monotonic  # seconds; edges are timed when gpiozero reports them
        self._input: Any = None
        self.counter: PulseCounter | None = None
        self._offset_wh = 0.0
        self._saved = -1

    def open(self) -> None:
        """Claim the pin and resume the stored count; raises :class:`DeviceError`."""
        if self._input is not None:
            return
        pulses, self._offset_wh = self.store.load(self.profile.impulses_per_kwh)
        self._saved = pulses
        try:
            from gpiozero import DigitalInputDevice  # noqa: PLC0415 - only S0 homes need it
            from gpiozero.exc import GPIOZeroError  # noqa: PLC0415
        except ImportError:
            raise DeviceError(
                "S0 meters need gpiozero: pip install 'coopwatt[agent]'", transient=False
            ) from None
        try:
            self._input = DigitalInputDevice(
                self.config.gpio,
                pull_up=True,
                bounce_time=None,  # debounced in PulseCounter, the same on every pin factory
                pin_factory=self._pin_factory,
            )
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise DeviceError(
                f"cannot use GPIO {self.config.gpio} for {self.name}: {exc}", transient=False
            ) from None
        self.counter = PulseCounter(
            self.profile.impulses_per_kwh,
            self.profile.debounce_ms / 1000.0,
            pulses=pulses,
            line_active=bool(self._input.is_active),
            now_s=self._ticks(),
        )
        self._input.when_activated = self._activated
        self._input.when_deactivated = self._deactivated

    def _activated(self) -> None:
        if self.counter is not None:
            self.counter.edge(self._ticks(), True)

    def _deactivated(self) -> None:
        if self.counter is not None:
            self.counter.edge(self._ticks(), False)

    def energy_wh(self, pulses: int) -> float:
        return self._offset_wh + pulses * WH_PER_KWH / self.profile.impulses_per_kwh

    def read(self) -> dict[str, float | str]:
        """Energy counted so far (persisted first) and power; raises :class:`DeviceError`."""
        self.open()
        assert self.counter is not None
        pulses = self.counter.pulses
        if pulses != self._saved:
            try:
                self.store.save(pulses, self.profile.impulses_per_kwh, self._offset_wh)
            except OSError as exc:
                raise DeviceError(
                    f"cannot save the pulse count of {self.name}: {exc}", transient=True
                ) from None
            self._saved = pulses
        counter = "energy_import_wh" if self.role == Role.GRID else "energy_wh"
        out: dict[str, float | str] = {counter: self.energy_wh(pulses)}
        power = self.counter.power_w(self._ticks())
        if power is not None:
            out["power_w"] = power
        return out

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None
