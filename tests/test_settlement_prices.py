"""Grid prices per interval: the parsers on hand-worked files, their errors, the grid_prices
table, prices_at, and ``coopwatt-hub prices``.

Every expected value is worked by hand from the file in the test: a local range becomes UTC by
the offset in force (CEST = UTC+2, CET = UTC+1), a price per MWh is a thousandth of that per kWh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.cli.main import main
from hub.settlement.price_store import covers, import_prices, prices_at, stored_prices
from hub.settlement.prices import (
    Format,
    PriceError,
    PriceSeries,
    parse_entsoe_csv,
    parse_entsoe_xml,
    parse_price_csv,
    parse_prices,
    price_steps,
)
from hub.storage.store import Store
from protocol.clock import ManualClock

COOP = "coop-prices"
NOW = 1_780_000_000_000
H = 3_600_000
Q = 900_000


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def d(text: str) -> Decimal:
    return Decimal(text)


# The autumn clock change of 2025 (26 October, 03:00 CEST -> 02:00 CET), 15-minute day-ahead
# prices as the transparency platform's CSV download lists them: local ranges, the hour from
# 02:00 to 03:00 twice (summer time first, winter time second).
OCTOBER = """\
"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]","Currency"
"26.10.2025 01:00 - 26.10.2025 01:15","90.00","EUR"
"26.10.2025 01:15 - 26.10.2025 01:30","88.50","EUR"
"26.10.2025 01:30 - 26.10.2025 01:45","87.25","EUR"
"26.10.2025 01:45 - 26.10.2025 02:00","86.00","EUR"
"26.10.2025 02:00 - 26.10.2025 02:15","85.00","EUR"
"26.10.2025 02:15 - 26.10.2025 02:30","84.00","EUR"
"26.10.2025 02:30 - 26.10.2025 02:45","83.00","EUR"
"26.10.2025 02:45 - 26.10.2025 03:00","82.00","EUR"
"26.10.2025 02:00 - 26.10.2025 02:15","81.00","EUR"
"26.10.2025 02:15 - 26.10.2025 02:30","80.40","EUR"
"26.10.2025 02:30 - 26.10.2025 02:45","79.80","EUR"
"26.10.2025 02:45 - 26.10.2025 03:00","79.20","EUR"
"26.10.2025 03:00 - 26.10.2025 03:15","78.00","EUR"
"26.10.2025 03:15 - 26.10.2025 03:30","77.00","EUR"
"26.10.2025 03:30 - 26.10.2025 03:45","76.00","EUR"
"26.10.2025 03:45 - 26.10.2025 04:00","75.00","EUR"
"""

# The spring clock change of 2025 (30 March, 02:00 CET -> 03:00 CEST), hourly: the skipped hour
# is listed without a price, as the export does; nothing is missing.
SPRING = """\
"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]"
"30.03.2025 00:00 - 30.03.2025 01:00","60.00"
"30.03.2025 01:00 - 30.03.2025 02:00","55.50"
"30.03.2025 02:00 - 30.03.2025 03:00","-"
"30.03.2025 03:00 - 30.03.2025 04:00","58.25"
"""

GENERIC = """\
# Supplier tariff, fetched 2025-12-30
# unit: EUR/MWh
start,end,price
2026-01-01T00:00:00+01:00,2026-01-01T01:00:00+01:00,85.20
2026-01-01T01:00:00+01:00,2026-01-01T01:30:00+01:00,-3.5
2026-01-01T00:30Z,2026-01-01T01:00Z,12
"""

XML = """\
<?xml version="1.0" encoding="utf-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <mRID>1</mRID><type>A44</type>
  <TimeSeries>
    <mRID>1</mRID>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>A03</curveType>
    <Period>
      <timeInterval><start>2026-01-01T23:00Z</start><end>2026-01-02T03:00Z</end></timeInterval>
      <resolution>PT60M</resolution>
      <Point><position>1</position><price.amount>100.5</price.amount></Point>
      <Point><position>2</position><price.amount>95</price.amount></Point>
      <Point><position>4</position><price.amount>-1.25</price.amount></Point>
    </Period>
  </TimeSeries>
