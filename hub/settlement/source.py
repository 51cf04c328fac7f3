"""The reads of meter data that settlement and the community report make, each by purpose.

Consent (docs/wire-contract.md) lets each hub module read only data granted for its purpose.
Every read of meter data in :mod:`hub.settlement` goes through :func:`read_counters`, which
names its purpose, so scoping it to the consent ledger is one change in one place: settlement
reads through
:func:`read_settlement_counters` (purpose ``settlement``), the community report through
:func:`read_community_counters` (purpose ``community-stats``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.consent.book import DAY_MS, ConsentBook
from hub.settlement.intervals import Series
from hub.storage.store import Store
from protocol.consent import RESOLUTION_MS, Purpose
from protocol.quantities import Role

__all__ = ["HomeCounters", "Purpose", "read_counters"]


@dataclass(slots=True)
class HomeCounters:
    """One home's counter series, per device: grid (import, export) and generation (pv, wind)."""

    home: str
    grid: dict[str, tuple[Series, Series | None]] = field(default_factory=dict)
    generation: dict[str, tuple[Role, Series]] = field(default_factory=dict)


def read_counters(
    store: Store, purpose: Purpose, roles: Iterable[Role], start_ms: int, end_ms: int
) -> dict[str, HomeCounters]:
    """Counter series of every home's devices with ``roles`` around ``[start_ms, end_ms]``.

    THE one read of meter data for settlement and community statistics, scoped by consent: only
    homes whose current grant shares the stream for ``purpose``, no older than that purpose's
    retention, and at its resolution (a coarser grant sees each bucket's closing counter only;
    counters are exact wherever they are read, so settlement stays exact, just coarser).
    """
    wanted = frozenset(roles)
    book = ConsentBook(store)
    raw: dict[tuple[str, str, Role], list[tuple[int, float | None, float | None, float | None]]]
    raw = {}
    for s in store.counter_samples(start_ms, end_ms, wanted):
        terms = book.current(s.home).covers(s.role, purpose)
        if terms is None or s.ts_ms < end_ms - terms.retention_days * DAY_MS:
            continue
        raw.setdefault((s.home, s.device, s.role), []).append(
            (s.ts_ms, s.energy_import_wh, s.energy_export_wh, s.energy_wh)
        )
        size = RESOLUTION_MS[terms.resolution]
        rows = raw[(s.home, s.device, s.role)]
        if size and len(rows) > 1 and -(-rows[-2][0] // size) == -(-s.ts_ms // size):
            del rows[-2]  # finer than granted: keep the bucket's closing counter only
    homes: dict[str, HomeCounters] = {}
    for (home, device, role), rows in raw.items():
        h = homes.setdefault(home, HomeCounters(home))
        if role is Role.GRID:
            imp = Series.of([(t, v) for t, v, _, _ in rows if v is not None])
            exp = Series.of([(t, v) for t, _, v, _ in rows if v is not None])
            if imp.ts_ms:
                h.grid[device] = (imp, exp if exp.ts_ms else None)
        else:
            gen = Series.of([(t, v) for t, _, _, v in rows if v is not None])
            if gen.ts_ms:
                h.generation[device] = (role, gen)
    return {home: homes[home] for home in sorted(homes)}


def read_settlement_counters(store: Store, start_ms: int, end_ms: int) -> dict[str, HomeCounters]:
    """Grid-meter import and export counters, read for the ``settlement`` purpose."""
    return read_counters(store, Purpose.SETTLEMENT, (Role.GRID,), start_ms, end_ms)


def read_community_counters(store: Store, start_ms: int, end_ms: int) -> dict[str, HomeCounters]:
    """Grid, pv and wind counters, read for the ``community-stats`` purpose."""
    return read_counters(
        store, Purpose.COMMUNITY_STATS, (Role.GRID, Role.PV, Role.WIND), start_ms, end_ms
    )
