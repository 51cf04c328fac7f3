"""The double-entry ledger of settlement, in the hub database (tables: migration 3).

Accounts: ``member:{home}`` per member, ``grid`` (the grid supplier at the community's
connection) and ``rounding`` (the cooperative's own account for sub-cent residuals). Each
transaction is a set of postings ``(account, leg, energy_mwh, amount_micro)``: energy is what the
account received (mWh, negative: delivered), money what it was credited (micro-units, 10^-6 of
the currency; negative: it paid). Every transaction adds up to zero energy and zero money.

One transaction per settled local day, with per member and per leg (``import-neighbours``,
``import-grid``, ``export-neighbours``, ``export-grid``) the day's sums over its intervals.

Rounding, the rule: amounts are exact decimals until posted. A member's posting is rounded to
micro-units towards the member (up, on the member's balance), the grid's half to even, and the
residual goes to ``rounding``. Closing a month rounds each member's balance for the month up to
whole minor units (cents), the grid's half to even, and again posts the residual to
``rounding``. So rounding never costs a member anything (the cooperative absorbs at most one
cent per member and month), and a member's statement can never exceed its grid-only bill
through rounding alone.

A closed period is immutable (database triggers refuse changes). Settling a day of a closed
period again (late data arrived) posts the difference as an ``adjustment`` transaction in the
first open period after it; a day of an open period is simply settled again (replaced).

A closed day keeps the scheme it was settled under (:attr:`Scheme.fingerprint` tells schemes
apart). Settling it under another scheme is refused (:class:`SchemeChangeError`) unless asked
for: :meth:`Ledger.reprice_day` then posts two adjustments, each labelled for what it is: the
late or corrected data priced under the day's own scheme, and the repricing (the same data under
the new scheme against the old), which records the new scheme (``reprice_scheme_id``) so the day
is held under it from then on.

Each day also records whose meter figures it was settled on (``settlement_day_sources``,
migration 11): :data:`HUB_READINGS`, or the grid operator's figures named by their file and its
SHA-256 (``coopwatt-hub settle --official``). The row follows the day's latest settlement or
adjustment, so it always names the figures the day's effective postings rest on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Final

from hub.settlement.pricing import IntervalSettlement
from hub.settlement.scheme import INTERVAL_MS, Scheme, parse_period, period_of
from hub.storage.store import Store

GRID: Final = "grid"
ROUNDING: Final = "rounding"
MEMBER_PREFIX: Final = "member:"

IMPORT_NEIGHBOURS: Final = "import-neighbours"
IMPORT_GRID: Final = "import-grid"
EXPORT_NEIGHBOURS: Final = "export-neighbours"
EXPORT_GRID: Final = "export-grid"
ROUNDING_LEG: Final = "rounding"
ENERGY_LEGS: Final = (IMPORT_NEIGHBOURS, IMPORT_GRID, EXPORT_NEIGHBOURS, EXPORT_GRID)

MICRO_PER_UNIT: Final = 1_000_000

HUB_READINGS: Final = "hub"  # a day settled on the hub's own readings (the default)


def member_account(home: str) -> str:
    return MEMBER_PREFIX + home


class LedgerError(Exception):
    """An operation the ledger refuses; the message says why in plain words."""


class SchemeChangeError(LedgerError):
    """A closed day would be priced under another scheme without being asked to reprice it."""


@dataclass(frozen=True, slots=True, order=True)
class Posting:
    account: str
    leg: str
    energy_mwh: int
    amount_micro: int


def check_balanced(postings: Iterable[Posting]) -> None:
    ps = list(postings)
    energy = sum(p.energy_mwh for p in ps)
    money = sum(p.amount_micro for p in ps)
    if energy or money:
        raise LedgerError(f"transaction does not balance: {energy} mWh, {money} micro-units")


def _micro(amount: Decimal, rounding: str) -> int:
    return int((amount * MICRO_PER_UNIT).to_integral_value(rounding=rounding))


def day_postings(intervals: Iterable[IntervalSettlement]) -> list[Posting]:
    """The balanced postings of one day's settled intervals (see the module doc for rounding)."""
    energy: dict[tuple[str, str], int] = {}
    money: dict[tuple[str, str], Decimal] = {}

    def add(account: str, leg: str, mwh: int, amount: Decimal) -> None:
        key = (account, leg)
        energy[key] = energy.get(key, 0) + mwh
        money[key] = money.get(key, Decimal(0)) + amount

    for iv in intervals:
        for m in iv.members:
            acc = member_account(m.home)
            add(acc, IMPORT_NEIGHBOURS, m.import_neighbours_mwh, -m.paid_neighbours)
            add(acc, IMPORT_GRID, m.import_grid_mwh, -m.paid_grid)
            add(acc, EXPORT_NEIGHBOURS, -m.export_neighbours_mwh, m.received_neighbours)
            add(acc, EXPORT_GRID, -m.export_grid_mwh, m.received_grid)
        imp = Decimal(iv.grid_import_mwh) * iv.import_price / 1_000_000
        exp = Decimal(iv.grid_export_mwh) * iv.export_price / 1_000_000
        add(GRID, IMPORT_GRID, -iv.grid_import_mwh, imp)
        add(GRID, EXPORT_GRID, iv.grid_export_mwh, -exp)
    postings = []
    for (account, leg), amount in money.items():
        rounding = ROUND_HALF_EVEN if account == GRID else ROUND_CEILING
        p = Posting(account, leg, energy[(account, leg)], _micro(amount, rounding))
        if p.energy_mwh or p.amount_micro:
            postings.append(p)
    residual = -sum(p.amount_micro for p in postings)
    if residual:
        postings.append(Posting(ROUNDING, ROUNDING_LEG, 0, residual))
    check_balanced(postings)
    return sorted(postings)


