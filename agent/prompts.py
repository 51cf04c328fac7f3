"""The household's prompts on the device: what to show, when it expires, what a press means.

:class:`PromptBoard` is the state, a pure function of the prompts received and the clock: the
light at any time follows the prompt's level course, and once ``valid_until_ms`` passes it shows
nothing, whether or not the hub is still there to send newer advice. A snooze turns the light
off for a while; a new prompt (windows that differ from the last) ends the snooze and blinks.

:class:`HomePrompts` wires the board to the agent: it builds the ``appliances`` message under the
household's grant, takes ``prompts`` from the agent's connection, drives the light, button and
views from a small thread, keeps the last prompts on disk for a restart without the hub, and
publishes the button's answers as ``feedback``.

The button: a short press is "we will run it then" (``accepted``) for the appliance whose window
is next, or "it is running" (``done``) while its window is open; a hold is ``snoozed``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from agent.appliances import appliances_message, grants_prompts
from agent.display import BoardView, ConsoleView, OledView, PromptView, RunView
from agent.indicator import IndicatorConfig, PressButton, TrafficLight
from protocol.clock import Clock
from protocol.codec import CodecError, decode, encode
from protocol.consent import ConsentGrant, nothing_shared
from protocol.payloads import Appliance, AppliancePrompt, Feedback, FeedbackAction, Prompts
from protocol.topics import HomeTopic, home_topic

log = logging.getLogger(__name__)

TICK_S: Final = 0.1  # the light's and views' refresh (wall seconds): smooth enough for a blink
NOTICE_EVERY_MS: Final = 10_000  # how often the displays look for the page's one-time code


def _content(p: Prompts | None) -> object:
    if p is None:
        return None
    return tuple(
        (a.appliance, tuple((w.start_ms, w.end_ms) for w in a.windows)) for a in p.appliances
    )


class PromptBoard:
    """The prompts a home holds and what it answered; every method takes the time."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.prompts: Prompts | None = None
        self.snoozed_until_ms = 0
        self.answers: dict[tuple[str, int], FeedbackAction] = {}  # (appliance, window start)

    def take(self, prompts: Prompts | None, now_ms: int) -> bool:
        """Hold ``prompts`` (None: the hub withdrew them); True when they are news to show."""
        if prompts is not None and prompts.home != self.home:
            return False
        old = self.prompts
        if prompts is not None and old is not None and prompts.issued_ms < old.issued_ms:
            return False  # an older retained copy after a newer one
        news = _content(prompts) != _content(self.prompts) and prompts is not None
        self.prompts = prompts
        if news:
            self.snoozed_until_ms = 0
        return news and self.current(now_ms) is not None

    def current(self, now_ms: int) -> Prompts | None:
        """The prompts, while they are valid."""
        p = self.prompts
        if p is None or not p.issued_ms <= now_ms < p.valid_until_ms:
            return None
        return p

    def expired(self, now_ms: int) -> bool:
        return self.prompts is not None and now_ms >= self.prompts.valid_until_ms

    def snoozed(self, now_ms: int) -> bool:
        return now_ms < self.snoozed_until_ms

    def focus(self, now_ms: int) -> tuple[AppliancePrompt, int, bool] | None:
        """The run a press is about: one whose window is open now, else the next to open; with
        that window's start and whether it is open."""
        p = self.current(now_ms)
        if p is None:
            return None
        best: tuple[AppliancePrompt, int, bool] | None = None
        for a in p.appliances:
            for w in a.windows:
                if w.start_ms <= now_ms < w.end_ms:
                    return a, a.windows[0].start_ms, True
                if w.start_ms > now_ms and (best is None or w.start_ms < best[1]):
                    best = (a, a.windows[0].start_ms, False)
        return best

    def view(self, now_ms: int) -> BoardView:
        p = self.current(now_ms)
        if p is None:
            return BoardView(None, "", (), None, expired=self.expired(now_ms))
        runs = []
        for a in p.appliances:
            upcoming = tuple((w.start_ms, w.end_ms) for w in a.windows if w.end_ms > now_ms)
            if not upcoming:
                continue
            active = any(w.start_ms <= now_ms < w.end_ms for w in a.windows)
            answer = self.answers.get((a.appliance, a.windows[0].start_ms))
            runs.append(RunView(a.appliance, upcoming, a.reason, a.benefit_wh, active, answer))
        if self.snoozed(now_ms):
            return BoardView(None, "", tuple(runs), p.valid_until_ms, self.snoozed_until_ms)
        level = p.level_at(now_ms)
        reason = next((s.reason for s in p.levels if s.start_ms <= now_ms < s.end_ms), p.reason)
        return BoardView(level, reason, tuple(runs), p.valid_until_ms)

    def press(self, now_ms: int) -> Feedback | None:
        """A short press: accepted (or done, in the window); None without current prompts."""
        focus = self.focus(now_ms)
        p = self.current(now_ms)
        if p is None:
            return None
        if focus is None:
            return Feedback(self.home, now_ms, p.prompt, "accepted")
        run, start, active = focus
        action: FeedbackAction = "done" if active else "accepted"
        self.answers[(run.appliance, start)] = action
        self.snoozed_until_ms = 0
        return Feedback(self.home, now_ms, p.prompt, action, run.appliance, start)

    def answer(
        self, now_ms: int, appliance: str | None, action: FeedbackAction, snooze_ms: int
    ) -> Feedback | None:
        """The household page's answer: the button's, for a named appliance's next run.

        ``accepted`` is a press (``done`` while the run's window is open), ``snoozed`` a hold;
        None for ``appliance`` answers as the button does. None when there is no current
        advice, the appliance has no run still to come, or the action is not one a household
        gives (``done`` follows from the window, it is not asked for).
        """
        if appliance is None:
            if action == "accepted":
                return self.press(now_ms)
            return self.hold(now_ms, snooze_ms) if action == "snoozed" else None
        p = self.current(now_ms)
        if p is None or action not in ("accepted", "snoozed"):
            return None
        run = next((a for a in p.appliances if a.appliance == appliance), None)
        if run is None or not any(w.end_ms > now_ms for w in run.windows):
            return None
        start = run.windows[0].start_ms
        if action == "snoozed":
            self.snoozed_until_ms = now_ms + snooze_ms
        else:
            active = any(w.start_ms <= now_ms < w.end_ms for w in run.windows)
            action = "done" if active else "accepted"
            self.snoozed_until_ms = 0
        self.answers[(appliance, start)] = action
        return Feedback(self.home, now_ms, p.prompt, action, appliance, start)

    def hold(self, now_ms: int, snooze_ms: int) -> Feedback | None:
        """A hold: snooze the light, and tell the hub the next run will not be shifted."""
        p = self.current(now_ms)
        if p is None:
            return None
        self.snoozed_until_ms = now_ms + snooze_ms
        focus = self.focus(now_ms)
        if focus is None:
            return Feedback(self.home, now_ms, p.prompt, "snoozed")
        run, start, _ = focus
        self.answers[(run.appliance, start)] = "snoozed"
        return Feedback(self.home, now_ms, p.prompt, "snoozed", run.appliance, start)


