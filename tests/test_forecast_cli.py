"""The forecast's command line: the evaluation interface (forecast, backtest --json), weather
import, retraining, and clean one-line errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hub.cli.main import main
from hub.forecast.features import STEP_MS, History
from hub.forecast.series import weather_rows
from hub.storage.store import Store
from protocol.clock import SystemClock
from tests.test_forecast_features import LAT, LON, T0, sim_community

FIXTURES = Path(__file__).parent / "fixtures" / "forecast"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_history(
    path: Path, history: History, columns: tuple[str, ...] = ("demand_w", "pv_w", "wind_w")
) -> Path:
    lines = ["ts," + ",".join(columns)]
    for i in range(history.demand_w.size):
        cells = []
        for name in columns:
            v = history.series(name.removesuffix("_w"))[i]
            cells.append("" if np.isnan(v) else f"{v:.1f}")
        lines.append(_iso(history.start_ms + i * STEP_MS) + "," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_weather(path: Path) -> Path:
    _, weather = sim_community()
    lines = ["time,shortwave_radiation (W/m²),temperature_2m (°C),wind_speed_10m (m/s)"]
    for i in range(len(weather)):
        lines.append(
            f"{_iso(int(weather.ts_ms[i]))},{weather.shortwave_radiation_w_m2[i]:.1f},"
            f"{weather.temperature_c[i]:.1f},{weather.wind_speed_m_s[i]:.2f}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("forecast-cli")
    history, _ = sim_community()
    return write_history(folder / "h.csv", history), write_weather(folder / "w.csv")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_forecast_json_is_the_evaluation_interface(files: tuple[Path, Path]) -> None:
    h, w = files
    code, out = _run(
        "forecast", "--history", str(h), "--weather", str(w), "--lat", str(LAT), "--lon", str(LON),
        "--start", "2026-07-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0, out
    obj = json.loads(out)
    assert obj["start"] == "2026-07-01T00:00:00Z"
    assert obj["step_s"] == 900
    for name in ("demand_w", "pv_w", "wind_w"):
        for suffix in ("", "_p10", "_p90"):
            assert len(obj[name + suffix]) == 192
        assert all(
            a <= b <= c
            for a, b, c in zip(obj[f"{name}_p10"], obj[name], obj[f"{name}_p90"], strict=True)
        )
    # Demand: the model, or what beat it on the simulator's own last days (the tuning says).
    assert obj["methods"]["demand"] in ("model", "selected")
    assert obj["basis"]["demand"] == {b: t["chosen"] for b, t in obj["tuning"]["demand"].items()}
    assert {obj["methods"]["pv"], obj["methods"]["wind"]} == {"model"}
    code, out = _run(
        "forecast", "--history", str(h), "--weather", str(w), "--lat", str(LAT), "--lon", str(LON),
        "--start", "2026-07-01T00:00:00Z", "--no-tuning", "--json",
    )  # fmt: skip
    assert json.loads(out)["methods"] == {"demand": "model", "pv": "model", "wind": "model"}


def test_forecast_uses_only_history_before_start(files: tuple[Path, Path], tmp_path: Path) -> None:
    h, w = files
    history, _ = sim_community()
    cut = (T0 - history.start_ms) // STEP_MS
    changed = History(
        history.start_ms,
        np.concatenate([history.demand_w[:cut], history.demand_w[cut:] * 3]),
        np.concatenate([history.pv_w[:cut], np.zeros(history.pv_w.size - cut)]),
        history.wind_w,
    )
    h2 = write_history(tmp_path / "h2.csv", changed)
    args = [
        "--weather",
        str(w),
        "--lat",
        str(LAT),
        "--lon",
        str(LON),
        "--start",
        _iso(T0),
        "--json",
    ]
    a = _run("forecast", "--history", str(h), *args)
    b = _run("forecast", "--history", str(h2), *args)
    assert a == b


def test_forecast_hours_and_missing_columns(tmp_path: Path) -> None:
    history, _ = sim_community()
    h = write_history(tmp_path / "demand-only.csv", history, ("demand_w",))
    code, out = _run(
        "forecast", "--history", str(h), "--lat", str(LAT), "--lon", str(LON),
        "--start", _iso(T0 + 3 * 60_000), "--hours", "6", "--json",
    )  # fmt: skip
    assert code == 0, out
    obj = json.loads(out)
    assert obj["start"] == _iso(T0)
    assert len(obj["pv_w"]) == 24 and not any(obj["pv_w"])
    assert obj["methods"] == {"demand": "model", "pv": "absent", "wind": "absent"}


def test_backtest_json_reports_skill_and_coverage(files: tuple[Path, Path]) -> None:
    h, w = files
    code, out = _run(
        "backtest", "--history", str(h), "--weather", str(w), "--lat", str(LAT), "--lon", str(LON),
        "--every-hours", "24", "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out[out.index("{") :])
    assert report["issues"] >= 2
    demand = report["targets"]["demand"]["bands"]
    assert set(demand) == {"0-6h", "6-24h", "24-48h", "all"}
    band = demand["all"]
    for key in (
        "mae_w", "rmse_w", "skill_mae_vs_persistence_24h", "skill_rmse_vs_persistence_24h",
        "skill_mae_vs_last_week", "skill_rmse_vs_last_week", "coverage_p10_p90",
    ):  # fmt: skip
        assert key in band
    assert 0 <= band["coverage_p10_p90"] <= 1
    assert band["persistence_24h"]["mae_w"] > 0
    # Every demand candidate is scored beside the tuned forecast, last week against itself.
    candidates = band["candidates"]
    assert {"model", "last_week", "mean_4w", "median_4w", "model+mean_4w"} <= set(candidates)
    assert candidates["last_week"]["skill_mae_vs_last_week"] == 0.0
    assert candidates["last_week"]["mae_w"] == band["last_week"]["mae_w"]
    pv = report["targets"]["pv"]["bands"]["all"]
    assert 0 < pv["n_daylight"] < pv["n"]
    assert 0 <= pv["coverage_p10_p90_daylight"] <= 1


def test_forecast_says_what_tuning_chose_and_no_tuning_leaves_it_out(
    files: tuple[Path, Path],
) -> None:
    h, w = files
    args = ["--history", str(h), "--weather", str(w), "--lat", str(LAT), "--lon", str(LON)]
    code, out = _run("forecast", *args, "--start", _iso(T0), "--json")
    assert code == 0, out
    tuned = json.loads(out)
    # Ten days of history before T0: replays every 6 hours from a week in, three days' worth.
    assert tuned["tuning"]["issues"] == 12
    assert set(tuned["tuning"]["demand"]) == {"0-6h", "6-24h", "24-48h"}
    chosen = {band: t["chosen"] for band, t in tuned["tuning"]["demand"].items()}
    assert tuned["basis"]["demand"] == chosen
    for t in tuned["tuning"]["demand"].values():
        assert t["mae_w"][t["chosen"]] == min(t["mae_w"].values())
    code, out = _run("forecast", *args, "--start", _iso(T0), "--no-tuning", "--json")
    assert code == 0, out
    plain = json.loads(out)
    assert "tuning" not in plain and "basis" not in plain
    assert plain["pv_w"] == tuned["pv_w"]  # tuning moves PV's band, not its P50
    assert plain["pv_w_p90"] != tuned["pv_w_p90"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["forecast", "--history", "nope.csv", "--lat", "1", "--lon", "2"], "cannot read"),
        (["forecast", "--lat", "1", "--lon", "2"], "either --history"),
        (["forecast", "--history", "{h}", "--lat", "95", "--lon", "2"], "latitude"),
        (
            ["forecast", "--history", "{h}", "--lat", "1", "--lon", "2", "--start", "soon"],
            "ISO 8601",
        ),
        (
            ["forecast", "--history", "{h}", "--weather", "{bad}", "--lat", "1", "--lon", "2"],
            "line 2",
        ),
        (
            ["forecast", "--history", "{h}", "--lat", "1", "--lon", "2", "--model", "{bad}"],
            "cannot load",
        ),
        (["backtest", "--history", "{short}", "--lat", "1", "--lon", "2"], "more than 8 days"),
        (
            ["forecast", "--history", "{h}", "--lat", "1", "--lon", "2", "--history-timezone", "X"],
            "unknown timezone 'X'",
        ),
    ],
)
def test_mistakes_are_one_line_errors(
    args: list[str], needle: str, files: tuple[Path, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,wind_speed_10m\n2026-07-01T00:00,fast\n", encoding="utf-8")
    short = tmp_path / "short.csv"
    short.write_text("ts,demand_w\n2026-07-01T00:00:00Z,5\n", encoding="utf-8")
    args = [a.format(h=files[0], bad=bad, short=short) for a in args]
    code, out = _run(*args)
    assert code == 2, out
    assert "Traceback" not in out
    assert needle in out


def test_history_csv_mistakes(tmp_path: Path) -> None:
    for text, needle in (
        ("when,demand_w\n", "first column"),
        ("ts,load_w\n", "unknown column"),
        ("ts,demand_w\n2026-07-01T00:07:00Z,1\n", "15-minute boundary"),
        ("ts,demand_w\n2026-07-01T00:00:00Z,x\n", "not a number"),
        ("ts,demand_w\n2026-07-01T00:00:00Z,1\n2026-07-01T00:00:00Z,2\n", "twice"),
    ):
        path = tmp_path / "h.csv"
        path.write_text(text, encoding="utf-8")
        code, out = _run("forecast", "--history", str(path), "--lat", "1", "--lon", "2")
        assert code == 2 and needle in out, out


def test_weather_import_into_the_hub_database(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    Store.open(db, f"w-{uuid.uuid4().hex[:8]}").close()
    for name in ("open-meteo.json", "open-meteo.csv"):
        code, out = _run("weather", "import", str(FIXTURES / name), "--db", str(db))
        assert code == 0, out
        assert "imported 72 hours" in out
    with Store.open_existing(db) as store:
        assert len(weather_rows(store, 0, 2**62)) == 72
    code, out = _run("weather", "import", str(tmp_path / "none.json"), "--db", str(db))
    assert code == 2 and "cannot read" in out


def test_forecast_from_the_database(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    Store.open(db, f"d-{uuid.uuid4().hex[:8]}").close()
    code, out = _run("forecast", "--db", str(db), "--lat", "52", "--lon", "5", "--json")
    assert code == 0, out
    obj = json.loads(out)
    assert obj["methods"]["demand"] == "fallback"  # an empty database: no history yet
    assert obj["notes"]["demand"].startswith("under a day")


def test_weather_import_writes_through_a_writing_opener(tmp_path: Path) -> None:
    """A database one schema version behind is brought up to date, as the hub would, rather
    than refused as the read-only opener refuses it; a file that is not a hub's is refused."""
    import sqlite3

    from sqlite_utils import Database

    from hub.storage.migrations import LATEST_VERSION, MIGRATIONS, migrate

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    migrate(Database(conn), 0, MIGRATIONS[:-1])
    conn.execute("INSERT INTO meta (key, value) VALUES ('coop', 'old-coop')")
    conn.commit()
    conn.close()
    code, out = _run("weather", "import", str(FIXTURES / "open-meteo.csv"), "--db", str(db))
    assert code == 0, out
    with Store.open_existing(db) as store:
        assert store.schema_version() == LATEST_VERSION
        assert len(weather_rows(store, 0, 2**62)) == 72
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    code, out = _run("weather", "import", str(FIXTURES / "open-meteo.csv"), "--db", str(other))
    assert code == 2 and "not a coopwatt hub database" in out, out


