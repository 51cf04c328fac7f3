"""The forecast's tables in the hub database: imported weather and the community series.

The community series (migration 7) is the neighbourhood's power per 15-minute slot and role,
summed over the devices the forecast may count, kept up to date as readings are committed (a
trigger queues each new reading; :func:`sync_forecast_series` folds the queue in), so a forecast
reads some 3,000 rows rather than millions of readings. Who counts is the caller's decision
(consent: :func:`hub.forecast.service.forecast_members`). Writes go through the store's
``transaction()``, reads through its ``reader()``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Final

from hub.storage.store import Store


def upsert_weather(
    store: Store,
    rows: Iterable[tuple[int, float | None, float | None, float | None, float | None]],
    imported_ms: int,
) -> int:
    """Store hourly weather rows ``(ts_ms, shortwave_radiation_w_m2, temperature_c,
    wind_speed_m_s, cloud_cover_pct)``; a newer import replaces an hour's row whole."""
    data = [(*row, imported_ms) for row in rows]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO weather (ts_ms, shortwave_radiation_w_m2, "
            "temperature_c, wind_speed_m_s, cloud_cover_pct, imported_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            data,
        )
    return len(data)


def weather_rows(
    store: Store, start_ms: int, end_ms: int
) -> list[tuple[int, float | None, float | None, float | None, float | None]]:
    """Hourly weather rows with ``start_ms <= ts_ms < end_ms``, by time."""
    return [
        (int(r[0]), r[1], r[2], r[3], r[4])
        for r in store.reader().execute(
            "SELECT ts_ms, shortwave_radiation_w_m2, temperature_c, wind_speed_m_s, "
            "cloud_cover_pct FROM weather WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
            (start_ms, end_ms),
        )
    ]


def weather_imported_ms(store: Store) -> int | None:
    """When weather was last imported (UTC ms), or None if never."""
    row = store.reader().execute("SELECT max(imported_ms) FROM weather").fetchone()
    return None if row[0] is None else int(row[0])


def sync_forecast_series(
    store: Store, members: Mapping[int, tuple[int, int]], *, devices_per_commit: int = 100
) -> int:
    """Bring the forecast's community series (migration 7) up to date; returns the readings
    folded in.

    ``members`` maps each device whose power the series may count to ``(from_ms,
    span_ms)``: from when (aligned down to the span) and at what resolution (a multiple of
    15 minutes that divides a day: its mean over each span is spread over the span's
    slots). The caller decides who is a member (consent: :mod:`hub.forecast.service`).
    Devices that stop being members leave the series, and their older slots leave it as
    ``from_ms`` moves on. A new member, or one whose span changed or whose ``from_ms`` moved
    back, is folded in afresh from its stored readings, ``devices_per_commit`` devices per
    transaction so that ingest is never held up for long; everyone else only folds in the
    readings queued since the last call. A raw reading counts in the slot holding its
    ``ts_ms``; an aggregate (``period_ms`` set) is spread over the slots its period covers,
    weighted by overlap.
    """
    want: dict[int, tuple[int, int]] = {}
    for device_id, (from_ms, span_ms) in members.items():
        if span_ms <= 0 or span_ms % _QUARTER_MS or _DAY_MS % span_ms:
            raise ValueError(f"span of device {device_id} must divide a day in quarter-hours")
        want[int(device_id)] = (from_ms - from_ms % span_ms, span_ms)
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM meta WHERE key = 'forecast_series'").fetchone() is None:
            # From now on the trigger queues every reading for the next sync.
            conn.execute("INSERT INTO meta (key, value) VALUES ('forecast_series', '1')")
        have = {
            int(d): (int(f), int(s))
            for d, f, s in conn.execute("SELECT device_id, from_ms, span_ms FROM forecast_members")
        }
        for device_id in have.keys() - want.keys():
            # The delete trigger takes each row's contribution out of the series.
            conn.execute("DELETE FROM forecast_power_15min WHERE device_id = ?", (device_id,))
            conn.execute("DELETE FROM forecast_members WHERE device_id = ?", (device_id,))
        moved = [
            (device_id, from_ms)
            for device_id, (from_ms, span_ms) in want.items()
            if device_id in have and have[device_id] != (from_ms, span_ms)
            and have[device_id][1] == span_ms and from_ms > have[device_id][0]
        ]  # fmt: skip
        conn.executemany(
            "DELETE FROM forecast_power_15min WHERE device_id = ? AND slot_ms < ?", moved
        )
        conn.executemany(
            "UPDATE forecast_members SET from_ms = ? WHERE device_id = ?",
            [(from_ms, device_id) for device_id, from_ms in moved],
        )
    rebuild = sorted(
        device_id
        for device_id, (from_ms, span_ms) in want.items()
        if device_id not in have or have[device_id][1] != span_ms or from_ms < have[device_id][0]
    )
    folded = 0
    for first in range(0, len(rebuild), devices_per_commit):
        chunk = {d: want[d] for d in rebuild[first : first + devices_per_commit]}
        with store.transaction() as conn:
            folded += _rebuild_forecast_devices(conn, chunk)
    with store.transaction() as conn:
        folded += _fold_forecast_pending(conn, want)
        conn.execute("DELETE FROM forecast_community_15min WHERE devices <= 0")
    return folded


