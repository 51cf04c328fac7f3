"""Real processes to break: a Mosquitto that can be stopped, killed or frozen, the agent and the
hub as installed commands, a TCP proxy that drops, delays or blackholes, and the check that every
reading a device produced reached the hub's database exactly once."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.consent_ledger import ConsentLedger
from protocol.clock import SystemClock
from sim.broker import find_mosquitto, free_port, mosquitto_config
from sim.household import SimHome
from sim.modbus_server import ServedLog, SimModbusServers
from tests.devices_toml import devices_tables

BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Wait for other processes to get somewhere (never for clock time to pass)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0005  # short at first: most waits are for a thread that is nearly done
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


Message = tuple[str, bytes, bool]  # topic, payload, retained


class Recorder:
    """A plain MQTT client that records every message on ``filters``, as an operator's tool or
    a household's Home Assistant would see them; ``keep`` drops the ones a test does not own
    (other tests share the session's broker). Subscribes on every connection and waits for
    the broker's SUBACK before returning, so nothing published afterwards is missed."""

    def __init__(
        self,
        port: int,
        filters: list[str],
        *,
        client_id: str,
        keep: Callable[[str], bool] = lambda topic: True,
        host: str = "127.0.0.1",
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._keep = keep
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise AssertionError(f"no SUBACK for {filters} within {timeout_s} s")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._keep(msg.topic):
            with self._cond:
                self._messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._cond.notify_all()

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def wait(self, predicate: Callable[[list[Message]], bool], what: str) -> None:
        with self._cond:
            done = self._cond.wait_for(lambda: predicate(self._messages), self.timeout_s)
        assert done, f"timed out waiting for {what}"

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.messages]

    def latest(self, topic: str) -> bytes:
        return [p for t, p, _ in self.messages if t == topic][-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Mosquitto:
    """A Mosquitto process on a fixed port that tests stop, kill, freeze and start again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = find_mosquitto()
        if exe is None:
            pytest.fail("mosquitto is not installed: run `make test`")
        self.exe = exe
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(mosquitto_config(self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket_to(self.port):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.02)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None


def socket_to(port: int) -> contextlib.AbstractContextManager[object]:
    import socket

    return socket.create_connection(("127.0.0.1", port), 0.2)


class TcpProxy:
    """Loopback TCP proxy between agent and broker; ``mode`` is pass, drop, delay or blackhole.

    drop: close every connection and refuse new ones. delay: forward each chunk ``delay_s``
    late. blackhole: keep connections open but silently discard what arrives, both ways.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode: Literal["pass", "drop", "delay", "blackhole"] = "pass"
        self.delay_s = 0.2
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy")
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def set_mode(self, mode: Literal["pass", "drop", "delay", "blackhole"]) -> None:
        self.mode = mode
        if mode == "drop":

            def close_all() -> None:
                for w in list(self._writers):
                    w.close()

            self._loop.call_soon_threadsafe(close_all)

    def close(self) -> None:
        self.set_mode("drop")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class Home:
    """One simulated home whose agent runs as ``coopwatt-agent run`` in its own process."""

    sim: SimHome
    servers: SimModbusServers
    config: Path
    outbox: Path
    served: ServedLog
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.config.parent / "agent.log").open("ab")
        # faulthandler: an agent that hangs on stop is sent SIGABRT and prints every thread.
        self.proc = subprocess.Popen(
            [str(BIN / "coopwatt-agent"), "run", "--config", str(self.config)],
            stdout=log, stderr=log, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )  # fmt: skip
        log.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes each thread's stack
            self.proc.wait(10)
            self.proc = None
            raise AssertionError(
                f"the agent did not stop within 30 s of {sig.name}; its log and threads:\n"
                + self.log()[-8000:]
            ) from None
        self.proc = None
        return code

    def last_seqs(self) -> dict[str, int]:
        """What the agent numbered: every reading its devices produced, per device."""
        with contextlib.closing(sqlite3.connect(self.outbox)) as db:
            # A device's seq is its highest stored row's, or device_seq's once rows left.
            return dict(
                db.execute(
                    "SELECT device, max(last_seq, coalesce((SELECT max(seq) FROM outbox o "
                    "WHERE o.device = d.device), 0)) FROM device_seq d"
                ).fetchall()
            )

    def log(self) -> str:
        return (self.config.parent / "agent.log").read_text(errors="replace")

    def polls_served(self) -> int:
        """Polls the simulated devices have answered so far, all devices together."""
        return sum(len(self.served.polls(self.sim.home, d)) for d in self.sim.devices)


@contextlib.contextmanager
def simulated_home(
    tmp: Path,
    coop: str,
    broker_url: str,
    *,
    poll_s: float = 0.1,
    ack_timeout_s: float = 5.0,
    send_interval_s: float = 0.5,
    extra: str = "",
) -> Iterator[Home]:
    """Devices served from this process on the wall clock, an agent config pointing at them;
    ``home.served`` records every request the devices answered. The rig shortens the agent's
    wall-clock timers with its polling: ``send_interval_s`` (5 s in agent.toml by default) still
    sends several polls a message, as at home, without a scenario waiting 5 s for each."""
    sim = SimHome("home-1", 11, SystemClock(), step_s=1)
    served = ServedLog()
    with SimModbusServers([sim], served=served) as servers:
        devices = devices_tables(servers.endpoints()["home-1"])
        folder = tmp / "home-1"
        folder.mkdir(parents=True)
        config = folder / "agent.toml"
        config.write_text(
            f'coop = "{coop}"\nhome = "home-1"\npoll_interval_s = {poll_s}\n'
            f"ack_timeout_s = {ack_timeout_s}\nsend_interval_s = {send_interval_s}\n"
            f'data_dir = "state"\n{extra}\n[broker]\nurl = "{broker_url}"\nkeepalive_s = 5\n\n'
            + devices
        )
        ConsentLedger(folder / "state" / "consent.jsonl", "home-1").share_everything(
            SystemClock().now_ms()
        )
        home = Home(sim, servers, config, folder / "state" / "outbox.db", served)
        try:
            yield home
        finally:
            if home.proc is not None:
                home.proc.kill()
                home.proc.wait()


class Hub:
    """The hub as ``coopwatt-hub run`` in its own process."""

    def __init__(self, tmp: Path, coop: str, broker_url: str) -> None:
        self.coop = coop
        self.folder = tmp / "hub"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = self.folder / "hub.db"
        self.config = self.folder / "hub.toml"
        self.config.write_text(
            f'coop = "{coop}"\ndb = "hub.db"\n[broker]\nurl = "{broker_url}"\nkeepalive_s = 5\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "hub.log").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "coopwatt-hub"), "run", "--config", str(self.config)],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def count(self) -> int:
        if not self.db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
            except sqlite3.OperationalError:  # not migrated yet
                return 0


def assert_exactly_once(hub_db: Path, home: Home, *, complete: bool = True) -> int:
    """Every (device, seq) the agent numbered is in the hub's database once; counters match the
    simulated meters; the database is intact. Returns the number of readings checked.

    ``complete=False`` accepts a tail not yet delivered (an agent stopped while sending): the
    stored seqs must then start at 1 without a gap."""
    expected = home.last_seqs()
    assert expected, "the agent produced no readings"
    with contextlib.closing(sqlite3.connect(hub_db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT d.device, r.seq, r.ts_ms, r.energy_import_wh, r.energy_export_wh, r.energy_wh "
            "FROM readings r JOIN devices d ON d.id = r.device_id WHERE d.home = 'home-1' "
            "ORDER BY d.device, r.seq"
        ).fetchall()
    by_device: dict[str, list[tuple[int, int, float | None, float | None, float | None]]] = {}
    for device, seq, ts, imp, exp, e in rows:
        by_device.setdefault(device, []).append((seq, ts, imp, exp, e))
    assert set(by_device) == set(expected)
    for device, numbered in expected.items():
        seqs = [r[0] for r in by_device[device]]
        assert seqs[-1] <= numbered, f"{device}: readings the agent never numbered"
        last = numbered if complete else seqs[-1]
        assert seqs == list(range(1, last + 1)), f"{device}: lost or extra readings"
    # The meter's counters as stored are the simulator's at the time of each reading, to the
    # register's resolution (float32 kWh: well under 1 Wh) plus the read's own latency.
    sim = home.sim
    for seq, ts, imp, exp, _ in (by_device["grid-meter"][0], by_device["grid-meter"][-1]):
        truth = sim.counters_at(ts)
        assert imp is not None and exp is not None
        assert abs(imp - truth["energy_import_wh"]) < 2.0, (seq, imp, truth)
        assert abs(exp - truth["energy_export_wh"]) < 2.0, (seq, exp, truth)
    return len(rows)


COUNTERS: Final = ("energy_import_wh", "energy_export_wh", "energy_wh")


def served_not_stored(
    hub_db: Path, sim: SimHome, served: ServedLog, before_ms: int
) -> dict[str, int]:
    """Per device, how many polls the simulated device answered before ``before_ms`` that have
    no reading in the hub's database (0 everywhere: every value served arrived).

    The oracle is the simulator's own record of each poll it answered, not the agent's numbering:
    each stored reading, in seq order, is paired with the latest poll served no later than the
    reading's time (the agent stamps a reading when the device has answered), and its counters
    must be the ones the simulator served then (to 2 Wh: the blocks of one poll are read a few
    ms apart). Two readings of one poll, or a reading with no poll, fail at once.
    """
    with contextlib.closing(sqlite3.connect(hub_db, timeout=10)) as db:
        names = ", ".join(f"r.{c}" for c in COUNTERS)
        rows = db.execute(
            f"SELECT d.device, r.seq, r.ts_ms, {names} FROM readings r "
            "JOIN devices d ON d.id = r.device_id WHERE d.home = ? ORDER BY d.device, r.seq",
            (sim.home,),
        ).fetchall()
    stored: dict[str, list[tuple[int, int, tuple[float | None, ...]]]] = {}
    for device, seq, ts, *counters in rows:
        stored.setdefault(device, []).append((seq, ts, tuple(counters)))
    missing: dict[str, int] = {}
    for device in sim.devices:
        polls = served.polls(sim.home, device)
        times = [p.t_ms for p in polls]
        matched: set[int] = set()
        for seq, ts, counters in stored.get(device, []):
            i = bisect.bisect_right(times, ts) - 1
            assert i >= 0, f"{device} seq {seq} at {ts}: no poll was served before it"
            assert i not in matched, f"{device} seq {seq}: a second reading of one poll"
            matched.add(i)
            for name, value in zip(COUNTERS, counters, strict=True):
                truth = polls[i].values.get(name)
                if isinstance(truth, float):
                    assert value is not None and abs(value - truth) < 2.0, (device, seq, name)
        missing[device] = sum(1 for i, t in enumerate(times) if t < before_ms and i not in matched)
    return missing


def wait_all_served_stored(
    hub_db: Path, home: Home, *, missing_allowed: int = 0, timeout_s: float = 150.0
) -> None:
    """With the agent left running, wait until every poll served so far is in the hub's database
    (but ``missing_allowed`` per device: polls answered to an agent killed before it stored
    them). Nothing here restarts or nudges the agent."""
    mark = SystemClock().now_ms() - 1
    last: dict[str, int] = {}

    def done() -> bool:
        last.update(served_not_stored(hub_db, home.sim, home.served, mark))
        return all(n <= missing_allowed for n in last.values())

    try:
        wait_for(done, timeout_s, "every served poll stored")
    except AssertionError:
        raise AssertionError(f"served polls never stored, per device: {last}") from None
