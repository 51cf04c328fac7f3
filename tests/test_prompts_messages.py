"""A home's prompt message from a plan (pure): the light, reasons in plain words, benefits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from hub.prompts.messages import MessageSettings, build_prompts, same_advice
from hub.prompts.planner import STEP_MS, HomeAppliances, Job, Outlook, make_jobs, plan
from protocol.codec import decode, encode
from protocol.payloads import Appliance, Prompts
from tests.test_planner import START, scenarios, solar_day

H = 3_600_000
WASHER = Appliance("washing-machine", 1500.0, 120, 6 * 60, 20 * 60, False, 7)


def _plan(now: int, homes: int = 10) -> tuple[Outlook, object]:
    o = solar_day()
    jobs = make_jobs([HomeAppliances(f"home-{i}", "UTC", (WASHER,), 1.0) for i in range(homes)], o)
    return o, plan(jobs, o, now)


def test_the_prompt_names_the_window_the_reason_and_the_benefit() -> None:
    now = START + 5 * H
    _, p = _plan(now)
    prompts = build_prompts(p, "home-0", now)  # type: ignore[arg-type]
    assert prompts is not None
    assert decode(Prompts, encode(prompts)) == prompts  # a valid wire payload
    (washer,) = prompts.appliances
    assert washer.reason.startswith("neighbourhood solar surplus expected, ")
    assert washer.reason.endswith(" kW")
    assert washer.local_wh > 1000 and washer.benefit_wh > 0  # vs starting at 06:00
    assert prompts.valid_until_ms == now + 3 * H
    assert prompts.levels[0].start_ms == now and prompts.levels[-1].end_ms == now + 3 * H
    # In the home's own window its light is green and says why.
    w = washer.windows[0]
    if w.start_ms < prompts.valid_until_ms:
        assert prompts.level_at(w.start_ms) == "green"
        span = next(s for s in prompts.levels if s.start_ms <= w.start_ms < s.end_ms)
        assert span.reason.startswith("your washing machine's window: neighbourhood solar")


def test_the_evening_peak_is_red_and_a_quiet_night_amber() -> None:
    now = START + 17 * H
    _, p = _plan(now, homes=1)
    prompts = build_prompts(p, "home-0", now, MessageSettings(validity_ms=24 * H))  # type: ignore[arg-type]
    assert prompts is not None
    assert prompts.level_at(START + 19 * H) == "red"
    red = next(s for s in prompts.levels if s.level == "red")
    assert red.reason.startswith("neighbourhood peak: ") and "from the grid expected" in red.reason
    assert prompts.level_at(START + 26 * H) == "amber"
    assert prompts.level_at(START + 36 * H) == "green"  # tomorrow noon


def test_a_forecast_that_ends_gives_no_prompts() -> None:
    _, p = _plan(START)
    assert build_prompts(p, "home-0", START + 48 * H) is None  # type: ignore[arg-type]


def test_a_resend_with_the_same_advice_is_recognised() -> None:
    now = START + 5 * H
    _, p = _plan(now)
    first = build_prompts(p, "home-0", now)  # type: ignore[arg-type]
    later = build_prompts(p, "home-0", now + STEP_MS)  # type: ignore[arg-type]
    assert first is not None and later is not None
    assert same_advice(first, later)
    assert not same_advice(None, later)
    _, other = _plan(now, homes=30)  # more homes: the spread changes this home's window
    moved = build_prompts(other, "home-5", now)  # type: ignore[arg-type]
    assert moved is not None
    assert not same_advice(first, moved) or moved.appliances == first.appliances


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_plan_gives_every_home_a_valid_prompt(case: tuple[Outlook, list[Job], int]) -> None:
    o, jobs, now = case
    p = plan(jobs, o, now)
    for home in {j.home for j in jobs}:
        prompts = build_prompts(p, home, now)
        if prompts is None:
            assert now + 15 * 60_000 > o.end_ms or o.end_ms <= now
            continue
        assert decode(Prompts, encode(prompts)) == prompts
