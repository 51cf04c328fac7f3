"""The household page as a WSGI application: routes, sign-in, forms and security headers.

Every page but sign-in and setup needs the household's sign-in; a guest is sent to sign in and
sees nothing of the home. Every form is a POST that :mod:`agent.web.forms` checks before any
handler acts, and a handler changes something only when every field is valid. After a change the
browser is sent back to the page (303), with a notice shown once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from agent.consent_ledger import ConsentLedger, LedgerError
from agent.energy_log import read_energy
from agent.local_link import AgentLink, AgentState, LinkError
from agent.mailbox import Mailbox
from agent.web import pages, words
from agent.web.forms import (
    Fields,
    FormError,
    csrf_matches,
    parse_fields,
    read_body,
    same_origin,
)
from agent.web.household import Household, password_problem
from agent.web.i18n import LANGUAGES, Formats, negotiate, template_callables, translations
from agent.web.periods import local_day
from agent.web.reasons import Said, say
from agent.web.sessions import COOKIE, Session, SessionStore
from agent.web.settings import WebSettings
from agent.web.throttle import Throttle
from agent.web.words import N_
from protocol import __version__
from protocol.clock import Clock
from protocol.consent import MAX_RETENTION_DAYS, Purpose, Resolution
from protocol.payloads import Statement
from protocol.quantities import Role

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
LANG_COOKIE: Final = "coopwatt_lang"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
PAGES: Final = {
    "/": N_("Now"),
    "/energy": N_("My energy"),
    "/money": N_("Money"),
    "/sharing": N_("Sharing"),
    "/pi": N_("The Pi"),
}
STREAMS: Final = [r.value for r in Role]
PURPOSES: Final = [p.value for p in Purpose]
RESOLUTIONS: Final = [r.value for r in Resolution]
DEFAULT_KEEP_DAYS: Final = 400

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.path = str(environ.get("PATH_INFO") or "/")
        try:
            query = parse_qs(str(environ.get("QUERY_STRING") or "")[:1024], max_num_fields=16)
        except ValueError:  # more fields than any link of the page has: none of them counts
            query = {}
        self.query = {k: v[0] for k, v in query.items() if v}
        self.cookies: dict[str, str] = {}
        try:
            jar: SimpleCookie = SimpleCookie(str(environ.get("HTTP_COOKIE") or "")[:4096])
            self.cookies = {k: m.value for k, m in jar.items()}
        except CookieError:
            pass
        self.client = str(environ.get("REMOTE_ADDR") or "?")


def _redirect(location: str) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location)])


class WebApp:
    """The page for one home. ``clock`` drives sessions, the throttle and "today"."""

    def __init__(self, settings: WebSettings, clock: Clock, link_timeout_s: float = 1.0) -> None:
        self.settings = settings
        self.clock = clock
        self.zone = ZoneInfo(settings.timezone)
        self.sessions = SessionStore(clock)
        self.throttle = Throttle(clock)
        self.household = Household(settings.code_path, settings.web_dir / "household.json")
        self.link = AgentLink(settings.socket_path, link_timeout_s)
        self.ledger = ConsentLedger(settings.consent_path, settings.home)
        self.mailbox = Mailbox(settings.mailbox_dir, settings.home)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.env.newstyle_gettext = True  # type: ignore[attr-defined]
        self.css = (HERE / "static" / "style.css").read_bytes()
        for language in LANGUAGES:
            translations(language)  # a missing catalogue fails now, not on a reader's request

    def warm_up(self) -> None:
        """Compile every template now, so the first readers wait no longer than the rest."""
        for name in self.env.list_templates(extensions=["html"]):
            self.env.get_template(name)

    # -- WSGI -------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.handle(request)
        except Exception:
            log.exception("the page failed on %s %s", request.method, request.path)
            response = Response(
                500, b"<!doctype html><title>Error</title><p>Something went wrong. "
                b"Please try again.</p>",
            )  # fmt: skip
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        if not any(name == "Cache-Control" for name, _ in headers):
            headers.append(("Cache-Control", "no-store"))
        phrase = HTTPStatus(response.status).phrase
        start_response(f"{response.status} {phrase}", headers)
        return [b"" if request.method == "HEAD" else response.body]

    def handle(self, request: Request) -> Response:
        if request.path == "/style.css":
            return Response(200, self.css, "text/css; charset=utf-8",
                            [("Cache-Control", "max-age=3600")])  # fmt: skip
        if request.path == "/favicon.ico":
            return Response(404, b"", "text/plain; charset=utf-8")
        cookies: list[tuple[str, str]] = []
        chosen = request.query.get("lang")
        language = negotiate(chosen, request.cookies.get(LANG_COOKIE),
                             str(request.environ.get("HTTP_ACCEPT_LANGUAGE") or ""))  # fmt: skip
        if chosen in LANGUAGES:
            cookies.append(("Set-Cookie", f"{LANG_COOKIE}={chosen}; Path=/; Max-Age=31536000; "
                                          "SameSite=Strict"))  # fmt: skip
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            session = self.sessions.guest()
            cookies.append(("Set-Cookie", _session_cookie(session)))
        view = View(self, request, session, language)
        response = self._route(view)
        if view.session is not session:  # signed in or out: a new token
            cookies = [c for c in cookies if not c[1].startswith(COOKIE + "=")]
            cookies.append(("Set-Cookie", _session_cookie(view.session)))
        response.headers.extend(cookies)
        return response

    def _route(self, view: View) -> Response:
        r = view.request
        if r.method not in ("GET", "HEAD", "POST"):
            return view.error(405, N_("This page does not do that."))
        if r.path == "/signin":
            return view.sign_in_post() if r.method == "POST" else view.sign_in_get()
        if r.path == "/setup":
            return view.setup_post() if r.method == "POST" else view.setup_get()
        if not view.session.signed_in:
            return _redirect("/signin" if self.household.has_password() else "/setup")
        if r.method == "POST":
            posts: dict[str, Callable[[], Response]] = {
                "/signout": view.sign_out,
                "/answer": view.answer,
                "/sharing/grant": view.grant,
                "/sharing/revoke": view.revoke,
            }
            handler = posts.get(r.path)
            if handler is None:
                return view.error(404, N_("There is no such page."))
            return view.guarded(handler)
        gets: dict[str, Callable[[], Response]] = {
            "/": view.now,
            "/energy": view.energy,
            "/money": view.money,
            "/sharing": view.sharing,
            "/pi": view.pi,
        }
        page = gets.get(r.path)
        if page is None:
            return view.error(404, N_("There is no such page."))
        return page()


def _session_cookie(session: Session) -> str:
    return f"{COOKIE}={session.token}; Path=/; HttpOnly; SameSite=Strict"


class View:
    """One request: its reader's language and session, and the page it gets."""

    def __init__(self, app: WebApp, request: Request, session: Session, language: str) -> None:
        self.app = app
        self.request = request
        self.session = session
        self.language = language
        self.fmt = Formats(language, app.zone)
        self.gettext = translations(language).gettext

    # -- rendering --------------------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        notices = self.session.take_notices()
        body = self.app.env.get_template(template).render(
            lang=self.language,
            languages=LANGUAGES,
            path=self.request.path,
            pages=PAGES,
            signed_in=self.session.signed_in,
            csrf=self.session.csrf,
            notices=notices,
            home=self.app.settings.home if self.session.signed_in else None,
            version=__version__,
            words=words,
            **template_callables(self.language),
            say_reason=self.say_reason,
            **context,
        )
        response = Response(status, body.encode())
        seconds = context.get("values", {}).get("seconds") if status == 429 else None
        if seconds:
            response.headers.append(("Retry-After", seconds))
        return response

    def say_reason(self, text: str) -> Said:
        """The hub's reason in the reader's language (agent/web/reasons.py)."""
        return say(text, translations(self.language).gettext, self.fmt)

    def error(self, status: int, message: str, **values: str) -> Response:
        return self.render("error.html", status, message=message, values=values)

    # -- forms ------------------------------------------------------------------------------------
    def form(self) -> Fields:
        """The POST's fields after the size, type, origin and CSRF checks (FormError if not)."""
        fields = parse_fields(read_body(self.request.environ))
        if not same_origin(self.request.environ):
            raise FormError(403, N_("This form came from another site; nothing was changed."))
        sent = fields.pop("csrf", [])
        if len(sent) != 1 or not csrf_matches(sent[0], self.session.csrf):
            raise FormError(
                403, N_("This form has expired or did not come from this page; please try again.")
            )
        return Fields(fields)

    def guarded(self, handler: Callable[[], Response]) -> Response:
        try:
            return handler()
        except FormError as exc:
            return self.error(exc.status, exc.message, **exc.values)

    # -- sign-in and setup ------------------------------------------------------------------------
    def sign_in_get(self, status: int = 200, problem: str | None = None,
                    **values: str) -> Response:  # fmt: skip
        household = self.app.household
        if self.session.signed_in:
            return _redirect("/")
        if not household.has_password():
            return _redirect("/setup")
        return self.render("signin.html", status, problem=problem, values=values,
                           can_reset=household.has_code())  # fmt: skip

    def setup_get(self, status: int = 200, problem: str | None = None,
                  **values: str) -> Response:  # fmt: skip
        household = self.app.household
        if self.session.signed_in and not household.has_code():
            return _redirect("/")
        return self.render("setup.html", status, problem=problem, values=values,
                           has_code=household.has_code(),
                           reset=household.has_password())  # fmt: skip

    def _throttled(self) -> int:
        return self.app.throttle.wait_s(self.request.client)

    def _refuse_slowly(self, page: Callable[..., Response], message: str) -> Response:
        wait = self.app.throttle.failed(self.request.client)
        log.warning("a wrong %s from %s", "code" if page == self.setup_get else "password",
                    self.request.client)  # fmt: skip
        if wait:
            return page(429, N_("That was not right. Please wait %(seconds)s seconds before "
                                "trying again."), seconds=str(wait))  # fmt: skip
        return page(403, message)

    def sign_in_post(self) -> Response:
        try:
            fields = self.form()
            password = fields.text("password", max_length=1024)
            fields.done()
        except FormError as exc:
            return self.sign_in_get(exc.status, exc.message, **exc.values)
        if not self.app.household.has_password():
            return _redirect("/setup")
        wait = self._throttled()
        if wait:
            return self.sign_in_get(429, N_("Too many wrong attempts. Please try again in "
                                            "%(seconds)s seconds."), seconds=str(wait))  # fmt: skip
        if not self.app.household.check_password(password):
            return self._refuse_slowly(self.sign_in_get, N_("That password is not right."))
        self.app.throttle.succeeded(self.request.client)
        self.session = self.app.sessions.sign_in(self.session)
        log.info("the household signed in from %s", self.request.client)
        return _redirect("/")

    def setup_post(self) -> Response:
        try:
            fields = self.form()
            code = fields.text("code", max_length=64)
            password = fields.text("password", max_length=1024)
            again = fields.text("password2", max_length=1024)
            fields.done()
        except FormError as exc:
            return self.setup_get(exc.status, exc.message, **exc.values)
        household = self.app.household
        if not household.has_code():
            return self.setup_get(403, N_("There is no setup code on this Pi now."))
        wait = self._throttled()
        if wait:
            return self.setup_get(429, N_("Too many wrong attempts. Please try again in "
                                          "%(seconds)s seconds."), seconds=str(wait))  # fmt: skip
        if not household.check_code(code):
            return self._refuse_slowly(self.setup_get, N_("That code is not right."))
        problem = password_problem(password)
        if problem is not None:
            return self.setup_get(400, problem)
        if password != again:
            return self.setup_get(400, N_("The two passwords are not the same."))
        self.app.throttle.succeeded(self.request.client)
        household.set_password(password)
        self.app.sessions.end_all()  # a new password signs every other browser out
        self.session = self.app.sessions.sign_in(None)
        self.session.notify("ok", N_("Your password is set. Welcome!"))
        log.info("the household set its password from %s", self.request.client)
        return _redirect("/")

    def sign_out(self) -> Response:
        self.form().done()
        self.app.sessions.end(self.session.token)
        self.session = self.app.sessions.guest()
        return _redirect("/signin")

    # -- Now --------------------------------------------------------------------------------------
    def _state(self) -> tuple[AgentState | None, str | None]:
        try:
            return self.app.link.state(), None
        except LinkError as exc:
            return None, str(exc)

    def now(self) -> Response:
        state, problem = self._state()
        page = pages.now_page(state, self.fmt) if state is not None else None
        return self.render("now.html", page=page, link_problem=problem)

    def answer(self) -> Response:
        fields = self.form()
        action = fields.choice("action", ("accepted", "snoozed"))
        appliance = fields.text("appliance", max_length=64, required=False) or None
        fields.done()
        state, _ = self._state()
        if state is None:
            raise FormError(503, N_("The agent is not running, so your answer could not be "
                                    "passed on. Please try again later."))  # fmt: skip
        known = {r.appliance for r in state.advice.runs}
        if appliance is not None and appliance not in known:
            raise FormError(400, N_("There is no current advice for that appliance."))
        act: Literal["accepted", "snoozed"] = "accepted" if action == "accepted" else "snoozed"
        try:
            result = self.app.link.answer(appliance, act)
        except LinkError:
            raise FormError(503, N_("The agent is not running, so your answer could not be "
                                    "passed on. Please try again later.")) from None  # fmt: skip
        if result.ok:
            self.session.notify("ok", N_("Thank you: you will run it then.") if act == "accepted"
                                else N_("Snoozed."))  # fmt: skip
        else:
            self.session.notify("error", N_("Your answer was not taken: %(why)s"),
                                why=result.message)  # fmt: skip
        return _redirect("/")

    # -- My energy --------------------------------------------------------------------------------
    def energy(self) -> Response:
        now = self.app.clock.now_ms()
        periods = pages.periods_now(now, self.fmt)
        titles = {
            "today": N_("Energy today, per hour (kWh)"),
            "week": N_("Energy this week, per day (kWh)"),
            "month": N_("Energy this month, per day (kWh)"),
        }
        blocks = []
        for key, period in periods.items():
            totals = read_energy(self.app.settings.energy_path, period.edges_ms, now)
            texts = {
                "title": self.gettext(titles[key]),
                "desc": self.gettext(
                    "Taken from the grid {imported} kWh, given to the grid "
                    "{exported} kWh, own power used at home {own} kWh."
                ),
                "self_used": self.gettext("Own power used at home"),
                "imported": self.gettext("Taken from the grid"),
                "exported": self.gettext("Given to the grid"),
            }
            blocks.append(pages.energy_block(key, period, totals, texts, self.fmt))
        month = local_day(now, self.app.zone).strftime("%Y-%m")
        statement = self._statement(month)
        neighbours = pages.neighbours_wh(statement)
        return self.render(
            "energy.html", blocks=blocks, titles=titles,
            neighbours=self.fmt.kwh(neighbours) if neighbours is not None else None,
            statement_final=statement.final if statement is not None else None,
        )  # fmt: skip

    def _statement(self, period: str) -> Statement | None:
        try:
            return next((s for s in self.app.mailbox.statements() if s.period == period), None)
        except OSError:
            return None

    # -- Money ------------------------------------------------------------------------------------
    def money(self) -> Response:
        try:
            statements = self.app.mailbox.statements()
        except OSError:
            statements = []
        return self.render(
            "money.html", statements=[pages.money_statement(s, self.fmt) for s in statements]
        )

    # -- Sharing ----------------------------------------------------------------------------------
    def sharing(self) -> Response:
        ledger_problem = None
        history = []
        try:
            history = self.app.ledger.history()
        except LedgerError as exc:
            ledger_problem = str(exc)
        grant = history[-1] if history else None
        try:
            receipts = self.app.mailbox.receipts()
        except OSError:
            receipts = []
        return self.render(
            "sharing.html",
            ledger_problem=ledger_problem,
            shared=pages.shared_streams(grant) if grant else [],
            unshared=pages.unshared_streams(grant) if grant else list(words.STREAMS.values()),
            versions=pages.versions(history, self.fmt),
            receipts=pages.receipt_rows(receipts, self.fmt),
            streams=STREAMS, purposes=PURPOSES, resolutions=RESOLUTIONS,
            max_days=MAX_RETENTION_DAYS, default_days=DEFAULT_KEEP_DAYS,
        )  # fmt: skip

    def grant(self) -> Response:
        fields = self.form()
        streams = fields.choices("stream", STREAMS, at_least=1)
        purposes = fields.choices("purpose", PURPOSES, at_least=1)
        resolution = fields.choice("resolution", RESOLUTIONS)
        days = fields.integer("keep_days", 1, MAX_RETENTION_DAYS)
        fields.done()
        try:
            self.app.ledger.grant(
                [Role(s) for s in streams], [Purpose(p) for p in purposes],
                Resolution(resolution), days, self.app.clock.now_ms(),
            )  # fmt: skip
        except LedgerError:
            raise FormError(503, N_("Your sharing choices could not be recorded: the record "
                                    "of earlier choices is damaged.")) from None  # fmt: skip
        self.session.notify("ok", N_("Recorded. Your choices apply from your next reading on."))
        return _redirect("/sharing")

    def revoke(self) -> Response:
        fields = self.form()
        streams = fields.choices("stream", STREAMS, at_least=1)
        purposes = fields.choices("purpose", PURPOSES)
        fields.done()
        try:
            self.app.ledger.revoke(
                [Role(s) for s in streams], [Purpose(p) for p in purposes] or None,
                self.app.clock.now_ms(),
            )  # fmt: skip
        except LedgerError:
            raise FormError(503, N_("Your sharing choices could not be recorded: the record "
                                    "of earlier choices is damaged.")) from None  # fmt: skip
        self.session.notify("ok", N_("Recorded. The cooperative will erase what you no longer "
                                     "share and send a receipt."))  # fmt: skip
        return _redirect("/sharing")

    # -- The Pi -----------------------------------------------------------------------------------
    def pi(self) -> Response:
        state, problem = self._state()
        return self.render(
            "pi.html", link_problem=problem,
            facts=pages.pi_facts(state, self.fmt) if state else None,
            devices=pages.devices(state, self.fmt) if state else [],
        )  # fmt: skip


__all__ = ["Markup", "WebApp"]
