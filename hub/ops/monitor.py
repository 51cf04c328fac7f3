"""``coopwatt-hub monitor``: the operator's live view, from nothing but an MQTT connection.

Subscribes to the hub's retained ``hub/status``, ``hub/metrics`` and ``hub/forecast`` and to
``hub/alerts``, and draws them with rich: the hub's state, homes online, stale data, backlogs,
ingest rates, the forecast's age and the active alerts, problem homes first. It runs anywhere
the operator's account can reach the broker (the ``operator.toml`` ``broker-config`` writes)
and keeps no state of its own: a clean MQTT session, so nothing is queued for it while it is
not running.

:class:`MonitorState` (messages in) and :func:`render` (a frame out) are pure; the terminal and
the connection are in :func:`run_monitor`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from protocol.clock import Clock, SystemClock
from protocol.codec import CodecError, decode_message
from protocol.config_tables import ConfigError, Table, broker_settings, load
from protocol.payloads import Forecast, HubAlert, HubMetrics, HubStatus
from protocol.session import BrokerSettings, make_client
from protocol.topics import HubTopic, hub_topic

log = logging.getLogger(__name__)

MINUTE_MS = 60_000


@dataclass(frozen=True)
class MonitorConfig:
    coop: str
    broker: BrokerSettings


def parse_monitor_config(data: dict[str, Any], base: Path) -> MonitorConfig:
    """``coop`` and a ``[broker]`` table; a hub config works too (its other keys are ignored)."""
    root = Table(data)
    coop = root.ident("coop")
    broker = broker_settings(
        root.table("broker"), f"coopwatt-monitor-{coop}-{socket.gethostname()}"[:64], base
    )
    return MonitorConfig(coop, broker)


def load_monitor_config(path: Path) -> MonitorConfig:
    return load(path, parse_monitor_config)


@dataclass
class MonitorState:
    """What the monitor has heard; ``apply`` takes one message, ``*_at_ms`` is when it came."""

    coop: str
    connected: bool = False
    hub: HubStatus | None = None
    metrics: HubMetrics | None = None
    metrics_at_ms: int | None = None
    forecast_issued_ms: int | None = None
    forecast_demand: str = ""  # how demand is forecast, per horizon band
    events: deque[HubAlert] = field(default_factory=lambda: deque(maxlen=8))
    errors: int = 0

    def topics(self) -> list[str]:
        return [hub_topic(self.coop, k) for k in HubTopic]

    def apply(self, topic: str, payload: bytes, now_ms: int) -> None:
        if not payload:  # a retained message being cleared
            return
        try:
            _, msg = decode_message(topic, payload)
        except CodecError as exc:
            self.errors += 1
            log.debug("ignoring %s: %s", topic, exc)
            return
        if isinstance(msg, HubStatus):
            self.hub = msg
        elif isinstance(msg, HubMetrics):
            self.metrics, self.metrics_at_ms = msg, now_ms
        elif isinstance(msg, Forecast):
            self.forecast_issued_ms = msg.issued_ms
            self.forecast_demand = demand_basis(msg)
        elif isinstance(msg, HubAlert):
            self.events.appendleft(msg)

    @property
    def forecast_ms(self) -> int | None:
        if self.forecast_issued_ms is not None:
            return self.forecast_issued_ms
        return self.metrics.forecast_issued_ms if self.metrics else None


def demand_basis(forecast: Forecast) -> str:
    """``demand forecast: model 0-6h, mean_4w 6-24h, mean_4w 24-48h`` (which forecaster serves
    each horizon band, as the hub's tuning chose), or the method alone when nothing was chosen.
    """
    demand = forecast.demand
    if not demand.basis:
        return f"demand forecast: {demand.method}"
    chosen = ", ".join(f"{name} {band}" for band, name in demand.basis.items())
    return f"demand forecast: {chosen}"


def ago(ts_ms: int | None, now_ms: int) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 days ago`` or ``never``."""
    if ts_ms is None:
        return "never"
    return f"{age(now_ms - ts_ms)} ago"


def age(ms: int) -> str:
    """``12 s``, ``5 min``, ``3 h`` or ``2 days``."""
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}


