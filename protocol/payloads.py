"""Payload dataclasses of wire contract v1.

Types are checked by :mod:`protocol.codec` from the annotations; the rules that types cannot say
(ids, ranges, which quantities a role may carry) live in ``__post_init__``, so an invalid payload
can be neither decoded nor built. A field typed ``X | None`` may be absent on the wire.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from protocol.quantities import GLOSSARY, Role, allowed_for
from protocol.topics import check_id

MAX_READINGS_PER_BATCH: Final = 5000
MAX_TEXT: Final = 200
MAX_PERIOD_MS: Final = 31 * 86_400_000  # a month: the coarsest aggregate a grant can ask for
_STATE_RE: Final = re.compile(r"[a-z][a-z-]{0,23}")
# Far enough from any meter's real range that only a broken decoder reaches it.
_MAX_ABS_VALUE: Final = 1e15
# 2000-01-01 .. 2100-01-01: a timestamp outside is a broken clock or a unit error (s vs ms).
_MIN_TS_MS: Final = 946_684_800_000
_MAX_TS_MS: Final = 4_102_444_800_000


def _check_ts(ts_ms: int, what: str) -> None:
    if not _MIN_TS_MS <= ts_ms < _MAX_TS_MS:
        raise ValueError(f"{what} {ts_ms} is not UTC epoch milliseconds between 2000 and 2100")


def _check_text(text: str, what: str) -> None:
    if len(text) > MAX_TEXT:
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of one device: glossary quantities, released under consent grant ``grant``."""

    device: str
    seq: int  # rises by one per reading of this device, across restarts; starts at 1
    ts_ms: int  # when the device was read, UTC epoch ms
    role: Role
    grant: str  # id of the consent grant this reading was released under
    quantities: dict[str, float | str]
    # Absent for a reading taken at ts_ms. For an aggregate, the span it covers, ending at
    # ts_ms: power and other values are means over the span, counters are exact at ts_ms.
    period_ms: int | None = None

    def __post_init__(self) -> None:
        check_id(self.device, "device")
        check_id(self.grant, "grant")
        if not 1 <= self.seq < 2**53:
            raise ValueError(f"seq {self.seq} out of range")
        _check_ts(self.ts_ms, "ts_ms")
        if self.period_ms is not None and not 0 <= self.period_ms <= MAX_PERIOD_MS:
            raise ValueError(f"period_ms {self.period_ms} is not 0 to {MAX_PERIOD_MS}")
        if not self.quantities:
            raise ValueError(f"reading {self.device}/{self.seq} carries no quantities")
        for name, value in self.quantities.items():
            if not allowed_for(self.role, name):
                raise ValueError(f"quantity {name!r} is not allowed on a {self.role.value} device")
            q = GLOSSARY[name]
            if q.kind is str:
                if not isinstance(value, str) or not _STATE_RE.fullmatch(value):
                    raise ValueError(f"{name} must be a short lowercase word, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or abs(value) > _MAX_ABS_VALUE
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """``homes/{home}/readings``: readings of one home, oldest first per device."""

    home: str
    sent_ms: int
    readings: list[Reading]

    def __post_init__(self) -> None:
        check_batch_envelope(self.home, self.sent_ms, len(self.readings))


def check_batch_envelope(home: str, sent_ms: int, count: int) -> None:
    """The rules of a readings batch apart from its readings."""
    check_id(home, "home")
    _check_ts(sent_ms, "sent_ms")
    if not 1 <= count <= MAX_READINGS_PER_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_READINGS_PER_BATCH} readings")


@dataclass(frozen=True, slots=True)
class Ack:
    """``homes/{home}/ack``: the (device, seq) the hub has committed, as inclusive seq ranges."""

    home: str
    acked: dict[str, list[list[int]]]  # device -> [[first, last], ...]

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        for device, ranges in self.acked.items():
            check_id(device, "device")
            for r in ranges:
                if len(r) != 2 or not 1 <= r[0] <= r[1]:
                    raise ValueError(f"ack range {r!r} for {device} is not [first, last]")

    def seqs(self, device: str) -> list[int]:
        return [s for first, last in self.acked.get(device, []) for s in range(first, last + 1)]


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """Collapse sequence numbers into sorted inclusive ``[first, last]`` ranges."""
    ranges: list[list[int]] = []
    for s in sorted(set(seqs)):
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    return ranges


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    online: bool
    error: str | None = None  # the last error in plain words, when offline
    last_ok_ms: int | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            _check_text(self.error, "error")


@dataclass(frozen=True, slots=True)
class HomeStatus:
    """``homes/{home}/status``, retained. The last will carries only home and state."""

    home: str
    state: Literal["online", "offline"]
    ts_ms: int | None = None
    version: str | None = None
    devices: dict[str, DeviceHealth] | None = None
    backlog: int | None = None  # readings waiting in the outbox
    clock_synced: bool | None = None
    backlog_oldest_ms: int | None = None  # ts of the oldest reading waiting: drain progress
    compacted: int | None = None  # raw readings merged into aggregates when the outbox filled
    lost: int | None = None  # readings that could not be kept at all (never silent)

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        if self.ts_ms is not None:
            _check_ts(self.ts_ms, "ts_ms")
        if self.version is not None:
            _check_text(self.version, "version")
        for device in self.devices or {}:
            check_id(device, "device")
        for name in ("backlog", "compacted", "lost"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is negative")


@dataclass(frozen=True, slots=True)
class HubStatus:
    """``hub/status``, retained; the last will is ``offline``."""

    coop: str
    state: Literal["online", "offline"]
    ts_ms: int | None = None
    version: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.coop, "coop")
        if self.ts_ms is not None:
            _check_ts(self.ts_ms, "ts_ms")
