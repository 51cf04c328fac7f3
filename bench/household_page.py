"""The household page: time to answer each page, page sizes, and the page process's memory.

A home's data folder is filled as the agent leaves it (35 days of 5-minute readings in the
energy log, two statements and two receipts in the mailbox, two consent versions), a stand-in
for the running agent answers on its local socket (the agent's own link server, in this
process), and the page runs as installed: ``coopwatt-agent web`` in its own process. The bench
sets the household's password with the one-time code, then asks for every page ``--rounds``
times in each language over real HTTP, and reads the page process's resident memory from /proc
(``VmRSS`` after the run, peak ``VmHWM``).

Targets (issue 20): under 200 ms per request, under 150 kB per page, under 30 MiB resident.

    .venv/bin/python bench/household_page.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import http.client
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.web.household import write_code  # noqa: E402
from agent.web.settings import read_settings  # noqa: E402
from protocol.clock import SystemClock  # noqa: E402
from tests.web_home import FakeAgent, agent_state, make_home, running_agent  # noqa: E402

PAGES = ["/", "/energy", "/money", "/sharing", "/pi"]
LANGUAGES = ["en", "de", "nl"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def request(
    port: int, method: str, path: str, cookie: str = "", body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": f"127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
    conn.close()
    return result


def cookie_of(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="requests per page and language")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        now = SystemClock().now_ms()
        t0 = time.perf_counter()
        config = make_home(folder, now_ms=now)
        print(f"home filled in {time.perf_counter() - t0:.1f} s")
        settings = read_settings(config)
        code = write_code(settings.code_path)
        port = free_port()
        exe = Path(sys.executable).with_name("coopwatt-agent")
        page = subprocess.Popen(
            [str(exe), "web", "--config", str(config), "--bind", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
        )  # fmt: skip
        try:
            with running_agent(settings.data_dir, FakeAgent(agent_state(now))):
                run(port, page.pid, code, args.rounds)
        finally:
            page.terminate()
            page.wait(10)


def run(port: int, pid: int, code: str, rounds: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            status, headers, body = request(port, "GET", "/setup")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    started = memory_kib(pid)
    cookie = cookie_of(headers)
    match = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert match is not None
    form = {"csrf": match.group(1).decode(), "code": code, "password": "bench password",
            "password2": "bench password"}  # fmt: skip
    t = time.perf_counter()
    status, headers, _ = request(port, "POST", "/setup", cookie, urlencode(form).encode())
    setup_ms = (time.perf_counter() - t) * 1000
    assert status == 303, status
    cookie = cookie_of(headers)
    print(f"page process started: {started['VmRSS'] / 1024:.1f} MiB resident")
    print(f"setup (scrypt of the new password): {setup_ms:.0f} ms")
    print(f"{'page':<10}{'lang':<6}{'median ms':>10}{'p95 ms':>8}{'max ms':>8}{'kB':>8}")
    worst = 0.0
    for path in PAGES:
        for language in LANGUAGES:
            times = []
            size = 0
            for _ in range(rounds):
                t = time.perf_counter()
                status, _, body = request(port, "GET", f"{path}?lang={language}", cookie)
                times.append((time.perf_counter() - t) * 1000)
                assert status == 200, (path, status)
                size = len(body)
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            worst = max(worst, times[-1])
            print(f"{path:<10}{language:<6}{statistics.median(times):>10.1f}{p95:>8.1f}"
                  f"{times[-1]:>8.1f}{size / 1000:>8.1f}")  # fmt: skip
    css = request(port, "GET", "/style.css")[2]
    print(f"style.css: {len(css) / 1000:.1f} kB (cached by the browser for an hour)")
    signin_ms = sign_in_again(port)
    print(f"sign-in from another browser (scrypt of the password): {signin_ms:.0f} ms")
    mem = memory_kib(pid)
    requests = rounds * len(PAGES) * len(LANGUAGES)
    rss, peak = mem["VmRSS"] / 1024, mem["VmHWM"] / 1024
    print(f"page process after {requests} requests: {rss:.1f} MiB resident, peak {peak:.1f} MiB")
    print(f"slowest request: {worst:.1f} ms")
    time.sleep(12)  # the page gives freed memory back every 10 s
    idle = memory_kib(pid)["VmRSS"] / 1024
    print(f"page process 12 s later, idle: {idle:.1f} MiB resident")


def sign_in_again(port: int) -> float:
    status, headers, body = request(port, "GET", "/signin")
    match = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert status == 200 and match is not None, status
    form = urlencode({"csrf": match.group(1).decode(), "password": "bench password"})
    t = time.perf_counter()
    status, _, _ = request(port, "POST", "/signin", cookie_of(headers), form.encode())
    assert status == 303, status
    return (time.perf_counter() - t) * 1000


if __name__ == "__main__":
    main()
