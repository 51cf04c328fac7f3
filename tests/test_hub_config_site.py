"""The hub config's optional ``[site]`` table (where the cooperative is, for the forecast):
strict keys, one ConfigError sentence naming the key, never a traceback."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import ConfigError, load_config, parse_config
from hub.forecast.site import Site

BASE = 'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\n'


def parse(site: str) -> Site | None:
    return parse_config(tomllib.loads(BASE + site), Path("/etc/coopwatt")).site


def test_without_a_site_there_is_no_forecast() -> None:
    assert parse("") is None


def test_a_full_site_table(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        BASE + '[site]\nlatitude = 52.52\nlongitude = 13\ntimezone = "Europe/Berlin"\n'
        "pv_capacity_w = 48000\nwind_capacity_w = 15000.5\n"
        'holidays = [2026-12-25, "2026-12-26"]\nhalf_holidays = [2026-12-24]\n',
        encoding="utf-8",
    )
    site = load_config(path).site
    assert site == Site(
        52.52,
        13.0,
        48_000.0,
        15_000.5,
        "Europe/Berlin",
        frozenset({date(2026, 12, 25), date(2026, 12, 26)}),
        frozenset({date(2026, 12, 24)}),
    )


def test_only_the_location_is_required() -> None:
    assert parse("[site]\nlatitude = -33.9\nlongitude = 151.2\n") == Site(-33.9, 151.2)


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ("[site]\nlongitude = 1\n", "site.latitude is missing"),
        ("[site]\nlatitude = 1\n", "site.longitude is missing"),
        ("[site]\nlatitude = 91\nlongitude = 1\n", "site.latitude must be from -90 to 90"),
        ("[site]\nlatitude = 1\nlongitude = 200\n", "site.longitude must be from -180 to 180"),
        ('[site]\nlatitude = "52"\nlongitude = 1\n', "site.latitude must be a number"),
        ("[site]\nlatitude = nan\nlongitude = 1\n", "site.latitude must be from"),
        (
            "[site]\nlatitude = 1\nlongitude = 1\npv_capacity_w = 0\n",
            "site.pv_capacity_w must be from 1",
        ),
        (
            "[site]\nlatitude = 1\nlongitude = 1\nwind_capacity_w = true\n",
            "site.wind_capacity_w must be a number",
        ),
        (
            '[site]\nlatitude = 1\nlongitude = 1\ntimezone = "Europe/Berlni"\n',
            "site.timezone: unknown timezone 'Europe/Berlni'",
        ),
        ("[site]\nlatitude = 1\nlongitude = 1\ntimezone = 1\n", "site.timezone must be a string"),
        (
            '[site]\nlatitude = 1\nlongitude = 1\nholidays = "2026-12-25"\n',
            "site.holidays must be an array of dates",
        ),
        (
            '[site]\nlatitude = 1\nlongitude = 1\nholidays = ["2026-12-25", "Christmas"]\n',
            "site.holidays[2] 'Christmas' is not a date",
        ),
        (
            "[site]\nlatitude = 1\nlongitude = 1\nhalf_holidays = [2026-12-24T12:00:00]\n",
            "site.half_holidays[1] must be a date such as 2026-12-25, got a date or time",
        ),
        ("[site]\nlatitude = 1\nlongitude = 1\nlat = 2\n", "unknown key site.lat"),
        ('site = "here"\n', "site must be a table"),
    ],
)
def test_mistakes_name_the_key(site: str, expected: str) -> None:
    # A bare key after [broker] would belong to it: a top-level one goes before the table.
    text = BASE + site if site.startswith("[") else BASE.replace("[broker]", site + "[broker]")
    doc = tomllib.loads(text)
    with pytest.raises(ConfigError) as info:
        parse_config(doc, Path("/etc"))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.dates(),
    st.lists(st.one_of(st.dates(), st.text(max_size=12), st.integers()), max_size=4),
)
_keys = st.sampled_from(
    [
        "latitude",
        "longitude",
        "timezone",
        "pv_capacity_w",
        "wind_capacity_w",
        "holidays",
        "half_holidays",
        "lat",
    ]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(site=st.dictionaries(_keys, _values, max_size=8))
def test_arbitrary_site_tables_never_traceback(site: dict[str, Any]) -> None:
    doc: dict[str, Any] = {"coop": "c", "db": "x.db", "broker": {"url": "mqtt://h"}}
    doc["site"] = {k: v for k, v in site.items() if v is not None}
    try:
        config = parse_config(doc, Path("/etc"))
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert config.site is not None
        assert -90 <= config.site.lat <= 90
