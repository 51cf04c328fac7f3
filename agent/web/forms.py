"""Reading and checking a POST before anything acts on it.

A form is accepted only when every check passes: the body is at most ``MAX_BODY`` bytes of
``application/x-www-form-urlencoded`` UTF-8; when the browser says where the form came from
(``Origin``, else ``Referer``) it is this page; the session's CSRF token is in the form; and
every field is one the form has, once, with a value it allows. Anything else is a
:class:`FormError` with an HTTP status and a message id for the reader, and changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from agent.web.words import N_

MAX_BODY: Final = 16 * 1024
MAX_FIELDS: Final = 64
FORM_TYPE: Final = "application/x-www-form-urlencoded"


class FormError(Exception):
    """A request the page refuses: ``status`` and what to tell the reader (a message id)."""

    def __init__(self, status: int, message: str, **values: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.values = values


def read_body(environ: Mapping[str, Any]) -> bytes:
    """The POST body, checked for size and type (not yet for CSRF)."""
    ctype = str(environ.get("CONTENT_TYPE") or "")
    media = ctype.split(";", maxsplit=1)[0].strip().lower()
    if media != FORM_TYPE:
        raise FormError(415, N_("This page only accepts its own forms."))
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw_length.isdigit() or len(raw_length) > 12:
        raise FormError(411, N_("The form arrived without its length; please send it again."))
    length = int(raw_length)
    if length > MAX_BODY:
        raise FormError(413, N_("The form is too large (at most 16 kB); nothing was changed."))
    try:
        body = environ["wsgi.input"].read(length) if length else b""
    except OSError:  # the client stalled or went away mid-body (a socket timeout among them)
        body = b""
    if len(body) != length:
        raise FormError(400, N_("The form arrived incomplete; nothing was changed."))
    return bytes(body)


def parse_fields(body: bytes) -> dict[str, list[str]]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, encoding="utf-8",
            errors="strict", max_num_fields=MAX_FIELDS,
        ) if text else []  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, N_("The form could not be read; nothing was changed.")) from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def same_origin(environ: Mapping[str, Any]) -> bool:
    """False when the browser says the form came from another site; True when it says this
    one, or says nothing (then the CSRF token alone decides)."""
    host = str(environ.get("HTTP_HOST") or "").lower()
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        source = str(origin)
        if source == "null":
            return False
    else:
        referer = environ.get("HTTP_REFERER")
        if referer is None:
            return True
        source = str(referer)
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host


def csrf_matches(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())


class Fields:
    """One form's fields, taken one by one; :meth:`done` refuses what nobody asked for."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields
        self._asked: set[str] = set()

    def _values(self, name: str) -> list[str]:
        self._asked.add(name)
        return self._fields.get(name, [])

    def text(self, name: str, *, max_length: int = 256, required: bool = True) -> str:
        values = self._values(name)
        if len(values) > 1 or (required and not values):
            raise FormError(400, N_("The form is not complete; nothing was changed."))
        value = values[0] if values else ""
        if len(value) > max_length:
            raise FormError(400, N_("A field of the form is too long; nothing was changed."))
        return value

    def choice(self, name: str, allowed: Collection[str]) -> str:
        value = self.text(name)
        if value not in allowed:
            raise FormError(400, N_("The form has a choice this page does not offer."))
        return value

    def choices(self, name: str, allowed: Collection[str], *, at_least: int = 0) -> list[str]:
        values = self._values(name)
        if any(v not in allowed for v in values) or len(set(values)) != len(values):
            raise FormError(400, N_("The form has a choice this page does not offer."))
        if len(values) < at_least:
            raise FormError(400, N_("Please choose at least one of each list."))
        return values

    def integer(self, name: str, lo: int, hi: int) -> int:
        value = self.text(name, max_length=12).strip()
        if not value.isascii() or not value.isdigit() or not lo <= int(value) <= hi:
            raise FormError(
                400, N_("Please give a whole number from %(lo)s to %(hi)s."), lo=str(lo), hi=str(hi)
            )
        return int(value)

    def done(self) -> None:
        if set(self._fields) - self._asked:
            raise FormError(400, N_("The form has a field this page does not know."))
