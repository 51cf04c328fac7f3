"""Reading TOML config tables strictly, shared by the agent's and the hub's config loaders.

Both programs are configured by an installer or operator editing a file by hand, so every mistake
must come back as one plain sentence naming the key, never as a traceback.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from protocol.session import BrokerSettings

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


class Table:
    """A TOML table read key by key; :meth:`done` refuses keys nobody asked for (typos)."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table")
        self.data: dict[str, Any] = data
        self.where = where
        self._seen: set[str] = set()

    def _get(self, key: str, kind: type[T] | tuple[type, ...], what: str, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(f"{self.where}: missing key {key!r}")
            return default
        value = self.data[key]
        # bool is an int in Python but never a number in a config file.
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"{self.where}: {key} must be {what}, not {value!r}")
        return value

    def text(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        return self._get(key, str, "a string", _REQUIRED if required else default)

    def integer(
        self, key: str, default: Any = None, *, required: bool = False, lo: int = 0, hi: int = 2**31
    ) -> Any:
        value = self._get(key, int, "a whole number", _REQUIRED if required else default)
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"{self.where}: {key} must be between {lo} and {hi}, not {value}")
        return value

    def number(self, key: str, default: Any = None, *, lo: float, hi: float) -> Any:
        value = self._get(key, (int, float), "a number", default)
        if value is not None and not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"{self.where}: {key} must be between {lo} and {hi}, not {value}")
        return None if value is None else float(value)

    def table(self, key: str, *, required: bool = False) -> Table | None:
        value = self._get(key, dict, "a table", _REQUIRED if required else None)
        return None if value is None else Table(value, f"{self.where} [{key}]")

    def tables(self, key: str) -> list[Table]:
        value = self._get(key, list, "a list of tables ([[...]])", [])
        return [Table(v, f"{self.where} [[{key}]] {i + 1}") for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = set(self.data) - self._seen
        if unknown:
            raise ConfigError(f"{self.where}: unknown key {sorted(unknown)[0]!r}")


_REQUIRED = object()


def resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def broker_settings(table: Table, client_id: str, base_dir: Path) -> BrokerSettings:
    """The ``[broker]`` table: url, username, password or password_file, TLS files, protocol."""
    url = table.text("url", required=True)
    username = table.text("username")
    password = table.text("password")
    password_file = table.text("password_file")
    if password is not None and password_file is not None:
        raise ConfigError(f"{table.where}: give password or password_file, not both")
    if password_file is not None:
        pw_path = resolve(base_dir, password_file)
        try:
            password = pw_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{table.where}: cannot read password_file {pw_path}: {exc.strerror}"
            ) from None
    files = {k: table.text(k) for k in ("ca_file", "cert_file", "key_file")}
    protocol = table.integer("protocol", 5, lo=0, hi=999)
    if protocol not in (5, 311):
        raise ConfigError(f"{table.where}: protocol must be 5 or 311, not {protocol}")
    keepalive = table.integer("keepalive_s", 30, lo=5, hi=3600)
    table.done()
    try:
        return BrokerSettings(
            url=url,
            client_id=client_id,
            username=username,
            password=password,
            protocol=protocol,
            keepalive_s=keepalive,
            **{k: str(resolve(base_dir, v)) if v else None for k, v in files.items()},
        )
    except ValueError as exc:
        raise ConfigError(f"{table.where}: {exc}") from None
