"""Slowing down wrong setup codes and passwords, per client address and overall.

After ``FREE_FAILURES`` failures in a row, each further attempt must wait 2^(n-3) seconds after
the n-th failure (1, 2, 4, ... up to ``CAP_S``). An attempt that comes too early is answered at
once with how long to wait; nothing sleeps, and the early attempt is not counted. A success
clears the counts. The overall count slows a guesser who changes address; it is cleared by any
success too, so the household's own sign-in ends a lock-out it suffered meanwhile.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from protocol.clock import Clock

FREE_FAILURES: Final = 3
CAP_S: Final = 15 * 60
MAX_CLIENTS: Final = 1024  # addresses remembered; the oldest is forgotten beyond this
OVERALL: Final = "*"


def delay_s(failures: int) -> int:
    """Seconds to wait after the ``failures``-th failure in a row."""
    if failures < FREE_FAILURES:
        return 0
    exponent = failures - FREE_FAILURES
    return CAP_S if exponent >= 10 else min(CAP_S, 2**exponent)


@dataclass(slots=True)
class _Count:
    failures: int
    last_ms: int


class Throttle:
    def __init__(self, clock: Clock, max_clients: int = MAX_CLIENTS) -> None:
        self.clock = clock
        self.max_clients = max_clients
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def _wait_ms(self, key: str, now_ms: int) -> int:
        count = self._counts.get(key)
        if count is None:
            return 0
        return max(0, count.last_ms + delay_s(count.failures) * 1000 - now_ms)

    def wait_s(self, client: str) -> int:
        """Whole seconds before ``client`` may try again (0: now)."""
        now = self.clock.now_ms()
        with self._lock:
            wait_ms = max(self._wait_ms(client, now), self._wait_ms(OVERALL, now))
        return -(-wait_ms // 1000)

    def failed(self, client: str) -> int:
        """Count a failure; the seconds ``client`` must now wait."""
        now = self.clock.now_ms()
        with self._lock:
            for key in (client, OVERALL):
                count = self._counts.pop(key, None) or _Count(0, now)
                count.failures += 1
                count.last_ms = now
                self._counts[key] = count  # (re)inserted last: the dict is oldest first
            while len(self._counts) > self.max_clients + 1:
                oldest = next(k for k in self._counts if k != OVERALL)
                del self._counts[oldest]
        return self.wait_s(client)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._counts.pop(client, None)
            self._counts.pop(OVERALL, None)
