"""SML decoding cost: CPU time per frame and the memory importing the decoder adds to an agent.

An SML meter pushes one file every 1 to 4 s, so the decoder runs constantly on a Pi Zero 2 W next
to an agent measured at 33.5 MiB of its 35 MiB budget (bench/README.md, agent_poll.py). Figures:

1. CPU per frame: the two published meter dumps (tests/fixtures/sml) and a composed three-phase
   frame with every quantity of the OBIS table, each decoded ``--frames`` times (whole frames, and
   fed in 64-byte chunks as a serial port returns them); median microseconds per frame.
2. Import cost, in a fresh interpreter after the modules the agent imports anyway: tracemalloc's
   retained bytes and the change in VmRSS, for agent.sml_decode (with its table loaded) and, when
   importable (``--smllib-path``), for smllib 1.7, the library it was weighed against.

    .venv/bin/python bench/sml_decode.py [--frames 2000] [--smllib-path DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.sml_decode import SmlDecoder  # noqa: E402
from sim.sml_frames import QUANTITY_OBIS, compose_file, quantity_entries  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "sml"

PROBE = """
import gc, sys, tracemalloc, re, dataclasses, typing, enum, pathlib, tomllib, struct, math, os
sys.path.insert(0, {root!r})
import protocol.config_tables, agent.push_frames, agent.profiles
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1])
gc.collect(); tracemalloc.start(); before = rss()
{code}
gc.collect(); held, peak = tracemalloc.get_traced_memory()
print(held // 1024, peak // 1024, rss() - before)
"""


def frame_cost(frame: bytes, count: int, chunk: int | None) -> float:
    """Median microseconds per frame over ``count`` frames, in batches of 100."""
    decoder = SmlDecoder()
    per_batch = []
    for _ in range(max(1, count // 100)):
        start = time.perf_counter()
        for _ in range(100):
            if chunk is None:
                decoder.feed(frame)
            else:
                for i in range(0, len(frame), chunk):
                    decoder.feed(frame[i : i + chunk])
        per_batch.append((time.perf_counter() - start) / 100 * 1e6)
    return statistics.median(per_batch)


def import_cost(code: str, extra_path: str | None) -> str:
    env_path = [extra_path] if extra_path else []
    script = PROBE.format(root=str(ROOT), code=code)
    if env_path:
        script = f"import sys; sys.path.insert(0, {env_path[0]!r})\n" + script
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    if out.returncode:
        return f"not importable ({out.stderr.strip().splitlines()[-1]})"
    held, peak, rss = out.stdout.split()
    return f"retained {held} KiB (peak {peak} KiB while importing), VmRSS +{rss} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--smllib-path", help="a site-packages folder holding smllib")
    args = parser.parse_args()
    every = {
        name: (230.0 if name.startswith("voltage") else 1234.5 if "wh" in name else 12.34)
        for name in QUANTITY_OBIS
    }
    frames = {
        f.stem: bytes.fromhex("".join(f.read_text().split()))
        for f in sorted(FIXTURES.glob("*.hex"))
        if "bad" not in f.stem and "cut" not in f.stem
    }
    frames["composed, all 17 quantities"] = compose_file(quantity_entries(every, b"1SIM0000000001"))
    print(f"CPU per frame (median of batches of 100, {args.frames} frames):")
    for name, frame in frames.items():
        whole = frame_cost(frame, args.frames, None)
        chunked = frame_cost(frame, args.frames, 64)
        print(
            f"  {name:32} {len(frame):4} B  whole {whole:7.1f} us  64-byte chunks {chunked:7.1f} us"
        )
    print("import cost, after what the agent imports anyway:")
    print("  agent.sml_decode + table:", import_cost(
        "import agent.sml_decode\nd = agent.sml_decode.SmlDecoder()", None
    ))  # fmt: skip
    print("  smllib 1.7:", import_cost(
        "import smllib\nr = smllib.SmlStreamReader()", args.smllib_path
    ))  # fmt: skip


if __name__ == "__main__":
    main()
