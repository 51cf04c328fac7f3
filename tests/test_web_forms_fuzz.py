"""Bad input on every form of the household page, with hypothesis: any fields, any values, any
body never give a 500, and change the consent ledger (or reach the agent) only when the form
is valid, which an oracle written here decides independently of the page's code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web_client import PASSWORD, Browser, Home, another_browser, new_home, signed_in
from tests.web_home import FakeAgent, running_agent

STREAMS = ["grid", "pv", "wind", "battery", "load"]
PURPOSES = ["forecast", "prompts", "settlement", "community-stats"]
RESOLUTIONS = ["raw", "15min", "hourly", "daily"]
FIELD_NAMES = ["csrf", "stream", "purpose", "resolution", "keep_days", "action", "appliance",
               "password", "password2", "code"]  # fmt: skip
SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

text = st.text(st.characters(codec="utf-8"), max_size=20)
values = st.one_of(
    text, st.sampled_from(STREAMS + PURPOSES + RESOLUTIONS + ["accepted", "snoozed", "done",
                                                              "washing-machine", ""]),
    st.integers(-5, 5000).map(str), st.just(" 30 "), st.just("٣"),
)  # fmt: skip
names = st.one_of(st.sampled_from(FIELD_NAMES), text)
fields = st.lists(st.tuples(names, values), max_size=12)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Browser, FakeAgent]]:
    h = new_home(tmp_path_factory.mktemp("home"))
    b = signed_in(h)
    with running_agent(h.settings.data_dir) as agent:
        yield h, b, agent


def _grant_is_valid(pairs: list[tuple[str, str]]) -> bool:
    got: dict[str, list[str]] = {}
    for k, v in pairs:
        got.setdefault(k, []).append(v)
    if set(got) - {"csrf", "stream", "purpose", "resolution", "keep_days"}:
        return False
    streams, purposes = got.get("stream", []), got.get("purpose", [])
    days = got.get("keep_days", [])
    return (
        got.get("csrf") == ["<real>"]
        and bool(streams) and len(set(streams)) == len(streams) and set(streams) <= set(STREAMS)
        and bool(purposes) and len(set(purposes)) == len(purposes)
        and set(purposes) <= set(PURPOSES)
        and len(got.get("resolution", [])) == 1 and got["resolution"][0] in RESOLUTIONS
        and len(days) == 1 and len(days[0]) <= 12 and days[0].strip().isascii()
        and days[0].strip().isdigit() and 1 <= int(days[0].strip()) <= 3650
    )  # fmt: skip


def _revoke_is_valid(pairs: list[tuple[str, str]]) -> bool:
    got: dict[str, list[str]] = {}
    for k, v in pairs:
        got.setdefault(k, []).append(v)
    streams, purposes = got.get("stream", []), got.get("purpose", [])
    return (
        not set(got) - {"csrf", "stream", "purpose"}
        and got.get("csrf") == ["<real>"]
        and bool(streams) and len(set(streams)) == len(streams) and set(streams) <= set(STREAMS)
        and len(set(purposes)) == len(purposes) and set(purposes) <= set(PURPOSES)
    )  # fmt: skip


csrf_choice = st.sampled_from(["<real>", "<real>", "<real>", "forged", ""])


def _post(b: Browser, path: str, pairs: list[tuple[str, str]], csrf: str) -> tuple[int, bool]:
    token = b.get("/sharing").csrf
    sent = ([("csrf", csrf)] if csrf else []) + pairs
    body = urlencode([(k, token if (k == "csrf" and v == "<real>") else v) for k, v in sent])
    page = b.request("POST", path, body.encode())
    return page.status, _grant_is_valid(sent) if path.endswith("grant") else _revoke_is_valid(sent)


@SETTINGS
@given(pairs=fields, csrf=csrf_choice, path=st.sampled_from(["/sharing/grant", "/sharing/revoke"]))
def test_sharing_forms(home: tuple[Home, Browser, FakeAgent], pairs: list[tuple[str, str]],
                       csrf: str, path: str) -> None:  # fmt: skip
    h, b, _ = home
    before = h.settings.consent_path.read_bytes()
    status, valid = _post(b, path, pairs, csrf)
    after = h.settings.consent_path.read_bytes()
    assert status != 500
    if valid:
        assert status == 303 and len(after.splitlines()) == len(before.splitlines()) + 1
    else:
        assert 400 <= status < 500 and after == before


@SETTINGS
@given(pairs=fields, csrf=csrf_choice)
def test_answer_form(home: tuple[Home, Browser, FakeAgent], pairs: list[tuple[str, str]],
                     csrf: str) -> None:  # fmt: skip
    _h, b, agent = home
    token = b.get("/").csrf
    sent = ([("csrf", csrf)] if csrf else []) + pairs
    got: dict[str, list[str]] = {}
    for k, v in sent:
        got.setdefault(k, []).append(v)
    valid = (
        not set(got) - {"csrf", "action", "appliance"} and got.get("csrf") == ["<real>"]
        and got.get("action") in (["accepted"], ["snoozed"])
        and got.get("appliance", [""]) in ([""], ["washing-machine"], ["ev-charger"])
    )  # fmt: skip
    before = list(agent.answers)
    body = urlencode([(k, token if (k == "csrf" and v == "<real>") else v) for k, v in sent])
    status = b.request("POST", "/answer", body.encode()).status
    assert status != 500
    if valid:
        assert status == 303 and len(agent.answers) == len(before) + 1
    else:
        assert 400 <= status < 500 and agent.answers == before


@SETTINGS
@given(pairs=fields, csrf=csrf_choice, path=st.sampled_from(["/signin", "/setup", "/signout"]))
def test_sign_in_setup_and_sign_out_forms(
    home: tuple[Home, Browser, FakeAgent], pairs: list[tuple[str, str]], csrf: str, path: str
) -> None:
    h, _, _ = home
    b = another_browser(h) if path == "/signout" else Browser(h.app, address="10.0.0.9")
    token = b.get("/sharing" if path == "/signout" else "/signin").csrf
    sent = ([("csrf", csrf)] if csrf else []) + pairs
    secret = (h.settings.web_dir / "household.json").read_bytes()
    body = urlencode([(k, token if (k == "csrf" and v == "<real>") else v) for k, v in sent])
    page = b.request("POST", path, body.encode())
    assert page.status != 500
    assert (h.settings.web_dir / "household.json").read_bytes() == secret  # no code: no reset
    signs_in = path == "/signin" and sent == [("csrf", "<real>"), ("password", PASSWORD)]
    if page.status == 303 and path == "/signin":
        assert signs_in


@SETTINGS
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                  "application/x-www-form-urlencoded; charset=utf-8",
                                  "text/plain", "", "multipart/form-data"]),
    length=st.one_of(st.none(), st.sampled_from(["", "-1", "abc", "99999999999999", "5"])),
    path=st.sampled_from(["/signin", "/setup", "/signout", "/answer", "/sharing/grant",
                          "/sharing/revoke", "/", "/nowhere"]),
)  # fmt: skip
def test_arbitrary_bodies(
    home: tuple[Home, Browser, FakeAgent],
    body: bytes, content_type: str, length: str | None, path: str,
) -> None:  # fmt: skip
    h, b, agent = home
    before = h.settings.consent_path.read_bytes()
    answers = list(agent.answers)
    headers = {"Content-Length": length} if length is not None else {}
    page = b.request("POST", path, body, content_type=content_type, headers=headers)
    assert page.status != 500 and 300 <= page.status < 500
    assert h.settings.consent_path.read_bytes() == before and agent.answers == answers


def test_the_oracles_accept_what_a_browser_sends(tmp_path: Path) -> None:
    assert _grant_is_valid([("csrf", "<real>"), ("stream", "grid"), ("purpose", "forecast"),
                            ("resolution", "15min"), ("keep_days", "400")])  # fmt: skip
    assert _revoke_is_valid([("csrf", "<real>"), ("stream", "grid")])
    assert not _grant_is_valid([("csrf", "<real>"), ("stream", "grid")])


@SETTINGS
@given(
    path=st.one_of(st.sampled_from(["/", "/energy", "/money", "/sharing", "/pi", "/signin",
                                    "/setup", "/style.css"]), text.map(lambda t: "/" + t)),
    query=st.text(max_size=200),
    cookie=st.text(max_size=200),
    language=st.text(max_size=100),
    method=st.sampled_from(["GET", "HEAD", "PUT", "OPTIONS"]),
)  # fmt: skip
def test_arbitrary_requests_never_fail(
    home: tuple[Home, Browser, FakeAgent], path: str, query: str, cookie: str, language: str,
    method: str,
) -> None:  # fmt: skip
    h, b, _ = home
    guest = Browser(h.app, language=language)
    for who in (guest, b):
        saved = dict(who.cookies)
        who.cookies["x"] = cookie
        page = who.request(method, f"{path}?{query}")
        who.cookies = saved
        assert page.status in (200, 303, 404, 405), page.status