def forecast_series(store: Store, start_ms: int, end_ms: int) -> list[tuple[int, str, float, int]]:
    """The forecast's community series for slots ``start_ms <= slot_ms < end_ms``: per
    15-minute slot and role, (slot_ms, role, summed mean power_w, devices counted), by
    slot. Call :func:`sync_forecast_series` first to include the latest readings."""
    return [
        (int(slot), str(role), float(power), int(devices))
        for slot, role, power, devices in store.reader().execute(
            "SELECT slot_ms, role, power_w, devices FROM forecast_community_15min "
            "WHERE slot_ms >= ? AND slot_ms < ? AND devices > 0 ORDER BY slot_ms",
            (start_ms, end_ms),
        )
    ]


def _sql(*fragments: str) -> str:
    """Join SQL fragments. Only for identifiers: values are always bound."""
    return " ".join(fragments)


_QUARTER_MS: Final = 900_000
_DAY_MS: Final = 86_400_000
_UPSERT_FORECAST_POWER: Final = (
    "INSERT INTO forecast_power_15min (device_id, slot_ms, span_ms, power_sum_w, samples, "
    "contrib_w) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, slot_ms) DO UPDATE SET "
    "power_sum_w = power_sum_w + excluded.power_sum_w, samples = samples + excluded.samples, "
    "contrib_w = (power_sum_w + excluded.power_sum_w) / (samples + excluded.samples)"
)


def _spread(
    sums: dict[tuple[int, int], list[float]],
    device_id: int,
    from_ms: int,
    span_ms: int,
    ts_ms: int,
    period_ms: int | None,
    power_w: float,
) -> None:
    """Add one reading to per-(device, span start) [sum, samples] from ``from_ms`` on."""
    if not period_ms or period_ms <= 0:
        slot = ts_ms - ts_ms % _QUARTER_MS
        if slot >= from_ms:
            acc = sums.setdefault((device_id, slot - slot % span_ms), [0.0, 0.0])
            acc[0] += power_w
            acc[1] += 1.0
        return
    start = ts_ms - period_ms
    slot = start - start % _QUARTER_MS
    while slot < ts_ms:
        overlap = min(ts_ms, slot + _QUARTER_MS) - max(start, slot)
        if overlap > 0 and slot >= from_ms:
            weight = overlap / _QUARTER_MS
            acc = sums.setdefault((device_id, slot - slot % span_ms), [0.0, 0.0])
            acc[0] += power_w * weight
            acc[1] += weight
        slot += _QUARTER_MS


def _upsert_forecast_power(
    conn: sqlite3.Connection,
    sums: dict[tuple[int, int], list[float]],
    spans: Mapping[int, tuple[int, int]],
) -> None:
    conn.executemany(
        _UPSERT_FORECAST_POWER,
        [(d, slot, spans[d][1], s, n, s / n) for (d, slot), (s, n) in sums.items() if n > 0],
    )


