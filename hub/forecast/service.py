"""The hub's forecast service: read history and weather, run the model, publish ``hub/forecast``.

Refreshes every ``every_s`` seconds of the injected clock and soon after new weather is imported
(it looks at the weather table's import time every ``weather_poll_s``, so an import by
``coopwatt-hub weather import`` in another process is noticed too). Each forecast is published
retained, so an operator's dashboard or the prompt planner gets the latest one on subscribing.
Each refresh is tuned on the cooperative's last 28 days (:mod:`hub.forecast.tuning`): the first
replays every past issue (about three seconds for 28 days), later ones find the replays and
the tuning cached, and every 6 hours one more issue is replayed and the tuning scored again;
so the service reads 56 days of history and 29 days of stored weather.

:func:`read_community_history` is the ONE place the forecast reads the cooperative's readings,
scoped by consent to what homes grant for the ``forecast`` purpose; nothing else in the forecast
touches the readings.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

import numpy as np

from hub.consent.book import ConsentBook
from hub.forecast.features import DAY_MS, HISTORY_DAYS, STEP_MS, STEPS_PER_DAY, History
from hub.forecast.model import (
    DEFAULT_HOURS,
    ForecastModel,
    ForecastResult,
    ModelError,
    align_issue_ms,
    load_model,
    tuned_forecast,
)
from hub.forecast.series import (
    forecast_series,
    sync_forecast_series,
    upsert_weather,
    weather_imported_ms,
    weather_rows,
)
from hub.forecast.site import Site
from hub.forecast.tuning import TUNE_DAYS, ReplayCache
from hub.forecast.weather import WeatherSeries
from hub.storage.store import Store
from protocol.clock import Clock
from protocol.codec import encode
from protocol.consent import RESOLUTION_MS, Purpose
from protocol.payloads import Forecast, TargetQuantiles
from protocol.quantities import Role
from protocol.timeparse import parse_iso_ms
from protocol.topics import HubTopic, hub_topic

if TYPE_CHECKING:
    from protocol.session import Publish

log = logging.getLogger(__name__)


class HistoryError(ValueError):
    """A history CSV that cannot be used; the message says where."""


# -- reading history -------------------------------------------------------------------------


HOUR_MS: Final = 3_600_000
SERIES_ROLES: Final = frozenset({Role.GRID, Role.PV, Role.WIND, Role.BATTERY})
"""The streams the community series counts (a ``load`` sub-meter is inside a grid meter's)."""
READ_DAYS: Final = HISTORY_DAYS + TUNE_DAYS
"""History a refresh reads: the model's window before each replayed issue of the tuning."""
TAIL_SLOTS: Final = 8
"""How many of the latest slots are checked for readings still on their way."""


def history_from_slots(
    rows: Sequence[tuple[int, str, float] | tuple[int, str, float, int]], start_ms: int, end_ms: int
) -> History:
    """Community series from per-slot, per-role sums (see
    :func:`~hub.forecast.series.forecast_series`).

    Demand is what the homes consumed: grid import (export negative) plus PV, wind and battery
    discharge, in slots where grid meters reported; PV and wind are their generation. When rows
    carry a device count, a slot among the last :data:`TAIL_SLOTS` that fewer than 90 % of the
    usual grid meters have reported yet (their readings are still on the way) counts as
    unknown, not as a drop in demand. (Generation is left as it is: many inverters sleep at
    night and stop reporting, which is no drop either.)
    """
    start_ms = start_ms - start_ms % STEP_MS
    n = max(0, (end_ms - start_ms) // STEP_MS)
    roles = ("grid", "pv", "wind", "battery")
    by_role = {role: np.full(n, np.nan) for role in roles}
    counts = {role: np.zeros(n) for role in roles}
    for row in rows:
        slot, role, power = row[0], row[1], row[2]
        i = (slot - start_ms) // STEP_MS
        if role in by_role and 0 <= i < n:
            by_role[role][i] = power
            counts[role][i] = row[3] if len(row) > 3 else np.nan
    grid = by_role["grid"]
    meters = counts["grid"]
    if n > TAIL_SLOTS and np.isfinite(meters).all():
        usual = np.median(meters[max(0, n - TAIL_SLOTS - STEPS_PER_DAY) : n - TAIL_SLOTS])
        tail = slice(n - TAIL_SLOTS, n)
        grid[tail] = np.where(meters[tail] < 0.9 * usual, np.nan, grid[tail])
    generation = sum(np.nan_to_num(by_role[r]) for r in ("pv", "wind", "battery"))
    demand = np.where(np.isfinite(grid), grid + generation, np.nan)
    return History(start_ms, demand, by_role["pv"], by_role["wind"])


def forecast_members(store: Store, book: ConsentBook, now_ms: int) -> dict[int, tuple[int, int]]:
    """The devices whose power the forecast may count, as ``device id -> (from_ms, span_ms)``:
    those whose home's current grant shares the stream for the ``forecast`` purpose, no older
    than that grant's retention (to the hour) and no finer than its resolution (15 minutes at
    the finest)."""
    members: dict[int, tuple[int, int]] = {}
    for device_id, home, _device, role in store.device_ids():
        if role not in SERIES_ROLES:
            continue
        terms = book.current(home).covers(role, Purpose.FORECAST)
        if terms is None:
            continue
        span_ms = max(STEP_MS, RESOLUTION_MS[terms.resolution])
        # On the hour, as consent enforces retention hourly: the window then moves (and the
        # series sheds a slot per device) once an hour, not at every refresh.
        from_ms = now_ms - terms.retention_days * DAY_MS
        members[device_id] = (from_ms - from_ms % HOUR_MS, span_ms)
    return members


def read_community_history(
    store: Store,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int,
    book: ConsentBook | None = None,
    members: dict[int, tuple[int, int]] | None = None,
) -> History:
    """The community's 15-minute history from the hub store: THE forecast's read of members'
    data, scoped by consent to the ``forecast`` purpose.

    Only devices whose home grants their stream for the forecast count, within that grant's
    retention (before ``now_ms``) and at its resolution (:func:`forecast_members`). The series
    is kept incrementally (:func:`~hub.forecast.series.sync_forecast_series`): a read folds in
    the readings committed since the last one and then reads one row per slot and role, so it costs
    milliseconds whatever the size of the cooperative. ``book`` defaults to the ledger as
    committed; the running hub passes the one ingest keeps current. ``members`` is
    :func:`forecast_members` for ``now_ms`` when the caller has it already.
    """
    if members is None:
        book = book if book is not None else ConsentBook(store)
        members = forecast_members(store, book, now_ms)
    sync_forecast_series(store, members)
    rows = forecast_series(store, start_ms, end_ms)
    if not rows:
        return History.empty(end_ms)
    # Start at the first slot with data, not at ``start_ms`` (which may be the epoch).
    return history_from_slots(rows, max(start_ms, rows[0][0]), end_ms)


def read_weather(store: Store, start_ms: int, end_ms: int) -> WeatherSeries:
    rows = weather_rows(store, start_ms, end_ms)
    if not rows:
        return WeatherSeries.empty()
    cols = list(zip(*rows, strict=True))

    def arr(i: int) -> np.ndarray:
        return np.asarray([np.nan if v is None else v for v in cols[i]], dtype=np.float64)

    return WeatherSeries(np.asarray(cols[0], dtype=np.int64), arr(1), arr(2), arr(3), arr(4))


def import_weather(store: Store, weather: WeatherSeries, imported_ms: int) -> int:
    """Store imported weather; NaN becomes NULL. Returns the hours stored."""

    def opt(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    rows = [
        (
            int(weather.ts_ms[i]),
            opt(weather.shortwave_radiation_w_m2[i]),
            opt(weather.temperature_c[i]),
            opt(weather.wind_speed_m_s[i]),
            opt(weather.cloud_cover_pct[i]),
        )
        for i in range(len(weather))
    ]
    return upsert_weather(store, rows, imported_ms)


def parse_history_csv(text: str, local_zone: str | None = None) -> History:
    """``ts,demand_w,pv_w,wind_w``: ISO 8601 at 15-minute boundaries, the mean power over the 15
    minutes starting at ``ts`` (W). A column may be absent, a cell empty.

    A ``ts`` with an offset or ``Z`` is that instant. One without is UTC, unless ``local_zone``
    (an IANA name) says the file is in that zone's wall-clock time. Local files repeat an hour
    when the clocks go back and skip one when they go forward: the first pass through a
    repeated hour is read as the summer time and the second as winter time (so the file must
    be in time order there), and a time inside the skipped hour is refused, since no clock
    showed it. Any other repeated ``ts`` is refused with the lines it is on.
    """
    zone = ZoneInfo(local_zone) if local_zone is not None else None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise HistoryError("the history file is empty") from None
    if not header or header[0] != "ts":
        raise HistoryError("the first column must be 'ts'")
    unknown = [h for h in header[1:] if h not in ("demand_w", "pv_w", "wind_w")]
    if unknown:
        raise HistoryError(f"unknown column {unknown[0]!r}; expected demand_w, pv_w, wind_w")
    cols = {name: i for i, name in enumerate(header)}
    stamps: list[int] = []
    lines: dict[int, int] = {}  # ts -> the line it is on, to name both lines of a repeat
    values: dict[str, list[float]] = {"demand_w": [], "pv_w": [], "wind_w": []}
    for line, row in enumerate(reader, start=2):
        if not row or not row[0].strip():
            continue
        text_ts = row[0].strip()
        try:
            ms = _history_ms(text_ts, zone, lines)
        except ValueError as exc:
            raise HistoryError(f"line {line}: ts {text_ts!r} {exc}") from None
        if ms % STEP_MS:
            raise HistoryError(f"line {line}: ts {text_ts!r} is not on a 15-minute boundary")
        if ms in lines:
            naive = datetime.fromisoformat(text_ts.replace("Z", "+00:00")).tzinfo is None
            hint = (
                "; a file in local time repeats an hour when the clocks go back: "
                "give its timezone (--history-timezone) or write UTC times"
                if naive and zone is None
                else ""
            )
            raise HistoryError(
                f"line {line}: ts {text_ts!r} appears twice (also on line {lines[ms]}){hint}"
            )
        lines[ms] = line
        stamps.append(ms)
        for name, column in values.items():
            i = cols.get(name)
            cell = row[i].strip() if i is not None and i < len(row) else ""
            try:
                v = float(cell) if cell else np.nan
            except ValueError:
                raise HistoryError(f"line {line}: {name} {cell!r} is not a number") from None
            if not (np.isnan(v) or np.isfinite(v)):
                raise HistoryError(f"line {line}: {name} must be finite")
            column.append(v)
    if not stamps:
        return History.empty(0)
    ts = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    start = int(ts[0])
    n = int((ts[-1] - start) // STEP_MS) + 1
    idx = (ts - start) // STEP_MS

    def grid(name: str) -> np.ndarray:
        out = np.full(n, np.nan)
        out[idx] = np.asarray(values[name])[order]
        return out

    return History(start, grid("demand_w"), grid("pv_w"), grid("wind_w"))


def _history_ms(text: str, zone: ZoneInfo | None, seen: Mapping[int, int]) -> int:
    """UTC ms of one history ``ts`` (see :func:`parse_history_csv`); ``seen`` holds the times
    already read, which decide which pass through a repeated local hour this is."""
    if zone is None:
        try:
            return parse_iso_ms(text, naive="utc")
        except ValueError:
            raise ValueError("is not ISO 8601") from None
    try:
        wall = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not ISO 8601") from None
    if wall.tzinfo is not None:
        return round(wall.timestamp() * 1000)
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return round(first.timestamp() * 1000)
    # Two readings of the wall time. In a repeated hour fold 0 comes first; in a skipped hour
    # the wall time round-trips through UTC to a different one.
    as_utc = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if as_utc != wall:
        raise ValueError(f"is in the hour skipped when the clocks in {zone.key} go forward")
    ms_first = round(first.timestamp() * 1000)
    return round(second.timestamp() * 1000) if ms_first in seen else ms_first


def load_history_csv(path: str | Path, local_zone: str | None = None) -> History:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read {path}: {exc}") from None
    try:
        return parse_history_csv(text, local_zone)
    except HistoryError as exc:
        raise HistoryError(f"{path}: {exc}") from None


# -- the payload -----------------------------------------------------------------------------


def to_payload(coop: str, result: ForecastResult, issued_ms: int) -> Forecast:
    def q(name: str) -> TargetQuantiles:
        t = result.targets[name]
        return TargetQuantiles(
            p10_w=[round(float(v), 1) for v in t.p10],
            p50_w=[round(float(v), 1) for v in t.p50],
            p90_w=[round(float(v), 1) for v in t.p90],
            method=t.method,
            note=t.note[:200] or None,
            basis=dict(t.basis) or None,
        )

    return Forecast(
        coop=coop,
        issued_ms=issued_ms,
        start_ms=result.issue_ms,
        step_s=STEP_MS // 1000,
        model=result.model,
        demand=q("demand"),
        pv=q("pv"),
        wind=q("wind"),
    )


# -- the service -----------------------------------------------------------------------------


class ForecastService:
    """Forecast on a schedule and on new weather; publish each forecast retained."""

    def __init__(
        self,
        store: Store,
        coop: str,
        site: Site,
        clock: Clock,
        publish: Publish,
        *,
        model_path: str | Path | None = None,
        every_s: int = 900,
        weather_poll_s: int = 60,
        hours: int = DEFAULT_HOURS,
        book: ConsentBook | None = None,
    ) -> None:
        self.store = store
        self.book = book
        self.coop = coop
        self.site = site
        self.clock = clock
        self.publish = publish
        self.every_ms = every_s * 1000
        self.poll_ms = weather_poll_s * 1000
        self.hours = hours
        self.topic = hub_topic(coop, HubTopic.FORECAST)
        self.model: ForecastModel | None
        try:
            self.model = load_model(model_path)
        except ModelError as exc:
            log.error("forecast model unavailable, publishing fallbacks: %s", exc)
            self.model = None
        self.last: Forecast | None = None
        self.runs = 0
        self._weather_seen: int | None = None
        self._replays = ReplayCache()  # past forecasts tuning scores, kept between refreshes
        self._members: frozenset[int] = frozenset()  # the devices the replays were made from
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh(self) -> Forecast:
        """Forecast now and publish; never raises for missing data (fallbacks say why)."""
        with self._lock:
            now = self.clock.now_ms()
            issue = align_issue_ms(now)
            self._weather_seen = weather_imported_ms(self.store)
            # Replays hold forecasts made from the members of their time: when a device joins
            # or leaves the forecast (a grant changed), they are made again from the history
            # as it may now be read, so a withdrawn home's data stops shaping the forecast.
            book = self.book if self.book is not None else ConsentBook(self.store)
            members = forecast_members(self.store, book, now)
            if frozenset(members) != self._members:
                self._replays = ReplayCache()
                self._members = frozenset(members)
            history = read_community_history(
                self.store, issue - READ_DAYS * DAY_MS, issue, now_ms=now, members=members
            )
            weather = read_weather(
                self.store, issue - (TUNE_DAYS + 1) * DAY_MS, issue + (self.hours + 2) * HOUR_MS
            )
            result = tuned_forecast(
                self.model, history, weather, self.site, issue, self.hours, cache=self._replays
            )
            payload = to_payload(self.coop, result, now)
            self.publish(self.topic, encode(payload), qos=1, retain=True)
            self.last = payload
            self.runs += 1
            log.info(
                "forecast published start=%s methods=%s",
                result.issue_ms,
                ",".join(f"{k}:{v.method}" for k, v in result.targets.items()),
            )
            return payload

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("forecast service already started")
        self._thread = threading.Thread(target=self._run, name=f"forecast-{self.coop}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        next_ms = self.clock.now_ms()
        while not self._stop.is_set():
            now = self.clock.now_ms()
            if now >= next_ms or self._new_weather():
                # The schedule counts from when this run began, not from when it ended.
                next_ms = now + self.every_ms
                try:
                    self.refresh()
                except Exception:
                    log.exception("forecast refresh failed; trying again next time")
            wake = min(next_ms, self.clock.now_ms() + self.poll_ms)
            if self.clock.sleep_until_ms(wake, self._stop):
                return

    def _new_weather(self) -> bool:
        try:
            seen = weather_imported_ms(self.store)
        except Exception:
            log.exception("cannot read the weather table")
            return False
        return seen is not None and seen != self._weather_seen
