"""The cooperative's settlement scheme: mechanism, tariffs, calendar, currency; read from TOML.

Example ``settlement.toml``::

    timezone = "Europe/Amsterdam"   # months, days and time-of-use windows are local time
    currency = "EUR"                # ISO 4217; minor_unit = 2 means cents
    minor_unit = 2
    mechanism = "sdr"               # sdr (default), mmr or bill-sharing
    min_group = 5                   # k: community figures only over at least k homes
    max_gap_minutes = 15            # counter samples further apart make an interval "estimated"

    [import_tariff]                 # what the grid charges per kWh
    price_per_kwh = "0.30"          # strings keep prices exactly as written; numbers work too

    [[import_tariff.windows]]       # optional time-of-use windows override the base price
    days = ["mon", "tue", "wed", "thu", "fri"]
    from = "17:00"                  # local time, on a quarter hour
    to = "21:00"                    # "24:00" is the end of the day
    price_per_kwh = "0.38"

    [export_tariff]                 # what the grid pays per kWh; windows work the same way
    price_per_kwh = "0.08"

    [allocation]                    # optional: the regulator's allocation key
    rule = "fixed"                  # pro-rata (to consumption) or fixed shares
    shares = { a = "25", b = "25", c = "25", d = "25" }   # percent, adding up to 100
    rounds = 2                      # fixed: what a member cannot use goes round again
    caps_wh = { d = 250 }           # optional: at most this much per member per interval
    price_per_kwh = "0.12"          # optional community price; default: the mechanism's price
    interval_minutes = 15           # or 60: share each hour's totals (windows then on the hour)

Without ``[allocation]`` shared energy is split pro rata to consumption, as it always was. With
it, the key (:mod:`hub.settlement.allocation`; priority groups are ``[[allocation.groups]]``)
decides each member's share of the community's export per 15-minute interval, and the shared
energy changes hands at ``allocation.price_per_kwh`` if given, otherwise at the price
``mechanism`` sets. A community price must lie between the export and import prices at every
time, like every mechanism's, so no member pays more than on grid tariffs alone.

Prices are per kWh in the currency's major unit, with at most 6 decimals, and the export price
may never exceed the import price at the same time (every mechanism prices shared energy
between the two). Every mistake is a :class:`ConfigError` naming the key.

Dynamic import prices: instead of a price and windows, the import tariff may say::

    [import_tariff]
    prices = "imported"             # each interval at the grid price `coopwatt-hub prices import`
    network_per_kwh = "0.11"        # stored; optional: added to every interval's price (network
                                    # charges, levies, the supplier's margin), default 0

Each 15-minute interval's grid import then costs the stored price for that interval plus
``network_per_kwh`` (under an hourly allocation key, the hour's time-weighted mean price). The
stored prices must be in the scheme's currency and cover every interval settled: a missing one
stops ``settle`` before anything is written, naming it; there is no fallback, never a silent
zero. Day-ahead prices can be negative, so the import price may be too (a member importing
then earns). The export tariff stays as written. In an interval whose import price falls below
the export price no price lies between the two, so nothing is shared: every member trades
with the grid alone, and no member pays more than on the grid's prices. A community price
(``allocation.price_per_kwh``) is held inside each interval's export and import prices. The
fingerprint names ``prices = "imported"`` and the network charge, not the stored prices: when
prices are imported again, settling again resettles an open month and adjusts a closed one as
it does for late readings. Schemes without ``prices`` are read, priced and fingerprinted as
before.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.settlement.allocation import AllocationKey, parse_key
from protocol.config_tables import ConfigError, Table, load, toml_type

INTERVAL_MS: Final = 15 * 60 * 1000
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_TIME_RE: Final = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")
_MAX_PRICE: Final = Decimal(1000)
PRICE_PLACES: Final = 6
IMPORTED: Final = "imported"


class Mechanism(StrEnum):
    """How energy matched inside the community is priced (see :mod:`hub.settlement.pricing`)."""

    SDR = "sdr"
    MMR = "mmr"
    BILL_SHARING = "bill-sharing"


@dataclass(frozen=True, slots=True)
class Window:
    """A time-of-use window: on ``days`` (0 = Monday), local minutes [start, end) of the day."""

    days: frozenset[int]
    start_min: int
    end_min: int
    price_per_kwh: Decimal

    def covers(self, weekday: int, minute: int) -> bool:
        return weekday in self.days and self.start_min <= minute < self.end_min


@dataclass(frozen=True, slots=True)
class Tariff:
    """A grid tariff per kWh: a base price, overridden by the first window that covers a time.

    An ``imported`` tariff has no price of its own: each interval costs the grid price stored
    for it (:mod:`hub.settlement.price_store`) plus ``network_per_kwh``; :meth:`price_at`
    refuses it rather than answer a number the member never paid.
    """

    price_per_kwh: Decimal
    windows: tuple[Window, ...] = ()
    imported: bool = False
    network_per_kwh: Decimal = Decimal(0)

    def price_at(self, weekday: int, minute: int) -> Decimal:
        """Price per kWh at local ``weekday`` (0 = Monday) and ``minute`` of the day."""
        if self.imported:
            raise ValueError("an imported tariff's prices are the hub's stored grid prices")
        for w in self.windows:
            if w.covers(weekday, minute):
                return w.price_per_kwh
        return self.price_per_kwh

    @property
    def flat(self) -> bool:
        return not self.windows

    def to_json(self) -> dict[str, Any]:
        if self.imported:
            return {"prices": IMPORTED, "network_per_kwh": str(self.network_per_kwh)}
        return {
            "price_per_kwh": str(self.price_per_kwh),
            "windows": [
                {
                    "days": [DAYS[d] for d in sorted(w.days)],
                    "from": _hhmm(w.start_min),
                    "to": _hhmm(w.end_min),
                    "price_per_kwh": str(w.price_per_kwh),
                }
                for w in self.windows
            ],
        }


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class Scheme:
    """A checked settlement scheme. Build with :func:`parse_scheme` or :func:`load_scheme`."""

    timezone: str
    currency: str
    minor_unit: int
    mechanism: Mechanism
    import_tariff: Tariff
    export_tariff: Tariff
    min_group: int = 5
    max_gap_minutes: int = 15
    allocation: AllocationKey | None = None
    community_price: Decimal | None = None  # per kWh of allocated energy; None: the mechanism's

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def max_gap_ms(self) -> int:
        return self.max_gap_minutes * 60_000

    def local(self, ts_ms: int) -> datetime:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self.tz)

    @property
    def imported_prices(self) -> bool:
        """Whether grid import is priced at the stored grid prices (``prices = "imported"``)."""
        return self.import_tariff.imported

    def prices_at(self, ts_ms: int) -> tuple[Decimal, Decimal]:
        """(import, export) price per kWh for the interval starting at ``ts_ms``.

        Raises ValueError under imported prices: the engine reads those from the store.
        """
        t = self.local(ts_ms)
        weekday, minute = t.weekday(), t.hour * 60 + t.minute
        return (
            self.import_tariff.price_at(weekday, minute),
            self.export_tariff.price_at(weekday, minute),
        )

    def day_start_ms(self, day: date) -> int:
        """UTC epoch ms of local midnight starting ``day`` (DST days are 23 or 25 hours)."""
        return int(datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp() * 1000)

    def day_of(self, ts_ms: int) -> date:
        return self.local(ts_ms).date()

    def month_days(self, period: str) -> list[date]:
        """Local days of month ``period`` (``YYYY-MM``)."""
        first = parse_period(period)
        nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        return [first + timedelta(days=i) for i in range((nxt - first).days)]

    def month_bounds_ms(self, period: str) -> tuple[int, int]:
        days = self.month_days(period)
        return self.day_start_ms(days[0]), self.day_start_ms(days[-1] + timedelta(days=1))

    @property
    def minor_per_unit(self) -> int:
        return int(10**self.minor_unit)

    def to_json(self) -> str:
        """A canonical JSON form, stored with every settlement so statements are reproducible."""
        data: dict[str, Any] = {
            "timezone": self.timezone,
            "currency": self.currency,
            "minor_unit": self.minor_unit,
            "mechanism": self.mechanism.value,
            "min_group": self.min_group,
            "max_gap_minutes": self.max_gap_minutes,
            "import_tariff": self.import_tariff.to_json(),
            "export_tariff": self.export_tariff.to_json(),
        }
        if self.allocation is not None:  # left out otherwise: older schemes keep their form
            data["allocation"] = self.allocation.to_json()
            if self.community_price is not None:
                data["allocation"]["price_per_kwh"] = str(self.community_price)
        return json.dumps(
            data,
            sort_keys=True,
            separators=(",", ":"),
        )

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of what prices a day: the scheme without ``min_group``, prices written
        in their shortest form, so ``"0.3"`` and ``"0.30"`` are the same scheme.

        Two schemes with one fingerprint settle any data identically; a closed month is never
        priced again under a scheme with another fingerprint unless asked (``settle --reprice``).
        ``min_group`` is left out because it only withholds community figures.
        """
        data = json.loads(self.to_json())
        del data["min_group"]
        for key in ("import_tariff", "export_tariff"):
            tariff = data[key]
            if "network_per_kwh" in tariff:
                tariff["network_per_kwh"] = _plain(tariff["network_per_kwh"])
                continue
            tariff["price_per_kwh"] = _plain(tariff["price_per_kwh"])
            for w in tariff["windows"]:
                w["price_per_kwh"] = _plain(w["price_per_kwh"])
        if "price_per_kwh" in data.get("allocation", {}):
            data["allocation"]["price_per_kwh"] = _plain(data["allocation"]["price_per_kwh"])
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def short_id(self) -> str:
        """The first 8 hex digits of :attr:`fingerprint`, for people."""
        return self.fingerprint[:8]

    @property
    def label(self) -> str:
        """``SDR (scheme 1a2b3c4d)``: the mechanism and which scheme it is (and the allocation
        key, when there is one: ``SDR, key fixed (2 rounds) (scheme ...)``)."""
        key = "" if self.allocation is None else f", key {self.allocation.label}"
        return f"{self.mechanism.value.upper()}{key} (scheme {self.short_id})"

    @classmethod
    def from_json(cls, text: str) -> Scheme:
        """The inverse of :meth:`to_json` (the stored form uses the TOML keys)."""
        data = json.loads(text)
        for key in ("import_tariff", "export_tariff"):
            t = data[key]
            if "windows" in t:
                t["windows"] = [dict(w) for w in t["windows"]]
        return parse_scheme(data)


