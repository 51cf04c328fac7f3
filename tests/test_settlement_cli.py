"""coopwatt-hub settle/close/statement/community/report/publish-statements, and the scheme file."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hub.cli.main import main
from hub.config import ConfigError
from hub.settlement.engine import day_range, settle
from hub.settlement.scheme import Mechanism, Scheme, load_scheme, parse_scheme
from hub.settlement.statements import build_statement
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.codec import decode, decode_message, encode
from protocol.payloads import Statement, StatementLine
from protocol.topics import HomeTopic, home_topic
from sim.broker import RunningBroker
from tests.test_hub_ingest import Probe
from tests.test_settlement_ledger import COOP, NOW, SCHEME_FILE, insert, sim_readings

GOLDEN = Path(__file__).parent / "golden" / "statement__month.json"


@pytest.fixture(scope="module")
def settled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six simulated homes over 2 and 3 June 2026, June settled (not closed)."""
    path = tmp_path_factory.mktemp("settled") / "hub.db"
    sch = load_scheme(SCHEME_FILE)
    with Store.open(path, COOP, clock=ManualClock(NOW)) as store:
        insert(store, sim_readings(sch, date(2026, 6, 2), 2))
        settle(store, sch, day_range(date(2026, 6, 1), date(2026, 6, 30)), NOW)
    return path


@pytest.fixture
def db(settled_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "hub.db"
    shutil.copy(settled_db, copy)
    return copy


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"clock": ManualClock(NOW)})


def assert_clean_error(result: Result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0]


# -- the scheme file ---------------------------------------------------------------------------


def _scheme_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "timezone": "Europe/Amsterdam",
        "currency": "EUR",
        "import_tariff": {"price_per_kwh": "0.30"},
        "export_tariff": {"price_per_kwh": 0.08},
    }
    data.update(changes)
    return data


def test_scheme_time_of_use_and_defaults() -> None:
    sch = load_scheme(SCHEME_FILE)
    assert sch.mechanism is Mechanism.SDR and sch.min_group == 5 and sch.minor_unit == 2
    tue_1700 = 1_780_412_400_000  # 2026-06-02 15:00 UTC = 17:00 in Amsterdam
    assert sch.prices_at(tue_1700) == (
        load_scheme(SCHEME_FILE).import_tariff.windows[0].price_per_kwh,
        sch.export_tariff.price_per_kwh,
    )
    assert str(sch.prices_at(tue_1700)[0]) == "0.38"
    assert str(sch.prices_at(tue_1700 - 15 * 60_000)[0]) == "0.30"
    assert str(sch.prices_at(tue_1700 + 4 * 86_400_000)[0]) == "0.30"  # Saturday
    assert Scheme.from_json(sch.to_json()) == sch
    flat = parse_scheme(_scheme_data())
    assert flat.import_tariff.flat and str(flat.export_tariff.price_per_kwh) == "0.08"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not a known time zone"),
        ({"currency": "euro"}, "ISO 4217"),
        ({"mechanism": "auction"}, "mechanism must be one of"),
        ({"export_tariff": {"price_per_kwh": "0.40"}}, "more than import_tariff"),
        ({"import_tariff": {"price_per_kwh": "0.1234567"}}, "more than 6 decimals"),
        ({"import_tariff": {"price_per_kwh": "-1"}}, "from 0 to"),
        ({"import_tariff": {"price_per_kwh": True}}, "must be a price"),
        ({"import_tariff": {}}, "import_tariff.price_per_kwh is missing"),
        ({"tariff": 1}, "unknown key tariff"),
        (
            {
                "import_tariff": {
                    "price_per_kwh": "0.3",
                    "windows": [
                        {"days": ["mon"], "from": "17:10", "to": "18:00", "price_per_kwh": "0.4"}
                    ],
                }
            },
            "quarter hour",
        ),
        (
            {
                "import_tariff": {
                    "price_per_kwh": "0.3",
                    "windows": [
                        {"days": ["moon"], "from": "17:00", "to": "18:00", "price_per_kwh": "0.4"}
                    ],
                }
            },
            "is not one of",
        ),
        (
            {
                "import_tariff": {
                    "price_per_kwh": "0.3",
                    "windows": [
                        {"days": ["mon"], "from": "18:00", "to": "17:00", "price_per_kwh": "0.4"}
                    ],
                }
            },
            "before",
        ),
    ],
)
def test_scheme_mistakes_name_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scheme(_scheme_data(**changes))


