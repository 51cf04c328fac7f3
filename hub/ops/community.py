"""Neighbourhood figures that never expose a single home.

Read through the ``community-stats`` purpose only, and published only for groups of at least
``k`` homes (default 5): with fewer, a figure is withheld outright rather than blurred, because a
total over two homes minus one neighbour's own meter is the other neighbour's consumption.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from hub.consent.book import PurposeView
from protocol.quantities import Role

DEFAULT_K: Final = 5


@dataclass(frozen=True)
class Figure:
    """A total over ``homes`` homes, or withheld (``value_wh`` None) when there are fewer than k."""

    homes: int
    value_wh: float | None


def group_total(per_home: dict[str, float], k: int = DEFAULT_K) -> Figure:
    """The sum over homes, withheld below ``k`` homes."""
    n = len(per_home)
    return Figure(n, sum(per_home.values()) if n >= k else None)


def community_figures(
    view: PurposeView, now_ms: int, window_ms: int = 3_600_000, k: int = DEFAULT_K
) -> dict[str, Figure]:
    """Energy the neighbourhood imported, exported and generated over the last ``window_ms``."""
    since = now_ms - window_ms
    per_home: dict[str, dict[str, float]] = {
        "imported": defaultdict(float), "exported": defaultdict(float),
        "generated": defaultdict(float),
    }  # fmt: skip
    wanted = (
        (Role.GRID, {"energy_import_wh": "imported", "energy_export_wh": "exported"}),
        (Role.PV, {"energy_wh": "generated"}),
        (Role.WIND, {"energy_wh": "generated"}),
    )
    for role, figures in wanted:
        ends = view.counter_ends(now_ms, role=role, since_ms=since, counters=tuple(figures))
        for home, _, by_counter in ends:
            for counter, (first, last) in by_counter.items():
                per_home[figures[counter]][home] += last - first
    return {name: group_total(dict(homes), k) for name, homes in per_home.items()}


def community_metrics(view: PurposeView, now_ms: int, k: int = DEFAULT_K) -> dict[str, float]:
    """The ``community`` part of ``hub/metrics``: counts always, totals only over >= k homes."""
    out: dict[str, float] = {}
    for name, figure in community_figures(view, now_ms, k=k).items():
        out[f"{name}_homes"] = float(figure.homes)
        if figure.value_wh is not None:
            out[f"{name}_wh"] = round(figure.value_wh, 1)
    return out
