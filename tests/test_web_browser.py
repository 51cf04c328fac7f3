"""The household page in a real browser: headless Chromium (tests/browser.py) against the real
page process (``python -m agent.web`` on a free loopback port, reading the real config file) and
a real agent (:class:`agent.service.Agent`, in this process, with its local socket), connected to
a real Mosquitto and the hub's real ingest, consent and prompts service.

The rig is the one of tests/test_prompts_mqtt.py, with the agent's config written as a TOML file
that both the agent (:func:`agent.config.load_config`) and the page process read. The page
process runs on the wall clock, so the agent and the hub run on a ManualClock set to the wall
time when the module starts (to the minute): "today" and the advice agree. The forecast is sunny
from about then on, so there is current advice and each appliance has a window to come.

What a test expects comes from outside the page: the hub's consent book and prompts database,
the ledger file read back with :class:`agent.consent_ledger.ConsentLedger` (which checks the hash
chain), the prompts the hub published (recorded by an operator's MQTT client), the statement
published to the home. One home is shared by the whole module; the tests run in file order (the
first visit comes first), and each signs in again (the ``browser`` fixture forgets cookies).
Screenshots land in build/screenshots (``<page>-<phone|desktop>-<language>.png``).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from agent.config import load_config
from agent.consent_ledger import ConsentLedger
from agent.mailbox import Mailbox
from agent.service import Agent
from agent.web.household import write_code
from hub.app import ingest_with_consent
from hub.consent.book import ConsentBook
from hub.ingest.service import Ingest
from hub.prompts.service import PromptsService
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, encode
from protocol.consent import ConsentGrant, Purpose, PurposeGrant, Resolution
from protocol.payloads import Prompts, Statement, StatementLine
from protocol.quantities import Role
from protocol.session import BrokerSettings, MqttSession
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic
from sim.broker import RunningBroker, free_port
from tests.browser import (
    PHONE,
    axe_violations,
    describe_violations,
    desktop,
    phone,
    screenshot,
    set_viewport,
)
from tests.harness import wait_for
from tests.test_prompts_mqtt import sunny_forecast
from tests.web_home import fill_energy

ROOT: Final = Path(__file__).resolve().parent.parent
COOP: Final = "browser-street"
HOME: Final = "home-ruby"  # names no guest may see
DEVICE: Final = "attic-heat-pump"
APPLIANCES: Final = ("washing-machine", "dishwasher")
ZONE: Final = "Europe/Amsterdam"
PASSWORD: Final = "kettle on the windowsill"
LANGUAGES: Final = ("en", "de", "nl")
HOUR_MS: Final = 3_600_000
WAIT_S: Final = 20.0
S0, RED, GREEN, BLUE, BUTTON = 5, 17, 27, 22, 23

SIGNED_IN_PAGES: Final = {
    "now": "/",
    "energy": "/energy",
    "money": "/money",
    "sharing": "/sharing",
    "pi": "/pi",
}
GUEST_PAGES: Final = {"signin": "/signin", "setup": "/setup"}


# -- the home: hub, broker, agent, page process ---------------------------------------------------
def write_agent_config(folder: Path, broker_url: str) -> Path:
    """The agent's config as the installer writes it; the page reads the same file."""
    config = folder / "agent.toml"
    config.write_text(f"""\
coop = "{COOP}"
home = "{HOME}"
data_dir = "data"
timezone = "{ZONE}"
poll_interval_s = 60

[broker]
url = "{broker_url}"
client_id = "agent-{COOP}"

[[devices]]
name = "{DEVICE}"
profile = "s0-pulse-1000"
gpio = {S0}
role = "load"

[[appliances]]
name = "washing-machine"
energy_kwh = 1.0
duration_min = 120
earliest_start = "00:00"
latest_finish = "24:00"

[[appliances]]
name = "dishwasher"
energy_kwh = 1.2
duration_min = 120
earliest_start = "00:00"
latest_finish = "24:00"

[indicator]
led = "rgb"
red = {RED}
green = {GREEN}
blue = {BLUE}
button = {BUTTON}
bounce_s = 0.0
""")
    return config


