"""hub.ops.export: stable columns in glossary order, rows by home, device, seq, empty if absent."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hub.ops.export import CSV_HEADER, export_csv
from hub.storage.store import Store
from protocol.payloads import Reading, ReadingBatch
from protocol.quantities import GLOSSARY, Role
from tests.times import ROUND_SECOND_MS

T0 = ROUND_SECOND_MS


def _store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "hub.db", "coop-x")
    store.insert_batches(
        [
            (
                "home-b",
                ReadingBatch(
                    "home-b",
                    T0,
                    [Reading("meter", 2, T0 + 2, Role.GRID, "g1", {"energy_import_wh": 7.25})],
                ),
            ),
            (
                "home-a",
                ReadingBatch(
                    "home-a",
                    T0,
                    [
                        Reading(
                            "pv",
                            3,
                            T0 + 3,
                            Role.PV,
                            "g1",
                            {"power_w": 10, "state": "mppt"},
                            period_ms=900_000,
                        ),
                        Reading("pv", 1, T0 + 1, Role.PV, "g1", {"power_w": 1.5, "energy_wh": 3.0}),
                        Reading(
                            "meter",
                            9,
                            T0 + 9,
                            Role.GRID,
                            "g2",
                            {"power_w": -200.0, "voltage_v": 231.5, "frequency_hz": 50.01},
                        ),
                    ],
                ),
            ),
        ],
        T0,
    )
    return store


def test_header_is_fixed_then_glossary_order() -> None:
    assert CSV_HEADER[:5] == ("home", "device", "role", "seq", "ts_ms")
    assert CSV_HEADER[5:-1] == tuple(GLOSSARY)
    assert CSV_HEADER[-1] == "period_ms"
    assert CSV_HEADER[5:-1] == (
        "power_w",
        "energy_import_wh",
        "energy_export_wh",
        "energy_wh",
        "voltage_v",
        "current_a",
        "frequency_hz",
        "power_factor",
        "temperature_c",
        "wind_speed_m_s",
        "state",
        # Added with P1/SML smart meters (hub migration 12): existing columns keep their place.
        "energy_import_t1_wh",
        "energy_import_t2_wh",
        "energy_export_t1_wh",
        "energy_export_t2_wh",
        "voltage_l1_v",
        "voltage_l2_v",
        "voltage_l3_v",
        "current_l1_a",
        "current_l2_a",
        "current_l3_a",
        "power_l1_w",
        "power_l2_w",
        "power_l3_w",
    )


NEW = "," * 13  # the 13 quantities hub migration 12 added, empty on these readings


def test_export_csv_content_and_order(tmp_path: Path) -> None:
    out = io.StringIO()
    with _store(tmp_path) as store:
        assert export_csv(store, out) == 4
    text = out.getvalue()
    assert text.splitlines() == [
        "home,device,role,seq,ts_ms,power_w,energy_import_wh,energy_export_wh,energy_wh,"
        "voltage_v,current_a,frequency_hz,power_factor,temperature_c,wind_speed_m_s,state,"
        "energy_import_t1_wh,energy_import_t2_wh,energy_export_t1_wh,energy_export_t2_wh,"
        "voltage_l1_v,voltage_l2_v,voltage_l3_v,current_l1_a,current_l2_a,current_l3_a,"
        "power_l1_w,power_l2_w,power_l3_w,period_ms",
        f"home-a,meter,grid,9,{T0 + 9},-200.0,,,,231.5,,50.01,,,,,{NEW}",
        f"home-a,pv,pv,1,{T0 + 1},1.5,,,3.0,,,,,,,{NEW},",
        f"home-a,pv,pv,3,{T0 + 3},10.0,,,,,,,,,,mppt{NEW},900000",
        f"home-b,meter,grid,2,{T0 + 2},,7.25,,,,,,,,,{NEW},",
    ]
    assert "\r" not in text
    # Every row has every column, whatever it carried.
    parsed = list(csv.reader(io.StringIO(text)))
    assert {len(row) for row in parsed} == {len(CSV_HEADER)}


def test_export_one_home_and_an_empty_store(tmp_path: Path) -> None:
    out = io.StringIO()
    with _store(tmp_path) as store:
        assert export_csv(store, out, home="home-b") == 1
    assert out.getvalue().splitlines()[1].startswith("home-b,meter,grid,2,")

    empty = io.StringIO()
    with Store.open(tmp_path / "empty.db", "coop-y") as store:
        assert export_csv(store, empty) == 0
    assert empty.getvalue() == ",".join(CSV_HEADER) + "\n"
