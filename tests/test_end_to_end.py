"""A simulated home to the hub over a real Mosquitto: the hub stores what the devices served.

Every part is real: pymodbus servers computing registers from the simulated household at the
clock's time, the agent polling them over Modbus TCP and keeping its outbox in SQLite, a private
Mosquitto process, the hub committing to SQLite and acking. Only the clock is driven by the test.
"""

from __future__ import annotations

import csv
import io
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from hub.app import ingest_with_consent
from hub.cli.main import main as hub_cli
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.session import BrokerSettings
from sim.broker import RunningBroker
from sim.demo import DemoOptions, run_demo
from sim.household import SimHome
from sim.modbus_server import SimModbusServers

START_MS = 1_782_900_000_000 - 1_782_900_000_000 % 3_600_000 + 9 * 3_600_000  # a summer morning
STEP_MS = 10_000

# The register resolution of each quantity on the simulated devices: SDM630 float32, SunSpec
# int16 with scale factors, the turbine's fixed-point words. Energy is within 1 Wh everywhere.
RESOLUTION = {
    "power_w": 1.0,
    "voltage_v": 0.1,
    "current_a": 0.01,
    "frequency_hz": 0.01,
    "power_factor": 0.01,
    "temperature_c": 0.1,
    "wind_speed_m_s": 0.1,
    "energy_wh": 1.0,
    "energy_import_wh": 1.0,
    "energy_export_wh": 1.0,
}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for other threads and processes to get somewhere; never waits for clock time."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Rig:
    """A home, its agent and the hub, sharing a ManualClock and a real broker."""

    def __init__(self, broker: RunningBroker, tmp: Path, coop: str) -> None:
        self.clock = ManualClock(START_MS)
        self.home = SimHome("home-1", 7, self.clock)
        self.servers = SimModbusServers([self.home])
        self.servers.start()
        eps = self.servers.endpoints()["home-1"]
        config = AgentConfig(
            coop=coop,
            home="home-1",
            broker=BrokerSettings(broker.url, f"agent-{coop}"),
            data_dir=tmp / "agent",
            devices=tuple(
                DeviceConfig(
                    name, ep.profile, f"tcp://{ep.host}:{ep.port}", ep.unit, STEP_MS / 1000
                )
                for name, ep in eps.items()
            ),
        )
        self.store = Store.open(tmp / "hub.db", coop, clock=self.clock)
        self.hub, _ = ingest_with_consent(
            self.store, BrokerSettings(broker.url, f"hub-{coop}"), coop, self.clock
        )
        self.hub.start()
        ConsentLedger(config.consent_path, "home-1").share_everything(START_MS)
        self.agent = Agent(config, self.clock)
        self.thread = threading.Thread(target=self.agent.run)
        self.thread.start()
        wait_for(lambda: self.hub.connected.is_set() and self.agent.session.connected.is_set())
        wait_for(lambda: self.agent.polls >= 1)  # the first poll happens at START_MS
        self.served: dict[int, dict[str, dict[str, float | str]]] = {}
        self._record()

    def _record(self) -> None:
        # The clock has not moved since the agent's poll, so this is what the devices served.
        t = self.clock.now_ms()
        self.served[t] = {d: self.home.values(d, t) for d in self.home.devices}

    def step(self) -> None:
        """Move the clock one poll interval on and wait for the agent's poll at that time."""
        polls = self.agent.polls
        self.clock.advance(STEP_MS)
        wait_for(lambda: self.agent.polls > polls)
        self._record()

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(20)
        self.hub.stop()
        self.store.close()
        self.servers.stop()


