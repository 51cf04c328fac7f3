"""Grid prices per interval from a file the operator fetched: parsed, checked, resampled. Pure.

Two formats, both turned into one :class:`PriceSeries` (UTC epoch ms intervals, exact
:class:`~decimal.Decimal` price per kWh in the file's currency):

**Generic CSV** (``--format csv``): a header ``start,end,price`` (more columns are ignored),
one interval a row, times ISO 8601 *with* an offset or ``Z`` (a time without one is refused:
in a clock-change night it could be either of two hours). The currency and unit are stated
once, either in the price column's header or in a comment line before the header::

    # unit: EUR/MWh
    start,end,price
    2026-01-01T00:00:00+01:00,2026-01-01T01:00:00+01:00,85.20

    start,end,price [EUR/kWh]
    2026-01-01T00:00Z,2026-01-01T00:15Z,0.0852

or as two columns ``currency`` and ``unit`` holding the same values on every row. The unit is
``MWh`` or ``kWh``; the currency three capital letters. Lines starting with ``#`` and blank lines
are skipped.

**ENTSO-E day-ahead prices** (``--format entsoe``), as the transparency platform exports them:

- the CSV download of "Day-ahead Prices": a column ``MTU (CET/CEST)`` (or ``(UTC)``,
  ``(EET/EEST)``, ``(WET/WEST)``) of local ranges ``01.01.2026 00:00 - 01.01.2026 01:00`` and a
  column ``Day-ahead Price [EUR/MWh]`` (or ``(EUR/MWh)``), hourly or 15-minute; other columns
  are ignored. In the autumn night the clocks go back, the repeated hour's ranges appear twice:
  the first time they are summer time, the second winter time (a range may also say so itself,
  ``26.10.2025 02:00 (CEST) - 26.10.2025 02:15 (CEST)``). In the spring night the skipped hour
  does not exist: a row for it without a price (``-``, ``n/e`` or empty) is left out, one with a
  price is an error.
- the XML ``Publication_MarketDocument`` (document type A44) of its API: each ``TimeSeries`` has
  ``currency_Unit.name`` and ``price_Measure_Unit.name``, each ``Period`` its UTC
  ``timeInterval`` and ``resolution`` (``PT15M``, ``PT30M``, ``PT60M``) and ``Point``\\ s by
  ``position`` (1 = the first interval) with ``price.amount``. Under ``curveType`` A03 a point
  left out repeats the price before it; otherwise a point left out is a missing interval.

Whatever the format, the intervals must follow each other without a gap or an overlap: a missing
hour, a duplicate or overlapping interval, a cell that is not a number, a price over
:data:`MAX_ABS_PRICE_PER_MWH` or a file that is not the format it was given as is a
:class:`PriceError` whose one-sentence message names the line (or the XML point), never a
traceback and never a silent zero.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final, Literal
from zoneinfo import ZoneInfo

from protocol.timeparse import parse_iso_ms

Format = Literal["csv", "entsoe"]
FORMATS: Final[tuple[Format, ...]] = ("csv", "entsoe")

MAX_INTERVALS: Final = 4 * 24 * 366 * 3  # three years of quarter hours
MAX_ABS_PRICE_PER_MWH: Final = Decimal(100_000)  # SDAC's limits are -500 and 4,000 EUR/MWh
MIN_MS: Final = 946_684_800_000  # 2000-01-01
MAX_MS: Final = 4_102_444_800_000  # 2100-01-01
_UNITS_PER_KWH: Final = {"mwh": Decimal(1000), "kwh": Decimal(1)}
_MTU_ZONES: Final = {
    "CET/CEST": "Europe/Brussels",
    "UTC": "UTC",
    "EET/EEST": "Europe/Helsinki",
    "WET/WEST": "Europe/Lisbon",
}
_MTU_MINUTES: Final = frozenset({15, 30, 60})
_NO_PRICE: Final = frozenset({"", "-", "n/e", "n/a", "na"})
_UNIT_RE: Final = re.compile(r"^\s*([A-Za-z]{3})\s*/\s*(MWh|kWh)\s*$", re.IGNORECASE)
_BRACKETED_RE: Final = re.compile(r"[\[(]\s*([^\])]*?)\s*[\])]")
_COMMENT_UNIT_RE: Final = re.compile(
    r"^#\s*(?:unit|price|prices|currency)\s*[:=]\s*(.+?)\s*$", re.IGNORECASE
)
_LOCAL_TIME: Final = (
    r"(\d{2})\.(\d{2})\.(\d{4})\s+(\d{2}):(\d{2})(?::00)?\s*(?:\(\s*([A-Z]{2,5})\s*\))?"
)
_MTU_RE: Final = re.compile(rf"^\s*{_LOCAL_TIME}\s*-\s*{_LOCAL_TIME}\s*$")


class PriceError(ValueError):
    """A price file or request that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class PriceInterval:
    """The grid's price for ``[start_ms, end_ms)`` (UTC epoch ms), per kWh in the currency."""

    start_ms: int
    end_ms: int
    price_per_kwh: Decimal


