"""The household page as installed: ``coopwatt-agent web`` in its own process, over real HTTP
on a free port, with systemd's notify protocol, and its unit file. Also what its small HTTP
server does with requests a browser would never send."""

from __future__ import annotations

import configparser
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from agent.web.household import write_code
from agent.web.server import http_date
from agent.web.settings import read_settings
from sim.broker import free_port
from tests.fake_systemd import WAIT_S, FakeSystemd
from tests.web_home import make_home, running_agent

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "coopwatt-agent"


class Page:
    def __init__(self, tmp: Path) -> None:
        self.config = make_home(tmp, energy_days=2)
        self.settings = read_settings(self.config)
        self.code = write_code(self.settings.code_path)
        self.port = free_port()
        self.notify = FakeSystemd()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(self.notify.path),
               "WATCHDOG_USEC": "2000000"}  # fmt: skip
        self.proc = subprocess.Popen(
            [str(EXE), "web", "--config", str(self.config), "--bind", "127.0.0.1",
             "--port", str(self.port), "--log-level", "debug"],
            env=env, stderr=subprocess.PIPE,
        )  # fmt: skip

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        conn.request(method, path, body=body or None, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def raw(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=WAIT_S)
        self.notify.close()
        return self.proc.returncode, err.decode()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    p = Page(tmp_path)
    try:
        p.notify.until("READY")
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def shared_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """One page process for the tests that only send it requests (a start takes a second)."""
    p = Page(tmp_path_factory.mktemp("page"))
    try:
        p.notify.until("READY")
        yield p
    finally:
        p.stop()


def test_the_page_process_serves_the_household_over_http(page: Page) -> None:
    # `coopwatt-agent web` became the page's own small process: the same pid, python -m agent.web.
    cmdline = Path(f"/proc/{page.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"agent.web" in cmdline and b"-m" in cmdline
    environ = Path(f"/proc/{page.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"MALLOC_ARENA_MAX=2" in environ
    status, headers, _ = page.request("GET", "/")
    assert status == 303 and headers["location"] == "/setup"
    assert headers["connection"] == "close" and "content-security-policy" in headers
    cookie = headers["set-cookie"].split(";")[0]
    status, _, body = page.request("GET", "/setup", headers={"Cookie": cookie})
    m = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert status == 200 and m is not None
    form = urlencode({"csrf": m.group(1).decode(), "code": page.code, "password": "over http!",
                      "password2": "over http!"}).encode()  # fmt: skip
    status, headers, _ = page.request("POST", "/setup", form, {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded",
        "Origin": f"http://127.0.0.1:{page.port}",
    })  # fmt: skip
    assert status == 303, headers  # scrypt ran in its helper: no OpenSSL in the page process
    cookie = headers["set-cookie"].split(";")[0]
    maps = Path(f"/proc/{page.proc.pid}/maps").read_text()
    assert "libcrypto" not in maps and "libssl" not in maps
    with running_agent(page.settings.data_dir):
        for path in ("/", "/energy", "/money", "/sharing", "/pi", "/?lang=nl"):
            status, headers, body = page.request("GET", path, headers={"Cookie": cookie})
            assert status == 200 and len(body) == int(headers["content-length"]), path
    status, headers, body = page.request("HEAD", "/money", headers={"Cookie": cookie})
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    status, headers, body = page.request("GET", "/style.css")
    assert status == 200 and headers["content-type"].startswith("text/css") and b":root" in body
    code, err = page.stop()
    assert code == 0
    assert "over http!" not in err and page.code not in err and cookie.split("=")[1] not in err


def test_the_page_tells_systemd_it_stops(page: Page) -> None:
    page.proc.send_signal(signal.SIGTERM)
    assert "STOPPING" in page.notify.until("STOPPING")
    assert page.proc.wait(WAIT_S) == 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET\r\n\r\n", b"400"),
        (b"GET / HTTP/2.0\r\n\r\n", b"400"),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 70 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"400"),
        (b"POST /signin HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"POST /signin HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", b"400"),
        (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET /%ZZ%00 HTTP/1.0\r\n\r\n", b"303"),
    ],
)
def test_requests_no_browser_sends_get_a_plain_answer(
    shared_page: Page, request_bytes: bytes, status: bytes
) -> None:
    answer = shared_page.raw(request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    # still serving (no password yet: setup)
    assert shared_page.request("GET", "/signin")[0] == 303


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(EXE), *args], capture_output=True, env=env, timeout=WAIT_S, check=False
    )


def test_a_config_mistake_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('coop = "c"\nhome = "h"\ntimezone = "Mars/Olympus"\n')
    done = _run("web", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        f"Error: {config}: timezone 'Mars/Olympus' is not a known IANA time zone"
    ]


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = make_home(tmp_path, energy_days=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = _run("web", "--config", str(config), "--bind", "127.0.0.1", "--port", str(port))
    assert done.returncode == 2 and "Error: cannot serve on 127.0.0.1" in done.stderr.decode()


def test_help_is_written_for_the_household() -> None:
    done = _run("web", "--help")
    text = done.stdout.decode()
    assert done.returncode == 0 and "one-time code" in text and "new-code" in text
    assert "--bind" in text and "--port" in text and "8080" in text


def test_http_dates_do_not_depend_on_the_locale() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    # 1,795,000,000 s = 20,775 days + 40,000 s; 20,775 = 20,454 (to 2026) + 321: 18 November,
    # a Wednesday (1 January 1970 was a Thursday, and 20,775 days are 6 more than whole weeks).
    assert http_date(1_795_000_000) == "Wed, 18 Nov 2026 11:06:40 GMT"


def test_the_unit_file() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "systemd" / "coopwatt-agent-web.service").read_text())
    service = parser["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 30 and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["User"] == "coopwatt" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["CapabilityBoundingSet"] == ""
    assert service["ReadWritePaths"] == "/var/lib/coopwatt"
    assert service["ExecStart"].split()[1:3] == ["web", "--config"]
    assert "--port 8080" in service["ExecStart"] and "--bind 0.0.0.0" in service["ExecStart"]
    assert "coopwatt-agent.service" in parser["Unit"]["After"]
