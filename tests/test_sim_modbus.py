"""SimModbusServers: real pymodbus TCP servers answering from SimHome at the clock's time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from protocol.clock import ManualClock
from sim import registers as r
from sim.household import GRID_METER, PV_INVERTER, WIND_TURBINE, SimHome
from sim.modbus_server import Endpoint, SimModbusServers

DT = ModbusTcpClient.DATATYPE
convert = ModbusTcpClient.convert_from_registers
START_MS = int(datetime(2024, 6, 21, 9, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_MS)


@pytest.fixture
def homes(clock: ManualClock) -> list[SimHome]:
    return [SimHome("home-a", 1, clock), SimHome("home-b", 2, clock)]


@pytest.fixture
def servers(homes: list[SimHome]) -> Iterator[SimModbusServers]:
    with SimModbusServers(homes) as running:
        yield running


@contextlib.contextmanager
def connected(endpoint: Endpoint) -> Iterator[ModbusTcpClient]:
    """A connected pymodbus client (its connect/close are untyped, hence Any inside)."""
    client: Any = ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=2, retries=0)
    assert client.connect()
    try:
        yield client
    finally:
        client.close()


def f32(words: list[int], address: int) -> float:
    value = convert(words[address : address + 2], DT.FLOAT32)
    assert isinstance(value, float)
    return value


def read_meter(endpoint: Endpoint) -> list[int]:
    with connected(endpoint) as client:
        rr = client.read_input_registers(0, count=0x4C, device_id=endpoint.unit)
        assert not rr.isError(), rr
        return list(rr.registers)


def test_endpoints(servers: SimModbusServers) -> None:
    endpoints = servers.endpoints()
    assert set(endpoints) == {"home-a", "home-b"}
    ports = set()
    for devices in endpoints.values():
        assert {d: e.profile for d, e in devices.items()} == {
            GRID_METER: "eastron-sdm630",
            PV_INVERTER: "sunspec",
            WIND_TURBINE: "coopwatt-wind-generic",
        }
        for e in devices.values():
            assert e.host == "127.0.0.1"
            assert e.unit == 1
            ports.add(e.port)
    assert len(ports) == 6


def test_grid_meter_shows_home_values_and_follows_the_clock(
    servers: SimModbusServers, homes: list[SimHome], clock: ManualClock
) -> None:
    for home in homes:
        endpoint = servers.endpoints()[home.home][GRID_METER]
        words = read_meter(endpoint)
        expected = home.values(GRID_METER, clock.now_ms())
        assert f32(words, 0x0034) == expected["power_w"]
        assert f32(words, 0x0048) == pytest.approx(float(expected["energy_import_wh"]) / 1000)
        assert f32(words, 0x004A) == pytest.approx(float(expected["energy_export_wh"]) / 1000)
        assert f32(words, 0x002A) == pytest.approx(float(expected["voltage_v"]), abs=1e-4)
        assert f32(words, 0x0046) == pytest.approx(float(expected["frequency_hz"]), abs=1e-4)

    home = homes[0]
    endpoint = servers.endpoints()[home.home][GRID_METER]
    before = read_meter(endpoint)
    clock.advance(3 * 3_600_000)
    after = read_meter(endpoint)
    expected = home.values(GRID_METER, clock.now_ms())
    assert f32(after, 0x0034) == expected["power_w"]
    assert f32(after, 0x0048) == pytest.approx(float(expected["energy_import_wh"]) / 1000)
    moved = f32(after, 0x0048) - f32(before, 0x0048) + f32(after, 0x004A) - f32(before, 0x004A)
    assert moved > 0.05  # kWh in three hours, either way


def test_inverter_and_turbine_registers(
    servers: SimModbusServers, homes: list[SimHome], clock: ManualClock
) -> None:
    home = homes[1]
    endpoints = servers.endpoints()[home.home]
    with (
        connected(endpoints[PV_INVERTER]) as inverter,
        connected(endpoints[WIND_TURBINE]) as turbine,
    ):
        for _ in range(2):
            t = clock.now_ms()
            rr = inverter.read_holding_registers(40000, count=124, device_id=1)
            assert not rr.isError(), rr
            words = rr.registers
            assert words[0:2] == [0x5375, 0x6E53]
            assert words[2:4] == [1, 66]
            at = 40070 - 40000
            assert words[at : at + 2] == [103, 50]
            pv = home.values(PV_INVERTER, t)
            assert words[at + r.M103_OFFSETS["W"]] == pv["power_w"]
            wh = convert(words[at + 24 : at + 26], DT.UINT32)
            assert wh == round(float(pv["energy_wh"]))
            assert words[at + r.M103_OFFSETS["St"]] == r.SUNSPEC_STATES[str(pv["state"])]
            assert words[-2:] == [0xFFFF, 0]

            rr = turbine.read_holding_registers(0, count=9, device_id=1)
            assert not rr.isError(), rr
            wind = home.values(WIND_TURBINE, t)
            assert rr.registers[3] == wind["power_w"]
            assert rr.registers[1] == round(float(wind["wind_speed_m_s"]) * 10)
            energy = convert(rr.registers[4:6], DT.UINT32, word_order="little")
            assert energy == round(float(wind["energy_wh"]))
            clock.advance(5 * 3_600_000 + 1234)


def test_reads_outside_the_map_are_illegal_address(
    servers: SimModbusServers, homes: list[SimHome]
) -> None:
    endpoints = servers.endpoints()["home-a"]
    with (
        connected(endpoints[GRID_METER]) as meter,
        connected(endpoints[PV_INVERTER]) as inverter,
        connected(endpoints[WIND_TURBINE]) as turbine,
    ):
        refusals = [
            meter.read_input_registers(0x004C, count=2, device_id=1),  # past the end
            meter.read_input_registers(0x004A, count=4, device_id=1),  # straddles the end
            meter.read_holding_registers(0, count=2, device_id=1),  # wrong table
            meter.read_input_registers(0, count=2, device_id=7),  # another unit id
            meter.write_register(0, 1, device_id=1),
            inverter.read_holding_registers(39998, count=2, device_id=1),
            inverter.read_holding_registers(40124, count=1, device_id=1),
            inverter.read_input_registers(40000, count=2, device_id=1),
            turbine.read_holding_registers(9, count=1, device_id=1),
            turbine.write_registers(0, [1, 2], device_id=1),
        ]
        for rr in refusals:
            assert rr.isError(), rr
            assert rr.exception_code == 2  # illegal data address
        # The server is still fine afterwards.
        assert not meter.read_input_registers(0, count=2, device_id=1).isError()


def test_sunspec_common_model_without_pad() -> None:
    clock = ManualClock(START_MS)
    home = SimHome("home-c", 3, clock, with_wind=False)
    with SimModbusServers([home], sunspec_common_length=65) as servers:
        endpoints = servers.endpoints()["home-c"]
        assert set(endpoints) == {GRID_METER, PV_INVERTER}
        with connected(endpoints[PV_INVERTER]) as client:
            rr = client.read_holding_registers(40000, count=123, device_id=1)
            assert rr.registers[2:4] == [1, 65]
            assert rr.registers[69:71] == [103, 50]
            assert rr.registers[-2:] == [0xFFFF, 0]


def test_fifteen_servers_start_and_stop_cleanly() -> None:
    clock = ManualClock(START_MS)
    homes = [SimHome(f"home-{i}", i, clock) for i in range(5)]
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        servers = SimModbusServers(homes)
        servers.start()  # how fast: bench/sim_household.py
        endpoints = [e for devices in servers.endpoints().values() for e in devices.values()]
        assert len(endpoints) == 15
        # A client left connected must not keep the servers from stopping.
        with connected(endpoints[0]) as lingering:
            assert not lingering.read_input_registers(0, count=2, device_id=1).isError()
            servers.stop()
    assert set(threading.enumerate()) == threads_before
    for e in endpoints:
        with pytest.raises(OSError), socket.create_connection((e.host, e.port), timeout=1):
            pass


def test_no_event_loop_is_left_behind() -> None:
    clock = ManualClock(START_MS)
    with SimModbusServers([SimHome("home-d", 4, clock)]) as servers:
        loop = servers._loop
        assert loop is not None
        assert loop.is_running()
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # nothing leaked into this thread
