"""Drain a day's backlog, and what the outbox costs the SD card.

A home with three devices polled every 10 s queues 25,920 readings in a 24-hour outage. This
bench fills a real outbox that way (one transaction per poll cycle, as the agent does), measuring
the bytes written to storage per reading, then starts the real agent against a real Mosquitto and
a hub process and times how long it takes until the hub has acked the whole backlog.

    .venv/bin/python bench/drain_backlog.py [--hours 24] [--poll-s 10]

Target: the 24-hour backlog drains in under 5 s.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.config import AgentConfig, DeviceConfig
from agent.consent_ledger import ConsentLedger
from agent.outbox import Outbox, Polled
from agent.service import Agent
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.quantities import Role
from protocol.session import BrokerSettings
from sim.broker import run_mosquitto
from sim.household import SimHome
from sim.modbus_server import SimModbusServers

T0 = 1_782_864_000_000
DRAIN_LIMIT_S = 120.0  # a drain that takes this long has stopped: say so rather than wait
BIN = Path(sys.executable).parent


def write_bytes() -> int:
    """Bytes this process has caused to be written to storage (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def fill(
    outbox_path: Path, hours: float, poll_s: int, sim: SimHome, grant: str
) -> tuple[int, int, float]:
    """Queue a poll every ``poll_s`` for ``hours``, released under ``grant``; returns readings,
    bytes written, seconds."""
    box = Outbox(outbox_path)
    roles = {"grid-meter": Role.GRID, "pv-inverter": Role.PV, "wind-turbine": Role.WIND}
    before, start = write_bytes(), time.perf_counter()
    n = 0
    for i in range(int(hours * 3600 / poll_s)):
        t = T0 + i * poll_s * 1000
        box.add([Polled(d, role, t, sim.values(d, t)) for d, role in roles.items()], grant)
        n += 3
    elapsed = time.perf_counter() - start
    written = write_bytes() - before
    box.close()
    return n, written, elapsed


def steady_state(outbox_path: Path, cycles: int, sim: SimHome, grant: str) -> float:
    """Connected operation: each cycle stores a poll and takes the previous poll's acks."""
    box = Outbox(outbox_path)
    roles = {"grid-meter": Role.GRID, "pv-inverter": Role.PV, "wind-turbine": Role.WIND}
    before = write_bytes()
    previous: list[tuple[str, int]] = []
    for i in range(cycles):
        t = T0 + i * 10_000
        box.remove({d: [s] for d, s in previous})
        rows = box.add([Polled(d, r, t, sim.values(d, t)) for d, r in roles.items()], grant)
        previous = [(r.device, r.seq) for r in rows]
    written = write_bytes() - before
    box.close()
    return written / (cycles * 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--poll-s", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clock = ManualClock(T0)
        sim = SimHome("home-1", 1, clock)
        # The household shares everything, and the backlog was released under that grant: the
        # hub stores (and acks) a reading only under a grant it has recorded.
        grant = ConsentLedger(tmp / "agent" / "consent.jsonl", "home-1").share_everything(T0)
        n, written, fill_s = fill(
            tmp / "agent" / "outbox.db", args.hours, args.poll_s, sim, grant.grant
        )
        size = (tmp / "agent" / "outbox.db").stat().st_size
        print(
            f"queued {n} readings in {fill_s:.1f} s ({n / fill_s:.0f}/s, one transaction per poll)"
        )
        print(
            f"storage writes: {written / n:.0f} bytes per reading "
            f"({written / 1e6:.1f} MB); outbox file {size / n:.0f} bytes per reading"
        )
        per_reading = steady_state(tmp / "steady" / "outbox.db", 2000, sim, grant.grant)
        print(f"connected (poll stored, previous poll's acks deleted in the same commit): "
              f"{per_reading:.0f} bytes written per reading")  # fmt: skip
        clock.set(T0 + int(args.hours * 3_600_000))
        with run_mosquitto(tmp / "broker") as broker:
            (tmp / "hub.toml").write_text(
                f'coop = "bench"\ndb = "hub.db"\n[broker]\nurl = "{broker.url}"\n'
            )
            hub = subprocess.Popen([str(BIN / "coopwatt-hub"), "run", "--config",
                                    str(tmp / "hub.toml")], stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                with SimModbusServers([sim]) as servers:
                    eps = servers.endpoints()["home-1"]
                    config = AgentConfig(
                        coop="bench", home="home-1",
                        broker=BrokerSettings(broker.url, "agent-bench"),
                        data_dir=tmp / "agent",
                        devices=tuple(DeviceConfig(k, e.profile, f"tcp://{e.host}:{e.port}",
                                                   e.unit, args.poll_s) for k, e in eps.items()),
                    )  # fmt: skip
                    time.sleep(1.0)  # let the hub subscribe before the agent connects
                    agent = Agent(config, clock)
                    thread = threading.Thread(target=agent.run)
                    start = time.perf_counter()
                    thread.start()
                    agent.session.connected.wait(10)
                    connected = time.perf_counter()
                    while agent.backlog > 0 and time.perf_counter() < connected + DRAIN_LIMIT_S:
                        time.sleep(0.01)
                    done = time.perf_counter()
                    left = agent.backlog
                    agent.stop()
                    thread.join(30)
            finally:
                hub.send_signal(signal.SIGTERM)
                hub.wait(30)
        with Store.open_existing(tmp / "hub.db") as store:
            stored = store.count_readings()
        if left:
            raise SystemExit(
                f"NOT drained: {left} readings still waiting {DRAIN_LIMIT_S:.0f} s after "
                f"connecting (hub stored {stored}): is the hub acking?"
            )
        drain_s = done - connected
        print(f"drained {n} readings in {drain_s:.2f} s after connecting "
              f"({n / drain_s:.0f} readings/s; {connected - start:.2f} s to connect); "
              f"hub stored {stored}")  # fmt: skip
        print(f"target: under 5 s -> {'met' if drain_s < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
