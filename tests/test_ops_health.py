"""Operator monitoring: alerts from snapshots (pure), and the hub publishing them over a real
Mosquitto: metrics, alert changes, the forecast's age and Home Assistant discovery."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.ingest.service import Ingest
from hub.ops.ha_discovery import HA_STATUS_TOPIC, METRIC_SENSORS, discovery_configs
from hub.ops.health import (
    MINUTE_MS,
    HealthService,
    HomeSnapshot,
    Snapshot,
    Thresholds,
    build_metrics,
    evaluate,
    home_health,
    read_homes,
)
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import MAX_PAYLOAD_BYTES, decode, decode_message, encode
from protocol.payloads import (
    MAX_METRIC_HOMES,
    DeviceHealth,
    Forecast,
    HomeStatus,
    HubAlert,
    HubMetrics,
    Reading,
    ReadingBatch,
)
from protocol.quantities import Role
from protocol.session import BrokerSettings
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic
from sim.broker import RunningBroker
from tests.harness import Recorder, wait_for
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
GOLDEN = Path(__file__).parent / "golden"
WAIT_S = 10.0
T = Thresholds()


def snap(
    *homes: HomeSnapshot,
    now: int = T0,
    counters: dict[str, int] | None = None,
    previous: dict[str, int] | None = None,
    **kw: Any,
) -> Snapshot:
    return Snapshot(
        now_ms=now,
        homes={h.home: h for h in homes},
        counters=counters or {},
        previous_counters=previous,
        elapsed_ms=60_000,
        forecast_issued_ms=kw.pop("forecast", None),
        **kw,
    )


def online(home: str, received_ago_ms: int = 10_000, **kw: Any) -> HomeSnapshot:
    rx = T0 - received_ago_ms
    return HomeSnapshot(home, "online", rx, rx - 500, rx, **kw)


def kinds(alerts: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(a.kind, a.severity, a.home) for a in alerts]


# -- evaluate ----------------------------------------------------------------------------------


def test_a_healthy_cooperative_raises_nothing() -> None:
    s = snap(online("home-1"), online("home-2", backlog=3), forecast=T0 - 15 * MINUTE_MS,
             counters={"stored": 10}, previous={"stored": 5})  # fmt: skip
    assert evaluate(s, T, {}) == []


def test_offline_homes_warn_then_turn_critical() -> None:
    s = snap(HomeSnapshot("home-1", "offline", T0 - 5 * MINUTE_MS, None, None))
    assert kinds(evaluate(s, T, {})) == [("home-offline", "warning", "home-1")]
    s = snap(HomeSnapshot("home-1", "offline", T0 - 7 * 60 * MINUTE_MS, None, None))
    [alert] = evaluate(s, T, {})
    assert (alert.severity, alert.text) == ("critical", "home-1 offline for 7 h")


def test_online_without_new_readings_is_stale() -> None:
    s = snap(online("home-1", received_ago_ms=16 * MINUTE_MS), online("home-2"))
    [alert] = evaluate(s, T, {})
    assert (alert.kind, alert.home, alert.text) == (
        "stale-data",
        "home-1",
        "home-1 online but no new reading for 16 min",
    )
    never = HomeSnapshot("home-3", "online", T0 - 20 * MINUTE_MS, None, None)
    assert "no reading for 20 min" in evaluate(snap(never), T, {})[0].text
    fresh = HomeSnapshot("home-4", "online", T0 - 2 * MINUTE_MS, None, None)
    assert evaluate(snap(fresh), T, {}) == []  # just came online: give it time


def test_device_faults_backlog_and_losses() -> None:
    h = online("home-1", faults={"pv-inverter": "no answer from unit 1"}, backlog=12_000, lost=40)
    s = snap(h, lost_increased_ms={"home-1": T0 - 60 * MINUTE_MS})
    assert kinds(evaluate(s, T, {})) == [
        ("readings-lost", "critical", "home-1"),
        ("backlog", "warning", "home-1"),
        ("device-fault", "warning", "home-1"),
    ]
    fault = next(a for a in evaluate(s, T, {}) if a.kind == "device-fault")
    assert fault.device == "pv-inverter" and "no answer" in fault.text
    a_day_later = snap(h, now=T0 + 24 * 60 * MINUTE_MS, lost_increased_ms={"home-1": T0})
    assert "readings-lost" not in [a.kind for a in evaluate(a_day_later, T, {})]
    # An offline home's device list is stale news: only the home's absence is alerted.
    off = dataclasses.replace(h, state="offline", backlog=None)
    assert [a.kind for a in evaluate(snap(off), T, {})] == ["home-offline"]


def test_a_reading_unacked_for_minutes_is_alerted_long_before_the_backlog_is() -> None:
    # Four readings stuck 4 minutes (a lost batch among acked ones): far under 10,000 waiting.
    stuck = online("home-1", backlog=4, unacked_age_ms=4 * MINUTE_MS)
    assert kinds(evaluate(snap(stuck), T, {})) == [("unacked", "warning", "home-1")]
    alert = evaluate(snap(stuck), T, {})[0]
    assert alert.text == "home-1's oldest unacked reading is 4 min old"
    # Two minutes is a slow ack, not yet a stuck one; an offline home is alerted as offline.
    assert evaluate(snap(online("home-1", unacked_age_ms=2 * MINUTE_MS)), T, {}) == []
    gone = dataclasses.replace(stuck, state="offline")
    assert [a.kind for a in evaluate(snap(gone), T, {})] == ["home-offline"]
    assert home_health(stuck).unacked_age_s == 240


def test_the_unacked_age_is_the_one_the_home_last_reported(tmp_path: Path) -> None:
    """Measured at the status's own time, so an old status never ages into an alert."""
    store = Store.open(tmp_path / "hub.db", "c-1", clock=ManualClock(T0))
    late = HomeStatus("home-1", "online", T0 - 60_000, backlog=3,
                      backlog_oldest_ms=T0 - 60_000 - 200_000, unacked_age_s=200)  # fmt: skip
    fine = HomeStatus("home-2", "online", T0 - 240_000, backlog=1,
                      backlog_oldest_ms=T0 - 241_000, unacked_age_s=1)  # fmt: skip
    store.update_home_statuses([late, fine, HomeStatus("home-3", "online", T0)], T0)
    homes = read_homes(store.reader())
    assert homes["home-1"].unacked_age_ms == 200_000
    assert homes["home-2"].unacked_age_ms == 1_000
    assert homes["home-3"].unacked_age_ms is None
    store.close()


