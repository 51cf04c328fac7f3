"""A browser stand-in for the household page's WSGI app: keeps its cookies, finds each form's
CSRF token, and sends forms as a browser does (same origin)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from agent.web.app import WebApp
from agent.web.household import write_code
from agent.web.settings import WebSettings, read_settings
from protocol.clock import ManualClock
from tests.web_home import NOW_MS, make_home

HOST = "pi.local:8080"
PASSWORD = "correct horse battery"


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    text: str

    @property
    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]*)"', self.text)
        assert m is not None, "no form on the page"
        return m.group(1)


@dataclass
class Browser:
    app: WebApp
    address: str = "192.168.1.20"
    language: str = "en"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/x-www-form-urlencoded",
        headers: dict[str, str] | None = None,
    ) -> Page:
        path_only, _, query = path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path_only, "QUERY_STRING": query,
            "HTTP_HOST": HOST, "REMOTE_ADDR": self.address,
            "HTTP_ACCEPT_LANGUAGE": self.language,
            "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "wsgi.input": io.BytesIO(body),
        }  # fmt: skip
        if method == "POST":
            environ["CONTENT_TYPE"] = content_type
            environ["CONTENT_LENGTH"] = str(len(body))
        for name, value in (headers or {}).items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
        answer: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            answer["status"], answer["headers"] = status, response_headers

        data = b"".join(self.app(environ, start_response))
        set_cookies = [v for k, v in answer["headers"] if k == "Set-Cookie"]
        for c in set_cookies:
            name, _, value = c.split(";")[0].partition("=")
            self.cookies[name] = value
        return Page(int(answer["status"][:3]), dict(answer["headers"]), set_cookies,
                    data.decode())  # fmt: skip

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, Any] | list[tuple[str, str]], *,
             csrf_from: str | None = None, **kw: Any) -> Page:  # fmt: skip
        """Send a form; its CSRF token is taken from ``csrf_from`` (a page) unless given."""
        pairs = list(fields.items()) if isinstance(fields, dict) else list(fields)
        if csrf_from is not None:
            pairs.insert(0, ("csrf", self.get(csrf_from).csrf))
        return self.request("POST", path, urlencode(pairs, doseq=True).encode(), **kw)


@dataclass
class Home:
    settings: WebSettings
    clock: ManualClock
    app: WebApp
    code: str


def new_home(folder: Path, *, energy_days: int = 3) -> Home:
    config = make_home(folder, energy_days=energy_days)
    settings = read_settings(config)
    code = write_code(settings.code_path)
    clock = ManualClock(NOW_MS)
    return Home(settings, clock, WebApp(settings, clock), code)


def signed_in(home: Home, **kw: Any) -> Browser:
    """A browser that set the household's password with the code (first visit)."""
    b = Browser(home.app, **kw)
    page = b.post("/setup", {"code": home.code, "password": PASSWORD, "password2": PASSWORD},
                  csrf_from="/setup")  # fmt: skip
    assert page.status == 303 and page.headers["Location"] == "/", page.text
    return b


def another_browser(home: Home, **kw: Any) -> Browser:
    """A second browser of the household, signed in with the password."""
    b = Browser(home.app, **kw)
    page = b.post("/signin", {"password": PASSWORD}, csrf_from="/signin")
    assert page.status == 303 and page.headers["Location"] == "/", page.text
    return b
