"""A simulated P1 port: DSMR 5.0 telegrams of a SimHome's grid meter, on a TCP port or a pty.

A smart meter pushes a telegram every second (DSMR 5.0); :class:`P1Stream` does the same from a
values function (``SimHome.values("grid-meter", t_ms)`` by default), over TCP (``tcp://127.0.0.1:
port``, like a P1-to-Wi-Fi dongle) or a pseudo-terminal (``serial:///dev/pts/N``, like a P1 USB
cable). Every telegram it sends is kept in :class:`TelegramLog` with the quantities it carries in
glossary units, worked out here from the values (not by decoding the telegram), so a test can
check what reached the hub against what the simulator sent.

``start()`` sends on its own every ``interval_s`` wall seconds, stamped by the injected clock;
tests call ``send()`` instead, after moving a ManualClock. ``send_raw()`` puts any bytes on the
line (a cut telegram, noise, a bad CRC) for fault tests.

The tariffs: the simulated meter books 40 % of each counter on tariff 1 and the rest on tariff 2
(whole Wh), so both per-tariff counters move and always add up to the total. Everything is on
phase L1 (a single-phase home).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import tty
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from protocol.clock import Clock

METER_ID: Final = "COOPWATT0000SIM1"


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC by table, the simulator's own (the agent's folds a polynomial,
    agent.dsmr_decode): the agent is not checked against itself."""
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


Values = Callable[[int], Mapping[str, float | str]]


@dataclass(frozen=True, slots=True)
class SentTelegram:
    ts_ms: int  # the simulator's clock when it was sent (the telegram's own time, to the second)
    quantities: dict[str, float]  # what it carries, in glossary units
    raw: bytes
    receivers: int  # connections it was written to whole (TCP), or 1 (pty, written whole)


class TelegramLog:
    """Every telegram the stream sent: the simulator's own record (like ServedLog)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # held from a telegram's first byte to its record
        self._sent: list[SentTelegram] = []

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Around writing a telegram and recording it: a reader that got its bytes and asks for
        the record at once waits for it, rather than finding it missing."""
        with self._sending:
            yield

    def record(self, sent: SentTelegram) -> None:
        with self._lock:
            self._sent.append(sent)

    def sent(self) -> list[SentTelegram]:
        with self._sending, self._lock:
            return list(self._sent)

    def delivered(self) -> list[SentTelegram]:
        """Telegrams someone was connected to receive."""
        return [s for s in self.sent() if s.receivers > 0]


