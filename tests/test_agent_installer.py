"""The installer's commands: scan a bus, read one device, check a whole configuration."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agent import installer
from agent.cli import main as agent_cli
from sim.broker import RunningBroker
from tests.modbus_images import FIXTURES, ImageServer, image_from_fixture, load_fixture

CASES = {
    1: FIXTURES / "eastron-sdm630" / "day-import.json",
    3: FIXTURES / "sunspec" / "inverter-103-common-66.json",
    5: FIXTURES / "huawei-sun2000" / "day-three-phase.json",
    7: FIXTURES / "growatt-tl-x" / "day.json",
    9: FIXTURES / "coopwatt-wind-generic" / "running.json",
}


@pytest.fixture(scope="module")
def bus() -> Iterator[ImageServer]:
    units = {u: image_from_fixture(load_fixture(p)) for u, p in CASES.items()}
    with ImageServer(units, missing="gateway") as server:
        yield server


def _run(*args: str) -> Any:
    return CliRunner().invoke(agent_cli, list(args))


def test_parse_units() -> None:
    assert installer.parse_units("1-3,7, 5") == [1, 2, 3, 5, 7]
    assert installer.parse_units("1-247")[-1] == 247
    for bad in ("0-300", "a", "5-2", "1-"):
        with pytest.raises(ValueError, match="units"):
            installer.parse_units(bad)


def test_scan_lists_what_answers_and_what_it_is(bus: ImageServer) -> None:
    result = _run("scan", "--modbus", bus.url, "--units", "1-10", "--timeout", "0.3", "--json")
    assert result.exit_code == 0, result.output
    found = {f["unit"]: f for f in json.loads(result.output)["found"]}
    assert sorted(found) == [1, 3, 5, 7, 9]
    assert found[3]["kind"] == "sunspec"
    assert (found[3]["manufacturer"], found[3]["model"], found[3]["serial"]) == (
        "Fronius",
        "Symo 5.0-3-M",
        "SN-12345",
    )
    assert found[3]["sunspec_models"] == [1, 103]
    assert found[5] | {"profiles": ["huawei-sun2000"], "identified": True} == found[5]
    assert not found[1]["identified"]
    assert "eastron-sdm630" in found[1]["profiles"]
    assert found[7]["profiles"] == ["growatt-tl-x"]
    assert found[9]["profiles"] == ["coopwatt-wind-generic"]


def test_scan_prints_a_line_per_device(bus: ImageServer) -> None:
    result = _run("scan", "--modbus", bus.url, "--units", "2-3", "--timeout", "0.3")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "unit   3: SunSpec Fronius Symo 5.0-3-M (serial SN-12345; models 1, 103)\n"
    )
    result = _run("scan", "--modbus", bus.url, "--units", "2", "--timeout", "0.3")
    assert "nothing answered" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modbus", "udp://x"], "must start with tcp:// or rtu://"),
        (["--modbus", "tcp://127.0.0.1:1", "--units", "1-999"], "within 0-247"),
    ],
)
def test_scan_mistakes_are_one_line(args: list[str], message: str) -> None:
    result = _run("scan", *args)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_read_with_a_profile_prints_glossary_quantities(bus: ImageServer) -> None:
    result = _run("read", "--modbus", bus.url, "--unit", "1", "--profile", "eastron-sdm630",
                  "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["device"] == "Eastron SDM630"
    assert out["role"] == "grid"
    assert out["quantities"]["power_w"] == 4120.0
    assert out["quantities"]["voltage_v"] == pytest.approx(232.1, rel=1e-6)
    text = _run("read", "--modbus", bus.url, "--unit", "1", "--profile", "eastron-sdm630")
    assert text.output.splitlines()[0] == "Eastron SDM630 (eastron-sdm630, role grid)"
    assert "  power_w            4120 W" in text.output.splitlines()


def test_read_without_a_profile_discovers_sunspec(bus: ImageServer) -> None:
    result = _run("read", "--modbus", bus.url, "--unit", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["device"] == "Fronius Symo 5.0-3-M"
    assert out["identity"]["serial"] == "SN-12345"
    assert out["role"] == "pv"
    assert out["quantities"]["state"] == "mppt"


def test_read_can_record_a_fixture_that_replays(bus: ImageServer, tmp_path: Path) -> None:
    recorded = tmp_path / "recorded.json"
    result = _run("read", "--modbus", bus.url, "--unit", "3", "--record", str(recorded), "--json")
    assert result.exit_code == 0, result.output
    fixture = load_fixture(recorded)
    assert fixture["profile"] == "sunspec"
    with ImageServer({1: image_from_fixture(fixture)}) as replay:
        again = installer.read_device(replay.url, 1)
    assert again["quantities"] == fixture["expected"] == json.loads(result.output)["quantities"]


def test_read_failures_are_one_line(bus: ImageServer) -> None:
    result = _run("read", "--modbus", bus.url, "--unit", "4", "--profile", "eastron-sdm630",
                  "--timeout", "0.3")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith("Error: unit 4 on ")
    assert "gateway target did not respond" in result.output
    result = _run("read", "--modbus", bus.url, "--unit", "1")
    assert result.exit_code == 2 and "not a SunSpec device" in result.output
    result = _run("read", "--modbus", bus.url, "--unit", "1", "--profile", "nope")
    assert result.exit_code == 2 and "no device profile 'nope'" in result.output


# --- check --------------------------------------------------------------------------------------


def _config(tmp_path: Path, broker_url: str, bus: ImageServer, extra: str = "") -> Path:
    text = f"""