def steady_sun_w(t_ms: int, issued_ms: int) -> float:
    """The neighbourhood's solar steady at 45 kW for the next eight hours (a clear sky: one
    surplus figure, so the page's "Coming up" stays short), then none."""
    return 45_000.0 if t_ms < issued_ms + 8 * HOUR_MS else 0.0


def month_statement(now_ms: int) -> Statement:
    """This month's provisional statement, as `coopwatt-hub publish-statements` sends it; its
    figures are ones no guest may see."""
    period = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(ZONE)).strftime("%Y-%m")
    lines = [StatementLine("import-neighbours", 42_170, 759),
             StatementLine("import-grid", 120_500, 3615)]  # fmt: skip
    total = sum(ln.amount_minor for ln in lines)  # 43.74
    return Statement(HOME, period, now_ms, False, "EUR", 2, "sdr", lines, total, 5123,
                     5123 - total, 2000, 3, 0)  # fmt: skip


@dataclass
class Home:
    clock: ManualClock
    config: Path
    data: Path
    agent: Agent
    book: ConsentBook
    service: PromptsService
    operator: MqttSession
    url: str
    page: subprocess.Popen[bytes]
    page_log: Path
    prompts: list[Prompts]  # every prompt set the hub published to the home, in order
    statement: Statement

    @property
    def ledger(self) -> ConsentLedger:
        """A fresh reader of the home's ledger file (reading checks the hash chain)."""
        return ConsentLedger(self.data / "consent.jsonl", HOME)

    def has_password(self) -> bool:
        return (self.data / "web" / "household.json").exists()

    def latest_prompts(self) -> Prompts:
        assert self.prompts, "the hub has published no prompts"
        return self.prompts[-1]

    def hub_grant(self) -> ConsentGrant:
        """The latest version the hub's own consent ledger holds for the home."""
        history = self.book.history(HOME)
        assert history, "the hub has recorded no grant"
        return history[-1]


def _page_answers(port: int, page: subprocess.Popen[bytes], log: Path) -> bool:
    if page.poll() is not None:
        raise AssertionError(f"the page process ended ({page.returncode}):\n{log.read_text()}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/signin")
        status = conn.getresponse().status
        conn.close()
    except OSError:
        return False
    return status in (200, 303)


def _stop_page(page: subprocess.Popen[bytes]) -> None:
    if page.poll() is None:
        page.send_signal(signal.SIGTERM)
    page.wait(WAIT_S)