def _header(state: MonitorState, now_ms: int) -> RenderableType:
    line = Text()
    if not state.connected:
        line.append("not connected to the broker  ", style="bold red")
    if state.hub is None:
        line.append("hub: no status yet", style="yellow")
    elif state.hub.state == "online":
        line.append("hub: online", style="bold green")
    else:
        line.append("hub: OFFLINE", style="bold red")
    if state.hub is not None and state.hub.version:
        line.append(f"  v{state.hub.version}")
    m = state.metrics
    if m is None:
        line.append("   metrics: none yet", style="yellow")
    else:
        late = now_ms - m.ts_ms > 3 * m.interval_s * 1000
        line.append(f"   metrics: {ago(m.ts_ms, now_ms)}", style="red" if late else "")
    forecast = state.forecast_ms
    if forecast is None:
        line.append("   forecast: no forecast yet", style="yellow")
    else:
        line.append(f"   forecast: issued {ago(forecast, now_ms)}")
        if state.forecast_demand:
            line.append(f"\n{state.forecast_demand}")
    return Panel(line, title=f"coopwatt {state.coop}", title_align="left")


def _summary(m: HubMetrics) -> RenderableType:
    table = RichTable.grid(padding=(0, 3))
    for _ in range(4):
        table.add_column()
    online_style = "green" if m.homes_online == m.homes_total else "yellow"
    table.add_row(
        Text(f"homes online {m.homes_online}/{m.homes_total}", style=online_style),
        Text(f"stale {m.homes_stale}", style="yellow" if m.homes_stale else ""),
        f"backlog {m.backlog_total} readings",
        f"alerts {len(m.alerts)}",
    )
    table.add_row(
        f"stored {m.readings_per_min:g}/min",
        f"messages {m.messages_per_min:g}/min",
        Text(f"rejected {m.rejected_per_min:g}/min", style="red" if m.rejected_per_min else ""),
        f"stored since start {m.counters.get('stored', 0)}",
    )
    return table


def _alerts(m: HubMetrics, now_ms: int, limit: int) -> RenderableType:
    table = RichTable(title="alerts", title_justify="left", expand=True)
    table.add_column("severity")
    table.add_column("kind")
    table.add_column("since")
    table.add_column("what", ratio=1)
    for a in m.alerts[:limit]:
        table.add_row(
            Text(a.severity, style=_SEVERITY_STYLE[a.severity]),
            a.kind,
            ago(a.since_ms, now_ms),
            a.text,
        )
    if len(m.alerts) > limit:
        table.add_row("", "", "", f"... and {len(m.alerts) - limit} more")
    return table


def _homes(m: HubMetrics, now_ms: int, limit: int) -> RenderableType:
    flagged = {a.home for a in m.alerts if a.home}
    order = sorted(m.homes, key=lambda h: (h not in flagged, m.homes[h].state == "online", h))
    table = RichTable(title="homes (problems first)", title_justify="left", expand=True)
    for name in ("home", "state", "last seen", "newest reading", "backlog", "oldest unacked",
                 "faults"):  # fmt: skip
        table.add_column(name)
    for home in order[:limit]:
        h = m.homes[home]
        style = "red" if h.state != "online" else ("yellow" if home in flagged else "")
        table.add_row(
            Text(home, style=style),
            Text(h.state, style="green" if h.state == "online" else "red"),
            ago(h.last_seen_ms, now_ms),
            ago(h.last_reading_ms, now_ms),
            "" if h.backlog is None else str(h.backlog),
            "" if h.unacked_age_s is None else age(h.unacked_age_s * 1000),
            ", ".join(h.faults or []),
        )
    if len(order) > limit:
        table.add_row(f"... {len(order) - limit} more", "", "", "", "", "", "")
    return table


