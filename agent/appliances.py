"""The household's flexible appliances, as declared in the agent's config.

```toml
timezone = "Europe/Amsterdam"   # the times below are local; needed once appliances are declared

[[appliances]]
name = "washing-machine"
energy_kwh = 1.0                # a typical run
duration_min = 120              # a typical run, without pauses
earliest_start = "08:00"
latest_finish = "22:00"         # at or before earliest_start: the next morning
interruptible = false           # true: may pause and resume (EV charger, immersion heater)
runs_per_week = 4               # how often it typically runs, 1 to 14
```

They are published, retained, on ``appliances`` only while the household's consent grant has
the ``prompts`` purpose on some stream; otherwise an empty list withdraws them, and the hub
forgets what it planned and learnt for the home.
"""

from __future__ import annotations

import re
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocol.config_tables import ConfigError, Table
from protocol.consent import ConsentGrant, Purpose
from protocol.payloads import MAX_APPLIANCES, Appliance, Appliances

_TIME_RE: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")


def _minute(table: Table, key: str) -> int:
    text = table.required_text(key)
    m = _TIME_RE.fullmatch(text)
    if m is None:
        raise ConfigError(f'{table.prefix}{key} must be a time of day like "08:30", got {text!r}')
    if text == "24:00":
        return 1440
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_appliances(root: Table) -> tuple[str | None, tuple[Appliance, ...]]:
    """The optional ``timezone`` and ``[[appliances]]`` of the agent's config."""
    timezone = root.text("timezone")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f'timezone {timezone!r} is not a known IANA time zone like "Europe/Amsterdam"'
            ) from None
    appliances = []
    for t in root.tables("appliances"):
        name = t.ident("name")
        energy_wh = t.number("energy_kwh", 0.0, lo=0.001, hi=200.0) * 1000.0
        if "energy_kwh" not in t.data:
            raise ConfigError(f"{t.prefix}energy_kwh is missing")
        duration = t.integer("duration_min", 0, lo=1, hi=1440)
        if "duration_min" not in t.data:
            raise ConfigError(f"{t.prefix}duration_min is missing")
        earliest = _minute(t, "earliest_start")
        if earliest == 1440:
            raise ConfigError(f"{t.prefix}earliest_start must be before 24:00")
        latest = _minute(t, "latest_finish")
        interruptible = t.choice("interruptible", False, (False, True))
        runs = t.integer("runs_per_week", 7, lo=1, hi=14)
        t.done()
        try:
            appliances.append(
                Appliance(name, energy_wh, duration, earliest, latest, interruptible, runs)
            )
        except ValueError as exc:
            raise ConfigError(f"{t.prefix[:-1]}: {exc}") from None
    if len(appliances) > MAX_APPLIANCES:
        raise ConfigError(f"at most {MAX_APPLIANCES} [[appliances]] can be planned")
    names = [a.name for a in appliances]
    if len(set(names)) != len(names):
        raise ConfigError("two [[appliances]] share a name")
    if appliances and timezone is None:
        raise ConfigError(
            "timezone is missing: appliance times are local, so add e.g. "
            'timezone = "Europe/Amsterdam"'
        )
    return timezone, tuple(appliances)


def grants_prompts(grant: ConsentGrant) -> bool:
    """Whether the household lets the hub plan its appliances (prompts on some stream)."""
    return any(Purpose.PROMPTS.value in purposes for purposes in grant.streams.values())


def appliances_message(
    home: str, timezone: str | None, appliances: tuple[Appliance, ...], grant: ConsentGrant,
    now_ms: int,
) -> Appliances:  # fmt: skip
    """What to publish on ``appliances`` under ``grant``: the list, or an empty withdrawal."""
    if grants_prompts(grant):
        return Appliances(home, now_ms, timezone or "UTC", list(appliances), grant.grant)
    return Appliances(home, now_ms, timezone or "UTC", [])
