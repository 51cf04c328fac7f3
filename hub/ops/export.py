"""Export stored readings as CSV, streamed so a year of a thousand homes fits in flat memory.

Columns are stable: ``home,device,role,seq,ts_ms`` then every quantity of the glossary in glossary
order (units in the names: ``power_w``, ``energy_import_wh``, ...), an empty cell when a reading
did not carry the quantity. Rows are ordered by home, device, seq. ``ts_ms`` is UTC epoch ms.
"""

from __future__ import annotations

import csv
from typing import Final, TextIO

from hub.storage.store import QUANTITY_NAMES, Store

# period_ms comes last so the columns the wire contract named first keep their places; it is
# empty for a raw reading and the span covered for an aggregate.
CSV_HEADER: Final[tuple[str, ...]] = (
    "home",
    "device",
    "role",
    "seq",
    "ts_ms",
    *QUANTITY_NAMES,
    "period_ms",
)


def export_csv(store: Store, out: TextIO, *, home: str | None = None) -> int:
    """Write every reading (or one home's) as CSV to ``out``; returns the number of rows.

    Lines end in ``\\n``; no cell can hold a comma, quote or newline (ids and states are
    restricted by the wire contract), so the output is plain to ``cut`` and ``awk`` too.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    rows = 0
    for r in store.iter_readings(home):
        q = r.quantities
        cells = (q.get(n, "") for n in QUANTITY_NAMES)
        period = "" if r.period_ms is None else r.period_ms
        writer.writerow((r.home, r.device, r.role.value, r.seq, r.ts_ms, *cells, period))
        rows += 1
    return rows
