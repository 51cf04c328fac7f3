"""Provisioning without a broker: ids, hashes, files and their modes, the agent config, the CLI."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config
from agent.web.household import Household
from hub.cli.main import main
from hub.ops.broker_config import MAX_PACKET_BYTES, write_broker_config
from hub.ops.pki import cert_common_name, cert_serial
from hub.ops.provision import (
    HUB_USER,
    OPERATOR_USER,
    Layout,
    PasswordFile,
    ProvisionError,
    check_home_id,
    default_broker_user,
    deprovision_home,
    hash_password,
    provision_home,
    provisioned_homes,
    verify_password,
)
from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.topics import ID_RE
from tests.devices_toml import write_grid_meter_file

COOP = "ops-coop"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "broker")
    write_broker_config(
        layout.root,
        COOP,
        ["hub.example.org", "192.0.2.10"],
        persistence_dir=tmp_path / "persist",
    )
    return layout


# -- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["+", "#", "home/+", "home/#", "a/b", "home-1/readings", "Home-1", "", "-home", "home 1",
     "home\x00", "h" * 33, "_hub", "$SYS", "home%u", "héme", "home:1", "*"],
)  # fmt: skip
def test_ids_that_could_escape_a_topic_level_are_refused(bad: str) -> None:
    with pytest.raises(ProvisionError, match="not allowed"):
        check_home_id(bad)


@given(st.text(max_size=40))
def test_only_contract_ids_are_accepted(text: str) -> None:
    if ID_RE.fullmatch(text):
        assert check_home_id(text) == text
    else:
        with pytest.raises(ProvisionError):
            check_home_id(text)


def test_provision_refuses_a_bad_id_before_touching_anything(
    layout: Layout, tmp_path: Path
) -> None:
    before = layout.passwd.read_bytes()
    with pytest.raises(ProvisionError):
        provision_home(layout, "home/#", tmp_path / "bundles")
    assert layout.passwd.read_bytes() == before
    assert not (tmp_path / "bundles").exists()


# -- password hashes -------------------------------------------------------------------------


def test_our_hash_has_mosquittos_format_and_verifies() -> None:
    hashed = hash_password("s3cret")
    _, kind, iterations, salt, digest = hashed.split("$")
    assert (kind, iterations) == ("7", "101")
    assert len(salt) == 16 and len(digest) == 88  # base64 of 12 and 64 bytes
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret ", hashed)
    assert hash_password("s3cret") != hashed  # salted


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_we_verify_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """The same algorithm both ways: a real Mosquitto accepting our hashes is tested in
    test_security_broker.py."""
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "alice", "wonder land"], check=True)
    hashed = PasswordFile(path).get("alice")
    assert hashed is not None and hashed.startswith("$7$")
    assert verify_password("wonder land", hashed)
    assert not verify_password("wonderland", hashed)


def test_password_file_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# a comment\nbob:$7$101$x$y\n")
    f = PasswordFile(path)
    f.set("carol", "$7$101$a$b")
    f.set("bob", "$7$101$c$d")
    f.save()
    assert path.read_text() == "# a comment\nbob:$7$101$c$d\ncarol:$7$101$a$b\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert PasswordFile(path).remove("bob")
    assert not PasswordFile(path).remove("nobody")


# -- broker-config --------------------------------------------------------------------------


def test_broker_config_writes_a_complete_set(layout: Layout) -> None:
    conf = layout.conf.read_text()
    for line in (
        "allow_anonymous false",
        "per_listener_settings true",
        f"password_file {layout.passwd.resolve()}",
        f"acl_file {layout.acl.resolve()}",
        f"acl_file {layout.acl_local.resolve()}",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "log_type subscribe",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "persistence true",
        "listener 8883 \n",
        "require_certificate true",
        f"crlfile {(layout.certs / 'crl.pem').resolve()}",
        "listener 1883 127.0.0.1",
    ):
        assert line in conf, line
    assert MAX_PAYLOAD_BYTES < MAX_PACKET_BYTES <= MAX_PAYLOAD_BYTES + 8192
    assert "\nlog_type debug\n" not in conf  # only with --log-denied
    # The password file and the ACLs are per listener: the network listener's come first.
    tls, local = conf.split("listener 1883 127.0.0.1")
    assert "password_file" not in tls and f"acl_file {layout.acl.resolve()}\n" in tls
    assert f"acl_file {layout.acl_local.resolve()}" in local and "use_identity" not in local
    acl = layout.acl.read_text()
    assert "\npattern " not in acl and "topic readwrite" not in acl
    assert f"user {HUB_USER}\n" not in acl  # the hub has no rights on the network listener
    assert f"user {OPERATOR_USER}\n" in acl
    local_acl = layout.acl_local.read_text()
    assert f"user {HUB_USER}\n" in local_acl and "\npattern " not in local_acl
    assert set(PasswordFile(layout.passwd).users()) == {HUB_USER, OPERATOR_USER}
    hub_table = tomllib.loads((layout.clients / "hub" / "broker.toml").read_text())["broker"]
    assert hub_table["url"] == "mqtt://127.0.0.1:1883" and hub_table["username"] == HUB_USER
    assert not (layout.clients / "hub" / "client.crt").exists()  # no certificate for the hub
    assert not (layout.clients / "hub" / "client.key").exists()
    operator = tomllib.loads((layout.clients / "operator" / "operator.toml").read_text())
    assert operator["coop"] == COOP
    assert operator["broker"]["url"] == "mqtts://hub.example.org:8883"


def test_broker_config_again_keeps_the_ca_and_accounts(layout: Layout, tmp_path: Path) -> None:
    provision_home(layout, "home-1", tmp_path / "bundles")
    ca_key = (layout.ca_dir / "ca.key").read_bytes()
    server = (layout.certs / "server.crt").read_bytes()
    passwd = layout.passwd.read_bytes()
    again = write_broker_config(
        layout.root, COOP, ["hub.example.org", "192.0.2.10"], persistence_dir=tmp_path / "p"
    )
    assert again.new_accounts == ()
    assert not again.server_cert_issued
    assert (layout.ca_dir / "ca.key").read_bytes() == ca_key
    assert (layout.certs / "server.crt").read_bytes() == server
    assert layout.passwd.read_bytes() == passwd
    renamed = write_broker_config(layout.root, COOP, ["hub2.example.org"], persistence_dir=tmp_path)
    assert renamed.server_cert_issued
    with pytest.raises(ProvisionError, match="cooperative"):
        write_broker_config(layout.root, "other-coop", ["x.example.org"])


# -- provision / deprovision ------------------------------------------------------------------


def test_provision_writes_account_certificate_config_and_bundle(
    layout: Layout, tmp_path: Path
) -> None:
    devices = write_grid_meter_file(tmp_path, "tcp://192.168.1.50:502")
    result = provision_home(layout, "home-7", tmp_path / "bundles", devices_file=devices)
    files = result.bundle / "coopwatt"
    password = (files / "agent.password").read_text().strip()
    hashed = PasswordFile(layout.home_passwd).get("home-7")
    assert hashed is not None and verify_password(password, hashed)
    assert layout.home_passwd.stat().st_mode & 0o777 == 0o600
    assert PasswordFile(layout.passwd).get("home-7") is None  # no login on the loopback listener
    acl = layout.acl.read_text()
    assert f"user home-7\ntopic write coopwatt/{COOP}/homes/home-7/readings\n" in acl
    assert f"topic read coopwatt/{COOP}/homes/home-7/ack\n" in acl
    assert cert_common_name((files / "client.crt").read_bytes()) == "home-7"
    assert cert_serial((files / "client.crt").read_bytes()) == result.serial
    for name in ("agent.password", "client.key", "agent.toml", "household-code"):
        assert (files / name).stat().st_mode & 0o777 == 0o600, name
    # The household's sheet: the page's first-visit code, in the form the page accepts.
    code = (files / "household-code").read_text().strip()
    assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", code)
    sheet = (result.bundle / "household.txt").read_text()
    assert f"First-visit code:                {code}" in sheet
    # ... which the page on the Pi takes, as the household types it.
    page = Household(files / "household-code", tmp_path / "household.json")
    assert page.check_code(code.lower().replace("-", " "))
    assert (result.bundle / "household.txt").stat().st_mode & 0o777 == 0o600
    assert (result.bundle / "user-data").stat().st_mode & 0o777 == 0o600
    assert result.bundle.stat().st_mode & 0o777 == 0o700
    assert "home-7" in provisioned_homes(layout)
    # The agent takes the config as first boot installs it (the bundle's folder as /etc/coopwatt).
    text = (files / "agent.toml").read_text()
    assert 'password_file = "/etc/coopwatt/agent.password"' in text
    config = parse_config(tomllib.loads(text.replace("/etc/coopwatt/", f"{files}/")), Path("/"))
    assert (config.coop, config.home) == (COOP, "home-7")
    assert config.broker.url == "mqtts://hub.example.org:8883"
    assert (config.broker.username, config.broker.password) == ("home-7", password)
    assert config.broker.cert_file == f"{files}/client.crt"
    assert [d.name for d in config.devices] == ["grid-meter"]


def test_without_devices_the_config_says_how_to_add_them(layout: Layout, tmp_path: Path) -> None:
    result = provision_home(layout, "home-8", tmp_path / "bundles")
    files = result.bundle / "coopwatt"
    text = (files / "agent.toml").read_text()
    assert "coopwatt-agent scan" in text
    with pytest.raises(ConfigError, match="devices"):
        parse_config(tomllib.loads(text.replace("/etc/coopwatt/", f"{files}/")), Path("/"))


def test_bad_devices_file_is_refused(layout: Layout, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('coop = "x"\n')
    with pytest.raises(ProvisionError, match=r"\[\[devices\]\]"):
        provision_home(layout, "home-9", tmp_path / "bundles", devices_file=bad)
    bad.write_text("[[devices]\n")
    with pytest.raises(ProvisionError, match="not valid TOML"):
        provision_home(layout, "home-9", tmp_path / "bundles", devices_file=bad)


def test_provisioning_twice_needs_rotate(layout: Layout, tmp_path: Path) -> None:
    first = provision_home(layout, "home-1", tmp_path / "bundles")
    old_hash = PasswordFile(layout.home_passwd).get("home-1")
    with pytest.raises(ProvisionError, match="already provisioned"):
        provision_home(layout, "home-1", tmp_path / "bundles")
    second = provision_home(layout, "home-1", tmp_path / "bundles", rotate=True)
    assert second.rotated and second.serial != first.serial
    assert PasswordFile(layout.home_passwd).get("home-1") != old_hash
    assert first.serial in layout.ca(COOP).revoked_serials()
    assert (layout.certs / "crl.pem").read_bytes() == (layout.ca_dir / "crl.pem").read_bytes()


def test_deprovision_removes_and_revokes(layout: Layout, tmp_path: Path) -> None:
    result = provision_home(layout, "home-1", tmp_path / "bundles")
    gone = deprovision_home(layout, "home-1")
    assert gone.removed_account and gone.revoked_serial == result.serial
    assert PasswordFile(layout.home_passwd).get("home-1") is None
    assert "home-1" not in layout.acl.read_text()
    assert "home-1" not in provisioned_homes(layout)
    assert set(PasswordFile(layout.passwd).users()) == {HUB_USER, OPERATOR_USER}
    with pytest.raises(ProvisionError, match="not provisioned"):
        deprovision_home(layout, "home-1")


def test_provision_needs_broker_config_first(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="broker-config"):
        provision_home(Layout(tmp_path / "nothing"), "home-1", tmp_path / "b")


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_provisions_without_ever_showing_the_password(
    layout: Layout, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    out = tmp_path / "bundles"
    result = runner.invoke(
        main, ["provision", "home-3", "--dir", str(layout.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    password = (out / "home-3" / "coopwatt" / "agent.password").read_text().strip()
    key = (out / "home-3" / "coopwatt" / "client.key").read_text()
    assert password not in result.output and password not in caplog.text
    assert "PRIVATE KEY" not in result.output + caplog.text and key not in result.output
    assert "systemctl reload mosquitto" in result.output
    listed = runner.invoke(main, ["homes", "--dir", str(layout.root)])
    assert listed.output.startswith("home-3 ")
    again = runner.invoke(main, ["provision", "home-3", "--dir", str(layout.root)])
    assert again.exit_code == 2
    assert again.output.startswith("Error: ") and "--rotate" in again.output
    bad = runner.invoke(main, ["provision", "home/#", "--dir", str(layout.root)])
    assert bad.exit_code == 2 and "could escape" in bad.output
    gone = runner.invoke(main, ["deprovision", "home-3", "--dir", str(layout.root)])
    assert gone.exit_code == 0 and "certificate revoked" in gone.output


def _broker_config_args(tmp_path: Path) -> list[str]:
    """``broker-config`` into ``tmp_path/b``; as root, since pytest's folders are private to it."""
    return [
        "broker-config", "--coop", COOP, "--dir", str(tmp_path / "b"), "--name", "hub.local",
        "--persistence-dir", str(tmp_path / "p"), "--broker-user", "root",
    ]  # fmt: skip


