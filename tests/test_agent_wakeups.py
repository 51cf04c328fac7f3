"""What wakes the agent's poll loop: at 1 s polling, an ack (or the housekeeping tick) waits for
the next poll's pass rather than costing a pass of its own (issue 22), unless something cannot
wait for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.config import parse_config
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from protocol.clock import Clock, ManualClock, SystemClock
from protocol.codec import encode
from protocol.payloads import Ack
from tests.modbus_images import FIXTURES, ImageServer, image_from_fixture, load_fixture
from tests.times import ROUND_SECOND_MS


def _agent(
    tmp_path: Path, url: str, clock: Clock, poll_interval_s: int, housekeeping_s: float = 5.0
) -> Agent:
    config = parse_config(
        {
            "coop": "wake-coop",
            "home": "home-1",
            "poll_interval_s": poll_interval_s,
            "data_dir": str(tmp_path),
            "broker": {"url": "mqtt://127.0.0.1:1"},  # never started here
            "devices": [
                {"name": "grid-meter", "profile": "eastron-sdm630", "modbus": url, "unit": 1}
            ],
        }
    )
    ConsentLedger(config.consent_path, "home-1").share_everything(ROUND_SECOND_MS)
    return Agent(config, clock, housekeeping_s=housekeeping_s)


def _ack_wakes_the_loop(agent: Agent, seq: int) -> bool:
    """Let the loop decide how it sleeps (woken at once), then hand it an ack for ``seq``;
    the housekeeping tick must wake it exactly when the ack does."""
    agent._wake.set()
    agent._sleep_until_due()
    agent._housekeeping_wake()
    ticked = agent._wake.is_set()
    agent._wake.clear()
    payload = encode(Ack("home-1", {"grid-meter": [[seq, seq]]}))
    agent._on_message(agent._ack_topic, payload)
    assert agent._wake.is_set() == ticked
    return ticked


def _close(agent: Agent) -> None:
    agent.outbox.close()
    agent.energy.close()
    for s in agent._devices:
        s.device.close()


def test_an_ack_waits_for_a_near_poll_only_when_nothing_waits_for_it(tmp_path: Path) -> None:
    meter = image_from_fixture(load_fixture(FIXTURES / "eastron-sdm630" / "day-import.json"))
    with ImageServer({1: meter}) as server:
        agent = _agent(tmp_path / "system", server.url, SystemClock(), 1)
        try:
            agent._poll_due()  # a reading stored; not sent (no broker): it waits for room
            assert agent.outbox.count() == 1
            assert _ack_wakes_the_loop(agent, 1)
            agent._take_acks()  # the hub had it after all (a resend): nothing waits now
            assert agent.outbox.count() == 0
            assert not _ack_wakes_the_loop(agent, 1)  # the next poll, within 1 s, takes it
            assert agent._acks.qsize() == 1
        finally:
            _close(agent)

        clock = SystemClock()
        agent = _agent(tmp_path / "slow", server.url, clock, 60)
        try:
            agent._poll_due()
            agent.outbox.remove({"grid-meter": [1]})
            agent._devices[0].next_due_ms = clock.now_ms() + 30_000  # a poll a minute, mid-way
            assert _ack_wakes_the_loop(agent, 1)
        finally:
            _close(agent)

        # A simulated clock may stand still (tests wait for acks so): acks always wake.
        agent = _agent(tmp_path / "manual", server.url, ManualClock(ROUND_SECOND_MS), 1)
        try:
            agent._poll_due()
            agent.outbox.remove({"grid-meter": [1]})
            assert _ack_wakes_the_loop(agent, 1)
        finally:
            _close(agent)


def test_on_the_wall_clock_the_loop_is_its_own_housekeeping_tick(tmp_path: Path) -> None:
    """No thread wakes to wake the loop (at 1 s polling it was awake anyway: 12 wakeups a
    minute of a thread for nothing, issue 22); with polls far apart the loop still turns every
    ``housekeeping_s`` for the wall-clock timers (resends, drain status)."""
    meter = image_from_fixture(load_fixture(FIXTURES / "eastron-sdm630" / "day-import.json"))
    with ImageServer({1: meter}) as server:
        agent = _agent(tmp_path, server.url, SystemClock(), 60, housekeeping_s=0.02)
        runner = threading.Thread(target=agent.run, kwargs={"drain_timeout_s": 0.0})
        runner.start()
        try:
            deadline = time.monotonic() + 10.0
            while agent.polls < 5 and time.monotonic() < deadline:  # passes, not polls: 60 s
                time.sleep(0.01)
            assert agent.polls >= 5  # five passes within one 60 s poll interval
            names = {t.name for t in threading.enumerate()}
            assert "agent-housekeeping" not in names
        finally:
            agent.stop()
            runner.join(10.0)