@pytest.fixture(scope="module")
def home(mosquitto: RunningBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    folder = tmp_path_factory.mktemp("browser-home")
    now = time.time_ns() // 1_000_000 // 60_000 * 60_000  # the wall clock, to the minute
    clock = ManualClock(now)
    config_path = write_agent_config(folder, mosquitto.url)
    config = load_config(config_path)
    data = config.data_dir
    # What the installer did: the household shares its sub-meter for advice; and the home's
    # readings of the last three days, written by the agent's own energy log.
    ConsentLedger(config.consent_path, HOME).grant(
        [Role.LOAD], [Purpose.PROMPTS], Resolution.MIN15, 30, now - 3 * 86_400_000
    )
    fill_energy(data, now - 3 * 86_400_000, now - 300_000)
    prompts: list[Prompts] = []
    prompts_topic = home_topic(COOP, HOME, HomeTopic.PROMPTS)
    statement = month_statement(now)
    statement_topic = home_topic(COOP, HOME, HomeTopic.STATEMENT)

    def on_message(topic: str, payload: bytes) -> None:
        if topic == prompts_topic and payload:
            prompts.append(decode(Prompts, payload))

    with contextlib.ExitStack() as stack:
        store = Store.open(folder / "hub.db", COOP, clock=clock)
        stack.callback(store.close)
        hub: Ingest
        hub, book = ingest_with_consent(store, BrokerSettings(mosquitto.url, f"hub-{COOP}"),
                                        COOP, clock)  # fmt: skip
        service = PromptsService(store, book, COOP, clock)
        service.attach(hub, BrokerSettings(mosquitto.url, f"hub-{COOP}"))
        hub.start()
        stack.callback(hub.stop)
        service.start()
        stack.callback(service.stop)

        operator = MqttSession(BrokerSettings(mosquitto.url, f"operator-{COOP}"),
                               on_message=on_message)  # fmt: skip
        operator.start()
        stack.callback(operator.stop)
        wait_for(operator.connected.is_set, what="the operator's connection")
        operator.subscribe(prompts_topic)

        factory = MockFactory()
        stack.callback(factory.close)
        agent = Agent(config, clock, pin_factory=factory, housekeeping_s=0.2)
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        stack.callback(thread.join, 20)
        stack.callback(agent.stop)

        port = free_port()
        page_log = folder / "page.log"
        with page_log.open("wb") as log_file:
            page = subprocess.Popen(
                [sys.executable, "-m", "agent.web", "--config", str(config_path),
                 "--bind", "127.0.0.1", "--port", str(port)],
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        stack.callback(_stop_page, page)

        wait_for(agent.session.connected.is_set, what="the agent's connection")
        wait_for(lambda: service.db.appliances().get(HOME) is not None, what="appliances at hub")
        forecast_topic = hub_topic(COOP, HubTopic.FORECAST)
        operator.publish(
            forecast_topic, encode(sunny_forecast(COOP, now, steady_sun_w)), retain=True
        )
        wait_for(lambda: agent.prompts.board.prompts is not None, what="prompts at the home")
        wait_for(lambda: bool(prompts), what="the hub's prompts, as published")
        operator.publish(statement_topic, encode(statement), retain=True)
        stack.callback(operator.publish, statement_topic, b"", retain=True)
        box = Mailbox(data / "mailbox", HOME)
        wait_for(lambda: box.statements() == [statement], what="the statement at home")
        wait_for(lambda: _page_answers(port, page, page_log), timeout_s=WAIT_S,
                 what="the page process")  # fmt: skip
        yield Home(clock, config_path, data, agent, book, service, operator,
                   f"http://127.0.0.1:{port}", page, page_log, prompts, statement)  # fmt: skip


# -- what a person does in the browser ------------------------------------------------------------
def _path(driver: webdriver.Chrome) -> str:
    return urlparse(driver.current_url).path


def wait_at(driver: webdriver.Chrome, path: str) -> None:
    """Until the browser shows ``path``, loaded."""
    WebDriverWait(driver, WAIT_S).until(
        lambda d: _path(d) == path and d.execute_script("return document.readyState") == "complete"
    )


def submit(driver: webdriver.Chrome, button: WebElement, then: str) -> None:
    """Click a form's button and wait for the page the form leads to."""
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, WAIT_S).until(lambda d: _stale(old))
    wait_at(driver, then)


def _stale(element: WebElement) -> bool:
    try:
        element.tag_name  # noqa: B018
    except Exception:  # StaleElementReferenceException: the page was replaced
        return True
    return False


def buttons(
    driver: webdriver.Chrome, text: str, scope: WebElement | None = None
) -> list[WebElement]:
    """The buttons saying ``text``, as a person finds them by their words."""
    where = scope or driver
    return [b for b in where.find_elements(By.TAG_NAME, "button") if b.text.strip() == text]


def button(driver: webdriver.Chrome, text: str, scope: WebElement | None = None) -> WebElement:
    """The one button saying ``text``."""
    found = buttons(driver, text, scope)
    assert len(found) == 1, f"{len(found)} buttons say {text!r} on {driver.current_url}"
    return found[0]


def notices(driver: webdriver.Chrome) -> list[str]:
    return [n.text for n in driver.find_elements(By.CSS_SELECTOR, ".notice")]


def first_visit(driver: webdriver.Chrome, home: Home, code: str) -> None:
    """The household's first visit: the one-time code and a new password."""
    driver.get(home.url + "/?lang=en")
    wait_at(driver, "/setup")
    driver.find_element(By.ID, "code").send_keys(code.lower().replace("-", " "))  # as typed
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "password2").send_keys(PASSWORD)
    submit(driver, button(driver, "Save the password"), "/")


