"""Reading TOML config files strictly, shared by the agent's and the hub's config loaders.

Both programs are configured by an installer or operator editing a file by hand, so every mistake
comes back as one :class:`ConfigError` sentence naming the key by its dotted path
(``broker.url``, ``devices[2].unit``), never as a traceback. Messages name a value's type, not the
value, so a misplaced password cannot end up in a log.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from protocol.session import BrokerSettings
from protocol.topics import ID_RE

MAX_PASSWORD_BYTES: Final = 4096
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message says which key and why."""


def toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}  # fmt: skip
    return names.get(type(value), "a date or time")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a UTF-8 TOML file; any failure is a :class:`ConfigError` naming the file."""
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def load(path: Path, parse: Callable[[dict[str, Any], Path], T]) -> T:
    """Read ``path`` and ``parse`` it; a mistake's message starts with the file it is in."""
    data = read_toml(path)
    try:
        return parse(data, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_MISSING: Final = object()


class Table:
    """A TOML table read key by key; :meth:`done` refuses keys nobody asked for (typos).

    ``prefix`` is the dotted path of the table, ending in a dot (``"broker."``), or empty.
    """

    def __init__(self, data: object, prefix: str = "", name: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{name or prefix.rstrip('.')} must be a table, got {toml_type(data)}"
            )
        self.data: dict[str, Any] = data
        self.prefix = prefix
        self._asked: set[str] = set()

    def _value(self, key: str, required: bool) -> Any:
        self._asked.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING and required:
            raise ConfigError(f"{self.prefix}{key} is missing")
        return value

    def _wrong(self, key: str, what: str, value: object) -> ConfigError:
        return ConfigError(f"{self.prefix}{key} must be {what}, got {toml_type(value)}")

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._value(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        if not value:
            raise ConfigError(f"{self.prefix}{key} must not be empty")
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None
        return value

    def ident(self, key: str) -> str:
        """A coop, home, device or grant id."""
        value = self.required_text(key)
        if not ID_RE.fullmatch(value):
            raise ConfigError(
                f"{self.prefix}{key} {value!r} must be 1-32 of a-z, 0-9 and '-', "
                "starting with a letter or digit"
            )
        return value

    def integer(self, key: str, default: int, *, lo: int, hi: int) -> int:
        value = self._value(key, False)
        if value is _MISSING:
            return default
        if type(value) is not int:
            raise self._wrong(key, "a whole number", value)
        if not lo <= value <= hi:
            raise ConfigError(f"{self.prefix}{key} must be from {lo} to {hi}, got {value}")
        return value

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self._value(key, False)
        if value is _MISSING:
            return default
        if type(value) not in (int, float):
            raise self._wrong(key, "a number", value)
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"{self.prefix}{key} must be from {lo:g} to {hi:g}, got {value}")
        return float(value)

    def choice(self, key: str, default: Any, options: tuple[Any, ...]) -> Any:
        value = self._value(key, False)
        if value is _MISSING:
            return default
        if value not in options or type(value) is not type(options[0]):
            shown = repr(value) if type(value) in (int, float) else toml_type(value)
            raise ConfigError(
                f"{self.prefix}{key} must be one of {', '.join(map(repr, options))}, got {shown}"
            )
        return value

    def table(self, key: str) -> Table:
        value = self._value(key, False)
        if value is _MISSING:
            raise ConfigError(f"{self.prefix}{key} is missing: add a [{self.prefix}{key}] table")
        return Table(value, f"{self.prefix}{key}.")

    def tables(self, key: str) -> list[Table]:
        value = self._value(key, False)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise self._wrong(key, "an array of tables ([[...]])", value)
        return [Table(v, f"{self.prefix}{key}[{i + 1}].") for i, v in enumerate(value)]

    def path(self, key: str, base_dir: Path, default: str | None = None) -> Path | None:
        value = self.text(key, default)
        return None if value is None else resolve(base_dir, value, self.prefix + key)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._asked)
        if unknown:
            raise ConfigError(
                f"unknown key {self.prefix}{unknown[0]} (allowed: {', '.join(sorted(self._asked))})"
            )


def resolve(base_dir: Path, value: str, key: str) -> Path:
    """A path from a config file: ``~`` expanded, relative to the config file's folder."""
    if "\x00" in value:
        raise ConfigError(f"{key} contains a NUL character")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user that does not exist
        raise ConfigError(f"{key}: cannot expand {value!r}") from None
    return path if path.is_absolute() else base_dir / path


def read_password(path: Path, key: str) -> str:
    """A password file's content; only the line ending an editor adds is dropped."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PASSWORD_BYTES + 1)  # bounded: a typo could name /dev/zero
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{key} {str(path)!r} cannot be read: {reason}") from None
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"{key} {str(path)!r} is too long to hold a password")
    password = text.rstrip("\r\n")  # spaces may be part of a password
    if not password:
        raise ConfigError(f"{key} {str(path)!r} is empty")
    return password


def broker_settings(table: Table, default_client_id: str, base_dir: Path) -> BrokerSettings:
    """The ``[broker]`` table: url, username, password or password_file, TLS files, protocol."""
    p = table.prefix
    url = table.required_text("url")
    username = table.text("username")
    password = table.text("password")
    password_file = table.path("password_file", base_dir)
    if password is not None and password_file is not None:
        raise ConfigError(f"{p}password and {p}password_file are both set: keep one")
    if password_file is not None:
        password = read_password(password_file, f"{p}password_file")
    if password is not None and username is None:
        raise ConfigError(f"{p}password is set but {p}username is missing")
    protocol: Literal[5, 311] = 5 if table.choice("protocol", 5, (5, 311)) == 5 else 311
    keepalive = table.integer("keepalive_s", 30, lo=5, hi=3600)
    client_id = table.text("client_id") or default_client_id
    if len(client_id) > 64 or not client_id.isascii() or not client_id.isprintable():
        raise ConfigError(f"{p}client_id must be at most 64 printable ASCII characters")
    files = {k: table.path(k, base_dir) for k in ("ca_file", "cert_file", "key_file")}
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise ConfigError(f"{p}cert_file and {p}key_file go together: set both or neither")
    table.done()
    try:
        return BrokerSettings(
            url=url,
            client_id=client_id,
            username=username,
            password=password,
            protocol=protocol,
            keepalive_s=keepalive,
            **{k: None if v is None else str(v) for k, v in files.items()},
        )
    except ValueError as exc:
        raise ConfigError(f"{p}url: {exc}") from None
