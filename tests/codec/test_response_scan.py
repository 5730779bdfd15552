"""ResponseTracker.scan, the bulk form of feed() for proxies that forward buffers as they
are: it must end every response exactly where feed() does, in whatever pieces the bytes
arrive, and leave the tracker in the same state."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import MAX_PAYLOAD, Capability, Command, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import frame
from chassis_mysql.packets import OK, eof_packet, err_packet, ok_packet
from chassis_mysql.response import ResponseTracker
from chassis_mysql.resultset import encode_column_count, encode_text_row, text_column
from hypothesis import given, settings
from hypothesis import strategies as st

from .recorded import CLIENTS, commands, conversation, negotiated, server_only
from .test_response import _query_response

RAW = ("raw_classic", "raw_modern")
CLASSIC = Capability.PROTOCOL_41 | Capability.TRANSACTIONS | Capability.MULTI_RESULTS
MODERN = CLASSIC | Capability.DEPRECATE_EOF | Capability.SESSION_TRACK


def wire(payloads: list[bytes], seq: int = 1) -> bytes:
    """The bytes of these server payloads, framed from ``seq`` on."""
    out = []
    for p in payloads:
        out.append(frame(p, seq))
        seq += len(p) // MAX_PAYLOAD + 1
    return b"".join(out)


def summary(t: ResponseTracker) -> tuple[object, ...]:
    return (t.done, t.awaiting_client, t.status, t.result_sets, t.column_count, t.prepare_ok,
            t.rows, t.affected_rows, t.error_code)


def scan_in_pieces(t: ResponseTracker, data: bytes, cuts: list[int]) -> int:
    """Scan ``data`` as it would arrive in pieces cut at ``cuts``, keeping what scan()
    leaves for the next piece (as a proxy does); returns how many bytes were taken."""
    taken = 0
    carry = b""
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        buf = carry + data[start:end]
        start = end
        pos = t.scan(buf)
        taken += pos
        carry = buf[pos:]
        if t.idle:
            break
    return taken


def exchanges(answer: list[bytes]) -> list[list[bytes]]:
    """Split a recorded answer at the client's packets (``b"c:"`` entries)."""
    parts: list[list[bytes]] = [[]]
    for p in answer:
        if p.startswith(b"c:"):
            parts.append([p])
        else:
            parts[-1].append(p)
    return parts


@pytest.mark.parametrize("client", CLIENTS + RAW)
def test_scan_ends_every_recorded_response_where_feed_does(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    for cmd, answer in commands(conv):
        fed = ResponseTracker.for_command(cmd, caps)
        scanned = ResponseTracker.for_command(cmd, caps)
        for part in exchanges(answer):
            server = []
            for p in part:
                if p.startswith(b"c:"):
                    fed.feed_client(p[2:])
                    scanned.feed_client(p[2:])
                else:
                    fed.feed(p)
                    server.append(p)
            data = wire(server)
            assert scanned.scan(data + b"\x01\x00\x00\x09\x00") == len(data), cmd
            assert summary(scanned) == summary(fed), cmd
        assert scanned.done


@pytest.mark.parametrize("client", RAW)
def test_scan_takes_a_response_in_any_pieces(client: str) -> None:
    conv = conversation(client)
    caps = negotiated(conv)
    for cmd, answer in commands(conv):
        if not server_only(answer) or not answer:
            continue
        data = wire(answer)
        for step in (1, 3, 7, 100):
            t = ResponseTracker.for_command(cmd, caps)
            assert scan_in_pieces(t, data, list(range(step, len(data), step))) == len(data)
            assert t.done


@settings(deadline=None)  # a loaded machine must not fail it
@given(_query_response(), st.lists(st.integers(0, 400), max_size=6))
def test_generated_responses_scan_to_their_end(
    case: tuple[int, list[bytes], list[str]], cuts: list[int]
) -> None:
    caps, packets, _events = case
    fed = ResponseTracker(Command.QUERY, caps)
    for p in packets:
        fed.feed(p)
    data = wire(packets)
    t = ResponseTracker(Command.QUERY, caps)
    assert scan_in_pieces(t, data, [c for c in cuts if c < len(data)]) == len(data)
    assert summary(t) == summary(fed)


def test_last_seq_is_the_sequence_id_of_the_last_packet_taken() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.last_seq == -1
    rows = [encode_text_row([str(i)]) for i in range(5)]
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(), *rows,
               eof_packet()]  # fmt: skip
    data = wire(packets, seq=7)
    first = len(wire(packets[:5], seq=7))
    assert t.scan(data[: first + 2]) == first  # an incomplete packet waits
    assert t.last_seq == 7 + 4 and not t.done
    assert t.scan(data, first) == len(data)
    assert t.last_seq == 7 + len(packets) - 1 and t.done