@dataclass(frozen=True, slots=True)
class PriceSeries:
    """Consecutive price intervals (no gap, no overlap, in time order) in one currency."""

    currency: str
    intervals: tuple[PriceInterval, ...]

    @property
    def start_ms(self) -> int:
        return self.intervals[0].start_ms

    @property
    def end_ms(self) -> int:
        return self.intervals[-1].end_ms


def utc_text(ms: int) -> str:
    """``2026-01-01T00:00Z``: how errors and ``prices show`` write a UTC time."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


# -- shared checks ---------------------------------------------------------------------------


def _unit(text: str, where: str) -> tuple[str, Decimal]:
    """(currency, divisor to per kWh) from ``EUR/MWh``-like text."""
    match = _UNIT_RE.match(text)
    if match is None:
        raise PriceError(f"{where}: unit {text!r} is not a currency per MWh or kWh, like EUR/MWh")
    return match.group(1).upper(), _UNITS_PER_KWH[match.group(2).lower()]


def _price(cell: str, per: Decimal, where: str) -> Decimal:
    text = cell.strip()
    if text.lower() in _NO_PRICE:
        raise PriceError(f"{where}: the price is missing")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PriceError(f"{where}: price {text[:40]!r} is not a number") from None
    if not value.is_finite():
        raise PriceError(f"{where}: price {text[:40]!r} is not a finite number")
    if abs(value * (Decimal(1000) / per)) > MAX_ABS_PRICE_PER_MWH:
        raise PriceError(
            f"{where}: price {text[:40]} is beyond ±{MAX_ABS_PRICE_PER_MWH} per MWh; "
            "is the unit right?"
        )
    return value / per


class _Builder:
    """Collects intervals in file order and refuses gaps, overlaps and duplicates."""

    def __init__(self) -> None:
        self.intervals: list[PriceInterval] = []
        self.where: list[str] = []

    @property
    def last_end_ms(self) -> int | None:
        return self.intervals[-1].end_ms if self.intervals else None

    def add(self, start_ms: int, end_ms: int, price_per_kwh: Decimal, where: str) -> None:
        if not (MIN_MS <= start_ms < MAX_MS and MIN_MS < end_ms <= MAX_MS):
            raise PriceError(f"{where}: the interval is not between 2000 and 2100")
        if end_ms <= start_ms:
            raise PriceError(f"{where}: the interval ends before it starts")
        if len(self.intervals) >= MAX_INTERVALS:
            raise PriceError(f"{where}: more than {MAX_INTERVALS} intervals in one file")
        if self.intervals:
            before = self.intervals[-1]
            if start_ms < before.end_ms:
                kind = (
                    "repeats"
                    if (start_ms, end_ms) == (before.start_ms, before.end_ms)
                    else "overlaps"
                )
                raise PriceError(
                    f"{where}: the interval {utc_text(start_ms)} to {utc_text(end_ms)} {kind} "
                    f"the one at {self.where[-1]} ({utc_text(before.start_ms)} to "
                    f"{utc_text(before.end_ms)})"
                )
            if start_ms > before.end_ms:
                raise PriceError(
                    f"{where}: prices from {utc_text(before.end_ms)} to {utc_text(start_ms)} "
                    f"are missing (the interval before ends at {self.where[-1]})"
                )
        self.intervals.append(PriceInterval(start_ms, end_ms, price_per_kwh))
        self.where.append(where)

    def series(self, currency: str | None) -> PriceSeries:
        if not self.intervals:
            raise PriceError("the file holds no prices")
        assert currency is not None  # a price was read, so its unit was
        return PriceSeries(currency, tuple(self.intervals))


def _rows(text: str) -> list[list[str]]:
    if "\x00" in text:
        raise PriceError("the file is binary, not CSV text")
    try:
        return list(csv.reader(io.StringIO(text, newline=None)))
    except csv.Error as exc:
        raise PriceError(f"not CSV: {exc}") from None


# -- generic CSV -----------------------------------------------------------------------------


def parse_price_csv(text: str) -> PriceSeries:
    """Parse the generic ``start,end,price`` CSV (see the module docstring)."""
    rows = _rows(text)
    comment_unit: tuple[str, Decimal] | None = None
    header_at: int | None = None
    for i, row in enumerate(rows):
        first = row[0].strip() if row else ""
        if not any(c.strip() for c in row):
            continue
        if first.startswith("#"):
            match = _COMMENT_UNIT_RE.match(",".join(row).strip())
            if match is not None:
                comment_unit = _unit(match.group(1), f"line {i + 1}")
            continue
        header_at = i
        break
    if header_at is None:
        raise PriceError("no header row start,end,price")
    names = [c.strip().lower() for c in rows[header_at]]
    bare = [_BRACKETED_RE.sub("", n).strip() for n in names]
    for needed in ("start", "end", "price"):
        if needed not in bare:
            raise PriceError(
                f"line {header_at + 1}: no {needed!r} column; the header must name start,end,price"
            )
    col_start, col_end, col_price = (bare.index(n) for n in ("start", "end", "price"))
    unit: tuple[str, Decimal] | None = comment_unit
    in_header = _BRACKETED_RE.search(rows[header_at][col_price])
    if in_header is not None:
        header_unit = _unit(in_header.group(1), f"line {header_at + 1}")
        if comment_unit is not None and comment_unit != header_unit:
            raise PriceError(
                f"line {header_at + 1}: the price column's unit contradicts the comment's"
            )
        unit = header_unit
    per_row = "currency" in bare and "unit" in bare
    if unit is None and not per_row:
        raise PriceError(
            "the currency and unit are not stated: write 'price [EUR/MWh]' in the header, a "
            "comment '# unit: EUR/MWh' before it, or currency and unit columns"
        )
    needed_cols = max(col_start, col_end, col_price) + 1
    if per_row:
        needed_cols = max(needed_cols, bare.index("currency") + 1, bare.index("unit") + 1)
    built = _Builder()
    for n, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        where = f"line {n}"
        if not any(c.strip() for c in row) or row[0].strip().startswith("#"):
            continue
        if len(row) < needed_cols:
            raise PriceError(f"{where}: {len(row)} cells, expected at least {needed_cols}")
        if per_row:
            cur_unit = f"{row[bare.index('currency')].strip()}/{row[bare.index('unit')].strip()}"
            row_unit = _unit(cur_unit, where)
            if unit is not None and row_unit[0] != unit[0]:
                raise PriceError(f"{where}: currency {row_unit[0]} differs from {unit[0]} above")
        else:
            assert unit is not None
            row_unit = unit
        currency_per = row_unit
        if unit is None:
            unit = row_unit
        start_ms = _csv_time(row[col_start], where, "start")
        end_ms = _csv_time(row[col_end], where, "end")
        built.add(start_ms, end_ms, _price(row[col_price], currency_per[1], where), where)
    return built.series(unit[0] if unit else None)


def _csv_time(cell: str, where: str, name: str) -> int:
    text = cell.strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PriceError(f"{where}: {name} {text[:40]!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise PriceError(
            f"{where}: {name} {text[:40]!r} has no UTC offset (write Z or +01:00, say)"
        )
    try:
        return parse_iso_ms(text, naive="utc")
    except ValueError:
        raise PriceError(f"{where}: {name} {text[:40]!r} is not a time this hub can use") from None


# -- ENTSO-E CSV -----------------------------------------------------------------------------


def _local_ms(
    groups: Sequence[str | None], zone: ZoneInfo, prev_end_ms: int | None, where: str
) -> int | None:
    """UTC ms of a local time (None if it does not exist: the spring night's skipped hour).

    In the autumn night's repeated hour the time is summer time unless the file labels it
    otherwise or summer time would go back before the interval before ends (the second pass).
    """
    day, month, year, hour, minute, label = groups
    try:
        naive = datetime(
            int(year or 0), int(month or 0), int(day or 0), int(hour or 0), int(minute or 0)
        )
    except ValueError:
        raise PriceError(
            f"{where}: {day}.{month}.{year} {hour}:{minute} is not a date and time"
        ) from None
    if not 2000 <= naive.year < 2100:
        raise PriceError(
            f"{where}: {day}.{month}.{year} {hour}:{minute} is not between 2000 and 2100"
        )
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        return None
    names = {first.tzname(), second.tzname()}
    if label is not None and label not in names:
        raise PriceError(f"{where}: {naive:%d.%m.%Y %H:%M} is not {label} in {zone.key}")
    first_ms = round(first.timestamp() * 1000)
    second_ms = round(second.timestamp() * 1000)
    if first_ms == second_ms:
        return first_ms
    if label is not None:
        return first_ms if first.tzname() == label else second_ms
    return second_ms if prev_end_ms is not None and first_ms < prev_end_ms else first_ms


def parse_entsoe_csv(text: str) -> PriceSeries:
    """Parse the transparency platform's CSV download of day-ahead prices."""
    rows = _rows(text)
    header_at = next(
        (i for i, row in enumerate(rows) if any(c.strip().upper().startswith("MTU") for c in row)),
        None,
    )
    if header_at is None:
        raise PriceError("not an ENTSO-E day-ahead prices export: no 'MTU (CET/CEST)' column")
    header = [c.strip() for c in rows[header_at]]
    where_header = f"line {header_at + 1}"
    col_mtu = next(i for i, c in enumerate(header) if c.upper().startswith("MTU"))
    mtu_zone = _BRACKETED_RE.search(header[col_mtu])
    zone_name = _MTU_ZONES.get(mtu_zone.group(1).upper() if mtu_zone else "")
    if zone_name is None:
        raise PriceError(
            f"{where_header}: column {header[col_mtu]!r} names no time zone this hub knows "
            f"({', '.join(_MTU_ZONES)})"
        )
    zone = ZoneInfo(zone_name)
    col_price = next(
        (i for i, c in enumerate(header) if c.lower().startswith("day-ahead price")), None
    )
    if col_price is None:
        raise PriceError(f"{where_header}: no 'Day-ahead Price [EUR/MWh]' column")
    in_header = _BRACKETED_RE.search(header[col_price])
    if in_header is None:
        raise PriceError(f"{where_header}: the day-ahead price column states no unit")
    currency, per = _unit(in_header.group(1), where_header)
    built = _Builder()
    for n, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        where = f"line {n}"
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(col_mtu, col_price):
            raise PriceError(
                f"{where}: {len(row)} cells, expected at least {max(col_mtu, col_price) + 1}"
            )
        match = _MTU_RE.match(row[col_mtu])
        if match is None:
            raise PriceError(
                f"{where}: {row[col_mtu].strip()[:60]!r} is not a range like "
                "'01.01.2026 00:00 - 01.01.2026 01:00'"
            )
        g = match.groups()
        start_ms = _local_ms(g[:6], zone, built.last_end_ms, where)
        if start_ms is None:
            if row[col_price].strip().lower() in _NO_PRICE:
                continue  # the spring night's skipped hour, listed without a price
            raise PriceError(
                f"{where}: {row[col_mtu].strip()} starts in the hour the clocks skip, "
                "yet has a price"
            )
        if g[11] is not None:  # the end says its own zone: convert it as it is
            end_ms = _local_ms(g[6:], zone, start_ms, where)
            if end_ms is None:
                raise PriceError(f"{where}: the range's end is in the hour the clocks skip")
            minutes = (end_ms - start_ms) / 60_000
        else:  # the naive length: "02:00 - 03:00" is an hour in either pass of the repeat
            naive_start = datetime(int(g[2]), int(g[1]), int(g[0]), int(g[3]), int(g[4]))
            try:
                naive_end = datetime(int(g[8]), int(g[7]), int(g[6]), int(g[9]), int(g[10]))
            except ValueError:
                raise PriceError(f"{where}: the range's end is not a date and time") from None
            minutes = (naive_end - naive_start) / timedelta(minutes=1)
        if minutes not in _MTU_MINUTES:
            raise PriceError(
                f"{where}: the range {row[col_mtu].strip()} is not 15, 30 or 60 minutes long"
            )
        price = _price(row[col_price], per, where)
        built.add(start_ms, start_ms + int(minutes) * 60_000, price, where)
    return built.series(currency)


# -- ENTSO-E XML -----------------------------------------------------------------------------

_RESOLUTIONS: Final = {"PT15M": 15, "PT30M": 30, "PT60M": 60, "PT1H": 60}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: ET.Element, path: str, where: str) -> str:
    node: ET.Element | None = el
    for part in path.split("/"):
        node = _child(node, part) if node is not None else None
    if node is None or not (node.text or "").strip():
        raise PriceError(f"{where}: no {path}")
    return (node.text or "").strip()


