"""``hub.forecast.published.forecast_from_message``: how the prompts service and operator health
read the retained ``hub/forecast`` message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hub.forecast.published import forecast_from_message
from protocol.codec import decode
from protocol.payloads import Forecast
from protocol.topics import HubTopic, hub_topic

GOLDEN = (Path(__file__).parent / "golden" / "hub-forecast__mixed.json").read_bytes()
TOPIC = hub_topic("test-coop", HubTopic.FORECAST)  # the golden file's coop


def test_a_published_forecast_is_read_back() -> None:
    forecast = forecast_from_message(TOPIC, GOLDEN)
    assert isinstance(forecast, Forecast)
    assert forecast == decode(Forecast, GOLDEN)


@pytest.mark.parametrize("payload", [b"", b"{", b'{"v": 1}', b"null"])
def test_anything_else_is_ignored_with_a_warning(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.forecast.published"):
        assert forecast_from_message(TOPIC, payload) is None
    assert f"ignoring forecast on {TOPIC!r}" in caplog.text


def test_a_forecast_for_another_coop_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    other = hub_topic("other-coop", HubTopic.FORECAST)
    with caplog.at_level(logging.WARNING, logger="hub.forecast.published"):
        assert forecast_from_message(other, GOLDEN) is None
    assert "differs from topic coop" in caplog.text
