"""Text views of the household's prompts: a console for an HDMI screen, a small I2C OLED.

Both draw the same lines (:func:`render_lines`), in the home's local time: the light and why,
then each appliance's next window and what the household answered. The OLED goes through
luma.oled (``pip install 'coopwatt[display]'``), imported only when one is configured; tests
give it luma's own ``dummy`` device, which renders to an image in memory.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TextIO
from zoneinfo import ZoneInfo

from protocol.payloads import Level

LEVEL_WORDS: Final[dict[Level, str]] = {
    "green": "GREEN - good time to use power",
    "amber": "AMBER - neutral",
    "red": "RED - avoid using power now",
}
ANSWER_WORDS: Final = {"accepted": "will do", "done": "running", "snoozed": "snoozed"}


@dataclass(frozen=True, slots=True)
class RunView:
    appliance: str
    windows: tuple[tuple[int, int], ...]
    reason: str
    benefit_wh: float
    active: bool
    answer: str | None  # accepted, done or snoozed, when the household answered


@dataclass(frozen=True, slots=True)
class BoardView:
    """What the household sees now. ``level`` None: no current advice."""

    level: Level | None
    reason: str
    runs: tuple[RunView, ...]
    valid_until_ms: int | None
    snoozed_until_ms: int | None = None
    expired: bool = False
    notice: str | None = None  # a line for the household beside the advice (the page's code)


class PromptView(Protocol):
    """Anything that shows the board: called on every refresh, so it acts only on change."""

    def show(self, view: BoardView, now_ms: int) -> bool: ...

    def close(self) -> None: ...


def _hm(t_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t_ms / 1000, zone).strftime("%H:%M")


def _day(t_ms: int, now_ms: int, zone: ZoneInfo) -> str:
    day = datetime.fromtimestamp(t_ms / 1000, zone).date()
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    return "" if day == today else " tomorrow" if (day - today).days == 1 else f" {day:%a}"


def render_lines(view: BoardView, now_ms: int, zone: ZoneInfo, width: int = 60) -> list[str]:
    """The view as lines of at most ``width`` characters."""
    if view.level is None:
        if view.snoozed_until_ms is not None:
            head = f"snoozed until {_hm(view.snoozed_until_ms, zone)}"
        elif view.expired:
            head = "no current advice (the cooperative's hub has not updated it)"
        else:
            head = "no advice yet"
        lines = textwrap.wrap(head, width) or [""]
    else:
        lines = textwrap.wrap(LEVEL_WORDS[view.level], width)
        lines += textwrap.wrap(view.reason, width)
    for run in view.runs:
        when = ", ".join(f"{_hm(s, zone)}-{_hm(e, zone)}" for s, e in run.windows)
        day = _day(run.windows[0][0], now_ms, zone)
        state = "now" if run.active else ""
        if run.answer:
            state = f"{state}, {ANSWER_WORDS.get(run.answer, run.answer)}".strip(", ")
        text = f"{run.appliance.replace('-', ' ')}: {when}{day}"
        if state:
            text += f" ({state})"
        if run.benefit_wh >= 50:
            text += f", +{run.benefit_wh / 1000:.1f} kWh local"
        lines += textwrap.wrap(text, width, subsequent_indent="  ")
    if view.valid_until_ms is not None and view.level is not None:
        lines.append(f"advice good until {_hm(view.valid_until_ms, zone)}")
    if view.notice:
        lines += textwrap.wrap(view.notice, width, break_on_hyphens=False)
    return lines


class ConsoleView:
    """Plain text on a terminal (an HDMI screen's console, or standard output), redrawn when
    what it shows changes."""

    def __init__(self, target: str, zone: ZoneInfo, width: int = 60) -> None:
        self.zone = zone
        self.width = width
        self._own = target != "-"
        self._out: TextIO = (
            open(target, "w", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115
        )
        self._last: list[str] | None = None

    def show(self, view: BoardView, now_ms: int) -> bool:
        lines = render_lines(view, now_ms, self.zone, self.width)
        if lines == self._last:
            return False
        self._last = lines
        clear = "\x1b[2J\x1b[H" if self._out.isatty() else ""
        self._out.write(clear + "\n".join(["coopwatt", *lines]) + "\n")
        self._out.flush()
        return True

    def close(self) -> None:
        if self._own:
            self._out.close()


class OledView:
    """A small monochrome OLED (128×64 and the like) through luma.oled."""

    def __init__(self, device: Any, zone: ZoneInfo) -> None:
        self.device = device
        self.zone = zone
        self._last: list[str] | None = None
        # About 6 px per character in luma's default font.
        self.columns = max(8, int(device.width) // 6)
        self.rows = max(2, int(device.height) // 10)

    @classmethod
    def open(cls, kind: str, port: int, address: int, zone: ZoneInfo) -> OledView:
        """The configured OLED on I2C ``port`` at ``address``; raises ImportError or OSError."""
        from importlib import import_module  # noqa: PLC0415

        interface = import_module("luma.core.interface.serial")
        devices = import_module("luma.oled.device")
        serial = interface.i2c(port=port, address=address)
        return cls(getattr(devices, kind)(serial), zone)

    def show(self, view: BoardView, now_ms: int) -> bool:
        from luma.core.render import canvas  # noqa: PLC0415

        lines = render_lines(view, now_ms, self.zone, self.columns)[: self.rows]
        if view.level is not None:
            lines[0] = view.level.upper()
        if lines == self._last:
            return False
        self._last = lines
        with canvas(self.device) as draw:
            for i, line in enumerate(lines):
                draw.text((0, i * 10), line, fill="white")
        return True

    def close(self) -> None:
        if hasattr(self.device, "cleanup"):
            self.device.cleanup()
