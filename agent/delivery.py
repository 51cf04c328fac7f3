"""What to send, and when: live readings within ``send_interval_s``, a backlog in large batches
behind them.

At most ``window`` readings are in flight (sent, not yet acked), so a day's backlog drains as
fast as the hub commits it without flooding the broker or the Pi's memory, and live readings
still go out ahead of the backlog instead of queueing behind it (when the window is full, they
wait in the outbox like the backlog).

Live readings are held back and sent together while every one of them can still leave within
``send_interval_s`` (agent clock) of being handed over: at 1 s polling one message of six polls,
its PUBACK, the hub's ack and its PUBACK every 6 s instead of every second, which was about a
third of the agent's CPU (issue 22). Each is in the outbox before it is handed over, so holding
it risks nothing; polls further apart than the interval go out at once, as before.

Every batch has its own deadline: what of it is still unacked ``resend_after_s`` wall seconds
after it was sent goes again, then after twice that, and so on up to ``max_resend_after_s``,
whatever happens to other readings. A broker that restarted without its queue, a hub that died
holding uncommitted readings or a hub whose database was locked each lose a few batches while
later ones get through: one deadline for everything (reset by any ack) never resent those. What
falls due at once goes again together, in full batches and one log line. A reconnect sends
everything unacked again at once. The hub's idempotent insert makes a resend harmless. Only
the keys of what is in flight are kept: a resend reads the readings from the outbox again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from agent.outbox import Outbox, Row
from protocol.clock import Clock
from protocol.codec import encode_batch
from protocol.payloads import Ack

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 1000  # readings per message: ~150 kB, far under the 1 MiB payload limit
WINDOW: Final = 4000  # readings in flight at most
RESEND_AFTER_S: Final = 30.0  # first wait for an ack, wall seconds
MAX_RESEND_AFTER_S: Final = 120.0  # the backoff's cap: an unacked reading goes again this often
SEND_INTERVAL_S: Final = 5.0  # agent-clock seconds a live reading may wait for later ones


Key = tuple[str, int]  # (device, seq)


@dataclass(slots=True)
class _Batch:
    """Readings sent together and not yet acked, with when they go again."""

    keys: set[Key]
    due: float  # monotonic seconds
    wait_s: float  # the wait that set ``due``; doubled at each resend


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
        max_resend_after_s: float = MAX_RESEND_AFTER_S,
        send_interval_s: float = SEND_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.home = home
        self.clock = clock
        self.publish = publish
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        self.max_resend_after_s = max(max_resend_after_s, resend_after_s)
        self.monotonic = monotonic
        self.send_interval_ms = round(send_interval_s * 1000)
        self._held: list[Row] = []  # live readings not sent yet (see send)
        self._held_since_ms = 0  # agent clock: when the oldest of them was handed over
        self.inflight: dict[Key, _Batch] = {}  # (device, seq) -> its batch
        self._batches: list[_Batch] = []  # in the order sent
        self._cursor: dict[str, int] = {}  # backlog read position per device (seq)

    def restart(self) -> None:
        """Forget what is in flight or held: everything unacked is sent again at once (after a
        reconnect)."""
        self._held.clear()
        self.inflight.clear()
        self._batches.clear()
        self._cursor.clear()

    def _send(self, rows: list[Row], wait_s: float | None = None) -> None:
        wait_s = self.resend_after_s if wait_s is None else wait_s
        self.outbox.sync()  # nothing leaves the home that a power cut could take back
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i : i + self.batch_size]
            self.publish(encode_batch(self.home, self.clock.now_ms(), [r.body for r in chunk]))
            batch = _Batch({(r.device, r.seq) for r in chunk}, self.monotonic() + wait_s, wait_s)
            self._batches.append(batch)
            for key in batch.keys:
                self.inflight[key] = batch

    def _resend_overdue(self) -> int:
        """Send again what is past its deadline, with the wait doubled; returns readings sent."""
        now = self.monotonic()
        overdue = [b for b in self._batches if b.keys and b.due <= now]
        if not overdue:
            return 0
        self._batches = [b for b in self._batches if b.keys and b.due > now]
        waited_s = max(b.wait_s for b in overdue)
        keys = [key for b in overdue for key in sorted(b.keys)]
        for key in keys:
            del self.inflight[key]
        rows = self.outbox.rows(keys)
        log.info("no ack after %.0f s: sending %d readings again", waited_s, len(rows))
        self._send(rows, min(waited_s * 2, self.max_resend_after_s))
        return len(rows)

    @property
    def held(self) -> int:
        """Live readings handed over and not sent yet: they wait for the send interval, not for
        room in the window."""
        return len(self._held)

    def held_keys(self) -> frozenset[Key]:
        """The (device, seq) of the held readings: the outbox must keep them as they are."""
        return frozenset((r.device, r.seq) for r in self._held)

    def send(self, live: Iterable[Row] = (), *, next_pass_ms: int | None = None) -> int:
        """Send what is overdue, then live readings (``live`` and those held before it) unless
        all of them may wait, then backlog while the window has room; returns readings sent.

        Live readings wait while the caller's next pass, at ``next_pass_ms`` on the agent's
        clock, still comes within ``send_interval_ms`` of when the oldest of them was handed
        over; ``None`` (no next pass: the agent stops) sends them now. Live readings go only
        while the window has room: otherwise they wait in the outbox with the backlog.
        """
        now_ms = self.clock.now_ms()
        live = list(live)
        if live and not self._held:
            self._held_since_ms = now_ms
        self._held += live
        sent = self._resend_overdue()
        if self._held and (
            next_pass_ms is None
            or next_pass_ms - self._held_since_ms > self.send_interval_ms
            or now_ms < self._held_since_ms  # the clock was set back
        ):
            fresh = [r for r in self._held if (r.device, r.seq) not in self.inflight]
            self._held = []
            if len(self.inflight) + len(fresh) <= self.window:
                self._send(fresh)
                sent += len(fresh)
        # Every reading waiting for an ack is in flight or held (the steady state: polled, sent
        # live, acked): there is no backlog to look for, and a query a poll costs the Pi.
        while self.outbox.count() > len(self.inflight) + len(self._held) and (
            (room := self.window - len(self.inflight)) >= self.batch_size
            or (room > 0 and not self.inflight)
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
                # held readings the backlog took along are in flight now
                self._held = [r for r in self._held if (r.device, r.seq) not in self.inflight]
        return sent

    def acked(self, acks: Iterable[Ack]) -> int:
        """Take acks: delete what they name from the outbox; returns readings deleted."""
        done: dict[str, list[int]] = {}
        for ack in acks:
            for device in ack.acked:
                done.setdefault(device, []).extend(ack.seqs(device))
        in_flight: set[Key] = set()
        for device, seqs in done.items():
            for s in seqs:
                batch = self.inflight.pop((device, s), None)
                if batch is not None:
                    batch.keys.discard((device, s))
                    in_flight.add((device, s))
        if len(self._batches) > 64:  # drop emptied batches now and then, not on every ack
            self._batches = [b for b in self._batches if b.keys]
        return self.outbox.remove(done, stored=in_flight)
