"""The hub's TOML configuration, checked up front so a typo fails at start, not at 3 a.m.

Example::

    coop = "sunny-street"
    db = "/var/lib/coopwatt/hub.db"        # relative paths resolve against this file's folder

    [broker]
    url = "mqtt://localhost:1883"          # mqtt://host[:1883] or mqtts://host[:8883]
    username = "hub"                       # optional
    password_file = "/etc/coopwatt/hub.password"   # optional; or password = "..."
    protocol = 5                           # 5 or 311
    # optional: client_id, keepalive_s, ca_file, cert_file, key_file

Every problem is a :class:`ConfigError` whose message names the key. The password is never part
of a message, a log line or a repr.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from protocol.session import BrokerSettings
from protocol.topics import check_id


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


_TOP_KEYS: Final = frozenset({"coop", "db", "broker"})
_BROKER_KEYS: Final = frozenset(
    {
        "url",
        "username",
        "password",
        "password_file",
        "protocol",
        "client_id",
        "keepalive_s",
        "ca_file",
        "cert_file",
        "key_file",
    }
)


@dataclass(frozen=True)
class HubConfig:
    """A checked hub configuration: the cooperative's id, its database file and its broker."""

    coop: str
    db_path: Path
    broker: BrokerSettings


def _get_str(table: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}{key} is missing")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}{key} must be a string, got {_toml_type(value)}")
    if not value:
        raise ConfigError(f"{where}{key} must not be empty")
    return value


def _toml_type(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), "a date or time")


def _check_keys(table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(allowed))})"
        )


def _resolve(base: Path, value: str, key: str) -> Path:
    if "\x00" in value:
        raise ConfigError(f"{key} contains a NUL character")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user that does not exist
        raise ConfigError(f"{key}: cannot expand {value!r}") from None
    return path if path.is_absolute() else base / path


_MAX_PASSWORD_BYTES: Final = 4096


def _read_password(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_PASSWORD_BYTES + 1)  # bounded: a typo could name /dev/zero
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"broker.password_file {str(path)!r} cannot be read: {reason}") from None
    if len(raw) > _MAX_PASSWORD_BYTES:
        raise ConfigError(f"broker.password_file {str(path)!r} is too long to hold a password")
    # Only the line ending an editor adds is dropped: spaces may be part of a password.
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"broker.password_file {str(path)!r} is empty")
    return password


def _broker_settings(raw: object, coop: str, base: Path) -> BrokerSettings:
    if raw is None:
        raise ConfigError("broker is missing: add a [broker] table with a url")
    if not isinstance(raw, dict):
        raise ConfigError(f"broker must be a table, got {_toml_type(raw)}")
    _check_keys(raw, _BROKER_KEYS, "broker.")
    w = "broker."
    url = _get_str(raw, "url", w, required=True)
    assert url is not None
    username = _get_str(raw, "username", w, required=False)
    password = _get_str(raw, "password", w, required=False)
    password_file = _get_str(raw, "password_file", w, required=False)
    if password is not None and password_file is not None:
        raise ConfigError("broker.password and broker.password_file are both set: keep one")
    if password_file is not None:
        password = _read_password(_resolve(base, password_file, "broker.password_file"))
    if password is not None and username is None:
        raise ConfigError("broker.password is set but broker.username is missing")

    protocol_raw = raw.get("protocol", 5)
    if type(protocol_raw) is not int or protocol_raw not in (5, 311):
        raise ConfigError(f"broker.protocol must be 5 or 311, got {protocol_raw!r}")
    protocol: Literal[5, 311] = 5 if protocol_raw == 5 else 311

    keepalive = raw.get("keepalive_s", 30)
    if type(keepalive) is not int or not 5 <= keepalive <= 3600:
        raise ConfigError(
            f"broker.keepalive_s must be an integer from 5 to 3600, got {keepalive!r}"
        )

    client_id = _get_str(raw, "client_id", w, required=False) or f"coopwatt-hub-{coop}"
    if len(client_id) > 64 or not client_id.isascii() or not client_id.isprintable():
        raise ConfigError("broker.client_id must be at most 64 printable ASCII characters")

    files: dict[str, str | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = _get_str(raw, key, w, required=False)
        files[key] = None if value is None else str(_resolve(base, value, w + key))
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise ConfigError("broker.cert_file and broker.key_file go together: set both or neither")

    try:
        return BrokerSettings(
            url=url,
            client_id=client_id,
            username=username,
            password=password,
            ca_file=files["ca_file"],
            cert_file=files["cert_file"],
            key_file=files["key_file"],
            protocol=protocol,
            keepalive_s=keepalive,
        )
    except ValueError as exc:
        raise ConfigError(f"broker.url: {exc}") from None


def parse_config(data: dict[str, Any], base: Path) -> HubConfig:
    """Check an already parsed TOML document; relative paths resolve against ``base``."""
    _check_keys(data, _TOP_KEYS, "")
    coop = _get_str(data, "coop", "", required=True)
    assert coop is not None
    try:
        check_id(coop, "coop")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    db = _get_str(data, "db", "", required=True)
    assert db is not None
    db_path = _resolve(base, db, "db")
    broker = _broker_settings(data.get("broker"), coop, base)
    return HubConfig(coop=coop, db_path=db_path, broker=broker)


def load_config(path: str | Path) -> HubConfig:
    """Read and check the hub's TOML configuration file; raises :class:`ConfigError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return parse_config(data, path.resolve().parent)
