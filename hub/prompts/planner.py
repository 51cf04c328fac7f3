"""The appliance-timing planner: when each home's flexible appliances should run. Pure.

Peers schedule each home on its own, so every home is sent to the same sunniest hour and the
shifted load makes a new peak there (herding). This planner places the whole neighbourhood's runs
together, on 15-minute steps of the community forecast, minimising one convex cost of the
expected load it adds (``L``, W) at each step ``k``:

    C_k(L) = E[import_k(L)] + β/(2S)·max(0, μ_k + L)² + λ/(2S)·L²

- ``E[import_k(L)]``: the expected power drawn from the grid when the community's net demand
  (demand − local generation) is normal with mean ``μ_k`` (the P50s) and the standard deviation
  its P10–P90 spread implies. Its slope is the chance that step imports: runs go where the
  surplus is likely, and as they fill it that chance rises, so they spread over the surplus in
  proportion to how sure it is, not all into the best step;
- ``β`` flattens import peaks where no surplus is expected (a winter evening);
- ``λ`` spreads runs where the surplus is so sure the first term is flat;
- ``S`` is the horizon's largest expected net demand or surplus, so β and λ need no units.

With the grid's prices for the whole horizon (``Outlook.price_per_kwh``, from an imported
day-ahead or tariff file, see :func:`with_prices`), the first term is weighted by each step's
price relative to the horizon's mean, ``E[import_k(L)]·max(0, p_k)/p̄``: a run then weighs the
surplus (energy that costs the grid price nothing) against a cheap grid hour. A negative price
weighs as zero, which keeps the cost convex. Without prices every weight is 1 and the planner is
exactly what it was.

A run counts with its *expected* power: its power × the chance it runs that day × how often the
home follows a prompt (learnt by :mod:`hub.prompts.learning`). Each household constraint is hard:
a run lies inside its appliance's window of the day, never starts before now, and an
uninterruptible run is one block (an interruptible one is pieces of at least half an hour).

The placement is a potential game: a run's cost change when it moves is exactly the change of
the total cost, so moving each run to its best place in turn only ever lowers the total and
stops. Re-planning starts from the previous plan; a run whose window starts within
``freeze_ms`` is pinned, and any other moves only when that lowers the cost by more than
``hysteresis`` of its own expected energy, so a forecast that wobbles does not make windows
flap. A run whose window has started or passed stays in the plan (pinned) for as long as its
day's window overlaps the outlook, so a run is planned once a day, never again after it ran.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Final
from zoneinfo import ZoneInfo

from protocol.payloads import Appliance, Forecast, TargetQuantiles

STEP_MS: Final = 900_000
STEP_H: Final = STEP_MS / 3_600_000
CHUNK_STEPS: Final = 2  # an interruptible run comes in pieces of at least 30 minutes
Z90: Final = 1.2815515655446004  # P90 lies this many standard deviations above the median
MIN_SIGMA_W: Final = 1.0
MIN_SHIFT: Final = 0.05  # even a home that rarely follows gets a window worth following
_SQRT2: Final = math.sqrt(2.0)
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)

JobKey = tuple[str, str, str, int]  # home, appliance, local date (YYYY-MM-DD), run of that day
Span = tuple[int, int]  # [start, end) in steps of the outlook, or in UTC ms on the way out


@dataclass(frozen=True, slots=True)
class Outlook:
    """The forecast as the planner sees it, per 15-minute step from ``start_ms``.

    ``net_w``: expected (P50) community demand minus local generation, W: + import, − surplus.
    ``sigma_w``: one standard deviation of it. ``pv_w``, ``wind_w``: P50 generation (reasons).
    ``price_per_kwh``: the grid's import price per step in ``currency``, or None when no price
    covers the whole outlook (then the planner ignores price).
    """

    start_ms: int
    issued_ms: int
    net_w: tuple[float, ...]
    sigma_w: tuple[float, ...]
    pv_w: tuple[float, ...]
    wind_w: tuple[float, ...]
    price_per_kwh: tuple[float, ...] | None = field(default=None, kw_only=True)
    currency: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        n = len(self.net_w)
        if not (len(self.sigma_w) == len(self.pv_w) == len(self.wind_w) == n):
            raise ValueError("outlook series differ in length")
        if self.price_per_kwh is not None and len(self.price_per_kwh) != n:
            raise ValueError("outlook prices differ in length from the outlook")
        if self.start_ms % STEP_MS:
            raise ValueError("an outlook starts on a 15-minute boundary")

    @property
    def steps(self) -> int:
        return len(self.net_w)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.steps * STEP_MS

    def step_of(self, t_ms: int) -> int:
        """The step holding ``t_ms`` (negative before the outlook, ``steps`` or more after)."""
        return (t_ms - self.start_ms) // STEP_MS

    def ms(self, step: int) -> int:
        return self.start_ms + step * STEP_MS

    @property
    def scale_w(self) -> float:
        """The horizon's largest expected net demand or surplus: β and λ are relative to it."""
        return max([1000.0, *(abs(v) for v in self.net_w)])

    @property
    def import_weights(self) -> tuple[float, ...]:
        """Each step's weight of expected import: ``max(0, p_k)/p̄`` with prices, else 1."""
        if self.price_per_kwh is None:
            return (1.0,) * self.steps
        clipped = [max(0.0, p) for p in self.price_per_kwh]
        mean = sum(clipped) / len(clipped) if clipped else 0.0
        if mean <= 0.0:
            return (0.0,) * self.steps  # the grid pays or costs nothing all horizon
        return tuple(p / mean for p in clipped)


