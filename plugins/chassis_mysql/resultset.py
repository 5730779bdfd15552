"""Result sets: the column count, column definitions (ColumnDefinition41) and rows in
the text protocol (COM_QUERY) and the binary protocol (COM_STMT_EXECUTE).

Binary values decode to ``int``, ``float``, ``bytes`` (DECIMAL, strings, BLOBs, BIT,
JSON, ...), :class:`DateTimeValue` (DATE, DATETIME, TIMESTAMP) and :class:`TimeValue`
(TIME): the two value classes hold every value MySQL can send, including zero dates
and negative or multi-day times that ``datetime`` cannot, and convert when asked.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from chassis_mysql.constants import (
    BINARY_CHARSET,
    Capability,
    ColumnFlag,
    FieldType,
    ServerStatus,
)
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK, eof_packet
from chassis_mysql.wire import (
    Reader,
    read_lenenc_int,
    read_lenenc_str,
    write_lenenc_int,
    write_lenenc_str,
)

_EXT_META = int(Capability.MARIADB_CLIENT_EXTENDED_METADATA)
#: Either capability adds a "metadata follows" byte to the column count packet:
#: MariaDB's metadata cache and MySQL 8's optional result set metadata.
_CACHE_META = int(
    Capability.MARIADB_CLIENT_CACHE_METADATA | Capability.OPTIONAL_RESULTSET_METADATA
)
_NO_FLAGS = ColumnFlag(0)


def column_count(payload: bytes) -> int:
    """The number of columns announced by a result set's first packet."""
    n, _ = read_lenenc_int(payload, 0)
    if n is None:
        raise ProtocolError("column count cannot be NULL (0xfb is a LOCAL INFILE request)")
    return n


def metadata_follows(payload: bytes, capabilities: int) -> bool:
    """Whether column definitions follow the column count packet.

    Always true unless MARIADB_CLIENT_CACHE_METADATA (MariaDB) or
    OPTIONAL_RESULTSET_METADATA (MySQL 8) was negotiated, in which case the byte after
    the count says it (0: no definitions; the client reuses cached ones).
    """
    if not capabilities & _CACHE_META:
        return True
    _, pos = read_lenenc_int(payload, 0)
    if pos >= len(payload):
        raise ProtocolError("column count packet lacks the metadata-follows byte")
    return payload[pos] != 0


def encode_column_count(n: int, capabilities: int = 0, send_metadata: bool = True) -> bytes:
    """The column count packet (with the metadata byte under CACHE_METADATA)."""
    if capabilities & _CACHE_META:
        return write_lenenc_int(n) + (b"\x01" if send_metadata else b"\x00")
    return write_lenenc_int(n)


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """One ColumnDefinition41 packet.

    ``extended_metadata`` is MariaDB's extra block (MARIADB_CLIENT_EXTENDED_METADATA),
    ``default_value`` the trailing default that only COM_FIELD_LIST sends (set
    ``field_list`` to encode it). Names are raw bytes in the connection's charset.
    """

    name: bytes
    type: FieldType = FieldType.VAR_STRING
    charset: int = 45
    length: int = 0
    flags: ColumnFlag = _NO_FLAGS
    decimals: int = 0
    catalog: bytes = b"def"
    schema: bytes = b""
    table: bytes = b""
    org_table: bytes = b""
    org_name: bytes = b""
    extended_metadata: bytes | None = None
    field_list: bool = False
    default_value: bytes | None = None

    @property
    def unsigned(self) -> bool:
        """True for UNSIGNED numeric columns (decides how binary integers decode)."""
        return bool(self.flags & ColumnFlag.UNSIGNED)

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = 0) -> ColumnDefinition:
        """Parse a column definition under the negotiated capabilities."""
        r = Reader(payload)
        catalog = r.lenenc_str_nonnull("catalog")
        schema = r.lenenc_str_nonnull("schema")
        table = r.lenenc_str_nonnull("table")
        org_table = r.lenenc_str_nonnull("org_table")
        name = r.lenenc_str_nonnull("name")
        org_name = r.lenenc_str_nonnull("org_name")
        ext = None
        if capabilities & _EXT_META:
            ext = r.lenenc_str_nonnull("extended metadata")
        fixed = r.lenenc_int_nonnull("length of fixed fields")
        if fixed != 0x0C:
            raise ProtocolError(f"column definition: fixed-fields length {fixed}, expected 12")
        charset = r.u16()
        length = r.u32()
        ftype = r.u8()
        flags = r.u16()
        decimals = r.u8()
        r.fixed(2)
        field_list = not r.at_end()
        default = r.lenenc_str() if field_list else None
        r.expect_end("column definition")
        try:
            typ = FieldType(ftype)
        except ValueError:
            raise ProtocolError(f"column definition: unknown field type 0x{ftype:02x}") from None
        return cls(
            name=name,
            type=typ,
            charset=charset,
            length=length,
            flags=ColumnFlag(flags),
            decimals=decimals,
            catalog=catalog,
            schema=schema,
            table=table,
            org_table=org_table,
            org_name=org_name,
            extended_metadata=ext,
            field_list=field_list,
            default_value=default,
        )

    def encode(self, capabilities: int = 0) -> bytes:
        """The payload under the negotiated capabilities."""
        out = [
            write_lenenc_str(self.catalog),
            write_lenenc_str(self.schema),
            write_lenenc_str(self.table),
            write_lenenc_str(self.org_table),
            write_lenenc_str(self.name),
            write_lenenc_str(self.org_name),
        ]
        if capabilities & _EXT_META:
            out.append(write_lenenc_str(self.extended_metadata or b""))
        out.append(
            struct.pack(
                "<BHIBHBxx",
                0x0C,
                self.charset,
                self.length & 0xFFFFFFFF,
                int(self.type),
                int(self.flags) & 0xFFFF,
                self.decimals,
            )
        )
        if self.field_list:
            out.append(b"\xfb" if self.default_value is None else write_lenenc_str(self.default_value))
        return b"".join(out)


