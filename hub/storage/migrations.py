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


def _v3_settlement_ledger(db: Database) -> None:
    """Settlement (hub.settlement): settled intervals and the double-entry ledger.

    Energy in integer mWh, money in integer micro-units (10^-6 of the currency). Each transaction
    balances (its postings add up to zero energy and zero money). A closed period is immutable:
    triggers refuse any insert, update or delete of its transactions, postings and intervals, and
    the reopening of the period itself; corrections are adjustments in a later open period.
    """
    closed = (
        "EXISTS (SELECT 1 FROM ledger_periods p WHERE p.period = {} AND p.closed_ms IS NOT NULL)"
    )
    txn_closed = (
        "EXISTS (SELECT 1 FROM ledger_transactions t JOIN ledger_periods p ON p.period = t.period "
        "WHERE t.id = {} AND p.closed_ms IS NOT NULL)"
    )
    guarded = {
        "ledger_transactions": closed,
        "settlement_intervals": closed,
        "settlement_member_intervals": closed,
    }
    triggers = []
    for table, test in guarded.items():
        for op, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
            triggers.append(
                f"CREATE TRIGGER {table}_closed_{op.lower()} BEFORE {op} ON {table} "
                f"WHEN {test.format(row + '.period')} "
                "BEGIN SELECT RAISE(ABORT, 'ledger period is closed'); END;"
            )
    for op, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
        triggers.append(
            f"CREATE TRIGGER ledger_postings_closed_{op.lower()} BEFORE {op} ON ledger_postings "
            f"WHEN {txn_closed.format(row + '.txn_id')} "
            "BEGIN SELECT RAISE(ABORT, 'ledger period is closed'); END;"
        )
    triggers.append(
        "CREATE TRIGGER ledger_periods_closed_update BEFORE UPDATE ON ledger_periods "
        "WHEN OLD.closed_ms IS NOT NULL "
        "BEGIN SELECT RAISE(ABORT, 'ledger period is closed'); END;"
    )
    triggers.append(
        "CREATE TRIGGER ledger_periods_closed_delete BEFORE DELETE ON ledger_periods "
        "WHEN OLD.closed_ms IS NOT NULL "
        "BEGIN SELECT RAISE(ABORT, 'ledger period is closed'); END;"
    )
    tables = (
        """
        CREATE TABLE settlement_schemes (
            id INTEGER PRIMARY KEY,
            scheme TEXT NOT NULL UNIQUE,
            created_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE ledger_periods (
            period TEXT PRIMARY KEY,
            closed_ms INTEGER
        )
        """,
        """
        CREATE TABLE settlement_intervals (
            start_ms INTEGER PRIMARY KEY,
            period TEXT NOT NULL,
            day TEXT NOT NULL,
            scheme_id INTEGER NOT NULL REFERENCES settlement_schemes(id),
            members INTEGER NOT NULL,
            missing INTEGER NOT NULL,
            estimated INTEGER NOT NULL,
            supply_mwh INTEGER NOT NULL,
            demand_mwh INTEGER NOT NULL,
            matched_mwh INTEGER NOT NULL,
            import_price TEXT NOT NULL,
            export_price TEXT NOT NULL,
            internal_price TEXT NOT NULL
        )
        """,
        """
        CREATE INDEX settlement_intervals_day ON settlement_intervals (day)
        """,
        """
        CREATE TABLE settlement_member_intervals (
            home TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            period TEXT NOT NULL,
            day TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'estimated', 'reset', 'missing')),
            import_mwh INTEGER NOT NULL,
            export_mwh INTEGER NOT NULL,
            import_neighbours_mwh INTEGER NOT NULL,
            export_neighbours_mwh INTEGER NOT NULL,
            PRIMARY KEY (home, start_ms)
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX settlement_member_intervals_day ON settlement_member_intervals (day)
        """,
        """
        CREATE TABLE ledger_transactions (
            id INTEGER PRIMARY KEY,
            period TEXT NOT NULL REFERENCES ledger_periods(period),
            kind TEXT NOT NULL CHECK (kind IN ('settlement', 'adjustment', 'rounding')),
            day TEXT,
            provisional INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL,
            memo TEXT NOT NULL
        )
        """,
        """
        CREATE UNIQUE INDEX ledger_transactions_settled_day
            ON ledger_transactions (day) WHERE kind = 'settlement'
        """,
        """
        CREATE INDEX ledger_transactions_period ON ledger_transactions (period)
        """,
        """
        CREATE TABLE ledger_postings (
            txn_id INTEGER NOT NULL REFERENCES ledger_transactions(id),
            account TEXT NOT NULL,
            leg TEXT NOT NULL,
            energy_mwh INTEGER NOT NULL,
            amount_micro INTEGER NOT NULL,
            PRIMARY KEY (txn_id, account, leg)
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX ledger_postings_account ON ledger_postings (account)
        """,
    )
    # One statement at a time: executescript would commit, and a migration is one transaction.
    for statement in (*tables, *triggers):
        db.execute(statement)


