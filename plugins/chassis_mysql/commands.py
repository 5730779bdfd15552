"""Client commands (the packets a client sends after login), parsed and encoded.

:func:`parse_command` dispatches on the first byte. COM_STMT_EXECUTE cannot be fully
decoded without the statement's parameter count (from the COM_STMT_PREPARE response)
and, when the client does not resend them, the parameter types of the previous
execution: ``parse_command`` keeps its parameter block raw, and
:meth:`ComStmtExecute.parse` decodes it when given that context. COM_STMT_EXECUTE and
the binary parameter block live in :mod:`chassis_mysql.execute` (their names are
importable from here too).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from chassis_mysql.constants import Capability, Command
from chassis_mysql.errors import ProtocolError
from chassis_mysql.execute import SENT_AS_LONG_DATA as SENT_AS_LONG_DATA
from chassis_mysql.execute import ComStmtExecute as ComStmtExecute
from chassis_mysql.execute import ParamType as ParamType
from chassis_mysql.execute import ParamValue as ParamValue
from chassis_mysql.execute import QueryAttribute as QueryAttribute
from chassis_mysql.execute import (
    encode_null_bitmap,
    encode_values,
    read_params,
    read_type,
    type_code,
)
from chassis_mysql.execute import stmt_execute as stmt_execute
from chassis_mysql.handshake import _encode_attrs, _parse_attrs
from chassis_mysql.resultset import null_bitmap_size
from chassis_mysql.wire import Reader, command_body, write_lenenc_int, write_lenenc_str

_QUERY_ATTRS = int(Capability.QUERY_ATTRIBUTES)


def command_of(payload: bytes) -> int:
    """The command byte of a client packet (no object built: for the hot path)."""
    if not payload:
        raise ProtocolError("empty command packet")
    return payload[0]


def _nul(value: bytes, what: str) -> bytes:
    if b"\x00" in value:
        raise ProtocolError(f"{what} cannot contain a NUL byte")
    return value + b"\x00"


@dataclass(frozen=True, slots=True)
class ComQuery:
    """COM_QUERY: a statement as text. ``attributes`` only with CLIENT_QUERY_ATTRIBUTES (MySQL 8)."""

    query: bytes
    attributes: tuple[QueryAttribute, ...] = ()

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = 0) -> ComQuery:
        """Parse a COM_QUERY payload."""
        r = command_body(payload, Command.QUERY)
        attrs: tuple[QueryAttribute, ...] = ()
        if capabilities & _QUERY_ATTRS:
            count = r.lenenc_int_nonnull("parameter count")
            sets = r.lenenc_int_nonnull("parameter set count")
            if sets != 1:
                raise ProtocolError(f"COM_QUERY: parameter set count must be 1, got {sets}")
            if count:
                if count > r.remaining():
                    raise ProtocolError(f"COM_QUERY: {count} attributes cannot fit the packet")
                bitmap = r.fixed(null_bitmap_size(count, 0))
                if r.u8() != 1:
                    raise ProtocolError("COM_QUERY: query attributes without their types")
                typed = [(read_type(r), r.lenenc_str_nonnull("attribute name")) for _ in range(count)]
                values = read_params(r, bitmap, [t for t, _ in typed], ())
                out = [
                    QueryAttribute(name, ftype, value, unsigned)
                    for ((ftype, unsigned), name), value in zip(typed, values)
                ]
                attrs = tuple(out)
        return cls(r.rest(), attrs)

    def encode(self, capabilities: int = 0) -> bytes:
        """The payload."""
        head = bytes((Command.QUERY,))
        if capabilities & _QUERY_ATTRS:
            attrs = self.attributes
            head += write_lenenc_int(len(attrs)) + b"\x01"
            if attrs:
                head += encode_null_bitmap([a.value for a in attrs]) + b"\x01"
                head += b"".join(
                    type_code(a.type, a.unsigned) + write_lenenc_str(a.name) for a in attrs
                )
                head += encode_values([a.value for a in attrs], [(a.type, a.unsigned) for a in attrs])
        elif self.attributes:
            raise ProtocolError("query attributes need CLIENT_QUERY_ATTRIBUTES")
        return head + self.query


@dataclass(frozen=True, slots=True)
class ComInitDB:
    """COM_INIT_DB: change the default database."""

    schema: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ComInitDB:
        """Parse a COM_INIT_DB payload."""
        return cls(command_body(payload, Command.INIT_DB).rest())

    def encode(self) -> bytes:
        """The payload."""
        return bytes((Command.INIT_DB,)) + self.schema


@dataclass(frozen=True, slots=True)
class ComFieldList:
    """COM_FIELD_LIST (deprecated): column definitions of a table, with a LIKE wildcard."""

    table: bytes
    wildcard: bytes = b""

    @classmethod
    def parse(cls, payload: bytes) -> ComFieldList:
        """Parse a COM_FIELD_LIST payload."""
        r = command_body(payload, Command.FIELD_LIST)
        return cls(r.nul_str(), r.rest())

    def encode(self) -> bytes:
        """The payload."""
        return bytes((Command.FIELD_LIST,)) + _nul(self.table, "table") + self.wildcard


@dataclass(frozen=True, slots=True)
class ComProcessKill:
    """COM_PROCESS_KILL (deprecated form of ``KILL id``)."""

    connection_id: int

    @classmethod
    def parse(cls, payload: bytes) -> ComProcessKill:
        """Parse a COM_PROCESS_KILL payload."""
        r = command_body(payload, Command.PROCESS_KILL)
        value = r.u32()
        r.expect_end("COM_PROCESS_KILL")
        return cls(value)

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BI", Command.PROCESS_KILL, self.connection_id)


@dataclass(frozen=True, slots=True)
class _NoArgs:
    COMMAND: ClassVar[Command]

    @classmethod
    def _parse(cls, payload: bytes) -> None:
        r = command_body(payload, cls.COMMAND)
        r.expect_end(f"COM_{cls.COMMAND.name}")

    def encode(self) -> bytes:
        """The payload: the command byte alone."""
        return bytes((self.COMMAND,))


@dataclass(frozen=True, slots=True)
class ComPing(_NoArgs):
    """COM_PING: is the server alive? (answered with OK)."""

    COMMAND: ClassVar[Command] = Command.PING

    @classmethod
    def parse(cls, payload: bytes) -> ComPing:
        """Parse a COM_PING payload."""
        cls._parse(payload)
        return cls()


@dataclass(frozen=True, slots=True)
class ComQuit(_NoArgs):
    """COM_QUIT: the client is leaving (the server closes, or sends nothing)."""

    COMMAND: ClassVar[Command] = Command.QUIT

    @classmethod
    def parse(cls, payload: bytes) -> ComQuit:
        """Parse a COM_QUIT payload."""
        cls._parse(payload)
        return cls()


@dataclass(frozen=True, slots=True)
class ComStatistics(_NoArgs):
    """COM_STATISTICS: answered with one human-readable string packet."""

    COMMAND: ClassVar[Command] = Command.STATISTICS

    @classmethod
    def parse(cls, payload: bytes) -> ComStatistics:
        """Parse a COM_STATISTICS payload."""
        cls._parse(payload)
        return cls()


@dataclass(frozen=True, slots=True)
class ComResetConnection(_NoArgs):
    """COM_RESET_CONNECTION: reset session state without re-authenticating."""

    COMMAND: ClassVar[Command] = Command.RESET_CONNECTION

    @classmethod
    def parse(cls, payload: bytes) -> ComResetConnection:
        """Parse a COM_RESET_CONNECTION payload."""
        cls._parse(payload)
        return cls()


@dataclass(frozen=True, slots=True)
class ComStmtPrepare:
    """COM_STMT_PREPARE: a statement with ``?`` placeholders."""

    query: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ComStmtPrepare:
        """Parse a COM_STMT_PREPARE payload."""
        return cls(command_body(payload, Command.STMT_PREPARE).rest())

    def encode(self) -> bytes:
        """The payload."""
        return bytes((Command.STMT_PREPARE,)) + self.query


@dataclass(frozen=True, slots=True)
class StmtPrepareOK:
    """The first packet of a successful COM_STMT_PREPARE response.

    ``num_params`` parameter definitions and then ``num_columns`` column definitions
    follow (each block ended by an EOF unless CLIENT_DEPRECATE_EOF).
    ``metadata_follows`` is MySQL 8's optional trailing byte (None when absent).
    """

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0
    metadata_follows: int | None = None
    short: bool = False  # very old servers end after the parameter count

    @classmethod
    def parse(cls, payload: bytes) -> StmtPrepareOK:
        """Parse the 12-byte COM_STMT_PREPARE OK payload."""
        r = Reader(payload)
        if r.u8() != 0x00:
            raise ProtocolError("not a COM_STMT_PREPARE OK: first byte must be 0x00")
        stmt_id = r.u32()
        ncols = r.u16()
        nparams = r.u16()
        if r.at_end():
            return cls(stmt_id, ncols, nparams, short=True)
        r.u8()  # filler
        warnings = r.u16()
        meta = None if r.at_end() else r.u8()
        r.expect_end("COM_STMT_PREPARE OK")
        return cls(stmt_id, ncols, nparams, warnings, meta)

    def encode(self) -> bytes:
        """The payload."""
        head = struct.pack("<BIHH", 0, self.statement_id, self.num_columns, self.num_params)
        if self.short:
            return head
        tail = b"" if self.metadata_follows is None else bytes((self.metadata_follows,))
        return head + struct.pack("<BH", 0, self.warnings) + tail


@dataclass(frozen=True, slots=True)
class ComStmtSendLongData:
    """COM_STMT_SEND_LONG_DATA: a chunk of one parameter's value (no response)."""

    statement_id: int
    param_id: int
    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ComStmtSendLongData:
        """Parse a COM_STMT_SEND_LONG_DATA payload."""
        r = command_body(payload, Command.STMT_SEND_LONG_DATA)
        return cls(r.u32(), r.u16(), r.rest())

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BIH", Command.STMT_SEND_LONG_DATA, self.statement_id,
                           self.param_id) + self.data  # fmt: skip


