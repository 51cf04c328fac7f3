"""A P1 meter to the hub: the simulator's telegrams on a pty, the agent, a real Mosquitto, the hub.

What the hub stored is checked against the simulator's own record of the telegrams it sent
(sim.p1_stream.TelegramLog): every stored reading is the last telegram sent before its poll, at
most 30 s old, with the per-tariff and per-phase quantities through the hub's new columns; a
stream that stops, a bad CRC and a counter going backwards put nothing wrong in the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.push_meter import PushMeter
from agent.service import Agent
from hub.app import ingest_with_consent
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.session import BrokerSettings
from sim.broker import RunningBroker
from sim.household import GRID_METER, SimHome
from sim.p1_stream import P1Stream, SentTelegram
from tests.harness import wait_for

START_MS = 1_782_900_000_000 - 1_782_900_000_000 % 3_600_000 + 9 * 3_600_000  # a summer morning
STEP_MS = 10_000


class P1Rig:
    def __init__(self, broker: RunningBroker, tmp: Path, coop: str) -> None:
        self.clock = ManualClock(START_MS)
        self.home = SimHome("home-1", 7, self.clock)
        self.glitch: dict[str, float] = {}  # values that override the simulated meter's
        self.stream = P1Stream(self._values, self.clock, transport="pty").start(autosend=False)
        config = AgentConfig(
            coop=coop,
            home="home-1",
            broker=BrokerSettings(broker.url, f"agent-{coop}"),
            data_dir=tmp / "agent",
            devices=(
                DeviceConfig("smart-meter", "dsmr-5", "", 1, STEP_MS / 1000, p1=self.stream.url),
            ),
        )
        self.store = Store.open(tmp / "hub.db", coop, clock=self.clock)
        self.hub, _ = ingest_with_consent(
            self.store, BrokerSettings(broker.url, f"hub-{coop}"), coop, self.clock
        )
        self.hub.start()
        ConsentLedger(config.consent_path, "home-1").share_everything(START_MS)
        self.agent = Agent(config, self.clock)
        self.thread = threading.Thread(target=self.agent.run)
        self.thread.start()
        wait_for(
            lambda: self.hub.connected.is_set() and self.agent.session.connected.is_set(),
            what="the agent and the hub to connect",
        )
        wait_for(lambda: self.agent.polls >= 1, what="the first poll (no telegram yet)")
        meter = self.agent._devices[0].device
        assert isinstance(meter, PushMeter)
        self.meter = meter
        # A pty drops what was written before the reader opened it: send until one arrives.
        deadline = time.monotonic() + 20
        while not meter.wait(0.3):
            assert time.monotonic() < deadline, "no telegram reached the agent"
            self.stream.send()

    def _values(self, t_ms: int) -> dict[str, float | str]:
        values = self.home.values(GRID_METER, t_ms)
        values.update(self.glitch)
        return values

    def step(self, *, send: bool = True) -> SentTelegram | None:
        """The clock moves one poll interval, the agent polls, then the meter sends."""
        polls = self.agent.polls
        self.clock.advance(STEP_MS)
        wait_for(lambda: self.agent.polls > polls, what="the agent's poll")
        if not send:
            return None
        seen = self.meter.frames + self.meter.faults
        sent = self.stream.send()
        wait_for(lambda: self.meter.frames + self.meter.faults > seen, what="the telegram")
        return sent

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(20)
        self.hub.stop()
        self.store.close()
        self.stream.stop()


@pytest.fixture
def rig(mosquitto: RunningBroker, tmp_path: Path) -> Iterator[P1Rig]:
    r = P1Rig(mosquitto, tmp_path, "e2e-p1-meter")
    yield r
    r.close()


def last_sent_before(sent: list[SentTelegram], ts_ms: int) -> SentTelegram:
    return [s for s in sent if s.ts_ms < ts_ms][-1]


def test_the_hub_stores_what_the_p1_meter_sent(rig: P1Rig) -> None:
    t = [START_MS + i * STEP_MS for i in range(17)]  # t[i]: the i-th poll
    for _ in range(6):  # t1..t6: a telegram after each poll
        rig.step()
    for _ in range(5):  # t7..t11: the stream stops; until t9 the t6 telegram is fresh enough
        rig.step(send=False)
    slot = rig.agent._devices[0]
    assert slot.last_error == "no P1 telegram for 50 s"
    # A good telegram at t11, one with a bad CRC, then two whose counter went backwards.
    frames = rig.meter.frames
    good = rig.stream.send()
    assert rig.meter.wait(20, frames=frames + 1)
    rig.stream.send_raw(good.raw.replace(b"1-0:1.8.1(", b"1-0:1.8.1(1"))
    rig.glitch["energy_import_wh"] = good.quantities["energy_import_wh"] - 1000
    glitched = [rig.step(), rig.step()]  # t12, t13
    assert rig.meter.faults >= 3
    rig.glitch.clear()
    for _ in range(3):  # t14..t16
        rig.step()

    accepted = [s for s in rig.stream.log.delivered() if s not in glitched]
    # By hand: t1..t9 read the telegram sent 10 s (t7: 10, t8: 20, t9: 30 s) before; t10 and
    # t11 have none within 30 s; t12..t14 read the good t11 telegram, t15 and t16 the next ones.
    expected = [*t[1:10], *t[12:17]]
    assert [p for p in t[1:] if p - last_sent_before(accepted, p).ts_ms <= 30_000] == expected
    wait_for(
        lambda: rig.store.count_readings() >= len(expected) and rig.agent.backlog == 0,
        what="the hub to store every reading",
    )
    stored = list(rig.store.iter_readings())
    assert [r.ts_ms for r in stored] == expected
    for r in stored:
        assert r.quantities == last_sent_before(accepted, r.ts_ms).quantities, r.ts_ms
    assert [r.quantities for r in stored[9:12]] == [good.quantities] * 3
    imports = [float(r.quantities["energy_import_wh"]) for r in stored]
    assert imports == sorted(imports)  # never backwards in the store
    assert {"energy_import_t1_wh", "energy_export_t2_wh", "voltage_l1_v", "current_l1_a",
            "power_l1_w"} <= set(stored[0].quantities)  # fmt: skip
