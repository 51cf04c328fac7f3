"""hub.storage.store and hub.storage.migrations against real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from hub.ops.summary import HomeSummary, home_summaries, summarize
from hub.storage.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    V1_QUANTITIES,
    V12_QUANTITIES,
    applied_versions,
    migrate,
)
from hub.storage.store import (
    QUANTITY_NAMES,
    DeviceCounters,
    NotAHubDatabaseError,
    Store,
    StoreError,
    WrongCoopError,
)
from protocol.payloads import Ack, HomeStatus, Reading, ReadingBatch
from protocol.quantities import GLOSSARY, Role
from tests.times import ROUND_SECOND_MS

NEXT = LATEST_VERSION + 1  # a migration this hub does not ship

T0 = ROUND_SECOND_MS


def reading(device: str, seq: int, role: Role = Role.GRID, **quantities: float | str) -> Reading:
    return Reading(
        device=device,
        seq=seq,
        ts_ms=T0 + seq * 10_000,
        role=role,
        grant="g1",
        quantities=quantities or {"power_w": float(seq)},
    )


def batch(home: str, *readings: Reading) -> ReadingBatch:
    return ReadingBatch(home=home, sent_ms=T0, readings=list(readings))


def rows(store: Store) -> list[tuple[str, str, int]]:
    return [(r.home, r.device, r.seq) for r in store.iter_readings()]


# -- opening, schema, migrations --------------------------------------------------------------


def test_fresh_database_has_schema_wal_and_coop(store: Store) -> None:
    db = store.db
    assert {"meta", "schema_migrations", "devices", "readings", "home_status"} <= set(
        db.table_names()
    )
    assert db.journal_mode == "wal"
    assert db.execute("SELECT value FROM meta WHERE key = 'coop'").fetchone() == ("coop-a",)
    assert store.schema_version() == LATEST_VERSION
    assert db.execute("SELECT applied_ms FROM schema_migrations").fetchone() == (T0,)
    columns = {c.name: c.type for c in db["readings"].columns}
    for name, quantity in GLOSSARY.items():
        assert columns[name] == ("TEXT" if quantity.kind is str else "REAL")
    assert db.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'readings' AND sql LIKE '%WITHOUT ROWID%'"
    ).fetchone() == (1,)


def test_migrated_columns_cover_the_glossary() -> None:
    # If this fails the glossary grew: add a migration that adds the new quantity's column.
    migrated = [n for n, _ in (*V1_QUANTITIES, *V12_QUANTITIES)]
    assert migrated == list(GLOSSARY) == list(QUANTITY_NAMES)


def test_reopen_applies_only_new_migrations(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    Store.open(path, "coop-a").close()
    db = Database(path)
    assert migrate(db, T0) == []  # nothing new

    calls: list[str] = []

    def v2_add_notes(db: Database) -> None:
        calls.append("v2")
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")

    more = (*MIGRATIONS, (NEXT, v2_add_notes))
    assert migrate(db, T0, more) == [NEXT]
    assert migrate(db, T0, more) == []
    assert calls == ["v2"]
    assert applied_versions(db) == {*range(1, NEXT + 1)}
    db.close()
    # This hub does not know NEXT: a database made by a newer hub is refused, not downgraded.
    with pytest.raises(StoreError, match="newer"):
        Store.open(path, "coop-a")


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    Store.open(path, "coop-a").close()
    db = Database(path)

    def v2_broken(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate(db, T0, (*MIGRATIONS, (NEXT, v2_broken)))
    assert "half" not in db.table_names()
    assert applied_versions(db) == {*range(1, NEXT)}
    db.close()


def test_wrong_coop_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    Store.open(path, "coop-a").close()
    with pytest.raises(WrongCoopError, match="'coop-a', not 'coop-b'"):
        Store.open(path, "coop-b")
    with Store.open_existing(path) as s:
        assert s.coop == "coop-a"


def test_foreign_files_are_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    before = other.read_bytes()
    with pytest.raises(NotAHubDatabaseError, match="not a coopwatt hub database"):
        Store.open(other, "coop-a")
    with pytest.raises(NotAHubDatabaseError):
        Store.open_existing(other)
    assert other.read_bytes() == before

    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not SQLite at all\n" * 10)
    with pytest.raises(NotAHubDatabaseError):
        Store.open(text, "coop-a")
    with pytest.raises(NotAHubDatabaseError):
        Store.open_existing(text)

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(NotAHubDatabaseError, match="empty"):
        Store.open_existing(empty)
    assert empty.stat().st_size == 0

    missing = tmp_path / "missing.db"
    with pytest.raises(NotAHubDatabaseError, match="no such database"):
        Store.open_existing(missing)
    assert not missing.exists()


def test_open_rejects_a_bad_coop_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="coop"):
        Store.open(tmp_path / "x.db", "Not An Id")
    assert not (tmp_path / "x.db").exists()


# -- inserting ------------------------------------------------------------------------------


def test_same_batch_twice_is_stored_once_and_acked_twice(store: Store) -> None:
    b = batch("home-1", reading("meter", 1), reading("meter", 2), reading("meter", 3))
    first = store.insert_batches([("home-1", b)], T0 + 1)
    assert (first.new, first.duplicates, first.rejected) == (3, 0, 0)
    assert first.acks() == [Ack(home="home-1", acked={"meter": [[1, 3]]})]

    again = store.insert_batches([("home-1", b)], T0 + 2)
    assert (again.new, again.duplicates, again.rejected) == (0, 3, 0)
    assert again.acks() == first.acks()
    assert store.count_readings() == 3
    # The first copy is kept, received_ms included.
    assert {r.received_ms for r in store.iter_readings()} == {T0 + 1}


def test_duplicates_within_one_call(store: Store) -> None:
    b = batch("home-1", reading("meter", 1), reading("meter", 2))
    result = store.insert_batches([("home-1", b), ("home-1", b)], T0)
    assert (result.new, result.duplicates) == (2, 2)
    assert result.homes["home-1"].committed == {"meter": [1, 2]}
    assert store.count_readings() == 2


def test_out_of_order_batches_and_gaps(store: Store) -> None:
    late = batch("home-1", reading("meter", 7), reading("meter", 5), reading("meter", 6))
    early = batch("home-1", reading("meter", 1), reading("meter", 2))
    r1 = store.insert_batches([("home-1", late)], T0)
    assert r1.acks() == [Ack(home="home-1", acked={"meter": [[5, 7]]})]
    r2 = store.insert_batches([("home-1", early)], T0)
    assert r2.acks() == [Ack(home="home-1", acked={"meter": [[1, 2]]})]
    assert [seq for _, _, seq in rows(store)] == [1, 2, 5, 6, 7]


def test_several_homes_and_devices_in_one_transaction(store: Store) -> None:
    result = store.insert_batches(
        [
            ("home-2", batch("home-2", reading("pv", 1, Role.PV, energy_wh=10.0))),
            ("home-1", batch("home-1", reading("meter", 1), reading("meter", 3))),
            ("home-1", batch("home-1", reading("load", 4, Role.LOAD))),
        ],
        T0,
    )
    assert result.acks() == [
        Ack(home="home-1", acked={"meter": [[1, 1], [3, 3]], "load": [[4, 4]]}),
        Ack(home="home-2", acked={"pv": [[1, 1]]}),
    ]
    assert rows(store) == [
        ("home-1", "load", 4),
        ("home-1", "meter", 1),
        ("home-1", "meter", 3),
        ("home-2", "pv", 1),
    ]
    assert store.devices() == [
        ("home-1", "load", Role.LOAD),
        ("home-1", "meter", Role.GRID),
        ("home-2", "pv", Role.PV),
    ]
    assert store.count_readings("home-1") == 3


def test_role_mismatch_is_rejected_not_acked(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store.insert_batches([("home-1", batch("home-1", reading("meter", 1)))], T0)
    result = store.insert_batches(
        [
            (
                "home-1",
                batch(
                    "home-1",
                    reading("meter", 2, Role.PV, power_w=5.0),
                    reading("meter", 3),
                    reading("meter", 4, Role.LOAD),
                ),
            )
        ],
        T0,
    )
    assert (result.new, result.duplicates, result.rejected) == (1, 0, 2)
    assert result.acks() == [Ack(home="home-1", acked={"meter": [[3, 3]]})]
    assert [seq for _, _, seq in rows(store)] == [1, 3]
    assert "rejected 2 reading(s) of home=home-1 device=meter" in caplog.text


def test_role_is_registered_per_home(store: Store) -> None:
    # The same device id in two homes is two devices.
    result = store.insert_batches(
        [
            ("home-1", batch("home-1", reading("dev", 1, Role.PV))),
            ("home-2", batch("home-2", reading("dev", 1, Role.WIND))),
        ],
        T0,
    )
    assert (result.new, result.rejected) == (2, 0)


def test_all_rejected_gives_no_ack(store: Store) -> None:
    store.insert_batches([("home-1", batch("home-1", reading("meter", 1)))], T0)
    result = store.insert_batches([("home-1", batch("home-1", reading("meter", 2, Role.PV)))], T0)
    assert result.acks() == []
    assert result.homes["home-1"].rejected == 1


def test_batch_filed_under_another_home_is_a_programming_error(store: Store) -> None:
    with pytest.raises(ValueError, match="filed under"):
        store.insert_batches([("home-2", batch("home-1", reading("meter", 1)))], T0)
    assert store.count_readings() == 0


def test_failed_insert_rolls_back_everything(store: Store) -> None:
    # A trigger makes seq 666 fail mid-transaction, after a new device was registered.
    store.db.execute(
        "CREATE TRIGGER no_666 BEFORE INSERT ON readings WHEN NEW.seq = 666 "
        "BEGIN SELECT RAISE(ABORT, 'seq 666'); END"
    )
    items = [
        ("home-1", batch("home-1", reading("meter", 1))),
        ("home-1", batch("home-1", reading("meter", 666))),
    ]
    with pytest.raises(sqlite3.IntegrityError, match="seq 666"):
        store.insert_batches(items, T0)
    assert store.count_readings() == 0
    assert store.devices() == []
    store.db.execute("DROP TRIGGER no_666")
    # The device cache was rolled back with the transaction: the device is registered afresh.
    result = store.insert_batches(items, T0)
    assert result.new == 2
    assert store.devices() == [("home-1", "meter", Role.GRID)]


def test_insert_from_another_thread(store: Store) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.insert_batches([("home-1", batch("home-1", reading("meter", 1)))], T0)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(5)
    assert errors == []
    assert store.count_readings() == 1


def test_readings_survive_reopen_with_all_quantities(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with Store.open(path, "coop-a") as s:
        s.insert_batches(
            [
                (
                    "home-1",
                    batch(
                        "home-1",
                        reading(
                            "inv",
                            1,
                            Role.PV,
                            power_w=1500,
                            energy_wh=10.5,
                            voltage_v=230.1,
                            state="mppt",
                        ),
                    ),
                )
            ],
            T0 + 5,
        )
    with Store.open(path, "coop-a") as s:
        (r,) = list(s.iter_readings())
        assert (r.home, r.device, r.role, r.seq, r.ts_ms, r.grant, r.received_ms) == (
            "home-1",
            "inv",
            Role.PV,
            1,
            T0 + 10_000,
            "g1",
            T0 + 5,
        )
        assert r.quantities == {
            "power_w": 1500.0,
            "energy_wh": 10.5,
            "voltage_v": 230.1,
            "state": "mppt",
        }
        assert (
            s.insert_batches(
                [("home-1", batch("home-1", reading("inv", 1, Role.PV)))], T0
            ).duplicates
            == 1
        )


# -- statuses and reads -----------------------------------------------------------------------


def test_home_status_upsert(store: Store) -> None:
    store.update_home_statuses(
        [HomeStatus(home="home-1", state="online", ts_ms=T0, backlog=12, version="0.1.0")], T0 + 1
    )
    store.update_home_statuses([HomeStatus(home="home-1", state="offline")], T0 + 2)
    store.update_home_statuses([], T0 + 3)
    (status,) = store.home_statuses().values()
    assert (status.home, status.state, status.ts_ms, status.last_seen_ms, status.backlog) == (
        "home-1",
        "offline",
        None,
        T0 + 2,
        None,
    )
    assert status.payload == {"v": 1, "home": "home-1", "state": "offline"}


def test_iter_readings_streams_one_home(store: Store) -> None:
    store.insert_batches(
        [
            ("home-1", batch("home-1", *(reading("meter", s) for s in range(1, 101)))),
            ("home-2", batch("home-2", reading("meter", 1))),
        ],
        T0,
    )
    it = store.iter_readings("home-2")
    assert [(r.home, r.seq) for r in it] == [("home-2", 1)]
    assert sum(1 for _ in store.iter_readings()) == 101


# -- summary ----------------------------------------------------------------------------------


def test_summary_from_counters(store: Store) -> None:
    store.insert_batches(
        [
            (
                "home-1",
                batch(
                    "home-1",
                    reading("grid", 1, energy_import_wh=1000.0, energy_export_wh=50.0),
                    reading("grid", 2, power_w=3.0),  # no counters: skipped
                    reading("grid", 3, energy_import_wh=1250.5, energy_export_wh=80.0),
                    reading("pv", 1, Role.PV, energy_wh=500.0),
                    reading("pv", 2, Role.PV, energy_wh=700.0),
                    reading("wind", 4, Role.WIND, energy_wh=20.0),
                    reading("wind", 9, Role.WIND, energy_wh=25.0),
                    reading("bat", 1, Role.BATTERY, energy_wh=1.0),
                    reading("bat", 2, Role.BATTERY, energy_wh=99.0),  # not generation
                ),
            ),
            ("home-2", batch("home-2", reading("load", 1, Role.LOAD))),
        ],
        T0,
    )
    assert home_summaries(store) == {
        "home-1": HomeSummary(
            home="home-1", readings=9, imported_wh=250.5, exported_wh=30.0, generated_wh=205.0
        ),
        "home-2": HomeSummary(home="home-2", readings=1),
    }


def test_summarize_is_pure_over_device_counters() -> None:
    imp = "energy_import_wh"
    devices = [
        DeviceCounters("h1", "g1", Role.GRID, 3, {imp: 10.0}, {imp: 15.0}),
        DeviceCounters("h1", "g2", Role.GRID, 2, {imp: 1.0}, {imp: 2.0}),
        DeviceCounters("h0", "pv", Role.PV, 1, {"energy_wh": 4.0}, {"energy_wh": 4.0}),
        DeviceCounters("h0", "l", Role.LOAD, 5, {"energy_wh": 4.0}, {"energy_wh": 40.0}),
    ]
    result = summarize(devices)
    assert list(result) == ["h0", "h1"]
    assert result["h1"] == HomeSummary("h1", readings=5, imported_wh=6.0)
    assert result["h0"] == HomeSummary("h0", readings=6, generated_wh=0.0)
    assert summarize([]) == {}