def with_prices(outlook: Outlook, price_per_kwh: Sequence[float], currency: str) -> Outlook:
    """``outlook`` with the grid's price per step (one per 15-minute step, in ``currency``)."""
    return replace(outlook, price_per_kwh=tuple(float(p) for p in price_per_kwh), currency=currency)


def _resample(values: Sequence[float], step_s: int) -> list[float]:
    """Values per ``step_s`` as values per 15 minutes (repeated or averaged)."""
    if step_s == 900:
        return list(values)
    if step_s > 900:
        k = step_s // 900
        return [v for v in values for _ in range(k)]
    k = 900 // step_s
    return [sum(values[i : i + k]) / len(values[i : i + k]) for i in range(0, len(values), k)]


def _sigma(t: TargetQuantiles) -> list[float]:
    return [(hi - lo) / (2 * Z90) for lo, hi in zip(t.p10_w, t.p90_w, strict=True)]


def outlook_from_forecast(forecast: Forecast) -> Outlook:
    """The planner's view of a ``hub/forecast`` payload.

    The spread of net demand combines the demand's and the generation's (PV and wind taken as
    moving together, the cautious assumption: one cloud bank dims every roof).
    """
    d, pv, wind = forecast.demand, forecast.pv, forecast.wind
    gen_sigma = [a + b for a, b in zip(_sigma(pv), _sigma(wind), strict=True)]
    sigma = [
        max(MIN_SIGMA_W, math.hypot(sd, sg)) for sd, sg in zip(_sigma(d), gen_sigma, strict=True)
    ]
    net = [dm - p - w for dm, p, w in zip(d.p50_w, pv.p50_w, wind.p50_w, strict=True)]
    start = forecast.start_ms
    if forecast.step_s > 900 or forecast.start_ms % STEP_MS:
        start -= start % STEP_MS
    return Outlook(
        start_ms=start,
        issued_ms=forecast.issued_ms,
        net_w=tuple(_resample(net, forecast.step_s)),
        sigma_w=tuple(_resample(sigma, forecast.step_s)),
        pv_w=tuple(_resample(pv.p50_w, forecast.step_s)),
        wind_w=tuple(_resample(wind.p50_w, forecast.step_s)),
    )


# -- jobs: the runs to place -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HomeAppliances:
    """What the planner knows of one home: its appliances, their timezone, and ``shift``: the
    chance the home runs an appliance in the window it was given (learnt from its feedback and
    meters; 0.5 until known)."""

    home: str
    timezone: str
    appliances: tuple[Appliance, ...]
    shift: float = 0.5


@dataclass(frozen=True, slots=True)
class Job:
    """One run to place. Steps are the outlook's; the window may reach outside it."""

    key: JobKey
    window_first: int  # first step of the appliance's window that day
    window_last: int  # one past its last step
    steps: int  # steps the run needs
    power_w: float  # while running
    weight: float  # share of the run expected where planned: ``chance`` × the home's shift
    interruptible: bool
    energy_wh: float
    chance: float = 1.0  # that the appliance runs that day at all

    @property
    def home(self) -> str:
        return self.key[0]

    @property
    def appliance(self) -> str:
        return self.key[1]

    @property
    def group(self) -> tuple[str, str, str]:
        """Runs of one appliance on one day must not overlap."""
        return self.key[0], self.key[1], self.key[2]

    @property
    def expected_w(self) -> float:
        return self.power_w * self.weight


