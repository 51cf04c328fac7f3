"""Payload dataclasses of wire contract v1.

Types are checked by :mod:`protocol.codec` from the annotations; the rules that types cannot say
(ids, ranges, which quantities a role may carry) live in ``__post_init__``, so an invalid payload
can be neither decoded nor built. A field typed ``X | None`` may be absent on the wire.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import date
from itertools import compress
from typing import Final, Literal, TypeAlias, TypeVar, get_args

from protocol.quantities import GLOSSARY, Role, allowed_for
from protocol.topics import check_id, is_id

_T = TypeVar("_T")

MAX_READINGS_PER_BATCH: Final = 5000
MAX_TEXT: Final = 200
MAX_PERIOD_MS: Final = 31 * 86_400_000  # a month: the coarsest aggregate a grant can ask for
_STATE_RE: Final = re.compile(r"[a-z][a-z-]{0,23}")
# Far enough from any meter's real range that only a broken decoder reaches it.
_MAX_ABS_VALUE: Final = 1e15
# 2000-01-01 .. 2100-01-01: a timestamp outside is a broken clock or a unit error (s vs ms).
_MIN_TS_MS: Final = 946_684_800_000
_MAX_TS_MS: Final = 4_102_444_800_000


# Ids that passed check_id (strings only: a set holds nothing else that equals one).
_CHECKED_IDS: Final[set[str]] = set()
_MAX_CHECKED_IDS: Final = 4096


def are_ids(values: Set[str]) -> bool:
    """True when every string of ``values`` passes :func:`check_id`.

    A hub sees the same few home, device and grant ids in every batch: each is matched once and
    remembered (strings only: a set holds nothing else that equals one).
    """
    if values <= _CHECKED_IDS:
        return True
    if not all(map(is_id, values)):
        return False
    if len(_CHECKED_IDS) + len(values) > _MAX_CHECKED_IDS:
        _CHECKED_IDS.clear()
    _CHECKED_IDS.update(values)
    return True


# Per role, the numeric quantities its devices may carry (the fast path of Reading's checks).
_NUMERIC_FOR: Final[dict[Role, frozenset[str]]] = {
    role: frozenset(n for n, q in GLOSSARY.items() if q.kind is float and allowed_for(role, n))
    for role in Role
}


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
        # A hub sees the same few device and grant ids in every batch: each is matched once.
        if (self.device not in _CHECKED_IDS or self.grant not in _CHECKED_IDS) and not are_ids(
            {self.device, self.grant}
        ):
            check_id(self.device, "device")
            check_id(self.grant, "grant")
        if not 1 <= self.seq < 2**53:
            raise ValueError(f"seq {self.seq} out of range")
        _check_ts(self.ts_ms, "ts_ms")
        if self.period_ms is not None and not 0 <= self.period_ms <= MAX_PERIOD_MS:
            raise ValueError(f"period_ms {self.period_ms} is not 0 to {MAX_PERIOD_MS}")
        if not self.quantities:
            raise ValueError(f"reading {self.device}/{self.seq} carries no quantities")
        numeric = _NUMERIC_FOR.get(self.role, ()) if isinstance(self.role, Role) else ()
        for name, value in self.quantities.items():
            # The common case first (a finite float of a quantity the role may carry); anything
            # else goes through the full checks below, which decide and word the refusal.
            if (
                type(value) is float
                and name in numeric
                and -_MAX_ABS_VALUE <= value <= _MAX_ABS_VALUE
            ):
                continue
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


ROW_QUANTITIES: Final[tuple[str, ...]] = tuple(GLOSSARY)
"""The order of :attr:`ReadingColumns.values`: the glossary's (the hub's columns)."""

QuantityValue: TypeAlias = float | str | None


@dataclass(frozen=True, slots=True)
class ReadingColumns:
    """A readings batch as the hub stores it: column by column.

    Reading ``i`` is ``devices[i]``, ``roles[i]``, ``seqs[i]``, ``ts_ms[i]``, ``grants[i]``,
    ``periods[i]`` and ``values[i]``, its quantities in :data:`ROW_QUANTITIES` order (None where
    it has none): the same readings as a :class:`ReadingBatch`, without an object and a
    dictionary per reading. The hub stores tens of thousands of readings a second, and columns
    let it check, screen and insert them with C loops (``map``, ``zip``, ``itertools.compress``)
    rather than Python code per reading.

    Not a wire payload, and trusted as it is: it holds only what has been checked, made either
    by the codec from a payload that passed every rule of :class:`ReadingBatch` and
    :class:`Reading` (``protocol.codec.decode_columns``), by :meth:`of` from a
    :class:`ReadingBatch` (whose readings checked themselves), or by :meth:`select`.
    """

    home: str
    sent_ms: int
    devices: tuple[str, ...]
    roles: tuple[Role, ...]
    seqs: tuple[int, ...]
    ts_ms: tuple[int, ...]
    grants: tuple[str, ...]
    periods: tuple[int | None, ...]
    values: tuple[tuple[QuantityValue, ...], ...]

    def __len__(self) -> int:
        return len(self.seqs)

    @classmethod
    def of(cls, batch: ReadingBatch) -> ReadingColumns:
        """The columns of a batch of checked :class:`Reading` objects."""
        readings = batch.readings
        return cls(
            batch.home,
            batch.sent_ms,
            devices=tuple(r.device for r in readings),
            roles=tuple(r.role for r in readings),
            seqs=tuple(r.seq for r in readings),
            ts_ms=tuple(r.ts_ms for r in readings),
            grants=tuple(r.grant for r in readings),
            periods=tuple(r.period_ms for r in readings),
            values=tuple(tuple(map(r.quantities.get, ROW_QUANTITIES)) for r in readings),
        )

    def select(self, keep: Sequence[bool]) -> ReadingColumns:
        """The readings whose ``keep`` is true, in their order."""

        def kept(column: tuple[_T, ...]) -> tuple[_T, ...]:
            return tuple(compress(column, keep))

        return ReadingColumns(
            self.home,
            self.sent_ms,
            devices=kept(self.devices),
            roles=kept(self.roles),
            seqs=kept(self.seqs),
            ts_ms=kept(self.ts_ms),
            grants=kept(self.grants),
            periods=kept(self.periods),
            values=kept(self.values),
        )


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
    unacked_age_s: int | None = None  # how long the oldest reading not yet acked has waited

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        if self.ts_ms is not None:
            _check_ts(self.ts_ms, "ts_ms")
        if self.version is not None:
            _check_text(self.version, "version")
        for device in self.devices or {}:
            check_id(device, "device")
        for name in ("backlog", "compacted", "lost", "unacked_age_s"):
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
    "adjustments",  # corrections of closed months after late or corrected data
    "repricing",  # a closed month priced again under another scheme, as the operator asked
    "rounding",
]
Mechanism = Literal["sdr", "mmr", "bill-sharing"]
GridPrices = Literal["imported"]  # per-interval grid prices from a file (day-ahead, dynamic)
MeteredBy = Literal["grid-operator"]  # the grid operator's official figures
_KEY_LABEL_RE: Final = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
_DAY_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_SCHEME_ID_RE: Final = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line of a statement: energy the home received (Wh; negative: delivered) and the
    amount it pays for it (minor units, e.g. cents; negative: it is paid)."""

    item: StatementItem
    energy_wh: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class StatementPricing:
    """Consecutive days of the month (local dates, both included) priced under one scheme:
    its mechanism, and the scheme's id (the first hex digits of its fingerprint), which tells
    two tariffs under one mechanism apart.

    Optional, each left out when it does not apply (so a statement under a scheme without
    them keeps its bytes): ``key``, the name of the allocation key that split the shared
    energy; ``grid_prices``, ``"imported"`` when grid import was priced per interval from an
    imported price file rather than the scheme's tariff; ``metered_by``, ``"grid-operator"``
    when the days were settled on the grid operator's figures rather than the hub's readings.
    """

    first: str  # YYYY-MM-DD
    last: str  # YYYY-MM-DD
    mechanism: Mechanism
    scheme: str
    key: str | None = None
    grid_prices: GridPrices | None = None
    metered_by: MeteredBy | None = None

    def __post_init__(self) -> None:
        for name in ("first", "last"):
            value = getattr(self, name)
            if not _DAY_RE.fullmatch(value):
                raise ValueError(f"{name} {value!r} is not YYYY-MM-DD")
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{name} {value!r} is not a date") from None
        if self.last < self.first:
            raise ValueError(f"pricing ends ({self.last}) before it begins ({self.first})")
        if not _SCHEME_ID_RE.fullmatch(self.scheme):
            raise ValueError(f"scheme {self.scheme!r} is not a scheme id (8+ hex digits)")
        if self.key is not None and not _KEY_LABEL_RE.fullmatch(self.key):
            raise ValueError("key is not 1 to 64 printable characters")


