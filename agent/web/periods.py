"""Edges of local-time periods as UTC epoch milliseconds, for reading the energy log.

A day is local midnight to local midnight in the home's zone, so it has 23 or 25 hours when the
clocks change; its hours are real hours from that midnight (the hour repeated in autumn appears
twice, the one skipped in spring not at all). Weeks start on Monday (ISO).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Period:
    """Consecutive spans: ``edges`` has one more entry than there are spans; ``starts`` holds
    each span's start in local time (for labels)."""

    edges_ms: list[int]
    starts: list[datetime]
    first_day: date
    last_day: date  # included


def local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    """UTC ms of the start of ``day`` in ``zone`` (a midnight skipped by DST: its first instant)."""
    naive = datetime(day.year, day.month, day.day)
    aware = naive.replace(tzinfo=zone)
    # A nonexistent midnight (a gap at 00:00): zoneinfo uses the offset before the gap, which is
    # the first real instant of the day after it; an ambiguous one: the first (fold=0).
    return int(aware.timestamp() * 1000)


def local_day(t_ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(t_ms / 1000, zone).date()


def day_hours(day: date, zone: ZoneInfo) -> Period:
    """The hours of ``day``: 24, or 23/25 on the days the clocks change."""
    start = local_midnight_ms(day, zone)
    end = local_midnight_ms(day + timedelta(days=1), zone)
    edges = [*range(start, end, HOUR_MS), end]
    starts = [datetime.fromtimestamp(e / 1000, zone) for e in edges[:-1]]
    return Period(edges, starts, day, day)


def days(first: date, last: date, zone: ZoneInfo) -> Period:
    """One span per local day from ``first`` to ``last`` (both included)."""
    count = (last - first).days + 1
    dates = [first + timedelta(days=i) for i in range(count + 1)]
    edges = [local_midnight_ms(d, zone) for d in dates]
    starts = [datetime.fromtimestamp(e / 1000, zone) for e in edges[:-1]]
    return Period(edges, starts, first, last)


def week_of(day: date, zone: ZoneInfo) -> Period:
    monday = day - timedelta(days=day.weekday())
    return days(monday, monday + timedelta(days=6), zone)


def month_of(day: date, zone: ZoneInfo) -> Period:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return days(first, following - timedelta(days=1), zone)
