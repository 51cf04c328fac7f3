"""The agent's outbox: every reading is written here before it is sent, and leaves only when acked.

SQLite in WAL mode, one transaction per poll cycle (a Pi's SD card wears with every write),
made durable (``fdatasync`` of the WAL) before any reading it holds leaves the home, and every
10 s while none does, not at every commit: see :meth:`Outbox.sync`. A
device's ``seq`` is kept by its rows: the next is one past the highest of its stored rows and of
``device_seq``, which is brought up to date in the transaction that deletes rows (an ack, a
compaction, a drop), so it rises by one across restarts and a crash can neither reuse nor skip
one. (Schema 1 wrote ``device_seq`` in every cycle's transaction: a second page to write and
sync every second, issue 22.) Each row keeps the
reading's wire JSON, so a backlog drains by splicing stored text rather than rebuilding objects.

The outbox has a disk budget. When it is exceeded, the oldest raw readings are merged into
15-minute aggregates (counters stay exact, so no energy is lost); only when nothing is left to
merge are the oldest readings dropped. Both are counted, persisted and reported in status.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Final, NamedTuple

from protocol.aggregate import Sample, merge
from protocol.codec import encode_reading
from protocol.payloads import Reading
from protocol.quantities import Role

SCHEMA_VERSION: Final = 2  # 2: device_seq is a floor, written when rows leave
BUCKET_MS: Final = 15 * 60_000  # compaction merges raw readings within quarter hours
DEFAULT_BUDGET_BYTES: Final = 256 * 1024 * 1024
# Readings committed are synced at least this often (wall seconds) while none are sent: what a
# power cut may take back during an outage. Connected, sending syncs them sooner (sync()).
SYNC_EVERY_S: Final = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    role TEXT NOT NULL,
    raw INTEGER NOT NULL,      -- 1 for a reading as polled, 0 for an aggregate
    body TEXT NOT NULL,        -- the reading's wire JSON
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


# Pages one cycle's transaction may add besides its rows' own: the device_seq and counters
# tables' pages splitting.
_SMALL_TABLE_PAGES: Final = 4
# Pages one row may add to the outbox's B-tree by splitting a page on every level of it, the
# root's split counting two: a 256 MB outbox of rows up to the 1 kB held in a page is at most
# about 8 levels deep (4 rows to an interior page at worst).
_SPLIT_PAGES: Final = 10


def _worst_growth_bytes(bodies: Iterable[str], page_size: int) -> int:
    """The most a transaction storing rows with ``bodies`` (ASCII JSON) can grow the file."""
    pages = _SMALL_TABLE_PAGES
    for body in bodies:
        pages += _SPLIT_PAGES + len(body) // (page_size - 4) + 1  # and its overflow pages
    return pages * page_size


class OutboxError(RuntimeError):
    """The outbox file cannot be used (made by a newer agent, or not an outbox)."""


@dataclass(frozen=True, slots=True)
class Polled:
    """A device's quantities from one poll (or an aggregate of polls), before it is numbered."""

    device: str
    role: Role
    ts_ms: int
    quantities: dict[str, float | str]
    period_ms: int | None = None  # for an aggregate: the span it covers, ending at ts_ms


class Row(NamedTuple):
    """A stored reading: enough to send it (``body``) and to track it (device, seq)."""

    device: str
    seq: int
    ts_ms: int
    body: str


