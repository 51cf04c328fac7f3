"""A simulated home: demand, PV and a small wind turbine behind one grid meter, with exact counters.

Power is piecewise constant over steps of ``step_s`` simulated seconds, aligned to multiples of
``step_s`` since the epoch: within a step every quantity is the profile evaluated at the step's
start. The energy counters are the exact integral of that piecewise-constant power, kept as
integer watt-milliseconds (so no rounding drift however long a run), up to the time asked for,
including the partial current step. A register read at any instant therefore shows a counter that
is consistent, to the watt-second, with the powers the same device has been showing.

Counters advance incrementally under a lock as the clock moves forward; a query for a time before
the last one integrated answers for the last integrated time (clocks only go forward).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, NamedTuple

from protocol.clock import Clock
from protocol.quantities import Role
from sim import profiles
from sim.profiles import unit_hash

GRID_METER: Final = "grid-meter"
PV_INVERTER: Final = "pv-inverter"
WIND_TURBINE: Final = "wind-turbine"

DEVICE_ROLES: Final[dict[str, Role]] = {
    GRID_METER: Role.GRID,
    PV_INVERTER: Role.PV,
    WIND_TURBINE: Role.WIND,
}
"""Device names (which are also the agent's device ids) and their roles."""

_WMS_PER_WH: Final = 3_600_000  # watt-milliseconds in a watt-hour
_S_LIFETIME: Final = 60  # noise stream for the starting counter values


class StepPowers(NamedTuple):
    """What a home does during one step: powers in whole watts, wind speed in m/s."""

    demand_w: int
    pv_w: int
    wind_w: int
    wind_speed_m_s: float

    @property
    def grid_w(self) -> int:
        """Grid exchange (W): + import, − export."""
        return self.demand_w - self.pv_w - self.wind_w


@dataclass(slots=True)
class _Energy:
    """Energy counters in integer watt-milliseconds."""

    import_wms: int = 0
    export_wms: int = 0
    pv_wms: int = 0
    wind_wms: int = 0
    demand_wms: int = 0

    def add(self, other: _Energy) -> None:
        self.import_wms += other.import_wms
        self.export_wms += other.export_wms
        self.pv_wms += other.pv_wms
        self.wind_wms += other.wind_wms
        self.demand_wms += other.demand_wms

    def copy(self) -> _Energy:
        return _Energy(
            self.import_wms, self.export_wms, self.pv_wms, self.wind_wms, self.demand_wms
        )

    def as_wh(self) -> dict[str, float]:
        return {
            "energy_import_wh": self.import_wms / _WMS_PER_WH,
            "energy_export_wh": self.export_wms / _WMS_PER_WH,
            "pv_wh": self.pv_wms / _WMS_PER_WH,
            "wind_wh": self.wind_wms / _WMS_PER_WH,
            "demand_wh": self.demand_wms / _WMS_PER_WH,
        }


def _lifetime_wh(seed: int, index: int, lo_kwh: float, hi_kwh: float) -> int:
    """A seeded plausible starting value for a lifetime counter, whole Wh."""
    return round((lo_kwh + (hi_kwh - lo_kwh) * unit_hash(seed, _S_LIFETIME, index)) * 1000.0)


class SimHome:
    """One simulated household with a grid meter, a PV inverter and (optionally) a wind turbine.

    ``seed`` fixes the household's behaviour; ``weather_seed`` (default: ``seed``) fixes clouds
    and wind, so a neighbourhood can share one sky by giving every home the same weather seed.
    Counters start, at the clock's time of creation, at seeded lifetime values (grid counters
    below 5,000 kWh so the SDM630's float32 kWh registers keep about 1 Wh resolution).
    """

    def __init__(
        self,
        home: str,
        seed: int,
        clock: Clock,
        *,
        lat_deg: float = 52.0,
        lon_deg: float = 5.0,
        pv_capacity_w: int = 4000,
        wind_rated_w: int = 1500,
        step_s: int = 10,
        with_wind: bool = True,
        weather_seed: int | None = None,
    ) -> None:
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        self.home = home
        self.seed = seed
        self.weather_seed = seed if weather_seed is None else weather_seed
        self.clock = clock
        self.lat_deg = lat_deg
        self.lon_deg = lon_deg
        self.pv_capacity_w = pv_capacity_w
        self.wind_rated_w = wind_rated_w
        self.step_s = step_s
        self.with_wind = with_wind
        self._step_ms = step_s * 1000
        self._lock = threading.Lock()
        self._cache_step_ms: int | None = None
        self._cache_powers = StepPowers(0, 0, 0, 0.0)

        t0 = clock.now_ms()
        self.created_ms = t0
        self._t_ms = t0  # counters below are integrated up to here
        self._energy = _Energy(
            import_wms=_lifetime_wh(seed, 0, 300.0, 4000.0) * _WMS_PER_WH,
            export_wms=_lifetime_wh(seed, 1, 100.0, 2500.0) * _WMS_PER_WH,
            pv_wms=_lifetime_wh(seed, 2, 500.0, 8000.0) * _WMS_PER_WH,
            wind_wms=(_lifetime_wh(seed, 3, 200.0, 3000.0) if with_wind else 0) * _WMS_PER_WH,
            demand_wms=0,
        )
        self._initial = self._energy.copy()
        self._baseline_ms = t0
        self._baseline = self._energy.copy()

    # --- devices --------------------------------------------------------------------------

    @property
    def devices(self) -> dict[str, Role]:
        """This home's devices: name (the agent's device id) → role."""
        return {
            name: role
            for name, role in DEVICE_ROLES.items()
            if self.with_wind or name != WIND_TURBINE
        }

    # --- power ----------------------------------------------------------------------------

    def step_start_ms(self, t_ms: int) -> int:
        """Start (epoch ms) of the step that contains ``t_ms``."""
        return t_ms - t_ms % self._step_ms

    def _compute_powers(self, step_ms: int) -> StepPowers:
        demand = profiles.household_demand_w(self.seed, step_ms, self.lon_deg)
        pv = profiles.pv_power_w(
            self.weather_seed, step_ms, self.lat_deg, self.lon_deg, self.pv_capacity_w
        )
        if self.with_wind:
            speed = profiles.wind_speed_m_s(self.weather_seed, step_ms)
            wind = profiles.wind_power_w(speed, self.wind_rated_w)
        else:
            speed, wind = 0.0, 0
        return StepPowers(demand, pv, wind, speed)

    def _powers(self, step_ms: int) -> StepPowers:
        """Powers during the step starting at ``step_ms`` (one-entry cache; hold the lock)."""
        if self._cache_step_ms != step_ms:
            self._cache_powers = self._compute_powers(step_ms)
            self._cache_step_ms = step_ms
        return self._cache_powers

    # --- integration ----------------------------------------------------------------------

    def _integral(self, from_ms: int, to_ms: int) -> _Energy:
        """Exact energy (W·ms) of the piecewise-constant powers over [from_ms, to_ms)."""
        out = _Energy()
        t = from_ms
        while t < to_ms:
            start = self.step_start_ms(t)
            end = min(start + self._step_ms, to_ms)
            p = self._powers(start)
            dt = end - t
            grid = p.grid_w
            if grid > 0:
                out.import_wms += grid * dt
            else:
                out.export_wms -= grid * dt
            out.pv_wms += p.pv_w * dt
            out.wind_wms += p.wind_w * dt
            out.demand_wms += p.demand_w * dt
            t = end
        return out

    def _advance(self, t_ms: int) -> int:
        """Integrate the counters up to ``t_ms`` (hold the lock); returns the time they are at."""
        if t_ms > self._t_ms:
            self._energy.add(self._integral(self._t_ms, t_ms))
            self._t_ms = t_ms
        return self._t_ms

    # --- queries --------------------------------------------------------------------------

    def powers(self, t_ms: int) -> StepPowers:
        """Demand, PV, wind (W) and wind speed at ``t_ms`` (or the last integrated time)."""
        with self._lock:
            t = self._advance(t_ms)
            return self._powers(self.step_start_ms(t))

    def counters(self, t_ms: int) -> dict[str, float]:
        """All energy counters (Wh) at ``t_ms``: energy_import_wh, energy_export_wh, pv_wh,
        wind_wh and demand_wh (demand's counter starts at 0 at creation)."""
        with self._lock:
            self._advance(t_ms)
            return self._energy.as_wh()

    def counters_at(self, t_ms: int) -> dict[str, float]:
        """The counters (Wh) at any ``t_ms`` since creation, recomputed from the profiles.

        Unlike :meth:`counters` it neither moves the integration forward nor clamps to it, so a
        test can check a reading taken long ago (by an agent in another process, say).
        """
        with self._lock:
            energy = self._initial.copy()
            energy.add(self._integral(self.created_ms, max(t_ms, self.created_ms)))
        return energy.as_wh()

    def values(self, device: str, t_ms: int) -> dict[str, float | str]:
        """What ``device`` shows at ``t_ms``, in glossary names and units.

        Values are rounded to the resolution of the coarsest register that shows them (0.1 V,
        0.01 A, 0.01 Hz, 0.01 power factor, 0.1 °C, 0.1 m/s) so every register image can carry
        them exactly; powers are whole watts; counters are exact Wh (float).
        """
        if device not in self.devices:
            raise KeyError(f"{self.home} has no device {device!r}")
        with self._lock:
            t = self._advance(t_ms)
            step = self.step_start_ms(t)
            p = self._powers(step)
            energy = self._energy.copy()
        voltage_v = round(profiles.grid_voltage_v(self.seed, step), 1)
        if device == GRID_METER:
            pf = round(profiles.load_power_factor(self.seed, step), 2)
            return {
                "power_w": float(p.grid_w),
                "energy_import_wh": energy.import_wms / _WMS_PER_WH,
                "energy_export_wh": energy.export_wms / _WMS_PER_WH,
                "voltage_v": voltage_v,
                "current_a": round(abs(p.grid_w) / (voltage_v * pf), 2),
                "power_factor": pf,
                "frequency_hz": round(profiles.grid_frequency_hz(step), 2),
            }
        ambient_c = profiles.ambient_temperature_c(self.weather_seed, step, self.lon_deg)
        if device == PV_INVERTER:
            load = p.pv_w / self.pv_capacity_w if self.pv_capacity_w else 0.0
            return {
                "power_w": float(p.pv_w),
                "energy_wh": energy.pv_wms / _WMS_PER_WH,
                "voltage_v": voltage_v,
                "current_a": round(p.pv_w / voltage_v, 2),
                "power_factor": 1.0,
                "frequency_hz": round(profiles.grid_frequency_hz(step), 2),
                "temperature_c": round(ambient_c + 5.0 + 25.0 * load, 1),
                "state": "mppt" if p.pv_w > 0 else "sleeping",
            }
        # the wind turbine
        if p.wind_speed_m_s > profiles.WIND_CUT_OUT_M_S:
            state = "braking"
        else:
            state = "running" if p.wind_w > 0 else "off"
        load = p.wind_w / self.wind_rated_w if self.wind_rated_w else 0.0
        return {
            "power_w": float(p.wind_w),
            "energy_wh": energy.wind_wms / _WMS_PER_WH,
            "voltage_v": voltage_v,
            "current_a": round(p.wind_w / voltage_v, 2),
            "temperature_c": round(ambient_c + 3.0 + 20.0 * load, 1),
            "wind_speed_m_s": round(p.wind_speed_m_s, 1),
            "state": state,
        }

    # --- totals for the demo ----------------------------------------------------------------

    def mark_baseline(self, t_ms: int | None = None) -> None:
        """Record the counters at ``t_ms`` (default: now) as the baseline for :meth:`totals`."""
        with self._lock:
            t = self._advance(self.clock.now_ms() if t_ms is None else t_ms)
            self._baseline_ms = t
            self._baseline = self._energy.copy()

    def totals(self, since_ms: int | None = None) -> dict[str, float]:
        """Simulated energy (Wh) from the baseline (or ``since_ms``) to now.

        Keys: energy_import_wh, energy_export_wh, pv_wh, wind_wh, demand_wh. Without ``since_ms``
        the baseline is the last :meth:`mark_baseline` (default: the home's creation). With it,
        the counters at ``since_ms`` are recomputed from the pure profiles (clamped to the span
        from creation to now).
        """
        with self._lock:
            now = self._advance(self.clock.now_ms())
            if since_ms is None:
                base = self._baseline
            else:
                since = min(max(since_ms, self.created_ms), now)
                base = self._initial.copy()
                base.add(self._integral(self.created_ms, since))
            end = self._energy.as_wh()
        start = base.as_wh()
        return {k: end[k] - start[k] for k in end}

    @property
    def baseline_ms(self) -> int:
        """When the current :meth:`totals` baseline was taken."""
        return self._baseline_ms
