"""A simulated day of a 2,000-home neighbourhood on one hub, forecast, prompts and settlement on.

    .venv/bin/python bench/soak_24h.py [--homes 2000] [--hours 24] [--cadence-s 10]
                                       [--send-every-s 60] [--speed 40] [--settle-every-h 6]
                                       [--keep DIR]

The hub is the real one, in its own process: ``hub.app.serve`` (ingest, consent, the forecast
service with the shipped ONNX model, the prompts planner, health metrics, retention), on a
simulated clock shared with the load generator (``sim.loadgen.LinkedClock``) that runs
``--speed`` times the wall, so a day takes 24 h / speed plus whatever the machine cannot keep
up with. Every home (``sim/loadgen.py``) polls its meters every ``--cadence-s`` of simulated
time and sends like an agent, what it polled at most every ``--send-every-s`` (an agent sends
each poll at once; on a clock 40 times the wall that would be 40 times the messages the hub
sees in reality, for the same readings); homes publish their appliances for the planner.
Settlement
(``coopwatt-hub settle``, as a timer would run it) settles the day so far every
``--settle-every-h`` simulated hours, and the whole day at the end.

It prints, per simulated hour, the hub's resident memory, the database size and the readings
acked; then: nothing lost or duplicated (the database holds every generated reading exactly
once), memory flat or not (RSS growth after the first two hours), the database size per home
per day, forecasts and prompts published, and settlement's outcome. Not for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from ingest_common import BIN, check_exact, count_stored, cpu_s, memory_kib, mib, own_cpu_s
from paho.mqtt.enums import CallbackAPIVersion

from sim.broker import run_mosquitto
from sim.loadgen import LinkedClock, Neighbourhood

COOP = "soak"
TZ = ZoneInfo("Europe/Amsterdam")
HOUR_MS = 3_600_000
SCHEME = """timezone = "Europe/Amsterdam"
currency = "EUR"
minor_unit = 2
mechanism = "sdr"
min_group = 5
max_gap_minutes = 15
[import_tariff]
price_per_kwh = "0.30"
[[import_tariff.windows]]
days = ["mon", "tue", "wed", "thu", "fri"]
from = "17:00"
to = "21:00"
price_per_kwh = "0.38"
[export_tariff]
price_per_kwh = "0.08"
"""


def hub_process(config: str, start_ms: int, speed: float, origin_s: float, end_ms: int) -> None:
    """The hub side: ``hub.app.serve`` on the shared simulated clock until SIGTERM."""
    from hub.app import serve
    from hub.config import load_config

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    clock = LinkedClock(start_ms, speed, origin_s, end_ms)
    trace = os.environ.get("COOPWATT_SOAK_TRACEMALLOC")  # frames: where the hub's memory goes
    if trace:
        tracemalloc.start(int(trace))
        first: list[tracemalloc.Snapshot] = []

        def growth(*_: object) -> None:  # SIGUSR1: what grew since the first SIGUSR1
            snap = tracemalloc.take_snapshot()
            if not first:
                first.append(snap)
                return
            for stat in snap.compare_to(first[0], "traceback")[:8]:
                where = "\n      ".join(stat.traceback.format()[-2 * int(trace) :])
                print(f"grew {stat.size_diff / 1e6:+.1f} MB in {stat.count_diff:+d} blocks:"
                      f"\n      {where}", file=sys.stderr, flush=True)  # fmt: skip

        signal.signal(signal.SIGUSR1, growth)
    stats = serve(load_config(config), stop, clock=clock)
    print(json.dumps(stats), flush=True)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class Watcher:
    """Counts what the hub publishes: forecasts, and homes' prompts."""

    def __init__(self, url: str) -> None:
        self.forecasts = 0
        self.prompts = 0
        self.prompted_homes: set[str] = set()
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-watch",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe(f"coopwatt/{COOP}/hub/forecast", qos=1)
        client.subscribe(f"coopwatt/{COOP}/homes/+/prompts", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/hub/forecast"):
            self.forecasts += 1
        elif msg.payload:
            self.prompts += 1
            self.prompted_homes.add(msg.topic.split("/")[3])

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def settle(db: Path, scheme: Path, day: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "coopwatt-hub"), "settle", "--db", str(db), "--scheme", str(scheme),
             "--from", day, "--to", day], stdout=out, stderr=out,
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=int, default=2000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--cadence-s", type=float, default=10.0)
    ap.add_argument("--speed", type=float, default=40.0, help="simulated seconds per wall second")
    ap.add_argument("--send-every-s", type=float, default=60.0,
                    help="a home sends its polls at most this often (simulated s)")  # fmt: skip
    ap.add_argument("--settle-every-h", type=float, default=6.0)
    ap.add_argument("--day", default="2026-06-22", help="the local day (Europe/Amsterdam) to run")
    ap.add_argument("--keep", type=Path, default=None, help="keep the database and logs here")
    ap.add_argument("--hub", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hub:
        c, s, sp, o, e = args.hub
        hub_process(c, int(s), float(sp), float(o), int(e))
        return
    day = datetime.fromisoformat(args.day).replace(tzinfo=TZ)
    start_ms = int(day.astimezone(UTC).timestamp() * 1000)
    end_ms = start_ms + int(args.hours * HOUR_MS)
    ctx = tempfile.TemporaryDirectory(prefix="coopwatt-soak-")
    tmp = args.keep or Path(ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    db, scheme = tmp / "hub.db", tmp / "scheme.toml"
    scheme.write_text(SCHEME)
    # Interrupted (Ctrl-C, SIGTERM, an exception), the hub process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with run_mosquitto(tmp / "broker") as broker, contextlib.ExitStack() as cleanup:
        assert broker.process is not None
        config = tmp / "hub.toml"
        config.write_text(
            f'coop = "{COOP}"\ndb = "{db}"\n[broker]\nurl = "{broker.url}"\n'
            '[site]\nlatitude = 52.0\nlongitude = 5.0\ntimezone = "Europe/Amsterdam"\n'
        )
        origin_s = time.monotonic() + 30.0  # simulated time starts moving in 30 s
        clock = LinkedClock(start_ms, args.speed, origin_s, end_ms)
        hub_log = tmp / "hub.log"
        with hub_log.open("wb") as log:
            hub = subprocess.Popen(
                [sys.executable, __file__, "--hub", str(config), str(start_ms), str(args.speed),
                 str(origin_s), str(end_ms)], stderr=log, stdout=subprocess.PIPE,
                cwd=Path(__file__).parent,
            )  # fmt: skip
        cleanup.callback(stop_process, hub)
        while "connected to" not in hub_log.read_text(errors="replace"):
            if hub.poll() is not None:
                raise SystemExit(f"the hub did not start:\n{hub_log.read_text()[-3000:]}")
            time.sleep(0.1)  # waiting for the hub process to connect
        time.sleep(0.5)
        watcher = Watcher(broker.url)
        hood = Neighbourhood(broker.url, COOP, args.homes, clock, cadence_s=args.cadence_s,
                             appliances=True)  # fmt: skip
        t = time.perf_counter()
        hood.connect(300)
        print(f"{args.homes} homes connected, consent recorded, in "
              f"{time.perf_counter() - t:.1f} s; simulating {args.day} ({args.hours:g} h) "
              f"at {args.speed:g}x")  # fmt: skip
        while time.monotonic() < origin_s:
            hood.io(0.05)
        wall0, hub_cpu0, gen_cpu0 = time.monotonic(), cpu_s(hub.pid), own_cpu_s()
        samples: list[tuple[float, int, int, int, int]] = []  # hour, rss, hwm, db bytes, acked
        settlers: list[tuple[str, float, subprocess.Popen[bytes]]] = []
        next_settle = start_ms + int(args.settle_every_h * HOUR_MS)
        settle_log = tmp / "settle.log"

        def db_bytes() -> int:
            return sum(p.stat().st_size for p in tmp.glob("hub.db*"))

        def on_hour(now_ms: int) -> bool:
            nonlocal next_settle
            hour = (now_ms - start_ms) / HOUR_MS
            rss, hwm = memory_kib(hub.pid)
            c = hood.totals()
            samples.append((hour, rss, hwm, db_bytes(), c.counts.acked))
            lag = (time.monotonic() - origin_s) * args.speed / 3600 - hour
            print(f"  h{hour:5.1f}: hub RSS {mib(rss)} (peak {mib(hwm)}), "
                  f"db {db_bytes() / 1e6:.0f} MB, acked {c.counts.acked}, "
                  f"unacked {c.outstanding}, forecasts {watcher.forecasts}, "
                  f"prompts {watcher.prompts}, lag {lag:.2f} h", flush=True)  # fmt: skip
            if os.environ.get("COOPWATT_SOAK_TRACEMALLOC"):
                hub.send_signal(signal.SIGUSR1)
            if now_ms >= next_settle:
                next_settle += int(args.settle_every_h * HOUR_MS)
                settlers.append(("provisional", time.monotonic(), settle(db, scheme, args.day,
                                                                          settle_log)))  # fmt: skip
            return True

        hood.run(end_ms, on_tick=on_hour, tick_ms=HOUR_MS, drain_timeout_s=1800,
                 send_every_s=args.send_every_s)  # fmt: skip
        wall = time.monotonic() - wall0
        hub_cpu, gen_cpu = cpu_s(hub.pid) - hub_cpu0, own_cpu_s() - gen_cpu0
        on_hour(clock.now_ms())
        for _, _, p in settlers:
            p.wait()
        t_settle = time.monotonic()
        final = settle(db, scheme, args.day, settle_log)
        final.wait()
        settle_s = time.monotonic() - t_settle
        totals, expected = hood.totals(), hood.expected()
        hood.close()
        watcher.stop()
        hub.send_signal(signal.SIGTERM)
        out, _ = hub.communicate(timeout=300)
        mq_rss, mq_hwm = memory_kib(broker.process.pid)
    stored, per_device = count_stored(db)
    problems = check_exact(expected, per_device)
    days = args.hours / 24
    size = db_bytes()
    print(f"ran {args.hours:g} simulated hours in {wall / 60:.1f} min of wall time "
          f"({args.hours * 3600 / wall:.0f}x); hub CPU {hub_cpu / wall:.0%} of one core, "
          f"generator {gen_cpu / wall:.0%}")  # fmt: skip
    print(f"generator: {totals.line()}")
    print(f"hub: {out.decode().strip()[:400]}")
    verdict = "each exactly once" if not problems else "NOT EXACT: " + "; ".join(problems[:3])
    print(f"stored {stored} readings of {totals.counts.generated} generated: {verdict}")
    rss = [s[1] for s in samples]
    settled = [s for s in samples if s[0] >= 2]
    growth = (settled[-1][1] - settled[0][1]) if len(settled) > 1 else 0
    print(f"hub memory: RSS {mib(min(rss))} .. {mib(max(rss))}, peak {mib(samples[-1][2])}; "
          f"from hour 2 to the end {growth / 1024:+.1f} MiB; Mosquitto RSS {mib(mq_rss)} "
          f"(peak {mib(mq_hwm)})")  # fmt: skip
    print(f"database: {size / 1e6:.0f} MB = {size / args.homes / days / 1e6:.2f} MB per home per "
          f"day ({size / max(stored, 1):.0f} bytes per reading, "
          f"{stored / args.homes / days:.0f} readings per home per day)")  # fmt: skip
    print(f"forecasts published: {watcher.forecasts}; prompt sets published: {watcher.prompts} "
          f"to {len(watcher.prompted_homes)} homes")  # fmt: skip
    print(f"settlement: {len(settlers)} provisional runs during the day; the whole day settled in "
          f"{settle_s:.1f} s after the end:")  # fmt: skip
    print("  " + settle_log.read_text().strip().splitlines()[-1] if settle_log.exists() else "")
    if args.keep is None:
        ctx.cleanup()
    else:
        print(f"kept in {tmp}")


if __name__ == "__main__":
    main()
