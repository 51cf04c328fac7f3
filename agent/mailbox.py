"""What the hub sent the home to keep: monthly statements and receipts, for the household page.

The hub publishes each month's statement retained on ``homes/{home}/statement`` (a newer
version of the month, or the next month, replaces it at the broker), and a receipt on
``homes/{home}/receipts`` for every grant it recorded or refused and every erasure. The broker
keeps only the latest statement, so the home keeps every month itself: one file per month,
replaced only by a newer issue of the same month, and the receipts one JSON line each (a QoS 1
message delivered twice is kept once). Payloads are checked with the strict codec before they
are kept; one for another home, or one that does not decode, is logged and dropped.

The agent writes from paho's network thread; the page only reads.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Final

from protocol.codec import CodecError, decode, encode
from protocol.payloads import Receipt, Statement

log = logging.getLogger(__name__)

MAX_RECEIPTS: Final = 2000  # read back at most this many, newest first (years of changes)


class Mailbox:
    def __init__(self, folder: Path, home: str | None = None) -> None:
        # home: the agent's own id, to refuse another home's messages; the page reads any.
        self.folder = folder
        self.home = home
        self._statements = folder / "statements"
        self._receipts = folder / "receipts.jsonl"
        self._lock = threading.Lock()

    # -- the agent keeps -----------------------------------------------------------------------
    def keep_statement(self, payload: bytes) -> Statement | None:
        """Keep a ``statement`` message; the statement kept, or None when dropped."""
        try:
            s = decode(Statement, payload)
        except CodecError as exc:
            log.warning("ignoring a malformed statement: %s", exc)
            return None
        if self.home is not None and s.home != self.home:
            log.warning("ignoring a statement for home %s", s.home)
            return None
        path = self._statements / f"{s.period}.json"
        with self._lock:
            old = _read_statement(path)
            if old is not None and old.issued_ms > s.issued_ms:
                return None  # an older retained copy after a newer issue
            _write_atomic(path, encode(s))
        return s

    def keep_receipt(self, payload: bytes) -> Receipt | None:
        """Keep a ``receipts`` message once; the receipt, or None when dropped or a duplicate."""
        try:
            r = decode(Receipt, payload)
        except CodecError as exc:
            log.warning("ignoring a malformed receipt: %s", exc)
            return None
        if self.home is not None and r.home != self.home:
            log.warning("ignoring a receipt for home %s", r.home)
            return None
        line = encode(r)
        with self._lock:
            if any(encode(k) == line for k in self._read_receipts()[:50]):
                return None  # QoS 1 may deliver a message twice
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._receipts.open("ab") as f:
                f.write(line + b"\n")
        return r

    # -- the page reads ------------------------------------------------------------------------
    def statements(self) -> list[Statement]:
        """Every month kept, newest first."""
        if not self._statements.is_dir():
            return []
        out = [_read_statement(p) for p in sorted(self._statements.glob("*.json"), reverse=True)]
        return [s for s in out if s is not None]

    def statement(self, period: str) -> Statement | None:
        return _read_statement(self._statements / f"{period}.json")

    def receipts(self) -> list[Receipt]:
        """The receipts, newest first."""
        return self._read_receipts()

    def _read_receipts(self) -> list[Receipt]:
        try:
            lines = self._receipts.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in reversed(lines[-MAX_RECEIPTS:]):
            try:
                out.append(decode(Receipt, line))
            except CodecError:
                continue  # a line cut short by a power cut: the others still read
        out.sort(key=lambda r: r.ts_ms, reverse=True)
        return out


def _read_statement(path: Path) -> Statement | None:
    try:
        return decode(Statement, path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, CodecError) as exc:
        log.warning("ignoring the kept statement %s: %s", path.name, exc)
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