@dataclass(frozen=True, slots=True)
class Statement:
    """``homes/{home}/statement``, retained: the home's settlement for one month.

    Money is in integer minor units of ``currency`` (``minor_unit`` decimals: 2 = cents), never
    floats; ``total_minor`` is what the home pays (negative: what it is paid) and equals the sum
    of the lines. ``grid_only_minor`` is what the same meter readings would have cost on the
    grid's tariffs alone and ``saving_minor`` what sharing saved against it. Until the month is
    closed (``final``) a statement is provisional and may change as late data arrives.
    ``pricing`` says which scheme priced which of the home's days, in order: a month may be
    priced under several (``mechanism`` is that of its latest settled day).
    """

    home: str
    period: str  # YYYY-MM, the cooperative's local calendar month
    issued_ms: int
    final: bool
    currency: str  # ISO 4217
    minor_unit: int
    mechanism: Mechanism
    lines: list[StatementLine]
    total_minor: int
    grid_only_minor: int
    saving_minor: int
    intervals: int  # 15-minute intervals the home was settled in
    provisional_intervals: int  # of those, settled without the home's data (not arrived yet)
    estimated_intervals: int  # of those, interpolated across a gap in the home's readings
    pricing: list[StatementPricing] | None = None

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
        previous = ""
        for span in self.pricing or []:
            if span.first[:7] != self.period or span.last[:7] != self.period:
                raise ValueError(f"pricing {span.first}..{span.last} is outside {self.period}")
            if span.first <= previous:
                raise ValueError("pricing spans overlap or are out of order")
            previous = span.last


