"""Shared by the ingest and soak benchmarks: hub processes, and what /proc says about them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.loadgen import stored_seq_ranges

BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB: resident memory now, and its peak."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount = line.split(":")
            values[name] = int(amount.split()[0])
    return values["VmRSS"], values["VmHWM"]


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class HubProcesses:
    """The hub (and its extra ingest workers) as child processes; stderr goes to log files."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)
    broker_url: str = ""

    def forget_sessions(self) -> None:
        """End the stopped hub's persistent sessions at the broker: a later run's hub is a new
        client, and an old session would go on queueing (or, in a shared group, taking a share
        of) every batch published."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        host, port = self.broker_url.removeprefix("mqtt://").split(":")
        for client_id in self.client_ids:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=mqtt.MQTTv5)  # fmt: skip
            c.connect(host, int(port), clean_start=True)  # no session expiry: gone at disconnect
            c.loop_start()
            time.sleep(0.1)
            c.disconnect()
            c.loop_stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids)

    def memory_kib(self) -> list[tuple[int, int]]:
        return [memory_kib(pid) for pid in self.pids]

    def stop(self, timeout_s: float = 60.0) -> None:
        for p in reversed(self.procs):  # workers first, the primary last
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in self.logs:
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def write_hub_config(
    workdir: Path, coop: str, broker_url: str, db: Path, shared_group: str | None = None
) -> Path:
    """A hub config for ``db``; its client id is the database's name, so a run on a fresh
    database is also a fresh session at the broker (a persistent session keeps what an earlier
    run subscribed to; the hub drops that only when its database remembers it)."""
    config = workdir / f"hub-{db.stem}.toml"
    text = (
        f'coop = "{coop}"\ndb = "{db}"\n[broker]\nurl = "{broker_url}"\n'
        f'client_id = "hub-{db.stem}"\n'
    )
    if shared_group:
        text += f'shared_group = "{shared_group}"\n'
    config.write_text(text)
    return config


def start_hub(
    workdir: Path,
    coop: str,
    broker_url: str,
    db: Path,
    *,
    workers: int = 1,
    log_level: str = "warning",
    timeout_s: float = 30.0,
) -> HubProcesses:
    """``coopwatt-hub run`` (and ``--worker 1..workers-1`` on a shared subscription when
    ``workers`` > 1); returns once each has connected to the broker."""
    config = write_hub_config(workdir, coop, broker_url, db, "hub" if workers > 1 else None)
    hub = HubProcesses(broker_url=broker_url)
    hub.client_ids = [f"hub-{db.stem}"] + [f"hub-{db.stem}-w{n}" for n in range(1, workers)]
    exe = str(BIN / "coopwatt-hub")
    for n in range(workers):
        extra = [] if n == 0 else ["--worker", str(n)]
        log_path = workdir / f"hub-{db.stem}-{n}.log"
        # INFO for the one "connected" line we wait for; the level then only adds start/stop.
        args = [exe, "run", "--config", str(config), "--log-level", "info", *extra]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(args, stderr=log)
        hub.procs.append(proc)
        hub.logs.append(log_path)
        deadline = time.monotonic() + timeout_s
        while "connected to" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                hub.stop()
                raise RuntimeError(f"hub process {n} did not connect:\n{hub.log_tail()}")
            time.sleep(0.05)  # waiting for another process to connect and subscribe
        if n == 0:
            time.sleep(0.3)  # let the primary subscribe before a worker joins
    time.sleep(0.3)  # subscriptions are made right after the CONNACK
    return hub


def count_stored(db: Path) -> tuple[int, dict[tuple[str, str], tuple[int, int, int]]]:
    """Readings stored, and per (home, device) their count, lowest and highest seq."""
    per = stored_seq_ranges(db)
    return sum(v[0] for v in per.values()), per


def check_exact(
    expected: dict[tuple[str, str], int],
    stored: dict[tuple[str, str], tuple[int, int, int]],
    first_seq: dict[tuple[str, str], int] | None = None,
) -> list[str]:
    """Every device holds exactly the seqs generated (first..last, each once); the problems."""
    problems = []
    for key, last in expected.items():
        first = (first_seq or {}).get(key, 1)
        want = last - first + 1
        got = stored.get(key)
        if got is None:
            problems.append(f"{key}: nothing stored, {want} expected")
        elif got != (want, first, last):
            problems.append(f"{key}: stored count/min/max {got}, expected {(want, first, last)}")
    for key in stored.keys() - expected.keys():
        problems.append(f"{key}: stored but never generated")
    return problems


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"
