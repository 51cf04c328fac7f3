"""The agent's config file: a good one loads, every mistake is one plain sentence."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config, parse_config

GOOD = """
coop = "sunny-street"
home = "home-7"
poll_interval_s = 10
data_dir = "state"

[broker]
url = "mqtt://hub.local:1883"
username = "home-7"
password_file = "secret"

[[devices]]
name = "grid-meter"
profile = "eastron-sdm630"
modbus = "tcp://192.168.1.50:502"
unit = 1

[[devices]]
name = "pv-inverter"
profile = "sunspec"
modbus = "rtu:///dev/ttyUSB0?baud=19200&parity=E"
unit = 126
poll_interval_s = 5
"""


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(GOOD)
    (tmp_path / "secret").write_text("s3cr3t\n")
    config = load_config(tmp_path / "agent.toml")
    assert (config.coop, config.home) == ("sunny-street", "home-7")
    assert config.consent_path == tmp_path / "state" / "consent.jsonl"
    assert config.data_dir == tmp_path / "state"
    assert config.broker.password == "s3cr3t"
    assert "s3cr3t" not in repr(config)  # secrets never reach logs through a repr
    assert config.devices[1].poll_interval_s == 5
    assert config.devices[0].poll_interval_s == 10


def _load(tmp_path: Path, text: str) -> None:
    (tmp_path / "agent.toml").write_text(text)
    (tmp_path / "secret").write_text("x")
    load_config(tmp_path / "agent.toml")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('home = "home-7"', 'home = "Home 7"', "home 'Home 7' must be"),
        ('home = "home-7"', "", "home is missing"),
        ("poll_interval_s = 10", "poll_interval_s = true", "must be a number"),
        ("poll_interval_s = 10", "poll_interval_s = 0", "from 0.1 to"),
        ("poll_interval_s = 10", "pol_interval_s = 10", "unknown key pol_interval_s"),
        ('url = "mqtt://hub.local:1883"', 'url = "http://hub"', "mqtt:// or mqtts://"),
        ('url = "mqtt://hub.local:1883"', 'url = "mqtt://u:p@hub"', "not in the URL"),
        ('modbus = "tcp://192.168.1.50:502"', 'modbus = "udp://x"', "tcp:// or rtu://"),
        ("unit = 1", "unit = 300", "devices\\[1\\].unit must be from 0 to 247"),
        (
            'password_file = "secret"',
            'password_file = "missing"',
            "broker.password_file .* cannot be read",
        ),
        ('name = "pv-inverter"', 'name = "grid-meter"', "share a name"),
        ("[broker]", "[brokr]", "broker is missing"),
        ('coop = "sunny-street"', "coop = [", "not valid TOML"),
        ('home = "home-7"', 'home = "home-7"\ngrant = "g-1"', "grants consent with"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, GOOD.replace(old, new, 1))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").mkdir()  # unreadable as a file even for root, unlike chmod 0
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "agent.toml")
    (tmp_path / "latin1.toml").write_bytes(b'coop = "caf\xe9"')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")


_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(
    ["coop", "home", "poll_interval_s", "data_dir", "broker", "devices", "extra"]
)


@given(st.dictionaries(_keys, _values, max_size=8))
@settings(max_examples=300)
def test_hostile_config_tables_raise_only_config_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(data)


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_arbitrary_text_raises_only_config_errors(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "agent.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        with contextlib.suppress(ConfigError):
            load_config(path)