@pytest.fixture
def rig(mosquitto: RunningBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    coop = "e2e-" + request.node.name.replace("_", "-")[-20:].strip("-")
    r = Rig(mosquitto, tmp_path, coop)
    yield r
    r.close()


def test_stored_values_match_what_the_devices_served(rig: Rig) -> None:
    for _ in range(30):
        rig.step()
    n_polls = 31
    wait_for(lambda: rig.store.count_readings() == 3 * n_polls and rig.agent.backlog == 0)

    stored = list(rig.store.iter_readings())
    assert {r.device for r in stored} == {"grid-meter", "pv-inverter", "wind-turbine"}
    for r in stored:
        served = rig.served[r.ts_ms][r.device]
        assert r.ts_ms == START_MS + (r.seq - 1) * STEP_MS
        assert r.grant == "g1"  # released under the household's first grant
        assert set(r.quantities) <= set(served)
        for name, value in r.quantities.items():
            if name == "state":
                assert value == served[name]
            else:
                assert value == pytest.approx(served[name], abs=RESOLUTION[name]), (r.device, name)
        # What the profiles map must arrive: nothing a device serves is silently dropped.
        missing = set(served) - set(r.quantities)
        assert missing <= {"power_factor"} if r.device == "pv-inverter" else not missing, missing
    by_device = {d: [r.seq for r in stored if r.device == d] for d in ("grid-meter", "pv-inverter")}
    assert by_device["grid-meter"] == list(range(1, n_polls + 1))
    stats = rig.hub.stats()
    assert stats["rejected"] == 0
    assert stats["duplicates"] == 0


def test_grid_counters_integrate_the_power_the_meter_showed(rig: Rig) -> None:
    for _ in range(60):  # ten simulated minutes
        rig.step()
    wait_for(lambda: rig.store.count_readings("home-1") >= 3 * 61 and rig.agent.backlog == 0)
    grid = [r for r in rig.store.iter_readings() if r.device == "grid-meter"]
    # Power is piecewise constant over the simulator's 10 s steps, so the counters' increase
    # between consecutive polls is power x 10 s, to the float32 kWh register's resolution.
    for a, b in itertools.pairwise(grid):
        p = float(a.quantities["power_w"])
        d_import = float(b.quantities["energy_import_wh"]) - float(a.quantities["energy_import_wh"])
        d_export = float(b.quantities["energy_export_wh"]) - float(a.quantities["energy_export_wh"])
        assert d_import == pytest.approx(max(p, 0) * 10 / 3600, abs=0.6)
        assert d_export == pytest.approx(max(-p, 0) * 10 / 3600, abs=0.6)


def test_demo_and_csv_export_agree_with_the_simulator(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    result = run_demo(DemoOptions(homes=3, hours=1.0, speed=1200, db=db, start_ms=START_MS))
    assert result.completed
    assert result.broker == "mosquitto"
    assert [h.home for h in result.homes] == ["home-01", "home-02", "home-03"]
    assert all(h.ok for h in result.homes), result.homes

    out = CliRunner().invoke(hub_cli, ["export", "--db", str(db), "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert list(rows[0])[:5] == ["home", "device", "role", "seq", "ts_ms"]
    for h in result.homes:
        mine = [r for r in rows if r["home"] == h.home]
        assert len(mine) == h.readings > 0

        def delta(device: str, column: str, rows: list[dict[str, str]] = mine) -> float:
            values = [float(r[column]) for r in rows if r["device"] == device and r[column]]
            return values[-1] - values[0] if values else 0.0

        from_csv = {
            "imported": delta("grid-meter", "energy_import_wh"),
            "exported": delta("grid-meter", "energy_export_wh"),
            "generated": delta("pv-inverter", "energy_wh") + delta("wind-turbine", "energy_wh"),
        }
        for key, sim_wh in h.sim_wh.items():
            assert from_csv[key] == pytest.approx(sim_wh, rel=0.005, abs=1.0), (h.home, key)


def test_demo_runs_on_the_embedded_mqtt_311_broker(tmp_path: Path) -> None:
    """A machine without Mosquitto still runs the demo, and nothing relies on MQTT 5."""
    result = run_demo(
        DemoOptions(
            homes=2, hours=0.5, speed=1200, db=tmp_path / "d.db", start_ms=START_MS, broker="amqtt"
        )
    )
    assert result.broker == "amqtt"
    assert result.completed
    assert all(h.ok and h.readings > 0 for h in result.homes), result.homes
