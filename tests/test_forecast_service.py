"""The hub's forecast service on a real store and a real broker: 15-minute history from stored
readings, weather from imports, retained ``hub/forecast`` on a schedule and on new weather."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from hub.consent.book import ConsentBook
from hub.forecast.features import DAY_MS, STEP_MS, History
from hub.forecast.series import forecast_series, sync_forecast_series, weather_imported_ms
from hub.forecast.service import (
    ForecastService,
    forecast_members,
    history_from_slots,
    import_weather,
    read_community_history,
    read_weather,
    to_payload,
)
from hub.forecast.site import Site
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode_message, encode
from protocol.consent import PurposeGrant, Resolution, next_version
from protocol.payloads import Forecast, Reading, ReadingBatch
from protocol.quantities import Role
from protocol.topics import HubTopic, hub_topic
from sim.broker import RunningBroker
from tests.test_forecast_features import LAT, LON, T0, sim_community
from tests.test_hub_ingest import Probe

SITE = Site(LAT, LON)
DAYS = 9


def _fill_store(store: Store, homes: int = 3, days: int = DAYS) -> None:
    """Each home's grid meter and inverter read every 5 minutes (power_w only)."""
    history, _ = sim_community()
    start = T0 - days * DAY_MS
    offset = (start - history.start_ms) // STEP_MS
    batches = []
    for h in range(homes):
        home = f"home-{h}"
        readings = []
        for i in range(days * 96):
            demand = history.demand_w[offset + i] / homes
            pv = history.pv_w[offset + i] / homes
            for k in range(3):
                ts = start + i * STEP_MS + k * 300_000
                seq = i * 3 + k + 1
                readings.append(Reading("grid", seq, ts, Role.GRID, "g1", {"power_w": demand - pv}))
                readings.append(Reading("pv", seq, ts, Role.PV, "g1", {"power_w": pv}))
        for first in range(0, len(readings), 5000):
            batches.append((home, ReadingBatch(home, T0, readings[first : first + 5000])))
    store.insert_batches(batches, T0)


def grant(
    store: Store,
    homes: list[str],
    streams: dict[str, dict[str, PurposeGrant]] | None = None,
    at_ms: int = T0,
) -> ConsentBook:
    """Record the next consent version of each home (default: grid and pv for the forecast)."""
    book = ConsentBook(store)
    terms = streams or {r: {"forecast": PurposeGrant(Resolution.RAW, 365)} for r in ("grid", "pv")}
    for home in homes:
        outcome = book.record(next_version(book.current(home), terms, at_ms), at_ms)
        assert outcome.recorded, outcome.reason
    return book


HOMES = ["home-0", "home-1", "home-2"]


@pytest.fixture
def store_coop() -> str:
    """A cooperative of its own per test: the broker is shared by the whole run."""
    return f"f-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(store: Store) -> Store:
    """Nine days of three homes' grid and pv readings, granted for the forecast."""
    grant(store, HOMES)
    _fill_store(store)
    return store


def _read(store: Store, now_ms: int = T0, days: int = DAYS) -> History:
    return read_community_history(store, T0 - days * DAY_MS, T0, now_ms=now_ms)


def test_history_from_the_store_is_the_community_sum(store: Store) -> None:
    history = _read(store)
    expected, _ = sim_community()
    offset = (T0 - DAYS * DAY_MS - expected.start_ms) // STEP_MS
    n = DAYS * 96
    np.testing.assert_allclose(history.pv_w, expected.pv_w[offset : offset + n], rtol=1e-9)
    np.testing.assert_allclose(history.demand_w, expected.demand_w[offset : offset + n], rtol=1e-9)
    assert np.isnan(history.wind_w).all()
    # Incremental: a second read folds in nothing new and gives the same series.
    assert sync_forecast_series(store, forecast_members(store, ConsentBook(store), T0)) == 0
    again = _read(store)
    np.testing.assert_array_equal(again.demand_w, history.demand_w)


def _series(store: Store) -> dict[tuple[int, str], tuple[float, int]]:
    return {(s, r): (p, n) for s, r, p, n in forecast_series(store, 0, 2**62)}


def _rebuilt(
    store: Store, book: ConsentBook, now_ms: int
) -> dict[tuple[int, str], tuple[float, int]]:
    """The series folded afresh from every stored reading, for comparison."""
    members = forecast_members(store, book, now_ms)
    sync_forecast_series(store, {})  # everyone leaves...
    assert forecast_series(store, 0, 2**62) == []
    sync_forecast_series(store, members)  # ...and is folded in again from the readings
    return _series(store)


