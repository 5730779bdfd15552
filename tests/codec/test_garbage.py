"""Every parser, fed random or mutated bytes, either succeeds or raises ProtocolError.

Never IndexError, struct.error, UnicodeDecodeError or a bare ValueError: a proxy
catches exactly one exception type for whatever a peer sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chassis_mysql.commands import (
    ComChangeUser,
    ComQuery,
    ComStmtExecute,
    StmtPrepareOK,
    parse_command,
)
from chassis_mysql.constants import Capability, Command, FieldType
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import PacketReader, scan
from chassis_mysql.handshake import (
    AuthMoreData,
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
)
from chassis_mysql.infile import LocalInfileRequest
from chassis_mysql.packets import EOF, ERR, OK, status_of
from chassis_mysql.response import ResponseTracker
from chassis_mysql.resultset import (
    ColumnDefinition,
    column_count,
    metadata_follows,
    parse_binary_row,
    parse_text_row,
)
from chassis_mysql.wire import Reader, read_lenenc_int, read_lenenc_str, read_nul_str
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .recorded import CLIENTS, conversation

ALL = (
    Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS | Capability.SESSION_TRACK | Capability.TRANSACTIONS
)  # fmt: skip
EVERYTHING = int(ALL) | int(Capability.DEPRECATE_EOF) | int(Capability.QUERY_ATTRIBUTES) | int(
    Capability.MARIADB_CLIENT_CACHE_METADATA | Capability.MARIADB_CLIENT_EXTENDED_METADATA
)
ALL_TYPES = [(int(t), unsigned) for t in FieldType for unsigned in (False, True)]

RECORDED = [p for name in (*CLIENTS, "raw_classic", "raw_modern") for _, _, p in conversation(name)]


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real packet truncated, extended or with bytes flipped."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))
    base = bytearray(draw(st.sampled_from(RECORDED)))
    for _ in range(draw(st.integers(0, 4))):
        if not base:
            break
        i = draw(st.integers(0, len(base) - 1))
        base[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(base)))
    return bytes(base[:cut]) + draw(st.binary(max_size=4))


def _reader_walk(b: bytes) -> None:
    r = Reader(b)
    for name in ("u8", "lenenc_int", "u16", "lenenc_str", "u24", "nul_str", "u32", "u64"):
        getattr(r, name)()


def _frames(b: bytes) -> None:
    reader = PacketReader(max_payload=1000)
    reader.feed(b)
    list(reader)
    assert 0 <= scan(b) <= len(b)


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "lenenc_int": lambda b: read_lenenc_int(b, 0),
    "lenenc_str": lambda b: read_lenenc_str(b, 0),
    "nul_str": lambda b: read_nul_str(b, 0),
    "reader": _reader_walk,
    "framing": _frames,
    "handshake": HandshakeV10.parse,
    "ssl_request": SSLRequest.parse,
    "handshake_response": HandshakeResponse41.parse,
    "auth_switch": AuthSwitchRequest.parse,
    "auth_more_data": AuthMoreData.parse,
    "ok": lambda b: OK.parse(b, EVERYTHING).session_changes(),
    "ok_schema": lambda b: OK.parse(b, ALL).schema_change(),
    "ok_old": lambda b: OK.parse(b, 0),
    "err": ERR.parse,
    "eof": EOF.parse,
    "status_of": lambda b: status_of(b, EVERYTHING),
    "column_count": column_count,
    "metadata_follows": lambda b: metadata_follows(b, EVERYTHING),
    "column_definition": ColumnDefinition.parse,
    "column_definition_ext": lambda b: ColumnDefinition.parse(b, EVERYTHING),
    "text_row": lambda b: parse_text_row(b, 3),
    "binary_row": lambda b: parse_binary_row(b, ALL_TYPES[: (b[0] if b else 0) % 80]),
    "command": lambda b: parse_command(b, ALL),
    "command_attrs": lambda b: parse_command(b, EVERYTHING),
    "query_attrs": lambda b: ComQuery.parse(b, EVERYTHING),
    "execute": lambda b: ComStmtExecute.parse(b, 3),
    "execute_attrs": lambda b: ComStmtExecute.parse(b, 2, EVERYTHING, [(1, False), (254, False)]),
    "prepare_ok": StmtPrepareOK.parse,
    "change_user": lambda b: ComChangeUser.parse(b, ALL),
    "infile": LocalInfileRequest.parse,
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_raises_only_protocol_error(name: str) -> None:
    parse = PARSERS[name]

    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(hostile())
    def check(payload: bytes) -> None:
        try:
            parse(payload)
        except ProtocolError:
            pass

    check()


@pytest.mark.parametrize(
    "command",
    [Command.QUERY, Command.STMT_EXECUTE, Command.STMT_PREPARE, Command.STMT_FETCH,
     Command.FIELD_LIST, Command.STATISTICS, Command.PING, Command.CHANGE_USER,
     Command.BINLOG_DUMP, Command.SET_OPTION],
)  # fmt: skip
@pytest.mark.parametrize("caps", [int(ALL), EVERYTHING])
def test_response_tracker_raises_only_protocol_error(command: Command, caps: int) -> None:
    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(hostile(), max_size=12))
    def check(packets: list[bytes]) -> None:
        tracker = ResponseTracker(command, caps)
        try:
            for p in packets:
                if tracker.awaiting_client:
                    tracker.feed_client(p)
                else:
                    tracker.feed(p)
        except ProtocolError:
            pass

    check()
