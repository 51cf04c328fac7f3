"""Merging consecutive readings of one device into one, keeping energy counters exact.

Both ends aggregate the same way, so it lives in the contract: the agent when its outbox runs
out of disk budget (old raw readings become 15-minute aggregates) and when a consent grant asks
for a coarser resolution than the devices are polled at; the hub when a purpose may only see a
coarser resolution than it stores. A lifetime
counter's last value is exact whatever is merged, so energy computed from counter differences is
unchanged; power is the counters' mean over the span when the device has counters (mean of
samples otherwise), and ``state`` is the last one seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol.quantities import COUNTERS, GLOSSARY, Role

MS_PER_HOUR: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading's time (UTC epoch ms) and quantities, as the outbox keeps it."""

    ts_ms: int
    quantities: dict[str, float | str]
    period_ms: int | None = None


def _net_energy_wh(role: Role, q: dict[str, float | str]) -> float | None:
    """The counter whose slope is ``power_w`` for this role, in Wh."""
    if role is Role.GRID:
        imp, exp = q.get("energy_import_wh"), q.get("energy_export_wh")
        if isinstance(imp, float | int) and isinstance(exp, float | int):
            return float(imp) - float(exp)
        return None
    e = q.get("energy_wh")
    return float(e) if isinstance(e, float | int) else None


def merge(role: Role, samples: Sequence[Sample], base: Sample | None = None) -> Sample:
    """One aggregate sample for ``samples`` (oldest first, at least one).

    The aggregate stands at the last sample's time and covers the span since ``base`` (the
    reading before the group, when known) or since the first sample. Power comes from the
    counters over that span when both ends have them: for a battery, whose counter only rises
    with discharge, it falls back to the mean of the samples.
    """
    if not samples:
        raise ValueError("nothing to merge")
    first, last = samples[0], samples[-1]
    start_ms = base.ts_ms if base is not None else first.ts_ms - (first.period_ms or 0)
    span_ms = last.ts_ms - start_ms
    out: dict[str, float | str] = {}
    for name in {n for s in samples for n in s.quantities}:
        values = [s.quantities[name] for s in samples if name in s.quantities]
        if GLOSSARY[name].kind is str or name in COUNTERS:
            # The last value: exact for counters, the current one for a state.
            latest = next(s.quantities[name] for s in reversed(samples) if name in s.quantities)
            out[name] = latest
        else:
            numbers = [float(v) for v in values if not isinstance(v, str)]
            out[name] = sum(numbers) / len(numbers)
    # Counter-based power covers (reference, last]: exact when the group had no earlier span.
    reference = base or first
    counter_span_ms = last.ts_ms - reference.ts_ms
    exact = base is not None or first.period_ms is None
    if "power_w" in out and counter_span_ms > 0 and exact and role is not Role.BATTERY:
        end = _net_energy_wh(role, last.quantities)
        begin = _net_energy_wh(role, reference.quantities)
        if end is not None and begin is not None:
            out["power_w"] = (end - begin) * MS_PER_HOUR / counter_span_ms
    return Sample(last.ts_ms, out, span_ms)
