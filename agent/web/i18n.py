"""Languages: which one a reader gets, the gettext catalogues, and Babel's local formats.

English, German and Dutch. The reader's choice (``?lang=`` on any page, then kept in a cookie)
wins over the browser's ``Accept-Language``; English is the fallback. Times are shown in the
home's time zone (the one the agent's config names), formatted for the language's usual region
(British English, Germany, the Netherlands): a 24-hour clock, the region's dates and currency.
"""

from __future__ import annotations

import functools
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
        return text % variables  # type: ignore[no-any-return]

    @pass_context
    def _ngettext(context: Context, singular: str, plural: str, n: int, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        text = t.ngettext(singular, plural, n)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - our own catalogue's words
        return text % variables  # type: ignore[no-any-return]

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

    def date(self, day: date | datetime) -> str:
        """``29 Mar 2026``"""
        return babel_dates.format_date(day, "medium", locale=self.locale)

    def weekday_date(self, day: date | datetime) -> str:
        """``Sun 29 Mar``"""
        return babel_dates.format_skeleton("MMMEd", day, locale=self.locale)

    def weekday_short(self, day: date | datetime) -> str:
        """``Sun``"""
        return babel_dates.format_date(day, "EEE", locale=self.locale)

    def month(self, year: int, month: int) -> str:
        """``March 2026``"""
        return babel_dates.format_skeleton("yMMMM", date(year, month, 1), locale=self.locale)

    def datetime(self, t_ms: int) -> str:
        """``29 Mar 2026, 14:05``"""
        local = self.local(t_ms)
        pattern = babel_dates.get_datetime_format("medium", locale=self.locale)
        return pattern.replace("{0}", self.time(t_ms)).replace("{1}", self.date(local))

    def decimal(self, value: float, digits: int = 1) -> str:
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return babel_numbers.format_decimal(value, pattern, locale=self.locale)

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
