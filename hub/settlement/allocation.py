"""Allocation keys: how an energy community's shared production is split among its members. Pure.

Under the EU's energy-sharing rules each country (or each community, within its country's menu)
fixes a *key* that says, per interval, how much of the energy the community's producers fed into
the grid counts as each member's shared consumption. What is not allocated stays grid export;
what a member consumed beyond its allocation stays grid import. The keys regulators publish
reduce to a few building blocks, so a key here is data, not code:

- a key is a ranked list of **groups** (priority groups: Luxembourg's "priorité", a social
  tariff's households first). Each group is served from what the groups before it left over;
  what the last group leaves is exported to the grid;
- a group splits its pool by one of two **rules**:

  - ``pro-rata``: in proportion to each member's consumption in the interval (Austria's
    "dynamic" key, France's "clé dynamique par défaut", Wallonia's and Luxembourg's default);
  - ``fixed``: fixed percentages (Austria's "static" key, France's "clé statique", Brussels'
    and Wallonia's fixed shares, Portugal's coefficients), summing to exactly 100 % per group
    (written as ``shares``, percentages with at most 4 decimals; a fixed group that lists only
    ``homes`` gives them equal shares, Wallonia's "fixe égale", the 100 % split by largest
    remainder in parts per million);

- a ``fixed`` group hands its pool out in ``rounds`` (Brussels): round 1 gives each member its
  percentage of the pool, capped at what it can use; in each further round what is left is
  shared again among the members who still have unmet consumption, in proportion to their
  percentages (renormalised over those members). With ``rounds = 1`` a member's unused share
  is not redistributed: it passes to the next group, or to the grid (Austria's static key:
  "a share not consumed in the quarter hour counts as surplus fed into the grid");
- per-member **caps** (mWh per interval) bound what a member can be allocated, whatever the
  rule; for ``pro-rata`` what a capped member cannot take is shared again pro rata to the
  consumption of the others (repeated until nothing is left or everyone is full).

A key applies per settlement interval of 15 minutes, or (``interval_minutes = 60``) to each
hour's totals: the engine then settles each hour as one interval and spreads each member's
shared energy back over the hour's quarters in proportion to its own import (or export) in each.

A member who is in no group (for example a new member not yet given a share) is allocated
nothing. A group without ``homes`` (allowed only for ``pro-rata``, and only last) takes every
member not named in an earlier group.

Arithmetic is in integer mWh. Every split is Hamilton's largest-remainder method: each part is
``floor(total·w/W)``, and the units still missing go one each to the largest remainders, ties to
the earlier member in home order. So a split adds up exactly to what it splits: nothing is
allocated twice or lost, and the result depends only on the data, not on the order given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from protocol.config_tables import ConfigError, Table, toml_type

PPM: Final = 1_000_000  # a share of 100 % in parts per million
_PPM_PER_PERCENT: Final = PPM // 100
MAX_ROUNDS: Final = 20
INTERVAL_MINUTES: Final = (15, 60)
_HOME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class Rule(StrEnum):
    """How one group splits the energy that reaches it."""

    PRO_RATA = "pro-rata"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class Group:
    """One priority group. ``homes`` None: every member not named in an earlier group.

    ``shares_ppm`` (``fixed`` only) maps each home to its share in parts per million; the shares
    sum to exactly :data:`PPM`. ``rounds`` is how many times a ``fixed`` group hands out what is
    left (1: once, the rest passes on).
    """

    rule: Rule
    homes: tuple[str, ...] | None
    shares_ppm: tuple[tuple[str, int], ...] = ()
    rounds: int = 1


@dataclass(frozen=True, slots=True)
class AllocationKey:
    """A complete key: groups in priority order, optional caps (mWh per interval) and a label."""

    groups: tuple[Group, ...]
    caps_mwh: tuple[tuple[str, int], ...] = ()
    name: str = ""
    interval_minutes: int = 15  # 15, or 60: allocate on each hour's totals (Italy counts hours)

    def __post_init__(self) -> None:
        if self.interval_minutes not in INTERVAL_MINUTES:
            raise ValueError("interval_minutes must be 15 or 60")
        seen: set[str] = set()
        for i, g in enumerate(self.groups):
            if g.homes is None:
                if g.rule is not Rule.PRO_RATA or i != len(self.groups) - 1:
                    raise ValueError("only the last group, pro-rata, may leave out its homes")
                continue
            if seen & set(g.homes):
                raise ValueError(f"{sorted(seen & set(g.homes))[0]} is in two groups")
            seen |= set(g.homes)
            if g.rule is Rule.FIXED:
                if {h for h, _ in g.shares_ppm} != set(g.homes):
                    raise ValueError("a fixed group's shares must name exactly its homes")
                if sum(p for _, p in g.shares_ppm) != PPM:
                    raise ValueError("a fixed group's shares must add up to 100 %")
            if not 1 <= g.rounds <= MAX_ROUNDS:
                raise ValueError(f"rounds must be from 1 to {MAX_ROUNDS}")
        if any(c < 0 for _, c in self.caps_mwh):
            raise ValueError("a cap cannot be negative")

    @property
    def label(self) -> str:
        """The key's name, or a short description of it."""
        if self.name:
            return self.name
        parts = []
        for g in self.groups:
            text = g.rule.value
            if g.rule is Rule.FIXED and g.rounds > 1:
                text += f" ({g.rounds} rounds)"
            parts.append(text)
        return "priority " + " > ".join(parts) if len(parts) > 1 else parts[0]

    def to_json(self) -> dict[str, Any]:
        """The TOML form (:func:`parse_key` reads it back)."""
        groups: list[dict[str, Any]] = []
        for g in self.groups:
            item: dict[str, Any] = {"rule": g.rule.value}
            if g.homes is not None:
                item["homes"] = list(g.homes)
            if g.rule is Rule.FIXED:
                item["rounds"] = g.rounds
                item["shares"] = {h: _percent_text(p) for h, p in g.shares_ppm}
            groups.append(item)
        out: dict[str, Any] = {"groups": groups, "interval_minutes": self.interval_minutes}
        if self.caps_mwh:
            out["caps_wh"] = {h: str(Decimal(c) / 1000) for h, c in self.caps_mwh}
        if self.name:
            out["name"] = self.name
        return out


