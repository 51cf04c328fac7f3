"""``coopwatt devices``: a simulated home's devices an installer practises ``scan``, ``read`` and
``check`` on.

The command runs as its own process, as an installer starts it; the installer's commands run
against the URLs it prints, and what they read is checked against the simulator's own record of
what it served (``--served-log``), never against the agent's bookkeeping.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import installer
from agent.cli import main as agent_cli
from protocol.clock import ManualClock
from protocol.quantities import GLOSSARY
from protocol.timeparse import parse_iso_ms
from sim.broker import RunningBroker
from sim.cli import main as sim_cli
from sim.practice import PracticeError, PracticeHome

ROOT = Path(__file__).resolve().parent.parent
START = "2026-06-21T09:00"  # UTC: 11:00 in the simulated home (52 N, 5 E), a sunny June morning
START_MS = int(datetime(2026, 6, 21, 9, 0, tzinfo=UTC).timestamp() * 1000)
DEADLINE_S = 30.0  # a busy 2-core machine with other helpers' tests on it
DEVICE_LINE = re.compile(r"^  (tcp://\S+) unit (\d+)  (.+)$")


@dataclass
class Running:
    """The ``coopwatt devices`` process and what it printed."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    printed: list[str] = field(default_factory=list)

    def read_until(self, last: str) -> list[str]:
        """Lines printed up to and including ``last``, waiting at most DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {last!r} within {DEADLINE_S:g} s: {self.printed}"
                ) from None
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before {last!r}: {self.printed}")
            self.printed.append(line)
            if line == last:
                return list(self.printed)

    def urls(self) -> dict[str, tuple[str, int]]:
        """Printed device label -> (URL, unit)."""
        found = (DEVICE_LINE.match(line) for line in self.printed)
        return {m[3]: (m[1], int(m[2])) for m in found if m}

    def agent_toml(self) -> str:
        """The printed ``[[devices]]`` tables (from the first table to "Ctrl-C to stop.")."""
        first = self.printed.index("[[devices]]")
        return "\n".join(self.printed[first : self.printed.index("Ctrl-C to stop.")])


def _start(*args: str) -> Running:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "devices", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # readline blocks: a thread keeps the test's waits bounded
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return Running(proc, lines)


def _stop(running: Running) -> tuple[int, str]:
    """SIGINT, then the exit code and stderr, within the deadline."""
    running.proc.send_signal(signal.SIGINT)
    try:
        code = running.proc.wait(DEADLINE_S)
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()
    assert running.proc.stderr is not None
    return code, running.proc.stderr.read()


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    served = tmp_path_factory.mktemp("practice") / "served.jsonl"
    running = _start("--start", START, "--served-log", str(served))
    try:
        running.read_until("Ctrl-C to stop.")
        yield running, served
    finally:
        if running.proc.poll() is None:
            _stop(running)


def _agent(*args: str) -> Any:
    result = CliRunner().invoke(agent_cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _served(path: Path, device: str) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["device"] == device]


def test_prints_each_device_with_its_url_and_unit(practice: tuple[Running, Path]) -> None:
    running, _ = practice
    urls = running.urls()
    assert sorted(urls) == [
        "PV inverter (SunSpec)",
        "grid meter (Eastron SDM630)",
        "wind turbine (coopwatt generic controller)",
    ]
    assert {unit for _, unit in urls.values()} == {1}
    assert all(url.startswith("tcp://127.0.0.1:") for url, _ in urls.values())
    assert len({url for url, _ in urls.values()}) == 3
    p1 = [line for line in running.printed if "P1 smart meter (DSMR 5.0)" in line]
    assert len(p1) == 1 and p1[0].strip().startswith("tcp://127.0.0.1:")
    # Its table is there to paste, commented out: one grid meter per home.
    assert f'# p1 = "{p1[0].split()[0]}"' in running.printed
    assert (
        running.printed[0] == "A simulated home's devices, from 2026-06-21 09:00 UTC in real time:"
    )


def test_scan_finds_each_device_at_unit_1_only(practice: tuple[Running, Path]) -> None:
    urls = practice[0].urls()
    found = {}
    for label, (url, _) in urls.items():
        hits = _agent("scan", "--modbus", url, "--units", "1-3", "--timeout", "1", "--json")
        assert [h["unit"] for h in hits["found"]] == [1], label  # 2, 3: "no such unit here"
        found[label] = hits["found"][0]
    inverter = found["PV inverter (SunSpec)"]
    # The simulator's SunSpec common model (sim/registers.py) and serial (home and device).
    assert (inverter["kind"], inverter["manufacturer"], inverter["model"]) == (
        "sunspec",
        "coopwatt-sim",
        "sim-inverter-3p",
    )
    assert inverter["serial"] == "practice-home-pv-inverter"
    assert inverter["sunspec_models"] == [1, 103]
    assert "eastron-sdm630" in found["grid meter (Eastron SDM630)"]["profiles"]
    assert found["wind turbine (coopwatt generic controller)"]["profiles"] == [
        "coopwatt-wind-generic"
    ]


def _same(name: str, read: float | str, served: float | str) -> bool:
    """A value read equals one served: strings exactly; the SDM630's float32 registers and
    SunSpec's scaled integers hold the simulator's values to 1e-6 relative, counters to 1 Wh."""
    if isinstance(read, str) or isinstance(served, str):
        return read == served
    if name.startswith("energy"):
        return abs(read - served) <= 1.0
    return read == pytest.approx(served, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("label", "device", "profile"),
    [
        ("grid meter (Eastron SDM630)", "grid-meter", "eastron-sdm630"),
        ("PV inverter (SunSpec)", "pv-inverter", None),
        ("wind turbine (coopwatt generic controller)", "wind-turbine", "coopwatt-wind-generic"),
    ],
)
def test_read_shows_what_the_simulator_served(
    practice: tuple[Running, Path], label: str, device: str, profile: str | None
) -> None:
    running, served_log = practice
    url, unit = running.urls()[label]
    before = len(_served(served_log, device))
    args = ["read", "--modbus", url, "--unit", str(unit), "--json"]
    out = _agent(*args, *(["--profile", profile] if profile else []))
    answered = _served(served_log, device)[before:]  # the requests this read made
    assert answered, "the read reached no simulated device"
    quantities = out["quantities"]
    assert "power_w" in quantities and set(quantities) <= set(GLOSSARY)
    for name, value in quantities.items():
        shown = [r["values"][name] for r in answered]
        assert any(_same(name, value, s) for s in shown), (name, value, shown)
    # Simulated time began at --start and runs at real speed (a few seconds into the run).
    assert all(START_MS <= r["t_ms"] <= START_MS + 120_000 for r in answered)
    if device == "pv-inverter":  # 11:00 local in June: the sun is up
        assert all(float(r["values"]["power_w"]) > 0 for r in answered)


def test_check_passes_on_the_printed_devices(
    practice: tuple[Running, Path],
    tmp_path: Path,
    mosquitto: RunningBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(installer, "clock_synced", lambda: True)  # this machine's, not ours
    config = tmp_path / "agent.toml"
    config.write_text(
        f'coop = "practice-coop"\nhome = "home-1"\ndata_dir = "state"\n\n'
        f'[broker]\nurl = "{mosquitto.url}"\n\n{practice[0].agent_toml()}',
        encoding="utf-8",
    )
    out = _agent("check", "--config", str(config), "--json")
    rows = {row["what"]: row for row in out["checks"]}
    assert out["ok"] is True, rows
    assert [rows[d]["detail"].split(":")[0] for d in ("grid-meter", "pv-inverter")] == [
        "grid",
        "pv",
    ]
    assert rows["wind-turbine"]["detail"].startswith("wind: ")


def test_sigint_stops_it_with_exit_0() -> None:
    running = _start("--seed", "3")
    running.read_until("Ctrl-C to stop.")
    url = next(iter(running.urls().values()))[0]
    code, stderr = _stop(running)
    assert code == 0, stderr
    assert stderr == "stopped\n"
    host, port = url.removeprefix("tcp://").split(":")
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))


def test_a_taken_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = _start("--port-base", str(port))
        code = running.proc.wait(DEADLINE_S)
        assert running.proc.stderr is not None
        stderr = running.proc.stderr.read()
    assert code == 2
    assert stderr == (
        f"Error: cannot serve the grid meter (Eastron SDM630) on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


def test_port_base_puts_the_devices_on_consecutive_ports() -> None:
    for base in (23417, 31873, 41299, 47713, 52711):  # any three free in a row will do
        home = PracticeHome(ManualClock(START_MS), port_base=base)
        try:
            home.start()
        except PracticeError:
            continue
        try:
            assert [d.url for d in home.devices] == [
                f"tcp://127.0.0.1:{base + i}" for i in range(4)
            ]
            assert home.devices[0].line() == (
                f"tcp://127.0.0.1:{base} unit 1  grid meter (Eastron SDM630)"
            )
        finally:
            home.stop()
        return
    pytest.fail("no four consecutive free ports at any of the bases tried")


def test_a_port_base_too_high_for_four_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="port base 65533 leaves no room for 4 ports"):
        PracticeHome(ManualClock(START_MS), port_base=65533)


def test_a_served_log_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    where = tmp_path / "no-such-folder" / "served.jsonl"
    result = CliRunner().invoke(sim_cli, ["devices", "--served-log", str(where)])
    assert result.exit_code == 2
    assert result.output == f"Error: cannot open {where}: No such file or directory\n"


def _not_a_time(text: str) -> bool:
    try:
        parse_iso_ms(text, naive="utc")
    except ValueError:
        return True
    return False


@settings(max_examples=30)  # each is a click invocation; 30 cover the shapes
@given(st.text(max_size=30).filter(_not_a_time))
def test_a_bad_start_is_one_line_and_exit_2(text: str) -> None:
    result = CliRunner().invoke(sim_cli, ["devices", f"--start={text}"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: --start ")
    assert result.output.count("\n") == 1


def test_the_p1_port_streams_the_grid_meters_telegrams() -> None:
    """``read --p1`` on the practice home's P1 port gives what the stream's own log says it
    sent: the simulated grid meter's counters, split over two tariffs."""
    home = PracticeHome(ManualClock(START_MS))
    home.start()
    try:
        url = home.devices[-1].url
        assert home.devices[-1].label == "P1 smart meter (DSMR 5.0), the same grid connection"
        result = CliRunner().invoke(agent_cli, ["read", "--p1", url, "--json", "--timeout", "20"])
        assert result.exit_code == 0, result.output
        got = json.loads(result.output)["quantities"]
        assert home.p1_log is not None
        assert got in [s.quantities for s in home.p1_log.sent()]
        assert got["energy_import_wh"] == got["energy_import_t1_wh"] + got["energy_import_t2_wh"]
    finally:
        home.stop()
