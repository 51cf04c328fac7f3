"""The page's languages: every message id in the templates and code is translated in each
catalogue, the compiled .mo files say what the .po files say, placeholders survive, and the
browser's language is negotiated as RFC 9110 says."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from agent.web.i18n import LANGUAGES, negotiate, parse_accept_language

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "agent" / "web" / "locale"
TRANSLATED = [language for language in LANGUAGES if language != "en"]
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|\{[a-z_]+\}")


def _extracted() -> set[str | tuple[str, str]]:
    """Every message id in the page's code and templates, as ``update.py`` extracts them."""
    method_map = [("agent/web/**.py", "python"), ("agent/web/templates/**.html", "jinja2")]
    options = {"agent/web/templates/**.html": {
        "extensions": "jinja2.ext.i18n", "newstyle_gettext": "true", "trim_blocks": "true",
        "lstrip_blocks": "true",
    }}  # fmt: skip
    ids: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options
    ):
        ids.add(message if isinstance(message, str) else (message[0], message[1]))
    return ids


@pytest.fixture(scope="module")
def extracted() -> set[str | tuple[str, str]]:
    ids = _extracted()
    assert len(ids) > 200  # the extraction found the page's words
    return ids


def _po(language: str) -> object:
    with (LOCALE / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f)


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated(language: str, extracted: set[str | tuple[str, str]]) -> None:
    catalog = _po(language)
    translated = {}
    for m in catalog:  # type: ignore[attr-defined]
        if m.id:
            key = m.id if isinstance(m.id, str) else (m.id[0], m.id[1])
            translated[key] = m.string
    missing = [i for i in extracted if i not in translated]
    assert missing == []
    for key in extracted:
        strings = translated[key]
        for s in strings if isinstance(strings, tuple | list) else [strings]:
            assert s and s.strip(), key
        source = " ".join(key) if isinstance(key, tuple) else key
        target = " ".join(strings) if isinstance(strings, tuple | list) else strings
        assert sorted(set(PLACEHOLDER.findall(source))) == sorted(
            set(PLACEHOLDER.findall(target))
        ), key


def _messages(catalog: object) -> dict[object, object]:
    def key(x: object) -> object:
        return tuple(x) if isinstance(x, list | tuple) else x

    return {key(m.id): key(m.string) for m in catalog if m.id}  # type: ignore[attr-defined]


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_matches_its_source(language: str) -> None:
    catalog = _po(language)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # type: ignore[arg-type]
    shipped = (LOCALE / language / "LC_MESSAGES" / "messages.mo").read_bytes()
    with (LOCALE / language / "LC_MESSAGES" / "messages.mo").open("rb") as f:
        read_back = read_mo(f)
    assert _messages(read_back) == _messages(catalog)
    assert shipped == compiled.getvalue()


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", ["de", "de", "en"]),
        ("en;q=0.5, nl", ["nl", "en"]),
        ("fr, de;q=0", ["fr"]),
        ("*;q=0.1, nl-BE;q=0.5", ["nl", "*"]),
        ("de;q=x, nl;level=1, en;q=1.5, en-GB", ["en"]),
        ("", []),
        ("<script>, de", ["de"]),
    ],
)
def test_accept_language(header: str, wanted: list[str]) -> None:
    assert parse_accept_language(header) == wanted


def test_negotiation_order() -> None:
    assert negotiate("nl", "de", "en") == "nl"
    assert negotiate("xx", "de", "en") == "de"
    assert negotiate(None, "klingon", "fr, nl;q=0.5, de;q=0.4") == "nl"
    assert negotiate(None, None, "fr") == "en"
    assert negotiate(None, None, "x" * 10_000 + ",de") == "en"  # only the first 512 read
