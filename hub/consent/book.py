"""Consent at the hub: each home's grants, what may be stored, what each purpose may read.

The hub keeps every grant version a home publishes in an append-only ledger (migration 5) and
checks each against the one before. It stores a reading only when the home's current grant still
shares that stream; every module reads stored data only through a :class:`PurposeView`, which
shows a purpose just the homes and streams granted for it, no older than its retention, no finer
than its resolution. When a grant shrinks, what is no longer covered is erased at once (a stream
withdrawn: its readings; a coarser resolution: the finer readings, merged into aggregates that
keep the counters exact) and the home is sent a receipt.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from hub.storage.store import QUANTITY_NAMES, Store, StoredReading
from protocol.aggregate import Sample, merge
from protocol.codec import decode, encode
from protocol.consent import (
    RESOLUTION_MS,
    ChainError,
    ConsentGrant,
    Purpose,
    PurposeGrant,
    Resolution,
    check_follows,
    nothing_shared,
)
from protocol.quantities import Role

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
Verdict = Literal["store", "withhold", "wait"]


@dataclass(frozen=True)
class Outcome:
    """What recording a grant did: for the home's receipts."""

    recorded: bool
    reason: str | None = None
    erased: dict[str, int] = field(default_factory=dict)  # stream -> readings erased


def _version_of(grant_id: str) -> int | None:
    return int(grant_id[1:]) if grant_id[:1] == "g" and grant_id[1:].isdigit() else None


