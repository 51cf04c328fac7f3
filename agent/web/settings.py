"""The few keys of the agent's config that the page needs, read without the agent's imports.

:func:`agent.config.load_config` checks every device, which imports pymodbus and paho; the page
must stay small, so it reads only ``coop``, ``home``, ``data_dir`` and ``timezone`` itself, with
the same meaning (``data_dir`` relative to the config file's folder). The agent refuses a config
with a mistake elsewhere, so the page need not check the rest.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocol.topics import ID_RE


class SettingsError(ValueError):
    """The config cannot be read or a key the page needs is wrong; one sentence."""


@dataclass(frozen=True, slots=True)
class WebSettings:
    coop: str
    home: str
    data_dir: Path
    timezone: str  # IANA; "UTC" when the config sets none

    @property
    def consent_path(self) -> Path:
        return self.data_dir / "consent.jsonl"

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "agent.sock"

    @property
    def energy_path(self) -> Path:
        return self.data_dir / "energy.db"

    @property
    def mailbox_dir(self) -> Path:
        return self.data_dir / "mailbox"

    @property
    def web_dir(self) -> Path:
        """The page's own secrets (the password hash)."""
        return self.data_dir / "web"

    @property
    def code_path(self) -> Path:
        """The one-time setup code the installer's bundle writes."""
        return self.data_dir / "household-code"


def read_settings(path: Path) -> WebSettings:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such config file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    ids = {}
    for key in ("coop", "home"):
        value = data.get(key)
        if not isinstance(value, str) or not ID_RE.fullmatch(value):
            raise SettingsError(f"{path}: {key} is missing or not an id")
        ids[key] = value
    raw_dir = data.get("data_dir", ".")
    if not isinstance(raw_dir, str) or not raw_dir or "\x00" in raw_dir:
        raise SettingsError(f"{path}: data_dir must be a folder's path")
    data_dir = Path(raw_dir).expanduser()
    if not data_dir.is_absolute():
        data_dir = path.resolve().parent / data_dir
    zone = data.get("timezone", "UTC")
    try:
        if not isinstance(zone, str):
            raise ZoneInfoNotFoundError(zone)
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{path}: timezone {zone!r} is not a known IANA time zone") from None
    return WebSettings(ids["coop"], ids["home"], data_dir, zone)
