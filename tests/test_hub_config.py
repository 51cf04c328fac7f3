"""hub.config: a good file loads; a bad one is one ConfigError naming the key, not a traceback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import ConfigError, HubConfig, load_config

EXAMPLE = """
coop = "sunny-street"
db = "data/hub.db"
[broker]
url = "mqtt://localhost:1883"
username = "hub"
password_file = "hub.password"
protocol = 5
"""


BROKER_H = 'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\n'


def write(tmp_path: Path, text: str, name: str = "hub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads_and_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "hub.password").write_text("s3cret pass\n")
    config = load_config(write(tmp_path, EXAMPLE))
    assert isinstance(config, HubConfig)
    assert config.coop == "sunny-street"
    assert config.db_path == tmp_path / "data" / "hub.db"
    assert config.broker.url == "mqtt://localhost:1883"
    assert config.broker.host == "localhost"
    assert config.broker.port == 1883
    assert config.broker.username == "hub"
    assert config.broker.password == "s3cret pass"  # inner space kept, newline dropped
    assert config.broker.protocol == 5
    assert config.broker.client_id == "coopwatt-hub-sunny-street"
    assert "s3cret" not in repr(config)


def test_minimal_config_with_absolute_db_and_inline_password(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'coop = "c1"\ndb = "/var/lib/coopwatt/hub.db"\n'
            '[broker]\nurl = "mqtts://broker.example:8883"\nprotocol = 311\n'
            'username = "hub"\npassword = "pw"\nca_file = "ca.pem"\n',
        )
    )
    assert config.db_path == Path("/var/lib/coopwatt/hub.db")
    assert config.broker.tls
    assert config.broker.port == 8883
    assert config.broker.protocol == 311
    assert config.broker.ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('db = "x.db"\n[broker]\nurl = "mqtt://h"\n', "coop is missing"),
        ('coop = "c"\n[broker]\nurl = "mqtt://h"\n', "db is missing"),
        ('coop = "c"\ndb = "x.db"\n', "broker is missing"),
        ('coop = "c"\ndb = "x.db"\n[broker]\n', "broker.url is missing"),
        ('coop = "c"\ndb = "x.db"\nbogus = 1\n[broker]\nurl = "mqtt://h"\n', "unknown key bogus"),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nhots = "x"\n', "broker.hots"),
        ('coop = "Sunny Street"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\n', "coop 'Sunny Street'"),
        ("coop = 7\ndb = 'x.db'\n[broker]\nurl = 'mqtt://h'\n", "coop must be a string"),
        ('coop = "c"\ndb = ""\n[broker]\nurl = "mqtt://h"\n', "db must not be empty"),
        ('coop = "c"\ndb = "x.db"\nbroker = 3\n', "broker must be a table"),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "http://h"\n', "broker.url"),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h:99999"\n', "broker.url"),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://u:p@h"\n', "broker.url"),
        (BROKER_H + 'protocol = "5"\n', "broker.protocol"),
        (BROKER_H + "protocol = 4\n", "broker.protocol"),
        (BROKER_H + "protocol = true\n", "broker.protocol"),
        (
            'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nusername = "u"\n'
            'password = "p"\npassword_file = "f"\n',
            "both set",
        ),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\npassword = "p"\n', "username"),
        (
            'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nusername = "u"\n'
            'password_file = "missing.password"\n',
            "broker.password_file",
        ),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\ncert_file = "c.pem"\n', "key_file"),
        ('coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nkeepalive_s = 1\n', "keepalive_s"),
        ('coop = "c"\ndb = "x.db"\n[broker\nurl = "mqtt://h"\n', "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    assert expected in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'coop = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_password_never_in_messages(tmp_path: Path) -> None:
    (tmp_path / "empty.password").write_text("\n")
    text = (
        'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nusername = "u"\n'
        'password_file = "empty.password"\n'
    )
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write(tmp_path, text))
    text = 'coop = "c"\ndb = "x.db"\n[broker]\nurl = "mqtt://h"\nusername = "u"\npassword = 12345\n'
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    assert "12345" not in str(excinfo.value)
    assert "broker.password must be a string" in str(excinfo.value)


# -- property tests: never a traceback other than ConfigError --------------------------------


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(doc: dict[str, Any]) -> str:
    """A tiny TOML writer: scalars and arrays first, then one [table] per dict value."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{_toml_key(key)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True) | st.text(max_size=40)
urls = st.sampled_from(
    [
        "mqtt://localhost:1883",
        "mqtts://h:8883",
        "mqtt://",
        "http://x",
        "mqtt://[",
        "mqtt://h:0",
        "mqtt://h:99999",
        "mqtt://u:p@h",
        "mqtt://[::1]:1883",
        "mqtt://h:-1",
        "",
    ]
) | st.text(max_size=30)
paths = st.sampled_from(
    ["hub.db", "/", "", ".", "~", "~nobody-here/x", "a\x00b", "sub/x.db", "/dev/zero"]
) | st.text(max_size=20)
good_paths = st.sampled_from(["hub.db", "sub/x.db", "/tmp/coopwatt/x.db"])
broker_tables = st.fixed_dictionaries(
    {"url": urls},
    optional={
        "username": st.text(min_size=1, max_size=10) | values,
        "password": st.text(max_size=10),
        "password_file": paths,
        "protocol": st.sampled_from([5, 311, 3, 0, True, "5", 5.0]),
        "keepalive_s": st.integers(-10, 5000) | values,
        "client_id": st.text(max_size=70),
        "ca_file": paths,
        "cert_file": paths,
        "key_file": paths,
    },
)
# Mostly plausible documents, so the checks deep inside [broker] are reached too...
plausible = st.fixed_dictionaries(
    {"coop": st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True), "db": good_paths},
    optional={"broker": broker_tables},
)
# ...and wild ones: any key may be anything, unknown keys included.
wild = st.fixed_dictionaries(
    {},
    optional={
        "coop": ids | values,
        "db": paths | values,
        "broker": st.dictionaries(
            st.sampled_from(["url", "username", "password", "password_file", "protocol", "bogus"]),
            values,
        )
        | values,
        "extra": values,
    },
)
documents = plausible | wild


# tmp_path is shared by the examples of one test; each example overwrites its one file.
FIXTURE_REUSED = HealthCheck.function_scoped_fixture


def _load(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(config, HubConfig)


@settings(max_examples=150, deadline=None, suppress_health_check=[FIXTURE_REUSED])
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_tracebacks(tmp_path: Path, text: str) -> None:
    path = tmp_path / "arbitrary.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[FIXTURE_REUSED])
@given(doc=documents)
def test_arbitrary_documents_never_traceback(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "doc.toml"
    path.write_text(to_toml(doc), encoding="utf-8", errors="surrogatepass")
    _load(path)
