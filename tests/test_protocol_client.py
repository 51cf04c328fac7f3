"""``protocol.session.make_client``: the one place a paho client gets its id, protocol, login and
TLS (used by the session, the agent's ``check`` and the operator's monitor)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
import pytest

from protocol.session import BrokerSettings, make_client


@pytest.mark.parametrize("clean", [True, False])
def test_mqtt311_takes_the_clean_flag_as_clean_session(clean: bool) -> None:
    client = make_client(BrokerSettings("mqtt://h", "c1", protocol=311), clean=clean)
    assert client.protocol == mqtt.MQTTv311
    assert client._clean_session is clean


def test_mqtt5_leaves_the_session_to_connect() -> None:
    client = make_client(BrokerSettings("mqtt://h", "c1"), clean=True, manual_ack=True)
    assert client.protocol == mqtt.MQTTv5
    assert client._client_id == b"c1"
    assert client._manual_ack is True
    assert client.username is None
    assert client._ssl_context is None


def test_login_and_tls_come_from_the_settings() -> None:
    settings = BrokerSettings("mqtts://h", "c2", username="op", password="s3cret")
    client = make_client(settings, clean=False)
    assert client.username == "op"
    assert client.password == "s3cret"
    assert client._manual_ack is False
    assert client._ssl_context is not None
    assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert client._ssl_context.check_hostname
