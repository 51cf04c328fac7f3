"""Fault injection: whatever fails between a meter and the hub, every reading lands exactly once,
and without anyone restarting the agent.

The agent and the hub run as their installed commands in their own processes against a real
Mosquitto that is stopped, killed and frozen; processes are SIGKILLed mid-write; a TCP proxy
drops, delays and blackholes the agent's or the hub's traffic; another process holds the hub's
database. Waits are for progress (readings stored, readings queued, polls served), never for a
fixed time. Every test ends in :meth:`Rig.settle`, which, with the agent still running as the
scenario left it, waits until every poll the simulated devices answered is in the hub's
database with the values they served (the simulator's own record, not the agent's numbering),
then stops the agent and checks that each (device, seq) is stored once, gap-free, and that
``PRAGMA integrity_check`` is ok.

The agent's ack timeout is 5 s here (``ack_timeout_s``; 30 s by default) so that a resend
comes within a test's patience; the scenarios do not depend on its value.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.harness import (
    Home,
    Hub,
    Mosquitto,
    Recorder,
    TcpProxy,
    assert_exactly_once,
    simulated_home,
    wait_all_served_stored,
    wait_for,
)


@contextlib.contextmanager
def readings_watch(port: int, coop: str) -> Iterator[Recorder]:
    """Proof that the agent has sent: the readings the broker hands out, whoever (if anyone)
    else receives them."""
    watch = Recorder(port, [f"coopwatt/{coop}/homes/+/readings"], client_id=f"watch-{coop}")
    try:
        yield watch
    finally:
        watch.close()


@dataclass
class Rig:
    broker: Mosquitto
    hub: Hub
    home: Home
    proxy: TcpProxy | None = None

    def stored(self) -> int:
        return self.hub.count()

    def queued(self) -> int:
        """Readings waiting in the agent's outbox (read beside the running agent; WAL allows it)."""
        if not self.home.outbox.exists():
            return 0
        with contextlib.closing(sqlite3.connect(self.home.outbox, timeout=10)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def progress(self, n: int = 30) -> None:
        """Wait until the hub has stored ``n`` more readings."""
        start = self.stored()
        wait_for(lambda: self.stored() >= start + n, what=f"{n} more readings stored")

    def backlog(self, n: int = 30) -> None:
        """Wait until at least ``n`` readings are queued at the agent (the outage is real)."""
        wait_for(lambda: self.queued() >= n, what=f"{n} readings queued at the agent")

    def settle(self, *, missing_allowed: int = 0) -> int:
        """With the agent running as the scenario left it, wait until every poll the devices
        answered is stored; then stop the agent and check each reading is there exactly once.
        Returns the number of readings checked."""
        wait_all_served_stored(self.hub.db, self.home, missing_allowed=missing_allowed)
        assert self.home.stop(signal.SIGTERM) == 0, self.home.log()
        return assert_exactly_once(self.hub.db, self.home, complete=False)

    def sent_while_hub_away(self, what: str) -> None:
        """Wait until the broker has handed out three batches of the agent's readings while the
        hub cannot take them."""
        with readings_watch(self.broker.port, self.hub.coop) as watch:
            wait_for(lambda: len(watch.messages) >= 3, what=what)


@contextlib.contextmanager
def db_write_lock(path: Path) -> Iterator[None]:
    """Another process's write transaction on the hub's database (a long ``settle`` run, a
    maintenance script): every other writer waits, then gets "database is locked"."""
    with contextlib.closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")


@contextlib.contextmanager
def make_rig(
    tmp_path: Path, *, proxy_for: Literal["agent", "hub"] | None = None, broker_up: bool = True
) -> Iterator[Rig]:
    """Broker, hub and one home's agent, all running; ``proxy_for`` puts the agent's or the
    hub's connection through a :class:`TcpProxy` the test can cut."""
    coop = f"f-{uuid.uuid4().hex[:10]}"
    broker = Mosquitto(tmp_path / "broker")
    if broker_up:
        broker.start()
    proxy = TcpProxy(broker.port) if proxy_for is not None else None
    proxied = f"mqtt://127.0.0.1:{proxy.port}" if proxy is not None else broker.url
    hub = Hub(tmp_path, coop, proxied if proxy_for == "hub" else broker.url)
    hub.start()
    try:
        with simulated_home(
            tmp_path, coop, proxied if proxy_for == "agent" else broker.url
        ) as home:
            home.start()
            yield Rig(broker, hub, home, proxy)
    finally:
        hub.stop(signal.SIGKILL)
        if proxy is not None:
            proxy.close()
        broker.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as r:
        r.progress(30)
        yield r


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path, proxy_for="agent") as r:
        r.progress(30)
        yield r


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_broker_stopped_or_killed_then_restarted(rig: Rig, sig: signal.Signals) -> None:
    rig.broker.stop(sig)
    rig.backlog(40)
    rig.broker.start()
    rig.progress(60)
    assert rig.settle() > 50


