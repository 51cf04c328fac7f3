"""Injectable clocks, so the simulator can run a day in seconds and tests never sleep for time.

Every time-dependent part of coopwatt takes a :class:`Clock`. Time is UTC epoch milliseconds
(``ts_ms``) everywhere; durations passed to :meth:`Clock.sleep_until_ms` are in the clock's own
time, which for a :class:`SimClock` runs ``speed`` times faster than the wall.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Protocol


class Waker(Protocol):
    """What ends a sleep early: a :class:`threading.Event` or a :class:`Doorbell`."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Doorbell:
    """A :class:`threading.Event` for one waiting thread, at two thirds of its CPU per wait.

    ``Event.wait`` runs a Condition's Python code (a new lock, a waiter list) every time; a
    doorbell waits on one lock that ``set`` releases. An agent's poll loop waits every second,
    and the difference was 60 us of CPU a wait on a cold cache (issue 22, bench/README.md).
    Like an Event, a ``set`` before a ``clear`` is forgotten by it; a ``set`` after it always
    ends the next ``wait``. Any number of threads may ring; only one may wait. (A ring racing a
    ``clear`` may instead end the next wait early with False: a spurious wakeup, never a lost
    one.)
    """

    __slots__ = ("_bell", "_rung")

    def __init__(self) -> None:
        self._bell = threading.Lock()
        self._bell.acquire()  # held while nobody has rung: wait() blocks on it
        self._rung = False

    def set(self) -> None:
        self._rung = True  # before the release, so a wait() it ends sees it
        with contextlib.suppress(RuntimeError):  # rung already, and not yet cleared
            self._bell.release()

    def is_set(self) -> bool:
        return self._rung

    def clear(self) -> None:
        self._rung = False
        self._bell.acquire(blocking=False)  # a ring not waited for: taken back

    def wait(self, timeout: float | None = None) -> bool:
        """Until rung or ``timeout`` seconds passed; True when rung."""
        if not self._rung:
            self._bell.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        return self._rung


class Clock(Protocol):
    """What agent, hub and simulator need of time."""

    def now_ms(self) -> int:
        """Current time, UTC epoch milliseconds."""
        ...

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        """Block until the clock reaches ``target_ms`` or ``stop`` is set.

        Returns True when woken by ``stop``, False when the target time was reached.
        """
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        while True:
            remaining_s = (target_ms - self.now_ms()) / 1000
            if remaining_s <= 0:
                return stop.is_set()
            if stop.wait(remaining_s):
                return True


class SimClock:
    """Simulated time that runs ``speed`` times faster than the wall, from ``start_ms``.

    The clock stays at ``start_ms`` until :meth:`start` is called, and freezes at ``end_ms`` when
    one is given, so a demo can bring every part up before time moves and every meter can be read
    one last time at exactly the end.
    """

    def __init__(self, start_ms: int, speed: float = 1.0, end_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if end_ms is not None and end_ms < start_ms:
            raise ValueError("end_ms is before start_ms")
        self.start_ms = start_ms
        self.speed = speed
        self.end_ms = end_ms
        self._real_start: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Let simulated time begin to run."""
        with self._lock:
            if self._real_start is None:
                self._real_start = time.monotonic()

    @property
    def started(self) -> bool:
        return self._real_start is not None

    def now_ms(self) -> int:
        real_start = self._real_start
        if real_start is None:
            return self.start_ms
        t = self.start_ms + int((time.monotonic() - real_start) * 1000 * self.speed)
        return t if self.end_ms is None else min(t, self.end_ms)

    @property
    def finished(self) -> bool:
        """True once the clock has frozen at ``end_ms``."""
        return self.end_ms is not None and self.now_ms() >= self.end_ms

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        while True:
            now = self.now_ms()
            if now >= target_ms:
                return stop.is_set()
            frozen = not self.started or (self.end_ms is not None and target_ms > self.end_ms)
            # A frozen clock never reaches the target: look again now and then, for start().
            wait_s = 0.05 if frozen else (target_ms - now) / 1000 / self.speed
            if stop.wait(min(wait_s, 0.05) if frozen else wait_s):
                return True


class ManualClock:
    """A clock that moves only when a test calls :meth:`advance` or :meth:`set`."""

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms
        self._changed = threading.Condition()

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, t_ms: int) -> None:
        with self._changed:
            if t_ms < self._now_ms:
                raise ValueError("a ManualClock does not go backwards")
            self._now_ms = t_ms
            self._changed.notify_all()

    def advance(self, ms: int) -> None:
        self.set(self._now_ms + ms)

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        with self._changed:
            while self._now_ms < target_ms:
                if stop.is_set():
                    return True
                # The timeout only bounds how late a stop request is noticed.
                self._changed.wait(0.02)
        return stop.is_set()
