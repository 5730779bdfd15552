"""Packet framing: split/join of 16 MiB payloads, chunked feeding, and the relay scan."""

from __future__ import annotations

import itertools

import pytest
from chassis_mysql.constants import MAX_PAYLOAD
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import (
    Packet,
    PacketReader,
    frame,
    frame_all,
    frame_next_seq,
    header,
    is_one_packet,
    scan,
    shift_sequence_ids,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_small_payload_gets_one_header() -> None:
    assert frame(b"\x03select 1", 0) == b"\x09\x00\x00\x00\x03select 1"
    assert header(9, 257) == b"\x09\x00\x00\x01"


def test_header_rejects_oversized_length() -> None:
    with pytest.raises(ProtocolError):
        header(MAX_PAYLOAD + 1, 0)


@pytest.mark.parametrize(
    ("size", "lengths"),
    [
        (MAX_PAYLOAD - 1, [MAX_PAYLOAD - 1]),
        (MAX_PAYLOAD, [MAX_PAYLOAD, 0]),
        (MAX_PAYLOAD + 1, [MAX_PAYLOAD, 1]),
        (2 * MAX_PAYLOAD, [MAX_PAYLOAD, MAX_PAYLOAD, 0]),
    ],
)
def test_large_payloads_split_at_boundaries(size: int, lengths: list[int]) -> None:
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    wire = frame(payload, 254)
    seen = []
    pos = 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "little")
        seen.append((length, wire[pos + 3]))
        pos += 4 + length
    assert [length for length, _ in seen] == lengths
    assert [seq for _, seq in seen] == [(254 + i) & 0xFF for i in range(len(lengths))]
    reader = PacketReader()
    reader.feed(wire)
    packets = list(reader)
    assert packets == [Packet(seen[-1][1], payload)]
    assert packets[0].first_seq == 254
    assert frame_next_seq(size, 254) == (seen[-1][1] + 1) & 0xFF
    assert reader.buffered == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.integers(0, 255),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_chunked_feeding_yields_the_same_packets(
    payloads: list[bytes], seq: int, cuts: list[int]
) -> None:
    wire = b"".join(frame(p, seq + i) for i, p in enumerate(payloads))
    reader = PacketReader()
    got: list[Packet] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        reader.feed(wire[pos : pos + step])
        pos += step
        i += 1
        got.extend(reader)
    assert [p.payload for p in got] == payloads
    assert [p.seq for p in got] == [(seq + i) & 0xFF for i in range(len(payloads))]


_BOUNDARY = MAX_PAYLOAD + 4  # end of the first physical chunk on the wire


@settings(max_examples=12, deadline=None)
@given(
    st.sampled_from([MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, MAX_PAYLOAD + 1000]),
    st.lists(
        st.one_of(st.integers(0, 2 * _BOUNDARY), st.integers(_BOUNDARY - 5, _BOUNDARY + 5)),
        max_size=6,
    ),
)
def test_split_payloads_survive_arbitrary_feed_points(size: int, cuts: list[int]) -> None:
    payload = b"\xab" * size
    wire = frame(payload, 0) + frame(b"next", 9)
    reader = PacketReader()
    got: list[Packet] = []
    offsets = [0, *sorted(c for c in cuts if c < len(wire)), len(wire)]
    for a, b in itertools.pairwise(offsets):
        reader.feed(wire[a:b])
        got.extend(reader)
    assert len(got) == 2
    assert got[0].payload == payload
    assert got[1] == Packet(9, b"next")


def test_max_payload_is_enforced_from_the_header() -> None:
    reader = PacketReader(max_payload=10)
    reader.feed(header(11, 0))  # no payload bytes yet: the header alone is enough
    with pytest.raises(ProtocolError, match="exceeds the limit of 10"):
        reader.next_packet()
    ok = PacketReader(max_payload=10)
    ok.feed(frame(b"x" * 10, 0))
    assert ok.next_packet() == Packet(0, b"x" * 10)


def test_max_payload_counts_every_chunk_of_a_split_payload() -> None:
    reader = PacketReader(max_payload=MAX_PAYLOAD + 5)
    reader.feed(header(MAX_PAYLOAD, 0) + b"\x00" * MAX_PAYLOAD + header(6, 1))
    with pytest.raises(ProtocolError):
        reader.next_packet()


def test_drain_returns_raw_unreturned_bytes() -> None:
    reader = PacketReader()
    wire = frame(b"one", 0) + frame(b"two", 1)
    reader.feed(wire + wire[:3])
    assert reader.next_packet() == Packet(0, b"one")
    assert reader.drain() == frame(b"two", 1) + wire[:3]
    assert reader.buffered == 0
    assert reader.next_packet() is None