def test_rows_that_look_like_terminators_are_rows() -> None:
    # Without DEPRECATE_EOF a 0xFE packet of 9 bytes or more is a row (a field of 16 MiB
    # and more announced by an 8-byte length would start with 0xFE).
    row = b"\xfe" + b"\x00" * 8
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(), row, row,
               eof_packet()]  # fmt: skip
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.scan(wire(packets)) == len(wire(packets)) and t.done and t.result_sets == 1


def test_an_err_among_the_rows_ends_the_response() -> None:
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(),
               encode_text_row(["1"]), err_packet(1317, "interrupted")]  # fmt: skip
    t = ResponseTracker(Command.QUERY, CLASSIC)
    data = wire(packets)
    assert t.scan(data + wire([ok_packet()])) == len(data) and t.done


def test_scan_stops_before_a_16_mib_packet() -> None:
    big = encode_text_row([b"y" * (1 << 24)])
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(), big,
               eof_packet()]  # fmt: skip
    data = wire(packets)
    head = len(wire(packets[:3]))
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.scan(data[: head + 4]) == head  # the header alone shows the full-size chunk
    assert t.scan(data, head) == head and not t.done
    t.feed(big)  # the caller joins the chunks and feeds the payload
    assert t.scan(data, len(data) - len(frame(eof_packet(), 0))) == len(data) and t.done


def test_scan_stops_when_the_server_waits_for_the_client() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    request = wire([b"\xfbdata.csv"])
    assert t.scan(request + wire([ok_packet()], seq=4)) == len(request)
    assert t.awaiting_client and t.idle
    assert t.scan(wire([ok_packet()], seq=4)) == 0  # nothing is fed while idle
    t.feed_client(b"")
    assert not t.idle
    assert t.scan(wire([ok_packet()], seq=4)) == 11 and t.done


def test_a_finished_or_silent_command_takes_nothing() -> None:
    t = ResponseTracker(Command.STMT_CLOSE, CLASSIC)
    assert t.idle and t.scan(wire([ok_packet()])) == 0


def test_scan_raises_on_garbage_like_feed() -> None:
    t = ResponseTracker(Command.QUERY, CLASSIC)
    with pytest.raises(ProtocolError, match="expected EOF"):
        t.scan(wire([encode_column_count(1), text_column("a").encode(),
                     encode_text_row(["x"])]))  # fmt: skip
    with pytest.raises(ProtocolError, match="empty packet"):
        ResponseTracker(Command.QUERY, CLASSIC).scan(b"\x00\x00\x00\x01")
    # an OK whose info claims 10 bytes but has 2: the status is not taken on trust
    truncated = ok_packet(capabilities=MODERN) + b"\x0aab"
    with pytest.raises(ProtocolError):
        ResponseTracker(Command.PING, MODERN).scan(wire([truncated]))


@settings(deadline=None)
@given(
    affected=st.integers(0, 2**64 - 1),
    insert_id=st.integers(0, 2**64 - 1),
    status=st.integers(0, 0xFFFF),
    warnings=st.integers(0, 0xFFFF),
    info=st.sampled_from(["", "Rows matched: 1  Changed: 1  Warnings: 0"]),
    caps=st.sampled_from([CLASSIC, MODERN, Capability.PROTOCOL_41]),
)
def test_the_status_of_an_ok_is_read_as_ok_parse_reads_it(
    affected: int, insert_id: int, status: int, warnings: int, info: str, caps: int
) -> None:
    status &= ~int(ServerStatus.SESSION_STATE_CHANGED)
    payload = OK(affected, insert_id, ServerStatus(status), warnings, info).encode(caps)
    t = ResponseTracker(Command.PING, caps)
    t.scan(wire([payload]))
    assert t.done and t.status == int(OK.parse(payload, caps).status) == status