def test_cli_broker_config(tmp_path: Path) -> None:
    runner = CliRunner()
    args = _broker_config_args(tmp_path)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mqtts://hub.local:8883" in result.output
    assert "created account _hub" in result.output
    clash = runner.invoke(main, [*args, "--local-port", "8883"])
    assert clash.exit_code == 2 and clash.output.startswith("Error: ")


def test_cli_bad_new_options_say_one_line_error(tmp_path: Path) -> None:
    runner = CliRunner()
    args = _broker_config_args(tmp_path)
    for extra, says in (
        (["--bind", "not an address"], "--bind"),
        (["--local-port", "0"], "--local-port"),
    ):
        result = runner.invoke(main, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and says in result.output
        assert result.output.count("\n") == 1, result.output
    ok = runner.invoke(main, [*args, "--bind", "192.0.2.10", "--log-denied"])
    assert ok.exit_code == 0, ok.output
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    assert "listener 8883 192.0.2.10\n" in conf and "log_type debug\n" in conf


# -- what the broker's user must reach; where secrets go --------------------------------------


def test_broker_config_creates_the_persistence_folder(tmp_path: Path) -> None:
    persist = tmp_path / "deep" / "persist"
    write_broker_config(tmp_path / "b", COOP, ["hub.local"], persistence_dir=persist)
    assert persist.is_dir()


def _root_with_mosquitto() -> str:
    import os

    if os.geteuid() != 0 or default_broker_user() is None:
        pytest.skip("needs root and a mosquitto user")
    return "mosquitto"


def test_broker_config_gives_the_persistence_folder_to_the_broker(tmp_path: Path) -> None:
    import os
    import pwd

    user = _root_with_mosquitto()
    base = Path(tempfile.mkdtemp(prefix="coopwatt-persist-"))  # pytest's folders are private
    try:
        os.chmod(base, 0o755)
        persist = base / "persist"
        write_broker_config(
            base / "b", COOP, ["hub.local"], persistence_dir=persist, broker_user=user
        )
        assert persist.stat().st_uid == pwd.getpwnam(user).pw_uid
        assert (base / "b").stat().st_mode & 0o777 == 0o755
        assert (base / "b" / "certs").stat().st_mode & 0o777 == 0o755
    finally:
        shutil.rmtree(base)


def test_broker_config_refuses_folders_the_broker_cannot_reach(tmp_path: Path) -> None:
    import os

    user = _root_with_mosquitto()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    with pytest.raises(ProvisionError, match=r"not searchable by mosquitto.*chmod o\+x"):
        write_broker_config(
            private / "b", COOP, ["hub.local"], persistence_dir=tmp_path / "p", broker_user=user
        )
    with pytest.raises(ProvisionError, match="not searchable"):
        write_broker_config(
            Path("/tmp/coopwatt-never"), COOP, ["hub.local"], persistence_dir=private / "p",
            broker_user=user,
        )  # fmt: skip
    assert not (private / "b").exists()
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["broker-config", "--coop", COOP, "--dir", str(private / "b"), "--name", "hub.local",
         "--persistence-dir", str(tmp_path / "p"), "--broker-user", user],
    )  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("Error: ")


