"""Backtest figures of the shipped forecast model on the held-out real data (see MODEL_CARD).

    .venv/bin/python bench/forecast_backtest.py            # re-runs the held-out backtests
    .venv/bin/python bench/forecast_backtest.py --report   # prints models/backtest_report.json

Held out: demand Oct–Dec 2010 (HTW Berlin, 74 homes); PV all of 2013 (NREL PVDAQ 50); wind
Oct–Dec 2015 (DWD wind, small-turbine curve). "forecast" weather = measured weather with
synthetic day-ahead errors (models.train.ForecastErrors); "measured" = the measured weather.
"""

from __future__ import annotations

import argparse
import json

from hub.forecast.model import SHIPPED_MODEL
from models.train import REPORT_PATH, held_out_backtests, open_datasets, summary_lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", action="store_true", help="print the stored report only")
    parser.add_argument("--every-hours", type=float, default=6.0)
    args = parser.parse_args()
    if args.report:
        report = json.loads(REPORT_PATH.read_text(encoding="utf-8"))
    else:
        report = held_out_backtests(SHIPPED_MODEL, open_datasets(), args.every_hours)
    print(f"model {report['model']}")
    print("\n".join(summary_lines(report)))


if __name__ == "__main__":
    main()
