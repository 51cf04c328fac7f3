"""The one MQTT session helper both agent and hub use: connect, TLS, last will, reconnect.

A broker that is down at start is normal (a Pi boots faster than the hub's router), so the session
connects in the background and keeps retrying with capped exponential backoff instead of failing.
Sessions are persistent (MQTT 5 session expiry, or clean_session=False on 3.1.1) so the broker
keeps a client's QoS 1 messages while it is briefly away. Passwords are never logged or repr'd.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


class _RetryNoise(logging.Filter):
    """paho logs "Client is not connected" at ERROR on every reconnect attempt and once more at
    shutdown; the session's own one warning per outage says it better."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected")


paho_log = log.getChild("paho")
paho_log.addFilter(_RetryNoise())

SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps a disconnected client's queue


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to reach the broker. ``url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""

    url: str
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: Literal[5, 311] = 5
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        parse_broker_url(self.url)

    @property
    def host(self) -> str:
        return parse_broker_url(self.url)[1]

    @property
    def port(self) -> int:
        return parse_broker_url(self.url)[2]

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.url)[0]


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """``mqtt://host:port`` -> (tls, host, port); raises ValueError with a plain message."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} names no host")
    if parts.username or parts.password:
        raise ValueError("put broker credentials in username/password, not in the URL")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r} has an invalid port") from None
    if port == 0:
        raise ValueError(f"broker URL {url!r} has an invalid port")
    return tls, parts.hostname, port or (8883 if tls else 1883)


class _Client(mqtt.Client):
    """paho's client, its network thread waiting longer on a quiet socket.

    ``loop_start``'s thread runs ``loop_forever`` with paho's default 1 s select timeout: 60
    wakeups a minute with nothing to do, a tenth of an idle agent's CPU budget on a Pi
    (issue 22). Nothing needs them: a publish from another thread wakes the select through
    paho's socket pair, and ``disconnect`` does the same. What the timeout paces is the
    keepalive check, so it waits a quarter of the keepalive: a PINGREQ is then at most that late,
    well inside the broker's 1.5 x keepalive. (``_thread_main`` is what paho 2.x's
    ``loop_start`` runs; tests/test_protocol_session_wakeups.py fails if a paho release stops
    using it.)
    """

    network_wait_s: float = 1.0

    def _thread_main(self) -> None:
        try:
            self.loop_forever(timeout=self.network_wait_s, retry_first_connection=True)
        finally:
            self._thread = None


def make_client(settings: BrokerSettings, *, clean: bool, manual_ack: bool = False) -> mqtt.Client:
    """A paho client (callback API 2) for ``settings``: client id, protocol, login and TLS set.

    ``clean`` asks for a session that ends at disconnect. On MQTT 5 that is decided when
    connecting (``clean_start`` and the session expiry), so here it only matters for 3.1.1
    (``clean_session``). With ``manual_ack`` the caller acknowledges QoS 1 messages itself.
    Connecting, callbacks, backoff and logging are left to the caller.
    """
    v5 = settings.protocol == 5
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else clean,
        manual_ack=manual_ack,
    )
    client.network_wait_s = max(1.0, settings.keepalive_s / 4)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


class Publish(Protocol):
    """How a service publishes, so tests can record instead: :meth:`MqttSession.publish` fits."""

    def __call__(
        self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...
    ) -> Any: ...


MessageHandler = Callable[[str, bytes], None]
DeliveryHandler = Callable[[str, bytes, Callable[[], None]], None]
"""``(topic, payload, ack)``: the handler calls ``ack()`` once the message is safe (committed)."""


class MqttSession:
    """A paho client that connects in the background, retries forever, and re-subscribes.

    ``on_connect`` runs on every (re)connection, from paho's network thread: subscribe and
    republish retained state there. ``on_message`` also runs on that thread and must not block.

    ``on_delivery`` instead of ``on_message`` takes over acknowledging QoS 1 messages to the
    broker: the handler gets an ``ack`` to call, from any thread, once the message is safe. Until
    then the broker keeps it, and sends it again if this client reconnects without having acked
    it (a persistent session), so a process killed between receiving and committing loses
    nothing. An ``ack`` from before a reconnect does nothing: the broker has sent the message
    again, under an id that may since name another one.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        on_message: MessageHandler | None = None,
        on_delivery: DeliveryHandler | None = None,
        on_connect: Callable[[], None] | None = None,
        will: tuple[str, bytes] | None = None,
        min_backoff_s: int = 1,
        max_backoff_s: int = 60,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        # session_expiry_s: how long the broker keeps this session (subscriptions, queued QoS 1
        # messages) while the client is away; 0 ends it at disconnect.
        self.settings = settings
        self.session_expiry_s = session_expiry_s
        self.connected = threading.Event()
        self._stopping = False
        self._unreachable = False
        if on_message is not None and on_delivery is not None:
            raise ValueError("give on_message or on_delivery, not both")
        self._on_message = on_message
        self._on_delivery = on_delivery
        self._on_connect = on_connect
        self._connection = 0  # counts connections: an ack is for the one it was received on
        self.client = make_client(
            settings, clean=session_expiry_s == 0, manual_ack=on_delivery is not None
        )
        # QoS 1 delivery is what the contract relies on; keep many in flight for backlog drains.
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_backoff_s, max_backoff_s)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_message = self._handle_message
        self.client.on_connect_fail = self._handle_connect_fail
        self.client.enable_logger(paho_log)

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused connection to %s: %s", self.settings.url, reason)
            return
        log.info("connected to %s as %s", self.settings.url, self.settings.client_id)
        self._unreachable = False
        self._connection += 1
        self.connected.set()
        if self._on_connect is not None:
            self._on_connect()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # Logged once per outage, not per retry: a hub down overnight must not fill the SD card.
        if not self._unreachable:
            log.warning("cannot reach broker %s; retrying with backoff", self.settings.url)
            self._unreachable = True

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("disconnected from %s: %s", self.settings.url, reason)
        self.connected.clear()

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, bytes(msg.payload))
        elif self._on_delivery is not None:
            self._on_delivery(msg.topic, bytes(msg.payload), self._acker(msg.mid, msg.qos))

    def _acker(self, mid: int, qos: int) -> Callable[[], None]:
        connection = self._connection

        def ack() -> None:
            if qos > 0 and connection == self._connection and self.connected.is_set():
                self.client.ack(mid, qos)

        return ack

    def start(self) -> None:
        """Connect in the background; returns at once, whether or not the broker is up."""
        props = None
        if self.settings.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=self.session_expiry_s == 0
            if self.settings.protocol == 5
            else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.client.loop_start()

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.client.subscribe(topic_filter, qos=qos)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 5.0) -> None:
        """Publish ``final`` (e.g. an offline status) if connected, then disconnect cleanly."""
        self._stopping = True
        if final is not None and self.connected.is_set():
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.warning("could not deliver the final message before disconnecting")
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