def test_hub_side_alerts_come_from_counter_increases() -> None:
    s = snap(
        counters={"errors": 3, "rejected": 7, "mismatched": 2},
        previous={"errors": 1, "rejected": 2, "mismatched": 1},
        mismatched_homes={"home-9": 1},
        forecast=T0 - 7 * 60 * MINUTE_MS,
    )
    alerts = evaluate(s, T, {})
    assert kinds(alerts) == [
        ("home-mismatch", "critical", "home-9"),
        ("hub-errors", "critical", None),
        ("forecast-stale", "warning", None),
        ("rejected-messages", "warning", None),
    ]
    assert alerts[-1].text == "4 message(s) broke the wire contract"  # 5 rejected, 1 mismatch
    first = snap(counters={"errors": 3}, previous=None)
    assert evaluate(first, T, {}) == []  # no previous interval: no increase known


def test_since_survives_across_evaluations() -> None:
    s = snap(HomeSnapshot("home-1", "offline", T0 - MINUTE_MS, None, None))
    [alert] = evaluate(s, T, {"home-offline/home-1/": T0 - 30 * MINUTE_MS})
    assert alert.since_ms == T0 - 30 * MINUTE_MS


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_count_homes_and_rates() -> None:
    s = snap(
        online("home-1", backlog=5),
        online("home-2", received_ago_ms=30 * MINUTE_MS),
        HomeSnapshot("home-3", "offline", T0 - MINUTE_MS, T0 - MINUTE_MS, T0 - MINUTE_MS),
        counters={"stored": 600, "received": 60, "rejected": 1, "pending": 4},
        previous={"stored": 0, "received": 0, "rejected": 0},
    )
    m = build_metrics("c-1", s, evaluate(s, T, {}), 30, T)
    assert (m.homes_total, m.homes_online, m.homes_stale, m.backlog_total) == (3, 2, 1, 5)
    assert (m.readings_per_min, m.messages_per_min, m.rejected_per_min) == (600.0, 60.0, 1.0)
    assert "pending" not in m.counters
    assert m.homes["home-3"].state == "offline"
    assert decode(HubMetrics, encode(m)) == m