def test_train_without_enough_history_says_so_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days of shared history: refused up front (exit 2), without training a thing."""
    from hub.consent.book import ConsentBook
    from protocol.consent import PurposeGrant, Resolution, next_version, nothing_shared
    from protocol.payloads import Reading, ReadingBatch
    from protocol.quantities import Role

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the history is too short")

    monkeypatch.setattr("models.train.train", no_training, raising=False)
    monkeypatch.setattr("models.train.retrain_from_history", no_training, raising=False)
    db = tmp_path / "hub.db"
    now = SystemClock().now_ms()
    now -= now % STEP_MS
    with Store.open(db, f"t-{uuid.uuid4().hex[:8]}") as store:
        book = ConsentBook(store)
        terms = {"grid": {"forecast": PurposeGrant(Resolution.RAW, 30)}}
        book.record(next_version(nothing_shared("home-1"), terms, now), now)
        readings = [
            Reading("m", i + 1, now - (3 * 96 - i) * STEP_MS, Role.GRID, "g1", {"power_w": 500.0})
            for i in range(3 * 96)
        ]
        store.insert_batches([("home-1", ReadingBatch("home-1", now, readings))], now)
    code, out = _run("train", "--from-db", str(db), "--lat", "52", "--lon", "5")
    assert code == 2, out
    assert "holds 3.0 days of demand history; retraining needs at least 29" in out, out
    assert "Traceback" not in out
    code, out = _run(
        "train", "--from-db", str(db), "--lat", "52", "--lon", "5", "--holdout-days", "3"
    )
    assert code == 2 and "needs at least 18" in out, out


def test_a_local_time_history_forecasts_as_its_utc_twin(tmp_path: Path) -> None:
    """The simulator's history written as a Berlin meter writes it (wall clock, no offset,
    the autumn hour twice) and read with --history-timezone gives the very forecast of the
    same history written in UTC; read as UTC it is refused, naming the repeated line."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    start = int(datetime(2026, 10, 15, tzinfo=UTC).timestamp() * 1000)
    history, _ = sim_community(days=14, homes=4, start_ms=start)
    utc = write_history(tmp_path / "utc.csv", history, ("demand_w",))
    lines = utc.read_text(encoding="utf-8").splitlines()
    berlin = ZoneInfo("Europe/Berlin")
    wall = [lines[0]]
    for line in lines[1:]:
        ts, rest = line.split(",", 1)
        instant = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        wall.append(f"{instant.astimezone(berlin):%Y-%m-%dT%H:%M:%S},{rest}")
    local = tmp_path / "local.csv"
    local.write_text("\n".join(wall) + "\n", encoding="utf-8")
    assert sum(1 for w in wall if w.startswith("2026-10-25T02:15:00,")) == 2
    args = ["--lat", str(LAT), "--lon", str(LON), "--timezone", "Europe/Berlin"]
    args += ["--start", "2026-10-28T23:00:00Z", "--json"]
    code_utc, out_utc = _run("forecast", "--history", str(utc), *args)
    code_local, out_local = _run(
        "forecast", "--history", str(local), "--history-timezone", "Europe/Berlin", *args
    )
    assert code_utc == code_local == 0, out_local
    assert json.loads(out_local) == json.loads(out_utc)
    code, out = _run("forecast", "--history", str(local), *args)
    assert code == 2 and "appears twice" in out and "--history-timezone" in out
