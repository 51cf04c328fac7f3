"""The agent's own Modbus TCP client (agent.modbus_tcp) and ModbusBus on top of it.

The wire functions are checked against the examples published in the MODBUS Application Protocol
Specification v1.1b3 and with hypothesis; the client against the simulator's pymodbus servers
(values compared with the simulator's own record of what it served) and against a raw socket
server scripted here, which misbehaves in the ways real devices and gateways do.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.modbus_io import DeviceError, ModbusBus
from agent.modbus_tcp import (
    ExceptionAnswer,
    ModbusTcpError,
    NoAnswer,
    ProtocolError,
    ShortAnswer,
    StaleAnswer,
    TcpClient,
    build_read_request,
    frame_length,
    parse_read_response,
)
from protocol.clock import ManualClock
from sim.household import GRID_METER, PV_INVERTER, SimHome
from sim.modbus_server import ServedLog, SimModbusServers, image_source
from tests.times import ROUND_SECOND_MS

# --- the wire, against the spec's examples ---------------------------------------------------

# Spec 6.3: "read registers 108 - 110" (addresses 107-109, 0x6B) of a slave; the response carries
# 0x022B (555), 0x0000 and 0x0064 (100). Here wrapped in MBAP headers (guide 3.1.3): transaction
# 0x0001, protocol 0, length 6 and 9, unit 0x11.
SPEC_FC3_REQUEST = bytes.fromhex("0001 0000 0006 11 03 006B 0003")
SPEC_FC3_RESPONSE = bytes.fromhex("0001 0000 0009 11 03 06 022B 0000 0064")
# Spec 6.4: "read input register 9" (address 8); the response carries 0x000A (10).
SPEC_FC4_REQUEST = bytes.fromhex("0002 0000 0006 01 04 0008 0001")
SPEC_FC4_RESPONSE = bytes.fromhex("0002 0000 0005 01 04 02 000A")


def test_requests_are_the_spec_examples_byte_for_byte() -> None:
    assert build_read_request(1, 0x11, 3, 0x6B, 3) == SPEC_FC3_REQUEST
    assert build_read_request(2, 1, 4, 8, 1) == SPEC_FC4_REQUEST


def test_responses_decode_to_the_spec_values() -> None:
    assert frame_length(SPEC_FC3_RESPONSE) == len(SPEC_FC3_RESPONSE)
    assert parse_read_response(SPEC_FC3_RESPONSE, tid=1, function=3, count=3) == [555, 0, 100]
    assert parse_read_response(SPEC_FC4_RESPONSE, tid=2, function=4, count=1) == [10]


def test_an_exception_response_carries_its_code() -> None:
    # Spec 7: the function code with its high bit set (0x83) and one exception code byte.
    frame = bytes.fromhex("0001 0000 0003 11 83 02")
    with pytest.raises(ExceptionAnswer) as caught:
        parse_read_response(frame, tid=1, function=3, count=3)
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("0007 0000 0009 11 03 06 022B 0000 0064", StaleAnswer),  # another transaction's
        ("0001 0001 0009 11 03 06 022B 0000 0064", ProtocolError),  # protocol id 1
        ("0001 0000 0002 11 03", ProtocolError),  # length below 3
        ("0001 0000 00FF 11 03", ProtocolError),  # length above 254
        ("0001 0000 0009 11 04 06 022B 0000 0064", ProtocolError),  # FC 4 answering FC 3
        ("0001 0000 0009 11 06 06 022B 0000 0064", ProtocolError),  # neither 3 nor 0x83
        ("0001 0000 0007 11 03 04 022B 0000", ShortAnswer),  # 2 of 3 registers
        ("0001 0000 0009 11 03 04 022B 0000 0064", ProtocolError),  # byte count vs length
        ("0001 0000 0008 11 03 05 022B 0000 00", ProtocolError),  # odd byte count
        ("0001 0000 0004 11 83 02 00", ProtocolError),  # exception answer too long
        ("0001 0000 0009 11 03 06 022B", ProtocolError),  # truncated frame
    ],
)
def test_malformed_answers_raise_typed_errors(frame: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_read_response(bytes.fromhex(frame), tid=1, function=3, count=3)


def test_a_short_answer_says_how_many_registers_came() -> None:
    with pytest.raises(ShortAnswer) as caught:
        parse_read_response(
            bytes.fromhex("0001 0000 0007 11 03 04 022B 0000"), tid=1, function=3, count=3
        )
    assert (caught.value.got, caught.value.asked) == (2, 3)


@pytest.mark.parametrize(
    ("tid", "unit", "function", "address", "count"),
    [(65536, 1, 3, 0, 1), (1, 256, 3, 0, 1), (1, 1, 6, 0, 1), (1, 1, 3, 0, 0), (1, 1, 3, 0, 126),
     (1, 1, 3, 65535, 2), (1, 1, 3, -1, 1)],
)  # fmt: skip
def test_a_request_no_device_could_answer_is_refused(
    tid: int, unit: int, function: int, address: int, count: int
) -> None:
    with pytest.raises(ValueError):
        build_read_request(tid, unit, function, address, count)


@given(
    st.binary(max_size=300),
    st.integers(0, 0xFFFF),
    st.sampled_from([3, 4]),
    st.integers(1, 125),
)
def test_any_bytes_give_registers_or_the_modules_own_error(
    frame: bytes, tid: int, function: int, count: int
) -> None:
    try:
        registers = parse_read_response(frame, tid=tid, function=function, count=count)
    except ModbusTcpError:
        return
    assert len(registers) == count
    assert all(0 <= r <= 0xFFFF for r in registers)


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.binary(min_size=1, max_size=253),
    st.sampled_from([3, 4]),
    st.integers(1, 125),
)
def test_any_body_behind_a_sound_header_gives_registers_or_the_modules_own_error(
    tid: int, unit: int, pdu: bytes, function: int, count: int
) -> None:
    """Past the header too: a right transaction id, protocol 0 and a length that fits."""
    frame = struct.pack(">HHHB", tid, 0, 1 + len(pdu), unit) + pdu
    try:
        registers = parse_read_response(frame, tid=tid, function=function, count=count)
    except ModbusTcpError:
        return
    assert len(registers) == count


@given(st.binary(max_size=300))
def test_any_header_gives_a_length_or_a_protocol_error(header: bytes) -> None:
    try:
        size = frame_length(header)
    except ProtocolError:
        return
    assert 7 + 2 <= size <= 7 + 253


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.sampled_from([3, 4]),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)
def test_any_well_formed_answer_decodes_to_its_registers(
    tid: int, unit: int, function: int, words: list[int]
) -> None:
    n = len(words)
    frame = struct.pack(f">HHHBBB{n}H", tid, 0, 3 + 2 * n, unit, function, 2 * n, *words)
    assert parse_read_response(frame, tid=tid, function=function, count=n) == words


# --- against the simulator's pymodbus servers --------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[SimHome, ManualClock, ServedLog, SimModbusServers]]:
    clock = ManualClock(ROUND_SECOND_MS)
    home = SimHome("h", 3, clock)
    served = ServedLog()
    with SimModbusServers([home], served=served) as servers:
        yield home, clock, served, servers


@pytest.mark.parametrize("device", [GRID_METER, PV_INVERTER])
def test_values_are_what_the_simulator_served(
    sim: tuple[SimHome, ManualClock, ServedLog, SimModbusServers], device: str
) -> None:
    home, clock, served, servers = sim
    ep = servers.endpoints()["h"][device]
    source = image_source(home, device)
    image = source(clock.now_ms())
    table: Literal["holding", "input"] = "holding" if image.function_code == 3 else "input"
    count = min(len(image.words), 125)
    bus = ModbusBus(f"tcp://{ep.host}:{ep.port}", timeout_s=5)
    try:
        for _ in range(3):
            clock.advance(60_000)  # the home's values move on between reads
            words = bus.read(table, image.start, count, ep.unit)
            last = served.requests("h", device)[-1]
            assert (last.address, last.count) == (image.start, count)
            assert words == source(last.t_ms).read(image.start, count)
    finally:
        bus.close()


def test_a_refused_read_from_the_simulator_is_a_config_error(
    sim: tuple[SimHome, ManualClock, ServedLog, SimModbusServers],
) -> None:
    _home, _clock, _served, servers = sim
    ep = servers.endpoints()["h"][GRID_METER]
    bus = ModbusBus(f"tcp://{ep.host}:{ep.port}", timeout_s=5)
    try:
        with pytest.raises(DeviceError, match="illegal data address") as caught:
            bus.read("holding", 0, 2, ep.unit)  # the meter answers only input registers
        assert (caught.value.code, caught.value.transient) == (2, False)
    finally:
        bus.close()


# --- against a scripted raw server ----------------------------------------------------------------

Answer = Callable[[socket.socket, int, bytes], None]
"""How the scripted server answers one request: (connection, transaction id, request bytes)."""


class RawServer:
    """A listening socket in a thread; each request (12 bytes) is handed to ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                try:
                    while (request := conn.recv(12, socket.MSG_WAITALL)) and len(request) == 12:
                        self.requests.append(request)
                        self.answer(conn, (request[0] << 8) | request[1], request)
                except OSError:
                    pass  # the client closed or reset the connection

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self._listener.close()
        self._thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


