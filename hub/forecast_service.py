"""The hub's forecast service: read history and weather, run the model, publish ``hub/forecast``.

Refreshes every ``every_s`` seconds of the injected clock and soon after new weather is imported
(it looks at the weather table's import time every ``weather_poll_s``, so an import by
``coopwatt-hub weather import`` in another process is noticed too). Each forecast is published
retained, so an operator's dashboard or the prompt planner gets the latest one on subscribing.

:func:`read_community_history` is the ONE place the forecast reads the cooperative's readings:
once consent lands it is scoped to data granted for the ``forecast`` purpose, and nothing else
in the forecast touches the readings.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from hub.features import DAY_MS, HISTORY_DAYS, STEP_MS, History
from hub.forecast import (
    DEFAULT_HOURS,
    ForecastModel,
    ForecastResult,
    ModelError,
    Site,
    align_issue_ms,
    load_model,
    make_forecast,
)
from hub.store import Store
from hub.weather import WeatherSeries
from protocol.clock import Clock
from protocol.codec import encode
from protocol.payloads import Forecast, TargetQuantiles
from protocol.topics import HubTopic, hub_topic

log = logging.getLogger(__name__)

LATE_DATA_MS: Final = 2 * DAY_MS  # readings may arrive this late (an agent's outbox backlog)


class Publish(Protocol):
    """How the service publishes: :meth:`protocol.session.MqttSession.publish` fits."""

    def __call__(
        self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...
    ) -> Any: ...


class HistoryError(ValueError):
    """A history CSV that cannot be used; the message says where."""


# -- reading history -------------------------------------------------------------------------


def history_from_slots(rows: list[tuple[int, str, float]], start_ms: int, end_ms: int) -> History:
    """Community series from per-slot, per-role sums (see :meth:`Store.power_slots`).

    Demand is what the homes consumed: grid import (export negative) plus PV, wind and battery
    discharge, in slots where grid meters reported; PV and wind are their generation.
    """
    start_ms = start_ms - start_ms % STEP_MS
    n = max(0, (end_ms - start_ms) // STEP_MS)
    by_role = {role: np.full(n, np.nan) for role in ("grid", "pv", "wind", "battery")}
    for slot, role, power in rows:
        i = (slot - start_ms) // STEP_MS
        if role in by_role and 0 <= i < n:
            by_role[role][i] = power
    grid = by_role["grid"]
    generation = sum(np.nan_to_num(by_role[r]) for r in ("pv", "wind", "battery"))
    demand = np.where(np.isfinite(grid), grid + generation, np.nan)
    return History(start_ms, demand, by_role["pv"], by_role["wind"])


def read_community_history(store: Store, start_ms: int, end_ms: int) -> History:
    """The community's 15-minute history from the hub store: THE forecast's read of readings.

    Consent: this is where the ``forecast`` purpose scoping goes when the consent ledger lands,
    so that the forecast only ever sees streams granted for it.
    """
    store.refresh_power_slots(STEP_MS)
    rows = store.power_slots(start_ms, end_ms)
    if not rows:
        return History.empty(end_ms)
    # Start at the first slot with data, not at ``start_ms`` (which may be the epoch).
    return history_from_slots(rows, max(start_ms, rows[0][0]), end_ms)


def read_weather(store: Store, start_ms: int, end_ms: int) -> WeatherSeries:
    rows = store.weather_rows(start_ms, end_ms)
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
    return store.upsert_weather(rows, imported_ms)


def parse_history_csv(text: str) -> History:
    """``ts,demand_w,pv_w,wind_w``: UTC ISO 8601 at 15-minute boundaries, the mean power over
    the 15 minutes starting at ``ts`` (W). A column may be absent, a cell empty."""
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
    values: dict[str, list[float]] = {"demand_w": [], "pv_w": [], "wind_w": []}
    for line, row in enumerate(reader, start=2):
        if not row or not row[0].strip():
            continue
        try:
            dt = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
        except ValueError:
            raise HistoryError(f"line {line}: ts {row[0]!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
        if ms % STEP_MS:
            raise HistoryError(f"line {line}: ts {row[0]!r} is not on a 15-minute boundary")
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
    if np.any(np.diff(ts) == 0):
        raise HistoryError("the same ts appears twice")
    start = int(ts[0])
    n = int((ts[-1] - start) // STEP_MS) + 1
    idx = (ts - start) // STEP_MS

    def grid(name: str) -> np.ndarray:
        out = np.full(n, np.nan)
        out[idx] = np.asarray(values[name])[order]
        return out

    return History(start, grid("demand_w"), grid("pv_w"), grid("wind_w"))


def load_history_csv(path: str | Path) -> History:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read {path}: {exc}") from None
    try:
        return parse_history_csv(text)
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
            note=t.note or None,
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
    ) -> None:
        self.store = store
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh(self) -> Forecast:
        """Forecast now and publish; never raises for missing data (fallbacks say why)."""
        with self._lock:
            now = self.clock.now_ms()
            issue = align_issue_ms(now)
            self._weather_seen = self.store.weather_imported_ms()
            history = read_community_history(self.store, issue - HISTORY_DAYS * DAY_MS, issue)
            weather = read_weather(
                self.store, issue - 3_600_000, issue + (self.hours + 2) * 3_600_000
            )
            result = make_forecast(self.model, history, weather, self.site, issue, self.hours)
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
            seen = self.store.weather_imported_ms()
        except Exception:
            log.exception("cannot read the weather table")
            return False
        return seen is not None and seen != self._weather_seen
