"""OK, ERR and EOF packets: recorded ones round-trip, random ones too."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import Capability, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import (
    EOF,
    ERR,
    OK,
    eof_packet,
    eof_warnings,
    err_packet,
    is_eof,
    is_err,
    is_ok,
    is_ok_eof,
    is_progress,
    ok_packet,
    status_of,
)
from hypothesis import given
from hypothesis import strategies as st

from .recorded import CLIENTS, conversation, negotiated

P41 = Capability.PROTOCOL_41 | Capability.TRANSACTIONS
TRACK = P41 | Capability.SESSION_TRACK


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_ok_packets_round_trip(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    oks = [p for d, s, p in conv[2:] if d == "s" and is_ok(p) and len(p) < 200]
    assert oks
    for payload in oks:
        assert OK.parse(payload, caps).encode(caps) == payload


def test_session_track_ok_reports_schema_change() -> None:
    conv = conversation("mysqlclient")
    ok = OK.parse(conv[2][2], negotiated(conv))
    assert ok.status & ServerStatus.SESSION_STATE_CHANGED
    assert ok.schema_change() == b"test"


def test_session_track_ok_reports_tracked_system_variables() -> None:
    # MariaDB's OK after an INSERT with session_track_system_variables='last_gtid':
    # 1 row, status AUTOCOMMIT|SESSION_STATE_CHANGED, no info, one SYSTEM_VARIABLES entry
    # (name and value, each length-encoded) and a SCHEMA entry after it
    variable = b"\x09last_gtid\x060-1-42"
    schema = b"\x03app"
    block = b"\x00" + bytes([len(variable)]) + variable + b"\x01" + bytes([len(schema)]) + schema
    payload = b"\x00\x01\x00\x02\x40\x00\x00\x00" + bytes([len(block)]) + block
    ok = OK.parse(payload, TRACK)
    assert ok.affected_rows == 1
    assert ok.system_variables() == {b"last_gtid": b"0-1-42"}
    assert ok.schema_change() == b"app"
    assert ok.encode(TRACK) == payload
    # without the status flag, or without SESSION_TRACK negotiated, there is nothing
    assert OK.parse(b"\x00\x01\x00\x02\x00\x00\x00", TRACK).system_variables() == {}
    assert OK.parse(b"\x00\x01\x00\x02\x00\x00\x00", P41).system_variables() == {}


def test_recorded_err_round_trips() -> None:
    conv = conversation("pymysql")
    payload = next(p for d, _, p in conv if d == "s" and is_err(p))
    err = ERR.parse(payload)
    assert err.error_code == 1146
    assert err.sql_state == "42S02"
    assert "no_such_table" in err.message
    assert err.encode() == payload


def test_err_without_sql_state_marker() -> None:
    payload = b"\xff\x6a\x04Host 'x' is not allowed to connect"
    err = ERR.parse(payload)
    assert err.sql_state is None
    assert err.error_code == 1130
    assert err.encode() == payload


def test_err_packet_helper() -> None:
    assert err_packet(1045, "Access denied", "28000") == b"\xff\x15\x04#28000Access denied"
    with pytest.raises(ProtocolError):
        err_packet(1, "x", "TOOLONG")


def test_progress_report_is_recognised() -> None:
    payload = b"\xff\xff\xff\x01\x01\x02\x10\x27\x00\x08stage: 1"
    assert is_err(payload) and is_progress(payload)
    assert not is_progress(b"\xff\x15\x04#28000x")


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.text(max_size=50),
    st.none() | st.binary(max_size=50),
    st.sampled_from([0x00, 0xFE]),
    st.sampled_from([P41, TRACK, Capability.TRANSACTIONS, Capability(0)]),
)
def test_ok_round_trips(
    affected: int, insert_id: int, status: int, warnings: int, info: str,
    state: bytes | None, header: int, caps: Capability,
) -> None:  # fmt: skip
    if caps & Capability.SESSION_TRACK:
        if state is not None:
            status |= ServerStatus.SESSION_STATE_CHANGED
    else:
        state = None
    if not caps & Capability.PROTOCOL_41:
        warnings = 0
        if not caps & Capability.TRANSACTIONS:
            status = 0
    ok = OK(affected, insert_id, ServerStatus(status), warnings, info, state, header)
    assert OK.parse(ok.encode(caps), caps) == ok


@given(
    st.integers(0, 260),
    st.integers(0, 260),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.sampled_from([0x00, 0xFE]),
    st.sampled_from([P41, TRACK, Capability.TRANSACTIONS]),
)
def test_short_ok_round_trips(
    affected: int, insert_id: int, status: int, warnings: int, header: int, caps: Capability,
) -> None:  # fmt: skip
    """The 7-byte OK that OK.parse reads in place (counts below 251, no info), and its
    neighbours that it must leave to the general path (251 is a 3-byte count; without
    PROTOCOL_41 the same length holds an info string instead of warnings)."""
    status &= ~ServerStatus.SESSION_STATE_CHANGED
    if not caps & Capability.PROTOCOL_41:
        warnings = 0
    ok = OK(affected, insert_id, ServerStatus(status), warnings, "", None, header)
    assert OK.parse(ok.encode(caps), caps) == ok
    if not caps & Capability.PROTOCOL_41:
        payload = bytes((header, affected % 251, 0, 2, 0)) + b"hi"  # 7 bytes: info "hi"
        assert OK.parse(payload, caps).info == "hi"


@given(st.integers(0, 0xFFFE), st.text(max_size=80), st.none() | st.text("ABCHY0123", min_size=5, max_size=5))
def test_err_round_trips(code: int, message: str, state: str | None) -> None:
    if state is None and message.startswith("#"):
        message = " " + message
    err = ERR(code, message, state)
    assert ERR.parse(err.encode()) == err


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_eof_round_trips(warnings: int, status: int) -> None:
    eof = EOF(warnings, ServerStatus(status))
    payload = eof.encode()
    assert is_eof(payload) and len(payload) == 5
    assert EOF.parse(payload) == eof
    assert status_of(payload) == status
    assert eof_warnings(payload) == warnings
    assert eof_warnings(b"\xfe") == 0  # a pre-4.1 server's EOF has no count


def test_short_eof_and_classification() -> None:
    assert EOF.parse(b"\xfe").short
    assert not is_eof(b"\xfe" + b"\x00" * 8)
    assert is_ok_eof(b"\xfe" + b"\x00" * 8)
    assert is_ok(ok_packet())
    assert not is_ok(b"\x00\x00")
    assert eof_packet(1, 2) == b"\xfe\x01\x00\x02\x00"


def test_status_of_ok_eof_under_deprecate_eof() -> None:
    caps = P41 | Capability.DEPRECATE_EOF
    payload = OK(status=ServerStatus.MORE_RESULTS_EXISTS, header=0xFE).encode(caps)
    assert status_of(payload, caps) == ServerStatus.MORE_RESULTS_EXISTS
    assert status_of(ok_packet(status=ServerStatus.IN_TRANS)) == ServerStatus.IN_TRANS


@pytest.mark.parametrize(
    ("parse", "payload"),
    [
        (OK.parse, b"\x01\x00\x00\x02\x00\x00\x00"),
        (OK.parse, b"\x00\x00"),
        (ERR.parse, b"\x00"),
        (ERR.parse, b"\xff\x01"),
        (EOF.parse, b"\xfe\x00"),
        (EOF.parse, b"\x00"),
    ],
)
def test_malformed_generic_packets_raise_protocol_error(parse, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError):
        parse(payload)
