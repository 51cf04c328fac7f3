"""sim.loadgen: simulated homes on the real wire, against the session's Mosquitto and a real hub.

Small on purpose (CI time): the benchmarks in bench/ run the same code with thousands of homes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.consent.book import ConsentBook
from hub.consent.service import attach
from hub.ingest.service import Ingest
from hub.storage.store import Store
from protocol.clock import ManualClock, SimClock
from protocol.codec import decode, encode
from protocol.payloads import Ack, ReadingBatch
from protocol.session import BrokerSettings
from sim.broker import RunningBroker
from sim.loadgen import LinkedClock, LoadHome, Neighbourhood, share_everything, stored_seq_ranges
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_MIDNIGHT_UTC_MS


def exactly_once(hood: Neighbourhood, db: Path) -> None:
    expected = hood.expected()
    assert expected
    assert stored_seq_ranges(db) == {key: (last, 1, last) for key, last in expected.items()}


@pytest.fixture(params=[64 * 1024 * 1024, 1], ids=["queue-64MiB", "queue-1B"])
def hub(
    mosquitto: RunningBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Path, Ingest]]:
    """A hub (ingest with consent, as `coopwatt-hub run` wires it) for a coop of its own; also
    with a 1-byte queue, so paho's thread waits for the worker before every message (the
    worker does not linger for a second message while the queue is full: it cannot come)."""
    max_queue_bytes: int = request.param
    coop = f"scale-{uuid.uuid4().hex[:8]}"
    clock = ManualClock(T0)
    store = Store.open(tmp_path / "hub.db", coop, clock=clock)
    settings = BrokerSettings(mosquitto.url, f"hub-{coop}")
    book = ConsentBook(store)
    # As hub.app.ingest_with_consent wires it, with a queue limit of the test's.
    ingest = Ingest(store, settings, coop, clock, max_queue_bytes=max_queue_bytes, admit=book.admit)
    attach(ingest, book)
    ingest.start()
    assert ingest.connected.wait(5)
    try:
        yield coop, tmp_path / "hub.db", ingest
    finally:
        ingest.stop()
        store.close()


def test_a_backlog_drains_and_lands_exactly_once(
    mosquitto: RunningBroker, hub: tuple[str, Path, Ingest]
) -> None:
    coop, db, ingest = hub
    clock = ManualClock(T0)
    hood = Neighbourhood(mosquitto.url, coop, 12, clock, batch_size=50, window=200)
    try:
        hood.connect(20)  # waits for each home's consent receipt
        queued = hood.fill_backlog(40)
        assert queued == 40 * sum(len(h.devices) for h in hood.homes)
        clock.set(T0 + 400_000)
        hood.drain(30)
        totals = hood.totals()
    finally:
        hood.close()
    assert ingest.wait_idle(5)
    c = totals.counts
    assert (c.generated, c.acked, totals.outstanding) == (queued, queued, 0)
    assert c.foreign_acks == 0 and hood.rejected_messages == 0
    assert c.messages > len(hood.homes)  # batches of 50 within a window of 200
    exactly_once(hood, db)
    assert ingest.stats()["statuses"] >= len(hood.homes)  # each home's retained status


def test_homes_poll_on_a_fast_clock_and_every_ack_reaches_its_home(
    mosquitto: RunningBroker, hub: tuple[str, Path, Ingest]
) -> None:
    coop, db, _ = hub
    clock = SimClock(T0, speed=1200)
    hood = Neighbourhood(mosquitto.url, coop, 8, clock, cadence_s=10)
    ticks: list[int] = []

    def tick(now_ms: int) -> bool:
        ticks.append(now_ms)
        return True  # keep going

    try:
        hood.connect(20)
        clock.start()
        hood.run(T0 + 600_000, on_tick=tick, tick_ms=60_000)
        totals = hood.totals()
    finally:
        hood.close()
    assert ticks
    # 10 simulated minutes at a 10 s cadence: about 60 polls a home, spread over the cadence.
    polls = [h.seq["grid-meter"] for h in hood.homes]
    assert all(55 <= p <= 61 for p in polls), polls
    assert totals.counts.acked == totals.counts.generated and totals.outstanding == 0
    assert totals.counts.foreign_acks == 0
    exactly_once(hood, db)


class FakeSession:
    """What LoadHome needs of a session: publish, recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        self.published.append((topic, payload))


