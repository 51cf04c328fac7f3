"""Per-home summaries: readings stored and energy over the stored period, from lifetime counters.

Energy comes from counters, not from integrating ``power_w``: a counter is exact whatever the
polling rate and however many readings were lost. Over the stored period, per home:

- ``imported_wh`` / ``exported_wh``: last minus first ``energy_import_wh`` / ``energy_export_wh``
  of its grid meter(s), summed over grid devices;
- ``generated_wh``: last minus first ``energy_wh`` summed over its pv and wind devices.

First and last are the lowest- and highest-seq readings that carried the counter (NULLs are
skipped). A counter that went backwards (a meter was replaced) shows as a negative delta rather
than being hidden.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hub.storage.store import DeviceCounters, Store
from protocol.quantities import Role

_GENERATORS = frozenset({Role.PV, Role.WIND})


@dataclass(frozen=True, slots=True)
class HomeSummary:
    """One home over the stored period; energies in Wh."""

    home: str
    readings: int
    imported_wh: float = 0.0
    exported_wh: float = 0.0
    generated_wh: float = 0.0


def _delta(device: DeviceCounters, counter: str) -> float:
    if counter not in device.first:
        return 0.0
    return device.last[counter] - device.first[counter]


def summarize(devices: Iterable[DeviceCounters]) -> dict[str, HomeSummary]:
    """Fold per-device counters into per-home summaries, keyed and ordered by home. Pure."""
    totals: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for d in devices:
        t = totals.setdefault(d.home, [0.0, 0.0, 0.0])
        counts[d.home] = counts.get(d.home, 0) + d.readings
        if d.role == Role.GRID:
            t[0] += _delta(d, "energy_import_wh")
            t[1] += _delta(d, "energy_export_wh")
        elif d.role in _GENERATORS:
            t[2] += _delta(d, "energy_wh")
    return {
        home: HomeSummary(
            home=home,
            readings=counts[home],
            imported_wh=totals[home][0],
            exported_wh=totals[home][1],
            generated_wh=totals[home][2],
        )
        for home in sorted(totals)
    }


def home_summaries(store: Store) -> dict[str, HomeSummary]:
    """Summaries of every home with a registered device in ``store``."""
    return summarize(store.device_counters())