def _assert_same(
    a: dict[tuple[int, str], tuple[float, int]], b: dict[tuple[int, str], tuple[float, int]]
) -> None:
    assert a.keys() == b.keys()
    for key, (power, devices) in a.items():
        assert b[key][1] == devices, key
        assert b[key][0] == pytest.approx(power, rel=1e-9, abs=1e-6), key


def test_new_readings_are_folded_in_whatever_their_order(store: Store) -> None:
    book = ConsentBook(store)
    _read(store)
    start = T0 + DAY_MS
    late = [  # a backlog arriving after newer readings: seqs below the ones already stored
        Reading("grid", 10_000 + k, start + k * 300_000, Role.GRID, "g1", {"power_w": 100.0 + k})
        for k in range(6)
    ]
    store.insert_batches([("home-0", ReadingBatch("home-0", T0, late[3:]))], T0)
    assert sync_forecast_series(store, forecast_members(store, book, T0)) == 3
    store.insert_batches([("home-0", ReadingBatch("home-0", T0, late[:3]))], T0)
    agg = Reading(  # an hour's aggregate from a compacted outbox: spread over four slots
        "pv", 20_000, start + 2 * 3_600_000, Role.PV, "g1", {"power_w": 400.0}, 3_600_000
    )
    store.insert_batches([("home-1", ReadingBatch("home-1", T0, [agg]))], T0)
    assert sync_forecast_series(store, forecast_members(store, book, T0)) == 4
    series = _series(store)
    assert series[(start, "grid")] == pytest.approx((101.0, 1))  # mean of 100, 101, 102
    assert series[(start + STEP_MS, "grid")] == pytest.approx((104.0, 1))
    for k in range(4):
        assert series[(start + 3_600_000 + k * STEP_MS, "pv")] == pytest.approx((400.0, 1))
    _assert_same(series, _rebuilt(store, book, T0))


def test_the_forecast_sees_only_homes_that_grant_it(store: Store) -> None:
    full = _read(store)
    # home-2 withdraws pv from the forecast but shares it for settlement: its readings stay,
    # the forecast stops counting them.
    settlement = {"settlement": PurposeGrant(Resolution.RAW, 365)}
    book = grant(
        store,
        ["home-2"],
        {"grid": {"forecast": PurposeGrant(Resolution.RAW, 365)}, "pv": settlement},
    )
    scoped = read_community_history(store, T0 - DAYS * DAY_MS, T0, now_ms=T0, book=book)
    np.testing.assert_allclose(scoped.pv_w, full.pv_w * 2 / 3, rtol=1e-9)
    assert store.count_readings("home-2") == 2 * DAYS * 96 * 3
    # home-1 withdraws pv altogether: consent erases its readings and derived rows at once,
    # and the series loses them without the forecast having to run.
    grant(store, ["home-1"], {"grid": {"forecast": PurposeGrant(Resolution.RAW, 365)}})
    assert store.count_readings("home-1") == DAYS * 96 * 3
    series = _series(store)
    pv = [p for (slot, role), (p, n) in series.items() if role == "pv" and n]
    np.testing.assert_allclose(
        sorted(pv), sorted(full.pv_w[np.isfinite(full.pv_w)] / 3), rtol=1e-6, atol=1e-6
    )
    after = _read(store)
    np.testing.assert_allclose(after.pv_w, full.pv_w / 3, rtol=1e-9, atol=1e-6)
    _assert_same(_series(store), _rebuilt(store, ConsentBook(store), T0))


def test_retention_and_resolution_of_the_forecast_grant(store: Store) -> None:
    terms = {
        "grid": {
            "forecast": PurposeGrant(Resolution.HOURLY, 2),
            "settlement": PurposeGrant(Resolution.RAW, 365),
        },
        "pv": {"forecast": PurposeGrant(Resolution.RAW, 365)},
    }
    book = grant(store, HOMES, terms)
    history = read_community_history(store, T0 - DAYS * DAY_MS, T0, now_ms=T0, book=book)
    known = np.isfinite(history.demand_w)
    assert known.sum() == 2 * 96  # two days of grid kept for the forecast; pv for all nine
    assert np.isfinite(history.pv_w).sum() == DAYS * 96
    # Hourly: each hour's four slots hold the same value, the hour's mean.
    grid = (history.demand_w - history.pv_w)[known].reshape(-1, 4)
    np.testing.assert_allclose(grid, grid[:, :1].repeat(4, axis=1), rtol=1e-9)
    # A day later the window has moved on by a day.
    later = read_community_history(store, T0 - DAYS * DAY_MS, T0, now_ms=T0 + DAY_MS, book=book)
    assert np.isfinite(later.demand_w).sum() == 96
    _assert_same(_series(store), _rebuilt(store, book, T0 + DAY_MS))


