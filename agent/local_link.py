"""The running agent's local socket: how the household page asks it for state and answers prompts.

The agent stays the only program that talks to the cooperative's broker (one session per home),
so the page (``coopwatt-agent web``, a separate process that may restart on its own) asks the
agent over a Unix socket in its data folder (``agent.sock``, mode 0600: only the ``coopwatt``
user, which both run as, may connect). One JSON line asks, one JSON line answers; the messages
are dataclasses checked by the wire contract's strict codec, so a malformed request is refused
in words and a version mismatch between agent and page shows as an error, not a wrong page.

Requests: ``{"v": 1, "op": "state"}`` and ``{"v": 1, "op": "answer", "appliance": ..., "action":
"accepted" | "snoozed"}``. The answer to the latter publishes the same ``Feedback`` the button
does, on the agent's own session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from protocol.codec import CodecError, decode, encode
from protocol.payloads import Feedback, LevelSpan

log = logging.getLogger(__name__)

MAX_LINE: Final = 8 * 1024  # a request is a few dozen bytes; anything longer is refused
MAX_ANSWER: Final = 1024 * 1024  # an agent with many devices and a week of prompts fits


class LinkError(Exception):
    """The agent did not answer: not running, not reachable, or it refused the request."""


@dataclass(frozen=True, slots=True)
class LinkRequest:
    op: Literal["state", "answer"]
    appliance: str | None = None
    action: Literal["accepted", "snoozed"] | None = None


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device and its last poll, before consent (this never leaves the home)."""

    name: str
    role: str
    online: bool
    error: str | None = None
    last_ok_ms: int | None = None
    last_ts_ms: int | None = None
    quantities: dict[str, float | str] | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    """One appliance's advice: its windows still to come ([start_ms, end_ms] pairs)."""

    appliance: str
    windows: list[list[int]]
    reason: str
    benefit_wh: float
    active: bool
    answer: str | None = None  # accepted, done or snoozed


@dataclass(frozen=True, slots=True)
class AdviceState:
    """What the light says now; ``level`` None: no current advice (or snoozed, or expired)."""

    reason: str
    runs: list[RunState]
    levels: list[LevelSpan]
    level: Literal["green", "amber", "red"] | None = None
    valid_until_ms: int | None = None
    snoozed_until_ms: int | None = None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class AgentState:
    coop: str
    home: str
    version: str
    now_ms: int
    timezone: str  # IANA zone of the home ("UTC" when the config names none)
    connected: bool
    backlog: int
    lost: int
    compacted: int
    devices: list[DeviceState]
    advice: AdviceState
    prompts_shared: bool  # the grant shares something for the prompts purpose
    connected_since_ms: int | None = None
    last_connected_ms: int | None = None
    unacked_age_s: int | None = None


@dataclass(frozen=True, slots=True)
class AnswerResult:
    ok: bool
    message: str
    feedback: Feedback | None = None
    sent: bool = False  # False: kept as the button's are, and the prompts are not shared


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str


# -- the agent's side ----------------------------------------------------------------------------
StateFn = Callable[[], AgentState]
AnswerFn = Callable[[str | None, Literal["accepted", "snoozed"]], AnswerResult]


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    state: StateFn
    answer: AnswerFn


class _Handler(socketserver.StreamRequestHandler):
    timeout = 5.0  # a client that connects and says nothing is dropped

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            reply: object = _Failure("request too long")
        else:
            try:
                req = decode(LinkRequest, line.strip())
            except CodecError as exc:
                reply = _Failure(f"malformed request: {exc}")
            else:
                try:
                    if req.op == "state":
                        reply = server.state()
                    elif req.action is None:
                        reply = _Failure("an answer needs an action")
                    else:
                        reply = server.answer(req.appliance, req.action)
                except Exception:
                    log.exception("the local link could not answer %s", req.op)
                    reply = _Failure("the agent failed to answer; see its log")
        self.wfile.write(encode(reply) + b"\n")


class LinkServer:
    """Serves the socket from a thread of its own until :meth:`close`.

    The thread waits for a connection with no timeout. socketserver's ``serve_forever`` would
    wake every 0.5 s to look for a shutdown: 120 wakeups a minute, a tenth of a single-meter
    agent's CPU budget (issue 22). :meth:`close` wakes the wait instead, by shutting the
    listening socket down, which makes it readable and its ``accept`` fail.
    """

    def __init__(self, path: Path, state: StateFn, answer: AnswerFn) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a socket left by an agent that was killed
        # 0600 before it is there to connect to: bound under another name, made private, then
        # renamed into place. Not by the umask, which is the whole process's (a demo's agents
        # start side by side in threads, and one left it at 0177 for everything after).
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        self._server = _Server(str(staging), _Handler)
        os.chmod(staging, 0o600)
        os.replace(staging, path)
        self._server.state = state
        self._server.answer = answer
        self._server.timeout = None  # handle_request waits for a connection, however long
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="local-link", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing:
            self._server.handle_request()  # after close(), accept fails and this returns

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):  # already shut
            self._server.socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        self._server.server_close()
        self.path.unlink(missing_ok=True)


# -- the page's side -----------------------------------------------------------------------------
class AgentLink:
    def __init__(self, path: Path, timeout_s: float = 1.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def state(self) -> AgentState:
        return decode(AgentState, self._ask(LinkRequest("state")))

    def answer(self, appliance: str | None, action: Literal["accepted", "snoozed"]) -> AnswerResult:
        return decode(AnswerResult, self._ask(LinkRequest("answer", appliance, action)))

    def _ask(self, request: LinkRequest) -> bytes:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout_s)
                s.connect(str(self.path))
                s.sendall(encode(request) + b"\n")
                data = b""
                while not data.endswith(b"\n") and len(data) <= MAX_ANSWER:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except FileNotFoundError:
            raise LinkError("the agent is not running") from None
        except ConnectionRefusedError:
            raise LinkError("the agent is not running") from None
        except TimeoutError:
            raise LinkError("the agent did not answer in time") from None
        except OSError as exc:
            raise LinkError(f"cannot reach the agent: {exc.strerror or exc}") from None
        try:
            return _checked(data)
        except CodecError as exc:
            raise LinkError(f"the agent's answer did not make sense: {exc}") from None


def _checked(data: bytes) -> bytes:
    """The answer's bytes, or LinkError when it is the agent's refusal."""
    try:
        failure = decode(_Failure, data.strip())
    except CodecError:
        return data.strip()
    raise LinkError(failure.error)
