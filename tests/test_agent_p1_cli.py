"""``coopwatt-agent scan --p1``, ``read --p1`` and ``check`` against the simulator's P1 stream.

Expected values are the simulator's record of the telegrams it sent (sim.p1_stream.TelegramLog).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent import installer
from agent.cli import main
from protocol.clock import ManualClock
from sim.broker import RunningBroker
from sim.p1_stream import METER_ID, P1Stream
from sim.sml_frames import compose_file, quantity_entries

T0 = 1_782_900_000_000
VALUES = {"power_w": -850.0, "energy_import_wh": 4_321_987.0, "energy_export_wh": 1_234_567.0,
          "voltage_v": 231.4, "current_a": 3.7}  # fmt: skip


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(params=["tcp", "pty"])
def stream(request: pytest.FixtureRequest) -> Iterator[P1Stream]:
    """A meter sending a telegram every 0.1 s of wall time (the simulator's pace, not a test's)."""
    s = P1Stream(lambda t: VALUES, ManualClock(T0), interval_s=0.1, transport=request.param)
    s.start()
    yield s
    s.stop()


def test_scan_names_the_meter_and_its_profile(stream: P1Stream) -> None:
    result = _run("scan", "--p1", stream.url, "--timeout", "20")
    assert result.exit_code == 0, result.output
    first, config = result.output.splitlines()
    assert first.startswith(f"P1 meter, DSMR 5.0, id {METER_ID} (CWS5\\2SIMULATED-P1)")
    assert first.endswith("profile dsmr-5")
    assert f'p1 = "{stream.url}' in config and 'profile = "dsmr-5"' in config
    found = json.loads(_run("scan", "--p1", stream.url, "--json").output)["found"][0]
    assert (found["version"], found["meter_id"], found["profile"]) == (
        "DSMR 5.0", METER_ID, "dsmr-5"
    )  # fmt: skip


def test_read_prints_what_the_meter_sent(stream: P1Stream) -> None:
    result = _run("read", "--p1", stream.url, "--json", "--timeout", "20")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["device"] == f"P1 meter, DSMR 5.0, id {METER_ID}"
    assert (out["profile"], out["role"]) == ("dsmr-5", "grid")
    sent = [s.quantities for s in stream.log.sent()]
    assert out["quantities"] in sent
    # By hand from VALUES: 40 % on tariff 1 in whole Wh, whole amperes, power as sent.
    assert out["quantities"] == {
        "energy_import_t1_wh": 1_728_795.0,  # round(4321987 * 0.4)
        "energy_import_t2_wh": 2_593_192.0,
        "energy_import_wh": 4_321_987.0,
        "energy_export_t1_wh": 493_827.0,  # round(1234567 * 0.4)
        "energy_export_t2_wh": 740_740.0,
        "energy_export_wh": 1_234_567.0,
        "power_w": -850.0,
        "power_l1_w": -850.0,
        "voltage_l1_v": 231.4,
        "current_l1_a": 4.0,
    }
    text = _run("read", "--p1", stream.url, "--timeout", "20").output.splitlines()
    assert text[0] == f"P1 meter, DSMR 5.0, id {METER_ID} (dsmr-5, role grid)"
    assert "  energy_import_wh    4321987 Wh" in text  # aligned with energy_import_t1_wh


def test_read_on_a_noisy_port_is_one_error_line() -> None:
    with P1Stream(lambda t: VALUES, ManualClock(T0)).start(autosend=False) as s:
        stop = threading.Event()

        def noise() -> None:
            while not stop.wait(0.02):
                s.send_raw(bytes(range(0x80, 0x100)))

        t = threading.Thread(target=noise)
        t.start()
        try:
            result = _run("read", "--p1", s.url, "--timeout", "1.5")
        finally:
            stop.set()
            t.join()
    assert result.exit_code == 2
    assert result.output.startswith("Error: no good P1 telegram within 1.5 s: ")
    assert "wrong baud rate or framing" in result.output
    assert result.output.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["read", "--p1", "tcp://127.0.0.1:9", "--modbus", "tcp://h"], "give --modbus URL, --p1"),
        (["read"], "give --modbus URL, --p1 URL or --sml URL"),
        (["read", "--sml", "tcp://127.0.0.1:9", "--profile", "x"], "are for Modbus devices"),
        (["scan"], "give --modbus URL, --p1 URL or --sml URL"),
        (["read", "--p1", "usb://x"], "must start with serial:// or tcp://"),
        (["read", "--p1", "tcp://127.0.0.1:9", "--unit", "1"], "--unit and --record are for"),
        (["read", "--p1", "tcp://127.0.0.1:9", "--profile", "eastron-sdm120"], "not a P1 profile"),
        (["scan", "--p1", "serial:///dev/ttyNOPE-p1", "--timeout", "0.5"], "cannot open"),
    ],
)
def test_p1_command_mistakes_are_one_line(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_check_reads_a_p1_meter(
    stream: P1Stream, tmp_path: Path, mosquitto: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installer, "clock_synced", lambda: True)  # the machine's, not ours
    (tmp_path / "agent.toml").write_text(
        f'coop = "c"\nhome = "h"\ndata_dir = "state"\n[broker]\nurl = "{mosquitto.url}"\n'
        f'[[devices]]\nname = "smart-meter"\np1 = "{stream.url}"\n'
    )
    result = _run("check", "--config", str(tmp_path / "agent.toml"), "--json")
    assert result.exit_code == 0, result.output
    rows = {r["what"]: r for r in json.loads(result.output)["checks"]}
    assert rows["smart-meter"]["ok"] is True, rows["smart-meter"]
    assert rows["smart-meter"]["detail"].startswith("grid: ")
    assert "energy_import_wh=4321987 Wh" in rows["smart-meter"]["detail"]  # a counter in full


def test_read_sml_prints_what_the_simulated_meter_sent() -> None:
    # The SML simulator's own encoder (sim.sml_frames), values at its usual scalers: 0.1 Wh, 1 W.
    sent = {"energy_import_wh": 12_345_678.9, "energy_export_wh": 42.0, "power_w": -1234.0}
    frame = compose_file(quantity_entries(sent, meter_id=b"\x0aISK0001"))
    result, _ = _sml_meter(frame, "read", "--json", "--timeout", "20", "--sml")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["quantities"] == sent
    assert (out["profile"], out["role"]) == ("sml", "grid")
    assert out["device"].startswith("SML meter")


def _sml_meter(frame: bytes, *args: str) -> tuple[Result, str]:
    """Run the agent's CLI with ``args`` while a simulated IR head sends ``frame`` every 0.1 s."""
    with P1Stream(lambda t: {}, ManualClock(T0)).start(autosend=False) as s:
        stop = threading.Event()

        def meter() -> None:
            while not stop.wait(0.1):
                s.send_raw(frame)

        t = threading.Thread(target=meter)
        t.start()
        try:
            return _run(*args, s.url), s.url
        finally:
            stop.set()
            t.join()


