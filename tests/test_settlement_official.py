"""Settlement on the grid operator's figures, with the hub's readings as the check.

The data are those of :mod:`tests.test_settlement_reconcile` (its docstring has the table): two
homes on 2 June 2026 in Vienna, the hub's readings and the operator's figures differing in a
few quarter-hours. Settlement shares pro rata to consumption within each quarter-hour, so on
each side, worked by hand from that table (Wh):

    quarter  operator: a, b (import, export)   shared    hub: a, b              shared
    3        (0, 510), (250.9, 0)               250.9     (0, 500), (250, 0)     250
    5        (40, 0), (0, 98)                   40        (50, 0), (0, 100)      50
    6        (0, 2), (600, 0)                   2         (0, 0), (600, 0)       0
    others   nobody both imports and exports    0         the same               0

On the operator's figures: home-b takes 250.9 + 2 = 252.9 Wh from neighbours and home-a
40 Wh; home-b buys 3455.9 - 252.9 = 3203 Wh from the grid, home-a 1043.5 - 40 = 1003.5 Wh
(at 0.30 EUR/kWh: 0.96090 and 0.30105 EUR); home-a sells 1512 - 252.9 = 1259.1 Wh to the
grid, home-b 198 - 40 = 158 Wh (at 0.10: 0.12591 and 0.01580 EUR).
On the hub's readings: home-b takes 250 Wh from neighbours, home-a 50 Wh.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hub.cli.main import main
from hub.settlement.engine import MeterSourceError, settle
from hub.settlement.ledger import HUB_READINGS, Ledger, member_account
from hub.settlement.reconcile import OfficialFigures, parse_map, parse_operator_csv
from hub.settlement.statements import build_statement, format_csv, format_json, format_text
from hub.storage.store import Store
from protocol.payloads import Reading
from protocol.quantities import Role
from tests.test_settlement_ledger import NOW, insert
from tests.test_settlement_reconcile import (
    DAY,
    MAP_TOML,
    POINTS,
    Q_MS,
    SCHEME_TOML,
    day_bounds,
    hub_readings,
    local_iso,
    operator_csv,
    scheme,
)

COOP = "coop-official"


@pytest.fixture
def store_coop() -> str:
    return COOP


@pytest.fixture
def store(store: Store) -> Store:
    insert(store, hub_readings())
    return store


def official(
    csv_text: str | None = None, name: str = "op.csv sha256:0123456789abcdef"
) -> OfficialFigures:
    parsed = parse_operator_csv(operator_csv() if csv_text is None else csv_text)
    return OfficialFigures(type(parsed)(parsed.rows, parsed.step_ms, name), POINTS)


def legs(store: Store, home: str) -> dict[str, tuple[int, int]]:
    return {
        leg: (p.energy_mwh, p.amount_micro)
        for (account, leg), p in Ledger(store).day_effective(DAY).items()
        if account == member_account(home)
    }


def test_a_day_settled_on_the_operators_figures_worked_by_hand(store: Store) -> None:
    result = settle(store, scheme(), [DAY], NOW, official=official())
    a, b = legs(store, "home-a"), legs(store, "home-b")
    assert b["import-neighbours"][0] == 252_900
    assert a["import-neighbours"][0] == 40_000
    assert a["export-neighbours"][0] == -252_900
    assert b["export-neighbours"][0] == -40_000
    assert b["import-grid"] == (3_203_000, -960_900)
    assert a["import-grid"] == (1_003_500, -301_050)
    assert a["export-grid"] == (-1_259_100, 125_910)
    assert b["export-grid"] == (-158_000, 15_800)
    assert Ledger(store).verify() == []
    assert Ledger(store).day_sources([DAY]) == {DAY: "op.csv sha256:0123456789abcdef"}
    # The check: the reconcile test's whole-day figures (93 and 95 of 96 agree).
    assert result.check is not None
    assert [(h.home, h.agreeing, h.intervals) for h in result.check.homes] == [
        ("home-a", 93, 96),
        ("home-b", 95, 96),
    ]


def test_the_hub_readings_do_not_replace_official_figures_unasked(store: Store) -> None:
    settle(store, scheme(), [DAY], NOW, official=official())
    with pytest.raises(MeterSourceError, match="2026-06-02 was settled on the grid operator"):
        settle(store, scheme(), [DAY], NOW)
    assert legs(store, "home-b")["import-neighbours"][0] == 252_900  # nothing written
    settle(store, scheme(), [DAY], NOW, replace_official=True)
    assert legs(store, "home-b")["import-neighbours"][0] == 250_000
    assert legs(store, "home-a")["import-neighbours"][0] == 50_000
    assert Ledger(store).day_sources([DAY]) == {DAY: HUB_READINGS}


def _hourly_csv() -> str:
    start, _ = day_bounds()
    lines = ["member,metering_point,start,end,import_wh,export_wh"]
    for point in POINTS:
        for h in range(24):
            t = start + h * 4 * Q_MS
            lines.append(f"m,{point},{local_iso(t)},{local_iso(t + 4 * Q_MS)},1,0")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("csv_text", "needle"),
    [
        (_hourly_csv(), "has 60-minute figures; settling needs the operator's 15-minute"),
        (operator_csv(95), "cannot settle 2026-06-02 on op.csv"),
    ],
)
def test_a_file_that_cannot_settle_the_day_is_refused_before_writing(
    store: Store, csv_text: str, needle: str
) -> None:
    with pytest.raises(MeterSourceError, match=needle):
        settle(store, scheme(), [DAY], NOW, official=official(csv_text))
    assert Ledger(store).day_effective(DAY) == {}


def test_a_home_the_map_leaves_out_is_not_dropped_silently(store: Store) -> None:
    rs = [
        Reading("grid-meter", i + 1, t, Role.GRID, "g1", {"energy_import_wh": 100.0 + i})
        for i, t in enumerate(range(day_bounds()[0], day_bounds()[1] + 1, Q_MS))
    ]
    insert(store, {"home-c": rs})
    with pytest.raises(MeterSourceError, match="home-c has readings at the hub on 2026-06-02"):
        settle(store, scheme(), [DAY], NOW, official=official())
    assert Ledger(store).day_effective(DAY) == {}


def test_parse_map_matches_the_reconcile_map() -> None:
    import tomllib

    assert parse_map(tomllib.loads(MAP_TOML)) == POINTS


# -- the command -----------------------------------------------------------------------------


def run_settle(store_path: Path, tmp_path: Path, *extra: str) -> Result:
    (tmp_path / "scheme.toml").write_text(SCHEME_TOML)
    (tmp_path / "map.toml").write_text(MAP_TOML)
    (tmp_path / "op.csv").write_text(operator_csv())
    args = ["settle", "--db", str(store_path), "--scheme", str(tmp_path / "scheme.toml")]
    args += ["--from", "2026-06-02", "--to", "2026-06-02", *extra]
    return CliRunner().invoke(main, args)


def official_args(tmp_path: Path) -> tuple[str, ...]:
    return ("--official", str(tmp_path / "op.csv"), "--map", str(tmp_path / "map.toml"))


def test_command_settles_and_prints_the_check(
    store: Store, store_path: Path, tmp_path: Path
) -> None:
    result = run_settle(store_path, tmp_path, *official_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert "settled on the grid operator's figures (op.csv sha256:" in result.output
    assert "home-a: ok: 93 of 96 quarter-hours agree (96.9 %)" in result.output
    assert "home-b: ok: 95 of 96 quarter-hours agree (99.0 %)" in result.output
    assert legs(store, "home-b")["import-neighbours"][0] == 252_900


def test_command_alerts_after_settling(store: Store, store_path: Path, tmp_path: Path) -> None:
    result = run_settle(store_path, tmp_path, *official_args(tmp_path), "--alert-pct", "2")
    assert result.exit_code == 1, result.output
    assert "home-a: ALERT: 93 of 96" in result.output
    assert "home-b: ok" in result.output
    assert legs(store, "home-b")["import-neighbours"][0] == 252_900  # settled all the same


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--official", "op.csv"), "--official and --map go together"),
        (("--replace-official", "--official", "x", "--map", "y"), "exclude each other"),
        (("--official", "missing.csv", "--map", "map.toml"), "cannot read"),
    ],
)
def test_command_usage_errors(
    store: Store, store_path: Path, tmp_path: Path, extra: tuple[str, ...], needle: str
) -> None:
    extra = tuple(str(tmp_path / e) if e.endswith((".csv", ".toml")) else e for e in extra)
    result = run_settle(store_path, tmp_path, *extra)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_command_refuses_hub_readings_over_official_days(
    store: Store, store_path: Path, tmp_path: Path
) -> None:
    assert run_settle(store_path, tmp_path, *official_args(tmp_path)).exit_code == 0
    result = run_settle(store_path, tmp_path)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert "--replace-official" in result.output
    assert run_settle(store_path, tmp_path, "--replace-official").exit_code == 0
    assert legs(store, "home-b")["import-neighbours"][0] == 250_000


# -- what statements and reports say ---------------------------------------------------------


def test_statement_and_community_name_the_figures(store: Store) -> None:
    settle(store, scheme(), [DAY], NOW, official=official())
    s = build_statement(store, "home-b", "2026-06", NOW)
    assert s.pricing is not None
    assert [(p.first, p.last, p.metered_by, p.key, p.grid_prices) for p in s.pricing] == [
        ("2026-06-02", "2026-06-02", "grid-operator", None, None)
    ]
    assert "SDR 2026-06-02 to 2026-06-02 (on the grid operator's figures)" in format_text(s)
    assert "metered-by grid-operator" in format_csv(s)


def test_a_plain_month_says_nothing_new(store: Store) -> None:
    """Existing schemes and statements are unchanged: no key, prices or figures named."""
    settle(store, scheme(), [DAY], NOW)
    s = build_statement(store, "home-b", "2026-06", NOW)
    assert s.pricing is not None
    assert [(p.key, p.grid_prices, p.metered_by) for p in s.pricing] == [(None, None, None)]
    assert "metered" not in format_csv(s) and "key" not in format_text(s)
    wire = json.loads(format_json(s))
    assert wire["pricing"] == [
        {
            "first": "2026-06-02",
            "last": "2026-06-02",
            "mechanism": "sdr",
            "scheme": s.pricing[0].scheme,
        }
    ]


def test_days_on_other_figures_make_their_own_span(store: Store) -> None:
    later = date(2026, 6, 3)
    end = scheme().day_start_ms(date(2026, 6, 4))
    more: dict[str, list[Reading]] = {}
    for home, rs in hub_readings().items():
        last = rs[-1]
        more[home] = [
            Reading("grid-meter", last.seq + i, t, Role.GRID, "g1", dict(last.quantities))
            for i, t in enumerate(range(last.ts_ms + Q_MS, end + 1, Q_MS), start=1)
        ]
    insert(store, more)
    settle(store, scheme(), [DAY], NOW, official=official())
    settle(store, scheme(), [later], NOW)
    s = build_statement(store, "home-a", "2026-06", NOW)
    assert s.pricing is not None
    assert [(p.first, p.last, p.metered_by) for p in s.pricing] == [
        ("2026-06-02", "2026-06-02", "grid-operator"),
        ("2026-06-03", "2026-06-03", None),
    ]


def test_key_and_imported_prices_are_named_on_statement_and_community(
    tmp_path: Path,
) -> None:
    """The imported-prices day of :mod:`tests.test_settlement_imported_prices` under a named
    pro-rata key (which shares as before) and on official figures equal to the hub's.

    home-a buys 1.1 kWh from the grid for 0.150 - 0.020 + 0.040 = 0.170 EUR (17 cents):
    0.1545 EUR/kWh on average. The community buys 500, 400, 500 and 1000 Wh in the four
    worked quarters at 0.30, -0.05, 0.20 and 0.50 EUR/kWh, and nothing after them (at 0.35):
    0.730 EUR for 2.4 kWh, 0.3042 EUR/kWh; its prices run from -0.05 to 0.50.
    """
    from hub.settlement.metrics import community_report
    from hub.settlement.price_store import import_prices
    from hub.settlement.report import format_community_text
    from hub.settlement.scheme import parse_scheme
    from protocol.clock import ManualClock
    from tests import test_settlement_imported_prices as ip

    data = ip.scheme_data()
    data["allocation"] = {"name": "Austria dynamic", "rule": "pro-rata"}
    sch = parse_scheme(data)
    lines = ["member,metering_point,start,end,import_wh,export_wh"]
    for home in ("home-a", "home-b"):
        for i in range(96):
            imp, exp = ip.FLOWS[i][home] if i < len(ip.FLOWS) else (0, 0)
            t = ip.t0() + i * Q_MS
            lines.append(
                f"m,MP-{home},{sch.local(t).isoformat()},"
                f"{sch.local(t + Q_MS).isoformat()},{imp},{exp}"
            )
    parsed = parse_operator_csv("\n".join(lines) + "\n")
    figures = OfficialFigures(
        type(parsed)(parsed.rows, parsed.step_ms, "june.csv sha256:00ff"),
        {"MP-home-a": "home-a", "MP-home-b": "home-b"},
    )
    with Store.open(tmp_path / "hub.db", ip.COOP, clock=ManualClock(NOW)) as store:
        insert(store, ip.readings())
        import_prices(store, ip.prices(), "day-ahead-june.xml", NOW)
        result = settle(store, sch, [ip.DAY], NOW, official=figures)
        assert result.check is not None and not result.check.alert
        s = build_statement(store, "home-a", "2026-06", NOW)
        assert s.pricing is not None
        assert [(p.key, p.grid_prices, p.metered_by) for p in s.pricing] == [
            ("Austria dynamic", "imported", "grid-operator")
        ]
        text = format_text(s)
        assert (
            "MMR 2026-06-02 to 2026-06-02 (key 'Austria dynamic', grid prices imported per "
            "interval, on the grid operator's figures)"
        ) in text
        assert "grid import at the imported prices per interval: 0.1545 EUR/kWh" in text
        report = format_community_text(community_report(store, "2026-06", NOW))
    assert "key 'Austria dynamic', grid prices imported per interval" in report
    assert "grid import prices per interval -0.05 to 0.50 EUR/kWh" in report
    assert "0.3042 on average per kWh bought" in report
    assert "grid prices from day-ahead-june.xml" in report
    assert "meter figures: the grid operator's (june.csv sha256:00ff)" in report


def test_repricing_a_closed_day_on_official_figures_records_them(store: Store) -> None:
    """A closed day settled on the hub's readings, repriced under another scheme on the
    operator's figures: the data correction and the repricing are posted in July, and the day
    now rests on the operator's file."""
    import tomllib

    from hub.settlement.engine import day_range
    from hub.settlement.scheme import parse_scheme

    settle(store, scheme(), day_range(date(2026, 6, 1), date(2026, 6, 30)), NOW)
    Ledger(store).close_period(scheme(), "2026-06", NOW, allow_provisional=True)

    other = parse_scheme(tomllib.loads(SCHEME_TOML.replace('"sdr"', '"mmr"')))
    settle(store, other, [DAY], NOW, reprice=True, official=official())
    assert Ledger(store).day_sources([DAY]) == {DAY: "op.csv sha256:0123456789abcdef"}
    july = {t for t, _ in Ledger(store).period_postings("2026-07")}
    assert len(july) == 2  # the correction to the operator's figures, and the repricing