class ConsentBook:
    """The hub's consent ledger and the current grant of every home."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._current: dict[str, ConsentGrant] = {}
        rows = store.reader().execute(
            "SELECT payload FROM consent_ledger c WHERE version = "
            "(SELECT max(version) FROM consent_ledger WHERE home = c.home)"
        )
        for (payload,) in rows:
            grant = decode(ConsentGrant, payload.encode())
            self._current[grant.home] = grant

    def current(self, home: str) -> ConsentGrant:
        with self._lock:
            return self._current.get(home) or nothing_shared(home)

    def admit(self, home: str, role: Role, grant_id: str) -> Verdict:
        """May a reading of ``role`` released under ``grant_id`` be stored now?"""
        current = self.current(home)
        version = _version_of(grant_id)
        if version is None or version > current.version:
            return "wait"  # its grant has not reached the hub yet
        return "store" if current.release_resolution(role) is not None else "withhold"

    def history(self, home: str) -> list[ConsentGrant]:
        rows = self.store.reader().execute(
            "SELECT payload FROM consent_ledger WHERE home = ? ORDER BY version", (home,)
        )
        return [decode(ConsentGrant, p.encode()) for (p,) in rows]

    # --- recording ------------------------------------------------------------------------
    def record(self, grant: ConsentGrant, now_ms: int) -> Outcome:
        """Append ``grant`` to the ledger if it follows the home's chain, then erase what the
        new grant no longer covers."""
        previous = self.current(grant.home)
        if grant.version <= previous.version:
            if grant.version == previous.version and grant.hash == previous.hash:
                return Outcome(recorded=False)  # the retained copy again: nothing to do
            return Outcome(False, f"version {grant.version} does not follow {previous.version}")
        if not grant.hash:
            return Outcome(False, "the grant is not sealed with its hash")
        chained = grant.version == previous.version + 1
        if chained:
            try:
                check_follows(previous, grant)
            except ChainError as exc:
                return Outcome(False, str(exc))
        else:
            log.warning("home=%s consent jumps from version %d to %d: the versions between were "
                        "not received", grant.home, previous.version, grant.version)  # fmt: skip
        with self.store.transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO consent_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (grant.home, grant.version, grant.grant, grant.hash, grant.prev_hash,
                 int(chained), encode(grant).decode(), now_ms),
            ).rowcount  # fmt: skip
            if not inserted:
                # Another ingest process on this database (a shared subscription: see
                # hub.ingest.service) recorded this version first. Only the very same grant may
                # stand; then this process follows it and erases what it no longer covers, as
                # that one did, which also catches what this process stored before it saw the
                # grant.
                row = conn.execute(
                    "SELECT hash FROM consent_ledger WHERE home = ? AND version = ?",
                    (grant.home, grant.version),
                ).fetchone()
                if row is None or row[0] != grant.hash:
                    return Outcome(False, f"version {grant.version} was recorded differently")
        with self._lock:
            self._current[grant.home] = grant
        erased = self._erase_uncovered(previous, grant)
        erased_by_age = self.enforce_retention(now_ms, homes=[grant.home]).get(grant.home, {})
        for role, n in erased_by_age.items():
            erased[role] = erased.get(role, 0) + n
        return Outcome(True, None, {r: n for r, n in erased.items() if n})

    def _devices(self, home: str, role: str) -> list[tuple[int, str]]:
        return [
            (device_id, device)
            for device_id, device in self.store.reader().execute(
                "SELECT id, device FROM devices WHERE home = ? AND role = ?", (home, role)
            )
        ]

    def _erase_uncovered(self, previous: ConsentGrant, grant: ConsentGrant) -> dict[str, int]:
        erased: dict[str, int] = {}
        for role in {*previous.streams, *self._stored_roles(grant.home)}:
            new = grant.release_resolution(role)
            devices = self._devices(grant.home, role)
            if not devices:
                continue
            if new is None:
                erased[role] = self._delete_devices(grant.home, devices)
            elif new is not Resolution.RAW:
                erased[role] = sum(self._coarsen(d, RESOLUTION_MS[new]) for d, _ in devices)
        return erased

    def _stored_roles(self, home: str) -> set[str]:
        rows = self.store.reader().execute(
            "SELECT DISTINCT role FROM devices WHERE home = ?", (home,)
        )
        return {r for (r,) in rows}

    def _delete_devices(self, home: str, devices: list[tuple[int, str]]) -> int:
        ids = [(d,) for d, _ in devices]
        with self.store.transaction() as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM readings WHERE device_id = ?", ids)
            deleted = conn.total_changes - before
            # Derived per-device data goes too: it was computed from what is withdrawn.
            for table in ("forecast_power_15min", "forecast_members"):
                if _has_table(conn, table):
                    conn.executemany(f"DELETE FROM {table} WHERE device_id = ?", ids)  # noqa: S608
        return deleted

    def _coarsen(self, device_id: int, size_ms: int) -> int:
        """Merge a device's readings finer than ``size_ms`` into one per bucket; rows erased."""
        cols = ", ".join(QUANTITY_NAMES)
        rows = (
            self.store.reader()
            .execute(
                f"SELECT seq, ts_ms, period_ms, {cols} FROM readings WHERE device_id = ? "  # noqa: S608
                "ORDER BY seq",
                (device_id,),
            )
            .fetchall()
        )
        role_row = (
            self.store.reader()
            .execute("SELECT role FROM devices WHERE id = ?", (device_id,))
            .fetchone()
        )
        role = Role(role_row[0])
        deletes: list[tuple[int, int]] = []
        updates: list[tuple[object, ...]] = []
        base: Sample | None = None
        bucket: list[tuple[int, Sample]] = []

        def close() -> None:
            nonlocal base
            if not bucket:
                return
            last_seq, last = bucket[-1]
            if len(bucket) > 1 or (last.period_ms or 0) < size_ms:
                agg = merge(role, [s for _, s in bucket], base)
                deletes.extend((device_id, seq) for seq, _ in bucket[:-1])
                q = agg.quantities
                updates.append((agg.period_ms, *(q.get(n) for n in QUANTITY_NAMES),
                                device_id, last_seq))  # fmt: skip
            base = last
            bucket.clear()

        end = None
        for seq, ts, period, *values in rows:
            q = {n: v for n, v in zip(QUANTITY_NAMES, values, strict=True) if v is not None}
            bucket_end = -(-ts // size_ms) * size_ms
            if end is not None and bucket_end != end:
                close()
            end = bucket_end
            bucket.append((seq, Sample(ts, q, period)))
        close()
        if not deletes and not updates:
            return 0
        sets = ", ".join(f"{n} = ?" for n in QUANTITY_NAMES)
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM readings WHERE device_id = ? AND seq = ?", deletes)
            conn.executemany(
                f"UPDATE readings SET period_ms = ?, {sets} WHERE device_id = ? AND seq = ?",  # noqa: S608
                updates,
            )
        return len(deletes)

    def enforce_retention(
        self, now_ms: int, homes: list[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """Erase readings older than every purpose of their stream may keep them."""
        erased: dict[str, dict[str, int]] = {}
        with self._lock:
            grants = {h: g for h, g in self._current.items() if homes is None or h in homes}
        for home, grant in grants.items():
            for role in self._stored_roles(home):
                purposes = grant.streams.get(role, {})
                if not purposes:
                    continue  # withdrawn streams were erased whole when the grant changed
                keep_ms = max(p.retention_days for p in purposes.values()) * DAY_MS
                ids = [(d, now_ms - keep_ms) for d, _ in self._devices(home, role)]
                with self.store.transaction() as conn:
                    before = conn.total_changes
                    conn.executemany("DELETE FROM readings WHERE device_id = ? AND ts_ms < ?", ids)
                    n = conn.total_changes - before
                if n:
                    erased.setdefault(home, {})[role] = n
        return erased


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


class PurposeView:
    """Stored readings as ``purpose`` may see them: the only way modules read member data."""

    def __init__(self, store: Store, book: ConsentBook, purpose: Purpose) -> None:
        self.store = store
        self.book = book
        self.purpose = purpose

    def grants(self, role: Role | str) -> dict[str, PurposeGrant]:
        """Homes that grant ``role`` for this purpose, with the terms."""
        out = {}
        for home in {h for h, _, _ in self.store.devices()}:
            g = self.book.current(home).covers(role, self.purpose)
            if g is not None:
                out[home] = g
        return out

    def _visible(
        self, now_ms: int, home: str | None, role: Role | None, since_ms: int | None
    ) -> Iterator[tuple[str, str, Role, int, int]]:
        """Devices the purpose may read, as (home, device, role, oldest ms it may see, its
        resolution in ms: 0 for raw)."""
        for h, device, r in self.store.devices():
            if (home is not None and h != home) or (role is not None and r != role):
                continue
            g = self.book.current(h).covers(r, self.purpose)
            if g is None:
                continue
            oldest = max(since_ms or 0, now_ms - g.retention_days * DAY_MS)
            yield h, device, r, oldest, RESOLUTION_MS[g.resolution]

    def _stream(
        self, home: str, device: str, role: Role, oldest_ms: int, size_ms: int
    ) -> Generator[StoredReading, None, None]:
        rows = self.store.iter_readings(home, device=device, since_ms=oldest_ms)
        return _at_resolution(rows, role, size_ms)

    def readings(
        self, now_ms: int, *, home: str | None = None, role: Role | None = None,
        since_ms: int | None = None,
    ) -> Iterator[StoredReading]:  # fmt: skip
        """Readings by home, device and seq, within retention, at the purpose's resolution."""
        for visible in self._visible(now_ms, home, role, since_ms):
            yield from self._stream(*visible)

    def counter_ends(
        self, now_ms: int, *, role: Role, since_ms: int, counters: tuple[str, ...]
    ) -> Iterator[tuple[str, str, dict[str, tuple[float, float]]]]:
        """Per device of ``role``: (home, device, {counter: (first, last)}), the first and last
        value of each of ``counters`` (Wh) in what :meth:`readings` would yield since
        ``since_ms``, without reading what lies between: an hour of a 2,000-home street is
        millions of readings, its ends 10,000. A counter no reading carries is left out, and
        so is a device with nothing the purpose may see.

        The last reading at any resolution ends a bucket, and a merged bucket keeps each
        counter's last value (:func:`protocol.aggregate.merge`), so the device's newest stored
        reading carries the last values; when it or the first reading lacks one of
        ``counters``, the device's window is read whole.
        """
        for visible in self._visible(now_ms, None, role, since_ms):
            h, device, _, oldest, _ = visible
            with contextlib.closing(self._stream(*visible)) as stream:
                first = next(stream, None)
            if first is None:
                continue
            newest = self.store.iter_readings(h, device=device, since_ms=oldest, newest_first=True)
            with contextlib.closing(newest):
                last = next(newest)
            ends: dict[str, tuple[float, float]] = {}
            for c in counters:
                a, b = _wh(first, c), _wh(last, c)
                if a is None or b is None:
                    break
                ends[c] = (a, b)
            else:
                yield h, device, ends
                continue
            whole: dict[str, tuple[float, float]] = {}
            for x in self._stream(*visible):
                for c in counters:
                    v = _wh(x, c)
                    if v is not None:
                        whole[c] = (whole.get(c, (v, v))[0], v)
            yield h, device, whole


def _wh(reading: StoredReading, counter: str) -> float | None:
    value = reading.quantities.get(counter)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _at_resolution(
    rows: Iterator[StoredReading], role: Role, size_ms: int
) -> Generator[StoredReading, None, None]:
    if size_ms == 0:
        yield from rows
        return
    base: Sample | None = None
    bucket: list[StoredReading] = []
    end: int | None = None

    def close() -> Iterator[StoredReading]:
        nonlocal base
        last = bucket[-1]
        samples = [Sample(x.ts_ms, x.quantities, x.period_ms) for x in bucket]
        if len(bucket) == 1 and (last.period_ms or 0) >= size_ms:
            yield last
        elif base is not None:  # a partial first bucket would be finer than granted
            agg = merge(role, samples, base)
            yield replace(last, ts_ms=agg.ts_ms, quantities=agg.quantities, period_ms=agg.period_ms)
        base = samples[-1]
        bucket.clear()

    for x in rows:
        bucket_end = -(-x.ts_ms // size_ms) * size_ms
        if end is not None and bucket_end != end and bucket:
            yield from close()
        end = bucket_end
        bucket.append(x)
    if bucket:
        yield from close()
