"""The agent's local socket for the household page (agent/local_link.py), over a real agent.

The rig is the prompts rig (tests/test_prompts_mqtt.py): a real Mosquitto, the hub's ingest,
consent and prompts service, an agent with an S0 meter on gpiozero's MockFactory and a
ManualClock. The page's side is the real client on the real socket. What the hub received is
read from the hub's own database; what the home kept, from its folder."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from agent.consent_ledger import ConsentLedger
from agent.local_link import AgentLink, LinkError
from agent.mailbox import Mailbox
from protocol.codec import encode
from protocol.consent import Purpose, Resolution
from protocol.payloads import Statement, StatementLine
from protocol.quantities import Role
from protocol.topics import HomeTopic, HubTopic, home_topic, hub_topic
from tests.harness import wait_for
from tests.test_prompts_mqtt import HOUR, T0, Rig, rig, sunny_forecast

__all__ = ["rig"]  # the fixture, imported


def _link(r: Rig) -> AgentLink:
    path = r.agent.config.data_dir / "agent.sock"
    wait_for(path.exists, what="the agent's socket")
    return AgentLink(path)


def test_the_page_sees_the_agents_state_and_its_answer_reaches_the_hub(rig: Rig) -> None:
    r = rig
    link = _link(r)
    sock = r.agent.config.data_dir / "agent.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600  # only the coopwatt user may ask
    state = link.state()
    assert (state.coop, state.home, state.timezone) == (r.coop, "home-1", "Europe/Amsterdam")
    assert state.connected and state.prompts_shared
    assert [(d.name, d.role) for d in state.devices] == [("heat-pump", "load")]
    assert state.advice.level is None and state.advice.runs == []  # no advice yet

    wait_for(lambda: r.service.db.appliances().get("home-1") is not None, what="appliances")
    r.operator.publish(hub_topic(r.coop, HubTopic.FORECAST), encode(sunny_forecast(r.coop, T0)),
                       retain=True)  # fmt: skip
    wait_for(lambda: r.agent.prompts.board.prompts is not None, what="prompts at the home")
    prompts = r.agent.prompts.board.prompts
    assert prompts is not None
    washer = next(a for a in prompts.appliances if a.appliance == "washing-machine")
    state = link.state()
    # What the page shows is the prompts the hub sent: the washer's windows, to the ms.
    run = next(x for x in state.advice.runs if x.appliance == "washing-machine")
    assert run.windows == [[w.start_ms, w.end_ms] for w in washer.windows]
    assert state.advice.level == prompts.level_at(T0) and state.advice.levels == prompts.levels

    # "Will do" for the washer, from the page: the button's own feedback, at the hub.
    result = link.answer("washing-machine", "accepted")
    assert result.ok and result.sent and result.feedback is not None
    wait_for(lambda: r.service.db.feedback_count("home-1") == 1, what="feedback at the hub")
    start = washer.windows[0].start_ms
    assert r.service.db.answers("home-1", "washing-machine", start - HOUR, start + HOUR) == [
        "accepted"
    ]
    assert next(x for x in link.state().advice.runs if x.appliance == "washing-machine").answer == (
        "accepted"
    )
    # An appliance the home has no advice for: said in words, nothing sent.
    missing = link.answer("sauna", "accepted")
    assert not missing.ok and "no current advice" in missing.message
    assert r.service.db.feedback_count("home-1") == 1


def test_statements_and_receipts_from_the_hub_are_kept_at_home(rig: Rig) -> None:
    r = rig
    # The hub's consent service answered the rig's grant with a receipt.
    box = Mailbox(r.agent.config.data_dir / "mailbox")
    wait_for(lambda: any(x.kind == "consent-recorded" for x in box.receipts()), what="receipt")
    # A revocation: recorded, and the hub's erasure (nothing stored yet) also answered.
    ConsentLedger(r.agent.config.consent_path, "home-1").revoke(
        [Role.LOAD], [Purpose.PROMPTS], T0 + 1000
    )
    wait_for(lambda: any(x.version == 2 for x in box.receipts()), what="the second receipt")
    # A statement published retained, as `coopwatt-hub publish-statements` does.
    lines = [StatementLine("import-neighbours", 12_000, 240),
             StatementLine("import-grid", 30_000, 900)]  # fmt: skip
    s = Statement("home-1", "2026-06", T0, True, "EUR", 2, "mmr", lines, 1140, 1260, 120, 2880,
                  0, 0)  # fmt: skip
    r.operator.publish(home_topic(r.coop, "home-1", HomeTopic.STATEMENT), encode(s), retain=True)
    wait_for(lambda: box.statements() == [s], what="the statement at home")
    r.operator.publish(home_topic(r.coop, "home-1", HomeTopic.STATEMENT), b"", retain=True)


def test_the_page_is_told_when_the_agent_is_not_running(rig: Rig, tmp_path: Path) -> None:
    link = _link(rig)
    assert link.state().home == "home-1"
    with pytest.raises(LinkError, match="not running"):
        AgentLink(tmp_path / "nothing.sock").state()
    rig.agent.stop()
    wait_for(lambda: not (rig.agent.config.data_dir / "agent.sock").exists(), what="closed")
    with pytest.raises(LinkError, match="not running"):
        link.state()


def test_two_writers_of_the_ledger_make_versions_in_a_row(tmp_path: Path) -> None:
    path = tmp_path / "consent.jsonl"
    barrier = threading.Barrier(4)

    def writer(k: int) -> None:
        ledger = ConsentLedger(path, "home-1")  # each its own reader, like the CLI and the page
        barrier.wait()
        for i in range(10):
            role = [Role.GRID, Role.PV][(k + i) % 2]
            ledger.grant([role], [Purpose.FORECAST], Resolution.MIN15, 30 + k, T0 + i)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = ConsentLedger(path, "home-1").history()  # reading checks the hash chain
    assert [g.version for g in history] == list(range(1, 41))


def test_opening_the_socket_leaves_the_process_umask_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The umask is the whole process's: agents started side by side in threads (the demo) once
    left it at 0177, and every folder made afterwards was unusable (0600)."""
    from agent.local_link import AnswerResult, LinkServer

    calls: list[int] = []
    real = os.umask

    def spy(mask: int) -> int:
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, "umask", spy)
    server = LinkServer(
        tmp_path / "agent.sock",
        lambda: pytest.fail("not asked"),
        lambda appliance, action: AnswerResult(False, "no"),
    )
    try:
        assert calls == []
        assert stat.S_IMODE(os.stat(tmp_path / "agent.sock").st_mode) == 0o600
    finally:
        server.close()


def test_the_socket_waits_for_a_connection_without_waking_and_close_still_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socketserver's serve_forever looks for a shutdown every 0.5 s: 120 wakeups a minute of a
    Pi that has nothing else to do then (issue 22's CPU target). The link's thread must wait in
    its selector with no timeout, and close() must still end it at once."""
    import selectors
    import socketserver

    from agent.local_link import AnswerResult, LinkServer

    timeouts: list[float | None] = []
    waiting = threading.Event()

    class Recording(selectors.PollSelector):
        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            timeouts.append(timeout)
            waiting.set()
            return super().select(timeout)

    monkeypatch.setattr(socketserver, "_ServerSelector", Recording)
    server = LinkServer(
        tmp_path / "agent.sock",
        lambda: pytest.fail("not asked"),
        lambda appliance, action: AnswerResult(False, "no"),
    )
    try:
        assert waiting.wait(10.0), "the link never waited for a connection"
        assert timeouts[0] is None, f"the link wakes every {timeouts[0]} s to look for a shutdown"
    finally:
        server.close()
    assert not server._thread.is_alive()
