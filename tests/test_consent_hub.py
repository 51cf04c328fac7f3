"""Consent at the hub: what crosses the wire, erasure on revocation, purpose-scoped reading.

The observer is subscribed to ``coopwatt/{coop}/#`` on a broker that lets it see everything (the
test broker allows anonymous access), so it sees whatever any home or the hub sends, on every
topic, including what does not decode.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from hub.app import ingest_with_consent
from hub.consent.book import ConsentBook, PurposeView
from hub.ops.community import community_figures, group_total
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import CodecError, decode_message, encode
from protocol.consent import Purpose, PurposeGrant, Resolution, next_version, nothing_shared
from protocol.payloads import Reading, ReadingBatch, Receipt
from protocol.quantities import Role
from protocol.session import BrokerSettings
from protocol.topics import HomeTopic, home_topic
from sim.broker import RunningBroker
from sim.household import SimHome
from sim.modbus_server import SimModbusServers
from tests.harness import wait_for
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_MIDNIGHT_UTC_MS
Q = 900_000
MIN = 60_000


@dataclass(frozen=True)
class Undecodable:
    """A message that broke the wire contract: kept as it came, with the codec's reason."""

    topic: str
    payload: bytes
    error: str


class Observer:
    """Every message published under the cooperative's topics, in arrival order.

    Subscribes to ``coopwatt/{coop}/#`` and returns only once the broker granted it (SUBACK),
    so nothing a test does after constructing it goes unseen. Each message is decoded as it
    arrives; one that does not decode is recorded as :class:`Undecodable` (raising in paho's
    callback would end its network thread, and the observer would go deaf without a word).
    """

    SUBACK_TIMEOUT_S = 10.0

    def __init__(self, broker: RunningBroker, coop: str) -> None:
        self.topic_filter = f"coopwatt/{coop}/#"
        self.messages: list[tuple[str, str, object]] = []  # (topic, kind, payload)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.refused: list[object] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"observer-{coop}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(self.SUBACK_TIMEOUT_S) or self.refused:
            self.close()
            raise AssertionError(
                f"the broker did not grant {self.topic_filter} within "
                f"{self.SUBACK_TIMEOUT_S} s: {self.refused or 'no SUBACK'}"
            )

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[Any], props: object
    ) -> None:
        self.refused = [r for r in reasons if r.is_failure]
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic, data = msg.topic, bytes(msg.payload)
        record: tuple[str, str, object]
        if not data:
            record = (topic, "cleared", None)  # a retained message removed
        else:
            try:
                address, payload = decode_message(topic, data)
                record = (topic, address.kind.value, payload)
            except CodecError as exc:
                record = (topic, "undecodable", Undecodable(topic, data, str(exc)))
        with self.lock:
            self.messages.append(record)

    def of(self, kind: str) -> list[object]:
        with self.lock:
            return [p for _, k, p in self.messages if k == kind]

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.messages]

    def undecodable(self) -> list[Undecodable]:
        return [m for m in self.of("undecodable") if isinstance(m, Undecodable)]

    def readings(self) -> list[Reading]:
        return [r for b in self.of("readings") if isinstance(b, ReadingBatch) for r in b.readings]

    def receipts(self) -> list[Receipt]:
        return [r for r in self.of("receipts") if isinstance(r, Receipt)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Home:
    """A simulated home, its agent and the hub on one ManualClock, polling once a minute."""

    def __init__(self, broker: RunningBroker, tmp: Path) -> None:
        self.coop = f"c-{uuid.uuid4().hex[:10]}"
        self.clock = ManualClock(T0)
        self.sim = SimHome("home-1", 9, self.clock)
        self.servers = SimModbusServers([self.sim])
        self.servers.start()
        self.store = Store.open(tmp / "hub.db", self.coop, clock=self.clock)
        self.hub, self.book = ingest_with_consent(
            self.store, BrokerSettings(broker.url, f"hub-{self.coop}"), self.coop, self.clock
        )
        self.hub.start()
        self.observer = Observer(broker, self.coop)
        eps = self.servers.endpoints()["home-1"]
        self.config = AgentConfig(
            coop=self.coop, home="home-1",
            broker=BrokerSettings(broker.url, f"agent-{self.coop}"), data_dir=tmp / "agent",
            devices=tuple(DeviceConfig(n, e.profile, f"tcp://{e.host}:{e.port}", e.unit, 60.0)
                          for n, e in eps.items()),
        )  # fmt: skip
        self.ledger = ConsentLedger(self.config.consent_path, "home-1")
        self.agent: Agent | None = None

    def start_agent(self) -> None:
        self.agent = Agent(self.config, self.clock, housekeeping_s=0.2)
        self.thread = threading.Thread(target=self.agent.run, kwargs={"drain_timeout_s": 1.0})
        self.thread.start()
        wait_for(lambda: self.agent is not None and self.agent.polls >= 1)

    def minutes(self, n: int) -> None:
        agent = self.agent
        assert agent is not None
        for _ in range(n):
            polls = agent.polls
            self.clock.advance(MIN)
            wait_for(lambda: agent.polls > polls)  # noqa: B023 - waited for in this pass
        wait_for(lambda: agent.backlog == 0)

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.thread.join(20)
        self.hub.stop()
        self.observer.close()
        self.store.close()
        self.servers.stop()


@pytest.fixture
def home(mosquitto: RunningBroker, tmp_path: Path) -> Iterator[Home]:
    h = Home(mosquitto, tmp_path)
    yield h
    h.close()


def test_ungranted_streams_and_finer_data_never_cross_the_wire(home: Home) -> None:
    home.ledger.grant([Role.GRID], [Purpose.SETTLEMENT], Resolution.MIN15, 400, T0)
    home.start_agent()
    home.minutes(61)
    wait_for(lambda: len(home.observer.readings()) >= 4)
    seen = home.observer.readings()
    assert {r.device for r in seen} == {"grid-meter"}  # PV and wind were never granted
    for r in seen:
        assert r.period_ms == Q and r.ts_ms % Q == 0, (r.ts_ms, r.period_ms)
        assert r.grant == "g1"
    assert {r.seq for r in seen} == {1, 2, 3, 4}
    grants = home.observer.of("consent")
    assert grants and all(getattr(g, "version", None) == 1 for g in grants)
    assert any(r.kind == "consent-recorded" for r in home.observer.receipts())
    assert {r.device for r in home.store.iter_readings()} == {"grid-meter"}


def test_revoking_a_stream_erases_it_at_the_hub_with_a_receipt(home: Home) -> None:
    home.ledger.share_everything(T0)
    home.start_agent()
    home.minutes(5)
    assert any(r.device == "pv-inverter" for r in home.store.iter_readings())
    home.ledger.revoke([Role.PV], None, home.clock.now_ms())
    home.minutes(3)
    wait_for(lambda: any(r.kind == "data-erased" for r in home.observer.receipts()))
    receipt = next(r for r in home.observer.receipts() if r.kind == "data-erased")
    assert receipt.version == 2
    assert receipt.erased is not None and receipt.erased["pv"] >= 6
    assert not any(r.device == "pv-inverter" for r in home.store.iter_readings())
    last_pv = max(r.ts_ms for r in home.observer.readings() if r.device == "pv-inverter")
    home.minutes(2)
    assert max(r.ts_ms for r in home.observer.readings() if r.device == "pv-inverter") == last_pv
    assert [g.version for g in home.book.history("home-1")] == [1, 2]


def test_a_coarser_grant_merges_what_the_hub_holds_keeping_counters_exact(home: Home) -> None:
    home.ledger.grant([Role.GRID], [Purpose.FORECAST], Resolution.RAW, 30, T0)
    home.start_agent()
    home.minutes(45)
    before = [r for r in home.store.iter_readings() if r.device == "grid-meter"]
    assert len(before) == 46
    home.ledger.grant([Role.GRID], [Purpose.FORECAST], Resolution.MIN15, 30, home.clock.now_ms())
    home.minutes(1)
    wait_for(lambda: any(r.kind == "data-erased" for r in home.observer.receipts()))
    after = [r for r in home.store.iter_readings() if r.device == "grid-meter"]
    quarter_hours = [r for r in after if r.ts_ms <= T0 + 45 * MIN]
    assert len(quarter_hours) == 4  # T0 on its own, then one per quarter hour
    by_seq = {r.seq: r for r in before}
    for r in quarter_hours:
        assert r.quantities["energy_import_wh"] == by_seq[r.seq].quantities["energy_import_wh"]


def _batch(seq: int, ts: int, import_wh: float, grant: str = "g1") -> tuple[str, ReadingBatch]:
    q: dict[str, float | str] = {"power_w": 1000.0, "energy_import_wh": import_wh,
                                 "energy_export_wh": 0.0}  # fmt: skip
    return ("home-1", ReadingBatch("home-1", ts, [Reading("m", seq, ts, Role.GRID, grant, q)]))


def test_a_purpose_sees_only_what_was_granted_for_it(tmp_path: Path) -> None:
    with Store.open(tmp_path / "hub.db", "c1") as store:
        book = ConsentBook(store)
        terms = {
            "settlement": PurposeGrant(Resolution.RAW, 400),
            "forecast": PurposeGrant(Resolution.HOURLY, 2),
        }
        g1 = next_version(nothing_shared("home-1"), {"grid": terms}, T0)
        assert book.record(g1, T0).recorded
        store.insert_batches([_batch(i + 1, T0 + i * Q, 100.0 * i) for i in range(13)], T0)
        now = T0 + 3 * 3_600_000
        settlement = list(PurposeView(store, book, Purpose.SETTLEMENT).readings(now))
        assert len(settlement) == 13  # raw, as granted
        forecast = list(PurposeView(store, book, Purpose.FORECAST).readings(now))
        # Hourly: T0 sets the start, then one aggregate per complete hour.
        assert [r.ts_ms for r in forecast] == [T0 + h * 3_600_000 for h in (1, 2, 3)]
        assert all(r.period_ms == 3_600_000 for r in forecast)
        assert forecast[0].quantities["power_w"] == pytest.approx(400.0)  # 400 Wh in an hour
        assert list(PurposeView(store, book, Purpose.PROMPTS).readings(now)) == []
        # Forecast keeps 2 days: on day 3 the forecast sees nothing, settlement still all.
        later = T0 + 3 * 86_400_000
        assert list(PurposeView(store, book, Purpose.FORECAST).readings(later)) == []
        assert len(list(PurposeView(store, book, Purpose.SETTLEMENT).readings(later))) == 13
        # Readings under a grant the hub has not seen wait; withdrawn streams are withheld.
        assert book.admit("home-1", Role.GRID, "g2") == "wait"
        assert book.admit("home-1", Role.PV, "g1") == "withhold"
        assert book.admit("home-1", Role.GRID, "g1") == "store"


def test_a_grant_that_breaks_the_chain_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "hub.db", "c1") as store:
        book = ConsentBook(store)
        g1 = next_version(nothing_shared("home-1"), {}, T0)
        g2 = next_version(g1, {"grid": {"forecast": PurposeGrant(Resolution.RAW, 1)}}, T0 + 1)
        assert book.record(g1, T0).recorded
        assert book.record(g1, T0).reason is None  # the retained copy again: nothing to do
        assert book.record(g2, T0).recorded
        outcome = book.record(next_version(g1, {}, T0 + 2), T0)  # a rewritten version 2
        assert not outcome.recorded and outcome.reason and "does not follow" in outcome.reason
        with store.transaction() as conn, pytest.raises(Exception, match="append-only"):
            conn.execute("DELETE FROM consent_ledger")


