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

The cooperative's advice, so that Home Assistant can switch a smart plug or a heat pump itself:
``coopwatt/{home}/advice`` (retained JSON, published when it changes) holds what the home's light
says, ``{"level": "green", "reason": "...", "good_now": {"dishwasher": "ON", ...}}``. It feeds
an enum sensor (``green``, ``amber``, ``red``, or ``none``: no current advice, or snoozed), a text
sensor with the reason, and per configured appliance a binary sensor "good time now": on while
one of that appliance's prompt windows is open, the prompts are current and the light is not
snoozed; off otherwise, including once the prompts expire with the hub away. The prompts'
refresh (:class:`agent.prompts.HomePrompts`, every 0.1 s) drives it through :class:`AdviceView`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from agent.display import BoardView
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
    **{f"energy_{w}_t{t}_wh": ("energy", "Wh", "total_increasing") for w in ("import", "export")
       for t in (1, 2)},
    **{f"voltage_l{n}_v": ("voltage", "V", "measurement") for n in (1, 2, 3)},
    **{f"current_l{n}_a": ("current", "A", "measurement") for n in (1, 2, 3)},
    **{f"power_l{n}_w": ("power", "W", "measurement") for n in (1, 2, 3)},
}  # fmt: skip


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


LEVEL_OPTIONS: Final = ("green", "amber", "red", "none")  # the enum sensor's states


def advice_topic(home: str) -> str:
    return f"coopwatt/{home}/advice"


def _advice_node(home: str) -> str:
    return f"coopwatt_{home}_advice".replace("-", "_")


def advice_configs(
    prefix: str, home: str, appliances: Sequence[str], version: str
) -> dict[str, dict[str, object]]:
    """The discovery configs of the advice entities, by discovery topic: the level, its reason,
    and each appliance's "good time now"."""
    node = _advice_node(home)
    common: dict[str, object] = {
        "state_topic": advice_topic(home),
        "availability_topic": f"coopwatt/{home}/availability",
        "device": {
            "identifiers": [node],
            "name": f"coopwatt advice ({home})",
            "manufacturer": "coopwatt",
            "model": "household agent",
            "sw_version": version,
        },
        "origin": {"name": "coopwatt", "sw_version": version},
    }
    configs: dict[str, dict[str, object]] = {
        f"{prefix}/sensor/{node}/level/config": {
            "name": "Advice level",
            "unique_id": f"{node}_level",
            "object_id": f"{node}_level",
            "value_template": "{{ value_json.level }}",
            "device_class": "enum",
            "options": list(LEVEL_OPTIONS),
            "icon": "mdi:traffic-light",
            **common,
        },
        f"{prefix}/sensor/{node}/reason/config": {
            "name": "Advice reason",
            "unique_id": f"{node}_reason",
            "object_id": f"{node}_reason",
            "value_template": "{{ value_json.reason }}",
            "icon": "mdi:message-text-outline",
            **common,
        },
    }
    for appliance in appliances:
        key = f"{appliance.replace('-', '_')}_good_now"
        words = appliance.replace("-", " ")
        configs[f"{prefix}/binary_sensor/{node}/{key}/config"] = {
            "name": f"{words[:1].upper()}{words[1:]}: good time now",
            "unique_id": f"{node}_{key}",
            "object_id": f"{node}_{key}",
            # Appliance ids are a-z, 0-9 and '-': safe inside quotes, not as an attribute name.
            "value_template": f"{{{{ value_json.good_now['{appliance}'] }}}}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "icon": "mdi:clock-check-outline",
            **common,
        }
    return configs


def advice_state(view: BoardView, appliances: Sequence[str], zone: ZoneInfo) -> dict[str, object]:
    """What the advice entities show for ``view``: the light's level (``none`` without current
    advice or while snoozed), why, and for each appliance whether one of its windows is open."""
    if view.level is None:
        if view.snoozed_until_ms is not None:
            until = datetime.fromtimestamp(view.snoozed_until_ms / 1000, zone)
            reason = f"snoozed until {until:%H:%M}"
        elif view.expired:
            reason = "no current advice (the cooperative's hub has not updated it)"
        else:
            reason = "no advice yet"
        good: set[str] = set()
    else:
        reason = view.reason
        good = {r.appliance for r in view.runs if r.active}
    return {
        "level": view.level or "none",
        "reason": reason,
        "good_now": {a: "ON" if a in good else "OFF" for a in appliances},
    }


