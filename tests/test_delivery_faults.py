"""Fault injection: whatever fails between a meter and the hub, every reading lands exactly once.

The agent and the hub run as their installed commands in their own processes against a real
Mosquitto that is stopped, killed and frozen; processes are SIGKILLed mid-write; a TCP proxy
drops, delays and blackholes the agent's traffic. Waits are for progress (readings stored,
readings queued), never for a fixed time. Every test ends in :func:`settle`, which checks that
the hub's database holds each (device, seq) the agent numbered exactly once, that the stored
counters are the simulated meter's, and that ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import (
    Home,
    Hub,
    Mosquitto,
    TcpProxy,
    assert_exactly_once,
    simulated_home,
    wait_for,
)


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

    def settle(self) -> int:
        """Stop the agent cleanly once everything is acked; check exactly-once delivery."""
        self.progress(10)
        for _ in range(3):
            assert self.home.stop(signal.SIGTERM) == 0, self.home.log()
            if self.queued() == 0:
                break
            self.home.start()  # drain did not finish in time: the next start resends
            self.progress(10)
        assert self.queued() == 0
        return assert_exactly_once(self.hub.db, self.home)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    coop = f"f-{uuid.uuid4().hex[:10]}"
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    hub = Hub(tmp_path, coop, broker.url)
    hub.start()
    try:
        with simulated_home(tmp_path, coop, broker.url) as home:
            home.start()
            r = Rig(broker, hub, home)
            r.progress(30)
            yield r
    finally:
        hub.stop(signal.SIGKILL)
        broker.stop()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Rig]:
    coop = f"p-{uuid.uuid4().hex[:10]}"
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    proxy = TcpProxy(broker.port)
    hub = Hub(tmp_path, coop, broker.url)
    hub.start()
    try:
        with simulated_home(tmp_path, coop, f"mqtt://127.0.0.1:{proxy.port}") as home:
            home.start()
            r = Rig(broker, hub, home, proxy)
            r.progress(30)
            yield r
    finally:
        hub.stop(signal.SIGKILL)
        proxy.close()
        broker.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_broker_stopped_or_killed_then_restarted(rig: Rig, sig: signal.Signals) -> None:
    rig.broker.stop(sig)
    rig.backlog(40)
    rig.broker.start()
    rig.progress(60)
    assert rig.settle() > 100


def test_broker_hung_then_resumed(rig: Rig) -> None:
    rig.broker.send(signal.SIGSTOP)
    rig.backlog(250)  # over 5 s: long enough for keepalives to fail on both sides
    rig.broker.send(signal.SIGCONT)
    rig.progress(100)
    assert rig.settle() > 100


def test_hub_killed_mid_ingest_repeatedly(rig: Rig) -> None:
    for _ in range(5):
        rig.progress(15)
        rig.hub.stop(signal.SIGKILL)
        rig.backlog(10)
        rig.hub.start()
    rig.progress(30)
    assert rig.settle() > 100


def test_agent_killed_mid_write_repeatedly(rig: Rig) -> None:
    for _ in range(6):
        rig.progress(10)
        rig.home.stop(signal.SIGKILL)
        rig.home.start()
    assert rig.settle() > 60


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
    assert proxied.settle() > 100