def _plain(price: str) -> str:
    """A price in its shortest exact form: ``0.30`` -> ``0.3``, ``100`` stays ``100``."""
    return format(Decimal(price).normalize(), "f")


def parse_period(period: str) -> date:
    """``YYYY-MM`` -> the first day of that month; ValueError with a plain message otherwise."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", period)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2000:
        raise ValueError(f"month {period!r} is not YYYY-MM")
    return date(int(m.group(1)), int(m.group(2)), 1)


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _price(table: Table, key: str) -> Decimal:
    raw = table._value(key, True)  # Table has no public accessor for a raw value
    where = f"{table.prefix}{key}"
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f'{where} must be a price such as "0.30", got {toml_type(raw)}')
    try:
        price = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ConfigError(f'{where} must be a price such as "0.30"') from None
    if not price.is_finite() or not 0 <= price <= _MAX_PRICE:
        raise ConfigError(f"{where} must be from 0 to {_MAX_PRICE} per kWh")
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > PRICE_PLACES:
        raise ConfigError(f"{where} has more than {PRICE_PLACES} decimals")
    return price


def _minute(table: Table, key: str) -> int:
    text = table.required_text(key)
    m = _TIME_RE.fullmatch(text)
    minute = -1 if m is None else int(m.group(1)) * 60 + int(m.group(2))
    if m is None or minute > 24 * 60:
        raise ConfigError(f"{table.prefix}{key} must be a time HH:MM from 00:00 to 24:00")
    if minute % 15:
        raise ConfigError(f"{table.prefix}{key} must be on a quarter hour (:00, :15, :30, :45)")
    return minute


def _import_tariff(table: Table) -> Tariff:
    """The import tariff: a price and windows, or ``prices = "imported"`` (and a network charge)."""
    if "prices" not in table.data:
        return _tariff(table)
    table.choice("prices", IMPORTED, (IMPORTED,))
    for key in ("price_per_kwh", "windows"):
        if key in table.data:
            raise ConfigError(
                f'{table.prefix}{key} cannot be given with {table.prefix}prices = "imported": '
                "each interval is priced at the stored grid price"
            )
    network = _price(table, "network_per_kwh") if "network_per_kwh" in table.data else Decimal(0)
    table.done()
    return Tariff(Decimal(0), (), imported=True, network_per_kwh=network)


def _tariff(table: Table) -> Tariff:
    base = _price(table, "price_per_kwh")
    windows = []
    for w in table.tables("windows"):
        days_raw = w._value("days", True)
        if not isinstance(days_raw, list) or not days_raw:
            raise ConfigError(f'{w.prefix}days must be a list such as ["mon", "tue"]')
        days = set()
        for d in days_raw:
            if d not in DAYS:
                raise ConfigError(f"{w.prefix}days: {d!r} is not one of {', '.join(DAYS)}")
            days.add(DAYS.index(d))
        start, end = _minute(w, "from"), _minute(w, "to")
        if start >= end:
            raise ConfigError(f"{w.prefix}from must be before {w.prefix}to")
        windows.append(Window(frozenset(days), start, end, _price(w, "price_per_kwh")))
        w.done()
    table.done()
    return Tariff(base, tuple(windows))


def parse_scheme(data: dict[str, Any]) -> Scheme:
    """Check a parsed TOML document (or :meth:`Scheme.to_json`'s content)."""
    root = Table(data)
    tz_name = root.required_text("timezone")
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone {tz_name!r} is not a known time zone") from None
    currency = root.required_text("currency")
    if not _CURRENCY_RE.fullmatch(currency):
        raise ConfigError(f'currency {currency!r} must be an ISO 4217 code such as "EUR"')
    minor_unit = root.integer("minor_unit", 2, lo=0, hi=4)
    mechanism = Mechanism(
        root.choice("mechanism", Mechanism.SDR.value, tuple(m.value for m in Mechanism))
    )
    min_group = root.integer("min_group", 5, lo=2, hi=10_000)
    max_gap = root.integer("max_gap_minutes", 15, lo=1, hi=24 * 60)
    import_tariff = _import_tariff(root.table("import_tariff"))
    export_tariff = _tariff(root.table("export_tariff"))
    allocation: AllocationKey | None = None
    community_price: Decimal | None = None
    if "allocation" in root.data:
        table = root.table("allocation")
        if "price_per_kwh" in table.data:
            community_price = _price(table, "price_per_kwh")
        allocation = parse_key(table)
    else:
        root._value("allocation", False)  # optional
    root.done()
    # Imported prices are known only per interval: the engine checks them when it settles.
    for weekday in range(0 if import_tariff.imported else 7):
        for minute in range(0, 24 * 60, 15):
            imp = import_tariff.price_at(weekday, minute)
            exp = export_tariff.price_at(weekday, minute)
            if exp > imp:
                raise ConfigError(
                    f"export_tariff pays {exp} per kWh on {DAYS[weekday]} at {_hhmm(minute)}, "
                    f"more than import_tariff charges ({imp}): shared energy could not be priced"
                )
            hour = minute - minute % 60
            if (
                allocation is not None
                and allocation.interval_minutes == 60
                and (imp, exp)
                != (
                    import_tariff.price_at(weekday, hour),
                    export_tariff.price_at(weekday, hour),
                )
            ):
                raise ConfigError(
                    f"allocation.interval_minutes is 60 but the tariffs change at "
                    f"{_hhmm(minute)} on {DAYS[weekday]}: an hourly key needs time-of-use "
                    "windows on whole hours"
                )
            if community_price is not None and not exp <= community_price <= imp:
                raise ConfigError(
                    f"allocation.price_per_kwh {community_price} is outside the grid's prices on "
                    f"{DAYS[weekday]} at {_hhmm(minute)} (export {exp}, import {imp}): members "
                    "could pay more for shared energy than for the grid's"
                )
    return Scheme(
        timezone=tz_name,
        currency=currency,
        minor_unit=minor_unit,
        mechanism=mechanism,
        import_tariff=import_tariff,
        export_tariff=export_tariff,
        min_group=min_group,
        max_gap_minutes=max_gap,
        allocation=allocation,
        community_price=community_price,
    )


def load_scheme(path: str | Path) -> Scheme:
    """Read and check a settlement scheme TOML file; raises :class:`ConfigError`."""
    return load(Path(path), lambda data, _base: parse_scheme(data))
