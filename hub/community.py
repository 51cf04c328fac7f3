"""Neighbourhood figures that never expose a single home.

Read through the ``community-stats`` purpose only, and published only for groups of at least
``k`` homes (default 5): with fewer, a figure is withheld outright rather than blurred, because a
total over two homes minus one neighbour's own meter is the other neighbour's consumption.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Final

from hub.consent import PurposeView
from hub.store import StoredReading
from protocol.quantities import Role

DEFAULT_K: Final = 5


@dataclass(frozen=True)
class Figure:
    """A total over ``homes`` homes, or withheld (``value_wh`` None) when there are fewer than k."""

    homes: int
    value_wh: float | None


def _deltas(readings: Iterable[StoredReading], counter: str) -> dict[str, float]:
    """Per home, the increase of ``counter`` over the readings seen (summed over its devices)."""
    return _deltas_of(readings, (counter,))[counter]


def _deltas_of(
    readings: Iterable[StoredReading], counters: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """:func:`_deltas` of several counters in one pass, holding no reading: per counter."""
    first: dict[tuple[str, str, str], float] = {}
    last: dict[tuple[str, str, str], float] = {}
    for r in readings:
        for counter in counters:
            value = r.quantities.get(counter)
            if isinstance(value, int | float) and not isinstance(value, bool):
                first.setdefault((counter, r.home, r.device), float(value))
                last[(counter, r.home, r.device)] = float(value)
    per_counter: dict[str, dict[str, float]] = {c: defaultdict(float) for c in counters}
    for key, end in last.items():
        per_counter[key[0]][key[1]] += end - first[key]
    return {c: dict(per_home) for c, per_home in per_counter.items()}


def group_total(per_home: dict[str, float], k: int = DEFAULT_K) -> Figure:
    """The sum over homes, withheld below ``k`` homes."""
    n = len(per_home)
    return Figure(n, sum(per_home.values()) if n >= k else None)


def community_figures(
    view: PurposeView, now_ms: int, window_ms: int = 3_600_000, k: int = DEFAULT_K
) -> dict[str, Figure]:
    """Energy the neighbourhood imported, exported and generated over the last ``window_ms``."""
    since = now_ms - window_ms
    # Streamed a role at a time: an hour of 2,000 homes is some two million readings, which as
    # objects held at once would take the hub the best part of a gigabyte.
    grid = _deltas_of(
        view.readings(now_ms, role=Role.GRID, since_ms=since),
        ("energy_import_wh", "energy_export_wh"),
    )
    generators = chain.from_iterable(
        view.readings(now_ms, role=role, since_ms=since) for role in (Role.PV, Role.WIND)
    )
    generated = _deltas(generators, "energy_wh")
    return {
        "imported": group_total(grid["energy_import_wh"], k),
        "exported": group_total(grid["energy_export_wh"], k),
        "generated": group_total(generated, k),
    }


def community_metrics(view: PurposeView, now_ms: int, k: int = DEFAULT_K) -> dict[str, float]:
    """The ``community`` part of ``hub/metrics``: counts always, totals only over >= k homes."""
    out: dict[str, float] = {}
    for name, figure in community_figures(view, now_ms, k=k).items():
        out[f"{name}_homes"] = float(figure.homes)
        if figure.value_wh is not None:
            out[f"{name}_wh"] = round(figure.value_wh, 1)
    return out
