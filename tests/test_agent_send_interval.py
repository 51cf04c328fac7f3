"""Live readings leave together within ``send_interval_s`` (issue 22): at 1 s polling one MQTT
exchange every 5 s instead of every second, each poll still committed to the outbox at once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config
from agent.consent_ledger import ConsentLedger
from agent.delivery import Delivery
from agent.outbox import Outbox, Polled
from agent.service import Agent
from protocol.clock import ManualClock, SystemClock
from protocol.codec import decode, encode
from protocol.payloads import Ack, ReadingBatch
from protocol.quantities import Role
from tests.modbus_images import FIXTURES, ImageServer, image_from_fixture, load_fixture
from tests.times import JULY_1_2026_1000_UTC_MS, ROUND_SECOND_MS

T0 = JULY_1_2026_1000_UTC_MS


def _poll(t_ms: int) -> list[Polled]:
    return [Polled("grid-meter", Role.GRID, t_ms, {"power_w": 100.0, "energy_import_wh": 5.0})]


class _Wire:
    """What was published, with the agent's clock when it was."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sent: list[tuple[int, ReadingBatch]] = []

    def publish(self, data: bytes) -> None:
        self.sent.append((self.clock.now_ms(), decode(ReadingBatch, data)))

    def seqs(self) -> list[list[int]]:
        return [[r.seq for r in b.readings] for _, b in self.sent]


def _run(tmp_path: Path, poll_s: int, send_interval_s: float, polls: int) -> _Wire:
    """Poll every ``poll_s`` on a manual clock, store, and hand each poll to delivery with
    the next poll as its next pass, as the agent's loop does."""
    clock = ManualClock(T0)
    box = Outbox(tmp_path / "o.db", durable=False)
    wire = _Wire(clock)
    d = Delivery(box, "home-1", clock, wire.publish, send_interval_s=send_interval_s)
    for i in range(polls):
        clock.set(T0 + i * poll_s * 1000)
        live = box.add(_poll(clock.now_ms()), "g1")
        d.send(live, next_pass_ms=clock.now_ms() + poll_s * 1000)
        for _, batch in wire.sent:  # the hub acks whatever arrived
            d.acked([Ack("home-1", {"grid-meter": [[batch.readings[0].seq,
                                                    batch.readings[-1].seq]]})])  # fmt: skip
    box.close()
    return wire


def test_at_1_s_polling_readings_leave_every_5_s_none_later_than_5_s(tmp_path: Path) -> None:
    wire = _run(tmp_path, 1, 5.0, 12)
    # Hand-worked: polls at 0..11 s. The one at 0 s may wait until 5 s (holding it past the pass
    # at 5 s would make it 6 s late), so seqs 1-6 leave at 5 s; seqs 7-12 at 11 s.
    assert wire.seqs() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    assert [t - T0 for t, _ in wire.sent] == [5_000, 11_000]
    for sent_ms, batch in wire.sent:
        assert all(sent_ms - r.ts_ms <= 5_000 for r in batch.readings)


def test_polls_further_apart_than_the_interval_leave_at_once(tmp_path: Path) -> None:
    wire = _run(tmp_path, 10, 5.0, 3)
    assert wire.seqs() == [[1], [2], [3]]
    assert [t - T0 for t, _ in wire.sent] == [0, 10_000, 20_000]


def test_an_interval_of_zero_sends_every_poll(tmp_path: Path) -> None:
    wire = _run(tmp_path, 1, 0.0, 3)
    assert wire.seqs() == [[1], [2], [3]]


