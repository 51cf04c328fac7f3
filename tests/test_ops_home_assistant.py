"""The household's opt-in Home Assistant bridge, against a real Mosquitto standing in for the
household's own broker, and run by the real agent command: live values, and the cooperative's
advice driven by the real prompts classes on a ManualClock."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from agent.ha_discovery import (
    HomeAssistantBridge,
    advice_configs,
    advice_topic,
    discovery_topic,
    load_ha_config,
    parse_ha_config,
    sensor_config,
)
from agent.outbox import Polled
from agent.prompts import HomePrompts
from protocol.clock import ManualClock
from protocol.config_tables import ConfigError
from protocol.payloads import AppliancePrompt, Level, LevelSpan, Prompts, PromptWindow
from protocol.quantities import Role
from sim.broker import RunningBroker
from tests.harness import BIN, Recorder, simulated_home, wait_for
from tests.times import JULY_1_2026_1000_UTC_MS, JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
WAIT_S = 10.0


def make_household(broker: RunningBroker, home: str) -> Recorder:
    """A subscriber on the household's broker, as Home Assistant would be."""
    node = f"coopwatt_{home}_".replace("-", "_")
    return Recorder(
        broker.port,
        [
            f"coopwatt/{home}/#",
            "homeassistant/sensor/+/+/config",
            "homeassistant/binary_sensor/+/+/config",
        ],
        client_id=f"ha-{home}",
        # Other tests' devices on the shared test broker are not this household's.
        keep=lambda topic: not topic.startswith("homeassistant/") or node in topic,
        host=broker.host,
    )


def test_sensor_configs_and_templates() -> None:
    power = sensor_config("home-1", "grid-meter", "power_w", "0.1.0")
    assert (power["device_class"], power["unit_of_measurement"], power["state_class"]) == (
        "power",
        "W",
        "measurement",
    )
    energy = sensor_config("home-1", "grid-meter", "energy_import_wh", "0.1.0")
    assert energy["state_class"] == "total_increasing" and energy["unit_of_measurement"] == "Wh"
    state = sensor_config("home-1", "pv-inverter", "state", "0.1.0")
    assert "unit_of_measurement" not in state and "device_class" not in state
    assert power["unique_id"] == "coopwatt_home_1_grid_meter_power_w"
    payload = {"power_w": -1250.5, "energy_import_wh": 1234567.0, "ts_ms": T0}
    env = jinja2.Environment(autoescape=False)  # numbers, not HTML
    assert env.from_string(str(power["value_template"])).render(value_json=payload) == "-1250.5"
    assert discovery_topic("homeassistant", "home-1", "grid-meter", "power_w") == (
        "homeassistant/sensor/coopwatt_home_1_grid_meter/power_w/config"
    )