def test_two_thousand_homes_fit_in_one_message() -> None:
    homes = [
        online(
            f"home-{i:04d}",
            backlog=i,
            faults={"pv-inverter": "x", "wind-turbine": "y"},
            version="0.1.0",
        )
        for i in range(2000)
    ]
    s = snap(*homes)
    m = build_metrics("big-coop", s, evaluate(s, T, {}), 30, T)
    assert len(m.alerts) == 500  # capped
    assert len(encode(m)) < MAX_PAYLOAD_BYTES


def test_past_the_limit_homes_with_alerts_keep_their_detail() -> None:
    homes = [online(f"h-{i:05d}") for i in range(MAX_METRIC_HOMES + 10)]
    homes[-1] = HomeSnapshot(homes[-1].home, "offline", T0, None, None)
    s = snap(*homes)
    m = build_metrics("big-coop", s, evaluate(s, T, {}), 30, T)
    assert m.truncated and len(m.homes) == MAX_METRIC_HOMES
    assert homes[-1].home in m.homes
    assert m.homes_total == MAX_METRIC_HOMES + 10


# -- Home Assistant's templates on real payloads -----------------------------------------------


def _ha_render(template: str, payload: bytes) -> str:
    env = jinja2.Environment(autoescape=False)  # renders numbers, not HTML
    return env.from_string(template).render(value_json=json.loads(payload))


def test_discovery_templates_read_the_metrics_payload() -> None:
    raw = (GOLDEN / "hub-metrics__two-alerts.json").read_bytes()
    empty = (GOLDEN / "hub-metrics__no-forecast-yet.json").read_bytes()
    values = {s.key: _ha_render(s.template, raw) for s in METRIC_SENSORS}
    assert values == {
        "homes_online": "2",
        "homes_total": "3",
        "homes_stale": "0",
        "backlog_total": "12",
        "readings_per_min": "36.0",
        "rejected_per_min": "0.0",
        "alerts": "2",
        "forecast_age": "15.0",
    }
    forecast = next(s for s in METRIC_SENSORS if s.key == "forecast_age")
    assert _ha_render(forecast.template, empty) == "None"  # Home Assistant: no value
    configs = discovery_configs("test-coop", 30, "0.1.0")
    problem = configs["homeassistant/binary_sensor/coopwatt_test_coop/problem/config"]
    assert _ha_render(str(problem["value_template"]), raw) == "ON"
    assert _ha_render(str(problem["value_template"]), empty) == "OFF"
    attrs = json.loads(_ha_render(str(problem["json_attributes_template"]), raw))
    assert len(attrs["alerts"]) == 2
    status = (GOLDEN / "hub-status__online.json").read_bytes()
    online_cfg = configs["homeassistant/binary_sensor/coopwatt_test_coop/online/config"]
    assert _ha_render(str(online_cfg["value_template"]), status) == online_cfg["payload_on"]
    for topic, config in configs.items():
        assert topic.startswith("homeassistant/") and topic.endswith("/config")
        assert str(config["unique_id"]).startswith("coopwatt_test_coop_")
        assert config["device"] == {
            "identifiers": ["coopwatt-hub-test-coop"],
            "name": "coopwatt hub test-coop",
            "manufacturer": "coopwatt",
            "model": "cooperative hub",
            "sw_version": "0.1.0",
        }


