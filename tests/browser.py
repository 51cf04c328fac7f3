"""A real browser for the page tests: headless Chromium from Debian's ``chromium`` and
``chromium-driver`` packages, driven by Selenium, with axe-core for accessibility.

Nothing is downloaded: Selenium is handed ``/usr/bin/chromedriver`` and ``/usr/bin/chromium``, so
Selenium Manager never runs, and axe-core is ``tests/vendor/axe-core/axe.min.js`` (4.14.1; the
3.1.1 that axe-selenium-python ships is from 2018 and misses the WCAG 2.1 rules: see that
folder's README).
``COOPWATT_CHROMIUM`` and ``COOPWATT_CHROMEDRIVER`` name other paths on a machine whose packages
put them elsewhere.

The fixtures (``tests/conftest.py``) start one browser per session; these are its helpers.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM: Final = os.environ.get("COOPWATT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER: Final = os.environ.get("COOPWATT_CHROMEDRIVER", "/usr/bin/chromedriver")

INSTALL_HINT: Final = (
    "the browser tests need Debian's chromium and chromium-driver packages "
    f"({CHROMIUM}, {CHROMEDRIVER}): `make test` installs them as root or with sudo, or "
    "`sudo apt-get install --no-install-recommends chromium chromium-driver fonts-liberation`; "
    "`pytest -m 'not browser'` leaves these tests out"
)

# Headless, and quiet on the network: no QUIC, no background fetches, no component or sync
# updates, so a test run talks to nothing but the page under test.
CHROMIUM_FLAGS: Final = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Where screenshots land for a person to look at (git-ignored, like all of build/).
SCREENSHOTS: Final = Path(__file__).resolve().parents[1] / "build" / "screenshots"


@dataclass(frozen=True)
class Viewport:
    """A window size in CSS pixels; ``mobile`` lays the page out as a phone does (the page's
    ``<meta name="viewport">`` decides its width, as on a real phone)."""

    width: int
    height: int
    mobile: bool


PHONE: Final = Viewport(360, 740, mobile=True)
DESKTOP: Final = Viewport(1280, 900, mobile=False)


def missing_browser() -> str | None:
    """Why the browser cannot start (a sentence with the fix), or None when both programs are
    there."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} not found: {INSTALL_HINT}"
    return None


def start_chromium(profile_dir: Path, log_path: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in ``profile_dir``; chromedriver logs to
    ``log_path``. Raises RuntimeError with the fix when the programs are missing or disagree."""
    why = missing_browser()
    if why is not None:
        raise RuntimeError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log_path))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        raise RuntimeError(
            f"Chromium did not start ({exc.msg}); chromedriver's log: {log_path}. "
            f"chromium and chromium-driver must be the same version: {INSTALL_HINT}"
        ) from None
    set_viewport(driver, DESKTOP)
    return driver


def new_profile_dir(parent: Path) -> Path:
    """A fresh, empty Chromium profile folder under ``parent``."""
    return Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=parent))


def set_viewport(driver: webdriver.Chrome, viewport: Viewport) -> None:
    """Lay the page out at ``viewport``'s size, as a phone (``mobile``) or a desktop window."""
    driver.set_window_size(viewport.width, viewport.height)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": viewport.width,
            "height": viewport.height,
            "deviceScaleFactor": 1,
            "mobile": viewport.mobile,
        },
    )


def phone(driver: webdriver.Chrome) -> None:
    """A 360 x 740 phone, the narrowest the page must work at."""
    set_viewport(driver, PHONE)


def desktop(driver: webdriver.Chrome) -> None:
    """A 1280 x 900 desktop window."""
    set_viewport(driver, DESKTOP)


# What a page can keep besides cookies (cleared on their own); "all" also drops the shader and
# HTTP caches and takes several times longer.
STORAGE: Final = "local_storage,indexeddb,cache_storage,service_workers"


def forget_everything(driver: webdriver.Chrome) -> None:
    """Back to a blank desktop page with no cookies, cache or storage, so one test's sign-in is
    not the next one's."""
    origin = driver.execute_script("return window.location.origin;")
    if isinstance(origin, str) and origin.startswith("http"):
        driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": STORAGE}
        )
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    desktop(driver)


def _axe_script() -> str:
    return (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text("utf-8")


_AXE_RUN: Final = """
const done = arguments[arguments.length - 1];
axe.run(document, arguments[0]).then(
    (results) => done(results.violations),
    (error) => done({axeError: String(error)}));
"""


def axe_violations(
    driver: webdriver.Chrome,
    impacts: Iterable[str] = ("serious", "critical"),
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """axe-core's violations on the current page whose impact is one of ``impacts``, as axe
    reports them (``id``, ``impact``, ``help``, ``nodes`` ...). ``options`` go to ``axe.run``
    (say ``{"runOnly": ["wcag2a", "wcag2aa"]}``); by default every rule runs."""
    if not driver.execute_script("return typeof window.axe === 'object';"):
        driver.execute_script(_axe_script())
    result = driver.execute_async_script(_AXE_RUN, options or {})
    if isinstance(result, dict):
        raise RuntimeError(f"axe-core failed on {driver.current_url}: {result.get('axeError')}")
    wanted = set(impacts)
    return [v for v in result if v.get("impact") in wanted]


def describe_violations(violations: Iterable[dict[str, Any]]) -> str:
    """One line per violation and element, for an assertion message."""
    lines = []
    for v in violations:
        for node in v.get("nodes", []):
            target = " ".join(str(t) for t in node.get("target", []))
            lines.append(f"{v['id']} ({v.get('impact')}): {v.get('help')} at {target}")
    return "\n".join(lines)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# Every picture this run wrote, for the report's closing lines (tests/conftest.py).
WRITTEN: list[Path] = []


def screenshot(driver: webdriver.Chrome, name: str, folder: Path = SCREENSHOTS) -> Path:
    """The whole page (not only what fits the window) as ``folder/<name>.png``; returns its
    path. ``name`` is made file-safe; the same name overwrites the last run's picture."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_SAFE_NAME.sub('-', name).strip('-') or 'page'}.png"
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    width = metrics["cssLayoutViewport"]["clientWidth"]
    height = max(metrics["cssContentSize"]["height"], metrics["cssLayoutViewport"]["clientHeight"])
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    WRITTEN.append(path)
    return path
