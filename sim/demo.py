"""The demo: a broker, the hub, and N simulated homes with their agents, on an accelerated clock.

Everything real but the devices: a real broker (Mosquitto, or amqtt when Mosquitto is missing),
pymodbus servers standing in for each home's meter, inverter and turbine, the household agent
polling them over Modbus TCP, and the hub (:class:`hub.app.Hub`: ingest, consent, forecast,
prompts) storing readings in SQLite. After the simulated hours the clock freezes, every agent
reads its devices one last time at exactly the end, the hub acks the last batch, and the demo
compares what the hub stored with what the simulator produced. Then it shows the whole loop
(:mod:`sim.demo_loop`): the forecast the hub issued, the prompts each home's light showed, and
each home's settlement for the day in money.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.service import Agent
from agent.web.household import write_code
from hub.app import Hub
from hub.config import HubConfig
from hub.ingest.service import Ingest
from hub.ops.summary import home_summaries
from hub.storage.store import Store
from protocol.clock import Clock, SimClock
from protocol.session import BrokerSettings
from sim.broker import RunningBroker, run_broker
from sim.demo_loop import (
    TIMEZONE,
    LocalClock,
    LoopSummary,
    PromptLog,
    demo_appliances,
    demo_site,
    format_forecast,
    format_prompts,
    format_settlement,
    import_sky,
    settle_run,
)
from sim.household import SimHome
from sim.modbus_server import Endpoint, SimModbusServers

log = logging.getLogger(__name__)

COOP: Final = "demo-coop"
# Poll intervals that divide an hour, so a run of whole hours ends exactly on a poll.
NICE_INTERVALS_S: Final = (10, 15, 20, 30, 60, 120, 180, 300, 600, 900)
TOLERANCE: Final = 0.005  # the demo's promise: hub and simulator agree within 0.5 %
PV_SIZES_W: Final = (4000, 2500, 5500, 3200, 6000, 0)
TOLERANCE_WH: Final = 1.0  # ... or 1 Wh, the float32 kWh register's resolution near 4000 kWh


def poll_interval_for(speed: float, polls_per_real_s: float = 10.0) -> int:
    """A poll interval (simulated s) that keeps each device at about 10 reads per real second."""
    wanted = speed / polls_per_real_s
    return next((s for s in NICE_INTERVALS_S if s >= wanted), NICE_INTERVALS_S[-1])


@dataclass(frozen=True)
class DemoOptions:
    homes: int = 5
    hours: float = 2.0
    speed: float = 600.0
    db: Path = Path("coopwatt-demo.db")
    start_ms: int = 0
    poll_interval_s: int | None = None
    broker: str = "auto"  # auto, mosquitto or amqtt
    seed: int = 1
    loop: bool = True  # forecast, prompts and settlement at the end (False: energy only)


@dataclass(frozen=True)
class HomeResult:
    home: str
    readings: int
    hub_wh: dict[str, float]  # imported, exported, generated
    sim_wh: dict[str, float]

    def agrees(self, key: str) -> bool:
        hub, sim = self.hub_wh[key], self.sim_wh[key]
        return abs(hub - sim) <= max(TOLERANCE * abs(sim), TOLERANCE_WH)

    @property
    def ok(self) -> bool:
        return all(self.agrees(k) for k in self.sim_wh)


@dataclass(frozen=True)
class DemoResult:
    broker: str
    homes: list[HomeResult]
    stats: dict[str, int]
    wall_s: float
    completed: bool  # every agent made its final poll and had it acked
    loop: LoopSummary | None = None  # what the cooperative did with the day
    page: str | None = None  # the household page's address while the demo ran, if it had one

    @property
    def ok(self) -> bool:
        return self.completed and all(h.ok for h in self.homes) and len(self.homes) > 0


class Progress:
    """One line of live progress: rewritten in place on a terminal, every 10 % otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_decile = -1

    def show(self, fraction: float, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\x1b[K{text}")
            self.out.flush()
        elif (decile := int(fraction * 10)) > self._last_decile:
            self._last_decile = decile
            self.out.write(text + "\n")
            self.out.flush()

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")

    def note(self, text: str) -> None:
        """A line of its own, between progress updates."""
        self.out.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.out.flush()


def sim_home(i: int, seed: int, clock: Clock) -> SimHome:
    """The demo's ``i``-th home (from 0). Neighbours share one sky but not one roof: PV sizes
    vary, every other home has a turbine."""
    return SimHome(
        f"home-{i + 1:02d}",
        seed * 1000 + i,
        clock,
        pv_capacity_w=PV_SIZES_W[i % len(PV_SIZES_W)],
        with_wind=i % 2 == 0,
        weather_seed=seed,
    )


def _agent(
    i: int,
    home: SimHome,
    endpoints: dict[str, Endpoint],
    broker: RunningBroker,
    data_dir: Path,
    interval_s: int,
    clock: SimClock,
) -> Agent:
    """The home's agent, its household having agreed to share every stream, as polled, for
    every purpose (forecast, prompts, settlement, community figures), and having declared its
    flexible appliances (the demo's ``i``-th home's) in the demo's time zone."""
    devices = tuple(
        DeviceConfig(name, ep.profile, f"tcp://{ep.host}:{ep.port}", ep.unit, float(interval_s))
        for name, ep in endpoints.items()
    )
    config = AgentConfig(
        coop=COOP,
        home=home.home,
        broker=BrokerSettings(broker.url, f"agent-{home.home}", protocol=broker.protocol),
        data_dir=data_dir / home.home,
        devices=devices,
        poll_interval_s=float(interval_s),
        timezone=TIMEZONE,
        appliances=demo_appliances(i),
    )
    ConsentLedger(config.consent_path, home.home).share_everything(clock.now_ms())
    return Agent(config, clock)


@contextmanager
def household_page(agent: Agent, workdir: Path) -> Iterator[str | None]:
    """Serve ``agent``'s household page while the demo runs; yields its address and first-visit
    code, or None when the page could not start (the demo goes on without it).

    The page is the real one (``python -m agent.web``, what ``coopwatt-agent web`` becomes) on
    a free loopback port, reading this agent's data folder and asking it over its socket.
    """
    c = agent.config
    config = workdir / f"{c.home}-page.toml"
    config.write_text(
        f'coop = "{c.coop}"\nhome = "{c.home}"\ndata_dir = "{c.data_dir}"\n'
        f'timezone = "{c.timezone or "UTC"}"\n'
    )
    code = write_code(c.data_dir / "household-code")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_file = (workdir / f"{c.home}-page.log").open("wb")
    page = subprocess.Popen(
        [sys.executable, "-m", "agent.web", "--config", str(config), "--bind", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10.0
        while page.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        up = page.poll() is None
        if not up:
            log.warning("the household page did not start: see %s", workdir / f"{c.home}-page.log")
        yield f"http://127.0.0.1:{port}/ (first-visit code {code})" if up else None
    finally:
        page.terminate()
        try:
            page.wait(5)
        except subprocess.TimeoutExpired:
            page.kill()
        log_file.close()


def run_demo(
    opts: DemoOptions, progress: Progress | None = None, stop: threading.Event | None = None
) -> DemoResult:
    """Run the whole neighbourhood; returns per-home results. ``stop`` ends it early."""
    stop = stop or threading.Event()
    interval_s = opts.poll_interval_s or poll_interval_for(opts.speed)
    start_ms = opts.start_ms - opts.start_ms % (interval_s * 1000)
    end_ms = start_ms + int(opts.hours * 3600 * 1000)
    end_ms -= (end_ms - start_ms) % (interval_s * 1000)  # end on a poll
    clock = SimClock(start_ms, opts.speed, end_ms)
    workdir = Path(tempfile.mkdtemp(prefix="coopwatt-demo-"))
    wall_start = time.monotonic()
    try:
        with run_broker(workdir / "broker", opts.broker) as broker:  # type: ignore[arg-type]
            log.info(
                "broker: %s on %s (MQTT %s)",
                broker.kind,
                broker.url,
                "5" if broker.protocol == 5 else "3.1.1",
            )
            homes = [sim_home(i, opts.seed, clock) for i in range(opts.homes)]
            store = Store.open(opts.db, COOP, clock=clock)
            hub = _hub(opts, homes, store, broker, clock, start_ms, end_ms, workdir)
            prompt_log = PromptLog()
            page: str | None = None
            with SimModbusServers(homes) as servers:
                endpoints = servers.endpoints()
                agents = [
                    _agent(i, h, endpoints[h.home], broker, workdir / "agents", interval_s, clock)
                    for i, h in enumerate(homes)
                ]
                for a in agents:
                    prompt_log.follow(a)
                threads = [
                    threading.Thread(target=a.run, name=f"agent-{a.config.home}") for a in agents
                ]
                hub.start()
                for t in threads:
                    t.start()
                completed = False
                try:
                    with household_page(agents[0], workdir) as page:
                        if progress is not None and page is not None:
                            progress.note(f"{agents[0].config.home}'s household page: {page}")
                        _wait(
                            lambda: (
                                hub.ingest.connected.is_set()
                                and all(a.session.connected.is_set() for a in agents)
                            ),
                            10.0,
                            stop,
                            "the broker did not accept every client within 10 s",
                        )
                        # The hub's first forecast (the model loads, tuning) and the first plan
                        # for the homes' appliances take a moment of CPU: let them pass before
                        # the clock runs, so the agents' first polls read their devices on time.
                        _wait(
                            lambda: _first_prompts_arrived(hub, agents),
                            30.0,
                            stop,
                            "the hub's first forecast and prompts did not arrive within 30 s",
                        )
                        for h in homes:
                            h.mark_baseline(start_ms)
                        clock.start()
                        completed = _follow(
                            clock, agents, hub.ingest, progress, stop, start_ms, end_ms
                        )
                        if completed and hub.forecast is not None:
                            # The day's last forecast, from the whole day's readings (all acked
                            # now), as the service's next refresh would issue it.
                            hub.forecast.refresh()
                finally:
                    for a in agents:
                        a.stop()
                    for t in threads:
                        t.join(30)
                    hub.stop()
            results = _compare(store, homes, {a.config.home: a.first_poll_ms for a in agents})
            stats = hub.ingest.stats()
            loop = None
            if opts.loop and completed:
                if progress is not None:
                    progress.note("settling the day")
                loop = _loop_summary(hub, store, agents, prompt_log, start_ms, end_ms)
            store.close()
            return DemoResult(
                broker.kind, results, stats, time.monotonic() - wall_start, completed, loop, page
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _first_prompts_arrived(hub: Hub, agents: list[Agent]) -> bool:
    """Whether the hub has forecast and every home with appliances holds its first prompts
    (True at once for a hub that does not forecast: it plans nothing)."""
    if hub.forecast is None:
        return True
    return hub.forecast.runs > 0 and all(
        a.prompts.board.prompts is not None for a in agents if a.config.appliances
    )


def _hub(
    opts: DemoOptions,
    homes: list[SimHome],
    store: Store,
    broker: RunningBroker,
    clock: SimClock,
    start_ms: int,
    end_ms: int,
    workdir: Path,
) -> Hub:
    """The hub as ``coopwatt-hub run`` builds it. With the whole loop it has a ``[site]`` (so it
    forecasts) and the simulated sky imported as its weather forecast (:mod:`sim.weather`);
    without, it only stores readings (and plans nothing, having no forecast)."""
    config = HubConfig(
        coop=COOP,
        db_path=opts.db,
        broker=BrokerSettings(broker.url, "coopwatt-hub", protocol=broker.protocol),
        site=demo_site(homes) if opts.loop and homes else None,
    )
    if config.site is not None:
        hours = import_sky(store, homes[0], start_ms, end_ms, workdir, clock.now_ms())
        log.info("imported %d hours of the simulated sky as the weather forecast", hours)
    return Hub.build(config, store, clock)


def _loop_summary(
    hub: Hub,
    store: Store,
    agents: list[Agent],
    prompt_log: PromptLog,
    start_ms: int,
    end_ms: int,
) -> LoopSummary:
    """The forecast, the prompts and the day's settlement, from the hub's own library."""
    days, settlements = settle_run(store, start_ms, end_ms, end_ms)
    return LoopSummary(
        start_ms=start_ms,
        end_ms=end_ms,
        forecast=hub.forecast.last if hub.forecast is not None else None,
        forecasts_issued=hub.forecast.runs if hub.forecast is not None else 0,
        appliances={a.config.home: a.config.appliances for a in agents},
        prompts={a.config.home: prompt_log.received(a.config.home) for a in agents},
        days=days,
        settlements=settlements,
    )


def _wait(
    predicate: Callable[[], bool], timeout_s: float, stop: threading.Event, message: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        if stop.wait(0.05):
            raise KeyboardInterrupt


def _follow(
    clock: SimClock,
    agents: list[Agent],
    hub: Ingest,
    progress: Progress | None,
    stop: threading.Event,
    start_ms: int,
    end_ms: int,
) -> bool:
    """Show progress until the run has ended and every final reading is acked."""
    drain_deadline: float | None = None
    while not stop.wait(0.25):
        now = clock.now_ms()
        fraction = (now - start_ms) / max(1, end_ms - start_ms)
        stats = hub.stats()
        backlog = sum(a.backlog for a in agents)
        if progress is not None:
            sim_h = (now - start_ms) / 3_600_000
            progress.show(
                fraction,
                f"simulated {sim_h:5.2f} h ({fraction:4.0%})  "
                f"readings stored {stats.get('stored', 0):7d}  agent backlog {backlog:5d}",
            )
        if clock.finished:
            if all(a.last_poll_ms >= end_ms for a in agents) and backlog == 0:
                if progress is not None:
                    progress.done()
                return True
            drain_deadline = drain_deadline or time.monotonic() + 30.0
            if time.monotonic() > drain_deadline:
                log.warning("the last readings were not all acked within 30 s")
                return False
    return False


def _compare(
    store: Store, homes: list[SimHome], first_poll_ms: dict[str, int | None]
) -> list[HomeResult]:
    """The hub's stored energy beside the simulator's own over the same span: from the agent's
    first reading (the hub's energy is last minus first counter, so whatever the meters counted
    before an agent that started late first read them is in neither) to the end."""
    stored = home_summaries(store)
    results = []
    for h in homes:
        t = h.totals(since_ms=first_poll_ms.get(h.home))
        s = stored.get(h.home)
        results.append(
            HomeResult(
                home=h.home,
                readings=s.readings if s else 0,
                hub_wh={
                    "imported": s.imported_wh if s else 0.0,
                    "exported": s.exported_wh if s else 0.0,
                    "generated": s.generated_wh if s else 0.0,
                },
                sim_wh={
                    "imported": t["energy_import_wh"],
                    "exported": t["energy_export_wh"],
                    "generated": t["pv_wh"] + t["wind_wh"],
                },
            )
        )
    return results


def format_summary(result: DemoResult) -> str:
    """The end of the day, in sections: the hub's stored energy beside the simulator's own (kWh);
    then, with the whole loop, the forecast, the prompts and the day's settlement."""
    lines = [
        _heading("Energy: what the hub stored, beside what the simulated meters measured"),
        f"{'home':8} {'readings':>8}   {'imported kWh':>21}   {'exported kWh':>21}   "
        f"{'generated kWh':>21}   agree",
        f"{'':8} {'':>8}   " + "   ".join([f"{'hub':>10} {'sim':>10}"] * 3),
    ]
    for h in result.homes:
        cells = "   ".join(
            f"{h.hub_wh[k] / 1000:10.3f} {h.sim_wh[k] / 1000:10.3f}"
            for k in ("imported", "exported", "generated")
        )
        lines.append(f"{h.home:8} {h.readings:8d}   {cells}   {'yes' if h.ok else 'NO'}")
    s = result.stats
    lines.append(
        f"hub: {s.get('stored', 0)} stored, {s.get('duplicates', 0)} duplicates, "
        f"{s.get('rejected', 0)} rejected; broker {result.broker}; {result.wall_s:.1f} s wall time"
    )
    if not result.completed:
        lines.append("the run did not complete: some final readings were not acked")
    loop = result.loop
    if loop is not None:
        at = LocalClock(loop.start_ms, loop.end_ms)
        lines += ["", _heading("Forecast: what the hub expects next"), *format_forecast(loop, at)]
        lines += ["", _heading("Prompts: what each home's light said, and when")]
        lines += format_prompts(loop, at)
        lines += ["", _heading("Settlement: each home's day in money"), *format_settlement(loop)]
    return "\n".join(lines)


def _heading(text: str) -> str:
    return f"== {text} " + "=" * max(3, 96 - len(text))


def main_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    result = run_demo(opts, Progress(sys.stderr))
    out.write(format_summary(result) + "\n")
    return 0 if result.ok else 1
