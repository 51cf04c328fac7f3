"""Opt-in: the household's own Home Assistant sees its meters, inverter and turbine live.

When ``/etc/coopwatt/home-assistant.toml`` exists (or ``coopwatt-agent run --home-assistant``
names a file), the agent also publishes every poll's values to the household's OWN broker (the
one its Home Assistant uses), with MQTT discovery configs so each quantity appears as a sensor.
This never touches the cooperative's broker and is independent of the consent grant: the data
stays in the home. The file::

    discovery_prefix = "homeassistant"        # optional
    [broker]
    url = "mqtt://homeassistant.local:1883"
    username = "coopwatt"
    password_file = "/etc/coopwatt/home-assistant.password"

Topics: ``coopwatt/{home}/{device}/state`` (retained JSON of the last poll's quantities) and
``coopwatt/{home}/availability`` (``online``/``offline``, the last will). A sensor's config is
announced the first time its quantity is seen, and all again when Home Assistant says it
restarted (``homeassistant/status`` = ``online``). Publishing never blocks the poll loop.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.outbox import Polled
from protocol.config_tables import ConfigError, Table, broker_settings, load
from protocol.quantities import GLOSSARY
from protocol.session import BrokerSettings, MqttSession

log = logging.getLogger(__name__)

DEFAULT_PATH: Final = Path("/etc/coopwatt/home-assistant.toml")

# Home Assistant's device class, unit and state class per glossary quantity.
_SENSOR: Final[dict[str, tuple[str | None, str | None, str | None]]] = {
    "power_w": ("power", "W", "measurement"),
    "energy_import_wh": ("energy", "Wh", "total_increasing"),
    "energy_export_wh": ("energy", "Wh", "total_increasing"),
    "energy_wh": ("energy", "Wh", "total_increasing"),
    "voltage_v": ("voltage", "V", "measurement"),
    "current_a": ("current", "A", "measurement"),
    "frequency_hz": ("frequency", "Hz", "measurement"),
    "power_factor": ("power_factor", None, "measurement"),
    "temperature_c": ("temperature", "°C", "measurement"),
    "wind_speed_m_s": ("wind_speed", "m/s", "measurement"),
    "state": (None, None, None),
}


@dataclass(frozen=True)
class HomeAssistantConfig:
    broker: BrokerSettings
    discovery_prefix: str = "homeassistant"


def parse_ha_config(data: dict[str, Any], base: Path, home: str = "home") -> HomeAssistantConfig:
    root = Table(data)
    prefix = root.text("discovery_prefix", "homeassistant") or "homeassistant"
    if any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError("discovery_prefix must be a plain topic prefix such as homeassistant")
    broker = broker_settings(root.table("broker"), f"coopwatt-agent-{home}-ha", base)
    root.done()
    return HomeAssistantConfig(broker, prefix)


def load_ha_config(path: Path, home: str) -> HomeAssistantConfig:
    return load(path, lambda data, base: parse_ha_config(data, base, home))


def sensor_config(home: str, device: str, quantity: str, version: str) -> dict[str, object]:
    """The discovery config of one quantity of one device."""
    device_class, unit, state_class = _SENSOR.get(quantity, (None, GLOSSARY[quantity].unit, None))
    node = f"coopwatt_{home}_{device}".replace("-", "_")
    config: dict[str, object] = {
        "name": GLOSSARY[quantity].description.split(",")[0],
        "unique_id": f"{node}_{quantity}",
        "object_id": f"{node}_{quantity}",
        "state_topic": f"coopwatt/{home}/{device}/state",
        "value_template": f"{{{{ value_json.{quantity} }}}}",
        "availability_topic": f"coopwatt/{home}/availability",
        "device": {
            "identifiers": [node],
            "name": f"{device} ({home})",
            "manufacturer": "coopwatt",
            "model": "household agent",
            "sw_version": version,
        },
        "origin": {"name": "coopwatt", "sw_version": version},
    }
    for key, value in (
        ("device_class", device_class),
        ("unit_of_measurement", unit),
        ("state_class", state_class),
    ):
        if value is not None:
            config[key] = value
    return config


def discovery_topic(prefix: str, home: str, device: str, quantity: str) -> str:
    node = f"coopwatt_{home}_{device}".replace("-", "_")
    return f"{prefix}/sensor/{node}/{quantity}/config"


class HomeAssistantBridge:
    """Publishes polls to the household's broker; hand :meth:`publish` to ``Agent.on_polled``."""

    def __init__(self, config: HomeAssistantConfig, home: str, version: str) -> None:
        self.config = config
        self.home = home
        self.version = version
        self.availability = f"coopwatt/{home}/availability"
        self._lock = threading.Lock()
        self._announced: set[tuple[str, str]] = set()
        self.session = MqttSession(
            config.broker,
            on_connect=self._on_connect,
            on_message=self._on_message,
            will=(self.availability, b"offline"),
        )

    def start(self) -> None:
        self.session.start()

    def stop(self) -> None:
        self.session.stop(final=(self.availability, b"offline"))

    def _on_connect(self) -> None:
        self.session.publish(self.availability, b"online", retain=True)
        self.session.subscribe(f"{self.config.discovery_prefix}/status")
        with self._lock:
            known = list(self._announced)
        self._announce(known)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if payload.strip() == b"online":  # Home Assistant restarted
            with self._lock:
                known = list(self._announced)
            self._announce(known)

    def _announce(self, items: list[tuple[str, str]]) -> None:
        for device, quantity in items:
            topic = discovery_topic(self.config.discovery_prefix, self.home, device, quantity)
            config = sensor_config(self.home, device, quantity, self.version)
            self.session.publish(topic, json.dumps(config).encode(), retain=True)

    def publish(self, polled: list[Polled]) -> None:
        """Never raises: a household broker that is down must not stop the poll loop."""
        try:
            for p in polled:
                new = []
                with self._lock:
                    for quantity in p.quantities:
                        key = (p.device, quantity)
                        if quantity in GLOSSARY and key not in self._announced:
                            self._announced.add(key)
                            new.append(key)
                if new:
                    self._announce(new)
                state = {**p.quantities, "ts_ms": p.ts_ms}
                self.session.publish(
                    f"coopwatt/{self.home}/{p.device}/state",
                    json.dumps(state).encode(),
                    qos=0,
                    retain=True,
                )
        except Exception:  # the household's broker is a convenience, never a failure
            log.exception("could not publish to the household's Home Assistant")
