"""``coopwatt-hub weather import``, ``forecast``, ``backtest`` and ``train``: the forecast's
command line, a thin layer over :mod:`hub.forecast.model`, :mod:`hub.forecast.backtest` and
``models.train``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hub.forecast.backtest import backtest, default_issues, retrain_shortfall
from hub.forecast.features import DAY_MS, History
from hub.forecast.model import (
    DEFAULT_HOURS,
    ForecastModel,
    ModelError,
    load_model,
    make_forecast,
    tuned_forecast,
)
from hub.forecast.service import (
    READ_DAYS,
    HistoryError,
    import_weather,
    load_history_csv,
    read_community_history,
    read_weather,
)
from hub.forecast.site import Site, is_known_timezone
from hub.forecast.tuning import TUNE_DAYS
from hub.forecast.weather import WeatherError, WeatherSeries, load_weather_file
from hub.storage.store import Store, StoreError
from protocol.cli import CliError
from protocol.clock import SystemClock
from protocol.timeparse import parse_iso_ms


def _parse_start(text: str) -> int:
    try:
        return parse_iso_ms(text, naive="utc")
    except ValueError:
        raise CliError(f"--start {text!r} is not ISO 8601 (2026-07-01T00:00Z)") from None


def _site(
    lat: float,
    lon: float,
    pv_capacity_w: float | None,
    wind_capacity_w: float | None,
    timezone: str | None = None,
    holidays: tuple[datetime, ...] = (),
    half_holidays: tuple[datetime, ...] = (),
) -> Site:
    try:
        return Site(
            lat,
            lon,
            pv_capacity_w,
            wind_capacity_w,
            timezone,
            frozenset(d.date() for d in holidays),
            frozenset(d.date() for d in half_holidays),
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _open_to_write(db_path: Path) -> Store:
    try:
        return Store.open_to_write(db_path)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _model(path: Path | None) -> ForecastModel:
    try:
        return load_model(path)
    except ModelError as exc:
        raise CliError(str(exc)) from None


def _history(path: Path, zone: str | None) -> History:
    if zone is not None and not is_known_timezone(zone):
        raise CliError(f"--history-timezone: unknown timezone {zone!r} (use e.g. Europe/Berlin)")
    try:
        return load_history_csv(path, zone)
    except HistoryError as exc:
        raise CliError(str(exc)) from None


def _weather(path: Path | None) -> WeatherSeries:
    if path is None:
        return WeatherSeries.empty()
    try:
        return load_weather_file(path)
    except WeatherError as exc:
        raise CliError(str(exc)) from None


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, separators=(",", ":")))


_lat = click.option("--lat", type=float, required=True, help="Latitude of the cooperative (°N).")
_lon = click.option("--lon", type=float, required=True, help="Longitude of the cooperative (°E).")
_pv_cap = click.option(
    "--pv-capacity-w",
    type=float,
    default=None,
    help="Installed PV, W (AC). Estimated from history when left out.",
)
_wind_cap = click.option(
    "--wind-capacity-w",
    type=float,
    default=None,
    help="Installed wind, W. Estimated from history when left out (configure it if you can).",
)
_timezone = click.option(
    "--timezone",
    default=None,
    help="The cooperative's IANA timezone (Europe/Berlin): demand follows the local clock. "
    "Default: mean solar time from --lon.",
)
_holiday = click.option(
    "--holiday",
    "holidays",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    multiple=True,
    help="A local date kept like a Sunday (a public holiday); repeat for more.",
)
_half_holiday = click.option(
    "--half-holiday",
    "half_holidays",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    multiple=True,
    help="A local date kept like a Saturday (24 and 31 December in Germany); repeat for more.",
)


def _calendar(f: Any) -> Any:
    """--timezone, --holiday and --half-holiday."""
    return _timezone(_holiday(_half_holiday(f)))


_model_opt = click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model to use; default: the model shipped with coopwatt.",
)
_history_zone = click.option(
    "--history-timezone",
    default=None,
    help="IANA timezone of history times written without an offset (a meter's local clock; "
    "its repeated autumn hour is read in file order). Default: such times are UTC.",
)
_tuning_opt = click.option(
    "--tuning/--no-tuning",
    default=True,
    show_default=True,
    help="Tune on the history's last 28 days first (the hub always does): choose demand's "
    "forecaster per horizon and calibrate the P10-P90 bands. --no-tuning shows the model alone.",
)
_weather_opt = click.option(
    "--weather",
    "weather_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Open-Meteo JSON or CSV (time, shortwave_radiation, temperature_2m, wind_speed_10m, "
    "cloud_cover). Without it PV and wind fall back to history.",
)


@click.group("weather")
def weather_group() -> None:
    """Open weather data for the forecast (no network: you bring the file)."""


@weather_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database to store the weather in.",
)
def weather_import(file: Path, db_path: Path) -> None:
    """Import an Open-Meteo forecast (JSON response or CSV) into the hub database.

    FILE holds Open-Meteo's hourly variables by their API names: time, shortwave_radiation
    (W/m², mean of the preceding hour), temperature_2m (°C), wind_speed_10m (km/h unless the
    file says m/s, mph or kn) and cloud_cover (%); any may be missing. A newer import replaces
    the hours it covers. A running hub notices the import and forecasts again.

    \b
    Example (fetched elsewhere, then copied to the hub):
      https://api.open-meteo.com/v1/forecast?latitude=52.52&longitude=13.41&hourly=
        shortwave_radiation,temperature_2m,wind_speed_10m,cloud_cover&forecast_days=3
    """
    weather = _weather(file)
    with _open_to_write(db_path) as store:
        n = import_weather(store, weather, SystemClock().now_ms())
    first, last = (
        datetime.fromtimestamp(int(t) / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
        for t in (weather.ts_ms[0], weather.ts_ms[-1])
    )
    click.echo(f"imported {n} hours of weather, {first} to {last}", err=True)


@click.command("forecast")
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV ts,demand_w,pv_w,wind_w (15-minute means, W; times UTC unless they carry an "
    "offset or --history-timezone is given). Or use --db.",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Read history (what homes share for the forecast) and imported weather from this hub "
    "database instead; brings the database's forecast series up to date.",
)
@_weather_opt
@_lat
@_lon
@click.option(
    "--start",
    default=None,
    help="First step, ISO 8601 (UTC unless an offset is given); rounded down to 15 minutes. "
    "Only history before it is used. Default: now.",
)
@click.option("--hours", type=click.IntRange(1, 168), default=DEFAULT_HOURS, show_default=True)
@_pv_cap
@_wind_cap
@_calendar
@_model_opt
@_tuning_opt
@_history_zone
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def forecast_cmd(
    history_path: Path | None,
    db_path: Path | None,
    weather_path: Path | None,
    lat: float,
    lon: float,
    start: str | None,
    hours: int,
    pv_capacity_w: float | None,
    wind_capacity_w: float | None,
    timezone: str | None,
    holidays: tuple[datetime, ...],
    half_holidays: tuple[datetime, ...],
    model_path: Path | None,
    tuning: bool,
    history_timezone: str | None,
    as_json: bool,
) -> None:
    """Forecast community demand, PV and wind in 15-minute steps with P10/P50/P90.

    Prints {"start", "step_s": 900, "demand_w", "pv_w", "wind_w"} (P50, W) plus
    "demand_w_p10", "demand_w_p90" and the same for pv and wind, "methods" (model, fallback,
    mixed, absent or selected per target), "notes" (why), "basis" (demand's forecaster per
    horizon band), "tuning" (every candidate's MAE on the last 28 days) and "model".

    Give --history at least 5 weeks before --start, and --weather covering those weeks too,
    for the tuning to score the last 28 days; with less it scores what there is (a week of
    history before each scored issue), and with under 9 days nothing is tuned.
    """
    del as_json  # JSON is the only output; the flag keeps scripts explicit
    site = _site(lat, lon, pv_capacity_w, wind_capacity_w, timezone, holidays, half_holidays)
    now_ms = SystemClock().now_ms()
    issue_ms = _parse_start(start) if start else now_ms
    if (history_path is None) == (db_path is None):
        raise CliError("give either --history FILE or --db DATABASE")
    weather = _weather(weather_path)
    if history_path is not None:
        history = _history(history_path, history_timezone)
    else:
        assert db_path is not None
        with _open_to_write(db_path) as store:
            history = read_community_history(
                store, issue_ms - READ_DAYS * DAY_MS, issue_ms, now_ms=now_ms
            )
            if weather_path is None:
                weather = read_weather(
                    store, issue_ms - (TUNE_DAYS + 1) * DAY_MS, issue_ms + (hours + 2) * 3_600_000
                )
    model = _model(model_path)
    if tuning:
        result = tuned_forecast(model, history, weather, site, issue_ms, hours)
    else:
        result = make_forecast(model, history, weather, site, issue_ms, hours)
    _echo_json(result.to_json_obj())


@click.command("backtest")
@click.option(
    "--history",
    "history_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV ts,demand_w,pv_w,wind_w (15-minute means, W; times as for forecast --history).",
)
@_weather_opt
@_lat
@_lon
@click.option(
    "--every-hours",
    type=click.IntRange(1, 168),
    default=6,
    show_default=True,
    help="Hours between issue times.",
)
@click.option(
    "--from",
    "from_",
    default=None,
    help="First issue time, ISO 8601 (default: 8 days into the history).",
)
@click.option(
    "--to", default=None, help="Last issue time, ISO 8601 (default: the end of the history)."
)
@_pv_cap
@_wind_cap
@_calendar
@_model_opt
@_tuning_opt
@_history_zone
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def backtest_cmd(
    history_path: Path,
    weather_path: Path | None,
    lat: float,
    lon: float,
    every_hours: int,
    from_: str | None,
    to: str | None,
    pv_capacity_w: float | None,
    wind_capacity_w: float | None,
    timezone: str | None,
    holidays: tuple[datetime, ...],
    half_holidays: tuple[datetime, ...],
    model_path: Path | None,
    tuning: bool,
    history_timezone: str | None,
    as_json: bool,
) -> None:
    """Replay 48-hour forecasts over the history and score them.

    Per target and horizon band (0-6h, 6-24h, 24-48h, all): MAE and RMSE (W) of the P50, of
    24-hour persistence and of same-time-last-week; skill against each (1 − model/baseline, on
    MAE and on RMSE); P10–P90 coverage (PV also over daylight, wind over steps it turned);
    and for demand every candidate forecaster's MAE and skill, so you can see why the hub
    chooses the one it does. Each forecast sees only history before its issue time and is
    tuned on the 28 days before it, as the hub does; the weather file serves as the forecast
    for every issue.
    """
    del as_json
    site = _site(lat, lon, pv_capacity_w, wind_capacity_w, timezone, holidays, half_holidays)
    history = _history(history_path, history_timezone)
    weather = _weather(weather_path)
    issues = default_issues(history, every_hours)
    if from_:
        first = _parse_start(from_)
        issues = [t for t in issues if t >= first]
    if to:
        last = _parse_start(to)
        issues = [t for t in issues if t <= last]
    if not issues:
        raise CliError("no issue times: the history must cover more than 8 days")
    model = _model(model_path)
    # Long work shows progress, on stderr so that stdout stays clean JSON.
    with click.progressbar(length=len(issues), label="backtest", file=sys.stderr) as bar:
        report = backtest(model, history, weather, site, issues, progress=bar.update, tuned=tuning)
    _echo_json(report)


@click.command("train")
@click.option(
    "--from-db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The hub database whose history and imported weather to train on.",
)
@_lat
@_lon
@_pv_cap
@_wind_cap
@_calendar
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The current model, replaced only if the new one wins the backtest. "
    "Default: forecast.onnx beside the database (created from the shipped model's score).",
)
@click.option(
    "--holdout-days",
    type=click.IntRange(3, 120),
    default=14,
    show_default=True,
    help="The most recent days, kept out of training and used for the backtest.",
)
def train_cmd(
    db_path: Path,
    lat: float,
    lon: float,
    pv_capacity_w: float | None,
    wind_capacity_w: float | None,
    timezone: str | None,
    holidays: tuple[datetime, ...],
    half_holidays: tuple[datetime, ...],
    model_path: Path | None,
    holdout_days: int,
) -> None:
    """Retrain the forecast on this cooperative's own history and imported weather.

    Trains on everything but the last --holdout-days, then backtests the new model and the
    current one on those days. The new model replaces the current one only if it wins (a
    higher mean RMSE skill against 24-hour persistence); otherwise it is discarded. History
    too short to retrain on is refused before any training. Needs the training extra:
    pip install 'coopwatt[train]'.
    """
    site = _site(lat, lon, pv_capacity_w, wind_capacity_w, timezone, holidays, half_holidays)
    target = model_path or db_path.parent / "forecast.onnx"
    with _open_to_write(db_path) as store:
        now = SystemClock().now_ms()
        history = read_community_history(store, 0, now - now % 900_000, now_ms=now)
        weather = read_weather(store, 0, 2**62)
    shortfall = retrain_shortfall(history, holdout_days)
    if shortfall is not None:
        raise CliError(shortfall)
    try:
        from models.train import retrain_from_history  # noqa: PLC0415  # the train extra
    except ImportError as exc:
        raise CliError(
            f"training needs the train extra (pip install 'coopwatt[train]'): {exc}"
        ) from None
    try:
        outcome = retrain_from_history(history, weather, site, target, holdout_days)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    click.echo(outcome.message, err=True)
    _echo_json(outcome.as_json())


COMMANDS: tuple[click.Command, ...] = (weather_group, forecast_cmd, backtest_cmd, train_cmd)
"""Registered on ``coopwatt-hub`` by :mod:`hub.cli.main`."""
