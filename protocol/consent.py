"""Consent grants: what a household shares, with whom, what for, and how finely.

A grant names, per stream (a device role), the purposes the data may serve and, per purpose, the
resolution and how many days the hub may keep it. Nothing is shared until a grant says so:
version 0, the default, shares nothing. Each new version records the hash of the one before, so
the ledgers kept at the agent and at the hub are append-only chains a member can audit.

The agent releases a stream at the finest resolution any granted purpose needs; the hub lets each
purpose see only its own, aggregated to its resolution, for its retention.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from protocol.quantities import Role
from protocol.topics import check_id


class Purpose(StrEnum):
    FORECAST = "forecast"  # the community forecast of demand, solar and wind
    PROMPTS = "prompts"  # planning when the household's appliances run
    SETTLEMENT = "settlement"  # settling energy shared between neighbours
    COMMUNITY_STATS = "community-stats"  # neighbourhood figures over groups of homes


class Resolution(StrEnum):
    RAW = "raw"
    MIN15 = "15min"
    HOURLY = "hourly"
    DAILY = "daily"


RESOLUTION_MS: Final = {
    Resolution.RAW: 0,
    Resolution.MIN15: 900_000,
    Resolution.HOURLY: 3_600_000,
    Resolution.DAILY: 86_400_000,
}
MAX_RETENTION_DAYS: Final = 3650
GENESIS: Final = ""  # prev_hash of version 1


@dataclass(frozen=True, slots=True)
class PurposeGrant:
    resolution: Resolution
    retention_days: int  # how long the hub may keep the data for this purpose

    def __post_init__(self) -> None:
        if not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(f"retention_days must be 1 to {MAX_RETENTION_DAYS}")


Streams = dict[str, dict[str, PurposeGrant]]  # role -> purpose -> grant


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """``homes/{home}/consent``, retained: the household's current grant."""

    home: str
    grant: str  # the id readings carry: "g" + version
    version: int
    issued_ms: int
    streams: Streams = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""  # sha256 of the canonical form of every other field; filled by seal()

    def __post_init__(self) -> None:
        check_id(self.home, "home")
        if not 0 <= self.version < 2**31:
            raise ValueError("version out of range")
        if self.grant != grant_id(self.version):
            raise ValueError(f"grant id of version {self.version} is {grant_id(self.version)!r}")
        for role, purposes in self.streams.items():
            try:
                Role(role)
            except ValueError:
                raise ValueError(f"{role!r} is not a stream (a device role)") from None
            if not purposes:
                raise ValueError(f"stream {role} is listed with no purpose; leave it out")
            for purpose in purposes:
                try:
                    Purpose(purpose)
                except ValueError:
                    raise ValueError(f"{purpose!r} is not a purpose") from None
        if self.version == 0 and self.streams:
            raise ValueError("version 0 is the empty grant")
        if self.hash and self.hash != content_hash(self):
            raise ValueError("hash does not match the grant's content")
        if (self.version <= 1) != (self.prev_hash == GENESIS):
            raise ValueError("only version 1 starts the chain")

    def covers(self, role: Role | str, purpose: Purpose) -> PurposeGrant | None:
        return self.streams.get(str(role), {}).get(purpose.value)

    def release_resolution(self, role: Role | str) -> Resolution | None:
        """The finest resolution any purpose of ``role`` needs; None when it is not shared."""
        purposes = self.streams.get(str(role))
        if not purposes:
            return None
        return min((p.resolution for p in purposes.values()), key=RESOLUTION_MS.__getitem__)


def grant_id(version: int) -> str:
    return f"g{version}"


def _canonical(grant: ConsentGrant) -> bytes:
    body: dict[str, Any] = {
        "home": grant.home,
        "grant": grant.grant,
        "version": grant.version,
        "issued_ms": grant.issued_ms,
        "prev_hash": grant.prev_hash,
        "streams": {
            role: {
                p: {"resolution": g.resolution.value, "retention_days": g.retention_days}
                for p, g in purposes.items()
            }
            for role, purposes in grant.streams.items()
        },
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def content_hash(grant: ConsentGrant) -> str:
    return hashlib.sha256(_canonical(grant)).hexdigest()


def nothing_shared(home: str, issued_ms: int = 0) -> ConsentGrant:
    """The default: version 0, no stream shared."""
    return ConsentGrant(home, grant_id(0), 0, issued_ms)


def next_version(previous: ConsentGrant, streams: Streams, issued_ms: int) -> ConsentGrant:
    """The grant that follows ``previous`` with ``streams``, sealed into the chain."""
    version = previous.version + 1
    draft = ConsentGrant(
        previous.home, grant_id(version), version, issued_ms, streams,
        previous.hash if previous.version else GENESIS,
    )  # fmt: skip
    return ConsentGrant(
        draft.home, draft.grant, version, issued_ms, streams, draft.prev_hash, content_hash(draft)
    )


class ChainError(ValueError):
    """A grant that does not follow the one before it."""


def check_follows(previous: ConsentGrant, grant: ConsentGrant) -> None:
    """Raise :class:`ChainError` unless ``grant`` is the sealed successor of ``previous``."""
    if grant.home != previous.home:
        raise ChainError("grant is for another home")
    if grant.version != previous.version + 1:
        raise ChainError(f"version {grant.version} does not follow {previous.version}")
    expected = previous.hash if previous.version else GENESIS
    if grant.prev_hash != expected:
        raise ChainError(f"version {grant.version} does not name its predecessor's hash")
    if not grant.hash:
        raise ChainError(f"version {grant.version} is not sealed")


# --- plain words -------------------------------------------------------------------------------

STREAM_WORDS: Final = {
    "grid": "your electricity meter (what you take from and give to the grid)",
    "pv": "your solar panels (what they generate)",
    "wind": "your wind turbine (what it generates)",
    "battery": "your home battery (charging and discharging)",
    "load": "the appliance meter (what it uses)",
}
PURPOSE_WORDS: Final = {
    "forecast": "to forecast the neighbourhood's demand and local supply",
    "prompts": "to suggest good times to run your appliances",
    "settlement": "to settle the energy you share with neighbours, and your payments",
    "community-stats": "for neighbourhood figures that never show a single home",
}
RESOLUTION_WORDS: Final = {
    "raw": "every reading as taken (every few seconds)",
    "15min": "one total per quarter hour",
    "hourly": "one total per hour",
    "daily": "one total per day",
}


def describe(grant: ConsentGrant) -> list[str]:
    """The grant in sentences a member can read: what, with whom, what for, how fine, how long."""
    if not grant.streams:
        return ["You share nothing: no reading leaves your home."]
    lines = []
    for role, purposes in sorted(grant.streams.items()):
        lines.append(f"From {STREAM_WORDS.get(role, role)}, the cooperative's hub receives:")
        for purpose, g in sorted(purposes.items()):
            days = f"{g.retention_days} day{'s' if g.retention_days != 1 else ''}"
            lines.append(
                f"  - {RESOLUTION_WORDS[g.resolution.value]}, {PURPOSE_WORDS[purpose]}; "
                f"kept for {days}."
            )
    unshared = sorted(set(STREAM_WORDS) - set(grant.streams))
    if unshared:
        lines.append("Nothing is shared from " + "; ".join(STREAM_WORDS[r] for r in unshared) + ".")
    return lines
