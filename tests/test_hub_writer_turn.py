"""Writer turns: the flock that hands the database from one ingest process to the next."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hub.store import Store
from hub.writer_turn import WriterTurn
from protocol.clock import ManualClock
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role

T0 = 1_750_000_000_000


@contextmanager
def probe(path: Path) -> Iterator[int]:
    """Another open file description of the lock file, as another process would have."""
    fd = os.open(path, os.O_RDWR)
    try:
        yield fd
    finally:
        os.close(fd)


def held_elsewhere(path: Path) -> bool:
    with probe(path) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False


def test_a_turn_excludes_other_writers_and_ends_with_its_block(tmp_path: Path) -> None:
    turn = WriterTurn(tmp_path / "hub.db")
    with turn():
        assert turn.path == tmp_path / "hub.db-writer"
        assert held_elsewhere(turn.path)
    assert not held_elsewhere(turn.path)
    with pytest.raises(RuntimeError), turn():
        raise RuntimeError("the transaction failed")
    assert not held_elsewhere(turn.path)  # released on the way out of an exception too
    turn.close()


def test_the_lock_file_is_private_and_never_the_database(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    turn = WriterTurn(db)
    with turn():
        pass
    assert stat.S_IMODE(turn.path.stat().st_mode) == 0o600
    assert not db.exists()  # the turn never opened (let alone created) the database file
    turn.close()


def test_a_second_turn_waits_for_the_first(tmp_path: Path) -> None:
    first, second = WriterTurn(tmp_path / "hub.db"), WriterTurn(tmp_path / "hub.db")
    released = threading.Event()
    saw_released: list[bool] = []
    asking = threading.Event()

    def other() -> None:
        asking.set()
        with second():  # blocks (GIL released) until the first turn ends
            saw_released.append(released.is_set())

    with first():
        t = threading.Thread(target=other)
        t.start()
        asking.wait(5)
        assert held_elsewhere(first.path)
        released.set()
    t.join(5)
    assert saw_released == [True]
    first.close()
    second.close()


def test_no_place_for_the_lock_file_means_no_turns_not_a_failure(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    turn = WriterTurn(not_a_dir / "hub.db")  # its directory cannot exist
    with turn():
        pass
    with turn():  # asked once, not again
        pass
    turn.close()


def test_a_file_system_without_flock_means_no_turns_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A network file system may refuse flock (ENOLCK); that cannot be staged here, so flock is
    # replaced for this one test.
    calls: list[int] = []

    def refuse(fd: int, operation: int) -> None:
        calls.append(operation)
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    turn = WriterTurn(tmp_path / "hub.db")
    with turn():  # refused: the block runs all the same
        pass
    with turn():  # and flock is not asked again
        pass
    assert calls == [fcntl.LOCK_EX]
    turn.close()


def _batch(home: str, device: str, role: Role, seqs: range) -> ReadingBatch:
    readings = [
        Reading(device, s, T0 + s * 10_000, role, "g1", {"power_w": float(s)}) for s in seqs
    ]
    return ReadingBatch(home=home, sent_ms=T0, readings=readings)


def test_two_stores_on_one_file_write_in_turns_and_store_each_reading_once(
    tmp_path: Path,
) -> None:
    # Two Store objects are two open file descriptions of the lock file, as two processes on a
    # shared subscription would be; their overlapping batches must all land exactly once.
    db = tmp_path / "hub.db"
    stores = [Store.open(db, "coop-a", clock=ManualClock(T0)) for _ in range(2)]
    errors: list[BaseException] = []

    def work(store: Store, offset: int) -> None:
        try:
            for k in range(20):
                first = 1 + (k * 50 + offset) % 900
                items = [
                    ("home-1", _batch("home-1", "meter", Role.GRID, range(first, first + 100))),
                    ("home-2", _batch("home-2", "pv", Role.PV, range(first, first + 100))),
                ]
                result = store.insert_batches(items, T0)
                assert result.homes["home-1"].committed["meter"] == list(range(first, first + 100))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, 25 * i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with stores[0].db.conn as conn:
        per_device = conn.execute(
            "SELECT device_id, COUNT(*), COUNT(DISTINCT seq) FROM readings GROUP BY device_id"
        ).fetchall()
    assert len(per_device) == 2
    assert all(n == distinct for _, n, distinct in per_device)
    assert not held_elsewhere(db.with_name("hub.db-writer"))
    for s in stores:
        s.close()
