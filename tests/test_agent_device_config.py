"""[[devices]] in agent.toml: Modbus or S0, role overrides, one place per device."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import ConfigError, parse_config
from protocol.quantities import Role

BASE: dict[str, Any] = {
    "coop": "c",
    "home": "h",
    "broker": {"url": "mqtt://hub:1883"},
}


def _devices(*devices: dict[str, Any]) -> Any:
    return parse_config({**BASE, "devices": list(devices)}).devices


def test_s0_meter_on_a_gpio_pin_with_a_role() -> None:
    (d,) = _devices({"name": "heat-pump", "profile": "s0-pulse-1000", "gpio": 17, "role": "load"})
    assert (d.gpio, d.modbus, d.role) == (17, "", Role.LOAD)


def test_modbus_device_defaults() -> None:
    (d,) = _devices({"name": "m", "profile": "eastron-sdm120", "modbus": "tcp://10.0.0.5"})
    assert (d.gpio, d.role, d.unit) == (None, None, 1)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([{"name": "x", "profile": "p"}], r"devices\[1\] needs modbus .* or gpio"),
        (
            [{"name": "x", "profile": "p", "gpio": 4, "modbus": "tcp://h"}],
            "needs modbus .* or gpio",
        ),
        ([{"name": "x", "profile": "p", "gpio": 99}], "gpio must be from 0 to 53"),
        ([{"name": "x", "profile": "p", "gpio": 4, "role": "solar"}], "role must be one of"),
        (
            [
                {"name": "a", "profile": "p", "modbus": "tcp://h:502", "unit": 3},
                {"name": "b", "profile": "p", "modbus": "tcp://h", "unit": 3},
            ],
            "same unit id on one bus",
        ),
        (
            [{"name": "a", "profile": "p", "gpio": 4}, {"name": "b", "profile": "p", "gpio": 4}],
            "one GPIO pin",
        ),
        (
            [
                {"name": "a", "profile": "p", "modbus": "rtu:///dev/ttyUSB0?baud=9600", "unit": 1},
                {"name": "b", "profile": "p", "modbus": "rtu:///dev/ttyUSB0?baud=19200", "unit": 2},
            ],
            "/dev/ttyUSB0 is set up twice",
        ),
    ],
)
def test_device_mistakes_are_named(devices: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _devices(*devices)


def test_two_units_on_one_rtu_bus_are_fine() -> None:
    a, b = _devices(
        {"name": "a", "profile": "p", "modbus": "rtu:///dev/ttyUSB0?baud=9600", "unit": 1},
        {"name": "b", "profile": "p", "modbus": "rtu:///dev/ttyUSB0?baud=9600", "unit": 2},
    )
    assert a.modbus == b.modbus