def _local_ms(day: date, minute: int, zone: ZoneInfo) -> int:
    extra, minute = divmod(minute, 1440)
    local = datetime.combine(day + timedelta(days=extra), time(minute // 60, minute % 60), zone)
    return int(local.timestamp() * 1000)


def make_jobs(homes: Iterable[HomeAppliances], outlook: Outlook) -> list[Job]:
    """Every run of every appliance whose window of some local day overlaps the outlook.

    An appliance that runs ``runs_per_week`` times gets ``ceil(runs_per_week / 7)`` runs a day,
    each expected with ``runs_per_week / 7 / runs`` × the home's shift; two runs a day split
    the window between them, so they never compete for the same hours. Raises
    ``zoneinfo.ZoneInfoNotFoundError`` for an unknown timezone (checked when appliances arrive).
    """
    jobs: list[Job] = []
    for h in homes:
        zone = ZoneInfo(h.timezone)
        first_day = datetime.fromtimestamp(outlook.start_ms / 1000, zone).date() - timedelta(1)
        last_day = datetime.fromtimestamp(outlook.end_ms / 1000, zone).date()
        for a in h.appliances:
            steps = -(-a.duration_min // 15)
            runs = -(-a.runs_per_week // 7)
            chance = min(1.0, a.runs_per_week / 7 / runs)
            weight = chance * min(1.0, max(MIN_SHIFT, h.shift))
            day = first_day
            while day <= last_day:
                start = _local_ms(day, a.earliest_start_min, zone)
                end = _local_ms(day, a.earliest_start_min + a.window_min, zone)
                first = -((outlook.start_ms - start) // STEP_MS)  # ceil: start on a boundary
                last = (end - outlook.start_ms) // STEP_MS  # floor: finish by the latest
                if last > 0 and first < outlook.steps and last - first >= steps:
                    # Runs of one day share the window in turns: the first its first part.
                    n = min(runs, (last - first) // steps)
                    for run in range(n):
                        jobs.append(
                            Job(
                                (h.home, a.name, day.isoformat(), run),
                                first + run * (last - first) // n,
                                first + (run + 1) * (last - first) // n,
                                steps,
                                a.energy_wh / (steps * STEP_H),
                                weight,
                                a.interruptible,
                                a.energy_wh,
                                chance,
                            )
                        )
                day += timedelta(1)
    return jobs


# -- the cost ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """Tuning. ``freeze_ms``: a window starting this soon is not moved; ``hysteresis``: a run
    moves only to save more than this share of its expected energy; ``peak_weight`` (β) and
    ``spread_weight`` (λ): see the module docstring; ``rounds``: best-response passes at most,
    fewer once a pass lowers the total by less than ``settle`` of it."""

    freeze_ms: int = 2 * 3_600_000
    hysteresis: float = 0.1
    peak_weight: float = 0.5
    spread_weight: float = 0.5
    rounds: int = 40
    settle: float = 1e-4  # stop once a pass lowers the total cost by less than this share


def phi_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def expected_import_w(mu_w: float, sigma_w: float, load_w: float) -> float:
    """E[max(0, X + load)] for X ~ Normal(mu, sigma): the expected grid import, W."""
    m = mu_w + load_w
    z = m / sigma_w
    return m * phi_cdf(z) + sigma_w * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def import_chance(mu_w: float, sigma_w: float, load_w: float) -> float:
    """The chance the step draws from the grid with ``load_w`` added."""
    return phi_cdf((mu_w + load_w) / sigma_w)


class _Costs:
    """The per-step cost at the current planned load, kept up to date as runs move."""

    def __init__(self, outlook: Outlook, settings: PlannerSettings) -> None:
        self.mu = outlook.net_w
        self.sigma = outlook.sigma_w
        self.weight = outlook.import_weights
        scale = outlook.scale_w
        self.beta = settings.peak_weight / (2 * scale)
        self.lam = settings.spread_weight / (2 * scale)
        self.load = [0.0] * outlook.steps
        self.cost = [self.at(k, 0.0) for k in range(outlook.steps)]

    def at(self, k: int, load: float) -> float:
        mu = self.mu[k]
        over = max(0.0, mu + load)
        return (
            self.weight[k] * expected_import_w(mu, self.sigma[k], load)
            + self.beta * over * over
            + self.lam * load * load
        )

    def add(self, spans: Iterable[Span], power_w: float) -> None:
        n = len(self.load)
        for s, e in spans:
            for k in range(max(0, s), min(n, e)):
                self.load[k] += power_w
                if abs(self.load[k]) < 1e-9:
                    self.load[k] = 0.0
                self.cost[k] = self.at(k, self.load[k])

    def deltas(self, first: int, last: int, power_w: float) -> list[float]:
        """Cost of adding ``power_w`` at each step of ``[first, last)``."""
        return [self.at(k, self.load[k] + power_w) - self.cost[k] for k in range(first, last)]

    def total(self) -> float:
        return sum(self.cost)


# -- placing runs ------------------------------------------------------------------------------


def _window_sums(deltas: Sequence[float], width: int) -> list[float]:
    """Sums of every ``width`` consecutive deltas; infinite where one is (a blocked step)."""
    sums: list[float] = [0.0]
    blocked: list[int] = [0]
    for d in deltas:
        inf = math.isinf(d)
        sums.append(sums[-1] + (0.0 if inf else d))
        blocked.append(blocked[-1] + inf)
    return [
        math.inf if blocked[i + width] - blocked[i] else sums[i + width] - sums[i]
        for i in range(len(deltas) - width + 1)
    ]


def _merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def _best(
    job: Job,
    first: int,
    last: int,
    costs: _Costs,
    blocked: set[int],
    prefer: tuple[Span, ...] | None,
) -> tuple[tuple[Span, ...], float] | None:
    """The cheapest placement of ``job`` in ``[first, last)`` avoiding ``blocked`` steps, and its
    cost; None when it does not fit. Ties go to ``prefer`` (the incumbent), then earlier."""
    if last - first < job.steps:
        return None
    base = costs.deltas(first, last, job.expected_w)
    for k in blocked:
        if first <= k < last:
            base[k - first] = math.inf
    if not job.interruptible:
        sums = _window_sums(base, job.steps)
        best_i, best_c = -1, math.inf
        preferred = prefer[0][0] - first if prefer and len(prefer) == 1 else -1
        for i, c in enumerate(sums):
            if c < best_c - 1e-9 or (i == preferred and c <= best_c + 1e-9):
                best_i, best_c = i, c
        if best_i < 0 or math.isinf(best_c):
            return None
        return ((first + best_i, first + best_i + job.steps),), best_c
    # Interruptible: the cheapest pieces of CHUNK_STEPS, one at a time (the last may be shorter);
    # if the pieces leave gaps too short for the rest, one block; failing that, single steps.
    found = (
        _pieces(base, first, job.steps, CHUNK_STEPS)
        or _pieces(base, first, job.steps, job.steps)
        or _pieces(base, first, job.steps, 1)
    )
    if found is None:
        return None
    merged, total = found
    if prefer is not None and _merge(prefer) != merged:
        prefer_cost = _placement_cost(prefer, first, base)
        if prefer_cost <= total + 1e-9:
            return _merge(prefer), prefer_cost
    return merged, total


def _pieces(
    base: Sequence[float], first: int, steps: int, chunk: int
) -> tuple[tuple[Span, ...], float] | None:
    deltas = list(base)
    chosen: list[Span] = []
    total = 0.0
    remaining = steps
    while remaining:
        width = min(chunk, remaining)
        best_i, best_c = -1, math.inf
        for i, c in enumerate(_window_sums(deltas, width)):
            if c < best_c - 1e-9:
                best_i, best_c = i, c
        if best_i < 0 or math.isinf(best_c):
            return None
        chosen.append((first + best_i, first + best_i + width))
        total += best_c
        for i in range(best_i, best_i + width):
            deltas[i] = math.inf
        remaining -= width
    return _merge(chosen), total


def _cells(spans: Iterable[Span]) -> set[int]:
    return {k for s, e in spans for k in range(s, e)}


def _placement_cost(spans: Iterable[Span], first: int, deltas: Sequence[float]) -> float:
    return sum(deltas[k - first] for s, e in spans for k in range(s, e))


@dataclass(frozen=True)
class Plan:
    """Where every run goes. ``windows``: per run, its spans in UTC ms; ``load_w``: the expected
    load the plan adds per step; ``frozen``: runs pinned because they start soon, started or
    are over (``windows`` keeps those too, so passing it back as ``previous`` never plans a day's
    run twice; prompts show only the runs that have not ended); ``moved``: runs of the previous
    plan now placed elsewhere; ``cost``: the total cost."""

    outlook: Outlook
    now_ms: int
    jobs: dict[JobKey, Job]
    windows: dict[JobKey, tuple[Span, ...]]
    load_w: tuple[float, ...]
    frozen: frozenset[JobKey] = frozenset()
    moved: int = 0
    cost: float = 0.0
    unplaced: tuple[JobKey, ...] = field(default=())

    @cached_property
    def runs_by_home(self) -> dict[str, list[tuple[JobKey, tuple[Span, ...]]]]:
        """Each home's runs in start order, indexed once per plan: a re-plan builds every
        home's prompts, and sorting all runs again for each (2,000 homes, 5,500 runs) took a
        minute."""
        index: dict[str, list[tuple[JobKey, tuple[Span, ...]]]] = {}
        for key, spans in sorted(self.windows.items(), key=lambda kv: kv[1][0][0]):
            index.setdefault(key[0], []).append((key, spans))
        return index


def _steps(outlook: Outlook, spans_ms: Iterable[Span]) -> tuple[Span, ...] | None:
    out = []
    for s, e in spans_ms:
        if (s - outlook.start_ms) % STEP_MS or (e - outlook.start_ms) % STEP_MS:
            return None  # planned on another grid: place afresh
        out.append((outlook.step_of(s), outlook.step_of(e)))
    return tuple(out)


def _tiebreak(key: JobKey) -> bytes:
    return hashlib.blake2b(repr(key).encode(), digest_size=8).digest()


def _fits(job: Job, spans: tuple[Span, ...], first: int, last: int) -> bool:
    if sum(e - s for s, e in spans) != job.steps or not spans:
        return False
    if not job.interruptible and len(spans) != 1:
        return False
    return all(first <= s < e <= last for s, e in spans)


def plan(
    jobs: Iterable[Job],
    outlook: Outlook,
    now_ms: int,
    previous: Mapping[JobKey, Sequence[Span]] | None = None,
    settings: PlannerSettings | None = None,
) -> Plan:
    """Place every run; ``previous`` (windows in UTC ms) is the plan the homes were last sent."""
    settings = settings or PlannerSettings()
    previous = previous or {}
    n = outlook.steps
    now_step = max(0, -((outlook.start_ms - now_ms) // STEP_MS))  # next boundary at or after now
    costs = _Costs(outlook, settings)
    by_key = {j.key: j for j in jobs}
    windows: dict[JobKey, tuple[Span, ...]] = {}
    frozen: set[JobKey] = set()
    incumbent: dict[JobKey, tuple[Span, ...]] = {}
    bounds: dict[JobKey, tuple[int, int]] = {}

    for key, job in by_key.items():
        old = previous.get(key)
        spans = _steps(outlook, old) if old else None
        if spans and old and min(s for s, _ in old) < now_ms + settings.freeze_ms:
            # Starts soon, has started or is over: the household may be acting on it, or has
            # run (or skipped) it. Kept while it still respects the appliance's window (the
            # household may have changed it), *also once it has ended*: a run dropped from the
            # plan would be a run never sent to the next re-plan, which would place that day's
            # run a second time in what is left of its window (a washer done at 13:00 prompted
            # again for 18:00), after the surplus it was sent to.
            if _fits(job, spans, job.window_first, job.window_last):
                windows[key] = spans
                frozen.add(key)
                costs.add(spans, job.expected_w)
            continue
        first, last = max(job.window_first, now_step, 0), min(job.window_last, n)
        if last - first < job.steps:
            continue  # no longer fits before its latest finish
        bounds[key] = (first, last)
        if spans and _fits(job, spans, first, last):
            incumbent[key] = spans

    # Least flexible first, then the largest; the hash spreads equal runs fairly between homes.
    order = sorted(
        bounds,
        key=lambda k: (
            bounds[k][1] - bounds[k][0] - by_key[k].steps,
            -by_key[k].expected_w * by_key[k].steps,
            _tiebreak(k),
        ),
    )
    siblings: dict[tuple[str, str, str], list[JobKey]] = {}
    for key, job in by_key.items():
        siblings.setdefault(job.group, []).append(key)

    def blocked(key: JobKey) -> set[int]:
        return {
            k
            for other in siblings[by_key[key].group]
            if other != key and other in windows
            for s, e in windows[other]
            for k in range(s, e)
        }

    for key in order:
        if key in incumbent and not blocked(key) & {
            k for s, e in incumbent[key] for k in range(s, e)
        }:
            windows[key] = incumbent[key]
            costs.add(windows[key], by_key[key].expected_w)
    unplaced: list[JobKey] = []
    for key in order:
        if key in windows:
            continue
        job = by_key[key]
        found = _best(job, *bounds[key], costs, blocked(key), None)
        if found is None:
            unplaced.append(key)
            continue
        windows[key] = found[0]
        costs.add(found[0], job.expected_w)

    def improve(sticky: Mapping[JobKey, tuple[Span, ...]]) -> int:
        """One best-response pass; a run still where ``sticky`` has it moves only for a gain
        above the hysteresis. Returns the moves made."""
        moves = 0
        for key in order:
            if key not in windows:
                continue
            job = by_key[key]
            p = job.expected_w
            if p <= 0:
                continue
            current = windows[key]
            costs.add(current, -p)
            first, last = bounds[key]
            deltas = costs.deltas(first, last, p)
            current_cost = _placement_cost(current, first, deltas)
            found = _best(job, first, last, costs, blocked(key), current)
            margin = 1e-6 * max(1.0, abs(current_cost))
            if key in sticky and current == sticky[key]:
                margin += settings.hysteresis * p * job.steps
            if found is not None and found[0] != current and found[1] < current_cost - margin:
                windows[key] = found[0]
                moves += 1
            costs.add(windows[key], p)
        return moves

    for _ in range(settings.rounds):
        before = costs.total()
        moves = improve(incumbent)
        # Each move lowers the total; stop when a whole pass gains next to nothing.
        if not moves or before - costs.total() < settings.settle * abs(before):
            break
    # Then settle as the next re-plan would: with every run's window as its incumbent, until no
    # run gains more than the hysteresis by moving. Stopping on "next to nothing" alone could
    # leave a move worth more than that, which the next re-plan (same inputs) would then make,
    # sending a household a changed window for no change in the forecast.
    for _ in range(settings.rounds):
        if not improve(dict(windows)):
            break

    to_ms = {
        key: tuple((outlook.ms(s), outlook.ms(e)) for s, e in spans)
        for key, spans in windows.items()
    }
    moved = sum(
        1
        for key, old in previous.items()
        if key not in frozen and key in to_ms and tuple(map(tuple, old)) != to_ms[key]
    )
    return Plan(
        outlook=outlook,
        now_ms=now_ms,
        jobs=by_key,
        windows=to_ms,
        load_w=tuple(costs.load),
        frozen=frozenset(frozen),
        moved=moved,
        cost=costs.total(),
        unplaced=tuple(unplaced),
    )


def plan_independently(
    jobs: Iterable[Job], outlook: Outlook, now_ms: int, settings: PlannerSettings | None = None
) -> Plan:
    """What per-home schedulers do: each run goes to its own best window as if no other home
    shifted anything (the peers' approach; for comparison in tests and the benchmark)."""
    settings = settings or PlannerSettings()
    n = outlook.steps
    now_step = max(0, -((outlook.start_ms - now_ms) // STEP_MS))
    alone = _Costs(outlook, settings)
    total = _Costs(outlook, settings)
    windows: dict[JobKey, tuple[Span, ...]] = {}
    by_key = {j.key: j for j in jobs}
    for key in sorted(by_key):
        job = by_key[key]
        first, last = max(job.window_first, now_step, 0), min(job.window_last, n)
        taken = {
            k
            for other, spans in windows.items()
            if other[:3] == key[:3]
            for s, e in spans
            for k in range(s, e)
        }
        found = _best(job, first, last, alone, taken, None)
        if found is not None:
            windows[key] = found[0]
            total.add(found[0], job.expected_w)
    return Plan(
        outlook=outlook,
        now_ms=now_ms,
        jobs=by_key,
        windows={
            k: tuple((outlook.ms(s), outlook.ms(e)) for s, e in v) for k, v in windows.items()
        },
        load_w=tuple(total.load),
        cost=total.total(),
    )
