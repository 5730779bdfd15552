"""ResponseTracker: every recorded response ends exactly at its last packet, and each
command kind's response shape is followed, with and without CLIENT_DEPRECATE_EOF."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import Capability, Command, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK, eof_packet, err_packet, ok_packet
from chassis_mysql.response import Event, ResponseTracker
from chassis_mysql.resultset import encode_column_count, encode_text_row, text_column
from hypothesis import given
from hypothesis import strategies as st

from .recorded import CLIENTS, commands, conversation, negotiated

RAW = ("raw_classic", "raw_modern")
CLASSIC = Capability.PROTOCOL_41 | Capability.TRANSACTIONS | Capability.MULTI_RESULTS
MODERN = CLASSIC | Capability.DEPRECATE_EOF | Capability.SESSION_TRACK
E = Event


def run(tracker: ResponseTracker, packets: list[bytes]) -> list[str]:
    """Feed a response; ``b"c:"`` entries are client packets. Asserts it ends exactly."""
    events: list[str] = []
    for payload in packets:
        assert not tracker.done, f"done too early, after {events}"
        if payload.startswith(b"c:"):
            assert tracker.awaiting_client
            tracker.feed_client(payload[2:])
            events.append("client")
        else:
            assert not tracker.awaiting_client
            events.append(tracker.feed(payload).name)
    assert tracker.done, f"not done after {events}"
    return events


def recorded(name: str, prefix: bytes, nth: int = 0) -> tuple[list[str], ResponseTracker]:
    conv = conversation(name)
    matches = [(c, a) for c, a in commands(conv) if c.startswith(prefix)]
    cmd, answer = matches[nth]
    tracker = ResponseTracker.for_command(cmd, negotiated(conv))
    return run(tracker, answer), tracker


@pytest.mark.parametrize("client", CLIENTS + RAW)
def test_every_recorded_response_ends_at_its_last_packet(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    for cmd, answer in commands(conv):
        tracker = ResponseTracker.for_command(cmd, caps)
        if cmd == b"\x01":
            assert tracker.done and not tracker.expects_response
            continue
        run(tracker, answer)


@pytest.mark.parametrize("client", RAW)
def test_text_result_set(client: str) -> None:
    events, t = recorded(client, b"\x03SELECT 1 AS a")
    eof = [] if client == "raw_modern" else ["EOF"]
    assert events == ["COLUMN_COUNT", "COLUMN_DEF", "COLUMN_DEF", *eof, "ROW", "EOF"]
    assert t.column_count == 2 and t.result_sets == 1
    assert t.status & ServerStatus.AUTOCOMMIT


@pytest.mark.parametrize("client", RAW)
def test_multi_statement_results_chain_on_more_results_exists(client: str) -> None:
    events, t = recorded(client, b"\x03SELECT 1; SELECT 2")
    assert events.count("COLUMN_COUNT") == 2 and events.count("EOF") >= 2
    assert t.result_sets == 2


@pytest.mark.parametrize("client", RAW)
def test_procedure_results_end_with_the_final_ok(client: str) -> None:
    events, t = recorded(client, b"\x03CALL codec_p")
    assert events[-1] == "OK"
    assert events.count("COLUMN_COUNT") == 2
    assert t.result_sets == 3


@pytest.mark.parametrize("client", RAW)
def test_local_infile_waits_for_the_client_then_ok(client: str) -> None:
    events, _ = recorded(client, b"\x03LOAD DATA LOCAL")
    assert events[0] == "LOCAL_INFILE_REQUEST"
    assert events[1:4] == ["client"] * 3
    assert events[-1] == "OK"
    if client == "raw_modern":  # libmariadb-like clients get progress reports
        assert "PROGRESS" in events


@pytest.mark.parametrize("client", RAW)
def test_prepare_response_has_param_and_column_blocks(client: str) -> None:
    events, t = recorded(client, b"\x16SELECT * FROM codec_types")
    assert t.prepare_ok is not None
    assert (t.prepare_ok.num_params, t.prepare_ok.num_columns) == (2, 21)
    assert events.count("PARAM_DEF") == 2 and events.count("COLUMN_DEF") == 21
    assert events.count("EOF") == (0 if client == "raw_modern" else 2)
    events, t = recorded(client, b"\x16DO ?")
    assert events[:2] == ["PREPARE_OK", "PARAM_DEF"]
    events, _ = recorded(client, b"\x16SELECT * FROM no_such_table")
    assert events == ["ERR"]


@pytest.mark.parametrize("client", RAW)
def test_binary_result_with_cached_metadata(client: str) -> None:
    events, _ = recorded(client, b"\x17", 0)
    if client == "raw_modern":  # MariaDB skips definitions the client cached at PREPARE
        assert events == ["COLUMN_COUNT", "ROW", "ROW", "EOF"]
    else:
        assert events[0] == "COLUMN_COUNT" and events.count("COLUMN_DEF") == 21


@pytest.mark.parametrize("client", RAW)
def test_cursor_execute_ends_after_metadata_and_fetch_brings_rows(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    cursor = [(c, a) for c, a in commands(conv) if c[0] == Command.STMT_EXECUTE and c[5] == 1]
    cmd, answer = cursor[0]
    t = ResponseTracker.for_command(cmd, caps)
    assert run(t, answer)[-1] == "EOF"
    assert t.status & ServerStatus.CURSOR_EXISTS
    assert "ROW" not in run(ResponseTracker.for_command(cmd, caps), answer)
    fetches = [(c, a) for c, a in commands(conv) if c[0] == Command.STMT_FETCH]
    first = ResponseTracker.for_command(fetches[0][0], caps)
    assert run(first, fetches[0][1]) == ["ROW", "ROW", "EOF"]
    assert first.status & ServerStatus.CURSOR_EXISTS
    last = ResponseTracker.for_command(fetches[1][0], caps)
    run(last, fetches[1][1])
    assert last.status & ServerStatus.LAST_ROW_SENT


@pytest.mark.parametrize("client", RAW)
def test_field_list_statistics_set_option(client: str) -> None:
    events, _ = recorded(client, b"\x04codec_types")
    assert events == ["COLUMN_DEF"] * 21 + ["EOF"]
    assert recorded(client, b"\x04no_such_table")[0] == ["ERR"]
    assert recorded(client, b"\x09")[0] == ["STATISTICS"]
    assert recorded(client, b"\x1b")[0] == ["EOF"]


@pytest.mark.parametrize("client", RAW)
def test_change_user_auth_switch_waits_for_the_client(client: str) -> None:
    events, _ = recorded(client, b"\x11")
    assert events == ["AUTH_SWITCH", "client", "OK"]


@pytest.mark.parametrize("command", [b"\x19\x01\x00\x00\x00", b"\x18\x01\x00\x00\x00\x00\x00x", b"\x01"])
def test_commands_without_response_are_done_at_once(command: bytes) -> None:
    t = ResponseTracker.for_command(command, CLASSIC)
    assert t.done and not t.expects_response
    with pytest.raises(ProtocolError, match="after the complete response"):
        t.feed(ok_packet())


@pytest.mark.parametrize("caps", [CLASSIC, MODERN])
def test_made_up_result_set_then_ok_with_more_results(caps: Capability) -> None:
    more = ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS
    packets = [encode_column_count(1), text_column("a").encode()]
    if not caps & Capability.DEPRECATE_EOF:
        packets.append(eof_packet())
    packets.append(encode_text_row([b"\xfe" * 3]))  # a row that starts with 0xFE
    if caps & Capability.DEPRECATE_EOF:
        packets.append(OK(status=more, header=0xFE).encode(caps))
    else:
        packets.append(eof_packet(status=more))
    packets.append(ok_packet(affected_rows=1, capabilities=caps))
    t = ResponseTracker(Command.QUERY, caps)
    events = run(t, packets)
    assert events[-3:] == ["ROW", "EOF", "OK"]
    assert t.result_sets == 2


def test_error_in_the_middle_of_rows_ends_the_response() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(),
               encode_text_row(["1"]), err_packet(1317, "Query execution was interrupted")]  # fmt: skip
    assert run(t, packets)[-2:] == ["ROW", "ERR"]


def test_cursor_with_deprecate_eof_ends_at_the_ok_after_metadata() -> None:
    status = ServerStatus.AUTOCOMMIT | ServerStatus.CURSOR_EXISTS
    packets = [encode_column_count(1), text_column("a").encode(),
               OK(status=status, header=0xFE).encode(MODERN)]  # fmt: skip
    t = ResponseTracker(Command.STMT_EXECUTE, MODERN)
    assert run(t, packets) == ["COLUMN_COUNT", "COLUMN_DEF", "EOF"]


def test_caching_sha2_fast_auth_needs_no_client_answer() -> None:
    t = ResponseTracker(Command.CHANGE_USER, CLASSIC)
    assert run(t, [b"\x01\x03", ok_packet()]) == ["AUTH_MORE_DATA", "OK"]
    t = ResponseTracker(Command.CHANGE_USER, CLASSIC)
    full = [b"\x01\x04", b"c:pw\x00", b"\x01-----BEGIN PUBLIC KEY-----", b"c:\x00" * 1, ok_packet()]
    assert run(t, full) == ["AUTH_MORE_DATA", "client", "AUTH_MORE_DATA", "client", "OK"]


def test_binlog_dump_streams_until_error_or_eof() -> None:
    t = ResponseTracker(Command.BINLOG_DUMP, CLASSIC)
    for _ in range(100):
        assert t.feed(b"\x00" + b"\x10" * 30) == E.BINLOG_EVENT
    assert not t.done
    assert t.feed(eof_packet()) == E.EOF and t.done
    t = ResponseTracker(Command.BINLOG_DUMP_GTID, CLASSIC)
    assert t.feed(err_packet(1236, "no binlog")) == E.ERR and t.done


@pytest.mark.parametrize("command", [Command.PING, Command.INIT_DB, Command.STMT_RESET,
                                     Command.RESET_CONNECTION, Command.PROCESS_KILL])  # fmt: skip
def test_ok_or_err_commands(command: Command) -> None:
    assert run(ResponseTracker(command, CLASSIC), [ok_packet()]) == ["OK"]
    assert run(ResponseTracker(command, CLASSIC), [err_packet(1, "x")]) == ["ERR"]
    t = ResponseTracker(command, CLASSIC)
    with pytest.raises(ProtocolError, match="expected OK or ERR"):
        t.feed(b"\x05abc")


def test_client_packets_only_when_awaited() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    with pytest.raises(ProtocolError, match="not waiting"):
        t.feed_client(b"data")
    assert t.feed(b"\xfbfile.csv") == E.LOCAL_INFILE_REQUEST
    with pytest.raises(ProtocolError, match="LOCAL INFILE data"):
        t.feed(ok_packet())


def test_garbage_in_the_response_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ResponseTracker(Command.QUERY, CLASSIC).feed(b"\xfc\x01")
    with pytest.raises(ProtocolError):
        ResponseTracker(Command.QUERY, CLASSIC).feed(b"")
    t = ResponseTracker(Command.QUERY, CLASSIC)
    t.feed(encode_column_count(1))
    t.feed(text_column("a").encode())
    with pytest.raises(ProtocolError, match="expected EOF"):
        t.feed(encode_text_row(["x"]))
    with pytest.raises(ProtocolError):
        ResponseTracker.for_command(b"", CLASSIC)


def _physical(payloads: list[bytes]) -> list[bytes]:
    """The physical packet payloads a relay sees for these logical payloads."""
    from chassis_mysql.framing import frame

    wire = b"".join(frame(p, i) for i, p in enumerate(payloads))
    out, pos = [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos : pos + 3], "little")
        out.append(wire[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def test_relay_can_track_physical_packets_of_a_row_over_16_mib() -> None:
    fe_first = encode_text_row([b"y" * (1 << 24)])  # starts with 0xFE (an 8-byte length)
    fe_tail = encode_text_row([b"x" * (0xFFFFFF - 8), b"\xfe" * 7])  # tail chunk: 4 x 0xFE
    logical = [encode_column_count(2), text_column("a").encode(), text_column("b").encode(),
               eof_packet(), fe_first, fe_tail, eof_packet()]  # fmt: skip
    chunks = _physical(logical)
    assert chunks[4][0] == 0xFE and len(chunks[4]) == 0xFFFFFF
    assert chunks[7] == b"\xfe" * 4  # would be an EOF if taken for a whole packet
    t = ResponseTracker(Command.QUERY, CLASSIC)
    events = [t.feed_physical(c) for c in chunks]
    assert events == [E.COLUMN_COUNT, E.COLUMN_DEF, E.COLUMN_DEF, E.EOF,
                      E.ROW, None, E.ROW, None, E.EOF]  # fmt: skip
    assert t.done


def test_relay_can_track_physical_infile_data() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    t.feed_physical(b"\xfbbig.csv")
    for chunk in _physical([b"x" * 0xFFFFFF]):  # a full chunk and its empty continuation
        t.feed_client_physical(chunk)
    assert t.awaiting_client
    t.feed_client_physical(b"")
    assert not t.awaiting_client
    assert t.feed_physical(ok_packet()) == E.OK and t.done


_cell = st.none() | st.binary(max_size=12) | st.sampled_from([b"\xfe", b"\xfb", b"\x00", b"\xff"])


@st.composite
def _query_response(draw: st.DrawFn) -> tuple[int, list[bytes], list[str]]:
    """A valid response to COM_QUERY: result sets and OKs chained by MORE_RESULTS_EXISTS."""
    caps = int(draw(st.sampled_from([CLASSIC, MODERN])))
    deprecate = bool(caps & Capability.DEPRECATE_EOF)
    parts = draw(st.lists(st.none() | st.integers(1, 4), min_size=1, max_size=4))
    fail = draw(st.booleans())  # the last statement fails: an ERR instead of its result
    total = len(parts) + fail
    packets: list[bytes] = []
    events: list[str] = []
    for i, ncols in enumerate(parts):
        status = ServerStatus.AUTOCOMMIT
        if i < total - 1:
            status |= ServerStatus.MORE_RESULTS_EXISTS
        if ncols is None:
            packets.append(OK(affected_rows=i, status=status).encode(caps))
            events.append("OK")
            continue
        packets.append(encode_column_count(ncols))
        packets.extend(text_column(f"c{n}").encode() for n in range(ncols))
        events += ["COLUMN_COUNT"] + ["COLUMN_DEF"] * ncols
        if not deprecate:
            packets.append(eof_packet())
            events.append("EOF")
        rows = draw(st.lists(st.lists(_cell, min_size=ncols, max_size=ncols), max_size=5))
        packets.extend(encode_text_row(r) for r in rows)
        events += ["ROW"] * len(rows)
        end = OK(status=status, header=0xFE).encode(caps) if deprecate else eof_packet(status=status)
        packets.append(end)
        events.append("EOF")
    if fail:
        packets.append(err_packet(1064, "syntax"))
        events.append("ERR")
    return caps, packets, events


@given(_query_response())
def test_generated_query_responses_are_tracked_to_their_end(
    case: tuple[int, list[bytes], list[str]],
) -> None:
    caps, packets, events = case
    t = ResponseTracker(Command.QUERY, caps)
    assert run(t, packets) == events
