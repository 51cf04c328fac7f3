"""Topic builders and the parser.

``coopwatt/{coop}/homes/{home}/{kind}`` and ``coopwatt/{coop}/hub/{kind}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ROOT: Final = "coopwatt"
ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class TopicError(ValueError):
    """A topic that is not part of the wire contract."""


class HomeTopic(StrEnum):
    READINGS = "readings"  # agent -> hub
    ACK = "ack"  # hub -> agent
    STATUS = "status"  # agent -> hub, retained, last will
    CONSENT = "consent"  # agent -> hub, retained
    APPLIANCES = "appliances"  # agent -> hub, retained
    PROMPTS = "prompts"  # hub -> agent, retained
    FEEDBACK = "feedback"  # agent -> hub
    STATEMENT = "statement"  # hub -> agent, retained
    RECEIPTS = "receipts"  # hub -> agent


class HubTopic(StrEnum):
    STATUS = "status"
    FORECAST = "forecast"
    METRICS = "metrics"
    ALERTS = "alerts"


@dataclass(frozen=True, slots=True)
class TopicAddress:
    coop: str
    kind: HomeTopic | HubTopic
    home: str | None = None  # None for hub topics


def is_id(value: str) -> bool:
    """True when ``value`` is a valid coop, home or device id."""
    return ID_RE.fullmatch(value) is not None


def check_id(value: str, what: str = "id") -> str:
    if not is_id(value):
        raise ValueError(f"{what} {value!r} must match {ID_RE.pattern}")
    return value


def home_topic(coop: str, home: str, kind: HomeTopic) -> str:
    return f"{ROOT}/{check_id(coop, 'coop')}/homes/{check_id(home, 'home')}/{kind.value}"


def hub_topic(coop: str, kind: HubTopic) -> str:
    return f"{ROOT}/{check_id(coop, 'coop')}/hub/{kind.value}"


def home_filter(coop: str, kind: HomeTopic) -> str:
    """Subscription filter for ``kind`` messages from every home of ``coop``."""
    return f"{ROOT}/{check_id(coop, 'coop')}/homes/+/{kind.value}"


def parse_topic(topic: str) -> TopicAddress:
    """Split a contract topic into its parts; raises :class:`TopicError` for anything else."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT or not is_id(parts[1]):
        raise TopicError(f"not a coopwatt topic: {topic!r}")
    coop = parts[1]
    try:
        if parts[2] == "homes" and len(parts) == 5 and is_id(parts[3]):
            return TopicAddress(coop, HomeTopic(parts[4]), parts[3])
        if parts[2] == "hub" and len(parts) == 4:
            return TopicAddress(coop, HubTopic(parts[3]))
    except ValueError:
        pass
    raise TopicError(f"not a coopwatt topic: {topic!r}")
