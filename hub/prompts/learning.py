"""How much each home actually shifts: learnt from its feedback and its meters. Pure.

After a planned run's window has passed, the hub asks two things. Did the home's meters see the
appliance's energy in the window (more than the home used in the same hours on the days
before)? And what did the household answer (``done``, ``accepted``, ``snoozed``)? The meters
weigh more than words: an accepted prompt that nobody acted on is not a shift. Each answered run
adds its outcome (0..1) to what the home *followed* and the chance the appliance had to run
that day at all to what it was *expected* to follow (a washer used four days a week cannot
follow a window on the other three); both fade with a half-life, so a household that changes its
habits is followed within weeks. The planner counts each run of the home with
``followed / expected`` (with a prior of one half, worth two runs, until it knows better).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

PRIOR_FOLLOWED: Final = 1.0
PRIOR_EXPECTED: Final = 2.0
HALF_LIFE_MS: Final = 21 * 86_400_000
MIN_SHIFT: Final = 0.05  # a home never counts as certain to ignore a prompt
METER_WEIGHT: Final = 0.7  # of the outcome, when both meters and an answer speak
RUN_SHARE: Final = 0.8  # a run counts in full once this share of its typical energy is seen
FEEDBACK_OUTCOME: Final = {"done": 1.0, "accepted": 0.6, "snoozed": 0.0}


@dataclass(frozen=True, slots=True)
class ShiftEstimate:
    """A home's record: runs followed and runs expected (both faded), as of ``updated_ms``."""

    followed: float = 0.0
    expected: float = 0.0
    updated_ms: int = 0

    @property
    def shift(self) -> float:
        """The chance the home runs a planned appliance in its window."""
        value = (self.followed + PRIOR_FOLLOWED) / (self.expected + PRIOR_EXPECTED)
        return min(1.0, max(MIN_SHIFT, value))

    def faded(self, now_ms: int) -> ShiftEstimate:
        if now_ms <= self.updated_ms or not self.updated_ms:
            return ShiftEstimate(self.followed, self.expected, max(now_ms, self.updated_ms))
        k = 0.5 ** ((now_ms - self.updated_ms) / HALF_LIFE_MS)
        return ShiftEstimate(self.followed * k, self.expected * k, now_ms)

    def observe(self, outcome: float, chance: float, now_ms: int) -> ShiftEstimate:
        """Add one run: ``outcome`` (0..1, how fully it ran in its window) of a run that had
        ``chance`` (0..1) to run that day at all."""
        f = self.faded(now_ms)
        outcome = min(1.0, max(0.0, outcome))
        return ShiftEstimate(f.followed + outcome, f.expected + chance, f.updated_ms)


def feedback_outcome(actions: Sequence[str]) -> float | None:
    """What the household's answers say: ``done`` wins, else the last answer; None without one."""
    known = [FEEDBACK_OUTCOME[a] for a in actions if a in FEEDBACK_OUTCOME]
    if not known:
        return None
    if "done" in actions:
        return FEEDBACK_OUTCOME["done"]
    return known[-1]


def metered_outcome(window_wh: float, baseline_wh: float, energy_wh: float) -> float:
    """How fully the run showed in the meters: the energy used in the window beyond the
    baseline, as a share of (most of) the appliance's typical run."""
    if energy_wh <= 0:
        return 0.0
    return min(1.0, max(0.0, (window_wh - baseline_wh) / (RUN_SHARE * energy_wh)))


def run_outcome(metered: float | None, answered: float | None) -> float | None:
    """One run's outcome from the meters and the answer; None when neither says anything."""
    if metered is None:
        return answered
    if answered is None:
        return metered
    return METER_WEIGHT * metered + (1.0 - METER_WEIGHT) * answered


# -- energy from meter counters ----------------------------------------------------------------

Series = Sequence[tuple[int, float]]  # (ts_ms, counter Wh), in time order


def counter_at(series: Series, t_ms: int) -> float | None:
    """A lifetime counter at ``t_ms``, interpolated between the readings either side; None when
    no reading lies on each side (or on ``t_ms`` itself)."""
    times = [t for t, _ in series]
    i = bisect.bisect_left(times, t_ms)
    if i < len(times) and times[i] == t_ms:
        return series[i][1]
    if i == 0 or i == len(times):
        return None
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 + (v1 - v0) * (t_ms - t0) / (t1 - t0)


def counter_delta(series: Series, start_ms: int, end_ms: int) -> float | None:
    a, b = counter_at(series, start_ms), counter_at(series, end_ms)
    if a is None or b is None or b < a:
        return None  # unknown, or the meter was replaced
    return b - a


@dataclass(frozen=True, slots=True)
class HomeMeters:
    """One home's counters, by device: grid import/export, generation, appliance sub-meters."""

    grid_import: Mapping[str, Series]
    grid_export: Mapping[str, Series]
    generation: Mapping[str, Series]  # pv and wind energy_wh
    loads: Mapping[str, Series]  # load sub-meters' energy_wh, by device name


def consumption_wh(meters: HomeMeters, start_ms: int, end_ms: int) -> float | None:
    """What the home used from ``start_ms`` to ``end_ms``: grid import − export + its own
    generation (Wh); None when a meter does not cover the span."""
    if not meters.grid_import:
        return None
    total = 0.0
    for series in meters.grid_import.values():
        d = counter_delta(series, start_ms, end_ms)
        if d is None:
            return None
        total += d
    for group in (meters.grid_export, meters.generation):
        for series in group.values():
            d = counter_delta(series, start_ms, end_ms)
            if d is None:
                return None
            total += d if group is meters.generation else -d
    return total


DAY_MS: Final = 86_400_000
BASELINE_DAYS: Final = 3


def measure_run(
    meters: HomeMeters, appliance: str, windows: Iterable[tuple[int, int]], energy_wh: float
) -> float | None:
    """How fully a run showed in the home's meters, or None when they cannot tell.

    A load sub-meter named like the appliance measures it alone. Otherwise the whole home's use
    in the windows is compared with the least it used in the same hours on the three days
    before: the day's other appliances and habits rarely repeat three times to the hour.
    """
    spans = list(windows)
    sub = meters.loads.get(appliance)
    if sub is not None:
        used = [counter_delta(sub, s, e) for s, e in spans]
        if any(u is None for u in used):
            return None
        return metered_outcome(sum(u for u in used if u is not None), 0.0, energy_wh)
    window = [consumption_wh(meters, s, e) for s, e in spans]
    if any(w is None for w in window):
        return None
    baselines = []
    for day in range(1, BASELINE_DAYS + 1):
        back = [consumption_wh(meters, s - day * DAY_MS, e - day * DAY_MS) for s, e in spans]
        if all(b is not None for b in back):
            baselines.append(sum(b for b in back if b is not None))
    if not baselines:
        return None
    return metered_outcome(sum(w for w in window if w is not None), min(baselines), energy_wh)
