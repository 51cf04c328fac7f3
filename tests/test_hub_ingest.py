"""hub.ingest.service against the session's real Mosquitto: publish like an agent, watch acks."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.ingest.service import Ingest
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.payloads import Ack, HomeStatus, HubStatus, Reading, ReadingBatch
from protocol.quantities import Role
from protocol.session import BrokerSettings
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic
from sim.broker import RunningBroker as Broker
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS
WAIT_S = 5.0

Message = tuple[str, bytes]


class Probe:
    """A plain paho client playing the agents' side: publishes, and records all of a coop."""

    def __init__(self, broker: Broker, coop: str, protocol: int = 5) -> None:
        self.coop = coop
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{coop}",
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"coopwatt/{coop}/#", qos=1)
        assert subscribed.wait(WAIT_S), "probe subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    def wait_for(self, predicate: Callable[[list[Message]], bool]) -> list[Message]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.messages), WAIT_S)
            assert ok, f"timed out; got {[t for t, _ in self.messages]}"
            return list(self.messages)

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.messages if t == topic]

    def acks(self, home: str) -> list[Ack]:
        return [decode(Ack, p) for p in self.on(home_topic(self.coop, home, HomeTopic.ACK))]

    def wait_acks(self, home: str, count: int) -> list[Ack]:
        topic = home_topic(self.coop, home, HomeTopic.ACK)
        self.wait_for(lambda ms: sum(1 for t, _ in ms if t == topic) >= count)
        return self.acks(home)

    def hub_states(self) -> list[str]:
        return [decode(HubStatus, p).state for p in self.on(hub_topic(self.coop, HubTopic.STATUS))]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(device: str, seq: int, role: Role = Role.GRID, **q: float | str) -> Reading:
    return Reading(device, seq, T0 + seq * 10_000, role, "g1", q or {"power_w": float(seq)})


def readings_topic(coop: str, home: str) -> str:
    return home_topic(coop, home, HomeTopic.READINGS)


def batch_bytes(home: str, *readings: Reading) -> bytes:
    return encode(ReadingBatch(home=home, sent_ms=T0, readings=list(readings)))


@pytest.fixture
def coop() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"  # the broker is shared by the session: isolate by coop


@contextlib.contextmanager
def running_hub(
    broker: Broker, db_path: Path, coop: str, protocol: int = 5, **options: Any
) -> Iterator[tuple[Ingest, Probe]]:
    store = Store.open(db_path, coop)
    probe = Probe(broker, coop, protocol)
    settings = BrokerSettings(
        url=broker.url, client_id=f"hub-{coop}", protocol=5 if protocol == 5 else 311
    )
    ingest = Ingest(store, settings, coop, ManualClock(T0), **options)
    try:
        ingest.start()
        # The hub subscribes before it publishes "online", so once the probe sees "online" the
        # broker has the hub's subscriptions.
        probe.wait_for(lambda ms: any(t.endswith("/hub/status") for t, _ in ms))
        assert probe.hub_states() == ["online"]
        yield ingest, probe
    finally:
        ingest.stop()
        probe.close()
        store.close()


def stored(db_path: Path) -> list[tuple[str, str, int]]:
    """Rows as another connection sees them: what is committed."""
    with Store.open_existing(db_path) as s:
        return [(r.home, r.device, r.seq) for r in s.iter_readings()]


def test_a_full_queue_does_not_wait_out_the_linger(
    mosquitto: Broker, tmp_path: Path, coop: str
) -> None:
    """With the queue full (here: one byte, so every message fills it), no further message can
    join the group until the worker has taken it, so lingering for one only stalls the hub: the
    old worker waited ``linger_s`` (an hour here) before storing each message."""
    db_path = tmp_path / "hub.db"
    with running_hub(mosquitto, db_path, coop, max_queue_bytes=1, linger_s=3600.0) as (
        ingest,
        probe,
    ):
        for seq in (1, 2, 3):
            probe.publish(readings_topic(coop, "home-1"), batch_bytes("home-1", reading("m", seq)))
        assert ingest.wait_idle(WAIT_S * 4), "the worker lingered for a message that could not come"
        assert stored(db_path) == [("home-1", "m", 1), ("home-1", "m", 2), ("home-1", "m", 3)]


