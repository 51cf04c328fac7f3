"""Bar charts as inline SVG: a pure function of the numbers, rendered on the Pi.

Each slot (an hour, a day) gets one bar: what the home used stacked above the axis (own
generation, then the grid), what it gave away below it. Colours come from the page's CSS by
class; the series below the axis is also hatched, so no series is told apart by colour alone,
and every chart is followed by its numbers as a table for screen readers.

Geometry, so a test can work an example by hand: the plot area is the SVG less ``LEFT`` px on
the left (axis labels), ``RIGHT`` on the right, ``TOP`` above and ``BOTTOM`` below (slot labels).
The scale runs from ``-nice_ceiling(largest below)`` to ``nice_ceiling(largest above)``; each
slot is ``plot width / slots`` wide and its bar ``BAR_SHARE`` of that, centred.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

LEFT: Final = 48
RIGHT: Final = 8
TOP: Final = 8
BOTTOM: Final = 24
BAR_SHARE: Final = 0.7
MAX_SLOT_LABELS: Final = 12


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # the legend's words
    css: str  # the CSS class that colours it
    values: Sequence[float]
    below: bool = False  # drawn below the axis (energy that left the home)


def nice_ceiling(x: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``x`` (0 for 0 or less)."""
    if x <= 0 or not math.isfinite(x):
        return 0.0
    power = 10.0 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        candidate = step * power
        if candidate >= x * (1 - 1e-12):
            return float(f"{candidate:.12g}")
    return 10 * power  # pragma: no cover - the loop always returns


def _n(x: float) -> str:
    """A coordinate, short: at most two decimals, no trailing zeros."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _clean(v: float) -> float:
    return v if math.isfinite(v) and v > 0 else 0.0


def bar_chart(
    chart_id: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    desc: str,
    number: Callable[[float], str],
    width: int = 400,
    height: int = 200,
) -> str:
    """The chart as an ``<svg>`` element (a string of escaped markup).

    ``chart_id`` prefixes the ids inside (several charts on one page); ``number`` formats the
    axis' values in the reader's locale.
    """
    n = len(labels)
    for s in series:
        if len(s.values) != n:
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {n} slots")
    plot_w = width - LEFT - RIGHT
    plot_h = height - TOP - BOTTOM
    above = [sum(_clean(s.values[i]) for s in series if not s.below) for i in range(n)]
    below = [sum(_clean(s.values[i]) for s in series if s.below) for i in range(n)]
    top_max = nice_ceiling(max(above, default=0.0))
    bottom_max = nice_ceiling(max(below, default=0.0))
    if top_max + bottom_max == 0:
        top_max = 1.0
    k = plot_h / (top_max + bottom_max)
    y0 = TOP + top_max * k
    slot_w = plot_w / n if n else plot_w
    bar_w = slot_w * BAR_SHARE
    cid = escape(chart_id)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{cid}-t {cid}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{cid}-t">{escape(title)}</title><desc id="{cid}-d">{escape(desc)}</desc>',
        f'<defs><pattern id="{cid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect class="hatch-bg" width="6" height="6"/>'
        f'<rect class="hatch-line" width="2" height="6"/></pattern></defs>',
    ]
    # The axis: top of the scale, zero, bottom of the scale.
    ticks = [(TOP, top_max), (y0, 0.0)]
    if bottom_max:
        ticks.append((TOP + plot_h, -bottom_max))
    for y, value in ticks:
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{_n(y + 4)}" text-anchor="end">'
            f"{escape(number(value))}</text>"
        )
    for i in range(n):
        x = LEFT + i * slot_w + (slot_w - bar_w) / 2
        up = down = 0.0
        for s in series:
            v = _clean(s.values[i])
            if v == 0:
                continue
            h = v * k
            if s.below:
                y, down = y0 + down * k, down + v
                fill = f' fill="url(#{cid}-hatch)"'
            else:
                up += v
                y, fill = y0 - up * k, ""
            out.append(
                f'<rect class="{escape(s.css)}"{fill} x="{_n(x)}" y="{_n(y)}" '
                f'width="{_n(bar_w)}" height="{_n(h)}"/>'
            )
    step = max(1, math.ceil(n / MAX_SLOT_LABELS))
    for i in range(0, n, step):
        x = LEFT + (i + 0.5) * slot_w
        out.append(
            f'<text class="slot" x="{_n(x)}" y="{height - 6}" text-anchor="middle">'
            f"{escape(labels[i])}</text>"
        )
    out.append("</svg>")
    return "".join(out)
