"""Operator monitoring: per-home health, alerts and ingest rates, published over MQTT.

Every ``interval_s`` the hub publishes ``hub/metrics`` (retained): each home's online state,
when it was last heard from and the time of its newest reading, its outbox backlog and the
devices it cannot read; ingest rates; the forecast's age; and the alerts active now. Each alert
raised or cleared is also published once on ``hub/alerts``. The operator needs nothing but an
MQTT connection (``coopwatt-hub monitor``, Home Assistant) to see at a glance what is healthy.

:func:`evaluate` is pure (snapshots and thresholds in, alerts out); :class:`HealthService` is the
shell that reads the store, the ingest counters and the broker. No home's energy is published:
only whether its data flows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import hub
from hub.forecast.published import forecast_from_message
from hub.ops.ha_discovery import HA_STATUS_TOPIC, discovery_messages
from protocol.clock import Clock
from protocol.codec import CodecError, encode
from protocol.payloads import (
    MAX_ALERTS,
    MAX_FAULTS_PER_HOME,
    MAX_METRIC_HOMES,
    Alert,
    HomeHealth,
    HubAlert,
    HubMetrics,
)
from protocol.session import BrokerSettings, MqttSession
from protocol.topics import HubTopic, hub_topic, is_id

log = logging.getLogger(__name__)

MINUTE_MS: Final = 60_000


@dataclass(frozen=True)
class Thresholds:
    """When a condition becomes an alert. Times in ms of the hub's clock."""

    stale_after_ms: int = 15 * MINUTE_MS  # online but no reading for this long
    offline_critical_ms: int = 6 * 60 * MINUTE_MS  # offline this long: critical
    backlog_warning: int = 10_000  # readings waiting in a home's outbox
    # A home's oldest unacked reading older than this: its delivery is stuck, whatever the
    # backlog's size (one lost batch among acked ones is a handful of readings).
    unacked_warning_ms: int = 3 * MINUTE_MS
    lost_alert_ms: int = 24 * 60 * MINUTE_MS  # how long a loss of readings stays on the board
    forecast_stale_ms: int = 6 * 60 * MINUTE_MS  # a forecast older than this


