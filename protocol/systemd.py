"""systemd integration with the standard library only: readiness, watchdog, reload, journal logs.

A ``Type=notify`` service tells systemd it is ready by sending ``READY=1`` to the datagram socket
named in ``$NOTIFY_SOCKET``. With ``WatchdogSec=`` set, systemd also passes ``$WATCHDOG_USEC`` and
restarts the service when ``WATCHDOG=1`` does not arrive in time, so the programs feed it from
the loop whose progress matters (the agent's poll loop, the hub's main loop once its ingest
worker is alive), never from a timer thread that would outlive a hang. Outside systemd every
call is a cheap no-op.

Logs go to stderr, which systemd connects to the journal (``$JOURNAL_STREAM``): there each line
carries a ``<N>`` syslog priority prefix instead of a timestamp, so ``journalctl -p warning``
works. ``COOPWATT_LOG_FORMAT=json`` gives one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Final, Literal, TextIO

log = logging.getLogger(__name__)

LogFormat = Literal["auto", "text", "journal", "json"]
LOG_FORMATS: Final = ("auto", "text", "journal", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# sd-daemon(3) priorities by logging level.
_PRIORITIES: Final = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class Notifier:
    """Talks to systemd's notify socket; every method is a no-op when there is none.

    ``ping`` feeds the watchdog at most every quarter of ``WatchdogSec``, so callers may call it
    on every loop iteration.
    """

    def __init__(self, socket_path: str | None = None, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path or None
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._last_ping = -1e18
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        watchdog: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(raw)
        return cls(env.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when not under systemd or it failed."""
        if self.socket_path is None:
            return False
        address = self.socket_path
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        # One line per field; a newline inside a STATUS= text would start a bogus field.
        data = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(data)
        except OSError as exc:
            if not self._warned:  # once: a vanished socket must not flood the journal
                log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(f"STATUS={status}")
        return self.notify(*fields)

    def reloading(self, status: str = "reloading config") -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def ping(self) -> bool:
        """Feed the watchdog if it is due; True when a ping was sent."""
        if self.watchdog_s is None or self.socket_path is None:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last_ping < self.watchdog_s / 4:
                return False
            self._last_ping = now
        return self.notify("WATCHDOG=1")


def under_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd handed us (``$JOURNAL_STREAM``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; journald stamps the time and parses the priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts_ms, level, logger, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: str, fmt: str | None = None, stream: TextIO | None = None
) -> LogFormat:
    """Log ``level`` and above to ``stream`` (stderr) in ``fmt``, or ``$COOPWATT_LOG_FORMAT``.

    ``auto`` picks ``journal`` under systemd and ``text`` elsewhere. Returns the format used.
    """
    out = stream or sys.stderr
    choice = (fmt or os.environ.get("COOPWATT_LOG_FORMAT") or "auto").lower()
    if choice not in LOG_FORMATS:
        choice = "auto"
    if choice == "auto":
        choice = "journal" if under_journal(out) else "text"
    formatter: logging.Formatter
    if choice == "journal":
        formatter = JournalFormatter()
    elif choice == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    chosen: LogFormat = choice  # type: ignore[assignment]
    return chosen