MAX_FORECAST_STEPS: Final = 7 * 96  # a week of 15-minute steps
_FORECAST_METHODS: Final = ("model", "fallback", "mixed", "absent", "selected")
_BASIS_NAME: Final = re.compile(r"[a-z0-9][a-z0-9+_-]{0,31}")


@dataclass(frozen=True, slots=True)
class TargetQuantiles:
    """One forecast target (demand, PV or wind): P10/P50/P90 in W per step, and how it was made.

    ``method``: ``model`` (the ONNX model), ``fallback`` (a rule from history, ``note`` says
    why), ``mixed`` (the model while the weather forecast lasts, the fallback after),
    ``absent`` (the cooperative has no such generation; all zeros) or ``selected`` (per
    horizon band, the forecaster that scored best on the cooperative's recent weeks).
    ``basis``: horizon band (``0-6h``, ``6-24h``, ``24-48h``) -> the forecaster serving it
    (demand: ``model``, ``last_week``, ``mean_4w``, ``median_4w``, ``model+mean_4w``,
    ``local``; PV: ``model`` or ``model_by_hour``).
    """

    p10_w: list[float]
    p50_w: list[float]
    p90_w: list[float]
    method: Literal["model", "fallback", "mixed", "absent", "selected"]
    note: str | None = None
    basis: dict[str, str] | None = None

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
        if self.basis is not None:
            if not 1 <= len(self.basis) <= 8:
                raise ValueError("basis must name 1 to 8 horizon bands")
            for band, name in self.basis.items():
                if not (_BASIS_NAME.fullmatch(band) and _BASIS_NAME.fullmatch(name)):
                    raise ValueError(f"basis {band!r}: {name!r} is not a band and method name")


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