class Outbox:
    def __init__(
        self,
        path: Path,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        *,
        durable: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened by the thread that builds the agent, then used only by its poll loop.
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Plain sqlite3, not sqlite-utils: on a Pi Zero every import counts (sqlite-utils alone
        # costs 3.5 MiB resident, and pulls in numpy where it is installed).
        self._conn = conn
        self.budget_bytes = budget_bytes
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{path} is not an outbox: {exc}") from None
        if version > SCHEMA_VERSION:
            raise OutboxError(f"{path} was written by a newer agent (schema {version})")
        wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        # NORMAL: a commit survives the agent's crash at once and a power cut once sync() ran
        # (checkpoints sync what they move). A file system without WAL (no shared memory)
        # syncs every commit. (durable=False is for tests of the logic, where fsync only
        # costs time.)
        synchronous = ("NORMAL" if wal else "FULL") if durable else "OFF"
        conn.execute(f"PRAGMA synchronous={synchronous}")
        self._wal_path = f"{path}-wal"
        self._wal_fd: int | None = None  # opened by the first sync()
        self._sync_wal = durable and wal
        self._unsynced = False  # readings committed since the last sync()
        self._monotonic = monotonic
        self._synced_at = monotonic()  # wall seconds
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._count = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self._acked: set[tuple[str, int]] = set()  # acked, deleted with the next transaction
        self._last_seqs: dict[str, int] = {}  # device -> last committed seq, as in device_seq
        # How much more the file may grow and stay in budget (see add()); negative: not known
        # to be in budget.
        self._room_bytes = -1
        self.flush_every = 1000

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    # --- writing ----------------------------------------------------------------------------
    def add(self, polled: Iterable[Polled], grant: str) -> list[Row]:
        """Number and store one poll cycle's readings in one transaction; returns their rows."""
        rows: list[Row] = []
        seq_updates: list[tuple[str, int]] = []
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserts = []
            for p in polled:
                seq = self.last_seq(p.device) + 1
                body = encode_reading(
                    Reading(p.device, seq, p.ts_ms, p.role, grant, p.quantities, p.period_ms)
                )
                seq_updates.append((p.device, seq))
                raw = 1 if p.period_ms is None else 0
                inserts.append((p.device, seq, p.ts_ms, p.role.value, raw, body))
                rows.append(Row(p.device, seq, p.ts_ms, body))
            # A device new to this process is listed (after() and oldest_ts_ms() find devices
            # there); after that its rows carry its seq.
            listed = [(d, seq) for d, seq in seq_updates if d not in self._last_seqs]
            if listed:
                self._record_seqs(listed)
            conn.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)", inserts)
            self._delete_acked()
            # The file's size as this cycle leaves it, for enforce_budget: asked here (a
            # statement outside the transaction would cost a read transaction of its own),
            # and only when what was added since it was last asked could, at worst, have
            # grown the file past its budget: once in hours, not every second (issue 22).
            growth = _worst_growth_bytes([row[5] for row in inserts], self._page_size)
            pages = None
            if growth > self._room_bytes:
                pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Known once committed, so the next cycle numbers on without a query; a rolled-back
        # cycle leaves them as they were.
        self._last_seqs.update(seq_updates)
        self._count += len(rows)
        self._unsynced = self._sync_wal
        if self._unsynced and self._monotonic() - self._synced_at >= SYNC_EVERY_S:
            self.sync()  # nothing was sent for a while (an outage): what a power cut may take
        if pages is None:
            self._room_bytes -= growth
        else:
            self._room_bytes = self.budget_bytes - pages * self._page_size
        return rows

    def sync(self) -> None:
        """Make every reading committed so far survive a power cut; called before any of them
        leaves the home.

        A power cut may undo commits made since the last sync (WAL with ``synchronous=NORMAL``
        keeps the file whole: the newest transactions are rolled back, never half-kept). The
        readings undone were never sent, so the seqs they took are numbered again and the hub
        has none of them: no reading it holds is ever reused. Syncing each poll's commit as it
        was made (``synchronous=FULL``) cost the Pi an ``fdatasync`` a second, the largest
        part of a single-meter agent's CPU (issue 22) and an SD card write a second; now it is
        one per message sent (every ``send_interval_s``, 5 s), or every ``SYNC_EVERY_S`` (10 s)
        from :meth:`add` while nothing is sent, so a power cut loses at most the readings of
        the last 10 s, which the counters in the next reading cover.

        ``fdatasync`` on the WAL file (SQLite names it ``<database>-wal``) is what a
        ``synchronous=FULL`` commit does; deletions need none (an undone delete sends a
        reading again, which the hub's idempotent insert drops).
        """
        if not self._unsynced:
            return
        fd = self._wal_fd
        if fd is not None and os.fstat(fd).st_nlink == 0:  # a last connection removed it
            os.close(fd)
            fd = None
        if fd is None:
            fd = self._wal_fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(fd)
        self._unsynced = False
        self._synced_at = self._monotonic()

    def remove(
        self,
        acked: Mapping[str, Iterable[int]],
        stored: AbstractSet[tuple[str, int]] = frozenset(),
    ) -> int:
        """Take acknowledged readings out of the outbox; returns how many were waiting.

        They leave at once for every reader of this object, and leave the file with the next
        poll cycle's transaction: one commit per cycle instead of two halves what the SD card
        is written. A crash before that commit only means the hub acks them once more. A large
        drain deletes every ``flush_every`` readings.

        ``stored`` names (device, seq) the caller knows are in the file: readings in flight,
        read from here and kept by :meth:`enforce_budget` since. They are not looked up: a
        query is a read transaction of its own, with its locks, for every acked reading.
        """
        conn = self.conn
        waiting = 0
        for device, seqs in acked.items():
            for seq in seqs:
                key = (device, seq)
                if key in self._acked:
                    continue
                found = (
                    key in stored
                    or conn.execute(
                        "SELECT 1 FROM outbox WHERE device = ? AND seq = ?", key
                    ).fetchone()
                )
                if found:
                    self._acked.add(key)
                    waiting += 1
        self._count -= waiting
        if len(self._acked) >= self.flush_every:
            self.flush()
        return waiting

    def flush(self) -> None:
        """Delete acked readings from the file now."""
        if not self._acked:
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._delete_acked()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _delete_acked(self) -> None:
        """Within the caller's transaction."""
        if self._acked:
            self._delete(self._acked)
            self._acked = set()

    def _delete(self, keys: Iterable[tuple[str, int]]) -> None:
        """Delete rows, first recording each device's last seq: the rows may have held it.
        Within the caller's transaction."""
        keys = list(keys)
        self._record_seqs([(d, self.last_seq(d)) for d in {device for device, _ in keys}])
        self.conn.executemany("DELETE FROM outbox WHERE device = ? AND seq = ?", keys)

    def _record_seqs(self, seqs: Iterable[tuple[str, int]]) -> None:
        self.conn.executemany(
            "INSERT INTO device_seq (device, last_seq) VALUES (?, ?) "
            "ON CONFLICT(device) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            seqs,
        )

    # --- reading ----------------------------------------------------------------------------
    def after(self, cursor: Mapping[str, int], limit: int) -> list[Row]:
        # Rows acked but not yet deleted are included (see is_acked), so a cursor moves past them.
        """Up to ``limit``, oldest first, of the readings past each device's ``cursor`` seq."""
        conn = self.conn
        rows: list[Row] = []
        for (device,) in conn.execute("SELECT device FROM device_seq").fetchall():
            rows += map(
                Row._make,
                conn.execute(
                    "SELECT device, seq, ts_ms, body FROM outbox WHERE device = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (device, cursor.get(device, 0), limit),
                ),
            )
        rows.sort(key=lambda r: (r.ts_ms, r.device, r.seq))
        return rows[:limit]

    def rows(self, keys: Iterable[tuple[str, int]]) -> list[Row]:
        """The stored readings of ``keys`` (device, seq) still waiting, in the order given."""
        conn = self.conn
        found: list[Row] = []
        for key in keys:
            if key in self._acked:
                continue
            row = conn.execute(
                "SELECT device, seq, ts_ms, body FROM outbox WHERE device = ? AND seq = ?", key
            ).fetchone()
            if row is not None:
                found.append(Row._make(row))
        return found

    def is_acked(self, device: str, seq: int) -> bool:
        """Acked but still in the file until the next transaction: not to be sent again."""
        return (device, seq) in self._acked

    def count(self) -> int:
        """Readings waiting for an ack."""
        return self._count

    def oldest_ts_ms(self) -> int | None:
        """The time of the oldest reading still waiting for its ack (acked ones that are still
        in the file until the next transaction do not count: they wait for nothing)."""
        oldest: int | None = None
        conn = self.conn
        for (device,) in conn.execute("SELECT device FROM device_seq").fetchall():
            for seq, ts_ms in conn.execute(
                "SELECT seq, ts_ms FROM outbox WHERE device = ? ORDER BY seq", (device,)
            ):
                if (device, seq) not in self._acked:
                    oldest = ts_ms if oldest is None else min(oldest, ts_ms)
                    break
        return oldest

    def last_seq(self, device: str) -> int:
        """The device's highest seq committed: its highest row's, or what ``device_seq`` kept
        when rows left."""
        known = self._last_seqs.get(device)
        if known is not None:
            return known
        row = self.conn.execute(
            "SELECT max(coalesce((SELECT last_seq FROM device_seq WHERE device = ?1), 0), "
            "coalesce((SELECT max(seq) FROM outbox WHERE device = ?1), 0))",
            (device,),
        ).fetchone()
        return int(row[0])

    def counter(self, name: str) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def used_bytes(self) -> int:
        """Bytes of the database file in use (freed pages are reused, so this is what grows)."""
        conn = self.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size)

    # --- the disk budget --------------------------------------------------------------------
    def enforce_budget(self, keep: frozenset[tuple[str, int]] = frozenset()) -> None:
        """Bring the outbox under its budget: compact old raw readings, then drop the oldest.

        ``keep`` names readings in flight, which are left alone so their ack still matches.
        """
        # A file no bigger than the budget cannot use more, and add() keeps track of that
        # without a query (issue 22); free pages are only counted when it may be bigger.
        if self._room_bytes >= 0 or self.used_bytes() <= self.budget_bytes:
            return
        self._room_bytes = -1  # the next add() asks again
        self.flush()
        while self.used_bytes() > self.budget_bytes * 0.8 and self._compact_oldest(keep):
            pass
        while self.used_bytes() > self.budget_bytes and self._drop_oldest(keep):
            pass

    def _bump(self, name: str, n: int) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _compact_oldest(self, keep: frozenset[tuple[str, int]], scan: int = 2000) -> bool:
        """Merge the oldest raw readings of each device by quarter hour; False if none could be."""
        conn = self.conn
        merged_any = False
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (device,) in conn.execute("SELECT device FROM device_seq").fetchall():
                raw = conn.execute(
                    "SELECT seq, ts_ms, role, body FROM outbox WHERE device = ? AND raw = 1 "
                    "ORDER BY seq LIMIT ?",
                    (device, scan),
                ).fetchall()
                raw = [r for r in raw if (device, r[0]) not in keep]
                for _, group_iter in groupby(raw, key=lambda r: r[1] // BUCKET_MS):
                    group = list(group_iter)
                    if len(group) < 2:
                        continue
                    self._replace_with_aggregate(device, group)
                    merged_any = True
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return merged_any

    def _replace_with_aggregate(self, device: str, group: list[tuple[int, int, str, str]]) -> None:
        role = Role(group[0][2])
        readings = [json.loads(body) for _, _, _, body in group]
        samples = [Sample(r["ts_ms"], r["quantities"], r.get("period_ms")) for r in readings]
        agg = merge(role, samples)
        last = readings[-1]
        reading = Reading(
            device, last["seq"], agg.ts_ms, role, last["grant"], agg.quantities, agg.period_ms
        )
        body = encode_reading(reading)
        self._delete([(device, g[0]) for g in group])
        self.conn.execute(
            "INSERT INTO outbox VALUES (?, ?, ?, ?, 0, ?)",
            (device, last["seq"], agg.ts_ms, role.value, body),
        )
        self._count -= len(group) - 1
        self._bump("compacted", len(group) - 1)

    def _drop_oldest(self, keep: frozenset[tuple[str, int]], n: int = 500) -> bool:
        conn = self.conn
        victims = [
            (d, s)
            for d, s in conn.execute(
                "SELECT device, seq FROM outbox ORDER BY ts_ms LIMIT ?", (n + len(keep),)
            )
            if (d, s) not in keep
        ][:n]
        if not victims:
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._delete(victims)
            self._bump("lost", len(victims))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._count -= len(victims)
        return True

    def close(self) -> None:
        self.flush()
        self.conn.close()  # the last connection: SQLite checkpoints, syncs and removes the WAL
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
