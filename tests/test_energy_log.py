"""The home's own energy log (agent/energy_log.py), from hand-worked meter counters.

The expected energies are differences of the counters the tests feed in, worked out by hand in
the comments; a property test checks that, whatever the polls and restarts, the log's total is
the counters' last minus first value (a meter's own arithmetic)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.energy_log import SLOT_MS, EnergyLog, read_energy
from agent.outbox import Polled
from protocol.quantities import Role
from tests.times import JULY_1_2026_0600_UTC_MS

T0 = JULY_1_2026_0600_UTC_MS  # a quarter-hour boundary
MIN = 60_000


def grid(ts: int, imp: float, exp: float, power: float = 0.0) -> Polled:
    return Polled("grid-meter", Role.GRID, ts,
                  {"energy_import_wh": imp, "energy_export_wh": exp, "power_w": power})  # fmt: skip


def pv(ts: int, wh: float) -> Polled:
    return Polled("pv-inverter", Role.PV, ts, {"energy_wh": wh, "power_w": 1.0})


def test_energy_falls_in_the_slot_where_the_counter_rose(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 1000.0, 50.0), pv(T0, 400.0)])
    log.record([grid(T0 + 5 * MIN, 1010.0, 50.0), pv(T0 + 5 * MIN, 450.0)])
    log.record([grid(T0 + 14 * MIN, 1030.0, 60.0), pv(T0 + 14 * MIN, 520.0)])
    # Next slot: import +10, export +100, pv +200.
    log.record([grid(T0 + 16 * MIN, 1040.0, 160.0), pv(T0 + 16 * MIN, 720.0)])
    log.close()
    first, second = read_energy(path, [T0, T0 + SLOT_MS, T0 + 2 * SLOT_MS])
    # Slot 1: import 1030-1000 = 30, export 60-50 = 10, pv 520-400 = 120,
    # own generation used 120-10 = 110, consumed 30+120-10 = 140.
    assert (first.import_wh, first.export_wh, first.pv_wh) == (30.0, 10.0, 120.0)
    assert (first.self_used_wh, first.consumed_wh) == (110.0, 140.0)
    # Slot 2: export (100) exceeds generation (200)? no: used 200-100 = 100; consumed 10+200-100.
    assert (second.import_wh, second.export_wh, second.pv_wh) == (10.0, 100.0, 200.0)
    assert (second.self_used_wh, second.consumed_wh) == (100.0, 110.0)
    assert first.complete and second.complete


def test_self_use_is_worked_out_per_slot_not_over_the_span(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 0.0, 0.0), pv(T0, 0.0)])
    # Slot 1: pv 1000, export 900 -> used 100. Slot 2: pv 0, export 0, import 500 -> used 0.
    log.record([grid(T0 + 14 * MIN, 0.0, 900.0), pv(T0 + 14 * MIN, 1000.0)])
    log.record([grid(T0 + 29 * MIN, 500.0, 900.0), pv(T0 + 29 * MIN, 1000.0)])
    # Slot 3: export 300 with no generation (a battery, or a misread): used stays 0, not -300.
    log.record([grid(T0 + 44 * MIN, 500.0, 1200.0), pv(T0 + 44 * MIN, 1000.0)])
    log.close()
    (span,) = read_energy(path, [T0, T0 + 3 * SLOT_MS])
    assert span.self_used_wh == 100.0
    assert (span.import_wh, span.export_wh, span.pv_wh) == (500.0, 1200.0, 1000.0)


def test_a_restarted_agent_takes_up_from_the_counters_on_file(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 100.0, 0.0)])
    log.record([grid(T0 + 2 * MIN, 120.0, 0.0)])
    log.close()  # the agent stops; the meter goes on counting
    log = EnergyLog(path)
    log.record([grid(T0 + 50 * MIN, 200.0, 0.0)])  # two slots later
    log.close()
    spans = read_energy(path, [T0 + k * SLOT_MS for k in range(5)])
    # 120-100 = 20 before the stop; 200-120 = 80 where readings resume; nothing is lost.
    assert [s.import_wh for s in spans] == [20.0, 0.0, 0.0, 80.0]
    assert [s.complete for s in spans] == [True, False, False, True]


def test_the_same_slot_written_again_after_a_restart_adds_not_replaces(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 100.0, 0.0)])
    log.record([grid(T0 + 3 * MIN, 130.0, 0.0)])  # written a minute after the slot's first
    log.close()
    log = EnergyLog(path)
    log.record([grid(T0 + 4 * MIN, 135.0, 0.0)])
    log.record([grid(T0 + 10 * MIN, 150.0, 0.0)])
    log.close()
    (span,) = read_energy(path, [T0, T0 + SLOT_MS])
    assert span.import_wh == 50.0  # 150 - 100


def test_a_counter_that_goes_backwards_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 5000.0, 0.0)])
    log.record([grid(T0 + MIN, 5010.0, 0.0)])
    log.record([grid(T0 + 2 * MIN, 3.0, 0.0)])  # a new meter
    log.record([grid(T0 + 3 * MIN, 8.0, 0.0)])
    log.close()
    (span,) = read_energy(path, [T0, T0 + SLOT_MS])
    assert span.import_wh == 15.0  # 10 on the old meter, 5 on the new


def test_spans_before_now_without_readings_are_incomplete_and_a_missing_file_is_zero(
    tmp_path: Path,
) -> None:
    missing = read_energy(tmp_path / "none.db", [T0, T0 + SLOT_MS])
    assert missing[0].import_wh == 0.0 and not missing[0].complete
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    log.record([grid(T0, 0.0, 0.0)])
    log.record([grid(T0 + 10 * MIN, 10.0, 0.0)])
    log.close()
    # An hour span whose first slot has data and the rest lies in the future: complete so far.
    (hour,) = read_energy(path, [T0, T0 + 4 * SLOT_MS], now_ms=T0 + 11 * MIN)
    assert hour.complete and hour.import_wh == 10.0
    (later,) = read_energy(path, [T0, T0 + 4 * SLOT_MS], now_ms=T0 + 4 * SLOT_MS)
    assert not later.complete


def test_only_the_last_minute_is_unwritten_while_the_agent_runs(tmp_path: Path) -> None:
    path = tmp_path / "energy.db"
    log = EnergyLog(path)
    for k in range(8):  # every 10 s from T0 to T0 + 70 s: 0, 1, ..., 7 Wh
        log.record([grid(T0 + k * 10_000, float(k), 0.0)])
    # Written at T0 + 60 s (a minute after the slot's first reading): 6 Wh on file.
    (span,) = read_energy(path, [T0, T0 + SLOT_MS])
    assert span.import_wh == 6.0
    log.close()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(1, 40 * MIN),  # time to the next poll
            st.floats(0, 500, allow_nan=False),  # what the meter counted meanwhile
            st.booleans(),  # the agent restarts before this poll
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_log_adds_up_to_the_meters_own_difference(steps: list[tuple[int, float, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "energy.db"
        log = EnergyLog(path)
        t, counter = T0, 1000.0
        log.record([grid(t, counter, 0.0)])
        for dt, wh, restart in steps:
            if restart:
                log.close()
                log = EnergyLog(path)
            t += dt
            counter += wh
            log.record([grid(t, counter, 0.0)])
        log.close()
        end = t - t % SLOT_MS + SLOT_MS
        (span,) = read_energy(path, [T0, end])
        assert abs(span.import_wh - (counter - 1000.0)) < 1e-6
