"""A 2,000-home neighbourhood at a 10-second cadence: what the hub costs in CPU and memory.

    .venv/bin/python bench/ingest_neighbourhood.py [--homes 2000] [--cadence-s 10]
                                                   [--warmup-s 30] [--seconds 120]

Every home (sim/loadgen.py: its own MQTT session, a grid meter, PV and at every other home a
wind turbine) polls every ``--cadence-s`` seconds of the wall clock, spread evenly over the
cadence, and sends each poll at once as its agent does: one readings message of 2 or 3
readings, acked by the hub; a retained status every 5 minutes. The hub is ``coopwatt-hub run``
in its own process (ingest, consent, health metrics, prompts when configured). After
``--warmup-s`` it measures for ``--seconds``: the hub's CPU time as a share of one core (from
/proc), its resident memory (VmRSS, and the peak VmHWM), and the same for Mosquitto and the
load generator; then checks that the database holds every reading exactly once.

Goal (issue 10): under 20 % of one core, resident memory reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ingest_common import check_exact, count_stored, cpu_s, memory_kib, mib, own_cpu_s, start_hub

from protocol.clock import SystemClock
from sim.broker import run_mosquitto
from sim.loadgen import Neighbourhood

COOP = "bench-hood"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=int, default=2000)
    ap.add_argument("--cadence-s", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="coopwatt-hood-") as d,
        run_mosquitto(Path(d) / "broker", extra_config="max_connections -1\n") as broker,
    ):
        tmp = Path(d)
        assert broker.process is not None
        db = tmp / "hub.db"
        hub = start_hub(tmp, COOP, broker.url, db)
        clock = SystemClock()
        hood = Neighbourhood(broker.url, COOP, args.homes, clock, cadence_s=args.cadence_s)
        t = time.perf_counter()
        hood.connect(300)
        print(f"{args.homes} homes connected, consent recorded, in {time.perf_counter() - t:.1f} s")
        start_ms = clock.now_ms()
        measure_from = start_ms + int(args.warmup_s * 1000)
        until = measure_from + int(args.seconds * 1000)
        marks: dict[str, tuple[float, ...]] = {}
        pids = {"hub": hub.pids[0], "mosquitto": broker.process.pid}

        def sample() -> tuple[float, ...]:
            c = hood.totals().counts
            return (time.monotonic(), cpu_s(pids["hub"]), cpu_s(pids["mosquitto"]), own_cpu_s(),
                    c.generated, c.messages, c.acked)  # fmt: skip

        def tick(now_ms: int) -> bool:
            if "start" not in marks and now_ms >= measure_from:
                marks["start"] = sample()
            if "start" in marks and now_ms >= until and "end" not in marks:
                marks["end"] = sample()
            return True

        hood.run(until, on_tick=tick, tick_ms=1000)
        marks.setdefault("end", sample())
        hub_rss, hub_hwm = memory_kib(pids["hub"])
        mq_rss, mq_hwm = memory_kib(pids["mosquitto"])
        own_rss, own_hwm = memory_kib(__import__("os").getpid())
        totals = hood.totals()
        expected = hood.expected()
        hood.close()
        hub.stop()
        a, b = marks["start"], marks["end"]
        wall = b[0] - a[0]
        readings, messages, acked = b[4] - a[4], b[5] - a[5], b[6] - a[6]
        print(f"measured {wall:.0f} s after a {args.warmup_s:.0f} s warm-up: "
              f"{readings / wall:,.0f} readings/s in {messages / wall:,.0f} messages/s "
              f"({acked / wall:,.0f} acked/s)")  # fmt: skip
        print(f"hub:       {(b[1] - a[1]) / wall:6.1%} of one core; RSS {mib(hub_rss)} "
              f"(peak {mib(hub_hwm)})")  # fmt: skip
        print(f"mosquitto: {(b[2] - a[2]) / wall:6.1%} of one core; RSS {mib(mq_rss)} "
              f"(peak {mib(mq_hwm)}), {args.homes + 3} connections")  # fmt: skip
        print(f"generator: {(b[3] - a[3]) / wall:6.1%} of one core; RSS {mib(own_rss)} "
              f"(peak {mib(own_hwm)})")  # fmt: skip
        stored, per_device = count_stored(db)
        problems = check_exact(expected, per_device)
        print(f"generator: {totals.line()}")
        verdict = "each exactly once" if not problems else "NOT EXACT: " + "; ".join(problems[:3])
        print(f"hub stored {stored} readings: {verdict}")
        print("goal: under 20 % of one core -> "
              f"{'met' if (b[1] - a[1]) / wall < 0.2 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
