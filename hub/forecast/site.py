"""Where the cooperative is and how its days run: the forecast's :class:`Site`.

Free of numpy (and of everything else the forecast computes with), so that the hub's config
(:mod:`hub.config`) and the commands that only read it, such as the operator's monitor, load
without the forecast's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from hub.forecast.local_time import LocalTime


def is_known_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA timezone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def require_timezone(name: str) -> None:
    """Raise ValueError unless ``name`` is an IANA timezone this machine knows."""
    if not is_known_timezone(name):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as 'Europe/Berlin'")


@dataclass(frozen=True)
class Site:
    """Where the cooperative is (degrees, north and east positive), its generation capacity
    (W, AC nameplate) when configured (an unconfigured capacity is estimated from history), and
    how its days run for the demand forecast: its IANA ``timezone`` (else local mean solar time)
    and the local dates it keeps like a Sunday (``holidays``) or a Saturday (``half_holidays``).
    """

    lat: float
    lon: float
    pv_capacity_w: float | None = None
    wind_capacity_w: float | None = None
    timezone: str | None = None
    holidays: frozenset[date] = frozenset()
    half_holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise ValueError(f"location {self.lat}, {self.lon} is not a latitude and longitude")
        for name in ("pv_capacity_w", "wind_capacity_w"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")
        if self.timezone is not None:
            require_timezone(self.timezone)

    @cached_property
    def local(self) -> LocalTime:
        """The site's clock and holidays, for the demand features (imported here: numpy)."""
        from hub.forecast.local_time import LocalTime, day_number  # noqa: PLC0415 - numpy

        return LocalTime(
            self.lon,
            self.timezone,
            frozenset(day_number(d) for d in self.holidays),
            frozenset(day_number(d) for d in self.half_holidays),
        )
