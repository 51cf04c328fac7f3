"""The page's HTTP server: a small HTTP/1.1 front for the WSGI app, on the standard library's
``socketserver`` (threads), without ``http.server``.

``http.server`` and ``wsgiref`` bring ``http.client``, ``email`` and ``ssl`` with them, about
3 MiB of a process that must stay under 30 MiB; the page needs only plain requests on the home
network, so this reads one request per connection (bounded request line and headers, a body of
``Content-Length`` bytes, no chunked bodies), answers it, and closes the connection.

At most ``MAX_CONNECTIONS`` requests are served at once (more are closed at once, so a flood
cannot grow the process); a client that stalls is dropped after ``TIMEOUT_S``. The request log
goes to :mod:`logging` at debug level and holds the method, path and status only (forms are
POSTs and the session travels in a cookie: never a code, password or token).
"""

from __future__ import annotations

import logging
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from protocol.systemd import Notifier

log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 16
TIMEOUT_S: Final = 10.0
MAX_LINE: Final = 8192  # bytes of the request line and of each header line
MAX_HEADERS: Final = 64
TRIM_EVERY_S: Final = 10.0
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")  # fmt: skip


def http_date(t_s: float) -> str:
    """``Tue, 01 Dec 2026 04:05:06 GMT`` (RFC 9110), whatever the process's locale."""
    t = time.gmtime(t_s)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")  # fmt: skip


class BadRequest(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _read_head(rfile: Any) -> tuple[str, str, str, list[tuple[str, str]]]:
    """The request line's method, target and version, and the headers."""
    line = rfile.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionAbortedError
    if len(line) > MAX_LINE:
        raise BadRequest("414 URI Too Long")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("400 Bad Request")
    method, target, version = parts
    if not method.isascii() or not method.isalpha() or not target.startswith("/"):
        raise BadRequest("400 Bad Request")
    headers: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE or len(headers) >= MAX_HEADERS:
            raise BadRequest("431 Request Header Fields Too Large")
        if raw in (b"\r\n", b"\n", b""):
            break
        text = raw.decode("latin-1").rstrip("\r\n")
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip() or text[0] in " \t":
            raise BadRequest("400 Bad Request")  # no obsolete line folding either
        headers.append((name.lower(), value.strip(" \t")))
    return method.upper(), target, version, headers


def _environ(
    method: str, target: str, version: str, headers: list[tuple[str, str]], handler: Any
) -> dict[str, Any]:
    path, _, query = target.partition("?")
    server = handler.server
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": str(server.server_address[0]),
        "SERVER_PORT": str(server.server_address[1]),
        "SERVER_PROTOCOL": version,
        "REMOTE_ADDR": str(handler.client_address[0]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": handler.rfile,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        if name == "transfer-encoding":
            raise BadRequest("501 Not Implemented")  # chunked bodies: the page's forms never are
        if name in ("content-type", "content-length"):
            key = name.replace("-", "_").upper()
        else:
            key = "HTTP_" + name.replace("-", "_").upper()
        if key in environ:
            if key in ("CONTENT_LENGTH", "HTTP_HOST"):
                raise BadRequest("400 Bad Request")  # two lengths or hosts: refuse, never guess
            joiner = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = f"{environ[key]}{joiner}{value}"
        else:
            environ[key] = value
    return environ


class _Handler(socketserver.StreamRequestHandler):
    timeout = TIMEOUT_S

    def handle(self) -> None:
        try:
            method, target, version, headers = _read_head(self.rfile)
            environ = _environ(method, target, version, headers, self)
        except BadRequest as exc:
            self._send(exc.status, [("Content-Type", "text/plain; charset=utf-8")],
                       [exc.status.encode()])  # fmt: skip
            return
        except (ConnectionAbortedError, TimeoutError, OSError):
            return
        app: WsgiApp = self.server.app  # type: ignore[attr-defined]
        answer: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:  # fmt: skip
            answer["status"], answer["headers"] = status, response_headers
            return lambda data: None  # the app returns its body; it never writes

        try:
            body = list(app(environ, start_response))
            self._send(answer["status"], answer["headers"], body)
        except (TimeoutError, OSError):
            return  # the client went away
        log.debug("%s %s %s %s", self.client_address[0], method, environ["PATH_INFO"],
                  answer.get("status", "?")[:3])  # fmt: skip

    def _send(self, status: str, headers: list[tuple[str, str]], body: list[bytes]) -> None:
        lines = [f"HTTP/1.1 {status}", f"Date: {http_date(time.time())}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        if not any(name.lower() == "content-length" for name, _ in headers):
            lines.append(f"Content-Length: {sum(len(b) for b in body)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + b"".join(body))


class PageServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, address: tuple[str, int], app: WsgiApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.notifier: Notifier | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._trimmed = 0.0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("too many connections at once; closing one from %s", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def service_actions(self) -> None:
        if self.notifier is not None:
            self.notifier.ping()  # systemd's watchdog, fed from the serving loop only
        now = time.monotonic()
        if now - self._trimmed >= TRIM_EVERY_S:
            self._trimmed = now
            release_free_memory()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``): what loading
    and the first requests freed, which would otherwise stay resident. A no-op elsewhere."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:  # no glibc, no ctypes: nothing to give back, go on
        return


def make_server(app: WsgiApp, host: str, port: int) -> PageServer:
    return PageServer((host, port), app)


def serve(app: WsgiApp, host: str, port: int, notifier: Notifier) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    server = make_server(app, host, port)
    server.notifier = notifier

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %d", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving the household page on http://%s:%d/", shown, server.server_address[1])
    notifier.ready(f"serving on port {server.server_address[1]}")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        notifier.stopping()
        server.server_close()