class AdviceView:
    """A prompts view (:meth:`agent.prompts.HomePrompts.add_view`) that hands the board to the
    bridge; the bridge publishes only what changed."""

    def __init__(
        self, bridge: HomeAssistantBridge, appliances: tuple[str, ...], zone: ZoneInfo
    ) -> None:
        self.bridge = bridge
        self.appliances = appliances
        self.zone = zone

    def show(self, view: BoardView, now_ms: int) -> bool:
        return self.bridge.show_advice(advice_state(view, self.appliances, self.zone))

    def close(self) -> None:
        """The bridge outlives an agent restarted on a new config: nothing to close."""


class HomeAssistantBridge:
    """Publishes polls to the household's broker; hand :meth:`publish` to ``Agent.on_polled``."""

    def __init__(self, config: HomeAssistantConfig, home: str, version: str) -> None:
        self.config = config
        self.home = home
        self.version = version
        self.availability = f"coopwatt/{home}/availability"
        self._lock = threading.Lock()
        self._announced: set[tuple[str, str]] = set()
        self._advice_appliances: tuple[str, ...] | None = None  # None: no advice view yet
        self._advice: bytes | None = None  # the advice state last published
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
        with self._lock:  # a broker restarted without persistence lost the retained advice
            if self._advice is not None:
                self.session.publish(advice_topic(self.home), self._advice, retain=True)
        self.session.publish(self.availability, b"online", retain=True)
        self.session.subscribe(f"{self.config.discovery_prefix}/status")
        with self._lock:
            known = list(self._announced)
        self._announce(known)
        self._announce_advice()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if payload.strip() == b"online":  # Home Assistant restarted
            with self._lock:
                known = list(self._announced)
            self._announce(known)
            self._announce_advice()

    def _announce(self, items: list[tuple[str, str]]) -> None:
        for device, quantity in items:
            topic = discovery_topic(self.config.discovery_prefix, self.home, device, quantity)
            config = sensor_config(self.home, device, quantity, self.version)
            self.session.publish(topic, json.dumps(config).encode(), retain=True)

    def _announce_advice(self) -> None:
        with self._lock:
            appliances = self._advice_appliances
        if appliances is None:
            return
        configs = advice_configs(self.config.discovery_prefix, self.home, appliances, self.version)
        for topic, config in configs.items():
            self.session.publish(topic, json.dumps(config).encode(), retain=True)

    def advice_view(self, appliances: Sequence[str], timezone: str | None) -> AdviceView:
        """The view to add to the agent's prompts (again for each agent built on a new config):
        announces the advice entities, and removes those of appliances no longer configured."""
        names = tuple(appliances)
        with self._lock:
            before = self._advice_appliances or ()
            self._advice_appliances = names
        prefix = self.config.discovery_prefix
        gone = set(advice_configs(prefix, self.home, before, self.version)) - set(
            advice_configs(prefix, self.home, names, self.version)
        )
        try:
            for topic in sorted(gone):
                self.session.publish(topic, b"", retain=True)  # Home Assistant drops the entity
            self._announce_advice()
        except Exception:  # the household's broker is a convenience, never a failure
            log.exception("could not announce the advice to the household's Home Assistant")
        return AdviceView(self, names, ZoneInfo(timezone or "UTC"))

    def show_advice(self, state: dict[str, object]) -> bool:
        """Publish the advice state (retained) if it differs from the last; True if it did.
        Never raises: the prompts' light must not depend on the household's broker."""
        data = json.dumps(state).encode()
        try:
            with self._lock:  # publishing inside keeps the retained copy the newest
                if data == self._advice:
                    return False
                self._advice = data
                self.session.publish(advice_topic(self.home), data, retain=True)
        except Exception:
            log.exception("could not publish the advice to the household's Home Assistant")
        return True

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