@dataclass(frozen=True, slots=True)
class _StmtId:
    COMMAND: ClassVar[Command]
    statement_id: int

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BI", self.COMMAND, self.statement_id)

    @classmethod
    def _read_id(cls, payload: bytes) -> int:
        r = command_body(payload, cls.COMMAND)
        value = r.u32()
        r.expect_end(f"COM_{cls.COMMAND.name}")
        return value


@dataclass(frozen=True, slots=True)
class ComStmtClose(_StmtId):
    """COM_STMT_CLOSE: free a prepared statement (no response)."""

    COMMAND: ClassVar[Command] = Command.STMT_CLOSE

    @classmethod
    def parse(cls, payload: bytes) -> ComStmtClose:
        """Parse a COM_STMT_CLOSE payload."""
        return cls(cls._read_id(payload))


@dataclass(frozen=True, slots=True)
class ComStmtReset(_StmtId):
    """COM_STMT_RESET: drop long data and close the cursor (answered with OK/ERR)."""

    COMMAND: ClassVar[Command] = Command.STMT_RESET

    @classmethod
    def parse(cls, payload: bytes) -> ComStmtReset:
        """Parse a COM_STMT_RESET payload."""
        return cls(cls._read_id(payload))


@dataclass(frozen=True, slots=True)
class ComStmtFetch:
    """COM_STMT_FETCH: the next rows of an open cursor."""

    statement_id: int
    num_rows: int

    @classmethod
    def parse(cls, payload: bytes) -> ComStmtFetch:
        """Parse a COM_STMT_FETCH payload."""
        r = command_body(payload, Command.STMT_FETCH)
        value = cls(r.u32(), r.u32())
        r.expect_end("COM_STMT_FETCH")
        return value

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BII", Command.STMT_FETCH, self.statement_id, self.num_rows)