def _rebuild_forecast_devices(conn: sqlite3.Connection, devices: dict[int, tuple[int, int]]) -> int:
    """Fold these devices into the series afresh from their stored readings (one transaction)."""
    for device_id, (from_ms, span_ms) in devices.items():
        conn.execute("DELETE FROM forecast_power_15min WHERE device_id = ?", (device_id,))
        # Queued readings are stored readings: the refold below counts them.
        conn.execute("DELETE FROM forecast_pending WHERE device_id = ?", (device_id,))
        conn.execute(
            "INSERT INTO forecast_members (device_id, from_ms, span_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET from_ms = excluded.from_ms, "
            "span_ms = excluded.span_ms",
            (device_id, from_ms, span_ms),
        )
    # Whole devices at once: per-row triggers off, their sums added in one statement below.
    conn.execute("INSERT INTO meta (key, value) VALUES ('forecast_bulk', '1')")
    folded = 0
    for device_id, (from_ms, span_ms) in devices.items():
        conn.execute(
            "INSERT INTO forecast_power_15min (device_id, slot_ms, span_ms, power_sum_w, "
            "samples, contrib_w) SELECT device_id, ts_ms - ts_ms % ?, ?, SUM(power_w), "
            "COUNT(*), SUM(power_w) / COUNT(*) FROM readings WHERE device_id = ? AND ts_ms >= ? "
            "AND power_w IS NOT NULL AND (period_ms IS NULL OR period_ms <= 0) "
            "GROUP BY ts_ms - ts_ms % ?",
            (span_ms, span_ms, device_id, from_ms, span_ms),
        )
        sums: dict[tuple[int, int], list[float]] = {}
        for ts_ms, period_ms, power_w in conn.execute(
            "SELECT ts_ms, period_ms, power_w FROM readings WHERE device_id = ? AND ts_ms > ? "
            "AND power_w IS NOT NULL AND period_ms > 0",
            (device_id, from_ms),
        ):
            _spread(sums, device_id, from_ms, span_ms, ts_ms, period_ms, power_w)
        _upsert_forecast_power(conn, sums, devices)
        row = conn.execute(
            "SELECT COUNT(*) FROM readings WHERE device_id = ? AND ts_ms >= ? "
            "AND power_w IS NOT NULL",
            (device_id, from_ms),
        ).fetchone()
        folded += int(row[0])
    conn.execute(
        _sql(
            "INSERT INTO forecast_community_15min (slot_ms, role, power_w, devices)",
            "SELECT f.slot_ms + s.k * 900000, d.role, SUM(f.contrib_w), COUNT(*)",
            "FROM forecast_power_15min f JOIN devices d ON d.id = f.device_id",
            "JOIN forecast_span_steps s ON s.k < f.span_ms / 900000",
            "WHERE f.device_id IN (" + ", ".join("?" * len(devices)) + ")",
            "AND f.contrib_w IS NOT NULL",
            "GROUP BY 1, 2 ON CONFLICT (slot_ms, role) DO UPDATE SET",
            "power_w = power_w + excluded.power_w, devices = devices + excluded.devices",
        ),
        list(devices),
    )
    conn.execute("DELETE FROM meta WHERE key = 'forecast_bulk'")
    return folded


def _fold_forecast_pending(conn: sqlite3.Connection, members: Mapping[int, tuple[int, int]]) -> int:
    """Fold the readings queued since the last sync into the members' sums (one transaction);
    the update triggers carry each change of a member's mean into the community series."""
    row = conn.execute("SELECT max(id) FROM forecast_pending").fetchone()
    if row[0] is None:
        return 0
    last = int(row[0])
    sums: dict[tuple[int, int], list[float]] = {}
    folded = 0
    for device_id, ts_ms, period_ms, power_w in conn.execute(
        "SELECT r.device_id, r.ts_ms, r.period_ms, r.power_w FROM forecast_pending p "
        "JOIN readings r ON r.device_id = p.device_id AND r.seq = p.seq WHERE p.id <= ?",
        (last,),
    ):
        terms = members.get(device_id)
        if terms is None or power_w is None:
            continue  # not a member (no consent for the forecast): never counted
        _spread(sums, device_id, terms[0], terms[1], ts_ms, period_ms, power_w)
        folded += 1
    _upsert_forecast_power(conn, sums, members)
    conn.execute("DELETE FROM forecast_pending WHERE id <= ?", (last,))
    return folded