def _v4_forecast(db: Database) -> None:
    """Forecast (hub.forecast.service): imported weather, and the community's 15-minute power.

    ``weather``: Open-Meteo hourly rows by their UTC timestamp (radiation is the mean over the
    hour ending there), the newest import winning. ``forecast_power_15min``: per device and
    15-minute slot, the sum and count of its ``power_w`` readings, kept up to date incrementally
    from ``forecast_cursor`` (the highest seq folded in per device), so a forecast never scans
    the readings table.
    """
    for statement in (
        """
        CREATE TABLE weather (
            ts_ms INTEGER PRIMARY KEY,
            shortwave_radiation_w_m2 REAL,
            temperature_c REAL,
            wind_speed_m_s REAL,
            cloud_cover_pct REAL,
            imported_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE forecast_power_15min (
            device_id INTEGER NOT NULL REFERENCES devices(id),
            slot_ms INTEGER NOT NULL,
            power_sum_w REAL NOT NULL,
            samples REAL NOT NULL,
            PRIMARY KEY (device_id, slot_ms)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX forecast_power_15min_slot ON forecast_power_15min (slot_ms)",
        """
        CREATE TABLE forecast_cursor (
            device_id INTEGER PRIMARY KEY REFERENCES devices(id),
            seq INTEGER NOT NULL
        )
        """,
    ):
        db.execute(statement)


def _v5_consent(db: Database) -> None:
    """consent_ledger: every grant version each home published, append-only.

    ``chained`` is 1 when the version was checked against the one before it (0 when the hub
    missed versions while offline: the retained topic carries only the latest).
    """
    db.execute(
        """
        CREATE TABLE consent_ledger (
            home TEXT NOT NULL,
            version INTEGER NOT NULL,
            grant_id TEXT NOT NULL,
            hash TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            chained INTEGER NOT NULL,
            payload TEXT NOT NULL,
            received_ms INTEGER NOT NULL,
            PRIMARY KEY (home, version)
        ) WITHOUT ROWID
        """
    )
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER consent_ledger_append_only_{op.lower()} BEFORE {op} ON consent_ledger "
            "BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END"
        )


def _v6_prompts(db: Database) -> None:
    """Appliance-timing prompts (hub.prompts.service).

    ``prompt_homes``: each home's declared appliances as last received. ``prompt_runs``: every
    run planned and sent, by home, appliance, local day and run of the day, with the windows
    last sent (the previous plan a re-plan starts from) and, once its window has passed, how
    fully the home followed it. ``prompt_feedback``: the households' answers. ``prompt_shift``:
    per home, runs followed and expected, faded (hub.prompts.learning). ``prompt_forecast``: the
    latest community forecast received, so a restarted hub plans at once.
    """
    for statement in (
        """
        CREATE TABLE prompt_homes (
            home TEXT PRIMARY KEY,
            payload TEXT NOT NULL,
            received_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE prompt_runs (
            home TEXT NOT NULL,
            appliance TEXT NOT NULL,
            day TEXT NOT NULL,
            run INTEGER NOT NULL,
            windows TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            energy_wh REAL NOT NULL,
            chance REAL NOT NULL,
            first_sent_ms INTEGER NOT NULL,
            sent_ms INTEGER NOT NULL,
            outcome REAL,
            metered REAL,
            evaluated_ms INTEGER,
            PRIMARY KEY (home, appliance, day, run)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX prompt_runs_end ON prompt_runs (end_ms)",
        """
        CREATE TABLE prompt_feedback (
            id INTEGER PRIMARY KEY,
            home TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            action TEXT NOT NULL,
            appliance TEXT,
            window_start_ms INTEGER,
            received_ms INTEGER NOT NULL
        )
        """,
        "CREATE INDEX prompt_feedback_home ON prompt_feedback (home, appliance)",
        """
        CREATE TABLE prompt_shift (
            home TEXT PRIMARY KEY,
            followed REAL NOT NULL,
            expected REAL NOT NULL,
            updated_ms INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE prompt_forecast (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            issued_ms INTEGER NOT NULL,
            payload TEXT NOT NULL
        )
        """,
    ):
        db.execute(statement)


def _v7_forecast_series(db: Database) -> None:
    """The forecast's community series, kept up to date as readings are committed
    (:func:`hub.forecast.series.sync_forecast_series`), so a forecast reads ~3,000 rows, not
    millions.

    ``forecast_pending``: (device, seq) of every reading with ``power_w`` committed since the
    last sync, queued by a trigger on ``readings`` once the series exists (meta
    ``forecast_series``). ``forecast_members``: the devices whose power the series counts, from
    ``from_ms`` on, at ``span_ms`` resolution (their consent for the ``forecast`` purpose).
    ``forecast_power_15min`` (rebuilt): per member and span, the sum and count of its ``power_w``
    samples, and ``contrib_w``, the mean power it adds to each 15-minute slot of the span.
    ``forecast_community_15min``: per slot and role, the sum of contributions and how many
    devices contributed. Triggers keep it equal to the sum of ``contrib_w`` whenever a
    per-device row is added, changed or deleted (consent erasure deletes them directly), so the
    two never disagree; a rebuild that adds whole devices at once sets meta ``forecast_bulk``
    inside its transaction and adds their sums in one statement instead.

    Replaces migration 4's per-device seq cursor, which missed readings that arrived out of seq
    order and left every forecast to sum millions of per-device rows.
    """
    add = (
        "INSERT INTO forecast_community_15min (slot_ms, role, power_w, devices) "
        "SELECT NEW.slot_ms + s.k * 900000, "
        "(SELECT role FROM devices WHERE id = NEW.device_id), NEW.contrib_w, 1 "
        "FROM forecast_span_steps s WHERE s.k < NEW.span_ms / 900000 "
        "ON CONFLICT (slot_ms, role) DO UPDATE SET power_w = power_w + excluded.power_w, "
        "devices = devices + 1;"
    )
    subtract = (
        "UPDATE forecast_community_15min SET power_w = power_w - OLD.contrib_w, "
        "devices = devices - 1 WHERE role = (SELECT role FROM devices WHERE id = OLD.device_id) "
        "AND slot_ms >= OLD.slot_ms AND slot_ms < OLD.slot_ms + OLD.span_ms;"
    )
    bulk = "NOT EXISTS (SELECT 1 FROM meta WHERE key = 'forecast_bulk')"
    for statement in (
        "DROP TABLE forecast_cursor",
        "DROP INDEX forecast_power_15min_slot",
        "DROP TABLE forecast_power_15min",
        """
        CREATE TABLE forecast_power_15min (
            device_id INTEGER NOT NULL REFERENCES devices(id),
            slot_ms INTEGER NOT NULL,
            span_ms INTEGER NOT NULL,
            power_sum_w REAL NOT NULL,
            samples REAL NOT NULL,
            contrib_w REAL,
            PRIMARY KEY (device_id, slot_ms)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE forecast_community_15min (
            slot_ms INTEGER NOT NULL,
            role TEXT NOT NULL,
            power_w REAL NOT NULL,
            devices INTEGER NOT NULL,
            PRIMARY KEY (slot_ms, role)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE forecast_members (
            device_id INTEGER PRIMARY KEY REFERENCES devices(id),
            from_ms INTEGER NOT NULL,
            span_ms INTEGER NOT NULL
        )
        """,
        "CREATE TABLE forecast_pending (id INTEGER PRIMARY KEY, device_id INTEGER, seq INTEGER)",
        "CREATE TABLE forecast_span_steps (k INTEGER PRIMARY KEY)",
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 95) "
        "INSERT INTO forecast_span_steps (k) SELECT k FROM n",
        "CREATE TRIGGER forecast_pending_reading AFTER INSERT ON readings "
        "WHEN NEW.power_w IS NOT NULL AND EXISTS "
        "(SELECT 1 FROM meta WHERE key = 'forecast_series') "
        "BEGIN INSERT INTO forecast_pending (device_id, seq) VALUES (NEW.device_id, NEW.seq); END",
        "CREATE TRIGGER forecast_contrib_insert AFTER INSERT ON forecast_power_15min "
        f"WHEN NEW.contrib_w IS NOT NULL AND {bulk} BEGIN {add} END",
        "CREATE TRIGGER forecast_contrib_delete AFTER DELETE ON forecast_power_15min "
        f"WHEN OLD.contrib_w IS NOT NULL BEGIN {subtract} END",
        "CREATE TRIGGER forecast_contrib_update_old AFTER UPDATE OF contrib_w "
        f"ON forecast_power_15min WHEN OLD.contrib_w IS NOT NULL AND {bulk} BEGIN {subtract} END",
        "CREATE TRIGGER forecast_contrib_update_new AFTER UPDATE OF contrib_w "
        f"ON forecast_power_15min WHEN NEW.contrib_w IS NOT NULL AND {bulk} BEGIN {add} END",
    ):
        db.execute(statement)


def _v8_readings_by_time(db: Database) -> None:
    """An index on readings by device and time.

    Every reader after a time window (community figures over the last hour, settlement's
    counters, retention, the forecast's rebuilds, exports by date) filtered one device's
    readings by ``ts_ms`` through the primary key (device, seq): a scan of the device's whole
    history on each call, which grew with every day stored (a year of 10-s readings is 3
    million a device). Costs about 25 bytes a reading and one more B-tree insert on ingest.
    """
    db.execute("CREATE INDEX readings_device_ts ON readings (device_id, ts_ms)")


def _v9_repricing(db: Database) -> None:
    """ledger_transactions.reprice_scheme_id: on an adjustment that reprices a day of a closed
    period under another scheme (only when asked: ``settle --reprice``), the scheme that day is
    priced under from then on; NULL on every other transaction. A closed day's own rows keep the
    scheme it was settled under, so this is where a later repricing is remembered.
    """
    db.execute(
        "ALTER TABLE ledger_transactions ADD COLUMN reprice_scheme_id INTEGER "
        "REFERENCES settlement_schemes(id)"
    )


def _v10_grid_prices(db: Database) -> None:
    """grid_prices (hub.settlement.price_store): the grid's price per interval, imported from a
    day-ahead or tariff file. One row per interval by its UTC start; the price per kWh is kept as
    decimal text (exact, never a float), in ``currency``; a newer import replaces the intervals
    it covers, and ``source`` names the file it came from.
    """
    db.execute(
        """
        CREATE TABLE grid_prices (
            start_ms INTEGER PRIMARY KEY,
            end_ms INTEGER NOT NULL,
            price_per_kwh TEXT NOT NULL,
            currency TEXT NOT NULL,
            source TEXT NOT NULL,
            imported_ms INTEGER NOT NULL,
            CHECK (end_ms > start_ms)
        )
        """
    )


def _v11_meter_sources(db: Database) -> None:
    """settlement_day_sources (hub.settlement.ledger): whose meter figures settled each local day
    of an open month: ``hub`` (the hub's own readings) or the grid operator's figures, named by
    their file and its SHA-256, so a statement can say what it was billed from and a later run
    on the hub's readings does not replace the official figures unnoticed. Days settled before
    this table existed were settled on the hub's readings; they have no row and read as ``hub``.
    """
    db.execute(
        """
        CREATE TABLE settlement_day_sources (
            day TEXT PRIMARY KEY,
            period TEXT NOT NULL,
            source TEXT NOT NULL
        ) WITHOUT ROWID
        """
    )


# The quantities migration 12 added: smart meters' per-tariff counters and per-phase values.
V12_QUANTITIES: Final[tuple[tuple[str, str], ...]] = (
    *((f"energy_{way}_t{t}_wh", "REAL") for way in ("import", "export") for t in (1, 2)),
    *((f"voltage_l{n}_v", "REAL") for n in (1, 2, 3)),
    *((f"current_l{n}_a", "REAL") for n in (1, 2, 3)),
    *((f"power_l{n}_w", "REAL") for n in (1, 2, 3)),
)


def _v12_meter_quantities(db: Database) -> None:
    """readings columns for the quantities a P1 (DSMR) or SML smart meter adds to the glossary:
    per-tariff import and export counters (Wh; ``energy_import_wh`` stays their sum) and
    per-phase voltage, current and power. NULL on every reading stored before."""
    for name, sql_type in V12_QUANTITIES:
        db.execute(f"ALTER TABLE readings ADD COLUMN {name} {sql_type}")


MIGRATIONS: Final[tuple[tuple[int, Migration], ...]] = (
    (1, _v1_initial),
    (2, _v2_reading_period),
    (3, _v3_settlement_ledger),
    (4, _v4_forecast),
    (5, _v5_consent),
    (6, _v6_prompts),
    (7, _v7_forecast_series),
    (8, _v8_readings_by_time),
    (9, _v9_repricing),
    (10, _v10_grid_prices),
    (11, _v11_meter_sources),
    (12, _v12_meter_quantities),
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
