"""The hub's reasons for its advice, said in the reader's language.

The hub words each level and window in English, from a small grammar (``hub/prompts/
messages.py``): "neighbourhood solar surplus expected, 3.1 kW", "your dishwasher's window: ...",
"neighbourhood peak: 7.2 kW from the grid expected" and a few more. The wire carries the words,
not a code, so the page recognises those sentences and says them again from its own catalogue,
with the number in the reader's locale. A sentence it does not know (a newer hub's) is shown as
the hub wrote it, marked as English for screen readers: never a wrong translation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


def N_(message: str) -> str:
    return message


# The hub's kW figure: one decimal (messages._kw), possibly negative.
_KW: Final = r"(?P<kw>-?\d+(?:\.\d)?) kW"
# (pattern, message id). Message ids carry %(kw)s where the figure goes.
_SENTENCES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), message)
    for pattern, message in (
        (rf"neighbourhood solar surplus expected, {_KW}",
         N_("neighbourhood solar surplus expected, %(kw)s")),
        (rf"neighbourhood wind surplus expected, {_KW}",
         N_("neighbourhood wind surplus expected, %(kw)s")),
        (rf"neighbourhood solar and wind surplus expected, {_KW}",
         N_("neighbourhood solar and wind surplus expected, %(kw)s")),
        (rf"neighbourhood local surplus expected, {_KW}",
         N_("neighbourhood surplus expected, %(kw)s")),
        (rf"least power needed from the grid then, {_KW} expected",
         N_("least power needed from the grid then, %(kw)s expected")),
        (rf"neighbourhood peak: {_KW} from the grid expected",
         N_("neighbourhood peak: %(kw)s from the grid expected")),
        (rf"small neighbourhood surplus expected, {_KW}",
         N_("small neighbourhood surplus expected, %(kw)s")),
        (r"no local surplus expected now", N_("no local surplus expected now")),
        (r"planned with an earlier forecast", N_("planned with an earlier forecast")),
    )
)  # fmt: skip
_WINDOW: Final = re.compile(r"your (?P<appliance>[a-z0-9 ]{1,40})'s window: (?P<why>.+)")
_WINDOW_MESSAGE: Final = N_("your %(appliance)s's window: %(why)s")


@dataclass(frozen=True, slots=True)
class Said:
    """A reason in the reader's words; ``english`` when it was left as the hub wrote it."""

    text: str
    english: bool


def say(text: str, gettext: Callable[[str], str], kw: Callable[[float], str]) -> Said:
    """``text`` (the hub's reason) in the catalogue's language; ``kw`` formats a figure in kW
    with its unit, in the reader's locale."""
    window = _WINDOW.fullmatch(text)
    if window is not None:
        why = _sentence(window["why"], gettext, kw)
        if why is None:
            return Said(text, english=True)
        return Said(gettext(_WINDOW_MESSAGE) % {"appliance": window["appliance"], "why": why},
                    english=False)  # fmt: skip
    said = _sentence(text, gettext, kw)
    return Said(text, english=True) if said is None else Said(said, english=False)


def _sentence(text: str, gettext: Callable[[str], str], kw: Callable[[float], str]) -> str | None:
    for pattern, message in _SENTENCES:
        m = pattern.fullmatch(text)
        if m is not None:
            values = {"kw": kw(float(m["kw"]))} if "kw" in pattern.groupindex else {}
            return gettext(message) % values
    return None