@pytest.mark.parametrize("protocol", [5, 311])
def test_batch_is_committed_then_acked(
    mosquitto: Broker, tmp_path: Path, coop: str, protocol: int
) -> None:
    db_path = tmp_path / "hub.db"
    with running_hub(mosquitto, db_path, coop, protocol) as (ingest, probe):
        probe.publish(
            readings_topic(coop, "home-1"),
            batch_bytes(
                "home-1",
                reading("meter", 1),
                reading("meter", 2),
                reading("meter", 4),
                reading("pv", 1, Role.PV, energy_wh=12.5),
            ),
        )
        (ack,) = probe.wait_acks("home-1", 1)
        assert ack == Ack(home="home-1", acked={"meter": [[1, 2], [4, 4]], "pv": [[1, 1]]})
        # Acked means committed: a separate connection already sees every row.
        assert stored(db_path) == [
            ("home-1", "meter", 1),
            ("home-1", "meter", 2),
            ("home-1", "meter", 4),
            ("home-1", "pv", 1),
        ]
        with Store.open_existing(db_path) as s:
            assert {r.received_ms for r in s.iter_readings()} == {T0}
        assert ingest.wait_idle(WAIT_S)
        stats = ingest.stats()
        assert (stats["received"], stats["stored"], stats["acks_sent"], stats["rejected"]) == (
            1,
            4,
            1,
            0,
        )


def test_duplicate_is_acked_again_not_stored_twice(
    mosquitto: Broker, tmp_path: Path, coop: str
) -> None:
    db_path = tmp_path / "hub.db"
    payload = batch_bytes("home-1", reading("meter", 1), reading("meter", 2))
    with running_hub(mosquitto, db_path, coop) as (ingest, probe):
        probe.publish(readings_topic(coop, "home-1"), payload)
        probe.wait_acks("home-1", 1)
        probe.publish(readings_topic(coop, "home-1"), payload)
        acks = probe.wait_acks("home-1", 2)
        assert acks == [Ack(home="home-1", acked={"meter": [[1, 2]]})] * 2
        assert ingest.wait_until(lambda s: s["duplicates"] == 2, WAIT_S)
        assert ingest.stats()["stored"] == 2
    assert stored(db_path) == [("home-1", "meter", 1), ("home-1", "meter", 2)]


