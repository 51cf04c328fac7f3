"""Scale-out: hub ingest workers on an MQTT 5 shared subscription, against the session's Mosquitto.

Each worker here has its own Store (its own SQLite connection to the one database file), as a
separate ``coopwatt-hub run --worker N`` process would.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.app import ingest_with_consent
from hub.cli.main import main as hub_main
from hub.config import ConfigError, parse_config
from hub.consent.book import ConsentBook
from hub.ingest.service import Ingest
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.consent import Purpose, PurposeGrant, Resolution, next_version, nothing_shared
from protocol.session import BrokerSettings
from sim.broker import RunningBroker
from sim.loadgen import Neighbourhood, share_everything, stored_seq_ranges
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_MIDNIGHT_UTC_MS
WAIT_S = 10.0


class Hub:
    """Ingest processes of one coop sharing one database: the primary and extra workers."""

    def __init__(self, broker: RunningBroker, db: Path, coop: str) -> None:
        self.broker, self.db, self.coop = broker, db, coop
        self.clock = ManualClock(T0)
        self.running: list[tuple[Ingest, Store]] = []

    def start(self, name: str, *, shared: bool, primary: bool = True) -> Ingest:
        store = Store.open(self.db, self.coop, clock=self.clock)
        settings = BrokerSettings(self.broker.url, f"{self.coop}-{name}")
        ingest, _ = ingest_with_consent(store, settings, self.coop, self.clock,
                                        shared_group="hub" if shared else None,
                                        primary=primary)  # fmt: skip
        ingest.start()
        assert ingest.connected.wait(WAIT_S)
        self.running.append((ingest, store))
        return ingest

    def stop(self, ingest: Ingest) -> None:
        for i, (running, store) in enumerate(self.running):
            if running is ingest:
                ingest.stop()
                store.close()
                del self.running[i]
                return

    def stop_all(self) -> None:
        for ingest, _ in list(self.running):
            self.stop(ingest)


@pytest.fixture
def hub(mosquitto: RunningBroker, tmp_path: Path) -> Iterator[Hub]:
    h = Hub(mosquitto, tmp_path / "hub.db", f"shared-{uuid.uuid4().hex[:8]}")
    try:
        yield h
    finally:
        h.stop_all()


def drain(hood: Neighbourhood, clock: ManualClock, polls: int) -> None:
    hood.fill_backlog(polls)
    clock.set(clock.now_ms() + polls * 10_000)
    hood.drain(WAIT_S * 2)


def test_workers_share_the_readings_and_each_ack_reaches_its_home(hub: Hub) -> None:
    primary = hub.start("hub", shared=True)
    worker = hub.start("hub-w1", shared=True, primary=False)
    clock = ManualClock(T0)
    hood = Neighbourhood(hub.broker.url, hub.coop, 10, clock, batch_size=20)
    try:
        hood.connect(WAIT_S)  # receipts come from the primary only
        # The worker follows consent too: it has had every home's retained grant.
        assert worker.wait_until(lambda s: s["received"] >= len(hood.homes), WAIT_S)
        drain(hood, clock, 30)
        totals = hood.totals()
    finally:
        hood.close()
    assert primary.wait_idle(WAIT_S) and worker.wait_idle(WAIT_S)
    p, w = primary.stats(), worker.stats()
    assert p["stored"] > 0 and w["stored"] > 0, (p, w)  # the broker shared the batches out
    assert w["acks_sent"] > 0 and w["statuses"] == 0  # the worker acks; statuses are the primary's
    assert p["stored"] + w["stored"] == totals.counts.generated
    assert totals.counts.acked == totals.counts.generated and totals.outstanding == 0
    assert totals.counts.foreign_acks == 0 and hood.rejected_messages == 0
    assert stored_seq_ranges(hub.db) == {k: (n, 1, n) for k, n in hood.expected().items()}


def test_joining_a_shared_group_drops_the_old_plain_subscription(hub: Hub) -> None:
    # The hub ran alone first: its persistent session subscribed to every home's readings.
    alone = hub.start("hub", shared=False)
    hub.stop(alone)
    primary = hub.start("hub", shared=True)  # same client id, same database
    worker = hub.start("hub-w1", shared=True, primary=False)
    clock = ManualClock(T0)
    hood = Neighbourhood(hub.broker.url, hub.coop, 6, clock, batch_size=20)
    try:
        hood.connect(WAIT_S)
        assert worker.wait_until(lambda s: s["received"] >= len(hood.homes), WAIT_S)
        drain(hood, clock, 20)
    finally:
        hood.close()
    assert primary.wait_idle(WAIT_S) and worker.wait_idle(WAIT_S)
    # Through both subscriptions, every batch would have reached the primary once more.
    assert primary.stats()["duplicates"] == 0 and worker.stats()["duplicates"] == 0
    assert primary.stats()["stored"] + worker.stats()["stored"] == hood.totals().counts.generated


def test_a_stopped_worker_leaves_no_share_behind(hub: Hub) -> None:
    primary = hub.start("hub", shared=True)
    worker = hub.start("hub-w1", shared=True, primary=False)
    clock = ManualClock(T0)
    hood = Neighbourhood(hub.broker.url, hub.coop, 6, clock, batch_size=10)
    try:
        hood.connect(WAIT_S)
        assert worker.wait_until(lambda s: s["received"] >= len(hood.homes), WAIT_S)
        hub.stop(worker)
        # A persistent session would keep taking its turn at the broker, and those batches would
        # wait unacked for a worker that is gone (the homes would resend only after 30 s).
        drain(hood, clock, 20)
        totals = hood.totals()
    finally:
        hood.close()
    assert totals.counts.resent == 0
    assert primary.wait_idle(WAIT_S) and primary.stats()["stored"] == totals.counts.generated


def test_a_grant_recorded_by_another_worker_is_followed_not_refused(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    a, b = Store.open(db, "coop"), Store.open(db, "coop")
    try:
        grant = share_everything("home-1", T0)
        assert ConsentBook(a).record(grant, T0).recorded
        book_b = ConsentBook(b)  # started before the grant arrived
        book_b._current.clear()
        outcome = book_b.record(grant, T0 + 1)
        assert outcome.recorded and outcome.reason is None
        assert book_b.current("home-1") == grant
        terms = {"pv": {Purpose.FORECAST.value: PurposeGrant(Resolution.RAW, 30)}}
        other = next_version(nothing_shared("home-1"), terms, T0)  # version 1, other content
        book_c = ConsentBook(b)
        book_c._current.clear()
        refused = book_c.record(other, T0 + 2)
        assert not refused.recorded and "recorded differently" in (refused.reason or "")
    finally:
        a.close()
        b.close()


def test_shared_group_in_the_config_and_the_worker_option(tmp_path: Path) -> None:
    base = {"coop": "c", "db": "hub.db", "broker": {"url": "mqtt://localhost"}}
    assert parse_config(base, tmp_path).shared_group is None
    shared = {**base, "broker": {"url": "mqtt://localhost", "shared_group": "hub"}}
    assert parse_config(shared, tmp_path).shared_group == "hub"
    with pytest.raises(ConfigError, match="shared_group"):
        parse_config({**base, "broker": {"url": "mqtt://x", "shared_group": "a/b"}}, tmp_path)
    config = tmp_path / "hub.toml"
    config.write_text('coop = "c"\ndb = "hub.db"\n[broker]\nurl = "mqtt://127.0.0.1:1"\n')
    result = CliRunner().invoke(hub_main, ["run", "--config", str(config), "--worker", "1"])
    assert result.exit_code == 2
    assert "--worker needs broker.shared_group" in result.output


UNIT = Path(__file__).parent.parent / "systemd" / "coopwatt-hub-worker@.service"


def test_the_worker_unit_runs_a_numbered_worker_beside_the_hub(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    unit, service = parser["Unit"], parser["Service"]
    assert service["ExecStart"].endswith("run --config /etc/coopwatt/hub.toml --worker %i")
    assert "coopwatt-hub.service" in unit["After"] and unit["PartOf"] == "coopwatt-hub.service"
    assert service["Type"] == "notify" and service["RestartPreventExitStatus"] == "2"
    assert service["User"] == "coopwatt" and service["ProtectSystem"] == "strict"
    if shutil.which("systemd-analyze") is None:
        return
    bin_dir = Path(sys.executable).parent
    instance = tmp_path / "coopwatt-hub-worker@1.service"
    instance.write_text(UNIT.read_text().replace("/opt/coopwatt/bin/", f"{bin_dir}/"))
    result = subprocess.run(["systemd-analyze", "verify", str(instance)],
                            check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and not result.stderr and not result.stdout, result.stderr