def test_community_figures_are_withheld_below_k_homes() -> None:
    assert group_total({"a": 1.0, "b": 2.0}, k=5).value_wh is None
    assert group_total({f"h{i}": 1.0 for i in range(5)}, k=5).value_wh == 5.0
    assert group_total({}, k=5).homes == 0


def test_community_figures_read_only_homes_granting_community_stats(tmp_path: Path) -> None:
    with Store.open(tmp_path / "hub.db", "c1") as store:
        book = ConsentBook(store)
        batches = []
        for i in range(6):
            home = f"home-{i}"
            shares = i < 5 and {"grid": {"community-stats": PurposeGrant(Resolution.RAW, 30)}}
            book.record(next_version(nothing_shared(home), shares or {}, T0), T0)
            for n in range(3):
                q: dict[str, float | str] = {"energy_import_wh": 10.0 * n, "energy_export_wh": 0.0}
                r = Reading("m", n + 1, T0 + n * Q, Role.GRID, "g1", q)
                batches.append((home, ReadingBatch(home, T0, [r])))
        store.insert_batches(batches, T0)
        view = PurposeView(store, book, Purpose.COMMUNITY_STATS)
        figures = community_figures(view, T0 + 2 * Q, window_ms=3_600_000, k=5)
        assert figures["imported"].homes == 5  # home-5 shares nothing for community stats
        assert figures["imported"].value_wh == pytest.approx(5 * 20.0)
        assert community_figures(view, T0 + 2 * Q, k=6)["imported"].value_wh is None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    resolution=st.sampled_from(list(Resolution)),
    steps=st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=40),
    shuffled=st.randoms(use_true_random=False),
    since_min=st.integers(0, 300),
)
def test_counter_ends_are_the_ends_of_what_the_purpose_reads(
    tmp_path_factory: pytest.TempPathFactory,
    resolution: Resolution,
    steps: list[tuple[int, bool]],
    shuffled: random.Random,
    since_min: int,
) -> None:
    """Community figures read each device's first and last reading in the window, not all of
    them: the ends must be those of the full stream at the granted resolution, whatever the
    spacing, gaps and arrival order, and with readings that carry no counter."""
    tmp = tmp_path_factory.mktemp("ends")
    with Store.open(tmp / "hub.db", "c1") as store:
        book = ConsentBook(store)
        grant = {"grid": {"community-stats": PurposeGrant(resolution, 30)}}
        book.record(next_version(nothing_shared("home-1"), grant, T0), T0)
        readings, t, energy = [], T0, 0.0
        for n, (gap_min, counted) in enumerate(steps):
            t += gap_min * MIN
            energy += gap_min
            q: dict[str, float | str] = {"power_w": 100.0}
            if counted:
                q |= {"energy_import_wh": energy, "energy_export_wh": 0.0}
            readings.append(Reading("m", n + 1, t, Role.GRID, "g1", q))
        shuffled.shuffle(readings)
        store.insert_batches([("home-1", ReadingBatch("home-1", T0, readings))], T0)
        view = PurposeView(store, book, Purpose.COMMUNITY_STATS)
        now, since = t + MIN, T0 + since_min * MIN
        counters = ("energy_import_wh", "energy_export_wh")
        whole: dict[str, list[float]] = {}  # every value the purpose reads, in order
        for r in view.readings(now, role=Role.GRID, since_ms=since):
            for c in counters:
                if c in r.quantities:
                    whole.setdefault(c, []).append(float(r.quantities[c]))
        ends = list(view.counter_ends(now, role=Role.GRID, since_ms=since, counters=counters))
        if not any(True for _ in view.readings(now, role=Role.GRID, since_ms=since)):
            assert ends == []
            return
        [(home, device, by_counter)] = ends
        assert (home, device) == ("home-1", "m")
        assert by_counter == {c: (v[0], v[-1]) for c, v in whole.items()}