def sign_in(driver: webdriver.Chrome, home: Home, lang: str = "en") -> None:
    """Signed in as the household (setting its password first if nobody has yet)."""
    if not home.has_password():
        first_visit(driver, home, write_code(home.data / "household-code"))
        return
    driver.get(f"{home.url}/signin?lang={lang}")
    wait_at(driver, "/signin")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button"), "/")


def household_set_up(driver: webdriver.Chrome, home: Home) -> None:
    """The household has its password (the first test sets it; a test run alone sets it here),
    and this browser is a guest."""
    if not home.has_password():
        sign_in(driver, home)
        submit(driver, button(driver, "Sign out"), "/signin")


def press(driver: webdriver.Chrome, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def focused(driver: webdriver.Chrome) -> dict[str, str]:
    """The focused element's id, tag and words, as a screen reader would land on it."""
    result = driver.execute_script(
        "const e = document.activeElement;"
        "return {id: e.id || '', tag: e.tagName.toLowerCase(), text: (e.innerText || '').trim()};"
    )
    assert isinstance(result, dict)
    return result


def tab_to(driver: webdriver.Chrome, *, ident: str = "", text: str = "", limit: int = 120) -> None:
    """Press Tab until the element with ``id`` (or the link or button saying ``text``) has the
    focus."""
    for _ in range(limit):
        press(driver, Keys.TAB)
        now = focused(driver)
        if (ident and now["id"] == ident) or (text and now["tag"] in ("a", "button")
                                        and now["text"] == text):  # fmt: skip
            return
    raise AssertionError(f"{limit} presses of Tab never reached {ident or text!r}")


_LAYOUT: Final = """
const d = document.documentElement;
const wide = [];
for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.right > d.clientWidth + 0.5 && !e.closest('.scroll, .visually-hidden')) {
        const name = e.tagName.toLowerCase() + (e.className ? '.' + e.className : '');
        wide.push(`${name} (${Math.round(r.left)} to ${Math.round(r.right)}): `
                  + (e.innerText || '').trim().slice(0, 40));
    }
}
return {scroll: Math.max(d.scrollWidth, document.body.scrollWidth), client: d.clientWidth,
        inner: window.innerWidth, wide: wide.slice(0, 8)};
"""


def layout(driver: webdriver.Chrome) -> dict[str, Any]:
    """The page's widths in CSS px, and what sticks out to the right (outside scroll regions,
    which scroll on their own)."""
    result = driver.execute_script(_LAYOUT)
    assert isinstance(result, dict)
    return result


def assert_fits(driver: webdriver.Chrome, width: int, what: str) -> None:
    """Laid out at ``width`` CSS px with nothing wider: no horizontal scroll."""
    box = layout(driver)  # client: the width less a desktop's vertical scroll bar
    assert box["inner"] == width and width - 20 <= box["client"] <= width, (what, box)
    assert box["scroll"] <= box["client"], f"{what} scrolls sideways: {box}"
    assert not box["wide"], f"{what}: wider than the page: {box}"


def check_page(driver: webdriver.Chrome, url: str, path: str, name: str, lang: str) -> None:
    """``url`` renders at phone width (and in English also at desktop width) without sideways
    scroll and without serious or critical axe violations; a screenshot of each. German and
    Dutch words are longer, which matters at 360 px; at 1280 px the layout is the same in every
    language, and each page load and axe run costs the suite, which must stay under 10 minutes."""
    sizes = (("phone", 360, phone), ("desktop", 1280, desktop))
    for size, width, set_size in sizes if lang == "en" else sizes[:1]:
        set_size(driver)
        driver.get(url)
        wait_at(driver, path)
        what = f"{name} at {size} width in {lang}"
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang, what
        assert driver.find_element(By.TAG_NAME, "h1").is_displayed(), what
        assert_fits(driver, width, what)
        violations = axe_violations(driver)
        assert not violations, f"{what}:\n{describe_violations(violations)}"
        screenshot(driver, f"{name}-{size}-{lang}")


# -- 2. sign-in ------------------------------------------------------------------------------------
def test_first_visit_with_the_code_then_sign_out_and_in(
    browser: webdriver.Chrome, home: Home
) -> None:
    d = browser
    assert not home.has_password(), "the module's first test is the household's first visit"
    code_file = home.data / "household-code"
    code = write_code(code_file)  # as `coopwatt-agent web new-code` does
    d.get(home.url + "/")
    wait_at(d, "/setup")
    assert "Welcome!" in d.find_element(By.TAG_NAME, "main").text  # a first visit, not a reset
    first_visit(d, home, code)
    assert "Your password is set. Welcome!" in notices(d)
    assert HOME in d.find_element(By.CSS_SELECTOR, ".brand").text
    assert not code_file.exists() and home.has_password()  # the code worked once

    submit(d, button(d, "Sign out"), "/signin")
    d.get(home.url + "/sharing")
    wait_at(d, "/signin")  # signed out: the home's pages are closed

    d.find_element(By.ID, "password").send_keys("kettle on the windowsil")  # one letter short
    submit(d, button(d, "Sign in"), "/signin")
    problem = d.find_element(By.ID, "problem")
    assert (
        problem.text == "That password is not right." and problem.get_attribute("role") == "alert"
    )
    assert d.find_element(By.ID, "password").get_attribute("aria-invalid") == "true"
    d.get(home.url + "/")
    wait_at(d, "/signin")  # the wrong password did not sign in

    d.find_element(By.ID, "password").send_keys(PASSWORD)
    submit(d, button(d, "Sign in"), "/")
    assert HOME in d.find_element(By.CSS_SELECTOR, ".brand").text
    d.get(home.url + "/pi")
    wait_at(d, "/pi")
    assert DEVICE in d.find_element(By.TAG_NAME, "main").text  # the agent's own device list


# -- 1. every page, both widths, every language ----------------------------------------------------
@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_page_at_phone_and_desktop_width(
    browser: webdriver.Chrome, home: Home, lang: str
) -> None:
    d = browser
    household_set_up(d, home)
    # A fresh one-time code, so the guest's setup page shows its form (a reset, from here on).
    write_code(home.data / "household-code")
    for name, path in GUEST_PAGES.items():
        check_page(d, f"{home.url}{path}?lang={lang}", path, name, lang)
        assert d.find_elements(By.CSS_SELECTOR, f"form[action='{path}']"), (name, lang)
    sign_in(d, home, lang)
    for name, path in SIGNED_IN_PAGES.items():
        check_page(d, f"{home.url}{path}?lang={lang}", path, name, lang)
    # The Now page showed the hub's advice: a card per appliance the hub planned, with the
    # window the hub sent (in the home's local time) and both answer buttons.
    desktop(d)
    d.get(f"{home.url}/?lang={lang}")
    wait_at(d, "/")
    cards = d.find_elements(By.CSS_SELECTOR, "article.run")
    planned = home.latest_prompts().appliances
    assert len(cards) == len(planned) >= 1
    zone = ZoneInfo(ZONE)
    for card, run in zip(cards, sorted(planned, key=lambda a: a.appliance), strict=True):
        window = card.find_element(By.CSS_SELECTOR, "li").text
        for edge in (run.windows[0].start_ms, run.windows[0].end_ms):
            hhmm = datetime.fromtimestamp(edge / 1000, zone).strftime("%H:%M")
            assert hhmm in window, (run.appliance, hhmm, window)
        assert len(card.find_elements(By.CSS_SELECTOR, "form[action='/answer'] button")) == 2


# -- 4. "will do" ----------------------------------------------------------------------------------
def test_will_do_reaches_the_hub_as_the_buttons_answer(
    browser: webdriver.Chrome, home: Home
) -> None:
    d = browser
    sign_in(d, home)
    phone(d)
    prompts = home.latest_prompts()  # what the hub published to the home
    now = home.clock.now_ms()
    # An appliance whose window is still to come (a press in an open window says "done").
    run = min(prompts.appliances, key=lambda a: (a.windows[0].start_ms <= now, a.appliance))
    start = run.windows[0].start_ms
    expected_action = "done" if start <= now else "accepted"
    before = home.service.db.feedback_count(HOME)
    assert home.service.db.answers(HOME, run.appliance, start - HOUR_MS, start + HOUR_MS) == []

    d.get(home.url + "/")
    wait_at(d, "/")
    name = run.appliance.replace("-", " ")
    card = next(
        c for c in d.find_elements(By.CSS_SELECTOR, "article.run")
        if c.find_element(By.TAG_NAME, "h3").text.lower().startswith(name)
    )  # fmt: skip
    assert not card.find_elements(By.CSS_SELECTOR, ".answered")
    submit(d, button(d, "Will do", card), "/")

    # The hub's own database: one answer more, for the run the hub planned, in the prompt set
    # it sent; the same record the button's feedback makes.
    wait_for(lambda: home.service.db.feedback_count(HOME) == before + 1, what="feedback at hub")
    assert home.service.db.answers(HOME, run.appliance, start - HOUR_MS, start + HOUR_MS) == [
        expected_action
    ]
    row = (
        home.service.store.reader()
        .execute(
            "SELECT prompt, action, appliance, window_start_ms FROM prompt_feedback "
            "WHERE home = ? ORDER BY id DESC LIMIT 1",
            (HOME,),
        )
        .fetchone()
    )
    assert tuple(row) == (prompts.prompt, expected_action, run.appliance, start)
    # The page then shows the answer: told once, and kept on the appliance's card.
    assert "Thank you: you will run it then." in notices(d)
    card = next(
        c for c in d.find_elements(By.CSS_SELECTOR, "article.run")
        if c.find_element(By.TAG_NAME, "h3").text.lower().startswith(name)
    )  # fmt: skip
    said = {"accepted": "You said you will run it then.", "done": "You said it is running."}
    assert card.find_element(By.CSS_SELECTOR, ".answered").text == said[expected_action]
    screenshot(d, "now-answered-phone-en")


# -- 3. grant and revoke ---------------------------------------------------------------------------
def _recorded_at_hub(home: Home, version: int) -> ConsentGrant:
    wait_for(lambda: home.hub_grant().version >= version, what=f"version {version} at the hub")
    return home.hub_grant()


def test_grant_with_the_mouse_and_revoke_with_the_keyboard(
    browser: webdriver.Chrome, home: Home
) -> None:
    d = browser
    sign_in(d, home)
    before = home.ledger.history()
    v = before[-1].version
    assert _recorded_at_hub(home, v).hash == before[-1].hash  # the hub holds the home's latest

    # Grant, by clicking and typing: the grid meter and the sub-meter, for settlement and the
    # forecast, hourly, kept 90 days.
    d.get(home.url + "/sharing")
    wait_at(d, "/sharing")
    for label in ("g-s-grid", "g-s-load", "g-p-settlement", "g-p-forecast", "g-r-hourly"):
        d.find_element(By.CSS_SELECTOR, f"label[for='{label}']").click()
    days = d.find_element(By.ID, "g-days")
    days.clear()
    days.send_keys("90")
    submit(d, button(d, "Share these"), "/sharing")
    assert "Recorded. Your choices apply from your next reading on." in notices(d)

    history = home.ledger.history()  # the file, read back; reading checks the chain
    granted = history[-1]
    assert granted.version == v + 1 and granted.prev_hash == before[-1].hash
    assert history[:-1] == before  # nothing earlier was rewritten
    hourly = PurposeGrant(Resolution.HOURLY, 90)
    assert granted.streams == {
        "grid": {"forecast": hourly, "settlement": hourly},
        "load": {"forecast": hourly, "prompts": before[-1].streams["load"]["prompts"],
                 "settlement": hourly},
    }  # fmt: skip
    at_hub = _recorded_at_hub(home, v + 1)  # the agent published it; the hub's own ledger
    assert (at_hub.version, at_hub.hash, at_hub.streams) == (v + 1, granted.hash, granted.streams)

    # Revoke with the keyboard only, from the Now page: Tab to the Sharing link and Enter, Tab
    # to the grid meter's box under "Stop sharing" and Space ticks it, Tab to the button and
    # Enter sends it (no purpose ticked: for every purpose).
    d.get(home.url + "/")
    wait_at(d, "/")
    tab_to(d, text="Sharing")
    press(d, Keys.ENTER)
    wait_at(d, "/sharing")
    tab_to(d, ident="r-s-grid")
    press(d, Keys.SPACE)
    assert d.find_element(By.ID, "r-s-grid").is_selected()
    tab_to(d, text="Stop sharing these")
    old = d.find_element(By.TAG_NAME, "html")
    press(d, Keys.ENTER)
    WebDriverWait(d, WAIT_S).until(lambda _: _stale(old))
    wait_at(d, "/sharing")
    assert any(n.startswith("Recorded. The cooperative will erase") for n in notices(d))

    history = home.ledger.history()
    revoked = history[-1]
    assert revoked.version == v + 2 and revoked.prev_hash == granted.hash
    assert revoked.streams == {"load": granted.streams["load"]}  # the grid meter: nothing
    at_hub = _recorded_at_hub(home, v + 2)
    assert (at_hub.version, at_hub.hash, at_hub.streams) == (v + 2, revoked.hash, revoked.streams)
    # The hub answers with a receipt for the new version, which the page then lists.
    box = Mailbox(home.data / "mailbox", HOME)
    wait_for(lambda: any(r.version == v + 2 for r in box.receipts()), what="the hub's receipt")
    phone(d)
    d.get(home.url + "/sharing")
    wait_at(d, "/sharing")
    receipts = d.find_element(By.CSS_SELECTOR, "ul.receipts").text
    assert f"(version {v + 2})" in receipts, receipts
    screenshot(d, "sharing-after-revoke-phone-en")


# -- 5. 200 % zoom on a phone ----------------------------------------------------------------------
# A 360 px phone zoomed to 200 %: the page is laid out 180 CSS px wide, each CSS pixel drawn
# twice as large (what browser zoom does: fewer, larger CSS pixels, so the page must reflow).
ZOOMED_WIDTH: Final = PHONE.width // 2


def zoom_phone_200(driver: webdriver.Chrome) -> None:
    driver.set_window_size(PHONE.width, PHONE.height)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": ZOOMED_WIDTH, "height": PHONE.height // 2, "deviceScaleFactor": 2,
         "mobile": True},
    )  # fmt: skip


