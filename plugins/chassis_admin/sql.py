"""The admin console's statements: which kind each one is, independent of the wire.

Two kinds: *queries* (``SELECT``, ``WITH``, ``SHOW TABLES``, ``SHOW VARIABLES``,
``SHOW PROCESSLIST``), answered by SQLite over a snapshot of the admin tables
(:mod:`chassis_admin.snapshot`), and the *commands* that act on the proxy, each named
here and nowhere else: ``UPDATE backends SET state=...``, ``KILL``, ``TRUNCATE
query_digest``. Whatever a user types reaches the proxy only through those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: (statement, what it does): the ``help`` table.
HELP = [
    ("SELECT * FROM help", "shows this help"),
    ("SELECT * FROM backends",
     "lists the backends (MySQL Proxy's columns, then replication, lag, stale), over all workers"),
    ("SHOW TABLES", "lists the tables; any read-only SELECT works on them (WHERE, ORDER BY, "
                    "LIMIT, GROUP BY, joins: SQLite's SQL)"),
    ("SELECT * FROM backend_stats", "connections, queries, errors and bytes per backend"),
    ("SELECT * FROM stats", "global statistics, per worker and in total"),
    ("SELECT * FROM connections", "one row per client connection: id, user, client, backend, "
                                  "state (login, idle, query), statement, time in that state"),
    ("SELECT * FROM query_digest", "queries grouped by digest, user, schema and backend: count, "
                                   "time, rows, errors"),
    ("SELECT * FROM pool", "idle and taken server connections per backend and worker"),
    ("SELECT * FROM lua", "the --proxy-lua-script of each worker: memory, hook calls"),
    ("SELECT * FROM lua_hooks", "calls, seconds, errors and timeouts of each Lua hook, per worker"),
    ("SELECT * FROM workers", "one row per worker process: pid, uptime, CPU, memory, connections"),
    ("SHOW VARIABLES [LIKE 'pattern']", "the running configuration (secrets masked); "
                                        "also the table variables, with each value's source"),
    ("SHOW PROCESSLIST", "the client connections, as SELECT * FROM connections"),
    ("UPDATE backends SET state='up|down|offline' WHERE backend_ndx=N",
     "sets a backend's state in every worker; offline drains it: no new clients"),
    ("KILL N", "closes client connection N (the connections table's id) and its server connection"),
    ("TRUNCATE query_digest", "forgets every digest, in every worker"),
]


@dataclass(frozen=True)
class Query:
    """A read-only statement for SQLite (``sql``), after the SHOW forms are rewritten."""

    sql: str


@dataclass(frozen=True)
class SetState:
    backend_ndx: int
    state: str


@dataclass(frozen=True)
class Kill:
    connection_id: int


@dataclass(frozen=True)
class TruncateDigests:
    pass


@dataclass(frozen=True)
class VersionComment:
    pass


@dataclass(frozen=True)
class SessionSet:
    """``SET NAMES``/``SET autocommit`` that client libraries send on connect: accepted, ignored."""


Statement = Query | SetState | Kill | TruncateDigests | VersionComment | SessionSet

_UPDATE = re.compile(
    r"update\s+backends\s+set\s+state\s*=\s*(['\"])(up|down|offline|unknown)\1\s+"
    r"where\s+backend_ndx\s*=\s*(\d+)", re.I,
)
_KILL = re.compile(r"kill\s+(?:connection\s+)?(\d+)", re.I)  # KILL QUERY: not taken (it would close)
_TRUNCATE = re.compile(r"truncate\s+(?:table\s+)?query_digest", re.I)
_SESSION_SET = re.compile(r"set\s+(names|autocommit|session|character_set_\w+|sql_mode|@@)\b.*", re.I | re.S)
_VERSION = re.compile(r"select\s+@@version_comment(\s+limit\s+1)?", re.I)
_SHOW_TABLES = re.compile(r"show\s+(?:full\s+)?tables", re.I)
_SHOW_VARIABLES = re.compile(
    r"show\s+(?:(?:global|session)\s+)?variables(?:\s+like\s+('(?:[^'\\]|\\.|'')*'))?", re.I | re.S)
_SHOW_PROCESSLIST = re.compile(r"show\s+(?:full\s+)?processlist", re.I)
#: What SQLite is given: read-only statements (its authorizer enforces it, see snapshot).
_READ_ONLY = re.compile(r"(select|with|values)\b", re.I)


def _like(literal: str) -> str:
    """A MySQL single-quoted literal as an SQLite one (backslash escapes resolved)."""
    body = re.sub(r"\\(.)", r"\1", literal[1:-1].replace("''", "'"))
    return "'" + body.replace("'", "''") + "'"


def parse(query: str) -> Statement | None:
    """Recognise one admin statement (case-insensitive, surrounding blanks and ``;`` ignored)."""
    text = query.strip().rstrip(";").strip()
    if m := _UPDATE.fullmatch(text):
        return SetState(int(m.group(3)), m.group(2).lower())
    if m := _KILL.fullmatch(text):
        return Kill(int(m.group(1)))
    if _TRUNCATE.fullmatch(text):
        return TruncateDigests()
    if _VERSION.fullmatch(text):
        return VersionComment()
    if _SESSION_SET.fullmatch(text):
        return SessionSet()
    if _SHOW_TABLES.fullmatch(text):
        return Query("SELECT name AS Tables_in_admin FROM tables ORDER BY name")
    if m := _SHOW_VARIABLES.fullmatch(text):
        where = f" WHERE variable_name LIKE {_like(m.group(1))}" if m.group(1) else ""
        return Query("SELECT variable_name AS Variable_name, value AS Value FROM variables"
                     f"{where} ORDER BY variable_name")
    if _SHOW_PROCESSLIST.fullmatch(text):
        return Query("SELECT id AS Id, user AS User, client AS Host, backend AS Backend, "
                     "state AS State, time AS Time, statement AS Info FROM connections ORDER BY id")
    if _READ_ONLY.match(text):
        return Query(text)
    return None
