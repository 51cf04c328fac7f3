"""The agent's poll loop hands device timing and health to the supervisor: a device that fails
shows offline in the home's status while the others keep filling the outbox."""

from __future__ import annotations

from pathlib import Path

from agent.config import parse_config
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from protocol.clock import ManualClock
from tests.modbus_images import FIXTURES, ImageServer, image_from_fixture, load_fixture
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS


def test_failing_device_is_offline_in_status_and_comes_back(tmp_path: Path) -> None:
    meter = image_from_fixture(load_fixture(FIXTURES / "eastron-sdm630" / "day-import.json"))
    inverter = image_from_fixture(
        load_fixture(FIXTURES / "sunspec" / "inverter-103-common-66.json")
    )
    with ImageServer({1: meter, 2: inverter}) as server:
        config = parse_config(
            {
                "coop": "sup-coop",
                "home": "home-1",
                "poll_interval_s": 1,
                "data_dir": str(tmp_path),
                "broker": {"url": "mqtt://127.0.0.1:1"},  # never started here
                "devices": [
                    {"name": "grid-meter", "profile": "eastron-sdm630",
                     "modbus": server.url, "unit": 1},
                    {"name": "pv-inverter", "profile": "sunspec", "modbus": server.url,
                     "unit": 2},
                ],
            }
        )  # fmt: skip
        clock = ManualClock(T0)
        # The household shares everything, so what is polled is what the outbox holds.
        ConsentLedger(config.consent_path, "home-1").share_everything(T0)
        agent = Agent(config, clock)
        try:
            server.behaviour[2].mode, server.behaviour[2].code = "exception", 6  # busy
            for _ in range(8):
                agent._poll_due()
                clock.set(min(s.next_due_ms for s in agent._devices))
            status = agent._status("online")
            assert status.devices is not None
            assert status.devices["grid-meter"].online
            pv = status.devices["pv-inverter"]
            assert not pv.online and pv.error is not None and "device busy" in pv.error
            assert agent.backlog >= 5  # the meter's readings, none from the inverter
            server.behaviour[2].mode = "ok"
            for _ in range(70):  # offline devices are probed at most every minute
                agent._poll_due()
                clock.advance(1000)
            status = agent._status("online")
            assert status.devices is not None and status.devices["pv-inverter"].online
        finally:
            agent.outbox.close()
            for s in agent._devices:
                s.device.close()
