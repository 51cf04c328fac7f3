"""The hub's prompts service on a real SQLite store: plans for consenting homes, publishes each
home's retained prompts when they change, keeps a window about to start, erases a home that
withdraws, learns from meters and answers how much a home shifts; and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hub.cli.main import main as hub_cli
from hub.consent.book import ConsentBook
from hub.prompts.service import PromptsService
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.consent import (
    ConsentGrant,
    Purpose,
    PurposeGrant,
    Resolution,
    next_version,
    nothing_shared,
)
from protocol.payloads import (
    Appliance,
    Appliances,
    Feedback,
    Forecast,
    Prompts,
    Reading,
    ReadingBatch,
    TargetQuantiles,
)
from protocol.quantities import Role
from tests.times import JULY_1_2026_0600_UTC_MS

COOP = "prompt-coop"
H = 3_600_000
DAY = 24 * H
T0 = JULY_1_2026_0600_UTC_MS
WASHER = Appliance("washing-machine", 1000.0, 120, 8 * 60, 20 * 60, False, 7)


def forecast(issued_ms: int, sun_w: float = 60_000.0) -> Forecast:
    start = issued_ms - issued_ms % 900_000
    demand, pv = [], []
    for k in range(192):
        h = ((start + k * 900_000) // 900_000 % 96) / 4
        demand.append(20_000.0)
        pv.append(round(max(0.0, math.sin((h - 6) / 12 * math.pi)) * sun_w, 1))
    zero = [0.0] * 192
    return Forecast(
        COOP, issued_ms, start, 900, "test",
        TargetQuantiles([0.9 * d for d in demand], demand, [1.1 * d for d in demand], "model"),
        TargetQuantiles([0.8 * p for p in pv], pv, [1.2 * p for p in pv], "model"),
        TargetQuantiles(zero, zero, zero, "absent"),
    )  # fmt: skip


def grant(home: str, purposes: tuple[Purpose, ...] = (Purpose.PROMPTS,)) -> ConsentGrant:
    terms = {p.value: PurposeGrant(Resolution.RAW, 30) for p in purposes}
    return next_version(nothing_shared(home), {"grid": terms}, T0 - 10 * DAY)


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        assert retain
        self.messages.append((topic, payload))

    def prompts(self, home: str) -> list[Prompts | None]:
        return [decode(Prompts, p) if p else None for t, p in self.messages
                if t.endswith(f"/{home}/prompts")]  # fmt: skip


class Hub:
    def __init__(self, tmp: Path, homes: int = 3) -> None:
        self.clock = ManualClock(T0)
        self.store = Store.open(tmp / "hub.db", COOP, clock=self.clock)
        self.book = ConsentBook(self.store)
        self.published = Published()
        self.service = PromptsService(
            self.store, self.book, COOP, self.clock, publish=self.published
        )
        self.homes = [f"home-{i}" for i in range(homes)]
        for home in self.homes:
            self.book.record(grant(home), T0 - 10 * DAY)
            self.service.on_appliances(
                home, Appliances(home, T0, "Europe/Amsterdam", [WASHER], "g1")
            )

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    h = Hub(tmp_path)
    yield h
    h.close()


def test_every_consenting_home_gets_its_prompts_and_unchanged_ones_are_not_resent(
    hub: Hub,
) -> None:
    assert hub.service.replan() == {}  # no forecast yet: nothing to say
    hub.service.on_forecast(forecast(T0))
    out = hub.service.replan()
    assert set(out) == set(hub.homes)
    for home in hub.homes:
        (p,) = hub.published.prompts(home)
        assert p is not None and p.appliances[0].appliance == "washing-machine"
        w = p.appliances[0].windows[0]
        # 08:00 to 20:00 in Amsterdam is 06:00 to 18:00 UTC; a two-hour run.
        assert w.start_ms >= T0 and w.end_ms <= T0 + 12 * H and w.end_ms - w.start_ms == 2 * H
    # The three washers are spread, not all sent to noon.
    starts = {hub.published.prompts(h)[0].appliances[0].windows[0].start_ms for h in hub.homes}  # type: ignore[union-attr]
    assert len(starts) > 1
    hub.clock.advance(15 * 60_000)
    hub.service.replan()
    assert len(hub.published.messages) == 3  # nothing changed: nothing re-sent
    hub.clock.advance(90 * 60_000)  # half-way to expiring: refreshed
    hub.service.replan()
    assert len(hub.published.messages) == 6


def test_a_window_about_to_start_survives_a_new_forecast(hub: Hub) -> None:
    hub.service.on_forecast(forecast(T0))
    first = {h: p.appliances[0].windows for h, p in hub.service.replan().items()}
    soon = min(first.values(), key=lambda w: w[0].start_ms)[0].start_ms
    hub.clock.set(soon - H)  # within the freeze
    hub.service.on_forecast(forecast(soon - H, sun_w=30_000.0))
    again = hub.service.replan()
    for home, windows in first.items():
        if windows[0].start_ms < hub.clock.now_ms() + 2 * H:
            assert again[home].appliances[0].windows == windows


def test_a_home_that_withdraws_prompts_consent_is_erased_and_cleared(hub: Hub) -> None:
    hub.service.on_forecast(forecast(T0))
    hub.service.replan()
    hub.service.on_feedback("home-0", Feedback("home-0", T0, "p1", "accepted", "washing-machine",
                                               T0 + H))  # fmt: skip
    g = grant("home-0")
    hub.book.record(next_version(g, {"grid": {"forecast": PurposeGrant(Resolution.RAW, 30)}},
                                 T0 + 1), T0 + 1)  # fmt: skip
    out = hub.service.replan()
    assert "home-0" not in out
    assert hub.published.messages[-1] != ("", b"")
    assert hub.published.prompts("home-0")[-1] is None  # the retained prompts cleared
    assert "home-0" not in hub.service.db.appliances()
    assert hub.service.db.feedback_count("home-0") == 0
    assert all(r.key[0] != "home-0" for r in hub.service.db.runs())
    # Feedback without consent is not kept.
    hub.service.on_feedback("home-0", Feedback("home-0", T0, "p1", "accepted"))
    assert hub.service.db.feedback_count("home-0") == 0


def test_an_empty_appliance_list_withdraws_them(hub: Hub) -> None:
    hub.service.on_forecast(forecast(T0))
    hub.service.replan()
    hub.service.on_appliances("home-1", Appliances("home-1", T0 + 1, "Europe/Amsterdam", []))
    assert "home-1" not in hub.service.db.appliances()
    assert hub.published.prompts("home-1")[-1] is None
    assert "home-1" not in hub.service.replan()


def test_an_unknown_timezone_is_not_planned(hub: Hub) -> None:
    hub.service.on_appliances("home-2", Appliances("home-2", T0, "Mars/Olympus", [WASHER], "g1"))
    hub.service.on_forecast(forecast(T0))
    assert "home-2" in hub.service.replan()  # its earlier, valid declaration still stands


def _grid_readings(home: str, start_ms: int, days: int, extra: dict[int, float]) -> ReadingBatch:
    """A grid meter read every 15 minutes: 400 W all day, plus ``extra`` W in given steps."""
    readings, imp, seq = [], 5000.0, 1
    for k in range(days * 96 + 1):
        t = start_ms + k * 900_000
        readings.append(Reading("grid-meter", seq, t, Role.GRID, "g1",
                                {"energy_import_wh": round(imp, 3)}))  # fmt: skip
        imp += (400.0 + extra.get(t, 0.0)) * 0.25
        seq += 1
    return ReadingBatch(home, start_ms, readings)


def test_the_hub_learns_from_the_meters_who_shifts_and_plans_with_it(hub: Hub) -> None:
    hub.service.on_forecast(forecast(T0))
    out = hub.service.replan()
    windows = {h: p.appliances[0].windows[0] for h, p in out.items()}
    # home-0 runs its washer (1 kW for two hours) in its window; home-1 does not run it then.
    w = windows["home-0"]
    extra = {t: 1000.0 for t in range(w.start_ms, w.end_ms, 900_000)}
    start = T0 - 4 * DAY
    batches = [("home-0", _grid_readings("home-0", start, 6, extra)),
               ("home-1", _grid_readings("home-1", start, 6, {}))]  # fmt: skip
    hub.store.insert_batches(batches, T0)
    # home-2 has no meter data, but answered.
    hub.service.on_feedback("home-2", Feedback("home-2", T0, "p", "done", "washing-machine",
                                               windows["home-2"].start_ms))  # fmt: skip
    hub.clock.set(max(x.end_ms for x in windows.values()) + 2 * H)
    judged = hub.service.learn()
    assert judged == 3
    shifts = {h: e.shift for h, e in hub.service.db.shifts().items()}
    assert shifts["home-0"] > 0.5 > shifts["home-1"]
    assert shifts["home-2"] > 0.5
    runs = {r.key[0]: r for r in hub.service.db.runs() if r.evaluated_ms is not None}
    assert runs["home-0"].metered == pytest.approx(1.0)
    assert runs["home-1"].metered == pytest.approx(0.0)
    assert runs["home-2"].metered is None and runs["home-2"].outcome == 1.0
    # The planner now counts home-0's runs more than home-1's.
    hub.service.replan()
    plan = hub.service.last_plan
    assert plan is not None
    weight = {k[0]: j.weight for k, j in plan.jobs.items()}
    assert weight["home-0"] > weight["home-1"]
    assert hub.service.learn() == 0  # judged once


def test_the_prompts_cli_shows_homes_and_plans_a_dry_run(hub: Hub, tmp_path: Path) -> None:
    hub.service.on_forecast(forecast(T0))
    hub.service.replan()
    db = str(tmp_path / "hub.db")
    runner = CliRunner()
    shown = runner.invoke(hub_cli, ["prompts", "show", "--db", db, "--json"])
    assert shown.exit_code == 0, shown.output
    homes = json.loads(shown.output)["homes"]
    assert [h["home"] for h in homes] == hub.homes
    assert homes[0]["appliances"] == ["washing-machine"] and homes[0]["shift"] == 0.5
    text = runner.invoke(hub_cli, ["prompts", "show", "--db", db])
    assert "home-0" in text.output and "washing-machine" in text.output
    planned = runner.invoke(hub_cli, ["prompts", "plan", "--db", db, "--at",
                                      "2026-07-01T06:30Z", "--json"])  # fmt: skip
    assert planned.exit_code == 0, planned.output
    lines = [decode(Prompts, line.encode()) for line in planned.output.splitlines()]
    assert {p.home for p in lines} == set(hub.homes)
    human = runner.invoke(hub_cli, ["prompts", "plan", "--db", db, "--at", "2026-07-01T06:30Z"])
    assert "washing-machine" in human.output and "solar surplus expected" in human.output
    f = tmp_path / "forecast.json"
    f.write_bytes(encode(forecast(T0)))
    assert runner.invoke(hub_cli, ["prompts", "plan", "--db", db, "--forecast", str(f),
                                   "--at", "2026-07-01T06:30Z"]).exit_code == 0  # fmt: skip
    bad = runner.invoke(hub_cli, ["prompts", "plan", "--db", db, "--at", "yesterday"])
    assert bad.exit_code == 2 and "Error: --at" in bad.output
    late = runner.invoke(hub_cli, ["prompts", "plan", "--db", db, "--at", "2027-01-01T00:00Z"])
    assert late.exit_code == 2 and "before --at" in late.output
    missing = runner.invoke(hub_cli, ["prompts", "show", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2
