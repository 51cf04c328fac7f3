"""The hub's TOML configuration, checked up front so a typo fails at start, not at 3 a.m.

Example::

    coop = "sunny-street"
    db = "/var/lib/coopwatt/hub.db"        # relative paths resolve against this file's folder

    [broker]
    url = "mqtt://localhost:1883"          # mqtt://host[:1883] or mqtts://host[:8883]
    username = "_hub"                      # optional
    password_file = "/etc/coopwatt/hub.password"   # optional; or password = "..."
    protocol = 5                           # 5 or 311
    # optional: client_id, keepalive_s, ca_file, cert_file, key_file
    # shared_group = "hub-<secret>"        # scale-out, from broker-config: a group no home can
                                           # guess, readings through $share/<group>/... (MQTT 5)

    [site]                                 # optional: without it the hub does not forecast
    latitude = 52.52                       # degrees north
    longitude = 13.41                      # degrees east
    timezone = "Europe/Berlin"             # optional; default: mean solar time
    pv_capacity_w = 48000                  # optional, AC W; estimated from history when left out
    wind_capacity_w = 15000                # optional; configure it if you can
    holidays = [2026-12-25, 2026-12-26]    # optional: local dates kept like a Sunday
    half_holidays = [2026-12-24]           # optional: kept like a Saturday

Every problem is a :class:`ConfigError` whose message names the key. The password is never part
of a message, a log line or a repr. The reading rules are shared with the agent's config
(:mod:`protocol.config_tables`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hub.forecast.site import Site, require_timezone
from protocol.config_tables import ConfigError, Table, broker_settings, load, toml_type
from protocol.session import BrokerSettings
from protocol.topics import ID_RE

__all__ = ["ConfigError", "HubConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class HubConfig:
    """A checked hub configuration: the cooperative's id, its database file and its broker.

    ``shared_group``: take readings through the MQTT 5 shared subscription
    ``$share/{shared_group}/coopwatt/{coop}/homes/+/readings``, so that extra ingest workers
    (``coopwatt-hub run --worker N``) can share the load; see :class:`hub.ingest.service.Ingest`.
    """

    coop: str
    db_path: Path
    broker: BrokerSettings
    shared_group: str | None = None
    site: Site | None = None  # where the cooperative is, for the forecast; None: no forecast


def parse_config(data: dict[str, Any], base: Path) -> HubConfig:
    """Check an already parsed TOML document; relative paths resolve against ``base``."""
    root = Table(data)
    coop = root.ident("coop")
    db_path = root.path("db", base)
    if db_path is None:
        raise ConfigError("db is missing")
    broker_table = root.table("broker")
    shared_group = broker_table.text("shared_group")
    if shared_group is not None and not ID_RE.fullmatch(shared_group):
        raise ConfigError(
            f"broker.shared_group {shared_group!r} must be 1-32 of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    broker = broker_settings(broker_table, f"coopwatt-hub-{coop}", base)
    site = parse_site(_SiteTable(root.table("site"))) if "site" in data else None
    root.done()
    return HubConfig(
        coop=coop, db_path=db_path, broker=broker, shared_group=shared_group, site=site
    )


class _SiteTable(Table):
    """The ``[site]`` table: numbers that may be required or left out, and lists of dates."""

    def __init__(self, table: Table) -> None:
        super().__init__(table.data, table.prefix)

    def required_number(self, key: str, lo: float, hi: float) -> float:
        self._value(key, True)  # "site.latitude is missing"
        return self.number(key, 0.0, lo=lo, hi=hi)

    def optional_number(self, key: str, lo: float, hi: float) -> float | None:
        value = self.number(key, math.nan, lo=lo, hi=hi)
        return None if math.isnan(value) else value

    def dates(self, key: str) -> frozenset[date]:
        """An array of dates: TOML dates (2026-12-25) or strings ("2026-12-25")."""
        if key not in self.data:
            self._value(key, False)
            return frozenset()
        value = self.data[key]
        self._value(key, False)
        if not isinstance(value, list):
            raise self._wrong(key, "an array of dates", value)
        return frozenset(self._date(f"{key}[{i}]", v) for i, v in enumerate(value, start=1))

    def _date(self, where: str, value: object) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
            raise ConfigError(f"{self.prefix}{where} {value!r} is not a date such as 2026-12-25")
        raise ConfigError(
            f"{self.prefix}{where} must be a date such as 2026-12-25, got {toml_type(value)}"
        )


def parse_site(table: _SiteTable) -> Site:
    """The ``[site]`` table: where the cooperative is and how its days run, for the forecast."""
    lat = table.required_number("latitude", -90.0, 90.0)
    lon = table.required_number("longitude", -180.0, 180.0)
    pv = table.optional_number("pv_capacity_w", 1.0, 1e9)
    wind = table.optional_number("wind_capacity_w", 1.0, 1e9)
    timezone = table.text("timezone")
    if timezone is not None:
        try:
            require_timezone(timezone)
        except ValueError as exc:
            raise ConfigError(f"site.timezone: {exc}") from None
    holidays = table.dates("holidays")
    half_holidays = table.dates("half_holidays")
    table.done()
    return Site(lat, lon, pv, wind, timezone, holidays, half_holidays)


def load_config(path: str | Path) -> HubConfig:
    """Read and check the hub's TOML configuration file; raises :class:`ConfigError`."""
    return load(Path(path), parse_config)