def parse_entsoe_xml(text: str) -> PriceSeries:
    """Parse the transparency platform API's ``Publication_MarketDocument`` of day-ahead prices."""
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise PriceError("the XML declares a DOCTYPE or entities, which a price file never needs")
    try:
        # No DOCTYPE, so no entities to expand (checked above): what defusedxml would refuse.
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise PriceError(f"not XML: {exc}") from None
    if _local(root.tag) == "Acknowledgement_MarketDocument":
        reasons = [
            (t.text or "").strip()
            for r in _children(root, "Reason")
            for t in _children(r, "text")
            if (t.text or "").strip()
        ]
        said = f": {reasons[0][:200]}" if reasons else ""
        raise PriceError(f"the file is the ENTSO-E API's acknowledgement, not prices{said}")
    if _local(root.tag) != "Publication_MarketDocument":
        raise PriceError(f"not a Publication_MarketDocument but {_local(root.tag)[:60]!r}")
    points: list[tuple[int, int, Decimal, str]] = []
    currency: str | None = None
    for s, series in enumerate(_children(root, "TimeSeries"), start=1):
        where = f"TimeSeries {s}"
        cur = _text(series, "currency_Unit.name", where)
        unit = _text(series, "price_Measure_Unit.name", where)
        cur, per = _unit(f"{cur}/{unit}", where)
        if currency is not None and cur != currency:
            raise PriceError(f"{where}: currency {cur} differs from {currency} before it")
        currency = cur
        curve = _child(series, "curveType")
        fill = curve is not None and (curve.text or "").strip() == "A03"
        for p, period in enumerate(_children(series, "Period"), start=1):
            pw = f"{where}, Period {p}"
            start_ms = _xml_time(_text(period, "timeInterval/start", pw), pw)
            end_ms = _xml_time(_text(period, "timeInterval/end", pw), pw)
            res = _text(period, "resolution", pw)
            if res not in _RESOLUTIONS:
                raise PriceError(f"{pw}: resolution {res[:20]!r} is not PT15M, PT30M or PT60M")
            step_ms = _RESOLUTIONS[res] * 60_000
            if end_ms <= start_ms or (end_ms - start_ms) % step_ms:
                raise PriceError(f"{pw}: the timeInterval is not a whole number of {res}")
            count = (end_ms - start_ms) // step_ms
            if count > MAX_INTERVALS:
                raise PriceError(f"{pw}: more than {MAX_INTERVALS} intervals")
            given: dict[int, Decimal] = {}
            for point in _children(period, "Point"):
                pos_text = _text(point, "position", pw)
                if not pos_text.isdigit() or not 1 <= int(pos_text) <= count:
                    raise PriceError(f"{pw}: Point position {pos_text[:20]!r} is not 1 to {count}")
                pos = int(pos_text)
                if pos in given:
                    raise PriceError(f"{pw}: Point position {pos} appears twice")
                given[pos] = _price(
                    _text(point, "price.amount", f"{pw}, position {pos}"),
                    per,
                    f"{pw}, position {pos}",
                )
            last: Decimal | None = None
            for pos in range(1, count + 1):
                pw_pos = f"{pw}, position {pos}"
                if pos in given:
                    last = given[pos]
                elif not fill or last is None:
                    raise PriceError(f"{pw_pos}: no Point, so the price is missing")
                assert last is not None
                t = start_ms + (pos - 1) * step_ms
                points.append((t, t + step_ms, last, pw_pos))
    if not points:
        raise PriceError("the document holds no TimeSeries with prices")
    built = _Builder()
    for start, end, price, where in sorted(points, key=lambda x: (x[0], x[1])):
        built.add(start, end, price, where)
    return built.series(currency)