coop = "check-coop"
home = "home-1"
data_dir = "state"

[broker]
url = "{broker_url}"

[[devices]]
name = "grid-meter"
profile = "eastron-sdm630"
modbus = "{bus.url}"
unit = 1

[[devices]]
name = "pv-inverter"
profile = "sunspec"
modbus = "{bus.url}"
unit = 3
{extra}"""
    (tmp_path / "agent.toml").write_text(text)
    return tmp_path / "agent.toml"


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installer, "clock_synced", lambda: True)


def test_check_passes_when_everything_answers(
    tmp_path: Path, bus: ImageServer, mosquitto: RunningBroker, synced: None
) -> None:
    config = _config(tmp_path, mosquitto.url, bus)
    result = _run("check", "--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0:2] for line in lines] == [
        ["grid-meter", "ok"],
        ["pv-inverter", "ok"],
        ["broker", "ok"],
        ["clock", "ok"],
        ["data", "dir"],
    ]
    assert "power_w=4120 W" in lines[0]
    out = json.loads(_run("check", "--config", str(config), "--json").output)
    assert out["ok"] is True
    assert [c["what"] for c in out["checks"]][-1] == "data dir"


def test_check_names_what_failed(
    tmp_path: Path, bus: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(installer, "clock_synced", lambda: False)
    config = _config(
        tmp_path,
        f"mqtt://127.0.0.1:{closed}",
        bus,
        extra=f'\n[[devices]]\nname = "heat-pump"\nprofile = "eastron-sdm120"\n'
        f'modbus = "{bus.url}"\nunit = 4\n',
    )
    result = _run("check", "--config", str(config), "--broker-timeout", "2")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[-1] == "Error: check failed: heat-pump, broker, clock"
    row = {line.split()[0]: line for line in lines[:-1]}
    assert "FAIL" in row["heat-pump"] and "gateway target did not respond" in row["heat-pump"]
    assert "cannot reach" in row["broker"]
    assert "not synchronised" in row["clock"]
    assert " ok " in row["grid-meter"]


def test_check_with_a_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('coop = "x"\n')
    result = _run("check", "--config", str(tmp_path / "agent.toml"))
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'agent.toml'}: home is missing\n"


def test_help_names_the_installer_commands() -> None:
    out = _run("--help").output
    for command in ("scan", "read", "check", "run"):
        assert command in out


def _float32(value: float) -> float:
    import struct

    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_read_shows_a_float32_register_as_the_device_holds_it() -> None:
    """A voltage of 231.8 V sent as IEEE 754 single precision is 231.8000030517578 as a Python
    float; the installer reads 231.8, and a power factor has no unit "1" after it."""
    from agent.installer import _short, format_quantities

    lines = format_quantities({"voltage_v": _float32(231.8), "power_factor": _float32(0.96)})
    assert lines == ["voltage_v          231.8 V", "power_factor       0.96"]
    assert _short("power_factor", _float32(0.96)) == "power_factor=0.96"
    assert format_quantities({"power_w": 2410.0}) == ["power_w            2410 W"]


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_number_text_gives_back_the_same_float32(value: float) -> None:
    from agent.installer import number_text

    assert _float32(float(number_text(value))) == value


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_number_text_is_exact_for_whole_numbers_and_close_for_the_rest(value: float) -> None:
    """Within float32's precision (2^-24 relative) of any value; exact for a whole number, so a
    counter of 16777217 Wh is never shown as float32's 16777216."""
    from agent.installer import number_text

    shown = float(number_text(value))
    if value.is_integer():
        assert shown == value
    else:
        assert shown == pytest.approx(value, rel=2**-24, abs=1e-300)


def test_a_counter_beyond_float32_is_shown_exactly() -> None:
    from agent.installer import number_text

    assert number_text(16777216.0) == "16777216"
    assert number_text(16777217.0) == "16777217"
    assert number_text(123456789.5) == "123456789.5"


def test_asking_whether_the_clock_is_synchronised_starts_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked with every status (each 5 minutes, and for the household page): it once found libc
    through ctypes.util.find_library, which runs ``ldconfig -p`` each time, a fork of the whole
    agent. The kernel's answer needs no file at all."""
    import subprocess

    from agent.clocksync import clock_synced

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert clock_synced() in (True, False)  # Linux answers one or the other
