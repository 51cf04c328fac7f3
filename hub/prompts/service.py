"""The prompts' edge: appliances and feedback in, the forecast in, prompts out; learning.

Appliances and feedback reach the hub on ingest's connection (:meth:`PromptsService.attach`
routes them here). The service keeps a small connection of its own to follow the retained
``hub/forecast`` and to publish each home's retained ``prompts``. It plans on every new
forecast, when a home's appliances change, and every ``every_s`` of the hub's clock (so windows
about to start are frozen and prompts are refreshed before their ``valid_until_ms``). A home's
prompts are published when what the household would see changes, or when they are half-way to
expiring. Once a planned run's window has passed, :meth:`PromptsService.learn` asks the home's
meters and answers how fully it was followed (:mod:`hub.prompts.learning`).

Consent: a home is planned for only while its current grant has the ``prompts`` purpose on some
stream, and its meters are read only through the ``prompts`` :class:`hub.consent.book.PurposeView`.
A grant without it, or an empty appliance list, erases what the hub holds for prompts of that
home and clears its retained prompts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from hub.consent.book import ConsentBook, PurposeView
from hub.forecast.published import forecast_from_message
from hub.forecast.site import is_known_timezone
from hub.ingest.service import Ingest
from hub.prompts.learning import (
    BASELINE_DAYS,
    DAY_MS,
    HomeMeters,
    ShiftEstimate,
    feedback_outcome,
    measure_run,
    run_outcome,
)
from hub.prompts.messages import MessageSettings, build_prompts, same_advice
from hub.prompts.planner import (
    STEP_MS,
    HomeAppliances,
    JobKey,
    Outlook,
    Plan,
    PlannerSettings,
    Span,
    make_jobs,
    outlook_from_forecast,
    plan,
    with_prices,
)
from hub.settlement.price_store import prices_at as stored_prices_at
from hub.settlement.price_store import stored_currency
from hub.settlement.prices import PriceError
from hub.storage.store import Store
from protocol.clock import Clock
from protocol.codec import decode, encode
from protocol.consent import Purpose
from protocol.payloads import Appliances, Feedback, Forecast, Prompts
from protocol.quantities import Role
from protocol.session import BrokerSettings, MqttSession, Publish
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic

log = logging.getLogger(__name__)


def outlook_with_prices(store: Store, outlook: Outlook) -> Outlook:
    """``outlook`` with the grid's imported prices if and only if they cover all of it; as it
    was otherwise (the planner then ignores price, as before prices were imported)."""
    currency = stored_currency(store)
    if currency is None:
        return outlook
    try:
        prices = stored_prices_at(store, outlook.start_ms, outlook.end_ms, STEP_MS)
    except PriceError:
        return outlook
    return with_prices(outlook, [float(p) for p in prices], currency)


SETTLE_MS: Final = 3_600_000  # readings of a window may arrive this late before it is judged
GIVE_UP_MS: Final = 2 * DAY_MS  # a run neither metered nor answered by then teaches nothing
MIN_OUTLOOK_MS: Final = 3 * 3_600_000  # a forecast ending sooner than this is too old to plan


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """A run as recorded: the windows last sent, and how it went once judged."""

    key: JobKey
    windows: tuple[Span, ...]
    energy_wh: float
    chance: float
    first_sent_ms: int
    outcome: float | None = None
    metered: float | None = None
    evaluated_ms: int | None = None

    @property
    def start_ms(self) -> int:
        return self.windows[0][0]

    @property
    def end_ms(self) -> int:
        return self.windows[-1][1]


class PromptBook:
    """The prompts' tables (migration 6) in the hub store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- appliances and consent ------------------------------------------------------------
    def set_appliances(self, a: Appliances, received_ms: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO prompt_homes (home, payload, received_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (home) DO UPDATE SET payload = excluded.payload, "
                "received_ms = excluded.received_ms",
                (a.home, encode(a).decode(), received_ms),
            )

    def appliances(self) -> dict[str, Appliances]:
        rows = self.store.reader().execute("SELECT payload FROM prompt_homes ORDER BY home")
        return {a.home: a for a in (decode(Appliances, p.encode()) for (p,) in rows)}

    def forget(self, home: str) -> int:
        """Erase everything the hub holds for prompts of ``home``; returns rows erased."""
        with self.store.transaction() as conn:
            before = conn.total_changes
            for table in ("prompt_homes", "prompt_runs", "prompt_feedback", "prompt_shift"):
                conn.execute(f"DELETE FROM {table} WHERE home = ?", (home,))  # noqa: S608
            return conn.total_changes - before

    # -- the forecast ----------------------------------------------------------------------
    def set_forecast(self, forecast: Forecast) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO prompt_forecast (id, issued_ms, payload) VALUES (1, ?, ?)",
                (forecast.issued_ms, encode(forecast).decode()),
            )

    def forecast(self) -> Forecast | None:
        row = self.store.reader().execute("SELECT payload FROM prompt_forecast").fetchone()
        return None if row is None else decode(Forecast, row[0].encode())

    # -- runs ------------------------------------------------------------------------------
    def runs(self, *, ending_after_ms: int = -1, unjudged: bool = False) -> list[PlannedRun]:
        """Runs ending after ``ending_after_ms``; only those not judged yet with ``unjudged``."""
        rows = self.store.reader().execute(
            "SELECT home, appliance, day, run, windows, energy_wh, chance, first_sent_ms, "
            "outcome, metered, evaluated_ms FROM prompt_runs "
            "WHERE end_ms > ? AND (evaluated_ms IS NULL OR NOT ?) ORDER BY home, start_ms",
            (ending_after_ms, unjudged),
        )
        out = []
        for home, appliance, day, run, windows, *rest in rows:
            energy, chance, first, outcome, metered, judged = rest
            spans = tuple((int(s), int(e)) for s, e in json.loads(windows))
            key = (home, appliance, day, run)
            out.append(PlannedRun(key, spans, energy, chance, first, outcome, metered, judged))
        return out

    def previous_windows(
        self, now_ms: int, outlook_start_ms: int
    ) -> dict[JobKey, tuple[Span, ...]]:
        """The runs a re-plan starts from: those not over, and also those over whose day's
        window the outlook still reaches (a day at most). The planner keeps the finished ones
        pinned, so a run done this morning is not prompted again this afternoon, nor its
        record overwritten before it is judged."""
        since = min(now_ms, outlook_start_ms) - DAY_MS
        return {r.key: r.windows for r in self.runs(ending_after_ms=since)}

    def record_plan(self, p: Plan, sent_ms: int) -> None:
        """Record every run of ``p`` as sent; withdraw runs sent before and no longer planned
        that have not started."""
        rows = [
            (
                *key,
                json.dumps([list(s) for s in spans]),
                spans[0][0],
                spans[-1][1],
                p.jobs[key].energy_wh,
                p.jobs[key].chance,
                sent_ms,
                sent_ms,
            )
            for key, spans in p.windows.items()
        ]
        planned = set(p.windows)
        with self.store.transaction() as conn:
            stale = [
                (home, appliance, day, run)
                for home, appliance, day, run in conn.execute(
                    "SELECT home, appliance, day, run FROM prompt_runs "
                    "WHERE start_ms > ? AND evaluated_ms IS NULL",
                    (sent_ms,),
                )
                if (home, appliance, day, run) not in planned
            ]
            conn.executemany(
                "DELETE FROM prompt_runs WHERE home = ? AND appliance = ? AND day = ? AND run = ?",
                stale,
            )
            conn.executemany(
                "INSERT INTO prompt_runs (home, appliance, day, run, windows, start_ms, end_ms, "
                "energy_wh, chance, first_sent_ms, sent_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (home, appliance, day, run) DO UPDATE SET windows = excluded.windows, "
                "start_ms = excluded.start_ms, end_ms = excluded.end_ms, "
                "energy_wh = excluded.energy_wh, chance = excluded.chance, "
                "sent_ms = excluded.sent_ms WHERE prompt_runs.evaluated_ms IS NULL",
                rows,
            )

    def judge(self, key: JobKey, outcome: float | None, metered: float | None, now_ms: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE prompt_runs SET outcome = ?, metered = ?, evaluated_ms = ? "
                "WHERE home = ? AND appliance = ? AND day = ? AND run = ?",
                (outcome, metered, now_ms, *key),
            )

    # -- feedback and what was learnt ------------------------------------------------------
    def add_feedback(self, f: Feedback, received_ms: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO prompt_feedback (home, ts_ms, prompt, action, appliance, "
                "window_start_ms, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (f.home, f.ts_ms, f.prompt, f.action, f.appliance, f.window_start_ms, received_ms),
            )

    def answers(self, home: str, appliance: str, from_ms: int, to_ms: int) -> list[str]:
        """The household's answers about a run whose window started in ``[from_ms, to_ms)``."""
        rows = self.store.reader().execute(
            "SELECT action FROM prompt_feedback WHERE home = ? AND appliance = ? "
            "AND window_start_ms >= ? AND window_start_ms < ? ORDER BY ts_ms, id",
            (home, appliance, from_ms, to_ms),
        )
        return [a for (a,) in rows]

    def feedback_count(self, home: str) -> int:
        row = (
            self.store.reader()
            .execute("SELECT count(*) FROM prompt_feedback WHERE home = ?", (home,))
            .fetchone()
        )
        return int(row[0])

    def shifts(self) -> dict[str, ShiftEstimate]:
        return {
            home: ShiftEstimate(followed, expected, updated)
            for home, followed, expected, updated in self.store.reader().execute(
                "SELECT home, followed, expected, updated_ms FROM prompt_shift"
            )
        }

    def set_shift(self, home: str, est: ShiftEstimate) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO prompt_shift (home, followed, expected, updated_ms) "
                "VALUES (?, ?, ?, ?)",
                (home, est.followed, est.expected, est.updated_ms),
            )


