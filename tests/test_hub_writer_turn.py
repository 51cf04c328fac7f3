"""Writer turns: the flock that hands the database from one ingest process to the next."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hub.storage.store import Store
from hub.storage.writer_turn import TURN_BOOST, WriterTurn
from protocol.clock import ManualClock
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS


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


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0,
    reason="lowering a nice value needs root or RLIMIT_NICE (CI runs as root)",
)
def test_the_holder_runs_ahead_for_its_turn_and_gives_the_priority_back(tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def writer() -> None:  # a thread of its own: each Linux thread has its own nice value
        turn = WriterTurn(tmp_path / "hub.db")
        seen["before"] = _nice()
        with turn():
            seen["in the turn"] = _nice()
        seen["after"] = _nice()
        with pytest.raises(RuntimeError), turn():
            raise RuntimeError("the insert failed")
        seen["after a failure"] = _nice()
        turn.close()

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    before = seen["before"]
    assert seen == {
        "before": before,
        "in the turn": max(-20, before - TURN_BOOST),
        "after": before,
        "after a failure": before,
    }


def test_a_priority_call_that_fails_otherwise_never_fails_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An error other than EPERM (a sandbox's seccomp filter, say) cannot be staged here, so
    # setpriority is replaced for this one test.
    calls: list[int] = []

    def refuse(which: int, who: int, prio: int) -> None:
        calls.append(prio)
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(os, "setpriority", refuse)
    turn = WriterTurn(tmp_path / "hub.db")
    with caplog.at_level("INFO", logger="hub.storage.writer_turn"):
        for _ in range(2):
            with turn():
                assert held_elsewhere(turn.path)  # a real turn all the same
    assert len(calls) == (1 if sys.platform == "linux" else 0)  # not asked again
    assert [r.getMessage() for r in caplog.records if "priority" in r.getMessage()] == (
        ["writer turns at the thread's own priority: its nice value cannot be lowered "
         "(Invalid argument)"] if sys.platform == "linux" else []
    )  # fmt: skip
    turn.close()


# Run as an unprivileged user (nobody, when the tests run as root) with RLIMIT_NICE at 0: the
# turn must not be refused, must leave the nice value alone, and must say so once. Everything
# is imported before the user changes: nobody may not read the interpreter's own directories.
_UNPRIVILEGED = """
import json, logging, os, resource, sys, threading
from pathlib import Path
from hub.storage.writer_turn import WriterTurn
records = []
logging.getLogger("hub.storage.writer_turn").setLevel(logging.INFO)
logging.getLogger("hub.storage.writer_turn").addHandler(
    type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})()
)
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
nice = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
turn = WriterTurn(Path(sys.argv[1]) / "hub.db")
before = nice()
inside = []
for _ in range(2):
    with turn():
        inside.append((nice(), os.path.exists(turn.path)))
print(json.dumps({"before": before, "inside": inside, "after": nice(), "log": records}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="thread nice values are Linux's")
def test_without_permission_the_turn_is_taken_at_the_threads_own_priority() -> None:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="coopwatt-nobody-") as d:
        os.chmod(d, 0o777)  # a place the unprivileged user may make its lock file
        out = subprocess.run(
            [sys.executable, "-c", _UNPRIVILEGED, d],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            check=False,
        )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    before = got["before"]
    assert got["inside"] == [[before, True], [before, True]]  # a real turn, at its own nice
    assert got["after"] == before
    refusals = [m for m in got["log"] if "cannot be lowered" in m and "LimitNICE=-5" in m]
    assert len(refusals) == 1, got["log"]


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
