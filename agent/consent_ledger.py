"""The household's consent ledger: every grant version, append-only, one JSON line each.

The file lives in the agent's data folder (``consent.jsonl``). Each line is a sealed
:class:`ConsentGrant` naming the hash of the line before, so a member (or the hub) can check
that nothing was rewritten. The running agent notices a new line by the file's size and
modification time, so ``coopwatt-agent consent grant`` takes effect within one poll.

The CLI and the household page both write it: a change reads the current version and appends
the next under an exclusive lock on the file, so two changes at once make two versions in a row,
never two versions with one number.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from protocol.codec import CodecError, decode, encode
from protocol.consent import (
    ChainError,
    ConsentGrant,
    Purpose,
    PurposeGrant,
    Resolution,
    Streams,
    check_follows,
    next_version,
    nothing_shared,
)
from protocol.quantities import Role


class LedgerError(ValueError):
    """The ledger file is damaged or was edited; the message says which line."""


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int


class ConsentLedger:
    def __init__(self, path: Path, home: str) -> None:
        self.path = path
        self.home = home
        self._stamp: _Stamp | None = None
        self._history: list[ConsentGrant] = []

    def history(self) -> list[ConsentGrant]:
        """Every version, oldest first; re-read when the file changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._history = None, []
            return []
        stamp = _Stamp(st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._history = self._read()
            self._stamp = stamp
        return list(self._history)

    def current(self) -> ConsentGrant:
        history = self.history()
        return history[-1] if history else nothing_shared(self.home)

    def changed(self) -> bool:
        """True when the file differs from what was last read (cheap: one stat)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._stamp is not None
        return _Stamp(st.st_size, st.st_mtime_ns) != self._stamp

    def _read(self) -> list[ConsentGrant]:
        grants: list[ConsentGrant] = []
        previous = nothing_shared(self.home)
        with self.path.open("rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    grant = decode(ConsentGrant, line.strip())
                    check_follows(previous, grant)
                except (CodecError, ChainError) as exc:
                    raise LedgerError(f"{self.path} line {n}: {exc}") from None
                if grant.home != self.home:
                    raise LedgerError(f"{self.path} line {n}: a grant of home {grant.home!r}")
                grants.append(grant)
                previous = grant
        return grants

    def append(self, streams: Streams, issued_ms: int) -> ConsentGrant:
        """Record a new version with ``streams``; durable before it returns."""
        return self._change(lambda _: streams, issued_ms)

    def _change(self, edit: Callable[[Streams], Streams], issued_ms: int) -> ConsentGrant:
        """Append the version ``edit`` makes of the current streams, under the file's lock."""
        with self._locked() as fd:
            current = self.current()
            grant = next_version(current, edit(_copy(current.streams)), issued_ms)
            os.write(fd, encode(grant) + b"\n")
            os.fsync(fd)
        return grant

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stamp = None  # read again whatever another writer appended
            yield fd
        finally:
            os.close(fd)  # and with it the lock

    def grant(
        self,
        roles: list[Role],
        purposes: list[Purpose],
        resolution: Resolution,
        retention_days: int,
        issued_ms: int,
    ) -> ConsentGrant:
        """Add (or change) ``purposes`` on ``roles``, keeping everything else as it is."""

        def edit(streams: Streams) -> Streams:
            for role in roles:
                for purpose in purposes:
                    streams.setdefault(role.value, {})[purpose.value] = PurposeGrant(
                        resolution, retention_days
                    )
            return streams

        return self._change(edit, issued_ms)

    def share_everything(
        self, issued_ms: int, resolution: Resolution = Resolution.RAW, retention_days: int = 365
    ) -> ConsentGrant:
        """Every stream for every purpose: what the demo's simulated households agree to."""
        return self.grant(list(Role), list(Purpose), resolution, retention_days, issued_ms)

    def revoke(
        self, roles: list[Role], purposes: list[Purpose] | None, issued_ms: int
    ) -> ConsentGrant:
        """Withdraw ``purposes`` (all of them when None) from ``roles``."""

        def edit(streams: Streams) -> Streams:
            for role in roles:
                kept = streams.get(role.value, {})
                for purpose in purposes or list(Purpose):
                    kept.pop(purpose.value, None)
                if not kept:
                    streams.pop(role.value, None)
            return streams

        return self._change(edit, issued_ms)


def _copy(streams: Mapping[str, Mapping[str, PurposeGrant]]) -> Streams:
    return {role: dict(purposes) for role, purposes in streams.items()}
