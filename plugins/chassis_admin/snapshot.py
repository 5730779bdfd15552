"""Read-only SQL over a snapshot of the admin tables, in an in-memory SQLite database.

Each query gets a database of its own, filled with the rows of the tables it names
(:mod:`chassis_admin.tables`), then the user's statement runs on it, so WHERE, ORDER BY,
LIMIT, aggregates and joins are SQLite's. Nothing a user types can change the proxy from
here: the database is a copy, thrown away after the query, and an authorizer lets the
statement read and compute only (no INSERT, PRAGMA, ATTACH: ATTACH would create files).
A query is bounded in time (:data:`TIME_LIMIT`), in rows (:data:`MAX_ROWS`) and in the
size of any value (:data:`MAX_VALUE`), and runs in a thread so that the worker's event
loop keeps serving clients meanwhile.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chassis_mysql.constants import ErrorCode, FieldType

from chassis_admin.tables import Column, Row

#: Seconds a query may run before it is interrupted.
TIME_LIMIT = 5.0
#: Rows a result may have.
MAX_ROWS = 100_000
#: Bytes a string or blob may have (SQLite's own limit is 1 GB).
MAX_VALUE = 16 * 1024 * 1024
#: The statement may read and compute: nothing else (sqlite3 authorizer action codes).
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                      getattr(sqlite3, "SQLITE_RECURSIVE", 33)})


@dataclass(frozen=True)
class Result:
    columns: list[tuple[str, FieldType]]
    rows: list[tuple[Any, ...]]


class QueryError(Exception):
    """A statement SQLite refused or stopped: what the client gets as an ERR packet."""

    def __init__(self, code: int, message: str, sqlstate: str = "HY000") -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate


def _authorize(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _cell(value: Any) -> Any:
    """A value from a worker's JSON answer as SQLite stores it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _load(db: sqlite3.Connection, name: str, columns: Sequence[Column], rows: list[Row]) -> None:
    defs = ", ".join(f'"{c}" {t}'.rstrip() for c, t in columns)
    db.execute(f'CREATE TABLE "{name}" ({defs})')
    if rows:
        marks = ", ".join("?" * len(columns))
        db.executemany(f'INSERT INTO "{name}" VALUES ({marks})', [tuple(_cell(v) for v in r) for r in rows])


_FIELD_TYPES = {"INTEGER": FieldType.LONGLONG, "REAL": FieldType.DOUBLE}


def _field_type(values: list[Any], declared: str | None) -> FieldType:
    """The MySQL type of a result column: from its values, else from the table column
    of the same name (a result with no rows)."""
    seen = {type(v) for v in values if v is not None}
    if not seen:
        return _FIELD_TYPES.get(declared or "", FieldType.VAR_STRING)
    if seen == {int}:
        return FieldType.LONGLONG
    if seen <= {int, float}:
        return FieldType.DOUBLE
    if seen == {bytes}:
        return FieldType.BLOB
    return FieldType.VAR_STRING


def _error(e: sqlite3.Error, sql: str) -> QueryError:
    text = str(e)
    if m := re.match(r"no such table: (?:main\.)?(\S+)", text):
        return QueryError(ErrorCode.NO_SUCH_TABLE,
                          f"Table '{m.group(1)}' doesn't exist in the admin console (SHOW TABLES lists them)",
                          "42S02")
    if m := re.match(r"no such column: (\S+)", text):
        return QueryError(ErrorCode.BAD_FIELD_ERROR,
                          f"Unknown column '{m.group(1)}' (SELECT * FROM <table> LIMIT 0 shows a table's "
                          "columns)", "42S22")
    if "syntax error" in text or "incomplete input" in text or "unrecognized token" in text:
        return QueryError(ErrorCode.PARSE_ERROR, f"SQL syntax error: {text} (the admin console speaks "
                          "SQLite's SQL)", "42000")
    if "one statement at a time" in text:
        return QueryError(ErrorCode.PARSE_ERROR, "one statement at a time, please", "42000")
    if "not authorized" in text or "prohibited" in text:
        return QueryError(ErrorCode.SPECIFIC_ACCESS_DENIED_ERROR,
                          "the admin console is read-only: SELECT over its tables, and the commands "
                          "of SELECT * FROM help", "42000")
    if "interrupted" in text:
        return QueryError(ErrorCode.QUERY_INTERRUPTED,
                          f"query interrupted: it ran longer than {TIME_LIMIT:g} s", "70100")
    return QueryError(ErrorCode.UNKNOWN_ERROR, f"{text} (in: {sql[:200]})")


def run(sql: str, tables: dict[str, tuple[Sequence[Column], list[Row]]]) -> Result:
    """Run one read-only statement over ``tables`` (name: columns and rows); raises
    :class:`QueryError`. Blocking: the console calls it in a thread."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        declared: dict[str, str | None] = {}
        for name, (columns, rows) in tables.items():
            _load(db, name, columns, rows)
            for column, ctype in columns:
                declared[column] = ctype if declared.get(column, ctype) == ctype else None
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE)
        db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        db.set_authorizer(_authorize)
        deadline = time.monotonic() + TIME_LIMIT
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = db.execute(sql)
            rows = cursor.fetchmany(MAX_ROWS + 1)
        except sqlite3.Error as e:
            raise _error(e, sql) from None
        if len(rows) > MAX_ROWS:
            raise QueryError(ErrorCode.UNKNOWN_ERROR, f"more than {MAX_ROWS} rows: add a LIMIT")
        names = [d[0] for d in cursor.description or ()]
        typed = [(name, _field_type([r[i] for r in rows], declared.get(name)))
                 for i, name in enumerate(names)]
        return Result(typed, rows)
    finally:
        db.close()
