"""summarize() (the relay's one-pass figures of a simple response) agrees with the
ResponseTracker wherever it answers, and answers for the common shapes; locate(),
rows_from() and outline() (what the relay keeps of a repeated statement's answer) give
the same figures."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import Capability, Command
from chassis_mysql.framing import PacketReader
from chassis_mysql.packets import OK, eof_packet, err_packet
from chassis_mysql.response import ResponseTracker
from chassis_mysql.resultset import encode_column_count, encode_text_row, text_column
from chassis_mysql.summary import locate, outline, rows_from, split, summarize
from hypothesis import given, settings

from .recorded import CLIENTS, commands, conversation, negotiated, server_only
from .test_response import _query_response
from .test_response_scan import CLASSIC, MODERN, RAW, wire

_ANSWERED = (Command.QUERY, Command.STMT_EXECUTE)


def _agrees(command: int, caps: int, data: bytes) -> bool:
    """Whether summarize() answered for ``data``; when it did, it agrees with the tracker."""
    found = summarize(data, caps)
    if found is None:
        return False
    t = ResponseTracker(command, caps)
    assert t.scan(data) == len(data) and t.done, data
    assert found == (t.rows, t.affected_rows, t.error_code)
    _shortcuts_agree(caps, data)
    return True


def _shortcuts_agree(caps: int, data: bytes) -> None:
    """What the relay does with a repeated statement's answer gives summarize()'s figures:
    rows_from() after the bytes before the rows, and outline(): any answer of the same
    size, head and tail (here: the bytes between them changed) has the same figures."""
    found = locate(data, caps)
    assert found is not None and found[:3] == summarize(data, caps)
    rows, _affected, error, at = found
    _split_agrees(data, at)
    shape = outline(data, found)
    if not at:  # an OK or an ERR
        assert shape is None
        return
    assert rows_from(data, at, caps & Capability.DEPRECATE_EOF) == found[:3]
    if rows > 1 or error:
        assert shape is None
        return
    assert shape is not None
    head, tail = shape
    assert data.startswith(head) and data.endswith(tail) and len(head) + len(tail) <= len(data)
    middle = bytes(b ^ 0x5A for b in data[len(head):len(data) - len(tail)])
    assert summarize(head + middle + tail, caps) == found[:3]


def _split_agrees(data: bytes, at: int) -> None:
    """split() gives the packet reader's payloads, the index of the first row (the packet
    at ``at``), and says whether the sequence ids count up by one."""
    reader = PacketReader()
    reader.max_payload = None
    reader.feed(data)
    payloads, starts, pos = [], [], 0
    while (packet := reader.next_packet()) is not None:
        starts.append(pos)
        payloads.append(packet.payload)
        pos += 4 + len(packet.payload)
    parts = split(data, at)
    assert parts is not None
    assert parts[0] == payloads and parts[2]
    if at:
        assert parts[1] == starts.index(at)
    if len(payloads) > 1:  # a sequence id out of step is seen
        bumped = bytearray(data)
        bumped[starts[-1] + 3] ^= 0x40
        assert split(bytes(bumped), at) == (payloads, parts[1], False)


def test_split_refuses_split_packets() -> None:
    big = b"\xff\xff\xff\x01" + b"x" * 0xFFFFFF + b"\x00\x00\x00\x02"
    assert split(big, 0) is None


@pytest.mark.parametrize("client", CLIENTS + RAW)
def test_recorded_responses(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    answered = 0
    for cmd, answer in commands(conv):
        if cmd[0] not in _ANSWERED or not server_only(answer):
            continue
        answered += _agrees(cmd[0], caps, wire(answer))
        # a partial buffer, or one with more after it, is never summarised
        data = wire(answer)
        assert summarize(data[:-1], caps) is None
        assert summarize(data + wire([OK().encode(caps)]), caps) is None
    assert answered


@settings(deadline=None)
@given(_query_response())
def test_generated_responses(case: tuple[int, list[bytes], list[str]]) -> None:
    caps, packets, _events = case
    data = wire(packets)
    single = sum(e in ("OK", "COLUMN_COUNT") for e in _events) + (packets[-1][0] == 0xFF) == 1
    assert _agrees(Command.QUERY, caps, data) == single  # several results: the tracker's


@pytest.mark.parametrize("caps", [CLASSIC, MODERN])
def test_common_shapes_are_summarised(caps: int) -> None:
    end = OK(header=0xFE).encode(caps) if caps == MODERN else eof_packet()
    defs = [text_column("c").encode()] + ([] if caps == MODERN else [eof_packet()])
    rows = [encode_text_row([b"x" * 120]), encode_text_row([None])]
    assert summarize(wire([OK(affected_rows=3).encode(caps)]), caps) == (0, 3, 0)
    assert summarize(wire([err_packet(1054, "no such column")]), caps) == (0, 0, 1054)
    assert summarize(wire([encode_column_count(1), *defs, *rows, end]), caps) == (2, 0, 0)
    assert summarize(wire([encode_column_count(1), *defs, end]), caps) == (0, 0, 0)
    assert summarize(wire([encode_column_count(1), *defs, rows[0], err_packet(1317, "x")]), caps) \
        == (1, 0, 1317)