def _difference(held: dict[tuple[str, str], Posting], postings: Iterable[Posting]) -> list[Posting]:
    """The postings that take ``held`` to ``postings`` (balanced when both are)."""
    new = {(p.account, p.leg): p for p in postings}
    delta = []
    for key in sorted(held.keys() | new.keys()):
        h = held.get(key, Posting(*key, 0, 0))
        n = new.get(key, Posting(*key, 0, 0))
        if (n.energy_mwh, n.amount_micro) != (h.energy_mwh, h.amount_micro):
            delta.append(
                Posting(*key, n.energy_mwh - h.energy_mwh, n.amount_micro - h.amount_micro)
            )
    check_balanced(delta)
    return delta


def _data_memo(iso: str, period: str, source: str = HUB_READINGS) -> str:
    basis = "" if source == HUB_READINGS else f", on the grid operator's figures ({source})"
    return f"correction of {iso} (closed period {period}) after late or corrected data{basis}"


@dataclass(frozen=True, slots=True)
class MemberIntervalRow:
    home: str
    start_ms: int
    status: str
    import_mwh: int
    export_mwh: int
    import_neighbours_mwh: int
    export_neighbours_mwh: int


@dataclass(frozen=True, slots=True)
class IntervalRow:
    start_ms: int
    members: int
    missing: int
    estimated: int
    supply_mwh: int
    demand_mwh: int
    matched_mwh: int
    import_price: Decimal
    export_price: Decimal
    internal_price: Decimal


@dataclass(frozen=True)
class DaySettlement:
    """One local day, settled: what :meth:`Ledger.record_day` stores."""

    day: date
    intervals: tuple[IntervalRow, ...]
    members: tuple[MemberIntervalRow, ...]
    postings: tuple[Posting, ...]
    source: str = HUB_READINGS  # whose meter figures: the hub's readings, or the operator's file

    @property
    def period(self) -> str:
        return period_of(self.day)

    @property
    def provisional(self) -> bool:
        return any(iv.missing for iv in self.intervals)


@dataclass(slots=True)
class ClosingSummary:
    period: str
    rounding_micro: int = 0  # what the cooperative's rounding account took (negative: gave)
    postings: list[Posting] = field(default_factory=list)


