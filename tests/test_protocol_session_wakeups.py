"""The session's network thread (paho's loop) at rest: it waits on its socket for a quarter of
the keepalive, not paho's 1 s, so an idle agent is not woken 60 times a minute (issue 22), and
a stop still ends it at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from paho.mqtt.enums import MQTTErrorCode

from protocol.session import BrokerSettings, MqttSession
from sim.broker import RunningBroker


def _record_waits(session: MqttSession) -> list[float]:
    """The timeouts paho's loop hands select(), as the thread runs."""
    waits: list[float] = []
    loop: Callable[[float], MQTTErrorCode] = session.client._loop

    def recording(timeout: float = 1.0) -> MQTTErrorCode:
        waits.append(timeout)
        return loop(timeout)

    session.client._loop = recording  # type: ignore[method-assign]
    return waits


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("keepalive_s", [30, 60])
def test_the_network_thread_waits_a_quarter_of_the_keepalive(
    mosquitto: RunningBroker, keepalive_s: int
) -> None:
    settings = BrokerSettings(mosquitto.url, f"wake-{keepalive_s}", keepalive_s=keepalive_s)
    session = MqttSession(settings, session_expiry_s=0)
    waits = _record_waits(session)
    session.start()
    try:
        assert session.connected.wait(10.0)
        _wait(lambda: len(waits) >= 2, "paho's loop never waited on its socket")
        assert set(waits) == {keepalive_s / 4}
    finally:
        began = time.monotonic()
        session.stop()
        stopping_s = time.monotonic() - began
    assert not any(t.name.startswith(f"paho-mqtt-client-wake-{keepalive_s}")
                   for t in threading.enumerate())  # fmt: skip
    assert stopping_s < keepalive_s / 8, "stop waited for the network thread's timeout"


def test_a_session_that_never_reached_its_broker_stops_at_once() -> None:
    session = MqttSession(BrokerSettings("mqtt://127.0.0.1:1", "wake-unreachable"))
    session.start()
    began = time.monotonic()
    session.stop()
    assert time.monotonic() - began < 3.0
    assert not any(t.name == "paho-mqtt-client-wake-unreachable" for t in threading.enumerate())
