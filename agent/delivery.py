"""What to send, and when: live readings at once, a backlog in large batches behind them.

At most ``window`` readings are in flight (sent, not yet acked), so a day's backlog drains as
fast as the hub commits it without flooding the broker or the Pi's memory, and each poll's live
readings still go out straight away instead of queueing behind the backlog. Readings in flight
are sent again after a reconnect, or when no ack has come for ``resend_after_s`` wall seconds (a
hub restart loses what it had not committed); the hub's idempotent insert makes that harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

from agent.outbox import Outbox, Row
from protocol.clock import Clock
from protocol.codec import encode_batch
from protocol.payloads import Ack

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 1000  # readings per message: ~150 kB, far under the 1 MiB payload limit
WINDOW: Final = 4000  # readings in flight at most
RESEND_AFTER_S: Final = 30.0


class Delivery:
    def __init__(
        self,
        outbox: Outbox,
        home: str,
        clock: Clock,
        publish: Callable[[bytes], object],
        *,
        batch_size: int = BATCH_SIZE,
        window: int = WINDOW,
        resend_after_s: float = RESEND_AFTER_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.home = home
        self.clock = clock
        self.publish = publish
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        self.monotonic = monotonic
        self.inflight: dict[tuple[str, int], float] = {}  # (device, seq) -> when sent
        self._cursor: dict[str, int] = {}  # backlog read position per device (seq)
        self._last_progress = monotonic()

    def restart(self) -> None:
        """Forget what is in flight: everything unacked is sent again (after a reconnect)."""
        self.inflight.clear()
        self._cursor.clear()
        self._last_progress = self.monotonic()

    def _send(self, rows: list[Row]) -> None:
        if rows and not self.inflight:
            self._last_progress = self.monotonic()  # the ack clock starts with the first send
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i : i + self.batch_size]
            self.publish(encode_batch(self.home, self.clock.now_ms(), [r.body for r in chunk]))
            now = self.monotonic()
            for r in chunk:
                self.inflight[(r.device, r.seq)] = now

    def send(self, live: Iterable[Row] = ()) -> int:
        """Send ``live`` now, then backlog while the window has room; returns readings sent."""
        if self.inflight and self.monotonic() - self._last_progress > self.resend_after_s:
            log.info("no ack for %.0f s: sending %d unacked readings again",
                     self.resend_after_s, len(self.inflight))  # fmt: skip
            self.restart()
        fresh = [r for r in live if (r.device, r.seq) not in self.inflight]
        self._send(fresh)
        sent = len(fresh)
        while (room := self.window - len(self.inflight)) >= self.batch_size or (
            room > 0 and not self.inflight
        ):
            page = self.outbox.after(self._cursor, min(room, self.batch_size))
            if not page:
                break
            for r in page:
                self._cursor[r.device] = max(self._cursor.get(r.device, 0), r.seq)
            rows = [
                r
                for r in page
                if (r.device, r.seq) not in self.inflight
                and not self.outbox.is_acked(r.device, r.seq)
            ]
            if rows:
                self._send(rows)
                sent += len(rows)
        return sent

    def acked(self, acks: Iterable[Ack]) -> int:
        """Take acks: delete what they name from the outbox; returns readings deleted."""
        done: dict[str, list[int]] = {}
        for ack in acks:
            for device in ack.acked:
                done.setdefault(device, []).extend(ack.seqs(device))
        for device, seqs in done.items():
            for s in seqs:
                self.inflight.pop((device, s), None)
        deleted = self.outbox.remove(done)
        if done:
            self._last_progress = self.monotonic()
        return deleted