def parse_text_row(payload: bytes, ncols: int) -> list[bytes | None]:
    """A text-protocol row: ``ncols`` length-encoded strings, ``None`` for SQL NULL."""
    values: list[bytes | None] = []
    pos = 0
    for _ in range(ncols):
        value, pos = read_lenenc_str(payload, pos)
        values.append(value)
    if pos != len(payload):
        raise ProtocolError(
            f"text row has {len(payload) - pos} byte(s) after its {ncols} column(s)"
        )
    return values


def encode_text_row(values: Sequence[bytes | str | int | float | None]) -> bytes:
    """A text-protocol row; str/int/float values are written as their UTF-8 text."""
    out = []
    for value in values:
        if value is None:
            out.append(b"\xfb")
        elif isinstance(value, bytes | bytearray):
            out.append(write_lenenc_str(bytes(value)))
        else:
            out.append(write_lenenc_str(str(value).encode("utf-8")))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class DateTimeValue:
    """A binary DATE/DATETIME/TIMESTAMP value; zero dates (0000-00-00) are allowed."""

    year: int = 0
    month: int = 0
    day: int = 0
    hour: int = 0
    minute: int = 0
    second: int = 0
    microsecond: int = 0

    @classmethod
    def from_python(cls, value: datetime.date) -> DateTimeValue:
        """From a ``date`` or ``datetime``."""
        if isinstance(value, datetime.datetime):
            return cls(
                value.year, value.month, value.day,
                value.hour, value.minute, value.second, value.microsecond,
            )  # fmt: skip
        return cls(value.year, value.month, value.day)

    def to_python(self) -> datetime.date | datetime.datetime | None:
        """A ``datetime`` (or ``date`` when there is no time part); None for zero or invalid dates."""
        try:
            if self.hour or self.minute or self.second or self.microsecond:
                return datetime.datetime(
                    self.year, self.month, self.day,
                    self.hour, self.minute, self.second, self.microsecond,
                )  # fmt: skip
            return datetime.date(self.year, self.month, self.day)
        except ValueError:
            return None

    def text(self) -> str:
        """The value as the text protocol would show it (DATETIME form)."""
        s = (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )
        return f"{s}.{self.microsecond:06d}" if self.microsecond else s


@dataclass(frozen=True, slots=True)
class TimeValue:
    """A binary TIME value: signed, may exceed 24 hours (``days``)."""

    negative: bool = False
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0
    microseconds: int = 0

    @classmethod
    def from_python(cls, value: datetime.timedelta | datetime.time) -> TimeValue:
        """From a ``timedelta`` or ``time``."""
        if isinstance(value, datetime.time):
            return cls(False, 0, value.hour, value.minute, value.second, value.microsecond)
        negative = value < datetime.timedelta(0)
        if negative:
            value = -value
        secs = value.seconds
        return cls(
            negative, value.days, secs // 3600, secs % 3600 // 60, secs % 60, value.microseconds
        )

    def to_python(self) -> datetime.timedelta:
        """A ``timedelta``."""
        delta = datetime.timedelta(
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
            microseconds=self.microseconds,
        )
        return -delta if self.negative else delta

    def text(self) -> str:
        """The value as the text protocol would show it."""
        hours = self.days * 24 + self.hours
        s = f"{'-' if self.negative else ''}{hours:02d}:{self.minutes:02d}:{self.seconds:02d}"
        return f"{s}.{self.microseconds:06d}" if self.microseconds else s


