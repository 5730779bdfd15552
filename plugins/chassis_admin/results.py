"""Text result sets for answering SQL without a server (admin console)."""

from __future__ import annotations

from collections.abc import Sequence

from chassis_mysql.constants import FieldType
from chassis_mysql.packets import eof_packet
from chassis_mysql.resultset import ColumnDefinition, encode_column_count, encode_text_row

Cell = str | int | float | None


def text_resultset(
    columns: Sequence[tuple[str, FieldType]], rows: Sequence[Sequence[Cell]]
) -> list[bytes]:
    """Payloads of a classic (EOF-delimited) text result set: count, columns, EOF, rows, EOF."""
    packets = [encode_column_count(len(columns))]
    packets += [
        ColumnDefinition(name=name.encode(), type=ftype, charset=33, length=255).encode()
        for name, ftype in columns
    ]
    packets.append(eof_packet())
    packets += [encode_text_row([None if c is None else str(c) for c in row]) for row in rows]
    packets.append(eof_packet())
    return packets
