"""Long outages in simulated time, and a state machine that interleaves every failure.

Agent and hub run in this process on a ManualClock, so a day without a broker takes seconds; the
broker is a real Mosquitto process that is stopped and started again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from paho.mqtt.enums import CallbackAPIVersion

import agent.service as agent_service
from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from hub.app import ingest_with_consent
from hub.ingest.service import Ingest
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode
from protocol.payloads import HomeStatus
from protocol.session import BrokerSettings
from sim.household import SimHome
from sim.modbus_server import ServedLog, SimModbusServers
from tests.harness import Mosquitto, TcpProxy, served_not_stored, wait_for
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_MIDNIGHT_UTC_MS
DAY_MS = 86_400_000


@dataclass
class InProcess:
    """Devices, agent and hub in this process on one ManualClock; the broker in its own."""

    tmp: Path
    broker: Mosquitto
    poll_ms: int = 60_000
    budget_bytes: int = 256 * 1024 * 1024
    proxy: TcpProxy | None = None
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))

    def __post_init__(self) -> None:
        self.coop = f"o-{uuid.uuid4().hex[:10]}"
        self.sim = SimHome("home-1", 5, self.clock)
        self.served = ServedLog()  # the simulator's record of every poll it answered
        self.servers = SimModbusServers([self.sim], served=self.served)
        self.servers.start()
        self.store = Store.open(self.tmp / "hub.db", self.coop, clock=self.clock)
        self.hub: Ingest | None = None
        self.agent: Agent | None = None
        self.thread: threading.Thread | None = None
        self.start_hub()
        self.start_agent()

    def start_hub(self) -> None:
        self.hub, _ = ingest_with_consent(
            self.store, BrokerSettings(self.broker.url, f"hub-{self.coop}"), self.coop, self.clock
        )
        self.hub.start()

    def stop_hub(self) -> None:
        assert self.hub is not None
        self.hub.stop()
        self.hub = None

    def start_agent(self) -> None:
        eps = self.servers.endpoints()["home-1"]
        port = self.proxy.port if self.proxy else self.broker.port
        config = AgentConfig(
            coop=self.coop,
            home="home-1",
            broker=BrokerSettings(f"mqtt://127.0.0.1:{port}", f"agent-{self.coop}"),
            data_dir=self.tmp / "agent",
            devices=tuple(
                DeviceConfig(n, e.profile, f"tcp://{e.host}:{e.port}", e.unit, self.poll_ms / 1000)
                for n, e in eps.items()
            ),
            outbox_budget_bytes=self.budget_bytes,
        )
        ConsentLedger(config.consent_path, "home-1").share_everything(T0)
        # Fast wall-clock timers: a hub that loses what it had not acked is retried in 2 s.
        self.agent = Agent(config, self.clock, resend_after_s=2.0, housekeeping_s=0.5)
        self.thread = threading.Thread(target=self.agent.run, kwargs={"drain_timeout_s": 0.5})
        self.thread.start()
        wait_for(lambda: self.agent is not None and self.agent.polls >= 1, 10)

    def stop_agent(self) -> None:
        assert self.agent is not None and self.thread is not None
        self.agent.stop()
        self.thread.join(30)
        self.agent = None

    def poll(self, steps: int = 1) -> None:
        """Move the clock on one poll interval at a time, waiting for each poll."""
        for _ in range(steps):
            assert self.agent is not None
            agent, polls = self.agent, self.agent.polls
            self.clock.advance(self.poll_ms)
            wait_for(lambda: agent.polls > polls, 10)  # noqa: B023 - waited for in this pass

    def drained(self, timeout_s: float = 60.0) -> None:
        wait_for(lambda: self.agent is not None and self.agent.backlog == 0, timeout_s, "drain")

    def seqs(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.store.iter_readings():
            out.setdefault(r.device, []).append(r.seq)
        return out

    def close(self) -> None:
        if self.agent is not None:
            self.stop_agent()
        if self.hub is not None:
            self.stop_hub()
        self.store.close()
        self.servers.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


# The suite's outages are two simulated hours; bench/outage_day.py runs the same two scenarios
# (these functions, with their checks) over a whole day and prints how long each step took.
SUITE_OUTAGE_HOURS = 2
# 300 kB holds a day of quarter-hour aggregates many times over; 48 kB holds two hours' of them
# (24 rows) many times over, yet not two hours of raw polls (360 readings, about 115 kB).
SUITE_BUDGET_BYTES = 48 * 1024


@dataclass
class OutageFigures:
    """Wall seconds of each step of an outage scenario, and what the outbox counted."""

    queued: int  # readings in the agent's outbox when the broker came back
    compacted: int
    queue_s: float  # polling through the outage
    drain_s: float  # from the broker's restart until the outbox was empty


def outage_then_recovery(tmp_path: Path, broker: Mosquitto, hours: int) -> OutageFigures:
    """The broker is down for ``hours`` of one poll a minute; then every poll the devices
    answered, with the values they served, reaches the hub exactly once."""
    rig = InProcess(tmp_path, broker)
    try:
        rig.drained()
        broker.stop()
        started = time.perf_counter()
        rig.poll(hours * 60)  # three devices a minute: 180 readings an hour queue up
        queue_s = time.perf_counter() - started
        assert rig.agent is not None
        queued = rig.agent.backlog
        assert queued >= 3 * hours * 60
        broker.start()
        started = time.perf_counter()
        rig.drained()
        drain_s = time.perf_counter() - started
        assert rig.agent.outbox.counter("lost") == 0
        # Every poll the devices answered, with the values they served, is in the hub's database.
        missing = served_not_stored(
            tmp_path / "hub.db", rig.sim, rig.served, rig.clock.now_ms() + 1
        )
        assert missing == dict.fromkeys(rig.sim.devices, 0)
        seqs = rig.seqs()
        for device, stored in seqs.items():
            assert stored == list(range(1, rig.agent.outbox.last_seq(device) + 1)), device
        grid = [r for r in rig.store.iter_readings() if r.device == "grid-meter"]
        for r in (grid[0], grid[-1]):
            truth = rig.sim.counters_at(r.ts_ms)
            assert r.quantities["energy_import_wh"] == pytest.approx(
                truth["energy_import_wh"], abs=1.0
            )
    finally:
        rig.close()
    with Store.open_existing(tmp_path / "hub.db") as s:
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return OutageFigures(queued, 0, queue_s, drain_s)


def outage_past_the_budget(
    tmp_path: Path, broker: Mosquitto, hours: int, budget_bytes: int
) -> OutageFigures:
    """An outage of ``hours`` fills more than ``budget_bytes`` of raw polls: the outbox merges
    them into quarter-hour aggregates, drops nothing, and the energy over the outage is still the
    simulator's to the Wh."""
    rig = InProcess(tmp_path, broker, budget_bytes=budget_bytes)
    try:
        rig.drained()
        first = next(r for r in rig.store.iter_readings() if r.device == "grid-meter")
        broker.stop()
        started = time.perf_counter()
        rig.poll(hours * 60)
        queue_s = time.perf_counter() - started
        assert rig.agent is not None
        queued = rig.agent.backlog
        compacted = rig.agent.outbox.counter("compacted")
        assert compacted > 0
        broker.start()
        started = time.perf_counter()
        rig.drained()
        drain_s = time.perf_counter() - started
        produced = {d: rig.agent.outbox.last_seq(d) for d in rig.seqs()}
        stored = sum(len(s) for s in rig.seqs().values())
        lost = rig.agent.outbox.counter("lost")
        # The budget holds the outage's quarter-hour aggregates many times over: merging alone
        # keeps it, nothing is dropped, and every reading is accounted for.
        assert lost == 0
        assert stored + compacted == sum(produced.values())
        grid = [r for r in rig.store.iter_readings() if r.device == "grid-meter"]
        assert any(r.period_ms for r in grid), "aggregates reached the hub"
        # Energy over the outage, from the stored counters, is the simulator's to the Wh.
        last = grid[-1]
        truth = rig.sim.counters_at(last.ts_ms)
        assert float(last.quantities["energy_import_wh"]) - float(
            first.quantities["energy_import_wh"]
        ) == pytest.approx(
            truth["energy_import_wh"] - rig.sim.counters_at(first.ts_ms)["energy_import_wh"],
            abs=2.0,
        )
    finally:
        rig.close()
    return OutageFigures(queued, compacted, queue_s, drain_s)


