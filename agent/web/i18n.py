"""Languages: which one a reader gets, the gettext catalogues, and Babel's local formats.

English, German and Dutch. The reader's choice (``?lang=`` on any page, then kept in a cookie)
wins over the browser's ``Accept-Language``; English is the fallback. Times are shown in the
home's time zone (the one the agent's config names), formatted for the language's usual region
(British English, Germany, the Netherlands): a 24-hour clock, the region's dates and currency.
"""

from __future__ import annotations

import functools
import gc
import gettext
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

LANGUAGES: Final = {"en": "English", "de": "Deutsch", "nl": "Nederlands"}
DEFAULT_LANGUAGE: Final = "en"
BABEL_LOCALES: Final = {"en": "en_GB", "de": "de_DE", "nl": "nl_NL"}
LOCALE_DIR: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "messages"
MAX_ACCEPT_LANGUAGE: Final = 512  # characters of the header looked at

Day = date | datetime
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")


def parse_accept_language(header: str) -> list[str]:
    """The primary language subtags the browser asks for, most wanted first (``q`` order, then
    the header's order); ``q=0`` means "not this one"."""
    wanted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not _TAG.fullmatch(tag):
            continue
        q = 1.0
        params = params.strip()
        if params:
            name, _, value = params.partition("=")
            if name.strip() != "q":
                continue
            try:
                q = float(value)
            except ValueError:
                continue
            if not 0 <= q <= 1:
                continue
        if q > 0:
            wanted.append((-q, index, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(wanted)]


def negotiate(chosen: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The language to answer in: ``?lang=``, else the cookie, else the browser's wish."""
    for explicit in (chosen, cookie):
        if explicit in LANGUAGES:
            return explicit
    for tag in parse_accept_language(accept_language or ""):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalogue of ``language`` (English: the message ids themselves)."""
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language])


def template_callables(language: str) -> dict[str, Callable[..., Any]]:
    """``_``, ``gettext`` and ``ngettext`` for a template, in Jinja's "new style": the result is
    escaped-safe markup and ``%(name)s`` placeholders are filled (and escaped) from keywords."""
    t = translations(language)

    @pass_context
    def _gettext(context: Context, message: str, /, **variables: Any) -> str:
        text = t.gettext(message)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - our own catalogue's words
        return text % variables

    @pass_context
    def _ngettext(context: Context, singular: str, plural: str, n: int, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        text = t.ngettext(singular, plural, n)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - our own catalogue's words
        return text % variables

    return {"_": _gettext, "gettext": _gettext, "ngettext": _ngettext}


class Formats:
    """Numbers, energy, money, dates and times for one reader: their language's region, the
    home's time zone."""

    def __init__(self, language: str, zone: ZoneInfo) -> None:
        self.language = language
        self.locale = BABEL_LOCALES[language]
        self.zone = zone

    def local(self, t_ms: int) -> datetime:
        return datetime.fromtimestamp(t_ms / 1000, self.zone)

    def time(self, t_ms: int) -> str:
        """``14:05``"""
        return babel_dates.format_time(self.local(t_ms), "short", locale=self.locale)

    def date(self, day: Day) -> str:
        """``29 Mar 2026``"""
        return babel_dates.format_date(day, "medium", locale=self.locale)

    def weekday_date(self, day: Day) -> str:
        """``Sun 29 Mar``"""
        return babel_dates.format_skeleton("MMMEd", day, locale=self.locale)

    def weekday_short(self, day: Day) -> str:
        """``Sun``"""
        return babel_dates.format_date(day, "EEE", locale=self.locale)

    def month(self, year: int, month: int) -> str:
        """``March 2026``"""
        return babel_dates.format_skeleton("yMMMM", date(year, month, 1), locale=self.locale)

    def datetime(self, t_ms: int) -> str:
        """``29 Mar 2026, 14:05``"""
        local = self.local(t_ms)
        pattern = str(babel_dates.get_datetime_format("medium", locale=self.locale))
        return pattern.replace("{0}", self.time(t_ms)).replace("{1}", self.date(local))

    def decimal(self, value: float, digits: int = 1) -> str:
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return babel_numbers.format_decimal(value, pattern, locale=self.locale)

    def kw(self, value: float) -> str:
        """A power in kW with one decimal and its unit, as the hub's reasons give it."""
        return f"{self.decimal(value, 1)}\u00a0kW"

    def price(self, per_kwh: float, currency: str) -> str:
        """A grid price per kWh, two decimals, as the hub's reasons give it: ``0,12 EUR/kWh``."""
        return f"{self.decimal(per_kwh, 2)}\u00a0{currency}/kWh"

    def kwh(self, wh: float) -> str:
        """Energy in kWh with one decimal (two below 1 kWh), without the unit."""
        kwh = wh / 1000
        return self.decimal(kwh, 2 if abs(kwh) < 1 else 1)

    def money(self, amount_minor: int, currency: str, minor_unit: int) -> str:
        """``€12.34`` / ``12,34 €``: integer minor units of ``currency``, as Babel writes them."""
        value = Decimal(amount_minor).scaleb(-minor_unit)
        digits = babel_numbers.get_currency_precision(currency)
        return babel_numbers.format_currency(
            value, currency, locale=self.locale, currency_digits=digits == minor_unit
        )

    def price_per_kwh(
        self, amount_minor: int, energy_wh: int, currency: str, minor_unit: int
    ) -> str:
        """Money per kWh, with one decimal more than the currency's (``€0.215``)."""
        per_kwh = Decimal(amount_minor).scaleb(-minor_unit) / (Decimal(energy_wh) / 1000)
        standard = Locale.parse(self.locale).currency_formats["standard"].pattern
        pattern = standard.replace("0.00", "0." + "0" * (minor_unit + 1))
        return babel_numbers.format_currency(
            per_kwh, currency, format=pattern, locale=self.locale, currency_digits=False
        )


# Babel keeps each locale's whole CLDR data in memory (language and territory names, units,
# time zone names, ...: about 2 MiB a locale) and its global data (likely subtags, zones:
# 2.5 MiB). The page formats dates, times, numbers and money only; these are the keys that
# needs (found by recording what the page's formats read, plus what their patterns may use).
KEEP_LOCALE_KEYS: Final = frozenset({
    "currency_formats", "currency_names", "currency_names_plural", "currency_symbols",
    "date_formats", "datetime_formats", "datetime_skeletons", "days", "months", "quarters",
    "eras", "day_periods", "number_symbols", "decimal_formats", "percent_formats",
    "default_numbering_system", "numbering_systems", "plural_form", "time_formats",
    "week_data",
})  # fmt: skip
KEEP_GLOBAL_KEYS: Final = frozenset({
    "currency_fractions", "parent_exceptions", "all_currencies", "cldr", "script_aliases",
    "variant_aliases", "language_aliases",
})  # fmt: skip


def warm_up(zone: ZoneInfo) -> None:
    """Use every format once in every language, so their data is loaded now."""
    t_ms = 1_774_786_000_000
    for language in LANGUAGES:
        f = Formats(language, zone)
        day = f.local(t_ms)
        f.time(t_ms), f.datetime(t_ms), f.date(day), f.weekday_date(day), f.weekday_short(day)
        f.month(2026, 3), f.kwh(1234.5), f.decimal(3.25, 2)
        f.money(-12345, "EUR", 2), f.price_per_kwh(2150, 10_000, "EUR", 2)
        translations(language)


def _parent(name: str, exceptions: dict[str, str]) -> str:
    """The locale ``name`` inherits from, as Babel's ``localedata.load`` finds it."""
    parts = name.split("_")
    return exceptions.get(name) or ("root" if len(parts) == 1 else "_".join(parts[:-1]))


def load_slim_locale_data() -> None:
    """Give Babel only the data the page formats with (see the note above), before it loads
    anything itself: the page's own process calls this once, first. Each locale is read as
    Babel reads it (root, then each parent, merged), keeping only ``KEEP_LOCALE_KEYS``, and put
    in Babel's cache, so Babel never loads the whole of it."""
    import pickle  # noqa: PLC0415
    from pathlib import Path as _Path  # noqa: PLC0415

    from babel import core, localedata  # noqa: PLC0415

    with (_Path(core.__file__).parent / "global.dat").open("rb") as f:
        everything = pickle.load(f)  # noqa: S301 - Babel's own data file, as Babel reads it
    core._global_data = {k: v for k, v in everything.items() if k in KEEP_GLOBAL_KEYS}
    del everything
    exceptions = dict(core.get_global("parent_exceptions"))
    pruned: dict[str, dict[str, Any]] = {}  # each file read once, pruned at once

    def read(name: str) -> dict[str, Any]:
        if name not in pruned:
            with open(localedata.resolve_locale_filename(name), "rb") as f:
                raw = pickle.load(f)  # noqa: S301 - Babel's own data file
            pruned[name] = {k: v for k, v in raw.items() if k in KEEP_LOCALE_KEYS}
        return pruned[name]

    cache: dict[str, dict[str, Any]] = localedata._cache
    for leaf in BABEL_LOCALES.values():
        chain = [leaf]
        while chain[-1] != "root":
            chain.append(_parent(chain[-1], exceptions))
        data: dict[str, Any] = {}
        for name in reversed(chain):
            localedata.merge(data, read(name))  # merge copies what it changes: parents intact
        cache[leaf] = data
    gc.collect()
    warm_up(ZoneInfo("UTC"))