def test_readings_still_on_their_way_are_unknown_not_a_drop(store: Store) -> None:
    full = _read(store)
    rows = [(s, r, p, n) for s, r, p, n in forecast_series(store, 0, T0)]
    last = max(s for s, *_ in rows)
    # The last slot as if only one of three homes had reported yet.
    partial = [(s, r, p / 3, 1) if s == last else (s, r, p, n) for s, r, p, n in rows]
    h = history_from_slots(partial, T0 - DAYS * DAY_MS, T0)
    assert np.isnan(h.demand_w[-1])
    np.testing.assert_array_equal(h.demand_w[:-1], full.demand_w[:-1])
    np.testing.assert_allclose(h.pv_w[-1], full.pv_w[-1] / 3)  # generation left as it is


def test_aggregate_readings_spread_over_their_period() -> None:
    rows = [(T0, "grid", 100.0), (T0, "pv", 50.0), (T0 + STEP_MS, "pv", 10.0)]
    h = history_from_slots(rows, T0, T0 + 3 * STEP_MS)
    assert h.demand_w[0] == 150.0  # consumption = import + generation
    assert np.isnan(h.demand_w[1])  # no grid meter reported
    assert h.pv_w[1] == 10.0 and np.isnan(h.pv_w[2])


def test_weather_round_trips_through_the_store(store: Store) -> None:
    _, weather = sim_community()
    assert import_weather(store, weather, T0) == len(weather)
    back = read_weather(store, 0, 2**62)
    np.testing.assert_array_equal(back.ts_ms, weather.ts_ms)
    np.testing.assert_allclose(back.wind_speed_m_s, weather.wind_speed_m_s)
    assert np.isnan(back.cloud_cover_pct).all()
    assert weather_imported_ms(store) == T0


def test_payload_round_trips_through_the_codec(store: Store) -> None:
    recorder = Recorder()
    published = recorder.messages
    service = ForecastService(store, store.coop, SITE, ManualClock(T0), recorder)
    payload = service.refresh()
    assert payload.demand.method == "model"
    assert payload.pv.method == "fallback"  # no weather imported yet
    assert payload.wind.method == "absent"
    topic, data = published[0]
    assert topic == hub_topic(store.coop, HubTopic.FORECAST)
    _, decoded = decode_message(topic, data)
    assert decoded == payload
    assert len(decoded.demand.p50_w) == 192 and decoded.start_ms == T0


def test_the_service_tunes_on_its_history_and_replays_only_what_is_new(store: Store) -> None:
    """Nine days of history at T0 (a 6-hour boundary): the issues with a week before them are
    the eight from T0 - 48 h to T0 - 6 h, the two days tuning needs."""
    clock = ManualClock(T0)
    service = ForecastService(store, store.coop, SITE, clock, Recorder())
    payload = service.refresh()
    assert payload.demand.basis is not None
    assert set(payload.demand.basis) == {"0-6h", "6-24h", "24-48h"}
    replays = dict(service._replays._replays)
    assert sorted(replays) == [T0 - k * 6 * 3_600_000 for k in range(8, 0, -1)]
    clock.advance(15 * 60_000)  # past T0: the issue at T0 itself is one more replay
    service.refresh()
    assert sorted(service._replays._replays) == [*sorted(replays), T0]
    assert all(service._replays._replays[p] is r for p, r in replays.items())  # not made again
    clock.advance(15 * 60_000)
    service.refresh()
    assert len(service._replays) == 9


def test_a_withdrawn_home_leaves_the_replays_too(store: Store) -> None:
    """Replays are forecasts made from the members of their time: when home-2 stops sharing
    for the forecast, the next refresh makes them again from what may still be read."""
    clock = ManualClock(T0)
    book = ConsentBook(store)
    service = ForecastService(store, store.coop, SITE, clock, Recorder(), book=book)
    service.refresh()
    before = dict(service._replays._replays)
    clock.advance(15 * 60_000)
    outcome = book.record(next_version(book.current("home-2"), {}, clock.now_ms()), clock.now_ms())
    assert outcome.recorded, outcome.reason
    service.refresh()
    after = service._replays._replays
    assert set(before) <= set(after)
    assert all(after[p] is not r for p, r in before.items())  # every one made again
    # ... from two homes' demand, not three: the replayed candidates are two thirds as large.
    p = min(before)
    ratio = after[p].demand["last_week"] / before[p].demand["last_week"]
    assert np.nanmedian(ratio) == pytest.approx(2 / 3, rel=1e-6)


