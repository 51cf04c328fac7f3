"""The outbox keeps readings until acked and numbers them monotonically across restarts."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import Outbox, Polled
from protocol.quantities import Role

T0 = 1_782_900_000_000


def _cycle(t: int) -> list[Polled]:
    return [
        Polled("grid-meter", Role.GRID, t, {"power_w": 100.0, "energy_import_wh": 5.0 + t % 7}),
        Polled("pv-inverter", Role.PV, t, {"power_w": 50.0, "state": "mppt"}),
    ]


def test_seq_survives_restart_and_acked_rows_leave(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    first = box.add(_cycle(T0), "g1")
    assert [(r.device, r.seq) for r in first] == [("grid-meter", 1), ("pv-inverter", 1)]
    box.add(_cycle(T0 + 10_000), "g1")
    box.close()

    box = Outbox(tmp_path / "outbox.db")  # a restart: seq continues, nothing is lost
    third = box.add(_cycle(T0 + 20_000), "g1")
    assert [r.seq for r in third] == [3, 3]
    assert box.count() == 6
    assert box.remove({"grid-meter": [1, 2], "pv-inverter": [2, 99]}) == 3
    left = box.pending(100)
    assert [(r.device, r.seq) for r in left] == [
        ("pv-inverter", 1),
        ("grid-meter", 3),
        ("pv-inverter", 3),
    ]
    assert left[0].quantities == {"power_w": 50.0, "state": "mppt"}
    assert box.last_seq("grid-meter") == 3


def test_pending_skips_what_is_in_flight_and_respects_limit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    for i in range(5):
        box.add(_cycle(T0 + i * 1000), "g1")
    assert len(box.pending(3)) == 3
    rest = box.pending(100, after={"grid-meter": 4, "pv-inverter": 2})
    assert [(r.device, r.seq) for r in rest] == [
        ("pv-inverter", 3),
        ("pv-inverter", 4),
        ("grid-meter", 5),
        ("pv-inverter", 5),
    ]


@given(st.lists(st.sets(st.integers(1, 30)), max_size=6))
@settings(max_examples=40, deadline=None)
def test_remove_never_loses_an_unacked_reading(acks: list[set[int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        box = Outbox(Path(d) / "o.db")
        for i in range(30):
            box.add([Polled("m", Role.GRID, T0 + i, {"power_w": float(i)})], "g1")
        acked: set[int] = set()
        for a in acks:
            box.remove({"m": sorted(a)})
            acked |= a
        assert {r.seq for r in box.pending(1000)} == set(range(1, 31)) - acked
        box.close()
