"""The home's own energy in 15-minute slots, for the household page: every stream, shared or not.

The file (``energy.db`` in the agent's data folder) never leaves the home: the agent fills it
from every poll before consent filtering, as the household's own Home Assistant bridge sees
them, so the page shows what the home imported, exported and generated even from streams the
household does not share with the cooperative.

A slot row holds each device's energy in one UTC quarter hour (Wh, from its lifetime counters)
and the counters it ended on. Energy is the difference from the device's previous counter,
whenever that was read: after a gap (agent stopped, device unreachable) the whole difference
falls in the slot where readings resume, so nothing is lost, and the slots in the gap have no
row, which the reader reports as incomplete. A counter that goes backwards (a meter replaced,
a misread) adds nothing and becomes the new baseline. The current slot is written at most once
a minute (reading time), and when its slot ends, so the page is never more than a minute
behind and the SD card sees one small transaction a minute.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.outbox import Polled
from protocol.quantities import Role

log = logging.getLogger(__name__)

SLOT_MS: Final = 15 * 60_000
FLUSH_EVERY_MS: Final = 60_000  # the current slot reaches the file at least this often
KEEP_DAYS: Final = 400  # a year and a month: this month and the same month last year
# Which counter of which role is which energy: (role, counter) -> column.
_COLUMNS: Final = {
    (Role.GRID, "energy_import_wh"): "import_wh",
    (Role.GRID, "energy_export_wh"): "export_wh",
    (Role.PV, "energy_wh"): "generated_wh",
    (Role.WIND, "energy_wh"): "generated_wh",
}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS slots (
    device TEXT NOT NULL,
    role TEXT NOT NULL,
    slot_ms INTEGER NOT NULL,      -- UTC start of the quarter hour
    import_wh REAL NOT NULL DEFAULT 0,
    export_wh REAL NOT NULL DEFAULT 0,
    generated_wh REAL NOT NULL DEFAULT 0,
    counters TEXT NOT NULL,        -- the counters the slot ended on, as 'name=value;...'
    PRIMARY KEY (device, slot_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slots_by_time ON slots (slot_ms);
"""


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """A span's energy (Wh). ``self_used_wh`` is own generation used at home, worked out per
    slot (generation less export, never below zero) before summing, so a sunny noon's export
    does not cancel an evening's; ``consumed_wh`` is what the home used from every source.
    ``complete`` is False when a slot of the span before ``now`` has no reading."""

    start_ms: int
    end_ms: int
    import_wh: float
    export_wh: float
    pv_wh: float
    wind_wh: float
    self_used_wh: float
    consumed_wh: float
    complete: bool


@dataclass
class _Slot:
    device: str
    role: Role
    slot_ms: int
    energy: dict[str, float]  # column -> Wh in this slot
    counters: dict[str, float]  # counter -> the last value read
    written: dict[str, float] = field(default_factory=dict)  # energy this process wrote


def _encode_counters(counters: dict[str, float]) -> str:
    return ";".join(f"{k}={v!r}" for k, v in sorted(counters.items()))


