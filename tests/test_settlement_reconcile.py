"""Reconciliation with the grid operator's figures, against differences worked out by hand.

Two homes, the first eight quarter-hours of 2 June 2026 in Vienna (00:00-02:00 +02:00, which is
1 June 22:00 to 2 June 00:00 UTC). The hub's grid meters are read at every quarter-hour boundary,
so the hub's interval energy is the counters' step, no interpolation. The operator delivers
home-a as two metering points (AT...A1 consumption, AT...A2 feed-in, added up per interval) and
home-b as one (AT...B1). Energy per interval, Wh, as (import, export):

    i  a: hub  a: operator  verdict (1 Wh or 1 %)  b: hub   b: operator  verdict
    0  100, 0    100, 0       agree (0)              1000, 0  1000, 0      agree
    1  200, 0    200.5, 0     agree: 0.5 <= 1 Wh     1000, 0  1005, 0      agree: 5 <= 10.05
    2  300, 0    303, 0       agree: 3 <= 3.03       0, 0     0, 0         agree
    3  0, 500    0, 510       NO: 10 > 1, > 5.1      250, 0   250.9, 0     agree: 0.9 <= 1
    4  0, 1000   0, 1000      agree                  0, 100   0, 100       agree
    5  50, 0     40, 0        NO: 10 > 1, > 0.4      0, 100   0, 98        NO: 2 > 1, > 0.98
    6  0, 0      0, 2         NO: 2 > 1, > 0.02      600, 0   600, 0       agree
    7  400, 0    400, 0       agree                  600, 0   600, 0       agree

home-a: 5 of 8 agree (62.5 %), 3 do not (37.5 %). Totals: hub import 100+200+300+50+400 = 1050,
operator 100+200.5+303+40+400 = 1043.5; hub export 500+1000 = 1500, operator 510+1000+2 = 1512.
Largest differences (|import| + |export|, earlier first on ties): i3 export −10, i5 import +10,
i2 import −3 (then i6 −2, i1 −0.5).
home-b: 7 of 8 agree (87.5 %), 1 does not (12.5 %). Totals: hub import 1000+1000+250+600+600 =
3450, operator 1000+1005+250.9+600+600 = 3455.9; hub export 200, operator 100+98 = 198.
With an alert above 20 % not agreeing, home-a is flagged (37.5 %) and home-b is not (12.5 %).
With 10 Wh and 0 %, every interval agrees: the largest difference is 10 Wh.

Over the whole local day (96 quarter-hours, the other 88 zero on both sides): home-a 93 of 96
agree (3/96 = 3.125 % not), home-b 95 of 96 (1.04 %): an alert above 2 % flags home-a only, the
default 5 % flags neither.
"""

from __future__ import annotations

import contextlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.cli.main import main
from hub.settlement.intervals import MemberInterval
from hub.settlement.reconcile import (
    HomeReconciliation,
    OperatorFile,
    ReconcileError,
    Tolerance,
    hub_intervals,
    load_map,
    official_intervals,
    parse_map,
    parse_operator_csv,
    reconcile,
)
from hub.settlement.scheme import Scheme, parse_scheme
from hub.storage.store import Store
from protocol.payloads import Reading
from protocol.quantities import Role
from tests.test_settlement_ledger import insert

DAY = date(2026, 6, 2)
Q_MS = 15 * 60_000
SCHEME_TOML = """\
timezone = "Europe/Vienna"
currency = "EUR"
minor_unit = 2
mechanism = "sdr"
import_tariff = { price_per_kwh = "0.30" }
export_tariff = { price_per_kwh = "0.10" }
"""
MAP_TOML = """\
[metering_points]
AT0000000A1 = "home-a"
AT0000000A2 = "home-a"
AT0000000B1 = "home-b"
"""
POINTS = {"AT0000000A1": "home-a", "AT0000000A2": "home-a", "AT0000000B1": "home-b"}

# (import Wh, export Wh) per worked interval.
HUB = {
    "home-a": [(100, 0), (200, 0), (300, 0), (0, 500), (0, 1000), (50, 0), (0, 0), (400, 0)],
    "home-b": [(1000, 0), (1000, 0), (0, 0), (250, 0), (0, 100), (0, 100), (600, 0), (600, 0)],
}
# Per metering point: (member, home-a's consumption point carries import, feed-in point export).
OPERATOR: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "AT0000000A1": (
        "Anna",
        [
            *[("100", "0"), ("200.5", "0"), ("303", "0"), ("0", "0")],
            *[("0", "0"), ("40", "0"), ("0", "0"), ("400", "0")],
        ],
    ),
    "AT0000000A2": (
        "Anna",
        [
            *[("0", "0"), ("0", "0"), ("0", "0"), ("0", "510")],
            *[("0", "1000"), ("0", "0"), ("0", "2"), ("0", "0")],
        ],
    ),
    "AT0000000B1": (
        "Bernd, jr.",
        [
            *[("1000", "0"), ("1005", "0"), ("0", "0"), ("250.9", "0")],
            *[("0", "100"), ("0", "98"), ("600", "0"), ("600", "0")],
        ],
    ),
}


