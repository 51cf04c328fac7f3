"""History files across the clock changes: a meter's local-time export reads as the same
instants as its UTC export, and a time no clock showed, or one written twice, is a clear error.

The instants come from the IANA database through ``zoneinfo`` (Europe/Berlin: clocks back at
03:00 CEST on 25 October 2026, forward at 02:00 CET on 28 March 2027), not from the parser.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.forecast.service import HistoryError, parse_history_csv

BERLIN = ZoneInfo("Europe/Berlin")
QUARTER = timedelta(minutes=15)


def _csv(stamps: list[str], values: list[float]) -> str:
    rows = [f"{ts},{v}" for ts, v in zip(stamps, values, strict=True)]
    return "ts,demand_w\n" + "\n".join(rows) + "\n"


def _instants(first_utc: datetime, count: int) -> list[datetime]:
    return [first_utc + i * QUARTER for i in range(count)]


def _utc_text(instants: list[datetime]) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in instants]


def _wall_text(instants: list[datetime]) -> list[str]:
    """What a meter on Berlin's clock writes: wall time, no offset."""
    return [t.astimezone(BERLIN).strftime("%Y-%m-%dT%H:%M:%S") for t in instants]


def test_autumn_night_in_local_time_reads_as_the_utc_file() -> None:
    # 22:00 UTC on 24 Oct to 04:00 UTC on 25 Oct: the wall clock shows 02:00-02:45 twice.
    instants = _instants(datetime(2026, 10, 24, 22, tzinfo=UTC), 24)
    wall = _wall_text(instants)
    assert wall.count("2026-10-25T02:15:00") == 2  # the repeated hour is in the file
    values = [float(i) for i in range(len(instants))]
    local = parse_history_csv(_csv(wall, values), "Europe/Berlin")
    utc = parse_history_csv(_csv(_utc_text(instants), values), None)
    assert local.start_ms == utc.start_ms == int(instants[0].timestamp() * 1000)
    assert local.demand_w.tolist() == utc.demand_w.tolist() == values


def test_spring_night_in_local_time_has_no_gap() -> None:
    # 00:00 to 03:00 UTC on 28 March 2027: the wall clock jumps from 01:45 to 03:00.
    instants = _instants(datetime(2027, 3, 28, 0, tzinfo=UTC), 12)
    wall = _wall_text(instants)
    assert "2027-03-28T02:00:00" not in wall
    local = parse_history_csv(_csv(wall, [1.0] * 12), "Europe/Berlin")
    assert local.demand_w.size == 12 and np.isfinite(local.demand_w).all()


def test_a_time_in_the_skipped_hour_is_refused() -> None:
    text = _csv(["2027-03-28T01:45:00", "2027-03-28T02:00:00"], [1.0, 2.0])
    with pytest.raises(HistoryError, match=r"line 3: .*skipped when the clocks in Europe/Berlin"):
        parse_history_csv(text, "Europe/Berlin")


def test_a_local_file_read_as_utc_names_both_lines_and_the_fix() -> None:
    instants = _instants(datetime(2026, 10, 24, 23, tzinfo=UTC), 12)
    wall = _wall_text(instants)  # 01:00 ... 02:45, 02:00 ... 02:45 (the repeat)
    first = wall.index("2026-10-25T02:00:00")
    with pytest.raises(HistoryError) as caught:
        parse_history_csv(_csv(wall, [1.0] * len(wall)), None)
    message = str(caught.value)
    assert f"appears twice (also on line {first + 2})" in message
    assert "--history-timezone" in message


def test_a_third_pass_through_the_repeated_hour_is_refused() -> None:
    stamps = ["2026-10-25T02:00:00"] * 3
    with pytest.raises(HistoryError, match=r"line 4: .* appears twice"):
        parse_history_csv(_csv(stamps, [1.0, 2.0, 3.0]), "Europe/Berlin")


def test_times_with_offsets_ignore_the_history_zone() -> None:
    text = _csv(["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"], [1.0, 2.0])
    history = parse_history_csv(text, "Europe/Berlin")
    assert history.start_ms == int(datetime(2026, 10, 25, 0, tzinfo=UTC).timestamp() * 1000)
    assert history.demand_w.size == 5  # 00:00 and 01:00 UTC, three empty steps between


@settings(max_examples=60, deadline=None)
@given(
    first=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    count=st.integers(min_value=1, max_value=400),
)
def test_any_local_export_round_trips(first: datetime, count: int) -> None:
    """Whatever stretch of a local-time export, it reads as the instants it was written from."""
    first = first.replace(minute=first.minute - first.minute % 15, second=0, microsecond=0)
    instants = _instants(first, count)
    values = [float(i % 97) for i in range(count)]
    history = parse_history_csv(_csv(_wall_text(instants), values), "Europe/Berlin")
    assert history.start_ms == int(instants[0].timestamp() * 1000)
    assert history.demand_w.tolist() == values
