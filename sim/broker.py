"""Start an MQTT broker for the demo and the tests: Mosquitto when installed, else amqtt in-process.

Mosquitto runs as a child process with a private config on a free loopback port, so nothing on
the machine (a system broker on 1883, another test run) is touched. amqtt is the fallback for a
machine without Mosquitto; it speaks only MQTT 3.1.1, so clients must use protocol 311 with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)


def find_mosquitto() -> str | None:
    """Mosquitto's path: on PATH, or /usr/sbin where Debian installs it (not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningBroker:
    kind: Literal["mosquitto", "amqtt"]
    host: str
    port: int
    protocol: Literal[5, 311]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _wait_listening(
    port: int, alive: Callable[[], bool], what: str, timeout_s: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # waiting for another process to bind its socket
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


def mosquitto_config(port: int, extra: str = "") -> str:
    return (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 100\n"
        "log_dest stderr\n"
        "log_type error\nlog_type warning\nlog_type notice\n" + extra
    )


@contextlib.contextmanager
def run_mosquitto(
    workdir: Path, extra_config: str = "", port: int | None = None
) -> Iterator[RunningBroker]:
    """Mosquitto on a free loopback port with a private config; stopped on exit."""
    exe = find_mosquitto()
    if exe is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto, or `make test`)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, extra_config))
    broker = RunningBroker("mosquitto", "127.0.0.1", port, 5, workdir)
    with broker.log_path.open("wb") as log_file:
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log_file, stderr=log_file)
    broker.process = proc
    try:
        try:
            _wait_listening(port, lambda: proc.poll() is None, "mosquitto")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {broker.log()}") from None
        yield broker
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def run_amqtt(workdir: Path, port: int | None = None) -> Iterator[RunningBroker]:
    """amqtt's broker in a background thread with its own event loop (MQTT 3.1.1 only)."""
    from amqtt.broker import Broker  # noqa: PLC0415 - optional, only when Mosquitto is missing

    port = port or free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        broker = Broker(config, loop=loop)
        try:
            await broker.start()
        except BaseException as exc:
            errors.append(exc)
            started.set()
            raise
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await broker.shutdown()

    thread = threading.Thread(
        target=lambda: loop.run_until_complete(main()), name="amqtt", daemon=True
    )
    thread.start()
    started.wait(10)
    if errors:
        raise RuntimeError(f"amqtt did not start: {errors[0]}")
    try:
        # broker.start() returns once its listener is bound, so no probe connection is needed.
        yield RunningBroker("amqtt", "127.0.0.1", port, 311, workdir)
    finally:
        stop.set()
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def run_broker(
    workdir: Path, prefer: Literal["auto", "mosquitto", "amqtt"] = "auto"
) -> Iterator[RunningBroker]:
    """Mosquitto when it is installed (or asked for), else the embedded amqtt broker."""
    use_mosquitto = prefer == "mosquitto" or (prefer == "auto" and find_mosquitto() is not None)
    with run_mosquitto(workdir) if use_mosquitto else run_amqtt(workdir) as broker:
        yield broker
