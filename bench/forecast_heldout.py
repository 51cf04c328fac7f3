"""The forecast on neighbourhoods and systems the model never saw, through the documented CLI.

For each open data set of ``models/data/eval/datasets.json``, forecasts are issued at local
midnight on ``--days`` days spread over the file (each with at least five weeks of history
before it), exactly as a cooperative would: ``coopwatt-hub forecast --history FILE
[--weather FILE] --lat --lon --timezone --start T --json`` (run in-process through click, the
same code path). Each forecast is scored here, from the file's own values, against:

- demand: same time last week, the mean and the median of the same slot on the last four same
  weekdays, and 24-hour persistence (the same time on the latest day before the issue);
- PV and wind: 24-hour persistence and last week.

Skill is ``1 - error / baseline error`` on MAE and on RMSE. P10-P90 coverage is given over all
steps and where the band matters: PV's daylight steps (clear-sky irradiance above zero), wind's
steps with output above zero (past the turbine's cut-in). ``--no-tuning`` scores the model alone.

    .venv/bin/python bench/forecast_heldout.py                    # development sets
    .venv/bin/python bench/forecast_heldout.py --held-out         # the held-out set only
    .venv/bin/python bench/forecast_heldout.py --set pt-321-clients --days 8 --no-tuning
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from click.testing import CliRunner

from hub.cli.main import main as hub_cli
from hub.forecast.solar import mean_clear_sky_ghi

EVAL = Path(__file__).resolve().parents[1] / "models" / "data" / "eval"
STEP_MS = 900_000
DAY_MS = 86_400_000
MIN_HISTORY_DAYS = 35


def read_values(path: Path) -> tuple[dict[str, dict[int, float]], list[str]]:
    """``column -> {ts: value}`` of a history file, read here with csv, not the hub's parser."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    out: dict[str, dict[int, float]] = {name: {} for name in header[1:]}
    for row in rows[1:]:
        ts = int(datetime.fromisoformat(row[0].replace("Z", "+00:00")).timestamp() * 1000)
        for name, cell in zip(header[1:], row[1:], strict=False):
            if cell.strip():
                out[name][ts] = float(cell)
    return out, header[1:]


def plain_path(path: Path, folder: Path) -> Path:
    """The CLI reads plain files: a gzipped one is unpacked once into ``folder``."""
    if path.suffix != ".gz":
        return path
    target = folder / path.name.removesuffix(".gz")
    if not target.exists():
        target.write_bytes(gzip.decompress(path.read_bytes()))
    return target


@dataclass
class Scores:
    """Per target: the step errors of the forecast and of each baseline, and band hits."""

    abs_err: dict[str, list[float]] = field(default_factory=dict)
    sq_err: dict[str, list[float]] = field(default_factory=dict)
    inside: list[bool] = field(default_factory=list)
    matters: list[bool] = field(default_factory=list)
    methods: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, err: float) -> None:
        self.abs_err.setdefault(name, []).append(abs(err))
        self.sq_err.setdefault(name, []).append(err * err)

    def summary(self, baselines: list[str]) -> dict[str, Any]:
        mae = {k: float(np.mean(v)) for k, v in self.abs_err.items()}
        rmse = {k: float(np.sqrt(np.mean(v))) for k, v in self.sq_err.items()}
        out: dict[str, Any] = {
            "steps": len(self.inside),
            "mae_w": round(mae["forecast"], 1),
            "methods": self.methods,
        }
        for b in baselines:
            out[f"skill_mae_vs_{b}"] = round(1 - mae["forecast"] / mae[b], 4)
            out[f"skill_rmse_vs_{b}"] = round(1 - rmse["forecast"] / rmse[b], 4)
        inside, matters = np.asarray(self.inside), np.asarray(self.matters)
        out["coverage"] = round(float(inside.mean()), 4)
        if matters.any() and not matters.all():
            out["coverage_where_it_matters"] = round(float(inside[matters].mean()), 4)
            out["steps_where_it_matters"] = int(matters.sum())
        return out


def issue_days(first_ms: int, last_ms: int, days: int, zone: ZoneInfo) -> list[int]:
    """``days`` local midnights spread evenly from five weeks in to two days before the end."""
    start = first_ms + MIN_HISTORY_DAYS * DAY_MS
    end = last_ms - 2 * DAY_MS
    out = []
    for i in range(days):
        t = start + (end - start) * i // max(days - 1, 1)
        local = datetime.fromtimestamp(t / 1000, zone).replace(hour=0, minute=0, second=0)
        out.append(int(local.timestamp() * 1000))
    return sorted(set(out))


