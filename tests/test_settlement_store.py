"""Settlement writes through the Store: its lock and writer turn, like every other writer."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest

from hub.settlement.engine import SettleResult, settle
from hub.settlement.ledger import Ledger
from hub.storage.store import Store
from protocol.clock import ManualClock
from tests.test_settlement_ledger import COOP, JUNE_2, NOW, insert, scheme, sim_readings


def test_settle_waits_for_another_stores_transaction_and_runs_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Store of the same file holds ``transaction()`` on another thread: a settle run
    started meanwhile waits for its writer turn and settles once the holder has committed,
    with no "database is locked". SQLite's busy timeout is 0 on the settling store's writer,
    so nothing but the turn can make it wait (a write that bypassed the turn failed here)."""
    sch = scheme()
    path = tmp_path / "hub.db"
    settling = Store.open(path, COOP, clock=ManualClock(NOW))
    holder = Store.open(path, COOP, clock=ManualClock(NOW))
    insert(settling, sim_readings(sch, JUNE_2, 1, homes=2, step_min=15))
    settling.db.conn.execute("PRAGMA busy_timeout = 0")

    turn = settling._writer_turn
    take_turn = turn._lock
    events: list[str] = []
    holding, release = threading.Event(), threading.Event()
    waiting = threading.Event()  # the settle thread waits for its turn, or has ended
    asked_while_held: list[bool] = []

    def lock() -> int | None:  # in the settle thread, about to wait for its writer turn
        asked_while_held.append(not release.is_set())
        waiting.set()
        return take_turn()

    monkeypatch.setattr(turn, "_lock", lock)

    def hold() -> None:
        with holder.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('held-by', 'another store')")
            holding.set()
            release.wait(60)
            events.append("holder commits")

    results: list[SettleResult] = []
    errors: list[BaseException] = []

    def progress(day: date, outcome: str) -> None:
        events.append(f"{day} {outcome}")

    def run_settle() -> None:
        try:
            results.append(settle(settling, sch, [JUNE_2], NOW, progress))
        except BaseException as exc:
            errors.append(exc)
        finally:
            waiting.set()

    holding_thread = threading.Thread(target=hold)
    holding_thread.start()
    try:
        assert holding.wait(60)
        settle_thread = threading.Thread(target=run_settle)
        settle_thread.start()
        assert waiting.wait(60)
    finally:
        release.set()
        holding_thread.join(60)
    settle_thread.join(60)

    assert not settle_thread.is_alive()
    assert errors == []
    assert asked_while_held[0]  # its first write asked for the turn while the other held it
    assert events == ["holder commits", f"{JUNE_2} settled"]
    assert results[0].count("settled") == 1 and results[0].intervals == 96
    assert Ledger(settling).verify() == []
    row = settling.reader().execute("SELECT value FROM meta WHERE key = 'held-by'").fetchone()
    assert row == ("another store",)
    holder.close()
    settling.close()
