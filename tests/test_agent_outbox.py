"""The outbox keeps readings until acked, numbers them across restarts, and stays in budget."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.delivery import Delivery
from agent.outbox import Outbox, OutboxError, Polled
from protocol.aggregate import Sample, merge
from protocol.clock import ManualClock
from protocol.codec import decode
from protocol.payloads import Ack, ReadingBatch, seq_ranges
from protocol.quantities import Role
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS


def _cycle(t: int, import_wh: float = 5.0) -> list[Polled]:
    return [
        Polled(
            "grid-meter",
            Role.GRID,
            t,
            {"power_w": 100.0, "energy_import_wh": import_wh, "energy_export_wh": 0.0},
        ),
        Polled("pv-inverter", Role.PV, t, {"power_w": 50.0, "state": "mppt"}),
    ]


def test_seq_survives_restart_and_acked_rows_leave(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    first = box.add(_cycle(T0), "g1")
    assert [(r.device, r.seq) for r in first] == [("grid-meter", 1), ("pv-inverter", 1)]
    box.add(_cycle(T0 + 10_000), "g1")
    box.close()

    box = Outbox(tmp_path / "outbox.db")  # a restart: seq continues, nothing is lost
    assert box.count() == 4
    third = box.add(_cycle(T0 + 20_000), "g1")
    assert [r.seq for r in third] == [3, 3]
    assert box.remove({"grid-meter": [1, 2], "pv-inverter": [2, 99]}) == 3
    assert box.count() == 3
    assert box.is_acked("grid-meter", 1)  # gone for senders; from the file with the next cycle
    assert len(box.after({}, 100)) == 6
    box.flush()
    left = box.after({}, 100)
    assert [(r.device, r.seq) for r in left] == [
        ("pv-inverter", 1), ("grid-meter", 3), ("pv-inverter", 3),
    ]  # fmt: skip
    assert json.loads(left[0].body)["quantities"] == {"power_w": 50.0, "state": "mppt"}
    assert box.last_seq("grid-meter") == 3
    assert box.oldest_ts_ms() == T0
    assert box.count() == 3
    # Acked, though still in the file until the next cycle: it no longer waits for anything.
    box.remove({"pv-inverter": [1]})
    assert box.oldest_ts_ms() == T0 + 20_000
    box.remove({"grid-meter": [3], "pv-inverter": [3]})
    assert box.oldest_ts_ms() is None


def test_after_skips_past_the_cursor_and_respects_limit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    for i in range(5):
        box.add(_cycle(T0 + i * 1000), "g1")
    assert len(box.after({}, 3)) == 3
    rest = box.after({"grid-meter": 4, "pv-inverter": 2}, 100)
    assert [(r.device, r.seq) for r in rest] == [
        ("pv-inverter", 3), ("pv-inverter", 4), ("grid-meter", 5), ("pv-inverter", 5),
    ]  # fmt: skip


def test_a_newer_or_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(OutboxError, match="not an outbox"):
        Outbox(tmp_path / "junk.db")
    box = Outbox(tmp_path / "o.db")
    box.conn.execute("PRAGMA user_version=99")
    box.close()
    with pytest.raises(OutboxError, match="newer agent"):
        Outbox(tmp_path / "o.db")


@given(st.lists(st.sets(st.integers(1, 30)), max_size=6))
@settings(max_examples=40, deadline=None)
def test_remove_never_loses_an_unacked_reading(acks: list[set[int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        box = Outbox(Path(d) / "o.db", durable=False)
        for i in range(30):
            box.add([Polled("m", Role.GRID, T0 + i, {"power_w": float(i)})], "g1")
        acked: set[int] = set()
        for a in acks:
            box.remove({"m": sorted(a)})
            acked |= a
        assert box.count() == 30 - len(acked)
        box.close()  # acked rows leave the file by the time it is closed
        box = Outbox(Path(d) / "o.db")
        assert {r.seq for r in box.after({}, 1000)} == set(range(1, 31)) - acked
        assert box.count() == 30 - len(acked)
        box.close()


def _fill(box: Outbox, hours: float, step_s: int = 10) -> tuple[float, float]:
    """Poll a meter importing 1.2 kW every ``step_s`` for ``hours``; returns first/last Wh."""
    wh = 1000.0
    first = wh
    for i in range(int(hours * 3600 / step_s)):
        box.add([Polled("grid-meter", Role.GRID, T0 + i * step_s * 1000,
                        {"power_w": 1200.0, "energy_import_wh": wh, "energy_export_wh": 7.0,
                         "voltage_v": 230.0})], "g1")  # fmt: skip
        box.enforce_budget()
        wh += 1200.0 * step_s / 3600
    return first, wh - 1200.0 * step_s / 3600


def test_a_full_outbox_compacts_old_readings_keeping_counters_exact(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", budget_bytes=400_000, durable=False)
    first_wh, last_wh = _fill(box, hours=12)
    assert box.used_bytes() <= 400_000
    compacted = box.counter("compacted")
    assert compacted > 0
    assert box.counter("lost") == 0
    rows = box.after({}, 100_000)
    assert box.count() == len(rows) == 12 * 360 - compacted
    readings = [json.loads(r.body) for r in rows]
    # Every kept counter is the meter's exact value at its time, aggregates included, so
    # energy from counter differences is unchanged by compaction.
    for r in readings:
        expected = first_wh + 1200.0 * (r["ts_ms"] - T0) / 3_600_000
        assert r["quantities"]["energy_import_wh"] == pytest.approx(expected)
    assert readings[-1]["quantities"]["energy_import_wh"] == pytest.approx(last_wh)
    aggregates = [r for r in readings if "period_ms" in r]
    assert aggregates, "old readings became aggregates"
    for a in aggregates:
        assert a["quantities"]["power_w"] == pytest.approx(1200.0)
        assert 0 < a["period_ms"] <= 15 * 60_000
    assert [r["seq"] for r in readings] == sorted(r["seq"] for r in readings)


def test_when_nothing_is_left_to_compact_the_oldest_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db", budget_bytes=60_000, durable=False)
    _fill(box, hours=48, step_s=300)  # one reading per 5 minutes: little to merge
    assert box.used_bytes() <= 60_000
    lost = box.counter("lost")
    assert lost > 0
    assert box.count() + lost + box.counter("compacted") == 48 * 12
    box.close()
    assert Outbox(tmp_path / "o.db").counter("lost") == lost  # persisted across restarts


def test_merge_keeps_counters_and_derives_power_from_them() -> None:
    samples = [
        Sample(T0, {"power_w": 900.0, "energy_import_wh": 100.0, "energy_export_wh": 5.0,
                    "voltage_v": 229.0}),
        Sample(T0 + 600_000, {"power_w": 1500.0, "energy_import_wh": 300.0,
                              "energy_export_wh": 5.0, "voltage_v": 231.0}),
    ]  # fmt: skip
    agg = merge(Role.GRID, samples)
    assert agg.ts_ms == T0 + 600_000
    assert agg.period_ms == 600_000
    assert agg.quantities["energy_import_wh"] == 300.0
    assert agg.quantities["power_w"] == pytest.approx(1200.0)  # 200 Wh over 10 minutes
    assert agg.quantities["voltage_v"] == pytest.approx(230.0)
    based = merge(Role.GRID, samples[1:], base=samples[0])
    assert based.period_ms == 600_000
    assert based.quantities["power_w"] == pytest.approx(1200.0)
    one = merge(Role.PV, [Sample(T0, {"power_w": 5.0, "state": "mppt"})])
    assert one.quantities == {"power_w": 5.0, "state": "mppt"}
    with pytest.raises(ValueError, match="nothing"):
        merge(Role.PV, [])


class _Wire:
    def __init__(self) -> None:
        self.sent: list[ReadingBatch] = []

    def publish(self, data: bytes) -> None:
        self.sent.append(decode(ReadingBatch, data))

    def keys(self, batch: int) -> list[tuple[str, int]]:
        return [(r.device, r.seq) for r in self.sent[batch].readings]


def _ack(batch: ReadingBatch) -> Ack:
    by_device: dict[str, list[int]] = {}
    for r in batch.readings:
        by_device.setdefault(r.device, []).append(r.seq)
    return Ack(batch.home, {d: seq_ranges(s) for d, s in by_device.items()})


def test_delivery_sends_live_first_and_drains_the_backlog_within_a_window(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for i in range(50):  # an outage's worth of backlog
        box.add(_cycle(T0 + i * 10_000), "g1")
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, batch_size=20, window=40,
                 monotonic=lambda: now[0])  # fmt: skip
    live = box.add(_cycle(T0 + 500_000), "g1")
    # Live readings go at once; the backlog follows in whole batches while the window has room.
    assert d.send(live) == 2 + 20
    assert wire.keys(0) == [("grid-meter", 51), ("pv-inverter", 51)]
    assert len(d.inflight) == 22
    assert d.send() == 0  # the window is full: wait for acks
    assert wire.sent[1].readings[0].seq == 1  # the backlog starts with the oldest
    d.acked([_ack(b) for b in wire.sent])
    assert not d.inflight
    while d.send():
        d.acked([_ack(wire.sent[-1])] + [_ack(b) for b in wire.sent])
    assert box.count() == 0
    sent = [(r.device, r.seq) for b in wire.sent for r in b.readings]
    assert len(set(sent)) == 102


def test_delivery_resends_after_silence_and_after_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, resend_after_s=30,
                 monotonic=lambda: now[0])  # fmt: skip
    d.send(box.add(_cycle(T0), "g1"))
    assert d.send() == 0  # in flight: nothing to send again yet
    now[0] = 31.0  # the hub restarted and lost what it had not committed
    assert d.send() == 2
    d.restart()  # a reconnect
    assert d.send() == 2
    assert len(wire.sent) == 3
    d.acked([_ack(wire.sent[0])])
    assert box.count() == 0


def test_a_lost_batch_is_sent_again_while_later_batches_are_acked(tmp_path: Path) -> None:
    """Each batch has its own deadline: acks for later readings do not excuse a lost one."""
    box = Outbox(tmp_path / "o.db")
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, resend_after_s=30,
                 max_resend_after_s=120, monotonic=lambda: now[0])  # fmt: skip
    d.send(box.add(_cycle(T0), "g1"))  # batch 0: lost on the way (a broker restart)
    for i in range(1, 8):  # a poll every 10 s, each batch acked at once
        now[0] = i * 10.0
        d.send(box.add(_cycle(T0 + i * 10_000), "g1"))
        d.acked([_ack(wire.sent[-1])])
    # By t=70 s the lost batch was due at t=30 s and went again, alone.
    resent = [b for b in wire.sent if [r.seq for r in b.readings] == [1, 1]]
    assert len(resent) == 2, [[r.seq for r in b.readings] for b in wire.sent]
    # Unacked again: the next try backs off to twice the wait (60 s after the first resend).
    now[0] = 89.0
    assert d.send() == 0
    now[0] = 91.0
    assert d.send() == 2
    assert [r.seq for r in wire.sent[-1].readings] == [1, 1]
    d.acked([_ack(wire.sent[-1])])
    assert box.count() == 0 and not d.inflight


def test_unacked_readings_are_retried_at_most_every_max_wait(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, resend_after_s=30,
                 max_resend_after_s=120, monotonic=lambda: now[0])  # fmt: skip
    d.send(box.add(_cycle(T0), "g1"))
    sends = []
    for t in range(0, 1000):  # a hub that never acks: tries at 0, 30, 90, 210, 330, ...
        now[0] = float(t)
        if d.send():
            sends.append(t)
    assert sends[:6] == [30, 90, 210, 330, 450, 570]


def test_a_hub_that_never_acks_holds_the_window_and_gets_one_message_per_resend(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db")
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, batch_size=20, window=10,
                 resend_after_s=30, monotonic=lambda: now[0])  # fmt: skip
    for t in range(100):  # a poll a second, two readings each, never acked
        now[0] = float(max(0, t - 4))  # the first five polls all at t=0 (a catch-up)
        d.send(box.add(_cycle(T0 + t * 1000), "g1"))
        assert len(d.inflight) <= 10
    # Five polls filled the window at t=0; the rest waited in the outbox. At t=30 those ten
    # went again, all due at once, in one message; at t=90 (twice the wait) once more.
    assert [len(b.readings) for b in wire.sent] == [2] * 5 + [10, 10]
    assert [r.seq for r in wire.sent[5].readings] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert box.count() == 200


def test_acked_readings_leave_the_file_with_the_next_cycle_not_in_a_commit_of_their_own(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db")
    box.add(_cycle(T0), "g1")
    commits = box.conn.total_changes
    box.remove({"grid-meter": [1], "pv-inverter": [1]})
    assert box.conn.total_changes == commits  # nothing written yet
    box.add(_cycle(T0 + 10_000), "g1")
    rows = box.conn.execute("SELECT device, seq FROM outbox ORDER BY device, seq").fetchall()
    assert rows == [("grid-meter", 2), ("pv-inverter", 2)]
    box.flush_every = 2
    box.remove({"grid-meter": [2], "pv-inverter": [2]})  # a drain deletes as it goes
    assert box.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_a_send_with_every_waiting_reading_in_flight_does_not_query_the_outbox(
    tmp_path: Path,
) -> None:
    """At 1 s polling the live readings are all there is: looking for a backlog every cycle
    costs the Pi CPU for nothing (issue 22). A backlog is still found once there is one."""
    box = Outbox(tmp_path / "o.db", durable=False)
    wire = _Wire()
    now = [0.0]
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, monotonic=lambda: now[0])
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    for i in range(3):  # polled, sent live, acked: the steady state
        d.send(box.add(_cycle(T0 + i * 1000), "g1"))
        d.acked([_ack(wire.sent[-1])])
        statements.clear()
        assert d.send() == 0
        assert statements == []
    unsent = box.add(_cycle(T0 + 3000), "g1")  # stored while the broker was away: a backlog
    assert d.send() == 2
    assert wire.keys(-1) == [(r.device, r.seq) for r in unsent]


def test_a_poll_cycle_numbers_its_readings_without_reading_the_file(tmp_path: Path) -> None:
    """The seq is known from the last committed cycle (issue 22: a query less per poll); a
    cycle that fails and rolls back neither skips nor reuses a number."""
    box = Outbox(tmp_path / "o.db", durable=False)
    assert [r.seq for r in box.add(_cycle(T0), "g1")] == [1, 1]
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    assert [r.seq for r in box.add(_cycle(T0 + 1000), "g1")] == [2, 2]
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")], statements
    twice = [_cycle(T0 + 2000)[0], _cycle(T0 + 2000)[0]]  # one device twice: (device, seq) clash
    with pytest.raises(sqlite3.IntegrityError):
        box.add(twice, "g1")
    assert [r.seq for r in box.add(_cycle(T0 + 3000), "g1")] == [3, 3]
    box.close()
    assert Outbox(tmp_path / "o.db").last_seq("grid-meter") == 3


def test_a_poll_cycle_within_budget_is_one_transaction_and_nothing_else(tmp_path: Path) -> None:
    """Storing a cycle and checking the budget touch the file in the cycle's transaction only:
    each statement outside one costs SQLite a read transaction of its own, with its four POSIX
    locks (fcntl) on the WAL index, once a second on the Pi (issue 22). Over the budget it still
    compacts (see the tests above)."""
    box = Outbox(tmp_path / "o.db", durable=False)
    box.add(_cycle(T0), "g1")  # the first cycle looks up each device's last seq
    box.remove({"grid-meter": [1]})  # an ack: deleted with the next cycle's transaction
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    box.add(_cycle(T0 + 1000), "g1")
    box.enforce_budget()
    box.conn.set_trace_callback(None)
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT", statements
    assert "BEGIN IMMEDIATE" not in statements[1:] and "COMMIT" not in statements[:-1]
    with sqlite3.connect(tmp_path / "o.db") as db:  # what the cycle left in the file
        assert db.execute("SELECT device, seq FROM outbox ORDER BY device, seq").fetchall() == [
            ("grid-meter", 2), ("pv-inverter", 1), ("pv-inverter", 2),
        ]  # fmt: skip
    box.close()


def test_an_ack_of_readings_in_flight_asks_the_file_nothing(tmp_path: Path) -> None:
    """What is in flight was read from the outbox and is kept there until acked (enforce_budget
    leaves it alone), so its ack needs no query to know it was waiting: a read transaction per
    acked reading, with its locks on the WAL index, every few seconds (issue 22). An ack of a
    reading not in flight (a duplicate, one from before a reconnect) is still looked up."""
    box = Outbox(tmp_path / "o.db", durable=False)
    wire = _Wire()
    d = Delivery(box, "home-1", ManualClock(T0), wire.publish, monotonic=lambda: 0.0)
    d.send(box.add(_cycle(T0), "g1"))
    d.send(box.add(_cycle(T0 + 1000), "g1"))
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    assert d.acked([_ack(wire.sent[0])]) == 2
    assert statements == []
    assert box.count() == 2
    assert d.acked([_ack(wire.sent[0])]) == 0  # the same ack again: nothing more was waiting
    d.restart()  # a reconnect forgets what was in flight; the hub's late ack still counts
    assert d.acked([_ack(wire.sent[1])]) == 2
    assert box.count() == 0
    box.conn.set_trace_callback(None)
    box.close()
    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_a_poll_cycle_with_no_acks_writes_the_readings_alone(tmp_path: Path) -> None:
    """A device's next seq is known from its rows while it has any: the cycle's commit writes
    the outbox's page, not the seq table's too (a WAL frame less to sync every second). The
    seq table is written when rows leave (see the test below)."""
    box = Outbox(tmp_path / "o.db", durable=False)
    box.add(_cycle(T0), "g1")  # a device's first cycle in this process records it
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    box.add(_cycle(T0 + 1000), "g1")
    box.conn.set_trace_callback(None)
    assert not [s for s in statements if "device_seq" in s], statements
    box.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["poll", "ack-oldest", "ack-all", "reopen", "crash"])),
        max_size=30,
    )
)
def test_seq_rises_by_one_per_reading_whatever_was_acked_before_a_restart(
    steps: list[tuple[str]],
) -> None:
    """Each device's readings are numbered 1, 2, 3 ... without a gap or a repeat, across acks
    that empty the file, orderly restarts and crashes (a new connection beside the abandoned
    one: what a killed agent leaves)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "o.db"
        box = Outbox(path, durable=False)
        abandoned: list[Outbox] = []
        numbered: dict[str, list[int]] = {"grid-meter": [], "pv-inverter": []}
        waiting: list[tuple[str, int]] = []
        t = T0
        for (step,) in steps:
            if step == "poll":
                t += 1000
                for row in box.add(_cycle(t), "g1"):
                    numbered[row.device].append(row.seq)
                    waiting.append((row.device, row.seq))
            elif step.startswith("ack") and waiting:
                gone = waiting[:1] if step == "ack-oldest" else waiting
                acked: dict[str, list[int]] = {}
                for device, seq in gone:
                    acked.setdefault(device, []).append(seq)
                box.remove(acked)
                box.flush()
                waiting = waiting[len(gone) :]
            elif step == "reopen":
                box.close()
                box = Outbox(path, durable=False)
            elif step == "crash":
                abandoned.append(box)
                box = Outbox(path, durable=False)
        for device, seqs in numbered.items():
            assert seqs == list(range(1, len(seqs) + 1)), (device, seqs)
        box.close()
        for old in abandoned:
            old.conn.close()


