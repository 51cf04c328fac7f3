"""Ordered schema migrations for the hub database.

Each migration is a function of a :class:`sqlite_utils.Database` with a version number; the
versions applied are recorded in ``schema_migrations``. Each migration runs in its own transaction
together with its record, so a crash leaves the database at the previous version, never halfway.
Re-opening a database applies only the migrations it has not seen. A migration, once shipped, is
never edited: a change is a new migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from sqlite_utils import Database

log = logging.getLogger(__name__)

Migration = Callable[[Database], None]

MIGRATIONS_TABLE: Final = "schema_migrations"

# The glossary as it was when the readings table was created. Quantities added to
# protocol.quantities.GLOSSARY later need a migration that adds their column.
V1_QUANTITIES: Final[tuple[tuple[str, str], ...]] = (
    ("power_w", "REAL"),
    ("energy_import_wh", "REAL"),
    ("energy_export_wh", "REAL"),
    ("energy_wh", "REAL"),
    ("voltage_v", "REAL"),
    ("current_a", "REAL"),
    ("frequency_hz", "REAL"),
    ("power_factor", "REAL"),
    ("temperature_c", "REAL"),
    ("wind_speed_m_s", "REAL"),
    ("state", "TEXT"),
)


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this version of the hub."""


def _v1_initial(db: Database) -> None:
    """meta, devices, readings (one column per quantity) and home_status."""
    quantity_columns = "".join(f",\n    {name} {sql_type}" for name, sql_type in V1_QUANTITIES)
    db.executescript(
        f"""
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE devices (
            id INTEGER PRIMARY KEY,
            home TEXT NOT NULL,
            device TEXT NOT NULL,
            role TEXT NOT NULL,
            UNIQUE (home, device)
        );
        CREATE TABLE readings (
            device_id INTEGER NOT NULL REFERENCES devices(id),
            seq INTEGER NOT NULL,
            ts_ms INTEGER NOT NULL,
            grant_id TEXT NOT NULL,
            received_ms INTEGER NOT NULL{quantity_columns},
            PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE home_status (
            home TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            ts_ms INTEGER,
            last_seen_ms INTEGER NOT NULL,
            backlog INTEGER,
            payload TEXT NOT NULL
        );
        """
    )


def _v2_reading_period(db: Database) -> None:
    """readings.period_ms: NULL for a raw reading; else the span an aggregate covers, ending at
    ts_ms (the agent compacts old readings when its outbox fills, and releases consented streams
    at 15min/hourly/daily resolution)."""
    db.execute("ALTER TABLE readings ADD COLUMN period_ms INTEGER")


MIGRATIONS: Final[tuple[tuple[int, Migration], ...]] = (
    (1, _v1_initial),
    (2, _v2_reading_period),
)
LATEST_VERSION: Final = MIGRATIONS[-1][0]


def applied_versions(db: Database) -> set[int]:
    """Versions recorded in ``schema_migrations``; empty for a database without the table."""
    if not db[MIGRATIONS_TABLE].exists():
        return set()
    return {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}


def migrate(
    db: Database,
    now_ms: int,
    migrations: tuple[tuple[int, Migration], ...] = MIGRATIONS,
) -> list[int]:
    """Apply the migrations not yet recorded, in version order; returns the versions applied.

    ``now_ms`` (UTC epoch ms) is recorded as each migration's ``applied_ms``. Raises
    :class:`MigrationError` for a database that has versions this code does not know (it was
    made by a newer hub: downgrading would lose data silently).
    """
    versions = [v for v, _ in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and ascending")
    with db.atomic():
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)"
        )
    applied = applied_versions(db)
    unknown = applied - set(versions)
    if unknown:
        raise MigrationError(
            f"database has schema version {max(unknown)}, newer than this hub knows "
            f"({versions[-1]}); upgrade coopwatt"
        )
    done: list[int] = []
    for version, migration in migrations:
        if version in applied:
            continue
        with db.atomic():
            migration(db)
            db.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)",
                (version, now_ms),
            )
        log.info("applied schema migration %d (%s)", version, migration.__name__)
        done.append(version)
    return done