def _xml_time(text: str, where: str) -> int:
    try:
        return parse_iso_ms(text, naive="utc")
    except ValueError:
        raise PriceError(f"{where}: {text[:40]!r} is not an ISO 8601 time") from None


# -- files -----------------------------------------------------------------------------------


def detect_format(text: str) -> Format:
    """``entsoe`` for XML or a CSV with an ``MTU`` column; ``csv`` otherwise."""
    head = text.lstrip()[:4096]
    if head.startswith("<") or re.search(r"^\W*MTU\b", head, re.IGNORECASE | re.MULTILINE):
        return "entsoe"
    return "csv"


def parse_prices(text: str, fmt: Format | None = None) -> PriceSeries:
    """Parse price file text in ``fmt`` (detected from the text when None)."""
    chosen = fmt or detect_format(text)
    if chosen == "csv":
        return parse_price_csv(text)
    if text.lstrip().startswith("<"):
        return parse_entsoe_xml(text.lstrip())
    return parse_entsoe_csv(text)


def decode(raw: bytes) -> str:
    """File bytes as text: UTF-8 (with or without a BOM) or UTF-16 with a BOM."""
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PriceError("the file is not UTF-8 text") from None


# -- prices per step -------------------------------------------------------------------------


def price_steps(
    intervals: Sequence[PriceInterval],
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    fallback_per_kwh: Decimal | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Decimal]:
    """The price of each step ``[t, t + step_ms)`` from ``start_ms`` to ``end_ms``.

    ``intervals`` are consecutive-or-gapped, in time order, not overlapping. A step inside one
    interval gets its price; a step spanning several gets their time-weighted mean. A step not
    wholly covered raises :class:`PriceError` naming the first uncovered time, unless
    ``fallback_per_kwh`` is given: then uncovered time is priced at it (the operator's explicit
    choice, e.g. the scheme's flat import tariff; never zero by default).
    """
    if step_ms <= 0 or (end_ms - start_ms) % step_ms:
        raise PriceError("the range is not a whole number of steps")
    out: list[Decimal] = []
    i = 0
    n = len(intervals)
    for t in range(start_ms, end_ms, step_ms):
        t_end = t + step_ms
        while i < n and intervals[i].end_ms <= t:
            i += 1
        total = Decimal(0)
        cursor = t
        j = i
        while cursor < t_end:
            if j < n and intervals[j].start_ms <= cursor:
                upto = min(intervals[j].end_ms, t_end)
                total += intervals[j].price_per_kwh * (upto - cursor)
                cursor = upto
                j += 1
                continue
            gap_end = min(intervals[j].start_ms, t_end) if j < n else t_end
            if fallback_per_kwh is None:
                raise PriceError(
                    f"no price for {utc_text(cursor)} to {utc_text(gap_end)}: import prices "
                    "covering it, or give a fallback price explicitly"
                )
            total += fallback_per_kwh * (gap_end - cursor)
            cursor = gap_end
        out.append(total / step_ms)
        if progress is not None:
            progress(1)
    return out
