"""hub.settlement.intervals: counters interpolated at boundaries, gaps flagged, nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.settlement.intervals import (
    ESTIMATED,
    MISSING,
    OK,
    RESET,
    Series,
    boundary_value,
    counter_intervals,
    home_intervals,
    interval_boundaries,
)
from hub.settlement.scheme import INTERVAL_MS
from tests.times import JUNE_1_2026_MIDNIGHT_UTC_MS

T0 = JUNE_1_2026_MIDNIGHT_UTC_MS  # on the 15-minute grid
MIN = 60_000
GAP = 15 * MIN


def test_interpolates_between_readings_either_side() -> None:
    # 100 Wh at 00:05 and 250 Wh at 00:20: at 00:15 the counter read 100 + 150·10/15 = 200 Wh.
    s = Series.of([(T0 + 5 * MIN, 100.0), (T0 + 20 * MIN, 250.0)])
    assert boundary_value(s, T0 + 15 * MIN, GAP) == (200_000, 0)
    assert boundary_value(s, T0 + 20 * MIN, GAP)[0] == 250_000  # a reading on the boundary
    assert boundary_value(s, T0 + 21 * MIN, GAP)[0] is None  # nothing after it yet
    assert boundary_value(s, T0, GAP)[0] is None  # before the first reading


def test_statuses_ok_estimated_missing_reset_and_not_yet_a_member() -> None:
    b = interval_boundaries(T0, T0 + 6 * INTERVAL_MS, INTERVAL_MS)
    s = Series.of(
        [
            (T0 + 10 * MIN, 1000.0),  # first reading inside interval 0: not a member there
            (T0 + 16 * MIN, 1010.0),
            (T0 + 29 * MIN, 1020.0),
            (T0 + 31 * MIN, 1030.0),
            (T0 + 70 * MIN, 1100.0),  # a 39-minute gap: intervals 2 and 3 estimated
            (T0 + 76 * MIN, 1000.0),  # the meter was replaced: the counter went back (4)
            (T0 + 80 * MIN, 1001.0),
        ]
    )
    ci = counter_intervals(s, b, GAP)
    assert ci.status == (None, OK, ESTIMATED, ESTIMATED, RESET, MISSING)
    assert ci.energy_mwh[0] is None and ci.energy_mwh[5] is None
    # 00:15 is 1000 + 10·5/6 Wh; 00:30 is 1025 Wh; everything between is exact by telescoping.
    assert ci.energy_mwh[1] == 1_025_000 - round(1_008_333.33)
    b2 = interval_boundaries(T0 + 60 * MIN, T0 + 90 * MIN, INTERVAL_MS)
    ci2 = counter_intervals(s, b2, GAP)
    assert ci2.status == (RESET, MISSING)
    assert ci2.energy_mwh[0] == 0


def test_home_sums_its_meters_and_takes_the_worst_status() -> None:
    b = interval_boundaries(T0, T0 + 2 * INTERVAL_MS, INTERVAL_MS)
    on = [(T0 + i * 5 * MIN, 10.0 * i) for i in range(7)]
    meter1 = (Series.of(on), Series.of([(t, 2 * v) for t, v in on]))
    meter2 = (Series.of(on[:4]), None)  # stops at 00:15: its second interval is missing
    out = home_intervals("h", {"m1": meter1, "m2": meter2}, b, GAP)
    first, second = out
    assert first is not None and second is not None
    assert (first.import_mwh, first.export_mwh, first.status) == (60_000, 60_000, OK)
    assert second.status == MISSING
    assert (second.import_mwh, second.export_mwh) == (0, 0)  # settled without it, for now


def test_boundaries_must_sit_on_the_grid() -> None:
    with pytest.raises(ValueError):
        interval_boundaries(T0 + 1, T0 + INTERVAL_MS, INTERVAL_MS)
    assert interval_boundaries(T0, T0 + 2 * INTERVAL_MS, INTERVAL_MS) == [
        T0,
        T0 + INTERVAL_MS,
        T0 + 2 * INTERVAL_MS,
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4 * 3600_000), st.floats(0, 2000, allow_nan=False)),
        min_size=2,
        max_size=60,
    )
)
def test_intervals_add_up_to_the_counter_delta(steps: list[tuple[int, float]]) -> None:
    # A rising counter read at random times: the known intervals telescope to the delta
    # between the first and last whole boundaries the readings cover.
    samples, t, v = [], T0 - 7 * MIN, 5000.0
    for dt, dv in steps:
        t, v = t + dt, v + dv
        samples.append((t, v))
    s = Series.of(samples)
    end = T0 + 5 * 3600_000 * len(steps) // 10 // INTERVAL_MS * INTERVAL_MS + INTERVAL_MS
    b = interval_boundaries(T0, end, INTERVAL_MS)
    ci = counter_intervals(s, b, GAP)
    known = [i for i, st_ in enumerate(ci.status) if st_ not in (None, MISSING)]
    for i in known:
        assert ci.energy_mwh[i] is not None and ci.energy_mwh[i] >= 0  # type: ignore[operator]
    if known:
        lo, hi = known[0], known[-1]
        assert all(ci.status[i] not in (None, MISSING) for i in range(lo, hi + 1))
        total = sum(ci.energy_mwh[i] or 0 for i in range(lo, hi + 1))
        v0, _ = boundary_value(s, b[lo], GAP)
        v1, _ = boundary_value(s, b[hi + 1], GAP)
        assert v0 is not None and v1 is not None
        assert total == v1 - v0
