"""Column definitions, text rows and binary rows: recorded ones and random round trips."""

from __future__ import annotations

import datetime
import math

import pytest
from chassis_mysql.constants import Capability, ColumnFlag, FieldType, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import is_eof
from chassis_mysql.resultset import (
    _INT_STRUCTS,
    _NOT_LENENC,
    ColumnDefinition,
    DateTimeValue,
    TimeValue,
    _binary_row,
    _quick_binary_row,
    column_count,
    encode_binary_row,
    encode_column_count,
    encode_text_row,
    metadata_follows,
    parse_binary_row,
    parse_text_row,
    text_column,
    text_resultset,
)
from hypothesis import given
from hypothesis import strategies as st

from .recorded import commands, conversation, negotiated


def test_recorded_text_result_with_libmariadb_metadata_extensions() -> None:
    conv = conversation("mysqlclient")
    caps = negotiated(conv)
    assert caps & Capability.MARIADB_CLIENT_CACHE_METADATA
    _, answer = next(c for c in commands(conv) if c[0].startswith(b"\x03SELECT 1"))
    assert column_count(answer[0]) == 3
    assert metadata_follows(answer[0], caps)
    assert encode_column_count(3, caps) == answer[0]
    cols = [ColumnDefinition.parse(p, caps) for p in answer[1:4]]
    assert [c.name for c in cols] == [b"1", b"two", b"NULL"]
    assert cols[0].type == FieldType.LONG
    assert [c.encode(caps) for c in cols] == answer[1:4]
    assert is_eof(answer[4])
    assert parse_text_row(answer[5], 3) == [b"1", b"two", None]
    assert encode_text_row([1, "two", None]) == answer[5]


def test_recorded_binary_row_with_every_kind_of_value() -> None:
    conv = conversation("connector")
    caps = negotiated(conv)
    _, answer = next(c for c in commands(conv) if c[0][0] == 0x17)
    assert column_count(answer[0]) == 8
    cols = [ColumnDefinition.parse(p, caps) for p in answer[1:9]]
    row = parse_binary_row(answer[10], cols)
    assert row == [
        1,
        -2.5,
        b"text",
        None,
        2**40,
        DateTimeValue(2024, 2, 29, 12, 34, 56),
        DateTimeValue(2024, 2, 29),
        TimeValue(True, 0, 12, 34, 56),
    ]
    assert encode_binary_row(row, cols) == answer[10]
    stamp, span = row[5], row[7]
    assert isinstance(stamp, DateTimeValue) and isinstance(span, TimeValue)
    assert stamp.to_python() == datetime.datetime(2024, 2, 29, 12, 34, 56)
    assert span.to_python() == -datetime.timedelta(hours=12, minutes=34, seconds=56)


def test_field_list_column_definition_has_a_default() -> None:
    col = ColumnDefinition(b"a", FieldType.LONG, field_list=True, default_value=b"7")
    again = ColumnDefinition.parse(col.encode())
    assert again.field_list and again.default_value == b"7"
    null_default = ColumnDefinition(b"a", field_list=True)
    assert ColumnDefinition.parse(null_default.encode()) == null_default


_lenenc_bytes = st.binary(max_size=300)


@given(
    st.tuples(*[_lenenc_bytes] * 6),
    st.sampled_from(list(FieldType)),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.none() | st.binary(max_size=40),
)
def test_column_definition_round_trips(
    names: tuple[bytes, ...], ftype: FieldType, charset: int, length: int, flags: int,
    decimals: int, ext: bytes | None,
) -> None:  # fmt: skip
    caps = Capability.MARIADB_CLIENT_EXTENDED_METADATA if ext is not None else 0
    catalog, schema, table, org_table, name, org_name = names
    col = ColumnDefinition(name, ftype, charset, length, ColumnFlag(flags), decimals, catalog,
                           schema, table, org_table, org_name, ext)  # fmt: skip
    assert ColumnDefinition.parse(col.encode(caps), caps) == col


@given(st.lists(st.none() | st.binary(max_size=400), max_size=20))
def test_text_row_round_trips(values: list[bytes | None]) -> None:
    payload = encode_text_row(values)
    assert parse_text_row(payload, len(values)) == values
    with pytest.raises(ProtocolError):
        parse_text_row(payload + b"\x00", len(values))
    if values:
        with pytest.raises(ProtocolError):
            parse_text_row(payload, len(values) + 1)


_INT_RANGES = {
    FieldType.TINY: 8, FieldType.SHORT: 16, FieldType.YEAR: 16,
    FieldType.INT24: 32, FieldType.LONG: 32, FieldType.LONGLONG: 64,
}  # fmt: skip
_STRING_TYPES = [
    FieldType.DECIMAL, FieldType.NEWDECIMAL, FieldType.VARCHAR, FieldType.VAR_STRING,
    FieldType.STRING, FieldType.BLOB, FieldType.TINY_BLOB, FieldType.MEDIUM_BLOB,
    FieldType.LONG_BLOB, FieldType.BIT, FieldType.ENUM, FieldType.SET, FieldType.JSON,
    FieldType.GEOMETRY,
]  # fmt: skip
_datetimes = st.builds(
    DateTimeValue,
    st.integers(0, 9999), st.integers(0, 12), st.integers(0, 31), st.integers(0, 23),
    st.integers(0, 59), st.integers(0, 59), st.integers(0, 999999),
)  # fmt: skip
_times = st.builds(
    TimeValue,
    st.booleans(), st.integers(0, 34), st.integers(0, 23), st.integers(0, 59),
    st.integers(0, 59), st.integers(0, 999999),
)  # fmt: skip