Publish = Callable[[str, bytes, bool], Any]  # topic, payload, retain


class HomePrompts:
    """The device side of prompts for one agent (see the module docstring)."""

    def __init__(
        self,
        coop: str,
        home: str,
        clock: Clock,
        publish: Publish,
        *,
        appliances: tuple[Appliance, ...] = (),
        timezone: str | None = None,
        indicator: IndicatorConfig | None = None,
        data_dir: Path | None = None,
        pin_factory: object | None = None,
        oled_device: Any = None,
    ) -> None:
        self.coop = coop
        self.home = home
        self.clock = clock
        self._publish = publish
        self.appliances = appliances
        self.timezone = timezone
        self.zone = ZoneInfo(timezone or "UTC")
        self.indicator = indicator
        self.board = PromptBoard(home)
        self.topic = home_topic(coop, home, HomeTopic.PROMPTS)
        self.appliances_topic = home_topic(coop, home, HomeTopic.APPLIANCES)
        self.feedback_topic = home_topic(coop, home, HomeTopic.FEEDBACK)
        self._grant: ConsentGrant = nothing_shared(home)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store = data_dir / "prompts.json" if data_dir is not None else None
        # Until the household has set up its page, the displays show the installer's one-time
        # code (the bundle put it in the data folder; the page deletes it once used).
        self._code_path = data_dir / "household-code" if data_dir is not None else None
        self._notice: str | None = None
        self._notice_read_ms: int | None = None
        self.sent: list[Feedback] = []  # what the button sent, newest last (for the views/tests)
        self.light: TrafficLight | None = None
        self.button: PressButton | None = None
        self.views: list[PromptView] = []
        cfg = indicator
        # A broken light or button must not stop the meters being read: log and go on.
        try:
            if cfg is not None and cfg.led != "none":
                self.light = TrafficLight(cfg, pin_factory=pin_factory, now_ms=clock.now_ms)
            if cfg is not None and cfg.button is not None:
                self.button = PressButton(
                    cfg.button, cfg.hold_s, self.press, self.hold, bounce_s=cfg.bounce_s,
                    pin_factory=pin_factory, now_ms=clock.now_ms,
                )  # fmt: skip
        except Exception as exc:  # gpiozero's errors, or no GPIO on this machine
            log.error("cannot use the prompts' light or button on GPIO: %s", exc)
        if cfg is not None and cfg.console is not None:
            try:
                self.views.append(ConsoleView(cfg.console, self.zone))
            except OSError as exc:
                log.error("cannot open the console view on %s: %s", cfg.console, exc)
        if oled_device is not None:
            self.views.append(OledView(oled_device, self.zone))
        elif cfg is not None and cfg.display is not None:
            try:
                self.views.append(
                    OledView.open(cfg.display, cfg.i2c_port, cfg.i2c_address, self.zone)
                )
            except ImportError:
                log.error("the %s display needs luma.oled: pip install 'coopwatt[display]'",
                          cfg.display)  # fmt: skip
            except Exception as exc:  # luma raises its own error types for a missing device
                log.error("cannot open the %s display: %s", cfg.display, exc)
        self._load()

    def add_view(self, view: PromptView) -> None:
        """Show the board on ``view`` too (before :meth:`start`); it closes with the rest."""
        with self._lock:
            self.views.append(view)

    # -- appliances and consent -------------------------------------------------------------
    def publish_appliances(self, grant: ConsentGrant) -> None:
        """Publish the appliances (retained) under ``grant``, or withdraw them without prompts."""
        with self._lock:
            self._grant = grant
        message = appliances_message(
            self.home, self.timezone, self.appliances, grant, self.clock.now_ms()
        )
        self._publish(self.appliances_topic, encode(message), True)

    @property
    def granted(self) -> bool:
        return grants_prompts(self._grant)

    # -- prompts in ---------------------------------------------------------------------------
    def receive(self, payload: bytes) -> None:
        """A ``prompts`` message (paho's thread); an empty one clears them (the hub withdrew)."""
        prompts: Prompts | None = None
        if payload:
            try:
                prompts = decode(Prompts, payload)
            except CodecError as exc:
                log.warning("ignoring malformed prompts: %s", exc)
                return
        self.take(prompts)

    def take(self, prompts: Prompts | None) -> None:
        now = self.clock.now_ms()
        with self._lock:
            news = self.board.take(prompts, now)
            if news and self.light is not None:
                self.light.flash()
            self._save()
        self.tick()

    # -- the button ---------------------------------------------------------------------------
    @property
    def _snooze_ms(self) -> int:
        return (self.indicator.snooze_min if self.indicator else 60) * 60_000

    def press(self) -> Feedback | None:
        with self._lock:
            feedback = self.board.press(self.clock.now_ms())
        return self._answer(feedback)

    def hold(self) -> Feedback | None:
        with self._lock:
            feedback = self.board.hold(self.clock.now_ms(), self._snooze_ms)
        return self._answer(feedback)

    def answer(self, appliance: str | None, action: FeedbackAction) -> Feedback | None:
        """The household page's "will do" or "snooze" (see :meth:`PromptBoard.answer`)."""
        with self._lock:
            feedback = self.board.answer(self.clock.now_ms(), appliance, action, self._snooze_ms)
        return self._answer(feedback)

    def view(self) -> BoardView:
        """What the light and views show now (any thread)."""
        with self._lock:
            return self.board.view(self.clock.now_ms())

    def _answer(self, feedback: Feedback | None) -> Feedback | None:
        if feedback is None:
            return None
        self.sent.append(feedback)
        if self.granted:
            self._publish(self.feedback_topic, encode(feedback), False)
        log.info("household %s %s", feedback.action, feedback.appliance or "the prompts")
        self.tick()
        return feedback

    # -- what shows -----------------------------------------------------------------------------
    def tick(self) -> BoardView:
        """Bring the light and the views up to the clock: expiry, the level course, blinks."""
        now = self.clock.now_ms()
        with self._lock:
            view = self.board.view(now)
            notice = self._setup_notice(now)
            if notice is not None:
                view = dataclasses.replace(view, notice=notice)
            if self.light is not None:
                self.light.update(view.level)
            for v in self.views:
                try:
                    v.show(view, now)
                except Exception:
                    log.exception("a prompts view failed")
        return view

    def _setup_notice(self, now_ms: int) -> str | None:
        """Where the household page is and its first-visit code, while the code is unused;
        the file is looked at every NOTICE_EVERY_MS (the views refresh ten times a second)."""
        if self._code_path is None:
            return None
        if self._notice_read_ms is not None and now_ms - self._notice_read_ms < NOTICE_EVERY_MS:
            return self._notice
        self._notice_read_ms = now_ms
        try:
            with self._code_path.open("rb") as f:
                code = f.read(64).decode("ascii", "replace").split()
        except OSError:
            code = []
        self._notice = (
            f"Your home's page: http://{socket.gethostname()}.local:8080/ first-visit code "
            f"{code[0]}"
            if code
            else None
        )
        return self._notice

    def start(self) -> None:
        """Refresh the light and views every TICK_S (wall) until :meth:`stop`."""
        if self._thread is not None or not (self.light or self.views):
            return
        self._thread = threading.Thread(target=self._run, name="prompts-view", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("refreshing the prompts' light failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for part in (self.light, self.button, *self.views):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    log.exception("closing a prompts part failed")

    # -- kept across restarts ---------------------------------------------------------------------
    def _save(self) -> None:
        if self._store is None:
            return
        p = self.board.prompts
        try:
            if p is None:
                self._store.unlink(missing_ok=True)
                return
            tmp = self._store.with_suffix(".tmp")
            tmp.write_bytes(encode(p))
            os.replace(tmp, self._store)
        except OSError as exc:
            log.warning("cannot keep the prompts on disk: %s", exc)

    def _load(self) -> None:
        if self._store is None or not self._store.exists():
            return
        try:
            self.board.take(decode(Prompts, self._store.read_bytes()), self.clock.now_ms())
        except (OSError, CodecError) as exc:
            log.warning("ignoring the kept prompts: %s", exc)
