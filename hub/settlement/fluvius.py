"""Fluvius's consumption-history export: Flanders' grid operator's quarter-hour figures.

Fluvius, the grid operator of Flanders (Belgium), gives every digital meter's 15-minute figures
as a download from its customer portal ("Verbruikshistoriek ... kwartiertotalen", or in English
"Consumption history ... 15 minute totals"): a semicolon-separated file, one row per register
and quarter-hour::

    Van (datum);Van (tijdstip);Tot (datum);Tot (tijdstip);EAN;Meter;Metertype;Register;...
    12-10-2021;07:30:00;12-10-2021;07:45:00;="541448820052377134";1SAG1234;Digitale Meter;...

(the columns go on: ``...;Afname Dag;0,067;kWh;Gevalideerd`` for the register, the volume,
its unit and the validation status).

No formal specification is published; the layout here is the one the portal writes, in both
its languages, as public sample exports show it (the Dutch header also appears without the
parentheses, and the English one as ``From (date);...;EAN code;...;Unit;Validation status;
Description``). What this reads from it:

- times are local Belgian time (Europe/Brussels) without an offset, dates ``DD-MM-YYYY`` or
  ``DD/MM/YYYY``. In the autumn hour that happens twice, a register's second row for the same
  local quarter-hour is the later one (after the clock went back); an interval lasts what its
  wall-clock times say (``02:45`` to ``03:00`` is a quarter-hour on either pass), or what its
  end means in UTC where the wall clock jumped (``01:45`` to ``03:00`` in spring);
- the metering point is the EAN (Excel's ``="..."`` quoting removed); the member is the EAN too,
  as the file names no one;
- ``Afname``/``Offtake`` registers (day and night tariffs) are added up as import, ``Injectie``/
  ``Injection`` as export; a point with no injection register exported nothing;
- the volume has a decimal comma and is in kWh; an empty volume is zero only when the status says
  there was no consumption (``Geen verbruik``/``No consumption``), otherwise the figure is
  missing and the row an error: a missing official figure is never read as zero;
- a gas meter's export (``m³``) or any unit other than kWh or Wh is refused.

The rows become the generic file's :class:`~hub.settlement.reconcile.OperatorRow`, one per EAN
and quarter-hour, so reconcile and ``settle --official`` read both alike.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from hub.settlement.reconcile import (
    MAX_ROWS,
    STEPS_MS,
    OperatorFile,
    OperatorRow,
    ReconcileError,
    energy_mwh,
    finish,
)

BRUSSELS: Final = ZoneInfo("Europe/Brussels")
_COLUMNS: Final[dict[str, str]] = {
    "van datum": "from_date",
    "from date": "from_date",
    "van tijdstip": "from_time",
    "from time": "from_time",
    "tot datum": "until_date",
    "until date": "until_date",
    "tot tijdstip": "until_time",
    "until time": "until_time",
    "ean": "ean",
    "ean code": "ean",
    "register": "register",
    "volume": "volume",
    "eenheid": "unit",
    "unit": "unit",
    "validatiestatus": "status",
    "validation status": "status",
}
_REQUIRED: Final = ("from_date", "from_time", "until_date", "until_time", "ean", "register")
_IMPORT: Final = ("afname", "offtake")
_EXPORT: Final = ("injectie", "injection")
_NO_CONSUMPTION: Final = ("geen verbruik", "no consumption")
_UNITS: Final = {"kwh": 1_000_000, "wh": 1000}  # mWh per unit
_DATE: Final = re.compile(r"(\d{2})[-/](\d{2})[-/](\d{4})")
_TIME: Final = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}))?")


def _key(name: str) -> str:
    return " ".join(name.replace("(", " ").replace(")", " ").lower().split())


def looks_like_fluvius(first_line: str) -> bool:
    """True for the header of a Fluvius export (either language)."""
    names = {_COLUMNS.get(_key(n)) for n in first_line.removeprefix("\ufeff").split(";")}
    return set(_REQUIRED) <= names


def _local(date_text: str, time_text: str, line: int, column: str) -> datetime:
    d = _DATE.fullmatch(date_text.strip())
    t = _TIME.fullmatch(time_text.strip())
    if d is None or t is None:
        raise ReconcileError(
            f"line {line}: {column} {date_text.strip()[:20]!r} {time_text.strip()[:20]!r} is not "
            "a date DD-MM-YYYY and a time HH:MM:SS"
        )
    try:
        return datetime(
            int(d[3]), int(d[2]), int(d[1]), int(t[1]), int(t[2]), int(t[3] or 0), tzinfo=BRUSSELS
        )
    except ValueError:
        raise ReconcileError(
            f"line {line}: {column} {date_text.strip()} {time_text.strip()} is not a date and time"
        ) from None


def _utc_ms(local: datetime, fold: int) -> int:
    return round(local.replace(fold=fold).timestamp() * 1000)


def _exists(local: datetime) -> bool:
    """False for a local time the spring clock change skips (02:00-03:00 on its day)."""
    back = datetime.fromtimestamp(local.timestamp(), UTC).astimezone(BRUSSELS)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def _volume(text: str, status: str, per_unit: int, line: int) -> int:
    value = text.strip()
    if not value:
        if status.strip().lower() in _NO_CONSUMPTION:
            return 0
        raise ReconcileError(
            f"line {line}: no volume (status {status.strip()[:40]!r}): the operator's figure is "
            "missing for this quarter-hour"
        )
    plain = value.replace(".", "").replace(",", ".") if "," in value else value  # 1.234,5
    return energy_mwh(plain, per_unit, line, "volume")


def parse_fluvius_csv(text: str) -> OperatorFile:
    """A Fluvius export (see the module doc); every mistake a :class:`ReconcileError`."""
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise ReconcileError("the file is not text (it holds NUL bytes)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    try:
        header = next(reader, None) or []
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            column = _COLUMNS.get(_key(name))
            if column is not None and column not in index:
                index[column] = i
        missing = [c for c in (*_REQUIRED, "volume", "unit", "status") if c not in index]
        if missing:
            raise ReconcileError(f"line 1: not a Fluvius export: no {missing[0]} column")
        points: dict[tuple[str, int], list[int]] = {}  # (ean, start_ms) -> [line, end, imp, exp]
        seen: set[tuple[str, str, int]] = set()
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) < len(header) - 1:  # the English layout ends in an empty column
                raise ReconcileError(
                    f"line {line}: {len(fields)} fields where the header has {len(header)}"
                )
            if len(seen) >= MAX_ROWS:
                raise ReconcileError(f"more than {MAX_ROWS} rows: split the file")

            def field(name: str, fields: list[str] = fields) -> str:
                i = index[name]
                return fields[i] if i < len(fields) else ""

            ean = field("ean").strip().removeprefix("=").strip('"').strip()
            if not ean:
                raise ReconcileError(f"line {line}: the EAN is empty")
            register = field("register").strip()
            kind = register.lower().split(" ")[0]
            if kind not in _IMPORT + _EXPORT:
                raise ReconcileError(
                    f"line {line}: register {register[:40]!r} is neither offtake (Afname) nor "
                    "injection (Injectie)"
                )
            unit = field("unit").strip().lower()
            if unit not in _UNITS:
                raise ReconcileError(
                    f"line {line}: the unit is {field('unit').strip()[:20]!r}; this reads an "
                    "electricity meter's kWh (a gas meter's export has no place here)"
                )
            start_local = _local(field("from_date"), field("from_time"), line, "start")
            end_local = _local(field("until_date"), field("until_time"), line, "end")
            if not _exists(start_local):
                raise ReconcileError(
                    f"line {line}: {start_local:%d-%m-%Y %H:%M} does not exist in Belgian time "
                    "(the clocks went forward)"
                )
            start = _utc_ms(start_local, 0)
            if (ean, register, start) in seen:  # the autumn hour: its second pass
                later = _utc_ms(start_local, 1)
                if later == start or (ean, register, later) in seen:
                    raise ReconcileError(
                        f"line {line}: {register} of {ean} has the quarter-hour from "
                        f"{start_local:%d-%m-%Y %H:%M} already"
                    )
                start = later
            wall_ms = round(
                (end_local.replace(tzinfo=None) - start_local.replace(tzinfo=None)).total_seconds()
                * 1000
            )
            ends = [start + wall_ms, *sorted({_utc_ms(end_local, 0), _utc_ms(end_local, 1)})]
            end = next((e for e in ends if e - start in STEPS_MS), ends[0])
            seen.add((ean, register, start))
            mwh = _volume(field("volume"), field("status"), _UNITS[unit], line)
            slot = points.setdefault((ean, start), [line, end, 0, 0])
            if slot[1] != end:
                raise ReconcileError(f"line {line}: the interval's end differs between registers")
            slot[2 if kind in _IMPORT else 3] += mwh
    except csv.Error as exc:
        raise ReconcileError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    rows = [
        OperatorRow(line, ean, ean, start, end, imp, exp, None)
        for (ean, start), (line, end, imp, exp) in sorted(points.items(), key=lambda kv: kv[1][0])
    ]
    return finish(rows)