BinaryValue = int | float | bytes | DateTimeValue | TimeValue | None

_INT_SIZES = {
    FieldType.TINY: (1, "<b", "<B"),
    FieldType.SHORT: (2, "<h", "<H"),
    FieldType.YEAR: (2, "<h", "<H"),
    FieldType.INT24: (4, "<i", "<I"),
    FieldType.LONG: (4, "<i", "<I"),
    FieldType.LONGLONG: (8, "<q", "<Q"),
}
_DATE_TYPES = frozenset(
    {FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE,
     FieldType.DATETIME2, FieldType.TIMESTAMP2}
)  # fmt: skip
_TIME_TYPES = frozenset({FieldType.TIME, FieldType.TIME2})


def read_binary_value(r: Reader, ftype: int, unsigned: bool = False) -> BinaryValue:
    """Read one binary-protocol value of type ``ftype`` at the reader's position."""
    sizes = _INT_SIZES.get(ftype)  # type: ignore[call-overload]
    if sizes is not None:
        size, signed_fmt, unsigned_fmt = sizes
        raw = r.fixed(size)
        return int(struct.unpack(unsigned_fmt if unsigned else signed_fmt, raw)[0])
    if ftype == FieldType.FLOAT:
        return float(struct.unpack("<f", r.fixed(4))[0])
    if ftype == FieldType.DOUBLE:
        return float(struct.unpack("<d", r.fixed(8))[0])
    if ftype == FieldType.NULL:
        return None
    if ftype in _DATE_TYPES:
        n = r.u8()
        if n not in (0, 4, 7, 11):
            raise ProtocolError(f"binary DATETIME value of invalid length {n}")
        inner = Reader(r.fixed(n))
        if n == 0:
            return DateTimeValue()
        year, month, day = inner.u16(), inner.u8(), inner.u8()
        hour = minute = second = micro = 0
        if n >= 7:
            hour, minute, second = inner.u8(), inner.u8(), inner.u8()
        if n == 11:
            micro = inner.u32()
        return DateTimeValue(year, month, day, hour, minute, second, micro)
    if ftype in _TIME_TYPES:
        n = r.u8()
        if n not in (0, 8, 12):
            raise ProtocolError(f"binary TIME value of invalid length {n}")
        if n == 0:
            return TimeValue()
        inner = Reader(r.fixed(n))
        neg, days = inner.u8(), inner.u32()
        hours, minutes, seconds = inner.u8(), inner.u8(), inner.u8()
        micro = inner.u32() if n == 12 else 0
        return TimeValue(bool(neg), days, hours, minutes, seconds, micro)
    # DECIMAL, NEWDECIMAL, strings, BLOBs, BIT, ENUM, SET, JSON, GEOMETRY, VECTOR, ...
    return r.lenenc_str_nonnull("binary string value")


