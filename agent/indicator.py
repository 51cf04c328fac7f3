"""The traffic light at home and its button, through gpiozero.

```toml
[indicator]
led = "rgb"          # "rgb": one RGB LED (red, green, blue pins); "three": red, amber, green LEDs
red = 17             # BCM pin numbers
green = 27
blue = 22            # with led = "rgb"
# amber = 22         # with led = "three"
active_high = true   # false for a common-anode RGB LED (or LEDs wired to 3.3 V)
pwm = false          # true: a true amber on an RGB LED (red + half green); false shows yellow
button = 23          # optional, to ground: press = "will do" (or "running" in its window),
hold_s = 2.0         #   hold this long = snooze the light for snooze_min
snooze_min = 60
bounce_s = 0.05      # contact bounce to ignore
display = "ssd1306"  # optional I2C OLED through luma.oled: pip install 'coopwatt[display]'
i2c_port = 1
i2c_address = 0x3C
console = "/dev/tty1"  # optional plain-text view for an HDMI screen; "-" for standard output
```

Green: run flexible appliances now; amber: neutral; red: avoid; off: no current advice (none
received, expired, or snoozed). A new prompt is announced with a short blink. Pins come from a
gpiozero pin factory that tests replace with ``gpiozero.pins.mock.MockFactory``; blinks and
presses are timed by the agent's injected clock, so no test waits for them. gpiozero is imported
only when a light or button is configured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from protocol.config_tables import ConfigError, Table
from protocol.payloads import Level

BLINK_MS: Final = 1500  # a new prompt: three short blinks
BLINK_PERIOD_MS: Final = 500
DISPLAYS: Final = ("ssd1306", "sh1106", "ssd1309", "ssd1325", "ssd1327", "ssd1331", "ssd1351")
LedKind = Literal["none", "rgb", "three"]


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    led: LedKind = "none"
    red: int | None = None
    green: int | None = None
    blue: int | None = None
    amber: int | None = None
    active_high: bool = True
    pwm: bool = False
    button: int | None = None
    hold_s: float = 2.0
    bounce_s: float = 0.05  # contact bounce the button's pin ignores (gpiozero's bounce_time)
    snooze_min: int = 60
    display: str | None = None
    i2c_port: int = 1
    i2c_address: int = 0x3C
    console: str | None = None


def _pin(t: Table, key: str) -> int | None:
    value = t.integer(key, -1, lo=0, hi=53)
    return None if value < 0 else value


def parse_indicator(root: Table) -> IndicatorConfig | None:
    """The optional ``[indicator]`` table of the agent's config."""
    if "indicator" not in root.data:
        root.text("indicator")  # marks the key as known
        return None
    t = root.table("indicator")
    led: LedKind = t.choice("led", "none", ("none", "rgb", "three"))
    pins = {k: _pin(t, k) for k in ("red", "green", "blue", "amber", "button")}
    needed = {"rgb": ("red", "green", "blue"), "three": ("red", "amber", "green"), "none": ()}[led]
    for key in needed:
        if pins[key] is None:
            raise ConfigError(
                f"indicator.{key} is missing: led = {led!r} needs {', '.join(needed)}"
            )
    extra = [
        k for k in ("red", "green", "blue", "amber") if pins[k] is not None and k not in needed
    ]
    if extra:
        raise ConfigError(f"indicator.{extra[0]} is not used with led = {led!r}")
    used = [p for p in pins.values() if p is not None]
    if len(set(used)) != len(used):
        raise ConfigError("two [indicator] parts are on the same GPIO pin")
    display = t.choice("display", "", ("", *DISPLAYS)) or None
    config = IndicatorConfig(
        led=led,
        red=pins["red"],
        green=pins["green"],
        blue=pins["blue"],
        amber=pins["amber"],
        active_high=t.choice("active_high", True, (True, False)),
        pwm=t.choice("pwm", False, (False, True)),
        button=pins["button"],
        hold_s=t.number("hold_s", 2.0, lo=0.3, hi=30.0),
        bounce_s=t.number("bounce_s", 0.05, lo=0.0, hi=1.0),
        snooze_min=t.integer("snooze_min", 60, lo=1, hi=24 * 60),
        display=display,
        i2c_port=t.integer("i2c_port", 1, lo=0, hi=10),
        i2c_address=t.integer("i2c_address", 0x3C, lo=0x03, hi=0x77),
        console=t.text("console"),
    )
    t.done()
    return config


