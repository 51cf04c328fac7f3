"""The hub's SQLite store: one database file per cooperative.

Readings are inserted idempotently on ``(device_id, seq)``, which is ``(coop, home, device, seq)``
since the file holds one cooperative, so at-least-once delivery becomes exactly-once storage. The
hot path (:meth:`Store.insert_batches`) uses the raw connection's ``executemany`` in one
transaction; schema and migrations go through sqlite-utils (:mod:`hub.migrations`).

Times are UTC epoch milliseconds; quantities are stored in glossary units, one column each
(REAL, or TEXT for ``state``), NULL when a reading did not carry the quantity.

Thread safety: writes go through one connection, serialised by a lock. Reads go through one
connection per thread, so they see committed data only (WAL snapshots) and never block the
writer: a test or the demo can count and stream readings while the ingest worker inserts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sqlite_utils import Database

from hub.migrations import LATEST_VERSION, MIGRATIONS, MigrationError, applied_versions, migrate
from protocol.clock import Clock, SystemClock
from protocol.codec import encode
from protocol.payloads import Ack, HomeStatus, ReadingBatch, seq_ranges
from protocol.quantities import COUNTERS, GLOSSARY, Role
from protocol.topics import check_id

log = logging.getLogger(__name__)

QUANTITY_NAMES: Final[tuple[str, ...]] = tuple(GLOSSARY)
"""Quantity columns of ``readings``, in glossary order."""

_COUNTER_NAMES: Final[tuple[str, ...]] = tuple(n for n in GLOSSARY if n in COUNTERS)


def _sql(*fragments: str) -> str:
    """Join SQL fragments. Only for identifiers from the glossary: values are always bound."""
    return " ".join(fragments)


_INSERT_READING: Final = _sql(
    "INSERT OR IGNORE INTO readings (device_id, seq, ts_ms, grant_id, received_ms, period_ms,",
    ", ".join(QUANTITY_NAMES),
    ") VALUES (",
    ", ".join("?" * (6 + len(QUANTITY_NAMES))),
    ")",
)


_CARRIES_COUNTER: Final = (
    "(energy_import_wh IS NOT NULL OR energy_export_wh IS NOT NULL OR energy_wh IS NOT NULL)"
)
_COUNTER_COLUMNS: Final = (
    "SELECT ts_ms, energy_import_wh, energy_export_wh, energy_wh FROM readings"
)
_COUNTERS_BEFORE: Final = _sql(
    _COUNTER_COLUMNS,
    "WHERE device_id = ? AND ts_ms < ? AND",
    _CARRIES_COUNTER,
    "ORDER BY ts_ms DESC LIMIT 1",
)
_COUNTERS_INSIDE: Final = _sql(
    _COUNTER_COLUMNS,
    "WHERE device_id = ? AND ts_ms BETWEEN ? AND ? AND",
    _CARRIES_COUNTER,
    "ORDER BY ts_ms",
)
_COUNTERS_AFTER: Final = _sql(
    _COUNTER_COLUMNS,
    "WHERE device_id = ? AND ts_ms > ? AND",
    _CARRIES_COUNTER,
    "ORDER BY ts_ms LIMIT 1",
)


class StoreError(Exception):
    """The database cannot be opened or used as this cooperative's hub store."""


class NotAHubDatabaseError(StoreError):
    """The file is missing, not SQLite, or a SQLite database that coopwatt did not make."""


class WrongCoopError(StoreError):
    """The database belongs to another cooperative."""


@dataclass(slots=True)
class HomeInsert:
    """What one insert did for one home.

    ``committed`` maps device -> sorted seqs that are now in the database: the new ones AND the
    duplicates already there, since both must be acked or the agent resends them forever.
    """

    committed: dict[str, list[int]] = field(default_factory=dict)
    new: int = 0
    duplicates: int = 0
    rejected: int = 0

    def ack(self, home: str) -> Ack | None:
        """The ack for this home, or None when nothing was committed."""
        acked = {device: seq_ranges(seqs) for device, seqs in self.committed.items() if seqs}
        return Ack(home=home, acked=acked) if acked else None


