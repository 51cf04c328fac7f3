"""The cooperative's broker as `broker-config` and `provision` set it up, attacked for real.

One Mosquitto process per module runs the generated config (TLS with client certificates and
passwords, pattern ACLs, max_packet_size) on free ports. When the tests run as root, Mosquitto
drops to its own user as it does in production, so the file ownership provisioning sets up is
tested too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.config import load_config
from hub.ingest.service import Ingest
from hub.ops.broker_config import MAX_PACKET_BYTES, write_broker_config
from hub.ops.pki import CertificateAuthority, cert_serial
from hub.ops.provision import (
    HUB_USER,
    OPERATOR_USER,
    Layout,
    default_broker_user,
    deprovision_home,
    provision_home,
)
from hub.storage.store import Store
from protocol.clock import SystemClock
from protocol.codec import MAX_PAYLOAD_BYTES, decode, encode
from protocol.payloads import HubMetrics, HubStatus, Reading, ReadingBatch
from protocol.quantities import Role
from protocol.session import BrokerSettings
from sim.broker import find_mosquitto, free_port
from tests.devices_toml import devices_tables, write_grid_meter_file
from tests.harness import wait_for
from tests.times import JULY_1_2026_1000_UTC_MS

COOP = "sec-coop"
GOLDEN = Path(__file__).parent / "golden"
WAIT_S = 10.0
T0 = JULY_1_2026_1000_UTC_MS


@dataclass
class SecureBroker:
    base: Path
    layout: Layout
    tls_port: int
    local_port: int
    bundles: Path
    proc: subprocess.Popen[bytes] | None = None

    def home_dir(self, home: str) -> Path:
        return self.bundles / home / "coopwatt"

    def password(self, home: str) -> str:
        return (self.home_dir(home) / "agent.password").read_text().strip()

    def service(self, user: str) -> Path:
        return self.layout.clients / user.lstrip("_")

    def start(self) -> None:
        exe = find_mosquitto()
        assert exe is not None
        log = (self.base / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([exe, "-c", str(self.layout.conf)], stdout=log, stderr=log)
        log.close()
        proc = self.proc
        for port in (self.tls_port, self.local_port):
            wait_for(lambda p=port: _listening(p) or proc.poll() is not None, WAIT_S)  # type: ignore[misc]
        assert proc.poll() is None, self.log()

    def reload(self) -> None:
        """SIGHUP, and wait until Mosquitto says it reloaded (it logs each reload)."""
        assert self.proc is not None
        before = self.log().count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log().count("Reloading config") > before, WAIT_S, "reload")

    def log(self) -> str:
        return (self.base / "mosquitto.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run `make test`")
    # Not pytest's tmp_path: its folders are private to root, and Mosquitto drops to its own
    # user when started as root, exactly as in production.
    base = Path(tempfile.mkdtemp(prefix="coopwatt-sec-"))
    os.chmod(base, 0o755)
    broker_user = default_broker_user()
    persistence = base / "persistence"
    persistence.mkdir()
    if broker_user is not None:
        shutil.chown(persistence, broker_user)
    layout = Layout(base / "broker")
    b = SecureBroker(base, layout, free_port(), free_port(), base / "bundles")
    write_broker_config(
        layout.root,
        COOP,
        ["localhost", "127.0.0.1"],
        tls_port=b.tls_port,
        local_port=b.local_port,
        persistence_dir=persistence,
        broker_user=broker_user,
        log_denied=True,  # refused publishes are logged, with the account, only so
    )
    devices = write_grid_meter_file(base, "tcp://127.0.0.1:1502")
    for home in ("home-a", "home-b"):
        provision_home(layout, home, b.bundles, devices_file=devices)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- a test client ---------------------------------------------------------------------------


@dataclass
class Probe:
    """A paho client that records what happens to it."""

    client: mqtt.Client
    connack: Any = None
    disconnected: Any = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    subacks: dict[int, list[Any]] = field(default_factory=dict)
    pubacks: dict[int, Any] = field(default_factory=dict)
    event: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, predicate: Any, what: str) -> None:
        with self.event:
            assert self.event.wait_for(predicate, WAIT_S), f"timed out waiting for {what}"

    def subscribe(self, topic: str) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        self.wait(lambda: mid in self.subacks, f"suback for {topic}")
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.wait(lambda: info.mid in self.pubacks or self.disconnected is not None, "puback")
        return self.pubacks.get(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    b: SecureBroker,
    user: str | None,
    password: str | None,
    *,
    cert: tuple[Path, Path] | None = None,
    tls: bool = True,
    port: int | None = None,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    expect_ok: bool = True,
    client_id: str | None = None,
    persistent: bool = False,
) -> Probe:
    """``persistent``: resume the session and keep it for an hour after disconnecting."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"probe-{user}-{time.monotonic_ns()}",
        protocol=protocol,
    )
    probe = Probe(client)
    if user is not None:
        client.username_pw_set(user, password)
    if tls:
        client.tls_set(
            ca_certs=str(b.layout.certs / "ca.crt"),
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def note(**kw: Any) -> None:
        with probe.event:
            for k, v in kw.items():
                setattr(probe, k, v)
            probe.event.notify_all()

    def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        note(connack=rc)

    def on_disconnect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        note(disconnected=rc)

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with probe.event:
            probe.messages.append((msg.topic, bytes(msg.payload)))
            probe.event.notify_all()

    def on_subscribe(c: Any, u: Any, mid: int, codes: list[Any], p: Any) -> None:
        with probe.event:
            probe.subacks[mid] = codes
            probe.event.notify_all()

    def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        with probe.event:
            probe.pubacks[mid] = rc
            probe.event.notify_all()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    try:
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        client.connect(
            "localhost", port or b.tls_port, keepalive=10, clean_start=not persistent,
            properties=props,
        )  # fmt: skip
    except (OSError, ssl.SSLError):
        probe.disconnected = "refused at TLS"
        return probe
    client.loop_start()
    probe.wait(lambda: probe.connack is not None or probe.disconnected is not None, "connack")
    if expect_ok:
        assert probe.connack is not None and not probe.connack.is_failure, (
            probe.connack,
            probe.disconnected,
        )
    return probe


def home(b: SecureBroker, name: str, **kw: Any) -> Probe:
    d = b.home_dir(name)
    return connect(b, name, b.password(name), cert=(d / "client.crt", d / "client.key"), **kw)


def hub_local(b: SecureBroker) -> Probe:
    password = (b.service(HUB_USER) / "password").read_text().strip()
    return connect(b, HUB_USER, password, tls=False, port=b.local_port)


def refused(probe: Probe) -> bool:
    return probe.disconnected is not None or (
        probe.connack is not None and probe.connack.is_failure
    )


def topic(home_id: str, kind: str) -> str:
    return f"coopwatt/{COOP}/homes/{home_id}/{kind}"


def hub_topic(kind: str) -> str:
    return f"coopwatt/{COOP}/hub/{kind}"


def round_trip(hub: Probe) -> None:
    """Publish a marker the hub may write and read, and wait for it: earlier messages are in."""
    marker = f"marker-{time.monotonic_ns()}".encode()
    hub.subscribe(hub_topic("alerts"))
    hub.client.publish(hub_topic("alerts"), marker, qos=1)
    hub.wait(lambda: any(p == marker for _, p in hub.messages), "marker")


# -- authentication --------------------------------------------------------------------------


def test_provisioned_home_connects_with_certificate_and_password(broker: SecureBroker) -> None:
    probe = home(broker, "home-a")
    probe.close()


def test_wrong_or_missing_credentials_are_refused(broker: SecureBroker) -> None:
    """On the network listener the certificate is the login (see the impersonation tests
    below); on loopback, a service account's password is always needed."""
    local = {"tls": False, "port": broker.local_port, "expect_ok": False}
    assert refused(connect(broker, None, None, **local))  # type: ignore[arg-type]
    assert refused(connect(broker, HUB_USER, "not-the-password", **local))  # type: ignore[arg-type]
    assert refused(connect(broker, "home-z", "whatever", **local))  # type: ignore[arg-type]


def test_a_home_has_no_login_on_the_loopback_listener(broker: SecureBroker) -> None:
    """There the client id is not forced: only the hub and the operator may log in."""
    probe = connect(
        broker, "home-a", broker.password("home-a"), tls=False, port=broker.local_port,
        expect_ok=False,
    )  # fmt: skip
    assert refused(probe)


def test_a_client_certificate_is_required(broker: SecureBroker) -> None:
    probe = connect(broker, "home-a", broker.password("home-a"), expect_ok=False)
    assert refused(probe)


def test_a_certificate_from_another_ca_is_refused(broker: SecureBroker, tmp_path: Path) -> None:
    # A look-alike: a CA of its own named for this cooperative, issuing a proper client
    # certificate for a provisioned home's id.
    other = CertificateAuthority.open_or_create(tmp_path / "other-ca", COOP).issue_client("home-a")
    (tmp_path / "c.crt").write_bytes(other.cert_pem)
    (tmp_path / "c.key").write_bytes(other.key_pem)
    probe = connect(
        broker,
        "home-a",
        broker.password("home-a"),
        cert=(tmp_path / "c.crt", tmp_path / "c.key"),
        expect_ok=False,
    )
    assert refused(probe)


def test_plain_tcp_is_refused_where_tls_is_required(broker: SecureBroker) -> None:
    probe = connect(broker, "home-a", broker.password("home-a"), tls=False, expect_ok=False)
    assert refused(probe)
    assert probe.connack is None or probe.connack.is_failure


def test_the_plain_listener_is_on_loopback_only(broker: SecureBroker) -> None:
    conf = broker.layout.conf.read_text()
    assert f"listener {broker.local_port} 127.0.0.1\n" in conf
    assert "allow_anonymous false" in conf


# -- impersonation: client ids and accounts are bound to the certificate -----------------------


def agent_id(home_id: str) -> str:
    return f"coopwatt-agent-{COOP}-{home_id}"  # the agent's default client id: predictable


def still_connected(victim: Probe, hub: Probe, ack_topic: str) -> None:
    """The victim gets a message sent after the attack, on the same connection."""
    marker = f"still-{time.monotonic_ns()}".encode()
    hub.publish(ack_topic, marker)
    victim.wait(lambda: (ack_topic, marker) in victim.messages, "the victim's own ack")
    assert victim.disconnected is None


def test_a_home_cannot_take_another_homes_client_id(broker: SecureBroker) -> None:
    hub = hub_local(broker)
    b = home(broker, "home-b", client_id=agent_id("home-b"), persistent=True)
    attackers: list[Probe] = []
    try:
        b.subscribe(topic("home-b", "ack"))
        for stolen in (agent_id("home-b"), "home-b"):
            attackers.append(home(broker, "home-a", client_id=stolen))
        still_connected(b, hub, topic("home-b", "ack"))
        # Its session survives too: an ack queued while it is away is there when it returns.
        b.close()
        hub.publish(topic("home-b", "ack"), b"queued while away")
        for stolen in (agent_id("home-b"), "home-b"):
            attackers.append(home(broker, "home-a", client_id=stolen))  # a clean start
        back = home(broker, "home-b", client_id=agent_id("home-b"), persistent=True)
        attackers.append(back)
        back.wait(
            lambda: (topic("home-b", "ack"), b"queued while away") in back.messages,
            "the queued ack",
        )
    finally:
        for probe in attackers:
            probe.close()
        hub.close()


def test_a_home_cannot_kick_the_hub_off(broker: SecureBroker) -> None:
    password = (broker.service(HUB_USER) / "password").read_text().strip()
    hub = connect(
        broker, HUB_USER, password, tls=False, port=broker.local_port,
        client_id=f"coopwatt-hub-{COOP}",
    )  # fmt: skip
    attackers = []
    try:
        hub.subscribe(topic("+", "readings"))
        for stolen in (f"coopwatt-hub-{COOP}", f"coopwatt-hub-{COOP}-w1"):
            attackers.append(home(broker, "home-a", client_id=stolen))
        round_trip(hub)
        assert hub.disconnected is None
    finally:
        for probe in attackers:
            probe.close()
        hub.close()


def test_a_certificate_is_its_homes_login_whatever_the_username(broker: SecureBroker) -> None:
    """home-a's certificate with home-b's login (and password) acts as home-a."""
    hub = hub_local(broker)
    d = broker.home_dir("home-a")
    cert = (d / "client.crt", d / "client.key")
    forged = connect(broker, "home-b", broker.password("home-b"), cert=cert, expect_ok=False)
    try:
        hub.subscribe(topic("+", "readings"))
        if not refused(forged):
            code = forged.publish(topic("home-b", "readings"), b"as home-b")
            assert code is not None and code.is_failure, code
            assert not forged.publish(topic("home-a", "readings"), b"as home-a").is_failure
        round_trip(hub)
        assert (topic("home-b", "readings"), b"as home-b") not in hub.messages
    finally:
        forged.close()
        hub.close()


def test_the_hub_account_is_refused_on_the_network_listener(broker: SecureBroker) -> None:
    """The _hub login with a home's or the operator's certificate gets none of the hub's
    rights over TLS; the hub's own account has no certificate at all."""
    password = (broker.service(HUB_USER) / "password").read_text().strip()
    hub = hub_local(broker)
    b = home(broker, "home-b")
    op = broker.service(OPERATOR_USER)
    certs = [
        (broker.home_dir("home-a") / "client.crt", broker.home_dir("home-a") / "client.key"),
        (op / "client.crt", op / "client.key"),
    ]
    probes = [connect(broker, HUB_USER, password, cert=c, expect_ok=False) for c in certs]
    try:
        b.subscribe(topic("home-b", "ack"))
        for probe in probes:
            if refused(probe):
                continue
            probe.subscribe(topic("+", "readings"))
            code = probe.publish(topic("home-b", "ack"), b"forged ack")
            assert code is not None and code.is_failure, code
            code = probe.publish(hub_topic("status"), b"forged status")
            assert code is not None and code.is_failure, code
        assert not b.publish(topic("home-b", "readings"), b"home-b's reading").is_failure
        round_trip(hub)  # the reading reached the hub, so it reached any other reader first
        hub.publish(topic("home-b", "ack"), b"real ack")
        b.wait(lambda: (topic("home-b", "ack"), b"real ack") in b.messages, "the real ack")
        assert (topic("home-b", "ack"), b"forged ack") not in b.messages
        for probe in probes:
            assert all(t != topic("home-b", "readings") for t, _ in probe.messages)
        assert not (broker.service(HUB_USER) / "client.crt").exists()
    finally:
        for probe in probes:
            probe.close()
        b.close()
        hub.close()


def hub_share_group(b: SecureBroker) -> str:
    """The group broker-config wrote (commented out) into the hub's [broker] table; without
    one, the README's example."""
    text = (b.service(HUB_USER) / "broker.toml").read_text()
    lines = [ln for ln in text.splitlines() if "shared_group =" in ln]
    return lines[0].split('"')[1] if lines else "hub"


def test_a_home_cannot_take_a_share_of_the_hubs_readings(broker: SecureBroker) -> None:
    """The README's scale-out: the hub and its workers share the readings in a group. A home
    that joins the group it can name would get (and drop) its share; it cannot name ours."""
    group = hub_share_group(broker)
    hub = hub_local(broker)
    a = home(broker, "home-a")
    b = home(broker, "home-b")
    readings = f"coopwatt/{COOP}/homes/+/readings"
    try:
        hub.subscribe(f"$share/{group}/{readings}")
        for guess in ("hub", "coopwatt", "workers"):
            a.subscribe(f"$share/{guess}/{readings}")
        sent = [f"reading {i}".encode() for i in range(20)]
        for payload in sent:
            assert not b.publish(topic("home-b", "readings"), payload).is_failure
        hub.wait(lambda: len(hub.messages) >= len(sent), "every reading")
        assert sorted(p for _, p in hub.messages) == sorted(sent)  # 20 of 20
        assert a.messages == []
        # The attempt is in the broker's log, with the account (the client id is the CN).
        wait_for(lambda: f"home-a 1 $share/hub/{readings}" in broker.log(), WAIT_S, "log")
    finally:
        a.close()
        b.close()
        hub.close()


def test_a_refused_publish_is_logged_with_the_account(broker: SecureBroker) -> None:
    a = home(broker, "home-a", client_id=agent_id("home-b"))
    try:
        code = a.publish(topic("home-b", "readings"), b"forged")
        assert code is not None and code.is_failure
        line = f"Denied PUBLISH from home-a (d0, q1, r0, m1, '{topic('home-b', 'readings')}'"
        wait_for(lambda: line in broker.log(), WAIT_S, "the denied publish in the log")
    finally:
        a.close()


@pytest.mark.xfail(
    strict=True,
    reason="Mosquitto 2.0 logs a refused password login as 'Client <unknown> disconnected, "
    "not authorised.' without its username, at every log_type",
)
def test_a_refused_login_is_logged_with_the_account(broker: SecureBroker) -> None:
    before = broker.log()
    probe = connect(
        broker, HUB_USER, "wrong", tls=False, port=broker.local_port, expect_ok=False,
        client_id="guessing-client",
    )  # fmt: skip
    assert refused(probe)
    wait_for(lambda: "not authorised" in broker.log()[len(before) :], WAIT_S, "the refusal")
    new = broker.log()[len(before) :]
    assert HUB_USER in new or "guessing-client" in new, new


# -- authorisation ---------------------------------------------------------------------------


def test_a_home_writes_only_its_own_topics(broker: SecureBroker) -> None:
    hub = hub_local(broker)
    a = home(broker, "home-a")
    try:
        assert not hub.subscribe(f"coopwatt/{COOP}/#")[0].is_failure
        own = [topic("home-a", k) for k in ("readings", "feedback")]
        foreign = [
            topic("home-b", "readings"),
            topic("home-b", "status"),
            topic("home-b", "consent"),
            topic("home-a", "ack"),  # a home reads its ack, never writes it
            topic("home-a", "prompts"),
            topic("home-a", "statement"),
            topic("home-b", "ack"),
            hub_topic("status"),
            hub_topic("metrics"),
            hub_topic("forecast"),
            f"coopwatt/{COOP}/homes/home-a",
            "coopwatt/other-coop/homes/home-a/readings",
        ]
        for t in foreign:
            code = a.publish(t, b"forged")
            assert code is not None and code.is_failure, (t, code)  # MQTT 5: not authorised
        for t in own:
            code = a.publish(t, b"mine")
            assert code is not None and not code.is_failure, (t, code)
        round_trip(hub)
        got = {t for t, _ in hub.messages if not t.endswith("/alerts")}
        assert got == set(own)
    finally:
        a.close()
        hub.close()


def test_a_home_reads_only_its_own_topics(broker: SecureBroker) -> None:
    """Mosquitto 2 acknowledges every subscription and enforces read rights on delivery (and on
    retained messages), so what is checked is what reaches the home."""
    hub = hub_local(broker)
    a = home(broker, "home-a")
    retained = topic("home-b", "prompts")
    try:
        hub.publish(retained, b"home-b's prompts", retain=True)
        hub.publish(hub_topic("status"), b"hub status", retain=True)
        for t in (
            topic("home-b", "ack"),
            retained,
            topic("home-b", "readings"),
            topic("home-a", "readings"),  # what it writes is not for it to read back
            hub_topic("status"),
            hub_topic("metrics"),
            f"coopwatt/{COOP}/#",
            "#",
            "$SYS/#",
            topic("home-a", "ack"),
        ):
            a.subscribe(t)
        for kind in ("ack", "receipts", "statement"):
            t = topic("home-b", kind)
            hub.publish(t, b"for " + t.encode())
        hub.publish(hub_topic("alerts"), b"hub news")
        # The broker delivers one publisher's messages in order: once this one is in, every
        # earlier message that was going to reach the home has.
        hub.publish(topic("home-a", "ack"), b"last")
        a.wait(lambda: (topic("home-a", "ack"), b"last") in a.messages, "own ack")
        assert {t for t, _ in a.messages} == {topic("home-a", "ack")}
    finally:
        hub.publish(retained, b"", retain=True)
        hub.publish(hub_topic("status"), b"", retain=True)
        a.close()
        hub.close()


def test_the_operator_reads_hub_topics_and_nothing_of_homes(broker: SecureBroker) -> None:
    password = (broker.service(OPERATOR_USER) / "password").read_text().strip()
    files = broker.service(OPERATOR_USER)
    op = connect(broker, OPERATOR_USER, password, cert=(files / "client.crt", files / "client.key"))
    hub = hub_local(broker)
    try:
        op.subscribe(f"coopwatt/{COOP}/#")
        op.subscribe("homeassistant/#")
        assert op.publish(hub_topic("status"), b"forged").is_failure
        assert op.publish(topic("home-a", "ack"), b"forged").is_failure
        assert not op.publish("homeassistant/status", b"online").is_failure
        hub.publish(topic("home-a", "ack"), b"not for the operator")
        hub.publish("homeassistant/sensor/x/config", b"{}")
        hub.publish(hub_topic("metrics"), b"metrics")
        op.wait(lambda: (hub_topic("metrics"), b"metrics") in op.messages, "metrics")
        assert {t for t, _ in op.messages} == {
            "homeassistant/status",
            "homeassistant/sensor/x/config",
            hub_topic("metrics"),
        }
    finally:
        op.close()
        hub.close()


def test_oversized_packets_are_refused(broker: SecureBroker) -> None:
    hub = hub_local(broker)
    a = home(broker, "home-a")
    try:
        hub.subscribe(topic("home-a", "feedback"))
        largest = b"x" * MAX_PAYLOAD_BYTES  # the wire contract's limit is let through
        code = a.publish(topic("home-a", "feedback"), largest)
        assert code is not None and not code.is_failure
        hub.wait(lambda: any(p == largest for _, p in hub.messages), "the largest payload")
        too_big = b"x" * (MAX_PACKET_BYTES + 1)
        a.client.publish(topic("home-a", "feedback"), too_big, qos=1)
        a.wait(lambda: a.disconnected is not None, "disconnect for the oversized packet")
        round_trip(hub)
        assert all(len(p) <= MAX_PAYLOAD_BYTES for _, p in hub.messages)
    finally:
        a.close()
        hub.close()


def test_hub_rejects_and_counts_a_payload_naming_another_home(
    broker: SecureBroker, tmp_path: Path
) -> None:
    password_file = broker.service(HUB_USER) / "password"
    settings = BrokerSettings(
        url=f"mqtt://127.0.0.1:{broker.local_port}",
        client_id="hub-mismatch-test",
        username=HUB_USER,
        password=password_file.read_text().strip(),
    )
    store = Store.open(tmp_path / "hub.db", COOP)
    ingest = Ingest(store, settings, COOP, SystemClock())
    ingest.start()
    a = home(broker, "home-a")
    try:
        assert ingest.connected.wait(WAIT_S)
        wait_for(lambda: "hub-mismatch-test" in broker.log(), WAIT_S, "hub subscribed")
        reading = Reading("grid-meter", 1, T0, Role.GRID, "g-1", {"power_w": 100.0})
        forged = encode(ReadingBatch("home-b", T0, [reading]))  # home-b's data, home-a's topic
        assert not a.publish(topic("home-a", "readings"), forged).is_failure
        assert ingest.wait_until(lambda s: s["mismatched"] == 1, WAIT_S), ingest.stats()
        stats = ingest.stats()
        assert stats["rejected"] == 1
        assert stats["stored"] == 0
        assert ingest.mismatched_homes() == {"home-a": 1}
        assert store.count_readings() == 0
    finally:
        a.close()
        ingest.stop()
        store.close()


# -- provisioning's effects on a running broker -------------------------------------------


def test_deprovisioning_disconnects_and_locks_out_on_reload(broker: SecureBroker) -> None:
    provision_home(broker.layout, "home-gone", broker.bundles)
    broker.reload()
    d = broker.home_dir("home-gone")
    cert, key = d / "client.crt", d / "client.key"
    password = broker.password("home-gone")
    probe = home(broker, "home-gone")
    assert not probe.publish(topic("home-gone", "readings"), b"before").is_failure
    deprovision_home(broker.layout, "home-gone")
    broker.reload()
    # Mosquitto 2.0 keeps a certificate-authenticated connection open over a reload, but the
    # home's ACL block is gone: the connection can neither send nor receive any more.
    code = probe.publish(topic("home-gone", "readings"), b"after")
    assert probe.disconnected is not None or (code is not None and code.is_failure)
    again = connect(broker, "home-gone", password, cert=(cert, key), expect_ok=False)
    assert refused(again)


def test_a_revoked_certificate_is_refused_even_with_the_right_password(
    broker: SecureBroker,
) -> None:
    provision_home(broker.layout, "home-rot", broker.bundles)
    broker.reload()
    d = broker.home_dir("home-rot")
    old_cert, old_key = d / "client.crt", d / "client.key"
    kept = broker.base / "old-rot"
    kept.mkdir()
    shutil.copy(old_cert, kept / "client.crt")
    shutil.copy(old_key, kept / "client.key")
    old_password = broker.password("home-rot")
    # Rotation: a new password and certificate; the old certificate goes on the CRL.
    result = provision_home(broker.layout, "home-rot", broker.bundles, rotate=True)
    assert result.rotated
    old_serial = cert_serial((kept / "client.crt").read_bytes())
    assert old_serial in broker.layout.ca(COOP).revoked_serials()
    broker.reload()
    new_password = broker.password("home-rot")
    assert old_password != new_password
    # The old certificate with the NEW password: refused by the revocation list alone.
    assert refused(
        connect(
            broker,
            "home-rot",
            new_password,
            cert=(kept / "client.crt", kept / "client.key"),
            expect_ok=False,
        )
    )
    home(broker, "home-rot").close()


def test_broker_files_are_private_and_owned_by_the_broker(broker: SecureBroker) -> None:
    layout = broker.layout
    for path in (
        layout.passwd,
        layout.certs / "server.key",
        layout.ca_dir / "ca.key",
        broker.service(HUB_USER) / "password",
        broker.service(OPERATOR_USER) / "client.key",
        broker.home_dir("home-a") / "agent.password",
        broker.home_dir("home-a") / "client.key",
        broker.bundles / "home-a" / "user-data",
        layout.home_passwd,
        layout.settings,  # names the hub's secret share group
    ):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert layout.ca_dir.stat().st_mode & 0o777 == 0o700
    user = default_broker_user()
    if user is not None:
        import pwd

        uid = pwd.getpwnam(user).pw_uid
        assert layout.passwd.stat().st_uid == uid
        assert (layout.certs / "server.key").stat().st_uid == uid
        assert (layout.ca_dir / "ca.key").stat().st_uid == 0  # never the broker's


# -- the legitimate flow: a provisioned agent and the hub, over TLS ------------------------


def test_a_provisioned_agent_delivers_to_the_hub_over_tls(
    broker: SecureBroker, tmp_path: Path
) -> None:
    """The ACLs let through everything the contract needs: readings, status (and its last
    will), consent, acks, receipts."""
    from agent.consent_ledger import ConsentLedger
    from hub.app import serve
    from sim.household import SimHome
    from sim.modbus_server import SimModbusServers
    from tests.harness import BIN

    provision_home(broker.layout, "home-1", broker.bundles)
    broker.reload()
    bundle = broker.home_dir("home-1")
    sim = SimHome("home-1", 11, SystemClock(), step_s=1)
    hub_db = tmp_path / "hub.db"
    # The hub's config as the operator writes it: coop, db, and the [broker] table
    # broker-config wrote for the hub's account.
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text(
        f'coop = "{COOP}"\ndb = "{hub_db}"\n\n'
        + (broker.service(HUB_USER) / "broker.toml").read_text()
    )
    hub_config = load_config(hub_toml)
    assert hub_config.broker.username == HUB_USER and hub_config.broker.password
    stop = threading.Event()
    hub_thread = threading.Thread(target=serve, args=(hub_config, stop), daemon=True)
    hub_thread.start()
    with SimModbusServers([sim]) as servers:
        devices = devices_tables(servers.endpoints()["home-1"])
        # The provisioned config as first boot installs it, with the bundle's folder for /etc.
        text = (bundle / "agent.toml").read_text()
        text = text.replace("/etc/coopwatt/", f"{bundle}/").replace(
            'data_dir = "/var/lib/coopwatt"', f'data_dir = "{tmp_path / "state"}"'
        )
        text = text.replace("poll_interval_s = 10", "poll_interval_s = 0.2\nsend_interval_s = 1")
        config = tmp_path / "agent.toml"
        config.write_text(text + "\n" + devices)
        ConsentLedger(tmp_path / "state" / "consent.jsonl", "home-1").share_everything(
            SystemClock().now_ms()
        )
        log = (tmp_path / "agent.log").open("ab")
        agent = subprocess.Popen(
            [str(BIN / "coopwatt-agent"), "run", "--config", str(config)], stdout=log, stderr=log
        )
        log.close()
        try:
            import sqlite3

            def acked() -> bool:
                if not (tmp_path / "state" / "outbox.db").exists() or not hub_db.exists():
                    return False
                with contextlib.closing(sqlite3.connect(hub_db)) as db:
                    try:
                        stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
                    except sqlite3.OperationalError:
                        return False
                return bool(stored >= 6)

            wait_for(acked, 30, "readings stored by the hub")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            stop.set()
            hub_thread.join(30)
    agent_log = (tmp_path / "agent.log").read_text()
    assert "not authori" not in agent_log.lower(), agent_log
    with contextlib.closing(__import__("sqlite3").connect(hub_db)) as db:
        (state,) = db.execute("SELECT state FROM home_status WHERE home = 'home-1'").fetchone()
    assert state == "offline"  # the agent's final status passed the ACL


def test_the_operators_monitor_config_works_over_tls(broker: SecureBroker) -> None:
    """operator.toml as broker-config wrote it: TLS, client certificate, password file."""
    from tests.harness import BIN

    hub = hub_local(broker)
    status = encode(HubStatus(COOP, "online", T0, "0.1.0"))
    metrics = dataclasses.replace(
        decode(HubMetrics, (GOLDEN / "hub-metrics__two-alerts.json").read_bytes()), coop=COOP
    )
    try:
        hub.publish(hub_topic("status"), status, retain=True)
        hub.publish(hub_topic("metrics"), encode(metrics), retain=True)
        config = broker.service(OPERATOR_USER) / "operator.toml"
        result = subprocess.run(
            [str(BIN / "coopwatt-hub"), "monitor", "--config", str(config), "--once"],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "homes online 2/3" in result.stdout
    finally:
        hub.publish(hub_topic("status"), b"", retain=True)
        hub.publish(hub_topic("metrics"), b"", retain=True)
        hub.close()
