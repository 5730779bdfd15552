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
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    OK_HEADER,
    Capability,
    FieldType,
    ServerStatus,
)
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK, is_eof, is_err, is_ok_eof
from chassis_mysql.resultset import (
    ColumnDefinition,
    DateTimeValue,
    TimeValue,
    column_count,
    parse_binary_row,
    parse_text_row,
)

from chassis_proxy.hooks import InjectionResult
from chassis_proxy.lua.objects import lua_number

_EXT_META = int(Capability.MARIADB_CLIENT_EXTENDED_METADATA)
_TRACK = int(Capability.SESSION_TRACK)


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


class ResultView:
    """Decodes one buffered response on demand for the Lua injection object."""

    def __init__(self, result: InjectionResult, table: Callable[..., Any], capabilities: int = 0) -> None:
        self.result = result
        self._table = table
        self._capabilities = capabilities
        self._columns: list[ColumnDefinition] | None = None
        self._rows_start = 0

    def summary(self) -> dict[str, Any]:
        """The values injection.lua's injection and resultset objects return as they are."""
        r = self.result
        status = ServerStatus(r.server_status)
        return {
            "id": lua_number(r.injection.id),
            "query": r.injection.packet,
            "query_time": lua_number(r.query_time_us),
            "response_time": lua_number(r.response_time_us),
            "query_status": r.query_status,
            "affected_rows": None if r.affected_rows is None else lua_number(r.affected_rows),
            "insert_id": None if r.insert_id is None else lua_number(r.insert_id),
            "warning_count": r.warning_count,
            "row_count": lua_number(r.row_count),
            "bytes": lua_number(r.bytes),
            "in_trans": bool(status & ServerStatus.IN_TRANS),
            "auto_commit": bool(status & ServerStatus.AUTOCOMMIT),
            "no_good_index_used": bool(status & ServerStatus.NO_GOOD_INDEX_USED),
            "no_index_used": bool(status & ServerStatus.NO_INDEX_USED),
            "buffered": r.packets is not None,
            "raw": (r.packets[0] if r.packets else r.first_packet) if r.packets is not None else None,
            "session_variables": self._session_variables(status),
        }

    def _session_variables(self, status: ServerStatus) -> Any:
        """The tracked system variables an OK result reports changed (name to value), or
        None: only with SESSION_TRACK negotiated and the server's SESSION_STATE_CHANGED
        flag, so other results pay one test."""
        first = self.result.first_packet
        if not (status & ServerStatus.SESSION_STATE_CHANGED and self._capabilities & _TRACK
                and first and first[0] == OK_HEADER):
            return None
        try:
            found = OK.parse(first, self._capabilities).system_variables()
        except ProtocolError:
            return None
        return self._table(found)

    def columns(self) -> list[ColumnDefinition]:
        """The first result set's column definitions (empty for OK, ERR, LOCAL INFILE)."""
        if self._columns is not None:
            return self._columns
        packets = self.result.packets or []
        columns: list[ColumnDefinition] = []
        pos = len(packets)
        first = packets[0] if packets else b""
        if first and first[0] not in (OK_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER):
            try:
                n = column_count(first)
                for payload in packets[1 : 1 + n]:
                    try:
                        columns.append(ColumnDefinition.parse(payload, self._capabilities))
                    except ProtocolError:  # the other MariaDB metadata layout
                        columns.append(ColumnDefinition.parse(payload, self._capabilities ^ _EXT_META))
                pos = 1 + n
                if pos < len(packets) and is_eof(packets[pos]):
                    pos += 1  # the EOF after the definitions (absent under DEPRECATE_EOF)
            except ProtocolError:
                columns, pos = [], len(packets)
        self._columns = columns
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

    def row(self, i: int) -> tuple[Any, bytes | None]:
        """Row ``i`` (1-based) as a Lua array of strings with nil for NULL, and an error.

        ``(None, None)`` past the end; ``(None, message)`` when the row cannot be decoded
        (injection.lua raises it in the script).
        """
        columns = self.columns()
        packets = self.result.packets or []
        index = self._rows_start + int(i) - 1
        if not columns or index >= len(packets) or index < self._rows_start:
            return None, None
        payload = packets[index]
        if is_ok_eof(payload) or is_err(payload):
            return None, None  # end of the first result set (EOF, or OK under DEPRECATE_EOF) or an error
        try:
            if self.result.binary:
                values = parse_binary_row(payload, columns)
                cells = [_as_text(v, int(c.type)) for v, c in zip(values, columns)]
            else:
                cells = list(parse_text_row(payload, len(columns)))
        except ProtocolError as e:
            return None, f".resultset.rows: row {int(i)} is invalid: {e}".encode()
        return self._table(cells), None
