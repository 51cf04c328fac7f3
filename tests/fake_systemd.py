"""A stand-in for systemd's notification socket (``$NOTIFY_SOCKET``): what a program under
``Type=notify`` tells systemd (READY, STOPPING, WATCHDOG, STATUS), for the units' tests."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

WAIT_S = 20.0


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sd-"))  # short: AF_UNIX paths are <108 bytes
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(WAIT_S)

    def next(self, skip_watchdog: bool = True) -> dict[str, str]:
        """The next notification (as KEY -> value), waiting for the program to send it."""
        while True:
            data = self.sock.recv(4096).decode()
            fields = dict(line.split("=", 1) for line in data.split("\n") if line)
            if not (skip_watchdog and set(fields) == {"WATCHDOG"}):
                return fields

    def until(self, key: str, skip_watchdog: bool = True) -> dict[str, str]:
        while True:
            fields = self.next(skip_watchdog)
            if key in fields:
                return fields

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