def assert_on_screen(driver: webdriver.Chrome, target: WebElement, words: str) -> None:
    """``target``, once scrolled to, lies within the viewport's width and is not hidden under
    anything."""
    box = driver.execute_script(
        "const b = arguments[0]; b.scrollIntoView({block: 'center', inline: 'nearest'});"
        "const r = b.getBoundingClientRect();"
        "const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
        "return {left: r.left, right: r.right, width: r.width, height: r.height,"
        " hit: hit !== null && (hit === b || b.contains(hit))};",
        target,
    )
    assert isinstance(box, dict)
    assert box["width"] > 0 and box["height"] > 0, (words, box)
    assert box["left"] >= 0 and box["right"] <= ZOOMED_WIDTH, f"{words!r} is cut off: {box}"
    assert box["hit"], f"{words!r} is covered: {box}"


def assert_tab_reaches(driver: webdriver.Chrome, words: str) -> None:
    """From the top of the page, Tab comes to the button saying ``words``."""
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    tab_to(driver, text=words)


# Each page's main actions, and the one reached with Tab from the top of the page.
ZOOM_PAGES: Final = {
    "/": (["Will do", "Snooze", "Sign out"], "Will do"),
    "/sharing": (["Share these", "Stop sharing these", "Sign out"], "Share these"),
    "/energy": (["Sign out"], None),
    "/money": (["Sign out"], None),
    "/pi": (["Sign out"], None),
}


