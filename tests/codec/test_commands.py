"""Client commands: recorded ones round-trip, every command round-trips from random values."""

from __future__ import annotations

import datetime

import pytest
from chassis_mysql.commands import (
    SENT_AS_LONG_DATA,
    ComBinlogDump,
    ComChangeUser,
    ComFieldList,
    ComInitDB,
    ComOther,
    ComPing,
    ComProcessKill,
    ComQuery,
    ComQuit,
    ComResetConnection,
    ComSetOption,
    ComStatistics,
    ComStmtClose,
    ComStmtExecute,
    ComStmtFetch,
    ComStmtPrepare,
    ComStmtReset,
    ComStmtSendLongData,
    QueryAttribute,
    StmtPrepareOK,
    parse_command,
    stmt_execute,
)
from chassis_mysql.constants import Capability
from chassis_mysql.errors import ProtocolError
from chassis_mysql.resultset import DateTimeValue, TimeValue
from hypothesis import given
from hypothesis import strategies as st

from .recorded import CLIENTS, commands, conversation, negotiated


@pytest.mark.parametrize("client", [*CLIENTS, "raw_classic", "raw_modern"])
def test_recorded_commands_round_trip(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    for payload, _ in commands(conv):
        cmd = parse_command(payload, caps)
        encoded = cmd.encode(caps) if isinstance(cmd, ComQuery | ComChangeUser) else cmd.encode()
        assert encoded == payload
        assert not isinstance(cmd, ComOther), payload


def test_recorded_execute_decodes_with_the_prepare_context() -> None:
    conv = conversation("connector")
    cmds = commands(conv)
    ok = StmtPrepareOK.parse(next(a[0] for c, a in cmds if c[0] == 0x16))
    payload = next(c for c, _ in cmds if c[0] == 0x17)
    execute = ComStmtExecute.parse(payload, ok.num_params)
    assert execute.params == [1, -2.5, b"text", None, 2**40, b"2024-02-29 12:34:56.789",
                              b"2024-02-29", b"-12:34:56"]  # fmt: skip
    assert execute.encode() == payload
    assert ok.encode() == next(a[0] for c, a in cmds if c[0] == 0x16)


def test_recorded_execute_after_long_data() -> None:
    conv = conversation("raw_classic")
    payload = next(c for c, _ in commands(conv) if c.endswith(b"\x01\xfc\x00"))
    execute = ComStmtExecute.parse(payload, 1, long_data_params={0})
    assert execute.params == [SENT_AS_LONG_DATA]
    assert execute.encode() == payload


def test_execute_reusing_types_needs_them() -> None:
    first = stmt_execute(7, [1, "a"])
    again = ComStmtExecute(7, 0, 1, [2, "b"], None)
    payload = again.encode_params(previous_types=first.types)
    full = ComStmtExecute(7, 0, 1, raw_params=payload).encode()
    with pytest.raises(ProtocolError, match="previous_types"):
        ComStmtExecute.parse(full, 2)
    parsed = ComStmtExecute.parse(full, 2, previous_types=first.types)
    assert parsed.params == [2, b"b"]


_values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=50),
    st.datetimes(min_value=datetime.datetime(1000, 1, 1)),
    st.timedeltas(min_value=datetime.timedelta(days=-30), max_value=datetime.timedelta(days=30)),
)


def _normalised(v: object) -> object:
    if isinstance(v, datetime.datetime):
        return DateTimeValue.from_python(v)
    if isinstance(v, datetime.timedelta):
        return TimeValue.from_python(v)
    return v


@given(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 4]), st.lists(_values, max_size=12))
def test_execute_round_trips(stmt: int, flags: int, values: list[object]) -> None:
    cmd = stmt_execute(stmt, values, flags)
    payload = cmd.encode()
    parsed = ComStmtExecute.parse(payload, len(values))
    assert parsed.params == [_normalised(v) for v in values]
    assert parsed.encode() == payload
    assert parse_command(payload).encode() == payload


