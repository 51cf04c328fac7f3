"""The hub's TOML configuration, checked up front so a typo fails at start, not at 3 a.m.

Example::

    coop = "sunny-street"
    db = "/var/lib/coopwatt/hub.db"        # relative paths resolve against this file's folder

    [broker]
    url = "mqtt://localhost:1883"          # mqtt://host[:1883] or mqtts://host[:8883]
    username = "hub"                       # optional
    password_file = "/etc/coopwatt/hub.password"   # optional; or password = "..."
    protocol = 5                           # 5 or 311
    # optional: client_id, keepalive_s, ca_file, cert_file, key_file
    # shared_group = "hub"                 # scale-out: readings through $share/hub/... (MQTT 5)

Every problem is a :class:`ConfigError` whose message names the key. The password is never part
of a message, a log line or a repr. The reading rules are shared with the agent's config
(:mod:`protocol.config_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.config_tables import ConfigError, Table, broker_settings, load
from protocol.session import BrokerSettings
from protocol.topics import ID_RE

__all__ = ["ConfigError", "HubConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class HubConfig:
    """A checked hub configuration: the cooperative's id, its database file and its broker.

    ``shared_group``: take readings through the MQTT 5 shared subscription
    ``$share/{shared_group}/coopwatt/{coop}/homes/+/readings``, so that extra ingest workers
    (``coopwatt-hub run --worker N``) can share the load; see :class:`hub.ingest.Ingest`.
    """

    coop: str
    db_path: Path
    broker: BrokerSettings
    shared_group: str | None = None


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
    root.done()
    return HubConfig(coop=coop, db_path=db_path, broker=broker, shared_group=shared_group)


def load_config(path: str | Path) -> HubConfig:
    """Read and check the hub's TOML configuration file; raises :class:`ConfigError`."""
    return load(Path(path), parse_config)
