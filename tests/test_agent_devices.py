"""Devices over real pymodbus servers: every profile against its recorded register images, and
the supervisor's handling of exceptions, timeouts and a device that vanishes and returns."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import DeviceConfig
from agent.devices import Device, DeviceSupervisor, open_devices
from agent.modbus_io import DeviceError, ModbusBus
from agent.modbus_tcp import TcpClient
from agent.profiles import list_profiles, load_profile
from agent.retry import RetryPolicy
from agent.sunspec import SunSpecMap
from protocol.clock import ManualClock, Waker
from protocol.payloads import DeviceHealth
from protocol.quantities import Role, allowed_for
from tests.modbus_images import (
    FIXTURES,
    Image,
    ImageServer,
    fixture_cases,
    image_from_fixture,
    load_fixture,
)
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS
CASES = fixture_cases()
SHIPPED = Path(__file__).parent.parent / "firmware-configs" / "devices"


def assert_quantities(got: dict[str, float | str], expected: dict[str, Any], where: str) -> None:
    assert set(got) == set(expected), f"{where}: got {sorted(got)}, expected {sorted(expected)}"
    for name, value in expected.items():
        if isinstance(value, str):
            assert got[name] == value, f"{where}: {name}"
        else:
            assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-6), f"{where}: {name}"


@pytest.fixture(scope="module")
def fixtures_server() -> Iterator[ImageServer]:
    """One TCP server answering every fixture case, each at its own unit id."""
    units = {i + 1: image_from_fixture(load_fixture(p)) for i, p in enumerate(CASES)}
    with ImageServer(units) as server:
        yield server


def _device(url: str, unit: int, profile: str, role: str | None = None, **kw: Any) -> Device:
    config = DeviceConfig(
        f"unit-{unit}", profile, url, unit, 1.0, role=Role(role) if role else None
    )
    (device,) = open_devices([config], **kw)
    assert isinstance(device, Device)
    return device


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_image_decodes_to_expected_values(
    case: Path, fixtures_server: ImageServer
) -> None:
    data = load_fixture(case)
    assert data["profile"] == case.parent.name, "a fixture lives in its profile's folder"
    unit = CASES.index(case) + 1
    device = _device(fixtures_server.url, unit, data["profile"], data.get("role"))
    try:
        got = device.read()
    finally:
        device.close()
    assert_quantities(got, data["expected"], f"{case.parent.name}/{case.stem}")
    for name in got:
        assert allowed_for(device.role, name)


@pytest.mark.parametrize("name", [n for n in list_profiles([SHIPPED])])
def test_every_shipped_profile_has_fixtures_or_is_s0(name: str) -> None:
    profile = load_profile(name, [SHIPPED])
    if profile.kind == "s0":
        return  # counted from GPIO edges: tests/test_agent_pulse.py
    if profile.kind == "p1":
        return  # telegrams in tests/fixtures/p1: tests/test_agent_dsmr.py
    cases = list((FIXTURES / name).glob("*.json"))
    assert len(cases) >= 2, f"{name}: give a daytime and a night/sleep image"


def test_sunspec_fixtures_cover_the_models_and_both_common_lengths() -> None:
    names = {p.stem for p in (FIXTURES / "sunspec").glob("*.json")}
    assert {"inverter-103-common-65", "inverter-103-common-66"} <= names
    models: set[int] = set()
    for p in (FIXTURES / "sunspec").glob("*.json"):
        words = load_fixture(p)["registers"][0]["words"]
        at = 2
        while words[at] != 0xFFFF:
            models.add(words[at])
            at += 2 + words[at + 1]
    assert {1, 101, 103, 111, 113, 203} <= models


# --- the bus ----------------------------------------------------------------------------------


def _meter_image() -> Image:
    case = FIXTURES / "eastron-sdm630" / "day-import.json"
    return image_from_fixture(load_fixture(case))


@pytest.fixture
def meter() -> Iterator[ImageServer]:
    with ImageServer({1: _meter_image(), 2: _meter_image()}) as server:
        yield server


def test_one_request_in_flight_per_bus(meter: ImageServer) -> None:
    in_flight, worst = 0, 0
    lock = threading.Lock()
    original = meter.behaviour[1]
    original.delay_s = 0.02
    meter.behaviour[2].delay_s = 0.02

    bus = ModbusBus(meter.url, timeout_s=2)
    client = bus._client
    assert isinstance(client, TcpClient)
    real_read = client.read

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, worst
        with lock:
            in_flight += 1
            worst = max(worst, in_flight)
        try:
            return real_read(*args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    client.read = counting  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def reader(unit: int) -> None:
        try:
            for _ in range(5):
                assert len(bus.read("input", 0x2A, 34, unit)) == 34
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(u,)) for u in (1, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.close()
    assert not errors
    assert worst == 1


def test_devices_on_one_bus_share_its_client(meter: ImageServer) -> None:
    configs = [
        DeviceConfig("a", "eastron-sdm630", meter.url, 1, 1.0),
        DeviceConfig("b", "eastron-sdm630", meter.url.replace("127.0.0.1", "127.0.0.1"), 2, 1.0),
        DeviceConfig("c", "eastron-sdm630", "tcp://127.0.0.2:1502", 1, 1.0),
    ]
    a, b, c = open_devices(configs)
    assert isinstance(a, Device) and isinstance(b, Device) and isinstance(c, Device)
    assert a.bus is b.bus
    assert c.bus is not a.bus


@pytest.mark.parametrize(
    ("code", "transient"),
    [(1, False), (2, False), (3, False), (4, True), (5, True), (6, True), (10, True), (11, True)],
)
def test_exception_codes_are_sorted_into_config_errors_and_transient_ones(
    meter: ImageServer, code: int, transient: bool
) -> None:
    meter.behaviour[1].mode = "exception"
    meter.behaviour[1].code = code
    device = _device(meter.url, 1, "eastron-sdm630")
    with pytest.raises(DeviceError) as caught:
        device.read()
    device.close()
    assert caught.value.transient is transient
    assert caught.value.code == code
    if not transient:
        assert "check the unit id and the device profile" in str(caught.value)


def test_timeout_is_transient_and_the_next_read_is_not_confused(meter: ImageServer) -> None:
    device = _device(meter.url, 1, "eastron-sdm630")
    device.bus.timeout_s = 0.2
    meter.behaviour[1].fail_next = 1  # the first request is never answered
    with pytest.raises(DeviceError, match="timed out") as caught:
        device.read()
    assert caught.value.transient
    assert device.read()["power_w"] == 4120.0  # a fresh connection, not a late answer
    device.close()


def test_slow_device_within_its_profile_timeout(meter: ImageServer, tmp_path: Path) -> None:
    (tmp_path / "slow-meter.toml").write_text(
        (SHIPPED / "eastron-sdm630.toml")
        .read_text()
        .replace("max_gap = 48", "max_gap = 48\ntimeout_s = 1.0")
    )
    meter.behaviour[1].delay_s = 0.3
    device = _device(meter.url, 1, "slow-meter", profile_dirs=[tmp_path])
    device.bus.timeout_s = 0.1  # the bus default would give up; the profile allows 1 s
    assert device.read()["power_w"] == 4120.0
    device.close()


# --- the supervisor ---------------------------------------------------------------------------


def _supervised(server: ImageServer, clock: ManualClock, *units: int) -> DeviceSupervisor:
    devices = [_device(server.url, u, "eastron-sdm630") for u in units]
    for d in devices:
        d.bus.timeout_s = 0.2
    return DeviceSupervisor(devices, clock, rng=random.Random(7))


def test_config_error_is_not_retried_and_says_what_to_fix(meter: ImageServer) -> None:
    clock = ManualClock(T0)
    sup = _supervised(meter, clock, 1)
    meter.behaviour[1].mode = "exception"
    meter.behaviour[1].code = 2
    assert sup.poll_due() == []
    slot = sup.slots[0]
    assert not slot.health.online
    assert slot.health.error is not None
    assert slot.health.error.startswith("configuration: ")
    assert "illegal data address" in slot.health.error
    requests = meter.behaviour[1].requests
    for _ in range(60):  # a minute of polling: nothing is asked of the device
        clock.advance(1000)
        sup.poll_due()
    assert meter.behaviour[1].requests == requests
    clock.advance(600_000)  # ten minutes later it is looked at again, and is fixed
    meter.behaviour[1].mode = "ok"
    (result,) = sup.poll_due()
    assert result.quantities["power_w"] == 4120.0
    assert sup.slots[0].health.online


@pytest.mark.parametrize("failure", ["busy", "timeout"])
def test_transient_failures_retry_with_backoff_then_offline_then_recover(
    meter: ImageServer, failure: str
) -> None:
    clock = ManualClock(T0)
    sup = _supervised(meter, clock, 1)
    (first,) = sup.poll_due()
    assert first.ts_ms == T0
    slot = sup.slots[0]
    assert slot.health.online and slot.next_due_ms == T0 + 1000
    b = meter.behaviour[1]
    if failure == "busy":
        b.mode, b.code = "exception", 6
    else:
        b.mode = "silent"
    delays = []
    for attempt in range(1, 6):
        clock.set(slot.next_due_ms)
        assert sup.poll_due() == []
        delays.append(slot.next_due_ms - clock.now_ms())
        assert slot.health.online is (attempt <= sup.policy.retries), attempt
    # Doubling from 0.5 s with +-20 % jitter: 0.5, 1, 2, 4, 8 s.
    for delay, base in zip(delays, [500, 1000, 2000, 4000, 8000], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    assert slot.health.error is not None
    assert slot.health.last_ok_ms == T0
    b.mode = "ok"
    clock.set(slot.next_due_ms)
    (back,) = sup.poll_due()
    assert back.quantities["power_w"] == 4120.0
    assert sup.health()["unit-1"] == DeviceHealth(online=True, last_ok_ms=back.ts_ms)
    assert slot.failures == 0


def test_offline_probing_is_capped_and_jittered() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    delays = [policy.delay_s(n, rng) for n in range(1, 20)]
    assert max(delays) <= policy.offline_probe_s * 1.2
    assert delays[-1] >= policy.offline_probe_s * 0.8
    assert len({round(d, 6) for d in delays[-5:]}) == 5  # jittered, not lockstep


def test_device_that_vanishes_and_returns(meter: ImageServer) -> None:
    clock = ManualClock(T0)
    sup = _supervised(meter, clock, 1)
    assert len(sup.poll_due()) == 1
    port = meter.port
    meter.stop()  # the gateway loses power: connections are refused
    slot = sup.slots[0]
    for _ in range(sup.policy.retries + 1):
        clock.set(slot.next_due_ms)
        assert sup.poll_due() == []
    assert not slot.health.online
    assert slot.health.error is not None and "cannot connect" in slot.health.error
    meter.port = port
    meter.start()  # back on the same address
    clock.set(slot.next_due_ms)
    (result,) = sup.poll_due()
    assert result.quantities["power_w"] == 4120.0
    assert slot.health.online


def test_each_device_keeps_its_own_poll_interval(meter: ImageServer) -> None:
    clock = ManualClock(T0)
    devices = [
        _device(meter.url, 1, "eastron-sdm630"),
        Device(DeviceConfig("slow", "eastron-sdm630", meter.url, 2, 5.0), ModbusBus(meter.url),
               load_profile("eastron-sdm630")),
    ]  # fmt: skip
    sup = DeviceSupervisor(devices, clock)
    counts = {"unit-1": 0, "slow": 0}
    for _ in range(10):
        for r in sup.poll_due():
            counts[r.device.name] += 1
        clock.set(sup.next_due_ms())
    assert counts == {"unit-1": 10, "slow": 2}
    assert sup.slots[1].next_due_ms % 5000 == 0  # aligned to its own interval


def discovered(device: Device) -> SunSpecMap | None:
    return device.sunspec


def test_sunspec_device_rediscovers_after_its_chain_moves(tmp_path: Path) -> None:
    data = load_fixture(FIXTURES / "sunspec" / "inverter-103-common-66.json")
    image = image_from_fixture(data)
    with ImageServer({1: image}) as server:
        clock = ManualClock(T0)
        device = _device(server.url, 1, "sunspec")
        sup = DeviceSupervisor([device], clock, rng=random.Random(3))
        assert sup.poll_due()[0].quantities["power_w"] == 2410.0
        assert device.sunspec is not None and device.sunspec.identity is not None
        assert device.sunspec.identity.serial == "SN-12345"
        # A firmware update: common model shrinks to 65, so model 103 starts one register earlier.
        other = load_fixture(FIXTURES / "sunspec" / "inverter-103-common-65.json")
        words = other["registers"][0]["words"]
        image.holding[40000][: len(words)] = words
        image.holding[40000][len(words) :] = [0] * (len(image.holding[40000]) - len(words))
        clock.set(sup.next_due_ms())
        assert sup.poll_due() == []  # the model moved: a transient error, discovery forgotten
        assert discovered(device) is None
        clock.set(sup.next_due_ms())
        (result,) = sup.poll_due()
        assert result.quantities["power_w"] == 2410.0
        device.close()


def test_role_override_reads_a_meter_as_a_sub_meter_or_generator(meter: ImageServer) -> None:
    load = _device(meter.url, 1, "eastron-sdm630", "load")
    q = load.read()
    assert load.role == Role.LOAD
    assert q["energy_wh"] == pytest.approx(15_234_250)
    assert q["power_w"] == 4120.0
    assert "energy_import_wh" not in q and "energy_export_wh" not in q
    pv = _device(meter.url, 2, "eastron-sdm630", "pv")
    q = pv.read()
    assert q["energy_wh"] == pytest.approx(3_456_500)  # the export counter
    assert q["power_w"] == -4120.0
    load.close()
    pv.close()


class Broken:
    """A device whose driver has a bug."""

    name = "broken"
    poll_interval_s = 1.0
    role = Role.LOAD

    def read(self) -> dict[str, float | str]:
        raise ValueError("unpack requires a buffer of 4 bytes")

    def close(self) -> None:
        pass


def test_a_driver_bug_marks_one_device_offline_not_the_agent(meter: ImageServer) -> None:
    clock = ManualClock(T0)
    good = _device(meter.url, 1, "eastron-sdm630")
    sup = DeviceSupervisor([Broken(), good], clock, rng=random.Random(2))
    (result,) = sup.poll_due()
    assert result.device is good
    broken = sup.health()["broken"]
    assert not broken.online
    assert broken.error is not None and broken.error.startswith("internal error: ValueError")
    good.close()


def test_missing_serial_port_says_so() -> None:
    device = _device("rtu:///dev/ttyNOPE0?baud=9600", 1, "eastron-sdm120")
    with pytest.raises(DeviceError, match="cannot open /dev/ttyNOPE0") as caught:
        device.read()
    assert caught.value.transient


class _SteppedClock:
    """A Pi's wall clock: it has no clock of its own, and NTP may step it back after boot."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def sleep_until_ms(self, target_ms: int, stop: Waker) -> bool:
        return stop.is_set()


