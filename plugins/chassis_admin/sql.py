"""The admin console's own statements: what they mean, independent of the wire."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: (statement, what it does) for ``SELECT * FROM help``.
HELP = [
    ("SELECT * FROM help", "shows this help"),
    ("SELECT * FROM backends",
     "lists the backends (MySQL Proxy's columns, then replication, lag, stale), over all workers"),
    ("SELECT * FROM backend_stats", "connections, queries, errors and bytes per backend"),
    ("SELECT * FROM stats", "global statistics, per worker and in total"),
    ("UPDATE backends SET state='up|down|offline' WHERE backend_ndx=N",
     "sets a backend's state in every worker; offline drains it: no new clients"),
]


@dataclass(frozen=True)
class Select:
    table: str


@dataclass(frozen=True)
class SetState:
    backend_ndx: int
    state: str


@dataclass(frozen=True)
class VersionComment:
    pass


@dataclass(frozen=True)
class SessionSet:
    """``SET NAMES``/``SET autocommit`` that client libraries send on connect: accepted, ignored."""


Statement = Select | SetState | VersionComment | SessionSet

_SELECT = re.compile(r"select\s+\*\s+from\s+(\w+)", re.I)
_UPDATE = re.compile(
    r"update\s+backends\s+set\s+state\s*=\s*'(up|down|offline|unknown)'\s+"
    r"where\s+backend_ndx\s*=\s*(\d+)", re.I,
)
_SESSION_SET = re.compile(r"set\s+(names|autocommit|session|character_set_\w+|sql_mode|@@)\b.*", re.I | re.S)
_VERSION = re.compile(r"select\s+@@version_comment(\s+limit\s+1)?", re.I)


def parse(query: str) -> Statement | None:
    """Recognise one admin statement (case-insensitive, surrounding blanks and ``;`` ignored)."""
    text = query.strip().rstrip(";").strip()
    if m := _SELECT.fullmatch(text):
        return Select(m.group(1).lower())
    if m := _UPDATE.fullmatch(text):
        return SetState(int(m.group(2)), m.group(1).lower())
    if _VERSION.fullmatch(text):
        return VersionComment()
    if _SESSION_SET.fullmatch(text):
        return SessionSet()
    return None
