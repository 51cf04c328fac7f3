"""The household agent: poll devices on the clock, keep readings in the outbox, send, take acks.

One thread runs the poll loop and owns the outbox and the delivery window; paho's network thread
only hands acks and connection changes over.
Polls are aligned to multiples of each device's interval (10:00:00, 10:00:10, ...), so readings
of a home's devices line up and a simulated run's last poll falls exactly on its end.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.appliances import grants_prompts
from agent.clocksync import clock_synced
from agent.config import AgentConfig
from agent.consent_ledger import ConsentLedger, LedgerError
from agent.delivery import Delivery
from agent.devices import DeviceSupervisor, close_devices, open_devices
from agent.energy_log import EnergyLog
from agent.local_link import (
    AdviceState,
    AgentState,
    AnswerResult,
    DeviceState,
    LinkServer,
    RunState,
)
from agent.mailbox import Mailbox
from agent.outbox import Outbox, Polled, Row
from agent.prompts import HomePrompts
from agent.release import Releaser
from protocol import __version__
from protocol.clock import Clock, Doorbell, SystemClock
from protocol.codec import CodecError, decode, encode
from protocol.consent import ConsentGrant, describe, nothing_shared
from protocol.payloads import Ack, FeedbackAction, HomeStatus
from protocol.session import MqttSession
from protocol.systemd import Notifier
from protocol.topics import HomeTopic, home_topic

log = logging.getLogger(__name__)

DRAIN_STATUS_EVERY_S = 5.0  # wall seconds between status updates while a backlog drains
# A reading unacked this long (agent's clock) is reported: the status goes out when that starts
# and ends, and every LATE_STATUS_EVERY_S wall seconds between, so the hub's alert on the age of
# the oldest unacked reading (a few minutes) never works from an old status.
LATE_AFTER_MS = 60_000
LATE_STATUS_EVERY_S = 30.0
# An ack that comes in while the next poll is at most this near (wall clock) waits for that
# poll's pass instead of waking the loop for a pass of its own: at 1 s polling that halves the
# loop's passes (issue 22). It deletes nothing sooner either way (see Outbox.remove). The
# housekeeping tick does not wake the loop then either: the poll's pass comes as soon.
ACK_MAY_WAIT_MS = 2_000


def agent_version() -> str:
    # A constant, not importlib.metadata: that import alone costs the agent 0.8 MiB.
    return __version__


class Agent:
    """One home's agent. ``watchdog`` is systemd's, fed while the poll loop turns (a hung poll
    gets a restart); ``on_polled`` sees every poll's values before consent filtering (the
    household's own Home Assistant, opt-in)."""

    def __init__(
        self,
        config: AgentConfig,
        clock: Clock,
        *,
        profile_dirs: list[Path] | None = None,
        status_interval_s: float = 300.0,
        resend_after_s: float | None = None,
        housekeeping_s: float = 5.0,
        pin_factory: object | None = None,
        watchdog: Notifier | None = None,
        on_polled: Callable[[list[Polled]], None] | None = None,
    ) -> None:
        self.watchdog = watchdog
        self.on_polled = on_polled
        self.config = config
        self.clock = clock
        self.status_interval_ms = int(status_interval_s * 1000)
        self.outbox = Outbox(config.outbox_path, config.outbox_budget_bytes)
        # Retries, backoff, offline marking and device health live in the supervisor.
        self._supervisor = DeviceSupervisor(
            open_devices(
                config.devices,
                profile_dirs,
                data_dir=config.data_dir,
                pin_factory=pin_factory,
                clock=clock,
            ),
            clock,
        )
        self._devices = self._supervisor.slots  # each has .device, .next_due_ms, .health
        # Nothing leaves the home but what the household's current grant covers.
        self.consent = ConsentLedger(config.consent_path, config.home)
        self._grant = self._read_grant()
        self._releaser = Releaser()
        self._consent_due = threading.Event()  # publish the grant (on connect, on change)
        self._consent_due.set()
        self._acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        self._wake = Doorbell()  # only the poll loop waits on it
        self._pass_soon = False  # set by the loop before it sleeps (see ACK_MAY_WAIT_MS)
        self._stop = threading.Event()
        self._reconnected = threading.Event()
        self._live: list[Row] = []  # this cycle's readings, sent ahead of any backlog
        self._last_status_ms = 0
        self._last_status_wall = 0.0
        self._reported_late = False  # the last status said a reading was unacked too long
        self._late_checked_wall = 0.0
        # Read by other threads (progress displays); written only by the poll loop.
        self.polls = 0
        self.first_poll_ms: int | None = None  # the first reading's time: where a demo starts
        self.last_poll_ms = 0
        self.backlog = self.outbox.count()
        # For the household page (agent/local_link.py): every stream's energy and last poll,
        # shared or not (they stay in the home), and what the hub sent the home to keep.
        self.energy = EnergyLog(config.data_dir / "energy.db")
        self.mailbox = Mailbox(config.data_dir / "mailbox", config.home)
        self._last_polled: dict[str, Polled] = {}
        # Refreshed by the loop (the outbox's connection is its own), read by the link.
        self._oldest_ms = self.outbox.oldest_ts_ms()
        self._lost, self._compacted = self.outbox.counter("lost"), self.outbox.counter("compacted")
        self.connected_since_ms: int | None = None
        self.last_connected_ms: int | None = None
        self._link: LinkServer | None = None
        c = config
        self._status_topic = home_topic(c.coop, c.home, HomeTopic.STATUS)
        self._readings_topic = home_topic(c.coop, c.home, HomeTopic.READINGS)
        self._ack_topic = home_topic(c.coop, c.home, HomeTopic.ACK)
        self._consent_topic = home_topic(c.coop, c.home, HomeTopic.CONSENT)
        self._statement_topic = home_topic(c.coop, c.home, HomeTopic.STATEMENT)
        self._receipts_topic = home_topic(c.coop, c.home, HomeTopic.RECEIPTS)
        offline = encode(HomeStatus(c.home, "offline"))
        self.session = MqttSession(
            c.broker,
            on_message=self._on_message,
            on_connect=self._on_connect,
            will=(self._status_topic, offline),
        )
        self.delivery = Delivery(
            self.outbox,
            c.home,
            clock,
            lambda data: self.session.publish(self._readings_topic, data, qos=1),
            resend_after_s=config.ack_timeout_s if resend_after_s is None else resend_after_s,
            send_interval_s=config.send_interval_s,
        )
        self.housekeeping_s = housekeeping_s
        # Appliance-timing prompts: the light, button and views, and what goes to the hub.
        self.prompts = HomePrompts(
            c.coop, c.home, clock,
            lambda topic, data, retain: self.session.publish(topic, data, qos=1, retain=retain),
            appliances=c.appliances, timezone=c.timezone, indicator=c.indicator,
            data_dir=c.data_dir, pin_factory=pin_factory,
        )  # fmt: skip

    # --- paho's thread -------------------------------------------------------------------
    def _on_connect(self) -> None:
        self.session.subscribe(self._ack_topic)
        self.session.subscribe(self.prompts.topic)
        self.session.subscribe(self._statement_topic)
        self.session.subscribe(self._receipts_topic)
        self.connected_since_ms = self.clock.now_ms()
        self._reconnected.set()  # whatever was in flight on the old connection is sent again
        self._consent_due.set()
        self._last_status_ms = 0  # and the retained status is refreshed
        self._wake.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.prompts.topic:
            self.prompts.receive(payload)
            return
        if topic == self._statement_topic:
            if payload:  # an empty retained message clears the broker's copy, not the home's
                self.mailbox.keep_statement(payload)
            return
        if topic == self._receipts_topic:
            self.mailbox.keep_receipt(payload)
            return
        try:
            ack = decode(Ack, payload)
        except CodecError as exc:
            log.warning("ignoring malformed ack on %s: %s", topic, exc)
            return
        if ack.home == self.config.home:
            self._acks.put(ack)
            if not self._pass_soon:
                self._wake.set()

    # --- the poll loop -----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, drain_timeout_s: float = 10.0) -> None:
        """Poll, store, send and take acks until :meth:`stop`; then drain and say offline."""
        self.session.start()
        self.prompts.start()
        try:
            self.energy.prune(self.clock.now_ms())
            self._link = LinkServer(self.config.data_dir / "agent.sock", self.state, self.answer)
        except (OSError, sqlite3.Error) as exc:  # the page cannot show it; meters are still read
            log.error("the household page will not see this agent: %s", exc)
        if not isinstance(self.clock, SystemClock):  # see _sleep_until_due
            ticker = threading.Thread(target=self._tick, name="agent-housekeeping", daemon=True)
            ticker.start()
        try:
            while not self._stop.is_set():
                if self.watchdog is not None:
                    self.watchdog.ping()  # only while the loop turns: a hung poll gets a restart
                self._follow_consent()
                self._poll_due()
                self._take_acks()
                self._send()
                self._publish_status()
                if self.session.connected.is_set():
                    self.last_connected_ms = self.clock.now_ms()
                self._sleep_until_due()
            self._pass_soon = False  # the drain waits for acks
            self._drain(drain_timeout_s)
        finally:
            if self._link is not None:
                self._link.close()
            self.energy.close()
            self.session.stop(final=(self._status_topic, encode(self._status("offline"))))
            self.prompts.stop()
            close_devices(s.device for s in self._devices)
            self.outbox.close()

    def _sleep_until_due(self) -> None:
        """Sleep until the next poll is due or something wakes the loop.

        Acks and the housekeeping tick wake it only when they cannot wait for that poll: on a
        simulated clock (its next poll may be any wall time away; tests wait for acks with the
        clock standing still), when the next poll is further than ``ACK_MAY_WAIT_MS`` away, or
        when readings wait for room in the delivery window that acks free. (``backlog`` is the
        outbox's count as of the last poll or ack, the only things that change it.)

        On the wall clock the loop is its own housekeeping tick: it sleeps at most
        ``housekeeping_s``. A thread of its own woke 12 times a minute to wake a loop that at
        1 s polling was awake anyway (issue 22). A simulated clock keeps the thread
        (:meth:`_tick`): its sleep may last any wall time.
        """
        next_due = min(s.next_due_ms for s in self._devices)
        wall = isinstance(self.clock, SystemClock)
        wait_ms = next_due - self.clock.now_ms()
        self._pass_soon = (
            wall
            and wait_ms <= ACK_MAY_WAIT_MS
            and self.backlog <= len(self.delivery.inflight) + self.delivery.held
        )
        if wall and wait_ms > self.housekeeping_s * 1000:
            self._wake.wait(self.housekeeping_s)
        else:
            self.clock.sleep_until_ms(next_due, self._wake)
        self._wake.clear()

    def _tick(self) -> None:
        """Wake the loop now and then by the wall clock, whatever a simulated clock does: the
        resend timer and drain status run on wall time, as networks do."""
        while not self._stop.wait(self.housekeeping_s):
            self._housekeeping_wake()

    def _housekeeping_wake(self) -> None:
        if not self._pass_soon:  # otherwise the next poll's pass checks the timers as soon
            self._wake.set()

    def _poll_due(self) -> None:
        polled = [
            Polled(r.device.name, r.device.role, r.ts_ms, r.quantities)
            for r in self._supervisor.poll_due()
            if r.quantities
        ]
        if polled:
            if self.first_poll_ms is None:
                self.first_poll_ms = min(p.ts_ms for p in polled)
            self.last_poll_ms = max(p.ts_ms for p in polled)
            if self.on_polled is not None:
                self.on_polled(polled)
            self.energy.record(polled)
            self._last_polled.update((p.device, p) for p in polled)
        released = self._releaser.release(polled, self._grant)
        if released:
            self._live += self.outbox.add(released, self._grant.grant)
            # Held readings too: what is sent is what was stored, never merged or dropped since.
            keep = frozenset(self.delivery.inflight) | self.delivery.held_keys()
            self.outbox.enforce_budget(keep=keep)
            self.backlog = self.outbox.count()
        self.polls += 1

    def _read_grant(self) -> ConsentGrant:
        try:
            return self.consent.current()
        except LedgerError as exc:
            # A damaged ledger shares nothing until the household grants again.
            log.error("consent ledger unusable, sharing nothing: %s", exc)
            return nothing_shared(self.config.home)

    def _follow_consent(self, *, look: bool = True) -> None:
        """Take up a grant recorded by ``coopwatt-agent consent`` while running (``look``: stat
        the ledger; once a pass of the loop is enough), and publish the grant when due."""
        if look and self.consent.changed():
            grant = self._read_grant()
            if grant != self._grant:
                log.info("consent version %d in force: %s", grant.version,
                         "; ".join(describe(grant)))  # fmt: skip
                self._grant = grant
                self._consent_due.set()
        if self._consent_due.is_set() and self.session.connected.is_set():
            self._consent_due.clear()
            self.session.publish(self._consent_topic, encode(self._grant), retain=True)
            self.prompts.publish_appliances(self._grant)  # or withdraws them, without prompts

    def _take_acks(self) -> None:
        acks: list[Ack] = []
        while True:
            try:
                acks.append(self._acks.get_nowait())
            except queue.Empty:
                break
        if acks:
            self.delivery.acked(acks)
            self.backlog = self.outbox.count()

    def _send(self, *, flush: bool = False) -> None:
        """Hand this pass's readings to delivery, which holds live ones up to the send interval
        (the next poll's pass is the next chance to send them); ``flush`` sends them now."""
        live, self._live = self._live, []
        if not self.session.connected.is_set():
            return  # the readings wait in the outbox; the backlog path sends them later
        if self._reconnected.is_set():
            self._reconnected.clear()
            self.delivery.restart()
        # The grant goes out before any reading released under it, even when the connection
        # came up halfway through this pass of the loop. (The ledger was looked at when the
        # pass began: readings of this pass were released under the grant in force then.)
        self._follow_consent(look=False)
        next_pass_ms = None if flush else min(s.next_due_ms for s in self._devices)
        self.delivery.send(live, next_pass_ms=next_pass_ms)

    def _status(self, state: Literal["online", "offline"]) -> HomeStatus:
        now = self.clock.now_ms()
        oldest = self._oldest_ms = self.outbox.oldest_ts_ms()
        self._lost, self._compacted = self.outbox.counter("lost"), self.outbox.counter("compacted")
        return HomeStatus(
            home=self.config.home,
            state=state,
            ts_ms=now,
            version=agent_version(),
            devices={s.device.name: s.health for s in self._devices},
            backlog=self.backlog,
            clock_synced=clock_synced(),
            backlog_oldest_ms=oldest,
            compacted=self._compacted,
            lost=self._lost,
            unacked_age_s=None if oldest is None else max(0, now - oldest) // 1000,
        )

    def _publish_status(self) -> None:
        """Retained status on a schedule, every few seconds while a backlog drains, and when a
        reading has waited for its ack too long (see ``LATE_AFTER_MS``)."""
        if not self.session.connected.is_set():
            return
        now, wall = self.clock.now_ms(), time.monotonic()
        since = wall - self._last_status_wall
        due = now - self._last_status_ms >= self.status_interval_ms
        draining = self.backlog > self.delivery.batch_size and since >= DRAIN_STATUS_EVERY_S
        if not (due or draining) and wall - self._late_checked_wall >= DRAIN_STATUS_EVERY_S:
            # At most every few seconds: the oldest reading is a query on the Pi's SD card.
            self._late_checked_wall = wall
            oldest = self._oldest_ms = self.outbox.oldest_ts_ms()
            late = oldest is not None and now - oldest >= LATE_AFTER_MS
            due = late != self._reported_late or (late and since >= LATE_STATUS_EVERY_S)
        if due or draining:
            status = self._status("online")
            self.session.publish(self._status_topic, encode(status), retain=True)
            self._last_status_ms, self._last_status_wall = now, wall
            self._reported_late = (status.unacked_age_s or 0) * 1000 >= LATE_AFTER_MS

    # --- the household page (agent/local_link.py; the link's threads) -----------------------
    def state(self) -> AgentState:
        """What the household page shows of the agent; values the poll loop keeps (no query
        on the outbox, whose connection is the loop's)."""
        now = self.clock.now_ms()
        view = self.prompts.view()
        devices = []
        for s in self._devices:
            d, h = s.device, s.health
            last = self._last_polled.get(d.name)
            devices.append(
                DeviceState(
                    d.name, d.role.value, h.online, h.error, h.last_ok_ms,
                    last.ts_ms if last else None, dict(last.quantities) if last else None,
                )
            )  # fmt: skip
        board = self.prompts.board.prompts
        runs = [
            RunState(
                r.appliance,
                [list(w) for w in r.windows],
                r.reason,
                r.benefit_wh,
                r.active,
                r.answer,
            )
            for r in view.runs
        ]
        levels = list(board.levels) if board is not None and not view.expired else []
        advice = AdviceState(
            view.reason, runs, levels, view.level, view.valid_until_ms, view.snoozed_until_ms,
            view.expired,
        )  # fmt: skip
        oldest = self._oldest_ms
        c = self.config
        return AgentState(
            c.coop, c.home, agent_version(), now, c.timezone or "UTC",
            self.session.connected.is_set(), self.backlog, self._lost, self._compacted,
            devices, advice, grants_prompts(self._grant),
            self.connected_since_ms, self.last_connected_ms,
            None if oldest is None else max(0, now - oldest) // 1000,
        )  # fmt: skip

    def answer(self, appliance: str | None, action: FeedbackAction) -> AnswerResult:
        """The household page's "will do" or "snooze": the button's answer, the same way out."""
        feedback = self.prompts.answer(appliance, action)
        if feedback is None:
            what = f"for {appliance}" if appliance else "now"
            return AnswerResult(False, f"there is no current advice {what}")
        return AnswerResult(True, "answered", feedback, self.prompts.granted)

    def _drain(self, timeout_s: float) -> None:
        """On stop: give the hub a bounded moment to ack what is in flight."""
        deadline = time.monotonic() + timeout_s
        while self.backlog and time.monotonic() < deadline and self.session.connected.is_set():
            self._take_acks()
            self._send(flush=True)
            self._wake.wait(0.1)
            self._wake.clear()
        self._take_acks()
