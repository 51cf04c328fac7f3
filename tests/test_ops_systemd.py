"""systemd: the unit files, and the notify protocol the programs speak (ready, watchdog, reload).

The programs run as real processes against a datagram socket standing in for systemd's
``$NOTIFY_SOCKET``; the unit files are checked with ``systemd-analyze`` when it is installed.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.systemd import Notifier, configure_logging, under_journal
from sim.broker import RunningBroker
from tests.fake_systemd import WAIT_S, FakeSystemd
from tests.harness import BIN, simulated_home, wait_for

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    try:
        yield fake
    finally:
        fake.close()


# -- the Notifier --------------------------------------------------------------------------


def test_notifier_speaks_the_protocol(systemd: FakeSystemd) -> None:
    n = Notifier(str(systemd.path), watchdog_usec=4_000_000)
    assert n.ready("polling 3 devices")
    fields = systemd.next()
    assert fields["READY"] == "1" and fields["STATUS"] == "polling 3 devices"
    assert fields["MAINPID"] == str(os.getpid())
    assert n.ping()
    assert systemd.next(skip_watchdog=False) == {"WATCHDOG": "1"}
    assert not n.ping()  # a quarter of WatchdogSec has not passed: not sent again yet
    assert n.reloading()
    fields = systemd.next()
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    assert n.status("line one\nline two")
    assert systemd.next() == {"STATUS": "line one line two"}
    assert n.stopping()
    assert systemd.next()["STOPPING"] == "1"


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"coopwatt-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT_S)
        assert Notifier(f"@{name}").ready()
        assert b"READY=1" in sock.recv(4096)


def test_outside_systemd_everything_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.ping() and not n.stopping()
    gone = Notifier("/nonexistent/notify", 1_000_000)
    assert not gone.ready() and not gone.ready()
    assert caplog.text.count("cannot notify systemd") == 1  # warned once, not per call


def test_watchdog_belongs_to_the_main_pid() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_s == 30.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 30.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "soon"}).watchdog_s is None


# -- logs --------------------------------------------------------------------------------------


def _log_to(path: Path, fmt: str | None, env: dict[str, str]) -> str:
    old = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    os.environ.update(env)
    try:
        with path.open("w") as stream:
            used = configure_logging("info", fmt, stream)
            logging.getLogger("hub.test").warning("disk %s", "full")
            logging.getLogger("hub.test").debug("not shown")
            for h in root.handlers:
                h.flush()
        return f"{used}|{path.read_text()}"
    finally:
        os.environ.clear()
        os.environ.update(old)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_logs_carry_syslog_priorities_under_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.touch()
    st = path.stat()
    journal = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    assert _log_to(path, None, journal) == "journal|<4>hub.test: disk full\n"
    with path.open() as f:
        assert under_journal(f, journal)
        assert not under_journal(f, {"JOURNAL_STREAM": "1:2"})
    text = _log_to(path, None, {"JOURNAL_STREAM": "1:2"})
    assert re.fullmatch(r"text\|\S+ \S+ WARNING hub\.test: disk full\n", text)
    used, line = _log_to(path, None, {"COOPWATT_LOG_FORMAT": "json"}).split("|", 1)
    entry = json.loads(line)
    assert used == "json"
    assert (entry["level"], entry["logger"], entry["msg"]) == ("warning", "hub.test", "disk full")


# -- the programs under a stand-in systemd ---------------------------------------------------


def _env(systemd: FakeSystemd, watchdog_s: float) -> dict[str, str]:
    return {
        **os.environ,
        "NOTIFY_SOCKET": str(systemd.path),
        "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
    }


def test_hub_ready_watchdog_reload_and_stop(
    systemd: FakeSystemd, mosquitto: RunningBroker, tmp_path: Path
) -> None:
    config = tmp_path / "hub.toml"
    good = f'coop = "sd-hub"\ndb = "hub.db"\n[broker]\nurl = "{mosquitto.url}"\n'
    config.write_text(good)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "coopwatt-hub"), "run", "--config", str(config)],
            stdout=out, stderr=out, env=_env(systemd, 2.0),
        )  # fmt: skip
    try:
        assert systemd.until("READY")["STATUS"] == "ingesting for sd-hub"
        assert systemd.next(skip_watchdog=False) == {"WATCHDOG": "1"}
        # A broken config is refused and the hub goes on with the one it has...
        config.write_text(good + "typo = 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the running config" in log.read_text(), WAIT_S, "refusal")
        # ...a good one is taken up: RELOADING, then READY again.
        config.write_text(good.replace('url = "', 'keepalive_s = 20\nurl = "'))
        proc.send_signal(signal.SIGHUP)
        assert "RELOADING" in systemd.next()
        assert "READY" in systemd.next()
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING" in systemd.until("STOPPING")
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "unknown key broker.typo" in text
    assert "Traceback" not in text


def test_agent_ready_watchdog_reload_and_stop(
    systemd: FakeSystemd, mosquitto: RunningBroker, tmp_path: Path
) -> None:
    with simulated_home(tmp_path, "sd-agent", mosquitto.url) as home:
        log = home.config.parent / "agent.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "coopwatt-agent"), "run", "--config", str(home.config),
                 "--drain-timeout", "0.2"],
                stdout=out, stderr=out, env=_env(systemd, 2.0),
            )  # fmt: skip
        try:
            assert "polling 3 device(s)" in systemd.until("READY")["STATUS"]
            assert systemd.next(skip_watchdog=False) == {"WATCHDOG": "1"}
            good = home.config.read_text()
            home.config.write_text(good.replace("[broker]", "[broker]\nprotocol = 7"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "keeping the running config" in log.read_text(), WAIT_S, "refusal")
            home.config.write_text(good.replace("keepalive_s = 5", "keepalive_s = 7"))
            proc.send_signal(signal.SIGHUP)
            assert "RELOADING" in systemd.next()
            assert "READY" in systemd.next()
            proc.send_signal(signal.SIGTERM)
            systemd.until("STOPPING")
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in log.read_text()


# -- the unit files ------------------------------------------------------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name", ["coopwatt-agent.service", "coopwatt-hub.service"])
def test_units_are_notify_services_with_a_watchdog_and_hardening(name: str) -> None:
    service = _unit(name)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 30
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # config mistakes: no restart loop
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] == "coopwatt"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/coopwatt"
    assert service["CapabilityBoundingSet"] == ""


def test_the_agent_may_use_gpio_and_serial_ports() -> None:
    service = _unit("coopwatt-agent.service")["Service"]
    assert set(service["SupplementaryGroups"].split()) == {"gpio", "dialout"}
    # /dev/gpiochip* and /dev/ttyUSB* must stay reachable: PrivateDevices= hides them, and
    # ProtectClock= (like any DeviceAllow=) narrows device access to a list without them.
    for key in ("PrivateDevices", "ProtectClock", "DeviceAllow", "DevicePolicy"):
        assert key not in service, key
    assert service["WorkingDirectory"] == "/var/lib/coopwatt"  # lgpio's pipes go there


def test_mosquitto_drop_in_runs_the_generated_config() -> None:
    drop_in = _unit("mosquitto.service.d/coopwatt.conf")["Service"]
    assert drop_in["ExecStart"].endswith("-c /etc/coopwatt/broker/mosquitto.conf")


def _installed_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this venv, as it would be on an installed machine."""
    text = (UNITS / name).read_text().replace("/opt/coopwatt/bin/", f"{BIN}/")
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("name", ["coopwatt-agent.service", "coopwatt-hub.service"])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, name: str) -> None:
    unit = _installed_copy(tmp_path, name)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys too: any message at all is a finding.
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("name", ["coopwatt-agent.service", "coopwatt-hub.service"])
def test_systemd_rates_the_hardening_ok(tmp_path: Path, name: str) -> None:
    unit = _installed_copy(tmp_path, name)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot rate units offline: {result.stderr[:200]}")
    assert float(found.group(1)) <= 4.0, result.stdout


def test_bundle_and_units_agree() -> None:
    """provision ships systemd/coopwatt-agent.service as is; the first-boot unit runs once."""
    firstboot = configparser.ConfigParser(interpolation=None)
    unit = ROOT / "firmware-configs" / "firstboot" / "coopwatt-firstboot.service"
    firstboot.read_string(unit.read_text())
    assert firstboot["Service"]["Type"] == "oneshot"
    assert "network-online.target" in firstboot["Unit"]["After"]
