"""The installer's first boot: the bundle's scripts run for real against a stand-in root.

``COOPWATT_ROOT`` prefixes every path the scripts write; the commands that would change the
machine itself (useradd, chown, systemctl, python3 -m venv, pip) are stubs on PATH that record
how they were called. The cloud-init ``user-data`` is checked with ``cloud-init schema`` when
installed, and the scripts with shellcheck when installed.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.ops.broker_config import write_broker_config
from hub.ops.provision import Layout, provision_home

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "firmware-configs" / "firstboot"
COOP = "boot-coop"

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $*" in
    "getent group coopwatt") exit 2 ;;
    "getent group "*) exit 0 ;;
    "id -u coopwatt") exit 1 ;;
    "python3 -m venv "*)
        mkdir -p "$3/bin"
        printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n' > "$3/bin/pip"
        chmod +x "$3/bin/pip" ;;
esac
exit 0
"""


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    layout = Layout(tmp_path / "broker")
    write_broker_config(layout.root, COOP, ["hub.example.org"], persistence_dir=tmp_path / "p")
    devices = tmp_path / "devices.toml"
    devices.write_text('[[devices]]\nname = "grid-meter"\nprofile = "eastron-sdm630"\n'
                       'modbus = "tcp://192.168.1.50:502"\n')  # fmt: skip
    return provision_home(layout, "home-4", tmp_path / "bundles", devices_file=devices).bundle


