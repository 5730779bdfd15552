"""What ``read_query_result(inj)`` shows of one injected command's response
(``injection.lua`` builds the ``inj`` object from it).

The connection hands over an :class:`~chassis_proxy.hooks.InjectionResult`; the summary
fields (``query_status``, ``row_count``, ``flags`` ...) always exist, while ``raw``,
``fields`` and ``rows`` need the buffered payloads (``resultset_is_needed = true``).
Fields and rows are decoded lazily, only when a script asks, and only the first result
set of a multi-result response is exposed, as in MySQL Proxy. Rows of the binary
protocol (COM_STMT_EXECUTE) are shown like text rows, every value as a string, where
MySQL Proxy 0.8.5 raised an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chassis_mysql.constants import (
    EOF_HEADER,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    OK_HEADER,
    Capability,
    FieldType,
    ServerStatus,
)
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK, is_eof
from chassis_mysql.resultset import (
    ColumnDefinition,
    DateTimeValue,
    TimeValue,
    column_count,
    parse_binary_row_of,
    parse_text_row,
)

from chassis_proxy.hooks import ConnectionView, InjectionResult
from chassis_proxy.lua.objects import lua_number, negotiated_capabilities

_EXT_META = int(Capability.MARIADB_CLIENT_EXTENDED_METADATA)
_TRACK = int(Capability.SESSION_TRACK)
_IN_TRANS = int(ServerStatus.IN_TRANS)
_AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)
_NO_GOOD_INDEX_USED = int(ServerStatus.NO_GOOD_INDEX_USED)
_NO_INDEX_USED = int(ServerStatus.NO_INDEX_USED)
_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)


def _as_text(value: object, ftype: int) -> bytes | None:
    """A binary-protocol value as the text protocol would have sent it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, DateTimeValue):
        if ftype in (FieldType.DATE, FieldType.NEWDATE):
            return f"{value.year:04d}-{value.month:02d}-{value.day:02d}".encode()
        return value.text().encode()
    if isinstance(value, TimeValue):
        return value.text().encode()
    if isinstance(value, float):
        return repr(value).encode() if ftype == FieldType.DOUBLE else f"{value:g}".encode()
    return str(value).encode()


#: The most values (rows times columns) and the most bytes of row packets that one call of
#: injection.lua's rows iterator into Python brings back: each such call from a hook lifts
#: the memory ceiling while its strings are made (see limits.lua), so a few rows at a time
#: save the crossings without letting a script hold much outside the ceiling.
ROWS_BATCH_VALUES = 240
ROWS_BATCH_BYTES = 64 * 1024

#: Column definitions already parsed, by (payload, capabilities): a prepared statement's
#: result describes the same columns every time, and parsing them is most of the cost of
#: reading a row. Cleared when it holds _COLUMN_CACHE_MAX entries.
_column_cache: dict[tuple[bytes, int], tuple[ColumnDefinition, tuple[int, bool]]] = {}
_COLUMN_CACHE_MAX = 4096


def _column(payload: bytes, capabilities: int) -> tuple[ColumnDefinition, tuple[int, bool]]:
    """A column definition and its (type, unsigned) pair, parsed once per distinct payload."""
    key = (payload, capabilities)
    found = _column_cache.get(key)
    if found is not None:
        return found
    try:
        column = ColumnDefinition.parse(payload, capabilities)
    except ProtocolError:  # the other MariaDB metadata layout
        column = ColumnDefinition.parse(payload, capabilities ^ _EXT_META)
    if len(_column_cache) >= _COLUMN_CACHE_MAX:
        _column_cache.clear()
    found = _column_cache[key] = (column, (int(column.type), column.unsigned))
    return found


