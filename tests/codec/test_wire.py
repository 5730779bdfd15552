"""Length-encoded integers/strings, NUL strings and the Reader cursor, on bytes alone."""

from __future__ import annotations

import pytest
from chassis_mysql.errors import ProtocolError
from chassis_mysql.wire import (
    Reader,
    read_lenenc_int,
    read_lenenc_str,
    read_nul_str,
    write_lenenc_int,
    write_lenenc_str,
)
from hypothesis import given
from hypothesis import strategies as st


@given(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=4))
def test_lenenc_int_round_trips_with_trailing_bytes(n: int, tail: bytes) -> None:
    encoded = write_lenenc_int(n)
    assert read_lenenc_int(encoded + tail, 0) == (n, len(encoded))


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
    ],
)
def test_lenenc_int_uses_the_shortest_form(n: int, encoded: bytes) -> None:
    assert write_lenenc_int(n) == encoded


def test_lenenc_null_marker_reads_as_none() -> None:
    assert read_lenenc_int(b"\xfb", 0) == (None, 1)
    assert read_lenenc_str(b"x\xfb", 1) == (None, 2)


@pytest.mark.parametrize("bad", [b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe" + b"\x00" * 7, b"\xff"])
def test_bad_lenenc_int_raises_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_lenenc_int(bad, 0)


def test_write_lenenc_int_rejects_out_of_range() -> None:
    with pytest.raises(ProtocolError):
        write_lenenc_int(-1)
    with pytest.raises(ProtocolError):
        write_lenenc_int(2**64)


@given(st.binary(max_size=70000))
def test_lenenc_str_round_trips(b: bytes) -> None:
    encoded = write_lenenc_str(b)
    assert read_lenenc_str(encoded, 0) == (b, len(encoded))
    if b:
        with pytest.raises(ProtocolError):
            read_lenenc_str(encoded[:-1], 0)


@given(st.binary().filter(lambda b: b"\x00" not in b), st.binary())
def test_nul_str_reads_up_to_the_first_nul(s: bytes, tail: bytes) -> None:
    assert read_nul_str(s + b"\x00" + tail, 0) == (s, len(s) + 1)
    with pytest.raises(ProtocolError):
        read_nul_str(s, 0)


def test_reader_reads_fields_in_order() -> None:
    r = Reader(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0aabc\x00\x02xyrest")
    assert r.u8() == 1
    assert r.u16() == 0x0302
    assert r.u24() == 0x060504
    assert r.u32() == 0x0A090807
    assert r.nul_str() == b"abc"
    assert r.lenenc_str() == b"xy"
    assert r.remaining() == 4
    assert r.rest() == b"rest"
    assert r.at_end()
    assert r.rest() == b""


@pytest.mark.parametrize(
    "method", ["u8", "u16", "u24", "u32", "u64", "lenenc_int", "lenenc_str", "nul_str"]
)
def test_reader_raises_protocol_error_on_truncation(method: str) -> None:
    r = Reader(b"")
    with pytest.raises(ProtocolError, match=r"truncated|missing"):
        getattr(r, method)()
    with pytest.raises(ProtocolError):
        Reader(b"ab").fixed(3)


def test_reader_u64() -> None:
    assert Reader((2**64 - 2).to_bytes(8, "little")).u64() == 2**64 - 2