def run_set(
    spec: dict[str, Any], days: int, tuning: bool, work: Path, model: Path | None = None
) -> dict[str, Any]:
    folder = EVAL / spec["name"]
    work = work / spec["name"]
    work.mkdir(parents=True, exist_ok=True)
    history_path = folder / "history.csv.gz"
    values, columns = read_values(history_path)
    history = plain_path(history_path, work)
    weather = next((p for p in sorted(folder.glob("weather.csv*"))), None)
    zone = ZoneInfo(spec.get("timezone") or "UTC")
    stamps = sorted(set().union(*(v.keys() for v in values.values())))
    issues = issue_days(stamps[0], stamps[-1], days, zone)
    args = ["--history", str(history), "--lat", str(spec["lat"]), "--lon", str(spec["lon"])]
    if weather is not None:
        args += ["--weather", str(plain_path(weather, work))]
    if spec.get("timezone"):
        args += ["--timezone", spec["timezone"]]
    for key in ("pv_capacity_w", "wind_capacity_w"):
        option = "--" + key.replace("_", "-")
        if spec.get(key):
            args += [option, str(spec[key])]
    if not tuning:
        args.append("--no-tuning")
    if model is not None:
        args += ["--model", str(model)]
    targets = [c.removesuffix("_w") for c in columns]
    scores = {t: Scores() for t in targets}
    runner = CliRunner()
    for issue in issues:
        start = datetime.fromtimestamp(issue / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = runner.invoke(hub_cli, ["forecast", *args, "--start", start, "--json"])
        if result.exit_code != 0:
            raise SystemExit(f"{spec['name']} {start}: {result.output}")
        forecast = json.loads(result.output)
        first = issue - issue % STEP_MS
        for target in targets:
            series = values[f"{target}_w"]
            s = scores[target]
            method = forecast["methods"][target]
            s.methods[method] = s.methods.get(method, 0) + 1
            p10, p50, p90 = (forecast[f"{target}_w{q}"] for q in ("_p10", "", "_p90"))
            steps = len(p50)
            t = first + np.arange(steps, dtype=np.int64) * STEP_MS
            daylight = mean_clear_sky_ghi(t, STEP_MS, spec["lat"], spec["lon"], samples=3) > 0
            for k in range(steps):
                ts = int(t[k])
                actual = series.get(ts)
                back = ((ts - first) // DAY_MS + 1) * DAY_MS
                baselines = {
                    "last_week": series.get(ts - 7 * DAY_MS),
                    "persistence_24h": series.get(ts - back),
                }
                weeks = [series.get(ts - j * 7 * DAY_MS) for j in range(1, 5)]
                known = [w for w in weeks if w is not None]
                baselines["mean_4w"] = float(np.mean(known)) if known else None
                baselines["median_4w"] = float(np.median(known)) if known else None
                if actual is None or any(v is None for v in baselines.values()):
                    continue
                s.add("forecast", p50[k] - actual)
                for name, value in baselines.items():
                    assert value is not None
                    s.add(name, value - actual)
                s.inside.append(p10[k] <= actual <= p90[k])
                matters = {"pv": bool(daylight[k]), "wind": actual > 0}.get(target, True)
                s.matters.append(matters)
    out: dict[str, Any] = {"issues": len(issues), "tuning": tuning}
    for target in targets:
        out[target] = scores[target].summary(
            ["last_week", "mean_4w", "median_4w", "persistence_24h"]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=24, help="issue days per data set")
    parser.add_argument("--set", action="append", default=[], help="only this set (repeatable)")
    parser.add_argument("--held-out", action="store_true", help="the held-out set(s) only")
    parser.add_argument("--no-tuning", action="store_true", help="score the model alone")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    args = parser.parse_args()
    specs = json.loads((EVAL / "datasets.json").read_text(encoding="utf-8"))
    chosen = [
        s
        for s in specs
        if (s["name"] in args.set if args.set else bool(s.get("held_out")) == args.held_out)
    ]
    results: dict[str, Any] = {}
    work = Path("/tmp") / "coopwatt-eval"
    work.mkdir(exist_ok=True)
    for spec in chosen:
        started = time.monotonic()
        results[spec["name"]] = run_set(spec, args.days, not args.no_tuning, work, args.model)
        print(f"{spec['name']} ({time.monotonic() - started:.0f} s):", file=sys.stderr)
        for target, figures in results[spec["name"]].items():
            if isinstance(figures, dict):
                print(f"  {target}: {json.dumps(figures)}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
