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


_PERIOD_RE: Final = re.compile(r"(20\d\d|2100)-(0[1-9]|1[0-2])")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
StatementItem = Literal[
    "import-neighbours",
    "import-grid",
    "export-neighbours",
    "export-grid",
    "adjustments",
    "rounding",
]


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line of a statement: energy the home received (Wh; negative: delivered) and the
    amount it pays for it (minor units, e.g. cents; negative: it is paid)."""

    item: StatementItem
    energy_wh: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Statement:
    """``homes/{home}/statement``, retained: the home's settlement for one month.

    Money is in integer minor units of ``currency`` (``minor_unit`` decimals: 2 = cents), never
    floats; ``total_minor`` is what the home pays (negative: what it is paid) and equals the sum
    of the lines. ``grid_only_minor`` is what the same meter readings would have cost on the
    grid's tariffs alone and ``saving_minor`` what sharing saved against it. Until the month is
    closed (``final``) a statement is provisional and may change as late data arrives.
    """

    home: str
    period: str  # YYYY-MM, the cooperative's local calendar month
    issued_ms: int
    final: bool
    currency: str  # ISO 4217
    minor_unit: int
    mechanism: Literal["sdr", "mmr", "bill-sharing"]
    lines: list[StatementLine]
    total_minor: int
    grid_only_minor: int
    saving_minor: int
    intervals: int  # 15-minute intervals the home was settled in
    provisional_intervals: int  # of those, settled without the home's data (not arrived yet)
    estimated_intervals: int  # of those, interpolated across a gap in the home's readings

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        if not _PERIOD_RE.fullmatch(self.period):
            raise ValueError(f"period {self.period!r} is not YYYY-MM")
        _check_ts(self.issued_ms, "issued_ms")
        if not _CURRENCY_RE.fullmatch(self.currency):
            raise ValueError(f"currency {self.currency!r} is not an ISO 4217 code")
        if not 0 <= self.minor_unit <= 4:
            raise ValueError(f"minor_unit {self.minor_unit} is not 0 to 4")
        items = [line.item for line in self.lines]
        if len(set(items)) != len(items):
            raise ValueError("a statement item appears twice")
        if sum(line.amount_minor for line in self.lines) != self.total_minor:
            raise ValueError("total_minor is not the sum of the lines")
        for name in ("intervals", "provisional_intervals", "estimated_intervals"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is negative")
        if self.provisional_intervals + self.estimated_intervals > self.intervals:
            raise ValueError("more provisional and estimated intervals than intervals")
        for value in (self.total_minor, self.grid_only_minor, self.saving_minor):
            if abs(value) > 2**53:
                raise ValueError("amount out of range")


MAX_FORECAST_STEPS: Final = 7 * 96  # a week of 15-minute steps
_FORECAST_METHODS: Final = ("model", "fallback", "mixed", "absent")


@dataclass(frozen=True, slots=True)
class TargetQuantiles:
    """One forecast target (demand, PV or wind): P10/P50/P90 in W per step, and how it was made.

    ``method``: ``model`` (the ONNX model), ``fallback`` (a rule from history, ``note`` says
    why), ``mixed`` (the model while the weather forecast lasts, the fallback after) or
    ``absent`` (the cooperative has no such generation; all zeros).
    """

    p10_w: list[float]
    p50_w: list[float]
    p90_w: list[float]
    method: Literal["model", "fallback", "mixed", "absent"]
    note: str | None = None

    def __post_init__(self) -> None:
        if self.method not in _FORECAST_METHODS:
            raise ValueError(f"method {self.method!r} is not one of {_FORECAST_METHODS}")
        n = len(self.p50_w)
        if not 1 <= n <= MAX_FORECAST_STEPS or len(self.p10_w) != n or len(self.p90_w) != n:
            raise ValueError(f"each quantile list must hold 1 to {MAX_FORECAST_STEPS} steps")
        for lo, mid, hi in zip(self.p10_w, self.p50_w, self.p90_w, strict=True):
            for v in (lo, mid, hi):
                if not math.isfinite(v) or not 0 <= v <= _MAX_ABS_VALUE:
                    raise ValueError(f"forecast power {v!r} is not a finite non-negative number")
            if not lo <= mid <= hi:
                raise ValueError("quantiles must satisfy p10_w <= p50_w <= p90_w at every step")
        if self.note is not None:
            _check_text(self.note, "note")


@dataclass(frozen=True, slots=True)
class Forecast:
    """``hub/forecast``, retained: the community's demand, PV and wind for the next hours.

    Step ``k`` covers ``[start_ms + k·step_s, start_ms + (k+1)·step_s)``; values are mean power
    (W) over the step. ``issued_ms`` is when the hub computed it; ``model`` names the model.
    """

    coop: str
    issued_ms: int
    start_ms: int
    step_s: int
    model: str
    demand: TargetQuantiles
    pv: TargetQuantiles
    wind: TargetQuantiles

    def __post_init__(self) -> None:
        check_id(self.coop, "coop")
        _check_ts(self.issued_ms, "issued_ms")
        _check_ts(self.start_ms, "start_ms")
        if self.step_s not in (300, 900, 1800, 3600):
            raise ValueError(f"step_s {self.step_s} is not 300, 900, 1800 or 3600")
        if self.start_ms % (self.step_s * 1000):
            raise ValueError("start_ms is not on a step boundary")
        _check_text(self.model, "model")
        n = len(self.demand.p50_w)
        if len(self.pv.p50_w) != n or len(self.wind.p50_w) != n:
            raise ValueError("demand, pv and wind must have the same number of steps")


@dataclass(frozen=True, slots=True)
class Receipt:
    """``homes/{home}/receipts``: what the hub did on the home's behalf, for its records."""

    home: str
    kind: Literal["consent-recorded", "consent-refused", "data-erased"]
    ts_ms: int
    version: int  # the consent version it concerns
    erased: dict[str, int] | None = None  # stream (role) -> readings erased
    reason: str | None = None  # why a grant was refused

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        _check_ts(self.ts_ms, "ts_ms")
        if self.reason is not None:
            _check_text(self.reason, "reason")
        if any(n < 0 for n in (self.erased or {}).values()):
            raise ValueError("erased counts are not negative")