def encode_binary_value(ftype: int, value: object, unsigned: bool = False) -> bytes:
    """Encode one non-NULL binary-protocol value of type ``ftype``.

    Accepts the decoded types of :func:`read_binary_value` and also ``datetime``,
    ``date``, ``timedelta``, ``time``, ``str`` (UTF-8) and ``bool``.
    """
    sizes = _INT_SIZES.get(ftype)  # type: ignore[call-overload]
    if sizes is not None:
        size, signed_fmt, unsigned_fmt = sizes
        if not isinstance(value, int):
            raise ProtocolError(f"binary {FieldType(ftype).name} value must be an int")
        fmt = unsigned_fmt if unsigned or value >= 1 << (size * 8 - 1) else signed_fmt
        try:
            return struct.pack(fmt, value)
        except struct.error:
            raise ProtocolError(f"{value} does not fit a {FieldType(ftype).name}") from None
    if ftype in (FieldType.FLOAT, FieldType.DOUBLE):
        if not isinstance(value, int | float):
            raise ProtocolError("binary FLOAT/DOUBLE value must be a number")
        try:
            return struct.pack("<f" if ftype == FieldType.FLOAT else "<d", value)
        except (struct.error, OverflowError):
            raise ProtocolError(f"{value} does not fit a {FieldType(ftype).name}") from None
    if ftype == FieldType.NULL:
        return b""
    if ftype in _DATE_TYPES:
        if isinstance(value, datetime.date):
            value = DateTimeValue.from_python(value)
        if not isinstance(value, DateTimeValue):
            raise ProtocolError("binary DATETIME value must be a DateTimeValue, datetime or date")
        v = value
        try:
            if v.microsecond:
                body = struct.pack("<HBBBBBI", v.year, v.month, v.day, v.hour, v.minute,
                                   v.second, v.microsecond)  # fmt: skip
            elif v.hour or v.minute or v.second:
                body = struct.pack("<HBBBBB", v.year, v.month, v.day, v.hour, v.minute, v.second)
            elif v.year or v.month or v.day:
                body = struct.pack("<HBB", v.year, v.month, v.day)
            else:
                body = b""
        except struct.error:
            raise ProtocolError(f"DATETIME field out of range: {v}") from None
        return bytes((len(body),)) + body
    if ftype in _TIME_TYPES:
        if isinstance(value, datetime.timedelta | datetime.time):
            value = TimeValue.from_python(value)
        if not isinstance(value, TimeValue):
            raise ProtocolError("binary TIME value must be a TimeValue, timedelta or time")
        t = value
        try:
            if t.microseconds:
                body = struct.pack("<BIBBBI", t.negative, t.days, t.hours, t.minutes,
                                   t.seconds, t.microseconds)  # fmt: skip
            elif t.days or t.hours or t.minutes or t.seconds or t.negative:
                body = struct.pack("<BIBBB", t.negative, t.days, t.hours, t.minutes, t.seconds)
            else:
                body = b""
        except struct.error:
            raise ProtocolError(f"TIME field out of range: {t}") from None
        return bytes((len(body),)) + body
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bool | int | float):
        value = str(int(value) if isinstance(value, bool) else value).encode()
    if not isinstance(value, bytes | bytearray):
        raise ProtocolError(f"cannot encode {type(value).__name__} as {FieldType(ftype).name}")
    return write_lenenc_str(bytes(value))


def null_bitmap_size(ncols: int, offset: int) -> int:
    """Bytes of a NULL bitmap for ``ncols`` values (offset 2 in rows, 0 in EXECUTE params)."""
    return (ncols + offset + 7) // 8


ColumnTypes = Sequence[ColumnDefinition] | Sequence[tuple[int, bool]]


def _types(columns: ColumnTypes) -> list[tuple[int, bool]]:
    return [
        (int(c.type), c.unsigned) if isinstance(c, ColumnDefinition) else (int(c[0]), c[1])
        for c in columns
    ]


#: Binary-protocol types whose value is a length-encoded string (DECIMAL, the strings,
#: BLOBs, BIT, ENUM, SET, JSON, GEOMETRY ...), and the integer types by their struct.
_NOT_LENENC = frozenset(
    {*_INT_SIZES, FieldType.FLOAT, FieldType.DOUBLE, FieldType.NULL, *_DATE_TYPES, *_TIME_TYPES}
)  # fmt: skip
_INT_STRUCTS = {
    int(ftype): (size, struct.Struct(signed).unpack_from, struct.Struct(unsigned).unpack_from)
    for ftype, (size, signed, unsigned) in _INT_SIZES.items()
}


def _quick_binary_row(payload: bytes, types: list[tuple[int, bool]]) -> list[BinaryValue] | None:
    """:func:`parse_binary_row` for a well-formed row of integers and length-encoded
    values (the common rows), without a Reader; None for anything else, which the
    general parser then reads (and explains, when the row is malformed)."""
    n = len(payload)
    pos = 1 + (len(types) + 9) // 8
    if pos > n or payload[0] != 0x00:
        return None
    values: list[BinaryValue] = []
    append = values.append
    for i, (ftype, unsigned) in enumerate(types):
        bit = i + 2
        if payload[1 + (bit >> 3)] & (1 << (bit & 7)):
            append(None)
            continue
        sizes = _INT_STRUCTS.get(ftype)
        if sizes is not None:
            size, signed_unpack, unsigned_unpack = sizes
            if pos + size > n:
                return None
            append((unsigned_unpack if unsigned else signed_unpack)(payload, pos)[0])
            pos += size
            continue
        if ftype in _NOT_LENENC:
            return None
        first = payload[pos] if pos < n else 0xFF
        if first < 0xFB:
            start = pos + 1
            end = start + first
        elif first == 0xFC and pos + 3 <= n:
            start = pos + 3
            end = start + (payload[pos + 1] | payload[pos + 2] << 8)
        else:
            return None  # longer values, the NULL marker, garbage: the general parser
        if end > n:
            return None
        append(payload[start:end])
        pos = end
    return values if pos == n else None