# -- the service on a real broker -----------------------------------------------------------


@pytest.fixture
def hub_parts(
    mosquitto: RunningBroker, tmp_path: Path
) -> Iterator[tuple[Ingest, HealthService, ManualClock, Recorder]]:
    coop = "health-coop"
    clock = ManualClock(T0)
    store = Store.open(tmp_path / "hub.db", coop, clock=clock)
    settings = BrokerSettings(url=mosquitto.url, client_id=f"hub-{coop}")
    ingest = Ingest(store, settings, coop, clock)
    health = HealthService(
        store.path, coop, settings, clock, ingest.stats, ingest.mismatched_homes, interval_s=30
    )
    watcher = Recorder(
        mosquitto.port,
        [f"coopwatt/{coop}/hub/#", "homeassistant/+/coopwatt_" + coop.replace("-", "_") + "/#"],
        client_id=f"watch-{coop}",
        host=mosquitto.host,
    )
    ingest.start()
    health.start()
    try:
        assert ingest.connected.wait(WAIT_S) and health.session.connected.wait(WAIT_S)
        yield ingest, health, clock, watcher
    finally:
        health.stop()
        ingest.stop()
        watcher.close()
        store.close()


def _retained(broker: RunningBroker, topic: str) -> bytes:
    """What a newcomer subscribing to ``topic`` gets as its retained message."""
    got: list[bytes] = []
    arrived = threading.Event()

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
            arrived.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"newcomer-{topic}")
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    try:
        assert arrived.wait(WAIT_S), f"nothing retained on {topic}"
        return got[0]
    finally:
        client.disconnect()
        client.loop_stop()


def _publish(broker: RunningBroker, topic: str, payload: bytes, retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{topic}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)
    client.disconnect()
    client.loop_stop()


