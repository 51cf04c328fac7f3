"""Fluvius's consumption-history export as the grid operator's figures, against values worked by
hand from the fixtures (tests/fixtures/settlement/fluvius/, README there).

kwartiertotalen-nl.csv, 2 June 2026, Belgian summer time (UTC+2):

    EAN ...134 00:00-00:15 local = 1 June 22:00Z: Afname 0,067 kWh = 67 Wh, Injectie 0
               00:15-00:30       = 22:15Z: "Geen verbruik", both empty: 0 and 0
               07:00-07:15       = 05:00Z: Afname Dag 12 Wh, Injectie Dag 345 Wh
    EAN ...999 00:00-00:15       = 22:00Z: Afname 1250 Wh, no injection register: 0

15-minute-totals-en-autumn.csv, 29 October 2023, clocks back from 03:00 CEST to 02:00 CET:

    01:45 CEST = 28 Oct 23:45Z  offtake 100 Wh
    02:00 CEST = 00:00Z         offtake 200 Wh   (first pass)
    02:45 CEST = 00:45Z         offtake 300 Wh   (first pass; its end is written 03:00)
    02:00 CET  = 01:00Z         offtake 400 Wh   (second pass)
    02:45 CET  = 01:45Z         offtake 500 Wh
    03:00 CET  = 02:00Z         injection 6 Wh
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.cli.main import main
from hub.settlement.fluvius import looks_like_fluvius, parse_fluvius_csv
from hub.settlement.operator_files import read_operator_file
from hub.settlement.reconcile import ReconcileError
from hub.settlement.scheme import parse_scheme
from hub.storage.store import Store
from protocol.clock import ManualClock
from protocol.payloads import Reading
from protocol.quantities import Role
from tests.test_settlement_ledger import NOW, insert

FIXTURES = Path(__file__).parent / "fixtures" / "settlement" / "fluvius"
HEADER_NL = (
    "Van (datum);Van (tijdstip);Tot (datum);Tot (tijdstip);EAN;Meter;Metertype;Register;"
    "Volume;Eenheid;Validatiestatus"
)


def utc_ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def rows_of(path: Path) -> list[tuple[str, int, int, int, int]]:
    parsed = read_operator_file(path)
    assert parsed.step_ms == 15 * 60_000
    return [
        (r.metering_point, r.start_ms, r.end_ms - r.start_ms, r.import_mwh, r.export_mwh)
        for r in parsed.rows
    ]


Q = 15 * 60_000


def test_the_dutch_export_worked_by_hand() -> None:
    assert rows_of(FIXTURES / "kwartiertotalen-nl.csv") == [
        ("541448820052377134", utc_ms(2026, 6, 1, 22, 0), Q, 67_000, 0),
        ("541448820052377134", utc_ms(2026, 6, 1, 22, 15), Q, 0, 0),
        ("541448820052377134", utc_ms(2026, 6, 2, 5, 0), Q, 12_000, 345_000),
        ("541448820052377999", utc_ms(2026, 6, 1, 22, 0), Q, 1_250_000, 0),
    ]


def test_the_english_export_through_the_autumn_clock_change() -> None:
    assert rows_of(FIXTURES / "15-minute-totals-en-autumn.csv") == [
        ("541448820052377134", utc_ms(2023, 10, 28, 23, 45), Q, 100_000, 0),
        ("541448820052377134", utc_ms(2023, 10, 29, 0, 0), Q, 200_000, 0),
        ("541448820052377134", utc_ms(2023, 10, 29, 0, 45), Q, 300_000, 0),
        ("541448820052377134", utc_ms(2023, 10, 29, 1, 0), Q, 400_000, 0),
        ("541448820052377134", utc_ms(2023, 10, 29, 1, 45), Q, 500_000, 0),
        ("541448820052377134", utc_ms(2023, 10, 29, 2, 0), Q, 0, 6_000),
    ]


def test_the_generic_csv_is_still_read_as_such(tmp_path: Path) -> None:
    path = tmp_path / "generic.csv"
    path.write_text(
        "member,metering_point,start,end,import_wh,export_wh\n"
        "m,P1,2026-06-02T00:00:00+02:00,2026-06-02T00:15:00+02:00,1,2\n"
    )
    assert rows_of(path) == [("P1", utc_ms(2026, 6, 1, 22, 0), Q, 1000, 2000)]
    assert not looks_like_fluvius(path.read_text().splitlines()[0])


def row(start: str, end: str, register: str, volume: str, status: str = "Gevalideerd") -> str:
    d1, t1 = start.split()
    d2, t2 = end.split()
    return f'{d1};{t1};{d2};{t2};="5414";M1;Digitale Meter;{register};{volume};kWh;{status}'


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Afname Dag", "", "Ontbrekend")],
            "line 2: no volume (status 'Ontbrekend'): the operator's figure is missing",
        ),
        (
            [
                row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Afname", "1,0").replace(
                    ";kWh;", ";m³;"
                )
            ],
            "a gas meter's export has no place here",
        ),
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Reactief", "1,0")],
            "register 'Reactief' is neither offtake",
        ),
        (
            [row("26-03-2023 02:15:00", "26-03-2023 02:30:00", "Afname Dag", "1,0")],
            "26-03-2023 02:15 does not exist in Belgian time",
        ),
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Afname Dag", "1,0")] * 2,
            "line 3: Afname Dag of 5414 has the quarter-hour from 02-06-2026 00:00 already",
        ),
        (
            [row("29-10-2023 02:00:00", "29-10-2023 02:15:00", "Afname Dag", "1,0")] * 3,
            "line 4: Afname Dag of 5414 has the quarter-hour from 29-10-2023 02:00 already",
        ),
        (
            [row("2026-06-02 00:00:00", "2026-06-02 00:15:00", "Afname Dag", "1,0")],
            "is not a date DD-MM-YYYY and a time HH:MM:SS",
        ),
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:20:00", "Afname Dag", "1,0")],
            "lasts 20 minutes",
        ),
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Afname Dag", "-1,0")],
            "volume '-1.0' is negative",
        ),
        (
            [row("02-06-2026 00:00:00", "02-06-2026 00:15:00", "Afname Dag", "1,0000001")],
            "volume '1.0000001' is finer than 1 mWh",
        ),
        ([], "the file has a header but no rows"),
    ],
)
def test_each_mistake_is_one_line_naming_it(lines: list[str], needle: str) -> None:
    with pytest.raises(ReconcileError) as caught:
        parse_fluvius_csv("\n".join([HEADER_NL, *lines]) + "\n")
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_header_without_volume_is_not_read() -> None:
    header = HEADER_NL.replace(";Volume", "")
    assert looks_like_fluvius(header)
    with pytest.raises(ReconcileError, match="not a Fluvius export: no volume column"):
        parse_fluvius_csv(header + "\n")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_read_or_refused_in_one_line(text: str) -> None:
    try:
        parsed = parse_fluvius_csv(HEADER_NL + "\n" + text)
    except ReconcileError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(r.import_mwh >= 0 and r.export_mwh >= 0 for r in parsed.rows)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["28-10-2023", "29-10-2023", "26-03-2023", "02-06-2026"]),
            st.integers(0, 94),  # the day's last quarter ends on the next date
            st.sampled_from(["Afname Dag", "Afname Nacht", "Injectie Dag", "Injection Night"]),
            st.sampled_from(["", "0,000", "1,5", "0,067", "12", "x"]),
            st.sampled_from(["Gevalideerd", "Geen verbruik", "Ontbrekend"]),
        ),
        max_size=12,
    )
)
def test_rows_in_the_layout_give_quarter_hours_or_one_line(
    rows: list[tuple[str, int, str, str, str]],
) -> None:
    lines = []
    for day, q, register, volume, status in rows:
        h, m = divmod(q * 15, 60)
        h2, m2 = divmod(q * 15 + 15, 60)
        lines.append(
            f'{day};{h:02d}:{m:02d}:00;{day};{h2:02d}:{m2:02d}:00;="5414";M;D;'
            f"{register};{volume};kWh;{status}"
        )
    try:
        parsed = parse_fluvius_csv("\n".join([HEADER_NL, *lines]) + "\n")
    except ReconcileError as exc:
        assert "\n" not in str(exc)
    else:
        assert parsed.step_ms == Q
        assert len({(r.metering_point, r.start_ms) for r in parsed.rows}) == len(parsed.rows)


def test_reconcile_reads_a_fluvius_file_by_its_header(tmp_path: Path) -> None:
    """A whole Brussels day: the hub's counters step by exactly the operator's figures, so all 96
    quarter-hours agree; the metering point is the EAN."""
    sch = parse_scheme(
        {
            "timezone": "Europe/Brussels",
            "currency": "EUR",
            "mechanism": "sdr",
            "import_tariff": {"price_per_kwh": "0.30"},
            "export_tariff": {"price_per_kwh": "0.10"},
        }
    )
    day = date(2026, 6, 2)
    start = sch.day_start_ms(day)
    lines = [HEADER_NL]
    readings = []
    counter = 5000.0
    for i in range(97):
        t = start + i * Q
        readings.append(
            Reading("grid-meter", i + 1, t, Role.GRID, "g1", {"energy_import_wh": counter})
        )
        if i == 96:
            break
        wh = (i % 7) * 10 + 5
        counter += wh
        a, b = sch.local(t), sch.local(t + Q)
        lines.append(
            f"{a:%d-%m-%Y};{a:%H:%M:%S};{b:%d-%m-%Y};{b:%H:%M:%S};"
            f'="541448820052377134";M;Digitale Meter;Afname Dag;{wh / 1000:.3f}'.replace(".", ",")
            + ";kWh;Gevalideerd"
        )
    (tmp_path / "fluvius.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "map.toml").write_text('[metering_points]\n541448820052377134 = "home-a"\n')
    (tmp_path / "scheme.toml").write_text(
        'timezone = "Europe/Brussels"\ncurrency = "EUR"\nmechanism = "sdr"\n'
        'import_tariff = { price_per_kwh = "0.30" }\nexport_tariff = { price_per_kwh = "0.10" }\n'
    )
    db = tmp_path / "hub.db"
    with Store.open(db, "coop-fluvius", clock=ManualClock(NOW)) as store:
        insert(store, {"home-a": readings})
    result = CliRunner().invoke(
        main,
        [
            "reconcile",
            "--db",
            str(db),
            "--scheme",
            str(tmp_path / "scheme.toml"),
            "--file",
            str(tmp_path / "fluvius.csv"),
            "--map",
            str(tmp_path / "map.toml"),
            "--from",
            "2026-06-02",
            "--to",
            "2026-06-02",
            "--tolerance-wh",
            "0",
            "--tolerance-pct",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "home-a: ok: 96/96 intervals agree (100.0 %)" in result.output
