"""S0 pulse meters through gpiozero's MockFactory: counting, debounce, power, persistence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import DeviceConfig
from agent.devices import DeviceSupervisor, open_devices
from agent.modbus_io import DeviceError
from agent.profiles import load_profile, parse_profile
from agent.pulse import PulseCounter, PulseMeter
from protocol.clock import ManualClock
from protocol.quantities import Role

PIN = 17


class FakeTime:
    """The monotonic seconds the meter stamps edges with."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def now() -> FakeTime:
    return FakeTime()


def _meter(
    tmp_path: Path,
    factory: MockFactory,
    now: FakeTime,
    *,
    role: Role | None = None,
    profile: str = "s0-pulse-1000",
) -> PulseMeter:
    config = DeviceConfig("heat-pump", profile, "", 1, 1.0, gpio=PIN, role=role)
    meter = PulseMeter(
        config, load_profile(profile, _dirs(tmp_path)), tmp_path / "state", pin_factory=factory,
        monotonic=now,
    )  # fmt: skip
    meter.open()
    return meter


def _dirs(tmp_path: Path) -> list[Path]:
    shipped = Path(__file__).parent.parent / "firmware-configs" / "devices"
    return [tmp_path / "profiles", shipped]


def _pulse(factory: MockFactory, now: FakeTime, at: float, width: float = 0.05) -> None:
    pin: Any = factory.pin(PIN)
    now.t = at
    pin.drive_low()  # S0 closes: the pulled-up input goes low, active
    now.t = at + width
    pin.drive_high()