def test_the_hub_publishes_metrics_and_alert_changes(
    hub_parts: tuple[Ingest, HealthService, ManualClock, Recorder], mosquitto: RunningBroker
) -> None:
    ingest, health, clock, watcher = hub_parts
    coop = ingest.coop
    devices = {
        "grid-meter": DeviceHealth(True),
        "pv-inverter": DeviceHealth(False, "no answer from unit 1"),
    }
    faulty = HomeStatus("home-1", "online", T0, "0.1.0", devices, 0)
    reading = Reading("grid-meter", 1, T0 - 1000, Role.GRID, "g-1", {"power_w": 420.0})
    _publish(mosquitto, home_topic(coop, "home-1", HomeTopic.STATUS), encode(faulty))
    _publish(mosquitto, home_topic(coop, "home-1", HomeTopic.READINGS),
             encode(ReadingBatch("home-1", T0, [reading])))  # fmt: skip
    _publish(mosquitto, home_topic(coop, "home-2", HomeTopic.STATUS),
             encode(HomeStatus("home-2", "offline")))  # fmt: skip
    assert ingest.wait_until(lambda s: s["stored"] == 1 and s["statuses"] == 2, WAIT_S)

    metrics = health.publish_now()
    metrics_topic = hub_topic(coop, HubTopic.METRICS)
    watcher.wait(lambda ms: any(t == metrics_topic for t, _, _ in ms), "metrics")
    _, got = decode_message(metrics_topic, watcher.latest(metrics_topic))
    assert got == metrics
    assert _retained(mosquitto, metrics_topic) == watcher.latest(metrics_topic)
    assert (got.homes_total, got.homes_online) == (2, 1)
    assert got.homes["home-1"].faults == ["pv-inverter"]
    assert got.homes["home-1"].last_reading_ms == T0 - 1000
    assert got.homes["home-2"].state == "offline"
    assert got.forecast_issued_ms is None  # the monitor shows "no forecast yet"
    alerts_topic = hub_topic(coop, HubTopic.ALERTS)
    watcher.wait(lambda ms: sum(t == alerts_topic for t, _, _ in ms) == 2, "two alerts raised")
    raised = {decode(HubAlert, p).alert.kind for t, p, _ in watcher.messages if t == alerts_topic}
    assert raised == {"device-fault", "home-offline"}

    # A forecast appears; twenty minutes pass without a reading from home-1.
    forecast = decode(Forecast, (GOLDEN / "hub-forecast__mixed.json").read_bytes())
    forecast = dataclasses.replace(forecast, coop=coop)
    _publish(mosquitto, hub_topic(coop, HubTopic.FORECAST), encode(forecast), retain=True)
    wait_for(lambda: health.forecast_issued_ms == forecast.issued_ms, WAIT_S, "forecast seen")
    clock.advance(20 * MINUTE_MS)
    later = health.publish_now()
    assert later.forecast_issued_ms == forecast.issued_ms
    assert later.homes_stale == 1
    assert {a.kind for a in later.alerts} == {"device-fault", "home-offline", "stale-data"}
    watcher.wait(lambda ms: sum(t == alerts_topic for t, _, _ in ms) == 3, "stale data raised")
    # home-1 is repaired and sends again: its alerts clear.
    fixed = dataclasses.replace(faulty, ts_ms=clock.now_ms(),
                                devices={"grid-meter": DeviceHealth(True),
                                         "pv-inverter": DeviceHealth(True)})  # fmt: skip
    fresh = dataclasses.replace(reading, seq=2, ts_ms=clock.now_ms() - 500)
    _publish(mosquitto, home_topic(coop, "home-1", HomeTopic.STATUS), encode(fixed))
    _publish(mosquitto, home_topic(coop, "home-1", HomeTopic.READINGS),
             encode(ReadingBatch("home-1", clock.now_ms(), [fresh])))  # fmt: skip
    assert ingest.wait_until(lambda s: s["stored"] == 2 and s["statuses"] == 3, WAIT_S)
    assert [a.kind for a in health.publish_now().alerts] == ["home-offline"]
    watcher.wait(lambda ms: sum(t == alerts_topic for t, _, _ in ms) == 5, "two cleared")
    cleared = [decode(HubAlert, p) for t, p, _ in watcher.messages if t == alerts_topic][-2:]
    assert {(e.state, e.alert.kind) for e in cleared} == {
        ("cleared", "device-fault"),
        ("cleared", "stale-data"),
    }
    assert health.tick() is None  # not due again until interval_s has passed
    clock.advance(30_000)
    assert health.tick() is not None


def test_home_assistant_finds_the_hub_and_is_reminded_after_a_restart(
    hub_parts: tuple[Ingest, HealthService, ManualClock, Recorder], mosquitto: RunningBroker
) -> None:
    ingest, _, _, watcher = hub_parts
    expected = set(discovery_configs(ingest.coop, 30, "x"))

    def configs(ms: list[tuple[str, bytes, bool]]) -> list[str]:
        return [t for t, _, _ in ms if t.startswith("homeassistant/")]

    watcher.wait(lambda ms: set(configs(ms)) == expected, "discovery configs")
    for topic in expected:
        assert json.loads(_retained(mosquitto, topic))["unique_id"]
    before = len(configs(watcher.messages))
    _publish(mosquitto, HA_STATUS_TOPIC, b"online")
    watcher.wait(lambda ms: len(configs(ms)) == before + len(expected), "announced again")
    for topic in expected:  # leave the shared test broker clean
        _publish(mosquitto, topic, b"", retain=True)


def test_monitoring_never_takes_the_hub_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clock outside 2000-2100 (a test's clock at 0) or a missing database: logged, no raise."""
    settings = BrokerSettings(url="mqtt://127.0.0.1:1", client_id="never-connects")
    health = HealthService(tmp_path / "missing.db", "c-1", settings, ManualClock(0), dict)
    assert health.tick() is None
    assert "could not publish hub metrics" in caplog.text
    assert health.tick() is None  # and it waits an interval before trying again
