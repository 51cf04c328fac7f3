"""WCAG 2 contrast: relative luminance of sRGB colours and the ratio between two of them.

AA asks 4.5:1 for text, 3:1 for large text and for what the eye must tell apart in graphics
(chart bars, focus rings). The page's palette is checked with this in the tests.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"#([0-9a-fA-F]{6})")


def _channel(value_8bit: int) -> float:
    c = value_8bit / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: str) -> float:
    """Relative luminance (0 black to 1 white) of ``#rrggbb``."""
    m = _HEX.fullmatch(colour)
    if m is None:
        raise ValueError(f"{colour!r} is not #rrggbb")
    h = m.group(1)
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast_ratio(a: str, b: str) -> float:
    """(lighter + 0.05) / (darker + 0.05): 1 (same) to 21 (black on white)."""
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)
