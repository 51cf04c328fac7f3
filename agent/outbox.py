"""The agent's outbox: every reading is written here before it is sent, and leaves only when acked.

SQLite in WAL mode, one transaction per poll cycle (a Pi's SD card wears with every write). The
per-device ``seq`` is kept in the same database and raised in the same transaction as the rows it
numbers, so it rises monotonically across restarts and a crash can neither reuse nor skip one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from protocol.payloads import Reading
from protocol.quantities import Role

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    role TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    quantities TEXT NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Polled:
    """A device's quantities from one poll, before it is numbered."""

    device: str
    role: Role
    ts_ms: int
    quantities: dict[str, float | str]


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened by the thread that builds the agent, then used only by its poll loop.
        self.db = sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False))
        self.db.enable_wal()
        # WAL with synchronous=NORMAL survives process crashes; FULL adds a sync per commit.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.conn.executescript(_SCHEMA)

    def add(self, polled: Iterable[Polled], grant: str) -> list[Reading]:
        """Number and store one poll cycle's readings in one transaction; returns them."""
        readings: list[Reading] = []
        conn = self.db.conn
        with conn:
            for p in polled:
                row = conn.execute(
                    "SELECT last_seq FROM device_seq WHERE device = ?", (p.device,)
                ).fetchone()
                seq = (row[0] if row else 0) + 1
                reading = Reading(p.device, seq, p.ts_ms, p.role, grant, p.quantities)
                conn.execute(
                    "INSERT INTO device_seq (device, last_seq) VALUES (?, ?) "
                    "ON CONFLICT(device) DO UPDATE SET last_seq = excluded.last_seq",
                    (p.device, seq),
                )
                conn.execute(
                    "INSERT INTO outbox (device, seq, ts_ms, role, grant_id, quantities)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        p.device,
                        seq,
                        p.ts_ms,
                        p.role.value,
                        grant,
                        json.dumps(p.quantities, allow_nan=False),
                    ),
                )
                readings.append(reading)
        return readings

    def pending(self, limit: int, after: dict[str, int] | None = None) -> list[Reading]:
        """Oldest unacked readings, at most ``limit``; ``after`` skips seqs already in flight."""
        after = after or {}
        conn = self.db.conn
        rows = []
        for (device,) in conn.execute("SELECT device FROM device_seq ORDER BY device").fetchall():
            rows += conn.execute(
                "SELECT device, seq, ts_ms, role, grant_id, quantities FROM outbox "
                "WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?",
                (device, after.get(device, 0), limit),
            ).fetchall()
        rows.sort(key=lambda r: (r[2], r[0], r[1]))
        return [
            Reading(device, seq, ts_ms, Role(role), grant, json.loads(quantities))
            for device, seq, ts_ms, role, grant, quantities in rows[:limit]
        ]

    def remove(self, acked: dict[str, list[int]]) -> int:
        """Delete acknowledged readings in one transaction; returns how many were deleted."""
        conn = self.db.conn
        with conn:
            before = conn.total_changes
            for device, seqs in acked.items():
                conn.executemany(
                    "DELETE FROM outbox WHERE device = ? AND seq = ?", [(device, s) for s in seqs]
                )
            return conn.total_changes - before

    def count(self) -> int:
        return int(self.db.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def last_seq(self, device: str) -> int:
        row = self.db.conn.execute(
            "SELECT last_seq FROM device_seq WHERE device = ?", (device,)
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.conn.close()
