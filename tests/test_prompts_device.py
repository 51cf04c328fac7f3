"""Prompts on the device: the light follows the prompt's level course, old prompts expire on a
ManualClock whatever the hub does, a press or hold becomes feedback, and the console and OLED
views show it in local time."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy

from agent.display import BoardView, ConsoleView, OledView, RunView, render_lines
from agent.indicator import IndicatorConfig
from agent.prompts import HomePrompts, PromptBoard
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.consent import Purpose, PurposeGrant, Resolution, next_version, nothing_shared
from protocol.payloads import (
    AppliancePrompt,
    Appliances,
    Feedback,
    LevelSpan,
    Prompts,
    PromptWindow,
)
from tests.times import JULY_1_2026_1000_UTC_MS

H = 3_600_000
T0 = JULY_1_2026_1000_UTC_MS  # 12:00 in Amsterdam
AMS = ZoneInfo("Europe/Amsterdam")


def prompts(issued: int = T0, *, washer_at: int = T0 + H, valid_h: int = 3) -> Prompts:
    """Amber, then green in the washer's 90-minute window, then red until it expires."""
    until = issued + valid_h * H
    washer_end = washer_at + 90 * 60_000
    levels = [
        LevelSpan(issued, washer_at, "amber", "no local surplus expected now"),
        LevelSpan(washer_at, min(washer_end, until), "green", "your washing machine's window"),
    ]
    if washer_end < until:
        levels.append(LevelSpan(washer_end, until, "red", "neighbourhood peak"))
    window = PromptWindow(washer_at, washer_end)
    reason = "neighbourhood solar surplus expected, 3.1 kW"
    return Prompts(
        home="home-1",
        prompt=f"p{issued}",
        issued_ms=issued,
        valid_until_ms=until,
        level="amber",
        reason="no local surplus expected now",
        levels=levels,
        appliances=[AppliancePrompt("washing-machine", [window], reason, 900.0, 600.0)],
        benefit_wh=600.0,
    )


def test_the_light_follows_the_level_course_and_expires() -> None:
    board = PromptBoard("home-1")
    assert board.take(prompts(), T0)
    assert board.view(T0).level == "amber"
    assert board.view(T0 + H).level == "green"
    assert board.view(T0 + 3 * H - 1).level == "red"
    # Nothing from the hub since: at valid_until the advice is gone, not stale.
    gone = board.view(T0 + 3 * H)
    assert gone.level is None and gone.expired and gone.runs == ()