def test_bad_messages_are_rejected_and_the_worker_lives_on(
    mosquitto: Broker, tmp_path: Path, coop: str, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "hub.db"
    with running_hub(mosquitto, db_path, coop) as (ingest, probe):
        probe.publish(readings_topic(coop, "home-1"), b"\x00 not json at all")
        probe.publish(readings_topic(coop, "home-1"), b'{"v": 1, "home": "home-1"}')
        # A home publishing as another: the payload's home differs from the topic's.
        probe.publish(readings_topic(coop, "home-1"), batch_bytes("home-2", reading("meter", 1)))
        assert ingest.wait_until(lambda s: s["rejected"] == 3, WAIT_S)
        # The worker is alive: a good batch after the bad ones is stored and acked.
        probe.publish(readings_topic(coop, "home-1"), batch_bytes("home-1", reading("meter", 9)))
        probe.wait_acks("home-1", 1)
        assert ingest.wait_idle(WAIT_S)
        assert probe.acks("home-1") == [Ack(home="home-1", acked={"meter": [[9, 9]]})]
        assert probe.acks("home-2") == []
        assert ingest.stats()["rejected"] == 3
    assert stored(db_path) == [("home-1", "meter", 9)]
    assert "differs from topic home" in caplog.text
    assert "not JSON" in caplog.text


def test_role_mismatch_is_not_acked(mosquitto: Broker, tmp_path: Path, coop: str) -> None:
    with running_hub(mosquitto, tmp_path / "hub.db", coop) as (ingest, probe):
        topic = readings_topic(coop, "home-1")
        probe.publish(topic, batch_bytes("home-1", reading("meter", 1)))
        probe.wait_acks("home-1", 1)
        mixed = batch_bytes("home-1", reading("meter", 2, Role.PV), reading("meter", 3))
        probe.publish(topic, mixed)
        acks = probe.wait_acks("home-1", 2)
        assert acks[1] == Ack(home="home-1", acked={"meter": [[3, 3]]})
        assert ingest.wait_until(lambda s: s["rejected_readings"] == 1, WAIT_S)


def test_home_status_is_recorded(mosquitto: Broker, tmp_path: Path, coop: str) -> None:
    db_path = tmp_path / "hub.db"
    with running_hub(mosquitto, db_path, coop) as (ingest, probe):
        status = HomeStatus(home="home-1", state="online", ts_ms=T0, backlog=42, version="0.1.0")
        probe.publish(home_topic(coop, "home-1", HomeTopic.STATUS), encode(status), retain=True)
        assert ingest.wait_until(lambda s: s["statuses"] == 1, WAIT_S)
        with Store.open_existing(db_path) as s:
            row = s.home_statuses()["home-1"]
        assert (row.state, row.ts_ms, row.backlog, row.last_seen_ms) == ("online", T0, 42, T0)
        # Clear the retained message so it does not outlive the test.
        probe.publish(home_topic(coop, "home-1", HomeTopic.STATUS), b"", retain=True)


def test_readings_a_home_could_not_keep_are_counted_on_the_hub(
    mosquitto: Broker, tmp_path: Path, coop: str, caplog: pytest.LogCaptureFixture
) -> None:
    with running_hub(mosquitto, tmp_path / "hub.db", coop) as (ingest, probe):
        topic = home_topic(coop, "home-1", HomeTopic.STATUS)
        for lost, compacted in ((0, 90), (7, 180)):
            status = HomeStatus("home-1", "online", ts_ms=T0, lost=lost, compacted=compacted)
            probe.publish(topic, encode(status))
        probe.publish(topic, encode(HomeStatus("home-1", "offline")))  # a will says nothing
        assert ingest.wait_until(lambda s: s["statuses"] == 3, WAIT_S)
        stats = ingest.stats()
        assert (stats["lost_at_homes"], stats["compacted_at_homes"]) == (7, 180)
    assert "home=home-1 lost 7 readings" in caplog.text


def test_store_failure_is_not_acked_and_the_resend_is(
    mosquitto: Broker, tmp_path: Path, coop: str
) -> None:
    with running_hub(mosquitto, tmp_path / "hub.db", coop) as (ingest, probe):
        ingest.store.db.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON readings "
            "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
        )
        payload = batch_bytes("home-1", reading("meter", 1))
        probe.publish(readings_topic(coop, "home-1"), payload)
        assert ingest.wait_until(lambda s: s["errors"] == 1, WAIT_S)
        assert probe.acks("home-1") == []
        ingest.store.db.execute("DROP TRIGGER full_disk")
        probe.publish(readings_topic(coop, "home-1"), payload)  # the agent resends
        assert probe.wait_acks("home-1", 1) == [Ack(home="home-1", acked={"meter": [[1, 1]]})]


def test_stop_drains_acks_and_goes_offline(mosquitto: Broker, tmp_path: Path, coop: str) -> None:
    db_path = tmp_path / "hub.db"
    with running_hub(mosquitto, db_path, coop) as (ingest, probe):
        topic = readings_topic(coop, "home-1")
        # Hold the store so the worker blocks in its first insert and the rest pile up queued.
        with ingest.store._lock:
            for seq in range(1, 21):
                probe.publish(topic, batch_bytes("home-1", reading("meter", seq)))
            assert ingest.wait_until(lambda s: s["pending"] == 20, WAIT_S)
            stopper = threading.Thread(target=ingest.stop)
            stopper.start()
        stopper.join(WAIT_S)
        assert not stopper.is_alive()
        stats = ingest.stats()
        assert (stats["pending"], stats["stored"], stats["dropped"]) == (0, 20, 0)
        assert [seq for _, _, seq in stored(db_path)] == list(range(1, 21))
        # Everything queued was stored and acked before the hub went offline.
        probe.wait_for(lambda ms: probe.hub_states() == ["online", "offline"])
        acked = sorted(s for ack in probe.acks("home-1") for s in ack.seqs("meter"))
        assert acked == list(range(1, 21))
        topics = [t for t, _ in probe.messages]
        assert topics.index(hub_topic(coop, HubTopic.STATUS), 1) > max(
            i for i, t in enumerate(topics) if t.endswith("/ack")
        )
    # The retained hub status says offline for anyone who looks later.
    late = Probe(mosquitto, coop)
    try:
        late.wait_for(lambda ms: bool(late.hub_states()))
        assert late.hub_states() == ["offline"]
    finally:
        late.close()