WORDS = [0x0102, 0x0304, 0xFFFF, 0x0000]


def answer_frame(tid: int, words: list[int], *, unit: int = 1, function: int = 4) -> bytes:
    """A read answer written out by hand from guide 3.1.3 and spec 6.4."""
    n = len(words)
    return struct.pack(f">HHHBBB{n}H", tid, 0, 3 + 2 * n, unit, function, 2 * n, *words)


def ok(conn: socket.socket, tid: int, request: bytes) -> None:
    conn.sendall(answer_frame(tid, WORDS))


def test_transaction_ids_count_up_and_wrap(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(ok)
    client = TcpClient("127.0.0.1", server.port)
    try:
        assert client.read(4, 0, 4, 1, 2.0) == WORDS
        assert client.read(4, 0, 4, 1, 2.0) == WORDS
        client._tid = 0xFFFE
        assert client.read(4, 0, 4, 1, 2.0) == WORDS
        assert client.read(4, 0, 4, 1, 2.0) == WORDS
    finally:
        client.close()
    tids = [struct.unpack_from(">H", r)[0] for r in server.requests]
    assert tids == [1, 2, 0xFFFF, 0]
    assert server.requests[0] == bytes.fromhex("0001 0000 0006 01 04 0000 0004")


def test_a_stale_answer_is_discarded_and_the_right_one_taken(
    serve: Callable[[Answer], RawServer],
) -> None:
    def late_then_right(conn: socket.socket, tid: int, request: bytes) -> None:
        conn.sendall(answer_frame((tid - 1) & 0xFFFF, [9, 9, 9, 9]))
        conn.sendall(answer_frame((tid - 7) & 0xFFFF, [7]))  # of another size, too
        conn.sendall(answer_frame(tid, WORDS))

    server = serve(late_then_right)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        assert bus.read("input", 0, 4, 1) == WORDS
        assert bus.read("input", 0, 4, 1) == WORDS
    finally:
        bus.close()
    assert server.connections == 1


def test_an_answer_in_one_byte_segments_is_assembled(serve: Callable[[Answer], RawServer]) -> None:
    def trickle(conn: socket.socket, tid: int, request: bytes) -> None:
        for b in answer_frame(tid, WORDS):
            conn.sendall(bytes([b]))
            time.sleep(0.001)  # paces the segments so they arrive apart; nobody waits on it

    server = serve(trickle)
    bus = ModbusBus(server.url, timeout_s=5)
    try:
        assert bus.read("input", 0, 4, 1) == WORDS
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("code", "transient", "answered", "words"),
    [(2, False, True, "illegal data address"), (11, True, False, "gateway target did not respond")],
)
def test_exception_answers_become_device_errors(
    serve: Callable[[Answer], RawServer], code: int, transient: bool, answered: bool, words: str
) -> None:
    def refuse(conn: socket.socket, tid: int, request: bytes) -> None:
        conn.sendall(struct.pack(">HHHBBB", tid, 0, 3, 1, 0x84, code))

    server = serve(refuse)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        with pytest.raises(DeviceError) as caught:
            bus.read("input", 0x2A, 4, 1)
        assert caught.value.code == code
        assert caught.value.transient is transient
        assert caught.value.answered is answered
        assert str(caught.value).startswith(
            f"unit 1 on {server.url} answered {words} for input registers 42+4"
        )
        with pytest.raises(DeviceError):
            bus.read("input", 0x2A, 4, 1)
    finally:
        bus.close()
    assert server.connections == 1  # a sound exception answer keeps the connection


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("protocol id", lambda tid: struct.pack(">HHHBBB8s", tid, 1, 11, 1, 4, 8, bytes(8)),
         "protocol id 1"),
        ("short byte count", lambda tid: answer_frame(tid, WORDS[:3]), "returned 3 of 4 registers"),
        ("wrong function", lambda tid: answer_frame(tid, WORDS, function=3), "function 3"),
    ],
)  # fmt: skip
def test_a_malformed_answer_is_transient_and_closes_the_connection(
    serve: Callable[[Answer], RawServer],
    name: str,
    bad: Callable[[int], bytes],
    message: str,
) -> None:
    def bad_first(conn: socket.socket, tid: int, request: bytes) -> None:
        conn.sendall(bad(tid) if len(server.requests) == 1 else answer_frame(tid, WORDS))

    server = serve(bad_first)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        with pytest.raises(DeviceError, match=message) as caught:
            bus.read("input", 0, 4, 1)
        assert caught.value.transient and caught.value.code is None
        assert f"unit 1 on {server.url}" in str(caught.value)
        assert bus.read("input", 0, 4, 1) == WORDS
    finally:
        bus.close()
    assert server.connections == 2  # started afresh after the malformed answer


