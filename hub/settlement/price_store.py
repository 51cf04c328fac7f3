"""Imported grid prices in the hub database (table ``grid_prices``, migration 10).

Writes go through the store's ``transaction()``, reads through its ``reader()``. Prices are kept
as decimal text, exact. The hub keeps one currency: an import in another is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Final

from hub.settlement.prices import (
    PriceError,
    PriceInterval,
    PriceSeries,
    price_steps,
    utc_text,
)
from hub.storage.store import Store

BATCH: Final = 2_000


def import_prices(
    store: Store,
    series: PriceSeries,
    source: str,
    imported_ms: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Store ``series``, replacing every stored interval that overlaps its span; returns the
    number of intervals stored. One transaction: an import is all or nothing."""
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT currency FROM grid_prices WHERE currency != ? LIMIT 1", (series.currency,)
        ).fetchone()
        if row is not None:
            raise PriceError(
                f"the hub holds prices in {row[0]}, and this file is in {series.currency}; "
                "one hub keeps one currency"
            )
        conn.execute(
            "DELETE FROM grid_prices WHERE start_ms < ? AND end_ms > ?",
            (series.end_ms, series.start_ms),
        )
        items = series.intervals
        for at in range(0, len(items), BATCH):
            chunk = items[at : at + BATCH]
            conn.executemany(
                "INSERT INTO grid_prices (start_ms, end_ms, price_per_kwh, currency, source, "
                "imported_ms) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.start_ms,
                        i.end_ms,
                        str(i.price_per_kwh),
                        series.currency,
                        source,
                        imported_ms,
                    )
                    for i in chunk
                ],
            )
            if progress is not None:
                progress(len(chunk))
    return len(series.intervals)


def stored_prices(store: Store, start_ms: int, end_ms: int) -> list[PriceInterval]:
    """Stored intervals overlapping ``[start_ms, end_ms)``, in time order."""
    return [
        PriceInterval(int(r[0]), int(r[1]), Decimal(r[2]))
        for r in store.reader().execute(
            "SELECT start_ms, end_ms, price_per_kwh FROM grid_prices "
            "WHERE start_ms < ? AND end_ms > ? ORDER BY start_ms",
            (end_ms, start_ms),
        )
    ]


def stored_currency(store: Store) -> str | None:
    """The currency of the stored prices, or None when none are stored."""
    row = store.reader().execute("SELECT currency FROM grid_prices LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def prices_at(
    store: Store,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    fallback_per_kwh: Decimal | None = None,
) -> list[Decimal]:
    """The grid price per kWh of each step ``[t, t + step_ms)`` from ``start_ms`` to ``end_ms``.

    A step spanning several stored intervals gets their time-weighted mean. Raises
    :class:`PriceError` naming the first time no stored price covers, unless
    ``fallback_per_kwh`` is given explicitly: then that time is priced at it.
    """
    return price_steps(
        stored_prices(store, start_ms, end_ms),
        start_ms,
        end_ms,
        step_ms,
        fallback_per_kwh=fallback_per_kwh,
    )


def covers(store: Store, start_ms: int, end_ms: int) -> bool:
    """Whether stored prices cover all of ``[start_ms, end_ms)`` without a gap."""
    try:
        price_steps(stored_prices(store, start_ms, end_ms), start_ms, end_ms, end_ms - start_ms)
    except PriceError:
        return False
    return True


__all__ = ["covers", "import_prices", "prices_at", "stored_currency", "stored_prices", "utc_text"]