def test_at_200_percent_zoom_a_phone_needs_no_sideways_scroll(
    browser: webdriver.Chrome, home: Home
) -> None:
    d = browser
    household_set_up(d, home)
    zoom_phone_200(d)
    d.get(home.url + "/signin?lang=en")
    wait_at(d, "/signin")
    assert_fits(d, ZOOMED_WIDTH, "sign-in at 200 %")
    assert_on_screen(d, button(d, "Sign in"), "Sign in")
    assert_tab_reaches(d, "Sign in")
    sign_in(d, home)
    for path, (actions, by_tab) in ZOOM_PAGES.items():
        for lang in ("de", "nl", "en"):  # German and Dutch have the longest words
            d.get(f"{home.url}{path}?lang={lang}")
            wait_at(d, path)
            assert_fits(d, ZOOMED_WIDTH, f"{path} at 200 % in {lang}")
        for words in actions:
            found = buttons(d, words)
            assert found, f"no {words!r} on {path}"
            for target in found:  # "Will do" and "Snooze": one of each per appliance
                assert_on_screen(d, target, words)
        # The pages' own links stay on screen too.
        for link in d.find_elements(By.CSS_SELECTOR, "nav a"):
            assert_on_screen(d, link, link.text)
        if by_tab:
            assert_tab_reaches(d, by_tab)
        d.execute_script("window.scrollTo(0, 0);")
        screenshot(d, f"{path.strip('/') or 'now'}-zoom200-phone-en")
    set_viewport(d, PHONE)