class Ledger:
    """The settlement tables of one hub database. Writes are one transaction each.

    Writes go through :meth:`Store.transaction` (the store's lock and writer turn), so they
    queue with ingest and every other writer of the file. Reads go through
    :meth:`Store.reader` and see committed data only, except inside a write, where the
    transaction's own connection is read (``_``-prefixed helpers taking ``conn``).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.store.transaction() as conn:
                yield conn
        except sqlite3.IntegrityError as exc:
            if "ledger period is closed" in str(exc):
                raise LedgerError("that period is closed: its ledger cannot change") from None
            raise

    # -- reading -----------------------------------------------------------------------------

    def is_closed(self, period: str) -> bool:
        return self._is_closed(self.store.reader(), period)

    @staticmethod
    def _is_closed(conn: sqlite3.Connection, period: str) -> bool:
        row = conn.execute(
            "SELECT closed_ms FROM ledger_periods WHERE period = ?", (period,)
        ).fetchone()
        return row is not None and row[0] is not None

    def closed_ms(self, period: str) -> int | None:
        conn = self.store.reader()
        row = conn.execute(
            "SELECT closed_ms FROM ledger_periods WHERE period = ?", (period,)
        ).fetchone()
        return None if row is None else row[0]

    def scheme_for(self, period: str) -> Scheme | None:
        """The scheme the period's latest settled interval used; for a period holding only
        adjustments, the latest scheme; None when the period has nothing in the ledger."""
        conn = self.store.reader()
        row = conn.execute(
            "SELECT s.scheme FROM settlement_intervals i JOIN settlement_schemes s "
            "ON s.id = i.scheme_id WHERE i.period = ? ORDER BY i.start_ms DESC LIMIT 1",
            (period,),
        ).fetchone()
        if row is not None:
            return Scheme.from_json(row[0])
        held = conn.execute(
            "SELECT 1 FROM ledger_transactions WHERE period = ? LIMIT 1", (period,)
        ).fetchone()
        return None if held is None else self.latest_scheme()

    def latest_scheme(self) -> Scheme | None:
        conn = self.store.reader()
        row = conn.execute(
            "SELECT scheme FROM settlement_schemes ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else Scheme.from_json(row[0])

    def held_scheme(self, day: date) -> Scheme | None:
        """The scheme ``day`` is priced under: its latest repricing's, else its settlement's."""
        iso = day.isoformat()
        conn = self.store.reader()
        row = conn.execute(
            "SELECT s.scheme FROM ledger_transactions t JOIN settlement_schemes s "
            "ON s.id = t.reprice_scheme_id WHERE t.day = ? ORDER BY t.id DESC LIMIT 1",
            (iso,),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT s.scheme FROM settlement_intervals i JOIN settlement_schemes s "
                "ON s.id = i.scheme_id WHERE i.day = ? ORDER BY i.start_ms DESC LIMIT 1",
                (iso,),
            ).fetchone()
        return None if row is None else Scheme.from_json(row[0])

    def scheme_changes(self, scheme: Scheme, days: Iterable[date]) -> dict[date, Scheme]:
        """Days of closed periods among ``days`` held under a scheme other than ``scheme``,
        with that scheme."""
        out: dict[date, Scheme] = {}
        closed: dict[str, bool] = {}
        for day in days:
            period = period_of(day)
            if period not in closed:
                closed[period] = self.is_closed(period)
            if not closed[period]:
                continue
            held = self.held_scheme(day)
            if held is not None and held.fingerprint != scheme.fingerprint:
                out[day] = held
        return out

    def day_effective(self, day: date) -> dict[tuple[str, str], Posting]:
        """What the ledger holds for ``day``: its settlement plus every later adjustment."""
        return self._day_effective(self.store.reader(), day)

    @staticmethod
    def _day_effective(conn: sqlite3.Connection, day: date) -> dict[tuple[str, str], Posting]:
        out: dict[tuple[str, str], Posting] = {}
        for account, leg, energy, amount in conn.execute(
            "SELECT p.account, p.leg, sum(p.energy_mwh), sum(p.amount_micro) "
            "FROM ledger_postings p JOIN ledger_transactions t ON t.id = p.txn_id "
            "WHERE t.day = ? GROUP BY p.account, p.leg",
            (day.isoformat(),),
        ):
            out[(account, leg)] = Posting(account, leg, int(energy), int(amount))
        return out

    def period_postings(self, period: str, account: str | None = None) -> list[tuple[str, Posting]]:
        """``(kind, posting)`` for every posting of ``period`` (optionally of one account); an
        adjustment that reprices a closed day under another scheme is of kind ``repricing``."""
        sql = (
            "SELECT CASE WHEN t.reprice_scheme_id IS NULL THEN t.kind ELSE 'repricing' END, "
            "p.account, p.leg, p.energy_mwh, p.amount_micro "
            "FROM ledger_postings p JOIN ledger_transactions t ON t.id = p.txn_id "
            "WHERE t.period = ?"
        )
        args: tuple[str, ...] = (period,)
        if account is not None:
            sql += " AND p.account = ?"
            args = (period, account)
        return [
            (kind, Posting(acc, leg, int(e), int(a)))
            for kind, acc, leg, e, a in self.store.reader().execute(
                sql + " ORDER BY t.id, p.account", args
            )
        ]

    def balances(self, period: str) -> dict[str, tuple[int, int]]:
        """Per account, its (energy_mwh, amount_micro) over ``period``."""
        return self._balances(self.store.reader(), period)

    @staticmethod
    def _balances(conn: sqlite3.Connection, period: str) -> dict[str, tuple[int, int]]:
        return {
            account: (int(e), int(a))
            for account, e, a in conn.execute(
                "SELECT p.account, sum(p.energy_mwh), sum(p.amount_micro) "
                "FROM ledger_postings p JOIN ledger_transactions t ON t.id = p.txn_id "
                "WHERE t.period = ? GROUP BY p.account ORDER BY p.account",
                (period,),
            )
        }

    def verify(self) -> list[str]:
        """Problems found: unbalanced transactions. Empty when the ledger is sound."""
        return [
            f"transaction {txn} ({kind} {day or period}) is off by {e} mWh, {a} micro-units"
            for txn, kind, day, period, e, a in self.store.reader().execute(
                "SELECT t.id, t.kind, t.day, t.period, sum(p.energy_mwh), sum(p.amount_micro) "
                "FROM ledger_transactions t JOIN ledger_postings p ON p.txn_id = t.id "
                "GROUP BY t.id HAVING sum(p.energy_mwh) != 0 OR sum(p.amount_micro) != 0"
            )
        ]

    # -- writing -----------------------------------------------------------------------------

    def scheme_id(self, scheme: Scheme, now_ms: int) -> int:
        text = scheme.to_json()
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO settlement_schemes (scheme, created_ms) VALUES (?, ?)",
                (text, now_ms),
            )
            row = conn.execute(
                "SELECT id FROM settlement_schemes WHERE scheme = ?", (text,)
            ).fetchone()
        return int(row[0])

    def record_day(self, day: DaySettlement, scheme_id: int, now_ms: int) -> str:
        """Store a settled day; returns ``settled``, ``resettled``, ``unchanged`` or ``adjusted``.

        In an open period the day's settlement (transaction and intervals) replaces any earlier
        one. In a closed period nothing of it changes: the difference from what the ledger
        holds for the day is posted as an adjustment in the first open period after it.
        """
        check_balanced(day.postings)
        period = day.period
        iso = day.day.isoformat()
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO ledger_periods (period) VALUES (?)", (period,))
            if self._is_closed(conn, period):
                return self._adjust(conn, day, now_ms)
            old = conn.execute(
                "SELECT id, provisional FROM ledger_transactions "
                "WHERE kind = 'settlement' AND day = ?",
                (iso,),
            ).fetchone()
            if old is not None:
                held_ids = {
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT scheme_id FROM settlement_intervals WHERE day = ?",
                        (iso,),
                    )
                }
                if (
                    bool(old[1]) == day.provisional
                    and held_ids == {scheme_id}
                    and self._source(conn, iso) == day.source
                    and self._txn_postings(conn, old[0]) == sorted(day.postings)
                    and self._day_rows(conn, iso) == (day.intervals, day.members)
                ):
                    return "unchanged"
                conn.execute("DELETE FROM ledger_postings WHERE txn_id = ?", (old[0],))
                conn.execute("DELETE FROM ledger_transactions WHERE id = ?", (old[0],))
            conn.execute("DELETE FROM settlement_intervals WHERE day = ?", (iso,))
            conn.execute("DELETE FROM settlement_member_intervals WHERE day = ?", (iso,))
            self._set_source(conn, day)
            memo = f"settlement of {iso}" + (
                " (provisional: data missing)" if day.provisional else ""
            )
            txn = self._insert_txn(conn, period, "settlement", iso, day.provisional, now_ms, memo)
            self._insert_postings(conn, txn, day.postings)
            conn.executemany(
                "INSERT INTO settlement_intervals (start_ms, period, day, scheme_id, members, "
                "missing, estimated, supply_mwh, demand_mwh, matched_mwh, import_price, "
                "export_price, internal_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        iv.start_ms,
                        period,
                        iso,
                        scheme_id,
                        iv.members,
                        iv.missing,
                        iv.estimated,
                        iv.supply_mwh,
                        iv.demand_mwh,
                        iv.matched_mwh,
                        str(iv.import_price),
                        str(iv.export_price),
                        str(iv.internal_price),
                    )
                    for iv in day.intervals
                ],
            )
            conn.executemany(
                "INSERT INTO settlement_member_intervals (home, start_ms, period, day, status, "
                "import_mwh, export_mwh, import_neighbours_mwh, export_neighbours_mwh) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.home,
                        m.start_ms,
                        period,
                        iso,
                        m.status,
                        m.import_mwh,
                        m.export_mwh,
                        m.import_neighbours_mwh,
                        m.export_neighbours_mwh,
                    )
                    for m in day.members
                ],
            )
            return "resettled" if old is not None else "settled"

    def reprice_day(
        self,
        day: DaySettlement,
        at_old: DaySettlement,
        scheme_id: int,
        old: Scheme,
        new: Scheme,
        now_ms: int,
    ) -> str:
        """Price a day of a closed period under another scheme, as asked; returns ``repriced``.

        ``day`` is the day settled under ``new`` (its ``scheme_id``), ``at_old`` the same data
        under ``old``, the scheme the day is held under. Into the first open period after it go
        the late or corrected data (``at_old`` against what the ledger holds for the day) and
        the repricing (``day`` against ``at_old``), as two adjustments with their own memos.
        The repricing is recorded even when no amount changes, so the day is held under
        ``new`` from then on.
        """
        check_balanced(day.postings)
        check_balanced(at_old.postings)
        if day.day != at_old.day or not self.is_closed(day.period):
            raise ValueError("reprice_day takes one day of a closed period under two schemes")
        iso = day.day.isoformat()
        with self._write() as conn:
            target = self._first_open_after(conn, day.period)
            conn.execute("INSERT OR IGNORE INTO ledger_periods (period) VALUES (?)", (target,))
            self._set_source(conn, day)  # the day's postings now rest on these figures
            held = self._day_effective(conn, day.day)
            corrected = _difference(held, at_old.postings)
            if corrected:
                memo = _data_memo(iso, day.period)
                txn = self._insert_txn(
                    conn, target, "adjustment", iso, at_old.provisional, now_ms, memo
                )
                self._insert_postings(conn, txn, corrected)
            before = {(p.account, p.leg): p for p in at_old.postings}
            memo = (
                f"repricing of {iso} (closed period {day.period}) under a changed scheme, "
                f"{old.label} -> {new.label}, as asked (settle --reprice); no data changed"
            )
            txn = self._insert_txn(
                conn, target, "adjustment", iso, day.provisional, now_ms, memo, scheme_id
            )
            self._insert_postings(conn, txn, _difference(before, day.postings))
        return "repriced"

    def _adjust(self, conn: sqlite3.Connection, day: DaySettlement, now_ms: int) -> str:
        delta = _difference(self._day_effective(conn, day.day), day.postings)
        self._set_source(conn, day)  # the same money on other figures is still "unchanged"
        if not delta:
            return "unchanged"
        target = self._first_open_after(conn, day.period)
        conn.execute("INSERT OR IGNORE INTO ledger_periods (period) VALUES (?)", (target,))
        iso = day.day.isoformat()
        memo = _data_memo(iso, day.period, day.source)
        txn = self._insert_txn(conn, target, "adjustment", iso, day.provisional, now_ms, memo)
        self._insert_postings(conn, txn, delta)
        return "adjusted"

    @staticmethod
    def _source(conn: sqlite3.Connection, iso: str) -> str:
        row = conn.execute("SELECT source FROM settlement_day_sources WHERE day = ?", (iso,))
        found = row.fetchone()
        return HUB_READINGS if found is None else str(found[0])

    @staticmethod
    def _set_source(conn: sqlite3.Connection, day: DaySettlement) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO settlement_day_sources (day, period, source) VALUES (?, ?, ?)",
            (day.day.isoformat(), day.period, day.source),
        )

    def day_sources(self, days: Iterable[date]) -> dict[date, str]:
        """Whose meter figures each of ``days`` rests on (:data:`HUB_READINGS` if never said)."""
        conn = self.store.reader()
        return {d: self._source(conn, d.isoformat()) for d in days}

    def _first_open_after(self, conn: sqlite3.Connection, period: str) -> str:
        first = parse_period(period)
        while True:
            first = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            candidate = period_of(first)
            if not self._is_closed(conn, candidate):
                return candidate

    def close_period(
        self, scheme: Scheme, period: str, now_ms: int, *, allow_provisional: bool = False
    ) -> ClosingSummary:
        """Round each account's balance to whole minor units and close ``period`` for good.

        Refuses when the period is already closed, an earlier period with entries is still
        open, some of its intervals were never settled, or (unless ``allow_provisional``) some
        were settled only provisionally.
        """
        parse_period(period)
        with self._write() as conn:
            if self._is_closed(conn, period):
                raise LedgerError(f"{period} is already closed")
            earlier = conn.execute(
                "SELECT min(t.period) FROM ledger_transactions t JOIN ledger_periods p "
                "ON p.period = t.period WHERE t.period < ? AND p.closed_ms IS NULL",
                (period,),
            ).fetchone()[0]
            if earlier is not None:
                raise LedgerError(f"{earlier} is still open: close periods in order")
            start_ms, end_ms = scheme.month_bounds_ms(period)
            expected = (end_ms - start_ms) // INTERVAL_MS
            settled, provisional = conn.execute(
                "SELECT count(*), coalesce(sum(missing > 0), 0) FROM settlement_intervals "
                "WHERE period = ?",
                (period,),
            ).fetchone()
            if settled < expected:
                raise LedgerError(
                    f"{expected - settled} of {expected} intervals of {period} are not settled: "
                    "run settle for the whole month first"
                )
            if provisional and not allow_provisional:
                raise LedgerError(
                    f"{provisional} intervals of {period} are provisional (member data missing); "
                    "settle again once it arrives, or close anyway to make them final"
                )
            conn.execute("INSERT OR IGNORE INTO ledger_periods (period) VALUES (?)", (period,))
            summary = ClosingSummary(period)
            unit = MICRO_PER_UNIT // scheme.minor_per_unit
            for account, (_, amount) in self._balances(conn, period).items():
                if account == ROUNDING:
                    continue
                rounding = ROUND_HALF_EVEN if account == GRID else ROUND_CEILING
                target = int((Decimal(amount) / unit).to_integral_value(rounding=rounding) * unit)
                if target != amount:
                    summary.postings.append(Posting(account, ROUNDING_LEG, 0, target - amount))
            if summary.postings:
                summary.rounding_micro = -sum(p.amount_micro for p in summary.postings)
                summary.postings.append(Posting(ROUNDING, ROUNDING_LEG, 0, summary.rounding_micro))
                memo = f"closing {period}: balances rounded to whole minor units"
                txn = self._insert_txn(conn, period, "rounding", None, False, now_ms, memo)
                self._insert_postings(conn, txn, summary.postings)
            conn.execute(
                "UPDATE ledger_periods SET closed_ms = ? WHERE period = ?", (now_ms, period)
            )
        return summary

    # -- helpers -----------------------------------------------------------------------------

    def _insert_txn(
        self,
        conn: sqlite3.Connection,
        period: str,
        kind: str,
        day: str | None,
        provisional: bool,
        now_ms: int,
        memo: str,
        reprice_scheme_id: int | None = None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO ledger_transactions (period, kind, day, provisional, created_ms, memo, "
            "reprice_scheme_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (period, kind, day, int(provisional), now_ms, memo, reprice_scheme_id),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    @staticmethod
    def _insert_postings(conn: sqlite3.Connection, txn: int, postings: Sequence[Posting]) -> None:
        check_balanced(postings)
        conn.executemany(
            "INSERT INTO ledger_postings (txn_id, account, leg, energy_mwh, amount_micro) "
            "VALUES (?, ?, ?, ?, ?)",
            [(txn, p.account, p.leg, p.energy_mwh, p.amount_micro) for p in postings],
        )

    @staticmethod
    def _txn_postings(conn: sqlite3.Connection, txn: int) -> list[Posting]:
        return sorted(
            Posting(a, leg, int(e), int(m))
            for a, leg, e, m in conn.execute(
                "SELECT account, leg, energy_mwh, amount_micro FROM ledger_postings "
                "WHERE txn_id = ?",
                (txn,),
            )
        )

    @staticmethod
    def _day_rows(
        conn: sqlite3.Connection, iso: str
    ) -> tuple[tuple[IntervalRow, ...], tuple[MemberIntervalRow, ...]]:
        intervals = tuple(
            IntervalRow(s, mb, mi, es, su, de, ma, Decimal(ip), Decimal(ep), Decimal(xp))
            for s, mb, mi, es, su, de, ma, ip, ep, xp in conn.execute(
                "SELECT start_ms, members, missing, estimated, supply_mwh, demand_mwh, "
                "matched_mwh, import_price, export_price, internal_price "
                "FROM settlement_intervals WHERE day = ? ORDER BY start_ms",
                (iso,),
            )
        )
        members = tuple(
            MemberIntervalRow(*row)
            for row in conn.execute(
                "SELECT home, start_ms, status, import_mwh, export_mwh, import_neighbours_mwh, "
                "export_neighbours_mwh FROM settlement_member_intervals WHERE day = ? "
                "ORDER BY start_ms, home",
                (iso,),
            )
        )
        return intervals, members
