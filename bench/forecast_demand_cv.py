"""Blocked cross-validation of demand's P50, by month, on the training year only.

    .venv/bin/python bench/forecast_demand_cv.py                     # shipped features, 1 ensemble
    .venv/bin/python bench/forecast_demand_cv.py --drop mean_24h     # ablation: without a feature
    .venv/bin/python bench/forecast_demand_cv.py --bag 5             # as shipped (slower)

Why: one validation quarter moves by tenths of a point from one variant to the next, and the
held-out October–December 2010 must be scored once, not tuned on. Here each month from February
to September 2010 is forecast by a model fitted on the other months of January–September (less
the two days before the month, whose 48-hour horizons reach into it), issuing every 6 hours like
the backtest, and each trajectory's P50 smoothed as the hub does (``--raw``: not). Printed:
skill = 1 − RMSE(P50) / RMSE(same time last week), pooled over every month and per month.
Needs the ``train`` extra. On the 2-core machine: about 10 s to build the rows, and 40 s to fit
the eight months with one ensemble (``--bag 5``: about three minutes).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm import tqdm

from hub.forecast.features import DAY_MS, FEATURES, demand_level_w
from hub.forecast.model import smooth_centre
from models.train import Settings, _utc, fit_quantile, issue_times, open_datasets, rows_for

FIT_START, FIT_END = _utc("2010-01-08"), _utc("2010-10-01")
MONTHS = [_utc(f"2010-{m:02d}-01") for m in range(2, 11)]
GAP_MS = 2 * DAY_MS


def _month(ms: int, form: str) -> str:
    return time.strftime(form, time.gmtime(ms / 1000))


def _smoothed(prediction: np.ndarray, issued: np.ndarray) -> np.ndarray:
    """The hub's smoothing (:func:`hub.forecast.model.smooth_centre`) over each issue's trajectory;
    the scored rows of an issue are its consecutive steps, as the data has no gaps."""
    out = prediction.copy()
    for issue in np.unique(issued):
        rows = np.flatnonzero(issued == issue)
        if rows.size != 192 or np.any(np.diff(rows) != 1):
            raise SystemExit("an issue's scored rows are not one whole trajectory")
        q = np.repeat(prediction[rows, None], 3, axis=1)
        out[rows] = smooth_centre(q)[:, 1]
    return out


def _rows(
    ds: Any, issues: list[int], fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, normalised targets, the level (W) and the issue time of every row."""
    xs, ys, levels, stamps = [], [], [], []
    bar = tqdm(disable=True)  # rows_for counts issues on a progress bar; this run prints its own
    for issue in issues:
        x, y = rows_for(ds, [issue], fraction, rng, bar)
        if not y.size:
            continue
        level = demand_level_w(ds.history.before(issue))
        assert level is not None  # rows_for gave rows, so the model had a level
        xs.append(x)
        ys.append(y)
        levels.append(np.full(y.size, level))
        stamps.append(np.full(y.size, issue, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(levels), np.concatenate(stamps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="FEATURE",
        help=f"leave a feature out (repeatable): {', '.join(FEATURES['demand'])}",
    )
    parser.add_argument("--bag", type=int, default=1, help="ensembles in the P50 (shipped: 5)")
    parser.add_argument(
        "--raw", action="store_true", help="score the trees' P50 without the hub's smoothing"
    )
    args = parser.parse_args(argv)
    names = list(FEATURES["demand"])
    unknown = [d for d in args.drop if d not in names]
    if unknown:
        parser.error(f"unknown feature(s): {', '.join(unknown)}")
    if args.bag < 1:
        parser.error("--bag must be at least 1")
    if set(args.drop) == set(names):
        parser.error("--drop leaves no feature to fit on")
    settings = replace(Settings(), demand_bag=args.bag)
    keep = [i for i, n in enumerate(names) if n not in args.drop]
    demand = [d for d in open_datasets() if d.target == "demand"]
    whole = next(d for d in demand if "74" in d.name)
    started = time.monotonic()
    rng = np.random.default_rng(settings.seed)
    parts = []
    for ds in demand:
        every = settings.every_hours
        issues = [
            t + int(ds.offset * every * 3_600_000) for t in issue_times(FIT_START, FIT_END, every)
        ]
        parts.append(_rows(ds, issues, settings.step_fraction, rng))
    x, y, _, stamp = (np.concatenate([p[k] for p in parts]) for k in range(4))
    xs, ys, level, sstamp = _rows(
        whole, issue_times(MONTHS[0], FIT_END, 6.0), 1.0, np.random.default_rng(1)
    )
    print(
        f"rows: {y.size:,} to fit, {ys.size:,} to score ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    prediction = np.full(ys.size, np.nan)
    for first, end in itertools.pairwise(MONTHS):
        fit = (stamp < first - GAP_MS) | (stamp >= end)
        score = (sstamp >= first) & (sstamp < end)
        p50 = fit_quantile(x[fit][:, keep], y[fit], settings, 0.5, demand=True)
        prediction[score] = p50.predict(xs[score][:, keep])
        print(f"  fitted for {_month(first, '%B')}", file=sys.stderr)
    if not args.raw:
        prediction = _smoothed(prediction, sstamp)
    error = (prediction - ys) * level
    baseline = (xs[:, names.index("lag_week")] - ys) * level

    def skill(mask: np.ndarray) -> float:
        return float(1 - np.sqrt(np.mean(error[mask] ** 2)) / np.sqrt(np.mean(baseline[mask] ** 2)))

    label = f"bag {args.bag}" + (f", without {', '.join(args.drop)}" if args.drop else "")
    label += ", raw" if args.raw else ", smoothed"
    per_month = [
        f"{_month(a, '%b')} {100 * skill((sstamp >= a) & (sstamp < b)):.1f}"
        for a, b in itertools.pairwise(MONTHS)
    ]
    print(
        f"demand P50 ({label}): pooled skill vs last week {100 * skill(np.isfinite(error)):.2f} %"
    )
    print("  " + ", ".join(per_month))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