@given(st.binary(max_size=200), st.lists(st.tuples(st.binary(max_size=10), _values), max_size=4))
def test_query_with_attributes_round_trips(query: bytes, attrs: list[tuple[bytes, object]]) -> None:
    caps = Capability.QUERY_ATTRIBUTES
    typed = stmt_execute(0, [v for _, v in attrs]).types or []
    attributes = tuple(
        QueryAttribute(name, ftype, _normalised(v), unsigned)
        for (name, v), (ftype, unsigned) in zip(attrs, typed)
    )
    cmd = ComQuery(query, attributes)
    assert ComQuery.parse(cmd.encode(caps), caps) == cmd
    assert ComQuery.parse(ComQuery(query).encode()) == ComQuery(query)


_nonul = st.binary(max_size=30).filter(lambda b: b"\x00" not in b)
_u32 = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize(
    "strategy",
    [
        st.builds(ComInitDB, st.binary(max_size=30)),
        st.builds(ComFieldList, _nonul, st.binary(max_size=30)),
        st.builds(ComProcessKill, _u32),
        st.just(ComPing()),
        st.just(ComQuit()),
        st.just(ComStatistics()),
        st.just(ComResetConnection()),
        st.builds(ComStmtPrepare, st.binary(max_size=50)),
        st.builds(ComStmtSendLongData, _u32, st.integers(0, 0xFFFF), st.binary(max_size=50)),
        st.builds(ComStmtClose, _u32),
        st.builds(ComStmtReset, _u32),
        st.builds(ComStmtFetch, _u32, _u32),
        st.builds(ComSetOption, st.integers(0, 1)),
        st.builds(ComBinlogDump, _u32, st.integers(0, 0xFFFF), _u32, st.binary(max_size=20)),
        st.builds(ComOther, st.sampled_from([0x00, 0x05, 0x06, 0x07, 0x08, 0x0D, 0x1D]),
                  st.binary(max_size=20)),
    ],
)
def test_simple_commands_round_trip(strategy: st.SearchStrategy) -> None:
    @given(strategy)
    def check(cmd: object) -> None:
        payload = cmd.encode()  # type: ignore[attr-defined]
        assert parse_command(payload) == cmd

    check()


@given(
    _nonul, st.binary(max_size=255), _nonul, st.none() | st.integers(0, 0xFFFF),
    st.none() | st.text("abcdefghijklmnopqrstuvwxyz_", max_size=25),
    st.none() | st.dictionaries(st.binary(max_size=10), st.binary(max_size=30), max_size=3),
)  # fmt: skip
def test_change_user_round_trips(
    user: bytes, auth: bytes, db: bytes, charset: int | None, plugin: str | None,
    attrs: dict[bytes, bytes] | None,
) -> None:  # fmt: skip
    caps = Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.CONNECT_ATTRS
    if charset is None:
        plugin = attrs = None
    elif plugin is None:
        attrs = None
    cmd = ComChangeUser(user, auth, db, charset, plugin, attrs)
    assert ComChangeUser.parse(cmd.encode(caps), caps) == cmd


def test_prepare_ok_forms() -> None:
    ok = StmtPrepareOK(5, 2, 3, 1)
    assert len(ok.encode()) == 12
    assert StmtPrepareOK.parse(ok.encode()) == ok
    mysql8 = StmtPrepareOK(5, 2, 3, 0, metadata_follows=1)
    assert StmtPrepareOK.parse(mysql8.encode()) == mysql8


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x0c\x01\x02", b"\x19\x01", b"\x1c\x01\x00\x00\x00", b"\x1b\x00", b"\x04table",
     b"\x0e\x00", b"\x11user", b"\x17\x01\x00\x00\x00"],
)  # fmt: skip
def test_truncated_commands_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_command(payload)


def test_wrong_command_byte() -> None:
    with pytest.raises(ProtocolError, match="COM_PING"):
        ComPing.parse(b"\x03")
    with pytest.raises(ProtocolError, match="cannot fit"):
        ComStmtExecute.parse(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00", 10_000)