def scheme() -> Scheme:
    import tomllib

    return parse_scheme(tomllib.loads(SCHEME_TOML))


def day_bounds() -> tuple[int, int]:
    sch = scheme()
    return sch.day_start_ms(DAY), sch.day_start_ms(date(2026, 6, 3))


def local_iso(ts_ms: int) -> str:
    return scheme().local(ts_ms).isoformat()


def operator_csv(intervals: int = 96) -> str:
    start, _ = day_bounds()
    lines = ["member,metering_point,start,end,import_wh,export_wh,allocated_wh"]
    for point, (member, flows) in OPERATOR.items():
        for i in range(intervals):
            imp, exp = flows[i] if i < len(flows) else ("0", "0")
            t = start + i * Q_MS
            name = f'"{member}"' if "," in member else member
            lines.append(f"{name},{point},{local_iso(t)},{local_iso(t + Q_MS)},{imp},{exp},")
    return "\n".join(lines) + "\n"


def hub_readings() -> dict[str, list[Reading]]:
    start, end = day_bounds()
    out: dict[str, list[Reading]] = {}
    for n, (home, flows) in enumerate(HUB.items()):
        imp = exp = 5000 * (n + 1)  # lifetime counters, Wh
        readings = []
        for seq, t in enumerate(range(start, end + 1, Q_MS), start=1):
            k = (t - start) // Q_MS  # the interval that ended at t
            if 1 <= k <= len(flows):
                imp += flows[k - 1][0]
                exp += flows[k - 1][1]
            q: dict[str, float | str] = {"energy_import_wh": imp, "energy_export_wh": exp}
            readings.append(Reading("grid-meter", seq, t, Role.GRID, "g1", q))
        out[home] = readings
    return out


@pytest.fixture
def store_coop() -> str:
    return "coop-reconcile"


@pytest.fixture
def store(store: Store) -> Store:
    insert(store, hub_readings())
    return store


def worked(store: Store, tolerance: Tolerance) -> dict[str, HomeReconciliation]:
    start, _ = day_bounds()
    end = start + 8 * Q_MS
    official = official_intervals(parse_operator_csv(operator_csv()), POINTS, start, end)
    hub = hub_intervals(store, start, end, Q_MS, scheme().max_gap_ms)
    result = reconcile(official, hub, tolerance, Q_MS)
    return {h.home: h for h in result.homes}