@dataclass(frozen=True)
class HomeSnapshot:
    """What the hub knows of one home (from its retained status and its stored readings)."""

    home: str
    state: Literal["online", "offline"]
    last_seen_ms: int | None  # when the hub last received anything from the home
    last_reading_ms: int | None  # ts of its newest stored reading
    last_received_ms: int | None  # when that reading arrived at the hub
    backlog: int | None = None
    faults: dict[str, str] = field(default_factory=dict)  # device -> error
    lost: int | None = None
    version: str | None = None
    unacked_age_ms: int | None = None  # its oldest unacked reading's age, at its last status


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`evaluate` looks at, at ``now_ms``."""

    now_ms: int
    homes: dict[str, HomeSnapshot]
    counters: dict[str, int]  # ingest counters now
    previous_counters: dict[str, int] | None  # at the previous evaluation
    elapsed_ms: int  # since the previous evaluation
    forecast_issued_ms: int | None
    mismatched_homes: dict[str, int] = field(default_factory=dict)  # increase since previous
    lost_increased_ms: dict[str, int] = field(default_factory=dict)  # home -> when lost rose


def _fmt_age(ms: int) -> str:
    minutes = max(0, ms) // MINUTE_MS
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def _delta(snapshot: Snapshot, name: str) -> int:
    if snapshot.previous_counters is None:
        return 0
    return max(0, snapshot.counters.get(name, 0) - snapshot.previous_counters.get(name, 0))


def is_stale(home: HomeSnapshot, now_ms: int, t: Thresholds) -> bool:
    """Online, yet nothing has been stored from it for ``stale_after_ms``."""
    if home.state != "online":
        return False
    last = home.last_received_ms
    if last is None:  # never sent a reading: stale once it has been online that long
        last = home.last_seen_ms
    return last is not None and now_ms - last > t.stale_after_ms


def evaluate(snapshot: Snapshot, t: Thresholds, since: dict[str, int]) -> list[Alert]:
    """The alerts active in ``snapshot``; ``since`` maps an alert key to when it was raised."""
    now = snapshot.now_ms
    raw: list[Alert] = []

    def add(kind: Any, severity: Any, text: str, home: str | None = None,
            device: str | None = None) -> None:  # fmt: skip
        alert = Alert(kind, severity, now, text[:200], home, device)
        raw.append(replace(alert, since_ms=since.get(alert.key, now)))

    for h in snapshot.homes.values():
        if h.state == "offline":
            away = now - h.last_seen_ms if h.last_seen_ms is not None else 0
            severity = "critical" if away >= t.offline_critical_ms else "warning"
            add("home-offline", severity, f"{h.home} offline for {_fmt_age(away)}", h.home)
        elif is_stale(h, now, t):
            ref = h.last_received_ms if h.last_received_ms is not None else h.last_seen_ms
            age = now - ref if ref is not None else 0
            what = "no reading" if h.last_received_ms is None else "no new reading"
            add("stale-data", "warning", f"{h.home} online but {what} for {_fmt_age(age)}", h.home)
        if h.state == "online":
            for device, error in sorted(h.faults.items()):
                add("device-fault", "warning", f"{h.home}/{device}: {error}", h.home, device)
        if h.backlog is not None and h.backlog >= t.backlog_warning:
            add("backlog", "warning", f"{h.home} has {h.backlog} readings waiting", h.home)
        if h.state == "online" and (h.unacked_age_ms or 0) >= t.unacked_warning_ms:
            add("unacked", "warning", f"{h.home}'s oldest unacked reading is "
                f"{_fmt_age(h.unacked_age_ms or 0)} old", h.home)  # fmt: skip
        rose = snapshot.lost_increased_ms.get(h.home)
        if rose is not None and now - rose < t.lost_alert_ms:
            add("readings-lost", "critical",
                f"{h.home} lost {h.lost or 0} readings: its outbox overflowed", h.home)  # fmt: skip
    for home, count in sorted(snapshot.mismatched_homes.items()):
        add("home-mismatch", "critical",
            f"{count} payload(s) on {home}'s topic named another home", home)  # fmt: skip
    if snapshot.forecast_issued_ms is not None:
        age = now - snapshot.forecast_issued_ms
        if age > t.forecast_stale_ms:
            add("forecast-stale", "warning", f"forecast is {_fmt_age(age)} old")
    errors = _delta(snapshot, "errors")
    if errors:
        add("hub-errors", "critical", f"the store failed {errors} time(s) in the last interval")
    rejected = _delta(snapshot, "rejected") - _delta(snapshot, "mismatched")
    if rejected > 0:
        add("rejected-messages", "warning", f"{rejected} message(s) broke the wire contract")
    severity_rank = {"critical": 0, "warning": 1}
    raw.sort(key=lambda a: (severity_rank[a.severity], a.since_ms, a.key))
    return raw[:MAX_ALERTS]


def home_health(h: HomeSnapshot) -> HomeHealth:
    faults = sorted(h.faults)[:MAX_FAULTS_PER_HOME] if h.state == "online" else []
    return HomeHealth(
        state=h.state,
        last_seen_ms=h.last_seen_ms,
        last_reading_ms=h.last_reading_ms,
        backlog=h.backlog,
        faults=faults or None,
        version=h.version,
        unacked_age_s=None if h.unacked_age_ms is None else h.unacked_age_ms // 1000,
    )


def build_metrics(
    coop: str, snapshot: Snapshot, alerts: list[Alert], interval_s: int, t: Thresholds
) -> HubMetrics:
    """The ``hub/metrics`` payload; healthy homes are left out past ``MAX_METRIC_HOMES``."""
    homes = snapshot.homes
    minutes = snapshot.elapsed_ms / MINUTE_MS if snapshot.previous_counters is not None else 0

    def rate(name: str) -> float:
        return round(_delta(snapshot, name) / minutes, 2) if minutes > 0 else 0.0

    health = {home: home_health(h) for home, h in sorted(homes.items())}
    truncated = None
    if len(health) > MAX_METRIC_HOMES:
        flagged = {a.home for a in alerts if a.home is not None}
        keep = sorted(flagged)[:MAX_METRIC_HOMES]
        keep += [h for h in health if h not in flagged][: MAX_METRIC_HOMES - len(keep)]
        health = {home: health[home] for home in sorted(keep)}
        truncated = True
    return HubMetrics(
        coop=coop,
        ts_ms=snapshot.now_ms,
        interval_s=interval_s,
        homes_total=len(homes),
        homes_online=sum(1 for h in homes.values() if h.state == "online"),
        homes_stale=sum(1 for h in homes.values() if is_stale(h, snapshot.now_ms, t)),
        backlog_total=sum(h.backlog or 0 for h in homes.values()),
        readings_per_min=rate("stored"),
        messages_per_min=rate("received"),
        rejected_per_min=rate("rejected"),
        homes=health,
        alerts=alerts,
        counters={k: v for k, v in sorted(snapshot.counters.items()) if k != "pending"},
        forecast_issued_ms=snapshot.forecast_issued_ms,
        truncated=truncated,
    )


# -- reading the store ---------------------------------------------------------------------------

_LATEST_READINGS: Final = (
    "SELECT d.home, max(r.ts_ms), max(r.received_ms) FROM devices d "
    "JOIN readings r ON r.device_id = d.id "
    "AND r.seq = (SELECT max(seq) FROM readings WHERE device_id = d.id) GROUP BY d.home"
)
_STATUSES: Final = "SELECT home, state, last_seen_ms, backlog, payload FROM home_status"


def read_homes(conn: sqlite3.Connection) -> dict[str, HomeSnapshot]:
    """Each known home's snapshot from the hub database (statuses and newest readings).

    The newest reading per device is found through the primary key, so this stays cheap
    however many readings are stored.
    """
    import json  # noqa: PLC0415 - only this function decodes stored status payloads

    latest = {home: (ts, rx) for home, ts, rx in conn.execute(_LATEST_READINGS)}
    homes: dict[str, HomeSnapshot] = {}
    for home, state, last_seen, backlog, payload in conn.execute(_STATUSES):
        status = json.loads(payload)
        faults = {
            name: str(d.get("error") or "not readable")
            for name, d in (status.get("devices") or {}).items()
            if not d.get("online", True) and is_id(name)
        }
        ts, rx = latest.get(home, (None, None))
        age_s = status.get("unacked_age_s")
        homes[home] = HomeSnapshot(
            home=home,
            state="offline" if state == "offline" else "online",
            last_seen_ms=max(x for x in (last_seen, rx) if x is not None),
            last_reading_ms=ts,
            last_received_ms=rx,
            backlog=backlog,
            faults=faults,
            lost=status.get("lost"),
            version=status.get("version"),
            unacked_age_ms=None if age_s is None else int(age_s) * 1000,
        )
    for home, (ts, rx) in latest.items():
        if home not in homes:  # readings but no status yet (an agent of the first release)
            homes[home] = HomeSnapshot(home, "online", rx, ts, rx)
    return homes


# -- the service -------------------------------------------------------------------------------


class HealthService:
    """Publishes ``hub/metrics`` every ``interval_s`` and alert changes on ``hub/alerts``.

    Its own MQTT connection (client id ``<hub's>-health``) also follows the retained
    ``hub/forecast`` for the forecast's age, and announces the metrics to Home Assistant (again
    whenever Home Assistant says it came online). ``counters`` and ``mismatched`` are the
    ingest's :meth:`~hub.ingest.service.Ingest.stats` and
    :meth:`~hub.ingest.service.Ingest.mismatched_homes`.
    """

    def __init__(
        self,
        db_path: Path,
        coop: str,
        settings: BrokerSettings,
        clock: Clock,
        counters: Callable[[], dict[str, int]],
        mismatched: Callable[[], dict[str, int]] = dict,
        *,
        interval_s: int = 30,
        thresholds: Thresholds | None = None,
        home_assistant: bool = True,
        community: Callable[[int], dict[str, float]] | None = None,
    ) -> None:
        self.db_path = db_path
        self.coop = coop
        self.clock = clock
        self.counters = counters
        self.mismatched = mismatched
        self.interval_s = interval_s
        self.thresholds = thresholds or Thresholds()
        self.home_assistant = home_assistant
        self.community = community  # now_ms -> figures, already limited to groups of >= k homes
        self.metrics_topic = hub_topic(coop, HubTopic.METRICS)
        self.alerts_topic = hub_topic(coop, HubTopic.ALERTS)
        self.forecast_topic = hub_topic(coop, HubTopic.FORECAST)
        self._lock = threading.Lock()
        self._forecast_issued_ms: int | None = None
        self._active: dict[str, Alert] = {}
        self._previous: dict[str, int] | None = None
        self._previous_mismatched: dict[str, int] = {}
        self._previous_ms: int | None = None
        self._lost: dict[str, int] = {}
        self._lost_rose: dict[str, int] = {}
        self._next_due_ms = 0
        self._conn: sqlite3.Connection | None = None
        client_id = (settings.client_id[:56] + "-health")[:64]
        self.session = MqttSession(
            replace(settings, client_id=client_id),
            on_message=self._on_message,
            on_connect=self._on_connect,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.session.start()

    def stop(self) -> None:
        self.session.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tick(self) -> HubMetrics | None:
        """Publish when due (by the hub's clock); call it often. Returns what was published."""
        now = self.clock.now_ms()
        if now < self._next_due_ms:
            return None
        try:
            return self.publish_now()
        except Exception:  # monitoring must never take the hub down with it
            log.exception("could not publish hub metrics")
            self._next_due_ms = now + self.interval_s * 1000
            return None

    # -- paho's thread ----------------------------------------------------------------------------

    def _on_connect(self) -> None:
        self.session.subscribe(self.forecast_topic, qos=1)
        if self.home_assistant:
            self.session.subscribe(HA_STATUS_TOPIC, qos=1)
            self._announce()

    def _announce(self) -> None:
        for topic, payload in discovery_messages(self.coop, self.interval_s, hub.__version__):
            self.session.publish(topic, payload, qos=1, retain=True)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == HA_STATUS_TOPIC:
            if payload.strip() == b"online":  # Home Assistant restarted: it forgot us
                self._announce()
            return
        forecast = forecast_from_message(topic, payload)
        if forecast is not None:
            with self._lock:
                self._forecast_issued_ms = forecast.issued_ms

    # -- publishing -------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = self.db_path.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10.0)
        return self._conn

    def snapshot(self) -> Snapshot:
        now = self.clock.now_ms()
        try:
            homes = read_homes(self._db())
        except sqlite3.Error as exc:
            log.warning("cannot read home health from %s: %s", self.db_path, exc)
            homes = {}
        for h in homes.values():
            old = self._lost.get(h.home)
            if h.lost is not None:
                if old is not None and h.lost > old:
                    self._lost_rose[h.home] = now
                elif old is None and h.lost > 0:
                    self._lost_rose.setdefault(h.home, now)
                self._lost[h.home] = h.lost
        counters = self.counters()
        mismatched = self.mismatched()
        rose = {
            home: n - self._previous_mismatched.get(home, 0)
            for home, n in mismatched.items()
            if n > self._previous_mismatched.get(home, 0)
        }
        with self._lock:
            forecast = self._forecast_issued_ms
        snap = Snapshot(
            now_ms=now,
            homes=homes,
            counters=counters,
            previous_counters=self._previous,
            elapsed_ms=now - self._previous_ms if self._previous_ms is not None else 0,
            forecast_issued_ms=forecast,
            mismatched_homes=rose,
            lost_increased_ms=dict(self._lost_rose),
        )
        self._previous, self._previous_ms = counters, now
        self._previous_mismatched = mismatched
        return snap

    def publish_now(self) -> HubMetrics:
        """Evaluate and publish now, whatever the schedule."""
        snap = self.snapshot()
        since = {key: a.since_ms for key, a in self._active.items()}
        alerts = evaluate(snap, self.thresholds, since)
        # A mismatch is an event: keep it on the board for a day after the last one.
        keys = {a.key for a in alerts}
        for key, old in self._active.items():
            recent = snap.now_ms - old.since_ms < 24 * 60 * MINUTE_MS
            if old.kind == "home-mismatch" and recent and key not in keys:
                alerts.append(old)
        metrics = build_metrics(self.coop, snap, alerts, self.interval_s, self.thresholds)
        if self.community is not None:
            metrics = replace(metrics, community=self.community(snap.now_ms) or None)
        current = {a.key: a for a in alerts}
        events = [HubAlert(self.coop, snap.now_ms, "raised", a) for k, a in current.items()
                  if k not in self._active]  # fmt: skip
        events += [HubAlert(self.coop, snap.now_ms, "cleared", a) for k, a in self._active.items()
                   if k not in current]  # fmt: skip
        self._active = current
        data = self._encode(metrics)
        if data is not None:
            self.session.publish(self.metrics_topic, data, qos=1, retain=True)
        for event in events:
            log.log(
                logging.WARNING if event.state == "raised" else logging.INFO,
                "alert %s kind=%s severity=%s home=%s: %s",
                event.state,
                event.alert.kind,
                event.alert.severity,
                event.alert.home or "-",
                event.alert.text,
            )
            self.session.publish(self.alerts_topic, encode(event), qos=1)
        self._next_due_ms = snap.now_ms + self.interval_s * 1000
        return metrics

    @staticmethod
    def _encode(metrics: HubMetrics) -> bytes | None:
        """The payload; past the wire limit, only homes with an alert keep their detail."""
        try:
            return encode(metrics)
        except CodecError:
            flagged = {a.home for a in metrics.alerts if a.home is not None}
            slim = replace(
                metrics,
                homes={h: v for h, v in metrics.homes.items() if h in flagged},
                truncated=True,
            )
        try:
            return encode(slim)
        except CodecError as exc:
            log.error("cannot publish hub metrics: %s", exc)
            return None

    @property
    def forecast_issued_ms(self) -> int | None:
        """When the forecast last seen on ``hub/forecast`` was issued (None: none yet)."""
        with self._lock:
            return self._forecast_issued_ms

    def active_alerts(self) -> Iterable[Alert]:
        return list(self._active.values())
