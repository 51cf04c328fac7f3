"""Per-interval energy from lifetime counters, interpolated at interval boundaries. Pure.

A meter's lifetime counter (Wh) is exact at the instant it was read; readings rarely fall on a
15-minute boundary, so the counter's value at a boundary is interpolated linearly between the
readings either side of it (exact when one falls on the boundary). Boundary values are rounded to
whole mWh before differencing, so the intervals of any span add up to the counter's delta over
that span: no energy is created or lost by cutting it into intervals.

Each member interval gets a status:

- ``ok``: both boundary values come from readings at most ``max_gap_ms`` apart;
- ``estimated``: a boundary was interpolated across a longer gap (the device was offline): the
  energy over the gap is exact, but how it spreads over the gap's intervals is a straight line;
- ``reset``: the counter went backwards (a meter replaced); the interval counts as zero;
- ``missing``: no reading at or after the interval's end yet, so its energy is unknown. Readings
  arrive late as the normal case (an agent's outbox drains after an outage), so a missing
  interval is settled provisionally without the member and settled again when the backlog
  arrives.

Before a device's first reading the home is not yet a member: its settlement starts with the first
interval that begins at or after that reading.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

OK: Final = "ok"
ESTIMATED: Final = "estimated"
RESET: Final = "reset"
MISSING: Final = "missing"


class _Quality(IntEnum):
    # Ordered from best to worst: a combination takes the worst.
    OK = 0
    ESTIMATED = 1
    RESET = 2
    MISSING = 3


_STATUS: Final = {
    _Quality.OK: OK,
    _Quality.ESTIMATED: ESTIMATED,
    _Quality.RESET: RESET,
    _Quality.MISSING: MISSING,
}
_QUALITY: Final = {v: k for k, v in _STATUS.items()}


@dataclass(frozen=True, slots=True)
class Series:
    """One counter of one device: reading times (UTC ms, ascending) and values (Wh)."""

    ts_ms: tuple[int, ...]
    values_wh: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.ts_ms) != len(self.values_wh):
            raise ValueError("ts_ms and values_wh differ in length")
        if any(b < a for a, b in zip(self.ts_ms, self.ts_ms[1:], strict=False)):
            raise ValueError("readings are not in time order")

    @classmethod
    def of(cls, samples: Sequence[tuple[int, float]]) -> Series:
        """From ``(ts_ms, value_wh)`` pairs in any order; of equal times the last one wins."""
        by_ts = dict(sorted(samples, key=lambda s: s[0]))
        ts = tuple(sorted(by_ts))
        return cls(ts, tuple(by_ts[t] for t in ts))


def boundary_value(series: Series, t_ms: int, max_gap_ms: int) -> tuple[int | None, _Quality]:
    """The counter at ``t_ms`` in whole mWh, and how good it is; None when not yet known.

    None with MISSING: no reading at or after ``t_ms`` (late or not sent yet). None with OK:
    ``t_ms`` is before the first reading (not a member yet).
    """
    ts = series.ts_ms
    i = bisect.bisect_left(ts, t_ms)
    if i < len(ts) and ts[i] == t_ms:
        return round(series.values_wh[i] * 1000), _Quality.OK
    if i == len(ts):
        return None, _Quality.MISSING
    if i == 0:
        return None, _Quality.OK
    t0, t1 = ts[i - 1], ts[i]
    v0, v1 = series.values_wh[i - 1], series.values_wh[i]
    value = v0 + (v1 - v0) * (t_ms - t0) / (t1 - t0)
    quality = _Quality.OK if t1 - t0 <= max_gap_ms else _Quality.ESTIMATED
    return round(value * 1000), quality


@dataclass(frozen=True, slots=True)
class CounterIntervals:
    """One counter cut into intervals: energy per interval (mWh; None = not known) and status.

    ``status[i]`` is None where the device was not yet reporting (not a member).
    """

    energy_mwh: tuple[int | None, ...]
    status: tuple[str | None, ...]


def counter_intervals(
    series: Series, boundaries: Sequence[int], max_gap_ms: int
) -> CounterIntervals:
    """Energy of ``series`` in each interval ``[boundaries[i], boundaries[i+1])``."""
    values = [boundary_value(series, b, max_gap_ms) for b in boundaries]
    first_ts = series.ts_ms[0] if series.ts_ms else None
    energy: list[int | None] = []
    status: list[str | None] = []
    for (v0, q0), (v1, q1), start in zip(values, values[1:], boundaries, strict=False):
        if first_ts is None or first_ts > start:
            energy.append(None)
            status.append(None)
        elif v0 is None or v1 is None:
            energy.append(None)
            status.append(MISSING)
        elif v1 < v0:
            energy.append(0)
            status.append(RESET)
        else:
            energy.append(v1 - v0)
            status.append(_STATUS[max(q0, q1)])
    return CounterIntervals(tuple(energy), tuple(status))


@dataclass(frozen=True, slots=True)
class MemberInterval:
    """One member's grid exchange in one interval (mWh) and its status (see the module doc)."""

    home: str
    start_ms: int
    import_mwh: int
    export_mwh: int
    status: str

    @property
    def known(self) -> bool:
        return self.status != MISSING


def worst(statuses: Sequence[str]) -> str:
    return _STATUS[max(_QUALITY[s] for s in statuses)]


def home_intervals(
    home: str,
    devices: Mapping[str, tuple[Series, Series | None]],
    boundaries: Sequence[int],
    max_gap_ms: int,
) -> list[MemberInterval | None]:
    """A home's import and export per interval, summed over its grid meters.

    ``devices`` maps each grid device to its (import, export) counter series; a meter that never
    reports an export counter exports nothing. An interval is None before any of the home's
    meters reports; a meter that has not started yet while another has counts as zero.
    """
    n = len(boundaries) - 1
    per_device: list[tuple[CounterIntervals, CounterIntervals | None]] = [
        (
            counter_intervals(imp, boundaries, max_gap_ms),
            None
            if exp is None or not exp.ts_ms
            else counter_intervals(exp, boundaries, max_gap_ms),
        )
        for imp, exp in devices.values()
    ]
    out: list[MemberInterval | None] = []
    for i in range(n):
        imp_total = exp_total = 0
        statuses: list[str] = []
        for imp_ci, exp_ci in per_device:
            for ci, is_import in ((imp_ci, True), (exp_ci, False)):
                if ci is None or ci.status[i] is None:
                    continue
                status = ci.status[i]
                assert status is not None
                statuses.append(status)
                energy = ci.energy_mwh[i] or 0
                if is_import:
                    imp_total += energy
                else:
                    exp_total += energy
        if not statuses:
            out.append(None)
            continue
        status = worst(statuses)
        if status == MISSING:
            imp_total = exp_total = 0
        out.append(MemberInterval(home, boundaries[i], imp_total, exp_total, status))
    return out


def interval_boundaries(start_ms: int, end_ms: int, step_ms: int) -> list[int]:
    """``start_ms, start_ms + step, ..., end_ms``; both ends must be on the step grid."""
    if start_ms % step_ms or end_ms % step_ms or end_ms < start_ms:
        raise ValueError("interval bounds must be on the interval grid, start before end")
    return list(range(start_ms, end_ms + 1, step_ms))
