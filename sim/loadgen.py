"""The load generator: thousands of simulated homes on the real wire, for benchmarks and soaks.

Each home is what a household agent is on the wire, without Modbus devices behind it:

- its own MQTT session (:class:`protocol.session.MqttSession`: persistent, QoS 1, a last will of
  ``offline`` on its retained status), subscribed to its own ``ack`` and ``receipts`` only;
- a consent grant sharing every stream for every purpose, published retained before any reading
  (as ``ConsentLedger.share_everything`` does), and a retained status every ``status_every_s``;
- readings polled from the simulator's household model (:class:`sim.household.SimHome`: a grid
  meter, a PV inverter and, at every other home, a small wind turbine, with exact counters),
  built as :class:`protocol.payloads.Reading`, encoded by :func:`protocol.codec.encode_reading`
  and sent in batches made by :func:`protocol.codec.encode_batch`;
- an in-memory outbox that a reading leaves only when an ack from the hub names it, sent the way
  ``agent/delivery.py`` sends: a poll's readings at once, a backlog behind them in batches of up
  to 1,000 while at most 4,000 readings are in flight, and everything unacked again when no ack
  has come for ``resend_after_s`` (wall seconds) or after a reconnect.

Thousands of sessions share ONE thread: the paho clients are driven from a selector through
paho's external-loop API (``loop_read``, ``loop_write``, ``loop_misc``) instead of a network
thread per client, so 2,000 homes cost one process a fraction of a core.

A :class:`Neighbourhood` counts what it generated, sent and had acked per home; the hub's
database is checked against it by the benchmarks (``bench/ingest_*.py``, ``bench/soak_*.py``).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import operator
import selectors
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from itertools import filterfalse, repeat
from pathlib import Path
from typing import Any, Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import __version__
from protocol.clock import Clock, Waker
from protocol.codec import CodecError, decode_message, encode, encode_batch, encode_reading
from protocol.consent import (
    ConsentGrant,
    Purpose,
    PurposeGrant,
    Resolution,
    next_version,
    nothing_shared,
)
from protocol.payloads import Ack, Appliance, Appliances, HomeStatus, Reading, Receipt
from protocol.quantities import Role
from protocol.session import BrokerSettings, MqttSession, parse_broker_url
from protocol.topics import HomeTopic, home_topic
from sim.household import SimHome

log = logging.getLogger(__name__)

# The agent's delivery settings (agent/delivery.py; sim does not import agent).
BATCH_SIZE: Final = 1000
WINDOW: Final = 4000
RESEND_AFTER_S: Final = 30.0
PV_SIZES_W: Final = (4000, 2500, 5500, 3200, 6000, 0)  # as the demo's homes
_MISC_EVERY_S: Final = 1.0  # paho's keepalive bookkeeping, per client

Key = tuple[str, int]  # (device, seq)


@dataclass(slots=True)
class HomeCounts:
    """What one home did. ``duplicate_acks``: acks for readings already acked (a resend's);
    ``foreign_acks``: acks naming a device or seq this home never produced (must stay 0)."""

    generated: int = 0  # readings polled
    sent: int = 0  # readings published, resends included
    messages: int = 0  # readings messages published
    resent: int = 0  # readings published again (no ack in time, or a reconnect)
    acked: int = 0  # readings acked (each once)
    duplicate_acks: int = 0
    foreign_acks: int = 0
    connects: int = 0

    def add(self, other: HomeCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class LinkedClock:
    """Simulated time that several processes share: ``speed`` times the wall from ``start_ms``
    at the monotonic instant ``origin_s`` (Linux's CLOCK_MONOTONIC is one clock for every
    process), frozen at ``end_ms`` when given. A soak's hub and load generator each build one
    from the same three numbers."""

    def __init__(
        self, start_ms: int, speed: float, origin_s: float, end_ms: int | None = None
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start_ms = start_ms
        self.speed = speed
        self.origin_s = origin_s
        self.end_ms = end_ms

    def now_ms(self) -> int:
        t = self.start_ms + int((time.monotonic() - self.origin_s) * 1000 * self.speed)
        t = max(t, self.start_ms)
        return t if self.end_ms is None else min(t, self.end_ms)

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        while True:
            now = self.now_ms()
            if now >= target_ms:
                return stop.is_set()
            frozen = self.end_ms is not None and target_ms > self.end_ms and now >= self.end_ms
            wait_s = 0.05 if frozen else (target_ms - now) / 1000 / self.speed
            if stop.wait(min(max(wait_s, 0.001), 1.0)):
                return True


def typical_appliances(home: str, index: int, ts_ms: int, grant: str) -> Appliances:
    """What a household lets the hub plan for: a washing machine, and at every fourth home an
    electric car charged overnight."""
    items = [Appliance("washing-machine", 1000.0, 120, 8 * 60, 20 * 60, False, 4)]
    if index % 4 == 0:
        items.append(Appliance("ev-charger", 7000.0, 240, 18 * 60, 7 * 60, True, 5))
    return Appliances(home, ts_ms, "Europe/Amsterdam", items, grant)


def share_everything(home: str, issued_ms: int, retention_days: int = 365) -> ConsentGrant:
    """Version 1 of a home's consent: every stream, every purpose, raw readings."""
    terms = PurposeGrant(Resolution.RAW, retention_days)
    streams = {role.value: {p.value: terms for p in Purpose} for role in Role}
    return next_version(nothing_shared(home), streams, issued_ms)


class LoadHome:
    """One home's agent side: devices, sequence numbers, outbox and delivery window."""

    def __init__(
        self,
        home: str,
        index: int,
        clock: Clock,
        *,
        seed: int = 1,
        batch_size: int = BATCH_SIZE,
        window: int = WINDOW,
        resend_after_s: float = RESEND_AFTER_S,
    ) -> None:
        self.home = home
        self.index = index
        self.sim = SimHome(
            home,
            seed * 100_000 + index,
            clock,
            pv_capacity_w=PV_SIZES_W[index % len(PV_SIZES_W)],
            with_wind=index % 2 == 0,
            weather_seed=seed,  # one sky over the neighbourhood
        )
        self.devices: dict[str, Role] = self.sim.devices
        self.seq: dict[str, int] = dict.fromkeys(self.devices, 0)
        self.grant = share_everything(home, clock.now_ms())
        self.batch_size = batch_size
        self.window = window
        self.resend_after_s = resend_after_s
        self.counts = HomeCounts()
        self.bodies: dict[Key, str] = {}  # unacked readings' wire JSON, oldest first
        self.backlog: deque[Key] = deque()  # unacked and not in flight, oldest first
        self.inflight: dict[Key, None] = {}
        self.last_progress_s = time.monotonic()
        self.session: MqttSession | None = None
        self.consent_recorded = False
        self.consent_refused: str | None = None
        self.topic_readings = home_topic("x", home, HomeTopic.READINGS)  # set by Neighbourhood

    @property
    def outstanding(self) -> int:
        """Readings generated and not yet acked."""
        return len(self.bodies)

    def poll(self, t_ms: int) -> list[Key]:
        """Read every device at ``t_ms`` into the outbox; returns the new readings' keys."""
        keys = []
        grant = self.grant.grant
        for device, role in self.devices.items():
            seq = self.seq[device] + 1
            self.seq[device] = seq
            body = encode_reading(
                Reading(device, seq, t_ms, role, grant, self.sim.values(device, t_ms))
            )
            key = (device, seq)
            self.bodies[key] = body
            keys.append(key)
        self.counts.generated += len(keys)
        return keys

    def restart(self) -> None:
        """Everything unacked goes again, oldest first (after a reconnect or an ack timeout)."""
        self.counts.resent += len(self.inflight)
        self.inflight.clear()
        self.backlog = deque(self.bodies)
        self.last_progress_s = time.monotonic()

    def pump(self, now_ms: int, live: list[Key], ready: bool) -> int:
        """Send ``live`` at once and backlog while the window has room; returns readings sent.

        Not ``ready`` (not connected, or consent not yet recorded): live readings join the
        backlog and nothing is sent.
        """
        if not ready:
            self.backlog.extend(live)
            return 0
        if self.inflight and time.monotonic() - self.last_progress_s > self.resend_after_s:
            log.info("home=%s no ack for %.0f s: sending %d readings again", self.home,
                     self.resend_after_s, len(self.inflight))  # fmt: skip
            self.restart()
        fresh = [k for k in live if k not in self.inflight]
        self._send(fresh, now_ms)
        sent = len(fresh)
        inflight, bodies, backlog = self.inflight, self.bodies, self.backlog
        while backlog and (
            (room := self.window - len(inflight)) >= self.batch_size or (room > 0 and not inflight)
        ):
            page: list[Key] = []
            limit = min(room, self.batch_size)
            while backlog and len(page) < limit:
                # Taken and sifted in C loops: acked or in-flight keys are passed over. This
                # process stands in for thousands of Pis on the hub's own machine, so its CPU
                # is taken from the hub being measured.
                taken = map(
                    operator.call, repeat(backlog.popleft, min(limit - len(page), len(backlog)))
                )
                page.extend(filterfalse(inflight.__contains__, filter(bodies.__contains__, taken)))
            self._send(page, now_ms)
            sent += len(page)
        return sent

    def _send(self, keys: list[Key], now_ms: int) -> None:
        if not keys:
            return
        assert self.session is not None
        if not self.inflight:
            self.last_progress_s = time.monotonic()  # the ack clock starts with the first send
        bodies = self.bodies
        for i in range(0, len(keys), self.batch_size):
            chunk = keys[i : i + self.batch_size]
            payload = encode_batch(self.home, now_ms, list(map(bodies.__getitem__, chunk)))
            self.session.publish(self.topic_readings, payload, qos=1)
            self.counts.messages += 1
            self.counts.sent += len(chunk)
        self.inflight.update(dict.fromkeys(keys))

    def on_ack(self, ack: Ack) -> None:
        counts, bodies, inflight = self.counts, self.bodies, self.inflight
        progress = False
        for device, ranges in ack.acked.items():
            last_seq = self.seq.get(device, 0)
            for first, last in ranges:
                produced = min(last, last_seq)  # seqs above it were never sent by this home
                counts.foreign_acks += last - max(first - 1, produced)
                keys = list(zip(repeat(device), range(first, produced + 1)))
                popped = list(map(bodies.pop, keys, repeat(None)))
                deque(map(inflight.pop, keys, repeat(None)), maxlen=0)  # in flight => in bodies
                missing = popped.count(None)  # acked before: the ack of a resend
                counts.acked += len(keys) - missing
                counts.duplicate_acks += missing
                progress = progress or missing < len(keys)
        if progress:
            self.last_progress_s = time.monotonic()

    def status(self, state: Literal["online", "offline"], ts_ms: int) -> HomeStatus:
        return HomeStatus(
            self.home,
            state,
            ts_ms=ts_ms,
            version=__version__,
            backlog=len(self.bodies),
            clock_synced=True,
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """The neighbourhood's counts summed over homes, and readings not yet acked."""

    counts: HomeCounts
    outstanding: int
    homes: int

    def line(self) -> str:
        c = self.counts
        return (
            f"homes={self.homes} generated={c.generated} sent={c.sent} messages={c.messages} "
            f"acked={c.acked} outstanding={self.outstanding} resent={c.resent} "
            f"duplicate_acks={c.duplicate_acks} foreign_acks={c.foreign_acks}"
        )


class Neighbourhood:
    """``homes`` simulated homes of cooperative ``coop`` on the broker at ``broker_url``.

    Home ids are ``home-0001`` ... (``prefix`` changes ``home``). ``clock`` gives reading
    times (a fast simulated clock for a soak); ``cadence_s`` is each home's poll interval, homes
    spread evenly over it. Not thread-safe: one thread calls everything.
    """

    def __init__(
        self,
        broker_url: str,
        coop: str,
        homes: int,
        clock: Clock,
        *,
        cadence_s: float = 10.0,
        seed: int = 1,
        prefix: str = "home",
        protocol: int = 5,
        batch_size: int = BATCH_SIZE,
        window: int = WINDOW,
        resend_after_s: float = RESEND_AFTER_S,
        status_every_s: float = 300.0,
        keepalive_s: int = 60,
        appliances: bool = False,
    ) -> None:
        if homes < 1:
            raise ValueError("a neighbourhood has at least one home")
        _, self.host, self.port = parse_broker_url(broker_url)
        self.url = broker_url
        self.coop = coop
        self.clock = clock
        self.cadence_ms = max(1, int(cadence_s * 1000))
        self.protocol = protocol
        self.keepalive_s = keepalive_s
        self.status_every_ms = int(status_every_s * 1000)
        self.appliances = appliances  # publish typical_appliances() for the prompts planner
        width = max(4, len(str(homes)))
        self.homes = [
            LoadHome(
                f"{prefix}-{i + 1:0{width}d}",
                i,
                clock,
                seed=seed,
                batch_size=batch_size,
                window=window,
                resend_after_s=resend_after_s,
            )
            for i in range(homes)
        ]
        for h in self.homes:
            h.topic_readings = home_topic(coop, h.home, HomeTopic.READINGS)
        self._sel = selectors.DefaultSelector()
        self._sockets: dict[LoadHome, Any] = {}
        self._want_write: set[LoadHome] = set()
        self._connected: set[LoadHome] = set()
        self._backlogged: set[LoadHome] = set()  # homes with readings waiting for window room
        self._reconnect_at: dict[LoadHome, float] = {}
        self._next_misc_s = 0.0
        self._next_status_ms = 0
        self.rejected_messages = 0  # acks or receipts that did not decode (must stay 0)

    # -- connections -----------------------------------------------------------------------

    def connect(self, timeout_s: float = 120.0, *, wait_consent: bool = True) -> None:
        """Connect every home; each then publishes its grant and status. With ``wait_consent``
        block until the hub has answered every grant with a ``consent-recorded`` receipt, so no
        reading waits for its grant."""
        for i, h in enumerate(self.homes):
            self._open(h)
            if i % 50 == 49:
                self.io(0.0)  # take CONNACKs as we go: the broker's backlog stays small
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            if len(self._connected) < len(self.homes):
                return False
            return not wait_consent or all(h.consent_recorded for h in self.homes)

        while not done():
            if time.monotonic() > deadline:
                waiting = sum(not h.consent_recorded for h in self.homes)
                raise TimeoutError(
                    f"{len(self._connected)} of {len(self.homes)} homes connected, "
                    f"{waiting} still wait for their consent receipt after {timeout_s:.0f} s"
                )
            refused = [h for h in self.homes if h.consent_refused]
            if refused:
                raise RuntimeError(f"hub refused consent of {refused[0].home}: "
                                   f"{refused[0].consent_refused}")  # fmt: skip
            self.io(0.05)

    def _open(self, h: LoadHome) -> None:
        settings = BrokerSettings(
            self.url,
            f"load-{self.coop}-{h.home}"[:64],
            protocol=5 if self.protocol == 5 else 311,
            keepalive_s=self.keepalive_s,
        )
        status_topic = home_topic(self.coop, h.home, HomeTopic.STATUS)
        session = MqttSession(
            settings,
            on_message=partial(self._on_message, h),
            on_connect=partial(self._on_connect, h),
            will=(status_topic, encode(HomeStatus(h.home, "offline"))),
        )
        h.session = session
        client = session.client
        client.on_socket_open = partial(self._socket_open, h)
        client.on_socket_close = partial(self._socket_close, h)
        self._connect(h)

    def _connect(self, h: LoadHome) -> None:
        # What MqttSession.start() does, minus its network thread: this selector is the loop.
        assert h.session is not None
        props = None
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = h.session.session_expiry_s
        try:
            h.session.client.connect(
                self.host,
                self.port,
                keepalive=self.keepalive_s,
                clean_start=False if self.protocol == 5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except OSError as exc:
            log.warning("home=%s cannot connect: %s; retrying", h.home, exc)
            self._reconnect_at[h] = time.monotonic() + 1.0

    def _socket_open(self, h: LoadHome, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sockets[h] = sock
        self._sel.register(sock, selectors.EVENT_READ, h)

    def _socket_close(self, h: LoadHome, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        self._sockets.pop(h, None)
        self._want_write.discard(h)
        self._connected.discard(h)

    def _on_connect(self, h: LoadHome) -> None:
        assert h.session is not None
        s = h.session
        s.subscribe(home_topic(self.coop, h.home, HomeTopic.ACK), qos=1)
        s.subscribe(home_topic(self.coop, h.home, HomeTopic.RECEIPTS), qos=1)
        s.publish(home_topic(self.coop, h.home, HomeTopic.CONSENT), encode(h.grant), retain=True)
        self._publish_status(h, self.clock.now_ms())
        if self.appliances and h.counts.connects == 0:
            payload = typical_appliances(h.home, h.index, self.clock.now_ms(), h.grant.grant)
            topic = home_topic(self.coop, h.home, HomeTopic.APPLIANCES)
            s.publish(topic, encode(payload), retain=True)
        h.counts.connects += 1
        if h.counts.connects > 1:
            h.restart()  # what was in flight may be lost with the connection
        self._connected.add(h)

    def _publish_status(self, h: LoadHome, now_ms: int) -> None:
        assert h.session is not None
        topic = home_topic(self.coop, h.home, HomeTopic.STATUS)
        h.session.publish(topic, encode(h.status("online", now_ms)), retain=True)

    def _on_message(self, h: LoadHome, topic: str, payload: bytes) -> None:
        try:
            address, message = decode_message(topic, payload)
        except CodecError as exc:
            self.rejected_messages += 1
            log.error("home=%s got a message it cannot decode on %s: %s", h.home, topic, exc)
            return
        if address.home != h.home:  # the broker must deliver a home only its own topics
            h.counts.foreign_acks += 1
            return
        if isinstance(message, Ack):
            h.on_ack(message)
        elif isinstance(message, Receipt) and message.version == h.grant.version:
            if message.kind == "consent-recorded":
                h.consent_recorded = True
            elif message.kind == "consent-refused":
                h.consent_refused = message.reason or "refused"

    # -- the event loop ----------------------------------------------------------------------

    def io(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for network events and handle them (and paho's timers)."""
        for key, events in self._sel.select(timeout_s):
            h: LoadHome = key.data
            assert h.session is not None
            client = h.session.client
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            if events & selectors.EVENT_READ:
                rc = client.loop_read(max_packets=100)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and events & selectors.EVENT_WRITE:
                rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(h, rc)
            elif client.want_write():
                self._want_write.add(h)
        self._flush()
        now = time.monotonic()
        if now >= self._next_misc_s:
            self._next_misc_s = now + _MISC_EVERY_S
            for h in self.homes:
                if h in self._connected and h.session is not None:
                    rc = h.session.client.loop_misc()
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        self._lost(h, rc)
            for h, at in list(self._reconnect_at.items()):
                if now >= at:
                    del self._reconnect_at[h]
                    self._connect(h)

    def _flush(self) -> None:
        """Watch for writability only while a client has bytes it could not write yet."""
        for h in list(self._want_write):
            sock = self._sockets.get(h)
            if sock is None or h.session is None:
                self._want_write.discard(h)
                continue
            wants = h.session.client.want_write()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
            with contextlib.suppress(KeyError, ValueError):
                if self._sel.get_key(sock).events != events:
                    self._sel.modify(sock, events, h)
            if not wants:
                self._want_write.discard(h)

    def _lost(self, h: LoadHome, rc: MQTTErrorCode) -> None:
        if h in self._connected:
            log.warning("home=%s lost its connection (%s); reconnecting", h.home, rc)
        self._connected.discard(h)
        self._want_write.discard(h)
        sock = self._sockets.pop(h, None)
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
        self._reconnect_at.setdefault(h, time.monotonic() + 1.0)

    def _ready(self, h: LoadHome) -> bool:
        return h in self._connected and h.consent_recorded

    def _pump(self, h: LoadHome, now_ms: int, live: list[Key]) -> None:
        sent = h.pump(now_ms, live, self._ready(h))
        if sent and h.session is not None and h.session.client.want_write():
            self._want_write.add(h)
        if h.backlog:
            self._backlogged.add(h)
        else:
            self._backlogged.discard(h)

    # -- workloads ---------------------------------------------------------------------------

    def fill_backlog(self, polls: int) -> int:
        """Queue ``polls`` polls per home at the cadence from the clock's time on: what each
        outbox holds after an outage that long. Nothing is sent; returns the readings queued.
        (Move the clock past the last poll before draining.)"""
        before = self.totals().counts.generated
        first = self.clock.now_ms()
        for h in self.homes:
            for i in range(polls):
                h.backlog.extend(h.poll(first + i * self.cadence_ms))
            self._backlogged.add(h)
        return self.totals().counts.generated - before

    def drain(
        self, timeout_s: float = 600.0, progress: Callable[[Totals], None] | None = None
    ) -> float:
        """Send every queued reading and wait until all are acked; returns wall seconds taken.

        Raises :class:`TimeoutError` when readings are still unacked after ``timeout_s``.
        """
        start = time.monotonic()
        deadline = start + timeout_s
        next_progress = start + 1.0
        while True:
            now_ms = self.clock.now_ms()
            for h in self.homes:
                if h.backlog or (h.inflight and h.bodies):
                    self._pump(h, now_ms, [])
            if not any(h.bodies for h in self.homes):
                return time.monotonic() - start
            self.io(0.005)
            now = time.monotonic()
            if progress is not None and now >= next_progress:
                next_progress = now + 1.0
                progress(self.totals())
            if now > deadline:
                raise TimeoutError(f"still unacked after {timeout_s:.0f} s: {self.totals().line()}")

    def run(
        self,
        until_ms: int,
        *,
        on_tick: Callable[[int], bool] | None = None,
        tick_ms: int = 60_000,
        drain_timeout_s: float = 600.0,
        send_every_s: float = 0.0,
    ) -> None:
        """Poll every home at the cadence until the clock reaches ``until_ms`` (the last poll is
        at or before it), sending as an agent does; then wait until everything is acked.

        ``on_tick(now_ms)`` runs every ``tick_ms`` of clock time; returning False stops early.
        Homes that fall behind a fast clock send the polls they owe together, in one batch.
        ``send_every_s`` (clock time) makes each home send what it polled at most that often,
        as an agent behind a slow link does: a soak on a fast clock then costs the hub fewer,
        larger messages for the same readings.
        """
        n = len(self.homes)
        start_ms = self.clock.now_ms()
        base = start_ms - start_ms % self.cadence_ms + self.cadence_ms
        due = [(base + (i * self.cadence_ms) // n, i) for i in range(n)]
        heapq.heapify(due)
        next_tick = start_ms + tick_ms
        self._next_status_ms = start_ms + self.status_every_ms
        status_queue: deque[LoadHome] = deque()
        send_every_ms = int(send_every_s * 1000)
        held: dict[int, list[Key]] = {}  # polled, waiting for the home's next send
        send_due: list[tuple[int, int]] = []  # (clock ms, home index) of homes holding polls
        while True:
            now_ms = self.clock.now_ms()
            live: dict[int, list[Key]] = {}
            while due and due[0][0] <= min(now_ms, until_ms):
                t_ms, i = heapq.heappop(due)
                keys = self.homes[i].poll(t_ms)
                heapq.heappush(due, (t_ms + self.cadence_ms, i))
                if send_every_ms:
                    if i not in held:
                        heapq.heappush(send_due, (t_ms + send_every_ms, i))
                    held.setdefault(i, []).extend(keys)
                else:
                    live.setdefault(i, []).extend(keys)
            while send_due and send_due[0][0] <= now_ms:
                _, i = heapq.heappop(send_due)
                live[i] = held.pop(i)
            for i, keys in live.items():
                self._pump(self.homes[i], now_ms, keys)
            for h in list(self._backlogged):  # backlogs, as the window makes room
                if len(h.inflight) < h.window:
                    self._pump(h, now_ms, [])
            if now_ms >= self._next_status_ms:
                self._next_status_ms = now_ms + self.status_every_ms
                status_queue.extend(h for h in self.homes if h in self._connected)
            for _ in range(min(len(status_queue), 200)):  # spread statuses over turns
                h = status_queue.popleft()
                if h in self._connected:
                    self._publish_status(h, now_ms)
            if now_ms >= next_tick:
                next_tick = now_ms + tick_ms
                if on_tick is not None and not on_tick(now_ms):
                    break
            if now_ms >= until_ms and (not due or due[0][0] > until_ms):
                break
            self.io(0.01 if not live else 0.0)
        for i, keys in held.items():  # what the last turn polled
            self._pump(self.homes[i], self.clock.now_ms(), keys)
        self.drain(drain_timeout_s)

    # -- results ---------------------------------------------------------------------------

    def totals(self) -> Totals:
        total = HomeCounts()
        for h in self.homes:
            total.add(h.counts)
        return Totals(total, sum(h.outstanding for h in self.homes), len(self.homes))

    def expected(self) -> dict[tuple[str, str], int]:
        """Per (home, device), the last seq generated: the hub must hold exactly 1..last."""
        return {(h.home, d): s for h in self.homes for d, s in h.seq.items() if s}

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish each home's offline status and disconnect."""
        now_ms = self.clock.now_ms()
        for h in self.homes:
            if h in self._connected and h.session is not None:
                topic = home_topic(self.coop, h.home, HomeTopic.STATUS)
                h.session.publish(topic, encode(h.status("offline", now_ms)), retain=True)
                h.session.stop()  # disconnects; the selector below writes what is queued
        deadline = time.monotonic() + timeout_s
        while self._sockets and time.monotonic() < deadline:
            self.io(0.01)
        for h in self.homes:
            if h.session is not None and h in self._sockets:
                with contextlib.suppress(Exception):
                    h.session.client.loop_write()
        self._sel.close()


def stored_seq_ranges(db: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per (home, device) in a hub database: readings stored, lowest and highest seq. Against
    :meth:`Neighbourhood.expected`: exactly once is (last, 1, last) for every device, as the
    primary key allows each (device, seq) once."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.home, d.device, count(*), min(r.seq), max(r.seq) "
            "FROM readings r JOIN devices d ON d.id = r.device_id GROUP BY d.id"
        ).fetchall()
    return {(h, d): (n, lo, hi) for h, d, n, lo, hi in rows}
