"""Home Assistant MQTT discovery for the hub's metrics.

Home Assistant, connected to the cooperative's broker with the operator's account, finds the
hub's sensors by the retained config messages published under ``homeassistant/`` and reads their
values from the retained ``hub/metrics`` and ``hub/status`` payloads with the templates below.
The configs are published on every (re)connection and whenever Home Assistant announces itself
on ``homeassistant/status``, as its documentation recommends. Only cooperative-wide figures are
announced: no home's data becomes an entity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from protocol.topics import HubTopic, hub_topic

DISCOVERY_PREFIX: Final = "homeassistant"
HA_STATUS_TOPIC: Final = f"{DISCOVERY_PREFIX}/status"


@dataclass(frozen=True)
class MetricSensor:
    key: str  # object id suffix and unique id suffix
    name: str
    template: str  # Jinja over value_json, the decoded hub/metrics payload
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None


# Absent fields (the codec leaves out None) read as undefined in Home Assistant's templates, and
# a template that renders "None" gives the entity no value rather than a wrong one.
METRIC_SENSORS: Final = (
    MetricSensor("homes_online", "Homes online", "{{ value_json.homes_online }}", "homes",
                 icon="mdi:home-lightning-bolt"),
    MetricSensor("homes_total", "Homes known", "{{ value_json.homes_total }}", "homes",
                 icon="mdi:home-group"),
    MetricSensor("homes_stale", "Homes with stale data", "{{ value_json.homes_stale }}", "homes",
                 icon="mdi:timer-sand-empty"),
    MetricSensor("backlog_total", "Readings waiting at homes", "{{ value_json.backlog_total }}",
                 "readings", icon="mdi:tray-full"),
    MetricSensor("readings_per_min", "Readings stored per minute",
                 "{{ value_json.readings_per_min }}", "readings/min", icon="mdi:database-import"),
    MetricSensor("rejected_per_min", "Messages rejected per minute",
                 "{{ value_json.rejected_per_min }}", "messages/min", icon="mdi:cancel"),
    MetricSensor("alerts", "Active alerts", "{{ value_json.alerts | length }}", "alerts",
                 icon="mdi:alert"),
    MetricSensor(
        "forecast_age",
        "Forecast age",
        "{{ ((value_json.ts_ms - value_json.forecast_issued_ms) / 60000) | round(0) "
        "if value_json.forecast_issued_ms is defined else None }}",
        "min",
        device_class="duration",
        icon="mdi:weather-partly-cloudy",
    ),
)  # fmt: skip


def _device(coop: str, version: str) -> dict[str, object]:
    return {
        "identifiers": [f"coopwatt-hub-{coop}"],
        "name": f"coopwatt hub {coop}",
        "manufacturer": "coopwatt",
        "model": "cooperative hub",
        "sw_version": version,
    }


def _availability(coop: str) -> dict[str, object]:
    return {
        "availability_topic": hub_topic(coop, HubTopic.STATUS),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def discovery_configs(coop: str, interval_s: int, version: str) -> dict[str, dict[str, object]]:
    """Discovery topic -> config for every hub entity of cooperative ``coop``."""
    node = f"coopwatt_{coop.replace('-', '_')}"
    metrics = hub_topic(coop, HubTopic.METRICS)
    device = _device(coop, version)
    origin = {"name": "coopwatt", "sw_version": version}
    configs: dict[str, dict[str, object]] = {}
    for s in METRIC_SENSORS:
        config: dict[str, object] = {
            "name": s.name,
            "unique_id": f"{node}_{s.key}",
            "object_id": f"{node}_{s.key}",
            "state_topic": metrics,
            "value_template": s.template,
            # Metrics older than three intervals mean the hub is not publishing: unavailable.
            "expire_after": 3 * interval_s,
            "device": device,
            "origin": origin,
            **_availability(coop),
        }
        for key, value in (
            ("unit_of_measurement", s.unit),
            ("device_class", s.device_class),
            ("state_class", s.state_class),
            ("icon", s.icon),
        ):
            if value is not None:
                config[key] = value
        configs[f"{DISCOVERY_PREFIX}/sensor/{node}/{s.key}/config"] = config
    configs[f"{DISCOVERY_PREFIX}/binary_sensor/{node}/online/config"] = {
        "name": "Hub online",
        "unique_id": f"{node}_online",
        "object_id": f"{node}_online",
        "state_topic": hub_topic(coop, HubTopic.STATUS),
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "device": device,
        "origin": origin,
    }
    configs[f"{DISCOVERY_PREFIX}/binary_sensor/{node}/problem/config"] = {
        "name": "Problem",
        "unique_id": f"{node}_problem",
        "object_id": f"{node}_problem",
        "state_topic": metrics,
        "value_template": "{{ 'ON' if value_json.alerts | length > 0 else 'OFF' }}",
        "device_class": "problem",
        "expire_after": 3 * interval_s,
        "json_attributes_topic": metrics,
        "json_attributes_template": (
            "{{ {'alerts': value_json.alerts | map(attribute='text') | list} | tojson }}"
        ),
        "device": device,
        "origin": origin,
        **_availability(coop),
    }
    return configs


def discovery_messages(coop: str, interval_s: int, version: str) -> list[tuple[str, bytes]]:
    """The retained messages to publish: (topic, compact JSON)."""
    return [
        (topic, json.dumps(config, separators=(",", ":")).encode("utf-8"))
        for topic, config in discovery_configs(coop, interval_s, version).items()
    ]