# -- settle and close --------------------------------------------------------------------------


def test_settle_and_close_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    sch = load_scheme(SCHEME_FILE)
    with Store.open(path, COOP) as store:
        insert(store, sim_readings(sch, date(2026, 6, 2), 1, homes=5, step_min=15))
    result = run(
        "settle",
        "--db",
        str(path),
        "--scheme",
        str(SCHEME_FILE),
        "--from",
        "2026-06-01",
        "--to",
        "2026-06-30",
    )
    assert result.exit_code == 0, result.output
    assert "30 days: 30 settled" in result.stdout
    assert "provisional" in result.stdout  # no data after 3 June yet
    again = run(
        "settle",
        "--db",
        str(path),
        "--scheme",
        str(SCHEME_FILE),
        "--from",
        "2026-06-02",
        "--to",
        "2026-06-02",
    )
    assert "1 days: 1 unchanged" in again.stdout
    assert_clean_error(run("close", "--db", str(path), "--month", "2026-06"), "provisional")
    closed = run("close", "--db", str(path), "--month", "2026-06", "--allow-provisional")
    assert closed.exit_code == 0, closed.output
    assert "closed 2026-06" in closed.stdout
    assert_clean_error(run("close", "--db", str(path), "--month", "2026-06"), "already closed")
    assert_clean_error(run("close", "--db", str(path), "--month", "2026-09"), "not been settled")