def test_scan_sml_names_the_meter_and_what_it_sends() -> None:
    sent = {"energy_import_wh": 12_345_678.9, "energy_export_wh": 42.0, "power_w": -1234.0}
    frame = compose_file(quantity_entries(sent, meter_id=b"1ISK0001"))
    result, url = _sml_meter(frame, "scan", "--timeout", "20", "--sml")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "SML meter, id 1ISK0001: sends energy_export_wh, energy_import_wh, power_w",
        f'  [[devices]] sml = "{url}"',
    ]


def test_scan_sml_says_when_a_meter_hides_its_power() -> None:
    """A meter whose PIN was never entered sends its counters only (the SML decoder's tests)."""
    sent = {"energy_import_wh": 1000.0, "energy_export_wh": 0.0}
    frame = compose_file(quantity_entries(sent, meter_id=b"1EMH0002"))
    result, _ = _sml_meter(frame, "scan", "--json", "--timeout", "20", "--sml")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["found"]
    assert found == [{"kind": "sml", "device": "SML meter, id 1EMH0002", "sends": sorted(sent)}]
    text, _ = _sml_meter(frame, "scan", "--timeout", "20", "--sml")
    assert "no power: the meter may need its PIN entered" in text.output


def test_a_telegram_is_in_the_simulators_record_before_anyone_can_ask_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reader that got a telegram's bytes and looks in the record at once finds it: the
    stream once wrote first and recorded after, and a fast ``read`` found it missing (a flaky
    test_read_prints_what_the_meter_sent under load)."""
    with P1Stream(lambda t: VALUES, ManualClock(T0)).start(autosend=False) as s:
        seen: list[int] = []
        askers: list[threading.Thread] = []
        write = s.send_raw

        def written_then_asked(data: bytes) -> int:
            n = write(data)
            asker = threading.Thread(target=lambda: seen.append(len(s.log.sent())))
            askers.append(asker)
            asker.start()
            asker.join(0.5)  # the record is not there yet: the asker must wait for it
            return n

        monkeypatch.setattr(s, "send_raw", written_then_asked)
        s.send()
        askers[0].join(5.0)
    assert seen == [1]
