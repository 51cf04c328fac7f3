"""The planner with the grid's prices: used if and only if they cover the whole outlook, weighed
against local surplus, and named in the window's reason."""

from __future__ import annotations

from pathlib import Path

from hub.prompts.messages import build_prompts, run_reason
from hub.prompts.planner import Outlook, plan, with_prices
from hub.prompts.service import outlook_with_prices
from hub.settlement.price_store import import_prices
from hub.settlement.prices import parse_price_csv
from hub.storage.store import Store
from protocol.clock import ManualClock
from tests.test_planner import START, _job, solar_day

STEPS = 96  # one day of quarter hours from 2026-07-01T00:00Z


def grey_day(net_w: float = 5_000.0) -> Outlook:
    """No surplus anywhere: the same expected import every step."""
    n = STEPS
    return Outlook(START, START, (net_w,) * n, (500.0,) * n, (0.0,) * n, (0.0,) * n)


def night_cheap() -> list[float]:
    """0.30 EUR/kWh all day except 0.05 from 02:00 to 04:00 UTC (steps 8 to 15)."""
    return [0.05 if 8 <= k < 16 else 0.30 for k in range(STEPS)]


def test_constant_prices_change_nothing() -> None:
    o = solar_day(steps=STEPS)
    jobs = [_job(f"h{i}", 0, STEPS, 8, 2000.0) for i in range(6)]
    without = plan(jobs, o, START)
    flat = plan(jobs, with_prices(o, [0.25] * STEPS, "EUR"), START)
    assert flat.windows == without.windows
    assert o.import_weights == (1.0,) * STEPS


def test_a_grey_day_run_goes_to_the_cheap_hours_and_says_so() -> None:
    o = grey_day()
    job = _job("h1", 0, STEPS, 4, 2000.0)  # one hour, any time of the day
    before = plan([job], o, START)
    priced = plan([job], with_prices(o, night_cheap(), "EUR"), START)
    ((s, e),) = priced.windows[job.key]
    assert START + 2 * 3_600_000 <= s < e <= START + 4 * 3_600_000
    assert before.windows[job.key] != priced.windows[job.key]
    cells = list(range((s - START) // 900_000, (e - START) // 900_000))
    assert run_reason(priced, cells) == "cheap grid price then, 0.05 EUR/kWh"
    prompts = build_prompts(priced, "h1", START)
    assert prompts is not None
    assert prompts.appliances[0].reason == "cheap grid price then, 0.05 EUR/kWh"
    # Without prices the same window gives the old reason.
    assert run_reason(before, cells).startswith("least power needed from the grid then")


def test_a_sure_surplus_beats_a_cheap_night_and_says_so() -> None:
    o = solar_day(steps=STEPS)
    job = _job("h1", 0, STEPS, 4, 2000.0)
    priced = plan([job], with_prices(o, night_cheap(), "EUR"), START)
    ((s, _),) = priced.windows[job.key]
    assert START + 9 * 3_600_000 <= s <= START + 15 * 3_600_000  # around noon's surplus
    prompts = build_prompts(priced, "h1", START)
    assert prompts is not None
    assert prompts.appliances[0].reason.startswith("neighbourhood solar surplus expected, ")


def test_the_service_uses_prices_only_when_they_cover_the_outlook(tmp_path: Path) -> None:
    o = grey_day()
    with Store.open(tmp_path / "hub.db", "coop-p", clock=ManualClock(START)) as store:
        assert outlook_with_prices(store, o) is o  # nothing imported
        half = "start,end,price [EUR/kWh]\n2026-07-01T00:00Z,2026-07-01T12:00Z,0.2\n"
        import_prices(store, parse_price_csv(half), "half.csv", START)
        assert outlook_with_prices(store, o) is o  # half the day is not the horizon
        rest = "start,end,price [EUR/MWh]\n2026-07-01T12:00Z,2026-07-02T00:00Z,100\n"
        import_prices(store, parse_price_csv(rest), "rest.csv", START)
        priced = outlook_with_prices(store, o)
        assert priced.currency == "EUR"
        assert priced.price_per_kwh == (0.2,) * 48 + (0.1,) * 48