class _Meter:
    """A device polled every 10 s that answers, or not, as the test says."""

    name = "meter"
    poll_interval_s = 10.0
    role = Role.GRID

    def __init__(self) -> None:
        self.reads = 0
        self.fail = False

    def read(self) -> dict[str, float | str]:
        self.reads += 1
        if self.fail:
            raise DeviceError("no answer", transient=True)
        return {"power_w": 100.0}

    def close(self) -> None:
        pass


def test_a_clock_set_back_by_hours_does_not_stop_polling() -> None:
    """Before: every device stayed due where the old clock had put it, three hours on."""
    clock = _SteppedClock(T0)
    meter = _Meter()
    sup = DeviceSupervisor([meter], clock, rng=random.Random(1))
    assert len(sup.poll_due()) == 1
    clock.now = T0 + 1_000
    assert sup.poll_due() == []  # next due at T0 + 10 s: nothing yet
    clock.now = T0 - 3 * 3_600_000 + 1_000  # NTP steps the clock back three hours
    assert len(sup.poll_due()) == 1
    assert sup.slots[0].next_due_ms == T0 - 3 * 3_600_000 + 10_000  # on the 10 s grid again

    # A device waiting out its backoff is not taken for one set back. RetryPolicy's defaults,
    # by hand: waits of 0.5, 1, 2, 4 ... s doubling from the first failure, so after the 8th
    # the 64 s is capped at the offline probe's 60 s, +- 20 % jitter.
    meter.fail = True
    for _ in range(8):
        clock.now = sup.slots[0].next_due_ms
        assert sup.poll_due() == []
    reads, due = meter.reads, sup.slots[0].next_due_ms
    assert 48_000 <= due - clock.now <= 72_000
    clock.now = due - 1
    assert sup.poll_due() == [] and meter.reads == reads
