"""The household page's access: setup with the one-time code, sign-in, sessions, CSRF, bad
requests, slowing down wrong guesses, and what a guest sees (nothing of the home)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.consent_ledger import ConsentLedger
from agent.web.household import CODE_ALPHABET, normalise_code, scrypt_in_helper
from agent.web.sessions import COOKIE, GUEST_TTL_MS, SIGNED_IN_TTL_MS
from agent.web.throttle import CAP_S, delay_s
from tests.web_client import PASSWORD, Browser, Home, another_browser, new_home, signed_in
from tests.web_home import HOME, running_agent

ROUTES = ["/", "/energy", "/money", "/sharing", "/pi", "/nowhere", "/answer", "/sharing/grant"]
# Words and figures of the home that only a signed-in household may see.
HOME_DATA = [HOME, "washing", "sunny-street", "grid-meter", "42.0", "€", "version 1", "Why:"]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return new_home(tmp_path)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the first visit ------------------------------------------------------------------------------
def test_first_visit_sets_the_password_with_the_code_and_the_code_is_used_up(home: Home) -> None:
    b = Browser(home.app)
    first = b.get("/")
    assert first.status == 303 and first.headers["Location"] == "/setup"
    setup = b.get("/setup")
    assert setup.status == 200 and 'name="code"' in setup.text
    cookie = next(c for c in first.cookies if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    guest_token = b.cookies[COOKIE]
    done = b.post("/setup", {"code": home.code.lower().replace("-", " "), "password": PASSWORD,
                             "password2": PASSWORD}, csrf_from="/setup")  # fmt: skip
    assert done.status == 303 and done.headers["Location"] == "/"
    assert b.cookies[COOKIE] != guest_token  # a new token once signed in
    secret = home.settings.web_dir / "household.json"
    assert _mode(secret) == 0o600
    record = json.loads(secret.read_text())
    assert record["kdf"] == "scrypt" and PASSWORD not in secret.read_text()
    assert not home.settings.code_path.exists()
    with running_agent(home.settings.data_dir):
        now = b.get("/")
    assert now.status == 200 and "Your password is set" in now.text
    # The code worked once: the setup page now says there is none.
    assert "There is no one-time code" in Browser(home.app).get("/setup").text
    assert Browser(home.app).get("/").headers["Location"] == "/signin"


@pytest.mark.parametrize(
    ("password", "again", "problem"),
    [
        ("short", "short", "at least 8 characters"),
        ("long enough", "long enougH", "not the same"),
        ("bell\x07ringer", "bell\x07ringer", "control characters"),
    ],
)
def test_a_bad_new_password_is_refused_and_the_code_still_works(
    home: Home, password: str, again: str, problem: str
) -> None:
    b = Browser(home.app)
    page = b.post("/setup", {"code": home.code, "password": password, "password2": again},
                  csrf_from="/setup")  # fmt: skip
    assert page.status == 400 and problem in page.text
    assert home.settings.code_path.exists() and not home.app.household.has_password()


def test_a_wrong_code_changes_nothing(home: Home) -> None:
    b = Browser(home.app)
    page = b.post("/setup", {"code": "AAAA-BBBB-CCCC", "password": PASSWORD,
                             "password2": PASSWORD}, csrf_from="/setup")  # fmt: skip
    assert page.status == 403 and "That code is not right" in page.text
    assert home.settings.code_path.exists() and not home.app.household.has_password()
    assert b.get("/").status == 303


def test_sign_in_sign_out_and_a_wrong_password(home: Home) -> None:
    signed_in(home)
    b = Browser(home.app)
    wrong = b.post("/signin", {"password": "not the one"}, csrf_from="/signin")
    assert wrong.status == 403 and "That password is not right" in wrong.text
    assert b.get("/").headers["Location"] == "/signin"
    b = another_browser(home)
    out = b.post("/signout", {}, csrf_from="/sharing")
    assert out.status == 303 and out.headers["Location"] == "/signin"
    assert b.get("/money").headers["Location"] == "/signin"


def test_sessions_expire_a_guests_sooner_and_a_signed_in_one_after_a_month_idle(
    home: Home,
) -> None:
    b = signed_in(home)
    home.clock.advance(SIGNED_IN_TTL_MS - 1000)
    assert b.get("/money").status == 200  # used: its life starts again
    home.clock.advance(SIGNED_IN_TTL_MS - 1000)
    assert b.get("/money").status == 200
    home.clock.advance(SIGNED_IN_TTL_MS)
    assert b.get("/money").headers["Location"] == "/signin"
    guest = Browser(home.app)
    form = guest.get("/signin")
    home.clock.advance(GUEST_TTL_MS)
    late = guest.request("POST", "/signin", f"csrf={form.csrf}&password={PASSWORD}".encode())
    assert late.status == 403 and "expired" in late.text  # a new guest session, a new token


def test_a_new_code_resets_the_password_and_signs_every_browser_out(home: Home) -> None:
    old = signed_in(home)
    config = str(home.settings.data_dir.parent / "agent.toml")
    result = CliRunner().invoke(main, ["web", "new-code", "--config", config])
    assert result.exit_code == 0, result.output
    code = result.output.strip()
    assert len(normalise_code(code)) == 12 and set(normalise_code(code)) <= set(CODE_ALPHABET)
    assert _mode(home.settings.code_path) == 0o600
    b = Browser(home.app)
    assert "Forgot the password? Set a new one" in b.get("/signin").text
    done = b.post("/setup", {"code": code, "password": "a new password",
                             "password2": "a new password"}, csrf_from="/setup")  # fmt: skip
    assert done.status == 303
    assert old.get("/money").headers["Location"] == "/signin"
    again = Browser(home.app)
    assert again.post("/signin", {"password": PASSWORD}, csrf_from="/signin").status == 403
    assert again.post("/signin", {"password": "a new password"},
                      csrf_from="/signin").status == 303  # fmt: skip


def test_new_code_says_what_is_wrong_with_the_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["web", "new-code", "--config", str(tmp_path / "no.toml")])
    assert result.exit_code == 2 and "Error:" in result.output and "no such config" in result.output


def test_the_scrypt_helper_gives_rfc_7914s_test_vector() -> None:
    # RFC 7914, section 12: scrypt("password", "NaCl", N=1024, r=8, p=16, dkLen=64).
    expected = bytes.fromhex(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    assert scrypt_in_helper(b"password", b"NaCl", 1024, 8, 16, 64) == expected


# -- slowing down wrong guesses -------------------------------------------------------------------
def test_delays_double_after_three_failures_up_to_fifteen_minutes() -> None:
    assert [delay_s(n) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 16, 32]
    assert delay_s(12) == 512 and delay_s(13) == CAP_S == 900 and delay_s(1000) == 900


def test_wrong_passwords_slow_down_per_address_and_overall(home: Home) -> None:
    signed_in(home)
    b = Browser(home.app, address="192.168.1.66")

    def attempt(password: str, who: Browser = b) -> int:
        return who.post("/signin", {"password": password}, csrf_from="/signin").status

    assert [attempt("wrong") for _ in range(2)] == [403, 403]
    third = b.post("/signin", {"password": "wrong"}, csrf_from="/signin")
    assert third.status == 429 and "wait 1 seconds" in third.text
    early = b.post("/signin", {"password": PASSWORD}, csrf_from="/signin")  # right, but early
    assert early.status == 429 and "try again in 1 seconds" in early.text
    assert early.headers["Retry-After"] == "1"
    home.clock.advance(1000)
    fourth = b.post("/signin", {"password": "wrong"}, csrf_from="/signin")
    assert fourth.status == 429 and "wait 2 seconds" in fourth.text
    # Another address is slowed down too: the overall count has four failures.
    other = Browser(home.app, address="192.168.1.77")
    assert (
        "try again in 2 seconds"
        in other.post("/signin", {"password": PASSWORD}, csrf_from="/signin").text
    )
    home.clock.advance(1999)
    assert attempt(PASSWORD) == 429
    home.clock.advance(1)
    assert attempt(PASSWORD) == 303  # the right password in time: counts cleared
    assert attempt("wrong", Browser(home.app, address="192.168.1.66")) == 403


def test_wrong_codes_slow_down_too_and_never_sleep(home: Home) -> None:
    b = Browser(home.app)
    form = {"code": "WRONG", "password": PASSWORD, "password2": PASSWORD}
    statuses = [b.post("/setup", form, csrf_from="/setup").status for _ in range(3)]
    assert statuses == [403, 403, 429]
    right = {**form, "code": home.code}
    assert b.post("/setup", right, csrf_from="/setup").status == 429  # the clock did not move
    home.clock.advance(1000)
    assert b.post("/setup", right, csrf_from="/setup").status == 303


# -- forged, oversized and malformed requests -----------------------------------------------------
def _ledger_lines(home: Home) -> bytes:
    return home.settings.consent_path.read_bytes()


GRANT = {"stream": "wind", "purpose": "forecast", "resolution": "hourly", "keep_days": "30"}


def test_a_form_without_or_with_a_forged_csrf_token_changes_nothing(home: Home) -> None:
    b = signed_in(home)
    before = _ledger_lines(home)
    missing = b.post("/sharing/grant", GRANT)
    forged = b.post("/sharing/grant", {"csrf": "x" * 43, **GRANT})
    twice = b.post("/sharing/grant", [("csrf", b.get("/sharing").csrf), ("csrf", "x"),
                                      *GRANT.items()])  # fmt: skip
    non_ascii = b.post("/sharing/grant", {"csrf": "é" * 10, **GRANT})
    for page in (missing, forged, twice, non_ascii):
        assert page.status == 403 and "did not come from this page" in page.text
    another = another_browser(home)
    stolen = b.post("/sharing/grant", {"csrf": another.get("/sharing").csrf, **GRANT})
    assert stolen.status == 403
    assert _ledger_lines(home) == before


def test_a_form_from_another_site_changes_nothing(home: Home) -> None:
    b = signed_in(home)
    before = _ledger_lines(home)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"}):  # fmt: skip
        page = b.post("/sharing/grant", GRANT, csrf_from="/sharing", headers=headers)
        assert page.status == 403 and "another site" in page.text
    ok = b.post("/sharing/grant", GRANT, csrf_from="/sharing",
                headers={"Origin": "http://pi.local:8080"})  # fmt: skip
    assert ok.status == 303
    assert len(_ledger_lines(home)) > len(before)


def test_an_oversized_body_is_refused_with_a_clear_page(home: Home) -> None:
    b = signed_in(home)
    before = _ledger_lines(home)
    body = b"csrf=" + b.get("/sharing").csrf.encode() + b"&stream=grid&pad=" + b"x" * 20_000
    page = b.request("POST", "/sharing/grant", body)
    assert page.status == 413 and "too large" in page.text and "<h1>" in page.text
    assert _ledger_lines(home) == before


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("multipart/form-data; boundary=x", b"--x--", 415),
        ("application/json", b'{"stream": "grid"}', 415),
        ("application/x-www-form-urlencoded", b"\xff\xfe=%%%", 400),
        ("application/x-www-form-urlencoded", b"stream", 400),
    ],
)
def test_malformed_forms_are_refused(
    home: Home, content_type: str, body: bytes, status: int
) -> None:
    b = signed_in(home)
    before = _ledger_lines(home)
    page = b.request("POST", "/sharing/grant", body, content_type=content_type)
    assert page.status == status and "Something is not right" in page.text
    assert _ledger_lines(home) == before


def test_odd_query_strings_and_cookies_are_ignored(home: Home) -> None:
    b = signed_in(home)
    assert b.get("/money?" + "&".join(f"x{i}=1" for i in range(40)) + "&lang=de").status == 200
    b.cookies["odd"] = '"\\x;=,'
    assert b.get("/money?lang=%ff%fe").status == 200


def test_security_headers_on_every_answer(home: Home) -> None:
    b = signed_in(home)
    with running_agent(home.settings.data_dir):
        pages = [b.get(p) for p in ("/", "/energy", "/signin", "/style.css", "/nowhere")]
    for page in pages:
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "same-origin"
    assert pages[0].headers["Cache-Control"] == "no-store"
    assert "<script" not in "".join(p.text for p in pages)


# -- a guest sees nothing of the home --------------------------------------------------------------
@pytest.fixture(scope="module")
def set_up_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = new_home(tmp_path_factory.mktemp("home"))
    signed_in(home)  # the household exists, with a grant, energy, statements
    return home


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_guest_is_sent_to_sign_in_and_sees_nothing_of_the_home(
    set_up_home: Home, route: str, method: str
) -> None:
    home = set_up_home
    ledger_before = _ledger_lines(home)
    guest = Browser(home.app)
    with running_agent(home.settings.data_dir) as agent:
        if method == "POST":
            page = guest.post(route, {"action": "accepted", **GRANT}, csrf_from="/signin")
        else:
            page = guest.request(method, route)
        signin = guest.get("/signin")
    assert page.status == 303 and page.headers["Location"] == "/signin"
    for text in (page.text, signin.text):
        for secret in HOME_DATA:
            assert secret not in text, (route, secret)
    assert agent.answers == [] and _ledger_lines(home) == ledger_before
    assert ConsentLedger(home.settings.consent_path, HOME).current().version == 2