@pytest.mark.parametrize("caps", [CLASSIC, MODERN])
def test_a_result_set_of_251_columns_scans_like_it_feeds(caps: int) -> None:
    # 251 columns need a three-byte column count (0xFC 0xFB 0x00)
    packets = [encode_column_count(251)] + [text_column(f"c{i}").encode() for i in range(251)]
    if not caps & Capability.DEPRECATE_EOF:
        packets.append(eof_packet())
    packets.append(encode_text_row(["x"] * 251))
    packets.append(OK(header=0xFE).encode(caps) if caps & Capability.DEPRECATE_EOF
                   else eof_packet())
    fed = ResponseTracker(Command.QUERY, caps)
    for p in packets:
        fed.feed(p)
    t = ResponseTracker(Command.QUERY, caps)
    assert t.scan(wire(packets)) == len(wire(packets))
    assert summary(t) == summary(fed) and t.done and t.column_count == 251


@st.composite
def _rows_in_runs(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    """A result set whose rows come in runs of one size (as fixed-width columns give),
    with first bytes that look like terminators where a row may have them."""
    caps = int(draw(st.sampled_from([CLASSIC, MODERN])))
    deprecate = bool(caps & Capability.DEPRECATE_EOF)
    firsts = [0x00, 0x01, 0xFB, 0xFC, 0xFD] + ([] if deprecate else [0xFE])
    rows: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        size = draw(st.sampled_from([1, 5, 7, 9, 12, 44, 300]))  # 300 = 0x12C, 44 = 0x2C
        for _ in range(draw(st.integers(1, 12))):
            first = draw(st.sampled_from(firsts))
            if first == 0xFE and size < 9:
                first = 0x00  # a short 0xFE packet is the EOF, not a row
            rows.append(bytes((first,)) + b"\xfe" * (size - 1))
    end = OK(header=0xFE).encode(caps) if deprecate else eof_packet()
    if draw(st.booleans()):
        end = err_packet(1317, "interrupted")
    packets = [encode_column_count(1), text_column("a").encode()]
    if not deprecate:
        packets.append(eof_packet())
    return caps, [*packets, *rows, end]


@settings(deadline=None)
@given(_rows_in_runs(), st.lists(st.integers(0, 2000), max_size=5))
def test_runs_of_rows_of_one_size_scan_like_they_feed(
    case: tuple[int, list[bytes]], cuts: list[int]
) -> None:
    caps, packets = case
    fed = ResponseTracker(Command.QUERY, caps)
    for p in packets:
        fed.feed(p)
    data = wire(packets)
    t = ResponseTracker(Command.QUERY, caps)
    taken = scan_in_pieces(t, data + wire([ok_packet()], seq=0), [c for c in cuts if c < len(data)])
    assert taken == len(data)
    assert summary(t) == summary(fed) and t.done
    assert t.last_seq == (len(packets)) & 0xFF
    header = 2 if caps & Capability.DEPRECATE_EOF else 3
    assert t.rows == len(packets) - header - 1  # what a digest counts as rows sent
    assert t.error_code == (1317 if packets[-1][0] == 0xFF else 0)


def test_affected_rows_of_every_ok_are_counted() -> None:
    more = ServerStatus.MORE_RESULTS_EXISTS | ServerStatus.AUTOCOMMIT
    packets = [OK(affected_rows=3, status=more).encode(MODERN),
               OK(affected_rows=300, status=more, info="Rows matched: 300").encode(MODERN),
               OK(affected_rows=1).encode(MODERN)]
    t = ResponseTracker(Command.QUERY, MODERN)
    assert t.scan(wire(packets)) == len(wire(packets)) and t.done
    fed = ResponseTracker(Command.QUERY, MODERN)
    for p in packets:
        fed.feed(p)
    assert t.affected_rows == fed.affected_rows == 304 and t.rows == 0 and t.error_code == 0


def test_a_terminator_the_size_of_the_rows_ends_them() -> None:
    # classic EOFs are 5 bytes: rows of 5 bytes make the EOF look like one more row
    rows = [b"\x00\x01\x02\x03\x04"] * 20
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(), *rows,
               eof_packet(), *rows]  # fmt: skip
    data = wire(packets)
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.scan(data) == len(wire(packets[:24])) and t.done


def test_runs_of_rows_in_a_bytearray() -> None:
    rows = [encode_text_row(["x" * 10])] * 50
    packets = [encode_column_count(1), text_column("a").encode(), eof_packet(), *rows,
               eof_packet()]  # fmt: skip
    data = bytearray(wire(packets))
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.scan(data) == len(data) and t.done
    t = ResponseTracker(Command.QUERY, CLASSIC)
    assert t.scan(memoryview(data)) == len(data) and t.done