def test_bundles_default_outside_the_working_directory() -> None:
    from hub.cli.ops import provision_cmd

    (out,) = [p for p in provision_cmd.params if p.name == "out_dir"]
    default = Path(str(out.default))
    assert default.is_absolute() and default == Path("/var/lib/coopwatt/bundles")
    root = Path(__file__).resolve().parent.parent
    assert "bundles/" in (root / ".gitignore").read_text().split()


def test_bundle_folder_is_created_private(layout: Layout, tmp_path: Path) -> None:
    provision_home(layout, "home-2", tmp_path / "new" / "bundles")
    assert (tmp_path / "new" / "bundles").stat().st_mode & 0o777 == 0o700


def test_readme_documents_the_broker_options() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for option in ("--bind", "--persistence-dir", "--log-denied", "--out"):
        assert option in readme, option


def test_the_share_group_is_a_secret_kept_across_runs(layout: Layout, tmp_path: Path) -> None:
    hub_text = (layout.clients / "hub" / "broker.toml").read_text()
    (line,) = [ln for ln in hub_text.splitlines() if "shared_group" in ln]
    group = line.split('"')[1]
    assert ID_RE.fullmatch(group) and len(group) >= 24 and group != "hub"
    assert layout.settings.stat().st_mode & 0o777 == 0o600
    write_broker_config(layout.root, COOP, ["hub.example.org"], persistence_dir=tmp_path / "p")
    assert f'"{group}"' in (layout.clients / "hub" / "broker.toml").read_text()


def test_an_older_folder_is_brought_into_line(layout: Layout, tmp_path: Path) -> None:
    """A folder an earlier version wrote: the hub had a certificate, homes were in passwd."""
    ca = layout.ca(COOP)
    hub = layout.clients / "hub"
    issued = ca.issue_client(HUB_USER)
    (hub / "client.crt").write_bytes(issued.cert_pem)
    (hub / "client.key").write_bytes(issued.key_pem)
    provision_home(layout, "home-old", tmp_path / "bundles")
    passwords = PasswordFile(layout.passwd)
    passwords.set("home-old", "$7$101$x$y")
    passwords.save()
    write_broker_config(layout.root, COOP, ["hub.example.org"], persistence_dir=tmp_path / "p")
    assert issued.serial in layout.ca(COOP).revoked_serials()
    assert not (hub / "client.crt").exists() and not (hub / "client.key").exists()
    assert set(PasswordFile(layout.passwd).users()) == {HUB_USER, OPERATOR_USER}
    assert PasswordFile(layout.home_passwd).get("home-old") is not None