def test_only_news_blinks_and_an_older_copy_is_ignored() -> None:
    board = PromptBoard("home-1")
    assert board.take(prompts(), T0)
    assert not board.take(prompts(T0 + 60_000), T0 + 60_000)  # same windows, re-issued
    assert not board.take(prompts(T0), T0 + 60_000)  # the older retained copy
    assert board.prompts is not None and board.prompts.issued_ms == T0 + 60_000
    assert board.take(prompts(T0 + 120_000, washer_at=T0 + 2 * H), T0 + 120_000)
    assert not board.take(prompts(T0 - H, washer_at=T0 - H // 2, valid_h=2), T0)  # older still
    assert board.take(None, T0) is False and board.prompts is None  # withdrawn


def test_a_press_accepts_the_next_window_and_in_it_says_it_runs() -> None:
    board = PromptBoard("home-1")
    board.take(prompts(), T0)
    fb = board.press(T0 + 60_000)
    assert fb == Feedback("home-1", T0 + 60_000, f"p{T0}", "accepted", "washing-machine", T0 + H)
    done = board.press(T0 + H + 60_000)
    assert done is not None and done.action == "done"
    assert board.view(T0 + H + 60_000).runs[0].answer == "done"
    assert board.press(T0 + 4 * H) is None  # expired: nothing to answer


def test_a_hold_snoozes_until_news() -> None:
    board = PromptBoard("home-1")
    board.take(prompts(), T0)
    fb = board.hold(T0, 30 * 60_000)
    assert fb is not None and fb.action == "snoozed" and fb.appliance == "washing-machine"
    view = board.view(T0 + 60_000)
    assert view.level is None and view.snoozed_until_ms == T0 + 30 * 60_000
    assert board.view(T0 + 30 * 60_000).level == "amber"
    board.hold(T0 + 31 * 60_000, 30 * 60_000)
    assert board.take(prompts(T0 + 32 * 60_000, washer_at=T0 + 2 * H), T0 + 32 * 60_000)
    assert board.view(T0 + 33 * 60_000).level == "amber"  # news ends the snooze


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []

    def __call__(self, topic: str, data: bytes, retain: bool) -> None:
        self.messages.append((topic, data, retain))


def _grant(prompts_too: bool) -> Any:
    purposes = {Purpose.PROMPTS.value: PurposeGrant(Resolution.MIN15, 30)} if prompts_too else {
        Purpose.FORECAST.value: PurposeGrant(Resolution.MIN15, 30)}  # fmt: skip
    return next_version(nothing_shared("home-1"), {"grid": purposes}, T0)


def test_home_prompts_drive_the_light_send_feedback_and_keep_the_prompts(tmp_path: Path) -> None:
    from protocol.payloads import Appliance

    clock = ManualClock(T0)
    factory = MockFactory()
    sent = Sent()
    washer = Appliance("washing-machine", 1000.0, 120, 8 * 60, 20 * 60, False, 4)
    home = HomePrompts(
        "coop", "home-1", clock, sent, appliances=(washer,), timezone="Europe/Amsterdam",
        indicator=IndicatorConfig(led="three", red=5, amber=6, green=13, button=23),
        data_dir=tmp_path, pin_factory=factory,
    )  # fmt: skip
    try:
        # Without the prompts purpose: an empty withdrawal, and the button sends nothing.
        home.publish_appliances(_grant(False))
        topic, data, retain = sent.messages[-1]
        assert topic == "coopwatt/coop/homes/home-1/appliances" and retain
        assert decode(Appliances, data).appliances == []
        home.publish_appliances(_grant(True))
        declared = decode(Appliances, sent.messages[-1][1])
        assert declared.appliances == [washer] and declared.grant == "g1"
        assert declared.timezone == "Europe/Amsterdam"

        home.receive(encode(prompts()))
        assert home.light is not None and home.light.blinking
        clock.advance(2000)
        home.tick()
        assert [bool(factory.pin(p).state) for p in (5, 6, 13)] == [False, True, False]
        # A short press on the button: accepted, published as feedback (not retained).
        pin: Any = factory.pin(23)
        pin.drive_low()
        clock.advance(200)
        pin.drive_high()
        topic, data, retain = sent.messages[-1]
        assert topic.endswith("/feedback") and not retain
        assert decode(Feedback, data).action == "accepted"
        # The agent restarts without the hub: the kept prompt shows until it expires.
        home.stop()
        again = HomePrompts("coop", "home-1", clock, sent, data_dir=tmp_path)
        assert again.tick().level == "amber"
        clock.set(T0 + 3 * H)
        assert again.tick().expired
        # The hub withdraws the prompts (an empty retained message).
        again.receive(b"")
        assert again.board.prompts is None and not (tmp_path / "prompts.json").exists()
        again.receive(b"{not json")  # ignored, logged
    finally:
        home.stop()
        factory.close()


def test_render_lines_in_local_time() -> None:
    view = BoardView(
        "green", "your washing machine's window: neighbourhood solar surplus expected, 3.1 kW",
        (RunView("washing-machine", ((T0 + H, T0 + 3 * H),), "sun", 600.0, True, "accepted"),
         RunView("ev-charger", ((T0 + 24 * H, T0 + 26 * H),), "wind", 0.0, False, None)),
        T0 + 3 * H,
    )  # fmt: skip
    lines = render_lines(view, T0, AMS)
    assert lines[0].startswith("GREEN")
    assert "washing machine: 13:00-15:00 (now, will do), +0.6 kWh local" in lines
    assert "ev charger: 12:00-14:00 tomorrow" in lines
    assert lines[-1] == "advice good until 15:00"
    assert render_lines(BoardView(None, "", (), None, expired=True), T0, AMS)[0].startswith(
        "no current advice"
    )


def test_the_console_view_redraws_only_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    console = ConsoleView("-", AMS)
    board = PromptBoard("home-1")
    board.take(prompts(), T0)
    assert console.show(board.view(T0), T0)
    assert not console.show(board.view(T0 + 1000), T0 + 1000)
    assert "AMBER" in out.getvalue() and "washing machine: 13:00-14:30" in out.getvalue()


def test_the_oled_view_draws_on_a_luma_device() -> None:
    device = dummy(width=128, height=64, mode="1")
    oled = OledView(device, AMS)
    board = PromptBoard("home-1")
    board.take(prompts(), T0)
    assert oled.show(board.view(T0 + H), T0 + H)
    lit = sum(device.image.histogram()[1:])
    assert lit > 100  # text was drawn
    assert not oled.show(board.view(T0 + H + 1000), T0 + H + 1000)


def test_the_pages_answer_for_a_named_appliance_is_the_buttons() -> None:
    board = PromptBoard("home-1")
    board.take(prompts(), T0)
    washer_at = T0 + H
    # Before the window: "will do" is accepted for the washer's run, as a press would say.
    fb = board.answer(T0, "washing-machine", "accepted", 3_600_000)
    assert fb == Feedback("home-1", T0, f"p{T0}", "accepted", "washing-machine", washer_at)
    # In the window the same answer says it runs.
    fb = board.answer(washer_at + 60_000, "washing-machine", "accepted", 3_600_000)
    assert fb is not None and fb.action == "done"
    # Snooze: the light goes off for the snooze, and the run is answered "snoozed".
    fb = board.answer(washer_at + 120_000, "washing-machine", "snoozed", 600_000)
    assert fb is not None and fb.action == "snoozed"
    assert board.view(washer_at + 120_000).level is None
    assert board.view(washer_at + 720_000).level == "green"  # 10 minutes later
    # No such appliance, a run already over, "done" asked for, or no current prompts: nothing.
    assert board.answer(T0, "sauna", "accepted", 1) is None
    assert board.answer(washer_at + 91 * 60_000, "washing-machine", "accepted", 1) is None
    assert board.answer(T0, "washing-machine", "done", 1) is None
    assert board.answer(T0 + 3 * H, "washing-machine", "accepted", 1) is None
    # None for the appliance: the press and the hold themselves.
    assert board.answer(T0, None, "accepted", 1) == board.press(T0)


def test_the_display_shows_the_pages_first_visit_code_until_it_is_used(tmp_path: Path) -> None:
    import socket

    clock = ManualClock(T0)
    out = tmp_path / "console.txt"
    home = HomePrompts(
        "coop", "home-1", clock, Sent(), timezone="Europe/Amsterdam",
        indicator=IndicatorConfig(led="none", console=str(out)), data_dir=tmp_path,
    )  # fmt: skip
    code = tmp_path / "household-code"
    code.write_text("K7PM-3QXR-9WTD\n")
    try:
        home.tick()
        shown = out.read_text()
        assert "K7PM-3QXR-9WTD" in shown
        assert f"http://{socket.gethostname()}.local:8080/" in shown.replace("\n", " ")
        code.unlink()  # the household set up its page
        clock.advance(10_000)
        home.tick()
        assert "K7PM" not in out.read_text().split("coopwatt")[-1]
    finally:
        home.stop()
