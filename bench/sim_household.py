"""Benchmark: the simulator's cost, the figures two tests used to assert; prints them.

    PYTHONPATH=. .venv/bin/python bench/sim_household.py [--homes 5] [--repeat 5]

- **catch-up**: five homes' devices queried once after an hour of 10-second steps (360 per home)
  under a ManualClock, as ``make demo --speed 600`` asks every real second; the demo keeps up
  while this stays well under a second.
- **server start**: starting the pymodbus servers of those homes (three per home) on loopback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from protocol.clock import ManualClock
from sim.household import SimHome
from sim.modbus_server import SimModbusServers

START_MS = int(datetime(2024, 6, 21, 6, 0, tzinfo=UTC).timestamp() * 1000)


def catch_up_s(homes: int) -> float:
    clock = ManualClock(START_MS)
    sims = [SimHome(f"h{i}", i, clock) for i in range(homes)]
    clock.advance(3_600_000)
    began = time.perf_counter()
    for home in sims:
        for device in home.devices:
            home.values(device, clock.now_ms())
    return time.perf_counter() - began


def server_start_s(homes: int) -> tuple[float, int]:
    clock = ManualClock(START_MS)
    sims = [SimHome(f"home-{i}", i, clock) for i in range(homes)]
    began = time.perf_counter()
    servers = SimModbusServers(sims)
    servers.start()
    elapsed = time.perf_counter() - began
    count = sum(len(devices) for devices in servers.endpoints().values())
    servers.stop()
    return elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    catch = [catch_up_s(args.homes) for _ in range(args.repeat)]
    starts = [server_start_s(args.homes) for _ in range(args.repeat)]
    steps = args.homes * 360
    print(
        f"catch-up, {args.homes} homes x 360 steps ({steps}): median "
        f"{statistics.median(catch) * 1000:.1f} ms, max {max(catch) * 1000:.1f} ms "
        "(the demo at speed 600 needs under 1000 ms)"
    )
    print(
        f"server start, {starts[0][1]} servers: median "
        f"{statistics.median(s for s, _ in starts) * 1000:.1f} ms, "
        f"max {max(s for s, _ in starts) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