# -- operator monitoring: hub/metrics and hub/alerts ---------------------------------------------

MAX_METRIC_HOMES: Final = 4000  # a cooperative that outgrows this runs several hubs
MAX_FAULTS_PER_HOME: Final = 8
MAX_ALERTS: Final = 500
AlertKind = Literal[
    "home-offline",  # the home's last will, or it said offline
    "stale-data",  # online, yet no reading has arrived for too long
    "device-fault",  # a meter, inverter or turbine the agent cannot read
    "readings-lost",  # the home's outbox overflowed: readings that will never arrive
    "backlog",  # many readings waiting in the home's outbox
    "unacked",  # the home's oldest unacked reading has waited minutes: delivery is stuck
    "home-mismatch",  # a payload naming another home than its topic: a fault or a forgery
    "forecast-stale",  # the community forecast was not refreshed
    "hub-errors",  # the hub failed to store readings (it did not ack them; agents resend)
    "rejected-messages",  # messages that broke the wire contract
]
ALERT_KINDS: Final = get_args(AlertKind)


@dataclass(frozen=True, slots=True)
class Alert:
    """A condition the operator should look at; ``kind``, ``home`` and ``device`` identify it
    across updates and ``since_ms`` is when it was first seen."""

    kind: AlertKind
    severity: Literal["warning", "critical"]
    since_ms: int
    text: str
    home: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"alert kind {self.kind!r} is unknown")
        _check_ts(self.since_ms, "since_ms")
        _check_text(self.text, "text")
        if self.home is not None:
            check_id(self.home, "home")
        if self.device is not None:
            check_id(self.device, "device")

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.home or ''}/{self.device or ''}"


@dataclass(frozen=True, slots=True)
class HomeHealth:
    """One home as the operator sees it: never its energy, only whether its data flows.

    ``last_seen_ms``: when the hub last heard from it (status or readings); ``last_reading_ms``:
    the time of its newest stored reading; ``faults``: devices it cannot read;
    ``unacked_age_s``: how long its oldest unacked reading had waited when it last reported.
    """

    state: Literal["online", "offline"]
    last_seen_ms: int | None = None
    last_reading_ms: int | None = None
    backlog: int | None = None
    faults: list[str] | None = None
    version: str | None = None
    unacked_age_s: int | None = None

    def __post_init__(self) -> None:
        for name in ("last_seen_ms", "last_reading_ms"):
            value = getattr(self, name)
            if value is not None:
                _check_ts(value, name)
        if self.backlog is not None and self.backlog < 0:
            raise ValueError("backlog is negative")
        if self.unacked_age_s is not None and self.unacked_age_s < 0:
            raise ValueError("unacked_age_s is negative")
        if self.faults is not None:
            if len(self.faults) > MAX_FAULTS_PER_HOME:
                raise ValueError(f"more than {MAX_FAULTS_PER_HOME} faults")
            for device in self.faults:
                check_id(device, "device")
        if self.version is not None:
            _check_text(self.version, "version")