class Machine:
    """A stand-in root and PATH stubs; ``run`` runs a script as first boot would."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.root.mkdir()
        self.calls = tmp / "calls.log"
        self.calls.touch()
        stubs = tmp / "stubs"
        stubs.mkdir()
        for name in ("getent", "groupadd", "useradd", "usermod", "id", "chown", "systemctl",
                     "python3"):  # fmt: skip
            (stubs / name).write_text(STUB)
            (stubs / name).chmod(0o755)
        self.env = {
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "CALLS": str(self.calls),
            "COOPWATT_ROOT": str(self.root),
        }

    def run(self, script: Path) -> str:
        result = subprocess.run(
            ["bash", str(script)],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def log(self) -> list[str]:
        return self.calls.read_text().splitlines()

    def mode(self, path: str) -> int:
        return (self.root / path.lstrip("/")).stat().st_mode & 0o777


def assert_agent_installed(m: Machine, bundle: Path) -> None:
    etc = m.root / "etc" / "coopwatt"
    assert (etc / "agent.toml").read_bytes() == (bundle / "coopwatt" / "agent.toml").read_bytes()
    assert m.mode("/etc/coopwatt/agent.password") == 0o600
    assert m.mode("/etc/coopwatt/client.key") == 0o600
    assert m.mode("/etc/coopwatt/agent.toml") == 0o640
    assert m.mode("/etc/coopwatt/ca.crt") == 0o644
    assert m.mode("/etc/coopwatt") == 0o750
    unit = m.root / "etc" / "systemd" / "system" / "coopwatt-agent.service"
    assert unit.read_bytes() == (ROOT / "systemd" / "coopwatt-agent.service").read_bytes()
    calls = m.log()
    assert "groupadd --system coopwatt" in calls
    assert any(c.startswith("useradd --system --gid coopwatt") for c in calls)
    assert "usermod -a -G gpio coopwatt" in calls and "usermod -a -G dialout coopwatt" in calls
    assert "chown coopwatt:coopwatt " + str(etc / "agent.password") in calls
    assert f"python3 -m venv {m.root}/opt/coopwatt" in calls
    assert "systemctl daemon-reload" in calls
    assert "systemctl enable coopwatt-agent.service" in calls
    # The household's page: its unit runs from the first boot, with the bundle's one-time code.
    web = m.root / "etc" / "systemd" / "system" / "coopwatt-agent-web.service"
    assert web.read_bytes() == (ROOT / "systemd" / "coopwatt-agent-web.service").read_bytes()
    assert "systemctl enable coopwatt-agent-web.service" in calls
    assert "systemctl restart coopwatt-agent-web.service" in calls
    code = m.root / "var" / "lib" / "coopwatt" / "household-code"
    assert m.mode("/var/lib/coopwatt/household-code") == 0o600
    assert "chown coopwatt:coopwatt " + str(code) in calls
    # The same code the household's sheet names.
    assert code.read_text().strip() in (bundle / "household.txt").read_text()


def test_firstrun_then_firstboot_service(bundle: Path, tmp_path: Path) -> None:
    """Images customised through cmdline.txt: firstrun.sh early, firstboot.sh once online."""
    m = Machine(tmp_path)
    boot = tmp_path / "bootfs"
    shutil.copytree(bundle / "coopwatt", boot / "coopwatt")
    (boot / "firstrun.sh").write_text(f"#!/bin/bash\ntouch {tmp_path}/imager-ran\n")
    (boot / "cmdline.txt").write_text(
        "console=serial0,115200 root=PARTUUID=abc-02 rootwait quiet "
        "systemd.run=/boot/firmware/coopwatt/firstrun.sh systemd.run_success_action=reboot "
        "systemd.unit=kernel-command-line.target\n"
    )
    m.run(boot / "coopwatt" / "firstrun.sh")
    # The secrets left the FAT partition for a root-only folder; first boot is set up.
    assert not (boot / "coopwatt" / "agent.password").exists()
    assert not (boot / "coopwatt" / "client.key").exists()
    assert not (boot / "coopwatt" / "household-code").exists()
    stage = m.root / "var" / "lib" / "coopwatt-firstboot"
    assert stage.stat().st_mode & 0o777 == 0o700
    assert (stage / "agent.password").stat().st_mode & 0o777 == 0o600
    assert "systemctl enable coopwatt-firstboot.service" in m.log()
    assert (tmp_path / "imager-ran").exists()
    assert (boot / "cmdline.txt").read_text() == (
        "console=serial0,115200 root=PARTUUID=abc-02 rootwait quiet\n"
    )
    # Next boot, with a network: coopwatt-firstboot.service runs the staged script.
    out = m.run(stage / "firstboot.sh")
    assert_agent_installed(m, bundle)
    assert "pip install --quiet --upgrade coopwatt[agent,web]" in m.log()
    assert "systemctl restart coopwatt-agent.service" in m.log()  # devices were configured
    assert "systemctl disable coopwatt-firstboot.service" in m.log()
    assert not stage.exists()
    assert "done for home home-4" in out


def test_cloud_init_user_data_carries_the_whole_bundle(bundle: Path, tmp_path: Path) -> None:
    text = (bundle / "user-data").read_text()
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    m = Machine(tmp_path)
    for entry in data["write_files"]:
        name = Path(entry["path"]).name
        content = base64.b64decode(entry["content"])
        assert content == (bundle / "coopwatt" / name).read_bytes(), name
        secret = name in ("agent.password", "client.key", "agent.toml", "household-code")
        assert entry["permissions"] == ("0600" if secret else entry["permissions"])
        # what cloud-init does with it:
        target = m.root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(int(entry["permissions"], 8))
    assert data["runcmd"] == [["bash", "/var/lib/coopwatt-firstboot/firstboot.sh"]]
    m.run(m.root / "var" / "lib" / "coopwatt-firstboot" / "firstboot.sh")
    assert_agent_installed(m, bundle)
    assert not (m.root / "var" / "lib" / "coopwatt-firstboot").exists()


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init not installed")
def test_cloud_init_accepts_the_user_data(bundle: Path) -> None:
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(bundle / "user-data")],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_run_by_hand_again_keeps_an_edited_config(bundle: Path, tmp_path: Path) -> None:
    m = Machine(tmp_path)
    etc = m.root / "etc" / "coopwatt"
    etc.mkdir(parents=True)
    (etc / "agent.toml").write_text("# commissioned by the installer\n")
    copy = tmp_path / "usb" / "coopwatt"
    shutil.copytree(bundle / "coopwatt", copy)
    out = m.run(copy / "firstboot.sh")
    assert (etc / "agent.toml").read_text() == "# commissioned by the installer\n"
    assert (etc / "agent.toml.new").read_bytes() == (
        bundle / "coopwatt" / "agent.toml"
    ).read_bytes()
    assert "kept" in out
    assert not (copy / "agent.password").exists() and not (copy / "client.key").exists()
    assert not (copy / "household-code").exists()
    assert "systemctl restart coopwatt-agent.service" not in m.log()  # no devices in the kept one
    assert "coopwatt-agent check" in out


def test_a_wheel_in_the_bundle_is_installed_from_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "broker")
    write_broker_config(layout.root, COOP, ["hub.example.org"], persistence_dir=tmp_path / "p")
    wheel = tmp_path / "coopwatt-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    bundle = provision_home(layout, "home-5", tmp_path / "bundles", wheel=wheel).bundle
    assert (bundle / "coopwatt" / wheel.name).read_bytes() == b"PK fake wheel"
    m = Machine(tmp_path)
    m.run(bundle / "coopwatt" / "firstboot.sh")
    expected = f"pip install --quiet --upgrade {bundle}/coopwatt/{wheel.name}[agent,web]"
    assert expected in m.log()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", "-s", "bash", "firstboot.sh", "firstrun.sh"],
        cwd=SCRIPTS, check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_scripts_parse() -> None:
    for name in ("firstboot.sh", "firstrun.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True, timeout=30)


def test_a_household_that_set_up_its_page_keeps_its_password(bundle: Path, tmp_path: Path) -> None:
    """The bundle run again (new credentials) must not hand out a code for a page in use."""
    m = Machine(tmp_path)
    web = m.root / "var" / "lib" / "coopwatt" / "web"
    web.mkdir(parents=True)
    (web / "household.json").write_text("{}")
    m.run(bundle / "coopwatt" / "firstboot.sh")
    assert not (m.root / "var" / "lib" / "coopwatt" / "household-code").exists()