def _decode_counters(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name and value:
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


class EnergyLog:
    """The writer, owned by the agent's poll loop (one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Made where the agent is built, used by its poll loop's thread alone from then on.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._open: dict[str, _Slot] = {}  # device -> the slot being filled
        self._baseline: dict[str, dict[str, float]] = {}  # device -> counters last read
        self._flushed_ms: dict[str, int] = {}

    def record(self, polled: Iterable[Polled]) -> None:
        """Take one poll cycle's readings (before consent)."""
        for p in polled:
            counters = {
                name: float(v)
                for name, v in p.quantities.items()
                if (p.role, name) in _COLUMNS and isinstance(v, int | float)
            }
            if counters:
                self._take(p.device, p.role, p.ts_ms, counters)

    def _take(self, device: str, role: Role, ts_ms: int, counters: dict[str, float]) -> None:
        slot_ms = ts_ms - ts_ms % SLOT_MS
        current = self._open.get(device)
        if current is not None and current.slot_ms != slot_ms:
            self._write(current)
            current = None
        if current is None:
            current = _Slot(device, role, slot_ms, {}, {})
            self._open[device] = current
            self._flushed_ms[device] = ts_ms
            if device not in self._baseline:
                self._baseline[device] = self._last_counters(device, slot_ms)
        base = self._baseline[device]
        for name, value in counters.items():
            before = base.get(name)
            if before is not None and value >= before:
                column = _COLUMNS[(role, name)]
                current.energy[column] = current.energy.get(column, 0.0) + (value - before)
            base[name] = value  # a first reading, or one that went backwards: a new baseline
            current.counters[name] = value
        if ts_ms - self._flushed_ms[device] >= FLUSH_EVERY_MS:
            self._write(current)
            self._flushed_ms[device] = ts_ms

    def _last_counters(self, device: str, before_ms: int) -> dict[str, float]:
        """Where a restarted agent takes up: the counters of the device's newest slot."""
        row = self._db.execute(
            "SELECT counters FROM slots WHERE device = ? AND slot_ms <= ? "
            "ORDER BY slot_ms DESC LIMIT 1",
            (device, before_ms),
        ).fetchone()
        return _decode_counters(row[0]) if row else {}

    def _write(self, s: _Slot) -> None:
        # The slot may already hold energy from before a restart: this process adds to it.
        try:
            self._db.execute(
                "INSERT INTO slots (device, role, slot_ms, import_wh, export_wh, generated_wh,"
                " counters) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, slot_ms) DO UPDATE"
                " SET import_wh = import_wh + excluded.import_wh - ?,"
                " export_wh = export_wh + excluded.export_wh - ?,"
                " generated_wh = generated_wh + excluded.generated_wh - ?,"
                " counters = excluded.counters",
                (
                    s.device, s.role.value, s.slot_ms,
                    s.energy.get("import_wh", 0.0), s.energy.get("export_wh", 0.0),
                    s.energy.get("generated_wh", 0.0), _encode_counters(s.counters),
                    s.written.get("import_wh", 0.0), s.written.get("export_wh", 0.0),
                    s.written.get("generated_wh", 0.0),
                ),
            )  # fmt: skip
        except sqlite3.Error as exc:
            # The page's history is not worth stopping the meters for.
            log.warning("cannot write the home's energy log: %s", exc)
            return
        s.written = dict(s.energy)  # a re-write of the slot replaces this, not adds to it

    def flush(self) -> None:
        for s in self._open.values():
            self._write(s)

    def prune(self, now_ms: int, keep_days: int = KEEP_DAYS) -> int:
        """Forget slots older than ``keep_days``; the number of rows removed."""
        cur = self._db.execute(
            "DELETE FROM slots WHERE slot_ms < ?", (now_ms - keep_days * 86_400_000,)
        )
        return cur.rowcount

    def close(self) -> None:
        self.flush()
        self._db.close()


def read_energy(
    path: Path, edges_ms: Sequence[int], now_ms: int | None = None
) -> list[EnergyTotals]:
    """The energy of each span ``[edges_ms[i], edges_ms[i + 1])`` (UTC ms, ascending; the page
    gives local midnights or hours). A slot at or after ``now_ms`` is not counted as missing.
    A missing file reads as zeros, incomplete: the agent has not run yet."""
    spans = list(itertools.pairwise(edges_ms))
    if any(b <= a for a, b in spans):
        raise ValueError("edges must be ascending")
    by_slot: dict[int, dict[str, float]] = {}
    if spans and path.exists():
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT slot_ms, role, SUM(import_wh), SUM(export_wh), SUM(generated_wh)"
                " FROM slots WHERE slot_ms >= ? AND slot_ms < ? GROUP BY slot_ms, role",
                (spans[0][0] - spans[0][0] % SLOT_MS, spans[-1][1]),
            ).fetchall()
        finally:
            db.close()
        for slot_ms, role, imp, exp, gen in rows:
            slot = by_slot.setdefault(slot_ms, {})
            if role == Role.GRID:
                slot["import"] = slot.get("import", 0.0) + imp
                slot["export"] = slot.get("export", 0.0) + exp
            elif role in (Role.PV, Role.WIND):
                slot[role] = slot.get(role, 0.0) + gen
    out = []
    for start, end in spans:
        imp = exp = pv = wind = used = 0.0
        complete = True
        first = start - start % SLOT_MS
        for slot_ms in range(first, end, SLOT_MS):
            s = by_slot.get(slot_ms)
            if s is None:
                if now_ms is None or slot_ms + SLOT_MS <= now_ms:
                    complete = False
                continue
            imp += s.get("import", 0.0)
            exp += s.get("export", 0.0)
            pv += s.get(Role.PV, 0.0)
            wind += s.get(Role.WIND, 0.0)
            gen = s.get(Role.PV, 0.0) + s.get(Role.WIND, 0.0)
            used += max(0.0, gen - s.get("export", 0.0))
        out.append(
            EnergyTotals(start, end, imp, exp, pv, wind, used, imp + pv + wind - exp, complete)
        )
    return out
