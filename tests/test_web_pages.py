"""The household page's five pages, rendered from a home's real files and a running agent's
socket (the agent's own link server with a stand-in state), in each language. Expected figures
are worked out by hand from tests/web_home.py's data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.consent_ledger import ConsentLedger
from agent.local_link import AdviceState
from protocol.consent import Purpose, PurposeGrant, Resolution
from tests.web_client import Browser, Home, new_home, signed_in
from tests.web_home import HOME, NOW_MS, FakeAgent, agent_state, running_agent

PAGES = ["/", "/energy", "/money", "/sharing", "/pi"]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return new_home(tmp_path)


@pytest.fixture
def browser(home: Home) -> Browser:
    return signed_in(home)


def _text(html: str) -> str:
    """The page's words, without tags and with single spaces."""
    inline = re.sub(r"</?(strong|span|code|a|i|em)\b[^>]*>", "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inline))


def _row(html: str, label: str) -> list[str]:
    """The cells of the table row headed ``label``."""
    m = re.search(rf"<th scope=\"row\">{re.escape(label)}</th>(.*?)</tr>", html, re.S)
    assert m is not None, label
    return re.findall(r"<td>(.*?)</td>", m.group(1), re.S)


# -- Now -----------------------------------------------------------------------------------------
def test_now_says_the_advice_in_words_with_an_icon_and_each_appliances_window(
    home: Home, browser: Browser
) -> None:
    with running_agent(home.settings.data_dir):
        page = browser.get("/")
    words = _text(page.text)
    assert page.status == 200
    assert 'class="icon icon-green"' in page.text and "Good time to use power" in words
    assert "Why: neighbourhood solar surplus" in words
    # NOW is 12:30 in Amsterdam (CET): the advice holds six hours, the windows start in 1 h
    # and 20 h (tomorrow), and the light turns amber at 14:30.
    assert "This advice holds until 18:30." in words
    assert "today 13:30 to 15:30" in words and "tomorrow 08:30 to 12:30" in words
    assert "12:30 to 14:30: Good" in words and "14:30 to 18:30: Ordinary" in words
    assert "About 1.2 kWh more" in words and "You said you will run it then." in words
    assert page.text.count('action="/answer"') == 4


def test_will_do_reaches_the_agent_as_the_button_does(home: Home, browser: Browser) -> None:
    with running_agent(home.settings.data_dir) as agent:
        done = browser.post("/answer", {"appliance": "washing-machine", "action": "accepted"},
                            csrf_from="/")  # fmt: skip
        snoozed = browser.post("/answer", {"appliance": "ev-charger", "action": "snoozed"},
                               csrf_from="/")  # fmt: skip
        after = browser.get("/")
        unknown = browser.post("/answer", {"appliance": "sauna", "action": "accepted"},
                               csrf_from="/")  # fmt: skip
        bad = browser.post("/answer", {"appliance": "ev-charger", "action": "done"},
                           csrf_from="/")  # fmt: skip
    assert done.status == snoozed.status == 303
    assert agent.answers == [("washing-machine", "accepted"), ("ev-charger", "snoozed")]
    assert "Snoozed." in after.text  # the last answer's notice, shown once
    assert unknown.status == 400 and "no current advice for that appliance" in unknown.text
    assert bad.status == 400


def test_now_says_plainly_when_the_agent_is_not_running(home: Home, browser: Browser) -> None:
    page = browser.get("/")
    assert page.status == 200 and "not running or not answering" in page.text
    answer = browser.post("/answer", {"appliance": "", "action": "snoozed"}, csrf_from="/")
    assert answer.status == 503 and "could not be passed on" in answer.text
    pi = browser.get("/pi")
    assert pi.status == 200 and "not running or not answering" in pi.text


def test_now_says_when_there_is_no_current_advice(home: Home, browser: Browser) -> None:
    expired = AdviceState("", [], [], None, None, None, True)
    with running_agent(home.settings.data_dir, FakeAgent(agent_state(NOW_MS, expired))):
        page = browser.get("/")
    words = _text(page.text)
    assert "No current advice" in words and 'class="icon icon-none"' in page.text
    assert 'action="/answer"' not in page.text


# -- My energy -------------------------------------------------------------------------------------
def test_my_energy_per_day_from_the_energy_log(home: Home, browser: Browser) -> None:
    page = browser.get("/energy")
    assert page.status == 200
    # Tuesday 24 March (Amsterdam, 24 hours): 18 h at 500 W from the grid, 6 h of 2 kW solar
    # of which 1 kW goes to the grid: 9.0 kWh in, 6.0 out, 12.0 own, 6.0 of it used at home,
    # 9 + 12 - 6 = 15.0 used in all.
    assert _row(page.text, "Tue 24 Mar") == ["9.0", "6.0", "12.0", "6.0", "15.0"]
    assert page.text.count('<svg class="chart"') == 3
    assert page.text.count('role="img"') == 3 and page.text.count("<table") == 3
    # The month's energy from neighbours comes from its (provisional) statement.
    assert "42.0 kWh" in page.text and "this month's provisional statement" in page.text
    # Today's table has Wednesday 25 March's 24 hours, from local midnight.
    today = page.text.split('id="h-today"')[1].split('id="h-week"')[0]
    assert re.findall(r'<th scope="row">(\d\d:\d\d)', today) == [f"{h:02d}:00" for h in range(24)]


# -- Money -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language", "pay", "saving", "grid_only", "price"),
    [
        ("en", "€37.51", "€11.49", "€49.00", "€0.180"),
        ("de", "37,51 €", "11,49 €", "49,00 €", "0,180 €"),
        ("nl", "€ 37,51", "€ 11,49", "€ 49,00", "€ 0,180"),
    ],
)
def test_money_in_plain_words_and_the_readers_currency_format(
    home: Home, language: str, pay: str, saving: str, grid_only: str, price: str
) -> None:
    b = signed_in(home, language=language)
    page = b.get("/money")
    words = _text(page.text).replace("\xa0", " ")
    # 7.56 + 36.15 - 5.40 - 0.80 = 37.51 to pay; 49.00 on the grid alone saved 11.49; bought
    # from neighbours 42 kWh for 7.56: 0.180 a kWh.
    assert pay in words and saving in words and grid_only in words and price in words
    assert words.count(pay) == 2  # this month's and last month's statements


