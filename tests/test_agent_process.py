"""The agent as installed: `coopwatt-agent run` in its own process, seen only through the broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from agent.cli import main as agent_cli
from agent.consent_ledger import ConsentLedger
from protocol.clock import SystemClock
from protocol.codec import decode_message
from protocol.payloads import HomeStatus, ReadingBatch
from protocol.topics import HomeTopic
from sim.broker import RunningBroker
from sim.household import SimHome
from sim.modbus_server import SimModbusServers

COOP = "proc-coop"


class Watcher:
    """A plain paho client that records the agent's status and readings."""

    def __init__(self, broker: RunningBroker, client_id: str = "watcher") -> None:
        self.statuses: list[HomeStatus] = []
        self.batches: list[ReadingBatch] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"coopwatt/{COOP}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        address, payload = decode_message(msg.topic, bytes(msg.payload))
        with self.changed:
            if address.kind is HomeTopic.STATUS:
                self.statuses.append(payload)
            elif address.kind is HomeTopic.READINGS:
                self.batches.append(payload)
            self.changed.notify_all()

    def wait(self, predicate: object, timeout_s: float = 15.0) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout_s), "timed out"  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def home_config(tmp_path: Path, mosquitto: RunningBroker) -> Iterator[Path]:
    home = SimHome("home-1", 3, SystemClock())
    with SimModbusServers([home]) as servers:
        devices = "".join(
            f'[[devices]]\nname = "{name}"\nprofile = "{ep.profile}"\n'
            f'modbus = "tcp://{ep.host}:{ep.port}"\nunit = {ep.unit}\n\n'
            for name, ep in servers.endpoints()["home-1"].items()
        )
        (tmp_path / "agent.toml").write_text(
            f'coop = "{COOP}"\nhome = "home-1"\npoll_interval_s = 0.5\n'
            f'data_dir = "state"\n\n[broker]\nurl = "{mosquitto.url}"\n\n{devices}'
        )
        ConsentLedger(tmp_path / "state" / "consent.jsonl", "home-1").share_everything(
            SystemClock().now_ms()
        )
        yield tmp_path / "agent.toml"


def _start_agent(config: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "coopwatt-agent"
    return subprocess.Popen(
        [str(exe), "run", "--config", str(config), "--drain-timeout", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_status_online_then_last_will_offline_when_killed(
    mosquitto: RunningBroker, home_config: Path
) -> None:
    watcher = Watcher(mosquitto)
    proc = _start_agent(home_config)
    try:
        watcher.wait(lambda: any(s.state == "online" and s.devices for s in watcher.statuses))
        online = next(s for s in watcher.statuses if s.state == "online" and s.devices)
        assert online.home == "home-1"
        assert online.version
        watcher.wait(lambda: len(watcher.batches) >= 2)
        devices = {r.device for b in watcher.batches for r in b.readings}
        assert devices == {"grid-meter", "pv-inverter", "wind-turbine"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The broker publishes the last will: the hub learns the home went away uncleanly.
        watcher.wait(lambda: watcher.statuses[-1].state == "offline")
        assert watcher.statuses[-1] == HomeStatus("home-1", "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watcher.close()


def test_sigterm_stops_cleanly_with_a_full_offline_status(
    mosquitto: RunningBroker, home_config: Path
) -> None:
    watcher = Watcher(mosquitto)
    proc = _start_agent(home_config)
    try:
        watcher.wait(lambda: len(watcher.batches) >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        watcher.wait(lambda: watcher.statuses[-1].state == "offline")
        final = watcher.statuses[-1]
        assert final.devices is not None  # a clean stop says more than the last will can
        assert final.backlog is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watcher.close()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "Traceback" not in out


def test_a_late_subscriber_gets_the_retained_online_status(
    mosquitto: RunningBroker, home_config: Path
) -> None:
    proc = _start_agent(home_config)
    first = Watcher(mosquitto)
    try:
        first.wait(lambda: any(s.state == "online" for s in first.statuses))
        late = Watcher(mosquitto, client_id="late")  # subscribes after the status was published
        late.wait(lambda: bool(late.statuses))
        assert late.statuses[0].state == "online"
        assert late.statuses[0].home == "home-1"
        late.close()
    finally:
        first.close()
        proc.terminate()
        proc.wait(20)


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('coop = "x"\n')
    result = CliRunner().invoke(agent_cli, ["run", "--config", str(tmp_path / "agent.toml")])
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'agent.toml'}: home is missing\n"
    assert "Traceback" not in result.output
    result = CliRunner().invoke(agent_cli, ["run", "--config", str(tmp_path / "nope.toml")])
    assert "cannot read config file" in result.output


def test_help_says_what_the_agent_is() -> None:
    result = CliRunner().invoke(agent_cli, ["--help"])
    assert result.exit_code == 0
    assert "Modbus" in result.output