def test_an_outbox_of_schema_1_numbers_on_from_where_it_stopped(tmp_path: Path) -> None:
    """A file as the previous agent left it (schema 1: device_seq written with every cycle),
    made here with plain SQL: the upgraded agent numbers on, and says schema 2 from then on."""
    with contextlib.closing(sqlite3.connect(tmp_path / "o.db")) as db:
        db.executescript(
            "CREATE TABLE device_seq (device TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);"
            "CREATE TABLE outbox (device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER "
            "NOT NULL, role TEXT NOT NULL, raw INTEGER NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (device, seq)) WITHOUT ROWID;"
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "INSERT INTO device_seq VALUES ('grid-meter', 41), ('pv-inverter', 7);"
            "INSERT INTO outbox VALUES ('pv-inverter', 7, 1782900000000, 'pv', 1, '{}');"
            "PRAGMA user_version=1;"
        )
    box = Outbox(tmp_path / "o.db", durable=False)
    assert [(r.device, r.seq) for r in box.add(_cycle(T0), "g1")] == [
        ("grid-meter", 42), ("pv-inverter", 8),
    ]  # fmt: skip
    box.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "o.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every fdatasync from here on: (the file, its size when synced), as the kernel names
    them."""
    synced: list[tuple[str, int]] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return synced


def test_readings_reach_the_disk_before_they_leave_the_home_not_at_every_poll(
    tmp_path: Path, syncs: list[tuple[str, int]]
) -> None:
    """A power cut may take back commits not yet synced, and with them the seqs they used: that
    is harmless only for readings the hub never got. So whatever is published was synced first
    (every byte of the WAL as the publish sees it), and polls held for the send interval are
    not synced one by one (issue 22: an fdatasync a second was the largest part of the CPU)."""
    path = tmp_path / "outbox.db"
    wal = f"{path}-wal"
    clock = ManualClock(T0)
    published: list[tuple[list[tuple[str, int]], int]] = []  # (syncs so far, WAL size)
    box = Outbox(path)
    delivery = Delivery(
        box, "home-1", clock, lambda _: published.append((list(syncs), os.path.getsize(wal)))
    )
    # SQLite syncs a WAL commit itself only under synchronous=FULL (2); NORMAL is 1.
    assert box.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    for i in range(5):  # five polls a second apart, held for the 5 s send interval
        clock.set(T0 + i * 1000)
        delivery.send(box.add(_cycle(clock.now_ms()), "g1"), next_pass_ms=T0 + (i + 1) * 1000)
    assert published == [] and syncs == []
    clock.set(T0 + 5000)
    delivery.send(box.add(_cycle(clock.now_ms()), "g1"), next_pass_ms=T0 + 6000)
    assert len(published) == 1
    synced_before, wal_size = published[0]
    assert synced_before == [(wal, wal_size)]  # one sync, of every committed frame
    delivery.restart()  # a reconnect sends the same readings again: nothing new to sync
    delivery.send(next_pass_ms=T0 + 6000)
    assert len(published) == 2 and published[1][0] == synced_before
    box.close()


def test_the_file_size_is_asked_only_when_the_budget_could_be_near(tmp_path: Path) -> None:
    """``PRAGMA page_count`` was a statement every poll cycle; far from the budget it is asked
    once in a great many cycles, near it at every cycle, and the budget still holds."""
    statements: list[str] = []
    far = Outbox(tmp_path / "far.db", budget_bytes=256 * 1024 * 1024, durable=False)
    far.conn.set_trace_callback(statements.append)
    for i in range(200):
        far.add(_cycle(T0 + i * 10_000), "g1")
        far.enforce_budget()
    assert sum("page_count" in s for s in statements) == 1
    far.close()

    statements.clear()
    near = Outbox(tmp_path / "near.db", budget_bytes=60_000, durable=False)
    near.conn.set_trace_callback(statements.append)
    asked = 0
    for i in range(200):
        before = len(statements)
        near.add(_cycle(T0 + i * 10_000), "g1")
        near.enforce_budget()
        asked += any("page_count" in s for s in statements[before:])
    assert asked == 200
    assert near.used_bytes() <= 60_000 and near.counter("compacted") > 0
    near.close()


def test_while_nothing_is_sent_commits_reach_the_disk_every_10_s(
    tmp_path: Path, syncs: list[tuple[str, int]]
) -> None:
    """In an outage nothing is sent, so no send asks for a sync: the outage's commits reach the
    disk at least every 10 s (what a power cut may take back), not only at SQLite's checkpoints
    a thousand pages apart (hours of a home's readings)."""
    now = [0.0]
    synced_at: list[tuple[float, str]] = []
    path = tmp_path / "outbox.db"
    box = Outbox(path, monotonic=lambda: now[0])
    for i in range(26):  # a poll a second from 0 to 25 s
        now[0] = float(i)
        before = len(syncs)
        box.add(_cycle(T0 + i * 1000), "g1")
        synced_at += [(now[0], file) for file, _ in syncs[before:]]
    assert synced_at == [(10.0, f"{path}-wal"), (20.0, f"{path}-wal")]  # by hand
    box.close()
