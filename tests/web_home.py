"""A home's data folder as the agent leaves it, for the household page's tests and bench.

Written with the agent's own writers (energy log, mailbox, consent ledger) and served by the
agent's own local link server, with a state and answers the test controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent.consent_ledger import ConsentLedger
from agent.energy_log import EnergyLog
from agent.local_link import (
    AdviceState,
    AgentState,
    AnswerResult,
    DeviceState,
    LinkServer,
    RunState,
)
from agent.mailbox import Mailbox
from agent.outbox import Polled
from protocol.codec import encode
from protocol.consent import Purpose, Resolution
from protocol.payloads import LevelSpan, Receipt, Statement, StatementLine
from protocol.quantities import Role

HOME = "home-7"
COOP = "sunny-street"
ZONE = "Europe/Amsterdam"
# Wednesday 2026-03-25 12:30 in Amsterdam (CET, UTC+1): the clocks go forward on Sunday the 29th.
NOW_MS = int(datetime(2026, 3, 25, 11, 30, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


def write_config(folder: Path, timezone: str = ZONE) -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = folder / "agent.toml"
    config.write_text(
        f'coop = "{COOP}"\nhome = "{HOME}"\ndata_dir = "data"\ntimezone = "{timezone}"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[devices]]\nname = "grid-meter"\nprofile = "eastron-sdm630"\n'
        'modbus = "tcp://127.0.0.1:5020"\nunit = 1\n'
    )
    return config


def fill_energy(data: Path, start_ms: int, end_ms: int) -> None:
    """Readings every 5 minutes: the grid imports 500 W at night and exports 1 kW by day (9 to
    15 UTC), while the solar panels make 2 kW then."""
    log = EnergyLog(data / "energy.db")
    imp = exp = pv = 0.0
    step = 300_000
    for t in range(start_ms, end_ms + 1, step):
        hour = (t // HOUR_MS) % 24
        sunny = 9 <= hour < 15
        log.record([
            Polled("grid-meter", Role.GRID, t,
                   {"energy_import_wh": imp, "energy_export_wh": exp, "power_w": 0.0}),
            Polled("inverter", Role.PV, t, {"energy_wh": pv, "power_w": 0.0}),
        ])  # fmt: skip
        if sunny:
            exp += 1000 * step / HOUR_MS
            pv += 2000 * step / HOUR_MS
        else:
            imp += 500 * step / HOUR_MS
    log.close()


def statement(period: str = "2026-03", final: bool = False, issued_ms: int = NOW_MS) -> Statement:
    lines = [
        StatementLine("import-neighbours", 42_000, 756),  # 42 kWh for 7.56: 0.180 per kWh
        StatementLine("import-grid", 120_500, 3615),  # 120.5 kWh for 36.15: 0.300 per kWh
        StatementLine("export-neighbours", -30_000, -540),  # sold 30 kWh for 5.40
        StatementLine("export-grid", -10_000, -80),  # sold 10 kWh for 0.80
    ]
    total = sum(ln.amount_minor for ln in lines)
    return Statement(
        HOME, period, issued_ms, final, "EUR", 2, "sdr", lines, total, 4900, 4900 - total,
        3000, 4, 0,
    )  # fmt: skip


def _period(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m")


def fill_mailbox(data: Path, now_ms: int = NOW_MS) -> None:
    """This month's provisional statement, last month's final one, two receipts."""
    box = Mailbox(data / "mailbox", HOME)
    earlier = now_ms - 31 * 86_400_000
    box.keep_statement(encode(statement(_period(earlier), final=True, issued_ms=earlier)))
    box.keep_statement(encode(statement(_period(now_ms), issued_ms=now_ms)))
    box.keep_receipt(encode(Receipt(HOME, "consent-recorded", now_ms - 5 * 86_400_000, 1)))
    erased = Receipt(HOME, "data-erased", now_ms - 4 * 86_400_000, 2, {"pv": 1234})
    box.keep_receipt(encode(erased))


def fill_consent(data: Path, now_ms: int = NOW_MS) -> ConsentLedger:
    """Version 1 shares the grid meter and the solar panels for everything; version 2 takes the
    panels out of the neighbourhood figures."""
    ledger = ConsentLedger(data / "consent.jsonl", HOME)
    ledger.grant([Role.GRID, Role.PV], list(Purpose), Resolution.MIN15, 400,
                 now_ms - 5 * 86_400_000)  # fmt: skip
    ledger.revoke([Role.PV], [Purpose.COMMUNITY_STATS], now_ms - 4 * 86_400_000)
    return ledger


def advice(now_ms: int = NOW_MS) -> AdviceState:
    until = now_ms + 6 * HOUR_MS
    return AdviceState(
        reason="neighbourhood solar surplus",
        runs=[
            RunState("washing-machine", [[now_ms + HOUR_MS, now_ms + 3 * HOUR_MS]],
                     "solar surplus at noon", 1200.0, False),
            RunState("ev-charger", [[now_ms + 20 * HOUR_MS, now_ms + 24 * HOUR_MS]],
                     "wind overnight", 6000.0, False, "accepted"),
        ],
        levels=[
            LevelSpan(now_ms - HOUR_MS, now_ms + 2 * HOUR_MS, "green", "solar surplus"),
            LevelSpan(now_ms + 2 * HOUR_MS, until, "amber", "ordinary demand"),
        ],
        level="green",
        valid_until_ms=until,
    )  # fmt: skip


def agent_state(now_ms: int = NOW_MS, advice_state: AdviceState | None = None) -> AgentState:
    return AgentState(
        COOP, HOME, "0.1.0", now_ms, ZONE, True, 12, 0, 0,
        [DeviceState("grid-meter", "grid", True, None, now_ms - 5000, now_ms - 5000,
                     {"power_w": 812.5, "energy_import_wh": 1234567.0, "voltage_v": 231.2}),
         DeviceState("inverter", "pv", False, "no answer from unit 1", now_ms - 600_000,
                     now_ms - 600_000, {"power_w": 0.0, "state": "sleeping"})],
        advice_state or advice(now_ms), True, now_ms - 3 * HOUR_MS, now_ms, 4,
    )  # fmt: skip


@dataclass
class FakeAgent:
    """What the running agent answers on its socket; ``answers`` records every answer asked."""

    state: AgentState = field(default_factory=agent_state)
    answers: list[tuple[str | None, str]] = field(default_factory=list)

    def get_state(self) -> AgentState:
        return self.state

    def answer(self, appliance: str | None, action: Literal["accepted", "snoozed"]) -> AnswerResult:
        self.answers.append((appliance, action))
        if appliance is not None and appliance not in {r.appliance for r in self.state.advice.runs}:
            return AnswerResult(False, f"no current advice for {appliance}")
        return AnswerResult(True, "sent", None, True)


@contextmanager
def running_agent(data: Path, agent: FakeAgent | None = None) -> Iterator[FakeAgent]:
    fake = agent or FakeAgent()
    server = LinkServer(data / "agent.sock", fake.get_state, fake.answer)
    try:
        yield fake
    finally:
        server.close()


def make_home(folder: Path, *, now_ms: int = NOW_MS, energy_days: int = 35) -> Path:
    """The config of a home with everything filled in; its data folder is ``folder/data``."""
    config = write_config(folder)
    data = folder / "data"
    fill_energy(data, now_ms - energy_days * 86_400_000, now_ms)
    fill_mailbox(data, now_ms)
    fill_consent(data, now_ms)
    return config
