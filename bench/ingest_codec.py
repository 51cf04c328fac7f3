"""The hub's decode path for readings, piece by piece, in one process: no broker, no SQLite.

    .venv/bin/python bench/ingest_codec.py [--homes 40] [--polls 1000]

Realistic batches (sim.household homes: grid meter, PV, a turbine at every other home; 1,000
readings, ~245 kB a message, as agents drain a backlog) are timed, message by message, through:

- ``json.loads`` alone: the C parser with no checks, the floor of any JSON codec;
- ``parse_json``: size, UTF-8, duplicate keys, NaN, version (the strict codec's first step);
- the general decoder: ``parse_json`` and the annotation-driven decoder with field paths;
- ``decode_message``: a readings message decoded into ``Reading`` objects (msgspec, then each
  ``Reading`` checks itself), falling back to the general decoder for anything unusual;
- ``decode_stored_message``: all the hub does to a readings message before storing it: msgspec
  decodes and checks it into the rows the hub stores (``ReadingRows``), with the same fallback.

Figures are readings per second of one core: the best of the messages (what the code costs on
an idle core) and the median (what it costs on this machine now). The code before the fast
path (commit 262738d), or before msgspec (commit 6eb255e, which has no
``decode_stored_message``: its row is left out), runs the same script:

    mkdir /tmp/before && git archive 262738d protocol sim | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before .venv/bin/python bench/ingest_codec.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from protocol import codec
from protocol.clock import ManualClock
from protocol.codec import decode_message, encode_batch, encode_reading, parse_json
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import Role
from sim.household import SimHome

T0 = 1_782_864_000_000
ROLES = {"grid-meter": Role.GRID, "pv-inverter": Role.PV, "wind-turbine": Role.WIND}


def messages(homes: int, polls: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of every home's backlog, in batches of 1,000 readings."""
    clock = ManualClock(T0)
    out = []
    for i in range(homes):
        home = f"home-{i + 1:04d}"
        sim = SimHome(home, i, clock, with_wind=i % 2 == 0)
        bodies = []
        for poll in range(polls):
            t = T0 + poll * 10_000
            for d in sim.devices:
                r = Reading(d, poll + 1, t, ROLES[d], "g1", sim.values(d, t))
                bodies.append(encode_reading(r))
        topic = f"coopwatt/bench/homes/{home}/readings"
        for j in range(0, len(bodies), 1000):
            out.append((topic, encode_batch(home, T0 + polls * 10_000, bodies[j : j + 1000])))
    return out


def timed(name: str, msgs: list[tuple[str, bytes]], step: Callable[[str, bytes], object]) -> None:
    readings = [p.count(b'"seq"') for _, p in msgs]
    per_reading = []
    for rep in range(3):
        for (topic, payload), n in zip(msgs, readings, strict=True):
            start = time.perf_counter()
            step(topic, payload)
            if rep:  # the first round warms caches
                per_reading.append((time.perf_counter() - start) / n)
    best, median = min(per_reading), statistics.median(per_reading)
    print(f"{name:<28} {1 / best:>10,.0f} readings/s best  {1 / median:>10,.0f} median  "
          f"({median * 1e6:.2f} us/reading)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=int, default=40)
    ap.add_argument("--polls", type=int, default=1000)
    args = ap.parse_args()
    msgs = messages(args.homes, args.polls)
    size = sum(len(p) for _, p in msgs)
    n = sum(p.count(b'"seq"') for _, p in msgs)
    print(f"{len(msgs)} messages, {n} readings, {size / n:.0f} bytes/reading; "
          f"code: {codec.__file__}")  # fmt: skip
    general = codec._decoder_for(ReadingBatch)
    timed("json.loads (no checks)", msgs, lambda t, p: json.loads(p))
    timed("parse_json", msgs, lambda t, p: parse_json(p))
    timed("general decoder", msgs, lambda t, p: general(parse_json(p), ""))
    timed("decode_message", msgs, decode_message)
    if hasattr(codec, "decode_stored_message"):
        timed("decode_stored_message (hub)", msgs, codec.decode_stored_message)


if __name__ == "__main__":
    main()
