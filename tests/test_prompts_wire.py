"""The prompts' wire payloads and the agent's appliance and indicator config: what is valid is
accepted, everything else is refused in one sentence (hypothesis throws the rest at it)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import parse_config
from protocol.codec import CodecError, decode_message
from protocol.config_tables import ConfigError
from protocol.payloads import Appliance, Appliances, Prompts
from protocol.topics import HomeTopic, home_topic
from tests.golden_payloads import DELETE, edited, golden_json

COOP, HOME = "test-coop", "home-1"


def _decode(kind: HomeTopic, obj: object) -> Any:
    return decode_message(home_topic(COOP, HOME, kind), json.dumps(obj).encode())[1]


def test_the_golden_prompts_read_as_the_light_would_show_them() -> None:
    p = _decode(HomeTopic.PROMPTS, golden_json("prompts__two-appliances"))
    assert isinstance(p, Prompts)
    assert p.level_at(p.issued_ms) == "amber"
    assert p.level_at(p.issued_ms + 3_600_000) == "green"
    assert p.level_at(p.valid_until_ms) is None  # expired
    a = _decode(HomeTopic.APPLIANCES, golden_json("appliances__three"))
    assert isinstance(a, Appliances)
    ev = a.appliances[2]
    assert ev.interruptible and ev.window_min == 13 * 60  # 18:00 to 07:00


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "words"),
    [
        (HomeTopic.APPLIANCES, "appliances__three", ["appliances", 0, "duration_min"], 900,
         "does not fit"),
        (HomeTopic.APPLIANCES, "appliances__three", ["timezone"], "Not a zone!", "IANA"),
        (HomeTopic.APPLIANCES, "appliances__three", ["grant"], DELETE, "grant is missing"),
        (HomeTopic.APPLIANCES, "appliances__three", ["appliances", 1, "name"], "washing-machine",
         "share a name"),
        (HomeTopic.APPLIANCES, "appliances__three", ["appliances", 0, "runs_per_week"], 0,
         "runs_per_week"),
        (HomeTopic.APPLIANCES, "appliances__three", ["appliances", 0, "energy_wh"], -1,
         "energy_wh"),
        (HomeTopic.PROMPTS, "prompts__two-appliances", ["valid_until_ms"], 1782900000000,
         "valid_until_ms"),
        (HomeTopic.PROMPTS, "prompts__two-appliances", ["level"], "blue", "level"),
        (HomeTopic.PROMPTS, "prompts__two-appliances", ["levels", 1, "start_ms"], 1782903600001,
         "without gaps"),
        (HomeTopic.PROMPTS, "prompts__two-appliances", ["appliances", 1, "windows", 0, "end_ms"],
         1782916000000, "overlap"),
        (HomeTopic.FEEDBACK, "feedback__accepted", ["action"], "maybe", "action"),
        (HomeTopic.FEEDBACK, "feedback__accepted", ["prompt"], "P 1", "prompt"),
    ],
)  # fmt: skip
def test_invalid_payloads_are_refused_naming_the_field(
    kind: HomeTopic, name: str, path: list[str | int], value: Any, words: str
) -> None:
    with pytest.raises(CodecError, match=words):
        _decode(kind, edited(golden_json(name), path, value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([("appliances__three", HomeTopic.APPLIANCES),
                     ("prompts__two-appliances", HomeTopic.PROMPTS),
                     ("feedback__accepted", HomeTopic.FEEDBACK)]),
    st.data(),
)  # fmt: skip
def test_any_mangled_payload_is_decoded_or_refused_cleanly(
    case: tuple[str, HomeTopic], data: st.DataObject
) -> None:
    name, kind = case
    obj = golden_json(name)
    # Replace one value somewhere in the payload with anything JSON can hold.
    target: Any = obj
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = data.draw(st.sampled_from(keys))
        child = target[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            target = child
            continue
        target[key] = data.draw(json_values)
        break
    with contextlib.suppress(CodecError):
        _decode(kind, obj)


# -- the agent's config ---------------------------------------------------------------------

BASE: dict[str, Any] = {
    "coop": "c",
    "home": "h",
    "broker": {"url": "mqtt://localhost"},
    "devices": [{"name": "meter", "profile": "eastron-sdm630", "modbus": "tcp://10.0.0.2"}],
}
WASHER = {
    "name": "washing-machine",
    "energy_kwh": 1.0,
    "duration_min": 120,
    "earliest_start": "08:00",
    "latest_finish": "22:00",
    "runs_per_week": 4,
}


def _config(**extra: Any) -> Any:
    """BASE with ``extra``; a None inside an appliance table leaves that key out."""
    for table in extra.get("appliances", []):
        for key in [k for k, v in table.items() if v is None]:
            del table[key]
    return parse_config({**BASE, **extra})


def test_appliances_and_an_indicator_are_read_from_the_config() -> None:
    ev = {**WASHER, "name": "ev", "energy_kwh": 11, "duration_min": 240,
          "earliest_start": "18:00", "latest_finish": "07:00", "interruptible": True}  # fmt: skip
    config = _config(
        timezone="Europe/Amsterdam",
        appliances=[WASHER, ev],
        indicator={"led": "three", "red": 5, "amber": 6, "green": 13, "button": 19,
                   "console": "-", "display": "ssd1306", "i2c_address": 0x3D},
    )  # fmt: skip
    assert config.appliances == (
        Appliance("washing-machine", 1000.0, 120, 480, 1320, False, 4),
        Appliance("ev", 11000.0, 240, 1080, 420, True, 4),
    )
    assert config.timezone == "Europe/Amsterdam"
    ind = config.indicator
    assert (ind.led, ind.red, ind.amber, ind.green, ind.button) == ("three", 5, 6, 13, 19)
    assert ind.display == "ssd1306" and ind.i2c_address == 0x3D and ind.console == "-"
    plain = _config()
    assert plain.appliances == () and plain.indicator is None and plain.timezone is None


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"appliances": [WASHER]}, "timezone is missing"),
        ({"timezone": "Mars/Base"}, "not a known IANA time zone"),
        ({"timezone": "UTC", "appliances": [{**WASHER, "earliest_start": "8am"}]},
         'appliances\\[1\\].earliest_start must be a time of day like "08:30"'),
        ({"timezone": "UTC", "appliances": [{**WASHER, "duration_min": 900}]}, "does not fit"),
        ({"timezone": "UTC", "appliances": [{**WASHER, "colour": "white"}]},
         "unknown key appliances\\[1\\].colour"),
        ({"timezone": "UTC", "appliances": [WASHER, WASHER]}, "share a name"),
        ({"timezone": "UTC", "appliances": [{**WASHER, "energy_kwh": None}]},
         "energy_kwh is missing"),
        ({"indicator": {"led": "rgb", "red": 5, "green": 6}}, "indicator.blue is missing"),
        ({"indicator": {"led": "three", "red": 5, "green": 6, "amber": 6}}, "same GPIO pin"),
        ({"indicator": {"led": "rgb", "red": 5, "green": 6, "blue": 7, "amber": 8}},
         "indicator.amber is not used"),
        ({"indicator": {"display": "crt"}}, "indicator.display must be one of"),
        ({"indicator": {"button": 99}}, "indicator.button must be from 0 to 53"),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_sentence(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _config(**extra)


def test_an_indicator_pin_may_not_be_an_s0_meters() -> None:
    devices = [{"name": "heat", "profile": "s0-pulse-1000", "gpio": 17}]
    with pytest.raises(ConfigError, match="S0 meter"):
        parse_config({**BASE, "devices": devices, "indicator": {"button": 17}})


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "energy_kwh", "duration_min", "earliest_start",
                         "latest_finish", "interruptible", "runs_per_week", "extra"]),
        st.none() | st.booleans() | st.integers(-100, 2000) | st.floats(-10, 300)
        | st.sampled_from(["08:00", "24:00", "23:59", "7:00", "washer", "", "x" * 40]),
    ),
    st.sampled_from([None, "UTC", "Europe/Amsterdam", "Nowhere/Land"]),
)  # fmt: skip
def test_any_appliance_table_is_read_or_refused_cleanly(
    table: dict[str, Any], timezone: str | None
) -> None:
    table = {k: v for k, v in table.items() if v is not None}
    extra: dict[str, Any] = {"appliances": [table]}
    if timezone is not None:
        extra["timezone"] = timezone
    try:
        config = _config(**extra)
    except ConfigError:
        return
    (a,) = config.appliances
    assert a.duration_min <= a.window_min
