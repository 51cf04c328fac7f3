"""Prompts over a real Mosquitto: a home declares appliances, the hub plans from the retained
forecast, the home's light follows the prompt, and a button press reaches the hub's database.

Everything is real but the clock (a ManualClock shared by both sides) and the pins (gpiozero's
MockFactory): the agent with an S0 meter, the hub's ingest, consent and prompts service, the
broker. Waits are for threads to get somewhere, never for clock time."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.indicator import IndicatorConfig
from agent.service import Agent
from hub.app import ingest_with_consent
from hub.ingest.service import Ingest
from hub.prompts.service import PromptsService
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import encode
from protocol.consent import Purpose, Resolution
from protocol.payloads import Appliance, Forecast, TargetQuantiles
from protocol.quantities import Role
from protocol.session import BrokerSettings, MqttSession
from protocol.topics import HubTopic, hub_topic
from sim.broker import RunningBroker
from tests.harness import wait_for
from tests.times import JULY_1_2026_0600_UTC_MS

HOUR = 3_600_000
T0 = JULY_1_2026_0600_UTC_MS  # 08:00 in Amsterdam
RED, GREEN, BLUE, BUTTON, S0 = 17, 27, 22, 23, 5


def solar_bell_w(t_ms: int, issued_ms: int) -> float:
    """A clear day's solar: a bell peaking at 60 kW at noon UTC."""
    h = (t_ms // 900_000 % 96) / 4
    return round(max(0.0, math.sin((h - 6) / 12 * math.pi)) * 60_000.0, 1)


def sunny_forecast(
    coop: str, issued_ms: int, pv_w: Callable[[int, int], float] = solar_bell_w
) -> Forecast:
    """Two days: demand 20 kW, the neighbourhood's solar ``pv_w(t_ms, issued_ms)``."""
    start = issued_ms - issued_ms % 900_000
    demand, pv = [], []
    for k in range(192):
        demand.append(20_000.0)
        pv.append(pv_w(start + k * 900_000, issued_ms))
    zeros = [0.0] * 192
    return Forecast(
        coop, issued_ms, start, 900, "test",
        demand=TargetQuantiles([0.9 * d for d in demand], demand, [1.1 * d for d in demand],
                               "model"),
        pv=TargetQuantiles([0.8 * p for p in pv], pv, [1.2 * p for p in pv], "model"),
        wind=TargetQuantiles(zeros, zeros, zeros, "absent"),
    )  # fmt: skip


@dataclass
class Rig:
    clock: ManualClock
    factory: MockFactory
    agent: Agent
    hub: Ingest
    service: PromptsService
    store: Store
    operator: MqttSession
    coop: str

    def pin(self, n: int) -> Any:
        return self.factory.pin(n)

    def rgb(self) -> tuple[bool, bool, bool]:
        return (bool(self.pin(RED).state), bool(self.pin(GREEN).state),
                bool(self.pin(BLUE).state))  # fmt: skip


@pytest.fixture
def rig(mosquitto: RunningBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    coop = "pr-" + request.node.name.replace("_", "-")[-24:].strip("-")
    clock = ManualClock(T0)
    factory = MockFactory()
    config = AgentConfig(
        coop=coop,
        home="home-1",
        broker=BrokerSettings(mosquitto.url, f"agent-{coop}"),
        data_dir=tmp_path / "agent",
        devices=(DeviceConfig("heat-pump", "s0-pulse-1000", "", 1, 60.0, gpio=S0, role=Role.LOAD),),
        timezone="Europe/Amsterdam",
        appliances=(
            Appliance("washing-machine", 1000.0, 120, 8 * 60, 20 * 60, False, 7),
            Appliance("dishwasher", 1200.0, 120, 8 * 60, 22 * 60, False, 7),
        ),
        indicator=IndicatorConfig(
            led="rgb", red=RED, green=GREEN, blue=BLUE, button=BUTTON, bounce_s=0.0
        ),
    )
    ConsentLedger(config.consent_path, "home-1").grant(
        [Role.LOAD], [Purpose.PROMPTS], Resolution.MIN15, 30, T0
    )
    store = Store.open(tmp_path / "hub.db", coop, clock=clock)
    hub, book = ingest_with_consent(
        store, BrokerSettings(mosquitto.url, f"hub-{coop}"), coop, clock
    )
    service = PromptsService(store, book, coop, clock)
    service.attach(hub, BrokerSettings(mosquitto.url, f"hub-{coop}"))
    hub.start()
    service.start()
    agent = Agent(config, clock, pin_factory=factory)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    operator = MqttSession(BrokerSettings(mosquitto.url, f"operator-{coop}"))
    operator.start()
    r = Rig(clock, factory, agent, hub, service, store, operator, coop)
    try:
        wait_for(lambda: agent.session.connected.is_set() and operator.connected.is_set())
        yield r
    finally:
        agent.stop()
        thread.join(20)
        operator.stop()
        service.stop()
        hub.stop()
        store.close()
        factory.close()


def _prompts_arrive(r: Rig, after_ms: int = 0) -> None:
    wait_for(
        lambda: (p := r.agent.prompts.board.prompts) is not None and p.issued_ms > after_ms,
        what="prompts at the home",
    )


def test_button_feedback_reaches_the_hub_and_the_light_follows_the_plan(rig: Rig) -> None:
    r = rig
    # The home's grant and appliances reach the hub.
    wait_for(lambda: r.service.db.appliances().get("home-1") is not None, what="appliances")
    assert [a.name for a in r.service.db.appliances()["home-1"].appliances] == [
        "washing-machine",
        "dishwasher",
    ]
    # The forecast arrives retained, as the hub's forecast service publishes it.
    topic = hub_topic(r.coop, HubTopic.FORECAST)
    r.operator.publish(topic, encode(sunny_forecast(r.coop, T0)), retain=True)
    _prompts_arrive(r)
    prompts = r.agent.prompts.board.prompts
    assert prompts is not None and prompts.home == "home-1"
    assert {a.appliance for a in prompts.appliances} == {"washing-machine", "dishwasher"}
    washer = next(a for a in prompts.appliances if a.appliance == "washing-machine")
    start = washer.windows[0].start_ms
    assert start >= T0 and "solar surplus expected" in washer.reason
    assert prompts.valid_until_ms > T0

    # A new prompt blinks (by the shared clock, which has not moved), then shows its level.
    light = r.agent.prompts.light
    assert light is not None and light.blinking
    r.clock.advance(2_000)
    level = prompts.level_at(r.clock.now_ms())
    assert level is not None
    r.agent.prompts.tick()
    colour = {"green": (False, True, False), "amber": (True, True, False),
              "red": (True, False, False)}  # fmt: skip
    assert r.rgb() == colour[level]

    # Time passes: the hub re-plans on its clock, the washer's window (frozen since it came
    # close) stays put, and in it the home's light is green.
    r.clock.set(start)
    _prompts_arrive(r, after_ms=start - 1)
    again = r.agent.prompts.board.prompts
    assert again is not None
    assert next(a for a in again.appliances if a.appliance == "washing-machine").windows == (
        washer.windows
    )
    r.clock.advance(2_000)  # past the new prompt's blink
    view = r.agent.prompts.tick()
    assert view.level == "green" and "washing machine's window" in view.reason
    assert r.rgb() == (False, True, False)

    # A press in the window says the washer is running; it reaches the hub's database.
    button = r.pin(BUTTON)
    button.drive_low()
    r.clock.advance(300)
    button.drive_high()
    assert r.agent.prompts.sent and r.agent.prompts.sent[-1].action == "done"
    wait_for(lambda: r.service.db.feedback_count("home-1") == 1, what="feedback at the hub")
    answers = r.service.db.answers("home-1", "washing-machine", start - HOUR, start + HOUR)
    assert answers == ["done"]


def test_prompts_expire_at_home_when_the_hub_is_gone(rig: Rig) -> None:
    r = rig
    wait_for(lambda: r.service.db.appliances().get("home-1") is not None, what="appliances")
    topic = hub_topic(r.coop, HubTopic.FORECAST)
    r.operator.publish(topic, encode(sunny_forecast(r.coop, T0)), retain=True)
    _prompts_arrive(r)
    prompts = r.agent.prompts.board.prompts
    assert prompts is not None
    r.service.stop()  # the hub's prompts go quiet
    r.clock.set(prompts.valid_until_ms - 1)
    assert r.agent.prompts.tick().level is not None
    r.clock.set(prompts.valid_until_ms)
    view = r.agent.prompts.tick()
    assert view.level is None and view.expired
    assert r.rgb() == (False, False, False)


def test_withdrawing_prompts_consent_clears_the_hub_and_the_home(rig: Rig) -> None:
    r = rig
    wait_for(lambda: r.service.db.appliances().get("home-1") is not None, what="appliances")
    r.operator.publish(hub_topic(r.coop, HubTopic.FORECAST),
                       encode(sunny_forecast(r.coop, T0)), retain=True)  # fmt: skip
    _prompts_arrive(r)
    # The household withdraws the prompts purpose; the agent notices on its next pass.
    r.agent.consent.revoke([Role.LOAD], [Purpose.PROMPTS], T0 + 1000)
    r.clock.advance(60_000)
    wait_for(lambda: r.service.db.appliances().get("home-1") is None, what="appliances erased")
    wait_for(lambda: r.agent.prompts.board.prompts is None, what="prompts cleared at home")
    assert not r.service.db.runs()
