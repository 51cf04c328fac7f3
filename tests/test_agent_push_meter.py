"""P1 meters as devices: the simulator's stream over TCP and a pty, read by a PushMeter.

Expected readings are the simulator's own record of the telegrams it sent (sim.p1_stream's
TelegramLog). Time is a ManualClock; real I/O is waited for by polling with a deadline.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config
from agent.devices import DeviceSupervisor, open_devices
from agent.dsmr_decode import DsmrDecoder
from agent.modbus_io import DeviceError
from agent.profiles import load_profile
from agent.push_frames import Frame, FrameFault
from agent.push_meter import PushMeter, parse_port_url
from protocol.clock import ManualClock
from protocol.quantities import Role
from sim.household import GRID_METER, SimHome
from sim.p1_stream import P1Stream, compose_telegram, telegram_quantities
from sim.sml_frames import compose_file, quantity_entries
from tests.harness import wait_for

T0 = 1_782_900_000_000  # 2026-07-01 10:00 UTC
WAIT_S = 20.0  # a deadline for real I/O on a slow, shared machine; never a fixed sleep


def meter(url: str, clock: ManualClock, profile: str = "dsmr-5") -> PushMeter:
    p = load_profile(profile)
    assert p.obis is not None
    return PushMeter(
        "p1", Role.GRID, url, DsmrDecoder(p.obis, require_crc=p.crc), clock,
        poll_interval_s=10.0, baud=p.baud, framing=p.framing,
    )  # fmt: skip


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=["tcp", "pty"])
def stream(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[P1Stream]:
    home = SimHome("home-p1", 7, clock)
    s = P1Stream(lambda t: home.values(GRID_METER, t), clock, transport=request.param)
    s.start(autosend=False)
    yield s
    s.stop()


def connected(s: P1Stream, m: PushMeter) -> None:
    m.start()
    if s.transport == "tcp":
        wait_for(lambda: s.clients() == 1, what="the meter to connect")
    else:
        wait_for(lambda: m.port_error is None and m._thread is not None, what="the port to open")


def send_until_read(s: P1Stream, m: PushMeter, frames: int) -> None:
    """A pty drops what is written before the reader opened it: send until one arrives."""
    deadline = time.monotonic() + WAIT_S
    while m.frames < frames:
        assert time.monotonic() < deadline, "no telegram arrived"
        s.send()
        m.wait(0.5, frames=frames)


def test_the_latest_telegram_is_read_and_goes_stale(stream: P1Stream, clock: ManualClock) -> None:
    m = meter(stream.url, clock)
    try:
        connected(stream, m)
        send_until_read(stream, m, 1)
        clock.advance(10_000)
        sent = stream.send()
        assert m.wait(WAIT_S, frames=2)
        assert m.read() == sent.quantities  # what the simulator sent, in glossary units
        assert sent.quantities["energy_import_wh"] == (
            sent.quantities["energy_import_t1_wh"] + sent.quantities["energy_import_t2_wh"]
        )
        clock.advance(30_000)  # 30 s since the last telegram: still the latest
        assert m.read() == sent.quantities
        clock.advance(1_000)
        with pytest.raises(DeviceError, match=r"no P1 telegram for 31 s") as err:
            m.read()
        assert err.value.transient
    finally:
        m.close()


def test_bad_crcs_give_a_fault_status_and_no_reading(clock: ManualClock) -> None:
    values = {"power_w": 500.0, "energy_import_wh": 1_000_000.0, "energy_export_wh": 5_000.0}
    with P1Stream(lambda t: values, clock).start(autosend=False) as s:
        m = meter(s.url, clock)
        try:
            connected(s, m)
            good = s.send()
            assert m.wait(WAIT_S)
            clock.advance(31_000)
            raw = compose_telegram(telegram_quantities(values), clock.now_ms())
            bad = raw.replace(b"1-0:1.7.0(00.500*kW)", b"1-0:1.7.0(09.500*kW)")
            assert bad != raw
            for _ in range(5):
                s.send_raw(bad)
            wait_for(lambda: m.faults >= 5, what="five faults")
            with pytest.raises(DeviceError, match=r"last 5 P1 telegrams gave no reading: "
                               r"telegram failed its CRC"):  # fmt: skip
                m.read()
            assert m.frames == 1 and good.quantities["power_w"] == 500.0
        finally:
            m.close()


def test_a_counter_going_backwards_is_never_returned(clock: ManualClock) -> None:
    values = {"power_w": 500.0, "energy_import_wh": 1_000_000.0, "energy_export_wh": 5_000.0}
    with P1Stream(lambda t: values, clock).start(autosend=False) as s:
        m = meter(s.url, clock)
        try:
            connected(s, m)
            first = s.send()
            assert m.wait(WAIT_S)
            values["energy_import_wh"] = 999_000.0  # a glitch: 1 kWh less
            clock.advance(1_000)
            s.send()
            wait_for(lambda: m.faults == 1, what="the backwards telegram to be dropped")
            assert m.read() == first.quantities
            assert m.last_fault is not None and "went backwards" in m.last_fault
            values["energy_import_wh"] = 1_000_500.0
            clock.advance(1_000)
            third = s.send()
            assert m.wait(WAIT_S, frames=2)
            assert m.read() == third.quantities
        finally:
            m.close()


def test_partial_telegram_and_noise_on_a_pty(clock: ManualClock) -> None:
    values = {"power_w": -1200.0, "energy_import_wh": 2_000_000.0, "energy_export_wh": 3_000.0}
    with P1Stream(lambda t: values, clock, transport="pty").start(autosend=False) as s:
        m = meter(s.url, clock)
        try:
            connected(s, m)
            send_until_read(s, m, 1)
            clock.advance(40_000)
            raw = compose_telegram(telegram_quantities(values), clock.now_ms())
            s.send_raw(raw[:300])  # cut off: the next telegram's start shows it
            s.send_raw(bytes(range(0x80, 0x100)) * 2)  # 115200 read at 9600 looks like this
            s.send_raw(raw[:10])
            wait_for(lambda: m.faults >= 1, what="a fault")
            with pytest.raises(DeviceError, match="gave no reading") as err:
                m.read()
            assert "partial telegram" in str(err.value) or "noise" in str(err.value)
        finally:
            m.close()


def test_the_stream_stopping_then_coming_back_over_tcp(clock: ManualClock) -> None:
    values = {"power_w": 100.0, "energy_import_wh": 10_000.0, "energy_export_wh": 0.0}
    with P1Stream(lambda t: values, clock).start(autosend=False) as s:
        m = meter(s.url, clock)
        try:
            connected(s, m)
            s.send()
            assert m.wait(WAIT_S)
            s.disconnect_clients()  # the dongle restarts
            wait_for(lambda: m.port_error is not None or s.clients() == 1, what="the disconnect")
            wait_for(lambda: s.clients() == 1, what="the meter to reconnect")
            clock.advance(60_000)
            with pytest.raises(DeviceError, match="no P1 telegram for 60 s"):
                m.read()
            s.send()
            assert m.wait(WAIT_S, frames=2)
            assert m.read()["energy_import_wh"] == 10_000.0
        finally:
            m.close()


class _Broken:
    def feed(self, data: bytes) -> list[Frame | FrameFault]:
        raise RuntimeError("a decoder bug")


def test_a_decoder_bug_is_a_fault_not_a_dead_reader(clock: ManualClock) -> None:
    with P1Stream(lambda t: {}, clock).start(autosend=False) as s:
        m = PushMeter("p1", Role.GRID, s.url, _Broken(), clock)
        try:
            connected(s, m)
            s.send_raw(b"/x\r\n!\r\n")
            wait_for(lambda: m.faults >= 1, what="a fault")
            s.send_raw(b"/x\r\n!\r\n")
            wait_for(lambda: m.faults >= 2, what="a second fault")  # the thread went on
            with pytest.raises(DeviceError, match="internal error decoding: RuntimeError"):
                m.read()
        finally:
            m.close()


def test_a_missing_serial_port_says_so(clock: ManualClock) -> None:
    m = meter("serial:///dev/ttyNOPE-p1", clock)
    try:
        m.start()
        wait_for(lambda: m.port_error is not None, what="the open to fail")
        with pytest.raises(DeviceError, match="cannot open /dev/ttyNOPE-p1"):
            m.read()
    finally:
        m.close()


def test_supervisor_marks_a_silent_meter_offline_and_online_again(clock: ManualClock) -> None:
    values = {"power_w": 100.0, "energy_import_wh": 10_000.0, "energy_export_wh": 0.0}
    with P1Stream(lambda t: values, clock).start(autosend=False) as s:
        config = parse_config(_config(f'p1 = "{s.url}"'))
        [device] = open_devices(config.devices, clock=clock)
        sup = DeviceSupervisor([device], clock)
        try:
            assert isinstance(device, PushMeter)
            connected(s, device)
            s.send()
            assert device.wait(WAIT_S)
            [result] = sup.poll_due()
            assert result.quantities["power_w"] == 100.0
            for _ in range(10):  # no telegram for minutes: the status says why
                clock.set(sup.next_due_ms())
                sup.poll_due()
            health = sup.health()["smart-meter"]
            assert not health.online and health.error is not None
            assert health.error.startswith("no P1 telegram for")
            clock.set(sup.next_due_ms())  # the meter talks again: a telegram every second
            s.send()
            assert device.wait(WAIT_S, frames=2)
            assert sup.poll_due() and sup.health()["smart-meter"].online
        finally:
            sup.close()


# --- configuration ------------------------------------------------------------------------


def _config(device: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(
        'coop = "c"\nhome = "h"\n[broker]\nurl = "mqtt://localhost:1883"\n'
        f'[[devices]]\nname = "smart-meter"\n{device}\n'
    )


def test_p1_config_defaults_to_dsmr5() -> None:
    config = parse_config(_config('p1 = "serial:///dev/ttyUSB0"'))
    [d] = config.devices
    assert (d.p1, d.profile, d.modbus, d.gpio) == ("serial:///dev/ttyUSB0", "dsmr-5", "", None)
    config = parse_config(_config('p1 = "tcp://10.0.0.9:23"\nprofile = "e-mucs"'))
    assert config.devices[0].profile == "e-mucs"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ('p1 = "serial:///dev/ttyUSB0"\nmodbus = "tcp://h:502"', "or p1 .*, one of them"),
        ('p1 = "tcp://host"', "a TCP dongle is tcp://host:port"),
        ('p1 = "serial:///dev/ttyUSB0?baud=fast"', "baud is a number"),
        ('p1 = "serial:///dev/ttyUSB0?framing=9N1"', "framing is 8N1 or 7E1"),
        ('p1 = "usb:///dev/ttyUSB0"', "must start with serial:// or tcp://"),
        ('p1 = "serial:///dev/ttyUSB0"\nunit = 1', "unit is for Modbus devices"),
    ],
)
def test_p1_config_mistakes_are_one_sentence(device: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(device))


def test_a_modbus_profile_on_a_p1_port_is_refused(tmp_path: Path) -> None:
    config = parse_config(_config('p1 = "tcp://127.0.0.1:9"\nprofile = "eastron-sdm120"'))
    with pytest.raises(ValueError, match="not a P1 profile"):
        open_devices(config.devices)


@given(url=st.text(max_size=60), extra=st.sampled_from(["", 'profile = "dsmr-2"', "unit = 3"]))
@settings(max_examples=200)
def test_any_p1_value_loads_or_is_a_config_error(url: str, extra: str) -> None:
    data = _config(extra)
    data["devices"][0]["p1"] = url
    with contextlib.suppress(ConfigError):
        config = parse_config(data)
        parse_port_url(config.devices[0].p1)  # what loaded is a URL the meter can open


def test_sml_config_and_device(clock: ManualClock) -> None:
    """An SML meter is a push meter with SML's decoder: its frames read through the same path."""
    sent = {"energy_import_wh": 5_000_000.0, "energy_export_wh": 10.5, "power_w": 321.0}
    with P1Stream(lambda t: {}, clock).start(autosend=False) as s:
        config = parse_config(_config(f'sml = "{s.url}"'))
        [d] = config.devices
        assert (d.sml, d.push_url, d.profile) == (s.url, s.url, "sml")
        [device] = open_devices(config.devices, clock=clock)
        assert isinstance(device, PushMeter)
        try:
            connected(s, device)
            s.send_raw(compose_file(quantity_entries(sent)))
            assert device.wait(WAIT_S)
            assert device.read() == sent
            clock.advance(31_000)
            with pytest.raises(DeviceError, match="no SML frame for 31 s"):
                device.read()
        finally:
            device.close()


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ('sml = "serial:///dev/ttyUSB0"\nprofile = "dsmr-5"', "profile is not for an SML meter"),
        ('sml = "serial:///dev/ttyUSB0"\np1 = "tcp://h:1"', "or sml .*, one of them"),
        ('sml = "tcp://h"', "sml: SML URL 'tcp://h': a TCP dongle is tcp://host:port"),
    ],
)
def test_sml_config_mistakes_are_one_sentence(device: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(device))


def test_closing_interrupts_a_read_that_waits_for_a_quiet_meter(
    stream: P1Stream, clock: ManualClock
) -> None:
    """The reader blocks up to READ_TIMEOUT_S (5 s) on a quiet port so that it does not wake
    for nothing; close() interrupts that read (TCP: shutdown; serial: cancel_read) instead of
    waiting it out, so the agent stops at once."""
    from agent.push_meter import READ_TIMEOUT_S

    assert READ_TIMEOUT_S >= 5.0
    m = meter(stream.url, clock)
    connected(stream, m)
    wait_for(lambda: m._port is not None, what="the reader to hold its open port")
    thread = m._thread
    assert thread is not None
    m.close()  # joins for at most 5 s: without the interrupt the read would still be waiting
    assert not thread.is_alive()