def test_held_readings_leave_at_once_on_stop_and_on_reconnect(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    box = Outbox(tmp_path / "o.db", durable=False)
    wire = _Wire(clock)
    d = Delivery(box, "home-1", clock, wire.publish)
    statements: list[str] = []
    box.conn.set_trace_callback(statements.append)
    d.send(box.add(_poll(T0), "g1"), next_pass_ms=T0 + 1000)
    statements.clear()
    d.send(next_pass_ms=T0 + 1000)  # held: not a backlog to look for in the file
    assert wire.sent == [] and d.held == 1 and statements == []
    d.restart()  # a reconnect sends everything unacked at once
    assert d.send(next_pass_ms=T0 + 1000) == 1
    assert wire.seqs() == [[1]]
    d.send(box.add(_poll(T0 + 1000), "g1"), next_pass_ms=T0 + 2000)
    assert d.held == 1
    assert d.send() == 1  # no next pass (the agent stops): now
    assert wire.seqs() == [[1], [2]] and d.held == 0
    box.close()


def test_an_ack_does_not_wake_the_loop_for_readings_that_only_wait_to_be_sent(
    tmp_path: Path,
) -> None:
    """Held readings are in the outbox but not in flight: they wait for the send interval, not
    for window room an ack frees, so at 1 s polling the next poll's pass takes the ack."""
    meter = image_from_fixture(load_fixture(FIXTURES / "eastron-sdm630" / "day-import.json"))
    with ImageServer({1: meter}) as server:
        config = parse_config(
            {
                "coop": "held-coop", "home": "home-1", "poll_interval_s": 1,
                "data_dir": str(tmp_path), "broker": {"url": "mqtt://127.0.0.1:1"},
                "devices": [{"name": "grid-meter", "profile": "eastron-sdm630",
                             "modbus": server.url, "unit": 1}],
            }
        )  # fmt: skip
        ConsentLedger(config.consent_path, "home-1").share_everything(ROUND_SECOND_MS)
        agent = Agent(config, SystemClock())
        sent: list[bytes] = []
        agent.delivery.publish = sent.append  # the session is never started here
        try:
            agent._poll_due()
            live, agent._live = agent._live, []
            agent.delivery.send(live, next_pass_ms=min(s.next_due_ms for s in agent._devices))
            assert sent == [] and agent.outbox.count() == 1  # stored, held
            agent._wake.set()
            agent._sleep_until_due()
            agent._on_message(agent._ack_topic, encode(Ack("home-1", {"grid-meter": [[1, 1]]})))
            assert not agent._wake.is_set()
            assert agent._acks.qsize() == 1
        finally:
            agent.outbox.close()
            agent.energy.close()
            for s in agent._devices:
                s.device.close()


_BASE: dict[str, Any] = {
    "coop": "c",
    "home": "home-1",
    "broker": {"url": "mqtt://hub.local:1883"},
    "devices": [{"name": "m", "profile": "eastron-sdm630", "modbus": "tcp://h:502", "unit": 1}],
}


def test_the_send_interval_defaults_to_5_s() -> None:
    assert parse_config(dict(_BASE)).send_interval_s == 5.0
    assert parse_config({**_BASE, "send_interval_s": 0}).send_interval_s == 0.0


@given(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.lists(st.integers(), max_size=2)
)
@settings(max_examples=300)
def test_any_send_interval_loads_in_range_or_is_one_sentence_naming_the_key(value: Any) -> None:
    data = {**_BASE, "send_interval_s": value}
    try:
        got = parse_config(data).send_interval_s
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("send_interval_s "), message
        assert "\n" not in message
        return
    assert type(value) in (int, float) and math.isfinite(value)
    assert 0 <= value <= 60 and got == value


@pytest.mark.parametrize("value", [-1, 61, math.inf, math.nan, "5", True])
def test_out_of_range_or_wrong_type_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^send_interval_s must be"):
        parse_config({**_BASE, "send_interval_s": value})


def test_held_readings_are_kept_as_stored_when_the_outbox_is_over_its_budget(
    tmp_path: Path,
) -> None:
    """What is sent is what was stored: a held reading is neither merged nor dropped."""
    clock = ManualClock(T0)
    box = Outbox(tmp_path / "o.db", budget_bytes=1, durable=False)  # over budget at once
    wire = _Wire(clock)
    d = Delivery(box, "home-1", clock, wire.publish)
    for i in range(3):
        d.send(box.add(_poll(T0 + i * 1000), "g1"), next_pass_ms=T0 + (i + 1) * 1000)
        clock.advance(1000)
    assert d.held == 3
    box.enforce_budget(keep=frozenset(d.inflight) | d.held_keys())
    assert [(r.device, r.seq) for r in box.rows([("grid-meter", s) for s in (1, 2, 3)])] == [
        ("grid-meter", 1),
        ("grid-meter", 2),
        ("grid-meter", 3),
    ]
    box.enforce_budget()  # without them, the same file gives them up (the test's premise)
    assert len(box.rows([("grid-meter", s) for s in (1, 2, 3)])) < 3
    box.close()
