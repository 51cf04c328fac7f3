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
from typing import Final, Protocol


def N_(message: str) -> str:
    return message


# The hub's kW figure: one decimal (messages._kw), possibly negative.
_KW: Final = r"(?P<kw>-?\d+(?:\.\d)?) kW"
# The hub's grid price (messages._price): two decimals, the currency's code, per kWh.
_PRICE: Final = r"(?P<price>-?\d+\.\d\d) (?P<currency>[A-Z]{3})/kWh"
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
        (rf"cheap grid price then, {_PRICE}", N_("cheap grid price then, %(price)s")),
    )
)  # fmt: skip
_WINDOW: Final = re.compile(r"your (?P<appliance>[a-z0-9 ]{1,40})'s window: (?P<why>.+)")
_WINDOW_MESSAGE: Final = N_("your %(appliance)s's window: %(why)s")


@dataclass(frozen=True, slots=True)
class Said:
    """A reason in the reader's words; ``english`` when it was left as the hub wrote it."""

    text: str
    english: bool


class Figures(Protocol):
    """How the reader's locale writes the hub's figures, with their units."""

    def kw(self, value: float) -> str: ...
    def price(self, per_kwh: float, currency: str) -> str: ...


def say(text: str, gettext: Callable[[str], str], figures: Figures) -> Said:
    """``text`` (the hub's reason) in the catalogue's language, its figures written by
    ``figures`` in the reader's locale."""
    window = _WINDOW.fullmatch(text)
    if window is not None:
        why = _sentence(window["why"], gettext, figures)
        if why is None:
            return Said(text, english=True)
        return Said(gettext(_WINDOW_MESSAGE) % {"appliance": window["appliance"], "why": why},
                    english=False)  # fmt: skip
    said = _sentence(text, gettext, figures)
    return Said(text, english=True) if said is None else Said(said, english=False)


def _sentence(text: str, gettext: Callable[[str], str], figures: Figures) -> str | None:
    for pattern, message in _SENTENCES:
        m = pattern.fullmatch(text)
        if m is not None:
            values = {}
            if "kw" in pattern.groupindex:
                values["kw"] = figures.kw(float(m["kw"]))
            if "price" in pattern.groupindex:
                values["price"] = figures.price(float(m["price"]), m["currency"])
            return gettext(message) % values
    return None