@dataclass(frozen=True, slots=True)
class HubMetrics:
    """``hub/metrics``, retained: the operator's view of the cooperative, every ``interval_s``.

    Rates are per minute over the last interval. ``forecast_issued_ms`` is absent until the
    forecast service has published one. ``alerts`` are those active now; ``hub/alerts`` carries
    each one's raising and clearing. ``counters`` are the hub's ingest counters since it started.
    ``truncated``: healthy homes were left out of ``homes`` to keep the payload within the limit.
    """

    coop: str
    ts_ms: int
    interval_s: int
    homes_total: int
    homes_online: int
    homes_stale: int
    backlog_total: int
    readings_per_min: float
    messages_per_min: float
    rejected_per_min: float
    homes: dict[str, HomeHealth]
    alerts: list[Alert]
    counters: dict[str, int]
    forecast_issued_ms: int | None = None
    truncated: bool | None = None
    # Neighbourhood energy over the last hour, from homes sharing for community-stats: for each
    # of imported, exported and generated, "<name>_homes" and, only over at least k homes,
    # "<name>_wh" (withheld below k, so no figure exposes a single home).
    community: dict[str, float] | None = None

    def __post_init__(self) -> None:
        check_id(self.coop, "coop")
        _check_ts(self.ts_ms, "ts_ms")
        for name, value in (self.community or {}).items():
            if not math.isfinite(value) or len(name) > 40:
                raise ValueError(f"community figure {name!r} is not a finite number")
        if not 1 <= self.interval_s <= 86400:
            raise ValueError(f"interval_s {self.interval_s} is not 1 to 86400")
        for name in ("homes_total", "homes_online", "homes_stale", "backlog_total"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is negative")
        if self.homes_online > self.homes_total or self.homes_stale > self.homes_total:
            raise ValueError("more homes online or stale than homes")
        for name in ("readings_per_min", "messages_per_min", "rejected_per_min"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number")
        if len(self.homes) > MAX_METRIC_HOMES:
            raise ValueError(f"more than {MAX_METRIC_HOMES} homes")
        for home in self.homes:
            check_id(home, "home")
        if len(self.alerts) > MAX_ALERTS:
            raise ValueError(f"more than {MAX_ALERTS} alerts")
        if self.forecast_issued_ms is not None:
            _check_ts(self.forecast_issued_ms, "forecast_issued_ms")


@dataclass(frozen=True, slots=True)
class HubAlert:
    """``hub/alerts``, not retained: an alert raised or cleared at ``ts_ms``."""

    coop: str
    ts_ms: int
    state: Literal["raised", "cleared"]
    alert: Alert

    def __post_init__(self) -> None:
        check_id(self.coop, "coop")
        _check_ts(self.ts_ms, "ts_ms")


# -- appliance-timing prompts: homes/{home}/appliances, prompts, feedback -------------------------

MAX_APPLIANCES: Final = 16
MAX_PROMPT_WINDOWS: Final = 16  # per appliance: an interruptible run may come in pieces
MAX_LEVEL_SPANS: Final = 4 * 48  # quarter hours of two days
MAX_PROMPT_SPAN_MS: Final = 3 * 86_400_000
MAX_APPLIANCE_ENERGY_WH: Final = 200_000.0  # a large EV battery from empty
MINUTES_PER_DAY: Final = 1440
# IANA names (Europe/Amsterdam, America/Argentina/Cordoba) or UTC; the hub resolves them.
_TIMEZONE_RE: Final = re.compile(r"UTC|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){1,2}")
Level = Literal["green", "amber", "red"]  # green: use now; amber: neutral; red: avoid
LEVELS: Final = get_args(Level)
FeedbackAction = Literal["accepted", "snoozed", "done"]
FEEDBACK_ACTIONS: Final = get_args(FeedbackAction)


def _check_wh(value: float, what: str, *, signed: bool = False) -> None:
    if not math.isfinite(value) or abs(value) > _MAX_ABS_VALUE or (value < 0 and not signed):
        raise ValueError(f"{what} must be a finite{'' if signed else ' non-negative'} number")


@dataclass(frozen=True, slots=True)
class Appliance:
    """A flexible appliance the household lets the hub plan for: one typical run of it.

    Times of day are minutes after local midnight in the home's timezone. A latest finish at or
    before the earliest start is on the next day (an EV charged overnight: 18:00 to 07:00).
    An interruptible appliance (EV charger, immersion heater) may run in pieces.
    """

    name: str
    energy_wh: float  # a typical run
    duration_min: int  # a typical run, without pauses
    earliest_start_min: int  # 0..1439
    latest_finish_min: int  # 0..1440
    interruptible: bool
    runs_per_week: int  # how often it typically runs: 1..14

    def __post_init__(self) -> None:
        check_id(self.name, "appliance")
        _check_wh(self.energy_wh, "energy_wh")
        if not 0 < self.energy_wh <= MAX_APPLIANCE_ENERGY_WH:
            raise ValueError(f"energy_wh must be above 0 and at most {MAX_APPLIANCE_ENERGY_WH:g}")
        if not 1 <= self.duration_min <= MINUTES_PER_DAY:
            raise ValueError("duration_min must be 1 to 1440")
        if not 0 <= self.earliest_start_min < MINUTES_PER_DAY:
            raise ValueError("earliest_start_min must be 0 to 1439")
        if not 0 <= self.latest_finish_min <= MINUTES_PER_DAY:
            raise ValueError("latest_finish_min must be 0 to 1440")
        if self.duration_min > self.window_min:
            raise ValueError(f"a {self.duration_min}-minute run of {self.name} does not fit "
                             f"its {self.window_min}-minute window")  # fmt: skip
        if not 1 <= self.runs_per_week <= 14:
            raise ValueError("runs_per_week must be 1 to 14")

    @property
    def window_min(self) -> int:
        """Minutes from the earliest start to the latest finish."""
        span = (self.latest_finish_min - self.earliest_start_min) % MINUTES_PER_DAY
        return span or MINUTES_PER_DAY


@dataclass(frozen=True, slots=True)
class Appliances:
    """``homes/{home}/appliances``, retained: the appliances the hub may plan for this home.

    Released under the consent grant ``grant`` (one with the ``prompts`` purpose). An empty list
    without a grant withdraws them: the hub then plans nothing for the home and forgets what it
    learnt of it. ``timezone`` (IANA) gives the appliances' times of day their meaning.
    """

    home: str
    ts_ms: int
    timezone: str
    appliances: list[Appliance]
    grant: str | None = None

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        _check_ts(self.ts_ms, "ts_ms")
        if len(self.timezone) > 64 or not _TIMEZONE_RE.fullmatch(self.timezone):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA name like Europe/Paris")
        if self.grant is not None:
            check_id(self.grant, "grant")
        elif self.appliances:
            raise ValueError("appliances are released under a grant: grant is missing")
        if len(self.appliances) > MAX_APPLIANCES:
            raise ValueError(f"more than {MAX_APPLIANCES} appliances")
        names = [a.name for a in self.appliances]
        if len(set(names)) != len(names):
            raise ValueError("two appliances share a name")


@dataclass(frozen=True, slots=True)
class PromptWindow:
    """When to run: from ``start_ms`` to ``end_ms`` (UTC ms)."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        _check_ts(self.start_ms, "start_ms")
        _check_ts(self.end_ms, "end_ms")
        if not 0 < self.end_ms - self.start_ms <= 86_400_000:
            raise ValueError("a window ends after it starts, within a day")


@dataclass(frozen=True, slots=True)
class AppliancePrompt:
    """The planned run of one appliance: its windows (more than one only for an interruptible
    appliance), why in plain words, the energy of the run expected to come from the
    neighbourhood's own generation (``local_wh``) and how much more that is than running it at
    its earliest start (``benefit_wh``; Wh)."""

    appliance: str
    windows: list[PromptWindow]
    reason: str
    local_wh: float
    benefit_wh: float

    def __post_init__(self) -> None:
        check_id(self.appliance, "appliance")
        if not 1 <= len(self.windows) <= MAX_PROMPT_WINDOWS:
            raise ValueError(f"an appliance has 1 to {MAX_PROMPT_WINDOWS} windows")
        for a, b in zip(self.windows, self.windows[1:], strict=False):
            if b.start_ms < a.end_ms:
                raise ValueError("windows must be in time order and not overlap")
        _check_text(self.reason, "reason")
        _check_wh(self.local_wh, "local_wh")
        _check_wh(self.benefit_wh, "benefit_wh", signed=True)


@dataclass(frozen=True, slots=True)
class LevelSpan:
    """The traffic light from ``start_ms`` to ``end_ms``, and why."""

    start_ms: int
    end_ms: int
    level: Level
    reason: str

    def __post_init__(self) -> None:
        _check_ts(self.start_ms, "start_ms")
        _check_ts(self.end_ms, "end_ms")
        if self.end_ms <= self.start_ms:
            raise ValueError("a level span ends after it starts")
        if self.level not in LEVELS:
            raise ValueError(f"level {self.level!r} is not one of {LEVELS}")
        _check_text(self.reason, "reason")


@dataclass(frozen=True, slots=True)
class Prompts:
    """``homes/{home}/prompts``, retained: the home's current prompt set.

    ``level`` is the traffic light when issued (green: use now; amber: neutral; red: avoid) and
    ``levels`` what it becomes until ``valid_until_ms``, so the home's light follows the plan
    while the hub is away; after ``valid_until_ms`` the home shows nothing rather than stale
    advice. ``prompt`` identifies the set in feedback; ``benefit_wh`` adds up the appliances'.
    """

    home: str
    prompt: str
    issued_ms: int
    valid_until_ms: int
    level: Level
    reason: str
    levels: list[LevelSpan]
    appliances: list[AppliancePrompt]
    benefit_wh: float

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        check_id(self.prompt, "prompt")
        _check_ts(self.issued_ms, "issued_ms")
        _check_ts(self.valid_until_ms, "valid_until_ms")
        if not 0 < self.valid_until_ms - self.issued_ms <= MAX_PROMPT_SPAN_MS:
            raise ValueError("valid_until_ms must be after issued_ms, within three days")
        if self.level not in LEVELS:
            raise ValueError(f"level {self.level!r} is not one of {LEVELS}")
        _check_text(self.reason, "reason")
        if len(self.levels) > MAX_LEVEL_SPANS:
            raise ValueError(f"more than {MAX_LEVEL_SPANS} level spans")
        if self.levels:
            if self.levels[0].start_ms != self.issued_ms:
                raise ValueError("the first level span starts at issued_ms")
            if self.levels[-1].end_ms != self.valid_until_ms:
                raise ValueError("the last level span ends at valid_until_ms")
            for a, b in zip(self.levels, self.levels[1:], strict=False):
                if b.start_ms != a.end_ms:
                    raise ValueError("level spans must follow each other without gaps")
            if self.levels[0].level != self.level:
                raise ValueError("level differs from the first level span's")
        if len(self.appliances) > MAX_APPLIANCES:
            raise ValueError(f"more than {MAX_APPLIANCES} appliances")
        names = [a.appliance for a in self.appliances]
        if len(set(names)) != len(names):
            raise ValueError("an appliance appears twice")
        _check_wh(self.benefit_wh, "benefit_wh", signed=True)

    def level_at(self, t_ms: int) -> Level | None:
        """The light at ``t_ms``; None once the prompts have expired (or before issue)."""
        if not self.issued_ms <= t_ms < self.valid_until_ms:
            return None
        for span in self.levels:
            if span.start_ms <= t_ms < span.end_ms:
                return span.level
        return self.level


@dataclass(frozen=True, slots=True)
class Feedback:
    """``homes/{home}/feedback``: the household's answer to a prompt (the button).

    ``accepted``: we will run it then; ``snoozed``: not now; ``done``: it is running. Names the
    appliance and the start of its window when the answer is about one planned run.
    """

    home: str
    ts_ms: int
    prompt: str
    action: FeedbackAction
    appliance: str | None = None
    window_start_ms: int | None = None

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        _check_ts(self.ts_ms, "ts_ms")
        check_id(self.prompt, "prompt")
        if self.action not in FEEDBACK_ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {FEEDBACK_ACTIONS}")
        if self.appliance is not None:
            check_id(self.appliance, "appliance")
        if self.window_start_ms is not None:
            _check_ts(self.window_start_ms, "window_start_ms")
