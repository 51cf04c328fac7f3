"""Neighbourhood figures that never expose a single home.

Read through the ``community-stats`` purpose only, and published only for groups of at least
``k`` homes (default 5): with fewer, a figure is withheld outright rather than blurred, because a
total over two homes minus one neighbour's own meter is the other neighbour's consumption.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hub.consent import PurposeView
from hub.store import StoredReading

DEFAULT_K: Final = 5


@dataclass(frozen=True)
class Figure:
    """A total over ``homes`` homes, or withheld (``value_wh`` None) when there are fewer than k."""

    homes: int
    value_wh: float | None


def _deltas(readings: Iterable[StoredReading], counter: str) -> dict[str, float]:
    """Per home, the increase of ``counter`` over the readings seen (summed over its devices)."""
    first: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    for r in readings:
        value = r.quantities.get(counter)
        if isinstance(value, int | float) and not isinstance(value, bool):
            first.setdefault((r.home, r.device), float(value))
            last[(r.home, r.device)] = float(value)
    per_home: dict[str, float] = defaultdict(float)
    for key, end in last.items():
        per_home[key[0]] += end - first[key]
    return dict(per_home)


def group_total(per_home: dict[str, float], k: int = DEFAULT_K) -> Figure:
    """The sum over homes, withheld below ``k`` homes."""
    n = len(per_home)
    return Figure(n, sum(per_home.values()) if n >= k else None)


def community_figures(
    view: PurposeView, now_ms: int, window_ms: int = 3_600_000, k: int = DEFAULT_K
) -> dict[str, Figure]:
    """Energy the neighbourhood imported, exported and generated over the last ``window_ms``."""
    since = now_ms - window_ms
    grid = list(view.readings(now_ms, role=None, since_ms=since))
    by_role: dict[str, list[StoredReading]] = defaultdict(list)
    for r in grid:
        by_role[r.role.value].append(r)
    generated = _deltas([*by_role["pv"], *by_role["wind"]], "energy_wh")
    return {
        "imported": group_total(_deltas(by_role["grid"], "energy_import_wh"), k),
        "exported": group_total(_deltas(by_role["grid"], "energy_export_wh"), k),
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