# -- 6. the guest ----------------------------------------------------------------------------------
def test_the_guest_sees_nothing_of_the_home(browser: webdriver.Chrome, home: Home) -> None:
    d = browser
    household_set_up(d, home)
    s = home.statement
    grant = home.ledger.current()
    # The home's id, its device and appliances, and figures only the home has: the statement's
    # money and energy, the ledger's fingerprint.
    secrets = {
        HOME, DEVICE, *APPLIANCES,
        *(a.replace("-", " ") for a in APPLIANCES),
        "43.74", "43,74", "51.23", "51,23", "7.59", "7,59", "120.5", "120,5", grant.hash[:12],
    }  # fmt: skip
    assert s.total_minor == 4374 and s.grid_only_minor == 5123
    for path in (*SIGNED_IN_PAGES.values(), "/?lang=de", "/money?lang=nl", "/nowhere"):
        d.get(home.url + path)
        wait_at(d, "/signin")
        source = d.page_source
        leaked = sorted(x for x in secrets if x in source)
        assert not leaked, f"a guest at {path} sees {leaked}"
    # The same secrets are on the household's own pages: the check above looks for the right
    # words.
    sign_in(d, home)
    seen = ""
    for path in SIGNED_IN_PAGES.values():
        d.get(f"{home.url}{path}?lang=en")
        wait_at(d, path)
        seen += d.page_source
    d.get(f"{home.url}/money?lang=de")
    wait_at(d, "/money")
    seen += d.page_source
    missing = sorted(x for x in secrets if x not in seen)
    assert not missing, f"the household's pages do not show {missing}"