def test_hours_without_the_broker_then_recovery(tmp_path: Path, broker: Mosquitto) -> None:
    """Two simulated hours without a broker, then every served poll arrives once. The code path
    is the same for a day (bench/outage_day.py runs this scenario over 24 hours: 4,320 readings)."""
    outage_then_recovery(tmp_path, broker, SUITE_OUTAGE_HOURS)


def test_an_outage_longer_than_the_budget_compacts_and_keeps_energy_exact(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Two simulated hours against a 48 kB budget: compaction runs, as it does for a day against
    300 kB (bench/outage_day.py runs that), and nothing is lost."""
    outage_past_the_budget(tmp_path, broker, SUITE_OUTAGE_HOURS, SUITE_BUDGET_BYTES)


def test_the_status_says_how_long_the_oldest_reading_has_waited_for_its_ack(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub that is down leaves the agent connected and unacked: its status says so within a
    few seconds of the oldest reading passing a minute, not at the next five-minute status.

    The agent looks for a late reading every ``DRAIN_STATUS_EVERY_S`` wall seconds (5 s); here
    every 0.5 s, as the rig's other wall-clock timers are shortened, which saves the test up to
    9 s of waiting for the two checks it needs and leaves what it checks as it was."""
    monkeypatch.setattr(agent_service, "DRAIN_STATUS_EVERY_S", 0.5)
    rig = InProcess(tmp_path, broker)
    statuses: list[HomeStatus] = []
    watch = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{rig.coop}")
    watch.on_message = lambda c, u, m: statuses.append(decode(HomeStatus, bytes(m.payload)))
    watch.connect("127.0.0.1", broker.port)
    watch.subscribe(f"coopwatt/{rig.coop}/homes/home-1/status", qos=1)
    watch.loop_start()
    try:
        rig.drained()
        rig.stop_hub()
        rig.poll()  # the first reading nobody acks, stamped one poll after the last acked one
        first_unacked_ms = rig.clock.now_ms()
        rig.poll(3)
        wait_for(lambda: any((s.unacked_age_s or 0) >= 180 for s in statuses), 30, "late status")
        late = next(s for s in statuses if (s.unacked_age_s or 0) >= 180)
        assert late.ts_ms is not None
        assert late.unacked_age_s == (late.ts_ms - first_unacked_ms) // 1000
        assert late.backlog == 4 * 3  # four polls of three devices
        rig.start_hub()
        rig.drained()
        # Acked again: the next status, within seconds, says nothing is late any more.
        wait_for(lambda: (statuses[-1].unacked_age_s or 0) < 60, 30, "status back to normal")
    finally:
        watch.loop_stop()
        watch.disconnect()
        rig.close()


class DeliveryMachine(RuleBasedStateMachine):
    """Polls interleaved with broker restarts, hub and agent restarts and dropped connections."""

    def __init__(self) -> None:
        super().__init__()
        self.rig: InProcess | None = None

    @initialize()
    def start(self) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        tmp = Path(self._tmp.name)
        self.broker = Mosquitto(tmp / "broker")
        self.broker.start()
        proxy = TcpProxy(self.broker.port)
        self.rig = InProcess(tmp, self.broker, poll_ms=10_000, proxy=proxy)

    @rule()
    def poll(self) -> None:
        assert self.rig is not None
        self.rig.poll(3)

    @rule()
    def restart_broker(self) -> None:
        self.broker.stop()
        self.poll()
        self.broker.start()

    @rule()
    def restart_hub(self) -> None:
        assert self.rig is not None
        self.rig.stop_hub()
        self.poll()
        self.rig.start_hub()

    @rule()
    def restart_agent(self) -> None:
        assert self.rig is not None
        self.rig.stop_agent()
        self.rig.start_agent()

    @rule()
    def drop_connection(self) -> None:
        assert self.rig is not None and self.rig.proxy is not None
        self.rig.proxy.set_mode("drop")
        self.poll()
        self.rig.proxy.set_mode("pass")

    @invariant()
    def never_more_than_produced(self) -> None:
        if self.rig is None or self.rig.agent is None:
            return
        for device, seqs in self.rig.seqs().items():
            assert len(seqs) == len(set(seqs))
            assert max(seqs) <= self.rig.agent.outbox.last_seq(device)

    def teardown(self) -> None:
        rig = self.rig
        if rig is None:
            return
        try:
            assert rig.agent is not None
            rig.poll()
            rig.drained()
            for device, seqs in rig.seqs().items():
                assert seqs == list(range(1, rig.agent.outbox.last_seq(device) + 1)), device
        finally:
            rig.close()
            assert rig.proxy is not None
            rig.proxy.close()
            self.broker.stop()
            self._tmp.cleanup()


def machine_settings(max_examples: int) -> settings:
    """Eight steps a run; a failure is reported as found, not shrunk for minutes (each step
    restarts real processes)."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )


# Five runs in the suite (about 2 s each: the agent and hub reconnect after a restart with a 1 s
# minimum backoff); bench/delivery_machine.py runs the same machine for as many as it is asked.
DeliveryMachine.TestCase.settings = machine_settings(5)
test_delivery_state_machine = DeliveryMachine.TestCase
