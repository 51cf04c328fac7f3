"""A Doorbell behaves as a threading.Event does for its one waiter (the agent's poll loop)."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import Doorbell, SystemClock

OPS = st.lists(st.sampled_from(["set", "clear", "wait", "is_set"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_one_thread_sees_what_an_event_would_show(ops: list[str]) -> None:
    """The model is the standard library's Event: every answer must match it."""
    bell, event = Doorbell(), threading.Event()
    for op in ops:
        if op == "set":
            bell.set()
            event.set()
        elif op == "clear":
            bell.clear()
            event.clear()
        elif op == "wait":
            assert bell.wait(0) == event.wait(0)
        else:
            assert bell.is_set() == event.is_set()


def test_a_ring_from_another_thread_ends_a_long_wait_and_none_is_lost() -> None:
    """200 rings, each after the waiter cleared the last one: every wait ends by a ring (a lost
    one would block for the 30 s timeout), and a wait with nobody ringing runs out."""
    bell = Doorbell()
    rings = 200
    cleared = threading.Semaphore(0)

    def ring() -> None:
        for _ in range(rings):
            cleared.acquire()
            bell.set()

    ringer = threading.Thread(target=ring)
    ringer.start()
    began = time.monotonic()
    for _ in range(rings):
        bell.clear()
        cleared.release()
        assert bell.wait(30.0)
    ringer.join()
    assert time.monotonic() - began < 30.0
    bell.clear()
    assert not bell.wait(0.01)


def test_a_clock_sleep_ends_when_rung() -> None:
    bell = Doorbell()
    clock = SystemClock()
    threading.Timer(0.05, bell.set).start()
    assert clock.sleep_until_ms(clock.now_ms() + 60_000, bell)  # woken, not slept out