def test_money_says_provisional_and_final(home: Home, browser: Browser) -> None:
    words = _text(browser.get("/money").text)
    assert "March 2026 provisional" in words and "February 2026 final" in words
    assert "You pay €37.51 for this month." in words
    assert "Sharing with your neighbours saved you €11.49 against the grid alone" in words
    assert "Bought from neighbours 42.0 kWh €7.56 you pay €0.180" in words
    assert "Sold to neighbours 30.0 kWh €5.40 paid to you €0.180" in words


# -- Sharing ---------------------------------------------------------------------------------------
def test_sharing_in_plain_words_with_the_history_and_receipts(home: Home, browser: Browser) -> None:
    words = _text(browser.get("/sharing").text)
    assert "Electricity meter" in words and "Solar panels" in words
    assert "Neighbourhood figures: one total per quarter hour, kept for 400 days" in words
    assert "Nothing is shared from: Wind turbine, Home battery, Appliance meter." in words
    assert "The chain is intact" in words
    grants = ConsentLedger(home.settings.consent_path, HOME).history()
    for g in grants:
        assert g.hash[:12] in words
    assert (
        "erased data you no longer share (version 2). Readings erased: Solar panels 1234" in words
    )


def test_grant_and_revoke_from_the_form_write_the_ledger_and_the_chain_holds(
    home: Home, browser: Browser
) -> None:
    granted = browser.post(
        "/sharing/grant",
        [("stream", "wind"), ("stream", "battery"), ("purpose", "forecast"),
         ("purpose", "settlement"), ("resolution", "hourly"), ("keep_days", "30")],
        csrf_from="/sharing",
    )  # fmt: skip
    assert granted.status == 303 and granted.headers["Location"] == "/sharing"
    assert "Recorded." in browser.get("/sharing").text
    revoked = browser.post("/sharing/revoke", [("stream", "grid")], csrf_from="/sharing")
    assert revoked.status == 303
    partly = browser.post("/sharing/revoke", [("stream", "wind"), ("purpose", "forecast")],
                          csrf_from="/sharing")  # fmt: skip
    assert partly.status == 303
    ledger = ConsentLedger(home.settings.consent_path, HOME)
    history = ledger.history()  # raises when the chain is broken
    assert [g.version for g in history] == [1, 2, 3, 4, 5]
    streams = ledger.current().streams
    assert "grid" not in streams
    assert streams["wind"] == {"settlement": PurposeGrant(Resolution.HOURLY, 30)}
    assert streams["battery"] == {
        "forecast": PurposeGrant(Resolution.HOURLY, 30),
        "settlement": PurposeGrant(Resolution.HOURLY, 30),
    }
    assert Purpose.COMMUNITY_STATS.value not in streams["pv"]


@pytest.mark.parametrize(
    "fields",
    [
        [("purpose", "forecast"), ("resolution", "hourly"), ("keep_days", "30")],  # no stream
        [("stream", "wind"), ("resolution", "hourly"), ("keep_days", "30")],  # no purpose
        [
            ("stream", "wind"),
            ("purpose", "forecast"),
            ("resolution", "weekly"),
            ("keep_days", "30"),
        ],
        [
            ("stream", "wind"),
            ("purpose", "forecast"),
            ("resolution", "hourly"),
            ("keep_days", "0"),
        ],
        [
            ("stream", "wind"),
            ("purpose", "forecast"),
            ("resolution", "hourly"),
            ("keep_days", "3651"),
        ],
        [
            ("stream", "wind"),
            ("purpose", "forecast"),
            ("resolution", "hourly"),
            ("keep_days", "30"),
            ("extra", "1"),
        ],
        [
            ("stream", "sauna"),
            ("purpose", "forecast"),
            ("resolution", "hourly"),
            ("keep_days", "30"),
        ],
    ],
)
def test_an_invalid_grant_changes_nothing(
    home: Home, browser: Browser, fields: list[tuple[str, str]]
) -> None:
    before = home.settings.consent_path.read_bytes()
    page = browser.post("/sharing/grant", fields, csrf_from="/sharing")
    assert page.status == 400 and "Something is not right" in page.text
    assert home.settings.consent_path.read_bytes() == before