def prompts_granted(book: ConsentBook | None, home: str) -> bool | None:
    """Whether the home's current grant has the prompts purpose; None when no grant is known."""
    if book is None:
        return True
    grant = book.current(home)
    if grant.version == 0:
        return None
    return any(Purpose.PROMPTS.value in purposes for purposes in grant.streams.values())


def read_meters(view: PurposeView, home: str, since_ms: int, now_ms: int) -> HomeMeters:
    """THE read of a home's readings for prompts: its counters, as the ``prompts`` purpose may
    see them (granted streams only, within retention, at the granted resolution)."""
    imp: dict[str, list[tuple[int, float]]] = {}
    exp: dict[str, list[tuple[int, float]]] = {}
    gen: dict[str, list[tuple[int, float]]] = {}
    loads: dict[str, list[tuple[int, float]]] = {}
    for r in view.readings(now_ms, home=home, since_ms=since_ms):
        q = r.quantities
        if r.role is Role.GRID:
            if isinstance(v := q.get("energy_import_wh"), float):
                imp.setdefault(r.device, []).append((r.ts_ms, v))
            if isinstance(v := q.get("energy_export_wh"), float):
                exp.setdefault(r.device, []).append((r.ts_ms, v))
        elif isinstance(v := q.get("energy_wh"), float):
            if r.role in (Role.PV, Role.WIND):
                gen.setdefault(r.device, []).append((r.ts_ms, v))
            elif r.role is Role.LOAD:
                loads.setdefault(r.device, []).append((r.ts_ms, v))

    def ordered(d: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
        return {k: sorted(v) for k, v in d.items()}

    return HomeMeters(ordered(imp), ordered(exp), ordered(gen), ordered(loads))


class PromptsService:
    """Plan, publish, learn. Drive it with :meth:`start` (a thread on ``clock``) or call
    :meth:`replan` and :meth:`learn` directly (tests, tools)."""

    def __init__(
        self,
        store: Store,
        book: ConsentBook | None,
        coop: str,
        clock: Clock,
        *,
        publish: Publish | None = None,
        planner: PlannerSettings | None = None,
        messages: MessageSettings | None = None,
        every_s: int = 900,
        learn_every_s: int = 3600,
    ) -> None:
        if store.coop != coop:
            raise ValueError(f"store is the database of {store.coop!r}, not {coop!r}")
        self.store = store
        self.book = book
        self.coop = coop
        self.clock = clock
        self.db = PromptBook(store)
        self.view = PurposeView(store, book, Purpose.PROMPTS) if book is not None else None
        self.publish: Publish | None = publish
        self.planner = planner or PlannerSettings()
        self.messages = messages or MessageSettings()
        self.every_ms = every_s * 1000
        self.learn_every_ms = learn_every_s * 1000
        self.session: MqttSession | None = None
        self.last_plan: Plan | None = None
        self.plans = 0
        self.published = 0
        self._forecast: Forecast | None = self.db.forecast()
        self._sent: dict[str, Prompts] = {}  # home -> the prompts it was last sent
        self._dirty = threading.Event()
        self._dirty.set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, ingest: Ingest, broker: BrokerSettings | None) -> None:
        """Take appliances and feedback from ``ingest``; with ``broker``, follow the forecast and
        publish prompts on a connection of the service's own. Call before ``ingest.start()``."""
        ingest.route(HomeTopic.APPLIANCES, self.on_appliances)
        ingest.route(HomeTopic.FEEDBACK, self.on_feedback)
        if broker is None:
            return
        client_id = f"{broker.client_id[:56]}-prompts"
        self.session = MqttSession(
            replace(broker, client_id=client_id),
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        self.publish = self.session.publish

    def _on_connect(self) -> None:
        assert self.session is not None
        self.session.subscribe(hub_topic(self.coop, HubTopic.FORECAST))

    def _on_message(self, topic: str, data: bytes) -> None:
        forecast = forecast_from_message(topic, data)
        if forecast is not None:
            self.on_forecast(forecast)

    # -- what arrives ----------------------------------------------------------------------
    def on_forecast(self, forecast: Forecast) -> None:
        current = self._forecast
        if current is not None and forecast.issued_ms <= current.issued_ms:
            return  # the retained copy of one we have
        self._forecast = forecast
        try:
            self.db.set_forecast(forecast)
        except Exception:
            log.exception("could not keep the forecast for restarts")
        self._replan_soon()

    def on_appliances(self, home: str, appliances: Appliances) -> None:
        if not appliances.appliances:
            # Every agent without appliances (or prompts consent) says so on each connection:
            # only a home the hub holds something for is erased and has its prompts cleared.
            erased = self.db.forget(home)
            if erased or home in self._sent:
                log.info("home=%s withdrew its appliances; erased %d prompt rows", home, erased)
                self._clear(home)
        elif not is_known_timezone(appliances.timezone):
            log.warning("home=%s: unknown timezone %r; its appliances are not planned",
                        home, appliances.timezone)  # fmt: skip
            return
        else:
            self.db.set_appliances(appliances, self.clock.now_ms())
            log.info("home=%s declared %d appliance(s)", home, len(appliances.appliances))
        self._replan_soon()

    def on_feedback(self, home: str, feedback: Feedback) -> None:
        if prompts_granted(self.book, home) is False:
            return
        self.db.add_feedback(feedback, self.clock.now_ms())
        log.info("home=%s %s %s", home, feedback.action, feedback.appliance or "the prompts")

    def _replan_soon(self) -> None:
        self._dirty.set()
        self._wake.set()

    def _clear(self, home: str) -> None:
        self._sent.pop(home, None)
        if self.publish is not None:
            self.publish(home_topic(self.coop, home, HomeTopic.PROMPTS), b"", qos=1, retain=True)

    # -- planning --------------------------------------------------------------------------
    def homes(self, now_ms: int) -> list[HomeAppliances]:
        """The homes to plan for, with what was learnt of each; erases withdrawn consent."""
        shifts = self.db.shifts()
        out = []
        for home, a in self.db.appliances().items():
            granted = prompts_granted(self.book, home)
            if granted is False:
                erased = self.db.forget(home)
                log.info("home=%s no longer grants prompts; erased %d prompt rows", home, erased)
                self._clear(home)
                continue
            if granted is None or not is_known_timezone(a.timezone):
                continue
            est = shifts.get(home, ShiftEstimate()).faded(now_ms)
            out.append(HomeAppliances(home, a.timezone, tuple(a.appliances), est.shift))
        return out

    def replan(self) -> dict[str, Prompts]:
        """Plan now and publish what changed; returns the prompts of every planned home."""
        with self._lock:
            now = self.clock.now_ms()
            self._dirty.clear()
            forecast = self._forecast
            if forecast is None:
                return {}
            outlook = outlook_with_prices(self.db.store, outlook_from_forecast(forecast))
            if outlook.end_ms - now < MIN_OUTLOOK_MS:
                log.warning("the latest forecast ends too soon to plan; prompts will expire")
                return {}
            homes = self.homes(now)
            previous = self.db.previous_windows(now, outlook.start_ms)
            p = plan(make_jobs(homes, outlook), outlook, now, previous, self.planner)
            self.db.record_plan(p, now)
            self.last_plan = p
            self.plans += 1
            out: dict[str, Prompts] = {}
            for h in homes:
                prompts = build_prompts(p, h.home, now, self.messages)
                if prompts is None:
                    continue
                out[h.home] = prompts
                self._send(prompts, now)
            log.info("planned %d run(s) for %d home(s); %d frozen, %d moved", len(p.windows),
                     len(homes), len(p.frozen), p.moved)  # fmt: skip
            return out

    def _send(self, prompts: Prompts, now_ms: int) -> None:
        seen = self._sent.get(prompts.home)
        half = self.messages.validity_ms // 2
        if same_advice(seen, prompts) and seen is not None and now_ms < seen.valid_until_ms - half:
            return
        if self.publish is None:
            return
        topic = home_topic(self.coop, prompts.home, HomeTopic.PROMPTS)
        self.publish(topic, encode(prompts), qos=1, retain=True)
        self._sent[prompts.home] = prompts
        self.published += 1

    # -- learning --------------------------------------------------------------------------
    def learn(self) -> int:
        """Judge the runs whose windows have passed; returns how many were judged."""
        now = self.clock.now_ms()
        due = [r for r in self.db.runs(unjudged=True) if r.end_ms <= now - SETTLE_MS]
        by_home: dict[str, list[PlannedRun]] = {}
        for r in due:
            by_home.setdefault(r.key[0], []).append(r)
        shifts = self.db.shifts()
        judged = 0
        for home, runs in by_home.items():
            if prompts_granted(self.book, home) is False:
                continue
            meters = None
            if self.view is not None:
                since = min(r.start_ms for r in runs) - (BASELINE_DAYS + 1) * DAY_MS
                meters = read_meters(self.view, home, since, now)
            est = shifts.get(home, ShiftEstimate())
            for r in runs:
                metered = None
                if meters is not None:
                    metered = measure_run(meters, r.key[1], r.windows, r.energy_wh)
                answers = self.db.answers(home, r.key[1], r.start_ms - DAY_MS // 2, r.end_ms)
                outcome = run_outcome(metered, feedback_outcome(answers))
                if outcome is None and r.end_ms > now - GIVE_UP_MS:
                    continue  # its readings or an answer may still come
                self.db.judge(r.key, outcome, metered, now)
                judged += 1
                if outcome is not None:
                    est = est.observe(outcome, r.chance, now)
            self.db.set_shift(home, est)
        return judged

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("prompts service already started")
        if self.session is not None:
            self.session.start()
        self._thread = threading.Thread(target=self._run, name=f"prompts-{self.coop}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.session is not None:
            self.session.stop()

    def _run(self) -> None:
        next_plan = next_learn = self.clock.now_ms()
        while not self._stop.is_set():
            now = self.clock.now_ms()
            if now >= next_plan or self._dirty.is_set():
                next_plan = now + self.every_ms
                self._guard(self.replan, "planning")
            if now >= next_learn:
                next_learn = now + self.learn_every_ms
                self._guard(self.learn, "learning")
            self._wake.clear()
            if self._dirty.is_set():
                continue
            self.clock.sleep_until_ms(min(next_plan, next_learn), self._wake)

    @staticmethod
    def _guard(step: Callable[[], object], what: str) -> None:
        try:
            step()
        except Exception:
            log.exception("prompts %s failed; trying again next time", what)


def shift_table(service_db: PromptBook, now_ms: int) -> list[tuple[str, float, float, float]]:
    """Per home: learnt shift, runs followed and expected (faded to ``now_ms``)."""
    return [
        (home, est.shift, est.followed, est.expected)
        for home, est in sorted((h, e.faded(now_ms)) for h, e in service_db.shifts().items())
    ]
