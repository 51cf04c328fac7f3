"""Hub ingest throughput end to end, beside the raw limits of this machine, in one run.

    .venv/bin/python bench/ingest_throughput.py [--homes 200] [--polls 1000] [--workers 1,2]
                                                [--rounds 1] [--generator-nice 10] [--py-spy DIR]

``--homes`` simulated homes (sim/loadgen.py: a grid meter, PV, a turbine at every other home;
2.5 devices on average) each come back from an outage with ``--polls`` polls in their outbox
(1,000 polls at 10 s is 2.8 hours: 2,500 readings per home) and drain it the agent's way:
batches of 1,000 readings (~245 kB), at most 4,000 in flight per home. Measured on the same
payloads, in this order:

1. raw SQLite: the very rows the hub would write, ``executemany`` straight into a fresh hub
   database (same schema, WAL, ``synchronous=FULL``), one commit per group of the size the hub
   commits (8 MiB of payload);
2. raw paho/Mosquitto: the same messages published by the same home sessions to a bare paho
   subscriber in another process that only counts them (QoS 1 both ways), no acks;
3. the hub end to end: ``coopwatt-hub run`` in its own process (broker, decode, validate,
   consent, SQLite commit, ack), from the first publish until every reading is acked; once per
   ``--workers`` count (2 = the hub plus one ``--worker`` on the shared subscription). Each
   run checks that the database holds every reading exactly once. The generator runs at
   ``--generator-nice`` (default 10) meanwhile: it stands in for Pis on their own hardware, and
   at the hub's priority it took the CPU from the writer turn (``drain_at_nice``).

Goals (issue 10): at least 50,000 readings/s, and at least 70 % of the raw SQLite rate.
``--py-spy DIR`` records a flame graph of each hub process during its drain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
from ingest_common import (
    BIN,
    check_exact,
    count_stored,
    mib,
    own_cpu_s,
    start_hub,
)
from paho.mqtt.enums import CallbackAPIVersion

from hub.storage.store import _INSERT_READING, QUANTITY_NAMES, Store
from protocol.clock import ManualClock
from protocol.codec import encode_batch
from protocol.topics import HomeTopic, home_filter
from sim.broker import run_mosquitto
from sim.loadgen import BATCH_SIZE, Neighbourhood, Totals

COOP = "bench"
CADENCE_S = 10
GROUP_BYTES = 8 * 1024 * 1024  # hub.ingest.service.Ingest's max_group_bytes


def null_hub(url: str, coop: str, expected: int) -> None:
    """Subscriber side of the raw paho figure: count readings messages, say when all came."""
    host, port = url.removeprefix("mqtt://").split(":")
    done_topic = f"coopwatt/{coop}/bench/done"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="null-hub", protocol=mqtt.MQTTv5)
    got = {"messages": 0, "bytes": 0}

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got["messages"] += 1
        got["bytes"] += len(msg.payload)
        if got["messages"] == expected:
            c.publish(done_topic, json.dumps(got), qos=1)

    def on_connect(c: mqtt.Client, *args: object) -> None:
        c.subscribe(home_filter(coop, HomeTopic.READINGS), qos=1)
        c.publish(f"coopwatt/{coop}/bench/ready", b"1", qos=1)

    client.on_message = on_message
    client.on_connect = on_connect
    client.max_inflight_messages_set(100)
    client.connect(host, int(port))
    client.loop_forever()


def raw_sqlite(db: Path, bodies: list[tuple[str, str]], rows_per_commit: int) -> float:
    """Rows the hub would write for ``bodies`` ((home, reading JSON)); readings/s of
    ``executemany`` into a fresh hub database, committing every ``rows_per_commit`` rows."""
    store = Store.open(db, COOP)  # schema, WAL, synchronous=FULL: the hub's own settings
    conn = store._conn
    ids: dict[tuple[str, str], int] = {}
    rows = []
    received_ms = int(time.time() * 1000)
    for home, body in bodies:
        r = json.loads(body)
        key = (home, r["device"])
        if key not in ids:
            cur = conn.execute(
                "INSERT INTO devices (home, device, role) VALUES (?, ?, ?)",
                (home, r["device"], r["role"]),
            )
            ids[key] = int(cur.lastrowid or 0)
        q = r["quantities"]
        rows.append(
            (ids[key], r["seq"], r["ts_ms"], r["grant"], received_ms, r.get("period_ms"),
             *map(q.get, QUANTITY_NAMES))
        )  # fmt: skip
    conn.commit()
    start = time.perf_counter()
    for i in range(0, len(rows), rows_per_commit):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_READING, rows[i : i + rows_per_commit])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    store.close()
    return len(rows) / elapsed


def raw_paho(hood: Neighbourhood, url: str, payloads: list[tuple[int, bytes]]) -> tuple[float, int]:
    """Publish ``payloads`` ((home index, message)) through the broker to a bare subscriber in
    another process; returns (seconds from first publish to the last message received, bytes)."""
    got: dict[str, bytes | bytearray] = {}
    watcher = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-watch", protocol=mqtt.MQTTv5
    )
    watcher.on_message = lambda c, u, m: got.__setitem__(m.topic.rsplit("/", 1)[1], m.payload)
    watcher.on_connect = lambda c, *a: c.subscribe(f"coopwatt/{COOP}/bench/#", qos=1)
    host, port = url.removeprefix("mqtt://").split(":")
    watcher.connect(host, int(port))
    watcher.loop_start()
    time.sleep(0.3)
    sub = subprocess.Popen(
        [sys.executable, __file__, "--null-hub", url, str(len(payloads))],
        cwd=Path(__file__).parent,
    )
    try:
        while "ready" not in got:
            if sub.poll() is not None:
                raise RuntimeError("the null hub exited")
            time.sleep(0.01)
        start = time.perf_counter()
        for i, payload in payloads:
            h = hood.homes[i]
            assert h.session is not None
            h.session.publish(h.topic_readings, payload, qos=1)
            hood.io(0.0)
        while "done" not in got:
            hood.io(0.001)
        elapsed = time.perf_counter() - start
    finally:
        sub.send_signal(signal.SIGTERM)
        sub.wait(10)
        watcher.loop_stop()
        watcher.disconnect()
    return elapsed, json.loads(got["done"])["bytes"]


def profile_summary(path: Path, top: int = 12) -> str:
    """The functions a py-spy raw profile (collapsed stacks) spent most samples in, by self
    time; idle threads (waiting in select, a queue or a lock) are left out."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if any(w in leaf for w in ("select (", "wait (", "_wait_for_tstate_lock", "get (")):
            continue
        n = int(count)
        total += n
        name = leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1]
        own[name] = own.get(name, 0) + n
    lines = [f"  {path.name}: {total} busy samples; top functions by own time:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {n / max(total, 1):6.1%}  {name}")
    return "\n".join(lines)


def _progress(totals: Totals) -> None:
    """A line every 10 s of a drain: a stall shows (agents resend after 30 s without acks)."""
    _progress.calls = getattr(_progress, "calls", 0) + 1  # type: ignore[attr-defined]
    if _progress.calls % 10 == 0:  # type: ignore[attr-defined]
        print(f"  ... {totals.line()}", flush=True)


def drain_at_nice(hood: Neighbourhood, nice: int) -> float:
    """``hood.drain()`` in a thread of its own at scheduling priority ``nice``; its seconds.

    The generator plays hundreds of Pis that in life run on their own hardware. On this
    machine it shares two cores with the hub; at the hub's own priority the scheduler preempts
    the process that holds the writer turn (the part of ingest that cannot run in parallel) to
    run the generator. A higher ``nice`` lets it take the spare time first. On Linux a thread's
    priority is its own, so the hub processes started later by the main thread keep theirs.
    """

    def drain() -> float:
        if nice and sys.platform == "linux":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return hood.drain(timeout_s=900, progress=_progress)

    with ThreadPoolExecutor(max_workers=1) as pool:  # a fresh thread, at the default priority
        return pool.submit(drain).result()


def hub_run(
    hood: Neighbourhood,
    clock: ManualClock,
    polls: int,
    workdir: Path,
    url: str,
    workers: int,
    py_spy: Path | None,
    generator_nice: int,
) -> dict[str, float]:
    """Fill every outbox, start the hub on a fresh database, drain; the figures."""
    first_seq = {(h.home, d): s + 1 for h in hood.homes for d, s in h.seq.items()}
    n = hood.fill_backlog(polls)
    clock.set(clock.now_ms() + polls * CADENCE_S * 1000)
    run = len(list(workdir.glob("hub-*.db"))) + 1
    db = workdir / f"hub-{run}-{workers}w.db"
    hub = start_hub(workdir, COOP, url, db, workers=workers)
    spies = []
    try:
        # A fresh hub takes each home's retained grant and answers with a receipt.
        for h in hood.homes:
            h.consent_recorded = False
        deadline = time.monotonic() + 120
        while not all(h.consent_recorded for h in hood.homes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"consent receipts missing:\n{hub.log_tail()}")
            hood.io(0.05)
        if py_spy is not None:
            py_spy.mkdir(parents=True, exist_ok=True)
            for k, pid in enumerate(hub.pids):
                out = py_spy / f"hub-{run}-{workers}w-{k}.txt"
                spies.append(subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "100",
                     "--nonblocking", "--format", "raw", "-o", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
            time.sleep(1.0)
        hub_cpu0, own0 = hub.cpu_s(), own_cpu_s()
        elapsed = drain_at_nice(hood, generator_nice)
        hub_cpu, own = hub.cpu_s() - hub_cpu0, own_cpu_s() - own0
        memory = hub.memory_kib()
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        hub.stop()
        hub.forget_sessions()
    for path in hub.logs:  # each process's own counters, from its last log line
        stopped = [x for x in path.read_text().splitlines() if " stopped " in x]
        if stopped:
            print("  " + stopped[-1].split(": ", 1)[1][:160])
    if py_spy is not None:
        for k in range(workers):
            print(profile_summary(py_spy / f"hub-{run}-{workers}w-{k}.txt"))
    stored, per_device = count_stored(db)
    problems = check_exact(
        {k: v for k, v in hood.expected().items()}, per_device, first_seq=first_seq
    )
    if problems:
        print("  NOT EXACT: " + "; ".join(problems[:5]))
    return {
        "readings": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "hub_cpu_us": hub_cpu / n * 1e6,
        "gen_cpu_us": own / n * 1e6,
        "stored": stored,
        "exact": float(not problems),
        "rss_kib": max(m[0] for m in memory),
        "hwm_kib": max(m[1] for m in memory),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=int, default=200)
    ap.add_argument("--polls", type=int, default=1000, help="polls in each home's backlog")
    ap.add_argument("--workers", default="1,2", help="hub process counts to measure, e.g. 1,2")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat raw SQLite and the hub runs, interleaved; print the medians",
    )
    ap.add_argument("--py-spy", type=Path, default=None, help="write hub flame graphs here")
    ap.add_argument(
        "--generator-nice",
        type=int,
        default=10,
        help="scheduling priority of the load generator while the hub drains (Linux; 0: the "
        "hub's own). It stands in for Pis that run elsewhere; see drain_at_nice",
    )
    ap.add_argument("--null-hub", nargs=2, metavar=("URL", "MESSAGES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.null_hub:
        null_hub(args.null_hub[0], COOP, int(args.null_hub[1]))
        return
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.py_spy is not None and args.py_spy.exists() and not args.py_spy.is_dir():
        ap.error(f"--py-spy {args.py_spy}: exists and is not a directory")
    runs = 1 + args.rounds * len(worker_counts)  # the raw paho fill, then one fill per hub run
    with (
        tempfile.TemporaryDirectory(prefix="coopwatt-bench-") as d,
        run_mosquitto(Path(d) / "broker") as broker,
    ):
        tmp = Path(d)
        start_ms = int(time.time() * 1000) - runs * args.polls * CADENCE_S * 1000
        start_ms -= start_ms % (CADENCE_S * 1000)
        clock = ManualClock(start_ms)
        hood = Neighbourhood(broker.url, COOP, args.homes, clock, cadence_s=CADENCE_S)
        print(f"{args.homes} homes, {args.polls} polls each; broker {broker.url}; generator "
              f"at nice {args.generator_nice} while the hub drains")  # fmt: skip
        hood.connect(60, wait_consent=False)

        # The payloads of the first fill serve the raw figures (then are acked by nobody).
        n = hood.fill_backlog(args.polls)
        clock.set(clock.now_ms() + args.polls * CADENCE_S * 1000)
        bodies = [(h.home, h.bodies[k]) for h in hood.homes for k in h.backlog]
        payloads = [
            (i, encode_batch(h.home, clock.now_ms(), [h.bodies[k] for k in keys]))
            for i, h in enumerate(hood.homes)
            for keys in (list(h.backlog)[j : j + BATCH_SIZE]
                         for j in range(0, len(h.backlog), BATCH_SIZE))
        ]  # fmt: skip
        size = sum(len(p) for _, p in payloads)
        print(f"payloads: {len(payloads)} messages, {n} readings, {size / n:.0f} bytes/reading")
        rows_per_commit = max(BATCH_SIZE, int(GROUP_BYTES / (size / n)))

        sql_rate = raw_sqlite(tmp / "raw-1.db", bodies, rows_per_commit)
        print(f"raw SQLite executemany ({rows_per_commit} rows/commit, FULL): "
              f"{sql_rate:,.0f} readings/s")  # fmt: skip

        paho_s, paho_bytes = raw_paho(hood, broker.url, payloads)
        print(f"raw paho via Mosquitto (QoS 1, no decode, no acks): {n / paho_s:,.0f} "
              f"readings/s ({len(payloads) / paho_s:,.0f} messages/s, "
              f"{paho_bytes / paho_s / 1e6:.0f} MB/s)")  # fmt: skip
        for h in hood.homes:  # those were only for the raw figure: forget them
            h.bodies.clear()
            h.backlog.clear()
            h.inflight.clear()

        # This machine's speed drifts from minute to minute (shared host): each round measures
        # raw SQLite again, and each hub run is set against its own round's raw figure.
        shares: dict[int, list[float]] = {w: [] for w in worker_counts}
        raw_rates = [sql_rate]
        for round_no in range(1, args.rounds + 1):
            if round_no > 1:
                sql_rate = raw_sqlite(tmp / f"raw-{round_no}.db", bodies, rows_per_commit)
                raw_rates.append(sql_rate)
                print(f"round {round_no}: raw SQLite executemany {sql_rate:,.0f} readings/s")
            for workers in worker_counts:
                r = hub_run(
                    hood, clock, args.polls, tmp, broker.url, workers, args.py_spy,
                    args.generator_nice,
                )  # fmt: skip
                shares[workers].append(r["rate"] / sql_rate)
                print_hub_run(workers, r, sql_rate, n / paho_s)
        if args.rounds > 1:
            print(f"medians of {args.rounds} rounds: raw SQLite "
                  f"{statistics.median(raw_rates):,.0f} readings/s (range "
                  f"{min(raw_rates):,.0f}-{max(raw_rates):,.0f})")  # fmt: skip
            for workers, values in shares.items():
                print(f"  hub, {workers} process{'es' if workers > 1 else ''}: "
                      f"{statistics.median(values):.0%} of its round's raw SQLite (range "
                      f"{min(values):.0%}-{max(values):.0%})")  # fmt: skip
        totals = hood.totals()
        print(f"generator: {totals.line()}")
        hood.close()


def print_hub_run(workers: int, r: dict[str, float], sql_rate: float, paho_rate: float) -> None:
    print(
        f"hub end to end, {workers} process{'es' if workers > 1 else ''}: "
        f"{r['rate']:,.0f} readings/s = {r['rate'] / sql_rate:.0%} of raw SQLite, "
        f"{r['rate'] / paho_rate:.0%} of raw paho; {r['readings']:.0f} readings in "
        f"{r['seconds']:.2f} s; hub CPU {r['hub_cpu_us']:.1f} us/reading; generator "
        f"{r['gen_cpu_us']:.1f} us/reading; hub RSS {mib(r['rss_kib'])} "
        f"(peak {mib(r['hwm_kib'])}); stored {r['stored']:.0f}, "
        f"{'each exactly once' if r['exact'] else 'NOT EXACT'}"
    )


if __name__ == "__main__":
    main()
