"""When to read a failing device again: bounded quick retries, then slow probing, with jitter.

Pure arithmetic over a failure count; the supervisor in :mod:`agent.devices` turns the delays
into due times on the injected clock, so nothing here sleeps and tests never wait for it.

- A transient failure (timeout, CRC error, exception codes 4-6, 0x0A, 0x0B) is retried after
  ``first_retry_s``, doubling each time, ``retries`` times. The device still counts as online.
- After that it is marked offline and probed with the same doubling delays, capped at
  ``offline_probe_s``, until it answers again; then it is online at once.
- A configuration error (exception codes 1-3, a profile that does not fit the device) is not
  retried: the status says what to fix, and the device is looked at again only every
  ``config_recheck_s`` in case an installer changed its settings.

Jitter (± ``jitter`` of each delay) keeps several agents behind one gateway, or several devices on
one bus, from retrying in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 3
    first_retry_s: float = 0.5
    max_retry_s: float = 30.0
    offline_probe_s: float = 60.0
    config_recheck_s: float = 600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.retries < 0 or not 0 <= self.jitter < 1:
            raise ValueError("retries must be >= 0 and jitter in [0, 1)")
        if not 0 < self.first_retry_s <= self.max_retry_s:
            raise ValueError("first_retry_s must be positive and at most max_retry_s")

    def offline_after(self, failures: int) -> bool:
        """True once ``failures`` consecutive transient failures mean the device is offline."""
        return failures > self.retries

    def longest_wait_s(self, interval_s: float) -> float:
        """The furthest ahead a device polled every ``interval_s`` is ever scheduled: a due
        time further away than this was set before the clock went back."""
        cap = max(self.max_retry_s, self.offline_probe_s) * (1.0 + self.jitter)
        return max(interval_s, cap, self.config_recheck_s)

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th consecutive transient failure (1-based)."""
        cap = self.offline_probe_s if self.offline_after(failures) else self.max_retry_s
        base = min(self.first_retry_s * 2.0 ** min(max(failures - 1, 0), 30), cap)
        return base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))