class ResultView:
    """Decodes one buffered response on demand for the Lua injection object."""

    __slots__ = ("_capabilities", "_columns", "_conn", "_rows_start", "_table", "_types", "result",
                 "size")

    def __init__(self, result: InjectionResult, table: Callable[..., Any],
                 conn: ConnectionView | None = None) -> None:
        self.result = result
        self._table = table
        #: The negotiated capabilities, read from ``conn`` when fields or rows are decoded.
        self._conn = conn
        self._capabilities: int | None = None
        self._columns: list[ColumnDefinition] | None = None
        self._types: list[tuple[int, bool]] = []
        self._rows_start = 0
        #: The bytes of the strings arguments() hands to Lua (the packet, raw).
        self.size = 0

    def arguments(self) -> tuple[Any, ...]:
        """What bridge.lua's call_read_query_result takes after the connection's state:
        this view (for ``py.result_fields``, ``py.result_row`` and ``py.result_rows``),
        then the values injection.lua's injection and resultset objects return as they are (id, query,
        query_time, response_time, query_status, affected_rows, insert_id, warning_count,
        row_count, bytes, the four flags, buffered, raw, session_variables). Plain values: passing them as
        arguments costs less than building a table for them."""
        r = self.result
        inj = r.injection
        packets = r.packets
        status = r.server_status
        raw = (packets[0] if packets else r.first_packet) if packets is not None else None
        self.size = len(inj.packet) + len(raw or b"")
        return (
            self,
            lua_number(inj.id),
            inj.packet,
            r.query_time_us,  # times, counts and sizes are far below 2**53 (see lua_number)
            r.response_time_us,
            r.query_status,
            None if r.affected_rows is None else lua_number(r.affected_rows),
            None if r.insert_id is None else lua_number(r.insert_id),
            r.warning_count,
            r.row_count,
            r.bytes,
            bool(status & _IN_TRANS),
            bool(status & _AUTOCOMMIT),
            bool(status & _NO_GOOD_INDEX_USED),
            bool(status & _NO_INDEX_USED),
            packets is not None,
            raw,
            self._session_variables(status),
        )

    def _session_variables(self, status: int) -> Any:
        """The tracked system variables an OK result reports changed (name to value), or
        None: only with SESSION_TRACK negotiated and the server's SESSION_STATE_CHANGED
        flag, so other results pay one test."""
        first = self.result.first_packet
        if not (status & _STATE_CHANGED and first and first[0] == OK_HEADER):
            return None
        capabilities = self.capabilities()
        if not capabilities & _TRACK:
            return None
        try:
            found = OK.parse(first, capabilities).system_variables()
        except ProtocolError:
            return None
        return self._table(found)

    def capabilities(self) -> int:
        """The capabilities the client and server agreed on (how columns and OKs look)."""
        found = self._capabilities
        if found is None:
            found = self._capabilities = negotiated_capabilities(self._conn) if self._conn is not None else 0
        return found

    def columns(self) -> list[ColumnDefinition]:
        """The first result set's column definitions (empty for OK, ERR, LOCAL INFILE)."""
        if self._columns is not None:
            return self._columns
        packets = self.result.packets or []
        columns: list[ColumnDefinition] = []
        types: list[tuple[int, bool]] = []
        pos = len(packets)
        first = packets[0] if packets else b""
        if first and first[0] not in (OK_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER):
            try:
                n = first[0] if first[0] < 0xFB else column_count(first)
                capabilities = self.capabilities()
                cached = _column_cache.get
                for payload in packets[1 : 1 + n]:
                    column, pair = cached((payload, capabilities)) or _column(payload, capabilities)
                    columns.append(column)
                    types.append(pair)
                pos = 1 + n
                if pos < len(packets) and is_eof(packets[pos]):
                    pos += 1  # the EOF after the definitions (absent under DEPRECATE_EOF)
            except ProtocolError:
                columns, types, pos = [], [], len(packets)
        self._columns = columns
        self._types = types
        self._rows_start = pos
        return columns

    def fields(self) -> Any:
        """A Lua array of ``{name, type, table, org_table, org_name}`` tables."""
        return self._table(
            [
                self._table(
                    {
                        "name": c.name,
                        "type": int(c.type),
                        "table": c.table,
                        "org_table": c.org_table,
                        "org_name": c.org_name,
                    }
                )
                for c in self.columns()
            ]
        )

    def rows(self, first: int, want: int) -> tuple[Any, ...]:
        """Rows ``first``, ``first + 1``... (1-based) for injection.lua's rows iterator, up
        to ``want`` of them (it asks for more each time: a script that stops after a row
        or two decodes no more), :data:`ROWS_BATCH_VALUES` values and
        :data:`ROWS_BATCH_BYTES`, at least one row: ``(columns, n, the n rows'
        values...)``, NULL as None; ``n`` is 0 past the end. A row that cannot be decoded
        ends the batch before it, and is ``(False, message)`` when it comes first (the
        script gets the error there)."""
        columns = self._columns
        if columns is None:
            columns = self.columns()
        width = len(columns)
        most = max(1, min(int(want), ROWS_BATCH_VALUES // width if width else 1))
        out: list[Any] = [width, 0]
        packets = self.result.packets or []
        i = int(first)
        n = size = 0
        while n < most and size < ROWS_BATCH_BYTES:
            row = self.row(i + n)
            if row is None:
                break
            if row[0] is False:
                if n == 0:
                    return row
                break
            out += row[1:]
            size += len(packets[self._rows_start + i + n - 1])
            n += 1
        out[1] = n
        return tuple(out)

    def row(self, i: int) -> tuple[Any, ...] | None:
        """Row ``i`` (1-based): ``(True, value, ...)`` with strings, None for NULL (injection.lua
        makes the Lua array); None past the end; ``(False, message)`` when the row cannot be
        decoded (injection.lua raises it in the script)."""
        columns = self._columns
        if columns is None:
            columns = self.columns()
        result = self.result
        packets = result.packets or []
        start = self._rows_start
        index = start + int(i) - 1
        if not columns or index >= len(packets) or index < start:
            return None
        payload = packets[index]
        head = payload[0] if payload else -1
        if head == ERR_HEADER or (head == EOF_HEADER and len(payload) < 0xFFFFFF):
            return None  # end of the first result set (EOF, or OK under DEPRECATE_EOF) or an error
        try:
            if result.binary:
                types = self._types
                values = parse_binary_row_of(payload, types)
                for v in values:
                    if v is not None and type(v) is not bytes:  # numbers, dates: as text
                        return (True, *[v if v is None or type(v) is bytes else _as_text(v, t[0])
                                        for v, t in zip(values, types)])
                return (True, *values)
            return (True, *parse_text_row(payload, len(columns)))
        except ProtocolError as e:
            return False, f".resultset.rows: row {int(i)} is invalid: {e}".encode()


def callbacks() -> dict[str, Callable[..., Any]]:
    """injection.lua's ``py.*`` functions: a view's fields and rows, decoded on demand."""
    return {"result_fields": ResultView.fields, "result_row": ResultView.row,
            "result_rows": ResultView.rows}