def _meter_time(ts_ms: int) -> str:
    # DSMR's time is local Benelux time with S (CEST, UTC+2) or W (CET, UTC+1); the simulator
    # says winter (W) all year, which a reader converts back exactly.
    local = datetime.fromtimestamp(ts_ms // 1000, UTC) + timedelta(hours=1)
    return local.strftime("%y%m%d%H%M%S") + "W"


def telegram_quantities(values: Mapping[str, float | str]) -> dict[str, float]:
    """What a telegram built from ``values`` carries: Wh counters, W, V and whole A."""
    out: dict[str, float] = {}
    for way in ("import", "export"):
        total = int(float(values[f"energy_{way}_wh"]))  # the meter shows whole Wh
        t1 = round(total * 0.4)
        out[f"energy_{way}_t1_wh"] = float(t1)
        out[f"energy_{way}_t2_wh"] = float(total - t1)
        out[f"energy_{way}_wh"] = float(total)
    power = round(float(values["power_w"]))
    out["power_w"] = float(power)
    out["power_l1_w"] = float(power)
    if "voltage_v" in values:
        out["voltage_l1_v"] = round(float(values["voltage_v"]), 1)
    if "current_a" in values:
        out["current_l1_a"] = float(round(float(values["current_a"])))
    return out


def compose_telegram(
    q: Mapping[str, float], ts_ms: int, *, meter_id: str = METER_ID, version: str = "50"
) -> bytes:
    """A DSMR 5.0 telegram (P1 Companion Standard 5.0.2, section 6.12) carrying ``q``, as
    :func:`telegram_quantities` gives it, with its CRC."""

    def kwh(name: str) -> str:
        return f"{int(q[name]) // 1000:06d}.{int(q[name]) % 1000:03d}*kWh"

    def kw(watts: float) -> str:
        w = int(max(watts, 0.0))
        return f"{w // 1000:02d}.{w % 1000:03d}*kW"

    lines = [
        "/CWS5\\2SIMULATED-P1",
        "",
        f"1-3:0.2.8({version})",
        f"0-0:1.0.0({_meter_time(ts_ms)})",
        f"0-0:96.1.1({meter_id.encode('ascii').hex().upper()})",
        f"1-0:1.8.1({kwh('energy_import_t1_wh')})",
        f"1-0:1.8.2({kwh('energy_import_t2_wh')})",
        f"1-0:2.8.1({kwh('energy_export_t1_wh')})",
        f"1-0:2.8.2({kwh('energy_export_t2_wh')})",
        "0-0:96.14.0(0002)",
        f"1-0:1.7.0({kw(q['power_w'])})",
        f"1-0:2.7.0({kw(-q['power_w'])})",
        "0-0:96.7.21(00000)",
        "0-0:96.7.9(00000)",
        "1-0:99.97.0(0)(0-0:96.7.19)",
        "1-0:32.32.0(00000)",
        "1-0:32.36.0(00000)",
        "0-0:96.13.0()",
    ]
    if "voltage_l1_v" in q:
        lines.append(f"1-0:32.7.0({q['voltage_l1_v']:05.1f}*V)")
    if "current_l1_a" in q:
        lines.append(f"1-0:31.7.0({int(q['current_l1_a']):03d}*A)")
    lines += [
        f"1-0:21.7.0({kw(q['power_l1_w'])})",
        f"1-0:22.7.0({kw(-q['power_l1_w'])})",
        "!",
    ]
    body = "\r\n".join(lines).encode("ascii")
    return body + f"{crc16_arc(body):04X}\r\n".encode("ascii")


class P1Stream:
    """A P1 port streaming a simulated meter's telegrams; ``url`` is what the agent opens."""

    def __init__(
        self,
        values: Values,
        clock: Clock,
        *,
        interval_s: float = 1.0,
        transport: Literal["tcp", "pty"] = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        meter_id: str = METER_ID,
    ) -> None:
        self.values = values
        self.clock = clock
        self.interval_s = interval_s
        self.transport = transport
        self.meter_id = meter_id
        self.log = TelegramLog()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        if transport == "tcp":
            self._server = socket.create_server((host, port))
            self._server.settimeout(0.2)
        else:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)  # no CR/LF translation before a reader configures it
            os.set_blocking(self._master, False)  # nobody reading must not block the stream
            self._slave_name = os.ttyname(self._slave)
        self._accepting = False

    @property
    def url(self) -> str:
        if self._server is not None:
            host, port = self._server.getsockname()[:2]
            return f"tcp://{host}:{port}"
        return f"serial://{self._slave_name}?baud=115200"

    def start(self, *, autosend: bool = True) -> P1Stream:
        """Accept connections (TCP) and, with ``autosend``, send a telegram every interval."""
        if self._server is not None and not self._accepting:
            self._accepting = True
            self._spawn(self._accept, "p1-accept")
        if autosend:
            self._spawn(self._send_loop, "p1-send")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2.0)
            with self._lock:
                self._clients.append(conn)

    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _send_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.send()

    def send(self) -> SentTelegram:
        """Send one telegram of the meter's values now (the clock's time) and record it."""
        ts = self.clock.now_ms()
        q = telegram_quantities(self.values(ts))
        raw = compose_telegram(q, ts, meter_id=self.meter_id)
        with self.log.sending():
            sent = SentTelegram(ts, q, raw, self.send_raw(raw))
            self.log.record(sent)
        return sent

    def send_raw(self, data: bytes) -> int:
        """Put bytes on the line; returns how many receivers got them whole."""
        if self._master is not None:
            try:
                return 1 if os.write(self._master, data) == len(data) else 0
            except (BlockingIOError, OSError):
                return 0
        with self._lock:
            clients = list(self._clients)
        whole = 0
        for c in clients:
            try:
                c.sendall(data)
                whole += 1
            except OSError:
                with self._lock:
                    self._clients.remove(c)
                c.close()
        return whole

    def disconnect_clients(self) -> None:
        """Drop every connection, as a dongle that restarts does."""
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self.disconnect_clients()
        if self._server is not None:
            self._server.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def __enter__(self) -> P1Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