</Publication_MarketDocument>
"""


def rows(series: PriceSeries) -> list[tuple[int, int, Decimal]]:
    return [(i.start_ms, i.end_ms, i.price_per_kwh) for i in series.intervals]


# -- ENTSO-E CSV -----------------------------------------------------------------------------


def test_october_15_minute_file_across_the_repeated_hour() -> None:
    series = parse_entsoe_csv(OCTOBER)
    assert series.currency == "EUR"
    assert len(series.intervals) == 16
    # 01:00 CEST is 23:00 UTC the day before; 04:00 CET is 03:00 UTC: four UTC hours.
    assert series.start_ms == utc(2025, 10, 25, 23, 0)
    assert series.end_ms == utc(2025, 10, 26, 3, 0)
    got = rows(series)
    assert got[4] == (utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 0, 15), d("0.085"))  # 02:00 CEST
    assert got[8] == (utc(2025, 10, 26, 1, 0), utc(2025, 10, 26, 1, 15), d("0.081"))  # 02:00 CET
    assert got[11] == (utc(2025, 10, 26, 1, 45), utc(2025, 10, 26, 2, 0), d("0.0792"))
    assert got[12][0] == utc(2025, 10, 26, 2, 0)  # 03:00 CET
    # Hourly means: 00:00Z is the summer pass (85+84+83+82)/4 = 83.5 EUR/MWh, 01:00Z the winter
    # pass (81+80.4+79.8+79.2)/4 = 80.1 EUR/MWh.
    hourly = price_steps(series.intervals, utc(2025, 10, 26, 0), utc(2025, 10, 26, 2), H)
    assert hourly == [d("0.0835"), d("0.0801")]


def test_october_ranges_that_say_their_zone() -> None:
    text = (
        '"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]"\n'
        '"26.10.2025 02:45 (CET) - 26.10.2025 03:00 (CET)","79.20"\n'
        '"26.10.2025 03:00 (CET) - 26.10.2025 03:15 (CET)","78"\n'
    )
    assert rows(parse_entsoe_csv(text))[0][:2] == (utc(2025, 10, 26, 1, 45), utc(2025, 10, 26, 2))
    with pytest.raises(PriceError, match=r"^line 2: .* is not CEST"):
        # In January a time is only ever winter time.
        parse_entsoe_csv(text.replace("26.10.2025 02:45 (CET)", "01.01.2026 02:45 (CEST)"))


def test_spring_hourly_file_missing_nothing() -> None:
    series = parse_entsoe_csv(SPRING)
    # 00:00 CET = 23:00Z, 01:00 CET = 00:00Z, 03:00 CEST = 01:00Z: three hours without a gap.
    assert rows(series) == [
        (utc(2025, 3, 29, 23), utc(2025, 3, 30, 0), d("0.06")),
        (utc(2025, 3, 30, 0), utc(2025, 3, 30, 1), d("0.0555")),
        (utc(2025, 3, 30, 1), utc(2025, 3, 30, 2), d("0.05825")),
    ]
    without_row = "\n".join(line for line in SPRING.splitlines() if '"-"' not in line)
    assert rows(parse_entsoe_csv(without_row)) == rows(series)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SPRING.replace('"-"', '"57.00"'),
            r"^line 4: .* the hour the clocks skip, yet has a price",
        ),
        (
            OCTOBER.replace('"26.10.2025 01:30 - 26.10.2025 01:45","87.25","EUR"\n', ""),
            r"^line 4: prices from 2025-10-25T23:30Z to 2025-10-25T23:45Z are missing",
        ),
        (
            OCTOBER.replace(
                '"26.10.2025 03:00 - 26.10.2025 03:15","78.00","EUR"',
                '"26.10.2025 02:45 - 26.10.2025 03:00","79.20","EUR"',
            ),
            r"^line 14: the interval .* repeats the one at line 13",
        ),
        (OCTOBER.replace('"83.00"', '"83,00"'), r"^line 8: price '83,00' is not a number"),
        (OCTOBER.replace('"83.00"', '"n/e"'), r"^line 8: the price is missing"),
        (OCTOBER.replace('"83.00"', '"NaN"'), r"^line 8: price 'NaN' is not a finite number"),
        (OCTOBER.replace('"83.00"', '"83000000"'), r"^line 8: price .* is beyond"),
        (OCTOBER.replace("01:15 - 26", "01:15 - 27"), r"^line 3: the range .* is not 15, 30 or 60"),
        (
            OCTOBER.replace("01:15 - 26.10.2025 01:30", "01:15 to 01:30"),
            r"^line 3: .* is not a range",
        ),
        (OCTOBER.replace("MTU (CET/CEST)", "MTU (PST)"), r"^line 1: column 'MTU \(PST\)' names no"),
        (OCTOBER.replace("[EUR/MWh]", "[EUR/MW]"), r"^line 1: unit 'EUR/MW' is not a currency"),
        (GENERIC, r"^not an ENTSO-E day-ahead prices export"),
        (  # year 1 in Brussels is before year 1 in UTC: once a traceback (OverflowError)
            OCTOBER.replace(
                "26.10.2025 01:00 - 26.10.2025 01:15", "01.01.0001 00:00 - 01.01.0001 00:15"
            ),
            r"^line 2: 01.01.0001 00:00 is not between 2000 and 2100",
        ),
        ('"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]"\n', r"^the file holds no prices"),
    ],
)
def test_entsoe_csv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_entsoe_csv(text)


# -- ENTSO-E XML -----------------------------------------------------------------------------


def test_xml_publication_market_document_fills_a03_gaps() -> None:
    series = parse_entsoe_xml(XML)
    # Position 3 is left out under curve type A03: it repeats position 2's price.
    assert rows(series) == [
        (utc(2026, 1, 1, 23), utc(2026, 1, 2, 0), d("0.1005")),
        (utc(2026, 1, 2, 0), utc(2026, 1, 2, 1), d("0.095")),
        (utc(2026, 1, 2, 1), utc(2026, 1, 2, 2), d("0.095")),
        (utc(2026, 1, 2, 2), utc(2026, 1, 2, 3), d("-0.00125")),
    ]
    assert parse_prices(XML) == series  # detected as entsoe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (XML.replace("A03", "A01"), r"^TimeSeries 1, Period 1, position 3: no Point"),
        (XML.replace("PT60M", "PT7M"), r"resolution 'PT7M' is not"),
        (XML.replace("<position>4", "<position>9"), r"Point position '9' is not 1 to 4"),
        (XML.replace("-1.25", "abc"), r"position 4: price 'abc' is not a number"),
        (XML.replace("</Period>", ""), r"^not XML"),
        (
            '<!DOCTYPE x [<!ENTITY a "b">]><Publication_MarketDocument/>',
            r"DOCTYPE or entities",
        ),
        (
            "<Acknowledgement_MarketDocument><Reason><code>999</code>"
            "<text>No matching data found for Data item Day-ahead Prices</text></Reason>"
            "</Acknowledgement_MarketDocument>",
            r"^the file is the ENTSO-E API's acknowledgement, not prices: No matching data found",
        ),
        ("<GL_MarketDocument/>", r"not a Publication_MarketDocument but 'GL_MarketDocument'"),
        ("<Publication_MarketDocument/>", r"holds no TimeSeries"),
    ],
)
def test_xml_errors(text: str, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_entsoe_xml(text)


# -- generic CSV -----------------------------------------------------------------------------


def test_generic_csv() -> None:
    series = parse_price_csv(GENERIC)
    assert series.currency == "EUR"
    assert rows(series) == [
        (utc(2025, 12, 31, 23), utc(2026, 1, 1, 0), d("0.0852")),
        (utc(2026, 1, 1, 0), utc(2026, 1, 1, 0, 30), d("-0.0035")),
        (utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1), d("0.012")),
    ]
    # The second hour is half at -3.5 and half at 12 EUR/MWh: 4.25 EUR/MWh.
    steps = price_steps(series.intervals, utc(2025, 12, 31, 23), utc(2026, 1, 1, 1), H)
    assert steps == [d("0.0852"), d("0.00425")]
    in_header = "start,end,price [DKK/kWh]\n2026-01-01T00:00Z,2026-01-01T00:15Z,1.25\n"
    assert parse_prices(in_header) == PriceSeries("DKK", parse_price_csv(in_header).intervals)
    assert parse_price_csv(in_header).intervals[0].price_per_kwh == d("1.25")
    columns = "start,end,price,currency,unit\n2026-01-01T00:00Z,2026-01-01T01:00Z,50,EUR,MWh\n"
    assert parse_price_csv(columns).intervals[0].price_per_kwh == d("0.05")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GENERIC.replace("# unit: EUR/MWh\n", ""), r"^the currency and unit are not stated"),
        (
            GENERIC.replace("+01:00,2026-01-01T01:00:00+01:00", ",2026-01-01T01:00:00+01:00"),
            r"^line 4: start '2026-01-01T00:00:00' has no UTC offset",
        ),
        (GENERIC.replace("-3.5", "cheap"), r"^line 5: price 'cheap' is not a number"),
        (GENERIC.replace("-3.5", ""), r"^line 5: the price is missing"),
        (GENERIC.replace("00:30Z,", "00:45Z,"), r"^line 6: prices from .* are missing"),
        (GENERIC.replace("start,end,price", "from,to,price"), r"^line 3: no 'start' column"),
        (GENERIC.replace("EUR/MWh", "EUR/MW"), r"^line 2: unit 'EUR/MW'"),
        (
            GENERIC.replace(
                "2026-01-01T01:00:00+01:00,2026-01-01T01:30",
                "2026-01-01T00:30:00+01:00,2026-01-01T01:30",
            ),
            r"^line 5: the interval .* overlaps the one at line 4",
        ),
        ("", r"^no header row"),
        ("start,end,price [EUR/MWh]\n", r"^the file holds no prices"),
        ("start,end,price [EUR/MWh]\n2026-01-01T01:00Z,2026-01-01T00:00Z,1\n", r"ends before"),
    ],
)
def test_generic_csv_errors(text: str, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_price_csv(text)


# -- hypothesis: anything gives a clear error or a valid series ------------------------------


def check_valid_or_clear(text: str) -> None:
    formats: tuple[Format | None, ...] = ("csv", "entsoe", None)
    for fmt in formats:
        try:
            series = parse_prices(text, fmt)
        except PriceError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message
            continue
        assert series.intervals
        assert len(series.currency) == 3 and series.currency.isupper()
        for a, b in zip(series.intervals, series.intervals[1:], strict=False):
            assert a.end_ms == b.start_ms
        assert all(i.start_ms < i.end_ms and i.price_per_kwh.is_finite() for i in series.intervals)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check_valid_or_clear(text)


_cell = st.text(alphabet='0123456789.:-+ TZ()CESTn/e,"', max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(
        [
            '"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]"',
            "start,end,price [EUR/MWh]",
            "# unit: EUR/kWh\nstart,end,price",
        ]
    ),
    lines=st.lists(
        st.one_of(
            _cell,
            st.builds(
                lambda a, b, p: f'"{a} - {b}","{p}"',
                st.sampled_from(
                    [
                        "26.10.2025 02:00",
                        "30.03.2025 02:00",
                        "01.01.2026 00:00",
                        "01.01.0001 00:00 (CET)",
                    ]
                ),
                st.sampled_from(
                    ["26.10.2025 03:00", "30.03.2025 03:00", "01.01.2026 01:00", "31.12.9999 23:45"]
                ),
                st.sampled_from(["1", "-", "", "x", "1e5", "-0"]),
            ),
            st.builds(
                lambda a, b, p: f"{a},{b},{p}",
                st.sampled_from(
                    ["2026-01-01T00:00Z", "2026-01-01T01:00+01:00", "2026-13-01T00:00Z"]
                ),
                st.sampled_from(["2026-01-01T01:00Z", "2026-01-01T00:00Z", "junk"]),
                st.sampled_from(["1", "-", "", "Infinity", "2.5"]),
            ),
        ),
        max_size=8,
    ),
)
def test_near_miss_files(header: str, lines: list[str]) -> None:
    check_valid_or_clear("\n".join([header, *lines]))


# -- the store -------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    Store.open(path, COOP, clock=ManualClock(NOW)).close()
    return path


def test_store_prices_at_and_replacement(db: Path) -> None:
    with Store.open(db, COOP, clock=ManualClock(NOW)) as store:
        assert import_prices(store, parse_entsoe_csv(OCTOBER), "october.csv", NOW) == 16
        start = utc(2025, 10, 25, 23)
        assert prices_at(store, start, start + 2 * Q, Q) == [d("0.09"), d("0.0885")]
        assert prices_at(store, utc(2025, 10, 26, 0), utc(2025, 10, 26, 2), H) == [
            d("0.0835"),
            d("0.0801"),
        ]
        with pytest.raises(
            PriceError, match=r"^no price for 2025-10-26T03:00Z to 2025-10-26T04:00Z"
        ):
            prices_at(store, utc(2025, 10, 26, 2), utc(2025, 10, 26, 4), H)
        # An explicit fallback prices the uncovered hour; the covered one is untouched.
        assert prices_at(
            store, utc(2025, 10, 26, 2), utc(2025, 10, 26, 4), H, fallback_per_kwh=d("0.25")
        ) == [d("0.0765"), d("0.25")]
        assert covers(store, start, utc(2025, 10, 26, 3))
        assert not covers(store, start, utc(2025, 10, 26, 4))
        # A newer hourly import of the first UTC hour replaces its four quarters.
        hourly = "start,end,price [EUR/MWh]\n2025-10-25T23:00Z,2025-10-26T00:00Z,70\n"
        import_prices(store, parse_price_csv(hourly), "fix.csv", NOW + 1)
        assert len(stored_prices(store, start, utc(2025, 10, 26, 3))) == 13
        assert prices_at(store, start, start + H, H) == [d("0.07")]
        dkk = "start,end,price [DKK/MWh]\n2025-10-25T23:00Z,2025-10-26T00:00Z,70\n"
        with pytest.raises(PriceError, match=r"holds prices in EUR, and this file is in DKK"):
            import_prices(store, parse_price_csv(dkk), "dkk.csv", NOW)


# -- the command line ------------------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"clock": ManualClock(NOW)})


def assert_clean_error(result: Result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:"), result.output
    assert needle in lines[-1], result.output


def test_cli_import_and_show(db: Path, tmp_path: Path) -> None:
    file = tmp_path / "october.csv"
    file.write_text(OCTOBER, encoding="utf-8-sig")
    result = run("prices", "import", str(file), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "imported 16 prices in EUR, 2025-10-25T23:00Z to 2025-10-26T03:00Z" in result.output
    shown = run(
        "prices",
        "show",
        "--db",
        str(db),
        "--from",
        "2025-10-26T00:45Z",
        "--to",
        "2025-10-26T04:00Z",
    )
    assert shown.exit_code == 0, shown.output
    out = shown.output.splitlines()
    assert out[0] == "start,end,price [EUR/kWh]"
    assert out[1] == "2025-10-26T00:45Z,2025-10-26T01:00Z,0.082"
    assert out[2] == "2025-10-26T01:00Z,2025-10-26T01:15Z,0.081"
    assert out[-1] == "# missing 2025-10-26T03:00Z to 2025-10-26T04:00Z"


def test_cli_errors(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(OCTOBER.replace('"83.00"', '"x"'))
    assert_clean_error(run("prices", "import", str(bad), "--db", str(db)), "line 8: price 'x'")
    good = tmp_path / "october.csv"
    good.write_text(OCTOBER)
    assert_clean_error(
        run("prices", "import", str(good), "--db", str(db), "--format", "csv"),
        "no 'start' column",
    )
    assert_clean_error(
        run("prices", "import", str(tmp_path / "none.csv"), "--db", str(db)), "cannot read"
    )
    binary = tmp_path / "prices.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00junk")
    assert_clean_error(run("prices", "import", str(binary), "--db", str(db)), str(binary))
    assert_clean_error(
        run("prices", "import", str(good), "--db", str(tmp_path / "missing.db")), "missing.db"
    )
    assert_clean_error(
        run("prices", "show", "--db", str(db), "--from", "2025-10-26", "--to", "2025-10-27"),
        "no prices stored between 2025-10-26T00:00Z and 2025-10-27T00:00Z",
    )
    result = run("prices", "show", "--db", str(db), "--from", "yesterday", "--to", "2025-10-27")
    assert result.exit_code == 2 and "is not a date or ISO 8601 time" in result.output
    with Store.open(db, COOP, clock=ManualClock(NOW)) as store:
        assert stored_prices(store, 0, 2**62) == []  # nothing stored by the failed imports


def test_october_hourly_file_without_zone_labels() -> None:
    text = (
        '"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]"\n'
        '"26.10.2025 01:00 - 26.10.2025 02:00","10"\n'
        '"26.10.2025 02:00 - 26.10.2025 03:00","20"\n'
        '"26.10.2025 02:00 - 26.10.2025 03:00","30"\n'
        '"26.10.2025 03:00 - 26.10.2025 04:00","40"\n'
    )
    # 01:00 CEST = 23:00Z; 02:00 CEST = 00:00Z; 02:00 CET = 01:00Z; 03:00 CET = 02:00Z.
    assert rows(parse_entsoe_csv(text)) == [
        (utc(2025, 10, 25, 23), utc(2025, 10, 26, 0), d("0.01")),
        (utc(2025, 10, 26, 0), utc(2025, 10, 26, 1), d("0.02")),
        (utc(2025, 10, 26, 1), utc(2025, 10, 26, 2), d("0.03")),
        (utc(2025, 10, 26, 2), utc(2025, 10, 26, 3), d("0.04")),
    ]


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(utc(2020, 1, 1) // Q, utc(2030, 1, 1) // Q),
    parts=st.lists(
        st.tuples(st.sampled_from([1, 2, 4]), st.decimals(-500, 4000, places=2)),
        min_size=1,
        max_size=30,
    ),
    per_kwh=st.booleans(),
)
def test_a_written_series_reads_back_exactly(
    start: int, parts: list[tuple[int, Decimal]], per_kwh: bool
) -> None:
    unit = "EUR/kWh" if per_kwh else "EUR/MWh"
    lines = [f"# unit: {unit}", "start,end,price"]
    expected = []
    t = start * Q
    for quarters, price in parts:
        end = t + quarters * Q
        written = price / 1000 if per_kwh else price  # price is per MWh
        lines.append(f"{_iso(t)},{_iso(end)},{written}")
        expected.append((t, end, price / 1000))
        t = end
    assert rows(parse_price_csv("\n".join(lines))) == expected


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_cli_long_file_shows_progress(db: Path, tmp_path: Path) -> None:
    start = utc(2026, 1, 1)
    lines = ["start,end,price [EUR/MWh]"]
    lines += [f"{_iso(start + i * Q)},{_iso(start + (i + 1) * Q)},{i % 97}" for i in range(6000)]
    file = tmp_path / "long.csv"
    file.write_text("\n".join(lines))
    result = run("prices", "import", str(file), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "storing" in result.output
    assert (
        "imported 6000 prices in EUR, 2026-01-01T00:00Z to 2026-03-04T12:00Z" in result.output
    )  # 62.5 days
    with Store.open(db, COOP, clock=ManualClock(NOW)) as store:
        # Quarter 4 costs 4 EUR/MWh, quarters 0-3 cost 0..3: their hour's mean is 1.5 EUR/MWh.
        assert prices_at(store, start, start + 2 * H, H) == [d("0.0015"), d("0.0055")]
