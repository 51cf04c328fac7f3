"""The grid operator's figures: import its per-member, per-interval file and reconcile the hub's.

Where the grid operator meters (or allocates) each member's energy per interval and delivers the
figures, the cooperative bills from those and checks them against its own readings. This module
reads the operator's file, maps its metering points to the cooperative's homes, and compares the
two per member and interval. Pure apart from :func:`load_map`, which reads the map (the
operator's file is read by :mod:`.operator_files`), and :func:`hub_intervals`, THE read of the
hub's side (through :func:`hub.settlement.source.read_settlement_counters`, purpose
``settlement``).

The operator's file: generic CSV
--------------------------------
UTF-8 (a byte-order mark is allowed), comma-separated, one header line, then one row per
metering point and interval::

    member,metering_point,start,end,import_wh,export_wh,allocated_wh
    Anna Berger,AT003000001,2026-06-02T00:00:00+02:00,2026-06-02T00:15:00+02:00,120.5,0,80

- ``member``: the operator's name for the member (carried through, never matched on);
- ``metering_point``: the operator's metering point id, mapped to a home by the map file;
- ``start``, ``end``: ISO 8601 with an offset (``Z`` or ``+02:00``); a time without an offset
  is refused, since the same wall-clock time can be two instants on the night clocks go back.
  Every row spans one interval of the same length, 15 or 60 minutes, starting on that grid
  in UTC (as every European zone's quarter-hours and hours do);
- ``import_wh`` / ``export_wh``: energy from / to the grid in the interval; ``allocated_wh``
  (optional, may be empty): the share of community energy the operator allocated. The unit is
  the column name's suffix: ``_wh`` or ``_kwh`` (converted exactly); any other unit is refused.
  Numbers use a decimal point, are not negative, and are exact to 1 mWh (at most 3 decimals in
  Wh, 6 in kWh).

Every row must be usable: a metering point missing from the map, an interval given twice or
overlapping another, an interval of the asked range with no row, a bad number or time, or a wrong
unit is a :class:`ReconcileError`, one sentence naming the line; never a silent zero.

The map file (TOML, kept by the operator of the hub)::

    [metering_points]
    AT0030000000000000000000000000001 = "home-a"
    AT0030000000000000000000000000002 = "home-b"

Several metering points may map to one home (their figures are added up per interval).

National formats
----------------
Flanders: Fluvius's consumption-history export (15-minute totals per EAN and register), read by
:mod:`.fluvius`. Austria's energy communities get 15-minute values per metering point from EDA;
what the EDA portal and community tools hand out is an Excel report whose layout is not
published as a specification (the ebUtilities messages behind it are XML), so it is not read
here: export it to the generic CSV above.

Reconciliation
--------------
Per home and interval, the hub's grid import and export (from its counters, cut as settlement
cuts them, :mod:`.intervals`) beside the operator's. An interval *agrees* when both its import
and its export differences are within ``tolerance_wh`` OR within ``tolerance_pct`` percent of
the operator's figure (either is enough: the absolute bound covers small figures, where a
percentage is too tight, the relative one large figures). An interval in which the hub has no
known figure (the home was not reporting yet, or its readings are missing) does not agree and
is counted apart. A home is flagged (``alert``) when the share of its intervals that do not agree
is above ``alert_pct`` percent.

Settlement on the official figures: :func:`official_intervals` turns the file into the
structure :func:`hub.settlement.intervals.home_intervals` gives per home, so the engine can
settle from it in place of the counters.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from hub.settlement.intervals import (
    ESTIMATED,
    MISSING,
    OK,
    MemberInterval,
    home_intervals,
    interval_boundaries,
)
from hub.settlement.source import read_settlement_counters
from hub.storage.store import Store
from protocol.config_tables import ConfigError, Table, read_toml

REQUIRED: Final = ("member", "metering_point", "start", "end")
ENERGY: Final = ("import", "export", "allocated")
UNITS: Final = {"wh": 1000, "kwh": 1_000_000}  # mWh per unit
STEPS_MS: Final = (15 * 60_000, 60 * 60_000)
MAX_ROWS: Final = 5_000_000


class ReconcileError(ValueError):
    """An operator's file or map that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class OperatorRow:
    """One metering point in one interval, as the operator gave it (energy in mWh)."""

    line: int
    member: str
    metering_point: str
    start_ms: int
    end_ms: int
    import_mwh: int
    export_mwh: int
    allocated_mwh: int | None