def test_homes_can_send_their_polls_a_minute_at_a_time(
    mosquitto: RunningBroker, hub: tuple[str, Path, Ingest]
) -> None:
    coop, db, _ = hub
    clock = SimClock(T0, speed=1200)
    hood = Neighbourhood(mosquitto.url, coop, 6, clock, cadence_s=10)
    try:
        hood.connect(20)
        clock.start()
        hood.run(T0 + 600_000, send_every_s=60)
        totals = hood.totals()
    finally:
        hood.close()
    assert totals.counts.messages <= 6 * 12  # ten minutes: about ten messages a home
    assert totals.counts.acked == totals.counts.generated > 6 * 50 * 2
    exactly_once(hood, db)


def test_the_delivery_window_resend_and_ack_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("sim.loadgen.time.monotonic", lambda: now[0])
    clock = ManualClock(T0)
    home = LoadHome("home-1", 0, clock, batch_size=10, window=30, resend_after_s=5.0)
    session = FakeSession()
    home.session = session  # type: ignore[assignment]
    keys = [k for i in range(20) for k in home.poll(T0 + i * 10_000)]  # 3 devices: 60 readings
    assert home.pump(T0, [], ready=False) == 0 and not session.published
    home.backlog.extend(keys)
    assert home.pump(T0, [], ready=True) == 30  # the window
    assert len(session.published) == 3
    sent = [decode(ReadingBatch, p) for _, p in session.published]
    acked = {r.device: [r.seq] for r in sent[0].readings}
    first = sent[0].readings
    ack = Ack("home-1", {d: [[r.seq, r.seq] for r in first if r.device == d] for d in acked})
    home.on_ack(ack)
    home.on_ack(ack)  # again, as after a resend: counted, harmless
    home.on_ack(Ack("home-1", {"grid-meter": [[900, 900]]}))  # never produced
    assert (home.counts.acked, home.counts.duplicate_acks, home.counts.foreign_acks) == (10, 10, 1)
    assert home.pump(T0, [], ready=True) == 10  # room again for one batch
    now[0] += 6.0  # no ack for longer than resend_after_s: everything unacked goes again
    assert home.pump(T0, [], ready=True) == 30
    assert home.counts.resent == 30
    assert home.outstanding == 50
    # One range over every seq the meter made and far beyond: 20 made, 4 of them acked above
    # (the first batch), the rest never produced and counted without a loop over them.
    home.on_ack(Ack("home-1", {"grid-meter": [[1, 2**40]]}))
    assert home.counts.acked == 10 + 16
    assert home.counts.duplicate_acks == 10 + 4
    assert home.counts.foreign_acks == 1 + 2**40 - 20
    assert home.outstanding == 50 - 16
    assert not [k for k in [*home.bodies, *home.inflight] if k[0] == "grid-meter"]


def test_a_linked_clock_is_one_clock_for_every_process_that_builds_it() -> None:
    origin = 1000.0
    a = LinkedClock(T0, 60.0, origin, end_ms=T0 + 3_600_000)
    b = LinkedClock(T0, 60.0, origin, end_ms=T0 + 3_600_000)
    assert abs(a.now_ms() - b.now_ms()) < 1000
    assert a.now_ms() == T0 + 3_600_000 or a.now_ms() >= T0  # frozen at the end, or running
    before = LinkedClock(T0, 60.0, origin_s=10**12)
    assert before.now_ms() == T0  # not started yet


def test_share_everything_is_a_sealed_first_grant() -> None:
    grant = share_everything("home-1", T0)
    assert (grant.version, grant.grant, grant.prev_hash) == (1, "g1", "")
    assert grant.hash and encode(grant)