def test_hand_worked_differences_and_agreement(store: Store) -> None:
    homes = worked(store, Tolerance(Decimal(1), Decimal(1), Decimal(20)))
    a, b = homes["home-a"], homes["home-b"]
    start, _ = day_bounds()
    assert (a.intervals, a.agreeing, a.agree_share, a.alert) == (8, 5, 0.625, True)
    assert (b.intervals, b.agreeing, b.agree_share, b.alert) == (8, 7, 0.875, False)
    assert (a.hub_import_mwh, a.official_import_mwh) == (1_050_000, 1_043_500)
    assert (a.hub_export_mwh, a.official_export_mwh) == (1_500_000, 1_512_000)
    assert (b.hub_import_mwh, b.official_import_mwh) == (3_450_000, 3_455_900)
    assert (b.hub_export_mwh, b.official_export_mwh) == (200_000, 198_000)
    assert [
        ((d.start_ms - start) // Q_MS, d.import_diff_mwh, d.export_diff_mwh) for d in a.largest
    ] == [(3, 0, -10_000), (5, 10_000, 0), (2, -3_000, 0)]
    assert a.hub_missing == b.hub_missing == 0


def test_tolerances_are_configurable(store: Store) -> None:
    homes = worked(store, Tolerance(Decimal(10), Decimal(0), Decimal(0)))
    assert [(h.agreeing, h.alert) for h in homes.values()] == [(8, False), (8, False)]
    homes = worked(store, Tolerance(Decimal(0), Decimal(0), Decimal(0)))
    # Exact only: home-a agrees in 0, 4, 7; home-b in 0, 2, 4, 6, 7.
    assert [h.agreeing for h in homes.values()] == [3, 5]


def test_official_intervals_have_the_engines_structure() -> None:
    start, _ = day_bounds()
    official = official_intervals(
        parse_operator_csv(operator_csv(8)), POINTS, start, start + 8 * Q_MS
    )
    assert list(official) == ["home-a", "home-b"]
    assert official["home-a"][3] == MemberInterval("home-a", start + 3 * Q_MS, 0, 510_000, "ok")
    assert official["home-b"][1] == MemberInterval("home-b", start + Q_MS, 1_005_000, 0, "ok")


def test_hub_missing_intervals_do_not_agree(store: Store) -> None:
    start, _ = day_bounds()
    end = start + 8 * Q_MS
    official = official_intervals(parse_operator_csv(operator_csv()), POINTS, start, end)
    hub = hub_intervals(store, start, end, Q_MS, scheme().max_gap_ms)
    del hub["home-b"]
    hub["home-c"] = hub["home-a"]
    result = reconcile(official, hub, Tolerance(), Q_MS)
    b = result.homes[1]
    assert (b.home, b.agreeing, b.hub_missing, b.alert) == ("home-b", 0, 8, True)
    assert result.hub_only == ("home-c",)


# -- the command ---------------------------------------------------------------------------------


def run_cli(store_path: Path, tmp_path: Path, *extra: str, csv_text: str | None = None) -> Result:
    (tmp_path / "scheme.toml").write_text(SCHEME_TOML)
    (tmp_path / "map.toml").write_text(MAP_TOML)
    (tmp_path / "op.csv").write_text(operator_csv() if csv_text is None else csv_text)
    args = ["reconcile", "--db", str(store_path), "--scheme", str(tmp_path / "scheme.toml")]
    args += ["--file", str(tmp_path / "op.csv"), "--map", str(tmp_path / "map.toml")]
    args += ["--from", "2026-06-02", "--to", "2026-06-02", *extra]
    return CliRunner().invoke(main, args)


def test_command_summary_and_exit_codes(store: Store, store_path: Path, tmp_path: Path) -> None:
    result = run_cli(store_path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "home-a: ok: 93/96 intervals agree (96.9 %)" in result.output
    assert "home-b: ok: 95/96 intervals agree (99.0 %)" in result.output
    assert "2026-06-01T22:45+00:00: import 0 Wh, export -10 Wh" in result.output

    result = run_cli(store_path, tmp_path, "--alert-pct", "2", "--format", "json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["alert"] is True
    assert [(h["home"], h["alert"], h["agreeing"]) for h in data["homes"]] == [
        ("home-a", True, 93),
        ("home-b", False, 95),
    ]
    assert data["homes"][0]["official_import_wh"] == "1043.5"

    result = run_cli(store_path, tmp_path, "--format", "csv", "--tolerance-wh", "10")
    assert result.exit_code == 0
    assert result.output.splitlines()[1].startswith("home-a,no,96,96,100.0,0,0,1043.5,1050")


@pytest.mark.parametrize(
    ("extra", "csv_text", "needle"),
    [
        ((), "member,metering_point,start,end,import_wh,export_wh\n", "no rows"),
        ((), operator_csv().replace("AT0000000B1", "AT0000000X9"), "AT0000000X9 (Bernd, jr.)"),
        ((), operator_csv(95), "has no row for 1 of the 96 intervals, the first at"),
        (("--tolerance-pct", "lots"), None, "'lots' is not a number"),
        (("--to", "2026-06-01"), None, "--to is before --from"),
    ],
)
def test_command_errors_are_one_line(
    store: Store,
    store_path: Path,
    tmp_path: Path,
    extra: tuple[str, ...],
    csv_text: str | None,
    needle: str,
) -> None:
    result = run_cli(store_path, tmp_path, *extra, csv_text=csv_text)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


# -- the parser's errors -------------------------------------------------------------------------

HEADER = "member,metering_point,start,end,import_wh,export_wh\n"
ROW = "m,P1,2026-06-02T00:00:00+02:00,2026-06-02T00:15:00+02:00,1,2\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("member,start,end,import_wh,export_wh\n" + ROW, "no 'metering_point' column"),
        (HEADER.replace("import_wh", "import_w"), "not a unit this reads"),
        (HEADER.replace("export_wh", "export_mwh"), "not a unit this reads"),
        (HEADER.replace(",export_wh", ",price_eur"), "unknown column"),
        (HEADER.replace(",export_wh", ""), "no export_wh"),
        (HEADER + ROW.replace(",1,2", ",abc,2"), "line 2: import_wh 'abc' is not a number"),
        (HEADER + ROW.replace(",1,2", ",NaN,2"), "is not a number"),
        (HEADER + ROW.replace(",1,2", ",-1,2"), "negative"),
        (HEADER + ROW.replace(",1,2", ",1.0001,2"), "finer than 1 mWh"),
        (HEADER + ROW.replace(",1,2", ",1,"), "export_wh is empty"),
        (HEADER + ROW.replace(",1,2", ",1"), "5 fields where the header has 6"),
        (HEADER + ROW.replace("+02:00", ""), "has no UTC offset"),
        (HEADER + ROW.replace("2026-06-02T00:00", "2 June"), "not an ISO 8601 time"),
        (HEADER + ROW.replace("00:15:00", "00:30:00"), "lasts 30 minutes"),
        (HEADER + ROW.replace("00:00:00", "00:05:00").replace("00:15", "00:20"), "not on the"),
        (HEADER + ROW + ROW, "line 3: metering point P1 has this interval already (line 2)"),
        (HEADER + ROW.replace("m,", ","), "member is empty"),
        (HEADER + ROW.replace("00:15:00+", "01:15:00+"), "lasts 75 minutes"),
        (
            HEADER + ROW + "m,P1,2026-06-02T01:00:00+02:00,2026-06-02T02:00:00+02:00,1,2\n",
            "line 3: intervals of different lengths in one file (15 and 60 minutes)",
        ),
        ('member,metering_point,start,end,import_wh,export_wh\n"m,P1', "not valid CSV"),
    ],
)
def test_parser_errors(text: str, needle: str) -> None:
    with pytest.raises(ReconcileError, match=None) as caught:
        parse_operator_csv(text)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_kwh_columns_are_converted_exactly() -> None:
    text = "\ufeffMember,Metering_Point,Start,End,Import_kWh,Export_kWh,Allocated_kWh\n"
    text += "m,P1,2026-06-02T00:00:00Z,2026-06-02T01:00:00Z,0.123456,1.5,\n"
    row = parse_operator_csv(text).rows[0]
    assert (row.import_mwh, row.export_mwh, row.allocated_mwh) == (123_456, 1_500_000, None)
    assert parse_operator_csv(text).step_ms == 3_600_000


def test_map_errors(tmp_path: Path) -> None:
    assert load_map(_write(tmp_path, MAP_TOML)) == POINTS
    for text, needle in [
        ("[metering_points]\nP1 = 'Home A'\n", "must be 1-32 of a-z"),
        ("[points]\n", "metering_points is missing"),
        ("[metering_points]\n", "metering_points is empty"),
        ("[metering_points]\nP1 = 3\n", "must be a string"),
        ("[metering_points\n", "not valid TOML"),
    ]:
        with pytest.raises(ReconcileError) as caught:
            load_map(_write(tmp_path, text))
        assert needle in str(caught.value)
    with pytest.raises(ReconcileError, match="cannot read"):
        load_map(tmp_path / "absent.toml")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text)
    return path