def test_service_publishes_retained_on_schedule_and_on_new_weather(
    store: Store, mosquitto: RunningBroker
) -> None:
    from protocol.session import BrokerSettings, MqttSession

    clock = ManualClock(T0)
    session = MqttSession(BrokerSettings(url=mosquitto.url, client_id=f"fc-{store.coop}"))
    session.start()
    assert session.connected.wait(10)
    service = ForecastService(
        store, store.coop, SITE, clock, session.publish, every_s=900, weather_poll_s=60
    )
    topic = hub_topic(store.coop, HubTopic.FORECAST)
    probe = None
    try:
        service.start()
        # A late subscriber still gets the forecast: it is retained.
        probe = Probe(mosquitto, store.coop)
        probe.wait_for(lambda ms: any(t == topic for t, _ in ms))
        first = _latest(probe, topic)
        assert first.pv.method == "fallback"
        # New weather is noticed at the next poll, well before the next scheduled run.
        _, weather = sim_community()
        import_weather(store, weather, T0 + 1)
        clock.advance(60_000)
        probe.wait_for(lambda ms: _count(ms, topic) >= 2)
        assert _latest(probe, topic).pv.method == "model"
        # And on schedule.
        clock.advance(900_000)
        probe.wait_for(lambda ms: _count(ms, topic) >= 3)
        assert _latest(probe, topic).start_ms == T0 + 900_000
    finally:
        service.stop()
        session.stop()
        if probe is not None:
            probe.close()
        store.close()


class Recorder:
    """Stands in for the MQTT session: keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        assert qos == 1 and retain
        self.messages.append((topic, payload))


def _count(messages: list[tuple[str, bytes]], topic: str) -> int:
    return sum(1 for t, _ in messages if t == topic)


def _latest(probe: Probe, topic: str) -> Forecast:
    _, payload = decode_message(topic, probe.on(topic)[-1])
    assert isinstance(payload, Forecast)
    return payload


def test_a_missing_model_still_publishes_labelled_fallbacks(store: Store, tmp_path: Path) -> None:
    recorder = Recorder()
    service = ForecastService(
        store, store.coop, SITE, ManualClock(T0), recorder, model_path=tmp_path / "missing.onnx"
    )
    payload = service.refresh()
    assert payload.model == "none"
    assert payload.pv.method == "fallback"
    assert "no forecast model" in (payload.pv.note or "")
    # Demand without the model: the simple forecaster that scored best on the recent weeks.
    assert payload.demand.method == "selected"
    assert payload.demand.basis and "model" not in payload.demand.basis.values()
    assert encode(payload) == recorder.messages[0][1]


def test_to_payload_rounds_to_a_tenth_of_a_watt() -> None:
    from hub.forecast.model import make_forecast

    history, weather = sim_community()
    result = make_forecast(None, history, weather, SITE, T0, hours=1)
    payload = to_payload("c-1", result, T0)
    assert len(payload.pv.p50_w) == 4
    assert all(round(v, 1) == v for v in payload.demand.p50_w)


def test_the_hub_runs_the_forecast_beside_ingest_when_a_site_is_configured(
    mosquitto: RunningBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import functools
    import logging
    import threading

    from hub.app import serve
    from hub.config import HubConfig
    from protocol.session import BrokerSettings

    caplog.set_level(logging.INFO)
    for site in (None, SITE):
        coop = f"s-{uuid.uuid4().hex[:10]}"
        broker = BrokerSettings(url=mosquitto.url, client_id=f"hub-{coop}")
        config = HubConfig(coop, tmp_path / f"{coop}.db", broker, site=site)
        probe = Probe(mosquitto, coop)
        stop = threading.Event()
        thread = threading.Thread(
            target=serve, args=(config, stop), kwargs={"clock": ManualClock(T0)}
        )
        thread.start()
        topic = hub_topic(coop, HubTopic.FORECAST)
        status = hub_topic(coop, HubTopic.STATUS)

        def seen(messages: list[tuple[str, bytes]], wanted: str = status) -> bool:
            return _count(messages, wanted) >= 1

        try:
            probe.wait_for(seen)
            if site is not None:
                probe.wait_for(functools.partial(seen, wanted=topic))
                forecast = _latest(probe, topic)
                assert forecast.start_ms == T0
                assert forecast.demand.method == "fallback"  # no home shares anything yet
        finally:
            stop.set()
            thread.join(15)
            probe.close()
        assert not thread.is_alive()  # stopped cleanly, forecast thread and all
        if site is None:
            assert "forecast off: the config has no [site]" in caplog.text
            assert _count(probe.messages, topic) == 0
        else:
            assert "forecast on: lat=52.0 lon=5.0" in caplog.text
            assert "forecast published" in caplog.text
            clear = Probe(mosquitto, coop)  # leave no retained forecast behind
            clear.publish(topic, b"", retain=True)
            clear.close()