def render(state: MonitorState, now_ms: int, height: int = 40) -> RenderableType:
    """One frame; ``height`` (terminal lines) bounds how many alerts and homes are listed."""
    parts: list[RenderableType] = [_header(state, now_ms)]
    m = state.metrics
    if m is not None:
        parts.append(_summary(m))
        alert_rows = min(len(m.alerts), max(3, height // 4))
        if m.alerts:
            parts.append(_alerts(m, now_ms, alert_rows))
        home_rows = max(3, height - 12 - alert_rows - len(state.events))
        parts.append(_homes(m, now_ms, home_rows))
    if state.events:
        recent = Text()
        for e in state.events:
            style = _SEVERITY_STYLE[e.alert.severity] if e.state == "raised" else "green"
            recent.append(f"{ago(e.ts_ms, now_ms):>12}  {e.state:<7} {e.alert.text}\n", style)
        parts.append(Panel(recent, title="recent alert changes", title_align="left"))
    return Group(*parts)


def render_text(state: MonitorState, now_ms: int, width: int = 120, height: int = 40) -> str:
    """A frame as plain text (for ``--once`` without a terminal, and for tests)."""
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        console.print(render(state, now_ms, height))
        return console.export_text()
    finally:
        console.file.close()


# -- the connection --------------------------------------------------------------------------


def monitor_client(
    config: MonitorConfig, on_message: Callable[[str, bytes], None], state: MonitorState
) -> mqtt.Client:
    """A paho client with a clean session (nothing queued for a monitor that is not running)."""
    client = make_client(config.broker, clean=True)
    client.reconnect_delay_set(1, 30)

    def connected(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the monitor: %s", reason)
            return
        state.connected = True
        for topic in state.topics():
            c.subscribe(topic, qos=1)

    def disconnected(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        state.connected = False

    client.on_connect = connected
    client.on_disconnect = disconnected
    client.on_message = lambda c, u, msg: on_message(msg.topic, bytes(msg.payload))
    return client


def run_monitor(
    config: MonitorConfig,
    *,
    once: bool = False,
    timeout_s: float = 10.0,
    console: Console | None = None,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
) -> MonitorState:
    """Show the live view until ``stop`` (Ctrl-C); with ``once``, print one frame as soon as the
    hub's retained metrics arrive (or ``timeout_s`` passes) and return."""
    from rich.live import Live  # noqa: PLC0415 - only for the live terminal view

    clock = clock or SystemClock()
    console = console or Console()
    stop = stop or threading.Event()
    state = MonitorState(config.coop)
    changed = threading.Event()
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        with lock:
            state.apply(topic, payload, clock.now_ms())
        changed.set()

    client = monitor_client(config, on_message, state)
    b = config.broker
    client.connect_async(b.host, b.port, keepalive=b.keepalive_s)
    client.loop_start()
    try:
        if once:
            deadline = time.monotonic() + timeout_s
            while state.metrics is None or state.hub is None:
                if stop.is_set() or time.monotonic() >= deadline:
                    break
                changed.wait(0.1)  # woken by every message; the timeout bounds the deadline
                changed.clear()
            with lock:
                console.print(render(state, clock.now_ms(), console.height))
            return state
        with Live(console=console, screen=False, auto_refresh=False) as live:
            while not stop.is_set():
                with lock:
                    live.update(render(state, clock.now_ms(), console.height), refresh=True)
                changed.wait(1.0)  # redraw on news, and every second for the "ago" columns
                changed.clear()
        return state
    finally:
        client.disconnect()
        client.loop_stop()


__all__ = [
    "ConfigError",
    "MonitorConfig",
    "MonitorState",
    "load_monitor_config",
    "render",
    "render_text",
    "run_monitor",
]
