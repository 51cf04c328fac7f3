"""What the home keeps of what the hub sent it (agent/mailbox.py): statements and receipts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mailbox import Mailbox
from protocol.codec import encode
from protocol.payloads import Receipt, Statement, StatementLine
from tests.times import JULY_1_2026_0600_UTC_MS

T0 = JULY_1_2026_0600_UTC_MS


def statement(period: str, issued_ms: int, *, home: str = "home-7", final: bool = False) -> bytes:
    # Bought 12 kWh from neighbours at 0.20 (240 c), 30 kWh from the grid at 0.30 (900 c),
    # sold 5 kWh to neighbours at 0.20 (-100 c): 1,040 c; grid-only would be 42 kWh x 0.30 less
    # 5 kWh x 0.08 export = 1,260 - 40 = 1,220 c, so the saving is 180 c.
    lines = [
        StatementLine("import-neighbours", 12_000, 240),
        StatementLine("import-grid", 30_000, 900),
        StatementLine("export-neighbours", -5_000, -100),
    ]
    s = Statement(home, period, issued_ms, final, "EUR", 2, "mmr", lines, 1040, 1220, 180,
                  2976, 0, 0)  # fmt: skip
    return encode(s)


def test_every_month_is_kept_and_a_newer_issue_replaces_an_older_one(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "mailbox", "home-7")
    assert box.statements() == []
    assert box.keep_statement(statement("2026-06", T0)) is not None
    assert box.keep_statement(statement("2026-07", T0 + 10)) is not None
    # The broker retains only the latest: June's final issue comes later, July's old copy again.
    assert box.keep_statement(statement("2026-06", T0 + 20, final=True)) is not None
    assert box.keep_statement(statement("2026-07", T0 - 5)) is None  # older than what is kept
    kept = box.statements()
    assert [(s.period, s.issued_ms, s.final) for s in kept] == [
        ("2026-07", T0 + 10, False),
        ("2026-06", T0 + 20, True),
    ]
    # The page opens the same folder without a home.
    assert [s.period for s in Mailbox(tmp_path / "mailbox").statements()] == ["2026-07", "2026-06"]


def test_another_homes_or_a_malformed_message_is_not_kept(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "mailbox", "home-7")
    assert box.keep_statement(statement("2026-06", T0, home="home-8")) is None
    assert box.keep_statement(b'{"v":1,"home":"home-7"}') is None
    assert box.keep_receipt(encode(Receipt("home-8", "consent-recorded", T0, 1))) is None
    assert box.statements() == [] and box.receipts() == []


def test_receipts_are_kept_once_newest_first(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "mailbox", "home-7")
    first = encode(Receipt("home-7", "consent-recorded", T0, 1))
    erased = encode(Receipt("home-7", "data-erased", T0 + 1000, 2, erased={"pv": 96}))
    assert box.keep_receipt(first) is not None
    assert box.keep_receipt(erased) is not None
    assert box.keep_receipt(first) is None  # QoS 1 delivered it twice
    assert [(r.kind, r.version) for r in box.receipts()] == [
        ("data-erased", 2),
        ("consent-recorded", 1),
    ]
    assert box.receipts()[0].erased == {"pv": 96}


def test_a_receipts_line_cut_short_does_not_hide_the_others(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "mailbox", "home-7")
    box.keep_receipt(encode(Receipt("home-7", "consent-recorded", T0, 1)))
    with (tmp_path / "mailbox" / "receipts.jsonl").open("ab") as f:
        f.write(b'{"v":1,"home":"home-7","ki')  # a power cut mid-write
    assert [r.version for r in box.receipts()] == [1]


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=400) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_kept_or_refused_never_an_exception(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        box = Mailbox(Path(d), "home-7")
        assert box.keep_statement(payload) is None
        assert box.keep_receipt(payload) is None
        assert box.statements() == [] and box.receipts() == []
