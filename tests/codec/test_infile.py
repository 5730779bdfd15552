"""The LOCAL INFILE request and the client's data packets."""

from __future__ import annotations

import pytest
from chassis_mysql.errors import ProtocolError
from chassis_mysql.infile import (
    LocalInfileRequest,
    infile_payloads,
    is_infile_end,
    is_local_infile_request,
    join_infile_payloads,
)
from hypothesis import given
from hypothesis import strategies as st

from .recorded import commands, conversation


def test_recorded_request_round_trips() -> None:
    _, answer = next(c for c in commands(conversation("raw_classic")) if b"LOCAL INFILE" in c[0])
    req = LocalInfileRequest.parse(answer[0])
    assert req.filename == b"codec.tsv"
    assert req.encode() == answer[0]
    data = [p[2:] for p in answer if p.startswith(b"c:")]
    assert join_infile_payloads(data) == b"1\tone\n2\ttwo\n"
    assert is_infile_end(data[-1])


@given(st.binary(max_size=5000), st.integers(1, 700))
def test_file_data_splits_and_joins(data: bytes, chunk: int) -> None:
    payloads = infile_payloads(data, chunk)
    assert payloads[-1] == b""
    assert all(0 < len(p) <= chunk for p in payloads[:-1])
    assert join_infile_payloads(payloads) == data


def test_malformed_infile_exchange() -> None:
    assert not is_local_infile_request(b"")
    with pytest.raises(ProtocolError):
        LocalInfileRequest.parse(b"\x00file")
    with pytest.raises(ProtocolError, match="end with an empty packet"):
        join_infile_payloads([b"abc"])
    with pytest.raises(ProtocolError):
        join_infile_payloads([b"", b"x", b""])
    with pytest.raises(ProtocolError):
        infile_payloads(b"x", 0)
