"""ISO 8601 text -> UTC epoch milliseconds, with one rule for times that carry no zone.

The rule: a time with an offset or ``Z`` means that instant, whatever ``naive`` says. A time
without one (``2026-07-01T09:00``, or a bare date, which is its midnight) is read in the zone the
caller names, and every caller names it, because the right answer depends on where the text came
from:

- ``"utc"``: the time is UTC (an operator's ``--at``/``--start``, a history CSV, the simulator);
- ``"local"``: the time is this machine's local time, as ``datetime.timestamp`` reads it;
- a ``tzinfo``: the time is in that zone (a weather file's own ``utc_offset_seconds``).

A wall time that does not exist in the zone (in the hour skipped when clocks go forward) is read
with the offset in force before the change, so ``02:30`` on the spring-forward night in Berlin
is 01:30 UTC, which the clocks there show as ``03:30``. A wall time that happens twice (in the
hour repeated when clocks go back) is the first of the two. These are Python's ``fold=0`` rules.

``Z`` is accepted anywhere Python 3.11 accepts ``+00:00``. Fractions of a millisecond are rounded
to the nearest millisecond. Bad text raises ``ValueError`` with a plain message; callers turn it
into their own (a CLI's ``Error: ...``, a file's line number).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Literal

NaiveRule = Literal["utc", "local"] | tzinfo


def parse_iso_ms(text: str, *, naive: NaiveRule) -> int:
    """UTC epoch milliseconds of the ISO 8601 ``text``; ``naive`` says the zone of a time that
    names none (see the module docstring). Raises ValueError if ``text`` is not ISO 8601."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        if naive == "utc":
            dt = dt.replace(tzinfo=UTC)
        elif isinstance(naive, tzinfo):
            dt = dt.replace(tzinfo=naive)
        elif naive != "local":
            raise ValueError(f"naive must be 'utc', 'local' or a tzinfo, not {naive!r}")
    try:
        return round(dt.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):  # a local time near year 1 or 9999
        raise ValueError(f"{text!r} is outside the times this machine can convert") from None
