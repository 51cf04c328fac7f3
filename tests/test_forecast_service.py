"""The hub's forecast service on a real store and a real broker: 15-minute history from stored
readings, weather from imports, retained ``hub/forecast`` on a schedule and on new weather."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from hub.features import DAY_MS, STEP_MS
from hub.forecast import Site
from hub.forecast_service import (
    ForecastService,
    history_from_slots,
    import_weather,
    read_community_history,
    read_weather,
    to_payload,
)
from hub.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode_message, encode
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


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "hub.db", f"f-{uuid.uuid4().hex[:10]}", clock=ManualClock(T0))
    _fill_store(s)
    return s


def test_history_from_the_store_is_the_community_sum(store: Store) -> None:
    history = read_community_history(store, T0 - DAYS * DAY_MS, T0)
    expected, _ = sim_community()
    offset = (T0 - DAYS * DAY_MS - expected.start_ms) // STEP_MS
    n = DAYS * 96
    np.testing.assert_allclose(history.pv_w, expected.pv_w[offset : offset + n], rtol=1e-9)
    np.testing.assert_allclose(history.demand_w, expected.demand_w[offset : offset + n], rtol=1e-9)
    assert np.isnan(history.wind_w).all()
    # Incremental: a second read folds in nothing new and gives the same series.
    assert store.refresh_power_slots() == 0
    again = read_community_history(store, T0 - DAYS * DAY_MS, T0)
    np.testing.assert_array_equal(again.demand_w, history.demand_w)


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
    assert store.weather_imported_ms() == T0


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
    assert payload.demand.method == "fallback"
    assert "no forecast model" in (payload.demand.note or "")
    assert encode(payload) == recorder.messages[0][1]


def test_to_payload_rounds_to_a_tenth_of_a_watt() -> None:
    from hub.forecast import make_forecast

    history, weather = sim_community()
    result = make_forecast(None, history, weather, SITE, T0, hours=1)
    payload = to_payload("c-1", result, T0)
    assert len(payload.pv.p50_w) == 4
    assert all(round(v, 1) == v for v in payload.demand.p50_w)
