"""A home's prompt message from a plan: the traffic light ahead, each appliance's next window, why
in plain words, and what it is expected to bring. Pure.

The light is per home. Green (use now) while one of the home's own windows runs, or where the
neighbourhood's surplus is so likely, after every planned run, that more use is welcome; red
(avoid) near the horizon's highest expected grid import; amber otherwise. A green that every
home saw at once would herd them all into the same hour; the plan's windows are spread, and the
surplus-green is what is left after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hub.prompts.planner import STEP_H, STEP_MS, JobKey, Plan, Span, import_chance
from protocol.payloads import AppliancePrompt, Level, LevelSpan, Prompts, PromptWindow

GREEN_CHANCE: Final = 0.2  # at most this chance of drawing from the grid: green for everyone
RED_CHANCE: Final = 0.8  # at least this chance of drawing from the grid ...
RED_SHARE: Final = 0.75  # ... and this share of the next day's highest expected import: red
MIN_SURPLUS_W: Final = 100.0  # below this a "surplus" is not worth a word
DAY_STEPS: Final = 96


@dataclass(frozen=True, slots=True)
class MessageSettings:
    validity_ms: int = 3 * 3_600_000  # how long a prompt stays good without the hub

    def __post_init__(self) -> None:
        if not 15 * 60_000 <= self.validity_ms <= 24 * 3_600_000:
            raise ValueError("prompts stay valid for 15 minutes to 24 hours")


def _kw(w: float) -> str:
    return f"{w / 1000:.1f} kW"


def _inside(plan: Plan, spans: tuple[Span, ...]) -> list[int]:
    """The outlook's steps a run's spans cover."""
    o = plan.outlook
    return [k for s, e in spans for k in range(max(0, o.step_of(s)), min(o.steps, o.step_of(e)))]


def _src(plan: Plan, cells: list[int]) -> str:
    o = plan.outlook
    pv = sum(o.pv_w[k] for k in cells)
    wind = sum(o.wind_w[k] for k in cells)
    if pv + wind <= 0:
        return "local"
    share = pv / (pv + wind)
    return "solar" if share >= 0.7 else "wind" if share <= 0.3 else "solar and wind"


def _price(value: float, currency: str) -> str:
    return f"{value:.2f} {currency}/kWh"


def run_reason(plan: Plan, cells: list[int]) -> str:
    """Why a window, in plain words, from the forecast before any run was placed.

    A window with a neighbourhood surplus is there for the surplus, whatever the grid's price.
    Otherwise, with prices, a window whose grid price is below the horizon's mean is there for
    the price, and says it; else for the least power needed from the grid.
    """
    o = plan.outlook
    surplus = -sum(o.net_w[k] for k in cells) / len(cells)
    if surplus >= MIN_SURPLUS_W:
        return f"neighbourhood {_src(plan, cells)} surplus expected, {_kw(surplus)}"
    prices = o.price_per_kwh
    if prices is not None:
        here = sum(prices[k] for k in cells) / len(cells)
        if here < sum(prices) / len(prices):
            return f"cheap grid price then, {_price(here, o.currency)}"
    return f"least power needed from the grid then, {_kw(-surplus)} expected"


def local_wh(plan: Plan, key: JobKey, spans: tuple[Span, ...]) -> float:
    """Energy of the run expected to come from the neighbourhood's own generation (Wh)."""
    o = plan.outlook
    job = plan.jobs[key]
    return sum(
        job.power_w * STEP_H * (1.0 - import_chance(o.net_w[k], o.sigma_w[k], plan.load_w[k]))
        for k in _inside(plan, spans)
    )


