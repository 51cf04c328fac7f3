"""The household agent: poll devices on the clock, keep readings in the outbox, send, take acks.

One thread runs the poll loop and owns the outbox and the delivery window; paho's network thread
only hands acks and connection changes over.
Polls are aligned to multiples of each device's interval (10:00:00, 10:00:10, ...), so readings
of a home's devices line up and a simulated run's last poll falls exactly on its end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from agent.clocksync import clock_synced
from agent.config import AgentConfig
from agent.delivery import Delivery
from agent.devices import Device, close_devices, open_devices
from agent.modbus_io import DeviceError
from agent.outbox import Outbox, Polled, Row
from protocol.clock import Clock
from protocol.codec import CodecError, decode, encode
from protocol.payloads import Ack, DeviceHealth, HomeStatus
from protocol.session import MqttSession
from protocol.topics import HomeTopic, home_topic

log = logging.getLogger(__name__)

DRAIN_STATUS_EVERY_S = 5.0  # wall seconds between status updates while a backlog drains


def agent_version() -> str:
    try:
        return version("coopwatt")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _DeviceState:
    device: Device
    next_due_ms: int
    health: DeviceHealth


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        clock: Clock,
        *,
        profile_dirs: list[Path] | None = None,
        status_interval_s: float = 300.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.status_interval_ms = int(status_interval_s * 1000)
        self.outbox = Outbox(config.outbox_path, config.outbox_budget_bytes)
        now = clock.now_ms()
        self._devices = [
            _DeviceState(d, now, DeviceHealth(online=False, error="not read yet"))
            for d in open_devices(config.devices, profile_dirs)
        ]
        self._acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reconnected = threading.Event()
        self._live: list[Row] = []  # this cycle's readings, sent ahead of any backlog
        self._last_status_ms = 0
        self._last_status_wall = 0.0
        # Read by other threads (progress displays); written only by the poll loop.
        self.polls = 0
        self.last_poll_ms = 0
        self.backlog = self.outbox.count()
        c = config
        self._status_topic = home_topic(c.coop, c.home, HomeTopic.STATUS)
        self._readings_topic = home_topic(c.coop, c.home, HomeTopic.READINGS)
        self._ack_topic = home_topic(c.coop, c.home, HomeTopic.ACK)
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
        )

    # --- paho's thread -------------------------------------------------------------------
    def _on_connect(self) -> None:
        self.session.subscribe(self._ack_topic)
        self._reconnected.set()  # whatever was in flight on the old connection is sent again
        self._last_status_ms = 0  # and the retained status is refreshed
        self._wake.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            ack = decode(Ack, payload)
        except CodecError as exc:
            log.warning("ignoring malformed ack on %s: %s", topic, exc)
            return
        if ack.home == self.config.home:
            self._acks.put(ack)
            self._wake.set()

    # --- the poll loop -----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, drain_timeout_s: float = 10.0) -> None:
        """Poll, store, send and take acks until :meth:`stop`; then drain and say offline."""
        self.session.start()
        try:
            while not self._stop.is_set():
                self._poll_due()
                self._take_acks()
                self._send()
                self._publish_status()
                next_due = min(s.next_due_ms for s in self._devices)
                self.clock.sleep_until_ms(next_due, self._wake)
                self._wake.clear()
            self._drain(drain_timeout_s)
        finally:
            self.session.stop(final=(self._status_topic, encode(self._status("offline"))))
            close_devices(s.device for s in self._devices)
            self.outbox.close()

    def _poll_due(self) -> None:
        now = self.clock.now_ms()
        polled: list[Polled] = []
        for s in self._devices:
            if s.next_due_ms > now:
                continue
            interval_ms = max(1, int(s.device.config.poll_interval_s * 1000))
            s.next_due_ms = (now // interval_ms + 1) * interval_ms
            try:
                quantities = s.device.read()
            except DeviceError as exc:
                if s.health.online or s.health.error != str(exc):
                    log.warning("%s: %s", s.device.name, exc)
                s.health = DeviceHealth(
                    online=False, error=str(exc)[:200], last_ok_ms=s.health.last_ok_ms
                )
                continue
            ts = self.clock.now_ms()
            if not s.health.online:
                log.info("%s: reading", s.device.name)
            s.health = DeviceHealth(online=True, last_ok_ms=ts)
            if quantities:
                polled.append(Polled(s.device.name, s.device.role, ts, quantities))
        if polled:
            self._live += self.outbox.add(polled, self.config.grant)
            self.outbox.enforce_budget(keep=frozenset(self.delivery.inflight))
            self.backlog = self.outbox.count()
            self.last_poll_ms = max(p.ts_ms for p in polled)
        self.polls += 1

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

    def _send(self) -> None:
        live, self._live = self._live, []
        if not self.session.connected.is_set():
            return  # the readings wait in the outbox; the backlog path sends them later
        if self._reconnected.is_set():
            self._reconnected.clear()
            self.delivery.restart()
        self.delivery.send(live)

    def _status(self, state: Literal["online", "offline"]) -> HomeStatus:
        return HomeStatus(
            home=self.config.home,
            state=state,
            ts_ms=self.clock.now_ms(),
            version=agent_version(),
            devices={s.device.name: s.health for s in self._devices},
            backlog=self.backlog,
            clock_synced=clock_synced(),
            backlog_oldest_ms=self.outbox.oldest_ts_ms(),
            compacted=self.outbox.counter("compacted"),
            lost=self.outbox.counter("lost"),
        )

    def _publish_status(self) -> None:
        """Retained status on a schedule, and every few seconds while a backlog drains."""
        if not self.session.connected.is_set():
            return
        now, wall = self.clock.now_ms(), time.monotonic()
        due = now - self._last_status_ms >= self.status_interval_ms
        draining = self.backlog > self.delivery.batch_size
        if due or (draining and wall - self._last_status_wall >= DRAIN_STATUS_EVERY_S):
            self.session.publish(self._status_topic, encode(self._status("online")), retain=True)
            self._last_status_ms, self._last_status_wall = now, wall

    def _drain(self, timeout_s: float) -> None:
        """On stop: give the hub a bounded moment to ack what is in flight."""
        deadline = time.monotonic() + timeout_s
        while self.backlog and time.monotonic() < deadline and self.session.connected.is_set():
            self._take_acks()
            self._send()
            self._wake.wait(0.1)
            self._wake.clear()
        self._take_acks()
