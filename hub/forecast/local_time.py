"""How the cooperative's days run, for the demand forecast: its clock and its holidays.

Households live by the clock on the wall, not by the sun: breakfast is at 7:00 local time, summer
time or not, and a public holiday runs like a Sunday. :class:`LocalTime` turns UTC epoch ms into
the local hour and day and a day of the week in which holidays count as Sundays (6) and
half-holidays (days most people keep like a Saturday, such as 24 and 31 December in Germany) as
Saturdays (5), unless they fall on a weekend anyway. Without a timezone the clock is local mean
solar time from the longitude (UTC + lon/15 hours), as before one was configured.

Vectorised over numpy arrays; a timezone's offsets are looked up once per UTC day and cached, so
training on years of 15-minute steps stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from hub.forecast.solar import FloatArray, IntArray

_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000
_QUARTER_MS: Final = 900_000
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


def day_number(d: date) -> int:
    """Days since 1970-01-01 (a Thursday) of a calendar date."""
    return d.toordinal() - _EPOCH_ORDINAL


@lru_cache(maxsize=4096)
def _day_offsets_ms(zone: str, utc_day: int) -> IntArray:
    """UTC offset (ms) at each quarter-hour of one UTC day: transitions fall on quarter-hours."""
    tz = ZoneInfo(zone)
    start = utc_day * _MS_PER_DAY
    first = datetime.fromtimestamp(start / 1000, UTC).astimezone(tz).utcoffset()
    last = datetime.fromtimestamp((start + _MS_PER_DAY - 1) / 1000, UTC).astimezone(tz).utcoffset()
    assert first is not None and last is not None
    if first == last:  # no transition today: one offset all day (nearly every day)
        return np.full(96, int(first.total_seconds() * 1000), dtype=np.int64)
    out = np.empty(96, dtype=np.int64)
    for q in range(96):
        at = datetime.fromtimestamp((start + q * _QUARTER_MS) / 1000, UTC).astimezone(tz)
        offset = at.utcoffset()
        assert offset is not None
        out[q] = int(offset.total_seconds() * 1000)
    return out


@dataclass(frozen=True)
class LocalTime:
    """The cooperative's clock (``timezone``, else mean solar time at ``lon``) and its holidays
    and half-holidays as local day numbers (days since 1970-01-01)."""

    lon: float
    timezone: str | None = None
    holidays: frozenset[int] = frozenset()
    half_holidays: frozenset[int] = frozenset()

    def offset_ms(self, ts_ms: IntArray) -> IntArray:
        """Local time minus UTC (ms) at each timestamp."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        if self.timezone is None:
            return np.full(ts_ms.shape, round(self.lon / 15.0 * _MS_PER_HOUR), dtype=np.int64)
        days = ts_ms // _MS_PER_DAY
        quarters = (ts_ms % _MS_PER_DAY) // _QUARTER_MS
        unique, inverse = np.unique(days, return_inverse=True)
        table = np.stack([_day_offsets_ms(self.timezone, int(d)) for d in unique.tolist()])
        result: IntArray = table[inverse.reshape(ts_ms.shape), quarters]
        return result

    def hour(self, ts_ms: IntArray) -> FloatArray:
        """Local hour of day, 0 to 24."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        if self.timezone is None:  # exactly as before timezones: UTC + lon/15, unrounded
            solar: FloatArray = ((ts_ms / _MS_PER_HOUR) + self.lon / 15.0) % 24.0
            return solar
        local = ts_ms + self.offset_ms(ts_ms)
        result: FloatArray = (local % _MS_PER_DAY) / _MS_PER_HOUR
        return result

    def day(self, ts_ms: IntArray) -> IntArray:
        """Local day number (days since 1970-01-01)."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        result: IntArray = (ts_ms + self.offset_ms(ts_ms)) // _MS_PER_DAY
        return result

    def day_of_week(self, ts_ms: IntArray) -> IntArray:
        """Day of the week as the community keeps it, Monday = 0: a holiday is a Sunday (6), a
        half-holiday on a weekday a Saturday (5)."""
        days = self.day(ts_ms)
        dow: IntArray = (days + 3) % 7  # 1970-01-01 was a Thursday
        if self.holidays:
            dow = np.where(np.isin(days, list(self.holidays)), 6, dow)
        if self.half_holidays:
            half = np.isin(days, list(self.half_holidays)) & (dow < 5)
            dow = np.where(half, 5, dow)
        return dow