def test_parse_map_plain() -> None:
    assert parse_map({"metering_points": {"X": "home-x"}}) == {"X": "home-x"}


# -- hypothesis ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parser_never_fails_but_with_its_error(text: str) -> None:
    try:
        parse_operator_csv(text)
    except ReconcileError as exc:
        assert "\n" not in str(exc)


_fields = st.sampled_from(
    ["", "x", "1", "-1", "1e3", "1.5", "NaN", "inf", "2026-06-02T00:00:00+02:00", "0.0001", " "]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_fields, min_size=0, max_size=8), max_size=6))
def test_parser_on_csv_shaped_junk(rows: list[list[str]]) -> None:
    text = HEADER + "".join(",".join(r) + "\n" for r in rows)
    with contextlib.suppress(ReconcileError):
        parse_operator_csv(text)
    with contextlib.suppress(ReconcileError):
        parse_operator_csv(text.replace("\n", "\r\n"))


_energy = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["AT1", "AT2", "DE-9"]),
        st.lists(st.tuples(_energy, _energy), min_size=1, max_size=6),
        min_size=1,
    ),
    st.sampled_from(["+02:00", "Z", "-05:00", "+05:45"]),
    st.booleans(),
)
def test_parser_reads_back_what_was_written(
    points: dict[str, list[tuple[Decimal, Decimal]]], offset: str, kwh: bool
) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    if offset == "Z":
        tz = UTC
    else:
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    unit = "kwh" if kwh else "wh"
    lines = [f"member,metering_point,start,end,import_{unit},export_{unit}"]
    expected = []
    base = datetime(2026, 6, 2, tzinfo=UTC)
    for point, flows in points.items():
        for i, (imp, exp) in enumerate(flows):
            t0 = (base + timedelta(minutes=15 * i)).astimezone(tz)
            t1 = t0 + timedelta(minutes=15)
            scale = Decimal(1000) if kwh else Decimal(1)
            lines.append(
                f"someone,{point},{t0.isoformat()},{t1.isoformat()},{imp / scale},{exp / scale}"
            )
            ms = int(t0.timestamp() * 1000)
            expected.append((point, ms, ms + Q_MS, int(imp * 1000), int(exp * 1000)))
    parsed: OperatorFile = parse_operator_csv("\n".join(lines) + "\n")
    assert [
        (r.metering_point, r.start_ms, r.end_ms, r.import_mwh, r.export_mwh) for r in parsed.rows
    ] == expected
    assert parsed.step_ms == Q_MS