@dataclass(frozen=True, slots=True)
class OperatorFile:
    """The parsed file: its rows (in file order) and its interval length (ms)."""

    rows: tuple[OperatorRow, ...]
    step_ms: int
    name: str = ""  # the file's name and the first 16 hex digits of its SHA-256, for records


# -- parsing -------------------------------------------------------------------------------------


def _columns(header: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Energy column -> (index, mWh per unit), from the header's unit suffixes."""
    names = [h.strip().lower() for h in header]
    for name in REQUIRED:
        if name not in names:
            raise ReconcileError(f"line 1: the header has no {name!r} column")
    energy: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(names):
        if name in REQUIRED:
            if names.index(name) != i:
                raise ReconcileError(f"line 1: column {name!r} appears twice")
            continue
        quantity, _, unit = name.partition("_")
        if quantity not in ENERGY or not unit:
            raise ReconcileError(
                f"line 1: unknown column {header[i].strip()!r} (columns: member, metering_point, "
                "start, end, import_wh, export_wh and optionally allocated_wh; kWh as _kwh)"
            )
        if unit not in UNITS:
            raise ReconcileError(
                f"line 1: column {header[i].strip()!r} is in {unit!r}, not a unit this reads: "
                "give energy in Wh (_wh) or kWh (_kwh)"
            )
        if quantity in energy:
            raise ReconcileError(f"line 1: two {quantity} columns")
        energy[quantity] = (i, UNITS[unit])
    for quantity in ("import", "export"):
        if quantity not in energy:
            raise ReconcileError(f"line 1: the header has no {quantity}_wh (or _kwh) column")
    return energy


def _time(text: str, line: int, column: str) -> int:
    value = text.strip()
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ReconcileError(
            f"line {line}: {column} {value[:40]!r} is not an ISO 8601 time"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ReconcileError(
            f"line {line}: {column} {value[:40]!r} has no UTC offset (write e.g. +02:00 or Z)"
        )
    try:
        return round(when.timestamp() * 1000)
    except (OverflowError, ValueError):
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is out of range") from None


def energy_mwh(text: str, per_unit: int, line: int, column: str) -> int:
    """A figure in the file's unit (``per_unit`` mWh each) as whole mWh; one line if it is not."""
    value = text.strip()
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is not a number") from None
    if not number.is_finite():
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is not a number")
    if number < 0:
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is negative")
    mwh = number * per_unit
    if mwh > 10**15:
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is implausibly large")
    if mwh != mwh.to_integral_value():
        raise ReconcileError(f"line {line}: {column} {value[:40]!r} is finer than 1 mWh")
    return int(mwh)


def parse_operator_csv(text: str) -> OperatorFile:
    """The operator's generic CSV (see the module doc); every mistake a :class:`ReconcileError`."""
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise ReconcileError("the file is not text (it holds NUL bytes)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ReconcileError("the file is empty: it needs a header line and rows")
        energy = _columns(header)
        index = {name: [h.strip().lower() for h in header].index(name) for name in REQUIRED}
        rows: list[OperatorRow] = []
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise ReconcileError(
                    f"line {line}: {len(fields)} fields where the header has {len(header)}"
                )
            if len(rows) >= MAX_ROWS:
                raise ReconcileError(f"more than {MAX_ROWS} rows: split the file")
            member = fields[index["member"]].strip()
            point = fields[index["metering_point"]].strip()
            if not member:
                raise ReconcileError(f"line {line}: member is empty")
            if not point:
                raise ReconcileError(f"line {line}: metering_point is empty")
            start = _time(fields[index["start"]], line, "start")
            end = _time(fields[index["end"]], line, "end")
            if end - start not in STEPS_MS:
                raise ReconcileError(
                    f"line {line}: the interval lasts {(end - start) / 60_000:g} minutes; "
                    "this reads 15- or 60-minute intervals"
                )
            if start % (end - start):
                raise ReconcileError(
                    f"line {line}: start {fields[index['start']].strip()} is not on the "
                    f"{(end - start) // 60_000}-minute grid"
                )
            values: dict[str, int | None] = {}
            for quantity, (col, per_unit) in energy.items():
                raw = fields[col]
                name = header[col].strip()
                if quantity == "allocated" and not raw.strip():
                    values[quantity] = None
                elif not raw.strip():
                    raise ReconcileError(f"line {line}: {name} is empty")
                else:
                    values[quantity] = energy_mwh(raw, per_unit, line, name)
            imp, exp = values["import"], values["export"]
            assert imp is not None and exp is not None
            rows.append(
                OperatorRow(line, member, point, start, end, imp, exp, values.get("allocated"))
            )
    except csv.Error as exc:
        raise ReconcileError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return finish(rows)


def finish(rows: Sequence[OperatorRow]) -> OperatorFile:
    """The checks every layout's rows must pass, in file order: some rows, 15- or 60-minute
    intervals on their grid, one length per file, no interval twice for a metering point."""
    if not rows:
        raise ReconcileError("the file has a header but no rows")
    for r in rows:
        if r.end_ms - r.start_ms not in STEPS_MS:
            raise ReconcileError(
                f"line {r.line}: the interval from {_iso(r.start_ms)} lasts "
                f"{(r.end_ms - r.start_ms) / 60_000:g} minutes; this reads 15- or 60-minute "
                "intervals"
            )
        if r.start_ms % (r.end_ms - r.start_ms):
            raise ReconcileError(f"line {r.line}: {_iso(r.start_ms)} is not on the interval grid")
    steps = {r.end_ms - r.start_ms for r in rows}
    if len(steps) > 1:
        odd = next(r for r in rows if r.end_ms - r.start_ms != rows[0].end_ms - rows[0].start_ms)
        raise ReconcileError(
            f"line {odd.line}: intervals of different lengths in one file "
            f"({(rows[0].end_ms - rows[0].start_ms) // 60_000} and "
            f"{(odd.end_ms - odd.start_ms) // 60_000} minutes)"
        )
    _check_overlaps(rows)
    return OperatorFile(tuple(rows), steps.pop())


def _check_overlaps(rows: Sequence[OperatorRow]) -> None:
    by_point: dict[str, list[OperatorRow]] = {}
    for r in rows:
        by_point.setdefault(r.metering_point, []).append(r)
    for point, point_rows in by_point.items():
        ordered = sorted(point_rows, key=lambda r: (r.start_ms, r.line))
        for a, b in itertools.pairwise(ordered):
            if b.start_ms < a.end_ms:
                first, second = sorted((a.line, b.line))
                raise ReconcileError(
                    f"line {second}: metering point {point} has this interval already "
                    f"(line {first})"
                )


# -- the map -------------------------------------------------------------------------------------


def parse_map(data: dict[str, Any]) -> dict[str, str]:
    """Metering point -> home, from the map file's ``[metering_points]`` table."""
    root = Table(data)
    points = root.table("metering_points")
    root.done()
    out: dict[str, str] = {}
    for point in points.data:
        out[point] = points.ident(point)
    if not out:
        raise ConfigError("metering_points is empty: map each metering point to its home")
    return out


def load_map(path: Path) -> dict[str, str]:
    try:
        return parse_map(read_toml(path))
    except ConfigError as exc:
        raise ReconcileError(f"{path}: {exc}") from None


# -- the official figures per home and interval ---------------------------------------------------


def _grid(start_ms: int, end_ms: int, step_ms: int) -> list[int]:
    try:
        return interval_boundaries(start_ms, end_ms, step_ms)
    except ValueError:
        raise ReconcileError(
            f"the range does not fall on the file's {step_ms // 60_000}-minute grid"
        ) from None


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="minutes")


def official_intervals(
    file: OperatorFile, points: Mapping[str, str], start_ms: int, end_ms: int
) -> dict[str, list[MemberInterval]]:
    """The operator's import and export per home and interval of ``[start_ms, end_ms)``.

    The same structure as :func:`hub.settlement.intervals.home_intervals` gives per home (one
    :class:`MemberInterval` per interval, status ``ok``), so settlement can run on the official
    figures. Rows outside the range are left out; every metering point of the map must have a
    row for every interval of the range.
    """
    boundaries = _grid(start_ms, end_ms, file.step_ms)
    starts = boundaries[:-1]
    index = {s: i for i, s in enumerate(starts)}
    for r in file.rows:
        if r.metering_point not in points:
            raise ReconcileError(
                f"line {r.line}: metering point {r.metering_point} ({r.member}) is not in the "
                "map: add it to [metering_points] with its home"
            )
    seen: dict[str, list[OperatorRow | None]] = {p: [None] * len(starts) for p in points}
    for r in file.rows:
        i = index.get(r.start_ms)
        if i is not None:
            seen[r.metering_point][i] = r
    totals: dict[str, list[list[int]]] = {}
    for point, slots in seen.items():
        gaps = [starts[i] for i, r in enumerate(slots) if r is None]
        if gaps:
            raise ReconcileError(
                f"metering point {point} ({points[point]}) has no row for {len(gaps)} of the "
                f"{len(starts)} intervals, the first at {_iso(gaps[0])}"
            )
        home = totals.setdefault(points[point], [[0, 0] for _ in starts])
        for i, slot in enumerate(slots):
            assert slot is not None
            home[i][0] += slot.import_mwh
            home[i][1] += slot.export_mwh
    return {
        home: [
            MemberInterval(home, s, imp, exp, OK) for s, (imp, exp) in zip(starts, v, strict=True)
        ]
        for home, v in sorted(totals.items())
    }


@dataclass(frozen=True, slots=True)
class OfficialFigures:
    """The grid operator's file and the metering-point map, for settling on them.

    ``source`` is what the ledger records for each day settled on them: the file's name and
    the start of its SHA-256, so a statement can say what it was billed from and a later file
    with other figures is told apart from the one used.
    """

    file: OperatorFile
    points: Mapping[str, str]

    @property
    def source(self) -> str:
        return self.file.name or "the grid operator's file"

    def intervals(self, start_ms: int, end_ms: int) -> dict[str, list[MemberInterval]]:
        """Per home and interval of ``[start_ms, end_ms)``; see :func:`official_intervals`."""
        return official_intervals(self.file, self.points, start_ms, end_ms)


# -- reconciliation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tolerance:
    """When an interval agrees (either bound is enough) and when a home is flagged."""

    wh: Decimal = Decimal(1)
    pct: Decimal = Decimal(1)
    alert_pct: Decimal = Decimal(5)

    def agrees(self, hub_mwh: int, official_mwh: int) -> bool:
        diff = abs(hub_mwh - official_mwh)
        return diff <= self.wh * 1000 or diff * 100 <= self.pct * official_mwh


@dataclass(frozen=True, slots=True)
class IntervalDifference:
    """One home's interval: hub minus operator (mWh), import and export."""

    start_ms: int
    official_import_mwh: int
    official_export_mwh: int
    import_diff_mwh: int
    export_diff_mwh: int

    @property
    def size_mwh(self) -> int:
        return abs(self.import_diff_mwh) + abs(self.export_diff_mwh)


@dataclass(slots=True)
class HomeReconciliation:
    """One home's comparison over the range."""

    home: str
    intervals: int = 0
    agreeing: int = 0
    hub_missing: int = 0
    hub_estimated: int = 0
    official_import_mwh: int = 0
    official_export_mwh: int = 0
    hub_import_mwh: int = 0
    hub_export_mwh: int = 0
    largest: list[IntervalDifference] = field(default_factory=list)
    alert: bool = False

    @property
    def agree_share(self) -> float:
        return self.agreeing / self.intervals if self.intervals else 1.0


@dataclass(frozen=True, slots=True)
class Reconciliation:
    homes: tuple[HomeReconciliation, ...]
    hub_only: tuple[str, ...]  # homes the hub settles that the operator's file does not name
    tolerance: Tolerance
    step_ms: int

    @property
    def alert(self) -> bool:
        return any(h.alert for h in self.homes)


def reconcile(
    official: Mapping[str, Sequence[MemberInterval]],
    hub: Mapping[str, Sequence[MemberInterval | None]],
    tolerance: Tolerance,
    step_ms: int,
    largest: int = 3,
) -> Reconciliation:
    """Compare per home and interval; ``hub`` is indexed like ``official``. Pure."""
    homes: list[HomeReconciliation] = []
    for home, rows in official.items():
        theirs = hub.get(home, [None] * len(rows))
        out = HomeReconciliation(home)
        diffs: list[IntervalDifference] = []
        for o, h in zip(rows, theirs, strict=True):
            out.intervals += 1
            out.official_import_mwh += o.import_mwh
            out.official_export_mwh += o.export_mwh
            if h is None or h.status == MISSING:
                out.hub_missing += 1
                continue
            if h.status == ESTIMATED:
                out.hub_estimated += 1
            out.hub_import_mwh += h.import_mwh
            out.hub_export_mwh += h.export_mwh
            if tolerance.agrees(h.import_mwh, o.import_mwh) and tolerance.agrees(
                h.export_mwh, o.export_mwh
            ):
                out.agreeing += 1
            d = IntervalDifference(
                o.start_ms,
                o.import_mwh,
                o.export_mwh,
                h.import_mwh - o.import_mwh,
                h.export_mwh - o.export_mwh,
            )
            if d.size_mwh:
                diffs.append(d)
        diffs.sort(key=lambda d: (-d.size_mwh, d.start_ms))
        out.largest = diffs[:largest]
        out.alert = (out.intervals - out.agreeing) * 100 > tolerance.alert_pct * out.intervals
        homes.append(out)
    hub_only = tuple(
        sorted(h for h, v in hub.items() if h not in official and any(x is not None for x in v))
    )
    return Reconciliation(tuple(homes), hub_only, tolerance, step_ms)


def hub_intervals(
    store: Store, start_ms: int, end_ms: int, step_ms: int, max_gap_ms: int
) -> dict[str, list[MemberInterval | None]]:
    """The hub's own import and export per home and interval, as settlement computes them."""
    boundaries = interval_boundaries(start_ms, end_ms, step_ms)
    homes = read_settlement_counters(store, start_ms, end_ms)
    return {
        home: home_intervals(home, c.grid, boundaries, max_gap_ms)
        for home, c in homes.items()
        if c.grid
    }


# -- output --------------------------------------------------------------------------------------


def _wh(mwh: int) -> str:
    return str(Decimal(mwh) / 1000)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}"


def format_text(result: Reconciliation) -> str:
    tol = result.tolerance
    lines = [
        f"Hub readings against the grid operator's figures, {result.step_ms // 60_000}-minute "
        f"intervals; agree within {tol.wh} Wh or {tol.pct} %; alert above {tol.alert_pct} % "
        "not agreeing.",
        "",
    ]
    for h in result.homes:
        flag = "ALERT" if h.alert else "ok"
        lines.append(
            f"{h.home}: {flag}: {h.agreeing}/{h.intervals} intervals agree "
            f"({_pct(h.agree_share)} %); import hub {_wh(h.hub_import_mwh)} Wh vs operator "
            f"{_wh(h.official_import_mwh)} Wh, export hub {_wh(h.hub_export_mwh)} Wh vs "
            f"operator {_wh(h.official_export_mwh)} Wh"
        )
        if h.hub_missing:
            lines.append(f"  {h.hub_missing} intervals without hub readings")
        if h.hub_estimated:
            lines.append(f"  {h.hub_estimated} intervals estimated across a gap in hub readings")
        for d in h.largest:
            lines.append(
                f"  {_iso(d.start_ms)}: import {_signed(d.import_diff_mwh)} Wh, export "
                f"{_signed(d.export_diff_mwh)} Wh (hub minus operator)"
            )
    for home in result.hub_only:
        lines.append(f"{home}: not in the operator's file (the hub has readings)")
    return "\n".join(lines) + "\n"


def _signed(mwh: int) -> str:
    return ("+" if mwh > 0 else "") + _wh(mwh)


def to_json(result: Reconciliation) -> dict[str, Any]:
    tol = result.tolerance
    return {
        "interval_minutes": result.step_ms // 60_000,
        "tolerance_wh": str(tol.wh),
        "tolerance_pct": str(tol.pct),
        "alert_pct": str(tol.alert_pct),
        "alert": result.alert,
        "homes": [
            {
                "home": h.home,
                "alert": h.alert,
                "intervals": h.intervals,
                "agreeing": h.agreeing,
                "agree_pct": _pct(h.agree_share),
                "hub_missing": h.hub_missing,
                "hub_estimated": h.hub_estimated,
                "official_import_wh": _wh(h.official_import_mwh),
                "official_export_wh": _wh(h.official_export_mwh),
                "hub_import_wh": _wh(h.hub_import_mwh),
                "hub_export_wh": _wh(h.hub_export_mwh),
                "largest": [
                    {
                        "start": _iso(d.start_ms),
                        "import_diff_wh": _wh(d.import_diff_mwh),
                        "export_diff_wh": _wh(d.export_diff_mwh),
                    }
                    for d in h.largest
                ],
            }
            for h in result.homes
        ],
        "hub_only": list(result.hub_only),
    }


def format_json(result: Reconciliation) -> str:
    return json.dumps(to_json(result), indent=2) + "\n"


CSV_HEADER: Final = (
    "home",
    "alert",
    "intervals",
    "agreeing",
    "agree_pct",
    "hub_missing",
    "hub_estimated",
    "official_import_wh",
    "hub_import_wh",
    "official_export_wh",
    "hub_export_wh",
)


def format_csv(result: Reconciliation) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for h in result.homes:
        w.writerow(
            (
                h.home,
                "yes" if h.alert else "no",
                h.intervals,
                h.agreeing,
                _pct(h.agree_share),
                h.hub_missing,
                h.hub_estimated,
                _wh(h.official_import_mwh),
                _wh(h.hub_import_mwh),
                _wh(h.official_export_mwh),
                _wh(h.hub_export_mwh),
            )
        )
    return out.getvalue()


FORMATS: Final = {"text": format_text, "json": format_json, "csv": format_csv}
