"""The household's opt-in Home Assistant bridge, against a real Mosquitto standing in for the
household's own broker, and run by the real agent command."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import jinja2
import pytest

from agent.ha_discovery import (
    HomeAssistantBridge,
    discovery_topic,
    load_ha_config,
    parse_ha_config,
    sensor_config,
)
from agent.outbox import Polled
from protocol.config_tables import ConfigError
from protocol.quantities import Role
from sim.broker import RunningBroker
from tests.harness import BIN, Recorder, simulated_home, wait_for
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
WAIT_S = 10.0


def make_household(broker: RunningBroker, home: str) -> Recorder:
    """A subscriber on the household's broker, as Home Assistant would be."""
    node = f"coopwatt_{home}_".replace("-", "_")
    return Recorder(
        broker.port,
        [f"coopwatt/{home}/#", "homeassistant/sensor/+/+/config"],
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
    with simulated_home(tmp_path, "ha-agent-coop", mosquitto.url) as home:
        household = make_household(mosquitto, "home-1")
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
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        state = json.loads(household.latest("coopwatt/home-1/grid-meter/state"))
        assert "power_w" in state and "energy_import_wh" in state
        for topic in {t for t in household.topics() if t.endswith("/config") or "/state" in t}:
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
