"""coopwatt-hub: help, export and summary through click's CliRunner; run as a real process."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hub.app import serve
from hub.cli.main import main
from hub.config import load_config
from hub.ops.export import export_csv
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.consent import PurposeGrant, Resolution, next_version, nothing_shared
from protocol.payloads import Ack, HubStatus, Reading, ReadingBatch
from protocol.quantities import Role
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic
from sim.broker import RunningBroker as Broker
from tests.test_hub_ingest import Probe
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS
REPO = Path(__file__).resolve().parent.parent
IMPORT = "energy_import_wh"


def make_db(path: Path, coop: str = "coop-cli") -> Path:
    with Store.open(path, coop) as store:
        store.insert_batches(
            [
                (
                    "home-1",
                    ReadingBatch(
                        "home-1",
                        T0,
                        [
                            Reading("grid", 1, T0, Role.GRID, "g1", {IMPORT: 100.0}),
                            Reading("grid", 2, T0 + 1, Role.GRID, "g1", {IMPORT: 160.0}),
                            Reading("pv", 1, T0, Role.PV, "g1", {"energy_wh": 5.0, "power_w": 80}),
                        ],
                    ),
                )
            ],
            T0,
        )
    return path


def assert_clean_error(result: Result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert needle in lines[0]


# -- help -------------------------------------------------------------------------------------


def test_help_explains_the_commands() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for word in ("run", "export", "summary", "exactly once", "coopwatt-hub run --config"):
        assert word in result.output
    run_help = runner.invoke(main, ["run", "--help"])
    assert run_help.exit_code == 0
    assert "SIGTERM" in run_help.output
    assert "password_file" in run_help.output
    export_help = runner.invoke(main, ["export", "-h"])
    assert export_help.exit_code == 0
    assert "ts_ms (UTC epoch milliseconds)" in export_help.output
    assert "never created or changed" in export_help.output
    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0
    assert "coopwatt-hub" in version.output


# -- export and summary -----------------------------------------------------------------------


def test_export_to_stdout_matches_the_library(tmp_path: Path) -> None:
    db = make_db(tmp_path / "hub.db")
    result = CliRunner().invoke(main, ["export", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    expected = io.StringIO()
    with Store.open_existing(db) as store:
        export_csv(store, expected)
    assert result.stdout == expected.getvalue()
    assert result.stdout.count("\n") == 4


def test_export_to_file(tmp_path: Path) -> None:
    db = make_db(tmp_path / "hub.db")
    out = tmp_path / "readings.csv"
    result = CliRunner().invoke(main, ["export", "--db", str(db), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("home,device,role,seq,ts_ms,power_w,")
    assert "exported 3 readings" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_export_missing_db_is_a_clean_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["export", "--db", str(missing), "-o", str(out)])
    assert_clean_error(result, "no such database file")
    assert not missing.exists()
    assert not out.exists()


def test_export_refuses_files_that_are_not_hub_databases(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 20)
    assert_clean_error(
        CliRunner().invoke(main, ["export", "--db", str(text)]), "not a coopwatt hub database"
    )
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    assert_clean_error(
        CliRunner().invoke(main, ["export", "--db", str(other)]), "not a coopwatt hub database"
    )
    assert other.read_bytes() == before
    assert_clean_error(CliRunner().invoke(main, ["export", "--db", str(tmp_path)]), "no such")


def test_export_unwritable_output(tmp_path: Path) -> None:
    db = make_db(tmp_path / "hub.db")
    result = CliRunner().invoke(
        main, ["export", "--db", str(db), "-o", str(tmp_path / "no-dir" / "x.csv")]
    )
    assert_clean_error(result, "cannot write")


def test_bad_format_is_a_usage_error(tmp_path: Path) -> None:
    db = make_db(tmp_path / "hub.db")
    result = CliRunner().invoke(main, ["export", "--db", str(db), "--format", "xlsx"])
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output


def test_summary(tmp_path: Path) -> None:
    db = make_db(tmp_path / "hub.db")
    result = CliRunner().invoke(main, ["summary", "--db", str(db)])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["home", "readings", "imported_wh", "exported_wh", "generated_wh"]
    assert row.split() == ["home-1", "3", "60.0", "0.0", "0.0"]
    assert_clean_error(
        CliRunner().invoke(main, ["summary", "--db", str(tmp_path / "x.db")]), "no such"
    )


# -- run ----------------------------------------------------------------------------------------


def write_config(tmp_path: Path, coop: str, url: str, db: str = "hub.db") -> Path:
    (tmp_path / "hub.password").write_text("hunter2-secret\n")
    path = tmp_path / "hub.toml"
    path.write_text(
        f'coop = "{coop}"\ndb = "{db}"\n[broker]\nurl = "{url}"\n'
        'username = "hub"\npassword_file = "hub.password"\nprotocol = 5\n'
    )
    return path


def test_run_with_a_bad_config_is_a_clean_error(tmp_path: Path) -> None:
    runner = CliRunner()
    assert_clean_error(
        runner.invoke(main, ["run", "--config", str(tmp_path / "missing.toml")]),
        "cannot read config file",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('coop = "c"\ndb = "x.db"\n[broker]\nurl = "http://nope"\n')
    assert_clean_error(runner.invoke(main, ["run", "--config", str(bad)]), "broker.url")


def test_run_refuses_another_coops_database(tmp_path: Path) -> None:
    make_db(tmp_path / "hub.db", coop="someone-else")
    config = write_config(tmp_path, "coop-cli", "mqtt://127.0.0.1:1")
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert_clean_error(result, "'someone-else', not 'coop-cli'")


def test_serve_runs_until_stopped(mosquitto: Broker, tmp_path: Path) -> None:
    coop = f"t-{uuid.uuid4().hex[:12]}"
    config = load_config(write_config(tmp_path, coop, mosquitto.url))
    probe = Probe(mosquitto, coop)
    stop = threading.Event()
    outcome: dict[str, dict[str, int]] = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("stats", serve(config, stop, clock=ManualClock(T0)))
    )
    thread.start()
    try:
        probe.wait_for(lambda ms: any(t == hub_topic(coop, HubTopic.STATUS) for t, _ in ms))
        # The hub stores only what a home's grant shares: the household grants first.
        grant = next_version(
            nothing_shared("home-1"), {"grid": {"settlement": PurposeGrant(Resolution.RAW, 30)}}, T0
        )
        probe.publish(home_topic(coop, "home-1", HomeTopic.CONSENT), encode(grant), retain=True)
        one = Reading("grid", 1, T0, Role.GRID, "g1", {"power_w": 1})
        batch = ReadingBatch("home-1", T0, [one])
        probe.publish(home_topic(coop, "home-1", HomeTopic.READINGS), encode(batch))
        assert probe.wait_acks("home-1", 1) == [Ack(home="home-1", acked={"grid": [[1, 1]]})]
    finally:
        stop.set()
        thread.join(10)
    try:
        assert not thread.is_alive()
        # The hub publishes "offline" as it stops; the broker may hand it on after serve()
        # has returned, so wait for it rather than close the probe at once.
        probe.wait_for(lambda ms: probe.hub_states()[-1:] == ["offline"])
    finally:
        probe.close()
    probe_clear = Probe(mosquitto, coop)  # leave no retained grant behind
    probe_clear.publish(home_topic(coop, "home-1", HomeTopic.CONSENT), b"", retain=True)
    probe_clear.close()
    assert outcome["stats"]["stored"] == 1
    assert probe.hub_states() == ["online", "offline"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_run_process_stops_cleanly_on_sigterm(mosquitto: Broker, tmp_path: Path) -> None:
    coop = f"t-{uuid.uuid4().hex[:12]}"
    config = write_config(tmp_path, coop, mosquitto.url)
    probe = Probe(mosquitto, coop)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "run",
            "--config",
            str(config),
            "--log-level",
            "debug",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        probe.wait_for(lambda ms: probe.hub_states() == ["online"])
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        probe.close()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"hub starting version=0.1.0 coop={coop}" in stderr
    assert "received SIGTERM, stopping" in stderr
    assert "hunter2" not in stderr
    assert stdout == ""
    assert (tmp_path / "hub.db").exists()
    assert [decode(HubStatus, p).state for p in probe.on(hub_topic(coop, HubTopic.STATUS))] == [
        "online",
        "offline",
    ]
