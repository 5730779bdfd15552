"""COM_STMT_EXECUTE, and the binary parameter block it shares with COM_QUERY's query
attributes (MySQL 8): a NULL bitmap, ``(type, unsigned)`` codes, then the values in the
binary row format.

A parameter streamed with COM_STMT_SEND_LONG_DATA is absent from the execute packet
(:data:`SENT_AS_LONG_DATA` stands in for its value), and a client may omit the types
when they are those of the previous execution, which is why :meth:`ComStmtExecute.parse`
takes that context.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from chassis_mysql.constants import Capability, Command, FieldType
from chassis_mysql.errors import ProtocolError
from chassis_mysql.resultset import (
    BinaryValue,
    encode_binary_value,
    null_bitmap_size,
    read_binary_value,
)
from chassis_mysql.wire import Reader, command_body, write_lenenc_int, write_lenenc_str

_QUERY_ATTRS = int(Capability.QUERY_ATTRIBUTES)


class _LongData:
    """Marker for a parameter whose value went by COM_STMT_SEND_LONG_DATA."""

    _instance: ClassVar[_LongData | None] = None

    def __new__(cls) -> _LongData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SENT_AS_LONG_DATA"


#: Value of a COM_STMT_EXECUTE parameter that was streamed with COM_STMT_SEND_LONG_DATA
#: (its bytes are absent from the execute packet).
SENT_AS_LONG_DATA = _LongData()

ParamType = tuple[int, bool]  # (FieldType, unsigned)
ParamValue = BinaryValue | _LongData | object


@dataclass(frozen=True, slots=True)
class QueryAttribute:
    """A MySQL 8 query attribute (CLIENT_QUERY_ATTRIBUTES): a named, typed value."""

    name: bytes
    type: int
    value: ParamValue
    unsigned: bool = False


def read_params(
    r: Reader, bitmap: bytes, types: Sequence[ParamType], long_data: Collection[int]
) -> list[ParamValue]:
    """Parameter values after the types: NULLs come from the bitmap, streamed ones are absent."""
    values: list[ParamValue] = []
    for i, (ftype, unsigned) in enumerate(types):
        if bitmap[i >> 3] & (1 << (i & 7)):
            values.append(None)
        elif i in long_data:
            values.append(SENT_AS_LONG_DATA)
        else:
            values.append(read_binary_value(r, ftype, unsigned))
    return values


def encode_null_bitmap(values: Sequence[object]) -> bytes:
    bitmap = bytearray(null_bitmap_size(len(values), 0))
    for i, value in enumerate(values):
        if value is None:
            bitmap[i >> 3] |= 1 << (i & 7)
    return bytes(bitmap)


def encode_values(values: Sequence[object], types: Sequence[ParamType]) -> bytes:
    return b"".join(
        encode_binary_value(ftype, value, unsigned)
        for value, (ftype, unsigned) in zip(values, types)
        if value is not None and value is not SENT_AS_LONG_DATA
    )


def type_code(ftype: int, unsigned: bool) -> bytes:
    return struct.pack("<BB", ftype, 0x80 if unsigned else 0)


def read_type(r: Reader) -> ParamType:
    ftype = r.u8()
    flag = r.u8()
    return ftype, bool(flag & 0x80)


@dataclass(frozen=True, slots=True)
class ComStmtExecute:
    """COM_STMT_EXECUTE: run a prepared statement with binary parameter values.

    ``types`` are the ``(FieldType, unsigned)`` pairs sent with the new-params-bound
    flag (None when the client reuses the previous ones). ``params`` are the decoded
    values (``None`` for NULL, :data:`SENT_AS_LONG_DATA` for streamed ones), or
    ``None`` when the packet was parsed without context: ``raw_params`` then holds the
    parameter block untouched, and ``encode`` writes it back as it was.
    """

    statement_id: int
    flags: int = 0
    iteration_count: int = 1
    params: list[ParamValue] | None = field(default=None, hash=False)
    types: list[ParamType] | None = field(default=None, hash=False)
    names: list[bytes] | None = field(default=None, hash=False)  # QUERY_ATTRIBUTES only
    raw_params: bytes = b""

    @classmethod
    def parse(
        cls,
        payload: bytes,
        num_params: int | None = None,
        capabilities: int = 0,
        previous_types: Sequence[ParamType] | None = None,
        long_data_params: Collection[int] = (),
    ) -> ComStmtExecute:
        """Parse a COM_STMT_EXECUTE payload.

        ``num_params`` comes from the statement's StmtPrepareOK (None: keep the block
        raw); ``previous_types`` are needed when the client does not resend the types;
        ``long_data_params`` are the indices sent with COM_STMT_SEND_LONG_DATA since.
        """
        r = command_body(payload, Command.STMT_EXECUTE)
        stmt_id = r.u32()
        flags = r.u8()
        iterations = r.u32()
        if num_params is None:
            return cls(stmt_id, flags, iterations, raw_params=r.rest())
        count = num_params
        attrs = bool(capabilities & _QUERY_ATTRS)
        if attrs and (count > 0 or flags & 0x08) and not r.at_end():
            count = r.lenenc_int_nonnull("parameter count")
        if count == 0:
            r.expect_end("COM_STMT_EXECUTE")
            return cls(stmt_id, flags, iterations, [], None)
        if count > 8 * r.remaining():
            raise ProtocolError(f"COM_STMT_EXECUTE: {count} parameters cannot fit the packet")
        bitmap = r.fixed(null_bitmap_size(count, 0))
        bound = r.u8()
        types: list[ParamType] | None = None
        names: list[bytes] | None = None
        if bound:
            types = []
            names = [] if attrs else None
            for _ in range(count):
                types.append(read_type(r))
                if names is not None:
                    names.append(r.lenenc_str_nonnull("parameter name"))
            use = types
        elif previous_types is not None:
            if len(previous_types) != count:
                raise ProtocolError(
                    f"COM_STMT_EXECUTE: {len(previous_types)} previous parameter types "
                    f"for {count} parameters"
                )
            use = list(previous_types)
        else:
            raise ProtocolError(
                "COM_STMT_EXECUTE reuses earlier parameter types: pass previous_types "
                "(or parse without num_params to keep the parameters raw)"
            )
        values = read_params(r, bitmap, use, long_data_params)
        r.expect_end("COM_STMT_EXECUTE")
        return cls(stmt_id, flags, iterations, values, types, names)

    def encode(self, capabilities: int = 0) -> bytes:
        """The payload (for decoded params, types must be set or given as previous)."""
        head = struct.pack("<BIBI", Command.STMT_EXECUTE, self.statement_id, self.flags,
                           self.iteration_count)  # fmt: skip
        if self.params is None:
            return head + self.raw_params
        return head + self.encode_params(capabilities)

    def encode_params(
        self, capabilities: int = 0, previous_types: Sequence[ParamType] | None = None
    ) -> bytes:
        """The parameter block of the payload."""
        params = self.params or []
        attrs = bool(capabilities & _QUERY_ATTRS)
        out = b""
        if attrs and (params or self.flags & 0x08):
            out += write_lenenc_int(len(params))
        if not params:
            return out
        out += encode_null_bitmap(params)
        if self.types is not None:
            if len(self.types) != len(params):
                raise ProtocolError(f"{len(self.types)} parameter types for {len(params)} values")
            out += b"\x01"
            for i, (ftype, unsigned) in enumerate(self.types):
                out += type_code(ftype, unsigned)
                if attrs:
                    out += write_lenenc_str(self.names[i] if self.names else b"")
            use: Sequence[ParamType] = self.types
        elif previous_types is not None:
            out += b"\x00"
            use = previous_types
        else:
            raise ProtocolError("cannot encode parameter values without their types")
        return out + encode_values(params, use)


def _param_types_for(values: Sequence[object]) -> list[ParamType]:
    """Binary types that hold Python values, for clients of the codec that build EXECUTEs."""
    out: list[ParamType] = []
    for v in values:
        if v is None:
            out.append((FieldType.NULL, False))
        elif isinstance(v, bool | int):
            out.append((FieldType.LONGLONG, int(v) >= 1 << 63))
        elif isinstance(v, float):
            out.append((FieldType.DOUBLE, False))
        elif isinstance(v, datetime.datetime | datetime.date):
            out.append((FieldType.DATETIME, False))
        elif isinstance(v, datetime.timedelta | datetime.time):
            out.append((FieldType.TIME, False))
        else:
            out.append((FieldType.VAR_STRING, False))
    return out


def stmt_execute(statement_id: int, values: Sequence[object], flags: int = 0) -> ComStmtExecute:
    """A COM_STMT_EXECUTE for Python values, with types chosen to hold them."""
    return ComStmtExecute(statement_id, flags, 1, list(values), _param_types_for(values))