@dataclass(slots=True)
class InsertResult:
    """Per home, what :meth:`Store.insert_batches` committed; totals as properties."""

    homes: dict[str, HomeInsert] = field(default_factory=dict)

    @property
    def new(self) -> int:
        return sum(h.new for h in self.homes.values())

    @property
    def duplicates(self) -> int:
        return sum(h.duplicates for h in self.homes.values())

    @property
    def rejected(self) -> int:
        return sum(h.rejected for h in self.homes.values())

    def acks(self) -> list[Ack]:
        """One ack per home that has anything committed, in home order."""
        acks = (self.homes[home].ack(home) for home in sorted(self.homes))
        return [a for a in acks if a is not None]


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as stored: quantities holds only the values the reading carried."""

    home: str
    device: str
    role: Role
    seq: int
    ts_ms: int
    grant: str
    received_ms: int
    quantities: dict[str, float | str]
    period_ms: int | None = None  # None: a raw reading; else the span an aggregate covers


@dataclass(frozen=True, slots=True)
class DeviceCounters:
    """One device's reading count and its first and last non-null energy counters (Wh).

    ``first`` and ``last`` map counter name (``energy_import_wh``, ``energy_export_wh``,
    ``energy_wh``) to the value of the lowest- and highest-seq reading that carried it; a counter
    the device never reported is absent from both.
    """

    home: str
    device: str
    role: Role
    readings: int
    first: dict[str, float]
    last: dict[str, float]


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One stored reading's energy counters (Wh; None when it did not carry one), at ``ts_ms``."""

    home: str
    device: str
    role: Role
    ts_ms: int
    energy_import_wh: float | None
    energy_export_wh: float | None
    energy_wh: float | None


@dataclass(frozen=True, slots=True)
class HomeStatusRow:
    """The latest status a home published, and when the hub received it (``last_seen_ms``)."""

    home: str
    state: str
    ts_ms: int | None
    last_seen_ms: int
    backlog: int | None
    payload: dict[str, Any]


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, uri = str(path), False
    else:
        # mode=rw: never create a file that is not there.
        target, uri = path.resolve().as_uri() + "?mode=rw", True
    # check_same_thread=False: ingest opens the store on the main thread and writes from its
    # worker; writes are serialised by Store._lock.
    return sqlite3.connect(target, uri=uri, check_same_thread=False, timeout=10.0)


