"""The hub's SQLite store: one database file per cooperative.

Readings are inserted idempotently on ``(device_id, seq)``, which is ``(coop, home, device, seq)``
since the file holds one cooperative, so at-least-once delivery becomes exactly-once storage. The
hot path (:meth:`Store.insert_batches`) uses the raw connection's ``executemany`` in one
transaction; schema and migrations go through sqlite-utils (:mod:`hub.storage.migrations`).

Times are UTC epoch milliseconds; quantities are stored in glossary units, one column each
(REAL, or TEXT for ``state``), NULL when a reading did not carry the quantity.

Thread safety: writes go through one connection, serialised by a lock. Reads go through one
connection per thread, so they see committed data only (WAL snapshots) and never block the
writer: a test or the demo can count and stream readings while the ingest worker inserts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import operator
import sqlite3
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sqlite_utils import Database

from hub.storage.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    MigrationError,
    applied_versions,
    migrate,
)
from hub.storage.writer_turn import WriterTurn
from protocol.clock import Clock, SystemClock
from protocol.codec import encode
from protocol.payloads import (
    ROW_QUANTITIES,
    Ack,
    HomeStatus,
    ReadingBatch,
    ReadingColumns,
    seq_ranges,
)
from protocol.quantities import COUNTERS, GLOSSARY, Role
from protocol.topics import check_id

log = logging.getLogger(__name__)

QUANTITY_NAMES: Final[tuple[str, ...]] = ROW_QUANTITIES  # the columns ReadingColumns.values fill
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
        self._writer_turn = WriterTurn(path)  # orders inserts and transaction()s between processes
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
    def open_to_write(cls, path: str | Path, *, clock: Clock | None = None) -> Self:
        """Open an existing hub database, whatever its cooperative, to change it.

        For tools that write (``weather import``, the forecast's derived series): never creates
        a file, and brings an older schema up to date as the hub itself would. A missing file,
        or one coopwatt did not make, raises :class:`NotAHubDatabaseError`.
        """
        path = Path(path)
        if not path.is_file():
            raise NotAHubDatabaseError(f"{path}: no such database file")
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'coop'").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            raise NotAHubDatabaseError(f"{path}: not a coopwatt hub database")
        return cls.open(path, str(row[0]), clock=clock)

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
        """The writer connection under the store's lock and in this store's writer turn, in one
        IMMEDIATE transaction that commits when the block ends and rolls back if it raises.

        Every write outside the ingest hot path (settlement, consent, prompts, the forecast's
        series, home statuses) comes through here. It takes the writer turn that ingest
        processes sharing the file take around their inserts (:class:`WriterTurn`), so that such
        a write queues with them and is woken the moment the holder commits: without the turn
        it would poll in SQLite's busy handler while the ingest processes hand the turn to each
        other at once, and under a steady drain could wait past its busy timeout ("database is
        locked"); and they, while it held SQLite's lock, would poll in theirs. The thread in a
        transaction must therefore not write through another :class:`Store` of the same file
        before the block ends: it would wait on its own turn.
        """
        with self._lock, self._writer_turn():
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
            self._writer_turn.close()

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
        self, items: Iterable[tuple[str, ReadingBatch | ReadingColumns]], received_ms: int
    ) -> InsertResult:
        """Insert readings of several batches in ONE transaction and commit before returning.

        ``items`` pairs each batch with the home of the topic it came on (it must equal the
        batch's own home). Idempotent: a reading already stored (same device and seq) is left as
        it was and counted as a duplicate, yet still reported as committed so it is acked.
        A reading whose role differs from its device's registered role (the role of the
        device's first stored reading) is rejected: not stored, not acked, counted and logged.
        ``received_ms`` (UTC epoch ms) is stored on every new row.

        The ingest worker hands over :class:`ReadingColumns`, as the codec decodes them; a
        :class:`ReadingBatch` is taken apart into the same columns first. Either way the rows
        are zipped from the columns in C loops as SQLite takes them: no Python code per
        reading. Known devices are looked up before this process's writer turn
        (:class:`~hub.storage.writer_turn.WriterTurn`) and the acks' bookkeeping is done after it,
        so that ingest processes sharing the file hold the turn for little more than SQLite's
        own work; a device not seen before is registered inside the transaction.
        """
        batches = [
            (home, batch if isinstance(batch, ReadingColumns) else ReadingColumns.of(batch))
            for home, batch in items
        ]
        for home, batch in batches:
            if batch.home != home:
                raise ValueError(f"batch of home {batch.home!r} filed under home {home!r}")
        result = InsertResult()
        stored: list[tuple[HomeInsert, ReadingColumns, Iterable[str]]] = []
        mismatches: dict[tuple[str, str], tuple[int, str, str]] = {}
        with self._lock:
            prepared = [
                (home, columns, self._known_rows(home, columns, received_ms))
                for home, columns in batches
            ]
            with self._writer_turn():
                conn = self._conn
                added: list[tuple[str, str]] = []
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for home, columns, prepared_rows in prepared:
                        per_home = result.homes.get(home)
                        if per_home is None:
                            per_home = result.homes[home] = HomeInsert()
                        rows = prepared_rows
                        if rows is None:  # a device to register, or a role to set aside
                            rows = self._register_rows(
                                conn, home, columns, received_ms, per_home, mismatches, added
                            )
                        if rows is None:
                            continue
                        new = conn.executemany(_INSERT_READING, rows.rows).rowcount
                        per_home.new += new
                        per_home.duplicates += len(rows.batch) - new
                        stored.append((per_home, rows.batch, rows.devices))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    for key in added:
                        self._devices.pop(key, None)
                    raise
        for per_home, batch, devices in stored:
            _note_committed(per_home.committed, batch, devices)
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

    def _known_rows(self, home: str, batch: ReadingColumns, received_ms: int) -> _Rows | None:
        """The rows of ``batch`` when each of its devices is cached with the role its readings
        carry; None sends the batch to :meth:`_register_rows`, in the transaction."""
        ids: dict[str, int] = {}
        for device, role in _streams(batch.devices, batch.roles):
            known = self._devices.get((home, device))
            if known is None or known[1] != role:
                return None
            ids[device] = known[0]
        return _Rows(batch, _rows(ids, batch, received_ms), ids.keys())

    def _register_rows(
        self,
        conn: sqlite3.Connection,
        home: str,
        batch: ReadingColumns,
        received_ms: int,
        per_home: HomeInsert,
        mismatches: dict[tuple[str, str], tuple[int, str, str]],
        added: list[tuple[str, str]],
    ) -> _Rows | None:
        """In the write transaction: register the batch's new devices, set aside readings whose
        role differs from their device's registered one; the rows of the rest, if any."""
        # A batch holds a few devices, for hundreds of readings: each is looked up once, with
        # its role (in the order they first appear).
        ids: dict[str, int] = {}
        streams = _streams(batch.devices, batch.roles)
        for device, role in streams:
            device_id, registered = self._device(conn, home, device, role, added)
            if registered == role:
                ids[device] = device_id
        if len(ids) < len(streams):
            batch = self._reject_roles(home, batch, per_home, mismatches)
        if not batch:
            return None
        return _Rows(batch, _rows(ids, batch, received_ms), ids.keys())

    def _reject_roles(
        self,
        home: str,
        batch: ReadingColumns,
        per_home: HomeInsert,
        mismatches: dict[tuple[str, str], tuple[int, str, str]],
    ) -> ReadingColumns:
        """The readings of ``batch`` with their device's registered role; the others are
        counted in ``per_home`` and ``mismatches``."""
        keep: list[bool] = []
        for device, role in zip(batch.devices, batch.roles, strict=True):
            key = (home, device)
            registered = self._devices[key][1]  # cached by _device for this batch
            keep.append(registered == role)
            if registered != role:
                count, _, _ = mismatches.get(key, (0, "", ""))
                mismatches[key] = (count + 1, role.value, registered)
                per_home.rejected += 1
        return batch.select(keep)

    def _device(
        self,
        conn: sqlite3.Connection,
        home: str,
        device: str,
        role: Role,
        added: list[tuple[str, str]],
    ) -> tuple[int, str]:
        """A device's id and registered role, registered now with ``role`` if it is new
        (``added`` collects the devices cached meanwhile, to forget if the transaction fails)."""
        key = (home, device)
        known = self._devices.get(key)
        if known is None:
            # Another ingest process sharing this file (a shared subscription) may have
            # registered the device since this one cached its devices.
            row = conn.execute(
                "SELECT id, role FROM devices WHERE home = ? AND device = ?", (home, device)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO devices (home, device, role) VALUES (?, ?, ?)",
                    (home, device, role.value),
                )
                assert cur.lastrowid is not None
                row = (cur.lastrowid, role.value)
            known = self._devices[key] = (int(row[0]), str(row[1]))
            added.append(key)
        return known

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
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO home_status (home, state, ts_ms, last_seen_ms, backlog, payload) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (home) DO UPDATE SET "
                "state = excluded.state, ts_ms = excluded.ts_ms, "
                "last_seen_ms = excluded.last_seen_ms, backlog = excluded.backlog, "
                "payload = excluded.payload",
                rows,
            )

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

    def iter_readings(
        self,
        home: str | None = None,
        *,
        device: str | None = None,
        since_ms: int | None = None,
        newest_first: bool = False,
    ) -> Generator[StoredReading, None, None]:
        """Stream readings ordered by home, device, seq, without loading them all.

        The order comes from the ``devices`` unique index and the ``readings`` primary key, so
        SQLite needs no sort and memory stays flat however large the table is. ``device`` (with
        ``home``) and ``since_ms`` (``ts_ms >= since_ms``) are filtered by SQLite (the
        ``readings_device_ts`` index), so a caller after one device's last hour does not turn
        every stored reading into an object. ``newest_first`` reverses the seq order.
        """
        cols = ", ".join(f"r.{n}" for n in QUANTITY_NAMES)
        conditions, params = [], []
        for condition, value in (
            ("d.home = ?", home),
            ("d.device = ?", device),
            ("r.ts_ms >= ?", since_ms),
        ):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        sql = _sql(
            "SELECT d.home, d.device, d.role, r.seq, r.ts_ms, r.grant_id, r.received_ms,",
            "r.period_ms,",
            cols,
            "FROM devices d JOIN readings r ON r.device_id = d.id",
            where,
            "ORDER BY d.home, d.device, r.seq",
            "DESC" if newest_first else "",
        )
        cursor = self._reader().execute(sql, params)
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

    # -- devices ---------------------------------------------------------------------------

    def device_ids(self) -> list[tuple[int, str, str, Role]]:
        """Registered devices as (id, home, device, role), by id."""
        return [
            (int(i), home, device, Role(role))
            for i, home, device, role in self._reader().execute(
                "SELECT id, home, device, role FROM devices ORDER BY id"
            )
        ]


@dataclass(frozen=True, slots=True)
class _Rows:
    """A batch's rows for ``_INSERT_READING``, and the devices they are of."""

    batch: ReadingColumns
    rows: Iterator[tuple[Any, ...]]  # lazy: built as SQLite takes them, none kept
    devices: Iterable[str]


def _rows(
    ids: Mapping[str, int], batch: ReadingColumns, received_ms: int
) -> Iterator[tuple[Any, ...]]:
    """``batch`` as rows of ``_INSERT_READING`` (``ids``: device -> device_id), zipped from its
    columns in C loops as they are taken. Lazily: a list of a group's rows cost more (memory,
    and the garbage collector's passes over tens of thousands of new tuples) than it saved."""
    heads = zip(
        map(ids.__getitem__, batch.devices),
        batch.seqs,
        batch.ts_ms,
        batch.grants,
        itertools.repeat(received_ms),
        batch.periods,
        strict=False,  # repeat() has no end; the columns have one length
    )
    return map(operator.add, heads, batch.values)  # head + quantities


def _note_committed(
    committed: dict[str, list[int]], batch: ReadingColumns, devices: Iterable[str]
) -> None:
    """Add the seqs of ``batch`` (readings of ``devices``) to ``committed`` (device -> seqs)."""
    devices = list(devices)
    if len(devices) == 1:
        committed.setdefault(devices[0], []).extend(batch.seqs)
        return
    for device in devices:
        is_device = map(device.__eq__, batch.devices)
        committed.setdefault(device, []).extend(itertools.compress(batch.seqs, is_device))


def _streams(devices: tuple[str, ...], roles: tuple[Role, ...]) -> list[tuple[str, Role]]:
    """The distinct (device, role) pairs of a batch's readings, in the order they first appear.

    Each device has one role, unless it is broken: that case is found by a loop in C, which
    a dictionary of its devices' roles lets skip building and hashing a pair per reading.
    """
    role_of = dict(zip(devices, roles, strict=True))  # each device's last role
    if all(map(operator.is_, map(role_of.__getitem__, devices), roles)):
        return list(role_of.items())
    return list(dict.fromkeys(zip(devices, roles, strict=True)))
