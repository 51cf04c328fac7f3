"""A whole day without the broker, then recovery: the two outage scenarios of
``tests/test_delivery_outage.py`` over 24 simulated hours rather than the suite's two.

Devices, agent and hub run in this process on one ManualClock (a poll a minute, three devices),
the broker is a real Mosquitto that is stopped for the outage and started again. Each scenario
makes the test's own checks (every served poll stored once with its values; with the budget,
compaction and no loss, energy exact to the Wh) and prints how long its steps took:

- **a day without the broker**: 4,320 readings queue up, then drain;
- **a day past the budget**: the same day against a 300 kB outbox, which merges raw polls into
  quarter-hour aggregates while the broker is away.

    PYTHONPATH=. .venv/bin/python bench/outage_day.py [--hours 24] [--budget-kb 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import Mosquitto  # noqa: E402
from tests.test_delivery_outage import (  # noqa: E402
    OutageFigures,
    outage_past_the_budget,
    outage_then_recovery,
)


def show(name: str, wall_s: float, f: OutageFigures, hours: int) -> None:
    polls = hours * 60
    print(f"{name}:")
    print(f"  readings queued when the broker came back: {f.queued:,} (compacted {f.compacted:,})")
    per_poll_ms = 1000 * f.queue_s / polls
    print(f"  polling through the outage: {f.queue_s:.2f} s ({per_poll_ms:.1f} ms a poll)")
    print(f"  drain after the broker's restart: {f.drain_s:.2f} s")
    print(f"  whole scenario, with set-up and checks: {wall_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24, help="simulated hours of outage")
    parser.add_argument("--budget-kb", type=int, default=300, help="outbox budget, kB (1000 B)")
    args = parser.parse_args()
    scenarios: list[tuple[str, Callable[[Path, Mosquitto], OutageFigures]]] = [
        ("a day without the broker", lambda d, b: outage_then_recovery(d, b, args.hours)),
        (
            f"the outage past a {args.budget_kb} kB budget",
            lambda d, b: outage_past_the_budget(d, b, args.hours, args.budget_kb * 1000),
        ),
    ]
    for name, run in scenarios:
        with tempfile.TemporaryDirectory() as folder:
            broker = Mosquitto(Path(folder) / "broker")
            broker.start()
            try:
                started = time.perf_counter()
                figures = run(Path(folder), broker)
                show(name, time.perf_counter() - started, figures, args.hours)
            finally:
                broker.stop()


if __name__ == "__main__":
    main()
