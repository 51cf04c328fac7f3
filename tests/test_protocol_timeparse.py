"""``protocol.timeparse.parse_iso_ms``: ISO 8601 -> UTC epoch ms, one rule for times without a
zone (the caller names it). Hand-worked examples first, then properties."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.timeparse import NaiveRule, parse_iso_ms

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # clocks move by 30 minutes

# 2026-07-01T09:00Z: 56 years of days (20,635 days, 14 of them leap days) and 9 hours.
JULY_1_0900Z_MS = (20_635 * 86_400 + 9 * 3600) * 1000


@pytest.mark.parametrize(
    ("text", "naive", "ms"),
    [
        ("1970-01-01T00:00Z", "utc", 0),
        ("1970-01-01", "utc", 0),  # a bare date is its midnight
        ("1970-01-01T00:00:00.001Z", "utc", 1),
        ("1970-01-01T01:00+01:00", "utc", 0),
        ("2026-07-01T09:00Z", "utc", JULY_1_0900Z_MS),
        ("2026-07-01T09:00", "utc", JULY_1_0900Z_MS),
        ("2026-07-01T11:00+02:00", "utc", JULY_1_0900Z_MS),
        # an offset in the text wins over the rule for naive times
        ("2026-07-01T09:00Z", BERLIN, JULY_1_0900Z_MS),
        ("2026-07-01T11:00+02:00", timezone(timedelta(hours=-5)), JULY_1_0900Z_MS),
        # naive: read in the zone given (Berlin is on summer time, +02:00, in July)
        ("2026-07-01T11:00", BERLIN, JULY_1_0900Z_MS),
        ("2026-07-01T10:00", timezone(timedelta(hours=1)), JULY_1_0900Z_MS),
        # half a millisecond rounds to even, as round() does
        ("1970-01-01T00:00:00.0015Z", "utc", 2),
    ],
)
def test_hand_worked(text: str, naive: NaiveRule, ms: int) -> None:
    assert parse_iso_ms(text, naive=naive) == ms


def _utc_ms(text: str) -> int:
    return parse_iso_ms(text, naive="utc")


@pytest.mark.parametrize(
    ("wall", "zone", "utc"),
    [
        # gap: the offset before the change (+01:00) reads 02:30, shown as 03:30 summer time
        ("2026-03-29T02:30", BERLIN, "2026-03-29T01:30Z"),
        ("2026-03-08T02:30", NEW_YORK, "2026-03-08T07:30Z"),  # EST, -05:00
        # fold: the first of the two 02:30s (summer time, +02:00)
        ("2026-10-25T02:30", BERLIN, "2026-10-25T00:30Z"),
        ("2026-11-01T01:30", NEW_YORK, "2026-11-01T05:30Z"),  # EDT, -04:00
        # Lord Howe goes from +10:30 to +11:00 at 02:00 on the first Sunday of October
        ("2026-10-04T02:15", LORD_HOWE, "2026-10-03T15:45Z"),
    ],
)
def test_dst_gaps_and_folds(wall: str, zone: ZoneInfo, utc: str) -> None:
    assert parse_iso_ms(wall, naive=zone) == _utc_ms(utc)


@pytest.fixture
def berlin_local() -> Iterator[None]:
    """This machine's local zone set to Berlin for the test (TZ, then tzset)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("berlin_local")
def test_local_follows_this_machine_with_the_same_gap_and_fold_rules() -> None:
    assert parse_iso_ms("2026-07-01T11:00", naive="local") == JULY_1_0900Z_MS
    assert parse_iso_ms("2026-03-29T02:30", naive="local") == _utc_ms("2026-03-29T01:30Z")
    assert parse_iso_ms("2026-10-25T02:30", naive="local") == _utc_ms("2026-10-25T00:30Z")
    assert parse_iso_ms("2026-07-01T09:00Z", naive="local") == JULY_1_0900Z_MS


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-07-01T25:00", "1e12"])
def test_bad_text_is_a_plain_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO 8601 time") as err:
        parse_iso_ms(text, naive="utc")
    assert str(err.value) == f"{text!r} is not an ISO 8601 time"


# -- properties -------------------------------------------------------------------------------

MS_2000_TO_2100 = st.integers(946_684_800_000, 4_102_444_800_000)
ZONES = st.sampled_from([BERLIN, NEW_YORK, LORD_HOWE, ZoneInfo("Asia/Kolkata"), UTC])
RULES: st.SearchStrategy[NaiveRule] = st.one_of(
    st.sampled_from(["utc", "local"]), ZONES, st.just(timezone(timedelta(hours=-3)))
)


@given(
    ms=MS_2000_TO_2100,
    offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    rule=RULES,
)
def test_a_time_with_an_offset_round_trips_whatever_the_rule(
    ms: int, offset_min: int, rule: NaiveRule
) -> None:
    shown = datetime.fromtimestamp(ms / 1000, timezone(timedelta(minutes=offset_min)))
    text = shown.isoformat(timespec="milliseconds")
    assert parse_iso_ms(text, naive=rule) == ms
    utc_text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    assert parse_iso_ms(utc_text.replace("+00:00", "Z"), naive=rule) == ms


@given(ms=MS_2000_TO_2100, zone=ZONES)
def test_a_wall_time_read_in_its_zone_is_the_instant_or_the_first_of_two(
    ms: int, zone: ZoneInfo
) -> None:
    wall = datetime.fromtimestamp(ms / 1000, zone)
    text = wall.replace(tzinfo=None).isoformat(timespec="milliseconds")
    got = parse_iso_ms(text, naive=zone)
    if wall.fold == 0:
        assert got == ms
    else:  # the second time this wall time happened: the first is earlier, showing the same
        assert got < ms
        first = datetime.fromtimestamp(got / 1000, zone)
        assert first.replace(tzinfo=None) == wall.replace(tzinfo=None)
        assert first.fold == 0


@given(
    wall=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)),
    zone=ZONES,
)
def test_every_wall_time_names_an_instant_that_shows_it_unless_skipped(
    wall: datetime, zone: ZoneInfo
) -> None:
    wall = wall.replace(microsecond=wall.microsecond // 1000 * 1000)
    got = parse_iso_ms(wall.isoformat(timespec="milliseconds"), naive=zone)
    shown = datetime.fromtimestamp(got / 1000, zone).replace(tzinfo=None)
    if shown != wall:  # skipped when clocks went forward: read with the offset before
        before = zone.utcoffset(wall.replace(fold=0))
        after = zone.utcoffset(wall.replace(fold=1))
        assert before is not None and after is not None and before < after
        assert shown == wall + (after - before)


@given(text=st.text(max_size=40), rule=RULES)
def test_any_text_gives_milliseconds_or_a_plain_value_error(text: str, rule: NaiveRule) -> None:
    try:
        got = parse_iso_ms(text, naive=rule)
    except ValueError as exc:
        assert str(exc).startswith(repr(text))
    else:
        assert isinstance(got, int)


def _old_utc_default(text: str) -> int:
    """What the CLIs and the history CSV reader did before sharing ``parse_iso_ms``."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@given(
    when=st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)),
    offset=st.none() | st.sampled_from(["Z", "+00:00", "+05:30", "-03:00"]),
    spec=st.sampled_from(["auto", "minutes", "seconds", "milliseconds", "microseconds"]),
)
def test_same_as_the_old_utc_default(when: datetime, offset: str | None, spec: str) -> None:
    text = when.isoformat(timespec=spec) + (offset or "")
    assert parse_iso_ms(text, naive="utc") == _old_utc_default(text)