Color = tuple[float, float, float]
_RGB: Final[dict[Level | None, Color]] = {
    "green": (0.0, 1.0, 0.0),
    "amber": (1.0, 1.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    None: (0.0, 0.0, 0.0),
}


class TrafficLight:
    """One RGB LED or three LEDs showing a level; :meth:`update` drives blinks from the clock."""

    def __init__(
        self,
        config: IndicatorConfig,
        *,
        pin_factory: object | None = None,
        now_ms: Callable[[], int],
    ) -> None:
        from gpiozero import LED, RGBLED  # noqa: PLC0415 - only homes with a light need it

        self.config = config
        self._now = now_ms
        self._lock = threading.Lock()
        self._blink_from: int | None = None
        self._shown: object = object()
        self.level: Level | None = None
        self._rgb: Any = None
        self._leds: dict[Level, Any] = {}
        if config.led == "rgb":
            self._rgb = RGBLED(
                config.red, config.green, config.blue, active_high=config.active_high,
                pwm=config.pwm, pin_factory=pin_factory,
            )  # fmt: skip
        elif config.led == "three":
            pins: dict[Level, int | None] = {
                "red": config.red, "amber": config.amber, "green": config.green,
            }  # fmt: skip
            self._leds = {
                level: LED(pin, active_high=config.active_high, pin_factory=pin_factory)
                for level, pin in pins.items()
            }

    def flash(self) -> None:
        """Announce something new: a few short blinks, then steady again."""
        with self._lock:
            self._blink_from = self._now()

    @property
    def blinking(self) -> bool:
        start = self._blink_from
        return start is not None and 0 <= self._now() - start < BLINK_MS

    def update(self, level: Level | None) -> None:
        """Show ``level`` (None: off), blinking while a flash lasts."""
        with self._lock:
            self.level = level
            lit: Level | None = level
            if self._blink_from is not None and 0 <= self._now() - self._blink_from < BLINK_MS:
                phase_on = (self._now() - self._blink_from) // (BLINK_PERIOD_MS // 2) % 2 == 0
                lit = (level or "amber") if phase_on else None
            if lit == self._shown:
                return
            self._shown = lit
            if self._rgb is not None:
                r, g, b = _RGB[lit]
                if lit == "amber" and self.config.pwm:
                    g = 0.5
                self._rgb.value = (r, g, b)
            for name, led in self._leds.items():
                led.value = name == lit

    @property
    def shown(self) -> Level | None:
        """What the light shows right now (None: off)."""
        value = self._shown
        return value if value in ("green", "amber", "red") else None

    def close(self) -> None:
        with self._lock:
            for device in [self._rgb, *self._leds.values()]:
                if device is not None:
                    device.off()
                    device.close()
            self._rgb, self._leds = None, {}


class PressButton:
    """A push button to ground: a short press calls ``on_press``, a hold ``on_hold``.

    The press is timed between gpiozero's pressed and released events by the agent's clock, so
    a test presses, moves its clock and releases.
    """

    def __init__(
        self,
        pin: int,
        hold_s: float,
        on_press: Callable[[], object],
        on_hold: Callable[[], object],
        *,
        bounce_s: float = 0.0,
        pin_factory: object | None = None,
        now_ms: Callable[[], int],
    ) -> None:
        from gpiozero import Button  # noqa: PLC0415

        self.hold_ms = int(hold_s * 1000)
        self._on_press = on_press
        self._on_hold = on_hold
        self._now = now_ms
        self._down: int | None = None
        self._button: Any = Button(
            pin, pull_up=True, bounce_time=bounce_s or None, pin_factory=pin_factory
        )
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released

    def _pressed(self) -> None:
        self._down = self._now()

    def _released(self) -> None:
        down, self._down = self._down, None
        if down is None:
            return
        if self._now() - down >= self.hold_ms:
            self._on_hold()
        else:
            self._on_press()

    def close(self) -> None:
        self._button.close()