def test_a_server_closing_mid_answer_is_a_transient_error(
    serve: Callable[[Answer], RawServer],
) -> None:
    def hang_up(conn: socket.socket, tid: int, request: bytes) -> None:
        conn.sendall(answer_frame(tid, WORDS)[:10])
        conn.shutdown(socket.SHUT_RDWR)

    server = serve(hang_up)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        with pytest.raises(DeviceError, match="connection closed by the device mid-answer") as c:
            bus.read("input", 0, 4, 1)
        assert c.value.transient
        server.answer = ok
        assert bus.read("input", 0, 4, 1) == WORDS  # reconnected
    finally:
        bus.close()
    assert server.connections == 2


def test_no_answer_times_out_at_the_deadline(serve: Callable[[Answer], RawServer]) -> None:
    def silent(conn: socket.socket, tid: int, request: bytes) -> None:
        pass

    server = serve(silent)
    bus = ModbusBus(server.url, timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(DeviceError) as caught:
            bus.read("input", 0, 4, 1)
        waited = time.monotonic() - started
        assert str(caught.value) == f"no answer from unit 1 on {server.url}: timed out"
        assert caught.value.transient and caught.value.code is None
        # It waited for the deadline, and gave up then rather than at some default (a generous
        # bound for a busy machine: this checks the deadline works, not how fast).
        assert 0.2 <= waited < 1.4
        server.answer = ok
        assert bus.read("input", 0, 4, 1) == WORDS
    finally:
        bus.close()
    assert server.connections == 2  # a late answer could not reach the next request


def test_the_deadline_covers_the_whole_answer(serve: Callable[[Answer], RawServer]) -> None:
    """A device trickling its answer does not get the timeout again for every segment."""

    def slow_trickle(conn: socket.socket, tid: int, request: bytes) -> None:
        for b in answer_frame(tid, WORDS):  # 15 bytes, 0.1 s apart: 1.5 s in all
            conn.sendall(bytes([b]))
            time.sleep(0.1)  # paces the segments; the client's deadline is what is tested

    server = serve(slow_trickle)
    bus = ModbusBus(server.url, timeout_s=0.35)
    try:
        started = time.monotonic()
        with pytest.raises(DeviceError, match="timed out"):
            bus.read("input", 0, 4, 1)
        assert time.monotonic() - started < 1.4  # well before the answer could be complete
    finally:
        bus.close()


def test_an_answer_from_unit_0_is_taken(serve: Callable[[Answer], RawServer]) -> None:
    def gateway(conn: socket.socket, tid: int, request: bytes) -> None:
        conn.sendall(answer_frame(tid, WORDS, unit=0))

    server = serve(gateway)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        assert bus.read("input", 0, 4, 7) == WORDS
    finally:
        bus.close()
    assert server.requests[0][6] == 7


def test_a_read_past_the_last_register_is_refused_without_asking(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(ok)
    bus = ModbusBus(server.url, timeout_s=2)
    try:
        with pytest.raises(DeviceError, match="outside 0-65535") as caught:
            bus.read("holding", 65535, 2, 1)  # e.g. a SunSpec chain pointing off the end
        assert not caught.value.transient
        assert bus.read("input", 0, 4, 1) == WORDS
    finally:
        bus.close()
    assert len(server.requests) == 1


@pytest.mark.parametrize("answer", ["silent", "trickle"])
def test_pythons_socket_timeout_keeps_the_same_deadline(
    serve: Callable[[Answer], RawServer], answer: str
) -> None:
    """Where the kernel refuses SO_RCVTIMEO, the client falls back on Python's socket timeout."""

    def reply(conn: socket.socket, tid: int, request: bytes) -> None:
        if answer == "trickle":
            for b in answer_frame(tid, WORDS):
                conn.sendall(bytes([b]))
                time.sleep(0.001)  # paces the segments so they arrive apart

    server = serve(reply)
    client = TcpClient("127.0.0.1", server.port)
    client._kernel_timeouts = False
    try:
        if answer == "silent":
            with pytest.raises(NoAnswer):
                client.read(4, 0, 4, 1, 0.2)
            assert not client.connected
        else:
            assert client.read(4, 0, 4, 1, 5.0) == WORDS
    finally:
        client.close()


def test_nobody_listening_cannot_connect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    bus = ModbusBus(f"tcp://127.0.0.1:{port}", timeout_s=0.5)
    with pytest.raises(DeviceError) as caught:
        bus.read("input", 0, 4, 1)
    assert str(caught.value) == f"cannot connect to tcp://127.0.0.1:{port}"
    assert caught.value.transient
