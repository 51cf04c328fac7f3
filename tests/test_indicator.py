"""The traffic light and its button through gpiozero's MockFactory: colours, blinks, presses.

Blinks and presses are timed by the injected clock, so the tests move a ManualClock and read
the pins; nothing waits for time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.indicator import BLINK_MS, IndicatorConfig, PressButton, TrafficLight
from protocol.clock import ManualClock
from tests.times import JULY_1_2026_1000_UTC_MS

T0 = JULY_1_2026_1000_UTC_MS
RGB = IndicatorConfig(led="rgb", red=17, green=27, blue=22)
THREE = IndicatorConfig(led="three", red=5, amber=6, green=13)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


def _states(f: MockFactory, *pins: int) -> tuple[bool, ...]:
    return tuple(bool(f.pin(p).state) for p in pins)


@pytest.mark.parametrize(
    ("level", "expected"),
    [("green", (False, True, False)), ("amber", (True, True, False)),
     ("red", (True, False, False)), (None, (False, False, False))],
)  # fmt: skip
def test_an_rgb_led_shows_each_level(factory: MockFactory, level: Any, expected: Any) -> None:
    light = TrafficLight(RGB, pin_factory=factory, now_ms=ManualClock(T0).now_ms)
    light.update(level)
    assert _states(factory, 17, 27, 22) == expected
    assert light.shown == level
    light.close()


def test_three_leds_show_one_level_at_a_time(factory: MockFactory) -> None:
    light = TrafficLight(THREE, pin_factory=factory, now_ms=ManualClock(T0).now_ms)
    for level, expected in [
        ("red", (True, False, False)),
        ("amber", (False, True, False)),
        ("green", (False, False, True)),
        (None, (False, False, False)),
    ]:
        light.update(level)  # type: ignore[arg-type]
        assert _states(factory, 5, 6, 13) == expected, level  # fmt: skip
    light.close()
    assert _states(factory, 5, 6, 13) == (False, False, False)


def test_a_common_anode_led_is_driven_inverted(factory: MockFactory) -> None:
    config = IndicatorConfig(led="rgb", red=17, green=27, blue=22, active_high=False)
    light = TrafficLight(config, pin_factory=factory, now_ms=ManualClock(T0).now_ms)
    light.update("green")
    assert _states(factory, 17, 27, 22) == (True, False, True)  # low lights it
    light.close()


def test_amber_on_a_pwm_rgb_led_is_red_with_half_green() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    config = IndicatorConfig(led="rgb", red=17, green=27, blue=22, pwm=True)
    light = TrafficLight(config, pin_factory=factory, now_ms=ManualClock(T0).now_ms)
    light.update("amber")
    assert (factory.pin(17).state, factory.pin(27).state, factory.pin(22).state) == (1, 0.5, 0)
    light.close()
    factory.close()


def test_a_new_prompt_blinks_then_the_light_is_steady(factory: MockFactory) -> None:
    clock = ManualClock(T0)
    light = TrafficLight(THREE, pin_factory=factory, now_ms=clock.now_ms)
    light.update("amber")
    light.flash()
    seen = []
    for _ in range(BLINK_MS // 125 + 4):
        light.update("green")
        seen.append(_states(factory, 5, 6, 13))
        clock.advance(125)
    on, off = (False, False, True), (False, False, False)
    # Three short blinks of the new level (250 ms on, 250 ms off), then steady green.
    assert seen[:12] == [on, on, off, off] * 3
    assert seen[12:] == [on] * (len(seen) - 12)
    assert not light.blinking
    # The pin really went on and off three times: its history, as gpiozero recorded it.
    changes = [s.state for s in factory.pin(13).states]
    assert changes.count(True) == 4  # three blinks, then steady
    light.close()


def test_a_blink_with_no_level_shows_amber(factory: MockFactory) -> None:
    clock = ManualClock(T0)
    light = TrafficLight(THREE, pin_factory=factory, now_ms=clock.now_ms)
    light.flash()
    light.update(None)
    assert _states(factory, 5, 6, 13) == (False, True, False)
    clock.advance(BLINK_MS)
    light.update(None)
    assert _states(factory, 5, 6, 13) == (False, False, False)
    light.close()


def test_the_button_tells_a_press_from_a_hold(factory: MockFactory) -> None:
    clock = ManualClock(T0)
    events: list[str] = []
    button = PressButton(
        23, 2.0, lambda: events.append("press"), lambda: events.append("hold"),
        pin_factory=factory, now_ms=clock.now_ms,
    )  # fmt: skip
    pin: Any = factory.pin(23)
    pin.drive_low()  # pulled up: pressing connects it to ground
    clock.advance(300)
    pin.drive_high()
    pin.drive_low()
    clock.advance(2500)
    pin.drive_high()
    assert events == ["press", "hold"]
    button.close()
