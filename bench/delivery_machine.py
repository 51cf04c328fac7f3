"""The delivery state machine of ``tests/test_delivery_outage.py`` for many more runs than the
suite's five: polls interleaved with broker, hub and agent restarts and dropped connections, each
run ending with every reading the agent numbered stored exactly once.

    PYTHONPATH=. .venv/bin/python bench/delivery_machine.py [--examples 50]

Prints the runs made and the wall time per run; a failing run raises with hypothesis' report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from tests.test_delivery_outage import DeliveryMachine, machine_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="runs of eight steps each")
    args = parser.parse_args()
    started = time.perf_counter()
    run_state_machine_as_test(DeliveryMachine, settings=machine_settings(args.examples))
    wall_s = time.perf_counter() - started
    print(f"{args.examples} runs of 8 steps passed in {wall_s:.1f} s")
    print(f"  {wall_s / args.examples:.2f} s a run")


if __name__ == "__main__":
    main()
