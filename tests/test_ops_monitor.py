"""`coopwatt-hub monitor`: frames rendered to text, the view fed by a real broker, the command
itself, and the live view in a real terminal (a tmux pane) when tmux is installed."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from hub.ops.monitor import MonitorState, ago, load_monitor_config, render_text, run_monitor
from protocol.codec import decode, encode
from protocol.payloads import Alert, HubAlert, HubMetrics, HubStatus
from protocol.topics import HubTopic, hub_topic
from sim.broker import RunningBroker
from tests.harness import BIN, wait_for
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
GOLDEN = Path(__file__).parent / "golden"
WAIT_S = 10.0


def golden_metrics(coop: str = "test-coop") -> HubMetrics:
    m = decode(HubMetrics, (GOLDEN / "hub-metrics__two-alerts.json").read_bytes())
    return dataclasses.replace(m, coop=coop)


def state_with(metrics: HubMetrics, hub_state: str = "online") -> MonitorState:
    s = MonitorState(metrics.coop, connected=True)
    status = HubStatus(metrics.coop, hub_state, T0, "0.1.0")  # type: ignore[arg-type]
    s.apply(hub_topic(metrics.coop, HubTopic.STATUS), encode(status), T0)
    s.apply(hub_topic(metrics.coop, HubTopic.METRICS), encode(metrics), T0)
    return s


def test_ago() -> None:
    assert [ago(None, T0), ago(T0 - 5_000, T0), ago(T0 - 600_000, T0)] == [
        "never",
        "5 s ago",
        "10 min ago",
    ]
    assert ago(T0 - 3 * 3_600_000, T0) == "3 h ago"
    assert ago(T0 - 5 * 86_400_000, T0) == "5 days ago"


def test_a_frame_shows_health_at_a_glance() -> None:
    text = render_text(state_with(golden_metrics()), T0 + 5_000)
    for expected in (
        "coopwatt test-coop",
        "hub: online  v0.1.0",
        "metrics: 5 s ago",
        "forecast: issued 15 min ago",
        "homes online 2/3",
        "backlog 12 readings",
        "stored 36/min",
        "home-3 offline for 7 h",
        "home-2/pv-inverter: no answer from unit 1",
        "pv-inverter",
    ):
        assert expected in text, expected
    # Homes with a problem come first: offline, then with an alert, then the healthy.
    rows = [ln.split()[1] for ln in text.splitlines() if ln.startswith("│ home-")]
    assert rows == ["home-3", "home-2", "home-1"]


def test_a_frame_says_what_it_does_not_know_yet() -> None:
    empty = MonitorState("quiet-coop")
    text = render_text(empty, T0)
    assert "not connected to the broker" in text
    assert "hub: no status yet" in text and "metrics: none yet" in text
    assert "forecast: no forecast yet" in text
    nothing = dataclasses.replace(golden_metrics(), forecast_issued_ms=None)
    assert "no forecast yet" in render_text(state_with(nothing, "offline"), T0)
    assert "hub: OFFLINE" in render_text(state_with(nothing, "offline"), T0)


def test_alert_changes_and_junk() -> None:
    s = state_with(golden_metrics())
    alert = Alert("stale-data", "warning", T0, "home-1 online but no new reading for 16 min",
                  "home-1")  # fmt: skip
    s.apply(
        hub_topic("test-coop", HubTopic.ALERTS),
        encode(HubAlert("test-coop", T0, "raised", alert)),
        T0,
    )
    s.apply(hub_topic("test-coop", HubTopic.METRICS), b"{not json", T0)
    s.apply(hub_topic("test-coop", HubTopic.METRICS), b"", T0)  # a retained message cleared
    assert s.errors == 1 and s.metrics is not None
    text = render_text(s, T0 + 60_000)
    assert "recent alert changes" in text and "raised" in text and "no new reading" in text


# -- against the broker -----------------------------------------------------------------------


def publish_retained(broker: RunningBroker, coop: str, metrics: HubMetrics) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hub-{coop}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    status = HubStatus(coop, "online", T0, "0.1.0")
    for topic, payload in (
        (hub_topic(coop, HubTopic.STATUS), encode(status)),
        (hub_topic(coop, HubTopic.METRICS), encode(metrics)),
    ):
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(WAIT_S)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def operator_config(mosquitto: RunningBroker, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "operator.toml"
    path.write_text(f'coop = "mon-coop"\ndb = "ignored.db"\n[broker]\nurl = "{mosquitto.url}"\n')
    publish_retained(mosquitto, "mon-coop", golden_metrics("mon-coop"))
    yield path


def test_run_once_reads_the_retained_view(operator_config: Path) -> None:
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    state = run_monitor(load_monitor_config(operator_config), once=True, console=console)
    console.file.close()
    assert state.metrics is not None and state.hub is not None
    assert "homes online 2/3" in console.export_text()


def test_the_command_prints_one_frame_or_says_it_got_nothing(
    operator_config: Path, tmp_path: Path, mosquitto: RunningBroker
) -> None:
    result = subprocess.run(
        [str(BIN / "coopwatt-hub"), "monitor", "--config", str(operator_config), "--once"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "homes online 2/3" in result.stdout and "home-3 offline" in result.stdout
    silent = tmp_path / "silent.toml"
    silent.write_text(f'coop = "nobody-here"\n[broker]\nurl = "{mosquitto.url}"\n')
    result = subprocess.run(
        [str(BIN / "coopwatt-hub"), "monitor", "--config", str(silent), "--once",
         "--timeout", "0.5"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "metrics: none yet" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('coop = "x"\n')
    result = subprocess.run(
        [str(BIN / "coopwatt-hub"), "monitor", "--config", str(bad)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("Error: ")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_the_live_view_in_a_terminal(operator_config: Path, mosquitto: RunningBroker) -> None:
    session = f"coopwatt-monitor-{threading.get_ident()}"
    command = f"{BIN / 'coopwatt-hub'} monitor --config {operator_config}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "130", "-y", "40", command],
        check=True, timeout=30,
    )  # fmt: skip

    def pane() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session],
            check=False, capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip

    try:
        wait_for(lambda: "homes online 2/3" in pane(), 20, "the first frame")
        # The hub publishes news: the open view follows without a restart.
        later = dataclasses.replace(golden_metrics("mon-coop"), homes_online=3, alerts=[])
        publish_retained(mosquitto, "mon-coop", later)
        wait_for(lambda: "homes online 3/3" in pane(), 20, "the view to update")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, timeout=30)


def test_the_header_says_which_forecaster_serves_demand() -> None:
    """From the golden forecast: the hub's tuning chose the model for 0-6 h and the four-week
    mean after; the operator sees that beside the forecast's age."""
    state = state_with(golden_metrics())
    forecast = (GOLDEN / "hub-forecast__selected.json").read_bytes()
    state.apply(hub_topic("test-coop", HubTopic.FORECAST), forecast, T0)
    text = render_text(state, T0 + 5_000)
    assert "demand forecast: model 0-6h, mean_4w 6-24h, mean_4w 24-48h" in text
    plain = (GOLDEN / "hub-forecast__mixed.json").read_bytes()
    state.apply(hub_topic("test-coop", HubTopic.FORECAST), plain, T0)
    assert "demand forecast: model " in render_text(state, T0 + 5_000)