# -- The Pi ----------------------------------------------------------------------------------------
def test_the_pi_shows_devices_connection_and_backlog(home: Home, browser: Browser) -> None:
    with running_agent(home.settings.data_dir):
        words = _text(browser.get("/pi").text)
    assert "Connected ✓ yes since 25 Mar 2026, 09:30" in words
    assert "Readings waiting to be sent 12" in words
    assert "Oldest reading not yet confirmed 4 seconds ago" in words
    assert "grid-meter (electricity meter)" in words and "Power 812 W" in words
    assert "Taken from the grid, meter total 1,234.6 kWh" in words
    assert "inverter (solar inverter) ✗ not answering" in words
    assert "no answer from unit 1" in words and "State sleeping" in words


# -- languages and weight --------------------------------------------------------------------------
def test_the_language_comes_from_the_browser_and_the_switch_keeps_it(home: Home) -> None:
    b = signed_in(home, language="fr-CH, de;q=0.8, nl;q=0.9")
    page = b.get("/money")
    assert '<html lang="nl">' in page.text and "Geld" in page.text
    b.language = "de-DE,de;q=0.9,en;q=0.5"
    assert '<html lang="de">' in b.get("/money").text
    switched = b.get("/money?lang=en")
    assert '<html lang="en">' in switched.text and "Money" in switched.text
    assert any(c.startswith("coopwatt_lang=en") for c in switched.cookies)
    assert '<html lang="en">' in b.get("/sharing").text  # the cookie beats the browser
    assert '<html lang="de">' in Browser(home.app, language="de").get("/signin").text
    assert '<html lang="en">' in Browser(home.app, language="fr, de;q=0").get("/signin").text


@pytest.mark.parametrize("language", ["en", "de", "nl"])
def test_every_page_has_landmarks_a_skip_link_and_weighs_under_150_kb(
    tmp_path: Path, language: str
) -> None:
    home = new_home(tmp_path, energy_days=35)
    b = signed_in(home, language=language)
    with running_agent(home.settings.data_dir):
        pages = {p: b.get(p) for p in PAGES}
    pages["/signin"] = Browser(home.app, language=language).get("/signin")
    for path, page in pages.items():
        assert page.status == 200, path
        assert len(page.text.encode()) < 150_000, path
        html = page.text
        assert f'<html lang="{language}">' in html
        assert '<a class="skip" href="#main">' in html and '<main id="main"' in html
        assert html.count("<h1>") == 1 and "<header" in html and "<footer>" in html
        for field_id in re.findall(r'<input id="([^"]+)"', html):
            assert f'for="{field_id}"' in html, (path, field_id)


def test_the_pages_config_reader_agrees_with_the_agents(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.web.settings import read_settings
    from tests.web_home import write_config

    config = write_config(tmp_path)
    agent, page = load_config(config), read_settings(config)
    assert (page.coop, page.home, page.data_dir, page.timezone) == (
        agent.coop, agent.home, agent.data_dir, agent.timezone,
    )  # fmt: skip
    assert page.consent_path == agent.consent_path


def test_coming_up_has_one_line_per_change_of_the_light() -> None:
    """The hub starts a span whenever its reason's kW figure changes; the page lists the
    light's changes (hand-worked: amber, green for 45 minutes over three spans, red)."""
    from dataclasses import replace
    from zoneinfo import ZoneInfo

    from agent.web.i18n import Formats
    from agent.web.pages import now_page
    from protocol.payloads import LevelSpan
    from tests.web_home import NOW_MS, advice, agent_state

    q = 15 * 60_000
    t = NOW_MS - NOW_MS % q  # 11:30 UTC
    spans = [
        LevelSpan(t, t + q, "amber", "small neighbourhood surplus expected, 0.4 kW"),
        LevelSpan(t + q, t + 2 * q, "green", "neighbourhood solar surplus expected, 3.1 kW"),
        LevelSpan(t + 2 * q, t + 3 * q, "green", "neighbourhood solar surplus expected, 3.4 kW"),
        LevelSpan(t + 3 * q, t + 4 * q, "green", "your dishwasher's window: x"),
        LevelSpan(t + 4 * q, t + 8 * q, "red", "neighbourhood peak: 7.0 kW from the grid expected"),
    ]
    a = replace(advice(t), levels=spans, level="amber", valid_until_ms=t + 8 * q)
    page = now_page(agent_state(t, a), Formats("en", ZoneInfo("UTC")))
    assert [(s.start, s.end, s.level, s.reason) for s in page.course] == [
        ("11:30", "11:45", "amber", "small neighbourhood surplus expected, 0.4 kW"),
        ("11:45", "12:30", "green", "neighbourhood solar surplus expected, 3.1 kW"),
        ("12:30", "13:30", "red", "neighbourhood peak: 7.0 kW from the grid expected"),
    ]