def test_config_is_checked(tmp_path: Path) -> None:
    good = parse_ha_config({"broker": {"url": "mqtt://ha.local"}}, tmp_path, "home-1")
    assert good.discovery_prefix == "homeassistant"
    assert good.broker.client_id == "coopwatt-agent-home-1-ha"
    with pytest.raises(ConfigError, match="discovery_prefix"):
        parse_ha_config({"discovery_prefix": "ha/#", "broker": {"url": "mqtt://x"}}, tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_ha_config({"broker": {"url": "mqtt://x"}, "enable": True}, tmp_path)


def test_bridge_announces_publishes_and_says_goodbye(mosquitto: RunningBroker) -> None:
    home = "ha-home-1"
    household = make_household(mosquitto, home)
    bridge = HomeAssistantBridge(
        parse_ha_config({"broker": {"url": mosquitto.url}}, Path(), home), home, "0.1.0"
    )
    bridge.start()
    try:
        assert bridge.session.connected.wait(WAIT_S)
        polled = [
            Polled("grid-meter", Role.GRID, T0, {"power_w": 812.0, "energy_import_wh": 5.0e6}),
            Polled("pv-inverter", Role.PV, T0, {"power_w": 2300.0, "state": "mppt"}),
        ]
        bridge.publish(polled)
        state_topic = f"coopwatt/{home}/grid-meter/state"
        last = f"coopwatt/{home}/pv-inverter/state"  # published last: all before it are in
        household.wait(lambda ms: any(t == last for t, _, _ in ms), "state")
        assert json.loads(household.latest(state_topic)) == {
            "power_w": 812.0,
            "energy_import_wh": 5.0e6,
            "ts_ms": T0,
        }
        # (a config announced twice while connecting is harmless: it is the same retained one)
        assert len({t for t in household.topics() if t.endswith("/config")}) == 4
        assert household.latest(f"coopwatt/{home}/availability") == b"online"
        before = len(household.topics())
        household.client.publish("homeassistant/status", b"online", qos=1)  # HA restarted
        household.wait(
            lambda ms: len({t for t, _, _ in ms[before:] if t.endswith("/config")}) == 4,
            "re-announced",
        )
    finally:
        bridge.stop()
    household.wait(
        lambda ms: (
            (f"coopwatt/{home}/availability", b"offline", False) in ms
            or any(t.endswith("availability") and p == b"offline" for t, p, _ in ms)
        ),
        "offline",
    )
    for topic in {t for t in household.topics() if t.endswith("/config") or "/state" in t}:
        household.client.publish(topic, b"", qos=1, retain=True)  # keep the broker clean
    household.close()


def test_the_agent_shares_with_home_assistant_only_when_asked(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    ha_file = tmp_path / "home-assistant.toml"
    ha_file.write_text(f'[broker]\nurl = "{mosquitto.url}"\n')
    appliance = (
        'timezone = "Europe/Amsterdam"\n[[appliances]]\nname = "washing-machine"\n'
        'energy_kwh = 1.0\nduration_min = 120\nearliest_start = "08:00"\n'
        'latest_finish = "22:00"\ninterruptible = false\nruns_per_week = 4\n'
    )
    with simulated_home(tmp_path, "ha-agent-coop", mosquitto.url, extra=appliance) as home:
        household = make_household(mosquitto, "home-1")
        washer = "homeassistant/binary_sensor/coopwatt_home_1_advice/washing_machine_good_now"
        log = (tmp_path / "agent.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "coopwatt-agent"), "run", "--config", str(home.config),
             "--home-assistant", str(ha_file), "--drain-timeout", "0.2"],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        try:
            wait_for(
                lambda: "coopwatt/home-1/grid-meter/state" in household.topics(),
                WAIT_S,
                "grid meter values on the household's broker",
            )
            wait_for(
                lambda: (
                    f"{washer}/config" in household.topics()
                    and "coopwatt/home-1/advice" in household.topics()
                ),
                WAIT_S,
                "the advice and its entities on the household's broker",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        state = json.loads(household.latest("coopwatt/home-1/grid-meter/state"))
        assert "power_w" in state and "energy_import_wh" in state
        # No hub here, so no prompts: the advice says so, and the washer's time is not now.
        assert json.loads(household.latest("coopwatt/home-1/advice")) == {
            "level": "none",
            "reason": "no advice yet",
            "good_now": {"washing-machine": "OFF"},
        }
        for topic in {
            t for t in household.topics()
            if t.endswith(("/config", "/advice")) or "/state" in t
        }:  # fmt: skip
            household.client.publish(topic, b"", qos=1, retain=True)
        household.close()
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\n")
    result = subprocess.run(
        [str(BIN / "coopwatt-agent"), "run", "--config", str(tmp_path / "home-1" / "agent.toml"),
         "--home-assistant", str(bad)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "broker.url is missing" in result.stderr


def test_the_password_stays_out_of_reprs(tmp_path: Path) -> None:
    (tmp_path / "ha.password").write_text("hunter2\n")
    (tmp_path / "ha.toml").write_text(
        '[broker]\nurl = "mqtt://ha.local"\nusername = "coopwatt"\npassword_file = "ha.password"\n'
    )
    config = load_ha_config(tmp_path / "ha.toml", "home-1")
    assert config.broker.password == "hunter2"
    assert "hunter2" not in repr(config)


# -- the cooperative's advice as entities --------------------------------------------------------

H = 3_600_000
MIN = 60_000
AMS = "Europe/Amsterdam"
APPLIANCES = ["washing-machine", "heat-pump"]
QUIET = "no local surplus expected now"
SURPLUS = "neighbourhood solar surplus expected, 3.1 kW"
PEAK = "neighbourhood peak: 2.4 kW from the grid expected"
EXPIRED = "no current advice (the cooperative's hub has not updated it)"

# Home Assistant's documented options for MQTT discovery of a sensor and a binary sensor.
_COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "origin", "payload_available",
    "payload_not_available", "platform", "qos", "state_topic", "unique_id", "value_template",
}  # fmt: skip
SCHEMA_KEYS = {
    "sensor": _COMMON_KEYS | {"last_reset_value_template", "options", "state_class",
                              "suggested_display_precision", "unit_of_measurement"},
    "binary_sensor": _COMMON_KEYS | {"off_delay", "payload_off", "payload_on"},
}  # fmt: skip
_TOPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")


def at(hour: int, minute: int = 0) -> int:
    """A local time in Amsterdam on 1 July 2026 (CEST, UTC+2), as UTC epoch ms."""
    return JULY_1_2026_MIDNIGHT_UTC_MS + (hour - 2) * H + minute * MIN


def washer_prompts(
    home: str, issued: int, until: int, spans: list[tuple[int, int, Level, str]]
) -> Prompts:
    """The hub's prompts: the washing machine's window 11:00-14:00 and the light's course."""
    levels = [LevelSpan(start, end, level, why) for start, end, level, why in spans]
    window = PromptWindow(at(11), at(14))
    return Prompts(
        home=home,
        prompt=f"p{issued}",
        issued_ms=issued,
        valid_until_ms=until,
        level=levels[0].level,
        reason=levels[0].reason,
        levels=levels,
        appliances=[AppliancePrompt("washing-machine", [window], SURPLUS, 1200.0, 800.0)],
        benefit_wh=800.0,
    )


# Issued at 10:00 and good for three hours: amber until the washer's window, then green.
def first_prompts(home: str) -> Prompts:
    return washer_prompts(
        home, at(10), at(13), [(at(10), at(11), "amber", QUIET), (at(11), at(13), "green", SURPLUS)]
    )


def advice(level: str, reason: str, washer: str = "OFF") -> dict[str, Any]:
    """The advice state as Home Assistant reads it; the heat pump has no prompt: never on."""
    return {"level": level, "reason": reason,
            "good_now": {"washing-machine": washer, "heat-pump": "OFF"}}  # fmt: skip


def test_advice_configs_match_the_discovery_schema() -> None:
    configs = advice_configs("homeassistant", "home-1", APPLIANCES, "0.1.0")
    node = "coopwatt_home_1_advice"
    assert set(configs) == {
        f"homeassistant/sensor/{node}/level/config",
        f"homeassistant/sensor/{node}/reason/config",
        f"homeassistant/binary_sensor/{node}/washing_machine_good_now/config",
        f"homeassistant/binary_sensor/{node}/heat_pump_good_now/config",
    }
    for topic, config in configs.items():
        prefix, component, node_id, object_id, last = topic.split("/")
        assert (prefix, last) == ("homeassistant", "config")
        assert _TOPIC_ID.fullmatch(node_id) and _TOPIC_ID.fullmatch(object_id)
        assert set(config) <= SCHEMA_KEYS[component], set(config) - SCHEMA_KEYS[component]
        assert config["state_topic"] == "coopwatt/home-1/advice"
        assert config["availability_topic"] == "coopwatt/home-1/availability"
        assert config["device"] == {
            "identifiers": [node],
            "name": "coopwatt advice (home-1)",
            "manufacturer": "coopwatt",
            "model": "household agent",
            "sw_version": "0.1.0",
        }
    assert len({c["unique_id"] for c in configs.values()}) == 4
    level = configs[f"homeassistant/sensor/{node}/level/config"]
    # An enum sensor lists its states and has neither a unit nor a state class.
    assert level["device_class"] == "enum"
    assert level["options"] == ["green", "amber", "red", "none"]
    assert "unit_of_measurement" not in level and "state_class" not in level
    washer = configs[f"homeassistant/binary_sensor/{node}/washing_machine_good_now/config"]
    pump = configs[f"homeassistant/binary_sensor/{node}/heat_pump_good_now/config"]
    assert washer["name"] == "Washing machine: good time now"
    state = advice("green", SURPLUS, washer="ON")
    env = jinja2.Environment(autoescape=False)  # Home Assistant's templates are not HTML

    def render(config: dict[str, object]) -> str:
        return env.from_string(str(config["value_template"])).render(value_json=state)

    assert render(level) == "green"
    assert render(configs[f"homeassistant/sensor/{node}/reason/config"]) == SURPLUS
    assert render(washer) == washer["payload_on"] == "ON"
    assert render(pump) == pump["payload_off"] == "OFF"


@contextlib.contextmanager
def advice_rig(
    broker: RunningBroker, home: str
) -> Iterator[tuple[ManualClock, HomePrompts, Recorder]]:
    """The real prompts on a ManualClock at 10:00, showing on a bridge to the household's broker,
    and a recorder of the advice as Home Assistant gets it."""
    clock = ManualClock(at(10))
    household = Recorder(
        broker.port,
        [advice_topic(home), f"coopwatt/{home}/availability"],
        client_id=f"ha-{home}",
        host=broker.host,
    )
    bridge = HomeAssistantBridge(
        parse_ha_config({"broker": {"url": broker.url}}, Path(), home), home, "0.1.0"
    )
    prompts = HomePrompts("ha-coop", home, clock, lambda topic, data, retain: None, timezone=AMS)
    prompts.add_view(bridge.advice_view(APPLIANCES, AMS))
    bridge.start()
    try:
        # Once "online" is in, the bridge's connect has passed the point where it would publish
        # the advice again: every advice message from here on is a change.
        household.wait(lambda ms: (f"coopwatt/{home}/availability", b"online", True) in ms
                       or any(p == b"online" for _, p, _ in ms), "online")  # fmt: skip
        yield clock, prompts, household
    finally:
        prompts.stop()
        bridge.stop()
        household.client.publish(advice_topic(home), b"", qos=1, retain=True)
        node = f"coopwatt_{home}_advice".replace("-", "_")
        for topic in advice_configs("homeassistant", home, APPLIANCES, "0.1.0"):
            assert node in topic
            household.client.publish(topic, b"", qos=1, retain=True)
        household.close()


def _expect(household: Recorder, home: str, expected: list[dict[str, Any]]) -> None:
    """The advice messages so far are exactly ``expected``: nothing was sent between changes."""

    def advices(ms: list[tuple[str, bytes, bool]]) -> list[bytes]:
        return [p for t, p, _ in ms if t == advice_topic(home)]

    household.wait(lambda ms: len(advices(ms)) >= len(expected), f"{len(expected)} advices")
    assert [json.loads(p) for p in advices(household.messages)] == expected


def test_good_time_now_follows_the_window_the_snooze_and_the_level_course(
    mosquitto: RunningBroker,
) -> None:
    home = "ha-advice-1"
    with advice_rig(mosquitto, home) as (clock, prompts, household):
        seen = [advice("amber", QUIET)]
        prompts.take(first_prompts(home))
        for _ in range(5):  # the 0.1 s refresh with nothing new: nothing is sent
            prompts.tick()
        _expect(household, home, seen)
        clock.set(at(11) - 1)
        prompts.tick()
        clock.set(at(11))  # the window opens, and the light turns green
        prompts.tick()
        prompts.tick()
        seen.append(advice("green", SURPLUS, washer="ON"))
        _expect(household, home, seen)
        clock.set(at(11, 30))
        prompts.hold()  # snoozed for an hour: the light is off, and so is "good time now"
        seen.append(advice("none", "snoozed until 12:30"))
        _expect(household, home, seen)
        # At 12:00 the hub refreshes: same window, good until 15:00, red from 14:00. Not news,
        # so the snooze stands and nothing changes.
        clock.set(at(12))
        prompts.take(
            washer_prompts(home, at(12), at(15),
                           [(at(12), at(14), "green", SURPLUS), (at(14), at(15), "red", PEAK)])
        )  # fmt: skip
        clock.set(at(12, 30) - 1)
        prompts.tick()
        clock.set(at(12, 30))  # the snooze is over, inside the window
        prompts.tick()
        seen.append(advice("green", SURPLUS, washer="ON"))
        _expect(household, home, seen)
        clock.set(at(13))  # where the first prompts ended: the refreshed ones go on
        prompts.tick()
        clock.set(at(14) - 1)
        prompts.tick()
        clock.set(at(14))  # the window closes, and the neighbourhood's peak begins
        prompts.tick()
        seen.append(advice("red", PEAK))
        _expect(household, home, seen)
        clock.set(at(15) - 1)
        prompts.tick()
        clock.set(at(15))  # no newer prompts from the hub: no advice
        prompts.tick()
        seen.append(advice("none", EXPIRED))
        _expect(household, home, seen)


def test_expiry_with_the_hub_away_ends_good_time_now_inside_the_window(
    mosquitto: RunningBroker,
) -> None:
    home = "ha-advice-2"
    with advice_rig(mosquitto, home) as (clock, prompts, household):
        prompts.take(first_prompts(home))
        clock.set(at(11))
        prompts.tick()
        seen = [advice("amber", QUIET), advice("green", SURPLUS, washer="ON")]
        _expect(household, home, seen)
        clock.set(at(13) - 1)
        prompts.tick()
        # 13:00: the washer's window is open until 14:00, but the advice was good until 13:00
        # and the hub sent nothing newer.
        clock.set(at(13))
        prompts.tick()
        seen.append(advice("none", EXPIRED))
        _expect(household, home, seen)
        clock.set(at(14))  # the window closes: nothing to say, it was off already
        prompts.tick()
        clock.set(at(16))
        prompts.take(first_prompts(home))  # the same retained copy again, long expired
        # The hub withdrew them (the household stopped sharing for prompts): the sensors say
        # there is no advice rather than that it is out of date. (A change that also shows the
        # steps before it sent nothing: the messages on one topic arrive in order.)
        prompts.take(None)
        seen.append(advice("none", "no advice yet"))
        _expect(household, home, seen)


def test_advice_configs_are_announced_again_and_removed_with_their_appliance(
    mosquitto: RunningBroker,
) -> None:
    home = "ha-advice-3"
    node = f"coopwatt_{home}_advice".replace("-", "_")
    household = Recorder(
        mosquitto.port, [f"homeassistant/+/{node}/+/config"], client_id=f"ha-{home}",
        host=mosquitto.host,
    )  # fmt: skip
    bridge = HomeAssistantBridge(
        parse_ha_config({"broker": {"url": mosquitto.url}}, Path(), home), home, "0.1.0"
    )
    configs = advice_configs("homeassistant", home, APPLIANCES, "0.1.0")
    try:
        bridge.advice_view(APPLIANCES, AMS)
        bridge.start()
        household.wait(lambda ms: {t for t, _, _ in ms} == set(configs), "advice configs")
        before = len(household.messages)
        household.client.publish("homeassistant/status", b"online", qos=1)  # HA restarted
        household.wait(lambda ms: {t for t, _, _ in ms[before:]} == set(configs), "announced again")
        for topic, payload, _ in household.messages:
            assert json.loads(payload) == configs[topic]
        # Restarted on a config without the heat pump: its entity goes, the rest stay.
        before = len(household.messages)
        bridge.advice_view(["washing-machine"], AMS)
        pump = f"homeassistant/binary_sensor/{node}/heat_pump_good_now/config"
        household.wait(lambda ms: (pump, b"", False) in ms[before:], "heat pump removed")
    finally:
        bridge.stop()
        for topic in configs:
            household.client.publish(topic, b"", qos=1, retain=True)
        household.close()