@dataclass(frozen=True, slots=True)
class ComSetOption:
    """COM_SET_OPTION: multi-statements on (0) or off (1); answered with EOF/OK or ERR."""

    option: int

    @classmethod
    def parse(cls, payload: bytes) -> ComSetOption:
        """Parse a COM_SET_OPTION payload."""
        r = command_body(payload, Command.SET_OPTION)
        value = r.u16()
        r.expect_end("COM_SET_OPTION")
        return cls(value)

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BH", Command.SET_OPTION, self.option)


@dataclass(frozen=True, slots=True)
class ComChangeUser:
    """COM_CHANGE_USER: log in again as another user on the same connection.

    The layout depends on the connection's capabilities (SECURE_CONNECTION,
    PLUGIN_AUTH, CONNECT_ATTRS); trailing parts some clients omit are ``None``.
    """

    username: bytes
    auth_response: bytes = b""
    database: bytes = b""
    charset: int | None = None
    auth_plugin_name: str | None = None
    connect_attrs: dict[bytes, bytes] | None = field(default=None, hash=False)

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = Capability.SECURE_CONNECTION) -> ComChangeUser:
        """Parse a COM_CHANGE_USER payload under the connection's capabilities."""
        r = command_body(payload, Command.CHANGE_USER)
        user = r.nul_str()
        auth = r.fixed(r.u8()) if capabilities & Capability.SECURE_CONNECTION else r.nul_str()
        database = r.nul_str()
        charset = plugin = attrs = None
        if not r.at_end():
            charset = r.u16()
            if capabilities & Capability.PLUGIN_AUTH and not r.at_end():
                plugin = r.nul_str().decode("latin-1")
            if capabilities & Capability.CONNECT_ATTRS and not r.at_end():
                attrs = _parse_attrs(r)
        r.expect_end("COM_CHANGE_USER")
        return cls(user, auth, database, charset, plugin, attrs)

    def encode(self, capabilities: int = Capability.SECURE_CONNECTION) -> bytes:
        """The payload under the connection's capabilities."""
        out = [bytes((Command.CHANGE_USER,)), _nul(self.username, "username")]
        if capabilities & Capability.SECURE_CONNECTION:
            if len(self.auth_response) > 255:
                raise ProtocolError("COM_CHANGE_USER auth response over 255 bytes")
            out.append(bytes((len(self.auth_response),)) + self.auth_response)
        else:
            out.append(_nul(self.auth_response, "auth response"))
        out.append(_nul(self.database, "database"))
        if self.charset is not None:
            out.append(struct.pack("<H", self.charset))
            if capabilities & Capability.PLUGIN_AUTH and self.auth_plugin_name is not None:
                out.append(_nul(self.auth_plugin_name.encode("latin-1"), "auth plugin name"))
            if capabilities & Capability.CONNECT_ATTRS and self.connect_attrs is not None:
                out.append(_encode_attrs(self.connect_attrs))
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class ComBinlogDump:
    """COM_BINLOG_DUMP: stream the binary log from a position (the response never ends)."""

    position: int
    flags: int
    server_id: int
    filename: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ComBinlogDump:
        """Parse a COM_BINLOG_DUMP payload."""
        r = command_body(payload, Command.BINLOG_DUMP)
        return cls(r.u32(), r.u16(), r.u32(), r.rest())

    def encode(self) -> bytes:
        """The payload."""
        return struct.pack("<BIHI", Command.BINLOG_DUMP, self.position, self.flags,
                           self.server_id) + self.filename  # fmt: skip