@given(st.lists(st.binary(max_size=100), max_size=5), st.binary(max_size=8))
def test_scan_stops_before_the_partial_tail(payloads: list[bytes], tail: bytes) -> None:
    whole = b"".join(frame(p, i) for i, p in enumerate(payloads))
    partial = frame(b"0123456789", 7)[: len(tail) % 14]
    data = whole + partial
    assert scan(data) == len(whole)
    assert scan(memoryview(bytearray(data))) == len(whole)
    assert scan(data, len(whole)) == len(whole)


def test_shift_sequence_ids_moves_each_packets_id_and_wraps() -> None:
    data = frame(b"one", 0) + frame(b"", 1) + frame(b"three", 255)
    shifted = shift_sequence_ids(data, len(data), 2)
    assert shifted == frame(b"one", 2) + frame(b"", 3) + frame(b"three", 1)
    assert shift_sequence_ids(data, len(data), -1) == frame(b"one", 255) + frame(b"", 0) + frame(
        b"three", 254)


def test_shift_sequence_ids_stops_at_end_and_leaves_the_rest_out() -> None:
    first, second = frame(b"first", 1), frame(b"second", 2)
    data = first + second + second[:5]
    assert shift_sequence_ids(data, len(first), 3) == frame(b"first", 4)
    assert shift_sequence_ids(memoryview(bytearray(data)), len(first + second), 3) == (
        frame(b"first", 4) + frame(b"second", 5))


def test_shift_sequence_ids_by_zero_or_256_copies_unchanged() -> None:
    data = frame(b"a", 5) + frame(b"b", 6)
    assert shift_sequence_ids(data, len(data), 0) == data
    assert shift_sequence_ids(bytearray(data), 5, 256) == data[:5]


def test_shift_sequence_ids_refuses_an_end_inside_a_packet() -> None:
    data = frame(b"abcdef", 1) + frame(b"gh", 2)
    for end in (2, 5, 11):
        with pytest.raises(ProtocolError, match=f"offset {end} is not the end of a packet"):
            shift_sequence_ids(data, end, 1)


def test_shift_sequence_ids_renumbers_a_split_payload_chunk_by_chunk() -> None:
    data = frame(b"z" * MAX_PAYLOAD, 9)  # two chunks: 0xFFFFFF bytes, then an empty one
    shifted = shift_sequence_ids(data, len(data), 1)
    assert shifted == frame(b"z" * MAX_PAYLOAD, 10)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 12)), max_size=20),
       st.integers(-300, 300), st.integers(0, 255))
def test_shift_sequence_ids_equals_reframing_runs_of_one_size_included(
        runs: list[tuple[int, int]], offset: int, seq: int) -> None:
    """Runs of equal-size packets (renumbered with slices) and lone ones agree with frame()."""
    sizes = [size for size, count in runs for _ in range(count)]
    data = b"".join(frame(bytes([i & 0xFF]) * size, seq + i) for i, size in enumerate(sizes))
    expected = b"".join(frame(bytes([i & 0xFF]) * size, seq + i + offset)
                        for i, size in enumerate(sizes))
    assert shift_sequence_ids(data, len(data), offset) == expected
    assert shift_sequence_ids(data + b"\x09\x00", len(data), offset) == expected


def test_shift_sequence_ids_handles_runs_longer_than_one_window() -> None:
    data = b"".join(frame(b"row", i) for i in range(1000)) + frame(b"end!", 232)
    expected = b"".join(frame(b"row", i + 7) for i in range(1000)) + frame(b"end!", 239)
    assert shift_sequence_ids(data, len(data), 7) == expected


def test_is_one_packet_only_for_exactly_one_whole_packet() -> None:
    one = frame(b"\x03SELECT 1", 0)
    assert is_one_packet(one)
    assert is_one_packet(frame(b"", 0))
    assert not is_one_packet(one[:-1])  # payload cut short
    assert not is_one_packet(one + frame(b"\x01", 0))  # two packets
    assert not is_one_packet(b"\x01\x00")  # not even a header


@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(0, 255))
def test_frame_all_frames_payloads_one_after_the_other(payloads: list[bytes], seq: int) -> None:
    data, after = frame_all(payloads, seq)
    reader = PacketReader()
    reader.feed(data)
    for i, payload in enumerate(payloads):
        packet = reader.next_packet()
        assert packet is not None and packet.payload == payload and packet.seq == (seq + i) & 0xFF
    assert reader.next_packet() is None
    assert after == (seq + len(payloads)) & 0xFF