@st.composite
def _typed_value(draw: st.DrawFn) -> tuple[tuple[int, bool], object]:
    kind = draw(st.sampled_from(["int", "float", "double", "string", "date", "time", "null"]))
    if kind == "int":
        ftype = draw(st.sampled_from(list(_INT_RANGES)))
        bits = _INT_RANGES[ftype]
        unsigned = draw(st.booleans())
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return (ftype, unsigned), draw(st.none() | st.integers(lo, hi))
    if kind == "float":
        v = draw(st.floats(width=32, allow_nan=False))
        return (FieldType.FLOAT, False), v
    if kind == "double":
        return (FieldType.DOUBLE, False), draw(st.floats(allow_nan=False))
    if kind == "string":
        return (draw(st.sampled_from(_STRING_TYPES)), False), draw(st.none() | st.binary(max_size=300))
    if kind == "date":
        ftype = draw(st.sampled_from([FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP]))
        return (ftype, False), draw(_datetimes)
    if kind == "time":
        t = draw(_times)
        if t == TimeValue(True):
            t = TimeValue()  # "-00:00:00" has no binary form of its own
        return (FieldType.TIME, False), t
    return (FieldType.NULL, False), None


@given(st.lists(_typed_value(), max_size=20))
def test_binary_row_round_trips(typed: list[tuple[tuple[int, bool], object]]) -> None:
    cols = [t for t, _ in typed]
    values = [v for _, v in typed]
    payload = encode_binary_row(values, cols)
    again = parse_binary_row(payload, cols)
    assert again == values
    assert encode_binary_row(again, cols) == payload


@given(st.lists(_typed_value(), max_size=20), st.data())
def test_the_quick_binary_row_reader_agrees_with_the_general_one(
        typed: list[tuple[tuple[int, bool], object]], data: st.DataObject) -> None:
    cols = [(int(t), u) for (t, u), _ in typed]
    payload = encode_binary_row([v for _, v in typed], cols)
    quick = _quick_binary_row(payload, cols)
    if all(t not in _NOT_LENENC or t in _INT_STRUCTS for t, _ in cols) and \
            all(v is None or not isinstance(v, bytes) or len(v) < 0x10000 for _, v in typed):
        assert quick is not None  # integers and short strings: the common rows
    if quick is not None:
        assert quick == _binary_row(payload, cols)
    # cut or garbled: the quick reader declines, or reads what the general one reads
    broken = data.draw(st.one_of(
        st.just(payload[:data.draw(st.integers(0, max(0, len(payload) - 1)))]),
        st.binary(max_size=64),
    ))
    quick = _quick_binary_row(broken, cols)
    if quick is not None:
        assert quick == _binary_row(broken, cols)


def test_binary_values_accept_python_types() -> None:
    cols = [(FieldType.DATETIME, False), (FieldType.DATE, False), (FieldType.TIME, False),
            (FieldType.VAR_STRING, False), (FieldType.DOUBLE, False)]  # fmt: skip
    row = parse_binary_row(
        encode_binary_row(
            [datetime.datetime(2001, 2, 3, 4, 5, 6, 7), datetime.date(2001, 2, 3),
             datetime.timedelta(days=-1, hours=1), "é", math.pi],
            cols,
        ),
        cols,
    )  # fmt: skip
    assert row == [
        DateTimeValue(2001, 2, 3, 4, 5, 6, 7), DateTimeValue(2001, 2, 3),
        TimeValue(True, 0, 23, 0, 0), "é".encode(), math.pi,
    ]  # fmt: skip
    assert DateTimeValue().to_python() is None
    assert DateTimeValue(2001, 2, 3, 4, 5, 6, 7).text() == "2001-02-03 04:05:06.000007"
    assert TimeValue(True, 1, 2, 3, 4).text() == "-26:03:04"


def test_binary_encoding_rejects_out_of_range_values() -> None:
    with pytest.raises(ProtocolError):
        encode_binary_row([300], [(FieldType.TINY, False)])
    with pytest.raises(ProtocolError):
        encode_binary_row([-1], [(FieldType.TINY, True)])
    with pytest.raises(ProtocolError):
        encode_binary_row([1, 2], [(FieldType.TINY, True)])


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_text_resultset_builds_every_packet(deprecate_eof: bool) -> None:
    caps = Capability.PROTOCOL_41 | (Capability.DEPRECATE_EOF if deprecate_eof else 0)
    cols = [text_column("a"), text_column("n", FieldType.LONGLONG)]
    packets = text_resultset(cols, [["x", 1], [None, 2]], caps, ServerStatus.AUTOCOMMIT)
    assert column_count(packets[0]) == 2
    assert ColumnDefinition.parse(packets[1]).name == b"a"
    rows = packets[4:6] if not deprecate_eof else packets[3:5]
    assert parse_text_row(rows[0], 2) == [b"x", b"1"]
    assert parse_text_row(rows[1], 2) == [None, b"2"]
    assert len(packets) == (6 if deprecate_eof else 7)
    assert packets[-1][0] == 0xFE


def test_column_count_rejects_null_and_truncation() -> None:
    with pytest.raises(ProtocolError):
        column_count(b"\xfb")
    with pytest.raises(ProtocolError):
        column_count(b"")
    with pytest.raises(ProtocolError):
        metadata_follows(b"\x03", Capability.MARIADB_CLIENT_CACHE_METADATA)
    assert not metadata_follows(b"\x03\x00", Capability.MARIADB_CLIENT_CACHE_METADATA)