def usual_local_wh(plan: Plan, key: JobKey) -> float:
    """The same, had the run started as early as it still can (its earliest start, or now):
    what the benefit is measured from."""
    o = plan.outlook
    job = plan.jobs[key]
    first = max(0, job.window_first, -((o.start_ms - plan.now_ms) // STEP_MS))
    cells = range(first, min(o.steps, first + job.steps))
    return sum(
        job.power_w
        * STEP_H
        * (1.0 - import_chance(o.net_w[k], o.sigma_w[k], plan.load_w[k] + job.expected_w))
        for k in cells
    )


def _words(appliance: str) -> str:
    return appliance.replace("-", " ")


def step_level(plan: Plan, k: int, peak_w: float, own: str | None) -> tuple[Level, str]:
    """The light at step ``k`` and why; ``own``: the home's appliance whose window holds it."""
    o = plan.outlook
    mu, sigma, load = o.net_w[k], o.sigma_w[k], plan.load_w[k]
    if own is not None:
        return "green", f"your {_words(own)}'s window: " + run_reason(plan, [k])
    chance = import_chance(mu, sigma, load)
    left = -(mu + load)
    if chance <= GREEN_CHANCE and left >= MIN_SURPLUS_W:
        return "green", f"neighbourhood {_src(plan, [k])} surplus expected, {_kw(left)}"
    if chance >= RED_CHANCE and peak_w > 0 and mu + load >= RED_SHARE * peak_w:
        return "red", f"neighbourhood peak: {_kw(mu + load)} from the grid expected"
    if left >= MIN_SURPLUS_W:
        return "amber", f"small neighbourhood surplus expected, {_kw(left)}"
    return "amber", "no local surplus expected now"


def next_runs(plan: Plan, home: str, now_ms: int) -> dict[str, JobKey]:
    """Per appliance of ``home``, its next planned run that has not ended."""
    out: dict[str, JobKey] = {}
    for key, spans in plan.runs_by_home.get(home, ()):
        if spans[-1][1] > now_ms and key[1] not in out:
            out[key[1]] = key
    return out


def build_prompts(
    plan: Plan, home: str, now_ms: int, settings: MessageSettings | None = None
) -> Prompts | None:
    """The home's prompts from ``now_ms``; None when the outlook ends too soon to say anything."""
    settings = settings or MessageSettings()
    o = plan.outlook
    valid_until = min(now_ms + settings.validity_ms, o.end_ms)
    if valid_until <= now_ms:
        return None
    runs = next_runs(plan, home, now_ms)
    appliances = []
    for name in sorted(runs):
        key = runs[name]
        spans = plan.windows[key]
        local = local_wh(plan, key, spans)
        cells = _inside(plan, spans)
        appliances.append(
            AppliancePrompt(
                appliance=name,
                windows=[PromptWindow(s, e) for s, e in spans],
                reason=run_reason(plan, cells) if cells else "planned with an earlier forecast",
                local_wh=round(local, 1),
                benefit_wh=round(local - usual_local_wh(plan, key), 1),
            )
        )
    first = max(0, o.step_of(now_ms))
    horizon = range(first, min(o.steps, first + DAY_STEPS))
    peak = max((o.net_w[k] + plan.load_w[k] for k in horizon), default=0.0)
    own: dict[int, str] = {}
    for name, key in runs.items():
        for s, e in plan.windows[key]:
            for k in range(o.step_of(s), o.step_of(e)):
                own.setdefault(k, name)
    levels: list[LevelSpan] = []
    k = first
    while True:
        start = max(now_ms, o.ms(k)) if levels else now_ms
        if start >= valid_until:
            break
        end = min(valid_until, o.ms(k + 1))
        level, reason = step_level(plan, min(k, o.steps - 1), peak, own.get(k))
        if levels and levels[-1].level == level and levels[-1].reason == reason:
            levels[-1] = LevelSpan(levels[-1].start_ms, end, level, reason)
        else:
            levels.append(LevelSpan(start, end, level, reason))
        k += 1
    return Prompts(
        home=home,
        prompt=f"p{now_ms}",
        issued_ms=now_ms,
        valid_until_ms=valid_until,
        level=levels[0].level,
        reason=levels[0].reason,
        levels=levels,
        appliances=appliances,
        benefit_wh=round(sum(a.benefit_wh for a in appliances), 1),
    )


def same_advice(old: Prompts | None, new: Prompts) -> bool:
    """Whether ``new`` tells the home nothing ``old`` did not: the same windows, and the same
    light at every moment ``old`` covers from ``new``'s issue on. (The hub re-sends unchanged
    advice only to extend its validity.)"""
    if old is None:
        return False
    windows = [(a.appliance, a.windows) for a in old.appliances]
    if windows != [(a.appliance, a.windows) for a in new.appliances]:
        return False
    moments = {new.issued_ms} | {
        s.start_ms for p in (old, new) for s in p.levels if s.start_ms >= new.issued_ms
    }
    return all(old.level_at(t) == new.level_at(t) for t in moments if t < old.valid_until_ms)