def parse_binary_row(payload: bytes, columns: ColumnTypes) -> list[BinaryValue]:
    """A binary-protocol row (0x00, NULL bitmap with offset 2, values) for these columns.

    ``columns`` are ColumnDefinitions or ``(field_type, unsigned)`` pairs.
    """
    return parse_binary_row_of(payload, _types(columns))


def parse_binary_row_of(payload: bytes, types: list[tuple[int, bool]]) -> list[BinaryValue]:
    """:func:`parse_binary_row` for columns given as a list of ``(int type, unsigned)``
    pairs, as a caller that reads many rows of the same columns keeps them."""
    quick = _quick_binary_row(payload, types)
    if quick is not None:
        return quick
    return _binary_row(payload, types)


def _binary_row(payload: bytes, types: list[tuple[int, bool]]) -> list[BinaryValue]:
    """:func:`parse_binary_row` field by field, for every type, with precise errors."""
    r = Reader(payload)
    if r.u8() != 0x00:
        raise ProtocolError("binary row must start with 0x00")
    bitmap = r.fixed(null_bitmap_size(len(types), 2))
    values: list[BinaryValue] = []
    for i, (ftype, unsigned) in enumerate(types):
        bit = i + 2
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            values.append(None)
        else:
            values.append(read_binary_value(r, ftype, unsigned))
    r.expect_end("binary row")
    return values


def encode_binary_row(values: Sequence[object], columns: ColumnTypes) -> bytes:
    """Encode a binary-protocol row; ``None`` values go into the NULL bitmap."""
    types = _types(columns)
    if len(values) != len(types):
        raise ProtocolError(f"binary row has {len(values)} values for {len(types)} columns")
    bitmap = bytearray(null_bitmap_size(len(types), 2))
    body = []
    for i, (value, (ftype, unsigned)) in enumerate(zip(values, types)):
        if value is None:
            bit = i + 2
            bitmap[bit >> 3] |= 1 << (bit & 7)
        else:
            body.append(encode_binary_value(ftype, value, unsigned))
    return b"\x00" + bytes(bitmap) + b"".join(body)


def text_resultset(
    columns: Sequence[ColumnDefinition],
    rows: Sequence[Sequence[bytes | str | int | float | None]],
    capabilities: int = Capability.PROTOCOL_41,
    status: int = ServerStatus.AUTOCOMMIT,
    warnings: int = 0,
) -> list[bytes]:
    """Every payload of a complete text result set, for answering a client without a server.

    Follows the negotiated capabilities: no EOF after the definitions and a 0xFE OK at
    the end under DEPRECATE_EOF; the metadata byte under CACHE_METADATA.
    """
    out = [encode_column_count(len(columns), capabilities)]
    out.extend(c.encode(capabilities) for c in columns)
    deprecate_eof = bool(capabilities & Capability.DEPRECATE_EOF)
    if not deprecate_eof:
        out.append(eof_packet(warnings, status, capabilities))
    for row in rows:
        if len(row) != len(columns):
            raise ProtocolError(f"row has {len(row)} values for {len(columns)} columns")
        out.append(encode_text_row(row))
    if deprecate_eof:
        out.append(OK(status=ServerStatus(status), warnings=warnings, header=0xFE).encode(
            capabilities
        ))
    else:
        out.append(eof_packet(warnings, status, capabilities))
    return out


def text_column(name: str | bytes, ftype: FieldType = FieldType.VAR_STRING) -> ColumnDefinition:
    """A plain column definition for results made up by a proxy or admin plugin."""
    raw = name.encode("utf-8") if isinstance(name, str) else name
    binary = ftype not in (FieldType.VAR_STRING, FieldType.STRING, FieldType.VARCHAR)
    return ColumnDefinition(
        name=raw,
        org_name=raw,
        type=ftype,
        charset=BINARY_CHARSET if binary else 45,
        length=255 if not binary else 21,
        flags=ColumnFlag.BINARY | ColumnFlag.NUM if binary else ColumnFlag(0),
    )
