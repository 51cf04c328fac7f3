"""Consent: grants and their chain, the household ledger, and release at the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.consent_ledger import ConsentLedger, LedgerError
from agent.outbox import Polled
from agent.release import Releaser
from protocol.codec import CodecError, decode, decode_message, encode
from protocol.consent import (
    ChainError,
    ConsentGrant,
    Purpose,
    PurposeGrant,
    Resolution,
    check_follows,
    describe,
    next_version,
    nothing_shared,
)
from protocol.quantities import Role
from protocol.topics import HomeTopic, home_topic
from tests.times import JULY_1_2026_MIDNIGHT_UTC_MS

T0 = JULY_1_2026_MIDNIGHT_UTC_MS
Q = 900_000


def _grant(streams: dict[str, dict[str, PurposeGrant]]) -> ConsentGrant:
    return next_version(nothing_shared("home-1"), streams, T0)


SETTLE_15 = {"grid": {"settlement": PurposeGrant(Resolution.MIN15, 400)}}


def test_a_sealed_chain_and_tampering() -> None:
    g1 = _grant(SETTLE_15)
    g2 = next_version(g1, {}, T0 + 1)
    check_follows(g1, g2)
    assert g2.prev_hash == g1.hash and g2.grant == "g2"
    _, back = decode_message(home_topic("c", "home-1", HomeTopic.CONSENT), encode(g1))
    assert back == g1
    forged = json.loads(encode(g1))
    forged["streams"]["pv"] = {"forecast": {"resolution": "raw", "retention_days": 1}}
    with pytest.raises(CodecError, match="hash does not match"):
        decode(ConsentGrant, json.dumps(forged).encode())
    with pytest.raises(ChainError, match="does not follow"):
        check_follows(g2, g1)
    skipped = next_version(g2, SETTLE_15, T0 + 2)
    with pytest.raises(ChainError):
        check_follows(g1, skipped)


def test_release_resolution_is_the_finest_a_purpose_needs() -> None:
    g = _grant({"grid": {"settlement": PurposeGrant(Resolution.MIN15, 400),
                         "community-stats": PurposeGrant(Resolution.DAILY, 30)},
                "pv": {"forecast": PurposeGrant(Resolution.HOURLY, 30)}})  # fmt: skip
    assert g.release_resolution("grid") is Resolution.MIN15
    assert g.release_resolution(Role.PV) is Resolution.HOURLY
    assert g.release_resolution("wind") is None
    assert g.covers("grid", Purpose.FORECAST) is None
    assert nothing_shared("h").release_resolution("grid") is None
    assert describe(nothing_shared("h")) == ["You share nothing: no reading leaves your home."]
    text = "\n".join(describe(g))
    assert "one total per quarter hour" in text and "kept for 400 days" in text
    assert "Nothing is shared from" in text and "wind turbine" in text


_purpose_grant = st.fixed_dictionaries(
    {
        "resolution": st.sampled_from(["raw", "15min", "hourly", "daily", "weekly", 5, None]),
        "retention_days": st.integers(-5, 5000) | st.floats() | st.text(max_size=3),
    }
)
_hostile: st.SearchStrategy[Any] = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "home": st.sampled_from(["home-1", "Home", "", "a/b", "#"]),
        "grant": st.sampled_from(["g1", "g0", "g2", "x", ""]),
        "version": st.integers(-2, 3) | st.booleans() | st.floats(),
        "issued_ms": st.integers(-1, 2**62),
        "streams": st.dictionaries(
            st.sampled_from(["grid", "pv", "solar", "", "load"]),
            st.dictionaries(
                st.sampled_from([*[p.value for p in Purpose], "marketing"]),
                _purpose_grant,
                max_size=3,
            ),
            max_size=3,
        ),
        "prev_hash": st.sampled_from(["", "00", "x" * 64]),
        "hash": st.sampled_from(["", "ab" * 32]),
    },
    optional={"surplus": st.integers()},
)


@given(_hostile)
@settings(max_examples=400)
def test_hostile_grants_are_refused_with_a_codec_error_never_a_crash(obj: dict[str, Any]) -> None:
    try:
        grant = decode(ConsentGrant, json.dumps(obj).encode())
    except CodecError:
        return
    # Whatever got through is a well-formed grant: known streams and purposes only.
    for role, purposes in grant.streams.items():
        Role(role)
        for p, terms in purposes.items():
            Purpose(p)
            assert 1 <= terms.retention_days <= 3650


def test_household_ledger_appends_and_detects_editing(tmp_path: Path) -> None:
    ledger = ConsentLedger(tmp_path / "consent.jsonl", "home-1")
    assert ledger.current().version == 0
    ledger.grant([Role.GRID], [Purpose.SETTLEMENT], Resolution.MIN15, 400, T0)
    ledger.grant([Role.PV], [Purpose.FORECAST, Purpose.PROMPTS], Resolution.HOURLY, 30, T0 + 1)
    ledger.revoke([Role.PV], [Purpose.PROMPTS], T0 + 2)
    again = ConsentLedger(tmp_path / "consent.jsonl", "home-1")  # as the running agent reads it
    assert [g.version for g in again.history()] == [1, 2, 3]
    assert set(again.current().streams["pv"]) == {"forecast"}
    ledger.revoke([Role.PV], None, T0 + 3)
    assert again.changed()
    assert "pv" not in again.current().streams
    lines = (tmp_path / "consent.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"retention_days":30', '"retention_days":3650')
    (tmp_path / "consent.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="line 2"):
        ConsentLedger(tmp_path / "consent.jsonl", "home-1").current()


def _polls(minutes: int, step_min: int = 1) -> list[list[Polled]]:
    """A meter importing 1.2 kW and a PV inverter, polled every minute from T0."""
    out = []
    for i in range(0, minutes + 1, step_min):
        t = T0 + i * 60_000
        out.append([
            Polled("grid-meter", Role.GRID, t, {"power_w": 1200.0 + i,
                   "energy_import_wh": 5000.0 + 20.0 * i, "energy_export_wh": 10.0}),
            Polled("pv-inverter", Role.PV, t, {"power_w": 300.0, "energy_wh": 100.0 + 5.0 * i}),
        ])  # fmt: skip
    return out


def test_release_drops_ungranted_streams_and_aggregates_granted_ones() -> None:
    releaser = Releaser()
    grant = _grant(SETTLE_15)
    released = [p for cycle in _polls(60) for p in releaser.release(cycle, grant)]
    assert {p.device for p in released} == {"grid-meter"}  # the PV stream is not granted
    # The poll at T0 closes the quarter hour before it and only sets the starting point; then
    # one aggregate per complete quarter hour.
    assert [p.ts_ms for p in released] == [T0 + Q, T0 + 2 * Q, T0 + 3 * Q, T0 + 4 * Q]
    for p in released:
        assert p.period_ms == Q
        assert p.quantities["power_w"] == pytest.approx(1200.0)  # 300 Wh in 15 minutes
        minutes = (p.ts_ms - T0) // 60_000
        assert p.quantities["energy_import_wh"] == 5000.0 + 20.0 * minutes  # exact at its time


def test_raw_grants_pass_polls_through_and_a_changed_grant_restarts_buckets() -> None:
    releaser = Releaser()
    raw = _grant({"grid": {"forecast": PurposeGrant(Resolution.RAW, 30)}})
    cycles = _polls(30)
    out = [p for c in cycles[:5] for p in releaser.release(c, raw)]
    assert len(out) == 5 and all(p.period_ms is None for p in out)
    hourly = next_version(raw, {"grid": {"forecast": PurposeGrant(Resolution.HOURLY, 30)}}, T0)
    assert [p for c in cycles[5:] for p in releaser.release(c, hourly)] == []  # no full hour yet


def test_a_clock_set_back_restarts_the_buckets_instead_of_spanning_backwards() -> None:
    """NTP steps a Pi's clock back three hours 40 minutes into a quarter-hour grant. Before,
    the bucket open at the step left as a 10-minute aggregate and the next with a span of
    minus 3 h 40 min (a reading the outbox refuses, raising out of the poll loop). By hand: the
    poll at 21:00 after the step only sets the starting point, as at start-up; then one
    aggregate per quarter hour."""
    releaser = Releaser()
    grant = _grant(SETTLE_15)
    before = [p for c in _polls(40) for p in releaser.release(c, grant)]
    assert [p.ts_ms for p in before] == [T0 + Q, T0 + 2 * Q]
    back = T0 - 3 * 3_600_000  # 21:00 the day before
    after = []
    for i in range(31):  # the meter's counter goes on rising; only the clock went back
        t = back + i * 60_000
        counters = {"energy_import_wh": 5000.0 + 20.0 * (41 + i), "energy_export_wh": 10.0}
        poll = Polled("grid-meter", Role.GRID, t, {"power_w": 1200.0, **counters})
        after += releaser.release([poll], grant)
    assert [(p.ts_ms, p.period_ms) for p in after] == [(back + Q, Q), (back + 2 * Q, Q)]
    assert all(p.quantities["power_w"] == pytest.approx(1200.0) for p in after)
