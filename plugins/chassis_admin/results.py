"""Text result sets for the admin console, built with the codec's helpers."""

from __future__ import annotations

from collections.abc import Sequence

from chassis_mysql.constants import FieldType
from chassis_mysql.resultset import text_column
from chassis_mysql.resultset import text_resultset as _encode

Cell = str | int | float | None


def text_resultset(
    columns: Sequence[tuple[str, FieldType]], rows: Sequence[Sequence[Cell]]
) -> list[bytes]:
    """Payloads of a classic (EOF-delimited) text result set; the console never
    negotiates DEPRECATE_EOF."""
    return _encode([text_column(name, ftype) for name, ftype in columns], rows)
