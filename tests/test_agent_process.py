"""The agent as installed: `coopwatt-agent run` in its own process, seen only through the broker."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

from agent.cli import main as agent_cli
from agent.consent_ledger import ConsentLedger
from protocol.clock import SystemClock
from protocol.codec import decode_message
from protocol.payloads import HomeStatus, ReadingBatch
from protocol.topics import HomeTopic, parse_topic
from sim.broker import RunningBroker
from sim.household import SimHome
from sim.modbus_server import SimModbusServers
from tests.devices_toml import devices_tables
from tests.harness import Message, Recorder

COOP = "proc-coop"
P = TypeVar("P")


def watch(broker: RunningBroker, client_id: str = "watcher") -> Recorder:
    """Everything published under the coop, as the hub would see it."""
    return Recorder(
        broker.port, [f"coopwatt/{COOP}/#"], client_id=client_id, host=broker.host, timeout_s=15.0
    )


def payloads(messages: list[Message], kind: HomeTopic, cls: type[P]) -> list[P]:
    """The payloads of ``kind`` in the order they arrived (statuses: the last will included)."""
    found: list[P] = []
    for topic, raw, _ in messages:
        if parse_topic(topic).kind is kind:
            _, payload = decode_message(topic, raw)
            assert isinstance(payload, cls)
            found.append(payload)
    return found


def statuses(messages: list[Message]) -> list[HomeStatus]:
    return payloads(messages, HomeTopic.STATUS, HomeStatus)


def batches(messages: list[Message]) -> list[ReadingBatch]:
    return payloads(messages, HomeTopic.READINGS, ReadingBatch)


@pytest.fixture
def home_config(tmp_path: Path, mosquitto: RunningBroker) -> Iterator[Path]:
    home = SimHome("home-1", 3, SystemClock())
    with SimModbusServers([home]) as servers:
        devices = devices_tables(servers.endpoints()["home-1"])
        (tmp_path / "agent.toml").write_text(
            f'coop = "{COOP}"\nhome = "home-1"\npoll_interval_s = 0.5\nsend_interval_s = 1\n'
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
    watcher = watch(mosquitto)
    proc = _start_agent(home_config)
    try:
        watcher.wait(
            lambda m: any(s.state == "online" and s.devices for s in statuses(m)),
            "an online status with devices",
        )
        online = next(s for s in statuses(watcher.messages) if s.state == "online" and s.devices)
        assert online.home == "home-1"
        assert online.version
        watcher.wait(lambda m: len(batches(m)) >= 2, "two readings batches")
        devices = {r.device for b in batches(watcher.messages) for r in b.readings}
        assert devices == {"grid-meter", "pv-inverter", "wind-turbine"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The broker publishes the last will: the hub learns the home went away uncleanly.
        watcher.wait(lambda m: statuses(m)[-1].state == "offline", "the last will")
        assert statuses(watcher.messages)[-1] == HomeStatus("home-1", "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watcher.close()


def test_sigterm_stops_cleanly_with_a_full_offline_status(
    mosquitto: RunningBroker, home_config: Path
) -> None:
    watcher = watch(mosquitto)
    proc = _start_agent(home_config)
    try:
        watcher.wait(lambda m: len(batches(m)) >= 1, "a readings batch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        watcher.wait(lambda m: statuses(m)[-1].state == "offline", "the offline status")
        final = statuses(watcher.messages)[-1]
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
    first = watch(mosquitto)
    try:
        first.wait(lambda m: any(s.state == "online" for s in statuses(m)), "the online status")
        late = watch(mosquitto, client_id="late")  # subscribes after the status was published
        late.wait(lambda m: bool(statuses(m)), "the retained status")
        assert statuses(late.messages)[0].state == "online"
        assert statuses(late.messages)[0].home == "home-1"
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
