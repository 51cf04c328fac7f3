"""The threaded HTTP server that runs the page: the standard library's, kept small.

At most ``MAX_CONNECTIONS`` requests are served at once (more are closed at once, so a flood
cannot grow the process), each connection may idle ``TIMEOUT_S`` seconds, and the request log
goes to :mod:`logging` at debug level (it never holds a code, password or token: forms are
POSTs and the session travels in a cookie).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from agent.web.app import WebApp
from protocol.systemd import Notifier

log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 16
TIMEOUT_S: Final = 10.0


class _Handler(WSGIRequestHandler):
    timeout = TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def address_string(self) -> str:
        return str(self.client_address[0])


class PageServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: WebApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.set_app(app)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

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


def make_server(app: WebApp, host: str, port: int) -> PageServer:
    return PageServer((host, port), app)


class _Watched(PageServer):
    """The server whose loop feeds systemd's watchdog (so a hung loop is restarted)."""

    notifier: Notifier | None = None

    def service_actions(self) -> None:
        if self.notifier is not None:
            self.notifier.ping()  # it pings at most every quarter of the watchdog's interval


def serve(app: WebApp, host: str, port: int, notifier: Notifier) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    server = _Watched((host, port), app)
    server.notifier = notifier

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %d", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host_shown = f"[{host}]" if ":" in host else host
    log.info("serving the household page on http://%s:%d/", host_shown, server.server_port)
    notifier.ready(f"serving on port {server.server_port}")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        notifier.stopping()
        server.server_close()
