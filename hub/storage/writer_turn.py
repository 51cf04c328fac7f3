"""Turns at writing the hub database, handed from one ingest process to the next at once.

Why: the hub and its ``--worker`` processes (shared subscription) write one SQLite file. When one
of them holds the write lock, SQLite makes the others wait in its busy handler, which sleeps in
growing steps (1, 2, 5, ... up to 100 ms) and looks again. A group of readings holds the lock
for many such steps, so a waiter often slept on long after the lock was free, and the database
stood idle between the processes' commits. ``flock(2)`` on a file beside the database wakes the
next waiter as soon as the holder lets go. (Timings: ``bench/README.md``, "Writer turns".)

This only orders the writers that take it: SQLite's own locking still decides who may write, so
a tool that writes without a turn is merely slower to get in, never unsafe. The lock file holds
nothing; it is never the database file itself, because closing any descriptor of that file would
drop SQLite's own POSIX locks on it.

The turn's holder also runs :data:`TURN_BOOST` nice steps ahead of the rest of the machine for
the turn (Linux, where each thread has its own nice value). The turn is the one part of ingest
that cannot run in parallel, and on a small machine the scheduler preempted its holder for the
other ingest process's decoding, paho's threads and the broker, so a reading took longer inside
a turn in wall time than in CPU time; the boost gives that time back to the turn (measured in
``bench/README.md``, "Priority for the turn"). Lowering a nice value needs ``RLIMIT_NICE``
(systemd: ``LimitNICE=-5``, set in the shipped units) or root; without it the turn is taken at
the thread's own priority, and that is logged once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

SUFFIX: Final = "-writer"
"""Appended to the database's file name, as SQLite appends ``-wal`` and ``-shm``."""

TURN_BOOST: Final = 5
"""Nice steps the holder of a turn gains for its turn (0: none). Five is enough to stop other
normal-priority work preempting the writer; it is given back the moment the turn ends."""


class WriterTurn:
    """An exclusive ``flock`` on ``<database>-writer``, taken around each write transaction.

    Opened on first use and kept open until :meth:`close`. Where the file cannot be made (a
    read-only directory) or locked (a file system without ``flock``), turns are skipped and
    SQLite's busy handler orders the writers as before. Thread-safe; the holder's threads must
    not take a second turn on another :class:`WriterTurn` of the same database while holding
    one (they would wait on themselves). The thread that takes a turn runs ``boost`` nice steps
    ahead from just before the wait until the turn ends (the module's docstring says why).
    """

    def __init__(self, database: Path, boost: int = TURN_BOOST) -> None:
        self.path = database.with_name(database.name + SUFFIX)
        self._fd: int | None = None
        self._failed = False
        self._guard = threading.Lock()
        self._boost = boost if sys.platform == "linux" else 0

    def _raise_priority(self) -> int | None:
        """Lower this thread's nice value by the boost; the value before, or None if unchanged."""
        if not self._boost:
            return None
        thread = threading.get_native_id()
        try:
            before = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, max(-20, before - self._boost))
        except OSError as exc:  # never a reason to fail an insert: go on at its own priority
            self._boost = 0
            denied = exc.errno in (errno.EACCES, errno.EPERM)
            how = f"; allow it with LimitNICE=-{TURN_BOOST}" if denied else ""
            log.info(
                "writer turns at the thread's own priority: its nice value cannot be lowered "
                "(%s)%s",
                exc.strerror,
                how,
            )
            return None
        return before

    @contextlib.contextmanager
    def _boosted(self) -> Iterator[None]:
        """This thread boosted for the block, then at its own priority again (raising a nice
        value is always permitted; should it fail still, boosting stops rather than leave turn
        after turn ahead of the machine)."""
        before = self._raise_priority()
        try:
            yield
        finally:
            if before is not None:
                try:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), before)
                except OSError as exc:
                    self._boost = 0
                    log.warning("could not give back the writer turn's priority: %s", exc.strerror)

    def _descriptor(self) -> int | None:
        if self._fd is None and not self._failed:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._give_up(exc)
        return self._fd

    def _give_up(self, exc: OSError) -> None:
        self._failed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        log.info(
            "no writer turns for %s (%s): SQLite's busy handler orders writers",
            self.path,
            exc.strerror,
        )

    def _lock(self) -> int | None:
        """Wait for this process's lock on the file; its descriptor, or None without turns."""
        fd = self._descriptor()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # ENOLCK on some network file systems: go without
                self._give_up(exc)
                return None
        return fd

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        """Wait for this process's turn (GIL released while waiting), then hold it, boosted
        from before the wait, so that the holder runs as soon as the previous one lets go."""
        with self._guard, self._boosted():
            fd = self._lock()
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