class Store:
    """One cooperative's hub database. Use :meth:`open` or :meth:`open_existing`."""

    def __init__(self, db: Database, coop: str, path: Path) -> None:
        self.db = db
        self.coop = coop
        self.path = path
        self._conn: sqlite3.Connection = db.conn  # the writer, used under _lock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # closed with the store
        self._reader_uri = path.resolve().as_uri() + "?mode=rw"
        self._devices: dict[tuple[str, str], tuple[int, str]] = {
            (home, device): (device_id, role)
            for device_id, home, device, role in self._conn.execute(
                "SELECT id, home, device, role FROM devices"
            )
        }

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, coop: str, *, clock: Clock | None = None, durable: bool = True
    ) -> Self:
        """Open (creating if needed) the database of cooperative ``coop`` at ``path``.

        Applies pending migrations (``clock`` stamps them). Raises :class:`WrongCoopError` for
        another cooperative's database and :class:`NotAHubDatabaseError` for a file coopwatt did
        not make. ``durable=False`` lets a power cut lose the last commits (benchmarks only).
        """
        check_id(coop, "coop")
        return cls._open(
            Path(path), coop, create=True, clock=clock or SystemClock(), durable=durable
        )

    @classmethod
    def open_existing(cls, path: str | Path, *, clock: Clock | None = None) -> Self:
        """Open an existing hub database, whatever its cooperative, to read it.

        For tools (export, summary) that are handed a file: never creates a file nor migrates
        one. A missing file, or one coopwatt did not make, raises :class:`NotAHubDatabaseError`;
        a schema older or newer than this code's raises :class:`StoreError`.
        """
        return cls._open(Path(path), None, create=False, clock=clock or SystemClock(), durable=True)

    @classmethod
    def _open(
        cls, path: Path, coop: str | None, *, create: bool, clock: Clock, durable: bool
    ) -> Self:
        if not create and not path.is_file():
            raise NotAHubDatabaseError(f"{path}: no such database file")
        try:
            conn = _connect(path, create)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        try:
            db = Database(conn)
            stored_coop = cls._prepare(db, path, coop, create=create, clock=clock, durable=durable)
            return cls(db, stored_coop, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if type(exc) is sqlite3.DatabaseError:  # SQLITE_NOTADB: not a database file at all
                raise NotAHubDatabaseError(f"{path}: not a coopwatt hub database ({exc})") from None
            raise StoreError(f"{path}: {exc}") from None
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _prepare(
        db: Database, path: Path, coop: str | None, *, create: bool, clock: Clock, durable: bool
    ) -> str:
        tables = set(db.table_names())
        fresh = not tables
        if fresh and not create:
            raise NotAHubDatabaseError(f"{path}: empty database, not a coopwatt hub database")
        if not fresh and not {"meta", "schema_migrations"} <= tables:
            raise NotAHubDatabaseError(f"{path}: not a coopwatt hub database")
        if fresh and create:
            db.enable_wal()
        # Acks leave the machine right after COMMIT and the agent then deletes what was acked,
        # so a commit must survive a power cut: FULL syncs the WAL at each commit. Ingest commits
        # a whole group of messages at a time, so that is one fsync per group, not per reading.
        # NORMAL (durable against a crash of the process only) is for benchmarks and tools.
        db.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        try:
            if create:
                stored = Store._migrate(db, path, coop, fresh=fresh, now_ms=clock.now_ms())
            else:
                stored = Store._check_current(db, path)
        except MigrationError as exc:
            raise StoreError(f"{path}: {exc}") from None
        if coop is not None and stored != coop:
            raise WrongCoopError(f"{path} is the database of cooperative {stored!r}, not {coop!r}")
        columns = {c.name for c in db["readings"].columns}
        missing = [n for n in QUANTITY_NAMES if n not in columns]
        if missing:
            raise StoreError(
                f"{path}: readings has no column for {', '.join(missing)}; "
                "the glossary grew without a schema migration"
            )
        return stored

    @staticmethod
    def _migrate(db: Database, path: Path, coop: str | None, *, fresh: bool, now_ms: int) -> str:
        # One transaction: a database has either its schema and its coop, or nothing.
        with db.atomic():
            migrate(db, now_ms)
            row = db.execute("SELECT value FROM meta WHERE key = 'coop'").fetchone()
            if row is not None:
                return str(row[0])
            if not fresh or coop is None:
                raise NotAHubDatabaseError(f"{path}: hub database records no cooperative")
            db.execute("INSERT INTO meta (key, value) VALUES ('coop', ?)", (coop,))
            return coop

    @staticmethod
    def _check_current(db: Database, path: Path) -> str:
        # Tools never change the file, so an outdated schema is an error rather than migrated.
        applied = applied_versions(db)
        if applied and max(applied) > LATEST_VERSION:
            raise StoreError(
                f"{path}: schema version {max(applied)} is newer than this hub knows "
                f"({LATEST_VERSION}); upgrade coopwatt"
            )
        if applied != {v for v, _ in MIGRATIONS}:
            raise StoreError(
                f"{path}: schema version {max(applied, default=0)} is older than this hub's "
                f"({LATEST_VERSION}); start the hub once to upgrade it"
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'coop'").fetchone()
        if row is None:
            raise NotAHubDatabaseError(f"{path}: hub database records no cooperative")
        return str(row[0])

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection: it sees committed data only (WAL snapshots), so a
        reader never observes half of the ingest worker's open transaction."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._reader_uri, uri=True, check_same_thread=False, timeout=10.0
            )
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def reader(self) -> sqlite3.Connection:
        """A read-only connection for this thread that sees committed data only."""
        return self._reader()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection under the store's lock, in one IMMEDIATE transaction that
        commits when the block ends and rolls back if it raises."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def forget_devices(self, keys: Iterable[tuple[str, str]]) -> None:
        """Drop cached device ids after their rows were deleted (consent erasure)."""
        with self._lock:
            for key in keys:
                self._devices.pop(key, None)

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def insert_batches(
        self, items: Iterable[tuple[str, ReadingBatch]], received_ms: int
    ) -> InsertResult:
        """Insert readings of several batches in ONE transaction and commit before returning.

        ``items`` pairs each batch with the home of the topic it came on (it must equal the
        batch's own home). Idempotent: a reading already stored (same device and seq) is left as
        it was and counted as a duplicate, yet still reported as committed so it is acked.
        A reading whose role differs from its device's registered role (the role of the
        device's first stored reading) is rejected: not stored, not acked, counted and logged.
        ``received_ms`` (UTC epoch ms) is stored on every new row.
        """
        items = list(items)
        for home, batch in items:
            if batch.home != home:
                raise ValueError(f"batch of home {batch.home!r} filed under home {home!r}")
        result = InsertResult()
        names = QUANTITY_NAMES
        with self._lock:
            conn = self._conn
            added: list[tuple[str, str]] = []
            mismatches: dict[tuple[str, str], tuple[int, str, str]] = {}
            conn.execute("BEGIN IMMEDIATE")
            try:
                for home, batch in items:
                    per_home = result.homes.get(home)
                    if per_home is None:
                        per_home = result.homes[home] = HomeInsert()
                    committed = per_home.committed
                    rows: list[tuple[Any, ...]] = []
                    for r in batch.readings:
                        key = (home, r.device)
                        known = self._devices.get(key)
                        if known is None:
                            # Another ingest process sharing this file (a shared subscription)
                            # may have registered the device since this one cached its devices.
                            row = conn.execute(
                                "SELECT id, role FROM devices WHERE home = ? AND device = ?",
                                (home, r.device),
                            ).fetchone()
                            if row is None:
                                cur = conn.execute(
                                    "INSERT INTO devices (home, device, role) VALUES (?, ?, ?)",
                                    (home, r.device, r.role.value),
                                )
                                assert cur.lastrowid is not None
                                row = (cur.lastrowid, r.role.value)
                            known = self._devices[key] = (int(row[0]), str(row[1]))
                            added.append(key)
                        if known[1] != r.role:
                            count, _, _ = mismatches.get(key, (0, "", ""))
                            mismatches[key] = (count + 1, r.role.value, known[1])
                            per_home.rejected += 1
                            continue
                        q = r.quantities
                        rows.append(
                            (
                                known[0],
                                r.seq,
                                r.ts_ms,
                                r.grant,
                                received_ms,
                                r.period_ms,
                                *map(q.get, names),
                            )
                        )
                        seqs = committed.get(r.device)
                        if seqs is None:
                            committed[r.device] = [r.seq]
                        else:
                            seqs.append(r.seq)
                    if rows:
                        new = conn.executemany(_INSERT_READING, rows).rowcount
                        per_home.new += new
                        per_home.duplicates += len(rows) - new
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for key in added:
                    self._devices.pop(key, None)
                raise
        for per_home in result.homes.values():
            for device, seqs in per_home.committed.items():
                per_home.committed[device] = sorted(set(seqs))
        for (home, device), (count, got, registered) in mismatches.items():
            log.warning(
                "rejected %d reading(s) of home=%s device=%s: role %s differs from its "
                "registered role %s",
                count,
                home,
                device,
                got,
                registered,
            )
        return result

    def update_home_statuses(self, statuses: Iterable[HomeStatus], received_ms: int) -> None:
        """Record each home's latest status in one transaction; ``received_ms`` is last seen."""
        rows = [
            (
                s.home,
                s.state,
                s.ts_ms,
                received_ms,
                s.backlog,
                encode(s).decode("utf-8"),
            )
            for s in statuses
        ]
        if not rows:
            return
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO home_status (home, state, ts_ms, last_seen_ms, backlog, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (home) DO UPDATE SET "
                    "state = excluded.state, ts_ms = excluded.ts_ms, "
                    "last_seen_ms = excluded.last_seen_ms, backlog = excluded.backlog, "
                    "payload = excluded.payload",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- reading ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._reader().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0])

    def count_readings(self, home: str | None = None) -> int:
        """Readings stored, for one home or all."""
        if home is None:
            row = self._reader().execute("SELECT count(*) FROM readings").fetchone()
        else:
            row = (
                self._reader()
                .execute(
                    "SELECT count(*) FROM readings JOIN devices d ON d.id = readings.device_id "
                    "WHERE d.home = ?",
                    (home,),
                )
                .fetchone()
            )
        return int(row[0])

    def devices(self) -> list[tuple[str, str, Role]]:
        """Registered devices as (home, device, role), ordered by home and device."""
        return [
            (home, device, Role(role))
            for home, device, role in self._reader().execute(
                "SELECT home, device, role FROM devices ORDER BY home, device"
            )
        ]

    def iter_readings(self, home: str | None = None) -> Iterator[StoredReading]:
        """Stream readings ordered by home, device, seq, without loading them all.

        The order comes from the ``devices`` unique index and the ``readings`` primary key, so
        SQLite needs no sort and memory stays flat however large the table is.
        """
        cols = ", ".join(f"r.{n}" for n in QUANTITY_NAMES)
        where = "" if home is None else "WHERE d.home = ?"
        sql = _sql(
            "SELECT d.home, d.device, d.role, r.seq, r.ts_ms, r.grant_id, r.received_ms,",
            "r.period_ms,",
            cols,
            "FROM devices d JOIN readings r ON r.device_id = d.id",
            where,
            "ORDER BY d.home, d.device, r.seq",
        )
        cursor = self._reader().execute(sql, () if home is None else (home,))
        names = QUANTITY_NAMES
        roles = {r.value: r for r in Role}
        try:
            for row in cursor:
                values = row[8:]
                yield StoredReading(
                    home=row[0],
                    device=row[1],
                    role=roles[row[2]],
                    seq=row[3],
                    ts_ms=row[4],
                    grant=row[5],
                    received_ms=row[6],
                    period_ms=row[7],
                    quantities={n: v for n, v in zip(names, values, strict=True) if v is not None},
                )
        finally:
            cursor.close()

    def device_counters(self) -> Iterator[DeviceCounters]:
        """Per device, its reading count and first/last non-null counters, by home and device."""
        parts = ["(SELECT count(*) FROM readings r WHERE r.device_id = d.id)"]
        for name in _COUNTER_NAMES:
            for order in ("ASC", "DESC"):
                parts.append(
                    _sql(
                        "(SELECT r." + name,
                        "FROM readings r WHERE r.device_id = d.id AND r." + name,
                        "IS NOT NULL ORDER BY r.seq",
                        order,
                        "LIMIT 1)",
                    )
                )
        sql = _sql(
            "SELECT d.home, d.device, d.role,",
            ", ".join(parts),
            "FROM devices d ORDER BY d.home, d.device",
        )
        for row in self._reader().execute(sql):
            first: dict[str, float] = {}
            last: dict[str, float] = {}
            for i, name in enumerate(_COUNTER_NAMES):
                lo, hi = row[4 + 2 * i], row[5 + 2 * i]
                if lo is not None and hi is not None:
                    first[name] = float(lo)
                    last[name] = float(hi)
            yield DeviceCounters(
                home=row[0],
                device=row[1],
                role=Role(row[2]),
                readings=int(row[3]),
                first=first,
                last=last,
            )

    def home_statuses(self) -> dict[str, HomeStatusRow]:
        """Each home's latest recorded status, by home."""
        return {
            home: HomeStatusRow(
                home=home,
                state=state,
                ts_ms=ts_ms,
                last_seen_ms=last_seen_ms,
                backlog=backlog,
                payload=json.loads(payload),
            )
            for home, state, ts_ms, last_seen_ms, backlog, payload in self._reader().execute(
                "SELECT home, state, ts_ms, last_seen_ms, backlog, payload FROM home_status "
                "ORDER BY home"
            )
        }

    def counter_samples(
        self, start_ms: int, end_ms: int, roles: Iterable[Role]
    ) -> Iterator[CounterSample]:
        """Counter readings of devices with ``roles``, by home, device and time.

        Every reading with ``start_ms <= ts_ms <= end_ms`` that carries a counter, plus each
        device's last such reading before ``start_ms`` and first after ``end_ms`` however far
        away, so a caller can interpolate the counters at both ends. For settlement and
        community statistics; consent scoping is the caller's (:mod:`hub.settlement.source`).
        """
        wanted = sorted({Role(r).value for r in roles})
        conn = self._reader()
        devices = conn.execute(
            "SELECT id, home, device, role FROM devices ORDER BY home, device"
        ).fetchall()
        for device_id, home, device, role in devices:
            if role not in wanted:
                continue
            rows = [
                *conn.execute(_COUNTERS_BEFORE, (device_id, start_ms)),
                *conn.execute(_COUNTERS_INSIDE, (device_id, start_ms, end_ms)),
                *conn.execute(_COUNTERS_AFTER, (device_id, end_ms)),
            ]
            for ts_ms, imp, exp, energy in rows:
                yield CounterSample(home, device, Role(role), ts_ms, imp, exp, energy)

    # -- forecast (hub.forecast_service) -----------------------------------------------------

    def upsert_weather(
        self,
        rows: Iterable[tuple[int, float | None, float | None, float | None, float | None]],
        imported_ms: int,
    ) -> int:
        """Store hourly weather rows ``(ts_ms, shortwave_radiation_w_m2, temperature_c,
        wind_speed_m_s, cloud_cover_pct)``; a newer import replaces an hour's row whole."""
        data = [(*row, imported_ms) for row in rows]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO weather (ts_ms, shortwave_radiation_w_m2, "
                    "temperature_c, wind_speed_m_s, cloud_cover_pct, imported_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    data,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return len(data)

    def weather_rows(
        self, start_ms: int, end_ms: int
    ) -> list[tuple[int, float | None, float | None, float | None, float | None]]:
        """Hourly weather rows with ``start_ms <= ts_ms < end_ms``, by time."""
        return [
            (int(r[0]), r[1], r[2], r[3], r[4])
            for r in self._reader().execute(
                "SELECT ts_ms, shortwave_radiation_w_m2, temperature_c, wind_speed_m_s, "
                "cloud_cover_pct FROM weather WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
                (start_ms, end_ms),
            )
        ]

    def weather_imported_ms(self) -> int | None:
        """When weather was last imported (UTC ms), or None if never."""
        row = self._reader().execute("SELECT max(imported_ms) FROM weather").fetchone()
        return None if row[0] is None else int(row[0])

    def refresh_power_slots(self, slot_ms: int = 900_000, devices_per_commit: int = 200) -> int:
        """Fold readings stored since the last call into per-device 15-minute power sums.

        Incremental: per device, only readings above its ``forecast_cursor`` seq are read, by
        primary key. A raw reading counts in the slot holding its ``ts_ms``; an aggregate
        (``period_ms`` set) is spread over the slots its period covers, weighted by overlap.
        Commits every ``devices_per_commit`` devices so ingest is never held up for long.
        Returns the number of readings folded in.
        """
        conn = self._conn
        with self._lock:
            ids = [int(r[0]) for r in conn.execute("SELECT id FROM devices ORDER BY id")]
            cursors = {int(d): int(s) for d, s in conn.execute("SELECT * FROM forecast_cursor")}
        folded = 0
        for first in range(0, len(ids), devices_per_commit):
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for device_id in ids[first : first + devices_per_commit]:
                        folded += self._fold_device(
                            conn, device_id, cursors.get(device_id, 0), slot_ms
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        return folded

    @staticmethod
    def _fold_device(conn: sqlite3.Connection, device_id: int, after_seq: int, slot_ms: int) -> int:
        rows = conn.execute(
            "SELECT seq, ts_ms, period_ms, power_w FROM readings "
            "WHERE device_id = ? AND seq > ? ORDER BY seq",
            (device_id, after_seq),
        ).fetchall()
        if not rows:
            return 0
        sums: dict[int, list[float]] = {}
        for _, ts_ms, period_ms, power_w in rows:
            if power_w is None:
                continue
            if not period_ms or period_ms <= 0:
                acc = sums.setdefault(ts_ms - ts_ms % slot_ms, [0.0, 0.0])
                acc[0] += power_w
                acc[1] += 1.0
                continue
            start = ts_ms - period_ms
            slot = start - start % slot_ms
            while slot < ts_ms:
                overlap = min(ts_ms, slot + slot_ms) - max(start, slot)
                if overlap > 0:
                    weight = overlap / slot_ms
                    acc = sums.setdefault(slot, [0.0, 0.0])
                    acc[0] += power_w * weight
                    acc[1] += weight
                slot += slot_ms
        conn.executemany(
            "INSERT INTO forecast_power_15min (device_id, slot_ms, power_sum_w, samples) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (device_id, slot_ms) DO UPDATE SET "
            "power_sum_w = power_sum_w + excluded.power_sum_w, "
            "samples = samples + excluded.samples",
            [(device_id, slot, s, n) for slot, (s, n) in sums.items() if n > 0],
        )
        conn.execute(
            "INSERT INTO forecast_cursor (device_id, seq) VALUES (?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET seq = excluded.seq",
            (device_id, int(rows[-1][0])),
        )
        return len(rows)

    def power_slots(self, start_ms: int, end_ms: int) -> list[tuple[int, str, float]]:
        """Per 15-minute slot and role, the sum over devices of each device's mean ``power_w``
        in that slot (W), for slots ``start_ms <= slot_ms < end_ms``. Call
        :meth:`refresh_power_slots` first to include the latest readings."""
        return [
            (int(slot), str(role), float(power))
            for slot, role, power in self._reader().execute(
                "SELECT f.slot_ms, d.role, SUM(f.power_sum_w / f.samples) "
                "FROM forecast_power_15min f JOIN devices d ON d.id = f.device_id "
                "WHERE f.slot_ms >= ? AND f.slot_ms < ? GROUP BY f.slot_ms, d.role "
                "ORDER BY f.slot_ms",
                (start_ms, end_ms),
            )
        ]

    def prune_power_slots(self, before_ms: int) -> int:
        """Drop 15-minute power sums of slots before ``before_ms``; returns how many."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM forecast_power_15min WHERE slot_ms < ?", (before_ms,)
            )
            self._conn.commit()
            return cur.rowcount
