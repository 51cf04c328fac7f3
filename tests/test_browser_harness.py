"""The browser harness itself (tests/browser.py): Chromium renders a page served over loopback at
phone and desktop width, axe-core finds a serious violation where there is one and none on a clean
page, and screenshots are PNG files where a person can look at them."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from tests import browser as browsers

CLEAN = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Clean page</title></head>
<body><main><h1>Good time to use power</h1>
<p>The neighbourhood's solar is plentiful until 14:00.</p>
<img src="sun.svg" alt="Sun" width="48" height="48"></main></body>
</html>
"""

# Light grey on white (about 1.6:1, AA needs 4.5:1) and an image with no text alternative: both
# serious in axe-core.
FLAWED = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flawed page</title></head>
<body><main><h1>Good time to use power</h1>
<p id="faint" style="color:#ccc;background:#fff">The neighbourhood's solar is plentiful.</p>
<img id="bare" src="sun.svg" width="48" height="48"></main></body>
</html>
"""

# No <meta name="viewport">: a phone lays this out 980 px wide and shrinks it.
NO_VIEWPORT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No viewport</title></head>
<body><main><h1>Too small to read</h1></main></body></html>
"""

SUN = """<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48">
<circle cx="24" cy="24" r="20" fill="#f5b400"/></svg>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free loopback port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("site")
    (folder / "clean.html").write_text(CLEAN)
    (folder / "flawed.html").write_text(FLAWED)
    (folder / "no-viewport.html").write_text(NO_VIEWPORT)
    (folder / "sun.svg").write_text(SUN)
    with serve(folder) as url:
        yield url


def test_a_clean_page_has_no_serious_violations_at_either_width(
    browser: webdriver.Chrome, site: str
) -> None:
    browser.get(f"{site}/clean.html")
    for size, name in ((browsers.phone, "phone"), (browsers.desktop, "desktop")):
        size(browser)
        violations = browsers.axe_violations(browser)
        assert violations == [], browsers.describe_violations(violations)
        assert browser.title == "Clean page", name


def test_axe_reports_low_contrast_and_a_missing_alt_as_serious(
    browser: webdriver.Chrome, site: str
) -> None:
    browser.get(f"{site}/flawed.html")
    found = {
        (v["id"], node["target"][0])
        for v in browsers.axe_violations(browser)
        for node in v["nodes"]
    }
    assert found == {("color-contrast", "#faint"), ("image-alt", "#bare")}


def test_the_impact_filter_keeps_only_the_impacts_asked_for(
    browser: webdriver.Chrome, site: str
) -> None:
    browser.get(f"{site}/flawed.html")
    assert browsers.axe_violations(browser, impacts=("minor",)) == []
    critical = browsers.axe_violations(browser, impacts=("critical",))
    assert {v["id"] for v in critical} <= {"image-alt"}


def test_phone_and_desktop_lay_the_page_out_at_their_widths(
    browser: webdriver.Chrome, site: str
) -> None:
    browser.get(f"{site}/clean.html")
    browsers.phone(browser)
    assert browser.execute_script("return window.innerWidth;") == 360
    browsers.desktop(browser)
    assert browser.execute_script("return window.innerWidth;") == 1280


def test_phone_width_honours_the_viewport_meta_tag_as_a_phone_does(
    browser: webdriver.Chrome, site: str
) -> None:
    browsers.phone(browser)
    browser.get(f"{site}/no-viewport.html")
    assert browser.execute_script("return document.documentElement.clientWidth;") == 980


def test_a_screenshot_is_a_png_of_the_whole_page(
    browser: webdriver.Chrome, site: str, tmp_path: Path
) -> None:
    browser.get(f"{site}/clean.html")
    browsers.phone(browser)
    browser.execute_script("document.body.style.minHeight = '2000px';")
    path = browsers.screenshot(browser, "harness/clean phone", folder=tmp_path)
    assert path == tmp_path / "harness-clean-phone.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert width == 360
    assert height >= 2000


def test_screenshots_land_in_build_screenshots(browser: webdriver.Chrome, site: str) -> None:
    browser.get(f"{site}/clean.html")
    path = browsers.screenshot(browser, "harness-clean-desktop")
    assert path == browsers.SCREENSHOTS / "harness-clean-desktop.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_test_starts_without_the_last_ones_cookies(
    browser: webdriver.Chrome, site: str
) -> None:
    browser.get(f"{site}/clean.html")
    browser.add_cookie({"name": "session", "value": "signed-in"})
    assert browser.get_cookie("session") is not None
    browsers.forget_everything(browser)
    browser.get(f"{site}/clean.html")
    assert browser.get_cookie("session") is None