def _percent_text(ppm: int) -> str:
    return format((Decimal(ppm) / _PPM_PER_PERCENT).normalize(), "f")


# -- the arithmetic --------------------------------------------------------------------------


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split integer ``total >= 0`` in proportion to ``weights`` (Hamilton's method).

    The parts add up to exactly ``total`` (all zero when the weights are); ties of remainders go
    to the earlier weight.
    """
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("cannot split a negative amount or by negative weights")
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    parts = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _pro_rata(pool: int, homes: list[str], need: dict[str, int], use: Mapping[str, int]) -> int:
    """Share ``pool`` pro rata to consumption, refilling from capped members; returns the rest."""
    active = [h for h in homes if need[h] > 0]
    while pool > 0 and active:
        if sum(need[h] for h in active) <= pool:
            for h in active:
                pool -= need[h]
                need[h] = 0
            return pool
        tentative = largest_remainder(pool, [use[h] for h in active])
        full = False
        for h, t in zip(active, tentative, strict=True):
            give = min(t, need[h])
            full |= give == need[h]
            need[h] -= give
            pool -= give
        active = [h for h in active if need[h] > 0]
        if not full:  # nobody hit a cap: the whole pool went out
            break
    return pool


def _fixed(pool: int, group: Group, need: dict[str, int]) -> int:
    """Hand ``pool`` out by fixed shares over ``group.rounds`` rounds; returns the rest."""
    shares = dict(group.shares_ppm)
    homes = sorted(shares)
    for round_no in range(group.rounds):
        takers = homes if round_no == 0 else [h for h in homes if need[h] > 0]
        if pool == 0 or not takers:
            break
        tentative = largest_remainder(pool, [shares[h] for h in takers])
        for h, t in zip(takers, tentative, strict=True):
            give = min(t, need[h])
            need[h] -= give
            pool -= give
    return pool


def allocate(
    shared_mwh: int, consumption_mwh: Mapping[str, int], key: AllocationKey
) -> dict[str, int]:
    """Each member's allocation (mWh) of ``shared_mwh``, the production the community shares.

    ``consumption_mwh`` is each member's consumption (its grid import) in the interval; members
    of the key absent from it consumed nothing. The result has one entry per member of
    ``consumption_mwh``; every value lies between 0 and that member's consumption (and cap),
    and their sum is at most ``shared_mwh``: the rest is exported to the grid.
    """
    if shared_mwh < 0 or any(v < 0 for v in consumption_mwh.values()):
        raise ValueError("energy cannot be negative")
    caps = dict(key.caps_mwh)
    members = sorted(consumption_mwh)
    named = {h for g in key.groups if g.homes is not None for h in g.homes}
    need = {
        h: min(consumption_mwh.get(h, 0), caps.get(h, consumption_mwh.get(h, 0)))
        for h in sorted(set(members) | named)
    }
    start = dict(need)
    pool = shared_mwh
    for g in key.groups:
        if g.rule is Rule.FIXED:
            pool = _fixed(pool, g, need)
        else:
            homes = (
                sorted(g.homes) if g.homes is not None else [h for h in members if h not in named]
            )
            pool = _pro_rata(pool, homes, need, {h: consumption_mwh.get(h, 0) for h in homes})
    return {h: start[h] - need[h] for h in members}


# -- the scheme file -------------------------------------------------------------------------


def _home(table: Table, key: str, value: object) -> str:
    if not isinstance(value, str) or not _HOME_RE.fullmatch(value):
        raise ConfigError(f"{table.prefix}{key}: {value!r} is not a home id")
    return value


def _shares(table: Table) -> tuple[tuple[str, int], ...]:
    raw = table._value("shares", True)  # Table has no public accessor for a raw value
    where = f"{table.prefix}shares"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f'{where} must be a table of percentages such as {{ a = "40" }}')
    out = []
    for home, value in raw.items():
        _home(table, "shares", home)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}.{home} must be a percentage, got {toml_type(value)}")
        try:
            pct = Decimal(str(value).strip())
        except InvalidOperation:
            raise ConfigError(f'{where}.{home} must be a percentage such as "40"') from None
        ppm = pct * _PPM_PER_PERCENT
        if not pct.is_finite() or not 0 <= pct <= 100 or ppm != ppm.to_integral_value():
            raise ConfigError(f"{where}.{home} must be from 0 to 100 with at most 4 decimals")
        out.append((home, int(ppm)))
    total = sum(p for _, p in out)
    if total != PPM:
        raise ConfigError(f"{where} add up to {_percent_text(total)} %, not 100 %")
    return tuple(sorted(out))


def _group(table: Table, last: bool) -> Group:
    rule = Rule(table.choice("rule", Rule.PRO_RATA.value, tuple(r.value for r in Rule)))
    homes_raw = table._value("homes", False)
    homes: tuple[str, ...] | None = None
    if isinstance(homes_raw, list):
        homes = tuple(sorted(_home(table, "homes", h) for h in homes_raw))
        if not homes or len(set(homes)) != len(homes):
            raise ConfigError(f"{table.prefix}homes must list each home once")
    elif "homes" in table.data:
        raise ConfigError(f'{table.prefix}homes must be a list such as ["a", "b"]')
    if rule is Rule.FIXED:
        if "shares" not in table.data and homes is not None:
            # Equal shares (Wallonia's "fixe égale"): 100 % split by largest remainder.
            table._value("shares", False)
            equal = largest_remainder(PPM, [1] * len(homes))
            shares = tuple(zip(homes, equal, strict=True))
        else:
            shares = _shares(table)
        if homes is not None and homes != tuple(h for h, _ in shares):
            raise ConfigError(f"{table.prefix}homes and {table.prefix}shares name other homes")
        rounds = table.integer("rounds", 1, lo=1, hi=MAX_ROUNDS)
        table.done()
        return Group(rule, tuple(h for h, _ in shares), shares, rounds)
    if homes is None and not last:
        raise ConfigError(f"{table.prefix}homes is missing: only the last group may leave it out")
    table.done()
    return Group(rule, homes)


def parse_key(table: Table) -> AllocationKey:
    """Read an ``[allocation]`` table (every key but ``price_per_kwh``, which the scheme reads).

    Either one group written in the table itself (``rule``, ``shares``, ``rounds``) or
    ``[[allocation.groups]]`` in priority order; ``caps_wh`` (Wh per interval) and ``name``
    apply to the whole key, and so does ``interval_minutes`` (15, the default, or 60).
    """
    name = table.text("name", "") or ""
    if len(name) > 64 or not name.isprintable():
        raise ConfigError(
            f"{table.prefix}name must be at most 64 printable characters: statements carry it"
        )
    minutes = table.choice("interval_minutes", 15, INTERVAL_MINUTES)
    caps: list[tuple[str, int]] = []
    caps_raw = table._value("caps_wh", False)
    if isinstance(caps_raw, dict):
        for home, value in caps_raw.items():
            _home(table, "caps_wh", home)
            try:
                wh = Decimal(str(value).strip())
            except InvalidOperation:
                wh = Decimal(-1)
            if isinstance(value, bool) or not wh.is_finite() or wh < 0 or wh * 1000 % 1:
                raise ConfigError(
                    f"{table.prefix}caps_wh.{home} must be Wh per interval, at least 0, to the mWh"
                )
            caps.append((home, int(wh * 1000)))
    elif "caps_wh" in table.data:
        raise ConfigError(f"{table.prefix}caps_wh must be a table such as {{ a = 500 }}")
    subtables = table.tables("groups")
    if subtables:
        for key in ("rule", "shares", "rounds", "homes"):
            if key in table.data:
                raise ConfigError(
                    f"{table.prefix}{key} cannot be used with {table.prefix}groups: "
                    "put it in a group"
                )
        groups = [_group(t, i == len(subtables) - 1) for i, t in enumerate(subtables)]
        table.done()
    else:
        groups = [_group(table, True)]  # which checks the table itself for unknown keys
    try:
        return AllocationKey(tuple(groups), tuple(sorted(caps)), name, minutes)
    except ValueError as exc:
        raise ConfigError(f"{table.prefix.rstrip('.')}: {exc}") from None