def test_broker_hung_then_resumed(rig: Rig) -> None:
    rig.broker.send(signal.SIGSTOP)
    rig.backlog(250)  # over 5 s: long enough for keepalives to fail on both sides
    rig.broker.send(signal.SIGCONT)
    rig.progress(100)
    assert rig.settle() > 50


def test_hub_killed_mid_ingest_repeatedly(rig: Rig) -> None:
    for _ in range(5):
        rig.progress(15)
        rig.hub.stop(signal.SIGKILL)
        rig.backlog(10)
        rig.hub.start()
    rig.progress(30)
    assert rig.settle() > 50


def test_agent_killed_mid_write_repeatedly(rig: Rig) -> None:
    for _ in range(6):
        rig.progress(10)
        rig.home.stop(signal.SIGKILL)
        rig.home.start()
    rig.progress(10)  # the last agent is up (a SIGTERM before it is would kill it outright)
    assert rig.settle(missing_allowed=6) > 60


def test_network_drops_delays_and_blackholes(proxied: Rig) -> None:
    assert proxied.proxy is not None
    for mode in ("drop", "delay", "blackhole"):
        proxied.proxy.set_mode(mode)
        if mode == "delay":
            proxied.progress(20)  # slow, but flowing
        else:
            proxied.backlog(40)
        proxied.proxy.set_mode("pass")
        proxied.progress(40)
    assert proxied.settle() > 50


# -- the scenarios that left readings stuck until the agent was restarted ------------------------


@pytest.fixture
def hub_proxied(tmp_path: Path) -> Iterator[Rig]:
    """The hub reaches the broker through a proxy, so a test decides when it gets back."""
    with make_rig(tmp_path, proxy_for="hub") as r:
        r.progress(30)
        yield r


def test_broker_down_when_agent_and_hub_start(tmp_path: Path) -> None:
    with make_rig(tmp_path, proxy_for="hub", broker_up=False) as rig:
        assert rig.proxy is not None
        rig.proxy.set_mode("drop")  # the hub will get through only when the test says
        rig.backlog(60)
        rig.broker.start()
        # The agent is back first and sends its backlog to a broker the hub has never
        # subscribed on: nobody receives it. Then the hub gets through.
        rig.sent_while_hub_away("the agent sending after the outage")
        rig.proxy.set_mode("pass")
        assert rig.settle() > 50


def test_broker_killed_without_persistence_and_the_hub_back_last(hub_proxied: Rig) -> None:
    rig = hub_proxied
    assert rig.proxy is not None
    rig.broker.stop(signal.SIGKILL)  # persistence off: every session and queue is gone
    rig.proxy.set_mode("drop")
    rig.backlog(40)
    rig.broker.start()
    rig.sent_while_hub_away("the agent sending while the hub is away")
    rig.proxy.set_mode("pass")
    assert rig.settle() > 50


def test_hub_killed_holding_received_uncommitted_readings(rig: Rig) -> None:
    with readings_watch(rig.broker.port, rig.hub.coop) as watch, db_write_lock(rig.hub.db):
        # The hub takes these from the broker and cannot commit them.
        start = len(watch.messages)
        wait_for(lambda: len(watch.messages) >= start + 10, what="readings sent to a locked hub")
        rig.hub.stop(signal.SIGKILL)
    rig.hub.start()
    assert rig.settle() > 50


def test_another_process_holds_the_hub_database_for_longer_than_its_busy_timeout(
    rig: Rig,
) -> None:
    served = rig.home.polls_served
    with db_write_lock(rig.hub.db):
        start = served()
        # 12 s of polls from three devices at 10 a second: past SQLite's 10 s busy timeout.
        wait_for(lambda: served() >= start + 360, timeout_s=60, what="12 s of polls")
    rig.progress(30)  # ingest goes on once the lock is gone, without a reconnect
    assert rig.settle() > 300  # at least the 12 s of polls under the lock
