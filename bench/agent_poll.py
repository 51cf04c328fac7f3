"""Agent polling cost: poll cycle time, CPU per device and resident memory of a running agent.

A home with three devices (an Eastron SDM630 grid meter, a SunSpec inverter and a small wind
turbine) is served by the simulator's pymodbus servers on loopback. Two measurements:

1. Poll cycle (in this process): the agent's device layer (profiles, SunSpec, the supervisor)
   reads all three devices back to back, ``--cycles`` times; wall time per cycle.
2. A running agent (``coopwatt-agent run`` in its own process, 1 s polling, a real Mosquitto and
   an acking stand-in for the hub in this process): CPU seconds per minute per device, and its
   resident memory, from /proc. Run twice: as installed here, and with numpy hidden, as on a Pi
   where ``pip install 'coopwatt[agent]'`` brings no numpy (sqlite-utils imports numpy when it
   can find it).

Targets (issue 3): at most 35 MiB resident, at most 0.1 CPU-s per minute per device at 1 s.

3. One P1 (DSMR 5) smart meter (issue 22): the simulator's P1 stream on loopback TCP, a
   telegram every second as a DSMR 5 meter sends them, read by an agent (numpy hidden) polling
   every 10 s; CPU-s per minute and resident memory, same targets (0.1 CPU-s/min, 35 MiB).

    .venv/bin/python bench/agent_poll.py [--seconds 60] [--cycles 300] [--only-p1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import DeviceConfig  # noqa: E402
from agent.consent_ledger import ConsentLedger  # noqa: E402
from agent.devices import DeviceSupervisor, open_devices  # noqa: E402
from protocol.clock import SystemClock  # noqa: E402
from protocol.codec import decode_message, encode  # noqa: E402
from protocol.payloads import Ack, ReadingBatch, seq_ranges  # noqa: E402
from protocol.topics import HomeTopic, home_topic  # noqa: E402
from sim.broker import run_mosquitto  # noqa: E402
from sim.household import SimHome  # noqa: E402
from sim.modbus_server import SimModbusServers  # noqa: E402
from sim.p1_stream import P1Stream  # noqa: E402

COOP, HOME = "bench", "home-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WITHOUT_NUMPY = (
    "import sys; sys.modules['numpy'] = None; "
    "from agent.cli import main; sys.argv[0] = 'coopwatt-agent'; main()"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def poll_cycles(endpoints: dict[str, Any], cycles: int) -> list[float]:
    configs = [
        DeviceConfig(name, ep.profile, f"tcp://{ep.host}:{ep.port}", ep.unit, 1.0)
        for name, ep in endpoints.items()
    ]
    sup = DeviceSupervisor(open_devices(configs), SystemClock())
    for slot in sup.slots:  # connect and discover SunSpec before timing
        assert sup.poll(slot) is not None, slot.health
    times = []
    for _ in range(cycles):
        began = time.perf_counter()
        for slot in sup.slots:
            sup.poll(slot)
        times.append(time.perf_counter() - began)
    sup.close()
    return times


class Acker:
    """Stands in for the hub: acks every reading it receives."""

    def __init__(self, host: str, port: int) -> None:
        self.readings = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-acker")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(home_topic(COOP, HOME, HomeTopic.READINGS), qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        _, batch = decode_message(msg.topic, bytes(msg.payload))
        if not isinstance(batch, ReadingBatch):
            return
        seqs: dict[str, list[int]] = {}
        for r in batch.readings:
            seqs.setdefault(r.device, []).append(r.seq)
        self.readings += len(batch.readings)
        ack = Ack(HOME, {d: seq_ranges(s) for d, s in seqs.items()})
        client.publish(home_topic(COOP, HOME, HomeTopic.ACK), encode(ack), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_agent(
    workdir: Path, endpoints: dict[str, Any], broker_url: str, seconds: float, hide_numpy: bool
) -> dict[str, float]:
    devices = "".join(
        f'[[devices]]\nname = "{name}"\nprofile = "{ep.profile}"\n'
        f'modbus = "tcp://{ep.host}:{ep.port}"\nunit = {ep.unit}\n\n'
        for name, ep in endpoints.items()
    )
    state = workdir / ("state-no-numpy" if hide_numpy else "state")
    config = workdir / "agent.toml"
    config.write_text(
        f'coop = "{COOP}"\nhome = "{HOME}"\npoll_interval_s = 1\n'
        f'data_dir = "{state}"\n\n[broker]\nurl = "{broker_url}"\n\n{devices}'
    )
    # The household shares every stream as polled, so every reading is sent and acked.
    ConsentLedger(state / "consent.jsonl", HOME).share_everything(int(time.time() * 1000))
    python = Path(sys.executable)
    command = (
        [str(python), "-c", WITHOUT_NUMPY, "run", "--config", str(config)]
        if hide_numpy
        else [str(python.parent / "coopwatt-agent"), "run", "--config", str(config)]
    )
    log = (workdir / "agent.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(8.0)  # start-up, imports, first connections and SunSpec discovery
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: see {workdir / 'agent.log'}")
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
        rss, peak = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    per_minute = (cpu1 - cpu0) / (wall1 - wall0) * 60.0
    return {
        "cpu_s_per_min": per_minute,
        "cpu_s_per_min_per_device": per_minute / len(endpoints),
        "rss_mib": rss / 1024,
        "peak_rss_mib": peak / 1024,
    }


def run_p1_agent(workdir: Path, broker_url: str, seconds: float) -> dict[str, float]:
    """An agent with one P1 meter (a DSMR 5 telegram a second over TCP), numpy hidden."""
    home = SimHome(HOME, 3, SystemClock())
    state = workdir / "state-p1"
    with P1Stream(lambda t: home.values("grid-meter", t), SystemClock()) as stream:
        stream.start()
        config = workdir / "agent-p1.toml"
        config.write_text(
            f'coop = "{COOP}"\nhome = "{HOME}"\npoll_interval_s = 10\ndata_dir = "{state}"\n\n'
            f'[broker]\nurl = "{broker_url}"\n\n'
            f'[[devices]]\nname = "grid-meter"\np1 = "{stream.url}"\nprofile = "dsmr-5"\n'
        )
        ConsentLedger(state / "consent.jsonl", HOME).share_everything(int(time.time() * 1000))
        command = [sys.executable, "-c", WITHOUT_NUMPY, "run", "--config", str(config)]
        log = (workdir / "agent-p1.log").open("ab")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(8.0)  # start-up, imports, the first connection
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited: see {workdir / 'agent-p1.log'}")
            sent0 = len(stream.log.delivered())
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            rss, peak = rss_kib(proc.pid)
            sent = len(stream.log.delivered()) - sent0
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    return {
        "cpu_s_per_min": (cpu1 - cpu0) / (wall1 - wall0) * 60.0,
        "rss_mib": rss / 1024,
        "peak_rss_mib": peak / 1024,
        "telegrams": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="agent measuring window")
    parser.add_argument("--cycles", type=int, default=300, help="in-process poll cycles")
    parser.add_argument("--only-p1", action="store_true", help="measure only the P1 meter")
    args = parser.parse_args()
    if args.only_p1:
        with tempfile.TemporaryDirectory() as tmp, run_mosquitto(Path(tmp) / "broker") as broker:
            acker = Acker(broker.host, broker.port)
            try:
                print_p1(run_p1_agent(Path(tmp), broker.url, args.seconds), args.seconds)
            finally:
                print(f"  readings acked by the stand-in hub: {acker.readings}")
                acker.close()
        return

    home = SimHome(HOME, 3, SystemClock())  # grid meter, SunSpec inverter, wind turbine
    with tempfile.TemporaryDirectory() as tmp, SimModbusServers([home]) as servers:
        endpoints = servers.endpoints()[HOME]
        times = poll_cycles(endpoints, args.cycles)
        ms = sorted(t * 1000 for t in times)
        n = len(endpoints)
        print(f"poll cycle, {n} devices over Modbus TCP on loopback ({args.cycles} cycles):")
        print(
            f"  median {statistics.median(ms):.2f} ms   p95 {ms[int(len(ms) * 0.95)]:.2f} ms"
            f"   max {ms[-1]:.2f} ms"
        )
        with run_mosquitto(Path(tmp) / "broker") as broker:
            acker = Acker(broker.host, broker.port)
            try:
                for hide in (False, True):
                    label = "agent-only install (numpy hidden)" if hide else "as installed here"
                    r = run_agent(Path(tmp), endpoints, broker.url, args.seconds, hide)
                    print(f"running agent, 1 s polling, {args.seconds:.0f} s window, {label}:")
                    print(
                        f"  CPU {r['cpu_s_per_min']:.3f} s/min = "
                        f"{r['cpu_s_per_min_per_device']:.3f} CPU-s/min per device "
                        f"(target <= 0.1)"
                    )
                    print(
                        f"  resident memory {r['rss_mib']:.1f} MiB (peak {r['peak_rss_mib']:.1f}"
                        " MiB, target <= 35)"
                    )
                print_p1(run_p1_agent(Path(tmp), broker.url, args.seconds), args.seconds)
            finally:
                print(f"  readings acked by the stand-in hub: {acker.readings}")
                acker.close()


def print_p1(r: dict[str, float], seconds: float) -> None:
    print(f"running agent, one P1 meter (DSMR 5, a telegram a second), {seconds:.0f} s window:")
    print(
        f"  CPU {r['cpu_s_per_min']:.3f} CPU-s/min (target <= 0.1), "
        f"{r['telegrams']:.0f} telegrams streamed"
    )
    print(
        f"  resident memory {r['rss_mib']:.1f} MiB (peak {r['peak_rss_mib']:.1f} MiB, target <= 35)"
    )


if __name__ == "__main__":
    main()
