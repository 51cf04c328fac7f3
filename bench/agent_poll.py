"""Agent polling cost: CPU and resident memory of a running agent, per kind of home.

Homes (``--home``, repeatable; default: every one available):

- ``single-modbus``: one Eastron SDM630 grid meter, the commonest installation;
- ``three``: an SDM630 grid meter, a SunSpec inverter and a small wind turbine;
- ``p1``: one DSMR 5 P1 smart meter: the simulator's P1 stream on loopback TCP (as a P1 dongle),
  a telegram every second as a DSMR 5 meter sends them.

Modbus devices are served by the simulator's pymodbus servers on loopback. For each home, a
running agent (``coopwatt-agent run`` in its own process, 1 s polling, a real Mosquitto and an
acking stand-in for the hub in this process), with numpy hidden as on a Pi where
``pip install 'coopwatt[agent]'`` brings no numpy (sqlite-utils imports numpy when it can find
it): CPU seconds per minute of the whole agent process (its CPU-time clock, to the nanosecond,
every thread counted; /proc's utime + stime, in 10 ms ticks, beside it), per device too, and
its resident memory (VmRSS, peak VmHWM), and how many readings the stand-in hub acked in how
many messages (the agent's default ``send_interval_s``, 5 s, sends six polls a message at 1 s
polling). ``--runs`` repeats each measurement. ``--as-installed`` adds a run with numpy
importable. For ``three`` the in-process poll cycle (profiles, SunSpec, the supervisor reading
all three devices back to
back, ``--cycles`` times) is timed as well.

Targets (issues 3 and 22): at most 35 MiB resident, at most 0.1 CPU-s per minute at 1 s polling
for a single meter (the whole agent) and per device for the three-device home.

    .venv/bin/python bench/agent_poll.py [--home single-modbus] [--seconds 60] [--runs 2]
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
from typing import Any, Final

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
from sim.household import GRID_METER, SimHome  # noqa: E402
from sim.modbus_server import SimModbusServers  # noqa: E402
from sim.p1_stream import P1Stream  # noqa: E402

COOP, HOME = "bench", "home-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WITHOUT_NUMPY = (
    "import sys; sys.modules['numpy'] = None; "
    "from agent.cli import main; sys.argv[0] = 'coopwatt-agent'; main()"
)


def cpu_seconds(pid: int) -> float:
    """The process's CPU time to the nanosecond: its CPU-time clock (clock_getcpuclockid's
    encoding of a pid, which Linux lets any process of the same user read). /proc's utime and
    stime come in 10 ms ticks, too coarse for a budget of 0.1 s a minute."""
    return time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole process


def tick_seconds(pid: int) -> float:
    """utime + stime from /proc (what ps and psutil show): the cross-check."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_costs(pid: int) -> dict[str, tuple[float, int]]:
    """Each thread's name -> (CPU-s, to the nanosecond from /proc's schedstat; wakeups:
    voluntary context switches). /proc's per-thread utime and stime come in 10 ms ticks, which
    a thread waking for 100 µs a second mostly never gets charged."""
    costs: dict[str, tuple[float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
            on_cpu_ns = int((task / "schedstat").read_text().split()[0])
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        switches = next(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith("voluntary_ctxt_switches")
        )
        costs[f"{name} ({task.name})"] = (on_cpu_ns / 1e9, switches)
    return costs


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
        self.messages = 0
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
        self.messages += 1
        ack = Ack(HOME, {d: seq_ranges(s) for d, s in seqs.items()})
        client.publish(home_topic(COOP, HOME, HomeTopic.ACK), encode(ack), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def modbus_devices(endpoints: dict[str, Any]) -> list[str]:
    """The ``[[devices]]`` tables of Modbus ``endpoints``."""
    return [
        f'[[devices]]\nname = "{name}"\nprofile = "{ep.profile}"\n'
        f'modbus = "tcp://{ep.host}:{ep.port}"\nunit = {ep.unit}\n\n'
        for name, ep in endpoints.items()
    ]


def run_agent(
    workdir: Path,
    tables: list[str],
    broker_url: str,
    seconds: float,
    hide_numpy: bool,
    label: str,
    profile: Path | None = None,
    show_threads: bool = False,
    send_interval_s: float | None = None,
) -> dict[str, float]:
    """Start an agent polling the devices of ``tables`` every second; its CPU and memory over
    ``seconds``.

    With ``profile``, py-spy (if installed) samples every thread of the agent over the window
    and writes its raw stacks there. ``show_threads`` prints each thread's CPU and wakeups.
    """
    devices = "".join(tables)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=workdir))
    state = run_dir / "state"
    config = run_dir / "agent.toml"
    config.write_text(
        f'coop = "{COOP}"\nhome = "{HOME}"\npoll_interval_s = 1\n'
        + ("" if send_interval_s is None else f"send_interval_s = {send_interval_s:g}\n")
        + f'data_dir = "{state}"\n\n[broker]\nurl = "{broker_url}"\n\n{devices}'
    )
    # The household shares every stream as polled, so every reading is sent and acked.
    ConsentLedger(state / "consent.jsonl", HOME).share_everything(int(time.time() * 1000))
    python = Path(sys.executable)
    command = (
        [str(python), "-c", WITHOUT_NUMPY, "run", "--config", str(config)]
        if hide_numpy
        else [str(python.parent / "coopwatt-agent"), "run", "--config", str(config)]
    )
    log = (run_dir / "agent.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    spy: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(8.0)  # start-up, imports, first connections and SunSpec discovery
        if proc.poll() is not None:
            tail = (run_dir / "agent.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"agent exited ({run_dir / 'agent.log'}):\n{tail}")
        if profile is not None:
            spy = subprocess.Popen(
                [str(python.parent / "py-spy"), "record", "--pid", str(proc.pid), "--idle",
                 "--threads", "--duration", str(int(seconds)), "--rate", "200",
                 "--format", "raw", "--output", str(profile)],
            )  # fmt: skip
        threads0 = thread_costs(proc.pid)
        cpu0, ticks0, wall0 = cpu_seconds(proc.pid), tick_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, ticks1, wall1 = cpu_seconds(proc.pid), tick_seconds(proc.pid), time.monotonic()
        threads1 = thread_costs(proc.pid)
        rss, peak = rss_kib(proc.pid)
        if spy is not None:
            spy.wait(60)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    per_minute = (cpu1 - cpu0) / (wall1 - wall0) * 60.0
    if show_threads:
        scale = 60.0 / (wall1 - wall0)
        for name, (cpu_1, wake1) in sorted(threads1.items()):
            cpu_0, wake0 = threads0.get(name, (0.0, 0))
            print(
                f"    thread {name}: {(cpu_1 - cpu_0) * scale:.4f} CPU-s/min, "
                f"{(wake1 - wake0) * scale:.0f} wakeups/min"
            )
    return {
        "cpu_s_per_min": per_minute,
        "ticks_s_per_min": (ticks1 - ticks0) / (wall1 - wall0) * 60.0,
        "cpu_s_per_min_per_device": per_minute / len(tables),
        "rss_mib": rss / 1024,
        "peak_rss_mib": peak / 1024,
    }


def modbus_home(name: str, endpoints: dict[str, Any]) -> dict[str, Any]:
    """The devices of home ``name`` among the simulator's endpoints."""
    if name == "single-modbus":
        return {GRID_METER: endpoints[GRID_METER]}  # the Eastron SDM630
    return dict(endpoints)


P1_HOME: Final = "p1"
HOMES: Final = ("single-modbus", "three", P1_HOME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", action="append", choices=HOMES, help="home to measure (repeatable)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="agent measuring window")
    parser.add_argument("--runs", type=int, default=2, help="measurements per home")
    parser.add_argument("--cycles", type=int, default=300, help="in-process poll cycles (three)")
    parser.add_argument("--as-installed", action="store_true", help="also run with numpy")
    parser.add_argument(
        "--profile", type=Path, help="directory for py-spy profiles of each run (needs py-spy)"
    )
    parser.add_argument(
        "--threads", action="store_true", help="print each agent thread's CPU and wakeups"
    )
    parser.add_argument(
        "--send-interval", type=float, help="the agent's send_interval_s (default: its own)"
    )
    args = parser.parse_args()
    homes = args.home or list(HOMES)

    sim = SimHome(HOME, 3, SystemClock())  # grid meter, SunSpec inverter, wind turbine
    p1 = P1Stream(lambda t: sim.values(GRID_METER, t), SystemClock())  # a telegram a second
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimModbusServers([sim]) as servers,
        p1.start(),
    ):
        all_endpoints = servers.endpoints()[HOME]
        if "three" in homes:
            times = poll_cycles(all_endpoints, args.cycles)
            ms = sorted(t * 1000 for t in times)
            print(f"poll cycle, three devices over Modbus TCP on loopback ({args.cycles} cycles):")
            print(
                f"  median {statistics.median(ms):.2f} ms   p95 {ms[int(len(ms) * 0.95)]:.2f} ms"
                f"   max {ms[-1]:.2f} ms"
            )
        with run_mosquitto(Path(tmp) / "broker") as broker:
            acker = Acker(broker.host, broker.port)
            try:
                for home in homes:
                    tables = (
                        [f'[[devices]]\nname = "grid-meter"\np1 = "{p1.url}"\n\n']
                        if home == P1_HOME
                        else modbus_devices(modbus_home(home, all_endpoints))
                    )
                    n = len(tables)
                    for hide in (True, False) if args.as_installed else (True,):
                        how = "numpy hidden" if hide else "as installed here"
                        print(f"home {home} ({n} device{'s' if n > 1 else ''}), 1 s polling, "
                              f"{args.seconds:.0f} s window, {how}:")  # fmt: skip
                        for run in range(1, args.runs + 1):
                            profile = None
                            if args.profile is not None:
                                args.profile.mkdir(parents=True, exist_ok=True)
                                profile = args.profile / f"{home}-{run}.txt"
                            acked0, messages0 = acker.readings, acker.messages
                            r = run_agent(
                                Path(tmp), tables, broker.url, args.seconds, hide, home,
                                profile, args.threads, args.send_interval,
                            )  # fmt: skip
                            per_dev = (
                                f" = {r['cpu_s_per_min_per_device']:.3f} per device"
                                if n > 1
                                else ""
                            )
                            print(
                                f"  run {run}: CPU {r['cpu_s_per_min']:.3f} s/min{per_dev} "
                                f"(target <= 0.1{' per device' if n > 1 else ''}; "
                                f"/proc ticks {r['ticks_s_per_min']:.2f});  "
                                f"VmRSS {r['rss_mib']:.1f} MiB, VmHWM {r['peak_rss_mib']:.1f} MiB "
                                f"(target <= 35);  acked {acker.readings - acked0} readings "
                                f"in {acker.messages - messages0} messages"
                            )
            finally:
                acker.close()


if __name__ == "__main__":
    main()