def test_pulses_become_energy_and_power(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    meter = _meter(tmp_path, factory, now)
    assert meter.read() == {"energy_wh": 0.0}  # no power until an interval is known
    _pulse(factory, now, 1000.0)
    assert meter.read() == {"energy_wh": 1.0}
    _pulse(factory, now, 1003.6)  # 1 Wh in 3.6 s: 1000 W
    now.t = 1004.0
    q = meter.read()
    assert q["energy_wh"] == 2.0
    assert q["power_w"] == pytest.approx(1000.0)
    now.t = 1003.6 + 7.2  # no pulse for twice the interval: at most 500 W by now
    assert meter.read()["power_w"] == pytest.approx(500.0)
    meter.close()


def test_contact_bounce_is_ignored(tmp_path: Path, factory: MockFactory, now: FakeTime) -> None:
    meter = _meter(tmp_path, factory, now)
    pin: Any = factory.pin(PIN)
    for t, low in [(10.0, True), (10.002, False), (10.004, True), (10.006, False),
                   (10.008, True), (10.060, False), (10.062, True), (10.064, False)]:  # fmt: skip
        now.t = t
        if low:
            pin.drive_low()
        else:
            pin.drive_high()
    assert meter.read()["energy_wh"] == 1.0
    assert meter.counter is not None and meter.counter.bounces == 6
    meter.close()


def test_count_survives_a_restart_without_a_phantom_pulse(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    meter = _meter(tmp_path, factory, now)
    for i in range(3):
        _pulse(factory, now, 100.0 + i)
    assert meter.read()["energy_wh"] == 3.0
    stored = json.loads((tmp_path / "state" / "pulse-heat-pump.json").read_text())
    assert stored["pulses"] == 3
    meter.close()

    # Restarted while the S0 contact is closed (mid-pulse): that pulse was counted already.
    pin: Any = factory.pin(PIN)
    pin.drive_low()
    now.t = 200.0
    again = _meter(tmp_path, factory, now)
    assert again.read() == {"energy_wh": 3.0}
    now.t = 200.05
    pin.drive_high()  # the old pulse ends: nothing counted
    assert again.read()["energy_wh"] == 3.0
    _pulse(factory, now, 201.0)
    assert again.read()["energy_wh"] == 4.0
    again.close()


def test_reported_energy_is_never_ahead_of_the_stored_count(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    meter = _meter(tmp_path, factory, now)
    path = tmp_path / "state" / "pulse-heat-pump.json"
    for i in range(5):
        _pulse(factory, now, 10.0 + i)
        reported = meter.read()["energy_wh"]
        assert json.loads(path.read_text())["pulses"] >= reported  # 1 Wh per pulse
    _pulse(factory, now, 20.0)  # counted but not yet read: lost if the power fails now
    assert json.loads(path.read_text())["pulses"] == 5
    meter.close()


def test_profile_change_keeps_the_energy_counted(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    meter = _meter(tmp_path, factory, now)
    for i in range(4):
        _pulse(factory, now, 10.0 + i)
    assert meter.read()["energy_wh"] == 4.0
    meter.close()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "s0-500.toml").write_text(
        'model = "S0 500"\nrole = "load"\nkind = "s0"\nimpulses_per_kwh = 500\n'
    )
    config = DeviceConfig("heat-pump", "s0-500", "", 1, 1.0, gpio=PIN)
    again = PulseMeter(
        config, load_profile("s0-500", _dirs(tmp_path)), tmp_path / "state",
        pin_factory=factory, monotonic=now,
    )  # fmt: skip
    _pulse(factory, now, 30.0)
    assert again.read()["energy_wh"] == 4.0  # opened by the read, after that pulse
    _pulse(factory, now, 31.0)
    assert again.read()["energy_wh"] == 6.0  # 2 Wh a pulse now
    again.close()


def test_grid_role_counts_import(tmp_path: Path, factory: MockFactory, now: FakeTime) -> None:
    meter = _meter(tmp_path, factory, now, role=Role.GRID)
    _pulse(factory, now, 1.0)
    assert meter.read() == {"energy_import_wh": 1.0}
    assert meter.role == Role.GRID
    meter.close()


def test_unreadable_counter_file_is_a_configuration_error(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "pulse-heat-pump.json").write_text("{not json")
    config = DeviceConfig("heat-pump", "s0-pulse-1000", "", 1, 1.0, gpio=PIN)
    meter = PulseMeter(
        config, load_profile("s0-pulse-1000"), tmp_path / "state", pin_factory=factory
    )
    with pytest.raises(DeviceError, match="unreadable") as caught:
        meter.read()
    assert not caught.value.transient


def test_pin_in_use_is_reported_not_raised(
    tmp_path: Path, factory: MockFactory, now: FakeTime
) -> None:
    first = _meter(tmp_path, factory, now)
    config = DeviceConfig("other", "s0-pulse-1000", "", 1, 1.0, gpio=PIN)
    second = PulseMeter(config, load_profile("s0-pulse-1000"), tmp_path, pin_factory=factory)
    with pytest.raises(DeviceError, match=f"cannot use GPIO {PIN}"):
        second.read()
    first.close()


def test_supervised_like_any_device(tmp_path: Path, factory: MockFactory) -> None:
    clock = ManualClock(1_750_000_000_000)
    config = DeviceConfig("pv-s0", "s0-pulse-1000", "", 1, 10.0, gpio=PIN, role=Role.PV)
    (meter,) = open_devices([config], data_dir=tmp_path, pin_factory=factory)
    sup = DeviceSupervisor([meter], clock)
    (first,) = sup.poll_due()
    assert first.quantities == {"energy_wh": 0.0}
    assert sup.slots[0].health.online
    pin: Any = factory.pin(PIN)
    pin.drive_low()
    pin.drive_high()
    clock.set(sup.next_due_ms())
    (second,) = sup.poll_due()
    assert second.quantities["energy_wh"] == 1.0
    sup.close()


def test_s0_profile_needs_a_gpio_and_a_modbus_profile_needs_a_bus(tmp_path: Path) -> None:
    from agent.profiles import ProfileError

    with pytest.raises(ProfileError, match="give its gpio"):
        open_devices([DeviceConfig("x", "s0-pulse-1000", "tcp://h:502", 1, 1.0)])
    with pytest.raises(ProfileError, match="give its modbus URL"):
        open_devices([DeviceConfig("x", "eastron-sdm120", "", 1, 1.0, gpio=4)])


# --- the pure counter -------------------------------------------------------------------------

_edges = st.lists(
    st.tuples(st.floats(0.0, 0.5, allow_nan=False), st.booleans()), min_size=0, max_size=60
)


@given(_edges, st.booleans())
@settings(max_examples=300)
def test_counter_never_counts_more_than_activations(
    edges: list[tuple[float, bool]], start: bool
) -> None:
    counter = PulseCounter(1000, 0.02, line_active=start)
    t, activations, state = 0.0, 0, start
    for gap, active in edges:
        t += gap
        if active and not state:
            activations += 1
        state = active
        counter.edge(t, active)
    assert 0 <= counter.pulses <= activations
    power = counter.power_w(t + 1.0)
    assert power is None or power > 0


@given(st.lists(st.floats(0.07, 100.0, allow_nan=False), min_size=2, max_size=30))
@settings(max_examples=200)
def test_clean_pulses_are_all_counted_with_power_from_the_last_interval(
    gaps: list[float],
) -> None:
    counter = PulseCounter(1000, 0.02)
    t = 0.0
    for gap in gaps:
        t += gap
        assert counter.edge(t, True)
        counter.edge(t + 0.03, False)
    assert counter.pulses == len(gaps)
    assert counter.power_w(t) == pytest.approx(3600.0 / gaps[-1])


def test_profile_parse_of_the_shipped_s0_meter() -> None:
    p = load_profile("s0-pulse-1000")
    assert p.kind == "s0" and p.impulses_per_kwh == 1000 and p.debounce_ms == 20
    assert parse_profile("x", {"model": "x", "role": "grid", "kind": "s0",
                               "impulses_per_kwh": 2000}).role == Role.GRID  # fmt: skip
