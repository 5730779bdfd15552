"""``proxy.response`` -> the payloads the client gets.

response.lua reads the script's table with MySQL Proxy's rules (which types count as
numbers and strings, what becomes SQL NULL) and calls one of the ``resp_*`` callbacks
per packet part; this module turns them into payloads with :mod:`chassis_mysql`,
exactly as MySQL Proxy 0.8.5 builds them: OK with status AUTOCOMMIT and no warnings,
column definitions with catalog ``def``, charset 8, length 32 and PRI_KEY, EOFs with
status AUTOCOMMIT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from chassis_mysql.constants import Capability, ColumnFlag, ErrorCode, FieldType, ServerStatus
from chassis_mysql.packets import ERR, OK
from chassis_mysql.resultset import ColumnDefinition, text_resultset

_CAPS = int(Capability.PROTOCOL_41)
_ERRMSG_MAX = 512

#: What the client gets when proxy.response cannot be turned into packets.
RESPONSE_FAILED = "(lua) handling proxy.response failed, check error-log"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def err_payload(
    message: str | bytes, code: int = ErrorCode.UNKNOWN_ERROR, sqlstate: str | bytes | None = None
) -> bytes:
    """An ERR payload the way MySQL Proxy writes it: the SQL state defaults to 07000 and
    exactly 5 bytes of it are used; the message is cut at 512 bytes."""
    raw = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
    if isinstance(sqlstate, str):
        sqlstate = sqlstate.encode("latin-1", "replace")
    state = (sqlstate or b"07000")[:5].ljust(5, b"0")
    return ERR(int(code) & 0xFFFF, _text(raw[:_ERRMSG_MAX]), state.decode("latin-1")).encode(_CAPS)


class ResponseBuilder:
    """Collects one proxy.response while response.lua walks it."""

    def __init__(self, capabilities: int = _CAPS) -> None:
        self.capabilities = capabilities | _CAPS
        self.payloads: list[bytes] = []
        self.columns: list[ColumnDefinition] = []
        self.rows: list[tuple[bytes | None, ...]] = []

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        return {
            "resp_ok": self.ok,
            "resp_err": self.err,
            "resp_field": self.field,
            "resp_row": self.row,
            "resp_raw": self.raw,
        }

    def ok(self, affected_rows: float, insert_id: float) -> None:
        self.payloads.append(
            OK(
                affected_rows=_unsigned(affected_rows),
                last_insert_id=_unsigned(insert_id),
                status=ServerStatus.AUTOCOMMIT,
                warnings=0,
            ).encode(self.capabilities)
        )

    def err(self, message: bytes, code: float | None, sqlstate: bytes | None) -> None:
        """An ERR; ``code`` is None when the script gave no usable errcode (ER_UNKNOWN_ERROR)."""
        number = ErrorCode.UNKNOWN_ERROR if code is None else int(code)
        self.payloads.append(err_payload(bytes(message), number, sqlstate))

    def field(self, name: bytes, ftype: float) -> None:
        t = int(ftype) & 0xFF
        typ = FieldType(t) if t in FieldType._value2member_map_ else cast(FieldType, t)
        self.columns.append(
            ColumnDefinition(
                name=bytes(name),
                type=typ,
                charset=8,
                length=32,
                flags=ColumnFlag.PRI_KEY,
                decimals=0,
            )
        )

    def row(self, *cells: bytes | None) -> None:
        self.rows.append(tuple(cells))

    def raw(self, packet: bytes) -> None:
        self.payloads.append(bytes(packet))

    def result(self) -> list[bytes]:
        """The payloads, in order (a result set when fields were given)."""
        if self.columns:
            return text_resultset(self.columns, self.rows, self.capabilities, ServerStatus.AUTOCOMMIT)
        return self.payloads


class ResponseCollector:
    """The ``resp_*`` callbacks of one Lua state, routed to the builder of the
    proxy.response being read (one at a time, but a response may be read while another
    hook's is: each :meth:`collect` restores the one it interrupted)."""

    def __init__(self) -> None:
        self._builder: ResponseBuilder | None = None

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        """The functions for response.lua (``py.resp_*``)."""
        return {
            "resp_ok": lambda *a: self._target().ok(*a),
            "resp_err": lambda *a: self._target().err(*a),
            "resp_field": lambda *a: self._target().field(*a),
            "resp_row": lambda *a: self._target().row(*a),
            "resp_raw": lambda *a: self._target().raw(*a),
        }

    def _target(self) -> ResponseBuilder:
        if self._builder is None:  # only a collect()ing walk calls the resp_* callbacks
            self._builder = ResponseBuilder()
        return self._builder

    def collect(self, capabilities: int, walk: Callable[[], Any]) -> tuple[Any, list[bytes] | None]:
        """Run ``walk`` (response.lua reading proxy.response) into a fresh builder:
        (None, payloads), or (why the response is unusable, None). Lua errors from
        ``walk`` and ValueErrors from the builder propagate."""
        builder = ResponseBuilder(capabilities)
        previous, self._builder = self._builder, builder
        try:
            problem = walk()
            return problem, (None if problem is not None else builder.result())
        finally:
            self._builder = previous


def _unsigned(value: float) -> int:
    n = int(value)
    return n if 0 <= n < 1 << 64 else n & ((1 << 64) - 1)