@dataclass(frozen=True, slots=True)
class ComOther:
    """Any other command: its byte and its body, kept as they are."""

    command: int
    body: bytes = b""

    @classmethod
    def parse(cls, payload: bytes) -> ComOther:
        """Wrap any command payload."""
        return cls(command_of(payload), payload[1:])

    def encode(self) -> bytes:
        """The payload."""
        return bytes((self.command,)) + self.body


AnyCommand = (
    ComQuery | ComInitDB | ComFieldList | ComProcessKill | ComPing | ComQuit | ComStatistics
    | ComResetConnection | ComStmtPrepare | ComStmtExecute | ComStmtSendLongData
    | ComStmtClose | ComStmtReset | ComStmtFetch | ComSetOption | ComChangeUser
    | ComBinlogDump | ComOther
)  # fmt: skip


def parse_command(payload: bytes, capabilities: int = Capability.SECURE_CONNECTION) -> AnyCommand:
    """Parse any client command; unknown ones become :class:`ComOther`.

    COM_STMT_EXECUTE keeps its parameters raw (see :meth:`ComStmtExecute.parse`).
    """
    cmd = command_of(payload)
    if cmd == Command.QUERY:
        return ComQuery.parse(payload, capabilities)
    if cmd == Command.CHANGE_USER:
        return ComChangeUser.parse(payload, capabilities)
    if cmd == Command.STMT_EXECUTE:
        return ComStmtExecute.parse(payload)
    parser = _PARSERS.get(cmd)
    if parser is None:
        return ComOther.parse(payload)
    return parser(payload)


_PARSERS: dict[int, Callable[[bytes], AnyCommand]] = {
    Command.INIT_DB: ComInitDB.parse,
    Command.FIELD_LIST: ComFieldList.parse,
    Command.PROCESS_KILL: ComProcessKill.parse,
    Command.PING: ComPing.parse,
    Command.QUIT: ComQuit.parse,
    Command.STATISTICS: ComStatistics.parse,
    Command.RESET_CONNECTION: ComResetConnection.parse,
    Command.STMT_PREPARE: ComStmtPrepare.parse,
    Command.STMT_SEND_LONG_DATA: ComStmtSendLongData.parse,
    Command.STMT_CLOSE: ComStmtClose.parse,
    Command.STMT_RESET: ComStmtReset.parse,
    Command.STMT_FETCH: ComStmtFetch.parse,
    Command.SET_OPTION: ComSetOption.parse,
    Command.BINLOG_DUMP: ComBinlogDump.parse,
}