def test_settlement_reads_only_homes_that_share_for_settlement(tmp_path: Path) -> None:
    from hub.settlement.source import read_settlement_counters

    with Store.open(tmp_path / "hub.db", "c1") as store:
        book = ConsentBook(store)
        for home, purpose in (("home-a", "settlement"), ("home-b", "forecast")):
            terms = {"grid": {purpose: PurposeGrant(Resolution.MIN15, 400)}}
            book.record(next_version(nothing_shared(home), terms, T0), T0)
            store.insert_batches(
                [(home, ReadingBatch(home, T0, [
                    Reading("m", i + 1, T0 + i * MIN, Role.GRID, "g1",
                            {"energy_import_wh": 10.0 * i, "energy_export_wh": 0.0})
                    for i in range(31)
                ]))], T0,
            )  # fmt: skip
        counters = read_settlement_counters(store, T0, T0 + 30 * MIN)
        assert list(counters) == ["home-a"]  # home-b shares its meter for the forecast only
        imported, _ = counters["home-a"].grid["m"]
        # 15-minute consent: the quarter-hour closing counters only, not every minute's.
        assert imported.ts_ms == (T0, T0 + 15 * MIN, T0 + 30 * MIN)


def test_the_observer_records_past_an_undecodable_message(mosquitto: RunningBroker) -> None:
    """A payload that breaks the wire contract is recorded as such; the observer keeps watching
    every topic after it (paho's network thread must not die in the callback)."""
    coop = f"c-{uuid.uuid4().hex[:10]}"
    observer = Observer(mosquitto, coop)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sender-{coop}")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        readings = home_topic(coop, "home-9", HomeTopic.READINGS)
        q: dict[str, float | str] = {"energy_import_wh": 1.0}
        batch = ReadingBatch("home-9", T0, [Reading("m", 1, T0, Role.GRID, "g1", q)])
        for topic, payload in (
            (readings, b"not json"),
            (f"coopwatt/{coop}/hub/no-such-kind", b"{}"),
            (readings, encode(batch)),
            (home_topic(coop, "home-9", HomeTopic.STATUS), b'{"v": 1}'),
        ):
            sender.publish(topic, payload, qos=1).wait_for_publish(10)
        wait_for(lambda: len(observer.readings()) == 1, 10, "the valid batch after the bad ones")
        assert observer.readings() == batch.readings
        wait_for(lambda: len(observer.undecodable()) == 3, 10, "three undecodable messages")
        bad = observer.undecodable()
        assert [(m.topic, m.payload) for m in bad] == [
            (readings, b"not json"),
            (f"coopwatt/{coop}/hub/no-such-kind", b"{}"),
            (home_topic(coop, "home-9", HomeTopic.STATUS), b'{"v": 1}'),
        ]
        assert all(m.error for m in bad)
        assert len(observer.topics()) == 4  # every message of every topic, in order
    finally:
        sender.loop_stop()
        sender.disconnect()
        observer.close()
