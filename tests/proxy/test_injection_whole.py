"""A lone buffered injection's answer taken whole from one buffer (ResponsePump.send's fast
path) gives read_query_result the same InjectionResult, and the client the same bytes,
as the same answer followed packet by packet by the ResponseTracker (the reference); the
fast path records the query as the relay does (Tracking.whole), the other with
queries.start."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from chassis_mysql.constants import Capability, Command, FieldType, ServerStatus
from chassis_mysql.framing import PacketReader
from chassis_mysql.packets import OK, eof_packet, err_packet
from chassis_mysql.response import ResponseTracker
from chassis_mysql.resultset import ColumnDefinition, encode_binary_row, encode_column_count
from chassis_proxy.hooks import Injection, InjectionResult
from chassis_proxy.pumps import ResponsePump
from hypothesis import given, settings

from tests.codec.recorded import CLIENTS, commands, conversation, negotiated, server_only
from tests.codec.test_response import _query_response
from tests.codec.test_response_scan import CLASSIC, MODERN, RAW, wire

_EXECUTE = bytes([Command.STMT_EXECUTE]) + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00"


class _Client:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.on_resume: Any = None
        self.write_paused = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))


class _Server:
    def __init__(self) -> None:
        self.reader = PacketReader()
        self.reader.max_payload = None
        self.sink: Any = None
        self.transport = None
        self.closed = False
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def send(self, payload: bytes, seq: int) -> int:
        self.sent.append(payload)
        return seq + 1


class _Tracking:
    """What the pump uses of relay.Tracking and ConnectionQueries: the calls it makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = 0.0
        self.queries = self

    def whole(self, packet: bytes, data: bytes) -> bool:
        self.calls.append("whole")
        return True

    def start(self, payload: bytes, tracker: ResponseTracker, started: float = 0.0) -> None:
        self.calls.append("start")


def _take(command: bytes, caps: int, chunks: list[bytes]) -> tuple[ResponsePump, _Tracking]:
    server, client = _Server(), _Client()
    state: Any = SimpleNamespace(server_ch=server, client_ch=client, server_seen=b"", bytes_out=0)
    pump = ResponsePump(state, ResponseTracker(command[0], caps), deliver=False, keep=True,
                        client_seq=1)
    tracking = _Tracking()
    pump.send(command, tracking, 1.0)  # type: ignore[arg-type]
    done: list[ResponsePump] = []
    pump.follow(done.append, lambda e: pytest.fail(str(e)))
    for chunk in chunks:
        server.sink(chunk)
    assert done == [pump]
    return pump, tracking


def _figures(result: InjectionResult) -> dict[str, object]:
    out = dataclasses.asdict(result)
    del out["query_time_us"], out["response_time_us"]
    return out


def _client_bytes(pump: ResponsePump, seq: int) -> tuple[bytes, int]:
    pump.send_kept(seq)
    client = pump.state.client_ch
    return b"".join(client.out), pump.state.bytes_out  # type: ignore[attr-defined]


def _agree(command: bytes, caps: int, data: bytes) -> bool:
    """Both paths agree on ``data``; whether the fast path took it."""
    inj = Injection(1, command, True)
    whole, recorded = _take(command, caps, [data])
    framed, followed = _take(command, caps, [data[:1], data[1:]])
    assert followed.calls == ["start"] and framed.raw is None
    assert _figures(whole.injection_result(inj)) == _figures(framed.injection_result(inj))
    assert whole.server_seq == framed.server_seq
    for seq in (1, 7):
        assert _client_bytes(whole, seq) == _client_bytes(framed, seq)
        whole.state.client_ch.out.clear()  # type: ignore[attr-defined]
        framed.state.client_ch.out.clear()  # type: ignore[attr-defined]
    if recorded.calls == ["start"]:
        assert whole.raw is None
        return False
    assert recorded.calls == ["whole"]
    return True


@pytest.mark.parametrize("client", CLIENTS + RAW)
def test_recorded_answers(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    taken = 0
    for cmd, answer in commands(conv):
        if cmd[0] not in (Command.QUERY, Command.STMT_EXECUTE) or not server_only(answer):
            continue
        taken += _agree(cmd, caps, wire(answer))
    assert taken


@settings(deadline=None, max_examples=60)
@given(_query_response())
def test_generated_answers(case: tuple[int, list[bytes], list[str]]) -> None:
    caps, packets, _events = case
    _agree(b"\x03SELECT 1", caps, wire(packets))


def _binary_select(caps: int, terminator_status: int) -> list[bytes]:
    column = ColumnDefinition(name=b"c", type=FieldType.STRING, table=b"t", org_table=b"t",
                              org_name=b"c", schema=b"db")
    rows = [encode_binary_row([b"x" * 120], [column]), encode_binary_row([None], [column])]
    if caps & Capability.DEPRECATE_EOF:
        end = OK(status=terminator_status, warnings=3, header=0xFE).encode(caps)
        return [encode_column_count(1), column.encode(caps), *rows, end]
    return [encode_column_count(1), column.encode(caps), eof_packet(status=2), *rows,
            eof_packet(warnings=3, status=terminator_status)]


@pytest.mark.parametrize("caps", [CLASSIC, MODERN])
def test_shapes(caps: int) -> None:
    status = ServerStatus.AUTOCOMMIT | ServerStatus.IN_TRANS | ServerStatus.NO_INDEX_USED
    binary = _binary_select(caps, status)
    cases = [
        (_EXECUTE, [OK(affected_rows=3, last_insert_id=9, status=2, warnings=4).encode(caps)]),
        (_EXECUTE, [err_packet(1146, "no such table")]),
        (_EXECUTE, binary),
        (_EXECUTE, [*binary[:-1], err_packet(1317, "interrupted")]),
        (b"\x03SELECT c FROM t", [encode_column_count(1), *binary[1:2],
                                  *([] if caps & Capability.DEPRECATE_EOF else [eof_packet()]),
                                  b"\x03abc", binary[-1]]),
    ]
    for command, packets in cases:
        data = wire(packets)
        assert _agree(command, caps, data)
        assert _take(command, caps, [data])[0].raw is data  # sent to the client as it is
    # sequence ids out of step: the same figures, the client's bytes framed again
    data = bytearray(wire(binary))
    data[3 + 4 + len(binary[0])] = 9
    assert _agree(_EXECUTE, caps, bytes(data))
    whole, _ = _take(_EXECUTE, caps, [bytes(data)])
    assert whole.packets == binary and whole.raw is None


def test_not_whole_answers_are_followed() -> None:
    more = ServerStatus.MORE_RESULTS_EXISTS | ServerStatus.AUTOCOMMIT
    two = wire([OK(status=more).encode(CLASSIC), OK(status=2).encode(CLASSIC)])
    assert not _agree(b"\x03SELECT 1; SELECT 2", CLASSIC, two)
    # LOCAL INFILE is never taken whole (the script's queue coroutine answers it)
    infile = wire([b"\xfbdata.csv"])
    pump, tracking = _take_infile(infile)
    assert tracking.calls == ["start"] and pump.raw is None and pump.tracker.awaiting_client


def _take_infile(data: bytes) -> tuple[ResponsePump, _Tracking]:
    return _take(b"\x03LOAD DATA LOCAL INFILE 'data.csv' INTO TABLE t", CLASSIC, [data])
