"""The page's pure parts: SVG bar charts, local-time periods, WCAG contrast of its palette.
Every expected value is worked out by hand."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.web.charts import Series, bar_chart, nice_ceiling
from agent.web.contrast import contrast_ratio, luminance
from agent.web.periods import day_hours, local_midnight_ms, month_of, week_of

AMS = ZoneInfo("Europe/Amsterdam")
CSS = Path(__file__).resolve().parent.parent / "agent" / "web" / "static" / "style.css"


def _ms(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)


# -- charts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "nice"),
    [(0, 0), (-1, 0), (float("inf"), 0), (1, 1), (3, 5), (0.3, 0.5), (0.07, 0.1), (10, 10),
     (11, 20), (2, 2), (2.5, 5), (49, 50), (51, 100), (1234, 2000)],
)  # fmt: skip
def test_nice_ceiling(x: float, nice: float) -> None:
    assert nice_ceiling(x) == nice


def test_a_chart_worked_by_hand() -> None:
    # 156 x 132: the plot is 100 x 100 (48 left, 8 right, 8 top, 24 bottom). Above the axis at
    # most 2 + 2 = 4 -> scale 5; below at most 5 -> 5; 10 units in 100 px: 10 px each, the zero
    # line at 8 + 5 * 10 = 58. Two slots of 50 px, bars 35 px wide from 48 + 7.5 and 98 + 7.5.
    svg = bar_chart(
        "c", ["a", "b"],
        [Series("own", "s-own", [1, 2]), Series("grid", "s-import", [1, 2]),
         Series("out", "s-export", [0, 5], below=True)],
        title="Energy <today>", desc="in & out", number=lambda v: f"{v:g}",
        width=156, height=132,
    )  # fmt: skip
    rects = re.findall(r'<rect class="s-[^"]+"[^>]*/>', svg)
    assert rects == [
        '<rect class="s-own" x="55.5" y="48" width="35" height="10"/>',
        '<rect class="s-import" x="55.5" y="38" width="35" height="10"/>',
        '<rect class="s-own" x="105.5" y="38" width="35" height="20"/>',
        '<rect class="s-import" x="105.5" y="18" width="35" height="20"/>',
        '<rect class="s-export" fill="url(#c-hatch)" x="105.5" y="58" width="35" height="50"/>',
    ]
    ticks = re.findall(r'<text class="tick" x="44" y="([^"]+)"[^>]*>([^<]+)</text>', svg)
    assert ticks == [("12", "5"), ("62", "0"), ("112", "-5")]
    slots = re.findall(r'<text class="slot" x="([^"]+)" y="126"[^>]*>([^<]+)</text>', svg)
    assert slots == [("73", "a"), ("123", "b")]
    assert '<title id="c-t">Energy &lt;today&gt;</title>' in svg
    assert '<desc id="c-d">in &amp; out</desc>' in svg
    assert 'role="img" aria-labelledby="c-t c-d"' in svg


def test_an_empty_chart_still_has_a_scale_and_bad_values_draw_nothing() -> None:
    svg = bar_chart("e", ["x"], [Series("s", "s-own", [float("nan")]),
                                 Series("t", "s-import", [-3.0])],
                    title="t", desc="d", number=str)  # fmt: skip
    assert '<rect class="s-' not in svg
    assert re.findall(r'class="tick"[^>]*>([^<]+)<', svg) == ["1.0", "0.0"]


def test_every_twelfth_slot_label_at_most() -> None:
    labels = [str(d) for d in range(1, 32)]
    svg = bar_chart("m", labels, [Series("s", "s-own", [1.0] * 31)], title="t", desc="d",
                    number=str)  # fmt: skip
    assert re.findall(r'class="slot"[^>]*>([^<]+)<', svg) == [str(d) for d in range(1, 32, 3)]


def test_a_series_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="2 values for 3 slots"):
        bar_chart("x", ["a", "b", "c"], [Series("s", "s", [1, 2])], title="", desc="", number=str)


# -- periods ---------------------------------------------------------------------------------------
def test_an_ordinary_day_has_24_hours_from_local_midnight() -> None:
    p = day_hours(date(2026, 3, 25), AMS)  # CET, UTC+1
    assert p.edges_ms[0] == _ms(2026, 3, 24, 23) and p.edges_ms[-1] == _ms(2026, 3, 25, 23)
    assert len(p.starts) == 24 and [s.hour for s in p.starts] == list(range(24))


def test_the_day_the_clocks_go_forward_has_23_hours_and_no_two_oclock() -> None:
    p = day_hours(date(2026, 3, 29), AMS)  # 02:00 CET becomes 03:00 CEST (01:00 UTC)
    assert p.edges_ms[0] == _ms(2026, 3, 28, 23) and p.edges_ms[-1] == _ms(2026, 3, 29, 22)
    assert [s.hour for s in p.starts] == [0, 1, *range(3, 24)]


def test_the_day_the_clocks_go_back_has_25_hours_and_two_oclock_twice() -> None:
    p = day_hours(date(2026, 10, 25), AMS)  # 03:00 CEST becomes 02:00 CET (01:00 UTC)
    assert p.edges_ms[0] == _ms(2026, 10, 24, 22) and p.edges_ms[-1] == _ms(2026, 10, 25, 23)
    assert [s.hour for s in p.starts] == [0, 1, 2, 2, *range(3, 24)]
    assert [s.utcoffset().total_seconds() / 3600 for s in p.starts[2:4]] == [2, 1]  # type: ignore[union-attr]


def test_a_week_from_monday_and_a_month_from_the_first() -> None:
    week = week_of(date(2026, 3, 25), AMS)  # a Wednesday
    assert week.first_day == date(2026, 3, 23) and week.last_day == date(2026, 3, 29)
    assert week.edges_ms[0] == _ms(2026, 3, 22, 23) and week.edges_ms[-1] == _ms(2026, 3, 29, 22)
    spans_h = [(b - a) / 3_600_000 for a, b in zip(week.edges_ms, week.edges_ms[1:], strict=False)]
    assert spans_h == [24, 24, 24, 24, 24, 24, 23]
    month = month_of(date(2026, 3, 25), AMS)
    assert len(month.starts) == 31 and month.edges_ms[0] == _ms(2026, 2, 28, 23)
    assert month.edges_ms[-1] == _ms(2026, 3, 31, 22)
    assert len(month_of(date(2028, 2, 10), AMS).starts) == 29  # a leap year


def test_a_midnight_skipped_by_the_clocks_starts_the_day_at_one() -> None:
    # Chile moves its clocks from 00:00 (-04) to 01:00 (-03) on 6 September 2026.
    santiago = ZoneInfo("America/Santiago")
    assert local_midnight_ms(date(2026, 9, 6), santiago) == _ms(2026, 9, 6, 4)
    assert len(day_hours(date(2026, 9, 6), santiago).starts) == 23


# -- contrast --------------------------------------------------------------------------------------
def test_the_wcag_formula_worked_by_hand() -> None:
    assert luminance("#000000") == 0 and luminance("#ffffff") == 1
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    # #767676: 118/255 = 0.4627 -> ((0.4627 + 0.055) / 1.055) ** 2.4 = 0.1812; 1.05 / 0.2312
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


def _palette() -> dict[str, str]:
    root = CSS.read_text().split(":root {", 1)[1].split("}", 1)[0]
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6});", root))


TEXT_PAIRS = [  # text and its background: 4.5 to 1
    ("fg", "bg"), ("fg", "card-bg"), ("muted", "bg"), ("muted", "card-bg"), ("link", "bg"),
    ("link", "card-bg"), ("top-fg", "top-bg"), ("button-fg", "button-bg"), ("fg", "focus"),
    ("green-fg", "green-bg"), ("amber-fg", "amber-bg"), ("red-fg", "red-bg"),
]  # fmt: skip
GRAPHIC_PAIRS = [  # what must be told apart from what is next to it: 3 to 1
    ("own", "bg"), ("import", "bg"), ("export", "export-bg"), ("line", "bg"),
    ("focus-ring", "bg"), ("focus", "top-bg"), ("green-fg", "green-bg"),
    ("amber-fg", "amber-bg"), ("red-fg", "red-bg"), ("bg", "green-fg"), ("bg", "amber-fg"),
    ("bg", "red-fg"), ("top-fg", "top-bg"),
]  # fmt: skip


@pytest.mark.parametrize(("fg", "bg"), TEXT_PAIRS)
def test_text_colours_meet_aa(fg: str, bg: str) -> None:
    colours = _palette()
    assert contrast_ratio(colours[fg], colours[bg]) >= 4.5


@pytest.mark.parametrize(("fg", "bg"), GRAPHIC_PAIRS)
def test_graphics_and_focus_meet_aa(fg: str, bg: str) -> None:
    colours = _palette()
    assert contrast_ratio(colours[fg], colours[bg]) >= 3.0
