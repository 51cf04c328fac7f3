"""Benchmark: a neighbourhood simulated day by day with households that follow prompts with a
given probability; prints self-consumption, self-sufficiency, peak grid import and the
peak-to-average ratio for no prompts, per-home greedy windows and coopwatt's planner.

    PYTHONPATH=. .venv/bin/python bench/prompts_neighbourhood.py [--homes 60] [--days 14]
        [--compliance 0.5] [--seed 1]

Households, PV and wind come from the simulator's profiles (sim/profiles.py) at 15-minute steps,
in July at 52° N. Each home also declares flexible appliances (a washing machine and a
dishwasher everywhere; an immersion heater in 40 % of homes, an EV charged at home during the
day in 30 %) that it runs, unprompted, at its own habitual times. With prompts, a home follows
each planned run with its own probability (drawn around ``--compliance``) and otherwise keeps
its habit. The same random draws (which appliances run which day, who follows, the habits, the
forecast errors) are used in every scenario.

- **none**: every run at the household's habitual time;
- **greedy**: each home gets its own best window from the community forecast, as if no other
  home shifted (the peers' approach): ``hub.prompts.planner.plan_independently``;
- **coopwatt**: ``hub.prompts.planner.plan`` for the whole neighbourhood, re-planned every 3
  hours with a fresher forecast, counting each home with the shift learnt from the days before
  (``hub.prompts.learning``).

The forecast the planners see is the simulated truth with errors: a per-day error on PV
(σ 15 %), wind (σ 25 %) and demand (σ 5 %), shrinking for the next few hours, with P10/P90
±30 % (PV, wind) and ±10 % (demand) around the P50. The forecast's demand is the households'
other use; the flexible appliances are what the planners place on top of it.

Shifted load: the power of the runs that moved because of a prompt; its peak is the herding.
A home that follows runs in the window its run had in the last plan before that window began
(a later plan cannot move a run that has already started or run).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hub.prompts.learning import ShiftEstimate
from hub.prompts.planner import (
    STEP_MS,
    HomeAppliances,
    JobKey,
    Outlook,
    PlannerSettings,
    Span,
    make_jobs,
    plan,
    plan_independently,
)
from protocol.payloads import Appliance
from sim.profiles import household_demand_w, pv_power_w, wind_power_w, wind_speed_m_s

ZONE = ZoneInfo("Europe/Amsterdam")
LAT, LON = 52.0, 5.0
H = 3_600_000
DAY = 24 * H
STEPS_PER_DAY = 96
FIRST_DAY = date(2026, 7, 6)
PLAN_EVERY_H = 3
PV_SHARE = 0.4  # of homes with 4 kWp on the roof
TURBINES_PER_HOME = 0.25  # 1.5 kW community turbines
HORIZON_STEPS = 2 * STEPS_PER_DAY

WASHER = Appliance("washing-machine", 1000.0, 120, 8 * 60, 22 * 60, False, 4)
DISHWASHER = Appliance("dishwasher", 1200.0, 150, 8 * 60, 23 * 60, False, 6)
IMMERSION = Appliance("immersion-heater", 2500.0, 120, 6 * 60, 22 * 60, True, 7)
EV = Appliance("ev-charger", 9000.0, 240, 9 * 60, 17 * 60, True, 3)
# The hour (local) a household runs each appliance unprompted: (earliest, latest) to draw from.
HABITS = {
    "washing-machine": (8.0, 10.0),
    "dishwasher": (19.5, 21.0),
    "immersion-heater": (6.0, 7.0),
    "ev-charger": (9.0, 9.5),
}


@dataclass
class Home:
    name: str
    seed: int
    pv_w: float
    appliances: tuple[Appliance, ...]
    follows: float  # the household's true chance of following a prompt
    habit_h: dict[str, float] = field(default_factory=dict)


@dataclass
class World:
    homes: list[Home]
    start_ms: int
    steps: int
    demand_w: list[float]  # the households' other use, community total
    gen_w: list[float]  # PV + wind, community total
    pv_w: list[float]
    wind_w: list[float]
    runs: dict[JobKey, bool]  # does this run happen at all that day
    follow_draw: dict[JobKey, float]  # uniform draw: follows when below the home's chance
    jitter_h: dict[JobKey, float]
    day_error: dict[tuple[str, int], float]


def local_midnight_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), ZONE).timestamp() * 1000)


def build_world(
    n_homes: int, days: int, compliance: float, seed: int, pv_share: float, turbines: float
) -> World:
    rng = random.Random(seed)
    homes = []
    for i in range(n_homes):
        appliances = [WASHER, DISHWASHER]
        if rng.random() < 0.4:
            appliances.append(IMMERSION)
        if rng.random() < 0.3:
            appliances.append(EV)
        follows = min(0.95, max(0.05, rng.gauss(compliance, 0.2)))
        home = Home(f"home-{i}", 1000 + i, 4000.0 if rng.random() < pv_share else 0.0,
                    tuple(appliances), follows)  # fmt: skip
        home.habit_h = {a.name: rng.uniform(*HABITS[a.name]) for a in appliances}
        homes.append(home)
    start = local_midnight_ms(FIRST_DAY)
    steps = days * STEPS_PER_DAY
    demand, pv, wind = [0.0] * steps, [0.0] * steps, [0.0] * steps
    n_turbines = round(n_homes * turbines)
    for k in range(steps):
        t = start + k * STEP_MS + STEP_MS // 2
        for h in homes:
            demand[k] += household_demand_w(h.seed, t, LON)
            if h.pv_w:
                pv[k] += pv_power_w(7, t, LAT, LON, h.pv_w)  # one sky over the street
        wind[k] = n_turbines * wind_power_w(wind_speed_m_s(7, t), 1500.0)
    runs: dict[JobKey, bool] = {}
    follow: dict[JobKey, float] = {}
    jitter: dict[JobKey, float] = {}
    for d in range(-1, days + 1):
        day = (FIRST_DAY + timedelta(d)).isoformat()
        for h in homes:
            for a in h.appliances:
                n = -(-a.runs_per_week // 7)
                for r in range(n):
                    key = (h.name, a.name, day, r)
                    runs[key] = rng.random() < a.runs_per_week / 7 / n
                    follow[key] = rng.random()
                    jitter[key] = rng.uniform(-0.5, 0.5)
    errors = {(kind, d): rng.gauss(0.0, sigma) for d in range(days + 2)
              for kind, sigma in (("pv", 0.15), ("wind", 0.25), ("demand", 0.05))}  # fmt: skip
    gen = [p + w for p, w in zip(pv, wind, strict=True)]
    return World(homes, start, steps, demand, gen, pv, wind, runs, follow, jitter, errors)


def outlook(world: World, issued_ms: int) -> Outlook:
    """The forecast at ``issued_ms``: the truth with errors, for two days from that step."""
    first = (issued_ms - world.start_ms) // STEP_MS
    net, sigma, pv_out, wind_out = [], [], [], []
    for i in range(HORIZON_STEPS):
        k = first + i
        if k >= world.steps:
            break
        lead = min(1.0, i / 24)  # errors grow over the first six hours
        day = k // STEPS_PER_DAY
        pv = world.pv_w[k] * max(0.0, 1.0 + lead * world.day_error[("pv", day)])
        wind = world.wind_w[k] * max(0.0, 1.0 + lead * world.day_error[("wind", day)])
        demand = world.demand_w[k] * (1.0 + lead * world.day_error[("demand", day)])
        spread = math.hypot(0.1 * demand, 0.3 * (pv + wind)) / 1.2816
        net.append(demand - pv - wind)
        sigma.append(max(1.0, spread))
        pv_out.append(pv)
        wind_out.append(wind)
    return Outlook(world.start_ms + first * STEP_MS, issued_ms, tuple(net), tuple(sigma),
                   tuple(pv_out), tuple(wind_out))  # fmt: skip


def habit_spans(world: World, home: Home, key: JobKey) -> tuple[Span, ...]:
    a = next(x for x in home.appliances if x.name == key[1])
    day = date.fromisoformat(key[2])
    start_h = home.habit_h[a.name] + world.jitter_h[key] + key[3] * 6.0
    t = local_midnight_ms(day) + round(start_h * 4) * STEP_MS
    return ((t, t + -(-a.duration_min // 15) * STEP_MS),)


@dataclass
class Outcome:
    load_w: list[float]
    shifted_w: list[float]
    flexible_w: list[float]
    moved_in_freeze: int = 0
    moves: int = 0
    planned: int = 0
    plan_s: float = 0.0
    learnt: dict[str, float] = field(default_factory=dict)


def simulate(world: World, scenario: str, settings: PlannerSettings) -> Outcome:
    homes = {h.name: h for h in world.homes}
    last: dict[JobKey, tuple[Span, ...]] = {}
    estimates = {h.name: ShiftEstimate() for h in world.homes}
    out = Outcome([0.0] * world.steps, [0.0] * world.steps, [0.0] * world.steps)
    previous: dict[JobKey, tuple[Span, ...]] = {}
    end = world.start_ms + world.steps * STEP_MS
    t = world.start_ms
    judged_until = world.start_ms
    while scenario != "none" and t < end:
        o = outlook(world, t)
        if scenario == "greedy":
            inputs = [HomeAppliances(h.name, "Europe/Amsterdam", h.appliances, 1.0)
                      for h in world.homes]  # fmt: skip
            began = time.perf_counter()
            p = plan_independently(make_jobs(inputs, o), o, t, settings)
        else:
            # Learn from the runs whose day is over (perfect meters: ran in the window or not).
            day_end = t - (t - world.start_ms) % DAY
            if day_end > judged_until:
                for key, spans in last.items():
                    if judged_until <= spans[0][0] < day_end:
                        ran = world.runs.get(key, False)
                        followed = ran and world.follow_draw[key] < homes[key[0]].follows
                        chance = next(a for a in homes[key[0]].appliances if a.name == key[1])
                        n = -(-chance.runs_per_week // 7)
                        estimates[key[0]] = estimates[key[0]].observe(
                            1.0 if followed else 0.0, chance.runs_per_week / 7 / n, day_end
                        )
                judged_until = day_end
            inputs = [
                HomeAppliances(
                    h.name, "Europe/Amsterdam", h.appliances, estimates[h.name].faded(t).shift
                )
                for h in world.homes
            ]
            began = time.perf_counter()
            p = plan(make_jobs(inputs, o), o, t, previous, settings)
            for key, spans in previous.items():
                new = p.windows.get(key)
                if new is not None and new != spans:
                    out.moves += 1
                    if spans[0][0] < t + settings.freeze_ms:
                        out.moved_in_freeze += 1
            previous = dict(p.windows)
        out.plan_s += time.perf_counter() - began
        for key, spans in p.windows.items():
            # Not started: this plan is the latest word on it. A run whose window has begun is
            # what the household acted on; a later plan that places it again (the per-home
            # planner keeps no record of runs done) must not move it after the fact.
            if spans[0][0] >= t and not (key in last and last[key][0][0] < t):
                last[key] = spans
        t += PLAN_EVERY_H * H
    out.planned = len(last)
    for key, happens in world.runs.items():
        if not happens:
            continue
        home = homes[key[0]]
        a = next(x for x in home.appliances if x.name == key[1])
        follows = world.follow_draw[key] < home.follows
        shifted = scenario != "none" and follows and key in last
        spans = last[key] if shifted else habit_spans(world, home, key)
        power = a.energy_wh / (-(-a.duration_min // 15) * 0.25)
        for s, e in spans:
            for k in range((s - world.start_ms) // STEP_MS, (e - world.start_ms) // STEP_MS):
                if 0 <= k < world.steps:
                    out.load_w[k] += power
                    out.flexible_w[k] += power
                    if shifted:
                        out.shifted_w[k] += power
    for k in range(world.steps):
        out.load_w[k] += world.demand_w[k]
    out.learnt = {h: e.shift for h, e in estimates.items()}
    return out


def metrics(world: World, out: Outcome) -> dict[str, float]:
    load, gen = out.load_w, world.gen_w
    local = sum(min(a, b) for a, b in zip(load, gen, strict=True))
    imports = [max(0.0, a - b) for a, b in zip(load, gen, strict=True)]
    return {
        "self_consumption": local / sum(gen),
        "self_sufficiency": local / sum(load),
        "peak_import_kw": max(imports) / 1000,
        "par": max(imports) / (sum(imports) / len(imports)),
        "shifted_peak_kw": max(out.shifted_w) / 1000,
        "flexible_peak_kw": max(out.flexible_w) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=60)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--compliance", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pv-share", type=float, default=PV_SHARE, help="Share of homes with 4 kWp of PV."
    )
    parser.add_argument(
        "--turbines",
        type=float,
        default=TURBINES_PER_HOME,
        help="1.5 kW community wind turbines per home.",
    )
    parser.add_argument("--spread-weight", type=float, default=PlannerSettings().spread_weight)
    parser.add_argument("--peak-weight", type=float, default=PlannerSettings().peak_weight)
    args = parser.parse_args()
    world = build_world(
        args.homes, args.days, args.compliance, args.seed, args.pv_share, args.turbines
    )
    settings = PlannerSettings(spread_weight=args.spread_weight, peak_weight=args.peak_weight)
    gen_kwh = sum(world.gen_w) * 0.25 / 1000
    demand_kwh = sum(world.demand_w) * 0.25 / 1000
    print(f"{args.homes} homes, {args.days} days from {FIRST_DAY} (52° N), compliance "
          f"{args.compliance:.0%} on average; PV on {args.pv_share:.0%} of homes, "
          f"{round(args.homes * args.turbines)} small turbines: local generation "
          f"{gen_kwh:,.0f} kWh, other use {demand_kwh:,.0f} kWh")  # fmt: skip
    results = {}
    for scenario in ("none", "greedy", "coopwatt"):
        out = simulate(world, scenario, settings)
        results[scenario] = (metrics(world, out), out)
    flex_kwh = sum(results["none"][1].flexible_w) * 0.25 / 1000
    print(f"flexible appliance energy {flex_kwh:,.0f} kWh\n")
    print(f"{'':<10} {'self-cons.':>10} {'self-suff.':>10} {'peak import':>12} {'PAR':>6} "
          f"{'shifted peak':>13} {'flex. peak':>11} {'plan time':>10}")  # fmt: skip
    for name, (m, out) in results.items():
        print(f"{name:<10} {m['self_consumption']:>10.1%} {m['self_sufficiency']:>10.1%} "
              f"{m['peak_import_kw']:>9.1f} kW {m['par']:>6.2f} {m['shifted_peak_kw']:>10.1f} kW"
              f" {m['flexible_peak_kw']:>8.1f} kW {out.plan_s:>9.2f}s")  # fmt: skip
    none, greedy, coop = (results[k][0] for k in ("none", "greedy", "coopwatt"))
    gain = (coop["self_consumption"] - none["self_consumption"]) * 100
    below = 1 - coop["shifted_peak_kw"] / greedy["shifted_peak_kw"]
    print()
    print(f"self-consumption over no prompts: {gain:+.1f} points (goal: +10)")
    print(f"shifted-load peak below per-home greedy: {below:.0%} (goal: 30 %)")
    out = results["coopwatt"][1]
    print(
        f"re-plans every {PLAN_EVERY_H} h: {out.moves} window moves for {out.planned} runs, "
        f"{out.moved_in_freeze} of them within {settings.freeze_ms // H} h of the start"
    )
    homes = world.homes
    err = sum(abs(out.learnt[h.name] - h.follows) for h in homes) / len(homes)
    mean_true = sum(h.follows for h in homes) / len(homes)
    mean_learnt = sum(out.learnt[h.name] for h in homes) / len(homes)
    xs = [h.follows for h in homes]
    ys = [out.learnt[h.name] for h in homes]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    corr = cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    print(f"learnt shift after {args.days} days: mean {mean_learnt:.2f} (true {mean_true:.2f}), "
          f"mean error {err:.2f}, correlation with the true habit {corr:.2f}")  # fmt: skip
    start = datetime.fromtimestamp(world.start_ms / 1000, UTC)
    print(f"(simulated from {start:%Y-%m-%d %H:%MZ}; seed {args.seed})")


if __name__ == "__main__":
    main()