def test_settle_errors_are_one_line(tmp_path: Path) -> None:
    assert_clean_error(
        run(
            "settle",
            "--db",
            str(tmp_path / "no.db"),
            "--scheme",
            str(SCHEME_FILE),
            "--from",
            "2026-06-01",
            "--to",
            "2026-06-02",
        ),
        "no such database file",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('timezone = "UTC"\ncurrency = "EUR"\n')
    path = tmp_path / "hub.db"
    Store.open(path, COOP).close()
    assert_clean_error(
        run(
            "settle",
            "--db",
            str(path),
            "--scheme",
            str(bad),
            "--from",
            "2026-06-01",
            "--to",
            "2026-06-02",
        ),
        "import_tariff is missing",
    )
    backwards = run(
        "settle",
        "--db",
        str(path),
        "--scheme",
        str(SCHEME_FILE),
        "--from",
        "2026-06-03",
        "--to",
        "2026-06-02",
    )
    assert backwards.exit_code == 2 and "before --from" in backwards.output


# -- statements --------------------------------------------------------------------------------


def test_statement_text(db: Path) -> None:
    result = run("statement", "home-02", "--db", str(db), "--month", "2026-06")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("coopwatt statement for home-02, 2026-06 (provisional")
    for words in (
        "energy from neighbours",
        "energy to the grid",
        "total",
        "on grid tariffs alone",
        "saved you",
    ):
        assert words in out


def test_statement_json_is_the_wire_payload_and_its_pricing(db: Path) -> None:
    result = run("statement", "home-02", "--db", str(db), "--month", "2026-06", "--format", "json")
    assert result.exit_code == 0, result.output
    statement = decode(Statement, result.stdout.encode())
    assert statement.pricing is not None
    (pricing,) = statement.pricing  # June was settled under one scheme
    assert (pricing.first, pricing.last, pricing.mechanism) == ("2026-06-02", "2026-06-30", "sdr")
    assert statement.home == "home-02" and statement.currency == "EUR"
    assert statement.total_minor == sum(line.amount_minor for line in statement.lines)
    assert statement.saving_minor >= 0
    with Store.open_existing(db) as store:
        assert build_statement(store, "home-02", "2026-06", NOW) == statement


def test_statement_csv(db: Path) -> None:
    result = run("statement", "home-02", "--db", str(db), "--month", "2026-06", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    items = [r["item"] for r in rows]
    assert items[:4] == ["import-neighbours", "import-grid", "export-neighbours", "export-grid"]
    assert items[-4:-1] == ["total", "grid-only", "saving"]
    assert items[-1].startswith("pricing sdr 2026-06-02..2026-06-30 scheme ")
    assert rows[-1]["amount_eur"] == ""
    lines = sum(int(r["amount_eur"].replace(".", "")) for r in rows[:-4])
    assert lines == int(rows[-4]["amount_eur"].replace(".", ""))


def test_statement_errors(db: Path) -> None:
    assert_clean_error(
        run("statement", "home-99", "--db", str(db), "--month", "2026-06"),
        "no settlement in 2026-06",
    )
    assert_clean_error(
        run("statement", "home-01", "--db", str(db), "--month", "2026-05"), "not been settled"
    )
    bad = run("statement", "home-01", "--db", str(db), "--month", "June")
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output


def test_golden_statement_round_trips() -> None:
    raw = GOLDEN.read_bytes()
    _, statement = decode_message(home_topic("test-coop", "home-1", HomeTopic.STATEMENT), raw)
    assert isinstance(statement, Statement)
    assert encode(statement) == raw
    assert statement.total_minor == sum(line.amount_minor for line in statement.lines)
    with pytest.raises(ValueError, match="sum of the lines"):
        Statement(**{**_fields(statement), "total_minor": statement.total_minor + 1})
    with pytest.raises(ValueError, match="YYYY-MM"):
        Statement(**{**_fields(statement), "period": "2026-13"})
    with pytest.raises(ValueError, match="appears twice"):
        Statement(
            **{
                **_fields(statement),
                "lines": [StatementLine("rounding", 0, 0)] * 2,
                "total_minor": 0,
            }
        )


def _fields(s: Statement) -> dict[str, Any]:
    return {name: getattr(s, name) for name in Statement.__dataclass_fields__}


# -- community report and charts ---------------------------------------------------------------


def test_community_report(db: Path) -> None:
    result = run("community", "--db", str(db), "--month", "2026-06", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["members"] == 6
    assert 0 < data["shared_kwh"] <= min(data["supply_kwh"], data["demand_kwh"])
    assert 0 < data["self_sufficiency"] <= 1 and 0 < data["self_consumption"] <= 1
    assert data["peak_to_average"] >= 1
    assert 1 / 6 <= data["fairness_index"] <= 1
    assert all(s["saving_minor"] >= 0 for s in data["savings"])
    text = run("community", "--db", str(db), "--month", "2026-06")
    assert "self-sufficiency" in text.stdout and "home-06" in text.stdout


def test_report_writes_charts_and_a_page_that_links_them(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run("report", "--db", str(db), "--month", "2026-06", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "forecast against actual: not available" in result.stdout
    page = (out / "index.html").read_text()
    for name in ("typical-day.png", "month.png", "shared.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        assert f'src="{name}"' in page
    assert "not available" in page and "home-0" not in page  # no household is named
    assert "Settled as" not in page  # a month without a key, imported prices or official figures


def test_report_and_community_name_the_allocation_key(db: Path, tmp_path: Path) -> None:
    keyed = tmp_path / "keyed.toml"
    keyed.write_text(
        SCHEME_FILE.read_text()
        + '\n[allocation]\nname = "dynamic (E-Control)"\nrule = "pro-rata"\n'
    )
    settled = run(
        "settle",
        "--db",
        str(db),
        "--scheme",
        str(keyed),
        "--from",
        "2026-06-02",
        "--to",
        "2026-06-03",
    )
    assert settled.exit_code == 0, settled.output
    assert "shared energy allocated by key 'dynamic (E-Control)'" in settled.stdout
    out = tmp_path / "report"
    assert run("report", "--db", str(db), "--month", "2026-06", "--out", str(out)).exit_code == 0
    page = (out / "index.html").read_text()
    # The fixture settled all of June under the plain scheme; 2 and 3 June now have the key.
    keyed_id, plain_id = load_scheme(keyed).short_id, load_scheme(SCHEME_FILE).short_id
    spans = (
        f"SDR 2026-06-01 to 2026-06-01 (scheme {plain_id}), SDR 2026-06-02 to 2026-06-03 (scheme "
        f"{keyed_id}, key 'dynamic (E-Control)'), SDR 2026-06-04 to 2026-06-30 (scheme {plain_id})"
    )
    assert "Settled as: " + spans.replace("'", "&#x27;") in page
    text = run("community", "--db", str(db), "--month", "2026-06").stdout
    assert "settled as: " + spans in text
    data = json.loads(
        run("community", "--db", str(db), "--month", "2026-06", "--format", "json").stdout
    )
    assert [p["key"] for p in data["terms"]["pricing"]] == [None, "dynamic (E-Control)", None]
    figures = json.loads((out / "figures.json").read_text())
    assert "savings" not in figures and len(figures["savings_minor_sorted"]) == 6


def test_report_draws_the_forecast_band_when_one_is_stored(db: Path, tmp_path: Path) -> None:
    sch = load_scheme(SCHEME_FILE)
    start = sch.day_start_ms(date(2026, 6, 2))
    with Store.open(db, COOP) as store:
        conn = store.db.conn
        conn.execute(
            "CREATE TABLE forecasts "
            "(step_ms INTEGER, target TEXT, p10_w REAL, p50_w REAL, p90_w REAL)"
        )
        conn.executemany(
            "INSERT INTO forecasts VALUES (?, 'demand', ?, ?, ?)",
            [(start + i * 900_000, 1000.0, 2000.0, 3500.0) for i in range(192)],
        )
        conn.commit()
    out = tmp_path / "report"
    result = run("report", "--db", str(db), "--month", "2026-06", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "forecast.png").read_bytes().startswith(b"\x89PNG")
    assert 'src="forecast.png"' in (out / "index.html").read_text()


def test_report_refuses_groups_smaller_than_k(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    sch = load_scheme(SCHEME_FILE)
    with Store.open(path, COOP) as store:
        insert(store, sim_readings(sch, date(2026, 6, 2), 1, homes=4, step_min=15))
        settle(store, sch, [date(2026, 6, 2)], NOW)
    result = run("report", "--db", str(path), "--month", "2026-06", "--out", str(tmp_path / "r"))
    assert_clean_error(result, "at least 5 homes")
    assert not (tmp_path / "r").exists()


# -- publishing --------------------------------------------------------------------------------


def test_statements_are_published_retained_to_each_home(
    db: Path, tmp_path: Path, mosquitto: RunningBroker
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        f'coop = "{COOP}"\ndb = "{db}"\n'
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "settle-pub"\n'
    )
    result = run("publish-statements", "--config", str(config), "--month", "2026-06")
    assert result.exit_code == 0, result.output
    assert "published 6 statements" in result.stdout
    # A home connecting afterwards still gets its statement: it is retained.
    probe = Probe(mosquitto, COOP)
    try:
        topic = home_topic(COOP, "home-04", HomeTopic.STATEMENT)
        probe.wait_for(lambda msgs: sum(t.endswith("/statement") for t, _ in msgs) == 6)
        (payload,) = probe.on(topic)
        _, statement = decode_message(topic, payload)
        with Store.open_existing(db) as store:
            assert statement == build_statement(store, "home-04", "2026-06", NOW)
    finally:
        probe.client.loop_stop()
        probe.client.disconnect()
