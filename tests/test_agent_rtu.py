"""Modbus RTU through a pty null modem: a pymodbus serial server on one end, the agent's client
on the other, real RTU frames with CRC in between."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from agent.config import DeviceConfig
from agent.devices import Device, DeviceSupervisor, open_devices
from agent.modbus_io import DeviceError
from protocol.clock import ManualClock
from tests.modbus_images import FIXTURES, ImageServer, NullModem, image_from_fixture, load_fixture

SDM120 = load_fixture(FIXTURES / "eastron-sdm120" / "day-import.json")
WIND = load_fixture(FIXTURES / "coopwatt-wind-generic" / "running.json")


@pytest.fixture
def rtu() -> Iterator[ImageServer]:
    modem = NullModem()
    server = ImageServer(
        {1: image_from_fixture(SDM120), 2: image_from_fixture(WIND)},
        serial_port=modem.server_port,
        missing="silent",  # on RS-485 a unit that is not there just does not answer
    )
    server.start()
    server.modem = modem  # type: ignore[attr-defined]
    server.client_url = f"rtu://{modem.client_port}?baud=9600&parity=N"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        modem.close()


def online(sup: DeviceSupervisor, i: int) -> bool:
    return sup.slots[i].health.online


def _devices(rtu: ImageServer, *units: tuple[int, str]) -> list[Device]:
    url = rtu.client_url  # type: ignore[attr-defined]
    configs = [DeviceConfig(f"u{u}", profile, url, u, 1.0) for u, profile in units]
    devices = open_devices(configs)
    out = []
    for d in devices:
        assert isinstance(d, Device)
        d.bus.timeout_s = 0.3
        out.append(d)
    return out


def test_two_meters_on_one_rs485_bus(rtu: ImageServer) -> None:
    meter, turbine = _devices(rtu, (1, "eastron-sdm120"), (2, "coopwatt-wind-generic"))
    assert meter.bus is turbine.bus  # one serial port, one client, one request at a time
    q = meter.read()
    for name, value in SDM120["expected"].items():
        assert q[name] == pytest.approx(value, rel=1e-6)
    q = turbine.read()
    assert q["energy_wh"] == WIND["expected"]["energy_wh"]  # uint32, low word first
    assert q["state"] == "running"
    meter.close()


def test_silent_unit_times_out_without_disturbing_the_others(rtu: ImageServer) -> None:
    meter, ghost = _devices(rtu, (1, "eastron-sdm120"), (9, "eastron-sdm120"))
    with pytest.raises(DeviceError, match="timed out") as caught:
        ghost.read()
    assert caught.value.transient and not caught.value.answered
    assert meter.read()["power_w"] == pytest.approx(1150.5)
    meter.close()


def test_crc_error_is_transient_and_the_next_frame_is_fine(rtu: ImageServer) -> None:
    (meter,) = _devices(rtu, (1, "eastron-sdm120"))
    rtu.modem.corrupt_next = 1  # type: ignore[attr-defined]
    with pytest.raises(DeviceError) as caught:
        meter.read()
    assert caught.value.transient
    assert meter.read()["voltage_v"] == pytest.approx(231.4, rel=1e-6)
    meter.close()


def test_exception_response_over_rtu_is_a_configuration_error(rtu: ImageServer) -> None:
    (meter,) = _devices(rtu, (1, "eastron-sdm120"))
    rtu.behaviour[1].mode, rtu.behaviour[1].code = "exception", 2
    with pytest.raises(DeviceError, match="illegal data address") as caught:
        meter.read()
    assert not caught.value.transient and caught.value.answered
    meter.close()


def test_meter_that_loses_power_goes_offline_and_comes_back(rtu: ImageServer) -> None:
    clock = ManualClock(1_750_000_000_000)
    meter, turbine = _devices(rtu, (1, "eastron-sdm120"), (2, "coopwatt-wind-generic"))
    sup = DeviceSupervisor([meter, turbine], clock, rng=random.Random(5))
    assert len(sup.poll_due()) == 2
    rtu.behaviour[1].mode = "silent"
    for _ in range(sup.policy.retries + 1):
        clock.set(sup.slots[0].next_due_ms)
        sup.poll_due()
    assert not online(sup, 0)
    assert online(sup, 1)  # the turbine on the same bus kept answering
    rtu.behaviour[1].mode = "ok"
    clock.set(sup.slots[0].next_due_ms)
    results = {r.device.name for r in sup.poll_due()}
    assert "u1" in results
    assert online(sup, 0)
    sup.close()
